#!/usr/bin/env python3
# GStreamer's RTSP server as the media server a camera is pushed to: RECORD mode (it accepts ANNOUNCE/RECORD
# only), TCP, one mount, demanding credentials (Basic or Digest, as asked). What arrives is depayloaded and
# decoded by GStreamer's own H.264 decoder (avdec_h264); one line per decoded picture: "FRAME WIDTHxHEIGHT".
# Prints "READY" once listening and "CLIENT" for every connection. The login comes from the environment
# (RTSP_USER, RTSP_PASSWORD), so the password is in no process's command line but the one under test.
# usage: RTSP_USER=u RTSP_PASSWORD=p export-rtsp-record-server.py HOST PORT PATH basic|digest
import os
import sys
import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
gi.require_version("GstRtsp", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer

host, port, path, method = sys.argv[1:5]
user, password = os.environ["RTSP_USER"], os.environ["RTSP_PASSWORD"]
Gst.init(None)
server = GstRtspServer.RTSPServer()
server.set_address(host)
server.set_service(port)

auth = GstRtspServer.RTSPAuth()
token = GstRtspServer.RTSPToken()
token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "publisher")
if method == "digest":
    auth.add_digest(user, password, token)
    auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
else:
    auth.add_basic(GstRtspServer.RTSPAuth.make_basic(user, password), token)
    auth.set_supported_methods(GstRtsp.RTSPAuthMethod.BASIC)
server.set_auth(auth)

factory = GstRtspServer.RTSPMediaFactory()
factory.set_transport_mode(GstRtspServer.RTSPTransportMode.RECORD)
factory.set_launch("( rtph264depay name=depay0 ! h264parse ! avdec_h264 ! fakesink name=sink signal-handoffs=true sync=false )")
factory.set_protocols(GstRtsp.RTSPLowerTrans.TCP)
factory.add_role_from_structure(Gst.Structure.from_string(
    "publisher, media.factory.access=(boolean)true, media.factory.construct=(boolean)true")[0])


def on_handoff(_sink, buffer, pad):
    s = pad.get_current_caps().get_structure(0)
    print(f"FRAME {s.get_value('width')}x{s.get_value('height')}", flush=True)


def on_media_configure(_factory, media):
    sink = media.get_element().get_by_name("sink")
    sink.connect("handoff", on_handoff)


factory.connect("media-configure", on_media_configure)
server.get_mount_points().add_factory(path, factory)


def on_client(_server, _client):
    print("CLIENT", flush=True)


server.connect("client-connected", on_client)
if server.attach(None) == 0:
    print("cannot listen", file=sys.stderr, flush=True)
    sys.exit(1)
print("READY", flush=True)
GLib.MainLoop().run()

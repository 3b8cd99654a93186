#!/usr/bin/env python3
# GStreamer's RTSP server standing in for a printer camera in the RTSP interop tests: RTSPS (TLS) with Basic
# authentication, TCP only, an H.264 test pattern at /streaming/live/1. Prints "READY" once listening and
# "CLIENT" for every client connection, so tests can count printer sessions. Given VIDEO_MP4 (bench/rtsp.ts, where it
# is the peer), it serves that already encoded H.264 file in real time instead, so its CPU is the server's fan-out
# and TLS, not an encoder's; one shared media for every reader either way.
# usage: rtsp-gst-server.py HOST PORT USER PASSWORD CERT_AND_KEY_PEM [VIDEO_MP4]
import sys
import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
gi.require_version("GstRtsp", "1.0")
from gi.repository import Gio, GLib, Gst, GstRtsp, GstRtspServer

host, port, user, password, pem_path = sys.argv[1:6]
video = sys.argv[6] if len(sys.argv) > 6 else None
Gst.init(None)
server = GstRtspServer.RTSPServer()
server.set_address(host)
server.set_service(port)

auth = GstRtspServer.RTSPAuth()
with open(pem_path) as f:
    auth.set_tls_certificate(Gio.TlsCertificate.new_from_pem(f.read(), -1))
token = GstRtspServer.RTSPToken()
token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "printer-client")
auth.add_basic(GstRtspServer.RTSPAuth.make_basic(user, password), token)
auth.set_supported_methods(GstRtsp.RTSPAuthMethod.BASIC)
server.set_auth(auth)

factory = GstRtspServer.RTSPMediaFactory()
if video:
    factory.set_launch(f"( filesrc location={video} ! qtdemux ! h264parse ! rtph264pay name=pay0 pt=96 config-interval=1 )")
else:
    factory.set_launch(
        "( videotestsrc is-live=true ! video/x-raw,width=320,height=240,framerate=15/1 "
        "! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=15 ! rtph264pay name=pay0 pt=96 config-interval=1 )"
    )
factory.set_shared(True)
factory.set_protocols(GstRtsp.RTSPLowerTrans.TCP)
factory.add_role_from_structure(Gst.Structure.from_string(
    "printer-client, media.factory.access=(boolean)true, media.factory.construct=(boolean)true")[0])
server.get_mount_points().add_factory("/streaming/live/1", factory)

def on_client(_server, _client):
    print("CLIENT", flush=True)

server.connect("client-connected", on_client)
if server.attach(None) == 0:
    print("cannot listen", file=sys.stderr, flush=True)
    sys.exit(1)
print("READY", flush=True)
GLib.MainLoop().run()

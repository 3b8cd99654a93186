#!/usr/bin/env python3
# The RTSP benchmark's peer (bench/rtsp.ts): GStreamer's RTSP server, RTSPS with Basic authentication, TCP only,
# serving an already encoded H.264 file in real time at /streaming/live/1 (one shared media for every reader), so
# its CPU is the server's fan-out and TLS, not an encoder's. Prints "READY" once listening.
# usage: rtsp-gst-peer.py HOST PORT USER PASSWORD CERT_AND_KEY_PEM VIDEO_MP4
import sys
import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
gi.require_version("GstRtsp", "1.0")
from gi.repository import Gio, GLib, Gst, GstRtsp, GstRtspServer

host, port, user, password, pem_path, video = sys.argv[1:7]
Gst.init(None)
server = GstRtspServer.RTSPServer()
server.set_address(host)
server.set_service(port)

auth = GstRtspServer.RTSPAuth()
with open(pem_path) as f:
    auth.set_tls_certificate(Gio.TlsCertificate.new_from_pem(f.read(), -1))
token = GstRtspServer.RTSPToken()
token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "reader")
auth.add_basic(GstRtspServer.RTSPAuth.make_basic(user, password), token)
auth.set_supported_methods(GstRtsp.RTSPAuthMethod.BASIC)
server.set_auth(auth)

factory = GstRtspServer.RTSPMediaFactory()
factory.set_launch(f"( filesrc location={video} ! qtdemux ! h264parse ! rtph264pay name=pay0 pt=96 config-interval=1 )")
factory.set_shared(True)
factory.set_protocols(GstRtsp.RTSPLowerTrans.TCP)
factory.add_role_from_structure(Gst.Structure.from_string(
    "reader, media.factory.access=(boolean)true, media.factory.construct=(boolean)true")[0])
server.get_mount_points().add_factory("/streaming/live/1", factory)

if server.attach(None) == 0:
    print("cannot listen", file=sys.stderr, flush=True)
    sys.exit(1)
print("READY", flush=True)
GLib.MainLoop().run()

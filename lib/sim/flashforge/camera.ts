// The simulated printer's camera: mjpg-streamer on 8080 (`/?action=stream`, `/?action=snapshot`), serving one
// stream viewer at a time like the stock firmware (a second one gets 503); each frame is stamped with its number.
import { createServer, type Socket } from "node:net";
import { endAndDestroy } from "../../core/edge.ts";
import { parseCameraRequestLine } from "../../flashforge/camera-request.ts";
import { createChamberPicture, stampJpeg } from "../jpeg-picture.ts";
import type { FlashforgeSimState } from "./state.ts";

export const SIM_CAMERA_FPS = 10;
export const SIM_CAMERA_WIDTH = 640;
export const SIM_CAMERA_HEIGHT = 360;
export const MJPEG_BOUNDARY = "boundarydonotcross";

export interface SimCameraOptions {
  fps?: number;
  width?: number;
  height?: number;
}

export interface SimCamera {
  readonly name: "camera";
  /** Stream viewers served so far, and refused because one was already watching. */
  readonly streams: number;
  readonly refused: number;
  readonly framesSent: number;
  stop(): Promise<void>;
}

export async function startSimCamera(state: FlashforgeSimState, options: SimCameraOptions = {}): Promise<SimCamera> {
  const { identity } = state;
  const picture = createChamberPicture({ name: identity.name, width: options.width ?? SIM_CAMERA_WIDTH, height: options.height ?? SIM_CAMERA_HEIGHT });
  const intervalMs = 1000 / (options.fps ?? SIM_CAMERA_FPS);
  const sockets = new Set<Socket>();
  let viewer: Socket | undefined;
  let streams = 0;
  let refused = 0;
  let framesSent = 0;
  let frameNumber = 0;
  const frame = () => stampJpeg(picture.frameAt(), `ff-frame ${++frameNumber}`);

  // A raw socket server, as mjpg-streamer answers: HTTP/1.0, no chunking, the stream until the viewer leaves.
  const respond = (socket: Socket, status: string, type: string, body: Buffer) =>
    endAndDestroy(socket, Buffer.concat([Buffer.from(`HTTP/1.0 ${status}\r\nContent-Type: ${type}\r\nContent-Length: ${body.length}\r\n\r\n`), body]));

  const stream = (socket: Socket) => {
    if (viewer) {
      refused++;
      return respond(socket, "503 Service Unavailable", "text/plain", Buffer.from("the camera serves one viewer at a time\n"));
    }
    viewer = socket;
    streams++;
    socket.write(
      "HTTP/1.0 200 OK\r\nConnection: close\r\nServer: MJPG-Streamer/0.2\r\nCache-Control: no-store, no-cache, must-revalidate, pre-check=0, post-check=0, max-age=0\r\n" +
        `Pragma: no-cache\r\nContent-Type: multipart/x-mixed-replace;boundary=${MJPEG_BOUNDARY}\r\n\r\n--${MJPEG_BOUNDARY}\r\n`,
    );
    const timer = setInterval(() => {
      if (socket.writableLength > 0) return; // mjpg-streamer waits for a slow viewer; it never queues frames
      const jpeg = frame();
      framesSent++;
      socket.write(`Content-Type: image/jpeg\r\nContent-Length: ${jpeg.length}\r\nX-Timestamp: ${(Date.now() / 1000).toFixed(6)}\r\n\r\n`);
      socket.write(jpeg);
      socket.write(`\r\n--${MJPEG_BOUNDARY}\r\n`);
    }, intervalMs);
    socket.on("close", () => {
      clearInterval(timer);
      if (viewer === socket) viewer = undefined;
    });
  };

  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on("error", () => {});
    socket.on("close", () => sockets.delete(socket));
    let head = "";
    const onData = (chunk: Buffer) => {
      head += chunk.toString("latin1");
      const end = head.indexOf("\r\n\r\n");
      if (end === -1) {
        if (head.length > 8192) socket.destroy();
        return;
      }
      socket.off("data", onData);
      socket.resume();
      const request = parseCameraRequestLine(head.slice(0, head.indexOf("\r\n")));
      const action = request !== "invalid" && request.method === "GET" ? request.action : undefined;
      if (action === "snapshot") {
        const jpeg = frame();
        return respond(socket, "200 OK", "image/jpeg", jpeg);
      }
      if (action === "stream") return stream(socket);
      respond(socket, "404 Not Found", "text/plain", Buffer.from("404: Not Found!\n"));
    };
    socket.on("data", onData);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen({ host: identity.host, port: identity.ports.camera, exclusive: true }, () => resolve());
  });
  return {
    name: "camera",
    get streams() {
      return streams;
    },
    get refused() {
      return refused;
    },
    get framesSent() {
      return framesSent;
    },
    stop: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

// The simulated printer's camera: mjpg-streamer on 8080 (`/?action=stream`, `/?action=snapshot`), serving one
// stream viewer at a time like the stock firmware (a second one gets 503); each frame is stamped with its number.
import { createServer, type ServerResponse } from "node:http";
import type { Socket } from "node:net";
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
  let viewer: ServerResponse | undefined;
  let streams = 0;
  let refused = 0;
  let framesSent = 0;
  let frameNumber = 0;
  const frame = () => stampJpeg(picture.frameAt(), `ff-frame ${++frameNumber}`);

  const server = createServer((req, res) => {
    const action = new URL(req.url ?? "/", "http://camera").searchParams.get("action");
    if (action === "snapshot") {
      const jpeg = frame();
      res.writeHead(200, { "Content-Type": "image/jpeg", "Content-Length": jpeg.length, "Cache-Control": "no-cache" });
      return res.end(jpeg);
    }
    if (action !== "stream") {
      res.writeHead(404, { "Content-Type": "text/plain" });
      return res.end("404: Not Found!\n");
    }
    if (viewer) {
      refused++;
      res.writeHead(503, { "Content-Type": "text/plain" });
      return res.end("the camera serves one viewer at a time\n");
    }
    viewer = res;
    streams++;
    res.writeHead(200, {
      "Content-Type": `multipart/x-mixed-replace;boundary=${MJPEG_BOUNDARY}`, "Cache-Control": "no-cache, private", Pragma: "no-cache",
    });
    const timer = setInterval(() => {
      if (res.writableLength > 0) return; // mjpg-streamer waits for a slow viewer; it never queues frames
      const jpeg = frame();
      framesSent++;
      res.write(`--${MJPEG_BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: ${jpeg.length}\r\nX-Timestamp: ${(Date.now() / 1000).toFixed(6)}\r\n\r\n`);
      res.write(jpeg);
      res.write("\r\n");
    }, intervalMs);
    res.on("close", () => {
      clearInterval(timer);
      if (viewer === res) viewer = undefined;
    });
  });
  server.on("connection", (s: Socket) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
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

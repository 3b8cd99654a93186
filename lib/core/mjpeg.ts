// MJPEG over HTTP (multipart/x-mixed-replace) as mjpg-streamer writes it: the format of FlashForge cameras, and
// what the web page serves too. Every viewer of one frame, wherever it watches, gets the same bytes, so each
// part is encoded once per frame.
import type { CameraFrame } from "./service.ts";

export const MJPEG_BOUNDARY = "boundarydonotcross";
export const MJPEG_CONTENT_TYPE = `multipart/x-mixed-replace;boundary=${MJPEG_BOUNDARY}`;

const CRLF = Buffer.from("\r\n");
/** The first part's boundary line. A streamed response sends it with the head: Bun writes the head's end only
 * with the first body bytes, and a browser that gets no complete head gives up (docs/outages.md). */
export const MJPEG_OPENING = Buffer.from(`--${MJPEG_BOUNDARY}\r\n`);
const parts = new WeakMap<CameraFrame, Buffer>();
const firstParts = new WeakMap<CameraFrame, Buffer>();

/** One part: boundary, Content-Type, Content-Length and X-Timestamp headers, the JPEG, CRLF. */
export function mjpegPart(frame: CameraFrame): Buffer {
  let part = parts.get(frame);
  if (!part) {
    const head = Buffer.from(
      `--${MJPEG_BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: ${frame.jpeg.length}\r\n` +
        `X-Timestamp: ${(frame.receivedAt / 1000).toFixed(6)}\r\n\r\n`,
    );
    part = Buffer.concat([head, frame.jpeg, CRLF]);
    parts.set(frame, part);
  }
  return part;
}

/** mjpegPart without its boundary line (a view of the same bytes): the first part after MJPEG_OPENING. */
export function mjpegFirstPart(frame: CameraFrame): Buffer {
  let part = firstParts.get(frame);
  if (!part) {
    part = mjpegPart(frame).subarray(MJPEG_OPENING.length);
    firstParts.set(frame, part);
  }
  return part;
}

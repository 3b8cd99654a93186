// The one MJPEG part encoder (web page and FlashForge fan-out): mjpg-streamer's format, encoded once per frame.
import { describe, expect, test } from "bun:test";
import { MJPEG_BOUNDARY, mjpegPart } from "../lib/core/mjpeg.ts";

describe("mjpegPart", () => {
  const jpeg = Buffer.from([0xff, 0xd8, 1, 2, 3, 0xff, 0xd9]);

  test("writes the boundary, the headers mjpg-streamer writes, the JPEG and CRLF", () => {
    const part = mjpegPart({ jpeg, receivedAt: 1_700_000_000_250 });
    const head = `--${MJPEG_BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: 7\r\nX-Timestamp: 1700000000.250000\r\n\r\n`;
    expect(part.subarray(0, head.length).toString()).toBe(head);
    expect(part.subarray(head.length, head.length + 7)).toEqual(jpeg);
    expect(part.subarray(head.length + 7).toString()).toBe("\r\n");
  });

  test("every viewer of a frame gets the same bytes, encoded once", () => {
    const frame = { jpeg, receivedAt: 1 };
    expect(mjpegPart(frame)).toBe(mjpegPart(frame));
    expect(mjpegPart({ jpeg, receivedAt: 1 })).not.toBe(mjpegPart(frame));
  });
});

// Snapshots of an RTSP camera without a decoder running all the time: the latest key frame (h264.ts) is decoded
// once, by a short FFmpeg, into one JPEG, cached until the next key frame. When no recent key frame is at hand,
// the stream is claimed (its FFmpeg starts on demand) and the next one is awaited for a bounded time.
import type { CameraFrame } from "../core/service.ts";
import type { Logger } from "../log.ts";
import { keyFrameJpegArgs, spawnFfmpeg } from "./ffmpeg.ts";
import type { KeyFrame, KeyFrameKeeper } from "./h264.ts";

/** A key frame older than this is not the current picture, even while the stream flows: wait for the next one. */
export const KEY_FRAME_MAX_AGE_MS = 10_000;
/** The stream counts as flowing when its last packet is this recent. */
const FLOWING_MS = 3_000;
/** One decode of one access unit takes well under a second; past this FFmpeg is killed. */
export const DECODE_TIMEOUT_MS = 10_000;
const POLL_MS = 200;

export interface KeyFrameSnapshots {
  /** A JPEG of the latest key frame; undefined when none came within `waitMs` (or `giveUp` said so). */
  take(waitMs: number, giveUp?: () => boolean): Promise<CameraFrame | undefined>;
  /** FFmpeg decodes run so far (one per key frame asked for). */
  readonly decodes: number;
}

export interface KeyFrameSnapshotOptions {
  log: Logger;
  ffmpeg: string;
  keeper: KeyFrameKeeper;
  /** performance.now() of the stream's last packet (0: none yet). */
  lastPacketAt(): number;
  /** Ask for the stream to run; call the returned function when done. */
  claim(): () => void;
}

/** Decodes one Annex B access unit to one JPEG with FFmpeg (stdin to stdout). */
export async function decodeKeyFrame(ffmpeg: string, log: Logger, annexB: Buffer, timeoutMs = DECODE_TIMEOUT_MS): Promise<Buffer> {
  const child = spawnFfmpeg(ffmpeg, keyFrameJpegArgs(), log, { stdin: true, stdout: true });
  const timer = setTimeout(() => child.kill(), timeoutMs);
  try {
    const stdin = child.process.stdin as import("bun").FileSink;
    stdin.write(annexB);
    await stdin.end();
    const [jpeg, reason] = await Promise.all([new Response(child.process.stdout as ReadableStream<Uint8Array>).arrayBuffer(), child.exited]);
    const picture = Buffer.from(jpeg);
    if (child.process.exitCode !== 0 || picture.length < 4 || picture[0] !== 0xff || picture[1] !== 0xd8) {
      throw new Error(`FFmpeg gave no JPEG for the key frame (${reason})`);
    }
    return picture;
  } finally {
    clearTimeout(timer);
    child.kill();
  }
}

export function createKeyFrameSnapshots(options: KeyFrameSnapshotOptions): KeyFrameSnapshots {
  let cached: { id: number; jpeg: Promise<Buffer> } | undefined;
  let decodes = 0;

  const current = (): KeyFrame | undefined => {
    const frame = options.keeper.latest();
    const flowing = options.lastPacketAt() > 0 && performance.now() - options.lastPacketAt() <= FLOWING_MS;
    return frame && flowing && Date.now() - frame.receivedAt <= KEY_FRAME_MAX_AGE_MS ? frame : undefined;
  };

  const nextKeyFrame = (waitMs: number, giveUp?: () => boolean) =>
    new Promise<KeyFrame | undefined>((resolve) => {
      const finish = (frame: KeyFrame | undefined) => {
        clearTimeout(timer);
        clearInterval(poll);
        stop();
        resolve(frame);
      };
      const stop = options.keeper.onKeyFrame(finish);
      const timer = setTimeout(() => finish(undefined), waitMs);
      const poll = setInterval(() => giveUp?.() && finish(undefined), POLL_MS);
    });

  const jpegOf = (frame: KeyFrame): Promise<Buffer> => {
    if (cached?.id === frame.id) return cached.jpeg;
    decodes++;
    const jpeg = decodeKeyFrame(options.ffmpeg, options.log, frame.annexB);
    cached = { id: frame.id, jpeg };
    jpeg.catch(() => {
      if (cached?.jpeg === jpeg) cached = undefined;
    });
    return jpeg;
  };

  return {
    async take(waitMs, giveUp) {
      let frame = current();
      if (!frame) {
        const release = options.claim();
        try {
          frame = current() ?? (await nextKeyFrame(waitMs, giveUp));
        } finally {
          release();
        }
      }
      if (!frame) return undefined;
      try {
        return { jpeg: await jpegOf(frame), receivedAt: frame.receivedAt };
      } catch (error) {
        options.log.warn(`snapshot: ${(error as Error).message}`);
        return undefined;
      }
    },
    get decodes() {
      return decodes;
    },
  };
}

// One JPEG from a printer's camera: the cached newest frame when it is fresh; for a camera that sends video
// (RTSP), the latest key frame decoded once (no JPEG encoder kept running for snapshots); otherwise the camera is
// asked to run and the next frame is awaited for a bounded time.
import type { CameraFeed, CameraFrame } from "../core/service.ts";
import type { UpstreamProblem } from "../core/upstream.ts";
import { LIVE_FRAME_MAX_AGE_MS, nextValue } from "../core/stream.ts";

/** How long a snapshot waits for the camera to produce a frame. */
export const SNAPSHOT_WAIT_MS = 10_000;
/** A cached frame older than this is not the current picture (the printer may be gone): wait for a new one. */
export const SNAPSHOT_MAX_AGE_MS = LIVE_FRAME_MAX_AGE_MS;

export interface Snapshot {
  /** undefined: the camera gave no frame within the wait. */
  frame?: CameraFrame;
  /** The camera's state at the end, while it was still claimed ("backoff: connection refused", …). */
  cameraState: string;
  /** Why there is no frame, when the camera knows. */
  problem?: UpstreamProblem;
}

export async function takeSnapshot(feed: CameraFeed, waitMs = SNAPSHOT_WAIT_MS): Promise<Snapshot> {
  const cached = feed.frames.latest();
  if (cached && Date.now() - cached.receivedAt <= SNAPSHOT_MAX_AGE_MS) return { frame: cached, cameraState: feed.state() };
  if (feed.keyFrameJpeg) {
    const frame = await feed.keyFrameJpeg(waitMs, () => feed.problem?.()?.lasting ?? false);
    return { frame, cameraState: feed.state(), problem: frame ? undefined : feed.problem?.() };
  }
  const release = feed.claim();
  try {
    const frame = await nextValue(feed.frames, waitMs, () => feed.problem?.()?.lasting ?? false);
    return { frame, cameraState: feed.state(), problem: frame ? undefined : feed.problem?.() };
  } finally {
    release();
  }
}

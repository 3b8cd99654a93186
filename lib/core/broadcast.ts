// The latest-value broadcast's old name, kept for the tests that build a camera feed by hand (tests/web-fixtures.ts,
// tests/web-camera-problem.test.ts); the fan-out itself, with every policy, is core/stream.ts.
import { createStream, type Stream, type StreamOptions } from "./stream.ts";

/** The camera streams' old name: a stream whose consumers take the latest value (see core/stream.ts). */
export type LatestBroadcast<T> = Stream<T>;
export const createLatestBroadcast = <T>(options: StreamOptions = {}): LatestBroadcast<T> => createStream<T>(options);

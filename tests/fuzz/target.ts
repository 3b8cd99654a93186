// What a fuzz target is: a named fast-check property over bytes (or strings) that reach one of our decoders
// from a client or a printer. tests/fuzz.test.ts runs every `*.fuzz.ts` module's targets with a few thousand
// seeded cases; `npm run fuzz` runs them long and prints cases per second and any failing seed.
import type fc from "fast-check";

export interface FuzzTarget {
  /** "bind frame", "MQTT packet after mqtt-packet", … */
  name: string;
  /** A fresh property each call; synchronous where the decoder is, asynchronous for socket-level targets. */
  property(): fc.IProperty<any> | fc.IAsyncProperty<any>;
  /** Socket-level targets are slow: the runner scales their case counts down by this factor (default 1). */
  costFactor?: number;
}

// Is the printer's MQTT session still answering? Each request a client sends carries a `sequence_id` that the
// printer's reply echoes. Some firmware wedges after a handful of commands per session (P1S: a ring buffer in
// its response handler fills, maziggy/bambuddy#1164) while reports keep coming; only a new session heals it.
// A pure tracker: requests and reports in, "renew" out; mqtt-upstream.ts owns the clock and the socket.
import { isObject } from "./mqtt-state.ts";

/** How long a request may wait for its reply before it counts as unanswered. */
export const REPLY_DEADLINE_MS = 8_000;
/** Unanswered requests (with no reply to anything since) that make a session wedged; one lost reply is not. */
export const WEDGED_AFTER_UNANSWERED = 2;
/** Requests remembered at most; past this the oldest are forgotten (a client that floods is not our signal). */
const MAX_TRACKED = 256;
/** Sections whose requests the firmware does not answer with an echo of the sequence_id. */
const UNANSWERED_SECTIONS = new Set(["pushing"]);

export interface SessionHealth {
  /** A request payload went to the printer at `now`. */
  requestSent(payload: Buffer, now: number): void;
  /** A report arrived (only parsed while a request waits). */
  reportReceived(payload: Buffer): void;
  /** Why the session should be renewed now, or undefined while it answers. */
  wedged(now: number): string | undefined;
  /** A new session: what the old one owed is not owed any more (nothing is sent again). */
  reset(): void;
  readonly waiting: number;
}

/** The sequence ids a request or report carries, one per section that has one. */
function sequenceIds(payload: Buffer, skip?: Set<string>): string[] {
  let body: unknown;
  try {
    body = JSON.parse(payload.toString("utf8"));
  } catch {
    return [];
  }
  if (!isObject(body)) return [];
  const ids: string[] = [];
  for (const [section, value] of Object.entries(body)) {
    if (skip?.has(section) || !isObject(value)) continue;
    const id = value.sequence_id;
    if (typeof id === "string" || typeof id === "number") ids.push(`${section}/${id}`);
  }
  return ids;
}

export function createSessionHealth(): SessionHealth {
  /** Section/sequence id -> when each still-unanswered request with it was sent, oldest first. */
  let pending: { id: string; sentAt: number }[] = [];
  return {
    requestSent(payload, now) {
      for (const id of sequenceIds(payload, UNANSWERED_SECTIONS)) pending.push({ id, sentAt: now });
      if (pending.length > MAX_TRACKED) pending = pending.slice(-MAX_TRACKED);
    },
    reportReceived(payload) {
      if (pending.length === 0) return;
      const answered = sequenceIds(payload);
      if (answered.length === 0) return;
      // A reply to a later request shows the session answers: what came before it was simply not answered.
      const last = pending.findLastIndex((p) => answered.includes(p.id));
      if (last >= 0) pending = pending.slice(last + 1);
    },
    wedged(now) {
      const overdue = pending.filter((p) => now - p.sentAt >= REPLY_DEADLINE_MS);
      if (overdue.length < WEDGED_AFTER_UNANSWERED) return undefined;
      return `the printer answered none of the last ${pending.length} requests within ${REPLY_DEADLINE_MS / 1000} s`;
    },
    reset() {
      pending = [];
    },
    get waiting() {
      return pending.length;
    },
  };
}

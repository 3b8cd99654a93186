// The FlashForge TCP 8899 scheduler (lib/flashforge/tcp-scheduler.ts with its clients' half, tcp-clients.ts) and a
// client's input reader (lib/flashforge/tcp-client-input.ts) without a socket: events in, actions out.
import { describe, expect, test } from "bun:test";
import { createClientInput, UPLOAD_BUFFER_BYTES } from "../lib/flashforge/tcp-client-input.ts";
import { encodeThumbnail, textReply, type Reply } from "../lib/flashforge/tcp-codec.ts";
import {
  createTcpScheduler, REPLY_TIMEOUT_MS, SLOW_REPLY_TIMEOUT_MS, UPLOAD_STALL_MS,
  type ClientId, type SchedulerAction, type SchedulerEvent, type SchedulerLimits,
} from "../lib/flashforge/tcp-scheduler.ts";

type Of<T extends SchedulerAction["type"]> = Extract<SchedulerAction, { type: T }>;

/** A scheduler with the printer link up, and short ways to feed it and read what it did. */
function harness(limits: SchedulerLimits = {}) {
  const scheduler = createTcpScheduler(limits);
  const on = (event: SchedulerEvent) => scheduler.handle(event);
  on({ type: "linkUp" });
  return {
    scheduler,
    on,
    join: (client: ClientId) => on({ type: "clientJoined", client }),
    say: (client: ClientId, text: string | Buffer) => on({ type: "clientBytes", client, bytes: Buffer.from(text) }),
    reply: (job: number, reply: Reply | string) => on({ type: "printerReplied", job, reply: typeof reply === "string" ? textOf(reply) : reply }),
  };
}

const textOf = (code: string, lines: string[] = []): Reply => {
  const bytes = textReply(code, lines);
  return { bytes, text: bytes.toString() };
};
const of = <T extends SchedulerAction["type"]>(actions: SchedulerAction[], type: T) => actions.filter((a): a is Of<T> => a.type === type);
const sent = (actions: SchedulerAction[]) => of(actions, "sendToPrinter");
const repliesTo = (actions: SchedulerAction[], client: ClientId) => of(actions, "replyToClient").filter((a) => a.client === client).map((a) => a.bytes.toString("latin1"));
const closed = (actions: SchedulerAction[]) => of(actions, "closeClient");
const warnings = (actions: SchedulerAction[]) => of(actions, "log").filter((a) => a.level === "warn").map((a) => a.message);

describe("FlashForge TCP scheduler: commands and replies", () => {
  test("two clients' interleaved commands go out one at a time, and each reply goes back to its sender", () => {
    const h = harness();
    h.join(1);
    h.join(2);
    const first = sent(h.say(1, "~M115\r\n"));
    expect(first.map((s) => s.command.code)).toEqual(["M115"]);
    expect(sent(h.say(2, "~M105\r\n"))).toEqual([]);
    expect(sent(h.say(1, "~M119\r\n"))).toEqual([]);
    let acts = h.reply(first[0]!.job, "M115");
    expect(repliesTo(acts, 1)).toEqual([textReply("M115", []).toString()]);
    expect(repliesTo(acts, 2)).toEqual([]);
    const second = sent(acts);
    expect(second.map((s) => s.command.code)).toEqual(["M105"]);
    acts = h.reply(second[0]!.job, "M105");
    expect(repliesTo(acts, 2)).toHaveLength(1);
    const third = sent(acts);
    expect(third.map((s) => s.command.code)).toEqual(["M119"]);
    expect(repliesTo(h.reply(third[0]!.job, "M119"), 1)[0]).toStartWith("CMD M119 Received.");
  });

  test("a binary reply (~M662 thumbnail) reaches its sender byte for byte; the next reply goes to the next sender", () => {
    const h = harness();
    h.join(1);
    h.join(2);
    const job = sent(h.say(1, "~M662 /data/a.gcode\r\n"))[0]!.job;
    h.say(2, "~M105\r\n");
    const image = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0a, 0x00, 0xff, 0x0d, 0x0a]);
    const text = textReply("M662", []);
    const bytes = Buffer.concat([text, encodeThumbnail(image)]);
    const acts = h.reply(job, { bytes, text: text.toString(), binary: encodeThumbnail(image) });
    const toSender = of(acts, "replyToClient").filter((a) => a.client === 1);
    expect(toSender).toHaveLength(1);
    expect(toSender[0]!.bytes.equals(bytes)).toBe(true);
    const next = sent(acts)[0]!;
    expect(next.command.code).toBe("M105");
    expect(repliesTo(h.reply(next.job, "M105"), 2)).toHaveLength(1);
  });

  test("~M601 and ~M602 are answered here, in the client's order, and never reach the printer", () => {
    const h = harness();
    h.join(1);
    let acts = h.say(1, "~M601 S1\r\n~M115\r\n~M602\r\n");
    expect(repliesTo(acts, 1)).toEqual([textReply("M601", ["Control Success V2.1."]).toString()]);
    expect(sent(acts).map((s) => s.command.code)).toEqual(["M115"]);
    acts = h.reply(sent(acts)[0]!.job, "M115");
    expect(repliesTo(acts, 1).map((r) => r.split("\r\n")[0])).toEqual(["CMD M115 Received.", "CMD M602 Received."]);
    expect(sent(acts)).toEqual([]);
  });

  test("the clients' ~M601 is told the printer's own login line", () => {
    const h = harness();
    h.on({ type: "linkUp", loginLine: "Control Success V2.2." });
    h.join(1);
    expect(repliesTo(h.say(1, "~M601 S1\r\n"), 1)[0]).toContain("Control Success V2.2.");
  });

  test("nothing is sent while the printer link is down; queued commands go once it is up", () => {
    const h = harness();
    h.on({ type: "linkDown" });
    h.join(1);
    expect(sent(h.say(1, "~M115\r\n"))).toEqual([]);
    expect(sent(h.on({ type: "linkUp" })).map((s) => s.command.code)).toEqual(["M115"]);
  });

  test("a reply or failure for a job no longer in flight is ignored", () => {
    const h = harness();
    h.join(1);
    const job = sent(h.say(1, "~M115\r\n"))[0]!.job;
    h.reply(job, "M115");
    expect(h.reply(job, "M115")).toEqual([]);
    expect(h.on({ type: "printerFailed", job, why: "late" })).toEqual([]);
  });
});

describe("FlashForge TCP scheduler: slow commands, idle clients, keepalive", () => {
  test("G28, M109 and M190 get 10 minutes; other commands 15 s", () => {
    const h = harness();
    h.join(1);
    const timeouts: Record<string, number> = {};
    for (const code of ["G28", "M109", "M190", "M105"]) {
      const s = sent(h.say(1, `~${code}\r\n`))[0]!;
      timeouts[code] = s.timeoutMs;
      h.reply(s.job, code);
    }
    expect(timeouts).toEqual({ G28: SLOW_REPLY_TIMEOUT_MS, M109: SLOW_REPLY_TIMEOUT_MS, M190: SLOW_REPLY_TIMEOUT_MS, M105: REPLY_TIMEOUT_MS });
  });

  test("the idle deadline waits while the client's own command is with the printer; once answered, it closes", () => {
    const h = harness({ clientIdleTimeoutMs: 400 });
    expect(of(h.join(1), "startTimer")).toEqual([{ type: "startTimer", timer: "idle:1", ms: 400 }]);
    const job = sent(h.say(1, "~G28\r\n"))[0]!.job;
    const waiting = h.on({ type: "timeout", timer: "idle:1" });
    expect(closed(waiting)).toEqual([]);
    expect(of(waiting, "startTimer")).toEqual([{ type: "startTimer", timer: "idle:1", ms: 400 }]);
    h.reply(job, "G28");
    expect(closed(h.on({ type: "timeout", timer: "idle:1" }))).toEqual([{ type: "closeClient", client: 1, why: "silent for 0 s" }]);
  });

  test("a quiet console gets ~M27 when the keepalive timer fires, not while a command is out", () => {
    const h = harness({ keepaliveMs: 400 });
    h.join(1);
    const job = sent(h.say(1, "~M105\r\n"))[0]!.job;
    expect(sent(h.on({ type: "timeout", timer: "keepalive" }))).toEqual([]);
    expect(of(h.reply(job, "M105"), "startTimer").some((t) => t.timer === "keepalive")).toBe(true);
    const keepalive = sent(h.on({ type: "timeout", timer: "keepalive" }));
    expect(keepalive.map((s) => s.command.line)).toEqual(["~M27"]);
    // A failed keepalive is logged and the session dropped; no client is closed.
    const acts = h.on({ type: "printerFailed", job: keepalive[0]!.job, why: "no reply" });
    expect(warnings(acts)).toEqual(["M27 (sent by the proxy) failed: no reply"]);
    expect(of(acts, "dropPrinterSession")).toHaveLength(1);
    expect(closed(acts)).toEqual([]);
  });
});

describe("FlashForge TCP scheduler: the printer drops", () => {
  test("mid-command: only that client is closed, the session dropped, the others are sent after the reconnect", () => {
    const h = harness();
    h.join(1);
    h.join(2);
    const homing = sent(h.say(1, "~G28\r\n"))[0]!;
    h.say(2, "~M119\r\n");
    const acts = h.on({ type: "printerFailed", job: homing.job, why: "the printer closed the connection" });
    expect(closed(acts)).toEqual([{ type: "closeClient", client: 1, why: "the printer did not answer G28: the printer closed the connection" }]);
    expect(of(acts, "dropPrinterSession")).toEqual([{ type: "dropPrinterSession", why: "G28: the printer closed the connection" }]);
    expect(sent(acts)).toEqual([]);
    h.on({ type: "linkDown" });
    const after = sent(h.on({ type: "linkUp" }));
    expect(after.map((s) => s.command.code)).toEqual(["M119"]);
    expect(repliesTo(h.reply(after[0]!.job, "M119"), 2)).toHaveLength(1);
  });

  test("a client that leaves has its waiting commands dropped and is forgotten once its command is over", () => {
    const h = harness();
    h.join(1);
    h.join(2);
    const job = sent(h.say(1, "~G28\r\n~M119\r\n~M119\r\n"))[0]!.job;
    h.say(2, "~M105\r\n");
    expect(h.scheduler.status()).toEqual({ clients: 2, queued: 1, uploading: false });
    expect(of(h.on({ type: "clientLeft", client: 1 }), "forgetClient")).toEqual([]);
    expect(h.scheduler.status().clients).toBe(1);
    const acts = h.reply(job, "G28");
    expect(of(acts, "replyToClient")).toEqual([]);
    expect(of(acts, "forgetClient")).toEqual([{ type: "forgetClient", client: 1 }]);
    expect(sent(acts).map((s) => s.command.code)).toEqual(["M105"]);
  });
});

describe("FlashForge TCP scheduler: ~M28 uploads", () => {
  const file = Buffer.alloc(100, 0x41);

  test("the file streams after ~M28's reply, other clients wait until ~M29 is answered", () => {
    const h = harness();
    h.join(1);
    h.join(2);
    const m28 = sent(h.say(1, Buffer.concat([Buffer.from("~M28 100 0:/user/a.gcode\r\n"), file])))[0]!;
    expect(h.scheduler.owesUploadBytes).toBe(true);
    h.say(2, "~M105\r\n");
    let acts = h.reply(m28.job, "M28");
    const write = of(acts, "writeToPrinter");
    expect(write).toHaveLength(1);
    expect(write[0]!.bytes.equals(file)).toBe(true);
    acts = h.on({ type: "printerWritten", job: m28.job });
    expect(sent(acts)).toEqual([]); // the console is the uploader's until ~M29
    expect(h.scheduler.owesUploadBytes).toBe(false);
    const m29 = sent(h.say(1, "~M29\r\n"))[0]!;
    expect(m29.command.code).toBe("M29");
    expect(m29.timeoutMs).toBe(SLOW_REPLY_TIMEOUT_MS);
    acts = h.reply(m29.job, "M29");
    expect(repliesTo(acts, 1)).toHaveLength(1);
    expect(sent(acts).map((s) => s.command.code)).toEqual(["M105"]);
    expect(h.scheduler.status().uploading).toBe(false);
  });

  test("an uploader that sent the whole file and left before ~M29: ~M29 is sent for it, the console is free", () => {
    const h = harness();
    h.join(1);
    h.join(2);
    const m28 = sent(h.say(1, Buffer.concat([Buffer.from("~M28 100 0:/user/a.gcode\r\n"), file])))[0]!;
    h.reply(m28.job, "M28");
    h.on({ type: "printerWritten", job: m28.job });
    h.say(2, "~M115\r\n");
    const acts = h.on({ type: "clientLeft", client: 1 });
    // Said on the uploader's own log line (with its address): it is forgotten only after.
    const said = acts.findIndex((a) => a.type === "log" && a.client === 1 && a.message.includes("left before ~M29"));
    expect(said).toBeGreaterThanOrEqual(0);
    expect(acts.findIndex((a) => a.type === "forgetClient")).toBeGreaterThan(said);
    const m29 = sent(acts);
    expect(m29.map((s) => s.command.line)).toEqual(["~M29"]);
    expect(sent(h.reply(m29[0]!.job, "M29")).map((s) => s.command.code)).toEqual(["M115"]);
  });

  test("an uploader that left in the middle of its file: the session is dropped without a word, its progress logged", () => {
    const h = harness();
    h.join(1);
    h.join(2);
    const m28 = sent(h.say(1, Buffer.concat([Buffer.from("~M28 105 0:/user/half.gcode\r\n"), file])))[0]!;
    h.reply(m28.job, "M28");
    const waiting = h.on({ type: "printerWritten", job: m28.job });
    expect(of(waiting, "startTimer")).toEqual([{ type: "startTimer", timer: "uploadStall:1", ms: UPLOAD_STALL_MS }]);
    h.say(2, "~M115\r\n");
    const acts = h.on({ type: "clientLeft", client: 1 });
    expect(warnings(acts).some((w) => w.startsWith("upload abandoned (100 of 105 bytes received)"))).toBe(true);
    expect(of(acts, "dropPrinterSession")).toHaveLength(1);
    expect(sent(acts)).toEqual([]);
    // The printer would take ~M602 as file data: the glue destroys the session instead.
    expect(h.scheduler.owesUploadBytes).toBe(true);
    h.on({ type: "linkDown" });
    const after = sent(h.on({ type: "linkUp" }));
    expect(after.map((s) => s.command.code)).toEqual(["M115"]);
    expect(h.scheduler.owesUploadBytes).toBe(false);
  });

  test("an upload whose client stops sending is closed after the stall timer, and the session dropped", () => {
    const h = harness();
    h.join(1);
    const m28 = sent(h.say(1, "~M28 10 0:/user/a.gcode\r\n01234"))[0]!;
    h.reply(m28.job, "M28");
    h.on({ type: "printerWritten", job: m28.job });
    const acts = h.on({ type: "timeout", timer: "uploadStall:1" });
    expect(closed(acts)).toEqual([{ type: "closeClient", client: 1, why: `sent no upload data for ${UPLOAD_STALL_MS / 1000} s` }]);
    expect(of(acts, "dropPrinterSession")).toEqual([{ type: "dropPrinterSession", why: "M28: the upload stalled" }]);
  });

  test("no keepalive goes between the uploader's file and its ~M29", () => {
    const h = harness();
    h.join(1);
    const m28 = sent(h.say(1, "~M28 2 0:/user/a.gcode\r\nab"))[0]!;
    h.reply(m28.job, "M28");
    expect(of(h.on({ type: "printerWritten", job: m28.job }), "startTimer").map((t) => t.timer)).toContain("keepalive");
    expect(sent(h.on({ type: "timeout", timer: "keepalive" }))).toEqual([]);
    expect(sent(h.say(1, "~M29\r\n")).map((s) => s.command.code)).toEqual(["M29"]);
  });

  test("bytes that arrive while the upload waits are written at once", () => {
    const h = harness();
    h.join(1);
    const m28 = sent(h.say(1, "~M28 10 0:/user/a.gcode\r\n01234"))[0]!;
    h.reply(m28.job, "M28");
    h.on({ type: "printerWritten", job: m28.job });
    const acts = h.say(1, "56789~M29\r\n");
    expect(of(acts, "stopTimer").map((t) => t.timer)).toContain("uploadStall:1");
    expect(of(acts, "writeToPrinter").map((w) => w.bytes.toString())).toEqual(["56789"]);
    expect(sent(h.on({ type: "printerWritten", job: m28.job })).map((s) => s.command.code)).toEqual(["M29"]);
  });

  test("a client is paused while its upload buffer is full and resumed once it drains", () => {
    const h = harness();
    h.join(1);
    const size = UPLOAD_BUFFER_BYTES + 10;
    const acts = h.say(1, Buffer.concat([Buffer.from(`~M28 ${size} 0:/user/big.gcode\r\n`), Buffer.alloc(size)]));
    expect(of(acts, "pauseClient")).toEqual([{ type: "pauseClient", client: 1 }]);
    expect(of(h.reply(sent(acts)[0]!.job, "M28"), "resumeClient")).toEqual([{ type: "resumeClient", client: 1 }]);
  });
});

describe("FlashForge TCP scheduler: limits", () => {
  test("more pipelined commands than the lane holds close that client with a clear reason; the other is served", () => {
    const h = harness({ maxPendingPerClient: 4 });
    h.join(1);
    h.join(2);
    // One with the printer, four waiting: the sixth is one too many.
    const first = h.say(1, "~M105\r\n".repeat(5));
    expect(closed(first)).toEqual([]);
    expect(closed(h.say(1, "~M105\r\n"))).toEqual([{ type: "closeClient", client: 1, why: "sent more than 4 commands without waiting for the replies" }]);
    expect(sent(h.say(2, "~M115\r\n"))).toEqual([]); // behind the one command of client 1 with the printer, not its lane
    expect(sent(h.reply(sent(first)[0]!.job, "M105")).map((s) => s.command.code)).toEqual(["M115"]);
  });

  test("a client that does not read its replies is closed instead of being written more", () => {
    let unread = 0;
    const h = harness({ maxClientBacklogBytes: 1_000, unreadBytes: () => unread });
    h.join(1);
    const job = sent(h.say(1, "~M105\r\n~M105\r\n"))[0]!.job;
    unread = 5_000;
    const acts = h.reply(job, "M105");
    expect(of(acts, "replyToClient")).toEqual([]);
    expect(closed(acts)).toEqual([{ type: "closeClient", client: 1, why: "does not read its replies (5000 bytes waiting)" }]);
    expect(sent(acts)).toEqual([]);
  });

  test("garbage, an overlong line and a bad ~M28 close the client", () => {
    const h = harness();
    for (const [client, text, why] of [
      [1, "\x16\x03\x01\n", "not a G/M command"],
      [2, "~M115 " + "x".repeat(2_000), "without a line end"],
      [3, "~M28 lots a.gcode\r\n", "without a valid size"],
    ] as const) {
      h.join(client);
      const acts = closed(h.say(client, text));
      expect(acts).toHaveLength(1);
      expect(acts[0]!.why).toContain(why);
    }
  });
});

describe("FlashForge TCP client input", () => {
  test("lines split across chunks, ~M28 bytes kept apart from the commands after them", () => {
    const input = createClientInput();
    expect(input.push(Buffer.from("~M1"))).toEqual([]);
    const items = input.push(Buffer.from("15\r\n~M28 4 0:/a\r\nab"));
    expect(items.map((i) => (i.kind === "command" ? [i.command.code, i.uploadSize] : i.kind))).toEqual([["M115", undefined], ["M28", 4]]);
    expect(input.push(Buffer.from("cd~M29\r\n")).map((i) => (i.kind === "command" ? i.command.code : i.kind))).toEqual(["M29"]);
    expect(input.uploadProgress).toBe("4 of 4");
    expect(Buffer.concat([input.takeChunk()!, input.takeChunk()!]).toString()).toBe("abcd");
    expect(input.uploadTaken()).toBe(true);
    expect(input.uploadProgress).toBeUndefined();
  });

  test("a second ~M28 before the first file was taken is invalid", () => {
    const input = createClientInput();
    const items = input.push(Buffer.from("~M28 2 0:/a\r\nab~M28 2 0:/b\r\n"));
    expect(items.at(-1)).toEqual({ kind: "invalid", why: "sent ~M28 before its previous upload was written" });
  });
});

// The FlashForge TCP 8899 scheduler as a pure state machine: many clients share the printer's one console session.
// Events in (a client's bytes, a printer reply, a client leaving, the printer link up or down, a timeout), actions
// out (send to the printer, reply to a client, close a client, drop the printer session, start a timer) as plain
// values; lib/flashforge/tcp.ts does the sockets and timers. This half is the printer's: one command at a time, in
// arrival order across clients; after ~M28 the uploader holds the console until its ~M29 (docs/protocol-notes.md,
// "FlashForge edge policy"). The clients' half (lanes, idle deadlines, ~M601/~M602, backlogs) is tcp-clients.ts.
import { parseCommand, type Command, type Reply } from "./tcp-codec.ts";
import {
  advance, closeClient, deliver, emit, flow, forgetIfGone, joinClient, onBytes, onIdle, onLeft, startTimer, stopTimer, warn,
  type ClientState, type State,
} from "./tcp-clients.ts";

/** ff-5mp-api and FlashPrint poll every ~5 s; the printer drops a session idle for longer. */
export const KEEPALIVE_INTERVAL_MS = 5_000;
export const REPLY_TIMEOUT_MS = 15_000;
/** Commands that wait for the machine: homing, heating with wait, saving an upload. */
export const SLOW_REPLY_TIMEOUT_MS = 10 * 60_000;
const SLOW_COMMANDS = new Set(["G28", "M109", "M190", "M29", "M23"]);
/**
 * A client that sends no command for this long is closed (real clients poll every few seconds). Bytes that do
 * not finish a line do not count, so a half-sent line is closed too; the deadline waits while the client's own
 * command is with the printer (G28, M109, M190 take minutes).
 */
export const CLIENT_IDLE_TIMEOUT_MS = 60_000;
/** Commands a client may pipeline (waiting in its lane, one at a time to the printer) before it is told so and closed. */
export const MAX_PENDING_PER_CLIENT = 32;
/** Reply bytes a client has not read yet; beyond this it is too slow and is closed. */
export const MAX_CLIENT_BACKLOG_BYTES = 8 * 1024 * 1024;
/** An upload whose client sends nothing for this long is abandoned. */
export const UPLOAD_STALL_MS = 30_000;
/** What the printer said to our ~M601 S1; clients get the same words for theirs. */
export const DEFAULT_LOGIN_LINE = "Control Success V2.1.";

export type ClientId = number;
export type TimerId = "keepalive" | `idle:${ClientId}` | `uploadStall:${ClientId}`;

export type SchedulerEvent =
  | { type: "clientJoined"; client: ClientId }
  | { type: "clientBytes"; client: ClientId; bytes: Buffer }
  /** The client's socket closed (it left, or we closed it). */
  | { type: "clientLeft"; client: ClientId }
  | { type: "linkUp"; loginLine?: string }
  | { type: "linkDown" }
  | { type: "printerReplied"; job: number; reply: Reply }
  | { type: "printerFailed"; job: number; why: string }
  /** An upload chunk of `writeToPrinter` was handed to the printer's socket. */
  | { type: "printerWritten"; job: number }
  | { type: "timeout"; timer: TimerId }
  | { type: "stop" };

export type SchedulerAction =
  | { type: "sendToPrinter"; job: number; command: Command; timeoutMs: number }
  | { type: "writeToPrinter"; job: number; bytes: Buffer }
  | { type: "replyToClient"; client: ClientId; bytes: Buffer }
  | { type: "closeClient"; client: ClientId; why: string }
  | { type: "pauseClient"; client: ClientId } | { type: "resumeClient"; client: ClientId }
  /** The scheduler is done with this client: the glue may drop what it keeps for it. */
  | { type: "forgetClient"; client: ClientId }
  /** Reconnect; `owesUploadBytes` then says whether it may be said goodbye to (~M602) or must be destroyed. */
  | { type: "dropPrinterSession"; why: string }
  | { type: "startTimer"; timer: TimerId; ms: number }
  | { type: "stopTimer"; timer: TimerId }
  | { type: "log"; level: "debug" | "info" | "warn"; client?: ClientId; message: string };

export interface SchedulerLimits {
  keepaliveMs?: number;
  clientIdleTimeoutMs?: number;
  maxClientBacklogBytes?: number;
  maxPendingPerClient?: number;
  /** Reply bytes written to the client and not yet read by it (the socket's writableLength). */
  unreadBytes?(client: ClientId): number;
}

export function createTcpScheduler(limits: SchedulerLimits = {}) {
  const s: State = {
    keepaliveMs: limits.keepaliveMs ?? KEEPALIVE_INTERVAL_MS,
    idleMs: limits.clientIdleTimeoutMs ?? CLIENT_IDLE_TIMEOUT_MS,
    maxBacklog: limits.maxClientBacklogBytes ?? MAX_CLIENT_BACKLOG_BYTES,
    maxPending: limits.maxPendingPerClient ?? MAX_PENDING_PER_CLIENT,
    unreadBytes: limits.unreadBytes ?? (() => 0),
    clients: new Map(), queue: [], linkUp: false, owesUploadBytes: false, loginLine: DEFAULT_LOGIN_LINE,
    keepaliveArmed: false, writing: false, waitingForBytes: false, nextJobId: 0, out: [],
  };
  return {
    /** Handles one event; returns what the socket glue must do, in order. */
    handle(event: SchedulerEvent): SchedulerAction[] {
      s.out = [];
      dispatch(s, event);
      settle(s);
      return s.out;
    },
    /** A printer session dropped now must be destroyed without ~M602 (it would become file data). */
    get owesUploadBytes() {
      return s.owesUploadBytes;
    },
    status() {
      let clients = 0;
      for (const c of s.clients.values()) if (!c.left) clients++;
      return { clients, queued: s.queue.length, uploading: s.exclusive !== undefined };
    },
  };
}

export type TcpScheduler = ReturnType<typeof createTcpScheduler>;

function dispatch(s: State, event: SchedulerEvent): void {
  const isCurrent = "job" in event && s.inFlight?.id === event.job;
  switch (event.type) {
    case "clientJoined":
      return joinClient(s, event.client);
    case "clientBytes":
      return onBytes(s, event.client, event.bytes);
    case "clientLeft":
      return onLeft(s, event.client);
    case "linkUp":
      s.loginLine = event.loginLine ?? s.loginLine;
      s.linkUp = true;
      s.owesUploadBytes = false;
      return;
    case "linkDown":
      // owesUploadBytes stays: the job in flight fails on its own, and says whether a file was cut.
      s.linkUp = false;
      return;
    case "printerReplied":
      return isCurrent ? replied(s, event.reply) : undefined;
    case "printerFailed":
      return isCurrent ? fail(s, event.why) : undefined;
    case "printerWritten":
      if (!isCurrent || !s.writing) return;
      s.writing = false;
      return streamUpload(s, s.inFlight!.client!);
    case "timeout":
      return onTimeout(s, event.timer);
    case "stop":
      s.queue.length = 0;
      return;
  }
}

/**
 * After every event, what the clients' side changed means for the printer: the awaited bytes of an upload arrived,
 * or its client left without them (the file is cut); an uploader that left after its file but before ~M29 gets
 * ~M29 sent for it; then the next job goes out.
 */
function settle(s: State): void {
  const streaming = s.waitingForBytes ? s.inFlight?.client : undefined;
  if (streaming && (streaming.closed || streaming.input.buffered > 0)) {
    s.waitingForBytes = false;
    stopTimer(s, `uploadStall:${streaming.id}`);
    if (streaming.input.buffered > 0) streamUpload(s, streaming);
    else fail(s, "the client left in the middle of an upload");
  }
  const uploader = s.exclusive;
  if (uploader?.closed && s.inFlight?.client !== uploader) {
    s.exclusive = undefined;
    warn(s, "the uploader left before ~M29: sending ~M29 for it so the printer closes the file; the console is free again", uploader);
    s.queue.unshift({ command: parseCommand("~M29")!, id: 0 });
    forgetIfGone(s, uploader);
  }
  pump(s);
}

function nextJob(s: State) {
  if (!s.exclusive) return s.queue.shift();
  const i = s.queue.findIndex((j) => j.client === s.exclusive);
  return i === -1 ? undefined : s.queue.splice(i, 1)[0];
}

function pump(s: State): void {
  if (s.inFlight || !s.linkUp) return;
  const job = nextJob(s);
  if (!job) {
    if (!s.keepaliveArmed) startTimer(s, "keepalive", s.keepaliveMs);
    s.keepaliveArmed = true;
    return;
  }
  if (s.keepaliveArmed) stopTimer(s, "keepalive");
  s.keepaliveArmed = false;
  job.id = ++s.nextJobId;
  s.inFlight = job;
  s.writing = s.waitingForBytes = false;
  if ((job.uploadSize ?? 0) > 0) s.owesUploadBytes = true;
  const timeoutMs = SLOW_COMMANDS.has(job.command.code) ? SLOW_REPLY_TIMEOUT_MS : REPLY_TIMEOUT_MS;
  emit(s, { type: "sendToPrinter", job: job.id, command: job.command, timeoutMs });
}

/** The job in flight is over, answered or not: its client's lane goes on. */
function jobDone(s: State): void {
  const c = s.inFlight?.client;
  s.inFlight = undefined;
  if (!c) return;
  c.active = false;
  advance(s, c);
  forgetIfGone(s, c);
}

function fail(s: State, why: string): void {
  const { command, client: c } = s.inFlight!;
  if (!c) warn(s, `${command.code} (sent by the proxy) failed: ${why}`);
  else if (!c.closed) closeClient(s, c, `the printer did not answer ${command.code}: ${why}`);
  if (c && s.exclusive === c) {
    s.exclusive = undefined;
    if (s.owesUploadBytes) warn(s, `upload abandoned (${c.input.uploadProgress ?? "some"} bytes received): dropping the printer session, which takes anything we send now as file data`, c);
  }
  // Nothing more goes out until the new session is up.
  s.linkUp = false;
  emit(s, { type: "dropPrinterSession", why: `${command.code}: ${why}` });
  jobDone(s);
}

function replied(s: State, reply: Reply): void {
  const { command, client: c, uploadSize } = s.inFlight!;
  if (!c) return jobDone(s);
  deliver(s, c, reply.bytes);
  if (uploadSize !== undefined) {
    s.exclusive = c;
    s.owesUploadBytes = uploadSize > 0;
    return streamUpload(s, c);
  }
  if (command.code === "M29" && s.exclusive === c) s.exclusive = undefined;
  jobDone(s);
}

/** After ~M28's reply: the client's raw bytes go to the printer, one chunk at a time, nothing else in between. */
function streamUpload(s: State, c: ClientState): void {
  if (s.writing) return;
  const chunk = c.input.takeChunk();
  flow(s, c);
  if (chunk) {
    s.writing = true;
    return emit(s, { type: "writeToPrinter", job: s.inFlight!.id, bytes: chunk });
  }
  if (c.input.uploadTaken()) {
    s.owesUploadBytes = false;
    flow(s, c);
    return jobDone(s);
  }
  if (c.closed) return fail(s, "the client left in the middle of an upload");
  s.waitingForBytes = true;
  startTimer(s, `uploadStall:${c.id}`, UPLOAD_STALL_MS);
}

function onTimeout(s: State, timer: TimerId): void {
  if (timer === "keepalive") {
    // Busy: armed again the next time the console is idle (settle -> pump).
    s.keepaliveArmed = false;
    if (s.linkUp && !s.inFlight && s.queue.length === 0 && !s.exclusive) s.queue.push({ command: parseCommand("~M27")!, id: 0 });
    return;
  }
  const [kind, id] = timer.split(":");
  const c = s.clients.get(Number(id));
  if (!c || c.closed) return;
  if (kind === "idle") return onIdle(s, c);
  if (!s.waitingForBytes || s.inFlight?.client !== c) return;
  s.waitingForBytes = false;
  closeClient(s, c, `sent no upload data for ${UPLOAD_STALL_MS / 1000} s`);
  fail(s, "the upload stalled");
}

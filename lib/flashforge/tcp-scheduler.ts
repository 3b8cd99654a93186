// The FlashForge TCP 8899 scheduler as a pure state machine: many clients share the printer's one console session.
// Events in (a client's bytes, a printer reply, a client leaving, the printer link up or down, a timeout), actions
// out (send to the printer, reply to a client, close a client, drop the printer session, start a timer) as plain
// values; lib/flashforge/tcp.ts does the sockets and timers. A client's commands wait in its own lane and go to the
// printer one at a time, in arrival order across clients; ~M601/~M602 are answered here; after ~M28 the uploader
// holds the console until its ~M29 (docs/protocol-notes.md, "FlashForge edge policy").
import { parseCommand, textReply, type Command, type Reply } from "./tcp-codec.ts";
import { createClientInput, type ClientInputReader } from "./tcp-client-input.ts";

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

interface ClientState {
  id: ClientId;
  input: ClientInputReader;
  /** We closed it, or it left: nothing more of it is read or sent. */
  closed: boolean;
  left: boolean;
  /** Commands read and not yet started; `active`: one is queued for or with the printer. */
  lane: Job[];
  active: boolean;
}

interface Job {
  command: Command;
  client?: ClientState;
  /** An ~M28's file size: after its reply the file's bytes go to the printer. */
  uploadSize?: number;
  id: number;
}

interface State {
  keepaliveMs: number;
  idleMs: number;
  maxBacklog: number;
  maxPending: number;
  unreadBytes(client: ClientId): number;
  clients: Map<ClientId, ClientState>;
  queue: Job[];
  inFlight?: Job;
  /** The uploader between its ~M28 and its ~M29: only its commands go to the printer. */
  exclusive?: ClientState;
  linkUp: boolean;
  /** After ~M28 the printer takes the next bytes as the file: a command (even ~M602) now would become file data. */
  owesUploadBytes: boolean;
  loginLine: string;
  /** The upload of the job in flight: a chunk is being written, or every chunk was and more must come. */
  writing: boolean;
  waitingForBytes: boolean;
  nextJobId: number;
  out: SchedulerAction[];
}

export function createTcpScheduler(limits: SchedulerLimits = {}) {
  const s: State = {
    keepaliveMs: limits.keepaliveMs ?? KEEPALIVE_INTERVAL_MS,
    idleMs: limits.clientIdleTimeoutMs ?? CLIENT_IDLE_TIMEOUT_MS,
    maxBacklog: limits.maxClientBacklogBytes ?? MAX_CLIENT_BACKLOG_BYTES,
    maxPending: limits.maxPendingPerClient ?? MAX_PENDING_PER_CLIENT,
    unreadBytes: limits.unreadBytes ?? (() => 0),
    clients: new Map(), queue: [], linkUp: false, owesUploadBytes: false, loginLine: DEFAULT_LOGIN_LINE,
    writing: false, waitingForBytes: false, nextJobId: 0, out: [],
  };
  return {
    /** Handles one event; returns what the socket glue must do, in order. */
    handle(event: SchedulerEvent): SchedulerAction[] {
      s.out = [];
      dispatch(s, event);
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
    case "clientJoined": {
      const c: ClientState = { id: event.client, input: createClientInput(), closed: false, left: false, lane: [], active: false };
      s.clients.set(c.id, c);
      return touch(s, c);
    }
    case "clientBytes": {
      const c = s.clients.get(event.client);
      return c && !c.closed ? onBytes(s, c, event.bytes) : undefined;
    }
    case "clientLeft":
      return onLeft(s, event.client);
    case "linkUp":
      s.loginLine = event.loginLine ?? s.loginLine;
      s.linkUp = true;
      s.owesUploadBytes = false;
      return pump(s);
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

const emit = (s: State, action: SchedulerAction) => void s.out.push(action);
const warn = (s: State, message: string, c?: ClientState) => emit(s, { type: "log", level: "warn", client: c?.id, message });
const startTimer = (s: State, timer: TimerId, ms: number) => emit(s, { type: "startTimer", timer, ms });
const stopTimer = (s: State, timer: TimerId) => emit(s, { type: "stopTimer", timer });
const touch = (s: State, c: ClientState) => void (s.idleMs > 0 && startTimer(s, `idle:${c.id}`, s.idleMs));

function closeClient(s: State, c: ClientState, why: string): void {
  if (c.closed) return;
  emit(s, { type: "closeClient", client: c.id, why });
  leave(s, c);
}

/** Whether closed by us or gone by itself: its waiting commands are dropped, a lock it holds is released. */
function leave(s: State, c: ClientState): void {
  c.closed = true;
  c.lane.length = 0;
  stopTimer(s, `idle:${c.id}`);
  s.queue = s.queue.filter((job) => job.client !== c);
  c.active = s.inFlight?.client === c;
  if (!c.active) {
    if (s.exclusive === c) endAbandonedUpload(s, c);
  } else if (s.waitingForBytes) {
    s.waitingForBytes = false;
    stopTimer(s, `uploadStall:${c.id}`);
    fail(s, "the client left in the middle of an upload");
  }
}

function onLeft(s: State, id: ClientId): void {
  const c = s.clients.get(id);
  if (!c || c.left) return;
  c.left = true;
  if (!c.closed) leave(s, c);
  forgetIfGone(s, c);
}

function forgetIfGone(s: State, c: ClientState): void {
  if (!c.left || s.inFlight?.client === c || !s.clients.delete(c.id)) return;
  emit(s, { type: "forgetClient", client: c.id });
}

/** The uploader sent its whole file but left before ~M29: ~M29 for it (the printer closes the file), console free. */
function endAbandonedUpload(s: State, c: ClientState): void {
  s.exclusive = undefined;
  warn(s, "the uploader left before ~M29: sending ~M29 for it so the printer closes the file; the console is free again", c);
  s.queue.unshift({ command: parseCommand("~M29")!, id: 0 });
  pump(s);
}

function deliver(s: State, c: ClientState, bytes: Buffer): void {
  if (c.closed) return;
  const unread = s.unreadBytes(c.id);
  if (unread > s.maxBacklog) return closeClient(s, c, `does not read its replies (${unread} bytes waiting)`);
  emit(s, { type: "replyToClient", client: c.id, bytes });
  touch(s, c);
}

/** The client's next commands from its lane: answered here (~M601/~M602), or the next one queued for the printer. */
function advance(s: State, c: ClientState): void {
  while (!c.active && !c.closed && c.lane.length > 0) {
    const job = c.lane.shift()!;
    if (job.command.code === "M601") deliver(s, c, textReply("M601", [s.loginLine]));
    else if (job.command.code === "M602") deliver(s, c, textReply("M602", ["Control Release."]));
    else {
      c.active = true;
      s.queue.push(job);
      pump(s);
    }
  }
}

function nextJob(s: State): Job | undefined {
  if (!s.exclusive) return s.queue.shift();
  const i = s.queue.findIndex((j) => j.client === s.exclusive);
  return i === -1 ? undefined : s.queue.splice(i, 1)[0];
}

function pump(s: State): void {
  if (s.inFlight || !s.linkUp) return;
  const job = nextJob(s);
  if (!job) return startTimer(s, "keepalive", s.keepaliveMs);
  stopTimer(s, "keepalive");
  job.id = ++s.nextJobId;
  s.inFlight = job;
  s.writing = s.waitingForBytes = false;
  if ((job.uploadSize ?? 0) > 0) s.owesUploadBytes = true;
  const timeoutMs = SLOW_COMMANDS.has(job.command.code) ? SLOW_REPLY_TIMEOUT_MS : REPLY_TIMEOUT_MS;
  emit(s, { type: "sendToPrinter", job: job.id, command: job.command, timeoutMs });
}

/** The job in flight is over, answered or not: its client's lane goes on, and the queue. */
function jobDone(s: State): void {
  const c = s.inFlight?.client;
  s.inFlight = undefined;
  if (c) {
    c.active = false;
    if (c.closed && s.exclusive === c) endAbandonedUpload(s, c);
    advance(s, c);
    forgetIfGone(s, c);
  }
  pump(s);
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

/** Reading a client pauses while its upload's buffer is full (backpressure). */
function flow(s: State, c: ClientState): void {
  const change = c.input.flow();
  if (change) emit(s, { type: change === "pause" ? "pauseClient" : "resumeClient", client: c.id });
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

function onBytes(s: State, c: ClientState, chunk: Buffer): void {
  for (const item of c.input.push(chunk)) {
    if (c.closed) return;
    if (item.kind === "invalid") return closeClient(s, c, item.why);
    const { command, uploadSize } = item;
    touch(s, c);
    if (uploadSize !== undefined) emit(s, { type: "log", level: "info", client: c.id, message: `upload of ${uploadSize} bytes: ${command.args.replace(/^\d+\s+/, "")}` });
    if (c.lane.length >= s.maxPending) return closeClient(s, c, `sent more than ${s.maxPending} commands without waiting for the replies`);
    c.lane.push({ command, client: c, uploadSize, id: 0 });
    advance(s, c);
  }
  flow(s, c);
  if (s.waitingForBytes && s.inFlight?.client === c && c.input.buffered > 0) {
    s.waitingForBytes = false;
    stopTimer(s, `uploadStall:${c.id}`);
    streamUpload(s, c);
  }
}

function onTimeout(s: State, timer: TimerId): void {
  if (timer === "keepalive") {
    if (!s.linkUp || s.inFlight || s.queue.length > 0 || s.exclusive) return startTimer(s, "keepalive", s.keepaliveMs);
    s.queue.push({ command: parseCommand("~M27")!, id: 0 });
    return pump(s);
  }
  const [kind, id] = timer.split(":");
  const c = s.clients.get(Number(id));
  if (!c || c.closed) return;
  if (kind === "idle") {
    // Its own command is still with the printer: not idle, only waiting.
    if (c.active || c.lane.length > 0) return touch(s, c);
    return closeClient(s, c, `silent for ${Math.round(s.idleMs / 1000)} s`);
  }
  if (!s.waitingForBytes || s.inFlight?.client !== c) return;
  s.waitingForBytes = false;
  closeClient(s, c, `sent no upload data for ${UPLOAD_STALL_MS / 1000} s`);
  fail(s, "the upload stalled");
}

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
  | { type: "pauseClient" | "resumeClient" | "forgetClient"; client: ClientId }
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
  /** Commands read and not yet started; `active` is the one queued for or with the printer. */
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

export function createTcpScheduler(limits: SchedulerLimits = {}) {
  const keepaliveMs = limits.keepaliveMs ?? KEEPALIVE_INTERVAL_MS;
  const idleMs = limits.clientIdleTimeoutMs ?? CLIENT_IDLE_TIMEOUT_MS;
  const maxBacklog = limits.maxClientBacklogBytes ?? MAX_CLIENT_BACKLOG_BYTES;
  const maxPending = limits.maxPendingPerClient ?? MAX_PENDING_PER_CLIENT;
  const unreadBytes = limits.unreadBytes ?? (() => 0);
  const clients = new Map<ClientId, ClientState>();
  const queue: Job[] = [];
  let inFlight: Job | undefined;
  let exclusive: ClientState | undefined;
  let linkUp = false;
  /** After ~M28 the printer takes the next bytes as the file: a command (even ~M602) now would become file data. */
  let owesUploadBytes = false;
  let loginLine = DEFAULT_LOGIN_LINE;
  /** The upload of the job in flight: a chunk is being written, or every chunk was and more must come. */
  let writing = false;
  let waitingForBytes = false;
  let nextJobId = 0;
  let out: SchedulerAction[] = [];

  const emit = (action: SchedulerAction) => void out.push(action);
  const warn = (message: string, client?: ClientState) => emit({ type: "log", level: "warn", client: client?.id, message });
  const touch = (c: ClientState) => idleMs > 0 && emit({ type: "startTimer", timer: `idle:${c.id}`, ms: idleMs });
  const pending = (c: ClientState) => c.lane.length + (c.active ? 1 : 0);

  const closeClient = (c: ClientState, why: string) => {
    if (c.closed) return;
    emit({ type: "closeClient", client: c.id, why });
    leave(c);
  };

  /** Whether closed by us or gone by itself: its waiting commands are dropped, a lock it holds is released. */
  const leave = (c: ClientState) => {
    c.closed = true;
    c.lane.length = 0;
    emit({ type: "stopTimer", timer: `idle:${c.id}` });
    for (let i = queue.length - 1; i >= 0; i--) if (queue[i]!.client === c) queue.splice(i, 1);
    c.active = inFlight?.client === c;
    if (inFlight?.client !== c) {
      if (exclusive === c) endAbandonedUpload(c);
    } else if (waitingForBytes) {
      waitingForBytes = false;
      emit({ type: "stopTimer", timer: `uploadStall:${c.id}` });
      fail("the client left in the middle of an upload");
    }
  };

  /** The uploader sent its whole file but left before ~M29: ~M29 for it (the printer closes the file), console free. */
  const endAbandonedUpload = (c: ClientState) => {
    exclusive = undefined;
    warn("the uploader left before ~M29: sending ~M29 for it so the printer closes the file; the console is free again", c);
    queue.unshift({ command: parseCommand("~M29")!, id: 0 });
    pump();
  };

  const forgetIfGone = (c: ClientState) => {
    if (!c.left || inFlight?.client === c || !clients.has(c.id)) return;
    clients.delete(c.id);
    emit({ type: "forgetClient", client: c.id });
  };

  const deliver = (c: ClientState, bytes: Buffer) => {
    if (c.closed) return;
    const unread = unreadBytes(c.id);
    if (unread > maxBacklog) return closeClient(c, `does not read its replies (${unread} bytes waiting)`);
    emit({ type: "replyToClient", client: c.id, bytes });
    touch(c);
  };

  /** The client's next command from its lane: answered here (~M601/~M602) or queued for the printer. */
  const advance = (c: ClientState) => {
    while (!c.active && !c.closed && c.lane.length > 0) {
      const job = c.lane.shift()!;
      if (job.command.code === "M601") deliver(c, textReply("M601", [loginLine]));
      else if (job.command.code === "M602") deliver(c, textReply("M602", ["Control Release."]));
      else {
        c.active = true;
        queue.push(job);
        pump();
      }
    }
  };

  const nextJob = (): Job | undefined => {
    if (!exclusive) return queue.shift();
    const i = queue.findIndex((j) => j.client === exclusive);
    return i === -1 ? undefined : queue.splice(i, 1)[0];
  };

  function pump(): void {
    if (inFlight || !linkUp) return;
    const job = nextJob();
    if (!job) return void emit({ type: "startTimer", timer: "keepalive", ms: keepaliveMs });
    emit({ type: "stopTimer", timer: "keepalive" });
    const { command } = job;
    job.id = ++nextJobId;
    inFlight = job;
    writing = waitingForBytes = false;
    if ((job.uploadSize ?? 0) > 0) owesUploadBytes = true;
    const timeoutMs = SLOW_COMMANDS.has(command.code) ? SLOW_REPLY_TIMEOUT_MS : REPLY_TIMEOUT_MS;
    emit({ type: "sendToPrinter", job: job.id, command, timeoutMs });
  }

  /** The job in flight is over, answered or not: its client's lane goes on, and the queue. */
  const jobDone = () => {
    const c = inFlight?.client;
    inFlight = undefined;
    if (c) {
      c.active = false;
      if (c.closed && exclusive === c) endAbandonedUpload(c);
      advance(c);
      forgetIfGone(c);
    }
    pump();
  };

  function fail(why: string): void {
    const { command, client: c } = inFlight!;
    if (!c) warn(`${command.code} (sent by the proxy) failed: ${why}`);
    else if (!c.closed) closeClient(c, `the printer did not answer ${command.code}: ${why}`);
    if (c && exclusive === c) {
      exclusive = undefined;
      if (owesUploadBytes) warn(`upload abandoned (${c.input.uploadProgress ?? "some"} bytes received): dropping the printer session, which takes anything we send now as file data`, c);
    }
    // Nothing more goes out until the new session is up.
    linkUp = false;
    emit({ type: "dropPrinterSession", why: `${command.code}: ${why}` });
    jobDone();
  }

  const replied = (reply: Reply) => {
    const { command, client: c, uploadSize } = inFlight!;
    if (!c) return jobDone();
    deliver(c, reply.bytes);
    if (uploadSize !== undefined) {
      exclusive = c;
      owesUploadBytes = uploadSize > 0;
      return streamUpload(c);
    }
    if (command.code === "M29" && exclusive === c) exclusive = undefined;
    jobDone();
  };

  /** Reading a client pauses while its upload's buffer is full (backpressure). */
  const flow = (c: ClientState) => {
    const change = c.input.flow();
    if (change) emit({ type: change === "pause" ? "pauseClient" : "resumeClient", client: c.id });
  };

  /** After ~M28's reply: the client's raw bytes go to the printer, one chunk at a time, nothing else in between. */
  function streamUpload(c: ClientState): void {
    if (writing) return;
    const chunk = c.input.takeChunk();
    flow(c);
    if (chunk) {
      writing = true;
      return emit({ type: "writeToPrinter", job: inFlight!.id, bytes: chunk });
    }
    if (c.input.uploadTaken()) {
      owesUploadBytes = false;
      flow(c);
      return jobDone();
    }
    if (c.closed) return fail("the client left in the middle of an upload");
    waitingForBytes = true;
    emit({ type: "startTimer", timer: `uploadStall:${c.id}`, ms: UPLOAD_STALL_MS });
  }

  const onBytes = (c: ClientState, chunk: Buffer) => {
    for (const item of c.input.push(chunk)) {
      if (c.closed) return;
      if (item.kind === "invalid") return closeClient(c, item.why);
      const { command, uploadSize } = item;
      touch(c);
      if (uploadSize !== undefined) emit({ type: "log", level: "info", client: c.id, message: `upload of ${uploadSize} bytes: ${command.args.replace(/^\d+\s+/, "")}` });
      if (c.lane.length >= maxPending) return closeClient(c, `sent more than ${maxPending} commands without waiting for the replies`);
      c.lane.push({ command, client: c, uploadSize, id: 0 });
      advance(c);
    }
    flow(c);
    if (waitingForBytes && inFlight?.client === c && c.input.buffered > 0) {
      waitingForBytes = false;
      emit({ type: "stopTimer", timer: `uploadStall:${c.id}` });
      streamUpload(c);
    }
  };

  const onTimeout = (timer: TimerId) => {
    if (timer === "keepalive") {
      if (linkUp && !inFlight && queue.length === 0 && !exclusive) {
        queue.push({ command: parseCommand("~M27")!, id: 0 });
        pump();
      } else emit({ type: "startTimer", timer: "keepalive", ms: keepaliveMs });
      return;
    }
    const [kind, id] = timer.split(":");
    const c = clients.get(Number(id));
    if (!c || c.closed) return;
    // Its own command is still with the printer: not idle, only waiting.
    if (kind === "idle") return pending(c) > 0 ? void touch(c) : closeClient(c, `silent for ${Math.round(idleMs / 1000)} s`);
    if (!waitingForBytes || inFlight?.client !== c) return;
    waitingForBytes = false;
    closeClient(c, `sent no upload data for ${UPLOAD_STALL_MS / 1000} s`);
    fail("the upload stalled");
  };

  const current = (job: number) => inFlight !== undefined && inFlight.id === job;

  function dispatch(event: SchedulerEvent): void {
    switch (event.type) {
      case "clientJoined": {
        const c: ClientState = { id: event.client, input: createClientInput(), closed: false, left: false, lane: [], active: false };
        clients.set(c.id, c);
        return void touch(c);
      }
      case "clientBytes": {
        const c = clients.get(event.client);
        return c && !c.closed ? onBytes(c, event.bytes) : undefined;
      }
      case "clientLeft": {
        const c = clients.get(event.client);
        if (!c || c.left) return;
        c.left = true;
        if (!c.closed) leave(c);
        return forgetIfGone(c);
      }
      case "linkUp":
        if (event.loginLine) loginLine = event.loginLine;
        linkUp = true;
        owesUploadBytes = false;
        return pump();
      case "linkDown":
        // owesUploadBytes stays: the job in flight fails on its own, and says whether a file was cut.
        linkUp = false;
        return;
      case "printerReplied":
        return current(event.job) ? replied(event.reply) : undefined;
      case "printerFailed":
        return current(event.job) ? fail(event.why) : undefined;
      case "printerWritten":
        if (!current(event.job) || !writing) return;
        writing = false;
        return streamUpload(inFlight!.client!);
      case "timeout":
        return onTimeout(event.timer);
      case "stop":
        queue.length = 0;
        return;
    }
  }

  return {
    /** Handles one event; returns what the socket glue must do, in order. */
    handle(event: SchedulerEvent): SchedulerAction[] {
      out = [];
      dispatch(event);
      return out;
    },
    /** A printer session dropped now must be destroyed without ~M602 (it would become file data). */
    get owesUploadBytes() {
      return owesUploadBytes;
    },
    status() {
      let connected = 0;
      for (const c of clients.values()) if (!c.left) connected++;
      return { clients: connected, queued: queue.length, uploading: exclusive !== undefined };
    },
  };
}

export type TcpScheduler = ReturnType<typeof createTcpScheduler>;

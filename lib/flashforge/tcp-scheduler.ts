// The FlashForge TCP 8899 scheduler as a pure state machine: many clients share the printer's one console session.
// Events in (a client's bytes, a printer reply, a client leaving, the printer link up or down, a timeout), actions
// out (send to the printer, reply to a client, close a client, drop the printer session, start a timer) as plain
// values; lib/flashforge/tcp.ts does the sockets and timers. A client's commands wait in its own lane and go to the
// printer one at a time, in arrival order across clients; ~M601/~M602 are answered here; after ~M28 the uploader
// holds the console until its ~M29 (docs/protocol-notes.md, "FlashForge edge policy").
import { parseCommand, textReply, MAX_COMMAND_LINE_BYTES, type Command, type Reply } from "./tcp-codec.ts";

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
/** Upload bytes buffered from a client before we stop reading it (backpressure). */
export const UPLOAD_BUFFER_BYTES = 1024 * 1024;
/** An upload whose client sends nothing for this long is abandoned. */
export const UPLOAD_STALL_MS = 30_000;
export const MAX_UPLOAD_BYTES = 2 * 1024 * 1024 * 1024;
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

interface Upload {
  size: number;
  /** Bytes still to come from the client. */
  remaining: number;
  chunks: Buffer[];
  buffered: number;
  /** Its ~M28 was answered: chunks go to the printer. */
  streaming: boolean;
  writing: boolean;
  /** Streaming, every chunk written, waiting for the client's next bytes. */
  waiting: boolean;
}

interface ClientState {
  id: ClientId;
  input: Buffer;
  /** We closed it, or it left: nothing more of it is read or sent. */
  closed: boolean;
  left: boolean;
  paused: boolean;
  /** Commands read and not yet started; `active` is the one queued for or with the printer. */
  lane: Command[];
  active: boolean;
  upload?: Upload;
}

interface Job {
  command: Command;
  client?: ClientState;
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
    if (inFlight?.client === c) {
      if (c.upload?.waiting) {
        c.upload.waiting = false;
        emit({ type: "stopTimer", timer: `uploadStall:${c.id}` });
        fail("the client left in the middle of an upload");
      }
    } else if (exclusive === c) endAbandonedUpload(c);
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
      const command = c.lane.shift()!;
      if (command.code === "M601") deliver(c, textReply("M601", [loginLine]));
      else if (command.code === "M602") deliver(c, textReply("M602", ["Control Release."]));
      else {
        c.active = true;
        queue.push({ command, client: c, id: 0 });
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
    const { command, client } = job;
    job.id = ++nextJobId;
    inFlight = job;
    if (command.code === "M28" && client?.upload && client.upload.size > 0) owesUploadBytes = true;
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
      const up = c.upload;
      if (owesUploadBytes) warn(`upload abandoned (${up ? `${up.size - up.remaining} of ${up.size}` : "some"} bytes received): dropping the printer session, which takes anything we send now as file data`, c);
    }
    // Nothing more goes out until the new session is up.
    linkUp = false;
    emit({ type: "dropPrinterSession", why: `${command.code}: ${why}` });
    jobDone();
  }

  const replied = (reply: Reply) => {
    const { command, client: c } = inFlight!;
    if (!c) return jobDone();
    deliver(c, reply.bytes);
    if (command.code === "M28" && c.upload) {
      exclusive = c;
      owesUploadBytes = c.upload.size > 0;
      c.upload.streaming = true;
      return streamUpload(c);
    }
    if (command.code === "M29" && exclusive === c) exclusive = undefined;
    jobDone();
  };

  const resumeIfRoom = (c: ClientState, up: Upload) => {
    if (!c.paused || up.buffered >= UPLOAD_BUFFER_BYTES) return;
    c.paused = false;
    emit({ type: "resumeClient", client: c.id });
  };

  /** After ~M28's reply: the client's raw bytes go to the printer, one chunk at a time, nothing else in between. */
  function streamUpload(c: ClientState): void {
    const up = c.upload!;
    if (up.writing) return;
    const chunk = up.chunks.shift();
    if (chunk) {
      up.buffered -= chunk.length;
      resumeIfRoom(c, up);
      up.writing = true;
      return emit({ type: "writeToPrinter", job: inFlight!.id, bytes: chunk });
    }
    if (up.remaining === 0) {
      owesUploadBytes = false;
      c.upload = undefined;
      return jobDone();
    }
    if (c.closed) return fail("the client left in the middle of an upload");
    resumeIfRoom(c, up);
    up.waiting = true;
    emit({ type: "startTimer", timer: `uploadStall:${c.id}`, ms: UPLOAD_STALL_MS });
  }

  const onLine = (c: ClientState, raw: Buffer) => {
    const command = parseCommand(raw);
    if (!command) return closeClient(c, `sent something that is not a G/M command: ${JSON.stringify(raw.toString("utf8").slice(0, 40))}`);
    touch(c);
    if (command.code === "M28") {
      if (c.upload) return closeClient(c, "sent ~M28 before its previous upload was written");
      const m = /^(\d+)\s+\S/.exec(command.args);
      const size = m ? Number(m[1]) : NaN;
      if (!(size >= 0 && size <= MAX_UPLOAD_BYTES)) return closeClient(c, `sent ~M28 without a valid size: ${JSON.stringify(command.args.slice(0, 60))}`);
      c.upload = { size, remaining: size, chunks: [], buffered: 0, streaming: false, writing: false, waiting: false };
      emit({ type: "log", level: "info", client: c.id, message: `upload of ${size} bytes: ${command.args.replace(/^\d+\s+/, "")}` });
    }
    if (c.lane.length >= maxPending) return closeClient(c, `sent more than ${maxPending} commands without waiting for the replies`);
    c.lane.push(command);
    advance(c);
  };

  /** Upload bytes while a file is owed, command lines otherwise. */
  const onBytes = (c: ClientState, chunk: Buffer) => {
    let buffer = c.input.length ? Buffer.concat([c.input, chunk]) : chunk;
    while (buffer.length > 0 && !c.closed) {
      const up = c.upload;
      if (up && up.remaining > 0) {
        const take = Math.min(up.remaining, buffer.length);
        up.chunks.push(Buffer.from(buffer.subarray(0, take)));
        up.buffered += take;
        up.remaining -= take;
        buffer = buffer.subarray(take);
        if (up.buffered >= UPLOAD_BUFFER_BYTES && !c.paused) {
          c.paused = true;
          emit({ type: "pauseClient", client: c.id });
        }
        if (up.waiting) {
          up.waiting = false;
          emit({ type: "stopTimer", timer: `uploadStall:${c.id}` });
          streamUpload(c);
        }
        continue;
      }
      const nl = buffer.indexOf(0x0a);
      if (nl === -1) {
        if (buffer.length > MAX_COMMAND_LINE_BYTES) closeClient(c, `sent ${buffer.length} bytes without a line end`);
        break;
      }
      const line = buffer.subarray(0, nl);
      buffer = buffer.subarray(nl + 1);
      onLine(c, line);
    }
    c.input = c.closed ? Buffer.alloc(0) : buffer;
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
    if (!c.upload?.waiting) return;
    c.upload.waiting = false;
    closeClient(c, `sent no upload data for ${UPLOAD_STALL_MS / 1000} s`);
    fail("the upload stalled");
  };

  const current = (job: number) => inFlight !== undefined && inFlight.id === job;

  function dispatch(event: SchedulerEvent): void {
    switch (event.type) {
      case "clientJoined": {
        const c: ClientState = { id: event.client, input: Buffer.alloc(0), closed: false, left: false, paused: false, lane: [], active: false };
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
      case "printerWritten": {
        const c = inFlight?.client;
        if (!current(event.job) || !c?.upload) return;
        c.upload.writing = false;
        return streamUpload(c);
      }
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

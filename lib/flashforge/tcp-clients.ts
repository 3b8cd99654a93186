// The clients' half of the FlashForge TCP 8899 scheduler (tcp-scheduler.ts is the printer's): each client's lane of
// commands (one at a time to the printer, MAX_PENDING_PER_CLIENT waiting at most), its idle deadline (waiting while
// its own command is with the printer), ~M601/~M602 answered here, and replies it does not read. Pure: actions out.
import { textReply, type Command } from "./tcp-codec.ts";
import { createClientInput, type ClientInputReader } from "./tcp-client-input.ts";
import type { ClientId, SchedulerAction, TimerId } from "./tcp-scheduler.ts";

export interface ClientState {
  id: ClientId;
  input: ClientInputReader;
  /** We closed it, or it left: nothing more of it is read or sent. */
  closed: boolean;
  /** Its socket closed: once no job of it is in flight, it is forgotten. */
  left: boolean;
  /** Commands read and not yet started; `active`: one is queued for or with the printer. */
  lane: Job[];
  active: boolean;
}

export interface Job {
  command: Command;
  /** None: the proxy's own (~M27 keepalive, ~M29 for an uploader that left). */
  client?: ClientState;
  /** An ~M28's file size: after its reply the file's bytes go to the printer. */
  uploadSize?: number;
  id: number;
}

export interface State {
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
  keepaliveArmed: boolean;
  /** The upload of the job in flight: a chunk is being written, or every chunk was and more must come. */
  writing: boolean;
  waitingForBytes: boolean;
  nextJobId: number;
  /** The actions of the event being handled. */
  out: SchedulerAction[];
}

export const emit = (s: State, action: SchedulerAction) => void s.out.push(action);
export const warn = (s: State, message: string, c?: ClientState) => emit(s, { type: "log", level: "warn", client: c?.id, message });
export const startTimer = (s: State, timer: TimerId, ms: number) => emit(s, { type: "startTimer", timer, ms });
export const stopTimer = (s: State, timer: TimerId) => emit(s, { type: "stopTimer", timer });
const touch = (s: State, c: ClientState) => void (s.idleMs > 0 && startTimer(s, `idle:${c.id}`, s.idleMs));

export function joinClient(s: State, id: ClientId): void {
  const c: ClientState = { id, input: createClientInput(), closed: false, left: false, lane: [], active: false };
  s.clients.set(id, c);
  touch(s, c);
}

export function onBytes(s: State, id: ClientId, chunk: Buffer): void {
  const c = s.clients.get(id);
  if (!c || c.closed) return;
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
}

export function onLeft(s: State, id: ClientId): void {
  const c = s.clients.get(id);
  if (!c || c.left) return;
  c.left = true;
  if (!c.closed) leave(s, c);
  forgetIfGone(s, c);
}

export function closeClient(s: State, c: ClientState, why: string): void {
  if (c.closed) return;
  emit(s, { type: "closeClient", client: c.id, why });
  leave(s, c);
}

/** Closed by us or gone by itself: its waiting commands are dropped (an upload it holds is the printer half's). */
function leave(s: State, c: ClientState): void {
  c.closed = true;
  c.lane.length = 0;
  stopTimer(s, `idle:${c.id}`);
  s.queue = s.queue.filter((job) => job.client !== c);
  c.active = s.inFlight?.client === c;
}

/** A client that left is kept while the printer half may still log about it (its job in flight, its upload lock). */
export function forgetIfGone(s: State, c: ClientState): void {
  if (!c.left || s.inFlight?.client === c || s.exclusive === c || !s.clients.delete(c.id)) return;
  emit(s, { type: "forgetClient", client: c.id });
}

export function onIdle(s: State, c: ClientState): void {
  // Its own command is still with the printer: not idle, only waiting.
  if (c.active || c.lane.length > 0) return touch(s, c);
  closeClient(s, c, `silent for ${Math.round(s.idleMs / 1000)} s`);
}

export function deliver(s: State, c: ClientState, bytes: Buffer): void {
  if (c.closed) return;
  const unread = s.unreadBytes(c.id);
  if (unread > s.maxBacklog) return closeClient(s, c, `does not read its replies (${unread} bytes waiting)`);
  emit(s, { type: "replyToClient", client: c.id, bytes });
  touch(s, c);
}

/** The client's next commands from its lane: answered here (~M601/~M602), or the next one queued for the printer. */
export function advance(s: State, c: ClientState): void {
  while (!c.active && !c.closed && c.lane.length > 0) {
    const job = c.lane.shift()!;
    if (job.command.code === "M601") deliver(s, c, textReply("M601", [s.loginLine]));
    else if (job.command.code === "M602") deliver(s, c, textReply("M602", ["Control Release."]));
    else {
      c.active = true;
      s.queue.push(job);
    }
  }
}

/** Reading a client pauses while its upload's buffer is full (backpressure). */
export function flow(s: State, c: ClientState): void {
  const change = c.input.flow();
  if (change) emit(s, { type: change === "pause" ? "pauseClient" : "resumeClient", client: c.id });
}

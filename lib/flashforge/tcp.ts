// FlashForge TCP 8899: the printer takes one session, we hold it (logged in with ~M601 S1, kept alive with ~M27)
// and serve many clients. This file is the socket glue: the printer's console (one request at a time, replies split
// by tcp-codec.ts) and the clients' sockets; who is sent what, and when, is decided in tcp-scheduler.ts.
import { connect as tcpConnect, type Socket } from "node:net";
import { listen, type Listening } from "../core/server.ts";
import { endAndDestroy } from "../core/edge.ts";
import { createUpstream, type Link, type Upstream } from "../core/upstream.ts";
import type { Service, ServiceContext } from "../core/service.ts";
import { serviceLogger, type Logger } from "../log.ts";
import { createReplyReader, encodeCommand, parseCommand, replyFields, type Command, type Reply } from "./tcp-codec.ts";
import {
  createTcpScheduler, DEFAULT_LOGIN_LINE, REPLY_TIMEOUT_MS,
  type ClientId, type SchedulerAction, type SchedulerEvent, type TimerId,
} from "./tcp-scheduler.ts";

export {
  CLIENT_IDLE_TIMEOUT_MS, KEEPALIVE_INTERVAL_MS, MAX_CLIENT_BACKLOG_BYTES, MAX_PENDING_PER_CLIENT,
  REPLY_TIMEOUT_MS, SLOW_REPLY_TIMEOUT_MS, UPLOAD_STALL_MS,
} from "./tcp-scheduler.ts";
export { MAX_UPLOAD_BYTES, UPLOAD_BUFFER_BYTES } from "./tcp-client-input.ts";
export const CONNECT_TIMEOUT_MS = 10_000;
/** After "ok" of ~M661/~M662 the binary part follows; if nothing starts within this, there is none. */
export const BINARY_GRACE_MS = 2_000;
export const MAX_TCP_CLIENTS = 32;
const STOP_GRACE_MS = 500;

export interface FlashforgeTcpOptions {
  keepaliveMs?: number;
  clientIdleTimeoutMs?: number;
  lingerMs?: number;
  /** Tests shorten MAX_CLIENT_BACKLOG_BYTES with this. */
  maxClientBacklogBytes?: number;
  /** Tests shorten MAX_PENDING_PER_CLIENT with this. */
  maxPendingPerClient?: number;
}

interface UpstreamConnection {
  socket: Socket;
  request(command: Command, timeoutMs: number): Promise<Reply>;
  write(bytes: Buffer): Promise<void>;
}

interface Peer {
  socket: Socket;
  log: Logger;
}

export function createFlashforgeTcp(ctx: ServiceContext, options: FlashforgeTcpOptions = {}): Service {
  const { printer } = ctx;
  const log = serviceLogger(printer.name, "tcp");
  const peers = new Map<ClientId, Peer>();
  let lastClientId = 0;
  let listening: Listening | undefined;
  let loginLine = DEFAULT_LOGIN_LINE;
  let error: string | undefined;
  const commands = ctx.metrics.counter("pandaproxy_flashforge_tcp_commands_total", "Commands sent to the printer", { printer: printer.name });
  const scheduler = createTcpScheduler({
    keepaliveMs: options.keepaliveMs,
    clientIdleTimeoutMs: options.clientIdleTimeoutMs,
    maxClientBacklogBytes: options.maxClientBacklogBytes,
    maxPendingPerClient: options.maxPendingPerClient,
    unreadBytes: (client) => peers.get(client)?.socket.writableLength ?? 0,
  });
  const upstream = createUpstream<UpstreamConnection>({
    log,
    describe: `FlashForge TCP console at ${printer.host}:${printer.printerPorts.tcp}`,
    onDemand: true,
    lingerMs: options.lingerMs,
    connect: async () => {
      const opened = await openConsole(ctx, log, () => scheduler.owesUploadBytes);
      loginLine = opened.loginLine;
      return opened.link;
    },
  });
  const timers = createTimers((timer) => dispatch({ type: "timeout", timer }));
  const perform = performer({ upstream, peers, timers, log, dispatch: (event) => dispatch(event), sent: () => commands.inc() });
  function dispatch(event: SchedulerEvent): void {
    for (const action of scheduler.handle(event)) perform(action);
  }

  const onClient = (socket: Socket, info: { peer: string; log: Logger }) => {
    const release = upstream.claim();
    socket.setNoDelay(true);
    const id = ++lastClientId;
    peers.set(id, { socket, log: info.log });
    // Reading goes on while the printer works: a paused plain socket does not see its client leave
    // (docs/protocol-notes.md), and a client that left must not have its other commands sent.
    socket.on("data", (bytes: Buffer) => dispatch({ type: "clientBytes", client: id, bytes }));
    socket.on("close", () => {
      dispatch({ type: "clientLeft", client: id });
      release();
    });
    dispatch({ type: "clientJoined", client: id });
  };

  return {
    name: "tcp",
    async start() {
      upstream.on("connected", () => {
        error = undefined;
        dispatch({ type: "linkUp", loginLine });
      });
      upstream.on("disconnected", () => dispatch({ type: "linkDown" }));
      upstream.start();
      listening = await listen({
        log, what: "FlashForge TCP console", host: printer.bind, allow: printer.allow, port: printer.ports.tcp, maxClients: MAX_TCP_CLIENTS, onClient,
      }).catch((e) => {
        error = (e as Error).message;
        throw e;
      });
    },
    async stop() {
      await listening?.close();
      await upstream.stop();
      dispatch({ type: "stop" });
      timers.clear();
    },
    status() {
      const { clients, queued, uploading } = scheduler.status();
      return { state: error ? `error: ${error}` : listening ? "listening" : "stopped", clients, upstream: upstream.state, details: { queued, uploading } };
    },
  };
}

/** The scheduler's timers, by name: starting one again restarts it. */
function createTimers(onTimeout: (timer: TimerId) => void) {
  const running = new Map<TimerId, ReturnType<typeof setTimeout>>();
  const stop = (timer: TimerId) => {
    clearTimeout(running.get(timer));
    running.delete(timer);
  };
  return {
    start(timer: TimerId, ms: number) {
      stop(timer);
      running.set(timer, setTimeout(() => {
        running.delete(timer);
        onTimeout(timer);
      }, ms));
    },
    stop,
    clear() {
      for (const timer of running.values()) clearTimeout(timer);
      running.clear();
    },
  };
}

interface Glue {
  upstream: Upstream<UpstreamConnection>;
  peers: Map<ClientId, Peer>;
  timers: ReturnType<typeof createTimers>;
  log: Logger;
  dispatch(event: SchedulerEvent): void;
  /** A command went to the printer (the metrics counter). */
  sent(): void;
}

/** Does what the scheduler decided, on the sockets; what comes back is dispatched to it as events. */
function performer(glue: Glue): (action: SchedulerAction) => void {
  const { upstream, peers, timers, dispatch } = glue;
  const toPrinter = (action: Extract<SchedulerAction, { type: "sendToPrinter" | "writeToPrinter" }>) => {
    const { job } = action;
    const failed = (why: string) => dispatch({ type: "printerFailed", job, why });
    const conn = upstream.current();
    if (!conn) return failed("the printer connection is closed");
    if (action.type === "sendToPrinter") glue.sent();
    const work: Promise<SchedulerEvent> = action.type === "sendToPrinter"
      ? conn.request(action.command, action.timeoutMs).then((reply) => ({ type: "printerReplied", job, reply }))
      : conn.write(action.bytes).then(() => ({ type: "printerWritten", job }));
    void work.then(dispatch, (e) => failed((e as Error).message));
  };
  return (action) => {
    switch (action.type) {
      case "sendToPrinter":
      case "writeToPrinter":
        return toPrinter(action);
      case "replyToClient":
        return void peers.get(action.client)?.socket.write(action.bytes);
      case "closeClient": {
        const peer = peers.get(action.client);
        peer?.log.warn(`closing: ${action.why}`);
        return void peer?.socket.destroy();
      }
      case "pauseClient":
        return void peers.get(action.client)?.socket.pause();
      case "resumeClient":
        return void peers.get(action.client)?.socket.resume();
      case "forgetClient":
        return void peers.delete(action.client);
      case "dropPrinterSession":
        return upstream.reconnect(action.why);
      case "startTimer":
        return timers.start(action.timer, action.ms);
      case "stopTimer":
        return timers.stop(action.timer);
      case "log":
        return ((action.client !== undefined && peers.get(action.client)?.log) || glue.log)[action.level](action.message);
    }
  };
}

/** Opens the printer's console and logs in (~M601 S1, then ~M115 for the status page). */
async function openConsole(ctx: ServiceContext, log: Logger, owesUploadBytes: () => boolean): Promise<{ link: Link<UpstreamConnection>; loginLine: string }> {
  const { printer } = ctx;
  const socket = await connectTo(printer.host, printer.printerPorts.tcp);
  socket.setNoDelay(true);
  const connection = consoleOver(socket, log);
  const closed = new Promise<unknown>((resolve) => {
    socket.on("error", (e) => resolve(e));
    socket.on("close", () => resolve(new Error("the printer closed the connection")));
  });
  const close = () => {
    // After ~M28 the printer takes the next bytes as the file: even ~M602 would become file data.
    if (owesUploadBytes()) return socket.destroy();
    // Without ~M602 the printer keeps control reserved and refuses the next session for a while.
    if (!socket.destroyed && socket.writable) endAndDestroy(socket, encodeCommand("~M602"), STOP_GRACE_MS);
    else socket.destroy();
  };
  try {
    const login = await connection.request(parseCommand("~M601 S1")!, REPLY_TIMEOUT_MS);
    if (!/Control Success/i.test(login.text)) {
      throw new Error(`the printer refused control (${summary(login.text)}): another program holds its only TCP session`);
    }
    const loginLine = login.text.split(/\r?\n/).find((l) => /Control Success/i.test(l))?.trim() ?? DEFAULT_LOGIN_LINE;
    const info = replyFields((await connection.request(parseCommand("~M115")!, REPLY_TIMEOUT_MS)).text);
    ctx.hub.update({ model: info["Machine Name"] ?? info["Machine Type"], productName: info["Machine Type"], firmware: info["Firmware"] });
    return { link: { connection, closed, close }, loginLine };
  } catch (e) {
    socket.destroy();
    throw e;
  }
}

function connectTo(host: string, port: number): Promise<Socket> {
  return new Promise<Socket>((resolve, reject) => {
    const s = tcpConnect({ host, port });
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`no answer within ${CONNECT_TIMEOUT_MS / 1000} s`));
    }, CONNECT_TIMEOUT_MS);
    s.once("connect", () => {
      clearTimeout(timer);
      resolve(s);
    });
    s.once("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

/** One request at a time over the printer's socket; replies are split by the codec. */
function consoleOver(socket: Socket, log: Logger): UpstreamConnection {
  const reader = createReplyReader();
  let waiter: { resolve(r: Reply): void; reject(e: Error): void } | undefined;
  let replyTimer: ReturnType<typeof setTimeout> | undefined;
  let graceTimer: ReturnType<typeof setTimeout> | undefined;
  const settle = (outcome: Reply | Error) => {
    clearTimeout(replyTimer);
    clearTimeout(graceTimer);
    const w = waiter;
    waiter = undefined;
    if (!w) return;
    if (outcome instanceof Error) w.reject(outcome);
    else w.resolve(outcome);
  };
  const drain = () => {
    for (;;) {
      const step = reader.next();
      if (step.kind === "reply") return settle(step.reply);
      if (step.kind === "error") {
        settle(new Error(`unreadable reply: ${step.why}`));
        return socket.destroy();
      }
      if (step.kind === "waiting-binary") {
        clearTimeout(graceTimer);
        graceTimer = setTimeout(() => {
          const reply = reader.endWithoutBinary();
          if (reply) settle(reply);
        }, BINARY_GRACE_MS);
      }
      const stray = reader.takeStray();
      if (stray.length) log.debug(`ignored ${stray.length} bytes the printer sent with no command outstanding`);
      return;
    }
  };
  socket.on("data", (chunk: Buffer) => {
    clearTimeout(graceTimer);
    reader.push(chunk);
    drain();
  });
  socket.on("close", () => settle(new Error("the printer closed the connection")));
  return {
    socket,
    request(command, timeoutMs) {
      if (waiter) return Promise.reject(new Error("a command is already in flight"));
      return new Promise<Reply>((resolve, reject) => {
        waiter = { resolve, reject };
        reader.expect(command.code);
        replyTimer = setTimeout(() => {
          settle(new Error(`no reply to ${command.code} within ${Math.round(timeoutMs / 1000)} s`));
        }, timeoutMs);
        socket.write(command.wire);
      });
    },
    write: (bytes) =>
      new Promise<void>((resolve, reject) => {
        if (socket.destroyed) return reject(new Error("the printer connection is closed"));
        socket.write(bytes, (e) => (e ? reject(e) : resolve()));
      }),
  };
}

function summary(text: string): string {
  return text.split(/\r?\n/).filter((l) => l && l !== "ok" && !l.startsWith("CMD ")).join(" ").slice(0, 80) || "no answer";
}

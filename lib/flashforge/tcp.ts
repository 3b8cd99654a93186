// FlashForge TCP 8899: the printer takes one session, we hold it (logged in with ~M601 S1, kept alive with ~M27)
// and serve many clients. This file is the socket glue between the printer's console (tcp-console.ts), the clients'
// sockets and the scheduler (tcp-scheduler.ts), which decides who is sent what, and when.
import type { Socket } from "node:net";
import { listen, type Listening } from "../core/server.ts";
import { createUpstream, type Upstream } from "../core/upstream.ts";
import type { Service, ServiceContext } from "../core/service.ts";
import { serviceLogger, type Logger } from "../log.ts";
import { openConsole, type PrinterConsole } from "./tcp-console.ts";
import { createFlashforgeStatus } from "./telemetry.ts";
import {
  createTcpScheduler, type ClientId, type SchedulerAction, type SchedulerEvent, type TimerId,
} from "./tcp-scheduler.ts";

export {
  CLIENT_IDLE_TIMEOUT_MS, KEEPALIVE_INTERVAL_MS, MAX_CLIENT_BACKLOG_BYTES, MAX_PENDING_PER_CLIENT,
  REPLY_TIMEOUT_MS, SLOW_REPLY_TIMEOUT_MS, UPLOAD_STALL_MS,
} from "./tcp-scheduler.ts";
export { MAX_UPLOAD_BYTES, UPLOAD_BUFFER_BYTES } from "./tcp-client-input.ts";
export { BINARY_GRACE_MS, CONNECT_TIMEOUT_MS } from "./tcp-console.ts";
export const MAX_TCP_CLIENTS = 32;

export interface FlashforgeTcpOptions {
  keepaliveMs?: number;
  clientIdleTimeoutMs?: number;
  lingerMs?: number;
  /** Tests shorten MAX_CLIENT_BACKLOG_BYTES with this. */
  maxClientBacklogBytes?: number;
  /** Tests shorten MAX_PENDING_PER_CLIENT with this. */
  maxPendingPerClient?: number;
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
  /** The printer's words for our login, told to the scheduler for the clients' ~M601. */
  let loginLine: string | undefined;
  let error: string | undefined;
  const commands = ctx.metrics.counter("pandaproxy_flashforge_tcp_commands_total", "Commands sent to the printer", { printer: printer.name });
  const scheduler = createTcpScheduler({
    keepaliveMs: options.keepaliveMs,
    clientIdleTimeoutMs: options.clientIdleTimeoutMs,
    maxClientBacklogBytes: options.maxClientBacklogBytes,
    maxPendingPerClient: options.maxPendingPerClient,
    unreadBytes: (client) => peers.get(client)?.socket.writableLength ?? 0,
  });
  const upstream = createUpstream<PrinterConsole>({
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
  const status = createFlashforgeStatus();
  const perform = performer({ upstream, peers, timers, log, dispatch, sent: () => commands.inc(), heard: status.heard });
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
      ctx.hub.setTelemetry(() => (upstream.state === "connected" ? status.telemetry() : undefined));
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
  upstream: Upstream<PrinterConsole>;
  peers: Map<ClientId, Peer>;
  timers: ReturnType<typeof createTimers>;
  log: Logger;
  dispatch(event: SchedulerEvent): void;
  /** A command went to the printer (the metrics counter). */
  sent(): void;
  /** The printer's reply to a command (its status replies are the telemetry). */
  heard(code: string, text: string): void;
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
      ? conn.request(action.command, action.timeoutMs).then((reply): SchedulerEvent => {
          glue.heard(action.command.code, reply.text);
          return { type: "printerReplied", job, reply };
        })
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

// FlashForge TCP 8899: the printer takes one session, we hold it (logged in with ~M601 S1, kept alive with ~M27)
// and serve many clients. This file is the socket glue: the printer's console (one request at a time, replies split
// by tcp-codec.ts) and the clients' sockets; who is sent what, and when, is decided in tcp-scheduler.ts.
import { connect as tcpConnect, type Socket } from "node:net";
import { listen, type Listening } from "../core/server.ts";
import { endAndDestroy } from "../core/edge.ts";
import { createUpstream, type Link } from "../core/upstream.ts";
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

export function createFlashforgeTcp(ctx: ServiceContext, options: FlashforgeTcpOptions = {}): Service {
  const { printer } = ctx;
  const log = serviceLogger(printer.name, "tcp");
  const where = `${printer.host}:${printer.printerPorts.tcp}`;
  const peers = new Map<ClientId, { socket: Socket; log: Logger }>();
  const timers = new Map<TimerId, ReturnType<typeof setTimeout>>();
  let lastClientId = 0;
  let listening: Listening | undefined;
  let loginLine = DEFAULT_LOGIN_LINE;
  let error: string | undefined;
  const counters = {
    commands: ctx.metrics.counter("pandaproxy_flashforge_tcp_commands_total", "Commands sent to the printer", { printer: printer.name }),
  };
  const scheduler = createTcpScheduler({
    keepaliveMs: options.keepaliveMs,
    clientIdleTimeoutMs: options.clientIdleTimeoutMs,
    maxClientBacklogBytes: options.maxClientBacklogBytes,
    maxPendingPerClient: options.maxPendingPerClient,
    unreadBytes: (client) => peers.get(client)?.socket.writableLength ?? 0,
  });

  const upstream = createUpstream<UpstreamConnection>({
    log,
    describe: `FlashForge TCP console at ${where}`,
    onDemand: true,
    lingerMs: options.lingerMs,
    connect: () => openConsole(),
  });

  async function openConsole(): Promise<Link<UpstreamConnection>> {
    const socket = await new Promise<Socket>((resolve, reject) => {
      const s = tcpConnect({ host: printer.host, port: printer.printerPorts.tcp });
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
    socket.setNoDelay(true);
    const connection = consoleOver(socket);
    const closed = new Promise<unknown>((resolve) => {
      socket.on("error", (e) => resolve(e));
      socket.on("close", () => resolve(new Error("the printer closed the connection")));
    });
    const close = () => {
      // After ~M28 the printer takes the next bytes as the file: even ~M602 would become file data.
      if (scheduler.owesUploadBytes) return socket.destroy();
      // Without ~M602 the printer keeps control reserved and refuses the next session for a while.
      if (!socket.destroyed && socket.writable) endAndDestroy(socket, encodeCommand("~M602"), STOP_GRACE_MS);
      else socket.destroy();
    };
    try {
      const login = await connection.request(parseCommand("~M601 S1")!, REPLY_TIMEOUT_MS);
      if (!/Control Success/i.test(login.text)) {
        throw new Error(`the printer refused control (${summary(login.text)}): another program holds its only TCP session`);
      }
      loginLine = login.text.split(/\r?\n/).find((l) => /Control Success/i.test(l))?.trim() ?? DEFAULT_LOGIN_LINE;
      const info = replyFields((await connection.request(parseCommand("~M115")!, REPLY_TIMEOUT_MS)).text);
      ctx.hub.update({ model: info["Machine Name"] ?? info["Machine Type"], productName: info["Machine Type"], firmware: info["Firmware"] });
    } catch (e) {
      socket.destroy();
      throw e;
    }
    return { connection, closed, close };
  }

  /** One request at a time over the printer's socket; replies are split by the codec. */
  function consoleOver(socket: Socket): UpstreamConnection {
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

    const perform = (action: SchedulerAction) => {
    switch (action.type) {
      case "sendToPrinter": {
        const conn = upstream.current();
        if (!conn) return dispatch({ type: "printerFailed", job: action.job, why: "the printer connection is closed" });
        counters.commands.inc();
        return void conn.request(action.command, action.timeoutMs).then(
          (reply) => dispatch({ type: "printerReplied", job: action.job, reply }),
          (e) => dispatch({ type: "printerFailed", job: action.job, why: (e as Error).message }),
        );
      }
      case "writeToPrinter": {
        const conn = upstream.current();
        if (!conn) return dispatch({ type: "printerFailed", job: action.job, why: "the printer connection is closed" });
        return void conn.write(action.bytes).then(
          () => dispatch({ type: "printerWritten", job: action.job }),
          (e) => dispatch({ type: "printerFailed", job: action.job, why: (e as Error).message }),
        );
      }
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
        clearTimeout(timers.get(action.timer));
        return void timers.set(action.timer, setTimeout(() => {
          timers.delete(action.timer);
          dispatch({ type: "timeout", timer: action.timer });
        }, action.ms));
      case "stopTimer":
        clearTimeout(timers.get(action.timer));
        return void timers.delete(action.timer);
      case "log": {
        const logger = (action.client !== undefined && peers.get(action.client)?.log) || log;
        return logger[action.level](action.message);
      }
    }
  };

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
      for (const timer of timers.values()) clearTimeout(timer);
      timers.clear();
    },
    status() {
      return {
        state: error ? `error: ${error}` : listening ? "listening" : "stopped",
        clients: scheduler.status().clients,
        upstream: upstream.state,
        details: { queued: scheduler.status().queued, uploading: scheduler.status().uploading },
      };
    },
  };
}

function summary(text: string): string {
  return text.split(/\r?\n/).filter((l) => l && l !== "ok" && !l.startsWith("CMD ")).join(" ").slice(0, 80) || "no answer";
}

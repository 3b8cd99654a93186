// FlashForge TCP 8899: the printer takes one session, we hold it (logged in with ~M601 S1, kept alive with ~M27)
// and serve many clients. Their commands are queued and sent one at a time; each reply goes back to the client
// that asked, bytes intact (binary ~M661/~M662 parts included). A client's own ~M601/~M602 is answered here.
// ~M28 uploads stream the client's raw bytes to the printer while no other command may interleave.
import { connect as tcpConnect, type Socket } from "node:net";
import { listen, type Listening } from "../core/server.ts";
import { commandLane, endAndDestroy, idleDeadline, type CommandLane, type IdleDeadline } from "../core/edge.ts";
import { createUpstream, type Link } from "../core/upstream.ts";
import type { Service, ServiceContext } from "../core/service.ts";
import { serviceLogger, type Logger } from "../log.ts";
import {
  createReplyReader, encodeCommand, parseCommand, replyFields, textReply, MAX_COMMAND_LINE_BYTES,
  type Command, type Reply,
} from "./tcp-codec.ts";

export const CONNECT_TIMEOUT_MS = 10_000;
/** ff-5mp-api and FlashPrint poll every ~5 s; the printer drops a session idle for longer. */
export const KEEPALIVE_INTERVAL_MS = 5_000;
export const REPLY_TIMEOUT_MS = 15_000;
/** Commands that wait for the machine: homing, heating with wait, saving an upload. */
export const SLOW_REPLY_TIMEOUT_MS = 10 * 60_000;
const SLOW_COMMANDS = new Set(["G28", "M109", "M190", "M29", "M23"]);
/** After "ok" of ~M661/~M662 the binary part follows; if nothing starts within this, there is none. */
export const BINARY_GRACE_MS = 2_000;
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
export const MAX_TCP_CLIENTS = 32;
const STOP_GRACE_MS = 500;

/** What the printer said to our ~M601 S1; clients get the same words for theirs. */
const DEFAULT_LOGIN_LINE = "Control Success V2.1.";

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
  /**
   * After ~M28 the printer takes the next bytes as the file, so a command (even ~M602) sent now would become
   * file data: a session dropped in this state is destroyed without one.
   */
  owesUploadBytes: boolean;
  request(command: Command, timeoutMs: number): Promise<Reply>;
  write(bytes: Buffer): Promise<void>;
}

interface Client {
  socket: Socket;
  log: Logger;
  closed: boolean;
  upload?: ClientUpload;
  lane: CommandLane<Command>;
  idle: IdleDeadline;
  close(why: string): void;
}

interface ClientUpload {
  size: number;
  remaining: number;
  chunks: Buffer[];
  buffered: number;
  wake?: () => void;
}

interface Job {
  command: Command;
  client?: Client;
  onReply?(reply: Reply): void;
  /** Called once the job is over, answered or not (the client's command lane waits for it). */
  done?(): void;
}

export function createFlashforgeTcp(ctx: ServiceContext, options: FlashforgeTcpOptions = {}): Service {
  const { printer } = ctx;
  const log = serviceLogger(printer.name, "tcp");
  const keepaliveMs = options.keepaliveMs ?? KEEPALIVE_INTERVAL_MS;
  const clientIdleMs = options.clientIdleTimeoutMs ?? CLIENT_IDLE_TIMEOUT_MS;
  const maxBacklogBytes = options.maxClientBacklogBytes ?? MAX_CLIENT_BACKLOG_BYTES;
  const maxPending = options.maxPendingPerClient ?? MAX_PENDING_PER_CLIENT;
  const where = `${printer.host}:${printer.printerPorts.tcp}`;
  const queue: Job[] = [];
  const clients = new Set<Client>();
  let listening: Listening | undefined;
  let busy = false;
  let inFlight: Job | undefined;
  let exclusiveFor: Client | undefined;
  let loginLine = DEFAULT_LOGIN_LINE;
  let keepaliveTimer: ReturnType<typeof setTimeout> | undefined;
  let error: string | undefined;
  const counters = {
    commands: ctx.metrics.counter("pandaproxy_flashforge_tcp_commands_total", "Commands sent to the printer", { printer: printer.name }),
  };

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
      if (connection.owesUploadBytes) return socket.destroy();
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
      owesUploadBytes: false,
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

  const scheduleKeepalive = () => {
    clearTimeout(keepaliveTimer);
    keepaliveTimer = setTimeout(() => {
      if (upstream.current() && !busy && queue.length === 0 && !exclusiveFor) {
        queue.push({ command: parseCommand("~M27")! });
        void pump();
      } else scheduleKeepalive();
    }, keepaliveMs);
  };

  const nextJob = (): Job | undefined => {
    if (!exclusiveFor) return queue.shift();
    const i = queue.findIndex((j) => j.client === exclusiveFor);
    return i === -1 ? undefined : queue.splice(i, 1)[0];
  };

  async function pump(): Promise<void> {
    if (busy) return;
    const conn = upstream.current();
    if (!conn) return;
    const job = nextJob();
    if (!job) return scheduleKeepalive();
    busy = true;
    inFlight = job;
    clearTimeout(keepaliveTimer);
    const { command, client } = job;
    try {
      if (client?.closed) return;
      counters.commands.inc();
      const timeout = SLOW_COMMANDS.has(command.code) ? SLOW_REPLY_TIMEOUT_MS : REPLY_TIMEOUT_MS;
      if (command.code === "M28" && client?.upload && client.upload.size > 0) conn.owesUploadBytes = true;
      const reply = await conn.request(command, timeout);
      if (client) {
        deliver(client, reply.bytes);
        if (command.code === "M28" && client.upload) await streamUpload(conn, client);
        if (command.code === "M29" && exclusiveFor === client) exclusiveFor = undefined;
        if (client.closed && exclusiveFor === client) endAbandonedUpload(client);
      }
      job.onReply?.(reply);
    } catch (e) {
      const why = (e as Error).message;
      if (client && !client.closed) client.close(`the printer did not answer ${command.code}: ${why}`);
      else if (!client) log.warn(`${command.code} (sent by the proxy) failed: ${why}`);
      if (client && exclusiveFor === client) {
        exclusiveFor = undefined;
        if (conn.owesUploadBytes) client.log.warn(`upload abandoned (${client.upload ? `${client.upload.size - client.upload.remaining} of ${client.upload.size}` : "some"} bytes received): dropping the printer session, which takes anything we send now as file data`);
      }
      upstream.reconnect(`${command.code}: ${why}`);
    } finally {
      busy = false;
      inFlight = undefined;
      job.done?.();
      void pump();
    }
  }

  /**
   * The uploader sent the whole file but left before its ~M29: the printer is told ~M29 (it closes the file, as
   * it would for the client) and the console is free again for everyone.
   */
  const endAbandonedUpload = (client: Client) => {
    exclusiveFor = undefined;
    client.log.warn("the uploader left before ~M29: sending ~M29 for it so the printer closes the file; the console is free again");
    queue.unshift({ command: parseCommand("~M29")! });
    void pump();
  };

  /** After ~M28's reply: the client's raw bytes go to the printer, nothing else in between, until ~M29. */
  async function streamUpload(conn: UpstreamConnection, client: Client): Promise<void> {
    const upload = client.upload!;
    exclusiveFor = client;
    conn.owesUploadBytes = upload.size > 0;
    while (upload.remaining > 0 || upload.chunks.length > 0) {
      const chunk = upload.chunks.shift();
      if (chunk) {
        upload.buffered -= chunk.length;
        if (upload.buffered < UPLOAD_BUFFER_BYTES && client.socket.isPaused()) client.socket.resume();
        await conn.write(chunk);
        continue;
      }
      if (client.closed) throw new Error("the client left in the middle of an upload");
      // The client's command lane paused its socket while ~M28 is pending; the file's bytes must flow.
      if (upload.buffered < UPLOAD_BUFFER_BYTES && client.socket.isPaused()) client.socket.resume();
      const arrived = await new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => resolve(false), UPLOAD_STALL_MS);
        upload.wake = () => {
          clearTimeout(timer);
          resolve(true);
        };
      });
      upload.wake = undefined;
      if (!arrived) {
        client.close(`sent no upload data for ${UPLOAD_STALL_MS / 1000} s`);
        throw new Error("the upload stalled");
      }
    }
    conn.owesUploadBytes = false;
    client.upload = undefined;
  }

  const deliver = (client: Client, bytes: Buffer) => {
    if (client.closed) return;
    if (client.socket.writableLength > maxBacklogBytes) {
      return client.close(`does not read its replies (${client.socket.writableLength} bytes waiting)`);
    }
    client.socket.write(bytes);
    client.idle.touch();
  };

  /** A client's command, taken from its lane: answered here (~M601/~M602) or queued for the printer. */
  const handleCommand = (client: Client, command: Command): Promise<void> | void => {
    if (command.code === "M601") return deliver(client, textReply("M601", [loginLine]));
    if (command.code === "M602") return deliver(client, textReply("M602", ["Control Release."]));
    return new Promise<void>((done) => {
      queue.push({ command, client, done });
      void pump();
      // Reading goes on while the printer works: a paused plain socket does not see its client leave
      // (docs/protocol-notes.md), and a client that left must not have its other commands sent. What it sends
      // meanwhile waits in its lane, bounded by MAX_PENDING_PER_CLIENT.
      if (!client.closed) client.socket.resume();
    });
  };

  const onClient = (socket: Socket, info: { peer: string; log: Logger }) => {
    const release = upstream.claim();
    socket.setNoDelay(true);
    let buffer: Buffer = Buffer.alloc(0);
    const idleFor = `silent for ${Math.round(clientIdleMs / 1000)} s`;
    const onIdle = () => {
      // Its own command is still with the printer: not idle, only waiting.
      if (client.lane.pending > 0) client.idle = idleDeadline(clientIdleMs, onIdle);
      else client.close(idleFor);
    };
    const client: Client = {
      socket, log: info.log, closed: false,
      lane: commandLane<Command>(socket, (command) => handleCommand(client, command), {
        max: maxPending,
        onOverflow: (max) => client.close(`sent more than ${max} commands without waiting for the replies`),
        onError: (e) => client.close(`its command failed: ${(e as Error).message}`),
      }),
      idle: idleDeadline(clientIdleMs, onIdle),
      close(why) {
        if (client.closed) return;
        client.closed = true;
        client.lane.close();
        client.idle.clear();
        info.log.warn(`closing: ${why}`);
        socket.destroy();
      },
    };
    clients.add(client);
    socket.on("close", () => {
      client.closed = true;
      client.lane.close();
      client.idle.clear();
      clients.delete(client);
      client.upload?.wake?.();
      for (let i = queue.length - 1; i >= 0; i--) if (queue[i]!.client === client) queue.splice(i, 1)[0]!.done?.();
      // Between the last file byte and ~M29 nothing else may reach the printer; with the uploader gone, end it.
      if (exclusiveFor === client && inFlight?.client !== client) endAbandonedUpload(client);
      release();
    });

    const onLine = (raw: Buffer) => {
      const command = parseCommand(raw);
      if (!command) {
        const shown = JSON.stringify(raw.toString("utf8").slice(0, 40));
        return client.close(`sent something that is not a G/M command: ${shown}`);
      }
      client.idle.touch();
      if (command.code === "M28") {
        if (client.upload) return client.close("sent ~M28 before its previous upload was written");
        const m = /^(\d+)\s+\S/.exec(command.args);
        const size = m ? Number(m[1]) : NaN;
        if (!(size >= 0 && size <= MAX_UPLOAD_BYTES)) return client.close(`sent ~M28 without a valid size: ${JSON.stringify(command.args.slice(0, 60))}`);
        client.upload = { size, remaining: size, chunks: [], buffered: 0 };
        info.log.info(`upload of ${size} bytes: ${command.args.replace(/^\d+\s+/, "")}`);
      }
      client.lane.push(command);
    };

    socket.on("data", (chunk: Buffer) => {
      buffer = buffer.length ? Buffer.concat([buffer, chunk]) : chunk;
      while (buffer.length > 0 && !client.closed) {
        const upload = client.upload;
        if (upload && upload.remaining > 0) {
          const take = Math.min(upload.remaining, buffer.length);
          upload.chunks.push(Buffer.from(buffer.subarray(0, take)));
          upload.buffered += take;
          upload.remaining -= take;
          buffer = buffer.subarray(take);
          if (upload.buffered >= UPLOAD_BUFFER_BYTES) socket.pause();
          upload.wake?.();
          continue;
        }
        const nl = buffer.indexOf(0x0a);
        if (nl === -1) {
          if (buffer.length > MAX_COMMAND_LINE_BYTES) client.close(`sent ${buffer.length} bytes without a line end`);
          return;
        }
        const line = buffer.subarray(0, nl);
        buffer = buffer.subarray(nl + 1);
        onLine(line);
      }
    });
  };

  return {
    name: "tcp",
    async start() {
      upstream.on("connected", () => {
        error = undefined;
        void pump();
      });
      upstream.start();
      listening = await listen({
        log, what: "FlashForge TCP console", host: printer.bind, allow: printer.allow, port: printer.ports.tcp, maxClients: MAX_TCP_CLIENTS, onClient,
      }).catch((e) => {
        error = (e as Error).message;
        throw e;
      });
    },
    async stop() {
      clearTimeout(keepaliveTimer);
      await listening?.close();
      await upstream.stop();
      queue.length = 0;
    },
    status() {
      return {
        state: error ? `error: ${error}` : listening ? "listening" : "stopped",
        clients: clients.size,
        upstream: upstream.state,
        details: { queued: queue.length, uploading: exclusiveFor !== undefined },
      };
    },
  };
}

function summary(text: string): string {
  return text.split(/\r?\n/).filter((l) => l && l !== "ok" && !l.startsWith("CMD ")).join(" ").slice(0, 80) || "no answer";
}

// The FTPS proxy (implicit TLS, port 990): clients log in here (access code, or the read-only viewer code),
// use any data mode (PASV, EPSV, PORT, EPRT), and each command borrows one of the few printer sessions, which
// always use passive mode and resume their control session's TLS session on data connections.
import type { Socket } from "node:net";
import type { TLSSocket } from "node:tls";
import { connectToPrinter } from "../core/printer-socket.ts";
import { commandLane, endAndDestroy, idleDeadline, type CommandLane, type IdleDeadline } from "../core/edge.ts";
import type { Service, ServiceContext } from "../core/service.ts";
import { listen, peerOf, TRUST_HINT, type Listening } from "../core/server.ts";
import { downloadMemoryReturn, uploadMemoryReturn } from "../core/memory-return.ts";
import { serviceLogger, type Logger } from "../log.ts";
import { printerClientTlsOptions, serverTlsOptions } from "../tls.ts";
import { createLineSplitter } from "./ftp-codec.ts";
import { activeDataPlan, connectPaused, passiveDataPlan, pump, type ClientDataPlan, type Pump } from "./ftp-data.ts";
import { createFtpSession, type FtpAction, type FtpEffect, type FtpEvent, type FtpSession } from "./ftp-session.ts";
import { closeDataConnection, createFtpsTls, handshakeWithin, resetDataConnection, type FtpsTls } from "./ftp-tls.ts";
import { createPrinterPool, type Lease, type PrinterPool } from "./ftp-pool.ts";
import { openPrinterSession, PrinterFtpError } from "./ftp-upstream.ts";

export { MAX_LOGIN_FAILS } from "./ftp-session.ts";
export { TRANSFER_REPLY_TIMEOUT_MS, UPLOAD_EOF_GRACE_MS } from "./ftp-transfer.ts";
/** A client silent this long is disconnected (printers: about 5 minutes). */
export const CLIENT_IDLE_MS = 300_000;
/** A printer data connection's TLS handshake. */
const PRINTER_DATA_HANDSHAKE_MS = 10_000;
/** How long our end of a download waits for the client's side of the TLS close. */
const DOWNLOAD_CLOSE_MS = 2_000;

const plainIp = (address: string | undefined) => address?.replace(/^::ffff:/, "") ?? "";

export interface FtpServiceOptions {
  /** How long an unused printer session stays open (default PRINTER_IDLE_CLOSE_MS, 30 s). */
  printerIdleCloseMs?: number;
  /** A client silent this long is closed (default CLIENT_IDLE_MS; tests shorten it). */
  clientIdleMs?: number;
  /** A client's TLS handshake, on the control and on data connections (default FTPS_HANDSHAKE_TIMEOUT_MS). */
  handshakeTimeoutMs?: number;
  /** Commands a client may have waiting before it is closed (default MAX_PENDING_COMMANDS in core/edge.ts). */
  maxPendingCommands?: number;
}

export function createFtpService(ctx: ServiceContext, options: FtpServiceOptions = {}): Service {
  const printer = ctx.printer;
  const log = serviceLogger(printer.name, "ftp");
  let listening: Listening | undefined;
  let tls: FtpsTls | undefined;
  const pool: PrinterPool = createPrinterPool({
    max: printer.ftpSessions,
    log,
    connect: () => openPrinterSession(printer, log),
    idleCloseMs: options.printerIdleCloseMs,
  });
  let state = "stopped";

  return {
    name: "ftp",
    async start() {
      tls = createFtpsTls(serverTlsOptions(ctx.tls, { tls12Only: true }), options.handshakeTimeoutMs);
      const engine = tls;
      listening = await listen({
        log,
        what: "FTPS",
        host: printer.bind,
        allow: printer.allow,
        port: printer.ports.ftp,
        onClient(raw, client) {
          raw.pause();
          engine.secure(raw as Socket).then(
            (socket) => serveClient(socket, raw as Socket, {
              printer: ctx.printer, pool, tls: engine, log: client.log,
              idleMs: options.clientIdleMs ?? CLIENT_IDLE_MS, maxPendingCommands: options.maxPendingCommands,
            }),
            (error: Error) => client.log.info(`FTPS client dropped: ${error.message}`),
          );
        },
      });
      state = "listening";
    },
    async stop() {
      state = "stopped";
      await listening?.close();
      pool.close();
      tls?.close();
    },
    status() {
      return {
        state,
        clients: listening?.clients ?? 0,
        upstream: `${pool.open} printer session(s), ${pool.busy} busy`,
        details: { waiting: pool.waiting, sessionLimit: printer.ftpSessions },
      };
    },
  };
}

interface ClientContext {
  printer: ServiceContext["printer"];
  pool: PrinterPool;
  tls: FtpsTls;
  log: Logger;
  idleMs: number;
  maxPendingCommands?: number;
}

/** One transfer's connections (TCP, then TLS on each side), as the glue holds them for the session. */
interface DataConnections {
  plan?: ClientDataPlan;
  clientRaw?: Socket;
  clientData?: TLSSocket;
  printerRaw?: Socket;
  printerData?: TLSSocket;
  flow?: Pump;
  upload?: boolean;
}

/** The sockets and handles behind one client's session: the session decides, this executes. */
interface Connection {
  readonly socket: TLSSocket;
  readonly raw: Socket;
  readonly ctx: ClientContext;
  readonly session: FtpSession;
  /** Our and the client's address on the control connection. */
  readonly localIp: string;
  readonly peerIp: string;
  lane: CommandLane<string>;
  idle: IdleDeadline;
  plan?: ClientDataPlan;
  lease?: Lease;
  cancelWait?: () => void;
  data: DataConnections;
}

function serveClient(socket: TLSSocket, raw: Socket, ctx: ClientContext): void {
  const { printer, log } = ctx;
  const localIp = plainIp(socket.localAddress ?? raw.localAddress);
  const peerIp = plainIp(socket.remoteAddress ?? raw.remoteAddress);
  const { name: printerName, accessCode, viewerAccessCode, bind } = printer;
  const session = createFtpSession({ printerName, accessCode, viewerAccessCode, bind, localIp, peerIp, trustHint: TRUST_HINT });
  const conn = { socket, raw, ctx, session, localIp, peerIp, data: {} } as Connection;
  conn.idle = watchIdle(conn);
  socket.on("error", (e) => log.debug(`control connection error: ${e.message}`));
  socket.once("close", () => {
    conn.idle.clear();
    conn.lane.close();
    // The listener counts the TCP socket under the TLS one: it must go too.
    raw.destroy();
    tell(conn, { kind: "closed" });
  });
  // One command at a time, the socket paused meanwhile (except while the printer works: see "acquire").
  conn.lane = commandLane<string>(socket, async (line) => {
    conn.idle.touch();
    await run(conn, { kind: "command", line });
    conn.idle.touch();
  }, {
    max: ctx.maxPendingCommands,
    onOverflow: (max) => tell(conn, { kind: "flood", max }),
    onError: (error) => tell(conn, { kind: "failed", message: (error as Error).message }),
  });
  tell(conn, { kind: "opened" });
  socket.on("data", createLineSplitter(
    (line) => tell(conn, { kind: "received", line }),
    () => tell(conn, { kind: "line-too-long" }),
  ));
}

const watchIdle = (conn: Connection) => idleDeadline(conn.ctx.idleMs, () =>
  tell(conn, { kind: "idle", busy: conn.lane.pending > 0, idleMs: conn.ctx.idleMs }));

/** Feeds the session one event, then the outcome of each effect it asks for, until the command is done. */
async function run(conn: Connection, first: FtpEvent): Promise<void> {
  let step = conn.session.handle(first);
  for (;;) {
    execute(conn, step.actions);
    if (!step.next) return;
    const event = await perform(conn, step.next).catch((error: Error): FtpEvent => ({ kind: "effect-failed", message: error.message }));
    step = conn.session.handle(event);
  }
}

function execute(conn: Connection, actions: FtpAction[]): void {
  for (const action of actions) act(conn, action);
}

/** An event from the client's connection (not the answer to an effect): its actions run at once. */
const tell = (conn: Connection, event: FtpEvent) => execute(conn, conn.session.handle(event).actions);

function act(conn: Connection, action: FtpAction): void {
  const { socket, lease } = conn;
  switch (action.kind) {
    case "reply":
      return void (socket.destroyed || socket.write(action.text));
    case "close":
      conn.lane.close();
      return endAndDestroy(socket, action.text);
    case "log":
      return conn.ctx.log[action.level](action.message);
    case "queue":
      return void conn.lane.push(action.line);
    case "rearm-idle":
      return void (conn.idle = watchIdle(conn));
    case "drop-plan":
      conn.plan?.close();
      return void (conn.plan = undefined);
    case "plan-active":
      return void (conn.plan = activeDataPlan(action.host, action.port, conn.localIp));
    case "release":
      lease?.release();
      return void (conn.lease = undefined);
    case "drop-printer-session":
      return void lease?.session.socket.destroy();
    case "printer-state":
      if (lease && action.cwd !== undefined) lease.session.cwd = action.cwd;
      if (lease && action.type !== undefined) lease.session.type = action.type;
      return;
    case "cancel-wait":
      return conn.cancelWait?.();
    case "abort-transfer":
      return conn.data.flow?.abort();
    case "data":
      return dataOp(conn.data, action.op);
  }
}

function dataOp(data: DataConnections, op: Extract<FtpAction, { kind: "data" }>["op"]): void {
  switch (op) {
    case "close-plan":
      return data.plan?.close();
    case "destroy-client":
      return void data.clientRaw?.destroy();
    case "destroy-printer":
      return void data.printerRaw?.destroy();
    case "reset-printer":
      if (data.printerData && data.printerRaw) resetDataConnection(data.printerData, data.printerRaw);
      return;
    case "end-destination":
      return void (data.upload ? data.printerData : data.clientData)?.end();
  }
}

/** Performs one effect; its outcome is the session's next event. */
async function perform(conn: Connection, effect: FtpEffect): Promise<FtpEvent> {
  const { ctx, data } = conn;
  const session = () => conn.lease!.session;
  switch (effect.kind) {
    case "open-passive":
      return passiveDataPlan(effect.address, ctx.printer.ftpDataPorts, conn.peerIp).then(
        (passive) => ((conn.plan = passive), { kind: "passive-opened", port: passive.port }),
        (error: Error) => ({ kind: "passive-failed", message: error.message }),
      );
    case "acquire":
      return acquire(conn, effect.upload);
    case "printer":
      return (effect.line === undefined ? session().next(effect.timeoutMs) : session().command(effect.line, effect.timeoutMs)).then(
        (reply) => ({ kind: "printer-reply", reply }),
        (error: Error) => ({ kind: "printer-failed", message: error.message }),
      );
    case "client-data":
      conn.data = { plan: conn.plan };
      conn.plan = undefined;
      conn.data.clientRaw = await conn.data.plan?.connection();
      return { kind: "client-data", ok: conn.data.clientRaw !== undefined };
    case "printer-data":
      data.printerRaw = await connectPaused(ctx.printer.host, effect.port);
      return { kind: "printer-data", ok: data.printerRaw !== undefined };
    case "secure-printer-data":
      return handshakeWithin(
        connectToPrinter({ ...printerClientTlsOptions(ctx.printer), socket: data.printerRaw, session: session().tlsSession }),
        data.printerRaw!,
        PRINTER_DATA_HANDSHAKE_MS,
      ).then(
        (socket) => ((data.printerData = socket), { kind: "printer-data-secured" }),
        (error: Error) => ({ kind: "printer-data-secured", error: error.message }),
      );
    case "secure-client-data": {
      const peer = peerOf(data.clientRaw!);
      return ctx.tls.secure(data.clientRaw!).then(
        (socket) => ((data.clientData = socket), { kind: "client-data-secured" }),
        (error: Error) => ({ kind: "client-data-secured", error: error.message, peer }),
      );
    }
    case "pump":
      return transferBytes(data, effect.upload);
    case "wait":
      await Bun.sleep(effect.ms);
      return { kind: "waited" };
    case "close-download":
      await closeDataConnection(data.clientData!, data.clientRaw!, DOWNLOAD_CLOSE_MS);
      return { kind: "download-closed" };
  }
}

/** Waits for a printer session; the client is removed from the queue if it leaves first. */
async function acquire(conn: Connection, upload: boolean): Promise<FtpEvent> {
  // Keep reading while the printer works: an ABOR must get through during a transfer. What the client sends
  // meanwhile waits in the lane, bounded.
  if (!conn.socket.destroyed) conn.socket.resume();
  const ticket = conn.ctx.pool.acquire(upload);
  conn.cancelWait = ticket.cancel;
  try {
    conn.lease = await ticket.lease;
    const { home, cwd, type } = conn.lease.session;
    return { kind: "lease", printer: { home, cwd, type } };
  } catch (error) {
    return { kind: "lease-failed", message: (error as Error).message };
  } finally {
    conn.cancelWait = undefined;
  }
}

async function transferBytes(data: DataConnections, upload: boolean): Promise<FtpEvent> {
  const clientData = data.clientData!;
  const printerData = data.printerData!;
  clientData.on("error", () => {});
  printerData.on("error", () => {});
  data.upload = upload;
  data.flow = upload ? pump(clientData, printerData, uploadMemoryReturn) : pump(printerData, clientData, downloadMemoryReturn);
  const end = await data.flow.done;
  return { kind: "transfer-ended", end, bytes: data.flow.bytes };
}

export { PrinterFtpError };

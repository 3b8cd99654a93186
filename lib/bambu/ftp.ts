// The FTPS proxy (implicit TLS, port 990): clients log in here (access code, or the read-only viewer code),
// use any data mode (PASV, EPSV, PORT, EPRT), and each command borrows one of the few printer sessions, which
// always use passive mode and resume their control session's TLS session on data connections.
import type { Socket } from "node:net";
import type { TLSSocket } from "node:tls";
import { connectToPrinter } from "../core/printer-socket.ts";
import { commandLane, endAndDestroy, idleDeadline, sameSecret, type IdleDeadline } from "../core/edge.ts";
import type { Service, ServiceContext } from "../core/service.ts";
import { listen, peerOf, TRUST_HINT, type ClientInfo, type Listening } from "../core/server.ts";
import { serviceLogger, type Logger } from "../log.ts";
import { printerClientTlsOptions, serverTlsOptions } from "../tls.ts";
import {
  createLineSplitter, formatEpsvReply, formatPasvReply, formatReply, parseCommand, parseEprtArg, parseEpsvReply,
  parsePasvReply, parsePortArg, parseQuotedPath, replyMessage, replyText, type FtpReply,
} from "./ftp-codec.ts";
import { activeDataPlan, connectPaused, passiveDataPlan, pump, type ClientDataPlan } from "./ftp-data.ts";
import { createFtpsTls, type FtpsTls } from "./ftp-tls.ts";
import { createPrinterPool, openPrinterSession, PrinterFtpError, type PrinterPool, type PrinterSession } from "./ftp-upstream.ts";

export const MAX_LOGIN_FAILS = 3;
/** A client silent this long is disconnected (printers: about 5 minutes). */
export const CLIENT_IDLE_MS = 300_000;
/** A whole transfer's final reply from the printer may take this long after the last byte. */
export const TRANSFER_REPLY_TIMEOUT_MS = 120_000;
/**
 * Bun cannot tell a TLS close_notify from a bare TCP FIN, so an upload's end is accepted only if the client's
 * control connection is still there this long after it (a killed client closes both at once).
 */
export const UPLOAD_EOF_GRACE_MS = 150;

const UPLOADS = new Set(["STOR", "STOU", "APPE"]);
const DOWNLOADS = new Set(["RETR", "LIST", "NLST", "MLSD"]);
/** What a viewer_access_code login may send to the printer. */
const READ_ONLY = new Set(["LIST", "NLST", "MLSD", "RETR", "SIZE", "MDTM", "CWD", "XCWD", "CDUP", "XCUP", "PWD", "XPWD", "STAT"]);
const BEFORE_LOGIN = new Set(["USER", "PASS", "QUIT", "FEAT", "OPTS", "PBSZ", "PROT", "AUTH", "SYST", "NOOP", "HELP"]);
const FEATURES = ["EPRT", "EPSV", "MDTM", "PASV", "PBSZ", "PROT", "REST STREAM", "SIZE", "TVFS", "UTF8"];

/** Commands whose refusal by the printer is worth a log line (the path and the printer's reply). */
const CHANGES = new Set(["DELE", "MKD", "XMKD", "RMD", "XRMD", "RNFR", "RNTO", "SITE"]);
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
            (socket) => serveClient(socket, raw as Socket, client, {
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

function serveClient(socket: TLSSocket, raw: Socket, client: ClientInfo, ctx: ClientContext): void {
  const { printer, pool, log } = ctx;
  let user: string | undefined;
  let login: "none" | "full" | "read-only" = "none";
  let loginFails = 0;
  let protPrivate = false;
  let type = "A";
  /** undefined: the printer's home directory. */
  let cwd: string | undefined;
  let rest = 0;
  let renameFrom: string | undefined;
  let plan: ClientDataPlan | undefined;
  let transfer: { abort(reason: string): void } | undefined;
  let closed = false;
  /** We decided the connection is over (QUIT, idle, too many wrong codes, a flood). */
  let closing = false;
  const cancels = new Set<() => void>();

  socket.on("error", (e) => log.debug(`control connection error: ${e.message}`));
  const send = (text: string) => {
    if (!socket.destroyed) socket.write(text);
  };
  const reply = (code: number, ...lines: string[]) => send(formatReply(code, ...lines));
  const relay = (r: FtpReply) => send(replyText(r));
  const dropPlan = () => {
    plan?.close();
    plan = undefined;
  };
  /** Our last reply, then the connection ends (destroyed shortly after, whatever the client does). */
  const close = (code: number, text: string) => {
    if (closing || closed) return;
    closing = true;
    lane.close();
    endAndDestroy(socket, formatReply(code, text));
  };
  const onIdle = () => {
    // A transfer (or a wait for the printer) is not the client being silent.
    if (lane.pending > 0 && !closing) return void (idle = idleDeadline(ctx.idleMs, onIdle));
    log.info(`FTPS client sent no command for ${ctx.idleMs / 1000} s: closing`);
    close(421, "Timeout.");
  };
  let idle: IdleDeadline = idleDeadline(ctx.idleMs, onIdle);
  socket.once("close", () => {
    closed = true;
    idle.clear();
    lane.close();
    // The listener counts the TCP socket under the TLS one: it must go too.
    raw.destroy();
    if (!closing && login === "none") {
      log.info(user === undefined
        ? `FTPS client closed the connection after the TLS handshake, before logging in (no USER): a slicer that does this may not trust our certificate; ${TRUST_HINT}`
        : "FTPS client closed the connection before logging in (USER but no accepted PASS)");
    }
    dropPlan();
    for (const cancel of cancels) cancel();
    transfer?.abort("the client closed its control connection");
  });

  /** Borrows a printer session for `work`; the client is removed from the queue if it leaves first. */
  const withPrinter = async (upload: boolean, work: (s: PrinterSession) => Promise<void>) => {
    // Keep reading while the printer works: an ABOR must get through during a transfer. What the client sends
    // meanwhile waits in the lane, bounded.
    if (!socket.destroyed) socket.resume();
    const ticket = pool.acquire(upload);
    cancels.add(ticket.cancel);
    let lease;
    try {
      lease = await ticket.lease;
    } catch (error) {
      return void reply(451, `Cannot reach the printer: ${(error as Error).message}`);
    } finally {
      cancels.delete(ticket.cancel);
    }
    try {
      if (closed) return;
      if (await syncState(lease.session)) await work(lease.session);
    } catch (error) {
      log.warn(`printer session failed: ${(error as Error).message}`);
      lease.session.socket.destroy();
      reply(451, "Lost the connection to the printer; try again.");
    } finally {
      lease.release();
    }
  };

  /** Puts the borrowed session in this client's directory and transfer type. */
  const syncState = async (s: PrinterSession): Promise<boolean> => {
    const want = cwd ?? s.home;
    if (s.cwd !== want) {
      const r = await s.command(`CWD ${want}`);
      if (r.code !== 250) {
        relay(r);
        return false;
      }
      s.cwd = want;
    }
    if (s.type !== type) {
      const r = await s.command(`TYPE ${type}`);
      if (r.code === 200) s.type = type;
    }
    return true;
  };

  const passThrough = (line: string, verb: string) =>
    withPrinter(false, async (s) => {
      if (verb === "RNTO") {
        const from = renameFrom;
        renameFrom = undefined;
        if (!from) return reply(503, "RNFR required first.");
        const r = await s.command(`RNFR ${from}`);
        if (r.code !== 350) {
          log.warn(`RNFR ${from}: the printer refused: ${replyMessage(r)}`);
          return relay(r);
        }
        const to = await s.command(line);
        if (to.code >= 400) log.warn(`RNTO ${argOf(line)} (from ${from}): the printer refused: ${replyMessage(to)}`);
        return relay(to);
      }
      const r = await s.command(line);
      if (CHANGES.has(verb) && r.code >= 400) log.warn(`${verb} ${argOf(line)}: the printer refused: ${replyMessage(r)}`);
      if (["CWD", "XCWD", "CDUP", "XCUP"].includes(verb) && r.code >= 200 && r.code < 300) {
        const where = parseQuotedPath(replyMessage(await s.command("PWD")));
        if (where) cwd = s.cwd = where;
      }
      relay(r);
    });

  /** The printer's passive data connection: EPSV (PASV when refused), always to the configured host. */
  const printerDataSocket = async (s: PrinterSession): Promise<Socket | FtpReply> => {
    let r = await s.command("EPSV");
    let port = r.code === 229 ? parseEpsvReply(replyMessage(r)) : undefined;
    if (port === undefined) {
      r = await s.command("PASV");
      // Firmware may put 0.0.0.0 (or another address) in the reply: only the port is used.
      port = r.code === 227 ? parsePasvReply(replyMessage(r))?.port : undefined;
    }
    if (port === undefined) return r.code >= 400 ? r : { code: 425, lines: ["425 The printer gave no passive port."] };
    const dataSocket = await connectPaused(printer.host, port);
    return dataSocket ?? { code: 425, lines: ["425 Cannot open a data connection to the printer."] };
  };

  const runTransfer = async (verb: string, arg: string, line: string) => {
    const upload = UPLOADS.has(verb);
    if (!plan) return reply(425, "Use PORT or PASV first.");
    if (!protPrivate) return reply(522, "Data connections must be encrypted: send PROT P.");
    const myPlan = plan;
    plan = undefined;
    const offset = rest;
    rest = 0;
    const clientRaw = await myPlan.connection();
    if (!clientRaw) {
      myPlan.close();
      return reply(425, "Failed to establish connection.");
    }
    await withPrinter(upload, async (s) => {
      const started = Date.now();
      const printerRaw = await printerDataSocket(s);
      if (!("write" in printerRaw)) {
        clientRaw.destroy();
        return relay(printerRaw);
      }
      if (offset > 0) {
        const r = await s.command(`REST ${offset}`);
        if (r.code !== 350) {
          printerRaw.destroy();
          clientRaw.destroy();
          return relay(r);
        }
      }
      const preliminary = await s.command(line);
      if (preliminary.code >= 200) {
        printerRaw.destroy();
        clientRaw.destroy();
        if (preliminary.code >= 400) log.warn(`${`${verb} ${arg}`.trim()}: the printer refused: ${replyMessage(preliminary)}`);
        return relay(preliminary);
      }
      // vsftpd begins the data connection's TLS handshake only after its 150.
      const printerData = await secureToPrinter(printerRaw, s).catch((e: Error) => e);
      if (printerData instanceof Error) {
        clientRaw.destroy();
        const final = await s.next().catch(() => undefined);
        log.warn(`printer data connection failed: ${printerData.message}${final ? ` (${replyMessage(final)})` : ""}`);
        return final ? relay(final) : reply(425, "Cannot open a data connection to the printer.");
      }
      relay(preliminary);
      const dataPeer = peerOf(clientRaw);
      const clientData = await ctx.tls.secure(clientRaw).catch((e: Error) => e);
      if (clientData instanceof Error) {
        log.info(`client data connection (from ${dataPeer}) failed: ${clientData.message}`);
        abortPrinterSide(printerData, printerRaw);
        await s.next(TRANSFER_REPLY_TIMEOUT_MS).catch(() => undefined);
        return reply(425, "Data connection failed: TLS handshake.");
      }
      clientData.on("error", () => {});
      printerData.on("error", () => {});

      const source = upload ? clientData : printerData;
      const destination = upload ? printerData : clientData;
      const flow = pump(source, destination);
      let abortReason: string | undefined;
      transfer = {
        abort(reason) {
          abortReason ??= reason;
          flow.abort();
        },
      };
      let end = await flow.done;
      if (upload && end === "end") {
        await Bun.sleep(UPLOAD_EOF_GRACE_MS);
        if (closed || abortReason) end = "aborted";
      }
      transfer = undefined;
      const what = `${verb} ${arg}`.trim();
      if (end !== "end") {
        // Never let the printer think a broken upload is complete: reset its data connection.
        abortPrinterSide(printerData, printerRaw);
        clientRaw.destroy();
        const final = await s.next(TRANSFER_REPLY_TIMEOUT_MS).catch(() => undefined);
        log.warn(`${what} interrupted after ${flow.bytes} bytes (${abortReason ?? end}); printer said: ${final ? replyMessage(final) : "nothing"}`);
        reply(426, upload ? "Connection closed; transfer aborted (the printer discarded it)." : "Connection closed; transfer aborted.");
        if (abortReason === "ABOR") reply(226, "ABOR successful.");
        return;
      }
      destination.end();
      let final = await s.next(TRANSFER_REPLY_TIMEOUT_MS);
      if (upload && final.code === 426 && verb === "STOR") {
        // The printer answers 426 for a data connection closed without close_notify even when every byte arrived.
        const size = await s.command(`SIZE ${arg}`);
        if (size.code === 213 && Number(replyMessage(size).trim()) === offset + flow.bytes) {
          log.info(`${what}: the printer said 426 but SIZE confirms all ${offset + flow.bytes} bytes arrived`);
          final = { code: 226, lines: ["226 Transfer complete."] };
        }
      }
      if (!upload) await closeQuietly(clientData, clientRaw);
      const seconds = (Date.now() - started) / 1000;
      const moved = `${flow.bytes} bytes ${upload ? "uploaded" : "downloaded"} in ${seconds.toFixed(1)} s`;
      if (final.code >= 400) log.warn(`${what}: ${moved}, then the printer refused: ${replyMessage(final)}`);
      else log.info(`${what}: ${moved}; printer said ${final.code}`);
      relay(final);
    });
    myPlan.close();
    clientRaw.destroy();
  };

  const secureToPrinter = (raw: Socket, s: PrinterSession) =>
    new Promise<TLSSocket>((resolve, reject) => {
      const data = connectToPrinter({ ...printerClientTlsOptions(printer), socket: raw, session: s.tlsSession });
      const timer = setTimeout(() => {
        data.destroy();
        reject(new Error("no TLS handshake"));
      }, 10_000);
      data.once("secureConnect", () => {
        clearTimeout(timer);
        resolve(data);
      });
      data.once("error", (e) => {
        clearTimeout(timer);
        reject(e);
      });
      raw.resume();
    });

  const command = async (line: string) => {
    idle.touch();
    const { verb, arg } = parseCommand(line);
    if (login === "none" && !BEFORE_LOGIN.has(verb)) return reply(530, "Please login with USER and PASS.");
    if (login === "read-only" && !READ_ONLY.has(verb) && !isLocal(verb)) {
      log.info(`read-only login: ${verb} refused`);
      return reply(550, "Permission denied: this login is read-only.");
    }
    switch (verb) {
      case "USER":
        if (login !== "none") return reply(530, "Can't change to another user.");
        user = arg.trim();
        return reply(331, "Please specify the password.");
      case "PASS": {
        if (login !== "none") return reply(230, "Already logged in.");
        if (user === undefined) return reply(503, "Login with USER first.");
        if (user === "bblp" && sameSecret(arg, printer.accessCode)) login = "full";
        else if (user === "bblp" && sameSecret(arg, printer.viewerAccessCode)) login = "read-only";
        if (login !== "none") {
          log.info(`FTPS login${login === "read-only" ? " (read-only viewer code)" : ""}`);
          return reply(230, "Login successful.");
        }
        loginFails++;
        log.warn(`FTPS login refused: wrong user or access code (${loginFails} of ${MAX_LOGIN_FAILS})`);
        if (loginFails >= MAX_LOGIN_FAILS) return close(530, "Login incorrect.");
        return reply(530, "Login incorrect.");
      }
      case "AUTH":
        return reply(534, "This port is implicit TLS already.");
      case "PBSZ":
        return reply(200, "PBSZ set to 0.");
      case "PROT": {
        const level = arg.trim().toUpperCase();
        if (level === "P") {
          protPrivate = true;
          return reply(200, "PROT now Private.");
        }
        return reply(536, "Only PROT P is supported: the printer requires encrypted data connections.");
      }
      case "FEAT":
        return reply(211, "Features:", ...FEATURES.map((f) => ` ${f}`), "End");
      case "SYST":
        return reply(215, "UNIX Type: L8");
      case "OPTS":
        return /^utf8 on$/i.test(arg.trim()) ? reply(200, "Always in UTF8 mode.") : reply(501, "Option not understood.");
      case "HELP":
        return reply(214, "pandaproxy FTPS: see FEAT for what is supported.");
      case "NOOP":
        return reply(200, "NOOP ok.");
      case "QUIT":
        return close(221, "Goodbye.");
      case "TYPE": {
        const t = arg.trim().toUpperCase();
        if (t === "I" || t === "L 8") type = "I";
        else if (t === "A" || t === "A N") type = "A";
        else return reply(504, "Only TYPE A and TYPE I are supported.");
        return reply(200, `Switching to ${type === "I" ? "Binary" : "ASCII"} mode.`);
      }
      case "MODE":
        return arg.trim().toUpperCase() === "S" ? reply(200, "Mode set to S.") : reply(504, "Only MODE S is supported.");
      case "STRU":
        return arg.trim().toUpperCase() === "F" ? reply(200, "Structure set to F.") : reply(504, "Only STRU F is supported.");
      case "ALLO":
        return reply(202, "ALLO command ignored.");
      case "PASV":
      case "EPSV": {
        if (verb === "EPSV" && arg.trim().toUpperCase() === "ALL") return reply(200, "EPSV ALL ok.");
        if (verb === "EPSV" && arg.trim() && arg.trim() !== "1") return reply(522, "Only IPv4 is supported, use (1)");
        dropPlan();
        const local = plainIp(socket.localAddress ?? raw.localAddress);
        const address = printer.bind !== "0.0.0.0" ? printer.bind : local;
        try {
          const passive = await passiveDataPlan(address, printer.ftpDataPorts, plainIp(socket.remoteAddress ?? raw.remoteAddress));
          plan = passive;
          return send(verb === "PASV" ? formatPasvReply(address, passive.port) : formatEpsvReply(passive.port));
        } catch (error) {
          log.warn(`cannot open a passive data port: ${(error as Error).message}`);
          return reply(425, "Cannot open a passive data port; try again later.");
        }
      }
      case "PORT":
      case "EPRT": {
        const target = verb === "PORT" ? parsePortArg(arg) : parseEprtArg(arg);
        if (!target || ("family" in target && target.family !== 4)) return reply(verb === "PORT" ? 500 : 522, `Illegal ${verb} command.`);
        // Data goes only to the client's own address: no FTP bounce through pandaproxy.
        if (target.host !== plainIp(socket.remoteAddress ?? raw.remoteAddress)) return reply(500, `Illegal ${verb} command.`);
        dropPlan();
        plan = activeDataPlan(target.host, target.port, plainIp(socket.localAddress ?? raw.localAddress));
        return reply(200, `${verb} command successful. Consider using ${verb === "PORT" ? "PASV" : "EPSV"}.`);
      }
      case "REST": {
        const n = Number(arg.trim());
        if (!/^\d+$/.test(arg.trim()) || !Number.isSafeInteger(n)) return reply(501, "Bad REST command.");
        rest = n;
        return reply(350, `Restart position accepted (${n}).`);
      }
      case "RNFR":
        if (!arg) return reply(501, "RNFR needs a path.");
        renameFrom = arg;
        return reply(350, "Ready for RNTO.");
      case "ABOR":
        return reply(225, "No transfer to ABOR.");
      default:
        if (UPLOADS.has(verb) || DOWNLOADS.has(verb)) return runTransfer(verb, arg, line);
        return passThrough(line, verb);
    }
  };

  // One command at a time, the socket paused meanwhile (except while the printer works: see withPrinter).
  const lane = commandLane<string>(socket, async (line) => {
    await command(line);
    idle.touch();
  }, {
    max: ctx.maxPendingCommands,
    onOverflow(max) {
      log.warn(`FTPS client sent more than ${max} commands without waiting for the replies: closing`);
      close(421, `Too many commands at once (more than ${max}); closing.`);
    },
    onError(error) {
      log.warn(`FTPS command failed: ${(error as Error).message}; closing`);
      close(421, "Local error; closing.");
    },
  });
  reply(220, `pandaproxy FTPS for ${printer.name} ready.`);
  socket.on("data", createLineSplitter(
    (line) => {
      if (closing) return;
      if (/^\s*ABOR\s*$/i.test(line) && transfer) return transfer.abort("ABOR");
      lane.push(line);
    },
    () => {
      log.warn("FTPS command line too long: closing");
      close(500, "Command line too long.");
    },
  ));
  void client;
}

/** The argument of a command line, for log lines. */
function argOf(line: string): string {
  return parseCommand(line).arg;
}

function isLocal(verb: string): boolean {
  return BEFORE_LOGIN.has(verb) || ["TYPE", "MODE", "STRU", "PASV", "EPSV", "PORT", "EPRT", "REST", "ABOR", "ALLO"].includes(verb);
}

/** Resets a printer data connection so a partial upload is reported as failed, never complete. */
function abortPrinterSide(data: TLSSocket, raw: Socket): void {
  // The TCP reset must come first: a TLS-level close would reach vsftpd as a clean end of file.
  const resettable = raw as Socket & { resetAndDestroy?: () => void };
  if (typeof resettable.resetAndDestroy === "function") resettable.resetAndDestroy();
  else raw.destroy();
  data.destroy();
}

/** Ends our side of a download (close_notify, then FIN) without waiting forever for the client. */
function closeQuietly(data: TLSSocket, raw: Socket): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      raw.destroy();
      resolve();
    }, 2_000);
    data.end(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}

export { PrinterFtpError };

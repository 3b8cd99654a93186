// The FTPS client session's data connections and printer work, as generators (pure: each yield is an effect the
// glue performs, answered with the next event): PASV/EPSV/PORT/EPRT planning, pass-through, rename, and transfers
// (STOR/RETR/LIST/...), where a broken upload is never reported as complete. Used by lib/bambu/ftp-session.ts.
import {
  formatEpsvReply, formatPasvReply, parseCommand, parseEprtArg, parseEpsvReply, parsePasvReply, parsePortArg, parseQuotedPath,
  replyMessage, replyText, type FtpReply,
} from "./ftp-codec.ts";
import type { FtpAction, FtpEffect, FtpEvent, FtpSessionOptions, PrinterView } from "./ftp-session.ts";

/** A whole transfer's final reply from the printer may take this long after the last byte. */
export const TRANSFER_REPLY_TIMEOUT_MS = 120_000;
/**
 * Bun cannot tell a TLS close_notify from a bare TCP FIN, so an upload's end is accepted only if the client's
 * control connection is still there this long after it (a killed client closes both at once).
 */
export const UPLOAD_EOF_GRACE_MS = 150;

export const UPLOADS = new Set(["STOR", "STOU", "APPE"]);
export const DOWNLOADS = new Set(["RETR", "LIST", "NLST", "MLSD"]);
/** Commands whose refusal by the printer is worth a log line (the path and the printer's reply). */
const CHANGES = new Set(["DELE", "MKD", "XMKD", "RMD", "XRMD", "RNFR", "RNTO", "SITE"]);
const DIRECTORY_CHANGES = new Set(["CWD", "XCWD", "CDUP", "XCUP"]);

export type Job<T = void> = Generator<FtpEffect, T, FtpEvent>;

export interface SessionState {
  user?: string;
  login: "none" | "full" | "read-only";
  loginFails: number;
  protPrivate: boolean;
  type: string;
  /** undefined: the printer's home directory. */
  cwd?: string;
  rest: number;
  renameFrom?: string;
  hasPlan: boolean;
  closed: boolean;
  /** We decided the connection is over (QUIT, idle, too many wrong codes, a flood). */
  closing: boolean;
  /** Bytes are moving: an ABOR line, or the client leaving, aborts them. */
  transferring: boolean;
  abortReason?: string;
}

export interface SessionContext {
  readonly options: FtpSessionOptions;
  readonly state: SessionState;
  now(): number;
  emit(action: FtpAction): void;
  reply(code: number, ...lines: string[]): void;
  close(code: number, text: string): void;
  log(level: "debug" | "info" | "warn", message: string): void;
}

/** The printer's reply to `line` (none: the next one); a broken printer session throws (withPrinter: 451). */
function* ask(line: string | undefined, timeoutMs?: number): Job<FtpReply> {
  const event = yield { kind: "printer", ...(line === undefined ? {} : { line }), ...(timeoutMs === undefined ? {} : { timeoutMs }) };
  if (event.kind === "printer-reply") return event.reply;
  throw new Error(event.kind === "printer-failed" ? event.message : `${event.kind} instead of a printer reply`);
}

/** The next reply, or undefined if the printer session broke (the command already failed another way). */
function* askQuietly(timeoutMs?: number): Job<FtpReply | undefined> {
  const event = yield { kind: "printer", ...(timeoutMs === undefined ? {} : { timeoutMs }) };
  return event.kind === "printer-reply" ? event.reply : undefined;
}

const relay = (c: SessionContext, reply: FtpReply) => c.emit({ kind: "reply", text: replyText(reply) });

/** Borrows a printer session for `work`; a broken printer session (or any failure in `work`) ends it with 451. */
function* withPrinter(c: SessionContext, upload: boolean, work: (s: PrinterView) => Job): Job {
  const lease = yield { kind: "acquire", upload };
  if (lease.kind === "lease-failed") return c.reply(451, `Cannot reach the printer: ${lease.message}`);
  if (lease.kind !== "lease") throw new Error(`${lease.kind} instead of a printer session`);
  try {
    if (c.state.closed) return;
    if (yield* syncState(c, lease.printer)) yield* work(lease.printer);
  } catch (error) {
    c.log("warn", `printer session failed: ${(error as Error).message}`);
    c.emit({ kind: "drop-printer-session" });
    c.reply(451, "Lost the connection to the printer; try again.");
  } finally {
    c.emit({ kind: "release" });
  }
}

/** Puts the borrowed session in this client's directory and transfer type. */
function* syncState(c: SessionContext, s: PrinterView): Job<boolean> {
  const want = c.state.cwd ?? s.home;
  if (s.cwd !== want) {
    const r = yield* ask(`CWD ${want}`);
    if (r.code !== 250) {
      relay(c, r);
      return false;
    }
    s.cwd = want;
    c.emit({ kind: "printer-state", cwd: want });
  }
  if (s.type !== c.state.type) {
    const r = yield* ask(`TYPE ${c.state.type}`);
    if (r.code === 200) {
      s.type = c.state.type;
      c.emit({ kind: "printer-state", type: s.type });
    }
  }
  return true;
}

export function passThrough(c: SessionContext, line: string, verb: string): Job {
  return withPrinter(c, false, function* (s) {
    if (verb === "RNTO") return yield* rename(c, line);
    const r = yield* ask(line);
    if (CHANGES.has(verb) && r.code >= 400) c.log("warn", `${verb} ${parseCommand(line).arg}: the printer refused: ${replyMessage(r)}`);
    if (DIRECTORY_CHANGES.has(verb) && r.code >= 200 && r.code < 300) {
      const where = parseQuotedPath(replyMessage(yield* ask("PWD")));
      if (where) {
        c.state.cwd = s.cwd = where;
        c.emit({ kind: "printer-state", cwd: where });
      }
    }
    relay(c, r);
  });
}

function* rename(c: SessionContext, line: string): Job {
  const from = c.state.renameFrom;
  c.state.renameFrom = undefined;
  if (!from) return c.reply(503, "RNFR required first.");
  const r = yield* ask(`RNFR ${from}`);
  if (r.code !== 350) {
    c.log("warn", `RNFR ${from}: the printer refused: ${replyMessage(r)}`);
    return relay(c, r);
  }
  const to = yield* ask(line);
  if (to.code >= 400) c.log("warn", `RNTO ${parseCommand(line).arg} (from ${from}): the printer refused: ${replyMessage(to)}`);
  relay(c, to);
}

/** PASV/EPSV: a listener for the client's data connection, on the address the client reached us at. */
export function* passive(c: SessionContext, verb: "PASV" | "EPSV", arg: string): Job {
  if (verb === "EPSV" && arg.toUpperCase() === "ALL") return c.reply(200, "EPSV ALL ok.");
  if (verb === "EPSV" && arg && arg !== "1") return c.reply(522, "Only IPv4 is supported, use (1)");
  dropPlan(c);
  const { bind, localIp } = c.options;
  const address = bind !== "0.0.0.0" ? bind : localIp;
  const opened = yield { kind: "open-passive", address };
  if (opened.kind !== "passive-opened") {
    c.log("warn", `cannot open a passive data port: ${opened.kind === "passive-failed" ? opened.message : opened.kind}`);
    return c.reply(425, "Cannot open a passive data port; try again later.");
  }
  // A client that left while the listener opened would leave it listening, its port taken, for good.
  if (c.state.closed) return dropPlan(c);
  c.state.hasPlan = true;
  c.emit({ kind: "reply", text: verb === "PASV" ? formatPasvReply(address, opened.port) : formatEpsvReply(opened.port) });
}

/** PORT/EPRT: we connect to the client, and only to its own address (no FTP bounce through pandaproxy). */
export function active(c: SessionContext, verb: "PORT" | "EPRT", arg: string): void {
  const target = verb === "PORT" ? parsePortArg(arg) : parseEprtArg(arg);
  if (!target || ("family" in target && target.family !== 4)) return c.reply(verb === "PORT" ? 500 : 522, `Illegal ${verb} command.`);
  if (target.host !== c.options.peerIp) return c.reply(500, `Illegal ${verb} command.`);
  dropPlan(c);
  c.emit({ kind: "plan-active", host: target.host, port: target.port });
  c.state.hasPlan = true;
  c.reply(200, `${verb} command successful. Consider using ${verb === "PORT" ? "PASV" : "EPSV"}.`);
}

function dropPlan(c: SessionContext): void {
  c.emit({ kind: "drop-plan" });
  c.state.hasPlan = false;
}

/** STOR/RETR/LIST/...: the client's planned data connection, one from the printer, and the bytes between them. */
export function* transfer(c: SessionContext, verb: string, arg: string, line: string): Job {
  const { state } = c;
  if (!state.hasPlan) return c.reply(425, "Use PORT or PASV first.");
  if (!state.protPrivate) return c.reply(522, "Data connections must be encrypted: send PROT P.");
  state.hasPlan = false;
  const offset = state.rest;
  state.rest = 0;
  const connected = yield { kind: "client-data" };
  if (connected.kind !== "client-data" || !connected.ok) {
    c.emit({ kind: "data", op: "close-plan" });
    return c.reply(425, "Failed to establish connection.");
  }
  yield* withPrinter(c, UPLOADS.has(verb), () => printerTransfer(c, { verb, arg, line, offset }));
  c.emit({ kind: "data", op: "close-plan" });
  c.emit({ kind: "data", op: "destroy-client" });
}

interface TransferRequest {
  verb: string;
  arg: string;
  line: string;
  offset: number;
}

function* printerTransfer(c: SessionContext, t: TransferRequest): Job {
  const upload = UPLOADS.has(t.verb);
  const what = `${t.verb} ${t.arg}`.trim();
  const started = c.now();
  if (!(yield* printerDataConnection(c, t))) return;
  const secured = yield { kind: "secure-client-data" };
  if (secured.kind !== "client-data-secured" || secured.error !== undefined) {
    const reason = secured.kind === "client-data-secured" ? secured.error : secured.kind;
    c.log("info", `client data connection (from ${secured.kind === "client-data-secured" ? secured.peer : "?"}) failed: ${reason}`);
    c.emit({ kind: "data", op: "reset-printer" });
    yield* askQuietly(TRANSFER_REPLY_TIMEOUT_MS);
    return c.reply(425, "Data connection failed: TLS handshake.");
  }
  const moved = yield* moveBytes(c, upload);
  if (moved.end !== "end") {
    // Never let the printer think a broken upload is complete: reset its data connection.
    c.emit({ kind: "data", op: "reset-printer" });
    c.emit({ kind: "data", op: "destroy-client" });
    const final = yield* askQuietly(TRANSFER_REPLY_TIMEOUT_MS);
    c.log("warn", `${what} interrupted after ${moved.bytes} bytes (${c.state.abortReason ?? moved.end}); printer said: ${final ? replyMessage(final) : "nothing"}`);
    c.reply(426, upload ? "Connection closed; transfer aborted (the printer discarded it)." : "Connection closed; transfer aborted.");
    if (c.state.abortReason === "ABOR") c.reply(226, "ABOR successful.");
    return;
  }
  c.emit({ kind: "data", op: "end-destination" });
  let final = yield* ask(undefined, TRANSFER_REPLY_TIMEOUT_MS);
  if (upload && final.code === 426 && t.verb === "STOR") {
    // The printer answers 426 for a data connection closed without close_notify even when every byte arrived.
    const size = yield* ask(`SIZE ${t.arg}`);
    if (size.code === 213 && Number(replyMessage(size).trim()) === t.offset + moved.bytes) {
      c.log("info", `${what}: the printer said 426 but SIZE confirms all ${t.offset + moved.bytes} bytes arrived`);
      final = { code: 226, lines: ["226 Transfer complete."] };
    }
  }
  if (!upload) yield { kind: "close-download" };
  const seconds = (c.now() - started) / 1000;
  const summary = `${moved.bytes} bytes ${upload ? "uploaded" : "downloaded"} in ${seconds.toFixed(1)} s`;
  if (final.code >= 400) c.log("warn", `${what}: ${summary}, then the printer refused: ${replyMessage(final)}`);
  else c.log("info", `${what}: ${summary}; printer said ${final.code}`);
  relay(c, final);
}

/**
 * The printer's passive data connection (EPSV, PASV when refused; only the port is used, firmware may put
 * 0.0.0.0 in a 227), REST, the command itself and its 150, then the data connection's TLS handshake (vsftpd
 * begins it only after its 150). False when the command already ended (its reply relayed).
 */
function* printerDataConnection(c: SessionContext, t: TransferRequest): Job<boolean> {
  const fail = (reply: FtpReply, ...ops: ("destroy-printer" | "destroy-client")[]) => {
    for (const op of ops) c.emit({ kind: "data", op });
    relay(c, reply);
    return false;
  };
  let r = yield* ask("EPSV");
  let port = r.code === 229 ? parseEpsvReply(replyMessage(r)) : undefined;
  if (port === undefined) {
    r = yield* ask("PASV");
    port = r.code === 227 ? parsePasvReply(replyMessage(r))?.port : undefined;
  }
  if (port === undefined) return fail(r.code >= 400 ? r : { code: 425, lines: ["425 The printer gave no passive port."] }, "destroy-client");
  const opened = yield { kind: "printer-data", port };
  if (opened.kind !== "printer-data" || !opened.ok) return fail({ code: 425, lines: ["425 Cannot open a data connection to the printer."] }, "destroy-client");
  if (t.offset > 0) {
    const rest = yield* ask(`REST ${t.offset}`);
    if (rest.code !== 350) return fail(rest, "destroy-printer", "destroy-client");
  }
  const preliminary = yield* ask(t.line);
  if (preliminary.code >= 200) {
    if (preliminary.code >= 400) c.log("warn", `${`${t.verb} ${t.arg}`.trim()}: the printer refused: ${replyMessage(preliminary)}`);
    return fail(preliminary, "destroy-printer", "destroy-client");
  }
  const secured = yield { kind: "secure-printer-data" };
  if (secured.kind !== "printer-data-secured" || secured.error !== undefined) {
    c.emit({ kind: "data", op: "destroy-client" });
    const final = yield* askQuietly();
    const reason = secured.kind === "printer-data-secured" ? secured.error : secured.kind;
    c.log("warn", `printer data connection failed: ${reason}${final ? ` (${replyMessage(final)})` : ""}`);
    if (final) relay(c, final);
    else c.reply(425, "Cannot open a data connection to the printer.");
    return false;
  }
  relay(c, preliminary);
  return true;
}

/** Runs the pump; an upload's end counts only if the client's control connection outlives it by the grace. */
function* moveBytes(c: SessionContext, upload: boolean): Job<{ end: string; bytes: number }> {
  c.state.transferring = true;
  c.state.abortReason = undefined;
  try {
    const ended = yield { kind: "pump", upload };
    if (ended.kind !== "transfer-ended") throw new Error(`${ended.kind} instead of a transfer's end`);
    let end: string = ended.end;
    if (upload && end === "end") {
      yield { kind: "wait", ms: UPLOAD_EOF_GRACE_MS };
      if (c.state.closed || c.state.abortReason) end = "aborted";
    }
    return { end, bytes: ended.bytes };
  } finally {
    c.state.transferring = false;
  }
}

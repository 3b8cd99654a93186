// One FTPS client's control session as a pure state machine: events in (a command line, a printer reply, a data
// connection opened or failed, a transfer's end, a timeout), plain actions out (reply, close, log, plan a data
// connection, borrow a printer session); lib/bambu/ftp.ts executes them on sockets. No I/O here.
import { sameSecret } from "../core/edge.ts";
import { formatReply, parseCommand, type FtpReply } from "./ftp-codec.ts";
import type { PumpEnd } from "./ftp-data.ts";
import { active, passive, passThrough, transfer, UPLOADS, DOWNLOADS, type Job, type SessionContext } from "./ftp-transfer.ts";

export const MAX_LOGIN_FAILS = 3;

/** What a viewer_access_code login may send to the printer. */
const READ_ONLY = new Set(["LIST", "NLST", "MLSD", "RETR", "SIZE", "MDTM", "CWD", "XCWD", "CDUP", "XCUP", "PWD", "XPWD", "STAT"]);
const BEFORE_LOGIN = new Set(["USER", "PASS", "QUIT", "FEAT", "OPTS", "PBSZ", "PROT", "AUTH", "SYST", "NOOP", "HELP"]);
/** Answered here without a printer session (with BEFORE_LOGIN). */
const LOCAL = new Set(["TYPE", "MODE", "STRU", "PASV", "EPSV", "PORT", "EPRT", "REST", "ABOR", "ALLO"]);
const FEATURES = ["EPRT", "EPSV", "MDTM", "PASV", "PBSZ", "PROT", "REST STREAM", "SIZE", "TVFS", "UTF8"];

/** A printer session as the client's session sees it when it borrows one. */
export interface PrinterView {
  readonly home: string;
  cwd: string;
  type: string;
}

/** Something that happened: to the client's connection, or the answer to the last effect. */
export type FtpEvent =
  | { kind: "opened" }
  /** A complete line arrived (before the command lane). */
  | { kind: "received"; line: string }
  /** The command lane hands over the next line. */
  | { kind: "command"; line: string }
  | { kind: "closed" }
  /** The idle deadline passed; `busy` while a command is still running or waiting. */
  | { kind: "idle"; busy: boolean; idleMs: number }
  | { kind: "line-too-long" }
  | { kind: "flood"; max: number }
  | { kind: "failed"; message: string }
  | { kind: "passive-opened"; port: number }
  | { kind: "passive-failed"; message: string }
  | { kind: "lease"; printer: PrinterView }
  | { kind: "lease-failed"; message: string }
  | { kind: "printer-reply"; reply: FtpReply }
  | { kind: "printer-failed"; message: string }
  | { kind: "client-data"; ok: boolean }
  | { kind: "printer-data"; ok: boolean }
  | { kind: "printer-data-secured"; error?: string }
  | { kind: "client-data-secured"; error?: string; peer?: string }
  | { kind: "transfer-ended"; end: PumpEnd; bytes: number }
  | { kind: "waited" }
  | { kind: "download-closed" }
  /** The effect itself threw (a bug, or a socket call that failed). */
  | { kind: "effect-failed"; message: string };

/** Work the glue does now, in order. */
export type FtpAction =
  | { kind: "reply"; text: string }
  /** Our last reply, then the connection ends (destroyed shortly after, whatever the client does). */
  | { kind: "close"; text: string }
  | { kind: "log"; level: "debug" | "info" | "warn"; message: string }
  /** Give the line to the command lane. */
  | { kind: "queue"; line: string }
  | { kind: "rearm-idle" }
  /** Close the client's planned data connection (listener or address), if any. */
  | { kind: "drop-plan" }
  | { kind: "plan-active"; host: string; port: number }
  /** Give the borrowed printer session back. */
  | { kind: "release" }
  /** The borrowed printer session is broken: destroy its control connection. */
  | { kind: "drop-printer-session" }
  /** Leave the borrowed printer session in this directory / transfer type. */
  | { kind: "printer-state"; cwd?: string; type?: string }
  | { kind: "cancel-wait" }
  | { kind: "abort-transfer" }
  /** On the current transfer's connections. `reset-printer`: a TCP reset, so a partial upload is never complete. */
  | { kind: "data"; op: "close-plan" | "destroy-client" | "destroy-printer" | "reset-printer" | "end-destination" };

/** Work whose outcome is the next event (at most one per step, after the step's actions). */
export type FtpEffect =
  | { kind: "open-passive"; address: string }
  | { kind: "acquire"; upload: boolean }
  /** Send `line` to the borrowed printer session (none: only wait) and wait for its next reply. */
  | { kind: "printer"; line?: string; timeoutMs?: number }
  /** Take the planned data connection for a transfer and wait for the client's TCP connection. */
  | { kind: "client-data" }
  | { kind: "printer-data"; port: number }
  | { kind: "secure-printer-data" }
  | { kind: "secure-client-data" }
  | { kind: "pump"; upload: boolean }
  | { kind: "wait"; ms: number }
  | { kind: "close-download" };

export interface FtpStep {
  actions: FtpAction[];
  next?: FtpEffect;
}

export interface FtpSessionOptions {
  printerName: string;
  accessCode: string;
  viewerAccessCode?: string;
  /** The printer entry's bind address ("0.0.0.0": the control connection's local address is used). */
  bind: string;
  /** Our and the client's address on the control connection (plain IPv4). */
  localIp: string;
  peerIp: string;
  /** What to tell the user about trusting our certificate (core/server.ts TRUST_HINT). */
  trustHint: string;
  /** Milliseconds, for the transfer log lines (default Date.now). */
  now?: () => number;
}

export interface FtpSession {
  handle(event: FtpEvent): FtpStep;
  readonly login: "none" | "full" | "read-only";
  readonly closing: boolean;
}

export function createFtpSession(options: FtpSessionOptions): FtpSession {
  const out: FtpAction[] = [];
  const c: SessionContext = {
    options,
    state: { login: "none", loginFails: 0, protPrivate: false, type: "A", rest: 0, hasPlan: false, closed: false, closing: false, transferring: false },
    now: options.now ?? Date.now,
    emit: (action) => void out.push(action),
    reply: (code, ...lines) => void out.push({ kind: "reply", text: formatReply(code, ...lines) }),
    close: (code, text) => {
      if (c.state.closing || c.state.closed) return;
      c.state.closing = true;
      out.push({ kind: "close", text: formatReply(code, text) });
    },
    log: (level, message) => void out.push({ kind: "log", level, message }),
  };
  let job: Job | undefined;

  const flush = (next?: FtpEffect): FtpStep => ({ actions: out.splice(0), ...(next ? { next } : {}) });
  const resume = (event?: FtpEvent): FtpStep => {
    if (!job) throw new Error(`${event?.kind} arrived with no command running`);
    try {
      // An effect that threw is thrown into the command where it waited (a printer session is then dropped).
      const result = event?.kind === "effect-failed" ? job.throw(new Error(event.message)) : job.next(event!);
      if (result.done) job = undefined;
      return flush(result.done ? undefined : result.value);
    } catch (error) {
      job = undefined;
      connectionEvent(c, { kind: "failed", message: (error as Error).message });
      return flush();
    }
  };

  return {
    handle(event) {
      if (event.kind === "command") {
        job = command(c, event.line);
        return resume();
      }
      return connectionEvent(c, event) ? flush() : resume(event);
    },
    get login() {
      return c.state.login;
    },
    get closing() {
      return c.state.closing;
    },
  };
}

/** Handles an event from the client's connection; false for the answer to an effect (the running command's). */
function connectionEvent(c: SessionContext, event: FtpEvent): boolean {
  switch (event.kind) {
    case "opened":
      c.reply(220, `pandaproxy FTPS for ${c.options.printerName} ready.`);
      return true;
    case "received":
      if (c.state.closing) return true;
      if (/^\s*ABOR\s*$/i.test(event.line) && c.state.transferring) abortTransfer(c, "ABOR");
      else c.emit({ kind: "queue", line: event.line });
      return true;
    case "closed":
      closed(c);
      return true;
    case "idle":
      // A transfer (or a wait for the printer) is not the client being silent.
      if (event.busy && !c.state.closing) c.emit({ kind: "rearm-idle" });
      else {
        c.log("info", `FTPS client sent no command for ${event.idleMs / 1000} s: closing`);
        c.close(421, "Timeout.");
      }
      return true;
    case "line-too-long":
      return closeWith(c, "FTPS command line too long: closing", 500, "Command line too long.");
    case "flood":
      return closeWith(c, `FTPS client sent more than ${event.max} commands without waiting for the replies: closing`, 421, `Too many commands at once (more than ${event.max}); closing.`);
    case "failed":
      return closeWith(c, `FTPS command failed: ${event.message}; closing`, 421, "Local error; closing.");
    default:
      return false;
  }
}

function closeWith(c: SessionContext, warning: string, code: number, text: string): true {
  c.log("warn", warning);
  c.close(code, text);
  return true;
}

function abortTransfer(c: SessionContext, reason: string): void {
  c.state.abortReason ??= reason;
  c.emit({ kind: "abort-transfer" });
}

function closed(c: SessionContext): void {
  const { state } = c;
  state.closed = true;
  if (!state.closing && state.login === "none") {
    c.log("info", state.user === undefined
      ? `FTPS client closed the connection after the TLS handshake, before logging in (no USER): a slicer that does this may not trust our certificate; ${c.options.trustHint}`
      : "FTPS client closed the connection before logging in (USER but no accepted PASS)");
  }
  c.emit({ kind: "drop-plan" });
  c.emit({ kind: "cancel-wait" });
  if (state.transferring) abortTransfer(c, "the client closed its control connection");
}

function* command(c: SessionContext, line: string): Job {
  const { verb, arg } = parseCommand(line);
  const { state } = c;
  const local = BEFORE_LOGIN.has(verb) || LOCAL.has(verb);
  if (state.login === "none" && !BEFORE_LOGIN.has(verb)) return c.reply(530, "Please login with USER and PASS.");
  if (state.login === "read-only" && !READ_ONLY.has(verb) && !local) {
    c.log("info", `read-only login: ${verb} refused`);
    return c.reply(550, "Permission denied: this login is read-only.");
  }
  if (verb === "PASV" || verb === "EPSV") return yield* passive(c, verb, arg.trim());
  if (local || verb === "RNFR") return localCommand(c, verb, arg);
  if (UPLOADS.has(verb) || DOWNLOADS.has(verb)) return yield* transfer(c, verb, arg, line);
  return yield* passThrough(c, line, verb);
}

function login(c: SessionContext, verb: "USER" | "PASS", arg: string): void {
  const { state, options } = c;
  if (verb === "USER") {
    if (state.login !== "none") return c.reply(530, "Can't change to another user.");
    state.user = arg.trim();
    return c.reply(331, "Please specify the password.");
  }
  if (state.login !== "none") return c.reply(230, "Already logged in.");
  if (state.user === undefined) return c.reply(503, "Login with USER first.");
  if (state.user === "bblp" && sameSecret(arg, options.accessCode)) state.login = "full";
  else if (state.user === "bblp" && sameSecret(arg, options.viewerAccessCode)) state.login = "read-only";
  if (state.login !== "none") {
    c.log("info", `FTPS login${state.login === "read-only" ? " (read-only viewer code)" : ""}`);
    return c.reply(230, "Login successful.");
  }
  state.loginFails++;
  c.log("warn", `FTPS login refused: wrong user or access code (${state.loginFails} of ${MAX_LOGIN_FAILS})`);
  if (state.loginFails >= MAX_LOGIN_FAILS) return c.close(530, "Login incorrect.");
  c.reply(530, "Login incorrect.");
}

/** Commands answered without the printer (PASV/EPSV apart: they open a listener). */
function localCommand(c: SessionContext, verb: string, arg: string): void {
  const { state } = c;
  const word = arg.trim().toUpperCase();
  switch (verb) {
    case "USER":
    case "PASS":
      return login(c, verb, arg);
    case "AUTH":
      return c.reply(534, "This port is implicit TLS already.");
    case "PBSZ":
      return c.reply(200, "PBSZ set to 0.");
    case "PROT":
      if (word !== "P") return c.reply(536, "Only PROT P is supported: the printer requires encrypted data connections.");
      state.protPrivate = true;
      return c.reply(200, "PROT now Private.");
    case "FEAT":
      return c.reply(211, "Features:", ...FEATURES.map((f) => ` ${f}`), "End");
    case "SYST":
      return c.reply(215, "UNIX Type: L8");
    case "OPTS":
      return /^utf8 on$/i.test(arg.trim()) ? c.reply(200, "Always in UTF8 mode.") : c.reply(501, "Option not understood.");
    case "HELP":
      return c.reply(214, "pandaproxy FTPS: see FEAT for what is supported.");
    case "NOOP":
      return c.reply(200, "NOOP ok.");
    case "QUIT":
      return c.close(221, "Goodbye.");
    case "TYPE":
      if (word === "I" || word === "L 8") state.type = "I";
      else if (word === "A" || word === "A N") state.type = "A";
      else return c.reply(504, "Only TYPE A and TYPE I are supported.");
      return c.reply(200, `Switching to ${state.type === "I" ? "Binary" : "ASCII"} mode.`);
    case "MODE":
      return word === "S" ? c.reply(200, "Mode set to S.") : c.reply(504, "Only MODE S is supported.");
    case "STRU":
      return word === "F" ? c.reply(200, "Structure set to F.") : c.reply(504, "Only STRU F is supported.");
    case "ALLO":
      return c.reply(202, "ALLO command ignored.");
    case "PORT":
    case "EPRT":
      return active(c, verb, arg);
    case "REST": {
      const n = Number(arg.trim());
      if (!/^\d+$/.test(arg.trim()) || !Number.isSafeInteger(n)) return c.reply(501, "Bad REST command.");
      state.rest = n;
      return c.reply(350, `Restart position accepted (${n}).`);
    }
    case "RNFR":
      if (!arg) return c.reply(501, "RNFR needs a path.");
      state.renameFrom = arg;
      return c.reply(350, "Ready for RNTO.");
    case "ABOR":
      return c.reply(225, "No transfer to ABOR.");
  }
}

// The FTPS client session as a state machine, without a socket: events in, actions and effects out.
import { describe, expect, test } from "bun:test";
import type { FtpReply } from "../lib/bambu/ftp-codec.ts";
import { createFtpSession, MAX_LOGIN_FAILS, type FtpAction, type FtpEffect, type FtpEvent, type FtpSession, type FtpSessionOptions } from "../lib/bambu/ftp-session.ts";
import { TRANSFER_REPLY_TIMEOUT_MS, UPLOAD_EOF_GRACE_MS } from "../lib/bambu/ftp-transfer.ts";

const ACCESS_CODE = "12345678";
const VIEWER_CODE = "87654321";
const BIND = "127.0.31.5";
const PEER = "127.0.31.9";
/** No dialogue in these tests takes more steps than this. */
const MAX_STEPS = 100;

const reply = (code: number, text: string): FtpReply => ({ code, lines: [`${code} ${text}`] });

function newSession(options: Partial<FtpSessionOptions> = {}): FtpSession {
  let clock = 0;
  return createFtpSession({
    printerName: "p1s", accessCode: ACCESS_CODE, viewerAccessCode: VIEWER_CODE, bind: BIND, localIp: "127.0.31.6",
    peerIp: PEER, trustHint: "see the README", now: () => (clock += 500), ...options,
  });
}

/** What the glue would see: every action, every effect, and the replies' text. */
interface Trace {
  actions: FtpAction[];
  effects: FtpEffect[];
  replies: string[];
  logs: string[];
  /** The effect still waiting for its outcome (the test answers it later). */
  pending?: FtpEffect;
}

type Answer = (effect: FtpEffect) => FtpEvent | undefined;

/** Runs one event and answers each effect with `answer` until the command is done or `answer` gives nothing. */
function drive(s: FtpSession, first: FtpEvent, answer: Answer = () => undefined, trace?: Trace): Trace {
  const t: Trace = trace ?? { actions: [], effects: [], replies: [], logs: [] };
  let step = s.handle(first);
  for (let i = 0; i < MAX_STEPS; i++) {
    t.actions.push(...step.actions);
    for (const a of step.actions) {
      if (a.kind === "reply" || a.kind === "close") t.replies.push(a.text.trimEnd());
      if (a.kind === "log") t.logs.push(`${a.level}: ${a.message}`);
    }
    t.pending = step.next;
    if (!step.next) return t;
    t.effects.push(step.next);
    const event = answer(step.next);
    if (!event) return t;
    step = s.handle(event);
  }
  throw new Error(`more than ${MAX_STEPS} steps`);
}

const codes = (t: Trace) => t.replies.map((r) => Number(r.slice(0, 3)));
const say = (s: FtpSession, line: string, answer?: Answer) => drive(s, { kind: "command", line }, answer);

/** A printer session that answers lines by their start and waits (`next`) with `finals`, in order. */
function printer(replies: Record<string, FtpReply | FtpReply[]>, finals: FtpReply[] = [], overrides: Partial<Record<FtpEffect["kind"], FtpEvent>> = {}): Answer {
  const home = { home: "/", cwd: "/", type: "I" };
  return (effect) => {
    if (overrides[effect.kind]) return overrides[effect.kind];
    switch (effect.kind) {
      case "acquire":
        return { kind: "lease", printer: { ...home } };
      case "printer": {
        if (effect.line === undefined) return { kind: "printer-reply", reply: finals.shift() ?? reply(421, "nothing more") };
        const key = Object.keys(replies).find((k) => effect.line!.startsWith(k));
        const r = key ? replies[key]! : reply(500, "Unknown command.");
        return { kind: "printer-reply", reply: Array.isArray(r) ? r.shift()! : r };
      }
      case "client-data":
        return { kind: "client-data", ok: true };
      case "printer-data":
        return { kind: "printer-data", ok: true };
      case "secure-printer-data":
        return { kind: "printer-data-secured" };
      case "secure-client-data":
        return { kind: "client-data-secured" };
      case "pump":
        return { kind: "transfer-ended", end: "end", bytes: 1000 };
      case "wait":
        return { kind: "waited" };
      case "close-download":
        return { kind: "download-closed" };
      case "open-passive":
        return { kind: "passive-opened", port: 50_000 };
    }
  };
}

const PRINTER = { EPSV: reply(229, "Entering Extended Passive Mode (|||40001|)"), STOR: reply(150, "Ok to send data."), RETR: reply(150, "Opening BINARY mode data connection."), LIST: reply(150, "Here comes the directory listing.") };

function loggedIn(code = ACCESS_CODE): FtpSession {
  const s = newSession();
  drive(s, { kind: "opened" });
  say(s, "USER bblp");
  say(s, `PASS ${code}`);
  return s;
}

/** Logged in, PROT P, TYPE I and a passive plan: ready for a transfer. */
function ready(): FtpSession {
  const s = loggedIn();
  say(s, "PROT P");
  say(s, "TYPE I");
  say(s, "EPSV", printer({}));
  return s;
}

describe("FTPS session: login", () => {
  test("the owner's access code logs in", () => {
    const s = newSession();
    expect(drive(s, { kind: "opened" }).replies).toEqual(["220 pandaproxy FTPS for p1s ready."]);
    expect(say(s, "USER bblp").replies).toEqual(["331 Please specify the password."]);
    const t = say(s, `PASS ${ACCESS_CODE}`);
    expect(t.replies).toEqual(["230 Login successful."]);
    expect(t.logs).toEqual(["info: FTPS login"]);
    expect(s.login).toBe("full");
    expect(codes(say(s, "USER other"))).toEqual([530]);
    expect(codes(say(s, "PASS again"))).toEqual([230]);
  });

  test("the viewer code logs in read-only", () => {
    const s = loggedIn(VIEWER_CODE);
    expect(s.login).toBe("read-only");
  });

  test(`a wrong code ${MAX_LOGIN_FAILS} times closes the connection; lines after it are ignored`, () => {
    const s = newSession();
    say(s, "USER bblp");
    expect(codes(say(s, "PASS wrong1"))).toEqual([530]);
    expect(codes(say(s, "PASS wrong2"))).toEqual([530]);
    const last = say(s, "PASS wrong3");
    expect(last.actions).toContainEqual({ kind: "close", text: "530 Login incorrect.\r\n" });
    expect(last.logs).toEqual([`warn: FTPS login refused: wrong user or access code (3 of ${MAX_LOGIN_FAILS})`]);
    expect(s.closing).toBe(true);
    expect(drive(s, { kind: "received", line: "PASS 12345678" }).actions).toEqual([]);
  });

  test("the right code for another user is refused; PASS needs USER first; commands need a login", () => {
    const s = newSession();
    expect(codes(say(s, `PASS ${ACCESS_CODE}`))).toEqual([503]);
    expect(codes(say(s, "LIST"))).toEqual([530]);
    expect(codes(say(s, "XYZZY"))).toEqual([530]);
    say(s, "USER root");
    expect(codes(say(s, `PASS ${ACCESS_CODE}`))).toEqual([530]);
    expect(s.login).toBe("none");
    expect(codes(say(s, "FEAT"))).toEqual([211]);
  });

  test("a client that leaves before logging in is logged with the certificate hint", () => {
    const s = newSession();
    expect(drive(s, { kind: "closed" }).logs[0]).toContain("(no USER): a slicer that does this may not trust our certificate; see the README");
    const t = newSession();
    say(t, "USER bblp");
    expect(drive(t, { kind: "closed" }).logs).toEqual(["info: FTPS client closed the connection before logging in (USER but no accepted PASS)"]);
  });
});

describe("FTPS session: the viewer's refusals", () => {
  for (const line of ["STOR x.3mf", "APPE x.3mf", "DELE x.3mf", "MKD d", "RNFR a", "RNTO b", "SITE CHMOD 777 x", "XYZZY"]) {
    test(`${line.split(" ")[0]} gets 550 and reaches no printer`, () => {
      const t = say(loggedIn(VIEWER_CODE), line);
      expect(t.replies).toEqual(["550 Permission denied: this login is read-only."]);
      expect(t.effects).toEqual([]);
    });
  }
  test("listing, downloads and local commands go on", () => {
    const s = loggedIn(VIEWER_CODE);
    expect(codes(say(s, "TYPE I"))).toEqual([200]);
    expect(say(s, "CWD /model").effects).toEqual([{ kind: "acquire", upload: false }]);
    expect(say(s, "SIZE x").effects[0]).toEqual({ kind: "acquire", upload: false });
  });
});

describe("FTPS session: data connection planning", () => {
  test("PASV and EPSV listen on the bind address and tell the client where", () => {
    const s = loggedIn();
    const pasv = say(s, "PASV", printer({}));
    expect(pasv.effects).toEqual([{ kind: "open-passive", address: BIND }]);
    expect(pasv.actions[0]).toEqual({ kind: "drop-plan" });
    expect(pasv.replies).toEqual(["227 Entering Passive Mode (127,0,31,5,195,80)."]);
    expect(say(s, "EPSV", printer({})).replies).toEqual(["229 Entering Extended Passive Mode (|||50000|)"]);
    expect(say(s, "EPSV 1", printer({})).replies).toEqual(["229 Entering Extended Passive Mode (|||50000|)"]);
    expect(say(s, "EPSV 2").replies).toEqual(["522 Only IPv4 is supported, use (1)"]);
    expect(say(s, "EPSV ALL").replies).toEqual(["200 EPSV ALL ok."]);
  });

  test("with bind 0.0.0.0 the address the client reached us at is used; a port that cannot be opened is 425", () => {
    const s = newSession({ bind: "0.0.0.0" });
    say(s, "USER bblp");
    say(s, `PASS ${ACCESS_CODE}`);
    expect(say(s, "PASV", printer({})).effects).toEqual([{ kind: "open-passive", address: "127.0.31.6" }]);
    const failed = say(s, "PASV", () => ({ kind: "passive-failed", message: "every port of ftp_data_ports 1-2 is in use" }));
    expect(failed.replies).toEqual(["425 Cannot open a passive data port; try again later."]);
    expect(failed.logs).toEqual(["warn: cannot open a passive data port: every port of ftp_data_ports 1-2 is in use"]);
    // The failed PASV left no plan.
    say(s, "PROT P");
    expect(codes(say(s, "RETR x"))).toEqual([425]);
  });

  test("a client that leaves while its passive listener opens: the listener is closed, not left listening", () => {
    const s = loggedIn();
    expect(say(s, "PASV").pending).toEqual({ kind: "open-passive", address: BIND });
    drive(s, { kind: "closed" });
    expect(drive(s, { kind: "passive-opened", port: 50_000 }).actions).toEqual([{ kind: "drop-plan" }]);
  });

  test("PORT and EPRT connect only to the client's own address (no FTP bounce)", () => {
    const s = loggedIn();
    const port = say(s, "PORT 127,0,31,9,195,80");
    expect(port.actions).toEqual([
      { kind: "drop-plan" },
      { kind: "plan-active", host: PEER, port: 50_000 },
      { kind: "reply", text: "200 PORT command successful. Consider using PASV.\r\n" },
    ]);
    expect(say(s, "EPRT |1|127.0.31.9|6275|").actions[1]).toEqual({ kind: "plan-active", host: PEER, port: 6275 });
    expect(say(s, "PORT 10,0,0,1,195,80").replies).toEqual(["500 Illegal PORT command."]);
    expect(say(s, "EPRT |1|10.0.0.1|6275|").replies).toEqual(["500 Illegal EPRT command."]);
    expect(say(s, "EPRT |2|::1|6275|").replies).toEqual(["522 Illegal EPRT command."]);
    expect(say(s, "PORT 1,2,3").replies).toEqual(["500 Illegal PORT command."]);
  });

  test("a transfer needs a plan and PROT P", () => {
    const s = loggedIn();
    expect(say(s, "LIST").replies).toEqual(["425 Use PORT or PASV first."]);
    say(s, "PASV", printer({}));
    expect(say(s, "LIST").replies).toEqual(["522 Data connections must be encrypted: send PROT P."]);
  });
});

describe("FTPS session: transfers", () => {
  test("STOR: data connections, the printer's 150 and 226, in order", () => {
    const t = say(ready(), "STOR x.3mf", printer(PRINTER, [reply(226, "Transfer complete.")]));
    expect(t.effects).toEqual([
      { kind: "client-data" }, { kind: "acquire", upload: true }, { kind: "printer", line: "EPSV" }, { kind: "printer-data", port: 40001 },
      { kind: "printer", line: "STOR x.3mf" }, { kind: "secure-printer-data" }, { kind: "secure-client-data" }, { kind: "pump", upload: true },
      { kind: "wait", ms: UPLOAD_EOF_GRACE_MS }, { kind: "printer", timeoutMs: TRANSFER_REPLY_TIMEOUT_MS },
    ]);
    expect(t.replies).toEqual(["150 Ok to send data.", "226 Transfer complete."]);
    expect(t.logs).toEqual(["info: STOR x.3mf: 1000 bytes uploaded in 0.5 s; printer said 226"]);
    const tail = t.actions.filter((a) => a.kind === "data" || a.kind === "release");
    expect(tail).toEqual([{ kind: "data", op: "end-destination" }, { kind: "release" }, { kind: "data", op: "close-plan" }, { kind: "data", op: "destroy-client" }]);
  });

  test("the borrowed printer session is moved to the client's directory and type first", () => {
    const s = ready();
    say(s, "CWD /model", printer({ CWD: reply(250, "ok"), PWD: reply(257, '"/model" is the current directory') }));
    say(s, "TYPE A");
    say(s, "EPSV", printer({}));
    const t = say(s, "RETR a.gcode", printer({ ...PRINTER, CWD: reply(250, "ok"), TYPE: reply(200, "ok") }, [reply(226, "done")]));
    expect(t.effects.slice(2, 4)).toEqual([{ kind: "printer", line: "CWD /model" }, { kind: "printer", line: "TYPE A" }]);
    expect(t.actions).toContainEqual({ kind: "printer-state", cwd: "/model" });
    expect(t.effects).toContainEqual({ kind: "close-download" });
  });

  test("the printer refuses an upload with 553: the client gets the 553, the refusal is logged", () => {
    const t = say(ready(), "STOR /sys/x.3mf", printer({ ...PRINTER, STOR: reply(553, "Could not create file.") }));
    expect(t.replies).toEqual(["553 Could not create file."]);
    expect(t.logs).toEqual(["warn: STOR /sys/x.3mf: the printer refused: Could not create file."]);
    expect(t.actions.filter((a) => a.kind === "data").map((a) => (a as { op: string }).op)).toEqual(["destroy-printer", "destroy-client", "close-plan", "destroy-client"]);
    expect(t.actions).toContainEqual({ kind: "release" });
  });

  test("a 426 after every byte arrived, confirmed by SIZE, reaches the client as 226", () => {
    const t = say(ready(), "STOR x.3mf", printer({ ...PRINTER, SIZE: reply(213, "1000") }, [reply(426, "Failure reading network stream.")]));
    expect(t.effects).toContainEqual({ kind: "printer", line: "SIZE x.3mf" });
    expect(t.replies).toEqual(["150 Ok to send data.", "226 Transfer complete."]);
    expect(t.logs[0]).toBe("info: STOR x.3mf: the printer said 426 but SIZE confirms all 1000 bytes arrived");
  });

  test("a 426 with a SIZE short of the bytes sent stays 426", () => {
    const t = say(ready(), "STOR x.3mf", printer({ ...PRINTER, SIZE: reply(213, "999") }, [reply(426, "Failure reading network stream.")]));
    expect(codes(t)).toEqual([150, 426]);
    expect(t.logs).toEqual(["warn: STOR x.3mf: 1000 bytes uploaded in 0.5 s, then the printer refused: Failure reading network stream."]);
  });

  test("an upload cut off mid-way resets the printer's data connection and tells the client 426", () => {
    const t = say(ready(), "STOR x.3mf", printer(PRINTER, [reply(426, "Failure")], { pump: { kind: "transfer-ended", end: "source failed", bytes: 10 } }));
    expect(t.actions).toContainEqual({ kind: "data", op: "reset-printer" });
    expect(t.actions).not.toContainEqual({ kind: "data", op: "end-destination" });
    expect(t.replies).toEqual(["150 Ok to send data.", "426 Connection closed; transfer aborted (the printer discarded it)."]);
    expect(t.logs).toEqual(["warn: STOR x.3mf interrupted after 10 bytes (source failed); printer said: Failure"]);
  });

  test("an upload whose client leaves within the grace after its end is aborted, never complete", () => {
    const s = ready();
    const t = say(s, "STOR x.3mf", (e) => (e.kind === "wait" ? undefined : printer(PRINTER)(e)));
    expect(t.pending).toEqual({ kind: "wait", ms: UPLOAD_EOF_GRACE_MS });
    expect(drive(s, { kind: "closed" }).actions).toContainEqual({ kind: "abort-transfer" });
    const rest = drive(s, { kind: "waited" }, printer({}, [reply(426, "Failure")]));
    expect(rest.actions).toContainEqual({ kind: "data", op: "reset-printer" });
    expect(rest.logs[0]).toContain("(the client closed its control connection)");
  });

  test("ABOR during a transfer aborts it at once: 426 then 226", () => {
    const s = ready();
    const t = say(s, "RETR big.3mf", (e) => (e.kind === "pump" ? undefined : printer(PRINTER)(e)));
    expect(t.pending).toEqual({ kind: "pump", upload: false });
    expect(drive(s, { kind: "received", line: "ABOR" }).actions).toEqual([{ kind: "abort-transfer" }]);
    const rest = drive(s, { kind: "transfer-ended", end: "aborted", bytes: 5 }, printer({}, [reply(426, "Failure writing network stream.")]));
    expect(rest.replies).toEqual(["426 Connection closed; transfer aborted.", "226 ABOR successful."]);
  });

  test("ABOR with no transfer is queued like any command and answered 225", () => {
    const s = loggedIn();
    expect(drive(s, { kind: "received", line: "ABOR" }).actions).toEqual([{ kind: "queue", line: "ABOR" }]);
    expect(say(s, "ABOR").replies).toEqual(["225 No transfer to ABOR."]);
  });

  test("LIST with REST, no client data connection, and a printer that cannot be reached", () => {
    const s = ready();
    say(s, "REST 100");
    const t = say(s, "RETR x", printer({ ...PRINTER, REST: reply(350, "Restart position accepted (100).") }, [reply(226, "ok")]));
    expect(t.effects).toContainEqual({ kind: "printer", line: "REST 100" });
    say(s, "EPSV", printer({}));
    expect(say(s, "LIST", () => ({ kind: "client-data", ok: false })).replies).toEqual(["425 Failed to establish connection."]);
    say(s, "EPSV", printer({}));
    const unreachable = say(s, "LIST", printer({}, [], { acquire: { kind: "lease-failed", message: "connection refused" } }));
    expect(unreachable.replies).toEqual(["451 Cannot reach the printer: connection refused"]);
  });
});

describe("FTPS session: pass-through, QUIT, idle, unknown commands", () => {
  test("an unknown command goes to the printer, and its answer back", () => {
    const t = say(loggedIn(), "XYZZY plugh", printer({ TYPE: reply(200, "Switching to ASCII mode.") }));
    // The borrowed printer session was left in TYPE I: it is put in the client's (TYPE A) first.
    expect(t.effects).toEqual([{ kind: "acquire", upload: false }, { kind: "printer", line: "TYPE A" }, { kind: "printer", line: "XYZZY plugh" }]);
    expect(t.actions).toContainEqual({ kind: "printer-state", type: "A" });
    expect(t.replies).toEqual(["500 Unknown command."]);
    expect(t.actions.at(-1)).toEqual({ kind: "release" });
  });

  test("a printer session lost mid-command: 451, the session is dropped and released", () => {
    const t = say(loggedIn(), "DELE x", printer({}, [], { printer: { kind: "printer-failed", message: "printer FTPS closed the connection" } }));
    expect(t.replies).toEqual(["451 Lost the connection to the printer; try again."]);
    expect(t.actions.slice(-3).map((a) => a.kind)).toEqual(["drop-printer-session", "reply", "release"]);
  });

  test("an effect that throws while a printer session is borrowed: 451, dropped, released; otherwise the client is closed", () => {
    const s = ready();
    const t = say(s, "RETR x", printer(PRINTER, [], { "secure-client-data": { kind: "effect-failed", message: "boom" } }));
    expect(t.logs).toEqual(["warn: printer session failed: boom"]);
    expect(t.replies.at(-1)).toBe("451 Lost the connection to the printer; try again.");
    expect(t.actions.map((a) => a.kind)).toContain("release");
    const outside = say(s, "PASV", () => ({ kind: "effect-failed", message: "bang" }));
    expect(outside.actions).toEqual([{ kind: "drop-plan" }, { kind: "log", level: "warn", message: "FTPS command failed: bang; closing" }, { kind: "close", text: "421 Local error; closing.\r\n" }]);
  });

  test("RNFR then RNTO sends both to the printer; RNTO alone is 503", () => {
    const s = loggedIn();
    expect(codes(say(s, "RNTO b", printer({})))).toEqual([503]);
    expect(codes(say(s, "RNFR a"))).toEqual([350]);
    const t = say(s, "RNTO b", printer({ RNFR: reply(350, "Ready"), RNTO: reply(250, "Rename successful.") }));
    expect(t.effects.slice(2)).toEqual([{ kind: "printer", line: "RNFR a" }, { kind: "printer", line: "RNTO b" }]);
    expect(t.replies).toEqual(["250 Rename successful."]);
  });

  test("QUIT says goodbye and closes; closing twice sends one last reply", () => {
    const s = loggedIn();
    expect(say(s, "QUIT").actions).toEqual([{ kind: "close", text: "221 Goodbye.\r\n" }]);
    expect(drive(s, { kind: "flood", max: 5 }).actions.filter((a) => a.kind === "close")).toEqual([]);
  });

  test("idle: a running command re-arms the deadline; a silent client is closed with 421", () => {
    const s = loggedIn();
    expect(drive(s, { kind: "idle", busy: true, idleMs: 1000 }).actions).toEqual([{ kind: "rearm-idle" }]);
    const t = drive(s, { kind: "idle", busy: false, idleMs: 1000 });
    expect(t.replies).toEqual(["421 Timeout."]);
    expect(t.logs).toEqual(["info: FTPS client sent no command for 1 s: closing"]);
  });

  test("local settings: TYPE, MODE, STRU, OPTS, REST, PROT", () => {
    const s = loggedIn();
    expect(codes(say(s, "TYPE X"))).toEqual([504]);
    expect(codes(say(s, "MODE B"))).toEqual([504]);
    expect(codes(say(s, "STRU F"))).toEqual([200]);
    expect(codes(say(s, "OPTS UTF8 ON"))).toEqual([200]);
    expect(codes(say(s, "REST -1"))).toEqual([501]);
    expect(codes(say(s, "PROT C"))).toEqual([536]);
    expect(codes(say(s, "AUTH TLS"))).toEqual([534]);
  });
});

// The simulated printer's FTPS server (implicit TLS, port 990), behaving like the vsftpd on Bambu printers:
// bblp/access code, PROT P required, passive data only (PORT/EPRT unknown), data connections that must
// resume the control connection's TLS session, TLS 1.2 only, no close_notify on data, a session limit.
// This file reuses the proxy's FTP codec and FTPS TLS engine (lib/bambu/ftp-tls.ts) for the demo and the tests'
// convenience. That is allowed here because a real vsftpd configured like the printers plays the printer in the
// interop tests (tests/ftp-vsftpd.test.ts); what the printer does is proven there, not against this simulator.
import { createReadStream, createWriteStream } from "node:fs";
import { mkdir, readdir, rename, rmdir, stat, unlink } from "node:fs/promises";
import { createServer, type Server, type Socket } from "node:net";
import { join, posix } from "node:path";
import type { TLSSocket } from "node:tls";
import { serverTlsOptions } from "../tls.ts";
import { processLogger } from "../log.ts";
import { sameSecret } from "../core/edge.ts";
import {
  createLineSplitter, formatEpsvReply, formatPasvReply, formatReply, parseCommand, quotePath,
} from "../bambu/ftp-codec.ts";
import { createFtpsTls, endWithoutCloseNotify } from "../bambu/ftp-tls.ts";
import { peekClientHelloSessionId, sessionIdOf } from "./ftp-reuse.ts";
import { openSdCard } from "./sdcard.ts";
import type { SimIdentity, SimOptions, SimService, SimStarter } from "./types.ts";

/** vsftpd's max_clients on the printers we know of. */
export const SIM_FTP_DEFAULT_SESSIONS = 2;
/** Printers close an idle control connection after about 5 minutes (vsftpd idle_session_timeout). */
export const SIM_FTP_IDLE_MS = 300_000;
/** How long a transfer command waits for the client's passive data connection (vsftpd accept_timeout). */
export const SIM_FTP_DATA_CONNECT_MS = 10_000;
/** vsftpd's max_login_fails. */
export const SIM_FTP_MAX_LOGIN_FAILS = 3;

export const SESSION_REUSE_REQUIRED = "522 SSL connection failed: session reuse required";

export interface SimFtpService extends SimService {
  /** The directory served as "/" (the SD card, with its folders). */
  readonly root: string;
  /** Control sessions open now, and the most ever open at once (tests prove limits with it). */
  readonly sessions: number;
  readonly peakSessions: number;
  /** Control connections accepted in total (whether or not they logged in). */
  readonly connections: number;
  /** Data connections refused because they did not resume the session. */
  readonly reuseRefusals: number;
}


function listingLine(name: string, size: number, mtime: Date, dir: boolean): string {
  const month = mtime.toLocaleString("en-US", { month: "short", timeZone: "UTC" });
  const day = String(mtime.getUTCDate()).padStart(2, " ");
  const hm = `${String(mtime.getUTCHours()).padStart(2, "0")}:${String(mtime.getUTCMinutes()).padStart(2, "0")}`;
  return `${dir ? "drwxr-xr-x" : "-rw-r--r--"}    1 0        0    ${String(size).padStart(12, " ")} ${month} ${day} ${hm} ${name}`;
}

const mdtm = (d: Date) => d.toISOString().replace(/[-:T]/g, "").slice(0, 14);

export const startSimulatedFtp: SimStarter = async (identity: SimIdentity, options: SimOptions) => {
  const log = processLogger("sim").with({ printer: identity.name, service: "ftp" });
  const card = openSdCard(options.ftpRoot);
  const root = card.root;
  const maxSessions = options.ftpMaxSessions ?? SIM_FTP_DEFAULT_SESSIONS;
  const tls = createFtpsTls(serverTlsOptions(identity.tls, { tls12Only: true }));
  const sockets = new Set<Socket>();
  let sessions = 0;
  let peakSessions = 0;
  let reuseRefusals = 0;
  let connections = 0;

  const control = createServer((raw) => {
    sockets.add(raw);
    connections++;
    raw.on("close", () => sockets.delete(raw));
    raw.on("error", () => {});
    tls.secure(raw).then((socket) => runSession(socket, raw), (e) => log.debug(`control handshake: ${e.message}`));
  });

  function runSession(socket: TLSSocket, raw: Socket) {
    socket.on("error", () => {});
    if (sessions >= maxSessions) {
      socket.end(formatReply(421, "There are too many connected users, please try later."));
      setTimeout(() => raw.destroy(), 100);
      return;
    }
    sessions++;
    peakSessions = Math.max(peakSessions, sessions);
    socket.once("close", () => sessions--);

    const controlSessionId = sessionIdOf(socket);
    let user: string | undefined;
    let loggedIn = false;
    let loginFails = 0;
    let protPrivate = false;
    let cwd = "/";
    let type = "A";
    let rest = 0;
    let renameFrom: string | undefined;
    let passive: { server: Server; socket?: Socket; waiters: ((s: Socket) => void)[] } | undefined;
    let transferAbort: (() => void) | undefined;
    let queue = Promise.resolve();

    const send = (text: string) => {
      if (!socket.destroyed) socket.write(text);
    };
    const reply = (code: number, ...lines: string[]) => send(formatReply(code, ...lines));
    const path = (arg: string) => posix.resolve(cwd, arg || ".");
    const closePassive = () => {
      passive?.server.close();
      passive?.socket?.destroy();
      passive = undefined;
    };
    let idle: ReturnType<typeof setTimeout> | undefined;
    const touch = () => {
      clearTimeout(idle);
      idle = setTimeout(() => {
        reply(421, "Timeout.");
        socket.end();
      }, SIM_FTP_IDLE_MS);
    };
    touch();
    socket.once("close", () => {
      clearTimeout(idle);
      closePassive();
      transferAbort?.();
    });

    const openPassive = async (): Promise<number> => {
      closePassive();
      const server = createServer({ pauseOnConnect: true });
      const state: NonNullable<typeof passive> = { server, waiters: [] };
      passive = state;
      server.on("connection", (data) => {
        sockets.add(data);
        data.on("close", () => sockets.delete(data));
        data.on("error", () => {});
        if (state.socket || data.remoteAddress !== socket.remoteAddress) return void data.destroy();
        state.socket = data;
        server.close();
        for (const w of state.waiters.splice(0)) w(data);
      });
      await new Promise<void>((ok, fail) => {
        server.once("error", fail);
        server.listen(0, identity.host, () => ok());
      });
      return (server.address() as { port: number }).port;
    };

    const dataConnection = (): Promise<Socket | undefined> => {
      const state = passive;
      if (!state) return Promise.resolve(undefined);
      if (state.socket) return Promise.resolve(state.socket);
      return new Promise((resolve) => {
        const timer = setTimeout(() => resolve(undefined), SIM_FTP_DATA_CONNECT_MS);
        state.waiters.push((s) => {
          clearTimeout(timer);
          resolve(s);
        });
      });
    };

    /** 150, then the data connection's TLS handshake (vsftpd begins SSL_accept only after 150). */
    const openData = async (preliminary: string): Promise<{ data: TLSSocket; raw: Socket } | undefined> => {
      if (!passive) return void reply(425, "Use PORT or PASV first.");
      if (!protPrivate) return void reply(522, "Data connections must be encrypted.");
      const raw = await dataConnection();
      if (!raw) {
        closePassive();
        return void reply(425, "Failed to establish connection.");
      }
      passive = undefined;
      reply(150, preliminary);
      const offeredId = await peekClientHelloSessionId(raw);
      let data: TLSSocket;
      try {
        data = await tls.secure(raw);
      } catch (error) {
        return void reply(522, `SSL connection failed: ${(error as Error).message}`);
      }
      const offeredControlSession = Boolean(offeredId?.length && controlSessionId?.equals(offeredId));
      if (!data.isSessionReused() && !offeredControlSession) {
        reuseRefusals++;
        log.info("data connection did not resume the control session: 522");
        data.destroy();
        raw.destroy();
        return void send(SESSION_REUSE_REQUIRED + "\r\n");
      }
      data.on("error", () => {});
      return { data, raw };
    };

    const sendBytes = async (preliminary: string, body: Buffer) => {
      const link = await openData(preliminary);
      if (!link) return;
      link.data.write(body);
      await endWithoutCloseNotify(link.data, link.raw);
      reply(226, "Directory send OK.");
    };

    const listing = async (verb: string, arg: string) => {
      const target = path(arg.replace(/^-\S+\s*/, ""));
      let entries: { name: string; size: number; mtime: Date; dir: boolean }[] = [];
      try {
        const st = await stat(card.hostPath(target));
        if (st.isDirectory()) {
          for (const name of (await readdir(card.hostPath(target))).sort()) {
            const s = await stat(card.hostPath(posix.join(target, name))).catch(() => undefined);
            if (s) entries.push({ name, size: s.size, mtime: s.mtime, dir: s.isDirectory() });
          }
        } else entries = [{ name: posix.basename(target), size: st.size, mtime: st.mtime, dir: false }];
      } catch {
        entries = [];
      }
      const lines = entries.map((e) =>
        verb === "NLST" ? e.name
        : verb === "MLSD" ? `type=${e.dir ? "dir" : "file"};size=${e.size};modify=${mdtm(e.mtime)}; ${e.name}`
        : listingLine(e.name, e.size, e.mtime, e.dir));
      await sendBytes("Here comes the directory listing.", Buffer.from(lines.map((l) => l + "\r\n").join("")));
    };

    const retrieve = async (arg: string) => {
      const file = card.hostPath(path(arg));
      const st = await stat(file).catch(() => undefined);
      if (!st?.isFile()) return reply(550, "Failed to open file.");
      const offset = rest;
      rest = 0;
      const link = await openData(`Opening BINARY mode data connection for ${arg} (${st.size} bytes).`);
      if (!link) return;
      const ok = await new Promise<boolean>((done) => {
        const input = createReadStream(file, { start: offset });
        transferAbort = () => {
          input.destroy();
          link.raw.destroy();
          done(false);
        };
        input.on("error", () => done(false));
        link.data.on("close", () => done(false));
        input.pipe(link.data, { end: false });
        input.on("end", () => done(true));
      });
      transferAbort = undefined;
      if (!ok) return reply(426, "Failure writing network stream.");
      await endWithoutCloseNotify(link.data, link.raw);
      reply(226, "Transfer complete.");
    };

    const store = async (verb: string, arg: string) => {
      const file = card.hostPath(path(arg));
      const offset = rest;
      rest = 0;
      const parent = await stat(join(file, "..")).catch(() => undefined);
      if (!parent?.isDirectory() || (await stat(file).catch(() => undefined))?.isDirectory()) return reply(553, "Could not create file.");
      const link = await openData("Ok to send data.");
      if (!link) return;
      const output = createWriteStream(file, verb === "APPE" ? { flags: "a" } : offset > 0 ? { flags: "r+", start: offset } : { flags: "w" });
      const ok = await new Promise<boolean>((done) => {
        let failed = false;
        transferAbort = () => {
          failed = true;
          link.raw.destroy();
        };
        link.data.on("error", () => (failed = true));
        link.data.pipe(output);
        output.on("error", () => {
          failed = true;
          link.raw.destroy();
          done(false);
        });
        output.on("finish", () => done(!failed));
        link.data.on("close", () => {
          if (failed) output.end();
        });
      });
      transferAbort = undefined;
      link.raw.destroy();
      if (!ok || options.ftpUpload426) return reply(426, "Failure reading network stream.");
      reply(226, "Transfer complete.");
    };

    const command = async (line: string) => {
      touch();
      const { verb, arg } = parseCommand(line);
      if (!loggedIn && !["USER", "PASS", "QUIT", "FEAT", "OPTS", "PBSZ", "PROT", "AUTH", "SYST", "NOOP"].includes(verb)) {
        return reply(530, "Please login with USER and PASS.");
      }
      switch (verb) {
        case "USER":
          if (loggedIn) return reply(530, "Can't change to another user.");
          user = arg;
          return reply(331, "Please specify the password.");
        case "PASS": {
          if (loggedIn) return reply(230, "Already logged in.");
          if (user === undefined) return reply(503, "Login with USER first.");
          if (user === "bblp" && sameSecret(arg, identity.accessCode)) {
            loggedIn = true;
            return reply(230, "Login successful.");
          }
          loginFails++;
          reply(530, "Login incorrect.");
          if (loginFails >= SIM_FTP_MAX_LOGIN_FAILS) socket.end();
          return;
        }
        case "AUTH":
          return reply(534, "Already in implicit TLS.");
        case "PBSZ":
          return reply(200, "PBSZ set to 0.");
        case "PROT":
          if (arg.toUpperCase() === "P") protPrivate = true;
          else if (arg.toUpperCase() === "C") protPrivate = false;
          else return reply(536, "Bad PROT command.");
          return reply(200, `PROT now ${protPrivate ? "Private" : "Clear"}.`);
        case "FEAT":
          return reply(211, "Features:", " EPSV", " MDTM", " PASV", " PBSZ", " PROT", " REST STREAM", " SIZE", " TVFS", " UTF8", "End");
        case "SYST":
          return reply(215, "UNIX Type: L8");
        case "OPTS":
          return /^utf8 on$/i.test(arg.trim()) ? reply(200, "Always in UTF8 mode.") : reply(501, "Option not understood.");
        case "NOOP":
          return reply(200, "NOOP ok.");
        case "QUIT":
          reply(221, "Goodbye.");
          socket.end();
          return;
        case "PWD":
        case "XPWD":
          return reply(257, `${quotePath(cwd)} is the current directory`);
        case "CWD":
        case "XCWD":
        case "CDUP":
        case "XCUP": {
          const target = verb.endsWith("UP") ? posix.resolve(cwd, "..") : path(arg);
          const st = await stat(card.hostPath(target)).catch(() => undefined);
          if (!st?.isDirectory()) return reply(550, "Failed to change directory.");
          cwd = target;
          return reply(250, "Directory successfully changed.");
        }
        case "TYPE": {
          const t = arg.trim().toUpperCase();
          if (t === "I" || t === "L 8") type = "I";
          else if (t === "A" || t === "A N") type = "A";
          else return reply(500, "Unrecognised TYPE command.");
          return reply(200, `Switching to ${type === "I" ? "Binary" : "ASCII"} mode.`);
        }
        case "MODE":
          return arg.trim().toUpperCase() === "S" ? reply(200, "Mode set to S.") : reply(504, "Bad MODE command.");
        case "STRU":
          return arg.trim().toUpperCase() === "F" ? reply(200, "Structure set to F.") : reply(504, "Bad STRU command.");
        case "PASV": {
          const port = await openPassive();
          return send(formatPasvReply(options.ftpPasvAddress ?? identity.host, port));
        }
        case "EPSV":
          if (options.ftpRefuseEpsv) return reply(500, "Unknown command.");
          if (arg.trim().toUpperCase() === "ALL") return reply(200, "EPSV ALL ok.");
          return send(formatEpsvReply(await openPassive()));
        case "REST": {
          const n = Number(arg.trim());
          if (!Number.isSafeInteger(n) || n < 0) return reply(501, "Bad REST command.");
          rest = n;
          return reply(350, `Restart position accepted (${n}).`);
        }
        case "SIZE": {
          const st = await stat(card.hostPath(path(arg))).catch(() => undefined);
          return st?.isFile() ? reply(213, String(st.size)) : reply(550, "Could not get file size.");
        }
        case "MDTM": {
          const st = await stat(card.hostPath(path(arg))).catch(() => undefined);
          return st?.isFile() ? reply(213, mdtm(st.mtime)) : reply(550, "Could not get file modification time.");
        }
        case "DELE":
          return unlink(card.hostPath(path(arg))).then(() => reply(250, "Delete operation successful."), () => reply(550, "Delete operation failed."));
        case "MKD":
        case "XMKD":
          return mkdir(card.hostPath(path(arg))).then(() => reply(257, `${quotePath(path(arg))} created`), () => reply(550, "Create directory operation failed."));
        case "RMD":
        case "XRMD":
          return rmdir(card.hostPath(path(arg))).then(() => reply(250, "Remove directory operation successful."), () => reply(550, "Remove directory operation failed."));
        case "RNFR": {
          const st = await stat(card.hostPath(path(arg))).catch(() => undefined);
          if (!st) return reply(550, "RNFR command failed.");
          renameFrom = path(arg);
          return reply(350, "Ready for RNTO.");
        }
        case "RNTO": {
          if (!renameFrom) return reply(503, "RNFR required first.");
          const from = renameFrom;
          renameFrom = undefined;
          return rename(card.hostPath(from), card.hostPath(path(arg))).then(() => reply(250, "Rename successful."), () => reply(550, "Rename failed."));
        }
        case "ABOR":
          return reply(225, "No transfer to ABOR.");
        case "LIST":
        case "NLST":
        case "MLSD":
          return listing(verb, arg);
        case "RETR":
          return retrieve(arg);
        case "STOR":
        case "APPE":
          return store(verb, arg);
        default:
          // PORT and EPRT included: the printers' vsftpd has port_enable off.
          return reply(500, "Unknown command.");
      }
    };

    reply(220, "(vsFTPd 3.0.5)");
    socket.on("data", createLineSplitter(
      (line) => {
        if (/^\s*ABOR\s*$/i.test(line) && transferAbort) {
          transferAbort();
          queue = queue.then(() => reply(226, "ABOR successful."));
          return;
        }
        queue = queue.then(() => command(line)).catch((e) => {
          log.warn(`command failed: ${(e as Error).message}`);
          reply(451, "Local error.");
        });
      },
      () => {
        reply(500, "Input line too long.");
        socket.end();
      },
    ));
  }

  await new Promise<void>((ok, fail) => {
    control.once("error", (e: NodeJS.ErrnoException) => fail(new Error(`simulator ${identity.name}: cannot listen for FTPS on ${identity.host}:${identity.ports.ftp}: ${e.message}`)));
    control.listen({ host: identity.host, port: identity.ports.ftp, exclusive: true }, () => ok());
  });

  const service: SimFtpService = {
    name: "ftp",
    root,
    get sessions() {
      return sessions;
    },
    get peakSessions() {
      return peakSessions;
    },
    get connections() {
      return connections;
    },
    get reuseRefusals() {
      return reuseRefusals;
    },
    async stop() {
      await new Promise<void>((done) => {
        control.close(() => done());
        for (const s of sockets) s.destroy();
        setTimeout(done, 500).unref?.();
      });
      tls.close();
      card.remove();
    },
  };
  return service;
};


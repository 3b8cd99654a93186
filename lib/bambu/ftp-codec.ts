// FTP control-channel wire format, as pure functions: command lines, replies (single and multi-line), and the
// data-address arguments of PASV/EPSV/PORT/EPRT. Shared by the FTPS proxy and the simulated printer.
import { StringDecoder } from "node:string_decoder";

/** Longest command line we accept; vsftpd's own limit is 4096 bytes. */
export const MAX_COMMAND_LINE = 4096;

export interface FtpCommand {
  /** Upper-cased verb: "STOR", "PASV", … */
  verb: string;
  /** Everything after the first space, unchanged (paths may contain spaces). */
  arg: string;
}

export interface FtpReply {
  code: number;
  /** Every line of the reply as received, without CRLF (one for a single-line reply). */
  lines: string[];
}

export interface HostPort {
  host: string;
  port: number;
}

export function parseCommand(line: string): FtpCommand {
  const space = line.indexOf(" ");
  const verb = (space < 0 ? line : line.slice(0, space)).trim().toUpperCase();
  return { verb, arg: space < 0 ? "" : line.slice(space + 1) };
}

/** One reply on the wire; several lines become the `code-` … `code ` multi-line form. */
export function formatReply(code: number, ...lines: string[]): string {
  if (lines.length <= 1) return `${code} ${lines[0] ?? ""}\r\n`;
  const last = lines.length - 1;
  return lines.map((l, i) => (i === 0 ? `${code}-${l}` : i === last ? `${code} ${l}` : l)).join("\r\n") + "\r\n";
}

/** A reply exactly as it arrived (for passing the printer's replies through unchanged). */
export function replyText(reply: FtpReply): string {
  return reply.lines.join("\r\n") + "\r\n";
}

/** The reply's text after the code on its last line: "Entering Passive Mode (…)." */
export function replyMessage(reply: FtpReply): string {
  return reply.lines.map((l, i) => (i === 0 || i === reply.lines.length - 1 ? l.slice(4) : l)).join("\n");
}

/**
 * Splits a byte stream into CRLF (or bare LF) lines; a line longer than MAX_COMMAND_LINE (its CR included) calls
 * onTooLong once, wherever the chunks were cut, and nothing after it is read (the caller closes).
 */
export function createLineSplitter(onLine: (line: string) => void, onTooLong: () => void): (chunk: Buffer) => void {
  let pending = "";
  let refused = false;
  // A UTF-8 character split across two TLS records must not become U+FFFD.
  const decoder = new StringDecoder("utf8");
  return (chunk) => {
    if (refused) return;
    pending += decoder.write(chunk);
    let nl: number;
    // A long line that arrives whole, line end and all, is refused like one that is still arriving.
    while ((nl = pending.indexOf("\n")) >= 0 && nl <= MAX_COMMAND_LINE) {
      const line = pending.slice(0, nl).replace(/\r$/, "");
      pending = pending.slice(nl + 1);
      onLine(line);
    }
    if (nl > MAX_COMMAND_LINE || pending.length > MAX_COMMAND_LINE) {
      pending = "";
      refused = true;
      onTooLong();
    }
  };
}

/** Assembles reply lines into replies: `123-first`, any lines, then `123 last`. */
export function createReplyAssembler(onReply: (reply: FtpReply) => void): (line: string) => void {
  let open: FtpReply | undefined;
  return (line) => {
    if (open) {
      open.lines.push(line);
      if (line.startsWith(`${open.code} `) || line === String(open.code)) {
        const done = open;
        open = undefined;
        onReply(done);
      }
      return;
    }
    // RFC 959 4.2: the first digit is 1-5. A "090-" must not open a reply whose end ("90 ") never comes.
    const m = /^([1-5]\d\d)([ -]?)/.exec(line);
    if (!m) return; // noise between replies: ignore, as FTP clients do
    const code = Number(m[1]);
    if (m[2] === "-") open = { code, lines: [line] };
    else onReply({ code, lines: [line] });
  };
}

/** `227 Entering Passive Mode (192,168,1,18,7,234).` -> host and port. */
export function parsePasvReply(text: string): HostPort | undefined {
  const m = /(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3})/.exec(text);
  if (!m) return undefined;
  const n = m.slice(1).map(Number);
  if (n.some((v) => v > 255)) return undefined;
  return { host: n.slice(0, 4).join("."), port: n[4]! * 256 + n[5]! };
}

/** `229 Entering Extended Passive Mode (|||2026|)` -> port. */
export function parseEpsvReply(text: string): number | undefined {
  const m = /\((.)\1\1(\d{1,5})\1\)/.exec(text);
  const port = m ? Number(m[2]) : NaN;
  return port > 0 && port < 65536 ? port : undefined;
}

export function formatPasvReply(host: string, port: number): string {
  return formatReply(227, `Entering Passive Mode (${host.split(".").join(",")},${port >> 8},${port & 255}).`);
}

export function formatEpsvReply(port: number): string {
  return formatReply(229, `Entering Extended Passive Mode (|||${port}|)`);
}

/** PORT argument `h1,h2,h3,h4,p1,p2`. */
export function parsePortArg(arg: string): HostPort | undefined {
  const parts = arg.trim().split(",");
  if (parts.length !== 6 || parts.some((p) => !/^\d{1,3}$/.test(p))) return undefined;
  const n = parts.map(Number);
  if (n.some((v) => v > 255)) return undefined;
  const port = n[4]! * 256 + n[5]!;
  return port > 0 ? { host: n.slice(0, 4).join("."), port } : undefined;
}

/** EPRT argument `|1|132.235.1.2|6275|` (protocol 1 = IPv4, 2 = IPv6). */
export function parseEprtArg(arg: string): (HostPort & { family: 4 | 6 }) | undefined {
  const text = arg.trim();
  const d = text[0];
  if (!d || text.length < 7 || text[text.length - 1] !== d) return undefined;
  const parts = text.slice(1, -1).split(d);
  if (parts.length !== 3) return undefined;
  const [proto, host, portText] = parts as [string, string, string];
  const port = Number(portText);
  if (!(port > 0 && port < 65536) || !/^\d+$/.test(portText) || !host) return undefined;
  if (proto === "1" && /^\d{1,3}(\.\d{1,3}){3}$/.test(host)) return { host, port, family: 4 };
  if (proto === "2" && host.includes(":")) return { host, port, family: 6 };
  return undefined;
}

/** The quoted path in a 257 reply: `257 "/model" is the current directory`. */
export function parseQuotedPath(text: string): string | undefined {
  const m = /"((?:[^"]|"")*)"/.exec(text);
  return m ? m[1]!.replace(/""/g, '"') : undefined;
}

export function quotePath(path: string): string {
  return `"${path.replace(/"/g, '""')}"`;
}

// Shared by the FTP tests: run a third-party client and collect what it printed; a raw FTPS control connection.
import { connect as tlsConnect, type TLSSocket } from "node:tls";

export async function run(cmd: string[]): Promise<{ code: number; out: string; err: string }> {
  const p = Bun.spawn(cmd, { stdout: "pipe", stderr: "pipe" });
  const [out, err] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text()]);
  return { code: await p.exited, out, err };
}

export interface RawControl {
  socket: TLSSocket;
  /** Everything received so far. */
  readonly text: string;
  send(...lines: string[]): void;
  /** Waits (at most about 10 s) until the received text matches `re`; returns the match or undefined. */
  waitFor(re: RegExp): Promise<RegExpExecArray | undefined>;
  /** Waits (at most about 10 s) until `re` (global) matches `count` times; returns every match so far. */
  waitForCount(re: RegExp, count: number): Promise<RegExpExecArray[]>;
  close(): void;
}

/** An implicit-TLS control connection driven line by line, for checking exact replies. */
export function rawControl(host: string, port = 990): RawControl {
  const socket = tlsConnect({ host, port, rejectUnauthorized: false });
  socket.on("error", () => {});
  let text = "";
  socket.on("data", (b: Buffer) => (text += b.toString()));
  return {
    socket,
    get text() {
      return text;
    },
    send: (...lines) => void socket.write(lines.map((l) => l + "\r\n").join("")),
    async waitFor(re) {
      for (let i = 0; i < 400 && !re.test(text); i++) await Bun.sleep(25);
      return re.exec(text) ?? undefined;
    },
    async waitForCount(re, count) {
      for (let i = 0; i < 400 && [...text.matchAll(re)].length < count; i++) await Bun.sleep(25);
      return [...text.matchAll(re)];
    },
    close: () => socket.destroy(),
  };
}

// Shared by the flashforge-*.test.ts files: a printer entry pointing at a simulated Adventurer 5M, and the
// ServiceContext a FlashForge service is built from. Addresses: 127.0.7.0/24 only.
import { parseConfig, type PrinterConfig } from "../lib/config.ts";
import { createMetrics } from "../lib/core/metrics.ts";
import { createPrinterHub, type ServiceContext } from "../lib/core/service.ts";
import { serviceLogger } from "../lib/log.ts";
import type { SimFlashforge } from "../lib/sim/flashforge/index.ts";

export function flashforgeContext(sim: SimFlashforge, bind: string, extra = ""): ServiceContext {
  const { identity } = sim;
  const p = identity.ports;
  const config = parseConfig(`
[web]
listen = ""
[[printer]]
name = "ff5m"
type = "flashforge"
host = "${identity.host}"
serial = "${identity.serial}"
check_code = "${identity.checkCode}"
bind = "${bind}"
printer_ports = { tcp = ${p.tcp}, http = ${p.http}, discovery = ${p.discovery}, camera = ${p.camera} }
${extra}
`);
  const printer: PrinterConfig = config.printers[0]!;
  return {
    printer, proxy: config.proxy, tls: { key: "", cert: "", ca: "" }, log: serviceLogger(printer.name, "printer"),
    metrics: createMetrics(), hub: createPrinterHub(),
  };
}

/** A raw TCP client of the console: sends lines, reads replies up to (and including) the "ok" line. */
export async function consoleClient(host: string, port: number) {
  const { connect } = await import("node:net");
  const socket = connect({ host, port });
  await new Promise<void>((resolve, reject) => {
    socket.once("connect", () => resolve());
    socket.once("error", reject);
  });
  let buffer: Buffer = Buffer.alloc(0);
  let wake: (() => void) | undefined;
  let closed = false;
  socket.on("data", (c: Buffer) => {
    buffer = Buffer.concat([buffer, c]);
    wake?.();
  });
  socket.on("close", () => {
    closed = true;
    wake?.();
  });
  socket.on("error", () => {});
  const waitFor = async (ready: () => number, timeoutMs = 5_000): Promise<Buffer> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const end = ready();
      if (end >= 0) {
        const out = buffer.subarray(0, end);
        buffer = buffer.subarray(end);
        return out;
      }
      if (closed) throw new Error("connection closed");
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out; have ${JSON.stringify(buffer.toString("latin1").slice(0, 200))}`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, left);
        wake = () => {
          clearTimeout(t);
          r();
        };
      });
    }
  };
  return {
    socket,
    send: (line: string) => socket.write(`${line}\r\n`),
    /** Text up to and including "ok\r\n". */
    readText: () =>
      waitFor(() => {
        const i = buffer.indexOf("\nok\r\n");
        return i === -1 ? -1 : i + 5;
      }).then((b) => b.toString("latin1")),
    readBytes: (n: number) => waitFor(() => (buffer.length >= n ? n : -1)),
    get closed() {
      return closed;
    },
    waitClosed: (timeoutMs = 5_000) => waitFor(() => (closed ? 0 : -1), timeoutMs).catch((e) => (closed ? Buffer.alloc(0) : Promise.reject(e))),
    close: () => socket.destroy(),
  };
}

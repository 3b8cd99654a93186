import { afterEach, describe, expect, test } from "bun:test";
import { createServer as createTcpServer, type Server } from "node:net";
import { createServer as createTlsServer, type TLSSocket } from "node:tls";
import { parseConfig, type PrinterConfig } from "../lib/config.ts";
import { createPrinterHub } from "../lib/core/service.ts";
import { detectCamera, knownCamera, probeChamber, probeRtsp } from "../lib/bambu/detect.ts";
import { simulatedPrinterTls } from "../lib/sim/tls.ts";
import { testStateDir } from "./support.ts";

const PRINTER = "127.0.6.20";
const CHAMBER_PORT = 46000;
const RTSP_PORT = 46322;
const PROBE_MS = 1_000;
const STATE = testStateDir();

function printer(lines: string): PrinterConfig {
  return parseConfig(
    `[proxy]\nstate_dir = "${STATE}"\n[[printer]]\nname = "p"\nhost = "${PRINTER}"\naccess_code = "12345678"\nprinter_ports = { chamber = ${CHAMBER_PORT}, rtsp = ${RTSP_PORT} }\n${lines}`,
  ).printers[0]!;
}
const unknownPrinter = () => printer('serial = "ZZZ00A000000001"');

const servers: Server[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => new Promise<void>((r) => s.close(() => r()))));
});

/** A TLS listener on the printer's address that answers with `onClient`. */
async function fakeTls(port: number, onClient: (socket: TLSSocket) => void): Promise<void> {
  const tls = simulatedPrinterTls("ZZZ00A000000001");
  const server = createTlsServer({ key: tls.key, cert: tls.cert }, (socket) => {
    socket.on("error", () => undefined);
    onClient(socket);
  });
  await new Promise<void>((r) => server.listen(port, PRINTER, () => r()));
  servers.push(server);
}

/** Reads the 80-byte camera login, then calls `answer`. */
function afterLogin(socket: TLSSocket, answer: () => void): void {
  let have = 0;
  socket.on("data", (chunk: Buffer) => {
    const before = have;
    have += chunk.length;
    if (before < 80 && have >= 80) answer();
  });
}

describe("camera detection without the network", () => {
  test("`camera = …` wins over everything", () => {
    expect(knownCamera(printer('serial = "01P00A000000001"\ncamera = "rtsp"'))).toBe("rtsp");
    expect(knownCamera(printer('serial = "00M00A000000001"\ncamera = "none"'))).toBe("none");
  });

  test("by configured model", async () => {
    expect(await detectCamera(printer('serial = "ZZZ00A000000001"\nmodel = "X1C"'))).toBe("rtsp");
    expect(await detectCamera(printer('serial = "ZZZ00A000000001"\nmodel = "A1 mini"'))).toBe("chamber");
    expect(await detectCamera(printer('serial = "ZZZ00A000000001"\nmodel = "H2D"'))).toBe("rtsp");
    // A configured model beats a serial prefix of another model (a replaced board changes the serial).
    expect(await detectCamera(printer('serial = "00M00A000000001"\nmodel = "P1S"'))).toBe("chamber");
  });

  test("by serial prefix", async () => {
    expect(await detectCamera(printer('serial = "01P00A000000001"'))).toBe("chamber");
    expect(await detectCamera(printer('serial = "00M09A350100123"'))).toBe("rtsp");
    expect(await detectCamera(printer('serial = "22E00A000000001"'))).toBe("rtsp");
    expect(await detectCamera(printer('serial = "03900A000000001"'))).toBe("chamber");
  });

  test("by what the printer reported (model code from SSDP, product name from get_version)", async () => {
    const hub = createPrinterHub();
    hub.update({ modelCode: "N2S" });
    expect(await detectCamera(unknownPrinter(), hub)).toBe("chamber");
    const hub2 = createPrinterHub();
    hub2.update({ productName: "Bambu Lab X1 Carbon" });
    expect(await detectCamera(unknownPrinter(), hub2)).toBe("rtsp");
  });

  test("probe: false answers none for an unknown printer without connecting", async () => {
    expect(await detectCamera(unknownPrinter(), undefined, { probe: false })).toBe("none");
  });
});

describe("camera detection by probing the printer", () => {
  test("an RTSP server on 322 answering OPTIONS means rtsp", async () => {
    await fakeTls(RTSP_PORT, (socket) =>
      socket.once("data", (request: Buffer) => {
        expect(request.toString()).toStartWith(`OPTIONS rtsps://${PRINTER}:${RTSP_PORT}/streaming/live/1 RTSP/1.0\r\n`);
        socket.end("RTSP/1.0 200 OK\r\nCSeq: 1\r\nPublic: OPTIONS, DESCRIBE, SETUP, TEARDOWN, PLAY\r\n\r\n");
      }),
    );
    expect(await probeRtsp(unknownPrinter(), PROBE_MS)).toBe(true);
    expect(await detectCamera(unknownPrinter(), undefined, { timeoutMs: PROBE_MS })).toBe("rtsp");
  });

  test("a TLS server on 322 that is not RTSP is not an RTSP camera", async () => {
    await fakeTls(RTSP_PORT, (socket) => socket.once("data", () => socket.end("HTTP/1.1 400 Bad Request\r\n\r\n")));
    expect(await probeRtsp(unknownPrinter(), PROBE_MS)).toBe(false);
  });

  test("chamber frames after the 80-byte login mean chamber", async () => {
    let login: Buffer | undefined;
    await fakeTls(CHAMBER_PORT, (socket) => {
      socket.once("data", (chunk: Buffer) => (login = chunk));
      afterLogin(socket, () => {
        const jpeg = Buffer.from([0xff, 0xd8, 1, 2, 3, 0xff, 0xd9]);
        const header = Buffer.alloc(16);
        header.writeUInt32LE(jpeg.length, 0);
        header.writeUInt32LE(1, 8);
        socket.write(header);
        socket.write(jpeg);
      });
    });
    expect(await probeChamber(unknownPrinter(), PROBE_MS)).toBe("chamber");
    expect(login?.readUInt32LE(0)).toBe(0x40);
    expect(login?.readUInt32LE(4)).toBe(0x3000);
    expect(login?.subarray(16, 20).toString()).toBe("bblp");
    expect(await detectCamera(unknownPrinter(), undefined, { timeoutMs: PROBE_MS })).toBe("chamber");
  });

  test("the file tunnel's short ack to the camera login means an RTSP-camera model", async () => {
    await fakeTls(CHAMBER_PORT, (socket) =>
      afterLogin(socket, () => {
        const ack = Buffer.alloc(24);
        ack.writeUInt32LE(8, 0);
        ack.writeUInt32LE(0x0001013f, 4);
        socket.end(ack);
      }),
    );
    expect(await probeChamber(unknownPrinter(), PROBE_MS)).toBe("tunnel");
    expect(await detectCamera(unknownPrinter(), undefined, { timeoutMs: PROBE_MS })).toBe("rtsp");
  });

  test("nothing listening means none (so the caller retries later)", async () => {
    expect(await detectCamera(unknownPrinter(), undefined, { timeoutMs: PROBE_MS })).toBe("none");
  });

  test("a port that accepts TCP but never starts TLS (all camera slots taken) means none within the timeout", async () => {
    for (const port of [CHAMBER_PORT, RTSP_PORT]) {
      const server = createTcpServer((socket) => socket.on("error", () => undefined));
      await new Promise<void>((r) => server.listen(port, PRINTER, () => r()));
      servers.push(server);
    }
    expect(await detectCamera(unknownPrinter(), undefined, { timeoutMs: 300 })).toBe("none");
  });
});

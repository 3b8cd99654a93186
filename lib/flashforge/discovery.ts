// FlashForge UDP discovery (48899): answers a probe with this printer's name and serial from the proxy's own
// address, so FlashPrint, Orca and ff-5mp-api list the proxy as the printer. The reply is the printer's own
// (asked once and cached), with name, serial and ports changed; synthesized if the printer does not answer.
import { createSocket, type Socket as UdpSocket, type RemoteInfo } from "node:dgram";
import { createAllowList } from "../core/allow.ts";
import type { Service, ServiceContext } from "../core/service.ts";
import { serviceLogger } from "../log.ts";
import { encodeDiscoveryReply, rewriteDiscoveryReply, DISCOVERY_REPLY_BYTES } from "./discovery-codec.ts";

/** How long the printer's own reply is reused before it is asked again. */
export const PRINTER_REPLY_TTL_MS = 60_000;
export const PRINTER_PROBE_TIMEOUT_MS = 1_000;
/** Replies per second at most: a reply is 14x a probe, so we do not become a flood amplifier. */
export const MAX_REPLIES_PER_SECOND = 20;
export const MAX_PROBE_BYTES = 1_024;
/** The 20-byte probe ff-5mp-api sends ("www.usr" ...); the printer answers any datagram. */
const DEFAULT_PROBE = Buffer.from("7777772e75737222" + "65" + "36c0" + "00".repeat(9), "hex");
/** Used only when the printer never answered: FlashForge's USB vendor id; the rest unknown, so zero. */
const FALLBACK_VENDOR_ID = 0x2b71;

export function createFlashforgeDiscovery(ctx: ServiceContext): Service {
  const { printer } = ctx;
  const log = serviceLogger(printer.name, "discovery");
  const allowList = createAllowList(printer.allow);
  const sockets: UdpSocket[] = [];
  let replySocket: UdpSocket | undefined;
  let cached: { reply: Buffer; at: number } | undefined;
  let asking: Promise<Buffer | undefined> | undefined;
  let windowStart = 0;
  let windowCount = 0;
  let warnedSynthesized = false;
  let listening = false;
  let error: string | undefined;
  const answered = ctx.metrics.counter("pandaproxy_flashforge_discovery_replies_total", "Discovery probes answered", { printer: printer.name });

  const askPrinter = (probe: Buffer): Promise<Buffer | undefined> => {
    asking ??= new Promise<Buffer | undefined>((resolve) => {
      const socket = createSocket("udp4");
      const done = (reply: Buffer | undefined) => {
        clearTimeout(timer);
        socket.close();
        asking = undefined;
        resolve(reply);
      };
      const timer = setTimeout(() => done(undefined), PRINTER_PROBE_TIMEOUT_MS);
      socket.on("error", () => done(undefined));
      socket.on("message", (reply, from) => {
        if (from.address === printer.host && reply.length >= DISCOVERY_REPLY_BYTES) done(Buffer.from(reply));
      });
      socket.send(probe.length ? probe : DEFAULT_PROBE, printer.printerPorts.discovery, printer.host);
    });
    return asking;
  };

  const replyFor = async (probe: Buffer): Promise<Buffer> => {
    const changes = { name: printer.name, serial: printer.serial, commandPort: printer.ports.tcp, httpPort: printer.ports.http };
    if (!cached || Date.now() - cached.at > PRINTER_REPLY_TTL_MS) {
      const fresh = await askPrinter(probe);
      if (fresh) cached = { reply: fresh, at: Date.now() };
    }
    if (cached) return rewriteDiscoveryReply(cached.reply, changes);
    if (!warnedSynthesized) {
      warnedSynthesized = true;
      log.warn(`the printer at ${printer.host}:${printer.printerPorts.discovery} does not answer discovery; answering with a reply made from printers.toml`);
    }
    return encodeDiscoveryReply({ ...changes, vendorId: FALLBACK_VENDOR_ID, productId: 0, productType: 0, status: 0 });
  };

  const onProbe = (probe: Buffer, from: RemoteInfo) => {
    if (!allowList.admit(from.address, log, "FlashForge discovery", from.port)) return;
    if (probe.length > MAX_PROBE_BYTES) return log.with({ peer: `${from.address}:${from.port}` }).debug(`ignored a ${probe.length}-byte datagram (probes are small)`);
    const now = Date.now();
    if (now - windowStart >= 1_000) {
      windowStart = now;
      windowCount = 0;
    }
    if (++windowCount > MAX_REPLIES_PER_SECOND) {
      if (windowCount === MAX_REPLIES_PER_SECOND + 1) log.with({ peer: `${from.address}:${from.port}` }).warn(`more than ${MAX_REPLIES_PER_SECOND} probes a second; ignoring the rest of this second`);
      return;
    }
    const peerLog = log.with({ peer: `${from.address}:${from.port}` });
    replyFor(probe).then((reply) => {
      // Sent from the printer's bind address: clients take the printer's address from the reply's source.
      replySocket?.send(reply, from.port, from.address, (e) => {
        if (e) peerLog.debug(`reply not sent: ${e.message}`);
        else answered.inc();
      });
    }).catch((e) => peerLog.warn(`no discovery reply: ${(e as Error).message}`));
  };

  const bind = (address: string) =>
    new Promise<UdpSocket>((resolve, reject) => {
      const socket = createSocket({ type: "udp4", reuseAddr: true });
      socket.once("error", reject);
      socket.bind(printer.ports.discovery, address, () => {
        socket.off("error", reject);
        socket.on("error", (e) => log.warn(`discovery socket on ${address}: ${e.message}`));
        socket.on("message", onProbe);
        resolve(socket);
      });
    });

  return {
    name: "discovery",
    async start() {
      try {
        replySocket = await bind(printer.bind);
        replySocket.setBroadcast(true);
        sockets.push(replySocket);
        // On Linux a socket bound to one address never sees broadcasts; a second, wildcard socket catches them.
        if (printer.bind !== "0.0.0.0") sockets.push(await bind("0.0.0.0"));
        listening = true;
      } catch (e) {
        error = `cannot listen for FlashForge discovery on udp ${printer.bind}:${printer.ports.discovery}: ${(e as Error).message}`;
        for (const s of sockets.splice(0)) s.close();
        throw new Error(error);
      }
    },
    async stop() {
      listening = false;
      for (const s of sockets.splice(0)) await new Promise<void>((resolve) => s.close(() => resolve()));
      replySocket = undefined;
    },
    status: () => ({
      state: error ? `error: ${error}` : listening ? "listening" : "stopped",
      clients: 0,
      upstream: cached ? "printer answered" : "no answer yet",
      details: { answered: answered.value },
    }),
  };
}

// Makes slicers find the proxy: announces each printer over SSDP (UDP 2021) as the printer itself does, with
// the proxy's address as Location, answers M-SEARCH, and learns model and firmware from the printer's own
// announcements.
import { createSocket, type RemoteInfo, type Socket as UdpSocket } from "node:dgram";
import { networkInterfaces } from "node:os";
import type { PrinterConfig } from "../config.ts";
import { createAllowList } from "../core/allow.ts";
import type { PrinterHub, Service, ServiceContext, ServiceStatus } from "../core/service.ts";
import { serviceLogger } from "../log.ts";
import { advertisedIdentity } from "./bind.ts";
import { announcementOf, encodeNotify, encodeSearchResponse, isBambuSearch, parseSsdp, type BambuAnnouncement } from "./ssdp-message.ts";

/** Printers announce about every 5 s. */
export const SSDP_ANNOUNCE_INTERVAL_MS = 5_000;
/** A printer reports its Wi-Fi signal; the proxy is wired, so a steady good value. */
export const PROXY_SIGNAL = "-44";

export interface SsdpServiceOptions {
  intervalMs?: number;
  /** Listen on the SSDP port(s) to answer M-SEARCH and learn the printer's announcements (default true). */
  listen?: boolean;
}

/** The address of this host that a LAN client most likely reaches: the first non-internal IPv4. */
export function primaryIPv4(): string | undefined {
  for (const addresses of Object.values(networkInterfaces())) {
    for (const a of addresses ?? []) if (a.family === "IPv4" && !a.internal) return a.address;
  }
  return undefined;
}

/** Where slicers should connect for this printer: its bind address, or this host's primary address. */
export function proxyAddress(printer: Pick<PrinterConfig, "bind">): string {
  return printer.bind !== "0.0.0.0" ? printer.bind : (primaryIPv4() ?? "127.0.0.1");
}

/** The announcement the proxy sends for a printer; undefined while its model code is unknown. */
export function proxyAnnouncement(printer: PrinterConfig, hub?: PrinterHub): BambuAnnouncement | undefined {
  const identity = advertisedIdentity(printer, hub);
  if (!identity.modelCode) return undefined;
  return {
    location: proxyAddress(printer),
    serial: identity.serial,
    modelCode: identity.modelCode,
    name: identity.name,
    version: identity.firmware,
    signal: PROXY_SIGNAL,
    connect: "lan",
    bind: "free",
    seclink: "secure",
    inf: "",
    cap: "1",
  };
}

function bindUdp(socket: UdpSocket, port: number, address: string): Promise<void> {
  return new Promise((resolve, reject) => {
    socket.once("error", reject);
    socket.bind(port, address, () => {
      socket.off("error", reject);
      resolve();
    });
  });
}

export function createSsdpService(ctx: ServiceContext, options: SsdpServiceOptions = {}): Service {
  const { printer, hub } = ctx;
  const log = serviceLogger(printer.name, "ssdp");
  const allowList = createAllowList(printer.allow);
  const intervalMs = options.intervalMs ?? SSDP_ANNOUNCE_INTERVAL_MS;
  let sender: UdpSocket | undefined;
  let listeners: UdpSocket[] = [];
  let timer: ReturnType<typeof setInterval> | undefined;
  let announced = 0;
  let searchesAnswered = 0;
  let learnedFrom: string | undefined;
  let waitingLogged = false;
  let listenProblem: string | undefined;
  const sendErrors = new Map<string, string>();

  const announce = () => {
    const announcement = proxyAnnouncement(printer, hub);
    if (!announcement) {
      if (!waitingLogged) {
        waitingLogged = true;
        log.warn(`not announcing yet: the model of serial ${printer.serial} is unknown (set \`model\` in printers.toml, or wait for MQTT or the printer's own announcement)`);
      }
      return;
    }
    const datagram = encodeNotify(announcement);
    for (const target of printer.ssdpTargets) {
      sender?.send(datagram, printer.ports.ssdp, target, (error) => {
        const previous = sendErrors.get(target);
        if (error) {
          if (previous !== error.message) log.warn(`cannot announce to ${target}:${printer.ports.ssdp}: ${error.message}`);
          sendErrors.set(target, error.message);
        } else {
          if (previous) log.info(`announcing to ${target}:${printer.ports.ssdp} again`);
          sendErrors.delete(target);
          announced++;
        }
      });
    }
  };

  const onDatagram = (datagram: Buffer, from: RemoteInfo) => {
    // The printer's own announcements are heard whatever `allow` says; everyone else must be allowed.
    const fromPrinter = from.address === printer.host;
    if (!fromPrinter && !allowList.admit(from.address, log, "SSDP", from.port)) return;
    const message = parseSsdp(datagram);
    if (!message) return;
    if (isBambuSearch(message)) {
      const announcement = proxyAnnouncement(printer, hub);
      if (!announcement || !sender) return;
      sender.send(encodeSearchResponse(announcement), from.port, from.address, (error) => {
        if (error) log.with({ peer: `${from.address}:${from.port}` }).info(`cannot answer M-SEARCH: ${error.message}`);
        else searchesAnswered++;
      });
      return;
    }
    const heard = announcementOf(message);
    // Only the printer itself: not our own announcements, nor another proxy's for this serial.
    if (!heard || heard.serial !== printer.serial) return;
    if (!fromPrinter) {
      // Anyone on the LAN can send a datagram naming the printer's serial and address: only its own counts.
      log.with({ peer: `${from.address}:${from.port}` }).debug(`ignored an SSDP announcement for serial ${printer.serial} that did not come from the printer's address ${printer.host}`);
      return;
    }
    const before = { ...hub.info };
    hub.update({ firmware: heard.version || undefined, modelCode: heard.modelCode || undefined });
    if (learnedFrom === undefined || before.firmware !== hub.info.firmware || before.modelCode !== hub.info.modelCode) {
      log.info(`the printer announces itself as ${heard.modelCode || "?"}, firmware ${heard.version || "?"}`);
    }
    learnedFrom = from.address;
  };

  return {
    name: "ssdp",
    async start() {
      sender = createSocket({ type: "udp4", reuseAddr: true });
      sender.on("error", (error) => log.warn(`SSDP socket error: ${error.message}`));
      try {
        await bindUdp(sender, 0, printer.bind);
      } catch (error) {
        sender.close();
        sender = undefined;
        throw new Error(`cannot send SSDP from ${printer.bind}: ${(error as Error).message}`);
      }
      sender.setBroadcast(true);
      sender.on("message", onDatagram);
      if ((options.listen ?? printer.ssdpListen) !== false) {
        // 0.0.0.0: broadcasts reach only sockets bound to the wildcard address; reuseAddr lets every printer
        // entry (and a slicer on this host) share the port.
        for (const port of new Set([printer.ports.ssdp, printer.printerPorts.ssdp])) {
          const socket = createSocket({ type: "udp4", reuseAddr: true });
          try {
            await bindUdp(socket, port, "0.0.0.0");
            socket.on("message", onDatagram);
            socket.on("error", (error) => log.warn(`SSDP listener error: ${error.message}`));
            listeners.push(socket);
          } catch (error) {
            socket.close();
            listenProblem = `cannot listen on UDP ${port}: ${(error as Error).message}`;
            log.warn(`${listenProblem}; announcing anyway, but M-SEARCH goes unanswered`);
          }
        }
      }
      announce();
      timer = setInterval(announce, intervalMs);
      log.info(`announcing ${proxyAddress(printer)} to ${printer.ssdpTargets.join(", ")} on UDP ${printer.ports.ssdp} every ${intervalMs / 1000} s`);
    },
    async stop() {
      if (timer) clearInterval(timer);
      timer = undefined;
      for (const socket of [sender, ...listeners]) {
        try {
          socket?.close();
        } catch {
          // already closed
        }
      }
      sender = undefined;
      listeners = [];
    },
    status(): ServiceStatus {
      return {
        state: !sender ? "stopped" : sendErrors.size ? `error: ${[...sendErrors].map(([t, e]) => `${t}: ${e}`).join("; ")}` : "announcing",
        clients: 0,
        details: {
          location: proxyAddress(printer),
          targets: printer.ssdpTargets.join(", "),
          announced,
          searchesAnswered,
          learnedFrom,
          listen: listenProblem ?? (listeners.length ? "ok" : "off"),
        },
      };
    },
  };
}

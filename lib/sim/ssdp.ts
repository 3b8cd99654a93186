// A simulated printer's SSDP announcements: NOTIFY to each target every few seconds, as the firmware does
// (X1/H2-family from source port 2021, P1/A1 from 1900). Real printers do not answer M-SEARCH, so neither do we.
import { createSocket, type Socket as UdpSocket } from "node:dgram";
import { serviceLogger } from "../log.ts";
import { encodeNotify, type BambuAnnouncement } from "../bambu/ssdp-message.ts";
import type { SimIdentity, SimService, SimStarter } from "./types.ts";

export const SIM_SSDP_INTERVAL_MS = 5_000;
export const SIM_SSDP_TARGETS = ["255.255.255.255"];
/** What real printers report; a fixed value keeps the datagram stable. */
export const SIM_SIGNAL = "-44";

export interface SimSsdpService extends SimService {
  readonly sent: number;
  /** The local port announcements leave from. */
  readonly sourcePort: number;
}

/** X1C and H2C announce from 2021, P1P and A1 from 1900 (../shared/PROTOCOLS.md). */
export function announcementSourcePort(identity: SimIdentity): number {
  return identity.model.camera === "rtsp" ? 2021 : 1900;
}

export function simAnnouncement(identity: SimIdentity): BambuAnnouncement {
  return {
    location: identity.host,
    serial: identity.serial,
    modelCode: identity.model.code,
    name: identity.name,
    version: identity.firmware,
    signal: SIM_SIGNAL,
    connect: "lan",
    bind: "free",
    seclink: "secure",
    inf: "wlan0",
    cap: "1",
  };
}

function bindUdp(socket: UdpSocket, port: number, address: string): Promise<boolean> {
  return new Promise((resolve) => {
    const fail = () => resolve(false);
    socket.once("error", fail);
    socket.bind(port, address, () => {
      socket.off("error", fail);
      resolve(true);
    });
  });
}

export const startSimSsdp: SimStarter = async (identity, options) => {
  const log = serviceLogger(identity.name, "sim-ssdp");
  const targets = options.ssdpTargets ?? SIM_SSDP_TARGETS;
  const intervalMs = options.ssdpIntervalMs ?? SIM_SSDP_INTERVAL_MS;
  // reuseAddr: never take 1900/2021 from anyone else on this host; fall back to an ephemeral port.
  let socket = createSocket({ type: "udp4", reuseAddr: true });
  if (!(await bindUdp(socket, announcementSourcePort(identity), identity.host))) {
    socket.close();
    socket = createSocket({ type: "udp4", reuseAddr: true });
    if (!(await bindUdp(socket, 0, identity.host))) {
      socket.close();
      throw new Error(`simulator: cannot open a UDP socket on ${identity.host} for SSDP`);
    }
  }
  socket.setBroadcast(true);
  socket.on("error", (error) => log.debug(`SSDP socket error: ${error.message}`));
  const datagram = encodeNotify(simAnnouncement(identity));
  let sent = 0;
  let lastError = "";
  const announce = () => {
    for (const target of targets) {
      socket.send(datagram, identity.ports.ssdp, target, (error) => {
        if (!error) return void sent++;
        if (error.message !== lastError) log.debug(`cannot announce to ${target}:${identity.ports.ssdp}: ${error.message}`);
        lastError = error.message;
      });
    }
  };
  announce();
  const timer = setInterval(announce, intervalMs);
  const sourcePort = socket.address().port;
  const service: SimSsdpService = {
    name: "ssdp",
    get sent() {
      return sent;
    },
    sourcePort,
    stop: async () => {
      clearInterval(timer);
      try {
        socket.close();
      } catch {
        // already closed
      }
    },
  };
  return service;
};

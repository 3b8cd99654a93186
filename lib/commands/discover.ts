// `pandaproxy discover`: listens for Bambu printers' SSDP announcements and prints each printer found, then a
// ready [[printer]] block per printer for printers.toml.
import { createSocket, type RemoteInfo } from "node:dgram";
import { EXIT_FAILURE, EXIT_OK, EXIT_USAGE, type Command } from "./command.ts";
import { BAMBU_PORTS } from "../bambu/config.ts";
import { isIPv4 } from "../config-fields.ts";
import { findModel } from "../bambu/models.ts";
import { announcementOf, parseSsdp, type BambuAnnouncement } from "../bambu/ssdp-message.ts";

/** Printers announce every ~5 s; twice that catches each at least once. */
export const DISCOVER_DEFAULT_SECONDS = 10;
export const DISCOVER_MAX_SECONDS = 3600;

export interface FoundPrinter {
  announcement: BambuAnnouncement;
  /** Where the printer is: its Location, or the datagram's source when Location is not an address. */
  address: string;
  /** Every address this serial was announced from (a proxy announces the same serial with its own address). */
  addresses: string[];
}

const USAGE = [
  "Usage: pandaproxy discover [--seconds N] [--listen ADDR[:PORT]]",
  "",
  `Listens for the SSDP announcements Bambu printers broadcast on UDP ${BAMBU_PORTS.ssdp} (every ~5 s) for N seconds`,
  `(default ${DISCOVER_DEFAULT_SECONDS}), prints each printer found and a [[printer]] block for printers.toml.`,
  `--listen: the local address (and port) to listen on; default 0.0.0.0:${BAMBU_PORTS.ssdp}.`,
  "Printers only announce within their own subnet (broadcast), so run this on the printers' LAN.",
].join("\n");

/** An address for the printer from an announcement: Location ("192.168.1.18", sometimes a URL), else the sender. */
export function printerAddress(announcement: BambuAnnouncement, from: string): string {
  const location = announcement.location.replace(/^[a-z]+:\/\//i, "").replace(/[:/].*$/, "");
  return isIPv4(location) ? location : from;
}

/** A config name from the printer's name: letters, digits, "-", "_", "."; unique among `taken`. */
export function configName(name: string, fallback: string, taken: Set<string>): string {
  const base = name.trim().toLowerCase().replace(/[^a-z0-9_.-]+/g, "-").replace(/^-+|-+$/g, "") || fallback.toLowerCase();
  let candidate = base;
  for (let i = 2; taken.has(candidate); i++) candidate = `${base}-${i}`;
  taken.add(candidate);
  return candidate;
}

export function describePrinter(found: FoundPrinter): string {
  const a = found.announcement;
  const model = findModel(a.modelCode);
  return `"${a.name || "?"}" ${model ? `${model.name} (${a.modelCode})` : a.modelCode || "unknown model"}, serial ${a.serial}, at ${found.address}` +
    `${a.version ? `, firmware ${a.version}` : ""}${a.connect ? `, ${a.connect === "lan" ? "LAN-only mode" : `connect: ${a.connect}`}` : ""}`;
}

/** `several`: more than one printer, so each needs its own bind address (Bambu clients use fixed ports). */
export function printerBlock(found: FoundPrinter, name: string, several = false): string {
  const a = found.announcement;
  const model = findModel(a.modelCode);
  const lines = [
    "[[printer]]",
    `name = "${name}"`,
    `host = "${found.address}"`,
    `serial = "${a.serial}"`,
    model ? `model = "${model.name}"` : `# model = "…"            # announced model code: ${a.modelCode || "none"}`,
    'access_code = ""           # the 8 characters on the printer\'s screen (LAN settings)',
    several
      ? 'bind = ""                  # required with several printers: an address of this host for this printer alone'
      : '# bind = "192.168.1.201"   # this printer\'s own address on the proxy host (one per printer)',
  ];
  if (found.addresses.length > 1) lines.push(`# also announced from ${found.addresses.filter((x) => x !== found.address).join(", ")} (another proxy?)`);
  return lines.join("\n");
}

/** Collects announcements on `host:port` for `seconds`; `onFound` sees each new serial as it arrives. */
export async function listenForPrinters(host: string, port: number, seconds: number, onFound: (found: FoundPrinter) => void): Promise<FoundPrinter[]> {
  const found = new Map<string, FoundPrinter>();
  const socket = createSocket({ type: "udp4", reuseAddr: true });
  await new Promise<void>((resolve, reject) => {
    socket.once("error", reject);
    socket.bind(port, host, () => {
      socket.off("error", reject);
      resolve();
    });
  });
  socket.on("message", (datagram: Buffer, from: RemoteInfo) => {
    const message = parseSsdp(datagram);
    const announcement = message && announcementOf(message);
    if (!announcement) return;
    const address = printerAddress(announcement, from.address);
    const known = found.get(announcement.serial);
    if (!known) {
      const entry = { announcement, address, addresses: [address] };
      found.set(announcement.serial, entry);
      onFound(entry);
      return;
    }
    if (!known.addresses.includes(address)) known.addresses.push(address);
    // The printer itself names its interface (DevInf); a proxy leaves it empty: prefer the printer.
    if (!known.announcement.inf && announcement.inf) Object.assign(known, { announcement, address });
  });
  await Bun.sleep(seconds * 1000);
  socket.close();
  return [...found.values()];
}

export const command: Command = {
  summary: "find Bambu printers on the LAN and print their printers.toml entries",
  usage: USAGE,
  options: {
    seconds: { type: "string", short: "s" },
    listen: { type: "string", short: "l" },
  },
  async run(values) {
    const seconds = values.seconds === undefined ? DISCOVER_DEFAULT_SECONDS : Number(values.seconds);
    if (!Number.isFinite(seconds) || seconds <= 0 || seconds > DISCOVER_MAX_SECONDS) {
      console.error(`pandaproxy discover: --seconds is "${values.seconds}"; expected a number from 1 to ${DISCOVER_MAX_SECONDS}\n\n${USAGE}`);
      return EXIT_USAGE;
    }
    const listenText = (values.listen as string | undefined) ?? "0.0.0.0";
    const m = /^([\d.]+)(?::(\d+))?$/.exec(listenText);
    const host = m?.[1] ?? "";
    const port = m?.[2] ? Number(m[2]) : BAMBU_PORTS.ssdp;
    if (!m || !isIPv4(host) || port < 1 || port > 65535) {
      console.error(`pandaproxy discover: --listen is "${listenText}"; expected an IPv4 address, optionally with ":PORT"\n\n${USAGE}`);
      return EXIT_USAGE;
    }
    console.log(`Listening for Bambu printers on UDP ${host}:${port} for ${seconds} s …`);
    let printers: FoundPrinter[];
    try {
      printers = await listenForPrinters(host, port, seconds, (found) => console.log(`found ${describePrinter(found)}`));
    } catch (error) {
      console.error(`pandaproxy discover: cannot listen on UDP ${host}:${port}: ${(error as Error).message}`);
      return EXIT_FAILURE;
    }
    if (printers.length === 0) {
      console.log(
        `No printer announced itself in ${seconds} s. Printers broadcast every ~5 s to UDP ${BAMBU_PORTS.ssdp} on their own subnet:` +
          ` check that this host is on that subnet and that no firewall drops UDP ${port}.`,
      );
      return EXIT_FAILURE;
    }
    console.log(`\n${printers.length} printer${printers.length === 1 ? "" : "s"} found. For printers.toml:\n`);
    const taken = new Set<string>();
    for (const p of printers) console.log(`${printerBlock(p, configName(p.announcement.name, p.announcement.serial, taken), printers.length > 1)}\n`);
    return EXIT_OK;
  },
};

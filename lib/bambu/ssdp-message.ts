// Bambu's SSDP dialect on UDP 2021: the printers' NOTIFY announcements, slicers' M-SEARCH and the answers to it.
// Pure functions of bytes and typed values. Source: ../shared/PROTOCOLS.md (KittyCAD/machine-api#20,
// TFyre/bambu-farm#231, bambulab/BambuStudio#1505, Bambuddy ssdp_server.py, JulienDeveaux/pandaproxy ssdp.py).

export const BAMBU_SEARCH_TARGET = "urn:bambulab-com:device:3dprinter:1";
export const SSDP_ALL = "ssdp:all";
/** Printers write this Host header whatever port they send to. */
export const SSDP_HOST_HEADER = "239.255.255.250:1990";
export const SSDP_MAX_AGE_S = 1800;
/** Printers announce in ~450 bytes; a datagram far larger is not an announcement. */
export const SSDP_MAX_MESSAGE_BYTES = 4096;

/** What a printer announces about itself. */
export interface BambuAnnouncement {
  /** The bare IPv4 address clients connect to. */
  location: string;
  /** USN: the printer's serial. */
  serial: string;
  /** DevModel: "C12", "BL-P001", … */
  modelCode: string;
  name: string;
  /** DevVersion: firmware; Studio needs it non-empty. */
  version: string;
  /** DevConnect: "lan" (LAN-only mode) or "cloud". */
  connect: string;
  /** DevBind: "free" or "occupied". */
  bind: string;
  signal?: string;
  seclink?: string;
  /** DevInf: the printer's interface ("wlan0"); the proxy keeps it empty (Studio ignores a new Location for
   * a known serial whose DevInf changed). */
  inf: string;
  cap?: string;
}

export type SsdpMessage =
  | { kind: "notify"; headers: Record<string, string> }
  | { kind: "search"; headers: Record<string, string> }
  | { kind: "response"; status: number; headers: Record<string, string> };

function bambuHeaders(a: BambuAnnouncement): string[] {
  return [
    `USN: ${a.serial}`,
    `Cache-Control: max-age=${SSDP_MAX_AGE_S}`,
    `DevModel.bambu.com: ${a.modelCode}`,
    `DevName.bambu.com: ${a.name}`,
    ...(a.signal !== undefined ? [`DevSignal.bambu.com: ${a.signal}`] : []),
    `DevConnect.bambu.com: ${a.connect}`,
    `DevBind.bambu.com: ${a.bind}`,
    ...(a.seclink !== undefined ? [`Devseclink.bambu.com: ${a.seclink}`] : []),
    a.inf ? `DevInf.bambu.com: ${a.inf}` : "DevInf.bambu.com:",
    `DevVersion.bambu.com: ${a.version}`,
    ...(a.cap !== undefined ? [`DevCap.bambu.com: ${a.cap}`] : []),
  ];
}

const finish = (lines: string[]) => Buffer.from(lines.join("\r\n") + "\r\n\r\n", "utf8");

/** The announcement as printers broadcast it, header order included. */
export function encodeNotify(a: BambuAnnouncement): Buffer {
  return finish([
    "NOTIFY * HTTP/1.1",
    `Host: ${SSDP_HOST_HEADER}`,
    "Server: UPnP/1.0",
    `Location: ${a.location}`,
    `NT: ${BAMBU_SEARCH_TARGET}`,
    "NTS: ssdp:alive",
    ...bambuHeaders(a),
  ]);
}

/** The answer to an M-SEARCH: the same facts with `ST` instead of `NT`/`NTS`. */
export function encodeSearchResponse(a: BambuAnnouncement): Buffer {
  return finish(["HTTP/1.1 200 OK", "Server: UPnP/1.0", `Location: ${a.location}`, `ST: ${BAMBU_SEARCH_TARGET}`, "EXT:", ...bambuHeaders(a)]);
}

export function encodeSearch(target = BAMBU_SEARCH_TARGET, mxSeconds = 3): Buffer {
  return finish(["M-SEARCH * HTTP/1.1", `Host: ${SSDP_HOST_HEADER}`, 'Man: "ssdp:discover"', `MX: ${mxSeconds}`, `ST: ${target}`]);
}

/** Start line and headers (names lower-cased); undefined for anything that is not SSDP. */
export function parseSsdp(datagram: Buffer): SsdpMessage | undefined {
  if (datagram.length > SSDP_MAX_MESSAGE_BYTES) return undefined;
  const lines = datagram.toString("utf8").split(/\r?\n/);
  const start = lines[0]?.trim() ?? "";
  const headers: Record<string, string> = {};
  for (const line of lines.slice(1)) {
    if (line === "") break;
    const colon = line.indexOf(":");
    if (colon <= 0) continue;
    headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  if (/^NOTIFY \* HTTP\/1\.[01]$/i.test(start)) return { kind: "notify", headers };
  if (/^M-SEARCH \* HTTP\/1\.[01]$/i.test(start)) return { kind: "search", headers };
  const status = /^HTTP\/1\.[01] (\d{3})\b/i.exec(start);
  if (status) return { kind: "response", status: Number(status[1]), headers };
  return undefined;
}

/** A Bambu printer's announcement (NOTIFY alive or an M-SEARCH answer), else undefined. */
export function announcementOf(message: SsdpMessage): BambuAnnouncement | undefined {
  const h = message.headers;
  const target = message.kind === "notify" ? h.nt : message.kind === "response" ? h.st : undefined;
  if (target?.toLowerCase() !== BAMBU_SEARCH_TARGET) return undefined;
  if (message.kind === "notify" && h.nts && h.nts.toLowerCase() !== "ssdp:alive") return undefined;
  if (message.kind === "response" && message.status !== 200) return undefined;
  const serial = h.usn?.replace(/^uuid:/i, "").split("::")[0];
  if (!serial) return undefined;
  return {
    location: h.location ?? "",
    serial,
    modelCode: h["devmodel.bambu.com"] ?? "",
    name: h["devname.bambu.com"] ?? "",
    version: h["devversion.bambu.com"] ?? "",
    connect: h["devconnect.bambu.com"] ?? "",
    bind: h["devbind.bambu.com"] ?? "",
    signal: h["devsignal.bambu.com"],
    seclink: h["devseclink.bambu.com"],
    inf: h["devinf.bambu.com"] ?? "",
    cap: h["devcap.bambu.com"],
  };
}

/** An M-SEARCH a Bambu printer should answer: the Bambu search target, or everything. */
export function isBambuSearch(message: SsdpMessage): boolean {
  const st = message.headers.st?.toLowerCase();
  return message.kind === "search" && (st === BAMBU_SEARCH_TARGET || st === SSDP_ALL);
}

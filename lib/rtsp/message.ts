// RTSP 1.0 wire codec: requests, responses and `$`-interleaved binary frames on one byte stream (RFC 2326
// §10.12). A pure function of bytes: `createRtspParser` turns chunks into typed messages, `encode*` back.

export const MAX_HEADER_BYTES = 16 * 1024;
/** Control characters a header line may not hold (tab is allowed: RFC 2326 takes it as whitespace). */
const CONTROL = /[\x00-\x08\x0a-\x1f\x7f]/;
export const MAX_BODY_BYTES = 64 * 1024;

export type Headers = [name: string, value: string][];

export interface RtspRequest {
  kind: "request";
  method: string;
  uri: string;
  headers: Headers;
  body: Buffer;
}

export interface RtspResponse {
  kind: "response";
  status: number;
  reason: string;
  headers: Headers;
  body: Buffer;
}

/** One `$` frame: RTP on even channels, RTCP on odd ones by convention. */
export interface InterleavedFrame {
  kind: "frame";
  channel: number;
  payload: Buffer;
}

export type RtspMessage = RtspRequest | RtspResponse | InterleavedFrame;

export class RtspParseError extends Error {}

export function header(headers: Headers, name: string): string | undefined {
  const wanted = name.toLowerCase();
  for (const [n, v] of headers) if (n.toLowerCase() === wanted) return v;
  return undefined;
}

export function headerAll(headers: Headers, name: string): string[] {
  const wanted = name.toLowerCase();
  return headers.filter(([n]) => n.toLowerCase() === wanted).map(([, v]) => v);
}

/** Incremental parser: feed chunks, get every complete message; throws RtspParseError on garbage or oversize. */
export function createRtspParser(): { push(chunk: Buffer): RtspMessage[]; readonly buffered: number } {
  let pending: Buffer = Buffer.alloc(0);
  return {
    push(chunk) {
      pending = pending.length ? Buffer.concat([pending, chunk]) : chunk;
      const out: RtspMessage[] = [];
      let at = 0;
      while (at < pending.length) {
        if (pending[at] === 0x24) {
          if (pending.length - at < 4) break;
          const length = pending.readUInt16BE(at + 2);
          if (pending.length - at < 4 + length) break;
          out.push({ kind: "frame", channel: pending[at + 1]!, payload: pending.subarray(at + 4, at + 4 + length) });
          at += 4 + length;
          continue;
        }
        // Some clients send a bare CRLF between messages; skip it.
        if (pending[at] === 0x0d || pending[at] === 0x0a) {
          at++;
          continue;
        }
        const end = pending.indexOf("\r\n\r\n", at);
        if (end < 0) {
          if (pending.length - at > MAX_HEADER_BYTES) throw new RtspParseError(`header longer than ${MAX_HEADER_BYTES} bytes`);
          break;
        }
        if (end - at > MAX_HEADER_BYTES) throw new RtspParseError(`header longer than ${MAX_HEADER_BYTES} bytes`);
        const lines = pending.subarray(at, end).toString("latin1").split("\r\n");
        const first = lines.shift() ?? "";
        const headers: Headers = [];
        for (const line of lines) {
          const colon = line.indexOf(":");
          // A bare CR or LF (or any control but tab) would end a line when the relay writes the header on.
          if (colon <= 0 || CONTROL.test(line)) throw new RtspParseError(`malformed header line ${JSON.stringify(line.slice(0, 60))}`);
          headers.push([line.slice(0, colon).trim(), line.slice(colon + 1).trim()]);
        }
        const length = Number(header(headers, "content-length") ?? 0);
        if (!Number.isInteger(length) || length < 0 || length > MAX_BODY_BYTES) throw new RtspParseError(`bad Content-Length ${JSON.stringify(header(headers, "content-length") ?? "")}`);
        if (pending.length - (end + 4) < length) break;
        const body = Buffer.from(pending.subarray(end + 4, end + 4 + length));
        at = end + 4 + length;
        const response = /^RTSP\/1\.0 (\d{3}) ?(.*)$/.exec(first);
        if (response) {
          out.push({ kind: "response", status: Number(response[1]), reason: response[2] ?? "", headers, body });
          continue;
        }
        const request = /^([A-Z_]+) (\S+) RTSP\/1\.0$/.exec(first);
        if (!request) throw new RtspParseError(`not an RTSP request line: ${JSON.stringify(first.slice(0, 80))}`);
        out.push({ kind: "request", method: request[1]!, uri: request[2]!, headers, body });
      }
      // Frames point into `pending`: copy the remainder so the delivered subarrays stay valid.
      pending = at >= pending.length ? Buffer.alloc(0) : Buffer.from(pending.subarray(at));
      return out;
    },
    get buffered() {
      return pending.length;
    },
  };
}

function encodeHead(first: string, headers: Headers, body: Buffer | string | undefined): Buffer {
  const bodyBuffer = body === undefined ? undefined : typeof body === "string" ? Buffer.from(body) : body;
  let text = first + "\r\n";
  for (const [n, v] of headers) if (n.toLowerCase() !== "content-length") text += `${n}: ${v}\r\n`;
  if (bodyBuffer && bodyBuffer.length) text += `Content-Length: ${bodyBuffer.length}\r\n`;
  text += "\r\n";
  const head = Buffer.from(text, "latin1");
  return bodyBuffer && bodyBuffer.length ? Buffer.concat([head, bodyBuffer]) : head;
}

export function encodeRequest(method: string, uri: string, headers: Headers, body?: Buffer | string): Buffer {
  return encodeHead(`${method} ${uri} RTSP/1.0`, headers, body);
}

export const REASONS: Record<number, string> = {
  200: "OK", 301: "Moved Permanently", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
  405: "Method Not Allowed", 454: "Session Not Found", 455: "Method Not Valid in This State",
  459: "Aggregate Operation Not Allowed", 461: "Unsupported Transport", 500: "Internal Server Error",
  501: "Not Implemented", 503: "Service Unavailable", 505: "RTSP Version Not Supported",
};

export function encodeResponse(status: number, headers: Headers, body?: Buffer | string): Buffer {
  return encodeHead(`RTSP/1.0 ${status} ${REASONS[status] ?? "Unknown"}`, headers, body);
}

export function encodeFrame(channel: number, payload: Buffer): Buffer {
  const out = Buffer.allocUnsafe(4 + payload.length);
  out[0] = 0x24;
  out[1] = channel;
  out.writeUInt16BE(payload.length, 2);
  payload.copy(out, 4);
  return out;
}

/** `Transport: RTP/AVP/TCP;unicast;interleaved=0-1;mode=record` -> its parts. */
export interface Transport {
  profile: string;
  tcp: boolean;
  interleaved?: [number, number];
  clientPort?: [number, number];
  /** `multicast` asked for instead of `unicast` (we serve unicast only). */
  multicast: boolean;
  record: boolean;
}

export function parseTransport(value: string): Transport[] {
  return value.split(",").map((spec) => {
    const parts = spec.trim().split(";");
    const profile = parts[0] ?? "";
    const params = new Map(parts.slice(1).map((p) => {
      const eq = p.indexOf("=");
      return eq < 0 ? [p.trim().toLowerCase(), ""] : [p.slice(0, eq).trim().toLowerCase(), p.slice(eq + 1).trim()];
    }));
    // Interleaved channels are one byte on the wire (RFC 2326 10.12); a UDP port is 1-65535 (dgram throws on
    // others). A pair outside its range is no pair.
    const pair = (v: string | undefined, min: number, max: number): [number, number] | undefined => {
      if (v === undefined) return undefined;
      const [a, b] = v.split("-").map(Number);
      if (a === undefined || !Number.isInteger(a)) return undefined;
      const out: [number, number] = [a, b !== undefined && Number.isInteger(b) ? b : a + 1];
      return out.every((n) => n >= min && n <= max) ? out : undefined;
    };
    const mode = (params.get("mode") ?? "").replace(/"/g, "").toLowerCase();
    return {
      profile,
      tcp: /\/TCP$/i.test(profile) || params.has("interleaved"),
      interleaved: pair(params.get("interleaved"), 0, 255),
      clientPort: pair(params.get("client_port"), 1, 65_535),
      multicast: params.has("multicast"),
      record: mode === "record" || mode === "receive",
    };
  });
}

// The request line a viewer sends to the camera port ("GET /?action=stream HTTP/1.1"), read as a pure function:
// the method, the path and the `action` query parameter mjpg-streamer acts on, or "invalid" for anything else.
// Targets are checked against RFC 3986 characters (origin form, or absolute form with an http authority) rather
// than handed to `new URL()`, which throws on targets such as "//[".

export interface CameraRequest {
  method: string;
  /** The target's path, still percent-encoded: "/", "/stream". */
  path: string;
  /** The decoded `action` query parameter ("stream", "snapshot"), undefined when absent. */
  action: string | undefined;
}

export const MAX_REQUEST_LINE_BYTES = 2_048;

const REQUEST_LINE = /^([!#$%&'*+\-.^_`|~0-9A-Za-z]+) (\S+) HTTP\/1\.[01]$/;
const ABSOLUTE_PREFIX = /^https?:\/\/(?:[A-Za-z0-9\-._~!$&'()*+,;=%]+|\[[0-9A-Fa-f:.]+\])(?::\d*)?(?=[/?]|$)/i;
const PATH = /^\/[A-Za-z0-9\-._~!$&'()*+,;=:@/%]*$/;
const QUERY = /^[A-Za-z0-9\-._~!$&'()*+,;=:@/?%]*$/;
const BAD_PERCENT = /%(?![0-9A-Fa-f]{2})/;

export function parseCameraRequestLine(line: string): CameraRequest | "invalid" {
  if (line.length > MAX_REQUEST_LINE_BYTES) return "invalid";
  const m = REQUEST_LINE.exec(line);
  if (!m) return "invalid";
  let target = m[2]!;
  const absolute = ABSOLUTE_PREFIX.exec(target);
  if (absolute) {
    target = target.slice(absolute[0].length);
    if (!target.startsWith("/")) target = `/${target}`;
  }
  const q = target.indexOf("?");
  const path = q === -1 ? target : target.slice(0, q);
  const query = q === -1 ? "" : target.slice(q + 1);
  if (!PATH.test(path) || !QUERY.test(query) || BAD_PERCENT.test(target)) return "invalid";
  return { method: m[1]!, path, action: queryParameter(query, "action") };
}

/** The first value of `name` in an application/x-www-form-urlencoded query, as URLSearchParams reads it. */
function queryParameter(query: string, name: string): string | undefined {
  for (const pair of query.split("&")) {
    const eq = pair.indexOf("=");
    const key = decode(eq === -1 ? pair : pair.slice(0, eq));
    if (key === name) return decode(eq === -1 ? "" : pair.slice(eq + 1));
  }
  return undefined;
}

function decode(text: string): string {
  // The percent escapes were checked above; a sequence that is not UTF-8 still throws, and is then kept as is.
  try {
    return decodeURIComponent(text.replace(/\+/g, " "));
  } catch {
    return text;
  }
}

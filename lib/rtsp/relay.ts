// A loopback relay between FFmpeg and the printer's RTSPS port, so the access code never appears in a process
// list: FFmpeg connects to plain rtsp://127.0.0.1:<port>/… without credentials; we open TLS to the printer,
// rewrite request URLs to the printer's, and answer the printer's 401 challenge ourselves (Digest, as live555
// wants) by re-sending the request with an Authorization header. Everything else passes through unchanged.
// Without `tls` the far side is plain RTSP over TCP: the media server [export.rtsp] pushes to, whose password
// must stay out of FFmpeg's arguments just the same (its challenge may be Basic or Digest).
import type { ConnectionOptions, TLSSocket } from "node:tls";
import { connectToPrinter, dropPrinterSocket } from "../core/printer-socket.ts";
import { connect as tcpConnect, type Socket } from "node:net";
import { listen, type Listening } from "../core/server.ts";
import type { Logger } from "../log.ts";
import { authorizationFor } from "./auth.ts";
import { createRtspParser, encodeFrame, encodeRequest, encodeResponse, header, headerAll, type Headers, type RtspRequest } from "./message.ts";

export const PRINTER_CONNECT_TIMEOUT_MS = 10_000;
/** FFmpeg is the only client; a second one at once would be a second printer session, which printers hate. */
const MAX_RELAY_CLIENTS = 2;
/** Bytes waiting for one side before we stop reading the other (a stalled FFmpeg must not fill our memory). */
export const RELAY_MAX_BACKLOG_BYTES = 1024 * 1024;

export interface RelayOptions {
  log: Logger;
  /** The printer's address and RTSPS port (or the media server's address and RTSP port). */
  host: string;
  port: number;
  /** TLS to the printer; absent: plain TCP (a media server). */
  tls?: ConnectionOptions;
  user: string;
  password: () => string;
  /** Default RELAY_MAX_BACKLOG_BYTES (tests shorten it). */
  maxBacklogBytes?: number;
  /** The far side in log lines; default "printer camera". */
  peer?: string;
  /** Logged when the far side refuses our credentials; default: the printer's access code message. */
  refusedMessage?: string;
  /** Default MAX_RELAY_CLIENTS; a push's relay takes its one FFmpeg only (any local user can reach loopback). */
  maxClients?: number;
  /**
   * Bytes waiting for the far side and none taken for this long: both sides are closed (a media server that
   * stopped reading; it would otherwise hold the push until TCP gives up, many minutes). Default: no such check.
   */
  writeStallMs?: number;
  /** The loopback address FFmpeg connects to; default 127.0.0.1 (tests keep to their own addresses). */
  listenHost?: string;
  /** Every response passed on to FFmpeg, with its request's method (a push waits for RECORD's). */
  onResponse?: (method: string, status: number) => void;
}

export interface Relay {
  /** What FFmpeg should open, e.g. rtsp://127.0.0.1:41234/streaming/live/1. */
  url(path: string): string;
  /** Printer sessions opened so far. */
  readonly connections: number;
  /** The printer answered 401 to our credentials on the last attempt. */
  readonly refused: boolean;
  close(): Promise<void>;
}

export async function startRelay(options: RelayOptions): Promise<Relay> {
  let connections = 0;
  let refused = false;
  const upstreamBase = `${options.tls ? "rtsps" : "rtsp"}://${options.host}:${options.port}`;
  const peer = options.peer ?? "printer camera";
  const refusedMessage = options.refusedMessage ?? `printer camera refused user "${options.user}" with the access code: check access_code`;
  let localBase = "";
  const listening: Listening = await listen({
    log: options.log,
    what: `${peer} relay`,
    host: options.listenHost ?? "127.0.0.1",
    port: 0,
    maxClients: options.maxClients ?? MAX_RELAY_CLIENTS,
    onClient(ffmpeg) {
      connections++;
      const upstream: Socket = options.tls
        ? connectToPrinter({ ...options.tls, host: options.host, port: options.port })
        : tcpConnect({ host: options.host, port: options.port });
      const drop = () => (options.tls ? dropPrinterSocket(upstream as TLSSocket) : upstream.destroy());
      const connectTimer = setTimeout(() => {
        options.log.warn(`${peer} ${options.host}:${options.port} did not answer in ${PRINTER_CONNECT_TIMEOUT_MS / 1000} s`);
        drop();
      }, PRINTER_CONNECT_TIMEOUT_MS);
      upstream.once(options.tls ? "secureConnect" : "connect", () => clearTimeout(connectTimer));
      const stallTimer = options.writeStallMs ? watchWrites(upstream, options.writeStallMs, (waiting) => {
        options.log.warn(`${peer} ${options.host}:${options.port} took none of the ${waiting} bytes waiting for it in ${options.writeStallMs! / 1000} s: closing`);
        end();
      }) : undefined;
      const end = () => {
        clearTimeout(connectTimer);
        clearInterval(stallTimer);
        ffmpeg.destroy();
        drop();
      };
      upstream.on("error", (error) => {
        options.log.info(`${peer} ${options.host}:${options.port}: ${error.message}`);
        end();
      });
      upstream.on("close", end);
      ffmpeg.on("close", end);
      const maxBacklog = options.maxBacklogBytes ?? RELAY_MAX_BACKLOG_BYTES;
      const toFfmpeg = heldWhileFull(upstream, ffmpeg, maxBacklog);
      const toUpstreamSide = heldWhileFull(ffmpeg, upstream, maxBacklog);

      let challenges: string[] = [];
      let unanswerableLogged = false;
      const pending = new Map<string, { request: RtspRequest; retried: boolean }>();
      const toUpstream = (request: RtspRequest) => {
        const headers: Headers = request.headers.filter(([n]) => n.toLowerCase() !== "authorization");
        if (challenges.length) {
          const auth = authorizationFor(challenges, options.user, options.password(), request.method, request.uri);
          if (auth) headers.push(["Authorization", auth]);
          else if (!unanswerableLogged) {
            unanswerableLogged = true;
            options.log.warn(`${peer} ${options.host}:${options.port} asked for a login we cannot give: ${JSON.stringify(challenges.join(" | ").slice(0, 200))}`);
          }
        }
        toUpstreamSide(encodeRequest(request.method, request.uri, headers, request.body));
      };

      const fromFfmpeg = createRtspParser();
      ffmpeg.on("data", (chunk: Buffer) => {
        try {
          for (const m of fromFfmpeg.push(chunk)) {
            if (m.kind === "frame") toUpstreamSide(encodeFrame(m.channel, m.payload));
            else if (m.kind === "request") {
              const uri = m.uri.startsWith(localBase) ? upstreamBase + m.uri.slice(localBase.length) : m.uri;
              const request = { ...m, uri };
              pending.set(header(m.headers, "cseq") ?? "", { request, retried: false });
              toUpstream(request);
            }
          }
        } catch (error) {
          options.log.warn(`relay: FFmpeg sent something unreadable (${escaped((error as Error).message)})`);
          end();
        }
      });

      const fromUpstream = createRtspParser();
      upstream.on("data", (chunk: Buffer) => {
        try {
          for (const m of fromUpstream.push(chunk)) {
            if (m.kind === "frame") toFfmpeg(encodeFrame(m.channel, m.payload));
            else if (m.kind === "response") {
              const cseq = header(m.headers, "cseq") ?? "";
              const waiting = pending.get(cseq);
              if (m.status === 401 && waiting && !waiting.retried) {
                challenges = headerAll(m.headers, "www-authenticate");
                waiting.retried = true;
                toUpstream(waiting.request);
                continue;
              }
              if (m.status === 401) {
                refused = true;
                options.log.error(refusedMessage);
              } else if (m.status < 300) refused = false;
              pending.delete(cseq);
              if (waiting) options.onResponse?.(waiting.request.method, m.status);
              toFfmpeg(encodeResponse(m.status, m.headers, m.body));
            }
          }
        } catch (error) {
          options.log.warn(`relay: ${peer} ${options.host}:${options.port} sent something unreadable (${escaped((error as Error).message)})`);
          end();
        }
      });
    },
  });
  localBase = `rtsp://${options.listenHost ?? "127.0.0.1"}:${listening.address.port}`;
  return {
    url: (path) => `${localBase}${path}`,
    get connections() {
      return connections;
    },
    get refused() {
      return refused;
    },
    close: () => listening.close(),
  };
}

/** The codec's error quotes the bytes it refused; their CR and LF must not end our log line (or forge the next). */
const escaped = (text: string) => text.replace(/[\x00-\x1f\x7f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`);

/**
 * A writer to `to` that stops reading `from` while more than `max` bytes wait for `to`, until it drains.
 * Tied to write()'s own answer, so a "drain" is sure to follow.
 */
function heldWhileFull(from: Socket, to: Socket, max: number): (bytes: Buffer) => void {
  let held = false;
  to.on("drain", () => {
    if (!held) return;
    held = false;
    if (!from.destroyed) from.resume();
  });
  return (bytes) => {
    if (to.destroyed) return;
    if (!to.write(bytes) && to.writableLength > max && !held) {
      held = true;
      from.pause();
    }
  };
}

/** Calls `stalled` once `to` has had bytes waiting, and taken none (no "drain", never empty), for `stallMs`. */
function watchWrites(to: Socket, stallMs: number, stalled: (waiting: number) => void): ReturnType<typeof setInterval> {
  let movedAt = Date.now();
  to.on("drain", () => (movedAt = Date.now()));
  return setInterval(() => {
    if (to.writableLength === 0) movedAt = Date.now();
    else if (Date.now() - movedAt > stallMs) stalled(to.writableLength);
  }, Math.max(50, Math.min(1_000, stallMs / 4)));
}

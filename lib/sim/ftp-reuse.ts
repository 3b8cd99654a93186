// How the simulated printer decides that a data connection "reused the control connection's TLS session".
// Bun's TLS server resumes only by session ticket: it has no session-ID cache (openssl s_client -no_ticket
// never resumes against it, and the newSession/resumeSession events never fire). curl (OpenSSL backend) sets
// SSL_OP_NO_TICKET and resumes by session ID only, which vsftpd's cache honours. So, besides a real ticket
// resumption, a data connection counts as reusing when its ClientHello offers the control session's ID.
import type { Socket } from "node:net";
import type { TLSSocket } from "node:tls";

export const CLIENT_HELLO_PEEK_TIMEOUT_MS = 10_000;

/** Reads the ClientHello's legacy_session_id, then puts the bytes back for the TLS handshake. */
export function peekClientHelloSessionId(raw: Socket): Promise<Buffer | undefined> {
  return new Promise((resolve) => {
    let have = Buffer.alloc(0);
    const finish = (id: Buffer | undefined) => {
      clearTimeout(timer);
      raw.off("data", onData);
      raw.off("close", onClose);
      raw.pause();
      if (have.length) raw.unshift(have);
      resolve(id);
    };
    const onClose = () => finish(undefined);
    const onData = (chunk: Buffer) => {
      have = Buffer.concat([have, chunk]);
      // record header (5) + handshake header (4) + client_version (2) + random (32), then the id length.
      if (have[0] !== 0x16 || (have.length > 5 && have[5] !== 0x01)) return finish(undefined);
      if (have.length < 44) return;
      const idLength = have[43]!;
      if (have.length < 44 + idLength) return;
      finish(Buffer.from(have.subarray(44, 44 + idLength)));
    };
    const timer = setTimeout(() => finish(undefined), CLIENT_HELLO_PEEK_TIMEOUT_MS);
    raw.on("data", onData);
    raw.once("close", onClose);
    raw.resume();
  });
}

/** The session ID inside a serialized SSL_SESSION (DER: SEQUENCE { version, sslVersion, cipher, sessionID … }). */
export function sessionIdOf(socket: TLSSocket): Buffer | undefined {
  const der = socket.getSession();
  if (!der || der[0] !== 0x30) return undefined;
  let at = 1;
  const length = () => {
    const first = der[at++]!;
    if (first < 0x80) return first;
    let n = 0;
    for (let i = 0; i < (first & 0x7f); i++) n = n * 256 + der[at++]!;
    return n;
  };
  length();
  for (let field = 0; field < 4 && at < der.length; field++) {
    const tag = der[at++];
    const len = length();
    if (field === 3) return tag === 0x04 ? Buffer.from(der.subarray(at, at + len)) : undefined;
    at += len;
  }
  return undefined;
}

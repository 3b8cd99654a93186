// RTP over UDP for one reader (RFC 2326 §12.39 client_port/server_port): a server port pair (even RTP port,
// RTCP on the next one) bound to the RTSP connection's local address, sending to the client's ports.
import { createSocket, type Socket as UdpSocket } from "node:dgram";
import { isIPv6 } from "node:net";

/** Ephemeral ports tried before giving up on finding a free even/odd pair. */
export const PORT_PAIR_ATTEMPTS = 32;

export interface UdpPair {
  /** Our RTP and RTCP ports (server_port=C-D). */
  readonly serverPorts: [number, number];
  /** Sends one RTP (`rtcp` false) or RTCP packet to the client, given whole or as parts of one datagram (the
   * reader's own RTP header and the payload every reader shares: never copied here); a full socket buffer just
   * drops it. Bun reads the parts after send returns: they must not change afterwards. */
  send(packet: Buffer | Buffer[], rtcp: boolean): void;
  close(): void;
}

export interface UdpPairOptions {
  /** The RTSP connection's local address: our ports are bound there. */
  localAddress: string;
  /** The client's address (from the RTSP connection, never from the Transport header's destination=). */
  clientAddress: string;
  clientPorts: [number, number];
  /** A packet from the client on our RTCP port (receiver reports keep the session alive). */
  onRtcp(): void;
  onError(error: Error): void;
}

function bindUdp(address: string, port: number): Promise<UdpSocket> {
  return new Promise((resolve, reject) => {
    const socket = createSocket({ type: isIPv6(address) ? "udp6" : "udp4" });
    const failed = (error: Error) => {
      socket.close();
      reject(error);
    };
    socket.once("error", failed);
    socket.bind({ port, address, exclusive: true }, () => {
      socket.off("error", failed);
      resolve(socket);
    });
  });
}

const closeQuietly = (socket: UdpSocket) => {
  try {
    socket.close();
  } catch {
    // already closed
  }
};

/** Binds an even ephemeral port and the odd one after it, retrying when the kernel hands out an odd port or
 * the next one is taken. */
export async function openUdpPair(options: UdpPairOptions): Promise<UdpPair> {
  const local = options.localAddress.replace(/^::ffff:(?=\d+\.)/, "");
  const client = options.clientAddress.replace(/^::ffff:(?=\d+\.)/, "");
  for (let attempt = 0; attempt < PORT_PAIR_ATTEMPTS; attempt++) {
    const rtp = await bindUdp(local, 0);
    const port = rtp.address().port;
    if (port % 2 !== 0 || port >= 65535) {
      closeQuietly(rtp);
      continue;
    }
    let rtcp: UdpSocket;
    try {
      rtcp = await bindUdp(local, port + 1);
    } catch {
      closeQuietly(rtp);
      continue;
    }
    return pairOf(rtp, rtcp, [port, port + 1], client, options);
  }
  throw new Error(`no free even/odd UDP port pair on ${local} after ${PORT_PAIR_ATTEMPTS} tries`);
}

function pairOf(rtp: UdpSocket, rtcp: UdpSocket, serverPorts: [number, number], client: string, options: UdpPairOptions): UdpPair {
  let closed = false;
  const [rtpPort, rtcpPort] = options.clientPorts;
  for (const socket of [rtp, rtcp]) socket.on("error", (error) => options.onError(error));
  // Clients also send a few packets to our RTP port to open NAT mappings: those are ignored.
  rtp.on("message", () => {});
  rtcp.on("message", (_packet, from) => {
    if (from.address.replace(/^::ffff:/, "") === client) options.onRtcp();
  });
  return {
    serverPorts,
    send(packet, isRtcp) {
      if (closed) return;
      const datagram = Array.isArray(packet) ? packet.filter((part) => part.length > 0) : packet;
      (isRtcp ? rtcp : rtp).send(datagram, isRtcp ? rtcpPort : rtpPort, client);
    },
    close() {
      if (closed) return;
      closed = true;
      closeQuietly(rtp);
      closeQuietly(rtcp);
    },
  };
}

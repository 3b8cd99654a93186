// The simulated printer's UDP discovery: any datagram to 48899 gets the 276-byte reply, sent to the datagram's
// source address and port from the printer's own address.
import { createSocket } from "node:dgram";
import { encodeDiscoveryReply } from "../../flashforge/discovery-codec.ts";
import type { FlashforgeSimState } from "./state.ts";

/** FlashForge's USB vendor id; the Adventurer 5M's product id (0x0024 is the 5M Pro); the product type is the simulator's own choice. */
export const SIM_VENDOR_ID = 0x2b71;
export const SIM_PRODUCT_ID = 0x0023;
export const SIM_PRODUCT_TYPE = 0x5a02;

export interface SimDiscovery {
  readonly name: "discovery";
  readonly probes: number;
  stop(): Promise<void>;
}

export async function startSimDiscovery(state: FlashforgeSimState): Promise<SimDiscovery> {
  const { identity } = state;
  const socket = createSocket({ type: "udp4", reuseAddr: true });
  let probes = 0;
  socket.on("error", () => {});
  socket.on("message", (_probe, from) => {
    probes++;
    const reply = encodeDiscoveryReply({
      name: identity.name, serial: identity.serial, commandPort: identity.ports.tcp, httpPort: identity.ports.http,
      vendorId: SIM_VENDOR_ID, productId: SIM_PRODUCT_ID, productType: SIM_PRODUCT_TYPE, status: state.status === "ready" ? 0 : 1,
    });
    socket.send(reply, from.port, from.address);
  });
  await new Promise<void>((resolve, reject) => {
    socket.once("error", reject);
    socket.bind(identity.ports.discovery, identity.host, () => resolve());
  });
  return {
    name: "discovery",
    get probes() {
      return probes;
    },
    stop: () => new Promise<void>((resolve) => socket.close(() => resolve())),
  };
}

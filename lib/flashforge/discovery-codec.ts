// The 276-byte reply an Adventurer 5M sends to a UDP discovery probe on 48899. Layout from
// GhostTypes/flashforge-emulator-v2 (UdpDiscoveryServer.ts) and ff-5mp-api-ts (name at 0, serial at 0x92):
// name (NUL padded) at 0x00, u16 BE command port 0x84, vendor id 0x86, product id 0x88, 0x8A (status on some
// firmware, reserved on others), product type 0x8C, HTTP port 0x8E, status 0x90, serial (NUL padded) at 0x92.
// There is no address field: clients take the printer's address from the datagram's source.

export const DISCOVERY_REPLY_BYTES = 276;
const NAME_AT = 0x00;
const NAME_BYTES = 0x84;
const COMMAND_PORT_AT = 0x84;
const VENDOR_ID_AT = 0x86;
const PRODUCT_ID_AT = 0x88;
const STATUS_ALT_AT = 0x8a;
const PRODUCT_TYPE_AT = 0x8c;
const HTTP_PORT_AT = 0x8e;
const STATUS_AT = 0x90;
const SERIAL_AT = 0x92;
const SERIAL_BYTES = DISCOVERY_REPLY_BYTES - SERIAL_AT;

export interface DiscoveryReply {
  name: string;
  serial: string;
  commandPort: number;
  httpPort: number;
  vendorId: number;
  productId: number;
  productType: number;
  status: number;
}

export function encodeDiscoveryReply(reply: DiscoveryReply): Buffer {
  const out = Buffer.alloc(DISCOVERY_REPLY_BYTES);
  // One byte is kept NUL so C clients reading a string always find the end.
  Buffer.from(reply.name, "utf8").copy(out, NAME_AT, 0, NAME_BYTES - 1);
  out.writeUInt16BE(reply.commandPort, COMMAND_PORT_AT);
  out.writeUInt16BE(reply.vendorId, VENDOR_ID_AT);
  out.writeUInt16BE(reply.productId, PRODUCT_ID_AT);
  out.writeUInt16BE(reply.productType, PRODUCT_TYPE_AT);
  out.writeUInt16BE(reply.httpPort, HTTP_PORT_AT);
  out.writeUInt16BE(reply.status, STATUS_AT);
  Buffer.from(reply.serial, "utf8").copy(out, SERIAL_AT, 0, SERIAL_BYTES - 1);
  return out;
}

export function decodeDiscoveryReply(bytes: Buffer): DiscoveryReply {
  if (bytes.length < SERIAL_AT + 1) throw new Error(`a discovery reply has ${DISCOVERY_REPLY_BYTES} bytes; this one has ${bytes.length}`);
  return {
    name: cString(bytes.subarray(NAME_AT, NAME_AT + NAME_BYTES)),
    serial: cString(bytes.subarray(SERIAL_AT, SERIAL_AT + SERIAL_BYTES)),
    commandPort: bytes.readUInt16BE(COMMAND_PORT_AT),
    httpPort: bytes.readUInt16BE(HTTP_PORT_AT),
    vendorId: bytes.readUInt16BE(VENDOR_ID_AT),
    productId: bytes.readUInt16BE(PRODUCT_ID_AT),
    productType: bytes.readUInt16BE(PRODUCT_TYPE_AT),
    status: bytes.readUInt16BE(STATUS_AT) || bytes.readUInt16BE(STATUS_ALT_AT),
  };
}

/**
 * The printer's own reply with what must change for clients to reach the proxy: the name and serial we were
 * configured with and our ports. Unknown fields (vendor, product, status) stay exactly as the printer sent them.
 */
export function rewriteDiscoveryReply(original: Buffer, changes: { name: string; serial: string; commandPort: number; httpPort: number }): Buffer {
  const out = Buffer.alloc(Math.max(DISCOVERY_REPLY_BYTES, original.length));
  original.copy(out);
  out.fill(0, NAME_AT, NAME_AT + NAME_BYTES);
  Buffer.from(changes.name, "utf8").copy(out, NAME_AT, 0, NAME_BYTES - 1);
  out.writeUInt16BE(changes.commandPort, COMMAND_PORT_AT);
  out.writeUInt16BE(changes.httpPort, HTTP_PORT_AT);
  out.fill(0, SERIAL_AT, SERIAL_AT + SERIAL_BYTES);
  Buffer.from(changes.serial, "utf8").copy(out, SERIAL_AT, 0, SERIAL_BYTES - 1);
  return out;
}

function cString(bytes: Buffer): string {
  const end = bytes.indexOf(0);
  return bytes.subarray(0, end === -1 ? bytes.length : end).toString("utf8");
}

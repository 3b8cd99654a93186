// Every pure wire codec the simulator and the proxy share, held against byte captures and documented layouts from
// public sources (tests/golden/README.md names each file's source). A codec that agrees with itself proves nothing;
// these bytes were made without our code (by the documents' tables, or by the named third-party code).
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import mqttPacket from "mqtt-packet";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import type { Socket } from "node:net";
import type { TLSSocket } from "node:tls";
import { decodeBindFrame, detectReply, detectRequest, encodeBindFrame, isDetectRequest } from "../lib/bambu/bind-codec.ts";
import { createFrameParser, decodeLogin, encodeFrameHeader, encodeLogin, type ParseEvent } from "../lib/bambu/chamber-codec.ts";
import { ipv4ToLittleEndian } from "../lib/bambu/mqtt-state.ts";
import { reportTopic, requestTopic } from "../lib/bambu/mqtt-topics.ts";
import { createPacketReader, encodePublish, type Packet } from "../lib/bambu/mqtt-wire.ts";
import { announcementOf, encodeNotify, parseSsdp } from "../lib/bambu/ssdp-message.ts";
import { isFramedLoginHeader, readTunnelLogin } from "../lib/bambu/tunnel.ts";
import { decodeDiscoveryReply, encodeDiscoveryReply } from "../lib/flashforge/discovery-codec.ts";
import { createReplyReader, decodeFileList, encodeFileList, encodeThumbnail, replyFields } from "../lib/flashforge/tcp-codec.ts";
import { simIdentity } from "../lib/sim/bambu.ts";
import { createSimPrint } from "../lib/sim/print-state.ts";
import { simAnnouncement } from "../lib/sim/ssdp.ts";
import { encodeTunnelLogin, readSimTunnelLogin, simTunnelLoginAccepted } from "../lib/sim/tunnel.ts";
import { simReply } from "../lib/sim/flashforge/replies.ts";
import { createSimState } from "../lib/sim/flashforge/state.ts";

const golden = (name: string) => readFileSync(join(import.meta.dir, "golden", name));
const goldenJson = (name: string) => JSON.parse(golden(name).toString("utf8"));
const CODE = "12345678";

/** A socket-free stand-in for a socket: the golden bytes are what the peer sent. */
function peerSent(bytes: Buffer): PassThrough {
  const stream = new PassThrough();
  stream.end(bytes);
  return stream;
}

describe("chamber camera (Doridian/OpenBambuAPI video.md)", () => {
  test("the viewer login is the documented 80 bytes, and reads back as bblp and the code", () => {
    expect(encodeLogin({ username: "bblp", accessCode: CODE })).toEqual(golden("chamber-login.bin"));
    expect(decodeLogin(golden("chamber-login.bin"))).toEqual({ username: "bblp", accessCode: CODE });
  });

  test("the frame header is the documented 16 bytes, and the parser cuts a frame after it", () => {
    const header = golden("chamber-frame-header.bin");
    expect(encodeFrameHeader(74_565)).toEqual(header);
    const jpeg = Buffer.alloc(74_565, 0x55);
    jpeg.set([0xff, 0xd8], 0);
    jpeg.set([0xff, 0xd9], jpeg.length - 2);
    const events: ParseEvent[] = [];
    const parser = createFrameParser((event) => events.push(event));
    parser.push(Buffer.concat([header, jpeg]));
    expect(events.length).toBe(1);
    expect(events[0]!.kind === "frame" && events[0]!.frame.header.equals(header) && events[0]!.frame.jpeg.equals(jpeg)).toBe(true);
  });
});

describe("bind/detect (maziggy/bambuddy bind_server.py)", () => {
  test("a slicer's detect request is framed byte for byte as Bambuddy frames it", () => {
    const request = golden("bind-detect-request.bin");
    expect(encodeBindFrame(detectRequest("20000"))).toEqual(request);
    const decoded = decodeBindFrame(request);
    expect(decoded.kind === "frame" && decoded.bytes === request.length && isDetectRequest(decoded.message)).toBe(true);
  });

  test("the printer's reply keeps the firmware's key order and integer sequence_id", () => {
    const reply = golden("bind-detect-reply.bin");
    const identity = { serial: "00M09A350100123", modelCode: "BL-P001", name: "x1c", firmware: "01.08.05.00" };
    expect(encodeBindFrame(detectReply(identity, 3021))).toEqual(reply);
    const decoded = decodeBindFrame(reply);
    expect(decoded.kind === "frame" && (decoded.message as { login: { sequence_id: unknown } }).login.sequence_id).toBe(3021);
  });
});

describe("file tunnel login (OpenBambuAPI lan-file-tunnel.md; ../shared/PROTOCOLS.md)", () => {
  test("the proxy reads both documented forms and finds user and code", async () => {
    expect(isFramedLoginHeader(golden("tunnel-login-framed.bin").subarray(0, 16))).toBe(true);
    for (const name of ["tunnel-login-framed.bin", "tunnel-login-bare.bin"]) {
      const login = await readTunnelLogin(peerSent(golden(name)) as unknown as Socket, 1_000);
      expect(login.bytes).toEqual(golden(name));
      expect(login.credentials!.username.toString("latin1").replace(/\0+$/, "")).toBe("bblp");
      expect(login.credentials!.accessCode.toString("latin1").replace(/\0+$/, "")).toBe(CODE);
    }
  });

  test("the simulated printer writes the framed form byte for byte and accepts both", async () => {
    expect(Buffer.concat(encodeTunnelLogin(CODE))).toEqual(golden("tunnel-login-framed.bin"));
    for (const name of ["tunnel-login-framed.bin", "tunnel-login-bare.bin"]) {
      const login = await readSimTunnelLogin(peerSent(golden(name)) as unknown as TLSSocket, 1_000);
      expect(login.kind === "login" && simTunnelLoginAccepted(login, CODE) && !simTunnelLoginAccepted(login, "87654321")).toBe(true);
    }
    expect((await readSimTunnelLogin(peerSent(golden("chamber-login.bin")) as unknown as TLSSocket, 1_000)).kind).toBe("camera");
  });
});

describe("SSDP NOTIFY", () => {
  test("a NOTIFY as jonans/bsnotify spoofs a P1P's is read as that printer's announcement", () => {
    const message = parseSsdp(golden("ssdp-notify-bsnotify.txt"));
    expect(message?.kind).toBe("notify");
    expect(announcementOf(message!)).toMatchObject({
      location: "192.168.1.18", serial: "01S00A000000001", modelCode: "C11", name: "3DP-01S-001", connect: "lan", bind: "free", seclink: "secure",
    });
  });

  test("the announcement is written with PROTOCOLS.md's headers in its order", () => {
    const announcement = {
      location: "192.168.1.18", serial: "01P00A000000001", modelCode: "C12", name: "p1s", version: "01.08.00.00",
      signal: "-44", connect: "lan", bind: "free", seclink: "secure", inf: "", cap: "1",
    };
    expect(encodeNotify(announcement).toString()).toBe(golden("ssdp-notify-protocols.txt").toString());
    expect(announcementOf(parseSsdp(golden("ssdp-notify-protocols.txt"))!)).toEqual(announcement);
  });

  test("the simulated printer announces what a printer says: its serial, model code, LAN mode and its own address", () => {
    const identity = simIdentity({ host: "127.0.33.1", model: "P1S" });
    const heard = announcementOf(parseSsdp(encodeNotify(simAnnouncement(identity)))!)!;
    expect(heard).toMatchObject({ location: "127.0.33.1", serial: identity.serial, modelCode: "C12", connect: "lan" });
  });
});

describe("MQTT (MQTT 3.1.1 §3.3; OpenBambuAPI mqtt.md)", () => {
  test("a pushall request is one PUBLISH, byte for byte as the standard lays it out, and reads back", () => {
    const publish = golden("mqtt-pushall-publish.bin");
    const payload = Buffer.from(JSON.stringify({ pushing: { sequence_id: "0", command: "pushall" } }));
    expect(encodePublish(requestTopic("01P00A000000001"), payload)).toEqual(publish);
    const packets: Packet[] = [];
    createPacketReader(() => 1 << 20, (packet) => packets.push(packet)).push(publish);
    expect(packets.length).toBe(1);
    const read = packets[0] as Packet & { topic: string; payload: Buffer };
    expect(read.topic).toBe("device/01P00A000000001/request");
    expect(Buffer.from(read.payload)).toEqual(payload);
  });

  test("the documented push_status report goes out on the report topic byte-exact", () => {
    const report = golden("mqtt-push-status-report.json");
    const packets: Packet[] = [];
    const framed = encodePublish(reportTopic("01P00A000000001"), report);
    // mqtt-packet, an independent encoder, frames the same PUBLISH (remaining length over several bytes) byte for byte.
    expect(framed).toEqual(mqttPacket.generate({ cmd: "publish", topic: reportTopic("01P00A000000001"), payload: report, qos: 0, dup: false, retain: false }));
    createPacketReader(() => 1 << 20, (packet) => packets.push(packet)).push(framed);
    expect(Buffer.from((packets[0] as Packet & { payload: Buffer }).payload)).toEqual(report);
  });

  test("the simulated printer's full report carries the documented fields with the documented JSON types", () => {
    const documented = goldenJson("mqtt-push-status-report.json").print as Record<string, unknown>;
    const sim = createSimPrint(simIdentity({ host: "127.0.33.1", model: "P1S" })).full("0").print as Record<string, unknown>;
    const kind = (v: unknown) => (Array.isArray(v) ? "array" : v === null ? "null" : typeof v);
    const shared = Object.keys(documented).filter((key) => key in sim);
    for (const key of shared) expect(`${key}: ${kind(sim[key])}`).toBe(`${key}: ${kind(documented[key])}`);
    for (const key of ["gcode_state", "mc_percent", "mc_remaining_time", "nozzle_temper", "bed_temper", "subtask_name", "gcode_file", "lights_report", "ams"]) {
      expect(shared).toContain(key);
    }
  });

  test("the simulated printer answers the documented project_file request with its echo and a result", () => {
    const request = goldenJson("mqtt-project-file-request.json");
    const [reply] = createSimPrint(simIdentity({ host: "127.0.33.1", model: "P1S" })).command(request);
    expect(reply!.print).toMatchObject({ command: "project_file", sequence_id: "0", result: expect.any(String) });
  });

  test("net.info ip is the address as a little-endian u32 (PROTOCOLS.md: 192.168.1.18 -> 302098624)", () => {
    expect(ipv4ToLittleEndian("192.168.1.18")).toBe(302_098_624);
  });
});

describe("FlashForge TCP 8899 (Parallel-7/flashforge-api-docs legacy-api.md)", () => {
  const sim = createSimState({
    name: "Adventurer 5M Pro", serial: "SNMOMC9900728", checkCode: CODE, host: "127.0.33.1",
    ports: { tcp: 8899, http: 8898, discovery: 48899, camera: 8080 }, machineType: "Flashforge Adventurer 5M Pro", firmware: "v3.1.5", mac: "88:A9:A7:97:B2:BF",
  });
  /** Each line's key ("Machine Type:") or, without a colon, the line with its numbers masked. */
  const shape = (text: string) => text.split(/\r?\n/).map((line) => (/^[^:]+:/.exec(line)?.[0] ?? line.replace(/\d+/g, "N")));

  for (const code of ["M601", "M602", "M115", "M27", "M119"]) {
    test(`the proxy reads the documented ${code} reply whole, and the simulator's reply has its lines`, () => {
      const documented = golden(`flashforge-${code.toLowerCase()}-reply.txt`);
      const reader = createReplyReader();
      reader.expect(code);
      reader.push(documented);
      const step = reader.next();
      expect(step.kind === "reply" && step.reply.bytes.equals(documented)).toBe(true);
      if (code === "M601" || code === "M602") return;
      expect(shape(simReply(sim, code, "").text.toString())).toEqual(shape(documented.toString()));
    });
  }

  test("M115 fields read as documented", () => {
    expect(replyFields(golden("flashforge-m115-reply.txt").toString())).toMatchObject({
      "Machine Type": "Flashforge Adventurer 5M Pro", Firmware: "v3.1.5", SN: "SNMOMC9900728", "Mac Address": "88:A9:A7:97:B2:BF",
    });
  });

  test("the M661 file list is laid out as the documented listing shows it", () => {
    const list = golden("flashforge-m661-file-list.bin");
    const paths = decodeFileList(list);
    expect(paths.length).toBe(9);
    expect(encodeFileList(paths)).toEqual(list);
  });

  test("the M662 thumbnail starts with the documented magic and a big-endian length", () => {
    const prefix = golden("flashforge-m662-prefix.bin");
    const png = Buffer.alloc(0x79fb);
    prefix.copy(png, 0, 8);
    expect(encodeThumbnail(png).subarray(0, prefix.length)).toEqual(prefix);
  });
});

describe("FlashForge discovery reply (GhostTypes/ff-5mp-api-ts PrinterDiscovery.test.ts)", () => {
  test("the 276-byte reply is written and read at the library's offsets", () => {
    const reply = { name: "Adventurer 5M", serial: "SN123456", commandPort: 8899, httpPort: 8898, vendorId: 0x0403, productId: 0x6001, productType: 0x5a02, status: 0 };
    expect(encodeDiscoveryReply(reply)).toEqual(golden("flashforge-discovery-reply.bin"));
    expect(decodeDiscoveryReply(golden("flashforge-discovery-reply.bin"))).toEqual(reply);
  });
});

// Unit tests of the MQTT building blocks: topic filters, packet framing, the merged state and address rewriting.
import { describe, expect, test } from "bun:test";
import mqttPacket from "mqtt-packet";
import { topicMatches, validFilter } from "../lib/bambu/mqtt-topics.ts";
import { createPacketReader, encodePublish, PacketTooLarge, type Packet } from "../lib/bambu/mqtt-wire.ts";
import {
  carriesAddress, createReportState, ipv4ToLittleEndian, isStateSection, littleEndianToIpv4, mayCarryAddress, mergeInto, rewriteAddresses,
} from "../lib/bambu/mqtt-state.ts";
import { readFileSync } from "node:fs";
import { join } from "node:path";

describe("topic filters", () => {
  const topic = "device/01P00A000000001/report";
  test("match exactly what the specification says", () => {
    expect(topicMatches(topic, topic)).toBe(true);
    expect(topicMatches("device/+/report", topic)).toBe(true);
    expect(topicMatches("device/#", topic)).toBe(true);
    expect(topicMatches("#", topic)).toBe(true);
    expect(topicMatches("+/+/+", topic)).toBe(true);
    expect(topicMatches(`${topic}/#`, topic)).toBe(true); // "sport/#" matches "sport"
    expect(topicMatches("device/+/request", topic)).toBe(false);
    expect(topicMatches("device/+", topic)).toBe(false);
    expect(topicMatches("+/+", topic)).toBe(false);
    expect(topicMatches("device/01P00A000000001/report/x", topic)).toBe(false);
    expect(topicMatches("#", "$SYS/broker")).toBe(false);
  });
  test("invalid filters are recognised", () => {
    for (const bad of ["", "a/#/b", "a#", "a/b+", "+a/b", "a/\u0000"]) expect(validFilter(bad)).toBe(false);
    for (const good of ["#", "+", "a/+/b", "a/b/#", "/", "a//b"]) expect(validFilter(good)).toBe(true);
  });
});

describe("packet framing", () => {
  const publish = encodePublish("device/x/request", Buffer.from('{"a": 1 ,"b":2}'), 1, 7);
  const ping = mqttPacket.generate({ cmd: "pingreq" });

  test("packets split across chunks and packed together come out whole", () => {
    const got: Packet[] = [];
    const reader = createPacketReader(() => 1024, (p) => got.push(p));
    const stream = Buffer.concat([publish, ping, publish]);
    for (let i = 0; i < stream.length; i += 3) reader.push(stream.subarray(i, i + 3));
    expect(got.map((p) => p.cmd)).toEqual(["publish", "pingreq", "publish"]);
    const first = got[0] as Extract<Packet, { cmd: "publish" }>;
    expect(first.messageId).toBe(7);
    expect(Buffer.from(first.payload as Buffer).toString()).toBe('{"a": 1 ,"b":2}');
    expect(reader.buffered).toBe(0);
  });

  test("a plain QoS 0 PUBLISH (every report) decodes as mqtt-packet decodes it, and its frame is handed over as received", () => {
    const frames = [
      mqttPacket.generate({ cmd: "publish", topic: "device/01P/report", payload: Buffer.from('{"print":{"x":1}}'), qos: 0, retain: false, dup: false }),
      mqttPacket.generate({ cmd: "publish", topic: "device/01P/report", payload: Buffer.alloc(300, 0x61), qos: 0, retain: false, dup: false }),
      mqttPacket.generate({ cmd: "publish", topic: "t", payload: Buffer.alloc(0), qos: 0, retain: false, dup: false }),
    ];
    const got: { packet: Packet; frame: Buffer }[] = [];
    const reader = createPacketReader(() => 1 << 20, (packet, frame) => got.push({ packet, frame: Buffer.from(frame) }));
    const stream = Buffer.concat(frames);
    for (let i = 0; i < stream.length; i += 7) reader.push(stream.subarray(i, i + 7));
    const expected: Packet[] = [];
    const parser = mqttPacket.parser({ protocolVersion: 4 });
    parser.on("packet", (p: Packet) => expected.push(p));
    parser.parse(stream);
    expect(got.map((g) => g.frame)).toEqual(frames);
    for (const [i, { packet }] of got.entries()) {
      const want = expected[i] as Extract<Packet, { cmd: "publish" }>;
      const have = packet as Extract<Packet, { cmd: "publish" }>;
      expect([have.cmd, have.topic, have.qos, have.retain, have.dup, have.length]).toEqual([want.cmd, want.topic, want.qos, want.retain, want.dup, want.length]);
      expect(Buffer.from(have.payload as Buffer).equals(Buffer.from(want.payload as Buffer))).toBe(true);
    }
  });

  test("a PUBLISH with QoS, RETAIN or DUP is decoded by mqtt-packet; a plain one whose topic runs past its end is an error", () => {
    const got: Packet[] = [];
    const reader = createPacketReader(() => 1024, (p) => got.push(p));
    reader.push(mqttPacket.generate({ cmd: "publish", topic: "t", payload: Buffer.from("r"), qos: 0, retain: true, dup: false }));
    reader.push(mqttPacket.generate({ cmd: "publish", topic: "t", payload: Buffer.from("q"), qos: 1, messageId: 9, retain: false, dup: true }));
    expect(got.map((p) => p.cmd === "publish" && [p.retain, p.qos, p.dup, p.messageId])).toEqual([[true, 0, false, undefined], [false, 1, true, 9]]);
    expect(() => createPacketReader(() => 1024, () => {}).push(Buffer.from([0x30, 0x03, 0x00, 0x05, 0x61]))).toThrow();
  });

  test("a packet over the limit is refused from its header, before its body arrives", () => {
    const reader = createPacketReader(() => 64, () => {});
    const big = encodePublish("t", Buffer.alloc(1000));
    expect(() => reader.push(big.subarray(0, 5))).toThrow(PacketTooLarge);
  });

  test("garbage is an error, not a crash", () => {
    const reader = createPacketReader(() => 1024, () => {});
    expect(() => reader.push(Buffer.from([0x00, 0x02, 0xff, 0xff]))).toThrow();
    const reader2 = createPacketReader(() => 1 << 30, () => {});
    expect(() => reader2.push(Buffer.from([0x30, 0xff, 0xff, 0xff, 0xff, 0x01]))).toThrow();
  });
});

describe("merged state", () => {
  const full = {
    print: {
      command: "push_status", msg: 0, sequence_id: "1", gcode_state: "RUNNING", mc_percent: 10,
      ams: { ams: [{ id: "0", tray: [{ id: "0" }, { id: "1" }] }], tray_now: "0" }, lights_report: [{ node: "chamber_light", mode: "on" }],
    },
  };

  test("objects merge, arrays are replaced, and a full report replaces the old state", () => {
    const state = createReportState();
    expect(state.primed).toBe(false);
    state.apply(structuredClone(full));
    expect(state.primed).toBe(true);
    state.apply({ print: { command: "push_status", msg: 1, sequence_id: "2", mc_percent: 11, ams: { ams: [{ id: "0", tray: [{ id: "3" }] }] } } });
    const [reply] = state.pushallReply("77");
    const print = (reply as any).print;
    expect(print.mc_percent).toBe(11);
    expect(print.gcode_state).toBe("RUNNING");
    expect(print.ams.tray_now).toBe("0");
    expect(print.ams.ams[0].tray).toEqual([{ id: "3" }]);
    expect(print.sequence_id).toBe("77");
    expect(print.msg).toBe(0);
    state.apply({ print: { command: "push_status", msg: 0, sequence_id: "3", gcode_state: "IDLE" } });
    expect((state.pushallReply("1")[0] as any).print.mc_percent).toBeUndefined();
  });

  test("command acknowledgements are not cached; version replies are", () => {
    const state = createReportState();
    state.apply(structuredClone(full));
    state.apply({ print: { command: "pause", sequence_id: "9", result: "success", reason: "success", param: "" } });
    state.apply({ system: { command: "ledctrl", led_node: "chamber_light", sequence_id: "10", result: "success" } });
    expect((state.pushallReply("1")[0] as any).print.command).toBe("push_status");
    expect(state.sections.system).toBeUndefined();
    expect(isStateSection({ command: "pause", result: "success", sequence_id: "1" })).toBe(false);
    expect(state.versionReply("5")).toBeUndefined();
    state.apply({ info: { command: "get_version", sequence_id: "0", module: [{ name: "ota", sw_ver: "01.08.00.00" }] } });
    expect(state.versionReply("5")).toEqual({ info: { command: "get_version", sequence_id: "5", result: "success", module: [{ name: "ota", sw_ver: "01.08.00.00" }] } });
    state.stale();
    expect(state.primed).toBe(false);
  });

  test("mergeInto copies, so later changes to a report do not leak into the state", () => {
    const target = {};
    const delta = { a: { b: [1, 2] } };
    mergeInto(target, delta);
    delta.a.b.push(3);
    expect(target).toEqual({ a: { b: [1, 2] } });
  });
});

describe("address rewriting", () => {
  test("net.info[].ip is the little-endian u32 of the address", () => {
    expect(ipv4ToLittleEndian("192.168.1.18")).toBe(302098624); // PROTOCOLS.md
    expect(littleEndianToIpv4(302098624)).toBe("192.168.1.18");
    expect(ipv4ToLittleEndian("255.255.255.255")).toBe(0xffffffff);
  });

  test("non-zero net.info ips and the rtsp_url host point at the proxy; the original is untouched", () => {
    const report = {
      print: {
        net: { conf: 0, info: [{ ip: 302098624, mask: 16777215 }, { ip: 0, mask: 0 }] },
        ipcam: { rtsp_url: "rtsps://192.168.1.18:322/streaming/live/1", resolution: "1080p" },
        mc_percent: 5,
      },
    };
    expect(carriesAddress(report)).toBe(true);
    const out = rewriteAddresses(report, "10.0.0.7") as any;
    expect(out.print.net.info).toEqual([{ ip: ipv4ToLittleEndian("10.0.0.7"), mask: 16777215 }, { ip: 0, mask: 0 }]);
    expect(out.print.ipcam.rtsp_url).toBe("rtsps://10.0.0.7:322/streaming/live/1");
    expect(out.print.ipcam.resolution).toBe("1080p");
    expect(out.print.mc_percent).toBe(5);
    expect(report.print.net.info[0]!.ip).toBe(302098624);
    expect((rewriteAddresses({ print: { ipcam: { rtsp_url: "rtsps://192.168.1.18/streaming/live/1" } } }, "10.0.0.7") as any).print.ipcam.rtsp_url)
      .toBe("rtsps://10.0.0.7/streaming/live/1");
    expect((rewriteAddresses({ print: { ipcam: { rtsp_url: "disable" } } }, "10.0.0.7") as any).print.ipcam.rtsp_url).toBe("disable");
    expect(carriesAddress({ print: { mc_percent: 1 } })).toBe(false);
  });

  test("the byte search before delivery finds every report carriesAddress finds, escaped keys included", () => {
    const capture = readFileSync(join(import.meta.dir, "golden", "mqtt-push-status-x1c.json"));
    const cases = [
      capture,
      Buffer.from('{"print":{"net":{"info":[{"ip":302098624}]}}}'),
      Buffer.from('{"print":{"ipcam":{"rtsp_url":"rtsps://192.168.1.18/streaming/live/1"}}}'),
      Buffer.from('{"print":{"\\u006eet":{"info":[{"ip":302098624}]}}}'),
      Buffer.from('{"print":{"ipcam":{"rtsp\\u005furl":"rtsps://192.168.1.18/x"}}}'),
    ];
    for (const payload of cases) {
      expect(carriesAddress(JSON.parse(payload.toString()))).toBe(true);
      expect(mayCarryAddress(payload)).toBe(true);
    }
    expect(mayCarryAddress(Buffer.from('{"print":{"command":"push_status","msg":1,"nozzle_temper":220,"wifi_signal":"-41dBm"}}'))).toBe(false);
  });
});

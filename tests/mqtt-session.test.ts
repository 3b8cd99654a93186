// One MQTT client's session (lib/bambu/mqtt-session.ts) without a socket: decoded packets, printer reports, the
// printer's PUBACKs and deadlines in; plain actions out. The merged state is a real one the test feeds.
import { describe, expect, test } from "bun:test";
import { outgoing, readRequest, reportPacket } from "../lib/bambu/mqtt-requests.ts";
import {
  createMqttSession, MAX_REFUSED_PUBLISHES, type MqttAction, type MqttEvent, type MqttSession, type MqttSessionOptions,
} from "../lib/bambu/mqtt-session.ts";
import { createReportState, ipv4ToLittleEndian, type JsonObject, type ReportState } from "../lib/bambu/mqtt-state.ts";
import { createPacketReader, encode, type Packet } from "../lib/bambu/mqtt-wire.ts";

const SERIAL = "01P00A000000001";
const REPORT = `device/${SERIAL}/report`;
const REQUEST = `device/${SERIAL}/request`;
const ACCESS_CODE = "12345678";
const VIEWER_CODE = "viewer99";
const PROXY = "127.0.36.21";
const PRINTER_IP = "192.168.1.18";

const fullReport = (): JsonObject => ({
  print: {
    command: "push_status", msg: 0, sequence_id: "7", nozzle_temper: 210, gcode_state: "IDLE",
    net: { info: [{ ip: ipv4ToLittleEndian(PRINTER_IP), mask: 0 }, { ip: 0, mask: 0 }] },
    ipcam: { rtsp_url: `rtsps://${PRINTER_IP}:322/streaming/live/1` },
  },
});
const versionReport = (): JsonObject => ({
  info: { command: "get_version", sequence_id: "1", module: [{ name: "ota", sw_ver: "01.07.00.00", sn: SERIAL }] },
});

/** A session, the merged state behind it, and helpers that say what the glue would do. */
function client(options: Partial<MqttSessionOptions> = {}) {
  const state: ReportState = createReportState();
  const session: MqttSession = createMqttSession({
    serial: SERIAL, accessCode: ACCESS_CODE, viewerAccessCode: VIEWER_CODE, proxyAddress: PROXY, state,
    printerUp: true, connectTimeoutMs: 10_000, ...options,
  });
  const handle = (event: MqttEvent) => session.handle(event);
  const packet = (p: Packet) => handle({ kind: "packet", packet: p });
  return {
    state, session, handle, packet,
    connect: (password = ACCESS_CODE, extra: Partial<Extract<Packet, { cmd: "connect" }>> = {}) =>
      packet({ cmd: "connect", protocolId: "MQTT", protocolVersion: 4, clean: true, clientId: "studio", keepalive: 60, username: "bblp", password: Buffer.from(password), ...extra }),
    subscribe: (...topics: string[]) => packet({ cmd: "subscribe", messageId: 1, subscriptions: topics.map((topic) => ({ topic, qos: 1 as const })) }),
    publish: (body: unknown, qos: 0 | 1 | 2 = 0, topic = REQUEST, messageId = 9) =>
      packet({ cmd: "publish", topic, payload: Buffer.from(typeof body === "string" ? body : JSON.stringify(body)), qos, retain: false, dup: false, messageId } as Packet),
  };
}

const kinds = (actions: MqttAction[]) => actions.map((a) => a.kind);
const logs = (actions: MqttAction[]) => actions.flatMap((a) => (a.kind === "log" ? [`${a.level}: ${a.message}`] : []));
const closes = (actions: MqttAction[]) => actions.flatMap((a) => (a.kind === "close" ? [a] : []));

/** The packets of the `send` actions, decoded as the client would read them. */
function sent(actions: MqttAction[]): Packet[] {
  const packets: Packet[] = [];
  const reader = createPacketReader(() => 1 << 20, (p) => void packets.push(p));
  for (const a of actions) if (a.kind === "send") reader.push(a.packet);
  return packets;
}
const sentReports = (actions: MqttAction[]) =>
  sent(actions).flatMap((p) => (p.cmd === "publish" ? [{ topic: p.topic, body: JSON.parse(p.payload.toString()) as JsonObject }] : []));

describe("login", () => {
  test("the access code logs in as owner: CONNACK 0, the idle deadline at 1.5 x its keepalive", () => {
    const c = client();
    const actions = c.connect();
    const accept = actions.find((a) => a.kind === "accept");
    expect(accept).toMatchObject({ kind: "accept", role: "owner", clientId: "studio", idleMs: 90_000 });
    expect([...(accept as { connack: Buffer }).connack]).toEqual([0x20, 0x02, 0x00, 0x00]);
    expect(logs(actions)).toContain('info: connected as owner (MQTT 3.1.1, id "studio")');
    expect(c.session.phase).toBe("open");
  });

  test("the viewer code logs in as viewer; MQTT 3.1 is answered in 3.1", () => {
    const c = client();
    const actions = c.connect(VIEWER_CODE, { protocolId: "MQIsdp", protocolVersion: 3 });
    expect(actions.find((a) => a.kind === "accept")).toMatchObject({ role: "viewer" });
    expect(logs(actions)).toContain('info: connected as viewer (MQTT 3.1, id "studio")');
  });

  test("a wrong code or user gets CONNACK 5 and nothing it sends afterwards is read", () => {
    for (const [password, username, line] of [["00000000", "bblp", "wrong access code"], [ACCESS_CODE, "admin", 'user "admin" (expected bblp)']] as const) {
      const c = client();
      const actions = c.connect(password, { username });
      expect(kinds(actions)).toEqual(["log", "refuse"]);
      expect([...(actions[1] as { connack: Buffer }).connack]).toEqual([0x20, 0x02, 0x00, 0x05]);
      expect(logs(actions)).toEqual([`warn: refused login: ${line}`]);
      expect(c.connect()).toEqual([]);
      expect(c.session.phase).toBe("refused");
    }
  });

  test("a viewer code is refused when the printer has none", () => {
    const c = client({ viewerAccessCode: undefined });
    expect(kinds(c.connect(VIEWER_CODE))).toEqual(["log", "refuse"]);
  });

  test("MQTT 5 gets CONNACK 1 (unacceptable protocol version), even with the right code", () => {
    const actions = client().connect(ACCESS_CODE, { protocolVersion: 5 });
    expect(kinds(actions)).toEqual(["log", "refuse"]);
    expect([...(actions[1] as { connack: Buffer }).connack]).toEqual([0x20, 0x02, 0x00, 0x01]);
  });

  test("a packet before CONNECT closes; a CONNECT behind it in the same batch is not handled", () => {
    const c = client();
    const first = c.packet({ cmd: "pingreq" });
    expect(logs(first)).toEqual(["info: sent pingreq before CONNECT; closing"]);
    expect(closes(first)).toEqual([{ kind: "close", why: undefined, level: "info" }]);
    // Before the session split, the next packet of the batch logged the client in on the destroyed socket.
    expect(c.connect()).toEqual([]);
  });

  test("no CONNECT in time closes; the connect deadline means nothing after login", () => {
    const late = client({ connectTimeoutMs: 3_000 });
    const actions = late.handle({ kind: "timeout", deadline: "connect" });
    expect(logs(actions)).toEqual(["info: no CONNECT within 3 s; closing"]);
    expect(kinds(actions)).toEqual(["log", "close"]);
    const c = client();
    c.connect();
    expect(c.handle({ kind: "timeout", deadline: "connect" })).toEqual([]);
  });

  test("malformed bytes close, before login with the peer's line, after it as a disconnect", () => {
    const before = client().handle({ kind: "malformed", message: "packet of 9000 bytes is over the limit of 8192" });
    expect(logs(before)).toEqual(["warn: closing: malformed or oversized MQTT (packet of 9000 bytes is over the limit of 8192)"]);
    const c = client();
    c.connect();
    expect(closes(c.handle({ kind: "malformed", message: "bad" }))).toEqual([{ kind: "close", why: "malformed or oversized MQTT (bad)", level: "warn" }]);
  });
});

describe("keepalive", () => {
  test("PINGREQ gets PINGRESP; silence past the deadline closes with its reason", () => {
    const c = client();
    c.connect(ACCESS_CODE, { keepalive: 2 });
    expect(sent(c.packet({ cmd: "pingreq" })).map((p) => p.cmd)).toEqual(["pingresp"]);
    expect(closes(c.handle({ kind: "timeout", deadline: "idle" }))).toEqual([{ kind: "close", why: "silent for 3 s (1.5 x its keepalive)", level: "info" }]);
    expect(c.packet({ cmd: "pingreq" })).toEqual([]);
  });

  test("keepalive 0: the no-keepalive bound, with its own reason", () => {
    const c = client({ noKeepaliveIdleMs: 1_500 });
    expect(c.connect(ACCESS_CODE, { keepalive: 0 }).find((a) => a.kind === "accept")).toMatchObject({ idleMs: 1_500 });
    expect(closes(c.handle({ kind: "timeout", deadline: "idle" }))[0]?.why).toBe("no packet for 1.5 s from a client that asked for no keepalive (0)");
  });

  test("DISCONNECT closes without a reason; an unexpected packet closes with one", () => {
    const c = client();
    c.connect();
    expect(c.packet({ cmd: "disconnect" })).toEqual([{ kind: "close", why: undefined, level: "info" }, { kind: "log", level: "debug", message: "disconnected" }]);
    const d = client();
    d.connect();
    expect(closes(d.connect())).toEqual([{ kind: "close", why: "sent an unexpected connect", level: "info" }]);
  });
});

describe("subscriptions", () => {
  test("matching filters take reports, QoS granted at most 1, invalid filters 0x80; UNSUBSCRIBE stops them", () => {
    const c = client();
    c.connect();
    const actions = c.subscribe("device/+/report", "a/#/b", "other/topic");
    expect(sent(actions)).toMatchObject([{ cmd: "suback", messageId: 1, granted: [1, 0x80, 1] }]);
    expect(actions).toContainEqual({ kind: "reports", wanted: true });
    expect(logs(actions)).toEqual(['info: invalid topic filter "a/#/b"']);
    expect(c.subscribe("#").some((a) => a.kind === "reports")).toBe(false); // already taking them
    const partly = c.packet({ cmd: "unsubscribe", messageId: 2, unsubscriptions: ["device/+/report"] });
    expect(partly.some((a) => a.kind === "reports")).toBe(false); // "#" still matches
    const all = c.packet({ cmd: "unsubscribe", messageId: 3, unsubscriptions: ["#"] });
    expect(sent(all).map((p) => p.cmd)).toEqual(["unsuback"]);
    expect(all).toContainEqual({ kind: "reports", wanted: false });
  });

  test("filters past the bound get 0x80, said once per client; one already held is granted again", () => {
    const c = client({ maxSubscriptions: 2 });
    c.connect();
    const first = c.subscribe("a", "b", "c", "d");
    expect(sent(first)).toMatchObject([{ granted: [1, 1, 0x80, 0x80] }]);
    expect(logs(first)).toEqual(['warn: refused topic filter "c" and any further ones: a client may hold 2 subscriptions']);
    const again = c.subscribe("a", "e");
    expect(sent(again)).toMatchObject([{ granted: [1, 0x80] }]);
    expect(logs(again)).toEqual([]);
  });

  test("the 64-filter default bound", () => {
    const c = client();
    c.connect();
    const topics = Array.from({ length: 65 }, (_, i) => `t/${i}`);
    const granted = (sent(c.subscribe(...topics))[0] as { granted: number[] }).granted;
    expect(granted.filter((g) => g === 0x80).length).toBe(1);
    expect(granted[64]).toBe(0x80);
  });

  test("a new report subscriber gets the merged state at once, its addresses rewritten to the proxy's", () => {
    const c = client();
    c.state.apply(fullReport());
    c.connect();
    const actions = c.subscribe(REPORT);
    expect(actions).toContainEqual({ kind: "count", counter: "cached" });
    const [state] = sentReports(actions);
    expect(state?.topic).toBe(REPORT);
    const print = state!.body.print as JsonObject;
    expect(print).toMatchObject({ command: "push_status", msg: 0, sequence_id: "0", nozzle_temper: 210 });
    expect(print.net).toEqual({ info: [{ ip: ipv4ToLittleEndian(PROXY), mask: 0 }, { ip: 0, mask: 0 }] });
    expect(print.ipcam).toEqual({ rtsp_url: `rtsps://${PROXY}:322/streaming/live/1` });
    expect(sentReports(c.subscribe("device/#"))).toEqual([]); // it had them already
  });
});

describe("the publish ACL and viewers", () => {
  const loggedIn = (password = ACCESS_CODE) => {
    const c = client();
    c.connect(password);
    c.subscribe(REPORT);
    return c;
  };

  test("only the request topic, and only a JSON object, reaches the printer", () => {
    expect(readRequest(REPORT, Buffer.from("{}"), REQUEST)).toEqual({ kind: "refused", why: `only ${REQUEST} reaches the printer` });
    expect(readRequest(REQUEST, Buffer.from("not json"), REQUEST)).toEqual({ kind: "refused", why: "the payload is not JSON" });
    expect(readRequest(REQUEST, Buffer.from("[1]"), REQUEST)).toEqual({ kind: "refused", why: "the payload is not a JSON object" });
    expect(readRequest(REQUEST, Buffer.from('{"print":{"command":"pause"}}'), REQUEST)).toEqual({ kind: "command", what: "pause" });
    expect(readRequest(REQUEST, Buffer.from('{"pushing":{"command":"pushall","sequence_id":5}}'), REQUEST)).toEqual({ kind: "cached", answer: "state", sequenceId: "5" });
  });

  test("a refused QoS 0 publish is a log line; the 16th closes the client", () => {
    const c = loggedIn();
    for (let i = 1; i < MAX_REFUSED_PUBLISHES; i++) {
      const actions = c.publish({ print: {} }, 0, "device/other/request");
      expect(kinds(actions)).toEqual(["count", "log"]);
    }
    const last = closes(c.publish({ print: {} }, 0, "device/other/request"));
    expect(last[0]?.why).toBe(`refused a publish to "device/other/request": only ${REQUEST} reaches the printer (16 refused publishes: the client keeps sending what the printer does not take)`);
  });

  test("a refused QoS 1 publish closes the client unacknowledged", () => {
    const actions = loggedIn().publish("nope", 1);
    expect(sent(actions)).toEqual([]);
    expect(closes(actions)).toEqual([{ kind: "close", why: `refused a publish to "${REQUEST}": the payload is not JSON`, level: "warn" }]);
  });

  test("a viewer's commands never reach the printer; its pushall waits for the merged state", () => {
    const c = loggedIn(VIEWER_CODE);
    const command = c.publish({ print: { command: "stop", sequence_id: "3" } });
    expect(command.some((a) => a.kind === "publish")).toBe(false);
    expect(logs(command)).toEqual([`warn: refused a publish to "${REQUEST}": clients using viewer_access_code may not send commands`]);
    const pushall = c.publish({ pushing: { command: "pushall", sequence_id: "41" } }, 1, REQUEST, 12);
    expect(sent(pushall)).toMatchObject([{ cmd: "puback", messageId: 12 }]);
    expect(pushall.some((a) => a.kind === "publish")).toBe(false);
    expect(c.session.waiting).toBe(true);
    expect(c.handle({ kind: "report" })).toEqual([]); // nothing primed yet
    c.state.apply(fullReport());
    const answered = sentReports(c.handle({ kind: "report" }));
    expect(answered[0]?.body.print).toMatchObject({ sequence_id: "41", msg: 0 });
    expect(c.session.waiting).toBe(false);
  });
});

describe("requests for the printer", () => {
  const owner = (printerUp = true) => {
    const c = client({ printerUp });
    c.connect();
    c.subscribe(REPORT);
    return c;
  };
  const publishAction = (actions: MqttAction[]) => actions.find((a): a is Extract<MqttAction, { kind: "publish" }> => a.kind === "publish");

  test("QoS 1: forwarded byte for byte, PUBACK only after the printer's", () => {
    const c = owner();
    const body = '{"print":{"command":"pause","sequence_id":"8"}}';
    const actions = c.publish(body, 1, REQUEST, 77);
    const forward = publishAction(actions)!;
    expect(forward.payload.toString()).toBe(body);
    expect(forward.qos).toBe(1);
    expect(sent(actions)).toEqual([]);
    expect(sent(c.handle({ kind: "printer-ack", id: forward.id, delivered: true }))).toMatchObject([{ cmd: "puback", messageId: 77 }]);
    expect(c.handle({ kind: "printer-ack", id: forward.id, delivered: true })).toEqual([]); // once only
  });

  test("QoS 2 is passed on as QoS 1 and answered with PUBREC, then PUBCOMP", () => {
    const c = owner();
    const forward = publishAction(c.publish({ print: { command: "resume" } }, 2, REQUEST, 5))!;
    expect(forward.qos).toBe(1);
    expect(sent(c.handle({ kind: "printer-ack", id: forward.id, delivered: true }))).toMatchObject([{ cmd: "pubrec", messageId: 5 }]);
    expect(sent(c.packet({ cmd: "pubrel", messageId: 5 }))).toMatchObject([{ cmd: "pubcomp", messageId: 5 }]);
  });

  test("a QoS 1 request the printer never acknowledged closes the client; a QoS 0 one is a log line", () => {
    const c = owner();
    const one = publishAction(c.publish({ print: { command: "pause" } }, 1))!;
    const zero = publishAction(c.publish({ print: { command: "resume" } }, 0))!;
    expect(logs(c.handle({ kind: "printer-ack", id: zero.id, delivered: false }))).toEqual(['warn: the printer session dropped a "resume" request']);
    expect(closes(c.handle({ kind: "printer-ack", id: one.id, delivered: false }))[0]?.why).toBe("the printer did not acknowledge a request; the client may resend it");
  });

  test("a printer with too much waiting for it: the request is refused", () => {
    const c = owner();
    const forward = publishAction(c.publish({ print: { command: "pause" } }))!;
    const actions = c.handle({ kind: "printer-busy", id: forward.id, backlog: 300_000 });
    expect(actions[0]).toEqual({ kind: "count", counter: "refused" });
    expect(logs(actions)).toEqual([`warn: refused a publish to "${REQUEST}": the printer is not taking requests as fast as they come (300000 bytes waiting for it)`]);
  });

  test("while the printer is away a command is dropped (QoS 1: closed); pushall waits for it", () => {
    const c = owner(false);
    expect(logs(c.publish({ print: { command: "pause" } }))).toEqual(['warn: printer not connected: dropped a "pause" request']);
    const pushall = c.publish({ pushing: { command: "pushall", sequence_id: "2" } });
    expect(publishAction(pushall)).toBeUndefined();
    expect(c.session.waiting).toBe(true);
    c.handle({ kind: "printer", up: true });
    expect(publishAction(c.publish({ print: { command: "pause" } }))).toBeDefined();
    c.handle({ kind: "printer", up: false });
    expect(closes(c.publish({ print: { command: "pause" } }, 1))[0]?.why).toBe("cannot deliver a QoS 1 request while the printer is away");
  });

  test("pushall from the merged state, with the client's sequence_id, not asked of the printer", () => {
    const c = owner();
    c.state.apply(fullReport());
    c.state.apply({ print: { command: "push_status", msg: 1, nozzle_temper: 215 } });
    const actions = c.publish({ pushing: { command: "pushall", sequence_id: "99" } }, 1, REQUEST, 4);
    expect(publishAction(actions)).toBeUndefined();
    const packets = sent(actions);
    expect(packets.map((p) => p.cmd)).toEqual(["publish", "puback"]);
    expect(sentReports(actions)[0]?.body.print).toMatchObject({ sequence_id: "99", nozzle_temper: 215, msg: 0 });
  });

  test("an owner's pushall before the state is primed goes to the printer", () => {
    const forward = publishAction(owner().publish({ pushing: { command: "pushall", sequence_id: "1" } }));
    expect(forward?.payload.toString()).toContain("pushall");
  });

  test("get_version from the cache; without one an owner asks the printer, a viewer waits", () => {
    const c = owner();
    expect(publishAction(c.publish({ info: { command: "get_version", sequence_id: "6" } }))).toBeDefined();
    c.state.apply(versionReport());
    const [reply] = sentReports(c.publish({ info: { command: "get_version", sequence_id: "6" } }));
    expect(reply?.body.info).toMatchObject({ command: "get_version", sequence_id: "6", result: "success", module: [{ name: "ota", sw_ver: "01.07.00.00" }] });

    const v = client();
    v.connect(VIEWER_CODE);
    v.subscribe(REPORT);
    v.publish({ info: { command: "get_version", sequence_id: "3" } });
    expect(v.session.waiting).toBe(true);
    v.state.apply(versionReport());
    expect(sentReports(v.handle({ kind: "report" }))[0]?.body.info).toMatchObject({ sequence_id: "3" });
  });

  test("a cached answer goes only to a client that takes reports (the PUBACK always)", () => {
    const c = client();
    c.state.apply(fullReport());
    c.connect();
    const actions = c.publish({ pushing: { command: "pushall" } }, 1, REQUEST, 3);
    expect(sent(actions).map((p) => p.cmd)).toEqual(["puback"]);
    expect(actions.some((a) => a.kind === "count")).toBe(false);
  });
});

describe("report packets", () => {
  test("a report naming the printer's address is encoded once per proxy address; others once for all", () => {
    const report = fullReport();
    const out = outgoing(Buffer.from(JSON.stringify(report)), report);
    const a = reportPacket(out, "127.0.36.1", REPORT);
    expect(reportPacket(out, "127.0.36.1", REPORT)).toBe(a);
    const b = reportPacket(out, "127.0.36.2", REPORT);
    const body = (packet: Buffer) => JSON.parse(sent([{ kind: "send", packet }]).map((p) => (p as { payload: Buffer }).payload.toString())[0]!);
    expect(body(a).print.ipcam.rtsp_url).toBe("rtsps://127.0.36.1:322/streaming/live/1");
    expect(body(b).print.net.info[0].ip).toBe(ipv4ToLittleEndian("127.0.36.2"));

    const plain = Buffer.from('{"print":{"command":"push_status","msg":1,"mc_percent":5}}');
    const delta = outgoing(plain, JSON.parse(plain.toString()));
    expect(reportPacket(delta, "127.0.36.1", REPORT)).toBe(reportPacket(delta, "127.0.36.2", REPORT));
    expect((sent([{ kind: "send", packet: reportPacket(delta, "127.0.36.1", REPORT) }])[0] as { payload: Buffer }).payload).toEqual(plain);
  });

  test("a report that is not JSON goes out as the printer sent it", () => {
    const raw = Buffer.from("\u0000not json");
    const [packet] = sent([{ kind: "send", packet: reportPacket(outgoing(raw, undefined), PROXY, REPORT) }]);
    expect(packet).toMatchObject({ cmd: "publish", topic: REPORT });
    expect((packet as { payload: Buffer }).payload).toEqual(raw);
  });

  test("packets are encoded in the client's protocol version", () => {
    const c = client();
    c.connect(ACCESS_CODE, { protocolId: "MQIsdp", protocolVersion: 3 });
    const [pingresp] = c.packet({ cmd: "pingreq" });
    expect(pingresp).toEqual({ kind: "send", packet: encode({ cmd: "pingresp" }, 3) });
  });
});

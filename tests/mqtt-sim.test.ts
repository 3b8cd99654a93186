// The simulated printer's MQTT service behaves like the firmware: third-party clients work against it directly,
// and its limits (connections, `#` and request-topic subscribers, wrong serials, wrong codes) bite as they do.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import mqttPacket from "mqtt-packet";
import { ACCESS_CODE, MQTT_PORT, PYTHON, closedPromise, collect, npmClient, rawTls, run, startSim, tempDir, until, type TestClient } from "./mqtt-helpers.ts";
import type { SimPrinter } from "../lib/sim/bambu.ts";
import type { SimMqtt } from "../lib/sim/mqtt.ts";

const SIM_HOST = "127.0.2.11";
let sim: SimPrinter;
let simMqtt: SimMqtt;
let caFile: string;
let serial: string;
let report: string;
let request: string;
const card = tempDir("pp-sim-card-");

beforeAll(async () => {
  ({ sim, mqtt: simMqtt, caFile } = await startSim(SIM_HOST, { mqttMaxClients: 2, mqttReportIntervalMs: 100, ftpRoot: card }));
  serial = sim.identity.serial;
  report = `device/${serial}/report`;
  request = `device/${serial}/request`;
});
afterAll(async () => {
  await sim?.stop();
  rmSync(card, { recursive: true, force: true });
});

/** The request Bambu Studio sends to print a .3mf from the card (OpenBambuAPI mqtt.md, print.project_file). */
const projectFile = (sequenceId: string, url: string, subtaskName: string) => ({
  print: {
    sequence_id: sequenceId, command: "project_file", param: "Metadata/plate_1.gcode", project_id: "0", profile_id: "0",
    task_id: "0", subtask_id: "0", subtask_name: subtaskName, url, md5: "", timelapse: true, bed_type: "auto",
    bed_levelling: true, flow_cali: true, vibration_cali: true, layer_inspect: true, ams_mapping: "", use_ams: false,
  },
});

const tlsArgs = () => ["-h", SIM_HOST, "-p", String(MQTT_PORT), "--cafile", caFile, "--insecure", "-u", "bblp"];

describe("simulated printer MQTT", () => {
  test("mosquitto_sub receives status deltas (msg 1) as a P1 sends them", async () => {
    const sub = run("mosquitto_sub", [...tlsArgs(), "-P", ACCESS_CODE, "-t", report, "-C", "3", "-W", "10"]);
    try {
      expect(await sub.exited).toBe(0);
      const lines = sub.stdout().trim().split("\n").map((l) => JSON.parse(l));
      expect(lines).toHaveLength(3);
      for (const l of lines) {
        expect(l.print.command).toBe("push_status");
        expect(l.print.msg).toBe(1);
      }
    } finally {
      sub.kill();
    }
  });

  test("python3-paho-mqtt asks for pushall and gets the full state with its sequence_id", async () => {
    const paho = run(PYTHON, [join(import.meta.dir, "mqtt-paho-client.py"), SIM_HOST, String(MQTT_PORT), serial, ACCESS_CODE, "1", "2"]);
    try {
      expect(await paho.exited).toBe(0);
      const [state] = JSON.parse(paho.stdout());
      expect(state).toMatchObject({ connack: 0, full: true, reply: true, puback: true });
    } finally {
      paho.kill();
    }
  });

  test("pushall is a full report with the address encoded; get_version and commands echo sequence_id", async () => {
    const c = await npmClient(SIM_HOST);
    try {
      await c.client.subscribeAsync(report);
      await c.client.publishAsync(request, JSON.stringify({ pushing: { sequence_id: "5", command: "pushall" } }));
      const full = await c.next((j) => j.print?.msg === 0);
      expect(full.print.sequence_id).toBe("5");
      expect(full.print.net.info[0].ip).toBe(127 + 2 * 0x10000 + 11 * 0x1000000); // 127.0.2.11, little-endian
      for (const key of ["gcode_state", "mc_percent", "layer_num", "nozzle_temper", "bed_temper", "ams", "lights_report"]) {
        expect(full.print).toHaveProperty(key);
      }
      expect(full.print.ams.ams[0].tray).toHaveLength(4);
      await c.client.publishAsync(request, JSON.stringify({ info: { sequence_id: "6", command: "get_version" } }));
      const version = await c.next((j) => j.info?.sequence_id === "6");
      const ota = version.info.module.find((m: any) => m.name === "ota");
      expect(ota).toMatchObject({ product_name: "Bambu Lab P1S", sw_ver: sim.identity.firmware });
      await c.client.publishAsync(request, JSON.stringify({ system: { sequence_id: "7", command: "ledctrl", led_node: "chamber_light", led_mode: "off" } }), { qos: 1 });
      expect((await c.next((j) => j.system?.sequence_id === "7")).system.result).toBe("success");
      const delta = await c.next((j) => j.print?.lights_report !== undefined && j.print.msg === 1);
      expect(delta.print.lights_report).toEqual([{ node: "chamber_light", mode: "off" }]);
    } finally {
      await c.end();
    }
  });

  test("the print progresses: layers and percent advance through the deltas", async () => {
    const before = simMqtt.print.gcodeState;
    for (let i = 0; i < 40; i++) simMqtt.print.tick();
    expect(["PREPARE", "RUNNING"]).toContain(before);
    const full = simMqtt.print.full("1").print as any;
    expect(full.gcode_state).toBe("RUNNING");
    expect(full.layer_num).toBeGreaterThan(0);
    expect(full.mc_percent).toBeGreaterThan(0);
  });

  test("a third connection is refused past the limit of 2, and taken once a slot frees", async () => {
    await until("previous clients gone", () => simMqtt.clients === 0);
    const a = await npmClient(SIM_HOST);
    const b = await npmClient(SIM_HOST);
    let third: TestClient | undefined;
    try {
      await expect(npmClient(SIM_HOST)).rejects.toThrow();
      await a.end();
      await until("slot freed", () => simMqtt.clients === 1);
      third = await npmClient(SIM_HOST);
      expect(third.client.connected).toBe(true);
    } finally {
      await a.end();
      await b.end();
      await third?.end();
    }
  });

  for (const [what, filter] of [["#", "#"], ["the request topic", "REQUEST"], ["a + wildcard", "device/+/report"]] as const) {
    test(`a client subscribing to ${what} is dropped`, async () => {
      const c = await npmClient(SIM_HOST);
      const closed = new Promise<void>((resolve) => c.client.once("close", () => resolve()));
      c.client.subscribe(filter === "REQUEST" ? request : filter);
      await closed;
      await c.end();
    });
  }

  test("a wrong serial in SUBSCRIBE closes the connection without a SUBACK", async () => {
    const socket = await rawTls(SIM_HOST);
    const got = collect(socket);
    socket.write(mqttPacket.generate({ cmd: "connect", clientId: "raw", protocolId: "MQTT", protocolVersion: 4, clean: true, keepalive: 30, username: "bblp", password: Buffer.from(ACCESS_CODE) }));
    await until("CONNACK", () => got.bytes().length >= 4);
    expect([...got.bytes().subarray(0, 4)]).toEqual([0x20, 2, 0, 0]);
    socket.write(mqttPacket.generate({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "device/01P00WRONG0000/report", qos: 0 }] }));
    await closedPromise(socket);
    expect(got.bytes().length).toBe(4);
  });

  test("a wrong access code gets CONNACK not authorized", async () => {
    const err = await npmClient(SIM_HOST, { password: "87654321" }).catch((e) => e);
    expect(err).toBeInstanceOf(Error);
    expect((err as { code?: number }).code).toBe(5);
    const sub = run("mosquitto_sub", [...tlsArgs(), "-P", "wrongcod", "-t", report, "-C", "1", "-W", "5"]);
    expect(await sub.exited).not.toBe(0);
    expect(sub.stderr()).toMatch(/not authori[sz]ed/i);
  });

  test("project_file starts the job it names from the card: reports carry its name and file, PREPARE then RUNNING, progress; stop ends it", async () => {
    writeFileSync(join(card, "cube.3mf"), "not really a zip");
    const c = await npmClient(SIM_HOST);
    try {
      await c.client.subscribeAsync(report);
      await c.client.publishAsync(request, JSON.stringify(projectFile("40", "ftp:///cube.3mf", "cube")));
      const reply = await c.next((j) => j.print?.command === "project_file" && j.print.sequence_id === "40");
      expect(reply.print).toMatchObject({ result: "success", param: "Metadata/plate_1.gcode", subtask_name: "cube", url: "ftp:///cube.3mf" });
      const started = await c.next((j) => j.print?.msg === 1 && j.print.subtask_name === "cube");
      expect(started.print).toMatchObject({ gcode_state: "PREPARE", gcode_file: "cube.3mf", mc_percent: 0, layer_num: 0 });
      await c.next((j) => j.print?.gcode_state === "RUNNING", 10_000);
      await c.next((j) => j.print?.mc_percent > 0, 10_000);
      await c.client.publishAsync(request, JSON.stringify({ pushing: { sequence_id: "41", command: "pushall" } }));
      const full = await c.next((j) => j.print?.msg === 0 && j.print.sequence_id === "41");
      expect(full.print).toMatchObject({ subtask_name: "cube", gcode_file: "cube.3mf", gcode_state: "RUNNING" });
      expect(full.print.layer_num).toBeGreaterThan(0);
      await c.client.publishAsync(request, JSON.stringify({ print: { sequence_id: "42", command: "stop", param: "" } }));
      expect((await c.next((j) => j.print?.sequence_id === "42")).print.result).toBe("success");
      await c.next((j) => j.print?.msg === 1 && j.print.gcode_state === "FAILED");
      // A job a slicer started stays ended: the simulator starts no print of its own after it.
      for (let i = 0; i < 30; i++) simMqtt.tick();
      expect(simMqtt.print.gcodeState).toBe("FAILED");
    } finally {
      await c.end();
    }
  }, 20_000);

  test("project_file finds the file by every URL form slicers send: ftp:///cache/..., file:///sdcard/..., file:///mnt/sdcard/...", async () => {
    mkdirSync(join(card, "cache"), { recursive: true });
    writeFileSync(join(card, "cache", "cached.3mf"), "x");
    writeFileSync(join(card, "plain.3mf"), "x");
    const c = await npmClient(SIM_HOST);
    try {
      await c.client.subscribeAsync(report);
      const urls = ["ftp:///cache/cached.3mf", "file:///sdcard/plain.3mf", "file:///mnt/sdcard/cache/cached.3mf"];
      for (const [i, url] of urls.entries()) {
        await c.client.publishAsync(request, JSON.stringify(projectFile(String(50 + i), url, `job${i}`)));
        const reply = await c.next((j) => j.print?.command === "project_file" && j.print.sequence_id === String(50 + i));
        expect(reply.print).toMatchObject({ result: "success", url });
        await c.next((j) => j.print?.msg === 1 && j.print.subtask_name === `job${i}` && j.print.gcode_state === "PREPARE");
      }
    } finally {
      await c.end();
    }
  });

  test("project_file for a file not on the card is the printer's failure reply naming the file; nothing starts", async () => {
    const c = await npmClient(SIM_HOST);
    try {
      await c.client.subscribeAsync(report);
      const before = simMqtt.print.full("0").print as Record<string, unknown>;
      await c.client.publishAsync(request, JSON.stringify(projectFile("60", "ftp:///missing.3mf", "missing")));
      const reply = await c.next((j) => j.print?.command === "project_file" && j.print.sequence_id === "60");
      expect(reply.print.result).toBe("failed");
      expect(reply.print.reason).toContain("missing.3mf");
      await c.client.publishAsync(request, JSON.stringify(projectFile("61", "https://example.com/x.3mf", "remote")));
      expect((await c.next((j) => j.print?.sequence_id === "61")).print.result).toBe("failed");
      const after = simMqtt.print.full("0").print as Record<string, unknown>;
      expect(after.subtask_name).toBe(before.subtask_name);
      expect(after.gcode_state).toBe(before.gcode_state);
    } finally {
      await c.end();
    }
  });
});

describe("the simulated printer's own HMS error and an H2D's two nozzles", () => {
  const RUNOUT_HOST = "127.0.55.1";
  const H2D_HOST = "127.0.55.2";
  /** Ticks until the print has been RUNNING (the nozzle heats first). */
  const tickUntil = (mqttSim: SimMqtt, state: string) => {
    for (let i = 0; i < 200 && mqttSim.print.gcodeState !== state; i++) mqttSim.tick();
    expect(mqttSim.print.gcodeState).toBe(state);
  };

  test("hmsAfterMs: AMS 1 slot 1 runs out during the print, the printer pauses with the HMS entry and print_error, then clears both and resumes", async () => {
    const { sim: runoutSim, mqtt: mqttSim } = await startSim(RUNOUT_HOST, { mqttReportIntervalMs: 0, hmsAfterMs: 0, hmsForMs: 300 });
    const c = await npmClient(RUNOUT_HOST);
    try {
      const topic = `device/${runoutSim.identity.serial}/report`;
      await c.client.subscribeAsync(topic);
      expect((mqttSim.print.full("0").print as any).hms).toEqual([]);
      tickUntil(mqttSim, "RUNNING");
      mqttSim.tick();
      const raised = await c.next((j) => j.print?.gcode_state === "PAUSE");
      expect(raised.print.hms).toEqual([{ attr: 0x07002000, code: 0x00020001 }]);
      expect(raised.print.print_error).toBe(0x07008011);
      await c.client.publishAsync(`device/${runoutSim.identity.serial}/request`, JSON.stringify({ pushing: { sequence_id: "70", command: "pushall" } }));
      const full = await c.next((j) => j.print?.msg === 0 && j.print.sequence_id === "70");
      expect(full.print).toMatchObject({ gcode_state: "PAUSE", hms: [{ attr: 0x07002000, code: 0x00020001 }], print_error: 0x07008011 });
      const layer = full.print.layer_num;
      for (let i = 0; i < 4; i++) mqttSim.tick();
      expect((mqttSim.print.full("0").print as any).layer_num).toBe(layer); // paused: no layer goes by
      await Bun.sleep(350);
      mqttSim.tick();
      const cleared = await c.next((j) => j.print?.gcode_state === "RUNNING" && Array.isArray(j.print.hms) && j.print.hms.length === 0);
      expect(cleared.print.print_error).toBe(0);
      // Once a print: the rest of this one prints on.
      for (let i = 0; i < 10; i++) mqttSim.tick();
      expect(mqttSim.print.gcodeState).toBe("RUNNING");
    } finally {
      await c.end();
      await runoutSim.stop();
    }
  });

  test("a resume command clears the runout at once; without hmsAfterMs the filament never runs out", async () => {
    const { sim: runoutSim, mqtt: mqttSim } = await startSim(RUNOUT_HOST, { mqttReportIntervalMs: 0, hmsAfterMs: 0, hmsForMs: 60_000 });
    const { sim: plainSim, mqtt: plainMqtt } = await startSim(H2D_HOST, { mqttReportIntervalMs: 0 });
    const c = await npmClient(RUNOUT_HOST);
    try {
      const serial = runoutSim.identity.serial;
      await c.client.subscribeAsync(`device/${serial}/report`);
      tickUntil(mqttSim, "RUNNING");
      mqttSim.tick();
      await c.next((j) => j.print?.gcode_state === "PAUSE");
      await c.client.publishAsync(`device/${serial}/request`, JSON.stringify({ print: { sequence_id: "71", command: "resume" } }));
      const resumed = await c.next((j) => j.print?.msg === 1 && j.print.gcode_state === "RUNNING" && j.print.hms !== undefined);
      expect(resumed.print).toMatchObject({ hms: [], print_error: 0 });
      tickUntil(plainMqtt, "RUNNING");
      for (let i = 0; i < 20; i++) plainMqtt.tick();
      expect(plainMqtt.print.full("0").print).toMatchObject({ gcode_state: "RUNNING", hms: [], print_error: 0 });
    } finally {
      await c.end();
      await runoutSim.stop();
      await plainSim.stop();
    }
  });

  test("an H2D reports both nozzles in device.extruder.info, temp packed as the real one packs it; a P1S has no such block", async () => {
    const { sim: h2d, mqtt: mqttSim } = await startSim(H2D_HOST, { model: "H2D", mqttReportIntervalMs: 0 });
    const c = await npmClient(H2D_HOST);
    try {
      await c.client.subscribeAsync(`device/${h2d.identity.serial}/report`);
      tickUntil(mqttSim, "RUNNING");
      await c.client.publishAsync(`device/${h2d.identity.serial}/request`, JSON.stringify({ pushing: { sequence_id: "72", command: "pushall" } }));
      const full = await c.next((j) => j.print?.msg === 0 && j.print.sequence_id === "72");
      const { info, state } = full.print.device.extruder;
      expect(state).toBe(2);
      expect(info.map((e: any) => e.id)).toEqual([0, 1]);
      const [right, left] = info.map((e: any) => ({ current: e.temp % 0x10000, target: Math.floor(e.temp / 0x10000) }));
      expect(right.target).toBe(220);
      expect(Math.abs(right.current - 220)).toBeLessThan(10);
      expect(left.target).toBe(160);
      expect(c.messages.some((m) => m.json?.print?.msg === 1 && m.json.print.device?.extruder?.info?.length === 2)).toBe(true);
      expect(simMqtt.print.full("0").print).not.toHaveProperty("device");
    } finally {
      await c.end();
      await h2d.stop();
    }
  });
});

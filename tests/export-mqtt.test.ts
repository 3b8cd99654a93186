// [export.mqtt]: Debian's mosquitto is the external broker and the `mqtt` npm client the broker-side reader.
// A simulated P1S stands behind pandaproxy (the supervisor, as `pandaproxy run` builds it); the last will is
// proved on a child process running `main.ts run`, killed with SIGKILL. The discovery payloads are checked
// against Home Assistant's documented MQTT discovery schema (pages named at that describe).
// Loopback 127.0.42.10 (mosquitto), .11 (the simulated printer), .12 and .13 (pandaproxy).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { chmodSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import mqtt, { type MqttClient } from "mqtt";
import { parseConfig, ConfigErrors } from "../lib/config.ts";
import { captureLogs, setupLogging } from "../lib/log.ts";
import { startSupervisor, type Supervisor } from "../lib/supervisor.ts";
import { discoveryMessages, type DiscoveryInput } from "../lib/export/discovery.ts";
import { GCODE_STATE_OF, printEvent } from "../lib/export/events.ts";
import { connectBroker } from "../lib/export/broker.ts";
import { createMetrics } from "../lib/core/metrics.ts";
import { processLogger } from "../lib/log.ts";
import { makeCa, makeLeaf } from "../lib/tls.ts";
import { MQTT_EXPORT_KEYS, RTSP_EXPORT_KEYS } from "../lib/export/config.ts";
import { readFileSync } from "node:fs";
import { ACCESS_CODE, VIEWER_CODE, npmClient, startSim, tempDir, until, type TestClient } from "./mqtt-helpers.ts";
import type { SimPrinter } from "../lib/sim/bambu.ts";
import type { SimMqtt } from "../lib/sim/mqtt.ts";
import { startSimulatedFlashforge, type SimFlashforge } from "../lib/sim/flashforge/index.ts";

const BROKER = "127.0.42.10";
const PRINTER = "127.0.42.11";
const PROXY = "127.0.42.12";
const CHILD_PROXY = "127.0.42.13";
const FLASHFORGE = "127.0.42.14";
const FLASHFORGE_PROXY = "127.0.42.15";
const BROKER_PORT = 1883;
const BROKER_TLS_PORT = 8883;
const SERIAL = "01P00A000000042";
const BROKER_USER = "exporter";
const BROKER_PASSWORD = "broker-secret-42";
const BUN = join(import.meta.dir, "../node_modules/.bin/bun");
const WAIT_MS = 20_000;

let dir: string;
let broker: ChildProcess | undefined;
let sim: SimPrinter;
let simMqtt: SimMqtt;
let flashforge: SimFlashforge;
let supervisor: Supervisor | undefined;
let reader: Reader;

function writeBrokerConfig(): string {
  const passwd = spawnSync("mosquitto_passwd", ["-b", "-c", join(dir, "passwd"), BROKER_USER, BROKER_PASSWORD], { encoding: "utf8" });
  if (passwd.status !== 0) throw new Error(`mosquitto_passwd failed: ${passwd.stderr}`);
  const conf = join(dir, "mosquitto.conf");
  const ca = makeCa("test broker CA", "test");
  const leaf = makeLeaf(ca, "broker.test", { dns: ["broker.test"], ips: [BROKER] });
  writeFileSync(join(dir, "broker-ca.pem"), ca.cert);
  writeFileSync(join(dir, "other-ca.pem"), makeCa("someone else's CA", "test").cert);
  writeFileSync(join(dir, "broker.key"), leaf.key);
  writeFileSync(join(dir, "broker.crt"), leaf.cert);
  writeFileSync(conf, ["per_listener_settings false", "allow_anonymous false", `password_file ${join(dir, "passwd")}`, `listener ${BROKER_PORT} ${BROKER}`,
    `listener ${BROKER_TLS_PORT} ${BROKER}`, `certfile ${join(dir, "broker.crt")}`, `keyfile ${join(dir, "broker.key")}`,
    "persistence false", "log_type error", ""].join("\n"));
  // mosquitto started as root drops to its own user and must still read its files.
  for (const name of ["passwd", "mosquitto.conf", "broker.key", "broker.crt"]) chmodSync(join(dir, name), 0o644);
  return conf;
}

async function startBroker(): Promise<void> {
  broker = spawn("mosquitto", ["-c", join(dir, "mosquitto.conf")], { stdio: ["ignore", "ignore", "pipe"] });
  const started = Date.now();
  for (;;) {
    try {
      const probe = await mqtt.connectAsync(`mqtt://${BROKER}:${BROKER_PORT}`, { username: BROKER_USER, password: BROKER_PASSWORD, reconnectPeriod: 0, connectTimeout: 2_000 });
      await probe.endAsync(true);
      return;
    } catch (error) {
      if (Date.now() - started > WAIT_MS) throw new Error(`mosquitto not ready: ${(error as Error).message}`);
      await Bun.sleep(100);
    }
  }
}

async function stopBroker(): Promise<void> {
  if (!broker || broker.exitCode !== null) return;
  const exited = new Promise((resolve) => broker!.once("exit", resolve));
  broker.kill();
  await Promise.race([exited, Bun.sleep(5_000)]);
}

interface Reader {
  client: MqttClient;
  messages: { topic: string; text: string; retain: boolean }[];
  /** The latest message on `topic` that satisfies `match`, waiting for it. */
  next(topic: string, match?: (text: string) => boolean): Promise<string>;
}

/** A broker-side reader (Home Assistant's place): the npm client, everything under the prefixes. */
async function brokerReader(): Promise<Reader> {
  const client = await mqtt.connectAsync(`mqtt://${BROKER}:${BROKER_PORT}`, { username: BROKER_USER, password: BROKER_PASSWORD, reconnectPeriod: 500 });
  const messages: Reader["messages"] = [];
  client.on("message", (topic, payload, packet) => void messages.push({ topic, text: payload.toString(), retain: packet.retain }));
  await client.subscribeAsync(["pandaproxy/#", "farm/#", "tls/#", "homeassistant/#"], { qos: 0 });
  return {
    client, messages,
    async next(topic, match = () => true) {
      let found: string | undefined;
      await until(`a message on ${topic}`, () => (found = messages.findLast((m) => m.topic === topic && match(m.text))?.text) !== undefined, WAIT_MS);
      return found!;
    },
  };
}

function configText(exportKeys: string, bind = PROXY, stateDir = join(dir, "state"), morePrinters = "", services = `["mqtt"]`): string {
  return `
[proxy]
state_dir = "${stateDir}"
[web]
listen = "${bind}:18080"
[[printer]]
name = "p1s"
host = "${PRINTER}"
serial = "${SERIAL}"
model = "P1S"
access_code = "${ACCESS_CODE}"
viewer_access_code = "${VIEWER_CODE}"
bind = "${bind}"
services = ${services}
${morePrinters}
[export.mqtt]
url = "mqtt://${BROKER}:${BROKER_PORT}"
username = "${BROKER_USER}"
password_file = "${join(dir, "broker-password")}"
${exportKeys}
`;
}

/** The Adventurer 5M beside the P1S, in the in-process proxy only. */
const adventurer = () => `[[printer]]
name = "ad5m"
type = "flashforge"
host = "${FLASHFORGE}"
serial = "${flashforge.identity.serial}"
check_code = "${flashforge.identity.checkCode}"
bind = "${FLASHFORGE_PROXY}"
services = ["tcp"]
`;

async function runWith(exportKeys: string): Promise<Supervisor> {
  const file = join(dir, "printers.toml");
  const text = configText(exportKeys, PROXY, join(dir, "state"), adventurer(), `["mqtt", "camera"]`);
  writeFileSync(file, text);
  if (!supervisor) supervisor = await startSupervisor(parseConfig(text, file), { configFile: file });
  else expect(await supervisor.reload()).toBe(true);
  return supervisor;
}

beforeAll(async () => {
  setupLogging("info");
  dir = tempDir("pp-export-");
  chmodSync(dir, 0o755);
  writeFileSync(join(dir, "broker-password"), `${BROKER_PASSWORD}\n`);
  writeBrokerConfig();
  await startBroker();
  ({ sim, mqtt: simMqtt } = await startSim(PRINTER, { serial: SERIAL, mqttMaxClients: 3, services: ["mqtt", "chamber"] }));
  flashforge = await startSimulatedFlashforge({ host: FLASHFORGE });
  reader = await brokerReader();
});
afterAll(async () => {
  await supervisor?.stop();
  await reader?.client.endAsync(true);
  await sim?.stop();
  await flashforge?.stop();
  await stopBroker();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** The "export mqtt" row of the P1S's services in /api/printers, as its own access code sees it. */
async function exportRow(): Promise<{ state: string; details: Record<string, unknown> } | undefined> {
  const response = await fetch(`http://${PROXY}:18080/api/printers`, { headers: { Authorization: `Basic ${Buffer.from(`bblp:${ACCESS_CODE}`).toString("base64")}` } });
  const printers = (await response.json()) as { name: string; services: { name: string; state: string; details: Record<string, unknown> }[] }[];
  return printers.find((p) => p.name === "p1s")?.services.find((s) => s.name === "export mqtt");
}

describe("[export.mqtt] on mosquitto", () => {
  test("the merged state (retained), every report and availability arrive at the broker", async () => {
    const logs = captureLogs();
    await runWith(`reports = true\ndiscovery = true`);
    // Without commands the exporter reads as a viewer: our MQTT service's ACL would refuse it any command.
    await until("the exporter's local login", () => logs.lines.some((l) => l.includes(`id "pandaproxy-export-p1s"`)), WAIT_MS);
    logs.stop();
    expect(logs.lines.find((l) => l.includes(`id "pandaproxy-export-p1s"`))).toContain("connected as viewer");
    expect(logs.lines.join("\n")).not.toContain(BROKER_PASSWORD);
    await reader.next("pandaproxy/availability", (t) => t === "online");
    await reader.next("pandaproxy/p1s/availability", (t) => t === "online");
    const state = JSON.parse(await reader.next("pandaproxy/p1s/state"));
    expect(typeof state.print.gcode_state).toBe("string");
    expect(typeof state.print.nozzle_temper).toBe("number");
    await until("three reports", () => reader.messages.filter((m) => m.topic === "pandaproxy/p1s/report").length >= 3, WAIT_MS);
    // A reader arriving later gets the state and availability the broker retained.
    const late = await mqtt.connectAsync(`mqtt://${BROKER}:${BROKER_PORT}`, { username: BROKER_USER, password: BROKER_PASSWORD, reconnectPeriod: 0 });
    const retained: string[] = [];
    late.on("message", (topic, _p, packet) => void (packet.retain && retained.push(topic)));
    await late.subscribeAsync("pandaproxy/#");
    await until("retained state", () => retained.includes("pandaproxy/p1s/state") && retained.includes("pandaproxy/p1s/availability"), WAIT_MS);
    await late.endAsync(true);
  }, 60_000);

  test("a FlashForge printer: its telemetry (from the console the exporter polls) is its state, and it is online", async () => {
    await reader.next("pandaproxy/ad5m/availability", (t) => t === "online");
    const state = JSON.parse(await reader.next("pandaproxy/ad5m/state"));
    expect(typeof state.state).toBe("string");
    expect(state.temperatures.map((t: { name: string }) => t.name)).toContain("bed");
    const bed = JSON.parse(await reader.next(`homeassistant/sensor/pandaproxy_${flashforge.identity.serial}/bed_temperature/config`));
    expect(bed.state_topic).toBe("pandaproxy/ad5m/state");
    // The printer starts a job: the next ~M119 the exporter polls says so, and its telemetry becomes an event.
    flashforge.state.printFile = "Benchy.gcode";
    flashforge.state.status = "printing";
    const event = JSON.parse(await reader.next("pandaproxy/ad5m/event", (t) => t.includes(`"started"`)));
    expect(event).toMatchObject({ event: "started", gcode_state: "RUNNING" });
    flashforge.state.status = "ready";
  }, 30_000);

  test("discovery: one device whose sensors read the state topic; no buttons without commands", async () => {
    const progress = JSON.parse(await reader.next(`homeassistant/sensor/pandaproxy_${SERIAL}/progress/config`));
    expect(progress.state_topic).toBe("pandaproxy/p1s/state");
    expect(progress.device.serial_number).toBe(SERIAL);
    expect(progress.device.configuration_url).toBe(`http://${PROXY}:18080/`);
    // The firmware the printer answered to get_version, once it did.
    const withFirmware = JSON.parse(await reader.next(`homeassistant/sensor/pandaproxy_${SERIAL}/progress/config`, (t) => t.includes("sw_version")));
    expect(withFirmware.device.sw_version).toBe(sim.identity.firmware);
    const camera = JSON.parse(await reader.next("pandaproxy/p1s/camera/attributes"));
    expect(camera.mjpeg_url).toMatch(new RegExp(`^http://${PROXY.replaceAll(".", "\\.")}:18080/printers/p1s/camera\\.mjpeg\\?token=.{16,}`));
    expect(reader.messages.some((m) => m.topic.startsWith("homeassistant/button/"))).toBe(false);
  }, 30_000);

  test("print events come from the printer's gcode_state changes", async () => {
    simMqtt.report({ print: { command: "push_status", msg: 1, gcode_state: "RUNNING", subtask_name: "cube" } });
    simMqtt.report({ print: { command: "push_status", msg: 1, gcode_state: "FAILED", subtask_name: "cube" } });
    const event = JSON.parse(await reader.next("pandaproxy/p1s/event", (t) => t.includes(`"failed"`)));
    expect(event).toMatchObject({ event: "failed", gcode_state: "FAILED", subtask_name: "cube" });
  }, 30_000);

  test("commands flow only when enabled, and only to the printer's request topic", async () => {
    const pause = (id: string) => JSON.stringify({ print: { command: "pause", sequence_id: id } });
    const before = simMqtt.requests.length;
    // Not retained: a publish while commands are off can reach no exporter subscribed later.
    await reader.client.publishAsync("pandaproxy/p1s/request", pause("refused-1"));
    await runWith(`reports = true\ncommands = true\ndiscovery = true`);
    await reader.next("pandaproxy/p1s/availability", (t) => t === "online");
    await reader.next(`homeassistant/button/pandaproxy_${SERIAL}/pause/config`);
    await until("the exporter subscribed", () => supervisor!.metrics.value("pandaproxy_export_mqtt_connected") === 1, WAIT_MS);
    // Bad input from the broker is refused by our MQTT service's ACL like a local client's; the link stays up.
    await reader.client.publishAsync("pandaproxy/p1s/request", "not json {");
    await reader.client.publishAsync("pandaproxy/p1s/report", pause("not-a-request-topic"));
    // The exporter's subscription may still be on its way to mosquitto: publish again each half second until one lands.
    let lastSent = 0;
    await until("a forwarded command", () => {
      const landed = simMqtt.requests.slice(before).some((r) => r.toString().includes("forwarded-2"));
      if (!landed && Date.now() - lastSent > 500) void reader.client.publish("pandaproxy/p1s/request", pause((lastSent = Date.now(), "forwarded-2")));
      return landed;
    }, WAIT_MS);
    const seen = simMqtt.requests.slice(before).map((r) => r.toString());
    expect(seen.some((r) => r.includes("refused-1") || r.includes("not json") || r.includes("not-a-request-topic"))).toBe(false);
    expect(seen.find((r) => r.includes("forwarded-2"))).toBe(pause("forwarded-2"));
  }, 60_000);

  test("a reload clears what is no longer exported: the buttons without commands, a skipped printer's device and state", async () => {
    const ff = flashforge.identity.serial;
    const cleared = (topic: string) => reader.next(topic, (t) => t === "");
    await runWith(`reports = true\ndiscovery = true\nskip = ["ad5m"]`);
    await cleared(`homeassistant/button/pandaproxy_${SERIAL}/pause/config`);
    await cleared(`homeassistant/sensor/pandaproxy_${ff}/bed_temperature/config`);
    await cleared("pandaproxy/ad5m/state");
    // What stays exported stays: a reader arriving now gets the P1S's sensor, and no button.
    const late = await mqtt.connectAsync(`mqtt://${BROKER}:${BROKER_PORT}`, { username: BROKER_USER, password: BROKER_PASSWORD, reconnectPeriod: 0 });
    const retained = new Set<string>();
    let marked = false;
    late.on("message", (topic, payload, packet) => {
      if (topic === "homeassistant/test-marker") marked = true;
      else if (packet.retain && payload.length) retained.add(topic);
    });
    await late.subscribeAsync("homeassistant/#");
    // mosquitto sends a subscription's retained messages before it handles the same client's next publish.
    await late.publishAsync("homeassistant/test-marker", "end", { qos: 1 });
    await until("every retained config, then the marker", () => marked, WAIT_MS);
    await late.endAsync(true);
    expect(retained.has(`homeassistant/sensor/pandaproxy_${SERIAL}/progress/config`)).toBe(true);
    expect([...retained].some((t) => t.includes("/button/") || t.includes(ff))).toBe(false);
  }, 60_000);

  test("camera_interval: the camera entity's topic gets the printer's chamber camera picture, base64, retained", async () => {
    await runWith(`reports = true\ndiscovery = true\ncamera_interval = 1`);
    const still = Buffer.from(await reader.next("pandaproxy/p1s/camera"), "base64");
    expect(still.subarray(0, 2)).toEqual(Buffer.from([0xff, 0xd8]));
    expect(still.subarray(-2)).toEqual(Buffer.from([0xff, 0xd9]));
    // FFmpeg, not our code, says it is a picture.
    const probe = spawnSync("ffprobe", ["-v", "error", "-show_entries", "stream=codec_name,width", "-of", "csv=p=0", "-"], { input: still, encoding: "utf8" });
    expect(probe.stdout.trim()).toMatch(/^mjpeg,\d+$/);
  }, 60_000);

  test("a broker outage loses no local client; publishing resumes and drops are counted", async () => {
    const local: TestClient = await npmClient(PROXY);
    await local.client.subscribeAsync(`device/${SERIAL}/report`);
    // The status page has the export's row: exporting, to which broker (no credentials).
    const row = await exportRow();
    expect(row?.state).toBe("exporting");
    expect(row?.details.broker).toBe(`mqtt://${BROKER}:${BROKER_PORT}`);
    await stopBroker();
    const during = local.messages.length;
    await until("reports to the local client while the broker is down", () => local.messages.length >= during + 3, WAIT_MS);
    await until("dropped exports counted", () => (supervisor!.metrics.value("pandaproxy_export_mqtt_dropped_total") ?? 0) > 0, WAIT_MS);
    expect((await exportRow())?.state).toBe("waiting for the broker (not connected)");
    const afterOutage = reader.messages.length;
    await startBroker();
    await until("reports exported again", () => reader.messages.slice(afterOutage).some((m) => m.topic === "pandaproxy/p1s/report"), 40_000);
    expect((await exportRow())?.state).toBe("exporting");
    expect(local.client.connected).toBe(true);
    await local.end();
  }, 90_000);

  test("a reload without [export.mqtt] clears every retained topic it published, the last will included", async () => {
    const before = reader.messages.length;
    await runWith(`reports = true\ndiscovery = true`);
    // The reload's new exporter is connected once it says online itself (a reload before that cannot clear: logged).
    await until("the new exporter online", () => reader.messages.slice(before).some((m) => m.topic === "pandaproxy/availability" && m.text === "online"), WAIT_MS);
    const file = join(dir, "printers.toml");
    const text = configText("", PROXY, join(dir, "state"), adventurer(), `["mqtt", "camera"]`).replace(/\[export\.mqtt\][^[]*$/, "");
    expect(text).not.toContain("[export.mqtt]");
    writeFileSync(file, text);
    expect(await supervisor!.reload()).toBe(true);
    const late = await mqtt.connectAsync(`mqtt://${BROKER}:${BROKER_PORT}`, { username: BROKER_USER, password: BROKER_PASSWORD, reconnectPeriod: 0 });
    const retained: string[] = [];
    let marked = false;
    late.on("message", (topic, payload, packet) => {
      if (topic === "homeassistant/test-marker") marked = true;
      else if (packet.retain && payload.length) retained.push(topic);
    });
    await late.subscribeAsync(["pandaproxy/#", "homeassistant/#"]);
    await late.publishAsync("homeassistant/test-marker", "end", { qos: 1 });
    await until("every retained message, then the marker", () => marked, WAIT_MS);
    await late.endAsync(true);
    expect(retained).toEqual([]);
  }, 60_000);
});

describe("mqtts://", () => {
  const tlsExport = (ca: string, insecure = false) => ({
    url: `mqtts://${BROKER}:${BROKER_TLS_PORT}`, ca: join(dir, ca), insecure, username: BROKER_USER, password: BROKER_PASSWORD,
    prefix: "tls", clientId: `pandaproxy-tls-${ca}`, reports: false, commands: false, discovery: false, discoveryPrefix: "homeassistant", skip: [], cameraIntervalSeconds: 0,
  });
  test("with the broker's CA the exporter connects and says online; with another CA it is refused", async () => {
    const good = connectBroker(tlsExport("broker-ca.pem"), createMetrics(), processLogger("export"));
    try {
      await reader.next("tls/availability", (t) => t === "online");
    } finally {
      await good.stop();
    }
    await reader.next("tls/availability", (t) => t === "offline");
    const logs = captureLogs();
    const wrong = connectBroker(tlsExport("other-ca.pem"), createMetrics(), processLogger("export"));
    try {
      const refusal = () => logs.lines.find((l) => l.includes(`external broker mqtts://${BROKER}:${BROKER_TLS_PORT}: `));
      await until("the refused certificate in the log", () => refusal() !== undefined, WAIT_MS);
      expect(refusal()).toMatch(/certificate/i);
      expect(wrong.connected).toBe(false);
    } finally {
      logs.stop();
      await wrong.stop();
    }
  }, 60_000);
});

describe("the last will", () => {
  test("the broker says offline when the exporting process is killed", async () => {
    const stateDir = join(dir, "child-state");
    const file = join(dir, "child.toml");
    writeFileSync(file, configText(`prefix = "farm"\nclient_id = "pandaproxy-child"`, CHILD_PROXY, stateDir));
    const child = spawn(BUN, [join(import.meta.dir, "../main.ts"), "run", "--config", file], { stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout!.on("data", (c: Buffer) => void (output += c));
    child.stderr!.on("data", (c: Buffer) => void (output += c));
    try {
      await reader.next("farm/p1s/availability", (t) => t === "online");
      expect(await reader.next("farm/availability")).toBe("online");
      child.kill("SIGKILL");
      await reader.next("farm/availability", (t) => t === "offline");
      expect(output).not.toContain(BROKER_PASSWORD);
    } catch (error) {
      throw new Error(`${(error as Error).message}\nthe child said:\n${output}`);
    } finally {
      if (child.exitCode === null) child.kill("SIGKILL");
    }
  }, 60_000);
});

// Home Assistant's documentation of MQTT discovery, the keys each page marks required or that discovery needs:
// https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery (topic <prefix>/<component>/<node_id>/<object_id>/config;
//   unique_id; the device block: identifiers, name, manufacturer, model, serial_number, sw_version, configuration_url;
//   availability: a list of { topic }, availability_mode all|any|latest)
// https://www.home-assistant.io/integrations/sensor.mqtt/ (state_topic required; unit_of_measurement, device_class,
//   state_class, value_template)
// https://www.home-assistant.io/integrations/binary_sensor.mqtt/ (state_topic required; payload_on / payload_off)
// https://www.home-assistant.io/integrations/camera.mqtt/ (topic required; image_encoding b64)
// https://www.home-assistant.io/integrations/button.mqtt/ (command_topic required; payload_press)
// https://www.home-assistant.io/integrations/sensor/#device-class and /binary_sensor/#device-class (the classes and units)
const REQUIRED: Record<string, string[]> = {
  sensor: ["state_topic"], binary_sensor: ["state_topic", "payload_on", "payload_off"], camera: ["topic"], button: ["command_topic", "payload_press"],
};
const SENSOR_CLASSES: Record<string, string[]> = { temperature: ["°C", "°F", "K"], duration: ["d", "h", "min", "s"] };
const BINARY_CLASSES = ["connectivity", "running", "problem"];
const TOPIC = /^homeassistant\/(sensor|binary_sensor|camera|button)\/([A-Za-z0-9_-]+)\/([A-Za-z0-9_-]+)\/config$/;

function checkSchema(input: DiscoveryInput): Map<string, Record<string, any>> {
  const byId = new Map<string, Record<string, any>>();
  const ids = new Set<string>();
  for (const { topic, payload } of discoveryMessages(input)) {
    const [, component, , objectId] = topic.match(TOPIC) ?? expect(topic).toMatch(TOPIC)!;
    const p = payload as Record<string, any>;
    for (const key of ["name", "unique_id", "device", "availability", ...REQUIRED[component!]!]) expect(p[key], `${topic}: ${key}`).toBeDefined();
    expect(ids.has(p.unique_id)).toBe(false);
    ids.add(p.unique_id);
    expect(p.device.identifiers).toEqual([`pandaproxy_${input.printer.serial}`]);
    expect(p.device.serial_number).toBe(input.printer.serial);
    expect(p.device.configuration_url).toBe(input.statusPage);
    expect(Array.isArray(p.availability) && p.availability.every((a: any) => typeof a.topic === "string")).toBe(true);
    if (p.availability_mode !== undefined) expect(["all", "any", "latest"]).toContain(p.availability_mode);
    if (component === "sensor" && p.device_class) expect(SENSOR_CLASSES[p.device_class], p.unique_id).toContain(p.unit_of_measurement);
    if (component === "binary_sensor" && p.device_class) expect(BINARY_CLASSES).toContain(p.device_class);
    if (p.state_class !== undefined) expect(["measurement", "total", "total_increasing"]).toContain(p.state_class);
    if (component === "camera") expect(p.image_encoding).toBe("b64");
    byId.set(`${component}/${objectId}`, p);
  }
  return byId;
}

const EXPECTED_ENTITIES = [
  "sensor/state", "sensor/progress", "sensor/remaining", "sensor/layer", "sensor/nozzle_temperature", "sensor/bed_temperature",
  "sensor/chamber_temperature", "binary_sensor/online", "binary_sensor/printing", "binary_sensor/error", "camera/camera",
];

describe("Home Assistant discovery payloads follow the documented schema", () => {
  const common = { prefix: "pandaproxy", discoveryPrefix: "homeassistant", statusPage: "http://pi.lan:8080/" };
  test("a P1S with an AMS, commands off: sensors, binary sensors, camera, four tray sensors, no buttons", () => {
    const byId = checkSchema({ ...common, commands: false, printer: { name: "p1s", type: "bambu", serial: "01P00A000000001", model: "P1S" },
      info: { firmware: "01.08.02.00" }, amsTrays: ["0-0", "0-1", "0-2", "0-3"] });
    expect([...byId.keys()].sort()).toEqual([...EXPECTED_ENTITIES, "sensor/ams_0_tray_0", "sensor/ams_0_tray_1", "sensor/ams_0_tray_2", "sensor/ams_0_tray_3"].sort());
    const progress = byId.get("sensor/progress")!;
    expect(progress).toMatchObject({ state_topic: "pandaproxy/p1s/state", value_template: "{{ value_json.print.mc_percent }}", unit_of_measurement: "%" });
    expect(progress.device).toMatchObject({ manufacturer: "Bambu Lab", model: "P1S", sw_version: "01.08.02.00" });
    expect(byId.get("sensor/nozzle_temperature")).toMatchObject({ device_class: "temperature", unit_of_measurement: "°C" });
    expect(byId.get("sensor/remaining")).toMatchObject({ device_class: "duration", unit_of_measurement: "min" });
    expect(byId.get("binary_sensor/online")).toMatchObject({ state_topic: "pandaproxy/p1s/availability", payload_on: "online", payload_off: "offline" });
    expect(progress.availability).toEqual([{ topic: "pandaproxy/availability" }, { topic: "pandaproxy/p1s/availability" }]);
  });
  test("an X1C with commands on: pause, resume and stop buttons publish the printer's command on the request topic", () => {
    const byId = checkSchema({ ...common, commands: true, printer: { name: "x1c", type: "bambu", serial: "00M00A000000002", model: "X1C" },
      info: { productName: "X1 Carbon", firmware: "01.08.00.00" } });
    expect([...byId.keys()].filter((k) => k.startsWith("button/")).sort()).toEqual(["button/pause", "button/resume", "button/stop"]);
    expect(byId.get("button/stop")).toMatchObject({ command_topic: "pandaproxy/x1c/request", payload_press: JSON.stringify({ print: { command: "stop", sequence_id: "0" } }) });
    expect(byId.get("sensor/state")!.device.model).toBe("X1 Carbon");
  });
  test("an Adventurer 5M: the fields of its telemetry (console status replies), manufacturer FlashForge, no buttons", () => {
    const byId = checkSchema({ ...common, commands: true, printer: { name: "ad5m", type: "flashforge", serial: "SNMOMC9900001", model: "Adventurer 5M" }, info: {} });
    expect([...byId.keys()].sort()).toEqual(EXPECTED_ENTITIES.filter((e) => e !== "sensor/chamber_temperature").sort());
    expect(byId.get("sensor/bed_temperature")!.value_template).toContain("selectattr('name', 'equalto', 'bed')");
    expect(byId.get("sensor/state")!.value_template).toBe("{{ value_json.state }}");
    expect(byId.get("sensor/state")!.device).toMatchObject({ manufacturer: "FlashForge", model: "Adventurer 5M" });
  });
});

describe("print events and the [export.mqtt] keys", () => {
  test("events come from gcode_state transitions, none on the first state seen", () => {
    expect(printEvent(undefined, "RUNNING")).toBeUndefined();
    expect(printEvent("IDLE", "PREPARE")).toBe("started");
    expect(printEvent("PREPARE", "RUNNING")).toBeUndefined();
    expect(printEvent("PAUSE", "FINISH")).toBe("finished");
    expect(printEvent("RUNNING", "FAILED")).toBe("failed");
    expect(printEvent("FINISH", "IDLE")).toBeUndefined();
    // A FlashForge's telemetry words first become gcode_state words.
    expect(printEvent(GCODE_STATE_OF.idle, GCODE_STATE_OF.printing)).toBe("started");
    expect(printEvent(GCODE_STATE_OF.paused, GCODE_STATE_OF.finished)).toBe("finished");
    expect(GCODE_STATE_OF.unknown).toBeUndefined();
  });
  test("config.example.toml documents every [export.mqtt] and [export.rtsp] key, and README every metric the exporter adds", () => {
    const example = readFileSync(join(import.meta.dir, "../config.example.toml"), "utf8");
    const sections = { mqtt: example.slice(example.indexOf("[export.mqtt]\n"), example.indexOf("[export.rtsp]\n")), rtsp: example.slice(example.indexOf("[export.rtsp]\n"), example.indexOf("[[printer]]\n")) };
    for (const [name, keys] of [["mqtt", MQTT_EXPORT_KEYS], ["rtsp", RTSP_EXPORT_KEYS]] as const) {
      expect(sections[name].length, `[export.${name}] in config.example.toml`).toBeGreaterThan(100);
      for (const key of keys) expect(sections[name], `[export.${name}] ${key}`).toMatch(new RegExp(`^(# )?${key} = |: ${key} = `, "m"));
    }
    expect(parseConfig(example).export).toEqual({ mqtt: undefined, rtsp: undefined });
    const readme = readFileSync(join(import.meta.dir, "../README.md"), "utf8");
    for (const metric of ["pandaproxy_export_mqtt_dropped_total", "pandaproxy_export_mqtt_connected"]) expect(readme).toContain(metric);
  });
  test("every problem names its key", () => {
    const problems = (extra: string) => {
      try {
        parseConfig(`[[printer]]\nname = "p1s"\nhost = "10.0.0.2"\nserial = "S"\naccess_code = "12345678"\nbind = "10.0.0.3"\n[export.mqtt]\n${extra}`);
        return [];
      } catch (error) {
        return (error as ConfigErrors).problems;
      }
    };
    expect(problems(`url = "mqtt://broker:1883"`)).toEqual([]);
    expect(problems(`url = ""\nreports = "yes"`)).toEqual([expect.stringContaining(`key "reports"`)]);
    expect(problems(`prefix = "x"`)).toEqual([expect.stringContaining(`[export.mqtt] key "url" is missing`)]);
    expect(problems(`url = "http://broker"`)).toEqual([expect.stringContaining(`key "url" is "http://broker"`)]);
    expect(problems(`url = "mqtt://u:pw@broker"`).join("\n")).not.toContain("pw");
    expect(problems(`url = "mqtt://broker"\nskip = ["x1c"]`)).toEqual([expect.stringContaining(`key "skip" names "x1c"`)]);
    expect(problems(`url = "mqtt://broker"\nprefix = "a/#"`)).toEqual([expect.stringContaining(`key "prefix"`)]);
    expect(problems(`url = "mqtt://broker"\npassword_file = "/nonexistent/pw"`)).toEqual([expect.stringContaining(`key "password_file"`)]);
    expect(problems(`url = "mqtt://broker"\ncamera_interval = -5`)).toEqual([expect.stringContaining(`key "camera_interval" is -5`)]);
    expect(problems(`url = "mqtt://broker"\ncomand = true`)).toEqual([expect.stringContaining(`key "comand" is unknown`)]);
  });
});

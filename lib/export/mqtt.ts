// [export.mqtt]: every exported printer on an external broker. Per printer: <prefix>/<printer>/state (the
// merged state, retained, at most once per STATE_INTERVAL_MS and only when changed), /report (each report, with
// `reports`), /availability (retained; the exporter's own <prefix>/availability carries the last will), /event
// (print started/finished/failed), /request (forwarded with `commands` only), and Home Assistant discovery.
import { readFileSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";
import type { ProxyConfig, WebConfig } from "../config.ts";
import type { Metrics } from "../core/metrics.ts";
import type { ServiceStatus } from "../core/service.ts";
import { processLogger, registerSecret, serviceLogger } from "../log.ts";
import type { PrinterRuntime } from "../printer-services.ts";
import { cameraToken } from "../web/tokens.ts";
import { isObject, type JsonObject } from "../bambu/mqtt-state.ts";
import { startBambuLink } from "./bambu-link.ts";
import { startFlashforgeLink } from "./flashforge-link.ts";
import { startCameraStills, type CameraStills } from "./camera.ts";
import { connectBroker, shown, type Broker } from "./broker.ts";
import type { MqttExportConfig } from "./config.ts";
import { cameraAttributes, discoveryMessages, printerTopic } from "./discovery.ts";
import { GCODE_STATE_OF, printEvent, type PrintEvent } from "./events.ts";

export const STATE_INTERVAL_MS = 1_000;

export interface MqttExportOptions {
  config: MqttExportConfig;
  printers: readonly PrinterRuntime[];
  proxy: ProxyConfig;
  web: WebConfig;
  metrics: Metrics;
  /** Tests make it short. */
  backoffMaxMs?: number;
  /** What the exporter this one replaces (a reload) left retained: what is no longer exported is cleared. */
  previous?: RetainedTopics;
}

/** Per printer: the retained discovery configs, and its other retained topics (state, availability, camera). */
export type RetainedTopics = ReadonlyMap<string, { discovery: readonly string[]; other: readonly string[] }>;

export interface MqttExport {
  retained(): RetainedTopics;
  /** The export of `printer` as a row of its status (undefined: not exported). */
  status(printer: string): ServiceStatus | undefined;
  /**
   * With `forget` (a reload that removes [export.mqtt] or points it at another broker): every retained topic
   * this exporter published is cleared on the broker before it disconnects, so Home Assistant removes the
   * devices, instead of leaving them "offline" for good. Without: they stay, and say offline.
   */
  stop(options?: { forget?: boolean }): Promise<void>;
}

/** The web page's base URL as another machine reaches it (0.0.0.0 means: this host's name). */
function webBase(web: WebConfig): string | undefined {
  if (!web.listen) return undefined;
  const host = web.listen.host === "0.0.0.0" ? hostname() : web.listen.host;
  return `http://${host}:${web.listen.port}`;
}

/** "0-0", "0-1", …: the AMS trays the merged state lists. */
function amsTrays(state: object): string[] {
  const print = (state as JsonObject).print;
  const ams = isObject(print) && isObject(print.ams) && Array.isArray(print.ams.ams) ? print.ams.ams : [];
  return ams.flatMap((unit, i) => (isObject(unit) && Array.isArray(unit.tray) ? unit.tray.map((_, j) => `${i}-${j}`) : []));
}

interface Exported {
  runtime: PrinterRuntime;
  /** What <prefix>/<printer>/state carries: a Bambu printer's merged report, a FlashForge's telemetry. */
  state(): object | undefined;
  /** Bambu only: forward to the printer's request topic. */
  request?(payload: Buffer): void;
  stop(): Promise<void>;
  /** With camera_interval: the snapshots published on <prefix>/<printer>/camera. */
  stills?: CameraStills;
  online: boolean;
  /** FlashForge: the last telemetry state, in gcode_state words, for its events. */
  gcodeState?: string;
  lastState?: string;
  lastDiscoveryKey?: string;
  /** The discovery configs published for it: a config it no longer has is cleared (Home Assistant removes the entity). */
  discoveryTopics: Set<string>;
}

/** An empty retained message: the broker forgets the topic's retained message. */
const clear = (broker: Broker, topic: string) => broker.publish(topic, "", true);

function otherRetained(config: MqttExportConfig, name: string): string[] {
  return (["state", "availability", "camera", "camera/attributes"] as const).map((leaf) => printerTopic(config.prefix, name, leaf));
}

/** After a reload: printers no longer exported lose every retained topic, and the others their dropped configs. */
function clearLeftovers(broker: Broker, config: MqttExportConfig, exported: ReadonlyMap<string, Exported>, previous: RetainedTopics): void {
  for (const [name, topics] of previous) {
    const p = exported.get(name);
    if (!p) {
      for (const topic of [...topics.discovery, ...topics.other]) clear(broker, topic);
      continue;
    }
    // A new prefix: the old topics of a printer still exported are leftovers too.
    const now = otherRetained(config, name);
    for (const topic of topics.other) if (!now.includes(topic)) clear(broker, topic);
    if (!config.discovery) for (const topic of topics.discovery) clear(broker, topic);
    else for (const topic of topics.discovery) p.discoveryTopics.add(topic);
  }
}

function publishDiscovery(broker: Broker, config: MqttExportConfig, web: WebConfig, p: Exported): void {
  const { config: printer, hub } = p.runtime;
  const base = webBase(web);
  const messages = discoveryMessages({
    printer: { name: printer.name, type: printer.type, serial: printer.serial, model: printer.model },
    info: hub.info, prefix: config.prefix, discoveryPrefix: config.discoveryPrefix, commands: config.commands,
    statusPage: base ? `${base}/` : undefined, amsTrays: amsTrays(p.state() ?? {}),
  });
  for (const m of messages) broker.publish(m.topic, JSON.stringify(m.payload), true);
  const now = new Set(messages.map((m) => m.topic));
  for (const topic of p.discoveryTopics) if (!now.has(topic)) clear(broker, topic);
  p.discoveryTopics = now;
  if (base) {
    const token = web.tokensDir ? cameraToken(web.tokensDir, printer.name) : undefined;
    broker.publish(printerTopic(config.prefix, printer.name, "camera/attributes"), JSON.stringify(cameraAttributes(base, printer.name, token)), true);
  }
}

function setOnline(broker: Broker, config: MqttExportConfig, p: Exported, up: boolean): void {
  p.online = up;
  broker.publish(printerTopic(config.prefix, p.runtime.config.name, "availability"), up ? "online" : "offline", true);
}

const eventPayload = (event: PrintEvent, gcodeState: unknown, job: unknown) =>
  JSON.stringify({ event, gcode_state: gcodeState, subtask_name: job, at: new Date().toISOString() });

function exportBambu(broker: Broker, config: MqttExportConfig, runtime: PrinterRuntime, ca: string): Exported {
  const name = runtime.config.name;
  const topic = (leaf: Parameters<typeof printerTopic>[2]) => printerTopic(config.prefix, name, leaf);
  const link = startBambuLink(runtime.config, ca, config.commands, serviceLogger(name, "export"), {
    report: (payload) => config.reports && broker.publish(topic("report"), payload),
    event: (event, print) => broker.publish(topic("event"), eventPayload(event, print.gcode_state, print.subtask_name)),
    online: (up) => setOnline(broker, config, exported, up),
  });
  const exported: Exported = { runtime, online: false, state: link.state, request: link.request, stop: link.stop, discoveryTopics: new Set() };
  return exported;
}

/** FlashForge: the telemetry its console keeps while the link polls; online while there is some. */
function exportFlashforge(runtime: PrinterRuntime): Exported {
  const link = startFlashforgeLink(runtime.config, serviceLogger(runtime.config.name, "export"));
  return { runtime, online: false, state: () => runtime.hub.telemetry(), stop: link.stop, discoveryTopics: new Set() };
}

/** A FlashForge's print events: its telemetry state changes, seen once a second. */
function flashforgeEvent(broker: Broker, config: MqttExportConfig, p: Exported): void {
  const telemetry = p.runtime.hub.telemetry();
  const gcodeState = telemetry && GCODE_STATE_OF[telemetry.state];
  if (!gcodeState) return;
  const event = printEvent(p.gcodeState, gcodeState);
  p.gcodeState = gcodeState;
  if (event) broker.publish(printerTopic(config.prefix, p.runtime.config.name, "event"), eventPayload(event, gcodeState, telemetry.job));
}

function publishState(broker: Broker, options: MqttExportOptions, p: Exported): void {
  const state = p.state();
  if (p.runtime.config.type === "flashforge") {
    if ((state !== undefined) !== p.online) setOnline(broker, options.config, p, state !== undefined);
    flashforgeEvent(broker, options.config, p);
  }
  if (!p.online || !state || !Object.keys(state).length) return;
  const text = JSON.stringify(state);
  if (text !== p.lastState && broker.connected) {
    p.lastState = text;
    broker.publish(printerTopic(options.config.prefix, p.runtime.config.name, "state"), text, true);
  }
  // The device block and the tray sensors follow what the printer said of itself (firmware arrives after connect).
  const discoveryKey = JSON.stringify([amsTrays(state), p.runtime.hub.info]);
  if (options.config.discovery && discoveryKey !== p.lastDiscoveryKey && broker.connected) {
    p.lastDiscoveryKey = discoveryKey;
    publishDiscovery(broker, options.config, options.web, p);
  }
}

export function startMqttExport(options: MqttExportOptions): MqttExport {
  const { config } = options;
  const log = processLogger("export");
  registerSecret(config.password);
  let ca: string | undefined;
  const broker = connectBroker(config, options.metrics, log, options.backoffMaxMs);
  const exported = new Map<string, Exported>();
  for (const runtime of options.printers) {
    const printer = runtime.config;
    if (config.skip.includes(printer.name)) continue;
    const service = printer.type === "bambu" ? "mqtt" : "tcp";
    if (!printer.services.includes(service)) {
      log.info(`printer "${printer.name}": not exported (the exporter reads it through its ${service} service, which is off)`);
      continue;
    }
    const p = printer.type === "flashforge"
      ? exportFlashforge(runtime)
      : exportBambu(broker, config, runtime, (ca ??= readFileSync(join(options.proxy.stateDir, "ca.crt"), "utf8")));
    const camera = printerTopic(config.prefix, printer.name, "camera");
    if (config.cameraIntervalSeconds) p.stills = startCameraStills(runtime.hub, config.cameraIntervalSeconds * 1000, (jpeg) => broker.publish(camera, jpeg.toString("base64"), true));
    exported.set(printer.name, p);
  }
  let previous = options.previous;
  broker.onConnect(() => {
    if (previous) clearLeftovers(broker, config, exported, previous);
    previous = undefined;
    for (const p of exported.values()) {
      broker.publish(printerTopic(config.prefix, p.runtime.config.name, "availability"), p.online ? "online" : "offline", true);
      p.lastState = undefined;
      if (config.discovery) publishDiscovery(broker, config, options.web, p);
    }
  });
  if (config.commands) {
    broker.subscribe(`${config.prefix}/+/request`);
    broker.onMessage((topic, payload) => {
      const name = topic.slice(config.prefix.length + 1, -"/request".length);
      exported.get(name)?.request?.(payload);
    });
  }
  const tick = setInterval(() => {
    for (const p of exported.values()) publishState(broker, options, p);
  }, STATE_INTERVAL_MS);
  return {
    retained: () => new Map([...exported].map(([name, p]) => [name, { discovery: [...p.discoveryTopics], other: otherRetained(config, name) }])),
    status(printer) {
      const p = exported.get(printer);
      if (!p) return undefined;
      const state = !broker.connected
        ? `waiting for the broker (not connected)`
        : p.online ? "exporting" : "waiting for the printer (its availability says offline)";
      return { state, clients: 0, details: { broker: shown(config.url), topics: `${config.prefix}/${printer}/…` } };
    },
    async stop(stopOptions = {}) {
      clearInterval(tick);
      if (!stopOptions.forget) for (const p of exported.values()) broker.publish(printerTopic(config.prefix, p.runtime.config.name, "availability"), "offline", true);
      for (const p of exported.values()) p.stills?.stop();
      await Promise.allSettled([...exported.values()].map((p) => p.stop()));
      // What a reload before this one left for this exporter to clear, and never got to, is forgotten too.
      const forget = stopOptions.forget
        ? [...exported].flatMap(([name, p]) => [...p.discoveryTopics, ...otherRetained(config, name)])
          .concat([...(previous ?? [])].flatMap(([, t]) => [...t.discovery, ...t.other]))
        : undefined;
      await broker.stop(forget && [...new Set(forget)]);
    },
  };
}

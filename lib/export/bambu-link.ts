// One Bambu printer as the exporter reads it: a local client of pandaproxy's own MQTT service (the `mqtt` npm
// client, on the printer's bind address), so the exporter is one more consumer of the report stream, keeps the
// printer's one upstream, and its commands pass the same ACL as every local client's. It keeps the merged
// state (bambu/mqtt-state.ts) and says when a report, a state change or a print event happened.
import mqtt, { type MqttClient } from "mqtt";
import type { PrinterConfig } from "../config.ts";
import type { Logger } from "../log.ts";
import { createReportState, isObject, type JsonObject } from "../bambu/mqtt-state.ts";
import { reportTopic, requestTopic } from "../bambu/mqtt-topics.ts";
import { printEvent, type PrintEvent } from "./events.ts";

/** How long the local link waits before it reconnects to our own MQTT service (it is on this host). */
export const LOCAL_RECONNECT_MS = 2_000;
const LOCAL_CONNECT_TIMEOUT_MS = 5_000;

export interface LinkEvents {
  report(payload: Buffer): void;
  event(event: PrintEvent, print: JsonObject): void;
  online(up: boolean): void;
}

export interface BambuLink {
  /** The merged state, as pushall would answer it. */
  state(): JsonObject;
  /** Forward a request from the broker to the printer's request topic (the caller checks `commands`). */
  request(payload: Buffer): void;
  stop(): Promise<void>;
}

const localHost = (bind: string) => (bind === "0.0.0.0" ? "127.0.0.1" : bind);

export function startBambuLink(printer: PrinterConfig, ca: string, owner: boolean, log: Logger, on: LinkEvents): BambuLink {
  const state = createReportState();
  let gcodeState: string | undefined;
  // Online once a report came through this connection: the local service is up and so is the printer behind it.
  let up = false;
  const client: MqttClient = mqtt.connect(`mqtts://${localHost(printer.bind)}:${printer.ports.mqtt}`, {
    username: "bblp",
    // Without commands the exporter needs no more than a viewer: the viewer code, when there is one.
    password: owner ? printer.accessCode : printer.viewerAccessCode ?? printer.accessCode,
    ca, servername: printer.serial, protocolVersion: 4, clean: true,
    clientId: `pandaproxy-export-${printer.name}`,
    reconnectPeriod: LOCAL_RECONNECT_MS, connectTimeout: LOCAL_CONNECT_TIMEOUT_MS,
  });
  client.on("connect", () => {
    client.subscribe(reportTopic(printer.serial), { qos: 0 });
    client.publish(requestTopic(printer.serial), JSON.stringify({ pushing: { command: "pushall", sequence_id: "0" } }));
    client.publish(requestTopic(printer.serial), JSON.stringify({ info: { command: "get_version", sequence_id: "0" } }));
  });
  client.on("close", () => {
    if (up) on.online((up = false));
  });
  client.on("error", (error) => log.warn(`local MQTT link to ${localHost(printer.bind)}:${printer.ports.mqtt}: ${error.message}; retrying`));
  client.on("message", (_topic, payload) => {
    if (!up) on.online((up = true));
    on.report(payload);
    let report: unknown;
    try {
      report = JSON.parse(payload.toString());
    } catch {
      return;
    }
    if (!isObject(report)) return;
    state.apply(report);
    const print = state.sections.print;
    if (!isObject(print) || typeof print.gcode_state !== "string") return;
    const happened = printEvent(gcodeState, print.gcode_state);
    gcodeState = print.gcode_state;
    if (happened) on.event(happened, print);
  });
  return {
    state: () => state.sections as JsonObject,
    request(payload) {
      client.publish(requestTopic(printer.serial), payload);
    },
    stop: () => client.endAsync(true),
  };
}

// Home Assistant MQTT discovery for one printer, as pure functions: the retained config messages that make it
// one device with its sensors, binary sensors, camera and (with commands on) buttons. The schema is Home
// Assistant's (https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery and the sensor, binary_sensor,
// camera and button pages): <discovery_prefix>/<component>/<node_id>/<object_id>/config.
import type { PrinterInfo } from "../core/service.ts";

export interface DiscoveryPrinter {
  name: string;
  type: "bambu" | "flashforge";
  serial: string;
  /** The configured model ("P1S", "Adventurer 5M"), when the printer has not said its own. */
  model?: string;
}

export interface DiscoveryInput {
  printer: DiscoveryPrinter;
  info: PrinterInfo;
  prefix: string;
  discoveryPrefix: string;
  commands: boolean;
  /** The web page's status page, when the web page is on. */
  statusPage?: string;
  /** AMS trays the printer reported, as "<ams>-<tray>" ("0-0" … "0-3"). */
  amsTrays?: readonly string[];
}

export interface DiscoveryMessage {
  topic: string;
  payload: Record<string, unknown>;
}

export const exporterAvailabilityTopic = (prefix: string) => `${prefix}/availability`;
export const printerTopic = (prefix: string, printer: string, leaf: "state" | "report" | "availability" | "event" | "request" | "camera" | "camera/attributes") =>
  `${prefix}/${printer}/${leaf}`;

type Entity = Record<string, unknown> & { component: "sensor" | "binary_sensor" | "camera" | "button"; id: string; name: string };

const sensor = (id: string, name: string, template: string, extra: Record<string, unknown> = {}): Entity =>
  ({ component: "sensor", id, name, value_template: template, ...extra });
const temperature = (id: string, name: string, template: string) =>
  sensor(id, name, template, { device_class: "temperature", unit_of_measurement: "°C", state_class: "measurement" });
const percent = { unit_of_measurement: "%", state_class: "measurement" };
const minutes = { device_class: "duration", unit_of_measurement: "min" };

/** Bambu: the merged report (`value_json.print.*`, as OpenBambuAPI's mqtt.md names the fields). */
function bambuEntities(input: DiscoveryInput): Entity[] {
  const p = "value_json.print";
  const printing = `{{ 'ON' if ${p}.gcode_state in ['RUNNING', 'PREPARE', 'PAUSE'] else 'OFF' }}`;
  const entities: Entity[] = [
    sensor("state", "State", `{{ ${p}.gcode_state }}`),
    sensor("progress", "Progress", `{{ ${p}.mc_percent }}`, percent),
    sensor("remaining", "Remaining time", `{{ ${p}.mc_remaining_time }}`, minutes),
    sensor("layer", "Layer", `{{ ${p}.layer_num }}`, { json_attributes_template: `{{ {'total_layers': ${p}.total_layer_num} | tojson }}` }),
    temperature("nozzle_temperature", "Nozzle temperature", `{{ ${p}.nozzle_temper }}`),
    temperature("bed_temperature", "Bed temperature", `{{ ${p}.bed_temper }}`),
    temperature("chamber_temperature", "Chamber temperature", `{{ ${p}.chamber_temper }}`),
    { component: "binary_sensor", id: "printing", name: "Printing", value_template: printing, device_class: "running" },
    { component: "binary_sensor", id: "error", name: "Error", device_class: "problem",
      value_template: `{{ 'ON' if (${p}.print_error | default(0)) != 0 or ${p}.gcode_state == 'FAILED' else 'OFF' }}` },
  ];
  for (const tray of input.amsTrays ?? []) {
    const [ams, slot] = tray.split("-");
    entities.push(sensor(`ams_${ams}_tray_${slot}`, `AMS ${Number(ams) + 1} tray ${Number(slot) + 1}`,
      `{{ (${p}.ams.ams[${ams}].tray[${slot}].tray_type) | default('empty') }}`,
      { json_attributes_template: `{{ ${p}.ams.ams[${ams}].tray[${slot}] | tojson }}` }));
  }
  if (input.commands) {
    for (const [id, name, command] of [["pause", "Pause", "pause"], ["resume", "Resume", "resume"], ["stop", "Stop", "stop"]] as const) {
      entities.push({ component: "button", id, name, command_topic: printerTopic(input.prefix, input.printer.name, "request"),
        payload_press: JSON.stringify({ print: { command, sequence_id: "0" } }) });
    }
  }
  return entities;
}

/** The temperature named `heater` in the telemetry's list (core/telemetry.ts), or none. */
const heaterTemplate = (heater: string) =>
  `{{ (value_json.temperatures | selectattr('name', 'equalto', '${heater}') | map(attribute='celsius') | first) | default(none) }}`;

/** FlashForge: its telemetry (core/telemetry.ts), from the ~M119, ~M27 and ~M105 replies of its console; ~M105
 * names no chamber, so there is no chamber sensor. */
function flashforgeEntities(): Entity[] {
  const t = "value_json";
  return [
    sensor("state", "State", `{{ ${t}.state }}`),
    sensor("progress", "Progress", `{{ ((${t}.progress | default(0)) * 100) | round(0) }}`, percent),
    sensor("remaining", "Remaining time", `{{ ((${t}.remainingSeconds | default(0)) / 60) | round(0) }}`, minutes),
    sensor("layer", "Layer", `{{ ${t}.layer | default(none) }}`, { json_attributes_template: `{{ {'total_layers': ${t}.totalLayers | default(none)} | tojson }}` }),
    temperature("nozzle_temperature", "Nozzle temperature", heaterTemplate("nozzle")),
    temperature("bed_temperature", "Bed temperature", heaterTemplate("bed")),
    { component: "binary_sensor", id: "printing", name: "Printing", device_class: "running",
      value_template: `{{ 'ON' if ${t}.state in ['preparing', 'printing', 'paused'] else 'OFF' }}` },
    { component: "binary_sensor", id: "error", name: "Error", device_class: "problem",
      value_template: `{{ 'ON' if ${t}.state == 'failed' or (${t}.errors | default([]) | length) > 0 else 'OFF' }}` },
  ];
}

/** Every retained discovery message of one printer. */
export function discoveryMessages(input: DiscoveryInput): DiscoveryMessage[] {
  const { printer, prefix } = input;
  const node = `pandaproxy_${printer.serial}`;
  const device = {
    identifiers: [node],
    name: printer.name,
    manufacturer: printer.type === "bambu" ? "Bambu Lab" : "FlashForge",
    model: input.info.productName ?? input.info.model ?? printer.model ?? "unknown",
    serial_number: printer.serial,
    ...(input.info.firmware ? { sw_version: input.info.firmware } : {}),
    ...(input.statusPage ? { configuration_url: input.statusPage } : {}),
  };
  const availability = [
    { topic: exporterAvailabilityTopic(prefix) },
    { topic: printerTopic(prefix, printer.name, "availability") },
  ];
  const common = { device, availability, availability_mode: "all", origin: { name: "pandaproxy" } };
  const state = printerTopic(prefix, printer.name, "state");
  const entities: Entity[] = [
    ...(printer.type === "bambu" ? bambuEntities(input) : flashforgeEntities()),
    // Online reads the printer's availability itself, so it says "off" rather than "unavailable" while the
    // printer is away; it is unavailable only when the exporter is (the last will).
    { component: "binary_sensor", id: "online", name: "Online", device_class: "connectivity",
      state_topic: printerTopic(prefix, printer.name, "availability"), payload_on: "online", payload_off: "offline",
      availability: [{ topic: exporterAvailabilityTopic(prefix) }] },
    { component: "camera", id: "camera", name: "Camera", topic: printerTopic(prefix, printer.name, "camera"), image_encoding: "b64",
      json_attributes_topic: printerTopic(prefix, printer.name, "camera/attributes") },
  ];
  return entities.map(({ component, id, ...fields }) => {
    const payload: Record<string, unknown> = { ...common, unique_id: `${node}_${id}` };
    if (component === "sensor" || component === "binary_sensor") payload.state_topic = state;
    for (const [key, value] of Object.entries(fields)) {
      if (value === undefined) delete payload[key];
      else payload[key] = value;
    }
    if (component === "binary_sensor" && payload.payload_on === undefined) Object.assign(payload, { payload_on: "ON", payload_off: "OFF" });
    return { topic: `${input.discoveryPrefix}/${component}/${node}/${id}/config`, payload };
  });
}

/** The camera's URLs on the web page, published as the camera entity's attributes (HA's MQTT camera takes images, not URLs). */
export function cameraAttributes(webBase: string, printer: string, token: string | undefined): Record<string, string> {
  const query = token ? `?token=${encodeURIComponent(token)}` : "";
  const base = `${webBase}/printers/${encodeURIComponent(printer)}`;
  return { still_image_url: `${base}/snapshot.jpg${query}`, mjpeg_url: `${base}/camera.mjpeg${query}` };
}

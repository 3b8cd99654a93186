// The simulated printer's status as its MQTT reports carry it: a print that progresses (PREPARE, RUNNING,
// FINISH, then a new print), temperatures settling around their targets, AMS trays, lights, and the address
// fields (`net.info[].ip` as a little-endian u32, `ipcam.rtsp_url` on RTSP models). Full state for `pushall`
// (`"msg": 0`), small deltas otherwise (`"msg": 1`), as P1/A1 firmware sends them. Until a slicer sends
// `project_file`, the simulator prints its own jobs one after another (so the demo always shows progress); the
// job a slicer starts comes from a file on the SD card and, once ended, stays ended as on a real printer.
// When asked (`hmsAfterMs`), AMS 1 slot 1 runs out of filament during each print (filament-runout.ts). An H2D
// reports both its nozzles in `device.extruder.info`, as the real one does.
import { posix } from "node:path";
import type { SimIdentity } from "./types.ts";
import { cardPathOfUrl, type SdCard } from "./sdcard.ts";
import { versionModules } from "./version-modules.ts";
import { createFilamentRunout } from "./filament-runout.ts";
import type { Json, JsonObject } from "../bambu/mqtt-state.ts";

/** `net.info[].ip` as the firmware writes it: the address's four bytes read as a little-endian u32
 * (192.168.1.18 -> 302098624, ../shared/PROTOCOLS.md). The simulator's own, so the proxy's rewrite is tested
 * against the printer's encoding rather than against itself. */
function firmwareIpv4(ip: string): number {
  return Buffer.from(ip.split(".").map(Number)).readUInt32LE(0);
}

/** Layers of each simulated print and ticks spent on each layer. */
export const SIM_PRINT_LAYERS = 120;
export const SIM_TICKS_PER_LAYER = 2;
/** Ticks a finished print stays finished before the next one starts. */
export const SIM_FINISH_TICKS = 10;

export interface SimPrint {
  /** The full status, as sent on `pushall`. */
  full(sequenceId: string): JsonObject;
  /** Advance one tick; the fields that changed, as a `"msg": 1` delta. */
  tick(): JsonObject;
  /** The answer to `get_version`. */
  version(sequenceId: string): JsonObject;
  /** Run a command from `device/<serial>/request`; returns the reports to send (reply first, then any delta). */
  command(request: JsonObject): JsonObject[];
  readonly gcodeState: string;
}

type Section = Record<string, Json>;

/** Models that report two nozzles in `device.extruder.info` (maziggy/bambuddy: only the H2D and H2D Pro have two). */
const TWO_NOZZLE_MODELS = new Set(["H2D", "H2D Pro"]);
/** The nozzle that is not printing keeps this standby temperature. */
const STANDBY_NOZZLE_TARGET = 160;
/** `device.extruder.info[].temp`: the target in the high 16 bits, the current temperature in the low 16
 * (greghesp/ha-bambulab pybambu/models.py). */
const packedTemperature = (celsius: number, target: number) => target * 0x10000 + Math.max(0, Math.min(0xffff, Math.round(celsius)));

export interface SimPrintOptions {
  liveviewOff?: boolean;
  /** The filament runs out this long into each print (undefined: never); cleared after `hmsForMs`. */
  hmsAfterMs?: number;
  hmsForMs?: number;
  now?: () => number;
}

/** The card is where `project_file` looks for the file it names; without one every such command fails. */
export function createSimPrint(identity: SimIdentity, card?: SdCard, options: SimPrintOptions = {}): SimPrint {
  let pushSequence = 0;
  let gcodeState = "PREPARE";
  let layer = 0;
  let tickInLayer = 0;
  let finishTicks = 0;
  let printNumber = 1;
  /** The job being printed; the simulator's own until a slicer starts one. */
  let job = { subtaskName: "sim_benchy_1", gcodeFile: "sim_benchy_1.gcode.3mf", projectId: "0", profileId: "", taskId: "0", subtaskId: "0" };
  let ownJobs = true;
  let chamberLight = "on";
  const nozzleTarget = 220;
  const bedTarget = 55;
  let nozzle = 25;
  /** The H2D's left nozzle (id 1); `nozzle` is its right one (id 0), which prints. */
  let leftNozzle = 25;
  let bed = 24;
  const twoNozzles = TWO_NOZZLE_MODELS.has(identity.model.name);
  const runout = createFilamentRunout({ afterMs: options.hmsAfterMs, forMs: options.hmsForMs, now: options.now });
  let humidity = 4;
  const percent = () => Math.min(100, Math.floor((layer / SIM_PRINT_LAYERS) * 100));
  const remainingMinutes = () => Math.max(0, Math.round((SIM_PRINT_LAYERS - layer) * 0.75));

  const trays = (): Json[] =>
    [["PLA", "FFFFFFFF", 82], ["PLA", "000000FF", 47], ["PETG", "F95D73FF", 100], ["PLA", "00AE42FF", 12]].map(([type, color, remain], id) => ({
      id: String(id), tray_type: type as string, tray_color: color as string, remain: remain as number,
      tray_sub_brands: `${type} Basic`, tray_info_idx: type === "PETG" ? "GFG99" : "GFA00",
      nozzle_temp_min: type === "PETG" ? "220" : "190", nozzle_temp_max: type === "PETG" ? "270" : "230",
      tray_weight: "1000", tray_diameter: "1.75", tag_uid: "0000000000000000", tray_uuid: "00000000000000000000000000000000",
    }));

  const ams = (): Section => ({
    ams: [{ id: "0", humidity: String(humidity), temp: "27.5", tray: trays() }],
    ams_exist_bits: "1", tray_exist_bits: "f", tray_is_bbl_bits: "f", tray_now: "0", tray_pre: "0", tray_tar: "0",
    tray_read_done_bits: "f", tray_reading_bits: "0", version: 4, insert_flag: true, power_on_flag: false,
  });

  /** Ids as Bambu Studio numbers them: 0 the right (main) nozzle, 1 the left. `state`: the count of extruders in
   * its low 4 bits, the active one in the next 4 (ha-bambulab pybambu/models.py). */
  const device = (): Section => ({
    extruder: {
      info: [{ id: 0, temp: packedTemperature(nozzle, nozzleTarget) }, { id: 1, temp: packedTemperature(leftNozzle, STANDBY_NOZZLE_TARGET) }],
      state: 2,
    },
  });

  const stage = () => (gcodeState === "RUNNING" ? "2" : gcodeState === "PREPARE" ? "1" : "1");

  const full = (sequenceId: string): JsonObject => {
    const print: Section = {
      ams: ams(), ams_rfid_status: 6, ams_status: 0,
      bed_target_temper: bedTarget, bed_temper: round(bed), big_fan1_speed: "0", big_fan2_speed: "0",
      chamber_temper: 28, command: "push_status", cooling_fan_speed: "15", fail_reason: "0", fan_gear: 0,
      force_upgrade: false, gcode_file: job.gcodeFile, gcode_file_prepare_percent: "100",
      gcode_start_time: String(Math.floor(Date.now() / 1000)), gcode_state: gcodeState, heatbreak_fan_speed: "15",
      home_flag: 6, hw_switch_state: 1,
      ipcam: {
        ipcam_dev: "1", ipcam_record: "enable", timelapse: "disable", resolution: "1080p", tutk_server: "disable", mode_bits: 3,
        ...(identity.model.camera === "rtsp" ? { rtsp_url: options.liveviewOff ? "disable" : `rtsps://${identity.host}/streaming/live/1` } : {}),
      },
      layer_num: layer, lifecycle: "product", lights_report: [{ node: "chamber_light", mode: chamberLight }],
      maintain: 3, mc_percent: percent(), mc_print_error_code: "0", mc_print_line_number: String(layer * 400),
      mc_print_stage: stage(), mc_print_sub_stage: 0, mc_remaining_time: remainingMinutes(),
      mess_production_state: "active", msg: 0,
      net: { conf: 0, info: [{ ip: firmwareIpv4(identity.host), mask: firmwareIpv4("255.255.255.0") }, { ip: 0, mask: 0 }] },
      nozzle_diameter: "0.4", nozzle_target_temper: nozzleTarget, nozzle_temper: round(nozzle), nozzle_type: "stainless_steel",
      online: { ahb: false, rfid: false, version: 7 }, print_gcode_action: 0, print_real_action: 0,
      print_type: "local", profile_id: job.profileId, project_id: job.projectId, queue_number: 0, s_obj: [], sdcard: true,
      sequence_id: sequenceId, spd_lvl: 2, spd_mag: 100, stg: [2, 14, 1], stg_cur: gcodeState === "RUNNING" ? 0 : 1,
      subtask_id: job.subtaskId, subtask_name: job.subtaskName, task_id: job.taskId, total_layer_num: SIM_PRINT_LAYERS,
      upgrade_state: { status: "IDLE", progress: "", message: "", module: "null", new_version_state: 2, ota_new_version_number: "" },
      upload: { status: "idle", progress: 0, message: "" },
      vt_tray: { id: "254", tray_type: "", tray_color: "00000000", remain: 0 },
      wifi_signal: "-44dBm", xcam: { allow_skip_parts: false, buildplate_marker_detector: true, first_layer_inspector: true, halt_print_sensitivity: "medium", print_halt: true, printing_monitor: true, spaghetti_detector: true },
      ...runout.fields(),
      ...(twoNozzles ? { device: device() } : {}),
    };
    return { print };
  };

  const delta = (fields: Section): JsonObject => ({
    print: { ...fields, command: "push_status", msg: 1, sequence_id: String(++pushSequence) },
  });

  const approach = (value: number, target: number) => value + (target - value) * 0.35 + (Math.random() - 0.5) * 0.6;

  const tick = (): JsonObject => {
    const changed: Section = {};
    const heating = gcodeState === "PREPARE" || gcodeState === "RUNNING";
    nozzle = approach(nozzle, heating ? nozzleTarget : 30);
    bed = approach(bed, heating ? bedTarget : 28);
    changed.nozzle_temper = round(nozzle);
    changed.bed_temper = round(bed);
    if (twoNozzles) {
      leftNozzle = approach(leftNozzle, heating ? STANDBY_NOZZLE_TARGET : 30);
      changed.device = device();
    }
    const ranOut = runout.step(gcodeState);
    if (ranOut === "raise") gcodeState = "PAUSE";
    if (ranOut === "clear" && gcodeState === "PAUSE") gcodeState = "RUNNING";
    if (ranOut) Object.assign(changed, { gcode_state: gcodeState, ...runout.fields() });
    if (gcodeState === "PREPARE") {
      if (Math.abs(nozzle - nozzleTarget) < 5) {
        gcodeState = "RUNNING";
        Object.assign(changed, { gcode_state: gcodeState, mc_print_stage: stage(), stg_cur: 0 });
      }
    } else if (gcodeState === "RUNNING") {
      if (++tickInLayer >= SIM_TICKS_PER_LAYER) {
        tickInLayer = 0;
        layer++;
        Object.assign(changed, { layer_num: layer, mc_percent: percent(), mc_remaining_time: remainingMinutes(), mc_print_line_number: String(layer * 400) });
        if (layer >= SIM_PRINT_LAYERS) {
          gcodeState = "FINISH";
          finishTicks = 0;
          Object.assign(changed, { gcode_state: gcodeState, mc_print_stage: stage() });
        }
      }
    } else if (ownJobs && (gcodeState === "FINISH" || gcodeState === "FAILED") && ++finishTicks >= SIM_FINISH_TICKS) {
      printNumber++;
      const name = `sim_benchy_${printNumber}`;
      Object.assign(changed, begin({ ...job, subtaskName: name, gcodeFile: `${name}.gcode.3mf` }));
    }
    if (pushSequence % 15 === 14) {
      humidity = humidity === 4 ? 3 : 4;
      changed.ams = ams();
    }
    return delta(changed);
  };

  const version = (sequenceId: string): JsonObject => ({
    info: {
      command: "get_version", sequence_id: sequenceId, result: "success", reason: "",
      module: versionModules(identity.model, identity.firmware, identity.serial),
    },
  });

  /** Starts `next` from its first layer; the fields that changed. */
  const begin = (next: typeof job): Section => {
    job = next;
    layer = 0;
    tickInLayer = 0;
    gcodeState = "PREPARE";
    runout.clear();
    runout.printStarted();
    return {
      ...runout.fields(),
      gcode_state: gcodeState, layer_num: 0, mc_percent: 0, mc_remaining_time: remainingMinutes(), mc_print_stage: stage(),
      subtask_name: job.subtaskName, gcode_file: job.gcodeFile, total_layer_num: SIM_PRINT_LAYERS,
      project_id: job.projectId, profile_id: job.profileId, task_id: job.taskId, subtask_id: job.subtaskId,
    };
  };

  /** `print.project_file`: print a .3mf from the card; a file that is not there fails the command. */
  const projectFile = (body: Section, sequenceId: string): JsonObject[] => {
    const url = typeof body.url === "string" ? body.url : "";
    const cardPath = cardPathOfUrl(url);
    const failed = (reason: string): JsonObject[] => [{ print: { ...body, result: "failed", reason, sequence_id: sequenceId } }];
    if (!cardPath) return failed(`not a file on the SD card: "${url}"`);
    if (!card?.hasFile(cardPath)) return failed(`file not found on the SD card: ${cardPath}`);
    const text = (key: string, otherwise: string) => (typeof body[key] === "string" && body[key] !== "" ? (body[key] as string) : otherwise);
    const fileName = posix.basename(cardPath);
    ownJobs = false;
    const changed = begin({
      subtaskName: text("subtask_name", fileName.replace(/(\.gcode)?\.3mf$/i, "")), gcodeFile: fileName,
      projectId: text("project_id", "0"), profileId: text("profile_id", "0"), taskId: text("task_id", "0"), subtaskId: text("subtask_id", "0"),
    });
    return [{ print: { ...body, result: "success", reason: "success", sequence_id: sequenceId } }, delta(changed)];
  };

  const command = (request: JsonObject): JsonObject[] => {
    const [section, body] = Object.entries(request)[0] ?? [];
    if (!section || typeof body !== "object" || body === null || Array.isArray(body)) return [];
    const sequenceId = String(body.sequence_id ?? "0");
    const name = String(body.command ?? "");
    if (section === "pushing" && name === "pushall") return [full(sequenceId)];
    if (section === "info" && name === "get_version") return [version(sequenceId)];
    if (section === "print" && name === "project_file") return projectFile(body as Section, sequenceId);
    const reply: JsonObject = { [section]: { ...body, result: "success", reason: "success", sequence_id: sequenceId } };
    const followUp: Section = {};
    if (section === "print" && name === "pause" && gcodeState === "RUNNING") followUp.gcode_state = gcodeState = "PAUSE";
    if (section === "print" && name === "resume" && gcodeState === "PAUSE") {
      followUp.gcode_state = gcodeState = "RUNNING";
      if (runout.clear()) Object.assign(followUp, runout.fields());
    }
    if (section === "print" && name === "stop" && gcodeState !== "FINISH") {
      followUp.gcode_state = gcodeState = "FAILED";
      finishTicks = 0;
      if (runout.clear()) Object.assign(followUp, runout.fields());
    }
    if (section === "system" && name === "ledctrl" && body.led_node === "chamber_light") {
      chamberLight = body.led_mode === "off" ? "off" : "on";
      followUp.lights_report = [{ node: "chamber_light", mode: chamberLight }];
    }
    return Object.keys(followUp).length ? [reply, delta(followUp)] : [reply];
  };

  return {
    full,
    tick,
    version,
    command,
    get gcodeState() {
      return gcodeState;
    },
  };
}

const round = (value: number) => Math.round(value * 100) / 100;

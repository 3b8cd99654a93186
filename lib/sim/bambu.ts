// A simulated Bambu printer: the services its model has, on its own loopback address, with the firmware's
// limits. Used by the tests, the benchmarks, `pandaproxy simulate` and `pandaproxy demo`.
import { BAMBU_PORTS, FLASHFORGE_PORTS, type Ports } from "../config.ts";
import { findModel, type BambuModel } from "../bambu/models.ts";
import { simulatedPrinterTls, type SimulatedTlsOptions } from "./tls.ts";
import { startSimMqtt } from "./mqtt.ts";
import { startSimulatedFtp } from "./ftp.ts";
import type { SimIdentity, SimOptions, SimService, SimStarter } from "./types.ts";
import { startSimulatedTunnel } from "./tunnel.ts";
import { startSimRtsp } from "./rtsp.ts";
import { startSimulatedChamber } from "./chamber.ts";
import { startSimBind } from "./bind.ts";
import { startSimSsdp } from "./ssdp.ts";
import { openSdCard } from "./sdcard.ts";

export type SimServiceName = "mqtt" | "ftp" | "chamber" | "tunnel" | "rtsp" | "bind" | "ssdp";

/** Starter per simulated service; each lib/sim/<service>.ts registers itself here. */
const SIM_SERVICES: Partial<Record<SimServiceName, SimStarter>> = {
  tunnel: startSimulatedTunnel,
  rtsp: startSimRtsp,
  ftp: startSimulatedFtp,
  chamber: startSimulatedChamber,
  mqtt: startSimMqtt,
  bind: startSimBind,
  ssdp: startSimSsdp,
};

export interface SimPrinterOptions extends SimOptions {
  name?: string;
  model?: string;
  serial?: string;
  accessCode?: string;
  firmware?: string;
  host: string;
  ports?: Partial<Ports>;
  /** Default: every service the model has. */
  services?: SimServiceName[];
  /** Another key or certificate name than the serial's usual one (printer identity tests). */
  tls?: SimulatedTlsOptions;
}

export interface SimPrinter {
  readonly identity: SimIdentity;
  readonly services: readonly SimService[];
  service<T extends SimService>(name: SimServiceName): T | undefined;
  stop(): Promise<void>;
}

export const SIM_SERIAL_SUFFIX = "A0000001";

export function servicesOfModel(model: BambuModel): SimServiceName[] {
  const camera: SimServiceName[] = model.camera === "rtsp" ? ["rtsp"] : ["chamber"];
  if (model.fileTunnel) camera.push("tunnel");
  return ["mqtt", "ftp", ...camera, "bind", "ssdp"];
}

export function simIdentity(options: SimPrinterOptions): SimIdentity {
  const model = findModel(options.model ?? "P1S");
  if (!model) throw new Error(`simulator: unknown model "${options.model}"`);
  const serial = options.serial ?? `${model.serialPrefixes[0]}${SIM_SERIAL_SUFFIX}`.slice(0, 15);
  return {
    name: options.name ?? `sim-${model.name.toLowerCase().replace(/\s+/g, "")}`,
    serial,
    accessCode: options.accessCode ?? "12345678",
    model,
    firmware: options.firmware ?? "01.08.00.00",
    host: options.host,
    ports: { ...BAMBU_PORTS, ...FLASHFORGE_PORTS, ...options.ports } as Ports,
    tls: simulatedPrinterTls(serial, options.tls),
  };
}

export async function startSimulatedBambu(options: SimPrinterOptions): Promise<SimPrinter> {
  const identity = simIdentity(options);
  // Liveview off closes the camera's port, as on the printer; the reports say so (print-state.ts).
  const wanted = (options.services ?? servicesOfModel(identity.model)).filter((s) => !(s === "rtsp" && options.liveviewOff));
  const started: SimService[] = [];
  // One card for FTPS and MQTT, so a `project_file` command finds what was uploaded.
  const card = openSdCard(options.ftpRoot);
  const shared: SimOptions = { ...options, ftpRoot: card.root };
  const stopAll = async () => {
    await Promise.allSettled(started.map((s) => s.stop()));
    card.remove();
  };
  try {
    for (const name of wanted) {
      const start = SIM_SERVICES[name];
      if (!start) throw new Error(`simulator: service "${name}" is not simulated yet`);
      started.push(await start(identity, shared));
    }
  } catch (error) {
    await stopAll();
    throw error;
  }
  return {
    identity,
    services: started,
    service: <T extends SimService>(name: SimServiceName) => started.find((s) => s.name === name) as T | undefined,
    stop: stopAll,
  };
}

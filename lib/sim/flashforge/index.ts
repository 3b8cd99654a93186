// A whole simulated FlashForge Adventurer 5M on one address: TCP 8899 console, HTTP 8898 API, UDP 48899
// discovery and the 8080 MJPEG camera, sharing one printer state. Used by tests, `pandaproxy simulate` and `demo`.
import { FLASHFORGE_PORTS, type Ports } from "../../config.ts";
import { startSimCamera, type SimCamera, type SimCameraOptions } from "./camera.ts";
import { startSimDiscovery, type SimDiscovery } from "./discovery.ts";
import { startSimHttp, type SimHttp } from "./http.ts";
import { createSimState, type FlashforgeSimIdentity, type FlashforgeSimState } from "./state.ts";
import { startSimTcp, type SimTcp, type SimTcpOptions } from "./tcp.ts";

export type { FlashforgeSimIdentity } from "./state.ts";

export interface SimFlashforgeOptions {
  host: string;
  name?: string;
  serial?: string;
  checkCode?: string;
  ports?: Partial<Ports>;
  tcp?: SimTcpOptions;
  camera?: SimCameraOptions;
}

export interface SimFlashforge {
  readonly identity: FlashforgeSimIdentity;
  readonly state: FlashforgeSimState;
  readonly tcp: SimTcp;
  readonly http: SimHttp;
  readonly discovery: SimDiscovery;
  readonly camera: SimCamera;
  stop(): Promise<void>;
}

export const SIM_FLASHFORGE_SERIAL = "SNMOMC9900001";
export const SIM_FLASHFORGE_CHECK_CODE = "1a2b3c4d";

export async function startSimulatedFlashforge(options: SimFlashforgeOptions): Promise<SimFlashforge> {
  const ports = { ...FLASHFORGE_PORTS, ...options.ports };
  const identity: FlashforgeSimIdentity = {
    name: options.name ?? "sim-adventurer5m",
    serial: options.serial ?? SIM_FLASHFORGE_SERIAL,
    checkCode: options.checkCode ?? SIM_FLASHFORGE_CHECK_CODE,
    host: options.host,
    ports: { tcp: ports.tcp, http: ports.http, discovery: ports.discovery, camera: ports.camera },
    machineType: "Flashforge Adventurer 5M",
    firmware: "v3.1.3",
    mac: "88:A9:A7:90:00:01",
  };
  const state = createSimState(identity);
  const started: { stop(): Promise<void> }[] = [];
  try {
    const tcp = await startSimTcp(state, options.tcp);
    started.push(tcp);
    const http = await startSimHttp(state);
    started.push(http);
    const discovery = await startSimDiscovery(state);
    started.push(discovery);
    const camera = await startSimCamera(state, options.camera);
    started.push(camera);
    return {
      identity, state, tcp, http, discovery, camera,
      stop: async () => void (await Promise.allSettled(started.map((s) => s.stop()))),
    };
  } catch (error) {
    await Promise.allSettled(started.map((s) => s.stop()));
    throw new Error(`simulated FlashForge on ${options.host}: ${(error as Error).message}`);
  }
}

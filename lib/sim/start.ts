// Starts one simulated printer of either brand from a sim.toml entry (or the demo's built-in list).
import { startSimulatedBambu, type SimServiceName } from "./bambu.ts";
import type { SimEntry } from "./config.ts";

export interface RunningSim {
  type: "bambu" | "flashforge";
  name: string;
  serial: string;
  accessCode: string;
  model: string;
  host: string;
  stop(): Promise<void>;
}

export async function startSimulated(entry: SimEntry): Promise<RunningSim> {
  if (entry.type === "flashforge") {
    const { startSimulatedFlashforge } = await import("./flashforge/index.ts");
    const sim = await startSimulatedFlashforge({
      host: entry.host, name: entry.name, serial: entry.serial, checkCode: entry.accessCode, ports: entry.ports,
    });
    return {
      type: "flashforge", name: sim.identity.name, serial: sim.identity.serial, accessCode: sim.identity.checkCode,
      model: "Adventurer 5M", host: entry.host, stop: () => sim.stop(),
    };
  }
  const sim = await startSimulatedBambu({ ...entry, services: entry.services as SimServiceName[] | undefined });
  const { identity } = sim;
  return {
    type: "bambu", name: identity.name, serial: identity.serial, accessCode: identity.accessCode,
    model: identity.model.name, host: identity.host, stop: () => sim.stop(),
  };
}

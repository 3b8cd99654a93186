// Starts one simulated printer of either brand from a sim.toml entry (or the demo's built-in list), and switches
// it off and on again when the entry asks (`power_off_every` / `power_off_for`): every service goes away, as
// when a real printer is switched off, and comes back with the same identity.
import { startSimulatedBambu, type SimServiceName } from "./bambu.ts";
import type { SimEntry } from "./config.ts";
import { processLogger } from "../log.ts";

export interface RunningSim {
  type: "bambu" | "flashforge";
  name: string;
  serial: string;
  accessCode: string;
  model: string;
  host: string;
  stop(): Promise<void>;
}

type Booted = Omit<RunningSim, "stop"> & { stop(): Promise<void> };

async function boot(entry: SimEntry): Promise<Booted> {
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

export async function startSimulated(entry: SimEntry): Promise<RunningSim> {
  const first = await boot(entry);
  const { powerOffEveryMs: everyMs, powerOffForMs: offMs } = entry;
  if (everyMs === undefined || offMs === undefined) return first;
  // The same serial and code after each power-on, as the printer keeps them.
  const again: SimEntry = { ...entry, serial: first.serial, accessCode: first.accessCode, name: first.name };
  const log = processLogger("sim").with({ printer: first.name, service: "power" });
  let current: Booted | undefined = first;
  let stopped = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const switchOff = async () => {
    log.info(`switching off for ${offMs / 1000} s`);
    await current?.stop();
    current = undefined;
    if (!stopped) timer = setTimeout(() => void switchOn().catch((e: Error) => log.warn(`could not switch on again: ${e.message}`)), offMs);
  };
  const switchOn = async () => {
    if (stopped) return;
    current = await boot(again);
    log.info("switched on again");
    if (stopped) await current.stop();
    else timer = setTimeout(() => void switchOff(), everyMs);
  };
  timer = setTimeout(() => void switchOff(), everyMs);
  return {
    ...first,
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await current?.stop();
      current = undefined;
    },
  };
}

// sim.toml's fault options: the keys and their problems, and a printer that switches off and on by itself.
import { afterAll, describe, expect, test } from "bun:test";
import { connect } from "node:net";
import { parseSimConfig } from "../lib/sim/config.ts";
import { startSimulated, type RunningSim } from "../lib/sim/start.ts";
import { npmClient, until } from "./mqtt-helpers.ts";

const HOST = "127.0.41.60";

/** Whether something accepts TCP on the simulated printer's MQTT port now. */
const mqttAnswers = () =>
  new Promise<boolean>((resolve) => {
    const socket = connect({ host: HOST, port: 8883 }, () => {
      socket.destroy();
      resolve(true);
    });
    socket.on("error", () => resolve(false));
  });

describe("sim.toml fault options", () => {
  let sim: RunningSim | undefined;
  afterAll(async () => {
    await sim?.stop();
  });

  test("budget, decay, liveview off and the power cycle are read; wrong values name the key", () => {
    const [entry] = parseSimConfig(`[[printer]]\nhost = "${HOST}"\nmodel = "X1C"\nmqtt_command_budget = 5\nmqtt_session_decay = 600\nliveview_off = true\npower_off_every = 60\npower_off_for = 20\n`);
    expect(entry).toMatchObject({ mqttCommandBudget: 5, mqttSessionDecayMs: 600_000, liveviewOff: true, powerOffEveryMs: 60_000, powerOffForMs: 20_000 });
    expect(() => parseSimConfig(`[[printer]]\nhost = "${HOST}"\nliveview_off = "yes"\n`)).toThrow(/"liveview_off" must be true or false/);
    expect(() => parseSimConfig(`[[printer]]\nhost = "${HOST}"\npower_off_every = 60\n`)).toThrow(/"power_off_every" and "power_off_for" go together/);
  });

  test("hms_after and hms_for are read; hms_for alone or a value that is not whole seconds names the key", () => {
    const [entry] = parseSimConfig(`[[printer]]\nhost = "${HOST}"\nhms_after = 90\nhms_for = 20\n`);
    expect(entry).toMatchObject({ hmsAfterMs: 90_000, hmsForMs: 20_000 });
    expect(() => parseSimConfig(`[[printer]]\nhost = "${HOST}"\nhms_for = 20\n`)).toThrow(/"hms_for" needs "hms_after"/);
    expect(() => parseSimConfig(`[[printer]]\nhost = "${HOST}"\nhms_after = 1.5\n`)).toThrow(/"hms_after" must be a positive whole number of seconds/);
  });

  test("a printer from sim.toml with hms_after raises the AMS runout by itself during its print", async () => {
    const host = "127.0.55.3";
    const [entry] = parseSimConfig(`[[printer]]\nhost = "${host}"\nmodel = "P1S"\naccess_code = "12345678"\nservices = ["mqtt"]\nhms_after = 1\n`);
    const printer = await startSimulated(entry!);
    const client = await npmClient(host);
    try {
      await client.client.subscribeAsync(`device/${printer.serial}/report`);
      const raised = await client.next((j) => Array.isArray(j.print?.hms) && j.print.hms.length > 0, 30_000);
      expect(raised.print).toMatchObject({ gcode_state: "PAUSE", hms: [{ attr: 0x07002000, code: 0x00020001 }], print_error: 0x07008011 });
    } finally {
      await client.end();
      await printer.stop();
    }
  }, 40_000);

  test("a printer with power_off_every switches off (its port closes) and comes back", async () => {
    const [entry] = parseSimConfig(`[[printer]]\nhost = "${HOST}"\nmodel = "P1S"\nservices = ["mqtt"]\npower_off_every = 1\npower_off_for = 1\n`);
    sim = await startSimulated(entry!);
    expect(await mqttAnswers()).toBe(true);
    let off = false;
    await until("the printer to switch off", () => {
      void mqttAnswers().then((up) => (off ||= !up));
      return off;
    }, 5_000);
    let on = false;
    await until("the printer to come back", () => {
      void mqttAnswers().then((up) => (on ||= up));
      return on;
    }, 5_000);
  }, 15_000);
});

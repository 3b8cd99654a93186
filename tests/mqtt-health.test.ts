// The printer's MQTT session is renewed when it stops answering (P1S command budget) or grows old (firmware that
// decays long sessions), with the mqtt npm client connected to the proxy throughout and nothing sent twice.
import { afterEach, describe, expect, test } from "bun:test";
import { setupLogging } from "../lib/log.ts";
import { ConfigErrors } from "../lib/config.ts";
import { npmClient, startProxy, startSim, until, type Proxy, type TestClient } from "./mqtt-helpers.ts";
import type { SimPrinter } from "../lib/sim/bambu.ts";
import type { SimMqtt } from "../lib/sim/mqtt.ts";
import { parseConfig } from "../lib/config.ts";

const SIM_HOST = "127.0.41.30";
const PROXY_HOST = "127.0.41.31";
/** The proxy's own pushall and get_version after each connect count against the printer's budget too. */
const PROXY_REQUESTS_PER_SESSION = 2;

const ledctrl = (sequenceId: string) =>
  JSON.stringify({ system: { sequence_id: sequenceId, command: "ledctrl", led_node: "chamber_light", led_mode: "on", led_on_time: 500, led_off_time: 500, loop_times: 1, interval_time: 1000 } });
const repliesTo = (c: TestClient, sequenceId: string) => c.messages.filter((m) => m.json?.system?.sequence_id === sequenceId).length;
const sentToPrinter = (mqtt: SimMqtt, sequenceId: string) => mqtt.requests.filter((r) => r.toString().includes(`"sequence_id":"${sequenceId}"`)).length;

describe("printer MQTT session health", () => {
  let sim: SimPrinter | undefined;
  let proxy: Proxy | undefined;
  let client: TestClient | undefined;
  afterEach(async () => {
    await client?.end();
    await proxy?.stop();
    await sim?.stop();
  });

  const setUp = async (simOptions: Parameters<typeof startSim>[1], extra = "") => {
    setupLogging("info", { quiet: true });
    const started = await startSim(SIM_HOST, { mqttReportIntervalMs: 200, ...simOptions });
    sim = started.sim;
    proxy = await startProxy(SIM_HOST, sim.identity.serial, PROXY_HOST, extra);
    await until("the proxy's printer session", () => started.mqtt.requests.length >= PROXY_REQUESTS_PER_SESSION);
    client = await npmClient(PROXY_HOST);
    await client.client.subscribeAsync(`device/${sim.identity.serial}/report`);
    let closed = false;
    client.client.on("close", () => (closed = true));
    return { mqtt: started.mqtt, request: `device/${sim.identity.serial}/request`, closed: () => closed };
  };

  test("a wedged session is renewed: the held replies arrive once, the next command is answered, the client stays", async () => {
    const { mqtt, request, closed } = await setUp({ mqttCommandBudget: PROXY_REQUESTS_PER_SESSION + 1 });
    await client!.client.publishAsync(request, ledctrl("101"));
    await client!.next((j) => j.system?.sequence_id === "101");
    await client!.client.publishAsync(request, ledctrl("102"));
    await client!.client.publishAsync(request, ledctrl("103"));
    await client!.next((j) => j.system?.sequence_id === "103", 20_000);
    expect(mqtt.accepted).toBe(2);
    await client!.client.publishAsync(request, ledctrl("104"));
    await client!.next((j) => j.system?.sequence_id === "104");
    expect([repliesTo(client!, "102"), repliesTo(client!, "103"), repliesTo(client!, "104")]).toEqual([1, 1, 1]);
    expect([sentToPrinter(mqtt, "102"), sentToPrinter(mqtt, "103")]).toEqual([1, 1]);
    expect(closed()).toBe(false);
  }, 30_000);

  test("mqtt_session_max_age renews a session that firmware let decay; commands are answered again", async () => {
    // The decay must outlast the renewed session's first command on a loaded machine (3 s failed once with the suite's
    // 10 min outage test beside it): it only has to come before the 10 s renewal.
    const { mqtt, request, closed } = await setUp({ mqttSessionDecayMs: 6_000 }, "mqtt_session_max_age = 10");
    await until("the proxy to renew the aged session", () => mqtt.accepted === 2, 15_000);
    await client!.client.publishAsync(request, ledctrl("201"));
    await client!.next((j) => j.system?.sequence_id === "201");
    expect(closed()).toBe(false);
  }, 30_000);

  test("mqtt_session_max_age outside 10 s to 7 days is refused, naming the key", () => {
    const entry = (age: number) => `[[printer]]\nname = "p"\nhost = "127.0.41.32"\nserial = "01P00A000000001"\naccess_code = "12345678"\nmqtt_session_max_age = ${age}\n`;
    expect(() => parseConfig(entry(5))).toThrow(ConfigErrors);
    expect(() => parseConfig(entry(5))).toThrow(/mqtt_session_max_age/);
    expect(parseConfig(entry(3600)).printers[0]!.mqttSessionMaxAgeMs).toBe(3_600_000);
  });
});

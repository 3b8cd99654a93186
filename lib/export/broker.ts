// The exporter's one connection to the external broker (the `mqtt` npm client): a last will on the exporter's
// availability topic, reconnects with a doubling backoff, and a bounded publisher: while the broker is away or
// slow, messages are dropped and counted (never queued without bound, never waited for by anyone).
import { readFileSync } from "node:fs";
import mqtt, { type IClientOptions, type MqttClient } from "mqtt";
import type { Metrics } from "../core/metrics.ts";
import type { Logger } from "../log.ts";
import type { MqttExportConfig } from "./config.ts";
import { exporterAvailabilityTopic } from "./discovery.ts";

export const BACKOFF_FIRST_MS = 1_000;
export const BACKOFF_MAX_MS = 30_000;
/** Messages handed to the client and not yet written to the broker's socket; beyond this, publishes are dropped. */
export const MAX_PENDING = 200;
export const CONNECT_TIMEOUT_MS = 10_000;
/** Drops are logged as one line per this interval, with their count. */
export const DROP_LOG_INTERVAL_MS = 10_000;
/** How long a stop that forgets waits for the broker to take the clearing messages. */
export const FORGET_TIMEOUT_MS = 5_000;

export interface Broker {
  /** Publish now, or drop (counted) when the broker is away or MAX_PENDING messages are still unsent. */
  publish(topic: string, payload: string | Buffer, retain?: boolean): void;
  /** Called on every (re)connect, after the exporter's own "online". */
  onConnect(listener: () => void): void;
  onMessage(listener: (topic: string, payload: Buffer) => void): void;
  subscribe(filter: string): void;
  readonly connected: boolean;
  /**
   * Ends the connection. With `forget`, first clears `forget` and the exporter's own availability (empty retained
   * messages, acknowledged, within FORGET_TIMEOUT_MS) instead of saying "offline": nothing is exported here any more.
   */
  stop(forget?: readonly string[]): Promise<void>;
}

/** "mqtts://broker.lan:8883" for logs and the status page: never credentials (the config refuses them in the url anyway). */
export const shown = (url: string) => url.replace(/\/\/[^@/]*@/, "//");

function clientOptions(config: MqttExportConfig, firstBackoffMs: number): IClientOptions {
  return {
    username: config.username,
    password: config.password,
    clientId: config.clientId,
    ca: config.ca ? readFileSync(config.ca) : undefined,
    rejectUnauthorized: !config.insecure,
    protocolVersion: 4,
    reconnectPeriod: firstBackoffMs,
    connectTimeout: CONNECT_TIMEOUT_MS,
    // The bounded publisher drops instead; the client's own offline queue would grow without bound.
    queueQoSZero: false,
    will: { topic: exporterAvailabilityTopic(config.prefix), payload: Buffer.from("offline"), retain: true, qos: 1 },
  };
}

export function connectBroker(config: MqttExportConfig, metrics: Metrics, log: Logger, backoffMaxMs = BACKOFF_MAX_MS): Broker {
  const firstBackoffMs = Math.min(BACKOFF_FIRST_MS, backoffMaxMs);
  const client: MqttClient = mqtt.connect(config.url, clientOptions(config, firstBackoffMs));
  const published = metrics.counter("pandaproxy_export_mqtt_published_total", "Messages published to the external broker");
  const dropped = metrics.counter("pandaproxy_export_mqtt_dropped_total", "Messages not published: the external broker was away or slow");
  const connectListeners: (() => void)[] = [];
  const filters: string[] = [];
  let pending = 0;
  let droppedSinceLog = 0;
  let wasConnected = false;
  const dropLog = setInterval(() => {
    if (droppedSinceLog) log.warn(`external broker ${shown(config.url)} away or slow: ${droppedSinceLog} messages dropped`);
    droppedSinceLog = 0;
  }, DROP_LOG_INTERVAL_MS);
  dropLog.unref?.();
  const unregister = metrics.gauge("pandaproxy_export_mqtt_connected", "1 while connected to the external broker", {}, () => (client.connected ? 1 : 0));
  const unregisterPending = metrics.gauge("pandaproxy_export_mqtt_pending", `Messages waiting for the external broker's socket (at most ${MAX_PENDING})`, {}, () => pending);

  client.on("connect", () => {
    client.options.reconnectPeriod = firstBackoffMs;
    wasConnected = true;
    pending = 0;
    log.info(`connected to the external broker ${shown(config.url)}`);
    client.publish(exporterAvailabilityTopic(config.prefix), "online", { qos: 1, retain: true });
    if (filters.length) client.subscribe(filters, { qos: 0 });
    for (const l of connectListeners) l();
  });
  let stopping = false;
  client.on("close", () => {
    const next = Math.min((client.options.reconnectPeriod ?? firstBackoffMs) * 2, backoffMaxMs);
    if (wasConnected && !stopping) log.warn(`lost the external broker ${shown(config.url)}; reconnecting with backoff (up to ${backoffMaxMs / 1000} s)`);
    wasConnected = false;
    client.options.reconnectPeriod = next;
  });
  client.on("error", (error) =>
    log.warn(`external broker ${shown(config.url)}: ${error.message}; check [export.mqtt] url, ca or insecure, username and password (retrying with backoff)`));

  return {
    publish(topic, payload, retain = false) {
      if (!client.connected || pending >= MAX_PENDING) {
        dropped.inc();
        droppedSinceLog++;
        return;
      }
      pending++;
      client.publish(topic, payload, { qos: 0, retain }, () => {
        pending = Math.max(0, pending - 1);
        published.inc();
      });
    },
    onConnect: (listener) => void connectListeners.push(listener),
    onMessage: (listener) => void client.on("message", listener),
    subscribe(filter) {
      filters.push(filter);
      if (client.connected) client.subscribe(filter, { qos: 0 });
    },
    get connected() {
      return client.connected;
    },
    async stop(forget) {
      stopping = true;
      clearInterval(dropLog);
      unregister();
      unregisterPending();
      const own = exporterAvailabilityTopic(config.prefix);
      if (forget && !client.connected) {
        log.warn(`not connected to the external broker ${shown(config.url)}: what was exported stays retained there (${forget.length + 1} topics under ${config.prefix}/ and ${config.discoveryPrefix}/)`);
      } else if (forget) {
        const cleared = Promise.all([...forget, own].map((topic) => client.publishAsync(topic, "", { qos: 1, retain: true })));
        const done = await Promise.race([cleared.then(() => true, () => false), Bun.sleep(FORGET_TIMEOUT_MS).then(() => false)]);
        if (done) log.info(`cleared ${forget.length + 1} retained topics on the external broker ${shown(config.url)}`);
        else log.warn(`the external broker ${shown(config.url)} did not take every clearing message in ${FORGET_TIMEOUT_MS / 1000} s: some exported topics may stay retained`);
      } else if (client.connected) {
        // A deliberate stop says offline itself; the will is for a death.
        await client.publishAsync(own, "offline", { qos: 1, retain: true }).catch(() => {});
      }
      // A clean DISCONNECT after forgetting, so mosquitto drops the last will rather than retaining "offline" again.
      if (forget && client.connected) await Promise.race([client.endAsync(false), Bun.sleep(FORGET_TIMEOUT_MS)]);
      await client.endAsync(true);
    },
  };
}

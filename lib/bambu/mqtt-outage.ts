// How long the printer has been away, for the MQTT service: a client is sent away once the outage outlasts its
// keepalive, so its own reconnect logic runs (new clients are refused meanwhile: mqtt-session.ts), and the outage
// is logged once. docs/outages.md has the policy.
import type { Logger } from "../log.ts";

/** One logged-in client, as the outage watch sees it. */
export interface OutageClient {
  /** How long the printer may be away before this client is sent away. */
  outageMs: number;
  sendAway(): void;
  timer?: ReturnType<typeof setTimeout>;
}

export interface PrinterAbsence {
  /** How long the printer session has been down (0 while it is up). */
  awayMs(): number;
  /** The printer session went up or down: every client's deadline starts or stops. */
  printer(up: boolean, clients: Iterable<OutageClient>): void;
  watch(client: OutageClient): void;
  forget(client: OutageClient): void;
  /** A client was refused or sent away: the first one of an outage is told in the log. */
  tell(): void;
}

/** The service starts without the printer: until its session is up, the printer counts as away. */
export function createPrinterAbsence(log: Logger): PrinterAbsence {
  let awaySince: number | undefined = Date.now();
  let told = false;
  const awayMs = () => (awaySince === undefined ? 0 : Date.now() - awaySince);
  const tell = () => {
    if (told) return;
    told = true;
    log.warn(`the printer has been unreachable for ${Math.round(awayMs() / 1000)} s, longer than its clients' keepalive: ` +
      "disconnecting MQTT clients and refusing new ones (CONNACK 3, server unavailable) until it is back, so they reconnect by themselves");
  };
  const watch = (client: OutageClient) => {
    clearTimeout(client.timer);
    if (awaySince === undefined) return;
    client.timer = setTimeout(() => {
      tell();
      client.sendAway();
    }, Math.max(0, client.outageMs - awayMs()));
  };
  return {
    awayMs,
    tell,
    watch,
    forget: (client) => clearTimeout(client.timer),
    printer(up, clients) {
      if (up && told) log.info(`the printer is back after ${Math.round(awayMs() / 1000)} s: accepting MQTT clients again`);
      awaySince = up ? undefined : Date.now();
      told = false;
      for (const client of clients) watch(client);
    },
  };
}

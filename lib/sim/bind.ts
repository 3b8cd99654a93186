// A simulated printer's bind/detect ports: TCP 3000 plain and 3002 TLS (plain-RSA suites, TLS 1.2, as the X1C
// offers), one detect exchange per connection, answered with the printer's own identity.
import { listen, type Listening } from "../core/server.ts";
import { serviceLogger } from "../log.ts";
import { BIND_FIRST_SEQUENCE_ID, serveDetectExchange } from "../bambu/bind.ts";
import type { SimService, SimStarter } from "./types.ts";

/** X1C 3002 offers only plain-RSA suites (maziggy/bambuddy#620). */
export const SIM_BIND_TLS_CIPHERS = "AES256-GCM-SHA384:AES128-GCM-SHA256";

export interface SimBindService extends SimService {
  readonly answered: number;
}

export const startSimBind: SimStarter = async (identity) => {
  const log = serviceLogger(identity.name, "sim-bind");
  let sequenceId = BIND_FIRST_SEQUENCE_ID + 21;
  let answered = 0;
  const detectIdentity = () => ({ serial: identity.serial, modelCode: identity.model.code, name: identity.name, firmware: identity.firmware });
  const open: Listening[] = [];
  const ports = [
    { port: identity.ports.bind, tls: false },
    { port: identity.ports.bind_tls, tls: true },
  ].filter((p) => p.port > 0);
  try {
    for (const { port, tls } of ports) {
      open.push(
        await listen({
          log,
          what: `simulated bind/detect${tls ? " (TLS)" : ""}`,
          host: identity.host,
          port,
          tls: tls
            ? { key: identity.tls.key, cert: identity.tls.cert, ciphers: SIM_BIND_TLS_CIPHERS, minVersion: "TLSv1.2", maxVersion: "TLSv1.2" }
            : undefined,
          onClient: (socket, client) => {
            void serveDetectExchange(socket, client, { identity: detectIdentity, nextSequenceId: () => sequenceId++ }).then((outcome) => {
              if (outcome === "answered") answered++;
            });
          },
        }),
      );
    }
  } catch (error) {
    await Promise.all(open.map((l) => l.close()));
    throw error;
  }
  const service: SimBindService = {
    name: "bind",
    get answered() {
      return answered;
    },
    stop: async () => void (await Promise.all(open.map((l) => l.close()))),
  };
  return service;
};

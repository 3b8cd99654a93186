// Wires the services one Bambu printer entry asks for. Each service module exports a factory; the "camera"
// service picks chamber, RTSPS or the file tunnel for the printer's model (bambu/camera.ts).
import type { ServiceName } from "../config.ts";
import type { Service, ServiceContext } from "../core/service.ts";
import { createMqttService } from "./mqtt.ts";
import { createBindService } from "./bind.ts";
import { createSsdpService } from "./ssdp.ts";
import { createFtpService } from "./ftp.ts";
import { createCameraServices } from "./camera.ts";

type Factory = (ctx: ServiceContext) => Service[];

/** Service name in printers.toml -> the services it runs. */
const FACTORIES: Partial<Record<ServiceName, Factory>> = {
  camera: createCameraServices,
  mqtt: (ctx) => [createMqttService(ctx)],
  bind: (ctx) => [createBindService(ctx)],
  ssdp: (ctx) => [createSsdpService(ctx)],
  ftp: (ctx) => [createFtpService(ctx)],
};

export function bambuServices(ctx: ServiceContext): Service[] {
  const services: Service[] = [];
  for (const name of ctx.printer.services) {
    const factory = FACTORIES[name];
    if (!factory) {
      ctx.log.warn(`service "${name}" is not available in this version of pandaproxy; skipped`);
      continue;
    }
    services.push(...factory(ctx));
  }
  return services;
}

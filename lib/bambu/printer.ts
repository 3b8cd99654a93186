// Wires the services one Bambu printer entry asks for. Each service module exports a factory; the "camera"
// service picks chamber, RTSPS or the file tunnel for the printer's model (bambu/camera.ts).
import type { Service, ServiceContext } from "../core/service.ts";
import { buildServices, type ServiceFactories } from "../printer-services.ts";
import { createMqttService } from "./mqtt.ts";
import { createBindService } from "./bind.ts";
import { createSsdpService } from "./ssdp.ts";
import { createFtpService } from "./ftp.ts";
import { createCameraServices } from "./camera.ts";

/** Service name in printers.toml -> the services it runs. */
const FACTORIES: ServiceFactories = {
  camera: createCameraServices,
  mqtt: (ctx) => [createMqttService(ctx)],
  bind: (ctx) => [createBindService(ctx)],
  ssdp: (ctx) => [createSsdpService(ctx)],
  ftp: (ctx) => [createFtpService(ctx)],
};

export function bambuServices(ctx: ServiceContext): Service[] {
  return buildServices(ctx, FACTORIES);
}

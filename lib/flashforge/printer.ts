// Wires the services one FlashForge printer entry asks for (TCP 8899, HTTP 8898, discovery 48899, camera 8080).
import type { ServiceName } from "../config.ts";
import type { Service, ServiceContext } from "../core/service.ts";
import { createFlashforgeTcp } from "./tcp.ts";
import { createFlashforgeHttp } from "./http.ts";
import { createFlashforgeDiscovery } from "./discovery.ts";
import { createFlashforgeCamera } from "./camera.ts";

type Factory = (ctx: ServiceContext) => Service[];

const FACTORIES: Partial<Record<ServiceName, Factory>> = {
  tcp: (ctx) => [createFlashforgeTcp(ctx)],
  http: (ctx) => [createFlashforgeHttp(ctx)],
  discovery: (ctx) => [createFlashforgeDiscovery(ctx)],
  camera: (ctx) => [createFlashforgeCamera(ctx)],
};

export function flashforgeServices(ctx: ServiceContext): Service[] {
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

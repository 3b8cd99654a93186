// Wires the services one FlashForge printer entry asks for (TCP 8899, HTTP 8898, discovery 48899, camera 8080).
import type { Service, ServiceContext } from "../core/service.ts";
import { buildServices, type ServiceFactories } from "../printer-services.ts";
import { createFlashforgeTcp } from "./tcp.ts";
import { createFlashforgeHttp } from "./http.ts";
import { createFlashforgeDiscovery } from "./discovery.ts";
import { createFlashforgeCamera } from "./camera.ts";

const FACTORIES: ServiceFactories = {
  tcp: (ctx) => [createFlashforgeTcp(ctx)],
  http: (ctx) => [createFlashforgeHttp(ctx)],
  discovery: (ctx) => [createFlashforgeDiscovery(ctx)],
  camera: (ctx) => [createFlashforgeCamera(ctx)],
};

export function flashforgeServices(ctx: ServiceContext): Service[] {
  return buildServices(ctx, FACTORIES);
}

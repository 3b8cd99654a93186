// How a printer entry becomes services: what each service factory is given beyond core/'s protocol-free parts
// (its printer entry, the proxy settings, its TLS material), and the running printer the supervisor and the
// web page see. core/service.ts names no config or TLS type; this file adds them to its ServiceContext.
import type { PrinterConfig, ProxyConfig } from "./config.ts";
import type { PrinterHub, Service, ServiceContext } from "./core/service.ts";
import type { TlsMaterial } from "./tls.ts";

declare module "./core/service.ts" {
  interface ServiceContext {
    printer: PrinterConfig;
    proxy: ProxyConfig;
    tls: TlsMaterial;
  }
}

export type ServiceFactory = (ctx: ServiceContext) => Service;

/** printers.toml service name -> the services it runs (one name may run several, e.g. camera + tunnel). */
export type ServiceFactories = Partial<Record<string, (ctx: ServiceContext) => Service[]>>;

/** The services a printer entry asks for, built from its brand's factories. */
export function buildServices(ctx: ServiceContext, factories: ServiceFactories): Service[] {
  const services: Service[] = [];
  for (const name of ctx.printer.services) {
    const factory = factories[name];
    if (!factory) {
      ctx.log.warn(`service "${name}" is not available in this version of pandaproxy; skipped`);
      continue;
    }
    services.push(...factory(ctx));
  }
  return services;
}

export interface PrinterRuntime {
  readonly config: PrinterConfig;
  readonly hub: PrinterHub;
  readonly services: readonly Service[];
  start(): Promise<void>;
  stop(): Promise<void>;
}

// Builds one PrinterRuntime per [[printer]] entry, starts and stops them, and reloads on SIGHUP: only printers
// whose entry changed are restarted; a new config that does not validate is logged and the running one kept.
import { loadConfig, ConfigErrors, type Config, type PrinterConfig } from "./config.ts";
import { processLogger, registerSecret, serviceLogger, setupLogging } from "./log.ts";
import { createMetrics, type Metrics } from "./core/metrics.ts";
import { createPrinterHub, type PrinterRuntime, type Service, type ServiceContext } from "./core/service.ts";
import { printerTlsMaterial } from "./tls.ts";
import { bambuServices } from "./bambu/printer.ts";
import { flashforgeServices } from "./flashforge/printer.ts";
import { startWeb, type WebServer } from "./web/server.ts";

export const STOP_DEADLINE_MS = 5_000;

export function registerConfigSecrets(config: Config): void {
  for (const p of config.printers) {
    registerSecret(p.accessCode);
    registerSecret(p.viewerAccessCode);
  }
  registerSecret(config.web.password);
}

export function createPrinterRuntime(printer: PrinterConfig, config: Config, metrics: Metrics): PrinterRuntime {
  const log = serviceLogger(printer.name, "printer");
  const hub = createPrinterHub({ model: printer.model });
  const ctx: ServiceContext = {
    printer,
    proxy: config.proxy,
    tls: printerTlsMaterial(config.proxy.stateDir, printer),
    log,
    metrics,
    hub,
  };
  const services: Service[] = printer.type === "flashforge" ? flashforgeServices(ctx) : bambuServices(ctx);
  return {
    config: printer,
    hub,
    services,
    async start() {
      const results = await Promise.allSettled(services.map((s) => s.start()));
      results.forEach((result, i) => {
        if (result.status === "rejected") log.error(`${services[i]!.name}: ${(result.reason as Error).message}`);
      });
      const running = results.filter((r) => r.status === "fulfilled").length;
      log.info(`serving ${printer.host} on ${printer.bind}: ${running} of ${services.length} services running`);
    },
    async stop() {
      await Promise.allSettled(services.map((s) => s.stop()));
    },
  };
}

export interface Supervisor {
  readonly config: Config;
  readonly printers: readonly PrinterRuntime[];
  readonly metrics: Metrics;
  reload(): Promise<boolean>;
  stop(): Promise<void>;
}

const sameJson = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

export async function startSupervisor(initial: Config, options: { configFile?: string; watchSignals?: boolean; verbose?: boolean } = {}): Promise<Supervisor> {
  const log = processLogger("supervisor");
  const metrics = createMetrics();
  let config = initial;
  registerConfigSecrets(config);
  let printers: PrinterRuntime[] = [];
  let web: WebServer | undefined;
  const printerList = () => printers;

  for (const p of config.printers) printers.push(createPrinterRuntime(p, config, metrics));
  await Promise.all(printers.map((p) => p.start()));
  if (config.web.listen) web = await startWeb({ web: config.web, printers: printerList, metrics }).catch((error) => {
    log.error((error as Error).message);
    return undefined;
  });

  const reload = async (): Promise<boolean> => {
    if (!options.configFile) return false;
    let next: Config;
    try {
      next = loadConfig(options.configFile);
    } catch (error) {
      const problems = error instanceof ConfigErrors ? error.problems : [(error as Error).message];
      log.error(`reload refused, keeping the running configuration:\n  ${problems.join("\n  ")}`);
      return false;
    }
    registerConfigSecrets(next);
    setupLogging(options.verbose ? "debug" : next.proxy.logLevel); // --verbose outlives reloads
    const previous = new Map(printers.map((p) => [p.config.name, p]));
    const kept: PrinterRuntime[] = [];
    const toStart: PrinterRuntime[] = [];
    const proxyChanged = !sameJson(next.proxy, config.proxy);
    for (const p of next.printers) {
      const old = previous.get(p.name);
      if (old && !proxyChanged && sameJson(old.config, p)) {
        kept.push(old);
        previous.delete(p.name);
      } else {
        toStart.push(createPrinterRuntime(p, next, metrics));
      }
    }
    await Promise.all([...previous.values()].map((p) => p.stop()));
    for (const p of previous.keys()) log.info(`printer "${p}" stopped (removed or changed)`);
    printers = [...kept, ...toStart];
    config = next;
    await Promise.all(toStart.map((p) => p.start()));
    if (!sameJson(next.web, initial.web) || !web !== !next.web.listen) {
      await web?.stop();
      web = next.web.listen ? await startWeb({ web: next.web, printers: printerList, metrics }).catch((e) => (log.error((e as Error).message), undefined)) : undefined;
      initial = next;
    }
    log.info(`reloaded: ${toStart.length} printer(s) (re)started, ${kept.length} unchanged`);
    return true;
  };

  const onHup = () => void reload();
  if (options.watchSignals) process.on("SIGHUP", onHup);

  return {
    get config() {
      return config;
    },
    get printers() {
      return printers;
    },
    metrics,
    reload,
    async stop() {
      process.off("SIGHUP", onHup);
      const all = Promise.allSettled([web?.stop(), ...printers.map((p) => p.stop())]);
      let deadline: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([all, new Promise((r) => (deadline = setTimeout(r, STOP_DEADLINE_MS)))]);
      // A pending deadline timer would keep the process alive for the full 5 s after a prompt stop.
      clearTimeout(deadline);
    },
  };
}

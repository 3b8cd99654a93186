// Builds one PrinterRuntime per [[printer]] entry, starts and stops them, and reloads on SIGHUP: only printers
// whose entry changed are restarted; a new config that does not validate is logged and the running one kept.
import { loadConfig, ConfigErrors, type Config, type PrinterConfig } from "./config.ts";
import { readFileSync } from "node:fs";
import { changeLogLevel, processLogger, registerSecret, serviceLogger, type Logger } from "./log.ts";
import { createMetrics, type Metrics } from "./core/metrics.ts";
import { createPrinterHub, type Service, type ServiceContext } from "./core/service.ts";
import type { PrinterRuntime } from "./printer-services.ts";
import { printerTlsMaterial } from "./tls.ts";
import { bambuServices } from "./bambu/printer.ts";
import { flashforgeServices } from "./flashforge/printer.ts";
import { startWeb, type NamedStatus, type WebServer } from "./web/server.ts";
import { startMqttExport, type MqttExport } from "./export/mqtt.ts";
import { startRtspExport, type RtspExport } from "./export/rtsp.ts";

/** How long stop() waits for every service before the process exits anyway. */
export const STOP_DEADLINE_MS = 5_000;

export function registerConfigSecrets(config: Config): void {
  for (const p of config.printers) {
    registerSecret(p.accessCode);
    registerSecret(p.viewerAccessCode);
  }
  registerSecret(config.web.password);
  registerSecret(config.export?.mqtt?.password);
  registerSecret(config.export?.rtsp?.password);
}

/** A printer as the supervisor holds it: whether it could be set up at all, and what is still stopping. */
export interface SupervisedPrinter extends PrinterRuntime {
  /** Set up failed (unreadable TLS files, …): restarted on every reload, even when its entry is unchanged. */
  readonly failed: boolean;
  /** "mqtt", "ftp": services whose stop() has not finished. */
  stillStopping(): string[];
}

export type ServicesOf = (ctx: ServiceContext) => Service[];

const brandServices: ServicesOf = (ctx) => (ctx.printer.type === "flashforge" ? flashforgeServices(ctx) : bambuServices(ctx));

/** "no such file or directory (ENOENT)" from Bun's "ENOENT: no such file or directory, open '/x'". */
function osReason(error: unknown): string {
  const e = error as NodeJS.ErrnoException;
  const words = e.message.replace(/^E[A-Z]+: /, "").replace(/, \w+( '.*')?$/, "");
  return e.code ? `${words} (${e.code})` : words;
}

/** Which configured TLS file cannot be read, and why, in one phrase; undefined when both read. */
function unreadableTlsFile(printer: PrinterConfig): string | undefined {
  for (const [key, path] of [["tls_key", printer.tlsKey], ["tls_cert", printer.tlsCert]] as const) {
    if (!path) continue;
    try {
      readFileSync(path);
    } catch (error) {
      return `cannot read ${key} "${path}": ${osReason(error)}`;
    }
  }
  return undefined;
}

/** A printer that could not be set up: it serves nothing and says why when started. */
function failedPrinter(printer: PrinterConfig, hub: PrinterRuntime["hub"], log: Logger, problem: string): SupervisedPrinter {
  return {
    config: printer,
    hub,
    services: [],
    failed: true,
    async start() {
      log.error(`not served: ${problem}; fix it and reload (SIGHUP); the other printers are not affected`);
    },
    async stop() {},
    stillStopping: () => [],
  };
}

export function createPrinterRuntime(printer: PrinterConfig, config: Config, metrics: Metrics, servicesOf: ServicesOf = brandServices): SupervisedPrinter {
  const log = serviceLogger(printer.name, "printer");
  const hub = createPrinterHub({ model: printer.model });
  const unreadable = unreadableTlsFile(printer);
  if (unreadable) return failedPrinter(printer, hub, log, unreadable);
  let services: Service[];
  try {
    const ctx: ServiceContext = { printer, proxy: config.proxy, tls: printerTlsMaterial(config.proxy.stateDir, printer), log, metrics, hub };
    services = servicesOf(ctx);
  } catch (error) {
    return failedPrinter(printer, hub, log, `cannot be set up: ${(error as Error).message}`);
  }
  const stopping = new Set<Service>();
  return {
    config: printer,
    hub,
    services,
    failed: false,
    async start() {
      const results = await Promise.allSettled(services.map((s) => s.start()));
      results.forEach((result, i) => {
        if (result.status === "rejected") log.error(`${services[i]!.name}: ${(result.reason as Error).message}`);
      });
      const running = results.filter((r) => r.status === "fulfilled").length;
      log.info(`serving ${printer.host} on ${printer.bind}: ${running} of ${services.length} services running`);
    },
    async stop() {
      await Promise.allSettled(
        services.map(async (s) => {
          stopping.add(s);
          try {
            await s.stop();
          } finally {
            stopping.delete(s);
          }
        }),
      );
    },
    stillStopping: () => [...stopping].map((s) => s.name),
  };
}

export interface Supervisor {
  readonly config: Config;
  readonly printers: readonly PrinterRuntime[];
  readonly metrics: Metrics;
  /** One reload at a time: one asked for while another runs is done once after it, reading the file then. */
  reload(): Promise<boolean>;
  /** Resolves when everything stopped, or at the stop deadline with what had not ("p1s/ftp", "web"). */
  stop(): Promise<{ late: string[] }>;
}

export interface SupervisorOptions {
  configFile?: string;
  watchSignals?: boolean;
  verbose?: boolean;
  /** Tests make it short. */
  stopDeadlineMs?: number;
  /** Tests inject their own services; default: the printer brand's. */
  servicesOf?: ServicesOf;
}

const sameJson = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

export async function startSupervisor(initial: Config, options: SupervisorOptions = {}): Promise<Supervisor> {
  const log = processLogger("supervisor");
  const metrics = createMetrics();
  const stopDeadlineMs = options.stopDeadlineMs ?? STOP_DEADLINE_MS;
  const runtimeOf = (p: PrinterConfig, c: Config) => createPrinterRuntime(p, c, metrics, options.servicesOf);
  let config = initial;
  let exportedWith = initial.export;
  registerConfigSecrets(config);
  let printers: SupervisedPrinter[] = [];
  let web: WebServer | undefined;
  let webStopping = false;
  let stopped = false;
  const printerList = () => printers;
  let exporter: MqttExport | undefined;
  let pusher: RtspExport | undefined;
  // The exporters hold links to the running printers: after a reload they follow the printers they export.
  const restartExport = async (c: Config) => {
    const previous = exporter?.retained();
    // Removed, or pointed at another broker: what the old exporter left retained would stay there for good.
    const forget = !c.export.mqtt || c.export.mqtt.url !== exportedWith.mqtt?.url;
    await Promise.allSettled([exporter?.stop({ forget }), pusher?.stop()]);
    pusher = c.export.rtsp ? startRtspExport({ config: c.export.rtsp, printers, proxy: c.proxy }) : undefined;
    const mqtt = c.export.mqtt;
    try {
      exporter = mqtt ? startMqttExport({ config: mqtt, printers, proxy: c.proxy, web: c.web, metrics, previous }) : undefined;
    } catch (error) {
      exporter = undefined;
      log.error(`[export.mqtt] not started: ${(error as Error).message}; the printers are served without it`);
    }
  };

  const exportStatus = (printer: string): NamedStatus[] => {
    const rows: NamedStatus[] = [];
    const mqtt = exporter?.status(printer);
    if (mqtt) rows.push({ name: "export mqtt", ...mqtt });
    const rtsp = pusher?.status(printer);
    if (rtsp) rows.push({ name: "export rtsp", ...rtsp });
    return rows;
  };

  for (const p of config.printers) printers.push(runtimeOf(p, config));
  await Promise.all(printers.map((p) => p.start()));
  if (config.web.listen) web = await startWeb({ web: config.web, printers: printerList, metrics, exportStatus }).catch((error) => {
    log.error((error as Error).message);
    return undefined;
  });

  await restartExport(config);

  const stopWeb = async () => {
    webStopping = true;
    try {
      await web?.stop();
    } finally {
      webStopping = false;
    }
  };

  const reloadNow = async (): Promise<boolean> => {
    if (!options.configFile || stopped) return false;
    let next: Config;
    try {
      next = loadConfig(options.configFile);
    } catch (error) {
      const problems = error instanceof ConfigErrors ? error.problems : [(error as Error).message];
      log.error(`reload refused, keeping the running configuration:\n  ${problems.join("\n  ")}`);
      return false;
    }
    registerConfigSecrets(next);
    changeLogLevel(options.verbose ? "debug" : next.proxy.logLevel); // --verbose outlives reloads
    const previous = new Map(printers.map((p) => [p.config.name, p]));
    const kept: SupervisedPrinter[] = [];
    const toStart: SupervisedPrinter[] = [];
    const proxyChanged = !sameJson(next.proxy, config.proxy);
    for (const p of next.printers) {
      const old = previous.get(p.name);
      if (old && !old.failed && !proxyChanged && sameJson(old.config, p)) {
        kept.push(old);
        previous.delete(p.name);
      } else {
        toStart.push(runtimeOf(p, next));
      }
    }
    await Promise.all([...previous.values()].map((p) => p.stop()));
    for (const p of previous.keys()) log.info(`printer "${p}" stopped (removed or changed)`);
    printers = [...kept, ...toStart];
    config = next;
    await Promise.all(toStart.map((p) => p.start()));
    if (toStart.length || previous.size || !sameJson(next.export, exportedWith)) await restartExport(next);
    exportedWith = next.export;
    if (!sameJson(next.web, initial.web) || !web !== !next.web.listen) {
      await stopWeb();
      web = next.web.listen ? await startWeb({ web: next.web, printers: printerList, metrics, exportStatus }).catch((e) => (log.error((e as Error).message), undefined)) : undefined;
      initial = next;
    }
    log.info(`reloaded: ${toStart.length} printer(s) (re)started, ${kept.length} unchanged`);
    return true;
  };

  // Two reloads at once would both stop and start the same printers: the second one waits for the first,
  // and any number asked for meanwhile collapse into one, which reads the file when it runs (the newest).
  let running: Promise<boolean> | undefined;
  let queued: Promise<boolean> | undefined;
  const reload = (): Promise<boolean> => {
    if (running) {
      queued ??= running.then(() => {
        queued = undefined;
        return reload();
      });
      return queued;
    }
    running = reloadNow()
      .catch((error) => {
        log.error(`reload failed: ${(error as Error).message}`);
        return false;
      })
      .finally(() => (running = undefined));
    return running;
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
      stopped = true;
      process.off("SIGHUP", onHup);
      let deadline: ReturnType<typeof setTimeout> | undefined;
      const late = new Promise<"late">((r) => (deadline = setTimeout(() => r("late"), stopDeadlineMs)));
      // A reload in progress finishes first, or its printers would start after we stopped them.
      const all = Promise.resolve(running).then(() => Promise.allSettled([stopWeb(), exporter?.stop(), pusher?.stop(), ...printers.map((p) => p.stop())]));
      const result = await Promise.race([all, late]);
      // A pending deadline timer would keep the process alive for the full 5 s after a prompt stop.
      clearTimeout(deadline);
      if (result !== "late") return { late: [] };
      const names = printers.flatMap((p) => p.stillStopping().map((s) => `${p.config.name}/${s}`));
      if (webStopping) names.push("web");
      if (running) names.push("a reload");
      return { late: names };
    },
  };
}

// The contract every simulated printer service follows. lib/sim/bambu.ts starts the ones a simulated printer
// has; each lib/sim/<service>.ts exports a starter registered in SIM_SERVICES there.
import type { Ports } from "../config.ts";
import type { BambuModel } from "../bambu/models.ts";

export interface SimIdentity {
  name: string;
  serial: string;
  accessCode: string;
  model: BambuModel;
  firmware: string;
  /** The address the simulated printer listens on, e.g. 127.0.0.11. */
  host: string;
  /** The printer's ports (the real ones unless overridden). */
  ports: Ports;
  /** TLS key and certificate chain (leaf CN = serial, issued by a simulated "BBL CA"). */
  tls: { key: string; cert: string; ca: string };
}

export interface SimOptions {
  /** Most MQTT clients at once (firmware: about 4). */
  mqttMaxClients?: number;
  /** How often the simulated printer sends a status delta (default 1000 ms; 0: only on request). */
  mqttReportIntervalMs?: number;
  /** Requests a session gets answers to; past it the replies queue until the client reconnects, then arrive at
   * once (P1S firmware, maziggy/bambuddy#1164). Undefined: no budget. */
  mqttCommandBudget?: number;
  /** A session older than this has its requests ignored (A1 mini 01.07.02 degraded long sessions). */
  mqttSessionDecayMs?: number;
  /** AMS 1 slot 1 runs out of filament this long into each print: the printer pauses with HMS_0700_2000_0002_0001
   * in `print.hms` and print_error 0700_8011 (lib/sim/filament-runout.ts). Undefined: it never runs out. */
  hmsAfterMs?: number;
  /** How long the printer then stays paused before the error clears and the print resumes (default 30 s). */
  hmsForMs?: number;
  /** The RTSPS camera switched off ("LAN Mode Liveview" off): reports say `rtsp_url: "disable"`, port 322 is closed. */
  liveviewOff?: boolean;
  /** Most FTP sessions at once. */
  ftpMaxSessions?: number;
  /** Directory served over FTPS (default: a fresh temporary directory). */
  ftpRoot?: string;
  /** The address put in PASV replies (default the printer's own; some firmware says 0.0.0.0). */
  ftpPasvAddress?: string;
  /** Answer EPSV with 500, so clients fall back to PASV. */
  ftpRefuseEpsv?: boolean;
  /** Answer 426 after an upload that arrived whole, as some X1C firmware does when the data connection ends
   * without close_notify. */
  ftpUpload426?: boolean;
  /** Chamber camera frames per second and size. */
  cameraFps?: number;
  cameraWidth?: number;
  cameraHeight?: number;
  /** Chamber camera viewers served at once (firmware: about 2; the next one waits). */
  cameraMaxViewers?: number;
  /** Where SSDP announcements are sent (default 255.255.255.255). */
  ssdpTargets?: string[];
  ssdpIntervalMs?: number;
}

export interface SimService {
  readonly name: string;
  stop(): Promise<void>;
}

export type SimStarter = (identity: SimIdentity, options: SimOptions) => Promise<SimService>;

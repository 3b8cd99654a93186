// A slicer's whole LAN flow through pandaproxy, as Bambu Studio's network plugin runs it, with the printer's
// name checked on every TLS connection (the serial, against the proxy's CA): SSDP, bind detect, MQTT and
// push_status, an FTPS upload to the card's root, project_file, the job's progress, stop. Loopback 127.0.20.0/24.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Client as FtpClient } from "basic-ftp";
import { createSocket, type Socket as UdpSocket } from "node:dgram";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { connect as tcpConnect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { checkServerIdentity, connect as tlsConnect, type PeerCertificate } from "node:tls";
import mqtt, { type MqttClient } from "mqtt";
import { parseConfig } from "../lib/config.ts";
import { setupLogging } from "../lib/log.ts";
import { startSupervisor, type Supervisor } from "../lib/supervisor.ts";
import { startSimulatedBambu, type SimPrinter } from "../lib/sim/bambu.ts";
import type { SimFtpService } from "../lib/sim/ftp.ts";
import { decodeBindFrame, detectRequest, encodeBindFrame } from "../lib/bambu/bind-codec.ts";
import { announcementOf, encodeSearch, parseSsdp, type BambuAnnouncement } from "../lib/bambu/ssdp-message.ts";

const ACCESS_CODE = "12345678";
const SLICER = "127.0.20.55";
/** High ports, the same numbers on the printer and on the proxy (as `pandaproxy demo` does). */
const PORTS = { mqtt: 28883, ftp: 20990, bind: 23000, bind_tls: 23002 };
/** A serial that is not the printer's: every verifier must refuse the proxy's leaf for it. */
const OTHER_SERIAL = "01P00A999999999";
const FLOW_TIMEOUT_MS = 25_000;
/** What the slicer uploads: a .3mf's bytes (the simulator does not open it). */
const PROJECT = "PK\x03\x04 a small project";

const inline = (ports: Record<string, number>) => `{ ${Object.entries(ports).map(([k, v]) => `${k} = ${v}`).join(", ")} }`;

async function until(what: string, done: () => boolean, ms = 10_000): Promise<void> {
  for (const started = Date.now(); !done(); await Bun.sleep(20)) {
    if (Date.now() - started > ms) throw new Error(`timed out waiting for ${what}`);
  }
}

/** A detect request on the bind port, plain or TLS (name checked against `servername`); the decoded login. */
function detect(host: string, tls: { ca: string; servername: string } | undefined): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const request = encodeBindFrame(detectRequest());
    const socket = tls
      ? tlsConnect({ host, port: PORTS.bind_tls, ca: tls.ca, servername: tls.servername, rejectUnauthorized: true }, () => socket.write(request))
      : tcpConnect({ host, port: PORTS.bind }, () => socket.write(request));
    socket.setTimeout(5_000, () => socket.destroy(new Error("no detect answer within 5 s")));
    socket.on("data", (c: Buffer) => chunks.push(c));
    socket.on("error", reject);
    socket.on("close", () => {
      const decoded = decodeBindFrame(Buffer.concat(chunks));
      if (decoded.kind !== "frame") return reject(new Error("no detect frame in the answer"));
      resolve((decoded.message as { login: Record<string, unknown> }).login);
    });
  });
}

interface Reports {
  client: MqttClient;
  all: any[];
  next(match: (report: any) => boolean, ms?: number): Promise<any>;
}

async function slicerMqtt(host: string, ca: string, servername: string): Promise<Reports> {
  const client = await mqtt.connectAsync(`mqtts://${host}:${PORTS.mqtt}`, {
    username: "bblp", password: ACCESS_CODE, ca, servername, rejectUnauthorized: true, protocolVersion: 4,
    reconnectPeriod: 0, connectTimeout: 5_000,
  });
  const all: any[] = [];
  client.on("message", (_topic, payload) => {
    try {
      all.push(JSON.parse(payload.toString()));
    } catch {
      // not JSON: not a report this test looks for
    }
  });
  return {
    client,
    all,
    async next(match, ms = 10_000) {
      let found: any;
      await until("a matching report", () => (found = all.find(match)) !== undefined, ms);
      return found;
    },
  };
}

/** Bambu Studio's print request for a .3mf on the card (OpenBambuAPI mqtt.md, print.project_file). */
const projectFile = (sequenceId: string, url: string, subtaskName: string) => ({
  print: {
    sequence_id: sequenceId, command: "project_file", param: "Metadata/plate_1.gcode", project_id: "0", profile_id: "0",
    task_id: "0", subtask_id: "0", subtask_name: subtaskName, url, md5: "", timelapse: true, bed_type: "auto",
    bed_levelling: true, flow_cali: true, vibration_cali: true, layer_inspect: true, ams_mapping: "", use_ams: false,
  },
});

function slicerFlow(model: string, printerHost: string, proxyHost: string, ssdpPort: number) {
  describe(`a slicer prints on a ${model} through pandaproxy, verifying the printer's name`, () => {
    let sim: SimPrinter;
    let supervisor: Supervisor;
    let serial: string;
    let ca: string;
    const stateDir = mkdtempSync(join(tmpdir(), "pp-slicer-flow-"));
    const heard: BambuAnnouncement[] = [];
    let slicer: UdpSocket;

    beforeAll(async () => {
      setupLogging("error", { quiet: true });
      slicer = createSocket({ type: "udp4", reuseAddr: true });
      slicer.on("message", (datagram: Buffer) => {
        const message = parseSsdp(datagram);
        const announcement = message && announcementOf(message);
        if (announcement) heard.push(announcement);
      });
      await new Promise<void>((r) => slicer.bind(ssdpPort, SLICER, () => r()));
      sim = await startSimulatedBambu({
        host: printerHost, model, name: model.toLowerCase(), accessCode: ACCESS_CODE, services: ["mqtt", "ftp", "bind", "ssdp"],
        ports: { ...PORTS, ssdp: ssdpPort }, ssdpTargets: [proxyHost], ssdpIntervalMs: 200, mqttReportIntervalMs: 100,
      });
      serial = sim.identity.serial;
      const ports = inline({ ...PORTS, ssdp: ssdpPort });
      supervisor = await startSupervisor(parseConfig(`
[proxy]
state_dir = "${stateDir}"
[web]
listen = ""
[[printer]]
name = "${model.toLowerCase()}"
host = "${printerHost}"
serial = "${serial}"
access_code = "${ACCESS_CODE}"
bind = "${proxyHost}"
services = ["mqtt", "ftp", "bind", "ssdp"]
ssdp_targets = ["${SLICER}"]
ports = ${ports}
printer_ports = ${ports}
`));
      ca = readFileSync(join(stateDir, "ca.crt"), "utf8");
    });
    afterAll(async () => {
      await supervisor?.stop();
      await sim?.stop();
      slicer?.close();
      rmSync(stateDir, { recursive: true, force: true });
    });

    test("SSDP: the proxy's NOTIFY and its M-SEARCH answer name the proxy and the printer's serial", async () => {
      await until("the proxy's NOTIFY", () => heard.some((a) => a.serial === serial));
      expect(heard.find((a) => a.serial === serial)).toMatchObject({ location: proxyHost, connect: "lan", bind: "free" });
      const searcher = createSocket({ type: "udp4" });
      try {
        const answers: BambuAnnouncement[] = [];
        searcher.on("message", (datagram: Buffer) => {
          const message = parseSsdp(datagram);
          const announcement = message?.kind === "response" ? announcementOf(message) : undefined;
          if (announcement) answers.push(announcement);
        });
        await new Promise<void>((r) => searcher.bind(0, SLICER, () => r()));
        searcher.send(encodeSearch(), ssdpPort, proxyHost);
        await until("the M-SEARCH answer", () => answers.length > 0, 5_000);
        expect(answers[0]).toMatchObject({ location: proxyHost, serial });
      } finally {
        searcher.close();
      }
    });

    test("bind detect: plain on the bind port, and over TLS with the name checked against the serial", async () => {
      expect(await detect(proxyHost, undefined)).toMatchObject({ command: "detect", id: serial });
      expect(await detect(proxyHost, { ca, servername: serial })).toMatchObject({ command: "detect", id: serial });
      await expect(detect(proxyHost, { ca, servername: OTHER_SERIAL })).rejects.toThrow();
    });

    test("MQTT, FTPS upload, project_file, progress and stop, every connection verifying the serial", async () => {
      await expect(slicerMqtt(proxyHost, ca, OTHER_SERIAL)).rejects.toThrow();
      const reports = await slicerMqtt(proxyHost, ca, serial);
      const ftp = new FtpClient(10_000);
      try {
        await reports.client.subscribeAsync(`device/${serial}/report`);
        const request = `device/${serial}/request`;
        await reports.client.publishAsync(request, JSON.stringify({ pushing: { sequence_id: "1", command: "pushall" } }));
        const full = await reports.next((r) => r.print?.command === "push_status" && r.print.msg === 0);
        expect(full.print).toHaveProperty("gcode_state");

        // FTPS: the control and every data connection check the name (basic-ftp reuses secureOptions for data).
        const checked: string[] = [];
        const secureOptions = {
          ca, servername: serial, rejectUnauthorized: true,
          checkServerIdentity: (name: string, cert: PeerCertificate) => {
            checked.push(name);
            return checkServerIdentity(name, cert);
          },
        };
        await ftp.access({ host: proxyHost, port: PORTS.ftp, user: "bblp", password: ACCESS_CODE, secure: "implicit", secureOptions });
        await ftp.uploadFrom(Readable.from([Buffer.from(PROJECT, "latin1")]), "/slicer_cube.3mf");
        const names = (await ftp.list("/")).map((f) => f.name);
        expect(names).toEqual(expect.arrayContaining(["slicer_cube.3mf", "cache", "timelapse", "model"]));
        expect(checked.length).toBeGreaterThanOrEqual(3); // control, upload, listing
        expect(checked.every((name) => name === serial)).toBe(true);
        expect(readFileSync(join(sim.service<SimFtpService>("ftp")!.root, "slicer_cube.3mf"), "latin1")).toBe(PROJECT);

        await reports.client.publishAsync(request, JSON.stringify(projectFile("2", "ftp:///slicer_cube.3mf", "slicer_cube")));
        const reply = await reports.next((r) => r.print?.command === "project_file" && r.print.sequence_id === "2");
        expect(reply.print).toMatchObject({ result: "success", subtask_name: "slicer_cube", url: "ftp:///slicer_cube.3mf" });
        const job = (r: any) => r.print?.command === "push_status" && r.print.msg === 1;
        await reports.next((r) => job(r) && r.print.subtask_name === "slicer_cube" && r.print.gcode_state === "PREPARE");
        await reports.next((r) => job(r) && r.print.gcode_state === "RUNNING", 10_000);
        const from = reports.all.length;
        const percents = () => reports.all.slice(from).filter((r) => job(r) && typeof r.print.mc_percent === "number").map((r) => r.print.mc_percent as number);
        await until("mc_percent rising", () => new Set(percents().filter((p) => p > 0)).size >= 2, 10_000);
        const seen = percents();
        expect(seen).toEqual([...seen].sort((a, b) => a - b));

        await reports.client.publishAsync(request, JSON.stringify({ pushing: { sequence_id: "3", command: "pushall" } }));
        const during = await reports.next((r) => r.print?.msg === 0 && r.print.sequence_id === "3");
        expect(during.print).toMatchObject({ subtask_name: "slicer_cube", gcode_file: "slicer_cube.3mf", gcode_state: "RUNNING" });

        await reports.client.publishAsync(request, JSON.stringify({ print: { sequence_id: "4", command: "stop", param: "" } }));
        expect((await reports.next((r) => r.print?.command === "stop" && r.print.sequence_id === "4")).print.result).toBe("success");
        await reports.next((r) => job(r) && r.print.gcode_state === "FAILED");
      } finally {
        ftp.close();
        await reports.client.endAsync(true);
      }
    }, FLOW_TIMEOUT_MS);

    test("project_file for a file that is not on the card gets the printer's failure reply through the proxy", async () => {
      const reports = await slicerMqtt(proxyHost, ca, serial);
      try {
        await reports.client.subscribeAsync(`device/${serial}/report`);
        await reports.client.publishAsync(`device/${serial}/request`, JSON.stringify(projectFile("9", "ftp:///not_uploaded.3mf", "not_uploaded")));
        const reply = await reports.next((r) => r.print?.command === "project_file" && r.print.sequence_id === "9");
        expect(reply.print.result).toBe("failed");
        expect(reply.print.reason).toContain("not_uploaded.3mf");
      } finally {
        await reports.client.endAsync(true);
      }
    });
  });
}

slicerFlow("P1S", "127.0.20.11", "127.0.20.2", 22021);
slicerFlow("X1C", "127.0.20.12", "127.0.20.3", 22022);

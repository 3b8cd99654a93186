// The simulated printer's HTTP API on 8898 (firmware >= 3.1.3): POST JSON with serialNumber and checkCode;
// /uploadGcode carries them as headers with a multipart body (field "gcodeFile") and Expect: 100-continue.
// Shapes from Parallel-7/flashforge-api-docs http-api.md; a wrong code gets FlashNetwork's
// FNET_VERIFY_LAN_DEV_FAILED (1001) as in Orca-FlashForge's FlashNetwork.h.
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { Socket } from "node:net";
import { normalizePath, type FlashforgeSimState } from "./state.ts";
import { SIM_PRODUCT_ID } from "./discovery.ts";

export const SIM_MAX_JSON_BYTES = 1024 * 1024;
export const SIM_MAX_UPLOAD_BYTES = 512 * 1024 * 1024;
export const VERIFY_FAILED_CODE = 1001;

export interface SimHttp {
  readonly name: "http";
  /** Every request that reached the simulated printer: path and whether its credentials were right. */
  readonly requests: readonly { path: string; authorized: boolean }[];
  stop(): Promise<void>;
}

export async function startSimHttp(state: FlashforgeSimState): Promise<SimHttp> {
  const { identity } = state;
  const requests: { path: string; authorized: boolean }[] = [];
  const sockets = new Set<Socket>();

  const json = (res: ServerResponse, body: unknown) => {
    const text = JSON.stringify(body);
    res.writeHead(200, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(text) });
    res.end(text);
  };
  const refuse = (res: ServerResponse) => json(res, { code: VERIFY_FAILED_CODE, message: "verify failed: wrong serialNumber or checkCode" });
  const credentialsOk = (serial: unknown, code: unknown) => serial === identity.serial && code === identity.checkCode;
  const pathOf = (req: IncomingMessage) => (req.url ?? "/").split("?")[0]!;

  const readBody = (req: IncomingMessage, limit: number) =>
    new Promise<Buffer>((resolve, reject) => {
      const chunks: Buffer[] = [];
      let size = 0;
      req.on("data", (c: Buffer) => {
        size += c.length;
        if (size > limit) {
          reject(new Error("body too large"));
          req.destroy();
        } else chunks.push(c);
      });
      req.on("end", () => resolve(Buffer.concat(chunks)));
      req.on("error", reject);
    });

  const detail = () => {
    const t = state.temperatures();
    return {
      autoShutdown: "open", autoShutdownTime: 30, cameraStreamUrl: `http://${identity.host}:${identity.ports.camera}/?action=stream`,
      chamberFanSpeed: 0, chamberTargetTemp: 0, chamberTemp: 0, coolingFanSpeed: 0, cumulativeFilament: 1582.9, cumulativePrintTime: 8810,
      currentPrintSpeed: 100, doorStatus: "close", errorCode: "", estimatedLeftLen: 0, estimatedLeftWeight: 0, estimatedRightLen: 0,
      estimatedRightWeight: 0, estimatedTime: 0, externalFanStatus: "close", fillAmount: 0, firmwareVersion: identity.firmware.replace(/^v/, ""),
      flashRegisterCode: "", internalFanStatus: "close", ipAddr: identity.host, leftFilamentType: "", leftTargetTemp: 0, leftTemp: 0,
      lightStatus: state.light ? "open" : "close", location: "", macAddr: identity.mac.replace(/:/g, ""), name: identity.name, nozzleCnt: 1,
      nozzleModel: "0.4mm", nozzleStyle: 0, pid: SIM_PRODUCT_ID, platTargetTemp: t.bedTarget, platTemp: t.bed, polarRegisterCode: "",
      printDuration: 0, printFileName: state.printFile, printFileThumbUrl: "", printLayer: 0, printProgress: 0, printSpeedAdjust: 100,
      remainingDiskSpace: 6.5, rightFilamentType: "PLA", rightTargetTemp: t.nozzleTarget, rightTemp: t.nozzle,
      status: state.status, targetPrintLayer: 0, tvoc: 0, zAxisCompensation: 0,
    };
  };

  const handleJson = async (req: IncomingMessage, res: ServerResponse) => {
    const path = pathOf(req);
    let body: Record<string, unknown>;
    try {
      body = JSON.parse((await readBody(req, SIM_MAX_JSON_BYTES)).toString("utf8")) as Record<string, unknown>;
    } catch {
      requests.push({ path, authorized: false });
      return json(res, { code: 2, message: "Invalid parameter" });
    }
    const authorized = credentialsOk(body.serialNumber, body.checkCode);
    requests.push({ path, authorized });
    if (!authorized) return refuse(res);
    const ok = { code: 0, message: "Success" };
    switch (path) {
      case "/detail":
        return json(res, { ...ok, detail: detail() });
      case "/product":
        return json(res, { ...ok, product: { chamberTempCtrlState: 0, externalFanCtrlState: 1, internalFanCtrlState: 1, lightCtrlState: 1, nozzleTempCtrlState: 1, platformTempCtrlState: 1 } });
      case "/checkCode":
        return json(res, ok);
      case "/control": {
        const payload = body.payload as { cmd?: string; args?: Record<string, unknown> } | undefined;
        if (payload?.cmd === "lightControl_cmd") state.light = payload.args?.status === "open";
        if (payload?.cmd === "jobCtl_cmd") {
          const action = payload.args?.action;
          if (action === "pause" && state.status === "printing") state.status = "paused";
          if (action === "continue" && state.status === "paused") state.status = "printing";
          if (action === "cancel") state.status = "ready";
        }
        return json(res, ok);
      }
      case "/gcodeList":
        return json(res, { ...ok, gcodeList: [...state.files.keys()].map((p) => p.replace(/^\/data\//, "")).slice(0, 10) });
      case "/gcodeThumb": {
        const png = state.thumbnail(String(body.fileName ?? ""));
        return png ? json(res, { ...ok, imageData: png.toString("base64") }) : json(res, { code: 4, message: "Not found" });
      }
      case "/printGcode": {
        const file = state.files.get(normalizePath(String(body.fileName ?? "")));
        if (!file) return json(res, { code: 4, message: "Not found" });
        state.printFile = file.path.replace(/^\/data\//, "");
        state.status = "printing";
        return json(res, ok);
      }
      default:
        return json(res, { code: 1, message: "Error" });
    }
  };

  const handleUpload = async (req: IncomingMessage, res: ServerResponse) => {
    const boundary = /boundary=(?:"([^"]+)"|([^;]+))/i.exec(req.headers["content-type"] ?? "");
    const marker = boundary?.[1] ?? boundary?.[2];
    if (!marker) return json(res, { code: 2, message: "Invalid parameter" });
    let body: Buffer;
    try {
      body = await readBody(req, SIM_MAX_UPLOAD_BYTES);
    } catch {
      return;
    }
    const part = multipartFile(body, marker.trim(), "gcodeFile");
    if (!part) return json(res, { code: 2, message: "Invalid parameter" });
    const declared = Number(req.headers["filesize"]);
    if (Number.isFinite(declared) && declared !== part.bytes.length) return json(res, { code: 1, message: "file size mismatch" });
    state.addFile(part.filename, part.bytes, "http", req.headers["printnow"] === "true");
    return json(res, { code: 0, message: "Success" });
  };

  const uploadAuthorized = (req: IncomingMessage) => {
    const authorized = credentialsOk(req.headers["serialnumber"], req.headers["checkcode"]);
    requests.push({ path: pathOf(req), authorized });
    return authorized;
  };

  const server = createServer((req, res) => {
    if (req.method !== "POST") return json(res, { code: 1, message: "Error" });
    if (pathOf(req) === "/uploadGcode") {
      if (!uploadAuthorized(req)) return refuse(res);
      return void handleUpload(req, res);
    }
    void handleJson(req, res);
  });
  // Credentials are checked before the body is asked for, as the printer does for uploads with Expect.
  server.on("checkContinue", (req: IncomingMessage, res: ServerResponse) => {
    if (pathOf(req) === "/uploadGcode") {
      if (!uploadAuthorized(req)) return refuse(res);
      res.writeContinue();
      return void handleUpload(req, res);
    }
    res.writeContinue();
    void handleJson(req, res);
  });
  server.on("connection", (s: Socket) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen({ host: identity.host, port: identity.ports.http, exclusive: true }, () => resolve());
  });

  return {
    name: "http",
    requests,
    stop: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** The named file part of a multipart/form-data body. */
export function multipartFile(body: Buffer, boundary: string, field: string): { filename: string; bytes: Buffer } | undefined {
  const delimiter = Buffer.from(`--${boundary}`);
  let at = body.indexOf(delimiter);
  while (at !== -1) {
    const headerStart = at + delimiter.length + 2;
    const headerEnd = body.indexOf("\r\n\r\n", headerStart);
    if (headerEnd === -1) return undefined;
    const headers = body.subarray(headerStart, headerEnd).toString("utf8");
    const next = body.indexOf(Buffer.from(`\r\n--${boundary}`), headerEnd + 4);
    if (next === -1) return undefined;
    const name = /name="([^"]*)"/i.exec(headers)?.[1];
    if (name === field) {
      const filename = /filename="([^"]*)"/i.exec(headers)?.[1] ?? "upload.gcode";
      return { filename, bytes: Buffer.from(body.subarray(headerEnd + 4, next)) };
    }
    at = next + 2;
  }
  return undefined;
}

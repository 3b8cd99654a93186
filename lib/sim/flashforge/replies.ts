// The simulated Adventurer 5M's answers to console commands on TCP 8899, as a pure function of its state: text
// replies as legacy-api.md shows them (Parallel-7/flashforge-api-docs), the binary part after "ok" for ~M661 and
// ~M662. tests/golden.test.ts holds their shape against the documented replies (tests/golden/).
import { encodeFileList, encodeThumbnail, textReply } from "../../flashforge/tcp-codec.ts";
import { normalizePath, type FlashforgeSimState } from "./state.ts";

export interface SimReply {
  text: Buffer;
  binary?: Buffer;
}

export function simReply(state: FlashforgeSimState, code: string, args: string): SimReply {
  const { identity } = state;
  const t = state.temperatures();
  switch (code) {
    case "M115":
      return { text: textReply(code, [
        `Machine Type: ${identity.machineType}`, `Machine Name: ${identity.name}`, `Firmware: ${identity.firmware}`,
        `SN: ${identity.serial}`, "X: 220 Y: 220 Z: 220", "Tool Count: 1", `Mac Address:${identity.mac}`,
      ]) };
    case "M119":
      return { text: textReply(code, [
        "Endstop: X-max: 110 Y-max: 110 Z-min: 0",
        `MachineStatus: ${state.status === "printing" ? "BUILDING_FROM_SD" : state.status === "paused" ? "PAUSED" : "READY"}`,
        `MoveMode: ${state.status === "paused" ? "PAUSED" : state.status === "printing" ? "MOVING" : "READY"}`,
        "Status: S:1 L:0 J:0 F:0", `LED: ${state.light ? 1 : 0}`, `CurrentFile: ${state.printFile}`,
      ]) };
    case "M105":
      return { text: textReply(code, [`T0:${t.nozzle.toFixed(1)}/${t.nozzleTarget.toFixed(1)} T1:0.0/0.0 B:${t.bed.toFixed(1)}/${t.bedTarget.toFixed(1)}`]) };
    case "M27":
      return { text: textReply(code, [state.status === "ready" ? "SD printing byte 0/100" : "SD printing byte 11/100", "Layer: 0/0"]) };
    case "M114":
      return { text: textReply(code, ["X:110.050 Y:110.050 Z:200.000 A:0.000 B:0"]) };
    case "M661":
      return { text: textReply(code, []), binary: encodeFileList([...state.files.keys()]) };
    case "M662": {
      const png = state.thumbnail(args);
      return { text: textReply(code, []), binary: png ? encodeThumbnail(png) : undefined };
    }
    case "M146":
      state.light = !/r0 g0 b0/.test(args);
      return { text: textReply(code, []) };
    case "M23":
      state.printFile = normalizePath(args).replace(/^\/data\//, "");
      state.status = "printing";
      return { text: textReply(code, [`File opened: ${args} Size: 0`, "File selected"]) };
    case "M24":
      if (state.status === "paused") state.status = "printing";
      return { text: textReply(code, []) };
    case "M25":
      if (state.status === "printing") state.status = "paused";
      return { text: textReply(code, []) };
    case "M26":
      state.status = "ready";
      state.printFile = "";
      return { text: textReply(code, []) };
    default:
      return { text: textReply(code, []) };
  }
}

import { describe, expect, test } from "bun:test";
import {
  createReplyAssembler, formatReply, parseCommand, parseEprtArg, parseEpsvReply, parsePasvReply, parsePortArg, parseQuotedPath,
  type FtpReply,
} from "../lib/bambu/ftp-codec.ts";

describe("FTP codec", () => {
  test("commands keep their argument unchanged, spaces included", () => {
    expect(parseCommand("stor my file.3mf")).toEqual({ verb: "STOR", arg: "my file.3mf" });
    expect(parseCommand("PASV")).toEqual({ verb: "PASV", arg: "" });
  });
  test("multi-line replies are assembled, single lines pass at once", () => {
    const seen: FtpReply[] = [];
    const feed = createReplyAssembler((r) => seen.push(r));
    for (const line of ["211-Features:", " EPSV", " SIZE", "211 End", "200 ok"]) feed(line);
    expect(seen).toEqual([{ code: 211, lines: ["211-Features:", " EPSV", " SIZE", "211 End"] }, { code: 200, lines: ["200 ok"] }]);
    expect(formatReply(211, "Features:", " SIZE", "End")).toBe("211-Features:\r\n SIZE\r\n211 End\r\n");
  });
  test("passive replies: the port is read even when the printer says 0.0.0.0", () => {
    expect(parsePasvReply("Entering Passive Mode (192,168,1,18,7,234).")).toEqual({ host: "192.168.1.18", port: 2026 });
    expect(parsePasvReply("Entering Passive Mode (0,0,0,0,7,234).")?.port).toBe(2026);
    expect(parseEpsvReply("Entering Extended Passive Mode (|||2026|)")).toBe(2026);
    expect(parseEpsvReply("garbage")).toBeUndefined();
  });
  test("PORT and EPRT arguments, malformed ones refused", () => {
    expect(parsePortArg("127,0,3,9,4,1")).toEqual({ host: "127.0.3.9", port: 1025 });
    expect(parsePortArg("127,0,3,999,4,1")).toBeUndefined();
    expect(parseEprtArg("|1|127.0.3.9|1025|")).toEqual({ host: "127.0.3.9", port: 1025, family: 4 });
    expect(parseEprtArg("|2|::1|1025|")?.family).toBe(6);
    expect(parseEprtArg("|1|127.0.3.9|0|")).toBeUndefined();
  });
  test("quoted paths from 257 replies", () => {
    expect(parseQuotedPath('"/model" is the current directory')).toBe("/model");
    expect(parseQuotedPath('"/a ""b""" created')).toBe('/a "b"');
  });
});

// Log lines carry printer, service and peer; access codes and passwords never reach the output.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { captureLogs, processLogger, redact, registerSecret, serviceLogger, setupLogging } from "../lib/log.ts";
import { registerConfigSecrets } from "../lib/supervisor.ts";
import { parseConfig } from "../lib/config.ts";

let capture: ReturnType<typeof captureLogs>;
beforeAll(() => {
  setupLogging("debug", { quiet: true });
  capture = captureLogs();
});
afterAll(() => capture.stop());

const last = () => capture.lines[capture.lines.length - 1] ?? "";

describe("log lines", () => {
  test("name the printer, the service and the peer", () => {
    serviceLogger("p1s", "mqtt").with({ peer: "127.0.1.40:50000" }).info("client connected");
    expect(last()).toMatch(/^\d{4}-\d\d-\d\dT[\d:.]+Z INFO  \[p1s\/mqtt\] 127\.0\.1\.40:50000 client connected$/);
  });

  test("respect the level", () => {
    setupLogging("warn", { quiet: true });
    try {
      const before = capture.lines.length;
      serviceLogger("p1s", "ftp").info("not shown");
      serviceLogger("p1s", "ftp").warn("shown");
      expect(capture.lines.slice(before)).toHaveLength(1);
      expect(last()).toContain("WARN  [p1s/ftp] shown");
    } finally {
      setupLogging("debug", { quiet: true });
    }
  });

  test("an access code logged by mistake comes out as ********", () => {
    registerSecret("Ab3dE6g8");
    const log = serviceLogger("p1s", "mqtt").with({ peer: "127.0.1.41:1" });
    log.info(`login with password Ab3dE6g8 accepted`);
    expect(last()).toContain("login with password ******** accepted");
    log.warn("payload {payload}", { payload: { username: "bblp", password: "Ab3dE6g8" } });
    expect(last()).toContain('"password":"********"');
    log.error("failed: {error}", { error: new Error("bad code Ab3dE6g8") });
    expect(last()).toContain("failed: bad code ********");
    processLogger().info`tagged template Ab3dE6g8 ${"Ab3dE6g8"}`;
    expect(last()).toContain("tagged template ******** ********");
    expect(capture.lines.join("\n")).not.toContain("Ab3dE6g8");
  });

  test("every code and password in a configuration is registered", () => {
    const config = parseConfig(`[web]\nlisten = ""\nusername = "admin"\npassword = "webPass99"\n[export.mqtt]\nurl = "mqtt://broker.lan:1883"\nusername = "farm"\npassword = "brokerPw77"\n[[printer]]\nname = "a"\nhost = "h"\nserial = "s"\naccess_code = "Zz998877"\nviewer_access_code = "Vv112233"\n`);
    registerConfigSecrets(config);
    serviceLogger("a", "bind").info("codes Zz998877 Vv112233 webPass99 brokerPw77");
    expect(last()).toContain("codes ******** ******** ******** ********");
  });

  test("very short strings are not treated as secrets (they would redact ordinary words)", () => {
    registerSecret("ab");
    expect(redact("a table")).toBe("a table");
  });
});

// printers.toml validation: every error names the file, printer and key, and all of them are reported at once.
import { afterAll, describe, expect, test } from "bun:test";
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DEFAULT_ALLOW } from "../lib/core/allow.ts";
import {
  BAMBU_PORTS, ConfigErrors, FLASHFORGE_PORTS, PRINTER_KEYS, PROXY_KEYS, WEB_KEYS, listenersOf, loadConfig, parseConfig, suggest,
  type Config,
} from "../lib/config.ts";

const dir = mkdtempSync(join(tmpdir(), "pp-config-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const FILE = "test.toml";
const bambu = (name: string, extra = "") => `
[[printer]]
name = "${name}"
host = "192.168.1.50"
serial = "01P00A000000001"
access_code = "12345678"
${extra}
`;
const base = `[proxy]\nstate_dir = "${dir}/state"\n[web]\nlisten = ""\n`;

function problemsOf(text: string): string[] {
  try {
    parseConfig(text, FILE);
  } catch (error) {
    if (error instanceof ConfigErrors) return error.problems;
    throw error;
  }
  throw new Error("expected the configuration to be refused");
}

const ok = (text: string): Config => parseConfig(text, FILE);

describe("a valid configuration", () => {
  test("defaults fill every optional key", () => {
    const config = ok(base + bambu("p1s"));
    const p = config.printers[0]!;
    expect(p).toMatchObject({
      name: "p1s", type: "bambu", bind: "0.0.0.0", camera: "auto", ftpSessions: 1, ssdpTargets: ["255.255.255.255"],
      services: ["camera", "mqtt", "ftp", "bind", "ssdp"], accessCode: "12345678",
    });
    expect(p.ports.mqtt).toBe(8883);
    expect(p.printerPorts.ftp).toBe(990);
    expect(config.proxy).toEqual({ stateDir: `${dir}/state`, logLevel: "info", ffmpeg: "ffmpeg", allow: [...DEFAULT_ALLOW] });
  });

  test('[web] listen "" disables the web page; the default is 0.0.0.0:8080', () => {
    expect(ok(base + bambu("a")).web.listen).toBeUndefined();
    expect(ok(bambu("a")).web.listen).toEqual({ host: "0.0.0.0", port: 8080 });
    expect(ok(`[web]\nlisten = "127.0.1.5:9000"\nusername = "u"\npassword = "p"\n` + bambu("a")).web).toEqual({
      listen: { host: "127.0.1.5", port: 9000 }, username: "u", password: "p", open: false, tokensDir: expect.stringMatching(/\/tokens$/),
      allow: [...DEFAULT_ALLOW],
    });
  });

  test("ports and printer_ports override single ports; ftp_data_ports is a range", () => {
    const p = ok(base + bambu("a", 'ports = { mqtt = 18883, rtsp_plain = 8554 }\nprinter_ports = { ftp = 2990 }\nftp_data_ports = "50000-50100"')).printers[0]!;
    expect(p.ports.mqtt).toBe(18883);
    expect(p.ports.rtsp_plain).toBe(8554);
    expect(p.ports.ftp).toBe(990);
    expect(p.printerPorts.ftp).toBe(2990);
    expect(p.printerPorts.mqtt).toBe(8883);
    expect(p.ftpDataPorts).toEqual({ first: 50000, last: 50100 });
  });

  test("a FlashForge printer takes check_code and its own ports and services", () => {
    const p = ok(base + `[[printer]]\nname = "ff"\ntype = "flashforge"\nhost = "192.168.1.60"\nserial = "SN1"\ncheck_code = "abcd"\n`).printers[0]!;
    expect(p.type).toBe("flashforge");
    expect(p.accessCode).toBe("abcd");
    expect(p.services).toEqual(["tcp", "http", "discovery", "camera"]);
    expect(listenersOf(p).map((l) => `${l.protocol}/${l.port}`)).toEqual(["tcp/8899", "tcp/8898", "udp/48899", "tcp/8080"]);
  });

  test("access_code_file is read and trimmed", () => {
    const codeFile = join(dir, "code");
    writeFileSync(codeFile, "AbCd1234\n");
    const p = ok(base + bambu("a", "").replace('access_code = "12345678"', `access_code_file = "${codeFile}"`)).printers[0]!;
    expect(p.accessCode).toBe("AbCd1234");
  });

  test("two printers on their own bind addresses do not conflict", () => {
    const config = ok(base + bambu("a", 'bind = "127.0.1.2"') + bambu("b", 'bind = "127.0.1.3"'));
    expect(config.printers.map((p) => p.name)).toEqual(["a", "b"]);
  });

  test("loadConfig names an unreadable file", () => {
    expect(() => loadConfig(join(dir, "missing.toml"))).toThrow(/missing\.toml: cannot read the file/);
  });
});

describe("config.example.toml", () => {
  const text = readFileSync(join(import.meta.dir, "..", "config.example.toml"), "utf8");

  test("validates", () => {
    const config = parseConfig(text, "config.example.toml");
    expect(config.printers.map((p) => p.type)).toEqual(["bambu", "flashforge"]);
  });

  test("documents every key lib/config.ts knows, and every port name", () => {
    for (const key of [...PROXY_KEYS, ...WEB_KEYS, ...PRINTER_KEYS]) expect(text).toMatch(new RegExp(`^#? ?${key} = `, "m"));
    for (const port of [...Object.keys(BAMBU_PORTS), ...Object.keys(FLASHFORGE_PORTS)]) expect(text).toContain(`${port} `);
  });

  test("its commented-out keys are valid when uncommented", () => {
    const codeFile = join(dir, "example.code");
    writeFileSync(codeFile, "12345678");
    // Uncomment "# key = value" lines, keeping one of each alternative the file says to choose between.
    const uncommented = text
      .split("\n")
      .map((line) => (/^# [a-z_]+ = /.test(line) ? line.slice(2) : line))
      .filter((line) => !/^(access_code_file|tls_cert|tls_key|printer_ca|state_dir) = /.test(line))
      .join("\n");
    const config = parseConfig(`[proxy]\nstate_dir = "${dir}/s"\n` + uncommented.replace("[proxy]\n", ""), "uncommented.toml");
    const p = config.printers[0]!;
    expect(p.viewerAccessCode).toBe("87654321");
    expect(p.ports.rtsp_plain).toBe(8554);
    expect(p.ftpDataPorts).toEqual({ first: 50000, last: 50100 });
    expect(config.web.username).toBe("admin");
  });
});

describe("every error is reported, naming the file, the printer and the key", () => {
  test("missing keys, all at once", () => {
    const problems = problemsOf(base + `[[printer]]\nname = "x"\n`);
    expect(problems).toContain('test.toml: printer "x": key "host" is missing');
    expect(problems).toContain('test.toml: printer "x": key "serial" is missing');
    expect(problems.some((p) => p.startsWith('test.toml: printer "x": key "access_code" is missing'))).toBe(true);
    expect(problems).toHaveLength(3);
  });

  test("a printer without a name is named by its position", () => {
    expect(problemsOf(base + bambu("a", 'bind = "127.0.1.3"') + `[[printer]]\nhost = "h"\nbind = "127.0.1.4"\nserial = "s"\naccess_code = "12345678"\n`)).toEqual([
      'test.toml: [[printer]] #2: key "name" is missing',
    ]);
  });

  test("no printers at all", () => {
    expect(problemsOf(base)).toEqual(["test.toml: no [[printer]] entries: add at least one printer (see config.example.toml)"]);
  });

  test("wrong types", () => {
    const problems = problemsOf(`[proxy]\nlog_level = 3\n[web]\nlisten = 8080\n` + bambu("a", 'ftp_sessions = "2"\nservices = "mqtt"\nports = 5\nssdp_targets = "x"').replace('host = "192.168.1.50"', "host = 1"));
    expect(problems).toContain('test.toml: [proxy] key "log_level" must be a string (in quotes), not 3');
    expect(problems).toContain('test.toml: [web] key "listen" must be a string (in quotes), not 8080');
    expect(problems).toContain('test.toml: printer "a": key "host" must be a string (in quotes), not 1');
    expect(problems).toContain('test.toml: printer "a": key "ftp_sessions" must be a whole number, not "2"');
    expect(problems).toContain('test.toml: printer "a": key "services" must be a list of strings from camera, mqtt, ftp, bind, ssdp');
    expect(problems.some((p) => p.startsWith('test.toml: printer "a": key "ports" must be an inline table, e.g. ports = {'))).toBe(true);
    expect(problems).toContain('test.toml: printer "a": key "ssdp_targets" must be a list of IPv4 addresses, e.g. ["255.255.255.255"]');
    expect(problemsOf(`printer = 1\n`)).toContain('test.toml: key "printer" must be an array of tables: write each printer as [[printer]]');
    expect(problemsOf(`proxy = 1\n` + bambu("a"))).toContain("test.toml: [proxy] must be a table");
  });

  test("wrong values say what is expected", () => {
    const problems = problemsOf(
      `[proxy]\nlog_level = "loud"\n[web]\nlisten = ""\n` +
        bambu("a b", 'type = "prusa"') +
        bambu("c", 'camera = "webcam"\nftp_data_ports = "100-50"\nftp_sessions = 40\nservices = ["mqtt", "mqqt"]').replace('"12345678"', '"1234"'),
    );
    expect(problems).toContain('test.toml: [proxy] key "log_level" is "loud"; expected one of debug, info, warn, error');
    expect(problems).toContain('test.toml: printer "a b": key "name" is "a b"; use letters, digits, "-", "_" or "." (it appears in URLs)');
    expect(problems).toContain('test.toml: printer "a b": key "type" is "prusa"; expected "bambu" or "flashforge"');
    expect(problems).toContain('test.toml: printer "c": key "camera" is "webcam"; expected "auto", "chamber", "rtsp" or "none"');
    expect(problems).toContain('test.toml: printer "c": key "ftp_data_ports" is "100-50"; expected "FIRST-LAST", e.g. "50000-50100"');
    expect(problems).toContain('test.toml: printer "c": key "ftp_sessions" is 40; expected 1 to 16');
    expect(problems).toContain('test.toml: printer "c": key "services" has unknown service "mqqt" (did you mean "mqtt"?); a bambu printer has camera, mqtt, ftp, bind, ssdp');
    expect(problems).toContain('test.toml: printer "c": key "access_code" must be the 8 letters or digits shown on the printer\'s screen');
  });

  test("unknown keys are errors with the nearest known key suggested", () => {
    const problems = problemsOf(`[proxy]\nlog_levle = "info"\n[web]\nlisten = ""\nusername = "u"\npasword = "p"\n[printers]\n` + bambu("a", 'acess = "x"\nhots = "h"\nviewer_code = "x"\nzzzz = 1'));
    expect(problems).toContain('test.toml: [proxy] key "log_levle" is unknown (did you mean "log_level"?)');
    expect(problems).toContain('test.toml: [web] key "pasword" is unknown (did you mean "password"?)');
    expect(problems).toContain('test.toml: key "printers" is not a known section (did you mean "printer"?)');
    expect(problems).toContain('test.toml: printer "a": key "acess" is unknown (did you mean "access_code"?)');
    expect(problems).toContain('test.toml: printer "a": key "hots" is unknown (did you mean "host"?)');
    expect(problems).toContain('test.toml: printer "a": key "viewer_code" is unknown (did you mean "viewer_access_code"?)');
    expect(problems).toContain('test.toml: printer "a": key "zzzz" is unknown');
  });

  test("suggestions come from edit distance, a known beginning or a containing word", () => {
    expect(suggest("acess", PRINTER_KEYS)).toBe(' (did you mean "access_code"?)');
    expect(suggest("serail", PRINTER_KEYS)).toBe(' (did you mean "serial"?)');
    expect(suggest("cam", PRINTER_KEYS)).toBe(' (did you mean "camera"?)');
    expect(suggest("code", PRINTER_KEYS)).toBe(' (did you mean "access_code"?)');
    expect(suggest("ftp_data", PRINTER_KEYS)).toBe(' (did you mean "ftp_data_ports"?)');
    expect(suggest("xyzzy", PRINTER_KEYS)).toBe("");
  });

  test("bad ports", () => {
    const problems = problemsOf(base + bambu("a", 'ports = { mqtt = 0, ftp = 70000, rtsp = 3.5, chamber = "6000", mqt = 1 }\nprinter_ports = { tcp = 8899 }'));
    expect(problems).toContain('test.toml: printer "a": key "ports.mqtt" is 0; expected a port number from 1 to 65535');
    expect(problems).toContain('test.toml: printer "a": key "ports.ftp" is 70000; expected a port number from 1 to 65535');
    expect(problems).toContain('test.toml: printer "a": key "ports.rtsp" is 3.5; expected a port number from 1 to 65535');
    expect(problems).toContain('test.toml: printer "a": key "ports.chamber" is "6000"; expected a port number from 1 to 65535');
    expect(problems).toContain('test.toml: printer "a": key "ports.mqt" is not a port of this printer (did you mean "mqtt"?); known: chamber, rtsp, rtsp_plain, mqtt, ftp, bind, bind_tls, ssdp');
    expect(problems.some((p) => p.startsWith('test.toml: printer "a": key "printer_ports.tcp" is not a port of this printer'))).toBe(true);
  });

  test("bad bind and web listen addresses", () => {
    const problems = problemsOf(`[web]\nlisten = "8080"\n` + bambu("a", 'bind = "printer.local"') + bambu("b", 'bind = "10.0.0.300"'));
    expect(problems).toContain('test.toml: printer "a": key "bind" is "printer.local"; expected an IPv4 address of this host, or "0.0.0.0"');
    expect(problems).toContain('test.toml: printer "b": key "bind" is "10.0.0.300"; expected an IPv4 address of this host, or "0.0.0.0"');
    expect(problems).toContain('test.toml: [web] key "listen" is "8080"; expected "HOST:PORT", e.g. "0.0.0.0:8080", or "" to disable');
    expect(problemsOf(`[web]\nlisten = "0.0.0.0:99999"\n` + bambu("a"))[0]).toContain('key "listen" is "0.0.0.0:99999"');
  });

  test("duplicate names", () => {
    const problems = problemsOf(base + bambu("a", 'bind = "127.0.1.2"') + bambu("a", 'bind = "127.0.1.3"'));
    expect(problems).toEqual(['test.toml: printer "a": key "name" is used by two printers; names must be unique']);
  });

  test("two printers on one address: one line naming both printers and listing the ports", () => {
    const problems = problemsOf(base + bambu("a") + bambu("b"));
    expect(problems).toEqual([
      'test.toml: printer "a" and printer "b" both listen on 0.0.0.0 ports 6000, 8883, 990, 3000, 3002 ' +
        "(chamber, mqtt, ftp, bind, bind_tls): give each printer its own \"bind\" address (an IP alias of this host) or move one with \"ports\"",
    ]);
  });

  test("camera ports follow the model: known from the serial, a file-tunnel model, or unknown (both reserved)", () => {
    const ports = (extra: string, serial = "01P00A000000001") =>
      listenersOf(parseConfig(base + bambu("a", extra).replace("01P00A000000001", serial), "test.toml").printers[0]!).map((l) => `${l.service}:${l.port}`);
    expect(ports('services = ["camera"]')).toEqual(["chamber:6000"]); // 01P: a P1S
    expect(ports('services = ["camera"]\nmodel = "X1C"')).toEqual(["rtsp:322"]);
    expect(ports('services = ["camera"]\nmodel = "H2D"')).toEqual(["tunnel:6000", "rtsp:322"]);
    expect(ports('services = ["camera"]\nports = { rtsp_plain = 8554 }', "ZZZ00A000000001")).toEqual(
      ["chamber:6000", "rtsp:322", "rtsp_plain:8554"],
    );
  });

  test("ssdp_listen is on unless set to false, and must be a boolean", () => {
    expect(parseConfig(base + bambu("a"), "test.toml").printers[0]!.ssdpListen).toBe(true);
    expect(parseConfig(base + bambu("a", "ssdp_listen = false"), "test.toml").printers[0]!.ssdpListen).toBe(false);
    expect(problemsOf(base + bambu("a", 'ssdp_listen = "no"'))).toEqual(['test.toml: printer "a": key "ssdp_listen" must be true or false (no quotes), not "no"']);
  });

  test("an unknown model is an error that lists the known ones", () => {
    const problems = problemsOf(base + bambu("a", 'model = "P9X"'));
    expect(problems).toHaveLength(1);
    expect(problems[0]).toStartWith('test.toml: printer "a": key "model" is "P9X"; not a Bambu model pandaproxy knows (X1C, X1, X1E, P1P, P1S');
  });

  test("a conflict between a wildcard and a specific address names the specific one; a moved port no longer conflicts", () => {
    const problems = problemsOf(base + bambu("a", 'services = ["mqtt", "ftp"]') + bambu("b", 'bind = "127.0.1.9"\nservices = ["mqtt", "ftp"]\nports = { ftp = 2990 }'));
    expect(problems).toEqual([
      'test.toml: printer "a" and printer "b" both listen on 127.0.1.9 port 8883 (mqtt): give each printer its own "bind" address (an IP alias of this host) or move one with "ports"',
    ]);
  });

  test("one printer using a port twice, and the web page on a printer's port", () => {
    const problems = problemsOf(`[web]\nlisten = "0.0.0.0:8883"\n` + bambu("a", 'ports = { ftp = 8883 }'));
    expect(problems).toContain('test.toml: printer "a": uses 0.0.0.0 port 8883 (mqtt/ftp) for two services; move one with "ports"');
    expect(problems.filter((p) => p.startsWith('test.toml: [web] key "listen" is "0.0.0.0:8883", where printer "a"'))).toHaveLength(2);
  });

  test("bad TOML names the line", () => {
    const problems = problemsOf(`[proxy]\nlog_level = "info"\n\n[[printer]]\nname = "a\n`);
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatch(/^test\.toml \(line 5, column \d+\): not valid TOML: /);
  });

  test("access_code_file: unreadable, or given together with access_code", () => {
    const unreadable = problemsOf(base + bambu("a", `access_code_file = "${dir}/nope"`).replace('access_code = "12345678"', ""));
    expect(unreadable).toEqual([`test.toml: printer "a": key "access_code_file" names "${dir}/nope", which cannot be read (ENOENT)`]);
    const codeFile = join(dir, "code2");
    writeFileSync(codeFile, "12345678");
    expect(problemsOf(base + bambu("a", `access_code_file = "${codeFile}"`))).toEqual([
      'test.toml: printer "a": key "access_code_file" and "access_code" are both set; keep one',
    ]);
    if (process.getuid?.() !== 0) {
      chmodSync(codeFile, 0);
      expect(problemsOf(base + bambu("b", `access_code_file = "${codeFile}"`).replace('access_code = "12345678"', ""))[0]).toContain("EACCES");
    }
  });

  test("FlashForge: check_code is required; camera is Bambu-only; Bambu refuses check_code", () => {
    const ff = `[[printer]]\nname = "ff"\ntype = "flashforge"\nhost = "h"\nserial = "s"\ncamera = "chamber"\n`;
    const problems = problemsOf(base + ff);
    expect(problems.some((p) => p.startsWith('test.toml: printer "ff": key "check_code" is missing'))).toBe(true);
    expect(problems).toContain('test.toml: printer "ff": key "camera" applies to Bambu printers only');
    expect(problemsOf(base + bambu("b", 'check_code = "1234"'))).toEqual([
      'test.toml: printer "b": key "check_code" is for FlashForge printers; Bambu printers use "access_code"',
    ]);
  });

  test("pairs that must go together, and viewer_access_code equal to access_code", () => {
    const problems = problemsOf(`[web]\nlisten = ""\nusername = "admin"\n` + bambu("a", 'tls_cert = "/x.crt"\nviewer_access_code = "12345678"'));
    expect(problems).toEqual([
      'test.toml: [web] username and password must be set together',
      'test.toml: printer "a": key "viewer_access_code" must differ from the access code',
      'test.toml: printer "a": tls_cert and tls_key must be set together',
    ]);
  });

  test("FlashForge: a Bambu-only key says so instead of being read and ignored", () => {
    const ff = `[[printer]]\nname = "ff"\ntype = "flashforge"\nhost = "h"\nserial = "s"\ncheck_code = "abcd"\n`;
    const problems = problemsOf(base + ff + 'ftp_sessions = 2\nssdp_listen = false\ntls_cert = "a"\ntls_key = "b"\nprinter_ca = "c"\n');
    expect(problems).toEqual(["ftp_sessions", "ssdp_listen", "tls_cert", "tls_key", "printer_ca"].map((key) => `test.toml: printer "ff": key "${key}" applies to Bambu printers only`));
    expect(problemsOf(base + ff + 'ftp_sesions = 2\n')).toEqual(['test.toml: printer "ff": key "ftp_sesions" is unknown (did you mean "ftp_sessions"?)']);
    const p = parseConfig(base + ff + 'model = "Adventurer 5M"\nviewer_access_code = "look"\n', FILE).printers[0]!;
    expect([p.model, p.viewerAccessCode, p.camera]).toEqual(["Adventurer 5M", "look", "none"]);
  });
});

describe("the camera decision is made once: what printers.toml reserves is what the camera service runs", () => {
  const serviceNames = async (extra: string, serial: string): Promise<string[]> => {
    const { serviceContext } = await import("./support.ts");
    const { createCameraServices } = await import("../lib/bambu/camera.ts");
    const ctx = serviceContext(`name = "a"\nhost = "127.0.35.1"\nserial = "${serial}"\naccess_code = "12345678"\nservices = ["camera"]\n${extra}`);
    return createCameraServices(ctx).map((s) => s.name);
  };
  const reserved = (extra: string, serial: string): string[] =>
    listenersOf(parseConfig(base + bambu("a", `services = ["camera"]\n${extra}`).replace("01P00A000000001", serial), FILE).printers[0]!).map((l) => l.service);

  for (const [model, serial] of [["P1S", "01P00A000000001"], ["X1C", "00M09A350100123"], ["H2D", "09400A000000001"], ["P2S", "22E00A000000001"]] as const) {
    for (const camera of ["auto", "chamber", "rtsp", "none"]) {
      test(`${model}, camera = "${camera}"`, async () => {
        const names = await serviceNames(`camera = "${camera}"`, serial);
        expect(reserved(`camera = "${camera}"`, serial).sort()).toEqual(names.sort());
        expect(reserved(`camera = "${camera}"\nmodel = "${model}"`, "ZZZ00A000000001")).toEqual(reserved(`camera = "${camera}"`, serial));
      });
    }
  }
});

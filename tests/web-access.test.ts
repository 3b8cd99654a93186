// Who sees what on the web page, over real HTTP on 127.0.27.x (fetch and curl): nothing without credentials;
// a printer's access code or viewer code opens that printer only, its camera token only its camera URLs, the
// admin login everything, the metrics token only /metrics; [web] open = true serves anyone, with a warning;
// failed logins are limited per source address.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ConfigErrors, parseConfig, type PrinterConfig } from "../lib/config.ts";
import type { PrinterRuntime } from "../lib/printer-services.ts";
import { captureLogs, setupLogging } from "../lib/log.ts";
import { createMetrics } from "../lib/core/metrics.ts";
import { createLoginLimit } from "../lib/web/login-limit.ts";
import { startWeb, type WebServer } from "../lib/web/server.ts";
import { basicAuth, createTestFeed, startTestWeb, TEST_ADMIN, testPrinter, type TestFeed } from "./web-fixtures.ts";

const HOST = "127.0.27.1";
const P1S_CODE = "P1Scode1";
const X1C_CODE = "X1Ccode2";
const X1C_VIEWER_CODE = "view3333";
const AD5M_SERIAL = "SNMOMC9900123";
const AD5M_CHECK_CODE = "ffcheck4";

function printer(name: string, feed: TestFeed | undefined, config: Partial<PrinterConfig>): PrinterRuntime {
  const base = testPrinter(name, feed?.feed);
  return { ...base, config: { ...base.config, ...config } };
}

const status = async (url: string, headers: Record<string, string> = {}) => (await fetch(url, { headers })).status;
const names = async (url: string, headers: Record<string, string>) =>
  ((await (await fetch(`${url}/api/printers`, { headers })).json()) as { name: string }[]).map((p) => p.name);
/** curl's output (asynchronously: the web server runs in this process). */
async function curl(args: string[]): Promise<string> {
  const child = Bun.spawn(["curl", "-s", "--max-time", "5", ...args], { stdout: "pipe", stderr: "ignore" });
  const out = await new Response(child.stdout).text();
  await child.exited;
  return out;
}
const curlStatus = (url: string, args: string[] = []) => curl(["-o", "/dev/null", "-w", "%{http_code}", ...args, url]);

describe("web access by default", () => {
  const feeds: TestFeed[] = [];
  let web: WebServer;
  let url: string;
  let tokensDir: string;
  const state = mkdtempSync(join(tmpdir(), "pp-web-access-"));

  beforeAll(async () => {
    setupLogging("info", { quiet: true });
    feeds.push(createTestFeed(), createTestFeed(), createTestFeed());
    for (const f of feeds) f.publish(); // snapshots answer at once from the cached frame
    const printers = [
      printer("p1s", feeds[0], { accessCode: P1S_CODE }),
      printer("x1c", feeds[1], { accessCode: X1C_CODE, viewerAccessCode: X1C_VIEWER_CODE, serial: "00M09A000000002" }),
      printer("ad5m", feeds[2], { type: "flashforge", serial: AD5M_SERIAL, accessCode: AD5M_CHECK_CODE }),
    ];
    tokensDir = join(state, "tokens");
    ({ web, url } = await startTestWeb(printers, { host: HOST, tokensDir, loginLimit: { failuresAllowed: 1_000 } }));
  });
  afterAll(async () => {
    await web?.stop();
    for (const f of feeds) f.stop();
    rmSync(state, { recursive: true, force: true });
  });

  const cameraUrls = (name: string) => [`/printers/${name}/snapshot.jpg`, `/printers/${name}/camera.mjpeg`];

  test("without credentials the page, /api, /metrics, a camera and a snapshot answer 401 and ask for Basic auth", async () => {
    for (const path of ["/", "/index.html", "/api/printers", "/metrics", ...cameraUrls("p1s"), ...cameraUrls("ad5m"), "/printers/nosuch/snapshot.jpg"]) {
      const response = await fetch(url + path);
      expect(`${path} ${response.status}`).toBe(`${path} 401`);
      expect(response.headers.get("www-authenticate")).toBe('Basic realm="pandaproxy"');
      expect(await response.text()).not.toContain("p1s");
    }
    expect(await curlStatus(`${url}/api/printers`)).toBe("401");
    expect(feeds.map((f) => f.claimed)).toEqual([0, 0, 0]);
  });

  test("a configuration with no [web] login at all still asks for credentials", async () => {
    const config = parseConfig(
      `[proxy]\nstate_dir = "${state}/default"\n[web]\nlisten = "127.0.27.8:18270"\n` +
        `[[printer]]\nname = "p1s"\nhost = "192.168.1.5"\nserial = "01P00A000000001"\naccess_code = "${P1S_CODE}"\n`,
    );
    const runtime = printer("p1s", feeds[0], config.printers[0]!);
    const web = await startWeb({ web: config.web, printers: () => [runtime], metrics: createMetrics() });
    try {
      const base = `http://127.0.27.8:${web.port}`;
      for (const path of ["/", "/api/printers", "/metrics", ...cameraUrls("p1s")]) expect(`${path} ${await status(base + path)}`).toBe(`${path} 401`);
      expect(await names(base, basicAuth("bblp", P1S_CODE))).toEqual(["p1s"]);
      expect(statSync(join(state, "default", "tokens", "cameras", "p1s.token")).mode & 0o777).toBe(0o600);
    } finally {
      await web.stop();
    }
  });

  test("a Bambu printer's access code with user bblp opens that printer only", async () => {
    const login = basicAuth("bblp", P1S_CODE);
    expect(await names(url, login)).toEqual(["p1s"]);
    expect(await status(`${url}/`, login)).toBe(200);
    for (const path of cameraUrls("p1s")) {
      const response = await fetch(url + path, { headers: login });
      expect(`${path} ${response.status}`).toBe(`${path} 200`);
      await response.body?.cancel();
    }
    for (const path of [...cameraUrls("x1c"), ...cameraUrls("ad5m"), "/metrics"]) expect(`${path} ${await status(url + path, login)}`).toBe(`${path} 403`);
    // A printer that does not exist looks like one that is not opened: names are not given away.
    expect(await status(`${url}/printers/nosuch/snapshot.jpg`, login)).toBe(403);
    // The code with another user name, or the user with another printer's code, opens nothing.
    expect(await status(`${url}/api/printers`, basicAuth("admin", P1S_CODE))).toBe(401);
    expect(await status(`${url}/printers/p1s/snapshot.jpg`, basicAuth("bblp", X1C_CODE))).toBe(403);
    expect(await curlStatus(`${url}/printers/p1s/snapshot.jpg`, ["-u", `bblp:${P1S_CODE}`])).toBe("200");
  });

  test("a viewer access code opens its printer as the access code does", async () => {
    const viewer = basicAuth("bblp", X1C_VIEWER_CODE);
    expect(await names(url, viewer)).toEqual(["x1c"]);
    expect(await status(`${url}/printers/x1c/snapshot.jpg`, viewer)).toBe(200);
    expect(await status(`${url}/printers/p1s/snapshot.jpg`, viewer)).toBe(403);
    expect(await names(url, basicAuth("bblp", X1C_CODE))).toEqual(["x1c"]);
  });

  test("a FlashForge printer opens with its serial number as the user and its check code", async () => {
    const login = basicAuth(AD5M_SERIAL, AD5M_CHECK_CODE);
    expect(await names(url, login)).toEqual(["ad5m"]);
    expect(await status(`${url}/printers/ad5m/snapshot.jpg`, login)).toBe(200);
    expect(await status(`${url}/printers/p1s/snapshot.jpg`, login)).toBe(403);
    expect(await status(`${url}/api/printers`, basicAuth("bblp", AD5M_CHECK_CODE))).toBe(401);
  });

  test("the admin login opens every printer and /metrics", async () => {
    const admin = basicAuth(TEST_ADMIN.username, TEST_ADMIN.password);
    expect(await names(url, admin)).toEqual(["p1s", "x1c", "ad5m"]);
    for (const path of ["/", "/metrics", ...cameraUrls("ad5m").slice(0, 1), ...cameraUrls("x1c").slice(0, 1)]) expect(`${path} ${await status(url + path, admin)}`).toBe(`${path} 200`);
    expect(await status(`${url}/api/printers`, basicAuth(TEST_ADMIN.username, TEST_ADMIN.password + "x"))).toBe(401);
  });

  test("a camera token in ?token= opens that printer's MJPEG and snapshot URLs and nothing else", async () => {
    const file = join(tokensDir, "cameras", "p1s.token");
    const token = readFileSync(file, "utf8").trim();
    expect(token.length).toBeGreaterThanOrEqual(32);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(statSync(join(tokensDir, "cameras")).mode & 0o777).toBe(0o700);
    expect(statSync(tokensDir).mode & 0o777).toBe(0o700);
    const q = `?token=${encodeURIComponent(token)}`;
    // As Home Assistant's picture card or an NVR would use it: a bare URL, no headers.
    expect(await curlStatus(`${url}/printers/p1s/snapshot.jpg${q}`)).toBe("200");
    const stream = await fetch(`${url}/printers/p1s/camera.mjpeg${q}`);
    expect(stream.status).toBe(200);
    await stream.body?.cancel();
    for (const path of ["/", "/api/printers", "/metrics", "/printers/x1c/snapshot.jpg", "/printers/ad5m/camera.mjpeg"]) {
      expect(`${path} ${await status(url + path + q)}`).toBe(`${path} 401`);
    }
    expect(await status(`${url}/printers/p1s/snapshot.jpg?token=${token.slice(0, -1)}x`)).toBe(401);
    const other = readFileSync(join(tokensDir, "cameras", "x1c.token"), "utf8").trim();
    expect(other).not.toBe(token);
    expect(await status(`${url}/printers/p1s/snapshot.jpg?token=${other}`)).toBe(401);
  });

  test("the camera token stays the same across a restart", async () => {
    const token = readFileSync(join(tokensDir, "cameras", "p1s.token"), "utf8").trim();
    const again = await startTestWeb([printer("p1s", feeds[0], { accessCode: P1S_CODE })], { host: "127.0.27.2", tokensDir });
    try {
      expect(await status(`${again.url}/printers/p1s/snapshot.jpg?token=${token}`)).toBe(200);
      expect(readFileSync(join(tokensDir, "cameras", "p1s.token"), "utf8").trim()).toBe(token);
    } finally {
      await again.web.stop();
    }
  });

  test("/metrics takes the metrics token as a bearer token; the bearer token opens nothing else", async () => {
    const file = join(tokensDir, "metrics.token");
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const bearer = { Authorization: `Bearer ${readFileSync(file, "utf8").trim()}` };
    const metrics = await fetch(`${url}/metrics`, { headers: bearer });
    expect(metrics.status).toBe(200);
    expect(await metrics.text()).toContain("pandaproxy_web_viewers");
    expect(await curlStatus(`${url}/metrics`, ["-H", `Authorization: ${bearer.Authorization}`])).toBe("200");
    expect(await status(`${url}/api/printers`, bearer)).toBe(401);
    expect(await status(`${url}/printers/p1s/snapshot.jpg`, bearer)).toBe(401);
    expect(await status(`${url}/metrics`, { Authorization: "Bearer not-the-token-at-all-000000" })).toBe(401);
  });

  test("a refused login is logged with the peer and without what was typed", async () => {
    const logs = captureLogs();
    try {
      await status(`${url}/printers/p1s/snapshot.jpg`, basicAuth("bblp", "guess1234"));
      await status(`${url}/api/printers`, basicAuth("P1Scode1", "oops-user-field"));
    } finally {
      logs.stop();
    }
    const refused = logs.lines.filter((l) => l.includes("web login refused"));
    expect(refused).toHaveLength(2);
    expect(refused[0]).toMatch(/WARN  \[p1s\/web\] 127\.0\.0\.1:\d+ web login refused: a wrong password for user "bblp"$/);
    expect(refused[1]).toMatch(/127\.0\.0\.1:\d+ web login refused: an unknown user name$/);
    for (const line of logs.lines) for (const secret of ["guess1234", "oops-user-field", P1S_CODE]) expect(line).not.toContain(secret);
  });
});

describe("[web] open = true", () => {
  test("serves everything without credentials and says so at start", async () => {
    setupLogging("info", { quiet: true });
    const feed = createTestFeed();
    feed.publish();
    const logs = captureLogs();
    const { web, url } = await startTestWeb([printer("p1s", feed, {})], { host: "127.0.27.3", open: true });
    try {
      logs.stop();
      const warning = logs.lines.find((l) => l.includes("[web] open = true"));
      expect(warning).toMatch(/WARN .*served to anyone who can reach 127\.0\.27\.3:\d+, without credentials/);
      for (const path of ["/", "/api/printers", "/metrics", "/printers/p1s/snapshot.jpg"]) expect(`${path} ${await status(url + path)}`).toBe(`${path} 200`);
    } finally {
      logs.stop();
      await web.stop();
      feed.stop();
    }
  });

  test("a closed web page logs no such warning", async () => {
    setupLogging("info", { quiet: true });
    const logs = captureLogs();
    const { web } = await startTestWeb([], { host: "127.0.27.4" });
    logs.stop();
    await web.stop();
    expect(logs.lines.some((l) => l.includes("web page on http://127.0.27.4"))).toBe(true);
    expect(logs.lines.some((l) => l.includes("open = true"))).toBe(false);
  });

  test("config: open is a boolean of [web], false by default; the tokens live in <state_dir>/tokens", () => {
    const printerText = `[[printer]]\nname = "a"\nhost = "192.168.1.5"\nserial = "01P00A000000001"\naccess_code = "12345678"\n`;
    const closed = parseConfig(`[proxy]\nstate_dir = "/srv/pp"\n` + printerText);
    expect(closed.web.open).toBe(false);
    expect(closed.web.tokensDir).toBe("/srv/pp/tokens");
    expect(parseConfig(`[web]\nopen = true\n` + printerText).web.open).toBe(true);
    expect(() => parseConfig(`[web]\nopen = "yes"\n` + printerText, "p.toml")).toThrow(ConfigErrors);
    try {
      parseConfig(`[web]\nopen = "yes"\nopn = true\n` + printerText, "p.toml");
    } catch (error) {
      expect((error as ConfigErrors).problems).toEqual([
        'p.toml: [web] key "opn" is unknown (did you mean "open"?)',
        'p.toml: [web] key "open" must be true or false (no quotes), not "yes"',
      ]);
    }
  });
});

describe("failed logins are limited per source address", () => {
  const LOCKOUT_MS = 1_500;
  let web: WebServer;
  let url: string;
  const feed = createTestFeed();

  beforeAll(async () => {
    setupLogging("info", { quiet: true });
    feed.publish();
    ({ web, url } = await startTestWeb([printer("p1s", feed, { accessCode: P1S_CODE })], {
      host: "127.0.27.5",
      loginLimit: { failuresAllowed: 3, windowMs: 10_000, lockoutMs: LOCKOUT_MS },
    }));
  });
  afterAll(async () => {
    await web.stop();
    feed.stop();
  });

  test("after 3 failures the address gets 429 even with the right code, other addresses do not, and it ends", async () => {
    const right = ["-u", `bblp:${P1S_CODE}`];
    const from = (source: string) => ["--interface", source];
    // Requests without any credentials (a browser's first try) are not failures.
    for (let i = 0; i < 5; i++) expect(await curlStatus(`${url}/api/printers`, from("127.0.27.6"))).toBe("401");
    expect(await curlStatus(`${url}/api/printers`, [...from("127.0.27.6"), ...right])).toBe("200");
    const logs = captureLogs();
    try {
      for (let i = 0; i < 3; i++) expect(await curlStatus(`${url}/api/printers`, [...from("127.0.27.6"), "-u", `bblp:wrong00${i}`])).toBe("401");
      expect(await curlStatus(`${url}/api/printers`, [...from("127.0.27.6"), ...right])).toBe("429");
      expect(await curlStatus(`${url}/printers/p1s/snapshot.jpg`, from("127.0.27.6"))).toBe("429");
      const head = await curl(["-i", ...from("127.0.27.6"), ...right, `${url}/`]);
      expect(head).toMatch(/^HTTP\/1\.1 429/);
      expect(head).toMatch(/retry-after: [12]\r\n/i);
      expect(head).toContain("too many failed logins from 127.0.27.6");
      // Another address is not affected.
      expect(await curlStatus(`${url}/api/printers`, [...from("127.0.27.7"), ...right])).toBe("200");
    } finally {
      logs.stop();
    }
    expect(logs.lines.filter((l) => l.includes("web login refused"))).toHaveLength(3);
    expect(logs.lines.filter((l) => l.includes("too many failed web logins from 127.0.27.6"))).toHaveLength(1);
    await Bun.sleep(LOCKOUT_MS + 200);
    expect(await curlStatus(`${url}/api/printers`, [...from("127.0.27.6"), ...right])).toBe("200");
  }, 20_000);
});

describe("the failed-login count", () => {
  test("counts only failures within the window, locks for the lockout time, and remembers a bounded number of addresses", () => {
    let now = 0;
    const limit = createLoginLimit({ failuresAllowed: 3, windowMs: 1_000, lockoutMs: 5_000, maxAddresses: 2 }, () => now);
    // Three failures spread wider than the window never lock.
    for (const t of [0, 600, 1_200, 1_800]) {
      now = t;
      expect(limit.failed("10.0.0.1")).toBe(false);
    }
    expect(limit.lockedFor("10.0.0.1")).toBe(0);
    now = 2_000;
    expect(limit.failed("10.0.0.1")).toBe(true); // 1_200, 1_800 and 2_000 are within one window
    expect(limit.lockedFor("10.0.0.1")).toBe(5_000);
    now = 6_999;
    expect(limit.lockedFor("10.0.0.1")).toBe(1);
    now = 7_000;
    expect(limit.lockedFor("10.0.0.1")).toBe(0);
    // A third address pushes out the one touched longest ago.
    limit.failed("10.0.0.1");
    limit.failed("10.0.0.1");
    limit.failed("10.0.0.2");
    limit.failed("10.0.0.3");
    expect(limit.failed("10.0.0.1")).toBe(false); // its two earlier failures were forgotten
  });
});

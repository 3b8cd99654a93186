// The Home Assistant add-on folder: config.yaml checked against the Supervisor's add-on schema (the required keys
// and the value rules below are those of home-assistant/supervisor supervisor/addons/validate.py, options.py and
// const.py), build.yaml likewise, and options-to-toml.sh run with the real jq on the default options and on
// options using every schema key, its printers.toml accepted by `pandaproxy check` and parsed back unchanged.
import { afterAll, describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parse as parseToml } from "smol-toml";

const ROOT = join(import.meta.dir, "..");
const ADDON = join(ROOT, "ha-addon");
const BUN = join(ROOT, "node_modules/.bin/bun");
const version = (JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { version: string }).version;
const dir = mkdtempSync(join(tmpdir(), "pp-ha-addon-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

// From the Supervisor: const.py ARCH_ALL, RE_SLUG, options.py RE_SCHEMA_ELEMENT, validate.py (docker_image,
// RE_DOCKER_IMAGE_BUILD, the startup/boot values, the map types).
const ARCH_ALL = ["aarch64", "amd64", "armhf", "armv7", "i386"];
const RE_SLUG = /^[-_.A-Za-z0-9]+$/;
const RE_SCHEMA_ELEMENT =
  /^(?:|bool|email|url|port|device(?:\((?:subsystem=[a-z]+)\))?|str(?:\((?:\d+)?,(?:\d+)?\))?|password(?:\((?:\d+)?,(?:\d+)?\))?|int(?:\((?:-?\d+)?,(?:-?\d+)?\))?|float(?:\((?:-?\d*\.?\d+)?,(?:-?\d*\.?\d+)?\))?|match\((?:.*)\)|list\((?:.+)\))\??$/;
const RE_DOCKER_IMAGE = /^([a-zA-Z\-.:\d{}]+\/)*?([\-\w{}]+)\/([\-\w{}]+)$/;
const RE_DOCKER_IMAGE_BUILD = /^([a-zA-Z\-.:\d{}]+\/)*?([\-\w{}]+)\/([\-\w{}]+)(:[.\-\w{}]+)?$/;
const STARTUP = ["initialize", "system", "services", "application", "once"];
const BOOT = ["auto", "manual", "manual_only"];
const MAP_TYPES = ["data", "config", "ssl", "addons", "backup", "share", "media", "homeassistant_config", "all_addon_configs", "addon_config"];
const REQUIRED = ["name", "version", "slug", "description", "arch"] as const;

type Schema = string | Schema[] | { [key: string]: Schema };
const config = Bun.YAML.parse(readFileSync(join(ADDON, "config.yaml"), "utf8")) as Record<string, unknown> & { options: Record<string, unknown>; schema: Record<string, Schema> };

/** Problems of a value against a schema element, as the Supervisor's options validation sees them. */
function conform(value: unknown, schema: Schema, at: string): string[] {
  if (Array.isArray(schema)) {
    if (!Array.isArray(value)) return [`${at} must be a list`];
    return value.flatMap((item, i) => conform(item, schema[0]!, `${at}[${i}]`));
  }
  if (typeof schema === "object") {
    if (typeof value !== "object" || value === null) return [`${at} must be a mapping`];
    const problems = Object.keys(value).filter((k) => !(k in schema)).map((k) => `${at}.${k} is not in the schema`);
    for (const [key, element] of Object.entries(schema)) {
      const v = (value as Record<string, unknown>)[key];
      if (v === undefined) {
        if (typeof element !== "string" || !element.endsWith("?")) problems.push(`${at}.${key} is required`);
      } else problems.push(...conform(v, element, `${at}.${key}`));
    }
    return problems;
  }
  const type = schema.replace(/\?$/, "");
  if (type.startsWith("list(")) return type.slice(5, -1).split("|").includes(String(value)) ? [] : [`${at} is not one of ${type}`];
  if (type.startsWith("match(")) return new RegExp(`^(?:${type.slice(6, -1)})$`).test(String(value)) ? [] : [`${at} does not match ${type}`];
  if (type.startsWith("str") || type.startsWith("password")) return typeof value === "string" ? [] : [`${at} must be a string`];
  if (type === "bool") return typeof value === "boolean" ? [] : [`${at} must be true or false`];
  if (type.startsWith("int") || type === "port") return Number.isInteger(value) ? [] : [`${at} must be a whole number`];
  return [`${at}: schema type ${type} is not checked here`];
}
function elements(schema: Schema): string[] {
  return Array.isArray(schema) ? schema.flatMap(elements) : typeof schema === "object" ? Object.values(schema).flatMap(elements) : [schema];
}

function toToml(options: unknown): { code: number | null; toml: string; stderr: string } {
  const file = join(dir, `options-${Math.random().toString(36).slice(2)}.json`);
  writeFileSync(file, JSON.stringify(options));
  const r = spawnSync("sh", [join(ADDON, "options-to-toml.sh"), file], { encoding: "utf8", timeout: 10_000 });
  return { code: r.status, toml: r.stdout, stderr: r.stderr };
}
function check(toml: string) {
  const file = join(dir, "printers.toml");
  // state_dir "/data" is the add-on's; `check` only reads it when asked for certificates.
  writeFileSync(file, toml);
  const r = spawnSync(BUN, [join(ROOT, "main.ts"), "check", "--config", file], { encoding: "utf8", timeout: 30_000 });
  return { code: r.status, out: r.stdout + r.stderr };
}

describe("ha-addon/config.yaml against the Supervisor's add-on schema", () => {
  test("the required keys are there with valid values; the version is package.json's", () => {
    for (const key of REQUIRED) expect(config[key], `config.yaml needs "${key}"`).toBeDefined();
    expect(typeof config.name).toBe("string");
    expect(config.version).toBe(version);
    expect(config.slug).toMatch(RE_SLUG);
    expect(typeof config.description).toBe("string");
    expect((config.arch as string[]).length).toBeGreaterThan(0);
    for (const arch of config.arch as string[]) expect(ARCH_ALL).toContain(arch);
    expect(config.arch).toEqual(["amd64", "aarch64"]); // the two builds that exist (no 32-bit ARM)
  });

  test("host networking, a valid image reference, startup, boot, map and ports", () => {
    expect(config.host_network).toBe(true);
    expect(config.image).toMatch(RE_DOCKER_IMAGE);
    expect(String(config.image)).toContain("{arch}");
    expect(STARTUP).toContain(String(config.startup));
    expect(BOOT).toContain(String(config.boot));
    for (const m of config.map as { type: string }[]) expect(MAP_TYPES).toContain(m.type);
    expect(config.webui).toMatch(/^(?:https?|\[PROTO:\w+\]):\/\/\[HOST\]:\[PORT:\d+\].*$/);
    const timeout = config.timeout as number;
    expect(timeout >= 10 && timeout <= 300).toBe(true);
    const build = Bun.YAML.parse(readFileSync(join(ADDON, "build.yaml"), "utf8")) as { build_from: Record<string, string> };
    expect(Object.keys(build.build_from).sort()).toEqual([...(config.arch as string[])].sort());
    for (const image of Object.values(build.build_from)) expect(image).toMatch(RE_DOCKER_IMAGE_BUILD);
  });

  test("every schema element is one the Supervisor accepts, and the default options conform to the schema", () => {
    for (const element of elements(config.schema)) expect(element).toMatch(RE_SCHEMA_ELEMENT);
    expect(conform(config.options, config.schema, "options")).toEqual([]);
    // The checker itself refuses what the Supervisor would.
    expect(conform({ ...config.options, log_level: "loud" }, config.schema, "options")).toEqual(["options.log_level is not one of list(debug|info|warn|error)"]);
    expect(conform({ ...config.options, printers: [{ name: "a b" }] }, config.schema, "options")).toContain("options.printers[0].name does not match match(^[A-Za-z0-9_-]{1,32}$)");
  });
});

describe("ha-addon/options-to-toml.sh", () => {
  test("the default options become a printers.toml that pandaproxy check accepts", () => {
    const r = toToml(config.options);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    const checked = check(r.toml);
    expect(checked.out).toContain("OK, 1 printer");
    expect(checked.out).toContain("mqtt tcp 192.168.1.201:8883");
    expect(checked.code).toBe(0);
  });

  test("every schema key is carried over, FlashForge codes as check_code, and strings survive quotes and backslashes", () => {
    const options = {
      web_listen: "0.0.0.0:8081",
      web_username: "admin",
      web_password: 'pa"ss\\word\n$(x)',
      log_level: "debug",
      printers: [
        { name: "x1c", type: "bambu", host: "192.168.1.100", serial: "00M09A350100123", access_code: "12345678", bind: "192.168.1.201", model: "X1C", viewer_access_code: "87654321" },
        { name: "ad5m", type: "flashforge", host: "192.168.1.60", serial: "SNMOMC9900001", access_code: "a1b2c3d4", bind: "192.168.1.202" },
      ],
    };
    expect(conform(options, config.schema, "options")).toEqual([]);
    const r = toToml(options);
    expect(r.code).toBe(0);
    const checked = check(r.toml);
    expect(checked.out).toContain("OK, 2 printers");
    expect(checked.code).toBe(0);
    expect(parseToml(r.toml)).toEqual({
      proxy: { state_dir: "/data", log_level: "debug" },
      web: { listen: "0.0.0.0:8081", username: "admin", password: 'pa"ss\\word\n$(x)' },
      printer: [
        { name: "x1c", type: "bambu", host: "192.168.1.100", serial: "00M09A350100123", access_code: "12345678", bind: "192.168.1.201", model: "X1C", viewer_access_code: "87654321" },
        { name: "ad5m", type: "flashforge", host: "192.168.1.60", serial: "SNMOMC9900001", check_code: "a1b2c3d4", bind: "192.168.1.202" },
      ],
    });
  });

  test("a wrong option is named by pandaproxy check; a missing options file is a clear error", () => {
    const bad = toToml({ ...config.options, printers: [{ ...(config.options.printers as object[])[0], access_code: "short" }] });
    expect(bad.code).toBe(0);
    const checked = check(bad.toml);
    expect(checked.code).toBe(2);
    expect(checked.out).toContain('printer "p1s": key "access_code" must be the 8 letters or digits');
    const missing = spawnSync("sh", [join(ADDON, "options-to-toml.sh"), join(dir, "nope.json")], { encoding: "utf8" });
    expect(missing.status).toBe(1);
    expect(missing.stderr).toContain("options-to-toml.sh: cannot read");
  });
});

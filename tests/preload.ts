// Loaded before every test file (bunfig.toml):
// - Every temporary file of the run goes into one directory, removed after the last test file: TMPDIR points
//   there, so tmpdir() here and in every child (FFmpeg, vsftpd, `bun main.ts`, Chromium) lands in it. `exit`
//   handlers do not run under bun test (they left a state directory in /tmp per test process); a preload's
//   afterAll runs once, after every file. Like /tmp itself it is 1777: vsftpd and the container's user reach it.
// - A test that parses a config without state_dir gets a temporary default state directory (lib/config.ts
//   defaultStateDir reads STATE_DIRECTORY, as systemd sets it), so tests never write the real /var/lib/pandaproxy
//   or ~/.local/state/pandaproxy (certificates, pinned printer keys).
import { afterAll } from "bun:test";
import { chmodSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const run = mkdtempSync(join(tmpdir(), "pp-tests-"));
chmodSync(run, 0o1777);
process.env.TMPDIR = run;
if (!process.env.STATE_DIRECTORY) {
  const state = join(run, "default-state");
  mkdirSync(state, { mode: 0o700 });
  process.env.STATE_DIRECTORY = state;
}
afterAll(() => rmSync(run, { recursive: true, force: true }));

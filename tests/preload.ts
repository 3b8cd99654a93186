// Loaded before every test file (bunfig.toml): a test that parses a config without state_dir gets a temporary
// default state directory (lib/config.ts defaultStateDir reads STATE_DIRECTORY, as systemd sets it), so tests
// never write the real /var/lib/pandaproxy or ~/.local/state/pandaproxy (certificates, pinned printer keys).
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

if (!process.env.STATE_DIRECTORY) {
  const dir = mkdtempSync(join(tmpdir(), "pp-default-state-"));
  process.env.STATE_DIRECTORY = dir;
  process.once("exit", () => rmSync(dir, { recursive: true, force: true }));
}

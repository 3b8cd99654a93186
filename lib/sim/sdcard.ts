// The simulated printer's SD card: one directory, served over FTPS and read by `project_file`, holding the
// folders a real card has. A print job names its file by URL; `cardPathOfUrl` turns that into a card path.
import { mkdirSync, mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, posix } from "node:path";

/** Folders seen on printers' cards (docs/protocol-notes.md, "Simulated SD card"). */
export const SD_CARD_FOLDERS = ["cache", "image", "logger", "model", "timelapse"] as const;

/** The URL prefixes a `project_file` command uses for a file on the card, longest first. */
const CARD_URL_PREFIXES = ["file:///mnt/sdcard/", "file:///sdcard/", "ftp:///"] as const;

export interface SdCard {
  /** The directory that is the card's "/". */
  readonly root: string;
  /** The host path of a card path ("/cache/x.3mf"); never outside the card. */
  hostPath(cardPath: string): string;
  /** True when the card holds a file (not a folder) at this card path. */
  hasFile(cardPath: string): boolean;
  /** Removes the card's directory when the card made it. */
  remove(): void;
}

/** A card in `root` (made as a temporary directory when not given), with its folders created. */
export function openSdCard(root?: string): SdCard {
  const made = !root;
  const dir = root ?? mkdtempSync(join(tmpdir(), "pandaproxy-sim-sdcard-"));
  for (const folder of SD_CARD_FOLDERS) mkdirSync(join(dir, folder), { recursive: true });
  const hostPath = (cardPath: string) => join(dir, posix.resolve("/", cardPath));
  return {
    root: dir,
    hostPath,
    hasFile: (cardPath) => {
      try {
        return statSync(hostPath(cardPath)).isFile();
      } catch {
        return false;
      }
    },
    remove: () => {
      if (made) rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** "ftp:///cache/x.3mf", "file:///sdcard/x.3mf" -> "/cache/x.3mf", "/x.3mf"; undefined for any other URL. */
export function cardPathOfUrl(url: string): string | undefined {
  const prefix = CARD_URL_PREFIXES.find((p) => url.startsWith(p));
  if (!prefix) return undefined;
  let rest: string;
  try {
    rest = decodeURIComponent(url.slice(prefix.length));
  } catch {
    return undefined;
  }
  return rest ? posix.resolve("/", rest) : undefined;
}

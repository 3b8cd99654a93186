// The web's random tokens, kept in <state_dir>/tokens: one camera token per printer (for tools that can only
// take a URL: `?token=` on its MJPEG and snapshot URLs) and one bearer token for /metrics. Each is made on first
// use, written 0600, and stays the same across restarts; delete a file to get a new token.
import { randomBytes } from "node:crypto";
import { chmodSync, chownSync, linkSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { registerSecret } from "../log.ts";

/** Random bytes per token (192 bits; 32 characters of base64url). */
export const TOKEN_BYTES = 24;
/** A token file shorter than this was not written by us (or was cut short): refused rather than a weak token accepted. */
export const MIN_TOKEN_LENGTH = 16;

const cameraFile = (printer: string) => join("cameras", `${printer}.token`);
const METRICS_FILE = "metrics.token";

export const cameraTokenPath = (tokensDir: string, printer: string) => join(tokensDir, cameraFile(printer));
export const metricsTokenPath = (tokensDir: string) => join(tokensDir, METRICS_FILE);

export const cameraToken = (tokensDir: string, printer: string) => ensureToken(tokensDir, cameraFile(printer));
export const metricsToken = (tokensDir: string) => ensureToken(tokensDir, METRICS_FILE);

/** The token in tokensDir/name, made first when there is none. Throws an error naming the file and what to do. */
function ensureToken(tokensDir: string, name: string): string {
  const file = join(tokensDir, name);
  let token: string | undefined;
  try {
    token = readFileSync(file, "utf8").trim();
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code !== "ENOENT") throw new Error(`cannot read the token file ${file} (${code ?? (error as Error).message}): run as the user pandaproxy runs as, or as root`);
  }
  // Two processes making the same token at once (the service and `pandaproxy urls`) both end up with the first one.
  if (token === undefined) token = writeToken(tokensDir, file) ?? readFileSync(file, "utf8").trim();
  if (token.length < MIN_TOKEN_LENGTH) throw new Error(`the token file ${file} holds a token of ${token.length} characters; delete the file and a new token is made`);
  registerSecret(token);
  return token;
}

/** The new token, or undefined when another process wrote the file first. */
function writeToken(tokensDir: string, file: string): string | undefined {
  const token = randomBytes(TOKEN_BYTES).toString("base64url");
  const temporary = `${file}.${process.pid}.tmp`;
  try {
    mkdirSync(tokensDir, { recursive: true, mode: 0o700 });
    mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
    writeFileSync(temporary, token + "\n", { mode: 0o600 });
    chmodSync(temporary, 0o600); // the umask could have narrowed it, never widened: this is for an existing file
    ownLikeStateDir(tokensDir, [tokensDir, dirname(file), temporary]);
    linkSync(temporary, file);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "EEXIST") return undefined;
    throw new Error(`cannot write the token file ${file} (${(error as NodeJS.ErrnoException).code ?? (error as Error).message}): check that state_dir is writable by this user`);
  } finally {
    rmSync(temporary, { force: true });
  }
  return token;
}

/**
 * Run as root (`sudo pandaproxy urls` before the service ever started), a new token file would belong to root
 * and the service's own user could not read it: it gets the owner of state_dir instead.
 */
function ownLikeStateDir(tokensDir: string, paths: string[]): void {
  if (process.getuid?.() !== 0) return;
  const owner = statSync(dirname(tokensDir));
  if (owner.uid === 0) return;
  for (const path of paths) chownSync(path, owner.uid, owner.gid);
}

// A real vsftpd (Debian 3.0.3) configured like a Bambu printer's: implicit TLS on 990, require_ssl_reuse,
// max_clients 2, passive data only, user bblp with the access code. Run as a child process by the interop tests
// and bench/ftp.ts. Needs root (port 990, PAM, chroot).
//
// Why it is set up this way (each found by trying):
// - The password is checked by pam_userdb against a Berkeley DB written with perl's DB_File (libperl). pam_exec
//   cannot be used: vsftpd's privileged parent takes the SIGCHLD of pam_exec's helper for its session child and
//   blocks in wait4(-1) forever, so PASS never gets an answer. No system user is needed: a guest login mapped
//   to `daemon` (a user whose home exists), chrooted into the served directory.
// - 3.0.3 has no ssl_tlsv1_1/ssl_tlsv1_2 options (vsftpd exits 2 on them): ssl_tlsv1=YES with SSLv2/3 off.
// - seccomp_sandbox=NO and isolate(_network)=NO: the sandbox and namespaces fail inside containers.
import { spawn, type ChildProcess } from "node:child_process";
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { makeCa, makeLeaf } from "../lib/tls.ts";

export const VSFTPD_START_TIMEOUT_MS = 5_000;
export const VSFTPD_STOP_TIMEOUT_MS = 2_000;
/** The guest login's files belong to this user (uid/gid of Debian's `daemon`). */
const GUEST_USER = "daemon";
const GUEST_UID = 1;
const GUEST_GID = 1;
const SECURE_CHROOT_DIR = "/var/run/vsftpd/empty";

export interface PrinterLikeVsftpd {
  host: string;
  port: number;
  /** The served directory ("/" of every FTP session): uploads land here. */
  root: string;
  /** PEM of the CA that signed vsftpd's certificate (for printer_ca). */
  caCert: string;
  /** A file holding caCert. */
  caFile: string;
  /** vsftpd's protocol log so far (passwords are masked by vsftpd). */
  log(): string;
  stop(): Promise<void>;
}

export interface VsftpdOptions {
  host: string;
  port?: number;
  accessCode: string;
  /** vsftpd's max_clients (printers: 2). */
  maxClients?: number;
  /** Passive data ports (pasv_min_port-pasv_max_port). */
  pasvPorts?: { first: number; last: number };
  /** Printers refuse PORT/EPRT; allow them only to compare clients' active mode against a plain vsftpd. */
  allowActive?: boolean;
  serial?: string;
}

export async function startPrinterLikeVsftpd(options: VsftpdOptions): Promise<PrinterLikeVsftpd> {
  const port = options.port ?? 990;
  const pasv = options.pasvPorts ?? { first: 40000, last: 40099 };
  const dir = mkdtempSync(join(tmpdir(), "pandaproxy-vsftpd-"));
  chmodSync(dir, 0o755);
  const root = join(dir, "sdcard");
  mkdirSync(root);
  chownSync(root, GUEST_UID, GUEST_GID);
  mkdirSync(SECURE_CHROOT_DIR, { recursive: true });

  const ca = makeCa("BBL CA", "BBL Technologies Co., Ltd");
  const leaf = makeLeaf(ca, options.serial ?? "01P00A000000001", { dns: ["localhost"], ips: [options.host] });
  const caFile = join(dir, "ca.pem");
  writeFileSync(caFile, ca.cert);
  writeFileSync(join(dir, "cert.pem"), leaf.cert + ca.cert);
  writeFileSync(join(dir, "key.pem"), leaf.key, { mode: 0o600 });

  // pam_userdb appends ".db" to the name it is given. The code travels in the environment, never in argv.
  const users = join(dir, "users");
  const perl = Bun.spawnSync(["perl", "-MDB_File", "-MFcntl", "-e",
    'tie my %h, "DB_File", $ARGV[0], O_RDWR|O_CREAT, 0600, $DB_HASH or die "$!\\n"; $h{bblp} = $ENV{CODE}; untie %h',
    `${users}.db`], { env: { ...process.env, CODE: options.accessCode }, stderr: "pipe" });
  if (perl.exitCode !== 0) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`cannot write vsftpd's user database with perl DB_File: ${perl.stderr.toString().trim()}`);
  }
  const pamName = `pandaproxy-vsftpd-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
  const pamFile = `/etc/pam.d/${pamName}`;
  writeFileSync(pamFile, `auth required pam_userdb.so db=${users}\naccount required pam_permit.so\n`);
  const cleanup = () => {
    rmSync(pamFile, { force: true });
    rmSync(dir, { recursive: true, force: true });
  };

  const logFile = join(dir, "vsftpd.log");
  const conf = join(dir, "vsftpd.conf");
  writeFileSync(conf, [
    "listen=YES", "listen_ipv6=NO", `listen_address=${options.host}`, `listen_port=${port}`, "background=NO",
    "anonymous_enable=NO", "local_enable=YES", "write_enable=YES", "local_umask=022",
    "guest_enable=YES", `guest_username=${GUEST_USER}`, "virtual_use_local_privs=YES", `local_root=${root}`,
    "chroot_local_user=YES", "allow_writeable_chroot=YES", `secure_chroot_dir=${SECURE_CHROOT_DIR}`,
    `pam_service_name=${pamName}`, `max_clients=${options.maxClients ?? 2}`, "max_per_ip=0",
    `port_enable=${options.allowActive ? "YES" : "NO"}`,
    "pasv_enable=YES", `pasv_address=${options.host}`, `pasv_min_port=${pasv.first}`, `pasv_max_port=${pasv.last}`,
    "ssl_enable=YES", "implicit_ssl=YES", "require_ssl_reuse=YES", "force_local_logins_ssl=YES", "force_local_data_ssl=YES",
    "ssl_tlsv1=YES", "ssl_sslv2=NO", "ssl_sslv3=NO", "ssl_ciphers=HIGH",
    `rsa_cert_file=${join(dir, "cert.pem")}`, `rsa_private_key_file=${join(dir, "key.pem")}`,
    "seccomp_sandbox=NO", "isolate=NO", "isolate_network=NO", "dirmessage_enable=NO",
    "xferlog_enable=YES", "log_ftp_protocol=YES", `vsftpd_log_file=${logFile}`,
    "idle_session_timeout=300", "data_connection_timeout=60", "",
  ].join("\n"));

  // Its own process group: session processes are vsftpd's children and must go when it stops.
  const child: ChildProcess = spawn("vsftpd", [conf], { stdio: ["ignore", "pipe", "pipe"], detached: true });
  let output = "";
  child.stderr?.on("data", (b: Buffer) => (output += b.toString()));
  child.stdout?.on("data", (b: Buffer) => (output += b.toString()));
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const killGroup = (signal: NodeJS.Signals) => {
    try {
      if (child.pid) process.kill(-child.pid, signal);
    } catch {
      // already gone
    }
  };

  const deadline = Date.now() + VSFTPD_START_TIMEOUT_MS;
  for (;;) {
    const up = await new Promise<boolean>((resolve) => {
      const s = connect(port, options.host, () => (s.destroy(), resolve(true)));
      s.on("error", () => resolve(false));
    });
    if (up) break;
    if (child.exitCode !== null || Date.now() > deadline) {
      killGroup("SIGKILL");
      cleanup();
      throw new Error(`vsftpd did not start on ${options.host}:${port}: ${output.trim() || `exit ${child.exitCode}`}`);
    }
    await Bun.sleep(50);
  }

  return {
    host: options.host,
    port,
    root,
    caCert: ca.cert,
    caFile,
    log: () => (existsSync(logFile) ? readFileSync(logFile, "utf8") : ""),
    async stop() {
      killGroup("SIGTERM");
      await Promise.race([exited, Bun.sleep(VSFTPD_STOP_TIMEOUT_MS)]);
      killGroup("SIGKILL");
      cleanup();
    },
  };
}

// Squid (Debian's squid-openssl, 5.x) as the bench's third proxy: transparent interception of http and
// of https with ssl-bump, making the same allow/418 decision as tproxy's and mitmproxy's filters.
// Squid drops root for its `proxy` user, so everything it writes lives in a folder that user owns.
import { execFileSync } from "node:child_process";
import { chmodSync, chownSync, mkdirSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export const SQUID_HTTP_PORT = 8082;
export const SQUID_HTTPS_PORT = 8083;
const CERTGEN = "/usr/lib/squid/security_file_certgen";
const USER = "proxy";

export interface SquidSetup {
  dir: string;
  caCert: string;
  caKey: string;
  publicCa: string;
  /** POSIX extended regular expression of the URLs that may pass (Squid's url_regex). */
  allowed: string;
  uid: number;
  gid: number;
  starts: number;
}

function idOf(flag: "-u" | "-g"): number {
  try {
    return Number(execFileSync("id", [flag, USER], { stdio: ["ignore", "pipe", "ignore"] }).toString().trim());
  } catch {
    throw new Error(`squid: no "${USER}" user on this machine (the squid-openssl package creates it; Squid will not run as root)`);
  }
}

/**
 * Makes Squid's folder and CA. The CA key is EC P-256 because Squid's generated host certificates reuse
 * the signing key: the client then does the same ECDSA P-256 handshake as against tproxy's leaves.
 */
export function prepareSquid(baseDir: string, publicCa: string, allowed: string): SquidSetup {
  const uid = idOf("-u"), gid = idOf("-g");
  // The bench's temp folder is root's 0700; Squid's user must be able to pass through it (not list it).
  chmodSync(baseDir, 0o711);
  const dir = join(baseDir, "squid");
  mkdirSync(dir, { recursive: true });
  const caCert = join(dir, "squid-ca.pem"), caKey = join(dir, "squid-ca.key");
  execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", caKey, "-out", caCert,
    "-days", "30", "-subj", "/CN=squid bench CA/O=tproxy bench", "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
  { stdio: ["ignore", "ignore", "pipe"] });
  const setup: SquidSetup = { dir, caCert, caKey, publicCa, allowed, uid, gid, starts: 0 };
  chownTree(setup, dir);
  return setup;
}

function chownTree(s: SquidSetup, path: string): void {
  chownSync(path, s.uid, s.gid);
  for (const e of readdirSync(path, { withFileTypes: true })) {
    if (e.isDirectory()) chownTree(s, join(path, e.name));
    else chownSync(join(path, e.name), s.uid, s.gid);
  }
}

/**
 * Writes the configuration for the next start, with a fresh certificate database: a restarted Squid is
 * as cold as a restarted tproxy (the "first requests to 200 names" case mints every certificate anew).
 */
export function writeSquidConf(s: SquidSetup): string {
  s.starts += 1;
  const db = join(s.dir, `ssl_db.${s.starts}`);
  rmSync(join(s.dir, `ssl_db.${s.starts - 1}`), { recursive: true, force: true });
  rmSync(join(s.dir, "squid.pid"), { force: true });
  execFileSync(CERTGEN, ["-c", "-s", db, "-M", "4MB"], { stdio: ["ignore", "ignore", "pipe"] });
  chownTree(s, s.dir);
  const conf = join(s.dir, "squid.conf");
  writeFileSync(conf, squidConf(s, db));
  return conf;
}

export function squidConf(s: SquidSetup, db: string): string {
  return `# Squid for the tproxy bench: transparent interception (iptables REDIRECT 80 -> ${SQUID_HTTP_PORT}, 443 -> ${SQUID_HTTPS_PORT}),
# every https connection bumped, the same decision as the other proxies' filters.
http_port ${SQUID_HTTP_PORT} intercept
# Squid will not start without a forward-proxy port (it names its own internal URLs by it); this one is
# reachable from inside the node namespace only, and makes the same decision.
http_port 127.0.0.1:3128
https_port ${SQUID_HTTPS_PORT} intercept ssl-bump name=bumped tls-cert=${s.caCert} tls-key=${s.caKey} generate-host-certificates=on
sslcrtd_program ${CERTGEN} -s ${db} -M 4MB

# Peek at the TLS client hello (for SNI), then bump: Squid connects to the server, then gives the client
# a certificate it mints (mimicking the server's names) from its CA.
acl step1 at_step SslBump1
ssl_bump peek step1
ssl_bump bump all

# Upstream certificates are verified against the bench's stand-in for the public web PKI.
tls_outgoing_options cafile=${s.publicCa}
# The Host header (and SNI) must resolve to the address the client connected to.
host_verify_strict on

# The decision. An intercepted TLS connection first passes http_access as a fake CONNECT to the
# address; that one is allowed on the bumping port only, and each request inside it is checked by URL.
acl bumped_port myportname bumped
acl bucket url_regex ${s.allowed}
http_access allow CONNECT bumped_port
http_access deny !bucket
http_access allow all
deny_info 418:ERR_ACCESS_DENIED bucket

# A proxy, not a cache.
cache deny all
access_log none
cache_log ${s.dir}/cache.log
pid_filename ${s.dir}/squid.pid
coredump_dir ${s.dir}
cache_effective_user ${USER}
pinger_enable off
max_filedescriptors 16384
visible_hostname tproxy-bench-squid
shutdown_lifetime 1 seconds
`;
}

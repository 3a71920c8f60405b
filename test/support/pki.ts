// Test PKI: a stand-in for the public web PKI (a "public" CA that upstream servers' certificates chain
// to, trusted by the proxy through --upstream-ca) and a rogue CA nobody trusts.
import { generateKeyPairSync } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { buildCertificate, subjectNameOf } from "../../packages/tproxy/src/certs/x509.ts";

export interface Issued {
  certPath: string;
  keyPath: string;
}

export class TestCa {
  readonly certPath: string;
  readonly #key;
  readonly #certPem: string;
  readonly #dir: string;
  readonly #name: string;

  constructor(dir: string, name: string) {
    const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "prime256v1" });
    const now = Date.now();
    this.#key = privateKey;
    this.#dir = dir;
    this.#name = name;
    this.#certPem = buildCertificate({ commonName: name, organization: "tproxy tests", isCA: true, notBefore: new Date(now - 3600e3), notAfter: new Date(now + 30 * 86400e3), subjectKey: publicKey, issuerKey: privateKey });
    this.certPath = join(dir, `${name}.ca.pem`);
    writeFileSync(this.certPath, this.#certPem);
  }

  /** A server certificate for the given DNS names / IP addresses. */
  issue(label: string, altNames: string[]): Issued {
    const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "prime256v1" });
    const now = Date.now();
    const pem = buildCertificate({ commonName: altNames[0]!, altNames, isCA: false, notBefore: new Date(now - 3600e3), notAfter: new Date(now + 30 * 86400e3), subjectKey: publicKey, issuerKey: this.#key, issuerName: subjectNameOf(this.#certPem) });
    const certPath = join(this.#dir, `${this.#name}.${label}.pem`);
    const keyPath = join(this.#dir, `${this.#name}.${label}.key`);
    writeFileSync(certPath, pem);
    writeFileSync(keyPath, privateKey.export({ type: "pkcs8", format: "pem" }), { mode: 0o600 });
    return { certPath, keyPath };
  }
}

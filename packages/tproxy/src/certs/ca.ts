// The certificate authority: created by `tproxy ca create`, loaded by `tproxy run`.
import { generateKeyPairSync, type KeyObject } from "node:crypto";
import { writeFile, access } from "node:fs/promises";
import { constants } from "node:fs";
import { CertificateError } from "../errors.ts";
import { checkCaPem, readCaFiles } from "./check.ts";
import { buildCertificate, subjectNameOf } from "./x509.ts";
import type forge from "node-forge";

export interface CertificateAuthority {
  readonly certPem: string;
  readonly key: KeyObject;
  /** The CA's subject name, copied into every leaf as its issuer. */
  readonly name: forge.asn1.Asn1;
  readonly notAfter: Date;
}

export interface CreateCaOptions {
  commonName?: string;
  /** Validity in days; default 3650. */
  days?: number;
}

/** Makes a new RSA-2048 CA (key generated natively) and returns cert + key as PEM. */
export function createCa(options: CreateCaOptions = {}): { certPem: string; keyPem: string } {
  const { privateKey, publicKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
  const now = Date.now();
  const certPem = buildCertificate({
    commonName: options.commonName ?? "tproxy CA",
    organization: "tproxy",
    isCA: true,
    notBefore: new Date(now - 60 * 60 * 1000),
    notAfter: new Date(now + (options.days ?? 3650) * 24 * 60 * 60 * 1000),
    subjectKey: publicKey,
    issuerKey: privateKey,
  });
  return { certPem, keyPem: privateKey.export({ type: "pkcs8", format: "pem" }).toString() };
}

async function exists(path: string): Promise<boolean> {
  return access(path, constants.F_OK).then(() => true, () => false);
}

/** `tproxy ca create`: writes the CA files; refuses to overwrite either unless `force`. */
export async function writeCa(certPath: string, keyPath: string, options: CreateCaOptions & { force?: boolean } = {}): Promise<void> {
  if (!options.force) {
    for (const path of [certPath, keyPath]) {
      if (await exists(path)) throw new CertificateError(`${path} already exists; pass --force to overwrite it`);
    }
  }
  const { certPem, keyPem } = createCa(options);
  await writeFile(keyPath, keyPem, { mode: 0o600 });
  await writeFile(certPath, certPem, { mode: 0o644 });
}

/** Reads and checks a CA (see ./check.ts) and prepares it for signing leaf certificates. */
export async function loadCa(certPath: string, keyPath: string): Promise<CertificateAuthority> {
  const { certPem, key, notAfter } = await readCaFiles(certPath, keyPath);
  return { certPem, key, name: subjectNameOf(certPem), notAfter };
}

/** The same from PEM text already read (and checked) elsewhere: a reloaded CA handed to a serving thread. */
export function caFromPem(certPem: string, keyPem: string): CertificateAuthority {
  const { key, notAfter } = checkCaPem(certPem, keyPem, "CA certificate", "CA key");
  return { certPem, key, name: subjectNameOf(certPem), notAfter };
}

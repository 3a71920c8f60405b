// The certificate authority: created by `tproxy ca create`, loaded by `tproxy run`.
import { createPrivateKey, generateKeyPairSync, X509Certificate, type KeyObject } from "node:crypto";
import { readFile, writeFile, access } from "node:fs/promises";
import { constants } from "node:fs";
import { CertificateError } from "../errors.ts";
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

/** Reads and checks a CA: the key must match the certificate, which must be a CA and currently valid. */
export async function loadCa(certPath: string, keyPath: string): Promise<CertificateAuthority> {
  const [certPem, keyPem] = await Promise.all([
    readFile(certPath, "utf8").catch((err: unknown) => { throw new CertificateError(`cannot read CA certificate ${certPath}: ${(err as Error).message}`); }),
    readFile(keyPath, "utf8").catch((err: unknown) => { throw new CertificateError(`cannot read CA key ${keyPath}: ${(err as Error).message}`); }),
  ]);
  let x509: X509Certificate;
  let key: KeyObject;
  try {
    x509 = new X509Certificate(certPem);
  } catch (err) {
    throw new CertificateError(`${certPath} is not a PEM certificate: ${(err as Error).message}`);
  }
  try {
    key = createPrivateKey(keyPem);
  } catch (err) {
    throw new CertificateError(`${keyPath} is not a PEM private key: ${(err as Error).message}`);
  }
  if (!x509.ca) throw new CertificateError(`${certPath} is not a CA certificate (basicConstraints CA:TRUE missing)`);
  if (!x509.checkPrivateKey(key)) throw new CertificateError(`${keyPath} does not belong to the certificate ${certPath}`);
  const notAfter = new Date(x509.validTo);
  if (notAfter.getTime() < Date.now()) throw new CertificateError(`CA certificate ${certPath} expired on ${x509.validTo}`);
  if (key.asymmetricKeyType !== "rsa" && key.asymmetricKeyType !== "ec") {
    throw new CertificateError(`CA key type ${key.asymmetricKeyType} is not supported: use RSA or EC`);
  }
  return { certPem, key, name: subjectNameOf(certPem), notAfter };
}

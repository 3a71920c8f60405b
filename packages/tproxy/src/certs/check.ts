// Reading and checking CA files with Node's crypto alone (no node-forge), so that a process that only
// checks them (the supervisor, at start and when the mounted CA changes) does not load the certificate-building code.
import { createPrivateKey, X509Certificate, type KeyObject } from "node:crypto";
import { readFile } from "node:fs/promises";
import { CertificateError } from "../errors.ts";

export interface CaFiles {
  certPem: string;
  keyPem: string;
  key: KeyObject;
  notAfter: Date;
}

/** Reads and checks a CA: the key must match the certificate, which must be a CA and currently valid. */
export async function readCaFiles(certPath: string, keyPath: string): Promise<CaFiles> {
  const [certPem, keyPem] = await Promise.all([
    readFile(certPath, "utf8").catch((err: unknown) => { throw new CertificateError(`cannot read CA certificate ${certPath}: ${(err as Error).message}`); }),
    readFile(keyPath, "utf8").catch((err: unknown) => { throw new CertificateError(`cannot read CA key ${keyPath}: ${(err as Error).message}`); }),
  ]);
  return checkCaPem(certPem, keyPem, certPath, keyPath);
}

/** Checks a CA given as PEM text (`certPath`/`keyPath` name it in messages). */
export function checkCaPem(certPem: string, keyPem: string, certPath: string, keyPath: string): CaFiles {
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
  return { certPem, keyPem, key, notAfter };
}

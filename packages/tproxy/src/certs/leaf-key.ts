// The key every leaf certificate of a node certifies: one ECDSA P-256 key, made natively when the proxy
// starts and never written to disk. Apart from the certificate code, so that the supervisor, which makes
// it for all its serving threads, does not load node-forge.
import { generateKeyPairSync } from "node:crypto";

/** A new leaf key, as PKCS#8 PEM. */
export function newLeafKeyPem(): string {
  return generateKeyPairSync("ec", { namedCurve: "prime256v1" }).privateKey.export({ type: "pkcs8", format: "pem" }).toString();
}

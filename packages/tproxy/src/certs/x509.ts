// X.509 certificate building: node-forge lays out the ASN.1, Node's native crypto signs it.
// Signing natively keeps RSA/ECDSA private-key operations out of JavaScript (forge's RSA signing is
// tens of milliseconds per certificate), and lets the subject key be any type Node supports (the leaf
// key is ECDSA P-256, which forge cannot encode by itself).
import { createHash, createPublicKey, randomBytes, sign, type KeyObject } from "node:crypto";
import { isIP } from "node:net";
import forge from "node-forge";

const { asn1, pki } = forge;

const OID_SHA256_RSA = "1.2.840.113549.1.1.11";
const OID_ECDSA_SHA256 = "1.2.840.10045.4.3.2";

export interface CertificateSpec {
  /** Subject common name. */
  commonName: string;
  /** Organisation shown in the subject, if any. */
  organization?: string;
  /** DNS names and IP addresses for subjectAltName; leaf certificates only. */
  altNames?: readonly string[];
  isCA: boolean;
  notBefore: Date;
  notAfter: Date;
  /** The key the certificate certifies. */
  subjectKey: KeyObject;
  /** Signer: the CA's key and its subject name (for a self-signed CA: its own key, no issuer name). */
  issuerKey: KeyObject;
  issuerName?: forge.asn1.Asn1;
}

function signatureAlgorithm(key: KeyObject): { oid: string; node: forge.asn1.Asn1 } {
  const type = key.asymmetricKeyType;
  if (type === "rsa") {
    return {
      oid: OID_SHA256_RSA,
      node: asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SEQUENCE, true, [
        asn1.create(asn1.Class.UNIVERSAL, asn1.Type.OID, false, asn1.oidToDer(OID_SHA256_RSA).getBytes()),
        asn1.create(asn1.Class.UNIVERSAL, asn1.Type.NULL, false, ""),
      ]),
    };
  }
  if (type === "ec") {
    return {
      oid: OID_ECDSA_SHA256,
      node: asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SEQUENCE, true, [
        asn1.create(asn1.Class.UNIVERSAL, asn1.Type.OID, false, asn1.oidToDer(OID_ECDSA_SHA256).getBytes()),
      ]),
    };
  }
  throw new TypeError(`unsupported signing key type "${type}": use an RSA or EC key`);
}

/**
 * A key's identifier: SHA-1 of its SubjectPublicKeyInfo. A CA carries it as its subjectKeyIdentifier and
 * every leaf as its authorityKeyIdentifier, so that a client trusting two CAs of the same name (the old
 * and the new during a rotation) picks the one that signed the leaf.
 */
export function keyIdentifier(key: KeyObject): Buffer {
  const publicKey = key.type === "public" ? key : createPublicKey(key);
  return createHash("sha1").update(publicKey.export({ type: "spki", format: "der" })).digest();
}

function octets(bytes: Buffer): forge.asn1.Asn1 {
  return asn1.create(asn1.Class.UNIVERSAL, asn1.Type.OCTETSTRING, false, bytes.toString("binary"));
}

function ipToBytes(ip: string): string {
  if (isIP(ip) === 4) return String.fromCharCode(...ip.split(".").map(Number));
  // IPv6: expand "::" and write 16 bytes.
  const [head, tail] = ip.includes("::") ? ip.split("::") : [ip, undefined];
  const h = head ? head.split(":") : [];
  const t = tail ? tail.split(":") : [];
  const groups = tail === undefined ? h : [...h, ...Array(8 - h.length - t.length).fill("0"), ...t];
  return groups.map((g) => { const v = parseInt(g || "0", 16); return String.fromCharCode(v >> 8, v & 0xff); }).join("");
}

// forge's getTBSCertificate is public at runtime but missing from its type definitions.
const getTBSCertificate = (pki as unknown as { getTBSCertificate(c: forge.pki.Certificate): forge.asn1.Asn1 }).getTBSCertificate;

// forge lays out the TBSCertificate only around an RSA public key object; a dummy one serves, and the
// real SubjectPublicKeyInfo (from Node, any key type) is swapped in afterwards.
let placeholderKey: forge.pki.PublicKey | undefined;

/** Builds and signs a certificate; returns it as PEM. */
export function buildCertificate(spec: CertificateSpec): string {
  const cert = pki.createCertificate();
  cert.serialNumber = "01" + randomBytes(15).toString("hex"); // positive, 16 bytes
  cert.validity.notBefore = spec.notBefore;
  cert.validity.notAfter = spec.notAfter;
  const subject: forge.pki.CertificateField[] = [{ name: "commonName", value: spec.commonName }];
  if (spec.organization !== undefined) subject.push({ name: "organizationName", value: spec.organization });
  cert.setSubject(subject);
  cert.setIssuer(subject);

  const extensions: object[] = [];
  if (spec.isCA) {
    extensions.push({ name: "basicConstraints", cA: true, critical: true });
    extensions.push({ name: "keyUsage", keyCertSign: true, cRLSign: true, digitalSignature: true, critical: true });
    // subjectKeyIdentifier: OCTET STRING keyIdentifier
    extensions.push({ id: "2.5.29.14", value: asn1.toDer(octets(keyIdentifier(spec.subjectKey))).getBytes() });
  } else {
    extensions.push({ name: "basicConstraints", cA: false });
    extensions.push({ name: "keyUsage", digitalSignature: true, keyEncipherment: spec.subjectKey.asymmetricKeyType === "rsa", critical: true });
    extensions.push({ name: "extKeyUsage", serverAuth: true });
    extensions.push({
      name: "subjectAltName",
      altNames: (spec.altNames ?? [spec.commonName]).map((n) => (isIP(n) ? { type: 7, ip: n } : { type: 2, value: n })),
    });
    // authorityKeyIdentifier: SEQUENCE { [0] IMPLICIT keyIdentifier }
    const keyId = asn1.create(asn1.Class.CONTEXT_SPECIFIC, 0, false, keyIdentifier(spec.issuerKey).toString("binary"));
    extensions.push({ id: "2.5.29.35", value: asn1.toDer(asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SEQUENCE, true, [keyId])).getBytes() });
  }
  cert.setExtensions(extensions);

  placeholderKey ??= pki.rsa.setPublicKey(new forge.jsbn.BigInteger("c5", 16), new forge.jsbn.BigInteger("10001", 16));
  cert.publicKey = placeholderKey;
  const alg = signatureAlgorithm(spec.issuerKey);
  cert.siginfo.algorithmOid = alg.oid;
  cert.signatureOid = alg.oid;

  const tbs = getTBSCertificate(cert);
  const fields = tbs.value as forge.asn1.Asn1[];
  // TBSCertificate: [0] version, serial, signature, issuer, validity, subject, subjectPublicKeyInfo, [3] extensions
  fields[2] = alg.node;
  // The issuer name is copied byte for byte from the CA certificate, as chain building compares encodings.
  if (spec.issuerName) fields[3] = spec.issuerName;
  const publicKey = spec.subjectKey.type === "public" ? spec.subjectKey : createPublicKey(spec.subjectKey);
  const spki = publicKey.export({ type: "spki", format: "der" });
  fields[6] = asn1.fromDer(forge.util.createBuffer(spki.toString("binary")));
  fixIpAltNames(fields[7], spec.altNames);

  const tbsDer = Buffer.from(asn1.toDer(tbs).getBytes(), "binary");
  const signature = sign("sha256", tbsDer, spec.issuerKey);
  const certificate = asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SEQUENCE, true, [
    tbs,
    alg.node,
    asn1.create(asn1.Class.UNIVERSAL, asn1.Type.BITSTRING, false, "\x00" + signature.toString("binary")),
  ]);
  const der = asn1.toDer(certificate).getBytes();
  return `-----BEGIN CERTIFICATE-----\n${forge.util.encode64(der, 64)}\n-----END CERTIFICATE-----\n`;
}

// forge encodes IPv6 SANs only from its own parser; write the raw address bytes ourselves for both families.
function fixIpAltNames(extensionsNode: forge.asn1.Asn1 | undefined, altNames: readonly string[] | undefined): void {
  if (!extensionsNode || !altNames?.some((n) => isIP(n))) return;
  const seq = (extensionsNode.value as forge.asn1.Asn1[])[0];
  for (const ext of seq.value as forge.asn1.Asn1[]) {
    const parts = ext.value as forge.asn1.Asn1[];
    if (asn1.derToOid(forge.util.createBuffer(parts[0].value as string)) !== "2.5.29.17") continue;
    const names = altNames.map((n) =>
      isIP(n)
        ? asn1.create(asn1.Class.CONTEXT_SPECIFIC, 7, false, ipToBytes(n))
        : asn1.create(asn1.Class.CONTEXT_SPECIFIC, 2, false, n),
    );
    const value = asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SEQUENCE, true, names);
    parts[parts.length - 1] = asn1.create(asn1.Class.UNIVERSAL, asn1.Type.OCTETSTRING, false, asn1.toDer(value).getBytes());
  }
}

/** The subject name of a PEM certificate, as its ASN.1 node (whatever its key type). */
export function subjectNameOf(pem: string): forge.asn1.Asn1 {
  const der = forge.pem.decode(pem)[0]?.body;
  if (der === undefined) throw new TypeError("no PEM certificate found");
  const cert = asn1.fromDer(forge.util.createBuffer(der));
  const tbs = (cert.value as forge.asn1.Asn1[])[0];
  return (tbs.value as forge.asn1.Asn1[])[5];
}

// Leaf certificates for intercepted names. One ECDSA P-256 key, made natively at start and never written
// to disk, serves every leaf; certificates are minted on first use, signed by the CA, and kept in memory
// as ready TLS contexts (least recently used evicted first).
import { generateKeyPairSync, randomBytes, type KeyObject } from "node:crypto";
import { createSecureContext, type SecureContext } from "node:tls";
import type { CertificateAuthority } from "./ca.ts";
import { buildCertificate } from "./x509.ts";

const DAY = 24 * 60 * 60 * 1000;

export interface LeafCacheOptions {
  /** Most contexts kept; default 10,000. */
  maxEntries?: number;
  /** Validity of a minted certificate in days; default 90 (re-minted after half of it). */
  validityDays?: number;
  /** 48 bytes of TLS session-ticket keys; shared by the workers of one node. Default: random. */
  ticketKeys?: Buffer;
}

interface Entry {
  context: SecureContext;
  renewAt: number;
}

export class LeafCertificates {
  readonly #ca: CertificateAuthority;
  readonly #publicKey: KeyObject;
  readonly #privateKeyPem: string;
  readonly #entries = new Map<string, Entry>();
  readonly #max: number;
  readonly #validityMs: number;
  readonly #ticketKeys: Buffer;
  hits = 0;
  misses = 0;

  constructor(ca: CertificateAuthority, options: LeafCacheOptions = {}) {
    this.#ca = ca;
    const { publicKey, privateKey } = generateKeyPairSync("ec", { namedCurve: "prime256v1" });
    this.#publicKey = publicKey;
    this.#privateKeyPem = privateKey.export({ type: "pkcs8", format: "pem" }).toString();
    this.#max = options.maxEntries ?? 10_000;
    this.#validityMs = (options.validityDays ?? 90) * DAY;
    this.#ticketKeys = options.ticketKeys ?? randomBytes(48);
  }

  get size(): number {
    return this.#entries.size;
  }

  /** The TLS context presenting a certificate for `name` (a DNS name or an IP address). */
  contextFor(name: string): SecureContext {
    const key = name.toLowerCase();
    const now = Date.now();
    const entry = this.#entries.get(key);
    if (entry && entry.renewAt > now) {
      this.hits += 1;
      this.#entries.delete(key); // re-insert: most recently used last
      this.#entries.set(key, entry);
      return entry.context;
    }
    this.misses += 1;
    const fresh = this.#mint(key, now);
    this.#entries.delete(key);
    this.#entries.set(key, fresh);
    if (this.#entries.size > this.#max) {
      const oldest = this.#entries.keys().next().value;
      if (oldest !== undefined) this.#entries.delete(oldest);
    }
    return fresh.context;
  }

  /** The PEM certificate currently served for `name` (minting it if needed); for tests and debugging. */
  certificatePem(name: string): string {
    return this.#mintPem(name.toLowerCase(), Date.now());
  }

  #mintPem(name: string, now: number): string {
    const notAfter = Math.min(now + this.#validityMs, this.#ca.notAfter.getTime());
    return buildCertificate({
      commonName: name,
      altNames: [name],
      isCA: false,
      notBefore: new Date(now - DAY),
      notAfter: new Date(notAfter),
      subjectKey: this.#publicKey,
      issuerKey: this.#ca.key,
      issuerName: this.#ca.name,
    });
  }

  #mint(name: string, now: number): Entry {
    const cert = this.#mintPem(name, now);
    const context = createSecureContext({
      key: this.#privateKeyPem,
      cert,
      // Session tickets let clients resume without a full handshake; the keys live in memory only.
      ticketKeys: this.#ticketKeys,
    } as Parameters<typeof createSecureContext>[0]);
    return { context, renewAt: now + this.#validityMs / 2 };
  }
}

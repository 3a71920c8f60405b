// Leaf certificates for intercepted names. One ECDSA P-256 key, made natively at start and never written
// to disk, serves every leaf; certificates are minted on first use, signed by the CA, and kept in memory
// as ready TLS contexts (least recently used evicted first). Serving threads share the key and the
// certificates: what one thread mints it tells the others (a BroadcastChannel), which then only build a
// TLS context from it when they first need it, instead of signing again.
import { createPrivateKey, createPublicKey, randomBytes, type KeyObject } from "node:crypto";
import { newLeafKeyPem } from "./leaf-key.ts";
import { createSecureContext, type SecureContext } from "node:tls";
import type { CertificateAuthority } from "./ca.ts";
import { buildCertificate } from "./x509.ts";

const DAY = 24 * 60 * 60 * 1000;

export interface LeafCacheOptions {
  /** Most contexts kept; default 10,000. */
  maxEntries?: number;
  /** Validity of a minted certificate in days; default 90 (re-minted after half of it). */
  validityDays?: number;
  /** 48 bytes of TLS session-ticket keys; shared by the serving threads of one node. Default: random. */
  ticketKeys?: Buffer;
  /** The leaf key (PKCS#8 PEM), shared by the serving threads of one node. Default: a new one. */
  leafKeyPem?: string;
  /** Where minted certificates are announced to, and heard from, the other threads. */
  share?: CertificateShare;
}

/** A minted certificate, as the threads tell each other about it. */
export interface SharedLeaf {
  name: string;
  cert: string;
  renewAt: number;
  /** The CA that signed it (its certificate, PEM): a leaf of a CA no longer in force is not taken. */
  ca: string;
}

/** The channel the threads announce minted certificates on (a BroadcastChannel in the proxy). */
export interface CertificateShare {
  postMessage(leaf: SharedLeaf): void;
  onmessage: ((event: { data: SharedLeaf }) => void) | null;
}



interface Entry {
  context: SecureContext;
  renewAt: number;
}

export class LeafCertificates {
  #ca: CertificateAuthority;
  readonly #publicKey: KeyObject;
  readonly #privateKeyPem: string;
  readonly #entries = new Map<string, Entry>();
  readonly #max: number;
  readonly #validityMs: number;
  readonly #ticketKeys: Buffer;
  readonly #share: CertificateShare | undefined;
  /** Certificates other threads minted, not yet needed here (bounded like the contexts). */
  readonly #heard = new Map<string, SharedLeaf>();
  hits = 0;
  misses = 0;
  /** Lookups answered from a certificate another thread minted. */
  shared = 0;

  constructor(ca: CertificateAuthority, options: LeafCacheOptions = {}) {
    this.#ca = ca;
    this.#privateKeyPem = options.leafKeyPem ?? newLeafKeyPem();
    this.#publicKey = createPublicKey(createPrivateKey(this.#privateKeyPem));
    this.#max = options.maxEntries ?? 10_000;
    this.#validityMs = (options.validityDays ?? 90) * DAY;
    this.#ticketKeys = options.ticketKeys ?? randomBytes(48);
    this.#share = options.share;
    if (this.#share) {
      this.#share.onmessage = ({ data }) => {
        if (this.#entries.has(data.name) || data.ca !== this.#ca.certPem) return;
        this.#heard.delete(data.name);
        this.#heard.set(data.name, data);
        if (this.#heard.size > this.#max) this.#heard.delete(this.#heard.keys().next().value!);
      };
    }
  }

  /**
   * Signs with `ca` from now on (the CA was rotated): every certificate of the old one is forgotten, so
   * the next connection to each name gets one the pods' new trust bundle accepts.
   */
  setCa(ca: CertificateAuthority): void {
    this.#ca = ca;
    this.#entries.clear();
    this.#heard.clear();
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
    const heard = this.#heard.get(key);
    this.#heard.delete(key);
    let fresh: Entry;
    if (heard && heard.renewAt > now) {
      this.shared += 1;
      fresh = { context: this.#context(heard.cert), renewAt: heard.renewAt };
    } else {
      fresh = this.#mint(key, now);
    }
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
    const renewAt = now + this.#validityMs / 2;
    this.#share?.postMessage({ name, cert, renewAt, ca: this.#ca.certPem });
    return { context: this.#context(cert), renewAt };
  }

  #context(cert: string): SecureContext {
    return createSecureContext({
      key: this.#privateKeyPem,
      cert,
      // Session tickets let clients resume without a full handshake; the keys live in memory only.
      ticketKeys: this.#ticketKeys,
    } as Parameters<typeof createSecureContext>[0]);
  }
}

import { expect } from "chai";
import { X509Certificate } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createCa, loadCa, writeCa } from "../src/certs/ca.ts";
import { LeafCertificates } from "../src/certs/leaf-cache.ts";
import { CertificateError } from "../src/errors.ts";

describe("certificates", () => {
  let dir: string;
  beforeEach(() => { dir = mkdtempSync(join(tmpdir(), "tproxy-certs-")); });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it("creates a CA that OpenSSL-backed X509 accepts, key mode 0600, and refuses to overwrite it", async () => {
    const cert = join(dir, "ca.pem");
    const key = join(dir, "ca.key");
    await writeCa(cert, key);
    const x = new X509Certificate(readFileSync(cert));
    expect(x.ca).to.equal(true);
    expect(x.verify(x.publicKey)).to.equal(true);
    expect(statSync(key).mode & 0o777).to.equal(0o600);
    await writeCa(cert, key).then(() => expect.fail("overwrote"), (e: unknown) => expect(String(e)).to.match(/already exists; pass --force/));
    await writeCa(cert, key, { force: true });
  });

  it("mints leaf certificates signed by the CA for names and IP addresses, and caches them", async () => {
    const { certPem, keyPem } = createCa();
    writeFileSync(join(dir, "ca.pem"), certPem);
    writeFileSync(join(dir, "ca.key"), keyPem);
    const ca = await loadCa(join(dir, "ca.pem"), join(dir, "ca.key"));
    const leafs = new LeafCertificates(ca, { maxEntries: 2 });
    const caX = new X509Certificate(certPem);
    for (const name of ["www.example.com", "192.0.2.7", "2001:db8::1"]) {
      const leaf = new X509Certificate(leafs.certificatePem(name));
      expect(leaf.verify(caX.publicKey), name).to.equal(true);
      expect(leaf.checkIssued(caX)).to.equal(true);
      expect(leaf.ca).to.equal(false);
      if (name.includes(".") && !/^\d/.test(name)) expect(leaf.checkHost(name)).to.equal(name);
      else expect(leaf.checkIP(name)).to.equal(name);
      expect(leaf.publicKey.asymmetricKeyType).to.equal("ec");
    }
    const a = leafs.contextFor("a.example");
    expect(leafs.contextFor("A.example")).to.equal(a);
    leafs.contextFor("b.example");
    leafs.contextFor("c.example"); // evicts a.example (least recently used)
    expect(leafs.size).to.equal(2);
    expect(leafs.contextFor("a.example")).to.not.equal(a);
    expect(leafs.hits).to.equal(1);
  });

  it("rejects a key that does not belong to the certificate, and a non-CA certificate", async () => {
    const one = createCa();
    const two = createCa();
    writeFileSync(join(dir, "ca.pem"), one.certPem);
    writeFileSync(join(dir, "other.key"), two.keyPem);
    await loadCa(join(dir, "ca.pem"), join(dir, "other.key")).then(() => expect.fail("accepted"), (e: unknown) => {
      expect(e).to.be.instanceOf(CertificateError);
      expect(String(e)).to.match(/does not belong to the certificate/);
    });
    await loadCa(join(dir, "missing.pem"), join(dir, "other.key")).then(() => expect.fail("accepted"), (e: unknown) => expect(String(e)).to.match(/cannot read CA certificate .*missing\.pem/));
  });
});

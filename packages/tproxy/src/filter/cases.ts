// The case file of `tproxy filter test` (YAML or JSON): requests to run through a filter offline, and what the
// filter must make of them. Read whole and checked before any case runs, so that a typo in a field is an error
// naming the case and the field, never a case that passes because it checks nothing.
import { readFile } from "node:fs/promises";
import { parse as parseYaml } from "yaml";
import { ConfigError } from "../errors.ts";

/** An expected header value: exact text, a regular expression to match, or null for "absent". */
export type HeaderExpectation = string | { matches: string } | null;

export interface TestCase {
  name: string;
  request: {
    method: string;
    /** Absolute http(s) URL: scheme, host, port and path of the request. */
    url: URL;
    /** Path and query exactly as written (URL would resolve "..": the proxy's own normalisation is under test). */
    target: string;
    /** Lower-case names. The Host header comes from `url`. */
    headers: Record<string, string>;
    /** Passed to `flow.client` as given (address and port default to a pod's). */
    client: Record<string, unknown> & { address: string; port: number };
    body: string | undefined;
  };
  /** The upstream's answer, for the response hook; without it the response hook does not run. */
  response: { status: number; headers: Record<string, string>; body: string | undefined } | undefined;
  expect: {
    /** "pass": the request goes upstream (also under audit); a number: the status the filter answers. */
    status: "pass" | number;
    /** Body of the filter's answer. */
    body: string | undefined;
    /** Headers the client gets: of the filter's answer, or of the upstream's after the response hook. */
    headers: Record<string, HeaderExpectation> | undefined;
    /** Request headers sent upstream. */
    upstreamHeaders: Record<string, HeaderExpectation> | undefined;
    /** The reason of a would-deny (flow.audit, or --audit); `true`: any reason. Absent: no would-deny. */
    audit: string | true | undefined;
  };
}

const CASE_KEYS = ["name", "request", "response", "expect"];
const REQUEST_KEYS = ["method", "url", "headers", "client", "body"];
const RESPONSE_KEYS = ["status", "headers", "body"];
const EXPECT_KEYS = ["status", "body", "headers", "upstreamHeaders", "audit"];

type Obj = Record<string, unknown>;

function isObject(v: unknown): v is Obj {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

function kind(v: unknown): string {
  return v === null ? "null" : Array.isArray(v) ? "a list" : typeof v;
}

/** Reads and checks a case file; throws ConfigError naming the file, the case and the field. */
export async function readCases(path: string): Promise<TestCase[]> {
  const text = await readFile(path, "utf8").catch((err: NodeJS.ErrnoException) => {
    throw new ConfigError(`cannot read case file ${path}: ${err.code ?? err.message}`);
  });
  let doc: unknown;
  try {
    doc = path.endsWith(".json") ? JSON.parse(text) : parseYaml(text);
  } catch (err) {
    throw new ConfigError(`${path}: not valid ${path.endsWith(".json") ? "JSON" : "YAML"}: ${(err as Error).message}`);
  }
  return parseCases(doc, path);
}

/** Checks a parsed case file: a list of cases, or an object whose `cases` is one. */
export function parseCases(doc: unknown, file: string): TestCase[] {
  const list = isObject(doc) && Object.keys(doc).length === 1 && "cases" in doc ? doc.cases : doc;
  if (!Array.isArray(list)) throw new ConfigError(`${file}: expected a list of cases (or "cases:" holding one), found ${kind(list)}`);
  if (list.length === 0) throw new ConfigError(`${file}: no cases`);
  const names = new Set<string>();
  return list.map((raw, i) => {
    const label = isObject(raw) && typeof raw.name === "string" ? `case ${i + 1} "${raw.name}"` : `case ${i + 1}`;
    const fail = (field: string, what: string): never => {
      throw new ConfigError(`${file}: ${label}: ${field}: ${what}`);
    };
    if (!isObject(raw)) return fail("(case)", `must be a mapping with name, request and expect, found ${kind(raw)}`);
    const c = parseCase(raw, fail);
    if (names.has(c.name)) fail("name", `"${c.name}" is the name of an earlier case too`);
    names.add(c.name);
    return c;
  });
}

type Fail = (field: string, what: string) => never;

function known(o: Obj, keys: readonly string[], where: string, fail: Fail): void {
  for (const k of Object.keys(o)) {
    if (!keys.includes(k)) fail(where === "" ? k : `${where}.${k}`, `unknown field (known: ${keys.join(", ")})`);
  }
}

function text(v: unknown, field: string, fail: Fail): string {
  if (typeof v !== "string") fail(field, `must be text, found ${kind(v)}`);
  return v as string;
}

function status(v: unknown, field: string, fail: Fail): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < 100 || v > 999) fail(field, `must be an HTTP status (100-999), found ${JSON.stringify(v)}`);
  return v as number;
}

function headerMap(v: unknown, field: string, fail: Fail): Record<string, string> {
  if (!isObject(v)) return fail(field, `must be a mapping of header names to values, found ${kind(v)}`);
  const out: Record<string, string> = {};
  for (const [k, val] of Object.entries(v)) {
    if (typeof val !== "string" && typeof val !== "number") fail(`${field}.${k}`, `must be text, found ${kind(val)}`);
    out[k.toLowerCase()] = String(val);
  }
  return out;
}

function expectedHeaders(v: unknown, field: string, fail: Fail): Record<string, HeaderExpectation> {
  if (!isObject(v)) return fail(field, `must be a mapping of header names to values, found ${kind(v)}`);
  const out: Record<string, HeaderExpectation> = {};
  for (const [k, val] of Object.entries(v)) {
    const f = `${field}.${k}`;
    if (val === null || typeof val === "string") out[k.toLowerCase()] = val;
    else if (typeof val === "number") out[k.toLowerCase()] = String(val);
    else if (isObject(val) && Object.keys(val).length === 1 && typeof val.matches === "string") {
      try {
        new RegExp(val.matches);
      } catch (err) {
        fail(`${f}.matches`, `not a regular expression: ${(err as Error).message}`);
      }
      out[k.toLowerCase()] = { matches: val.matches };
    } else fail(f, `must be text, null (absent) or { matches: <regular expression> }, found ${kind(val)}`);
  }
  return out;
}

function parseCase(raw: Obj, fail: Fail): TestCase {
  known(raw, CASE_KEYS, "", fail);
  const name = text(raw.name, "name", fail);
  if (name.trim() === "") fail("name", "must not be empty");

  if (!isObject(raw.request)) return fail("request", `must be a mapping with at least url, found ${kind(raw.request)}`);
  const r = raw.request;
  known(r, REQUEST_KEYS, "request", fail);
  const method = r.method === undefined ? "GET" : text(r.method, "request.method", fail);
  if (!/^[A-Za-z]+$/.test(method)) fail("request.method", `"${method}" is not an HTTP method`);
  const rawUrl = text(r.url, "request.url", fail);
  let url: URL;
  try {
    url = new URL(rawUrl);
  } catch {
    return fail("request.url", `"${rawUrl}" is not an absolute URL (e.g. https://example.com/path)`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") fail("request.url", `"${rawUrl}" must be http:// or https://`);
  // Path and query as written, fragment dropped (a client never sends it).
  const target = /^https?:\/\/[^/?#]*([^#]*)/i.exec(rawUrl)?.[1] || "/";
  const headers = r.headers === undefined ? {} : headerMap(r.headers, "request.headers", fail);
  let client: TestCase["request"]["client"] = { address: "10.0.0.2", port: 40000 };
  if (r.client !== undefined) {
    if (!isObject(r.client)) fail("request.client", `must be a mapping (address, port, pod), found ${kind(r.client)}`);
    const given = r.client as Obj;
    if (given.address !== undefined) text(given.address, "request.client.address", fail);
    if (given.port !== undefined && (typeof given.port !== "number" || !Number.isInteger(given.port))) fail("request.client.port", `must be a port number, found ${JSON.stringify(given.port)}`);
    client = { ...client, ...given } as TestCase["request"]["client"];
  }
  const body = r.body === undefined ? undefined : text(r.body, "request.body", fail);

  let response: TestCase["response"];
  if (raw.response !== undefined) {
    if (!isObject(raw.response)) fail("response", `must be a mapping (status, headers, body), found ${kind(raw.response)}`);
    const u = raw.response as Obj;
    known(u, RESPONSE_KEYS, "response", fail);
    response = {
      status: u.status === undefined ? 200 : status(u.status, "response.status", fail),
      headers: u.headers === undefined ? {} : headerMap(u.headers, "response.headers", fail),
      body: u.body === undefined ? undefined : text(u.body, "response.body", fail),
    };
  }

  if (!isObject(raw.expect)) return fail("expect", `must be a mapping with at least status, found ${kind(raw.expect)}`);
  const e = raw.expect;
  known(e, EXPECT_KEYS, "expect", fail);
  if (e.status === undefined) fail("expect.status", 'missing: "pass" (the request goes upstream) or the status the filter answers');
  const expectedStatus = e.status === "pass" ? "pass" : typeof e.status === "number" ? status(e.status, "expect.status", fail) : fail("expect.status", `must be "pass" or an HTTP status, found ${JSON.stringify(e.status)}`);
  const audit = e.audit === undefined ? undefined : e.audit === true ? true : text(e.audit, "expect.audit", fail);
  if (audit !== undefined && expectedStatus !== "pass") fail("expect.audit", 'a would-deny request goes upstream: expect.status must be "pass"');
  return {
    name,
    request: { method: method.toUpperCase(), url, target: target.startsWith("/") ? target : `/${target}`, headers, client, body },
    response,
    expect: {
      status: expectedStatus,
      body: e.body === undefined ? undefined : text(e.body, "expect.body", fail),
      headers: e.headers === undefined ? undefined : expectedHeaders(e.headers, "expect.headers", fail),
      upstreamHeaders: e.upstreamHeaders === undefined ? undefined : expectedHeaders(e.upstreamHeaders, "expect.upstreamHeaders", fail),
      audit,
    },
  };
}

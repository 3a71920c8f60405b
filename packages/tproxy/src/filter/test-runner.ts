// `tproxy filter test`: runs the requests of a case file through a filter offline, with the proxy's own parts:
// the same compile step, the same FilterHost and flow, and decide() (server/decide.ts) for the target, the Host
// and the path normalisation. No network: the upstream's answer, when a case gives one, is the case's.
// What it leaves out: the address policy (it judges resolved addresses, not the filter) and the relays.
import { isIP } from "node:net";
import { Readable } from "node:stream";
import { BodyTap, DEFAULT_MAX_BODY_BYTES, refusalAnswer } from "../server/body.ts";
import { decide, type FilterOutcome } from "../server/decide.ts";
import { DEFAULT_TARGET_RULES, type ConnectionInfo } from "../server/target.ts";
import type { HeaderExpectation, TestCase } from "./cases.ts";
import { compileFilter } from "./compile.ts";
import { FilterHost, type FilterLogLine, type FilterVersion } from "./host.ts";
import { judge, runHook, wouldDenyReason, type Judgement } from "./judge.ts";
import type { BodySource, FlowData, HookName } from "./protocol.ts";
import type { Headers } from "./types.ts";

/** What the filter made of one case, as the proxy would have acted on it. */
export interface Outcome {
  /** "pass": forwarded (and, with a response, the upstream's answer went back); "answer": the filter (or proxy) answered. */
  kind: "pass" | "answer";
  /** The answer's status (kind "answer"), or the upstream's (kind "pass" with a response). */
  status: number | undefined;
  body: string | undefined;
  /** Why the request was answered, or would have been (the proxy's log reason). */
  reason: string | undefined;
  /** Set when the filter answered under audit: the reason given to flow.audit (or "filter-audit"). */
  audit: string | undefined;
  /** What the would-deny would have answered. */
  auditStatus: number | undefined;
  /** Headers the client gets. */
  headers: Headers;
  /** Request headers sent upstream (kind "pass"). */
  upstreamHeaders: Headers | undefined;
  /** Lines the filter logged during the case. */
  logs: FilterLogLine[];
  /** A hook that threw or timed out: what it said. */
  error: string | undefined;
}

export interface CaseResult {
  name: string;
  outcome: Outcome;
  /** One line per difference from what the case expects; empty: ok. */
  mismatches: string[];
}

export interface RunOptions {
  /** Like `tproxy run --filter-audit`. */
  audit?: boolean;
  /** Like `--filter-timeout`. */
  timeoutMs?: number;
  /** Like `--on-filter-error`. */
  onFilterError?: "deny" | "allow";
  /** Like `--max-body`: a whole-body read of a larger body refuses the message, as in the proxy. */
  maxBodyBytes?: number;
}

/** What the proxy answers when a hook fails and --on-filter-error is deny (interceptor.ts). */
const FILTER_ERROR_BODY = "tproxy: the filter failed on this request; request denied (see the proxy's log)\n";

/** Where the case's names are headed, for a name (the address the policy would see is beside the point here). */
const NAMED_DESTINATION = "203.0.113.1";

function connectionOf(c: TestCase): ConnectionInfo {
  const tls = c.request.url.protocol === "https:";
  const host = c.request.url.hostname.replace(/^\[|\]$/g, "");
  const port = Number(c.request.url.port || (tls ? 443 : 80));
  return {
    mode: "transparent",
    tls,
    client: { address: c.request.client.address, port: c.request.client.port },
    destination: { address: isIP(host) ? host : NAMED_DESTINATION, port },
    sni: tls && isIP(host) === 0 ? host : undefined,
  };
}

/** Runs each case; the filter is compiled and loaded once. Throws FilterLoadError when it does not load. */
export async function runCases(filterPath: string, cases: readonly TestCase[], options: RunOptions = {}): Promise<CaseResult[]> {
  let logs: FilterLogLine[] = [];
  const host = new FilterHost({ timeoutMs: options.timeoutMs ?? 100, log: (l) => logs.push(l) });
  try {
    const version = await host.load(await compileFilter(filterPath));
    const results: CaseResult[] = [];
    let n = 0;
    for (const c of cases) {
      logs = [];
      const outcome = await runCase(host, version, c, `case-${++n}`, options);
      outcome.logs = logs;
      results.push({ name: c.name, outcome, mismatches: compare(c, outcome) });
    }
    return results;
  } finally {
    await host.close();
  }
}

async function runCase(host: FilterHost, version: FilterVersion, c: TestCase, id: string, options: RunOptions): Promise<Outcome> {
  const conn = connectionOf(c);
  const url = c.request.url;
  const out: Outcome = { kind: "pass", status: undefined, body: undefined, reason: undefined, audit: undefined, auditStatus: undefined, headers: {}, upstreamHeaders: undefined, logs: [], error: undefined };
  let flow: FlowData | undefined;
  let audit: string | undefined;
  // The proxy's body reader over the case's bytes: the same limit, the same refusal.
  const maxBytes = options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
  const taps: Partial<Record<HookName, BodyTap>> = {};
  const bodySource = (name: HookName, text: string): BodySource => {
    const tap = (taps[name] = new BodyTap(Readable.from([Buffer.from(text)]), { which: name, maxBytes }));
    return (want) => tap.read(want);
  };

  // The proxy's run and judgement of each hook (filter/judge.ts), recorded for the report.
  const judgeOptions = { filterAudit: options.audit ?? false, onFilterError: options.onFilterError ?? "deny" } as const;
  const hook = async (name: HookName): Promise<Judgement> => {
    const ran = await runHook((v, n, f) => host.run(v, n, f), version, name, flow!);
    if (ran.failure !== undefined) {
      out.reason = ran.failure;
      out.error = `${name} hook failed: ${ran.error!.message}`;
    }
    taps[name]?.release();
    const j = judge(ran, taps[name]?.refusal, audit, judgeOptions);
    if (j.kind === "pass" && j.wouldDeny) {
      out.audit = j.wouldDeny.why;
      out.auditStatus = j.wouldDeny.answer.status;
      out.reason = wouldDenyReason(j.wouldDeny);
    }
    return j;
  };
  const answered = (status: number, body: string | Uint8Array, headers: Headers, reason: string): Outcome => {
    Object.assign(out, { kind: "answer", status, body: typeof body === "string" ? body : Buffer.from(body).toString(), headers, reason });
    return out;
  };

  const filter = async (target: Parameters<Parameters<typeof decide>[2]["filter"]>[0], headers: Headers): Promise<FilterOutcome> => {
    flow = {
      id,
      // As given, so that fields the case adds (e.g. the pod) reach the flow.
      client: c.request.client,
      destination: conn.destination,
      sni: conn.sni === undefined ? undefined : target.host,
      request: { method: c.request.method, scheme: target.scheme, host: target.host, port: target.port, path: target.path, url: target.url, headers },
    };
    if (c.request.body !== undefined) flow.request.body = bodySource("request", c.request.body);
    const j = await hook("request");
    audit = j.audit;
    switch (j.kind) {
      case "answer": return { kind: "answer", answer: j.answer, reason: "filter" };
      case "failed": return { kind: "answer", answer: { status: 403, body: FILTER_ERROR_BODY, headers: {} }, reason: j.failure };
      case "body": return { kind: "answer", answer: refusalAnswer("request", j.refusal, maxBytes), reason: `body: ${j.refusal.kind}` };
      case "pass": return { kind: "pass", headers: j.headers ?? headers };
    }
  };

  const headers: Record<string, string> = { ...c.request.headers, host: url.host };
  const d = await decide(
    { method: c.request.method, url: c.request.target, headers, upgrade: false },
    conn,
    { rules: DEFAULT_TARGET_RULES, policy: { classify: () => ({ allowed: true }) }, probeAddress: "255.255.255.255", filter },
  );
  if (d.kind === "answer") return answered(d.answer.status, d.answer.body, d.answer.headers, d.reason);
  out.upstreamHeaders = d.headers;
  if (c.response === undefined) return out;

  flow!.response = { status: c.response.status, headers: { ...c.response.headers } };
  if (c.response.body !== undefined) flow!.response.body = bodySource("response", c.response.body);
  const j = await hook("response");
  switch (j.kind) {
    case "answer": return answered(j.answer.status, j.answer.body, j.answer.headers, "filter, response hook");
    case "failed": return answered(403, FILTER_ERROR_BODY, {}, j.failure);
    case "body": {
      const a = refusalAnswer("response", j.refusal, maxBytes);
      return answered(a.status, a.body, a.headers, `body: ${j.refusal.kind}`);
    }
    case "pass": break;
  }
  out.status = c.response.status;
  out.body = c.response.body;
  out.headers = j.headers ?? flow!.response.headers;
  return out;
}

function headerText(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v.join(", ") : v;
}

function checkHeaders(what: string, expected: Record<string, HeaderExpectation>, actual: Headers, out: string[]): void {
  for (const [name, want] of Object.entries(expected)) {
    const got = headerText(actual[name]);
    const shown = got === undefined ? "(absent)" : JSON.stringify(got);
    if (want === null) {
      if (got !== undefined) out.push(`${what} ${name}: expected absent, got ${shown}`);
    } else if (typeof want === "string") {
      if (got !== want) out.push(`${what} ${name}: expected ${JSON.stringify(want)}, got ${shown}`);
    } else if (got === undefined || !new RegExp(want.matches).test(got)) {
      out.push(`${what} ${name}: expected to match /${want.matches}/, got ${shown}`);
    }
  }
}

/** The differences between what a case expects and what happened, one line each. */
export function compare(c: TestCase, o: Outcome): string[] {
  const out: string[] = [];
  const e = c.expect;
  const actual = describeOutcome(o);
  if (e.status === "pass" ? o.kind !== "pass" : o.kind !== "answer" || o.status !== e.status) {
    out.push(`status: expected ${e.status === "pass" ? "pass (goes upstream)" : `answer ${e.status}`}, got ${actual}`);
  }
  if (e.audit === undefined && o.audit !== undefined) out.push(`audit: expected none, got would-deny (${o.audit})`);
  if (e.audit !== undefined && o.audit === undefined) out.push(`audit: expected would-deny${e.audit === true ? "" : ` (${e.audit})`}, got none`);
  if (typeof e.audit === "string" && o.audit !== undefined && o.audit !== e.audit) out.push(`audit: expected reason ${JSON.stringify(e.audit)}, got ${JSON.stringify(o.audit)}`);
  if (e.body !== undefined) {
    if (o.kind !== "answer") out.push(`body: expected the filter's answer ${JSON.stringify(e.body)}, but it did not answer`);
    else if (o.body !== e.body) out.push(`body: expected ${JSON.stringify(e.body)}, got ${JSON.stringify(o.body)}`);
  }
  if (e.headers) checkHeaders("header", e.headers, o.headers, out);
  if (e.upstreamHeaders) {
    if (o.upstreamHeaders === undefined) out.push("upstreamHeaders: expected a request sent upstream, but the filter answered");
    else checkHeaders("upstream header", e.upstreamHeaders, o.upstreamHeaders, out);
  }
  return out;
}

/** The decision as one short phrase: "pass", "pass, upstream 200", "answer 418 (filter)", "would-deny 418 (...), pass". */
export function describeOutcome(o: Outcome): string {
  if (o.kind === "answer") return `answer ${o.status} (${o.reason})`;
  const upstream = o.status === undefined ? "" : `, upstream ${o.status}`;
  return o.audit === undefined ? `pass${upstream}` : `pass${upstream}, would-deny ${o.auditStatus} (audit: ${o.audit})`;
}

/** The report: a line per case, the differences and the filter's log lines under it, a summary. */
export function formatResults(results: readonly CaseResult[]): string {
  let text = "";
  for (const r of results) {
    text += `${r.mismatches.length === 0 ? "ok  " : "FAIL"} ${r.name}: ${describeOutcome(r.outcome)}\n`;
    for (const m of r.mismatches) text += `       ${m}\n`;
    if (r.outcome.error !== undefined) text += `     ! ${r.outcome.error}\n`;
    for (const l of r.outcome.logs) text += `     | ${l.level === "info" ? "" : `${l.level.toUpperCase()} `}${l.message}\n`;
  }
  const failed = results.filter((r) => r.mismatches.length > 0).length;
  text += `${results.length} case${results.length === 1 ? "" : "s"}: ${results.length - failed} ok, ${failed} failed\n`;
  return text;
}

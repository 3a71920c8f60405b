// What one filter hook's run means for the message it ran on: the one place that applies the failure policy
// (--on-filter-error), audit mode (--filter-audit, flow.audit) and a body the hook asked for and could not
// have. The proxy (server/interceptor.ts) and `tproxy filter test` (filter/test-runner.ts) both act on what
// this returns, so an offline case decides as the proxy does. Run (runHook) and judgement (judge) are
// apart, so that the proxy can take back what the hook's body reads held in between, and judge without
// a closure per request.
import { FilterTimeoutError } from "../errors.ts";
import type { BodyRefusal } from "../server/body.ts";
import type { FilterVersion, HookResult } from "./host.ts";
import type { Answer, FlowData, HookName } from "./protocol.ts";
import type { Headers } from "./types.ts";

/** Runs a hook of a version (FilterHost.run, or the serving thread's pool around it). */
export type HookRunner = (version: FilterVersion, hook: HookName, flow: FlowData) => Promise<HookResult>;

export type FailureReason = "filter-timeout" | "filter-error";

export interface JudgeOptions {
  /** `--filter-audit`: every answer of the filter is only logged (would-deny). */
  filterAudit: boolean;
  /** `--on-filter-error`: what a hook that throws or times out means. */
  onFilterError: "deny" | "allow";
}

/** One hook's run: what it returned, or how it failed. Never a rejection. */
export interface HookRun {
  /** undefined: the version has no such hook, or it failed. */
  result: HookResult | undefined;
  failure: FailureReason | undefined;
  error: Error | undefined;
}

const NO_HOOK: HookRun = Object.freeze({ result: undefined, failure: undefined, error: undefined });

/** Runs a hook of a version if it has one; a throw or a timeout is returned as a failure. */
export async function runHook(run: HookRunner, version: FilterVersion, hook: HookName, flow: FlowData): Promise<HookRun> {
  if (!version.hooks.has(hook)) return NO_HOOK;
  try {
    return { result: await run(version, hook, flow), failure: undefined, error: undefined };
  } catch (err) {
    return { result: undefined, failure: err instanceof FilterTimeoutError ? "filter-timeout" : "filter-error", error: err as Error };
  }
}

/** What to do with the message. `audit` is the reason the hook gave to flow.audit, if it did. */
export type Judgement =
  /** Go on. `headers`: as the hook left them, undefined when no hook ran. `wouldDeny`: the answer audit mode only logged. */
  | { kind: "pass"; headers: Headers | undefined; audit: string | undefined; wouldDeny: { why: string; answer: Answer } | undefined }
  /** The filter's own answer. */
  | { kind: "answer"; answer: Answer; audit: string | undefined }
  /** The hook failed and failures deny. */
  | { kind: "failed"; failure: FailureReason; audit: undefined }
  /** The hook read a body that could not be had: refused, whatever the hook made of the failed read. */
  | { kind: "body"; refusal: BodyRefusal; audit: string | undefined };

/** The log reason of a would-deny: why audit mode only logged the answer, and its status. */
export function wouldDenyReason(wouldDeny: { why: string; answer: Answer }): string {
  return `audit: ${wouldDeny.why}; would answer ${wouldDeny.answer.status}`;
}

/**
 * Judges a hook's run. `refusal`: a body read of the hook that was refused (too large, timed out, broken);
 * `requestAudit`: the reason the request hook gave to `flow.audit`, which covers the response hook too.
 */
export function judge(ran: HookRun, refusal: BodyRefusal | undefined, requestAudit: string | undefined, o: JudgeOptions): Judgement {
  const result = ran.result;
  const audit = result?.audit;
  // An answer only logged: under audit (this hook's flow.audit, the request hook's, or the whole filter's).
  const auditWhy = audit ?? requestAudit ?? (o.filterAudit ? "filter-audit" : undefined);
  // The filter's own answer stands; otherwise a body the hook could not have refuses the message.
  if (result?.answer !== undefined && auditWhy === undefined) return { kind: "answer", answer: result.answer, audit };
  if (refusal) return { kind: "body", refusal, audit };
  if (ran.failure !== undefined && o.onFilterError !== "allow") return { kind: "failed", failure: ran.failure, audit: undefined };
  const wouldDeny = result?.answer !== undefined ? { why: auditWhy!, answer: result.answer } : undefined;
  return { kind: "pass", headers: result?.headers, audit, wouldDeny };
}

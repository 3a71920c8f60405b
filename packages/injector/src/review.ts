// One AdmissionReview (admission.k8s.io/v1) in, one answer out: the protocol around inject() and
// validate(), apart from HTTP. Input that is not a review gets a 400 naming what is wrong (there is no uid
// to answer); a review of anything but the CREATE of a Pod (or, for validation, its UPDATE) is allowed unchanged.
import { hasLockContainer, inject, lockReason, type InjectionConfig } from "./inject.ts";
import { compare } from "./json-patch.ts";
import type { NamespaceLabels } from "./namespaces.ts";
import { podName, type Pod } from "./pod.ts";
import { validate } from "./validate.ts";

export const REVIEW_API_VERSION = "admission.k8s.io/v1";

export type Mode = "mutate" | "validate";

export interface AdmissionResponse {
  uid: string;
  allowed: boolean;
  patchType?: "JSONPatch";
  patch?: string;
  status?: { code: number; message: string };
  warnings?: string[];
}

/** What to send: a review (HTTP 200) or a plain refusal of the request itself. */
export type Answer =
  | { readonly status: 200; readonly review: { apiVersion: string; kind: "AdmissionReview"; response: AdmissionResponse }; readonly log: Record<string, unknown> }
  | { readonly status: 400; readonly message: string };

interface ReviewRequest {
  uid: string;
  kind?: { group?: string; version?: string; kind?: string };
  operation?: string;
  subResource?: string;
  namespace?: string;
  object?: unknown;
  oldObject?: unknown;
}

export async function answer(mode: Mode, body: unknown, config: InjectionConfig, namespaces: NamespaceLabels): Promise<Answer> {
  const bad = (message: string): Answer => ({ status: 400, message: `tproxy-injector: ${message}` });
  if (typeof body !== "object" || body === null || Array.isArray(body)) return bad("the body is not an AdmissionReview object");
  const review = body as { apiVersion?: unknown; kind?: unknown; request?: unknown };
  if (review.apiVersion !== REVIEW_API_VERSION || review.kind !== "AdmissionReview") {
    return bad(`expected apiVersion ${REVIEW_API_VERSION}, kind AdmissionReview; got ${JSON.stringify(review.apiVersion)}, ${JSON.stringify(review.kind)}`);
  }
  const request = review.request as ReviewRequest | undefined;
  if (typeof request !== "object" || request === null) return bad("the AdmissionReview has no request");
  if (typeof request.uid !== "string" || request.uid === "") return bad("the AdmissionReview's request has no uid");

  const reply = (response: Omit<AdmissionResponse, "uid">, log: Record<string, unknown>): Answer => ({
    status: 200,
    review: { apiVersion: REVIEW_API_VERSION, kind: "AdmissionReview", response: { uid: request.uid, ...response } },
    log: { uid: request.uid, mode, namespace: request.namespace, ...log },
  });
  const gvk = request.kind ?? {};
  if (gvk.kind !== "Pod" || (gvk.group ?? "") !== "") {
    const kind = `${gvk.group ? `${gvk.group}/` : ""}${gvk.kind ?? "(no kind)"}`;
    return reply({ allowed: true, warnings: [`tproxy-injector handles pods only; this ${kind} was let through unchanged`] }, { kind, result: "not a pod" });
  }
  // Mutation is for creation; validation also sees updates (the pod itself, or its ephemeral containers).
  const update = request.operation === "UPDATE" && mode === "validate";
  if (request.operation !== "CREATE" && !update) return reply({ allowed: true }, { operation: request.operation, result: "not a create" });
  const pod = request.object as Pod | undefined;
  if (typeof pod !== "object" || pod === null || Array.isArray(pod)) return bad("the AdmissionReview's request has no Pod object");
  // A pod locked when it was created stays locked, whatever its labels and annotation say now.
  const old = request.oldObject as Pod | undefined;
  const wasLocked = update && typeof old === "object" && old !== null && hasLockContainer(old, config) ? `locked since its creation (init container "${config.initContainer.name}")` : undefined;

  const refuse = (message: string, log: Record<string, unknown>) => reply({ allowed: false, status: { code: 403, message } }, { ...log, result: "refused", message });
  const namespace = request.namespace ?? pod.metadata?.namespace ?? "";
  let labels: Readonly<Record<string, string>> = {};
  // A pod its own label or annotation locks is locked whatever its namespace says; any other needs the
  // namespace's labels (a pod label other than "enabled" does not opt out of a locked namespace).
  if (wasLocked === undefined && lockReason(pod, {}, config) === undefined) {
    try {
      labels = await namespaces.labels(namespace);
    } catch (err) {
      return refuse(`tproxy: cannot tell whether pod ${podName(pod)} is to be locked: ${(err as Error).message}`, { pod: podName(pod) });
    }
  }
  const what = { pod: podName(pod) };
  if (mode === "validate") {
    const v = validate(pod, labels, config, wasLocked);
    return v.allowed ? reply({ allowed: true }, { ...what, result: "valid" }) : refuse(v.message, what);
  }
  const result = inject(pod, labels, config);
  if (!result.allowed) return refuse(result.message, what);
  const patch = compare(pod, result.pod);
  if (patch.length === 0) return reply({ allowed: true }, { ...what, result: "unchanged" });
  return reply(
    { allowed: true, patchType: "JSONPatch", patch: Buffer.from(JSON.stringify(patch)).toString("base64") },
    { ...what, result: "locked", operations: patch.length },
  );
}

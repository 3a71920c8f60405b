// The check of the final pod, after every mutating webhook ran (ValidatingWebhookConfiguration, /validate):
// a pod to lock must be exactly what inject() makes of it, i.e. a pod inject() leaves unchanged. This
// catches a mutating webhook that ran after tproxy's and took the lock out again (removed the init
// container, changed its image, added NET_ADMIN, ...): the same rules, applied once more, as a fixed point.
import { compare } from "./json-patch.ts";
import { inject, lockReason, type InjectionConfig } from "./inject.ts";
import { podName, type Pod } from "./pod.ts";

export type ValidateResult = { readonly allowed: true } | { readonly allowed: false; readonly message: string };

export function validate(pod: Pod, namespaceLabels: Readonly<Record<string, string>>, config: InjectionConfig): ValidateResult {
  const reason = lockReason(pod, namespaceLabels, config);
  if (reason === undefined) return { allowed: true };
  const injected = inject(pod, namespaceLabels, config);
  if (!injected.allowed) return injected;
  const missing = compare(pod, injected.pod);
  if (missing.length === 0) return { allowed: true };
  const what = missing.map((op) => `${op.op} ${op.path}`).join("; ");
  return {
    allowed: false,
    message:
      `tproxy: pod ${podName(pod)} is to be locked (${reason}) but is not locked as tproxy's injection makes it ` +
      `(did another mutating webhook change it after tproxy's?); missing: ${what}`,
  };
}

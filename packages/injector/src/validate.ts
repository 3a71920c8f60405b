// The check of the final pod, after every mutating webhook ran (ValidatingWebhookConfiguration, /validate):
// a pod to lock must be exactly what inject() makes of it, i.e. a pod inject() leaves unchanged. This
// catches a mutating webhook that ran after tproxy's and took the lock out again (removed the init
// container, changed its image, added NET_ADMIN, ...): the same rules, applied once more, as a fixed point.
// Updates of a pod locked before are checked the same way (review.ts): an init container's image can be
// changed on a running pod (it runs again when the sandbox is recreated), and `kubectl debug` adds an
// ephemeral container to it.
import { compare } from "./json-patch.ts";
import { inject, lockReason, type InjectionConfig } from "./inject.ts";
import { podName, type Pod } from "./pod.ts";

export type ValidateResult = { readonly allowed: true } | { readonly allowed: false; readonly message: string };

export function validate(pod: Pod, namespaceLabels: Readonly<Record<string, string>>, config: InjectionConfig, lockedBecause?: string): ValidateResult {
  const reason = lockedBecause ?? lockReason(pod, namespaceLabels, config);
  if (reason === undefined) return { allowed: true };
  const injected = inject(pod, namespaceLabels, config, reason);
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

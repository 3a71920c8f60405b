// sidecar-init's side of @tproxy/iptables: the same programs, backend choice and restore, with this
// tool's errors (each with its exit status and a hint the pod's author can act on).
import {
  chooseTools as choose,
  execRunner as runner,
  firstLine,
  IptablesFailure,
  restore as restoreTools,
  save,
  ToolsMissing,
  type Chosen,
  type FamilyTools,
  type Runner,
  type Tools,
} from "@tproxy/iptables";
import type { Backend } from "./config.ts";
import { CapabilityError, IptablesError, IptablesMissingError } from "./errors.ts";

export { which, type Chosen, type FamilyTools, type Runner, type RunResult, type Tools } from "@tproxy/iptables";
/** The other backend's programs, when installed: what `auto` falls back to. */
export { otherTools as fallbackTools } from "@tproxy/iptables";

export const execRunner: Runner = runner({ timeoutMs: 60_000 });

const INSTALL_HINT = "the init container image needs the iptables package (iptables-restore and ip6tables-restore)";

/**
 * Picks the programs. `nft` and `legacy` demand their suffixed binaries. `auto` follows the backend the
 * namespace already uses (the kubelet's chains, else the one holding more rules, legacy only when it
 * holds more, as Kubernetes' iptables wrappers do), nft otherwise, and falls back to the unsuffixed
 * binaries on images that ship only those.
 */
export async function chooseWithReason(choice: Backend, run: Runner, path: string | undefined = process.env["PATH"]): Promise<Chosen> {
  try {
    return await choose(choice, run, path);
  } catch (err) {
    if (err instanceof ToolsMissing) {
      throw new IptablesMissingError(`${err.message}; ${INSTALL_HINT}${choice === "auto" ? "" : ", or choose another --iptables-backend"}`, { cause: err });
    }
    throw err;
  }
}

/** `chooseWithReason` without the reason. */
export async function chooseTools(choice: Backend, run: Runner, path: string | undefined = process.env["PATH"]): Promise<Tools> {
  return (await chooseWithReason(choice, run, path)).tools;
}

/** This tool's error for a failed program: missing, refused (capabilities) or failed. */
function translate(err: unknown, tool: string, doing: string): Error {
  if (!(err instanceof IptablesFailure)) return err as Error;
  const detail = firstLine(err.stderr);
  switch (err.kind) {
    case "missing":
      return new IptablesMissingError(`cannot start ${tool}: ${detail}`, { cause: err });
    case "permission":
      return new CapabilityError(`${tool} was refused while ${doing}: ${detail}; the init container needs the NET_ADMIN capability (and NET_RAW for the legacy backend)`, { cause: err });
    case "lock":
      return new IptablesError(`${tool} gave up waiting for the xtables lock while ${doing}: ${detail}; another program (kube-proxy, a CNI plugin) held it; the pod's next start retries`, { cause: err });
    default:
      return new IptablesError(`${tool} failed while ${doing} (${err.exitCode === null ? "no exit status" : `exit ${err.exitCode}`}): ${detail}`, { cause: err });
  }
}

/** `iptables-save -t filter` of one family. */
export async function saveFilter(t: FamilyTools, run: Runner): Promise<string> {
  return save(t, run, "filter").catch((err: unknown) => {
    throw translate(err, t.save, "reading the filter table");
  });
}

/** Applies (or with `test`, only checks) one transaction; iptables-restore commits it whole or not at all. */
export async function restore(t: FamilyTools, input: string, run: Runner, opts: { test?: boolean } = {}): Promise<void> {
  await restoreTools(t, input, run, opts).catch((err: unknown) => {
    throw translate(err, t.restore, opts.test ? "checking the rules" : "applying the rules");
  });
}

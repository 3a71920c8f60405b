// `tproxy filter test FILTER CASES`: the filter's unit tests, after `opa test` and `promtool test rules`.
// Exit status: 0 every case as expected, 1 a case differs, 2 the case file or the filter cannot be used.
import { resolve } from "node:path";
import { Option, type Command } from "commander";
import { TproxyError } from "../errors.ts";

/** Adds `test` to the `filter` command group (filter/commands.ts). */
export function addFilterTest(filter: Command): void {
  filter
    .command("test")
    .description("Run the requests of a case file (YAML or JSON) through a filter offline and check what it decides.")
    .argument("<filter>", "filter script (TypeScript)")
    .argument("<cases>", "case file: a list of { name, request: { method, url, headers, client, body }, response?: { status, headers, body }, expect: { status: pass | <code>, body, headers, upstreamHeaders, audit } }")
    .option("--audit", "as with `tproxy run --filter-audit`: the filter's answers are would-deny and requests pass")
    .addOption(new Option("--filter-timeout <ms>", "time budget of one hook call").default("100"))
    .addOption(new Option("--on-filter-error <mode>", "what a hook that throws or times out means").choices(["deny", "allow"]).default("deny"))
    .addOption(new Option("--max-body <bytes>", "most bytes of a body a hook may read whole; a larger one is refused (413 request, 502 response)").default("1048576"))
    .action(async (filter: string, casesPath: string, opts: { audit?: boolean; filterTimeout: string; onFilterError: "deny" | "allow"; maxBody: string }) => {
      const [{ readCases }, { runCases, formatResults }, { parseMaxBody }] = await Promise.all([import("./cases.ts"), import("./test-runner.ts"), import("../config.ts")]);
      try {
        const timeoutMs = Number(opts.filterTimeout);
        if (!Number.isInteger(timeoutMs) || timeoutMs < 1) throw new TproxyError("ERR_CONFIG", `--filter-timeout "${opts.filterTimeout}" must be a positive whole number of milliseconds`);
        const maxBodyBytes = parseMaxBody(opts.maxBody);
        const cases = await readCases(casesPath);
        const results = await runCases(resolve(filter), cases, { audit: opts.audit ?? false, timeoutMs, onFilterError: opts.onFilterError, maxBodyBytes });
        process.stdout.write(formatResults(results));
        process.exitCode = results.some((r) => r.mismatches.length > 0) ? 1 : 0;
      } catch (err) {
        // A case file or a filter that cannot be used: no case ran, which is not a case that failed.
        process.stderr.write(`tproxy filter test: ${err instanceof Error ? err.message : String(err)}\n`);
        process.exitCode = 2;
      }
    });
}

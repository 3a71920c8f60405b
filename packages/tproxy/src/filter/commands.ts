// `tproxy filter ...`: tools for filter authors and their CI. `check` does what the proxy does to each
// version before it loads it (compile, type-check against the contract, evaluate and look at the default
// export) and says every error as file:line:col, exit status 0 or 1 (like `promtool check rules`, `opa
// check`). `init` writes what an editor and `tsc -p DIR` need to check a filter outside this repository.
import { existsSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import { isAbsolute, join, relative } from "node:path";
import type { Command } from "commander";
import { FilterLoadError, formatDiagnostic, type FilterDiagnostic } from "../errors.ts";
import { addFilterTest } from "./test-command.ts";

/** Names a file relative to the working directory when it is under it (what CI annotations and editors match). */
function shown(file: string | undefined): string | undefined {
  if (file === undefined) return undefined;
  const rel = relative(process.cwd(), file);
  return rel !== "" && !rel.startsWith("..") && !isAbsolute(rel) ? rel : file;
}

/** Every error of a refused version, one per line, as file:line:col: message. */
export function errorLines(err: unknown): string[] {
  if (!(err instanceof FilterLoadError)) return [err instanceof Error ? err.message : String(err)];
  const list: FilterDiagnostic[] = err.diagnostics.length > 0 ? err.diagnostics : [{ file: undefined, line: undefined, column: undefined, message: err.message }];
  return list.map((d) => formatDiagnostic({ ...d, file: shown(d.file) }));
}

/** What `tproxy filter check` does; resolves to the version's hash, or throws FilterLoadError. */
export async function checkFilterPath(path: string): Promise<{ hash: string; files: number }> {
  const { readFilterSnapshot } = await import("./compile.ts");
  const { buildSnapshot } = await import("./build.ts");
  const { evaluateFilter } = await import("./host.ts");
  const snap = await readFilterSnapshot(path);
  const compiled = await buildSnapshot(snap, snap.entry);
  // The contract at run time, as a serving thread checks it: a default export with at least one hook, hooks functions.
  try {
    evaluateFilter(compiled.code, snap.entry);
  } catch (err) {
    throw new FilterLoadError(`${snap.entry}: ${(err as Error).message}`, undefined, { reason: "evaluate", diagnostics: [{ file: snap.entry, line: undefined, column: undefined, message: (err as Error).message }] });
  }
  return { hash: compiled.hash, files: snap.files.size };
}

const STARTER = `import type { Filter } from "@tproxy/tproxy/filter";

// Requests to these hosts pass; every other request is answered 403 here and never leaves the pod.
const ALLOWED = new Set(["example.com"]);

export default {
  request(flow) {
    if (!ALLOWED.has(flow.request.host)) {
      flow.respond(403, \`\${flow.request.host} is not allowed by the egress filter\\n\`, { "content-type": "text/plain" });
    }
  },
} satisfies Filter;
`;

/** What `tproxy filter init DIR` writes; returns the files written. */
export async function initFilterDir(dir: string, options: { force?: boolean } = {}): Promise<string[]> {
  const { FILTER_COMPILER_OPTIONS, filterDeclarations } = await import("./check.ts");
  await mkdir(dir, { recursive: true });
  const written: string[] = [];
  const put = async (name: string, text: string, overwrite: boolean): Promise<void> => {
    const file = join(dir, name);
    if (existsSync(file) && !overwrite) return;
    await writeFile(file, text);
    written.push(file);
  };
  // The declarations are generated: always brought up to date with this tproxy.
  await put("tproxy-filter.d.ts", filterDeclarations(), true);
  const tsconfig = { compilerOptions: FILTER_COMPILER_OPTIONS, include: ["*.ts"] };
  await put("tsconfig.json", `${JSON.stringify(tsconfig, null, 2)}\n`, options.force ?? false);
  await put("filter.ts", STARTER, false);
  return written;
}

/**
 * Adds `check` and `init` to the program's `filter` command (made if missing) and returns it, so other
 * filter subcommands can be added to the same group.
 */
export function filterCommands(program: Command): Command {
  const filter = program.commands.find((c) => c.name() === "filter") ?? program.command("filter").description("Tools for filter authors: check a filter, set up a directory to write one.");
  filter
    .command("check")
    .argument("<path>", "the filter (filter.ts) or its directory")
    .description("Compile and type-check a filter as the proxy does before loading it; print each error as file:line:col; exit 1 if any.")
    .action(async (path: string) => {
      try {
        const { hash, files } = await checkFilterPath(path);
        process.stdout.write(`${path}: ok (${files} file${files === 1 ? "" : "s"}, hash ${hash})\n`);
      } catch (err) {
        for (const line of errorLines(err)) process.stderr.write(`${line}\n`);
        process.exitCode = 1;
      }
    });
  filter
    .command("init")
    .argument("<dir>", "directory of the filter (made if missing)")
    .option("--force", "overwrite an existing tsconfig.json")
    .description("Write tsconfig.json, the filter contract's declarations (tproxy-filter.d.ts) and, if missing, a starter filter.ts, so that `tsc -p DIR` and editors check the filter.")
    .action(async (dir: string, opts: { force?: boolean }) => {
      try {
        const written = await initFilterDir(dir, opts);
        for (const file of written) process.stdout.write(`wrote ${file}\n`);
        process.stdout.write(`check it with: tproxy filter check ${dir}  (or: tsc -p ${dir})\n`);
      } catch (err) {
        process.stderr.write(`tproxy: ${(err as Error).message}\n`);
        process.exitCode = 1;
      }
    });
  addFilterTest(filter);
  return filter;
}

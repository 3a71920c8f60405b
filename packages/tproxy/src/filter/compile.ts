// Compiles a filter (TypeScript, ESM syntax) to one CommonJS bundle with esbuild: types are erased,
// relative imports are bundled, packages stay external. Errors carry file:line:col of the file at fault.
//
// A filter is its directory (the ConfigMap mount): the entry file (filter.ts) and every other file next
// to it, read once into a snapshot. The hash covers the snapshot, and esbuild (and the type checker,
// check.ts) read the snapshot, never the disk: a kubelet swap in the middle of a compile cannot mix two
// versions, and a change to an imported rules.json alone is a new version.
import { createHash } from "node:crypto";
import { readdir, readFile, stat } from "node:fs/promises";
import { basename, dirname, extname, join, relative, resolve, sep } from "node:path";
import { pathToFileURL } from "node:url";
import { build, stop, type Loader, type Message, type Plugin } from "esbuild";
import { FilterLoadError, type FilterDiagnostic } from "../errors.ts";

export interface CompiledFilter {
  /** CommonJS source, ready to evaluate (inline source map: runtime errors point at the filter's files). */
  code: string;
  /** sha256 of the version (hex, first 16 chars): what the metrics call the filter's hash. */
  hash: string;
  /** The entry file the filter was read from, as configured. */
  path: string;
}

/** One version of a filter directory, as read. */
export interface FilterSnapshot {
  /** Absolute path of the entry file (filter.ts). */
  entry: string;
  /** Absolute path of the directory. */
  dir: string;
  /** Every file of the version by absolute path, the entry included. */
  files: Map<string, Buffer>;
  /** The entry's bytes, then each other file's name and bytes in name order: a one-file filter's hash is its file's sha256. */
  hash: string;
}

/** A ConfigMap holds at most 1 MiB; a directory far larger is not a filter's (someone pointed --filter at /etc/x.ts). */
const MAX_FILES = 256;
const MAX_BYTES = 8 * 2 ** 20;

/** How esbuild reads each kind of file a filter may import; other extensions are refused, naming these. */
const LOADERS: Record<string, Loader> = { ".ts": "ts", ".mts": "ts", ".cts": "ts", ".js": "js", ".mjs": "js", ".cjs": "js", ".json": "json", ".txt": "text" };

/** `PATH` is the entry file, or its directory (then the entry is `filter.ts` in it). */
export async function filterEntry(path: string): Promise<string> {
  const abs = resolve(path);
  const st = await stat(abs).catch((err: NodeJS.ErrnoException) => {
    throw new FilterLoadError(`cannot read filter ${path}: ${err.code ?? err.message}`, undefined, { reason: "read" });
  });
  return st.isDirectory() ? join(abs, "filter.ts") : abs;
}

/**
 * Reads the filter's directory: every regular file (symlinks followed) whose name does not start with "."
 * (the kubelet's `..data` and `..2026_...` entries, dotfiles). Subdirectories are not part of it.
 */
export async function readFilterSnapshot(path: string): Promise<FilterSnapshot> {
  const entry = await filterEntry(path);
  const dir = dirname(entry);
  const fail = (what: string, err: NodeJS.ErrnoException): never => {
    throw new FilterLoadError(`cannot read filter ${what}: ${err.code ?? err.message}`, undefined, { reason: "read" });
  };
  const entryBytes = await readFile(entry).catch((err: NodeJS.ErrnoException) => fail(entry, err));
  const files = new Map<string, Buffer>([[entry, entryBytes]]);
  const names = (await readdir(dir).catch((err: NodeJS.ErrnoException) => fail(dir, err))).filter((n) => !n.startsWith(".") && join(dir, n) !== entry).sort();
  if (names.length + 1 > MAX_FILES) throw new FilterLoadError(`the filter directory ${dir} holds ${names.length + 1} files, more than ${MAX_FILES}: a filter's directory holds the filter and the files it imports`, undefined, { reason: "read" });
  let total = entryBytes.length;
  const hash = createHash("sha256").update(entryBytes);
  for (const name of names) {
    const file = join(dir, name);
    // A key removed from the ConfigMap leaves a dangling link until the kubelet cleans it; a folder is no file.
    const st = await stat(file).catch(() => undefined);
    if (!st?.isFile()) continue;
    const bytes = await readFile(file).catch(() => undefined);
    if (bytes === undefined) continue;
    total += bytes.length;
    if (total > MAX_BYTES) throw new FilterLoadError(`the filter directory ${dir} holds more than ${MAX_BYTES / 2 ** 20} MiB: a filter's directory holds the filter and the files it imports`, undefined, { reason: "read" });
    files.set(file, bytes);
    hash.update("\0").update(name).update("\0").update(String(bytes.length)).update("\0").update(bytes);
  }
  return { entry, dir, files, hash: hash.digest("hex").slice(0, 16) };
}

/** The version's hash, to tell a changed filter from a touched one. */
export async function hashFilterSource(path: string): Promise<string> {
  return (await readFilterSnapshot(path)).hash;
}

/** The file an import names, as esbuild would find it on disk: as written, else with an extension, else `.js` meaning `.ts`. */
export function resolveInSnapshot(files: ReadonlyMap<string, unknown>, target: string): string | undefined {
  const tries = [target, ...[".ts", ".mts", ".js", ".mjs", ".json"].map((e) => target + e), ...[".ts", ".mts", ".js"].map((e) => join(target, "index" + e))];
  if (/\.[mc]?js$/.test(target)) tries.push(target.replace(/js$/, "ts"));
  return tries.find((t) => files.has(t));
}

/** esbuild's messages, each with the file it names (relative to the filter's directory, made absolute). */
export function diagnostics(dir: string, messages: Message[]): FilterDiagnostic[] {
  return messages.map((m) => ({
    file: m.location ? resolve(dir, m.location.file.replace(/^filter:/, "")) : undefined,
    line: m.location?.line,
    column: m.location ? m.location.column + 1 : undefined,
    message: m.text,
  }));
}

/** Compiles a snapshot; throws FilterLoadError (reason "compile") listing every error with file:line:col. */
export async function compileSnapshot(snap: FilterSnapshot, path: string = snap.entry): Promise<CompiledFilter> {
  const plugin: Plugin = {
    name: "tproxy-filter-snapshot",
    setup(b) {
      b.onResolve({ filter: /.*/ }, (args) => {
        if (args.kind === "entry-point") return { path: snap.entry, namespace: "filter" };
        // Packages and node: builtins stay external: the filter requires them at run time.
        if (!/^\.{0,2}\//.test(args.path)) return { external: true };
        const target = resolve(args.resolveDir, args.path);
        const found = resolveInSnapshot(snap.files, target);
        if (found === undefined) {
          const names = [...snap.files.keys()].map((f) => basename(f)).join(", ");
          const outside = relative(snap.dir, target).startsWith("..") || relative(snap.dir, target).includes(sep);
          return { errors: [{ text: outside ? `cannot import "${args.path}": a filter imports only files of its own directory (${names})` : `cannot import "${args.path}": no such file in the filter directory (it holds: ${names})` }] };
        }
        const ext = extname(found);
        if (!(ext in LOADERS)) return { errors: [{ text: `cannot import "${args.path}": a filter imports ${Object.keys(LOADERS).join(", ")} files` }] };
        return { path: found, namespace: "filter" };
      });
      b.onLoad({ filter: /.*/, namespace: "filter" }, (args) => ({
        contents: snap.files.get(args.path)!,
        loader: LOADERS[extname(args.path)] ?? "ts",
        resolveDir: dirname(args.path),
      }));
    },
  };
  const url = pathToFileURL(snap.entry).href;
  try {
    const result = await build({
      entryPoints: [snap.entry],
      absWorkingDir: snap.dir,
      plugins: [plugin],
      bundle: true,
      format: "cjs",
      platform: "node",
      target: "node24",
      write: false,
      logLevel: "silent",
      sourcemap: "inline",
      // The filter is an ES module to its author and the type checker, a CommonJS bundle when it runs:
      // import.meta gets the entry file's values (every file of a filter sits in its directory, so
      // `new URL("./x", import.meta.url)` resolves alike from any of them); any other use is an error.
      define: { "import.meta.url": JSON.stringify(url), "import.meta.filename": JSON.stringify(snap.entry), "import.meta.dirname": JSON.stringify(snap.dir) },
      logOverride: { "empty-import-meta": "error" },
    });
    const code = result.outputFiles[0]?.text ?? "";
    return { code, hash: snap.hash, path };
  } catch (err) {
    const errors = (err as { errors?: Message[] }).errors;
    if (errors && errors.length > 0) throw FilterLoadError.from("compile", diagnostics(snap.dir, errors));
    throw new FilterLoadError(`cannot compile filter ${path}: ${(err as Error).message}`, undefined, { reason: "compile" });
  } finally {
    // esbuild keeps a service process for later builds; filters change rarely, so free its memory.
    await stop();
  }
}

/** Reads and compiles the filter (no type check: check.ts does that). */
export async function compileFilter(path: string): Promise<CompiledFilter> {
  return compileSnapshot(await readFilterSnapshot(path), path);
}

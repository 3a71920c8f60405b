// Compiles a filter script (TypeScript, ESM syntax) to one CommonJS bundle with esbuild: types are
// erased, relative imports are bundled, packages stay external. Errors carry file:line:col.
import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { build, stop, type Message } from "esbuild";
import { FilterLoadError } from "../errors.ts";

export interface CompiledFilter {
  /** CommonJS source, ready to evaluate. */
  code: string;
  /** sha256 of the source file as read (hex, first 16 chars): what the metrics call the filter's hash. */
  hash: string;
  /** The path the filter was read from, as configured. */
  path: string;
}

/** Reads the filter source and returns its hash, to tell a changed file from a touched one. */
export async function hashFilterSource(path: string): Promise<string> {
  const source = await readFile(path).catch((err: NodeJS.ErrnoException) => {
    throw new FilterLoadError(`cannot read filter ${path}: ${err.code ?? err.message}`);
  });
  return sourceHash(source);
}

function sourceHash(source: Buffer | string): string {
  return createHash("sha256").update(source).digest("hex").slice(0, 16);
}

function where(path: string, m: Message): string | undefined {
  return m.location ? `${path}:${m.location.line}:${m.location.column + 1}` : undefined;
}

export async function compileFilter(path: string): Promise<CompiledFilter> {
  const source = await readFile(path, "utf8").catch((err: NodeJS.ErrnoException) => {
    throw new FilterLoadError(`cannot read filter ${path}: ${err.code ?? err.message}`);
  });
  try {
    const result = await build({
      stdin: { contents: source, loader: "ts", sourcefile: path, resolveDir: dirnameOf(path) },
      bundle: true,
      format: "cjs",
      platform: "node",
      target: "node24",
      packages: "external",
      write: false,
      logLevel: "silent",
      sourcemap: "inline",
    });
    const code = result.outputFiles[0]?.text ?? "";
    return { code, hash: sourceHash(source), path };
  } catch (err) {
    const errors = (err as { errors?: Message[] }).errors;
    const first = errors?.[0];
    if (first) {
      const location = where(path, first);
      throw new FilterLoadError(`${location ?? path}: ${first.text}`, location);
    }
    throw new FilterLoadError(`cannot compile filter ${path}: ${(err as Error).message}`);
  } finally {
    // esbuild keeps a service process for later builds; filters change rarely, so free its memory.
    await stop();
  }
}

function dirnameOf(path: string): string {
  const i = path.lastIndexOf("/");
  return i <= 0 ? "/" : path.slice(0, i);
}

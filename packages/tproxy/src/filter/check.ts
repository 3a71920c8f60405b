// Type-checks a filter version against the filter contract (types.ts) with the TypeScript compiler API,
// before any serving thread evaluates it: a hook misspelled (`requst`), a field that does not exist
// (`flow.request.methd`), a call with the wrong arguments, refuse the version like a syntax error does.
//
// The checker reads the same snapshot esbuild compiles (compile.ts), plus the contract and lean types of
// the runtime a hook runs in: the language (lib es2024) and the globals its context holds (host.ts's
// NODE_GLOBALS), the common ones typed, fetch, Buffer, process and packages loosely (any). Not @types/node:
// with it a check took 2.0 s and 122 MiB on a cold start instead of 0.7 s and 30 MiB (2 cores), and the
// check runs on every reload, in the proxy's memory limit. The same declarations are what
// `tproxy filter init` writes next to a filter, so an editor, `tsc -p DIR` and the proxy agree.
import { readFileSync, existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import ts from "typescript";
import type { FilterDiagnostic } from "../errors.ts";

/** The compiler options of a filter (tsconfig.json form): what `tproxy filter init` writes, what the proxy checks with. */
export const FILTER_COMPILER_OPTIONS = {
  target: "es2024",
  lib: ["es2024"],
  // The filter is written as an ES module and bundled (esbuild): imports may name `.ts` files, or none.
  module: "esnext",
  moduleResolution: "bundler",
  allowImportingTsExtensions: true,
  resolveJsonModule: true,
  isolatedModules: true,
  strict: true,
  noEmit: true,
  skipLibCheck: true,
  // No @types/*: the runtime's types are in the declarations below (an @types/node next to them would clash).
  types: [],
} as const;

/** Where the contract sits: types.d.ts next to this module once built, types.ts when run from source. */
function contractSource(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  const built = join(here, "types.d.ts");
  const text = readFileSync(existsSync(built) ? built : join(here, "types.ts"), "utf8");
  // Inside an ambient module declaration, `export {}` and source-map comments are noise.
  return text.replace(/^export \{\};?$/gm, "").replace(/^\/\/# sourceMappingURL=.*$/gm, "").trim();
}

/**
 * The declarations a filter is checked with, as one file: the contract as the module
 * "@tproxy/tproxy/filter", and what a filter may import besides TypeScript (text files as strings).
 */
export function filterDeclarations(): string {
  const indented = contractSource().split("\n").map((l) => (l === "" ? l : `  ${l}`)).join("\n");
  return `// The filter contract of tproxy, written by \`tproxy filter init\`: what \`tproxy filter check\` and the proxy
// check a filter against. Regenerate it (tproxy filter init --force) after upgrading tproxy.

declare module "@tproxy/tproxy/filter" {
${indented}
}

/** A text file imported by a filter is its content, as a string (\`import hosts from "./hosts.txt"\`). */
declare module "*.txt" {
  const text: string;
  export default text;
}

// Packages and Node's modules are loaded at run time (require), and typed loosely here.
declare module "node:*";

${RUNTIME_GLOBALS}`;
}

// The globals of a hook's context (host.ts: NODE_GLOBALS besides the language's own).
const RUNTIME_GLOBALS = `// What a hook's context holds besides the language: Node's timers, console, URL, encoders, fetch...
declare var console: { log(...data: unknown[]): void; info(...data: unknown[]): void; warn(...data: unknown[]): void; error(...data: unknown[]): void; debug(...data: unknown[]): void };
declare function setTimeout(callback: (...args: any[]) => void, ms?: number, ...args: any[]): any;
declare function clearTimeout(timer: any): void;
declare function setInterval(callback: (...args: any[]) => void, ms?: number, ...args: any[]): any;
declare function clearInterval(timer: any): void;
declare function setImmediate(callback: (...args: any[]) => void, ...args: any[]): any;
declare function clearImmediate(immediate: any): void;
declare function queueMicrotask(callback: () => void): void;
declare function structuredClone<T>(value: T): T;
declare function atob(data: string): string;
declare function btoa(data: string): string;
declare class URL {
  constructor(url: string | URL, base?: string | URL);
  static canParse(url: string | URL, base?: string | URL): boolean;
  hash: string; host: string; hostname: string; href: string; readonly origin: string; password: string;
  pathname: string; port: string; protocol: string; search: string; readonly searchParams: URLSearchParams; username: string;
  toString(): string; toJSON(): string;
}
declare class URLSearchParams implements Iterable<[string, string]> {
  constructor(init?: string | Record<string, string> | Iterable<[string, string]>);
  readonly size: number;
  append(name: string, value: string): void; delete(name: string, value?: string): void; get(name: string): string | null;
  getAll(name: string): string[]; has(name: string, value?: string): boolean; set(name: string, value: string): void; sort(): void;
  forEach(callback: (value: string, key: string, parent: URLSearchParams) => void): void;
  entries(): IterableIterator<[string, string]>; keys(): IterableIterator<string>; values(): IterableIterator<string>;
  [Symbol.iterator](): IterableIterator<[string, string]>; toString(): string;
}
declare class TextEncoder { readonly encoding: string; encode(input?: string): Uint8Array }
declare class TextDecoder { constructor(label?: string, options?: { fatal?: boolean; ignoreBOM?: boolean }); readonly encoding: string; decode(input?: ArrayBufferView | ArrayBuffer, options?: { stream?: boolean }): string }
declare var performance: { now(): number; readonly timeOrigin: number };
declare var crypto: { randomUUID(): string; getRandomValues<T extends ArrayBufferView | null>(array: T): T; readonly subtle: any };
declare var fetch: (input: string | URL | Request, init?: any) => Promise<Response>;
declare var Headers: any; type Headers = any;
declare var Request: any; type Request = any;
declare var Response: any; type Response = any;
declare var FormData: any; type FormData = any;
declare var Blob: any; type Blob = any;
declare var AbortController: any; type AbortController = any;
declare var AbortSignal: any; type AbortSignal = any;
declare var Buffer: any; type Buffer = any;
declare var process: any;
/** The filter's directory and entry file, as CommonJS names them (the bundle runs as CommonJS). */
declare var __dirname: string;
declare var __filename: string;
/** The filter's entry file (filter.ts), also in the files it imports: they all sit in its directory. */
interface ImportMeta { readonly url: string; readonly filename: string; readonly dirname: string }
`;

/** The name the declarations have in the checker (never a file of the filter: the snapshot is read-only). */
const DECLARATIONS = "/__tproxy__/tproxy-filter.d.ts";

// The file the entry's default export is checked through: `satisfies Filter` is up to the author, this
// is not. A default export that is not a Filter (a misspelled hook, a hook that is no function) is a type
// error here, pointing at the entry file.
const CONTRACT_PROBE = (entry: string): string =>
  `import type { Filter } from "@tproxy/tproxy/filter";\nimport filter from ${JSON.stringify(entry)};\nconst _: Filter = filter;\nexport {};\n`;

export interface CheckInput {
  entry: string;
  dir: string;
  /** The snapshot's files by absolute path, as text. */
  files: Record<string, string>;
}

/** Type-checks a snapshot; returns every error (empty: the version checks). Synchronous and CPU-bound: run it in a worker. */
export function checkFilter(input: CheckInput): FilterDiagnostic[] {
  const converted = ts.convertCompilerOptionsFromJson(FILTER_COMPILER_OPTIONS, input.dir);
  const options: ts.CompilerOptions = converted.options;
  const probe = join(input.dir, "__tproxy_contract__.ts");
  const virtual = new Map<string, string>(Object.entries(input.files));
  const entryText = virtual.get(input.entry) ?? "";
  const typed = withContract(input.entry, entryText);
  virtual.set(input.entry, typed);
  virtual.set(DECLARATIONS, filterDeclarations());
  // The probe only where `satisfies` could not go (no `export default <expression>`): one error, not two.
  if (typed === entryText) virtual.set(probe, CONTRACT_PROBE("./" + input.entry.slice(input.dir.length + 1)));
  const host = ts.createCompilerHost(options);
  const inDir = (f: string): boolean => f.startsWith(input.dir + "/") && !f.slice(input.dir.length + 1).includes("/");
  const readFile = host.readFile.bind(host);
  const getSourceFile = host.getSourceFile.bind(host);
  // The filter's directory is the snapshot: a file of it that is not in the snapshot does not exist.
  host.fileExists = (f) => virtual.has(f) || (!inDir(f) && ts.sys.fileExists(f));
  host.readFile = (f) => virtual.get(f) ?? (inDir(f) ? undefined : readFile(f));
  host.getSourceFile = (f, lang, onError) => {
    const text = virtual.get(f);
    if (text !== undefined) return ts.createSourceFile(f, text, lang);
    return inDir(f) ? undefined : getSourceFile(f, lang, onError);
  };
  const program = ts.createProgram({ rootNames: [input.entry, ...(virtual.has(probe) ? [probe] : []), DECLARATIONS], options, host });
  const all = [...program.getConfigFileParsingDiagnostics(), ...program.getOptionsDiagnostics(), ...program.getSyntacticDiagnostics(), ...program.getGlobalDiagnostics(), ...program.getSemanticDiagnostics()];
  const at = defaultExportAt(program.getSourceFile(input.entry));
  return all.filter((d) => d.category === ts.DiagnosticCategory.Error).map((d) => toDiagnostic(d, probe, input.entry, at));
}

const SATISFIES = ` satisfies import("@tproxy/tproxy/filter").Filter`;

/**
 * The entry as checked: its `export default <object>` gets `satisfies Filter` appended (after the
 * expression, so no position before it moves), whether the author wrote one or not. The object is then
 * typed by the contract: `request(flow)` has a typed `flow` (so `flow.request.methd` is an error) and a
 * misspelled hook is an excess property, named where it is written.
 */
function withContract(file: string, text: string): string {
  const source = ts.createSourceFile(file, text, ts.ScriptTarget.ES2024, false, ts.ScriptKind.TS);
  const node = source.statements.find((s): s is ts.ExportAssignment => ts.isExportAssignment(s) && !s.isExportEquals);
  if (!node) return text;
  const e = node.expression;
  if (!(ts.isObjectLiteralExpression(e) || ts.isSatisfiesExpression(e) || ts.isAsExpression(e) || ts.isParenthesizedExpression(e) || ts.isIdentifier(e) || ts.isCallExpression(e))) return text;
  return text.slice(0, e.end) + SATISFIES + text.slice(e.end);
}

/** Line and column (1-based) of the entry's `export default`, else its first line. */
function defaultExportAt(file: ts.SourceFile | undefined): { line: number; column: number } {
  const node = file?.statements.find((s) => ts.isExportAssignment(s) || (ts.canHaveModifiers(s) && ts.getModifiers(s)?.some((m) => m.kind === ts.SyntaxKind.DefaultKeyword)));
  if (!file || !node) return { line: 1, column: 1 };
  const { line, character } = file.getLineAndCharacterOfPosition(node.getStart(file));
  return { line: line + 1, column: character + 1 };
}

function toDiagnostic(d: ts.Diagnostic, probe: string, entry: string, at: { line: number; column: number }): FilterDiagnostic {
  let message = ts.flattenDiagnosticMessageText(d.messageText, "\n  ");
  if (d.file === undefined || d.start === undefined) return { file: undefined, line: undefined, column: undefined, message };
  if (d.file.fileName === probe) {
    // Point at the entry's default export, where the author can fix it.
    message = `the default export is not a Filter (export default { request(flow) { ... } } satisfies Filter): ${message.replace(/'typeof import\([^)]*\)'/g, "the default export")}`;
    return { file: entry, line: at.line, column: at.column, message };
  }
  const { line, character } = d.file.getLineAndCharacterOfPosition(d.start);
  return { file: d.file.fileName, line: line + 1, column: character + 1, message };
}

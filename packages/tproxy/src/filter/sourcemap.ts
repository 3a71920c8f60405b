// Where in the filter's own files an error was thrown. The bundle a serving thread runs is esbuild's
// (compile.ts), with an inline source map; a stack names lines of the bundle, which the author never saw.
// This maps the innermost frame of the bundle back to file:line:col of the source, for the log line of a
// failed hook or a top-level throw.
import { SourceMap } from "node:module";

const INLINE = /\/\/# sourceMappingURL=data:application\/json;base64,([A-Za-z0-9+/=]+)\s*$/;

/** A function naming the source location of an error thrown by code compiled under `filename`, or undefined. */
export function errorLocator(code: string, filename: string): (err: unknown) => string | undefined {
  let map: SourceMap | undefined;
  const m = INLINE.exec(code);
  if (m) {
    try {
      map = new SourceMap(JSON.parse(Buffer.from(m[1]!, "base64").toString("utf8")) as ConstructorParameters<typeof SourceMap>[0]);
    } catch {
      map = undefined;
    }
  }
  const frame = new RegExp(`${filename.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}:(\\d+):(\\d+)`);
  return (err) => {
    const stack = err !== null && typeof err === "object" && "stack" in err ? String((err as { stack: unknown }).stack) : undefined;
    const at = stack === undefined ? null : frame.exec(stack);
    if (!map || !at) return undefined;
    const entry = map.findEntry(Number(at[1]) - 1, Number(at[2]) - 1);
    if (!("originalSource" in entry) || entry.originalSource === undefined) return undefined;
    return `${entry.originalSource.replace(/^filter:/, "")}:${entry.originalLine + 1}:${entry.originalColumn + 1}`;
  };
}

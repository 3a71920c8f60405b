// fast-json-patch is CommonJS whose exports Node's ESM loader cannot list by name: import the module
// object once here and hand on the two functions the injector uses.
import jsonPatch from "fast-json-patch";
import type { Operation } from "fast-json-patch";

export type { Operation };

/** The JSONPatch (RFC 6902) that turns `from` into `to`. */
export function compare(from: object, to: object): Operation[] {
  return jsonPatch.compare(from, to);
}

// Rules that look at bodies: an API call judged by a field of its JSON body, and downloads judged by
// their first bytes (magic numbers). A hook reads a body only when it asks (flow.request.text(),
// flow.response.peek(n)); every other request and response is streamed through unread.
//
// - A whole body is read up to `tproxy run --max-body` (default 1 MiB, chart: proxy.maxBodyBytes). A larger
//   one is refused (413 to the client) whatever the hook does: a field past the limit cannot slip through.
// - peek(n) reads only the first n bytes; the rest of a large download streams on.
// - Bodies are seen as sent. A compressed response (content-encoding: gzip) would show gzip's bytes, so the
//   request hook asks the server for an uncompressed answer (no accept-encoding), and the response hook
//   refuses what still comes compressed rather than let it through unjudged.
import type { Filter } from "@tproxy/tproxy/filter";

const BATCH_API = "https://api.example.com/v1/batch";
const READ_ACTIONS = new Set(["read", "list"]);

/** Windows executables ("MZ") and PDFs ("%PDF-"). */
const REFUSED_MAGIC: ReadonlyArray<readonly [string, string]> = [["MZ", "a Windows executable"], ["%PDF-", "a PDF"]];

function startsWith(bytes: Uint8Array, magic: string): boolean {
  if (bytes.length < magic.length) return false;
  for (let i = 0; i < magic.length; i++) if (bytes[i] !== magic.charCodeAt(i)) return false;
  return true;
}

export default {
  async request(flow) {
    delete flow.request.headers["accept-encoding"];
    if (flow.request.method === "POST" && flow.request.url.startsWith(BATCH_API)) {
      let action: unknown;
      try {
        action = (JSON.parse(await flow.request.text()) as { action?: unknown }).action;
      } catch {
        flow.respond(400, "the batch API takes a JSON body\n");
        return;
      }
      if (typeof action !== "string" || !READ_ACTIONS.has(action)) {
        flow.respond(403, `batch action ${JSON.stringify(action)} is not allowed from this pod\n`);
      }
    }
  },
  async response(flow) {
    const response = flow.response!;
    const encoding = response.headers["content-encoding"];
    if (encoding !== undefined && encoding !== "identity") {
      flow.respond(502, `the response came ${String(encoding)}-encoded and cannot be checked\n`);
      return;
    }
    const head = await response.peek(8);
    for (const [magic, what] of REFUSED_MAGIC) {
      if (startsWith(head, magic)) flow.respond(403, `downloading ${what} is not allowed from this pod\n`);
    }
  },
} satisfies Filter;

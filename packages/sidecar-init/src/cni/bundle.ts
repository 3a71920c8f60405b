// Bundles the plugin (main.ts and everything it imports, node_modules included) into one CommonJS file,
// the form the installer copies to nodes beside a node binary. Run at image build (npm run bundle:cni)
// and by the tests; esbuild comes from the workspace (a dependency of @tproxy/tproxy).
import { mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** Where the bundle goes by default: dist/cni/tproxy-cni.cjs of this package. */
export const DEFAULT_BUNDLE = fileURLToPath(new URL("../../dist/cni/tproxy-cni.cjs", import.meta.url));

export async function bundlePlugin(outfile: string = DEFAULT_BUNDLE): Promise<string> {
  const { build } = await import("esbuild");
  mkdirSync(dirname(outfile), { recursive: true });
  await build({
    entryPoints: [join(dirname(fileURLToPath(import.meta.url)), "../../src/cni/main.ts")],
    bundle: true,
    platform: "node",
    format: "cjs",
    target: "node24",
    outfile,
    logLevel: "warning",
    banner: { js: "// tproxy-cni: the chained CNI plugin of tproxy (lock.mode cni), bundled." },
  });
  return outfile;
}

// Loaded with `--import` by `npm run mutation` (main process and Stryker's workers).
// Mocha 12 ships its cli internals as `lib/cli/*.cjs`; @stryker-mutator/mocha-runner 10.0.0 still
// requires them without an extension and fails to load. This maps those three requires to the `.cjs`
// files until a runner release finds them itself (stryker-js pull request 6205).
import { registerHooks } from "node:module";

const CLI_INTERNAL = /[\\/]mocha[\\/]lib[\\/]cli[\\/](run-helpers|options|collect-files)$/;

registerHooks({
  resolve(specifier, context, nextResolve) {
    return nextResolve(CLI_INTERNAL.test(specifier) ? `${specifier}.cjs` : specifier, context);
  },
});

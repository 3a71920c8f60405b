#!/bin/sh
# Copies what one image needs out of the build stage's /src into $1: the production node_modules that
# `npm ci --omit=dev --workspace @tproxy/$2` installed for that package alone, the package's
# package.json, bin/ and dist/ (and its own node_modules, if npm nested any there), the package.json and
# dist/ of each workspace package it depends on (npm links those, e.g. node_modules/@tproxy/iptables ->
# ../../packages/iptables, so without them the link dangles), and for tproxy the addon's
# build/Release/*.node. Nothing else: no sources, no compilers, no test files, no other package.
#   sh docker/assemble.sh /out podwatch
set -eu
out="${1:?usage: assemble.sh OUT PACKAGE}"
pkg="${2:?usage: assemble.sh OUT PACKAGE (tproxy, podwatch or sidecar-init)}"
dir="packages/$pkg"
# run from the build stage's WORKDIR (the copied sources)
test -f "$dir/package.json" || { echo "assemble.sh: no package $dir" >&2; exit 1; }
mkdir -p "$out/$dir"
cp -a node_modules package.json "$out/"
cp -a "$dir/package.json" "$dir/bin" "$dir/dist" "$out/$dir/"
if [ -d "$dir/node_modules" ]; then cp -a "$dir/node_modules" "$out/$dir/"; fi
# The @tproxy/* packages it depends on, and theirs, by their package.json (node is in the build stage).
deps=$(node -e '
  const fs = require("node:fs");
  const seen = new Set();
  const todo = [process.argv[1]];
  while (todo.length > 0) {
    const file = `packages/${todo.pop()}/package.json`;
    if (!fs.existsSync(file)) continue; // named below, as missing from the build
    const json = JSON.parse(fs.readFileSync(file, "utf8"));
    for (const d of Object.keys(json.dependencies ?? {})) {
      const name = d.startsWith("@tproxy/") ? d.slice("@tproxy/".length) : undefined;
      if (name === undefined || name === process.argv[1] || seen.has(name)) continue;
      seen.add(name);
      todo.push(name);
    }
  }
  process.stdout.write([...seen].join(" "));
' "$pkg")
for dep in $deps; do
  test -f "packages/$dep/package.json" || { echo "assemble.sh: $pkg depends on @tproxy/$dep, but packages/$dep is not in the build" >&2; exit 1; }
  test -d "packages/$dep/dist" || { echo "assemble.sh: packages/$dep/dist is missing (not built)" >&2; exit 1; }
  mkdir -p "$out/packages/$dep"
  cp -a "packages/$dep/package.json" "packages/$dep/dist" "$out/packages/$dep/"
  if [ -d "packages/$dep/node_modules" ]; then cp -a "packages/$dep/node_modules" "$out/packages/$dep/"; fi
done
if [ "$pkg" = tproxy ]; then
  mkdir -p "$out/$dir/build/Release"
  cp -a "$dir"/build/Release/*.node "$out/$dir/build/Release/"
  ls "$out/$dir/build/Release/"*.node >/dev/null
fi
# Type declarations and source maps of the dependencies are read by no running program: dropped (they
# are half of @kubernetes/client-node's 65 MiB). The proxy keeps them: it compiles filters, which
# import types.
if [ "$pkg" != tproxy ]; then
  find "$out/node_modules" -type f \( -name '*.d.ts' -o -name '*.d.mts' -o -name '*.d.cts' -o -name '*.map' \) -delete
fi
# Every link npm made in node_modules leads somewhere in the image (a workspace package left out would not).
for l in "$out"/node_modules/@tproxy/*; do
  if [ -L "$l" ] && [ ! -e "$l" ]; then echo "assemble.sh: $l -> $(readlink "$l") leads nowhere in $out" >&2; exit 1; fi
done
# The bins are committed executable (bin/*.js import ../dist/cli.js); make sure the copy kept that.
for b in "$out/$dir"/bin/*.js; do test -x "$b"; done

#!/bin/sh
# Copies what the runtime images need out of the build stage's /src into $1 (default /out):
# production node_modules, each workspace package's package.json and dist/ (and its own node_modules,
# if npm nested any there), and the tproxy addon's build/Release/*.node. Nothing else: no sources, no
# compilers, no test files.
set -eu
out="${1:-/out}"
# run from the build stage's WORKDIR (the copied sources)
mkdir -p "$out"
cp -a node_modules package.json "$out/"
for pkg in tproxy podwatch sidecar-init; do
  dir="packages/$pkg"
  mkdir -p "$out/$dir"
  cp -a "$dir/package.json" "$dir/dist" "$out/$dir/"
  if [ -d "$dir/node_modules" ]; then cp -a "$dir/node_modules" "$out/$dir/"; fi
  # tsc does not keep the executable bit of the bins' targets: set it here.
  chmod 0755 "$out/$dir/dist/cli.js"
done
mkdir -p "$out/packages/tproxy/build/Release"
cp -a packages/tproxy/build/Release/*.node "$out/packages/tproxy/build/Release/"
# The packages' own build scripts are not needed at run time, the .bin links are (tproxy, tproxy-podwatch, ...).
test -x "$out/packages/tproxy/dist/cli.js"
ls "$out/packages/tproxy/build/Release/"*.node >/dev/null

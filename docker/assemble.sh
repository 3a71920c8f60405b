#!/bin/sh
# Copies what one image needs out of the build stage's /src into $1: the production node_modules that
# `npm ci --omit=dev --workspace @tproxy/$2` installed for that package alone, the package's
# package.json, bin/ and dist/ (and its own node_modules, if npm nested any there), and for tproxy the
# addon's build/Release/*.node. Nothing else: no sources, no compilers, no test files, no other package.
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
if [ "$pkg" = tproxy ]; then
  mkdir -p "$out/$dir/build/Release"
  cp -a "$dir"/build/Release/*.node "$out/$dir/build/Release/"
  ls "$out/$dir/build/Release/"*.node >/dev/null
fi
# The bins are committed executable (bin/*.js import ../dist/cli.js); make sure the copy kept that.
for b in "$out/$dir"/bin/*.js; do test -x "$b"; done

#!/usr/bin/env bash
# Prints the Debian packages test/support/prerequisites.txt names, once each, in file order, on one
# line. Plain bash: .ci/run needs the list before `npm ci` has installed the project's Node.js.
set -euo pipefail
list="$(dirname "$0")/prerequisites.txt"
pkgs=()
while read -r what pkg _; do
  [[ -z "$what" || "$what" == \#* ]] && continue
  [[ -n "$pkg" ]] || { echo "$list: \"$what\" names no Debian package" >&2; exit 1; }
  [[ " ${pkgs[*]-} " == *" $pkg "* ]] || pkgs+=("$pkg")
done <"$list"
echo "${pkgs[*]}"

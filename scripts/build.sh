#!/usr/bin/env bash
# Builds the single binaries: dist/pandaproxy-linux-x64 and dist/pandaproxy-linux-arm64 (64-bit Raspberry Pi OS).
# The version comes from package.json and the git commit; bun fetches the arm64 runtime from the npm registry.
#
#   scripts/build.sh [--out DIR]      (default DIR: dist)
set -euo pipefail
cd "$(dirname "$0")/.."
out=dist
while (( $# )); do
  case "$1" in
    --out) [[ $# -ge 2 ]] || { echo "build.sh: --out needs a directory" >&2; exit 2; }; out="$2"; shift ;;
    -h|--help) sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build.sh: unknown argument \"$1\" (see --help)" >&2; exit 2 ;;
  esac
  shift
done
BUN=node_modules/.bin/bun
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$([[ -n "$(git status --porcelain 2>/dev/null)" ]] && echo "+dirty" || true)
mkdir -p "$out"
for target in x64 arm64; do
  echo "build: $out/pandaproxy-linux-$target"
  "$BUN" build main.ts --compile --minify --sourcemap=none --target="bun-linux-$target" \
    --define "PANDAPROXY_BUILD=\"$commit$dirty\"" --outfile "$out/pandaproxy-linux-$target"
done
ls -l "$out"/pandaproxy-linux-*

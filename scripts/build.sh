#!/usr/bin/env bash
# Builds the single binaries: dist/pandaproxy-linux-x64 and dist/pandaproxy-linux-arm64 (64-bit Raspberry Pi OS).
# The version comes from package.json and the git commit; bun fetches the arm64 runtime from the npm registry.
set -euo pipefail
cd "$(dirname "$0")/.."
BUN=node_modules/.bin/bun
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$([[ -n "$(git status --porcelain 2>/dev/null)" ]] && echo "+dirty" || true)
mkdir -p dist
for target in x64 arm64; do
  echo "build: dist/pandaproxy-linux-$target"
  "$BUN" build main.ts --compile --minify --sourcemap=none --target="bun-linux-$target" \
    --define "PANDAPROXY_BUILD=\"$commit$dirty\"" --outfile "dist/pandaproxy-linux-$target"
done
ls -l dist/

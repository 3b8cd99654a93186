#!/usr/bin/env bash
# `npm run release`: the archives people install. Builds both binaries with scripts/build.sh, then packs
#   DIR/pandaproxy-<version>-linux-x64.tar.gz and DIR/pandaproxy-<version>-linux-arm64.tar.gz
# (each one folder pandaproxy-<version>-linux-<arch>/ with the binary `pandaproxy`, README.md, LICENSE,
# config.example.toml, pandaproxy.service and install.sh) and DIR/SHA256SUMS (`sha256sum -c` format).
#
#   scripts/release.sh [--out DIR] [--no-build]
#
# --out DIR     where to build and pack (default: dist)
# --no-build    pack the binaries already in DIR (DIR/pandaproxy-linux-<arch>) instead of building them
# <version> is package.json's; the binaries' --version also names the git commit. The archives are
# reproducible: sorted names, owner 0/0, every mtime the commit's time, gzip without a name or time stamp.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "release.sh: $*" >&2; exit 1; }
out=dist build=1
while (( $# )); do
  case "$1" in
    --out) [[ $# -ge 2 ]] || fail "--out needs a directory"; out="$2"; shift ;;
    --no-build) build=0 ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "release.sh: unknown argument \"$1\" (see --help)" >&2; exit 2 ;;
  esac
  shift
done

version=$(node -p 'require("./package.json").version' 2>/dev/null) || fail "cannot read the version from package.json"
[[ "$version" =~ ^[0-9]+\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.-]+)?$ ]] || fail "package.json version \"$version\" is not a version number"
# Every file in the archives gets the commit's time, so the same commit packs to the same bytes.
epoch=$(git log -1 --format=%ct 2>/dev/null || echo 0)
files=(README.md LICENSE config.example.toml scripts/pandaproxy.service scripts/install.sh)
for f in "${files[@]}"; do [[ -f "$f" ]] || fail "$f is missing"; done
if [[ -n "$(git status --porcelain 2>/dev/null)" ]]; then
  echo "release.sh: warning: the working tree has uncommitted changes; the binaries will say \"+dirty\"" >&2
fi

mkdir -p "$out"
(( build )) && bash scripts/build.sh --out "$out"

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
archives=()
for arch in x64 arm64; do
  binary="$out/pandaproxy-linux-$arch"
  [[ -f "$binary" ]] || fail "$binary is missing (run without --no-build)"
  name="pandaproxy-$version-linux-$arch"
  mkdir "$stage/$name"
  install -m 0755 "$binary" "$stage/$name/pandaproxy"
  install -m 0755 scripts/install.sh "$stage/$name/install.sh"
  install -m 0644 README.md LICENSE config.example.toml scripts/pandaproxy.service "$stage/$name/"
  tar --create --directory "$stage" --sort=name --format=gnu --owner=0 --group=0 --numeric-owner \
    --mtime="@$epoch" --mode='go-w' "$name" | gzip -n > "$out/$name.tar.gz.part"
  mv -f "$out/$name.tar.gz.part" "$out/$name.tar.gz"
  archives+=("$name.tar.gz")
done
(cd "$out" && sha256sum "${archives[@]}" > SHA256SUMS.part && mv -f SHA256SUMS.part SHA256SUMS)
echo "release: $("$out/pandaproxy-linux-x64" --version)"
(cd "$out" && ls -l "${archives[@]}" SHA256SUMS && cat SHA256SUMS)

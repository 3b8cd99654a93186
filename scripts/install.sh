#!/usr/bin/env bash
# Installs a pandaproxy binary (e.g. on a Raspberry Pi with a 64-bit OS) as /usr/local/bin/pandaproxy and sets
# it up as a systemd service with `pandaproxy service install`.
#
#   sudo scripts/install.sh [BINARY] [--config FILE] [--user NAME] [--dry-run]
#
# BINARY defaults to pandaproxy-linux-<arch> found next to this script, in ./dist or ./ (the file the release
# page or scripts/build.sh gives you). --dry-run shows what would happen and changes nothing.
# DESTDIR=/some/root copies the binary below that root and only shows the service steps (for packaging/tests).
set -euo pipefail

usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; }
fail() { echo "install.sh: $*" >&2; exit 1; }

binary="" dry_run=0 pass=()
while (( $# )); do
  case "$1" in
    --dry-run) dry_run=1 ;;
    --config|--user) [[ $# -ge 2 ]] || fail "$1 needs a value"; pass+=("$1" "$2"); shift ;;
    -h|--help) usage; exit 0 ;;
    -*) usage >&2; exit 2 ;;
    *) [[ -z "$binary" ]] || fail "only one BINARY, got \"$binary\" and \"$1\""; binary="$1" ;;
  esac
  shift
done
# --config relative to where the user stands, whatever the binary does with its working directory.
for i in "${!pass[@]}"; do
  if [[ "${pass[$i]}" == --config && -n "${pass[$((i + 1))]:-}" ]]; then pass[$((i + 1))]=$(realpath "${pass[$((i + 1))]}"); fi
done

# The machine and the bitness of its userland: a Pi can run a 64-bit kernel (uname says aarch64) under a 32-bit
# Raspberry Pi OS, and Bun has no 32-bit ARM build. PANDAPROXY_MACHINE/PANDAPROXY_LONG_BIT let tests pretend.
machine=${PANDAPROXY_MACHINE:-$(uname -m)}
long_bit=${PANDAPROXY_LONG_BIT:-$(getconf LONG_BIT 2>/dev/null || echo 64)}
need_64="pandaproxy needs a 64-bit OS: install Raspberry Pi OS (64-bit) on a Pi 3, 4, 5 or Zero 2 W (a Pi 1 or the first Pi Zero cannot run it)"
case "$machine" in
  aarch64|arm64) arch=arm64 ;;
  x86_64|amd64) arch=x64 ;;
  armv6l|armv7l|armv8l|armhf|arm) fail "this is a 32-bit ARM system ($machine). $need_64" ;;
  *) fail "no pandaproxy build for this machine ($machine); builds exist for aarch64 (arm64) and x86_64" ;;
esac
[[ "$long_bit" == 64 ]] || fail "this $machine system runs a 32-bit userland. $need_64"

here=$(cd "$(dirname "$0")" && pwd)
if [[ -z "$binary" ]]; then
  for candidate in "$here/pandaproxy-linux-$arch" "$here/../dist/pandaproxy-linux-$arch" "./dist/pandaproxy-linux-$arch" "./pandaproxy-linux-$arch"; do
    if [[ -f "$candidate" ]]; then binary=$(realpath "$candidate"); break; fi
  done
  [[ -n "$binary" ]] || fail "no pandaproxy-linux-$arch here: download it (or build it with scripts/build.sh) and pass its path"
fi
[[ -f "$binary" ]] || fail "$binary does not exist"
[[ -x "$binary" ]] || chmod +x "$binary" 2>/dev/null || true

# Run it once before installing: a binary for the wrong CPU fails here ("Exec format error", "Illegal instruction").
version=$("$binary" --version 2>&1) || fail "$binary does not run on this $machine system: $version"
echo "install.sh: $version ($arch)"

target="${DESTDIR:-}/usr/local/bin/pandaproxy"
if (( dry_run )); then
  echo "install.sh: would copy $binary to $target (mode 0755), then run: $target service install ${pass[*]:-}"
  exec "$binary" service install "${pass[@]}" --dry-run
fi
if [[ -z "${DESTDIR:-}" && $(id -u) != 0 ]]; then fail "needs root: run it with sudo (or add --dry-run to see what it would do)"; fi

mkdir -p "$(dirname "$target")"
# Copy beside the target and rename, so a running service's binary is replaced atomically.
install -m 0755 "$binary" "$target.new"
mv -f "$target.new" "$target"
echo "install.sh: installed $target"
if [[ -n "${DESTDIR:-}" ]]; then
  exec "$target" service install "${pass[@]}" --dry-run
fi
exec "$target" service install "${pass[@]}"

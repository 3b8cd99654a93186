#!/usr/bin/env bash
# Installs, upgrades or removes pandaproxy (e.g. on a Raspberry Pi with a 64-bit OS): the binary goes to
# /usr/local/bin/pandaproxy and runs as the systemd service `pandaproxy service install` sets up.
#
#   sudo ./install.sh [ARCHIVE|BINARY] [--config FILE] [--user NAME] [--dry-run] [--root DIR]
#   sudo ./install.sh --uninstall [--dry-run] [--root DIR]
#
# ARCHIVE is a release pandaproxy-<version>-linux-<arch>.tar.gz, BINARY a bare binary; without either, the
# `pandaproxy` beside this script (an unpacked release) or pandaproxy-linux-<arch> in ./dist or ./ is used.
# When a SHA256SUMS file lies beside ARCHIVE or BINARY, its checksum must match or nothing is installed.
# Already installed: an upgrade in place. The service is stopped, the binary replaced (the old one is kept
# as pandaproxy.previous) and started again; if it does not stay active, the old binary is put back.
# The configuration (/etc/pandaproxy) and the state (/var/lib/pandaproxy, the CA slicers trust) are kept.
# --uninstall stops and removes the service and the binary, and keeps the configuration, state and user.
# --dry-run shows what would happen and changes nothing. --root DIR works below DIR instead of / (tests,
# images): the same steps, systemctl included, but no user is created. DESTDIR=DIR only stages the binary
# below DIR and shows the service steps (for packaging).
set -euo pipefail

usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; }
fail() { echo "install.sh: $*" >&2; exit 1; }
say() { echo "install.sh: $*"; }

UNIT=pandaproxy.service
# How long a started service must stay active before an upgrade counts as done (one check a second).
SETTLE_SECONDS=${PANDAPROXY_SETTLE_SECONDS:-3}

source_file="" dry_run=0 uninstall=0 root="" user=pandaproxy config="" pass=()
while (( $# )); do
  case "$1" in
    --dry-run) dry_run=1 ;;
    --uninstall) uninstall=1 ;;
    --root) [[ $# -ge 2 ]] || fail "--root needs a directory"; root=$(realpath -m "$2"); shift ;;
    --config) [[ $# -ge 2 ]] || fail "--config needs a file"; config=$(realpath -m "$2"); pass+=(--config "$config"); shift ;;
    --user) [[ $# -ge 2 ]] || fail "--user needs a name"; user="$2"; pass+=(--user "$2"); shift ;;
    -h|--help) usage; exit 0 ;;
    -*) usage >&2; exit 2 ;;
    *) [[ -z "$source_file" ]] || fail "only one ARCHIVE or BINARY, got \"$source_file\" and \"$1\""; source_file="$1" ;;
  esac
  shift
done
[[ -n "$root" && -n "${DESTDIR:-}" ]] && fail "use either --root or DESTDIR, not both"
[[ "$root" == / ]] && root=""
target="${root:-${DESTDIR:-}}/usr/local/bin/pandaproxy"
unit_file="${root:-${DESTDIR:-}}/etc/systemd/system/$UNIT"
config_path="$root/etc/pandaproxy/printers.toml"

need_root() {
  if [[ -z "$root" && -z "${DESTDIR:-}" && $(id -u) != 0 ]]; then fail "needs root: run it with sudo (or add --dry-run to see what it would do)"; fi
}
systemctl_() { say "systemctl $*"; systemctl "$@"; }

# Active now, and still active after SETTLE_SECONDS (a unit that crashes at once is "activating" again).
stays_active() {
  local i
  for (( i = 0; i <= SETTLE_SECONDS; i++ )); do
    systemctl is-active --quiet "$UNIT" || return 1
    (( i < SETTLE_SECONDS )) && sleep 1
  done
  return 0
}

if (( uninstall )); then
  [[ -z "$source_file" ]] || fail "--uninstall takes no ARCHIVE or BINARY"
  [[ -z "${DESTDIR:-}" ]] || fail "--uninstall works on an installed system (or --root DIR), not on DESTDIR"
  steps=("systemctl disable --now $UNIT" "remove $unit_file" "systemctl daemon-reload" "remove $target and $target.previous")
  if (( dry_run )); then
    say "would:"; printf '  %s\n' "${steps[@]}"; exit 0
  fi
  need_root
  [[ -e "$unit_file" || -e "$target" ]] || fail "pandaproxy is not installed here (no $unit_file, no $target)"
  systemctl_ disable --now "$UNIT" || say "(the service was not loaded)"
  rm -f "$unit_file"
  systemctl_ daemon-reload
  rm -f "$target" "$target.previous"
  say "removed the service and $target. Kept $root/etc/pandaproxy, $root/var/lib/pandaproxy (the CA slicers trust)" \
    "and the user \"$user\"; to remove them too: rm -r $root/etc/pandaproxy $root/var/lib/pandaproxy && userdel $user"
  exit 0
fi

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
if [[ -z "$source_file" ]]; then
  for candidate in "$here/pandaproxy" "$here/pandaproxy-linux-$arch" "$here/../dist/pandaproxy-linux-$arch" "./dist/pandaproxy-linux-$arch" "./pandaproxy-linux-$arch"; do
    if [[ -f "$candidate" ]]; then source_file=$(realpath "$candidate"); break; fi
  done
  [[ -n "$source_file" ]] || fail "no pandaproxy binary here: pass the release archive (pandaproxy-<version>-linux-$arch.tar.gz) or a binary"
fi
[[ -f "$source_file" ]] || fail "$source_file does not exist"

# SHA256SUMS beside the file: its line for the file must match; no line for it is refused too.
sums="$(dirname "$source_file")/SHA256SUMS"
name=$(basename "$source_file")
if [[ -f "$sums" ]]; then
  expected=$(awk -v f="$name" '$2 == f || $2 == "*" f { print $1; exit }' "$sums")
  [[ -n "$expected" ]] || fail "$sums has no line for $name: is it another release's? Nothing installed"
  actual=$(sha256sum "$source_file" | cut -d' ' -f1)
  [[ "$actual" == "$expected" ]] || fail "checksum mismatch: $name has sha256 $actual but $sums says $expected: the download is damaged or not that release; download it again. Nothing installed"
  say "checksum OK: $name (SHA256SUMS)"
else
  say "no SHA256SUMS beside $name: its checksum is not checked"
fi

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
binary="$source_file"
if [[ "$name" == *.tar.gz || "$name" == *.tgz ]]; then
  if [[ "$name" =~ -linux-(x64|arm64)\.t ]] && [[ "${BASH_REMATCH[1]}" != "$arch" ]]; then
    fail "$name is the ${BASH_REMATCH[1]} build; this $machine machine needs the linux-$arch archive"
  fi
  tar -xzf "$source_file" -C "$scratch" --no-same-owner || fail "cannot unpack $name"
  binary=$(find "$scratch" -mindepth 2 -maxdepth 2 -type f -name pandaproxy | head -1)
  [[ -n "$binary" ]] || fail "$name holds no pandaproxy-*/pandaproxy: not a pandaproxy release archive"
fi
[[ -x "$binary" ]] || chmod +x "$binary" 2>/dev/null || true

# Run it once before installing: a binary for the wrong CPU fails here ("Exec format error", "Illegal instruction").
version=$("$binary" --version 2>&1) || fail "$binary does not run on this $machine system: $version"
say "$version ($arch)"

# Copy beside the target and rename, so a running service's binary is replaced atomically.
place() { install -m 0755 "$1" "$target.new" && mv -f "$target.new" "$target"; }

if [[ -f "$target" && -f "$unit_file" && -z "${DESTDIR:-}" ]]; then
  # --- upgrade in place
  old_version=$("$target" --version 2>&1) || old_version="the installed binary (it does not run)"
  if cmp -s "$binary" "$target"; then say "$version is already installed; nothing to do"; exit 0; fi
  was_active=0
  systemctl is-active --quiet "$UNIT" && was_active=1
  if (( dry_run )); then
    say "would upgrade $old_version to $version: keep it as $target.previous, systemctl stop $UNIT, replace $target," \
      "$( ((was_active)) && echo "systemctl start $UNIT and roll back unless it stays active ${SETTLE_SECONDS}s" || echo "leave the service stopped (it is not running now)")"
    exit 0
  fi
  need_root
  [[ -z "$config" ]] || say "upgrade: $config_path is kept ($config is not copied)"
  install -m 0755 "$target" "$target.previous"
  (( was_active )) && systemctl_ stop "$UNIT"
  place "$binary"
  say "installed $target: $version (the previous one is $target.previous)"
  if (( ! was_active )); then
    say "the service was not running before the upgrade, so it is not started: systemctl start $UNIT"
    exit 0
  fi
  if systemctl_ start "$UNIT" && stays_active; then
    say "upgraded $old_version to $version; $UNIT is active"
    exit 0
  fi
  say "$version did not stay active: rolling back to $old_version" >&2
  systemctl stop "$UNIT" >/dev/null 2>&1 || true
  place "$target.previous"
  if systemctl_ start "$UNIT" && stays_active; then
    fail "upgrade to $version failed: it did not stay active, so $old_version was put back and is running again; see journalctl -u pandaproxy -e"
  fi
  fail "upgrade to $version failed and $old_version, put back, does not start either; see journalctl -u pandaproxy -e"
fi

# --- fresh install
if (( dry_run )); then
  say "would copy $binary to $target (mode 0755), then run: $target service install ${pass[*]:-}"
  exec "$binary" service install "${pass[@]}" --dry-run
fi
need_root
mkdir -p "$(dirname "$target")"
place "$binary"
say "installed $target"
if [[ -n "${DESTDIR:-}" ]]; then
  exec "$target" service install "${pass[@]}" --dry-run
fi
if [[ -z "$root" ]]; then
  exec "$target" service install "${pass[@]}"
fi
# --root DIR: `service install` writes to / only, so lay out the same files below DIR here: the unit shipped
# beside this script (release archive) or in scripts/ (checkout), which is the one `service install` writes.
shipped_unit="$here/$UNIT"
[[ -f "$shipped_unit" ]] || fail "no $UNIT beside $0 to install below --root"
mkdir -p "$(dirname "$unit_file")" "$root/etc/pandaproxy" "$root/var/lib/pandaproxy"
sed -e "s/^User=.*/User=$user/" -e "s/^Group=.*/Group=$user/" "$shipped_unit" > "$unit_file"
if [[ -n "$config" && ! -e "$config_path" ]]; then install -m 0640 "$config" "$config_path"; say "copied $config to $config_path"; fi
say "wrote $unit_file (--root: no user \"$user\" is created)"
systemctl_ daemon-reload
systemctl_ enable "$UNIT"
if [[ -f "$config_path" ]]; then
  systemctl_ start "$UNIT"
  stays_active || fail "installed, but $UNIT does not stay active; see journalctl -u pandaproxy -e"
  say "installed $version; $UNIT is active"
else
  say "installed $version; not started: $config_path does not exist yet"
fi

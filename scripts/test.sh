#!/usr/bin/env bash
# `npm test`: make sure the Debian peers the tests talk to are installed (installing them when we are root
# with apt-get, otherwise stopping with the exact command to run), type-check, then run every test with bun.
set -uo pipefail
cd "$(dirname "$0")/.."

missing=()
while read -r probe package; do
  [[ -z "$probe" || "$probe" == \#* ]] && continue
  if [[ "$probe" == /* ]]; then [[ -e "$probe" ]] && continue
  else command -v "$probe" >/dev/null 2>&1 && continue
  fi
  [[ " ${missing[*]:-} " == *" $package "* ]] || missing+=("$package")
done < scripts/test-peers.txt

if (( ${#missing[@]} )); then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    echo "npm test: installing the test peers: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >/tmp/pandaproxy-apt.log 2>&1 || {
      tail -20 /tmp/pandaproxy-apt.log; echo "npm test: apt-get install failed (log above)"; exit 1; }
    # vsftpd and mosquitto start system services on install; the tests run their own copies.
    (systemctl stop vsftpd mosquitto || service vsftpd stop; service mosquitto stop) >/dev/null 2>&1 || true
    pkill -x vsftpd >/dev/null 2>&1; pkill -x mosquitto >/dev/null 2>&1 || true
  else
    echo "npm test: these Debian packages are needed by the tests; install them with:"
    echo "  sudo apt-get update && sudo apt-get install -y ${missing[*]}"
    exit 1
  fi
fi

BUN=node_modules/.bin/bun
[[ -x "$BUN" ]] || { echo "npm test: bun is not installed here; run: npm install"; exit 1; }

echo "npm test: type-checking"
node_modules/.bin/tsc --noEmit -p . || { echo "npm test: type errors (above)"; exit 1; }

log=$(mktemp)
"$BUN" test "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
passed=$(grep -Eo '^ *[0-9]+ pass$' "$log" | tail -1 | grep -Eo '[0-9]+')
failed=$(grep -Eo '^ *[0-9]+ fail$' "$log" | tail -1 | grep -Eo '[0-9]+')
rm -f "$log"
echo "tests: ${passed:-0} passed, ${failed:-0} failed"
if [[ "${passed:-0}" == 0 ]]; then echo "npm test: no test ran"; exit 1; fi
exit "$status"

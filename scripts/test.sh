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

# tests/outage-long.test.ts is a real 10 minute outage and mostly waits: with no arguments it runs in its own
# `bun test` beside the others (its loopback range, 127.0.48.0/24, is its own), so the suite takes ~15 minutes,
# not 25. Its output follows the others'.
LONG=tests/outage-long.test.ts
log=$(mktemp)
long_log=$(mktemp)
long_pid=
trap '[[ -n "$long_pid" ]] && kill "$long_pid" 2>/dev/null' EXIT
if (( $# == 0 )) && [[ -f "$LONG" ]]; then
  "$BUN" test "./$LONG" >"$long_log" 2>&1 &
  long_pid=$!
  "$BUN" test --path-ignore-patterns="$LONG" 2>&1 | tee "$log"
  status=${PIPESTATUS[0]}
else
  "$BUN" test "$@" 2>&1 | tee "$log"
  status=${PIPESTATUS[0]}
fi
count() { grep -Eo "^ *[0-9]+ $1\$" "$2" | tail -1 | grep -Eo '[0-9]+' || echo 0; }
passed=$(count pass "$log")
failed=$(count fail "$log")
if [[ -n "$long_pid" ]]; then
  echo "npm test: waiting for $LONG (started beside the others)"
  wait "$long_pid"
  long_status=$?
  cat "$long_log"
  (( long_status == 0 )) || status=$long_status
  passed=$(( passed + $(count pass "$long_log") ))
  failed=$(( failed + $(count fail "$long_log") ))
fi
rm -f "$log" "$long_log"
echo "tests: ${passed:-0} passed, ${failed:-0} failed"
if [[ "${passed:-0}" == 0 ]]; then echo "npm test: no test ran"; exit 1; fi
exit "$status"

#!/bin/sh
# Turns the add-on's options (Home Assistant writes them to /data/options.json) into a pandaproxy printers.toml.
#
#   options-to-toml.sh [OPTIONS_JSON] > printers.toml      (default OPTIONS_JSON: /data/options.json)
#
# Every string goes through jq's tojson: a JSON string is a valid TOML basic string, so quotes, backslashes
# and control characters in an option cannot break out of it. Unknown or missing options are left to
# `pandaproxy check`, which names the key.
set -eu
case "${1:-}" in -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
options=${1:-/data/options.json}
[ -r "$options" ] || { echo "options-to-toml.sh: cannot read $options" >&2; exit 1; }
command -v jq >/dev/null || { echo "options-to-toml.sh: needs jq" >&2; exit 1; }
jq -r '
  def str: tojson;
  def opt($key; $toml): if (.[$key] // "") != "" then "\($toml) = \(.[$key] | str)" else empty end;
  "# Written by options-to-toml.sh from the add-on options at every start: edit the options, not this file.",
  "[proxy]",
  "state_dir = \"/data\"",
  opt("log_level"; "log_level"),
  "",
  "[web]",
  "listen = \((.web_listen // "0.0.0.0:8080") | str)",
  opt("web_username"; "username"),
  opt("web_password"; "password"),
  ((.printers // [])[] |
    "",
    "[[printer]]",
    "name = \(.name | str)",
    "type = \((.type // "bambu") | str)",
    "host = \(.host | str)",
    "serial = \(.serial | str)",
    (if (.type // "bambu") == "flashforge" then "check_code = \(.access_code | str)" else "access_code = \(.access_code | str)" end),
    "bind = \(.bind | str)",
    opt("model"; "model"),
    opt("viewer_access_code"; "viewer_access_code"))
' "$options"

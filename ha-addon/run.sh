#!/bin/sh
# The add-on's command: pandaproxy with the printers.toml from the add-on's configuration folder when there is
# one (/config/printers.toml, for keys the options do not offer), else one written from the options.
set -eu
config=/config/printers.toml
if [ ! -f "$config" ]; then
  config=/data/printers.toml
  /usr/local/lib/pandaproxy-addon/options-to-toml.sh /data/options.json > "$config.new"
  mv "$config.new" "$config"
  echo "pandaproxy add-on: $config written from the add-on options"
else
  echo "pandaproxy add-on: using $config from the add-on configuration folder (the options are ignored)"
fi
pandaproxy check --config "$config" || { echo "pandaproxy add-on: fix the problems above in the add-on options (or in $config)"; exit 1; }
exec pandaproxy --config "$config"

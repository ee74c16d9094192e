#!/usr/bin/env bash
# Starts `rockfish standalone` on free loopback ports and runs the ali-ons SDK against it.
# Usage: compat/ali-ons/run.sh path/to/rockfish
set -euo pipefail
bin=${1:?usage: run.sh path/to/rockfish}
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
if [ ! -d node_modules/ali-ons ]; then
  timeout 300 npm install --no-audit --no-fund --loglevel=error
fi
data=$(mktemp -d)
log=$(mktemp)
"$bin" standalone --namesrv-listen 127.0.0.1:0 --broker-listen 127.0.0.1:0 --segment-size 67108864 --data-dir "$data" >"$log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$data" "$log"' EXIT
for _ in $(seq 1 100); do
  grep -q "rockfish standalone:" "$log" && break
  sleep 0.1
done
namesrv=$(sed -n 's/.*name server \([^,]*\),.*/\1/p' "$log" | head -n1)
[ -n "$namesrv" ] || { echo "standalone did not start:"; cat "$log"; exit 1; }
NAMESRV=$namesrv timeout 90 node test.js

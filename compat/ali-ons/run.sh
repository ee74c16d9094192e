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
# shellcheck source=../standalone.sh
source "$here/../standalone.sh"
NAMESRV=$namesrv timeout 90 node test.js

#!/usr/bin/env bash
# Starts `rockfish standalone` on free loopback ports and runs RocketMQ 5's Node.js SDK (npm
# rocketmq-client-nodejs, gRPC) against its gRPC port: normal, FIFO, delay and
# transactional sends; a simple consumer that acks, lets one message lapse and gets it again;
# a FIFO group's next message held until the one before is acked; a push consumer; a failing
# message reaching the DLQ.
# Usage: compat/grpc-node/run.sh path/to/rockfish
set -euo pipefail
bin=${1:?usage: run.sh path/to/rockfish}
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
if [ ! -d node_modules/rocketmq-client-nodejs ]; then
  timeout 300 npm install --no-audit --no-fund --loglevel=error
fi
TX_CHECK_MS=3000
# shellcheck source=../standalone.sh
source "$here/../standalone.sh"
[ -n "$grpc" ] || { echo "standalone serves no gRPC port:"; cat "$log"; exit 1; }
suffix=$(date +%s)
for t in Normal Fifo Delay Tx Push Poison Held; do
  timeout 30 "$bin" admin -n "$namesrv" updateTopic -t "Js$t$suffix" -r 4 -w 4 >/dev/null
done
timeout 30 "$bin" admin -n "$namesrv" updateSubGroup -g "JsPoisonGroup$suffix" -r 2 >/dev/null
timeout 30 "$bin" admin -n "$namesrv" updateSubGroup -g "JsFifoGroup$suffix" -o true >/dev/null
sleep 1 # the name server learns the topics with the broker's next registration
# The SDK logs to ~/logs/rocketmq; keep that out of the user's home.
if HOME=$work GRPC=$grpc SUFFIX=$suffix timeout 300 node test.js >"$work/check.out" 2>"$work/check.err"; then
  cat "$work/check.out"
else
  cat "$work/check.out"
  echo "--- SDK stderr (last 30 lines)"
  tail -n 30 "$work/check.err"
  echo "--- rockfish log (last 30 lines)"
  tail -n 30 "$log"
  exit 1
fi

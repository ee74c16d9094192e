#!/usr/bin/env bash
# Starts `rockfish standalone` on free loopback ports and runs RocketMQ 5's Python SDK (PyPI
# rocketmq-python-client, gRPC) against its gRPC port: normal, FIFO, delay and transactional
# sends; a simple consumer that acks, lets one message lapse and gets it again; a FIFO
# group's next message held until the one before is acked; a push consumer; a failing
# message reaching the DLQ.
# The SDK goes into its own virtualenv (compat/grpc-python/.venv): its `rocketmq` package
# would clash with rocketmq-python-cvs's (the C++ SDK's check).
# Usage: compat/grpc-python/run.sh path/to/rockfish
set -euo pipefail
bin=${1:?usage: run.sh path/to/rockfish}
here=$(cd "$(dirname "$0")" && pwd)
venv=$here/.venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import rocketmq.v5' 2>/dev/null; then
  python3 -m venv "$venv"
  timeout 600 "$venv/bin/pip" install --quiet --disable-pip-version-check 'rocketmq-python-client==5.1.2'
fi
TX_CHECK_MS=3000
# shellcheck source=../standalone.sh
source "$here/../standalone.sh"
[ -n "$grpc" ] || { echo "standalone serves no gRPC port:"; cat "$log"; exit 1; }
suffix=$(date +%s)
for t in Normal Fifo Delay Tx Push Poison Held; do
  timeout 30 "$bin" admin -n "$namesrv" updateTopic -t "Py$t$suffix" -r 4 -w 4 >/dev/null
done
timeout 30 "$bin" admin -n "$namesrv" updateSubGroup -g "PyPoisonGroup$suffix" -r 2 >/dev/null
timeout 30 "$bin" admin -n "$namesrv" updateSubGroup -g "PyFifoGroup$suffix" -o true >/dev/null
sleep 1 # the name server learns the topics with the broker's next registration
if GRPC=$grpc SUFFIX=$suffix timeout 300 "$venv/bin/python" "$here/check.py" >"$work/check.out" 2>"$work/check.err"; then
  cat "$work/check.out"
else
  cat "$work/check.out"
  echo "--- SDK stderr (last 30 lines)"
  tail -n 30 "$work/check.err"
  echo "--- rockfish log (last 30 lines)"
  tail -n 30 "$log"
  exit 1
fi

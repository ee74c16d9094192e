# Sourced by the compat checks: starts `rockfish standalone` ("$bin") on free loopback ports
# with its data in a fresh directory "$work", waits for it, and sets "$namesrv" (host:port)
# and "$log" (its output), "$grpc" (its gRPC port, host:port). DELAY_LEVELS sets the delay levels, TX_CHECK_MS the transaction
# check-back's timeout and interval. The standalone is stopped and "$work" removed on exit.
work=$(mktemp -d)
log=$work/rockfish.log
mkdir -p "$work/data"
"$bin" standalone --namesrv-listen 127.0.0.1:0 --broker-listen 127.0.0.1:0 \
  --grpc-listen 127.0.0.1:0 --http-listen "" \
  --segment-size 67108864 --data-dir "$work/data" ${DELAY_LEVELS:+--message-delay-level "$DELAY_LEVELS"} \
  ${TX_CHECK_MS:+--transaction-timeout-ms "$TX_CHECK_MS" --transaction-check-interval-ms "$TX_CHECK_MS"} \
  >"$log" 2>&1 &
standalone_pid=$!
stop_standalone() {
  kill "$standalone_pid" 2>/dev/null || true
  wait "$standalone_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap stop_standalone EXIT
for _ in $(seq 1 100); do
  grep -q "rockfish standalone: name server" "$log" && break
  sleep 0.1
done
namesrv=$(sed -n 's/.*name server \([^,]*\),.*/\1/p' "$log" | head -n1)
[ -n "$namesrv" ] || { echo "standalone did not start:"; cat "$log"; exit 1; }
grpc=$(sed -n 's/.*gRPC (RocketMQ 5 clients) on \([^ ]*\).*/\1/p' "$log" | head -n1)

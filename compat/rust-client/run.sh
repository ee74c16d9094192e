#!/usr/bin/env bash
# Starts `rockfish standalone` on free loopback ports and runs rocketmq-client-rust 1.0 (a
# third-party SDK from crates.io, RocketMQ 5's route shape) against it: its producer sends,
# its push consumer (clustering) must receive every message.
# The crate lives outside rockfish's workspace (own Cargo.lock, own target dir
# RUST_CLIENT_TARGET, default compat/rust-client/target); a cold build without debug info
# takes ~4 minutes on 2 cores (plus the crates' download).
# Usage: compat/rust-client/run.sh path/to/rockfish
set -euo pipefail
bin=${1:?usage: run.sh path/to/rockfish}
here=$(cd "$(dirname "$0")" && pwd)
target=${RUST_CLIENT_TARGET:-$here/target}
# No debug info: it halves the build, and a failure here is read from the check's output.
CARGO_TARGET_DIR="$target" CARGO_PROFILE_DEV_DEBUG=0 CARGO_INCREMENTAL=0 \
  timeout 1800 cargo build --locked --quiet --manifest-path "$here/Cargo.toml"
client="$target/debug/rockfish-compat-rust-client"
# shellcheck source=../standalone.sh
source "$here/../standalone.sh"
topic=RustClientTopic$(date +%s)
timeout 30 "$bin" admin -n "$namesrv" updateTopic -t "$topic" -r 4 -w 4 >/dev/null
if RUST_LOG=warn timeout 120 "$client" "$namesrv" "$topic" RustClientGroup 20 >"$work/client.out" 2>&1; then
  grep -E '^(sent|received)' "$work/client.out"
  echo "rust-client compat: 1 passed, 0 failed"
else
  echo "rust-client compat: FAILED"
  sed 's/\x1b\[[0-9;]*m//g' "$work/client.out" | grep -vE '^\s*$' | tail -n 30
  echo "--- rockfish log (last 20 lines)"
  tail -n 20 "$log"
  exit 1
fi

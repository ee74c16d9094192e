#!/usr/bin/env bash
# Starts `rockfish standalone` on free loopback ports and runs rocketmq-client-cpp 2.x (PyPI
# rocketmq-python-cvs bundles librocketmq with a ctypes wrapper) against it: send, push-consume
# in a clustering group of two, consume orderly, resume from a committed offset, and a
# message failed once (RECONSUME_LATER) comes back from the retry topic, and transactions
# (commit, rollback, a check-back answered by the SDK's checker).
# Each SDK role runs in its own process (check.py) and is judged by what it printed: the C++
# push consumer may crash on shutdown after consuming.
# Usage: compat/cpp/run.sh path/to/rockfish
set -euo pipefail
bin=${1:?usage: run.sh path/to/rockfish}
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-python3}
if ! "$python" -c 'import rocketmq.client' 2>/dev/null; then
  timeout 300 "$python" -m pip install --quiet --disable-pip-version-check 'rocketmq-python-cvs==2.1.0.3'
fi
# Short delay levels: a retry (level 3 and up) comes back after a second.
DELAY_LEVELS="1s 1s 1s 1s 1s 1s"
# Transactions left undecided are checked back after 1 s, every 1 s.
TX_CHECK_MS=1000
# shellcheck source=../standalone.sh
source "$here/../standalone.sh"
mkdir -p "$work/sdk-logs"
export NAMESRV=$namesrv CPP_LOG_DIR=$work/sdk-logs

fail() {
  echo "cpp compat: FAILED: $*"
  echo "--- rockfish log (last 40 lines)"
  tail -n 40 "$log"
  exit 1
}
role() { # name, seconds, check.py args...
  local name=$1 secs=$2
  shift 2
  timeout "$secs" "$python" "$here/check.py" "$@" >"$work/$name.out" 2>"$work/$name.err" || true
}
topic() {
  timeout 30 "$bin" admin -n "$namesrv" updateTopic -t "$1" -r 4 -w 4 >/dev/null \
    || fail "could not create topic $1"
}
sent_ok() { grep -c '^SENT .* OK ' "$work/$1.out" || true; }
bodies() { cat "$@" | sed -n 's/^RECV \([^ ]*\) .*/\1/p' | sort -u; }

stamp=$(date +%s)
passed=0

# 1. Send.
t1=CppTopic$stamp
topic "$t1"
role send1 60 send "$t1" m 20
[ "$(sent_ok send1)" = 20 ] || fail "send: $(sent_ok send1)/20 SEND_OK; $(tail -n 3 "$work/send1.err")"
echo "ok: sent 20 messages"
passed=$((passed + 1))

# 2. Push-consume in a clustering group of two processes: together they receive all 20.
role c1 40 consume "$t1" CppGroupA 20 &
p1=$!
role c2 40 consume "$t1" CppGroupA 20 &
p2=$!
wait $p1 $p2 || true
got=$(bodies "$work/c1.out" "$work/c2.out" | wc -l)
[ "$got" = 20 ] || fail "clustering: received $got/20 distinct messages; c1: $(grep -c RECV "$work/c1.out" || true), c2: $(grep -c RECV "$work/c2.out" || true); $(tail -n 3 "$work/c1.err")"
echo "ok: clustering group of two received all 20 (c1 $(grep -c RECV "$work/c1.out" || true), c2 $(grep -c RECV "$work/c2.out" || true))"
passed=$((passed + 1))

# 3. Orderly: three sharding keys, ten messages each; each key arrives in send order.
t2=CppOrderly$stamp
topic "$t2"
role send2 60 send-orderly "$t2" 0,1,2 10
[ "$(sent_ok send2)" = 30 ] || fail "orderly send: $(sent_ok send2)/30 SEND_OK; $(tail -n 3 "$work/send2.err")"
role c3 40 consume "$t2" CppOrderlyGroup 15 orderly
for k in 0 1 2; do
  seqs=$(sed -n "s/^RECV k$k-\([0-9]*\) .*/\1/p" "$work/c3.out" | tr '\n' ' ')
  want=$(seq -s ' ' 0 9)
  [ "$seqs" = "$want " ] || fail "orderly: key $k arrived as [$seqs], want [$want]"
done
echo "ok: orderly consumer received each key's 10 messages in order"
passed=$((passed + 1))

# 4. Resume: a group consumes 10 and commits; 10 more are sent; the group's next consumer
#    receives exactly those.
t3=CppResume$stamp
topic "$t3"
role send3 60 send "$t3" first 10
[ "$(sent_ok send3)" = 10 ] || fail "resume: first send $(sent_ok send3)/10"
role c4 40 consume "$t3" CppResumeGroup 12
[ "$(bodies "$work/c4.out" | wc -l)" = 10 ] || fail "resume: first consumer got $(bodies "$work/c4.out" | wc -l)/10"
progress=$(timeout 30 "$bin" admin -n "$namesrv" consumerProgress -g CppResumeGroup -t "$t3" 2>&1 || true)
role send4 60 send "$t3" second 10
[ "$(sent_ok send4)" = 10 ] || fail "resume: second send $(sent_ok send4)/10"
role c5 40 consume "$t3" CppResumeGroup 12
old=$(bodies "$work/c5.out" | grep -c '^first-' || true)
new=$(bodies "$work/c5.out" | grep -c '^second-' || true)
[ "$new" = 10 ] || fail "resume: second consumer got $new/10 new messages"
[ "$old" = 0 ] || fail "resume: second consumer got $old already-consumed messages again (committed: $progress)"
echo "ok: resumed from the committed offset (10 new, 0 old)"
passed=$((passed + 1))

# 5. Retry: a message whose first delivery fails (RECONSUME_LATER) is sent back by the SDK
#    (CONSUMER_SEND_MSG_BACK) and delivered again from the group's retry topic, after its
#    backoff (this standalone's delay levels are 1 s each), once more, and then no more.
t4=CppRetry$stamp
topic "$t4"
role send5 60 send "$t4" fail-once 1
role send6 60 send "$t4" fine 3
[ "$(sent_ok send5)" = 1 ] && [ "$(sent_ok send6)" = 3 ] || fail "retry: sends not all SEND_OK"
role c6 60 consume "$t4" CppRetryGroup 45
tries=$(grep -c '^RECV fail-once-0 ' "$work/c6.out" || true)
fine=$(bodies "$work/c6.out" | grep -c '^fine-' || true)
[ "$tries" = 2 ] || fail "retry: fail-once-0 delivered $tries times, want 2; $(grep RECV "$work/c6.out" | tail -n 5)"
[ "$fine" = 3 ] || fail "retry: $fine/3 other messages"
grep -q '^RECV fail-once-0 .* 1$' "$work/c6.out" || fail "retry: the second delivery does not count a reconsumption: $(grep fail-once "$work/c6.out")"
echo "ok: a message failed once came back from the retry topic, reconsumed once"
passed=$((passed + 1))

# 6. Transactions: the C++ SDK's transactional producer commits one, rolls one back and
#    leaves one UNKNOWN; the broker checks that one back (this standalone checks after 1 s,
#    every 1 s), the SDK's checker commits it. A consumer gets the two committed, never the
#    rolled-back one.
t5=CppTx$stamp
topic "$t5"
role tx1 40 send-tx "$t5" 8
[ "$(sent_ok tx1)" = 3 ] || fail "transactions: $(sent_ok tx1)/3 halves stored; $(cat "$work/tx1.out"; tail -n 3 "$work/tx1.err")"
grep -q '^CHECK tx-check ' "$work/tx1.out" || fail "transactions: no check-back reached the SDK: $(cat "$work/tx1.out")"
grep -q "^CHECK tx-check $t5\$" "$work/tx1.out" || fail "transactions: the check-back does not show the real topic: $(grep CHECK "$work/tx1.out")"
role c7 40 consume "$t5" CppTxGroup 15
got=$(bodies "$work/c7.out" | tr '\n' ' ')
[ "$got" = "tx-check tx-commit " ] || fail "transactions: consumed [$got], want [tx-check tx-commit ]"
echo "ok: transactions committed, rolled back and resolved by a check-back answered by the SDK"
passed=$((passed + 1))

echo "cpp compat: $passed passed, 0 failed"

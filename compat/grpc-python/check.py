#!/usr/bin/env python3
"""RocketMQ 5's Python SDK (PyPI rocketmq-python-client, gRPC) against rockfish standalone.

Each check prints "ok <name>" or "FAILED <name>: why"; the exit code is the number failed.
Environment: GRPC (host:port), SUFFIX (makes topic and group names unique). run.sh creates
the topics, the poison group (retryMaxTimes 2) and the FIFO group (consumeMessageOrderly)
first.
"""
import os
import sys
import threading
import time

from rocketmq import (ClientConfiguration, ConsumeResult, Credentials, FilterExpression,
                      Message, MessageListener, Producer, PushConsumer, SimpleConsumer,
                      TransactionChecker, TransactionResolution)

EP = os.environ["GRPC"]
S = os.environ["SUFFIX"]
NORMAL, FIFO, DELAY, TX, PUSH, POISON = (f"Py{k}{S}" for k in
                                         ("Normal", "Fifo", "Delay", "Tx", "Push", "Poison"))
POISON_GROUP = f"PyPoisonGroup{S}"
HELD, FIFO_GROUP = f"PyHeld{S}", f"PyFifoGroup{S}"  # run.sh: updateSubGroup -o true
failed = []


def check(name, ok, why=""):
    print(("ok " if ok else "FAILED ") + name + ("" if ok else f": {why}"), flush=True)
    if not ok:
        failed.append(name)


def config():
    return ClientConfiguration(EP, Credentials(), namespace="", request_timeout=5)


def message(topic, body, **kw):
    m = Message()
    m.topic = topic
    m.body = body.encode()
    m.tag = kw.get("tag", "t")
    m.keys = body
    if "group" in kw:
        m.message_group = kw["group"]
    if "deliver_at_ms" in kw:
        m.delivery_timestamp = kw["deliver_at_ms"]
    return m


class Checker(TransactionChecker):
    """Answers the broker's check-back: commit what asked for it."""
    checked = []

    def check(self, msg):
        Checker.checked.append(msg.body.decode())
        return TransactionResolution.COMMIT


def receive_all(consumer, want, seconds, on_message):
    """Receives until `want(seen)` or time runs out; on_message decides acks."""
    deadline = time.time() + seconds
    seen = []
    while time.time() < deadline and not want(seen):
        for m in consumer.receive(16, 4):
            seen.append((m, time.time()))
            on_message(m)
    return seen


def main():
    producer = Producer(config(), (NORMAL, FIFO, DELAY, TX), Checker())
    producer.startup()
    simple = SimpleConsumer(config(), f"PySimple{S}",
                            {t: FilterExpression("*") for t in (NORMAL, FIFO, DELAY, TX)},
                            await_duration=3)
    simple.startup()
    try:
        # Sends: normal, FIFO (one message group), delay, and transactional.
        ids = {}
        for i in range(5):
            ids[f"n{i}"] = producer.send(message(NORMAL, f"n{i}")).message_id
        for i in range(5):
            producer.send(message(FIFO, f"f{i}", group="order-1"))
        delay_sent = time.time()
        producer.send(message(DELAY, "d0", deliver_at_ms=int((delay_sent + 3) * 1000)))
        t1 = producer.begin_transaction()
        producer.send(message(TX, "tx-commit"), t1)
        t1.commit()
        t2 = producer.begin_transaction()
        producer.send(message(TX, "tx-rollback"), t2)
        t2.rollback()
        t3 = producer.begin_transaction()
        producer.send(message(TX, "tx-checked"), t3)  # left open: the check-back commits it
        check("send normal, FIFO, delay and transactional messages", len(ids) == 5)

        # A simple consumer receives, acks, and lets one message's invisibility lapse.
        first_seen = {}
        bodies = []

        def on_message(m):
            body = m.body.decode()
            bodies.append((body, m.delivery_attempt, time.time()))
            if body == "n2" and body not in first_seen:
                first_seen[body] = time.time()  # not acked: invisible for 4 s, then back
                return
            simple.ack(m)

        def done(seen):
            got = {b for b, _, _ in bodies}
            again = [a for b, a, _ in bodies if b == "n2" and a >= 2]
            want = {f"n{i}" for i in range(5)} | {f"f{i}" for i in range(5)} | {"d0", "tx-commit",
                                                                               "tx-checked"}
            return want <= got and again

        receive_all(simple, done, 60, on_message)
        got = [b for b, _, _ in bodies]
        check("simple consumer receives every normal message",
              all(f"n{i}" in got for i in range(5)), got)
        fifo = [b for b in got if b.startswith("f")]
        check("FIFO messages arrive in order", fifo == [f"f{i}" for i in range(5)], fifo)
        d = [t for b, _, t in bodies if b == "d0"]
        check("a delay message arrives after its delivery time",
              bool(d) and d[0] >= delay_sent + 2.5, (d, delay_sent))
        check("a committed transaction is delivered", "tx-commit" in got, got)
        check("a transaction left open is committed by the check-back",
              "tx-checked" in got and "tx-checked" in Checker.checked, (got, Checker.checked))
        check("a rolled back transaction is never delivered", "tx-rollback" not in got, got)
        again = [(a, t) for b, a, t in bodies if b == "n2" and a >= 2]
        check("an un-acked message comes back after its invisible time, attempt 2",
              bool(again) and again[0][1] - first_seen.get("n2", 0) >= 3.5,
              (again, first_seen))
        acked_twice = [b for b in got if b.startswith("n") and b != "n2" and got.count(b) > 1]
        check("an acked message never comes back", not acked_twice, acked_twice)
    finally:
        simple.shutdown()

    # A FIFO group (updateSubGroup -o true): a message group's next message waits until the
    # one before is acked.
    p3 = Producer(config(), (HELD,))
    p3.startup()
    held = SimpleConsumer(config(), FIFO_GROUP, {HELD: FilterExpression("*")}, await_duration=2)
    held.startup()
    try:
        for i in range(3):
            p3.send(message(HELD, f"h{i}", group="order-2"))
        first = held.receive(1, 20)
        blocked = held.receive(1, 20)  # h0 not acked yet: nothing
        for m in first:
            held.ack(m)
        rest = []
        deadline = time.time() + 20
        while time.time() < deadline and len(rest) < 2:
            for m in held.receive(1, 20):
                rest.append(m.body.decode())
                held.ack(m)
        got = ([m.body.decode() for m in first], [m.body.decode() for m in blocked], rest)
        check("a FIFO group's next message waits until the one before is acked",
              got == (["h0"], [], ["h1", "h2"]), got)
    finally:
        held.shutdown()
        p3.shutdown()

    # A push consumer consumes.
    pushed = []

    class Collect(MessageListener):
        def consume(self, m):
            pushed.append(m.body.decode())
            return ConsumeResult.SUCCESS

    push = PushConsumer(config(), f"PyPush{S}", Collect(), {PUSH: FilterExpression("*")})
    push.startup()
    p2 = Producer(config(), (PUSH, POISON))
    p2.startup()
    try:
        for i in range(5):
            p2.send(message(PUSH, f"p{i}"))
        deadline = time.time() + 30
        while time.time() < deadline and len(set(pushed)) < 5:
            time.sleep(0.2)
        check("a push consumer consumes", set(pushed) >= {f"p{i}" for i in range(5)}, pushed)
    finally:
        push.shutdown()

    # A message whose consumption always fails reaches the group's DLQ.
    attempts = []

    class Fail(MessageListener):
        def consume(self, m):
            attempts.append(m.delivery_attempt)
            return ConsumeResult.FAILURE

    poison = PushConsumer(config(), POISON_GROUP, Fail(), {POISON: FilterExpression("*")})
    poison.startup()
    try:
        p2.send(message(POISON, "poison"))
        dlq = f"%DLQ%{POISON_GROUP}"
        deadline = time.time() + 60
        found = False
        while time.time() < deadline and not found:
            time.sleep(1)
            try:
                reader = SimpleConsumer(config(), f"PyDlqReader{S}", {dlq: FilterExpression("*")},
                                        await_duration=2)
                reader.startup()
            except Exception:  # the DLQ topic does not exist yet
                continue
            try:
                for m in reader.receive(16, 10):
                    found = found or m.body.decode() == "poison"
                    reader.ack(m)
            except Exception:
                pass
            finally:
                reader.shutdown()
        check("a failing message reaches the DLQ after its max attempts",
              found and len(attempts) >= 3, attempts)
    finally:
        poison.shutdown()
        p2.shutdown()
        producer.shutdown()
    return len(failed)


if __name__ == "__main__":
    n = main()
    print(f"grpc-python compat: {12 - n} passed, {n} failed" if n else
          "grpc-python compat: 12 passed, 0 failed")
    os._exit(n)

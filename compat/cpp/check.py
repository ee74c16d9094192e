"""rocketmq-client-cpp 2.x (through rocketmq-python-cvs's ctypes wrapper) against rockfish.

Each role runs in its own process and prints one line per event; run.sh judges by those
lines, because the C++ push consumer may crash on shutdown after it consumed.

  check.py send TOPIC PREFIX N            sends N messages, bodies PREFIX-0.., tags TagA/TagB
  check.py send-orderly TOPIC KEYS N      N messages per numeric sharding key (KEYS like
                                          "0,1,2"), bodies kKEY-SEQ
  check.py consume TOPIC GROUP SECONDS [orderly] [EXPR]
                                          push-consumes for SECONDS, one RECV line each
"""

import os
import sys
import threading
import time

from rocketmq.client import Message, Producer, PushConsumer

NAMESRV = os.environ["NAMESRV"]
LOGS = os.environ.get("CPP_LOG_DIR", "/tmp")


_out_lock = threading.Lock()


def out(*parts):
    # The C++ consumer calls back from several threads at once; print() writes each part
    # separately, so lines interleaved ("RECVRECV m-1 ...") and the judge miscounted. One
    # write of the whole line, under a lock.
    line = " ".join(str(p) for p in parts) + "\n"
    with _out_lock:
        sys.stdout.write(line)
        sys.stdout.flush()


def producer(group):
    p = Producer(group)
    p.set_namesrv_addr(NAMESRV)
    p.set_log_root_path(LOGS)
    p.start()
    return p


def send(topic, prefix, n):
    p = producer("cpp-compat-pg")
    for i in range(int(n)):
        m = Message(topic)
        m.set_tags("TagA" if i % 2 == 0 else "TagB")
        m.set_keys("key-%d" % i)
        m.set_body("%s-%d" % (prefix, i))
        r = p.send_sync(m)
        out("SENT", "%s-%d" % (prefix, i), r.status.name, r.msg_id)
    p.shutdown()
    out("SEND DONE")


def send_orderly(topic, keys, n):
    p = producer("cpp-compat-orderly-pg")
    for seq in range(int(n)):
        for key in keys.split(","):
            body = "k%s-%d" % (key, seq)
            m = Message(topic)
            m.set_tags("TagO")
            m.set_keys("k" + key)
            m.set_body(body)
            # The wrapper's selector: queue = key % queue count, so one key keeps one queue.
            r = p.send_orderly(m, int(key))
            out("SENT", body, r.status.name, r.msg_id)
    p.shutdown()
    out("SEND DONE")


def consume(topic, group, seconds, orderly=False, expression="*"):
    c = PushConsumer(group, orderly=orderly)
    c.set_namesrv_addr(NAMESRV)
    c.set_log_root_path(LOGS)
    failed = set()

    def on_message(msg):
        body = msg.body.decode() if isinstance(msg.body, bytes) else msg.body
        out("RECV", body, msg.queue_id, msg.queue_offset, msg.tags.decode() if isinstance(msg.tags, bytes) else msg.tags, msg.reconsume_times)
        # A body starting "fail-once" fails its first delivery: the wrapper answers
        # RECONSUME_LATER for an exception, and the SDK sends the message back.
        if body.startswith("fail-once") and body not in failed:
            failed.add(body)
            raise RuntimeError("fail once")
        # Returning normally acknowledges (the wrapper answers CONSUME_SUCCESS).

    c.subscribe(topic, on_message, expression)
    c.start()
    out("CONSUMER STARTED")
    time.sleep(float(seconds))
    out("CONSUME DONE")
    # Shutdown persists the offsets; if the SDK crashes here, what was printed still counts.
    c.shutdown()
    out("SHUTDOWN DONE")


def main(argv):
    role = argv[1]
    if role == "send":
        send(argv[2], argv[3], argv[4])
    elif role == "send-orderly":
        send_orderly(argv[2], argv[3], argv[4])
    elif role == "consume":
        orderly = len(argv) > 5 and argv[5] == "orderly"
        expression = argv[6] if len(argv) > 6 else "*"
        consume(argv[2], argv[3], argv[4], orderly, expression)
    else:
        raise SystemExit("unknown role %r" % role)
    sys.stdout.flush()
    # Skip the wrapper's destructors: the SDK may crash tearing down after a shutdown.
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv)

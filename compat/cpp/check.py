"""rocketmq-client-cpp 2.x (through rocketmq-python-cvs's ctypes wrapper) against rockfish.

Each role runs in its own process and prints one line per event; run.sh judges by those
lines, because the C++ push consumer may crash on shutdown after it consumed.

  check.py send TOPIC PREFIX N            sends N messages, bodies PREFIX-0.., tags TagA/TagB
  check.py send-orderly TOPIC KEYS N      N messages per numeric sharding key (KEYS like
                                          "0,1,2"), bodies kKEY-SEQ
  check.py consume TOPIC GROUP SECONDS [orderly] [EXPR]
                                          push-consumes for SECONDS, one RECV line each
  check.py send-tx TOPIC SECONDS          a transactional producer (the C API's
                                          CreateTransactionProducer): tx-commit commits,
                                          tx-rollback rolls back, tx-check says UNKNOWN and its
                                          check-back is answered COMMIT (CHECK lines); then it
                                          stays up SECONDS answering check-backs
"""

import os
import sys
import threading
import time

import ctypes

from rocketmq.client import Message, Producer, PushConsumer, RecvMessage
from rocketmq.ffi import _CSendResult, dll

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


# The C API's CTransactionStatus.
COMMIT, ROLLBACK, UNKNOWN = 0, 1, 2
# CLocalTransactionCheckerCallback / CLocalTransactionExecutorCallback:
# (CProducer*, CMessage[Ext]*, void* userData) -> CTransactionStatus.
TX_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)
dll.CreateTransactionProducer.argtypes = [ctypes.c_char_p, TX_CALLBACK, ctypes.c_void_p]
dll.CreateTransactionProducer.restype = ctypes.c_void_p
dll.SendMessageTransaction.argtypes = [
    ctypes.c_void_p, ctypes.c_void_p, TX_CALLBACK, ctypes.c_void_p, ctypes.POINTER(_CSendResult)]
dll.SendMessageTransaction.restype = ctypes.c_int
dll.GetOriginMessageBody.argtypes = [ctypes.c_void_p]
dll.GetOriginMessageBody.restype = ctypes.c_char_p


def send_tx(topic, seconds):
    outcome = {"tx-commit": COMMIT, "tx-rollback": ROLLBACK, "tx-check": UNKNOWN}

    def on_check(_producer, c_msg, _data):
        body = RecvMessage(c_msg).body.decode("utf-8")
        out("CHECK", body, RecvMessage(c_msg).topic)
        return ROLLBACK if body == "tx-rollback" else COMMIT

    def on_local(_producer, c_msg, _data):
        return outcome[dll.GetOriginMessageBody(c_msg).decode("utf-8")]

    checker, local = TX_CALLBACK(on_check), TX_CALLBACK(on_local)
    p = Producer.__new__(Producer)
    p._callback_refs = [checker, local]
    p._handle = dll.CreateTransactionProducer(b"cpp-compat-tx-pg", checker, None)
    p.set_namesrv_addr(NAMESRV)
    p.set_log_root_path(LOGS)
    p.start()
    for body in ("tx-commit", "tx-rollback", "tx-check"):
        m = Message(topic)
        m.set_body(body)
        r = _CSendResult()
        code = dll.SendMessageTransaction(p._handle, m._handle, local, None, ctypes.pointer(r))
        out("SENT", body, "OK" if code == 0 and r.sendStatus == 0 else "FAILED:%d" % code,
            r.msgId.decode("utf-8"))
    time.sleep(float(seconds))
    out("SEND DONE")


def main(argv):
    role = argv[1]
    if role == "send":
        send(argv[2], argv[3], argv[4])
    elif role == "send-orderly":
        send_orderly(argv[2], argv[3], argv[4])
    elif role == "send-tx":
        send_tx(argv[2], argv[3])
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

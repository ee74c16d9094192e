//! Pop consumption on the broker: POP_MESSAGE hands messages out invisible for a while; an
//! ack decides them; what is not acked comes back through the group's pop retry topic, and
//! to the dead-letter topic after its max reconsume times; none of it is lost or brought
//! back by a crash or a power loss.

use bytes::Bytes;
use rockfish_core::broker::pop::wire::{Receipt, bitset_of, receipt};
use rockfish_core::broker::{BrokerConfig, FlushDiskType, pop_retry_topic};
use rockfish_core::machine::{ConnId, Output};
use rockfish_core::message::decoder::{MessageExt, decode_messages};
use rockfish_core::remoting::RemotingCommand;
use rockfish_core::remoting::codes::{request, response};
use rockfish_sim::harness::broker::BrokerHarness;
use rockfish_store::config::SubscriptionGroupConfig;
use rockfish_store::record::HostAddr;
use rockfish_store::{MemDisk, StoreConfig};

const C: ConnId = ConnId(1);
const T0: u64 = 1_700_000_000_000;
const G: &str = "PopGroup";

rockfish_sim::broker_harness!(H);

/// A pop's answer: its code, header and messages.
struct Popped {
    code: i32,
    header: RemotingCommand,
    msgs: Vec<MessageExt>,
}

impl Popped {
    fn bodies(&self) -> Vec<String> {
        self.msgs
            .iter()
            .map(|m| String::from_utf8_lossy(&m.body()).into_owned())
            .collect()
    }
    /// The receipt of message `i`, as the Java client builds it from the header (or takes
    /// it from POP_CK on a retry message).
    fn receipt(&self, i: usize, broker: &str) -> String {
        let m = &self.msgs[i];
        if let Some(ck) = m.property("POP_CK") {
            return String::from_utf8_lossy(ck).into_owned();
        }
        let starts = self.header.ext("startOffsetInfo").unwrap();
        let start: u64 = starts
            .split(';')
            .find_map(|e| {
                let f: Vec<&str> = e.split(' ').collect();
                (f[0] == "0" && f[1] == m.queue_id().to_string()).then(|| f[2].parse().unwrap())
            })
            .expect("the queue's start offset");
        receipt(
            start,
            self.header.ext("popTime").unwrap().parse().unwrap(),
            self.header.ext("invisibleTime").unwrap().parse().unwrap(),
            self.header.ext("reviveQid").unwrap().parse().unwrap(),
            m.topic(),
            broker,
            m.queue_id(),
            m.queue_offset(),
        )
    }
}

impl H {
    fn new(config: BrokerConfig) -> H {
        H::start(config, MemDisk::new(7), T0)
    }
    fn start(config: BrokerConfig, disk: MemDisk, now: u64) -> H {
        let mut h = BrokerHarness::start(config, StoreConfig::small(), disk, now);
        h.connect(C, HostAddr::V4([10, 0, 0, 9], 5555));
        H(h)
    }
    fn send(&mut self, queue: i32, body: &str) {
        let cmd = self.send_v2(
            "T",
            queue,
            &[("UNIQ_KEY", body), ("TAGS", "a")],
            body.as_bytes(),
        );
        let out = self.call(C, cmd);
        assert!(!out.is_empty());
        self.run_flushes();
    }
    fn pop_cmd(
        &mut self,
        queue: i32,
        max: i64,
        invisible: u64,
        poll: u64,
        order: bool,
    ) -> RemotingCommand {
        self.req(request::POP_MESSAGE)
            .with_ext("consumerGroup", G)
            .with_ext("topic", "T")
            .with_ext("queueId", queue)
            .with_ext("maxMsgNums", max)
            .with_ext("invisibleTime", invisible)
            .with_ext("pollTime", poll)
            .with_ext("bornTime", self.now)
            .with_ext("initMode", 0)
            .with_ext("expType", "TAG")
            .with_ext("exp", "*")
            .with_ext("order", order)
    }
    fn popped(out: &[Output], opaque: i32) -> Option<Popped> {
        BrokerHarness::response(out, C, opaque).map(|(header, records)| Popped {
            code: header.code,
            msgs: records
                .iter()
                .flat_map(|r| decode_messages(r).expect("records decode"))
                .collect(),
            header,
        })
    }
    fn pop(&mut self, queue: i32, invisible: u64) -> Popped {
        let cmd = self.pop_cmd(queue, 32, invisible, 0, false);
        let opaque = cmd.opaque;
        let out = self.call(C, cmd);
        H::popped(&out, opaque).expect("a pop without poll time is answered at once")
    }
    fn ack_cmd(&mut self, topic: &str, queue: u32, offset: u64, extra: &str) -> RemotingCommand {
        self.req(request::ACK_MESSAGE)
            .with_ext("consumerGroup", G)
            .with_ext("topic", topic)
            .with_ext("queueId", queue)
            .with_ext("extraInfo", extra)
            .with_ext("offset", offset)
    }
    /// Acks message `i` of `p` as the Java client does (the real topic from the receipt).
    fn ack(&mut self, p: &Popped, i: usize) -> i32 {
        let extra = p.receipt(i, "broker-a");
        let r = Receipt::parse(&extra).unwrap();
        let m = &p.msgs[i];
        let topic = if r.retry == "1" {
            pop_retry_topic(G, "T")
        } else {
            "T".into()
        };
        let cmd = self.ack_cmd(&topic, r.queue_id, m.queue_offset(), &extra);
        let opaque = cmd.opaque;
        let mut out = self.call(C, cmd);
        out.extend(self.run_flushes());
        BrokerHarness::response(&out, C, opaque)
            .expect("the ack is answered")
            .0
            .code
    }
    fn change(&mut self, p: &Popped, i: usize, invisible: u64) -> RemotingCommand {
        let extra = p.receipt(i, "broker-a");
        let r = Receipt::parse(&extra).unwrap();
        let m = &p.msgs[i];
        let cmd = self
            .req(request::CHANGE_MESSAGE_INVISIBLETIME)
            .with_ext("consumerGroup", G)
            .with_ext("topic", "T")
            .with_ext("queueId", r.queue_id)
            .with_ext("extraInfo", extra)
            .with_ext("offset", m.queue_offset())
            .with_ext("invisibleTime", invisible);
        let opaque = cmd.opaque;
        let mut out = self.call(C, cmd);
        out.extend(self.run_flushes());
        BrokerHarness::response(&out, C, opaque)
            .expect("answered")
            .0
    }
    fn at(&mut self, now: u64) -> Vec<Output> {
        self.now = now;
        self.b.on_timeout(now);
        let mut out = self.drain();
        out.extend(self.run_flushes());
        out
    }
    fn update_group(&mut self, retry_max: i32) {
        let cfg = SubscriptionGroupConfig {
            retry_max_times: retry_max,
            ..SubscriptionGroupConfig::new(G)
        };
        let cmd = self
            .req(request::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP)
            .with_body(Bytes::from(serde_json::to_vec(&cfg).unwrap()));
        assert_eq!(self.one(C, cmd).0.code, response::SUCCESS);
    }
}

fn config() -> BrokerConfig {
    BrokerConfig {
        broker_name: "broker-a".into(),
        ..BrokerConfig::default()
    }
}

#[test]
fn a_pop_hands_messages_out_and_the_unacked_one_comes_back_after_its_invisible_time() {
    let mut h = H::new(config());
    for b in ["m0", "m1", "m2"] {
        h.send(0, b);
    }
    let p = h.pop(0, 10_000);
    assert_eq!(p.code, response::SUCCESS);
    assert_eq!(p.bodies(), ["m0", "m1", "m2"]);
    assert_eq!(p.header.ext("startOffsetInfo"), Some("0 0 0"));
    assert_eq!(p.header.ext("msgOffsetInfo"), Some("0 0 0,1,2"));
    assert_eq!(p.header.ext("reviveQid"), Some("0"));
    // Invisible now: a second pop finds nothing.
    let again = h.pop(0, 10_000);
    assert_eq!(again.code, response::POLLING_TIMEOUT);
    assert!(again.msgs.is_empty() && again.header.ext("popTime").is_some());
    assert_eq!(h.ack(&p, 0), response::SUCCESS);
    assert_eq!(h.ack(&p, 2), response::SUCCESS);
    assert_eq!(h.ack(&p, 0), response::NO_MESSAGE, "acked twice");
    h.at(T0 + 9_999);
    assert_eq!(
        h.pop(-1, 10_000).code,
        response::POLLING_TIMEOUT,
        "not due yet"
    );
    h.at(T0 + 10_000);
    let back = h.pop(-1, 10_000);
    assert_eq!(back.bodies(), ["m1"], "only the un-acked one comes back");
    let m = &back.msgs[0];
    assert_eq!(m.topic(), "T", "handed out under the topic's name");
    assert_eq!(m.reconsume_times(), 1);
    assert!(m.property("1ST_POP_TIME").is_some());
    let r = Receipt::parse(&back.receipt(0, "broker-a")).unwrap();
    assert_eq!((r.retry.as_str(), r.queue_id), ("1", 0));
    assert_eq!(h.records(&pop_retry_topic(G, "T"), 0).len(), 1);
    assert_eq!(h.ack(&back, 0), response::SUCCESS);
    h.at(T0 + 60_000);
    assert_eq!(
        h.pop(-1, 10_000).code,
        response::POLLING_TIMEOUT,
        "nothing more, ever"
    );
    assert_eq!(h.b.pop_inflight(), 0);
}

#[test]
fn a_changed_invisible_time_moves_the_return_and_the_old_receipt_is_spent() {
    let mut h = H::new(config());
    h.send(0, "m0");
    let p = h.pop(0, 5_000);
    let r = h.change(&p, 0, 30_000);
    assert_eq!(r.code, response::SUCCESS);
    assert_eq!(r.ext("invisibleTime"), Some("30000"));
    assert_eq!(
        h.ack(&p, 0),
        response::NO_MESSAGE,
        "the old receipt no longer holds it"
    );
    h.at(T0 + 20_000);
    assert_eq!(
        h.pop(-1, 5_000).code,
        response::POLLING_TIMEOUT,
        "still invisible"
    );
    h.at(T0 + 30_000);
    assert_eq!(h.pop(-1, 5_000).bodies(), ["m0"]);
}

#[test]
fn a_batch_ack_decides_every_offset_its_bit_set_names() {
    let mut h = H::new(config());
    for b in ["m0", "m1", "m2", "m3"] {
        h.send(1, b);
    }
    let p = h.pop(1, 10_000);
    assert_eq!(p.msgs.len(), 4);
    let r = Receipt::parse(&p.receipt(0, "broker-a")).unwrap();
    let body = format!(
        r#"{{"brokerName":"broker-a","acks":[{{"c":"{G}","t":"T","r":"0","so":{},"q":1,"rq":0,"pt":{},"it":10000,"b":"{}"}}]}}"#,
        r.ck_offset,
        r.pop_time,
        bitset_of(r.ck_offset, &[0, 1, 3])
    );
    let cmd = h
        .req(request::BATCH_ACK_MESSAGE)
        .with_body(Bytes::from(body));
    let opaque = cmd.opaque;
    let mut out = h.call(C, cmd);
    out.extend(h.run_flushes());
    assert_eq!(
        BrokerHarness::response(&out, C, opaque).unwrap().0.code,
        response::SUCCESS
    );
    h.at(T0 + 10_000);
    assert_eq!(h.pop(-1, 10_000).bodies(), ["m2"]);
}

#[test]
fn a_message_never_acked_reaches_the_dead_letter_topic_after_its_max_reconsume_times() {
    let mut h = H::new(config());
    h.update_group(2);
    h.send(0, "poison");
    let mut now = T0;
    let mut deliveries = 0;
    for _ in 0..6 {
        let p = h.pop(-1, 1_000);
        deliveries += p.msgs.len();
        now += 1_000;
        h.at(now);
    }
    assert_eq!(deliveries, 3, "delivered once and retried twice");
    let dlq = h.records("%DLQ%PopGroup", 0);
    assert_eq!(dlq.len(), 1);
    assert_eq!(&dlq[0].body()[..], b"poison");
    assert_eq!(h.b.pop_inflight(), 0);
}

#[test]
fn a_held_pop_is_answered_by_the_next_message_or_its_poll_time() {
    let mut h = H::new(config());
    h.send(0, "first");
    assert_eq!(h.pop(-1, 10_000).bodies(), ["first"]);
    let cmd = h.pop_cmd(-1, 32, 10_000, 5_000, false);
    let opaque = cmd.opaque;
    assert!(H::popped(&h.call(C, cmd), opaque).is_none(), "held");
    let send = h.send_v2("T", 2, &[("UNIQ_KEY", "late")], b"late");
    let out = h.call(C, send);
    let p = H::popped(&out, opaque).expect("woken by the message");
    assert_eq!(p.bodies(), ["late"]);
    let cmd = h.pop_cmd(-1, 32, 10_000, 5_000, false);
    let opaque = cmd.opaque;
    assert!(H::popped(&h.call(C, cmd), opaque).is_none());
    let out = h.at(T0 + 5_000);
    assert_eq!(
        H::popped(&out, opaque).unwrap().code,
        response::POLLING_TIMEOUT
    );
    // The message of the first pop, never acked, comes back through the retry topic and
    // wakes a pop held on the topic.
    let cmd = h.pop_cmd(-1, 32, 10_000, 20_000, false);
    let opaque = cmd.opaque;
    assert!(H::popped(&h.call(C, cmd), opaque).is_none());
    let out = h.at(T0 + 10_000);
    assert_eq!(H::popped(&out, opaque).unwrap().bodies(), ["first"]);
}

#[test]
fn an_orderly_pop_locks_its_queue_until_acked_and_redelivers_in_order() {
    let mut h = H::new(config());
    for b in ["o0", "o1", "o2"] {
        h.send(0, b);
    }
    let pop_ordered = |h: &mut H| {
        let cmd = h.pop_cmd(0, 2, 5_000, 0, true);
        let opaque = cmd.opaque;
        let out = h.call(C, cmd);
        H::popped(&out, opaque).unwrap()
    };
    let p = pop_ordered(&mut h);
    assert_eq!(p.bodies(), ["o0", "o1"]);
    assert_eq!(p.header.ext("reviveQid"), Some("999"));
    assert_eq!(
        pop_ordered(&mut h).code,
        response::POLLING_TIMEOUT,
        "locked"
    );
    assert_eq!(h.ack(&p, 0), response::SUCCESS);
    h.at(T0 + 5_000);
    let again = pop_ordered(&mut h);
    assert_eq!(again.bodies(), ["o1", "o2"], "from the first one not acked");
    assert!(
        again
            .header
            .ext("orderCountInfo")
            .unwrap()
            .contains("qo0%1 1")
    );
    assert_eq!(
        again.msgs[0].reconsume_times(),
        0,
        "the count travels in the header"
    );
    assert_eq!(h.ack(&again, 0), response::SUCCESS);
    assert_eq!(h.ack(&again, 1), response::SUCCESS);
    assert_eq!(
        pop_ordered(&mut h).code,
        response::POLLING_TIMEOUT,
        "all consumed"
    );
}

#[test]
fn a_crash_keeps_acks_and_checkpoints() {
    let mut h = H::new(config());
    for b in ["m0", "m1"] {
        h.send(0, b);
    }
    let p = h.pop(0, 10_000);
    assert_eq!(h.ack(&p, 0), response::SUCCESS);
    let disk = h.disk.clone();
    disk.crash();
    let mut h = H::start(config(), disk, T0 + 1_000);
    assert_eq!(h.b.pop_inflight(), 1);
    assert_eq!(
        h.pop(-1, 10_000).code,
        response::POLLING_TIMEOUT,
        "neither popped again"
    );
    h.at(T0 + 10_000);
    assert_eq!(
        h.pop(-1, 10_000).bodies(),
        ["m1"],
        "the un-acked one revives"
    );
}

#[test]
fn under_sync_flush_an_answered_ack_survives_a_power_loss() {
    let cfg = BrokerConfig {
        flush_disk_type: FlushDiskType::Sync,
        ..config()
    };
    let mut h = H::new(cfg.clone());
    for b in ["m0", "m1", "m2"] {
        h.send(0, b);
    }
    let p = h.pop(0, 10_000);
    h.run_flushes();
    assert_eq!(h.ack(&p, 1), response::SUCCESS);
    let disk = h.disk.clone();
    disk.power_loss();
    let mut h = H::start(cfg, disk, T0 + 1_000);
    h.at(T0 + 10_000);
    let mut bodies = Vec::new();
    for _ in 0..3 {
        bodies.extend(h.pop(-1, 10_000).bodies());
    }
    bodies.sort();
    assert_eq!(bodies, ["m0", "m2"], "the acked one never comes back");
}

#[test]
fn bad_pops_and_acks_get_clear_errors() {
    let mut h = H::new(config());
    h.send(0, "m0");
    let cmd = h.pop_cmd(0, 33, 10_000, 0, false);
    assert_eq!(h.one(C, cmd).0.code, response::INVALID_PARAMETER);
    let cmd = h.pop_cmd(9, 1, 10_000, 0, false);
    assert_eq!(h.one(C, cmd).0.code, response::INVALID_PARAMETER);
    let cmd = h.pop_cmd(0, 1, 10_000, 0, false).with_ext("topic", "Nope");
    assert_eq!(h.one(C, cmd).0.code, response::TOPIC_NOT_EXIST);
    let cmd = h
        .pop_cmd(0, 1, 10_000, 0, false)
        .with_ext("expType", "SQL92")
        .with_ext("exp", "a >");
    assert_eq!(h.one(C, cmd).0.code, response::SUBSCRIPTION_PARSE_FAILED);
    let cmd = h.ack_cmd("T", 0, 0, "garbage");
    assert_eq!(h.one(C, cmd).0.code, response::MESSAGE_ILLEGAL);
    let cmd = h.ack_cmd("T", 0, 0, "0 1 2 0 0 b 0 0");
    assert_eq!(h.one(C, cmd).0.code, response::NO_MESSAGE);
    let cmd = h
        .req(request::BATCH_ACK_MESSAGE)
        .with_body(Bytes::from_static(b"{\"acks\":[{]}"));
    assert_eq!(h.one(C, cmd).0.code, response::SYSTEM_ERROR);
    let cmd = h.send_v2("rmq_sys_ROCKFISH_POP_JOURNAL", 0, &[], b"forged");
    assert_ne!(h.one(C, cmd).0.code, response::SUCCESS);
}

#[test]
fn a_moved_message_is_in_one_checkpoint_across_a_crash() {
    let mut h = H::new(config());
    h.send(0, "m0");
    let p = h.pop(0, 5_000);
    let r = h.change(&p, 0, 30_000);
    assert_eq!(r.code, response::SUCCESS);
    let disk = h.disk.clone();
    disk.crash();
    let mut h = H::start(config(), disk, T0 + 1_000);
    assert_eq!(h.b.pop_inflight(), 1, "in the new checkpoint only");
    h.at(T0 + 10_000);
    assert_eq!(
        h.pop(-1, 5_000).code,
        response::POLLING_TIMEOUT,
        "the old one is gone"
    );
    h.at(T0 + 30_000);
    assert_eq!(h.pop(-1, 5_000).bodies(), ["m0"]);
}

#[test]
fn a_moved_message_survives_a_restart_after_its_old_checkpoint_was_done_and_snapshotted() {
    // Found by the simulator (pop seed 6): a message whose invisibility changed sat alone in
    // its new checkpoint once the rest of its old one was acked; the next offsets snapshot
    // journaled the pop journal's replay start at the move's record, past the old
    // checkpoint's. Replayed from there, the move found no checkpoint to move from and was
    // dropped: after a restart the message was in no checkpoint and never came back.
    let mut h = H::new(config());
    for b in ["m0", "m1"] {
        h.send(0, b);
    }
    let p = h.pop(0, 5_000);
    assert_eq!(p.bodies(), ["m0", "m1"]);
    assert_eq!(h.change(&p, 0, 60_000).code, response::SUCCESS);
    assert_eq!(h.ack(&p, 1), response::SUCCESS);
    // Offsets snapshots (and the pop journal's replay start with them).
    h.at(T0 + 20_000);
    h.at(T0 + 40_000);
    let disk = h.disk.clone();
    disk.crash();
    let mut h = H::start(config(), disk, T0 + 41_000);
    assert_eq!(
        h.b.pop_inflight(),
        1,
        "the moved message is still in flight"
    );
    h.at(T0 + 61_000);
    assert_eq!(h.pop(-1, 5_000).bodies(), ["m0"], "and comes back when due");
}

#[test]
fn an_offsets_snapshot_never_outruns_the_checkpoints_it_covers() {
    // Found by the simulator (pop-sync seed 10): a pop journals its checkpoint, then moves
    // the group's offset (journaled too); neither is durable until the next flush. The
    // offsets snapshot written meanwhile (consumerOffset.json, durable at once) held the
    // moved offset; a power loss then took the checkpoint, the snapshot kept the offset, and
    // the popped messages were in no checkpoint and behind the offset: never seen again.
    let cfg = BrokerConfig {
        flush_disk_type: FlushDiskType::Sync,
        ..config()
    };
    let mut h = H::new(cfg.clone());
    for b in ["m0", "m1"] {
        h.send(0, b);
    }
    let p = h.pop(0, 5_000);
    assert_eq!(p.bodies(), ["m0", "m1"]);
    // The offsets snapshot falls due before the pop's records are flushed.
    h.now = T0 + 6_000;
    h.b.on_timeout(T0 + 6_000);
    h.drain();
    let disk = h.disk.clone();
    disk.power_loss();
    let mut h = H::start(cfg, disk, T0 + 7_000);
    h.at(T0 + 20_000);
    let mut bodies = Vec::new();
    for _ in 0..3 {
        bodies.extend(h.pop(-1, 5_000).bodies());
    }
    bodies.sort();
    assert_eq!(bodies, ["m0", "m1"], "handed out again, not lost");
}

//! The `Broker` machine, driven directly (no sockets): sends (V1, V2, batch) and every
//! refusal, pulls with filtering and long polling, SYNC_FLUSH group commit, timeouts and
//! flush failure, heartbeats and group notifications, offsets, topics, and queries.

use bytes::Bytes;
use rockfish_core::broker::{
    Broker, BrokerConfig, FlushDiskType, HeartbeatData, LOCK_RESTART_GRACE_MS,
    MAX_FLUSHES_IN_FLIGHT,
};
use rockfish_core::machine::{ConnId, Output};
use rockfish_core::message::{BatchItem, encode_batch, parse_offset_msg_id, properties_string};
use rockfish_core::remoting::RemotingCommand;
use rockfish_core::remoting::codes::{request, response};
use rockfish_sim::harness::broker::BrokerHarness;
use rockfish_store::record::{HostAddr, StoredRecord};
use rockfish_store::{MemDisk, MessageStore, StoreConfig};

const P: ConnId = ConnId(1);
const C: ConnId = ConnId(2);

rockfish_sim::broker_harness!(H);

impl H {
    fn new(cfg: BrokerConfig) -> H {
        H::start(cfg, MemDisk::new(1), 0)
    }
    fn start(cfg: BrokerConfig, disk: MemDisk, now: u64) -> H {
        let mut h = BrokerHarness::start(cfg, StoreConfig::small(), disk, now);
        h.connect(P, HostAddr::V4([10, 0, 0, 9], 5555));
        h.connect(C, HostAddr::V4([10, 0, 0, 8], 6666));
        H(h)
    }
    fn default() -> H {
        H::new(BrokerConfig::default())
    }
    fn send_cmd(&mut self, topic: &str, queue: i32, body: &str, tags: &str) -> RemotingCommand {
        let props = [("TAGS", tags), ("KEYS", "key-1"), ("UNIQ_KEY", body)];
        self.send_v2(topic, queue, &props, body.as_bytes())
    }
    /// The group's committed offset on (topic, queue), as QUERY_CONSUMER_OFFSET answers it.
    fn committed(&mut self, group: &str, topic: &str, queue: u32) -> Option<String> {
        let q = self
            .req(request::QUERY_CONSUMER_OFFSET)
            .with_ext("consumerGroup", group)
            .with_ext("topic", topic)
            .with_ext("queueId", queue);
        self.one(C, q).0.ext("offset").map(str::to_owned)
    }
    fn send(&mut self, topic: &str, queue: i32, body: &str) -> RemotingCommand {
        let cmd = self.send_cmd(topic, queue, body, "TagA");
        self.one(P, cmd).0
    }
    fn pull_cmd(
        &mut self,
        topic: &str,
        queue: u32,
        offset: u64,
        sys_flag: i32,
        sub: &str,
    ) -> RemotingCommand {
        self.req(request::PULL_MESSAGE)
            .with_ext("consumerGroup", "CG")
            .with_ext("topic", topic)
            .with_ext("queueId", queue)
            .with_ext("queueOffset", offset)
            .with_ext("maxMsgNums", 32)
            .with_ext("sysFlag", sys_flag)
            .with_ext("commitOffset", 0)
            .with_ext("suspendTimeoutMillis", 15_000)
            .with_ext("subscription", sub)
            .with_ext("subVersion", 0)
    }
    fn pull(
        &mut self,
        topic: &str,
        queue: u32,
        offset: u64,
    ) -> (RemotingCommand, Vec<StoredRecord>) {
        let cmd = self.pull_cmd(topic, queue, offset, 4, "*");
        let (resp, records) = self.one(C, cmd);
        (
            resp,
            records
                .into_iter()
                .map(|b| StoredRecord::parse(b, None).unwrap())
                .collect(),
        )
    }
}

fn two_namesrv_broker() -> Broker<MemDisk> {
    let cfg = BrokerConfig {
        namesrv_addrs: vec!["ns1:9876".into(), "ns2:9876".into()],
        ..BrokerConfig::default()
    };
    let (store, _) = MessageStore::open(MemDisk::new(1), StoreConfig::small(), 0).unwrap();
    Broker::new(cfg, store, 0).unwrap()
}

/// The REGISTER_BROKER requests the broker output: (name server, request).
fn registrations(b: &mut Broker<MemDisk>) -> Vec<(String, RemotingCommand)> {
    std::iter::from_fn(|| b.poll_output())
        .filter_map(|o| match o {
            Output::SendTo { addr, cmd } if cmd.code == request::REGISTER_BROKER => {
                Some((addr, cmd))
            }
            _ => None,
        })
        .collect()
}

fn answer(b: &mut Broker<MemDisk>, req: &RemotingCommand, code: i32, now: u64) {
    b.on_command(
        ConnId(99),
        RemotingCommand::response_to(req, code, None),
        now,
        now,
    );
}

#[test]
fn registers_with_every_name_server_at_start_and_every_30_seconds() {
    let mut b = two_namesrv_broker();
    let regs = registrations(&mut b);
    let addrs: Vec<_> = regs.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(addrs, vec!["ns1:9876", "ns2:9876"]);
    for (_, req) in &regs {
        answer(&mut b, req, response::SUCCESS, 10);
    }
    b.on_timeout(29_999);
    assert!(registrations(&mut b).is_empty());
    b.on_timeout(30_000);
    assert_eq!(registrations(&mut b).len(), 2);
    assert!(b.poll_timeout().unwrap() <= 60_000);
}

#[test]
fn a_lost_or_refused_registration_is_retried_without_waiting_30_seconds() {
    // Found by the simulator (partitions seed 186): the first REGISTER_BROKER was dropped and
    // the cluster had no routes until the next periodic registration.
    let mut b = two_namesrv_broker();
    let regs = registrations(&mut b);
    answer(&mut b, &regs[0].1, response::SUCCESS, 10); // ns2's answer is lost
    assert!(b.poll_timeout().unwrap() <= rockfish_core::broker::REGISTER_RETRY_MS);
    b.on_timeout(rockfish_core::broker::REGISTER_RETRY_MS - 1);
    assert!(registrations(&mut b).is_empty());
    b.on_timeout(rockfish_core::broker::REGISTER_RETRY_MS);
    let again = registrations(&mut b);
    assert_eq!(again.len(), 2, "registers again");
    // A refusal counts as unanswered; only success ends the retries.
    answer(&mut b, &again[0].1, response::SUCCESS, 5_010);
    answer(&mut b, &again[1].1, response::SYSTEM_ERROR, 5_010);
    b.on_timeout(5_000 + rockfish_core::broker::REGISTER_RETRY_MS);
    let third = registrations(&mut b);
    assert_eq!(third.len(), 2);
    for (_, req) in &third {
        answer(&mut b, req, response::SUCCESS, 10_010);
    }
    b.on_timeout(10_000 + rockfish_core::broker::REGISTER_RETRY_MS);
    assert!(registrations(&mut b).is_empty(), "all answered: no retry");
}

#[test]
fn sends_store_and_answer_like_rocketmq() {
    let mut h = H::default();
    let r = h.send("TopicA", 1, "hello");
    assert_eq!(r.code, response::SUCCESS, "{:?}", r.remark);
    assert_eq!(
        (r.ext("queueId"), r.ext("queueOffset")),
        (Some("1"), Some("0"))
    );
    let id = r.ext("msgId").unwrap();
    assert_eq!(id.len(), 32);
    let (host, offset) = parse_offset_msg_id(id).unwrap();
    assert_eq!(host, HostAddr::V4([127, 0, 0, 1], 10911));
    assert_eq!(offset, 0);
    assert_eq!(
        h.b.topic("TopicA").unwrap().write_queue_nums,
        4,
        "auto-created with 4 queues"
    );
    assert_eq!(h.send("TopicA", 1, "again").ext("queueOffset"), Some("1"));
    // V1 header names work too.
    let props = String::from_utf8(properties_string([("TAGS", "T")])).unwrap();
    let v1 = h
        .req(request::SEND_MESSAGE)
        .with_ext("producerGroup", "PG")
        .with_ext("topic", "TopicA")
        .with_ext("defaultTopic", "TBW102")
        .with_ext("defaultTopicQueueNums", 4)
        .with_ext("queueId", 1)
        .with_ext("sysFlag", 0)
        .with_ext("bornTimestamp", 1)
        .with_ext("flag", 0)
        .with_ext("properties", props)
        .with_body(&b"v1"[..]);
    assert_eq!(h.one(P, v1).0.ext("queueOffset"), Some("2"));
    // The stored record carries the producer's address as born host.
    let (_, recs) = h.pull("TopicA", 1, 0);
    assert_eq!(recs.len(), 3);
    assert_eq!(&recs[2].body()[..], b"v1");
    assert_eq!(
        &recs[0].bytes()[52..56],
        &5555i32.to_be_bytes(),
        "born host port"
    );
}

#[test]
fn every_send_refusal_has_its_code() {
    let mut h = H::new(BrokerConfig {
        auto_create_topic: false,
        ..BrokerConfig::default()
    });
    assert_eq!(h.send("Nope", 0, "x").code, response::TOPIC_NOT_EXIST);
    let mut h = H::default();
    assert_eq!(h.send("TopicA", 0, "x").code, response::SUCCESS);
    assert_eq!(
        h.send("TopicA", 9, "x").code,
        response::SYSTEM_ERROR,
        "queue id out of range"
    );
    assert_eq!(h.send("bad/topic", 0, "x").code, response::SYSTEM_ERROR);
    let big = "x".repeat((4 << 20) + 1);
    let r = h.send("TopicA", 0, &big);
    assert_eq!(r.code, response::MESSAGE_ILLEGAL, "{:?}", r.remark);
    let missing = h.req(request::SEND_MESSAGE_V2).with_ext("b", "TopicA");
    let r = h.one(P, missing).0;
    assert!(r.code == response::SYSTEM_ERROR && r.remark.unwrap().contains("queueId"));
    // Flow control: the request waited 300 ms in the driver's queue.
    let cmd = h.send_cmd("TopicA", 0, "late", "T");
    h.b.on_command(P, cmd, 0, 300);
    let out = h.drain();
    assert!(
        matches!(&out[..], [Output::Send { cmd, .. }] if cmd.code == response::SYSTEM_BUSY),
        "{out:?}"
    );
    // A topic without write permission.
    let update = h
        .req(request::UPDATE_AND_CREATE_TOPIC)
        .with_ext("topic", "ReadOnly")
        .with_ext("readQueueNums", 2)
        .with_ext("perm", 4);
    h.one(C, update);
    assert_eq!(h.send("ReadOnly", 0, "x").code, response::NO_PERMISSION);
    // A slave refuses sends.
    let mut s = H::new(BrokerConfig {
        broker_id: 1,
        broker_role: rockfish_core::broker::BrokerRole::Slave,
        ..BrokerConfig::default()
    });
    assert_eq!(
        s.send("TopicA", 0, "x").code,
        response::SERVICE_NOT_AVAILABLE
    );
    // Unknown request codes.
    let unknown = h.req(4242);
    assert_eq!(
        h.one(C, unknown).0.code,
        response::REQUEST_CODE_NOT_SUPPORTED
    );
}

#[test]
fn batch_sends_store_contiguously() {
    let mut h = H::default();
    let items: Vec<BatchItem> = (0..3)
        .map(|i| BatchItem {
            flag: 0,
            body: Bytes::from(format!("m{i}")),
            properties: Bytes::from(properties_string([("UNIQ_KEY", format!("U{i}").as_str())])),
        })
        .collect();
    let cmd = h
        .req(request::SEND_BATCH_MESSAGE)
        .with_ext("a", "PG")
        .with_ext("b", "TopicB")
        .with_ext("d", 4)
        .with_ext("e", 2)
        .with_ext("f", 0)
        .with_ext("g", 1)
        .with_ext("h", 0)
        .with_ext("m", true)
        .with_body(encode_batch(&items));
    let r = h.one(P, cmd).0;
    assert_eq!(r.code, response::SUCCESS, "{:?}", r.remark);
    assert_eq!(r.ext("msgId").unwrap().split(',').count(), 3);
    let (_, recs) = h.pull("TopicB", 2, 0);
    let bodies: Vec<_> = recs
        .iter()
        .map(|r| String::from_utf8(r.body().to_vec()).unwrap())
        .collect();
    assert_eq!(bodies, vec!["m0", "m1", "m2"]);
    assert_eq!(recs[1].property("UNIQ_KEY"), Some(&b"U1"[..]));
    let garbage = h
        .req(request::SEND_BATCH_MESSAGE)
        .with_ext("b", "TopicB")
        .with_ext("e", 0)
        .with_body(&b"\x00\x00"[..]);
    assert_eq!(h.one(P, garbage).0.code, response::MESSAGE_ILLEGAL);
}

#[test]
fn pulls_filter_by_tag_and_report_offsets() {
    let mut h = H::default();
    for (i, tag) in ["TagA", "TagB", "TagA"].iter().enumerate() {
        let cmd = h.send_cmd("TopicA", 0, &format!("m{i}"), tag);
        h.one(P, cmd);
    }
    let (r, recs) = h.pull("TopicA", 0, 0);
    assert_eq!(r.code, response::SUCCESS);
    assert_eq!(
        (
            r.ext("nextBeginOffset"),
            r.ext("minOffset"),
            r.ext("maxOffset")
        ),
        (Some("3"), Some("0"), Some("3"))
    );
    assert_eq!(recs.len(), 3);
    let cmd = h.pull_cmd("TopicA", 0, 0, 4, "TagB || TagC");
    let (r, recs) = h.one(C, cmd);
    assert_eq!(r.code, response::SUCCESS);
    assert_eq!(recs.len(), 1);
    assert_eq!(
        StoredRecord::parse(recs[0].clone(), None)
            .unwrap()
            .queue_offset(),
        1
    );
    assert_eq!(h.pull("TopicA", 0, 3).0.code, response::PULL_NOT_FOUND);
    let (moved, _) = h.pull("TopicA", 0, 50);
    assert_eq!(
        (moved.code, moved.ext("nextBeginOffset")),
        (response::PULL_OFFSET_MOVED, Some("3"))
    );
    assert_eq!(h.pull("Nope", 0, 0).0.code, response::TOPIC_NOT_EXIST);
    assert_eq!(h.pull("TopicA", 7, 0).0.code, response::SYSTEM_ERROR);
    // Without the subscription flag the group's heartbeat subscription is needed.
    let cmd = h.pull_cmd("TopicA", 0, 0, 0, "*");
    assert_eq!(h.one(C, cmd).0.code, response::SUBSCRIPTION_NOT_EXIST);
    // The commit-offset flag stores the consumer's progress.
    let cmd = h
        .pull_cmd("TopicA", 0, 0, 4 | 1, "*")
        .with_ext("commitOffset", 2);
    h.one(C, cmd);
    assert_eq!(h.committed("CG", "TopicA", 0).as_deref(), Some("2"));
}

#[test]
fn long_polling_holds_until_a_message_arrives_or_time_runs_out() {
    let mut h = H::default();
    h.send("TopicA", 0, "first");
    // Suspend flag (2) + subscription flag (4), at the end of the queue: held.
    let held = h.pull_cmd("TopicA", 0, 1, 2 | 4, "*");
    assert!(h.call(C, held.clone()).is_empty());
    assert_eq!(h.b.held_pulls(), 1);
    assert!(h.b.poll_timeout().unwrap() <= 15_000);
    // A message for another queue does not wake it; one for its queue does.
    h.send("TopicA", 1, "other");
    assert_eq!(h.b.held_pulls(), 1);
    let cmd = h.send_cmd("TopicA", 0, "second", "TagA");
    let out = h.call(P, cmd);
    let woke: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::SendRecords { conn, cmd, records } if *conn == C => {
                Some((cmd.opaque, records.len()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(woke, vec![(held.opaque, 1)]);
    assert_eq!(h.b.held_pulls(), 0);
    // A held pull whose filter rejects the new message keeps waiting, then times out.
    let picky = h.pull_cmd("TopicA", 0, 2, 2 | 4, "TagZ");
    assert!(h.call(C, picky.clone()).is_empty());
    h.send("TopicA", 0, "third");
    assert_eq!(h.b.held_pulls(), 1);
    h.b.on_timeout(14_999);
    assert!(
        h.drain()
            .iter()
            .all(|o| !matches!(o, Output::Send { conn, .. } if *conn == C))
    );
    h.b.on_timeout(15_000);
    let out = h.drain();
    let timed_out: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::Send { conn, cmd } if *conn == C => Some((cmd.opaque, cmd.code)),
            _ => None,
        })
        .collect();
    assert_eq!(timed_out, vec![(picky.opaque, response::PULL_NOT_FOUND)]);
    // A disconnect drops held pulls.
    let held = h.pull_cmd("TopicA", 0, 3, 2 | 4, "*");
    h.call(C, held);
    h.b.on_disconnect(C, 16_000);
    assert_eq!(h.b.held_pulls(), 0);
}

fn sync_broker() -> H {
    H::new(BrokerConfig {
        flush_disk_type: FlushDiskType::Sync,
        ..BrokerConfig::default()
    })
}

#[test]
fn sync_flush_acks_only_once_durable_with_group_commit() {
    let mut h = sync_broker();
    let mut flushes = Vec::new();
    let mut opaques = Vec::new();
    for i in 0..3 {
        let cmd = h.send_cmd("TopicA", 0, &format!("m{i}"), "T");
        opaques.push(cmd.opaque);
        for o in h.call(P, cmd) {
            match o {
                Output::Flush { upto } => flushes.push(upto),
                Output::Send { conn, cmd } if conn == P => panic!("acked before durable: {cmd:?}"),
                _ => {}
            }
        }
    }
    // The first send's flush, then the second's (queued behind it); the third waits.
    assert_eq!(
        flushes.len(),
        MAX_FLUSHES_IN_FLIGHT,
        "two flushes in flight at most"
    );
    assert!(flushes[0] < flushes[1]);
    let durable_before = h
        .disk
        .durable_bytes("commitlog/00000000000000000000")
        .unwrap();
    assert!(durable_before.iter().all(|&b| b == 0), "nothing synced yet");
    let drain_acks = |h: &mut H| {
        let (mut acked, mut more) = (Vec::new(), Vec::new());
        for o in h.drain() {
            match o {
                Output::Send { cmd, .. } => {
                    assert_eq!(cmd.code, response::SUCCESS);
                    acked.push(cmd.opaque);
                }
                Output::Flush { upto } => more.push(upto),
                _ => {}
            }
        }
        (acked, more)
    };
    // The second flush is answered first: its bytes are durable, the first's not yet, so
    // nothing counts.
    h.b.run_flush(flushes[1], 10);
    assert_eq!(drain_acks(&mut h), (vec![], vec![]));
    // The first one's answer makes both count: the first two sends are acked, in order,
    // and the third send's flush is asked.
    h.b.run_flush(flushes[0], 11);
    let (acked, more) = drain_acks(&mut h);
    assert_eq!(acked, vec![opaques[0], opaques[1]]);
    assert_eq!(more.len(), 1);
    h.b.run_flush(more[0], 12);
    assert_eq!(drain_acks(&mut h), (vec![opaques[2]], vec![]));
    assert!(
        h.disk
            .durable_bytes("commitlog/00000000000000000000")
            .unwrap()
            .iter()
            .any(|&b| b != 0)
    );
}

#[test]
fn sync_flush_timeout_and_failure_are_never_send_ok() {
    let mut h = sync_broker();
    let cmd = h.send_cmd("TopicA", 0, "slow", "T");
    h.call(P, cmd);
    h.b.on_timeout(5_000);
    let out = h.drain();
    assert!(
        out.iter().any(
            |o| matches!(o, Output::Send { cmd, .. } if cmd.code == response::FLUSH_DISK_TIMEOUT)
        ),
        "{out:?}"
    );
    let cmd = h.send_cmd("TopicA", 0, "doomed", "T");
    let upto = h.call(P, cmd).into_iter().find_map(|o| {
        if let Output::Flush { upto } = o {
            Some(upto)
        } else {
            None
        }
    });
    // The earlier flush is still in flight in this test's bookkeeping; fail whichever runs.
    let upto = upto.unwrap_or(h.b.store().write_pos());
    h.disk.fail_next_syncs(1);
    h.b.run_flush(upto, 6_000);
    let out = h.drain();
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Send { cmd, .. } if cmd.code == response::SYSTEM_ERROR)),
        "{out:?}"
    );
    assert!(
        out.iter()
            .all(|o| !matches!(o, Output::Send { cmd, .. } if cmd.code == response::SUCCESS))
    );
    assert_eq!(
        h.send("TopicA", 0, "after").code,
        response::SERVICE_NOT_AVAILABLE
    );
}

fn heartbeat(h: &mut H, conn: ConnId, client: &str, group: &str) {
    let data: HeartbeatData = serde_json::from_value(serde_json::json!({
        "clientID": client,
        "producerDataSet": [],
        "consumerDataSet": [{
            "groupName": group, "consumeType": "CONSUME_PASSIVELY", "messageModel": "CLUSTERING",
            "consumeFromWhere": "CONSUME_FROM_LAST_OFFSET", "unitMode": false,
            "subscriptionDataSet": [{"topic": "TopicA", "subString": "TagA", "tagsSet": ["TagA"], "codeSet": [], "subVersion": 1, "classFilterMode": false, "expressionType": "TAG"}]
        }]
    }))
    .unwrap();
    let cmd = h
        .req(request::HEART_BEAT)
        .with_body(serde_json::to_vec(&data).unwrap());
    let now = h.now;
    h.b.on_command(conn, cmd, now, now);
}

fn notified(out: &[Output]) -> Vec<ConnId> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send { conn, cmd } if cmd.code == request::NOTIFY_CONSUMER_IDS_CHANGED => {
                Some(*conn)
            }
            _ => None,
        })
        .collect()
}

#[test]
fn heartbeats_track_groups_and_notify_on_change() {
    let mut h = H::default();
    heartbeat(&mut h, ConnId(10), "c1", "G");
    assert_eq!(notified(&h.drain()), vec![ConnId(10)]);
    assert!(h.b.topic("%RETRY%G").is_some(), "retry topic created");
    heartbeat(&mut h, ConnId(10), "c1", "G");
    assert!(
        notified(&h.drain()).is_empty(),
        "a repeat heartbeat changes nothing"
    );
    heartbeat(&mut h, ConnId(11), "c2", "G");
    assert_eq!(notified(&h.drain()), vec![ConnId(10), ConnId(11)]);
    let list = h
        .req(request::GET_CONSUMER_LIST_BY_GROUP)
        .with_ext("consumerGroup", "G");
    let body: serde_json::Value = serde_json::from_slice(&h.one(C, list).0.body).unwrap();
    assert_eq!(body["consumerIdList"], serde_json::json!(["c1", "c2"]));
    // The heartbeat's subscription serves pulls without the subscription flag.
    h.send("TopicA", 0, "x");
    let cmd = h
        .pull_cmd("TopicA", 0, 0, 0, "")
        .with_ext("consumerGroup", "G");
    let (r, _) = h.one(C, cmd);
    assert_eq!(r.code, response::SUCCESS);
    h.b.on_disconnect(ConnId(11), 1);
    assert_eq!(notified(&h.drain()), vec![ConnId(10)]);
    // Silent for more than 120 s: dropped.
    h.b.on_timeout(130_001);
    h.drain();
    let list = h
        .req(request::GET_CONSUMER_LIST_BY_GROUP)
        .with_ext("consumerGroup", "G");
    assert_eq!(h.one(C, list).0.code, response::SYSTEM_ERROR);
    let bad = h.req(request::HEART_BEAT).with_body(&b"nope"[..]);
    assert_eq!(h.one(C, bad).0.code, response::SYSTEM_ERROR);
}

#[test]
fn offsets_and_topics_survive_a_restart() {
    let mut h = H::default();
    h.send("TopicA", 0, "x");
    let update = h
        .req(request::UPDATE_CONSUMER_OFFSET)
        .with_ext("consumerGroup", "CG")
        .with_ext("topic", "TopicA")
        .with_ext("queueId", 0)
        .with_ext("commitOffset", 1);
    assert_eq!(h.one(C, update).0.code, response::SUCCESS);
    let create = h
        .req(request::UPDATE_AND_CREATE_TOPIC)
        .with_ext("topic", "Made")
        .with_ext("readQueueNums", 8)
        .with_ext("writeQueueNums", 8)
        .with_ext("perm", 6);
    assert_eq!(h.one(C, create).0.code, response::SUCCESS);
    let disk = h.0.b.shutdown(1_000).unwrap();
    let mut h2 = H::start(BrokerConfig::default(), disk, 2_000);
    assert_eq!(h2.committed("CG", "TopicA", 0).as_deref(), Some("1"));
    assert_eq!(h2.b.topic("Made").unwrap().read_queue_nums, 8);
    let all = h2.req(request::GET_ALL_TOPIC_CONFIG);
    let body: serde_json::Value = serde_json::from_slice(&h2.one(C, all).0.body).unwrap();
    assert!(body["topicConfigTable"]["Made"].is_object());
    let del = h2
        .req(request::DELETE_TOPIC_IN_BROKER)
        .with_ext("topic", "Made");
    h2.one(C, del);
    assert!(h2.b.topic("Made").is_none());
    // A group with no offset on a queue that never lost messages starts at 0.
    assert_eq!(h2.committed("New", "TopicA", 0).as_deref(), Some("0"));
}

#[test]
fn offset_and_message_queries() {
    let mut h = H::default();
    for i in 0..3 {
        h.now = 1_000 * (i + 1);
        h.send("TopicA", 0, &format!("m{i}"));
    }
    let max = h
        .req(request::GET_MAX_OFFSET)
        .with_ext("topic", "TopicA")
        .with_ext("queueId", 0);
    assert_eq!(h.one(C, max).0.ext("offset"), Some("3"));
    let min = h
        .req(request::GET_MIN_OFFSET)
        .with_ext("topic", "TopicA")
        .with_ext("queueId", 0);
    assert_eq!(h.one(C, min).0.ext("offset"), Some("0"));
    let search = h
        .req(request::SEARCH_OFFSET_BY_TIMESTAMP)
        .with_ext("topic", "TopicA")
        .with_ext("queueId", 0)
        .with_ext("timestamp", 1_500);
    assert_eq!(h.one(C, search).0.ext("offset"), Some("1"));
    let earliest = h
        .req(request::GET_EARLIEST_MSG_STORETIME)
        .with_ext("topic", "TopicA")
        .with_ext("queueId", 0);
    assert_eq!(h.one(C, earliest).0.ext("timestamp"), Some("1000"));
    let (_, recs) = h.pull("TopicA", 0, 1);
    let view = h
        .req(request::VIEW_MESSAGE_BY_ID)
        .with_ext("offset", recs[0].physical_offset());
    let (r, body) = h.one(C, view);
    assert_eq!(r.code, response::SUCCESS);
    assert_eq!(
        &StoredRecord::parse(body[0].clone(), None).unwrap().body()[..],
        b"m1"
    );
    let bad_view = h.req(request::VIEW_MESSAGE_BY_ID).with_ext("offset", 3);
    assert_eq!(h.one(C, bad_view).0.code, response::SYSTEM_ERROR);
    let query = h
        .req(request::QUERY_MESSAGE)
        .with_ext("topic", "TopicA")
        .with_ext("key", "m2")
        .with_ext("maxNum", 32)
        .with_ext("beginTimestamp", 0)
        .with_ext("endTimestamp", i64::MAX);
    let (r, found) = h.one(C, query);
    assert_eq!(
        (r.code, found.len()),
        (response::SUCCESS, 1),
        "found by UNIQ_KEY"
    );
    let query = h
        .req(request::QUERY_MESSAGE)
        .with_ext("topic", "TopicA")
        .with_ext("key", "key-1")
        .with_ext("maxNum", 32)
        .with_ext("beginTimestamp", 0)
        .with_ext("endTimestamp", i64::MAX);
    assert_eq!(h.one(C, query).1.len(), 3, "found by KEYS");
    let miss = h
        .req(request::QUERY_MESSAGE)
        .with_ext("topic", "TopicA")
        .with_ext("key", "nope")
        .with_ext("maxNum", 32)
        .with_ext("beginTimestamp", 0)
        .with_ext("endTimestamp", i64::MAX);
    assert_eq!(h.one(C, miss).0.code, response::QUERY_NOT_FOUND);
}

#[test]
fn unregister_client_leaves_the_group_and_notifies_the_rest() {
    let mut h = H::default();
    heartbeat(&mut h, ConnId(10), "c1", "G");
    heartbeat(&mut h, ConnId(11), "c2", "G");
    h.drain();
    let unreg = h
        .req(request::UNREGISTER_CLIENT)
        .with_ext("clientID", "c1")
        .with_ext("consumerGroup", "G");
    let out = h.call(ConnId(10), unreg);
    assert!(out.iter().any(|o| matches!(o, Output::Send { cmd, .. } if cmd.is_response() && cmd.code == response::SUCCESS)));
    assert_eq!(notified(&out), vec![ConnId(11)]);
    let list = h
        .req(request::GET_CONSUMER_LIST_BY_GROUP)
        .with_ext("consumerGroup", "G");
    let body: serde_json::Value = serde_json::from_slice(&h.one(C, list).0.body).unwrap();
    assert_eq!(body["consumerIdList"], serde_json::json!(["c2"]));
    let missing = h.req(request::UNREGISTER_CLIENT);
    assert_eq!(h.one(C, missing).0.code, response::SYSTEM_ERROR);
}

fn lock_cmd(h: &mut H, code: i32, client: &str, queues: &[u32]) -> RemotingCommand {
    let mqs: Vec<_> = queues
        .iter()
        .map(|q| serde_json::json!({"topic": "TopicA", "brokerName": "broker-a", "queueId": q}))
        .collect();
    let body = serde_json::json!({"consumerGroup": "OG", "clientId": client, "onlyThisBroker": false, "mqSet": mqs});
    h.req(code).with_body(serde_json::to_vec(&body).unwrap())
}

fn locked(h: &mut H, client: &str, queues: &[u32]) -> Vec<u64> {
    let cmd = lock_cmd(h, request::LOCK_BATCH_MQ, client, queues);
    let (r, _) = h.one(C, cmd);
    assert_eq!(r.code, response::SUCCESS);
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let mut ids: Vec<u64> = body["lockOKMQSet"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["queueId"].as_u64().unwrap())
        .collect();
    ids.sort();
    ids
}

#[test]
fn a_started_broker_grants_no_lock_until_locks_granted_before_are_no_longer_trusted() {
    // Its lock table died with the last process: a consumer granted a lock just before the
    // crash trusts it for up to 30 s more, so granting the queue to another one sooner would
    // put two consumers inside one orderly queue.
    let mut h = H::default();
    assert_eq!(
        locked(&mut h, "c1", &[0, 1]),
        vec![0, 1],
        "a first start has no earlier locks to honour"
    );
    h.send("TopicA", 0, "m0");
    h.disk.crash();
    let restart = 5_000;
    let mut h = H::start(BrokerConfig::default(), h.disk.clone(), restart);
    assert_eq!(locked(&mut h, "c2", &[0, 1]), Vec::<u64>::new());
    h.now = restart + LOCK_RESTART_GRACE_MS - 1;
    assert_eq!(locked(&mut h, "c2", &[0]), Vec::<u64>::new());
    h.now = restart + LOCK_RESTART_GRACE_MS;
    assert_eq!(locked(&mut h, "c2", &[0]), vec![0]);
}

#[test]
fn queue_locks_are_exclusive_refreshable_and_expire() {
    let mut h = H::default();
    assert_eq!(locked(&mut h, "c1", &[0, 1]), vec![0, 1]);
    assert_eq!(locked(&mut h, "c2", &[1, 2]), vec![2], "queue 1 is c1's");
    h.now = 50_000;
    assert_eq!(
        locked(&mut h, "c1", &[0, 1]),
        vec![0, 1],
        "the holder refreshes its lease"
    );
    h.now = 100_000; // 50 s after c1's refresh: still c1's
    assert_eq!(locked(&mut h, "c2", &[0]), Vec::<u64>::new());
    h.now = 110_001; // more than 60 s after the refresh: the lease is gone
    assert_eq!(locked(&mut h, "c2", &[0]), vec![0]);
    let mq = rockfish_core::protocol::MessageQueue {
        topic: "TopicA".into(),
        broker_name: "broker-a".into(),
        queue_id: 0,
    };
    assert_eq!(h.b.lock_holder("OG", &mq, h.now), Some("c2"));
    // Unlocking only releases one's own locks.
    let cmd = lock_cmd(&mut h, request::UNLOCK_BATCH_MQ, "c1", &[0, 2]);
    assert_eq!(h.one(C, cmd).0.code, response::SUCCESS);
    assert_eq!(h.b.lock_holder("OG", &mq, h.now), Some("c2"));
    let cmd = lock_cmd(&mut h, request::UNLOCK_BATCH_MQ, "c2", &[0, 2]);
    h.one(C, cmd);
    assert_eq!(h.b.lock_holder("OG", &mq, h.now), None);
    assert_eq!(locked(&mut h, "c3", &[0, 2]), vec![0, 2]);
    let bad = h.req(request::LOCK_BATCH_MQ).with_body(&b"[]"[..]);
    assert_eq!(h.one(C, bad).0.code, response::SYSTEM_ERROR);
}

#[test]
fn a_woken_long_poll_does_not_rewind_a_newer_commit() {
    let mut h = H::default();
    h.send("TopicA", 0, "m0");
    // A held pull that carries commitOffset 0 (commit flag 1 + suspend 2 + subscription 4).
    let held = h
        .pull_cmd("TopicA", 0, 1, 1 | 2 | 4, "*")
        .with_ext("commitOffset", 0);
    assert!(h.call(C, held).is_empty());
    // The consumer commits further meanwhile.
    let update = h
        .req(request::UPDATE_CONSUMER_OFFSET)
        .with_ext("consumerGroup", "CG")
        .with_ext("topic", "TopicA")
        .with_ext("queueId", 0)
        .with_ext("commitOffset", 1);
    h.one(C, update);
    // A new message wakes the held pull; its stale commit offset must not be applied again.
    h.send("TopicA", 0, "m1");
    assert_eq!(h.committed("CG", "TopicA", 0).as_deref(), Some("1"));
}

#[test]
fn auto_created_topics_are_persisted_and_registered_together() {
    // One fsync of topics.json and one full registration per new topic made 10,000 topics a
    // sync storm: the first creation is registered at once (its route is there right away),
    // the creations within TOPICS_PERSIST_DELAY_MS after it share one of each.
    let mut h = H::new(BrokerConfig {
        namesrv_addrs: vec!["ns1:9876".into()],
        ..BrokerConfig::default()
    });
    fn h_topics(disk: &MemDisk) -> String {
        use rockfish_store::Disk;
        String::from_utf8(
            disk.read_file("config/topics.json")
                .unwrap()
                .unwrap_or_default(),
        )
        .unwrap()
    }
    let start = h.now;
    let mut registrations = Vec::new();
    for i in 0..100 {
        h.now = start + i;
        let r = h.send_cmd(&format!("Auto{i}"), 0, "x", "T");
        let out = h.call(P, r);
        registrations.extend(out.into_iter().filter_map(|o| match o {
            Output::SendTo { cmd, .. } if cmd.code == request::REGISTER_BROKER => Some(cmd),
            _ => None,
        }));
    }
    assert_eq!(registrations.len(), 1, "the first creation only");
    let body = String::from_utf8(registrations[0].body.to_vec()).unwrap();
    assert!(
        body.contains("Auto0") && !body.contains("Auto1\""),
        "{body}"
    );
    assert!(!h_topics(&h.disk).contains("Auto99"), "not yet persisted");
    let due = h.b.poll_timeout().unwrap();
    assert!(
        due <= start + rockfish_core::broker::TOPICS_PERSIST_DELAY_MS,
        "{due}"
    );
    h.b.on_timeout(due);
    let regs: Vec<_> = h
        .drain()
        .into_iter()
        .filter_map(|o| match o {
            Output::SendTo { cmd, .. } if cmd.code == request::REGISTER_BROKER => Some(cmd),
            _ => None,
        })
        .collect();
    assert_eq!(regs.len(), 1, "one registration for all the others");
    let body = String::from_utf8(regs[0].body.to_vec()).unwrap();
    assert!(body.contains("Auto1\"") && body.contains("Auto99"));
    let saved = h_topics(&h.disk);
    assert!(saved.contains("Auto0") && saved.contains("Auto99"));
    h.b.on_timeout(due + 1);
    assert!(
        registrations_of(&mut h.b).is_empty(),
        "nothing more to register"
    );
    // Quiet for an interval: the next creation is registered at once again.
    h.now = due + rockfish_core::broker::TOPICS_PERSIST_DELAY_MS;
    let r = h.send_cmd("Late", 0, "x", "T");
    let out = h.call(P, r);
    assert!(
        out.iter().any(
            |o| matches!(o, Output::SendTo { cmd, .. } if cmd.code == request::REGISTER_BROKER)
        )
    );
}

fn registrations_of(b: &mut Broker<MemDisk>) -> Vec<RemotingCommand> {
    registrations(b).into_iter().map(|(_, cmd)| cmd).collect()
}

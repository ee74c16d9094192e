//! Retries and dead letters on the broker: CONSUMER_SEND_MSG_BACK, a client's own re-send to
//! a retry topic, subscription groups (create, list, delete, persisted, consumeEnable), and
//! bad input to each.

use rockfish_core::broker::{BrokerConfig, FlushDiskType};
use rockfish_core::machine::ConnId;
use rockfish_core::message::offset_msg_id;
use rockfish_core::remoting::RemotingCommand;
use rockfish_core::remoting::codes::{request, response};
use rockfish_sim::harness::broker::BrokerHarness;
use rockfish_store::config::{SubscriptionGroupConfig, SubscriptionGroupTable};
use rockfish_store::message_store::SCHEDULE_TOPIC;
use rockfish_store::record::{HostAddr, StoredRecord};
use rockfish_store::{MemDisk, StoreConfig};

const P: ConnId = ConnId(1);
const C: ConnId = ConnId(2);
const T0: u64 = 1_700_000_000_000;
const RETRY: &str = "%RETRY%CG";
const DLQ: &str = "%DLQ%CG";

rockfish_sim::broker_harness!(H);

impl H {
    fn with(cfg: BrokerConfig, disk: MemDisk, now: u64) -> H {
        let mut h = BrokerHarness::start(cfg, StoreConfig::small(), disk, now);
        h.connect(P, HostAddr::V4([10, 0, 0, 9], 5555));
        h.connect(C, HostAddr::V4([10, 0, 0, 8], 6666));
        H(h)
    }
    fn new() -> H {
        H::with(BrokerConfig::default(), MemDisk::new(1), T0)
    }
    /// A broker that creates no subscription group on first use.
    fn without_group_creation() -> H {
        let cfg = BrokerConfig {
            auto_create_subscription_group: false,
            ..BrokerConfig::default()
        };
        H::with(cfg, MemDisk::new(1), T0)
    }
    /// Sends `body` to T queue 0; returns its commit log offset.
    fn send(&mut self, body: &str) -> u64 {
        let cmd = self.send_v2(
            "T",
            0,
            &[("TAGS", "A"), ("UNIQ_KEY", body)],
            body.as_bytes(),
        );
        let resp = self.one(P, cmd).0;
        assert_eq!(resp.code, response::SUCCESS, "{:?}", resp.remark);
        let id = resp.ext("msgId").unwrap().to_string();
        rockfish_core::message::parse_offset_msg_id(&id).unwrap().1
    }
    fn send_back_cmd(&mut self, offset: i64, delay_level: i32) -> RemotingCommand {
        self.req(request::CONSUMER_SEND_MSG_BACK)
            .with_ext("offset", offset)
            .with_ext("group", "CG")
            .with_ext("delayLevel", delay_level)
            .with_ext("originMsgId", "")
            .with_ext("originTopic", "T")
            .with_ext("unitMode", false)
    }
    fn send_back(&mut self, offset: u64, delay_level: i32) -> RemotingCommand {
        let cmd = self.send_back_cmd(offset as i64, delay_level);
        self.one(C, cmd).0
    }
    fn at(&mut self, now: u64) {
        self.now = now;
        self.b.on_timeout(now);
        self.drain();
    }
    fn update_group(&mut self, cfg: &SubscriptionGroupConfig) -> RemotingCommand {
        let cmd = self
            .req(request::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP)
            .with_body(bytes::Bytes::from(serde_json::to_vec(cfg).unwrap()));
        self.one(C, cmd).0
    }
    fn groups(&mut self) -> SubscriptionGroupTable {
        let cmd = self.req(request::GET_ALL_SUBSCRIPTIONGROUP_CONFIG);
        let resp = self.one(C, cmd).0;
        assert_eq!(resp.code, response::SUCCESS);
        serde_json::from_slice(&resp.body).unwrap()
    }
}

fn prop(r: &StoredRecord, name: &str) -> Option<String> {
    r.property(name)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

#[test]
fn a_send_back_goes_to_the_retry_topic_behind_its_backoff() {
    let mut h = H::new();
    let off = h.send("m1");
    let resp = h.send_back(off, 0);
    assert_eq!(resp.code, response::SUCCESS, "{:?}", resp.remark);
    // Level 3 + reconsumeTimes 0 = 3 (10 s), waiting in the schedule topic.
    let waiting = h.records(SCHEDULE_TOPIC, 2);
    assert_eq!(waiting.len(), 1);
    assert_eq!(prop(&waiting[0], "REAL_TOPIC").as_deref(), Some(RETRY));
    assert!(h.b.topic(RETRY).is_some(), "the retry topic exists");
    h.at(T0 + 9_999);
    assert!(h.records(RETRY, 0).is_empty(), "not before its 10 s");
    h.at(T0 + 10_000);
    let got = h.records(RETRY, 0);
    assert_eq!(got.len(), 1);
    let m = &got[0];
    assert_eq!(m.reconsume_times(), 1);
    assert_eq!(&m.body()[..], b"m1");
    assert_eq!(prop(m, "RETRY_TOPIC").as_deref(), Some("T"));
    assert_eq!(prop(m, "TAGS").as_deref(), Some("A"));
    assert_eq!(prop(m, "UNIQ_KEY").as_deref(), Some("m1"));
    let store_host = HostAddr::V4([127, 0, 0, 1], 10911);
    assert_eq!(
        prop(m, "ORIGIN_MESSAGE_ID"),
        Some(offset_msg_id(store_host, off)),
        "the first message's id"
    );
    assert_eq!(m.born_host(), HostAddr::V4([10, 0, 0, 9], 5555));
}

#[test]
fn after_max_reconsume_times_the_message_is_a_dead_letter() {
    let mut h = H::new();
    let mut cfg = SubscriptionGroupConfig::new("CG");
    cfg.retry_max_times = 2;
    assert_eq!(h.update_group(&cfg).code, response::SUCCESS);
    let mut off = h.send("m");
    let mut now = T0;
    for (reconsumed, level_ms) in [(1, 10_000), (2, 30_000)] {
        assert_eq!(h.send_back(off, 0).code, response::SUCCESS);
        now += level_ms;
        h.at(now);
        let got = h.records(RETRY, 0);
        assert_eq!(
            got.len(),
            reconsumed as usize,
            "retry {reconsumed} delivered"
        );
        let last = got.last().unwrap();
        assert_eq!(last.reconsume_times(), reconsumed);
        off = last.physical_offset();
    }
    // Reconsumed twice: the third failure is final.
    assert_eq!(h.send_back(off, 0).code, response::SUCCESS);
    let dead = h.records(DLQ, 0);
    assert_eq!(dead.len(), 1, "stored in the DLQ at once, undelayed");
    assert_eq!(dead[0].reconsume_times(), 3);
    assert_eq!(prop(&dead[0], "RETRY_TOPIC").as_deref(), Some("T"));
    assert_eq!(prop(&dead[0], "DELAY"), None);
    let t = h.b.topic(DLQ).expect("the DLQ topic was created");
    assert_eq!(t.write_queue_nums, 1);
    h.at(now + 7_200_000);
    assert_eq!(h.records(RETRY, 0).len(), 2, "nothing more retried");
}

#[test]
fn the_requests_max_wins_from_clients_that_send_it_and_a_negative_level_is_final() {
    let mut h = H::new();
    let off = h.send("m");
    let mut cmd = h
        .send_back_cmd(off as i64, 0)
        .with_ext("maxReconsumeTimes", 0);
    cmd.version = 120; // older than 3.4.9: the group's 16 counts
    assert_eq!(h.one(C, cmd).0.code, response::SUCCESS);
    assert!(h.records(DLQ, 0).is_empty());
    let mut cmd = h
        .send_back_cmd(off as i64, 0)
        .with_ext("maxReconsumeTimes", 0);
    cmd.version = 399;
    assert_eq!(h.one(C, cmd).0.code, response::SUCCESS);
    assert_eq!(h.records(DLQ, 0).len(), 1, "max 0: dead at once");
    assert_eq!(h.send_back(off, -1).code, response::SUCCESS);
    assert_eq!(h.records(DLQ, 0).len(), 2, "level -1: straight to the DLQ");
}

#[test]
fn a_named_level_is_used_as_given() {
    let mut h = H::new();
    let off = h.send("m");
    assert_eq!(h.send_back(off, 1).code, response::SUCCESS);
    assert_eq!(h.records(SCHEDULE_TOPIC, 0).len(), 1, "level 1 (1 s)");
}

#[test]
fn bad_send_backs_get_a_clear_error_and_disturb_nothing() {
    let mut h = H::without_group_creation();
    let off = h.send("m");
    let resp = h.send_back(off, 0);
    assert_eq!(resp.code, response::SUBSCRIPTION_GROUP_NOT_EXIST);
    assert!(resp.remark.unwrap().contains("CG"));
    assert_eq!(
        h.update_group(&SubscriptionGroupConfig::new("CG")).code,
        response::SUCCESS
    );
    let end = h.b.store().write_pos();
    for bad in [-1i64, (end + 1_000) as i64, (off + 3) as i64, i64::MAX] {
        let cmd = h.send_back_cmd(bad, 0);
        let resp = h.one(C, cmd).0;
        assert_eq!(resp.code, response::SYSTEM_ERROR, "offset {bad}");
        assert!(
            resp.remark
                .as_deref()
                .unwrap()
                .contains("look message by offset failed"),
            "{:?}",
            resp.remark
        );
    }
    let missing = h
        .req(request::CONSUMER_SEND_MSG_BACK)
        .with_ext("group", "CG");
    assert_eq!(h.one(C, missing).0.code, response::SYSTEM_ERROR);
    assert_eq!(h.records(SCHEDULE_TOPIC, 2).len(), 0, "nothing stored");
    assert_eq!(h.send_back(off, 0).code, response::SUCCESS, "still serving");
}

#[test]
fn a_clients_own_resend_to_the_retry_topic_keeps_its_backoff_and_turns_dead_at_max() {
    let mut h = H::new();
    h.update_group(&SubscriptionGroupConfig::new("CG"));
    // The Java client's fallback: DELAY = 3 + reconsumeTimes, the count in the header.
    let cmd = h
        .send_v2(RETRY, 0, &[("DELAY", "5"), ("RETRY_TOPIC", "T")], b"r")
        .with_ext("j", 2);
    assert_eq!(h.one(P, cmd).0.code, response::SUCCESS);
    assert_eq!(h.records(SCHEDULE_TOPIC, 4).len(), 1, "behind level 5");
    // Without a level: the one a send-back would take.
    let cmd = h.send_v2(RETRY, 0, &[], b"r2").with_ext("j", 4);
    assert_eq!(h.one(P, cmd).0.code, response::SUCCESS);
    assert_eq!(h.records(SCHEDULE_TOPIC, 6).len(), 1, "behind level 7");
    assert!(h.records(RETRY, 0).is_empty(), "never stored undelayed");
    // At the max (16): to the DLQ, the delay dropped.
    let cmd = h
        .send_v2(RETRY, 0, &[("DELAY", "18")], b"dead")
        .with_ext("j", 16);
    let resp = h.one(P, cmd).0;
    assert_eq!(resp.code, response::SUCCESS);
    let dead = h.records(DLQ, 0);
    assert_eq!(dead.len(), 1);
    assert_eq!(prop(&dead[0], "DELAY"), None);
    // A retry topic of a group that cannot exist.
    let mut h = H::without_group_creation();
    let cmd = h.send_v2("%RETRY%nobody", 0, &[], b"x");
    assert_eq!(h.one(P, cmd).0.code, response::SUBSCRIPTION_GROUP_NOT_EXIST);
}

#[test]
fn sync_flush_answers_a_send_back_once_the_retry_is_durable() {
    let mut h = H::with(
        BrokerConfig {
            flush_disk_type: FlushDiskType::Sync,
            ..BrokerConfig::default()
        },
        MemDisk::new(1),
        T0,
    );
    let cmd = h.send_v2("T", 0, &[], b"m");
    h.call(P, cmd);
    h.run_flushes();
    let off = h.records("T", 0)[0].physical_offset();
    let cmd = h.send_back_cmd(off as i64, 0);
    let opaque = cmd.opaque;
    let out = h.call(C, cmd);
    assert!(
        BrokerHarness::response(&out, C, opaque).is_none(),
        "waits for its flush"
    );
    let out = h.run_flushes();
    let (resp, _) = BrokerHarness::response(&out, C, opaque).expect("answered once durable");
    assert_eq!(resp.code, response::SUCCESS);
}

#[test]
fn subscription_groups_are_created_listed_deleted_and_persisted() {
    let mut h = H::new();
    let mut cfg = SubscriptionGroupConfig::new("G1");
    cfg.retry_max_times = 3;
    cfg.retry_queue_nums = 2;
    assert_eq!(h.update_group(&cfg).code, response::SUCCESS);
    assert_eq!(
        h.groups().subscription_group_table.get("G1"),
        Some(&cfg),
        "listed as created"
    );
    // fastjson-style leniency: numbers as strings, missing fields defaulted.
    let cmd = h
        .req(request::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP)
        .with_body(bytes::Bytes::from_static(
            br#"{"groupName":"G2","retryMaxTimes":"5","consumeEnable":false}"#,
        ));
    assert_eq!(h.one(C, cmd).0.code, response::SUCCESS);
    let g2 = h.groups().subscription_group_table["G2"].clone();
    assert_eq!(
        (g2.retry_max_times, g2.retry_queue_nums, g2.consume_enable),
        (5, 1, false)
    );
    // consumeEnable=false: pulls refused.
    let pull = h
        .req(request::PULL_MESSAGE)
        .with_ext("consumerGroup", "G2")
        .with_ext("topic", "T")
        .with_ext("queueId", 0)
        .with_ext("queueOffset", 0)
        .with_ext("maxMsgNums", 32)
        .with_ext("sysFlag", 4)
        .with_ext("subscription", "*");
    let resp = h.one(C, pull).0;
    assert_eq!(resp.code, response::NO_PERMISSION);
    // Bad configs refused with the reason.
    for bad in [
        r#"{"groupName":"bad name"}"#,
        r#"{"groupName":"G3","retryMaxTimes":-1}"#,
        r#"{"groupName":"G3","retryQueueNums":100000}"#,
        r#"{"groupName":"G3","retryMaxTimes":"x"}"#,
    ] {
        let cmd = h
            .req(request::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP)
            .with_body(bytes::Bytes::copy_from_slice(bad.as_bytes()));
        assert_eq!(h.one(C, cmd).0.code, response::SYSTEM_ERROR, "{bad}");
    }
    // A heartbeat makes the retry topic with the group's retry queue count.
    let hb = br#"{"clientID":"c1","consumerDataSet":[{"groupName":"G1","messageModel":"CLUSTERING","subscriptionDataSet":[{"topic":"T","subString":"*"}]}]}"#;
    let cmd = h
        .req(request::HEART_BEAT)
        .with_body(bytes::Bytes::from_static(hb));
    assert_eq!(h.one(C, cmd).0.code, response::SUCCESS);
    assert_eq!(h.b.topic("%RETRY%G1").unwrap().write_queue_nums, 2);
    // Deleted, and the file follows across a restart.
    let del = h
        .req(request::DELETE_SUBSCRIPTIONGROUP)
        .with_ext("groupName", "G2")
        .with_ext("removeOffset", true);
    assert_eq!(h.one(C, del).0.code, response::SUCCESS);
    h.at(T0 + 2_000);
    let disk = h.disk.clone();
    disk.crash();
    let mut h = H::with(BrokerConfig::default(), disk, T0 + 3_000);
    let groups = h.groups().subscription_group_table;
    assert_eq!(groups.get("G1"), Some(&cfg), "persisted");
    assert!(!groups.contains_key("G2"), "deleted for good");
}

#[test]
fn groups_are_auto_created_on_first_use_up_to_the_cap() {
    let limits = rockfish_core::broker::BrokerLimits {
        max_groups: 2,
        ..Default::default()
    };
    let mut h = H::with(
        BrokerConfig {
            limits,
            ..BrokerConfig::default()
        },
        MemDisk::new(1),
        T0,
    );
    let off = h.send("m");
    for g in ["A1", "A2", "A3"] {
        let cmd = h.send_back_cmd(off as i64, 0).with_ext("group", g);
        let code = h.one(C, cmd).0.code;
        let want = if g == "A3" {
            response::SUBSCRIPTION_GROUP_NOT_EXIST
        } else {
            response::SUCCESS
        };
        assert_eq!(code, want, "{g}");
    }
    assert_eq!(h.groups().subscription_group_table.len(), 2);
}

#[test]
fn a_send_back_of_an_offset_that_holds_another_record_is_refused() {
    // Found by the simulator (pop seed 63): under ASYNC_FLUSH a power loss took a message a
    // consumer had been served, and its commit log offset came to hold an offset journal
    // record; the consumer's send-back named that offset, and the broker stored the journal
    // record as a retry: the group was handed a message nobody sent.
    let mut h = H::new();
    let m1 = h.send("m1");
    let m2 = h.send("m2");
    let back = |h: &mut H, offset: u64, id: &str| {
        let cmd = h
            .send_back_cmd(offset as i64, 0)
            .with_ext("originMsgId", id);
        h.one(C, cmd).0
    };
    let resp = back(&mut h, m2, "m1");
    assert_eq!(resp.code, response::SYSTEM_ERROR);
    assert!(
        resp.remark
            .as_deref()
            .unwrap()
            .contains("is not message m1"),
        "{:?}",
        resp.remark
    );
    assert!(h.records(SCHEDULE_TOPIC, 2).is_empty(), "nothing stored");
    // The message itself, by its unique key or its offset message id, goes back.
    assert_eq!(back(&mut h, m1, "m1").code, response::SUCCESS);
    let store_host = HostAddr::V4([127, 0, 0, 1], 10911);
    let id = offset_msg_id(store_host, m2);
    assert_eq!(back(&mut h, m2, &id).code, response::SUCCESS);
    assert_eq!(h.records(SCHEDULE_TOPIC, 2).len(), 2);
}

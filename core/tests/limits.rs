//! Every cap on state outside input can grow is answered: connections, held pulls,
//! SYNC_FLUSH waiters, groups, clients, subscriptions, topics (retry topics too) and offsets
//! in the broker; connections, brokers, topics and KV entries in the name server. And names
//! are checked as Apache checks them.

use std::collections::BTreeMap;

use bytes::Bytes;

use rockfish_core::broker::{BrokerConfig, BrokerLimits, FlushDiskType, validate_group};
use rockfish_core::machine::{ConnId, Output};
use rockfish_core::namesrv::{NameServer, NameServerConfig, NameServerLimits};
use rockfish_core::protocol::{
    DataVersion, RegisterBrokerBody, TopicConfig, TopicConfigSerializeWrapper, to_body,
};
use rockfish_core::remoting::RemotingCommand;
use rockfish_core::remoting::codes::{request, response};
use rockfish_sim::harness::broker::BrokerHarness;
use rockfish_store::record::HostAddr;
use rockfish_store::{MemDisk, StoreConfig};

const HOST: HostAddr = HostAddr::V4([10, 0, 0, 1], 5000);

rockfish_sim::broker_harness!(H);

impl H {
    fn new(limits: BrokerLimits, flush: FlushDiskType) -> H {
        let cfg = BrokerConfig {
            namesrv_addrs: vec![],
            flush_disk_type: flush,
            limits,
            ..BrokerConfig::default()
        };
        let mut h = BrokerHarness::start(cfg, StoreConfig::small(), MemDisk::new(1), 0);
        for c in 1..=4 {
            h.connect(ConnId(c), HOST);
        }
        H(h)
    }
    /// The response to `cmd` on `conn`, if one was output now.
    fn call(&mut self, conn: ConnId, cmd: RemotingCommand) -> Option<RemotingCommand> {
        let opaque = cmd.opaque;
        let out = self.0.call(conn, cmd);
        BrokerHarness::response(&out, conn, opaque).map(|(cmd, _)| cmd)
    }
    fn send(&mut self, topic: &str) -> Option<RemotingCommand> {
        let cmd = self.send_v2(topic, 0, &[("TAGS", "T")], b"m");
        self.call(ConnId(1), cmd)
    }
    fn hold_pull(&mut self, conn: ConnId, queue: u32) -> Option<RemotingCommand> {
        let cmd = self
            .req(request::PULL_MESSAGE)
            .with_ext("consumerGroup", "CG")
            .with_ext("topic", "TopicA")
            .with_ext("queueId", queue)
            .with_ext("queueOffset", 0)
            .with_ext("maxMsgNums", 32)
            .with_ext("sysFlag", 2 | 4)
            .with_ext("suspendTimeoutMillis", 15_000)
            .with_ext("subscription", "*");
        self.call(conn, cmd)
    }
    fn heartbeat(&mut self, conn: ConnId, client: &str, group: &str, subs: usize) -> i32 {
        let subs: Vec<_> = (0..subs)
            .map(|i| serde_json::json!({"topic": format!("T{i}"), "subString": "*"}))
            .collect();
        let body = serde_json::json!({
            "clientID": client,
            "producerDataSet": [],
            "consumerDataSet": [{"groupName": group, "messageModel": "CLUSTERING",
                "subscriptionDataSet": subs}]
        });
        let cmd = self
            .req(request::HEART_BEAT)
            .with_body(serde_json::to_vec(&body).unwrap());
        self.call(conn, cmd).unwrap().code
    }
}

fn closed(out: &[Output]) -> Vec<ConnId> {
    out.iter()
        .filter_map(|o| match o {
            Output::Close { conn, .. } => Some(*conn),
            _ => None,
        })
        .collect()
}

#[test]
fn broker_closes_connections_past_the_cap() {
    let limits = BrokerLimits {
        max_connections: 5,
        ..BrokerLimits::default()
    };
    let mut h = H::new(limits, FlushDiskType::Async);
    h.b.on_connect(ConnId(5), HOST, 0);
    assert!(closed(&h.drain()).is_empty());
    h.b.on_connect(ConnId(6), HOST, 0);
    assert_eq!(closed(&h.drain()), vec![ConnId(6)]);
    // The driver reports the close; the machine then has room again.
    h.b.on_disconnect(ConnId(6), 0);
    h.b.on_disconnect(ConnId(5), 0);
    h.b.on_connect(ConnId(7), HOST, 0);
    assert!(closed(&h.drain()).is_empty());
}

#[test]
fn held_pulls_past_the_caps_are_answered_busy() {
    let limits = BrokerLimits {
        max_held_pulls: 3,
        max_held_pulls_per_conn: 2,
        ..BrokerLimits::default()
    };
    let mut h = H::new(limits, FlushDiskType::Async);
    assert_eq!(h.send("TopicA").unwrap().code, response::SUCCESS);
    let (c1, c2) = (ConnId(2), ConnId(3));
    assert!(h.hold_pull(c1, 1).is_none(), "held");
    assert!(h.hold_pull(c1, 2).is_none(), "held");
    let busy = h.hold_pull(c1, 3).unwrap();
    assert_eq!(busy.code, response::SYSTEM_BUSY, "{:?}", busy.remark);
    assert!(busy.remark.unwrap().contains("held pulls"));
    assert!(h.hold_pull(c2, 1).is_none(), "held: 3 in all");
    assert_eq!(h.hold_pull(c2, 2).unwrap().code, response::SYSTEM_BUSY);
    assert_eq!(h.b.held_pulls(), 3);
    // A closed connection gives its share back.
    h.b.on_disconnect(c1, 0);
    h.drain();
    assert!(h.hold_pull(c2, 2).is_none());
    assert_eq!(h.hold_pull(c2, 3).unwrap().code, response::SYSTEM_BUSY);
    // Expired pulls give theirs back too.
    h.b.on_timeout(20_000);
    h.drain();
    assert_eq!(h.b.held_pulls(), 0);
    assert!(h.hold_pull(c2, 1).is_none());
    assert!(h.hold_pull(c2, 2).is_none());
}

#[test]
fn sync_flush_waiters_past_the_cap_are_answered_busy() {
    let limits = BrokerLimits {
        max_sync_waiters: 2,
        ..BrokerLimits::default()
    };
    let mut h = H::new(limits, FlushDiskType::Sync);
    assert!(h.send("TopicA").is_none(), "waits for its flush");
    assert!(h.send("TopicA").is_none(), "waits for its flush");
    let busy = h.send("TopicA").unwrap();
    assert_eq!(busy.code, response::SYSTEM_BUSY, "{:?}", busy.remark);
    assert_eq!(
        h.b.store().max_offset("TopicA", 0),
        2,
        "refused before storing"
    );
    // An answered offset commit waits for its flush too: the same cap answers it.
    let commit = RemotingCommand::request(request::UPDATE_CONSUMER_OFFSET, 9_001)
        .with_ext("consumerGroup", "g")
        .with_ext("topic", "TopicA")
        .with_ext("queueId", 0)
        .with_ext("commitOffset", 1);
    h.b.on_command(ConnId(2), commit, 0, 0);
    let busy: Vec<_> = std::iter::from_fn(|| h.b.poll_output())
        .filter_map(|o| match o {
            Output::Send { cmd, .. } if cmd.opaque == 9_001 => Some(cmd.code),
            _ => None,
        })
        .collect();
    assert_eq!(busy, vec![response::SYSTEM_BUSY]);
    h.now = 1;
    h.run_flushes();
    assert!(h.send("TopicA").is_none(), "room again once flushed");
}

#[test]
fn group_names_are_checked_as_apache_does() {
    assert!(validate_group("CID_order-consumer|%1").is_ok());
    for bad in ["", " ", "a b", "grp.1", "组", &"g".repeat(256)] {
        assert!(validate_group(bad).is_err(), "accepted {bad:?}");
    }
    assert!(validate_group(&"g".repeat(255)).is_ok());
    let mut h = H::new(BrokerLimits::default(), FlushDiskType::Async);
    for bad in ["bad group", "x/../../y", &"g".repeat(256)] {
        assert_eq!(h.heartbeat(ConnId(2), "c1", bad, 1), response::SYSTEM_ERROR);
        assert!(
            h.b.topic(&format!("%RETRY%{bad}")).is_none(),
            "no retry topic for {bad:?}"
        );
    }
    // A valid group whose retry topic would be over 127 characters is refused too.
    assert_eq!(
        h.heartbeat(ConnId(2), "c1", &"g".repeat(121), 1),
        response::SYSTEM_ERROR
    );
    assert_eq!(h.heartbeat(ConnId(2), "c1", &"g".repeat(120), 1), 0);
    assert!(h.b.topic(&format!("%RETRY%{}", "g".repeat(120))).is_some());
}

#[test]
fn heartbeats_past_the_group_client_and_subscription_caps_are_refused() {
    let limits = BrokerLimits {
        max_groups: 2,
        max_clients_per_group: 2,
        max_subscriptions: 3,
        ..BrokerLimits::default()
    };
    let mut h = H::new(limits, FlushDiskType::Async);
    assert_eq!(h.heartbeat(ConnId(2), "c1", "G1", 3), 0);
    assert_eq!(h.heartbeat(ConnId(2), "c1", "G2", 1), 0);
    assert_eq!(
        h.heartbeat(ConnId(2), "c1", "G3", 1),
        response::SYSTEM_ERROR
    );
    assert!(h.b.topic("%RETRY%G3").is_none());
    assert_eq!(h.heartbeat(ConnId(3), "c2", "G1", 1), 0);
    assert_eq!(
        h.heartbeat(ConnId(4), "c3", "G1", 1),
        response::SYSTEM_ERROR
    );
    // A known client of a full group still beats.
    assert_eq!(h.heartbeat(ConnId(3), "c2", "G1", 2), 0);
    assert_eq!(
        h.heartbeat(ConnId(2), "c1", "G2", 4),
        response::SYSTEM_ERROR
    );
}

#[test]
fn topics_past_the_cap_are_not_created() {
    // TBW102 and the topic named after the broker are two already.
    let limits = BrokerLimits {
        max_topics: 4,
        ..BrokerLimits::default()
    };
    let mut h = H::new(limits, FlushDiskType::Async);
    assert_eq!(h.send("T1").unwrap().code, response::SUCCESS);
    assert_eq!(
        h.heartbeat(ConnId(2), "c1", "G1", 1),
        0,
        "%RETRY%G1 is the third"
    );
    let r = h.send("T2").unwrap();
    assert_eq!(r.code, response::SYSTEM_ERROR);
    assert!(r.remark.unwrap().contains("limit"));
    assert!(h.b.topic("T2").is_none());
    assert_eq!(
        h.send("T1").unwrap().code,
        response::SUCCESS,
        "existing topics still take sends"
    );
    assert_eq!(
        h.heartbeat(ConnId(2), "c1", "G2", 1),
        response::SYSTEM_ERROR
    );
    let create = h
        .req(request::UPDATE_AND_CREATE_TOPIC)
        .with_ext("topic", "T3")
        .with_ext("readQueueNums", 1)
        .with_ext("writeQueueNums", 1);
    assert_eq!(
        h.call(ConnId(1), create).unwrap().code,
        response::SYSTEM_ERROR
    );
    assert!(h.b.topic("T3").is_none());
}

#[test]
fn offsets_past_the_cap_are_refused() {
    let limits = BrokerLimits {
        max_offset_entries: 1,
        ..BrokerLimits::default()
    };
    let mut h = H::new(limits, FlushDiskType::Async);
    let commit = |h: &mut H, group: &str, queue: u32| {
        let cmd = h
            .req(request::UPDATE_CONSUMER_OFFSET)
            .with_ext("consumerGroup", group)
            .with_ext("topic", "TopicA")
            .with_ext("queueId", queue)
            .with_ext("commitOffset", 5);
        h.call(ConnId(2), cmd).unwrap().code
    };
    assert_eq!(commit(&mut h, "G1", 0), response::SUCCESS);
    assert_eq!(commit(&mut h, "G1", 1), response::SUCCESS);
    assert_eq!(commit(&mut h, "G2", 0), response::SYSTEM_ERROR);
    for q in 2..1024 {
        assert_eq!(commit(&mut h, "G1", q), response::SUCCESS);
    }
    assert_eq!(commit(&mut h, "G1", 1024), response::SYSTEM_ERROR);
    assert_eq!(
        commit(&mut h, "G1", 3),
        response::SUCCESS,
        "known queues still commit"
    );
}

fn register(addr: &str, topics: usize) -> RemotingCommand {
    let table: BTreeMap<String, TopicConfig> = (0..topics)
        .map(|i| (format!("T{i}"), TopicConfig::new(&format!("T{i}"), 4)))
        .collect();
    let body = RegisterBrokerBody {
        topic_config_serialize_wrapper: TopicConfigSerializeWrapper {
            topic_config_table: table,
            data_version: DataVersion {
                timestamp: 1,
                counter: topics as i64,
            },
        },
        filter_server_list: vec![],
    };
    RemotingCommand::request(request::REGISTER_BROKER, 1)
        .with_ext("clusterName", "C")
        .with_ext("brokerName", addr)
        .with_ext("brokerAddr", addr)
        .with_ext("brokerId", 0)
        .with_body(to_body(&body))
}

fn ns_call(ns: &mut NameServer, cmd: RemotingCommand) -> RemotingCommand {
    ns.on_command(ConnId(1), cmd, 0);
    std::iter::from_fn(|| ns.poll_output())
        .find_map(|o| match o {
            Output::Send { cmd, .. } => Some(cmd),
            _ => None,
        })
        .unwrap()
}

#[test]
fn name_server_caps_connections_brokers_topics_and_kv() {
    let config = NameServerConfig {
        limits: NameServerLimits {
            max_connections: 2,
            max_brokers: 2,
            max_topics: 10,
            max_kv_entries: 2,
        },
        ..NameServerConfig::default()
    };
    let mut ns = NameServer::new(config, 0);
    for c in 1..=3 {
        ns.on_connect(ConnId(c), 0);
    }
    assert_eq!(
        closed(&std::iter::from_fn(|| ns.poll_output()).collect::<Vec<_>>()),
        vec![ConnId(3)]
    );

    assert_eq!(
        ns_call(&mut ns, register("b1:1", 6)).code,
        response::SUCCESS
    );
    assert_eq!(
        ns_call(&mut ns, register("b2:1", 4)).code,
        response::SUCCESS
    );
    let r = ns_call(&mut ns, register("b3:1", 0));
    assert_eq!(r.code, response::SYSTEM_ERROR, "a third broker");
    assert!(r.remark.unwrap().contains("limit"));
    assert_eq!(
        ns_call(&mut ns, register("b1:1", 6)).code,
        response::SUCCESS,
        "known brokers re-register"
    );
    assert_eq!(
        ns_call(&mut ns, register("b1:1", 11)).code,
        response::SYSTEM_ERROR,
        "too many topics"
    );
    assert_eq!(ns.live_brokers().count(), 2);

    let put = |k: &str| {
        RemotingCommand::request(request::PUT_KV_CONFIG, 2)
            .with_ext("namespace", "N")
            .with_ext("key", k)
            .with_ext("value", "v")
    };
    assert_eq!(ns_call(&mut ns, put("a")).code, response::SUCCESS);
    assert_eq!(ns_call(&mut ns, put("b")).code, response::SUCCESS);
    assert_eq!(ns_call(&mut ns, put("c")).code, response::SYSTEM_ERROR);
    assert_eq!(
        ns_call(&mut ns, put("a")).code,
        response::SUCCESS,
        "overwrites fit"
    );
    let del = RemotingCommand::request(request::DELETE_KV_CONFIG, 3)
        .with_ext("namespace", "N")
        .with_ext("key", "a");
    assert_eq!(ns_call(&mut ns, del).code, response::SUCCESS);
    assert_eq!(ns_call(&mut ns, put("c")).code, response::SUCCESS);
}

#[test]
fn batches_past_the_message_count_are_refused() {
    use rockfish_core::message::{BatchItem, MAX_BATCH_MESSAGES, encode_batch};
    let mut h = H::new(BrokerLimits::default(), FlushDiskType::Async);
    let batch = |n: usize| {
        let items: Vec<BatchItem> = (0..n)
            .map(|_| BatchItem {
                flag: 0,
                body: Bytes::from_static(b"m"),
                properties: Bytes::new(),
            })
            .collect();
        encode_batch(&items)
    };
    let send = |h: &mut H, n: usize| {
        let cmd = h
            .req(request::SEND_BATCH_MESSAGE)
            .with_ext("a", "PG")
            .with_ext("b", "TopicB")
            .with_ext("e", 0)
            .with_body(batch(n));
        h.call(ConnId(1), cmd).unwrap()
    };
    let r = send(&mut h, MAX_BATCH_MESSAGES + 1);
    assert_eq!(r.code, response::MESSAGE_ILLEGAL, "{:?}", r.remark);
    assert!(r.remark.unwrap().contains("more than"));
    assert_eq!(h.b.store().max_offset("TopicB", 0), 0, "nothing stored");
    assert_eq!(send(&mut h, 100).code, response::SUCCESS);
}

//! What operators ask a broker (the machine, no sockets): runtime info, client connections,
//! consume and topic stats, offset reset and clone, broker config read and changed at run
//! time (and kept across a restart), and the metrics snapshot.

use rockfish_core::broker::{BrokerConfig, HeartbeatData};
use rockfish_core::machine::{ConnId, Output};
use rockfish_core::protocol::lenient::MqTable;
use rockfish_core::protocol::{decode_body, perm};
use rockfish_core::remoting::RemotingCommand;
use rockfish_core::remoting::codes::{request, response};
use rockfish_sim::harness::broker::BrokerHarness;
use rockfish_store::record::HostAddr;
use rockfish_store::{MemDisk, StoreConfig};
use serde::Deserialize;

const P: ConnId = ConnId(1);
const C: ConnId = ConnId(2);

rockfish_sim::broker_harness!(H);

impl H {
    fn start(disk: MemDisk, now: u64) -> H {
        let mut h = BrokerHarness::start(BrokerConfig::default(), StoreConfig::small(), disk, now);
        h.connect(P, HostAddr::V4([10, 0, 0, 9], 5555));
        h.connect(C, HostAddr::V4([10, 0, 0, 8], 6666));
        H(h)
    }
    fn send(&mut self, topic: &str, queue: i32, body: &str) -> RemotingCommand {
        let cmd = self.send_v2(topic, queue, &[("TAGS", "TagA")], body.as_bytes());
        self.one(P, cmd).0
    }
    fn commit(&mut self, group: &str, topic: &str, queue: u32, offset: u64) {
        let c = self
            .req(request::UPDATE_CONSUMER_OFFSET)
            .with_ext("consumerGroup", group)
            .with_ext("topic", topic)
            .with_ext("queueId", queue)
            .with_ext("commitOffset", offset);
        assert_eq!(self.one(C, c).0.code, response::SUCCESS);
    }
    fn committed(&mut self, group: &str, topic: &str, queue: u32) -> Option<u64> {
        let q = self
            .req(request::QUERY_CONSUMER_OFFSET)
            .with_ext("consumerGroup", group)
            .with_ext("topic", topic)
            .with_ext("queueId", queue);
        self.one(C, q).0.ext("offset").and_then(|o| o.parse().ok())
    }
    fn heartbeat(
        &mut self,
        conn: ConnId,
        client: &str,
        consumer: Option<&str>,
        producer: Option<&str>,
    ) {
        let consumers: Vec<serde_json::Value> = consumer
            .map(|g| serde_json::json!({
                "groupName": g, "consumeType": "CONSUME_PASSIVELY", "messageModel": "CLUSTERING",
                "consumeFromWhere": "CONSUME_FROM_LAST_OFFSET", "unitMode": false,
                "subscriptionDataSet": [{"topic": "TopicA", "subString": "TagA", "tagsSet": ["TagA"],
                    "codeSet": [], "subVersion": 1, "classFilterMode": false, "expressionType": "TAG"}]
            }))
            .into_iter()
            .collect();
        let producers: Vec<serde_json::Value> = producer
            .map(|g| serde_json::json!({"groupName": g}))
            .into_iter()
            .collect();
        let data: HeartbeatData = serde_json::from_value(serde_json::json!({
            "clientID": client, "producerDataSet": producers, "consumerDataSet": consumers,
        }))
        .unwrap();
        let cmd = self
            .req(request::HEART_BEAT)
            .with_body(serde_json::to_vec(&data).unwrap());
        assert_eq!(self.one(conn, cmd).0.code, response::SUCCESS);
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct Wrapper {
    broker_offset: u64,
    consumer_offset: u64,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct ConsumeStats {
    offset_table: MqTable<Wrapper>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct ResetBody {
    offset_table: MqTable<u64>,
}

#[test]
fn connection_lists_name_each_client_as_its_heartbeat_said() {
    let mut h = H::start(MemDisk::new(1), 0);
    h.heartbeat(C, "10.0.0.8@c1", Some("CG"), None);
    h.heartbeat(P, "10.0.0.9@p1", None, Some("PG"));
    let q = h
        .req(request::GET_CONSUMER_CONNECTION_LIST)
        .with_ext("consumerGroup", "CG");
    let (r, _) = h.one(C, q);
    assert_eq!(r.code, response::SUCCESS);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["connectionSet"][0]["clientId"], "10.0.0.8@c1");
    assert_eq!(v["connectionSet"][0]["clientAddr"], "10.0.0.8:6666");
    assert_eq!(v["connectionSet"][0]["language"], "JAVA");
    assert_eq!(v["subscriptionTable"]["TopicA"]["subString"], "TagA");
    assert_eq!(v["messageModel"], "CLUSTERING");
    let q = h
        .req(request::GET_CONSUMER_CONNECTION_LIST)
        .with_ext("consumerGroup", "Nobody");
    assert_eq!(h.one(C, q).0.code, response::CONSUMER_NOT_ONLINE);
    let q = h
        .req(request::GET_PRODUCER_CONNECTION_LIST)
        .with_ext("producerGroup", "PG");
    let (r, _) = h.one(C, q);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["connectionSet"][0]["clientId"], "10.0.0.9@p1");
    let info = h.req(request::GET_BROKER_RUNTIME_INFO);
    let (r, _) = h.one(C, info);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["table"]["consumerConnections"], "1");
    assert_eq!(v["table"]["brokerVersionDesc"], "V4_9_8");
}

#[test]
fn consume_and_topic_stats_are_keyed_by_queue_as_fastjson_writes_them() {
    let mut h = H::start(MemDisk::new(1), 0);
    for i in 0..3 {
        h.send("TopicA", 0, &format!("m{i}"));
    }
    h.commit("CG", "TopicA", 0, 1);
    let q = h
        .req(request::GET_CONSUME_STATS)
        .with_ext("consumerGroup", "CG")
        .with_ext("topic", "TopicA");
    let (r, _) = h.one(C, q);
    assert_eq!(r.code, response::SUCCESS);
    let text = String::from_utf8(r.body.to_vec()).unwrap();
    assert!(
        text.starts_with(
            "{\"offsetTable\":{{\"brokerName\":\"broker-a\",\"queueId\":0,\"topic\":\"TopicA\"}:"
        ),
        "{text}"
    );
    let stats: ConsumeStats = decode_body(&r.body).unwrap();
    let (mq, w) = &stats.offset_table.0[0];
    assert_eq!((mq.queue_id, w.broker_offset, w.consumer_offset), (0, 3, 1));
    let q = h
        .req(request::GET_TOPIC_STATS_INFO)
        .with_ext("topic", "TopicA");
    let (r, _) = h.one(C, q);
    let v: serde_json::Value =
        serde_json::from_slice(&rockfish_core::protocol::lenient::quote_bare_keys(&r.body))
            .unwrap();
    let first = v["offsetTable"]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .clone();
    assert_eq!(first["maxOffset"], 3);
    let q = h
        .req(request::QUERY_TOPIC_CONSUME_BY_WHO)
        .with_ext("topic", "TopicA");
    let v: serde_json::Value = serde_json::from_slice(&h.one(C, q).0.body).unwrap();
    assert_eq!(v["groupList"], serde_json::json!(["CG"]));
    let q = h
        .req(request::GET_TOPIC_STATS_INFO)
        .with_ext("topic", "Nope");
    assert_eq!(h.one(C, q).0.code, response::TOPIC_NOT_EXIST);
}

#[test]
fn reset_offset_commits_and_tells_the_online_consumers() {
    let mut h = H::start(MemDisk::new(1), 0);
    for i in 0..5 {
        h.send("TopicA", 0, &format!("m{i}"));
    }
    h.commit("CG", "TopicA", 0, 2);
    h.heartbeat(C, "c1", Some("CG"), None);
    let reset = |h: &mut H, ts: i64, force: bool| {
        let q = h
            .req(request::INVOKE_BROKER_TO_RESET_OFFSET)
            .with_ext("topic", "TopicA")
            .with_ext("group", "CG")
            .with_ext("timestamp", ts)
            .with_ext("isForce", force);
        let opaque = q.opaque;
        let out = h.call(P, q);
        let resp = BrokerHarness::response(&out, P, opaque).unwrap().0;
        let pushed = out
            .iter()
            .filter(|o| matches!(o, Output::Send { conn, cmd } if *conn == C && cmd.code == request::RESET_CONSUMER_CLIENT_OFFSET))
            .count();
        (resp, pushed)
    };
    // To the end (-1), forced.
    let (r, pushed) = reset(&mut h, -1, true);
    assert_eq!(r.code, response::SUCCESS);
    assert_eq!(pushed, 1, "the online consumer is told");
    let body: ResetBody = decode_body(&r.body).unwrap();
    assert_eq!(body.offset_table.0[0].1, 5);
    assert_eq!(h.committed("CG", "TopicA", 0), Some(5));
    // Back to the first message (every message is stored after timestamp 0).
    let (r, _) = reset(&mut h, 0, true);
    assert_eq!(r.code, response::SUCCESS);
    assert_eq!(h.committed("CG", "TopicA", 0), Some(0));
    // Not forced: only backwards.
    h.commit("CG", "TopicA", 0, 3);
    reset(&mut h, -1, false);
    assert_eq!(h.committed("CG", "TopicA", 0), Some(3));
    // An unknown group or topic is refused.
    let q = h
        .req(request::INVOKE_BROKER_TO_RESET_OFFSET)
        .with_ext("topic", "Nope")
        .with_ext("group", "CG")
        .with_ext("timestamp", 0);
    assert_eq!(h.one(P, q).0.code, response::SYSTEM_ERROR);
}

#[test]
fn clone_group_offset_copies_the_source_groups_offsets() {
    let mut h = H::start(MemDisk::new(1), 0);
    h.send("TopicA", 0, "x");
    h.send("TopicA", 1, "y");
    h.commit("Src", "TopicA", 0, 1);
    h.commit("Src", "TopicA", 1, 1);
    let q = h
        .req(request::CLONE_GROUP_OFFSET)
        .with_ext("srcGroup", "Src")
        .with_ext("destGroup", "Dest")
        .with_ext("topic", "TopicA")
        .with_ext("offline", true);
    assert_eq!(h.one(P, q).0.code, response::SUCCESS);
    assert_eq!(h.committed("Dest", "TopicA", 0), Some(1));
    assert_eq!(h.committed("Dest", "TopicA", 1), Some(1));
}

#[test]
fn broker_config_changes_at_run_time_take_effect_and_survive_a_restart() {
    let mut h = H::start(MemDisk::new(1), 0);
    let get = h.req(request::GET_BROKER_CONFIG);
    let (r, _) = h.one(C, get);
    let text = String::from_utf8(r.body.to_vec()).unwrap();
    assert!(text.contains("brokerName=broker-a\n"), "{text}");
    assert!(text.contains("brokerPermission=6\n"), "{text}");
    // A key that needs a restart is refused, naming the ones that do not.
    let bad = h
        .req(request::UPDATE_BROKER_CONFIG)
        .with_body(&b"brokerName=other\n"[..]);
    let (r, _) = h.one(C, bad);
    assert_eq!(r.code, response::SYSTEM_ERROR);
    assert!(r.remark.unwrap().contains("brokerPermission"));
    // Read only: sends refused, routes re-registered with the topics' write bit off.
    let ro = h
        .req(request::UPDATE_BROKER_CONFIG)
        .with_body(&b"brokerPermission=4\nmaxMessageSize=2048\n"[..]);
    let opaque = ro.opaque;
    let out = h.call(C, ro);
    assert_eq!(
        BrokerHarness::response(&out, C, opaque).unwrap().0.code,
        response::SUCCESS
    );
    let registered = out.iter().any(|o| match o {
        Output::SendTo { cmd, .. } if cmd.code == request::REGISTER_BROKER => {
            let v: serde_json::Value = serde_json::from_slice(&cmd.body).unwrap();
            v["topicConfigSerializeWrapper"]["topicConfigTable"]
                .as_object()
                .unwrap()
                .values()
                .all(|t| t["perm"].as_u64().unwrap() as u32 & perm::WRITE == 0)
        }
        _ => false,
    });
    assert!(registered, "routes say the broker is read only");
    let r = h.send("TopicA", 0, "refused");
    assert_eq!(r.code, response::NO_PERMISSION);
    // Kept across a restart.
    let disk = h.0.b.shutdown(1_000).unwrap();
    let mut h2 = H::start(disk, 2_000);
    assert_eq!(h2.b.config_properties()["brokerPermission"], "4");
    assert_eq!(h2.b.config_properties()["maxMessageSize"], "2048");
    let back = h2
        .req(request::UPDATE_BROKER_CONFIG)
        .with_body(&b"brokerPermission=6\n"[..]);
    assert_eq!(h2.one(C, back).0.code, response::SUCCESS);
    let big = "x".repeat(4096);
    assert_eq!(h2.send("TopicA", 0, &big).code, response::MESSAGE_ILLEGAL);
    assert_eq!(h2.send("TopicA", 0, "fits").code, response::SUCCESS);
}

#[test]
fn metrics_count_traffic_lag_and_group_commits() {
    let mut h = H::start(MemDisk::new(1), 0);
    for i in 0..4 {
        h.send("TopicA", 0, &format!("m{i}"));
    }
    // A pull of the first two (the group's subscription sent along), one committed.
    let pull = h
        .req(request::PULL_MESSAGE)
        .with_ext("consumerGroup", "CG")
        .with_ext("topic", "TopicA")
        .with_ext("queueId", 0)
        .with_ext("queueOffset", 0)
        .with_ext("maxMsgNums", 2)
        .with_ext("sysFlag", 4)
        .with_ext("commitOffset", 0)
        .with_ext("suspendTimeoutMillis", 0)
        .with_ext("subscription", "*")
        .with_ext("subVersion", 0);
    assert_eq!(h.one(C, pull).0.code, response::SUCCESS);
    h.commit("CG", "TopicA", 0, 1);
    let now = h.now;
    let m = h.b.metrics(now);
    let topic = [("topic", "TopicA")];
    let tg = [("topic", "TopicA"), ("consumer_group", "CG")];
    assert_eq!(m.value("rocketmq_messages_in", &topic), Some(4.0));
    assert_eq!(m.value("rocketmq_messages_out", &tg), Some(2.0));
    assert_eq!(m.value("rocketmq_consumer_lag_messages", &tg), Some(3.0));
    assert_eq!(
        m.value("rocketmq_consumer_inflight_messages", &tg),
        Some(1.0)
    );
    assert_eq!(m.value("rocketmq_consumer_ready_messages", &tg), Some(2.0));
    assert!(m.value("rocketmq_storage_size", &[]).unwrap() > 0.0);
    assert!(
        m.common
            .iter()
            .any(|(k, v)| *k == "node_id" && v == "broker-a")
    );
}

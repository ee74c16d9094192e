//! The `NameServer` machine, driven directly: registration, routes, expiry timing,
//! disconnects, slaves, unregistration, deletion, KV config, and every refusal path.

use std::collections::BTreeMap;

use rockfish_core::machine::{ConnId, Output};
use rockfish_core::namesrv::{NameServer, NameServerConfig};
use rockfish_core::protocol::{
    ClusterInfo, DataVersion, RegisterBrokerBody, TopicConfig, TopicConfigSerializeWrapper,
    TopicList, TopicRouteData, to_body,
};
use rockfish_core::remoting::RemotingCommand;
use rockfish_core::remoting::codes::{request, response};

const BROKER: ConnId = ConnId(1);
const CLIENT: ConnId = ConnId(2);

fn register(
    name: &str,
    addr: &str,
    id: u64,
    topics: &[(&str, u32)],
    version: i64,
) -> RemotingCommand {
    let table: BTreeMap<String, TopicConfig> = topics
        .iter()
        .map(|(t, q)| (t.to_string(), TopicConfig::new(t, *q)))
        .collect();
    let body = RegisterBrokerBody {
        topic_config_serialize_wrapper: TopicConfigSerializeWrapper {
            topic_config_table: table,
            data_version: DataVersion {
                timestamp: 1,
                counter: version,
            },
        },
        filter_server_list: vec![],
    };
    RemotingCommand::request(request::REGISTER_BROKER, 1)
        .with_ext("clusterName", "DefaultCluster")
        .with_ext("brokerName", name)
        .with_ext("brokerAddr", addr)
        .with_ext("brokerId", id)
        .with_ext("haServerAddr", format!("{addr}-ha"))
        .with_ext("compressed", false)
        .with_body(to_body(&body))
}

/// Sends `cmd` and returns the single response.
fn call(ns: &mut NameServer, conn: ConnId, cmd: RemotingCommand, now: u64) -> RemotingCommand {
    ns.on_command(conn, cmd, now);
    let out: Vec<Output> = std::iter::from_fn(|| ns.poll_output()).collect();
    match &out[..] {
        [Output::Send { conn: c, cmd }] if *c == conn => cmd.clone(),
        other => panic!("expected one response, got {other:?}"),
    }
}

fn route(ns: &mut NameServer, topic: &str, now: u64) -> RemotingCommand {
    call(
        ns,
        CLIENT,
        RemotingCommand::request(request::GET_ROUTEINFO_BY_TOPIC, 9).with_ext("topic", topic),
        now,
    )
}

fn route_data(ns: &mut NameServer, topic: &str, now: u64) -> Option<TopicRouteData> {
    let r = route(ns, topic, now);
    (r.code == response::SUCCESS).then(|| serde_json::from_slice(&r.body).unwrap())
}

#[test]
fn registered_topics_have_routes_in_rocketmq_json() {
    let mut ns = NameServer::new(NameServerConfig::default(), 0);
    let resp = call(
        &mut ns,
        BROKER,
        register(
            "broker-a",
            "10.0.0.1:10911",
            0,
            &[("TopicA", 4), ("TopicB", 8)],
            1,
        ),
        0,
    );
    assert_eq!(resp.code, response::SUCCESS);
    assert!(resp.is_response());
    let r = route(&mut ns, "TopicA", 1);
    assert_eq!((r.code, r.opaque), (response::SUCCESS, 9));
    let json: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(json["queueDatas"][0]["brokerName"], "broker-a");
    assert_eq!(json["queueDatas"][0]["readQueueNums"], 4);
    assert_eq!(json["queueDatas"][0]["perm"], 6);
    assert_eq!(json["brokerDatas"][0]["cluster"], "DefaultCluster");
    assert_eq!(
        json["brokerDatas"][0]["brokerAddrs"]["0"], "10.0.0.1:10911",
        "broker ids are quoted keys"
    );
    let missing = route(&mut ns, "Nope", 1);
    assert_eq!(missing.code, response::TOPIC_NOT_EXIST);
    assert!(missing.remark.unwrap().contains("Nope"));
}

#[test]
fn silent_brokers_expire_on_the_scan_after_120_seconds() {
    let mut ns = NameServer::new(NameServerConfig::default(), 0);
    call(
        &mut ns,
        BROKER,
        register("broker-a", "a:1", 0, &[("T", 4)], 1),
        0,
    );
    assert_eq!(ns.poll_timeout(), Some(10_000));
    // Scans at 10 s steps: still alive at exactly 120 s of silence.
    for t in (10_000..=120_000).step_by(10_000) {
        ns.on_timeout(t);
        assert!(route_data(&mut ns, "T", t).is_some(), "alive at {t}");
    }
    ns.on_timeout(125_000); // not due: the next scan is at 130 s
    assert!(route_data(&mut ns, "T", 125_000).is_some());
    ns.on_timeout(130_000);
    let out: Vec<Output> = std::iter::from_fn(|| ns.poll_output()).collect();
    assert!(
        matches!(&out[..], [Output::Close { conn, .. }] if *conn == BROKER),
        "{out:?}"
    );
    assert!(route_data(&mut ns, "T", 130_000).is_none());
    assert_eq!(ns.live_brokers().count(), 0);
}

#[test]
fn re_registration_every_30_seconds_keeps_a_broker_alive() {
    let mut ns = NameServer::new(NameServerConfig::default(), 0);
    for t in (0..600_000).step_by(30_000) {
        call(
            &mut ns,
            BROKER,
            register("broker-a", "a:1", 0, &[("T", 4)], 1),
            t,
        );
        ns.on_timeout(t + 10_000);
        assert!(ns.poll_output().is_none());
    }
    assert!(route_data(&mut ns, "T", 600_000).is_some());
}

#[test]
fn configurable_expiry() {
    let cfg = NameServerConfig {
        broker_expire_ms: 3_000,
        scan_interval_ms: 1_000,
        ..NameServerConfig::default()
    };
    let mut ns = NameServer::new(cfg, 0);
    call(
        &mut ns,
        BROKER,
        register("broker-a", "a:1", 0, &[("T", 4)], 1),
        0,
    );
    ns.on_timeout(3_000);
    assert!(route_data(&mut ns, "T", 3_000).is_some());
    ns.on_timeout(4_000);
    assert!(matches!(ns.poll_output(), Some(Output::Close { .. })));
    assert!(route_data(&mut ns, "T", 4_000).is_none());
}

#[test]
fn a_closed_connection_drops_its_broker_at_once() {
    let mut ns = NameServer::new(NameServerConfig::default(), 0);
    call(
        &mut ns,
        BROKER,
        register("broker-a", "a:1", 0, &[("T", 4)], 1),
        0,
    );
    call(
        &mut ns,
        ConnId(7),
        register("broker-b", "b:1", 0, &[("T", 4)], 1),
        0,
    );
    ns.on_disconnect(BROKER, 5);
    let r = route_data(&mut ns, "T", 5).unwrap();
    assert_eq!(r.broker_datas.len(), 1);
    assert_eq!(r.broker_datas[0].broker_name, "broker-b");
    assert_eq!(r.queue_datas.len(), 1);
}

#[test]
fn slaves_learn_their_master_and_keep_the_route_alive() {
    let mut ns = NameServer::new(NameServerConfig::default(), 0);
    call(
        &mut ns,
        BROKER,
        register("broker-a", "m:1", 0, &[("T", 4)], 1),
        0,
    );
    let resp = call(
        &mut ns,
        ConnId(5),
        register("broker-a", "s:1", 1, &[("T", 4)], 1),
        0,
    );
    assert_eq!(resp.ext("masterAddr"), Some("m:1"));
    assert_eq!(resp.ext("haServerAddr"), Some("m:1-ha"));
    let r = route_data(&mut ns, "T", 1).unwrap();
    assert_eq!(r.broker_datas[0].broker_addrs.len(), 2);
    ns.on_disconnect(BROKER, 2);
    let r = route_data(&mut ns, "T", 2).unwrap();
    assert_eq!(
        r.broker_datas[0]
            .broker_addrs
            .keys()
            .copied()
            .collect::<Vec<_>>(),
        vec![1],
        "the slave still serves reads"
    );
}

#[test]
fn a_master_re_registering_without_a_topic_drops_its_queues() {
    let mut ns = NameServer::new(NameServerConfig::default(), 0);
    call(
        &mut ns,
        BROKER,
        register("broker-a", "a:1", 0, &[("T1", 4), ("T2", 4)], 1),
        0,
    );
    call(
        &mut ns,
        BROKER,
        register("broker-a", "a:1", 0, &[("T1", 4)], 2),
        1,
    );
    assert!(route_data(&mut ns, "T2", 2).is_none());
    assert!(route_data(&mut ns, "T1", 2).is_some());
}

#[test]
fn unregister_removes_only_the_named_address() {
    let mut ns = NameServer::new(NameServerConfig::default(), 0);
    call(
        &mut ns,
        BROKER,
        register("broker-a", "a:1", 0, &[("T", 4)], 1),
        0,
    );
    let unregister = |addr: &str| {
        RemotingCommand::request(request::UNREGISTER_BROKER, 3)
            .with_ext("brokerAddr", addr)
            .with_ext("brokerName", "broker-a")
            .with_ext("brokerId", 0)
            .with_ext("clusterName", "DefaultCluster")
    };
    assert_eq!(
        call(&mut ns, BROKER, unregister("old:1"), 1).code,
        response::SUCCESS
    );
    assert!(
        route_data(&mut ns, "T", 1).is_some(),
        "a stale unregister changes nothing"
    );
    call(&mut ns, BROKER, unregister("a:1"), 2);
    assert!(route_data(&mut ns, "T", 2).is_none());
}

#[test]
fn cluster_info_topic_list_and_delete() {
    let mut ns = NameServer::new(NameServerConfig::default(), 0);
    call(
        &mut ns,
        BROKER,
        register("broker-a", "a:1", 0, &[("T1", 4), ("T2", 2)], 1),
        0,
    );
    let info: ClusterInfo = serde_json::from_slice(
        &call(
            &mut ns,
            CLIENT,
            RemotingCommand::request(request::GET_BROKER_CLUSTER_INFO, 1),
            1,
        )
        .body,
    )
    .unwrap();
    assert!(info.cluster_addr_table["DefaultCluster"].contains("broker-a"));
    assert_eq!(
        info.broker_addr_table["broker-a"].master_addr(),
        Some("a:1")
    );
    let list: TopicList = serde_json::from_slice(
        &call(
            &mut ns,
            CLIENT,
            RemotingCommand::request(request::GET_ALL_TOPIC_LIST_FROM_NAMESERVER, 1),
            1,
        )
        .body,
    )
    .unwrap();
    assert_eq!(
        list.topic_list
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        vec!["T1", "T2"]
    );
    let by_cluster: TopicList = serde_json::from_slice(
        &call(
            &mut ns,
            CLIENT,
            RemotingCommand::request(request::GET_TOPICS_BY_CLUSTER, 1)
                .with_ext("cluster", "DefaultCluster"),
            1,
        )
        .body,
    )
    .unwrap();
    assert_eq!(by_cluster.topic_list.len(), 2);
    let del = RemotingCommand::request(request::DELETE_TOPIC_IN_NAMESRV, 1).with_ext("topic", "T1");
    assert_eq!(call(&mut ns, CLIENT, del, 2).code, response::SUCCESS);
    assert!(route_data(&mut ns, "T1", 2).is_none());
    assert!(route_data(&mut ns, "T2", 2).is_some());
}

#[test]
fn kv_config_and_order_topic_conf() {
    let mut ns = NameServer::new(NameServerConfig::default(), 0);
    call(
        &mut ns,
        BROKER,
        register("broker-a", "a:1", 0, &[("T", 4)], 1),
        0,
    );
    let put = RemotingCommand::request(request::PUT_KV_CONFIG, 1)
        .with_ext("namespace", "ORDER_TOPIC_CONFIG")
        .with_ext("key", "T")
        .with_ext("value", "broker-a:4");
    assert_eq!(call(&mut ns, CLIENT, put, 1).code, response::SUCCESS);
    let get = RemotingCommand::request(request::GET_KV_CONFIG, 1)
        .with_ext("namespace", "ORDER_TOPIC_CONFIG")
        .with_ext("key", "T");
    assert_eq!(
        call(&mut ns, CLIENT, get.clone(), 1).ext("value"),
        Some("broker-a:4")
    );
    assert_eq!(
        route_data(&mut ns, "T", 1)
            .unwrap()
            .order_topic_conf
            .as_deref(),
        Some("broker-a:4")
    );
    let del = RemotingCommand::request(request::DELETE_KV_CONFIG, 1)
        .with_ext("namespace", "ORDER_TOPIC_CONFIG")
        .with_ext("key", "T");
    call(&mut ns, CLIENT, del, 2);
    assert_eq!(
        call(&mut ns, CLIENT, get, 2).code,
        response::QUERY_NOT_FOUND
    );
}

#[test]
fn refusals_are_responses_never_panics() {
    let mut ns = NameServer::new(NameServerConfig::default(), 0);
    let r = call(
        &mut ns,
        CLIENT,
        RemotingCommand::request(request::GET_ROUTEINFO_BY_TOPIC, 1),
        0,
    );
    assert_eq!(r.code, response::SYSTEM_ERROR);
    assert!(r.remark.unwrap().contains("topic"));
    let bad_id = register("b", "a:1", 0, &[], 1).with_ext("brokerId", "zero");
    let r = call(&mut ns, BROKER, bad_id, 0);
    assert!(r.code == response::SYSTEM_ERROR && r.remark.unwrap().contains("brokerId"));
    let bad_body = register("b", "a:1", 0, &[], 1).with_body(&b"{not json"[..]);
    assert_eq!(
        call(&mut ns, BROKER, bad_body, 0).code,
        response::SYSTEM_ERROR
    );
    let compressed = register("b", "a:1", 0, &[], 1).with_ext("compressed", true);
    assert!(
        call(&mut ns, BROKER, compressed, 0)
            .remark
            .unwrap()
            .contains("compressed")
    );
    let unknown = call(&mut ns, CLIENT, RemotingCommand::request(9999, 1), 0);
    assert_eq!(unknown.code, response::REQUEST_CODE_NOT_SUPPORTED);
    // Oneway requests get no response; stray responses are ignored.
    let mut oneway = RemotingCommand::request(request::GET_BROKER_CLUSTER_INFO, 1);
    oneway.flag = 2;
    ns.on_command(CLIENT, oneway, 0);
    let stray = RemotingCommand::response_to(&RemotingCommand::request(1, 1), 0, None);
    ns.on_command(CLIENT, stray, 0);
    assert!(ns.poll_output().is_none());
    assert_eq!(ns.live_brokers().count(), 0, "nothing half-registered");
}

/// A RocketMQ 5 client's view of a route, strict as rocketmq-client-rust 1.0's serde types:
/// every field below is required there.
#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct Strict5xRoute {
    #[serde(rename = "queueDatas")]
    queue_datas: Vec<Strict5xQueue>,
    #[serde(rename = "brokerDatas")]
    broker_datas: Vec<Strict5xBroker>,
    #[serde(rename = "filterServerTable")]
    filter_server_table: BTreeMap<String, Vec<String>>,
}

#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct Strict5xQueue {
    #[serde(rename = "brokerName")]
    broker_name: String,
    #[serde(rename = "readQueueNums")]
    read_queue_nums: u32,
    #[serde(rename = "writeQueueNums")]
    write_queue_nums: u32,
    perm: u32,
    #[serde(rename = "topicSysFlag")]
    topic_sys_flag: u32,
}

#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct Strict5xBroker {
    cluster: String,
    #[serde(rename = "brokerName")]
    broker_name: String,
    #[serde(rename = "brokerAddrs")]
    broker_addrs: BTreeMap<u64, String>,
    #[serde(rename = "zoneName")]
    zone_name: Option<String>,
    #[serde(rename = "enableActingMaster")]
    enable_acting_master: bool,
}

#[test]
fn routes_carry_rocketmq_5_fields() {
    let mut ns = NameServer::new(NameServerConfig::default(), 0);
    call(
        &mut ns,
        BROKER,
        register("broker-a", "10.0.0.1:10911", 0, &[("TopicA", 4)], 1),
        0,
    );
    let r = route(&mut ns, "TopicA", 1);
    let strict: Strict5xRoute = serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&r.body)));
    assert!(!strict.broker_datas[0].enable_acting_master);
    assert_eq!(strict.broker_datas[0].broker_addrs[&0], "10.0.0.1:10911");
    assert_eq!(strict.queue_datas[0].topic_sys_flag, 0);
}

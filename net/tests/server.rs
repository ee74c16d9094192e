//! The real driver on loopback: a name server and a broker in-process, clients over TCP.
//! Bounded: every wait has a timeout, every test runs a few hundred requests at most.

use std::time::Duration;

use bytes::Bytes;
use rockfish_core::broker::{BrokerConfig, FlushDiskType};
use rockfish_core::message::{properties_string, split_records};
use rockfish_core::namesrv::NameServerConfig;
use rockfish_core::protocol::TopicRouteData;
use rockfish_core::remoting::RemotingCommand;
use rockfish_core::remoting::codes::{request, response};
use rockfish_net::Client;
use rockfish_net::launch::{start_broker, start_namesrv};
use rockfish_store::StoreConfig;

const T: Duration = Duration::from_secs(5);

fn store_config() -> StoreConfig {
    StoreConfig::small()
}

fn send(topic: &str, queue: u32, body: &str) -> RemotingCommand {
    let props =
        String::from_utf8(properties_string([("UNIQ_KEY", body), ("TAGS", "TagA")])).unwrap();
    RemotingCommand::request(request::SEND_MESSAGE_V2, 0)
        .with_ext("a", "PG")
        .with_ext("b", topic)
        .with_ext("d", 4)
        .with_ext("e", queue)
        .with_ext("f", 0)
        .with_ext("g", 0)
        .with_ext("h", 0)
        .with_ext("i", props)
        .with_body(Bytes::copy_from_slice(body.as_bytes()))
}

fn pull(topic: &str, queue: u32, offset: u64, suspend_ms: u64) -> RemotingCommand {
    RemotingCommand::request(request::PULL_MESSAGE, 0)
        .with_ext("consumerGroup", "CG")
        .with_ext("topic", topic)
        .with_ext("queueId", queue)
        .with_ext("queueOffset", offset)
        .with_ext("maxMsgNums", 32)
        .with_ext("sysFlag", 2 | 4)
        .with_ext("commitOffset", 0)
        .with_ext("suspendTimeoutMillis", suspend_ms)
        .with_ext("subscription", "*")
}

async fn wait_for_route(ns: &Client, topic: &str) -> TopicRouteData {
    for _ in 0..100 {
        let r = ns
            .request(
                RemotingCommand::request(request::GET_ROUTEINFO_BY_TOPIC, 0)
                    .with_ext("topic", topic),
                T,
            )
            .await
            .unwrap();
        if r.code == response::SUCCESS {
            return serde_json::from_slice(&r.body).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no route for {topic}");
}

#[tokio::test]
async fn send_route_and_pull_over_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let ns = start_namesrv("127.0.0.1:0", NameServerConfig::default())
        .await
        .unwrap();
    let cfg = BrokerConfig {
        broker_addr: "127.0.0.1:0".into(),
        namesrv_addrs: vec![ns.local_addr().to_string()],
        ..BrokerConfig::default()
    };
    let broker = start_broker("127.0.0.1:0", cfg, store_config(), dir.path())
        .await
        .unwrap();
    let b = Client::connect(&broker.local_addr().to_string())
        .await
        .unwrap();
    for i in 0..50 {
        let r = b
            .request(send("TopicA", i % 4, &format!("m{i}")), T)
            .await
            .unwrap();
        assert_eq!(r.code, response::SUCCESS, "{:?}", r.remark);
    }
    let nsc = Client::connect(&ns.local_addr().to_string()).await.unwrap();
    let route = wait_for_route(&nsc, "TopicA").await;
    assert_eq!(
        route.broker_datas[0].master_addr(),
        Some(broker.local_addr().to_string().as_str()),
        "the broker advertises its bound port"
    );
    let mut bodies = Vec::new();
    for q in 0..4 {
        let r = b.request(pull("TopicA", q, 0, 0), T).await.unwrap();
        assert_eq!(r.code, response::SUCCESS);
        for rec in split_records(r.body).unwrap() {
            bodies.push(String::from_utf8(rec.body().to_vec()).unwrap());
        }
    }
    assert_eq!(bodies.len(), 50);
    let machine = broker.stop().await;
    machine.shutdown(rockfish_net::now_ms()).unwrap();
    ns.stop().await;
}

#[tokio::test]
async fn malformed_frames_close_only_their_connection() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = BrokerConfig {
        broker_addr: "127.0.0.1:0".into(),
        namesrv_addrs: vec![],
        ..BrokerConfig::default()
    };
    let broker = start_broker("127.0.0.1:0", cfg, store_config(), dir.path())
        .await
        .unwrap();
    let addr = broker.local_addr().to_string();
    let good = Client::connect(&addr).await.unwrap();
    assert_eq!(
        good.request(send("TopicA", 0, "before"), T)
            .await
            .unwrap()
            .code,
        response::SUCCESS
    );
    for garbage in [
        &b"\x00\x00\x00\x08\x07\x00\x00\x02{}"[..], // unknown serialize type
        &b"\x00\x00\x00\x0a\x00\x00\x00\x04nope!!"[..], // not JSON
        &b"\xff\xff\xff\xff"[..],                   // 4 GiB frame
        &b"\x00\x00\x00\x02\x00\x00"[..],           // too short for a header length
    ] {
        let bad = Client::connect(&addr).await.unwrap();
        bad.write_raw(garbage).unwrap();
        // The broker closes it: a request on it now fails instead of hanging.
        let r = bad
            .request(send("TopicA", 0, "after-garbage"), Duration::from_secs(2))
            .await;
        assert!(r.is_err(), "a connection that sent garbage must be closed");
    }
    // The well-behaved connection is untouched.
    assert_eq!(
        good.request(send("TopicA", 0, "after"), T)
            .await
            .unwrap()
            .code,
        response::SUCCESS
    );
    let r = good.request(pull("TopicA", 0, 0, 0), T).await.unwrap();
    let bodies: Vec<_> = split_records(r.body)
        .unwrap()
        .iter()
        .map(|m| String::from_utf8(m.body().to_vec()).unwrap())
        .collect();
    assert_eq!(
        bodies,
        vec!["before", "after"],
        "nothing from the bad connections was stored"
    );
    broker.stop().await;
}

#[tokio::test]
async fn long_poll_over_tcp_returns_when_a_message_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = BrokerConfig {
        broker_addr: "127.0.0.1:0".into(),
        namesrv_addrs: vec![],
        ..BrokerConfig::default()
    };
    let broker = start_broker("127.0.0.1:0", cfg, store_config(), dir.path())
        .await
        .unwrap();
    let addr = broker.local_addr().to_string();
    let c = Client::connect(&addr).await.unwrap();
    assert_eq!(
        c.request(send("TopicA", 0, "first"), T).await.unwrap().code,
        response::SUCCESS
    );
    let consumer = Client::connect(&addr).await.unwrap();
    let started = std::time::Instant::now();
    let held = tokio::spawn(async move {
        consumer
            .request(pull("TopicA", 0, 1, 10_000), T)
            .await
            .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!held.is_finished(), "the pull is held while nothing is new");
    assert_eq!(
        c.request(send("TopicA", 0, "second"), T)
            .await
            .unwrap()
            .code,
        response::SUCCESS
    );
    let r = held.await.unwrap();
    assert_eq!(r.code, response::SUCCESS);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "woken by the message, not the timeout"
    );
    assert_eq!(&split_records(r.body).unwrap()[0].body()[..], b"second");
    broker.stop().await;
}

#[tokio::test]
async fn sync_flush_acks_after_the_flush_thread() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = BrokerConfig {
        broker_addr: "127.0.0.1:0".into(),
        namesrv_addrs: vec![],
        flush_disk_type: FlushDiskType::Sync,
        ..BrokerConfig::default()
    };
    let broker = start_broker("127.0.0.1:0", cfg, store_config(), dir.path())
        .await
        .unwrap();
    let c = std::sync::Arc::new(
        Client::connect(&broker.local_addr().to_string())
            .await
            .unwrap(),
    );
    let mut tasks = Vec::new();
    for i in 0..64 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            c.request(send("TopicS", i % 4, &format!("s{i}")), T)
                .await
                .unwrap()
                .code
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), response::SUCCESS);
    }
    let machine = broker.stop().await;
    assert_eq!(
        machine.store().flushed(),
        machine.store().write_pos(),
        "every acked send is durable"
    );
}

/// A request frame with `keys` extFields in a JSON header, as fastjson writes it.
fn many_keys_frame(code: i32, opaque: i32, keys: usize, body: &[u8]) -> Vec<u8> {
    let ext = (0..keys)
        .map(|i| format!("\"k{i}\":\"v\""))
        .collect::<Vec<_>>()
        .join(",");
    let header = format!(
        r#"{{"code":{code},"extFields":{{{ext}}},"flag":0,"language":"JAVA","opaque":{opaque},"serializeTypeCurrentRPC":"JSON","version":401}}"#
    );
    let mut f = Vec::new();
    f.extend_from_slice(&((4 + header.len() + body.len()) as u32).to_be_bytes());
    f.extend_from_slice(&(header.len() as u32).to_be_bytes());
    f.extend_from_slice(header.as_bytes());
    f.extend_from_slice(body);
    f
}

/// The 100k-key header (1.2 MB, once 35 s of CPU during which no connection was answered)
/// sent again and again to a name server and a broker: other connections are answered
/// meanwhile, the bad one gets a refusal naming the limit, and its connection stays usable.
/// (A current-thread runtime: a decode that hogged the thread would starve everyone.)
#[tokio::test]
async fn a_hundred_thousand_key_header_stalls_no_one() {
    let dir = tempfile::tempdir().unwrap();
    let ns = start_namesrv("127.0.0.1:0", NameServerConfig::default())
        .await
        .unwrap();
    let cfg = BrokerConfig {
        broker_addr: "127.0.0.1:0".into(),
        namesrv_addrs: vec![ns.local_addr().to_string()],
        ..BrokerConfig::default()
    };
    let broker = start_broker("127.0.0.1:0", cfg, store_config(), dir.path())
        .await
        .unwrap();
    for (addr, code) in [
        (ns.local_addr().to_string(), request::GET_ROUTEINFO_BY_TOPIC),
        (broker.local_addr().to_string(), request::SEND_MESSAGE_V2),
    ] {
        let bad = Client::connect(&addr).await.unwrap();
        let good = Client::connect(&addr).await.unwrap();
        // Ten of them queued back to back (12 MB), then one whose answer we wait for.
        for _ in 0..10 {
            let f = many_keys_frame(code, bad.next_opaque(), 100_000, b"body");
            bad.write_raw(&f).unwrap();
        }
        let opaque = bad.next_opaque();
        let f = many_keys_frame(code, opaque, 100_000, b"body");
        let answer = tokio::spawn(async move {
            let r = bad.request_frame(opaque, &f, T).await;
            (bad, r)
        });
        // Meanwhile another connection is served.
        for i in 0..20 {
            let probe = if code == request::SEND_MESSAGE_V2 {
                send("TopicA", 0, &format!("probe{i}"))
            } else {
                RemotingCommand::request(request::GET_BROKER_CLUSTER_INFO, 0)
            };
            let r = good.request(probe, T).await.unwrap();
            assert_eq!(r.code, response::SUCCESS, "{:?}", r.remark);
        }
        let (bad, r) = answer.await.unwrap();
        let r = r.expect("the bad frame is answered");
        let want = if code == request::SEND_MESSAGE_V2 {
            response::MESSAGE_ILLEGAL
        } else {
            response::SYSTEM_ERROR
        };
        assert_eq!((r.code, r.opaque), (want, opaque), "{:?}", r.remark);
        let remark = r.remark.unwrap_or_default();
        assert!(remark.contains("exceeds the limit"), "{remark}");
        // The refused frames left the connection usable.
        let r = bad
            .request(
                RemotingCommand::request(request::GET_BROKER_CLUSTER_INFO, 0),
                T,
            )
            .await
            .unwrap();
        assert_ne!(r.opaque, opaque);
    }
    broker.stop().await;
    ns.stop().await;
}

/// A connection the driver closes itself (here: too far behind on writes) reaches the
/// machine like any other close: its held pull is released and its group membership
/// dropped, with a rebalance notice to the others at once (not after the 120 s expiry).
#[tokio::test]
async fn a_driver_closed_connection_releases_its_held_pulls_and_group() {
    use rockfish_core::broker::Broker;
    use rockfish_net::Server;
    use rockfish_store::{MessageStore, MmapDisk};

    let dir = tempfile::tempdir().unwrap();
    let cfg = BrokerConfig {
        broker_addr: "127.0.0.1:0".into(),
        namesrv_addrs: vec![],
        ..BrokerConfig::default()
    };
    let disk = MmapDisk::open_root(dir.path()).unwrap();
    let (store, _) = MessageStore::open(disk, store_config(), 0).unwrap();
    let broker = Broker::new(cfg, store, rockfish_net::now_ms()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    // A response over 16 KiB is more than a connection may have queued: it is closed.
    let server = Server::from_listener(listener, broker)
        .max_queued_bytes(16 << 10)
        .spawn();
    let addr = server.local_addr().to_string();
    let heartbeat = |client: &str| {
        let body = serde_json::json!({
            "clientID": client,
            "producerDataSet": [],
            "consumerDataSet": [{
                "groupName": "CG", "consumeType": "CONSUME_PASSIVELY",
                "messageModel": "CLUSTERING", "consumeFromWhere": "CONSUME_FROM_LAST_OFFSET",
                "unitMode": false,
                "subscriptionDataSet": [{"topic": "TopicA", "subString": "*", "tagsSet": [],
                    "codeSet": [], "subVersion": 1, "classFilterMode": false,
                    "expressionType": "TAG"}]
            }]
        });
        RemotingCommand::request(request::HEART_BEAT, 0)
            .with_body(serde_json::to_vec(&body).unwrap())
    };
    let producer = Client::connect(&addr).await.unwrap();
    let a = Client::connect(&addr).await.unwrap();
    let b = Client::connect(&addr).await.unwrap();
    let mut b_notices = b.server_requests.lock().unwrap().take().unwrap();
    for (c, id) in [(&a, "A"), (&b, "B")] {
        assert_eq!(c.request(heartbeat(id), T).await.unwrap().code, 0);
    }
    let notice = tokio::time::timeout(T, b_notices.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(notice.code, request::NOTIFY_CONSUMER_IDS_CHANGED);
    // A big message on queue 1; A holds a pull on queue 0.
    let big = send("TopicA", 1, "big").with_body(vec![b'x'; 32 << 10]);
    let r = producer.request(big, T).await.unwrap();
    assert_eq!(r.code, response::SUCCESS, "{:?}", r.remark);
    let a = std::sync::Arc::new(a);
    let held = {
        let a = a.clone();
        tokio::spawn(async move { a.request(pull("TopicA", 0, 0, 30_000), T).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!held.is_finished(), "the pull is held");
    // Pulling the big message overflows A's write queue: the driver closes A.
    let r = a.request(pull("TopicA", 1, 0, 0), T).await;
    assert!(r.is_err(), "A was closed: {r:?}");
    assert!(held.await.unwrap().is_err(), "A's held pull died with it");
    // B hears at once that the group changed, and A is gone from it.
    let notice = tokio::time::timeout(T, b_notices.recv())
        .await
        .expect("a rebalance notice after the close")
        .unwrap();
    assert_eq!(notice.code, request::NOTIFY_CONSUMER_IDS_CHANGED);
    let list = b
        .request(
            RemotingCommand::request(request::GET_CONSUMER_LIST_BY_GROUP, 0)
                .with_ext("consumerGroup", "CG"),
            T,
        )
        .await
        .unwrap();
    let ids: serde_json::Value = serde_json::from_slice(&list.body).unwrap();
    assert_eq!(ids["consumerIdList"], serde_json::json!(["B"]));
    let machine = server.stop().await;
    assert_eq!(
        machine.held_pulls(),
        0,
        "the dead connection's pull is released"
    );
}

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
use rockfish_store::{IndexConfig, StoreConfig};

const T: Duration = Duration::from_secs(5);

fn store_config() -> StoreConfig {
    StoreConfig {
        commitlog_segment_size: 4 << 20,
        consume_queue_entries: 10_000,
        index: IndexConfig {
            hash_slots: 1024,
            max_entries: 10_000,
        },
        ..StoreConfig::default()
    }
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

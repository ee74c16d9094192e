//! The madsim tier (DESIGN.md, Simulator): this crate's real tokio driver, built with
//! `--cfg madsim` so madsim-tokio stands in for tokio, runs a name server, a SYNC_FLUSH broker
//! over the simulated disk, a producer and a consumer as separate simulated machines. The
//! seed decides every latency and interleaving; the broker is killed (process crash or power
//! loss) and restarted, and links are clogged, while messages flow and are consumed. Every
//! acknowledged send must be consumed in the end.
//!
//! Run: RUSTFLAGS="--cfg madsim" MADSIM_TEST_NUM=20 cargo test -p rockfish-net --test madsim \
//!      --target-dir target/madsim
//! (scripts/madsim runs each seed under madsim's determinism check as well).
#![cfg(madsim)]

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use madsim::net::NetSim;
use madsim::rand::{Rng, thread_rng};
use madsim::runtime::Handle;
use rockfish_core::broker::{BrokerConfig, FlushDiskType};
use rockfish_core::consumer::{ConsumeFrom, ConsumeResult, ConsumerConfig};
use rockfish_core::namesrv::NameServerConfig;
use rockfish_core::producer::{Message, ProducerConfig, SendStatus};
use rockfish_core::remoting::RemotingCommand;
use rockfish_core::remoting::codes::{request, response};
use rockfish_net::Client;
use rockfish_net::launch::{serve_broker, start_namesrv};
use rockfish_net::sdk::{ConsumerConfigExt, Producer, PushConsumer};
use rockfish_store::{FaultPlan, MemDisk, StoreConfig};

const NAMESRV: &str = "10.0.0.1:9876";
const BROKER: &str = "10.0.1.1:10911";
const TOPIC: &str = "MadsimTopic";
const MESSAGES: usize = 150;

/// mqadmin updateTopic against the broker, then waits until the name server routes the topic
/// (the broker registers it right away, on its own connection).
async fn create_topic() {
    let timeout = Duration::from_secs(3);
    let broker = Client::connect(BROKER).await.expect("the broker accepts");
    let update = RemotingCommand::request(request::UPDATE_AND_CREATE_TOPIC, 0)
        .with_ext("topic", TOPIC)
        .with_ext("readQueueNums", 4)
        .with_ext("writeQueueNums", 4);
    let resp = broker
        .request(update, timeout)
        .await
        .expect("the broker answers");
    assert_eq!(
        resp.code,
        response::SUCCESS,
        "update topic: {:?}",
        resp.remark
    );
    let namesrv = Client::connect(NAMESRV)
        .await
        .expect("the name server accepts");
    loop {
        let route =
            RemotingCommand::request(request::GET_ROUTEINFO_BY_TOPIC, 0).with_ext("topic", TOPIC);
        if namesrv
            .request(route, timeout)
            .await
            .is_ok_and(|r| r.code == response::SUCCESS)
        {
            return;
        }
        madsim::time::sleep(Duration::from_millis(100)).await;
    }
}

#[madsim::test]
async fn acknowledged_sends_survive_kills_restarts_and_clogged_links() {
    let handle = Handle::current();
    let net = NetSim::current();
    let seed = handle.seed();

    let _namesrv = handle
        .create_node()
        .name("namesrv")
        .ip("10.0.0.1".parse().unwrap())
        .init(|| async {
            let _server = start_namesrv("0.0.0.0:9876", NameServerConfig::default())
                .await
                .expect("name server starts");
            std::future::pending::<()>().await;
        })
        .build();

    // The broker's disk outlives its process: a restart recovers from what is on it.
    let disk = MemDisk::with_plan(seed, FaultPlan::default());
    let broker_disk = disk.clone();
    let broker = handle
        .create_node()
        .name("broker")
        .ip("10.0.1.1".parse().unwrap())
        .init(move || {
            let disk = broker_disk.clone();
            async move {
                let listener = tokio::net::TcpListener::bind("0.0.0.0:10911")
                    .await
                    .expect("broker binds");
                let config = BrokerConfig {
                    broker_addr: BROKER.into(),
                    broker_name: "broker-a".into(),
                    namesrv_addrs: vec![NAMESRV.into()],
                    flush_disk_type: FlushDiskType::Sync,
                    ..BrokerConfig::default()
                };
                let _server = serve_broker(listener, None, config, StoreConfig::simulated(), disk)
                    .expect("broker recovers and starts");
                std::future::pending::<()>().await;
            }
        })
        .build();

    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let consumed = Arc::new(Mutex::new(BTreeSet::new()));
    let client = handle
        .create_node()
        .name("client")
        .ip("10.0.2.1".parse().unwrap())
        .build();

    // Let the broker register, then create the topic before the clients start: the consumer
    // learns its route at start and consumes while the faults fly. (Created by the first
    // send, the topic would reach the consumer only at its 30 s route refresh, after them.)
    madsim::time::sleep(Duration::from_secs(2)).await;
    client
        .spawn(create_topic())
        .await
        .expect("the topic is created");
    let (a, c) = (acked.clone(), consumed.clone());
    let workload = client.spawn(async move {
        let config = ConsumerConfig {
            group: "MadsimGroup".into(),
            // Explicit ids: the SDK's generated ones count per process, and madsim's
            // determinism check runs the same seed twice in one process.
            client_id: "10.0.2.1@consumer".into(),
            namesrv_addrs: vec![NAMESRV.into()],
            consume_from: ConsumeFrom::FirstOffset,
            ..ConsumerConfig::default()
        }
        .subscribe(TOPIC, "*");
        let c2 = c.clone();
        let consumer = PushConsumer::start(config, move |m| {
            let body = String::from_utf8_lossy(&m.body()).into_owned();
            c2.lock().unwrap().insert(body);
            ConsumeResult::Success
        });
        let producer = Producer::start(ProducerConfig {
            group: "MadsimProducers".into(),
            client_id: "10.0.2.1@producer".into(),
            namesrv_addrs: vec![NAMESRV.into()],
            ..ProducerConfig::default()
        });
        for n in 0..MESSAGES {
            let body = format!("m-{n}");
            match producer.send(Message::new(TOPIC, body.clone())).await {
                Ok(r) if r.status == SendStatus::SendOk => {
                    a.lock().unwrap().insert(body);
                }
                // Refused or timed out while the broker is down or cut off: not acknowledged.
                _ => {}
            }
            madsim::time::sleep(Duration::from_millis(100)).await;
        }
        // Converge: everything acknowledged gets consumed (bounded in simulated time).
        for _ in 0..240 {
            let done = a.lock().unwrap().is_subset(&c.lock().unwrap());
            if done {
                break;
            }
            madsim::time::sleep(Duration::from_millis(500)).await;
        }
        producer.shutdown().await;
        consumer.shutdown().await;
    });

    // Faults while the workload runs: the seed picks when and which. Between faults the
    // broker stays up longer than a consumer waits after a failed pull (3 s, RocketMQ's
    // pullTimeDelayMillsWhenException), so the consumer can get back to consuming.
    let mut faults = Vec::new();
    let mut consumed_at_first_fault = 0;
    for round in 0..3 {
        let wait = if round == 0 { 500..2_000 } else { 3_000..6_000 };
        madsim::time::sleep(Duration::from_millis(thread_rng().gen_range(wait))).await;
        if round == 0 {
            consumed_at_first_fault = consumed.lock().unwrap().len();
        }
        match thread_rng().gen_range(0..3) {
            0 | 1 => {
                let power = thread_rng().gen_bool(0.5);
                handle.kill(broker.id());
                if power {
                    disk.power_loss();
                } else {
                    disk.crash();
                }
                faults.push(if power { "power loss" } else { "crash" });
                let down = thread_rng().gen_range(200..2_000);
                madsim::time::sleep(Duration::from_millis(down)).await;
                handle.restart(broker.id());
            }
            _ => {
                net.clog_link(client.id(), broker.id());
                net.clog_link(broker.id(), client.id());
                faults.push("clogged link");
                let held = thread_rng().gen_range(200..3_000);
                madsim::time::sleep(Duration::from_millis(held)).await;
                net.unclog_link(client.id(), broker.id());
                net.unclog_link(broker.id(), client.id());
            }
        }
    }
    // Consumed while the faults were injected (the clients started just before), and of
    // those, after the first fault hit: a consumer whose broker was killed fails its pulls
    // at once (Consumer::on_peer_lost, as Java's failFast) and consumes again when it is back.
    let consumed_while_faulting = consumed.lock().unwrap().len();
    let consumed_after_first_fault = consumed_while_faulting - consumed_at_first_fault;
    workload.await.expect("the workload finishes");
    eprintln!(
        "seed {seed}: faults {faults:?}, {} acknowledged, {} consumed ({consumed_while_faulting} \
         while faulting, {consumed_after_first_fault} of them after the first fault)",
        acked.lock().unwrap().len(),
        consumed.lock().unwrap().len()
    );

    let acked = acked.lock().unwrap().clone();
    let consumed = consumed.lock().unwrap().clone();
    let lost: Vec<&String> = acked.difference(&consumed).collect();
    let phantom: Vec<&String> = consumed
        .difference(&acked)
        .filter(|b| !b.starts_with("m-"))
        .collect();
    assert!(
        lost.is_empty(),
        "seed {seed}, faults {faults:?}: {} acknowledged sends never consumed: {lost:?}",
        lost.len()
    );
    assert!(
        phantom.is_empty(),
        "seed {seed}: consumed but never sent: {phantom:?}"
    );
    assert!(
        consumed_after_first_fault > 0,
        "seed {seed}, faults {faults:?}: nothing consumed after the first fault"
    );
    assert!(
        acked.len() >= MESSAGES / 3,
        "seed {seed}, faults {faults:?}: only {} of {MESSAGES} sends acknowledged",
        acked.len()
    );
}

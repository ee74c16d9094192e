//! The madsim tier (DESIGN.md, Simulator): this crate's real tokio driver, built with
//! `--cfg madsim` so madsim-tokio stands in for tokio, runs a name server, a SYNC_FLUSH broker
//! over the simulated disk, a producer and a consumer as separate simulated machines. The
//! seed decides every latency and interleaving; the broker is killed (process crash or power
//! loss) and restarted, and links are clogged, while messages flow. Every acknowledged send
//! must be consumed in the end.
//!
//! Run: RUSTFLAGS="--cfg madsim" MADSIM_TEST_NUM=20 cargo test -p rockfish-net --test madsim \
//!      --target-dir target/madsim
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
use rockfish_net::launch::{serve_broker, start_namesrv};
use rockfish_net::sdk::{ConsumerConfigExt, Producer, PushConsumer};
use rockfish_store::{FaultPlan, MemDisk, StoreConfig};

const NAMESRV: &str = "10.0.0.1:9876";
const BROKER: &str = "10.0.1.1:10911";
const TOPIC: &str = "MadsimTopic";
const MESSAGES: usize = 150;

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
                let _server = serve_broker(listener, config, StoreConfig::simulated(), disk)
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

    // Let the broker register before the clients look for routes.
    madsim::time::sleep(Duration::from_secs(2)).await;
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
            madsim::time::sleep(Duration::from_millis(50)).await;
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

    // Faults while the workload runs: the seed picks when and which.
    let mut faults = Vec::new();
    for _ in 0..3 {
        let wait = thread_rng().gen_range(500..2_000);
        madsim::time::sleep(Duration::from_millis(wait)).await;
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
    workload.await.expect("the workload finishes");
    eprintln!(
        "seed {seed}: faults {faults:?}, {} acknowledged, {} consumed",
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
        acked.len() >= MESSAGES / 3,
        "seed {seed}, faults {faults:?}: only {} of {MESSAGES} sends acknowledged",
        acked.len()
    );
}

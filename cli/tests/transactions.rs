//! Transaction messages against a real `rockfish standalone` (checks after 1 s, every 1 s):
//! the Rust SDK's transactional producer commits and rolls back, answers check-backs, and a
//! transaction left undecided by a producer that is gone is ended by another producer of its
//! group; `rockfish produce --transaction` sends one.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rockfish_net::sdk::{
    ConsumeFrom, ConsumeResult, ConsumerConfig, ConsumerConfigExt, Message, Producer,
    ProducerConfig, PushConsumer, SendStatus, TransactionState,
};

mod common;

const GROUP: &str = "tx-test-producer";

fn start() -> common::Standalone {
    common::start_in_temp_dir(&[
        "--transaction-timeout-ms",
        "1000",
        "--transaction-check-interval-ms",
        "1000",
    ])
}

fn config(ns: &str) -> ProducerConfig {
    ProducerConfig {
        group: GROUP.into(),
        namesrv_addrs: vec![ns.into()],
        // The broker checks with producers it has heard from: say hello soon.
        heartbeat_ms: 500,
        ..ProducerConfig::default()
    }
}

type Got = Arc<Mutex<BTreeMap<String, u32>>>;

fn consumer(ns: &str, topic: &str) -> (PushConsumer, Got) {
    let got: Got = Arc::default();
    let g = got.clone();
    let c = PushConsumer::start(
        ConsumerConfig {
            group: format!("{topic}-consumers"),
            namesrv_addrs: vec![ns.into()],
            consume_from: ConsumeFrom::FirstOffset,
            route_refresh_ms: 500,
            rebalance_interval_ms: 500,
            ..ConsumerConfig::default()
        }
        .subscribe(topic, "*"),
        move |m| {
            let body = String::from_utf8(m.body().to_vec()).unwrap();
            *g.lock().unwrap().entry(body).or_default() += 1;
            ConsumeResult::Success
        },
    );
    (c, got)
}

async fn wait_for(got: &Got, bodies: &[&str], secs: u64) {
    let start = Instant::now();
    while !bodies.iter().all(|b| got.lock().unwrap().contains_key(*b)) {
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {bodies:?}; got {:?}",
            got.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_rollbacks_and_check_backs_with_the_sdk() {
    let s = start();
    // Check-backs: answered by the message's body.
    let checked: Arc<Mutex<Vec<String>>> = Arc::default();
    let c2 = checked.clone();
    let producer = Producer::start_transactional(config(&s.namesrv), move |m| {
        let body = String::from_utf8(m.body().to_vec()).unwrap();
        assert_eq!(m.topic(), "TxTopic", "shown with its real topic");
        c2.lock().unwrap().push(body.clone());
        if body == "check-commit" {
            TransactionState::Commit
        } else {
            TransactionState::Rollback
        }
    });
    let (c, got) = consumer(&s.namesrv, "TxTopic");
    for (body, local) in [
        ("commit-now", TransactionState::Commit),
        ("rollback-now", TransactionState::Rollback),
        ("check-commit", TransactionState::Unknown),
        ("check-rollback", TransactionState::Unknown),
    ] {
        let r = producer
            .send_in_transaction(Message::new("TxTopic", body), |sent| {
                assert_eq!(sent.status, SendStatus::SendOk);
                local
            })
            .await
            .expect("the half is stored");
        assert_eq!(r.state, local);
    }
    wait_for(&got, &["commit-now", "check-commit"], 30).await;
    // Long enough for more checks: the rolled-back ones never show, nothing shows twice.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let got = got.lock().unwrap().clone();
    assert_eq!(
        got,
        BTreeMap::from([("check-commit".into(), 1), ("commit-now".into(), 1)])
    );
    let checked = checked.lock().unwrap().clone();
    assert!(checked.contains(&"check-commit".to_string()));
    assert!(checked.contains(&"check-rollback".to_string()));
    assert!(
        !checked.iter().any(|b| b.ends_with("-now")),
        "decided transactions are not checked: {checked:?}"
    );
    c.shutdown().await;
    producer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_producer_of_the_group_ends_what_the_cli_left_undecided() {
    let s = start();
    let out = Command::new(common::BIN)
        .args(["produce", "-n", &s.namesrv, "-t", "TxLeft", "-g", GROUP])
        .args(["-b", "left-behind", "--transaction", "unknown"])
        .output()
        .expect("rockfish produce runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("SEND_OK") && stdout.contains("transaction=Unknown"),
        "{stdout}"
    );
    // The CLI is gone; a producer of its group answers the check.
    let producer = Producer::start_transactional(config(&s.namesrv), |_| TransactionState::Commit);
    // It must be known to the broker: a send makes it learn the route and say hello.
    producer
        .send(Message::new("TxLeft", "plain"))
        .await
        .expect("sent");
    let (c, got) = consumer(&s.namesrv, "TxLeft");
    wait_for(&got, &["plain", "left-behind"], 30).await;
    c.shutdown().await;
    producer.shutdown().await;
}

//! The Rust SDK against a real `rockfish standalone` process: a group splits the queues and
//! consumes everything, broadcasting reaches each consumer, ordered sends by key are consumed
//! in order per key, and a restarted consumer resumes from its committed offset.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rockfish_net::sdk::{
    ConsumeFrom, ConsumeResult, ConsumerConfig, ConsumerConfigExt, Message, MessageExt,
    MessageModel, Producer, ProducerConfig, PullConsumer, PushConsumer,
};

mod common;

use common::Standalone as Server;

fn start() -> Server {
    common::start_in_temp_dir(&[])
}

fn producer(ns: &str) -> Producer {
    Producer::start(ProducerConfig {
        group: "sdk-test-producer".into(),
        namesrv_addrs: vec![ns.into()],
        ..ProducerConfig::default()
    })
}

fn consumer_config(ns: &str, group: &str, topic: &str) -> ConsumerConfig {
    ConsumerConfig {
        group: group.into(),
        namesrv_addrs: vec![ns.into()],
        consume_from: ConsumeFrom::FirstOffset,
        ..ConsumerConfig::default()
    }
    .subscribe(topic, "*")
}

type Log = Arc<Mutex<Vec<(String, String)>>>;

fn recorder(
    log: &Log,
    who: &str,
) -> impl Fn(&rockfish_net::sdk::ReceivedMessage) -> ConsumeResult + Send + Sync + 'static {
    let (log, who) = (log.clone(), who.to_string());
    move |m| {
        log.lock()
            .unwrap()
            .push((who.clone(), String::from_utf8(m.body().to_vec()).unwrap()));
        ConsumeResult::Success
    }
}

async fn wait_for(log: &Log, what: impl Fn(&[(String, String)]) -> bool, secs: u64) {
    let start = Instant::now();
    while !what(&log.lock().unwrap()) {
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out; got {} deliveries",
            log.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn send_all(p: &Producer, topic: &str, prefix: &str, n: usize) {
    for i in 0..n {
        let r = p
            .send(
                Message::new(topic, format!("{prefix}{i}"))
                    .with_tags("TagA")
                    .with_keys(&[&format!("k{i}")]),
            )
            .await;
        assert!(r.is_ok(), "send {i}: {r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_splits_the_queues_and_consumes_everything() {
    let s = start();
    let p = producer(&s.namesrv);
    send_all(&p, "SdkSplit", "w", 4).await; // creates the topic
    let log: Log = Default::default();
    let c1 = PushConsumer::start(
        consumer_config(&s.namesrv, "split", "SdkSplit"),
        recorder(&log, "c1"),
    );
    let c2 = PushConsumer::start(
        consumer_config(&s.namesrv, "split", "SdkSplit"),
        recorder(&log, "c2"),
    );
    // Wait until both hold queues, then send.
    let start = Instant::now();
    loop {
        let (a, b) = (c1.assigned().await, c2.assigned().await);
        let (a, b): (BTreeSet<_>, BTreeSet<_>) = (
            a.into_iter().filter(|q| q.topic == "SdkSplit").collect(),
            b.into_iter().filter(|q| q.topic == "SdkSplit").collect(),
        );
        if a.len() == 2 && b.len() == 2 {
            assert!(a.is_disjoint(&b));
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "never split: {a:?} {b:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    send_all(&p, "SdkSplit", "m", 200).await;
    wait_for(
        &log,
        |l| {
            l.iter()
                .filter(|(_, b)| b.starts_with('m'))
                .map(|(_, b)| b)
                .collect::<BTreeSet<_>>()
                .len()
                == 200
        },
        30,
    )
    .await;
    let log = log.lock().unwrap().clone();
    assert!(
        log.iter().any(|(w, _)| w == "c1") && log.iter().any(|(w, _)| w == "c2"),
        "both consumed"
    );
    c1.shutdown().await;
    c2.shutdown().await;
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcasting_reaches_every_consumer() {
    let s = start();
    let p = producer(&s.namesrv);
    send_all(&p, "SdkBroadcast", "m", 30).await;
    let log: Log = Default::default();
    let cfg = |id: &str| ConsumerConfig {
        model: MessageModel::Broadcasting,
        client_id: id.into(),
        ..consumer_config(&s.namesrv, "bcast", "SdkBroadcast")
    };
    let c1 = PushConsumer::start(cfg("b1"), recorder(&log, "c1"));
    let c2 = PushConsumer::start(cfg("b2"), recorder(&log, "c2"));
    wait_for(
        &log,
        |l| {
            ["c1", "c2"].iter().all(|w| {
                l.iter()
                    .filter(|(x, _)| x == w)
                    .map(|(_, b)| b)
                    .collect::<BTreeSet<_>>()
                    .len()
                    == 30
            })
        },
        30,
    )
    .await;
    c1.shutdown().await;
    c2.shutdown().await;
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_sends_are_consumed_in_order_per_key() {
    let s = start();
    let p = producer(&s.namesrv);
    p.send(Message::new("SdkOrder", "warm")).await.unwrap();
    let keys = ["order-1", "order-2", "order-3"];
    for i in 0..20 {
        for k in keys {
            p.send_ordered(Message::new("SdkOrder", format!("{k}:{i}")), k)
                .await
                .unwrap();
        }
    }
    let log: Log = Default::default();
    let cfg = ConsumerConfig {
        orderly: true,
        ..consumer_config(&s.namesrv, "ordered", "SdkOrder")
    };
    let c = PushConsumer::start(cfg, recorder(&log, "c"));
    wait_for(
        &log,
        |l| l.iter().filter(|(_, b)| b.contains(':')).count() >= 60,
        30,
    )
    .await;
    let log = log.lock().unwrap().clone();
    let mut per_key: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for (_, b) in &log {
        if let Some((k, i)) = b.split_once(':') {
            per_key
                .entry(keys.iter().find(|x| **x == k).unwrap())
                .or_default()
                .push(i.parse().unwrap());
        }
    }
    for (k, seq) in per_key {
        assert_eq!(seq, (0..20).collect::<Vec<_>>(), "{k} out of order");
    }
    c.shutdown().await;
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_consumer_resumes_from_its_committed_offset() {
    let s = start();
    let p = producer(&s.namesrv);
    send_all(&p, "SdkResume", "a", 40).await;
    let log: Log = Default::default();
    let c = PushConsumer::start(
        consumer_config(&s.namesrv, "resume", "SdkResume"),
        recorder(&log, "first"),
    );
    wait_for(&log, |l| l.len() >= 40, 30).await;
    c.shutdown().await; // commits offsets
    send_all(&p, "SdkResume", "b", 20).await;
    let log2: Log = Default::default();
    let c = PushConsumer::start(
        consumer_config(&s.namesrv, "resume", "SdkResume"),
        recorder(&log2, "second"),
    );
    wait_for(&log2, |l| l.len() >= 20, 30).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got: BTreeSet<String> = log2
        .lock()
        .unwrap()
        .iter()
        .map(|(_, b)| b.clone())
        .collect();
    assert!(
        got.iter().all(|b| b.starts_with('b')),
        "re-consumed committed messages: {got:?}"
    );
    assert_eq!(got.len(), 20);
    // The pull consumer sees the same committed offsets.
    let pc = PullConsumer::connect(&s.namesrv, "resume").await.unwrap();
    let queues = pc.queues("SdkResume").await.unwrap();
    let mut total = 0;
    for q in &queues {
        let committed = pc.committed_offset(q).await.unwrap().unwrap_or(0);
        let r = pc.pull(q, 0, 32, "*").await.unwrap();
        total += r.messages.len();
        assert!(committed <= r.max_offset);
    }
    assert_eq!(total, 60, "a pull from offset 0 sees everything");
    c.shutdown().await;
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcasting_offsets_kept_locally_survive_a_restart() {
    use rockfish_net::sdk::PushOptions;
    let s = start();
    let p = producer(&s.namesrv);
    send_all(&p, "SdkLocal", "a", 12).await;
    let dir = tempfile::tempdir().unwrap();
    let options = PushOptions {
        offset_file: Some(dir.path().join("offsets.json")),
        ..PushOptions::default()
    };
    let cfg = || ConsumerConfig {
        model: MessageModel::Broadcasting,
        ..consumer_config(&s.namesrv, "local", "SdkLocal")
    };
    let log: Log = Default::default();
    let c = PushConsumer::start_with_options(cfg(), options.clone(), recorder(&log, "first"));
    wait_for(&log, |l| l.len() >= 12, 30).await;
    c.shutdown().await;
    assert!(dir.path().join("offsets.json").exists());
    send_all(&p, "SdkLocal", "b", 6).await;
    let log2: Log = Default::default();
    let c = PushConsumer::start_with_options(cfg(), options, recorder(&log2, "second"));
    wait_for(&log2, |l| l.len() >= 6, 30).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got: BTreeSet<String> = log2
        .lock()
        .unwrap()
        .iter()
        .map(|(_, b)| b.clone())
        .collect();
    assert_eq!(got.len(), 6, "only the new messages: {got:?}");
    assert!(got.iter().all(|b| b.starts_with('b')));
    c.shutdown().await;
    p.shutdown().await;
}

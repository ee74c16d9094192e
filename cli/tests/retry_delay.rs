//! Delay levels, retries and dead letters with the Rust SDK against a real
//! `rockfish standalone` (short delay levels so a run takes seconds): a delayed message
//! arrives no earlier than its level, a message that fails every time is retried behind its
//! backoff and lands in the group's DLQ after max_reconsume_times, readable there.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rockfish_net::sdk::{
    ConsumeFrom, ConsumeResult, ConsumerConfig, ConsumerConfigExt, Message, Producer,
    ProducerConfig, PullConsumer, PushConsumer,
};

mod common;

fn start() -> common::Standalone {
    common::start_in_temp_dir(&["--message-delay-level", "1s 2s 1s 1s 2s 1s"])
}

fn producer(ns: &str) -> Producer {
    Producer::start(ProducerConfig {
        group: "retry-test-producer".into(),
        namesrv_addrs: vec![ns.into()],
        ..ProducerConfig::default()
    })
}

fn consumer_config(ns: &str, group: &str, topic: &str) -> ConsumerConfig {
    ConsumerConfig {
        group: group.into(),
        namesrv_addrs: vec![ns.into()],
        consume_from: ConsumeFrom::FirstOffset,
        // The retry topic exists once the first heartbeat made it: find it soon.
        route_refresh_ms: 500,
        rebalance_interval_ms: 500,
        ..ConsumerConfig::default()
    }
    .subscribe(topic, "*")
}

/// (body, reconsume times, when received, store timestamp).
type Log = Arc<Mutex<Vec<(String, i32, Instant, i64)>>>;

/// Records a delivery in `log`.
fn record(log: &Log, m: &rockfish_net::sdk::ReceivedMessage) -> String {
    let body = String::from_utf8(m.body().to_vec()).unwrap();
    log.lock().unwrap().push((
        body.clone(),
        m.reconsume_times(),
        Instant::now(),
        m.store_timestamp(),
    ));
    body
}

/// A listener that records every delivery and consumes it.
fn recorder(
    log: &Log,
) -> impl Fn(&rockfish_net::sdk::ReceivedMessage) -> ConsumeResult + Send + Sync + 'static {
    let log = log.clone();
    move |m| {
        record(&log, m);
        ConsumeResult::Success
    }
}

async fn wait_for(log: &Log, what: impl Fn(&[(String, i32, Instant, i64)]) -> bool, secs: u64) {
    let start = Instant::now();
    while !what(&log.lock().unwrap()) {
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out; got {:?}",
            log.lock()
                .unwrap()
                .iter()
                .map(|(b, n, ..)| (b.clone(), *n))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_message_arrives_no_earlier_than_its_level() {
    let server = start();
    let p = producer(&server.namesrv);
    // Create the topic first so the consumer finds its route at once.
    p.send(Message::new("Delayed", "warm-up")).await.unwrap();
    let log: Log = Default::default();
    let c = PushConsumer::start_with_workers(
        consumer_config(&server.namesrv, "delay-g", "Delayed"),
        2,
        recorder(&log),
    );
    wait_for(&log, |l| !l.is_empty(), 30).await;
    let sent = Instant::now();
    let r = p
        .send(Message::new("Delayed", "later").with_delay_level(2))
        .await
        .unwrap();
    assert_eq!(r.queue.topic, "Delayed");
    wait_for(&log, |l| l.iter().any(|(b, ..)| b == "later"), 30).await;
    let got = log.lock().unwrap().clone();
    let (_, _, at, _) = got.iter().find(|(b, ..)| b == "later").unwrap();
    let waited = at.duration_since(sent);
    assert!(
        waited >= Duration::from_secs(2),
        "level 2 is 2 s here: {waited:?}"
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_always_fails_reaches_the_dlq_after_its_max() {
    let server = start();
    let p = producer(&server.namesrv);
    p.send(Message::new("Work", "ok-0")).await.unwrap();
    let log: Log = Default::default();
    let l = log.clone();
    let cfg = ConsumerConfig {
        max_reconsume_times: 2,
        ..consumer_config(&server.namesrv, "work-g", "Work")
    };
    let c = PushConsumer::start_with_workers(cfg, 2, move |m| {
        assert_eq!(m.topic(), "Work", "a retry shows its original topic");
        let body = record(&l, m);
        if body == "poison" {
            ConsumeResult::ReconsumeLater
        } else {
            ConsumeResult::Success
        }
    });
    wait_for(&log, |l| !l.is_empty(), 30).await;
    p.send(Message::new("Work", "poison")).await.unwrap();
    p.send(Message::new("Work", "ok-1")).await.unwrap();
    // Delivered with reconsume counts 0, 1, 2 (retries behind levels 3 and 4), then dead.
    wait_for(
        &log,
        |l| l.iter().filter(|(b, ..)| b == "poison").count() >= 3,
        60,
    )
    .await;
    let pc = PullConsumer::connect(&server.namesrv, "dlq-reader")
        .await
        .unwrap();
    let start = Instant::now();
    let dead = loop {
        let got = match pc.queues("%DLQ%work-g").await {
            Ok(queues) if !queues.is_empty() => {
                pc.pull(&queues[0], 0, 32, "*").await.unwrap().messages
            }
            _ => Vec::new(),
        };
        if !got.is_empty() {
            break got;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no dead letter");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(dead.len(), 1);
    assert_eq!(&dead[0].body()[..], b"poison");
    assert_eq!(dead[0].reconsume_times(), 3);
    assert_eq!(dead[0].property("RETRY_TOPIC"), Some("Work"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let got = log.lock().unwrap().clone();
    let poison: Vec<_> = got.iter().filter(|(b, ..)| b == "poison").collect();
    let counts: Vec<i32> = poison.iter().map(|p| p.1).collect();
    assert_eq!(counts, vec![0, 1, 2], "never delivered again once dead");
    // Each retry was stored again no earlier than its level (1 s) after the failure before.
    for w in poison.windows(2) {
        assert!(
            w[1].3 >= w[0].3 + 1_000,
            "backoff kept: {:?}",
            (w[0].3, w[1].3)
        );
    }
    assert!(
        got.iter().any(|(b, ..)| b == "ok-1"),
        "the rest flows meanwhile"
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_message_arrives_no_earlier_than_its_time() {
    let server = start();
    let p = producer(&server.namesrv);
    p.send(Message::new("Timed", "warm-up")).await.unwrap();
    let log: Log = Default::default();
    let c = PushConsumer::start_with_workers(
        consumer_config(&server.namesrv, "timer-g", "Timed"),
        2,
        recorder(&log),
    );
    wait_for(&log, |l| !l.is_empty(), 30).await;
    let sent = Instant::now();
    p.send(Message::new("Timed", "in-1.5s").with_delay_ms(1_500))
        .await
        .unwrap();
    let r = p
        .send(Message::new("Timed", "too-far").with_delay_ms(4 * 24 * 3_600_000))
        .await;
    assert!(r.is_err(), "beyond the 3-day horizon: refused, {r:?}");
    wait_for(&log, |l| l.iter().any(|(b, ..)| b == "in-1.5s"), 30).await;
    let got = log.lock().unwrap().clone();
    let (_, _, at, _) = got.iter().find(|(b, ..)| b == "in-1.5s").unwrap();
    assert!(at.duration_since(sent) >= Duration::from_millis(1_500));
    c.shutdown().await;
}

/// Measures how late delayed and timer messages arrive on the real binary (for the notes):
/// `cargo test -p rockfish --test retry_delay -- --ignored --nocapture precision`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn precision() {
    let server = start();
    let p = producer(&server.namesrv);
    p.send(Message::new("Precise", "warm-up")).await.unwrap();
    let log: Log = Default::default();
    let c = PushConsumer::start_with_workers(
        consumer_config(&server.namesrv, "precise-g", "Precise"),
        4,
        recorder(&log),
    );
    wait_for(&log, |l| !l.is_empty(), 30).await;
    let mut sent = std::collections::BTreeMap::new();
    for i in 0..100u64 {
        let (body, msg) = if i % 2 == 0 {
            let b = format!("level2-{i}");
            (b.clone(), Message::new("Precise", b).with_delay_level(2))
        } else {
            let b = format!("timer2000-{i}");
            (b.clone(), Message::new("Precise", b).with_delay_ms(2_000))
        };
        sent.insert(body, Instant::now());
        p.send(msg).await.unwrap();
        tokio::time::sleep(Duration::from_millis(37)).await;
    }
    wait_for(&log, |l| l.len() > 100, 60).await;
    let got = log.lock().unwrap().clone();
    for kind in ["level2", "timer2000"] {
        let mut late: Vec<u128> = got
            .iter()
            .filter(|(b, ..)| b.starts_with(kind))
            .map(|(b, _, at, _)| at.duration_since(sent[b]).as_millis().saturating_sub(2_000))
            .collect();
        late.sort();
        println!(
            "{kind}: {} messages, ms after their time: min {} p50 {} p99 {} max {}",
            late.len(),
            late[0],
            late[late.len() / 2],
            late[late.len() * 99 / 100],
            late[late.len() - 1]
        );
    }
    c.shutdown().await;
}

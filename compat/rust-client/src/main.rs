//! rocketmq-client-rust (a third-party SDK, crates.io) against rockfish: its producer sends
//! tagged messages, then its push consumer (clustering, concurrent listener) must receive
//! every one of them. Prints one line per step and exits non-zero with the reason on failure.
//!
//! Usage: rockfish-compat-rust-client NAMESRV TOPIC GROUP COUNT
//!
//! Also a load generator for the performance table (scripts/bench-table with
//! `GENERATOR=rust-client`): `bench NAMESRV TOPIC WINDOW SECONDS BATCH` keeps WINDOW sync
//! sends (BATCH > 1: batch sends of BATCH messages) of 1 KiB bodies in flight for SECONDS
//! and prints a `produce total:` line in `rockfish bench`'s shape.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rocketmq_client_rust::{
    ClientResult, ClientRuntime, ClientRuntimeConfig, ConsumeConcurrentlyContext,
    ConsumeConcurrentlyStatus, DefaultMQProducer, DefaultMQPushConsumer, MQPushConsumer,
    MessageListenerConcurrently,
};
use rocketmq_model::common::consumer::consume_from_where::ConsumeFromWhere;
use rocketmq_model::common::message::message_ext::MessageExt;
use rocketmq_model::common::message::message_single::Message;
use rocketmq_runtime::{RuntimeConfig, RuntimeOwner};

const USAGE: &str = "usage: rockfish-compat-rust-client NAMESRV TOPIC GROUP COUNT\n   or: rockfish-compat-rust-client bench NAMESRV TOPIC WINDOW SECONDS BATCH";

/// Collects the bodies the listener receives.
struct Collect(Arc<Mutex<BTreeSet<String>>>);

impl MessageListenerConcurrently for Collect {
    fn consume_message(
        &self,
        msgs: &[&MessageExt],
        _context: &ConsumeConcurrentlyContext,
    ) -> ClientResult<ConsumeConcurrentlyStatus> {
        let mut seen = self.0.lock().expect("listener lock");
        for m in msgs {
            let body = m
                .body()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            println!(
                "RECV {body} queue={} offset={}",
                m.queue_id(),
                m.queue_offset()
            );
            seen.insert(body);
        }
        Ok(ConsumeConcurrentlyStatus::ConsumeSuccess)
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bench_args = match args.as_slice() {
        [mode, namesrv, topic, window, seconds, batch] if mode == "bench" => Some((
            namesrv.clone(),
            topic.clone(),
            window.parse::<usize>()?,
            seconds.parse::<u64>()?,
            batch.parse::<usize>()?,
        )),
        _ => None,
    };
    let (namesrv, topic, group, count) = match args.as_slice() {
        _ if bench_args.is_some() => (String::new(), String::new(), String::new(), 0),
        [namesrv, topic, group, count] => (
            namesrv.clone(),
            topic.clone(),
            group.clone(),
            count.parse::<usize>()?,
        ),
        _ => return Err(USAGE.into()),
    };

    // The SDK runs on a runtime its caller owns; telemetry goes to its global subscriber.
    let owner = RuntimeOwner::plan(RuntimeConfig {
        thread_name: "compat-rust-client".into(),
        ..Default::default()
    })?
    .build()?;
    let telemetry = rocketmq_observability::install_global(
        &rocketmq_observability::TelemetryBootstrapConfig::default(),
    )?;
    let runtime = ClientRuntime::try_new(
        owner.root_context().component("client"),
        ClientRuntimeConfig::default(),
        telemetry.handle(),
    )?;

    let outcome = match bench_args {
        Some((namesrv, topic, window, seconds, batch)) => {
            bench(&runtime, &namesrv, &topic, window, seconds, batch).await
        }
        None => run(&runtime, &namesrv, &topic, &group, count).await,
    };
    let _ = runtime.shutdown().await;
    let _ = owner.shutdown_tasks().await;
    let _ = owner.shutdown_background();
    let _ = telemetry.shutdown();
    outcome
}

async fn run(
    runtime: &Arc<ClientRuntime>,
    namesrv: &str,
    topic: &str,
    group: &str,
    count: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut producer = DefaultMQProducer::builder(runtime.clone())
        .producer_group(format!("{group}_producer"))
        .name_server_addr(namesrv.to_string())
        .build();
    producer.start().await?;
    for i in 0..count {
        let message = Message::builder()
            .topic(topic.to_string())
            .tags(if i % 2 == 0 { "TagA" } else { "TagB" })
            .keys(vec![format!("key-{i}").into()])
            .body_slice(format!("rust-{i}").as_bytes())
            .build_unchecked();
        let result = producer.send_with_timeout(message, 5_000).await?;
        println!("SENT rust-{i} {result:?}");
    }
    println!("sent {count}");
    Box::pin(producer.shutdown()).await;

    let seen = Arc::new(Mutex::new(BTreeSet::new()));
    let mut consumer = DefaultMQPushConsumer::builder(runtime.clone())
        .consumer_group(group.to_string())
        .name_server_addr(namesrv.to_string())
        .consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset)
        .build();
    consumer.subscribe(topic, "*").await?;
    consumer.register_message_listener_concurrently(Collect(seen.clone()));
    consumer.start().await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let got = loop {
        let got = seen.lock().expect("listener lock").len();
        if got >= count || tokio::time::Instant::now() >= deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    Box::pin(consumer.shutdown()).await;
    if got != count {
        return Err(format!("push consumer received {got}/{count} distinct messages").into());
    }
    println!("received all {count}");
    Ok(())
}

/// WINDOW tasks, each sending one message (or batch) at a time until the time is up.
async fn bench(
    runtime: &Arc<ClientRuntime>,
    namesrv: &str,
    topic: &str,
    window: usize,
    seconds: u64,
    batch: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut producer = DefaultMQProducer::builder(runtime.clone())
        .producer_group(format!("{topic}_bench"))
        .name_server_addr(namesrv.to_string())
        .build();
    producer.start().await?;
    let body = vec![b'x'; 1024];
    let message = |topic: &str| {
        Message::builder()
            .topic(topic.to_string())
            .body_slice(&body)
            .build_unchecked()
    };
    // Warm-up: the topic's route (auto-created by its first sends).
    for _ in 0..4 {
        producer.send_with_timeout(message(topic), 5_000).await?;
    }
    let start = tokio::time::Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..window {
        let producer = producer.clone();
        let msgs: Vec<Message> = (0..batch).map(|_| message(topic)).collect();
        tasks.push(tokio::spawn(async move {
            let (mut sent, mut errors, mut lat) = (0u64, 0u64, Vec::new());
            while tokio::time::Instant::now() < deadline {
                let t = tokio::time::Instant::now();
                let ok = if msgs.len() == 1 {
                    producer
                        .send_with_timeout(msgs[0].clone(), 5_000)
                        .await
                        .is_ok()
                } else {
                    producer
                        .send_batch_with_timeout(msgs.clone(), 5_000)
                        .await
                        .is_ok()
                };
                if ok {
                    sent += msgs.len() as u64;
                    lat.push(t.elapsed().as_micros() as u64);
                } else {
                    errors += 1;
                }
            }
            (sent, errors, lat)
        }));
    }
    let (mut sent, mut errors, mut lat) = (0u64, 0u64, Vec::new());
    for task in tasks {
        let (s, e, l) = task.await?;
        sent += s;
        errors += e;
        lat.extend(l);
    }
    let took = start.elapsed().as_secs_f64();
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "produce total: {sent} msgs in {took:.1}s = {} msg/s, {:.1} MB/s; latency us p50 {} p99 {} p999 {} max {}; errors {errors}",
        (sent as f64 / took) as u64,
        sent as f64 * 1024.0 / took / 1e6,
        pct(0.5),
        pct(0.99),
        pct(0.999),
        lat.last().copied().unwrap_or(0),
    );
    Box::pin(producer.shutdown()).await;
    Ok(())
}

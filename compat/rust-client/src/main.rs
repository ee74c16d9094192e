//! rocketmq-client-rust (a third-party SDK, crates.io) against rockfish: its producer sends
//! tagged messages, then its push consumer (clustering, concurrent listener) must receive
//! every one of them. Prints one line per step and exits non-zero with the reason on failure.
//!
//! Usage: rockfish-compat-rust-client NAMESRV TOPIC GROUP COUNT

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
            println!("RECV {body} queue={} offset={}", m.queue_id(), m.queue_offset());
            seen.insert(body);
        }
        Ok(ConsumeConcurrentlyStatus::ConsumeSuccess)
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [namesrv, topic, group, count] = args.as_slice() else {
        return Err("usage: rockfish-compat-rust-client NAMESRV TOPIC GROUP COUNT".into());
    };
    let count: usize = count.parse()?;

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

    let outcome = run(&runtime, namesrv, topic, group, count).await;
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

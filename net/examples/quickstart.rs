//! The README's quickstart: send ten messages, consume them with a push consumer.
//! Run `rockfish standalone` first, then `cargo run -p rockfish-net --example quickstart`.
//! (ROCKFISH_NAMESRV overrides the name server address.)

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rockfish_net::sdk::{
    ConsumeFrom, ConsumeResult, ConsumerConfig, ConsumerConfigExt, Message, MessageExt, Producer,
    ProducerConfig, PushConsumer,
};

pub async fn quickstart(namesrv: &str) -> Result<usize, Box<dyn std::error::Error>> {
    let producer = Producer::start(ProducerConfig {
        group: "quickstart-producer".into(),
        namesrv_addrs: vec![namesrv.into()],
        ..ProducerConfig::default()
    });
    for i in 0..10 {
        let msg = Message::new("QuickstartTopic", format!("hello {i}"))
            .with_tags("TagA")
            .with_keys(&["order-1"]);
        let sent = producer.send(msg).await?;
        println!(
            "sent {} to queue {} at offset {}",
            sent.msg_id, sent.queue.queue_id, sent.queue_offset
        );
    }

    let received = Arc::new(AtomicUsize::new(0));
    let counter = received.clone();
    let consumer = PushConsumer::start(
        ConsumerConfig {
            group: "quickstart-consumer".into(),
            namesrv_addrs: vec![namesrv.into()],
            consume_from: ConsumeFrom::FirstOffset,
            ..ConsumerConfig::default()
        }
        .subscribe("QuickstartTopic", "TagA"),
        move |msg| {
            println!(
                "received {} {:?}",
                msg.msg_id(),
                String::from_utf8_lossy(&msg.body())
            );
            counter.fetch_add(1, Ordering::Relaxed);
            ConsumeResult::Success
        },
    );
    for _ in 0..200 {
        if received.load(Ordering::Relaxed) >= 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    consumer.shutdown().await;
    producer.shutdown().await;
    Ok(received.load(Ordering::Relaxed))
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let namesrv = std::env::var("ROCKFISH_NAMESRV").unwrap_or_else(|_| "127.0.0.1:9876".into());
    let n = quickstart(&namesrv).await?;
    println!("consumed {n} messages");
    Ok(())
}

//! SQL92 subscriptions against a real `rockfish standalone` (enablePropertyFilter on): a
//! push consumer of the Rust SDK and `rockfish consume --sql` get exactly the messages the
//! expression matches; a malformed expression is refused with a clear error.

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rockfish_net::sdk::{
    ConsumeFrom, ConsumeResult, ConsumerConfig, ConsumerConfigExt, Message, MessageExt, Producer,
    ProducerConfig, PushConsumer,
};

mod common;

const SQL: &str = "TAGS IN ('TagA', 'TagB') AND price BETWEEN 100 AND 300 AND region <> 'us'";

/// Which of the sent messages SQL matches: (body, tag, price, region).
fn sent() -> Vec<(String, &'static str, u32, Option<&'static str>)> {
    (0..12u32)
        .map(|i| {
            let tag = ["TagA", "TagB", "TagC"][i as usize % 3];
            let region = match i % 4 {
                0 => Some("us"),
                1 => Some("eu"),
                2 => None,
                _ => Some("ap"),
            };
            (format!("m{i}"), tag, i * 40, region)
        })
        .collect()
}

fn expected() -> BTreeSet<String> {
    sent()
        .into_iter()
        .filter(|(_, tag, price, region)| {
            // A missing region is NULL: `region <> 'us'` is unknown, so no match.
            *tag != "TagC" && (100..=300).contains(price) && region.is_some_and(|r| r != "us")
        })
        .map(|(b, ..)| b)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_subscribers_get_exactly_the_matching_messages() {
    let s = common::start_in_temp_dir(&[]);
    let producer = Producer::start(ProducerConfig {
        group: "sql-test-producer".into(),
        namesrv_addrs: vec![s.namesrv.clone()],
        ..ProducerConfig::default()
    });
    for (body, tag, price, region) in sent() {
        let mut m = Message::new("SqlTopic", body)
            .with_tags(tag)
            .with_property("price", &price.to_string());
        if let Some(r) = region {
            m = m.with_property("region", r);
        }
        producer.send(m).await.expect("sent");
    }
    let want = expected();
    assert_eq!(want.len(), 2, "{want:?}");

    let got: Arc<Mutex<Vec<String>>> = Arc::default();
    let g = got.clone();
    let consumer = PushConsumer::start(
        ConsumerConfig {
            group: "sql-test-consumers".into(),
            namesrv_addrs: vec![s.namesrv.clone()],
            consume_from: ConsumeFrom::FirstOffset,
            ..ConsumerConfig::default()
        }
        .subscribe_sql("SqlTopic", SQL),
        move |m| {
            g.lock()
                .unwrap()
                .push(String::from_utf8(m.body().to_vec()).unwrap());
            ConsumeResult::Success
        },
    );
    let start = Instant::now();
    while got.lock().unwrap().len() < want.len() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out: {:?}",
            got.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got: BTreeSet<String> = got.lock().unwrap().iter().cloned().collect();
    assert_eq!(got, want, "the push consumer");
    consumer.shutdown().await;
    producer.shutdown().await;

    let out = Command::new(common::BIN)
        .args([
            "consume",
            "-n",
            &s.namesrv,
            "-t",
            "SqlTopic",
            "--from-beginning",
        ])
        .args(["--sql", SQL, "--idle-secs", "1"])
        .output()
        .expect("rockfish consume runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    for (body, ..) in sent() {
        assert_eq!(
            stdout.contains(&format!("body={body}\n")) || stdout.contains(&format!("\"{body}\"")),
            want.contains(&body),
            "{body} in:\n{stdout}"
        );
    }

    let bad = Command::new(common::BIN)
        .args([
            "consume",
            "-n",
            &s.namesrv,
            "-t",
            "SqlTopic",
            "--from-beginning",
        ])
        .args(["--sql", "price >", "--idle-secs", "1"])
        .output()
        .expect("rockfish consume runs");
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("Invalid MessageSelector"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

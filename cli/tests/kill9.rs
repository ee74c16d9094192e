//! A real process, killed with SIGKILL mid-write: a SYNC_FLUSH `rockfish standalone`, four
//! producers sending concurrently, `kill -9` while sends are in flight, a restart on the same
//! data directory. Every message that got SEND_OK must be readable afterwards, at the queue
//! offset it was acked with, in order per queue, and none twice.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rockfish_core::message::properties_string;
use rockfish_core::remoting::RemotingCommand;
use rockfish_core::remoting::codes::{request, response};
use rockfish_net::Client;

mod common;

use common::Standalone;

fn start(dir: &std::path::Path) -> Standalone {
    common::start(
        dir,
        &["--flush", "sync", "--segment-size", "1048576"],
        "warn",
        false,
    )
}

fn send(queue: u32, key: &str) -> RemotingCommand {
    let props = String::from_utf8(properties_string([("UNIQ_KEY", key)])).unwrap();
    RemotingCommand::request(request::SEND_MESSAGE_V2, 0)
        .with_ext("a", "PG")
        .with_ext("b", "CrashTopic")
        .with_ext("d", 4)
        .with_ext("e", queue)
        .with_ext("f", 0)
        .with_ext("g", 0)
        .with_ext("h", 0)
        .with_ext("i", props)
        .with_body(Bytes::from(vec![b'x'; 700]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_send_ok_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path());
    let client = Arc::new(Client::connect(&server.broker).await.unwrap());
    // acked[(queue)] = [(queue offset, key)]
    let acked = Arc::new(std::sync::Mutex::new(
        BTreeMap::<u32, Vec<(u64, String)>>::new(),
    ));
    let mut producers = Vec::new();
    for p in 0..4u32 {
        let (client, acked) = (client.clone(), acked.clone());
        producers.push(tokio::spawn(async move {
            for i in 0..5_000u32 {
                let key = format!("p{p}-{i}");
                match client.request(send(p, &key), Duration::from_secs(5)).await {
                    Ok(r) if r.code == response::SUCCESS => {
                        let offset = r.ext("queueOffset").unwrap().parse().unwrap();
                        acked
                            .lock()
                            .unwrap()
                            .entry(p)
                            .or_default()
                            .push((offset, key));
                    }
                    _ => return, // the broker is gone
                }
            }
        }));
    }
    // Kill once a good number of sends were acked, while more are in flight.
    for _ in 0..500 {
        if acked.lock().unwrap().values().map(Vec::len).sum::<usize>() >= 800 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();
    for p in producers {
        let _ = p.await;
    }
    let acked = acked.lock().unwrap().clone();
    let total: usize = acked.values().map(Vec::len).sum();
    assert!(
        total >= 800,
        "only {total} sends were acked before the kill"
    );
    eprintln!("{total} sends acked before kill -9");

    let mut server = start(dir.path());
    let c = Client::connect(&server.broker).await.unwrap();
    for (queue, sent) in &acked {
        let found = common::read_queue(&c, "CrashTopic", *queue).await;
        // In order, dense, no duplicates.
        for (i, (o, _)) in found.iter().enumerate() {
            assert_eq!(*o, i as u64, "queue {queue}: offsets are dense and ordered");
        }
        let mut keys: Vec<&String> = found.iter().map(|(_, k)| k).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(
            keys.len(),
            found.len(),
            "queue {queue}: a message appears twice"
        );
        // Every acked message is there, at the offset it was acked with.
        for (o, key) in sent {
            assert_eq!(
                found.get(*o as usize).map(|(_, k)| k),
                Some(key),
                "queue {queue}: acked {key} at {o} is lost"
            );
        }
    }
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

/// A consumer group commits offsets on 4 queues, every commit is answered, and the broker is
/// killed -9 at once (well inside the 5 s at which Apache RocketMQ would have persisted them):
/// after the restart every answered offset is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answered_offset_commits_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = common::start(dir.path(), &[], "warn", false);
    let c = Client::connect(&server.broker).await.unwrap();
    // Offsets are kept within what a queue holds: five messages in each of 4 queues.
    for q in 0..4u32 {
        for i in 0..5 {
            let r = c
                .request(send(q, &format!("o{q}-{i}")), Duration::from_secs(5))
                .await
                .unwrap();
            assert_eq!(r.code, response::SUCCESS, "{r:?}");
        }
    }
    let commit = |queue: u32, offset: u64| {
        RemotingCommand::request(request::UPDATE_CONSUMER_OFFSET, 0)
            .with_ext("consumerGroup", "OffsetGroup")
            .with_ext("topic", "CrashTopic")
            .with_ext("queueId", queue)
            .with_ext("commitOffset", offset)
    };
    // Two rounds, so the second overwrites the first; then the kill.
    for round in 1..=2u64 {
        for q in 0..4u32 {
            let r = c
                .request(commit(q, round + q as u64 % 3), Duration::from_secs(5))
                .await
                .unwrap();
            assert_eq!(r.code, response::SUCCESS, "{r:?}");
        }
    }
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();

    let mut server = common::start(dir.path(), &[], "warn", false);
    let c = Client::connect(&server.broker).await.unwrap();
    for q in 0..4u32 {
        let query = RemotingCommand::request(request::QUERY_CONSUMER_OFFSET, 0)
            .with_ext("consumerGroup", "OffsetGroup")
            .with_ext("topic", "CrashTopic")
            .with_ext("queueId", q);
        let r = c.request(query, Duration::from_secs(5)).await.unwrap();
        assert_eq!(r.code, response::SUCCESS, "{r:?}");
        assert_eq!(
            r.ext("offset"),
            Some((2 + q as u64 % 3).to_string().as_str()),
            "queue {q}: the answered commit is lost"
        );
    }
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

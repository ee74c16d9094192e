//! Consumer offsets that survive crashes: an answered UPDATE_CONSUMER_OFFSET is journaled in
//! the commit log before the answer (a process crash keeps it); under SYNC_FLUSH the answer
//! waits for the flush (a power loss keeps it too); the journal is replayed past the
//! snapshot at start.

use rockfish_core::broker::{Broker, BrokerConfig, FlushDiskType, OFFSET_JOURNAL_TOPIC};
use rockfish_core::machine::{ConnId, Output};
use rockfish_core::remoting::RemotingCommand;
use rockfish_core::remoting::codes::{request, response};
use rockfish_store::record::HostAddr;
use rockfish_store::{Disk, MemDisk, MessageStore, StoreConfig};

const C: ConnId = ConnId(2);

fn store_config() -> StoreConfig {
    StoreConfig {
        commitlog_segment_size: 1 << 20,
        consume_queue_entries: 1000,
        ..StoreConfig::default()
    }
}

fn start(disk: &MemDisk, flush: FlushDiskType, now: u64) -> Broker<MemDisk> {
    let (store, _) = MessageStore::open(disk.clone(), store_config(), now).unwrap();
    let cfg = BrokerConfig {
        flush_disk_type: flush,
        ..BrokerConfig::default()
    };
    let mut b = Broker::new(cfg, store, now).unwrap();
    b.on_connect(C, HostAddr::V4([10, 0, 0, 8], 6666), now);
    while b.poll_output().is_some() {}
    b
}

/// Stores `n` messages in each of queues 0..8 of topic T: committed offsets are only kept
/// within what a queue holds (offsets past a recovered end are corrected at start).
fn fill(b: &mut Broker<MemDisk>, n: usize) {
    for q in 0..8u32 {
        for _ in 0..n {
            let msg = rockfish_store::StoreMessage {
                topic: "T",
                queue_id: q,
                flag: 0,
                sys_flag: 0,
                born_timestamp: 0,
                born_host: HostAddr::V4([10, 0, 0, 8], 1),
                store_host: HostAddr::V4([10, 0, 0, 1], 10911),
                reconsume_times: 0,
                prepared_transaction_offset: 0,
                body: b"m",
                properties: b"",
            };
            b.store_mut().put(&msg, 0).unwrap();
        }
    }
    b.store_mut().sync().unwrap();
}

fn update(queue_id: u32, offset: u64, opaque: i32) -> RemotingCommand {
    RemotingCommand::request(request::UPDATE_CONSUMER_OFFSET, opaque)
        .with_ext("consumerGroup", "g")
        .with_ext("topic", "T")
        .with_ext("queueId", queue_id)
        .with_ext("commitOffset", offset)
}

fn query(b: &mut Broker<MemDisk>, queue_id: u32, now: u64) -> Option<u64> {
    let cmd = RemotingCommand::request(request::QUERY_CONSUMER_OFFSET, 9_000)
        .with_ext("consumerGroup", "g")
        .with_ext("topic", "T")
        .with_ext("queueId", queue_id);
    b.on_command(C, cmd, now, now);
    std::iter::from_fn(|| b.poll_output()).find_map(|o| match o {
        Output::Send { cmd, .. } if cmd.code == response::SUCCESS => {
            cmd.ext("offset").and_then(|v| v.parse().ok())
        }
        _ => None,
    })
}

fn answers(b: &mut Broker<MemDisk>) -> (Vec<i32>, Vec<u64>) {
    let mut acked = Vec::new();
    let mut flushes = Vec::new();
    while let Some(o) = b.poll_output() {
        match o {
            Output::Send { cmd, .. } => {
                assert_eq!(cmd.code, response::SUCCESS, "{cmd:?}");
                acked.push(cmd.opaque);
            }
            Output::Flush { upto } => flushes.push(upto),
            Output::Persist { token, files } => b.run_persist(token, files, 0),
            _ => {}
        }
    }
    (acked, flushes)
}

#[test]
fn answered_commits_survive_a_process_crash() {
    let disk = MemDisk::new(1);
    let mut b = start(&disk, FlushDiskType::Async, 0);
    fill(&mut b, 120);
    for q in 0..8u32 {
        b.on_command(C, update(q, 100 + q as u64, q as i32), 1_000, 1_000);
    }
    let (acked, _) = answers(&mut b);
    assert_eq!(
        acked.len(),
        8,
        "every commit answered at once under ASYNC_FLUSH"
    );
    // A kill -9 well inside the 5 s persist interval: the page cache survives, memory does not.
    drop(b);
    disk.crash();
    let mut b = start(&disk, FlushDiskType::Async, 2_000);
    for q in 0..8u32 {
        assert_eq!(query(&mut b, q, 2_000), Some(100 + q as u64), "queue {q}");
    }
}

#[test]
fn pull_carried_commits_survive_a_process_crash() {
    let disk = MemDisk::new(1);
    let mut b = start(&disk, FlushDiskType::Async, 0);
    let create = RemotingCommand::request(request::UPDATE_AND_CREATE_TOPIC, 76)
        .with_ext("topic", "T")
        .with_ext("readQueueNums", 4)
        .with_ext("writeQueueNums", 4);
    b.on_command(C, create, 400, 400);
    while b.poll_output().is_some() {}
    fill(&mut b, 20);
    let pull = RemotingCommand::request(request::PULL_MESSAGE, 77)
        .with_ext("consumerGroup", "g")
        .with_ext("topic", "T")
        .with_ext("queueId", 1)
        .with_ext("queueOffset", 0)
        .with_ext("maxMsgNums", 32)
        .with_ext("sysFlag", 0b111) // commit offset, suspend, subscription
        .with_ext("commitOffset", 17)
        .with_ext("suspendTimeoutMillis", 0)
        .with_ext("subscription", "*")
        .with_ext("subVersion", 0);
    b.on_command(C, pull, 500, 500);
    while b.poll_output().is_some() {}
    drop(b);
    disk.crash();
    let mut b = start(&disk, FlushDiskType::Async, 1_000);
    assert_eq!(query(&mut b, 1, 1_000), Some(17));
}

#[test]
fn sync_flush_answers_a_commit_once_durable_and_a_power_loss_keeps_it() {
    let disk = MemDisk::new(1);
    let mut b = start(&disk, FlushDiskType::Sync, 0);
    fill(&mut b, 60);
    b.on_command(C, update(3, 55, 1), 100, 100);
    let (acked, flushes) = answers(&mut b);
    assert!(
        acked.is_empty(),
        "answered before the journal record was durable"
    );
    assert_eq!(flushes.len(), 1);
    b.run_flush(flushes[0], 101);
    let (acked, _) = answers(&mut b);
    assert_eq!(acked, vec![1]);
    drop(b);
    disk.power_loss();
    let mut b = start(&disk, FlushDiskType::Sync, 1_000);
    assert_eq!(query(&mut b, 3, 1_000), Some(55));
}

#[test]
fn unchanged_commits_write_nothing_and_the_snapshot_compacts_the_journal() {
    let disk = MemDisk::new(1);
    let mut b = start(&disk, FlushDiskType::Async, 0);
    fill(&mut b, 10);
    b.on_command(C, update(0, 5, 1), 10, 10);
    b.on_command(C, update(0, 5, 2), 11, 11);
    answers(&mut b);
    assert_eq!(
        b.store().max_offset(OFFSET_JOURNAL_TOPIC, 0),
        1,
        "one record for one change"
    );
    // The periodic snapshot covers the journal; records after it are replayed on top.
    b.on_timeout(6_000);
    b.on_command(C, update(0, 9, 3), 6_001, 6_001);
    answers(&mut b);
    drop(b);
    disk.crash();
    let mut b = start(&disk, FlushDiskType::Async, 7_000);
    assert_eq!(query(&mut b, 0, 7_000), Some(9));
    let snapshot = String::from_utf8(
        disk.read_file("config/consumerOffset.json")
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert!(
        snapshot.contains("\"offsetTable\""),
        "RocketMQ's shape: {snapshot}"
    );
}

#[test]
fn a_snapshot_is_written_only_once_the_journal_it_covers_is_durable() {
    // ASYNC_FLUSH: a snapshot taken before its journal records are flushed may not be written
    // before them, or a power loss keeps the snapshot and not the records it summed up (a
    // pop's checkpoint among them: found by the simulator, pop-sync seed 10).
    let disk = MemDisk::new(1);
    let mut b = start(&disk, FlushDiskType::Async, 0);
    fill(&mut b, 50);
    for i in 0..4u64 {
        b.on_command(C, update(0, i + 1, i as i32), 10, 10);
    }
    answers(&mut b);
    b.on_timeout(6_000); // a snapshot at journal offset 4, nothing flushed: not written yet
    answers(&mut b);
    drop(b);
    disk.power_loss();
    let mut b = start(&disk, FlushDiskType::Async, 7_000);
    assert_ne!(
        query(&mut b, 0, 7_000),
        Some(4),
        "neither the records nor a snapshot of them survived"
    );
    drop(b);
    // Once the records are durable, the snapshot is written.
    let disk = MemDisk::new(2);
    let mut b = start(&disk, FlushDiskType::Async, 0);
    fill(&mut b, 50);
    for i in 0..4u64 {
        b.on_command(C, update(0, i + 1, i as i32), 10, 10);
    }
    answers(&mut b);
    b.on_timeout(6_000);
    let (_, flushes) = answers(&mut b);
    assert!(!flushes.is_empty(), "a flush is asked");
    for upto in flushes {
        b.run_flush(upto, 6_001);
    }
    answers(&mut b);
    drop(b);
    disk.power_loss();
    let mut b = start(&disk, FlushDiskType::Async, 14_000);
    assert_eq!(
        query(&mut b, 0, 14_000),
        Some(4),
        "durable, and its snapshot"
    );
    // New records past the snapshot are replayed.
    b.on_command(C, update(0, 3, 50), 14_001, 14_001);
    answers(&mut b);
    drop(b);
    disk.crash();
    let mut b = start(&disk, FlushDiskType::Async, 15_000);
    assert_eq!(
        query(&mut b, 0, 15_000),
        Some(3),
        "the new record was replayed"
    );
}

#[test]
fn the_journal_topic_is_not_for_producers() {
    let disk = MemDisk::new(1);
    let mut b = start(&disk, FlushDiskType::Async, 0);
    let send = RemotingCommand::request(request::SEND_MESSAGE_V2, 5)
        .with_ext("a", "pg")
        .with_ext("b", OFFSET_JOURNAL_TOPIC)
        .with_ext("c", "TBW102")
        .with_ext("d", 4)
        .with_ext("e", 0)
        .with_ext("f", 0)
        .with_ext("g", 0)
        .with_ext("h", 0)
        .with_ext("i", "")
        .with_body(bytes::Bytes::from_static(b"t@g 0 999999"));
    b.on_command(C, send, 1, 1);
    let out: Vec<_> = std::iter::from_fn(|| b.poll_output()).collect();
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Send { cmd, .. } if cmd.code == response::NO_PERMISSION)),
        "{out:?}"
    );
    assert_eq!(b.store().max_offset(OFFSET_JOURNAL_TOPIC, 0), 0);
}

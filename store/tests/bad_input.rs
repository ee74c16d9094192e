//! Bad input gets a clear error naming the file and the problem, or a reported recovery;
//! never a panic and never silently wrong data.

mod common;

use common::{Sent, put_all, small_config, verify};
use rockfish_store::config::{self, ConsumerOffsetTable, TopicConfig, TopicConfigTable};
use rockfish_store::record::{HostAddr, StoreMessage};
use rockfish_store::{Disk, DiskError, FaultPlan, MemDisk, MessageStore, StoreError};

fn stored(n: usize) -> (MemDisk, Vec<Sent>) {
    let disk = MemDisk::new(1);
    let (mut store, _) = MessageStore::open(disk.clone(), small_config(), 0).unwrap();
    let mut sent = Vec::new();
    for i in 0..n {
        let mut m = vec![Sent::new(
            "TopicA",
            (i % 2) as u32,
            vec![i as u8; 900],
            &format!("k{i}"),
            "TagA",
        )];
        put_all(&mut store, &mut m, 1_000 + i as u64).unwrap();
        sent.extend(m);
    }
    store.shutdown(10_000).unwrap();
    (disk, sent)
}

fn open(
    disk: &MemDisk,
) -> Result<(MessageStore<MemDisk>, rockfish_store::RecoveryReport), StoreError> {
    MessageStore::open(disk.clone(), small_config(), 20_000)
}

#[test]
fn stray_file_in_the_commit_log_is_named() {
    let (mut disk, _) = stored(10);
    disk.create("commitlog/notes.txt", 10).unwrap();
    let err = open(&disk).err().expect("refuses");
    assert!(err.to_string().contains("commitlog/notes.txt"), "{err}");
}

#[test]
fn segment_missing_in_the_middle_is_named() {
    let (disk, _) = stored(200); // ~180 KiB: three 64 KiB segments
    assert!(disk.delete("commitlog/00000000000000065536"));
    let err = open(&disk).err().expect("refuses");
    assert!(
        err.to_string().contains("commitlog/00000000000000131072")
            && err.to_string().contains("missing"),
        "{err}"
    );
}

#[test]
fn segment_of_the_wrong_size_is_named() {
    let (mut disk, _) = stored(200);
    disk.remove("commitlog/00000000000000000000").unwrap();
    disk.create("commitlog/00000000000000000000", 1000).unwrap();
    let err = open(&disk).err().expect("refuses");
    assert!(
        err.to_string().contains("commitlog/00000000000000000000")
            && err.to_string().contains("size"),
        "{err}"
    );
}

#[test]
fn missing_consume_queue_is_rebuilt_and_reported() {
    let (disk, sent) = stored(100);
    for p in disk.paths() {
        if p.starts_with("consumequeue/TopicA/1/") {
            disk.delete(&p);
        }
    }
    let (store, report) = open(&disk).unwrap();
    assert!(
        report
            .rebuilt_queues
            .iter()
            .any(|q| q.starts_with("TopicA/1") && q.contains("missing")),
        "{report:?}"
    );
    verify(&store, &sent);
}

#[test]
fn damaged_consume_queue_is_rebuilt_and_reported() {
    let (disk, sent) = stored(100);
    // Overwrite the queue's last checkpointed entry with a plausible but wrong pointer.
    let last = sent.iter().filter(|s| s.queue_id == 0).count() as u64 - 1;
    let mut entry = [0u8; 20];
    entry[..8].copy_from_slice(&sent[0].offset.to_be_bytes());
    entry[8..12].copy_from_slice(&((sent[0].end - sent[0].offset) as u32).to_be_bytes());
    let file = format!("consumequeue/TopicA/0/{:020}", (last / 64) * 64 * 20);
    disk.poke(&file, (last % 64) * 20, &entry).unwrap();
    let (store, report) = open(&disk).unwrap();
    assert!(
        report
            .rebuilt_queues
            .iter()
            .any(|q| q.starts_with("TopicA/0")),
        "{report:?}"
    );
    verify(&store, &sent);
}

#[test]
fn missing_index_is_rebuilt() {
    let (disk, sent) = stored(100);
    for p in disk.paths() {
        if p.starts_with("index/") {
            disk.delete(&p);
        }
    }
    let (store, report) = open(&disk).unwrap();
    assert!(
        report
            .index_note
            .as_deref()
            .unwrap_or("")
            .contains("rebuilding"),
        "{report:?}"
    );
    verify(&store, &sent);
}

#[test]
fn damaged_checkpoint_means_recovery_from_the_start() {
    let (disk, sent) = stored(100);
    disk.poke("checkpoint", 14, &[0xFF]).unwrap();
    let (store, report) = open(&disk).unwrap();
    let problem = report.checkpoint_problem.clone().expect("reported");
    assert!(
        problem.contains("checkpoint") && problem.contains("CRC"),
        "{problem}"
    );
    assert_eq!(report.scanned_from, 0);
    verify(&store, &sent);
}

#[test]
fn cut_short_last_segment_is_restored_and_its_tail_cut() {
    let disk = MemDisk::new(3);
    let (mut store, _) = MessageStore::open(disk.clone(), small_config(), 0).unwrap();
    let mut sent = Vec::new();
    for i in 0..30 {
        let mut m = vec![Sent::new(
            "TopicA",
            0,
            vec![7; 500],
            &format!("k{i}"),
            "TagA",
        )];
        put_all(&mut store, &mut m, 1_000 + i).unwrap();
        sent.extend(m);
    }
    store.sync().unwrap();
    drop(store.crash());
    // Replace the segment by a copy cut in the middle of message 20.
    let path = "commitlog/00000000000000000000";
    let bytes = disk.durable_bytes(path).unwrap();
    let cut = sent[20].offset as usize + 7;
    disk.delete(path);
    let mut d = disk.clone();
    d.write_file_atomic(path, &bytes[..cut]).unwrap();
    let (store, report) = open(&disk).unwrap();
    assert!(
        report
            .file_repairs
            .iter()
            .any(|r| r.contains(path) && r.contains("restored")),
        "{report:?}"
    );
    assert_eq!(
        report.truncated.as_ref().map(|t| t.offset),
        Some(sent[20].offset)
    );
    verify(&store, &sent[..20]);
}

#[test]
fn damage_below_the_checkpoint_is_never_cut_silently() {
    let (disk, sent) = stored(100);
    // Force a rescan from the start (a queue must be rebuilt), with a record below the
    // checkpoint damaged on the media.
    for p in disk.paths() {
        if p.starts_with("consumequeue/TopicA/1/") {
            disk.delete(&p);
        }
    }
    disk.corrupt("commitlog/00000000000000000000", sent[5].offset + 120, 3)
        .unwrap();
    let err = open(&disk).err().expect("refuses to cut durable data");
    let msg = err.to_string();
    assert!(
        msg.contains("commitlog/00000000000000000000") && msg.contains(&sent[5].offset.to_string()),
        "{msg}"
    );
    assert!(msg.contains("below the checkpoint"), "{msg}");
}

#[test]
fn unreadable_config_file_is_named() {
    let mut disk = MemDisk::new(4);
    disk.write_file_atomic(config::TOPICS_FILE, b"{\"topicConfigTable\": {\"T\": ")
        .unwrap();
    let err = config::load::<TopicConfigTable, _>(&disk, config::TOPICS_FILE).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("config/topics.json") && msg.contains("unreadable"),
        "{msg}"
    );
    assert_eq!(
        config::load::<TopicConfigTable, _>(&disk, config::DELAY_OFFSETS_FILE).unwrap(),
        None
    );
}

#[test]
fn config_round_trips_in_rocketmq_json() {
    let mut disk = MemDisk::new(5);
    let mut topics = TopicConfigTable::default();
    topics
        .topic_config_table
        .insert("T".into(), TopicConfig::new("T", 8));
    config::save(&mut disk, config::TOPICS_FILE, &topics).unwrap();
    let raw = String::from_utf8(disk.read_file(config::TOPICS_FILE).unwrap().unwrap()).unwrap();
    assert!(
        raw.contains("\"topicConfigTable\"") && raw.contains("\"readQueueNums\": 8"),
        "{raw}"
    );
    assert_eq!(
        config::load(&disk, config::TOPICS_FILE).unwrap(),
        Some(topics)
    );
    let mut offsets = ConsumerOffsetTable::default();
    offsets.set("T", "G", 3, 42);
    config::save(&mut disk, config::CONSUMER_OFFSETS_FILE, &offsets).unwrap();
    let back: ConsumerOffsetTable = config::load(&disk, config::CONSUMER_OFFSETS_FILE)
        .unwrap()
        .unwrap();
    assert_eq!(back.get("T", "G", 3), Some(42));
}

#[test]
fn failed_config_write_keeps_the_old_file() {
    let mut disk = MemDisk::new(6);
    let mut offsets = ConsumerOffsetTable::default();
    offsets.set("T", "G", 0, 1);
    config::save(&mut disk, config::CONSUMER_OFFSETS_FILE, &offsets).unwrap();
    offsets.set("T", "G", 0, 2);
    disk.fail_next_writes(1);
    assert!(config::save(&mut disk, config::CONSUMER_OFFSETS_FILE, &offsets).is_err());
    disk.power_loss();
    let back: ConsumerOffsetTable = config::load(&disk, config::CONSUMER_OFFSETS_FILE)
        .unwrap()
        .unwrap();
    assert_eq!(back.get("T", "G", 0), Some(1));
}

fn msg<'a>(topic: &'a str, body: &'a [u8], props: &'a [u8]) -> StoreMessage<'a> {
    StoreMessage {
        topic,
        queue_id: 0,
        flag: 0,
        sys_flag: 0,
        born_timestamp: 0,
        born_host: HostAddr::UNSPECIFIED,
        store_host: HostAddr::UNSPECIFIED,
        reconsume_times: 0,
        prepared_transaction_offset: 0,
        body,
        properties: props,
    }
}

#[test]
fn refused_messages_store_nothing_and_the_store_goes_on() {
    let disk = MemDisk::new(7);
    let (mut store, _) = MessageStore::open(disk, small_config(), 0).unwrap();
    let big = vec![0u8; small_config().max_message_size + 1];
    let long_props = vec![b'a'; 40_000];
    let long_topic = "T".repeat(128);
    for (m, what) in [
        (msg("TopicA", &big, b""), "body is"),
        (msg("TopicA", b"x", &long_props), "properties are"),
        (msg(&long_topic, b"x", b""), "invalid topic"),
        (msg("a/../b", b"x", b""), "invalid topic"),
        (msg("", b"x", b""), "invalid topic"),
    ] {
        let err = store.put(&m, 1).unwrap_err();
        assert!(err.to_string().contains(what), "{err}");
    }
    assert_eq!(store.write_pos(), 0, "nothing was written");
    // A batch too large for one segment.
    let body = vec![1u8; 20_000];
    let batch: Vec<_> = (0..4).map(|_| msg("TopicA", &body, b"")).collect();
    assert!(matches!(
        store.put_batch(&batch, 1),
        Err(StoreError::BatchTooLarge { .. })
    ));
    assert!(store.stopped().is_none());
    store.put(&msg("TopicA", b"fine", b""), 2).unwrap();
    assert_eq!(store.max_offset("TopicA", 0), 1);
}

#[test]
fn full_disk_refuses_cleanly_and_recovers_when_space_returns() {
    let disk = MemDisk::new(8);
    let (mut store, _) = MessageStore::open(disk.clone(), small_config(), 0).unwrap();
    let mut sent = Vec::new();
    let mut i = 0;
    // Allow about two segments' worth of files, then fill.
    disk.set_plan(FaultPlan {
        capacity: Some(3 * 64 * 1024),
        ..FaultPlan::default()
    });
    let full = loop {
        let mut m = vec![Sent::new(
            "TopicA",
            0,
            vec![9; 2000],
            &format!("k{i}"),
            "TagA",
        )];
        i += 1;
        match put_all(&mut store, &mut m, 1_000 + i) {
            Ok(()) => sent.extend(m),
            Err(e) => break e,
        }
        assert!(i < 1000, "the disk never filled");
    };
    assert!(
        matches!(full, StoreError::Disk(DiskError::Full { .. })),
        "{full}"
    );
    assert!(
        store.stopped().is_none(),
        "a full disk is not a broken disk"
    );
    verify(&store, &sent);
    // Space returns: writes go on, and everything survives a restart.
    disk.set_plan(FaultPlan::default());
    let mut m = vec![Sent::new("TopicA", 0, vec![9; 2000], "after", "TagA")];
    put_all(&mut store, &mut m, 99_999).unwrap();
    sent.extend(m);
    let disk = store.shutdown(100_000).unwrap();
    let (store, _) = MessageStore::open(disk, small_config(), 100_001).unwrap();
    verify(&store, &sent);
}

#[test]
fn failed_write_stops_the_store_until_recovery() {
    let (disk, mut sent) = stored(10);
    let (mut store, _) = open(&disk).unwrap();
    disk.fail_next_writes(1);
    let mut m = vec![Sent::new("TopicA", 0, vec![1; 100], "bad", "TagA")];
    assert!(put_all(&mut store, &mut m, 50_000).is_err());
    let mut m = vec![Sent::new("TopicA", 0, vec![1; 100], "later", "TagA")];
    assert!(matches!(
        put_all(&mut store, &mut m, 50_001),
        Err(StoreError::Stopped { .. })
    ));
    drop(store.crash());
    disk.crash();
    let (mut store, _) = open(&disk).unwrap();
    verify(&store, &sent);
    put_all(&mut store, &mut m, 50_002).unwrap();
    sent.extend(m);
    verify(&store, &sent);
}

#[test]
fn failed_sync_never_acks_and_stops_the_store() {
    let (disk, sent) = stored(10);
    let (mut store, _) = open(&disk).unwrap();
    let mut m = vec![Sent::new("TopicA", 0, vec![1; 100], "unsynced", "TagA")];
    put_all(&mut store, &mut m, 50_000).unwrap();
    let before = store.flushed();
    disk.fail_next_syncs(1);
    assert!(store.sync().is_err());
    assert_eq!(
        store.flushed(),
        before,
        "a failed sync must not advance the durable offset"
    );
    assert!(
        store.sync().is_err(),
        "no retry can be trusted after a failed sync"
    );
    assert!(store.checkpoint(50_001).is_err());
    drop(store.crash());
    disk.power_loss();
    let (store, _) = open(&disk).unwrap();
    // The failed sync made nothing durable (this plan writes nothing back at power loss):
    // exactly the messages synced before it are there.
    verify(&store, &sent);
}

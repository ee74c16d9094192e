//! Many topics: a queue costs disk in proportion to what it holds, mappings stay under their
//! cap (idle files are unmapped and remapped on demand, by writes, reads and recovery alike),
//! a full disk while a queue file grows refuses the put cleanly, and a new store is small.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::{Sent, put_all, small_config, verify};
use rockfish_store::{
    DiskError, FaultPlan, MemDisk, MessageStore, MmapDisk, StoreConfig, StoreError,
};

/// Bytes the files under `dir` occupy on disk (what `du` counts), not their sizes.
fn disk_used(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        total += meta.blocks() * 512;
        if meta.is_dir() {
            total += disk_used(&entry.path());
        }
    }
    total
}

fn mmap_store(dir: &Path, config: StoreConfig, max_mapped: usize) -> MessageStore<MmapDisk> {
    let mut disk = MmapDisk::open_root(dir).unwrap();
    disk.set_max_mapped(max_mapped);
    MessageStore::open(disk, config, 1_000).unwrap().0
}

fn one_per_queue(topics: usize, queues: u32) -> Vec<Sent> {
    (0..topics)
        .flat_map(|t| {
            (0..queues).map(move |q| {
                Sent::new(
                    &format!("Topic{t}"),
                    q,
                    vec![7; 64],
                    &format!("k{t}-{q}"),
                    "TagA",
                )
            })
        })
        .collect()
}

#[test]
fn more_queues_than_the_mapping_cap_work_and_recover() {
    let dir = tempfile::tempdir().unwrap();
    const CAP: usize = 8;
    let mut store = mmap_store(dir.path(), small_config(), CAP);
    // 50 topics x 4 queues, two rounds: every queue is unmapped and mapped again in between.
    let mut sent = Vec::new();
    for round in 0..2 {
        let mut batch = one_per_queue(50, 4);
        for (i, s) in batch.iter_mut().enumerate() {
            put_all(
                &mut store,
                std::slice::from_mut(s),
                2_000 + (round * 1000 + i) as u64,
            )
            .unwrap();
            assert!(
                store.disk().mapped() <= CAP,
                "mapped {}",
                store.disk().mapped()
            );
        }
        sent.extend(batch);
    }
    // Reads of queues that are not mapped map them again (and stay under the cap).
    verify(&store, &sent);
    assert!(store.disk().mapped() <= CAP);
    assert!(
        store.disk().maps_made() > 200,
        "queues were evicted and remapped"
    );
    store.checkpoint(9_000).unwrap();
    // A crash, and recovery with the same cap: it never needs every queue mapped at once.
    let disk = store.crash();
    drop(disk);
    let store = mmap_store(dir.path(), small_config(), CAP);
    assert!(store.disk().mapped() <= CAP);
    verify(&store, &sent);
}

#[test]
fn a_thousand_queues_use_disk_in_proportion_to_what_they_hold() {
    let dir = tempfile::tempdir().unwrap();
    // RocketMQ's geometry: 300,000 entries (6 MB) per queue file, 1 GiB log segments.
    let mut store = mmap_store(dir.path(), StoreConfig::default(), 100_000);
    let mut sent = one_per_queue(250, 4);
    for (i, s) in sent.iter_mut().enumerate() {
        put_all(&mut store, std::slice::from_mut(s), 2_000 + i as u64).unwrap();
    }
    store.checkpoint(5_000).unwrap();
    let queues = disk_used(&dir.path().join("consumequeue"));
    // Each queue holds one 20-byte entry: a page or two of it, not 6 MB (6 GB in all).
    assert!(
        queues < 1000 * 16 * 1024,
        "1000 one-entry queues occupy {queues} bytes"
    );
    let total = disk_used(dir.path());
    // A 1 GiB segment and a 420 MB index file exist; only what is reserved ahead counts.
    assert!(total < 64 << 20, "the store occupies {total} bytes");
    verify(&store, &sent);
}

#[test]
fn a_new_store_is_small_and_is_not_a_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let disk = MmapDisk::open_root(dir.path()).unwrap();
    let (mut store, report) = MessageStore::open(disk, StoreConfig::default(), 1_000).unwrap();
    assert!(report.fresh, "{report:?}");
    let mut m = vec![Sent::new("TopicA", 0, vec![1; 1024], "k", "TagA")];
    put_all(&mut store, &mut m, 2_000).unwrap();
    store.checkpoint(3_000).unwrap();
    let used = disk_used(dir.path());
    assert!(
        used < 64 << 20,
        "a store holding one message occupies {used} bytes"
    );
    let disk = store.shutdown(4_000).unwrap();
    let (store, report) = MessageStore::open(disk, StoreConfig::default(), 5_000).unwrap();
    assert!(!report.fresh, "a reopened store is a recovery: {report:?}");
    verify(&store, &m);
}

#[test]
fn a_full_disk_while_a_queue_file_grows_refuses_cleanly() {
    let disk = MemDisk::new(7);
    let (mut store, _) = MessageStore::open(disk.clone(), StoreConfig::default(), 1_000).unwrap();
    let mut sent = vec![Sent::new("TopicA", 0, vec![1; 16], "first", "TagA")];
    put_all(&mut store, &mut sent, 2_000).unwrap();
    // No byte more than is reserved now: the log and the index have room reserved ahead, the
    // queue's first page holds 204 entries.
    disk.set_plan(FaultPlan {
        capacity: Some(disk.used_bytes()),
        ..FaultPlan::default()
    });
    let mut refused = None;
    for i in 1..1_000 {
        let mut m = vec![Sent::new(
            "TopicA",
            0,
            vec![1; 16],
            &format!("k{i}"),
            "TagA",
        )];
        let (pos, max) = (store.write_pos(), store.max_offset("TopicA", 0));
        match put_all(&mut store, &mut m, 2_000 + i) {
            Ok(()) => sent.extend(m),
            Err(e) => {
                // Nothing of the refused put was stored, and the store goes on.
                assert_eq!(store.write_pos(), pos);
                assert_eq!(store.max_offset("TopicA", 0), max);
                assert!(
                    store.stopped().is_none(),
                    "a full disk does not stop the store"
                );
                refused = Some(e);
                break;
            }
        }
    }
    match refused {
        Some(StoreError::Disk(DiskError::Full { path, .. })) => {
            assert!(path.starts_with("consumequeue/TopicA/0/"), "{path}")
        }
        other => panic!("expected the queue file's growth to hit the full disk: {other:?}"),
    }
    assert!(
        sent.len() > 100,
        "the reserved page was used: {}",
        sent.len()
    );
    verify(&store, &sent);
    // Space comes back: the same queue goes on at the next offset.
    disk.set_plan(FaultPlan::default());
    let mut m = vec![Sent::new("TopicA", 0, vec![1; 16], "after", "TagA")];
    put_all(&mut store, &mut m, 9_000).unwrap();
    assert_eq!(m[0].queue_offset, sent.len() as u64);
    sent.extend(m);
    verify(&store, &sent);
    drop(store.crash());
    disk.power_loss();
    let (store, _) = MessageStore::open(disk.clone(), StoreConfig::default(), 10_000).unwrap();
    let durable: Vec<Sent> = Vec::new();
    // Nothing was synced: after a power loss the store is empty, and consistent.
    verify(&store, &durable);
}

#[test]
fn queue_files_exist_durably_once_a_checkpoint_covers_them() {
    let disk = MemDisk::new(3);
    let (mut store, _) = MessageStore::open(disk.clone(), small_config(), 1_000).unwrap();
    let mut a = vec![Sent::new("TopicA", 0, vec![1; 16], "a", "TagA")];
    put_all(&mut store, &mut a, 2_000).unwrap();
    store.sync().unwrap();
    store.checkpoint(3_000).unwrap();
    // Created after the checkpoint and never synced: may vanish at power loss.
    let mut b = vec![Sent::new("TopicB", 1, vec![2; 16], "b", "TagA")];
    put_all(&mut store, &mut b, 4_000).unwrap();
    drop(store.crash());
    disk.power_loss();
    let paths = disk.paths();
    assert!(
        paths
            .iter()
            .any(|p| p.starts_with("consumequeue/TopicA/0/"))
    );
    assert!(!paths.iter().any(|p| p.starts_with("consumequeue/TopicB/")));
    let (store, _) = MessageStore::open(disk, small_config(), 5_000).unwrap();
    verify(&store, &a);
}

/// Entries of consume queue file `path` written so far (the volatile layer: what a read of
/// the file, not of the store, sees).
fn written_entries(disk: &MemDisk, path: &str) -> usize {
    use rockfish_store::Disk;
    let mut probe = disk.clone();
    let Ok(file) = probe.open(path) else { return 0 };
    let size = probe.size(file).unwrap() as usize;
    let bytes = probe.read_at(file, 0, size).unwrap();
    probe.close(file);
    bytes
        .chunks(20)
        .take_while(|e| e.iter().any(|&b| b != 0))
        .count()
}

#[test]
fn queue_entries_are_staged_until_a_checkpoint_or_a_full_stage_writes_them() {
    use rockfish_store::consume_queue::STAGED_MAX_ENTRIES;
    let disk = MemDisk::new(7);
    let config = StoreConfig {
        consume_queue_entries: 4 * STAGED_MAX_ENTRIES,
        ..small_config()
    };
    let (mut store, _) = MessageStore::open(disk.clone(), config.clone(), 1_000).unwrap();
    let path = "consumequeue/Staged/0/00000000000000000000";
    let one = |i: u64| Sent::new("Staged", 0, vec![1; 32], &format!("k{i}"), "TagA");
    let mut sent: Vec<Sent> = Vec::new();
    for i in 0..10 {
        let mut m = [one(i)];
        put_all(&mut store, &mut m, 2_000).unwrap();
        sent.extend(m);
    }
    // Readable at once, from memory; the file holds nothing yet.
    verify(&store, &sent);
    assert_eq!(written_entries(&disk, path), 0);
    // A checkpoint writes them (then syncs them).
    store.checkpoint(3_000).unwrap();
    assert_eq!(written_entries(&disk, path), 10);
    // A full stage writes itself, on the put path.
    for i in 10..10 + STAGED_MAX_ENTRIES {
        let mut m = [one(i)];
        put_all(&mut store, &mut m, 4_000).unwrap();
        sent.extend(m);
    }
    assert_eq!(
        written_entries(&disk, path),
        10 + STAGED_MAX_ENTRIES as usize
    );
    // Staged entries a crash takes are rebuilt from the commit log.
    let mut m = [one(999)];
    put_all(&mut store, &mut m, 5_000).unwrap();
    sent.extend(m);
    store.sync().unwrap();
    let disk = store.crash();
    let (store, report) = MessageStore::open(disk, config, 6_000).unwrap();
    assert!(report.redispatched > 0, "{report:?}");
    verify(&store, &sent);
}

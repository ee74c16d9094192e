//! Replication in the store: a slave that appends what the master's log reads out, in
//! chunks of any size, holds the same records at the same offsets, with the same consume
//! queues and index, across segment rolls and a restart; data for the wrong offset, torn or
//! corrupted, is refused without writing past the last good unit.

use rockfish_store::record::{HostAddr, StoreMessage};
use rockfish_store::{MemDisk, MessageStore, StoreConfig, StoreError};

const NOW: u64 = 1_700_000_000_000;

fn open(disk: MemDisk) -> MessageStore<MemDisk> {
    MessageStore::open(disk, StoreConfig::simulated(), NOW)
        .unwrap()
        .0
}

/// A master holding `n` messages over two topics, big enough to roll 64 KiB segments.
fn master(n: usize) -> MessageStore<MemDisk> {
    let mut m = open(MemDisk::new(1));
    let host = HostAddr::V4([10, 0, 0, 1], 10911);
    for i in 0..n {
        let body = vec![b'a' + (i % 26) as u8; 700 + i % 300];
        let key = format!("k{i}");
        let props = format!("KEYS\u{1}{key}\u{2}TAGS\u{1}Tag{}\u{2}", i % 3);
        let msg = StoreMessage {
            topic: if i % 2 == 0 { "A" } else { "B" },
            queue_id: (i % 4) as u32,
            flag: 0,
            sys_flag: 0,
            born_timestamp: 1,
            born_host: host,
            store_host: host,
            reconsume_times: 0,
            prepared_transaction_offset: 0,
            body: &body,
            properties: props.as_bytes(),
        };
        m.put(&msg, NOW).unwrap();
    }
    m
}

/// Replicates everything the master holds into `slave`, `chunk` bytes at a time.
fn replicate(master: &MessageStore<MemDisk>, slave: &mut MessageStore<MemDisk>, chunk: usize) {
    loop {
        let at = slave.write_pos();
        let (data, next) = master.read_replicated(at, chunk).unwrap();
        if data.is_empty() {
            break;
        }
        assert_eq!(slave.append_replicated(at, &data).unwrap(), next);
    }
}

fn same(master: &MessageStore<MemDisk>, slave: &MessageStore<MemDisk>) {
    assert_eq!(slave.write_pos(), master.write_pos());
    for topic in ["A", "B"] {
        for q in 0..4 {
            assert_eq!(slave.max_offset(topic, q), master.max_offset(topic, q));
            let all = |s: &MessageStore<MemDisk>| {
                s.get(topic, q, 0, 10_000, usize::MAX, &|_| true)
                    .unwrap()
                    .messages
                    .into_iter()
                    .map(|r| (r.physical_offset(), r.bytes().clone()))
                    .collect::<Vec<_>>()
            };
            assert_eq!(all(slave), all(master), "{topic}/{q}");
        }
    }
    // The index is built too: every key finds its record, and only it.
    for topic in ["A", "B"] {
        for q in 0..4 {
            for rec in master
                .get(topic, q, 0, 10_000, usize::MAX, &|_| true)
                .unwrap()
                .messages
            {
                let key = String::from_utf8(rec.property("KEYS").unwrap().to_vec()).unwrap();
                let found = slave.query_by_key(topic, &key, 0, i64::MAX, 4).unwrap();
                let at: Vec<u64> = found.iter().map(|r| r.physical_offset()).collect();
                assert_eq!(at, vec![rec.physical_offset()], "{topic} key {key}");
            }
        }
    }
}

#[test]
fn a_slave_holds_the_same_log_queues_and_index_whatever_the_chunks() {
    let m = master(400);
    assert!(m.write_pos() > 4 * 65_536, "several segments rolled");
    for chunk in [1, 1_000, 64 * 1024, usize::MAX] {
        let mut s = open(MemDisk::new(2));
        replicate(&m, &mut s, chunk);
        same(&m, &s);
    }
}

#[test]
fn a_restarted_slave_keeps_what_it_replicated_and_goes_on() {
    let m = master(300);
    let mut s = open(MemDisk::new(2));
    let half = m.read_replicated(0, 100_000).unwrap();
    s.append_replicated(0, &half.0).unwrap();
    s.sync().unwrap();
    let disk = s.crash();
    disk.crash();
    let mut s = open(disk);
    assert_eq!(
        s.write_pos(),
        half.1,
        "recovery keeps the replicated records"
    );
    replicate(&m, &mut s, 7_000);
    same(&m, &s);
}

#[test]
fn wrong_torn_or_corrupt_data_is_refused() {
    let m = master(50);
    let mut s = open(MemDisk::new(2));
    let (data, _) = m.read_replicated(0, 10_000).unwrap();
    let first = u32::from_be_bytes(data[..4].try_into().unwrap()) as usize;
    // Not at the slave's end.
    assert!(matches!(
        s.append_replicated(first as u64, &data[first..]),
        Err(StoreError::Invalid { .. })
    ));
    // Torn: a partial record is refused, the whole ones before it kept.
    let torn = &data[..first + 10];
    assert!(s.append_replicated(0, torn).is_err());
    assert_eq!(s.write_pos(), first as u64);
    // Corrupt: a flipped body byte fails the record's CRC; nothing of it is written.
    let mut bad = data[first..].to_vec();
    bad[200] ^= 0x40;
    assert!(s.append_replicated(first as u64, &bad).is_err());
    assert_eq!(s.write_pos(), first as u64);
    // The right data still goes in.
    replicate(&m, &mut s, 3_000);
    same(&m, &s);
}

#[test]
fn a_replica_cut_back_to_a_common_point_follows_another_history() {
    // Two masters that share a prefix and then diverge (an old master's tail, a new
    // master's history): the replica that holds the old tail is cut back to the shared point
    // and then holds the new history exactly, also across a restart.
    let new = master(300);
    let mut old = open(MemDisk::new(3));
    let (shared, cut) = new.read_replicated(0, 150_000).unwrap();
    old.append_replicated(0, &shared).unwrap();
    // The old master's own tail, which the new one never had.
    let host = HostAddr::V4([10, 0, 0, 9], 10911);
    for i in 0..30 {
        let body = vec![b'z'; 333];
        let props = format!("KEYS\u{1}stray{i}\u{2}");
        let msg = StoreMessage {
            topic: "A",
            queue_id: 0,
            flag: 0,
            sys_flag: 0,
            born_timestamp: 1,
            born_host: host,
            store_host: host,
            reconsume_times: 0,
            prepared_transaction_offset: 0,
            body: &body,
            properties: props.as_bytes(),
        };
        old.put(&msg, NOW).unwrap();
    }
    assert!(old.write_pos() > cut);
    assert_eq!(
        old.query_by_key("A", "stray3", 0, i64::MAX, 4)
            .unwrap()
            .len(),
        1
    );
    // Not a record boundary: refused, nothing cut.
    let end = old.write_pos();
    assert!(matches!(
        old.truncate_log(cut + 1),
        Err(StoreError::Invalid { .. })
    ));
    assert!(matches!(
        old.truncate_log(end + 1),
        Err(StoreError::Invalid { .. })
    ));
    assert_eq!(old.write_pos(), end);
    old.truncate_log(cut).unwrap();
    assert_eq!(old.write_pos(), cut);
    assert!(
        old.query_by_key("A", "stray3", 0, i64::MAX, 4)
            .unwrap()
            .is_empty()
    );
    replicate(&new, &mut old, 4_096);
    same(&new, &old);
    assert!(
        old.query_by_key("A", "stray3", 0, i64::MAX, 4)
            .unwrap()
            .is_empty()
    );
    old.sync().unwrap();
    let disk = old.crash();
    disk.power_loss();
    let old = open(disk);
    same(&new, &old);
}

#[test]
fn a_cut_replica_indexes_the_new_history_across_checkpoints_and_crashes() {
    // The cut is checkpointed with the index as it stood at the cut; the new history's
    // records land below the cut tail's offsets and must be indexed (and found) whether the
    // replica then checkpoints, crashes, or loses power at any point.
    let new = master(300);
    for (checkpoint_after, power) in [(false, false), (false, true), (true, false), (true, true)] {
        let mut old = open(MemDisk::new(4));
        let (shared, cut) = new.read_replicated(0, 120_000).unwrap();
        old.append_replicated(0, &shared).unwrap();
        let host = HostAddr::V4([10, 0, 0, 9], 10911);
        for i in 0..60 {
            let body = vec![b'z'; 900];
            let props = format!("KEYS\u{1}stray{i}\u{2}");
            let msg = StoreMessage {
                topic: "B",
                queue_id: 1,
                flag: 0,
                sys_flag: 0,
                born_timestamp: 1,
                born_host: host,
                store_host: host,
                reconsume_times: 0,
                prepared_transaction_offset: 0,
                body: &body,
                properties: props.as_bytes(),
            };
            old.put(&msg, NOW).unwrap();
        }
        // The tail is checkpointed (its index entries durable) before the cut.
        old.sync().unwrap();
        old.checkpoint(NOW).unwrap();
        let tail_end = old.write_pos();
        old.truncate_log(cut).unwrap();
        // Part of the new history, ending below where the cut tail ended.
        let (part, next) = new.read_replicated(cut, 20_000).unwrap();
        assert!(next < tail_end);
        old.append_replicated(cut, &part).unwrap();
        if checkpoint_after {
            old.sync().unwrap();
            old.checkpoint(NOW).unwrap();
        }
        let disk = old.crash();
        if power {
            disk.power_loss();
        } else {
            disk.crash();
        }
        let mut old = open(disk);
        replicate(&new, &mut old, 8_192);
        same(&new, &old);
        assert!(
            old.query_by_key("B", "stray7", 0, i64::MAX, 4)
                .unwrap()
                .is_empty()
        );
    }
}

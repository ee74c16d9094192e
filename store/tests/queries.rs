//! The store's read side: get statuses and limits, tag filtering, offset by timestamp, key
//! queries within a time range, delay-topic tag codes and unqueued transaction halves.

mod common;

use common::{Sent, props, put_all, small_config};
use rockfish_store::message_store::{SCHEDULE_TOPIC, tags_code};
use rockfish_store::record::{HostAddr, StoreMessage, java_string_hash};
use rockfish_store::{Boundary, GetStatus, MemDisk, MessageStore};

fn store_with(n: usize) -> (MessageStore<MemDisk>, Vec<Sent>) {
    let (mut store, _) = MessageStore::open(MemDisk::new(1), small_config(), 0).unwrap();
    let mut sent = Vec::new();
    for i in 0..n {
        let tag = if i % 3 == 0 { "TagA" } else { "TagB" };
        let mut m = vec![Sent::new(
            "TopicA",
            0,
            vec![i as u8; 200],
            &format!("k{i}"),
            tag,
        )];
        // Store time advances 10 s per message.
        put_all(&mut store, &mut m, 1_000_000 + 10_000 * i as u64).unwrap();
        sent.extend(m);
    }
    (store, sent)
}

#[test]
fn get_statuses_follow_rocketmq() {
    let (store, _) = store_with(10);
    let all = |_| true;
    assert_eq!(
        store.get("Nope", 0, 0, 32, 1 << 20, &all).unwrap().status,
        GetStatus::NoMatchedLogicQueue
    );
    let found = store.get("TopicA", 0, 0, 32, 1 << 20, &all).unwrap();
    assert_eq!(
        (found.status, found.messages.len(), found.next_offset),
        (GetStatus::Found, 10, 10)
    );
    assert_eq!((found.min_offset, found.max_offset), (0, 10));
    let one = store.get("TopicA", 0, 10, 32, 1 << 20, &all).unwrap();
    assert_eq!(
        (one.status, one.next_offset),
        (GetStatus::OffsetOverflowOne, 10)
    );
    let bad = store.get("TopicA", 0, 99, 32, 1 << 20, &all).unwrap();
    assert_eq!(
        (bad.status, bad.next_offset),
        (GetStatus::OffsetOverflowBadly, 10)
    );
    let limited = store.get("TopicA", 0, 2, 3, 1 << 20, &all).unwrap();
    assert_eq!((limited.messages.len(), limited.next_offset), (3, 5));
    assert_eq!(limited.messages[0].queue_offset(), 2);
    // The byte limit stops before a message that would exceed it, but always returns one.
    let size = found.messages[0].total_size() as usize;
    let by_bytes = store.get("TopicA", 0, 0, 32, size * 2 + 1, &all).unwrap();
    assert_eq!(by_bytes.messages.len(), 2);
    let at_least_one = store.get("TopicA", 0, 0, 32, 1, &all).unwrap();
    assert_eq!(at_least_one.messages.len(), 1);
}

#[test]
fn tag_filter_skips_and_advances() {
    let (store, sent) = store_with(10);
    let tag_a = java_string_hash("TagA") as i64;
    let got = store
        .get("TopicA", 0, 0, 32, 1 << 20, &|code| code == tag_a)
        .unwrap();
    let offsets: Vec<u64> = got.messages.iter().map(|m| m.queue_offset()).collect();
    assert_eq!(offsets, vec![0, 3, 6, 9]);
    assert_eq!(got.next_offset, 10);
    assert!(
        got.messages
            .iter()
            .all(|m| sent[m.queue_offset() as usize].matches(m))
    );
    // The count limits messages returned, not entries scanned.
    let two = store
        .get("TopicA", 0, 1, 2, 1 << 20, &|code| code == tag_a)
        .unwrap();
    let offsets: Vec<u64> = two.messages.iter().map(|m| m.queue_offset()).collect();
    assert_eq!(
        (two.status, offsets, two.next_offset),
        (GetStatus::Found, vec![3, 6], 7)
    );
    let none = store.get("TopicA", 0, 1, 2, 1 << 20, &|_| false).unwrap();
    assert_eq!(
        (none.status, none.next_offset),
        (GetStatus::NoMatchedMessage, 10)
    );
}

#[test]
fn offset_by_timestamp_finds_both_boundaries() {
    let (store, _) = store_with(10);
    // Message i was stored at 1_000_000 + 10_000 * i.
    let at = |ts, b| store.offset_by_time("TopicA", 0, ts, b).unwrap();
    assert_eq!(at(0, Boundary::Lower), 0);
    assert_eq!(at(1_000_000, Boundary::Lower), 0);
    assert_eq!(at(1_000_001, Boundary::Lower), 1);
    assert_eq!(at(1_050_000, Boundary::Lower), 5);
    assert_eq!(at(1_055_000, Boundary::Lower), 6);
    assert_eq!(at(9_999_999, Boundary::Lower), 10);
    assert_eq!(at(1_055_000, Boundary::Upper), 5);
    assert_eq!(at(1_050_000, Boundary::Upper), 5);
    assert_eq!(at(0, Boundary::Upper), 0);
    assert_eq!(at(9_999_999, Boundary::Upper), 9);
    assert_eq!(
        store.offset_by_time("Nope", 0, 5, Boundary::Lower).unwrap(),
        0
    );
}

#[test]
fn key_query_honours_the_time_range_and_confirms_hits() {
    let (store, sent) = store_with(20);
    // Every message carries KEYS "k<i> shared" and UNIQ_KEY "U-k<i>".
    let hits = store.query_by_key("TopicA", "k7", 0, i64::MAX, 10).unwrap();
    assert_eq!(hits.len(), 1);
    assert!(sent[7].matches(&hits[0]));
    let shared = store
        .query_by_key("TopicA", "shared", 1_050_000, 1_090_000, 100)
        .unwrap();
    let mut offsets: Vec<u64> = shared.iter().map(|m| m.queue_offset()).collect();
    offsets.sort();
    assert_eq!(offsets, vec![5, 6, 7, 8, 9]);
    assert_eq!(
        store
            .query_by_key("TopicA", "shared", 0, i64::MAX, 3)
            .unwrap()
            .len(),
        3
    );
    assert!(
        store
            .query_by_key("TopicB", "k7", 0, i64::MAX, 10)
            .unwrap()
            .is_empty(),
        "topic is part of the key"
    );
    assert!(
        store
            .query_by_key("TopicA", "k77", 0, i64::MAX, 10)
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .query_by_key("TopicA", "k7", 2_000_000, 3_000_000, 10)
            .unwrap()
            .is_empty()
    );
}

fn raw<'a>(topic: &'a str, queue_id: u32, sys_flag: i32, properties: &'a [u8]) -> StoreMessage<'a> {
    StoreMessage {
        topic,
        queue_id,
        flag: 0,
        sys_flag,
        born_timestamp: 0,
        born_host: HostAddr::UNSPECIFIED,
        store_host: HostAddr::UNSPECIFIED,
        reconsume_times: 0,
        prepared_transaction_offset: 0,
        body: b"b",
        properties,
    }
}

#[test]
fn delay_topic_tag_code_is_the_delivery_time() {
    let (mut store, _) = MessageStore::open(MemDisk::new(2), small_config(), 0).unwrap();
    let p = props(&[("DELAY", "3"), ("TAGS", "TagA")]);
    store.put(&raw(SCHEDULE_TOPIC, 2, 0, &p), 5_000).unwrap();
    let e = store.entry(SCHEDULE_TOPIC, 2, 0).unwrap().unwrap();
    assert_eq!(e.tags_code, 5_000 + 10_000, "level 3 is 10 s by default");
    assert_eq!(
        tags_code(store.config(), "Other", &p, 5_000),
        java_string_hash("TagA") as i64
    );
    // Recovery re-derives the same code from the stored record.
    let disk = store.crash();
    disk.crash();
    let (store, _) = MessageStore::open(disk, small_config(), 9).unwrap();
    assert_eq!(
        store
            .entry(SCHEDULE_TOPIC, 2, 0)
            .unwrap()
            .unwrap()
            .tags_code,
        15_000
    );
}

#[test]
fn prepared_and_rollback_halves_are_logged_but_not_queued() {
    let (mut store, _) = MessageStore::open(MemDisk::new(3), small_config(), 0).unwrap();
    let p = props(&[("UNIQ_KEY", "TX1")]);
    let prepared = store.put(&raw("TopicT", 0, 0x1 << 2, &p), 1).unwrap();
    store.put(&raw("TopicT", 0, 0x3 << 2, &p), 2).unwrap();
    assert_eq!(
        store.max_offset("TopicT", 0),
        0,
        "half messages stay out of the consume queue"
    );
    store.put(&raw("TopicT", 0, 0x2 << 2, &p), 3).unwrap(); // commit
    assert_eq!(store.max_offset("TopicT", 0), 1);
    assert_eq!(
        store.read(prepared.first.offset).unwrap().sys_flag(),
        0x1 << 2
    );
    assert_eq!(
        store
            .query_by_key("TopicT", "TX1", 0, i64::MAX, 10)
            .unwrap()
            .len(),
        3,
        "all halves are indexed"
    );
    let disk = store.crash();
    disk.crash();
    let (store, _) = MessageStore::open(disk, small_config(), 9).unwrap();
    assert_eq!(store.max_offset("TopicT", 0), 1);
}

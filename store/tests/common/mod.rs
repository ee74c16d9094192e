//! Helpers shared by the store's integration tests.
#![allow(dead_code)]

use rockfish_store::record::{HostAddr, NAME_VALUE_SEPARATOR, PROPERTY_SEPARATOR};
use rockfish_store::{
    Disk, IndexConfig, MessageStore, StoreConfig, StoreError, StoreMessage, StoredRecord,
};

/// Small geometry so tests roll segments, queue files and index files often.
pub fn small_config() -> StoreConfig {
    StoreConfig {
        commitlog_segment_size: 64 * 1024,
        consume_queue_entries: 64,
        index: IndexConfig {
            hash_slots: 61,
            max_entries: 128,
        },
        ..StoreConfig::default()
    }
}

/// Encodes properties as a client would: "k\x01v\x02...".
pub fn props(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in pairs {
        out.extend_from_slice(k.as_bytes());
        out.push(NAME_VALUE_SEPARATOR);
        out.extend_from_slice(v.as_bytes());
        out.push(PROPERTY_SEPARATOR);
    }
    out
}

/// A message the tests can own and later compare against what the store returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub topic: String,
    pub queue_id: u32,
    pub body: Vec<u8>,
    pub properties: Vec<u8>,
    pub key: String,
    /// Filled in once stored.
    pub offset: u64,
    pub end: u64,
    pub queue_offset: u64,
}

impl Sent {
    pub fn new(topic: &str, queue_id: u32, body: Vec<u8>, key: &str, tag: &str) -> Sent {
        let properties = props(&[
            ("TAGS", tag),
            ("KEYS", &format!("{key} shared")),
            ("UNIQ_KEY", &format!("U-{key}")),
        ]);
        Sent {
            topic: topic.into(),
            queue_id,
            body,
            properties,
            key: key.into(),
            offset: 0,
            end: 0,
            queue_offset: 0,
        }
    }

    pub fn message(&self) -> StoreMessage<'_> {
        StoreMessage {
            topic: &self.topic,
            queue_id: self.queue_id,
            flag: 0,
            sys_flag: 0,
            born_timestamp: 1_700_000_000_000,
            born_host: HostAddr::V4([127, 0, 0, 1], 40000),
            store_host: HostAddr::V4([127, 0, 0, 1], 10911),
            reconsume_times: 0,
            prepared_transaction_offset: 0,
            body: &self.body,
            properties: &self.properties,
        }
    }

    /// Does a record returned by the store carry exactly this message?
    pub fn matches(&self, rec: &StoredRecord) -> bool {
        rec.topic() == self.topic
            && rec.queue_id() == self.queue_id
            && rec.body()[..] == self.body[..]
            && rec.physical_offset() == self.offset
            && rec.queue_offset() == self.queue_offset
            && rec.properties().starts_with(&self.properties)
    }
}

/// Stores `batch`, filling in where each landed.
pub fn put_all<D: Disk>(
    store: &mut MessageStore<D>,
    batch: &mut [Sent],
    now: u64,
) -> Result<(), StoreError> {
    let msgs: Vec<StoreMessage<'_>> = batch.iter().map(Sent::message).collect();
    let res = store.put_batch(&msgs, now)?;
    let appended = store.last_appended().to_vec();
    assert_eq!(appended.len(), batch.len());
    for (s, a) in batch.iter_mut().zip(appended) {
        s.offset = a.offset;
        s.end = a.offset + a.size as u64;
        s.queue_offset = a.queue_offset;
    }
    assert_eq!(res.end, batch.last().unwrap().end);
    Ok(())
}

/// Retries a read that may hit an injected transient read error.
pub fn retry<T>(mut f: impl FnMut() -> Result<T, StoreError>) -> T {
    let mut last = None;
    for _ in 0..16 {
        match f() {
            Ok(v) => return v,
            Err(e) => last = Some(e),
        }
    }
    panic!("read kept failing: {last:?}");
}

/// Checks that the store holds exactly `expected` (in commit log order): every message reads
/// back intact by offset, through its consume queue at its queue offset, and by key through
/// the index; each queue holds nothing else.
pub fn verify<D: Disk>(store: &MessageStore<D>, expected: &[Sent]) {
    use std::collections::BTreeMap;
    let mut per_queue: BTreeMap<(String, u32), Vec<&Sent>> = BTreeMap::new();
    for s in expected {
        per_queue
            .entry((s.topic.clone(), s.queue_id))
            .or_default()
            .push(s);
    }
    for ((topic, qid), msgs) in &per_queue {
        assert_eq!(
            store.max_offset(topic, *qid),
            msgs.len() as u64,
            "{topic}/{qid}: consume queue length differs from the messages in the log"
        );
        for (i, s) in msgs.iter().enumerate() {
            assert_eq!(
                s.queue_offset, i as u64,
                "{topic}/{qid}: queue offsets are dense"
            );
            let rec = retry(|| store.read(s.offset));
            assert!(
                s.matches(&rec),
                "record at {} differs from what was stored",
                s.offset
            );
            let got = retry(|| store.get(topic, *qid, i as u64, 1, 1 << 20, &|_| true));
            assert_eq!(got.messages.len(), 1, "{topic}/{qid}@{i}: {:?}", got.status);
            assert!(
                s.matches(&got.messages[0]),
                "{topic}/{qid}@{i}: consume queue points at the wrong record"
            );
            // A transient read flip can hide a hit from one query (never invent one): retry.
            let found = (0..16).any(|_| {
                store
                    .query_by_key(topic, &format!("U-{}", s.key), 0, i64::MAX, 8)
                    .is_ok_and(|hits| hits.iter().any(|r| s.matches(r)))
            });
            assert!(found, "index misses U-{} (offset {})", s.key, s.offset);
        }
    }
    for (topic, qid) in store
        .queue_ids()
        .map(|(t, q)| (t.to_string(), q))
        .collect::<Vec<_>>()
    {
        if !per_queue.contains_key(&(topic.clone(), qid)) {
            assert_eq!(
                store.max_offset(&topic, qid),
                store.min_offset(&topic, qid),
                "{topic}/{qid} holds unexpected entries"
            );
        }
    }
}

//! What pop consumption keeps: checkpoints in flight (messages handed out and not yet acked
//! or revived), their due times, orderly queues' locks, and the journal that makes them
//! survive a crash.
//!
//! Every checkpoint and every ack is a small record of the commit log in the hidden topic
//! [`POP_JOURNAL_TOPIC`] (one queue), written before the request is answered, so it rides
//! the same page cache and group commit as the messages (Apache writes its CKs and acks to
//! the revive topic the same way). A start replays the journal from the earliest live
//! checkpoint's record, whose position is journaled (pseudo-group [`POP_PROGRESS_GROUP`])
//! with every offsets snapshot.

use std::collections::{BTreeMap, BTreeSet};

use rockfish_store::config::ConsumerOffsetTable;
use rockfish_store::{Disk, MessageStore, StoreResult};

/// The journal's topic: one queue, never routed, never registered, refused to producers.
pub const POP_JOURNAL_TOPIC: &str = "rmq_sys_ROCKFISH_POP_JOURNAL";
/// The offset journal's pseudo-group recording where the pop journal's replay starts.
pub const POP_PROGRESS_GROUP: &str = "rmq_sys_ROCKFISH_POP_PROGRESS";

/// One checkpoint: a pop's read of one queue. Acks and changes of invisibility name it by
/// this key (the receipt's ckQueueOffset and popTime, the real topic, group and queue).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CkKey {
    pub topic: String,
    pub group: String,
    pub queue_id: u32,
    pub start: u64,
    pub pop_time: i64,
}

#[derive(Debug, Clone)]
pub(crate) struct Ck {
    /// When its un-acked messages come back (broker time, ms).
    pub due: u64,
    /// Queue offsets handed out and neither acked nor revived.
    pub pending: BTreeSet<u64>,
    /// The journal queue offset of its record (replay must start at or before it).
    pub journal_at: u64,
}

/// An orderly queue's lock: the messages of its last pop, blocking the queue for the group
/// until acked or until their invisibility lapses (Apache's ConsumerOrderInfoManager). Kept
/// in memory: a restart forgets it, and the messages come again from the committed offset
/// at once (in order; redelivered, never lost).
#[derive(Debug, Clone)]
pub(crate) struct OrderLock {
    pub pop_time: i64,
    pub attempt_id: Option<String>,
    /// The popped offsets, each with whether it is acked and when it becomes visible again.
    pub offsets: Vec<(u64, bool, u64)>,
    /// Where the read stopped (committed once every offset is acked).
    pub next: u64,
    /// Deliveries before this one, per offset (the message's reconsume times).
    pub counts: BTreeMap<u64, u32>,
}

impl OrderLock {
    /// Whether a pop (with `attempt_id`) must pass the queue over.
    pub fn blocks(&self, now: u64, attempt_id: Option<&str>) -> bool {
        if attempt_id.is_some() && attempt_id == self.attempt_id.as_deref() {
            return false; // the same request again: it gets the same messages
        }
        self.offsets
            .iter()
            .any(|&(_, acked, visible_at)| !acked && now < visible_at)
    }

    /// The offset to commit: the first one not acked, or past the read.
    pub fn commit_point(&self) -> u64 {
        self.offsets
            .iter()
            .find(|&&(_, acked, _)| !acked)
            .map_or(self.next, |&(o, _, _)| o)
    }
}

/// A journal record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// Messages handed out under a checkpoint, due back at `due` unless acked.
    Ck {
        key: CkKey,
        due: u64,
        invisible_ms: u64,
        offsets: Vec<u64>,
    },
    /// Messages of a checkpoint decided: acked or revived.
    Ack { key: CkKey, offsets: Vec<u64> },
    /// A message moved from its checkpoint to one of its own (a change of invisibility):
    /// same topic, group and queue, started at the message, popped at `to_pop_time`.
    Move {
        from: CkKey,
        to_pop_time: i64,
        due: u64,
        offset: u64,
    },
}

impl Entry {
    /// A move's new checkpoint.
    pub fn moved_to(from: &CkKey, to_pop_time: i64, offset: u64) -> CkKey {
        CkKey {
            start: offset,
            pop_time: to_pop_time,
            ..from.clone()
        }
    }
}

fn join(offsets: &[u64]) -> String {
    let v: Vec<String> = offsets.iter().map(u64::to_string).collect();
    v.join(",")
}

impl Entry {
    /// `ck topic@group queue start popTime due invisible o1,o2` or
    /// `ack topic@group queue start popTime o1,o2`: names never hold spaces or `@`.
    pub fn encode(&self) -> String {
        match self {
            Entry::Ck {
                key,
                due,
                invisible_ms,
                offsets,
            } => format!(
                "ck {}@{} {} {} {} {due} {invisible_ms} {}",
                key.topic,
                key.group,
                key.queue_id,
                key.start,
                key.pop_time,
                join(offsets)
            ),
            Entry::Ack { key, offsets } => format!(
                "ack {}@{} {} {} {} {}",
                key.topic,
                key.group,
                key.queue_id,
                key.start,
                key.pop_time,
                join(offsets)
            ),
            Entry::Move {
                from,
                to_pop_time,
                due,
                offset,
            } => format!(
                "mv {}@{} {} {} {} {to_pop_time} {due} {offset}",
                from.topic, from.group, from.queue_id, from.start, from.pop_time
            ),
        }
    }

    pub fn decode(body: &[u8]) -> Option<Entry> {
        let text = std::str::from_utf8(body).ok()?;
        let f: Vec<&str> = text.split(' ').collect();
        let (topic, group) = f.get(1)?.split_once('@')?;
        let key = CkKey {
            topic: topic.to_string(),
            group: group.to_string(),
            queue_id: f.get(2)?.parse().ok()?,
            start: f.get(3)?.parse().ok()?,
            pop_time: f.get(4)?.parse().ok()?,
        };
        let offsets =
            |s: &str| -> Option<Vec<u64>> { s.split(',').map(|o| o.parse().ok()).collect() };
        match (f[0], f.len()) {
            ("ck", 8) => Some(Entry::Ck {
                key,
                due: f[5].parse().ok()?,
                invisible_ms: f[6].parse().ok()?,
                offsets: offsets(f[7])?,
            }),
            ("ack", 6) => Some(Entry::Ack {
                key,
                offsets: offsets(f[5])?,
            }),
            ("mv", 8) => Some(Entry::Move {
                from: key,
                to_pop_time: f[5].parse().ok()?,
                due: f[6].parse().ok()?,
                offset: f[7].parse().ok()?,
            }),
            _ => None,
        }
    }
}

/// Pop consumption's state.
#[derive(Debug, Default)]
pub(crate) struct PopTable {
    cks: BTreeMap<CkKey, Ck>,
    /// Checkpoints by due time.
    due: BTreeSet<(u64, CkKey)>,
    /// Live checkpoints per journal position: the first is where a replay must start.
    journal_refs: BTreeMap<u64, u32>,
    /// Messages pending in all checkpoints (the cap's count).
    pending: usize,
    /// A pop retry topic's topic: a message revived there wakes pops held on the topic.
    retry_origin: BTreeMap<String, String>,
    /// Orderly queues' locks, by (topic, group, queue).
    pub orders: BTreeMap<(String, String, u32), OrderLock>,
}

impl PopTable {
    pub fn insert(&mut self, key: CkKey, ck: Ck) {
        if let Some(old) = self.cks.remove(&key) {
            self.unindex(&key, &old);
        }
        self.pending += ck.pending.len();
        self.due.insert((ck.due, key.clone()));
        *self.journal_refs.entry(ck.journal_at).or_default() += 1;
        self.cks.insert(key, ck);
        self.check();
    }

    fn unindex(&mut self, key: &CkKey, ck: &Ck) {
        self.pending -= ck.pending.len();
        self.due.remove(&(ck.due, key.clone()));
        if let Some(n) = self.journal_refs.get_mut(&ck.journal_at) {
            *n -= 1;
            if *n == 0 {
                self.journal_refs.remove(&ck.journal_at);
            }
        }
    }

    pub fn get(&self, key: &CkKey) -> Option<&Ck> {
        self.cks.get(key)
    }

    pub fn contains(&self, key: &CkKey) -> bool {
        self.cks.contains_key(key)
    }

    /// Decides `offsets` of a checkpoint (acked, moved or revived); returns how many were
    /// pending. A checkpoint with nothing left pending is dropped.
    pub fn decide(&mut self, key: &CkKey, offsets: &[u64]) -> usize {
        let Some(ck) = self.cks.get_mut(key) else {
            return 0;
        };
        let before = ck.pending.len();
        for o in offsets {
            ck.pending.remove(o);
        }
        let decided = before - ck.pending.len();
        self.pending -= decided;
        if ck.pending.is_empty() {
            let ck = self.cks.remove(key).expect("present");
            self.pending += ck.pending.len(); // unindex subtracts what is left: nothing
            self.unindex(key, &ck);
        }
        self.check();
        decided
    }

    /// Moves a checkpoint's due time (a failed revive tries again later).
    pub fn postpone(&mut self, key: &CkKey, due: u64) {
        if let Some(ck) = self.cks.get_mut(key) {
            self.due.remove(&(ck.due, key.clone()));
            ck.due = due;
            self.due.insert((due, key.clone()));
        }
    }

    /// Checkpoints due by `now`, earliest first.
    pub fn due_by(&self, now: u64) -> Vec<CkKey> {
        self.due
            .iter()
            .take_while(|(d, _)| *d <= now)
            .map(|(_, k)| k.clone())
            .collect()
    }

    pub fn next_due(&self) -> Option<u64> {
        self.due.first().map(|(d, _)| *d)
    }

    /// Messages in flight under checkpoints.
    pub fn pending(&self) -> usize {
        self.pending
    }

    pub fn checkpoints(&self) -> usize {
        self.cks.len()
    }

    /// Where a replay must start: the earliest live checkpoint's record, else `end`.
    pub fn replay_from(&self, end: u64) -> u64 {
        self.journal_refs
            .first_key_value()
            .map_or(end, |(at, _)| *at)
    }

    pub fn learn_retry_topic(&mut self, retry: String, topic: &str) {
        self.retry_origin
            .entry(retry)
            .or_insert_with(|| topic.to_string());
    }

    pub fn retry_origin(&self, retry: &str) -> Option<&str> {
        self.retry_origin.get(retry).map(String::as_str)
    }

    /// Forgets every checkpoint and lock of a group (its topic deleted or the group reset).
    pub fn drop_topic(&mut self, topic: &str) {
        let keys: Vec<CkKey> = self
            .cks
            .keys()
            .filter(|k| k.topic == topic)
            .cloned()
            .collect();
        for k in keys {
            let ck = self.cks.remove(&k).expect("present");
            self.unindex(&k, &ck);
        }
        self.orders.retain(|(t, _, _), _| t != topic);
        self.check();
    }

    /// The invariants, checked in debug builds.
    fn check(&self) {
        debug_assert_eq!(self.due.len(), self.cks.len());
        debug_assert_eq!(
            self.pending,
            self.cks.values().map(|c| c.pending.len()).sum::<usize>()
        );
        debug_assert_eq!(
            self.journal_refs
                .values()
                .map(|&n| n as usize)
                .sum::<usize>(),
            self.cks.len()
        );
    }

    /// Rebuilds the table from the journal, from the progress the offsets journal recorded
    /// (taken out of `journaled`). A checkpoint's record also proves its pop moved the
    /// group's offset past its messages: an offset record lost behind it is restored (else
    /// a message acked since would be popped again). Returns the table and the records read.
    pub fn load<D: Disk>(
        store: &MessageStore<D>,
        journaled: &mut ConsumerOffsetTable,
    ) -> StoreResult<(PopTable, u64)> {
        let key = ConsumerOffsetTable::key(POP_JOURNAL_TOPIC, POP_PROGRESS_GROUP);
        let progress = journaled
            .offset_table
            .remove(&key)
            .and_then(|m| m.get(&0).copied())
            .unwrap_or(0);
        let (min, end) = (
            store.min_offset(POP_JOURNAL_TOPIC, 0),
            store.max_offset(POP_JOURNAL_TOPIC, 0),
        );
        if progress < min {
            tracing::warn!(
                progress,
                min,
                "pop journal: records before the replay's start were deleted; checkpoints recorded there are forgotten"
            );
        }
        let mut t = PopTable::default();
        let mut read = 0;
        for at in progress.max(min)..end {
            let entry = match store.entry(POP_JOURNAL_TOPIC, 0, at)? {
                Some(e) => match store.read(e.offset) {
                    Ok(rec) => Entry::decode(&rec.body()),
                    Err(e) => {
                        tracing::warn!(offset = at, error = %e, "pop journal record unreadable");
                        None
                    }
                },
                None => None,
            };
            read += 1;
            match entry {
                Some(Entry::Ck {
                    key, due, offsets, ..
                }) => {
                    if let Some(&last) = offsets.iter().max() {
                        let cur = journaled.get(&key.topic, &key.group, key.queue_id);
                        if cur.is_none_or(|c| c <= last)
                            && !crate::buggify::bug("broker.pop-offset-unjournaled")
                        {
                            journaled.set(&key.topic, &key.group, key.queue_id, last + 1);
                        }
                    }
                    let pending: BTreeSet<u64> = offsets.into_iter().collect();
                    if !pending.is_empty() {
                        t.insert(
                            key,
                            Ck {
                                due,
                                pending,
                                journal_at: at,
                            },
                        );
                    }
                }
                Some(Entry::Ack { key, offsets }) => {
                    t.decide(&key, &offsets);
                }
                Some(Entry::Move {
                    from,
                    to_pop_time,
                    due,
                    offset,
                }) => {
                    // A move is journaled only for a message pending in `from`, so the new
                    // checkpoint was made, whether or not `from` is in the table: the replay
                    // may start past `from`'s record (once `from` was done and the move's
                    // checkpoint the earliest live one, a snapshot journals that start).
                    t.decide(&from, &[offset]);
                    let to = Entry::moved_to(&from, to_pop_time, offset);
                    t.insert(
                        to,
                        Ck {
                            due,
                            pending: [offset].into_iter().collect(),
                            journal_at: at,
                        },
                    );
                }
                None => tracing::warn!(offset = at, "pop journal record malformed; passed over"),
            }
        }
        Ok((t, read))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(start: u64) -> CkKey {
        CkKey {
            topic: "T".into(),
            group: "G".into(),
            queue_id: 1,
            start,
            pop_time: 1_700_000_000_000,
        }
    }

    #[test]
    fn journal_records_round_trip_and_garbage_is_refused() {
        let ck = Entry::Ck {
            key: key(5),
            due: 9,
            invisible_ms: 4,
            offsets: vec![5, 7],
        };
        assert_eq!(Entry::decode(ck.encode().as_bytes()), Some(ck));
        let ack = Entry::Ack {
            key: key(5),
            offsets: vec![7],
        };
        assert_eq!(Entry::decode(ack.encode().as_bytes()), Some(ack));
        let mv = Entry::Move {
            from: key(5),
            to_pop_time: 7,
            due: 99,
            offset: 6,
        };
        assert_eq!(Entry::decode(mv.encode().as_bytes()), Some(mv));
        for bad in [
            "",
            "ck",
            "ck T@G 1 5 1 9 4",
            "ack TG 1 5 1 7",
            "ack T@G 1 5 1 x",
            "ck T@G 1 5 1 9 4 5 6",
        ] {
            assert_eq!(Entry::decode(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn the_table_counts_what_is_pending_and_where_replay_starts() {
        let mut t = PopTable::default();
        for (start, at) in [(5, 10), (8, 11)] {
            t.insert(
                key(start),
                Ck {
                    due: 100 + start,
                    pending: [start, start + 1].into_iter().collect(),
                    journal_at: at,
                },
            );
        }
        assert_eq!((t.pending(), t.replay_from(99)), (4, 10));
        assert_eq!(t.due_by(105), vec![key(5)]);
        assert_eq!(t.decide(&key(5), &[5, 6, 7]), 2);
        assert!(!t.contains(&key(5)));
        assert_eq!((t.pending(), t.replay_from(99)), (2, 11));
        t.postpone(&key(8), 50);
        assert_eq!(t.next_due(), Some(50));
        t.drop_topic("T");
        assert_eq!((t.checkpoints(), t.replay_from(99)), (0, 99));
    }

    #[test]
    fn an_orderly_lock_blocks_until_acked_or_visible() {
        let mut l = OrderLock {
            pop_time: 0,
            attempt_id: Some("a".into()),
            offsets: vec![(3, false, 100), (4, false, 100)],
            next: 5,
            counts: BTreeMap::new(),
        };
        assert!(l.blocks(50, None));
        assert!(!l.blocks(50, Some("a")));
        assert!(!l.blocks(100, None));
        assert_eq!(l.commit_point(), 3);
        l.offsets[0].1 = true;
        assert_eq!(l.commit_point(), 4);
        l.offsets[1].1 = true;
        assert_eq!(l.commit_point(), 5);
        assert!(!l.blocks(50, None));
    }
}

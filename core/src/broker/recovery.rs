//! Consumer offsets after a recovery.
//!
//! Under ASYNC_FLUSH a message is acknowledged and served once appended, so a power loss can
//! take messages consumers have already seen; recovery then ends a queue at a lower max
//! offset, and the next messages stored reuse the lost offsets. A consumer offset pointing
//! past the recovered end would skip them for good (RocketMQ #8239 under ASYNC_FLUSH). Two
//! corrections:
//!
//! - `correct_consumer_offsets`: at start, committed offsets beyond a queue's recovered max
//!   offset are clamped to it and logged per group and queue.
//! - `OffsetFences`: a consumer that lived through the broker's restart still holds its
//!   offset in memory and pulls or commits it again, perhaps after several restarts. Its
//!   group's committed offset (as corrected at start, then raised by its commits) is what
//!   the broker knows the group consumed of the history it holds now; a group with nothing
//!   committed on the queue is trusted up to the recovered max offset. A pull past that,
//!   or past where this connection's own pulls since the start left it, is answered
//!   PULL_OFFSET_MOVED to the trusted offset, and such a commit is ignored. The price is
//!   consuming again what was consumed but not yet committed before the restart
//!   (at-least-once), never a skip.

use std::collections::BTreeMap;

use rockfish_store::config::ConsumerOffsetTable;
use rockfish_store::{Disk, MessageStore};

use super::FlushDiskType;
use crate::machine::ConnId;

/// A committed offset that pointed past its queue's recovered end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetCorrection {
    pub topic: String,
    pub group: String,
    pub queue_id: u32,
    pub committed: u64,
    pub corrected: u64,
}

/// Clamps every committed offset beyond its queue's recovered max offset to that max, logging
/// each. Called at start, before any consumer is answered.
pub fn correct_consumer_offsets<D: Disk>(
    offsets: &mut ConsumerOffsetTable,
    store: &MessageStore<D>,
) -> Vec<OffsetCorrection> {
    let mut corrections = Vec::new();
    for (key, queues) in offsets.offset_table.iter_mut() {
        // "topic@group": topic names never hold '@'.
        let Some((topic, group)) = key.split_once('@') else {
            continue;
        };
        for (queue_id, offset) in queues.iter_mut() {
            let max = store.max_offset(topic, *queue_id);
            if *offset > max {
                tracing::warn!(
                    topic,
                    group,
                    queue_id,
                    committed = *offset,
                    corrected = max,
                    "consumer offset past the queue's recovered end: corrected to its max offset"
                );
                corrections.push(OffsetCorrection {
                    topic: topic.to_string(),
                    group: group.to_string(),
                    queue_id: *queue_id,
                    committed: *offset,
                    corrected: max,
                });
                *offset = max;
            }
        }
    }
    corrections
}

/// The fences a broker starts with: under ASYNC_FLUSH one at every queue's recovered end
/// (consumers may have been served what a power loss took); none under SYNC_FLUSH, where
/// consumers are only served what is durable.
pub(super) fn fences_for<D: Disk>(
    flush: FlushDiskType,
    store: &MessageStore<D>,
    offsets: &ConsumerOffsetTable,
) -> OffsetFences {
    match flush {
        FlushDiskType::Async => OffsetFences::at_recovered_end(store, offsets),
        FlushDiskType::Sync => OffsetFences::default(),
    }
}

/// One queue's fence: how far each consumer is trusted.
#[derive(Debug, Default)]
struct Fence {
    /// The recovered max offset: how far a group with nothing committed is trusted.
    recovered: u64,
    /// group -> its committed offset: at start (corrected), then raised by its commits.
    groups: BTreeMap<String, u64>,
    /// connection -> group -> where the pulls served to it leave it.
    conns: BTreeMap<ConnId, BTreeMap<String, u64>>,
}

/// Per queue, how far each consumer is trusted after a start (see the module documentation).
#[derive(Debug, Default)]
pub struct OffsetFences {
    /// topic -> queue id -> fence (looked up by `&str`: a pull allocates nothing).
    queues: BTreeMap<String, BTreeMap<u32, Fence>>,
}

impl OffsetFences {
    /// A fence on every queue the store or the offset table knows, from the recovered store
    /// and the (corrected) committed offsets.
    pub fn at_recovered_end<D: Disk>(
        store: &MessageStore<D>,
        offsets: &ConsumerOffsetTable,
    ) -> OffsetFences {
        let mut queues: BTreeMap<String, BTreeMap<u32, Fence>> = BTreeMap::new();
        for (topic, queue_id) in store.queue_ids() {
            let fence = Fence {
                recovered: store.max_offset(topic, queue_id),
                ..Fence::default()
            };
            queues
                .entry(topic.to_string())
                .or_default()
                .insert(queue_id, fence);
        }
        for (key, committed) in &offsets.offset_table {
            let Some((topic, group)) = key.split_once('@') else {
                continue;
            };
            for (queue_id, offset) in committed {
                let fence = queues
                    .entry(topic.to_string())
                    .or_default()
                    .entry(*queue_id)
                    .or_insert_with(|| Fence {
                        recovered: store.max_offset(topic, *queue_id),
                        ..Fence::default()
                    });
                fence.groups.insert(group.to_string(), *offset);
            }
        }
        OffsetFences { queues }
    }

    fn fence(&self, topic: &str, queue_id: u32) -> Option<&Fence> {
        self.queues.get(topic)?.get(&queue_id)
    }

    fn fence_mut(&mut self, topic: &str, queue_id: u32) -> Option<&mut Fence> {
        self.queues.get_mut(topic)?.get_mut(&queue_id)
    }

    /// The highest offset `group` on `conn` may pull from or commit on this queue; `None` for a
    /// queue without a fence. A clustering group with nothing committed is trusted from the
    /// queue's `min` offset only (its offset may be from any earlier history); a broadcasting
    /// group keeps its offsets in its clients, so the broker can only hold it to the
    /// recovered max offset of this start.
    pub fn limit(
        &self,
        topic: &str,
        queue_id: u32,
        conn: ConnId,
        group: &str,
        broadcasting: bool,
        min: u64,
    ) -> Option<u64> {
        let f = self.fence(topic, queue_id)?;
        let unknown = if broadcasting { f.recovered } else { min };
        let committed = f.groups.get(group).copied().unwrap_or(unknown);
        let pulled = f
            .conns
            .get(&conn)
            .and_then(|g| g.get(group))
            .copied()
            .unwrap_or(0);
        Some(committed.max(pulled))
    }

    /// A pull within the limit was answered with `next`: the consumer continues from there.
    pub fn served(&mut self, topic: &str, queue_id: u32, conn: ConnId, group: &str, next: u64) {
        let Some(f) = self.fence_mut(topic, queue_id) else {
            return;
        };
        let groups = f.conns.entry(conn).or_default();
        match groups.get_mut(group) {
            Some(at) => *at = (*at).max(next),
            None => {
                groups.insert(group.to_string(), next);
            }
        }
    }

    /// A commit within the limit was stored: the group's committed offset is trusted.
    pub fn committed(&mut self, topic: &str, queue_id: u32, group: &str, offset: u64) {
        let Some(f) = self.fence_mut(topic, queue_id) else {
            return;
        };
        match f.groups.get_mut(group) {
            Some(at) => *at = (*at).max(offset),
            None => {
                f.groups.insert(group.to_string(), offset);
            }
        }
    }

    /// A connection closed: what it was trusted with goes with it.
    pub fn forget(&mut self, conn: ConnId) {
        for queues in self.queues.values_mut() {
            for f in queues.values_mut() {
                f.conns.remove(&conn);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rockfish_store::record::{HostAddr, StoreMessage};
    use rockfish_store::{MemDisk, StoreConfig};

    fn store_with(queue_lens: &[(u32, u64)]) -> MessageStore<MemDisk> {
        let (mut store, _) = MessageStore::open(MemDisk::new(1), StoreConfig::small(), 0).unwrap();
        let host = HostAddr::V4([127, 0, 0, 1], 10911);
        for &(queue_id, n) in queue_lens {
            for _ in 0..n {
                let msg = StoreMessage {
                    topic: "T",
                    queue_id,
                    flag: 0,
                    sys_flag: 0,
                    born_timestamp: 0,
                    born_host: host,
                    store_host: host,
                    reconsume_times: 0,
                    prepared_transaction_offset: 0,
                    body: b"x",
                    properties: b"",
                };
                store.put(&msg, 0).unwrap();
            }
        }
        store
    }

    #[test]
    fn committed_offsets_past_the_recovered_end_are_clamped_and_reported() {
        let store = store_with(&[(0, 12), (1, 5)]);
        let mut offsets = ConsumerOffsetTable::default();
        offsets.set("T", "G", 0, 13);
        offsets.set("T", "G", 1, 5);
        offsets.set("T", "H", 0, 7);
        offsets.set("Gone", "G", 0, 3);
        let fixed = correct_consumer_offsets(&mut offsets, &store);
        assert_eq!(
            fixed,
            vec![
                OffsetCorrection {
                    topic: "Gone".into(),
                    group: "G".into(),
                    queue_id: 0,
                    committed: 3,
                    corrected: 0,
                },
                OffsetCorrection {
                    topic: "T".into(),
                    group: "G".into(),
                    queue_id: 0,
                    committed: 13,
                    corrected: 12,
                },
            ]
        );
        assert_eq!(offsets.get("T", "G", 0), Some(12));
        assert_eq!(offsets.get("T", "G", 1), Some(5), "at the end is fine");
        assert_eq!(offsets.get("T", "H", 0), Some(7));
    }

    #[test]
    fn a_fence_trusts_what_the_group_committed_and_what_a_connection_was_served() {
        let store = store_with(&[(0, 12), (1, 12)]);
        let mut offsets = ConsumerOffsetTable::default();
        offsets.set("T", "G", 0, 9);
        let mut fences = OffsetFences::at_recovered_end(&store, &offsets);
        let (a, b) = (ConnId(1), ConnId(2));
        assert_eq!(
            fences.limit("T", 0, a, "G", false, 0),
            Some(9),
            "what G committed"
        );
        assert_eq!(
            fences.limit("T", 1, a, "G", false, 0),
            Some(0),
            "nothing committed: from the start"
        );
        assert_eq!(
            fences.limit("T", 1, a, "B", true, 0),
            Some(12),
            "broadcasting, nothing committed: the recovered end"
        );
        assert_eq!(
            fences.limit("New", 0, a, "G", false, 0),
            None,
            "queues created later"
        );
        // `a` came back at 9 and was served up to 20; it commits 18.
        fences.served("T", 0, a, "G", 20);
        assert_eq!(fences.limit("T", 0, a, "G", false, 0), Some(20));
        assert_eq!(
            fences.limit("T", 0, b, "G", false, 0),
            Some(9),
            "per connection"
        );
        fences.committed("T", 0, "G", 18);
        assert_eq!(
            fences.limit("T", 0, b, "G", false, 0),
            Some(18),
            "a rebalance hands the queue on at the committed offset"
        );
        assert_eq!(
            fences.limit("T", 0, b, "Other", true, 0),
            Some(12),
            "per group"
        );
        fences.forget(a);
        assert_eq!(fences.limit("T", 0, a, "G", false, 0), Some(18));
    }
}

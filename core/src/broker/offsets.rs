//! Consumer offsets that survive a crash.
//!
//! Apache RocketMQ keeps offsets in memory and writes `consumerOffset.json` every 5 s, so a
//! crash rewinds every group by up to 5 s. rockfish journals each change as a small record of
//! the commit log, in the hidden system topic [`OFFSET_JOURNAL_TOPIC`]: the record reaches the
//! page cache before the commit is answered (a process crash keeps it) and rides the same
//! group commit as messages (under SYNC_FLUSH an answered UPDATE_CONSUMER_OFFSET waits for it,
//! so a power loss keeps it too). `consumerOffset.json` stays RocketMQ's shape and becomes a
//! compaction of the journal: it records the journal offset it covers, and loading replays
//! the journal from there.

use rockfish_store::config::{self, ConsumerOffsetTable};
use rockfish_store::record::StoreMessage;
use rockfish_store::{Disk, MessageStore, StoreResult};

use super::{Broker, FlushDiskType};

/// The journal's topic: one queue, never routed, never registered, refused to producers.
pub const OFFSET_JOURNAL_TOPIC: &str = "rmq_sys_ROCKFISH_OFFSET_JOURNAL";

/// Journal records read per step while replaying.
const REPLAY_BATCH: usize = 1024;

/// One journal record's body: `topic@group queueId offset`. Topic and group names never hold
/// spaces (both are validated as `[%|a-zA-Z0-9_-]`), so the split is unambiguous.
fn encode_entry(topic: &str, group: &str, queue_id: u32, offset: u64) -> String {
    format!("{topic}@{group} {queue_id} {offset}")
}

fn decode_entry(body: &[u8]) -> Option<(&str, u32, u64)> {
    let text = std::str::from_utf8(body).ok()?;
    let mut parts = text.split(' ');
    let key = parts.next()?;
    let queue_id = parts.next()?.parse().ok()?;
    let offset = parts.next()?.parse().ok()?;
    if parts.next().is_some() || !key.contains('@') {
        return None;
    }
    Some((key, queue_id, offset))
}

/// The consumer offsets the broker keeps, whether they changed since the last write, and the
/// fences recovery set on them.
pub(super) struct Offsets {
    pub table: ConsumerOffsetTable,
    pub dirty: bool,
    /// Consumer offsets that may point past what recovery kept (ASYNC_FLUSH).
    pub fences: super::recovery::OffsetFences,
    /// A slave: the journal's end when its master's offsets were last taken (the table
    /// covers the journal that far; a take-over replays the journal from there).
    pub sync_mark: Option<u64>,
    /// A master's snapshot waiting to be written: the commit log's end when it was taken,
    /// and its bytes (`Broker::write_offsets_when_durable`).
    pub pending: Option<(u64, Vec<u8>)>,
}

/// Loads `consumerOffset.json` and replays the journal past the offset it covers. Returns the
/// table and how many journal records were applied.
pub(super) fn load<D: Disk>(store: &MessageStore<D>) -> StoreResult<(ConsumerOffsetTable, u64)> {
    let mut table: ConsumerOffsetTable =
        config::load(store.disk(), config::CONSUMER_OFFSETS_FILE)?.unwrap_or_default();
    let max = store.max_offset(OFFSET_JOURNAL_TOPIC, 0);
    let mut at = table
        .journal_offset
        .unwrap_or(0)
        .max(store.min_offset(OFFSET_JOURNAL_TOPIC, 0));
    let mut applied = 0;
    while at < max {
        let got = store.get(
            OFFSET_JOURNAL_TOPIC,
            0,
            at,
            REPLAY_BATCH,
            usize::MAX,
            &|_| true,
        )?;
        if got.messages.is_empty() || got.next_offset <= at {
            break;
        }
        for rec in &got.messages {
            match decode_entry(&rec.body()) {
                Some((key, queue_id, offset)) => {
                    table
                        .offset_table
                        .entry(key.to_string())
                        .or_default()
                        .insert(queue_id, offset);
                    applied += 1;
                }
                None => tracing::warn!(
                    queue_offset = rec.queue_offset(),
                    "skipping an unreadable consumer offset journal record"
                ),
            }
        }
        at = got.next_offset;
    }
    // The snapshot may cover more of the journal than recovery kept (a power loss cut its
    // tail): new records would then reuse offsets the snapshot claims to cover. Re-anchor it.
    table.journal_offset = Some(max);
    Ok((table, applied))
}

impl<D: Disk> Broker<D> {
    /// Records a consumer offset commit. Returns the commit log offset the journal record
    /// ends at (durable once flushed) if the offset changed and was journaled.
    pub(super) fn commit_offset(
        &mut self,
        topic: &str,
        group: &str,
        queue_id: u32,
        offset: u64,
        now: u64,
    ) -> Option<u64> {
        if self.offsets.table.get(topic, group, queue_id) == Some(offset) {
            return None;
        }
        self.offsets.table.set(topic, group, queue_id, offset);
        self.offsets.dirty = true;
        if !self.repl.role.is_master() && !crate::buggify::bug("broker.slave-writes") {
            // A slave's log is its master's: its offsets live in memory and its snapshot.
            return None;
        }
        self.journal_offset(topic, group, queue_id, offset, now)
    }

    /// Appends one journal record (what `commit_offset` journals; the delay service's
    /// progress goes here alone, never into the snapshot: see `schedule.rs`).
    pub(super) fn journal_offset(
        &mut self,
        topic: &str,
        group: &str,
        queue_id: u32,
        offset: u64,
        now: u64,
    ) -> Option<u64> {
        let body = encode_entry(topic, group, queue_id, offset);
        let msg = StoreMessage {
            topic: OFFSET_JOURNAL_TOPIC,
            queue_id: 0,
            flag: 0,
            sys_flag: 0,
            born_timestamp: rockfish_store::java_millis(now),
            born_host: self.store_host,
            store_host: self.store_host,
            reconsume_times: 0,
            prepared_transaction_offset: 0,
            body: body.as_bytes(),
            properties: b"",
        };
        match self.store.put(&msg, now) {
            Ok(put) => {
                if self.offset_commit_waits() {
                    // SYNC_FLUSH brokers flush on demand only: this record must not wait for
                    // the next send to become durable.
                    self.request_flush(now);
                }
                Some(put.end)
            }
            Err(e) => {
                // Kept in memory and in the next snapshot; only a crash before that loses it.
                tracing::warn!(error = %e, topic, group, queue_id, offset, "journaling a consumer offset failed");
                None
            }
        }
    }

    /// Whether an answered offset commit must wait for its journal record to be durable.
    pub(super) fn offset_commit_waits(&self) -> bool {
        self.config.flush_disk_type == FlushDiskType::Sync
    }

    /// Marks the table with the journal offset it covers (everything below is applied).
    pub(super) fn stamp_offsets(&mut self) {
        let end = self.store.max_offset(OFFSET_JOURNAL_TOPIC, 0);
        if self.repl.role.is_master() {
            self.offsets.table.journal_offset = Some(end);
        } else {
            // A slave's table is its master's as of its last sync: it covers the replicated
            // journal only that far (what came since is replayed when it takes over).
            let covered = self.offsets.sync_mark.or(self.offsets.table.journal_offset);
            self.offsets.table.journal_offset = Some(covered.unwrap_or(0).min(end));
        }
    }

    /// Writes the compacted table, stamped with the journal offset it covers, off the task.
    /// What lives in the journal alone (the transaction check's progress, kept out of the
    /// table) is journaled again past the new stamp: a restart replays the journal only from
    /// there, and without it the progress went back to the start of the half queue, where an
    /// END_TRANSACTION for a half the check had handed to a newer copy was taken again
    /// (committed twice; transactions-power-loss seeds 279, 367, 429).
    ///
    /// A master's snapshot is written only once the commit log is durable as far as it was
    /// when the snapshot was taken: the table says what the journal records appended so far
    /// say, and must not outlive them in a power loss. (A pop journals its checkpoint, then
    /// moves the group's offset past the messages it handed out: a snapshot holding the
    /// moved offset, durable while the checkpoint's record was not, left those messages in
    /// no checkpoint and behind the offset after a power loss; pop-sync seed 10.)
    pub(super) fn persist_offsets(&mut self, now: u64) {
        if !self.offsets.dirty
            || self.offsets.pending.is_some()
            || self
                .persists
                .in_flight(super::persist::PersistKind::Offsets)
        {
            return;
        }
        self.stamp_offsets();
        match serde_json::to_vec_pretty(&self.offsets.table) {
            Ok(data) => {
                self.offsets.dirty = false;
                if self.repl.role.is_master() {
                    self.offsets.pending = Some((self.store.write_pos(), data));
                    self.write_offsets_when_durable(now);
                    self.journal_transaction_progress(now);
                    self.journal_pop_progress(now);
                } else {
                    // A slave's table is its master's (its log is not its own).
                    self.persist(
                        super::persist::PersistKind::Offsets,
                        config::CONSUMER_OFFSETS_FILE,
                        data,
                    );
                }
            }
            Err(e) => tracing::error!(error = %e, "encoding consumer offsets failed"),
        }
    }

    /// Writes the snapshot taken by `persist_offsets` once the log is durable to where it
    /// ended then (asking for that flush meanwhile); called again after every flush.
    pub(super) fn write_offsets_when_durable(&mut self, now: u64) {
        let Some((end, _)) = &self.offsets.pending else {
            return;
        };
        if self.store.flushed() < *end {
            self.request_flush(now);
            return;
        }
        let (_, data) = self.offsets.pending.take().expect("checked");
        self.persist(
            super::persist::PersistKind::Offsets,
            config::CONSUMER_OFFSETS_FILE,
            data,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_garbage_is_refused() {
        let body = encode_entry("%RETRY%g", "g-1", 3, 42);
        assert_eq!(decode_entry(body.as_bytes()), Some(("%RETRY%g@g-1", 3, 42)));
        for bad in [
            "",
            "t@g",
            "t@g 1",
            "t@g x 1",
            "t@g 1 2 3",
            "tg 1 2",
            "t@g 1 -2",
        ] {
            assert_eq!(decode_entry(bad.as_bytes()), None, "{bad:?}");
        }
    }
}

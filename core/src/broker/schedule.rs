//! Delay levels (RocketMQ's ScheduleMessageService).
//!
//! A message sent with a DELAY level is stored under [`SCHEDULE_TOPIC`] in queue `level - 1`
//! with its real topic and queue in REAL_TOPIC / REAL_QID; its consume queue entry's tag code
//! is its delivery time (the store computes it: store time + the level's delay). Each level's
//! queue is therefore in delivery order, and this service walks each one from its progress
//! offset: an entry that is due is stored again, under its real topic, and the offset moves on.
//!
//! Time is the broker's clock, strictly: an entry is delivered once `now >= due`, never
//! earlier, also after a restart whose clock went back (Apache moves such entries to "now";
//! a clock stepped back by an hour then fires every pending delay at once). A clock moved
//! back holds delayed messages by as much, and says so in the log.
//!
//! Progress is journaled in the commit log right after the deliveries it covers (the consumer
//! offset journal, as the pseudo-group [`DELAY_PROGRESS_GROUP`] of the schedule topic): a
//! restart resumes exactly where the last surviving journal record says, so a crash
//! redelivers nothing (Apache, persisting every 10 s, redelivers up to 10 s of deliveries
//! after each crash, and each redelivered retry of a failing message starts a chain of its
//! own), and a power loss that takes delivered copies off the log takes the record saying so
//! with them. delayOffset.json is still written, as Apache's tools read it, but only as far
//! as deliveries are durable.

use std::collections::{BTreeMap, VecDeque};

use rockfish_store::config::{self, ConsumerOffsetTable, DelayOffsetTable};
use rockfish_store::message_store::SCHEDULE_TOPIC;
use rockfish_store::{Disk, MessageStore, StoreError, StoreResult};

use super::Broker;
use super::persist::PersistKind;
use super::timers::Timer;
use crate::message::{property, rewrite_properties};

/// Entries delivered per level per wake; the rest follow a millisecond later.
const DELIVER_BATCH: usize = 128;
/// After a delivery the store refused (stopped, full), the level tries again this much later
/// (Apache's DELAY_FOR_A_PERIOD).
pub const RETRY_AFTER_FAILURE_MS: u64 = 10_000;
/// A record that cannot be read is tried this many times (a read can fail once and succeed
/// again) before it is skipped as lost.
pub(super) const READ_ATTEMPTS: u32 = 5;

/// The consumer offset journal's pseudo-group that records the schedule topic's progress.
pub const DELAY_PROGRESS_GROUP: &str = "rmq_sys_ROCKFISH_DELAY_PROGRESS";

/// Delivery progress per level.
#[derive(Debug, Default)]
pub(super) struct Schedule {
    /// Level (1-based) -> the next schedule queue offset to deliver.
    next: BTreeMap<u32, u64>,
    /// Deliveries stored but maybe not durable: (level, offset after it, log end of the copy).
    undurable: VecDeque<(u32, u64, u64)>,
    /// Level -> the offset delayOffset.json may say (every delivery below it durable).
    durable: BTreeMap<u32, u64>,
    /// The durable offsets changed since delayOffset.json was last written.
    dirty: bool,
    /// Level -> (offset, failed reads) of a record that would not read.
    read_failures: BTreeMap<u32, (u64, u32)>,
    /// Levels the clock-went-back warning was given for (once per level and offset).
    warned: BTreeMap<u32, u64>,
}

impl Schedule {
    /// Loads delayOffset.json, each offset kept within what its queue holds after recovery.
    /// Loads delayOffset.json and what the journal recorded since (`journaled`: the replayed
    /// consumer offset table, from which the progress records are taken out: the snapshot
    /// never holds them, as it may be written before the deliveries they cover are durable),
    /// each offset kept within what its queue holds after recovery.
    pub(super) fn load<D: Disk>(
        store: &MessageStore<D>,
        journaled: &mut ConsumerOffsetTable,
    ) -> StoreResult<Schedule> {
        let table: DelayOffsetTable =
            config::load(store.disk(), config::DELAY_OFFSETS_FILE)?.unwrap_or_default();
        let mut offsets = table.offset_table.clone();
        let key = ConsumerOffsetTable::key(SCHEDULE_TOPIC, DELAY_PROGRESS_GROUP);
        for (q, o) in journaled.offset_table.remove(&key).into_iter().flatten() {
            let e = offsets.entry(q + 1).or_insert(0);
            *e = (*e).max(o);
        }
        let mut s = Schedule::default();
        for (level, offset) in offsets {
            if level == 0 {
                continue;
            }
            let q = level - 1;
            let o = offset
                .max(store.min_offset(SCHEDULE_TOPIC, q))
                .min(store.max_offset(SCHEDULE_TOPIC, q));
            s.next.insert(level, o);
            // What the file says is durable; what the journal adds may not be yet.
            if let Some(&d) = table.offset_table.get(&level) {
                s.durable.insert(level, d.min(o));
            }
        }
        Ok(s)
    }

    pub(super) fn table(&self) -> DelayOffsetTable {
        DelayOffsetTable {
            offset_table: self.durable.clone(),
        }
    }

    /// A slave takes its master's progress (delivered by the master, never by the slave):
    /// each level's offset as the master's delayOffset.json says, within what this log holds.
    pub(super) fn follow<D: Disk>(&mut self, master: &DelayOffsetTable, store: &MessageStore<D>) {
        for (&level, &offset) in &master.offset_table {
            if level == 0 {
                continue;
            }
            let o = offset.min(store.max_offset(SCHEDULE_TOPIC, level - 1));
            self.next.insert(level, o);
            self.durable.insert(level, o);
        }
        self.dirty = true;
    }

    /// The next offset to deliver of a level (GET_ALL_DELAY_OFFSET, tests).
    pub fn offset(&self, level: u32) -> u64 {
        self.next.get(&level).copied().unwrap_or(0)
    }
}

/// How a level's walk ended.
enum Walk {
    /// Nothing left in the queue.
    CaughtUp,
    /// The head entry falls due then.
    DueAt(u64),
    /// Stopped after a batch, or a failure: look again then.
    Again(u64),
}

impl<D: Disk> Broker<D> {
    /// The levels with a schedule queue: the configured ones and any left from an earlier
    /// configuration (their entries still get delivered).
    fn schedule_levels(&self) -> Vec<u32> {
        let configured = self.store.config().delay_levels_ms.len() as u32;
        let mut levels: Vec<u32> = (1..=configured).collect();
        for (topic, q) in self.store.queue_ids() {
            if topic == SCHEDULE_TOPIC && q + 1 > configured {
                levels.push(q + 1);
            }
        }
        levels
    }

    /// Delivers every due entry of every level (up to a batch each) and arms the timer for the
    /// earliest entry not yet due.
    pub(super) fn deliver_delayed(&mut self, now: u64) {
        let mut wake: Option<u64> = None;
        for level in self.schedule_levels() {
            match self.walk_level(level, now) {
                Walk::CaughtUp => {}
                Walk::DueAt(at) | Walk::Again(at) => wake = Some(wake.map_or(at, |w| w.min(at))),
            }
        }
        match wake {
            Some(at) => self.timers.set(Timer::Schedule, at),
            None => self.timers.clear(Timer::Schedule),
        }
        if self.config.flush_disk_type == super::FlushDiskType::Sync {
            // Deliveries become visible once durable.
            self.request_flush(now);
        }
    }

    /// A message was stored in a schedule queue: make sure the service wakes for it.
    pub(super) fn schedule_stored(&mut self, due: u64) {
        let at = self.timers.at(Timer::Schedule).map_or(due, |t| t.min(due));
        self.timers.set(Timer::Schedule, at);
    }

    fn walk_level(&mut self, level: u32, now: u64) -> Walk {
        let q = level - 1;
        let max = self.store.max_offset(SCHEDULE_TOPIC, q);
        let mut at = self
            .schedule
            .offset(level)
            .max(self.store.min_offset(SCHEDULE_TOPIC, q));
        let delay = self
            .store
            .config()
            .delay_levels_ms
            .get(q as usize)
            .copied()
            .unwrap_or(0)
            .max(0) as u64;
        let mut delivered = 0;
        let result = loop {
            if at >= max {
                break Walk::CaughtUp;
            }
            if delivered == DELIVER_BATCH {
                break Walk::Again(now + 1);
            }
            let entry = match self.store.entry(SCHEDULE_TOPIC, q, at) {
                Ok(Some(e)) => e,
                Ok(None) => break Walk::CaughtUp,
                Err(e) => {
                    tracing::error!(level, offset = at, error = %e, "schedule queue unreadable");
                    break Walk::Again(now + RETRY_AFTER_FAILURE_MS);
                }
            };
            let mut due = entry.tags_code.max(0) as u64;
            if crate::buggify::bug("broker.schedule-early") {
                // A deliberately broken broker, for the simulator's checkers.
                due = due.saturating_sub(delay / 2);
            }
            if due > now {
                if due > now + delay && self.schedule.warned.insert(level, at) != Some(at) {
                    tracing::warn!(
                        level,
                        offset = at,
                        due,
                        now,
                        "a delayed message is due later than its level's delay from now: the \
                         clock went back since it was stored; it waits for its time"
                    );
                }
                break Walk::DueAt(due);
            }
            match self.deliver_one(level, at, entry.offset, now) {
                Ok(()) => {
                    at += 1;
                    delivered += 1;
                }
                Err(again) => break Walk::Again(again),
            }
        };
        if at != self.schedule.offset(level) {
            self.schedule.next.insert(level, at);
            // Journaled after the copies: whatever of it survives, they survived too.
            self.journal_offset(SCHEDULE_TOPIC, DELAY_PROGRESS_GROUP, q, at, now);
        }
        result
    }

    /// Stores the schedule entry at `offset` (its record at `phys`) under its real topic.
    /// `Err(when)` when the level must stop and look again then.
    fn deliver_one(&mut self, level: u32, offset: u64, phys: u64, now: u64) -> Result<(), u64> {
        let rec = match self.store.read(phys) {
            Ok(rec) => {
                self.schedule.read_failures.remove(&level);
                rec
            }
            Err(e) => {
                let tries = match self.schedule.read_failures.get(&level) {
                    Some((o, n)) if *o == offset => n + 1,
                    _ => 1,
                };
                if tries < READ_ATTEMPTS {
                    tracing::warn!(level, offset, error = %e, tries, "delayed message unreadable; trying again");
                    self.schedule.read_failures.insert(level, (offset, tries));
                    return Err(now + RETRY_AFTER_FAILURE_MS);
                }
                tracing::error!(level, offset, error = %e, "delayed message unreadable; skipped");
                self.schedule.read_failures.remove(&level);
                return Ok(());
            }
        };
        match self.store_at_real_topic(&rec, &[property::DELAY], None, now) {
            Ok(Some(end)) => {
                self.schedule.undurable.push_back((level, offset + 1, end));
                Ok(())
            }
            Ok(None) => {
                tracing::error!(
                    level,
                    offset,
                    "delayed message without REAL_TOPIC/REAL_QID; skipped"
                );
                Ok(())
            }
            Err(StoreError::Encode(e)) => {
                // Cannot happen for what was stored once; never block the level on it.
                tracing::error!(level, offset, error = %e, "delayed message cannot be stored again; skipped");
                Ok(())
            }
            Err(e) => {
                tracing::warn!(level, offset, error = %e, "delivering a delayed message failed; trying again");
                Err(now + RETRY_AFTER_FAILURE_MS)
            }
        }
    }

    /// Stores a record that waited (in the schedule topic, the timing wheel or the
    /// transaction half topic) in its real topic and queue (REAL_TOPIC / REAL_QID), without
    /// the properties named in `drop`; `commit_of`: a transaction half at that commit log
    /// offset, stored with the COMMIT type. `Ok(None)`: it names no real topic.
    /// `Ok(Some(end))`: where the copy ends in the log.
    pub(super) fn store_at_real_topic(
        &mut self,
        rec: &rockfish_store::StoredRecord,
        drop: &[&str],
        commit_of: Option<u64>,
        now: u64,
    ) -> Result<Option<u64>, StoreError> {
        let real = (
            rec.property(property::REAL_TOPIC)
                .and_then(|t| std::str::from_utf8(t).ok())
                .map(str::to_string),
            rec.property(property::REAL_QID)
                .and_then(|t| std::str::from_utf8(t).ok())
                .and_then(|q| q.trim().parse::<u32>().ok()),
        );
        let (Some(topic), Some(qid)) = real else {
            return Ok(None);
        };
        let queues = self.topic_for_delivery(&topic, qid, now);
        let body = rec.body();
        let copy = super::retry::Derived {
            topic: &topic,
            queue_id: qid % queues.max(1),
            delay: None,
            flag: rec.flag(),
            sys_flag: match commit_of {
                Some(_) => {
                    use super::transaction::tx_flag;
                    (rec.sys_flag() & !tx_flag::MASK) | tx_flag::COMMIT
                }
                None => rec.sys_flag(),
            },
            born_timestamp: rec.born_timestamp(),
            born_host: rec.born_host(),
            reconsume_times: rec.reconsume_times(),
            prepared_transaction_offset: commit_of
                .map_or(rec.prepared_transaction_offset(), |o| o as i64),
            body: &body,
            properties: rewrite_properties(rec.properties(), drop, &[]),
        };
        Ok(Some(self.put_derived(copy, now)?.end))
    }

    /// Journals every level's progress (at start, after the journal was compacted).
    pub(super) fn journal_schedule_progress(&mut self, now: u64) {
        let next: Vec<(u32, u64)> = self.schedule.next.iter().map(|(l, o)| (*l, *o)).collect();
        for (level, offset) in next {
            if offset > 0 {
                self.journal_offset(SCHEDULE_TOPIC, DELAY_PROGRESS_GROUP, level - 1, offset, now);
            }
        }
    }

    /// Moves deliveries the flush made durable into what delayOffset.json may say.
    pub(super) fn schedule_flushed(&mut self) {
        let flushed = self.store.flushed();
        while let Some(&(level, next, end)) = self.schedule.undurable.front() {
            if end > flushed {
                break;
            }
            self.schedule.undurable.pop_front();
            self.schedule.durable.insert(level, next);
            self.schedule.dirty = true;
        }
    }

    /// Writes delayOffset.json if durable progress moved and no write of it is running.
    pub(super) fn persist_delay_offsets(&mut self) {
        self.schedule_flushed();
        if !self.schedule.dirty || self.persists.in_flight(PersistKind::DelayOffsets) {
            return;
        }
        match serde_json::to_vec_pretty(&self.schedule.table()) {
            Ok(data) => {
                self.schedule.dirty = false;
                self.persist(PersistKind::DelayOffsets, config::DELAY_OFFSETS_FILE, data);
            }
            Err(e) => tracing::error!(error = %e, "encoding delay offsets failed"),
        }
    }

    pub(super) fn delay_offsets_failed(&mut self) {
        self.schedule.dirty = true;
    }

    /// Shutdown: everything is flushed by now, so all progress is durable.
    pub(super) fn delay_offsets_at_shutdown(&mut self) -> DelayOffsetTable {
        for (level, next) in &self.schedule.next {
            self.schedule.durable.insert(*level, *next);
        }
        self.schedule.undurable.clear();
        self.schedule.table()
    }

    /// The real topic's queue count, creating the topic if it went away meanwhile (a delayed
    /// message outlives a deleted topic, as in Apache, whose store does not check).
    pub(super) fn topic_for_delivery(&mut self, topic: &str, qid: u32, now: u64) -> u32 {
        if let Some(t) = self.topics.get(topic) {
            return t.write_queue_nums;
        }
        let queues = if crate::protocol::topics::is_retry_topic(topic) {
            1
        } else {
            self.config.default_topic_queues.max(qid + 1).min(1024)
        };
        self.topics.insert(
            topic.to_string(),
            rockfish_store::config::TopicConfig::new(topic, queues),
        );
        tracing::info!(%topic, queues, "topic created for a delayed message's delivery");
        self.topics_created(now);
        queues
    }
}

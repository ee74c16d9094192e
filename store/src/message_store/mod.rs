//! `MessageStore`: the commit log, the consume queues and the index kept in step, plus
//! checkpoint and recovery (RocketMQ's DefaultMessageStore, without threads: every call is
//! synchronous and takes `now` from the caller).
//!
//! Recovery is in `recovery.rs` (`MessageStore::open`); reads and queries in `query.rs`.

use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};

use crate::checkpoint::{Checkpoint, QueueMark};
use crate::commitlog::{Appended, CommitLog, ScanStop};
use crate::consume_queue::{
    Boundary, CONSUMEQUEUE_DIR, ConsumeQueue, CqEntry, QueueSlot, QueueTable,
};
use crate::disk::{CreatedSet, Disk, FileId};
use crate::error::{StoreError, StoreResult};
use crate::index::{IndexService, MAX_KEYS_PER_RECORD};
use crate::record::{self, StoreMessage, StoredRecord};

mod checkpointing;
mod query;
mod recovery;
mod replication;
mod store_config;

pub use store_config::{
    MAX_COMMITLOG_SEGMENT, MIN_COMMITLOG_SEGMENT, StoreConfig, java_millis, parse_delay_levels,
};

/// RocketMQ's schedule topic: delay messages wait here, tag code = delivery time.
pub const SCHEDULE_TOPIC: &str = "SCHEDULE_TOPIC_XXXX";
/// RocketMQ 5's timer topic: timer messages wait here, tag code = delivery time
/// (TIMER_OUT_MS), one queue per bucket of the broker's timing wheel.
pub const TIMER_TOPIC: &str = "rmq_sys_wheel_timer";
const TRANSACTION_TYPE_MASK: i32 = 0x3 << 2;
const TRANSACTION_PREPARED: i32 = 0x1 << 2;
const TRANSACTION_ROLLBACK: i32 = 0x3 << 2;
/// Entries a single get may scan when a filter rejects them (RocketMQ's maxFilterMessageCount).
const MAX_FILTER_SCAN: usize = 16_000;

/// What recovery found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// A new store: no checkpoint, no commit log, no consume queues were found, so nothing
    /// was recovered.
    pub fresh: bool,
    /// The checkpoint's offset, if one was readable.
    pub checkpoint: Option<u64>,
    pub clean_shutdown: bool,
    /// Why the checkpoint could not be used, if it could not.
    pub checkpoint_problem: Option<String>,
    pub scanned_from: u64,
    /// Where the commit log now ends.
    pub log_end: u64,
    /// The torn or corrupt tail that was cut, if any.
    pub truncated: Option<ScanStop>,
    /// Files removed or repaired: segments past the cut, half-created or cut-short segments,
    /// stale index files.
    pub file_repairs: Vec<String>,
    pub redispatched: u64,
    /// Consume queues rebuilt from the whole log, with why.
    pub rebuilt_queues: Vec<String>,
    pub index_note: Option<String>,
    /// Messages whose queue entries were on disk but whose records did not survive (a torn
    /// or corrupt tail). Entries lost with the tail itself cannot be counted, so this is a
    /// lower bound after a power loss and exact after a process crash.
    pub dropped: Vec<DroppedRange>,
}

/// Queue offsets `[from, to)` of one queue that recovery dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedRange {
    pub topic: String,
    pub queue_id: u32,
    pub from: u64,
    pub to: u64,
}

/// Result of a put.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PutResult {
    /// Where the first message landed (all of a batch's records are contiguous).
    pub first: Appended,
    pub count: usize,
    /// The commit log offset the batch ends at: durable once `flushed() >= end`.
    pub end: u64,
}

/// RocketMQ's GetMessageStatus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GetStatus {
    Found,
    NoMatchedMessage,
    NoMatchedLogicQueue,
    NoMessageInQueue,
    OffsetTooSmall,
    OffsetOverflowOne,
    OffsetOverflowBadly,
    /// Entries exist but their records are gone (retention).
    OffsetFoundNull,
}

#[derive(Debug, Clone)]
pub struct GetResult {
    pub status: GetStatus,
    pub messages: Vec<StoredRecord>,
    pub next_offset: u64,
    pub min_offset: u64,
    pub max_offset: u64,
}

type QueueKey = (String, u32);

pub struct MessageStore<D: Disk> {
    disk: D,
    config: StoreConfig,
    log: CommitLog,
    queues: QueueTable,
    index: IndexService,
    /// Set after a dispatch failure: the log and its derived data disagree until recovery.
    stopped: Option<String>,
    appended: Vec<Appended>,
    queue_offsets: Vec<u64>,
    /// Each put's queue slots (reused: the put path does not allocate).
    slots: Vec<QueueSlot>,
    /// Queue entries put since the last checkpoint was prepared (bounds staged memory).
    staged_since_checkpoint: u64,
    /// Per message of a put: its tag code and where its keys end in `keys`.
    metas: Vec<Meta>,
    /// Byte ranges of index keys within records' properties (reused, no allocation).
    keys: Vec<(usize, usize)>,
    /// The commit log offset of the last checkpoint written.
    checkpointed: u64,
    /// When a refused put was last logged: refusals repeat per send, logs need not.
    refusal_logged_at: Option<i64>,
    /// Queue files created since the last checkpoint was written, whose existence that
    /// checkpoint's driver makes durable with its ranges.
    pending_created: CreatedSet,
    /// Open found no trace of an earlier process (`RecoveryReport::fresh`).
    fresh: bool,
    /// A slave's store: puts are refused, only `append_replicated` writes (a slave's log
    /// must stay its master's, byte for byte).
    replica: bool,
}

/// Most queue entries staged in memory across all queues between checkpoints (20 MiB); a
/// broker checkpoints at half of it.
pub const STAGED_MAX_TOTAL: u64 = 1 << 20;

/// Refused puts are logged at most this often.
const REFUSAL_LOG_INTERVAL_MS: i64 = 1_000;

#[derive(Clone, Copy)]
struct Meta {
    tags_code: i64,
    keys_end: usize,
}

/// Topic names become directory names: RocketMQ's rule `^[%|a-zA-Z0-9_-]+$`, at most 127.
pub fn validate_topic(topic: &str) -> StoreResult<()> {
    let ok = !topic.is_empty()
        && topic.len() <= record::MAX_TOPIC_LEN
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"%|_-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid {
            what: format!(
                "invalid topic name {topic:?}: use [%|a-zA-Z0-9_-], at most 127 characters"
            ),
        })
    }
}

impl<D: Disk> MessageStore<D> {
    /// maxMessageSize for later puts (UPDATE_BROKER_CONFIG).
    pub fn set_max_message_size(&mut self, max: usize) {
        assert!(max > 0, "maxMessageSize is checked before it is set");
        self.config.max_message_size = max;
        self.log.set_max_body(max);
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }
    pub fn disk(&self) -> &D {
        &self.disk
    }
    pub fn disk_mut(&mut self) -> &mut D {
        &mut self.disk
    }
    pub fn commit_log(&self) -> &CommitLog {
        &self.log
    }
    pub fn commit_log_mut(&mut self) -> &mut CommitLog {
        &mut self.log
    }
    /// Whether open found no trace of an earlier process: no checkpoint, commit log,
    /// consume queue or index.
    pub fn fresh(&self) -> bool {
        self.fresh
    }

    /// Makes this a replica's store (a slave: puts refused) or a master's again.
    pub fn set_replica(&mut self, replica: bool) {
        self.replica = replica;
    }
    pub fn is_replica(&self) -> bool {
        self.replica
    }

    /// Why the store stopped accepting writes, if it did.
    pub fn stopped(&self) -> Option<&str> {
        self.stopped.as_deref().or(self.log.stopped())
    }

    /// Appends one message and dispatches it. See [`MessageStore::put_batch`].
    pub fn put(&mut self, msg: &StoreMessage<'_>, now_ms: u64) -> StoreResult<PutResult> {
        self.put_batch(std::slice::from_ref(msg), now_ms)
    }

    /// Appends messages contiguously, assigning queue offsets, and dispatches them to their
    /// consume queues and the index. Not yet durable: see `flushed()` and `sync()`. Where each
    /// message landed is in [`MessageStore::last_appended`]. Allocates nothing per message
    /// once warm; a batch for one queue (as RocketMQ requires of batches) looks its queue up
    /// once.
    pub fn put_batch(&mut self, msgs: &[StoreMessage<'_>], now_ms: u64) -> StoreResult<PutResult> {
        let now = java_millis(now_ms);
        if let Some(reason) = &self.stopped {
            return Err(StoreError::Stopped {
                reason: reason.clone(),
            });
        }
        if self.replica {
            return Err(StoreError::Replica);
        }
        let Some(first) = msgs.first() else {
            return Err(StoreError::Invalid {
                what: "empty batch".into(),
            });
        };
        // One pass over each message's properties: its tag code and its index keys.
        self.metas.clear();
        self.keys.clear();
        let mut checked_topic: Option<&str> = None;
        for msg in msgs {
            if checked_topic != Some(msg.topic) {
                validate_topic(msg.topic)?;
                checked_topic = Some(msg.topic);
            }
            let scan = scan_properties(msg.properties, &mut self.keys);
            let tags_code = scan.tags_code(&self.config, msg.topic, now);
            self.metas.push(Meta {
                tags_code,
                keys_end: self.keys.len(),
            });
        }
        let one_queue = msgs
            .iter()
            .all(|m| m.queue_id == first.queue_id && m.topic == first.topic);
        let MessageStore {
            disk,
            config,
            log,
            queues,
            index,
            queue_offsets,
            slots,
            staged_since_checkpoint,
            appended,
            metas,
            keys,
            stopped,
            refusal_logged_at,
            ..
        } = self;
        // Queue offsets, and every file dispatch will write created (and its space reserved)
        // before the records go in, so a full disk or a queue file that cannot be made
        // refuses the put cleanly instead of leaving records no queue knows.
        let prepared = (|| -> StoreResult<()> {
            queue_offsets.clear();
            slots.clear();
            if one_queue {
                let cq = queue_slot(queues, slots, config, first.topic, first.queue_id);
                let base = cq.max_offset();
                let mut next = base;
                for msg in msgs {
                    queue_offsets.push(if is_unqueued(msg.sys_flag) { 0 } else { next });
                    next += !is_unqueued(msg.sys_flag) as u64;
                }
                if next > base {
                    cq.prepare_range(disk, base, next)?;
                }
            } else {
                for (i, msg) in msgs.iter().enumerate() {
                    if is_unqueued(msg.sys_flag) {
                        queue_offsets.push(0);
                        continue;
                    }
                    let earlier = msgs[..i]
                        .iter()
                        .filter(|m| {
                            !is_unqueued(m.sys_flag)
                                && m.queue_id == msg.queue_id
                                && m.topic == msg.topic
                        })
                        .count() as u64;
                    let cq = queue_slot(queues, slots, config, msg.topic, msg.queue_id);
                    let offset = cq.max_offset() + earlier;
                    cq.prepare_range(disk, offset, offset + 1)?;
                    queue_offsets.push(offset);
                }
            }
            if !keys.is_empty() {
                let room = (config.index.max_entries as usize - 1).min(keys.len());
                index.prepare(disk, log.write_pos(), now, room)?;
            }
            Ok(())
        })();
        if let Err(e) = prepared {
            if refusal_logged_at.is_none_or(|t| now - t >= REFUSAL_LOG_INTERVAL_MS) {
                *refusal_logged_at = Some(now);
                tracing::warn!(topic = first.topic, queue_id = first.queue_id, error = %e,
                    "put refused: its consume queue or index cannot take it");
            }
            return Err(e);
        }
        appended.clear();
        if let Err(e) = log.append(disk, msgs, queue_offsets, now, appended) {
            if matches!(e, StoreError::Disk(crate::disk::DiskError::Full { .. }))
                && refusal_logged_at.is_none_or(|t| now - t >= REFUSAL_LOG_INTERVAL_MS)
            {
                *refusal_logged_at = Some(now);
                tracing::warn!(error = %e, "put refused: the commit log cannot take it");
            }
            return Err(e);
        }
        let dispatched = (|| -> StoreResult<()> {
            let entry = |i: usize| CqEntry {
                offset: appended[i].offset,
                size: appended[i].size,
                tags_code: metas[i].tags_code,
            };
            // The slots the prepare step found: one for the batch, or one per queued message.
            let mut queued = 0;
            for (i, msg) in msgs.iter().enumerate() {
                if !is_unqueued(msg.sys_flag) {
                    let slot = slots[if one_queue { 0 } else { queued }];
                    queued += 1;
                    queues
                        .at(slot)
                        .put(disk, appended[i].queue_offset, entry(i))?;
                }
            }
            let mut key_from = 0;
            for (i, msg) in msgs.iter().enumerate() {
                for &(from, to) in &keys[key_from..metas[i].keys_end] {
                    index.put(
                        disk,
                        msg.topic,
                        key_str(msg.properties, from, to),
                        appended[i].offset,
                        now,
                    )?;
                }
                key_from = metas[i].keys_end;
            }
            Ok(())
        })();
        let dispatched = dispatched.and_then(|()| {
            // Staged queue entries wait for the next checkpoint; past this many since the
            // last one (a checkpoint that is slow to come), every queue writes its own now.
            *staged_since_checkpoint += queue_offsets.len() as u64;
            if *staged_since_checkpoint >= STAGED_MAX_TOTAL {
                *staged_since_checkpoint = 0;
                for cq in queues.iter_mut() {
                    cq.write_staged(disk)?;
                }
            }
            Ok(())
        });
        if let Err(e) = dispatched {
            *stopped = Some(format!("dispatch failed: {e}"));
            return Err(e);
        }
        Ok(PutResult {
            first: appended[0],
            count: msgs.len(),
            end: log.write_pos(),
        })
    }

    /// Where each message of the last successful put landed, in order.
    pub fn last_appended(&self) -> &[Appended] {
        &self.appended
    }

    /// Queue entries put since the last checkpoint was prepared: at most `STAGED_MAX_TOTAL`
    /// wait in memory.
    pub fn staged_entries(&self) -> u64 {
        self.staged_since_checkpoint
    }

    /// Writes every consume queue entry staged in memory to its file (volatile, like any
    /// write): what a checkpoint or a full stage does on its own.
    pub fn write_staged_queues(&mut self) -> StoreResult<()> {
        for cq in self.queues.iter_mut() {
            cq.write_staged(&mut self.disk)?;
        }
        Ok(())
    }

    /// Everything below this commit log offset is durable.
    pub fn flushed(&self) -> u64 {
        self.log.flushed()
    }
    /// One past the last appended byte.
    pub fn write_pos(&self) -> u64 {
        self.log.write_pos()
    }

    /// Syncs the commit log inline up to the write position (group commit: one sync covers
    /// every message appended so far). Returns the durable offset.
    pub fn sync(&mut self) -> StoreResult<u64> {
        let upto = self.log.write_pos();
        self.log.sync(&mut self.disk, upto)
    }

    /// Syncs everything, marks the checkpoint clean and hands the disk back. A store that
    /// stopped after a disk failure cannot shut down cleanly: drop it (`crash`) and recover.
    pub fn shutdown(mut self, now_ms: u64) -> StoreResult<D> {
        self.checkpoint_inner(java_millis(now_ms), true, true)?;
        self.close_all();
        Ok(self.disk)
    }

    fn close_all(&mut self) {
        self.log.close(&mut self.disk);
        for cq in self.queues.iter_mut() {
            cq.close(&mut self.disk);
        }
        self.index.close(&mut self.disk);
    }

    /// Drops the store as a crash would: nothing synced, nothing closed cleanly.
    pub fn crash(self) -> D {
        self.disk
    }
}

fn is_unqueued(sys_flag: i32) -> bool {
    let t = sys_flag & TRANSACTION_TYPE_MASK;
    t == TRANSACTION_PREPARED || t == TRANSACTION_ROLLBACK
}

/// The queue (created if new), its slot noted in `slots` for the put's dispatch step.
fn queue_slot<'a>(
    queues: &'a mut QueueTable,
    slots: &mut Vec<QueueSlot>,
    config: &StoreConfig,
    topic: &str,
    queue_id: u32,
) -> &'a mut ConsumeQueue {
    let slot = queues.slot_or_create(topic, queue_id, config.consume_queue_entries);
    slots.push(slot);
    queues.at(slot)
}

fn queue_mut<'a>(
    queues: &'a mut QueueTable,
    config: &StoreConfig,
    topic: &str,
    queue_id: u32,
) -> &'a mut ConsumeQueue {
    queues.get_or_create(topic, queue_id, config.consume_queue_entries)
}

/// What one pass over a record's properties finds.
struct PropertyScan<'a> {
    tags: Option<&'a [u8]>,
    delay_level: Option<&'a [u8]>,
    timer_out: Option<&'a [u8]>,
}

impl PropertyScan<'_> {
    /// The consume queue tag code: Java's hashCode of TAGS; for the schedule topic, the
    /// delivery time (RocketMQ's trick so the delay service can scan by time).
    fn tags_code(&self, config: &StoreConfig, topic: &str, store_timestamp: i64) -> i64 {
        if topic == TIMER_TOPIC {
            return self
                .timer_out
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| v.trim().parse::<i64>().ok())
                .unwrap_or(store_timestamp);
        }
        if topic == SCHEDULE_TOPIC {
            let level = self
                .delay_level
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(1)
                .clamp(1, config.delay_levels_ms.len().max(1));
            return store_timestamp + config.delay_levels_ms.get(level - 1).copied().unwrap_or(0);
        }
        match self.tags {
            Some(tags) if !tags.is_empty() => record::java_bytes_hash(tags) as i64,
            _ => 0,
        }
    }
}

/// One pass over "k\x01v\x02...": finds TAGS and DELAY, and appends to `keys` the byte ranges
/// of the index keys (each space-separated word of KEYS, then UNIQ_KEY; non-UTF-8 skipped).
fn scan_properties<'a>(properties: &'a [u8], keys: &mut Vec<(usize, usize)>) -> PropertyScan<'a> {
    let mut scan = PropertyScan {
        tags: None,
        delay_level: None,
        timer_out: None,
    };
    let first_key = keys.len();
    let base = properties.as_ptr() as usize;
    for (name, value) in record::properties(properties) {
        match name {
            b"TAGS" => scan.tags = Some(value),
            b"DELAY" => scan.delay_level = Some(value),
            b"TIMER_OUT_MS" => scan.timer_out = Some(value),
            b"KEYS" if std::str::from_utf8(value).is_ok() => {
                let at = value.as_ptr() as usize - base;
                let mut start = 0;
                for word in value.split(|&b| b == b' ') {
                    if !word.is_empty() {
                        keys.push((at + start, at + start + word.len()));
                    }
                    start += word.len() + 1;
                }
            }
            b"UNIQ_KEY" if !value.is_empty() && std::str::from_utf8(value).is_ok() => {
                let at = value.as_ptr() as usize - base;
                keys.push((at, at + value.len()));
            }
            _ => {}
        }
    }
    if keys.len() - first_key > MAX_KEYS_PER_RECORD {
        tracing::warn!(
            keys = keys.len() - first_key,
            "record has more keys than the index takes; extra keys not indexed"
        );
        keys.truncate(first_key + MAX_KEYS_PER_RECORD);
    }
    scan
}

/// The consume queue tag code of a message (see [`PropertyScan::tags_code`]).
pub fn tags_code(
    config: &StoreConfig,
    topic: &str,
    properties: &[u8],
    store_timestamp: i64,
) -> i64 {
    scan_properties(properties, &mut Vec::new()).tags_code(config, topic, store_timestamp)
}

/// The index keys of a record, as byte ranges of `properties`.
fn index_keys(out: &mut Vec<(usize, usize)>, properties: &[u8]) {
    out.clear();
    scan_properties(properties, out);
}

fn key_str(properties: &[u8], from: usize, to: usize) -> &str {
    // Ranges come from `index_keys`, which only keeps UTF-8 values split at ASCII spaces.
    std::str::from_utf8(&properties[from..to]).unwrap_or("")
}

#[allow(clippy::too_many_arguments)]
fn dispatch<D: Disk>(
    disk: &mut D,
    queues: &mut QueueTable,
    index: &mut IndexService,
    config: &StoreConfig,
    keys: &mut Vec<(usize, usize)>,
    rec: &StoredRecord,
    to_queue: bool,
    to_index: bool,
) -> StoreResult<()> {
    let phy = rec.physical_offset();
    if to_queue && !is_unqueued(rec.sys_flag()) {
        let tags = scan_properties(rec.properties(), &mut Vec::new()).tags_code(
            config,
            rec.topic(),
            rec.store_timestamp(),
        );
        let cq = queue_mut(queues, config, rec.topic(), rec.queue_id());
        cq.put(
            disk,
            rec.queue_offset(),
            CqEntry {
                offset: phy,
                size: rec.total_size(),
                tags_code: tags,
            },
        )?;
    }
    if to_index {
        index_keys(keys, rec.properties());
        for &(from, to) in keys.iter() {
            index.put(
                disk,
                rec.topic(),
                key_str(rec.properties(), from, to),
                phy,
                rec.store_timestamp(),
            )?;
        }
    }
    Ok(())
}

/// Confirms a queue's first and last checkpointed entries against the records they point
/// at. Entries carry no checksum; a damaged queue file shows up here and is rebuilt.
fn check_queue_against_log<D: Disk>(
    disk: &D,
    log: &CommitLog,
    cq: &ConsumeQueue,
    mark: u64,
) -> StoreResult<Option<String>> {
    for logical in [cq.min_offset(), mark - 1] {
        let Some(e) = cq.get_stable(disk, logical)? else {
            return Ok(Some(format!("entry {logical} is missing")));
        };
        if e.offset < log.min_offset() {
            continue; // its record was removed by retention
        }
        let confirmed = (0..4).any(|_| {
            log.read_unbounded(disk, e.offset, e.size).is_ok_and(|rec| {
                rec.queue_offset() == logical
                    && rec.queue_id() == cq.queue_id()
                    && rec.topic() == cq.topic()
            })
        });
        if !confirmed {
            return Ok(Some(format!(
                "entry {logical} does not point at its record (offset {}, size {})",
                e.offset, e.size
            )));
        }
    }
    Ok(None)
}

fn remove_dir_files<D: Disk>(disk: &mut D, dir: &str) -> StoreResult<()> {
    for name in disk.list(dir)? {
        disk.remove(&format!("{dir}/{name}"))?;
    }
    Ok(())
}

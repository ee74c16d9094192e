//! `MessageStore`: the commit log, the consume queues and the index kept in step, plus
//! checkpoint and recovery (RocketMQ's DefaultMessageStore, without threads: every call is
//! synchronous and takes `now` from the caller).
//!
//! Recovery, in order:
//! 1. Read the checkpoint `C` (missing or damaged: recover from the start of the log).
//! 2. Open consume queues; a queue the checkpoint knows but that is missing or shorter than
//!    the checkpoint says is rebuilt from the whole log; every other queue is cut back to its
//!    checkpointed length (later entries are re-derived).
//! 3. Recover the index to its checkpointed state.
//! 4. Scan the commit log from `C` (or earlier, for rebuilds), validating every record, and
//!    re-dispatch each record to its queue and the index. The scan ends at the first position
//!    without a valid record: a torn or corrupt tail is durably zeroed and reported. Damage
//!    below `C` is durable data lost: that is an error naming the file, never a silent cut.
//! 5. Sync everything and write a checkpoint at the recovered end.

use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};

use crate::checkpoint::{Checkpoint, QueueMark};
use crate::commitlog::{Appended, CommitLog, ScanStop};
use crate::consume_queue::{
    Boundary, CONSUMEQUEUE_DIR, ConsumeQueue, CqEntry, QueueSlot, QueueTable,
};
use crate::disk::{CreatedSet, Disk, FileId};
use crate::error::{StoreError, StoreResult};
use crate::index::{IndexConfig, IndexService, MAX_KEYS_PER_RECORD};
use crate::record::{self, StoreMessage, StoredRecord};

/// RocketMQ's schedule topic: delay messages wait here, tag code = delivery time.
pub const SCHEDULE_TOPIC: &str = "SCHEDULE_TOPIC_XXXX";
const TRANSACTION_TYPE_MASK: i32 = 0x3 << 2;
const TRANSACTION_PREPARED: i32 = 0x1 << 2;
const TRANSACTION_ROLLBACK: i32 = 0x3 << 2;
/// Entries a single get may scan when a filter rejects them (RocketMQ's maxFilterMessageCount).
const MAX_FILTER_SCAN: usize = 16_000;

#[derive(Debug, Clone, PartialEq)]
pub struct StoreConfig {
    /// Commit log segment size (RocketMQ's mapedFileSizeCommitLog), default 1 GiB.
    pub commitlog_segment_size: u64,
    /// Entries per consume queue file, default 300,000.
    pub consume_queue_entries: u64,
    /// Largest body accepted (RocketMQ's maxMessageSize), default 4 MiB.
    pub max_message_size: usize,
    pub index: IndexConfig,
    /// Delay level n (1-based) waits `delay_levels_ms[n - 1]`.
    pub delay_levels_ms: Vec<i64>,
    /// For the disk, not the store: how many files `MmapDisk` keeps mapped at once (idle
    /// ones are unmapped, and mapped again on demand). `None`: what `vm.max_map_count`
    /// leaves room for.
    pub max_mapped_files: Option<usize>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            commitlog_segment_size: 1 << 30,
            consume_queue_entries: 300_000,
            max_message_size: 4 << 20,
            index: IndexConfig::default(),
            delay_levels_ms: parse_delay_levels(
                "1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h",
            )
            .expect("default levels parse"),
            max_mapped_files: None,
        }
    }
}

/// The largest commit log segment: the end-of-segment blank marker's length and every record
/// position inside a segment are Java ints in RocketMQ's layout.
pub const MAX_COMMITLOG_SEGMENT: u64 = i32::MAX as u64;
/// The smallest commit log segment accepted.
pub const MIN_COMMITLOG_SEGMENT: u64 = 64 * 1024;

/// The caller's clock (milliseconds, `u64`, as every machine counts time) as the store
/// timestamps records, index entries and checkpoints: Java's `long` milliseconds. The one
/// place the two meet.
pub fn java_millis(now_ms: u64) -> i64 {
    i64::try_from(now_ms).expect("a clock within 292 million years of 1970")
}

impl StoreConfig {
    /// The geometry the simulated tiers run (the simulator and madsim): 1 MiB log segments,
    /// small queue files and index, so short runs roll files and recover across them.
    pub fn simulated() -> StoreConfig {
        StoreConfig {
            commitlog_segment_size: 1 << 20,
            consume_queue_entries: 4_096,
            index: IndexConfig {
                hash_slots: 509,
                max_entries: 8_192,
            },
            ..StoreConfig::default()
        }
    }

    /// The smallest useful geometry, for machine tests: 1 MiB log segments, 1,000-entry
    /// queue files, a 101-slot index.
    pub fn small() -> StoreConfig {
        StoreConfig {
            commitlog_segment_size: 1 << 20,
            consume_queue_entries: 1000,
            index: IndexConfig {
                hash_slots: 101,
                max_entries: 1000,
            },
            ..StoreConfig::default()
        }
    }

    /// Refuses a geometry the store cannot keep, naming the key and the rule.
    pub fn validate(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        let seg = self.commitlog_segment_size;
        if !(MIN_COMMITLOG_SEGMENT..=MAX_COMMITLOG_SEGMENT).contains(&seg) {
            problems.push(format!(
                "mapedFileSizeCommitLog={seg}: must be {MIN_COMMITLOG_SEGMENT}..={MAX_COMMITLOG_SEGMENT}"
            ));
        }
        // A body too large for a segment is refused at put time, naming both sizes.
        if self.max_message_size == 0 {
            problems.push("maxMessageSize=0: must be above 0".into());
        }
        if self.consume_queue_entries == 0 || self.consume_queue_entries > (1 << 26) {
            problems.push(format!(
                "mapedFileSizeConsumeQueue: {} entries per file; must be 1..={}",
                self.consume_queue_entries,
                1u64 << 26
            ));
        }
        let ix = self.index;
        if ix.hash_slots == 0
            || ix.max_entries < 2 * crate::index::MAX_KEYS_PER_RECORD as u32
            || ix.max_entries > 100_000_000
        {
            problems.push(format!(
                "index geometry: maxHashSlotNum={} maxIndexNum={}: slots must be above 0 and entries {}..=100000000",
                ix.hash_slots,
                ix.max_entries,
                2 * crate::index::MAX_KEYS_PER_RECORD
            ));
        }
        if self.delay_levels_ms.is_empty() || self.delay_levels_ms.iter().any(|&d| d <= 0) {
            problems.push("messageDelayLevel: at least one level, each above 0".into());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

/// Parses RocketMQ's messageDelayLevel string ("1s 5s 1m 2h 1d").
pub fn parse_delay_levels(s: &str) -> Result<Vec<i64>, String> {
    s.split_whitespace()
        .map(|level| {
            let (num, unit) = level.split_at(level.len().saturating_sub(1));
            let n: i64 = num
                .parse()
                .map_err(|_| format!("bad delay level {level:?}"))?;
            let ms = match unit {
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                _ => return Err(format!("bad unit in delay level {level:?} (s, m, h or d)")),
            };
            Ok(n * ms)
        })
        .collect()
}

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
}

/// How many of a queue's entries describe records below commit log offset `c` (entries are
/// in log order): the queue's mark in a checkpoint at `c`. Reads one entry when the whole
/// queue is below `c`, else binary-searches.
fn entries_below<D: Disk>(disk: &D, cq: &ConsumeQueue, c: u64) -> StoreResult<u64> {
    let (min, max) = (cq.min_offset(), cq.max_offset());
    if max <= min {
        return Ok(max);
    }
    let below = |i: u64| -> StoreResult<bool> {
        // Stable reads: a transient bit flip must not move a durable barrier.
        Ok(cq
            .get_stable(disk, i)?
            .is_some_and(|e| e.offset + e.size as u64 <= c))
    };
    if below(max - 1)? {
        return Ok(max);
    }
    // The first entry at or past `c` is in [min, max - 1].
    let (mut lo, mut hi) = (min, max - 1);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if below(mid)? {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
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
    /// Opens (or creates) a store on `disk` and recovers it. `now` stamps the checkpoint.
    pub fn open(
        mut disk: D,
        config: StoreConfig,
        now_ms: u64,
    ) -> StoreResult<(Self, RecoveryReport)> {
        let now = java_millis(now_ms);
        config
            .validate()
            .map_err(|what| StoreError::Invalid { what })?;
        let mut report = RecoveryReport::default();
        let checkpoint = match Checkpoint::load(&disk) {
            Ok(cp) => cp,
            Err(e) => {
                report.checkpoint_problem =
                    Some(format!("{e}; recovering from the start of the commit log"));
                None
            }
        };
        report.checkpoint = checkpoint.as_ref().map(|c| c.offset);
        report.clean_shutdown = checkpoint.as_ref().is_some_and(|c| c.clean_shutdown);
        let clean_shutdown = report.clean_shutdown;

        let (log, removed) = CommitLog::load(
            &mut disk,
            config.commitlog_segment_size,
            config.max_message_size,
        )?;
        report.file_repairs.extend(removed);
        report.fresh = checkpoint.is_none()
            && report.checkpoint_problem.is_none()
            && log.segments_end() == 0
            && disk.list(CONSUMEQUEUE_DIR)?.is_empty()
            && IndexService::list(&disk)?.is_empty();
        let log_min = log.min_offset();
        let c = match &checkpoint {
            Some(cp) => {
                let held_end = log.segments_end();
                if cp.offset > held_end {
                    return Err(StoreError::Corrupt {
                        file: crate::commitlog::COMMITLOG_DIR.into(),
                        what: format!(
                            "the checkpoint says {} bytes are durable but the segments end at {held_end}: \
                             commit log segments are missing",
                            cp.offset
                        ),
                    });
                }
                cp.offset.max(log_min)
            }
            None => log_min,
        };

        // Consume queues.
        let marks: BTreeMap<QueueKey, u64> = checkpoint
            .as_ref()
            .map(|cp| {
                cp.queues
                    .iter()
                    .map(|m| ((m.topic.clone(), m.queue_id), m.max_offset))
                    .collect()
            })
            .unwrap_or_default();
        let mut queues = QueueTable::default();
        let mut rebuild: BTreeSet<QueueKey> = BTreeSet::new();
        // How far each queue reached on disk before recovery, to report what was dropped.
        let mut held_before: BTreeMap<QueueKey, u64> = BTreeMap::new();
        for topic in disk.list(CONSUMEQUEUE_DIR)? {
            if validate_topic(&topic).is_err() {
                return Err(StoreError::Corrupt {
                    file: format!("{CONSUMEQUEUE_DIR}/{topic}"),
                    what: "not a valid topic directory".into(),
                });
            }
            for qid in disk.list(&format!("{CONSUMEQUEUE_DIR}/{topic}"))? {
                let queue_id: u32 = qid.parse().map_err(|_| StoreError::Corrupt {
                    file: format!("{CONSUMEQUEUE_DIR}/{topic}/{qid}"),
                    what: "not a queue id directory".into(),
                })?;
                let key = (topic.clone(), queue_id);
                let mut cq = match ConsumeQueue::load(
                    &mut disk,
                    &topic,
                    queue_id,
                    config.consume_queue_entries,
                ) {
                    Ok(cq) => cq,
                    Err(e) => {
                        // Derived data: throw the damaged queue away and rebuild it.
                        report
                            .rebuilt_queues
                            .push(format!("{topic}/{queue_id}: {e}"));
                        rebuild.insert(key.clone());
                        remove_dir_files(&mut disk, &ConsumeQueue::dir(&topic, queue_id))?;
                        ConsumeQueue::new(&topic, queue_id, config.consume_queue_entries)
                    }
                };
                if checkpoint.is_none() {
                    rebuild.insert(key.clone());
                }
                held_before.insert(key.clone(), cq.max_offset());
                let mark = marks.get(&key).copied().unwrap_or(0);
                if !rebuild.contains(&key) && cq.max_offset() < mark {
                    report.rebuilt_queues.push(format!(
                        "{topic}/{queue_id}: holds {} entries, the checkpoint says {mark}",
                        cq.max_offset()
                    ));
                    rebuild.insert(key.clone());
                }
                if !rebuild.contains(&key)
                    && mark > cq.min_offset()
                    && let Some(why) = check_queue_against_log(&disk, &log, &cq, mark)?
                {
                    report
                        .rebuilt_queues
                        .push(format!("{topic}/{queue_id}: {why}"));
                    rebuild.insert(key.clone());
                }
                let keep = if rebuild.contains(&key) { 0 } else { mark };
                if keep == 0 {
                    cq.truncate(&mut disk, 0)?;
                    cq.close(&mut disk);
                    remove_dir_files(&mut disk, &ConsumeQueue::dir(&topic, queue_id))?;
                    cq = ConsumeQueue::new(&topic, queue_id, config.consume_queue_entries);
                } else if !clean_shutdown {
                    cq.truncate(&mut disk, keep)?;
                }
                queues.insert(cq);
            }
        }
        for (key, mark) in &marks {
            if *mark > 0 && !queues.contains(&key.0, key.1) {
                report.rebuilt_queues.push(format!(
                    "{}/{}: missing, the checkpoint says {mark} entries",
                    key.0, key.1
                ));
                rebuild.insert(key.clone());
                queues.insert(ConsumeQueue::new(
                    &key.0,
                    key.1,
                    config.consume_queue_entries,
                ));
            }
        }

        // Index.
        let mut index = IndexService::new(config.index);
        let clean = report.clean_shutdown;
        let (index_from, note) = index.recover(
            &mut disk,
            checkpoint.as_ref().and_then(|cp| cp.index.as_ref()),
            c,
            log_min,
            clean,
        )?;
        report.index_note = note;

        let scan_from = if rebuild.is_empty() {
            c.min(index_from)
        } else {
            log_min
        };
        report.scanned_from = scan_from;
        let mut store = MessageStore {
            disk,
            config,
            log,
            queues,
            index,
            stopped: None,
            appended: Vec::new(),
            queue_offsets: Vec::new(),
            slots: Vec::new(),
            staged_since_checkpoint: 0,
            metas: Vec::new(),
            keys: Vec::new(),
            checkpointed: c,
            refusal_logged_at: None,
            pending_created: CreatedSet::default(),
        };
        store.log.set_positions(scan_from, scan_from);
        let mut redispatched = 0u64;
        let (end, stop) = {
            let MessageStore {
                disk,
                log,
                queues,
                index,
                config,
                keys,
                ..
            } = &mut store;
            let scan_log: &CommitLog = log;
            // The scan only reads the log; dispatch writes queues and the index.
            let mut visit = |disk: &mut D, rec: &StoredRecord| -> StoreResult<()> {
                let phy = rec.physical_offset();
                let key = (rec.topic().to_string(), rec.queue_id());
                let to_queue = phy >= c || rebuild.contains(&key);
                let to_index = phy >= index_from;
                if to_queue || to_index {
                    redispatched += 1;
                    dispatch(disk, queues, index, config, keys, rec, to_queue, to_index)?;
                }
                Ok(())
            };
            scan_log.scan(disk, scan_from, &mut visit)?
        };
        report.redispatched = redispatched;
        if let Some(stop) = &stop {
            if stop.offset < c {
                return Err(StoreError::Corrupt {
                    file: stop.file.clone(),
                    what: format!(
                        "damaged record at offset {} below the checkpoint's durable offset {c}: {}; \
                         refusing to cut durable data (restore the file or move it away)",
                        stop.offset, stop.reason
                    ),
                });
            }
            tracing::warn!(offset = stop.offset, file = %stop.file, reason = %stop.reason, "cutting the commit log's tail");
        }
        if stop.is_some() || !clean {
            let removed = store.log.truncate(&mut store.disk, end, c)?;
            report.file_repairs.extend(removed);
            store.log.redirty(&mut store.disk, c, end)?;
        } else {
            store.log.set_positions(end, c);
        }
        report.truncated = stop;
        report.log_end = end;
        // Queues may hold entries past the end (their records were cut): drop them.
        for cq in store.queues.iter_mut() {
            let Some(last) = cq.max_offset().checked_sub(1) else {
                continue;
            };
            if last < cq.min_offset() {
                continue;
            }
            if let Some(e) = cq.get_stable(&store.disk, last)?
                && e.offset + e.size as u64 > end
            {
                let mut keep = last;
                while keep > cq.min_offset() {
                    match cq.get_stable(&store.disk, keep - 1)? {
                        Some(e) if e.offset + e.size as u64 > end => keep -= 1,
                        _ => break,
                    }
                }
                cq.truncate(&mut store.disk, keep)?;
            }
        }
        for ((topic, queue_id), before) in held_before {
            let after = store.max_offset(&topic, queue_id);
            if after < before {
                report.dropped.push(DroppedRange {
                    topic,
                    queue_id,
                    from: after,
                    to: before,
                });
            }
        }
        store.checkpoint_inner(now, false, true)?;
        Ok((store, report))
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

    /// Records a checkpoint at the commit log's flushed offset C: syncs the consume queues
    /// and the index and writes, for each, how much of it describes records below C. The log
    /// itself is not synced here (the flusher does that, off the machine's task), so a
    /// checkpoint advances under any load: it never waits for appends to pause. Call it
    /// periodically (RocketMQ: every second) to bound the work recovery redoes.
    pub fn checkpoint(&mut self, now_ms: u64) -> StoreResult<()> {
        self.checkpoint_inner(java_millis(now_ms), false, false)
    }

    /// The offset the last checkpoint recorded (recovery starts there).
    pub fn checkpointed(&self) -> u64 {
        self.checkpointed
    }

    fn checkpoint_inner(&mut self, now: i64, clean: bool, sync_log: bool) -> StoreResult<()> {
        if let Some(reason) = self.stopped() {
            return Err(StoreError::Stopped {
                reason: reason.to_string(),
            });
        }
        let result = self.write_checkpoint(now, clean, sync_log);
        if let Err(e) = &result {
            // After a failed sync the kernel may have dropped the dirty pages, and a later
            // sync would "succeed" without them: no checkpoint can be trusted past this point.
            self.stopped = Some(format!("checkpoint failed: {e}"));
        }
        result
    }

    fn write_checkpoint(&mut self, now: i64, clean: bool, sync_log: bool) -> StoreResult<()> {
        let cp = self.prepare_checkpoint_inner(now, clean, sync_log)?;
        self.sync_checkpoint_ranges()?;
        cp.store(&mut self.disk)?;
        self.checkpoint_written(cp.offset);
        Ok(())
    }

    /// Returns the checkpoint at the flushed offset, for the caller to write off its task:
    /// first the consume queue and index ranges it covers are made durable
    /// (`checkpoint_ranges`, or `sync_checkpoint_ranges` inline), then its file is replaced
    /// (an atomic replace fsyncs twice); `checkpoint_written` records it once it is durable.
    /// With thousands of queues those syncs are one filesystem sync taking a hundred
    /// milliseconds and more: never on the task that takes puts. `None` when the flushed
    /// offset has not moved since the last checkpoint. A failed sync stops the store.
    pub fn prepare_checkpoint(&mut self, now_ms: u64) -> StoreResult<Option<Checkpoint>> {
        let now = java_millis(now_ms);
        if let Some(reason) = self.stopped() {
            return Err(StoreError::Stopped {
                reason: reason.to_string(),
            });
        }
        if self.log.flushed() <= self.checkpointed {
            return Ok(None);
        }
        let result = self.prepare_checkpoint_inner(now, false, false);
        if let Err(e) = &result {
            self.stopped = Some(format!("checkpoint failed: {e}"));
        }
        result.map(Some)
    }

    /// How many consume queues hold entries not yet durable: what the next checkpoint
    /// must sync (and, once synced, what the next write to each of them pays: a clean page
    /// of a mapped file faults on its next write).
    pub fn unsynced_queues(&self) -> usize {
        self.queues.iter().filter(|cq| cq.has_unsynced()).count()
    }

    /// The byte ranges the prepared checkpoint needs durable before its file is written,
    /// appended to `out` (consume queue entries and index files written before it).
    pub fn checkpoint_ranges(&self, out: &mut Vec<(FileId, u64, u64)>) {
        for cq in self.queues.iter() {
            cq.pending_ranges(out);
        }
        self.index.pending_ranges(out);
    }

    /// The files whose existence the prepared checkpoint needs durable (queue files created
    /// since the last one), beside its ranges.
    pub fn checkpoint_created(&self) -> &CreatedSet {
        &self.pending_created
    }

    /// The consume queue entries the prepared checkpoint writes before it syncs its ranges,
    /// as `(file, offset, bytes)`: appends staged in memory (see `ConsumeQueue`), for the
    /// caller to write off the task that takes puts.
    pub fn checkpoint_writes(&self, out: &mut Vec<(FileId, u64, Bytes)>) -> StoreResult<()> {
        for cq in self.queues.iter() {
            cq.pending_writes(out)?;
        }
        Ok(())
    }

    /// Makes the prepared checkpoint's writes, ranges and created files durable inline (the
    /// simulator, shutdown).
    pub fn sync_checkpoint_ranges(&mut self) -> StoreResult<()> {
        let mut writes = Vec::new();
        self.checkpoint_writes(&mut writes)?;
        for (file, at, bytes) in writes {
            self.disk.write_at(file, at, &bytes)?;
        }
        let mut ranges = Vec::new();
        self.checkpoint_ranges(&mut ranges);
        self.disk.sync_created_set(&self.pending_created)?;
        Ok(self.disk.sync_ranges(&ranges)?)
    }

    /// A checkpoint from `prepare_checkpoint` is durable, and with it its ranges.
    pub fn checkpoint_written(&mut self, offset: u64) {
        for cq in self.queues.iter_mut() {
            cq.on_synced();
        }
        self.index.on_synced();
        self.pending_created.clear();
        self.checkpointed = self.checkpointed.max(offset);
    }

    /// Writing a prepared checkpoint failed: as with any failed sync, the store stops.
    pub fn checkpoint_failed(&mut self, reason: &str) {
        self.stopped = Some(format!("checkpoint failed: {reason}"));
    }

    fn prepare_checkpoint_inner(
        &mut self,
        now: i64,
        clean: bool,
        sync_log: bool,
    ) -> StoreResult<Checkpoint> {
        if sync_log {
            let upto = self.log.write_pos();
            self.log.sync(&mut self.disk, upto)?;
        }
        let offset = self.log.flushed();
        self.staged_since_checkpoint = 0;
        let mut marks = Vec::with_capacity(self.queues.len());
        for cq in self.queues.iter_mut() {
            cq.prepare_sync();
            marks.push(QueueMark {
                topic: cq.topic().to_string(),
                queue_id: cq.queue_id(),
                max_offset: entries_below(&self.disk, cq, offset)?,
            });
        }
        let index = self.index.prepare_checkpoint(&self.disk, offset)?;
        // Queue files are created without an fsync each: their existence is made durable with
        // the ranges, before the checkpoint can count on them.
        let created = self.disk.take_created();
        self.pending_created.extend(created);
        Ok(Checkpoint {
            clean_shutdown: clean,
            offset,
            timestamp: now,
            index,
            queues: marks,
        })
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

    pub fn max_offset(&self, topic: &str, queue_id: u32) -> u64 {
        self.queue(topic, queue_id)
            .map_or(0, ConsumeQueue::max_offset)
    }
    pub fn min_offset(&self, topic: &str, queue_id: u32) -> u64 {
        self.queue(topic, queue_id)
            .map_or(0, ConsumeQueue::min_offset)
    }
    pub fn queue(&self, topic: &str, queue_id: u32) -> Option<&ConsumeQueue> {
        self.queues.get(topic, queue_id)
    }
    /// Every (topic, queue id) with a consume queue, sorted.
    pub fn queue_ids(&self) -> impl Iterator<Item = (&str, u32)> {
        self.queues.iter().map(|cq| (cq.topic(), cq.queue_id()))
    }

    /// The consume queue entry at `offset`.
    pub fn entry(&self, topic: &str, queue_id: u32, offset: u64) -> StoreResult<Option<CqEntry>> {
        match self.queue(topic, queue_id) {
            Some(cq) => cq.get(&self.disk, offset),
            None => Ok(None),
        }
    }

    /// Reads and validates the record at a commit log offset (view by message id).
    pub fn read(&self, offset: u64) -> StoreResult<StoredRecord> {
        self.log.read(&self.disk, offset, None)
    }

    /// Messages of one queue from `offset` (RocketMQ's getMessage): up to `max_count`
    /// messages and about `max_bytes`, skipping entries whose tag code `filter` rejects.
    pub fn get(
        &self,
        topic: &str,
        queue_id: u32,
        offset: u64,
        max_count: usize,
        max_bytes: usize,
        filter: &dyn Fn(i64) -> bool,
    ) -> StoreResult<GetResult> {
        self.get_below(
            topic,
            queue_id,
            offset,
            max_count,
            max_bytes,
            filter,
            u64::MAX,
        )
    }

    /// The queue's max offset counting only entries whose records end at or below the commit
    /// log offset `upto` (with `upto = flushed()`: the durable part of the queue). Entries are
    /// in commit log order, so this is a boundary: found from the end, galloping then
    /// bisecting, in O(log n) entry reads for n entries past `upto` and one read when none.
    pub fn max_offset_upto(&self, topic: &str, queue_id: u32, upto: u64) -> StoreResult<u64> {
        let Some(cq) = self.queue(topic, queue_id) else {
            return Ok(0);
        };
        let (min, max) = (cq.min_offset(), cq.max_offset());
        let within = |logical: u64| -> StoreResult<bool> {
            Ok(cq
                .get(&self.disk, logical)?
                .is_some_and(|e| e.offset + e.size as u64 <= upto))
        };
        if max <= min || within(max - 1)? {
            return Ok(max);
        }
        // `beyond` is past `upto`; find an entry within it, doubling the step back.
        let (mut inside, mut beyond) = (None, max - 1);
        let mut step = 1;
        while beyond > min {
            let probe = beyond.saturating_sub(step).max(min);
            if within(probe)? {
                inside = Some(probe);
                break;
            }
            beyond = probe;
            step *= 2;
        }
        let Some(mut inside) = inside else {
            return Ok(min);
        };
        while beyond - inside > 1 {
            let mid = inside + (beyond - inside) / 2;
            if within(mid)? {
                inside = mid;
            } else {
                beyond = mid;
            }
        }
        Ok(beyond)
    }

    /// `get`, serving only queue offsets below `below` (at most the queue's max): the max
    /// offset it reports is the lower of the two, so `nextBeginOffset` never passes it.
    #[allow(clippy::too_many_arguments)]
    pub fn get_below(
        &self,
        topic: &str,
        queue_id: u32,
        offset: u64,
        max_count: usize,
        max_bytes: usize,
        filter: &dyn Fn(i64) -> bool,
        below: u64,
    ) -> StoreResult<GetResult> {
        let Some(cq) = self.queue(topic, queue_id) else {
            return Ok(GetResult {
                status: GetStatus::NoMatchedLogicQueue,
                messages: Vec::new(),
                next_offset: 0,
                min_offset: 0,
                max_offset: 0,
            });
        };
        let (min, max) = (
            cq.min_offset(),
            cq.max_offset().min(below).max(cq.min_offset()),
        );
        let result = |status, next_offset, messages| GetResult {
            status,
            messages,
            next_offset,
            min_offset: min,
            max_offset: max,
        };
        if max == 0 {
            return Ok(result(GetStatus::NoMessageInQueue, 0, Vec::new()));
        }
        if offset < min {
            return Ok(result(GetStatus::OffsetTooSmall, min, Vec::new()));
        }
        if offset == max {
            return Ok(result(GetStatus::OffsetOverflowOne, offset, Vec::new()));
        }
        if offset > max {
            return Ok(result(GetStatus::OffsetOverflowBadly, max, Vec::new()));
        }
        let mut messages = Vec::new();
        let mut bytes = 0usize;
        let mut next = offset;
        let mut scanned = 0usize;
        let mut missing = 0usize;
        'outer: while next < max && messages.len() < max_count && scanned < MAX_FILTER_SCAN {
            // Never past `max`: with a `below` bound, entries past it exist but are not served.
            let entries = cq.read(
                &self.disk,
                next,
                (MAX_FILTER_SCAN - scanned)
                    .min(max_count.max(32))
                    .min(usize::try_from(max - next).unwrap_or(usize::MAX)),
            )?;
            if entries.is_empty() {
                break;
            }
            for (logical, e) in entries.iter() {
                if messages.len() >= max_count
                    || (!messages.is_empty() && bytes + e.size as usize > max_bytes)
                {
                    break 'outer;
                }
                next = logical + 1;
                scanned += 1;
                if !filter(e.tags_code) {
                    continue;
                }
                match self.log.read(&self.disk, e.offset, Some(e.size)) {
                    Ok(rec) => {
                        // The entry has no checksum of its own: the record must confirm it.
                        if rec.queue_offset() != logical
                            || rec.queue_id() != queue_id
                            || rec.topic() != topic
                        {
                            return Err(StoreError::Corrupt {
                                file: ConsumeQueue::dir(topic, queue_id),
                                what: format!(
                                    "entry {logical} points at offset {}, a record of {}/{}@{}",
                                    e.offset,
                                    rec.topic(),
                                    rec.queue_id(),
                                    rec.queue_offset()
                                ),
                            });
                        }
                        bytes += rec.total_size() as usize;
                        messages.push(rec);
                    }
                    // Below the log's start: removed by retention. Past its end: damage.
                    Err(StoreError::OffsetOutOfRange { offset, min, .. }) if offset < min => {
                        missing += 1
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        let status = if !messages.is_empty() {
            GetStatus::Found
        } else if missing > 0 {
            GetStatus::OffsetFoundNull
        } else {
            GetStatus::NoMatchedMessage
        };
        Ok(result(status, next, messages))
    }

    /// Messages whose KEYS or UNIQ_KEY equal `key`, stored within `[begin, end]` (ms), newest
    /// first, at most `max`. Every index hit is confirmed against the record itself.
    pub fn query_by_key(
        &self,
        topic: &str,
        key: &str,
        begin: i64,
        end: i64,
        max: usize,
    ) -> StoreResult<Vec<StoredRecord>> {
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        let mut keys = Vec::new();
        for phy in self.index.query(
            &self.disk,
            topic,
            key,
            begin,
            end,
            max.saturating_mul(4).max(max),
        )? {
            if out.len() >= max || !seen.insert(phy) {
                continue;
            }
            let rec = match self.log.read(&self.disk, phy, None) {
                Ok(rec) => rec,
                Err(StoreError::OffsetOutOfRange { .. }) => continue,
                Err(e) => return Err(e),
            };
            index_keys(&mut keys, rec.properties());
            let ts = rec.store_timestamp();
            let has_key = keys
                .iter()
                .any(|&(f, t)| key_str(rec.properties(), f, t) == key);
            if rec.topic() == topic && has_key && ts >= begin && ts <= end {
                out.push(rec);
            }
        }
        Ok(out)
    }

    /// RocketMQ's SEARCH_OFFSET_BY_TIMESTAMP for one queue.
    pub fn offset_by_time(
        &self,
        topic: &str,
        queue_id: u32,
        timestamp: i64,
        boundary: Boundary,
    ) -> StoreResult<u64> {
        match self.queue(topic, queue_id) {
            Some(cq) => cq.offset_by_time(&self.disk, &self.log, timestamp, boundary),
            None => Ok(0),
        }
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
}

impl PropertyScan<'_> {
    /// The consume queue tag code: Java's hashCode of TAGS; for the schedule topic, the
    /// delivery time (RocketMQ's trick so the delay service can scan by time).
    fn tags_code(&self, config: &StoreConfig, topic: &str, store_timestamp: i64) -> i64 {
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
    };
    let first_key = keys.len();
    let base = properties.as_ptr() as usize;
    for (name, value) in record::properties(properties) {
        match name {
            b"TAGS" => scan.tags = Some(value),
            b"DELAY" => scan.delay_level = Some(value),
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

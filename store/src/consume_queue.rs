//! A consume queue: the per-(topic, queue) index into the commit log. Entry `n` (the logical
//! offset) is 20 bytes at byte `20 * n`: commit log offset (i64), record size (i32) and tag
//! hash code (i64), big-endian, in segments of `entries_per_file` entries (RocketMQ's default
//! 300,000). It is derived data: recovery rebuilds whatever a crash left unsynced.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;

use crate::commitlog::CommitLog;
use crate::disk::{Disk, FileId, stable_read_at};
use crate::error::{StoreError, StoreResult};
use crate::segments::{Allocation, SegmentQueue};

pub const CONSUMEQUEUE_DIR: &str = "consumequeue";
pub const CQ_ENTRY_SIZE: u64 = 20;
/// Entries read per step when loading: a queue is scanned up to its first unwritten entry,
/// not read whole (most of a new queue's file is a hole).
const LOAD_STEP_ENTRIES: u64 = 3276;
/// Most entries a queue holds in memory before it writes them to its file on the put path
/// (a hot queue writes a few pages at a time; a quiet one waits for the next checkpoint).
pub const STAGED_MAX_ENTRIES: u64 = 256;
/// An empty stage keeps at most this much memory across a checkpoint.
const STAGED_KEEP_BYTES: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CqEntry {
    pub offset: u64,
    pub size: u32,
    pub tags_code: i64,
}

impl CqEntry {
    pub fn encode(&self) -> [u8; 20] {
        let mut b = [0u8; 20];
        b[..8].copy_from_slice(&self.offset.to_be_bytes());
        b[8..12].copy_from_slice(&self.size.to_be_bytes());
        b[12..].copy_from_slice(&self.tags_code.to_be_bytes());
        b
    }
    pub fn decode(b: &[u8]) -> CqEntry {
        CqEntry {
            offset: u64::from_be_bytes(b[..8].try_into().expect("20-byte entry")),
            size: u32::from_be_bytes(b[8..12].try_into().expect("20-byte entry")),
            tags_code: i64::from_be_bytes(b[12..20].try_into().expect("20-byte entry")),
        }
    }
    /// Unwritten space reads as size 0; no record is that small.
    fn is_written(&self) -> bool {
        self.size > 0
    }
}

/// Entries read in one go: they come from a single segment.
pub struct CqEntries {
    pub first: u64,
    bytes: Bytes,
}

impl CqEntries {
    pub fn len(&self) -> usize {
        self.bytes.len() / CQ_ENTRY_SIZE as usize
    }
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
    pub fn iter(&self) -> impl Iterator<Item = (u64, CqEntry)> + '_ {
        self.bytes
            .chunks_exact(CQ_ENTRY_SIZE as usize)
            .enumerate()
            .map(|(i, b)| (self.first + i as u64, CqEntry::decode(b)))
    }
}

/// Which side of a timestamp to land on (RocketMQ's BoundaryType).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Boundary {
    /// The first offset whose message was stored at or after the time.
    Lower,
    /// The last offset whose message was stored at or before the time.
    Upper,
}

pub struct ConsumeQueue {
    topic: String,
    queue_id: u32,
    segments: SegmentQueue,
    min: u64,
    max: u64,
    /// Entries below this are durable.
    flushed: u64,
    /// Entries below this are being made durable by a prepared checkpoint (off the writer's
    /// task); they count as durable once it is written.
    syncing_to: u64,
    /// Entries `[staged_from, max)`, encoded, held in memory. Appends land here and reach the
    /// file in batches: with a checkpoint's writes (run off the writer's task), or inline once
    /// `STAGED_MAX_ENTRIES` wait. Why: after every sync each queue file's last page is clean
    /// and write-protected, so the first append to it is a page fault with an inode update;
    /// at 10,000 topics (40,000 files) that fault storm followed every checkpoint on the
    /// writer's task and cost ~20 % of throughput for two seconds in ten.
    staged: Vec<u8>,
    staged_from: u64,
    /// Entries below this were written to the file, or handed to a checkpoint's writes.
    handed_to: u64,
    /// A prepared checkpoint writes the staged entries below this; they leave memory once it
    /// is written (`on_synced`).
    writing_to: Option<u64>,
}

impl ConsumeQueue {
    pub fn dir(topic: &str, queue_id: u32) -> String {
        format!("{CONSUMEQUEUE_DIR}/{topic}/{queue_id}")
    }

    pub fn new(topic: &str, queue_id: u32, entries_per_file: u64) -> Self {
        ConsumeQueue {
            topic: topic.to_string(),
            queue_id,
            segments: SegmentQueue::new(
                Self::dir(topic, queue_id),
                entries_per_file * CQ_ENTRY_SIZE,
                Allocation::CONSUME_QUEUE,
            ),
            min: 0,
            max: 0,
            flushed: 0,
            syncing_to: 0,
            staged: Vec::new(),
            staged_from: 0,
            handed_to: 0,
            writing_to: None,
        }
    }

    /// Opens the queue's segments and finds how many entries they hold: the written prefix of
    /// the last segment (entries are written in order, so the first unwritten one ends it).
    pub fn load<D: Disk>(
        disk: &mut D,
        topic: &str,
        queue_id: u32,
        entries_per_file: u64,
    ) -> StoreResult<Self> {
        let (segments, _) = SegmentQueue::load(
            disk,
            Self::dir(topic, queue_id),
            entries_per_file * CQ_ENTRY_SIZE,
            Allocation::CONSUME_QUEUE,
        )?;
        let mut q = ConsumeQueue {
            topic: topic.to_string(),
            queue_id,
            segments,
            min: 0,
            max: 0,
            flushed: 0,
            syncing_to: 0,
            staged: Vec::new(),
            staged_from: 0,
            handed_to: 0,
            writing_to: None,
        };
        let Some(first) = q.segments.first_start() else {
            return Ok(q);
        };
        let per_file = q.segments.size / CQ_ENTRY_SIZE;
        q.min = first / CQ_ENTRY_SIZE;
        // Within the first segment the queue may start late (retention, or a rebuild that
        // began mid-queue): skip unwritten entries there.
        let first_seg = q.segments.segments[0].file;
        let skip = scan_entries(disk, first_seg, 0, per_file, true)?;
        if skip < per_file {
            q.min += skip;
        }
        let last = q.segments.segments.last().expect("non-empty").clone();
        let from = if q.segments.segments.len() == 1 {
            q.min - first / CQ_ENTRY_SIZE
        } else {
            0
        };
        let written_end = if from >= per_file {
            from
        } else {
            scan_entries(disk, last.file, from, per_file, false)?
        };
        q.max = last.start / CQ_ENTRY_SIZE + written_end;
        q.min = q.min.min(q.max);
        q.flushed = q.max;
        q.syncing_to = q.max;
        q.staged_from = q.max;
        q.handed_to = q.max;
        Ok(q)
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }
    pub fn queue_id(&self) -> u32 {
        self.queue_id
    }
    /// Smallest logical offset held.
    pub fn min_offset(&self) -> u64 {
        self.min
    }
    /// One past the largest logical offset held: the next message's queue offset.
    pub fn max_offset(&self) -> u64 {
        self.max
    }

    /// Writes entry `logical`. Appends when `logical == max`; rewrites an existing entry
    /// (recovery re-dispatch is idempotent); an empty queue may start at any offset.
    pub fn put<D: Disk>(&mut self, disk: &mut D, logical: u64, entry: CqEntry) -> StoreResult<()> {
        debug_assert!(entry.size > 0, "a record is never empty");
        if self.min == self.max && logical != self.max {
            assert!(self.staged.is_empty(), "an empty queue stages nothing");
            self.min = logical;
            self.max = logical;
            self.staged_from = logical;
            self.handed_to = logical;
            self.unflush(logical);
        }
        if logical > self.max {
            return Err(StoreError::Invalid {
                what: format!(
                    "{}: entry {logical} would leave a gap after {} (commit log offset {})",
                    self.segments.dir, self.max, entry.offset
                ),
            });
        }
        if logical < self.min {
            return Ok(());
        }
        // The entry's segment exists and its space is reserved before it is staged, so that
        // writing it later (off this task, too) cannot fail for lack of space.
        let (file, at) = self
            .segments
            .for_write(disk, logical * CQ_ENTRY_SIZE, CQ_ENTRY_SIZE)?;
        let bytes = entry.encode();
        if logical == self.max {
            self.staged.extend_from_slice(&bytes);
            self.max += 1;
        } else if logical >= self.staged_from {
            // A re-dispatch rewriting a staged entry (recovery: no checkpoint is writing).
            assert!(
                self.writing_to.is_none(),
                "rewrite while a checkpoint writes"
            );
            let i = ((logical - self.staged_from) * CQ_ENTRY_SIZE) as usize;
            self.staged[i..i + CQ_ENTRY_SIZE as usize].copy_from_slice(&bytes);
            if logical < self.handed_to {
                disk.write_at(file, at, &bytes)?;
            }
        } else {
            disk.write_at(file, at, &bytes)?;
        }
        self.unflush(logical);
        // Buggify: write entries out at once (reads then come from the file, not the stage).
        if self.max - self.handed_to >= STAGED_MAX_ENTRIES || crate::buggify!("store.cq.write-now")
        {
            self.write_staged(disk)?;
        }
        self.check_staged();
        Ok(())
    }

    /// Writes the staged entries not yet handed to the file, on this task; they leave memory
    /// at once unless a checkpoint is writing (then with it).
    pub fn write_staged<D: Disk>(&mut self, disk: &mut D) -> StoreResult<()> {
        if self.handed_to < self.max {
            let mut at = self.handed_to;
            while at < self.max {
                let (file, in_seg, n) = self.staged_chunk(at, self.max)?;
                let i = ((at - self.staged_from) * CQ_ENTRY_SIZE) as usize;
                disk.write_at(
                    file,
                    in_seg,
                    &self.staged[i..i + (n * CQ_ENTRY_SIZE) as usize],
                )?;
                at += n;
            }
            self.handed_to = self.max;
        }
        if self.writing_to.is_none() {
            self.staged.clear();
            self.staged_from = self.max;
        }
        self.check_staged();
        Ok(())
    }

    /// The staged entries `[from, to)` as writes `(file, offset, bytes)`, one per segment.
    fn staged_writes(&self, from: u64, to: u64) -> StoreResult<Vec<(FileId, u64, Bytes)>> {
        debug_assert!(self.staged_from <= from && from <= to && to <= self.max);
        let mut out = Vec::new();
        let mut at = from;
        while at < to {
            let (file, in_seg, n) = self.staged_chunk(at, to)?;
            let i = ((at - self.staged_from) * CQ_ENTRY_SIZE) as usize;
            let bytes = Bytes::copy_from_slice(&self.staged[i..i + (n * CQ_ENTRY_SIZE) as usize]);
            out.push((file, in_seg, bytes));
            at += n;
        }
        Ok(out)
    }

    /// Where staged entry `at` goes `(file, offset in it)`, and how many of `[at, to)` fit
    /// in that segment.
    fn staged_chunk(&self, at: u64, to: u64) -> StoreResult<(FileId, u64, u64)> {
        let (seg, in_seg) =
            self.segments
                .locate(at * CQ_ENTRY_SIZE)
                .ok_or_else(|| StoreError::Corrupt {
                    file: self.segments.dir.clone(),
                    what: format!("no segment holds staged entry {at}"),
                })?;
        let n = ((self.segments.size - in_seg) / CQ_ENTRY_SIZE).min(to - at);
        Ok((seg.file, in_seg, n))
    }

    /// The staged bytes are exactly the entries `[staged_from, max)`.
    fn check_staged(&self) {
        debug_assert!(self.staged_from <= self.handed_to && self.handed_to <= self.max);
        debug_assert_eq!(
            self.staged.len() as u64,
            (self.max - self.staged_from) * CQ_ENTRY_SIZE
        );
        debug_assert!(
            self.writing_to
                .is_none_or(|w| self.staged_from <= w && w <= self.handed_to)
        );
    }

    /// Makes sure the segments for entries `[from, to)` exist and their space is reserved,
    /// so that later `put`s of them cannot fail for lack of space. `from` must be at most
    /// `max_offset()`.
    pub fn prepare_range<D: Disk>(&mut self, disk: &mut D, from: u64, to: u64) -> StoreResult<()> {
        if from < self.min || from > self.max || to <= from {
            return Ok(());
        }
        let per_file = self.segments.size / CQ_ENTRY_SIZE;
        let mut at = from;
        while at < to {
            let seg_end = ((at / per_file + 1) * per_file).min(to);
            self.segments
                .for_write(disk, at * CQ_ENTRY_SIZE, (seg_end - at) * CQ_ENTRY_SIZE)?;
            at = seg_end;
        }
        Ok(())
    }

    pub fn get<D: Disk>(&self, disk: &D, logical: u64) -> StoreResult<Option<CqEntry>> {
        Ok(self.read(disk, logical, 1)?.iter().next().map(|(_, e)| e))
    }

    /// `get`, read until stable (for recovery decisions).
    pub(crate) fn get_stable<D: Disk>(
        &self,
        disk: &D,
        logical: u64,
    ) -> StoreResult<Option<CqEntry>> {
        if logical < self.min || logical >= self.max {
            return Ok(None);
        }
        if logical >= self.staged_from {
            let i = ((logical - self.staged_from) * CQ_ENTRY_SIZE) as usize;
            return Ok(Some(CqEntry::decode(
                &self.staged[i..i + CQ_ENTRY_SIZE as usize],
            )));
        }
        let Some((seg, at)) = self.segments.locate(logical * CQ_ENTRY_SIZE) else {
            return Ok(None);
        };
        let b = stable_read_at(disk, seg.file, at, CQ_ENTRY_SIZE as usize)?;
        Ok(Some(CqEntry::decode(&b)))
    }

    /// Up to `max` entries from `from`, stopping at the end of `from`'s segment.
    pub fn read<D: Disk>(&self, disk: &D, from: u64, max: usize) -> StoreResult<CqEntries> {
        if from < self.min || from >= self.max || max == 0 {
            return Ok(CqEntries {
                first: from,
                bytes: Bytes::new(),
            });
        }
        if from >= self.staged_from {
            let i = ((from - self.staged_from) * CQ_ENTRY_SIZE) as usize;
            let n = (max as u64).min(self.max - from);
            let bytes = Bytes::copy_from_slice(&self.staged[i..i + (n * CQ_ENTRY_SIZE) as usize]);
            return Ok(CqEntries { first: from, bytes });
        }
        let (seg, at) =
            self.segments
                .locate(from * CQ_ENTRY_SIZE)
                .ok_or_else(|| StoreError::Corrupt {
                    file: self.segments.dir.clone(),
                    what: format!("no segment holds entry {from}"),
                })?;
        let in_seg = (self.segments.size - at) / CQ_ENTRY_SIZE;
        // Up to the staged entries: those are read from memory by the next call.
        let n = (max as u64).min(self.staged_from - from).min(in_seg);
        let bytes = disk.read_at(seg.file, at, (n * CQ_ENTRY_SIZE) as usize)?;
        Ok(CqEntries { first: from, bytes })
    }

    /// Drops entries from `logical` on (durably zeroed), e.g. ones past a truncated log end.
    /// Zeroes to the end of the segment even past `max_offset()`: a torn page can leave
    /// stale entries beyond a hole, where loading (which stops at the hole) never saw them.
    pub fn truncate<D: Disk>(&mut self, disk: &mut D, logical: u64) -> StoreResult<()> {
        let logical = logical.clamp(self.min, self.max);
        assert!(
            self.writing_to.is_none(),
            "truncate while a checkpoint writes"
        );
        if logical < self.staged_from {
            self.staged.clear();
            self.staged_from = logical;
        } else {
            self.staged
                .truncate(((logical - self.staged_from) * CQ_ENTRY_SIZE) as usize);
        }
        self.handed_to = self.handed_to.min(logical);
        self.segments.truncate(disk, logical * CQ_ENTRY_SIZE)?;
        self.max = logical;
        self.unflush(logical);
        if self.max == self.min && self.segments.segments.is_empty() {
            self.min = 0;
            self.max = 0;
            self.staged_from = 0;
            self.handed_to = 0;
        }
        self.check_staged();
        Ok(())
    }

    /// Entries from `logical` on changed: they are not durable (nor being made so) anymore.
    fn unflush(&mut self, logical: u64) {
        self.flushed = self.flushed.min(logical);
        self.syncing_to = self.syncing_to.min(logical);
    }

    /// Entries written and not yet durable.
    pub(crate) fn has_unsynced(&self) -> bool {
        self.flushed < self.max
    }

    /// A checkpoint is being prepared: the entries written so far are to be made durable
    /// before it is written (`pending_ranges`), and count as durable once it is (`on_synced`).
    pub(crate) fn prepare_sync(&mut self) {
        self.syncing_to = self.max;
        // Every staged entry is written again by the checkpoint (rewriting ones already
        // written inline is harmless); nothing on this task writes below `max` meanwhile.
        if self.staged_from < self.max {
            self.writing_to = Some(self.max);
            self.handed_to = self.max;
        }
        self.check_staged();
    }

    /// The writes the prepared checkpoint makes before it syncs, appended to `out`.
    pub(crate) fn pending_writes(&self, out: &mut Vec<(FileId, u64, Bytes)>) -> StoreResult<()> {
        if let Some(to) = self.writing_to {
            out.extend(self.staged_writes(self.staged_from, to)?);
        }
        Ok(())
    }

    /// The byte ranges the prepared checkpoint needs durable, appended to `out`.
    pub(crate) fn pending_ranges(&self, out: &mut Vec<(FileId, u64, u64)>) {
        if self.flushed < self.syncing_to {
            out.extend(self.segments.ranges(
                self.flushed * CQ_ENTRY_SIZE,
                self.syncing_to * CQ_ENTRY_SIZE,
            ));
        }
    }

    /// The ranges from `pending_ranges` were made durable.
    pub(crate) fn on_synced(&mut self) {
        self.flushed = self.flushed.max(self.syncing_to.min(self.max));
        if let Some(to) = self.writing_to.take() {
            self.staged
                .drain(..((to - self.staged_from) * CQ_ENTRY_SIZE) as usize);
            self.staged_from = to;
        }
        // A queue that went quiet gives its stage back: 40,000 queues that were each busy
        // once must not keep 5 KiB apiece.
        if self.staged.is_empty() && self.staged.capacity() > STAGED_KEEP_BYTES {
            self.staged = Vec::new();
        }
        self.check_staged();
    }

    /// Makes every entry durable.
    pub fn sync<D: Disk>(&mut self, disk: &mut D) -> StoreResult<()> {
        self.write_staged(disk)?;
        if self.flushed < self.max {
            self.segments
                .sync(disk, self.flushed * CQ_ENTRY_SIZE, self.max * CQ_ENTRY_SIZE)?;
            self.flushed = self.max;
        }
        Ok(())
    }

    /// The logical offset whose message's store time is nearest `timestamp` on the given side
    /// (RocketMQ's getOffsetInQueueByTime): binary search over store timestamps read from the
    /// commit log. Clamps to `[min, max]`.
    pub fn offset_by_time<D: Disk>(
        &self,
        disk: &D,
        log: &CommitLog,
        timestamp: i64,
        boundary: Boundary,
    ) -> StoreResult<u64> {
        if self.min == self.max {
            return Ok(self.max);
        }
        let time_at = |logical: u64| -> StoreResult<Option<i64>> {
            let Some(e) = self.get(disk, logical)? else {
                return Ok(None);
            };
            match log.read(disk, e.offset, Some(e.size)) {
                Ok(rec) => Ok(Some(rec.store_timestamp())),
                Err(StoreError::OffsetOutOfRange { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        };
        // Entries whose record was removed by retention count as "before everything".
        let (mut lo, mut hi) = (self.min, self.max);
        match boundary {
            Boundary::Lower => {
                while lo < hi {
                    let mid = lo + (hi - lo) / 2;
                    match time_at(mid)? {
                        Some(t) if t >= timestamp => hi = mid,
                        _ => lo = mid + 1,
                    }
                }
                Ok(lo)
            }
            Boundary::Upper => {
                while lo < hi {
                    let mid = lo + (hi - lo) / 2;
                    match time_at(mid)? {
                        Some(t) if t > timestamp => hi = mid,
                        _ => lo = mid + 1,
                    }
                }
                Ok(lo.saturating_sub(1).max(self.min))
            }
        }
    }

    pub(crate) fn close<D: Disk>(&mut self, disk: &mut D) {
        self.segments.close_all(disk);
    }
}

/// Scans entries `[from, per_file)` of one segment file in steps, each read until stable, for
/// the first entry that is unwritten (`find_written == false`) or written (`true`). Returns
/// its index, or `per_file` if there is none.
fn scan_entries<D: Disk>(
    disk: &D,
    file: FileId,
    from: u64,
    per_file: u64,
    find_written: bool,
) -> StoreResult<u64> {
    let mut at = from;
    while at < per_file {
        let n = LOAD_STEP_ENTRIES.min(per_file - at);
        let bytes = stable_read_at(disk, file, at * CQ_ENTRY_SIZE, (n * CQ_ENTRY_SIZE) as usize)?;
        if let Some(i) = bytes
            .chunks_exact(CQ_ENTRY_SIZE as usize)
            .position(|b| CqEntry::decode(b).is_written() == find_written)
        {
            return Ok(at + i as u64);
        }
        at += n;
    }
    Ok(per_file)
}

/// A consume queue's place in a [`QueueTable`], stable for the table's life (queues are never
/// removed from it), so a put finds its queue once and uses it for prepare and dispatch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueSlot(u32);

/// std's SipHash with fixed keys, for maps looked up by topic on the put path: fast enough
/// for short names, and unlike `RandomState` the same in every run, so a simulated run that
/// iterates such a map still replays exactly.
pub type FixedHasher = std::hash::BuildHasherDefault<std::hash::DefaultHasher>;

/// Every consume queue. Looked up by hashing the topic (a put at 10,000 topics costs one probe,
/// where a sorted map walked ~20 string comparisons, each a cache miss); iterated in sorted
/// (topic, queue id) order so that checkpoints and listings are the same in every run. Looks up
/// by `&str` so the hot path never builds a key.
#[derive(Default)]
pub struct QueueTable {
    queues: Vec<ConsumeQueue>,
    by_topic: HashMap<String, BTreeMap<u32, QueueSlot>, FixedHasher>,
    sorted: BTreeMap<String, BTreeMap<u32, QueueSlot>>,
}

impl QueueTable {
    pub fn slot(&self, topic: &str, queue_id: u32) -> Option<QueueSlot> {
        self.by_topic.get(topic)?.get(&queue_id).copied()
    }

    pub fn get(&self, topic: &str, queue_id: u32) -> Option<&ConsumeQueue> {
        self.slot(topic, queue_id)
            .map(|s| &self.queues[s.0 as usize])
    }

    pub fn contains(&self, topic: &str, queue_id: u32) -> bool {
        self.slot(topic, queue_id).is_some()
    }

    /// The queue in a slot this table handed out.
    pub fn at(&mut self, slot: QueueSlot) -> &mut ConsumeQueue {
        &mut self.queues[slot.0 as usize]
    }

    /// The queue's slot, the queue created empty if new (allocates only then).
    pub fn slot_or_create(
        &mut self,
        topic: &str,
        queue_id: u32,
        entries_per_file: u64,
    ) -> QueueSlot {
        match self.slot(topic, queue_id) {
            Some(slot) => slot,
            None => self.insert(ConsumeQueue::new(topic, queue_id, entries_per_file)),
        }
    }

    /// The queue, created empty if new (allocates only then).
    pub fn get_or_create(
        &mut self,
        topic: &str,
        queue_id: u32,
        entries_per_file: u64,
    ) -> &mut ConsumeQueue {
        let slot = self.slot_or_create(topic, queue_id, entries_per_file);
        self.at(slot)
    }

    /// Adds a queue, replacing one with the same topic and queue id.
    pub fn insert(&mut self, cq: ConsumeQueue) -> QueueSlot {
        if let Some(slot) = self.slot(&cq.topic, cq.queue_id) {
            self.queues[slot.0 as usize] = cq;
            return slot;
        }
        let slot = QueueSlot(u32::try_from(self.queues.len()).expect("fewer than 2^32 queues"));
        self.by_topic
            .entry(cq.topic.clone())
            .or_default()
            .insert(cq.queue_id, slot);
        self.sorted
            .entry(cq.topic.clone())
            .or_default()
            .insert(cq.queue_id, slot);
        self.queues.push(cq);
        debug_assert_eq!(self.by_topic.len(), self.sorted.len());
        slot
    }

    pub fn len(&self) -> usize {
        self.queues.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }

    fn sorted_slots(&self) -> impl Iterator<Item = QueueSlot> + '_ {
        self.sorted.values().flat_map(|q| q.values().copied())
    }

    pub fn iter(&self) -> impl Iterator<Item = &ConsumeQueue> {
        self.sorted_slots().map(|s| &self.queues[s.0 as usize])
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut ConsumeQueue> {
        // Hands each queue out once, in sorted order: the slots are a permutation of the
        // vector's indices.
        let mut by_slot: Vec<Option<&mut ConsumeQueue>> =
            self.queues.iter_mut().map(Some).collect();
        let order: Vec<QueueSlot> = self
            .sorted
            .values()
            .flat_map(|q| q.values().copied())
            .collect();
        order
            .into_iter()
            .map(move |s| by_slot[s.0 as usize].take().expect("each slot once"))
    }
}

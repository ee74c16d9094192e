//! A consume queue: the per-(topic, queue) index into the commit log. Entry `n` (the logical
//! offset) is 20 bytes at byte `20 * n`: commit log offset (i64), record size (i32) and tag
//! hash code (i64), big-endian, in segments of `entries_per_file` entries (RocketMQ's default
//! 300,000). It is derived data: recovery rebuilds whatever a crash left unsynced.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::commitlog::CommitLog;
use crate::disk::{Disk, stable_read_at};
use crate::error::{StoreError, StoreResult};
use crate::segments::{Allocation, SegmentQueue};

pub const CONSUMEQUEUE_DIR: &str = "consumequeue";
pub const CQ_ENTRY_SIZE: u64 = 20;
/// Entries read per step when loading: a queue is scanned up to its first unwritten entry,
/// not read whole (most of a new queue's file is a hole).
const LOAD_STEP_ENTRIES: u64 = 3276;

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
            self.min = logical;
            self.max = logical;
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
        let (file, at) = self
            .segments
            .for_write(disk, logical * CQ_ENTRY_SIZE, CQ_ENTRY_SIZE)?;
        disk.write_at(file, at, &entry.encode())?;
        if logical == self.max {
            self.max += 1;
        }
        self.unflush(logical);
        Ok(())
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
        let (seg, at) =
            self.segments
                .locate(from * CQ_ENTRY_SIZE)
                .ok_or_else(|| StoreError::Corrupt {
                    file: self.segments.dir.clone(),
                    what: format!("no segment holds entry {from}"),
                })?;
        let in_seg = (self.segments.size - at) / CQ_ENTRY_SIZE;
        let n = (max as u64).min(self.max - from).min(in_seg);
        let bytes = disk.read_at(seg.file, at, (n * CQ_ENTRY_SIZE) as usize)?;
        Ok(CqEntries { first: from, bytes })
    }

    /// Drops entries from `logical` on (durably zeroed), e.g. ones past a truncated log end.
    /// Zeroes to the end of the segment even past `max_offset()`: a torn page can leave
    /// stale entries beyond a hole, where loading (which stops at the hole) never saw them.
    pub fn truncate<D: Disk>(&mut self, disk: &mut D, logical: u64) -> StoreResult<()> {
        let logical = logical.clamp(self.min, self.max);
        self.segments.truncate(disk, logical * CQ_ENTRY_SIZE)?;
        self.max = logical;
        self.unflush(logical);
        if self.max == self.min && self.segments.segments.is_empty() {
            self.min = 0;
            self.max = 0;
        }
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
    }

    /// The byte ranges the prepared checkpoint needs durable, appended to `out`.
    pub(crate) fn pending_ranges(&self, out: &mut Vec<(crate::disk::FileId, u64, u64)>) {
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
    }

    /// Makes every entry durable.
    pub fn sync<D: Disk>(&mut self, disk: &mut D) -> StoreResult<()> {
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
    file: crate::disk::FileId,
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

/// Every consume queue, by topic then queue id (sorted: iteration order is stable). Looks up
/// by `&str` so the hot path never builds a key.
#[derive(Default)]
pub struct QueueTable {
    topics: BTreeMap<String, BTreeMap<u32, ConsumeQueue>>,
}

impl QueueTable {
    pub fn get(&self, topic: &str, queue_id: u32) -> Option<&ConsumeQueue> {
        self.topics.get(topic)?.get(&queue_id)
    }

    pub fn contains(&self, topic: &str, queue_id: u32) -> bool {
        self.get(topic, queue_id).is_some()
    }

    /// The queue, created empty if new (allocates only then).
    pub fn get_or_create(
        &mut self,
        topic: &str,
        queue_id: u32,
        entries_per_file: u64,
    ) -> &mut ConsumeQueue {
        if !self.topics.contains_key(topic) {
            self.topics.insert(topic.to_string(), BTreeMap::new());
        }
        let queues = self.topics.get_mut(topic).expect("just ensured");
        queues
            .entry(queue_id)
            .or_insert_with(|| ConsumeQueue::new(topic, queue_id, entries_per_file))
    }

    pub fn insert(&mut self, cq: ConsumeQueue) {
        self.topics
            .entry(cq.topic.clone())
            .or_default()
            .insert(cq.queue_id, cq);
    }

    pub fn len(&self) -> usize {
        self.topics.values().map(BTreeMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = &ConsumeQueue> {
        self.topics.values().flat_map(BTreeMap::values)
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut ConsumeQueue> {
        self.topics.values_mut().flat_map(BTreeMap::values_mut)
    }
}

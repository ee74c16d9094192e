//! A directory of fixed-size segment files named by their 20-digit start offset (RocketMQ's
//! MappedFileQueue): the commit log and every consume queue are one of these.
//!
//! Segments are created sparse and their space is reserved in chunks just ahead of the
//! writes (`Disk::reserve`), growing with what the segment already holds: a queue with ten
//! entries occupies a page, not its full 6 MB, and a full disk is an error before a write,
//! never a SIGBUS during one.

use crate::disk::{Disk, DiskError, FileId};
use crate::error::{StoreError, StoreResult, offset_name, parse_offset_name};

#[derive(Debug, Clone)]
pub(crate) struct Segment {
    pub start: u64,
    pub file: FileId,
    /// Bytes `[lo, hi)` of the file known reserved by this process (a reopened segment
    /// starts with none known: reserving again is cheap).
    reserved: (u64, u64),
}

impl Segment {
    fn new(start: u64, file: FileId) -> Self {
        Segment {
            start,
            file,
            reserved: (0, 0),
        }
    }
}

/// Reservation granularity, and how far ahead of a write space is reserved.
const PAGE: u64 = 4096;

/// How a segment queue reserves space and makes its files.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Allocation {
    /// Reserve at least this far past a write...
    pub min_ahead: u64,
    /// ...and, as the segment fills, as far ahead as it holds, up to this.
    pub max_ahead: u64,
    /// Files whose existence may wait for `Disk::take_created` (derived data only).
    pub unsynced_create: bool,
}

impl Allocation {
    pub const COMMIT_LOG: Allocation = Allocation {
        min_ahead: 1 << 20,
        max_ahead: 16 << 20,
        unsynced_create: false,
    };
    pub const CONSUME_QUEUE: Allocation = Allocation {
        min_ahead: 2 << 10,
        max_ahead: 1 << 20,
        unsynced_create: true,
    };
}

/// Invariant: segments are sorted, contiguous (`start[i+1] == start[i] + size`) and each
/// start is a multiple of `size`.
#[derive(Debug)]
pub(crate) struct SegmentQueue {
    pub dir: String,
    pub size: u64,
    pub segments: Vec<Segment>,
    pub allocation: Allocation,
}

/// What loading found beyond plain segments.
#[derive(Debug, Default)]
pub(crate) struct LoadNotes {
    /// Files removed because they were a half-created (empty) last segment.
    pub removed: Vec<String>,
    /// Last segments found shorter than the segment size and grown back.
    pub grown: Vec<String>,
}

impl SegmentQueue {
    pub fn new(dir: String, size: u64, allocation: Allocation) -> Self {
        assert!(size > 0, "segment size must be positive");
        SegmentQueue {
            dir,
            size,
            segments: Vec::new(),
            allocation,
        }
    }

    pub fn path_of(&self, start: u64) -> String {
        format!("{}/{}", self.dir, offset_name(start))
    }

    /// Opens every segment in `dir`, checking names, sizes and contiguity. A last segment of
    /// the wrong size is a crash during its creation and is removed; anything else wrong is
    /// an error naming the file.
    pub fn load<D: Disk>(
        disk: &mut D,
        dir: String,
        size: u64,
        allocation: Allocation,
    ) -> StoreResult<(Self, LoadNotes)> {
        let mut q = SegmentQueue::new(dir, size, allocation);
        let mut notes = LoadNotes::default();
        let names: Vec<String> = disk
            .list(&q.dir)?
            .into_iter()
            .filter(|n| !n.ends_with(".tmp"))
            .collect();
        let count = names.len();
        for (i, name) in names.into_iter().enumerate() {
            let start = parse_offset_name(&q.dir, &name)?;
            let path = format!("{}/{}", q.dir, name);
            if start % size != 0 {
                return Err(StoreError::Corrupt {
                    file: path,
                    what: format!(
                        "start offset {start} is not a multiple of the segment size {size}"
                    ),
                });
            }
            if let Some(last) = q.segments.last()
                && start != last.start + size
            {
                return Err(StoreError::Corrupt {
                    file: path,
                    what: format!(
                        "segment missing before it: expected start {}",
                        last.start + size
                    ),
                });
            }
            let mut file = disk.open(&path)?;
            let actual = disk.size(file)?;
            if actual != size {
                disk.close(file);
                let last = i + 1 == count;
                if last && actual == 0 {
                    // Created but never reserved: a crash inside `create`.
                    disk.remove(&path)?;
                    notes.removed.push(path);
                    continue;
                }
                if !last || actual > size {
                    return Err(StoreError::Corrupt {
                        file: path,
                        what: format!(
                            "size {actual} bytes, expected {size} (was the segment size changed?)"
                        ),
                    });
                }
                // The last segment was cut short: restore its size; the scan finds the tail.
                disk.grow(&path, size)?;
                notes
                    .grown
                    .push(format!("{path}: was {actual} bytes, restored to {size}"));
                file = disk.open(&path)?;
            }
            q.segments.push(Segment::new(start, file));
        }
        Ok((q, notes))
    }

    pub fn first_start(&self) -> Option<u64> {
        self.segments.first().map(|s| s.start)
    }

    /// One past the last byte the segments hold.
    pub fn end(&self) -> Option<u64> {
        self.segments.last().map(|s| s.start + self.size)
    }

    /// The segment holding byte `offset`, and the offset within it.
    pub fn locate(&self, offset: u64) -> Option<(&Segment, u64)> {
        let first = self.segments.first()?.start;
        if offset < first {
            return None;
        }
        let idx = ((offset - first) / self.size) as usize;
        let seg = self.segments.get(idx)?;
        debug_assert!(seg.start <= offset && offset < seg.start + self.size);
        Some((seg, offset - seg.start))
    }

    /// The segment that bytes `[offset, offset + len)` must be written to (they must lie in
    /// one segment), created if `offset` is exactly at the end of the queue or the queue is
    /// empty, with the range reserved (and some room after it, see [`Allocation`]).
    pub fn for_write<D: Disk>(
        &mut self,
        disk: &mut D,
        offset: u64,
        len: u64,
    ) -> StoreResult<(FileId, u64)> {
        let first = self.segments.first().map(|s| s.start);
        let idx = match first {
            Some(first)
                if offset >= first
                    && ((offset - first) / self.size) < self.segments.len() as u64 =>
            {
                ((offset - first) / self.size) as usize
            }
            _ => {
                let start = offset - offset % self.size;
                match self.end() {
                    Some(end) if end != start => {
                        return Err(StoreError::Invalid {
                            what: format!(
                                "{}: write at {offset} leaves a gap after {end}",
                                self.dir
                            ),
                        });
                    }
                    _ => {}
                }
                let path = self.path_of(start);
                let file = if self.allocation.unsynced_create {
                    disk.create_unsynced(&path, self.size)?
                } else {
                    disk.create(&path, self.size)?
                };
                self.segments.push(Segment::new(start, file));
                self.segments.len() - 1
            }
        };
        let (size, allocation) = (self.size, self.allocation);
        let seg = &mut self.segments[idx];
        let at = offset - seg.start;
        reserve(disk, seg, at, len, size, allocation)?;
        Ok((seg.file, at))
    }

    /// Byte ranges `(file, offset in file, len)` covering `[from, to)`.
    pub fn ranges(&self, from: u64, to: u64) -> impl Iterator<Item = (FileId, u64, u64)> + '_ {
        self.segments.iter().filter_map(move |s| {
            let lo = from.max(s.start);
            let hi = to.min(s.start + self.size);
            (lo < hi).then(|| (s.file, lo - s.start, hi - lo))
        })
    }

    pub fn sync<D: Disk>(&self, disk: &mut D, from: u64, to: u64) -> Result<(), DiskError> {
        for (file, off, len) in self.ranges(from, to) {
            disk.sync(file, off, len)?;
        }
        Ok(())
    }

    /// Durably zeroes everything from `offset` on and removes segments that start after it.
    /// Returns the paths removed.
    pub fn truncate<D: Disk>(&mut self, disk: &mut D, offset: u64) -> StoreResult<Vec<String>> {
        let mut removed = Vec::new();
        while let Some(last) = self.segments.last() {
            if last.start <= offset {
                break;
            }
            let last = self.segments.pop().expect("non-empty");
            disk.close(last.file);
            let path = self.path_of(last.start);
            disk.remove(&path)?;
            removed.push(path);
        }
        let size = self.size;
        if let Some(seg) = self
            .segments
            .iter_mut()
            .find(|s| s.start <= offset && offset < s.start + size)
        {
            let at = offset - seg.start;
            disk.zero_range(seg.file, at, size - at)?;
            // The zeroed range may be a hole now: reserve afresh when writing there.
            seg.reserved = (0, 0);
        }
        Ok(removed)
    }

    pub fn close_all<D: Disk>(&mut self, disk: &mut D) {
        for seg in self.segments.drain(..) {
            disk.close(seg.file);
        }
    }
}

/// Makes sure `[at, at + len)` of `seg` is reserved, reserving ahead as the segment fills
/// (at least `min_ahead`, at most `max_ahead`, about as much as it already holds): a few
/// `reserve` calls over a segment's life, none on most writes.
fn reserve<D: Disk>(
    disk: &mut D,
    seg: &mut Segment,
    at: u64,
    len: u64,
    size: u64,
    allocation: Allocation,
) -> StoreResult<()> {
    let end = at + len;
    let (lo, hi) = seg.reserved;
    if len == 0 || (at >= lo && end <= hi) {
        return Ok(());
    }
    let ahead = end.clamp(allocation.min_ahead, allocation.max_ahead);
    let new_hi = (end + ahead).div_ceil(PAGE).saturating_mul(PAGE).min(size);
    // Extend the known window when the write continues it; otherwise start a new one.
    let (from, new_lo) = if at >= lo && at <= hi && hi > lo {
        (hi, lo)
    } else {
        let from = at - at % PAGE;
        (from, from)
    };
    disk.reserve(seg.file, from, new_hi - from)?;
    seg.reserved = (new_lo, new_hi);
    Ok(())
}

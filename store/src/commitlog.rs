//! The commit log: every message of every topic, appended in arrival order to fixed-size
//! segments, in RocketMQ's stored-message layout. It is the source of truth; consume queues
//! and the index are derived from it and rebuilt from it at recovery.
//!
//! Durability is explicit: `write_pos` is how far records are appended (visible to readers,
//! in the page cache), `flushed` how far they are durable. The caller decides when to sync
//! (inline with [`CommitLog::sync`], or on a flush thread via [`CommitLog::flush_ranges`] and
//! [`CommitLog::on_flushed`]). A failed write or sync stops the log (fail-stop): after a
//! failed fsync the kernel may have dropped dirty pages, so no later ack could be trusted.

use crate::disk::{Disk, DiskError, FileId, stable_read_at};
use crate::error::{StoreError, StoreResult};
use crate::record::{self, END_FILE_MIN_BLANK_LENGTH, Peek, StoreMessage, StoredRecord};
use crate::segments::{Allocation, SegmentQueue};

pub const COMMITLOG_DIR: &str = "commitlog";

/// Where an appended record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub offset: u64,
    pub size: u32,
    pub queue_offset: u64,
}

pub struct CommitLog {
    segments: SegmentQueue,
    write_pos: u64,
    flushed: u64,
    max_body: usize,
    scratch: Vec<u8>,
    /// One append's records, laid out as they go to disk (kept: the put path allocates
    /// nothing once it has held the largest batch).
    unit: Vec<u8>,
    stopped: Option<String>,
    /// How far past the write position the log keeps its space prewritten with zeros
    /// (`Disk::prewrite`); 0: never.
    warm_ahead: u64,
    /// Log offset up to which space past the write position was prewritten.
    warmed_to: u64,
}

/// Space prewritten per append at most (one step keeps the put path's extra work to one
/// ~0.1 ms write of zeros every this many bytes appended).
const WARM_STEP: u64 = 256 << 10;
/// Pages: a prewrite never touches the page the write position is in.
const WARM_PAGE: u64 = 4096;

/// Why a scan stopped before the end of the written space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanStop {
    pub offset: u64,
    pub file: String,
    pub reason: String,
}

impl CommitLog {
    /// Opens the segments under `commitlog/`. The write position is set by recovery.
    pub(crate) fn load<D: Disk>(
        disk: &mut D,
        segment_size: u64,
        max_body: usize,
    ) -> StoreResult<(Self, Vec<String>)> {
        assert!(
            segment_size > 1024,
            "commit log segments must hold more than a record header"
        );
        let (segments, notes) = SegmentQueue::load(
            disk,
            COMMITLOG_DIR.to_string(),
            segment_size,
            Allocation::COMMIT_LOG,
        )?;
        let start = segments.first_start().unwrap_or(0);
        let log = CommitLog {
            segments,
            write_pos: start,
            flushed: start,
            max_body,
            scratch: Vec::with_capacity(4096),
            unit: Vec::with_capacity(64 * 1024),
            stopped: None,
            warm_ahead: 0,
            warmed_to: 0,
        };
        let mut removed = notes.removed;
        removed.extend(notes.grown);
        Ok((log, removed))
    }

    /// The largest body later appends accept (maxMessageSize changed at run time; what is
    /// stored is read whatever its size).
    pub fn set_max_body(&mut self, max_body: usize) {
        self.max_body = max_body;
    }

    pub fn segment_size(&self) -> u64 {
        self.segments.size
    }
    /// First byte still held (older segments may have been removed by retention).
    pub fn min_offset(&self) -> u64 {
        self.segments.first_start().unwrap_or(self.write_pos)
    }
    /// One past the last appended byte: readers see everything below it.
    pub fn write_pos(&self) -> u64 {
        self.write_pos
    }
    /// Everything below this offset is durable.
    pub fn flushed(&self) -> u64 {
        self.flushed
    }
    pub fn stopped(&self) -> Option<&str> {
        self.stopped.as_deref()
    }

    /// Recovery's verdict: records end at `write_pos`; only bytes below `durable` are known
    /// to be on the media (the rest may sit only in the page cache after a process crash).
    pub(crate) fn set_positions(&mut self, write_pos: u64, durable: u64) {
        self.write_pos = write_pos;
        self.flushed = durable.min(write_pos);
        // A cut may have punched the prewritten space out again.
        self.warmed_to = 0;
    }

    /// Keeps `ahead` bytes past the write position prewritten with zeros (see
    /// `Disk::prewrite`): where syncs make appends durable one by one (SYNC_FLUSH), each
    /// sync then writes data only, not also the blocks' change from allocated to written.
    pub(crate) fn set_warm_ahead(&mut self, ahead: u64) {
        self.warm_ahead = ahead;
    }

    /// One step of prewriting ahead of the write position, if it fell behind. Only space
    /// past the write position's page is ever prewritten: nothing written lies there (every
    /// write of the log is below its write position), and the next append starts at it.
    fn warm<D: Disk>(&mut self, disk: &mut D) {
        if self.warm_ahead == 0 {
            return;
        }
        let from = self
            .warmed_to
            .max(self.write_pos.next_multiple_of(WARM_PAGE));
        if from >= self.write_pos + self.warm_ahead {
            return;
        }
        // Within the segment holding `from`; the next one is warmed once appends reach it.
        let seg_end = (from / self.segments.size + 1) * self.segments.size;
        let to = (from + WARM_STEP).min(seg_end);
        match self.segments.ranges(from, to).next() {
            Some((file, off, len)) => disk.prewrite(file, off, len),
            // `from` starts a segment not created yet.
            None => return,
        }
        self.warmed_to = to;
    }

    fn check_running(&self) -> StoreResult<()> {
        match &self.stopped {
            Some(reason) => Err(StoreError::Stopped {
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    fn stop(&mut self, reason: String) {
        tracing::error!(%reason, "commit log stopped accepting writes");
        self.stopped.get_or_insert(reason);
    }

    /// Appends `batch` contiguously in one segment (rolling to a new segment first if it does
    /// not fit), each record with its queue offset. All or nothing: on error no record counts.
    pub fn append<D: Disk>(
        &mut self,
        disk: &mut D,
        batch: &[StoreMessage<'_>],
        queue_offsets: &[u64],
        store_timestamp: i64,
        out: &mut Vec<Appended>,
    ) -> StoreResult<()> {
        self.check_running()?;
        assert_eq!(
            batch.len(),
            queue_offsets.len(),
            "one queue offset per message"
        );
        let mut total: u64 = 0;
        for msg in batch {
            total += record::record_len(msg, self.max_body)? as u64;
        }
        let size = self.segments.size;
        if total + END_FILE_MIN_BLANK_LENGTH > size {
            return Err(StoreError::BatchTooLarge {
                size: total,
                segment_size: size,
            });
        }
        let result = self.append_inner(disk, batch, queue_offsets, total, store_timestamp, out);
        match &result {
            // A full disk refuses this append and nothing else: the segment was never made.
            Err(StoreError::Disk(DiskError::Full { .. })) => {}
            Err(e @ StoreError::Disk(_)) => self.stop(e.to_string()),
            _ => {}
        }
        result
    }

    fn append_inner<D: Disk>(
        &mut self,
        disk: &mut D,
        batch: &[StoreMessage<'_>],
        queue_offsets: &[u64],
        total: u64,
        store_timestamp: i64,
        out: &mut Vec<Appended>,
    ) -> StoreResult<()> {
        let size = self.segments.size;
        // Space is reserved before any byte is written: a full disk refuses the whole batch.
        let (_, at) = self.segments.for_write(disk, self.write_pos, 0)?;
        let remaining = size - at;
        // Buggify: roll early, as if this batch did not fit (segment turnover far more often).
        let roll_early = at > 0 && crate::buggify!("store.commitlog.roll-early");
        let (file, at) = if total + END_FILE_MIN_BLANK_LENGTH > remaining || roll_early {
            // RocketMQ's end-of-segment blank: the rest of this segment holds no record.
            let marker = record::blank_marker(remaining as u32);
            let (file, at) = self
                .segments
                .for_write(disk, self.write_pos, marker.len() as u64)?;
            disk.write_at(file, at, &marker)?;
            self.write_pos += remaining;
            let (file, at) = self.segments.for_write(disk, self.write_pos, total)?;
            debug_assert_eq!(at, 0);
            (file, at)
        } else {
            self.segments.for_write(disk, self.write_pos, total)?
        };
        let first = out.len();
        let mut pos = self.write_pos;
        // The batch's records are laid out here and written with one call: a disk write per
        // record part cost a syscall each on the real disk (pwrite), three per message.
        self.unit.clear();
        for (msg, queue_offset) in batch.iter().zip(queue_offsets) {
            let len = record::record_len(msg, self.max_body)?;
            let parts = record::encode_record(
                &mut self.scratch,
                msg,
                len,
                *queue_offset,
                pos,
                store_timestamp,
            );
            self.unit.extend_from_slice(&self.scratch[..parts.head_len]);
            self.unit.extend_from_slice(msg.body);
            self.unit.extend_from_slice(&self.scratch[parts.head_len..]);
            out.push(Appended {
                offset: pos,
                size: len as u32,
                queue_offset: *queue_offset,
            });
            pos += len as u64;
        }
        debug_assert_eq!(pos - self.write_pos, total);
        debug_assert_eq!(self.unit.len() as u64, total);
        if let Err(e) = disk.write_at(file, at, &self.unit) {
            out.truncate(first);
            return Err(e.into());
        }
        self.write_pos = pos;
        self.warm(disk);
        Ok(())
    }

    /// Replication, the slave's side: appends one unit the master's log holds at this log's
    /// end — a record already validated at this offset (`Some`), or the end-of-segment blank
    /// (`None`, claiming `blank_len` bytes: the rest of the segment). The same bytes land at
    /// the same offsets as on the master.
    pub fn append_replicated<D: Disk>(
        &mut self,
        disk: &mut D,
        record: Option<&[u8]>,
        blank_len: u32,
    ) -> StoreResult<()> {
        self.check_running()?;
        let size = self.segments.size;
        let (_, at) = self.segments.for_write(disk, self.write_pos, 0)?;
        let remaining = size - at;
        let (bytes, advance): (&[u8], u64) = match record {
            Some(r) if r.len() as u64 + END_FILE_MIN_BLANK_LENGTH <= remaining => {
                (r, r.len() as u64)
            }
            Some(r) => {
                return Err(StoreError::Invalid {
                    what: format!(
                        "a replicated record of {} bytes at {} runs past its segment ({remaining}                          left): the master's segment size differs",
                        r.len(),
                        self.write_pos
                    ),
                });
            }
            None if blank_len as u64 == remaining => (&[][..], remaining),
            None => {
                return Err(StoreError::Invalid {
                    what: format!(
                        "a replicated blank of {blank_len} bytes at {}, {remaining} left in the                          segment: the master's segment size differs",
                        self.write_pos
                    ),
                });
            }
        };
        let marker = record::blank_marker(blank_len);
        let bytes = if record.is_none() { &marker[..] } else { bytes };
        let result = self
            .segments
            .for_write(disk, self.write_pos, bytes.len() as u64)
            .and_then(|(file, at)| Ok(disk.write_at(file, at, bytes)?));
        match result {
            Ok(()) => {
                self.write_pos += advance;
                self.warm(disk);
                Ok(())
            }
            Err(e @ StoreError::Disk(DiskError::Full { .. })) => Err(e),
            Err(e) => {
                if matches!(e, StoreError::Disk(_)) {
                    self.stop(e.to_string());
                }
                Err(e)
            }
        }
    }

    /// Replication, the master's side: the unit at `offset` — `Ok(Some(Ok(record)))`, or the
    /// end-of-segment blank (`Ok(Some(Err(len)))`, the rest of the segment) — or `Ok(None)`
    /// at the log's end.
    pub fn read_unit<D: Disk>(
        &self,
        disk: &D,
        offset: u64,
    ) -> StoreResult<Option<Result<StoredRecord, u32>>> {
        if offset >= self.write_pos {
            return Ok(None);
        }
        let (seg, at) = self
            .segments
            .locate(offset)
            .ok_or(StoreError::OffsetOutOfRange {
                offset,
                min: self.min_offset(),
                max: self.write_pos,
            })?;
        let head = disk.read_at(seg.file, at, 8)?;
        let head: [u8; 8] = head[..].try_into().map_err(|_| StoreError::Corrupt {
            file: self.segments.path_of(seg.start),
            what: format!("no unit header at {offset}"),
        })?;
        match record::peek(&head) {
            Peek::Blank { len } => Ok(Some(Err(len))),
            _ => Ok(Some(Ok(self.read(disk, offset, None)?))),
        }
    }

    /// Reads and validates the record at `offset`. `size` (from a consume queue entry) saves
    /// reading the header first; it must match the record's own size.
    pub fn read<D: Disk>(
        &self,
        disk: &D,
        offset: u64,
        size: Option<u32>,
    ) -> StoreResult<StoredRecord> {
        if offset < self.min_offset() || offset >= self.write_pos {
            return Err(StoreError::OffsetOutOfRange {
                offset,
                min: self.min_offset(),
                max: self.write_pos,
            });
        }
        let (seg, at) = self
            .segments
            .locate(offset)
            .ok_or(StoreError::OffsetOutOfRange {
                offset,
                min: self.min_offset(),
                max: self.write_pos,
            })?;
        let file = seg.file;
        let path = || self.segments.path_of(seg.start);
        let avail = (self.segments.size - at).min(self.write_pos - offset);
        let len = match size {
            Some(s) => s as u64,
            None => {
                let head = disk.read_at(file, at, 4.min(avail as usize))?;
                if head.len() < 4 {
                    return Err(StoreError::Corrupt {
                        file: path(),
                        what: format!("no record header at {offset}"),
                    });
                }
                u32::from_be_bytes(head[..4].try_into().expect("4 bytes")) as u64
            }
        };
        if len > avail {
            return Err(StoreError::Corrupt {
                file: path(),
                what: format!("record at {offset} claims {len} bytes, only {avail} written"),
            });
        }
        let bytes = disk.read_at(file, at, len as usize)?;
        StoredRecord::parse(bytes, Some(offset)).map_err(|error| StoreError::BadRecord {
            file: path(),
            offset,
            error,
        })
    }

    /// Reads and validates a record of known size anywhere in the segments, regardless of the
    /// write position (recovery, before the write position is known).
    pub(crate) fn read_unbounded<D: Disk>(
        &self,
        disk: &D,
        offset: u64,
        size: u32,
    ) -> StoreResult<StoredRecord> {
        let (seg, at) = self
            .segments
            .locate(offset)
            .ok_or(StoreError::OffsetOutOfRange {
                offset,
                min: self.min_offset(),
                max: self.segments_end(),
            })?;
        let path = || self.segments.path_of(seg.start);
        if size as u64 > self.segments.size - at {
            return Err(StoreError::Corrupt {
                file: path(),
                what: format!("record at {offset} runs past the segment"),
            });
        }
        let bytes = disk.read_at(seg.file, at, size as usize)?;
        StoredRecord::parse(bytes, Some(offset)).map_err(|error| StoreError::BadRecord {
            file: path(),
            offset,
            error,
        })
    }

    /// Byte ranges holding the log's `[from, upto)`, from no lower than the durable offset.
    pub fn flush_ranges(&self, from: u64, upto: u64) -> Vec<(FileId, u64, u64)> {
        let upto = upto.min(self.write_pos);
        self.segments.ranges(from.max(self.flushed), upto).collect()
    }

    /// A flush thread reports that everything below `upto` is durable.
    pub fn on_flushed(&mut self, upto: u64) {
        debug_assert!(upto <= self.write_pos, "flushed past the write position");
        if upto > self.flushed {
            self.flushed = upto.min(self.write_pos);
        }
    }

    /// A flush failed: the log stops (see the module docs).
    pub fn on_flush_failed(&mut self, reason: String) {
        self.stop(format!("sync failed: {reason}"));
    }

    /// Syncs inline up to `upto` (the write position if larger). Returns the new durable
    /// offset. Group commit falls out of this: one sync covers every record below `upto`.
    pub fn sync<D: Disk>(&mut self, disk: &mut D, upto: u64) -> StoreResult<u64> {
        self.check_running()?;
        let upto = upto.min(self.write_pos);
        if upto <= self.flushed {
            return Ok(self.flushed);
        }
        if let Err(e) = self.segments.sync(disk, self.flushed, upto) {
            self.on_flush_failed(e.to_string());
            return Err(e.into());
        }
        self.flushed = upto;
        Ok(upto)
    }

    /// Walks records from `from`, validating each, calling `visit` for every valid one, up to
    /// the first position that holds no valid record. Returns that end and, if it is not
    /// clean unwritten space, why the scan stopped there. A record that fails validation is
    /// re-read a few times, so that a transient read error is not taken for a torn tail.
    pub(crate) fn scan<D: Disk>(
        &self,
        disk: &mut D,
        from: u64,
        mut visit: impl FnMut(&mut D, &StoredRecord) -> StoreResult<()>,
    ) -> StoreResult<(u64, Option<ScanStop>)> {
        const READ_ATTEMPTS: usize = 4;
        let size = self.segments.size;
        let mut pos = from;
        loop {
            let Some((seg, at)) = self.segments.locate(pos) else {
                return Ok((pos, None));
            };
            let (file, path) = (seg.file, self.segments.path_of(seg.start));
            let stop = |reason: String| {
                Ok((
                    pos,
                    Some(ScanStop {
                        offset: pos,
                        file: path.clone(),
                        reason,
                    }),
                ))
            };
            let remaining = size - at;
            if remaining < END_FILE_MIN_BLANK_LENGTH {
                return stop(format!(
                    "{remaining} bytes left in the segment, too few for a marker"
                ));
            }
            let mut attempt = 0;
            let outcome = loop {
                attempt += 1;
                let head: [u8; 8] = disk.read_at(file, at, 8)?[..].try_into().expect("8 bytes");
                let outcome = match record::peek(&head) {
                    Peek::Empty => Ok(None),
                    Peek::Blank { len } if len as u64 == remaining => Ok(Some(remaining)),
                    Peek::Blank { len } => Err(format!(
                        "blank marker of {len} bytes, {remaining} left in the segment"
                    )),
                    Peek::Garbage { total_size, magic } => {
                        Err(format!("no record: size {total_size}, magic {magic:#010x}"))
                    }
                    Peek::Record { total_size }
                        if total_size as u64 + END_FILE_MIN_BLANK_LENGTH > remaining =>
                    {
                        Err(format!(
                            "record of {total_size} bytes runs past the segment end"
                        ))
                    }
                    Peek::Record { total_size } => {
                        let bytes = disk.read_at(file, at, total_size as usize)?;
                        match StoredRecord::parse(bytes, Some(pos)) {
                            // The peeked size and the validated record must agree, or the
                            // peek was misread: advancing by it would skip into a record.
                            Ok(rec) if rec.total_size() != total_size => Err(format!(
                                "size read as {total_size}, record says {}",
                                rec.total_size()
                            )),
                            Ok(rec) => {
                                visit(disk, &rec)?;
                                Ok(Some(rec.total_size() as u64))
                            }
                            Err(e) => Err(e.to_string()),
                        }
                    }
                };
                if outcome.is_ok() || attempt == READ_ATTEMPTS {
                    break outcome;
                }
            };
            match outcome {
                Ok(Some(len)) => pos += len,
                Ok(None) => return Ok((pos, None)),
                Err(reason) => return stop(reason),
            }
        }
    }

    /// Cuts the log at `end`: the rest of its segment is durably zeroed and later segments are
    /// removed. Returns the removed paths.
    pub(crate) fn truncate<D: Disk>(
        &mut self,
        disk: &mut D,
        end: u64,
        durable: u64,
    ) -> StoreResult<Vec<String>> {
        let removed = self.segments.truncate(disk, end)?;
        self.set_positions(end, durable);
        Ok(removed)
    }

    /// One past the last byte the existing segments can hold.
    pub(crate) fn segments_end(&self) -> u64 {
        self.segments.end().unwrap_or(0)
    }

    /// Rewrites `[from, to)` with its own bytes so the next sync writes it out. After a failed
    /// sync, a page can stay in the page cache marked clean but never written (fsyncgate): a
    /// restarted process reads it fine, yet a plain sync would not persist it.
    pub(crate) fn redirty<D: Disk>(&self, disk: &mut D, from: u64, to: u64) -> StoreResult<()> {
        const CHUNK: u64 = 1 << 20;
        let ranges: Vec<_> = self.segments.ranges(from, to).collect();
        for (file, off, len) in ranges {
            // After a power loss the blocks may be holes again: reserve before rewriting.
            disk.reserve(file, off, len)?;
            let mut at = off;
            while at < off + len {
                let n = CHUNK.min(off + len - at);
                // A misread here would be written back for good: read until stable.
                let bytes = stable_read_at(disk, file, at, n as usize)?.to_vec();
                disk.write_at(file, at, &bytes)?;
                at += n;
            }
        }
        Ok(())
    }

    pub(crate) fn close<D: Disk>(&mut self, disk: &mut D) {
        self.segments.close_all(disk);
    }
}

//! Replication's two ends in the store: the master reads its log as units (records, and the
//! end-of-segment blank as its 8-byte marker), the slave appends them at the same offsets and
//! dispatches each record to its consume queue and the index, as recovery's rebuild does. A
//! slave's log is then the master's, byte for byte where records are, so offsets, message ids
//! and consume queue positions agree across the group.

use super::*;

impl<D: Disk> MessageStore<D> {
    /// The master's side: units from `from` (a unit boundary) up to about `max_bytes` (at
    /// least one unit), as the replication stream carries them, and the offset after the last.
    /// Empty at the log's end.
    pub fn read_replicated(&self, from: u64, max_bytes: usize) -> StoreResult<(Vec<u8>, u64)> {
        let mut out = Vec::new();
        let mut pos = from;
        while out.is_empty() || out.len() < max_bytes {
            match self.log.read_unit(&self.disk, pos)? {
                None => break,
                Some(Ok(rec)) => {
                    if !out.is_empty() && out.len() + rec.bytes().len() > max_bytes {
                        break;
                    }
                    out.extend_from_slice(rec.bytes());
                    pos += rec.total_size() as u64;
                }
                Some(Err(len)) => {
                    out.extend_from_slice(&record::blank_marker(len));
                    pos += len as u64;
                }
            }
        }
        Ok((out, pos))
    }

    /// Drops every consume queue entry whose record ends past `end` (the log was cut there).
    pub(super) fn cut_queues_past(&mut self, end: u64) -> StoreResult<()> {
        for cq in self.queues.iter_mut() {
            let Some(last) = cq.max_offset().checked_sub(1) else {
                continue;
            };
            if last < cq.min_offset() {
                continue;
            }
            if let Some(e) = cq.get_stable(&self.disk, last)?
                && e.offset + e.size as u64 > end
            {
                let mut keep = last;
                while keep > cq.min_offset() {
                    match cq.get_stable(&self.disk, keep - 1)? {
                        Some(e) if e.offset + e.size as u64 > end => keep -= 1,
                        _ => break,
                    }
                }
                cq.truncate(&mut self.disk, keep)?;
            }
        }
        Ok(())
    }

    /// Cuts this log back to `end`, a unit boundary at or below its end: the tail a replica
    /// holds that the history it is to follow never had (a returning old master, a slave that
    /// was ahead). The log past `end` is zeroed and its later segments removed, consume queue
    /// and index entries past it dropped. Appends go on at `end`.
    pub fn truncate_log(&mut self, end: u64) -> StoreResult<()> {
        let write_pos = self.log.write_pos();
        if end > write_pos || (end < write_pos && !self.is_unit_start(end)) {
            return Err(StoreError::Invalid {
                what: format!(
                    "cannot cut the log at {end}: not a record boundary below its end {write_pos}"
                ),
            });
        }
        if end == write_pos {
            return Ok(());
        }
        // The checkpoint on disk may vouch for bytes past `end`: lowered durably first (every
        // queue marked for a rebuild, as recovery marks one it is rebuilding), so that a crash
        // in the middle of the cut never meets a checkpoint past the log's end.
        if let Some(mut cp) = crate::checkpoint::Checkpoint::load(&self.disk)?
            && cp.offset > end
        {
            cp.offset = end;
            cp.clean_shutdown = false;
            for m in &mut cp.queues {
                m.max_offset = super::recovery::REBUILD_MARK;
            }
            // The index as it stood at `end` (entries it counts were durable under the old
            // checkpoint, which covered more): recovery cuts what lies past it.
            cp.index = self.index.mark_at(&self.disk, end)?;
            cp.store(&mut self.disk)?;
        }
        self.checkpointed = self.checkpointed.min(end);
        let durable = self.log.flushed().min(end);
        self.log.truncate(&mut self.disk, end, durable)?;
        self.cut_queues_past(end)?;
        self.index.truncate(&mut self.disk, end)?;
        // And a true checkpoint of the cut store at once.
        let now = crate::checkpoint::Checkpoint::load(&self.disk)?.map_or(0, |c| c.timestamp);
        self.checkpoint_inner(now, false, false)
    }

    /// Whether a unit (a record, or a segment's end blank) of this log starts at `offset`.
    pub fn is_unit_start(&self, offset: u64) -> bool {
        matches!(self.log.read_unit(&self.disk, offset), Ok(Some(_)))
    }

    /// The slave's side: appends the units `data` carries (what `read_replicated` returned
    /// for `at`), which must start at this log's end. Each record is validated (its CRC, its
    /// own offset) before it is written, then dispatched; a unit that does not validate stops
    /// the append there (what came before it stays). Returns the log's new end.
    pub fn append_replicated(&mut self, at: u64, data: &[u8]) -> StoreResult<u64> {
        if let Some(reason) = &self.stopped {
            return Err(StoreError::Stopped {
                reason: reason.clone(),
            });
        }
        if at != self.log.write_pos() {
            return Err(StoreError::Invalid {
                what: format!(
                    "replicated data for offset {at}, but this log ends at {}",
                    self.log.write_pos()
                ),
            });
        }
        let mut pos = 0;
        while pos < data.len() {
            let offset = self.log.write_pos();
            let Some(head) = data.get(pos..pos + 8) else {
                return Err(StoreError::Invalid {
                    what: format!("a partial unit header at {offset}"),
                });
            };
            let head: [u8; 8] = head.try_into().expect("8 bytes");
            match record::peek(&head) {
                record::Peek::Blank { len } => {
                    self.log.append_replicated(&mut self.disk, None, len)?;
                    pos += 8;
                }
                record::Peek::Record { total_size } => {
                    let end = pos + total_size as usize;
                    let Some(bytes) = data.get(pos..end) else {
                        return Err(StoreError::Invalid {
                            what: format!("a partial record at {offset}"),
                        });
                    };
                    let rec = StoredRecord::parse(Bytes::copy_from_slice(bytes), Some(offset))
                        .map_err(|error| StoreError::Invalid {
                            what: format!("replicated record at {offset}: {error}"),
                        })?;
                    self.log.append_replicated(&mut self.disk, Some(bytes), 0)?;
                    let MessageStore {
                        disk,
                        queues,
                        index,
                        config,
                        keys,
                        stopped,
                        ..
                    } = self;
                    if let Err(e) = dispatch(disk, queues, index, config, keys, &rec, true, true) {
                        *stopped = Some(format!("dispatch of a replicated record failed: {e}"));
                        return Err(e);
                    }
                    pos = end;
                }
                other => {
                    return Err(StoreError::Invalid {
                        what: format!("no unit at {offset}: {other:?}"),
                    });
                }
            }
        }
        Ok(self.log.write_pos())
    }
}

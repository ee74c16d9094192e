//! Checkpoints: the durable barrier C below which the log, the queues and the index are
//! synced, prepared on the machine's task and written off it (or inline at shutdown).

use super::*;

impl<D: Disk> MessageStore<D> {
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

    pub(super) fn checkpoint_inner(
        &mut self,
        now: i64,
        clean: bool,
        sync_log: bool,
    ) -> StoreResult<()> {
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

//! Reads: queue offsets, messages by queue and offset (with tag filtering), records by
//! commit log offset, by key and by time.

use super::*;

impl<D: Disk> MessageStore<D> {
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
        self.get_filtered(
            topic,
            queue_id,
            offset,
            max_count,
            max_bytes,
            filter,
            &|_| true,
            below,
        )
    }

    /// As [`get_below`](Self::get_below), with a second filter on each record read: its
    /// properties (a property filter, e.g. SQL92). A record it refuses is skipped like one
    /// the tag code refused.
    #[allow(clippy::too_many_arguments)]
    pub fn get_filtered(
        &self,
        topic: &str,
        queue_id: u32,
        offset: u64,
        max_count: usize,
        max_bytes: usize,
        filter: &dyn Fn(i64) -> bool,
        record_filter: &dyn Fn(&[u8]) -> bool,
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
                        if !record_filter(rec.properties()) {
                            continue;
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
                // An entry into a tail a truncation cut (and later records overwrote) points
                // at no record of this log: not a match.
                Err(
                    StoreError::OffsetOutOfRange { .. }
                    | StoreError::BadRecord { .. }
                    | StoreError::Corrupt { .. },
                ) => continue,
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

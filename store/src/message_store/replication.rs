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

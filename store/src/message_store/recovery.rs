//! `MessageStore::open`: a store recovered from what its disk holds.
//!
//! In order:
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

use super::*;
use crate::checkpoint::CHECKPOINT_FILE;

/// How far ahead of its appends a warmed commit log keeps its space prewritten.
const WARM_AHEAD: u64 = 1 << 20;

/// A checkpoint mark no queue reaches: the queue was being rebuilt from the log when the
/// recovery that wrote it stopped, so the next one rebuilds it again.
pub(super) const REBUILD_MARK: u64 = u64::MAX;

/// How much of the commit log a recovery replays between two progress lines.
const RECOVERY_PROGRESS_BYTES: u64 = 256 << 20;

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
        // Buggify: the path of a checkpoint that was lost (recovery rebuilds every queue and
        // the index from the start of the log). Removed for good, as a lost file stays lost.
        if disk.read_file(CHECKPOINT_FILE)?.is_some()
            && crate::buggify!("store.recovery.checkpoint-lost")
        {
            disk.remove(CHECKPOINT_FILE)?;
            report.checkpoint_problem = Some("the checkpoint was lost (buggify)".into());
        }
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
                let mark = marks.get(&key).copied().unwrap_or(0);
                let held = chained_end(&disk, &log, &cq, mark)?;
                held_before.insert(key.clone(), held);
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
                // Buggify: the path of a queue found damaged (rebuilt from the log).
                if !rebuild.contains(&key) && crate::buggify!("store.recovery.rebuild-queue") {
                    report
                        .rebuilt_queues
                        .push(format!("{topic}/{queue_id}: rebuilt (buggify)"));
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
        let mut forget_index = |disk: &mut D| -> StoreResult<()> {
            match &checkpoint {
                Some(cp) => Checkpoint {
                    index: None,
                    ..cp.clone()
                }
                .store(disk),
                None => Ok(()),
            }
        };
        let (index_from, note) = index.recover(
            &mut disk,
            checkpoint.as_ref().and_then(|cp| cp.index.as_ref()),
            c,
            log_min,
            clean,
            &mut forget_index,
        )?;
        report.index_note = note;

        // Queues about to be rebuilt from the log: say so durably in the checkpoint first (a
        // mark no queue can reach), so that a crash mid-rebuild never leaves the next
        // recovery trusting half-rebuilt (or torn) entries below the old mark.
        if !rebuild.is_empty()
            && let Ok(Some(mut cp)) = Checkpoint::load(&disk)
        {
            for key in &rebuild {
                match cp
                    .queues
                    .iter_mut()
                    .find(|m| m.topic == key.0 && m.queue_id == key.1)
                {
                    Some(m) => m.max_offset = REBUILD_MARK,
                    None => cp.queues.push(QueueMark {
                        topic: key.0.clone(),
                        queue_id: key.1,
                        max_offset: REBUILD_MARK,
                    }),
                }
            }
            cp.store(&mut disk)?;
        }
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
            fresh: report.fresh,
            replica: false,
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
            // A long replay says how far it is (an operator waiting on a start sees it move).
            let upto = scan_log.segments_end();
            let mut next_report = scan_from + RECOVERY_PROGRESS_BYTES;
            // The scan only reads the log; dispatch writes queues and the index.
            let mut visit = |disk: &mut D, rec: &StoredRecord| -> StoreResult<()> {
                let phy = rec.physical_offset();
                if phy >= next_report {
                    next_report = phy + RECOVERY_PROGRESS_BYTES;
                    tracing::info!(
                        replayed_mib = (phy - scan_from) >> 20,
                        of_at_most_mib = upto.saturating_sub(scan_from) >> 20,
                        redispatched,
                        "recovering: replaying the commit log"
                    );
                }
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
        store.cut_queues_past(end)?;
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
        // Warm only from here on: recovery's own writes (redirty) lie below the end.
        if store.config.warm_mapped_file == Some(true) {
            store.log.set_warm_ahead(WARM_AHEAD);
        }
        Ok((store, report))
    }
}

/// How far `cq`'s entries past the checkpoint's `mark` chain as a queue's entries must: each
/// written, pointing into the commit log past the previous one. A power loss can leave garbage
/// in a queue's unsynced tail (a sector caught being written); such entries were never held,
/// so recovery must not report them dropped.
fn chained_end<D: Disk>(
    disk: &D,
    log: &CommitLog,
    cq: &ConsumeQueue,
    mark: u64,
) -> StoreResult<u64> {
    let from = mark.clamp(cq.min_offset(), cq.max_offset());
    let mut prev_end = match from.checked_sub(1) {
        Some(last) if last >= cq.min_offset() => cq
            .get_stable(disk, last)?
            .map_or(0, |e| e.offset.saturating_add(e.size as u64)),
        _ => 0,
    };
    let log_end = log.segments_end();
    let mut at = from;
    while at < cq.max_offset() {
        let Some(e) = cq.get_stable(disk, at)? else {
            break;
        };
        let end = e.offset.saturating_add(e.size as u64);
        let chained = e.size > 0 && e.offset >= prev_end && end <= log_end;
        if !chained {
            break;
        }
        prev_end = end;
        at += 1;
    }
    Ok(at)
}

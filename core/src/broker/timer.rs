//! Timer messages (RocketMQ 5's TIMER_DELIVER_MS / TIMER_DELAY_SEC / TIMER_DELAY_MS): any
//! delivery time up to `timer_max_delay_sec` ahead, on a timing wheel kept in the store.
//!
//! The wheel is the timer topic [`TIMER_TOPIC`] itself: one consume queue per bucket of
//! `bucket_ms`, a message waiting in queue `(due / bucket_ms) % buckets`, its entry's tag code
//! its delivery time (TIMER_OUT_MS, computed by the store, rebuilt by recovery like any
//! queue). The wheel holds more buckets than the horizon spans, so one queue never mixes the
//! timers of two turns of the wheel that are both pending. The service keeps in memory only
//! the buckets whose window is at hand (the current one and the next): memory follows what is
//! due soon, never what is pending; a million timers spread over three days cost a few
//! hundred entries of memory.
//!
//! Delivery runs in due order. Two facts make a restart exact: the watermark (every timer
//! due before it has been delivered) and, per bucket, the queue offset below which every
//! entry is done. Both are journaled in the commit log after the deliveries they cover (as
//! the delay levels' progress is, see `schedule.rs`), and written to `timerWheel.json` as far
//! as those deliveries are durable. Delivery is by the broker's clock, never before the due
//! time: delivery times are rounded up to the precision, not down as Apache does.

use std::collections::{BTreeMap, VecDeque};

use rockfish_store::config::{self, ConsumerOffsetTable};
use rockfish_store::message_store::TIMER_TOPIC;
use rockfish_store::{Disk, MessageStore, StoreError, StoreResult};
use serde::{Deserialize, Serialize};

use super::Broker;
use super::persist::PersistKind;
use super::timers::Timer;

pub const TIMER_WHEEL_FILE: &str = "config/timerWheel.json";
/// The consumer offset journal's pseudo-group that records the wheel's progress.
pub const TIMER_PROGRESS_GROUP: &str = "rmq_sys_ROCKFISH_TIMER_PROGRESS";
/// The journal's queue id that carries the watermark (bucket queues are numbered below it).
const WATERMARK_QUEUE: u32 = u32::MAX;
/// Buckets the horizon is cut into (plus two, so two pending turns never share a queue).
const BUCKETS_PER_HORIZON: u64 = 1024;
/// Timers delivered per wake; the rest follow a millisecond later.
const DELIVER_BATCH: usize = 256;
/// Queue entries read per step while loading a bucket.
const LOAD_BATCH: u64 = 1024;
/// Windows loaded per wake (a broker back after a long stop catches up over several wakes).
const MAX_WINDOWS_PER_WAKE: usize = 64;

/// Property names of timer messages.
pub mod timer_property {
    pub const DELIVER_MS: &str = "TIMER_DELIVER_MS";
    pub const DELAY_SEC: &str = "TIMER_DELAY_SEC";
    pub const DELAY_MS: &str = "TIMER_DELAY_MS";
    pub const OUT_MS: &str = "TIMER_OUT_MS";
}

/// `config/timerWheel.json`: the wheel's shape (fixed once timers are stored in it) and its
/// durable progress.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TimerWheelFile {
    pub bucket_ms: u64,
    pub buckets: u32,
    /// Every timer due before this was delivered.
    pub watermark: u64,
    /// Bucket queue -> the offset below which every entry is done.
    pub progress: BTreeMap<u32, u64>,
}

/// Progress that may not be durable yet: (watermark, bucket progress changes, the log end
/// its deliveries and journal records reach).
type WheelChange = (u64, Vec<(u32, u64)>, u64);

/// A bucket window loaded into memory.
#[derive(Debug, Clone, Copy)]
struct Loaded {
    end: u64,
    queue: u32,
    /// The queue's end when it was read: entries past it arrived later (pushed directly).
    max_at_load: u64,
    /// The first entry of a later turn met while reading, if any: progress stops there.
    first_later: Option<u64>,
}

#[derive(Debug, Default)]
pub(super) struct TimerWheel {
    bucket_ms: u64,
    buckets: u32,
    watermark: u64,
    progress: BTreeMap<u32, u64>,
    /// Loaded timers: (due, bucket queue, queue offset) -> commit log offset.
    due: BTreeMap<(u64, u32, u64), u64>,
    /// Windows loaded, in time order; timers due before `loaded_until` are in `due`.
    loaded: VecDeque<Loaded>,
    loaded_until: u64,
    /// Changes whose deliveries may not be durable yet: (watermark, progress changes, log end).
    undurable: VecDeque<WheelChange>,
    durable: TimerWheelFile,
    dirty: bool,
    /// (commit log offset, failed reads) of a timer record that would not read.
    read_failure: Option<(u64, u32)>,
    /// The watermark is on record (in timerWheel.json or the journal): until it is, a restart
    /// would start the wheel at its own start time and take the timers stored before for
    /// delivered. The first timer stored journals it first.
    anchored: bool,
}

impl TimerWheel {
    /// Loads the wheel: its shape from the file (or from the horizon for a new one), its
    /// progress from the file and the journal records past it (taken out of `journaled`).
    pub(super) fn load<D: Disk>(
        store: &MessageStore<D>,
        journaled: &mut ConsumerOffsetTable,
        horizon_ms: u64,
        precision_ms: u64,
        now: u64,
    ) -> StoreResult<TimerWheel> {
        let file: Option<TimerWheelFile> = config::load(store.disk(), TIMER_WHEEL_FILE)?;
        let mut anchored = file.is_some();
        let mut file = file.unwrap_or_else(|| TimerWheelFile {
            // A new wheel: nothing was due before now.
            watermark: now,
            ..TimerWheelFile::default()
        });
        if file.bucket_ms == 0 || file.buckets == 0 {
            let bucket = horizon_ms
                .div_ceil(BUCKETS_PER_HORIZON)
                .max(precision_ms)
                .max(1);
            file.bucket_ms = bucket;
            file.buckets = (horizon_ms.div_ceil(bucket) + 2) as u32;
        }
        // What the file says is durable; what the journal adds may not be yet.
        let durable = file.clone();
        let key = ConsumerOffsetTable::key(TIMER_TOPIC, TIMER_PROGRESS_GROUP);
        for (q, o) in journaled.offset_table.remove(&key).into_iter().flatten() {
            if q == WATERMARK_QUEUE {
                // The journal's watermark counts even below a new wheel's default (now).
                file.watermark = if anchored { file.watermark.max(o) } else { o };
                anchored = true;
            } else {
                let e = file.progress.entry(q).or_insert(0);
                *e = (*e).max(o);
            }
        }
        for (q, o) in file.progress.iter_mut() {
            *o = (*o)
                .max(store.min_offset(TIMER_TOPIC, *q))
                .min(store.max_offset(TIMER_TOPIC, *q));
        }
        let mut w = TimerWheel {
            bucket_ms: file.bucket_ms,
            buckets: file.buckets,
            watermark: file.watermark,
            progress: file.progress.clone(),
            durable,
            anchored,
            // A file to write (its shape, at least) at the first offset persist.
            dirty: true,
            ..TimerWheel::default()
        };
        w.loaded_until = w.window_start(w.watermark);
        Ok(w)
    }

    fn window_start(&self, t: u64) -> u64 {
        t / self.bucket_ms * self.bucket_ms
    }

    fn queue_of(&self, due: u64) -> u32 {
        ((due / self.bucket_ms) % self.buckets as u64) as u32
    }

    /// Timers held in memory (what is due soon).
    pub fn in_memory(&self) -> usize {
        self.due.len()
    }

    pub(super) fn file(&self) -> TimerWheelFile {
        self.durable.clone()
    }
}

impl<D: Disk> Broker<D> {
    /// A send's timer delivery time, if it is a timer message: `Ok(None)` for none (or one
    /// already due: stored as it is), `Err(remark)` for an unreadable or too distant one.
    pub(super) fn timer_due(&self, properties: &str, now: u64) -> Result<Option<u64>, String> {
        let props = properties.as_bytes();
        let get = |name: &str| {
            rockfish_store::record::property(props, name)
                .map(|v| String::from_utf8_lossy(v).trim().to_string())
        };
        let parse = |name: &str, v: String| {
            v.parse::<i64>()
                .map_err(|_| format!("timer message illegal: {name}={v:?} is not a number"))
        };
        let deliver = if let Some(v) = get(timer_property::DELAY_SEC) {
            now as i64 + parse(timer_property::DELAY_SEC, v)?.saturating_mul(1000)
        } else if let Some(v) = get(timer_property::DELAY_MS) {
            now as i64 + parse(timer_property::DELAY_MS, v)?
        } else if let Some(v) = get(timer_property::DELIVER_MS) {
            parse(timer_property::DELIVER_MS, v)?
        } else {
            return Ok(None);
        };
        if deliver <= now as i64 {
            return Ok(None);
        }
        let max_ms = self.config.timer_max_delay_sec.saturating_mul(1000);
        if deliver as u64 - now > max_ms {
            return Err(format!(
                "timer message illegal, the delay time should not be bigger than the max delay \
                 {max_ms}ms; or if set del msg, the delay time should be bigger than the current \
                 time"
            ));
        }
        let p = self.config.timer_precision_ms.max(1);
        // Never before the watermark: a restart takes whatever is due before it for
        // delivered. Only a clock that went back since the watermark was set makes this bite,
        // and then the timer waits for the time the old clock reached.
        Ok(Some(
            ((deliver as u64).div_ceil(p) * p).max(self.wheel.watermark),
        ))
    }

    /// Where a timer due then waits: the timer topic's queue for its bucket. The first timer
    /// ever stored journals the watermark ahead of itself (see `TimerWheel::anchored`).
    pub(super) fn timer_queue(&mut self, due: u64, now: u64) -> u32 {
        if !self.wheel.anchored {
            let w = self.wheel.watermark;
            self.journal_offset(TIMER_TOPIC, TIMER_PROGRESS_GROUP, WATERMARK_QUEUE, w, now);
            self.wheel.anchored = true;
        }
        self.wheel.queue_of(due)
    }

    /// A timer was stored at (`queue`, `offset`), its record at `phys`: kept in memory if its
    /// window is loaded, and the service wakes for it.
    pub(super) fn timer_stored(&mut self, due: u64, queue: u32, offset: u64, phys: u64) {
        if due < self.wheel.loaded_until {
            self.wheel.due.insert((due, queue, offset), phys);
        }
        let at = self.timers.at(Timer::Wheel).map_or(due, |t| t.min(due));
        self.timers.set(Timer::Wheel, at);
    }

    /// Loads windows up to a bucket ahead of `now`, delivers what is due, moves the watermark
    /// and arms the timer.
    pub(super) fn run_wheel(&mut self, now: u64) {
        let mut delivered = 0;
        let mut windows = 0;
        let mut changes: Vec<(u32, u64)> = Vec::new();
        let mut failed_until = None;
        let mut busy = false;
        // One window at a time: a broker that was down for long catches up window by window,
        // never holding more than what the windows at hand hold.
        loop {
            // A deliberately broken broker (a second early), for the simulator's checkers.
            let early = if crate::buggify::bug("broker.timer-early") {
                1_000
            } else {
                0
            };
            match self.wheel.due.first_key_value() {
                Some((&(due, q, off), &phys)) if due <= now + early => {
                    if delivered == DELIVER_BATCH {
                        busy = true;
                        break;
                    }
                    match self.deliver_timer(phys, now) {
                        Ok(()) => {
                            self.wheel.due.remove(&(due, q, off));
                            delivered += 1;
                        }
                        Err(again) => {
                            failed_until = Some(again);
                            break;
                        }
                    }
                }
                _ if self.wheel.loaded_until <= now + self.wheel.bucket_ms => {
                    if windows == MAX_WINDOWS_PER_WAKE {
                        busy = true;
                        break;
                    }
                    self.load_window();
                    windows += 1;
                }
                _ => break,
            }
        }
        // Every timer due before the earliest one still held, and before what is not loaded,
        // has been delivered.
        let next_held = self.wheel.due.keys().next().map(|k| k.0);
        let watermark = next_held
            .unwrap_or(u64::MAX)
            .min(self.wheel.loaded_until)
            .min(now + 1)
            .max(self.wheel.watermark);
        let moved = watermark != self.wheel.watermark;
        self.wheel.watermark = watermark;
        // Windows wholly behind the watermark are done: their queues' progress moves on.
        while let Some(w) = self.wheel.loaded.front().copied() {
            if w.end > self.wheel.watermark {
                break;
            }
            self.wheel.loaded.pop_front();
            let done = w.first_later.unwrap_or(w.max_at_load);
            if self.wheel.progress.get(&w.queue).is_none_or(|p| *p < done) {
                self.wheel.progress.insert(w.queue, done);
                changes.push((w.queue, done));
            }
        }
        if moved || !changes.is_empty() {
            for &(q, o) in &changes {
                self.journal_offset(TIMER_TOPIC, TIMER_PROGRESS_GROUP, q, o, now);
            }
            if moved {
                self.journal_offset(
                    TIMER_TOPIC,
                    TIMER_PROGRESS_GROUP,
                    WATERMARK_QUEUE,
                    watermark,
                    now,
                );
            }
            let end = self.store.write_pos();
            self.wheel.undurable.push_back((watermark, changes, end));
            if self.config.flush_disk_type == super::FlushDiskType::Sync {
                self.request_flush(now);
            }
        }
        let next = match failed_until {
            Some(t) => Some(t),
            None if busy => Some(now + 1),
            None => {
                // The next held timer, or the next window to load.
                let load_at = self.wheel.loaded_until.saturating_sub(self.wheel.bucket_ms);
                Some(next_held.unwrap_or(u64::MAX).min(load_at.max(now + 1)))
            }
        };
        match next {
            Some(t) if t != u64::MAX => self.timers.set(Timer::Wheel, t),
            _ => self.timers.clear(Timer::Wheel),
        }
    }

    /// Reads the next window's bucket queue into memory.
    fn load_window(&mut self) {
        let w = &self.wheel;
        let (start, end) = (w.loaded_until, w.loaded_until + w.bucket_ms);
        let queue = w.queue_of(start);
        let from = w
            .progress
            .get(&queue)
            .copied()
            .unwrap_or(0)
            .max(self.store.min_offset(TIMER_TOPIC, queue));
        let max = self.store.max_offset(TIMER_TOPIC, queue);
        let mut first_later = None;
        let mut at = from;
        'read: while at < max {
            let upto = (at + LOAD_BATCH).min(max);
            while at < upto {
                match self.store.entry(TIMER_TOPIC, queue, at) {
                    Ok(Some(e)) => {
                        let due = e.tags_code.max(0) as u64;
                        if due >= end {
                            // A later turn of the wheel: progress stops before it.
                            first_later.get_or_insert(at);
                        } else if due >= self.wheel.watermark {
                            self.wheel.due.insert((due, queue, at), e.offset);
                        }
                    }
                    Ok(None) => break 'read,
                    Err(e) => {
                        // Read again at the next turn: progress stops here.
                        tracing::error!(queue, offset = at, error = %e, "timer queue unreadable");
                        first_later.get_or_insert(at);
                        break 'read;
                    }
                }
                at += 1;
            }
        }
        self.wheel.loaded.push_back(Loaded {
            end,
            queue,
            max_at_load: max,
            first_later,
        });
        self.wheel.loaded_until = end;
    }

    /// Stores the timer whose record lies at `phys` in its real topic. `Err(when)` to try
    /// again then.
    fn deliver_timer(&mut self, phys: u64, now: u64) -> Result<(), u64> {
        let rec = match self.store.read(phys) {
            Ok(rec) => {
                self.wheel.read_failure = None;
                rec
            }
            Err(e) => {
                // A read can fail once and succeed again: tried a few times before it is
                // given up as lost (as the delay levels do).
                let tries = match self.wheel.read_failure {
                    Some((at, n)) if at == phys => n + 1,
                    _ => 1,
                };
                if tries < super::schedule::READ_ATTEMPTS {
                    tracing::warn!(phys, error = %e, tries, "timer message unreadable; trying again");
                    self.wheel.read_failure = Some((phys, tries));
                    return Err(now + super::schedule::RETRY_AFTER_FAILURE_MS);
                }
                tracing::error!(phys, error = %e, "timer message unreadable; skipped");
                self.wheel.read_failure = None;
                return Ok(());
            }
        };
        match self.store_at_real_topic(&rec, &[], None, now) {
            Ok(Some(_)) => Ok(()),
            Ok(None) => {
                tracing::error!(phys, "timer message without REAL_TOPIC/REAL_QID; skipped");
                Ok(())
            }
            Err(StoreError::Encode(e)) => {
                tracing::error!(phys, error = %e, "timer message cannot be stored again; skipped");
                Ok(())
            }
            Err(e) => {
                tracing::warn!(phys, error = %e, "delivering a timer message failed; trying again");
                Err(now + super::schedule::RETRY_AFTER_FAILURE_MS)
            }
        }
    }

    /// Journals the watermark and every bucket's progress (at start, after the journal was
    /// compacted).
    pub(super) fn journal_wheel_progress(&mut self, now: u64) {
        if !self.wheel.anchored {
            return; // no timer was ever stored
        }
        let progress: Vec<(u32, u64)> = self.wheel.progress.iter().map(|(q, o)| (*q, *o)).collect();
        for (q, o) in progress {
            self.journal_offset(TIMER_TOPIC, TIMER_PROGRESS_GROUP, q, o, now);
        }
        let w = self.wheel.watermark;
        self.journal_offset(TIMER_TOPIC, TIMER_PROGRESS_GROUP, WATERMARK_QUEUE, w, now);
    }

    /// Moves what flushes made durable into what timerWheel.json may say.
    pub(super) fn wheel_flushed(&mut self) {
        let flushed = self.store.flushed();
        while let Some((_, _, end)) = self.wheel.undurable.front() {
            if *end > flushed {
                break;
            }
            let (watermark, changes, _) = self.wheel.undurable.pop_front().expect("checked");
            self.wheel.durable.watermark = watermark;
            for (q, o) in changes {
                self.wheel.durable.progress.insert(q, o);
            }
            self.wheel.dirty = true;
        }
    }

    /// Writes timerWheel.json if durable progress moved and no write of it is running.
    pub(super) fn persist_wheel(&mut self) {
        self.wheel_flushed();
        if !self.wheel.dirty || self.persists.in_flight(PersistKind::Wheel) {
            return;
        }
        match serde_json::to_vec_pretty(&self.wheel.durable) {
            Ok(data) => {
                self.wheel.dirty = false;
                self.persist(PersistKind::Wheel, TIMER_WHEEL_FILE, data);
            }
            Err(e) => tracing::error!(error = %e, "encoding the timer wheel failed"),
        }
    }

    pub(super) fn wheel_write_failed(&mut self) {
        self.wheel.dirty = true;
    }

    /// Shutdown: everything is flushed by now.
    pub(super) fn wheel_at_shutdown(&mut self) -> TimerWheelFile {
        self.wheel.durable.watermark = self.wheel.watermark;
        self.wheel.durable.progress = self.wheel.progress.clone();
        self.wheel.undurable.clear();
        self.wheel.file()
    }

    /// Timers held in memory now (tests, the note's memory measurement).
    pub fn timers_in_memory(&self) -> usize {
        self.wheel.in_memory()
    }
}

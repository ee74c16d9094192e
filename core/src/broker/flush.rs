//! Commit log flushes as the broker asks for them (`Output::Flush`, answered through
//! `on_flushed` / `on_flush_failed`) and the SYNC_FLUSH sends waiting on them: up to
//! [`MAX_FLUSHES_IN_FLIGHT`] flushes asked at once, each of the bytes appended since the one
//! before it; the durable offset advances through them in order however they are answered,
//! and waiters are acked in append order once it passes them.

use std::collections::VecDeque;

use rockfish_store::{Disk, OffTaskSync, SyncWork};

use super::Broker;
use crate::machine::{ConnId, Output};
use crate::remoting::RemotingCommand;
use crate::remoting::codes::response;

/// A send whose response waits for its data to become durable.
pub(super) struct SyncWaiter {
    pub conn: ConnId,
    pub response: RemotingCommand,
    pub end: u64,
    pub deadline: u64,
    /// The answer's code if the flush does not finish in time.
    pub timeout_code: i32,
    /// Under SYNC_MASTER, the answer also waits for a slave to hold the data (a send's).
    pub replicate: bool,
}

/// Flushes asked and not yet answered, at most. With one, the flush thread idled while its
/// answer reached the broker and the next flush came back (a round trip of thread wake-ups,
/// as long as the sync itself on a fast disk); with two, the next flush is queued behind the
/// running one, holding what arrived since that one was asked.
pub const MAX_FLUSHES_IN_FLIGHT: usize = 2;

/// Default `BrokerConfig::flush_behind_bytes`...
pub const ASYNC_FLUSH_BEHIND_BYTES: u64 = 16 << 20;
/// ...and `checkpoint_behind_bytes` (at 200 MB/s the timers alone left 250–300 MB past the
/// checkpoint: 1.2 s from a kill -9 to the first send; 10–25 MB and 0.33–0.38 s with these).
pub const CHECKPOINT_BEHIND_BYTES: u64 = 32 << 20;

/// Flushes asked of the driver and the sends waiting on them.
#[derive(Default)]
pub(super) struct Flushes {
    /// SYNC_FLUSH sends waiting for their data to become durable, in append order.
    pub waiters: VecDeque<SyncWaiter>,
    /// Flushes asked and not yet counted, in the order asked: the mark each asked for
    /// (ascending; each covers the bytes from the previous mark), whether it was answered,
    /// and when it was asked (for the group-commit latency). Only the answered prefix is
    /// durable.
    pub in_flight: VecDeque<(u64, bool, u64)>,
}

impl Flushes {
    /// Whether any flush is asked and not yet counted.
    pub fn busy(&self) -> bool {
        !self.in_flight.is_empty()
    }
}

impl<D: Disk> Broker<D> {
    /// Asks the driver to flush everything appended and not yet asked, unless as many
    /// flushes as may be are in flight.
    pub(super) fn request_flush(&mut self, now: u64) {
        let upto = self.store.write_pos();
        if self.flush.in_flight.len() < MAX_FLUSHES_IN_FLIGHT
            && upto > self.flush_asked()
            && self.store.stopped().is_none()
        {
            self.flush.in_flight.push_back((upto, false, now));
            self.outputs.push_back(Output::Flush { upto });
        }
    }

    /// Where the flushes asked so far end: the last one's mark, or the durable offset.
    fn flush_asked(&self) -> u64 {
        self.flush
            .in_flight
            .back()
            .map_or(self.store.flushed(), |f| f.0)
    }

    /// Under ASYNC_FLUSH, asks a flush early once much is appended and not asked.
    pub(super) fn flush_if_far_behind(&mut self, now: u64) {
        if self.config.flush_disk_type == super::FlushDiskType::Async
            && self.store.write_pos().saturating_sub(self.flush_asked())
                >= self.config.flush_behind_bytes
        {
            self.request_flush(now);
        }
    }

    /// Commit log byte ranges a flush thread must sync for `Output::Flush { upto }`: from the
    /// mark of the flush asked before it (or the durable offset) to `upto`.
    pub fn flush_ranges(&self, upto: u64) -> Vec<(rockfish_store::FileId, u64, u64)> {
        let from = self
            .flush
            .in_flight
            .iter()
            .map(|f| f.0)
            .take_while(|&mark| mark < upto)
            .last()
            .unwrap_or(self.store.flushed());
        self.store.commit_log().flush_ranges(from, upto)
    }

    /// A flush finished: its range is durable, and everything below `upto` once the flushes
    /// asked before it are too. Acks the sends that covers.
    pub fn on_flushed(&mut self, upto: u64, now: u64) {
        let Some(at) = self.flush.in_flight.iter().position(|f| f.0 == upto) else {
            // Answered after a failed flush forgot every flush in flight (the store has
            // stopped: nothing more becomes durable), or never asked.
            debug_assert!(
                self.store.stopped().is_some(),
                "a flush answered that was not asked"
            );
            return;
        };
        self.flush.in_flight[at].1 = true;
        let mut durable_to = None;
        let before = self.store.flushed();
        while self.flush.in_flight.front().is_some_and(|f| f.1) {
            let (mark, _, asked_at) = self.flush.in_flight.pop_front().expect("checked");
            self.stats
                .group_commit_ms
                .observe(now.saturating_sub(asked_at) as f64);
            durable_to = Some(mark);
        }
        let Some(durable_to) = durable_to else {
            // An earlier flush is still running: nothing counts until it is done.
            return;
        };
        self.stats
            .group_commit_bytes
            .observe(durable_to.saturating_sub(before) as f64);
        self.store.commit_log_mut().on_flushed(durable_to);
        self.write_offsets_when_durable(now);
        let durable = self.store.flushed();
        if durable.saturating_sub(self.store.checkpointed()) >= self.config.checkpoint_behind_bytes
        {
            self.start_checkpoint(now);
        }
        // What arrived during that flush is flushed next, asked before the answers go out
        // so the flush thread waits as little as it can: waiters' sends, and sends nobody
        // waits for (oneway), which under SYNC_FLUSH no consumer sees until durable.
        self.request_flush(now);
        let mut acked = 0u32;
        while self.flush.waiters.front().is_some_and(|w| w.end <= durable) {
            acked += 1;
            let w = self.flush.waiters.pop_front().expect("checked");
            // Waiters are in append order: each acked one ends at or before the next.
            debug_assert!(self.flush.waiters.front().is_none_or(|n| n.end >= w.end));
            if w.replicate && self.repl.role == super::BrokerRole::SyncMaster {
                self.await_replica(w, now);
            } else {
                self.outputs.push_back(Output::Send {
                    conn: w.conn,
                    cmd: w.response,
                });
            }
        }
        if acked > 0 {
            self.stats.group_commit_sends.observe(f64::from(acked));
        }
        self.wake_visible_pulls(now);
        self.schedule_flushed();
        self.wheel_flushed();
        self.replication_flushed(now);
        self.try_promote(now);
        self.after_input(now);
    }

    /// A flush failed: the store stops taking writes, and every waiting send gets an error
    /// (its message may or may not be durable; it is never reported stored).
    pub fn on_flush_failed(&mut self, reason: String, _now: u64) {
        self.flush.in_flight.clear();
        self.store.commit_log_mut().on_flush_failed(reason.clone());
        for w in std::mem::take(&mut self.flush.waiters) {
            let mut r = w.response;
            r.code = response::SYSTEM_ERROR;
            r.remark = Some(format!(
                "flush failed, the message may not be durable: {reason}"
            ));
            self.outputs.push_back(Output::Send {
                conn: w.conn,
                cmd: r,
            });
        }
    }

    pub(super) fn expire_sync_waiters(&mut self, now: u64) {
        // Waiters are in append order and share one timeout, so deadlines are ordered too.
        while self
            .flush
            .waiters
            .front()
            .is_some_and(|w| w.deadline <= now)
        {
            let w = self.flush.waiters.pop_front().expect("checked");
            let mut r = w.response;
            r.code = w.timeout_code;
            r.remark = Some("flush disk timeout: stored, not yet known durable".into());
            self.outputs.push_back(Output::Send {
                conn: w.conn,
                cmd: r,
            });
        }
    }
}

/// The disk work of a flush, built on the machine's task and run off it: the real driver's
/// flush thread, the simulator after a simulated latency and the test harnesses all run
/// this same work.
impl<D: OffTaskSync> Broker<D> {
    /// The work that makes `upto` durable, for `Output::Flush { upto }`.
    pub fn flush_work(&self, upto: u64) -> Result<SyncWork, String> {
        self.store.disk().sync_job(self.flush_ranges(upto))
    }

    /// Builds and runs a flush's work at once, then answers it (tests and simple drivers).
    pub fn run_flush(&mut self, upto: u64, now: u64) {
        match self.flush_work(upto).and_then(|work| work()) {
            Ok(()) => self.on_flushed(upto, now),
            Err(e) => self.on_flush_failed(e, now),
        }
    }
}

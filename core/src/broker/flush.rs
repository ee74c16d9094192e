//! Commit log flushes as the broker asks for them (`Output::Flush`, answered through
//! `on_flushed` / `on_flush_failed`) and the SYNC_FLUSH sends waiting on them: one flush in
//! flight at a time, waiters acked in append order once the durable offset passes them.

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

/// Flushes asked of the driver and the sends waiting on them.
#[derive(Default)]
pub(super) struct Flushes {
    /// SYNC_FLUSH sends waiting for their data to become durable, in append order.
    pub waiters: VecDeque<SyncWaiter>,
    /// The one flush asked and not yet answered: the mark it asked for.
    pub in_flight: Option<u64>,
}

impl<D: Disk> Broker<D> {
    /// Asks the driver to flush everything appended so far, unless a flush is running.
    pub(super) fn request_flush(&mut self) {
        let upto = self.store.write_pos();
        if self.flush.in_flight.is_none()
            && upto > self.store.flushed()
            && self.store.stopped().is_none()
        {
            self.flush.in_flight = Some(upto);
            self.outputs.push_back(Output::Flush { upto });
        }
    }

    /// Commit log byte ranges a flush thread must sync to make `upto` durable.
    pub fn flush_ranges(&self, upto: u64) -> Vec<(rockfish_store::FileId, u64, u64)> {
        self.store.commit_log().flush_ranges(upto)
    }

    /// A flush finished: everything below `upto` is durable. Acks the sends it covers.
    pub fn on_flushed(&mut self, upto: u64, now: u64) {
        // One flush in flight at a time, answered with the mark it asked for.
        debug_assert_eq!(
            self.flush.in_flight,
            Some(upto),
            "a flush answered that was not asked"
        );
        self.flush.in_flight = None;
        self.store.commit_log_mut().on_flushed(upto);
        let durable = self.store.flushed();
        while self.flush.waiters.front().is_some_and(|w| w.end <= durable) {
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
        // What arrived during that flush is flushed next: waiters' sends, and sends nobody
        // waits for (oneway), which under SYNC_FLUSH no consumer sees until durable.
        self.request_flush();
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
        self.flush.in_flight = None;
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

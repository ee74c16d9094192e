//! Pulls held by long polling, by queue, with their deadlines indexed: the broker's next
//! timeout is the first deadline (not a scan of every held pull on every turn of the
//! driver's loop), and a timeout with nothing due touches none of them.

use std::collections::BTreeMap;

use super::limits::BrokerLimits;
use crate::machine::ConnId;
use crate::remoting::RemotingCommand;

#[derive(Debug, Clone)]
pub(super) struct PendingPull {
    pub(super) conn: ConnId,
    pub(super) request: RemotingCommand,
    pub(super) deadline: u64,
}

#[derive(Debug, Default)]
pub(super) struct HeldPulls {
    /// topic -> queue id -> held pulls (looked up by `&str`: a send's wake-up allocates
    /// nothing).
    by_queue: BTreeMap<String, BTreeMap<u32, Vec<PendingPull>>>,
    /// How many held pulls have each deadline.
    deadlines: BTreeMap<u64, usize>,
    /// How many each connection holds: the caps are a lookup, not a walk.
    by_conn: BTreeMap<ConnId, usize>,
    len: usize,
}

impl HeldPulls {
    /// Whether `conn` may hold one more pull under `limits`.
    pub(super) fn admits(&self, conn: ConnId, limits: &BrokerLimits) -> bool {
        self.len < limits.max_held_pulls
            && self.by_conn.get(&conn).copied().unwrap_or(0) < limits.max_held_pulls_per_conn
    }

    pub(super) fn hold(&mut self, topic: String, queue_id: u32, pull: PendingPull) {
        self.count(pull.deadline, pull.conn, true);
        self.by_queue
            .entry(topic)
            .or_default()
            .entry(queue_id)
            .or_default()
            .push(pull);
        self.check();
    }

    /// Every pull held on (topic, queue), taken out (a message arrived there).
    pub(super) fn take_queue(&mut self, topic: &str, queue_id: u32) -> Vec<PendingPull> {
        let Some(queues) = self.by_queue.get_mut(topic) else {
            return Vec::new();
        };
        let pulls = queues.remove(&queue_id).unwrap_or_default();
        if queues.is_empty() {
            self.by_queue.remove(topic);
        }
        for p in &pulls {
            self.count(p.deadline, p.conn, false);
        }
        self.check();
        pulls
    }

    /// The pull held last on (topic, queue) keeps `deadline` (a woken pull held again keeps
    /// its original one).
    pub(super) fn set_last_deadline(&mut self, topic: &str, queue_id: u32, deadline: u64) {
        let Some(last) = self
            .by_queue
            .get_mut(topic)
            .and_then(|q| q.get_mut(&queue_id))
            .and_then(|v| v.last_mut())
        else {
            return;
        };
        let old = std::mem::replace(&mut last.deadline, deadline);
        let conn = last.conn;
        self.count(old, conn, false);
        self.count(deadline, conn, true);
    }

    /// The pulls whose deadline is at or before `now`, taken out, in queue order.
    pub(super) fn take_expired(&mut self, now: u64) -> Vec<PendingPull> {
        if self.next_deadline().is_none_or(|d| d > now) {
            return Vec::new();
        }
        let mut due = Vec::new();
        for queues in self.by_queue.values_mut() {
            for pulls in queues.values_mut() {
                if pulls.iter().any(|p| p.deadline <= now) {
                    let (expired, kept): (Vec<_>, Vec<_>) = std::mem::take(pulls)
                        .into_iter()
                        .partition(|p| p.deadline <= now);
                    *pulls = kept;
                    due.extend(expired);
                }
            }
            queues.retain(|_, v| !v.is_empty());
        }
        self.by_queue.retain(|_, q| !q.is_empty());
        for p in &due {
            self.count(p.deadline, p.conn, false);
        }
        self.check();
        due
    }

    /// The connection is gone: its held pulls are dropped unanswered.
    pub(super) fn drop_conn(&mut self, conn: ConnId) {
        let mut dropped = Vec::new();
        for queues in self.by_queue.values_mut() {
            for pulls in queues.values_mut() {
                pulls.retain(|p| {
                    let gone = p.conn == conn;
                    if gone {
                        dropped.push(p.deadline);
                    }
                    !gone
                });
            }
            queues.retain(|_, v| !v.is_empty());
        }
        self.by_queue.retain(|_, q| !q.is_empty());
        for d in dropped {
            self.count(d, conn, false);
        }
        self.check();
    }

    pub(super) fn next_deadline(&self) -> Option<u64> {
        self.deadlines.first_key_value().map(|(d, _)| *d)
    }

    /// Every queue with held pulls.
    pub(super) fn queues(&self) -> impl Iterator<Item = (&str, u32, &[PendingPull])> {
        self.by_queue.iter().flat_map(|(topic, queues)| {
            queues
                .iter()
                .map(move |(q, pulls)| (topic.as_str(), *q, pulls.as_slice()))
        })
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    fn count(&mut self, deadline: u64, conn: ConnId, add: bool) {
        if add {
            *self.deadlines.entry(deadline).or_default() += 1;
            *self.by_conn.entry(conn).or_default() += 1;
            self.len += 1;
            return;
        }
        let n = self
            .deadlines
            .get_mut(&deadline)
            .expect("a held pull's deadline is indexed");
        *n -= 1;
        if *n == 0 {
            self.deadlines.remove(&deadline);
        }
        let n = self
            .by_conn
            .get_mut(&conn)
            .expect("a held pull's connection is counted");
        *n -= 1;
        if *n == 0 {
            self.by_conn.remove(&conn);
        }
        self.len -= 1;
    }

    /// The indexes count exactly the held pulls.
    fn check(&self) {
        debug_assert_eq!(self.deadlines.values().sum::<usize>(), self.len);
        debug_assert_eq!(self.by_conn.values().sum::<usize>(), self.len);
        debug_assert_eq!(
            self.by_queue
                .values()
                .flat_map(BTreeMap::values)
                .map(Vec::len)
                .sum::<usize>(),
            self.len
        );
    }
}

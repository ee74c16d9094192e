//! Checkers over a run's history. Each judges one promise; each has a test with a
//! deliberately broken component that it catches.

use std::collections::{BTreeMap, BTreeSet};

use rockfish_core::broker::FlushDiskType;
use rockfish_core::producer::SendStatus;

use crate::config::SimConfig;
use crate::world::History;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// A consumer received something no producer sent.
    Phantom { body: String },
    /// A send acknowledged as durable (SEND_OK under SYNC_FLUSH, or under ASYNC_FLUSH with no
    /// power loss) never reached the consumer group.
    AckedLost { body: String },
    /// A message sent after the heal was not acknowledged, or not consumed, by the end.
    NotConverged { body: String, acked: bool },
    /// The orderly group consumed a queue's message before the one ahead of it.
    OutOfOrder {
        body: String,
        broker: String,
        queue: u32,
        offset: u64,
    },
    /// A broadcasting consumer never consumed a message it was owed.
    BroadcastLost { consumer: usize, body: String },
    /// After the heal, a node's route for the topic still disagrees with the brokers hosting
    /// it.
    RoutesDiverged {
        node: usize,
        saw: Vec<String>,
        hosting: Vec<String>,
    },
    /// A delivered message is no longer stored at its queue offset at the end of the run,
    /// where the flush promise says it cannot vanish (SYNC_FLUSH: never; ASYNC_FLUSH: unless
    /// its broker lost power after the delivery). `now` is what the slot holds instead.
    Vanished {
        body: String,
        broker: String,
        queue: u32,
        offset: u64,
        now: Option<String>,
    },
    /// One queue offset was delivered as two different messages (ASYNC_FLUSH allows it only
    /// across a power loss of the broker between the two deliveries).
    OffsetReused {
        broker: String,
        topic: String,
        queue: u32,
        offset: u64,
        first: String,
        second: String,
    },
}

impl Violation {
    /// The invariant broken, as scenario files name it.
    pub fn invariant(&self) -> &'static str {
        match self {
            Violation::Phantom { .. } => "no-phantom",
            Violation::AckedLost { .. } => "acked-durable-not-lost",
            Violation::NotConverged { .. } => "liveness-converges",
            Violation::OutOfOrder { .. } => "orderly-fifo",
            Violation::BroadcastLost { .. } => "broadcast-at-least-once",
            Violation::RoutesDiverged { .. } => "routes-converge",
            Violation::Vanished { .. } => "delivered-not-vanished",
            Violation::OffsetReused { .. } => "one-offset-one-message",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    pub violations: Vec<Violation>,
    pub acked: usize,
    pub delivered_distinct: usize,
    /// Deliveries beyond the first of each message: allowed (at-least-once), reported.
    pub duplicates: usize,
}

impl CheckReport {
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Whether a message was sent after the heal (such messages are owed unconditionally).
fn after_heal(body: &str) -> bool {
    body.contains("-L")
}

pub fn check(cfg: &SimConfig, h: &History) -> CheckReport {
    let mut report = CheckReport::default();
    let mut seen = BTreeSet::new();
    // What the clustering group consumed, and what each broadcasting consumer consumed.
    let mut group = BTreeSet::new();
    let mut each: BTreeMap<usize, BTreeSet<&str>> = h
        .broadcast_consumers
        .iter()
        .map(|c| (*c, BTreeSet::new()))
        .collect();
    for d in &h.delivered {
        if !h.sent.contains_key(&d.body) {
            report.violations.push(Violation::Phantom {
                body: d.body.clone(),
            });
        }
        // A group gets each message once; a broadcasting consumer is a group of its own.
        let receiver = if d.broadcast { d.consumer } else { usize::MAX };
        if !seen.insert((receiver, d.body.as_str())) {
            report.duplicates += 1;
        }
        if d.consumed {
            if d.broadcast {
                each.entry(d.consumer).or_default().insert(&d.body);
            } else {
                group.insert(d.body.as_str());
            }
        }
    }
    report.delivered_distinct = h
        .delivered
        .iter()
        .map(|d| d.body.as_str())
        .collect::<BTreeSet<_>>()
        .len();
    let promised = cfg.flush == FlushDiskType::Sync || h.power_losses == 0;
    // A message still stored at the end was kept, whatever the flush promise: if it was
    // acknowledged, the group owes it (a consumer offset past it must not skip it).
    let kept: BTreeSet<&str> = h.stored.values().map(String::as_str).collect();
    for (body, status) in &h.sent {
        let acked = *status == Some(SendStatus::SendOk);
        let promised = promised || kept.contains(body.as_str());
        let owed = acked && (promised || after_heal(body));
        if after_heal(body) && (!acked || (cfg.consumers > 0 && !group.contains(body.as_str()))) {
            report.violations.push(Violation::NotConverged {
                body: body.clone(),
                acked,
            });
        }
        if acked {
            report.acked += 1;
        }
        if acked && promised && cfg.consumers > 0 && !group.contains(body.as_str()) {
            report
                .violations
                .push(Violation::AckedLost { body: body.clone() });
        }
        for (consumer, got) in &each {
            if owed && !got.contains(body.as_str()) {
                report.violations.push(Violation::BroadcastLost {
                    consumer: *consumer,
                    body: body.clone(),
                });
            }
        }
    }
    if cfg.orderly {
        check_fifo(h, &mut report);
    }
    check_routes(h, &mut report);
    check_vanished(cfg, h, &mut report);
    check_offset_reuse(cfg, h, &mut report);
    report
        .violations
        .retain(|v| cfg.invariants.iter().any(|i| i == v.invariant()));
    report
}

/// Orderly consumption is FIFO per queue: the group consumes a queue's message at offset `o`
/// only once the one at `o - 1` has been consumed. Consuming again from an earlier offset
/// (after a rebalance) is allowed; that is at-least-once, not disorder.
fn check_fifo(h: &History, report: &mut CheckReport) {
    let mut consumed: BTreeMap<(&str, u32), BTreeSet<u64>> = BTreeMap::new();
    for d in h.delivered.iter().filter(|d| !d.broadcast && d.consumed) {
        let queue = consumed.entry((&d.broker, d.queue)).or_default();
        if d.offset > 0 && !queue.contains(&(d.offset - 1)) {
            report.violations.push(Violation::OutOfOrder {
                body: d.body.clone(),
                broker: d.broker.clone(),
                queue: d.queue,
                offset: d.offset,
            });
        }
        queue.insert(d.offset);
    }
}

/// After the heal every live name server and client lists exactly the brokers that host the
/// topic.
fn check_routes(h: &History, report: &mut CheckReport) {
    let mut hosting = h.hosting.clone();
    hosting.sort();
    for view in &h.routes {
        if view.brokers != hosting {
            report.violations.push(Violation::RoutesDiverged {
                node: view.node,
                saw: view.brokers.clone(),
                hosting: hosting.clone(),
            });
        }
    }
}

/// Whether `broker` lost power in `(from, to]`.
fn power_lost(h: &History, broker: &str, from: u64, to: u64) -> bool {
    h.crash_log
        .iter()
        .any(|c| c.power && c.broker == broker && c.at > from && c.at <= to)
}

/// A delivered message must still be stored at its queue offset at the end: under SYNC_FLUSH
/// a consumer is only served what is durable; under ASYNC_FLUSH only a power loss after the
/// delivery may take it (a process crash keeps the page cache). Judged against the final
/// stores of the brokers running at the end.
fn check_vanished(cfg: &SimConfig, h: &History, report: &mut CheckReport) {
    let mut judged = BTreeSet::new();
    for d in &h.delivered {
        if !h.stored_brokers.contains(&d.broker) || !h.stored_topics.contains(&d.topic) {
            continue;
        }
        let slot = (d.broker.clone(), d.topic.clone(), d.queue, d.offset);
        let now = h.stored.get(&slot);
        if now == Some(&d.body) || !judged.insert(slot) {
            continue;
        }
        // It was served some time after it was sent and arrived by `d.at` (a response in
        // flight outlives the broker), so any power loss after the send may have taken it.
        let stored_from = h.sent_at.get(&d.body).copied().unwrap_or(0);
        if cfg.flush == FlushDiskType::Async && power_lost(h, &d.broker, stored_from, u64::MAX) {
            continue;
        }
        report.violations.push(Violation::Vanished {
            body: d.body.clone(),
            broker: d.broker.clone(),
            queue: d.queue,
            offset: d.offset,
            now: now.cloned(),
        });
    }
}

/// One (broker, topic, queue, offset) is one message for the whole run: a consumer that saw
/// one message there must never be served another (RocketMQ #8239). ASYNC_FLUSH may reuse an
/// offset only after a power loss of that broker between the two deliveries.
fn check_offset_reuse(cfg: &SimConfig, h: &History, report: &mut CheckReport) {
    let mut first: BTreeMap<(&str, &str, u32, u64), &str> = BTreeMap::new();
    for d in &h.delivered {
        let key = (d.broker.as_str(), d.topic.as_str(), d.queue, d.offset);
        let Some(body) = first.get(&key).copied() else {
            first.insert(key, d.body.as_str());
            continue;
        };
        if body == d.body {
            continue;
        }
        // The first message was stored after it was sent; the second served by `d.at`.
        let stored_from = h.sent_at.get(body).copied().unwrap_or(0);
        let allowed =
            cfg.flush == FlushDiskType::Async && power_lost(h, &d.broker, stored_from, d.at);
        if !allowed {
            report.violations.push(Violation::OffsetReused {
                broker: d.broker.clone(),
                topic: d.topic.clone(),
                queue: d.queue,
                offset: d.offset,
                first: body.to_string(),
                second: d.body.clone(),
            });
        }
        // The slot's message from now on is the later one.
        first.insert(key, d.body.as_str());
    }
}

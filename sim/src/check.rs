//! Checkers over a run's history. Each judges one promise; each has a test with a
//! deliberately broken component that it catches.

use std::collections::{BTreeMap, BTreeSet};

use rockfish_core::broker::FlushDiskType;
use rockfish_core::producer::SendStatus;

use crate::config::SimConfig;
use crate::world::{Group, History, TAGGED_SUBSCRIPTION};

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
        topic: String,
        queue: u32,
        offset: u64,
    },
    /// A broadcasting consumer never consumed a message it was owed.
    BroadcastLost { consumer: usize, body: String },
    /// After the heal, a node's route for the topic still disagrees with the brokers hosting
    /// it.
    RoutesDiverged {
        node: usize,
        topic: String,
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
    /// A SEND_OK the flush promise covers named a slot that, at the end, holds something else
    /// (`now`) or nothing: the ack told the producer a lie about where its message is.
    AckedMisplaced {
        body: String,
        broker: String,
        topic: String,
        queue: u32,
        offset: u64,
        now: Option<String>,
    },
    /// Two consumers of the orderly group held messages of one queue at the same time
    /// (`first` from `first_from`, `second` from `second_from`, overlapping).
    OrderlyOverlap {
        broker: String,
        topic: String,
        queue: u32,
        first: usize,
        first_from: u64,
        second: usize,
        second_from: u64,
    },
    /// At the end, with every rebalance settled, a queue is owned by more than one consumer
    /// of the clustering group.
    SharedQueue {
        group: Group,
        broker: String,
        topic: String,
        queue: u32,
        owners: Vec<usize>,
    },
    /// A message sent once everything had settled was delivered again after it had been
    /// consumed: a fault-free cluster must not duplicate.
    SettledDuplicate {
        body: String,
        consumer: usize,
        at: u64,
    },
    /// A message sent once everything had settled took longer than [`DELIVERY_BOUND_MS`] to
    /// reach a consumer (a lost long-poll wake-up looks like this).
    SlowDelivery {
        body: String,
        consumer: usize,
        sent_at: u64,
        took_ms: u64,
    },
    /// A node's timer fired again and again with the machine due again at once each time: a
    /// busy loop (a real driver would spin a core on it).
    BusyTimer { node: usize, at: u64 },
    /// At the end, a broker's store disagreed with itself (a consume queue entry or an index
    /// key that does not lead to its record) or with its disk (a checkpoint or flushed
    /// offset past what a power loss would keep).
    StoreInconsistent { broker: String, what: String },
    /// The tagged group was handed a message its subscription does not match.
    TaggedLeak {
        body: String,
        tags: String,
        consumer: usize,
    },
    /// The tagged group never consumed a message it was owed whose tag it subscribes to.
    TaggedMissed { body: String, tag: String },
    /// A message sent with a delay level, or redelivered from the group's retry topic,
    /// reached a consumer without passing the schedule topic (`due: None`, `stored_ts` the
    /// copy's), or was stored in its topic earlier than its level's delay after it was
    /// stored in the schedule topic, by the broker's clock (`due`: the earliest it could be).
    DelayedEarly {
        body: String,
        broker: String,
        reconsumed: i32,
        stored_ts: i64,
        due: Option<i64>,
    },
    /// A dead letter that is not one: stored in the DLQ after other than maxReconsumeTimes
    /// reconsumptions, or an owed message that failed every time and is not in any DLQ at the
    /// end (or was not delivered once for each reconsumption on the way).
    DeadLetterWrong { body: String, what: String },
    /// A transaction's message stored or delivered against its outcome: committed though the
    /// application rolled it back (or never ran its local transaction), delivered though
    /// rolled back, committed twice from one half, or a half of a committed transaction left
    /// uncommitted long after the check-backs should have resolved it.
    TransactionWrong { body: String, what: String },
    /// A slave's log is not its master's (a byte differs, or it goes further).
    ReplicaDiverged { broker: String, what: String },
    /// A SYNC_MASTER acked SEND_OK a message its slave did not hold durably.
    SyncAckUnreplicated { body: String, what: String },
    /// Two replicas of a group acted as master in one master epoch (controller mode).
    TwoMastersInEpoch { broker: String, what: String },
    /// A message the pop group acked (the broker answered SUCCESS) was handed out again:
    /// its slot itself, or a copy one reconsumption further on when every earlier hand-out
    /// of it was acked (ASYNC_FLUSH allows it only across a power loss of its broker).
    PopAckedResurrected {
        body: String,
        broker: String,
        /// The acked slot (for a copy: the earliest acked hand-out it could come from).
        topic: String,
        queue: u32,
        offset: u64,
        acked_at: u64,
        again_at: u64,
        reconsumed: i32,
    },
    /// A message handed out to the pop group came back before the invisible time it was
    /// handed out under had passed (by its broker's clock): a copy one reconsumption
    /// further on with no hand-out before it that long ago, or its very slot again.
    PopBackEarly {
        body: String,
        broker: String,
        reconsumed: i32,
        at: u64,
        what: String,
    },
    /// At the end, a message owed to the pop group was never acked by it (nor, for a message
    /// it never acks, stored in `%DLQ%SimPop`).
    PopLost { body: String, what: String },
}

/// How long a message sent to a settled, fault-free cluster may take to reach its consumers:
/// a few network hops, a flush and the application's pace; far less than the broker's
/// long-poll hold (15 s) a lost wake-up falls back on.
pub const DELIVERY_BOUND_MS: u64 = 1_000;

impl Violation {
    /// The message this violation is about, if it is about one (the timeline marks it).
    pub fn body(&self) -> Option<&str> {
        match self {
            Violation::Phantom { body }
            | Violation::AckedLost { body }
            | Violation::NotConverged { body, .. }
            | Violation::OutOfOrder { body, .. }
            | Violation::BroadcastLost { body, .. }
            | Violation::Vanished { body, .. }
            | Violation::AckedMisplaced { body, .. }
            | Violation::SettledDuplicate { body, .. }
            | Violation::SlowDelivery { body, .. }
            | Violation::TaggedLeak { body, .. }
            | Violation::TaggedMissed { body, .. }
            | Violation::DelayedEarly { body, .. }
            | Violation::DeadLetterWrong { body, .. }
            | Violation::SyncAckUnreplicated { body, .. }
            | Violation::PopAckedResurrected { body, .. }
            | Violation::PopBackEarly { body, .. }
            | Violation::PopLost { body, .. } => Some(body),
            Violation::OffsetReused { second, .. } => Some(second),
            _ => None,
        }
    }

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
            Violation::AckedMisplaced { .. } => "acked-stored-at-offset",
            Violation::OrderlyOverlap { .. } => "orderly-exclusive",
            Violation::SharedQueue { .. } => "one-owner-per-queue",
            Violation::SettledDuplicate { .. } => "settled-no-duplicates",
            Violation::SlowDelivery { .. } => "delivery-latency",
            Violation::BusyTimer { .. } => "timers-not-busy",
            Violation::TaggedLeak { .. } | Violation::TaggedMissed { .. } => "tagged-exact",
            Violation::StoreInconsistent { .. } => "store-consistent",
            Violation::DelayedEarly { .. } => "delay-not-early",
            Violation::DeadLetterWrong { .. } => "dead-letter-exact",
            Violation::TransactionWrong { .. } => "transaction-exact",
            Violation::ReplicaDiverged { .. } => "replica-prefix",
            Violation::SyncAckUnreplicated { .. } => "sync-master-replicated",
            Violation::TwoMastersInEpoch { .. } => "one-master-per-epoch",
            Violation::PopAckedResurrected { .. } => "pop-acked-not-resurrected",
            Violation::PopBackEarly { .. } => "pop-not-back-early",
            Violation::PopLost { .. } => "pop-consumed",
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
    /// Of the messages sent once everything settled: how long the slowest took to reach a
    /// consumer, ms (`None` without such messages).
    pub settled_latency_max_ms: Option<u64>,
}

impl CheckReport {
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Whether a message was sent after the heal (such messages are owed unconditionally).
fn after_heal(body: &str) -> bool {
    body.contains("-L") || settled(body)
}

/// Whether the tagged group's subscription matches a message with these tags: its tag
/// expression, or with `tagged_sql` its SQL92 expression over the tag and `prio`.
fn subscribed(cfg: &SimConfig, h: &History, body: &str, tags: &str) -> bool {
    if cfg.tagged_sql {
        let prio = h.prio.get(body).copied().unwrap_or(u32::MAX);
        return crate::world::tagged_sql_matches(tags, prio);
    }
    TAGGED_SUBSCRIPTION.split("||").any(|t| t.trim() == tags)
}

/// Whether a message was sent once everything had settled.
fn settled(body: &str) -> bool {
    body.contains("-S")
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
    // What the tagged group consumed.
    let mut tagged = BTreeSet::new();
    for d in &h.delivered {
        if !h.sent.contains_key(&d.body) {
            report.violations.push(Violation::Phantom {
                body: d.body.clone(),
            });
        }
        // A group gets each message once; a broadcasting consumer is a group of its own.
        if !seen.insert((d.receiver(), d.body.as_str())) {
            report.duplicates += 1;
        }
        if d.group == Group::Tagged && !subscribed(cfg, h, &d.body, &d.tags) {
            report.violations.push(Violation::TaggedLeak {
                body: d.body.clone(),
                tags: d.tags.clone(),
                consumer: d.consumer,
            });
        }
        if d.consumed {
            match d.group {
                Group::Broadcast => {
                    each.entry(d.consumer).or_default().insert(&d.body);
                }
                Group::Clustering => {
                    group.insert(d.body.as_str());
                }
                Group::Tagged => {
                    tagged.insert(d.body.as_str());
                }
                Group::Pop => {}
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
        // A rolled-back transaction is owed to nobody (`check_transactions` judges it).
        if h.transactions.contains_key(body) && !committed(h, body) {
            continue;
        }
        let acked = *status == Some(SendStatus::SendOk);
        // A message stored on a broker lost for good is gone with that machine (no replica
        // yet): nothing is owed of it.
        let lost_with_broker = h
            .acked_at
            .get(body)
            .is_some_and(|(broker, ..)| h.lost_brokers.contains(broker));
        let promised = (promised || kept.contains(body.as_str())) && !lost_with_broker;
        // A oneway send is never acknowledged: after the heal it is owed once it is stored.
        let oneway = h.oneway.contains(body);
        let owed = (acked && (promised || after_heal(body)))
            || (oneway && after_heal(body) && kept.contains(body.as_str()));
        let unacked = !acked && !oneway;
        // A poison message is owed to the dead-letter queue, not to the group, and so is one
        // that failed max_reconsume_times + 1 times by chance (`check_dead_letters` judges
        // both).
        let poison = h.poison.contains(body) || h.dead_letters.iter().any(|d| d.2 == *body);
        if after_heal(body)
            && (unacked || (owed && !poison && cfg.consumers > 0 && !group.contains(body.as_str())))
        {
            report.violations.push(Violation::NotConverged {
                body: body.clone(),
                acked,
            });
        }
        if acked {
            report.acked += 1;
        }
        if acked && promised && !poison && cfg.consumers > 0 && !group.contains(body.as_str()) {
            report
                .violations
                .push(Violation::AckedLost { body: body.clone() });
        }
        let tag = h.tags.get(body).map(String::as_str).unwrap_or_default();
        // A consume queue entry's tag code has no checksum (as RocketMQ's): a read that
        // flips one of its bits filters the message out of a tag subscription's pull, with
        // nothing to tell. Judged only in runs where no such read happened.
        if owed
            && cfg.tagged_consumers > 0
            && h.queue_bitflips == 0
            && subscribed(cfg, h, body, tag)
            && !tagged.contains(body.as_str())
        {
            report.violations.push(Violation::TaggedMissed {
                body: body.clone(),
                tag: tag.to_string(),
            });
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
    check_acked_at(cfg, h, &mut report);
    if cfg.orderly {
        check_exclusive(h, &mut report);
    }
    check_owners(h, &mut report);
    check_settled(cfg, h, &mut report);
    check_delays(cfg, h, &mut report);
    check_dead_letters(cfg, h, &mut report);
    check_transactions(cfg, h, &mut report);
    if cfg.pop_consumers > 0 {
        check_pop_returns(cfg, h, &mut report);
        check_pop_consumed(cfg, h, &mut report);
    }
    for (broker, what) in &h.replica_problems {
        report.violations.push(Violation::ReplicaDiverged {
            broker: broker.clone(),
            what: what.clone(),
        });
    }
    for (broker, what) in &h.two_masters {
        report.violations.push(Violation::TwoMastersInEpoch {
            broker: broker.clone(),
            what: what.clone(),
        });
    }
    for (body, what) in &h.sync_unreplicated {
        report.violations.push(Violation::SyncAckUnreplicated {
            body: body.clone(),
            what: what.clone(),
        });
    }
    for (broker, what) in &h.store_problems {
        report.violations.push(Violation::StoreInconsistent {
            broker: broker.clone(),
            what: what.clone(),
        });
    }
    for (node, at) in &h.busy_timers {
        report.violations.push(Violation::BusyTimer {
            node: *node,
            at: *at,
        });
    }
    report
        .violations
        .retain(|v| cfg.invariants.iter().any(|i| i == v.invariant()));
    report
}

/// Orderly consumption is FIFO per queue: the group consumes a queue's message at offset `o`
/// only once the one at `o - 1` has been consumed. Consuming again from an earlier offset
/// (after a rebalance) is allowed; that is at-least-once, not disorder.
fn check_fifo(h: &History, report: &mut CheckReport) {
    let mut consumed: BTreeMap<(&str, &str, u32), BTreeSet<u64>> = BTreeMap::new();
    for d in h
        .delivered
        .iter()
        .filter(|d| d.group == Group::Clustering && d.consumed)
    {
        let queue = consumed.entry((&d.broker, &d.topic, d.queue)).or_default();
        if d.offset > 0 && !queue.contains(&(d.offset - 1)) {
            report.violations.push(Violation::OutOfOrder {
                body: d.body.clone(),
                broker: d.broker.clone(),
                topic: d.topic.clone(),
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
    for view in &h.routes {
        let mut hosting = h.hosting.get(&view.topic).cloned().unwrap_or_default();
        hosting.sort();
        if view.brokers != hosting {
            report.violations.push(Violation::RoutesDiverged {
                node: view.node,
                topic: view.topic.clone(),
                saw: view.brokers.clone(),
                hosting,
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

/// Whether `broker` lost power in `[from, to]`: after something it did at `from` (a broker
/// may die at a disk operation in the very millisecond it handed something out; its next
/// process starts no sooner than half a second later).
fn power_lost_since(h: &History, broker: &str, from: u64, to: u64) -> bool {
    h.crash_log
        .iter()
        .any(|c| c.power && c.broker == broker && c.at >= from && c.at <= to)
}

/// A delivered message (to any group, the pop group included) must still be stored at its
/// queue offset at the end: under SYNC_FLUSH
/// a consumer is only served what is durable; under ASYNC_FLUSH only a power loss after the
/// delivery may take it (a process crash keeps the page cache). Judged against the final
/// stores of the brokers running at the end.
fn check_vanished(cfg: &SimConfig, h: &History, report: &mut CheckReport) {
    let mut judged = BTreeSet::new();
    for d in served(h) {
        if !h.stored_brokers.contains(d.broker) || !h.stored_topics.contains(d.topic) {
            continue;
        }
        let slot = (d.broker.to_string(), d.topic.to_string(), d.queue, d.offset);
        let now = h.stored.get(&slot);
        if now.map(String::as_str) == Some(d.body) || !judged.insert(slot) {
            continue;
        }
        // It was served some time after it was sent and arrived by `d.at` (a response in
        // flight outlives the broker), so any power loss after the send may have taken it.
        let stored_from = h.sent_at.get(d.body).copied().unwrap_or(0);
        if cfg.flush == FlushDiskType::Async && power_lost(h, d.broker, stored_from, u64::MAX) {
            continue;
        }
        report.violations.push(Violation::Vanished {
            body: d.body.to_string(),
            broker: d.broker.to_string(),
            queue: d.queue,
            offset: d.offset,
            now: now.cloned(),
        });
    }
}

/// A message a consumer was served from a slot: by the push groups or the pop group.
struct Served<'a> {
    at: u64,
    broker: &'a str,
    topic: &'a str,
    queue: u32,
    offset: u64,
    body: &'a str,
}

/// Every slot served to a consumer, of every group (the pop group's: the slot its receipt
/// names, a pop retry topic's for a message back again), in time order.
fn served(h: &History) -> Vec<Served<'_>> {
    let mut all: Vec<Served> = h
        .delivered
        .iter()
        .map(|d| Served {
            at: d.at,
            broker: &d.broker,
            topic: &d.topic,
            queue: d.queue,
            offset: d.offset,
            body: &d.body,
        })
        .chain(h.pop_delivered.iter().map(|d| Served {
            at: d.at,
            broker: &d.broker,
            topic: &d.topic,
            queue: d.queue,
            offset: d.offset,
            body: &d.body,
        }))
        .collect();
    all.sort_by_key(|d| d.at);
    all
}

/// One (broker, topic, queue, offset) is one message for the whole run: a consumer that saw
/// one message there must never be served another (RocketMQ #8239). ASYNC_FLUSH may reuse an
/// offset only after a power loss of that broker between the two deliveries.
fn check_offset_reuse(cfg: &SimConfig, h: &History, report: &mut CheckReport) {
    let mut first: BTreeMap<(&str, &str, u32, u64), &str> = BTreeMap::new();
    for d in served(h) {
        let key = (d.broker, d.topic, d.queue, d.offset);
        let Some(body) = first.get(&key).copied() else {
            first.insert(key, d.body);
            continue;
        };
        if body == d.body {
            continue;
        }
        // The first message was stored after it was sent; the second served by `d.at`.
        let stored_from = h.sent_at.get(body).copied().unwrap_or(0);
        let allowed =
            cfg.flush == FlushDiskType::Async && power_lost(h, d.broker, stored_from, d.at);
        if !allowed {
            report.violations.push(Violation::OffsetReused {
                broker: d.broker.to_string(),
                topic: d.topic.to_string(),
                queue: d.queue,
                offset: d.offset,
                first: body.to_string(),
                second: d.body.to_string(),
            });
        }
        // The slot's message from now on is the later one.
        first.insert(key, d.body);
    }
}

/// A SEND_OK names the slot its message is in: at the end that slot must hold it, unless the
/// flush promise let a power loss of that broker take it (ASYNC_FLUSH, after the send).
fn check_acked_at(cfg: &SimConfig, h: &History, report: &mut CheckReport) {
    for (body, (broker, topic, queue, offset)) in &h.acked_at {
        if !h.stored_brokers.contains(broker) || !h.stored_topics.contains(topic) {
            continue;
        }
        let slot = (broker.clone(), topic.clone(), *queue, *offset);
        let now = h.stored.get(&slot);
        if now == Some(body) {
            continue;
        }
        let sent = h.sent_at.get(body).copied().unwrap_or(0);
        if cfg.flush == FlushDiskType::Async && power_lost(h, broker, sent, u64::MAX) {
            continue;
        }
        report.violations.push(Violation::AckedMisplaced {
            body: body.clone(),
            broker: broker.clone(),
            topic: topic.clone(),
            queue: *queue,
            offset: *offset,
            now: now.cloned(),
        });
    }
}

/// (broker, topic, queue id).
type QueueKey<'a> = (&'a str, &'a str, u32);

/// Orderly consumption is exclusive: while one consumer's application holds messages of a
/// queue, no other consumer of the group may be handed any of that queue.
fn check_exclusive(h: &History, report: &mut CheckReport) {
    let mut by_queue: BTreeMap<(&str, &str, u32), Vec<&crate::world::Processing>> = BTreeMap::new();
    for p in &h.processing {
        by_queue
            .entry((&p.broker, &p.topic, p.queue))
            .or_default()
            .push(p);
    }
    for ((broker, topic, queue), mut spans) in by_queue {
        spans.sort_by_key(|p| (p.from, p.to, p.consumer));
        // Per consumer, the latest stretch seen so far.
        let mut open: BTreeMap<usize, (u64, u64)> = BTreeMap::new();
        for p in spans {
            let clash = open
                .iter()
                .find(|(c, (_, to))| **c != p.consumer && *to > p.from)
                .map(|(c, (from, _))| (*c, *from));
            if let Some((first, first_from)) = clash {
                report.violations.push(Violation::OrderlyOverlap {
                    broker: broker.to_string(),
                    topic: topic.to_string(),
                    queue,
                    first,
                    first_from,
                    second: p.consumer,
                    second_from: p.from,
                });
            }
            let e = open.entry(p.consumer).or_insert((p.from, p.to));
            if p.to >= e.1 {
                *e = (p.from, p.to);
            }
        }
    }
}

/// At the end every queue has at most one owner in the clustering group.
fn check_owners(h: &History, report: &mut CheckReport) {
    for ((group, broker, topic, queue), owners) in &h.owners {
        if owners.len() > 1 {
            report.violations.push(Violation::SharedQueue {
                group: *group,
                broker: broker.clone(),
                topic: topic.clone(),
                queue: *queue,
                owners: owners.clone(),
            });
        }
    }
}

/// Messages sent once everything settled: none delivered again after being consumed (by the
/// group, or by any one broadcasting consumer), and each reaches its consumers within
/// [`DELIVERY_BOUND_MS`]. An orderly queue whose application asked to reconsume is suspended
/// for a moment, as order demands: the messages behind it wait that out, unjudged.
fn check_settled(cfg: &SimConfig, h: &History, report: &mut CheckReport) {
    // The orderly group's reconsume answers: (broker, topic, queue) -> (when, offset).
    let mut suspended: BTreeMap<QueueKey, Vec<(u64, u64)>> = BTreeMap::new();
    if cfg.orderly {
        for d in h
            .delivered
            .iter()
            .filter(|d| d.group == Group::Clustering && !d.consumed)
        {
            suspended
                .entry((&d.broker, &d.topic, d.queue))
                .or_default()
                .push((d.at, d.offset));
        }
    }
    let mut consumed = BTreeSet::new();
    let mut first = BTreeSet::new();
    let mut max = None;
    // A delayed message's latency is its delay's (judged by `check_delays`).
    for d in h.delivered.iter().filter(|d| {
        settled(&d.body) && !h.delayed.contains_key(&d.body) && !h.timers.contains_key(&d.body)
    }) {
        let key = (d.receiver(), d.body.as_str());
        if consumed.contains(&key) {
            report.violations.push(Violation::SettledDuplicate {
                body: d.body.clone(),
                consumer: d.consumer,
                at: d.at,
            });
        }
        if d.consumed {
            consumed.insert(key);
        }
        if !first.insert(key) {
            continue;
        }
        let sent_at = h.sent_at.get(&d.body).copied().unwrap_or(d.at);
        let took = d.at.saturating_sub(sent_at);
        let behind_reconsume = d.group == Group::Clustering
            && suspended
                .get(&(d.broker.as_str(), d.topic.as_str(), d.queue))
                .is_some_and(|s| {
                    s.iter()
                        .any(|(at, o)| *o < d.offset && (sent_at..=d.at).contains(at))
                });
        if behind_reconsume {
            continue;
        }
        max = max.max(Some(took));
        if took > DELIVERY_BOUND_MS {
            report.violations.push(Violation::SlowDelivery {
                body: d.body.clone(),
                consumer: d.consumer,
                sent_at,
                took_ms: took,
            });
        }
    }
    report.settled_latency_max_ms = max;
}

/// Every message sent with a delay level, and every message redelivered from a retry topic,
/// went through the schedule topic and was stored in its topic no earlier than its level's
/// delay after it was stored in the schedule topic, by the broker's own clock: judged
/// against the schedule records the broker still holds at the end. A schedule record a power
/// loss may have taken (ASYNC_FLUSH) or one on a broker down at the end is not judged.
fn check_delays(cfg: &SimConfig, h: &History, report: &mut CheckReport) {
    for d in &h.delivered {
        let retry = rockfish_core::protocol::topics::is_retry_topic(&d.topic);
        let delayed_send = d.reconsumed == 0 && h.delayed.contains_key(&d.body);
        let timer = !retry && d.reconsumed == 0 && h.timers.contains_key(&d.body);
        if timer {
            // Its due time travels with it, by the broker's clock that set it.
            let early = match d.timer_due {
                Some(due) => d.stored_ts < due,
                None => true,
            };
            if early || !d.via_schedule {
                report.violations.push(Violation::DelayedEarly {
                    body: d.body.clone(),
                    broker: d.broker.clone(),
                    reconsumed: d.reconsumed,
                    stored_ts: d.stored_ts,
                    due: d.timer_due,
                });
            }
            continue;
        }
        if !retry && !delayed_send {
            continue;
        }
        let early = |due: Option<i64>| Violation::DelayedEarly {
            body: d.body.clone(),
            broker: d.broker.clone(),
            reconsumed: d.reconsumed,
            stored_ts: d.stored_ts,
            due,
        };
        if !d.via_schedule {
            report.violations.push(early(None));
            continue;
        }
        if !h.stored_brokers.contains(&d.broker) || h.lost_brokers.contains(&d.broker) {
            continue;
        }
        let records = h
            .scheduled
            .get(&(d.broker.clone(), d.body.clone()))
            .map(|r| {
                r.iter()
                    .filter(|(_, _, rc)| *rc == d.reconsumed)
                    .map(|(ts, level, _)| {
                        let wait = crate::world::SIM_DELAY_LEVELS_MS
                            .get(*level as usize - 1)
                            .copied()
                            .unwrap_or(0);
                        ts + wait
                    })
                    .collect::<Vec<i64>>()
            })
            .unwrap_or_default();
        match records.iter().min() {
            None => {
                let sent = h.sent_at.get(&d.body).copied().unwrap_or(0);
                if cfg.flush == FlushDiskType::Async && power_lost(h, &d.broker, sent, u64::MAX) {
                    continue;
                }
                report.violations.push(early(None));
            }
            Some(&first_due) => {
                if !records.iter().any(|due| *due <= d.stored_ts) {
                    report.violations.push(early(Some(first_due)));
                }
            }
        }
    }
}

/// Dead letters are exact: each one in a DLQ was reconsumed exactly maxReconsumeTimes times
/// first, and every owed message the group fails every time (poison) ends in a dead-letter
/// queue, having been delivered once for each reconsumption count on the way.
fn check_dead_letters(cfg: &SimConfig, h: &History, report: &mut CheckReport) {
    let max = match cfg.max_reconsume_times {
        -1 => rockfish_core::consumer::DEFAULT_MAX_RECONSUME_TIMES,
        m => m,
    };
    let mut dead = BTreeSet::new();
    for (_, _, body, reconsumed) in &h.dead_letters {
        dead.insert(body.as_str());
        if *reconsumed != max + 1 {
            report.violations.push(Violation::DeadLetterWrong {
                body: body.clone(),
                what: format!(
                    "a dead letter after {} reconsumptions; the max is {max}",
                    reconsumed - 1
                ),
            });
        }
    }
    // A copy reconsumed more than the max is a dead letter: the group never sees it (a
    // broker that kept retrying would hand it over).
    for d in h
        .delivered
        .iter()
        .filter(|d| d.group == Group::Clustering && d.reconsumed > max)
    {
        report.violations.push(Violation::DeadLetterWrong {
            body: d.body.clone(),
            what: format!(
                "delivered to the group after {} reconsumptions; the max is {max}",
                d.reconsumed
            ),
        });
    }
    if cfg.consumers == 0 {
        return;
    }
    let promised = cfg.flush == FlushDiskType::Sync || h.power_losses == 0;
    for body in &h.poison {
        let acked = h.sent.get(body) == Some(&Some(SendStatus::SendOk));
        let lost_with_broker = h
            .acked_at
            .get(body)
            .is_some_and(|(broker, ..)| h.lost_brokers.contains(broker))
            || !h.lost_brokers.is_empty();
        if !acked || lost_with_broker || !(promised || after_heal(body)) {
            continue;
        }
        if !dead.contains(body.as_str()) {
            report.violations.push(Violation::DeadLetterWrong {
                body: body.clone(),
                what: "failed every time, yet in no dead-letter queue at the end".into(),
            });
            continue;
        }
        let seen: BTreeSet<i32> = h
            .delivered
            .iter()
            .filter(|d| d.group == Group::Clustering && d.body == *body)
            .map(|d| d.reconsumed)
            .collect();
        if let Some(missing) = (0..=max).find(|k| !seen.contains(k)) {
            report.violations.push(Violation::DeadLetterWrong {
                body: body.clone(),
                what: format!("dead, but never delivered after {missing} reconsumptions"),
            });
        }
    }
}

/// Whether a transaction's outcome is commit: the application's local transaction ran (its
/// half came back SEND_OK) and committed.
fn committed(h: &History, body: &str) -> bool {
    h.transactions.get(body).is_some_and(|p| p.commit) && h.tx_ran.contains(body)
}

/// Transactions, judged on what the brokers store at the end: a committed copy only of a
/// committed transaction, at most one per first half (a check's answer racing a late end
/// must not store it twice), none delivered when rolled back, and every first half of a
/// committed transaction committed once the check-backs had time (`TX_RESOLVE_BOUND_MS`
/// after it was stored and after the heal).
fn check_transactions(cfg: &SimConfig, h: &History, report: &mut CheckReport) {
    if h.transactions.is_empty() {
        return;
    }
    let mut wrong = |body: &str, what: String| {
        report.violations.push(Violation::TransactionWrong {
            body: body.to_string(),
            what,
        })
    };
    let mut from_half: BTreeSet<(&str, u64)> = BTreeSet::new();
    for (broker, body, origin) in &h.tx_commits {
        if !committed(h, body) {
            wrong(
                body,
                format!("committed on {broker} though its transaction rolled back"),
            );
        }
        if let Some(o) = origin
            && !from_half.insert((broker, *o))
        {
            wrong(
                body,
                format!("committed twice on {broker} from the half at {o}"),
            );
        }
    }
    let mut reported = BTreeSet::new();
    for d in &h.delivered {
        if h.transactions.contains_key(&d.body)
            && !committed(h, &d.body)
            && reported.insert(d.body.as_str())
        {
            wrong(
                &d.body,
                format!("delivered to consumer {} though rolled back", d.consumer),
            );
        }
    }
    let bound = crate::world::TX_RESOLVE_BOUND_MS + cfg.faults.clock_step_ms.1;
    if cfg.liveness_ms < bound {
        return;
    }
    for half in &h.tx_halves {
        let old = half.broker_now as i64 - half.stored_ts >= bound as i64;
        if old
            && committed(h, &half.body)
            && !from_half.contains(&(half.broker.as_str(), half.queue_offset))
        {
            wrong(
                &half.body,
                format!(
                    "its half at {} on {} was never committed",
                    half.queue_offset, half.broker
                ),
            );
        }
    }
}

/// (broker, topic, queue, offset, checkpoint start, pop time): one hand-out of one message.
type HandoutKey<'a> = (&'a str, &'a str, u32, u64, u64, i64);

/// What comes back to the pop group, judged against what the brokers handed out (their
/// journaled checkpoints, `History::pop_handouts`) and what the group acked:
///
/// - a slot handed out is never handed out again once acked (`pop-acked-not-resurrected`),
///   nor before its invisible time passed (`pop-not-back-early`); both only across a power
///   loss of its broker since (one that lost the checkpoint, under either flush mode: a pop
///   is answered before its checkpoint is durable; or, under ASYNC_FLUSH, the ack);
/// - a copy reconsumed k + 1 times is a revive of a hand-out of that message reconsumed k
///   times on the same broker: one not acked (else `pop-acked-not-resurrected`, unless
///   ASYNC_FLUSH and a power loss since the first such hand-out), whose invisible time had
///   passed by the broker's clock (else `pop-not-back-early`). Changes of invisibility only
///   lengthen it (the application asks for two or three times as long), so the time a
///   message was handed out under is the earliest it may come back. A broker restarted with
///   its clock stepped forward may revive that much earlier.
///
/// Keyed on slots and hand-outs, not bodies: a revive cut short between its retry copy and
/// its ack record revives again, two copies of one reconsumption, each its own slot.
fn check_pop_returns(cfg: &SimConfig, h: &History, report: &mut CheckReport) {
    // Each hand-out the group acked (the broker answered SUCCESS): when the answer came.
    let mut acked: BTreeMap<HandoutKey, u64> = BTreeMap::new();
    for a in h
        .pop_acks
        .iter()
        .filter(|a| a.outcome == crate::world::PopOutcome::Ok)
    {
        let key = h.pop_delivered[a.delivery].handout_key();
        let at = acked.entry(key).or_insert(a.at);
        *at = (*at).min(a.at);
    }
    let step = cfg.faults.clock_step_ms.1;
    let async_flush = cfg.flush == FlushDiskType::Async;
    // A restart of `broker` in (from, to] may have stepped its clock forward.
    let stepped = |broker: &str, from: u64, to: u64| {
        step > 0
            && h.crash_log
                .iter()
                .any(|c| c.broker == broker && c.at >= from && c.at <= to)
    };
    let mut by_message: BTreeMap<(&str, &str), Vec<&crate::world::PopHandout>> = BTreeMap::new();
    for x in &h.pop_handouts {
        by_message.entry((&x.broker, &x.body)).or_default().push(x);
    }
    for ((broker, body), outs) in by_message {
        for (i, later) in outs.iter().enumerate() {
            let before = &outs[..i];
            // Its very slot, handed out before.
            for first in before.iter().filter(|f| {
                (f.topic.as_str(), f.queue, f.offset)
                    == (later.topic.as_str(), later.queue, later.offset)
            }) {
                if power_lost_since(h, broker, first.at, later.at) {
                    // The checkpoint (and the offset past it) may be gone; under
                    // SYNC_FLUSH an answered ack was durable, and it followed both.
                    if async_flush || !acked.contains_key(&first.key()) {
                        continue;
                    }
                }
                if let Some(&acked_at) = acked.get(&first.key()) {
                    report.violations.push(Violation::PopAckedResurrected {
                        body: body.to_string(),
                        broker: broker.to_string(),
                        topic: first.topic.clone(),
                        queue: first.queue,
                        offset: first.offset,
                        acked_at,
                        again_at: later.at,
                        reconsumed: later.reconsumed,
                    });
                } else if later.at < first.visible_at && !stepped(broker, first.at, later.at) {
                    report.violations.push(Violation::PopBackEarly {
                        body: body.to_string(),
                        broker: broker.to_string(),
                        reconsumed: later.reconsumed,
                        at: later.at,
                        what: format!(
                            "{}/q{}@{} handed out at {} for {} ms, again at {}",
                            first.topic,
                            first.queue,
                            first.offset,
                            first.at,
                            first.invisible_ms,
                            later.at
                        ),
                    });
                }
            }
            if later.reconsumed == 0 {
                continue;
            }
            // A copy: revived from a hand-out one reconsumption earlier.
            let sources: Vec<_> = before
                .iter()
                .filter(|f| f.reconsumed == later.reconsumed - 1)
                .collect();
            let unacked: Vec<_> = sources
                .iter()
                .filter(|f| !acked.contains_key(&f.key()))
                .collect();
            if !sources.is_empty() && unacked.is_empty() {
                let first = sources[0];
                if async_flush && power_lost_since(h, broker, first.at, later.at) {
                    continue;
                }
                report.violations.push(Violation::PopAckedResurrected {
                    body: body.to_string(),
                    broker: broker.to_string(),
                    topic: first.topic.clone(),
                    queue: first.queue,
                    offset: first.offset,
                    acked_at: acked[&first.key()],
                    again_at: later.at,
                    reconsumed: later.reconsumed,
                });
                continue;
            }
            let due = unacked
                .iter()
                .any(|f| f.visible_at <= later.at || stepped(broker, f.at, later.at));
            if !due {
                let what = match unacked.iter().map(|f| f.visible_at).min() {
                    Some(v) => format!(
                        "a copy reconsumed {} times, handed out at {}: the hand-outs it comes \
                         from were invisible until {v} at the earliest",
                        later.reconsumed, later.at
                    ),
                    None => format!(
                        "a copy reconsumed {} times, handed out at {}, with no hand-out \
                         reconsumed {} times before it",
                        later.reconsumed,
                        later.at,
                        later.reconsumed - 1
                    ),
                };
                report.violations.push(Violation::PopBackEarly {
                    body: body.to_string(),
                    broker: broker.to_string(),
                    reconsumed: later.reconsumed,
                    at: later.at,
                    what,
                });
            }
        }
    }
}

/// How long after a pop hand-out's invisibility lapsed its message may take to be handed
/// out again: the revive's store and a pop to find it (a receive waits up to 3 s at another
/// broker first), with room to spare.
pub const POP_RETURN_BOUND_MS: u64 = 5_000;

/// At the end, every message the flush promise covers (the criteria of
/// `acked-durable-not-lost`; after the heal, every acknowledged one) was acked by the pop
/// group at least once, or is stored in `%DLQ%SimPop` (a poison message, which the group
/// never acks, must be), or is still legitimately in flight: its latest hand-out invisible
/// (as long as the changes of invisibility asked) until less than [`POP_RETURN_BOUND_MS`]
/// before the end. Acked: the broker answered an ack SUCCESS, or journaled one whose answer
/// never reached the consumer (timed out, the connection lost, the consumer killed first),
/// as its pop journal recorded when written.
fn check_pop_consumed(cfg: &SimConfig, h: &History, report: &mut CheckReport) {
    use crate::world::PopOutcome;
    let end = cfg.safety_ms + cfg.liveness_ms;
    // body -> its latest hand-out, and how long the group's changes kept it invisible.
    let mut latest: BTreeMap<&str, &crate::world::PopHandout> = BTreeMap::new();
    for x in &h.pop_handouts {
        let e = latest.entry(x.body.as_str()).or_insert(x);
        if x.at >= e.at {
            *e = x;
        }
    }
    let mut changed_until: BTreeMap<HandoutKey, u64> = BTreeMap::new();
    for c in h
        .pop_changes
        .iter()
        .filter(|c| c.outcome != PopOutcome::Refused)
    {
        let key = h.pop_delivered[c.delivery].handout_key();
        let until = changed_until.entry(key).or_default();
        *until = (*until).max(c.at + c.invisible_ms);
    }
    let in_flight = |body: &str| {
        latest.get(body).is_some_and(|x| {
            let until = changed_until
                .get(&x.key())
                .copied()
                .unwrap_or(0)
                .max(x.visible_at);
            until + POP_RETURN_BOUND_MS > end
        })
    };
    let acked: BTreeSet<&str> = h
        .pop_acks
        .iter()
        .filter(|a| a.outcome == PopOutcome::Ok)
        .map(|a| h.pop_delivered[a.delivery].body.as_str())
        .chain(
            h.pop_journaled_acks
                .iter()
                .map(|(_, _, body)| body.as_str()),
        )
        .collect();
    let dead: BTreeSet<&str> = h
        .pop_dead_letters
        .iter()
        .map(|(_, body, _)| body.as_str())
        .collect();
    let promised = cfg.flush == FlushDiskType::Sync || h.power_losses == 0;
    let kept: BTreeSet<&str> = h.stored.values().map(String::as_str).collect();
    for (body, status) in &h.sent {
        if h.transactions.contains_key(body) && !committed(h, body) {
            continue;
        }
        let lost_with_broker = h
            .acked_at
            .get(body)
            .is_some_and(|(broker, ..)| h.lost_brokers.contains(broker));
        if lost_with_broker {
            continue;
        }
        let acked_send = *status == Some(SendStatus::SendOk);
        let kept_here = kept.contains(body.as_str());
        let owed = (acked_send && (promised || kept_here || after_heal(body)))
            || (h.oneway.contains(body) && after_heal(body) && kept_here);
        if !owed {
            continue;
        }
        if in_flight(body) {
            continue;
        }
        if h.poison.contains(body) {
            if !dead.contains(body.as_str()) {
                report.violations.push(Violation::PopLost {
                    body: body.clone(),
                    what: format!(
                        "never acked by {}, yet not in its DLQ at the end",
                        crate::world::POP_GROUP
                    ),
                });
            }
        } else if !acked.contains(body.as_str()) && !dead.contains(body.as_str()) {
            let handed = h.pop_handouts.iter().filter(|x| x.body == *body).count();
            report.violations.push(Violation::PopLost {
                body: body.clone(),
                what: format!(
                    "never acked by {} (handed out {handed} times), nor in its DLQ at the end",
                    crate::world::POP_GROUP
                ),
            });
        }
    }
}

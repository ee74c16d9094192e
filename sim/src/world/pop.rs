//! The pop group ("SimPop"): simple consumers and their application, and what the brokers
//! hand out to it, read from their pop journals as they write them.
//!
//! Each pop consumer keeps one receive outstanding per topic (asking again as soon as one is
//! answered, a moment later when one fails). For each message it receives the application
//! (seeded, `Stream::PopApp`) acks it after a few ms, leaves it un-acked (it must come back
//! once its invisible time lapses), or makes it invisible for longer and then acks it in that
//! time (or now and then not at all). Poison messages are never acked: they must end in
//! `%DLQ%SimPop` once handed out `pop_retry_max` times after the first.
//!
//! The brokers' side is read from their own records: every checkpoint a broker journals
//! (`rmq_sys_ROCKFISH_POP_JOURNAL`) is a hand-out of its messages, whether or not the answer
//! ever reached a consumer (dropped, the consumer killed, the broker dead before it answered).
//! The checkers judge what comes back against those hand-outs.

use super::*;
use rockfish_core::broker::pop::POP_JOURNAL_TOPIC;
use rockfish_core::broker::pop::table::Entry;
use rockfish_core::broker::pop::wire::Receipt;
use rockfish_core::consumer::{ReceiptHandle, SimpleConsumerConfig, SimpleEvent};
use rockfish_store::config::{SubscriptionGroupConfig, SubscriptionGroupTable};

use super::record::body_name;

/// The pop group's name (its retry topics are `%RETRY%SimPop_<topic>`, its dead letters go
/// to `%DLQ%SimPop`).
pub const POP_GROUP: &str = "SimPop";
/// Each pop consumer process draws its invisible time in this range, ms.
const POP_INVISIBLE_MS: (u64, u64) = (3_000, 5_000);
/// How long a receive that finds nothing waits at the broker (long polling), ms.
const POP_AWAIT_MS: u64 = 3_000;
/// Messages one receive asks for.
const POP_MAX_MESSAGES: u32 = 8;
/// After a failed receive, the application asks again this much later, ms.
const POP_RETRY_MS: u64 = 300;
/// A change of invisibility asks for this many times the invisible time (only ever longer:
/// the checkers judge a message's return against the invisible time it was received under).
const POP_CHANGE_FACTOR: (u64, u64) = (2, 3);
/// Chance the application acks a message whose invisibility it changed (else it leaves it).
const POP_ACK_AFTER_CHANGE: f64 = 0.8;
/// An ack that heard nothing back (timed out, connection lost) is sent again this much
/// later, up to `POP_ACK_RETRIES` times: as applications do, and so the checkers know more
/// often whether it was taken.
const POP_ACK_RETRY_MS: u64 = 1_000;
const POP_ACK_RETRIES: u32 = 3;

/// What a pop consumer's application does with a message, once it has worked on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum PopAction {
    Ack,
    /// Make it invisible for `ms` from now; then ack it (within that time) if `then_ack`.
    Change {
        ms: u64,
        then_ack: bool,
    },
}

/// A pop consumer's application: what it asked its simple consumer and awaits.
#[derive(Debug, Default)]
pub(super) struct PopApp {
    /// Receive id -> the topic's index in `TOPICS`.
    receives: BTreeMap<u64, usize>,
    /// Ack id -> the delivery it acks.
    acks: BTreeMap<u64, usize>,
    /// Change id -> (delivery, the invisible time asked, ack it after).
    changes: BTreeMap<u64, (usize, u64, bool)>,
    /// Delivery -> the handle the application will ack or change it with.
    handles: BTreeMap<usize, ReceiptHandle>,
    /// Delivery -> acks of it sent again after no answer.
    ack_retries: BTreeMap<usize, u32>,
}

/// One message a pop consumer received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PopDelivery {
    /// Simulated time it reached the application, ms.
    pub at: u64,
    pub consumer: usize,
    pub body: String,
    pub broker: String,
    /// The topic of its slot: the message's, or the group's pop retry topic for a message
    /// handed out again.
    pub topic: String,
    pub queue: u32,
    pub offset: u64,
    /// Its record's reconsumeTimes: how many times it came back before.
    pub reconsumed: i32,
    /// The invisible time it was received under, ms.
    pub invisible_ms: u64,
    /// The checkpoint it was handed out under (its receipt's ckQueueOffset and popTime).
    pub ck_start: u64,
    pub pop_time: i64,
}

impl PopDelivery {
    /// The hand-out it came from: (broker, topic, queue, offset, ck start, pop time).
    pub fn handout_key(&self) -> (&str, &str, u32, u64, u64, i64) {
        (
            &self.broker,
            &self.topic,
            self.queue,
            self.offset,
            self.ck_start,
            self.pop_time,
        )
    }
}

/// How a pop consumer's request was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PopOutcome {
    /// SUCCESS.
    Ok,
    /// The broker refused (e.g. NO_MESSAGE: acked already, or revived).
    Refused,
    /// No answer came (timed out, or the connection was lost): the broker may or may not
    /// have done it.
    Unknown,
}

/// An answer to an ack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PopAck {
    pub at: u64,
    /// The delivery acked (its index in `History::pop_delivered`).
    pub delivery: usize,
    pub slot: StoreSlot,
    pub outcome: PopOutcome,
}

/// An answer to a change of invisibility.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PopChange {
    pub at: u64,
    pub delivery: usize,
    pub slot: StoreSlot,
    /// The invisible time asked for, from the change on.
    pub invisible_ms: u64,
    pub outcome: PopOutcome,
}

/// A message a broker handed out to the pop group: one offset of a checkpoint it journaled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PopHandout {
    /// Simulated time the checkpoint was written (when the broker handed the message out).
    pub at: u64,
    pub broker: String,
    pub topic: String,
    pub queue: u32,
    pub offset: u64,
    pub ck_start: u64,
    pub pop_time: i64,
    pub body: String,
    pub reconsumed: i32,
    /// The invisible time the pop asked for, ms.
    pub invisible_ms: u64,
    /// The simulated time the broker's clock reads `invisible_ms` past the hand-out: the
    /// earliest the message may come back.
    pub visible_at: u64,
    /// Read from the journal only when the broker started again (it was written in the
    /// step its process died in): `at` is the time it died.
    pub recovered: bool,
}

impl PopHandout {
    pub fn key(&self) -> (&str, &str, u32, u64, u64, i64) {
        (
            &self.broker,
            &self.topic,
            self.queue,
            self.offset,
            self.ck_start,
            self.pop_time,
        )
    }
}

/// A pop consumer's configuration (`seed` draws its invisible time too).
pub(super) fn pop_config(cfg: &SimConfig, i: usize, seed: u64) -> SimpleConsumerConfig {
    let (lo, hi) = POP_INVISIBLE_MS;
    SimpleConsumerConfig {
        group: POP_GROUP.into(),
        client_id: format!("s{i}"),
        namesrv_addrs: (0..cfg.name_servers.max(1)).map(ns_addr).collect(),
        subscriptions: TOPICS
            .iter()
            .map(|t| (t.to_string(), "*".to_string()))
            .collect(),
        invisible_ms: lo + seed % (hi - lo + 1),
        await_ms: POP_AWAIT_MS,
        max_messages: POP_MAX_MESSAGES,
        consume_from_first: true,
        route_refresh_ms: client_route_refresh_ms(cfg),
        seed,
        ..SimpleConsumerConfig::default()
    }
}

impl Sim {
    /// The operator created the pop group before the run (with its retryMaxTimes), and the
    /// pop consumers already running start receiving.
    pub(super) fn setup_pop_group(&mut self) {
        let mut table = SubscriptionGroupTable::default();
        let mut group = SubscriptionGroupConfig::new(POP_GROUP);
        group.retry_max_times = self.cfg.pop_retry_max;
        table
            .subscription_group_table
            .insert(POP_GROUP.to_string(), group);
        for b in self.broker_nodes() {
            if let Node::Broker { disk, .. } = &mut self.fabric.nodes[b] {
                config::save(disk, config::SUBSCRIPTION_GROUPS_FILE, &table)
                    .expect("a fresh MemDisk takes a small file");
            }
        }
        for c in self.history.pop_consumers.clone() {
            if !self.left.contains(&c) {
                self.start_pop_app(c);
            }
        }
    }

    /// A pop consumer process (re)started: a fresh application, one receive per topic.
    pub(super) fn start_pop_app(&mut self, consumer: usize) {
        self.pop_apps.insert(consumer, PopApp::default());
        let epoch = self.epochs[consumer];
        for topic in 0..TOPICS.len() {
            self.push(
                self.now,
                Ev::PopReceive {
                    consumer,
                    epoch,
                    topic,
                },
            );
        }
    }

    /// A pop consumer process starts again (its predecessor's state is gone).
    pub(super) fn restart_pop_consumer(&mut self, consumer: usize) {
        let i = consumer - self.first_client() - self.cfg.producers;
        let seed = self.stream(Stream::Churn).random();
        let pc = pop_config(&self.cfg, i, seed);
        let now = self.local(consumer);
        self.fabric.nodes[consumer] = Node::Simple(SimpleConsumer::new(pc, now));
        self.start_pop_app(consumer);
        self.after(consumer);
    }

    /// A pop consumer's process stopped (killed, or it left; or the run ended): the acks it
    /// sent and heard nothing back of may or may not have been taken.
    pub(super) fn pop_app_stopped(&mut self, consumer: usize) {
        let Some(app) = self.pop_apps.remove(&consumer) else {
            return;
        };
        for delivery in app.acks.into_values() {
            let d = &self.history.pop_delivered[delivery];
            let slot = (d.broker.clone(), d.topic.clone(), d.queue, d.offset);
            self.history.pop_acks.push(PopAck {
                at: self.now,
                delivery,
                slot,
                outcome: PopOutcome::Unknown,
            });
        }
    }

    /// Whether an event scheduled for a pop consumer's process `epoch` still concerns it.
    fn pop_live(&self, consumer: usize, epoch: u32) -> bool {
        !self.left.contains(&consumer) && self.epochs[consumer] == epoch
    }

    pub(super) fn pop_receive(&mut self, consumer: usize, epoch: u32, topic: usize) {
        if !self.pop_live(consumer, epoch) {
            return;
        }
        let now = self.local(consumer);
        let Node::Simple(c) = &mut self.fabric.nodes[consumer] else {
            return;
        };
        let id = c.receive(TOPICS[topic], now);
        if let Some(app) = self.pop_apps.get_mut(&consumer) {
            app.receives.insert(id, topic);
        }
        self.after(consumer);
    }

    pub(super) fn pop_answer(
        &mut self,
        consumer: usize,
        epoch: u32,
        delivery: usize,
        action: PopAction,
    ) {
        if !self.pop_live(consumer, epoch) {
            return;
        }
        let now = self.local(consumer);
        let Some(app) = self.pop_apps.get_mut(&consumer) else {
            return;
        };
        let Some(handle) = app.handles.get(&delivery).cloned() else {
            return;
        };
        let Node::Simple(c) = &mut self.fabric.nodes[consumer] else {
            return;
        };
        match action {
            PopAction::Ack => {
                let id = c.ack(&handle, now);
                app.acks.insert(id, delivery);
            }
            PopAction::Change { ms, then_ack } => {
                let id = c.change_invisible(&handle, ms, now);
                app.changes.insert(id, (delivery, ms, then_ack));
            }
        }
        self.after(consumer);
    }

    /// What a pop consumer told its application.
    pub(super) fn on_pop_events(&mut self, node: usize, events: Vec<SimpleEvent>) {
        let epoch = self.epochs[node];
        for e in events {
            match e {
                SimpleEvent::Received { id, msgs } => {
                    let topic = self
                        .pop_apps
                        .get_mut(&node)
                        .and_then(|a| a.receives.remove(&id));
                    if let Some(topic) = topic {
                        self.push(
                            self.now,
                            Ev::PopReceive {
                                consumer: node,
                                epoch,
                                topic,
                            },
                        );
                    }
                    for r in msgs {
                        self.pop_received(node, epoch, r);
                    }
                }
                SimpleEvent::ReceiveFailed { id, error } => {
                    let topic = self
                        .pop_apps
                        .get_mut(&node)
                        .and_then(|a| a.receives.remove(&id));
                    let line = format!("t={} pop receive failed s{node}: {error}", self.now);
                    self.log(line);
                    if let Some(topic) = topic {
                        self.push(
                            self.now + POP_RETRY_MS,
                            Ev::PopReceive {
                                consumer: node,
                                epoch,
                                topic,
                            },
                        );
                    }
                }
                SimpleEvent::Acked { id, result } => {
                    let Some(app) = self.pop_apps.get_mut(&node) else {
                        continue;
                    };
                    let Some(delivery) = app.acks.remove(&id) else {
                        continue;
                    };
                    let outcome = outcome(&result);
                    let retries = app.ack_retries.entry(delivery).or_default();
                    if outcome == PopOutcome::Unknown && *retries < POP_ACK_RETRIES {
                        *retries += 1;
                        self.push(
                            self.now + POP_ACK_RETRY_MS,
                            Ev::PopAnswer {
                                consumer: node,
                                epoch,
                                delivery,
                                action: PopAction::Ack,
                            },
                        );
                    } else {
                        app.handles.remove(&delivery);
                        app.ack_retries.remove(&delivery);
                    }
                    let d = &self.history.pop_delivered[delivery];
                    let slot = (d.broker.clone(), d.topic.clone(), d.queue, d.offset);
                    let line = format!(
                        "t={} pop ack s{node} {} {}/{}/q{}@{} {outcome:?}{}",
                        self.now,
                        d.body,
                        d.broker,
                        d.topic,
                        d.queue,
                        d.offset,
                        result.err().map(|e| format!(": {e}")).unwrap_or_default()
                    );
                    self.log(line);
                    self.history.pop_acks.push(PopAck {
                        at: self.now,
                        delivery,
                        slot,
                        outcome,
                    });
                }
                SimpleEvent::InvisibilityChanged { id, result } => {
                    let Some(app) = self.pop_apps.get_mut(&node) else {
                        continue;
                    };
                    let Some((delivery, ms, then_ack)) = app.changes.remove(&id) else {
                        continue;
                    };
                    let outcome = outcome(&result.as_ref().map(|_| ()).map_err(Clone::clone));
                    if let Ok(handle) = &result {
                        app.handles.insert(delivery, handle.clone());
                    }
                    let d = &self.history.pop_delivered[delivery];
                    let slot = (d.broker.clone(), d.topic.clone(), d.queue, d.offset);
                    let line = format!(
                        "t={} pop change s{node} {} {}/{}/q{}@{} to {ms}ms {outcome:?}",
                        self.now, d.body, d.broker, d.topic, d.queue, d.offset
                    );
                    self.log(line);
                    self.history.pop_changes.push(PopChange {
                        at: self.now,
                        delivery,
                        slot,
                        invisible_ms: ms,
                        outcome,
                    });
                    if then_ack {
                        // Within the new invisible time (with a failed change, the old
                        // handle tries its luck).
                        let wait = self.between(Stream::PopApp, (1, ms / 2));
                        self.push(
                            self.now + wait,
                            Ev::PopAnswer {
                                consumer: node,
                                epoch,
                                delivery,
                                action: PopAction::Ack,
                            },
                        );
                    } else if let Some(app) = self.pop_apps.get_mut(&node) {
                        app.handles.remove(&delivery);
                    }
                }
            }
        }
    }

    /// One message reached a pop consumer's application: recorded, and what the application
    /// does with it decided.
    fn pop_received(&mut self, node: usize, epoch: u32, r: rockfish_core::consumer::Received) {
        let body = body_name(&r.msg.body());
        let h = r.handle;
        let receipt = Receipt::parse(&h.extra_info).ok();
        let (ck_start, pop_time, invisible_ms) = receipt
            .map(|r| (r.ck_offset, r.pop_time, r.invisible_ms.max(0) as u64))
            .unwrap_or_default();
        let reconsumed = r.msg.stored_reconsume_times();
        let delivery = self.history.pop_delivered.len();
        let poison = self.history.poison.contains(&body);
        // The application works on it a few ms, then: poison is never acked (its
        // invisibility may still be changed); the rest is acked, left, or changed first.
        let work = self.between(Stream::PopApp, PROCESSING_MS);
        let left = self.chance(Stream::PopApp, self.cfg.pop_unacked_share);
        let change = self.chance(Stream::PopApp, self.cfg.pop_change_share);
        let factor = self.between(Stream::PopApp, POP_CHANGE_FACTOR);
        let then_ack = self.chance(Stream::PopApp, POP_ACK_AFTER_CHANGE);
        let action = if change {
            Some(PopAction::Change {
                ms: invisible_ms.max(1) * factor,
                then_ack: then_ack && !poison,
            })
        } else if poison || left {
            None
        } else {
            Some(PopAction::Ack)
        };
        let line = format!(
            "t={} deliver s{node} {body} {}/{}/q{}@{} pop k={reconsumed} ck={ck_start}/{pop_time} {}",
            self.now,
            h.broker_name,
            h.topic,
            h.queue_id,
            h.offset,
            match action {
                None => "left".to_string(),
                Some(PopAction::Ack) => "ack".to_string(),
                Some(PopAction::Change { ms, then_ack }) =>
                    format!("change {ms}ms{}", if then_ack { " then ack" } else { "" }),
            }
        );
        self.log(line);
        self.history.pop_delivered.push(PopDelivery {
            at: self.now,
            consumer: node,
            body,
            broker: h.broker_name.clone(),
            topic: h.topic.clone(),
            queue: h.queue_id,
            offset: h.offset,
            reconsumed,
            invisible_ms,
            ck_start,
            pop_time,
        });
        let Some(action) = action else {
            return;
        };
        if let Some(app) = self.pop_apps.get_mut(&node) {
            app.handles.insert(delivery, h);
        }
        self.push(
            self.now + work,
            Ev::PopAnswer {
                consumer: node,
                epoch,
                delivery,
                action,
            },
        );
    }

    /// Reads what broker `node` journaled for pops since the last read: each checkpoint's
    /// messages are hand-outs. `recovered`: the broker just started again, and what it wrote
    /// in the step its process died in (unread then: its disk refused every read) dates
    /// from its death.
    pub(super) fn scan_pop_journal(&mut self, node: usize, recovered: bool) {
        let Node::Broker {
            machine: Some(b), ..
        } = &self.fabric.nodes[node]
        else {
            return;
        };
        let store = b.store();
        let end = store.max_offset(POP_JOURNAL_TOPIC, 0);
        let seen = self.pop_seen.entry(node).or_default();
        if recovered {
            // A power loss may have cut the journal: what is written there from now on is new.
            *seen = (*seen).min(end);
        }
        if !b.role().is_master() {
            *seen = end; // a slave's journal is its master's
            return;
        }
        let from = (*seen).max(store.min_offset(POP_JOURNAL_TOPIC, 0));
        if from >= end {
            return;
        }
        let broker = b.config().broker_name.clone();
        let (at, now_local) = if recovered {
            // The step its running process died in (not a death during a recovery since).
            let died = self.pop_died_at.get(&node).copied().unwrap_or(self.now);
            (died, None)
        } else {
            (self.now, Some(self.local(node)))
        };
        // Ack records written in a timeout are revives; the others took a consumer's ack
        // (and so may those read at a restart, written in the step the process died in: a
        // consumer's ack counted where it might have been a revive errs towards no alarm).
        let revives = self.pop_timeout == Some(node);
        let mut read = Vec::new();
        let mut acks = Vec::new();
        let mut upto = from;
        'journal: for pos in from..end {
            let rec = match store.entry(POP_JOURNAL_TOPIC, 0, pos) {
                Ok(Some(e)) => match store.read(e.offset) {
                    Ok(rec) => rec,
                    Err(_) => break,
                },
                Ok(None) => {
                    upto = pos + 1;
                    continue;
                }
                Err(_) => break,
            };
            let (key, invisible_ms, offsets) = match Entry::decode(&rec.body()) {
                Some(Entry::Ck {
                    key,
                    invisible_ms,
                    offsets,
                    ..
                }) => (key, Some(invisible_ms), offsets),
                Some(Entry::Ack { key, offsets }) if !revives => (key, None, offsets),
                _ => {
                    upto = pos + 1;
                    continue;
                }
            };
            let mut these = Vec::new();
            for o in offsets {
                let msg = match store.entry(&key.topic, key.queue_id, o) {
                    Ok(Some(e)) => match store.read(e.offset) {
                        Ok(m) => m,
                        Err(_) => break 'journal,
                    },
                    Ok(None) => continue,
                    Err(_) => break 'journal,
                };
                these.push((o, body_name(&msg.body()), msg.reconsume_times()));
            }
            match invisible_ms {
                Some(invisible_ms) => read.push((key, invisible_ms, these)),
                None => acks.extend(these.into_iter().map(|(_, body, _)| body)),
            }
            upto = pos + 1;
        }
        self.pop_seen.insert(node, upto);
        for body in acks {
            self.history
                .pop_journaled_acks
                .push((at, broker.clone(), body));
        }
        for (key, invisible_ms, msgs) in read {
            let visible_at = match now_local {
                Some(local) => self.sim_time_of(node, local + invisible_ms),
                // The broker's clock then is not known any more (a restart may have stepped
                // it): its drift bounds it.
                None => {
                    let drift = self.cfg.faults.clock_drift_ppm.1.min(100_000);
                    at + invisible_ms - (invisible_ms * drift).div_ceil(1_000_000)
                }
            };
            for (offset, body, reconsumed) in msgs {
                let line = format!(
                    "t={} pop handout {broker}/{}/q{}@{offset} {body} k={reconsumed} ck={}/{} \
                     visible at {visible_at}{}",
                    self.now,
                    key.topic,
                    key.queue_id,
                    key.start,
                    key.pop_time,
                    if recovered { " (recovered)" } else { "" }
                );
                self.log(line);
                self.history.pop_handouts.push(PopHandout {
                    at,
                    broker: broker.clone(),
                    topic: key.topic.clone(),
                    queue: key.queue_id,
                    offset,
                    ck_start: key.start,
                    pop_time: key.pop_time,
                    body,
                    reconsumed,
                    invisible_ms,
                    visible_at,
                    recovered,
                });
            }
        }
    }
}

/// How a request's result reads: a refusal names the broker's code ("code N: ..."). A
/// SYSTEM_ERROR may come after the ack was journaled (its flush failed or timed out), and
/// anything else (a timeout, a lost connection) tells nothing: the outcome is unknown.
fn outcome(result: &Result<(), String>) -> PopOutcome {
    let code = |e: &str| {
        e.strip_prefix("code ")
            .and_then(|r| r.split(':').next())
            .and_then(|c| c.trim().parse::<i32>().ok())
    };
    match result {
        Ok(()) => PopOutcome::Ok,
        Err(e) => match code(e) {
            Some(c) if c != rockfish_core::remoting::codes::response::SYSTEM_ERROR => {
                PopOutcome::Refused
            }
            _ => PopOutcome::Unknown,
        },
    }
}

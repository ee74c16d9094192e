//! `Consumer`: RocketMQ's push consumer (DefaultMQPushConsumerImpl, RebalanceImpl,
//! ProcessQueue) as a Sans-IO machine.
//!
//! It finds its topics' routes, learns its group's members from a broker, allocates queues with
//! a [`AllocateStrategy`] (clustering) or takes them all (broadcasting), and pulls each of its
//! queues with long polling into a process queue. Messages go to the application as
//! `ConsumerEvent::Deliver`; the application acknowledges each with `ack`. Flow control slows
//! pulls (1000 messages, 100 MiB or a span of 2000 offsets per queue); nothing is dropped.
//! Orderly consumers lock each queue on its broker first (LOCK_BATCH_MQ, renewed every 20 s,
//! trusted for 30 s) and deliver one batch at a time per queue, in order. Offsets are committed
//! every 5 s, on rebalance and on shutdown (to the broker for clustering; kept for the
//! application to store for broadcasting).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rand::Rng;

use crate::broker::{ConsumerData, ConsumerIdList, HeartbeatData, SubscriptionData};
use crate::client::{ClientConfig, ClientInstance};
use crate::machine::Output;
use crate::message::{MessageExt, TagFilter, decode_messages};
use crate::protocol::heartbeat::{ConsumeFromWhere, ConsumeType};
use crate::protocol::{
    LockBatchRequestBody, LockBatchResponseBody, MessageQueue, TopicRouteData, decode_body, to_body,
};
use crate::protocol::{pull_flag, topics};
use crate::rebalance::{AllocateStrategy, Averagely};
use crate::remoting::RemotingCommand;
use crate::remoting::codes::{request, response};

mod assignment;
mod pulling;
pub mod simple;
pub use simple::{ReceiptHandle, Received, SimpleConsumer, SimpleConsumerConfig, SimpleEvent};

const FLOW_CONTROL_DELAY_MS: u64 = 50;
/// A queue whose pull answer held a record that does not decode pulls again after this long.
const UNDECODABLE_DELAY_MS: u64 = 30_000;
const EXCEPTION_DELAY_MS: u64 = 3_000;
const SUSPEND_MS: u64 = 15_000;
const PULL_TIMEOUT_MS: u64 = 30_000;
const RPC_TIMEOUT_MS: u64 = 3_000;
/// A client trusts its queue lock this long after the broker granted it.
pub const LOCK_TRUST_MS: u64 = 30_000;
const LOCK_RENEW_MS: u64 = 20_000;
// Timing rules safety depends on, checked at compile time: a consumer trusts a lock only
// while the broker still holds it for it (trust plus one RPC inside the broker's lease), a
// renewal lands before trust runs out, and a held pull is answered before the client gives up.
const _: () = assert!(LOCK_TRUST_MS + RPC_TIMEOUT_MS < crate::broker::LOCK_LEASE_MS);
const _: () = assert!(LOCK_RENEW_MS + RPC_TIMEOUT_MS < LOCK_TRUST_MS);
// A broker that restarted (its lock table lost) grants nothing until every lock it granted
// before is no longer trusted.
const _: () = assert!(LOCK_TRUST_MS + RPC_TIMEOUT_MS <= crate::broker::LOCK_RESTART_GRACE_MS);
const _: () = assert!(SUSPEND_MS < PULL_TIMEOUT_MS);
/// A broadcasting consumer's reconsume-later comes back after this long (its messages have no
/// retry topic: Java drops them; rockfish retries them locally).
const RECONSUME_DELAY_MS: u64 = 1_000;
/// A message the consumer could not send back is consumed again locally after this long
/// (Java's submitConsumeRequestLater).
pub const LOCAL_RETRY_MS: u64 = 5_000;
/// How long a send-back may take (Java: 5 s).
const SEND_BACK_TIMEOUT_MS: u64 = 5_000;
/// A concurrent consumer's messages go to the dead-letter queue after this many
/// reconsumptions unless configured otherwise (Java's default for maxReconsumeTimes = -1).
pub const DEFAULT_MAX_RECONSUME_TIMES: i32 = 16;

pub use crate::protocol::heartbeat::MessageModel;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumeFrom {
    LastOffset,
    FirstOffset,
    Timestamp(i64),
}

pub struct ConsumerConfig {
    pub group: String,
    pub client_id: String,
    pub namesrv_addrs: Vec<String>,
    /// topic -> tag expression ("*" or "TagA || TagB"), or an SQL92 expression for the
    /// topics in `sql_topics`.
    pub subscriptions: BTreeMap<String, String>,
    /// Topics whose subscription is an SQL92 expression over message properties (the broker
    /// filters; it needs enablePropertyFilter).
    pub sql_topics: std::collections::BTreeSet<String>,
    pub model: MessageModel,
    pub consume_from: ConsumeFrom,
    pub strategy: Box<dyn AllocateStrategy + Send>,
    pub orderly: bool,
    pub pull_batch_size: u32,
    pub pull_threshold_for_queue: usize,
    pub pull_threshold_size_for_queue: usize,
    pub consume_concurrently_max_span: u64,
    pub consume_batch_size: usize,
    pub rebalance_interval_ms: u64,
    pub persist_offset_interval_ms: u64,
    pub heartbeat_ms: u64,
    pub route_refresh_ms: u64,
    /// Reconsumptions before a failing message goes to the group's dead-letter queue; -1 is
    /// Java's default: 16 for concurrent consumers, unlimited for orderly ones (which retry
    /// locally, holding their queue).
    pub max_reconsume_times: i32,
    /// Orderly: how long a queue waits after its listener asked to reconsume
    /// (suspendCurrentQueueTimeMillis; Java clamps it to 10..=30,000 ms).
    pub suspend_current_queue_ms: u64,
    pub seed: u64,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            group: "DEFAULT_CONSUMER".into(),
            client_id: "127.0.0.1@rockfish".into(),
            namesrv_addrs: vec!["127.0.0.1:9876".into()],
            subscriptions: BTreeMap::new(),
            sql_topics: Default::default(),
            model: MessageModel::Clustering,
            consume_from: ConsumeFrom::LastOffset,
            strategy: Box::new(Averagely),
            orderly: false,
            pull_batch_size: 32,
            pull_threshold_for_queue: 1_000,
            pull_threshold_size_for_queue: 100 << 20,
            consume_concurrently_max_span: 2_000,
            consume_batch_size: 1,
            rebalance_interval_ms: 20_000,
            persist_offset_interval_ms: 5_000,
            heartbeat_ms: 30_000,
            route_refresh_ms: 30_000,
            max_reconsume_times: -1,
            suspend_current_queue_ms: 1_000,
            seed: 0,
        }
    }
}

/// What the application is told.
#[derive(Debug, Clone)]
pub enum ConsumerEvent {
    /// Consume these (acknowledge each with `ack`).
    Deliver {
        mq: MessageQueue,
        msgs: Vec<MessageExt>,
    },
    /// The queue set changed.
    Rebalanced { assigned: Vec<MessageQueue> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumeResult {
    Success,
    /// Concurrent: deliver again after a pause. Orderly: suspend the queue a moment and redo.
    ReconsumeLater,
}

#[derive(Debug, Default)]
struct ProcessQueue {
    /// Which incarnation of the queue this is: a queue dropped and assigned again is a new
    /// one, and answers to the old one's pulls must not touch it.
    id: u64,
    /// Next offset to pull; `None` until the starting offset is known.
    next_offset: Option<u64>,
    /// The starting offset could not be asked (no broker of the queue's group in the route:
    /// its master down and no slave listed): asked again at `not_before`.
    offset_unasked: bool,
    /// Pulled, not yet acknowledged.
    msgs: BTreeMap<u64, MessageExt>,
    /// Delivered to the application, not yet acknowledged.
    delivered: BTreeSet<u64>,
    bytes: usize,
    pulling: bool,
    not_before: u64,
    locked_until: u64,
    /// Highest offset acknowledged so far + 1 with nothing pending below: the commit point.
    committed: Option<u64>,
    dirty: bool,
    /// Orderly: the queue is suspended until then after its application asked to reconsume
    /// (SUSPEND_CURRENT_QUEUE_A_MOMENT holds the whole queue, as order demands).
    redeliver_at: u64,
    /// Concurrent: a message asked to be reconsumed waits until then, alone; the messages
    /// behind it keep flowing, as the Java client's local retry does.
    retry_at: BTreeMap<u64, u64>,
    /// Messages being sent back to the broker (CONSUMER_SEND_MSG_BACK in flight): still held
    /// (the commit point cannot pass them) until the broker has the retry.
    sending_back: BTreeSet<u64>,
}

impl ProcessQueue {
    /// RocketMQ's removeMessage result: where consumption is complete up to.
    fn consumed_to(&self) -> Option<u64> {
        match self.msgs.keys().next() {
            Some(first) => Some(*first),
            None => self.next_offset,
        }
    }
    /// When something held back for reconsumption is due again.
    fn next_redelivery(&self) -> Option<u64> {
        let queue = (self.redeliver_at > 0).then_some(self.redeliver_at);
        let first = self.retry_at.values().min().copied();
        queue.into_iter().chain(first).min()
    }

    fn span(&self) -> u64 {
        match (self.msgs.keys().next(), self.msgs.keys().next_back()) {
            (Some(a), Some(b)) => b - a,
            _ => 0,
        }
    }
}

#[derive(Clone)]
enum Rpc {
    Route {
        topic: String,
    },
    ConsumerIds {
        topic: String,
    },
    QueryOffset {
        mq: MessageQueue,
    },
    StartOffset {
        mq: MessageQueue,
    },
    Pull {
        mq: MessageQueue,
        pq: u64,
    },
    Lock {
        broker: String,
    },
    SendBack {
        mq: MessageQueue,
        pq: u64,
        offset: u64,
    },
    Other,
}

pub struct Consumer {
    config: ConsumerConfig,
    filters: BTreeMap<String, TagFilter>,
    client: ClientInstance<Rpc>,
    routes: BTreeMap<String, TopicRouteData>,
    members: BTreeMap<String, Vec<String>>,
    queues: BTreeMap<MessageQueue, ProcessQueue>,
    /// Orderly queues dropped while the application held a batch of them: the offsets it
    /// still holds. Their broker locks are kept until it answers.
    draining: BTreeMap<MessageQueue, BTreeSet<u64>>,
    /// Broadcasting offsets (and the last known clustering ones), for the application to keep.
    offsets: BTreeMap<MessageQueue, u64>,
    next_pq_id: u64,
    next_rebalance: u64,
    next_persist: u64,
    next_lock: u64,
    events: VecDeque<ConsumerEvent>,
    stopped: bool,
}

impl Consumer {
    /// `local_offsets`: broadcasting offsets the application stored last time.
    pub fn new(
        config: ConsumerConfig,
        local_offsets: BTreeMap<MessageQueue, u64>,
        now: u64,
    ) -> Consumer {
        // SQL92 is the broker's to judge: the client passes all it is sent.
        let filters = config
            .subscriptions
            .iter()
            .map(|(t, e)| {
                let local = if config.sql_topics.contains(t) {
                    TagFilter::ALL
                } else {
                    e
                };
                (t.clone(), TagFilter::parse(local))
            })
            .collect();
        let client_config = ClientConfig {
            client_id: config.client_id.clone(),
            namesrv_addrs: config.namesrv_addrs.clone(),
            heartbeat_ms: config.heartbeat_ms,
            route_refresh_ms: config.route_refresh_ms,
            seed: config.seed,
        };
        Consumer {
            filters,
            client: ClientInstance::new(client_config, now, now),
            routes: BTreeMap::new(),
            members: BTreeMap::new(),
            queues: BTreeMap::new(),
            draining: BTreeMap::new(),
            offsets: local_offsets,
            next_pq_id: 0,
            next_rebalance: now,
            next_persist: now + config.persist_offset_interval_ms,
            next_lock: now + LOCK_RENEW_MS,
            events: VecDeque::new(),
            stopped: false,
            config,
        }
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.client.poll_output()
    }
    pub fn poll_event(&mut self) -> Option<ConsumerEvent> {
        self.events.pop_front()
    }
    pub fn poll_timeout(&self) -> Option<u64> {
        let mut t = self
            .next_rebalance
            .min(self.next_persist)
            .min(self.client.next_timeout());
        if self.config.orderly {
            t = t.min(self.next_lock);
        }
        for pq in self.queues.values() {
            if !pq.pulling && (pq.next_offset.is_some() || pq.offset_unasked) && pq.not_before > 0 {
                t = t.min(pq.not_before);
            }
            if let Some(at) = pq.next_redelivery() {
                t = t.min(at);
            }
        }
        Some(t)
    }

    /// The queues this consumer holds now.
    pub fn assigned(&self) -> Vec<MessageQueue> {
        self.queues.keys().cloned().collect()
    }
    /// The topic's route as this consumer knows it.
    pub fn route(&self, topic: &str) -> Option<&TopicRouteData> {
        self.routes.get(topic)
    }

    /// Offsets as consumed so far (broadcasting: store these and pass them to `new`).
    pub fn offsets(&self) -> &BTreeMap<MessageQueue, u64> {
        &self.offsets
    }
    /// Messages held in a queue's process queue (flow control, tests).
    pub fn held(&self, mq: &MessageQueue) -> usize {
        self.queues.get(mq).map_or(0, |pq| pq.msgs.len())
    }
    /// Whether this orderly consumer holds `mq`'s lock at `now`.
    pub fn is_locked(&self, mq: &MessageQueue, now: u64) -> bool {
        self.queues.get(mq).is_some_and(|pq| pq.locked_until > now)
    }

    fn broker_addr(&self, topic: &str, broker: &str) -> Option<String> {
        self.routes
            .get(topic)?
            .broker_datas
            .iter()
            .find(|b| b.broker_name == broker)?
            .read_addr()
            .map(String::from)
    }

    fn any_broker(&mut self, topic: &str) -> Option<String> {
        let route = self.routes.get(topic)?;
        let addrs: Vec<String> = route
            .broker_datas
            .iter()
            .filter_map(|b| b.read_addr().map(String::from))
            .collect();
        if addrs.is_empty() {
            return None;
        }
        Some(addrs[self.client.rng().random_range(0..addrs.len())].clone())
    }

    /// Every readable queue of a topic, sorted (as RebalanceImpl sorts before allocating).
    fn all_queues(&self, topic: &str) -> Vec<MessageQueue> {
        let Some(route) = self.routes.get(topic) else {
            return Vec::new();
        };
        route.readable_queues(topic)
    }

    /// The group's topics: the subscriptions plus, for clustering, the retry topic.
    /// Every broker of every route known, slaves too (heartbeats and unregistration go to
    /// each, as Java's consumers send them: a slave serves the group's pulls while its
    /// master is gone).
    fn all_broker_addrs(&self) -> BTreeSet<String> {
        self.routes
            .values()
            .flat_map(|r| {
                r.broker_datas
                    .iter()
                    .flat_map(|b| b.broker_addrs.values().cloned())
            })
            .collect()
    }

    fn topics(&self) -> Vec<String> {
        let mut t: Vec<String> = self.config.subscriptions.keys().cloned().collect();
        if self.config.model == MessageModel::Clustering {
            t.push(topics::retry_topic(&self.config.group));
        }
        t
    }

    /// A broker told the group its membership changed: rebalance now.
    pub fn on_notify_ids_changed(&mut self, now: u64) {
        self.next_rebalance = now;
    }

    /// Time passed.
    pub fn on_timeout(&mut self, now: u64) {
        if self.stopped {
            return;
        }
        for rpc in self.client.take_expired(now) {
            self.fail(rpc, now);
        }
        if self.client.route_refresh_due(now) {
            for topic in self.topics() {
                let Some(ns) = self.client.pick_namesrv() else {
                    break;
                };
                let rpc = Rpc::Route {
                    topic: topic.clone(),
                };
                self.client
                    .query_route(&topic, ns, rpc, now + RPC_TIMEOUT_MS);
            }
        }
        if self.client.heartbeat_due(now) {
            self.heartbeat(now);
        }
        if now >= self.next_rebalance {
            self.next_rebalance = now + self.config.rebalance_interval_ms;
            self.rebalance(now);
        }
        if self.config.orderly && now >= self.next_lock {
            self.next_lock = now + LOCK_RENEW_MS;
            self.lock_all(now);
        }
        if now >= self.next_persist {
            self.next_persist = now + self.config.persist_offset_interval_ms;
            // A skipped commit round only costs duplicates after a rebalance.
            if !crate::buggify!("consumer.persist.skip") {
                self.persist_offsets();
            }
        }
        let due: Vec<MessageQueue> = self
            .queues
            .iter()
            .filter(|(_, pq)| pq.next_redelivery().is_some_and(|at| at <= now))
            .map(|(m, _)| m.clone())
            .collect();
        for mq in due {
            self.deliver(&mq, now);
        }
        self.pull_due(now);
    }

    /// RocketMQ's expression type of a topic's subscription.
    fn expression_type(&self, topic: &str) -> &'static str {
        if self.config.sql_topics.contains(topic) {
            crate::filter::expression_type::SQL92
        } else {
            crate::filter::expression_type::TAG
        }
    }

    fn heartbeat(&mut self, now: u64) {
        let subscription_data_set = self
            .topics()
            .iter()
            .map(|t| {
                let expr = self
                    .config
                    .subscriptions
                    .get(t)
                    .cloned()
                    .unwrap_or_else(|| "*".into());
                let sql = self.config.sql_topics.contains(t);
                let f = TagFilter::parse(if sql { TagFilter::ALL } else { &expr });
                SubscriptionData {
                    topic: t.clone(),
                    sub_string: expr,
                    tags_set: f.tags,
                    code_set: f.codes,
                    sub_version: now as i64,
                    class_filter_mode: false,
                    expression_type: Some(self.expression_type(t).into()),
                }
            })
            .collect();
        let body = to_body(&HeartbeatData {
            client_id: self.client.client_id().to_string(),
            producer_data_set: Vec::new(),
            consumer_data_set: vec![ConsumerData {
                group_name: self.config.group.clone(),
                consume_type: Some(ConsumeType::ConsumePassively),
                message_model: Some(self.config.model),
                consume_from_where: Some(ConsumeFromWhere::ConsumeFromLastOffset),
                subscription_data_set,
                unit_mode: false,
            }],
        });
        let brokers = self.all_broker_addrs();
        let awaited = Some((Rpc::Other, now + RPC_TIMEOUT_MS));
        self.client.heartbeat(brokers, &body, awaited);
    }

    fn fail(&mut self, rpc: Rpc, now: u64) {
        match rpc {
            Rpc::Pull { mq, pq: id } => {
                if let Some(pq) = self.queues.get_mut(&mq).filter(|pq| pq.id == id) {
                    pq.pulling = false;
                    pq.not_before = now + EXCEPTION_DELAY_MS;
                }
            }
            // The periodic tasks retry these.
            Rpc::QueryOffset { mq } | Rpc::StartOffset { mq } => {
                if self.queues.contains_key(&mq) {
                    self.start_offset(mq, now);
                }
            }
            Rpc::SendBack { mq, pq, offset } => self.send_back_failed(&mq, pq, offset, now),
            Rpc::Route { .. } | Rpc::ConsumerIds { .. } | Rpc::Lock { .. } | Rpc::Other => {}
        }
    }

    /// A command arrived: a response, or a broker's NOTIFY_CONSUMER_IDS_CHANGED.
    pub fn on_command(&mut self, cmd: RemotingCommand, now: u64) {
        if !cmd.is_response() {
            if cmd.code == request::NOTIFY_CONSUMER_IDS_CHANGED {
                self.on_notify_ids_changed(now);
            } else if cmd.code == request::RESET_CONSUMER_CLIENT_OFFSET {
                self.on_reset_offset(&cmd, now);
            }
            return;
        }
        let Some(rpc) = self.client.answered(&cmd) else {
            return;
        };
        if self.stopped {
            return;
        }
        match rpc {
            Rpc::Route { topic } => {
                if cmd.code == response::SUCCESS
                    && let Ok(route) = decode_body::<TopicRouteData>(&cmd.body)
                {
                    // A broker this consumer has not told about itself yet (a first route,
                    // or a broker back in it) hears a heartbeat now: a rebalance anywhere in
                    // the group may ask that broker who the members are, and a member it
                    // does not know of would leave its queues with two owners until the next
                    // heartbeat round (30 s).
                    let before = self.all_broker_addrs();
                    let first = !self.routes.contains_key(&topic);
                    self.routes.insert(topic, route);
                    if first || !self.all_broker_addrs().is_subset(&before) {
                        self.client.heartbeat_at(now);
                        self.next_rebalance = now;
                    }
                }
            }
            Rpc::ConsumerIds { topic } => {
                if cmd.code != response::SUCCESS {
                    return;
                }
                // An undecodable list is not an empty group: allocating over it would drop
                // every queue this consumer holds. Keep them; the next rebalance asks again.
                let mut ids = match decode_body::<ConsumerIdList>(&cmd.body) {
                    Ok(l) => l.consumer_id_list,
                    Err(e) => {
                        tracing::warn!(%topic, error = %e, "undecodable consumer id list; assignment kept");
                        return;
                    }
                };
                ids.sort();
                self.members.insert(topic.clone(), ids.clone());
                let all = self.all_queues(&topic);
                let mine = if crate::buggify::bug("consumer.rebalance-takes-all") {
                    all // a deliberately broken consumer, for the simulator's checkers
                } else {
                    self.config
                        .strategy
                        .allocate(self.client.client_id(), &all, &ids)
                };
                self.assign(&topic, mine, now);
            }
            Rpc::QueryOffset { mq } => {
                let offset = (cmd.code == response::SUCCESS)
                    .then(|| cmd.ext_opt::<i64>("offset").ok().flatten())
                    .flatten();
                match offset {
                    Some(o) if o >= 0 => self.set_start(&mq, o as u64),
                    _ => match self.broker_addr(&mq.topic, &mq.broker_name) {
                        Some(addr) => self.start_from_config(mq, addr, now),
                        None => self.offset_unasked(&mq, now),
                    },
                }
            }
            Rpc::StartOffset { mq } => match cmd.ext_opt::<i64>("offset").ok().flatten() {
                Some(o) if cmd.code == response::SUCCESS => self.set_start(&mq, o.max(0) as u64),
                _ => self.fail(Rpc::StartOffset { mq }, now),
            },
            Rpc::Lock { broker } => {
                // A refused or unreadable answer decides nothing: the leases held run out on
                // their own (Java's lockAll logs the exception and leaves its queues as
                // they are). Read as "nothing granted" it would drop every lock on a
                // broker's hiccup.
                let granted = match decode_body::<LockBatchResponseBody>(&cmd.body) {
                    Ok(body) if cmd.code == response::SUCCESS => body.lock_ok_mq_set,
                    Ok(_) => {
                        tracing::warn!(broker, code = cmd.code, "lock refused");
                        return self.pull_due(now);
                    }
                    Err(e) => {
                        tracing::warn!(broker, error = %e, "unreadable lock answer");
                        return self.pull_due(now);
                    }
                };
                let mut now_locked = Vec::new();
                for (mq, pq) in self
                    .queues
                    .iter_mut()
                    .filter(|(m, _)| m.broker_name == broker)
                {
                    if granted.contains(mq) {
                        if pq.locked_until <= now {
                            now_locked.push(mq.clone());
                        }
                        pq.locked_until = now + LOCK_TRUST_MS;
                    } else {
                        pq.locked_until = 0;
                    }
                }
                // What was pulled before a lock lapsed is consumed once it is held again.
                for mq in now_locked {
                    self.deliver(&mq, now);
                }
            }
            Rpc::Pull { mq, pq } => self.on_pull(mq, pq, cmd, now),
            Rpc::SendBack { mq, pq, offset } => {
                if cmd.code == response::SUCCESS {
                    self.sent_back(&mq, pq, offset, now);
                } else {
                    tracing::warn!(queue = %mq, offset, code = cmd.code, remark = ?cmd.remark, "send-back refused; consumed again locally");
                    self.send_back_failed(&mq, pq, offset, now);
                }
            }
            Rpc::Other => {}
        }
        self.pull_due(now);
    }

    /// The connection to `addr` closed: what was asked of it fails now, as the Java client's
    /// failFast does, rather than at its deadline (a pull's is 30 s: a consumer would sit idle
    /// that long after its broker restarted). Each is retried as a failed call is.
    pub fn on_peer_lost(&mut self, addr: &str, now: u64) {
        for rpc in self.client.take_calls_to(addr) {
            self.fail(rpc, now);
        }
        self.pull_due(now);
    }

    /// Commits every offset, releases orderly locks, leaves the group on every broker
    /// (UNREGISTER_CLIENT, so the others rebalance at once), and stops.
    pub fn shutdown(&mut self, now: u64) {
        // Stopped first: the application is stopped too, so every lock goes now.
        self.stopped = true;
        let queues: Vec<MessageQueue> = self.queues.keys().cloned().collect();
        for mq in queues {
            self.drop_queue(&mq, now);
        }
        let draining: Vec<MessageQueue> = std::mem::take(&mut self.draining).into_keys().collect();
        for mq in draining {
            self.unlock(&mq, now);
        }
        let brokers = self.all_broker_addrs();
        self.client
            .unregister(brokers, None, Some(&self.config.group));
    }
}

impl crate::machine::ClientMachine for Consumer {
    type Event = ConsumerEvent;
    fn on_command(&mut self, cmd: RemotingCommand, now: u64) {
        Consumer::on_command(self, cmd, now)
    }
    fn on_timeout(&mut self, now: u64) {
        Consumer::on_timeout(self, now)
    }
    fn on_peer_lost(&mut self, addr: &str, now: u64) {
        Consumer::on_peer_lost(self, addr, now)
    }
    fn poll_output(&mut self) -> Option<Output> {
        Consumer::poll_output(self)
    }
    fn poll_timeout(&self) -> Option<u64> {
        Consumer::poll_timeout(self)
    }
    fn poll_event(&mut self) -> Option<ConsumerEvent> {
        Consumer::poll_event(self)
    }
}

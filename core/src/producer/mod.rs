//! `Producer`: RocketMQ's producer (DefaultMQProducerImpl) as a Sans-IO machine.
//!
//! Routes come from a name server (picked at random, failing over to the others), refreshed
//! every 30 s and on a miss; a topic without a route is sent through the default topic's
//! route (the broker creates it). Queues are picked round-robin, avoiding the broker that just
//! failed and, with `latency_fault`, brokers inside a latency-fault window. A failed sync or
//! async send is retried on another broker (2 retries by default) within the send timeout;
//! ordered sends pick their queue by key hash and are not moved. Requests go out as
//! `Output::SendTo`; responses come back through `on_command`; results through `poll_event`.

use std::collections::{BTreeMap, HashMap, VecDeque};

use bytes::Bytes;
use rand::Rng;
use rockfish_store::FixedHasher;
use rockfish_store::record::java_string_hash;

use crate::client::{ClientConfig, ClientInstance};
use crate::machine::Output;
use crate::message::{push_batch_item, push_property, uniq_key};
use crate::protocol::{MessageQueue, TopicRouteData, decode_body};
use crate::remoting::RemotingCommand;
use crate::remoting::codes::{request, response};
use rockfish_store::record::{NAME_VALUE_SEPARATOR, PROPERTY_SEPARATOR};

mod api;
mod latency_faults;
mod publish_info;

pub use api::{
    Message, ProducerConfig, ProducerEvent, SendError, SendId, SendMode, SendResult, SendStatus,
    TransactionCheck, TransactionState,
};
use latency_faults::LatencyFaults;
use publish_info::{TopicPublishInfo, publish_info};

/// A failed send counts as this latency (isolation).
const ISOLATION_LATENCY: u64 = 30_000;

struct PendingSend {
    msg: Message,
    mode: SendMode,
    /// For ordered sends: the queue index chosen by key hash.
    selector: Option<i32>,
    uniq: String,
    started: u64,
    attempts: u32,
    last_broker: Option<String>,
    /// For batch sends: every message (all to `msg.topic`), each with its own UNIQ_KEY.
    batch: Vec<(Message, String)>,
    /// A transaction's half (sysFlag TRANSACTION_PREPARED).
    prepared: bool,
}

#[derive(Clone)]
enum Rpc {
    Route {
        topic: String,
        default_for: Option<String>,
        ns: usize,
    },
    Send {
        id: SendId,
        broker: String,
        sent_at: u64,
    },
}

pub struct Producer {
    config: ProducerConfig,
    client: ClientInstance<Rpc>,
    /// Hashed: every send looks its topic up, and at 10,000 topics a sorted map's walk of
    /// string comparisons cost more than the rest of the lookup (std's fixed-key SipHash:
    /// the same in every run).
    routes: HashMap<String, TopicPublishInfo, FixedHasher>,
    /// Sends waiting for their topic's route.
    waiting: BTreeMap<String, Vec<SendId>>,
    sends: BTreeMap<SendId, PendingSend>,
    faults: LatencyFaults,
    next_queue: u32,
    next_id: u64,
    uniq_prefix: u64,
    events: VecDeque<ProducerEvent>,
}

impl Producer {
    pub fn new(config: ProducerConfig, now: u64) -> Producer {
        let client_config = ClientConfig {
            client_id: config.client_id.clone(),
            namesrv_addrs: config.namesrv_addrs.clone(),
            heartbeat_ms: config.heartbeat_ms,
            route_refresh_ms: config.route_refresh_ms,
            seed: config.seed,
        };
        // Routes are asked for per topic on its first send; the refresh comes a period on.
        let mut client = ClientInstance::new(client_config, now + config.route_refresh_ms, now);
        let next_queue = client.rng().random();
        let uniq_prefix = client.rng().random();
        Producer {
            client,
            routes: HashMap::default(),
            waiting: BTreeMap::new(),
            sends: BTreeMap::new(),
            faults: LatencyFaults::default(),
            next_queue,
            next_id: 0,
            uniq_prefix,
            events: VecDeque::new(),
            config,
        }
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.client.poll_output()
    }
    pub fn poll_event(&mut self) -> Option<ProducerEvent> {
        self.events.pop_front()
    }
    pub fn poll_timeout(&self) -> Option<u64> {
        Some(self.client.next_timeout())
    }

    /// Sends `msg`; the result arrives as a `ProducerEvent` (oneway: once written).
    pub fn send(&mut self, msg: Message, mode: SendMode, now: u64) -> SendId {
        self.start(msg, mode, None, now)
    }

    /// An ordered send: the queue is chosen by the hash of `key` (RocketMQ's
    /// SelectMessageQueueByHash), so messages with one key go to one queue, in order.
    pub fn send_ordered(&mut self, msg: Message, key: &str, mode: SendMode, now: u64) -> SendId {
        let h = java_string_hash(key);
        self.start(msg, mode, Some(h), now)
    }

    /// A batch send (SEND_BATCH_MESSAGE): every message to one queue of one topic, stored
    /// contiguously. The result's `msg_id` lists the messages' ids, comma-separated.
    pub fn send_batch(&mut self, msgs: Vec<Message>, mode: SendMode, now: u64) -> SendId {
        let refuse = |this: &mut Self, err: SendError| {
            this.next_id += 1;
            let id = SendId(this.next_id);
            this.events.push_back(ProducerEvent::Sent {
                id,
                result: Err(err),
                attempts: 0,
            });
            id
        };
        let Some(first) = msgs.first().cloned() else {
            return refuse(self, SendError::EmptyBatch);
        };
        if msgs.iter().any(|m| m.topic != first.topic) {
            return refuse(self, SendError::MixedBatch);
        }
        let prefix = self.uniq_prefix ^ 0xB47C;
        let base = (self.next_id + 1) * 10_000;
        let batch: Vec<(Message, String)> = msgs
            .into_iter()
            .enumerate()
            .map(|(i, m)| (m, uniq_key(prefix, base + i as u64)))
            .collect();
        let mut uniq = String::with_capacity(batch.len() * 33);
        for (i, (_, u)) in batch.iter().enumerate() {
            if i > 0 {
                uniq.push(',');
            }
            uniq.push_str(u);
        }
        self.start_with(first, mode, None, batch, Some(uniq), now)
    }

    fn start(&mut self, msg: Message, mode: SendMode, selector: Option<i32>, now: u64) -> SendId {
        self.start_with(msg, mode, selector, Vec::new(), None, now)
    }

    /// Sends a transaction's half message (Java's sendMessageInTransaction, first step): the
    /// broker keeps it from consumers until `end_transaction` (or a check's answer) commits
    /// it. Its result names the half; run the local transaction once it is `SendOk`.
    pub fn send_transactional(&mut self, mut msg: Message, now: u64) -> SendId {
        // As Java: a transaction message is never delayed.
        msg.properties.remove(crate::message::property::DELAY);
        msg.properties.insert(
            crate::broker::transaction::PROPERTY_TRAN_MSG.into(),
            "true".into(),
        );
        msg.properties.insert(
            crate::broker::transaction::PROPERTY_PGROUP.into(),
            self.config.group.clone(),
        );
        let id = self.start(msg, SendMode::Sync, None, now);
        if let Some(s) = self.sends.get_mut(&id) {
            s.prepared = true;
        }
        id
    }

    /// Ends the transaction whose half `half` names (oneway, to the master that stored it).
    /// `Unknown` sends nothing: the broker will check back. False when the broker's address
    /// is not known (the check-back then decides).
    pub fn end_transaction(&mut self, half: &SendResult, state: TransactionState) -> bool {
        if state == TransactionState::Unknown {
            return true;
        }
        let addr = self
            .routes
            .get(&half.queue.topic)
            .and_then(|i| i.brokers.get(&half.queue.broker_name))
            .cloned();
        let phys = crate::message::parse_offset_msg_id(&half.offset_msg_id).map(|(_, o)| o);
        let (Some(addr), Some(phys)) = (addr, phys) else {
            return false;
        };
        self.send_end(addr, half.queue_offset, phys, &half.msg_id, state, false);
        true
    }

    /// Answers a broker's check-back (END_TRANSACTION with fromTransactionCheck, oneway, to
    /// the broker that asked). `Unknown` sends nothing: the broker asks again.
    pub fn answer_check(&mut self, check: &TransactionCheck, state: TransactionState) {
        if state == TransactionState::Unknown {
            return;
        }
        self.send_end(
            check.broker_addr.clone(),
            check.tran_state_table_offset,
            check.commit_log_offset,
            &check.transaction_id,
            state,
            true,
        );
    }

    fn send_end(
        &mut self,
        addr: String,
        table_offset: u64,
        phys: u64,
        transaction_id: &str,
        state: TransactionState,
        from_check: bool,
    ) {
        let opaque = self.client.opaque();
        let mut cmd = RemotingCommand::request(request::END_TRANSACTION, opaque)
            .with_ext("producerGroup", &self.config.group)
            .with_ext("tranStateTableOffset", table_offset)
            .with_ext("commitLogOffset", phys)
            .with_ext("commitOrRollback", state.code())
            .with_ext("fromTransactionCheck", from_check)
            .with_ext("msgId", transaction_id)
            .with_ext("transactionId", transaction_id);
        cmd.flag |= crate::remoting::command::FLAG_ONEWAY;
        self.client.send(addr, cmd);
    }

    /// A request from the broker at `from`: a transaction check-back for this group becomes
    /// a `CheckTransaction` event; anything else is ignored.
    pub fn on_request(&mut self, from: &str, cmd: RemotingCommand, _now: u64) {
        if cmd.code != request::CHECK_TRANSACTION_STATE || cmd.is_response() {
            return;
        }
        let (Ok(Some(table)), Ok(Some(phys))) = (
            cmd.ext_opt::<u64>("tranStateTableOffset"),
            cmd.ext_opt::<u64>("commitLogOffset"),
        ) else {
            tracing::warn!(%from, "a transaction check without its offsets; ignored");
            return;
        };
        let msg = match crate::message::decode_messages(&cmd.body) {
            Ok(mut m) if m.len() == 1 => m.remove(0),
            _ => {
                tracing::warn!(%from, "a transaction check without one readable message; ignored");
                return;
            }
        };
        let group = msg
            .property(crate::broker::transaction::PROPERTY_PGROUP)
            .and_then(|g| std::str::from_utf8(g).ok());
        if group != Some(self.config.group.as_str()) {
            tracing::warn!(%from, ?group, "a transaction check for another group; ignored");
            return;
        }
        let transaction_id = cmd
            .ext("transactionId")
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .or_else(|| {
                msg.property(crate::message::property::UNIQ_KEY)
                    .and_then(|u| std::str::from_utf8(u).ok())
                    .map(str::to_string)
            })
            .unwrap_or_default();
        self.events
            .push_back(ProducerEvent::CheckTransaction(Box::new(
                TransactionCheck {
                    broker_addr: from.to_string(),
                    msg,
                    transaction_id,
                    tran_state_table_offset: table,
                    commit_log_offset: phys,
                },
            )));
    }

    fn start_with(
        &mut self,
        msg: Message,
        mode: SendMode,
        selector: Option<i32>,
        batch: Vec<(Message, String)>,
        uniq: Option<String>,
        now: u64,
    ) -> SendId {
        self.next_id += 1;
        let id = SendId(self.next_id);
        let uniq = uniq.unwrap_or_else(|| uniq_key(self.uniq_prefix, self.next_id));
        let topic = msg.topic.clone();
        self.sends.insert(
            id,
            PendingSend {
                msg,
                mode,
                selector,
                uniq,
                started: now,
                attempts: 0,
                last_broker: None,
                batch,
                prepared: false,
            },
        );
        if self.routes.contains_key(&topic) {
            self.attempt(id, now);
        } else {
            let first = !self.waiting.contains_key(&topic);
            self.waiting.entry(topic.clone()).or_default().push(id);
            if first {
                self.fetch_route(&topic, None, now);
            }
        }
        id
    }

    fn fetch_route(&mut self, topic: &str, default_for: Option<String>, now: u64) {
        if let Some(ns) = self.client.pick_namesrv() {
            self.fetch_route_from(topic, default_for, ns, now);
        }
    }

    fn fetch_route_from(&mut self, topic: &str, default_for: Option<String>, ns: usize, now: u64) {
        let rpc = Rpc::Route {
            topic: topic.to_string(),
            default_for,
            ns,
        };
        let deadline = now + self.config.send_timeout_ms;
        self.client.query_route(topic, ns, rpc, deadline);
    }

    /// RocketMQ's selectOneMessageQueue.
    fn select(
        &mut self,
        topic: &str,
        last: Option<&str>,
        selector: Option<i32>,
        now: u64,
    ) -> Option<(MessageQueue, String)> {
        let info = self.routes.get(topic)?;
        if info.queues.is_empty() {
            return None;
        }
        if let Some(h) = selector {
            return info.by_hash(h);
        }
        let start = self.next_queue;
        self.next_queue = self.next_queue.wrapping_add(1);
        if self.config.latency_fault {
            info.round_robin(start, |b| self.faults.available(b, now))
        } else {
            info.round_robin(start, |b| last != Some(b))
        }
    }

    fn attempt(&mut self, id: SendId, now: u64) {
        let Some(s) = self.sends.get(&id) else { return };
        let (topic, last, selector) = (s.msg.topic.clone(), s.last_broker.clone(), s.selector);
        let Some((mq, addr)) = self.select(&topic, last.as_deref(), selector, now) else {
            return self.finish(id, Err(SendError::NoRoute(topic)));
        };
        let opaque = self.client.opaque();
        let s = self.sends.get_mut(&id).expect("checked");
        s.attempts += 1;
        s.last_broker = Some(mq.broker_name.clone());
        // For a batch this header copy is unused by brokers; the items carry their own.
        let props =
            String::from_utf8(message_properties(&s.msg, &s.uniq)).expect("UTF-8 properties");
        let (code, body) = if s.batch.is_empty() {
            (request::SEND_MESSAGE_V2, s.msg.body.clone())
        } else {
            // One buffer for the whole body: the messages' sizes plus room for their
            // properties (resized at most once or twice for unusually many properties).
            let guess = s.batch.iter().map(|(m, _)| m.body.len() + 128).sum();
            let mut body = Vec::with_capacity(guess);
            for (m, uniq) in &s.batch {
                push_batch_item(&mut body, m.flag, &m.body, |o| {
                    write_message_properties(o, m, uniq)
                });
            }
            (request::SEND_BATCH_MESSAGE, Bytes::from(body))
        };
        // Filled in place: a command is ~1 KiB with its inline arena, and a `with_ext` chain
        // moved it once per field.
        let mut cmd = RemotingCommand::request(code, opaque);
        let ext = &mut cmd.ext_fields;
        ext.insert("a", &self.config.group);
        ext.insert("b", &topic);
        ext.insert("c", crate::broker::DEFAULT_TOPIC);
        ext.insert("d", self.config.default_topic_queues);
        ext.insert("e", mq.queue_id);
        let sys_flag = if s.prepared {
            crate::broker::tx_flag::PREPARED
        } else {
            0
        };
        ext.insert("f", sys_flag);
        ext.insert("g", now);
        ext.insert("h", s.msg.flag);
        ext.insert("i", props);
        ext.insert("j", 0);
        ext.insert("k", false);
        ext.insert("m", code == request::SEND_BATCH_MESSAGE);
        cmd.body = body;
        let mode = s.mode;
        if mode == SendMode::Oneway {
            cmd.flag |= crate::remoting::command::FLAG_ONEWAY;
            self.client.send(addr, cmd);
            let result = SendResult {
                status: SendStatus::SendOk,
                msg_id: s.uniq.clone(),
                offset_msg_id: String::new(),
                queue: mq,
                queue_offset: 0,
            };
            return self.finish(id, Ok(result));
        }
        let deadline = (s.started + self.config.send_timeout_ms).max(now);
        let rpc = Rpc::Send {
            id,
            broker: mq.broker_name.clone(),
            sent_at: now,
        };
        self.client.call(addr, cmd, rpc, deadline);
    }

    fn finish(&mut self, id: SendId, result: Result<SendResult, SendError>) {
        if let Some(s) = self.sends.remove(&id) {
            self.events.push_back(ProducerEvent::Sent {
                id,
                result,
                attempts: s.attempts,
            });
        }
    }

    /// RocketMQ's updateFaultItem.
    fn fault(&mut self, broker: &str, latency: u64, now: u64) {
        if !self.config.latency_fault {
            return;
        }
        self.faults.record(broker, latency, now);
    }

    /// Retries on another broker if attempts and time remain; fails the send otherwise.
    fn retry_or_fail(&mut self, id: SendId, err: SendError, now: u64) {
        let Some(s) = self.sends.get(&id) else { return };
        let ordered = s.selector.is_some();
        let within = now < s.started + self.config.send_timeout_ms;
        if !ordered && s.attempts <= self.config.retry_times && within {
            self.attempt(id, now);
        } else {
            self.finish(id, Err(err));
        }
    }

    /// A response arrived (from a name server or a broker).
    pub fn on_command(&mut self, cmd: RemotingCommand, now: u64) {
        if !cmd.is_response() {
            return; // brokers' check-back requests arrive with transactions
        }
        let Some(rpc) = self.client.answered(&cmd) else {
            return;
        };
        match rpc {
            Rpc::Route {
                topic, default_for, ..
            } => self.on_route(topic, default_for, cmd, now),
            Rpc::Send {
                id,
                broker,
                sent_at,
            } => self.on_send_response(id, &broker, sent_at, cmd, now),
        }
    }

    fn on_route(
        &mut self,
        topic: String,
        default_for: Option<String>,
        cmd: RemotingCommand,
        now: u64,
    ) {
        let route: Option<TopicRouteData> = (cmd.code == response::SUCCESS)
            .then(|| decode_body(&cmd.body).ok())
            .flatten();
        let target = default_for.clone().unwrap_or_else(|| topic.clone());
        match route {
            Some(route) => {
                let mut info = publish_info(&target, &route);
                if default_for.is_some() {
                    // Through the default topic: at most the producer's default queue count.
                    let cap = self.config.default_topic_queues;
                    info.queues.retain(|q| q.queue_id < cap);
                }
                let before: std::collections::BTreeSet<&String> = self
                    .routes
                    .values()
                    .flat_map(|i| i.brokers.values())
                    .collect();
                let new_broker = info.brokers.values().any(|b| !before.contains(b));
                self.routes.insert(target.clone(), info);
                if new_broker {
                    // A broker first seen hears who this producer is now, not at the next
                    // heartbeat round (30 s): its check-backs (transactions) and operators'
                    // producerConnection need the group known (the first heartbeat, at start,
                    // went to no broker).
                    self.client.heartbeat_at(now);
                }
                for id in self.waiting.remove(&target).unwrap_or_default() {
                    self.attempt(id, now);
                }
            }
            None if default_for.is_none() && cmd.code == response::TOPIC_NOT_EXIST => {
                self.fetch_route(crate::broker::DEFAULT_TOPIC, Some(topic), now);
            }
            None => {
                for id in self.waiting.remove(&target).unwrap_or_default() {
                    self.finish(id, Err(SendError::NoRoute(target.clone())));
                }
            }
        }
    }

    fn on_send_response(
        &mut self,
        id: SendId,
        broker: &str,
        sent_at: u64,
        cmd: RemotingCommand,
        now: u64,
    ) {
        let latency = now.saturating_sub(sent_at);
        let status = match cmd.code {
            response::SUCCESS => Some(SendStatus::SendOk),
            response::FLUSH_DISK_TIMEOUT => Some(SendStatus::FlushDiskTimeout),
            response::FLUSH_SLAVE_TIMEOUT => Some(SendStatus::FlushSlaveTimeout),
            response::SLAVE_NOT_AVAILABLE => Some(SendStatus::SlaveNotAvailable),
            _ => None,
        };
        let err = || SendError::Broker {
            code: cmd.code,
            remark: cmd.remark.clone().unwrap_or_default(),
        };
        match status {
            Some(status) => {
                // Java's SendMessageResponseHeader: msgId, queueId and queueOffset are
                // required (@CFNotNull); a success without them is not a stored message
                // we can name, so it fails the attempt and is retried.
                let fields = (
                    cmd.ext("msgId"),
                    cmd.ext_opt::<u32>("queueId"),
                    cmd.ext_opt::<u64>("queueOffset"),
                );
                let (Some(msg_id), Ok(Some(queue_id)), Ok(Some(queue_offset))) = fields else {
                    self.fault(broker, ISOLATION_LATENCY, now);
                    let what = format!(
                        "code {} without a valid msgId, queueId and queueOffset",
                        cmd.code
                    );
                    return self.retry_or_fail(id, SendError::MalformedResponse(what), now);
                };
                self.fault(broker, latency, now);
                let Some(s) = self.sends.get(&id) else { return };
                let result = SendResult {
                    status,
                    msg_id: s.uniq.clone(),
                    offset_msg_id: msg_id.to_string(),
                    queue: MessageQueue {
                        topic: s.msg.topic.clone(),
                        broker_name: broker.to_string(),
                        queue_id,
                    },
                    queue_offset,
                };
                self.finish(id, Ok(result));
            }
            None => {
                self.fault(broker, ISOLATION_LATENCY, now);
                match cmd.code {
                    // What RocketMQ 5's producer retries on another broker (its
                    // retryResponseCodes; SYSTEM_BUSY is flow control, so try elsewhere).
                    response::TOPIC_NOT_EXIST
                    | response::SERVICE_NOT_AVAILABLE
                    | response::SYSTEM_ERROR
                    | response::SYSTEM_BUSY
                    | response::NO_PERMISSION => self.retry_or_fail(id, err(), now),
                    _ => self.finish(id, Err(err())),
                }
            }
        }
    }

    /// A connection to `addr` failed or closed: its requests fail now rather than at timeout.
    pub fn on_peer_lost(&mut self, addr: &str, now: u64) {
        for rpc in self.client.take_calls_to(addr) {
            self.on_expired(rpc, now);
        }
    }

    fn on_expired(&mut self, rpc: Rpc, now: u64) {
        match rpc {
            Rpc::Route {
                topic,
                default_for,
                ns,
            } => {
                let target = default_for.clone().unwrap_or_else(|| topic.clone());
                let tries_left = self.waiting.get(&target).is_some_and(|w| {
                    w.iter().any(|id| {
                        self.sends
                            .get(id)
                            .is_some_and(|s| now < s.started + self.config.send_timeout_ms)
                    })
                });
                // Fail over to the next name server while a waiting send has time left.
                let next = self.client.namesrv_failover(ns).filter(|_| tries_left);
                if let Some(next) = next {
                    self.fetch_route_from(&topic, default_for, next, now);
                } else {
                    for id in self.waiting.remove(&target).unwrap_or_default() {
                        self.finish(id, Err(SendError::Timeout(self.config.send_timeout_ms)));
                    }
                }
            }
            Rpc::Send { id, broker, .. } => {
                self.fault(&broker, ISOLATION_LATENCY, now);
                self.retry_or_fail(id, SendError::Timeout(self.config.send_timeout_ms), now);
            }
        }
    }

    /// Time passed: expired requests, route refresh, heartbeats.
    pub fn on_timeout(&mut self, now: u64) {
        for rpc in self.client.take_expired(now) {
            self.on_expired(rpc, now);
        }
        if self.client.route_refresh_due(now) {
            let mut topics: Vec<String> = self.routes.keys().cloned().collect();
            topics.sort_unstable(); // refreshed in name order, as ever
            for t in topics {
                self.fetch_route(&t, None, now);
            }
        }
        if self.client.heartbeat_due(now) {
            let body = serde_json::json!({
                "clientID": self.client.client_id(),
                "producerDataSet": [{"groupName": self.config.group}],
                "consumerDataSet": [],
            });
            let body = Bytes::from(serde_json::to_vec(&body).expect("heartbeat serializes"));
            let brokers: std::collections::BTreeSet<String> = self
                .routes
                .values()
                .flat_map(|i| i.brokers.values().cloned())
                .collect();
            // Unawaited: a producer's heartbeat only keeps its group known.
            self.client.heartbeat(brokers, &body, None);
        }
    }

    /// Sends in flight (for tests and graceful shutdown).
    pub fn in_flight(&self) -> usize {
        self.sends.len()
    }

    /// Whether `broker` is inside a latency-fault window at `now`.
    pub fn is_isolated(&self, broker: &str, now: u64) -> bool {
        !self.faults.available(broker, now)
    }

    /// The queues a topic is published on, as known now.
    pub fn queues(&self, topic: &str) -> Option<&[MessageQueue]> {
        self.routes.get(topic).map(|i| i.queues.as_slice())
    }
}

/// A batch item's properties: UNIQ_KEY, WAIT, TAGS, KEYS, then the user's.
fn message_properties(m: &Message, uniq: &str) -> Vec<u8> {
    let mut out = Vec::new();
    write_message_properties(&mut out, m, uniq);
    out
}

/// Appends a message's properties string (UNIQ_KEY, WAIT, TAGS, KEYS space-joined, then
/// its own properties) to `out`, allocating nothing else: a batch writes each of its
/// messages' straight into the request body.
fn write_message_properties(out: &mut Vec<u8>, m: &Message, uniq: &str) {
    push_property(out, "UNIQ_KEY", uniq);
    push_property(out, "WAIT", "true");
    if let Some(t) = &m.tags {
        push_property(out, "TAGS", t);
    }
    // As Java's setKeys: the keys joined by one space, left out when that is empty.
    let joined_len = m.keys.iter().map(|k| k.len()).sum::<usize>() + m.keys.len().saturating_sub(1);
    if joined_len > 0 {
        out.extend_from_slice(b"KEYS");
        out.push(NAME_VALUE_SEPARATOR);
        for (i, k) in m.keys.iter().enumerate() {
            if i > 0 {
                out.push(b' ');
            }
            out.extend_from_slice(k.as_bytes());
        }
        out.push(PROPERTY_SEPARATOR);
    }
    for (k, v) in &m.properties {
        push_property(out, k, v);
    }
}

impl crate::machine::ClientMachine for Producer {
    type Event = ProducerEvent;
    fn on_command(&mut self, cmd: RemotingCommand, now: u64) {
        Producer::on_command(self, cmd, now)
    }
    fn on_timeout(&mut self, now: u64) {
        Producer::on_timeout(self, now)
    }
    fn on_peer_lost(&mut self, addr: &str, now: u64) {
        Producer::on_peer_lost(self, addr, now)
    }
    fn poll_output(&mut self) -> Option<Output> {
        Producer::poll_output(self)
    }
    fn poll_timeout(&self) -> Option<u64> {
        Producer::poll_timeout(self)
    }
    fn poll_event(&mut self) -> Option<ProducerEvent> {
        Producer::poll_event(self)
    }
    fn on_request(&mut self, from: &str, cmd: RemotingCommand, now: u64) {
        Producer::on_request(self, from, cmd, now)
    }
}

#[cfg(test)]
mod encode_tests {
    use super::*;
    use crate::message::{BatchItem, decode_batch, encode_batch, properties_string};

    /// The properties string as built pair by pair (what the writer must reproduce).
    fn reference(m: &Message, uniq: &str) -> Vec<u8> {
        let keys = m.keys.join(" ");
        let mut props: Vec<(&str, &str)> = vec![("UNIQ_KEY", uniq), ("WAIT", "true")];
        if let Some(t) = &m.tags {
            props.push(("TAGS", t));
        }
        if !keys.is_empty() {
            props.push(("KEYS", &keys));
        }
        props.extend(m.properties.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        properties_string(props)
    }

    fn samples() -> Vec<Message> {
        let mut out = Vec::new();
        for keys in [
            vec![],
            vec![""],
            vec!["", ""],
            vec!["k1"],
            vec!["k1", "k 2", ""],
        ] {
            for tags in [None, Some("TagA")] {
                let mut m = Message::new("T", vec![b'x'; keys.len() * 7]);
                m.keys = keys.iter().map(|k| k.to_string()).collect();
                m.tags = tags.map(str::to_string);
                m.flag = keys.len() as i32;
                if m.keys.len() > 1 {
                    m.properties.insert("a".into(), "1".into());
                    m.properties.insert("DELAY".into(), "3".into());
                }
                out.push(m);
            }
        }
        out
    }

    #[test]
    fn properties_are_written_as_built_pair_by_pair() {
        for (i, m) in samples().iter().enumerate() {
            let uniq = uniq_key(0xABCD, i as u64);
            assert_eq!(message_properties(m, &uniq), reference(m, &uniq), "{m:?}");
        }
    }

    #[test]
    fn a_batch_body_written_in_place_equals_the_item_encoding() {
        let msgs = samples();
        let items: Vec<BatchItem> = msgs
            .iter()
            .enumerate()
            .map(|(i, m)| BatchItem {
                flag: m.flag,
                body: m.body.clone(),
                properties: Bytes::from(reference(m, &uniq_key(1, i as u64))),
            })
            .collect();
        let mut body = Vec::new();
        for (i, m) in msgs.iter().enumerate() {
            push_batch_item(&mut body, m.flag, &m.body, |o| {
                write_message_properties(o, m, &uniq_key(1, i as u64))
            });
        }
        assert_eq!(body, encode_batch(&items));
        assert_eq!(decode_batch(Bytes::from(body)).unwrap().len(), msgs.len());
    }

    #[test]
    fn uniq_keys_are_32_uppercase_hex_digits() {
        assert_eq!(
            uniq_key(0x0123_4567_89AB_CDEF, 0xFE),
            format!("{:016X}{:016X}", 0x0123_4567_89AB_CDEFu64, 0xFEu64)
        );
        assert_eq!(
            uniq_key(u64::MAX, 0),
            format!("{:016X}{:016X}", u64::MAX, 0)
        );
    }
}

//! `SimpleConsumer`: RocketMQ 5's simple consumer over the remoting protocol's pop
//! (Apache's DefaultMQPushConsumer in pop mode, its popAsync / ackMessageAsync /
//! changeInvisibleTimeAsync), as a Sans-IO machine.
//!
//! The application asks: `receive` pops up to `max_messages` of a topic from one of its
//! brokers (in turn), holding the request there up to `await_ms` when nothing is there;
//! each message comes with a [`ReceiptHandle`] to `ack` it or `change_invisible` it. A
//! message neither acked nor changed comes back, to some receive of the group, once its
//! invisible time lapses. Every answer comes back as a [`SimpleEvent`].

use std::collections::{BTreeMap, VecDeque};

use crate::broker::pop::wire;
use crate::client::{ClientConfig, ClientInstance};
use crate::machine::{ClientMachine, Output};
use crate::message::MessageExt;
use crate::protocol::{TopicRouteData, decode_body, perm};
use crate::remoting::RemotingCommand;
use crate::remoting::codes::{request, response};

const RPC_TIMEOUT_MS: u64 = 3_000;
/// A pop may be held `await_ms` at the broker: the client waits that and this much more.
const POP_SLACK_MS: u64 = 5_000;
/// A receive waiting for its topic's route asks again this often.
const ROUTE_RETRY_MS: u64 = 1_000;

pub struct SimpleConsumerConfig {
    pub group: String,
    pub client_id: String,
    pub namesrv_addrs: Vec<String>,
    /// topic -> tag expression ("*", "a || b") or, for topics in `sql_topics`, SQL92.
    pub subscriptions: BTreeMap<String, String>,
    pub sql_topics: std::collections::BTreeSet<String>,
    /// How long a received message stays invisible to every receive of the group.
    pub invisible_ms: u64,
    /// How long a receive that finds nothing waits at the broker (long polling).
    pub await_ms: u64,
    pub max_messages: u32,
    /// A new group starts at its queues' first message (else at their last).
    pub consume_from_first: bool,
    /// FIFO: each queue is held for the group until its messages are acked.
    pub orderly: bool,
    pub route_refresh_ms: u64,
    pub seed: u64,
}

impl Default for SimpleConsumerConfig {
    fn default() -> Self {
        SimpleConsumerConfig {
            group: "DEFAULT_CONSUMER".into(),
            client_id: "127.0.0.1@rockfish-simple".into(),
            namesrv_addrs: vec!["127.0.0.1:9876".into()],
            subscriptions: BTreeMap::new(),
            sql_topics: Default::default(),
            invisible_ms: 30_000,
            await_ms: 15_000,
            max_messages: 16,
            consume_from_first: true,
            orderly: false,
            route_refresh_ms: 30_000,
            seed: 0,
        }
    }
}

/// What acks a received message: where it came from and the broker's receipt for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptHandle {
    pub broker_name: String,
    pub broker_addr: String,
    /// The topic to ack against: the message's, or the group's pop retry topic.
    pub topic: String,
    pub queue_id: u32,
    pub offset: u64,
    /// The receipt string (Apache's extraInfo).
    pub extra_info: String,
}

/// A received message and its handle.
#[derive(Debug, Clone)]
pub struct Received {
    pub msg: MessageExt,
    pub handle: ReceiptHandle,
}

/// What the application is told; `id` is what the call returned.
#[derive(Debug, Clone)]
pub enum SimpleEvent {
    /// A receive's messages (none when its wait ran out).
    Received {
        id: u64,
        msgs: Vec<Received>,
    },
    ReceiveFailed {
        id: u64,
        error: String,
    },
    /// An ack's answer: `Err` names why (e.g. the receipt expired and it was revived).
    Acked {
        id: u64,
        result: Result<(), String>,
    },
    /// A change of invisibility's answer: the message's new handle.
    InvisibilityChanged {
        id: u64,
        result: Result<ReceiptHandle, String>,
    },
}

#[derive(Clone)]
enum Rpc {
    Route {
        topic: String,
    },
    Pop {
        id: u64,
        topic: String,
        broker: String,
        addr: String,
    },
    Ack {
        id: u64,
    },
    Change {
        id: u64,
        handle: ReceiptHandle,
    },
}

pub struct SimpleConsumer {
    config: SimpleConsumerConfig,
    client: ClientInstance<Rpc>,
    routes: BTreeMap<String, TopicRouteData>,
    /// Receives waiting for their topic's route: (id, topic, deadline).
    waiting: Vec<(u64, String, u64)>,
    /// When the route of a topic receives wait for is asked again.
    route_retry: BTreeMap<String, u64>,
    /// Which broker each topic's next receive goes to.
    turn: BTreeMap<String, usize>,
    next_id: u64,
    events: VecDeque<SimpleEvent>,
}

impl SimpleConsumer {
    pub fn new(config: SimpleConsumerConfig, now: u64) -> SimpleConsumer {
        let client_config = ClientConfig {
            client_id: config.client_id.clone(),
            namesrv_addrs: config.namesrv_addrs.clone(),
            heartbeat_ms: u64::MAX / 4,
            route_refresh_ms: config.route_refresh_ms,
            seed: config.seed,
        };
        let mut c = SimpleConsumer {
            // Routes are asked for below; a simple consumer never heartbeats (its heartbeat
            // is put off at its first timeout, never left due: the timer would spin).
            client: ClientInstance::new(client_config, now + config.route_refresh_ms, now),
            routes: BTreeMap::new(),
            waiting: Vec::new(),
            route_retry: BTreeMap::new(),
            turn: BTreeMap::new(),
            next_id: 0,
            events: VecDeque::new(),
            config,
        };
        c.refresh_routes(now);
        c
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn refresh_routes(&mut self, now: u64) {
        let topics: Vec<String> = self.config.subscriptions.keys().cloned().collect();
        for topic in topics {
            let Some(ns) = self.client.pick_namesrv() else {
                break;
            };
            self.client.query_route(
                &topic,
                ns,
                Rpc::Route {
                    topic: topic.clone(),
                },
                now + RPC_TIMEOUT_MS,
            );
        }
    }

    /// Receives from `topic` (one it subscribes to). Returns the id its event carries.
    pub fn receive(&mut self, topic: &str, now: u64) -> u64 {
        let id = self.id();
        if !self.config.subscriptions.contains_key(topic) {
            self.events.push_back(SimpleEvent::ReceiveFailed {
                id,
                error: format!("not subscribed to topic {topic}"),
            });
            return id;
        }
        if !self.routes.contains_key(topic) {
            let deadline = now + self.config.await_ms.max(RPC_TIMEOUT_MS);
            self.waiting.push((id, topic.to_string(), deadline));
            self.route_retry.entry(topic.to_string()).or_insert(now);
            return id;
        }
        self.pop(id, topic, now);
        id
    }

    /// Sends the pop to the next broker of the topic that has readable queues.
    fn pop(&mut self, id: u64, topic: &str, now: u64) {
        let brokers: Vec<(String, String)> = self.routes.get(topic).map_or(Vec::new(), |r| {
            r.broker_datas
                .iter()
                .filter(|b| {
                    r.queue_datas.iter().any(|q| {
                        q.broker_name == b.broker_name
                            && q.read_queue_nums > 0
                            && perm::readable(q.perm)
                    })
                })
                .filter_map(|b| {
                    b.master_addr()
                        .map(|a| (b.broker_name.clone(), a.to_string()))
                })
                .collect()
        });
        if brokers.is_empty() {
            self.events.push_back(SimpleEvent::ReceiveFailed {
                id,
                error: format!("no readable master of topic {topic} in its route"),
            });
            return;
        }
        let turn = self.turn.entry(topic.to_string()).or_default();
        let (broker, addr) = brokers[*turn % brokers.len()].clone();
        *turn = turn.wrapping_add(1);
        let exp = self.config.subscriptions[topic].clone();
        let exp_type = if self.config.sql_topics.contains(topic) {
            "SQL92"
        } else {
            "TAG"
        };
        let opaque = self.client.opaque();
        let cmd = RemotingCommand::request(request::POP_MESSAGE, opaque)
            .with_ext("consumerGroup", &self.config.group)
            .with_ext("topic", topic)
            .with_ext("queueId", -1)
            .with_ext("maxMsgNums", self.config.max_messages.clamp(1, 32))
            .with_ext("invisibleTime", self.config.invisible_ms)
            .with_ext("pollTime", self.config.await_ms)
            .with_ext("bornTime", now)
            .with_ext(
                "initMode",
                if self.config.consume_from_first { 0 } else { 1 },
            )
            .with_ext("expType", exp_type)
            .with_ext("exp", exp)
            .with_ext("order", self.config.orderly)
            .with_ext("bname", &broker);
        let rpc = Rpc::Pop {
            id,
            topic: topic.to_string(),
            broker,
            addr: addr.clone(),
        };
        self.client
            .call(addr, cmd, rpc, now + self.config.await_ms + POP_SLACK_MS);
    }

    /// Acks a received message. Returns the id its event carries.
    pub fn ack(&mut self, h: &ReceiptHandle, now: u64) -> u64 {
        let id = self.id();
        let opaque = self.client.opaque();
        let cmd = wire::ack_request(
            opaque,
            &self.config.group,
            &h.topic,
            h.queue_id,
            &h.extra_info,
            h.offset,
        )
        .with_ext("bname", &h.broker_name);
        self.client.call(
            h.broker_addr.clone(),
            cmd,
            Rpc::Ack { id },
            now + RPC_TIMEOUT_MS,
        );
        id
    }

    /// Makes a received message invisible for `invisible_ms` from now (instead of what is
    /// left of its invisible time). Returns the id its event carries.
    pub fn change_invisible(&mut self, h: &ReceiptHandle, invisible_ms: u64, now: u64) -> u64 {
        let id = self.id();
        let opaque = self.client.opaque();
        let cmd = RemotingCommand::request(request::CHANGE_MESSAGE_INVISIBLETIME, opaque)
            .with_ext("consumerGroup", &self.config.group)
            .with_ext("topic", &h.topic)
            .with_ext("queueId", h.queue_id)
            .with_ext("extraInfo", &h.extra_info)
            .with_ext("offset", h.offset)
            .with_ext("invisibleTime", invisible_ms)
            .with_ext("bname", &h.broker_name);
        let rpc = Rpc::Change {
            id,
            handle: h.clone(),
        };
        self.client
            .call(h.broker_addr.clone(), cmd, rpc, now + RPC_TIMEOUT_MS);
        id
    }

    pub fn on_command(&mut self, cmd: RemotingCommand, now: u64) {
        if !cmd.is_response() {
            return;
        }
        let Some(rpc) = self.client.answered(&cmd) else {
            return;
        };
        match rpc {
            Rpc::Route { topic } => {
                if cmd.code == response::SUCCESS
                    && let Ok(route) = decode_body::<TopicRouteData>(&cmd.body)
                {
                    self.routes.insert(topic.clone(), route);
                    self.route_retry.remove(&topic);
                    let ready: Vec<(u64, String, u64)> = self
                        .waiting
                        .iter()
                        .filter(|w| w.1 == topic)
                        .cloned()
                        .collect();
                    self.waiting.retain(|w| w.1 != topic);
                    for (id, t, _) in ready {
                        self.pop(id, &t, now);
                    }
                }
            }
            Rpc::Pop {
                id,
                topic,
                broker,
                addr,
            } => {
                let event = self.popped(id, &topic, &broker, &addr, &cmd);
                self.events.push_back(event);
            }
            Rpc::Ack { id } => {
                let result = if cmd.code == response::SUCCESS {
                    Ok(())
                } else {
                    Err(answer_error(&cmd))
                };
                self.events.push_back(SimpleEvent::Acked { id, result });
            }
            Rpc::Change { id, handle } => {
                let result = if cmd.code == response::SUCCESS {
                    changed_handle(&handle, &cmd)
                } else {
                    Err(answer_error(&cmd))
                };
                self.events
                    .push_back(SimpleEvent::InvisibilityChanged { id, result });
            }
        }
    }

    /// A pop's answer as the application's event: its messages with their handles, built
    /// from the header as Apache's client builds them (or taken from POP_CK).
    fn popped(
        &self,
        id: u64,
        topic: &str,
        broker: &str,
        addr: &str,
        cmd: &RemotingCommand,
    ) -> SimpleEvent {
        match cmd.code {
            response::SUCCESS => {}
            response::POLLING_TIMEOUT | response::PULL_NOT_FOUND | response::POLLING_FULL => {
                return SimpleEvent::Received { id, msgs: vec![] };
            }
            _ => {
                return SimpleEvent::ReceiveFailed {
                    id,
                    error: answer_error(cmd),
                };
            }
        }
        let popped = match wire::popped(cmd, broker) {
            Ok(p) => p,
            Err(error) => return SimpleEvent::ReceiveFailed { id, error },
        };
        let msgs = popped
            .into_iter()
            .map(|p| {
                let handle = ReceiptHandle {
                    broker_name: broker.to_string(),
                    broker_addr: addr.to_string(),
                    topic: wire::real_topic(&p.receipt.retry, topic, &self.config.group),
                    queue_id: p.receipt.queue_id,
                    offset: p.receipt.offset.unwrap_or(p.msg.queue_offset()),
                    extra_info: p.extra,
                };
                Received { msg: p.msg, handle }
            })
            .collect();
        SimpleEvent::Received { id, msgs }
    }

    fn fail(&mut self, rpc: Rpc, error: String) {
        let e = match rpc {
            Rpc::Route { .. } => return,
            Rpc::Pop { id, .. } => SimpleEvent::ReceiveFailed { id, error },
            Rpc::Ack { id } => SimpleEvent::Acked {
                id,
                result: Err(error),
            },
            Rpc::Change { id, .. } => SimpleEvent::InvisibilityChanged {
                id,
                result: Err(error),
            },
        };
        self.events.push_back(e);
    }

    pub fn on_timeout(&mut self, now: u64) {
        // No heartbeats: the first due one is put off for good (u64::MAX / 4 on).
        let _ = self.client.heartbeat_due(now);
        for rpc in self.client.take_expired(now) {
            self.fail(rpc, "timed out".into());
        }
        let (late, keep): (Vec<_>, Vec<_>) = self.waiting.drain(..).partition(|w| w.2 <= now);
        self.waiting = keep;
        for (id, topic, _) in late {
            self.events.push_back(SimpleEvent::ReceiveFailed {
                id,
                error: format!("no route for topic {topic}"),
            });
        }
        if self.client.route_refresh_due(now) {
            self.refresh_routes(now);
        }
        let due: Vec<String> = self
            .route_retry
            .iter()
            .filter(|(t, at)| **at <= now && self.waiting.iter().any(|w| &w.1 == *t))
            .map(|(t, _)| t.clone())
            .collect();
        let waiting = &self.waiting;
        self.route_retry
            .retain(|t, _| waiting.iter().any(|w| &w.1 == t));
        for topic in due {
            let Some(ns) = self.client.pick_namesrv() else {
                break;
            };
            self.route_retry.insert(topic.clone(), now + ROUTE_RETRY_MS);
            self.client.query_route(
                &topic,
                ns,
                Rpc::Route {
                    topic: topic.clone(),
                },
                now + RPC_TIMEOUT_MS,
            );
        }
    }

    pub fn on_peer_lost(&mut self, addr: &str, _now: u64) {
        for rpc in self.client.take_calls_to(addr) {
            self.fail(rpc, format!("connection to {addr} lost"));
        }
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.client.poll_output()
    }

    pub fn poll_timeout(&self) -> Option<u64> {
        let t = self.client.next_timeout();
        let waiting = self.waiting.iter().map(|w| w.2).min().unwrap_or(t);
        let retry = self.route_retry.values().min().copied().unwrap_or(t);
        Some(t.min(waiting).min(retry))
    }

    pub fn poll_event(&mut self) -> Option<SimpleEvent> {
        self.events.pop_front()
    }
}

/// A refusal's text: its remark, or its code.
fn answer_error(cmd: &RemotingCommand) -> String {
    match &cmd.remark {
        Some(r) => format!("code {}: {r}", cmd.code),
        None => format!("code {}", cmd.code),
    }
}

/// The handle after a change of invisibility.
fn changed_handle(old: &ReceiptHandle, cmd: &RemotingCommand) -> Result<ReceiptHandle, String> {
    let field = |k: &str| {
        cmd.ext(k)
            .and_then(|v| v.parse::<i64>().ok())
            .ok_or_else(|| format!("the answer lacks {k}"))
    };
    let extra_info = wire::changed_receipt(
        &old.extra_info,
        &old.topic,
        field("popTime")?,
        field("invisibleTime")?,
        field("reviveQid")? as i32,
    )?;
    Ok(ReceiptHandle {
        extra_info,
        ..old.clone()
    })
}

impl ClientMachine for SimpleConsumer {
    type Event = SimpleEvent;
    fn on_command(&mut self, cmd: RemotingCommand, now: u64) {
        SimpleConsumer::on_command(self, cmd, now)
    }
    fn on_timeout(&mut self, now: u64) {
        SimpleConsumer::on_timeout(self, now)
    }
    fn on_peer_lost(&mut self, addr: &str, now: u64) {
        SimpleConsumer::on_peer_lost(self, addr, now)
    }
    fn poll_output(&mut self) -> Option<Output> {
        SimpleConsumer::poll_output(self)
    }
    fn poll_timeout(&self) -> Option<u64> {
        SimpleConsumer::poll_timeout(self)
    }
    fn poll_event(&mut self) -> Option<SimpleEvent> {
        SimpleConsumer::poll_event(self)
    }
}

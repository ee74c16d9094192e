//! `Proxy`: RocketMQ 5's gRPC messaging service (`apache.rocketmq.v2.MessagingService`, what
//! Apache's proxy serves on 8081 in cluster mode) as a Sans-IO machine in front of name
//! servers and brokers it speaks remoting to.
//!
//! Each gRPC call comes in as a method carrying a [`CallId`] and leaves as one
//! [`ProxyEvent::Reply`]; a Telemetry stream's commands come in by [`StreamId`] and the
//! proxy's commands for that client leave as [`ProxyEvent::Telemetry`]. Underneath, the
//! proxy is a remoting client (`ClientInstance`): routes from the name servers, sends as
//! SEND_MESSAGE_V2, receives as POP_MESSAGE (long polling at the broker), acks and changes
//! of invisibility as ACK_MESSAGE / CHANGE_MESSAGE_INVISIBLETIME, dead letters as
//! CONSUMER_SEND_MSG_BACK, transaction ends as END_TRANSACTION. It keeps no message state:
//! receipt handles and transaction ids carry what their calls need (`convert.rs`). A
//! broker's transaction check-back reaches it as the producer of group = the topic (Apache's
//! proxy names it so) and goes to a client publishing that topic over its Telemetry stream.
//!
//! Why a proxy rather than gRPC inside the broker: clients dial the endpoints a route names,
//! and one proxy in front of a cluster serves every broker's queues (with failover through
//! routes) the way Apache's cluster-mode proxy does; `rockfish standalone` runs one in
//! process, `rockfish proxy` runs it alone.

mod convert;
mod groups;
pub mod pb;
mod settings;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;

pub use self::convert::{Handle as ReceiptHandle, PROPERTY_SHARDING_KEY};
use self::convert::{Handle, TransactionId};
use self::groups::{GroupPolicies, GroupPolicy, WaitingReceive, WaitingSettings};
use self::pb::Code;
use crate::broker::pop::wire;
use crate::broker::{HeartbeatData, ProducerData, tx_flag};
use crate::client::{ClientConfig, ClientInstance};
use crate::machine::{ClientMachine, Output};
use crate::message::decode_messages;
use crate::protocol::{TopicRouteData, decode_body, perm};
use crate::remoting::RemotingCommand;
use crate::remoting::codes::{request, response};
use rockfish_store::config::SubscriptionGroupConfig;

pub type CallId = u64;
pub type StreamId = u64;

const RPC_TIMEOUT_MS: u64 = 3_000;
/// A pop may be held this long at the broker, and the proxy waits that plus this.
const POP_SLACK_MS: u64 = 2_000;
/// Heartbeats for the producer groups of transactional clients (check-backs need one).
const HEARTBEAT_MS: u64 = 20_000;

pub struct ProxyConfig {
    /// The proxy's own id as a remoting client of the brokers.
    pub client_id: String,
    pub namesrv_addrs: Vec<String>,
    /// Largest message body accepted (and told to producers in their settings).
    pub max_body_bytes: usize,
    /// The longest a receive waits at a broker for messages (clients ask for more).
    pub max_long_polling_ms: u64,
    /// How long a push consumer's messages (auto-renewed in Apache) stay invisible.
    pub push_invisible_ms: u64,
    /// A route younger than this answers QueryRoute without asking a name server.
    pub route_ttl_ms: u64,
    /// Clients known at once (by their x-mq-client-id).
    pub max_clients: usize,
    /// Calls waiting for an answer at once; past it a call is answered TOO_MANY_REQUESTS.
    pub max_calls: usize,
    pub seed: u64,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            client_id: "127.0.0.1@rockfish-proxy".into(),
            namesrv_addrs: vec!["127.0.0.1:9876".into()],
            max_body_bytes: 4 << 20,
            max_long_polling_ms: 20_000,
            push_invisible_ms: 60_000,
            route_ttl_ms: 5_000,
            max_clients: 10_000,
            max_calls: 100_000,
            seed: 0,
        }
    }
}

/// A gRPC call's request.
#[derive(Debug, Clone)]
pub enum Request {
    QueryRoute(pb::QueryRouteRequest),
    Heartbeat(pb::HeartbeatRequest),
    SendMessage(pb::SendMessageRequest),
    QueryAssignment(pb::QueryAssignmentRequest),
    ReceiveMessage(pb::ReceiveMessageRequest),
    AckMessage(pb::AckMessageRequest),
    ChangeInvisibleDuration(pb::ChangeInvisibleDurationRequest),
    ForwardToDeadLetterQueue(pb::ForwardMessageToDeadLetterQueueRequest),
    EndTransaction(pb::EndTransactionRequest),
    NotifyClientTermination(pb::NotifyClientTerminationRequest),
}

/// A gRPC call's answer.
#[derive(Debug, Clone)]
pub enum Reply {
    QueryRoute(pb::QueryRouteResponse),
    Heartbeat(pb::HeartbeatResponse),
    SendMessage(pb::SendMessageResponse),
    QueryAssignment(pb::QueryAssignmentResponse),
    /// The whole server stream: status, messages, delivery timestamp.
    ReceiveMessage(Vec<pb::ReceiveMessageResponse>),
    AckMessage(pb::AckMessageResponse),
    ChangeInvisibleDuration(pb::ChangeInvisibleDurationResponse),
    ForwardToDeadLetterQueue(pb::ForwardMessageToDeadLetterQueueResponse),
    EndTransaction(pb::EndTransactionResponse),
    NotifyClientTermination(pb::NotifyClientTerminationResponse),
}

impl Reply {
    /// The answer to `req` that carries only `status` (a refusal).
    pub fn refusal(req: &Request, status: pb::Status) -> Reply {
        let s = Some(status.clone());
        match req {
            Request::QueryRoute(_) => Reply::QueryRoute(pb::QueryRouteResponse {
                status: s,
                ..Default::default()
            }),
            Request::Heartbeat(_) => Reply::Heartbeat(pb::HeartbeatResponse { status: s }),
            Request::SendMessage(_) => Reply::SendMessage(pb::SendMessageResponse {
                status: s,
                ..Default::default()
            }),
            Request::QueryAssignment(_) => Reply::QueryAssignment(pb::QueryAssignmentResponse {
                status: s,
                ..Default::default()
            }),
            Request::ReceiveMessage(_) => Reply::ReceiveMessage(vec![pb::ReceiveMessageResponse {
                content: Some(pb::receive_message_response::Content::Status(status)),
            }]),
            Request::AckMessage(_) => Reply::AckMessage(pb::AckMessageResponse {
                status: s,
                ..Default::default()
            }),
            Request::ChangeInvisibleDuration(_) => {
                Reply::ChangeInvisibleDuration(pb::ChangeInvisibleDurationResponse {
                    status: s,
                    ..Default::default()
                })
            }
            Request::ForwardToDeadLetterQueue(_) => {
                Reply::ForwardToDeadLetterQueue(pb::ForwardMessageToDeadLetterQueueResponse {
                    status: s,
                })
            }
            Request::EndTransaction(_) => {
                Reply::EndTransaction(pb::EndTransactionResponse { status: s })
            }
            Request::NotifyClientTermination(_) => {
                Reply::NotifyClientTermination(pb::NotifyClientTerminationResponse { status: s })
            }
        }
    }
}

/// What the driver carries out.
#[derive(Debug, Clone)]
pub enum ProxyEvent {
    Reply {
        call: CallId,
        reply: Reply,
    },
    /// A command for the client on this Telemetry stream.
    Telemetry {
        stream: StreamId,
        cmd: Box<pb::TelemetryCommand>,
    },
}

/// A client as its Telemetry settings and heartbeats describe it.
#[derive(Debug, Default)]
struct Client {
    kind: i32,
    /// Topics it publishes (producers).
    topics: BTreeSet<String>,
    group: Option<String>,
    streams: BTreeSet<StreamId>,
    last_seen: u64,
}

/// A settings answer is written again this much later: rocketmq-client-nodejs 1.0.8 starts
/// waiting for it only once every topic's route is fetched, and one that came earlier would
/// leave its startup waiting forever.
const SETTINGS_AGAIN_MS: u64 = 1_000;

/// How long a client with no open stream and no heartbeat is remembered.
const CLIENT_EXPIRE_MS: u64 = 120_000;

#[derive(Clone)]
enum Rpc {
    Route {
        topic: String,
    },
    Send {
        call: CallId,
        message_id: String,
        addr: String,
        transactional: bool,
    },
    Pop {
        call: CallId,
        pop: PopAsked,
    },
    Ack {
        call: CallId,
        index: usize,
    },
    Change {
        call: CallId,
        handle: Handle,
    },
    SendBack {
        call: CallId,
        handle: Handle,
        group: String,
    },
    DlqAck {
        call: CallId,
    },
    /// The proxy's own heartbeats: answers are not awaited for anything.
    Beat,
    /// GET_SUBSCRIPTIONGROUP_CONFIG: a consumer group's policy.
    Group {
        group: String,
    },
}

/// What a receive asked a broker for.
#[derive(Clone)]
struct PopAsked {
    broker: String,
    addr: String,
    invisible_ms: u64,
    group: String,
}

/// An AckMessage's entries, answered once each has its broker's answer.
struct AckBatch {
    entries: Vec<pb::AckMessageResultEntry>,
    waiting: usize,
}

pub struct Proxy {
    config: ProxyConfig,
    client: ClientInstance<Rpc>,
    routes: BTreeMap<String, (TopicRouteData, u64)>,
    /// Calls waiting for a topic's route: (call, request, deadline).
    waiting: Vec<(CallId, Request, u64)>,
    /// Topics whose route is being asked.
    asking: BTreeSet<String>,
    clients: BTreeMap<String, Client>,
    streams: BTreeMap<StreamId, String>,
    acks: BTreeMap<CallId, AckBatch>,
    /// Calls being answered (the cap).
    open_calls: BTreeSet<CallId>,
    next_queue: usize,
    next_beat: u64,
    /// Settings answers to write again: (when, stream, answer).
    settings_again: VecDeque<(u64, StreamId, Box<pb::TelemetryCommand>)>,
    /// Consumer groups' policies (FIFO, attempts) and what waits for them.
    groups: GroupPolicies,
    events: VecDeque<ProxyEvent>,
}

impl Proxy {
    pub fn new(config: ProxyConfig, now: u64) -> Proxy {
        let client = ClientInstance::new(
            ClientConfig {
                client_id: config.client_id.clone(),
                namesrv_addrs: config.namesrv_addrs.clone(),
                heartbeat_ms: u64::MAX / 4,
                route_refresh_ms: u64::MAX / 4,
                seed: config.seed,
            },
            now,
            now,
        );
        Proxy {
            client,
            routes: BTreeMap::new(),
            waiting: Vec::new(),
            asking: BTreeSet::new(),
            clients: BTreeMap::new(),
            streams: BTreeMap::new(),
            acks: BTreeMap::new(),
            open_calls: BTreeSet::new(),
            next_queue: 0,
            next_beat: now + HEARTBEAT_MS,
            settings_again: VecDeque::new(),
            groups: GroupPolicies::default(),
            events: VecDeque::new(),
            config,
        }
    }

    /// A gRPC call from the client `client_id` (its x-mq-client-id, "" if none).
    pub fn on_call(&mut self, call: CallId, client_id: &str, req: Request, now: u64) {
        if self.open_calls.len() >= self.config.max_calls {
            let reply = Reply::refusal(
                &req,
                pb::status(
                    Code::TooManyRequests,
                    "the proxy holds too many calls; try again",
                ),
            );
            self.events.push_back(ProxyEvent::Reply { call, reply });
            return;
        }
        self.open_calls.insert(call);
        if !client_id.is_empty()
            && let Some(c) = self.clients.get_mut(client_id)
        {
            c.last_seen = now;
        }
        self.serve(call, client_id, req, now);
    }

    fn reply(&mut self, call: CallId, reply: Reply) {
        if self.open_calls.remove(&call) {
            self.events.push_back(ProxyEvent::Reply { call, reply });
        }
    }

    fn refuse(&mut self, call: CallId, req: &Request, code: Code, message: impl Into<String>) {
        let reply = Reply::refusal(req, pb::status(code, message));
        self.reply(call, reply);
    }

    fn serve(&mut self, call: CallId, client_id: &str, req: Request, now: u64) {
        match &req {
            Request::Heartbeat(h) => {
                let c = self.clients.entry(client_id.to_string()).or_default();
                c.last_seen = now;
                if let Some(g) = &h.group {
                    c.group = Some(g.name.clone());
                }
                self.reply(
                    call,
                    Reply::Heartbeat(pb::HeartbeatResponse {
                        status: Some(pb::ok()),
                    }),
                );
            }
            Request::NotifyClientTermination(_) => {
                if let Some(c) = self.clients.remove(client_id) {
                    for s in c.streams {
                        self.streams.remove(&s);
                    }
                }
                self.reply(
                    call,
                    Reply::NotifyClientTermination(pb::NotifyClientTerminationResponse {
                        status: Some(pb::ok()),
                    }),
                );
            }
            Request::AckMessage(r) => self.ack(call, r.clone(), now),
            Request::ChangeInvisibleDuration(r) => self.change_invisible(call, r.clone(), now),
            Request::ForwardToDeadLetterQueue(r) => self.forward_to_dlq(call, r.clone(), now),
            Request::EndTransaction(r) => self.end_transaction(call, r.clone()),
            Request::QueryRoute(_)
            | Request::SendMessage(_)
            | Request::QueryAssignment(_)
            | Request::ReceiveMessage(_) => {
                let topic = request_topic(&req).unwrap_or_default();
                // QueryRoute is what a client refreshes routes by: a route past its TTL is
                // asked again; the others take the route known.
                let fresh = matches!(req, Request::QueryRoute(_));
                self.with_route(call, topic, req, now, fresh);
            }
        }
    }

    /// Runs `req` once `topic`'s route is known (asking a name server if it is not, or if
    /// `fresh` and it is older than the TTL).
    fn with_route(&mut self, call: CallId, topic: String, req: Request, now: u64, fresh: bool) {
        if topic.is_empty() || rockfish_store::message_store::validate_topic(&topic).is_err() {
            return self.refuse(
                call,
                &req,
                Code::IllegalTopic,
                format!("topic {topic:?} is not a valid topic name"),
            );
        }
        let known = self
            .routes
            .get(&topic)
            .is_some_and(|(_, at)| !fresh || now < at + self.config.route_ttl_ms);
        if known {
            return self.routed(call, &topic, req, now);
        }
        self.ask_route(&topic, now);
        self.waiting.push((call, req, now + RPC_TIMEOUT_MS));
    }

    fn ask_route(&mut self, topic: &str, now: u64) {
        if self.asking.contains(topic) {
            return;
        }
        let Some(ns) = self.client.pick_namesrv() else {
            return;
        };
        self.asking.insert(topic.to_string());
        self.client.query_route(
            topic,
            ns,
            Rpc::Route {
                topic: topic.to_string(),
            },
            now + RPC_TIMEOUT_MS,
        );
    }

    /// A route arrived (or did not: `None`): the calls waiting for it run or fail.
    fn route_known(&mut self, topic: &str, route: Option<TopicRouteData>, now: u64) {
        self.asking.remove(topic);
        if let Some(r) = route {
            self.routes.insert(topic.to_string(), (r, now));
        }
        let (ready, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|(_, req, _)| request_topic(req).as_deref() == Some(topic));
        self.waiting = rest;
        for (call, req, _) in ready {
            if self.routes.contains_key(topic) {
                self.routed(call, topic, req, now);
            } else {
                self.refuse(
                    call,
                    &req,
                    Code::TopicNotFound,
                    format!("topic {topic} has no route"),
                );
            }
        }
        self.ask_waiting_policies(now);
    }

    fn routed(&mut self, call: CallId, topic: &str, req: Request, now: u64) {
        match req {
            Request::QueryRoute(r) => self.query_route(call, topic, r),
            Request::QueryAssignment(r) => self.query_assignment(call, topic, r),
            Request::SendMessage(r) => self.send(call, topic, r, now),
            Request::ReceiveMessage(r) => self.receive(call, topic, r, now),
            other => self.refuse(call, &other, Code::InternalServerError, "no route needed"),
        }
    }

    /// The topic's brokers with a master: (name, master address, queue data).
    fn brokers(&self, topic: &str) -> Vec<(String, String, crate::protocol::QueueData)> {
        let Some((route, _)) = self.routes.get(topic) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for q in &route.queue_datas {
            let Some(b) = route
                .broker_datas
                .iter()
                .find(|b| b.broker_name == q.broker_name)
            else {
                continue;
            };
            if let Some(addr) = b.master_addr() {
                out.push((q.broker_name.clone(), addr.to_string(), q.clone()));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    fn query_route(&mut self, call: CallId, topic: &str, r: pb::QueryRouteRequest) {
        let endpoints = r.endpoints.clone();
        let mut queues = Vec::new();
        for (name, _, q) in self.brokers(topic) {
            for id in 0..q.read_queue_nums.max(q.write_queue_nums) {
                let read = id < q.read_queue_nums && perm::readable(q.perm);
                let write = id < q.write_queue_nums && perm::writeable(q.perm);
                let permission = match (read, write) {
                    (true, true) => pb::Permission::ReadWrite,
                    (true, false) => pb::Permission::Read,
                    (false, true) => pb::Permission::Write,
                    (false, false) => pb::Permission::None,
                };
                queues.push(message_queue(
                    topic,
                    id as i32,
                    permission,
                    &name,
                    endpoints.clone(),
                ));
            }
        }
        if queues.is_empty() {
            return self.reply(
                call,
                Reply::QueryRoute(pb::QueryRouteResponse {
                    status: Some(pb::status(
                        Code::TopicNotFound,
                        format!("topic {topic} has no queue on a live master"),
                    )),
                    message_queues: vec![],
                }),
            );
        }
        self.reply(
            call,
            Reply::QueryRoute(pb::QueryRouteResponse {
                status: Some(pb::ok()),
                message_queues: queues,
            }),
        );
    }

    fn query_assignment(&mut self, call: CallId, topic: &str, r: pb::QueryAssignmentRequest) {
        let assignments: Vec<pb::Assignment> = self
            .brokers(topic)
            .into_iter()
            .filter(|(_, _, q)| q.read_queue_nums > 0 && perm::readable(q.perm))
            .map(|(name, _, _)| pb::Assignment {
                message_queue: Some(message_queue(
                    topic,
                    -1,
                    pb::Permission::ReadWrite,
                    &name,
                    r.endpoints.clone(),
                )),
            })
            .collect();
        let status = if assignments.is_empty() {
            pb::status(
                Code::Forbidden,
                format!("no readable queue of topic {topic}"),
            )
        } else {
            pb::ok()
        };
        self.reply(
            call,
            Reply::QueryAssignment(pb::QueryAssignmentResponse {
                status: Some(status),
                assignments,
            }),
        );
    }

    fn send(&mut self, call: CallId, topic: &str, r: pb::SendMessageRequest, now: u64) {
        let req = Request::SendMessage(r.clone());
        if r.messages.len() != 1 {
            return self.refuse(
                call,
                &req,
                Code::BadRequest,
                format!(
                    "one message per SendMessage (the SDKs send one), not {}",
                    r.messages.len()
                ),
            );
        }
        let m = r.messages.into_iter().next().expect("one");
        let out = match convert::outgoing(m, self.config.max_body_bytes) {
            Ok(o) => o,
            Err((code, why)) => return self.refuse(call, &req, code, why),
        };
        if out.topic != topic {
            return self.refuse(
                call,
                &req,
                Code::IllegalTopic,
                "the message's topic is not the request's",
            );
        }
        // Writable queues of live masters; a FIFO message's group picks one by hash.
        let queues: Vec<(String, u32)> = self
            .brokers(topic)
            .into_iter()
            .filter(|(_, _, q)| perm::writeable(q.perm))
            .flat_map(|(_, addr, q)| (0..q.write_queue_nums).map(move |id| (addr.clone(), id)))
            .collect();
        if queues.is_empty() {
            return self.refuse(
                call,
                &req,
                Code::Forbidden,
                format!("no writable queue of topic {topic}"),
            );
        }
        let pick = match &out.group {
            Some(g) => crc32fast::hash(g.as_bytes()) as usize % queues.len(),
            None => {
                self.next_queue = self.next_queue.wrapping_add(1);
                self.next_queue % queues.len()
            }
        };
        let (addr, queue_id) = queues[pick].clone();
        let opaque = self.client.opaque();
        let props = String::from_utf8(out.properties).expect("properties built from strings");
        let mut cmd = RemotingCommand::request(request::SEND_MESSAGE_V2, opaque)
            .with_ext("a", topic) // the producer group: the topic, as Apache's proxy names it
            .with_ext("b", topic)
            .with_ext("c", crate::broker::DEFAULT_TOPIC)
            .with_ext("d", 4)
            .with_ext("e", queue_id)
            .with_ext(
                "f",
                if out.transactional {
                    tx_flag::PREPARED
                } else {
                    0
                },
            )
            .with_ext("g", now)
            .with_ext("h", 0)
            .with_ext("i", props)
            .with_ext("j", 0)
            .with_ext("k", false)
            .with_ext("m", false);
        cmd.body = Bytes::from(out.body);
        if out.transactional {
            self.publishes(topic);
        }
        let rpc = Rpc::Send {
            call,
            message_id: out.message_id,
            addr: addr.clone(),
            transactional: out.transactional,
        };
        self.client.call(addr, cmd, rpc, now + RPC_TIMEOUT_MS);
    }

    /// A transactional producer publishes `topic`: the brokers must know the proxy as a
    /// producer of its group to send their check-backs here.
    fn publishes(&mut self, topic: &str) {
        let known = self.clients.values().any(|c| c.topics.contains(topic));
        if !known {
            self.clients
                .entry(String::new())
                .or_default()
                .topics
                .insert(topic.to_string());
        }
    }

    fn sent(
        &mut self,
        call: CallId,
        message_id: String,
        addr: String,
        transactional: bool,
        cmd: &RemotingCommand,
    ) {
        let ok = matches!(
            cmd.code,
            response::SUCCESS
                | response::FLUSH_DISK_TIMEOUT
                | response::FLUSH_SLAVE_TIMEOUT
                | response::SLAVE_NOT_AVAILABLE
        );
        let status = if ok && cmd.code == response::SUCCESS {
            pb::ok()
        } else {
            pb::status(
                convert::code_of(cmd.code),
                cmd.remark
                    .clone()
                    .unwrap_or_else(|| format!("broker answered code {}", cmd.code)),
            )
        };
        let offset = cmd
            .ext_opt::<i64>("queueOffset")
            .ok()
            .flatten()
            .unwrap_or(0);
        let transaction_id = if transactional && ok {
            let phys = cmd
                .ext("msgId")
                .and_then(crate::message::parse_offset_msg_id)
                .map(|(_, o)| o)
                .unwrap_or(0);
            TransactionId {
                addr,
                commit_log_offset: phys,
                table_offset: offset.max(0) as u64,
            }
            .encode()
        } else {
            String::new()
        };
        let entry = pb::SendResultEntry {
            status: Some(status.clone()),
            message_id,
            transaction_id,
            offset,
            recall_handle: String::new(),
        };
        self.reply(
            call,
            Reply::SendMessage(pb::SendMessageResponse {
                status: Some(status),
                entries: vec![entry],
            }),
        );
    }

    fn receive(&mut self, call: CallId, topic: &str, r: pb::ReceiveMessageRequest, now: u64) {
        let req = Request::ReceiveMessage(r.clone());
        let group = r.group.as_ref().map(|g| g.name.clone()).unwrap_or_default();
        if crate::broker::validate_group(&group).is_err() {
            return self.refuse(
                call,
                &req,
                Code::IllegalConsumerGroup,
                format!("group {group:?} is not a valid group name"),
            );
        }
        let broker = r
            .message_queue
            .as_ref()
            .and_then(|q| q.broker.as_ref())
            .map(|b| b.name.clone())
            .unwrap_or_default();
        let brokers = self.brokers(topic);
        let target = brokers
            .iter()
            .find(|(n, _, _)| *n == broker)
            .or_else(|| brokers.first())
            .map(|(n, a, _)| (n.clone(), a.clone()));
        let Some((broker, addr)) = target else {
            return self.refuse(
                call,
                &req,
                Code::TopicNotFound,
                format!("no live master of topic {topic}"),
            );
        };
        let invisible_ms = match (&r.invisible_duration, r.auto_renew) {
            (Some(d), false) => pb::ms_of(d),
            _ => self.config.push_invisible_ms,
        };
        if !(1_000..=crate::broker::pop::MAX_INVISIBLE_MS).contains(&invisible_ms) {
            return self.refuse(
                call,
                &req,
                Code::IllegalInvisibleTime,
                format!("invisible time {invisible_ms} ms is outside 1 s ..= 24 h"),
            );
        }
        let Some(policy) = self.groups.fresh(&group, now) else {
            self.groups.receives.push(WaitingReceive {
                group: group.clone(),
                call,
                topic: topic.to_string(),
                req: r,
            });
            return self.ask_policy(&group, &addr, now);
        };
        let poll_ms = r
            .long_polling_timeout
            .as_ref()
            .map_or(0, pb::ms_of)
            .min(self.config.max_long_polling_ms);
        let filter = r.filter_expression.clone().unwrap_or_default();
        let (exp_type, exp) = if filter.r#type == pb::FilterType::Sql as i32 {
            ("SQL92", filter.expression)
        } else {
            (
                "TAG",
                if filter.expression.is_empty() {
                    "*".to_string()
                } else {
                    filter.expression
                },
            )
        };
        let opaque = self.client.opaque();
        let mut cmd = RemotingCommand::request(request::POP_MESSAGE, opaque)
            .with_ext("consumerGroup", &group)
            .with_ext("topic", topic)
            .with_ext("queueId", -1)
            .with_ext(
                "maxMsgNums",
                r.batch_size
                    .clamp(1, crate::broker::pop::MAX_POP_MESSAGES as i32),
            )
            .with_ext("invisibleTime", invisible_ms)
            .with_ext("pollTime", poll_ms)
            .with_ext("bornTime", now)
            .with_ext("initMode", 0)
            .with_ext("expType", exp_type)
            .with_ext("exp", exp)
            // A FIFO group's receives are orderly pops: a queue's next messages wait until
            // those handed out are acked or their invisibility lapses.
            .with_ext("order", policy.fifo);
        if let Some(a) = &r.attempt_id {
            cmd = cmd.with_ext("attemptId", a);
        }
        let rpc = Rpc::Pop {
            call,
            pop: PopAsked {
                broker,
                addr: addr.clone(),
                invisible_ms,
                group,
            },
        };
        self.client.call(
            addr,
            cmd,
            rpc,
            now + poll_ms + POP_SLACK_MS + RPC_TIMEOUT_MS,
        );
    }

    fn popped(&mut self, call: CallId, pop: &PopAsked, cmd: &RemotingCommand, now: u64) {
        use pb::receive_message_response::Content;
        let mut frames = Vec::new();
        let status = |s: pb::Status| pb::ReceiveMessageResponse {
            content: Some(Content::Status(s)),
        };
        match cmd.code {
            response::SUCCESS => {}
            response::POLLING_TIMEOUT | response::PULL_NOT_FOUND | response::POLLING_FULL => {
                frames.push(status(pb::status(Code::MessageNotFound, "no new message")));
            }
            code => {
                frames.push(status(pb::status(
                    convert::code_of(code),
                    cmd.remark.clone().unwrap_or_default(),
                )));
            }
        }
        if frames.is_empty() {
            match self.popped_messages(pop, cmd) {
                Ok(msgs) if msgs.is_empty() => {
                    frames.push(status(pb::status(Code::MessageNotFound, "no new message")))
                }
                Ok(msgs) => {
                    frames.push(status(pb::ok()));
                    frames.extend(msgs.into_iter().map(|m| pb::ReceiveMessageResponse {
                        content: Some(Content::Message(m)),
                    }));
                }
                Err(e) => frames.push(status(pb::status(Code::InternalServerError, e))),
            }
        }
        frames.push(pb::ReceiveMessageResponse {
            content: Some(Content::DeliveryTimestamp(pb::timestamp_ms(now as i64))),
        });
        self.reply(call, Reply::ReceiveMessage(frames));
    }

    fn popped_messages(
        &self,
        pop: &PopAsked,
        cmd: &RemotingCommand,
    ) -> Result<Vec<pb::Message>, String> {
        let (broker, addr, group) = (pop.broker.as_str(), pop.addr.as_str(), pop.group.as_str());
        Ok(wire::popped(cmd, broker)?
            .into_iter()
            .map(|p| {
                let handle = Handle {
                    broker_name: broker.to_string(),
                    addr: addr.to_string(),
                    topic: wire::real_topic(&p.receipt.retry, p.msg.topic(), group),
                    queue_id: p.receipt.queue_id,
                    offset: p.receipt.offset.unwrap_or(p.msg.queue_offset()),
                    phys: p.msg.physical_offset(),
                    extra: p.extra,
                };
                convert::incoming(&p.msg, Some(handle.encode()), Some(pop.invisible_ms))
            })
            .collect())
    }

    fn ack(&mut self, call: CallId, r: pb::AckMessageRequest, now: u64) {
        let req = Request::AckMessage(r.clone());
        let group = r.group.as_ref().map(|g| g.name.clone()).unwrap_or_default();
        if r.entries.is_empty() || r.entries.len() > 1024 {
            return self.refuse(
                call,
                &req,
                Code::BadRequest,
                "an ack names 1..=1024 entries",
            );
        }
        let mut batch = AckBatch {
            entries: Vec::new(),
            waiting: 0,
        };
        for (index, e) in r.entries.iter().enumerate() {
            let mut result = pb::AckMessageResultEntry {
                message_id: e.message_id.clone(),
                receipt_handle: e.receipt_handle.clone(),
                status: None,
            };
            match Handle::decode(&e.receipt_handle) {
                Some(h) => {
                    let opaque = self.client.opaque();
                    let cmd =
                        wire::ack_request(opaque, &group, &h.topic, h.queue_id, &h.extra, h.offset);
                    self.client.call(
                        h.addr.clone(),
                        cmd,
                        Rpc::Ack { call, index },
                        now + RPC_TIMEOUT_MS,
                    );
                    batch.waiting += 1;
                }
                None => {
                    result.status = Some(pb::status(
                        Code::InvalidReceiptHandle,
                        "not a receipt handle this proxy issued",
                    ))
                }
            }
            batch.entries.push(result);
        }
        self.acks.insert(call, batch);
        self.ack_done(call);
    }

    /// One ack entry answered; the call is answered once all are.
    fn acked(&mut self, call: CallId, index: usize, status: pb::Status) {
        if let Some(b) = self.acks.get_mut(&call) {
            if let Some(e) = b.entries.get_mut(index) {
                e.status = Some(status);
            }
            b.waiting = b.waiting.saturating_sub(1);
        }
        self.ack_done(call);
    }

    fn ack_done(&mut self, call: CallId) {
        if self.acks.get(&call).is_none_or(|b| b.waiting > 0) {
            return;
        }
        let b = self.acks.remove(&call).expect("present");
        let codes: BTreeSet<i32> = b
            .entries
            .iter()
            .filter_map(|e| e.status.as_ref().map(|s| s.code))
            .collect();
        let status = match codes.len() {
            1 => b.entries[0].status.clone().unwrap_or_else(pb::ok),
            _ => pb::status(Code::MultipleResults, "entries have different results"),
        };
        self.reply(
            call,
            Reply::AckMessage(pb::AckMessageResponse {
                status: Some(status),
                entries: b.entries,
            }),
        );
    }

    fn change_invisible(&mut self, call: CallId, r: pb::ChangeInvisibleDurationRequest, now: u64) {
        let req = Request::ChangeInvisibleDuration(r.clone());
        let group = r.group.as_ref().map(|g| g.name.clone()).unwrap_or_default();
        let Some(h) = Handle::decode(&r.receipt_handle) else {
            return self.refuse(
                call,
                &req,
                Code::InvalidReceiptHandle,
                "not a receipt handle this proxy issued",
            );
        };
        let invisible_ms = r.invisible_duration.as_ref().map_or(0, pb::ms_of);
        if invisible_ms > crate::broker::pop::MAX_INVISIBLE_MS {
            return self.refuse(
                call,
                &req,
                Code::IllegalInvisibleTime,
                format!("invisible time {invisible_ms} ms is over 24 h"),
            );
        }
        let opaque = self.client.opaque();
        let cmd = RemotingCommand::request(request::CHANGE_MESSAGE_INVISIBLETIME, opaque)
            .with_ext("consumerGroup", &group)
            .with_ext("topic", &h.topic)
            .with_ext("queueId", h.queue_id)
            .with_ext("extraInfo", &h.extra)
            .with_ext("offset", h.offset)
            .with_ext("invisibleTime", invisible_ms);
        self.client.call(
            h.addr.clone(),
            cmd,
            Rpc::Change { call, handle: h },
            now + RPC_TIMEOUT_MS,
        );
    }

    fn changed(&mut self, call: CallId, h: Handle, cmd: &RemotingCommand) {
        let reply = |status: pb::Status, receipt_handle: String| {
            Reply::ChangeInvisibleDuration(pb::ChangeInvisibleDurationResponse {
                status: Some(status),
                receipt_handle,
            })
        };
        if cmd.code != response::SUCCESS {
            let s = pb::status(
                convert::code_of(cmd.code),
                cmd.remark.clone().unwrap_or_default(),
            );
            return self.reply(call, reply(s, String::new()));
        }
        let field = |k: &str| cmd.ext(k).and_then(|v| v.parse::<i64>().ok());
        let rebuilt = match (field("popTime"), field("invisibleTime"), field("reviveQid")) {
            (Some(pt), Some(it), Some(q)) => {
                wire::changed_receipt(&h.extra, &h.topic, pt, it, q as i32)
            }
            _ => Err("the broker's answer lacks popTime, invisibleTime or reviveQid".into()),
        };
        match rebuilt {
            Ok(extra) => {
                let handle = Handle { extra, ..h };
                self.reply(call, reply(pb::ok(), handle.encode()));
            }
            Err(e) => self.reply(
                call,
                reply(pb::status(Code::InternalServerError, e), String::new()),
            ),
        }
    }

    fn forward_to_dlq(
        &mut self,
        call: CallId,
        r: pb::ForwardMessageToDeadLetterQueueRequest,
        now: u64,
    ) {
        let req = Request::ForwardToDeadLetterQueue(r.clone());
        let group = r.group.as_ref().map(|g| g.name.clone()).unwrap_or_default();
        let topic = r.topic.as_ref().map(|t| t.name.clone()).unwrap_or_default();
        let Some(h) = Handle::decode(&r.receipt_handle) else {
            return self.refuse(
                call,
                &req,
                Code::InvalidReceiptHandle,
                "not a receipt handle this proxy issued",
            );
        };
        let opaque = self.client.opaque();
        let cmd = RemotingCommand::request(request::CONSUMER_SEND_MSG_BACK, opaque)
            .with_ext("group", &group)
            .with_ext("offset", h.phys)
            .with_ext("delayLevel", -1)
            .with_ext("originMsgId", &r.message_id)
            .with_ext("originTopic", &topic)
            .with_ext("unitMode", false)
            .with_ext("maxReconsumeTimes", r.max_delivery_attempts.max(1) - 1);
        self.client.call(
            h.addr.clone(),
            cmd,
            Rpc::SendBack {
                call,
                handle: h,
                group,
            },
            now + RPC_TIMEOUT_MS,
        );
    }

    fn sent_back(
        &mut self,
        call: CallId,
        h: Handle,
        group: String,
        cmd: &RemotingCommand,
        now: u64,
    ) {
        if cmd.code != response::SUCCESS {
            let s = pb::status(
                convert::code_of(cmd.code),
                cmd.remark.clone().unwrap_or_default(),
            );
            return self.reply(
                call,
                Reply::ForwardToDeadLetterQueue(pb::ForwardMessageToDeadLetterQueueResponse {
                    status: Some(s),
                }),
            );
        }
        // Stored in the dead-letter topic: the popped copy is decided.
        let opaque = self.client.opaque();
        let ack = wire::ack_request(opaque, &group, &h.topic, h.queue_id, &h.extra, h.offset);
        self.client.call(
            h.addr.clone(),
            ack,
            Rpc::DlqAck { call },
            now + RPC_TIMEOUT_MS,
        );
    }

    fn end_transaction(&mut self, call: CallId, r: pb::EndTransactionRequest) {
        let req = Request::EndTransaction(r.clone());
        let Some(t) = TransactionId::decode(&r.transaction_id) else {
            return self.refuse(
                call,
                &req,
                Code::InvalidTransactionId,
                "not a transaction id this proxy issued",
            );
        };
        let state = match pb::TransactionResolution::try_from(r.resolution) {
            Ok(pb::TransactionResolution::Commit) => tx_flag::COMMIT,
            Ok(pb::TransactionResolution::Rollback) => tx_flag::ROLLBACK,
            // Unknown: the broker asks again later.
            _ => {
                return self.reply(
                    call,
                    Reply::EndTransaction(pb::EndTransactionResponse {
                        status: Some(pb::ok()),
                    }),
                );
            }
        };
        let topic = r.topic.as_ref().map(|t| t.name.clone()).unwrap_or_default();
        let opaque = self.client.opaque();
        let mut cmd = RemotingCommand::request(request::END_TRANSACTION, opaque)
            .with_ext("producerGroup", &topic)
            .with_ext("tranStateTableOffset", t.table_offset)
            .with_ext("commitLogOffset", t.commit_log_offset)
            .with_ext("commitOrRollback", state)
            .with_ext(
                "fromTransactionCheck",
                r.source == pb::TransactionSource::SourceServerCheck as i32,
            )
            .with_ext("msgId", &r.message_id)
            .with_ext("transactionId", &r.transaction_id);
        cmd.flag |= crate::remoting::command::FLAG_ONEWAY;
        self.client.send(t.addr, cmd);
        self.reply(
            call,
            Reply::EndTransaction(pb::EndTransactionResponse {
                status: Some(pb::ok()),
            }),
        );
    }

    /// A Telemetry stream opened by `client_id`.
    pub fn on_stream_open(&mut self, stream: StreamId, client_id: &str, now: u64) -> bool {
        if !self.clients.contains_key(client_id) && self.clients.len() >= self.config.max_clients {
            return false;
        }
        let c = self.clients.entry(client_id.to_string()).or_default();
        c.streams.insert(stream);
        c.last_seen = now;
        self.streams.insert(stream, client_id.to_string());
        true
    }

    pub fn on_stream_closed(&mut self, stream: StreamId) {
        if let Some(id) = self.streams.remove(&stream)
            && let Some(c) = self.clients.get_mut(&id)
        {
            c.streams.remove(&stream);
        }
    }

    /// A command a client wrote on its Telemetry stream.
    pub fn on_telemetry(&mut self, stream: StreamId, cmd: pb::TelemetryCommand, now: u64) {
        let Some(client_id) = self.streams.get(&stream).cloned() else {
            return;
        };
        let Some(pb::telemetry_command::Command::Settings(s)) = cmd.command else {
            return; // answers to commands the proxy never sends
        };
        let c = self.clients.entry(client_id).or_default();
        c.last_seen = now;
        c.kind = s.client_type.unwrap_or_default();
        match &s.pub_sub {
            Some(pb::settings::PubSub::Publishing(p)) => {
                c.topics = p.topics.iter().map(|t| t.name.clone()).collect();
            }
            Some(pb::settings::PubSub::Subscription(sub)) => {
                c.group = sub.group.as_ref().map(|g| g.name.clone());
            }
            None => {}
        }
        let group = match &s.pub_sub {
            Some(pb::settings::PubSub::Subscription(sub)) => {
                sub.group.as_ref().map(|g| g.name.clone())
            }
            _ => None,
        };
        match group {
            // A consumer's settings say whether its group is FIFO: answered once a broker
            // told (Java's push consumer picks its consume service by the first answer).
            Some(g)
                if self.groups.fresh(&g, now).is_none()
                    && crate::broker::validate_group(&g).is_ok()
                    && self.groups.settings.len() < self.config.max_clients =>
            {
                self.groups.settings.push(WaitingSettings {
                    group: g,
                    stream,
                    settings: s,
                    deadline: now + RPC_TIMEOUT_MS,
                });
                self.ask_waiting_policies(now);
            }
            Some(g) => {
                let policy = self.groups.fresh(&g, now).unwrap_or_default();
                self.answer_settings(stream, s, policy, now);
            }
            None => self.answer_settings(stream, s, GroupPolicy::default(), now),
        }
        self.beat(now);
    }

    fn answer_settings(
        &mut self,
        stream: StreamId,
        s: pb::Settings,
        policy: GroupPolicy,
        now: u64,
    ) {
        let reply = settings::reply(s, &self.config, policy);
        let cmd = Box::new(pb::TelemetryCommand {
            status: Some(pb::ok()),
            command: Some(pb::telemetry_command::Command::Settings(reply)),
        });
        if self.settings_again.len() < self.config.max_clients {
            self.settings_again
                .push_back((now + SETTINGS_AGAIN_MS, stream, cmd.clone()));
        }
        self.events.push_back(ProxyEvent::Telemetry { stream, cmd });
    }

    /// Asks a broker for `group`'s policy (once at a time).
    fn ask_policy(&mut self, group: &str, addr: &str, now: u64) {
        if !self.groups.asking.insert(group.to_string()) {
            return;
        }
        let cmd =
            RemotingCommand::request(request::GET_SUBSCRIPTIONGROUP_CONFIG, self.client.opaque())
                .with_ext("group", group);
        let rpc = Rpc::Group {
            group: group.to_string(),
        };
        self.client
            .call(addr.to_string(), cmd, rpc, now + RPC_TIMEOUT_MS);
    }

    /// For settings answers waiting on a group nobody is asking for: asks a master of a
    /// topic the client subscribes, or that topic's route first.
    fn ask_waiting_policies(&mut self, now: u64) {
        let mut asks = Vec::new();
        let mut routes = Vec::new();
        for w in &self.groups.settings {
            if self.groups.asking.contains(&w.group) {
                continue;
            }
            let topics = subscribed_topics(&w.settings);
            let master = topics
                .iter()
                .find_map(|t| self.brokers(t).into_iter().next().map(|(_, a, _)| a));
            match (master, topics.first()) {
                (Some(addr), _) => asks.push((w.group.clone(), addr)),
                (None, Some(t)) if rockfish_store::message_store::validate_topic(t).is_ok() => {
                    routes.push(t.clone())
                }
                // Nothing to ask: answered with the default at its deadline.
                (None, _) => {}
            }
        }
        for (group, addr) in asks {
            self.ask_policy(&group, &addr, now);
        }
        for t in routes {
            self.ask_route(&t, now);
        }
    }

    /// A broker told `group`'s policy: what waited for it goes on.
    fn policy_known(&mut self, group: &str, policy: GroupPolicy, now: u64) {
        self.groups.learned(group, policy, now);
        let (receives, settings) = self.groups.take_waiting(group);
        for w in settings {
            self.answer_settings(w.stream, w.settings, policy, now);
        }
        for w in receives {
            self.receive(w.call, &w.topic, w.req, now);
        }
    }

    /// No broker told `group`'s policy: its receives fail (the client receives again), its
    /// settings are answered with the default (the client must start).
    fn policy_unknown(&mut self, group: &str, code: Code, why: &str, now: u64) {
        self.groups.asking.remove(group);
        let (receives, settings) = self.groups.take_waiting(group);
        for w in settings {
            self.answer_settings(w.stream, w.settings, GroupPolicy::default(), now);
        }
        for w in receives {
            let req = Request::ReceiveMessage(w.req);
            self.refuse(
                w.call,
                &req,
                code,
                format!("group {group}'s policy is unknown: {why}"),
            );
        }
    }

    /// HEART_BEAT to every known broker naming the producer groups (topics) of clients that
    /// publish: a broker's check-back of their transactions then comes here.
    fn beat(&mut self, now: u64) {
        self.next_beat = now + HEARTBEAT_MS;
        let groups: BTreeSet<String> = self
            .clients
            .values()
            .flat_map(|c| c.topics.iter().cloned())
            .collect();
        if groups.is_empty() {
            return;
        }
        let data = HeartbeatData {
            client_id: self.config.client_id.clone(),
            producer_data_set: groups
                .into_iter()
                .map(|g| ProducerData { group_name: g })
                .collect(),
            consumer_data_set: vec![],
        };
        let Ok(body) = serde_json::to_vec(&data) else {
            return;
        };
        let addrs: BTreeSet<String> = self
            .routes
            .values()
            .flat_map(|(r, _)| {
                r.broker_datas
                    .iter()
                    .filter_map(|b| b.master_addr().map(String::from))
            })
            .collect();
        self.client.heartbeat(
            addrs,
            &Bytes::from(body),
            Some((Rpc::Beat, now + RPC_TIMEOUT_MS)),
        );
    }

    /// A broker's check-back: to a client publishing the topic, over its Telemetry stream.
    fn check_transaction(&mut self, from: &str, cmd: &RemotingCommand) {
        let (Ok(Some(table)), Ok(Some(phys))) = (
            cmd.ext_opt::<u64>("tranStateTableOffset"),
            cmd.ext_opt::<u64>("commitLogOffset"),
        ) else {
            return;
        };
        let Ok(mut msgs) = decode_messages(&cmd.body) else {
            return;
        };
        if msgs.len() != 1 {
            return;
        }
        let m = msgs.remove(0);
        let stream = self
            .clients
            .values()
            .filter(|c| c.topics.contains(m.topic()))
            .flat_map(|c| c.streams.iter().copied())
            .next();
        let Some(stream) = stream else {
            tracing::debug!(
                topic = m.topic(),
                "a transaction check-back, but no client publishing its topic is connected"
            );
            return;
        };
        let transaction_id = TransactionId {
            addr: from.to_string(),
            commit_log_offset: phys,
            table_offset: table,
        }
        .encode();
        let message = convert::incoming(&m, None, None);
        self.events.push_back(ProxyEvent::Telemetry {
            stream,
            cmd: Box::new(pb::TelemetryCommand {
                status: Some(pb::ok()),
                command: Some(
                    pb::telemetry_command::Command::RecoverOrphanedTransactionCommand(
                        pb::RecoverOrphanedTransactionCommand {
                            message: Some(message),
                            transaction_id,
                        },
                    ),
                ),
            }),
        });
    }

    fn fail(&mut self, rpc: Rpc, code: Code, why: String, now: u64) {
        match rpc {
            Rpc::Route { topic } => self.route_known(&topic, None, now),
            Rpc::Send { call, .. } => {
                let s = pb::status(code, why);
                let reply = Reply::SendMessage(pb::SendMessageResponse {
                    status: Some(s),
                    entries: vec![],
                });
                self.reply(call, reply);
            }
            Rpc::Pop { call, .. } => {
                use pb::receive_message_response::Content;
                let frames = vec![
                    pb::ReceiveMessageResponse {
                        content: Some(Content::Status(pb::status(code, why))),
                    },
                    pb::ReceiveMessageResponse {
                        content: Some(Content::DeliveryTimestamp(pb::timestamp_ms(now as i64))),
                    },
                ];
                self.reply(call, Reply::ReceiveMessage(frames));
            }
            Rpc::Ack { call, index } => self.acked(call, index, pb::status(code, why)),
            Rpc::Change { call, .. } => {
                let r = pb::ChangeInvisibleDurationResponse {
                    status: Some(pb::status(code, why)),
                    receipt_handle: String::new(),
                };
                self.reply(call, Reply::ChangeInvisibleDuration(r));
            }
            Rpc::SendBack { call, .. } | Rpc::DlqAck { call } => {
                let r = pb::ForwardMessageToDeadLetterQueueResponse {
                    status: Some(pb::status(code, why)),
                };
                self.reply(call, Reply::ForwardToDeadLetterQueue(r));
            }
            Rpc::Beat => {}
            Rpc::Group { group } => self.policy_unknown(&group, code, &why, now),
        }
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
                let route = (cmd.code == response::SUCCESS)
                    .then(|| decode_body::<TopicRouteData>(&cmd.body).ok())
                    .flatten();
                self.route_known(&topic, route, now);
            }
            Rpc::Send {
                call,
                message_id,
                addr,
                transactional,
            } => self.sent(call, message_id, addr, transactional, &cmd),
            Rpc::Pop { call, pop } => self.popped(call, &pop, &cmd, now),
            Rpc::Ack { call, index } => {
                let s = if cmd.code == response::SUCCESS {
                    pb::ok()
                } else {
                    pb::status(
                        convert::code_of(cmd.code),
                        cmd.remark.clone().unwrap_or_default(),
                    )
                };
                self.acked(call, index, s);
            }
            Rpc::Change { call, handle } => self.changed(call, handle, &cmd),
            Rpc::SendBack {
                call,
                handle,
                group,
            } => self.sent_back(call, handle, group, &cmd, now),
            Rpc::DlqAck { call } => {
                // Answered OK either way: the message is in the dead-letter topic; an ack
                // that failed only lets the popped copy come back (and be forwarded again).
                let r = pb::ForwardMessageToDeadLetterQueueResponse {
                    status: Some(pb::ok()),
                };
                self.reply(call, Reply::ForwardToDeadLetterQueue(r));
            }
            Rpc::Beat => {}
            Rpc::Group { group } => {
                // A group no broker holds yet is created with the defaults by its first pop.
                let policy = (cmd.code == response::SUCCESS)
                    .then(|| decode_body::<SubscriptionGroupConfig>(&cmd.body).ok())
                    .flatten()
                    .map_or_else(GroupPolicy::default, |c| GroupPolicy::of(&c));
                self.policy_known(&group, policy, now);
            }
        }
    }

    pub fn on_request(&mut self, from: &str, cmd: RemotingCommand, _now: u64) {
        if cmd.code == request::CHECK_TRANSACTION_STATE && !cmd.is_response() {
            self.check_transaction(from, &cmd);
        }
    }

    pub fn on_timeout(&mut self, now: u64) {
        // The client instance's own heartbeat and route refresh are not the proxy's (it
        // heartbeats in `beat`, asks routes on demand): put off for good, never left due (the
        // timer would fire at once, again and again).
        let _ = self.client.heartbeat_due(now);
        let _ = self.client.route_refresh_due(now);
        for rpc in self.client.take_expired(now) {
            self.fail(
                rpc,
                Code::ProxyTimeout,
                "the broker did not answer in time".into(),
                now,
            );
        }
        let (late, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|w| w.2 <= now);
        self.waiting = keep;
        for (call, req, _) in late {
            self.refuse(
                call,
                &req,
                Code::ProxyTimeout,
                "no name server answered for the topic's route",
            );
        }
        for w in self.groups.take_late_settings(now) {
            self.answer_settings(w.stream, w.settings, GroupPolicy::default(), now);
        }
        while self
            .settings_again
            .front()
            .is_some_and(|(at, _, _)| *at <= now)
        {
            let (_, stream, cmd) = self.settings_again.pop_front().expect("checked");
            if self.streams.contains_key(&stream) {
                self.events.push_back(ProxyEvent::Telemetry { stream, cmd });
            }
        }
        if now >= self.next_beat {
            self.beat(now);
            let stale = |c: &Client| c.streams.is_empty() && now > c.last_seen + CLIENT_EXPIRE_MS;
            self.clients.retain(|id, c| id.is_empty() || !stale(c));
        }
    }

    pub fn on_peer_lost(&mut self, addr: &str, now: u64) {
        for rpc in self.client.take_calls_to(addr) {
            self.fail(
                rpc,
                Code::InternalServerError,
                format!("connection to {addr} lost"),
                now,
            );
        }
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.client.poll_output()
    }

    pub fn poll_timeout(&self) -> Option<u64> {
        let mut t = self.client.next_timeout().min(self.next_beat);
        if let Some((at, _, _)) = self.settings_again.front() {
            t = t.min(*at);
        }
        if let Some(at) = self.groups.next_deadline() {
            t = t.min(at);
        }
        Some(
            self.waiting
                .iter()
                .map(|w| w.2)
                .min()
                .map_or(t, |w| w.min(t)),
        )
    }

    pub fn poll_event(&mut self) -> Option<ProxyEvent> {
        self.events.pop_front()
    }

    /// Clients known (tests, metrics).
    pub fn clients(&self) -> usize {
        self.clients.len()
    }
}

/// The topics a consumer's settings subscribe.
fn subscribed_topics(s: &pb::Settings) -> Vec<String> {
    match &s.pub_sub {
        Some(pb::settings::PubSub::Subscription(sub)) => sub
            .subscriptions
            .iter()
            .filter_map(|e| e.topic.as_ref().map(|t| t.name.clone()))
            .collect(),
        _ => Vec::new(),
    }
}

fn request_topic(req: &Request) -> Option<String> {
    let name = |r: &Option<pb::Resource>| r.as_ref().map(|t| t.name.clone());
    match req {
        Request::QueryRoute(r) => name(&r.topic),
        Request::QueryAssignment(r) => name(&r.topic),
        Request::SendMessage(r) => r.messages.first().and_then(|m| name(&m.topic)),
        Request::ReceiveMessage(r) => r.message_queue.as_ref().and_then(|q| name(&q.topic)),
        _ => None,
    }
}

fn message_queue(
    topic: &str,
    id: i32,
    permission: pb::Permission,
    broker: &str,
    endpoints: Option<pb::Endpoints>,
) -> pb::MessageQueue {
    pb::MessageQueue {
        topic: Some(pb::Resource {
            name: topic.to_string(),
            resource_namespace: String::new(),
        }),
        id,
        permission: permission as i32,
        broker: Some(pb::Broker {
            name: broker.to_string(),
            id: 0,
            endpoints,
        }),
        accept_message_types: vec![
            pb::MessageType::Normal as i32,
            pb::MessageType::Fifo as i32,
            pb::MessageType::Delay as i32,
            pb::MessageType::Transaction as i32,
        ],
    }
}

impl ClientMachine for Proxy {
    type Event = ProxyEvent;
    fn on_command(&mut self, cmd: RemotingCommand, now: u64) {
        Proxy::on_command(self, cmd, now)
    }
    fn on_request(&mut self, from: &str, cmd: RemotingCommand, now: u64) {
        Proxy::on_request(self, from, cmd, now)
    }
    fn on_timeout(&mut self, now: u64) {
        Proxy::on_timeout(self, now)
    }
    fn on_peer_lost(&mut self, addr: &str, now: u64) {
        Proxy::on_peer_lost(self, addr, now)
    }
    fn poll_output(&mut self) -> Option<Output> {
        Proxy::poll_output(self)
    }
    fn poll_timeout(&self) -> Option<u64> {
        Proxy::poll_timeout(self)
    }
    fn poll_event(&mut self) -> Option<ProxyEvent> {
        Proxy::poll_event(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_proxy_sleeps_until_its_next_heartbeat() {
        let mut p = Proxy::new(ProxyConfig::default(), 1_000);
        p.on_timeout(1_000);
        assert!(
            p.poll_timeout().unwrap() > 1_000,
            "an idle proxy's timer would spin"
        );
    }

    #[test]
    fn a_call_without_a_valid_topic_is_refused_at_once() {
        let mut p = Proxy::new(ProxyConfig::default(), 0);
        let req = Request::QueryRoute(pb::QueryRouteRequest {
            topic: None,
            endpoints: None,
        });
        p.on_call(7, "c", req, 0);
        match p.poll_event() {
            Some(ProxyEvent::Reply {
                call: 7,
                reply: Reply::QueryRoute(r),
            }) => assert_eq!(r.status.unwrap().code, Code::IllegalTopic as i32),
            other => panic!("{other:?}"),
        }
        assert!(p.poll_output().is_none(), "nothing asked of a name server");
    }
}

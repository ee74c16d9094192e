//! `NameServer`: RocketMQ's route registry (RouteInfoManager) as a Sans-IO machine.
//!
//! Brokers register with every name server every 30 s; a scan every 10 s drops a broker
//! silent for 120 s (all configurable), and a broker whose connection closes is dropped at
//! once. Name servers never talk to each other. Clients ask for a topic's route, the
//! cluster's brokers, or the topic list.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;

use crate::machine::{ConnId, Output};
use crate::protocol::{
    BrokerData, ClusterInfo, DataVersion, KvTable, MASTER_ID, QueueData, RegisterBrokerBody,
    TopicConfig, TopicList, TopicRouteData, request_body, to_body,
};
use crate::remoting::codes::{request, response};
use crate::remoting::{FieldError, RemotingCommand};

/// The KV namespace whose entries are returned with routes (RocketMQ's ORDER_TOPIC_CONFIG).
pub const ORDER_TOPIC_CONFIG: &str = "ORDER_TOPIC_CONFIG";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameServerConfig {
    /// A broker not heard from for this long is dropped (RocketMQ: 120 s).
    pub broker_expire_ms: u64,
    /// How often to look for silent brokers (RocketMQ: 10 s).
    pub scan_interval_ms: u64,
    /// Caps on what outside input can grow.
    pub limits: NameServerLimits,
}

impl Default for NameServerConfig {
    fn default() -> Self {
        NameServerConfig {
            broker_expire_ms: 120_000,
            scan_interval_ms: 10_000,
            limits: NameServerLimits::default(),
        }
    }
}

/// The name server's caps. Past one a request is refused with an error naming it (a
/// registration that would add a broker or topics, a KV entry), and a connection over the
/// cap is closed as it is accepted. Far above a real cluster, far below exhausting a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameServerLimits {
    /// Connections open at once.
    pub max_connections: usize,
    /// Broker addresses registered at once.
    pub max_brokers: usize,
    /// Topics in the route table (all brokers together).
    pub max_topics: usize,
    /// KV config entries (all namespaces together).
    pub max_kv_entries: usize,
}

impl Default for NameServerLimits {
    fn default() -> Self {
        NameServerLimits {
            max_connections: 10_000,
            max_brokers: 1_024,
            max_topics: 200_000,
            max_kv_entries: 10_000,
        }
    }
}

#[derive(Debug, Clone)]
struct BrokerLive {
    last_update: u64,
    data_version: DataVersion,
    conn: ConnId,
    ha_server_addr: String,
}

pub struct NameServer {
    config: NameServerConfig,
    /// topic -> broker name -> queues.
    topic_queue_table: BTreeMap<String, BTreeMap<String, QueueData>>,
    broker_addr_table: BTreeMap<String, BrokerData>,
    cluster_addr_table: BTreeMap<String, BTreeSet<String>>,
    /// broker address -> liveness.
    broker_live_table: BTreeMap<String, BrokerLive>,
    kv: BTreeMap<String, BTreeMap<String, String>>,
    kv_entries: usize,
    conns: BTreeSet<ConnId>,
    next_scan: u64,
    outputs: VecDeque<Output>,
    /// RocketMQ 5's controller, embedded (enableControllerInNamesrv): served on the same
    /// port, its requests (BROKER_HEARTBEAT, CONTROLLER_*, raft messages) handed to it.
    controller: Option<Box<crate::controller::Controller>>,
}

/// Whether a request is the embedded controller's.
fn is_controller_request(code: i32) -> bool {
    code == request::BROKER_HEARTBEAT
        || (request::CONTROLLER_ALTER_SYNC_STATE_SET..=request::CONTROLLER_GET_REPLICA_INFO)
            .contains(&code)
        || code == request::CONTROLLER_RAFT_MESSAGE
}

impl NameServer {
    pub fn new(config: NameServerConfig, now: u64) -> Self {
        let next_scan = now + config.scan_interval_ms;
        NameServer {
            config,
            topic_queue_table: BTreeMap::new(),
            broker_addr_table: BTreeMap::new(),
            cluster_addr_table: BTreeMap::new(),
            broker_live_table: BTreeMap::new(),
            kv: BTreeMap::new(),
            kv_entries: 0,
            conns: BTreeSet::new(),
            next_scan,
            outputs: VecDeque::new(),
            controller: None,
        }
    }

    /// A name server with a controller embedded (enableControllerInNamesrv).
    pub fn with_controller(
        config: NameServerConfig,
        controller: crate::controller::Controller,
        now: u64,
    ) -> Self {
        NameServer {
            controller: Some(Box::new(controller)),
            ..NameServer::new(config, now)
        }
    }

    /// The embedded controller, if any.
    pub fn controller(&self) -> Option<&crate::controller::Controller> {
        self.controller.as_deref()
    }

    /// The next output for the driver.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs
            .pop_front()
            .or_else(|| self.controller.as_mut().and_then(|c| c.poll_output()))
    }

    /// When the machine next wants `on_timeout`.
    pub fn poll_timeout(&self) -> Option<u64> {
        let c = self.controller.as_ref().and_then(|c| c.poll_timeout());
        Some(c.map_or(self.next_scan, |c| c.min(self.next_scan)))
    }

    /// A persist of the embedded controller finished.
    pub fn on_persisted(&mut self, token: u64, result: Result<(), String>, now: u64) {
        match self.controller.as_mut() {
            Some(c) => c.on_persisted(token, result, now),
            None => crate::machine::refuse(&format!(
                "on_persisted({token}) of a name server without a controller"
            )),
        }
    }

    /// Time passed: runs the expiry scan when it is due.
    pub fn on_timeout(&mut self, now: u64) {
        if let Some(c) = self.controller.as_mut() {
            c.on_timeout(now);
        }
        if now < self.next_scan {
            return;
        }
        self.next_scan = now + self.config.scan_interval_ms;
        if crate::buggify::bug("namesrv.never-expires") {
            return; // a deliberately broken name server, for the simulator's checkers
        }
        let expired: Vec<(String, ConnId)> = self
            .broker_live_table
            .iter()
            .filter(|(_, live)| now.saturating_sub(live.last_update) > self.config.broker_expire_ms)
            .map(|(addr, live)| (addr.clone(), live.conn))
            .collect();
        for (addr, conn) in expired {
            tracing::warn!(broker = %addr, "broker expired: no registration for {} ms", self.config.broker_expire_ms);
            self.outputs.push_back(Output::Close {
                conn,
                reason: format!("broker {addr} expired"),
            });
            self.remove_broker_addr(&addr);
        }
    }

    /// A connection opened: past the cap it is closed at once.
    pub fn on_connect(&mut self, conn: ConnId, now: u64) {
        if self.conns.len() < self.config.limits.max_connections {
            self.conns.insert(conn);
            if let Some(c) = self.controller.as_mut() {
                c.on_connect(conn, now);
            }
            return;
        }
        let max = self.config.limits.max_connections;
        tracing::warn!(
            conn = conn.0,
            max,
            "too many connections; closing the new one"
        );
        self.outputs.push_back(Output::Close {
            conn,
            reason: format!("too many connections (limit {max})"),
        });
    }

    /// A connection closed: brokers registered over it are gone (RocketMQ does the same).
    pub fn on_disconnect(&mut self, conn: ConnId, now: u64) {
        self.conns.remove(&conn);
        if let Some(c) = self.controller.as_mut() {
            c.on_disconnect(conn, now);
        }
        let gone: Vec<String> = self
            .broker_live_table
            .iter()
            .filter(|(_, l)| l.conn == conn)
            .map(|(a, _)| a.clone())
            .collect();
        for addr in gone {
            tracing::info!(broker = %addr, "broker connection closed");
            self.remove_broker_addr(&addr);
        }
    }

    /// A command arrived on `conn`.
    pub fn on_command(&mut self, conn: ConnId, cmd: RemotingCommand, now: u64) {
        if cmd.is_response() {
            return; // the name server sends no requests, so no response is awaited
        }
        if is_controller_request(cmd.code)
            && let Some(c) = self.controller.as_mut()
        {
            c.on_command(conn, cmd, now);
            return;
        }
        let reply = match self.handle(conn, &cmd, now) {
            Ok(reply) => reply,
            Err(e) => {
                RemotingCommand::response_to(&cmd, response::SYSTEM_ERROR, Some(e.to_string()))
            }
        };
        if !cmd.is_oneway() {
            self.outputs.push_back(Output::Send { conn, cmd: reply });
        }
    }

    fn handle(
        &mut self,
        conn: ConnId,
        cmd: &RemotingCommand,
        now: u64,
    ) -> Result<RemotingCommand, FieldError> {
        let ok = |body: Bytes| {
            RemotingCommand::response_to(cmd, response::SUCCESS, None).with_body(body)
        };
        match cmd.code {
            request::REGISTER_BROKER => self.register_broker(conn, cmd, now),
            request::UNREGISTER_BROKER => {
                let addr: String = cmd.ext_req("brokerAddr")?;
                let name: String = cmd.ext_req("brokerName")?;
                let id: u64 = cmd.ext_req("brokerId")?;
                // Only that id of that broker: a stale unregister must not drop a successor.
                if self
                    .broker_addr_table
                    .get(&name)
                    .and_then(|b| b.broker_addrs.get(&id))
                    == Some(&addr)
                {
                    self.remove_broker_addr(&addr);
                }
                Ok(ok(Bytes::new()))
            }
            request::GET_ROUTEINFO_BY_TOPIC => {
                let topic: String = cmd.ext_req("topic")?;
                // As if the route had just expired: clients must keep the route they have.
                let route = self
                    .route(&topic)
                    .filter(|_| !crate::buggify!("namesrv.route.missing"));
                Ok(match route {
                    Some(route) => ok(to_body(&route)),
                    None => RemotingCommand::response_to(
                        cmd,
                        response::TOPIC_NOT_EXIST,
                        Some(format!(
                            "No topic route info in name server for the topic: {topic}"
                        )),
                    ),
                })
            }
            request::GET_BROKER_CLUSTER_INFO => Ok(ok(to_body(&self.cluster_info()))),
            request::GET_ALL_TOPIC_LIST_FROM_NAMESERVER => Ok(ok(to_body(&self.topic_list()))),
            request::GET_TOPICS_BY_CLUSTER => {
                let cluster: String = cmd.ext_req("cluster")?;
                let names = self
                    .cluster_addr_table
                    .get(&cluster)
                    .cloned()
                    .unwrap_or_default();
                let topic_list = self
                    .topic_queue_table
                    .iter()
                    .filter(|(_, q)| q.keys().any(|b| names.contains(b)))
                    .map(|(t, _)| t.clone())
                    .collect();
                Ok(ok(to_body(&TopicList {
                    topic_list,
                    broker_addr: None,
                })))
            }
            request::DELETE_TOPIC_IN_NAMESRV => {
                let topic: String = cmd.ext_req("topic")?;
                match cmd.ext("clusterName").filter(|c| !c.is_empty()) {
                    // Only that cluster's brokers forget the topic.
                    Some(cluster) => {
                        let names = self
                            .cluster_addr_table
                            .get(cluster)
                            .cloned()
                            .unwrap_or_default();
                        if let Some(q) = self.topic_queue_table.get_mut(&topic) {
                            q.retain(|b, _| !names.contains(b));
                            if q.is_empty() {
                                self.topic_queue_table.remove(&topic);
                            }
                        }
                    }
                    None => {
                        self.topic_queue_table.remove(&topic);
                    }
                }
                Ok(ok(Bytes::new()))
            }
            request::PUT_KV_CONFIG => {
                let ns: String = cmd.ext_req("namespace")?;
                let key: String = cmd.ext_req("key")?;
                let value: String = cmd.ext_req("value")?;
                let fresh = self.kv.get(&ns).is_none_or(|t| !t.contains_key(&key));
                if fresh && self.kv_entries >= self.config.limits.max_kv_entries {
                    return Ok(RemotingCommand::response_to(
                        cmd,
                        response::SYSTEM_ERROR,
                        Some(format!(
                            "KV config full: {} entries (limit)",
                            self.config.limits.max_kv_entries
                        )),
                    ));
                }
                self.kv_entries += usize::from(fresh);
                self.kv.entry(ns).or_default().insert(key, value);
                Ok(ok(Bytes::new()))
            }
            request::GET_KV_CONFIG => {
                let ns: String = cmd.ext_req("namespace")?;
                let key: String = cmd.ext_req("key")?;
                Ok(match self.kv.get(&ns).and_then(|t| t.get(&key)) {
                    Some(v) => RemotingCommand::response_to(cmd, response::SUCCESS, None)
                        .with_ext("value", v),
                    None => RemotingCommand::response_to(
                        cmd,
                        response::QUERY_NOT_FOUND,
                        Some(format!("No config item, Namespace: {ns} Key: {key}")),
                    ),
                })
            }
            request::DELETE_KV_CONFIG => {
                let ns: String = cmd.ext_req("namespace")?;
                let key: String = cmd.ext_req("key")?;
                if let Some(t) = self.kv.get_mut(&ns) {
                    if t.remove(&key).is_some() {
                        self.kv_entries -= 1;
                    }
                    if t.is_empty() {
                        self.kv.remove(&ns);
                    }
                }
                Ok(ok(Bytes::new()))
            }
            code => Ok(RemotingCommand::response_to(
                cmd,
                response::REQUEST_CODE_NOT_SUPPORTED,
                Some(format!(" request type {code} not supported")),
            )),
        }
    }

    fn register_broker(
        &mut self,
        conn: ConnId,
        cmd: &RemotingCommand,
        now: u64,
    ) -> Result<RemotingCommand, FieldError> {
        let cluster: String = cmd.ext_req("clusterName")?;
        let name: String = cmd.ext_req("brokerName")?;
        let addr: String = cmd.ext_req("brokerAddr")?;
        let id: u64 = cmd.ext_req("brokerId")?;
        let ha_server_addr: String = cmd.ext_opt("haServerAddr")?.unwrap_or_default();
        if cmd.ext_bool("compressed")? == Some(true) {
            return Ok(RemotingCommand::response_to(
                cmd,
                response::SYSTEM_ERROR,
                Some(
                    "compressed broker registration is not supported; set compressedRegister=false"
                        .into(),
                ),
            ));
        }
        let body: RegisterBrokerBody = if cmd.body.is_empty() {
            RegisterBrokerBody::default()
        } else {
            request_body(cmd, "RegisterBrokerBody JSON")?
        };

        if let Err(why) = self.admit_registration(&addr, &body) {
            tracing::warn!(broker = %addr, %why, "registration refused");
            return Ok(RemotingCommand::response_to(
                cmd,
                response::SYSTEM_ERROR,
                Some(why),
            ));
        }
        self.cluster_addr_table
            .entry(cluster.clone())
            .or_default()
            .insert(name.clone());
        let data = self
            .broker_addr_table
            .entry(name.clone())
            .or_insert_with(|| BrokerData::new(&cluster, &name, BTreeMap::new()));
        // The same address under another id is that broker changing role: keep one.
        data.broker_addrs
            .retain(|other_id, a| !(*a == addr && *other_id != id));
        let first = data.broker_addrs.insert(id, addr.clone()).as_deref() != Some(addr.as_str());

        let wrapper = body.topic_config_serialize_wrapper;
        let changed = self
            .broker_live_table
            .get(&addr)
            .is_none_or(|l| l.data_version != wrapper.data_version);
        if id == MASTER_ID && (first || changed) {
            self.update_topics(&name, &wrapper.topic_config_table);
        }
        self.broker_live_table.insert(
            addr.clone(),
            BrokerLive {
                last_update: now,
                data_version: wrapper.data_version,
                conn,
                ha_server_addr,
            },
        );

        let mut resp = RemotingCommand::response_to(cmd, response::SUCCESS, None);
        if id != MASTER_ID
            && let Some(master) = self
                .broker_addr_table
                .get(&name)
                .and_then(|b| b.master_addr())
        {
            let ha = self
                .broker_live_table
                .get(master)
                .map(|l| l.ha_server_addr.clone())
                .unwrap_or_default();
            resp = resp
                .with_ext("masterAddr", master)
                .with_ext("haServerAddr", ha);
        }
        let table = self.kv.get(ORDER_TOPIC_CONFIG).cloned().unwrap_or_default();
        Ok(resp.with_body(to_body(&KvTable { table })))
    }

    /// Whether a registration fits the caps: a new broker address within `max_brokers`, and
    /// the topics it brings within `max_topics`.
    fn admit_registration(&self, addr: &str, body: &RegisterBrokerBody) -> Result<(), String> {
        let limits = &self.config.limits;
        if !self.broker_live_table.contains_key(addr)
            && self.broker_live_table.len() >= limits.max_brokers
        {
            return Err(format!(
                "{} brokers are registered (limit)",
                limits.max_brokers
            ));
        }
        let topics = &body.topic_config_serialize_wrapper.topic_config_table;
        let new = topics
            .keys()
            .filter(|t| !self.topic_queue_table.contains_key(*t))
            .count();
        if self.topic_queue_table.len() + new > limits.max_topics {
            return Err(format!(
                "registration would bring the route table past {} topics (limit)",
                limits.max_topics
            ));
        }
        Ok(())
    }

    /// A master's full topic table replaces what it registered before.
    fn update_topics(&mut self, broker_name: &str, topics: &BTreeMap<String, TopicConfig>) {
        for (topic, queues) in self.topic_queue_table.iter_mut() {
            if !topics.contains_key(topic) {
                queues.remove(broker_name);
            }
        }
        self.topic_queue_table.retain(|_, q| !q.is_empty());
        for (topic, tc) in topics {
            self.topic_queue_table
                .entry(topic.clone())
                .or_default()
                .insert(
                    broker_name.to_string(),
                    QueueData {
                        broker_name: broker_name.to_string(),
                        read_queue_nums: tc.read_queue_nums,
                        write_queue_nums: tc.write_queue_nums,
                        perm: tc.perm,
                        topic_sys_flag: tc.topic_sys_flag,
                    },
                );
        }
    }

    /// Forgets one broker address; a broker group with no address left takes its queues along.
    fn remove_broker_addr(&mut self, addr: &str) {
        self.broker_live_table.remove(addr);
        let mut emptied = None;
        for (name, data) in self.broker_addr_table.iter_mut() {
            let before = data.broker_addrs.len();
            data.broker_addrs.retain(|_, a| a != addr);
            if data.broker_addrs.len() != before && data.broker_addrs.is_empty() {
                emptied = Some((name.clone(), data.cluster.clone()));
            }
        }
        let Some((name, cluster)) = emptied else {
            return;
        };
        self.broker_addr_table.remove(&name);
        if let Some(names) = self.cluster_addr_table.get_mut(&cluster) {
            names.remove(&name);
            if names.is_empty() {
                self.cluster_addr_table.remove(&cluster);
            }
        }
        for queues in self.topic_queue_table.values_mut() {
            queues.remove(&name);
        }
        self.topic_queue_table.retain(|_, q| !q.is_empty());
    }

    /// A topic's route, or `None` if no live broker serves it.
    pub fn route(&self, topic: &str) -> Option<TopicRouteData> {
        let queues = self.topic_queue_table.get(topic)?;
        let queue_datas: Vec<QueueData> = queues.values().cloned().collect();
        let broker_datas: Vec<BrokerData> = queues
            .keys()
            .filter_map(|name| self.broker_addr_table.get(name).cloned())
            .collect();
        if queue_datas.is_empty() || broker_datas.is_empty() {
            return None;
        }
        let order_topic_conf = self
            .kv
            .get(ORDER_TOPIC_CONFIG)
            .and_then(|t| t.get(topic))
            .cloned();
        Some(TopicRouteData {
            order_topic_conf,
            queue_datas,
            broker_datas,
            filter_server_table: BTreeMap::new(),
            topic_queue_mapping_by_broker: None,
        })
    }

    pub fn cluster_info(&self) -> ClusterInfo {
        ClusterInfo {
            broker_addr_table: self.broker_addr_table.clone(),
            cluster_addr_table: self.cluster_addr_table.clone(),
        }
    }

    pub fn topic_list(&self) -> TopicList {
        TopicList {
            topic_list: self.topic_queue_table.keys().cloned().collect(),
            broker_addr: None,
        }
    }

    /// Addresses of live brokers (for tests, admin and checkers).
    pub fn live_brokers(&self) -> impl Iterator<Item = &str> {
        self.broker_live_table.keys().map(String::as_str)
    }
}

impl crate::machine::Machine for NameServer {
    fn metrics(&self, _now: u64) -> crate::metrics::Snapshot {
        let mut m = crate::metrics::Snapshot {
            common: vec![("node_type", "namesrv".into())],
            ..Default::default()
        };
        m.gauge(
            "rockfish_namesrv_brokers",
            "Broker addresses registered and alive.",
            None,
        )
        .push(vec![], self.broker_live_table.len() as f64);
        m.gauge(
            "rockfish_namesrv_topics",
            "Topics in the route table.",
            None,
        )
        .push(vec![], self.topic_queue_table.len() as f64);
        m.gauge("rockfish_namesrv_clusters", "Clusters known.", None)
            .push(vec![], self.cluster_addr_table.len() as f64);
        m
    }
    fn on_connect(&mut self, conn: ConnId, _peer: rockfish_store::record::HostAddr, now: u64) {
        NameServer::on_connect(self, conn, now)
    }
    fn on_disconnect(&mut self, conn: ConnId, now: u64) {
        NameServer::on_disconnect(self, conn, now)
    }
    fn on_command(&mut self, conn: ConnId, cmd: RemotingCommand, _received_at: u64, now: u64) {
        NameServer::on_command(self, conn, cmd, now)
    }
    fn on_timeout(&mut self, now: u64) {
        NameServer::on_timeout(self, now)
    }
    fn on_persisted(&mut self, token: u64, result: Result<(), String>, now: u64) {
        NameServer::on_persisted(self, token, result, now)
    }
    fn poll_output(&mut self) -> Option<Output> {
        NameServer::poll_output(self)
    }
    fn poll_timeout(&self) -> Option<u64> {
        NameServer::poll_timeout(self)
    }
}

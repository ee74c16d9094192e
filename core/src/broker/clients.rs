//! Client bookkeeping: HEART_BEAT registers producers and consumers with their groups and
//! subscriptions; consumers of a group are told (NOTIFY_CONSUMER_IDS_CHANGED) whenever the
//! group's membership or subscriptions change, so they rebalance.

use std::collections::{BTreeMap, BTreeSet};

use rockfish_store::Disk;
use rockfish_store::config::TopicConfig;
use serde::{Deserialize, Serialize};

use super::Broker;
use crate::filter::SubscriptionFilter;
use crate::machine::{ConnId, Output};
use crate::protocol::heartbeat::{ConsumeFromWhere, ConsumeType, MessageModel};
use crate::protocol::{request_body, to_body};
use crate::remoting::codes::{request, response};
use crate::remoting::{FieldError, RemotingCommand};

/// A subscription in a heartbeat. Every field may be absent (rocketmq-client-cpp leaves out
/// the sets and the filter mode, and sends `subVersion` as a string): bodies are read leniently.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SubscriptionData {
    pub topic: String,
    pub sub_string: String,
    pub tags_set: BTreeSet<String>,
    pub code_set: BTreeSet<i64>,
    pub sub_version: i64,
    pub class_filter_mode: bool,
    pub expression_type: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ConsumerData {
    pub group_name: String,
    pub consume_type: Option<ConsumeType>,
    pub message_model: Option<MessageModel>,
    pub consume_from_where: Option<ConsumeFromWhere>,
    pub subscription_data_set: Vec<SubscriptionData>,
    pub unit_mode: bool,
}

impl ConsumerData {
    /// Clustering unless the client says broadcasting (Apache's default model).
    pub fn is_broadcasting(&self) -> bool {
        self.message_model == Some(MessageModel::Broadcasting)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProducerData {
    pub group_name: String,
}

/// HEART_BEAT's body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HeartbeatData {
    #[serde(rename = "clientID")]
    pub client_id: String,
    pub producer_data_set: Vec<ProducerData>,
    pub consumer_data_set: Vec<ConsumerData>,
}

/// CHECK_CLIENT_CONFIG's body (Java's CheckClientRequestBody).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CheckClientRequestBody {
    pub client_id: String,
    pub group: String,
    pub subscription_data: Option<SubscriptionData>,
}

/// GET_CONSUMER_LIST_BY_GROUP's body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ConsumerIdList {
    pub consumer_id_list: Vec<String>,
}

#[derive(Debug, Clone)]
struct Client {
    conn: ConnId,
    last_seen: u64,
    /// Who it is, as its heartbeat said (for GET_*_CONNECTION_LIST).
    who: Connection,
}

/// One client of a group as Apache's `Connection` shows it (GET_CONSUMER_CONNECTION_LIST,
/// GET_PRODUCER_CONNECTION_LIST).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Connection {
    pub client_id: String,
    pub client_addr: String,
    pub language: String,
    pub version: i32,
}

/// GET_CONSUMER_CONNECTION_LIST's body (Java's `ConsumerConnection`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ConsumerConnection {
    pub connection_set: Vec<Connection>,
    pub subscription_table: BTreeMap<String, SubscriptionData>,
    pub consume_type: Option<ConsumeType>,
    pub message_model: Option<MessageModel>,
    pub consume_from_where: Option<ConsumeFromWhere>,
}

/// GET_PRODUCER_CONNECTION_LIST's body (Java's `ProducerConnection`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProducerConnection {
    pub connection_set: Vec<Connection>,
}

#[derive(Debug, Default)]
struct Group {
    clients: BTreeMap<String, Client>,
    subscriptions: BTreeMap<String, SubscriptionFilter>,
    clustering: bool,
    /// The last heartbeat's own words: subscriptions and how the group consumes.
    data: ConsumerData,
}

#[derive(Debug, Default)]
pub(super) struct ClientTable {
    consumers: BTreeMap<String, Group>,
    producers: BTreeMap<String, BTreeMap<String, Client>>,
}

impl ClientTable {
    /// Records a heartbeat whose subscriptions `compiled` holds (one map per consumer group
    /// of the heartbeat, in order). Returns the consumer groups whose members or
    /// subscriptions changed.
    fn heartbeat(
        &mut self,
        conn: ConnId,
        who: Connection,
        data: &HeartbeatData,
        compiled: Vec<BTreeMap<String, SubscriptionFilter>>,
        now: u64,
    ) -> Vec<String> {
        let mut changed = Vec::new();
        for (c, subs) in data.consumer_data_set.iter().zip(compiled) {
            let group = self.consumers.entry(c.group_name.clone()).or_default();
            group.clustering = !c.is_broadcasting();
            if group.data != *c {
                group.data = c.clone();
            }
            let fresh = match group.clients.insert(
                data.client_id.clone(),
                Client {
                    conn,
                    last_seen: now,
                    who: who.clone(),
                },
            ) {
                None => true,
                Some(old) => old.conn != conn,
            };
            let subs_changed = group.subscriptions != subs;
            group.subscriptions = subs;
            if fresh || subs_changed {
                changed.push(c.group_name.clone());
            }
        }
        for p in &data.producer_data_set {
            self.producers
                .entry(p.group_name.clone())
                .or_default()
                .insert(
                    data.client_id.clone(),
                    Client {
                        conn,
                        last_seen: now,
                        who: who.clone(),
                    },
                );
        }
        changed
    }

    fn unregister(
        &mut self,
        client_id: &str,
        consumer_group: Option<&str>,
        producer_group: Option<&str>,
    ) -> Vec<String> {
        let mut changed = Vec::new();
        if let Some(g) = consumer_group
            && let Some(group) = self.consumers.get_mut(g)
        {
            if group.clients.remove(client_id).is_some() {
                changed.push(g.to_string());
            }
            if group.clients.is_empty() {
                self.consumers.remove(g);
            }
        }
        if let Some(g) = producer_group
            && let Some(p) = self.producers.get_mut(g)
        {
            p.remove(client_id);
        }
        changed
    }

    fn retain(&mut self, keep: impl Fn(&Client) -> bool) -> Vec<String> {
        let mut changed = Vec::new();
        for (name, group) in self.consumers.iter_mut() {
            let before = group.clients.len();
            group.clients.retain(|_, c| keep(c));
            if group.clients.len() != before {
                changed.push(name.clone());
            }
        }
        self.consumers.retain(|_, g| !g.clients.is_empty());
        for p in self.producers.values_mut() {
            p.retain(|_, c| keep(c));
        }
        self.producers.retain(|_, p| !p.is_empty());
        changed
    }

    /// The connections of a producer group's live clients (check-backs go to one of them).
    pub(super) fn producer_conns(&self, group: &str) -> Vec<ConnId> {
        self.producers
            .get(group)
            .map(|p| p.values().map(|c| c.conn).collect())
            .unwrap_or_default()
    }

    /// Whether `data` fits the caps: no new group past `max_groups`, no new client in a
    /// group past `max_clients_per_group`.
    pub(super) fn admits(
        &self,
        data: &HeartbeatData,
        limits: &super::BrokerLimits,
    ) -> Result<(), String> {
        let id = &data.client_id;
        let mut new_consumer_groups = 0;
        for c in &data.consumer_data_set {
            match self.consumers.get(&c.group_name) {
                None => new_consumer_groups += 1,
                Some(g) if !g.clients.contains_key(id) => {
                    if g.clients.len() >= limits.max_clients_per_group {
                        return Err(format!(
                            "consumer group {} has {} clients (limit)",
                            c.group_name, limits.max_clients_per_group
                        ));
                    }
                }
                Some(_) => {}
            }
        }
        if self.consumers.len() + new_consumer_groups > limits.max_groups {
            return Err(format!(
                "the broker knows {} consumer groups (limit)",
                limits.max_groups
            ));
        }
        let mut new_producer_groups = 0;
        for p in &data.producer_data_set {
            match self.producers.get(&p.group_name) {
                None => new_producer_groups += 1,
                Some(g) if !g.contains_key(id) && g.len() >= limits.max_clients_per_group => {
                    return Err(format!(
                        "producer group {} has {} clients (limit)",
                        p.group_name, limits.max_clients_per_group
                    ));
                }
                Some(_) => {}
            }
        }
        if self.producers.len() + new_producer_groups > limits.max_groups {
            return Err(format!(
                "the broker knows {} producer groups (limit)",
                limits.max_groups
            ));
        }
        Ok(())
    }

    pub(super) fn remove_conn(&mut self, conn: ConnId) -> Vec<String> {
        self.retain(|c| c.conn != conn)
    }

    pub(super) fn expire(&mut self, now: u64, expire_ms: u64) -> Vec<String> {
        self.retain(|c| now.saturating_sub(c.last_seen) <= expire_ms)
    }

    /// Whether `group` consumes in broadcasting mode (its offsets live in each client).
    pub(super) fn broadcasting(&self, group: &str) -> bool {
        self.consumers.get(group).is_some_and(|g| !g.clustering)
    }

    pub(super) fn subscription(&self, group: &str, topic: &str) -> Option<SubscriptionFilter> {
        self.consumers.get(group)?.subscriptions.get(topic).cloned()
    }

    fn consumer_ids(&self, group: &str) -> Option<Vec<String>> {
        self.consumers
            .get(group)
            .map(|g| g.clients.keys().cloned().collect())
    }

    /// A consumer group's clients and subscriptions, if any client is connected.
    pub(super) fn consumer_connection(&self, group: &str) -> Option<ConsumerConnection> {
        let g = self.consumers.get(group)?;
        Some(ConsumerConnection {
            connection_set: g.clients.values().map(|c| c.who.clone()).collect(),
            subscription_table: g
                .data
                .subscription_data_set
                .iter()
                .map(|s| (s.topic.clone(), s.clone()))
                .collect(),
            consume_type: g.data.consume_type,
            message_model: g.data.message_model,
            consume_from_where: g.data.consume_from_where,
        })
    }

    /// A producer group's connected clients.
    pub(super) fn producer_connection(&self, group: &str) -> Option<ProducerConnection> {
        let p = self.producers.get(group)?;
        Some(ProducerConnection {
            connection_set: p.values().map(|c| c.who.clone()).collect(),
        })
    }

    /// Connected clients: (producers, consumers), each client counted once per group.
    pub(super) fn counts(&self) -> (usize, usize) {
        (
            self.producers.values().map(BTreeMap::len).sum(),
            self.consumers.values().map(|g| g.clients.len()).sum(),
        )
    }

    /// Connected consumer clients per group, with how the group consumes.
    pub(super) fn consumer_counts(&self) -> impl Iterator<Item = (&str, usize, bool)> {
        self.consumers
            .iter()
            .map(|(g, grp)| (g.as_str(), grp.clients.len(), grp.clustering))
    }

    /// Consumer groups with a client subscribed to `topic`.
    pub(super) fn groups_subscribed_to(&self, topic: &str) -> Vec<String> {
        self.consumers
            .iter()
            .filter(|(_, g)| g.subscriptions.contains_key(topic))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Whether a consumer group has a client subscribed to `topic` (None: no client at all).
    pub(super) fn subscribes(&self, group: &str, topic: &str) -> Option<bool> {
        self.consumers
            .get(group)
            .map(|g| g.subscriptions.contains_key(topic))
    }

    pub(super) fn conns(&self, group: &str) -> BTreeSet<ConnId> {
        self.consumers
            .get(group)
            .map(|g| g.clients.values().map(|c| c.conn).collect())
            .unwrap_or_default()
    }
}

impl<D: Disk> Broker<D> {
    pub(super) fn heartbeat(
        &mut self,
        conn: ConnId,
        cmd: &RemotingCommand,
        now: u64,
    ) -> Result<RemotingCommand, FieldError> {
        let data: HeartbeatData = request_body(cmd, "HeartbeatData JSON")?;
        if let Err(why) = self.admit_heartbeat(&data) {
            return Ok(RemotingCommand::response_to(
                cmd,
                response::SYSTEM_ERROR,
                Some(why),
            ));
        }
        // Every subscription compiled before any of the heartbeat is applied: a malformed
        // SQL92 expression refuses the heartbeat (Apache's checkClientConfig answer).
        let mut compiled = Vec::with_capacity(data.consumer_data_set.len());
        for c in &data.consumer_data_set {
            let mut subs = BTreeMap::new();
            for s in &c.subscription_data_set {
                match SubscriptionFilter::for_heartbeat(s.expression_type.as_deref(), &s.sub_string)
                {
                    Ok(f) => {
                        subs.insert(s.topic.clone(), f);
                    }
                    Err(e) => {
                        return Ok(RemotingCommand::response_to(
                            cmd,
                            response::SUBSCRIPTION_PARSE_FAILED,
                            Some(format!("group {} topic {}: {e}", c.group_name, s.topic)),
                        ));
                    }
                }
            }
            compiled.push(subs);
        }
        let who = Connection {
            client_id: data.client_id.clone(),
            client_addr: self
                .peers
                .get(&conn)
                .map(|h| h.to_string())
                .unwrap_or_default(),
            language: cmd.language.name().to_string(),
            version: cmd.version,
        };
        let changed = self.clients.heartbeat(conn, who, &data, compiled, now);
        // Clustering consumers also consume their group's retry topic: make sure it exists.
        let mut created = false;
        for c in &data.consumer_data_set {
            if c.is_broadcasting() {
                continue;
            }
            // As Apache: the group's config says how many retry queues (none: no topic).
            let queues = match self.find_group(&c.group_name, now) {
                Some(g) if g.retry_queue_nums > 0 => g.retry_queue_nums as u32,
                _ => continue,
            };
            let retry = crate::protocol::topics::retry_topic(&c.group_name);
            if !self.topics.contains(&retry) {
                self.topics
                    .insert(retry.clone(), TopicConfig::new(&retry, queues));
                created = true;
            }
        }
        if created {
            self.topics_created(now);
        }
        for group in changed {
            self.notify_group(&group, now);
        }
        Ok(RemotingCommand::response_to(cmd, response::SUCCESS, None))
    }

    /// Validates a heartbeat before any of it is applied: group names by Apache's rule, a
    /// clustering group's retry topic a valid topic (and room for it), and the caps.
    fn admit_heartbeat(&self, data: &HeartbeatData) -> Result<(), String> {
        let limits = &self.config.limits;
        let mut new_topics = 0;
        for c in &data.consumer_data_set {
            super::validate_group(&c.group_name)?;
            if c.subscription_data_set.len() > limits.max_subscriptions {
                return Err(format!(
                    "consumer group {} subscribes to {} topics (limit {})",
                    c.group_name,
                    c.subscription_data_set.len(),
                    limits.max_subscriptions
                ));
            }
            if !c.is_broadcasting() {
                let retry = super::limits::retry_topic(&c.group_name)?;
                if self.topic(&retry).is_none() {
                    new_topics += 1;
                }
            }
        }
        for p in &data.producer_data_set {
            super::validate_group(&p.group_name)?;
        }
        if new_topics > 0 && self.topics.len() + new_topics > limits.max_topics {
            return Err(format!(
                "retry topics not created: the broker holds {} topics (limit)",
                limits.max_topics
            ));
        }
        self.clients.admits(data, limits)
    }

    /// CHECK_CLIENT_CONFIG: can this broker serve the subscription? (A Java consumer asks
    /// every broker before it starts with an SQL92 selector.)
    pub(super) fn check_client_config(
        &mut self,
        cmd: &RemotingCommand,
    ) -> Result<RemotingCommand, FieldError> {
        let body: CheckClientRequestBody = request_body(cmd, "CheckClientRequestBody JSON")?;
        let answer = |code, remark: Option<String>| RemotingCommand::response_to(cmd, code, remark);
        let Some(s) = body.subscription_data else {
            return Ok(answer(response::SUCCESS, None));
        };
        if crate::filter::is_tag_type(s.expression_type.as_deref()) {
            return Ok(answer(response::SUCCESS, None));
        }
        if !self.config.enable_property_filter {
            return Ok(answer(
                response::SYSTEM_ERROR,
                Some(format!(
                    "The broker does not support consumer to filter message by {}",
                    s.expression_type.unwrap_or_default()
                )),
            ));
        }
        Ok(
            match SubscriptionFilter::compile(s.expression_type.as_deref(), &s.sub_string) {
                Ok(_) => answer(response::SUCCESS, None),
                Err(e) => answer(response::SUBSCRIPTION_PARSE_FAILED, Some(e.to_string())),
            },
        )
    }

    pub(super) fn unregister_client(
        &mut self,
        cmd: &RemotingCommand,
        now: u64,
    ) -> Result<RemotingCommand, FieldError> {
        let client_id: String = cmd.ext_req("clientID")?;
        let changed = self.clients.unregister(
            &client_id,
            cmd.ext("consumerGroup"),
            cmd.ext("producerGroup"),
        );
        for group in changed {
            self.notify_group(&group, now);
        }
        Ok(RemotingCommand::response_to(cmd, response::SUCCESS, None))
    }

    pub(super) fn consumer_list(
        &mut self,
        cmd: &RemotingCommand,
    ) -> Result<RemotingCommand, FieldError> {
        let group: String = cmd.ext_req("consumerGroup")?;
        Ok(match self.clients.consumer_ids(&group) {
            Some(ids) => Self::body_response(
                cmd,
                to_body(&ConsumerIdList {
                    consumer_id_list: ids,
                }),
            ),
            None => RemotingCommand::response_to(
                cmd,
                response::SYSTEM_ERROR,
                Some(format!("no consumer for this group, {group}")),
            ),
        })
    }

    /// Tells every consumer of `group` that its membership changed (oneway).
    pub(super) fn notify_group(&mut self, group: &str, _now: u64) {
        for conn in self.clients.conns(group) {
            let opaque = self.next_opaque();
            let mut cmd = RemotingCommand::request(request::NOTIFY_CONSUMER_IDS_CHANGED, opaque)
                .with_ext("consumerGroup", group);
            cmd.flag |= crate::remoting::command::FLAG_ONEWAY;
            self.outputs.push_back(Output::Send { conn, cmd });
        }
    }
}

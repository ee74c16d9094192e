//! Client bookkeeping: HEART_BEAT registers producers and consumers with their groups and
//! subscriptions; consumers of a group are told (NOTIFY_CONSUMER_IDS_CHANGED) whenever the
//! group's membership or subscriptions change, so they rebalance.

use std::collections::{BTreeMap, BTreeSet};

use rockfish_store::Disk;
use rockfish_store::config::TopicConfig;
use serde::{Deserialize, Serialize};

use super::Broker;
use crate::machine::{ConnId, Output};
use crate::message::TagFilter;
use crate::protocol::to_body;
use crate::remoting::codes::{request, response};
use crate::remoting::{FieldError, RemotingCommand};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionData {
    pub topic: String,
    #[serde(default)]
    pub sub_string: String,
    #[serde(default)]
    pub tags_set: BTreeSet<String>,
    #[serde(default)]
    pub code_set: BTreeSet<i64>,
    #[serde(default)]
    pub sub_version: i64,
    #[serde(default)]
    pub class_filter_mode: bool,
    #[serde(default)]
    pub expression_type: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerData {
    pub group_name: String,
    #[serde(default)]
    pub consume_type: Option<String>,
    #[serde(default)]
    pub message_model: Option<String>,
    #[serde(default)]
    pub consume_from_where: Option<String>,
    #[serde(default)]
    pub subscription_data_set: Vec<SubscriptionData>,
    #[serde(default)]
    pub unit_mode: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProducerData {
    pub group_name: String,
}

/// HEART_BEAT's body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatData {
    #[serde(rename = "clientID")]
    pub client_id: String,
    #[serde(default)]
    pub producer_data_set: Vec<ProducerData>,
    #[serde(default)]
    pub consumer_data_set: Vec<ConsumerData>,
}

/// GET_CONSUMER_LIST_BY_GROUP's body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerIdList {
    pub consumer_id_list: Vec<String>,
}

#[derive(Debug, Clone)]
struct Client {
    conn: ConnId,
    last_seen: u64,
}

#[derive(Debug, Default)]
struct Group {
    clients: BTreeMap<String, Client>,
    subscriptions: BTreeMap<String, TagFilter>,
    clustering: bool,
}

#[derive(Debug, Default)]
pub(super) struct ClientTable {
    consumers: BTreeMap<String, Group>,
    producers: BTreeMap<String, BTreeMap<String, Client>>,
}

impl ClientTable {
    /// Records a heartbeat. Returns the consumer groups whose members or subscriptions changed.
    fn heartbeat(&mut self, conn: ConnId, data: &HeartbeatData, now: u64) -> Vec<String> {
        let mut changed = Vec::new();
        for c in &data.consumer_data_set {
            let group = self.consumers.entry(c.group_name.clone()).or_default();
            group.clustering = c.message_model.as_deref() != Some("BROADCASTING");
            let fresh = match group.clients.insert(
                data.client_id.clone(),
                Client {
                    conn,
                    last_seen: now,
                },
            ) {
                None => true,
                Some(old) => old.conn != conn,
            };
            let subs: BTreeMap<String, TagFilter> = c
                .subscription_data_set
                .iter()
                .map(|s| (s.topic.clone(), TagFilter::parse(&s.sub_string)))
                .collect();
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

    pub(super) fn remove_conn(&mut self, conn: ConnId) -> Vec<String> {
        self.retain(|c| c.conn != conn)
    }

    pub(super) fn expire(&mut self, now: u64, expire_ms: u64) -> Vec<String> {
        self.retain(|c| now.saturating_sub(c.last_seen) <= expire_ms)
    }

    pub(super) fn subscription(&self, group: &str, topic: &str) -> Option<TagFilter> {
        self.consumers.get(group)?.subscriptions.get(topic).cloned()
    }

    fn consumer_ids(&self, group: &str) -> Option<Vec<String>> {
        self.consumers
            .get(group)
            .map(|g| g.clients.keys().cloned().collect())
    }

    fn conns(&self, group: &str) -> BTreeSet<ConnId> {
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
        let data: HeartbeatData =
            serde_json::from_slice(&cmd.body).map_err(|e| FieldError::Invalid {
                field: "body",
                value: e.to_string(),
                ty: "HeartbeatData JSON",
            })?;
        let changed = self.clients.heartbeat(conn, &data, now);
        // Clustering consumers also consume their group's retry topic: make sure it exists.
        let mut created = false;
        for c in &data.consumer_data_set {
            if c.message_model.as_deref() == Some("BROADCASTING") {
                continue;
            }
            let retry = format!("%RETRY%{}", c.group_name);
            if !self.topics.topic_config_table.contains_key(&retry) {
                self.topics
                    .topic_config_table
                    .insert(retry.clone(), TopicConfig::new(&retry, 1));
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

//! The admin API (what Java's `DefaultMQAdminExt` does) over the remoting protocol: typed
//! answers that `rockfish admin` prints as mqadmin does and the web console serves as JSON.
//! It speaks only the wire protocol, so it works against any RocketMQ-compatible cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rockfish_core::broker::{
    ConsumerConnection, KvTable, OffsetWrapper, ProducerConnection, TopicOffset,
};
use rockfish_core::message::{MessageExt, decode_messages, parse_offset_msg_id};
use rockfish_core::protocol::lenient::MqTable;
use rockfish_core::protocol::{ClusterInfo, MessageQueue, TopicList, TopicRouteData, decode_body};
use rockfish_core::remoting::RemotingCommand;
use rockfish_core::remoting::codes::{request, response};
use serde::{Deserialize, Serialize};

use crate::Client;

const TIMEOUT: Duration = Duration::from_secs(5);

/// An admin failure, said the way an operator reads it.
pub type AdminResult<T> = Result<T, String>;

/// A broker's answer with a code other than SUCCESS, kept as such (mqadmin falls back on
/// some codes, e.g. CONSUMER_NOT_ONLINE).
pub fn refused(resp: &RemotingCommand, what: &str) -> String {
    format!(
        "{what}: code {} {}",
        resp.code,
        resp.remark.as_deref().unwrap_or("")
    )
}

pub async fn call(client: &Client, cmd: RemotingCommand) -> AdminResult<RemotingCommand> {
    client
        .request(cmd, TIMEOUT)
        .await
        .map_err(|e| format!("{}: {e}", client.addr))
}

fn ok(resp: RemotingCommand, what: &str) -> AdminResult<RemotingCommand> {
    if resp.code == response::SUCCESS {
        Ok(resp)
    } else {
        Err(refused(&resp, what))
    }
}

/// One queue's offsets (topicStatus).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct QueueStatus {
    pub broker_name: String,
    pub queue_id: u32,
    pub min_offset: u64,
    pub max_offset: u64,
    pub last_update_timestamp: i64,
}

/// One queue of a group's progress (consumerProgress).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct QueueProgress {
    pub topic: String,
    pub broker_name: String,
    pub queue_id: u32,
    pub broker_offset: u64,
    pub consumer_offset: u64,
    pub diff: u64,
    pub last_timestamp: i64,
}

/// A broker of the cluster, as clusterList and the console show it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BrokerEntry {
    pub cluster: String,
    pub broker_name: String,
    pub broker_id: u64,
    pub addr: String,
}

/// A stored message, for printing and the console.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MessageView {
    /// The id Java's client reports: UNIQ_KEY when the producer set one.
    pub msg_id: String,
    /// The broker's id: store host and commit log offset.
    pub offset_msg_id: String,
    pub topic: String,
    pub queue_id: u32,
    pub queue_offset: u64,
    pub commit_log_offset: u64,
    pub born_timestamp: i64,
    pub store_timestamp: i64,
    pub born_host: String,
    pub store_host: String,
    pub reconsume_times: i32,
    pub sys_flag: i32,
    pub properties: BTreeMap<String, String>,
    pub body: String,
}

impl From<&MessageExt> for MessageView {
    fn from(m: &MessageExt) -> Self {
        MessageView {
            msg_id: m.msg_id(),
            offset_msg_id: rockfish_core::message::offset_msg_id(
                m.store_host(),
                m.physical_offset(),
            ),
            sys_flag: m.sys_flag(),
            topic: m.topic().to_string(),
            queue_id: m.queue_id(),
            queue_offset: m.queue_offset(),
            commit_log_offset: m.physical_offset(),
            born_timestamp: m.born_timestamp(),
            store_timestamp: m.store_timestamp(),
            born_host: m.born_host().to_string(),
            store_host: m.store_host().to_string(),
            reconsume_times: m.reconsume_times(),
            properties: rockfish_store::record::properties(m.properties())
                .filter(|(k, _)| *k != b"__CRC32#")
                .map(|(k, v)| {
                    (
                        String::from_utf8_lossy(k).into_owned(),
                        String::from_utf8_lossy(v).into_owned(),
                    )
                })
                .collect(),
            body: String::from_utf8_lossy(&m.body()).into_owned(),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct ConsumeStatsBody {
    offset_table: MqTable<OffsetWrapper>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct TopicStatsBody {
    offset_table: MqTable<TopicOffset>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct ResetOffsetBody {
    offset_table: MqTable<u64>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct GroupTable {
    subscription_group_table: BTreeMap<String, serde_json::Value>,
}

/// Connections an admin session keeps open, at most (a console refreshing every few
/// seconds reuses them instead of dialling every broker each time).
const MAX_CONNECTIONS: usize = 256;

type Conns = std::collections::HashMap<String, std::sync::Arc<Client>>;

/// An admin session with a name server. Connections (to it and to brokers, dialled as
/// needed) are kept and reused; one that fails a request is dropped and dialled again next
/// time, so a long-lived session (the console's) outlives restarts.
pub struct Admin {
    namesrv: String,
    conns: std::sync::Mutex<Conns>,
}

impl Admin {
    /// A session; fails if the name server cannot be reached.
    pub async fn connect(namesrv: &str) -> AdminResult<Admin> {
        let admin = Admin::lazy(namesrv);
        admin.conn(namesrv).await?;
        Ok(admin)
    }

    /// A session that dials nothing until asked.
    pub fn lazy(namesrv: &str) -> Admin {
        Admin {
            namesrv: namesrv.to_string(),
            conns: Default::default(),
        }
    }

    fn cached(&self) -> std::sync::MutexGuard<'_, Conns> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The connection to `addr`, dialled if there is none.
    pub async fn conn(&self, addr: &str) -> AdminResult<std::sync::Arc<Client>> {
        if let Some(c) = self.cached().get(addr) {
            return Ok(c.clone());
        }
        let c = std::sync::Arc::new(
            Client::connect(addr)
                .await
                .map_err(|e| format!("{addr}: {e}"))?,
        );
        let mut conns = self.cached();
        if conns.len() >= MAX_CONNECTIONS {
            conns.clear();
        }
        conns.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    /// One request to `addr`, any answer; a failed exchange drops the connection.
    pub async fn raw_call(&self, addr: &str, cmd: RemotingCommand) -> AdminResult<RemotingCommand> {
        let c = self.conn(addr).await?;
        let r = call(&c, cmd).await;
        if r.is_err() {
            self.cached().remove(addr);
        }
        r
    }

    /// One request to the name server, any answer.
    async fn ns_raw(&self, cmd: RemotingCommand) -> AdminResult<RemotingCommand> {
        let ns = self.namesrv.clone();
        self.raw_call(&ns, cmd).await
    }

    /// One request to the broker at `addr`, SUCCESS expected.
    pub async fn broker_call(
        &self,
        addr: &str,
        cmd: RemotingCommand,
        what: &str,
    ) -> AdminResult<RemotingCommand> {
        ok(
            self.raw_call(addr, cmd).await?,
            &format!("{what} on {addr}"),
        )
    }

    pub async fn cluster_info(&self) -> AdminResult<ClusterInfo> {
        let resp = ok(
            self.ns_raw(RemotingCommand::request(
                request::GET_BROKER_CLUSTER_INFO,
                0,
            ))
            .await?,
            "cluster info",
        )?;
        decode_body(&resp.body).map_err(|e| format!("cluster info: bad body: {e}"))
    }

    /// Every broker of every cluster, sorted.
    pub async fn brokers(&self) -> AdminResult<Vec<BrokerEntry>> {
        let info = self.cluster_info().await?;
        let mut out = Vec::new();
        for (cluster, names) in &info.cluster_addr_table {
            for name in names {
                if let Some(b) = info.broker_addr_table.get(name) {
                    for (id, addr) in &b.broker_addrs {
                        out.push(BrokerEntry {
                            cluster: cluster.clone(),
                            broker_name: name.clone(),
                            broker_id: *id,
                            addr: addr.clone(),
                        });
                    }
                }
            }
        }
        Ok(out)
    }

    /// The masters of `cluster` (every cluster when `None`): (broker name, address).
    pub async fn masters(&self, cluster: Option<&str>) -> AdminResult<Vec<(String, String)>> {
        let info = self.cluster_info().await?;
        if let Some(c) = cluster
            && !info.cluster_addr_table.contains_key(c)
        {
            return Err(format!("no cluster named {c}"));
        }
        Ok(info
            .cluster_addr_table
            .iter()
            .filter(|(c, _)| cluster.is_none_or(|want| want == *c))
            .flat_map(|(_, names)| names.iter())
            .filter_map(|n| {
                let addr = info.broker_addr_table.get(n)?.master_addr()?;
                Some((n.clone(), addr.to_string()))
            })
            .collect())
    }

    pub async fn route(&self, topic: &str) -> AdminResult<TopicRouteData> {
        let resp = ok(
            self.ns_raw(
                RemotingCommand::request(request::GET_ROUTEINFO_BY_TOPIC, 0)
                    .with_ext("topic", topic),
            )
            .await?,
            &format!("route of {topic}"),
        )?;
        decode_body(&resp.body).map_err(|e| format!("route of {topic}: bad body: {e}"))
    }

    /// The masters holding `topic`'s queues: (broker name, address).
    pub async fn topic_masters(&self, topic: &str) -> AdminResult<Vec<(String, String)>> {
        let r = self.route(topic).await?;
        Ok(r.broker_datas
            .iter()
            .filter_map(|b| Some((b.broker_name.clone(), b.master_addr()?.to_string())))
            .collect())
    }

    pub async fn topic_list(&self) -> AdminResult<Vec<String>> {
        let resp = ok(
            self.ns_raw(RemotingCommand::request(
                request::GET_ALL_TOPIC_LIST_FROM_NAMESERVER,
                0,
            ))
            .await?,
            "topic list",
        )?;
        let list: TopicList = decode_body(&resp.body).map_err(|e| e.to_string())?;
        let mut topics: Vec<String> = list.topic_list.into_iter().collect();
        topics.sort();
        Ok(topics)
    }

    /// GET_TOPIC_STATS_INFO on every master of the topic.
    pub async fn topic_status(&self, topic: &str) -> AdminResult<Vec<QueueStatus>> {
        let mut out = Vec::new();
        for (name, addr) in self.topic_masters(topic).await? {
            let resp = self
                .broker_call(
                    &addr,
                    RemotingCommand::request(request::GET_TOPIC_STATS_INFO, 0)
                        .with_ext("topic", topic),
                    "topic stats",
                )
                .await?;
            let stats: TopicStatsBody = decode_body(&resp.body).map_err(|e| e.to_string())?;
            out.extend(stats.offset_table.0.into_iter().map(|(mq, o)| QueueStatus {
                broker_name: if mq.broker_name.is_empty() {
                    name.clone()
                } else {
                    mq.broker_name
                },
                queue_id: mq.queue_id,
                min_offset: o.min_offset,
                max_offset: o.max_offset,
                last_update_timestamp: o.last_update_timestamp,
            }));
        }
        out.sort_by(|a, b| (&a.broker_name, a.queue_id).cmp(&(&b.broker_name, b.queue_id)));
        Ok(out)
    }

    /// GET_CONSUME_STATS: on the topic's masters, or on every master for all the group's
    /// topics.
    pub async fn consume_stats(
        &self,
        group: &str,
        topic: Option<&str>,
    ) -> AdminResult<Vec<QueueProgress>> {
        let masters = match topic {
            Some(t) => self.topic_masters(t).await?,
            None => self.masters(None).await?,
        };
        let mut out = Vec::new();
        for (_, addr) in masters {
            let mut cmd = RemotingCommand::request(request::GET_CONSUME_STATS, 0)
                .with_ext("consumerGroup", group);
            if let Some(t) = topic {
                cmd = cmd.with_ext("topic", t);
            }
            let resp = self.broker_call(&addr, cmd, "consume stats").await?;
            let stats: ConsumeStatsBody = decode_body(&resp.body).map_err(|e| e.to_string())?;
            out.extend(
                stats
                    .offset_table
                    .0
                    .into_iter()
                    .map(|(mq, w)| QueueProgress {
                        topic: mq.topic,
                        broker_name: mq.broker_name,
                        queue_id: mq.queue_id,
                        broker_offset: w.broker_offset,
                        consumer_offset: w.consumer_offset,
                        diff: w.broker_offset.saturating_sub(w.consumer_offset),
                        last_timestamp: w.last_timestamp,
                    }),
            );
        }
        out.sort_by(|a, b| {
            (&a.topic, &a.broker_name, a.queue_id).cmp(&(&b.topic, &b.broker_name, b.queue_id))
        });
        Ok(out)
    }

    /// Subscription groups known to any master (system groups included).
    pub async fn groups(&self) -> AdminResult<BTreeSet<String>> {
        let mut out = BTreeSet::new();
        for (_, addr) in self.masters(None).await? {
            let resp = self
                .broker_call(
                    &addr,
                    RemotingCommand::request(request::GET_ALL_SUBSCRIPTIONGROUP_CONFIG, 0),
                    "subscription groups",
                )
                .await?;
            let t: GroupTable = decode_body(&resp.body).map_err(|e| e.to_string())?;
            out.extend(t.subscription_group_table.into_keys());
        }
        Ok(out)
    }

    /// GET_BROKER_RUNTIME_INFO.
    pub async fn runtime_info(&self, addr: &str) -> AdminResult<BTreeMap<String, String>> {
        let resp = self
            .broker_call(
                addr,
                RemotingCommand::request(request::GET_BROKER_RUNTIME_INFO, 0),
                "runtime info",
            )
            .await?;
        let kv: KvTable = decode_body(&resp.body).map_err(|e| e.to_string())?;
        Ok(kv.table)
    }

    /// GET_CONSUMER_CONNECTION_LIST from the first master that has the group online.
    pub async fn consumer_connection(&self, group: &str) -> AdminResult<ConsumerConnection> {
        let mut last = format!("the consumer group [{group}] is not online");
        for (_, addr) in self.masters(None).await? {
            let resp = self
                .raw_call(
                    &addr,
                    RemotingCommand::request(request::GET_CONSUMER_CONNECTION_LIST, 0)
                        .with_ext("consumerGroup", group),
                )
                .await?;
            if resp.code == response::SUCCESS {
                return decode_body(&resp.body).map_err(|e| e.to_string());
            }
            last = refused(&resp, "consumer connection");
        }
        Err(last)
    }

    /// GET_PRODUCER_CONNECTION_LIST on the topic's masters (mqadmin asks one; clients
    /// heartbeat every broker they know, so the union is what is connected).
    pub async fn producer_connection(
        &self,
        group: &str,
        topic: &str,
    ) -> AdminResult<ProducerConnection> {
        let mut all = ProducerConnection::default();
        let mut last = None;
        for (_, addr) in self.topic_masters(topic).await? {
            let resp = self
                .raw_call(
                    &addr,
                    RemotingCommand::request(request::GET_PRODUCER_CONNECTION_LIST, 0)
                        .with_ext("producerGroup", group),
                )
                .await?;
            if resp.code == response::SUCCESS {
                let p: ProducerConnection = decode_body(&resp.body).map_err(|e| e.to_string())?;
                for c in p.connection_set {
                    if !all.connection_set.contains(&c) {
                        all.connection_set.push(c);
                    }
                }
            } else {
                last = Some(refused(&resp, "producer connection"));
            }
        }
        match (all.connection_set.is_empty(), last) {
            (true, Some(e)) => Err(e),
            (true, None) => Err(format!("the producer group [{group}] not exist")),
            _ => Ok(all),
        }
    }

    /// INVOKE_BROKER_TO_RESET_OFFSET on every master of the topic. `Err` keeps the broker's
    /// code in its text; CONSUMER_NOT_ONLINE (an Apache 4.x broker with no client online) is
    /// `Ok(None)`, for the caller to fall back to committing offsets itself.
    pub async fn reset_offset_by_time(
        &self,
        group: &str,
        topic: &str,
        timestamp: i64,
        force: bool,
    ) -> AdminResult<Option<Vec<(MessageQueue, u64)>>> {
        let mut out = Vec::new();
        for (_, addr) in self.topic_masters(topic).await? {
            let resp = self
                .raw_call(
                    &addr,
                    RemotingCommand::request(request::INVOKE_BROKER_TO_RESET_OFFSET, 0)
                        .with_ext("topic", topic)
                        .with_ext("group", group)
                        .with_ext("timestamp", timestamp)
                        .with_ext("isForce", force),
                )
                .await?;
            if resp.code == response::CONSUMER_NOT_ONLINE {
                return Ok(None);
            }
            let resp = ok(resp, &format!("reset offset on {addr}"))?;
            let body: ResetOffsetBody = decode_body(&resp.body).map_err(|e| e.to_string())?;
            out.extend(body.offset_table.0);
        }
        out.sort();
        Ok(Some(out))
    }

    /// CLONE_GROUP_OFFSET on every master of the topic.
    pub async fn clone_group_offset(
        &self,
        src: &str,
        dest: &str,
        topic: &str,
        offline: bool,
    ) -> AdminResult<()> {
        for (_, addr) in self.topic_masters(topic).await? {
            self.broker_call(
                &addr,
                RemotingCommand::request(request::CLONE_GROUP_OFFSET, 0)
                    .with_ext("srcGroup", src)
                    .with_ext("destGroup", dest)
                    .with_ext("topic", topic)
                    .with_ext("offline", offline),
                "clone group offset",
            )
            .await?;
        }
        Ok(())
    }

    /// GET_BROKER_CONFIG: the broker's properties.
    pub async fn broker_config(&self, addr: &str) -> AdminResult<BTreeMap<String, String>> {
        let resp = self
            .broker_call(
                addr,
                RemotingCommand::request(request::GET_BROKER_CONFIG, 0),
                "broker config",
            )
            .await?;
        Ok(String::from_utf8_lossy(&resp.body)
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once('=')?;
                Some((k.trim().to_string(), v.trim().to_string()))
            })
            .collect())
    }

    /// UPDATE_BROKER_CONFIG of one key.
    pub async fn update_broker_config(
        &self,
        addr: &str,
        key: &str,
        value: &str,
    ) -> AdminResult<()> {
        self.broker_call(
            addr,
            RemotingCommand::request(request::UPDATE_BROKER_CONFIG, 0)
                .with_body(format!("{key}={value}\n").into_bytes()),
            "update broker config",
        )
        .await
        .map(|_| ())
    }

    /// VIEW_MESSAGE_BY_ID of an offset message id (only on a broker the name server knows).
    pub async fn message_by_id(&self, id: &str) -> AdminResult<Vec<MessageExt>> {
        let (host, offset) =
            parse_offset_msg_id(id).ok_or_else(|| format!("{id:?} is not an offset message id"))?;
        let host = host.to_string();
        let known = self
            .cluster_info()
            .await?
            .broker_addr_table
            .values()
            .any(|b| b.broker_addrs.values().any(|a| *a == host));
        if !known {
            return Err(format!(
                "{id:?} names broker {host}, which the name server does not know \
                 (a client-side msgId? use the offsetMsgId, or query by unique key)"
            ));
        }
        let resp = self
            .broker_call(
                &host,
                RemotingCommand::request(request::VIEW_MESSAGE_BY_ID, 0).with_ext("offset", offset),
                "query by id",
            )
            .await?;
        decode_messages(&resp.body).map_err(|(_, e)| e.to_string())
    }

    /// QUERY_MESSAGE on every master of the topic: messages indexed under `key` (as a unique
    /// key when `unique`, checked against the message: the index holds hashes).
    pub async fn messages_by_key(
        &self,
        topic: &str,
        key: &str,
        unique: bool,
    ) -> AdminResult<Vec<MessageExt>> {
        let mut found = Vec::new();
        for (_, addr) in self.topic_masters(topic).await? {
            let cmd = RemotingCommand::request(request::QUERY_MESSAGE, 0)
                .with_ext("topic", topic)
                .with_ext("key", key)
                .with_ext("maxNum", 64)
                .with_ext("beginTimestamp", 0)
                .with_ext("endTimestamp", i64::MAX)
                .with_ext("_UNIQUE_KEY_QUERY", unique);
            let resp = self.raw_call(&addr, cmd).await?;
            if resp.code == response::SUCCESS {
                found.extend(decode_messages(&resp.body).map_err(|(_, e)| e.to_string())?);
            }
        }
        if unique {
            found.retain(|m| m.property("UNIQ_KEY") == Some(key.as_bytes()));
        } else {
            found.retain(|m| {
                m.property("KEYS")
                    .is_some_and(|ks| String::from_utf8_lossy(ks).split(' ').any(|k| k == key))
            });
        }
        Ok(found)
    }

    /// Up to `max` messages of one queue from `offset` (a pull that commits nothing; the
    /// subscription sent along, so no group needs to exist).
    pub async fn pull_at(
        &self,
        topic: &str,
        broker: &str,
        queue: u32,
        offset: u64,
        max: u32,
    ) -> AdminResult<(Vec<MessageExt>, RemotingCommand)> {
        let addr = self
            .topic_masters(topic)
            .await?
            .into_iter()
            .find(|(name, _)| name == broker)
            .map(|(_, addr)| addr)
            .ok_or_else(|| format!("{topic} has no queues on a broker named {broker}"))?;
        let cmd = RemotingCommand::request(request::PULL_MESSAGE, 0)
            .with_ext("consumerGroup", "TOOLS_CONSUMER")
            .with_ext("topic", topic)
            .with_ext("queueId", queue)
            .with_ext("queueOffset", offset)
            .with_ext("maxMsgNums", max)
            .with_ext("sysFlag", 4)
            .with_ext("commitOffset", 0)
            .with_ext("suspendTimeoutMillis", 0)
            .with_ext("subscription", "*")
            .with_ext("subVersion", 0);
        let resp = self.raw_call(&addr, cmd).await?;
        let found = match resp.code {
            response::SUCCESS => decode_messages(&resp.body).map_err(|(_, e)| e.to_string())?,
            _ => Vec::new(),
        };
        Ok((found, resp))
    }

    /// SEARCH_OFFSET_BY_TIMESTAMP, GET_MIN_OFFSET or GET_MAX_OFFSET of one queue.
    pub async fn queue_offset(
        &self,
        addr: &str,
        topic: &str,
        queue: u32,
        at: Option<i64>,
        max: bool,
    ) -> AdminResult<u64> {
        let cmd = match at {
            Some(ts) => RemotingCommand::request(request::SEARCH_OFFSET_BY_TIMESTAMP, 0)
                .with_ext("timestamp", ts),
            None if max => RemotingCommand::request(request::GET_MAX_OFFSET, 0),
            None => RemotingCommand::request(request::GET_MIN_OFFSET, 0),
        };
        let cmd = cmd.with_ext("topic", topic).with_ext("queueId", queue);
        let resp = self.broker_call(addr, cmd, "queue offset").await?;
        resp.ext("offset")
            .and_then(|o| o.parse().ok())
            .ok_or_else(|| format!("{addr} answered no offset for {topic}:{queue}"))
    }

    /// UPDATE_CONSUMER_OFFSET of one queue.
    pub async fn commit_offset(
        &self,
        addr: &str,
        group: &str,
        topic: &str,
        queue: u32,
        offset: u64,
    ) -> AdminResult<()> {
        self.broker_call(
            addr,
            RemotingCommand::request(request::UPDATE_CONSUMER_OFFSET, 0)
                .with_ext("consumerGroup", group)
                .with_ext("topic", topic)
                .with_ext("queueId", queue)
                .with_ext("commitOffset", offset),
            "commit offset",
        )
        .await
        .map(|_| ())
    }
}

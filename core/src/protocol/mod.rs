//! Bodies of protocol messages, in the JSON shapes Apache RocketMQ 5.x uses (field names as Java
//! serializes them). Every body is read through [`lenient::decode_body`].
//!
//! Broker-id keys are written quoted ("0") to every client, whatever its version. Apache's
//! name server writes fastjson's bare keys (`{0:"..."}`, not JSON) to clients older than
//! V4_9_4 (401); rockfish does not emulate that: every SDK seen reads quoted keys (Java's
//! fastjson, ali-ons (sends version 121) with its JSON5-style parser, rocketmq-client-cpp,
//! rocketmq-client-rust), while the bare form breaks any strict JSON parser. Rockfish's own
//! clients read both forms.

pub mod heartbeat;
pub mod lenient;

pub use lenient::{decode_body, request_body};

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

pub use rockfish_store::config::{DataVersion, TopicConfig};

/// Topic names with a meaning to RocketMQ (MixAll's prefixes), shared by broker and clients.
pub mod topics {
    /// A consumer group's retry topic is this prefix and the group.
    pub const RETRY_GROUP_TOPIC_PREFIX: &str = "%RETRY%";
    /// A consumer group's dead-letter topic is this prefix and the group.
    pub const DLQ_GROUP_TOPIC_PREFIX: &str = "%DLQ%";

    pub fn retry_topic(group: &str) -> String {
        format!("{RETRY_GROUP_TOPIC_PREFIX}{group}")
    }
    pub fn is_retry_topic(topic: &str) -> bool {
        topic.starts_with(RETRY_GROUP_TOPIC_PREFIX)
    }
}

/// PULL_MESSAGE's sysFlag bits (PullSysFlag), shared by broker and consumer.
pub mod pull_flag {
    /// The request carries an offset to commit (commitOffset).
    pub const COMMIT_OFFSET: i32 = 1;
    /// The broker may hold the pull until a message arrives (long polling).
    pub const SUSPEND: i32 = 1 << 1;
    /// The request carries its subscription expression.
    pub const SUBSCRIPTION: i32 = 1 << 2;
    /// Class filter mode (not supported; accepted and ignored, as Apache 5 does).
    pub const CLASS_FILTER: i32 = 1 << 3;
}

/// RocketMQ's permission bits.
pub mod perm {
    pub const PRIORITY: u32 = 1 << 3;
    pub const READ: u32 = 1 << 2;
    pub const WRITE: u32 = 1 << 1;
    pub const INHERIT: u32 = 1;

    pub fn readable(perm: u32) -> bool {
        perm & READ != 0
    }
    pub fn writeable(perm: u32) -> bool {
        perm & WRITE != 0
    }
}

/// The master's broker id.
pub const MASTER_ID: u64 = 0;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct QueueData {
    pub broker_name: String,
    pub read_queue_nums: u32,
    pub write_queue_nums: u32,
    pub perm: u32,
    pub topic_sys_flag: u32,
}

/// A broker group in a route. `enableActingMaster` and `zoneName` are RocketMQ 5's fields;
/// 5.x SDKs (rocketmq-client-rust) require the first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BrokerData {
    pub cluster: String,
    pub broker_name: String,
    /// Broker id to address; id 0 is the master.
    pub broker_addrs: BTreeMap<u64, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone_name: Option<String>,
    pub enable_acting_master: bool,
}

impl BrokerData {
    pub fn new(cluster: &str, broker_name: &str, broker_addrs: BTreeMap<u64, String>) -> Self {
        BrokerData {
            cluster: cluster.to_string(),
            broker_name: broker_name.to_string(),
            broker_addrs,
            zone_name: None,
            enable_acting_master: false,
        }
    }

    pub fn master_addr(&self) -> Option<&str> {
        self.broker_addrs.get(&MASTER_ID).map(String::as_str)
    }

    /// Where a consumer reads and commits: the master, or while it is gone the slave with
    /// the lowest id (as Java's findBrokerAddressInSubscribe / InAdmin fall back).
    pub fn read_addr(&self) -> Option<&str> {
        self.master_addr()
            .or_else(|| self.broker_addrs.values().next().map(String::as_str))
    }
}

/// GET_ROUTEINFO_BY_TOPIC's body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TopicRouteData {
    pub order_topic_conf: Option<String>,
    pub queue_datas: Vec<QueueData>,
    pub broker_datas: Vec<BrokerData>,
    pub filter_server_table: BTreeMap<String, Vec<String>>,
    /// RocketMQ 5's static-topic mappings (absent unless a topic is static; kept opaque).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic_queue_mapping_by_broker: Option<BTreeMap<String, serde_json::Value>>,
}

impl TopicRouteData {
    /// The topic's readable queues, sorted: what a consumer allocates over (Apache's
    /// topicRouteData2TopicSubscribeInfo; RebalanceImpl sorts before allocating).
    pub fn readable_queues(&self, topic: &str) -> Vec<MessageQueue> {
        let mut out: Vec<MessageQueue> = self
            .queue_datas
            .iter()
            .filter(|q| perm::readable(q.perm))
            .flat_map(|q| {
                (0..q.read_queue_nums).map(|i| MessageQueue {
                    topic: topic.into(),
                    broker_name: q.broker_name.clone(),
                    queue_id: i,
                })
            })
            .collect();
        out.sort();
        out
    }
}

/// GET_BROKER_CLUSTER_INFO's body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ClusterInfo {
    pub broker_addr_table: BTreeMap<String, BrokerData>,
    pub cluster_addr_table: BTreeMap<String, BTreeSet<String>>,
}

/// GET_ALL_TOPIC_LIST_FROM_NAMESERVER's body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TopicList {
    pub topic_list: BTreeSet<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker_addr: Option<String>,
}

/// The topic configs a broker registers, with their version.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TopicConfigSerializeWrapper {
    #[serde(default)]
    pub topic_config_table: BTreeMap<String, TopicConfig>,
    #[serde(default)]
    pub data_version: DataVersion,
}

/// REGISTER_BROKER's body (uncompressed form).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisterBrokerBody {
    #[serde(default)]
    pub topic_config_serialize_wrapper: TopicConfigSerializeWrapper,
    #[serde(default)]
    pub filter_server_list: Vec<String>,
}

/// A KV table body (REGISTER_BROKER's response carries the ORDER_TOPIC_CONFIG namespace).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KvTable {
    pub table: BTreeMap<String, String>,
}

/// Serializes a body as JSON bytes.
pub fn to_body<T: Serialize>(value: &T) -> bytes::Bytes {
    bytes::Bytes::from(serde_json::to_vec(value).expect("protocol bodies always serialize"))
}

/// A message queue, as clients name it. Ordered as Java's `MessageQueue.compareTo`: topic,
/// then broker name, then queue id (rebalance sorts by this).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MessageQueue {
    pub topic: String,
    pub broker_name: String,
    pub queue_id: u32,
}

impl std::fmt::Display for MessageQueue {
    /// Java's `MessageQueue.toString()`, which consistent-hash allocation hashes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "MessageQueue [topic={}, brokerName={}, queueId={}]",
            self.topic, self.broker_name, self.queue_id
        )
    }
}

/// LOCK_BATCH_MQ's and UNLOCK_BATCH_MQ's body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LockBatchRequestBody {
    pub consumer_group: String,
    pub client_id: String,
    pub only_this_broker: bool,
    pub mq_set: BTreeSet<MessageQueue>,
}

/// LOCK_BATCH_MQ's response body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LockBatchResponseBody {
    #[serde(rename = "lockOKMQSet")]
    pub lock_ok_mq_set: BTreeSet<MessageQueue>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readable_queues_leave_out_brokers_that_forbid_reading_and_come_sorted() {
        let q = |broker: &str, n: u32, perm: u32| QueueData {
            broker_name: broker.into(),
            read_queue_nums: n,
            write_queue_nums: n,
            perm,
            topic_sys_flag: 0,
        };
        let route = TopicRouteData {
            queue_datas: vec![
                q("b", 2, perm::READ | perm::WRITE),
                q("a", 1, perm::READ),
                q("w", 3, perm::WRITE),
            ],
            ..TopicRouteData::default()
        };
        let got: Vec<(String, u32)> = route
            .readable_queues("T")
            .into_iter()
            .map(|m| (m.broker_name, m.queue_id))
            .collect();
        assert_eq!(got, vec![("a".into(), 0), ("b".into(), 0), ("b".into(), 1)]);
    }
}

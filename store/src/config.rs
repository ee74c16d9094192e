//! Config files (topics, consumer offsets, delay offsets) in RocketMQ's JSON shapes under
//! `config/`, replaced atomically so a crash leaves the old file or the new one. A file that
//! cannot be parsed is an error naming the file and the parse error: silently starting over
//! would rewind every consumer group.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::disk::Disk;
use crate::error::{StoreError, StoreResult};

pub const TOPICS_FILE: &str = "config/topics.json";
pub const CONSUMER_OFFSETS_FILE: &str = "config/consumerOffset.json";
pub const DELAY_OFFSETS_FILE: &str = "config/delayOffset.json";
pub const SUBSCRIPTION_GROUPS_FILE: &str = "config/subscriptionGroup.json";

/// Reads and parses a JSON config file; `Ok(None)` if it does not exist.
pub fn load<T: DeserializeOwned, D: Disk>(disk: &D, path: &str) -> StoreResult<Option<T>> {
    let Some(data) = disk.read_file(path)? else {
        return Ok(None);
    };
    serde_json::from_slice(&data)
        .map(Some)
        .map_err(|e| StoreError::Config {
            file: path.to_string(),
            what: format!("unreadable: {e}"),
        })
}

/// Writes a config file atomically.
pub fn save<T: Serialize, D: Disk>(disk: &mut D, path: &str, value: &T) -> StoreResult<()> {
    let data = serde_json::to_vec_pretty(value).map_err(|e| StoreError::Config {
        file: path.to_string(),
        what: format!("cannot encode: {e}"),
    })?;
    Ok(disk.write_file_atomic(path, &data)?)
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataVersion {
    pub timestamp: i64,
    pub counter: i64,
}

/// A topic's configuration, with RocketMQ's field names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TopicConfig {
    pub topic_name: String,
    pub read_queue_nums: u32,
    pub write_queue_nums: u32,
    /// PERM_READ = 4, PERM_WRITE = 2, PERM_INHERIT = 1.
    pub perm: u32,
    #[serde(default = "single_tag")]
    pub topic_filter_type: String,
    #[serde(default)]
    pub topic_sys_flag: u32,
    #[serde(default)]
    pub order: bool,
}

fn single_tag() -> String {
    "SINGLE_TAG".into()
}

impl TopicConfig {
    pub fn new(name: &str, queues: u32) -> Self {
        TopicConfig {
            topic_name: name.to_string(),
            read_queue_nums: queues,
            write_queue_nums: queues,
            perm: 6,
            topic_filter_type: single_tag(),
            topic_sys_flag: 0,
            order: false,
        }
    }
}

/// `config/topics.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TopicConfigTable {
    pub topic_config_table: BTreeMap<String, TopicConfig>,
    #[serde(default)]
    pub data_version: DataVersion,
}

/// `config/consumerOffset.json`: "topic@group" to queue id to next offset to consume.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerOffsetTable {
    pub offset_table: BTreeMap<String, BTreeMap<u32, u64>>,
    /// rockfish's own field (RocketMQ tools ignore it): the offset journal's queue offset this
    /// file covers; loading replays the journal from there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal_offset: Option<u64>,
}

impl ConsumerOffsetTable {
    pub fn key(topic: &str, group: &str) -> String {
        format!("{topic}@{group}")
    }
    pub fn get(&self, topic: &str, group: &str, queue_id: u32) -> Option<u64> {
        self.offset_table
            .get(&Self::key(topic, group))?
            .get(&queue_id)
            .copied()
    }
    pub fn set(&mut self, topic: &str, group: &str, queue_id: u32, offset: u64) {
        self.offset_table
            .entry(Self::key(topic, group))
            .or_default()
            .insert(queue_id, offset);
    }
}

/// `config/delayOffset.json`: delay level to the schedule queue's next offset to deliver.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DelayOffsetTable {
    pub offset_table: BTreeMap<u32, u64>,
}

/// A consumer group's configuration (RocketMQ's SubscriptionGroupConfig: 4.9's fields and
/// defaults and 5's consumeMessageOrderly). Absent fields take their defaults, as fastjson fills a Java object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SubscriptionGroupConfig {
    pub group_name: String,
    pub consume_enable: bool,
    pub consume_from_min_enable: bool,
    pub consume_broadcast_enable: bool,
    /// RocketMQ 5: the group consumes FIFO (a 5.x client's receives are orderly pops and its
    /// settings say fifo).
    pub consume_message_orderly: bool,
    pub retry_queue_nums: i32,
    pub retry_max_times: i32,
    pub broker_id: i64,
    pub which_broker_when_consume_slowly: i64,
    pub notify_consumer_ids_changed_enable: bool,
}

impl Default for SubscriptionGroupConfig {
    fn default() -> Self {
        SubscriptionGroupConfig {
            group_name: String::new(),
            consume_enable: true,
            consume_from_min_enable: true,
            consume_broadcast_enable: true,
            consume_message_orderly: false,
            retry_queue_nums: 1,
            retry_max_times: 16,
            broker_id: 0,
            which_broker_when_consume_slowly: 1,
            notify_consumer_ids_changed_enable: true,
        }
    }
}

impl SubscriptionGroupConfig {
    pub fn new(group: &str) -> Self {
        SubscriptionGroupConfig {
            group_name: group.to_string(),
            ..Default::default()
        }
    }
}

/// `config/subscriptionGroup.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionGroupTable {
    #[serde(default)]
    pub subscription_group_table: BTreeMap<String, SubscriptionGroupConfig>,
    #[serde(default)]
    pub data_version: DataVersion,
}

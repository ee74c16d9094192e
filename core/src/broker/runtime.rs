//! What operators ask a broker about itself and its clients: GET_BROKER_RUNTIME_INFO,
//! GET_CONSUMER_CONNECTION_LIST, GET_PRODUCER_CONNECTION_LIST, GET_CONSUME_STATS,
//! GET_TOPIC_STATS_INFO, and the offsets they move: INVOKE_BROKER_TO_RESET_OFFSET,
//! CLONE_GROUP_OFFSET. Bodies keyed by message queue are written as fastjson writes a
//! `Map<MessageQueue, _>` (a JSON object as each key), which Java clients expect.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use rockfish_store::{Boundary, Disk};
use serde::{Deserialize, Serialize};

use super::Broker;
use crate::machine::Output;
use crate::protocol::{MessageQueue, to_body};
use crate::remoting::codes::{request, response};
use crate::remoting::{FieldError, RemotingCommand};

/// Java's `KVTable`: GET_BROKER_RUNTIME_INFO's body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KvTable {
    pub table: BTreeMap<String, String>,
}

/// One queue of GET_CONSUME_STATS (Java's `OffsetWrapper`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct OffsetWrapper {
    pub broker_offset: u64,
    pub consumer_offset: u64,
    pub last_timestamp: i64,
}

/// One queue of GET_TOPIC_STATS_INFO (Java's `TopicOffset`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TopicOffset {
    pub min_offset: u64,
    pub max_offset: u64,
    pub last_update_timestamp: i64,
}

/// Writes `{"offsetTable":{<mq>:<value>,...}<rest>}` with each queue as a JSON object key
/// (fastjson's `Map<MessageQueue, _>`; quoted keys would not decode in Java).
pub fn mq_table_body<V: Serialize>(entries: &[(MessageQueue, V)], rest: &str) -> bytes::Bytes {
    let mut s = String::from("{\"offsetTable\":{");
    for (i, (mq, v)) in entries.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        // fastjson orders an object's fields by name.
        let _ = write!(
            s,
            "{{\"brokerName\":{},\"queueId\":{},\"topic\":{}}}:{}",
            serde_json::to_string(&mq.broker_name).unwrap_or_default(),
            mq.queue_id,
            serde_json::to_string(&mq.topic).unwrap_or_default(),
            serde_json::to_string(v).unwrap_or_default()
        );
    }
    s.push('}');
    s.push_str(rest);
    s.push('}');
    bytes::Bytes::from(s)
}

impl<D: Disk> Broker<D> {
    fn queue(&self, topic: &str, queue_id: u32) -> MessageQueue {
        MessageQueue {
            topic: topic.to_string(),
            broker_name: self.config.broker_name.clone(),
            queue_id,
        }
    }

    /// The store time of the message at `offset` of a queue (0 if there is none).
    fn store_time_at(&self, topic: &str, queue_id: u32, offset: u64) -> i64 {
        match self.store.entry(topic, queue_id, offset) {
            Ok(Some(e)) => self.store.read(e.offset).map_or(0, |r| r.store_timestamp()),
            _ => 0,
        }
    }

    /// GET_BROKER_RUNTIME_INFO: Apache's keys where rockfish has the value (mqadmin
    /// brokerStatus and the dashboard read these).
    pub(super) fn runtime_info(&mut self, cmd: &RemotingCommand, now: u64) -> RemotingCommand {
        self.stats.sample(now);
        let mut t = BTreeMap::new();
        let mut kv = |k: &str, v: String| {
            t.insert(k.to_string(), v);
        };
        let s = &self.stats;
        let rates = |w| s.rates(now, w);
        let (p10, g10) = rates(10_000);
        let (p60, g60) = rates(60_000);
        let (p600, g600) = rates(600_000);
        kv(
            "brokerVersionDesc",
            crate::remoting::command::version_name(crate::remoting::command::CURRENT_VERSION),
        );
        kv(
            "brokerVersion",
            crate::remoting::command::CURRENT_VERSION.to_string(),
        );
        kv("rockfishVersion", env!("CARGO_PKG_VERSION").to_string());
        let day = s.day_marks();
        kv("msgPutTotalYesterdayMorning", day.put_yesterday.to_string());
        kv("msgPutTotalTodayMorning", day.put_today.to_string());
        kv("msgPutTotalTodayNow", s.put_total.messages.to_string());
        kv("msgGetTotalYesterdayMorning", day.got_yesterday.to_string());
        kv("msgGetTotalTodayMorning", day.got_today.to_string());
        kv("msgGetTotalTodayNow", s.got_total.messages.to_string());
        kv("putTps", format!("{p10:.2} {p60:.2} {p600:.2}"));
        // 4.x's spelling and 5.x's.
        kv("getTransferedTps", format!("{g10:.2} {g60:.2} {g600:.2}"));
        kv("getTransferredTps", format!("{g10:.2} {g60:.2} {g600:.2}"));
        kv("getTotalTps", format!("{g10:.2} {g60:.2} {g600:.2}"));
        kv("getFoundTps", format!("{g10:.2} {g60:.2} {g600:.2}"));
        kv("putMessageTimesTotal", s.put_total.messages.to_string());
        kv("putMessageSizeTotal", s.put_total.bytes.to_string());
        kv(
            "putMessageAverageSize",
            format!(
                "{:.2}",
                s.put_total.bytes as f64 / s.put_total.messages.max(1) as f64
            ),
        );
        let boot = rockfish_store::java_millis(s.started_at);
        kv("bootTimestamp", boot.to_string());
        kv("startAcceptSendRequestTimeStamp", boot.to_string());
        let up = now.saturating_sub(s.started_at) / 1000;
        kv(
            "runtime",
            format!(
                "[ {} days, {} hours, {} minutes, {} seconds ]",
                up / 86400,
                up / 3600 % 24,
                up / 60 % 60,
                up % 60
            ),
        );
        let log = self.store.commit_log();
        kv("commitLogMinOffset", log.min_offset().to_string());
        kv("commitLogMaxOffset", log.write_pos().to_string());
        kv(
            "remainHowManyDataToFlush",
            format!(
                "{:.2} MiB",
                log.write_pos().saturating_sub(log.flushed()) as f64 / (1 << 20) as f64
            ),
        );
        kv("dispatchBehindBytes", "0".into());
        kv("pageCacheLockTimeMills", "0".into());
        // -1 for an empty store, as Apache's.
        kv("earliestMessageTimeStamp", {
            let min = log.min_offset();
            self.store
                .read(min)
                .map_or(-1, |r| r.store_timestamp())
                .to_string()
        });
        kv("brokerRole", self.repl.role.name().to_string());
        kv(
            "brokerPermission",
            self.config.broker_permission.to_string(),
        );
        let (producers, consumers) = self.clients.counts();
        kv("producerConnections", producers.to_string());
        kv("consumerConnections", consumers.to_string());
        kv("heldPulls", self.held.len().to_string());
        kv("syncFlushWaiters", self.flush.waiters.len().to_string());
        for (k, v) in [
            ("sendThreadPoolQueueSize", 0),
            ("sendThreadPoolQueueCapacity", 0),
            ("pullThreadPoolQueueSize", 0),
            ("pullThreadPoolQueueCapacity", 0),
            ("queryThreadPoolQueueSize", 0),
            ("queryThreadPoolQueueCapacity", 0),
            ("sendThreadPoolQueueHeadWaitTimeMills", 0),
            ("pullThreadPoolQueueHeadWaitTimeMills", 0),
            ("queryThreadPoolQueueHeadWaitTimeMills", 0),
        ] {
            // One task serves every request: no thread pools to report.
            kv(k, v.to_string());
        }
        Self::body_response(cmd, to_body(&KvTable { table: t }))
    }

    /// GET_CONSUMER_CONNECTION_LIST: CONSUMER_NOT_ONLINE when no client of the group is
    /// connected, as Apache answers.
    pub(super) fn consumer_connection_list(
        &mut self,
        cmd: &RemotingCommand,
    ) -> Result<RemotingCommand, FieldError> {
        let group: String = cmd.ext_req("consumerGroup")?;
        Ok(match self.clients.consumer_connection(&group) {
            Some(c) if !c.connection_set.is_empty() => Self::body_response(cmd, to_body(&c)),
            _ => RemotingCommand::response_to(
                cmd,
                response::CONSUMER_NOT_ONLINE,
                Some(format!("the consumer group[{group}] not online")),
            ),
        })
    }

    /// GET_PRODUCER_CONNECTION_LIST.
    pub(super) fn producer_connection_list(
        &mut self,
        cmd: &RemotingCommand,
    ) -> Result<RemotingCommand, FieldError> {
        let group: String = cmd.ext_req("producerGroup")?;
        Ok(match self.clients.producer_connection(&group) {
            Some(p) => Self::body_response(cmd, to_body(&p)),
            None => RemotingCommand::response_to(
                cmd,
                response::SYSTEM_ERROR,
                Some(format!("the producer group[{group}] not exist")),
            ),
        })
    }

    /// The topics a group has offsets for on this broker.
    fn topics_of_group(&self, group: &str) -> Vec<String> {
        let suffix = format!("@{group}");
        self.offsets
            .table
            .offset_table
            .keys()
            .filter_map(|k| k.strip_suffix(&suffix))
            .map(str::to_string)
            .collect()
    }

    /// GET_CONSUME_STATS: per queue of the topic (every topic the group has offsets for when
    /// none is named), the broker's and the group's offsets.
    pub(super) fn consume_stats(
        &mut self,
        cmd: &RemotingCommand,
        now: u64,
    ) -> Result<RemotingCommand, FieldError> {
        let group: String = cmd.ext_req("consumerGroup")?;
        let topics = match cmd.ext("topic").filter(|t| !t.is_empty()) {
            Some(t) => vec![t.to_string()],
            None => self.topics_of_group(&group),
        };
        let mut entries = Vec::new();
        for topic in topics {
            let Some(tc) = self.topic(&topic) else {
                continue;
            };
            let queues = tc.write_queue_nums.max(tc.read_queue_nums);
            for q in 0..queues {
                let broker_offset = self.visible_max_offset(&topic, q).unwrap_or(0);
                let consumer_offset = self.offsets.table.get(&topic, &group, q).unwrap_or(0);
                let last_timestamp = match consumer_offset {
                    0 => 0,
                    o => self.store_time_at(&topic, q, o - 1),
                };
                entries.push((
                    self.queue(&topic, q),
                    OffsetWrapper {
                        broker_offset,
                        consumer_offset,
                        last_timestamp,
                    },
                ));
            }
        }
        let (_, got10) = self.stats.rates(now, 10_000);
        let rest = format!(",\"consumeTps\":{got10:.2}");
        Ok(Self::body_response(cmd, mq_table_body(&entries, &rest)))
    }

    /// QUERY_TOPIC_CONSUME_BY_WHO: the groups with a client subscribed to the topic or with
    /// offsets on it (Java's `GroupList`).
    pub(super) fn topic_consumed_by(
        &mut self,
        cmd: &RemotingCommand,
    ) -> Result<RemotingCommand, FieldError> {
        let topic: String = cmd.ext_req("topic")?;
        let prefix = format!("{topic}@");
        let mut groups: std::collections::BTreeSet<String> = self
            .offsets
            .table
            .offset_table
            .keys()
            .filter_map(|k| k.strip_prefix(&prefix))
            .map(str::to_string)
            .collect();
        groups.extend(self.clients.groups_subscribed_to(&topic));
        Ok(Self::body_response(
            cmd,
            to_body(&serde_json::json!({ "groupList": groups })),
        ))
    }

    /// GET_TOPIC_STATS_INFO.
    pub(super) fn topic_stats(
        &mut self,
        cmd: &RemotingCommand,
    ) -> Result<RemotingCommand, FieldError> {
        let topic: String = cmd.ext_req("topic")?;
        let Some(tc) = self.topic(&topic) else {
            return Ok(RemotingCommand::response_to(
                cmd,
                response::TOPIC_NOT_EXIST,
                Some(format!("topic[{topic}] not exist")),
            ));
        };
        let queues = tc.write_queue_nums.max(tc.read_queue_nums);
        let mut entries = Vec::new();
        for q in 0..queues {
            let max_offset = self.visible_max_offset(&topic, q).unwrap_or(0);
            let last_update_timestamp = match max_offset {
                0 => 0,
                o => self.store_time_at(&topic, q, o - 1),
            };
            entries.push((
                self.queue(&topic, q),
                TopicOffset {
                    min_offset: self.store.min_offset(&topic, q),
                    max_offset,
                    last_update_timestamp,
                },
            ));
        }
        Ok(Self::body_response(cmd, mq_table_body(&entries, "")))
    }

    /// INVOKE_BROKER_TO_RESET_OFFSET: moves a group's offsets on every queue of a topic to the
    /// first message stored at or after `timestamp` (-1: the end), only backwards unless
    /// `isForce`. The new offsets are committed here (so a group with no client online is
    /// reset too, as RocketMQ 5 does) and pushed to the group's connected clients
    /// (RESET_CONSUMER_CLIENT_OFFSET), which drop what they hold and pull from there.
    pub(super) fn reset_offset(
        &mut self,
        cmd: &RemotingCommand,
        now: u64,
    ) -> Result<RemotingCommand, FieldError> {
        let topic: String = cmd.ext_req("topic")?;
        let group: String = cmd.ext_req("group")?;
        let timestamp: i64 = cmd.ext_req("timestamp")?;
        let force = cmd.ext_bool("isForce")?.unwrap_or(true);
        let Some(tc) = self.topic(&topic) else {
            return Ok(RemotingCommand::response_to(
                cmd,
                response::SYSTEM_ERROR,
                Some(format!(
                    "[reset-offset] reset offset failed, no topic in this broker. topic={topic}"
                )),
            ));
        };
        let queues = tc.write_queue_nums.max(tc.read_queue_nums);
        let known = (0..queues).any(|q| self.offsets.table.get(&topic, &group, q).is_some())
            || self.groups.get(&group).is_some()
            || self.clients.subscribes(&group, &topic).is_some();
        if !known {
            return Ok(RemotingCommand::response_to(
                cmd,
                response::SYSTEM_ERROR,
                Some(format!("THe consumer group <{group}> not exist")),
            ));
        }
        if let Some((code, why)) = self.unwritable(response::SYSTEM_ERROR) {
            return Ok(RemotingCommand::response_to(cmd, code, Some(why)));
        }
        let mut entries = Vec::new();
        for q in 0..queues {
            let end = self.visible_max_offset(&topic, q).unwrap_or(0);
            let target = if timestamp < 0 {
                end
            } else {
                self.store
                    .offset_by_time(&topic, q, timestamp, Boundary::Lower)
                    .unwrap_or(0)
                    .min(end)
            };
            let current = self.offsets.table.get(&topic, &group, q);
            let offset = match current {
                Some(c) if !force && target >= c => c,
                _ => target,
            };
            entries.push((self.queue(&topic, q), offset));
        }
        for (mq, offset) in &entries {
            if self.offsets_admit(&topic, &group, mq.queue_id) {
                self.commit_offset(&topic, &group, mq.queue_id, *offset, now);
            }
        }
        let body = mq_table_body(&entries, "");
        for conn in self.clients.conns(&group) {
            let opaque = self.next_opaque();
            let mut push = RemotingCommand::request(request::RESET_CONSUMER_CLIENT_OFFSET, opaque)
                .with_ext("topic", &topic)
                .with_ext("group", &group)
                .with_ext("timestamp", timestamp)
                .with_ext("isForce", force)
                .with_body(body.clone());
            push.flag |= crate::remoting::command::FLAG_ONEWAY;
            self.outputs.push_back(Output::Send { conn, cmd: push });
        }
        tracing::info!(%topic, %group, timestamp, force, "consumer offsets reset");
        Ok(Self::body_response(cmd, body))
    }

    /// CLONE_GROUP_OFFSET: the source group's offsets on a topic (every topic it has offsets
    /// for when none is named) become the destination group's.
    pub(super) fn clone_group_offset(
        &mut self,
        cmd: &RemotingCommand,
        now: u64,
    ) -> Result<RemotingCommand, FieldError> {
        let src: String = cmd.ext_req("srcGroup")?;
        let dest: String = cmd.ext_req("destGroup")?;
        let offline = cmd.ext_bool("offline")?.unwrap_or(false);
        if let Err(why) = super::validate_group(&dest) {
            return Ok(RemotingCommand::response_to(
                cmd,
                response::SYSTEM_ERROR,
                Some(why),
            ));
        }
        let topics = match cmd.ext("topic").filter(|t| !t.is_empty()) {
            Some(t) => vec![t.to_string()],
            None => self.topics_of_group(&src),
        };
        for topic in topics {
            let Some(tc) = self.topic(&topic) else {
                continue;
            };
            // Online, a source group's client must consume the topic (Apache's rule).
            if !offline && self.clients.subscribes(&src, &topic) == Some(false) {
                continue;
            }
            let queues = tc.write_queue_nums.max(tc.read_queue_nums);
            for q in 0..queues {
                if let Some(o) = self.offsets.table.get(&topic, &src, q)
                    && self.offsets_admit(&topic, &dest, q)
                {
                    self.commit_offset(&topic, &dest, q, o, now);
                }
            }
        }
        Ok(RemotingCommand::response_to(cmd, response::SUCCESS, None))
    }
}

impl<D: Disk> Broker<D> {
    /// The driver's measure of the recovery this broker started from (metrics).
    pub fn set_recovery_stats(&mut self, wall_ms: u64, replayed_bytes: u64, redispatched: u64) {
        self.stats.recovery = Some((wall_ms, replayed_bytes, redispatched));
    }

    /// What the metrics endpoint shows, read from the broker's state: RocketMQ 5's names and
    /// labels where it has them (see README, Metrics), rockfish's own prefixed `rockfish_`.
    pub fn metrics(&self, _now: u64) -> crate::metrics::Snapshot {
        use crate::metrics::{HistogramFamily, Snapshot};
        let mut m = Snapshot {
            common: vec![
                ("cluster", self.config.cluster_name.clone()),
                ("node_type", "broker".into()),
                ("node_id", self.config.broker_name.clone()),
            ],
            ..Snapshot::default()
        };
        let s = &self.stats;
        let topic = |t: &str| vec![("topic", t.to_string())];
        let tg =
            |t: &str, g: &str| vec![("topic", t.to_string()), ("consumer_group", g.to_string())];
        for (t, tr) in &s.put {
            m.counter("rocketmq_messages_in", "Messages stored, by topic.")
                .push(topic(t), tr.messages as f64);
            m.counter("rocketmq_throughput_in", "Bytes stored, by topic.")
                .push(topic(t), tr.bytes as f64);
        }
        for (t, groups) in &s.got {
            for (g, out) in groups {
                m.counter(
                    "rocketmq_messages_out",
                    "Messages served to consumers, by topic and group.",
                )
                .push(tg(t, g), out.traffic.messages as f64);
                m.counter(
                    "rocketmq_throughput_out",
                    "Bytes served to consumers, by topic and group.",
                )
                .push(tg(t, g), out.traffic.bytes as f64);
            }
        }
        // Lag, in flight and ready from the committed offsets and what was served.
        for (key, queues) in &self.offsets.table.offset_table {
            let Some((t, g)) = key.split_once('@') else {
                continue;
            };
            let pulled = s.got.get(t).and_then(|gs| gs.get(g));
            let (mut lag, mut inflight, mut ready) = (0u64, 0u64, 0u64);
            for (q, committed) in queues {
                let max = self.visible_max_offset(t, *q).unwrap_or(0);
                let served = pulled
                    .and_then(|p| p.pulled.get(q))
                    .copied()
                    .unwrap_or(*committed)
                    .clamp(*committed, max.max(*committed));
                lag += max.saturating_sub(*committed);
                inflight += served - committed;
                ready += max.saturating_sub(served);
            }
            m.gauge(
                "rocketmq_consumer_lag_messages",
                "Messages stored and not yet committed by the group.",
                None,
            )
            .push(tg(t, g), lag as f64);
            m.gauge(
                "rocketmq_consumer_inflight_messages",
                "Messages served to the group and not yet committed.",
                None,
            )
            .push(tg(t, g), inflight as f64);
            m.gauge(
                "rocketmq_consumer_ready_messages",
                "Messages stored and not yet served to the group.",
                None,
            )
            .push(tg(t, g), ready as f64);
        }
        for (g, n) in &s.to_dlq {
            m.counter(
                "rocketmq_send_to_dlq_messages",
                "Messages moved to the group's dead-letter topic.",
            )
            .push(vec![("consumer_group", g.clone())], *n as f64);
        }
        for (g, n, clustering) in self.clients.consumer_counts() {
            m.gauge(
                "rocketmq_consumer_connections",
                "Connected consumer clients, by group.",
                None,
            )
            .push(
                vec![
                    ("consumer_group", g.to_string()),
                    ("protocol_type", "remoting".into()),
                    (
                        "message_model",
                        if clustering {
                            "clustering"
                        } else {
                            "broadcasting"
                        }
                        .into(),
                    ),
                ],
                n as f64,
            );
        }
        let (producers, _) = self.clients.counts();
        m.gauge(
            "rocketmq_producer_connections",
            "Connected producer clients (one per client and group).",
            None,
        )
        .push(vec![("protocol_type", "remoting".into())], producers as f64);
        let log = self.store.commit_log();
        m.gauge(
            "rocketmq_storage_size",
            "Bytes the commit log holds.",
            Some("bytes"),
        )
        .push(
            vec![],
            log.write_pos().saturating_sub(log.min_offset()) as f64,
        );
        m.gauge(
            "rocketmq_storage_flush_behind_bytes",
            "Bytes appended and not yet flushed.",
            None,
        )
        .push(vec![], log.write_pos().saturating_sub(log.flushed()) as f64);
        m.gauge(
            "rocketmq_broker_permission",
            "brokerPermission (6 read and write, 4 read only).",
            None,
        )
        .push(vec![], f64::from(self.config.broker_permission));
        m.gauge("rocketmq_topic_number", "Topics the broker holds.", None)
            .push(vec![], self.topics.len() as f64);
        m.gauge(
            "rocketmq_consumer_group_number",
            "Subscription groups the broker holds.",
            None,
        )
        .push(
            vec![],
            self.groups.table().subscription_group_table.len() as f64,
        );
        m.gauge("rockfish_held_pulls", "Pulls held by long polling.", None)
            .push(vec![], self.held.len() as f64);
        m.gauge(
            "rockfish_sync_flush_waiters",
            "Answers waiting for their flush (SYNC_FLUSH) or a slave (SYNC_MASTER).",
            None,
        )
        .push(vec![], self.flush.waiters.len() as f64);
        m.gauge(
            "rockfish_commitlog_max_offset",
            "The commit log's end.",
            None,
        )
        .push(vec![], log.write_pos() as f64);
        if let Some((ms, bytes, records)) = s.recovery {
            m.gauge(
                "rockfish_recovery_duration",
                "Wall time of the store's recovery at start.",
                Some("milliseconds"),
            )
            .push(vec![], ms as f64);
            m.gauge(
                "rockfish_recovery_replayed",
                "Commit log bytes recovery replayed at start.",
                Some("bytes"),
            )
            .push(vec![], bytes as f64);
            m.gauge(
                "rockfish_recovery_redispatched_records",
                "Records recovery dispatched again to queues and index at start.",
                None,
            )
            .push(vec![], records as f64);
        }
        for (name, help, unit, h) in [
            (
                "rockfish_group_commit_sends",
                "Sends acked by one flush (SYNC_FLUSH group commit).",
                None,
                &s.group_commit_sends,
            ),
            (
                "rockfish_group_commit_size",
                "Bytes one flush made durable.",
                Some("bytes"),
                &s.group_commit_bytes,
            ),
            (
                "rockfish_group_commit_latency",
                "From asking a flush to its answer.",
                Some("milliseconds"),
                &s.group_commit_ms,
            ),
        ] {
            m.histograms.push(HistogramFamily {
                name,
                help,
                unit,
                samples: vec![(vec![], h.clone())],
            });
        }
        m
    }
}

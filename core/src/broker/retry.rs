//! Retries and dead letters (RocketMQ's consumerSendMsgBack and handleRetryAndDLQ).
//!
//! A consumer that failed a message sends it back (CONSUMER_SEND_MSG_BACK) by its commit log
//! offset: the broker stores a copy in the group's retry topic `%RETRY%<group>` behind a delay
//! level (`3 + reconsumeTimes` unless the consumer names one: 10 s, 30 s, 1 m, … 2 h), with
//! reconsumeTimes one higher, RETRY_TOPIC naming the original topic and ORIGIN_MESSAGE_ID the
//! first id. Once a message has been reconsumed maxReconsumeTimes times (the group's
//! retryMaxTimes, or the request's from clients ≥ 3.4.9) it goes to the group's dead-letter
//! topic `%DLQ%<group>` instead (one queue, created on demand), where no consumer of the
//! group reads it. A client that cannot reach the broker re-sends the message to the retry
//! topic itself (with DELAY and its reconsume count in the header): the send path applies the
//! same rule (see `send.rs`), so no path redelivers a failed message without its backoff.

use rand::Rng;
use rockfish_store::config::TopicConfig;
use rockfish_store::message_store::PutResult;
use rockfish_store::message_store::SCHEDULE_TOPIC;
use rockfish_store::record::{HostAddr, StoreMessage};
use rockfish_store::{Disk, StoreError};

use super::{Broker, FlushDiskType, SyncWaiter};
use crate::machine::ConnId;
use crate::message::{offset_msg_id, property, rewrite_properties};
use crate::protocol::{perm, topics};
use crate::remoting::codes::response;
use crate::remoting::{FieldError, RemotingCommand};

/// Queues of a dead-letter topic (Apache's DLQ_NUMS_PER_GROUP).
pub const DLQ_QUEUES: u32 = 1;
/// The client version (MQVersion V3_4_9) from which a request's maxReconsumeTimes counts.
const V3_4_9: i32 = 121;

/// A message the broker stores again, derived from one it has (a retry, a dead letter).
pub(super) struct Derived<'a> {
    pub topic: &'a str,
    pub queue_id: u32,
    /// Delivered through this delay level (clamped to the configured levels).
    pub delay: Option<u32>,
    pub flag: i32,
    pub sys_flag: i32,
    pub born_timestamp: i64,
    pub born_host: HostAddr,
    pub reconsume_times: i32,
    /// A committed transaction message: its half's commit log offset.
    pub prepared_transaction_offset: i64,
    pub body: &'a [u8],
    pub properties: Vec<u8>,
}

/// Where a failed message goes next.
pub(super) enum Next {
    Retry { level: u32 },
    DeadLetter,
}

/// The rule, in one place: dead letter once reconsumed `max` times (or when asked with a
/// negative level), else the next retry's delay level.
pub(super) fn next_step(reconsume_times: i32, max: i32, delay_level: i32) -> Next {
    if reconsume_times >= max || delay_level < 0 {
        Next::DeadLetter
    } else if delay_level == 0 {
        Next::Retry {
            level: (3 + reconsume_times.max(0)) as u32,
        }
    } else {
        Next::Retry {
            level: delay_level as u32,
        }
    }
}

impl<D: Disk> Broker<D> {
    /// Stores `d`, through the schedule topic if it is delayed; wakes pulls or the delay
    /// service as it must.
    pub(super) fn put_derived(
        &mut self,
        d: Derived<'_>,
        now: u64,
    ) -> Result<PutResult, StoreError> {
        let max = self.store.config().delay_levels_ms.len() as u32;
        let level = d.delay.map(|l| l.clamp(1, max.max(1)));
        let (qid, lvl) = (d.queue_id.to_string(), level.unwrap_or(0).to_string());
        let (topic, queue_id, props) = match level {
            Some(level) => (
                SCHEDULE_TOPIC,
                level - 1,
                rewrite_properties(
                    &d.properties,
                    &[],
                    &[
                        (property::DELAY, lvl.as_str()),
                        (property::REAL_TOPIC, d.topic),
                        (property::REAL_QID, qid.as_str()),
                    ],
                ),
            ),
            None => (d.topic, d.queue_id, d.properties),
        };
        let msg = StoreMessage {
            topic,
            queue_id,
            flag: d.flag,
            sys_flag: d.sys_flag,
            born_timestamp: d.born_timestamp,
            born_host: d.born_host,
            store_host: self.store_host,
            reconsume_times: d.reconsume_times,
            prepared_transaction_offset: d.prepared_transaction_offset,
            body: d.body,
            properties: &props,
        };
        let put = self.store.put(&msg, now)?;
        self.stats
            .stored(topic, 1, put.end.saturating_sub(put.first.offset), now);
        match level {
            Some(level) => {
                let wait = self.store.config().delay_levels_ms[level as usize - 1].max(0) as u64;
                self.schedule_stored(now + wait);
            }
            None => {
                if self.visible_on_append() {
                    self.wake_pulls(d.topic, d.queue_id, now);
                }
            }
        }
        Ok(put)
    }

    /// The group's dead-letter topic, created if missing. `Err(remark)` if it cannot be.
    pub(super) fn dlq_topic(&mut self, group: &str, now: u64) -> Result<String, String> {
        let dlq = format!("{}{group}", topics::DLQ_GROUP_TOPIC_PREFIX);
        if !self.topics.contains(&dlq) {
            if self.topics_full() {
                return Err(format!(
                    "topic[{dlq}] not created: the broker holds {} topics (limit)",
                    self.config.limits.max_topics
                ));
            }
            self.topics
                .insert(dlq.clone(), TopicConfig::new(&dlq, DLQ_QUEUES));
            tracing::info!(topic = %dlq, "created dead-letter topic");
            self.topics_created(now);
        }
        Ok(dlq)
    }

    /// The group's retry topic with `queues` queues, created if missing; its queue count.
    pub(super) fn retry_topic(
        &mut self,
        retry: &str,
        queues: u32,
        now: u64,
    ) -> Result<u32, String> {
        if let Some(t) = self.topics.get(retry) {
            if !perm::writeable(t.perm) {
                return Err(format!("the topic[{retry}] sending message is forbidden"));
            }
            return Ok(t.write_queue_nums);
        }
        if self.topics_full() {
            return Err(format!(
                "topic[{retry}] not created: the broker holds {} topics (limit)",
                self.config.limits.max_topics
            ));
        }
        self.topics
            .insert(retry.to_string(), TopicConfig::new(retry, queues));
        self.topics_created(now);
        Ok(queues)
    }

    /// CONSUMER_SEND_MSG_BACK.
    pub(super) fn consumer_send_msg_back(
        &mut self,
        conn: ConnId,
        cmd: &RemotingCommand,
        now: u64,
    ) -> Result<Option<RemotingCommand>, FieldError> {
        let offset: i64 = cmd.ext_req("offset")?;
        let group: String = cmd.ext_req("group")?;
        let delay_level: i32 = cmd.ext_opt("delayLevel")?.unwrap_or(0);
        let origin_msg_id = cmd
            .ext("originMsgId")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        let asked_max: Option<i32> = cmd.ext_opt("maxReconsumeTimes")?;
        let refuse = |code: i32, remark: String| {
            Ok(Some(RemotingCommand::response_to(cmd, code, Some(remark))))
        };
        if let Some((code, remark)) = self.unwritable(response::NO_PERMISSION) {
            return refuse(code, remark);
        }
        let Some(g) = self.find_group(&group, now) else {
            return refuse(
                response::SUBSCRIPTION_GROUP_NOT_EXIST,
                format!("subscription group not exist, {group}"),
            );
        };
        let (retry_queues, group_max) = (g.retry_queue_nums, g.retry_max_times);
        if retry_queues <= 0 {
            // Apache answers success and stores nothing: the group asked for no retries.
            tracing::warn!(%group, "send-back for a group without retry queues: dropped");
            return Ok(Some(RemotingCommand::response_to(
                cmd,
                response::SUCCESS,
                None,
            )));
        }
        let rec = match u64::try_from(offset)
            .map_err(|_| "negative offset".to_string())
            .and_then(|o| self.store.read(o).map_err(|e| e.to_string()))
        {
            Ok(rec) => rec,
            Err(e) => {
                return refuse(
                    response::SYSTEM_ERROR,
                    format!("look message by offset failed, {offset}: {e}"),
                );
            }
        };
        // The record there must be the message sent back: after a power loss (ASYNC_FLUSH)
        // the offset a consumer was served may hold another record, even an offset journal
        // entry, which stored as a retry would reach the group as a message nobody sent
        // (pop seed 63).
        if let Some(id) = &origin_msg_id
            && !is_message(&rec, self.store_host, id)
        {
            return refuse(
                response::SYSTEM_ERROR,
                format!(
                    "look message by offset failed, {offset}: the record there is not message {id}"
                ),
            );
        }
        let max = match asked_max {
            Some(m) if cmd.version >= V3_4_9 => m,
            _ => group_max,
        };
        // A deliberately broken broker (one reconsumption short), for the simulator's checkers.
        let max = if crate::buggify::bug("broker.dlq-never") {
            i32::MAX
        } else {
            max - crate::buggify::bug("broker.dlq-early") as i32
        };
        let reconsume = rec.reconsume_times();
        let origin = origin_msg_id
            .or_else(|| {
                rec.property(property::ORIGIN_MESSAGE_ID)
                    .and_then(|v| std::str::from_utf8(v).ok())
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
            })
            .unwrap_or_else(|| offset_msg_id(self.store_host, rec.physical_offset()));
        let retry_topic_prop = match rec.property(property::RETRY_TOPIC) {
            Some(t) => String::from_utf8_lossy(t).into_owned(),
            None => rec.topic().to_string(),
        };
        let properties = rewrite_properties(
            rec.properties(),
            &[property::DELAY, property::REAL_TOPIC, property::REAL_QID],
            &[
                (property::RETRY_TOPIC, retry_topic_prop.as_str()),
                (property::ORIGIN_MESSAGE_ID, origin.as_str()),
            ],
        );
        let (topic, queue_id, delay) = match next_step(reconsume, max, delay_level) {
            Next::DeadLetter => match self.dlq_topic(&group, now) {
                Ok(t) => (t, 0, None),
                Err(e) => return refuse(response::SYSTEM_ERROR, e),
            },
            Next::Retry { level } => {
                let retry = topics::retry_topic(&group);
                match self.retry_topic(&retry, retry_queues as u32, now) {
                    Ok(queues) => {
                        let q = self.rng.random_range(0..queues.max(1));
                        // A deliberately broken broker (no backoff), for the checkers.
                        let delay =
                            (!crate::buggify::bug("broker.retry-undelayed")).then_some(level);
                        (retry, q, delay)
                    }
                    Err(e) => return refuse(response::NO_PERMISSION, e),
                }
            }
        };
        let body = rec.body();
        let derived = Derived {
            topic: &topic,
            queue_id,
            delay,
            flag: rec.flag(),
            sys_flag: rec.sys_flag(),
            born_timestamp: rec.born_timestamp(),
            born_host: rec.born_host(),
            reconsume_times: reconsume.saturating_add(1),
            prepared_transaction_offset: 0,
            body: &body,
            properties,
        };
        let put = match self.put_derived(derived, now) {
            Ok(put) => put,
            Err(e) => {
                let code = match e {
                    StoreError::Stopped { .. } | StoreError::Disk(_) => {
                        response::SERVICE_NOT_AVAILABLE
                    }
                    _ => response::SYSTEM_ERROR,
                };
                return refuse(code, format!("storing the retry failed: {e}"));
            }
        };
        tracing::debug!(%group, %topic, reconsume, "message sent back");
        let resp = RemotingCommand::response_to(cmd, response::SUCCESS, None);
        // The consumer commits past the message once answered: under SYNC_FLUSH the retry must
        // be durable by then, or a power loss would lose it.
        match self.config.flush_disk_type {
            FlushDiskType::Async => Ok(Some(resp)),
            FlushDiskType::Sync => {
                if cmd.is_oneway() {
                    self.request_flush(now);
                    return Ok(None);
                }
                self.flush.waiters.push_back(SyncWaiter {
                    conn,
                    response: resp,
                    end: put.end,
                    deadline: now + self.config.sync_flush_timeout_ms,
                    // Not stored for sure: the consumer retries it locally.
                    timeout_code: response::SYSTEM_ERROR,
                    replicate: false,
                });
                self.request_flush(now);
                Ok(None)
            }
        }
    }

    /// A send to a retry topic (a client re-sending a failed message itself): the group must
    /// exist, and a message reconsumed `maxReconsumeTimes` times goes to the dead-letter topic
    /// instead. `Ok(Some(dlq))` reroutes it; `Err` is the refusal.
    pub(super) fn retry_send_route(
        &mut self,
        topic: &str,
        reconsume_times: i32,
        asked_max: Option<i32>,
        version: i32,
        now: u64,
    ) -> Result<Option<String>, (i32, String)> {
        let group = &topic[topics::RETRY_GROUP_TOPIC_PREFIX.len()..];
        let Some(g) = self.find_group(group, now) else {
            return Err((
                response::SUBSCRIPTION_GROUP_NOT_EXIST,
                format!("subscription group not exist, {group}"),
            ));
        };
        let max = match asked_max {
            Some(m) if version >= V3_4_9 => m,
            _ => g.retry_max_times,
        };
        if reconsume_times < max {
            return Ok(None);
        }
        let group = group.to_string();
        self.dlq_topic(&group, now)
            .map(Some)
            .map_err(|e| (response::SYSTEM_ERROR, e))
    }
}

/// Whether `rec` (stored by a broker at `store_host`) is the message a client names `id`: its
/// unique key, the id of the message it was copied from, or its offset message id.
fn is_message(rec: &rockfish_store::StoredRecord, store_host: HostAddr, id: &str) -> bool {
    let prop = |name: &str| {
        rec.property(name)
            .and_then(|v| std::str::from_utf8(v).ok())
            .is_some_and(|v| v == id)
    };
    prop(property::UNIQ_KEY)
        || prop(property::ORIGIN_MESSAGE_ID)
        || offset_msg_id(store_host, rec.physical_offset()) == id
}

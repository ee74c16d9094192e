//! SEND_MESSAGE, SEND_MESSAGE_V2 and SEND_BATCH_MESSAGE.

use rand::Rng;
use rockfish_store::config::TopicConfig;
use rockfish_store::message_store::{SCHEDULE_TOPIC, TIMER_TOPIC, validate_topic};
use rockfish_store::record::{EncodeError, StoreMessage};
use rockfish_store::{DiskError, StoreError};

use super::{Broker, FlushDiskType, SyncWaiter};
use crate::machine::ConnId;
use crate::message::{decode_batch, write_offset_msg_id};
use crate::protocol::perm;
use crate::remoting::codes::{request, response};
use crate::remoting::{FieldError, RemotingCommand};
use rockfish_store::Disk;

/// SendMessageRequestHeader, read from either its long (V1) or one-letter (V2) field names.
pub(super) struct SendHeader<'a> {
    pub topic: &'a str,
    pub default_topic_queues: Option<u32>,
    pub queue_id: i32,
    pub sys_flag: i32,
    pub born_timestamp: i64,
    pub flag: i32,
    pub properties: &'a str,
    pub reconsume_times: i32,
    pub batch: bool,
}

fn field<'a>(
    cmd: &'a RemotingCommand,
    v2: &'static str,
    v1: &'static str,
) -> (&'static str, Option<&'a str>) {
    match cmd.ext(v2) {
        Some(v) => (v2, Some(v)),
        None => (v1, cmd.ext(v1)),
    }
}

fn parse<T: std::str::FromStr>(
    cmd: &RemotingCommand,
    v2: &'static str,
    v1: &'static str,
) -> Result<Option<T>, FieldError> {
    let (name, v) = field(cmd, v2, v1);
    match v {
        None => Ok(None),
        Some(v) => v.trim().parse().map(Some).map_err(|_| FieldError::Invalid {
            field: name,
            value: v.chars().take(64).collect(),
            ty: std::any::type_name::<T>(),
        }),
    }
}

impl<'a> SendHeader<'a> {
    /// Borrows from the command: parsing a send allocates nothing.
    pub fn parse(cmd: &'a RemotingCommand) -> Result<SendHeader<'a>, FieldError> {
        Ok(SendHeader {
            topic: field(cmd, "b", "topic")
                .1
                .map(str::trim)
                .ok_or(FieldError::Missing("topic"))?,
            default_topic_queues: parse(cmd, "d", "defaultTopicQueueNums")?,
            queue_id: parse(cmd, "e", "queueId")?.ok_or(FieldError::Missing("queueId"))?,
            sys_flag: parse(cmd, "f", "sysFlag")?.unwrap_or(0),
            born_timestamp: parse(cmd, "g", "bornTimestamp")?.unwrap_or(0),
            flag: parse(cmd, "h", "flag")?.unwrap_or(0),
            properties: field(cmd, "i", "properties").1.unwrap_or(""),
            reconsume_times: parse(cmd, "j", "reconsumeTimes")?.unwrap_or(0),
            batch: cmd.code == request::SEND_BATCH_MESSAGE
                || field(cmd, "m", "batch")
                    .1
                    .is_some_and(|b| b.trim().eq_ignore_ascii_case("true")),
        })
    }
}

/// What a send needs of its topic's config (copied, not cloned with its strings).
#[derive(Clone, Copy)]
struct SendTopic {
    perm: u32,
    write_queue_nums: u32,
}

impl<D: Disk> Broker<D> {
    pub(super) fn send_message(
        &mut self,
        conn: ConnId,
        cmd: &RemotingCommand,
        received_at: u64,
        now: u64,
    ) -> Result<Option<RemotingCommand>, FieldError> {
        let refuse = |code: i32, remark: String| {
            Ok(Some(RemotingCommand::response_to(cmd, code, Some(remark))))
        };
        // Flow control: a send that sat in the driver's queue too long is refused before work.
        let waited = now.saturating_sub(received_at);
        if waited > self.config.max_wait_in_queue_ms || crate::buggify!("broker.send.busy") {
            return refuse(
                response::SYSTEM_BUSY,
                format!(
                    "[TIMEOUT_CLEAN_QUEUE]broker busy, start flow control for a while, period in queue: {waited}ms"
                ),
            );
        }
        if let Some((code, remark)) = self.unwritable(response::SERVICE_NOT_AVAILABLE) {
            return refuse(code, remark);
        }
        if self.config.flush_disk_type == FlushDiskType::Sync
            && !cmd.is_oneway()
            && self.sync_waiters_full()
        {
            return refuse(
                response::SYSTEM_BUSY,
                format!(
                    "[PCBUSY_CLEAN_QUEUE]broker busy: {} sends wait for their flush (limit)",
                    self.flush.waiters.len()
                ),
            );
        }
        let h = SendHeader::parse(cmd)?;
        if let Err(e) = validate_topic(h.topic) {
            return refuse(response::SYSTEM_ERROR, e.to_string());
        }
        if h.topic == super::OFFSET_JOURNAL_TOPIC
            || h.topic == super::POP_JOURNAL_TOPIC
            || h.topic == SCHEDULE_TOPIC
            || h.topic == TIMER_TOPIC
            || h.topic == super::TRANS_HALF_TOPIC
            || h.topic == super::TRANS_OP_HALF_TOPIC
            || h.topic == super::TRANS_CHECK_MAX_TIME_TOPIC
        {
            // As Apache refuses sends to its system topics.
            return refuse(
                response::NO_PERMISSION,
                format!(
                    "the topic[{}] is a system topic, sending is forbidden",
                    h.topic
                ),
            );
        }
        // A client re-sending a failed message to its group's retry topic: past the group's
        // max reconsume times it goes to the dead-letter topic, undelayed (as Apache 5 does;
        // 4.9 kept the DELAY and parked dead letters in the schedule topic first).
        let mut dlq = None;
        let retry = crate::protocol::topics::is_retry_topic(h.topic);
        if retry {
            let asked_max = parse(cmd, "l", "maxReconsumeTimes")?;
            match self.retry_send_route(h.topic, h.reconsume_times, asked_max, cmd.version, now) {
                Ok(route) => dlq = route,
                Err((code, remark)) => return refuse(code, remark),
            }
        }
        let undelayed;
        let h = match &dlq {
            Some(dlq) => {
                undelayed = String::from_utf8(crate::message::rewrite_properties(
                    h.properties.as_bytes(),
                    &[crate::message::property::DELAY],
                    &[],
                ))
                .unwrap_or_default();
                SendHeader {
                    topic: dlq.as_str(),
                    queue_id: 0,
                    properties: undelayed.as_str(),
                    ..h
                }
            }
            None => h,
        };
        if self.topics_full() && !self.topics.contains(h.topic) {
            return refuse(
                response::SYSTEM_ERROR,
                format!(
                    "topic[{}] not created: the broker holds {} topics (limit)",
                    h.topic, self.config.limits.max_topics
                ),
            );
        }
        let topic = match self.topic_for_send(&h, now) {
            Some(t) => t,
            None => {
                return refuse(
                    response::TOPIC_NOT_EXIST,
                    format!("topic[{}] not exist, apply first please!", h.topic),
                );
            }
        };
        if !perm::writeable(topic.perm) {
            return refuse(
                response::NO_PERMISSION,
                format!("the topic[{}] sending message is forbidden", h.topic),
            );
        }
        let queue_id = if h.queue_id < 0 {
            self.rng.random_range(0..topic.write_queue_nums.max(1))
        } else {
            h.queue_id as u32
        };
        if queue_id >= topic.write_queue_nums {
            return refuse(
                response::SYSTEM_ERROR,
                format!(
                    "request queueId[{queue_id}] is illegal, topic {} has {} write queues",
                    h.topic, topic.write_queue_nums
                ),
            );
        }
        // A delay level: stored in the schedule topic's queue for the level, delivered to the
        // real topic when due (see schedule.rs). Prepared transaction halves are not delayed.
        // One substring search keeps plain sends off the property scans below (DELAY also
        // matches TIMER_DELAY_SEC and TIMER_DELAY_MS).
        let timed = h.properties.contains("DELAY") || h.properties.contains("TIMER_DELIVER_MS");
        let delay = if h.batch || dlq.is_some() {
            None
        } else if retry {
            // No path redelivers a failed message without its backoff: a retry sent without
            // a level gets the one a send-back would.
            self.delay_of(h.properties, h.sys_flag).or_else(|| {
                let max = self.store.config().delay_levels_ms.len() as u32;
                let level = (3 + h.reconsume_times.max(0) as u32).min(max);
                Some(level.max(1))
            })
        } else if timed {
            self.delay_of(h.properties, h.sys_flag)
        } else {
            None
        };
        // A timer message (RocketMQ 5): stored in the timing wheel's bucket queue until due.
        let timer = if !timed || delay.is_some() || h.batch || dlq.is_some() {
            None
        } else {
            match self.timer_due(h.properties, now) {
                Ok(Some(_)) if !self.config.timer_wheel_enable => {
                    return refuse(
                        response::SYSTEM_ERROR,
                        "timer messages are off on this broker (timerWheelEnable=false)".into(),
                    );
                }
                Ok(due) => due,
                Err(remark) => return refuse(response::MESSAGE_ILLEGAL, remark),
            }
        };
        // A prepared transaction message: a half, hidden until its transaction ends.
        let half = !h.batch && dlq.is_none() && super::transaction::is_prepared(h.properties);
        let mut delayed_props = Vec::new();
        let (store_topic, store_queue, properties) = match (delay, timer) {
            _ if half => {
                let real_qid = queue_id.to_string();
                let add = [
                    (crate::message::property::REAL_TOPIC, h.topic),
                    (crate::message::property::REAL_QID, real_qid.as_str()),
                ];
                delayed_props =
                    crate::message::rewrite_properties(h.properties.as_bytes(), &[], &add);
                (super::TRANS_HALF_TOPIC, 0, delayed_props.as_slice())
            }
            (None, Some(due)) => {
                let (real_qid, due_s) = (queue_id.to_string(), due.to_string());
                let add = [
                    (super::timer_property::OUT_MS, due_s.as_str()),
                    (crate::message::property::REAL_TOPIC, h.topic),
                    (crate::message::property::REAL_QID, real_qid.as_str()),
                ];
                delayed_props =
                    crate::message::rewrite_properties(h.properties.as_bytes(), &[], &add);
                (
                    TIMER_TOPIC,
                    self.timer_queue(due, now),
                    delayed_props.as_slice(),
                )
            }
            (delay, _) => match delay {
                Some(level) => {
                    // DELAY written as the level used (clamped, or chosen for a retry): the store
                    // computes the delivery time from it.
                    let (real_qid, level_s) = (queue_id.to_string(), level.to_string());
                    let add = [
                        (crate::message::property::DELAY, level_s.as_str()),
                        (crate::message::property::REAL_TOPIC, h.topic),
                        (crate::message::property::REAL_QID, real_qid.as_str()),
                    ];
                    delayed_props =
                        crate::message::rewrite_properties(h.properties.as_bytes(), &[], &add);
                    (SCHEDULE_TOPIC, level - 1, delayed_props.as_slice())
                }
                None => (h.topic, queue_id, h.properties.as_bytes()),
            },
        };
        if (half || delay.is_some() || timer.is_some())
            && delayed_props.len() > rockfish_store::record::MAX_PROPERTIES_LEN / 2
        {
            return refuse(
                response::MESSAGE_ILLEGAL,
                format!(
                    "properties too long for a delayed message: {} bytes",
                    delayed_props.len()
                ),
            );
        }
        let born_host = self
            .peers
            .get(&conn)
            .copied()
            .unwrap_or(rockfish_store::record::HostAddr::UNSPECIFIED);
        let base = StoreMessage {
            topic: store_topic,
            queue_id: store_queue,
            flag: h.flag,
            // A half's transaction bits are cleared: it is queued in the half topic.
            sys_flag: if half {
                h.sys_flag & !super::tx_flag::MASK
            } else {
                h.sys_flag
            },
            born_timestamp: h.born_timestamp,
            born_host,
            store_host: self.store_host,
            reconsume_times: h.reconsume_times,
            prepared_transaction_offset: 0,
            body: &cmd.body,
            properties,
        };
        let put = if h.batch {
            let items = match decode_batch(cmd.body.clone()) {
                Ok(items) => items,
                Err(e) => return refuse(response::MESSAGE_ILLEGAL, format!("bad batch body: {e}")),
            };
            let msgs: Vec<StoreMessage<'_>> = items
                .iter()
                .map(|it| StoreMessage {
                    flag: it.flag,
                    body: &it.body,
                    properties: &it.properties,
                    ..base
                })
                .collect();
            self.store.put_batch(&msgs, now)
        } else {
            self.store.put(&base, now)
        };
        let put = match put {
            Ok(put) => put,
            Err(e) => {
                let (code, remark) = match &e {
                    StoreError::Encode(
                        EncodeError::BodyTooLarge { .. } | EncodeError::PropertiesTooLong(_),
                    ) => (response::MESSAGE_ILLEGAL, e.to_string()),
                    StoreError::Encode(_) | StoreError::Invalid { .. } => {
                        (response::MESSAGE_ILLEGAL, e.to_string())
                    }
                    StoreError::BatchTooLarge { .. } => (response::MESSAGE_ILLEGAL, e.to_string()),
                    StoreError::Disk(DiskError::Full { .. }) => (
                        response::SERVICE_NOT_AVAILABLE,
                        format!("disk full, message not stored: {e}"),
                    ),
                    StoreError::Stopped { .. } => (response::SERVICE_NOT_AVAILABLE, e.to_string()),
                    _ => (response::SYSTEM_ERROR, format!("store error: {e}")),
                };
                return refuse(code, remark);
            }
        };
        self.stats.stored(
            h.topic,
            put.count as u64,
            put.end.saturating_sub(put.first.offset),
            now,
        );
        let mut resp = RemotingCommand::response_to(cmd, response::SUCCESS, None);
        // Offset message ids, comma-separated for a batch, written straight into the header.
        let (host, appended) = (self.store_host, self.store.last_appended());
        resp.ext_fields.insert_with("msgId", |w| {
            for (i, a) in appended.iter().enumerate() {
                if i > 0 {
                    w.write_char(',')?;
                }
                write_offset_msg_id(w, host, a.offset)?;
            }
            Ok(())
        });
        let resp = resp
            .with_ext("queueId", queue_id)
            .with_ext(
                "queueOffset",
                // A deliberately broken broker, for the simulator's checkers.
                put.first.queue_offset + crate::buggify::bug("broker.ack-wrong-offset") as u64,
            )
            .with_ext("MSG_REGION", "DefaultRegion")
            .with_ext("TRACE_ON", "true");
        if half {
            // Nothing to wake: no consumer reads the half topic.
        } else if let Some(due) = timer {
            let (queue, first) = (store_queue, put.first);
            self.timer_stored(due, queue, first.queue_offset, first.offset);
        } else if let Some(level) = delay {
            let wait = self.store.config().delay_levels_ms[level as usize - 1].max(0) as u64;
            self.schedule_stored(now + wait);
        } else if self.visible_on_append() {
            self.wake_pulls(h.topic, queue_id, now);
        }
        match self.config.flush_disk_type {
            FlushDiskType::Async
                if self.repl.role == super::BrokerRole::SyncMaster && !cmd.is_oneway() =>
            {
                let w = SyncWaiter {
                    conn,
                    response: resp,
                    end: put.end,
                    deadline: now + self.config.sync_flush_timeout_ms,
                    timeout_code: response::FLUSH_SLAVE_TIMEOUT,
                    replicate: true,
                };
                self.await_replica(w, now);
                Ok(None)
            }
            FlushDiskType::Async => Ok(Some(resp)),
            FlushDiskType::Sync => {
                if !cmd.is_oneway() {
                    let deadline = now + self.config.sync_flush_timeout_ms;
                    self.flush.waiters.push_back(SyncWaiter {
                        conn,
                        response: resp,
                        end: put.end,
                        deadline,
                        timeout_code: response::FLUSH_DISK_TIMEOUT,
                        replicate: true,
                    });
                }
                self.request_flush(now);
                Ok(None)
            }
        }
    }

    /// Why this broker takes no writes, if it does not: a slave (answered `slave_code`) or a
    /// stopped store.
    pub(super) fn unwritable(&self, slave_code: i32) -> Option<(i32, String)> {
        if !self.repl.role.is_master() {
            return Some((
                slave_code,
                format!(
                    "the broker[{}] sending message is forbidden: it is a slave",
                    self.config.broker_name
                ),
            ));
        }
        if !crate::protocol::perm::writeable(self.config.broker_permission) {
            return Some((
                response::NO_PERMISSION,
                format!(
                    "the broker[{}] sending message is forbidden (brokerPermission={})",
                    self.config.broker_name, self.config.broker_permission
                ),
            ));
        }
        self.store.stopped().map(|reason| {
            (
                response::SERVICE_NOT_AVAILABLE,
                format!("the message store is not writable: {reason}"),
            )
        })
    }

    /// A send's delay level, clamped to the configured levels: `None` for
    /// no delay (absent, unparsable, 0 or negative, as Apache ignores those) and for a
    /// prepared transaction half (delayed once committed).
    pub(super) fn delay_of(&self, properties: &str, sys_flag: i32) -> Option<u32> {
        const TRANSACTION_TYPE: i32 = 0b11 << 2;
        const TRANSACTION_COMMIT: i32 = 0b10 << 2;
        let tx = sys_flag & TRANSACTION_TYPE;
        if tx != 0 && tx != TRANSACTION_COMMIT {
            return None;
        }
        let level = rockfish_store::record::property(
            properties.as_bytes(),
            crate::message::property::DELAY,
        )?;
        let level: i64 = std::str::from_utf8(level).ok()?.trim().parse().ok()?;
        if level <= 0 {
            return None;
        }
        let max = self.store.config().delay_levels_ms.len() as i64;
        Some(level.min(max) as u32)
    }

    /// The topic to send to, auto-created (with the producer's default queue count, capped by
    /// the broker's) when allowed.
    fn topic_for_send(&mut self, h: &SendHeader, now: u64) -> Option<SendTopic> {
        if let Some(t) = self.topics.get(h.topic) {
            return Some(SendTopic {
                perm: t.perm,
                write_queue_nums: t.write_queue_nums,
            });
        }
        let retry = crate::protocol::topics::is_retry_topic(h.topic);
        if !self.config.auto_create_topic && !retry {
            return None;
        }
        // The producer's defaultTopicQueueNums, capped by the default topic's queue count.
        let cap = self
            .topics
            .get(super::DEFAULT_TOPIC)
            .map_or(super::DEFAULT_TOPIC_QUEUES, |t| t.write_queue_nums);
        let queues = if retry {
            1
        } else {
            h.default_topic_queues
                .unwrap_or(self.config.default_topic_queues)
                .clamp(1, cap.max(1))
        };
        let t = TopicConfig::new(h.topic, queues);
        let send = SendTopic {
            perm: t.perm,
            write_queue_nums: t.write_queue_nums,
        };
        self.topics.insert(h.topic.to_string(), t);
        tracing::info!(topic = %h.topic, queues, "auto-created topic");
        self.topics_created(now);
        Some(send)
    }
}

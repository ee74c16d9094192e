//! Offsets, topics and queries: QUERY/UPDATE_CONSUMER_OFFSET, UPDATE_AND_CREATE_TOPIC,
//! DELETE_TOPIC_IN_BROKER, GET_ALL_TOPIC_CONFIG, GET_MAX/MIN_OFFSET,
//! SEARCH_OFFSET_BY_TIMESTAMP, GET_EARLIEST_MSG_STORETIME, VIEW_MESSAGE_BY_ID, QUERY_MESSAGE,
//! GET_ALL_CONSUMER_OFFSET.

use rockfish_store::config::TopicConfig;
use rockfish_store::message_store::validate_topic;
use rockfish_store::{Boundary, Disk};

use super::{Broker, SyncWaiter};
use crate::machine::{ConnId, Output};
use crate::protocol::{TopicConfigSerializeWrapper, to_body};
use crate::remoting::codes::response;
use crate::remoting::{FieldError, RemotingCommand};

impl<D: Disk> Broker<D> {
    pub(super) fn query_consumer_offset(
        &mut self,
        cmd: &RemotingCommand,
    ) -> Result<RemotingCommand, FieldError> {
        let group: String = cmd.ext_req("consumerGroup")?;
        let topic: String = cmd.ext_req("topic")?;
        let queue_id: u32 = cmd.ext_req("queueId")?;
        let ok = |offset: u64| {
            RemotingCommand::response_to(cmd, response::SUCCESS, None).with_ext("offset", offset)
        };
        if let Some(offset) = self.offsets.table.get(&topic, &group, queue_id) {
            return Ok(ok(offset));
        }
        // RocketMQ: a group with no offset on a queue that never lost a message starts at 0.
        if self.store.min_offset(&topic, queue_id) == 0 {
            return Ok(ok(0));
        }
        Ok(RemotingCommand::response_to(
            cmd,
            response::QUERY_NOT_FOUND,
            Some("Not found, V3_0_6_SNAPSHOT maybe this group consumer boot first".into()),
        ))
    }

    /// An answered commit survives a process crash (its journal record is in the page cache
    /// before the answer) and, under SYNC_FLUSH, a power loss (the answer waits for the flush).
    pub(super) fn update_consumer_offset(
        &mut self,
        conn: ConnId,
        cmd: &RemotingCommand,
        now: u64,
    ) -> Result<Option<RemotingCommand>, FieldError> {
        let group: String = cmd.ext_req("consumerGroup")?;
        let topic: String = cmd.ext_req("topic")?;
        let queue_id: u32 = cmd.ext_req("queueId")?;
        let offset: i64 = cmd.ext_req("commitOffset")?;
        if offset >= 0 && !self.offsets_admit(&topic, &group, queue_id) {
            return Ok(Some(RemotingCommand::response_to(
                cmd,
                response::SYSTEM_ERROR,
                Some(format!(
                    "offset of {topic}@{group} queue {queue_id} not kept: the offset table is full (limits: {} topic@group entries, {} queues each)",
                    self.config.limits.max_offset_entries,
                    super::limits::MAX_QUEUES_PER_OFFSET_ENTRY
                )),
            )));
        }
        if self.offset_commit_waits() && !cmd.is_oneway() && self.sync_waiters_full() {
            // An answered SYNC_FLUSH commit waits for its flush: the same cap as sends.
            return Ok(Some(RemotingCommand::response_to(
                cmd,
                response::SYSTEM_BUSY,
                Some(format!(
                    "broker busy: {} answers wait for their flush (limit)",
                    self.flush.waiters.len()
                )),
            )));
        }
        let ok = RemotingCommand::response_to(cmd, response::SUCCESS, None);
        if offset < 0 || !self.admit_commit(conn, &topic, &group, queue_id, offset as u64) {
            return Ok(Some(ok));
        }
        match self.commit_offset(&topic, &group, queue_id, offset as u64, now) {
            Some(end) if self.offset_commit_waits() && !cmd.is_oneway() => {
                self.flush.waiters.push_back(SyncWaiter {
                    conn,
                    response: ok,
                    end,
                    deadline: now + self.config.sync_flush_timeout_ms,
                    timeout_code: response::SYSTEM_ERROR,
                    replicate: false,
                });
                self.request_flush(now);
                Ok(None)
            }
            _ => Ok(Some(ok)),
        }
    }

    /// How far a consumer is trusted on a queue after this start (`recovery::OffsetFences`).
    pub(super) fn offset_limit(
        &self,
        conn: ConnId,
        topic: &str,
        group: &str,
        queue_id: u32,
    ) -> Option<u64> {
        self.offsets.fences.limit(
            topic,
            queue_id,
            conn,
            group,
            self.clients.broadcasting(group),
            self.store.min_offset(topic, queue_id),
        )
    }

    /// Stores a consumer's committed offset, unless it points past what that consumer may
    /// have seen since recovery (`recovery::OffsetFences`): a stale offset from before a
    /// power loss is ignored, never stored.
    /// Whether a commit may be kept: after an unclean restart a consumer is held to what its
    /// group is known to have consumed (`recovery::OffsetFences`).
    pub(super) fn admit_commit(
        &mut self,
        conn: ConnId,
        topic: &str,
        group: &str,
        queue_id: u32,
        offset: u64,
    ) -> bool {
        if let Some(limit) = self.offset_limit(conn, topic, group, queue_id) {
            if offset > limit {
                tracing::warn!(
                    topic,
                    group,
                    queue_id,
                    offset,
                    limit,
                    "ignored a commit past what recovery kept of the queue"
                );
                return false;
            }
            self.offsets
                .fences
                .committed(topic, queue_id, group, offset);
        }
        true
    }

    pub(super) fn all_consumer_offsets(
        &mut self,
        cmd: &RemotingCommand,
    ) -> Result<RemotingCommand, FieldError> {
        Ok(Self::body_response(cmd, to_body(&self.offsets.table)))
    }

    pub(super) fn update_topic(
        &mut self,
        cmd: &RemotingCommand,
        now: u64,
    ) -> Result<RemotingCommand, FieldError> {
        let topic: String = cmd.ext_req("topic")?;
        if let Err(e) = validate_topic(&topic) {
            return Ok(RemotingCommand::response_to(
                cmd,
                response::SYSTEM_ERROR,
                Some(e.to_string()),
            ));
        }
        if topic == super::OFFSET_JOURNAL_TOPIC || topic == super::POP_JOURNAL_TOPIC {
            return Ok(RemotingCommand::response_to(
                cmd,
                response::NO_PERMISSION,
                Some(format!("the topic[{topic}] is a system topic")),
            ));
        }
        if self.topics_full() && self.topic(&topic).is_none() {
            return Ok(RemotingCommand::response_to(
                cmd,
                response::SYSTEM_ERROR,
                Some(format!(
                    "topic[{topic}] not created: the broker holds {} topics (limit)",
                    self.config.limits.max_topics
                )),
            ));
        }
        let read: u32 = cmd
            .ext_opt("readQueueNums")?
            .unwrap_or(self.config.default_topic_queues);
        let write: u32 = cmd.ext_opt("writeQueueNums")?.unwrap_or(read);
        if read == 0 || write == 0 || read > 1024 || write > 1024 {
            return Ok(RemotingCommand::response_to(
                cmd,
                response::SYSTEM_ERROR,
                Some(format!(
                    "queue counts must be within 1..=1024, got read {read} write {write}"
                )),
            ));
        }
        let mut tc = TopicConfig::new(&topic, read);
        tc.write_queue_nums = write;
        tc.perm = cmd.ext_opt("perm")?.unwrap_or(6);
        tc.topic_sys_flag = cmd.ext_opt("topicSysFlag")?.unwrap_or(0);
        tc.order = cmd.ext_bool("order")?.unwrap_or(false);
        if let Some(f) = cmd.ext("topicFilterType") {
            tc.topic_filter_type = f.to_string();
        }
        self.topics.insert(topic, tc);
        self.persist_topics(now);
        Ok(RemotingCommand::response_to(cmd, response::SUCCESS, None))
    }

    pub(super) fn delete_topic(
        &mut self,
        cmd: &RemotingCommand,
        now: u64,
    ) -> Result<RemotingCommand, FieldError> {
        let topic: String = cmd.ext_req("topic")?;
        if self.topics.remove(&topic).is_some() {
            self.persist_topics(now);
        }
        self.pop.drop_topic(&topic);
        Ok(RemotingCommand::response_to(cmd, response::SUCCESS, None))
    }

    pub(super) fn all_topic_config(
        &mut self,
        cmd: &RemotingCommand,
    ) -> Result<RemotingCommand, FieldError> {
        let table = self.topics.table();
        let wrapper = TopicConfigSerializeWrapper {
            topic_config_table: table.topic_config_table,
            data_version: table.data_version,
        };
        Ok(Self::body_response(cmd, to_body(&wrapper)))
    }

    /// GET_MAX_OFFSET and GET_MIN_OFFSET: one of a queue's logical offset bounds.
    pub(super) fn queue_offset_bound(
        &mut self,
        cmd: &RemotingCommand,
        max: bool,
    ) -> Result<RemotingCommand, FieldError> {
        let topic: String = cmd.ext_req("topic")?;
        let queue_id: u32 = cmd.ext_req("queueId")?;
        let offset = if max {
            // What consumers may be served, as pulls report it.
            match self.visible_max_offset(&topic, queue_id) {
                Ok(offset) => offset,
                Err(e) => {
                    return Ok(RemotingCommand::response_to(
                        cmd,
                        response::SYSTEM_ERROR,
                        Some(format!("store error: {e}")),
                    ));
                }
            }
        } else {
            self.store.min_offset(&topic, queue_id)
        };
        Ok(RemotingCommand::response_to(cmd, response::SUCCESS, None).with_ext("offset", offset))
    }

    pub(super) fn search_offset(
        &mut self,
        cmd: &RemotingCommand,
    ) -> Result<RemotingCommand, FieldError> {
        let topic: String = cmd.ext_req("topic")?;
        let queue_id: u32 = cmd.ext_req("queueId")?;
        let timestamp: i64 = cmd.ext_req("timestamp")?;
        let boundary = match cmd.ext("boundaryType") {
            Some(b) if b.eq_ignore_ascii_case("upper") => Boundary::Upper,
            _ => Boundary::Lower,
        };
        Ok(
            match self
                .store
                .offset_by_time(&topic, queue_id, timestamp, boundary)
                .and_then(|o| Ok(o.min(self.visible_max_offset(&topic, queue_id)?)))
            {
                Ok(offset) => RemotingCommand::response_to(cmd, response::SUCCESS, None)
                    .with_ext("offset", offset),
                Err(e) => RemotingCommand::response_to(
                    cmd,
                    response::SYSTEM_ERROR,
                    Some(format!("store error: {e}")),
                ),
            },
        )
    }

    pub(super) fn earliest_store_time(
        &mut self,
        cmd: &RemotingCommand,
    ) -> Result<RemotingCommand, FieldError> {
        let topic: String = cmd.ext_req("topic")?;
        let queue_id: u32 = cmd.ext_req("queueId")?;
        let min = self.store.min_offset(&topic, queue_id);
        let ts = match self.store.entry(&topic, queue_id, min) {
            Ok(Some(e)) => self
                .store
                .read(e.offset)
                .map(|r| r.store_timestamp())
                .unwrap_or(-1),
            _ => -1,
        };
        Ok(RemotingCommand::response_to(cmd, response::SUCCESS, None).with_ext("timestamp", ts))
    }

    pub(super) fn view_message(
        &mut self,
        conn: ConnId,
        cmd: &RemotingCommand,
    ) -> Result<(), FieldError> {
        let offset: u64 = cmd.ext_req::<i64>("offset")?.max(0) as u64;
        let out = match self.store.read(offset) {
            Ok(rec) => Output::SendRecords {
                conn,
                cmd: RemotingCommand::response_to(cmd, response::SUCCESS, None),
                records: vec![rec.bytes().clone()],
            },
            Err(e) => Output::Send {
                conn,
                cmd: RemotingCommand::response_to(
                    cmd,
                    response::SYSTEM_ERROR,
                    Some(format!("can not find message by the offset, {offset}: {e}")),
                ),
            },
        };
        if !cmd.is_oneway() {
            self.outputs.push_back(out);
        }
        Ok(())
    }

    pub(super) fn query_message(
        &mut self,
        conn: ConnId,
        cmd: &RemotingCommand,
    ) -> Result<(), FieldError> {
        let topic: String = cmd.ext_req("topic")?;
        let key: String = cmd.ext_req("key")?;
        let max: usize = cmd.ext_opt::<i64>("maxNum")?.unwrap_or(32).clamp(1, 64) as usize;
        let begin: i64 = cmd.ext_opt("beginTimestamp")?.unwrap_or(0);
        let end: i64 = cmd.ext_opt("endTimestamp")?.unwrap_or(i64::MAX);
        let out = match self.store.query_by_key(&topic, &key, begin, end, max) {
            Ok(found) if !found.is_empty() => {
                let last = found.iter().map(|r| r.store_timestamp()).max().unwrap_or(0);
                let phy = found.iter().map(|r| r.physical_offset()).max().unwrap_or(0);
                Output::SendRecords {
                    conn,
                    cmd: RemotingCommand::response_to(cmd, response::SUCCESS, None)
                        .with_ext("indexLastUpdateTimestamp", last)
                        .with_ext("indexLastUpdatePhyoffset", phy),
                    records: found.iter().map(|r| r.bytes().clone()).collect(),
                }
            }
            Ok(_) => Output::Send {
                conn,
                cmd: RemotingCommand::response_to(
                    cmd,
                    response::QUERY_NOT_FOUND,
                    Some("can not find message, maybe time range not correct".into()),
                ),
            },
            Err(e) => Output::Send {
                conn,
                cmd: RemotingCommand::response_to(
                    cmd,
                    response::SYSTEM_ERROR,
                    Some(format!("store error: {e}")),
                ),
            },
        };
        if !cmd.is_oneway() {
            self.outputs.push_back(out);
        }
        Ok(())
    }
}

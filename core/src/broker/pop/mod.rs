//! Pop consumption, RocketMQ 5's (POP_MESSAGE, ACK_MESSAGE, BATCH_ACK_MESSAGE,
//! CHANGE_MESSAGE_INVISIBLETIME): the broker, not the client, owns who reads what. A pop
//! hands out up to 32 messages of a topic (one queue or all of them) and moves the group's
//! offset past them at once; each queue's read is a checkpoint (`table::Ck`) whose messages
//! are invisible for the pop's invisible time. An ack decides a message; a change of
//! invisibility moves it to a new checkpoint; when a checkpoint falls due, its un-acked
//! messages are revived into the group's pop retry topic `%RETRY%<group>_<topic>` with
//! reconsumeTimes + 1 (the invisible time was the backoff), or into `%DLQ%<group>` once
//! reconsumed retryMaxTimes times, as a push consumer's failed message would be. Pops read
//! that retry topic too (first in one of five, else after the topic), and hand its messages
//! out under the topic's name with a POP_CK receipt.
//!
//! Orderly pops (`order=true`, FIFO message groups) move no offset: the queue stays locked
//! for the group until its messages are acked (the offset then moves to the first one not
//! acked) or their invisibility lapses, and come again from the same queue, counted.
//!
//! Durability: checkpoints and acks are journaled before they are answered (`table.rs`), and
//! under SYNC_FLUSH an ack's answer waits for its record's flush, as an offset commit does: a
//! crash neither loses a handed-out message nor brings back an acked one.

mod revive;
pub mod table;
pub mod wire;

use bytes::Bytes;
use rand::Rng;
use rockfish_store::record::{StoreMessage, StoredRecord, encode_to_vec};
use rockfish_store::{Disk, GetStatus, StoreError, java_millis};

use self::table::{Ck, CkKey, Entry, OrderLock};
use self::wire::{ORDER_REVIVE_QID, REVIVE_QID, Receipt};
use super::Broker;
use super::flush::SyncWaiter;
use super::held_pulls::PendingPull;
use super::pull::PullRun;
use crate::filter::SubscriptionFilter;
use crate::machine::{ConnId, Output};
use crate::message::rewrite_properties;
use crate::protocol::perm;
use crate::remoting::codes::response;
use crate::remoting::{FieldError, RemotingCommand};

pub use table::{POP_JOURNAL_TOPIC, POP_PROGRESS_GROUP};
pub use wire::pop_retry_topic;

/// Held pops wait under this queue id of their topic, whichever queue they read: a message
/// arriving in any queue of the topic (or in its pop retry topic) wakes them.
pub(super) const POP_ANY_QUEUE: u32 = u32::MAX;
/// Messages one pop may ask for (Apache refuses more).
pub const MAX_POP_MESSAGES: i64 = 32;
/// One pop in this many hundred reads the retry topic first (popFromRetryProbability).
const RETRY_FIRST_PERCENT: u32 = 20;
/// The longest invisible time a pop or a change of invisibility may ask for (the gRPC
/// clients' upper bound is 12 h).
pub const MAX_INVISIBLE_MS: u64 = 24 * 3600 * 1000;
/// A pop arriving this long past its bornTime + pollTime is answered POLLING_TIMEOUT.
const POP_LATE_MS: i64 = 500;
/// A retry message's receipt, as the broker puts it on the message.
pub const PROPERTY_POP_CK: &str = "POP_CK";
/// When the message was first popped (set at its first revive).
pub const PROPERTY_FIRST_POP_TIME: &str = "1ST_POP_TIME";

/// A pop's header (`PopMessageRequestHeader`).
struct PopHeader {
    group: String,
    topic: String,
    queue_id: i32,
    max: usize,
    invisible_ms: u64,
    poll_ms: u64,
    born_time: i64,
    /// ConsumeInitMode: 0 from the queue's start, 1 from its last message.
    init_min: bool,
    exp_type: Option<String>,
    exp: String,
    order: bool,
    attempt_id: Option<String>,
}

impl PopHeader {
    fn parse(cmd: &RemotingCommand) -> Result<PopHeader, FieldError> {
        Ok(PopHeader {
            group: cmd.ext_req("consumerGroup")?,
            topic: cmd.ext_req("topic")?,
            queue_id: cmd.ext_req("queueId")?,
            max: cmd.ext_req::<i64>("maxMsgNums")?.max(0) as usize,
            invisible_ms: cmd.ext_req::<i64>("invisibleTime")?.max(0) as u64,
            poll_ms: cmd.ext_opt::<i64>("pollTime")?.unwrap_or(0).max(0) as u64,
            born_time: cmd.ext_opt("bornTime")?.unwrap_or(0),
            init_min: cmd.ext_opt::<i32>("initMode")?.unwrap_or(0) == 0,
            exp_type: cmd.ext("expType").map(str::to_string),
            exp: cmd
                .ext("exp")
                .filter(|e| !e.is_empty())
                .unwrap_or("*")
                .to_string(),
            order: cmd.ext_opt("order")?.unwrap_or(false),
            attempt_id: cmd.ext("attemptId").map(str::to_string),
        })
    }
}

/// One queue's share of a pop.
struct QueueRead {
    /// The queue's topic: the pop's, or its pop retry topic.
    topic: String,
    queue_id: u32,
    start: u64,
    records: Vec<StoredRecord>,
    /// Orderly: each message's deliveries before this one.
    counts: Vec<(u64, u32)>,
}

impl<D: Disk> Broker<D> {
    /// POP_MESSAGE. `run` as for pulls: a pop that finds nothing is held (long polling)
    /// until a message arrives or its poll time runs out.
    pub(super) fn pop_message(
        &mut self,
        conn: ConnId,
        cmd: &RemotingCommand,
        now: u64,
        run: PullRun,
    ) -> Result<Option<RemotingCommand>, FieldError> {
        let h = PopHeader::parse(cmd)?;
        let pop_time = java_millis(now);
        let header = |code: i32, remark: Option<String>| {
            RemotingCommand::response_to(cmd, code, remark)
                .with_ext("popTime", pop_time)
                .with_ext("invisibleTime", h.invisible_ms)
                .with_ext(
                    "reviveQid",
                    if h.order {
                        ORDER_REVIVE_QID
                    } else {
                        REVIVE_QID
                    },
                )
                .with_ext("restNum", 0)
        };
        let refuse = |code: i32, remark: String| Ok(Some(header(code, Some(remark))));
        if run == PullRun::First
            && h.poll_ms > 0
            && h.born_time > 0
            && pop_time - h.born_time - h.poll_ms as i64 > POP_LATE_MS
        {
            return refuse(
                response::POLLING_TIMEOUT,
                format!(
                    "the pop arrived {} ms after its poll time ran out",
                    pop_time - h.born_time - h.poll_ms as i64
                ),
            );
        }
        if !perm::readable(self.config.broker_permission) {
            return refuse(
                response::NO_PERMISSION,
                format!(
                    "the broker[{}] pop message is forbidden",
                    self.config.broker_name
                ),
            );
        }
        if !self.repl.role.is_master() {
            return refuse(
                response::NO_PERMISSION,
                format!(
                    "the broker[{}] is a slave: pop from its master",
                    self.config.broker_name
                ),
            );
        }
        if h.max == 0 || h.max as i64 > MAX_POP_MESSAGES {
            return refuse(
                response::INVALID_PARAMETER,
                format!(
                    "the broker's pop maxMsgNums must be 1..={MAX_POP_MESSAGES}, not {}",
                    h.max
                ),
            );
        }
        if h.invisible_ms > MAX_INVISIBLE_MS {
            return refuse(
                response::INVALID_PARAMETER,
                format!(
                    "invisibleTime {} ms is over the limit of {MAX_INVISIBLE_MS} ms",
                    h.invisible_ms
                ),
            );
        }
        match self.find_group(&h.group, now) {
            None => {
                return refuse(
                    response::SUBSCRIPTION_GROUP_NOT_EXIST,
                    format!("subscription group [{}] does not exist", h.group),
                );
            }
            Some(g) if !g.consume_enable => {
                return refuse(
                    response::NO_PERMISSION,
                    format!("subscription group no permission, {}", h.group),
                );
            }
            Some(_) => {}
        }
        let Some(tc) = self.topics.get(&h.topic) else {
            return refuse(
                response::TOPIC_NOT_EXIST,
                format!("topic[{}] not exist, apply first please!", h.topic),
            );
        };
        if !perm::readable(tc.perm) {
            return refuse(
                response::NO_PERMISSION,
                format!("the topic[{}] peeking message is forbidden", h.topic),
            );
        }
        let read_queues = tc.read_queue_nums;
        if h.queue_id >= 0 && h.queue_id as u32 >= read_queues {
            return refuse(
                response::INVALID_PARAMETER,
                format!(
                    "queueId[{}] is illegal, topic:[{}] topicConfig.readQueueNums:[{read_queues}]",
                    h.queue_id, h.topic
                ),
            );
        }
        let filter = match SubscriptionFilter::compile(h.exp_type.as_deref(), &h.exp) {
            Ok(SubscriptionFilter::Unsupported(t)) => {
                return refuse(
                    response::SUBSCRIPTION_PARSE_FAILED,
                    format!("unsupported expression type {t}"),
                );
            }
            Ok(f) => f,
            Err(e) => {
                return refuse(
                    response::SUBSCRIPTION_PARSE_FAILED,
                    format!("parse the consumer's subscription failed: {e}"),
                );
            }
        };
        if filter.is_sql() && !self.config.enable_property_filter {
            return refuse(
                response::SYSTEM_ERROR,
                "The broker does not support consumer to filter message by SQL92".into(),
            );
        }
        if self.pop.pending() >= self.config.limits.max_pop_inflight {
            return refuse(
                response::POLLING_FULL,
                format!(
                    "{} popped messages wait for their ack (limit); ack or let them lapse",
                    self.pop.pending()
                ),
            );
        }

        // The queues to read, in order: the retry topic first in one pop of five, else last
        // (never for orderly pops: a retry would break the order).
        let retry = pop_retry_topic(&h.group, &h.topic);
        let has_retry = !h.order && self.topics.contains(&retry);
        if has_retry {
            self.pop.learn_retry_topic(retry.clone(), &h.topic);
        }
        let retry_first = has_retry && self.rng.random_range(0..100) < RETRY_FIRST_PERCENT;
        let queues: Vec<u32> = if h.queue_id >= 0 {
            vec![h.queue_id as u32]
        } else {
            let first = self.rng.random_range(0..read_queues.max(1));
            (first..read_queues).chain(0..first).collect()
        };
        let mut targets: Vec<(&str, u32)> = queues.iter().map(|&q| (h.topic.as_str(), q)).collect();
        if has_retry {
            if retry_first {
                targets.insert(0, (retry.as_str(), 0));
            } else {
                targets.push((retry.as_str(), 0));
            }
        }
        let mut reads = Vec::new();
        let (mut rest, mut budget) = (0u64, h.max);
        for (topic, queue_id) in targets {
            let is_retry = topic != h.topic;
            let all = SubscriptionFilter::Tag(crate::message::TagFilter::parse("*"));
            let f = if is_retry { &all } else { &filter };
            match self.pop_queue(&h, topic, queue_id, budget, f, pop_time, now) {
                Ok((read, left)) => {
                    rest += left;
                    if let Some(r) = read {
                        budget -= r.records.len();
                        reads.push(r);
                    }
                }
                Err(e) => return refuse(response::SYSTEM_ERROR, e),
            }
        }

        if reads.is_empty() {
            if run != PullRun::Deadline && h.poll_ms > 0 {
                if !self.held.admits(conn, &self.config.limits) {
                    return refuse(
                        response::POLLING_FULL,
                        format!(
                            "too many held pulls and pops (limits: {} in all, {} per connection)",
                            self.config.limits.max_held_pulls,
                            self.config.limits.max_held_pulls_per_conn
                        ),
                    );
                }
                let wait = h.poll_ms.min(self.config.max_suspend_ms);
                self.held.hold(
                    h.topic.clone(),
                    POP_ANY_QUEUE,
                    PendingPull {
                        conn,
                        request: cmd.clone(),
                        deadline: now + wait,
                    },
                );
                return Ok(None);
            }
            return Ok(Some(
                header(response::POLLING_TIMEOUT, None).with_ext("restNum", rest),
            ));
        }

        let (mut starts, mut offsets, mut counts) = (String::new(), String::new(), String::new());
        let mut records = Vec::new();
        for r in &reads {
            wire::push_start_offset(&mut starts, &r.topic, r.queue_id, r.start);
            let list: Vec<u64> = r.records.iter().map(StoredRecord::queue_offset).collect();
            wire::push_msg_offsets(&mut offsets, &r.topic, r.queue_id, &list);
            if h.order {
                wire::push_order_counts(&mut counts, &r.topic, r.queue_id, &r.counts);
            }
            let bytes: u64 = r.records.iter().map(|m| m.bytes().len() as u64).sum();
            let next = list.last().map_or(r.start, |o| o + 1);
            self.stats.served(
                &r.topic,
                &h.group,
                r.queue_id,
                (r.records.len() as u64, bytes),
                next,
                now,
            );
            for rec in &r.records {
                if r.topic == h.topic {
                    records.push(rec.bytes().clone());
                } else {
                    records.push(self.as_popped_retry(rec, &h, r.start, pop_time));
                }
            }
        }
        let mut resp = header(response::SUCCESS, None)
            .with_ext("restNum", rest)
            .with_ext("startOffsetInfo", starts)
            .with_ext("msgOffsetInfo", offsets);
        if !counts.is_empty() {
            resp = resp.with_ext("orderCountInfo", counts);
        }
        if !cmd.is_oneway() {
            self.outputs.push_back(Output::SendRecords {
                conn,
                cmd: resp,
                records,
            });
        }
        Ok(None)
    }

    /// Reads one queue for a pop: returns what it handed out (checkpointed, or locked for an
    /// orderly pop) and how many messages are left behind it. `Err` names a store failure.
    #[allow(clippy::too_many_arguments)]
    fn pop_queue(
        &mut self,
        h: &PopHeader,
        topic: &str,
        queue_id: u32,
        budget: usize,
        filter: &SubscriptionFilter,
        pop_time: i64,
        now: u64,
    ) -> Result<(Option<QueueRead>, u64), String> {
        let lock_key = (topic.to_string(), h.group.clone(), queue_id);
        if h.order
            && self
                .pop
                .orders
                .get(&lock_key)
                .is_some_and(|l| l.blocks(now, h.attempt_id.as_deref()))
        {
            return Ok((None, 0)); // locked by messages still invisible
        }
        let visible = self
            .visible_max_offset(topic, queue_id)
            .map_err(|e| format!("store error: {e}"))?;
        let mut start = match self.offsets.table.get(topic, &h.group, queue_id) {
            Some(o) => o,
            None => {
                let o = if h.init_min || topic != h.topic {
                    self.store.min_offset(topic, queue_id)
                } else {
                    visible
                        .saturating_sub(1)
                        .max(self.store.min_offset(topic, queue_id))
                };
                if !self.offsets_admit(topic, &h.group, queue_id) {
                    return Err(format!(
                        "offset of {topic}@{} not kept: the offset table is full",
                        h.group
                    ));
                }
                self.commit_offset(topic, &h.group, queue_id, o, now);
                o
            }
        };
        if budget == 0 {
            return Ok((None, visible.saturating_sub(start)));
        }
        let mut got = None;
        for _ in 0..2 {
            let g = self
                .store
                .get_filtered(
                    topic,
                    queue_id,
                    start,
                    budget,
                    self.config.max_pull_bytes,
                    &|c| filter.matches_code(c),
                    &|props| filter.matches_record(props),
                    visible,
                )
                .map_err(|e| format!("store error: {e}"))?;
            let moved = matches!(
                g.status,
                GetStatus::OffsetTooSmall
                    | GetStatus::OffsetOverflowBadly
                    | GetStatus::OffsetFoundNull
            ) && g.next_offset != start;
            if moved {
                // The offset pointed outside the queue (deleted, or past a power loss's cut):
                // start again where the queue is.
                self.commit_offset(topic, &h.group, queue_id, g.next_offset, now);
                start = g.next_offset;
                continue;
            }
            got = Some(g);
            break;
        }
        let Some(got) = got else {
            return Ok((None, 0));
        };
        let rest = visible.saturating_sub(got.next_offset);
        if got.messages.is_empty() {
            // All filtered out: the offset passes them (no lock holds an orderly queue here).
            if got.next_offset > start && !self.pop.orders.contains_key(&lock_key) {
                self.commit_offset(topic, &h.group, queue_id, got.next_offset, now);
            }
            return Ok((None, rest));
        }
        if h.order {
            return self
                .lock_orderly(
                    h,
                    lock_key,
                    start,
                    got.messages,
                    got.next_offset,
                    pop_time,
                    now,
                )
                .map(|r| (r, rest));
        }
        let key = CkKey {
            topic: topic.to_string(),
            group: h.group.clone(),
            queue_id,
            start,
            pop_time,
        };
        let offsets: Vec<u64> = got
            .messages
            .iter()
            .map(StoredRecord::queue_offset)
            .collect();
        let due = if crate::buggify::bug("broker.pop-early-revive") {
            now + h.invisible_ms / 4
        } else {
            now + h.invisible_ms
        };
        // The checkpoint first, then the offset: whatever of the two a crash keeps, the
        // messages are either handed out again or revived, never skipped.
        let at = self
            .journal_pop(
                &Entry::Ck {
                    key: key.clone(),
                    due,
                    invisible_ms: h.invisible_ms,
                    offsets: offsets.clone(),
                },
                now,
            )
            .map_err(|e| format!("store error: {e}"))?;
        self.pop.insert(
            key,
            Ck {
                due,
                pending: offsets.into_iter().collect(),
                journal_at: at.queue_offset,
            },
        );
        self.arm_pop_revive();
        if crate::buggify::bug("broker.pop-offset-unjournaled") {
            self.offsets
                .table
                .set(topic, &h.group, queue_id, got.next_offset);
            self.offsets.dirty = true;
        } else {
            self.commit_offset(topic, &h.group, queue_id, got.next_offset, now);
        }
        Ok((
            Some(QueueRead {
                topic: topic.to_string(),
                queue_id,
                start,
                records: got.messages,
                counts: Vec::new(),
            }),
            rest,
        ))
    }

    /// An orderly pop's read of a queue: locks it for the group with these messages,
    /// counting the ones delivered before; one delivered retryMaxTimes times already goes to
    /// the group's dead-letter topic instead (acked in the lock).
    #[allow(clippy::too_many_arguments)]
    fn lock_orderly(
        &mut self,
        h: &PopHeader,
        lock_key: (String, String, u32),
        start: u64,
        messages: Vec<StoredRecord>,
        next: u64,
        pop_time: i64,
        now: u64,
    ) -> Result<Option<QueueRead>, String> {
        let max = self.group_retry_max(&h.group);
        let prev = self.pop.orders.remove(&lock_key);
        let mut lock = OrderLock {
            pop_time,
            attempt_id: h.attempt_id.clone(),
            offsets: Vec::new(),
            next,
            counts: Default::default(),
        };
        let (mut records, mut counts) = (Vec::new(), Vec::new());
        for rec in messages {
            let o = rec.queue_offset();
            let mut count = prev
                .as_ref()
                .and_then(|p| p.counts.get(&o))
                .copied()
                .unwrap_or(0);
            let same_attempt = h.attempt_id.is_some()
                && prev.as_ref().is_some_and(|p| p.attempt_id == h.attempt_id);
            if !same_attempt
                && prev
                    .as_ref()
                    .is_some_and(|p| p.offsets.iter().any(|e| e.0 == o))
            {
                count += 1;
            }
            if count as i64 > max as i64 {
                // Delivered 1 + retryMaxTimes times: dead-lettered, and the queue moves on.
                self.dead_letter(&rec, &h.group, now)?;
                lock.offsets.push((o, true, now));
                continue;
            }
            lock.counts.insert(o, count);
            lock.offsets.push((o, false, now + h.invisible_ms));
            counts.push((o, count));
            records.push(rec);
        }
        let commit = lock.commit_point();
        if records.is_empty() {
            self.commit_offset(&lock_key.0, &h.group, lock_key.2, commit, now);
            return Ok(None);
        }
        if commit > start {
            self.commit_offset(&lock_key.0, &h.group, lock_key.2, commit, now);
        }
        let queue_id = lock_key.2;
        let topic = lock_key.0.clone();
        self.pop.orders.insert(lock_key, lock);
        Ok(Some(QueueRead {
            topic,
            queue_id,
            start,
            records,
            counts,
        }))
    }

    /// A retry message as a pop hands it out: under the pop's topic, with its receipt in
    /// POP_CK (the client acks it against the retry topic through the receipt's flag).
    fn as_popped_retry(
        &self,
        rec: &StoredRecord,
        h: &PopHeader,
        start: u64,
        pop_time: i64,
    ) -> Bytes {
        let retry = pop_retry_topic(&h.group, &h.topic);
        let receipt = wire::receipt(
            start,
            pop_time,
            h.invisible_ms as i64,
            REVIVE_QID,
            &retry,
            &self.config.broker_name,
            0,
            rec.queue_offset(),
        );
        let props = rewrite_properties(
            rec.properties(),
            &[PROPERTY_POP_CK],
            &[(PROPERTY_POP_CK, receipt.as_str())],
        );
        let body = rec.body();
        let msg = StoreMessage {
            topic: &h.topic,
            queue_id: rec.queue_id(),
            flag: rec.flag(),
            sys_flag: rec.sys_flag(),
            born_timestamp: rec.born_timestamp(),
            born_host: rec.born_host(),
            store_host: self.store_host,
            reconsume_times: rec.reconsume_times(),
            prepared_transaction_offset: rec.prepared_transaction_offset(),
            body: &body,
            properties: &props,
        };
        match encode_to_vec(
            &msg,
            usize::MAX,
            rec.queue_offset(),
            rec.physical_offset(),
            rec.store_timestamp(),
        ) {
            Ok(v) => Bytes::from(v),
            // Cannot happen for a record the store holds (its sizes were checked when stored);
            // the client then sees it under the retry topic, which it also understands.
            Err(_) => rec.bytes().clone(),
        }
    }

    /// ACK_MESSAGE.
    pub(super) fn ack_message(
        &mut self,
        conn: ConnId,
        cmd: &RemotingCommand,
        now: u64,
    ) -> Result<Option<RemotingCommand>, FieldError> {
        let group: String = cmd.ext_req("consumerGroup")?;
        let topic: String = cmd.ext_req("topic")?;
        let queue_id: u32 = cmd.ext_req("queueId")?;
        let offset: u64 = cmd.ext_req::<i64>("offset")?.max(0) as u64;
        let receipt = match Receipt::parse(&cmd.ext_req::<String>("extraInfo")?) {
            Ok(r) => r,
            Err(e) => {
                return Ok(Some(RemotingCommand::response_to(
                    cmd,
                    response::MESSAGE_ILLEGAL,
                    Some(e),
                )));
            }
        };
        let topic = wire::real_topic(&receipt.retry, &topic, &group);
        if receipt.is_order() {
            return Ok(self.ack_orderly(
                conn,
                cmd,
                (topic, group, queue_id),
                receipt.pop_time,
                offset,
                None,
                now,
            ));
        }
        let key = CkKey {
            topic,
            group,
            queue_id,
            start: receipt.ck_offset,
            pop_time: receipt.pop_time,
        };
        Ok(self.decide_acks(conn, cmd, vec![(key, vec![offset])], now))
    }

    /// BATCH_ACK_MESSAGE: the body names checkpoints and, per checkpoint, offsets as a bit set.
    pub(super) fn batch_ack_message(
        &mut self,
        conn: ConnId,
        cmd: &RemotingCommand,
        now: u64,
    ) -> Result<Option<RemotingCommand>, FieldError> {
        let body: wire::BatchAckBody =
            crate::protocol::lenient::request_body(cmd, "BatchAckMessageRequestBody")?;
        let mut acks = Vec::new();
        for a in body.acks {
            let retry = a.retry.as_deref().unwrap_or("0");
            let topic = wire::real_topic(retry, &a.topic, &a.group);
            let offsets = match wire::bitset_offsets(
                a.start.max(0) as u64,
                &a.bits,
                MAX_POP_MESSAGES as usize * 64,
            ) {
                Ok(o) => o,
                Err(e) => {
                    return Ok(Some(RemotingCommand::response_to(
                        cmd,
                        response::MESSAGE_ILLEGAL,
                        Some(e),
                    )));
                }
            };
            let queue_id = a.queue_id.max(0) as u32;
            if a.revive_qid == Some(ORDER_REVIVE_QID as i64) {
                for o in offsets {
                    // Each answered on its own: an orderly ack commits the queue's offset.
                    let _ = self.ack_orderly(
                        conn,
                        cmd,
                        (topic.clone(), a.group.clone(), queue_id),
                        a.pop_time,
                        o,
                        Some(()),
                        now,
                    );
                }
                continue;
            }
            acks.push((
                CkKey {
                    topic,
                    group: a.group,
                    queue_id,
                    start: a.start.max(0) as u64,
                    pop_time: a.pop_time,
                },
                offsets,
            ));
        }
        if acks.is_empty() {
            return Ok(Some(RemotingCommand::response_to(
                cmd,
                response::SUCCESS,
                None,
            )));
        }
        Ok(self.decide_acks(conn, cmd, acks, now))
    }

    /// Acks `offsets` of checkpoints: journaled, then answered (after the record's flush
    /// under SYNC_FLUSH). None of them pending is NO_MESSAGE: acked before, or revived.
    fn decide_acks(
        &mut self,
        conn: ConnId,
        cmd: &RemotingCommand,
        acks: Vec<(CkKey, Vec<u64>)>,
        now: u64,
    ) -> Option<RemotingCommand> {
        if self.offset_commit_waits() && !cmd.is_oneway() && self.sync_waiters_full() {
            return Some(RemotingCommand::response_to(
                cmd,
                response::SYSTEM_BUSY,
                Some(format!(
                    "broker busy: {} answers wait for their flush (limit)",
                    self.flush.waiters.len()
                )),
            ));
        }
        let mut end = None;
        let mut forgotten = false;
        for (key, offsets) in acks {
            let Some(ck) = self.pop.get(&key) else {
                continue;
            };
            let pending: Vec<u64> = offsets
                .into_iter()
                .filter(|o| ck.pending.contains(o))
                .collect();
            if pending.is_empty() {
                continue;
            }
            if crate::buggify::bug("broker.pop-ack-forgotten") {
                forgotten = true;
                continue;
            }
            let entry = Entry::Ack {
                key: key.clone(),
                offsets: pending.clone(),
            };
            match self.journal_pop(&entry, now) {
                Ok(put) => {
                    end = Some(put.end);
                    self.pop.decide(&key, &pending);
                }
                Err(e) => {
                    return Some(RemotingCommand::response_to(
                        cmd,
                        response::SYSTEM_ERROR,
                        Some(format!("store error: {e}")),
                    ));
                }
            }
        }
        let Some(end) = end else {
            if forgotten {
                return Some(RemotingCommand::response_to(cmd, response::SUCCESS, None));
            }
            return Some(RemotingCommand::response_to(
                cmd,
                response::NO_MESSAGE,
                Some("no message in flight under this receipt: acked already, or its invisible time lapsed and it was revived".into()),
            ));
        };
        let ok = RemotingCommand::response_to(cmd, response::SUCCESS, None);
        self.answer_when_durable(conn, cmd, ok, end, now)
    }

    /// An answer that, under SYNC_FLUSH, waits for the commit log to be durable to `end`.
    fn answer_when_durable(
        &mut self,
        conn: ConnId,
        cmd: &RemotingCommand,
        answer: RemotingCommand,
        end: u64,
        now: u64,
    ) -> Option<RemotingCommand> {
        if !self.offset_commit_waits() || cmd.is_oneway() {
            return Some(answer);
        }
        self.flush.waiters.push_back(SyncWaiter {
            conn,
            response: answer,
            end,
            deadline: now + self.config.sync_flush_timeout_ms,
            timeout_code: response::SYSTEM_ERROR,
            replicate: false,
        });
        self.request_flush(now);
        None
    }

    /// An orderly ack: the queue's offset moves to its first message not acked. `quiet`
    /// (a batch ack's share) answers nothing.
    #[allow(clippy::too_many_arguments)]
    fn ack_orderly(
        &mut self,
        conn: ConnId,
        cmd: &RemotingCommand,
        lock_key: (String, String, u32),
        pop_time: i64,
        offset: u64,
        quiet: Option<()>,
        now: u64,
    ) -> Option<RemotingCommand> {
        let ok = RemotingCommand::response_to(cmd, response::SUCCESS, None);
        let Some(lock) = self.pop.orders.get_mut(&lock_key) else {
            return quiet.map_or(Some(ok), |_| None); // nothing locked: decided already
        };
        if lock.pop_time != pop_time {
            return quiet.map_or(Some(ok), |_| None); // a receipt of an earlier pop of the queue
        }
        let Some(e) = lock.offsets.iter_mut().find(|e| e.0 == offset) else {
            return quiet.map_or(
                Some(RemotingCommand::response_to(
                    cmd,
                    response::MESSAGE_ILLEGAL,
                    Some(format!("offset {offset} is not in the queue's last pop")),
                )),
                |_| None,
            );
        };
        e.1 = true;
        let commit = lock.commit_point();
        let done = lock.offsets.iter().all(|e| e.1);
        let (topic, group, queue_id) = lock_key.clone();
        if done {
            self.pop.orders.remove(&lock_key);
        }
        let end = self.commit_offset(&topic, &group, queue_id, commit, now);
        if done {
            self.wake_pulls(&topic, POP_ANY_QUEUE, now);
        }
        if quiet.is_some() {
            return None;
        }
        match end {
            Some(end) => self.answer_when_durable(conn, cmd, ok, end, now),
            None => Some(ok),
        }
    }

    /// CHANGE_MESSAGE_INVISIBLETIME: the message moves to a checkpoint of its own, due
    /// `invisibleTime` from now (an orderly one: its visibility moves).
    pub(super) fn change_invisible_time(
        &mut self,
        conn: ConnId,
        cmd: &RemotingCommand,
        now: u64,
    ) -> Result<Option<RemotingCommand>, FieldError> {
        let group: String = cmd.ext_req("consumerGroup")?;
        let topic: String = cmd.ext_req("topic")?;
        let queue_id: u32 = cmd.ext_req("queueId")?;
        let offset: u64 = cmd.ext_req::<i64>("offset")?.max(0) as u64;
        let invisible_ms = cmd.ext_req::<i64>("invisibleTime")?.max(0) as u64;
        let refuse = |code: i32, remark: String| {
            Ok(Some(RemotingCommand::response_to(cmd, code, Some(remark))))
        };
        let receipt = match Receipt::parse(&cmd.ext_req::<String>("extraInfo")?) {
            Ok(r) => r,
            Err(e) => return refuse(response::MESSAGE_ILLEGAL, e),
        };
        if invisible_ms > MAX_INVISIBLE_MS {
            return refuse(
                response::INVALID_PARAMETER,
                format!(
                    "invisibleTime {invisible_ms} ms is over the limit of {MAX_INVISIBLE_MS} ms"
                ),
            );
        }
        let topic = wire::real_topic(&receipt.retry, &topic, &group);
        let answer = |pop_time: i64, invisible: u64, qid: i32| {
            RemotingCommand::response_to(cmd, response::SUCCESS, None)
                .with_ext("popTime", pop_time)
                .with_ext("invisibleTime", invisible)
                .with_ext("reviveQid", qid)
        };
        if receipt.is_order() {
            let lock = self.pop.orders.get_mut(&(topic, group, queue_id));
            let Some(e) = lock
                .filter(|l| l.pop_time == receipt.pop_time)
                .and_then(|l| l.offsets.iter_mut().find(|e| e.0 == offset && !e.1))
            else {
                return refuse(
                    response::NO_MESSAGE,
                    "no message in flight under this receipt".into(),
                );
            };
            e.2 = now + invisible_ms;
            let visible_at = java_millis(e.2);
            return Ok(Some(answer(
                receipt.pop_time,
                (visible_at - receipt.pop_time).max(0) as u64,
                ORDER_REVIVE_QID,
            )));
        }
        let old = CkKey {
            topic: topic.clone(),
            group: group.clone(),
            queue_id,
            start: receipt.ck_offset,
            pop_time: receipt.pop_time,
        };
        if !self
            .pop
            .get(&old)
            .is_some_and(|c| c.pending.contains(&offset))
        {
            return refuse(
                response::NO_MESSAGE,
                "no message in flight under this receipt: acked already, or its invisible time lapsed and it was revived".into(),
            );
        }
        if self.offset_commit_waits() && !cmd.is_oneway() && self.sync_waiters_full() {
            return refuse(
                response::SYSTEM_BUSY,
                "broker busy: too many answers wait for their flush".into(),
            );
        }
        let mut key = CkKey {
            topic,
            group,
            queue_id,
            start: offset,
            pop_time: java_millis(now),
        };
        while self.pop.contains(&key) {
            key.pop_time += 1; // a checkpoint of its own, even within one millisecond
        }
        let due = now + invisible_ms;
        // One record moves it: a crash keeps both checkpoints' sides or neither (two
        // records could leave it in both, revived after its new receipt acked it).
        let moved = Entry::Move {
            from: old.clone(),
            to_pop_time: key.pop_time,
            due,
            offset,
        };
        let at = match self.journal_pop(&moved, now) {
            Ok(put) => put,
            Err(e) => return refuse(response::SYSTEM_ERROR, format!("store error: {e}")),
        };
        self.pop.insert(
            key.clone(),
            Ck {
                due,
                pending: [offset].into_iter().collect(),
                journal_at: at.queue_offset,
            },
        );
        self.pop.decide(&old, &[offset]);
        self.arm_pop_revive();
        let end = at.end;
        let ok = answer(key.pop_time, invisible_ms, receipt.revive_qid);
        Ok(self.answer_when_durable(conn, cmd, ok, end, now))
    }

    /// Appends one journal record; returns where it landed.
    fn journal_pop(&mut self, entry: &Entry, now: u64) -> Result<JournalPut, StoreError> {
        let body = entry.encode();
        let msg = StoreMessage {
            topic: POP_JOURNAL_TOPIC,
            queue_id: 0,
            flag: 0,
            sys_flag: 0,
            born_timestamp: java_millis(now),
            born_host: self.store_host,
            store_host: self.store_host,
            reconsume_times: 0,
            prepared_transaction_offset: 0,
            body: body.as_bytes(),
            properties: b"",
        };
        let put = self.store.put(&msg, now)?;
        Ok(JournalPut {
            end: put.end,
            queue_offset: put.first.queue_offset,
        })
    }

    /// Arms the revive timer for the earliest checkpoint.
    fn arm_pop_revive(&mut self) {
        use super::timers::Timer;
        if let Some(due) = self.pop.next_due()
            && self.timers.at(Timer::PopRevive).is_none_or(|at| at > due)
        {
            self.timers.set(Timer::PopRevive, due);
        }
    }

    /// Journals where the pop journal's replay must start (with each offsets snapshot).
    pub(super) fn journal_pop_progress(&mut self, now: u64) {
        let end = self.store.max_offset(POP_JOURNAL_TOPIC, 0);
        let from = self.pop.replay_from(end);
        if from > 0 {
            self.journal_offset(POP_JOURNAL_TOPIC, POP_PROGRESS_GROUP, 0, from, now);
        }
    }

    /// The group's retryMaxTimes (16 for a group the broker does not know).
    fn group_retry_max(&self, group: &str) -> i32 {
        self.groups.get(group).map_or(16, |g| g.retry_max_times)
    }

    /// Messages handed out by pops and not yet acked or revived.
    pub fn pop_inflight(&self) -> usize {
        self.pop.pending()
    }
}

/// Where a journal record landed.
struct JournalPut {
    end: u64,
    queue_offset: u64,
}

//! PULL_MESSAGE with long polling: a pull that finds nothing new is held until a message
//! arrives at its queue or its suspend time runs out.

use rockfish_store::{Disk, GetStatus, StoreResult};

use super::held_pulls::PendingPull;
use super::{Broker, FlushDiskType};
use crate::filter::SubscriptionFilter;
use crate::machine::{ConnId, Output};
use crate::protocol::perm;
use crate::remoting::codes::response;
use crate::remoting::{FieldError, RemotingCommand};

/// Why a pull is being run.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum PullRun {
    /// As it arrived: may commit its offset and may be held.
    First,
    /// Woken by a new message: may be held again.
    Woken,
    /// Its hold ran out: answered with whatever is there.
    Deadline,
}

use crate::protocol::pull_flag::{COMMIT_OFFSET, SUBSCRIPTION, SUSPEND};

impl<D: Disk> Broker<D> {
    /// Serves a pull. `run` says whether it is fresh, woken, or re-run at its hold's deadline
    /// (then it is answered, never held again).
    pub(super) fn pull_message(
        &mut self,
        conn: ConnId,
        cmd: &RemotingCommand,
        now: u64,
        run: PullRun,
    ) -> Result<Option<RemotingCommand>, FieldError> {
        let may_suspend = run != PullRun::Deadline;
        let group: String = cmd.ext_req("consumerGroup")?;
        let topic: String = cmd.ext_req("topic")?;
        let queue_id: u32 = cmd.ext_req("queueId")?;
        let offset: u64 = cmd.ext_req::<i64>("queueOffset")?.max(0) as u64;
        let mut max_msgs: usize =
            cmd.ext_req::<i64>("maxMsgNums")?
                .clamp(1, self.config.max_pull_messages as i64) as usize;
        if crate::buggify!("broker.pull.short") {
            // A short read: the consumer must page through with nextBeginOffset.
            max_msgs = 1;
        }
        let sys_flag: i32 = cmd.ext_opt("sysFlag")?.unwrap_or(0);
        let commit_offset: i64 = cmd.ext_opt("commitOffset")?.unwrap_or(-1);
        let suspend_ms: u64 = cmd
            .ext_opt::<i64>("suspendTimeoutMillis")?
            .unwrap_or(0)
            .max(0) as u64;

        let refuse = |code: i32, remark: String| {
            Ok(Some(RemotingCommand::response_to(cmd, code, Some(remark))))
        };
        if !crate::protocol::perm::readable(self.config.broker_permission) {
            return refuse(
                response::NO_PERMISSION,
                format!(
                    "the broker[{}] pulling message is forbidden",
                    self.config.broker_name
                ),
            );
        }
        match self.find_group(&group, now) {
            None => {
                return refuse(
                    response::SUBSCRIPTION_GROUP_NOT_EXIST,
                    format!("subscription group [{group}] does not exist"),
                );
            }
            Some(g) if !g.consume_enable => {
                return refuse(
                    response::NO_PERMISSION,
                    format!("subscription group no permission, {group}"),
                );
            }
            Some(_) => {}
        }
        if !self.topics.contains(&topic) {
            self.adopt_replicated_topic(&topic);
        }
        let Some(tc) = self.topics.get(&topic) else {
            return refuse(
                response::TOPIC_NOT_EXIST,
                format!("topic[{topic}] not exist, apply first please!"),
            );
        };
        if !perm::readable(tc.perm) {
            return refuse(
                response::NO_PERMISSION,
                format!("the topic[{topic}] pulling message is forbidden"),
            );
        }
        if queue_id >= tc.read_queue_nums {
            return refuse(
                response::SYSTEM_ERROR,
                format!(
                    "queueId[{queue_id}] is illegal, topic:[{topic}] topicConfig.readQueueNums:[{}]",
                    tc.read_queue_nums
                ),
            );
        }
        let filter = if sys_flag & SUBSCRIPTION != 0 {
            match SubscriptionFilter::compile(
                cmd.ext("expressionType"),
                cmd.ext("subscription").unwrap_or("*"),
            ) {
                Ok(f) => f,
                Err(e) => {
                    return refuse(
                        response::SUBSCRIPTION_PARSE_FAILED,
                        format!("parse the consumer's subscription failed: {e}"),
                    );
                }
            }
        } else {
            match self.clients.subscription(&group, &topic) {
                Some(f) => f,
                None => {
                    return refuse(
                        response::SUBSCRIPTION_NOT_EXIST,
                        format!(
                            "the consumer's subscription not exist, group: {group} topic: {topic}"
                        ),
                    );
                }
            }
        };
        if let SubscriptionFilter::Unsupported(t) = &filter {
            return refuse(
                response::SUBSCRIPTION_NOT_EXIST,
                format!(
                    "The broker's consumer filter data is not exist!Your expression may be wrong! \
                     (expression type {t})"
                ),
            );
        }
        if filter.is_sql() && !self.config.enable_property_filter {
            return refuse(
                response::SYSTEM_ERROR,
                "The broker does not support consumer to filter message by SQL92".into(),
            );
        }
        // Only a pull's first run commits: a held pull woken later carries a stale offset
        // that must not rewind what the consumer committed since (as RocketMQ does).
        // A consumer that lived through a restart may pull from past what recovery kept: it
        // goes back to what its group is known to have consumed, or it could skip what is
        // stored there now (`recovery::OffsetFences`).
        if let Some(limit) = self.offset_limit(conn, &topic, &group, queue_id)
            && offset > limit
        {
            tracing::warn!(
                topic,
                group,
                queue_id,
                offset,
                limit,
                "pull from past what the group is known to have consumed since recovery: offset moved"
            );
            return Ok(Some(
                RemotingCommand::response_to(cmd, response::PULL_OFFSET_MOVED, None)
                    .with_ext("nextBeginOffset", limit)
                    .with_ext("minOffset", self.store.min_offset(&topic, queue_id))
                    .with_ext("maxOffset", self.store.max_offset(&topic, queue_id))
                    .with_ext("suggestWhichBrokerId", 0),
            ));
        }
        if run == PullRun::First
            && sys_flag & COMMIT_OFFSET != 0
            && commit_offset >= 0
            && self.offsets_admit(&topic, &group, queue_id)
            && self.admit_commit(conn, &topic, &group, queue_id, commit_offset as u64)
        {
            // Journaled; the pull's answer does not wait for it (it is no commit answer).
            self.commit_offset(&topic, &group, queue_id, commit_offset as u64, now);
        }

        // Deliberately broken brokers, for the simulator's checkers: looked up once per pull,
        // not per entry.
        let code_skew = crate::buggify::bug("broker.tag-codes-wrong") as i64;
        let sql_inverted = crate::buggify::bug("broker.sql-inverted");
        let got = match self
            .visible_max_offset(&topic, queue_id)
            .and_then(|visible| {
                self.store.get_filtered(
                    &topic,
                    queue_id,
                    offset,
                    max_msgs,
                    self.config.max_pull_bytes,
                    &|c| filter.matches_code(c + code_skew),
                    &|props| filter.matches_record(props) ^ sql_inverted,
                    visible,
                )
            }) {
            Ok(got) => got,
            Err(e) => return refuse(response::SYSTEM_ERROR, format!("store error: {e}")),
        };
        let mut code = match got.status {
            GetStatus::Found => response::SUCCESS,
            GetStatus::NoMatchedMessage | GetStatus::OffsetFoundNull => {
                response::PULL_RETRY_IMMEDIATELY
            }
            GetStatus::NoMatchedLogicQueue | GetStatus::NoMessageInQueue => {
                if offset != 0 {
                    response::PULL_OFFSET_MOVED
                } else {
                    response::PULL_NOT_FOUND
                }
            }
            GetStatus::OffsetOverflowOne => response::PULL_NOT_FOUND,
            GetStatus::OffsetTooSmall | GetStatus::OffsetOverflowBadly => {
                response::PULL_OFFSET_MOVED
            }
        };
        if code == response::PULL_RETRY_IMMEDIATELY
            && got.status == GetStatus::NoMatchedMessage
            && got.next_offset == got.max_offset
        {
            // Everything left was filtered out: same as nothing new, as RocketMQ answers.
            code = response::PULL_NOT_FOUND;
        }
        // Nothing new: hold the pull if the client allows it (long polling).
        if code == response::PULL_NOT_FOUND
            && may_suspend
            && sys_flag & SUSPEND != 0
            && suspend_ms > 0
        {
            if !self.held.admits(conn, &self.config.limits) {
                return refuse(
                    response::SYSTEM_BUSY,
                    format!(
                        "too many held pulls (limits: {} in all, {} per connection)",
                        self.config.limits.max_held_pulls,
                        self.config.limits.max_held_pulls_per_conn
                    ),
                );
            }
            let wait = if self.config.long_polling {
                suspend_ms.min(self.config.max_suspend_ms)
            } else {
                1_000
            };
            self.held.hold(
                topic,
                queue_id,
                PendingPull {
                    conn,
                    request: cmd.clone(),
                    deadline: now + wait,
                },
            );
            return Ok(None);
        }
        self.offsets
            .fences
            .served(&topic, queue_id, conn, &group, got.next_offset);
        let resp = RemotingCommand::response_to(cmd, code, None)
            .with_ext("nextBeginOffset", got.next_offset)
            .with_ext("minOffset", got.min_offset)
            .with_ext("maxOffset", got.max_offset)
            .with_ext("suggestWhichBrokerId", self.suggest_broker(&got.messages));
        if code == response::SUCCESS {
            let bytes = got.messages.iter().map(|m| m.bytes().len() as u64).sum();
            self.stats.served(
                &topic,
                &group,
                queue_id,
                (got.messages.len() as u64, bytes),
                got.next_offset,
                now,
            );
            let records = got.messages.iter().map(|m| m.bytes().clone()).collect();
            if !cmd.is_oneway() {
                self.outputs.push_back(Output::SendRecords {
                    conn,
                    cmd: resp,
                    records,
                });
            }
            return Ok(None);
        }
        Ok(Some(resp))
    }

    /// Which broker of the group the consumer should pull from next (suggestWhichBrokerId):
    /// with slaveReadEnable, a master sends a consumer reading far behind its log's end to
    /// slave 1 (reading old data from disk there, not here); else the master.
    fn suggest_broker(&self, served: &[rockfish_store::StoredRecord]) -> u64 {
        let behind = served.first().map_or(0, |r| {
            self.store.write_pos().saturating_sub(r.physical_offset())
        });
        if self.config.slave_read_enable
            && self.repl.role.is_master()
            && self.connected_slaves() > 0
            && behind > self.config.slave_read_behind_bytes
        {
            1
        } else {
            crate::protocol::MASTER_ID
        }
    }

    /// Whether a message is visible to consumers once appended (ASYNC_FLUSH on a master
    /// that waits for no slave), rather than once durable (SYNC_FLUSH) or held by a slave
    /// (SYNC_MASTER).
    pub(super) fn visible_on_append(&self) -> bool {
        (self.config.flush_disk_type == FlushDiskType::Async
            && (!self.replication_bounds_visibility() || self.replicated_bound() == u64::MAX))
            || crate::buggify::bug("broker.serve-unflushed")
    }

    /// The log offset below which records are visible (see `visible_max_offset`).
    pub(super) fn visible_log_end(&self) -> u64 {
        let durable = if self.config.flush_disk_type == FlushDiskType::Sync {
            self.store.flushed()
        } else {
            self.store.write_pos()
        };
        durable.min(self.replicated_bound())
    }

    /// The queue offset below which consumers are served, the max offset pulls and
    /// GET_MAX_OFFSET report. ASYNC_FLUSH: everything appended. SYNC_FLUSH: only what is
    /// durable, so a message a consumer has seen never vanishes in a power loss and its queue
    /// offset is never reused for another message (RocketMQ #8239, fixed in Apache PR #8240).
    /// SYNC_MASTER with a slave in sync: only what a slave holds too (a failover keeps it).
    pub(super) fn visible_max_offset(&self, topic: &str, queue_id: u32) -> StoreResult<u64> {
        if self.visible_on_append() {
            return Ok(self.store.max_offset(topic, queue_id));
        }
        self.store
            .max_offset_upto(topic, queue_id, self.visible_log_end())
    }

    /// More of the log became visible (a flush, a slave's report, a replicated append on a
    /// slave): held pulls whose queue now holds something at their offset get another try.
    pub(super) fn wake_visible_pulls(&mut self, now: u64) {
        if self.visible_on_append()
            && self.repl.role.is_master()
            && !self.replication_bounds_visibility()
        {
            return; // woken on append instead
        }
        let mut due = Vec::new();
        for (topic, queue_id, pulls) in self.held.queues() {
            let woken = match self.visible_max_offset(topic, queue_id) {
                Ok(visible) => pulls.iter().any(|p| {
                    p.request
                        .ext_req::<i64>("queueOffset")
                        .map_or(true, |o| (o.max(0) as u64) < visible)
                }),
                Err(_) => true, // answered with the error
            };
            if woken {
                due.push((topic.to_string(), queue_id));
            }
        }
        for (topic, queue_id) in due {
            self.wake_pulls(&topic, queue_id, now);
        }
    }

    /// A message arrived at (topic, queue): held pulls there get another try.
    pub(super) fn wake_pulls(&mut self, topic: &str, queue_id: u32, now: u64) {
        if crate::buggify::bug("broker.lost-wakeup") {
            return; // a deliberately broken broker, for the simulator's checkers
        }
        for p in self.held.take_queue(topic, queue_id) {
            // Re-run with suspension allowed: a pull whose filter rejects the new message
            // goes back to waiting with its original deadline.
            let deadline = p.deadline;
            match self.rerun_held(&p, now, PullRun::Woken) {
                Ok(Some(resp)) => self.reply(p.conn, &p.request, resp),
                Ok(None) => {
                    // Held again (fresh deadline set inside): restore the original one.
                    self.held.set_last_deadline(topic, queue_id, deadline);
                }
                Err(e) => self.reply_error(p.conn, &p.request, e),
            }
        }
        // Pops wait on their topic, whichever queue (and on its pop retry topic).
        if queue_id != super::pop::POP_ANY_QUEUE {
            self.wake_pulls(topic, super::pop::POP_ANY_QUEUE, now);
            if let Some(origin) = self.pop.retry_origin(topic) {
                let origin = origin.to_string();
                self.wake_pulls(&origin, super::pop::POP_ANY_QUEUE, now);
            }
        }
    }

    /// A held pull or pop, run again.
    fn rerun_held(
        &mut self,
        p: &PendingPull,
        now: u64,
        run: PullRun,
    ) -> Result<Option<RemotingCommand>, FieldError> {
        if p.request.code == crate::remoting::codes::request::POP_MESSAGE {
            self.pop_message(p.conn, &p.request, now, run)
        } else {
            self.pull_message(p.conn, &p.request, now, run)
        }
    }

    /// A held pull that failed when run again is answered SYSTEM_ERROR, naming why.
    fn reply_error(&mut self, conn: ConnId, request: &RemotingCommand, e: FieldError) {
        let r = RemotingCommand::response_to(request, response::SYSTEM_ERROR, Some(e.to_string()));
        self.reply(conn, request, r);
    }

    /// Held pulls whose time is up are answered with whatever is there now.
    pub(super) fn expire_pulls(&mut self, now: u64) {
        for p in self.held.take_expired(now) {
            match self.rerun_held(&p, now, PullRun::Deadline) {
                Ok(Some(resp)) => self.reply(p.conn, &p.request, resp),
                Ok(None) => {}
                Err(e) => self.reply_error(p.conn, &p.request, e),
            }
        }
    }

    /// Pulls currently held (for tests and metrics).
    pub fn held_pulls(&self) -> usize {
        self.held.len()
    }
}

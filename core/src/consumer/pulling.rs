//! Pulling and delivering: long-polling pulls into process queues with flow control,
//! delivery to the listener, acknowledgements and offset commits.

use super::*;

impl Consumer {
    /// Issues pulls for queues that may pull now (not in flight, not paused, not over the
    /// flow-control limits, locked if orderly).
    pub(super) fn pull_due(&mut self, now: u64) {
        let mut due = Vec::new();
        let mut unasked = Vec::new();
        for (mq, pq) in self.queues.iter_mut() {
            let Some(offset) = pq.next_offset else {
                if pq.offset_unasked && pq.not_before <= now {
                    pq.offset_unasked = false;
                    unasked.push(mq.clone());
                }
                continue;
            };
            if pq.pulling || pq.not_before > now {
                continue;
            }
            if self.config.orderly
                && pq.locked_until <= now
                && !crate::buggify::bug("consumer.orderly-ignores-lock")
            {
                // Pulled again when the lock is granted (`on_command` ends in `pull_due`):
                // a back-off left in the past would have the timer fire at once, forever.
                if !crate::buggify::bug("consumer.spins-while-unlocked") {
                    pq.not_before = 0;
                }
                continue;
            }
            let over = pq.msgs.len() >= self.config.pull_threshold_for_queue
                || pq.bytes >= self.config.pull_threshold_size_for_queue
                || (!self.config.orderly && pq.span() > self.config.consume_concurrently_max_span);
            if over {
                pq.not_before = now + FLOW_CONTROL_DELAY_MS;
                continue;
            }
            pq.pulling = true;
            due.push((mq.clone(), pq.id, offset, pq.committed));
        }
        for mq in unasked {
            self.start_offset(mq, now);
        }
        for (mq, pq_id, offset, committed) in due {
            let Some(addr) = self.broker_addr(&mq.topic, &mq.broker_name) else {
                if let Some(pq) = self.queues.get_mut(&mq) {
                    pq.pulling = false;
                    pq.not_before = now + EXCEPTION_DELAY_MS;
                }
                continue;
            };
            let expr = self
                .config
                .subscriptions
                .get(&mq.topic)
                .cloned()
                .unwrap_or_else(|| "*".into());
            let commit = committed.filter(|_| self.config.model == MessageModel::Clustering);
            let sys_flag = pull_flag::SUSPEND
                | pull_flag::SUBSCRIPTION
                | if commit.is_some() {
                    pull_flag::COMMIT_OFFSET
                } else {
                    0
                };
            let opaque = self.client.opaque();
            let cmd = RemotingCommand::request(request::PULL_MESSAGE, opaque)
                .with_ext("consumerGroup", &self.config.group)
                .with_ext("topic", &mq.topic)
                .with_ext("queueId", mq.queue_id)
                .with_ext("queueOffset", offset)
                .with_ext("maxMsgNums", self.config.pull_batch_size)
                .with_ext("sysFlag", sys_flag)
                .with_ext("commitOffset", commit.unwrap_or(0))
                .with_ext("suspendTimeoutMillis", SUSPEND_MS)
                .with_ext("subscription", expr)
                .with_ext("subVersion", 0)
                .with_ext("expressionType", self.expression_type(&mq.topic));
            self.client.call(
                addr,
                cmd,
                Rpc::Pull { mq, pq: pq_id },
                now + PULL_TIMEOUT_MS,
            );
        }
    }

    pub(super) fn on_pull(&mut self, mq: MessageQueue, id: u64, cmd: RemotingCommand, now: u64) {
        let filter = self.filters.get(&mq.topic).cloned();
        // A pull made for an earlier incarnation of the queue (dropped by a rebalance, then
        // assigned again) says nothing about this one: applying its next offset would skip
        // messages nobody consumed.
        let Some(pq) = self.queues.get_mut(&mq).filter(|pq| pq.id == id) else {
            return;
        };
        pq.pulling = false;
        let next: Option<u64> = cmd
            .ext_opt::<i64>("nextBeginOffset")
            .ok()
            .flatten()
            .map(|o| o.max(0) as u64);
        match cmd.code {
            response::SUCCESS => {
                // A record that does not decode stops the queue where it lies: what decoded
                // before it is kept, the pull offset moves only past those, and the queue
                // waits before pulling (the same bytes) again. Never skipped silently.
                let (records, failure) = match decode_messages(&cmd.body) {
                    Ok(records) => (records, None),
                    Err((records, e)) => (records, Some(e)),
                };
                let decoded_to = records.last().map(|r| r.queue_offset() + 1);
                for mut rec in records {
                    rec.restore_retry_topic();
                    // Tag codes can collide: check the tag itself, as RocketMQ's client does.
                    let wanted = filter.as_ref().is_none_or(|f| {
                        f.matches_all()
                            || rec
                                .property("TAGS")
                                .and_then(|t| std::str::from_utf8(t).ok())
                                .is_some_and(|t| f.tags.contains(t))
                    });
                    if wanted && pq.next_offset.is_some_and(|n| rec.queue_offset() >= n) {
                        pq.bytes += rec.body().len();
                        pq.msgs.insert(rec.queue_offset(), rec);
                    }
                }
                match failure {
                    None => {
                        if let Some(n) = next {
                            pq.next_offset = Some(n);
                        }
                    }
                    Some(e) => {
                        tracing::error!(
                            queue = %mq, error = %e, next_offset = ?pq.next_offset.max(decoded_to),
                            "pulled a record that does not decode; the queue stops here and retries later"
                        );
                        if decoded_to > pq.next_offset {
                            pq.next_offset = decoded_to;
                        }
                        pq.not_before = now + UNDECODABLE_DELAY_MS;
                    }
                }
                self.deliver(&mq, now);
            }
            response::PULL_NOT_FOUND | response::PULL_RETRY_IMMEDIATELY => {
                if let Some(n) = next {
                    pq.next_offset = Some(n);
                    if pq.msgs.is_empty() {
                        pq.committed = Some(n);
                        pq.dirty = true;
                    }
                }
            }
            response::PULL_OFFSET_MOVED => {
                if let Some(n) = next {
                    // RocketMQ drops the queue's cache and restarts from the broker's offset.
                    pq.msgs.clear();
                    pq.delivered.clear();
                    pq.bytes = 0;
                    pq.next_offset = Some(n);
                    pq.committed = Some(n);
                    pq.dirty = true;
                }
            }
            _ => pq.not_before = now + EXCEPTION_DELAY_MS,
        }
    }

    /// Hands undelivered messages to the application: all of them in batches (concurrent), or
    /// the next batch only once the previous one is acknowledged (orderly).
    pub(super) fn deliver(&mut self, mq: &MessageQueue, now: u64) {
        let batch = self.config.consume_batch_size.max(1);
        let orderly = self.config.orderly;
        let Some(pq) = self.queues.get_mut(mq) else {
            return;
        };
        if pq.redeliver_at > now || (orderly && !pq.delivered.is_empty()) {
            return;
        }
        // A suspension that ran out is over, whatever happens next (the timer must not
        // fire again for it).
        pq.redeliver_at = 0;
        // Orderly: only while this consumer holds the queue's broker lock (delivered again
        // when the lock is granted), and not while the application still works on a batch
        // from before the queue was dropped and came back (delivered again when it answers).
        // ConsumeMessageOrderlyService checks the lock before every batch.
        let unlocked =
            pq.locked_until <= now && !crate::buggify::bug("consumer.orderly-ignores-lock");
        if orderly
            && self.config.model == MessageModel::Clustering
            && (unlocked || self.draining.contains_key(mq))
        {
            return;
        }
        pq.retry_at.retain(|_, at| *at > now);
        let pending: Vec<u64> = pq
            .msgs
            .keys()
            .filter(|o| {
                !pq.delivered.contains(o)
                    && !pq.retry_at.contains_key(o)
                    && !pq.sending_back.contains(o)
            })
            .copied()
            .collect();
        let limit = if orderly {
            batch.min(pending.len())
        } else {
            pending.len()
        };
        for chunk in pending[..limit].chunks(batch) {
            let msgs: Vec<MessageExt> = chunk.iter().map(|o| pq.msgs[o].clone()).collect();
            pq.delivered.extend(chunk.iter().copied());
            self.events.push_back(ConsumerEvent::Deliver {
                mq: mq.clone(),
                msgs,
            });
        }
    }

    /// The application finished a delivered message.
    pub fn ack(&mut self, mq: &MessageQueue, queue_offset: u64, result: ConsumeResult, now: u64) {
        let orderly = self.config.orderly;
        let Some(pq) = self
            .queues
            .get_mut(mq)
            .filter(|pq| pq.delivered.contains(&queue_offset))
        else {
            // Rebalanced away meanwhile (perhaps back since): the lock may go now.
            return self.unlock_drained(mq, queue_offset, now);
        };
        pq.delivered.remove(&queue_offset);
        // A delivered message stays in its process queue until the application is done
        // with it: the committed offset cannot pass it meanwhile.
        debug_assert!(
            pq.msgs.contains_key(&queue_offset),
            "delivered {queue_offset} of {mq} is not held"
        );
        let clustering = self.config.model == MessageModel::Clustering;
        match result {
            ConsumeResult::Success => {
                Self::consumed(pq, queue_offset);
                if let Some(o) = pq.committed {
                    self.offsets.insert(mq.clone(), o);
                }
            }
            // It stays in the process queue (the committed offset cannot pass it) until the
            // broker holds its retry, or it is consumed again here.
            ConsumeResult::ReconsumeLater if orderly => {
                // Retried locally, holding the whole queue, as order demands; past the max it
                // goes to the dead-letter queue (and stays delivered until the broker has it).
                let max = match self.config.max_reconsume_times {
                    -1 => i32::MAX,
                    m => m,
                };
                let times = pq
                    .msgs
                    .get(&queue_offset)
                    .map_or(0, |m| m.reconsume_times());
                if clustering && times >= max {
                    pq.delivered.insert(queue_offset);
                    let id = pq.id;
                    self.send_back(mq, id, queue_offset, -1, now);
                    return;
                }
                if let Some(m) = pq.msgs.get_mut(&queue_offset) {
                    m.count_reconsume();
                }
                let suspend = self.config.suspend_current_queue_ms.clamp(10, 30_000);
                pq.redeliver_at = pq.redeliver_at.max(now + suspend);
            }
            ConsumeResult::ReconsumeLater if clustering => {
                // Sent back to the broker's retry topic, behind its backoff.
                pq.sending_back.insert(queue_offset);
                let id = pq.id;
                self.send_back(mq, id, queue_offset, 0, now);
            }
            ConsumeResult::ReconsumeLater => {
                pq.retry_at.insert(queue_offset, now + RECONSUME_DELAY_MS);
            }
        }
        self.deliver(mq, now);
        self.pull_due(now);
    }

    /// Takes a finished message out of its process queue and moves the commit point.
    fn consumed(pq: &mut ProcessQueue, queue_offset: u64) {
        if let Some(rec) = pq.msgs.remove(&queue_offset) {
            debug_assert!(
                pq.bytes >= rec.body().len(),
                "process queue bytes undercounted"
            );
            pq.bytes = pq.bytes.saturating_sub(rec.body().len());
        }
        debug_assert_eq!(
            pq.bytes,
            pq.msgs.values().map(|r| r.body().len()).sum::<usize>(),
            "process queue bytes are its messages' bodies"
        );
        pq.committed = pq.consumed_to();
        pq.dirty = true;
    }

    /// CONSUMER_SEND_MSG_BACK for a held message: to the master of the broker it came from.
    fn send_back(&mut self, mq: &MessageQueue, pq_id: u64, offset: u64, level: i32, now: u64) {
        let max = match self.config.max_reconsume_times {
            -1 if self.config.orderly => i32::MAX,
            -1 => DEFAULT_MAX_RECONSUME_TIMES,
            m => m,
        };
        let Some(msg) = self.queues.get(mq).and_then(|pq| pq.msgs.get(&offset)) else {
            return;
        };
        let (physical, origin_id, origin_topic) =
            (msg.physical_offset(), msg.msg_id(), msg.topic().to_string());
        let Some(addr) = self.broker_addr(&mq.topic, &mq.broker_name) else {
            return self.send_back_failed(mq, pq_id, offset, now);
        };
        let opaque = self.client.opaque();
        let cmd = RemotingCommand::request(request::CONSUMER_SEND_MSG_BACK, opaque)
            .with_ext("offset", physical)
            .with_ext("group", &self.config.group)
            .with_ext("delayLevel", level)
            .with_ext("originMsgId", origin_id)
            .with_ext("originTopic", origin_topic)
            .with_ext("unitMode", false)
            .with_ext("maxReconsumeTimes", max)
            .with_ext("bname", &mq.broker_name);
        let rpc = Rpc::SendBack {
            mq: mq.clone(),
            pq: pq_id,
            offset,
        };
        self.client.call(addr, cmd, rpc, now + SEND_BACK_TIMEOUT_MS);
    }

    /// The broker holds the retry (or dead letter): the message is done here.
    pub(super) fn sent_back(&mut self, mq: &MessageQueue, pq_id: u64, offset: u64, now: u64) {
        let Some(pq) = self.queues.get_mut(mq).filter(|pq| pq.id == pq_id) else {
            // Dropped meanwhile: an orderly queue's lock may go now.
            return self.unlock_drained(mq, offset, now);
        };
        pq.sending_back.remove(&offset);
        pq.delivered.remove(&offset);
        Self::consumed(pq, offset);
        if let Some(o) = pq.committed {
            self.offsets.insert(mq.clone(), o);
        }
        self.deliver(mq, now);
        self.pull_due(now);
    }

    /// The broker could not be told (unreachable, refused, no answer): the message is
    /// consumed again here later, counted as a reconsumption (Java's local retry).
    pub(super) fn send_back_failed(
        &mut self,
        mq: &MessageQueue,
        pq_id: u64,
        offset: u64,
        now: u64,
    ) {
        let orderly = self.config.orderly;
        let suspend = self.config.suspend_current_queue_ms.clamp(10, 30_000);
        let Some(pq) = self.queues.get_mut(mq).filter(|pq| pq.id == pq_id) else {
            return self.unlock_drained(mq, offset, now);
        };
        if orderly {
            pq.delivered.remove(&offset);
            pq.redeliver_at = pq.redeliver_at.max(now + suspend);
        } else if pq.sending_back.remove(&offset) {
            if let Some(m) = pq.msgs.get_mut(&offset) {
                m.count_reconsume();
            }
            pq.retry_at.insert(offset, now + LOCAL_RETRY_MS);
        }
    }

    pub(super) fn commit(&mut self, mq: &MessageQueue, offset: u64) {
        if self.config.model != MessageModel::Clustering {
            return;
        }
        let Some(addr) = self.broker_addr(&mq.topic, &mq.broker_name) else {
            return;
        };
        let opaque = self.client.opaque();
        let mut cmd = RemotingCommand::request(request::UPDATE_CONSUMER_OFFSET, opaque)
            .with_ext("consumerGroup", &self.config.group)
            .with_ext("topic", &mq.topic)
            .with_ext("queueId", mq.queue_id)
            .with_ext("commitOffset", offset);
        cmd.flag |= crate::remoting::command::FLAG_ONEWAY;
        self.client.send(addr, cmd);
    }

    pub(super) fn persist_offsets(&mut self) {
        let dirty: Vec<(MessageQueue, u64)> = self
            .queues
            .iter_mut()
            .filter(|(_, pq)| pq.dirty)
            .filter_map(|(mq, pq)| {
                pq.dirty = false;
                pq.committed.map(|o| (mq.clone(), o))
            })
            .collect();
        for (mq, o) in dirty {
            self.offsets.insert(mq.clone(), o);
            self.commit(&mq, o);
        }
    }
}

//! Which queues this consumer owns: rebalance by the group's strategy, taking and dropping
//! queues (with their committed offsets), where a new queue starts, and orderly locks.

use super::*;

impl Consumer {
    pub(super) fn rebalance(&mut self, now: u64) {
        for topic in self.topics() {
            match self.config.model {
                MessageModel::Broadcasting => {
                    let all = self.all_queues(&topic);
                    self.assign(&topic, all, now);
                }
                MessageModel::Clustering => {
                    let Some(addr) = self.any_broker(&topic) else {
                        continue;
                    };
                    let opaque = self.client.opaque();
                    let cmd = RemotingCommand::request(request::GET_CONSUMER_LIST_BY_GROUP, opaque)
                        .with_ext("consumerGroup", &self.config.group);
                    self.client
                        .call(addr, cmd, Rpc::ConsumerIds { topic }, now + RPC_TIMEOUT_MS);
                }
            }
        }
    }

    /// Makes `mine` the topic's assignment: drops the rest (committing their offsets),
    /// starts the new ones.
    pub(super) fn assign(&mut self, topic: &str, mine: Vec<MessageQueue>, now: u64) {
        let mine: BTreeSet<MessageQueue> = mine.into_iter().collect();
        let current: Vec<MessageQueue> = self
            .queues
            .keys()
            .filter(|q| q.topic == topic)
            .cloned()
            .collect();
        let mut changed = false;
        for mq in current {
            if !mine.contains(&mq) {
                changed = true;
                self.drop_queue(&mq, now);
            }
        }
        for mq in mine {
            if self.queues.contains_key(&mq) {
                continue;
            }
            changed = true;
            self.next_pq_id += 1;
            let pq = ProcessQueue {
                id: self.next_pq_id,
                ..ProcessQueue::default()
            };
            self.queues.insert(mq.clone(), pq);
            self.start_offset(mq, now);
        }
        if changed {
            self.events.push_back(ConsumerEvent::Rebalanced {
                assigned: self.assigned(),
            });
            if self.config.orderly {
                self.lock_all(now);
            }
        }
    }

    /// RESET_CONSUMER_CLIENT_OFFSET (an operator's resetOffsetByTime): each queue of the
    /// table this consumer holds starts again at the given offset, as a new incarnation (what
    /// it had pulled is dropped; answers about the old one are ignored), and that offset is
    /// what it commits next. Queues it does not hold were committed by the broker already.
    pub(super) fn on_reset_offset(&mut self, cmd: &RemotingCommand, now: u64) {
        if cmd.ext("group").is_some_and(|g| g != self.config.group) {
            return;
        }
        #[derive(serde::Deserialize, Default)]
        #[serde(rename_all = "camelCase", default)]
        struct ResetOffsetBody {
            offset_table: crate::protocol::lenient::MqTable<u64>,
        }
        let body: ResetOffsetBody = match decode_body(&cmd.body) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "undecodable offset reset ignored");
                return;
            }
        };
        for (mq, offset) in body.offset_table.0 {
            if !self.queues.contains_key(&mq) {
                continue;
            }
            tracing::info!(%mq, offset, "offset reset by the broker");
            self.next_pq_id += 1;
            let mut pq = ProcessQueue {
                id: self.next_pq_id,
                ..ProcessQueue::default()
            };
            pq.next_offset = Some(offset);
            pq.committed = Some(offset);
            pq.dirty = true;
            self.queues.insert(mq.clone(), pq);
            self.offsets.insert(mq.clone(), offset);
            self.deliver(&mq, now);
        }
    }

    pub(super) fn drop_queue(&mut self, mq: &MessageQueue, now: u64) {
        let Some(pq) = self.queues.remove(mq) else {
            return;
        };
        if let Some(o) = pq.consumed_to() {
            self.offsets.insert(mq.clone(), o);
            self.commit(mq, o);
        }
        if self.config.orderly && !pq.delivered.is_empty() && !self.stopped {
            // The application is still working on a batch of this queue: the lock is given
            // up once it answers (`unlock_drained`), or the next owner could be handed the
            // queue while this one is still inside it (as Java's consume lock prevents).
            self.draining.insert(mq.clone(), pq.delivered);
            return;
        }
        self.unlock(mq, now);
    }

    /// An orderly queue dropped while its application held a batch: that batch was answered.
    /// Once nothing of it is left in the application, the broker lock goes (unless the queue
    /// came back meanwhile: then it is simply delivered again).
    pub(super) fn unlock_drained(&mut self, mq: &MessageQueue, queue_offset: u64, now: u64) {
        let Some(left) = self.draining.get_mut(mq) else {
            return;
        };
        left.remove(&queue_offset);
        if !left.is_empty() {
            return;
        }
        self.draining.remove(mq);
        if self.queues.contains_key(mq) {
            self.deliver(mq, now);
        } else {
            self.unlock(mq, now);
        }
    }

    /// UNLOCK_BATCH_MQ for one queue, orderly only.
    pub(super) fn unlock(&mut self, mq: &MessageQueue, now: u64) {
        if self.config.orderly
            && let Some(addr) = self.broker_addr(&mq.topic, &mq.broker_name)
        {
            let body = LockBatchRequestBody {
                consumer_group: self.config.group.clone(),
                client_id: self.client.client_id().to_string(),
                only_this_broker: false,
                mq_set: [mq.clone()].into(),
            };
            let opaque = self.client.opaque();
            let cmd = RemotingCommand::request(request::UNLOCK_BATCH_MQ, opaque)
                .with_body(to_body(&body));
            self.client
                .call(addr, cmd, Rpc::Other, now + RPC_TIMEOUT_MS);
        }
    }

    pub(super) fn start_offset(&mut self, mq: MessageQueue, now: u64) {
        let Some(addr) = self.broker_addr(&mq.topic, &mq.broker_name) else {
            return self.offset_unasked(&mq, now);
        };
        if self.config.model == MessageModel::Broadcasting {
            if let Some(o) = self.offsets.get(&mq).copied() {
                self.set_start(&mq, o);
                return;
            }
            return self.start_from_config(mq, addr, now);
        }
        let opaque = self.client.opaque();
        let cmd = RemotingCommand::request(request::QUERY_CONSUMER_OFFSET, opaque)
            .with_ext("consumerGroup", &self.config.group)
            .with_ext("topic", &mq.topic)
            .with_ext("queueId", mq.queue_id);
        self.client
            .call(addr, cmd, Rpc::QueryOffset { mq }, now + RPC_TIMEOUT_MS);
    }

    /// No stored offset: start where `consume_from` says (retry topics from the start).
    pub(super) fn start_from_config(&mut self, mq: MessageQueue, addr: String, now: u64) {
        let from = if topics::is_retry_topic(&mq.topic) {
            ConsumeFrom::FirstOffset
        } else {
            self.config.consume_from
        };
        // Drawn before the match, so FirstOffset spends one unused: opaques are part of every
        // simulated trace, and moving this would renumber them.
        let opaque = self.client.opaque();
        let cmd = match from {
            ConsumeFrom::FirstOffset => return self.set_start(&mq, 0),
            ConsumeFrom::LastOffset => RemotingCommand::request(request::GET_MAX_OFFSET, opaque),
            ConsumeFrom::Timestamp(ts) => {
                RemotingCommand::request(request::SEARCH_OFFSET_BY_TIMESTAMP, opaque)
                    .with_ext("timestamp", ts)
            }
        };
        let cmd = cmd
            .with_ext("topic", &mq.topic)
            .with_ext("queueId", mq.queue_id);
        self.client
            .call(addr, cmd, Rpc::StartOffset { mq }, now + RPC_TIMEOUT_MS);
    }

    /// No broker of the queue's group to ask its starting offset of (its master down, no
    /// slave listed): asked again after a while, once a route may name one. Without it the
    /// queue would stay assigned and never pulled until the assignment changed.
    pub(super) fn offset_unasked(&mut self, mq: &MessageQueue, now: u64) {
        if let Some(pq) = self.queues.get_mut(mq) {
            pq.offset_unasked = true;
            pq.not_before = now + super::EXCEPTION_DELAY_MS;
        }
    }

    pub(super) fn set_start(&mut self, mq: &MessageQueue, offset: u64) {
        if let Some(pq) = self.queues.get_mut(mq) {
            pq.offset_unasked = false;
            pq.next_offset = Some(offset);
            pq.committed = Some(offset);
        }
    }

    pub(super) fn lock_all(&mut self, now: u64) {
        let mut by_broker: BTreeMap<String, BTreeSet<MessageQueue>> = BTreeMap::new();
        for mq in self.queues.keys() {
            by_broker
                .entry(mq.broker_name.clone())
                .or_default()
                .insert(mq.clone());
        }
        for (broker, mqs) in by_broker {
            let Some(topic) = mqs.iter().next().map(|m| m.topic.clone()) else {
                continue;
            };
            let Some(addr) = self.broker_addr(&topic, &broker) else {
                continue;
            };
            let body = LockBatchRequestBody {
                consumer_group: self.config.group.clone(),
                client_id: self.client.client_id().to_string(),
                only_this_broker: true,
                mq_set: mqs,
            };
            let opaque = self.client.opaque();
            let cmd =
                RemotingCommand::request(request::LOCK_BATCH_MQ, opaque).with_body(to_body(&body));
            self.client
                .call(addr, cmd, Rpc::Lock { broker }, now + RPC_TIMEOUT_MS);
        }
    }
}

//! Reviving checkpoints that fell due (Apache's PopReviveService): each un-acked message is
//! stored again in the group's pop retry topic with reconsumeTimes + 1, or in its dead-letter
//! topic once reconsumed retryMaxTimes times; then an ack record marks it decided. A crash
//! between the two revives it again: a duplicate, never a loss.

use rockfish_store::Disk;
use rockfish_store::record::StoredRecord;

use super::table::{CkKey, Entry};
use super::{PROPERTY_FIRST_POP_TIME, PROPERTY_POP_CK, pop_retry_topic};
use crate::broker::Broker;
use crate::broker::retry::Derived;
use crate::broker::timers::Timer;
use crate::message::rewrite_properties;

/// Messages revived per wake; the rest follow a millisecond later.
const REVIVE_BATCH: usize = 1024;
/// After a failed revive (store stopped or full) the checkpoint tries again this much later.
const RETRY_AFTER_FAILURE_MS: u64 = 10_000;

impl<D: Disk> Broker<D> {
    /// The revive timer: every checkpoint due by `now` gives back what it still holds.
    pub(in crate::broker) fn revive_pops(&mut self, now: u64) {
        self.timers.clear(Timer::PopRevive);
        let mut budget = REVIVE_BATCH;
        let mut more = false;
        for key in self.pop.due_by(now) {
            if budget == 0 {
                more = true;
                break;
            }
            let Some(ck) = self.pop.get(&key) else {
                continue;
            };
            let offsets: Vec<u64> = ck.pending.iter().copied().take(budget).collect();
            budget -= offsets.len();
            let mut revived = Vec::new();
            let mut failed = None;
            for o in offsets {
                match self.revive_one(&key, o, now) {
                    Ok(()) => revived.push(o),
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            if !revived.is_empty() {
                let entry = Entry::Ack {
                    key: key.clone(),
                    offsets: revived.clone(),
                };
                if let Err(e) = self.journal_pop(&entry, now) {
                    // The copies stand; the checkpoint stays and revives them again later.
                    failed = Some(format!("journaling the revive failed: {e}"));
                } else {
                    self.pop.decide(&key, &revived);
                }
            }
            if let Some(e) = failed {
                tracing::warn!(
                    topic = %key.topic, group = %key.group, queue_id = key.queue_id,
                    error = %e, "reviving popped messages failed; trying again later"
                );
                self.pop.postpone(&key, now + RETRY_AFTER_FAILURE_MS);
            }
        }
        if budget < REVIVE_BATCH && self.offset_commit_waits() {
            // SYNC_FLUSH flushes on demand only: the revived copies (and their records)
            // become durable, and visible, with this flush, not with the next send.
            self.request_flush(now);
        }
        if more {
            self.timers.set(Timer::PopRevive, now + 1);
        } else {
            self.arm_pop_revive();
        }
    }

    /// Stores one un-acked message again: in the pop retry topic, or dead-lettered.
    fn revive_one(&mut self, key: &CkKey, offset: u64, now: u64) -> Result<(), String> {
        if crate::buggify::bug("broker.pop-revive-drops") {
            return Ok(());
        }
        let rec = match self.store.entry(&key.topic, key.queue_id, offset) {
            Ok(Some(e)) => match self.store.read(e.offset) {
                Ok(rec) => rec,
                Err(e) => {
                    if self.store.stopped().is_some() {
                        return Err(format!("store stopped: {e}"));
                    }
                    // Unreadable (corrupt): nothing to give back, and waiting will not mend it.
                    tracing::warn!(topic = %key.topic, offset, error = %e, "a popped message is unreadable; not revived");
                    return Ok(());
                }
            },
            Ok(None) => {
                // Deleted by retention since it was popped.
                tracing::warn!(topic = %key.topic, offset, "a popped message is no longer stored; not revived");
                return Ok(());
            }
            Err(e) => return Err(format!("store error: {e}")),
        };
        let max = self.group_retry_max(&key.group);
        if rec.reconsume_times() >= max {
            return self.dead_letter(&rec, &key.group, now);
        }
        let retry = if key.topic.starts_with("%RETRY%") {
            key.topic.clone()
        } else {
            pop_retry_topic(&key.group, &key.topic)
        };
        self.retry_topic(&retry, 1, now)?;
        if retry != key.topic {
            self.pop.learn_retry_topic(retry.clone(), &key.topic);
        }
        let first_pop = key.pop_time.to_string();
        let add: Vec<(&str, &str)> = if rec.property(PROPERTY_FIRST_POP_TIME).is_none() {
            vec![(PROPERTY_FIRST_POP_TIME, first_pop.as_str())]
        } else {
            vec![]
        };
        let body = rec.body();
        let d = Derived {
            topic: &retry,
            queue_id: 0,
            delay: None,
            flag: rec.flag(),
            sys_flag: rec.sys_flag(),
            born_timestamp: rec.born_timestamp(),
            born_host: rec.born_host(),
            reconsume_times: rec.reconsume_times() + 1,
            prepared_transaction_offset: rec.prepared_transaction_offset(),
            body: &body,
            properties: rewrite_properties(rec.properties(), &[PROPERTY_POP_CK], &add),
        };
        self.put_derived(d, now)
            .map(|_| ())
            .map_err(|e| format!("storing the retry failed: {e}"))
    }

    /// Stores `rec` in the group's dead-letter topic.
    pub(in crate::broker) fn dead_letter(
        &mut self,
        rec: &StoredRecord,
        group: &str,
        now: u64,
    ) -> Result<(), String> {
        let dlq = self.dlq_topic(group, now)?;
        let body = rec.body();
        let d = Derived {
            topic: &dlq,
            queue_id: 0,
            delay: None,
            flag: rec.flag(),
            sys_flag: rec.sys_flag(),
            born_timestamp: rec.born_timestamp(),
            born_host: rec.born_host(),
            reconsume_times: rec.reconsume_times(),
            prepared_transaction_offset: rec.prepared_transaction_offset(),
            body: &body,
            properties: rewrite_properties(rec.properties(), &[PROPERTY_POP_CK], &[]),
        };
        tracing::info!(group, dlq = %dlq, "a popped message reached its max reconsume times: dead-lettered");
        self.put_derived(d, now)
            .map(|_| ())
            .map_err(|e| format!("storing the dead letter failed: {e}"))
    }
}

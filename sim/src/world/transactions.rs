//! The applications' transactions: a half's SEND_OK runs the local transaction, its end
//! follows (maybe late, maybe UNKNOW, never if the producer dies first), and any producer of
//! the group answers the brokers' check-backs from the shared "database" (`History::tx_ran`).
//! At the end, what the brokers store of each transaction is recorded for the checker.

use super::record::{body_name, each_record};
use super::*;
use rockfish_core::broker::TRANS_HALF_TOPIC;
use rockfish_core::broker::transaction::{PROPERTY_PREPARED_QUEUE_OFFSET, tx_flag};
use rockfish_core::producer::{SendResult, TransactionCheck, TransactionState};

/// A check-back this soon after the send may come before the send finished (the producer's
/// send timeout is 3 s): not knowing yet, the application says UNKNOW.
const TX_UNSURE_MS: u64 = 5_000;

impl Sim {
    /// A transactional send finished: on SEND_OK the local transaction runs and its end is
    /// planned; a half stored with another status is rolled back at once (as Java does).
    pub(super) fn transaction_sent(&mut self, producer: usize, half: SendResult, body: String) {
        let Some(plan) = self.history.transactions.get(&body).copied() else {
            return;
        };
        let after = if half.status == SendStatus::SendOk {
            self.history.tx_ran.insert(body.clone());
            plan.end_after_ms
        } else {
            0
        };
        self.next_tx_end += 1;
        let ticket = self.next_tx_end;
        self.tx_ends
            .insert(ticket, (producer, self.epochs[producer], half, body));
        self.push(self.now + after, Ev::EndTransaction { ticket });
    }

    /// The application ends its transaction, if its process still lives.
    pub(super) fn end_transaction(&mut self, ticket: u64) {
        let Some((producer, epoch, half, body)) = self.tx_ends.remove(&ticket) else {
            return;
        };
        if self.epochs[producer] != epoch || self.left.contains(&producer) {
            let line = format!(
                "t={} tx {body}: producer {producer} died before its end",
                self.now
            );
            self.log(line);
            return;
        }
        let plan = self.history.transactions[&body];
        let state = if half.status != SendStatus::SendOk {
            TransactionState::Rollback
        } else if !plan.ends {
            TransactionState::Unknown
        } else if plan.commit {
            TransactionState::Commit
        } else {
            TransactionState::Rollback
        };
        let line = format!("t={} tx {body}: end {state:?} by {producer}", self.now);
        self.log(line);
        if let Node::Producer(p) = &mut self.fabric.nodes[producer] {
            p.end_transaction(&half, state);
        }
        self.after(producer);
    }

    /// A broker asks `producer` about a transaction: answered from the application's
    /// database, as any producer of the group would.
    pub(super) fn on_transaction_check(&mut self, producer: usize, check: TransactionCheck) {
        let body = body_name(&check.msg.body());
        let ran = self.history.tx_ran.contains(&body);
        let sent = self.tx_sent_at.get(&body).copied().unwrap_or(0);
        // Some answers are "not sure yet": the broker asks again.
        let unsure = self.chance(Stream::Transaction, 0.2);
        let state = match self.history.transactions.get(&body) {
            _ if unsure => TransactionState::Unknown,
            Some(plan) if ran && plan.commit => TransactionState::Commit,
            Some(_) if ran => TransactionState::Rollback,
            // No local transaction: the send may still be under way, or never finished.
            Some(_) if self.now < sent + TX_UNSURE_MS => TransactionState::Unknown,
            _ => TransactionState::Rollback,
        };
        let line = format!(
            "t={} tx {body}: check from {} answered {state:?} by {producer}",
            self.now, check.broker_addr
        );
        self.log(line);
        if let Node::Producer(p) = &mut self.fabric.nodes[producer] {
            p.answer_check(&check, state);
        }
    }

    /// What each running broker holds of the transactions at the end: first halves, and
    /// committed copies with the first half they came from.
    pub(super) fn record_transactions(&mut self) {
        if self.history.transactions.is_empty() {
            return;
        }
        for node in self.master_nodes() {
            let broker_now = self.local(node);
            let Node::Broker {
                machine: Some(b), ..
            } = &self.fabric.nodes[node]
            else {
                continue;
            };
            let name = b.config().broker_name.clone();
            let store = b.store();
            let origin = |rec: &rockfish_store::StoredRecord| {
                rec.property(PROPERTY_PREPARED_QUEUE_OFFSET)
                    .and_then(|v| std::str::from_utf8(v).ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(rec.queue_offset())
            };
            let queues: Vec<(String, u32)> = store
                .queue_ids()
                .filter(|(t, _)| TOPICS.contains(t) || *t == TRANS_HALF_TOPIC)
                .map(|(t, q)| (t.to_string(), q))
                .collect();
            for (topic, q) in queues {
                each_record(store, &topic, q, |m| {
                    let body = body_name(&m.body());
                    if topic == TRANS_HALF_TOPIC {
                        if m.property(PROPERTY_PREPARED_QUEUE_OFFSET).is_none() {
                            self.history.tx_halves.push(TxHalf {
                                broker: name.clone(),
                                body,
                                queue_offset: m.queue_offset(),
                                stored_ts: m.store_timestamp(),
                                broker_now,
                            });
                        }
                    } else if m.sys_flag() & tx_flag::MASK == tx_flag::COMMIT {
                        let half = u64::try_from(m.prepared_transaction_offset())
                            .ok()
                            .and_then(|o| store.read(o).ok())
                            .filter(|h| h.topic() == TRANS_HALF_TOPIC)
                            .map(|h| origin(&h));
                        self.history.tx_commits.push((name.clone(), body, half));
                    }
                });
            }
        }
    }
}

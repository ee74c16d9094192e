//! Transaction messages, the broker's half (RocketMQ's TransactionalMessageBridge and
//! EndTransactionProcessor).
//!
//! A prepared message (property TRAN_MSG=true) is stored as a half message in
//! [`TRANS_HALF_TOPIC`] queue 0, its real topic and queue in REAL_TOPIC / REAL_QID and its
//! transaction bits cleared, so no consumer of its topic sees it. END_TRANSACTION (37, sent
//! oneway) commits it — the message is stored in its real topic with the COMMIT type and its
//! half's offset as preparedTransactionOffset — or rolls it back; either way an op record
//! (tag "d", body = the half's queue offset) in [`TRANS_OP_HALF_TOPIC`] says it is decided.
//!
//! Check-back (TransactionalMessageCheckService): every `transactionCheckInterval` the half
//! queue is walked from its progress. A decided half is passed over; an undecided one stored
//! at least `transactionTimeOut` ago is put back at the queue's end with
//! TRANSACTION_CHECK_TIMES + 1 and CHECK_TRANSACTION_STATE (39, oneway) goes to a live
//! producer of its group, naming the new copy; its answer comes back as END_TRANSACTION with
//! fromTransactionCheck. After `transactionCheckMax` checks the half is given up into
//! [`TRANS_CHECK_MAX_TIME_TOPIC`]. The walk stops at the first half too young to check.
//!
//! Exactly once, which Apache does not promise (a late END_TRANSACTION racing its check's
//! answer stores the message twice there): every undecided transaction has exactly one copy
//! at or past the walk's progress, so
//! - an END_TRANSACTION naming a half below the progress is refused (it was decided, given up
//!   or handed on to a newer copy, whose check asks the producer again);
//! - one naming a half already decided is refused (the `decided` set: halves past the
//!   progress decided out of order, rebuilt at start from the op records);
//! - a copy (TRAN_PREPARED_QUEUE_OFFSET names its first half) whose commit is already stored
//!   — an op record lost in a power loss, a walk repeated after a crash — is found through the
//!   index by its UNIQ_KEY and taken as decided, before it is checked or committed again.
//!
//! The walk's progress (the half queue's, and the op queue's from which the decided set is
//! rebuilt) is journaled like the delay levels' (pseudo-group [`TRANSACTION_PROGRESS_GROUP`]),
//! after the copies it covers: whatever of it survives a crash, they survived too.

use std::collections::{BTreeSet, VecDeque};

use rand::Rng;
use rockfish_store::config::{ConsumerOffsetTable, TopicConfig};
use rockfish_store::record::StoreMessage;
use rockfish_store::{Disk, MessageStore, StoreResult, StoredRecord};

use super::Broker;
use super::retry::Derived;
use super::schedule::READ_ATTEMPTS;
use super::timers::Timer;
use crate::machine::Output;
use crate::message::{properties_string, property, rewrite_properties};
use crate::remoting::codes::{request, response};
use crate::remoting::{FieldError, RemotingCommand};

/// Where half messages wait for their transaction's end.
pub const TRANS_HALF_TOPIC: &str = "RMQ_SYS_TRANS_HALF_TOPIC";
/// Where every decision is recorded.
pub const TRANS_OP_HALF_TOPIC: &str = "RMQ_SYS_TRANS_OP_HALF_TOPIC";
/// A prepared message's property.
pub const PROPERTY_TRAN_MSG: &str = "TRAN_MSG";
/// The producer group a half message belongs to.
pub const PROPERTY_PGROUP: &str = "PGROUP";
/// The op record's tag: the half was deleted (decided).
pub const REMOVE_TAG: &str = "d";
/// Where halves checked `transactionCheckMax` times are given up, for inspection.
pub const TRANS_CHECK_MAX_TIME_TOPIC: &str = "TRANS_CHECK_MAX_TIME_TOPIC";
/// How many times a half was checked back.
pub const PROPERTY_CHECK_TIMES: &str = "TRANSACTION_CHECK_TIMES";
/// A producer's first-check delay for its half, in seconds (checkImmunityTimeInSeconds).
pub const PROPERTY_CHECK_IMMUNITY: &str = "CHECK_IMMUNITY_TIME_IN_SECONDS";
/// On a half put back by a check: the half queue offset of the transaction's first half.
pub const PROPERTY_PREPARED_QUEUE_OFFSET: &str = "TRAN_PREPARED_QUEUE_OFFSET";
/// The consumer offset journal's pseudo-group recording the check's progress: queue 0 the
/// half queue's, queue 1 the op queue's.
pub const TRANSACTION_PROGRESS_GROUP: &str = "rmq_sys_ROCKFISH_TRANSACTION_PROGRESS";
/// Halves looked at per wake; the rest follow a millisecond later.
const CHECK_BATCH: usize = 1024;
/// After a failure (store stopped, unreadable queue) the walk tries again this much later.
const RETRY_AFTER_FAILURE_MS: u64 = 10_000;
/// Past this many decided-out-of-order halves the walk runs early to move past them.
const DECIDED_SOFT_CAP: usize = 1 << 20;

/// The transaction type bits of sysFlag (MessageSysFlag).
pub mod tx_flag {
    pub const MASK: i32 = 0b11 << 2;
    pub const NOT: i32 = 0;
    pub const PREPARED: i32 = 1 << 2;
    pub const COMMIT: i32 = 2 << 2;
    pub const ROLLBACK: i32 = 3 << 2;
}

/// Whether a send is a prepared transaction message (TRAN_MSG=true, as Apache reads it).
pub fn is_prepared(properties: &str) -> bool {
    properties.contains(PROPERTY_TRAN_MSG)
        && rockfish_store::record::property(properties.as_bytes(), PROPERTY_TRAN_MSG)
            .is_some_and(|v| v.eq_ignore_ascii_case(b"true"))
}

/// The check-back's state.
#[derive(Debug, Default)]
pub(super) struct Transactions {
    /// Every half below it is decided, put back as a newer copy, or given up.
    half_next: u64,
    /// The op queue offset from which `ops` holds the op records.
    op_next: u64,
    /// The half offset each op record from `op_next` on names, in op order.
    ops: VecDeque<u64>,
    /// Halves at or past `half_next` already decided.
    decided: BTreeSet<u64>,
    /// A half that would not read: (half offset, failed reads).
    read_failure: Option<(u64, u32)>,
}

impl Transactions {
    /// The progress journaled (taken out of `journaled`, the replayed consumer offset table,
    /// as the snapshot never holds it), and the decided set from the op records since.
    pub(super) fn load<D: Disk>(
        store: &MessageStore<D>,
        journaled: &mut ConsumerOffsetTable,
    ) -> StoreResult<Transactions> {
        let key = ConsumerOffsetTable::key(TRANS_HALF_TOPIC, TRANSACTION_PROGRESS_GROUP);
        let progress = journaled.offset_table.remove(&key).unwrap_or_default();
        let clamp = |topic: &str, o: u64| {
            o.max(store.min_offset(topic, 0))
                .min(store.max_offset(topic, 0))
        };
        let mut t = Transactions {
            half_next: clamp(TRANS_HALF_TOPIC, progress.get(&0).copied().unwrap_or(0)),
            op_next: clamp(TRANS_OP_HALF_TOPIC, progress.get(&1).copied().unwrap_or(0)),
            ..Transactions::default()
        };
        let end = store.max_offset(TRANS_OP_HALF_TOPIC, 0);
        for at in t.op_next..end {
            let half = match store.entry(TRANS_OP_HALF_TOPIC, 0, at) {
                Ok(Some(e)) => match store.read(e.offset) {
                    Ok(rec) => op_half_offset(&rec),
                    Err(e) => {
                        tracing::warn!(offset = at, error = %e, "transaction op record unreadable");
                        None
                    }
                },
                Ok(None) => None,
                Err(e) => return Err(e),
            };
            // An unreadable record still holds its place in the op queue.
            let half = half.unwrap_or(0);
            t.ops.push_back(half);
            if half >= t.half_next {
                t.decided.insert(half);
            }
        }
        t.advance_past_decided();
        Ok(t)
    }

    /// Moves the progress over halves decided in order, and the op queue's with it.
    fn advance_past_decided(&mut self) {
        while self.decided.first() == Some(&self.half_next) {
            self.decided.pop_first();
            self.half_next += 1;
        }
        self.decided = self.decided.split_off(&self.half_next);
        while self.ops.front().is_some_and(|&h| h < self.half_next) {
            self.ops.pop_front();
            self.op_next += 1;
        }
    }

    /// The half queue offset below which every half is handled (tests, tools).
    pub fn progress(&self) -> u64 {
        self.half_next
    }
}

/// The half offset an op record names (its body, a decimal number).
fn op_half_offset(rec: &StoredRecord) -> Option<u64> {
    std::str::from_utf8(&rec.body()).ok()?.trim().parse().ok()
}

/// The half queue offset of a half's transaction's first half.
fn origin_of(rec: &StoredRecord) -> u64 {
    rec.property(PROPERTY_PREPARED_QUEUE_OFFSET)
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(rec.queue_offset())
}

fn property_num<T: std::str::FromStr>(rec: &StoredRecord, name: &str) -> Option<T> {
    rec.property(name)
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.trim().parse().ok())
}

/// What the walk did with one half.
enum Step {
    /// Handled: move on.
    Next,
    /// Too young to check: the walk stops here until its next round.
    Young,
    /// A failure: stop and try again then.
    Again(u64),
}

impl<D: Disk> Broker<D> {
    /// The check-back's state (tests, tools).
    pub fn transactions_progress(&self) -> u64 {
        self.transactions.progress()
    }

    /// END_TRANSACTION: commit or roll back a half message.
    pub(super) fn end_transaction(
        &mut self,
        cmd: &RemotingCommand,
        now: u64,
    ) -> Result<Option<RemotingCommand>, FieldError> {
        let group: String = cmd.ext_req("producerGroup")?;
        let queue_offset: i64 = cmd.ext_req("tranStateTableOffset")?;
        let phys: i64 = cmd.ext_req("commitLogOffset")?;
        let decision: i32 = cmd.ext_req("commitOrRollback")?;
        // Read as Java's Boolean.parseBoolean: the C++ SDK sends "1"/"0".
        let from_check = cmd.ext_bool("fromTransactionCheck")?.unwrap_or(false);
        // Deliberately broken brokers, for the simulator's checkers.
        let decision =
            if decision == tx_flag::ROLLBACK && crate::buggify::bug("broker.tx-rollback-commits") {
                tx_flag::COMMIT
            } else {
                decision
            };
        let ends_twice = crate::buggify::bug("broker.tx-ends-twice");
        let refuse = |code: i32, remark: String| {
            Ok(Some(RemotingCommand::response_to(cmd, code, Some(remark))))
        };
        if !self.repl.role.is_master() {
            return refuse(
                response::SLAVE_NOT_AVAILABLE,
                "the broker is a slave: transactions end on the master".into(),
            );
        }
        if decision != tx_flag::COMMIT && decision != tx_flag::ROLLBACK {
            // UNKNOW (0): the producer does not know yet; the check-back will ask again.
            tracing::debug!(
                group,
                phys,
                decision,
                from_check,
                "transaction left undecided"
            );
            return Ok(None);
        }
        let rec = match u64::try_from(phys)
            .map_err(|_| "negative offset".to_string())
            .and_then(|o| self.store.read(o).map_err(|e| e.to_string()))
        {
            Ok(rec) if rec.topic() == TRANS_HALF_TOPIC => rec,
            Ok(_) => {
                return refuse(
                    response::SYSTEM_ERROR,
                    format!("Find prepared transaction message failed: {phys} is no half message"),
                );
            }
            Err(e) => {
                return refuse(
                    response::SYSTEM_ERROR,
                    format!("Find prepared transaction message failed: {e}"),
                );
            }
        };
        let pgroup = rec
            .property(PROPERTY_PGROUP)
            .map(|g| String::from_utf8_lossy(g).into_owned());
        if pgroup.as_deref() != Some(group.as_str()) {
            return refuse(
                response::SYSTEM_ERROR,
                format!("The producer group wrong: {pgroup:?}, asked by {group}"),
            );
        }
        if rec.queue_offset() as i64 != queue_offset {
            return refuse(
                response::SYSTEM_ERROR,
                format!(
                    "The transaction state table offset wrong: {queue_offset}, the half is at {}",
                    rec.queue_offset()
                ),
            );
        }
        let half = rec.queue_offset();
        if (half < self.transactions.half_next || self.transactions.decided.contains(&half))
            && !ends_twice
        {
            return refuse(
                response::SYSTEM_ERROR,
                format!(
                    "The transaction of half {half} is already decided, given up, or handed to \
                     a newer check (from check: {from_check})"
                ),
            );
        }
        if !ends_twice
            && rec.property(PROPERTY_PREPARED_QUEUE_OFFSET).is_some()
            && self.commit_stored(&rec)
        {
            // A copy of a transaction whose commit is stored (its op record lost).
            self.record_decision(half, now);
            return refuse(
                response::SYSTEM_ERROR,
                format!("The transaction of half {half} is already committed"),
            );
        }
        if decision == tx_flag::COMMIT {
            match self.store_at_real_topic(&rec, &[], Some(phys as u64), now) {
                Ok(Some(_)) => {}
                Ok(None) => {
                    return refuse(
                        response::SYSTEM_ERROR,
                        "the half message names no real topic".into(),
                    );
                }
                Err(e) => {
                    return refuse(
                        response::SERVICE_NOT_AVAILABLE,
                        format!("committing the transaction failed: {e}"),
                    );
                }
            }
        }
        self.record_decision(half, now);
        if self.config.flush_disk_type == super::FlushDiskType::Sync {
            self.request_flush(now);
        }
        Ok(Some(RemotingCommand::response_to(
            cmd,
            response::SUCCESS,
            None,
        )))
    }

    /// Records that the half at queue offset `half` is decided: an op record, and the
    /// decided set.
    fn record_decision(&mut self, half: u64, now: u64) {
        let half_offset = half.to_string();
        let op = Derived {
            topic: TRANS_OP_HALF_TOPIC,
            queue_id: 0,
            delay: None,
            flag: 0,
            sys_flag: 0,
            born_timestamp: rockfish_store::java_millis(now),
            born_host: self.store_host,
            reconsume_times: 0,
            prepared_transaction_offset: 0,
            body: half_offset.as_bytes(),
            properties: properties_string([("TAGS", REMOVE_TAG)]),
        };
        match self.put_derived(op, now) {
            // In op order: the restart's rebuild reads them the same way.
            Ok(_) => self.transactions.ops.push_back(half),
            // The decided set still holds it; a restart finds a commit by its index entry.
            Err(e) => tracing::warn!(error = %e, half, "recording a transaction's end failed"),
        }
        let t = &mut self.transactions;
        t.decided.insert(half);
        t.advance_past_decided();
        if t.decided.len() > DECIDED_SOFT_CAP {
            self.timers.set(Timer::TransactionCheck, now);
        }
    }

    /// Whether the commit of `half`'s transaction is already stored in its real topic: a
    /// COMMIT record with its UNIQ_KEY whose prepared half is of the same transaction.
    fn commit_stored(&self, half: &StoredRecord) -> bool {
        let (Some(key), Some(topic)) = (
            half.property(property::UNIQ_KEY)
                .and_then(|k| std::str::from_utf8(k).ok()),
            half.property(property::REAL_TOPIC)
                .and_then(|t| std::str::from_utf8(t).ok()),
        ) else {
            return false;
        };
        let origin = origin_of(half);
        let found = match self.store.query_by_key(topic, key, 0, i64::MAX, 64) {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(error = %e, key, "looking for a stored commit failed");
                return false;
            }
        };
        found.iter().any(|r| {
            r.sys_flag() & tx_flag::MASK == tx_flag::COMMIT
                && u64::try_from(r.prepared_transaction_offset())
                    .ok()
                    .and_then(|o| self.store.read(o).ok())
                    .is_some_and(|h| h.topic() == TRANS_HALF_TOPIC && origin_of(&h) == origin)
        })
    }

    /// Journals the check's progress (at start, after the journal was compacted; after each
    /// walk). The half queue's first: a crash between the two leaves the op queue's behind,
    /// which only rereads more op records.
    pub(super) fn journal_transaction_progress(&mut self, now: u64) {
        let (half, op) = (self.transactions.half_next, self.transactions.op_next);
        if half > 0 || op > 0 {
            self.journal_offset(TRANS_HALF_TOPIC, TRANSACTION_PROGRESS_GROUP, 0, half, now);
            self.journal_offset(TRANS_HALF_TOPIC, TRANSACTION_PROGRESS_GROUP, 1, op, now);
        }
    }

    /// The check-back's round: walks the half queue from its progress (see the module doc).
    pub(super) fn check_transactions(&mut self, now: u64) {
        let max = self.store.max_offset(TRANS_HALF_TOPIC, 0);
        let start = self
            .transactions
            .half_next
            .max(self.store.min_offset(TRANS_HALF_TOPIC, 0));
        let mut at = start;
        let mut wake = now + self.config.transaction_check_interval_ms;
        let mut looked = 0;
        while at < max {
            if self.transactions.decided.remove(&at) {
                at += 1;
                continue;
            }
            if looked == CHECK_BATCH {
                wake = now + 1;
                break;
            }
            looked += 1;
            let rec = match self.store.entry(TRANS_HALF_TOPIC, 0, at) {
                Ok(Some(e)) => self.store.read(e.offset),
                Ok(None) => break,
                Err(e) => Err(e),
            };
            let rec = match rec {
                Ok(rec) => {
                    self.transactions.read_failure = None;
                    rec
                }
                Err(e) => {
                    let tries = match self.transactions.read_failure {
                        Some((o, n)) if o == at => n + 1,
                        _ => 1,
                    };
                    if tries < READ_ATTEMPTS {
                        tracing::warn!(offset = at, error = %e, tries, "transaction half unreadable; trying again");
                        self.transactions.read_failure = Some((at, tries));
                        wake = now + RETRY_AFTER_FAILURE_MS;
                        break;
                    }
                    tracing::error!(offset = at, error = %e, "transaction half unreadable; skipped");
                    self.transactions.read_failure = None;
                    at += 1;
                    continue;
                }
            };
            match self.check_half(&rec, now) {
                Step::Next => at += 1,
                Step::Young => break,
                Step::Again(then) => {
                    wake = then;
                    break;
                }
            }
        }
        self.timers.set(Timer::TransactionCheck, wake);
        if at != start {
            let t = &mut self.transactions;
            t.half_next = t.half_next.max(at);
            t.advance_past_decided();
            // After the copies it covers.
            self.journal_transaction_progress(now);
        }
        if self.config.flush_disk_type == super::FlushDiskType::Sync {
            self.request_flush(now);
        }
    }

    /// One undecided half met by the walk.
    fn check_half(&mut self, rec: &StoredRecord, now: u64) -> Step {
        let age = rockfish_store::java_millis(now).saturating_sub(rec.store_timestamp());
        if age < self.config.transaction_timeout_ms as i64 {
            return Step::Young;
        }
        let checks: u32 = property_num(rec, PROPERTY_CHECK_TIMES).unwrap_or(0);
        if checks >= self.config.transaction_check_max {
            return self.give_up(rec, checks, now);
        }
        if self.commit_stored(rec) {
            self.record_decision(rec.queue_offset(), now);
            return Step::Next;
        }
        // A producer asked for a later first check: put back unchecked until then.
        let immune = checks == 0
            && property_num::<u64>(rec, PROPERTY_CHECK_IMMUNITY)
                .is_some_and(|s| (age as u64) < s.saturating_mul(1000));
        let next_checks = if immune { checks } else { checks + 1 };
        let (origin, times) = (origin_of(rec).to_string(), next_checks.to_string());
        let props = rewrite_properties(
            rec.properties(),
            &[],
            &[
                (PROPERTY_CHECK_TIMES, times.as_str()),
                (PROPERTY_PREPARED_QUEUE_OFFSET, origin.as_str()),
            ],
        );
        let body = rec.body();
        let copy = StoreMessage {
            topic: TRANS_HALF_TOPIC,
            queue_id: 0,
            flag: rec.flag(),
            sys_flag: rec.sys_flag(),
            born_timestamp: rec.born_timestamp(),
            born_host: rec.born_host(),
            store_host: self.store_host,
            reconsume_times: rec.reconsume_times(),
            prepared_transaction_offset: 0,
            body: &body,
            properties: &props,
        };
        let put = match self.store.put(&copy, now) {
            Ok(put) => put,
            Err(e) => {
                tracing::warn!(half = rec.queue_offset(), error = %e, "putting a half back for its check failed");
                return Step::Again(now + RETRY_AFTER_FAILURE_MS);
            }
        };
        if !immune {
            self.send_check(&copy, &put.first, now);
        }
        Step::Next
    }

    /// A half checked `transactionCheckMax` times: stored in TRANS_CHECK_MAX_TIME_TOPIC for
    /// an operator, no longer checked.
    fn give_up(&mut self, rec: &StoredRecord, checks: u32, now: u64) -> Step {
        if self.topics.get(TRANS_CHECK_MAX_TIME_TOPIC).is_none() {
            self.topics.insert(
                TRANS_CHECK_MAX_TIME_TOPIC.to_string(),
                TopicConfig::new(TRANS_CHECK_MAX_TIME_TOPIC, 1),
            );
            self.topics_created(now);
        }
        let body = rec.body();
        let copy = Derived {
            topic: TRANS_CHECK_MAX_TIME_TOPIC,
            queue_id: 0,
            delay: None,
            flag: rec.flag(),
            sys_flag: rec.sys_flag(),
            born_timestamp: rec.born_timestamp(),
            born_host: rec.born_host(),
            reconsume_times: rec.reconsume_times(),
            prepared_transaction_offset: 0,
            body: &body,
            properties: rewrite_properties(rec.properties(), &[], &[]),
        };
        match self.put_derived(copy, now) {
            Ok(_) => {
                tracing::warn!(
                    half = rec.queue_offset(),
                    checks,
                    "a transaction stayed undecided through its checks: given up into {TRANS_CHECK_MAX_TIME_TOPIC}"
                );
                Step::Next
            }
            Err(e) => {
                tracing::warn!(error = %e, "giving up a half failed");
                Step::Again(now + RETRY_AFTER_FAILURE_MS)
            }
        }
    }

    /// CHECK_TRANSACTION_STATE (oneway) about the half `copy` stored at `at`, to one live
    /// producer of its group: the body is the message as its topic would store it.
    fn send_check(
        &mut self,
        copy: &StoreMessage<'_>,
        at: &rockfish_store::commitlog::Appended,
        now: u64,
    ) {
        let props = copy.properties;
        let text = |name: &str| {
            rockfish_store::record::property(props, name)
                .and_then(|v| std::str::from_utf8(v).ok())
                .map(str::to_string)
        };
        let Some(group) = text(PROPERTY_PGROUP) else {
            return;
        };
        if crate::buggify::bug("broker.tx-never-checks") {
            return;
        }
        let conns = self.clients.producer_conns(&group);
        if conns.is_empty() {
            tracing::debug!(%group, half = at.queue_offset, "no live producer of the group to check a transaction with");
            return;
        }
        let conn = conns[self.rng.random_range(0..conns.len())];
        let topic = text(property::REAL_TOPIC).unwrap_or_default();
        let queue_id = text(property::REAL_QID)
            .and_then(|q| q.parse().ok())
            .unwrap_or(0);
        let real = StoreMessage {
            topic: &topic,
            queue_id,
            ..*copy
        };
        let body = match rockfish_store::record::encode_to_vec(
            &real,
            usize::MAX,
            at.queue_offset,
            at.offset,
            rockfish_store::java_millis(now),
        ) {
            Ok(body) => body,
            Err(e) => {
                tracing::error!(error = %e, "encoding a check-back failed");
                return;
            }
        };
        let uniq = text(property::UNIQ_KEY).unwrap_or_default();
        let opaque = self.next_opaque();
        let mut cmd = RemotingCommand::request(request::CHECK_TRANSACTION_STATE, opaque)
            .with_ext("tranStateTableOffset", at.queue_offset)
            .with_ext("commitLogOffset", at.offset)
            .with_ext(
                "offsetMsgId",
                crate::message::offset_msg_id(self.store_host, at.offset),
            )
            .with_ext("msgId", &uniq)
            .with_ext("transactionId", &uniq)
            .with_body(body);
        cmd.flag |= crate::remoting::command::FLAG_ONEWAY;
        self.outputs.push_back(Output::Send { conn, cmd });
    }
}

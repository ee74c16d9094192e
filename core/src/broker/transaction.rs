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
//! Not yet (issue 13 continues): the check-back of undecided halves, and exactly-once commits
//! when a producer ends one transaction twice (Apache stores it twice too).

use rockfish_store::Disk;

use super::Broker;
use super::retry::Derived;
use crate::message::properties_string;
use crate::remoting::codes::response;
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

impl<D: Disk> Broker<D> {
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
        let from_check: bool = cmd.ext_opt("fromTransactionCheck")?.unwrap_or(false);
        let refuse = |code: i32, remark: String| {
            Ok(Some(RemotingCommand::response_to(cmd, code, Some(remark))))
        };
        if self.config.broker_id != crate::protocol::MASTER_ID {
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
        // The decision, recorded: the half is done.
        let half_offset = rec.queue_offset().to_string();
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
        if let Err(e) = self.put_derived(op, now) {
            tracing::warn!(error = %e, "recording a transaction's end failed");
        }
        if self.config.flush_disk_type == super::FlushDiskType::Sync {
            self.request_flush();
        }
        Ok(Some(RemotingCommand::response_to(
            cmd,
            response::SUCCESS,
            None,
        )))
    }
}

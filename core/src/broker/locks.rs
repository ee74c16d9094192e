//! LOCK_BATCH_MQ / UNLOCK_BATCH_MQ: RocketMQ's RebalanceLockManager. Orderly consumers lock
//! each queue they are assigned so that only one consumer of a group consumes it at a time.
//! A lock is held by one client id; the holder refreshes it by locking again; another client
//! may take it once it has gone unrefreshed for `LOCK_LEASE_MS`.

use std::collections::BTreeMap;

use rockfish_store::Disk;

use super::Broker;
use crate::protocol::{LockBatchRequestBody, LockBatchResponseBody, MessageQueue, to_body};
use crate::remoting::codes::response;
use crate::remoting::{FieldError, RemotingCommand};

/// How long a lock outlives its last refresh (RocketMQ: 60 s; clients refresh every 20 s).
pub const LOCK_LEASE_MS: u64 = 60_000;

#[derive(Debug, Clone)]
struct LockEntry {
    client_id: String,
    last_update: u64,
}

/// A broker that restarts grants no lock for this long. Its lock table died with the last
/// process, and a consumer that was granted a lock just before the crash still trusts it for
/// up to its trust time (the Java client's lockMaxLiveTime, 30 s) after the answer, which
/// itself may arrive up to an RPC timeout late: a lock granted sooner would let two consumers
/// inside one orderly queue. (Apache RocketMQ has no such grace and that window.)
pub const LOCK_RESTART_GRACE_MS: u64 = 35_000;

#[derive(Debug, Default)]
pub(super) struct LockTable {
    groups: BTreeMap<String, BTreeMap<MessageQueue, LockEntry>>,
    /// No lock is granted before then (`LOCK_RESTART_GRACE_MS` after the start).
    grants_from: u64,
}

impl LockTable {
    /// The table of a broker that started at `now`; `first` when its store shows no earlier
    /// process (which then granted nothing anyone could still trust). An earlier process
    /// that granted locks but left not even a checkpoint behind escapes this: it lived
    /// less than one checkpoint interval and stored nothing, so its locks guard nothing.
    pub(super) fn started(now: u64, first: bool) -> LockTable {
        LockTable {
            groups: BTreeMap::new(),
            grants_from: if first {
                now
            } else {
                now + LOCK_RESTART_GRACE_MS
            },
        }
    }

    /// Locks what it can of `mqs` for `client`; returns the queues now held by `client`.
    pub(super) fn try_lock(
        &mut self,
        group: &str,
        client: &str,
        mqs: &[MessageQueue],
        now: u64,
    ) -> Vec<MessageQueue> {
        if now < self.grants_from {
            return Vec::new();
        }
        let table = self.groups.entry(group.to_string()).or_default();
        let mut locked = Vec::new();
        for mq in mqs {
            let free = match table.get(mq) {
                None => true,
                Some(e) => {
                    e.client_id == client || now.saturating_sub(e.last_update) > LOCK_LEASE_MS
                }
            };
            if free {
                table.insert(
                    mq.clone(),
                    LockEntry {
                        client_id: client.to_string(),
                        last_update: now,
                    },
                );
                locked.push(mq.clone());
            }
        }
        locked
    }

    pub(super) fn unlock(&mut self, group: &str, client: &str, mqs: &[MessageQueue]) {
        if let Some(table) = self.groups.get_mut(group) {
            for mq in mqs {
                if table.get(mq).is_some_and(|e| e.client_id == client) {
                    table.remove(mq);
                }
            }
            if table.is_empty() {
                self.groups.remove(group);
            }
        }
    }

    /// The client holding `mq` for `group`, if its lease is alive.
    pub fn holder(&self, group: &str, mq: &MessageQueue, now: u64) -> Option<&str> {
        let e = self.groups.get(group)?.get(mq)?;
        (now.saturating_sub(e.last_update) <= LOCK_LEASE_MS).then_some(e.client_id.as_str())
    }
}

fn body(cmd: &RemotingCommand) -> Result<LockBatchRequestBody, FieldError> {
    crate::protocol::request_body(cmd, "LockBatchRequestBody JSON")
}

impl<D: Disk> Broker<D> {
    pub(super) fn lock_batch(
        &mut self,
        cmd: &RemotingCommand,
        now: u64,
    ) -> Result<RemotingCommand, FieldError> {
        let req = body(cmd)?;
        let mqs: Vec<MessageQueue> = req.mq_set.into_iter().collect();
        let locked = self
            .locks
            .try_lock(&req.consumer_group, &req.client_id, &mqs, now);
        let resp = LockBatchResponseBody {
            lock_ok_mq_set: locked.into_iter().collect(),
        };
        Ok(Self::body_response(cmd, to_body(&resp)))
    }

    pub(super) fn unlock_batch(
        &mut self,
        cmd: &RemotingCommand,
    ) -> Result<RemotingCommand, FieldError> {
        let req = body(cmd)?;
        let mqs: Vec<MessageQueue> = req.mq_set.into_iter().collect();
        self.locks.unlock(&req.consumer_group, &req.client_id, &mqs);
        Ok(RemotingCommand::response_to(cmd, response::SUCCESS, None))
    }

    /// Who holds `mq` for `group` right now (tests, checkers).
    pub fn lock_holder(&self, group: &str, mq: &MessageQueue, now: u64) -> Option<&str> {
        self.locks.holder(group, mq, now)
    }
}

//! The controller's replicated state: per broker group (brokerName) the replicas that
//! registered, the master, its epoch, and the in-sync replica set (SyncStateSet), changed
//! only by [`ReplicaCommand`]s committed through raft and applied in log order on every
//! controller. Applying is deterministic and checks its own preconditions (a command proposed
//! from stale state is refused when applied, on every controller alike), so a leader's
//! proposal can never break the rules below however late it lands:
//!
//! - a master is elected only from the group's SyncStateSet (or, for a group that never had
//!   a master, from its registered replicas), and each election starts a new epoch;
//! - the SyncStateSet changes only at its master's request, in its master's epoch, from the
//!   set the master last saw (`sync_state_set_epoch`), and always holds the master.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::remoting::codes::response;

/// Most broker groups one controller keeps.
pub const MAX_GROUPS: usize = 10_000;
/// Most replicas of one group.
pub const MAX_REPLICAS: usize = 16;

/// Where a replica is reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaAddr {
    /// Remoting address ("ip:port").
    pub addr: String,
    /// HA address slaves dial when it is master.
    pub ha_addr: String,
}

/// One broker group as the controllers agree on it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupReplicas {
    pub cluster: String,
    /// Replicas by brokerId.
    pub brokers: BTreeMap<u64, ReplicaAddr>,
    pub master: Option<u64>,
    /// Starts at 0 (no master ever); each election adds one.
    pub master_epoch: u64,
    pub sync_state_set: BTreeSet<u64>,
    pub sync_state_set_epoch: u64,
}

impl GroupReplicas {
    pub fn master_addr(&self) -> Option<&ReplicaAddr> {
        self.master.and_then(|m| self.brokers.get(&m))
    }

    /// Who may be elected: the SyncStateSet, or every replica of a group that never had a
    /// master (nothing was written anywhere yet).
    pub fn electable(&self, id: u64) -> bool {
        if self.master_epoch == 0 {
            self.brokers.contains_key(&id)
        } else {
            // A deliberately broken controller (for the simulator's checkers) elects any
            // registered replica.
            self.sync_state_set.contains(&id)
                || (self.brokers.contains_key(&id)
                    && crate::buggify::bug("controller.elect-outside-sync-set"))
        }
    }
}

/// A change to the replicated state: the payload of a raft entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicaCommand {
    /// A replica registered (or its addresses changed).
    Register {
        group: String,
        cluster: String,
        id: u64,
        addr: ReplicaAddr,
    },
    /// `master` leads the group from epoch `expect_epoch + 1`; its SyncStateSet starts as
    /// itself alone (the others rejoin as they catch up).
    ElectMaster {
        group: String,
        expect_epoch: u64,
        master: u64,
    },
    /// The master's new SyncStateSet.
    AlterSyncStateSet {
        group: String,
        master: u64,
        master_epoch: u64,
        expect_set_epoch: u64,
        set: BTreeSet<u64>,
    },
}

impl ReplicaCommand {
    pub fn group(&self) -> &str {
        match self {
            ReplicaCommand::Register { group, .. }
            | ReplicaCommand::ElectMaster { group, .. }
            | ReplicaCommand::AlterSyncStateSet { group, .. } => group,
        }
    }
}

/// Why a command was not applied: a controller response code (Apache's numbers) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: i32,
    pub reason: String,
}

fn refuse(code: i32, reason: impl Into<String>) -> Result<(), Refusal> {
    Err(Refusal {
        code,
        reason: reason.into(),
    })
}

/// Every group's replicas: the controller's state machine.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaTable {
    groups: BTreeMap<String, GroupReplicas>,
}

impl ReplicaTable {
    pub fn group(&self, name: &str) -> Option<&GroupReplicas> {
        self.groups.get(name)
    }

    pub fn groups(&self) -> impl Iterator<Item = (&String, &GroupReplicas)> {
        self.groups.iter()
    }

    /// Would `cmd` apply now? The same rules `apply` enforces, for a leader deciding whether
    /// to propose.
    pub fn check(&self, cmd: &ReplicaCommand) -> Result<(), Refusal> {
        self.clone().apply(cmd)
    }

    /// Applies a committed command; a refused one changes nothing.
    pub fn apply(&mut self, cmd: &ReplicaCommand) -> Result<(), Refusal> {
        match cmd {
            ReplicaCommand::Register {
                group,
                cluster,
                id,
                addr,
            } => {
                if !self.groups.contains_key(group) && self.groups.len() >= MAX_GROUPS {
                    return refuse(
                        response::CONTROLLER_INVALID_REQUEST,
                        format!("at most {MAX_GROUPS} broker groups"),
                    );
                }
                let g = self.groups.entry(group.clone()).or_default();
                if !g.brokers.contains_key(id) && g.brokers.len() >= MAX_REPLICAS {
                    return refuse(
                        response::CONTROLLER_INVALID_REQUEST,
                        format!("at most {MAX_REPLICAS} replicas in group {group}"),
                    );
                }
                g.cluster = cluster.clone();
                g.brokers.insert(*id, addr.clone());
                Ok(())
            }
            ReplicaCommand::ElectMaster {
                group,
                expect_epoch,
                master,
            } => {
                let Some(g) = self.groups.get_mut(group) else {
                    return refuse(
                        response::CONTROLLER_BROKER_METADATA_NOT_EXIST,
                        format!("no group {group}"),
                    );
                };
                if g.master_epoch != *expect_epoch {
                    return refuse(
                        response::CONTROLLER_FENCED_MASTER_EPOCH,
                        format!(
                            "elected in epoch {expect_epoch}, the group is in {}",
                            g.master_epoch
                        ),
                    );
                }
                if !g.electable(*master) {
                    return refuse(
                        response::CONTROLLER_ELECT_MASTER_FAILED,
                        format!("broker {master} of {group} is not in the SyncStateSet"),
                    );
                }
                g.master = Some(*master);
                g.master_epoch += 1;
                g.sync_state_set = BTreeSet::from([*master]);
                g.sync_state_set_epoch += 1;
                Ok(())
            }
            ReplicaCommand::AlterSyncStateSet {
                group,
                master,
                master_epoch,
                expect_set_epoch,
                set,
            } => {
                let Some(g) = self.groups.get_mut(group) else {
                    return refuse(
                        response::CONTROLLER_BROKER_METADATA_NOT_EXIST,
                        format!("no group {group}"),
                    );
                };
                if g.master != Some(*master) {
                    return refuse(
                        response::CONTROLLER_INVALID_MASTER,
                        format!("broker {master} is not the master of {group}"),
                    );
                }
                if g.master_epoch != *master_epoch {
                    return refuse(
                        response::CONTROLLER_FENCED_MASTER_EPOCH,
                        format!("epoch {master_epoch} is over ({})", g.master_epoch),
                    );
                }
                if g.sync_state_set_epoch != *expect_set_epoch {
                    return refuse(
                        response::CONTROLLER_FENCED_SYNC_STATE_SET_EPOCH,
                        format!(
                            "SyncStateSet epoch {expect_set_epoch} is over ({})",
                            g.sync_state_set_epoch
                        ),
                    );
                }
                if !set.contains(master) || !set.iter().all(|id| g.brokers.contains_key(id)) {
                    return refuse(
                        response::CONTROLLER_INVALID_REPLICAS,
                        format!(
                            "SyncStateSet {set:?} must hold the master and registered replicas only"
                        ),
                    );
                }
                g.sync_state_set = set.clone();
                g.sync_state_set_epoch += 1;
                Ok(())
            }
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("the replica table serializes")
    }

    pub fn decode(bytes: &[u8]) -> Result<ReplicaTable, String> {
        if bytes.is_empty() {
            return Ok(ReplicaTable::default());
        }
        serde_json::from_slice(bytes).map_err(|e| format!("controller snapshot: {e}"))
    }
}

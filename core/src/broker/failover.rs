//! Controller mode (RocketMQ 5's enableControllerMode): the controller, not broker.conf,
//! decides who leads a group. Every replica starts as a slave with no master, registers
//! with the controller leader and heartbeats to it every
//! [`BrokerConfig::controller_heartbeat_ms`](super::BrokerConfig); each answer says who
//! leads the group, in which master epoch, with which SyncStateSet.
//!
//! - **Promotion**: told it leads epoch `e`, a replica makes its log durable, records
//!   `(e, its log end)` in its epoch cache (`config/epochs.json`), writes its configs as a
//!   clean shutdown would and reloads them as a master's start would (offsets journal, delay
//!   levels, timer wheel, transaction check), then takes writes.
//! - **Following**: told another leads, a replica (a master stepping down too) stops taking
//!   writes, asks the master for its epoch cache (GET_BROKER_EPOCH_CACHE), cuts its own log
//!   back to where the two histories last agreed (the end of their last common epoch), takes
//!   the master's cache, and only then dials the master's HA port, saying who it is and which
//!   epoch it follows (`ha::encode_hello`): a master of another epoch refuses it.
//! - **SyncStateSet**: a master counts a slave in sync only once the controller put it in
//!   the set: it asks for a slave that holds everything consumers could see
//!   ([`Broker::replicated_bound`]) and for a member that fell behind for
//!   `ha_max_time_slave_not_catchup_ms` to leave. Consumers see what every member holds;
//!   SYNC_MASTER acks once every other member holds it (none: SLAVE_NOT_AVAILABLE). The
//!   controller elects only from the set, so nothing acknowledged or seen is lost to a
//!   failover of one replica. A change the master asked for whose outcome it has not
//!   learned (a NOT_LEADER answer may come from a controller that already proposed it) may
//!   be the controllers' set: until it hears a newer set, the master counts those members
//!   too, and asks for the set it holds to settle the question.

use std::collections::{BTreeMap, BTreeSet};

use rockfish_store::{Disk, config};
use serde::{Deserialize, Serialize};

use super::timers::Timer;
use super::{Broker, BrokerRole};
use crate::ha::HaMaster;
use crate::machine::Output;
use crate::protocol::lenient::decode_body;
use crate::remoting::RemotingCommand;
use crate::remoting::codes::{request, response};

/// A question for the master's epoch cache unanswered this long is asked again.
const EPOCH_ASK_TIMEOUT_MS: u64 = 3_000;

/// The replica's epoch cache.
pub const EPOCHS_FILE: &str = "config/epochs.json";

/// A master epoch and the log offset it started writing at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EpochEntry {
    pub epoch: u64,
    pub start_offset: u64,
}

/// Which master epoch wrote which part of the log (Apache's EpochFileCache).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EpochCache {
    #[serde(default)]
    pub entries: Vec<EpochEntry>,
    /// In GET_BROKER_EPOCH_CACHE's answer: the answering log's end.
    #[serde(default)]
    pub max_offset: u64,
}

impl EpochCache {
    pub fn last_epoch(&self) -> u64 {
        self.entries.last().map_or(0, |e| e.epoch)
    }

    /// Epoch `epoch` starts at `start`: entries it supersedes go.
    pub fn push(&mut self, epoch: u64, start: u64) {
        self.entries
            .retain(|e| e.epoch < epoch && e.start_offset <= start);
        self.entries.push(EpochEntry {
            epoch,
            start_offset: start,
        });
    }

    /// Where the start of `epoch`'s successor in this history lies (or `end`).
    fn end_of(&self, epoch: u64, end: u64) -> u64 {
        self.entries
            .iter()
            .find(|e| e.epoch > epoch)
            .map_or(end, |e| e.start_offset.min(end))
    }

    /// How far this log (ending at `my_end`) and another history (`other`, ending at
    /// `other.max_offset`) hold the same bytes: the end of the last epoch both started at the
    /// same offset, in the shorter of the two. Before any recorded epoch ("epoch 0": data from
    /// before controller mode) both are taken as one history.
    pub fn common_end(&self, my_end: u64, other: &EpochCache) -> u64 {
        let shared = self
            .entries
            .iter()
            .rev()
            .find(|mine| other.entries.contains(mine))
            .map_or(0, |e| e.epoch);
        self.end_of(shared, my_end)
            .min(other.end_of(shared, other.max_offset))
            .min(my_end)
    }
}

/// What a replica in controller mode knows and has asked.
#[derive(Debug, Default)]
pub(super) struct ControllerLink {
    pub enabled: bool,
    /// The controller asked next (an index into `controller_addrs`, or the leader's address).
    target: usize,
    leader: Option<String>,
    registered: bool,
    /// The controller names this replica master of an epoch it already led (before a
    /// restart: its tail may since be lost). It never leads an epoch twice: its requests say
    /// `restart` until the controller elects anew.
    stale_lead: bool,
    /// The master epoch this replica acts in (as master or as a follower).
    pub epoch: u64,
    pub master_id: Option<u64>,
    /// As master: the SyncStateSet and its epoch.
    pub sync_state_set: BTreeSet<u64>,
    pub sync_state_set_epoch: u64,
    /// Requests to the controller in flight, by opaque.
    asked: BTreeSet<i32>,
    alter_in_flight: Option<i32>,
    alter_sent_at: u64,
    /// A slave asked into the set: consumers' view waits for it too, so it can catch up.
    pub joining: Option<u64>,
    /// Members of sets asked for (alters sent) whose outcome this master has not learned:
    /// a controller that answers NOT_LEADER, or no answer at all, may still commit one. Until
    /// it hears a set newer than `sync_state_set_epoch`, the master acts on its set together
    /// with these (what consumers see, SYNC_MASTER acks), as the controller may elect any of
    /// them.
    pub unsettled: BTreeSet<u64>,
    /// Per set member, when it last held what the master had at the previous check.
    caught_up_at: BTreeMap<u64, u64>,
    last_mark: u64,
    /// Promotion waits for the log to be durable.
    promote_to: Option<u64>,
    /// A follower: its epoch-cache question in flight, and whether its log was checked.
    epoch_asked: Option<i32>,
    epoch_asked_at: u64,
    pub log_checked: bool,
    pub epochs: EpochCache,
    /// A follower without a stream to its master since then (only a deliberately broken
    /// replica acts on it).
    silent_since: Option<u64>,
}

impl ControllerLink {
    pub(super) fn new(enabled: bool, epochs: EpochCache) -> ControllerLink {
        ControllerLink {
            enabled,
            epoch: epochs.last_epoch(),
            epochs,
            ..ControllerLink::default()
        }
    }
}

impl<D: Disk> Broker<D> {
    pub(super) fn controller_mode(&self) -> bool {
        self.ctl.enabled
    }

    /// The master epoch this broker acts in (controller mode; 0 otherwise).
    pub fn master_epoch(&self) -> u64 {
        self.ctl.epoch
    }

    /// Its epoch cache, for tests and admin.
    pub fn epoch_cache(&self) -> &EpochCache {
        &self.ctl.epochs
    }

    /// The SyncStateSet as this master last heard it.
    pub fn sync_state_set(&self) -> &BTreeSet<u64> {
        &self.ctl.sync_state_set
    }

    /// The other members of this master's SyncStateSet (and a slave being let in).
    pub(super) fn sync_peers(&self) -> BTreeSet<u64> {
        let me = self.config.broker_id;
        self.ctl
            .sync_state_set
            .iter()
            .copied()
            .chain(self.ctl.joining)
            .chain(self.ctl.unsettled.iter().copied())
            .filter(|&id| id != me)
            .collect()
    }

    /// What every other member of the set holds (`None`: no other member).
    pub(super) fn sync_peers_acked(&self) -> Option<u64> {
        let me = self.config.broker_id;
        self.ctl
            .sync_state_set
            .union(&self.ctl.unsettled)
            .filter(|&&id| id != me)
            .map(|&id| self.repl.master_acked_by(id).unwrap_or(0))
            .min()
    }

    /// Heartbeat (or registration) to the controller, each heartbeat interval.
    pub(super) fn controller_beat(&mut self, now: u64) {
        self.timers.set(
            Timer::ControllerBeat,
            now + self.config.controller_heartbeat_ms,
        );
        if !self.ctl.asked.is_empty() {
            // Unanswered since the last beat: try the next controller.
            self.ctl.asked.clear();
            self.ctl.leader = None;
            self.ctl.target = (self.ctl.target + 1) % self.config.controller_addrs.len().max(1);
        }
        let Some(addr) = self
            .ctl
            .leader
            .clone()
            .or_else(|| self.config.controller_addrs.get(self.ctl.target).cloned())
        else {
            return;
        };
        let opaque = self.next_opaque();
        let code = if self.ctl.registered {
            request::BROKER_HEARTBEAT
        } else {
            request::CONTROLLER_REGISTER_BROKER
        };
        let cmd = RemotingCommand::request(code, opaque)
            .with_ext("clusterName", &self.config.cluster_name)
            .with_ext("brokerName", &self.config.broker_name)
            .with_ext("brokerId", self.config.broker_id)
            .with_ext("brokerAddr", &self.config.broker_addr)
            .with_ext("haServerAddr", self.config.effective_ha_addr())
            .with_ext("maxOffset", self.store.write_pos())
            .with_ext("epoch", self.ctl.epoch)
            .with_ext("restart", self.ctl.stale_lead);
        self.ctl.asked.insert(opaque);
        self.outputs.push_back(Output::SendTo { addr, cmd });
        if self.repl.role.is_master() {
            self.maintain_sync_state_set(now);
        } else {
            self.self_promote_if_broken(now);
        }
    }

    /// A deliberately broken replica (for the simulator's checkers): one cut off from its
    /// master's stream for the catch-up time takes over by itself, in the epoch it follows,
    /// without asking the controller (two masters in one epoch while the master lives).
    fn self_promote_if_broken(&mut self, now: u64) {
        if self.repl.slave.conn.is_some() || self.ctl.epoch == 0 {
            self.ctl.silent_since = None;
            return;
        }
        let since = *self.ctl.silent_since.get_or_insert(now);
        if now.saturating_sub(since) >= self.config.ha_max_time_slave_not_catchup_ms
            && crate::buggify::bug("broker.self-promote")
        {
            self.ctl.silent_since = None;
            self.ctl.promote_to = Some(self.ctl.epoch);
            self.try_promote(now);
        }
    }

    /// An answer from a controller. True if it was one.
    pub(super) fn on_controller_answer(&mut self, cmd: &RemotingCommand, now: u64) -> bool {
        let alter = self.ctl.alter_in_flight == Some(cmd.opaque);
        if !self.ctl.asked.remove(&cmd.opaque) && !alter {
            return false;
        }
        if alter {
            self.ctl.alter_in_flight = None;
        }
        match cmd.code {
            response::SUCCESS => {
                self.ctl.registered = true;
                self.apply_replica_info(cmd, now);
            }
            response::CONTROLLER_NOT_LEADER => {
                self.ctl.leader = cmd
                    .ext("leaderAddress")
                    .filter(|a| !a.is_empty())
                    .map(Into::into);
                if self.ctl.leader.is_none() {
                    self.ctl.target =
                        (self.ctl.target + 1) % self.config.controller_addrs.len().max(1);
                }
                // Asked again soon, not a heartbeat later: failover waits on it.
                let soon = now + (self.config.controller_heartbeat_ms / 5).max(1);
                if self
                    .timers
                    .at(Timer::ControllerBeat)
                    .is_none_or(|t| t > soon)
                {
                    self.timers.set(Timer::ControllerBeat, soon);
                }
            }
            response::CONTROLLER_BROKER_METADATA_NOT_EXIST => self.ctl.registered = false,
            code => {
                tracing::warn!(
                    code,
                    remark = cmd.remark.as_deref().unwrap_or(""),
                    "the controller refused"
                );
            }
        }
        true
    }

    fn apply_replica_info(&mut self, cmd: &RemotingCommand, now: u64) {
        let (Ok(Some(master)), Ok(Some(epoch))) = (
            cmd.ext_opt::<i64>("masterBrokerId"),
            cmd.ext_opt::<u64>("masterEpoch"),
        ) else {
            return;
        };
        if epoch < self.ctl.epoch || master < 0 {
            return; // an older view (a controller that lags), or no master yet
        }
        let master = master as u64;
        let me = self.config.broker_id;
        if master == me {
            if let (Ok(Some(set_epoch)), Some(set)) = (
                cmd.ext_opt::<u64>("syncStateSetEpoch"),
                cmd.ext("syncStateSet"),
            ) && let Ok(set) = crate::controller::parse_ids(set)
                && set_epoch >= self.ctl.sync_state_set_epoch
            {
                if self.ctl.joining.is_some_and(|j| set.contains(&j)) {
                    self.ctl.joining = None;
                }
                if set_epoch > self.ctl.sync_state_set_epoch {
                    // Every alter sent was based on the older epoch: none can apply now.
                    self.ctl.unsettled.clear();
                }
                for id in &set {
                    self.ctl.caught_up_at.entry(*id).or_insert(now);
                }
                self.ctl.caught_up_at.retain(|id, _| set.contains(id));
                self.ctl.sync_state_set = set;
                self.ctl.sync_state_set_epoch = set_epoch;
            }
            self.release_replica_waiters(now);
            self.wake_visible_pulls(now);
            // Never into an epoch this replica already led (in an earlier life: the controller
            // elects again when a master restarts, and its tail may be cut).
            if !self.repl.role.is_master() || epoch > self.ctl.epoch {
                if epoch > self.ctl.epochs.last_epoch() {
                    self.ctl.promote_to = Some(epoch);
                    self.try_promote(now);
                } else if !self.ctl.stale_lead {
                    tracing::warn!(
                        epoch,
                        "named master of an epoch led before: asking for another"
                    );
                    self.ctl.stale_lead = true;
                    self.timers.set(Timer::ControllerBeat, now);
                }
            }
            return;
        }
        let addr = cmd.ext("masterAddress").unwrap_or("").to_string();
        let ha = cmd.ext("masterHaAddress").unwrap_or("").to_string();
        if addr.is_empty() || ha.is_empty() {
            return;
        }
        if self.repl.role.is_master()
            || epoch > self.ctl.epoch
            || self.ctl.master_id != Some(master)
        {
            self.follow(master, epoch, addr, ha, now);
        }
    }

    /// Becomes master once the log is durable (its epoch's start must survive a power loss).
    pub(super) fn try_promote(&mut self, now: u64) {
        let Some(epoch) = self.ctl.promote_to else {
            return;
        };
        if self.store.flushed() < self.store.write_pos() || self.flush.busy() {
            self.request_flush(now);
            return; // again when the flush ends
        }
        self.ctl.promote_to = None;
        if let Err(e) = self.promote(epoch, now) {
            tracing::error!(error = %e, epoch, "taking over as master failed; staying a slave");
            self.ctl.promote_to = Some(epoch);
        }
    }

    fn promote(&mut self, epoch: u64, now: u64) -> Result<(), super::BrokerError> {
        let end = self.store.write_pos();
        tracing::warn!(epoch, end, "taking over as master");
        let was_master = self.repl.role.is_master();
        // As a clean shutdown would leave them, then loaded as a master's start would.
        self.save_configs_inline()?;
        let mut epochs = self.ctl.epochs.clone();
        epochs.push(epoch, end);
        config::save(self.store.disk_mut(), EPOCHS_FILE, &epochs)?;
        self.ctl.epochs = epochs;
        self.ctl.epoch = epoch;
        self.ctl.master_id = Some(self.config.broker_id);
        if !was_master {
            let loaded = Self::load_master_state(&self.config, &mut self.store, now)?;
            self.offsets = loaded.offsets;
            self.schedule = loaded.schedule;
            self.wheel = loaded.wheel;
            self.transactions = loaded.transactions;
            self.pop = loaded.pop;
            if let Some(due) = self.pop.next_due() {
                self.timers.set(Timer::PopRevive, due);
            }
            if loaded.delays_waiting {
                self.timers.set(Timer::Schedule, now);
            }
            if loaded.timers_waiting {
                self.timers.set(Timer::Wheel, now);
            }
            self.timers.set(
                Timer::TransactionCheck,
                now + self.config.transaction_check_interval_ms,
            );
        }
        // Slaves of an earlier epoch go; they come back saying this one.
        for conn in self.repl.master_conns() {
            self.outputs.push_back(Output::Close {
                conn,
                reason: format!("a new master epoch {epoch}"),
            });
        }
        self.repl.master = HaMaster::for_epoch(end, epoch);
        // Its whole log is the group's history now: what consumers see starts there.
        self.repl.visible_floor = end;
        self.drop_master_stream(now, "this broker leads now".into());
        self.repl.slave = Default::default();
        self.repl.role = self.config.master_role();
        self.store.set_replica(false);
        self.ctl.joining = None;
        self.ctl.unsettled.clear();
        self.ctl.log_checked = false;
        self.ctl.epoch_asked = None;
        if !was_master {
            self.journal_schedule_progress(now);
            self.journal_wheel_progress(now);
            self.journal_transaction_progress(now);
        }
        self.timers.clear(Timer::SlaveSync);
        self.ctl.stale_lead = false;
        self.register_all(now);
        Ok(())
    }

    /// Follows `master` (epoch `epoch`): a master steps down first.
    fn follow(&mut self, master: u64, epoch: u64, addr: String, ha: String, now: u64) {
        tracing::warn!(master, epoch, %addr, "following a master");
        if self.repl.role.is_master() {
            self.step_down(now);
        }
        self.ctl.promote_to = None;
        self.ctl.stale_lead = false;
        self.ctl.epoch = epoch;
        self.ctl.master_id = Some(master);
        self.ctl.log_checked = false;
        self.ctl.epoch_asked = None;
        let link = &mut self.repl.slave;
        let moved = link.master_addr.as_deref() != Some(addr.as_str())
            || link.master_ha_addr.as_deref() != Some(ha.as_str());
        link.master_addr = Some(addr);
        link.master_ha_addr = Some(ha);
        // Whatever stream there was follows an older epoch.
        self.drop_master_stream(now, "a new master epoch".into());
        self.repl.slave.connect_at = now;
        if moved {
            self.timers.set(Timer::SlaveSync, now);
        }
        self.ask_epoch_cache(now);
    }

    /// A master stops taking writes: its waiting answers are refused (their data may be cut
    /// from this log), its slaves' streams closed, its services stopped.
    fn step_down(&mut self, now: u64) {
        tracing::warn!("stepping down: no longer master");
        // What consumers saw here stays served (the replicas elected from hold it); the
        // tail past it waits for the next master's word, or is cut.
        self.repl.confirmed = self.repl.confirmed.max(self.visible_log_end());
        let waiters: Vec<_> = self
            .flush
            .waiters
            .drain(..)
            .chain(self.repl.waiters.drain(..))
            .collect();
        for mut w in waiters {
            w.response.code = response::SERVICE_NOT_AVAILABLE;
            w.response.remark = Some("the broker stepped down from master: send again".into());
            self.outputs.push_back(Output::Send {
                conn: w.conn,
                cmd: w.response,
            });
        }
        for conn in self.repl.master_conns() {
            self.outputs.push_back(Output::Close {
                conn,
                reason: "stepping down from master".into(),
            });
        }
        self.repl.master = HaMaster::new(self.store.write_pos());
        self.repl.role = BrokerRole::Slave;
        self.store.set_replica(true);
        self.ctl.sync_state_set.clear();
        self.ctl.joining = None;
        self.ctl.unsettled.clear();
        self.ctl.caught_up_at.clear();
        for t in [Timer::Schedule, Timer::Wheel, Timer::TransactionCheck] {
            self.timers.clear(t);
        }
        self.register_all(now);
    }

    fn ask_epoch_cache(&mut self, now: u64) {
        let Some(addr) = self.repl.slave.master_addr.clone() else {
            return;
        };
        let opaque = self.next_opaque();
        self.ctl.epoch_asked = Some(opaque);
        self.ctl.epoch_asked_at = now;
        self.outputs.push_back(Output::SendTo {
            addr,
            cmd: RemotingCommand::request(request::GET_BROKER_EPOCH_CACHE, opaque)
                .with_ext("brokerName", &self.config.broker_name),
        });
    }

    /// GET_BROKER_EPOCH_CACHE: this replica's epochs and log end.
    pub(super) fn epoch_cache_answer(&self, cmd: &RemotingCommand) -> RemotingCommand {
        let cache = EpochCache {
            entries: self.ctl.epochs.entries.clone(),
            max_offset: self.store.write_pos(),
        };
        Self::body_response(cmd, crate::protocol::to_body(&cache))
    }

    /// The master's epoch cache: this log is cut back to where the two agree, takes the
    /// master's epochs, and may follow. True if the answer was this.
    pub(super) fn on_epoch_answer(&mut self, cmd: &RemotingCommand, now: u64) -> bool {
        if self.ctl.epoch_asked != Some(cmd.opaque) {
            return false;
        }
        self.ctl.epoch_asked = None;
        if self.repl.role.is_master() {
            return true;
        }
        if cmd.code != response::SUCCESS {
            tracing::warn!(code = cmd.code, "the master did not send its epoch cache");
            return true; // asked again when dialing is next due
        }
        let theirs = match decode_body::<EpochCache>(&cmd.body) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "the master's epoch cache does not decode");
                return true;
            }
        };
        if self.flush.busy()
            || self
                .persists
                .in_flight(super::persist::PersistKind::Checkpoint(0))
        {
            // A cut under a flush or a checkpoint write in flight would race it: asked
            // again shortly.
            self.repl.slave.connect_at = now + super::replication::RECONNECT_MS;
            return true;
        }
        if theirs.last_epoch() < self.ctl.epoch {
            // The master has not taken over the epoch this replica follows yet: its cache
            // would miss the epoch's start, and the data streamed in this epoch would count
            // as the last one's (cut again at the next comparison). Asked again shortly.
            self.repl.slave.connect_at = now + super::replication::RECONNECT_MS;
            return true;
        }
        let end = self.store.write_pos();
        let common = self.ctl.epochs.common_end(end, &theirs);
        // A deliberately broken replica (for the simulator's checkers) keeps its tail.
        if common < end && !crate::buggify::bug("broker.no-truncation") {
            tracing::warn!(
                from = end,
                to = common,
                "cutting the log back to the master's history"
            );
            if let Err(e) = self.store.truncate_log(common) {
                tracing::error!(error = %e, "cutting the log failed; asking again");
                self.repl.slave.connect_at = now + super::replication::RECONNECT_MS;
                return true;
            }
        }
        let mut adopted = theirs.clone();
        adopted.max_offset = 0;
        if let Err(e) = config::save(self.store.disk_mut(), EPOCHS_FILE, &adopted) {
            tracing::error!(error = %e, "saving the epoch cache failed; asking again");
            self.repl.slave.connect_at = now + super::replication::RECONNECT_MS;
            return true;
        }
        self.ctl.epochs = adopted;
        self.ctl.log_checked = true;
        self.repl.slave.connect_at = now;
        true
    }

    /// Before dialing (controller mode): the log must have been checked against the master's
    /// epochs. Asks if it was not.
    pub(super) fn ready_to_dial(&mut self, now: u64) -> bool {
        if !self.ctl.enabled || self.ctl.log_checked {
            return true;
        }
        // Asked again when unanswered for a while (the question died with a connection).
        let lost = now.saturating_sub(self.ctl.epoch_asked_at) >= EPOCH_ASK_TIMEOUT_MS;
        if self.ctl.epoch_asked.is_none() || lost {
            self.ask_epoch_cache(now);
        }
        false
    }

    /// A master keeps its SyncStateSet true: a slave that holds all consumers could see is
    /// asked in; a member behind for too long is asked out.
    fn maintain_sync_state_set(&mut self, now: u64) {
        if self.ctl.alter_in_flight.is_some()
            && now.saturating_sub(self.ctl.alter_sent_at) > 2 * self.config.controller_heartbeat_ms
        {
            self.ctl.alter_in_flight = None; // lost with a controller: asked again
        }
        if self.ctl.alter_in_flight.is_some() || self.ctl.sync_state_set.is_empty() {
            return;
        }
        let me = self.config.broker_id;
        let end = self.store.write_pos();
        let mark = std::mem::replace(&mut self.ctl.last_mark, end);
        let members: Vec<u64> = self.ctl.sync_state_set.iter().copied().collect();
        let mut out = BTreeSet::new();
        for id in members.into_iter().filter(|&id| id != me) {
            let acked = self.repl.master_acked_by(id);
            if acked.is_some_and(|a| a >= mark) {
                self.ctl.caught_up_at.insert(id, now);
            }
            let since = *self.ctl.caught_up_at.entry(id).or_insert(now);
            if now.saturating_sub(since) > self.config.ha_max_time_slave_not_catchup_ms {
                out.insert(id);
            }
        }
        let mut set = self.ctl.sync_state_set.clone();
        if !out.is_empty() {
            tracing::warn!(?out, "slaves fell behind: leaving the SyncStateSet");
            set.retain(|id| !out.contains(id));
        } else {
            // One slave at a time is let in, once it holds all consumers could ever see.
            let bound = self.replicated_bound().min(end);
            let candidate = match self.ctl.joining {
                Some(j) => Some(j),
                None => self.repl.master_slave_ids().into_iter().find(|id| {
                    !set.contains(id)
                        && self
                            .repl
                            .master_acked_by(*id)
                            .is_some_and(|a| a + self.config.ha_max_gap_not_in_sync >= end)
                }),
            };
            match candidate {
                Some(c) if self.repl.master_acked_by(c).is_some() => {
                    self.ctl.joining = Some(c);
                    if self.repl.master_acked_by(c).unwrap_or(0) < bound {
                        return; // catching up
                    }
                    tracing::info!(slave = c, "a slave caught up: joining the SyncStateSet");
                    set.insert(c);
                }
                other => {
                    if other.is_some() {
                        self.ctl.joining = None; // it went away (still counted while unsettled)
                    }
                    if self.ctl.unsettled.is_subset(&set) {
                        return;
                    }
                    // An earlier alter's outcome is unknown: asking for the set as held settles
                    // it (applied, it moves the set epoch past every older alter; refused, the
                    // older one was applied and the answers bring the set it made).
                }
            }
        }
        let Some(addr) = self
            .ctl
            .leader
            .clone()
            .or_else(|| self.config.controller_addrs.get(self.ctl.target).cloned())
        else {
            return;
        };
        let opaque = self.next_opaque();
        self.ctl.alter_in_flight = Some(opaque);
        self.ctl.alter_sent_at = now;
        self.ctl.unsettled.extend(set.iter().copied());
        let ids = set.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
        self.outputs.push_back(Output::SendTo {
            addr,
            cmd: RemotingCommand::request(request::CONTROLLER_ALTER_SYNC_STATE_SET, opaque)
                .with_ext("brokerName", &self.config.broker_name)
                .with_ext("masterBrokerId", me)
                .with_ext("masterEpoch", self.ctl.epoch)
                .with_ext("syncStateSetEpoch", self.ctl.sync_state_set_epoch)
                .with_ext("syncStateSet", ids),
        });
    }
}

//! `Controller`: RocketMQ 5's controller mode as a Sans-IO machine. A few controllers (three,
//! usually) keep, through raft (raft-rs's `RawNode`), every broker group's replicas, master,
//! master epoch and SyncStateSet ([`replicas`]). Brokers register with the leader and
//! heartbeat to it; when a group's master falls silent (or restarts), the leader elects a new
//! one from the SyncStateSet alone, in a new epoch, after every live candidate has reported its
//! log end since the master was lost, choosing the longest log. Masters grow and shrink their
//! SyncStateSet as slaves catch up and fall behind (ALTER_SYNC_STATE_SET).
//!
//! Liveness is the leader's alone (in memory, as Apache's heartbeat manager): a new leader
//! gives every registered broker a full heartbeat timeout before judging it.
//!
//! Determinism: raft-rs draws its election timeout from `thread_rng` in
//! `[min_election_tick, max_election_tick)`; the controller makes that range one tick wide, at
//! a per-controller value chosen from its id (distinct slots, so two controllers never time
//! out together forever) and its seeded RNG (jitter within the slot).

pub mod raft_store;
pub mod replicas;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use raft::eraftpb::{Entry, EntryType, Message};
use raft::{RawNode, StateRole};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::machine::{ConnId, Output};
use crate::remoting::RemotingCommand;
use crate::remoting::codes::{request, response};
use raft_store::RaftStore;
use replicas::{GroupReplicas, ReplicaAddr, ReplicaCommand, ReplicaTable};

/// The controller's one file, under its data directory.
pub const RAFT_LOG_FILE: &str = "controller/raft.log";
/// The log is folded into a snapshot past this many entries.
const COMPACT_AFTER: usize = 1_000;
/// Ticks a caught-up clock may owe at once (a process paused or a simulated node frozen):
/// more are skipped, not replayed in a burst.
const MAX_CATCH_UP_TICKS: u64 = 50;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerConfig {
    /// This controller's raft id: its position in `peers`, from 1.
    pub id: u64,
    /// Every controller's remoting address, in the same order on every controller.
    pub peers: Vec<String>,
    /// One raft tick.
    pub tick_ms: u64,
    /// Raft's election timeout, in ticks (the real one lies in `[e, 2e)`).
    pub election_ticks: usize,
    /// Raft's leader heartbeat, in ticks.
    pub heartbeat_ticks: usize,
    /// A broker not heard from for this long is dead (its group elects if it was master).
    pub broker_timeout_ms: u64,
    pub seed: u64,
    /// Connections open at once.
    pub max_connections: usize,
    /// Requests waiting for their proposal to commit.
    pub max_pending: usize,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            id: 1,
            peers: vec!["127.0.0.1:9878".into()],
            tick_ms: 100,
            election_ticks: 10,
            heartbeat_ticks: 2,
            broker_timeout_ms: 5_000,
            seed: 0,
            max_connections: 10_000,
            max_pending: 4_096,
        }
    }
}

impl ControllerConfig {
    pub fn validate(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        if self.peers.is_empty() || self.peers.len() > 9 {
            problems.push(format!(
                "controller peers: 1 to 9 addresses (got {})",
                self.peers.len()
            ));
        }
        if self.id == 0 || self.id as usize > self.peers.len() {
            problems.push(format!(
                "controller id {}: must name one of the {} peers (from 1)",
                self.id,
                self.peers.len()
            ));
        }
        if self.tick_ms == 0 {
            problems.push("controller tick: must be above 0 ms".into());
        }
        if self.heartbeat_ticks == 0 || self.election_ticks <= self.heartbeat_ticks {
            problems.push(format!(
                "controller election ticks {} must exceed heartbeat ticks {} (> 0)",
                self.election_ticks, self.heartbeat_ticks
            ));
        }
        if self.broker_timeout_ms < 2 * self.tick_ms {
            problems.push(format!(
                "controller broker timeout {} ms: must be at least two ticks",
                self.broker_timeout_ms
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }

    fn addr_of(&self, id: u64) -> Option<&str> {
        let i = usize::try_from(id).ok()?.checked_sub(1)?;
        self.peers.get(i).map(String::as_str)
    }
}

/// What the leader knows of a broker's liveness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Live {
    last_heard: u64,
    /// Its log's end as last reported, and when (0: not since this controller led).
    log_end: u64,
    reported_at: Option<u64>,
}

/// A group whose master is being replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Election {
    started: u64,
    /// The lost master, no candidate.
    exclude: Option<u64>,
    /// Proposed, not applied yet: not proposed again before then.
    proposed_at: Option<u64>,
}

/// A request answered once its proposal is applied.
#[derive(Debug, Clone)]
struct Pending {
    conn: ConnId,
    request: RemotingCommand,
    /// The broker asking (its replica info is answered).
    broker: Option<u64>,
}

/// A `Ready` in flight to the disk, with the messages that may only leave after it.
#[derive(Debug)]
struct Unpersisted {
    number: u64,
    /// `None`: nothing to write (done once every earlier one is).
    token: Option<u64>,
    done: bool,
    messages: Vec<Message>,
}

pub struct Controller {
    config: ControllerConfig,
    raw: RawNode<RaftStore>,
    table: ReplicaTable,
    applied: u64,
    next_tick: u64,
    outputs: VecDeque<Output>,
    conns: BTreeSet<ConnId>,
    pending: BTreeMap<u64, Pending>,
    next_proposal: u64,
    live: BTreeMap<(String, u64), Live>,
    elections: BTreeMap<String, Election>,
    unpersisted: VecDeque<Unpersisted>,
    next_token: u64,
    leading: bool,
    /// The disk failed: the controller stops (its raft state can no longer be trusted to
    /// be durable) and answers nothing but refusals.
    failed: Option<String>,
}

impl Controller {
    /// A controller over its persisted raft log (`None`: a fresh one).
    pub fn new(
        config: ControllerConfig,
        persisted: Option<&[u8]>,
        now: u64,
    ) -> Result<Controller, String> {
        config.validate()?;
        let voters: Vec<u64> = (1..=config.peers.len() as u64).collect();
        let store = match persisted {
            Some(bytes) => RaftStore::decode(bytes)?,
            None => RaftStore::new(voters),
        };
        let table = ReplicaTable::decode(&store.snapshot_ref().data)?;
        let applied = store.snapshot_ref().get_metadata().index;
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(config.seed);
        // Distinct slots per id within [e, 2e): the lowest-slotted live controller times out
        // first; jitter inside the slot from the seed.
        let e = config.election_ticks;
        let slots = config.peers.len().max(1);
        let width = (e / slots).max(1);
        let slot = (config.id as usize - 1) % slots;
        let timeout = e + (slot * width + rng.random_range(0..width)).min(e - 1);
        let raft_config = raft::Config {
            id: config.id,
            election_tick: e,
            heartbeat_tick: config.heartbeat_ticks,
            min_election_tick: timeout,
            max_election_tick: timeout + 1,
            applied,
            check_quorum: true,
            pre_vote: true,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 64,
            ..raft::Config::default()
        };
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let raw = RawNode::new(&raft_config, store, &logger).map_err(|e| e.to_string())?;
        Ok(Controller {
            next_tick: now + config.tick_ms,
            config,
            raw,
            table,
            applied,
            outputs: VecDeque::new(),
            conns: BTreeSet::new(),
            pending: BTreeMap::new(),
            next_proposal: 1,
            live: BTreeMap::new(),
            elections: BTreeMap::new(),
            unpersisted: VecDeque::new(),
            next_token: 1,
            leading: false,
            failed: None,
        })
    }

    pub fn config(&self) -> &ControllerConfig {
        &self.config
    }

    /// Is this controller the raft leader?
    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    /// The raft term, for tests and logs.
    pub fn term(&self) -> u64 {
        self.raw.raft.term
    }

    /// The leader this controller knows of (its id), if any.
    pub fn leader_id(&self) -> Option<u64> {
        Some(self.raw.raft.leader_id).filter(|&id| id != 0)
    }

    /// The applied replica state.
    pub fn replicas(&self) -> &ReplicaTable {
        &self.table
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<u64> {
        self.failed.is_none().then_some(self.next_tick)
    }

    pub fn on_connect(&mut self, conn: ConnId, _now: u64) {
        if self.conns.len() >= self.config.max_connections {
            self.outputs.push_back(Output::Close {
                conn,
                reason: format!(
                    "at most {} connections to a controller",
                    self.config.max_connections
                ),
            });
            return;
        }
        self.conns.insert(conn);
    }

    pub fn on_disconnect(&mut self, conn: ConnId, _now: u64) {
        self.conns.remove(&conn);
        self.pending.retain(|_, p| p.conn != conn);
    }

    pub fn on_timeout(&mut self, now: u64) {
        if self.failed.is_some() || now < self.next_tick {
            return;
        }
        let owed = (now - self.next_tick) / self.config.tick_ms + 1;
        for _ in 0..owed.min(MAX_CATCH_UP_TICKS) {
            self.raw.tick();
        }
        self.next_tick = now + self.config.tick_ms;
        self.drive(now);
        if self.leading {
            self.judge_groups(now);
            self.drive(now);
        }
    }

    pub fn on_command(&mut self, conn: ConnId, cmd: RemotingCommand, now: u64) {
        if cmd.is_response() {
            return; // raft messages are oneway; nothing else is asked of others
        }
        if let Some(reason) = &self.failed {
            let answer = RemotingCommand::response_to(
                &cmd,
                response::SYSTEM_ERROR,
                Some(format!("controller stopped: {reason}")),
            );
            self.answer(conn, &cmd, answer);
            return;
        }
        if cmd.code == request::CONTROLLER_RAFT_MESSAGE {
            self.on_raft_message(&cmd, now);
            return;
        }
        let answer = match self.serve(conn, &cmd, now) {
            Ok(Some(a)) => a,
            Ok(None) => {
                self.drive(now);
                return;
            }
            Err(e) => RemotingCommand::response_to(
                &cmd,
                response::CONTROLLER_INVALID_REQUEST,
                Some(e.to_string()),
            ),
        };
        self.answer(conn, &cmd, answer);
        self.drive(now);
    }

    /// A persist finished (answers `Output::Persist`).
    pub fn on_persisted(&mut self, token: u64, result: Result<(), String>, now: u64) {
        if let Err(e) = result {
            tracing::error!(error = %e, "the controller's raft log could not be written: stopping");
            self.failed = Some(e);
            self.unpersisted.clear();
            for (_, p) in std::mem::take(&mut self.pending) {
                let answer = RemotingCommand::response_to(
                    &p.request,
                    response::SYSTEM_ERROR,
                    Some("controller stopped: its disk failed".into()),
                );
                self.answer(p.conn, &p.request, answer);
            }
            return;
        }
        if let Some(u) = self.unpersisted.iter_mut().find(|u| u.token == Some(token)) {
            u.done = true;
        }
        self.release_persisted();
        self.drive(now);
    }

    fn release_persisted(&mut self) {
        while self.unpersisted.front().is_some_and(|u| u.done) {
            let u = self.unpersisted.pop_front().expect("checked");
            self.raw.on_persist_ready(u.number);
            for m in u.messages {
                self.send_raft(m);
            }
        }
    }

    fn on_raft_message(&mut self, cmd: &RemotingCommand, now: u64) {
        let Some(m) = raft_store::decode_message(&cmd.body) else {
            tracing::warn!(bytes = cmd.body.len(), "a malformed raft message");
            return;
        };
        if m.to != self.config.id || self.config.addr_of(m.from).is_none() {
            tracing::warn!(to = m.to, from = m.from, "a raft message for someone else");
            return;
        }
        if let Err(e) = self.raw.step(m) {
            tracing::debug!(error = %e, "raft refused a message");
        }
        self.drive(now);
    }

    fn send_raft(&mut self, m: Message) {
        let Some(addr) = self.config.addr_of(m.to) else {
            return;
        };
        let mut cmd = RemotingCommand::request(request::CONTROLLER_RAFT_MESSAGE, 0)
            .with_body(raft_store::encode_message(&m));
        cmd.flag |= crate::remoting::command::FLAG_ONEWAY;
        self.outputs.push_back(Output::SendTo {
            addr: addr.to_string(),
            cmd,
        });
    }

    /// Handles every `Ready` raft has: sends, persists, applies.
    fn drive(&mut self, now: u64) {
        if self.failed.is_some() {
            return;
        }
        while self.raw.has_ready() {
            let mut rd = self.raw.ready();
            for m in rd.take_messages() {
                self.send_raft(m);
            }
            let mut write = false;
            if !rd.snapshot().is_empty() {
                let snap = rd.snapshot().clone();
                match ReplicaTable::decode(&snap.data) {
                    Ok(table) => {
                        self.table = table;
                        self.applied = snap.get_metadata().index;
                        self.raw.mut_store().apply_snapshot(snap);
                        write = true;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "a snapshot from the leader does not decode");
                    }
                }
            }
            if !rd.entries().is_empty() {
                self.raw.mut_store().append(rd.entries());
                write = true;
            }
            if let Some(hs) = rd.hs() {
                self.raw.mut_store().set_hard_state(hs.clone());
                write = true;
            }
            let committed = rd.take_committed_entries();
            let messages = rd.take_persisted_messages();
            let number = rd.number();
            let token = write.then(|| {
                let t = self.next_token;
                self.next_token += 1;
                t
            });
            if let Some(token) = token {
                self.outputs.push_back(Output::Persist {
                    token,
                    files: vec![(
                        RAFT_LOG_FILE.to_string(),
                        Bytes::from(self.raw.store().encode()),
                    )],
                });
            }
            self.unpersisted.push_back(Unpersisted {
                number,
                token,
                done: token.is_none(),
                messages,
            });
            self.apply_entries(committed, now);
            self.raw.advance_append_async(rd);
            self.release_persisted();
            self.raw.advance_apply_to(self.applied);
            self.compact();
        }
        self.leadership_changed(now);
    }

    fn compact(&mut self) {
        if self.raw.store().len() > COMPACT_AFTER {
            let data = self.table.encode();
            self.raw.mut_store().compact(self.applied, data);
        }
    }

    fn leadership_changed(&mut self, now: u64) {
        let leading = self.is_leader();
        if leading == self.leading {
            return;
        }
        self.leading = leading;
        self.elections.clear();
        self.live.clear();
        if leading {
            tracing::info!(id = self.config.id, term = self.term(), "controller leads");
            // Every registered broker gets a whole timeout to be heard from.
            for (group, g) in self.table.groups() {
                for id in g.brokers.keys() {
                    self.live.insert(
                        (group.clone(), *id),
                        Live {
                            last_heard: now,
                            log_end: 0,
                            reported_at: None,
                        },
                    );
                }
            }
        } else {
            for (_, p) in std::mem::take(&mut self.pending) {
                let answer = self.not_leader(&p.request);
                self.answer(p.conn, &p.request, answer);
            }
        }
    }

    fn apply_entries(&mut self, entries: Vec<Entry>, now: u64) {
        for e in entries {
            if e.index <= self.applied {
                continue;
            }
            self.applied = e.index;
            if e.get_entry_type() != EntryType::EntryNormal || e.data.is_empty() {
                continue; // a new leader's empty entry
            }
            let proposal = (e.context.len() == 8)
                .then(|| u64::from_le_bytes(e.context[..8].try_into().expect("8 bytes")));
            let outcome = match serde_json::from_slice::<ReplicaCommand>(&e.data) {
                Ok(cmd) => {
                    let group = cmd.group().to_string();
                    let r = self.table.apply(&cmd);
                    match &r {
                        Ok(()) => tracing::info!(?cmd, "controller applied"),
                        Err(refusal) => {
                            tracing::info!(?cmd, reason = %refusal.reason, "controller refused")
                        }
                    }
                    if let ReplicaCommand::ElectMaster { .. } = cmd {
                        self.elections.remove(&group);
                    }
                    if let ReplicaCommand::Register { group, id, .. } = &cmd
                        && self.leading
                    {
                        self.live.entry((group.clone(), *id)).or_insert(Live {
                            last_heard: now,
                            log_end: 0,
                            reported_at: None,
                        });
                    }
                    Some((group, r))
                }
                Err(err) => {
                    tracing::error!(error = %err, index = e.index, "an undecodable controller entry");
                    None
                }
            };
            if let Some(p) = proposal.and_then(|id| self.pending.remove(&id)) {
                let answer = match outcome {
                    Some((group, Ok(()))) => self.replica_info(&p.request, &group, p.broker),
                    Some((_, Err(refusal))) => {
                        RemotingCommand::response_to(&p.request, refusal.code, Some(refusal.reason))
                    }
                    None => RemotingCommand::response_to(
                        &p.request,
                        response::SYSTEM_ERROR,
                        Some("undecodable entry".into()),
                    ),
                };
                self.answer(p.conn, &p.request, answer);
            }
        }
    }

    fn answer(&mut self, conn: ConnId, request: &RemotingCommand, answer: RemotingCommand) {
        if !request.is_oneway() {
            self.outputs.push_back(Output::Send { conn, cmd: answer });
        }
    }

    fn not_leader(&self, request: &RemotingCommand) -> RemotingCommand {
        let leader = self
            .leader_id()
            .and_then(|id| self.config.addr_of(id))
            .unwrap_or("");
        RemotingCommand::response_to(
            request,
            response::CONTROLLER_NOT_LEADER,
            Some("not the controller leader".into()),
        )
        .with_ext("leaderAddress", leader)
    }

    /// A group's replica info, as answered to brokers.
    fn replica_info(
        &self,
        request: &RemotingCommand,
        group: &str,
        broker: Option<u64>,
    ) -> RemotingCommand {
        let mut a = RemotingCommand::response_to(request, response::SUCCESS, None);
        let empty = GroupReplicas::default();
        let g = self.table.group(group).unwrap_or(&empty);
        let master = g.master_addr();
        a = a
            .with_ext("masterBrokerId", g.master.map(|m| m as i64).unwrap_or(-1))
            .with_ext(
                "masterAddress",
                master.map(|m| m.addr.as_str()).unwrap_or(""),
            )
            .with_ext(
                "masterHaAddress",
                master.map(|m| m.ha_addr.as_str()).unwrap_or(""),
            )
            .with_ext("masterEpoch", g.master_epoch)
            .with_ext("syncStateSetEpoch", g.sync_state_set_epoch)
            .with_ext("syncStateSet", join_ids(&g.sync_state_set));
        if let Some(b) = broker {
            a = a.with_ext("brokerId", b);
        }
        a
    }

    /// Proposes `cmd`; `waiter` is answered once it is applied. Returns the answer at once
    /// when it cannot be proposed (too many waiting, or raft dropped it: not the leader).
    fn propose(&mut self, cmd: ReplicaCommand, waiter: Option<Pending>) -> Option<RemotingCommand> {
        if let Some(w) = &waiter
            && self.pending.len() >= self.config.max_pending
        {
            return Some(RemotingCommand::response_to(
                &w.request,
                response::SYSTEM_BUSY,
                Some(format!(
                    "at most {} controller requests in flight",
                    self.config.max_pending
                )),
            ));
        }
        let id = self.next_proposal;
        self.next_proposal += 1;
        let data = serde_json::to_vec(&cmd).expect("commands serialize");
        match self.raw.propose(id.to_le_bytes().to_vec(), data) {
            Ok(()) => {
                if let Some(w) = waiter {
                    self.pending.insert(id, w);
                }
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "a proposal was dropped");
                waiter.map(|w| self.not_leader(&w.request))
            }
        }
    }

    fn serve(
        &mut self,
        conn: ConnId,
        cmd: &RemotingCommand,
        now: u64,
    ) -> Result<Option<RemotingCommand>, crate::remoting::FieldError> {
        let code = cmd.code;
        if !matches!(
            code,
            request::CONTROLLER_REGISTER_BROKER
                | request::BROKER_HEARTBEAT
                | request::CONTROLLER_ALTER_SYNC_STATE_SET
                | request::CONTROLLER_ELECT_MASTER
                | request::CONTROLLER_GET_REPLICA_INFO
        ) {
            return Ok(Some(RemotingCommand::response_to(
                cmd,
                response::REQUEST_CODE_NOT_SUPPORTED,
                Some(format!(
                    " request type {code} not supported by a controller"
                )),
            )));
        }
        if !self.is_leader() {
            return Ok(Some(self.not_leader(cmd)));
        }
        let group: String = cmd.ext_req("brokerName")?;
        match code {
            request::CONTROLLER_REGISTER_BROKER | request::BROKER_HEARTBEAT => {
                let id: u64 = cmd.ext_req("brokerId")?;
                let log_end: u64 = cmd.ext_opt("maxOffset")?.unwrap_or(0);
                let key = (group.clone(), id);
                let restart = cmd.ext_bool("restart")?.unwrap_or(false);
                if restart {
                    self.master_restarted(&group, id, now);
                }
                let known = self
                    .table
                    .group(&group)
                    .and_then(|g| g.brokers.get(&id))
                    .cloned();
                if code == request::BROKER_HEARTBEAT {
                    if known.is_none() {
                        return Ok(Some(RemotingCommand::response_to(
                            cmd,
                            response::CONTROLLER_BROKER_METADATA_NOT_EXIST,
                            Some("register first".into()),
                        )));
                    }
                    self.heard(key, log_end, now);
                    return Ok(Some(self.replica_info(cmd, &group, Some(id))));
                }
                let addr = ReplicaAddr {
                    addr: cmd.ext_req("brokerAddr")?,
                    ha_addr: cmd.ext_opt("haServerAddr")?.unwrap_or_default(),
                };
                let cluster: String = cmd.ext_opt("clusterName")?.unwrap_or_default();
                self.heard(key, log_end, now);
                if known.as_ref() == Some(&addr)
                    && self
                        .table
                        .group(&group)
                        .is_some_and(|g| g.cluster == cluster)
                {
                    return Ok(Some(self.replica_info(cmd, &group, Some(id))));
                }
                let register = ReplicaCommand::Register {
                    group: group.clone(),
                    cluster,
                    id,
                    addr,
                };
                if let Err(r) = self.table.check(&register) {
                    return Ok(Some(RemotingCommand::response_to(
                        cmd,
                        r.code,
                        Some(r.reason),
                    )));
                }
                let waiter = Pending {
                    conn,
                    request: cmd.clone(),
                    broker: Some(id),
                };
                Ok(self.propose(register, Some(waiter)))
            }
            request::CONTROLLER_ALTER_SYNC_STATE_SET => {
                let master: u64 = cmd.ext_req("masterBrokerId")?;
                let master_epoch: u64 = cmd.ext_req("masterEpoch")?;
                let expect_set_epoch: u64 = cmd.ext_req("syncStateSetEpoch")?;
                let set = parse_ids(cmd.ext("syncStateSet").unwrap_or(""))?;
                let alter = ReplicaCommand::AlterSyncStateSet {
                    group: group.clone(),
                    master,
                    master_epoch,
                    expect_set_epoch,
                    set,
                };
                if let Err(r) = self.table.check(&alter) {
                    return Ok(Some(RemotingCommand::response_to(
                        cmd,
                        r.code,
                        Some(r.reason),
                    )));
                }
                let waiter = Pending {
                    conn,
                    request: cmd.clone(),
                    broker: Some(master),
                };
                Ok(self.propose(alter, Some(waiter)))
            }
            request::CONTROLLER_ELECT_MASTER => {
                let id: u64 = cmd.ext_req("brokerId")?;
                let Some(g) = self.table.group(&group) else {
                    return Ok(Some(RemotingCommand::response_to(
                        cmd,
                        response::CONTROLLER_BROKER_METADATA_NOT_EXIST,
                        Some(format!("no group {group}")),
                    )));
                };
                if !self.alive(&group, id, now) {
                    return Ok(Some(RemotingCommand::response_to(
                        cmd,
                        response::CONTROLLER_BROKER_NOT_ALIVE,
                        Some(format!("broker {id} of {group} is not alive")),
                    )));
                }
                let elect = ReplicaCommand::ElectMaster {
                    group: group.clone(),
                    expect_epoch: g.master_epoch,
                    master: id,
                };
                if let Err(r) = self.table.check(&elect) {
                    return Ok(Some(RemotingCommand::response_to(
                        cmd,
                        r.code,
                        Some(r.reason),
                    )));
                }
                let waiter = Pending {
                    conn,
                    request: cmd.clone(),
                    broker: Some(id),
                };
                Ok(self.propose(elect, Some(waiter)))
            }
            _ => {
                if self.table.group(&group).is_none() {
                    return Ok(Some(RemotingCommand::response_to(
                        cmd,
                        response::CONTROLLER_BROKER_METADATA_NOT_EXIST,
                        Some(format!("no group {group}")),
                    )));
                }
                Ok(Some(self.replica_info(cmd, &group, None)))
            }
        }
    }

    /// A replica says it restarted (and leads nothing yet): if the controllers still take it
    /// for the master, a new epoch, elected among everyone's fresh log ends, decides whose
    /// log goes on (it may have lost its log's tail, and never leads an epoch twice).
    fn master_restarted(&mut self, group: &str, id: u64, now: u64) {
        if self.table.group(group).is_none_or(|g| g.master != Some(id)) {
            return;
        }
        match self.elections.get(group) {
            // One election at a time; a lost master back in the race joins it.
            Some(e) if e.exclude != Some(id) || e.proposed_at.is_some() => return,
            _ => {}
        }
        tracing::info!(%group, id, "the master restarted: electing again");
        self.elections.insert(
            group.to_string(),
            Election {
                started: now,
                exclude: None,
                proposed_at: None,
            },
        );
    }

    fn heard(&mut self, key: (String, u64), log_end: u64, now: u64) {
        let live = self.live.entry(key).or_insert(Live {
            last_heard: now,
            log_end,
            reported_at: None,
        });
        live.last_heard = now;
        live.log_end = log_end;
        live.reported_at = Some(now);
    }

    fn alive(&self, group: &str, id: u64, now: u64) -> bool {
        self.live
            .get(&(group.to_string(), id))
            .is_some_and(|l| now.saturating_sub(l.last_heard) <= self.config.broker_timeout_ms)
    }

    /// The leader's periodic judgement: groups whose master is lost (or missing) elect.
    fn judge_groups(&mut self, now: u64) {
        let mut proposals = Vec::new();
        let groups: Vec<(String, GroupReplicas)> = self
            .table
            .groups()
            .map(|(n, g)| (n.clone(), g.clone()))
            .collect();
        for (name, g) in groups {
            let master_alive = g.master.is_some_and(|m| self.alive(&name, m, now));
            if let Some(e) = self.elections.get(&name)
                && e.proposed_at.is_none()
                && e.exclude.is_some()
                && e.exclude == g.master
                && master_alive
            {
                // The master was only out of reach for a while: it leads on.
                tracing::info!(group = %name, "the master is back before an election");
                self.elections.remove(&name);
                continue;
            }
            if !self.elections.contains_key(&name) {
                let lost = match g.master {
                    Some(m) if !master_alive => Some(Some(m)),
                    None if g.brokers.keys().any(|&id| self.alive(&name, id, now)) => Some(None),
                    _ => None,
                };
                let Some(exclude) = lost else { continue };
                tracing::warn!(group = %name, master = ?g.master, "the group has no live master: electing");
                self.elections.insert(
                    name.clone(),
                    Election {
                        started: now,
                        exclude,
                        proposed_at: None,
                    },
                );
            }
            let e = self.elections[&name];
            if let Some(at) = e.proposed_at
                && now.saturating_sub(at) < self.config.broker_timeout_ms
            {
                continue; // the proposal may still commit
            }
            // Candidates: live, electable, not the lost master.
            let candidates: Vec<(u64, Live)> = g
                .brokers
                .keys()
                .filter(|&&id| Some(id) != e.exclude && g.electable(id))
                .filter(|&&id| self.alive(&name, id, now))
                .map(|&id| (id, self.live[&(name.clone(), id)]))
                .collect();
            let fresh: Vec<(u64, Live)> = candidates
                .iter()
                .copied()
                // Strictly after: a report of the very instant may predate the loss.
                .filter(|(_, l)| l.reported_at.is_some_and(|t| t > e.started))
                .collect();
            let everyone_reported = fresh.len() == candidates.len();
            let waited_enough = now.saturating_sub(e.started) >= self.config.broker_timeout_ms;
            if fresh.is_empty() || (!everyone_reported && !waited_enough) {
                continue;
            }
            // The longest log wins; the lowest id among equals.
            let (winner, _) = fresh
                .iter()
                .max_by(|(a, la), (b, lb)| la.log_end.cmp(&lb.log_end).then(b.cmp(a)))
                .copied()
                .expect("not empty");
            if let Some(el) = self.elections.get_mut(&name) {
                el.proposed_at = Some(now);
            }
            tracing::warn!(group = %name, winner, epoch = g.master_epoch + 1, "electing a master");
            proposals.push(ReplicaCommand::ElectMaster {
                group: name.clone(),
                expect_epoch: g.master_epoch,
                master: winner,
            });
        }
        for p in proposals {
            let _ = self.propose(p, None);
        }
    }
}

fn join_ids(ids: &BTreeSet<u64>) -> String {
    ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

/// "1,2,3" (spaces allowed; empty: none).
pub fn parse_ids(s: &str) -> Result<BTreeSet<u64>, crate::remoting::FieldError> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<u64>()
                .map_err(|_| crate::remoting::FieldError::Invalid {
                    field: "syncStateSet",
                    value: s.chars().take(64).collect(),
                    ty: "comma-separated broker ids",
                })
        })
        .collect()
}

impl crate::machine::Machine for Controller {
    fn on_connect(&mut self, conn: ConnId, _peer: rockfish_store::record::HostAddr, now: u64) {
        Controller::on_connect(self, conn, now)
    }
    fn on_disconnect(&mut self, conn: ConnId, now: u64) {
        Controller::on_disconnect(self, conn, now)
    }
    fn on_command(&mut self, conn: ConnId, cmd: RemotingCommand, _received_at: u64, now: u64) {
        Controller::on_command(self, conn, cmd, now)
    }
    fn on_timeout(&mut self, now: u64) {
        Controller::on_timeout(self, now)
    }
    fn on_persisted(&mut self, token: u64, result: Result<(), String>, now: u64) {
        Controller::on_persisted(self, token, result, now)
    }
    fn poll_output(&mut self) -> Option<Output> {
        Controller::poll_output(self)
    }
    fn poll_timeout(&self) -> Option<u64> {
        Controller::poll_timeout(self)
    }
}

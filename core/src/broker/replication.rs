//! The broker's part in its group: a master streams its commit log to slaves over HA
//! streams (`crate::ha`) and, as SYNC_MASTER, answers a send once a slave holds it durably; a
//! slave follows its master's log, serves reads, and takes its master's configs (topics,
//! consumer offsets, delay offsets, subscription groups) every [`SLAVE_SYNC_INTERVAL_MS`], as
//! Apache's SlaveSynchronize.
//!
//! A slave's master is learned from the name servers' answers to its registration
//! (masterAddr, haServerAddr), unless configured (haMasterAddress). A slave connects only with
//! its whole log durable: its first report (where the stream resumes) is then a durable
//! offset, and every later report says what its flushes made durable.

use std::collections::{BTreeMap, VecDeque};

use rockfish_store::config::{ConsumerOffsetTable, DelayOffsetTable, SubscriptionGroupTable};
use rockfish_store::record::HostAddr;
use rockfish_store::{Disk, config};

use super::flush::SyncWaiter;
use super::timers::Timer;
use super::{Broker, BrokerRole};
use crate::ha::{HaMaster, HaSlave};
use crate::machine::{ConnId, Output};
use crate::protocol::TopicConfigSerializeWrapper;
use crate::protocol::lenient::decode_body;
use crate::remoting::RemotingCommand;
use crate::remoting::codes::{request, response};

/// A slave asks its master for its configs this often (Apache: 10 s).
pub const SLAVE_SYNC_INTERVAL_MS: u64 = 10_000;
/// A slave whose stream closed dials again after this long.
pub const RECONNECT_MS: u64 = 1_000;

/// What a slave asked its master for, by opaque.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SyncKind {
    Topics,
    Offsets,
    DelayOffsets,
    Groups,
}

/// A slave's link to its master.
#[derive(Debug, Default)]
pub(super) struct SlaveLink {
    ha: HaSlave,
    /// The stream to the master's HA port, once dialed.
    pub conn: Option<ConnId>,
    /// The stream's address when it was dialed.
    dialed: Option<String>,
    /// The master's remoting address (for config syncs) and HA address.
    pub master_addr: Option<String>,
    pub master_ha_addr: Option<String>,
    /// Not before then is the stream dialed again.
    pub connect_at: u64,
    sync_pending: BTreeMap<i32, SyncKind>,
}

/// The replication state of a broker, whatever its role.
pub(super) struct Replication {
    pub role: BrokerRole,
    pub(super) master: HaMaster,
    /// SYNC_MASTER answers waiting for a slave to hold their data, in append order.
    pub(super) waiters: VecDeque<SyncWaiter>,
    /// What consumers of this master could see: visibility never goes back below it when a
    /// slave returns or joins (a consumer that read it must not be sent back).
    pub(super) visible_floor: u64,
    /// Controller mode, a replica that is not master: the group's confirmed offset as last
    /// heard from a master (or as this replica confirmed it while it led). Consumers are
    /// served no further: everything below it is held by the replicas a failover elects
    /// from, so nothing served here can be cut from the group.
    pub(super) confirmed: u64,
    pub(super) slave: SlaveLink,
}

impl Replication {
    /// `log_end`: the store's end when the broker started (what its HA master can vouch for).
    pub(super) fn new(
        role: BrokerRole,
        ha_master_addr: Option<String>,
        log_end: u64,
    ) -> Replication {
        Replication {
            role,
            master: HaMaster::new(log_end),
            visible_floor: 0,
            confirmed: 0,
            waiters: VecDeque::new(),
            slave: SlaveLink {
                master_ha_addr: ha_master_addr,
                ..SlaveLink::default()
            },
        }
    }

    pub(super) fn master_acked_by(&self, id: u64) -> Option<u64> {
        self.master.acked_by(id)
    }
    pub(super) fn master_slave_ids(&self) -> std::collections::BTreeSet<u64> {
        self.master.slave_ids()
    }
    pub(super) fn master_conns(&self) -> Vec<ConnId> {
        self.master.conns()
    }

    /// The earliest moment replication has something to do.
    pub(super) fn next_deadline(&self) -> Option<u64> {
        let w = self.waiters.front().map(|w| w.deadline);
        let ha = match self.role {
            BrokerRole::Slave => match self.slave.conn {
                Some(_) => Some(self.slave.ha.next_deadline()),
                None if self.slave.connect_at == u64::MAX => None,
                None => Some(self.slave.connect_at),
            },
            _ => self.master.next_deadline(),
        };
        [w, ha].into_iter().flatten().min()
    }
}

impl<D: Disk> Broker<D> {
    pub fn role(&self) -> BrokerRole {
        self.repl.role
    }

    /// Slaves connected and reported (a master), for tests and admin.
    pub fn connected_slaves(&self) -> usize {
        self.repl.master.slaves()
    }

    /// What some slave holds durably, as far as this master sent it.
    pub fn slave_acked(&self) -> Option<u64> {
        self.repl.master.acked()
    }

    /// Whether replication bounds what consumers see: SYNC_MASTER, and every replica in
    /// controller mode (a master: its SyncStateSet; a slave: the confirmed offset).
    pub(super) fn replication_bounds_visibility(&self) -> bool {
        self.repl.role == BrokerRole::SyncMaster || self.controller_mode()
    }

    /// What the slaves a send waits for hold (controller mode: every other SyncStateSet
    /// member; else the furthest slave).
    fn replica_acked(&self) -> u64 {
        if self.controller_mode() {
            self.sync_peers_acked().unwrap_or(0)
        } else {
            self.repl.master.acked().unwrap_or(0)
        }
    }

    /// Slaves close enough to count for SYNC_MASTER (controller mode: the SyncStateSet's
    /// other members).
    fn in_sync_slaves(&self) -> usize {
        if self.controller_mode() {
            let me = self.config.broker_id;
            return self
                .ctl
                .sync_state_set
                .iter()
                .filter(|&&id| id != me)
                .count();
        }
        let end = self.store.write_pos();
        self.repl
            .master
            .in_sync(end.saturating_sub(self.config.ha_max_gap_not_in_sync))
    }

    /// Under SYNC_MASTER with a slave in sync, consumers see only what a slave holds: a
    /// message a consumer saw never vanishes with the master. In controller mode a slave
    /// shows only what its master confirmed. `u64::MAX` otherwise.
    pub(super) fn replicated_bound(&self) -> u64 {
        if self.controller_mode() {
            if !self.repl.role.is_master() {
                // A deliberately broken replica (for the simulator's checkers) serves all it
                // holds.
                if crate::buggify::bug("broker.slave-serves-unconfirmed") {
                    return u64::MAX;
                }
                return self.repl.confirmed;
            }
            // What every other member (and a slave being let in) holds.
            let peers = self.sync_peers();
            return match peers
                .iter()
                .map(|&id| self.repl.master.acked_by(id).unwrap_or(0))
                .min()
            {
                Some(held) => held.max(self.repl.visible_floor),
                None => u64::MAX,
            };
        }
        if self.repl.role == BrokerRole::SyncMaster && self.in_sync_slaves() > 0 {
            self.repl
                .master
                .acked()
                .unwrap_or(0)
                .max(self.repl.visible_floor)
        } else {
            u64::MAX
        }
    }

    /// A SYNC_MASTER answer (its data stored, and durable if SYNC_FLUSH) waits for a slave:
    /// answered at once if one holds it, refused SLAVE_NOT_AVAILABLE (stored on the master
    /// alone) if no slave is in sync, else held until one reports it or the timeout
    /// (FLUSH_SLAVE_TIMEOUT).
    pub(super) fn await_replica(&mut self, mut w: SyncWaiter, now: u64) {
        let acked = self.replica_acked();
        // A deliberately broken master (for the simulator's checkers) acks without waiting.
        if acked >= w.end || crate::buggify::bug("broker.ha-ack-before-slave") {
            self.outputs.push_back(Output::Send {
                conn: w.conn,
                cmd: w.response,
            });
            return;
        }
        if self.in_sync_slaves() == 0 {
            w.response.code = response::SLAVE_NOT_AVAILABLE;
            w.response.remark = Some("no slave in sync: stored on the master only".into());
            self.outputs.push_back(Output::Send {
                conn: w.conn,
                cmd: w.response,
            });
            return;
        }
        w.deadline = now + self.config.sync_flush_timeout_ms;
        w.timeout_code = response::FLUSH_SLAVE_TIMEOUT;
        self.repl.waiters.push_back(w);
    }

    /// Answers the SYNC_MASTER waiters a slave now holds, and those out of time.
    pub(super) fn release_replica_waiters(&mut self, now: u64) {
        let acked = self.replica_acked();
        let no_slave = if self.controller_mode() {
            self.in_sync_slaves() == 0
        } else {
            self.repl.master.slaves() == 0
        };
        while let Some(w) = self.repl.waiters.front() {
            let code = if w.end <= acked {
                response::SUCCESS
            } else if w.deadline <= now {
                w.timeout_code
            } else if no_slave {
                response::SLAVE_NOT_AVAILABLE
            } else {
                break;
            };
            let mut w = self.repl.waiters.pop_front().expect("checked");
            if code != response::SUCCESS {
                w.response.code = code;
                w.response.remark = Some(if code == response::SLAVE_NOT_AVAILABLE {
                    "the slave went away: stored on the master only".into()
                } else {
                    "waiting for the slave timed out: stored on the master".into()
                });
            }
            self.outputs.push_back(Output::Send {
                conn: w.conn,
                cmd: w.response,
            });
        }
    }

    /// After an input: a master sends its slaves what they lack.
    pub(super) fn pump_replication(&mut self, now: u64) {
        if self.repl.role.is_master() && self.replication_bounds_visibility() {
            // What consumers see never goes back: a slave that returns or joins must not
            // hide it.
            let bound = self.replicated_bound().min(self.store.write_pos());
            self.repl.visible_floor = self.repl.visible_floor.max(bound);
        }
        if !self.repl.role.is_master() || self.repl.master.slaves() == 0 {
            return;
        }
        let confirmed = self.visible_log_end();
        for (conn, transfer) in self.repl.master.poll_transfers(&self.store, confirmed, now) {
            match transfer {
                Ok(bytes) => self.outputs.push_back(Output::SendBytes { conn, bytes }),
                Err(e) => {
                    tracing::error!(conn = conn.0, error = %e, "closing a slave's stream");
                    self.repl.master.on_disconnect(conn);
                    self.outputs.push_back(Output::Close {
                        conn,
                        reason: e.to_string(),
                    });
                }
            }
        }
    }

    pub fn on_stream_accepted(&mut self, conn: ConnId, peer: HostAddr, now: u64) {
        if !self.repl.role.is_master() {
            self.outputs.push_back(Output::Close {
                conn,
                reason: "a slave serves no HA stream".into(),
            });
            return;
        }
        if self.repl.master.streams() >= crate::ha::MAX_SLAVE_STREAMS {
            tracing::warn!(conn = conn.0, ?peer, "HA stream refused: too many open");
            self.outputs.push_back(Output::Close {
                conn,
                reason: format!(
                    "at most {} HA streams (slaves) at once",
                    crate::ha::MAX_SLAVE_STREAMS
                ),
            });
            return;
        }
        tracing::info!(conn = conn.0, ?peer, "a slave connected");
        self.repl.master.on_connect(conn, now);
        self.after_input(now);
    }

    pub fn on_stream_opened(&mut self, addr: &str, conn: ConnId, now: u64) {
        let link = &mut self.repl.slave;
        if self.repl.role != BrokerRole::Slave || link.conn.is_some() || link.dialed.is_none() {
            self.outputs.push_back(Output::Close {
                conn,
                reason: "no stream was asked for".into(),
            });
            return;
        }
        tracing::info!(master = addr, conn = conn.0, "following the master");
        link.conn = Some(conn);
        if self.ctl.enabled {
            let hello = crate::ha::encode_hello(self.ctl.epoch, self.config.broker_id);
            self.outputs.push_back(Output::SendBytes {
                conn,
                bytes: bytes::Bytes::copy_from_slice(&hello),
            });
        }
        let link = &mut self.repl.slave;
        let report = link
            .ha
            .on_connected(self.store.write_pos(), self.ctl.enabled, now);
        self.outputs.push_back(Output::SendBytes {
            conn,
            bytes: bytes::Bytes::copy_from_slice(&report),
        });
    }

    pub fn on_stream_bytes(&mut self, conn: ConnId, bytes: bytes::Bytes, now: u64) {
        if self.repl.role.is_master() {
            let end = self.store.write_pos();
            let store = &self.store;
            let is_boundary = |o: u64| store.is_unit_start(o);
            if let Err(e) = self
                .repl
                .master
                .on_bytes(conn, &bytes, end, is_boundary, now)
            {
                tracing::warn!(conn = conn.0, error = %e, "closing a slave's stream");
                self.repl.master.on_disconnect(conn);
                self.outputs.push_back(Output::Close {
                    conn,
                    reason: e.to_string(),
                });
            }
            self.release_replica_waiters(now);
            if self.replication_bounds_visibility() {
                self.wake_visible_pulls(now);
            }
        } else if self.repl.slave.conn == Some(conn) {
            let result = self.repl.slave.ha.on_bytes(&mut self.store, &bytes, now);
            let confirmed = self.repl.slave.ha.confirmed();
            let confirm_moved = confirmed > self.repl.confirmed;
            self.repl.confirmed = self.repl.confirmed.max(confirmed);
            match result {
                Ok(true) => {
                    self.request_flush(now);
                    self.wake_visible_pulls(now);
                }
                Ok(false) if confirm_moved => self.wake_visible_pulls(now),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "closing the stream from the master");
                    self.drop_master_stream(now, e.to_string());
                }
            }
        }
        self.after_input(now);
    }

    /// A slave's stream closed (or is closed now, with `reason`): dialed again soon.
    pub(super) fn drop_master_stream(&mut self, now: u64, reason: String) {
        if let Some(conn) = self.repl.slave.conn.take() {
            self.outputs.push_back(Output::Close { conn, reason });
        }
        self.repl.slave.dialed = None;
        self.repl.slave.connect_at = now + RECONNECT_MS;
    }

    /// A connection closed: a slave's stream (master) or the stream to the master (slave).
    pub(super) fn replication_disconnect(&mut self, conn: ConnId, now: u64) {
        self.repl.master.on_disconnect(conn);
        if self.repl.slave.conn == Some(conn) {
            self.repl.slave.conn = None;
            self.repl.slave.dialed = None;
            self.repl.slave.connect_at = now + RECONNECT_MS;
        }
        if self.repl.role.is_master() {
            self.release_replica_waiters(now);
            if self.replication_bounds_visibility() {
                // No slave in sync any more: what the master holds becomes visible.
                self.wake_visible_pulls(now);
            }
        }
    }

    /// A slave's log became more durable: its master hears it.
    pub(super) fn replication_flushed(&mut self, now: u64) {
        if self.repl.role != BrokerRole::Slave {
            return;
        }
        let durable = self.store.flushed();
        if let Some(conn) = self.repl.slave.conn
            && let Some(report) = self.repl.slave.ha.report(durable, now)
        {
            self.outputs.push_back(Output::SendBytes {
                conn,
                bytes: bytes::Bytes::copy_from_slice(&report),
            });
        }
        self.maybe_dial_master(now);
    }

    /// A slave dials its master once it knows where it is, with its whole log durable (the
    /// resume point it reports first must be).
    fn maybe_dial_master(&mut self, now: u64) {
        let link = &self.repl.slave;
        // One dial at a time: `dialed` is set until the stream closes.
        if self.repl.role != BrokerRole::Slave
            || link.conn.is_some()
            || link.dialed.is_some()
            || now < link.connect_at
        {
            return;
        }
        let Some(addr) = link.master_ha_addr.clone() else {
            // Nowhere to dial until a registration names the master (`learn_master`).
            self.repl.slave.connect_at = u64::MAX;
            return;
        };
        if !self.ready_to_dial(now) {
            // Controller mode: the log is checked against the master's epochs first.
            self.repl.slave.connect_at = now + RECONNECT_MS;
            return;
        }
        if self.store.flushed() < self.store.write_pos() {
            // Dialed once the log is durable (the flush's end tries again), or in a while.
            self.request_flush(now);
            self.repl.slave.connect_at = now + RECONNECT_MS;
            return;
        }
        self.repl.slave.dialed = Some(addr.clone());
        self.outputs.push_back(Output::OpenStream { addr });
    }

    /// Replication's periodic work: heartbeats and expiry (master), reports, silence and
    /// dialing (slave), config syncs (slave).
    pub(super) fn replication_timeout(&mut self, now: u64) {
        match self.repl.role {
            BrokerRole::Slave => {
                if let Some(conn) = self.repl.slave.conn {
                    match self.repl.slave.ha.on_timeout(now) {
                        Ok(Some(report)) => self.outputs.push_back(Output::SendBytes {
                            conn,
                            bytes: bytes::Bytes::copy_from_slice(&report),
                        }),
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "the master went silent");
                            self.drop_master_stream(now, e.to_string());
                        }
                    }
                }
                self.maybe_dial_master(now);
                if self.timers.due(Timer::SlaveSync, now) {
                    self.timers
                        .set(Timer::SlaveSync, now + SLAVE_SYNC_INTERVAL_MS);
                    self.sync_from_master();
                }
            }
            _ => {
                for conn in self.repl.master.expired(now) {
                    tracing::warn!(conn = conn.0, "a slave went silent; closing its stream");
                    self.repl.master.on_disconnect(conn);
                    self.outputs.push_back(Output::Close {
                        conn,
                        reason: "silent slave".into(),
                    });
                    if self.replication_bounds_visibility() {
                        self.wake_visible_pulls(now);
                    }
                }
                self.release_replica_waiters(now);
            }
        }
    }

    /// A slave asked for a topic it holds queues of but has no config for yet (the master
    /// created it since the last config sync): it serves what it holds, as a topic with as
    /// many queues as its log shows (the next sync brings the master's config).
    pub(super) fn adopt_replicated_topic(&mut self, topic: &str) {
        if self.repl.role != BrokerRole::Slave {
            return;
        }
        let queues = self
            .store
            .queue_ids()
            .filter(|(t, _)| *t == topic)
            .map(|(_, q)| q.saturating_add(1))
            .max();
        if let Some(n) = queues {
            let n = n.max(self.config.default_topic_queues);
            tracing::info!(
                topic,
                queues = n,
                "serving a replicated topic before its config sync"
            );
            self.topics.insert(
                topic.to_string(),
                rockfish_store::config::TopicConfig::new(topic, n),
            );
        }
    }

    /// A registration's answer named this slave's master (masterAddr, haServerAddr).
    pub(super) fn learn_master(&mut self, cmd: &RemotingCommand, now: u64) {
        // In controller mode the controller names the master, not the name servers.
        if self.repl.role != BrokerRole::Slave || self.ctl.enabled {
            return;
        }
        let master: Option<String> = cmd
            .ext("masterAddr")
            .filter(|a| !a.is_empty())
            .map(Into::into);
        let ha: Option<String> = cmd
            .ext("haServerAddr")
            .filter(|a| !a.is_empty())
            .map(Into::into);
        let link = &mut self.repl.slave;
        if master.is_some() && link.master_addr != master {
            tracing::info!(master = ?master, "the master's address");
            link.master_addr = master;
            self.timers.set(Timer::SlaveSync, now);
        }
        if self.config.ha_master_addr.is_none() && ha.is_some() && link.master_ha_addr != ha {
            link.master_ha_addr = ha;
            link.connect_at = now;
            if link.conn.is_some() {
                self.drop_master_stream(now, "the master's HA address changed".into());
                self.repl.slave.connect_at = now;
            }
        }
        if self.repl.slave.master_ha_addr.is_none() {
            // The master has not registered yet: ask again soon, not in a register interval.
            self.timers
                .set(Timer::Register, now + super::REGISTER_RETRY_MS);
        }
        self.maybe_dial_master(now);
    }

    /// Asks the master for its configs (SlaveSynchronize).
    fn sync_from_master(&mut self) {
        let Some(addr) = self.repl.slave.master_addr.clone() else {
            return;
        };
        // Answers lost with a connection are asked again next round.
        self.repl.slave.sync_pending.clear();
        for (code, kind) in [
            (request::GET_ALL_TOPIC_CONFIG, SyncKind::Topics),
            (request::GET_ALL_CONSUMER_OFFSET, SyncKind::Offsets),
            (request::GET_ALL_DELAY_OFFSET, SyncKind::DelayOffsets),
            (request::GET_ALL_SUBSCRIPTIONGROUP_CONFIG, SyncKind::Groups),
        ] {
            let opaque = self.next_opaque();
            self.repl.slave.sync_pending.insert(opaque, kind);
            self.outputs.push_back(Output::SendTo {
                addr: addr.clone(),
                cmd: RemotingCommand::request(code, opaque),
            });
        }
    }

    /// A response that may answer a config sync. True if it did.
    pub(super) fn on_sync_answer(&mut self, cmd: &RemotingCommand, now: u64) -> bool {
        let Some(kind) = self.repl.slave.sync_pending.remove(&cmd.opaque) else {
            return false;
        };
        if cmd.code != response::SUCCESS {
            tracing::warn!(?kind, code = cmd.code, "the master refused a config sync");
            return true;
        }
        let bad = |e: serde_json::Error| tracing::warn!(?kind, error = %e, "a config sync's body");
        match kind {
            SyncKind::Topics => match decode_body::<TopicConfigSerializeWrapper>(&cmd.body) {
                Ok(w) => {
                    // The version alone (the table's snapshot copies every topic).
                    let changed = w.data_version != *self.topics.data_version();
                    if changed {
                        let table = config::TopicConfigTable {
                            topic_config_table: w.topic_config_table,
                            data_version: w.data_version,
                        };
                        self.topics = super::topics::Topics::new(table);
                        self.persists.topics_dirty = true;
                        self.write_topics();
                        self.register_all(now);
                    }
                }
                Err(e) => bad(e),
            },
            SyncKind::Offsets => match decode_body::<ConsumerOffsetTable>(&cmd.body) {
                Ok(t) => {
                    // The master's table covers at least the journal this log holds now.
                    self.offsets.sync_mark = Some(
                        self.store
                            .max_offset(super::offsets::OFFSET_JOURNAL_TOPIC, 0),
                    );
                    for (key, queues) in t.offset_table {
                        self.offsets.table.offset_table.insert(key, queues);
                    }
                    self.offsets.dirty = true;
                }
                Err(e) => bad(e),
            },
            SyncKind::DelayOffsets => match decode_body::<DelayOffsetTable>(&cmd.body) {
                Ok(t) => self.schedule.follow(&t, &self.store),
                Err(e) => bad(e),
            },
            SyncKind::Groups => match decode_body::<SubscriptionGroupTable>(&cmd.body) {
                Ok(t) => self.groups.follow(t),
                Err(e) => bad(e),
            },
        }
        true
    }
}

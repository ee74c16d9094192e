//! Durable writes of config files and checkpoints, off the machine's task: the broker emits
//! `Output::Persist` and learns the result from `on_persisted`. One write of each kind is in
//! flight at a time, so files are replaced in the order their contents were decided.

use std::collections::BTreeMap;

use bytes::Bytes;
use rockfish_store::checkpoint::CHECKPOINT_FILE;
use rockfish_store::config;
use rockfish_store::{CreatedSet, Disk, FileId, OffTaskSync, StoreError, SyncWork};

use super::Broker;
use crate::machine::Output;

/// Consume queues a checkpoint syncs one by one (each a cheap msync); past this it is one
/// filesystem sync, and checkpoints space out (see `start_checkpoint`).
pub const CHEAP_CHECKPOINT_QUEUES: usize = 64;
/// How long checkpoints may space out when they would sync many queues: recovery rescans
/// at most this much more of the log...
pub const BULK_CHECKPOINT_INTERVAL_MS: u64 = 30_000;
/// ...and at most this many bytes of it (Apache rescans up to a whole 1 GiB segment).
pub const BULK_CHECKPOINT_BYTES: u64 = 1 << 30;

/// See `Broker::persist_syncs`.
#[derive(Debug, Default)]
pub struct PersistSyncs {
    /// Consume queue entries to write first (staged in memory, see `ConsumeQueue`).
    pub writes: Vec<(FileId, u64, Bytes)>,
    pub ranges: Vec<(FileId, u64, u64)>,
    pub created: CreatedSet,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PersistKind {
    /// A checkpoint at this commit log offset.
    Checkpoint(u64),
    Topics,
    Offsets,
    DelayOffsets,
    Groups,
    Wheel,
    DynamicConfig,
}

impl PersistKind {
    fn same(self, other: PersistKind) -> bool {
        std::mem::discriminant(&self) == std::mem::discriminant(&other)
    }
}

/// Config and checkpoint writes in flight, and when each kind last went out.
pub(super) struct PersistTable {
    in_flight: BTreeMap<u64, PersistKind>,
    next_token: u64,
    /// When the last checkpoint was started.
    pub last_checkpoint_at: u64,
    /// When auto-created topics were last persisted and registered.
    pub topics_persisted_at: Option<u64>,
    /// topics.json changed since the last write was started.
    pub topics_dirty: bool,
}

impl PersistTable {
    pub(super) fn new(now: u64) -> PersistTable {
        PersistTable {
            in_flight: BTreeMap::new(),
            next_token: 0,
            last_checkpoint_at: now,
            topics_persisted_at: None,
            topics_dirty: false,
        }
    }

    pub(super) fn in_flight(&self, kind: PersistKind) -> bool {
        self.in_flight.values().any(|k| k.same(kind))
    }
}

impl<D: Disk> Broker<D> {
    pub(super) fn persist(&mut self, kind: PersistKind, path: &str, data: Vec<u8>) {
        let token = self.persists.next_token;
        self.persists.next_token += 1;
        self.persists.in_flight.insert(token, kind);
        self.outputs.push_back(Output::Persist {
            token,
            files: vec![(path.to_string(), Bytes::from(data))],
        });
    }

    /// Starts a checkpoint at the flushed offset if it moved and none is being written.
    /// With many consume queues written since the last one, it waits up to
    /// `BULK_CHECKPOINT_INTERVAL_MS`, `BULK_CHECKPOINT_BYTES` of log or half the entries the
    /// store may stage: each checkpoint writes back every queue file written since the last
    /// (at 10,000 topics, 40,000 files: ~0.8 CPU-seconds of kernel writeback, measured),
    /// whatever the number of entries, so spacing them out is what bounds that cost.
    pub(super) fn start_checkpoint(&mut self, now: u64) {
        if self.store.stopped().is_some() || self.persists.in_flight(PersistKind::Checkpoint(0)) {
            return;
        }
        let behind = self
            .store
            .flushed()
            .saturating_sub(self.store.checkpointed());
        if now < self.persists.last_checkpoint_at + BULK_CHECKPOINT_INTERVAL_MS
            && behind < BULK_CHECKPOINT_BYTES
            && self.store.staged_entries() < rockfish_store::STAGED_MAX_TOTAL / 2
            && self.store.unsynced_queues() > CHEAP_CHECKPOINT_QUEUES
        {
            return;
        }
        match self.store.prepare_checkpoint(now) {
            Ok(Some(cp)) => {
                self.persists.last_checkpoint_at = now;
                self.persist(
                    PersistKind::Checkpoint(cp.offset),
                    CHECKPOINT_FILE,
                    cp.encode(),
                )
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, "checkpoint failed; the store stops taking writes")
            }
        }
    }

    /// Starts writing topics.json if it changed and no write of it is running.
    pub(super) fn write_topics(&mut self) {
        if !self.persists.topics_dirty || self.persists.in_flight(PersistKind::Topics) {
            return;
        }
        match serde_json::to_vec_pretty(&self.topics.table()) {
            Ok(data) => {
                self.persists.topics_dirty = false;
                self.persist(PersistKind::Topics, config::TOPICS_FILE, data);
            }
            Err(e) => tracing::error!(error = %e, "encoding topics failed"),
        }
    }

    /// A `Persist` output finished.
    pub fn on_persisted(&mut self, token: u64, result: Result<(), String>, _now: u64) {
        let Some(kind) = self.persists.in_flight.remove(&token) else {
            return;
        };
        match (kind, result) {
            (PersistKind::Checkpoint(offset), Ok(())) => self.store.checkpoint_written(offset),
            (PersistKind::Checkpoint(_), Err(e)) => {
                // As after any failed sync: nothing written after it can be trusted.
                tracing::error!(error = %e, "writing the checkpoint failed; the store stops taking writes");
                self.store.checkpoint_failed(&e);
            }
            (PersistKind::Topics, Ok(())) => self.write_topics(),
            (PersistKind::Topics, Err(e)) => {
                tracing::error!(error = %e, "writing topics.json failed; will retry");
                self.persists.topics_dirty = true;
            }
            (PersistKind::Offsets, Ok(())) | (PersistKind::DelayOffsets, Ok(())) => {}
            (PersistKind::Groups, Ok(())) => self.write_groups(),
            (PersistKind::Wheel, Ok(())) | (PersistKind::DynamicConfig, Ok(())) => {}
            (PersistKind::DynamicConfig, Err(e)) => {
                tracing::error!(error = %e, "writing broker.dynamic.properties failed; the update holds until a restart")
            }
            (PersistKind::Wheel, Err(e)) => {
                tracing::error!(error = %e, "writing timerWheel.json failed; will retry");
                self.wheel_write_failed();
            }
            (PersistKind::Groups, Err(e)) => {
                tracing::error!(error = %e, "writing subscriptionGroup.json failed; will retry");
                self.groups_write_failed();
            }
            (PersistKind::DelayOffsets, Err(e)) => {
                tracing::error!(error = %e, "writing delayOffset.json failed; will retry");
                self.delay_offsets_failed();
            }
            (PersistKind::Offsets, Err(e)) => {
                tracing::error!(error = %e, "writing consumerOffset.json failed; will retry");
                self.offsets.dirty = true;
            }
        }
    }

    /// What must be durable before the files of `Output::Persist { token, .. }` are written:
    /// for a checkpoint, the staged consume queue entries it writes, the queue and index
    /// ranges it covers and the queue files created since the last one (nothing for other
    /// writes). A driver resolves them when it takes the output, and writes and syncs them
    /// off the machine's task.
    pub fn persist_syncs(&self, token: u64) -> Result<PersistSyncs, StoreError> {
        let mut syncs = PersistSyncs::default();
        if let Some(PersistKind::Checkpoint(_)) = self.persists.in_flight.get(&token) {
            self.store.checkpoint_writes(&mut syncs.writes)?;
            self.store.checkpoint_ranges(&mut syncs.ranges);
            syncs.created = self.store.checkpoint_created().clone();
        }
        Ok(syncs)
    }

    /// Shutdown: the config files are written before the disk is handed back.
    pub(super) fn save_configs_inline(&mut self) -> Result<(), StoreError> {
        self.stamp_offsets();
        config::save(
            self.store.disk_mut(),
            config::CONSUMER_OFFSETS_FILE,
            &self.offsets.table,
        )?;
        config::save(
            self.store.disk_mut(),
            config::TOPICS_FILE,
            &self.topics.table(),
        )?;
        let groups = self.groups_at_shutdown();
        config::save(
            self.store.disk_mut(),
            config::SUBSCRIPTION_GROUPS_FILE,
            &groups,
        )?;
        let wheel = self.wheel_at_shutdown();
        config::save(
            self.store.disk_mut(),
            super::timer::TIMER_WHEEL_FILE,
            &wheel,
        )?;
        let delays = self.delay_offsets_at_shutdown();
        config::save(self.store.disk_mut(), config::DELAY_OFFSETS_FILE, &delays)?;
        self.offsets.dirty = false;
        self.persists.topics_dirty = false;
        Ok(())
    }
}

/// The disk work of a persist, built on the machine's task and run off it (see
/// `Broker::flush_work`).
impl<D: OffTaskSync> Broker<D> {
    /// The work for `Output::Persist { token, files }`: what a checkpoint counts on first
    /// (queue files created, staged queue entries written, queue and index ranges synced),
    /// then each file replaced atomically, in order.
    pub fn persist_work(
        &self,
        token: u64,
        files: Vec<(String, Bytes)>,
    ) -> Result<SyncWork, String> {
        let disk = self.store.disk();
        let syncs = self.persist_syncs(token).map_err(|e| e.to_string())?;
        let created = (!syncs.created.is_empty()).then(|| disk.created_job(syncs.created));
        let writes = (!syncs.writes.is_empty())
            .then(|| disk.write_at_job(syncs.writes))
            .transpose()?;
        let ranges = (!syncs.ranges.is_empty())
            .then(|| disk.sync_job(syncs.ranges))
            .transpose()?;
        let write = disk.write_job(files)?;
        Ok(Box::new(move || {
            for first in [created, writes, ranges].into_iter().flatten() {
                first()?;
            }
            write()
        }))
    }

    /// Builds and runs a persist's work at once, then answers it (tests and simple drivers).
    pub fn run_persist(&mut self, token: u64, files: Vec<(String, Bytes)>, now: u64) {
        let result = self.persist_work(token, files).and_then(|work| work());
        self.on_persisted(token, result, now);
    }
}

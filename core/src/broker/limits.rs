//! Caps on everything outside input can grow in a broker, and the name rules it enforces.
//!
//! Past a cap the request is answered SYSTEM_BUSY (state that drains by itself: held pulls,
//! SYNC_FLUSH waiters) or refused with an error naming the cap (state that stays: groups,
//! clients, topics, offsets); a connection over the cap is closed as it is accepted. The
//! defaults are far above what a healthy cluster uses and far below what exhausts a host.

use rockfish_store::Disk;
use rockfish_store::message_store::validate_topic;

use super::Broker;
use crate::machine::{ConnId, Output};

/// Apache's group name rule (`Validators.checkGroup`): `^[%|a-zA-Z0-9_-]+$`, at most 255.
pub const MAX_GROUP_LEN: usize = 255;

/// Queues one (topic, group) offset entry may hold (a topic has at most 1024 queues).
pub const MAX_QUEUES_PER_OFFSET_ENTRY: usize = 1024;

/// The broker's caps (`BrokerConfig::limits`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerLimits {
    /// Connections open at once; one more is closed as it is accepted.
    pub max_connections: usize,
    /// Pulls held by long polling, in all; past it a pull that would be held is answered
    /// SYSTEM_BUSY (the client pulls again after its back-off).
    pub max_held_pulls: usize,
    /// Pulls held for one connection (a consumer holds about one per queue it owns).
    pub max_held_pulls_per_conn: usize,
    /// SYNC_FLUSH sends waiting for their flush; past it a send is answered SYSTEM_BUSY
    /// before it is stored.
    pub max_sync_waiters: usize,
    /// Consumer groups and producer groups known from heartbeats (each); a heartbeat that
    /// would add one more is refused.
    pub max_groups: usize,
    /// Clients in one group; a heartbeat that would add one more is refused.
    pub max_clients_per_group: usize,
    /// Subscriptions in one consumer group's heartbeat.
    pub max_subscriptions: usize,
    /// Topics, however created (auto-creation, retry topics, admin); past it creating one is
    /// refused.
    pub max_topics: usize,
    /// (topic, group) pairs in the consumer offset table; a commit for a new pair past it is
    /// refused.
    pub max_offset_entries: usize,
    /// Messages handed out by pops and not yet acked or revived; past it a pop is answered
    /// POLLING_FULL (the client pops again later).
    pub max_pop_inflight: usize,
}

impl Default for BrokerLimits {
    fn default() -> Self {
        BrokerLimits {
            max_connections: 10_000,
            max_held_pulls: 100_000,
            max_held_pulls_per_conn: 10_000,
            max_sync_waiters: 100_000,
            max_groups: 10_000,
            max_clients_per_group: 10_000,
            max_subscriptions: 1_000,
            max_topics: 100_000,
            max_offset_entries: 1_000_000,
            max_pop_inflight: 1_000_000,
        }
    }
}

/// Checks a consumer or producer group name as Apache's `Validators.checkGroup` does.
pub fn validate_group(group: &str) -> Result<(), String> {
    let ok = !group.trim().is_empty()
        && group.len() <= MAX_GROUP_LEN
        && group
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"%|_-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "the specified group[{}] is invalid: use [%|a-zA-Z0-9_-], at most {MAX_GROUP_LEN} characters",
            group.chars().take(64).collect::<String>()
        ))
    }
}

/// A clustering group's retry topic, if its name is a valid topic (the store's topic rule:
/// a group name over 120 characters makes a retry topic over 127).
pub fn retry_topic(group: &str) -> Result<String, String> {
    let topic = crate::protocol::topics::retry_topic(group);
    validate_topic(&topic).map_err(|e| format!("group {group:?} has no valid retry topic: {e}"))?;
    Ok(topic)
}

impl<D: Disk> Broker<D> {
    /// A connection opened: past the cap it is closed at once (the driver then reports the
    /// close like any other).
    pub(super) fn admit_connection(&mut self, conn: ConnId) -> bool {
        if self.peers.len() < self.config.limits.max_connections {
            return true;
        }
        tracing::warn!(
            conn = conn.0,
            max = self.config.limits.max_connections,
            "too many connections; closing the new one"
        );
        self.outputs.push_back(Output::Close {
            conn,
            reason: format!(
                "too many connections (limit {})",
                self.config.limits.max_connections
            ),
        });
        false
    }

    /// Whether another SYNC_FLUSH send may wait for its flush.
    pub(super) fn sync_waiters_full(&self) -> bool {
        self.flush.waiters.len() >= self.config.limits.max_sync_waiters
    }

    /// Whether an offset for (topic, group, queue) may be kept: an existing entry always; a
    /// new one within the caps.
    pub(super) fn offsets_admit(&self, topic: &str, group: &str, queue_id: u32) -> bool {
        let key = rockfish_store::config::ConsumerOffsetTable::key(topic, group);
        match self.offsets.table.offset_table.get(&key) {
            Some(queues) => {
                queues.contains_key(&queue_id) || queues.len() < MAX_QUEUES_PER_OFFSET_ENTRY
            }
            None => self.offsets.table.offset_table.len() < self.config.limits.max_offset_entries,
        }
    }

    /// Whether one more topic may be created.
    pub(super) fn topics_full(&self) -> bool {
        self.topics.len() >= self.config.limits.max_topics
    }
}

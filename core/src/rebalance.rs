//! Queue allocation strategies, as pure functions identical to Apache RocketMQ's
//! `AllocateMessageQueue*` classes. Every consumer of a group runs the same function over the
//! same sorted inputs and takes its own share, so mixed-SDK groups must compute exactly what
//! Java computes, or queues are consumed twice or not at all.

use std::collections::{BTreeMap, BTreeSet};

use md5::{Digest, Md5};

use crate::protocol::MessageQueue;

/// A strategy: given every queue and every consumer id of a group (both sorted, as
/// RocketMQ's RebalanceImpl sorts them), the queues `current` takes.
pub trait AllocateStrategy {
    /// RocketMQ's strategy name (what clients report).
    fn name(&self) -> &'static str;
    fn allocate(&self, current: &str, mqs: &[MessageQueue], cids: &[String]) -> Vec<MessageQueue>;
}

fn index_of(current: &str, cids: &[String]) -> Option<usize> {
    cids.iter().position(|c| c == current)
}

/// AllocateMessageQueueAveragely: contiguous ranges, the first `len % n` consumers one more.
pub struct Averagely;

impl AllocateStrategy for Averagely {
    fn name(&self) -> &'static str {
        "AVG"
    }
    fn allocate(&self, current: &str, mqs: &[MessageQueue], cids: &[String]) -> Vec<MessageQueue> {
        let Some(index) = index_of(current, cids) else {
            return Vec::new();
        };
        if mqs.is_empty() {
            return Vec::new();
        }
        let (len, n) = (mqs.len(), cids.len());
        let modulo = len % n;
        let average = if len <= n {
            1
        } else if modulo > 0 && index < modulo {
            len / n + 1
        } else {
            len / n
        };
        let start = if modulo > 0 && index < modulo {
            index * average
        } else {
            index * average + modulo
        };
        let range = average.min(len.saturating_sub(start));
        (0..range).map(|i| mqs[(start + i) % len].clone()).collect()
    }
}

/// AllocateMessageQueueAveragelyByCircle: queue i goes to consumer i mod n.
pub struct AveragelyByCircle;

impl AllocateStrategy for AveragelyByCircle {
    fn name(&self) -> &'static str {
        "AVG_BY_CIRCLE"
    }
    fn allocate(&self, current: &str, mqs: &[MessageQueue], cids: &[String]) -> Vec<MessageQueue> {
        let Some(index) = index_of(current, cids) else {
            return Vec::new();
        };
        (index..mqs.len())
            .filter(|i| i % cids.len() == index)
            .map(|i| mqs[i].clone())
            .collect()
    }
}

/// AllocateMessageQueueConsistentHash: consumers on an MD5 ring with virtual nodes; each queue
/// (hashed by its Java `toString()`) goes to the next node clockwise.
pub struct ConsistentHash {
    pub virtual_nodes: usize,
}

impl Default for ConsistentHash {
    fn default() -> Self {
        ConsistentHash { virtual_nodes: 10 }
    }
}

/// RocketMQ's MD5Hash: the first four digest bytes as a non-negative long.
fn md5_hash(key: &str) -> u64 {
    let digest = Md5::digest(key.as_bytes());
    digest[..4].iter().fold(0u64, |h, &b| (h << 8) | b as u64)
}

impl AllocateStrategy for ConsistentHash {
    fn name(&self) -> &'static str {
        "CONSISTENT_HASH"
    }
    fn allocate(&self, current: &str, mqs: &[MessageQueue], cids: &[String]) -> Vec<MessageQueue> {
        if index_of(current, cids).is_none() {
            return Vec::new();
        }
        // Later insertions win a hash collision, as with Java's TreeMap.put.
        let mut ring: BTreeMap<u64, &str> = BTreeMap::new();
        for cid in cids {
            for i in 0..self.virtual_nodes {
                ring.insert(md5_hash(&format!("{cid}-{i}")), cid);
            }
        }
        let Some((_, first)) = ring.iter().next() else {
            return Vec::new();
        };
        mqs.iter()
            .filter(|mq| {
                let h = md5_hash(&mq.to_string());
                let owner = ring.range(h..).next().map_or(*first, |(_, c)| *c);
                owner == current
            })
            .cloned()
            .collect()
    }
}

/// AllocateMessageQueueByConfig: a fixed list, whatever the group looks like.
pub struct ByConfig {
    pub queues: Vec<MessageQueue>,
}

impl AllocateStrategy for ByConfig {
    fn name(&self) -> &'static str {
        "CONFIG"
    }
    fn allocate(
        &self,
        _current: &str,
        _mqs: &[MessageQueue],
        _cids: &[String],
    ) -> Vec<MessageQueue> {
        self.queues.clone()
    }
}

/// AllocateMessageQueueByMachineRoom: only queues of brokers named "<room>@<name>" in the
/// consumer's rooms, shared evenly, the remainder one each to the first consumers.
pub struct ByMachineRoom {
    pub rooms: BTreeSet<String>,
}

impl AllocateStrategy for ByMachineRoom {
    fn name(&self) -> &'static str {
        "MACHINE_ROOM"
    }
    fn allocate(&self, current: &str, mqs: &[MessageQueue], cids: &[String]) -> Vec<MessageQueue> {
        let Some(index) = index_of(current, cids) else {
            return Vec::new();
        };
        // Java's split("@") drops trailing empty parts; exactly two parts are required.
        let in_room = |name: &str| {
            let parts: Vec<&str> = name.trim_end_matches('@').split('@').collect();
            parts.len() == 2 && self.rooms.contains(parts[0])
        };
        let pre: Vec<&MessageQueue> = mqs.iter().filter(|mq| in_room(&mq.broker_name)).collect();
        let n = cids.len();
        let (each, rem) = (pre.len() / n, pre.len() % n);
        let mut out: Vec<MessageQueue> = pre[each * index..each * index + each]
            .iter()
            .map(|m| (*m).clone())
            .collect();
        if rem > index {
            out.push(pre[index + each * n].clone());
        }
        out
    }
}

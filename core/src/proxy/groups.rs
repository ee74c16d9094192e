//! Consumer groups' policies as their brokers hold them (GET_SUBSCRIPTIONGROUP_CONFIG, as
//! Apache's proxy asks): whether the group consumes FIFO (its receives are orderly pops, its
//! clients' settings say fifo) and how many deliveries a message gets before the dead-letter
//! queue. Kept for `POLICY_TTL_MS`; a receive or a settings answer that needs a group not yet
//! known waits for it, each wait bounded.

use std::collections::{BTreeMap, BTreeSet};

use rockfish_store::config::SubscriptionGroupConfig;

use super::pb;
use super::{CallId, StreamId};

/// A group's policy is asked again this long after it was learned (an operator's
/// updateSubGroup reaches receives within it).
pub const POLICY_TTL_MS: u64 = 30_000;
/// Groups remembered at once; past it the stalest is forgotten (asked again when needed).
const MAX_GROUPS: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupPolicy {
    pub fifo: bool,
    /// Deliveries before the dead-letter queue (retryMaxTimes + 1, as Apache's proxy says).
    pub max_attempts: i32,
}

impl Default for GroupPolicy {
    /// A group no broker holds yet: created with the defaults on its first pop.
    fn default() -> Self {
        GroupPolicy::of(&SubscriptionGroupConfig::default())
    }
}

impl GroupPolicy {
    pub fn of(cfg: &SubscriptionGroupConfig) -> GroupPolicy {
        GroupPolicy {
            fifo: cfg.consume_message_orderly,
            max_attempts: cfg.retry_max_times.saturating_add(1),
        }
    }
}

/// A receive waiting for its group's policy.
pub struct WaitingReceive {
    pub group: String,
    pub call: CallId,
    pub topic: String,
    pub req: pb::ReceiveMessageRequest,
}

/// A settings answer waiting for its group's policy.
pub struct WaitingSettings {
    pub group: String,
    pub stream: StreamId,
    pub settings: pb::Settings,
    /// Answered with the default policy at this time if the group's is still unknown.
    pub deadline: u64,
}

#[derive(Default)]
pub struct GroupPolicies {
    known: BTreeMap<String, (GroupPolicy, u64)>,
    /// Groups whose policy a broker is being asked for.
    pub asking: BTreeSet<String>,
    pub receives: Vec<WaitingReceive>,
    pub settings: Vec<WaitingSettings>,
}

impl GroupPolicies {
    /// The group's policy if it was learned less than `POLICY_TTL_MS` ago.
    pub fn fresh(&self, group: &str, now: u64) -> Option<GroupPolicy> {
        self.known
            .get(group)
            .filter(|(_, at)| now < at + POLICY_TTL_MS)
            .map(|(p, _)| *p)
    }

    pub fn learned(&mut self, group: &str, policy: GroupPolicy, now: u64) {
        self.asking.remove(group);
        if self.known.len() >= MAX_GROUPS && !self.known.contains_key(group) {
            let stalest = self
                .known
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(g, _)| g.clone());
            if let Some(g) = stalest {
                self.known.remove(&g);
            }
        }
        self.known.insert(group.to_string(), (policy, now));
    }

    /// The receives and settings answers waiting for `group`.
    pub fn take_waiting(&mut self, group: &str) -> (Vec<WaitingReceive>, Vec<WaitingSettings>) {
        let (r, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.receives)
            .into_iter()
            .partition(|w| w.group == group);
        self.receives = keep;
        let (s, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.settings)
            .into_iter()
            .partition(|w| w.group == group);
        self.settings = keep;
        (r, s)
    }

    /// Settings answers whose wait ran out.
    pub fn take_late_settings(&mut self, now: u64) -> Vec<WaitingSettings> {
        let (late, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.settings)
            .into_iter()
            .partition(|w| w.deadline <= now);
        self.settings = keep;
        late
    }

    pub fn next_deadline(&self) -> Option<u64> {
        self.settings.iter().map(|w| w.deadline).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_goes_stale_and_the_stalest_is_forgotten_at_the_cap() {
        let mut g = GroupPolicies::default();
        let fifo = GroupPolicy {
            fifo: true,
            max_attempts: 3,
        };
        g.learned("G", fifo, 100);
        assert_eq!(g.fresh("G", 100 + POLICY_TTL_MS - 1), Some(fifo));
        assert_eq!(g.fresh("G", 100 + POLICY_TTL_MS), None);
        for i in 0..MAX_GROUPS {
            g.learned(&format!("g{i}"), GroupPolicy::default(), 200 + i as u64);
        }
        assert_eq!(g.known.len(), MAX_GROUPS);
        assert!(g.fresh("G", 200).is_none(), "the stalest went first");
    }

    #[test]
    fn the_default_policy_is_a_new_groups() {
        assert_eq!(
            GroupPolicy::default(),
            GroupPolicy {
                fifo: false,
                max_attempts: 17
            }
        );
    }
}

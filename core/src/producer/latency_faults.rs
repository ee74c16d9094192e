//! RocketMQ's LatencyFaultTolerance: brokers that answered slowly (or not at all) are
//! avoided for a while, longer the slower they were.

use std::collections::BTreeMap;

/// RocketMQ's latency-fault table: a send that took at least `LATENCY_MAX[i]` ms makes its
/// broker unavailable for `NOT_AVAILABLE[i]` ms.
const LATENCY_MAX: [u64; 7] = [50, 100, 550, 1_000, 2_000, 3_000, 15_000];
const NOT_AVAILABLE: [u64; 7] = [0, 0, 30_000, 60_000, 120_000, 180_000, 600_000];

/// Broker name to the time it is usable again.
#[derive(Debug, Default)]
pub(super) struct LatencyFaults {
    until: BTreeMap<String, u64>,
}

impl LatencyFaults {
    /// A send to `broker` took `latency` ms (or failed: `ISOLATION_LATENCY`).
    pub fn record(&mut self, broker: &str, latency: u64, now: u64) {
        let window = LATENCY_MAX
            .iter()
            .rposition(|m| latency >= *m)
            .map_or(0, |i| NOT_AVAILABLE[i]);
        self.until.insert(broker.to_string(), now + window);
    }

    /// Whether `broker` is outside its fault window at `now`.
    pub fn available(&self, broker: &str, now: u64) -> bool {
        self.until.get(broker).is_none_or(|until| *until <= now)
    }
}

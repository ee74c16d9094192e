//! What a run looks like: cluster shape, workload, faults and phases, all drawn from one seed
//! within the bounds a scenario sets.

use rockfish_core::broker::FlushDiskType;
use rockfish_store::FaultPlan;

/// Fault rates for the safety phase. All zero is a fault-free run.
#[derive(Debug, Clone)]
pub struct Faults {
    /// Probability a frame is lost.
    pub drop: f64,
    /// Probability a frame is delivered twice.
    pub duplicate: f64,
    /// One-way latency bounds, ms.
    pub latency_ms: (u64, u64),
    /// Chance per second that a broker crashes.
    pub crash_per_sec: f64,
    /// Of crashes, the share that are power losses.
    pub power_loss_share: f64,
    /// How long a crashed broker stays down, ms.
    pub down_ms: (u64, u64),
    /// Chance per second that a client is cut off from the broker for a while.
    pub partition_per_sec: f64,
    /// How long a partition lasts, ms.
    pub partition_ms: (u64, u64),
    /// The brokers' disk fault plan (torn pages and write-back at power loss, bit flips).
    pub disk: FaultPlan,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            drop: 0.0,
            duplicate: 0.0,
            latency_ms: (1, 5),
            crash_per_sec: 0.0,
            power_loss_share: 0.0,
            down_ms: (500, 3_000),
            partition_per_sec: 0.0,
            partition_ms: (500, 5_000),
            disk: FaultPlan::default(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub seed: u64,
    pub flush: FlushDiskType,
    pub producers: usize,
    pub consumers: usize,
    /// Messages each producer sends, one every `send_interval_ms`.
    pub messages: usize,
    pub send_interval_ms: u64,
    /// Faults fly for this long.
    pub safety_ms: u64,
    /// Then faults stop and the cluster must converge within this long.
    pub liveness_ms: u64,
    pub faults: Faults,
    /// Test-only: a broken flush path that reports syncs it never made. A checker must catch it.
    pub bug_lying_flush: bool,
}

impl SimConfig {
    /// A small fault-free cluster: one name server, one broker, one producer, two consumers.
    pub fn smoke(seed: u64) -> SimConfig {
        SimConfig {
            seed,
            flush: FlushDiskType::Sync,
            producers: 1,
            consumers: 2,
            messages: 200,
            send_interval_ms: 20,
            safety_ms: 10_000,
            liveness_ms: 60_000,
            faults: Faults::default(),
            bug_lying_flush: false,
        }
    }
}

/// The built-in scenarios, by name.
pub const SCENARIOS: &[&str] = &[
    "smoke",
    "broker-crash-sync",
    "broker-crash-async",
    "power-loss-torn",
    "partitions",
];

/// A named scenario's configuration for `seed`; `None` for an unknown name.
pub fn scenario(name: &str, seed: u64) -> Option<SimConfig> {
    let base = SimConfig::smoke(seed);
    let crashes = |flush, power_share| SimConfig {
        flush,
        faults: Faults {
            latency_ms: (1, 20),
            crash_per_sec: 0.15,
            power_loss_share: power_share,
            ..Faults::default()
        },
        ..base.clone()
    };
    Some(match name {
        "smoke" => base,
        "broker-crash-sync" => crashes(FlushDiskType::Sync, 0.0),
        "broker-crash-async" => crashes(FlushDiskType::Async, 0.0),
        "power-loss-torn" => SimConfig {
            faults: Faults {
                disk: FaultPlan {
                    writeback: 0.3,
                    torn_page: 0.5,
                    read_bitflip: 0.0005,
                    ..FaultPlan::default()
                },
                ..crashes(FlushDiskType::Sync, 1.0).faults
            },
            ..crashes(FlushDiskType::Sync, 1.0)
        },
        "partitions" => SimConfig {
            faults: Faults {
                drop: 0.01,
                duplicate: 0.01,
                latency_ms: (1, 50),
                partition_per_sec: 0.2,
                ..Faults::default()
            },
            ..base
        },
        _ => return None,
    })
}

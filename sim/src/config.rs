//! What a run looks like: cluster shape, workload, faults and phases, all drawn from one seed
//! within the bounds a scenario sets.

use rockfish_core::broker::FlushDiskType;
use rockfish_store::FaultPlan;
use serde::{Deserialize, Serialize};

/// Fault rates for the safety phase. All zero is a fault-free run.
#[derive(Debug, Clone, PartialEq)]
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
    /// Each node's clock runs ahead of simulated time by a fixed amount drawn from this range.
    pub clock_skew_ms: (u64, u64),
    /// Chance per second that a name server dies (and comes back with an empty route table).
    pub namesrv_crash_per_sec: f64,
    /// Chance per second that one node stops hearing from (or stops reaching) every other.
    pub one_way_per_sec: f64,
    /// Chance per second that one node (any kind) is cut off from all others both ways.
    pub isolate_per_sec: f64,
    /// Chance per second of a swizzle: a few nodes' links clog one after another (frames are
    /// held, not lost), then unclog in another order (FoundationDB's swizzle-clogging).
    pub swizzle_per_sec: f64,
    /// Chance per second that a node pauses (a stop-the-world GC, a stalled VM): it handles
    /// nothing while its clock runs on.
    pub pause_per_sec: f64,
    pub pause_ms: (u64, u64),
    /// Chance per second that a consumer leaves its group (and rejoins after `down_ms`).
    pub churn_per_sec: f64,
    /// Arm the machines' own fault sites (`rockfish_core::buggify`).
    pub buggify: bool,
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
            namesrv_crash_per_sec: 0.0,
            one_way_per_sec: 0.0,
            isolate_per_sec: 0.0,
            swizzle_per_sec: 0.0,
            pause_per_sec: 0.0,
            pause_ms: (100, 3_000),
            churn_per_sec: 0.0,
            buggify: false,
            clock_skew_ms: (0, 0),
            disk: FaultPlan::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    pub seed: u64,
    pub flush: FlushDiskType,
    pub name_servers: usize,
    pub brokers: usize,
    pub producers: usize,
    /// Consumers of the clustering group.
    pub consumers: usize,
    /// Consumers of a broadcasting group: each must get every message.
    pub broadcast_consumers: usize,
    /// The clustering group consumes orderly and producers send by sharding key.
    pub orderly: bool,
    /// Chance that the application answers a delivery with "reconsume later".
    pub reconsume_share: f64,
    /// Each message body is padded to at least this many bytes (to fill disks).
    pub body_bytes: usize,
    /// The topic exists before the run, and consumers start once brokers have registered.
    pub topic_created: bool,
    /// Queues of the topic created before the run (more than 64 make checkpoints space out).
    pub topic_queues: u32,
    /// Messages each producer sends, one every `send_interval_ms`.
    pub messages: usize,
    pub send_interval_ms: u64,
    /// Messages each producer sends after the heal; every one must be acknowledged and consumed.
    pub liveness_messages: usize,
    /// Faults fly for this long.
    pub safety_ms: u64,
    /// Then faults stop and the cluster must converge within this long.
    pub liveness_ms: u64,
    pub faults: Faults,
    pub bugs: Bugs,
    /// The invariants judged (names from `scenario::INVARIANTS`).
    pub invariants: Vec<String>,
}

impl SimConfig {
    /// A small fault-free cluster: one name server, one broker, one producer, two consumers.
    pub fn smoke(seed: u64) -> SimConfig {
        SimConfig {
            seed,
            flush: FlushDiskType::Sync,
            name_servers: 1,
            brokers: 1,
            producers: 1,
            consumers: 2,
            broadcast_consumers: 0,
            orderly: false,
            reconsume_share: 0.0,
            body_bytes: 0,
            topic_created: false,
            topic_queues: 4,
            messages: 200,
            send_interval_ms: 20,
            liveness_messages: 20,
            safety_ms: 10_000,
            liveness_ms: 100_000,
            faults: Faults::default(),
            bugs: Bugs::default(),
            invariants: crate::scenario::INVARIANTS
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }
}

/// Deliberately broken components, for proving the checkers work (each checker has a test
/// that switches one on and must see it fire). Never in a real scenario.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Bugs {
    /// Flushes reported done without syncing (SYNC_FLUSH acks before the data is durable).
    pub lying_flush: bool,
    /// A crashed broker never comes back.
    pub no_restart: bool,
    /// The orderly group's consumers consume concurrently: a message the application asked
    /// to retry comes back after the ones behind it.
    pub orderly_as_concurrent: bool,
    /// The broadcasting group's consumers share queues as a clustering group does.
    pub broadcast_as_clustering: bool,
    /// Brokers register with the name servers once and never again.
    pub register_once: bool,
    /// SYNC_FLUSH brokers serve pulls past the flushed offset (RocketMQ #8239): a consumer
    /// sees messages a power loss can still take.
    pub serve_unflushed: bool,
}

impl Bugs {
    pub fn is_none(&self) -> bool {
        *self == Bugs::default()
    }
}

//! Scenario files (TOML): the bounds a scenario sets and the seed draws within (swarm
//! testing). A knob is either a value (`drop = 0.01`) or a range the seed draws from
//! (`drop = [0.0, 0.05]`). The built-in scenarios are the files in `scenarios/`, compiled in.

use std::fmt;

use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use rockfish_core::broker::{BrokerRole, FlushDiskType};
use serde::{Deserialize, Serialize};

use crate::config::{Bugs, FaultAt, SimConfig};
pub use crate::knobs::{Bound, DiskBounds, FaultBounds};

/// The built-in scenarios: (name, file text).
const BUILT_IN: &[(&str, &str)] = &[
    ("smoke", include_str!("../../scenarios/smoke.toml")),
    (
        "replication",
        include_str!("../../scenarios/replication.toml"),
    ),
    (
        "sync-master",
        include_str!("../../scenarios/sync-master.toml"),
    ),
    (
        "broker-crash-sync",
        include_str!("../../scenarios/broker-crash-sync.toml"),
    ),
    (
        "broker-crash-async",
        include_str!("../../scenarios/broker-crash-async.toml"),
    ),
    (
        "power-loss-torn",
        include_str!("../../scenarios/power-loss-torn.toml"),
    ),
    (
        "partitions",
        include_str!("../../scenarios/partitions.toml"),
    ),
    (
        "disk-faults",
        include_str!("../../scenarios/disk-faults.toml"),
    ),
    ("swarm", include_str!("../../scenarios/swarm.toml")),
    (
        "namesrv-loss",
        include_str!("../../scenarios/namesrv-loss.toml"),
    ),
    ("cluster", include_str!("../../scenarios/cluster.toml")),
    (
        "clock-skew",
        include_str!("../../scenarios/clock-skew.toml"),
    ),
    (
        "consumer-churn",
        include_str!("../../scenarios/consumer-churn.toml"),
    ),
    ("orderly", include_str!("../../scenarios/orderly.toml")),
    (
        "swizzle-clog",
        include_str!("../../scenarios/swizzle-clog.toml"),
    ),
    ("disk-full", include_str!("../../scenarios/disk-full.toml")),
    (
        "consume-power-loss",
        include_str!("../../scenarios/consume-power-loss.toml"),
    ),
    (
        "consume-power-loss-async",
        include_str!("../../scenarios/consume-power-loss-async.toml"),
    ),
    (
        "many-queues-power-loss",
        include_str!("../../scenarios/many-queues-power-loss.toml"),
    ),
    (
        "broker-lost",
        include_str!("../../scenarios/broker-lost.toml"),
    ),
    ("retry-dlq", include_str!("../../scenarios/retry-dlq.toml")),
    (
        "delay-power-loss",
        include_str!("../../scenarios/delay-power-loss.toml"),
    ),
    ("pop", include_str!("../../scenarios/pop.toml")),
    ("pop-sync", include_str!("../../scenarios/pop-sync.toml")),
];

/// The names of the built-in scenarios.
pub const SCENARIOS: &[&str] = &[
    "smoke",
    "broker-crash-sync",
    "broker-crash-async",
    "power-loss-torn",
    "partitions",
    "disk-faults",
    "swarm",
    "namesrv-loss",
    "cluster",
    "clock-skew",
    "consumer-churn",
    "orderly",
    "swizzle-clog",
    "disk-full",
    "consume-power-loss",
    "consume-power-loss-async",
    "many-queues-power-loss",
    "broker-lost",
    "retry-dlq",
    "delay-power-loss",
    "pop",
    "pop-sync",
];

fn f(v: f64) -> Bound<f64> {
    Bound::Value(v)
}

fn u(v: u64) -> Bound<u64> {
    Bound::Value(v)
}

/// Invariants a scenario holds the run to; all of them unless the file narrows the list.
pub const INVARIANTS: &[&str] = &[
    "no-phantom",
    "acked-durable-not-lost",
    "liveness-converges",
    "orderly-fifo",
    "broadcast-at-least-once",
    "routes-converge",
    "delivered-not-vanished",
    "one-offset-one-message",
    "acked-stored-at-offset",
    "orderly-exclusive",
    "one-owner-per-queue",
    "settled-no-duplicates",
    "delivery-latency",
    "timers-not-busy",
    "tagged-exact",
    "store-consistent",
    "delay-not-early",
    "dead-letter-exact",
    "transaction-exact",
    "replica-prefix",
    "sync-master-replicated",
    "one-master-per-epoch",
    "pop-acked-not-resurrected",
    "pop-not-back-early",
    "pop-consumed",
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub topology: Topology,
    #[serde(default)]
    pub workload: Workload,
    #[serde(default)]
    pub phases: Phases,
    #[serde(default)]
    pub faults: FaultBounds,
    #[serde(default)]
    pub disk: DiskBounds,
    #[serde(default = "all_invariants")]
    pub invariants: Vec<String>,
    /// Deliberately broken components, for proving the checkers work. Never in a real scenario.
    #[serde(default, skip_serializing_if = "Bugs::is_none")]
    pub bugs: Bugs,
    /// Fault events injected one by one instead of drawn from the fault rates (a shrink
    /// writes these); frame, disk and buggify faults still follow `[faults]` and `[disk]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Vec<FaultAt>>,
}

fn all_invariants() -> Vec<String> {
    INVARIANTS.iter().map(|s| s.to_string()).collect()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Topology {
    /// "SYNC_FLUSH" or "ASYNC_FLUSH", as in broker.conf.
    pub flush: String,
    pub name_servers: Bound<u64>,
    /// Broker groups.
    pub brokers: Bound<u64>,
    /// Slaves per broker group (0 or 1).
    pub slaves: u64,
    /// The masters' brokerRole: "ASYNC_MASTER" or "SYNC_MASTER".
    pub master_role: String,
    /// Controller mode (name servers embed the controllers; the controllers elect each
    /// group's master from its SyncStateSet).
    pub controller: bool,
    pub producers: Bound<u64>,
    /// The clustering group's consumers.
    pub consumers: Bound<u64>,
    /// A broadcasting group's consumers.
    pub broadcast_consumers: Bound<u64>,
    /// A clustering group's consumers subscribed to some tags only ("TagA || TagC"; messages
    /// carry TagA, TagB or TagC in turn).
    pub tagged_consumers: Bound<u64>,
    /// Simple (pop) consumers of the group "SimPop", subscribed to every message: the
    /// broker hands messages out invisible for a few seconds, and what is not acked comes
    /// back (retryMaxTimes `workload.pop_retry_max`, then `%DLQ%SimPop`).
    pub pop_consumers: Bound<u64>,
}

impl Default for Topology {
    fn default() -> Self {
        Topology {
            flush: "SYNC_FLUSH".into(),
            name_servers: u(1),
            brokers: u(1),
            slaves: 0,
            master_role: "ASYNC_MASTER".into(),
            controller: false,
            producers: u(1),
            consumers: u(2),
            broadcast_consumers: u(0),
            tagged_consumers: u(0),
            pop_consumers: u(0),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Workload {
    /// Messages each producer sends.
    pub messages: Bound<u64>,
    pub send_interval_ms: Bound<u64>,
    /// Messages each producer sends after the heal; all must be acknowledged and consumed.
    pub liveness_messages: u64,
    /// The clustering group consumes orderly; producers send by sharding key.
    pub orderly: bool,
    /// The tagged group subscribes with SQL92 (tag and a numeric property) instead of tags.
    pub tagged_sql: bool,
    /// Producers mix sync, async and oneway sends and batches of three (else async only).
    pub mixed_sends: bool,
    /// Chance the application asks for a delivery to be retried.
    pub reconsume_share: Bound<f64>,
    /// Chance a message is sent with a delay level (1 to 4 of the simulated levels, 1 s each
    /// step: see `world::SIM_DELAY_LEVELS_MS`).
    pub delay_share: Bound<f64>,
    /// Chance a message (not delayed) is a timer message (TIMER_DELAY_MS, 0.5 to 5 s).
    pub timer_share: Bound<f64>,
    /// Chance a message is poison: the clustering group fails it every time, so it must end
    /// as a dead letter after exactly max_reconsume_times retries.
    pub poison_share: Bound<f64>,
    /// The clustering group's maxReconsumeTimes (-1: the client's default, 16).
    pub max_reconsume_times: i32,
    /// Chance the pop group's application leaves a message it received un-acked.
    pub pop_unacked_share: Bound<f64>,
    /// Chance the pop group's application makes a message it received invisible for longer
    /// (then acks it in that time, or now and then not at all).
    pub pop_change_share: Bound<f64>,
    /// The pop group's retryMaxTimes (poison messages, `poison_share`, are never acked by it
    /// and must end in `%DLQ%SimPop`).
    pub pop_retry_max: i32,
    /// Chance a message is sent in a transaction (committed, rolled back, ended late or
    /// never, resolved by check-backs).
    pub transaction_share: Bound<f64>,
    /// Bodies are padded to this many bytes.
    pub body_bytes: u64,
    /// The topic exists on every broker before the run starts, and consumers start once the
    /// brokers have registered: they consume while the safety phase's faults fly (else they
    /// learn the route only at their first route refresh, 30 s in).
    pub topic_created: bool,
    /// Queues of that topic: past 64, checkpoints space out (the broker's many-queues path).
    pub topic_queues: u32,
    /// Producers avoid brokers that failed or answered slowly (sendLatencyFaultEnable).
    pub latency_fault: bool,
    /// After the heal, the application sends a message again when its send failed (as
    /// applications do), up to five times a second apart.
    pub resend_failed: bool,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            messages: u(200),
            send_interval_ms: u(20),
            liveness_messages: 20,
            orderly: false,
            tagged_sql: false,
            mixed_sends: false,
            reconsume_share: f(0.0),
            delay_share: f(0.0),
            timer_share: f(0.0),
            poison_share: f(0.0),
            max_reconsume_times: -1,
            pop_unacked_share: f(0.0),
            pop_change_share: f(0.0),
            pop_retry_max: 2,
            transaction_share: f(0.0),
            body_bytes: 0,
            topic_created: false,
            topic_queues: 4,
            latency_fault: false,
            resend_failed: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Phases {
    /// Faults fly for this long.
    pub safety_ms: u64,
    /// Then faults stop and everything acknowledged must be consumed within this long.
    pub liveness_ms: u64,
    /// How long after the heal the last batch is sent, once every rebalance has settled
    /// (judged for duplicates and delivery latency): later when a broker was lost for good,
    /// whose routes go only once the name servers expire it (120 s).
    pub settled_ms: u64,
}

impl Default for Phases {
    fn default() -> Self {
        Phases {
            safety_ms: 10_000,
            liveness_ms: 100_000,
            settled_ms: crate::world::SETTLED_RESUME_MS,
        }
    }
}

/// A scenario file that could not be used, naming what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioError(pub String);

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ScenarioError {}

impl ScenarioFile {
    /// Parses and validates a scenario file's text.
    pub fn parse(text: &str) -> Result<ScenarioFile, ScenarioError> {
        let file: ScenarioFile =
            toml::from_str(text).map_err(|e| ScenarioError(format!("scenario file: {e}")))?;
        file.validate()?;
        Ok(file)
    }

    /// A built-in scenario by name.
    pub fn built_in(name: &str) -> Option<ScenarioFile> {
        let (_, text) = BUILT_IN.iter().find(|(n, _)| *n == name)?;
        Some(ScenarioFile::parse(text).expect("built-in scenarios are valid (tested)"))
    }

    fn validate(&self) -> Result<(), ScenarioError> {
        let err = |m: String| Err(ScenarioError(format!("scenario {:?}: {m}", self.name)));
        if self.flush().is_none() {
            return err(format!(
                "topology.flush = {:?}: expected SYNC_FLUSH or ASYNC_FLUSH",
                self.topology.flush
            ));
        }
        if !matches!(
            BrokerRole::parse(&self.topology.master_role),
            Some(BrokerRole::AsyncMaster | BrokerRole::SyncMaster)
        ) {
            return err(format!(
                "topology.master_role = {:?}: expected ASYNC_MASTER or SYNC_MASTER",
                self.topology.master_role
            ));
        }
        if self.topology.controller && self.topology.slaves == 0 {
            return err(
                "topology.controller needs topology.slaves = 1 (a group of two replicas)".into(),
            );
        }
        if self.topology.slaves > 1 {
            return err(format!(
                "topology.slaves = {}: 0 or 1 per broker group",
                self.topology.slaves
            ));
        }
        for inv in &self.invariants {
            if !INVARIANTS.contains(&inv.as_str()) {
                return err(format!(
                    "unknown invariant {inv:?}; known: {}",
                    INVARIANTS.join(", ")
                ));
            }
        }
        let mut probabilities = self.faults.probabilities(&self.disk);
        probabilities.push(("workload.reconsume_share", self.workload.reconsume_share));
        probabilities.push(("workload.delay_share", self.workload.delay_share));
        probabilities.push(("workload.poison_share", self.workload.poison_share));
        probabilities.push(("workload.timer_share", self.workload.timer_share));
        probabilities.push((
            "workload.transaction_share",
            self.workload.transaction_share,
        ));
        probabilities.push((
            "workload.pop_unacked_share",
            self.workload.pop_unacked_share,
        ));
        probabilities.push(("workload.pop_change_share", self.workload.pop_change_share));
        if !(0..=16).contains(&self.workload.pop_retry_max) {
            return err(format!(
                "workload.pop_retry_max = {}: 0 to 16",
                self.workload.pop_retry_max
            ));
        }
        if self.workload.max_reconsume_times < -1 {
            return err(format!(
                "workload.max_reconsume_times = {}: -1 (the default) or more",
                self.workload.max_reconsume_times
            ));
        }
        if self.workload.orderly
            && (self.workload.delay_share.span().1 > 0.0
                || self.workload.timer_share.span().1 > 0.0
                || self.workload.poison_share.span().1 > 0.0
                || self.workload.transaction_share.span().1 > 0.0)
        {
            return err(
                "workload: delayed and poison messages are for concurrent groups, not \
                        orderly ones"
                    .to_string(),
            );
        }
        for (name, b) in probabilities {
            let (lo, hi) = b.span();
            if !(0.0..=1.0).contains(&lo) || !(0.0..=1.0).contains(&hi) || lo > hi {
                return err(format!(
                    "{name}: {b:?} is not a probability range in [0, 1]"
                ));
            }
        }
        for (name, [lo, hi]) in self.faults.spans() {
            if lo > hi {
                return err(format!("{name}: [{lo}, {hi}] is an empty range"));
            }
        }
        let counts = [
            ("topology.name_servers", self.topology.name_servers, 1, 4),
            ("topology.brokers", self.topology.brokers, 1, 4),
            ("topology.producers", self.topology.producers, 1, 8),
            ("topology.consumers", self.topology.consumers, 0, 8),
            (
                "topology.broadcast_consumers",
                self.topology.broadcast_consumers,
                0,
                8,
            ),
            (
                "topology.tagged_consumers",
                self.topology.tagged_consumers,
                0,
                8,
            ),
            ("topology.pop_consumers", self.topology.pop_consumers, 0, 8),
            ("workload.messages", self.workload.messages, 0, 100_000),
            (
                "workload.send_interval_ms",
                self.workload.send_interval_ms,
                1,
                60_000,
            ),
        ];
        for (name, b, min, max) in counts {
            let (lo, hi) = b.span();
            if lo < min || hi > max || lo > hi {
                return err(format!("{name}: {b:?} outside [{min}, {max}]"));
            }
        }
        if self.workload.body_bytes > 1 << 20 {
            return err("workload.body_bytes: at most 1048576".into());
        }
        if self.workload.liveness_messages > 10_000 {
            return err("workload.liveness_messages: at most 10000".into());
        }
        if self.phases.safety_ms == 0 || self.phases.liveness_ms == 0 || self.phases.settled_ms == 0
        {
            return err("phases: safety_ms, liveness_ms and settled_ms must be positive".into());
        }
        Ok(())
    }

    fn flush(&self) -> Option<FlushDiskType> {
        match self.topology.flush.as_str() {
            "SYNC_FLUSH" => Some(FlushDiskType::Sync),
            "ASYNC_FLUSH" => Some(FlushDiskType::Async),
            _ => None,
        }
    }

    /// The run for `seed`: every range drawn by the seed (from its own stream, so the draws do
    /// not shift the run's own randomness).
    pub fn config(&self, seed: u64) -> SimConfig {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x5ce7_a210_5ce7_a210);
        let r = &mut rng;
        let mut cfg = SimConfig {
            seed,
            flush: self.flush().expect("validated"),
            name_servers: self.topology.name_servers.draw(r) as usize,
            brokers: self.topology.brokers.draw(r) as usize,
            slaves: self.topology.slaves as usize,
            master_role: BrokerRole::parse(&self.topology.master_role).expect("validated"),
            controller: self.topology.controller,
            producers: self.topology.producers.draw(r) as usize,
            consumers: self.topology.consumers.draw(r) as usize,
            broadcast_consumers: self.topology.broadcast_consumers.draw(r) as usize,
            tagged_consumers: self.topology.tagged_consumers.draw(r) as usize,
            // Drawn after everything else (below), as the shares.
            pop_consumers: 0,
            orderly: self.workload.orderly,
            tagged_sql: self.workload.tagged_sql,
            mixed_sends: self.workload.mixed_sends,
            reconsume_share: self.workload.reconsume_share.draw(r),
            // Drawn after everything else (below): older scenarios draw as they always did.
            delay_share: 0.0,
            timer_share: 0.0,
            poison_share: 0.0,
            transaction_share: 0.0,
            max_reconsume_times: self.workload.max_reconsume_times,
            pop_unacked_share: 0.0,
            pop_change_share: 0.0,
            pop_retry_max: self.workload.pop_retry_max,
            body_bytes: self.workload.body_bytes as usize,
            topic_created: self.workload.topic_created,
            topic_queues: self.workload.topic_queues,
            latency_fault: self.workload.latency_fault,
            resend_failed: self.workload.resend_failed,
            messages: self.workload.messages.draw(r) as usize,
            send_interval_ms: self.workload.send_interval_ms.draw(r),
            liveness_messages: self.workload.liveness_messages as usize,
            safety_ms: self.phases.safety_ms,
            liveness_ms: self.phases.liveness_ms,
            settled_ms: self.phases.settled_ms,
            faults: self.faults.draw(&self.disk, r),
            broker_limits: Default::default(),
            bugs: self.bugs.clone(),
            invariants: self.invariants.clone(),
            schedule: self.schedule.clone(),
        };
        cfg.delay_share = self.workload.delay_share.draw(r);
        cfg.poison_share = self.workload.poison_share.draw(r);
        cfg.timer_share = self.workload.timer_share.draw(r);
        cfg.transaction_share = self.workload.transaction_share.draw(r);
        cfg.pop_consumers = self.topology.pop_consumers.draw(r) as usize;
        cfg.pop_unacked_share = self.workload.pop_unacked_share.draw(r);
        cfg.pop_change_share = self.workload.pop_change_share.draw(r);
        cfg
    }

    /// A scenario file that gives exactly `cfg` (for any seed): what `shrink` writes out.
    pub fn exactly(name: &str, description: &str, cfg: &SimConfig) -> ScenarioFile {
        let (faults, disk) = FaultBounds::exactly(&cfg.faults);
        ScenarioFile {
            name: name.into(),
            description: description.into(),
            topology: Topology {
                flush: match cfg.flush {
                    FlushDiskType::Sync => "SYNC_FLUSH".into(),
                    FlushDiskType::Async => "ASYNC_FLUSH".into(),
                },
                name_servers: u(cfg.name_servers as u64),
                brokers: u(cfg.brokers as u64),
                slaves: cfg.slaves as u64,
                master_role: cfg.master_role.name().into(),
                controller: cfg.controller,
                producers: u(cfg.producers as u64),
                consumers: u(cfg.consumers as u64),
                broadcast_consumers: u(cfg.broadcast_consumers as u64),
                tagged_consumers: u(cfg.tagged_consumers as u64),
                pop_consumers: u(cfg.pop_consumers as u64),
            },
            workload: Workload {
                messages: u(cfg.messages as u64),
                send_interval_ms: u(cfg.send_interval_ms),
                liveness_messages: cfg.liveness_messages as u64,
                orderly: cfg.orderly,
                tagged_sql: cfg.tagged_sql,
                mixed_sends: cfg.mixed_sends,
                reconsume_share: f(cfg.reconsume_share),
                delay_share: f(cfg.delay_share),
                timer_share: f(cfg.timer_share),
                poison_share: f(cfg.poison_share),
                max_reconsume_times: cfg.max_reconsume_times,
                pop_unacked_share: f(cfg.pop_unacked_share),
                pop_change_share: f(cfg.pop_change_share),
                pop_retry_max: cfg.pop_retry_max,
                transaction_share: f(cfg.transaction_share),
                body_bytes: cfg.body_bytes as u64,
                topic_created: cfg.topic_created,
                topic_queues: cfg.topic_queues,
                latency_fault: cfg.latency_fault,
                resend_failed: cfg.resend_failed,
            },
            phases: Phases {
                safety_ms: cfg.safety_ms,
                liveness_ms: cfg.liveness_ms,
                settled_ms: cfg.settled_ms,
            },
            faults,
            disk,
            invariants: cfg.invariants.clone(),
            bugs: cfg.bugs.clone(),
            schedule: cfg.schedule.clone(),
        }
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a scenario always serializes")
    }
}

/// A named built-in scenario's configuration for `seed`; `None` for an unknown name.
pub fn scenario(name: &str, seed: u64) -> Option<SimConfig> {
    ScenarioFile::built_in(name).map(|s| s.config(seed))
}

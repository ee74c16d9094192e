//! What a run looks like: cluster shape, workload, faults and phases, all drawn from one seed
//! within the bounds a scenario sets.

use rockfish_core::broker::{BrokerLimits, FlushDiskType};
use serde::{Deserialize, Serialize};

pub use crate::knobs::Faults;

#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    pub seed: u64,
    pub flush: FlushDiskType,
    pub name_servers: usize,
    /// Broker groups: a master each, and `slaves` slaves.
    pub brokers: usize,
    /// Slaves per broker group (brokerId 1..): they follow their master's log.
    pub slaves: usize,
    /// The masters' role (ASYNC_MASTER or SYNC_MASTER; slaves are SLAVE).
    pub master_role: rockfish_core::broker::BrokerRole,
    /// Controller mode: every name server embeds a controller (three name servers: a raft
    /// group of three) and the brokers of a group are replicas (brokerId 1..) whose master
    /// the controllers elect; `master_role` says how a master acks.
    pub controller: bool,
    pub producers: usize,
    /// Consumers of the clustering group.
    pub consumers: usize,
    /// Consumers of a broadcasting group: each must get every message.
    pub broadcast_consumers: usize,
    /// Consumers of a clustering group subscribed to some tags only
    /// (`world::TAGGED_SUBSCRIPTION`): the group must get exactly the matching messages.
    pub tagged_consumers: usize,
    /// Simple (pop) consumers of the group "SimPop" (`world::POP_GROUP`): the broker hands
    /// messages out invisible for a while; each must be acked by one of them, or end in
    /// `%DLQ%SimPop`.
    pub pop_consumers: usize,
    /// The clustering group consumes orderly and producers send by sharding key.
    pub orderly: bool,
    /// The tagged group subscribes with an SQL92 expression over the tag and a numeric
    /// property (`world::TAGGED_SQL`) instead of a tag expression.
    pub tagged_sql: bool,
    /// Producers mix their sends: sync, async, oneway and batches (else async only).
    pub mixed_sends: bool,
    /// Chance that the application answers a delivery with "reconsume later".
    pub reconsume_share: f64,
    /// Chance a message is sent with a delay level (1 to 4 of the simulated levels).
    pub delay_share: f64,
    /// Chance a message (not delayed) is a timer message, due 0.5 to 5 s after it is stored.
    pub timer_share: f64,
    /// Chance a message is poison: the clustering group's application fails it every time,
    /// so it is retried behind its backoff until it is a dead letter.
    pub poison_share: f64,
    /// The clustering group's maxReconsumeTimes (-1: the client's default, 16).
    pub max_reconsume_times: i32,
    /// Chance the pop group's application leaves a received message un-acked (it must come
    /// back once its invisible time lapses).
    pub pop_unacked_share: f64,
    /// Chance the pop group's application makes a received message invisible for longer
    /// (then acks it within that time, or now and then not at all).
    pub pop_change_share: f64,
    /// The pop group's retryMaxTimes (its subscription group's, set before the run): a
    /// message handed out this many times after its first and not acked is a dead letter.
    pub pop_retry_max: i32,
    /// Chance a message (single, concurrent, not delayed) is sent in a transaction: its
    /// local transaction commits or rolls back, ends late or not at all, and check-backs
    /// answer for it (`world::TxPlan`).
    pub transaction_share: f64,
    /// Each message body is padded to at least this many bytes (to fill disks).
    pub body_bytes: usize,
    /// The topic exists before the run, and consumers start once brokers have registered.
    pub topic_created: bool,
    /// Queues of the topic created before the run (more than 64 make checkpoints space out).
    pub topic_queues: u32,
    /// Producers avoid brokers that failed or answered slowly (sendLatencyFaultEnable).
    pub latency_fault: bool,
    /// After the heal, a failed send is sent again by the application (up to
    /// `world::APP_RESENDS` times, a second apart).
    pub resend_failed: bool,
    /// Messages each producer sends, one every `send_interval_ms`.
    pub messages: usize,
    pub send_interval_ms: u64,
    /// Messages each producer sends after the heal; every one must be acknowledged and consumed.
    pub liveness_messages: usize,
    /// Faults fly for this long.
    pub safety_ms: u64,
    /// Then faults stop and the cluster must converge within this long.
    pub liveness_ms: u64,
    /// The last batch (judged for duplicates and latency) is sent this long after the heal.
    pub settled_ms: u64,
    pub faults: Faults,
    /// Every broker's caps (tests lower them to make brokers refuse and close).
    pub broker_limits: BrokerLimits,
    pub bugs: Bugs,
    /// The invariants judged (names from `scenario::INVARIANTS`).
    pub invariants: Vec<String>,
    /// The faults to inject, one by one, instead of drawing them from the rates (what a
    /// shrink narrows down to single events). Rates of frame, disk and buggify faults still
    /// apply.
    pub schedule: Option<Vec<FaultAt>>,
}

/// One fault event, at a simulated time: what a run draws (`Outcome::faults`) and what a
/// schedule injects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultAt {
    /// Simulated time it was drawn at, ms (a broker's tick: the crashing broker's for a
    /// crash, the first broker's for the rest); a schedule starts it at the first such tick
    /// at or after this time.
    pub at: u64,
    #[serde(flatten)]
    pub fault: Fault,
}

/// A fault event (nodes numbered as the trace numbers them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "fault", rename_all = "kebab-case")]
pub enum Fault {
    /// A broker process dies `after_ms` later (`power`: the machine loses power).
    Crash {
        broker: usize,
        power: bool,
        #[serde(default)]
        after_ms: u64,
    },
    /// A client is cut off from every broker, both ways.
    CutFromBrokers { client: usize, ms: u64 },
    /// A node stops hearing from every other (`deaf`), or stops reaching them.
    OneWay { node: usize, deaf: bool, ms: u64 },
    /// A node is cut off from every other, both ways.
    Isolate { node: usize, ms: u64 },
    /// Two nodes stop hearing each other, both ways (a master and its slave, say), each
    /// still reaching everyone else.
    Cut { a: usize, b: usize, ms: u64 },
    /// A swizzle-clog (its nodes and timings drawn when it starts).
    Swizzle,
    /// A node stops handling anything for a while.
    Pause { node: usize, ms: u64 },
    /// A consumer leaves its group (and rejoins later).
    Leave { consumer: usize },
    /// A producer or consumer process is killed (and restarted later).
    ClientCrash { node: usize },
    /// A name server dies (and comes back empty).
    NsCrash { ns: usize },
}

impl SimConfig {
    /// Consumers of every group.
    pub fn all_consumers(&self) -> usize {
        self.consumers + self.broadcast_consumers + self.tagged_consumers + self.pop_consumers
    }

    /// A small fault-free cluster: one name server, one broker, one producer, two consumers.
    pub fn smoke(seed: u64) -> SimConfig {
        SimConfig {
            seed,
            flush: FlushDiskType::Sync,
            name_servers: 1,
            brokers: 1,
            slaves: 0,
            master_role: rockfish_core::broker::BrokerRole::AsyncMaster,
            controller: false,
            producers: 1,
            consumers: 2,
            broadcast_consumers: 0,
            tagged_consumers: 0,
            pop_consumers: 0,
            orderly: false,
            tagged_sql: false,
            mixed_sends: false,
            reconsume_share: 0.0,
            delay_share: 0.0,
            timer_share: 0.0,
            poison_share: 0.0,
            max_reconsume_times: -1,
            pop_unacked_share: 0.0,
            pop_change_share: 0.0,
            pop_retry_max: 2,
            transaction_share: 0.0,
            body_bytes: 0,
            topic_created: false,
            topic_queues: 4,
            latency_fault: false,
            resend_failed: false,
            messages: 200,
            send_interval_ms: 20,
            liveness_messages: 20,
            safety_ms: 10_000,
            liveness_ms: 100_000,
            settled_ms: crate::world::SETTLED_RESUME_MS,
            faults: Faults::default(),
            broker_limits: BrokerLimits::default(),
            bugs: Bugs::default(),
            invariants: crate::scenario::INVARIANTS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            schedule: None,
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
    /// Brokers answer a send with the queue offset one past the one the message got.
    pub ack_wrong_offset: bool,
    /// Orderly consumers pull and consume a queue without holding its broker lock.
    pub orderly_ignores_lock: bool,
    /// Clustering consumers take every queue of the topic, whatever the group's size.
    pub rebalance_takes_all: bool,
    /// Brokers never wake a held pull when a message arrives: it waits out its hold.
    pub lost_wakeup: bool,
    /// Orderly consumers waiting for a queue's lock keep a pull back-off that ran out: their
    /// timer fires every millisecond until the lock comes.
    pub spins_while_unlocked: bool,
    /// Brokers compare consume queue tag codes against the wrong hash: a tag subscription
    /// matches none of its messages.
    pub tag_codes_wrong: bool,
    /// Name servers never expire a silent broker: one that lost power keeps its routes.
    pub namesrv_never_expires: bool,
    /// Brokers deliver delayed messages half their delay early.
    pub delay_early: bool,
    /// Brokers deliver timer messages a second early.
    pub timer_early: bool,
    /// Brokers store a sent-back message straight into its retry topic, with no backoff.
    pub retry_undelayed: bool,
    /// Brokers make a failing message a dead letter one reconsumption early.
    pub dlq_early: bool,
    /// Brokers never make a failing message a dead letter: it is retried forever.
    pub dlq_never: bool,
    /// Brokers commit a transaction the producer rolled back.
    pub tx_rollback_commits: bool,
    /// Brokers accept every end of a transaction, also a repeat or a late one for a half
    /// already handed to its check (Apache's behaviour): a message committed twice.
    pub tx_ends_twice: bool,
    /// Brokers never send a check-back: an undecided transaction stays undecided.
    pub tx_never_checks: bool,
    /// Brokers serve an SQL92 subscription the messages it does not match, and not those it
    /// matches.
    pub sql_inverted: bool,
    /// A SYNC_MASTER acks a send without waiting for its slave.
    pub ha_ack_before_slave: bool,
    /// A master believes a slave's first report past its own end, and every report past
    /// what it sent the slave (Apache #1155/#3015's early ack).
    pub ha_trust_report: bool,
    /// Controllers elect any registered replica, in the SyncStateSet or not.
    pub elect_outside_sync_set: bool,
    /// A returning old master keeps the tail the new master never had.
    pub no_truncation: bool,
    /// A replica cut off from its master's stream takes over by itself, in its epoch.
    pub self_promote: bool,
    /// A replica that is not master serves consumers everything it holds, not only what its
    /// master confirmed (a deposed master's tail, before it is cut).
    pub slave_serves_unconfirmed: bool,
    /// A slave writes to its own log (it journals the consumer offsets committed to it):
    /// its log is no longer its master's.
    pub slave_writes: bool,
    /// Brokers answer a pop ack SUCCESS without journaling or deciding it: the message
    /// comes back once its invisible time lapses.
    pub pop_ack_forgotten: bool,
    /// Brokers make a popped message visible again after a quarter of its invisible time.
    pub pop_early_revive: bool,
    /// Brokers decide a lapsed pop checkpoint without storing its retry copy: the message
    /// is gone.
    pub pop_revive_drops: bool,
    /// Brokers move a pop group's offset past what a pop handed out in memory only (neither
    /// journaled nor restored from the checkpoint at start): a crash before the next offsets
    /// snapshot hands the same messages out again, while they are still invisible.
    pub pop_offset_unjournaled: bool,
}

impl Bugs {
    pub fn is_none(&self) -> bool {
        *self == Bugs::default()
    }
}

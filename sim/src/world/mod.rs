//! The discrete-event world: nodes, a network of encoded frames, faults, workload, history.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use rockfish_core::broker::{Broker, BrokerConfig};
use rockfish_core::consumer::{
    ConsumeFrom, ConsumeResult, Consumer, ConsumerConfig, ConsumerEvent, MessageModel,
    SimpleConsumer,
};
use rockfish_core::controller::{Controller, ControllerConfig};
use rockfish_core::machine::ConnId;
use rockfish_core::namesrv::{NameServer, NameServerConfig};
use rockfish_core::producer::{
    Message, Producer, ProducerConfig, ProducerEvent, SendId, SendMode, SendStatus,
};
use rockfish_store::config::{self, TopicConfig, TopicConfigTable};
use rockfish_store::{Disk, FaultPlan, MemDisk, MessageStore, OffTaskSync, SyncWork};

use crate::config::{Fault, FaultAt, Faults, SimConfig};
use crate::harness::fabric::{Fabric, Node, Routed, unframe};

mod events;
mod faults;
mod network;
mod nodes;
mod pop;
mod record;
mod transactions;

pub use pop::{POP_GROUP, PopAck, PopChange, PopDelivery, PopHandout, PopOutcome};

/// Name server `i` listens here.
fn ns_addr(i: usize) -> String {
    format!("10.0.0.{}:9876", i + 1)
}

/// Broker `j` listens here.
fn broker_addr(j: usize) -> String {
    format!("10.0.1.{}:10911", j + 1)
}

/// Broker `j`'s HA port (a master's: its slaves dial it).
fn broker_ha_addr(j: usize) -> String {
    format!("10.0.1.{}:10912", j + 1)
}
const TOPIC: &str = "SimTopic";
/// Every message goes to one of these topics, chosen by its sharding key (so an orderly key
/// stays in one topic); every group subscribes to both.
pub const TOPICS: [&str; 2] = [TOPIC, "SimOrders"];

/// The topic of message number `n` (its sharding key is `n % 8`).
fn topic_of(n: usize) -> &'static str {
    TOPICS[(n % 8) % TOPICS.len()]
}
/// Messages carry these tags in turn (by their number), and keys "k<number>".
const TAGS: [&str; 3] = ["TagA", "TagB", "TagC"];
/// What the tagged group subscribes to.
pub const TAGGED_SUBSCRIPTION: &str = "TagA || TagC";
/// What the tagged group subscribes to with `tagged_sql`: over the tag and the `prio`
/// property (0 to 9, [`sql_prio`]); [`tagged_sql_matches`] is the checker's reading of it.
pub const TAGGED_SQL: &str = "(TAGS IN ('TagA', 'TagC') AND prio < 7) OR \
     /* TagB only when urgent */ (TAGS = 'TagB' AND prio BETWEEN 8 AND 9)";

/// The `prio` property of message number `n` (with `tagged_sql`).
pub fn sql_prio(n: usize) -> u32 {
    (n * 7 % 10) as u32
}

/// Whether [`TAGGED_SQL`] matches a message of this tag and prio.
pub fn tagged_sql_matches(tag: &str, prio: u32) -> bool {
    ((tag == "TagA" || tag == "TagC") && prio < 7) || (tag == "TagB" && (8..=9).contains(&prio))
}
/// How long after the heal producers send again: routes converge within one broker register
/// interval (30 s, as RocketMQ's: a name server that came back empty learns a broker at its
/// next registration), then a few seconds for clients to refresh. Consumers then need up to a
/// route poll (30 s) and a rebalance (20 s) to reach a queue created after the heal: scenarios
/// give the liveness phase 100 s.
const LIVENESS_RESUME_MS: u64 = 35_000;
/// How long after the heal producers send a last batch, once every rebalance has settled:
/// those messages are judged for duplicates and delivery latency. Sent only when the liveness
/// phase leaves [`SETTLED_GRACE_MS`] after it.
pub const SETTLED_RESUME_MS: u64 = 75_000;
const SETTLED_GRACE_MS: u64 = 15_000;
/// A node whose timer is due again right after firing this many times in a row spins.
const BUSY_TIMER_STREAK: u32 = 100;
/// With `resend_failed`, how many times the application sends a failed message again, and
/// how long it waits before each, ms.
pub const APP_RESENDS: u32 = 5;
const APP_RESEND_MS: u64 = 1_000;
/// How long a broker armed to die at a disk operation may go without one before it dies
/// anyway, ms.
const FUSE_FALLBACK_MS: u64 = 2_000;
/// How long the application takes over one message, ms (drawn per delivery).
const PROCESSING_MS: (u64, u64) = (1, 8);
/// With `topic_created`, consumers start this long after the brokers (which register the
/// topic at once), so their first route query finds it.
const CONSUMERS_START_MS: u64 = 200;
const CONTROLLER_CONSUMERS_START_MS: u64 = 5_000;

/// The random streams (see `Sim::streams`).
#[derive(Debug, Clone, Copy)]
enum Stream {
    /// Machine seeds, flush latency.
    Main,
    /// Drops, duplicates, latency.
    Net,
    /// Broker crashes and power losses.
    Crash,
    /// Client-broker cuts.
    Partition,
    Namesrv,
    /// The application's answers (consumed, or reconsume later).
    App,
    /// Consumers leaving and joining.
    Churn,
    Pause,
    OneWay,
    Isolate,
    Swizzle,
    /// Slow syncs.
    Disk,
    /// Producer and consumer processes killed.
    ClientCrash,
    /// Clock steps at restarts.
    Clock,
    /// Which messages are delayed (and by which level) and which are poison.
    Workload,
    /// Transactions: each one's plan, and the check-backs' answers.
    Transaction,
    /// Cuts between two replicas of a group.
    ReplicaCut,
    /// The pop group's application: what it does with each message it receives.
    PopApp,
}
const STREAMS: usize = 18;

/// The simulated brokers' delay levels: level n waits n seconds (a retry after k
/// reconsumptions takes level 3 + k: 3 s, 4 s, …), so retries and dead letters happen
/// within a run.
pub const SIM_DELAY_LEVELS_MS: [i64; 18] = [
    1_000, 2_000, 3_000, 4_000, 5_000, 6_000, 7_000, 8_000, 9_000, 10_000, 11_000, 12_000, 13_000,
    14_000, 15_000, 16_000, 17_000, 18_000,
];
/// Delayed sends draw a level from 1 to this.
pub const SIM_MAX_SEND_LEVEL: u64 = 4;

/// The clustering group's name (its retry topic is `%RETRY%SimConsumers`, its dead letters
/// go to `%DLQ%SimConsumers`).
pub const CLUSTERING_GROUP: &str = "SimConsumers";

/// The store geometry and delay levels of every simulated broker.
pub fn sim_store_config() -> rockfish_store::StoreConfig {
    rockfish_store::StoreConfig {
        delay_levels_ms: SIM_DELAY_LEVELS_MS.to_vec(),
        // The simulated disk really zeroes what is prewritten: a store that prewrote over
        // its own data would lose it under every checker.
        warm_mapped_file: Some(true),
        ..rockfish_store::StoreConfig::simulated()
    }
}

/// A partition: frames from `a` to `b` are lost (and from `b` to `a` if `both_ways`).
#[derive(Debug, Clone)]
struct Cut {
    id: u64,
    a: BTreeSet<usize>,
    b: BTreeSet<usize>,
    both_ways: bool,
}

impl Cut {
    fn blocks(&self, from: usize, to: usize) -> bool {
        (self.a.contains(&from) && self.b.contains(&to))
            || (self.both_ways && self.b.contains(&from) && self.a.contains(&to))
    }
}

/// A clogged node: frames to and from it sent in `[from, until)` are held until `until`.
#[derive(Debug, Clone, Copy)]
struct Clog {
    node: usize,
    from: u64,
    until: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Frame {
        sent: u64,
        from: usize,
        to: usize,
        frame: Bytes,
        /// The incarnations of `from` and `to` when it was sent: a connection belongs to
        /// one process at each end (see `Sim::deliver`).
        epochs: (u32, u32),
        /// When it reached `to`, if `to` was paused then: the driver read it off the socket
        /// at that time and the machine is told so (`received_at`), so a send held through
        /// a pause meets the broker's queue-wait flow control as it would on a real host.
        arrived: Option<u64>,
    },
    Tick {
        node: usize,
    },
    Send {
        producer: usize,
        n: usize,
    },
    /// A broker's flush or persist work, built when it asked (`Sim::disk_work`), completes.
    FlushDone {
        broker: usize,
        generation: u64,
        upto: u64,
        work: u64,
    },
    PersistDone {
        broker: usize,
        generation: u64,
        token: u64,
        work: u64,
    },
    /// A name server's embedded controller's persist completes (unless it went down since:
    /// `epoch` is its process's).
    NsPersistDone {
        ns: usize,
        epoch: u32,
        token: u64,
        work: u64,
    },
    Crash {
        broker: usize,
        power: bool,
        /// An operator's restart, not a fault: it happens in the liveness phase too.
        operator: bool,
    },
    Restart {
        broker: usize,
    },
    /// A name server dies (its route table with it) and comes back empty.
    /// A broker armed to die at a disk operation that did none since: it dies now.
    FuseFallback {
        broker: usize,
        generation: u64,
    },
    NsCrash {
        ns: usize,
    },
    NsRestart {
        ns: usize,
    },
    Heal {
        id: u64,
        node: usize,
    },
    Pause {
        node: usize,
        ms: u64,
    },
    /// A consumer shuts down and leaves its group.
    Leave {
        consumer: usize,
    },
    /// A producer or consumer process is killed: it says goodbye to no one.
    ClientCrash {
        node: usize,
    },
    /// The application finished a delivered batch (`Sim::jobs`).
    Processed {
        consumer: usize,
        job: u64,
    },
    Join {
        consumer: usize,
    },
    Liveness,
    /// A producer's application ends a transaction (`Sim::tx_ends`).
    EndTransaction {
        ticket: u64,
    },
    /// A pop consumer's application receives from `TOPICS[topic]` (its process `epoch`).
    PopReceive {
        consumer: usize,
        epoch: u32,
        topic: usize,
    },
    /// A pop consumer's application acks a message it received, or changes its
    /// invisibility (`delivery`: its index in `History::pop_delivered`).
    PopAnswer {
        consumer: usize,
        epoch: u32,
        delivery: usize,
        action: pop::PopAction,
    },
    /// Bytes on a raw stream (a slave's HA link), FIFO per link as frames.
    StreamBytes {
        sid: u64,
        from: usize,
        to: usize,
        bytes: Bytes,
        epochs: (u32, u32),
    },
    /// One end of a stream learns it is gone (the peer reset it, the dial failed).
    StreamLost {
        node: usize,
        conn: ConnId,
        epoch: u32,
    },
}

/// Which group a consumer belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Group {
    /// "SimConsumers": clustering, orderly when the run is, every tag.
    Clustering,
    /// "SimBroadcast": each consumer gets every message.
    Broadcast,
    /// "SimTagged": clustering, [`TAGGED_SUBSCRIPTION`] only.
    Tagged,
    /// "SimPop" ([`POP_GROUP`]): simple consumers, pop consumption.
    Pop,
}

/// One message handed to a consumer's application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Simulated time of the delivery, ms.
    pub at: u64,
    pub consumer: usize,
    pub group: Group,
    pub body: String,
    /// Its TAGS property ("" if none).
    pub tags: String,
    pub broker: String,
    /// The topic it was pulled from (the retry topic for a message consumed again).
    pub topic: String,
    pub queue: u32,
    pub offset: u64,
    /// The application consumed it (else it asked for it again later).
    pub consumed: bool,
    /// How many times it had been reconsumed (its record's reconsumeTimes).
    pub reconsumed: i32,
    /// The broker's store timestamp of the record delivered (its clock when it stored it).
    pub stored_ts: i64,
    /// It reached its topic through the schedule topic or the timing wheel (it carries
    /// REAL_TOPIC).
    pub via_schedule: bool,
    /// A timer message's delivery time by the broker's clock (TIMER_OUT_MS).
    pub timer_due: Option<i64>,
}

impl Delivery {
    /// A delivery of a body from nowhere in particular (for tests of the checkers).
    pub fn of(consumer: usize, body: &str) -> Delivery {
        Delivery {
            at: 0,
            consumer,
            group: Group::Clustering,
            body: body.into(),
            tags: String::new(),
            broker: String::new(),
            topic: TOPIC.into(),
            queue: 0,
            offset: 0,
            consumed: true,
            reconsumed: 0,
            stored_ts: 0,
            via_schedule: false,
            timer_due: None,
        }
    }

    /// Who is owed each message once: the group, or a broadcasting consumer on its own.
    pub fn receiver(&self) -> (Group, usize) {
        match self.group {
            Group::Broadcast => (Group::Broadcast, self.consumer),
            g => (g, 0),
        }
    }
}

/// A stretch of time during which a clustering consumer's application held messages of one
/// queue: from the delivery until it answered (or its process exited).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Processing {
    pub consumer: usize,
    pub broker: String,
    pub topic: String,
    pub queue: u32,
    pub from: u64,
    pub to: u64,
}

/// Where a send's acknowledgement said the message is stored.
pub type AckedAt = StoreSlot;

/// A batch the application is working on.
#[derive(Debug, Clone)]
struct Job {
    consumer: usize,
    mq: rockfish_core::protocol::MessageQueue,
    from: u64,
    answers: Vec<(u64, ConsumeResult)>,
}

/// Which brokers a node's view of the topic's route lists, at the end of the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteView {
    pub node: usize,
    pub topic: String,
    pub brokers: Vec<String>,
}

/// A schedule topic record at the end of a run: (store timestamp, delay level, reconsume
/// times).
pub type Scheduled = (i64, u32, i32);

/// A broker crash or power loss.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrashRecord {
    pub at: u64,
    /// The broker's name (as deliveries name it).
    pub broker: String,
    pub power: bool,
}

/// Where a message is stored at the end of a run: (broker, topic, queue id, queue offset).
pub type StoreSlot = (String, String, u32, u64);

/// What happened, for the checkers.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// body -> (acknowledged status, if any)
    pub sent: BTreeMap<String, Option<SendStatus>>,
    /// body -> when the producer first sent it (no broker held it earlier).
    pub sent_at: BTreeMap<String, u64>,
    /// In delivery order.
    pub delivered: Vec<Delivery>,
    /// The broadcasting group's consumers (nodes).
    pub broadcast_consumers: Vec<usize>,
    /// The tagged group's consumers (nodes).
    pub tagged_consumers: Vec<usize>,
    /// The pop group's consumers (nodes).
    pub pop_consumers: Vec<usize>,
    /// Every message the pop group's consumers received, in order.
    pub pop_delivered: Vec<PopDelivery>,
    /// Every answer to the pop group's acks, in order.
    pub pop_acks: Vec<PopAck>,
    /// Every answer to the pop group's changes of invisibility, in order.
    pub pop_changes: Vec<PopChange>,
    /// Every message the brokers handed out to the pop group, as their pop journals
    /// recorded each checkpoint when it was written (also those whose answer never reached
    /// a consumer).
    pub pop_handouts: Vec<PopHandout>,
    /// Every pop ack a broker took, as its pop journal recorded it when written: (when,
    /// broker, body). An ack whose answer was lost on its way is here too.
    pub pop_journaled_acks: Vec<(u64, String, String)>,
    /// What the running brokers' `%DLQ%SimPop` holds at the end: (broker, body, reconsume
    /// times).
    pub pop_dead_letters: Vec<(String, String, i32)>,
    /// body -> the tag it was sent with.
    pub tags: BTreeMap<String, String>,
    /// Messages sent oneway (never acknowledged).
    pub oneway: BTreeSet<String>,
    /// topic -> the brokers that host it at the end of the run.
    pub hosting: BTreeMap<String, Vec<String>>,
    /// Every live name server's and client's view of the topic's route at the end.
    pub routes: Vec<RouteView>,
    pub crashes: u32,
    pub power_losses: u32,
    pub namesrv_crashes: u32,
    /// Every broker crash and power loss, in time order.
    pub crash_log: Vec<CrashRecord>,
    /// Brokers that crashed and never came back (what their disks hold is not judged).
    pub lost_brokers: BTreeSet<String>,
    /// The topic's messages in each running broker's store at the end of the run: slot -> body.
    pub stored: BTreeMap<StoreSlot, String>,
    /// The brokers whose stores `stored` covers (a broker down at the end is not judged).
    pub stored_brokers: BTreeSet<String>,
    /// The topics `stored` covers.
    pub stored_topics: BTreeSet<String>,
    /// body -> where its SEND_OK said it is stored.
    pub acked_at: BTreeMap<String, AckedAt>,
    /// The clustering group's applications at work, queue by queue.
    pub processing: Vec<Processing>,
    /// Which running consumers of each clustering group own each queue at the end:
    /// (group, broker, topic, queue) -> consumers.
    pub owners: BTreeMap<(Group, String, String, u32), Vec<usize>>,
    /// Messages sent from then on are sent once every rebalance has settled (no faults for
    /// [`SETTLED_RESUME_MS`]); `None` when the run has no such batch.
    pub settled_from: Option<u64>,
    /// (node, when) for each node whose timer span (`BUSY_TIMER_STREAK` firings in a row
    /// due again at once).
    pub busy_timers: Vec<(usize, u64)>,
    /// (broker, what) for each way a running broker's store disagreed with itself or with
    /// its disk at the end.
    pub store_problems: Vec<(String, String)>,
    /// (group, what) for each slave whose log is not a prefix of its master's at the end.
    pub replica_problems: Vec<(String, String)>,
    /// (body, what) for each send a SYNC_MASTER acked SEND_OK that its slave did not hold
    /// durably when the producer heard the ack.
    pub sync_unreplicated: Vec<(String, String)>,
    /// Controller mode: (group, what) for each master epoch two replicas led.
    pub two_masters: Vec<(String, String)>,
    /// Controller mode: (group, master epoch) -> the replica (node) that led it.
    pub epoch_masters: BTreeMap<(usize, u64), usize>,
    /// Controller mode: failovers seen (a group's master epoch moving on).
    pub failovers: u64,
    /// Reads of consume queue bytes that came back with a bit flipped, over every broker's
    /// disk and the whole run.
    pub queue_bitflips: u64,
    /// body -> the delay level it was sent with.
    pub delayed: BTreeMap<String, u32>,
    /// body -> the timer delay (TIMER_DELAY_MS) it was sent with.
    pub timers: BTreeMap<String, u64>,
    /// Bodies the clustering group's application fails every time.
    pub poison: BTreeSet<String>,
    /// What the running brokers' schedule topics hold at the end: (broker, body) -> each
    /// record's (store timestamp, delay level, reconsume times).
    pub scheduled: BTreeMap<(String, String), Vec<Scheduled>>,
    /// What the running brokers' dead-letter topics hold at the end: (broker, group's topic,
    /// body, reconsume times).
    pub dead_letters: Vec<(String, String, String, i32)>,
    /// body -> its `prio` property (with `tagged_sql`).
    pub prio: BTreeMap<String, u32>,
    /// body -> how its transaction goes (transactional sends only).
    pub transactions: BTreeMap<String, TxPlan>,
    /// Transactions whose local transaction ran (the half's send came back SEND_OK): the
    /// application's database, which every producer of the group answers check-backs from.
    pub tx_ran: BTreeSet<String>,
    /// The first halves (not the copies a check puts back) the running brokers hold at the
    /// end.
    pub tx_halves: Vec<TxHalf>,
    /// The committed copies the running brokers hold at the end: (broker, body, the queue
    /// offset of the transaction's first half, if its half reads).
    pub tx_commits: Vec<(String, String, Option<u64>)>,
}

/// How a simulated application's transaction goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxPlan {
    /// The local transaction commits (else it rolls back).
    pub commit: bool,
    /// The producer ends it with the outcome (else it says UNKNOW and leaves it to the
    /// check-back).
    pub ends: bool,
    /// The end comes this long after the half's SEND_OK (past the broker's check timeout, it
    /// races the check-back).
    pub end_after_ms: u64,
}

/// A transaction's first half stored at the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxHalf {
    pub broker: String,
    pub body: String,
    pub queue_offset: u64,
    /// Its store time and the broker's clock at the end: how long check-backs had.
    pub stored_ts: i64,
    pub broker_now: u64,
}

/// How long after a half is stored (and after the heal) its transaction must be resolved:
/// a producer heartbeat (a restarted broker knows no producer until then), the timeout,
/// three check intervals (answers may be UNKNOW), and the application's slowest end.
pub const TX_RESOLVE_BOUND_MS: u64 =
    30_000 + SIM_TX_TIMEOUT_MS + 3 * SIM_TX_CHECK_INTERVAL_MS + 8_000;
/// The simulated brokers' transactionTimeOut and transactionCheckInterval.
pub const SIM_TX_TIMEOUT_MS: u64 = 2_000;
pub const SIM_TX_CHECK_INTERVAL_MS: u64 = 3_000;

/// The end of a run.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub seed: u64,
    pub digest: String,
    pub events: u64,
    pub sim_ms: u64,
    pub history: History,
    pub trace: Vec<String>,
    /// Node names by index, as the trace numbers them.
    pub nodes: Vec<String>,
    /// The fault events drawn (or scheduled), in the order they started: a schedule that
    /// replays them.
    pub faults: Vec<FaultAt>,
}

pub struct Sim {
    cfg: SimConfig,
    /// One random stream per kind of decision, all from the seed: removing one kind of fault
    /// (shrinking) does not shift the draws of the others.
    streams: [Xoshiro256PlusPlus; STREAMS],
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64, Ev)>>,
    /// The nodes and their connections. Nodes `0..name_servers` are name servers, then
    /// `brokers` brokers, then producers, then consumers.
    fabric: Fabric,
    name_servers: usize,
    brokers: usize,
    /// How far each node's clock runs ahead of simulated time.
    skew: Vec<i64>,
    /// Per node, how fast its clock runs, parts per million (negative: slow).
    drift: Vec<i64>,
    /// Per node, how many times its process died: a connection dies with the process at
    /// either end, so a restarted node never sees frames of its predecessor's connections.
    epochs: Vec<u32>,
    /// Per broker node: it was a master when its process last died (controller mode: a
    /// power loss while it recovers takes that master's unflushed tail).
    died_as_master: Vec<bool>,
    /// Brokers set to die at one of their next disk operations (`MemDisk::arm_fuse`), and
    /// whether that is a power loss, and for good.
    armed: BTreeMap<usize, (bool, bool)>,
    /// Controller mode: each replica's role, epoch and log end as last seen (the trace
    /// names each change, and each cut of a log).
    replica_views: BTreeMap<usize, (bool, u64, u64)>,
    /// Brokers lost for good.
    lost: BTreeSet<usize>,
    /// Fault events started so far (`Outcome::faults`).
    faults: Vec<FaultAt>,
    /// Which of the schedule's events have started.
    scheduled_done: BTreeSet<usize>,
    /// Name servers that are down: frames to and from them are lost.
    down: BTreeSet<usize>,
    link_free: BTreeMap<(usize, usize), u64>,
    ticks: BTreeMap<usize, u64>,
    cuts: Vec<Cut>,
    next_cut: u64,
    clogs: Vec<Clog>,
    /// Paused nodes, until when.
    paused: BTreeMap<usize, u64>,
    /// Consumers that left their group, and producers and consumers killed (until they
    /// restart).
    left: BTreeSet<usize>,
    /// Clients killed, not yet restarted.
    killed: BTreeSet<usize>,
    faults_on: bool,
    /// What each send in flight carries (a batch: several bodies).
    /// Sends in flight: (producer, id) -> the message number and the bodies it carries.
    sends: BTreeMap<(usize, SendId), (usize, Vec<String>)>,
    /// body -> how many times the application sent it again after a failure.
    resent: BTreeMap<String, u32>,
    /// Transaction ends the applications will send: ticket -> (producer, its incarnation,
    /// the half's send result, body). A producer killed meanwhile never sends its end.
    tx_ends: BTreeMap<u64, (usize, u32, rockfish_core::producer::SendResult, String)>,
    next_tx_end: u64,
    /// body -> when its transactional send was last made (a check-back before the send can
    /// have finished is answered UNKNOW).
    tx_sent_at: BTreeMap<String, u64>,
    /// Disk work the brokers asked for, built when they asked (as the driver builds it for
    /// its flush thread) and run when it completes: by id.
    disk_work: BTreeMap<u64, Result<SyncWork, String>>,
    /// Controller mode: each name server's disk (its controller's raft log).
    ns_disks: Vec<MemDisk>,
    next_work: u64,
    /// Batches the applications are working on, by id.
    jobs: BTreeMap<u64, Job>,
    /// Per node, how many of its timer firings in a row left it due again at once.
    due_streak: BTreeMap<usize, u32>,
    /// The pop group's applications, by consumer node.
    pop_apps: BTreeMap<usize, pop::PopApp>,
    /// Per broker node, how far its pop journal has been read (`Sim::scan_pop_journal`).
    pop_seen: BTreeMap<usize, u64>,
    /// Per broker node, when its last running process died.
    pop_died_at: BTreeMap<usize, u64>,
    /// The broker whose timeout is being handled (its pop journal records are revives).
    pop_timeout: Option<usize>,
    next_job: u64,
    history: History,
    trace: Vec<String>,
    crc: crc32fast::Hasher,
    events: u64,
    /// Keeps this thread's buggify sites armed for the safety phase (one run at a time per
    /// thread).
    _sites: Sites,
    /// How often the sites fired.
    buggify_fired: u64,
}

/// Arms the machines' fault sites on this thread for one run; disarms them when dropped.
struct Sites;

impl Sites {
    fn arm(cfg: &SimConfig) -> Sites {
        if cfg.faults.buggify {
            rockfish_core::buggify::arm(cfg.seed ^ 0xb06f_1fb0_6f1f);
        } else {
            rockfish_core::buggify::disarm();
        }
        rockfish_core::buggify::clear_bugs();
        let bugs = [
            (cfg.bugs.serve_unflushed, "broker.serve-unflushed"),
            (cfg.bugs.ack_wrong_offset, "broker.ack-wrong-offset"),
            (
                cfg.bugs.orderly_ignores_lock,
                "consumer.orderly-ignores-lock",
            ),
            (cfg.bugs.rebalance_takes_all, "consumer.rebalance-takes-all"),
            (cfg.bugs.lost_wakeup, "broker.lost-wakeup"),
            (
                cfg.bugs.spins_while_unlocked,
                "consumer.spins-while-unlocked",
            ),
            (cfg.bugs.tag_codes_wrong, "broker.tag-codes-wrong"),
            (cfg.bugs.namesrv_never_expires, "namesrv.never-expires"),
            (cfg.bugs.delay_early, "broker.schedule-early"),
            (cfg.bugs.timer_early, "broker.timer-early"),
            (cfg.bugs.retry_undelayed, "broker.retry-undelayed"),
            (cfg.bugs.dlq_early, "broker.dlq-early"),
            (cfg.bugs.dlq_never, "broker.dlq-never"),
            (cfg.bugs.tx_rollback_commits, "broker.tx-rollback-commits"),
            (cfg.bugs.tx_ends_twice, "broker.tx-ends-twice"),
            (cfg.bugs.tx_never_checks, "broker.tx-never-checks"),
            (cfg.bugs.sql_inverted, "broker.sql-inverted"),
            (cfg.bugs.ha_ack_before_slave, "broker.ha-ack-before-slave"),
            (cfg.bugs.slave_writes, "broker.slave-writes"),
            (cfg.bugs.ha_trust_report, "ha.trust-report"),
            (
                cfg.bugs.elect_outside_sync_set,
                "controller.elect-outside-sync-set",
            ),
            (cfg.bugs.no_truncation, "broker.no-truncation"),
            (cfg.bugs.self_promote, "broker.self-promote"),
            (
                cfg.bugs.slave_serves_unconfirmed,
                "broker.slave-serves-unconfirmed",
            ),
            (cfg.bugs.pop_ack_forgotten, "broker.pop-ack-forgotten"),
            (cfg.bugs.pop_early_revive, "broker.pop-early-revive"),
            (cfg.bugs.pop_revive_drops, "broker.pop-revive-drops"),
            (
                cfg.bugs.pop_offset_unjournaled,
                "broker.pop-offset-unjournaled",
            ),
        ];
        for (on, name) in bugs {
            if on {
                rockfish_core::buggify::set_bug(name);
            }
        }
        Sites
    }
}

impl Drop for Sites {
    fn drop(&mut self) {
        rockfish_core::buggify::disarm();
        rockfish_core::buggify::clear_bugs();
    }
}

fn producer_config(cfg: &SimConfig, i: usize, seed: u64) -> ProducerConfig {
    ProducerConfig {
        group: "SimProducers".into(),
        client_id: format!("p{i}"),
        namesrv_addrs: (0..cfg.name_servers.max(1)).map(ns_addr).collect(),
        seed,
        latency_fault: cfg.latency_fault,
        route_refresh_ms: client_route_refresh_ms(cfg),
        ..ProducerConfig::default()
    }
}

fn consumer_config(cfg: &SimConfig, i: usize, group: Group, seed: u64) -> ConsumerConfig {
    let (name, model, orderly, expression) = match group {
        Group::Broadcast => {
            let model = if cfg.bugs.broadcast_as_clustering {
                MessageModel::Clustering
            } else {
                MessageModel::Broadcasting
            };
            ("SimBroadcast", model, false, "*")
        }
        Group::Clustering => {
            let orderly = cfg.orderly && !cfg.bugs.orderly_as_concurrent;
            (CLUSTERING_GROUP, MessageModel::Clustering, orderly, "*")
        }
        Group::Pop => unreachable!("the pop group's consumers are simple consumers"),
        Group::Tagged => (
            "SimTagged",
            MessageModel::Clustering,
            false,
            if cfg.tagged_sql {
                TAGGED_SQL
            } else {
                TAGGED_SUBSCRIPTION
            },
        ),
    };
    let sql_topics = if group == Group::Tagged && cfg.tagged_sql {
        TOPICS.iter().map(|t| t.to_string()).collect()
    } else {
        Default::default()
    };
    ConsumerConfig {
        group: name.into(),
        client_id: format!("c{i}"),
        namesrv_addrs: (0..cfg.name_servers.max(1)).map(ns_addr).collect(),
        subscriptions: TOPICS
            .iter()
            .map(|t| (t.to_string(), expression.to_string()))
            .collect(),
        sql_topics,
        model,
        orderly,
        consume_from: ConsumeFrom::FirstOffset,
        max_reconsume_times: match group {
            Group::Clustering => cfg.max_reconsume_times,
            _ => -1,
        },
        seed,
        route_refresh_ms: client_route_refresh_ms(cfg),
        ..ConsumerConfig::default()
    }
}

/// How often clients poll routes (pollNameServerInterval). Controller mode: 5 s, as a
/// deployment with failover sets it, so clients find an elected master within seconds
/// rather than the 30 s default.
fn client_route_refresh_ms(cfg: &SimConfig) -> u64 {
    if cfg.controller { 5_000 } else { 30_000 }
}

/// The controller of name server `i` in controller mode (`persisted`: its raft log).
fn controller_config(cfg: &SimConfig, i: usize, name_servers: usize) -> ControllerConfig {
    ControllerConfig {
        id: i as u64 + 1,
        peers: (0..name_servers).map(ns_addr).collect(),
        broker_timeout_ms: SIM_BROKER_TIMEOUT_MS,
        seed: cfg.seed ^ 0xc0_17_20_11 ^ (i as u64) << 32,
        ..ControllerConfig::default()
    }
}

/// Name server `i`, with its controller embedded in controller mode.
fn name_server(
    cfg: &SimConfig,
    i: usize,
    name_servers: usize,
    persisted: Option<&[u8]>,
    now: u64,
) -> NameServer {
    if !cfg.controller {
        return NameServer::new(NameServerConfig::default(), now);
    }
    let c = Controller::new(controller_config(cfg, i, name_servers), persisted, now)
        .expect("the controller's own log reads back");
    NameServer::with_controller(NameServerConfig::default(), c, now)
}

/// Controller mode: a broker silent this long to the controller leader is dead.
pub const SIM_BROKER_TIMEOUT_MS: u64 = 3_000;

impl Sim {
    pub fn new(cfg: SimConfig) -> Sim {
        let sites = Sites::arm(&cfg);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(cfg.seed);
        let streams = std::array::from_fn(|i| {
            Xoshiro256PlusPlus::seed_from_u64(
                cfg.seed ^ (0x9e37_79b9_7f4a_7c15u64.wrapping_mul(i as u64 + 1)),
            )
        });
        let name_servers = cfg.name_servers.max(1);
        // Masters first (broker j of the groups is group j), then the slaves of each group.
        let brokers = cfg.brokers.max(1) * (1 + cfg.slaves);
        // Each node's clock runs ahead of simulated time by a fixed skew, drawn once.
        let total = name_servers + brokers + cfg.producers + cfg.all_consumers();
        let mut skew_rng = Xoshiro256PlusPlus::seed_from_u64(cfg.seed ^ 0x5ce3_c10c_5ce3_c10c);
        let (lo, hi) = cfg.faults.clock_skew_ms;
        let skew: Vec<i64> = (0..total)
            .map(|_| {
                let x: u64 = skew_rng.random();
                (if hi <= lo { lo } else { lo + x % (hi - lo + 1) }) as i64
            })
            .collect();
        let (lo, hi) = cfg.faults.clock_drift_ppm;
        let drift: Vec<i64> = (0..total)
            .map(|_| {
                let x: u64 = skew_rng.random();
                let ppm = (if hi <= lo { lo } else { lo + x % (hi - lo + 1) }).min(100_000) as i64;
                if skew_rng.random_bool(0.5) { -ppm } else { ppm }
            })
            .collect();
        let clock = |n: usize| clock_at(skew[n], drift[n], 0);
        let ns_addrs: Vec<String> = (0..name_servers).map(ns_addr).collect();
        let mut fabric = Fabric::default();
        let ns_disks: Vec<MemDisk> = (0..name_servers)
            .map(|i| MemDisk::new(cfg.seed ^ 0xc0_17_20_11 ^ i as u64))
            .collect();
        for (i, addr) in ns_addrs.iter().enumerate() {
            let ns = name_server(&cfg, i, name_servers, None, clock(i));
            fabric.add(Some(addr.clone()), Node::NameServer(ns));
        }
        for j in 0..brokers {
            let disk = MemDisk::with_plan(rng.random(), cfg.faults.disk.clone());
            let broker = Node::Broker {
                machine: None,
                disk,
                generation: 0,
            };
            let n = fabric.add(Some(broker_addr(j)), broker);
            fabric.add_stream_addr(broker_ha_addr(j), n);
        }
        for i in 0..cfg.producers {
            let pc = producer_config(&cfg, i, rng.random());
            let at = clock(fabric.nodes.len());
            fabric.add(None, Node::Producer(Producer::new(pc, at)));
        }
        let (mut broadcast_consumers, mut tagged_consumers) = (Vec::new(), Vec::new());
        let mut pop_consumers = Vec::new();
        for i in 0..cfg.all_consumers() {
            let group = if i < cfg.consumers {
                Group::Clustering
            } else if i < cfg.consumers + cfg.broadcast_consumers {
                broadcast_consumers.push(fabric.nodes.len());
                Group::Broadcast
            } else if i < cfg.consumers + cfg.broadcast_consumers + cfg.tagged_consumers {
                tagged_consumers.push(fabric.nodes.len());
                Group::Tagged
            } else {
                pop_consumers.push(fabric.nodes.len());
                Group::Pop
            };
            let at = clock(fabric.nodes.len());
            if group == Group::Pop {
                let pc = pop::pop_config(&cfg, i, rng.random());
                fabric.add(None, Node::Simple(SimpleConsumer::new(pc, at)));
                continue;
            }
            let cc = consumer_config(&cfg, i, group, rng.random());
            fabric.add(None, Node::Consumer(Consumer::new(cc, BTreeMap::new(), at)));
        }
        let mut sim = Sim {
            cfg,
            streams,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            fabric,
            name_servers,
            brokers,
            epochs: vec![0; total],
            died_as_master: vec![false; total],
            armed: BTreeMap::new(),
            replica_views: BTreeMap::new(),
            lost: BTreeSet::new(),
            faults: Vec::new(),
            scheduled_done: BTreeSet::new(),
            skew,
            drift,
            down: BTreeSet::new(),
            link_free: BTreeMap::new(),
            ticks: BTreeMap::new(),
            cuts: Vec::new(),
            next_cut: 0,
            clogs: Vec::new(),
            paused: BTreeMap::new(),
            left: BTreeSet::new(),
            killed: BTreeSet::new(),
            faults_on: true,
            sends: BTreeMap::new(),
            resent: BTreeMap::new(),
            tx_ends: BTreeMap::new(),
            next_tx_end: 0,
            tx_sent_at: BTreeMap::new(),
            disk_work: BTreeMap::new(),
            ns_disks,
            next_work: 0,
            jobs: BTreeMap::new(),
            next_job: 0,
            due_streak: BTreeMap::new(),
            pop_apps: BTreeMap::new(),
            pop_seen: BTreeMap::new(),
            pop_died_at: BTreeMap::new(),
            pop_timeout: None,
            history: History {
                broadcast_consumers,
                tagged_consumers,
                pop_consumers,
                ..History::default()
            },
            trace: Vec::new(),
            crc: crc32fast::Hasher::new(),
            events: 0,
            _sites: sites,
            buggify_fired: 0,
        };
        if sim.cfg.topic_created {
            // The operator created the topic before the run: brokers register it at start,
            // and consumers start a moment later, once the name servers know it.
            let mut table = TopicConfigTable::default();
            for topic in TOPICS {
                table.topic_config_table.insert(
                    topic.to_string(),
                    TopicConfig::new(topic, sim.cfg.topic_queues),
                );
            }
            for b in sim.broker_nodes() {
                if let Node::Broker { disk, .. } = &mut sim.fabric.nodes[b] {
                    config::save(disk, config::TOPICS_FILE, &table)
                        .expect("a fresh MemDisk takes a small file");
                }
            }
            let consumers = sim.cfg.all_consumers();
            for c in sim.fabric.nodes.len() - consumers..sim.fabric.nodes.len() {
                sim.left.insert(c);
                // Controller mode: once the controllers have elected the first masters (no
                // route lists a group before), or consumers would wait out a route refresh.
                let start = if sim.cfg.controller {
                    CONTROLLER_CONSUMERS_START_MS
                } else {
                    CONSUMERS_START_MS
                };
                sim.push(start, Ev::Join { consumer: c });
            }
        }
        if sim.cfg.pop_consumers > 0 {
            sim.setup_pop_group();
        }
        for b in sim.broker_nodes() {
            sim.start_broker(b);
        }
        for node in 0..sim.fabric.nodes.len() {
            sim.after(node);
        }
        let first = 1_000;
        let first_client = sim.first_client();
        for p in 0..sim.cfg.producers {
            for n in 0..sim.cfg.messages {
                let at = first + n as u64 * sim.cfg.send_interval_ms;
                sim.push(
                    at,
                    Ev::Send {
                        producer: first_client + p,
                        n,
                    },
                );
            }
        }
        // After the heal, every producer sends again: all of it must be acknowledged and
        // consumed before the run ends (the cluster converged).
        let resume = sim.cfg.safety_ms + LIVENESS_RESUME_MS;
        for p in 0..sim.cfg.producers {
            for k in 0..sim.cfg.liveness_messages {
                let n = sim.cfg.messages + k;
                sim.push(
                    resume + k as u64 * 50,
                    Ev::Send {
                        producer: first_client + p,
                        n,
                    },
                );
            }
        }
        // Once everything settled, a last batch: judged for duplicates and latency.
        let settled = sim.cfg.safety_ms + sim.cfg.settled_ms;
        if sim.cfg.liveness_ms >= sim.cfg.settled_ms + SETTLED_GRACE_MS {
            sim.history.settled_from = Some(settled);
            for p in 0..sim.cfg.producers {
                for k in 0..sim.cfg.liveness_messages {
                    let n = sim.cfg.messages + sim.cfg.liveness_messages + k;
                    sim.push(
                        settled + k as u64 * 50,
                        Ev::Send {
                            producer: first_client + p,
                            n,
                        },
                    );
                }
            }
        }
        sim.push(sim.cfg.safety_ms, Ev::Liveness);
        sim
    }

    fn log(&mut self, line: String) {
        self.crc.update(line.as_bytes());
        self.crc.update(b"\n");
        self.trace.push(line);
    }

    fn push(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, ev)));
    }

    fn stream(&mut self, s: Stream) -> &mut Xoshiro256PlusPlus {
        &mut self.streams[s as usize]
    }

    /// A coin with probability `p` from stream `s`. It always draws, so a rate set to zero
    /// (as shrinking does) leaves the rest of that stream's draws where they were.
    fn chance(&mut self, s: Stream, p: f64) -> bool {
        let x: f64 = self.stream(s).random();
        x < p
    }

    fn between(&mut self, s: Stream, (lo, hi): (u64, u64)) -> u64 {
        let x: u64 = self.stream(s).random();
        if hi <= lo { lo } else { lo + x % (hi - lo + 1) }
    }

    /// Node `n`'s clock: what its machine is told the time is.
    fn local(&self, n: usize) -> u64 {
        self.local_at(n, self.now)
    }

    /// Node `n`'s clock at simulated time `t`.
    fn local_at(&self, n: usize, t: u64) -> u64 {
        clock_at(self.skew[n], self.drift[n], t)
    }

    /// The first simulated time at which node `n`'s clock reads `local` or later.
    fn sim_time_of(&self, n: usize, local: u64) -> u64 {
        let base = (local as i64 - self.skew[n]).max(0) as i128;
        let mut t = (base * 1_000_000 / (1_000_000 + self.drift[n] as i128)).max(0) as u64;
        while self.local_at(n, t) < local {
            t += 1;
        }
        while t > 0 && self.local_at(n, t - 1) >= local {
            t -= 1;
        }
        t
    }

    /// A process on node `n` starts again: its clock may have been stepped meanwhile.
    fn step_clock(&mut self, n: usize) {
        let (lo, hi) = self.cfg.faults.clock_step_ms;
        if hi == 0 {
            return;
        }
        let by = self.between(Stream::Clock, (lo, hi)) as i64;
        let by = if self.chance(Stream::Clock, 0.5) {
            -by
        } else {
            by
        };
        // Never before the epoch.
        let by = by.max(-(self.local(n) as i64));
        self.skew[n] += by;
        let line = format!("t={} fault clock step {n} by {by}ms", self.now);
        self.log(line);
    }

    /// The group consumer node `n` belongs to.
    fn group_of(&self, n: usize) -> Group {
        if self.history.broadcast_consumers.contains(&n) {
            Group::Broadcast
        } else if self.history.tagged_consumers.contains(&n) {
            Group::Tagged
        } else if self.history.pop_consumers.contains(&n) {
            Group::Pop
        } else {
            Group::Clustering
        }
    }

    fn node_name(&self, n: usize) -> String {
        format!("{} {n}", self.fabric.nodes[n].kind())
    }

    fn is_broker(&self, node: usize) -> bool {
        (self.name_servers..self.first_client()).contains(&node)
    }

    fn first_client(&self) -> usize {
        self.name_servers + self.brokers
    }

    fn broker_nodes(&self) -> std::ops::Range<usize> {
        self.name_servers..self.first_client()
    }

    /// Broker groups (a master each).
    fn groups(&self) -> usize {
        self.cfg.brokers.max(1)
    }

    /// Broker node `node`'s group and its brokerId (0: the master).
    fn group_and_id(&self, node: usize) -> (usize, u64) {
        let j = node - self.name_servers;
        (j % self.groups(), (j / self.groups()) as u64)
    }

    /// The master nodes: what the stored-data checkers judge (a slave holds its master's
    /// log; `replica-prefix` holds the two against each other).
    fn master_nodes(&self) -> Vec<usize> {
        (0..self.groups()).map(|g| self.master_of(g)).collect()
    }

    /// Group `g`'s replicas (nodes), the configured master first.
    fn replicas_of(&self, g: usize) -> Vec<usize> {
        (0..=self.cfg.slaves)
            .map(|s| self.name_servers + g + s * self.groups())
            .collect()
    }

    /// Group `g`'s master: the configured one, or in controller mode the running replica
    /// that leads the latest epoch (the configured first replica when none leads).
    fn master_of(&self, g: usize) -> usize {
        let first = self.name_servers + g;
        if !self.cfg.controller {
            return first;
        }
        self.replicas_of(g)
            .into_iter()
            .filter_map(|n| match &self.fabric.nodes[n] {
                Node::Broker {
                    machine: Some(b), ..
                } if b.role().is_master() => Some((b.master_epoch(), n)),
                _ => None,
            })
            .max()
            .map_or(first, |(_, n)| n)
    }

    /// Runs to the end of the liveness phase.
    pub fn run(mut self) -> Outcome {
        let end = self.cfg.safety_ms + self.cfg.liveness_ms;
        while let Some(Reverse((at, _, ev))) = self.queue.pop() {
            if at > end {
                break;
            }
            self.now = at;
            self.events += 1;
            self.step(ev);
        }
        for c in self.history.pop_consumers.clone() {
            self.pop_app_stopped(c);
        }
        self.record_routes();
        self.record_stored();
        self.record_retries();
        self.record_transactions();
        self.record_replicas();
        for b in self.broker_nodes() {
            if let Node::Broker { disk, .. } = &self.fabric.nodes[b] {
                self.history.queue_bitflips += disk.stats().queue_bitflips;
            }
        }
        self.record_owners();
        let fired = self.buggify_fired + rockfish_core::buggify::disarm();
        let line = format!("t={} end: buggify sites fired {fired} times", self.now);
        self.log(line);
        Outcome {
            seed: self.cfg.seed,
            digest: format!(
                "{:08x}{:08x}",
                self.crc.clone().finalize(),
                self.events as u32
            ),
            events: self.events,
            sim_ms: self.now,
            nodes: (0..self.fabric.nodes.len())
                .map(|n| self.node_name(n))
                .collect(),
            history: self.history,
            trace: self.trace,
            faults: self.faults,
        }
    }
}

/// A clock `skew` ms ahead of simulated time at its start, running `drift` ppm fast, at
/// simulated time `t`.
fn clock_at(skew: i64, drift: i64, t: u64) -> u64 {
    let t = t as i64;
    (t + skew + t * drift / 1_000_000).max(0) as u64
}

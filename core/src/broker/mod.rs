//! `Broker`: a RocketMQ broker (master) as a Sans-IO machine over a `MessageStore`.
//!
//! Inputs: `on_connect`, `on_disconnect`, `on_command` (with the time the driver received
//! it, for flow control), `on_flushed` / `on_flush_failed`, `on_timeout`. Outputs: responses,
//! requests to name servers by address, flush requests. Appends and reads are synchronous
//! store calls; making the log durable is a `Flush` output whose result comes back as an
//! input, so SYNC_FLUSH acks exactly when the data is durable (group commit: one flush acks
//! every send it covers). Periodic work (registration, async flush, checkpoint, offset
//! persistence, client expiry) runs from `on_timeout`.

mod admin;
mod clients;
pub mod failover;
mod limits;
mod locks;
mod offsets;
mod persist;
pub use persist::{
    BULK_CHECKPOINT_BYTES, BULK_CHECKPOINT_INTERVAL_MS, CHEAP_CHECKPOINT_QUEUES, PersistSyncs,
};
mod flush;
mod groups;
pub use flush::MAX_FLUSHES_IN_FLIGHT;
pub use groups::{MAX_RETRY_QUEUES, MAX_RETRY_TIMES};
mod held_pulls;
pub mod pop;
mod pull;
mod recovery;
mod registration;
mod replication;
pub use replication::{RECONNECT_MS, SLAVE_SYNC_INTERVAL_MS};
mod retry;
pub use retry::DLQ_QUEUES;
mod schedule;
mod timer;
pub mod transaction;
pub use schedule::RETRY_AFTER_FAILURE_MS as SCHEDULE_RETRY_MS;
pub use timer::{TIMER_WHEEL_FILE, TimerWheelFile, timer_property};
pub use transaction::{
    TRANS_CHECK_MAX_TIME_TOPIC, TRANS_HALF_TOPIC, TRANS_OP_HALF_TOPIC, TRANSACTION_PROGRESS_GROUP,
    tx_flag,
};
mod dynamic_config;
mod runtime;
mod send;
pub mod stats;
mod timers;
mod topics;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use rockfish_store::config::{self, TopicConfig, TopicConfigTable};
use rockfish_store::record::HostAddr;
use rockfish_store::{Disk, MessageStore, StoreError};

use crate::machine::{ConnId, Output};
use crate::remoting::codes::{request, response};
use crate::remoting::{FieldError, RemotingCommand};
use flush::SyncWaiter;
use timers::Timer;

pub use clients::{
    Connection, ConsumerConnection, ConsumerData, ConsumerIdList, HeartbeatData,
    ProducerConnection, ProducerData, SubscriptionData,
};
pub use limits::{BrokerLimits, MAX_GROUP_LEN, validate_group};
pub use locks::{LOCK_LEASE_MS, LOCK_RESTART_GRACE_MS};
pub use offsets::OFFSET_JOURNAL_TOPIC;
pub use pop::{POP_JOURNAL_TOPIC, pop_retry_topic};
pub use recovery::{OffsetCorrection, correct_consumer_offsets};
pub use runtime::{KvTable, OffsetWrapper, TopicOffset, mq_table_body};

/// RocketMQ's default topic ("TBW102"): its route is how clients reach a broker for a topic
/// that does not exist yet.
pub const DEFAULT_TOPIC: &str = "TBW102";
/// Queues of the default topic (RocketMQ: defaultTopicQueueNums = 8).
pub const DEFAULT_TOPIC_QUEUES: u32 = 8;
/// Auto-created topics are persisted and registered at once, then at most once per this
/// interval while more keep being created (the rest wait for the interval's end, together).
pub const TOPICS_PERSIST_DELAY_MS: u64 = 500;
/// How long a REGISTER_BROKER may go unanswered before the broker registers again.
pub const REGISTER_RETRY_MS: u64 = 5_000;
/// Clients are checked for expiry this often.
const CLIENT_SCAN_INTERVAL_MS: u64 = 10_000;

/// A broker's part in its group (brokerRole).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerRole {
    /// Acks a send once stored locally; slaves follow as they can.
    AsyncMaster,
    /// Acks a send once an in-sync slave holds it durably (else FLUSH_SLAVE_TIMEOUT or
    /// SLAVE_NOT_AVAILABLE: stored on the master alone).
    SyncMaster,
    /// Follows its master's log, serves reads, takes no writes.
    Slave,
}

impl BrokerRole {
    /// broker.conf's spelling.
    pub fn parse(s: &str) -> Option<BrokerRole> {
        match s.trim().to_ascii_uppercase().as_str() {
            "ASYNC_MASTER" => Some(BrokerRole::AsyncMaster),
            "SYNC_MASTER" => Some(BrokerRole::SyncMaster),
            "SLAVE" => Some(BrokerRole::Slave),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            BrokerRole::AsyncMaster => "ASYNC_MASTER",
            BrokerRole::SyncMaster => "SYNC_MASTER",
            BrokerRole::Slave => "SLAVE",
        }
    }
    pub fn is_master(self) -> bool {
        self != BrokerRole::Slave
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushDiskType {
    /// Ack once appended; flush every `flush_interval_ms`.
    Async,
    /// Ack once durable (group commit).
    Sync,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BrokerConfig {
    pub cluster_name: String,
    pub broker_name: String,
    pub broker_id: u64,
    /// The address clients reach this broker at ("ip:port").
    pub broker_addr: String,
    pub namesrv_addrs: Vec<String>,
    pub auto_create_topic: bool,
    /// Consumer groups are created on first use (autoCreateSubscriptionGroup, Apache's
    /// default); off, a group must be created by UPDATE_AND_CREATE_SUBSCRIPTIONGROUP.
    pub auto_create_subscription_group: bool,
    pub default_topic_queues: u32,
    pub flush_disk_type: FlushDiskType,
    pub sync_flush_timeout_ms: u64,
    pub flush_interval_ms: u64,
    pub register_interval_ms: u64,
    pub checkpoint_interval_ms: u64,
    /// ASYNC_FLUSH: a flush is also asked once this many bytes are appended past what was
    /// asked, not only every `flush_interval_ms`.
    pub flush_behind_bytes: u64,
    /// A checkpoint is also started once the flushed offset is this far past the last one:
    /// what recovery re-reads (and rewrites, after an unclean stop) stays bounded at any
    /// write rate, not only by `checkpoint_interval_ms`.
    pub checkpoint_behind_bytes: u64,
    pub offset_persist_interval_ms: u64,
    /// Consumers silent this long are dropped from their group.
    pub client_expire_ms: u64,
    pub long_polling: bool,
    /// Longest a pull may be held when the client asks for more.
    pub max_suspend_ms: u64,
    /// A send that waited longer than this before the broker saw it gets SYSTEM_BUSY.
    pub max_wait_in_queue_ms: u64,
    /// Most bytes returned by one pull (RocketMQ: 256 KiB in memory).
    pub max_pull_bytes: usize,
    /// Most messages returned by one pull (RocketMQ: 32 in memory).
    pub max_pull_messages: usize,
    pub seed: u64,
    /// Caps on what outside input can grow (see `BrokerLimits`).
    pub limits: BrokerLimits,
    /// RocketMQ 5 timer messages (TIMER_DELIVER_MS / TIMER_DELAY_SEC / TIMER_DELAY_MS):
    /// timerWheelEnable.
    pub timer_wheel_enable: bool,
    /// The furthest a timer message may be set into the future (timerMaxDelaySec).
    pub timer_max_delay_sec: u64,
    /// Delivery times are rounded up to a multiple of this (timerPrecisionMs).
    pub timer_precision_ms: u64,
    /// A transaction half undecided this long after it was stored is checked back with its
    /// producer group (transactionTimeOut).
    pub transaction_timeout_ms: u64,
    /// How often undecided halves are checked (transactionCheckInterval).
    pub transaction_check_interval_ms: u64,
    /// Checks per half before it is given up into TRANS_CHECK_MAX_TIME_TOPIC
    /// (transactionCheckMax).
    pub transaction_check_max: u32,
    /// SQL92 subscriptions are served (enablePropertyFilter; off by default, as Apache's).
    pub enable_property_filter: bool,
    /// Master (brokerId 0) or slave (brokerId >= 1): brokerRole.
    pub broker_role: BrokerRole,
    /// Where slaves reach this broker's HA port ("ip:port"; haListenPort, by default the
    /// broker's port + 1). Empty: derived from `broker_addr`.
    pub ha_addr: String,
    /// A slave's master's HA address (haMasterAddress); `None`: learned from the name
    /// servers' answers to its registration, as Apache's slaves do.
    pub ha_master_addr: Option<String>,
    /// A slave more than this many bytes behind is not in sync (haMaxGapNotInSync): a
    /// SYNC_MASTER send does not wait for it.
    pub ha_max_gap_not_in_sync: u64,
    /// A consumer this far behind (bytes) on a master is told to read from a slave
    /// (slaveReadEnable; accessMessageInMemoryMaxRatio of memory, here a fixed size).
    pub slave_read_enable: bool,
    pub slave_read_behind_bytes: u64,
    /// RocketMQ 5's controller mode (enableControllerMode): the controllers elect this
    /// group's master; `broker_role` only says how a master acks (SYNC_MASTER: once the
    /// other SyncStateSet members hold a send).
    pub enable_controller_mode: bool,
    /// The controllers (controllerAddr, `;`-separated in broker.conf).
    pub controller_addrs: Vec<String>,
    /// Heartbeats to the controller (controllerHeartBeatInterval... Apache: 1 s).
    pub controller_heartbeat_ms: u64,
    /// A SyncStateSet member behind the master this long leaves the set
    /// (haMaxTimeSlaveNotCatchup).
    pub ha_max_time_slave_not_catchup_ms: u64,
    /// brokerPermission: 6 read and write, 4 read only (sends refused, routes say so: how a
    /// broker is drained before maintenance), 2 write only.
    pub broker_permission: u32,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            cluster_name: "DefaultCluster".into(),
            broker_name: "broker-a".into(),
            broker_id: 0,
            broker_addr: "127.0.0.1:10911".into(),
            namesrv_addrs: vec!["127.0.0.1:9876".into()],
            auto_create_topic: true,
            auto_create_subscription_group: true,
            default_topic_queues: 4,
            flush_disk_type: FlushDiskType::Async,
            sync_flush_timeout_ms: 5_000,
            flush_interval_ms: 500,
            register_interval_ms: 30_000,
            checkpoint_interval_ms: 1_000,
            flush_behind_bytes: flush::ASYNC_FLUSH_BEHIND_BYTES,
            checkpoint_behind_bytes: flush::CHECKPOINT_BEHIND_BYTES,
            offset_persist_interval_ms: 5_000,
            client_expire_ms: 120_000,
            long_polling: true,
            max_suspend_ms: 30_000,
            max_wait_in_queue_ms: 200,
            max_pull_bytes: 256 * 1024,
            max_pull_messages: 32,
            seed: 0,
            limits: BrokerLimits::default(),
            timer_wheel_enable: true,
            timer_max_delay_sec: 3 * 24 * 3600,
            timer_precision_ms: 1_000,
            transaction_timeout_ms: 6_000,
            transaction_check_interval_ms: 60_000,
            transaction_check_max: 15,
            enable_property_filter: false,
            broker_role: BrokerRole::AsyncMaster,
            ha_addr: String::new(),
            ha_master_addr: None,
            ha_max_gap_not_in_sync: 256 * 1024 * 1024,
            slave_read_enable: false,
            slave_read_behind_bytes: 256 * 1024 * 1024,
            enable_controller_mode: false,
            controller_addrs: Vec::new(),
            controller_heartbeat_ms: 1_000,
            ha_max_time_slave_not_catchup_ms: 15_000,
            broker_permission: crate::protocol::perm::READ | crate::protocol::perm::WRITE,
        }
    }
}

impl BrokerConfig {
    /// How this broker acts when it is master: `broker_role`, or ASYNC_MASTER for a replica
    /// configured as SLAVE in controller mode.
    pub fn master_role(&self) -> BrokerRole {
        match self.broker_role {
            BrokerRole::SyncMaster => BrokerRole::SyncMaster,
            _ => BrokerRole::AsyncMaster,
        }
    }

    /// Where slaves reach this broker's HA port: `ha_addr`, or the broker's port + 1
    /// (Apache's haListenPort default).
    pub fn effective_ha_addr(&self) -> String {
        if !self.ha_addr.is_empty() {
            return self.ha_addr.clone();
        }
        match self.broker_addr.rsplit_once(':') {
            Some((host, port)) => match port.parse::<u16>() {
                Ok(p) => format!("{host}:{}", p.wrapping_add(1)),
                Err(_) => String::new(),
            },
            None => String::new(),
        }
    }

    /// Refuses a configuration the broker cannot run safely, naming the key (RocketMQ's
    /// broker.conf name where there is one) and the rule.
    pub fn validate(&self) -> Result<(), String> {
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 127
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"%|_-.".contains(&b))
        };
        let mut problems = Vec::new();
        let mut check = |ok: bool, what: String| {
            if !ok {
                problems.push(what)
            }
        };
        check(
            name_ok(&self.cluster_name),
            format!(
                "brokerClusterName {:?}: use [a-zA-Z0-9_.%|-], 1 to 127 characters",
                self.cluster_name
            ),
        );
        check(
            name_ok(&self.broker_name),
            format!(
                "brokerName {:?}: use [a-zA-Z0-9_.%|-], 1 to 127 characters",
                self.broker_name
            ),
        );
        check(
            parse_host(&self.broker_addr).is_some(),
            format!("broker address {:?}: expected ipv4:port", self.broker_addr),
        );
        for ns in &self.namesrv_addrs {
            let ok = ns
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
            check(ok, format!("namesrvAddr {ns:?}: expected host:port"));
        }
        check(
            (1..=1024).contains(&self.default_topic_queues),
            format!(
                "defaultTopicQueueNums={}: must be 1..=1024",
                self.default_topic_queues
            ),
        );
        for (key, v) in [
            ("syncFlushTimeout", self.sync_flush_timeout_ms),
            ("flushIntervalCommitLog", self.flush_interval_ms),
            ("checkpoint interval", self.checkpoint_interval_ms),
            ("flush behind bytes", self.flush_behind_bytes),
            ("checkpoint behind bytes", self.checkpoint_behind_bytes),
            (
                "flushConsumerOffsetInterval",
                self.offset_persist_interval_ms,
            ),
            ("long polling max suspend", self.max_suspend_ms),
            ("waitTimeMillsInSendQueue", self.max_wait_in_queue_ms),
            ("transactionTimeOut", self.transaction_timeout_ms),
            (
                "transactionCheckInterval",
                self.transaction_check_interval_ms,
            ),
        ] {
            check(v > 0, format!("{key}={v}: must be above 0 ms"));
        }
        check(
            self.register_interval_ms >= 1_000,
            format!(
                "registerNameServerPeriod={}: must be at least 1000 ms",
                self.register_interval_ms
            ),
        );
        // Consumers heartbeat every 30 s: expiring them sooner drops live members.
        check(
            self.client_expire_ms > 30_000,
            format!(
                "client expiry {} ms: must exceed the 30 s client heartbeat",
                self.client_expire_ms
            ),
        );
        check(
            self.max_pull_messages >= 1,
            format!(
                "maxTransferCountOnMessageInMemory={}: must be at least 1",
                self.max_pull_messages
            ),
        );
        check(
            self.max_pull_bytes >= 1,
            format!(
                "maxTransferBytesOnMessageInMemory={}: must be at least 1",
                self.max_pull_bytes
            ),
        );
        check(
            (1..=10 * 365 * 24 * 3600).contains(&self.timer_max_delay_sec),
            format!(
                "timerMaxDelaySec={}: must be 1 s to 10 years",
                self.timer_max_delay_sec
            ),
        );
        check(
            (1..=60_000).contains(&self.timer_precision_ms),
            format!(
                "timerPrecisionMs={}: must be 1 to 60000 ms",
                self.timer_precision_ms
            ),
        );
        if self.enable_controller_mode {
            check(
                !self.controller_addrs.is_empty(),
                "enableControllerMode: controllerAddr must name the controllers".into(),
            );
            for c in &self.controller_addrs {
                let ok = c
                    .rsplit_once(':')
                    .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
                check(ok, format!("controllerAddr {c:?}: expected host:port"));
            }
            // Routes name a group's master as brokerId 0: every replica needs its own id.
            check(
                self.broker_id != crate::protocol::MASTER_ID,
                "enableControllerMode: each replica's brokerId must be 1 or more (the master is listed as 0)".into(),
            );
            check(
                self.controller_heartbeat_ms >= 10,
                format!(
                    "controller heartbeat {} ms: must be at least 10 ms",
                    self.controller_heartbeat_ms
                ),
            );
        } else {
            match self.broker_role {
                BrokerRole::Slave => check(
                    self.broker_id != crate::protocol::MASTER_ID,
                    "brokerRole=SLAVE: a slave's brokerId must be 1 or more".into(),
                ),
                role => check(
                    self.broker_id == crate::protocol::MASTER_ID,
                    format!(
                        "brokerRole={}: a master's brokerId must be 0 (it is {})",
                        role.name(),
                        self.broker_id
                    ),
                ),
            }
        }
        check(
            self.ha_addr.is_empty() || parse_host(&self.ha_addr).is_some(),
            format!(
                "haListenPort address {:?}: expected ipv4:port",
                self.ha_addr
            ),
        );
        if let Some(m) = &self.ha_master_addr {
            let ok = m
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
            check(ok, format!("haMasterAddress {m:?}: expected host:port"));
        }
        check(
            self.transaction_check_max <= 10_000,
            format!(
                "transactionCheckMax={}: must be at most 10000",
                self.transaction_check_max
            ),
        );
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

/// Parses "a.b.c.d:port" into the store's host form.
pub fn parse_host(addr: &str) -> Option<HostAddr> {
    let (ip, port) = addr.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let mut octets = [0u8; 4];
    let mut parts = ip.split('.');
    for o in octets.iter_mut() {
        *o = parts.next()?.parse().ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(HostAddr::V4(octets, port))
}

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("invalid broker address {0:?}: expected ip:port")]
    BadAddr(String),
    #[error("invalid broker configuration: {0}")]
    Config(String),
}

pub struct Broker<D: Disk> {
    config: BrokerConfig,
    store_host: HostAddr,
    store: MessageStore<D>,
    topics: topics::Topics,
    offsets: offsets::Offsets,
    clients: clients::ClientTable,
    locks: locks::LockTable,
    peers: BTreeMap<ConnId, HostAddr>,
    /// Pulls held by long polling, each until a message arrives or its deadline.
    held: held_pulls::HeldPulls,
    flush: flush::Flushes,
    timers: timers::Timers,
    /// REGISTER_BROKER requests not yet answered with success, by opaque (`RegisterRetry`
    /// stops waiting for them: a lost registration must not leave the broker without routes
    /// for a whole register interval).
    registrations_unanswered: BTreeSet<i32>,
    next_opaque: i32,
    rng: Xoshiro256PlusPlus,
    outputs: VecDeque<Output>,
    persists: persist::PersistTable,
    /// Delay levels: delivery progress per level.
    schedule: schedule::Schedule,
    /// Subscription groups (subscriptionGroup.json).
    groups: groups::SubscriptionGroups,
    /// Timer messages: the timing wheel.
    wheel: timer::TimerWheel,
    /// Transaction halves: the check-back's progress and what is decided.
    transactions: transaction::Transactions,
    /// Pop consumption: checkpoints in flight, orderly queues' locks.
    pop: pop::table::PopTable,
    /// The broker's part in its group: slaves it streams to, or the master it follows.
    repl: replication::Replication,
    /// Controller mode: what the controller said and what was asked of it.
    ctl: failover::ControllerLink,
    /// Counted for operators (runtime info, metrics).
    stats: stats::BrokerStats,
    /// Settings changed by UPDATE_BROKER_CONFIG (persisted; they override broker.conf).
    dynamic: BTreeMap<String, String>,
}

/// What a master's start loads from its store (and a replica taking over as master).
struct MasterState {
    offsets: offsets::Offsets,
    schedule: schedule::Schedule,
    wheel: timer::TimerWheel,
    transactions: transaction::Transactions,
    pop: pop::table::PopTable,
    delays_waiting: bool,
    timers_waiting: bool,
}

impl<D: Disk> Broker<D> {
    /// A broker over an opened (recovered) store. Loads topics and consumer offsets from the
    /// store's config files and registers with the name servers at once.
    pub fn new(
        config: BrokerConfig,
        mut store: MessageStore<D>,
        now: u64,
    ) -> Result<Self, BrokerError> {
        config.validate().map_err(BrokerError::Config)?;
        // Keys changed while an earlier run ran (UPDATE_BROKER_CONFIG) override broker.conf.
        let dynamic = match store
            .disk()
            .read_file(dynamic_config::DYNAMIC_CONFIG_FILE)
            .map_err(StoreError::from)?
        {
            Some(bytes) => dynamic_config::parse_properties(&String::from_utf8_lossy(&bytes)),
            None => BTreeMap::new(),
        };
        let config = if dynamic.is_empty() {
            config
        } else {
            let (c, max) =
                dynamic_config::apply(&config, store.config().max_message_size, &dynamic).map_err(
                    |e| {
                        BrokerError::Config(format!(
                            "{} (remove the key from that file to start): {e}",
                            dynamic_config::DYNAMIC_CONFIG_FILE
                        ))
                    },
                )?;
            tracing::warn!(
                ?dynamic,
                file = dynamic_config::DYNAMIC_CONFIG_FILE,
                "settings changed at run time override broker.conf"
            );
            store.set_max_message_size(max);
            c
        };
        // In controller mode every replica starts as a slave with no master: the controller
        // says who leads (failover.rs).
        let slave = config.broker_role == BrokerRole::Slave || config.enable_controller_mode;
        // A slave's log stays its master's, byte for byte: nothing else writes to it (unless
        // deliberately broken, for the simulator's checkers).
        store.set_replica(slave && !crate::buggify::bug("broker.slave-writes"));
        let store_host = parse_host(&config.broker_addr)
            .ok_or_else(|| BrokerError::BadAddr(config.broker_addr.clone()))?;
        let loaded: TopicConfigTable =
            config::load(store.disk(), config::TOPICS_FILE)?.unwrap_or_default();
        let mut topics = topics::Topics::new(loaded);
        // Clients send to a topic without a route through the default topic's route (and the
        // broker then creates the topic), as with Apache brokers that allow auto-creation.
        if config.auto_create_topic && !topics.contains(DEFAULT_TOPIC) {
            let mut tbw = TopicConfig::new(DEFAULT_TOPIC, DEFAULT_TOPIC_QUEUES);
            tbw.perm = crate::protocol::perm::READ
                | crate::protocol::perm::WRITE
                | crate::protocol::perm::INHERIT;
            topics.insert(DEFAULT_TOPIC.to_string(), tbw);
        }
        // A topic named after the broker, one queue (Apache's brokers create it: clusterRT
        // and self-tests send to each broker through it).
        if !topics.contains(&config.broker_name)
            && rockfish_store::message_store::validate_topic(&config.broker_name).is_ok()
        {
            let mut own = TopicConfig::new(&config.broker_name, 1);
            own.perm = crate::protocol::perm::READ | crate::protocol::perm::WRITE;
            topics.insert(config.broker_name.clone(), own);
        }
        // Auto-created topics are persisted a moment after their creation (coalesced): one
        // that a crash kept out of topics.json still has its queues in the store.
        let mut restored: BTreeMap<String, u32> = BTreeMap::new();
        for (topic, queue_id) in store.queue_ids() {
            // The offset journal and the schedule topic are the broker's own, never topics
            // clients see.
            if topic != OFFSET_JOURNAL_TOPIC
                && topic != POP_JOURNAL_TOPIC
                && topic != rockfish_store::message_store::SCHEDULE_TOPIC
                && topic != rockfish_store::message_store::TIMER_TOPIC
                && topic != transaction::TRANS_HALF_TOPIC
                && topic != transaction::TRANS_OP_HALF_TOPIC
                && !topics.contains(topic)
            {
                let n = restored.entry(topic.to_string()).or_insert(0);
                *n = (*n).max(queue_id.saturating_add(1));
            }
        }
        let restored_any = !restored.is_empty();
        for (topic, n) in restored {
            let queues = if crate::protocol::topics::is_retry_topic(&topic) {
                n
            } else {
                n.max(config.default_topic_queues)
            };
            tracing::info!(%topic, queues, "topic restored from its consume queues");
            topics.insert(topic.clone(), TopicConfig::new(&topic, queues));
        }
        let MasterState {
            offsets,
            schedule,
            wheel,
            transactions,
            pop,
            delays_waiting,
            timers_waiting,
        } = Self::load_master_state(&config, &mut store, now)?;
        // A fresh store still needs its config files to exist for operators to find.
        if store
            .disk()
            .read_file(config::TOPICS_FILE)
            .map_err(StoreError::from)?
            .is_none()
        {
            config::save(store.disk_mut(), config::TOPICS_FILE, &topics.table())?;
        }
        let groups = groups::SubscriptionGroups::load(&store)?;
        let epochs: failover::EpochCache =
            config::load(store.disk(), failover::EPOCHS_FILE)?.unwrap_or_default();
        let rng = Xoshiro256PlusPlus::seed_from_u64(config.seed);
        let first_start = store.fresh();
        let log_end = store.write_pos();
        let pop_due = pop.next_due();
        let mut broker = Broker {
            store_host,
            store,
            topics,
            offsets,
            clients: clients::ClientTable::default(),
            locks: locks::LockTable::started(now, first_start),
            peers: BTreeMap::new(),
            held: held_pulls::HeldPulls::default(),
            flush: flush::Flushes::default(),
            timers: {
                let mut t = timers::Timers::default();
                t.set(Timer::Register, now);
                if config.flush_disk_type == FlushDiskType::Async {
                    t.set(Timer::Flush, now + config.flush_interval_ms);
                }
                t.set(Timer::Checkpoint, now + config.checkpoint_interval_ms);
                t.set(
                    Timer::OffsetPersist,
                    now + config.offset_persist_interval_ms,
                );
                t.set(Timer::ClientScan, now + CLIENT_SCAN_INTERVAL_MS);
                if config.enable_controller_mode {
                    t.set(Timer::ControllerBeat, now);
                }
                // Whatever fell due while the broker was down goes out at once. A slave
                // delivers nothing and checks nothing: its master does.
                if delays_waiting && !slave {
                    t.set(Timer::Schedule, now);
                }
                if timers_waiting && !slave {
                    t.set(Timer::Wheel, now);
                }
                if !slave {
                    t.set(
                        Timer::TransactionCheck,
                        now + config.transaction_check_interval_ms,
                    );
                    if let Some(due) = pop_due {
                        t.set(Timer::PopRevive, due);
                    }
                }
                t
            },
            registrations_unanswered: BTreeSet::new(),
            next_opaque: 1,
            rng,
            outputs: VecDeque::new(),
            persists: persist::PersistTable::new(now),
            schedule,
            groups,
            wheel,
            transactions,
            pop,
            repl: replication::Replication::new(
                if slave {
                    BrokerRole::Slave
                } else {
                    config.broker_role
                },
                config.ha_master_addr.clone(),
                log_end,
            ),
            ctl: failover::ControllerLink::new(config.enable_controller_mode, epochs),
            stats: stats::BrokerStats::new(now, config.limits.max_offset_entries),
            dynamic,
            config,
        };
        if restored_any {
            // Saved now; the registration below carries them.
            broker.persists.topics_dirty = true;
            broker.write_topics();
        }
        // The snapshot anchored above compacted the journal: the delay levels' and the timing
        // wheel's progress records are journaled again past it (after everything recovery
        // kept, so whatever of them survives, what they cover survived too).
        if !slave {
            broker.journal_schedule_progress(now);
            broker.journal_wheel_progress(now);
            broker.journal_transaction_progress(now);
        }
        broker.register_all(now);
        Ok(broker)
    }

    /// Consumer offsets (the snapshot and the journal past it), delay levels' and the timing
    /// wheel's progress, transaction halves: loaded as a master's start needs them.
    fn load_master_state(
        config: &BrokerConfig,
        store: &mut MessageStore<D>,
        now: u64,
    ) -> Result<MasterState, BrokerError> {
        let (mut offsets, replayed) = offsets::load(store)?;
        // The delay service's progress records leave the table here (see schedule.rs).
        let schedule = schedule::Schedule::load(store, &mut offsets)?;
        let wheel = timer::TimerWheel::load(
            store,
            &mut offsets,
            config.timer_max_delay_sec.saturating_mul(1000),
            config.timer_precision_ms,
            now,
        )?;
        if replayed > 0 {
            tracing::info!(
                replayed,
                "consumer offsets: journal records applied past the snapshot"
            );
        }
        correct_consumer_offsets(&mut offsets, store);
        let fences = recovery::fences_for(config.flush_disk_type, store, &offsets);
        // Anchor the snapshot at the journal's recovered end before any new record lands, with
        // the corrections: another power loss must not bring back offsets of a history
        // recovery has already rewritten.
        config::save(store.disk_mut(), config::CONSUMER_OFFSETS_FILE, &offsets)?;
        let delays_waiting = store
            .queue_ids()
            .any(|(topic, _)| topic == rockfish_store::message_store::SCHEDULE_TOPIC);
        let timers_waiting = store
            .queue_ids()
            .any(|(topic, _)| topic == rockfish_store::message_store::TIMER_TOPIC);
        let transactions = transaction::Transactions::load(store, &mut offsets)?;
        let (pop, replayed) = pop::table::PopTable::load(store, &mut offsets)?;
        if replayed > 0 {
            tracing::info!(
                replayed,
                checkpoints = pop.checkpoints(),
                in_flight = pop.pending(),
                "pop journal replayed"
            );
        }
        Ok(MasterState {
            offsets: offsets::Offsets {
                table: offsets,
                dirty: false,
                fences,
                sync_mark: None,
                pending: None,
            },
            schedule,
            wheel,
            transactions,
            pop,
            delays_waiting,
            timers_waiting,
        })
    }

    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }
    pub fn store(&self) -> &MessageStore<D> {
        &self.store
    }
    pub fn store_mut(&mut self) -> &mut MessageStore<D> {
        &mut self.store
    }
    pub fn topic(&self, name: &str) -> Option<&TopicConfig> {
        self.topics.get(name)
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The earliest time the machine wants `on_timeout`.
    pub fn poll_timeout(&self) -> Option<u64> {
        let mut t = self.timers.next().unwrap_or(u64::MAX);
        if let Some(w) = self.flush.waiters.front() {
            t = t.min(w.deadline);
        }
        if let Some(d) = self.held.next_deadline() {
            t = t.min(d);
        }
        if let Some(d) = self.repl.next_deadline() {
            t = t.min(d);
        }
        Some(t)
    }

    pub fn on_connect(&mut self, conn: ConnId, peer: HostAddr, _now: u64) {
        if self.admit_connection(conn) {
            self.peers.insert(conn, peer);
        }
    }

    pub fn on_disconnect(&mut self, conn: ConnId, now: u64) {
        self.peers.remove(&conn);
        self.offsets.fences.forget(conn);
        self.held.drop_conn(conn);
        self.flush.waiters.retain(|w| w.conn != conn);
        self.repl.waiters.retain(|w| w.conn != conn);
        self.replication_disconnect(conn, now);
        let changed = self.clients.remove_conn(conn);
        for group in changed {
            self.notify_group(&group, now);
        }
        self.after_input(now);
    }

    /// Work every input may have made due: slaves are sent what was appended.
    fn after_input(&mut self, now: u64) {
        self.flush_if_far_behind(now);
        self.pump_replication(now);
    }

    /// A command arrived on `conn`; the driver read it off the socket at `received_at`.
    pub fn on_command(&mut self, conn: ConnId, cmd: RemotingCommand, received_at: u64, now: u64) {
        self.serve_command(conn, cmd, received_at, now);
        self.after_input(now);
    }

    fn serve_command(&mut self, conn: ConnId, cmd: RemotingCommand, received_at: u64, now: u64) {
        if cmd.is_response() {
            if self.on_sync_answer(&cmd, now)
                || self.on_controller_answer(&cmd, now)
                || self.on_epoch_answer(&cmd, now)
            {
                return;
            }
            // Name server replies: a successful registration needs no retry.
            if cmd.code == response::SUCCESS && self.registrations_unanswered.remove(&cmd.opaque) {
                self.learn_master(&cmd, now);
                if self.registrations_unanswered.is_empty() {
                    self.timers.clear(Timer::RegisterRetry);
                }
            }
            return;
        }
        let reply = match self.handle(conn, &cmd, received_at, now) {
            Ok(Some(reply)) => reply,
            Ok(None) => return, // held (long poll, sync flush) or answered elsewhere
            Err(e) => {
                RemotingCommand::response_to(&cmd, response::SYSTEM_ERROR, Some(e.to_string()))
            }
        };
        self.reply(conn, &cmd, reply);
    }

    fn reply(&mut self, conn: ConnId, request: &RemotingCommand, reply: RemotingCommand) {
        if !request.is_oneway() {
            self.outputs.push_back(Output::Send { conn, cmd: reply });
        } else if reply.code != response::SUCCESS {
            // Nobody hears a oneway request's refusal (an END_TRANSACTION, an offset
            // commit): the log must.
            tracing::warn!(
                code = request.code,
                answer = reply.code,
                remark = reply.remark.as_deref().unwrap_or(""),
                "a oneway request was refused"
            );
        }
    }

    fn handle(
        &mut self,
        conn: ConnId,
        cmd: &RemotingCommand,
        received_at: u64,
        now: u64,
    ) -> Result<Option<RemotingCommand>, FieldError> {
        match cmd.code {
            request::SEND_MESSAGE | request::SEND_MESSAGE_V2 | request::SEND_BATCH_MESSAGE => {
                self.send_message(conn, cmd, received_at, now)
            }
            request::PULL_MESSAGE => self.pull_message(conn, cmd, now, pull::PullRun::First),
            request::POP_MESSAGE => self.pop_message(conn, cmd, now, pull::PullRun::First),
            request::ACK_MESSAGE => self.ack_message(conn, cmd, now),
            request::BATCH_ACK_MESSAGE => self.batch_ack_message(conn, cmd, now),
            request::CHANGE_MESSAGE_INVISIBLETIME => self.change_invisible_time(conn, cmd, now),
            request::HEART_BEAT => self.heartbeat(conn, cmd, now).map(Some),
            request::UNREGISTER_CLIENT => self.unregister_client(cmd, now).map(Some),
            request::GET_CONSUMER_LIST_BY_GROUP => self.consumer_list(cmd).map(Some),
            request::QUERY_CONSUMER_OFFSET => self.query_consumer_offset(cmd).map(Some),
            request::UPDATE_CONSUMER_OFFSET => self.update_consumer_offset(conn, cmd, now),
            request::UPDATE_AND_CREATE_TOPIC => self.update_topic(cmd, now).map(Some),
            request::DELETE_TOPIC_IN_BROKER => self.delete_topic(cmd, now).map(Some),
            request::GET_ALL_TOPIC_CONFIG => self.all_topic_config(cmd).map(Some),
            request::GET_MAX_OFFSET => self.queue_offset_bound(cmd, true).map(Some),
            request::GET_MIN_OFFSET => self.queue_offset_bound(cmd, false).map(Some),
            request::SEARCH_OFFSET_BY_TIMESTAMP => self.search_offset(cmd).map(Some),
            request::GET_EARLIEST_MSG_STORETIME => self.earliest_store_time(cmd).map(Some),
            request::VIEW_MESSAGE_BY_ID => self.view_message(conn, cmd).map(|_| None),
            request::QUERY_MESSAGE => self.query_message(conn, cmd).map(|_| None),
            request::GET_ALL_CONSUMER_OFFSET => self.all_consumer_offsets(cmd).map(Some),
            request::LOCK_BATCH_MQ => self.lock_batch(cmd, now).map(Some),
            request::UNLOCK_BATCH_MQ => self.unlock_batch(cmd).map(Some),
            request::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP => {
                self.update_subscription_group(cmd, now).map(Some)
            }
            request::GET_ALL_SUBSCRIPTIONGROUP_CONFIG => {
                self.all_subscription_groups(cmd).map(Some)
            }
            request::GET_SUBSCRIPTIONGROUP_CONFIG => self.subscription_group(cmd).map(Some),
            request::DELETE_SUBSCRIPTIONGROUP => self.delete_subscription_group(cmd, now).map(Some),
            request::CONSUMER_SEND_MSG_BACK => self.consumer_send_msg_back(conn, cmd, now),
            request::END_TRANSACTION => self.end_transaction(cmd, now),
            request::CHECK_CLIENT_CONFIG => self.check_client_config(cmd).map(Some),
            request::GET_BROKER_EPOCH_CACHE => Ok(Some(self.epoch_cache_answer(cmd))),
            request::GET_BROKER_RUNTIME_INFO => Ok(Some(self.runtime_info(cmd, now))),
            request::GET_CONSUMER_CONNECTION_LIST => self.consumer_connection_list(cmd).map(Some),
            request::GET_PRODUCER_CONNECTION_LIST => self.producer_connection_list(cmd).map(Some),
            request::GET_CONSUME_STATS => self.consume_stats(cmd, now).map(Some),
            request::GET_TOPIC_STATS_INFO => self.topic_stats(cmd).map(Some),
            request::INVOKE_BROKER_TO_RESET_OFFSET => self.reset_offset(cmd, now).map(Some),
            request::CLONE_GROUP_OFFSET => self.clone_group_offset(cmd, now).map(Some),
            request::QUERY_TOPIC_CONSUME_BY_WHO => self.topic_consumed_by(cmd).map(Some),
            request::GET_BROKER_CONFIG => Ok(Some(self.get_broker_config(cmd))),
            request::UPDATE_BROKER_CONFIG => Ok(Some(self.update_broker_config(cmd, now))),
            request::GET_ALL_DELAY_OFFSET => Ok(Some(Self::body_response(
                cmd,
                crate::protocol::to_body(&self.schedule.table()),
            ))),
            code => Ok(Some(RemotingCommand::response_to(
                cmd,
                response::REQUEST_CODE_NOT_SUPPORTED,
                Some(format!(" request type {code} not supported")),
            ))),
        }
    }

    /// Time passed: periodic work and expired waits.
    pub fn on_timeout(&mut self, now: u64) {
        if self.timers.due(Timer::Register, now) || self.timers.due(Timer::RegisterRetry, now) {
            if crate::buggify!("broker.register.late") {
                // A registration round runs late (a slow disk, a long pause).
                let later = now + self.config.register_interval_ms / 2;
                self.timers.set(Timer::Register, later);
                if self.timers.is_set(Timer::RegisterRetry) {
                    self.timers.set(Timer::RegisterRetry, later);
                }
            } else {
                self.register_all(now);
            }
        }
        if self.timers.due(Timer::Flush, now) {
            self.timers
                .set(Timer::Flush, now + self.config.flush_interval_ms);
            self.request_flush(now);
        }
        self.expire_sync_waiters(now);
        self.expire_pulls(now);
        if self.timers.due(Timer::Checkpoint, now) {
            self.timers
                .set(Timer::Checkpoint, now + self.config.checkpoint_interval_ms);
            // The checkpoint sits at the flushed offset, so it advances under steady load
            // (appends never pause for it); nothing new flushed, nothing to record.
            self.start_checkpoint(now);
            // A config write that failed is retried here; groups created since are written.
            self.write_topics();
            self.write_groups();
        }
        if self.timers.due(Timer::TopicsPersist, now) {
            self.persist_topics(now);
        }
        if self.timers.due(Timer::OffsetPersist, now) {
            self.timers.set(
                Timer::OffsetPersist,
                now + self.config.offset_persist_interval_ms,
            );
            self.persist_offsets(now);
            self.persist_delay_offsets();
            self.persist_wheel();
        }
        if self.timers.due(Timer::ClientScan, now) {
            self.timers
                .set(Timer::ClientScan, now + CLIENT_SCAN_INTERVAL_MS);
            let changed = self.clients.expire(now, self.config.client_expire_ms);
            for group in changed {
                self.notify_group(&group, now);
            }
        }
        if self.timers.due(Timer::Schedule, now) {
            self.deliver_delayed(now);
        }
        if self.timers.due(Timer::Wheel, now) {
            self.run_wheel(now);
        }
        if self.timers.due(Timer::TransactionCheck, now) {
            self.check_transactions(now);
        }
        if self.timers.due(Timer::ControllerBeat, now) {
            self.controller_beat(now);
        }
        if self.timers.due(Timer::PopRevive, now) {
            self.revive_pops(now);
        }
        self.replication_timeout(now);
        self.after_input(now);
    }

    /// Delay levels: the next schedule queue offset each level delivers.
    pub fn delay_offset(&self, level: u32) -> u64 {
        self.schedule.offset(level)
    }

    fn next_opaque(&mut self) -> i32 {
        self.next_opaque = self.next_opaque.wrapping_add(1);
        self.next_opaque
    }

    /// Registers with every name server (RocketMQ: every 30 s, and on topic changes).
    /// Flushes, checkpoints and persists offsets; hands back the store's disk.
    pub fn shutdown(mut self, now: u64) -> Result<D, StoreError> {
        // The log first: the files written next (delay and timer progress, offsets) may only
        // say what is durable.
        if self.store.stopped().is_none() {
            self.store.sync()?;
        }
        self.save_configs_inline()?;
        self.store.shutdown(now)
    }

    fn body_response(cmd: &RemotingCommand, body: Bytes) -> RemotingCommand {
        RemotingCommand::response_to(cmd, response::SUCCESS, None).with_body(body)
    }
}

impl<D: Disk> crate::machine::Machine for Broker<D> {
    fn metrics(&self, now: u64) -> crate::metrics::Snapshot {
        Broker::metrics(self, now)
    }
    fn on_connect(&mut self, conn: ConnId, peer: HostAddr, now: u64) {
        Broker::on_connect(self, conn, peer, now)
    }
    fn on_disconnect(&mut self, conn: ConnId, now: u64) {
        Broker::on_disconnect(self, conn, now)
    }
    fn on_command(&mut self, conn: ConnId, cmd: RemotingCommand, received_at: u64, now: u64) {
        Broker::on_command(self, conn, cmd, received_at, now)
    }
    fn on_timeout(&mut self, now: u64) {
        Broker::on_timeout(self, now)
    }
    fn on_flushed(&mut self, upto: u64, now: u64) {
        Broker::on_flushed(self, upto, now)
    }
    fn on_flush_failed(&mut self, reason: String, now: u64) {
        Broker::on_flush_failed(self, reason, now)
    }
    fn on_persisted(&mut self, token: u64, result: Result<(), String>, now: u64) {
        Broker::on_persisted(self, token, result, now)
    }
    fn on_stream_accepted(&mut self, conn: ConnId, peer: HostAddr, now: u64) {
        Broker::on_stream_accepted(self, conn, peer, now)
    }
    fn on_stream_opened(&mut self, addr: &str, conn: ConnId, now: u64) {
        Broker::on_stream_opened(self, addr, conn, now)
    }
    fn on_stream_bytes(&mut self, conn: ConnId, bytes: Bytes, now: u64) {
        Broker::on_stream_bytes(self, conn, bytes, now)
    }
    fn poll_output(&mut self) -> Option<Output> {
        Broker::poll_output(self)
    }
    fn poll_timeout(&self) -> Option<u64> {
        Broker::poll_timeout(self)
    }
}

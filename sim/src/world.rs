//! The discrete-event world: nodes, a network of encoded frames, faults, workload, history.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use bytes::{Bytes, BytesMut};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use rockfish_core::broker::{Broker, BrokerConfig};
use rockfish_core::consumer::{
    ConsumeFrom, ConsumeResult, Consumer, ConsumerConfig, ConsumerEvent, MessageModel,
};
use rockfish_core::machine::{ClientMachine, ConnId, Output};
use rockfish_core::namesrv::{NameServer, NameServerConfig};
use rockfish_core::producer::{
    Message, Producer, ProducerConfig, ProducerEvent, SendId, SendMode, SendStatus,
};
use rockfish_core::remoting::{FrameDecoder, RemotingCommand, encode};
use rockfish_store::config::{self, TopicConfig, TopicConfigTable};
use rockfish_store::record::HostAddr;
use rockfish_store::{FaultPlan, IndexConfig, MemDisk, MessageStore, StoreConfig};

use crate::config::SimConfig;

/// Name server `i` listens here.
fn ns_addr(i: usize) -> String {
    format!("10.0.0.{}:9876", i + 1)
}

/// Broker `j` listens here.
fn broker_addr(j: usize) -> String {
    format!("10.0.1.{}:10911", j + 1)
}
const TOPIC: &str = "SimTopic";
/// How long after the heal producers send again: routes converge within one broker register
/// interval (30 s, as RocketMQ's: a name server that came back empty learns a broker at its
/// next registration), then a few seconds for clients to refresh. Consumers then need up to a
/// route poll (30 s) and a rebalance (20 s) to reach a queue created after the heal: scenarios
/// give the liveness phase 100 s.
const LIVENESS_RESUME_MS: u64 = 35_000;
/// With `topic_created`, consumers start this long after the brokers (which register the
/// topic at once), so their first route query finds it.
const CONSUMERS_START_MS: u64 = 200;

enum Node {
    NameServer(NameServer),
    Broker {
        machine: Option<Box<Broker<MemDisk>>>,
        disk: MemDisk,
        generation: u64,
    },
    Producer(Producer),
    Consumer(Consumer),
}

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
}
const STREAMS: usize = 11;

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
    },
    Tick {
        node: usize,
    },
    Send {
        producer: usize,
        n: usize,
    },
    FlushDone {
        broker: usize,
        generation: u64,
        upto: u64,
    },
    PersistDone {
        broker: usize,
        generation: u64,
        token: u64,
        files: Vec<(String, Bytes)>,
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
    Join {
        consumer: usize,
    },
    Liveness,
}

/// One message handed to a consumer's application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Simulated time of the delivery, ms.
    pub at: u64,
    pub consumer: usize,
    /// Of the broadcasting group (else the clustering one).
    pub broadcast: bool,
    pub body: String,
    pub broker: String,
    /// The topic it was pulled from (the retry topic for a message consumed again).
    pub topic: String,
    pub queue: u32,
    pub offset: u64,
    /// The application consumed it (else it asked for it again later).
    pub consumed: bool,
}

impl Delivery {
    /// A delivery of a body from nowhere in particular (for tests of the checkers).
    pub fn of(consumer: usize, body: &str) -> Delivery {
        Delivery {
            at: 0,
            consumer,
            broadcast: false,
            body: body.into(),
            broker: String::new(),
            topic: TOPIC.into(),
            queue: 0,
            offset: 0,
            consumed: true,
        }
    }
}

/// Which brokers a node's view of the topic's route lists, at the end of the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteView {
    pub node: usize,
    pub brokers: Vec<String>,
}

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
    /// The brokers that host the topic at the end of the run.
    pub hosting: Vec<String>,
    /// Every live name server's and client's view of the topic's route at the end.
    pub routes: Vec<RouteView>,
    pub crashes: u32,
    pub power_losses: u32,
    pub namesrv_crashes: u32,
    /// Every broker crash and power loss, in time order.
    pub crash_log: Vec<CrashRecord>,
    /// The topic's messages in each running broker's store at the end of the run: slot -> body.
    pub stored: BTreeMap<StoreSlot, String>,
    /// The brokers whose stores `stored` covers (a broker down at the end is not judged).
    pub stored_brokers: BTreeSet<String>,
    /// The topics `stored` covers.
    pub stored_topics: BTreeSet<String>,
}

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
}

pub struct Sim {
    cfg: SimConfig,
    /// One random stream per kind of decision, all from the seed: removing one kind of fault
    /// (shrinking) does not shift the draws of the others.
    streams: [Xoshiro256PlusPlus; STREAMS],
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64, Ev)>>,
    nodes: Vec<Node>,
    /// Nodes `0..name_servers` are name servers, then `brokers` brokers, then producers, then
    /// consumers.
    name_servers: usize,
    brokers: usize,
    /// How far each node's clock runs ahead of simulated time.
    skew: Vec<u64>,
    addrs: BTreeMap<String, usize>,
    /// Name servers that are down: frames to and from them are lost.
    down: BTreeSet<usize>,
    /// A server's connection id for each client (by node), per broker generation.
    conns: BTreeMap<(usize, usize), ConnId>,
    owners: BTreeMap<(usize, ConnId), usize>,
    next_conn: u64,
    link_free: BTreeMap<(usize, usize), u64>,
    ticks: BTreeMap<usize, u64>,
    cuts: Vec<Cut>,
    next_cut: u64,
    clogs: Vec<Clog>,
    /// Paused nodes, until when.
    paused: BTreeMap<usize, u64>,
    /// Consumers that left their group.
    left: BTreeSet<usize>,
    faults_on: bool,
    sends: BTreeMap<(usize, SendId), String>,
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
        if cfg.bugs.serve_unflushed {
            rockfish_core::buggify::set_bug("broker.serve-unflushed");
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

fn consumer_config(cfg: &SimConfig, i: usize, broadcast: bool, seed: u64) -> ConsumerConfig {
    let (group, model, orderly) = if broadcast {
        let model = if cfg.bugs.broadcast_as_clustering {
            MessageModel::Clustering
        } else {
            MessageModel::Broadcasting
        };
        ("SimBroadcast", model, false)
    } else {
        let orderly = cfg.orderly && !cfg.bugs.orderly_as_concurrent;
        ("SimConsumers", MessageModel::Clustering, orderly)
    };
    ConsumerConfig {
        group: group.into(),
        client_id: format!("c{i}"),
        namesrv_addrs: (0..cfg.name_servers.max(1)).map(ns_addr).collect(),
        subscriptions: BTreeMap::from([(TOPIC.to_string(), "*".to_string())]),
        model,
        orderly,
        consume_from: ConsumeFrom::FirstOffset,
        seed,
        ..ConsumerConfig::default()
    }
}

fn store_config() -> StoreConfig {
    StoreConfig {
        commitlog_segment_size: 1 << 20,
        consume_queue_entries: 4_096,
        index: IndexConfig {
            hash_slots: 509,
            max_entries: 8_192,
        },
        ..StoreConfig::default()
    }
}

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
        let brokers = cfg.brokers.max(1);
        // Each node's clock runs ahead of simulated time by a fixed skew, drawn once.
        let total =
            name_servers + brokers + cfg.producers + cfg.consumers + cfg.broadcast_consumers;
        let mut skew_rng = Xoshiro256PlusPlus::seed_from_u64(cfg.seed ^ 0x5ce3_c10c_5ce3_c10c);
        let (lo, hi) = cfg.faults.clock_skew_ms;
        let skew: Vec<u64> = (0..total)
            .map(|_| {
                let x: u64 = skew_rng.random();
                if hi <= lo { lo } else { lo + x % (hi - lo + 1) }
            })
            .collect();
        let ns_addrs: Vec<String> = (0..name_servers).map(ns_addr).collect();
        let mut nodes = Vec::new();
        let mut addrs = BTreeMap::new();
        for (i, addr) in ns_addrs.iter().enumerate() {
            nodes.push(Node::NameServer(NameServer::new(
                NameServerConfig::default(),
                skew[i],
            )));
            addrs.insert(addr.clone(), i);
        }
        for j in 0..brokers {
            let disk = MemDisk::with_plan(rng.random(), cfg.faults.disk.clone());
            addrs.insert(broker_addr(j), nodes.len());
            nodes.push(Node::Broker {
                machine: None,
                disk,
                generation: 0,
            });
        }
        for i in 0..cfg.producers {
            let pc = ProducerConfig {
                group: "SimProducers".into(),
                client_id: format!("p{i}"),
                namesrv_addrs: ns_addrs.clone(),
                seed: rng.random(),
                ..ProducerConfig::default()
            };
            let at = skew[nodes.len()];
            nodes.push(Node::Producer(Producer::new(pc, at)));
        }
        let mut broadcast_consumers = Vec::new();
        for i in 0..cfg.consumers + cfg.broadcast_consumers {
            let broadcast = i >= cfg.consumers;
            if broadcast {
                broadcast_consumers.push(nodes.len());
            }
            let cc = consumer_config(&cfg, i, broadcast, rng.random());
            let at = skew[nodes.len()];
            nodes.push(Node::Consumer(Consumer::new(cc, BTreeMap::new(), at)));
        }
        let mut sim = Sim {
            cfg,
            streams,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            nodes,
            name_servers,
            brokers,
            skew,
            addrs,
            down: BTreeSet::new(),
            conns: BTreeMap::new(),
            owners: BTreeMap::new(),
            next_conn: 0,
            link_free: BTreeMap::new(),
            ticks: BTreeMap::new(),
            cuts: Vec::new(),
            next_cut: 0,
            clogs: Vec::new(),
            paused: BTreeMap::new(),
            left: BTreeSet::new(),
            faults_on: true,
            sends: BTreeMap::new(),
            history: History {
                broadcast_consumers,
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
            table.topic_config_table.insert(
                TOPIC.to_string(),
                TopicConfig::new(TOPIC, sim.cfg.topic_queues),
            );
            for b in sim.broker_nodes() {
                if let Node::Broker { disk, .. } = &mut sim.nodes[b] {
                    config::save(disk, config::TOPICS_FILE, &table)
                        .expect("a fresh MemDisk takes a small file");
                }
            }
            let consumers = sim.cfg.consumers + sim.cfg.broadcast_consumers;
            for c in sim.nodes.len() - consumers..sim.nodes.len() {
                sim.left.insert(c);
                sim.push(CONSUMERS_START_MS, Ev::Join { consumer: c });
            }
        }
        for b in sim.broker_nodes() {
            sim.start_broker(b);
        }
        for node in 0..sim.nodes.len() {
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

    fn addr_node(&self, addr: &str) -> Option<usize> {
        self.addrs.get(addr).copied()
    }

    /// Node `n`'s clock: what its machine is told the time is.
    fn local(&self, n: usize) -> u64 {
        self.now + self.skew[n]
    }

    fn node_name(&self, n: usize) -> String {
        match &self.nodes[n] {
            Node::NameServer(_) => format!("namesrv {n}"),
            Node::Broker { .. } => format!("broker {n}"),
            Node::Producer(_) => format!("producer {n}"),
            Node::Consumer(_) => format!("consumer {n}"),
        }
    }

    fn is_ns(&self, node: usize) -> bool {
        node < self.name_servers
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

    fn start_broker(&mut self, node: usize) {
        let now = self.now;
        let seed = self.stream(Stream::Main).random();
        let j = node - self.name_servers;
        let skew = self.skew[node];
        let namesrv_addrs = (0..self.name_servers).map(ns_addr).collect();
        let Node::Broker {
            machine,
            disk,
            generation,
        } = &mut self.nodes[node]
        else {
            unreachable!()
        };
        let mut config = BrokerConfig {
            broker_addr: broker_addr(j),
            broker_name: format!("broker-{j}"),
            namesrv_addrs,
            flush_disk_type: self.cfg.flush,
            seed,
            ..BrokerConfig::default()
        };
        if self.cfg.bugs.register_once {
            config.register_interval_ms = 1 << 40;
        }
        // Recovery, then the broker's own start (it persists its topic table): either may
        // meet a disk fault; the supervisor tries again.
        let clock = now + skew;
        let started = MessageStore::open(disk.clone(), store_config(), clock as i64)
            .map_err(|e| format!("recovery failed: {e}"))
            .and_then(|(store, report)| {
                Broker::new(config, store, clock)
                    .map(|b| (b, report))
                    .map_err(|e| format!("start failed: {e}"))
            });
        let line = match started {
            Ok((broker, report)) => {
                *machine = Some(Box::new(broker));
                *generation += 1;
                format!(
                    "t={now} broker {node} up gen={generation} log_end={} truncated={}",
                    report.log_end,
                    report.truncated.is_some()
                )
            }
            Err(e) => {
                self.push(now + 500, Ev::Restart { broker: node });
                format!("t={now} broker {node} {e}; retrying")
            }
        };
        self.log(line);
    }

    /// Sends a frame over the simulated network (FIFO per link, with latency and faults).
    fn transmit(&mut self, from: usize, to: usize, frame: Bytes) {
        if self.down.contains(&from) || self.down.contains(&to) || self.left.contains(&to) {
            return;
        }
        if self.cuts.iter().any(|c| c.blocks(from, to)) {
            return;
        }
        // A clogged link holds what is sent until the clog clears.
        let now = self.now;
        let held = self
            .clogs
            .iter()
            .filter(|c| (c.node == from || c.node == to) && c.from <= now && now < c.until)
            .map(|c| c.until)
            .max()
            .unwrap_or(0);
        let (drop, dup) = if self.faults_on {
            (self.cfg.faults.drop, self.cfg.faults.duplicate)
        } else {
            (0.0, 0.0)
        };
        if self.chance(Stream::Net, drop) {
            let line = format!("t={} drop {from}->{to} len={}", self.now, frame.len());
            self.log(line);
            return;
        }
        let copies = if self.chance(Stream::Net, dup) { 2 } else { 1 };
        for _ in 0..copies {
            let latency = self.between(Stream::Net, self.cfg.faults.latency_ms);
            let free = self.link_free.get(&(from, to)).copied().unwrap_or(0);
            let at = (self.now + latency).max(free).max(held);
            self.link_free.insert((from, to), at);
            self.push(
                at,
                Ev::Frame {
                    sent: self.now,
                    from,
                    to,
                    frame: frame.clone(),
                },
            );
        }
    }

    /// A broker's disk work (a flush or a persist) completes after a simulated latency, as
    /// long as the broker is not restarted meanwhile (the event carries its generation).
    fn disk_done(&mut self, node: usize, ev: impl FnOnce(usize, u64) -> Ev) {
        let Node::Broker { generation, .. } = &self.nodes[node] else {
            return;
        };
        let generation = *generation;
        let at = self.now + self.between(Stream::Main, (1, 4));
        self.push(at, ev(node, generation));
    }

    fn frame(cmd: &RemotingCommand, records: &[Bytes]) -> Bytes {
        let mut out = BytesMut::new();
        if records.is_empty() {
            encode(cmd, &mut Vec::new(), &mut out).expect("machines only build encodable commands");
        } else {
            let body = records.iter().map(Bytes::len).sum::<usize>() + cmd.body.len();
            rockfish_core::remoting::frame::encode_prefix(cmd, body, &mut Vec::new(), &mut out)
                .expect("encodable");
            out.extend_from_slice(&cmd.body);
            for r in records {
                out.extend_from_slice(r);
            }
        }
        out.freeze()
    }

    fn server_conn(&mut self, server: usize, client: usize) -> ConnId {
        if let Some(c) = self.conns.get(&(server, client)) {
            return *c;
        }
        self.next_conn += 1;
        let conn = ConnId(self.next_conn);
        self.conns.insert((server, client), conn);
        self.owners.insert((server, conn), client);
        let clock = self.local(server);
        if let Node::Broker {
            machine: Some(b), ..
        } = &mut self.nodes[server]
        {
            b.on_connect(conn, HostAddr::V4([10, 0, 1, client as u8], 40_000), clock);
        }
        conn
    }

    /// Drains a node's outputs and events, then arms its timer.
    fn after(&mut self, node: usize) {
        // A consumer that left is a process that exited: nothing runs there.
        if self.left.contains(&node) {
            return;
        }
        let mut outs = Vec::new();
        let mut delivered = Vec::new();
        let mut sent = Vec::new();
        match &mut self.nodes[node] {
            Node::NameServer(ns) => outs.extend(std::iter::from_fn(|| ns.poll_output())),
            Node::Broker {
                machine: Some(b), ..
            } => outs.extend(std::iter::from_fn(|| b.poll_output())),
            Node::Broker { machine: None, .. } => {}
            Node::Producer(p) => {
                outs.extend(std::iter::from_fn(|| p.poll_output()));
                sent.extend(std::iter::from_fn(|| p.poll_event()));
            }
            Node::Consumer(c) => {
                outs.extend(std::iter::from_fn(|| c.poll_output()));
                delivered.extend(std::iter::from_fn(|| c.poll_event()));
            }
        }
        for out in outs {
            match out {
                Output::SendTo { addr, cmd } => {
                    if let Some(to) = self.addr_node(&addr) {
                        let f = Self::frame(&cmd, &[]);
                        self.transmit(node, to, f);
                    }
                }
                Output::Send { conn, cmd } => {
                    if let Some(to) = self.owners.get(&(node, conn)).copied() {
                        let f = Self::frame(&cmd, &[]);
                        self.transmit(node, to, f);
                    }
                }
                Output::SendRecords { conn, cmd, records } => {
                    if let Some(to) = self.owners.get(&(node, conn)).copied() {
                        let f = Self::frame(&cmd, &records);
                        self.transmit(node, to, f);
                    }
                }
                Output::Flush { upto } => {
                    self.disk_done(node, |broker, generation| Ev::FlushDone {
                        broker,
                        generation,
                        upto,
                    })
                }
                Output::Persist { token, files } => {
                    self.disk_done(node, |broker, generation| Ev::PersistDone {
                        broker,
                        generation,
                        token,
                        files,
                    })
                }
                Output::Close { conn, reason } => self.close(node, conn, &reason),
            }
        }
        for ProducerEvent::Sent { id, result, .. } in sent {
            if let Some(body) = self.sends.remove(&(node, id)) {
                let status = result.as_ref().ok().map(|r| r.status);
                let line = format!("t={} sent {body} {:?}", self.now, status);
                self.log(line);
                self.history.sent.insert(body, status);
            }
        }
        let mut acked = false;
        let clock = self.local(node);
        let broadcast = self.history.broadcast_consumers.contains(&node);
        for e in delivered {
            if let ConsumerEvent::Deliver { mq, msgs } = e {
                for m in msgs {
                    let payload = m.body();
                    let name = payload.split(|b| *b == b'#').next().unwrap_or_default();
                    let body = String::from_utf8_lossy(name).into_owned();
                    // The application consumes it, or now and then asks for it again later.
                    let consumed = !self.chance(Stream::App, self.cfg.reconsume_share);
                    let line = format!(
                        "t={} deliver c{} {body} {}/q{}@{}{}",
                        self.now,
                        node,
                        mq.broker_name,
                        mq.queue_id,
                        m.queue_offset(),
                        if consumed { "" } else { " later" }
                    );
                    self.log(line);
                    self.history.delivered.push(Delivery {
                        at: self.now,
                        consumer: node,
                        broadcast,
                        body,
                        broker: mq.broker_name.clone(),
                        topic: mq.topic.clone(),
                        queue: mq.queue_id,
                        offset: m.queue_offset(),
                        consumed,
                    });
                    let result = if consumed {
                        ConsumeResult::Success
                    } else {
                        ConsumeResult::ReconsumeLater
                    };
                    if let Node::Consumer(c) = &mut self.nodes[node] {
                        c.ack(&mq, m.queue_offset(), result, clock);
                    }
                    acked = true;
                }
            }
        }
        if acked {
            // Acks may have produced more outputs and events.
            return self.after(node);
        }
        let next = match &self.nodes[node] {
            Node::NameServer(ns) => ns.poll_timeout(),
            Node::Broker {
                machine: Some(b), ..
            } => b.poll_timeout(),
            Node::Broker { machine: None, .. } => None,
            Node::Producer(p) => p.poll_timeout(),
            Node::Consumer(c) => c.poll_timeout(),
        };
        if let Some(t) = next {
            // The machine's deadline is on its own clock.
            let t = t.saturating_sub(self.skew[node]).max(self.now + 1);
            if self
                .ticks
                .get(&node)
                .is_none_or(|cur| t < *cur || *cur <= self.now)
            {
                self.ticks.insert(node, t);
                self.push(t, Ev::Tick { node });
            }
        }
    }

    fn deliver(&mut self, sent: u64, from: usize, to: usize, frame: Bytes) {
        // A frame in flight to or from a name server that died (or to a consumer that left) is
        // lost with it.
        if self.down.contains(&from) || self.down.contains(&to) || self.left.contains(&to) {
            return;
        }
        let mut buf = BytesMut::from(&frame[..]);
        let cmd = match FrameDecoder::default().decode(&mut buf) {
            Ok(Some(cmd)) => cmd,
            other => {
                let line = format!("t={} undecodable frame {from}->{to}: {other:?}", self.now);
                self.log(line);
                return;
            }
        };
        let mut line = format!(
            "t={} frame {from}->{to} code={} op={} resp={} sent={sent}",
            self.now,
            cmd.code,
            cmd.opaque,
            cmd.is_response()
        );
        for k in [
            "queueId",
            "queueOffset",
            "offset",
            "commitOffset",
            "nextBeginOffset",
            "minOffset",
            "maxOffset",
        ] {
            if let Some(v) = cmd.ext(k) {
                line.push_str(&format!(" {k}={v}"));
            }
        }
        if let Some(remark) = &cmd.remark {
            line.push_str(&format!(" remark={remark:?}"));
        }
        self.log(line);
        let now = self.local(to);
        let server = self.is_ns(to) || self.is_broker(to);
        match to {
            _ if server && (!cmd.is_response() || self.is_broker(to) && self.is_ns(from)) => {
                let conn = self.server_conn(to, from);
                match &mut self.nodes[to] {
                    Node::NameServer(ns) => ns.on_command(conn, cmd, now),
                    Node::Broker {
                        machine: Some(b), ..
                    } => b.on_command(conn, cmd, now, now),
                    _ => {}
                }
            }
            _ => match &mut self.nodes[to] {
                Node::Producer(p) => p.on_command(cmd, now),
                Node::Consumer(c) => c.on_command(cmd, now),
                Node::Broker {
                    machine: Some(b), ..
                } => b.on_command(ConnId(0), cmd, now, now),
                _ => {}
            },
        }
        self.after(to);
    }

    /// The node an event happens on, if it is one a pause holds back.
    fn target(ev: &Ev) -> Option<usize> {
        match ev {
            Ev::Frame { to, .. } => Some(*to),
            Ev::Tick { node } => Some(*node),
            Ev::Send { producer, .. } => Some(*producer),
            Ev::FlushDone { broker, .. } | Ev::PersistDone { broker, .. } => Some(*broker),
            _ => None,
        }
    }

    fn step(&mut self, ev: Ev) {
        // A paused node handles nothing until it resumes: its events wait, in order.
        if let Some(node) = Self::target(&ev)
            && let Some(until) = self.paused.get(&node).copied()
        {
            if until > self.now {
                if let Ev::Tick { node } = ev {
                    if self.ticks.get(&node) != Some(&self.now) {
                        return;
                    }
                    self.ticks.insert(node, until);
                }
                self.push(until, ev);
                return;
            }
            self.paused.remove(&node);
            let line = format!("t={} recover resume {node}", self.now);
            self.log(line);
        }
        match ev {
            Ev::Frame {
                sent,
                from,
                to,
                frame,
            } => self.deliver(sent, from, to, frame),
            Ev::Tick { node } => {
                if self.ticks.get(&node) != Some(&self.now) {
                    return;
                }
                self.ticks.remove(&node);
                let now = self.local(node);
                match &mut self.nodes[node] {
                    Node::NameServer(ns) => ns.on_timeout(now),
                    Node::Broker {
                        machine: Some(b), ..
                    } => b.on_timeout(now),
                    Node::Broker { machine: None, .. } => {}
                    Node::Producer(p) => p.on_timeout(now),
                    Node::Consumer(c) => c.on_timeout(now),
                }
                self.after(node);
                if self.is_broker(node) && self.faults_on {
                    self.maybe_faults(node);
                }
            }
            Ev::Send { producer, n } => {
                let p = producer - self.first_client();
                let body = if n < self.cfg.messages {
                    format!("p{p}-{n}")
                } else {
                    format!("p{p}-L{}", n - self.cfg.messages)
                };
                let now = self.local(producer);
                let orderly = self.cfg.orderly;
                // Padding after a '#' fills the disk; the part before it names the message.
                let mut payload = body.clone().into_bytes();
                if payload.len() < self.cfg.body_bytes {
                    payload.push(b'#');
                    payload.resize(self.cfg.body_bytes, b'.');
                }
                if let Node::Producer(p) = &mut self.nodes[producer] {
                    let msg = Message::new(TOPIC, payload);
                    let id = if orderly {
                        // Messages of one sharding key go to one queue, in order.
                        p.send_ordered(msg, &format!("k{}", n % 8), SendMode::Async, now)
                    } else {
                        p.send(msg, SendMode::Async, now)
                    };
                    self.sends.insert((producer, id), body.clone());
                    self.history.sent_at.entry(body.clone()).or_insert(self.now);
                    self.history.sent.entry(body).or_insert(None);
                }
                self.after(producer);
            }
            Ev::FlushDone {
                broker,
                generation,
                upto,
            } => {
                let lying = self.cfg.bugs.lying_flush;
                let now = self.local(broker);
                if let Node::Broker {
                    machine: Some(b),
                    generation: g,
                    ..
                } = &mut self.nodes[broker]
                    && *g == generation
                {
                    if lying {
                        b.on_flushed(upto, now);
                    } else {
                        b.run_flush(upto, now);
                    }
                    self.after(broker);
                }
            }
            Ev::PersistDone {
                broker,
                generation,
                token,
                files,
            } => {
                let now = self.local(broker);
                if let Node::Broker {
                    machine: Some(b),
                    generation: g,
                    ..
                } = &mut self.nodes[broker]
                    && *g == generation
                {
                    b.run_persist(token, files, now);
                    self.after(broker);
                }
            }
            Ev::Crash {
                broker,
                power,
                operator,
            } => {
                if !self.faults_on && !operator {
                    return;
                }
                let Node::Broker { machine, disk, .. } = &mut self.nodes[broker] else {
                    unreachable!()
                };
                if machine.take().is_none() {
                    return;
                }
                if power {
                    disk.power_loss();
                    self.history.power_losses += 1;
                } else {
                    disk.crash();
                }
                self.history.crashes += 1;
                self.history.crash_log.push(CrashRecord {
                    at: self.now,
                    broker: format!("broker-{}", broker - self.name_servers),
                    power,
                });
                let line = format!(
                    "t={} broker {broker} {}",
                    self.now,
                    if power { "power loss" } else { "crash" }
                );
                self.log(line);
                // Its connections die with it.
                self.conns.retain(|(s, _), _| *s != broker);
                self.owners.retain(|(s, _), _| *s != broker);
                self.ticks.remove(&broker);
                let addr = broker_addr(broker - self.name_servers);
                for n in self.first_client()..self.nodes.len() {
                    let now = self.local(n);
                    if let Node::Producer(p) = &mut self.nodes[n] {
                        p.on_peer_lost(&addr, now);
                    }
                    self.after(n);
                }
                let down = self.between(Stream::Crash, self.cfg.faults.down_ms);
                self.push(self.now + down, Ev::Restart { broker });
            }
            Ev::Restart { broker } => {
                if self.cfg.bugs.no_restart && self.history.crashes > 0 {
                    return;
                }
                if matches!(self.nodes[broker], Node::Broker { machine: None, .. }) {
                    self.start_broker(broker);
                    self.after(broker);
                }
            }
            Ev::NsCrash { ns } => {
                if !self.faults_on || !self.down.insert(ns) {
                    return;
                }
                self.history.namesrv_crashes += 1;
                let line = format!("t={} name server {ns} down", self.now);
                self.log(line);
                self.conns.retain(|(s, _), _| *s != ns);
                self.owners.retain(|(s, _), _| *s != ns);
                self.ticks.remove(&ns);
                let d = self.between(Stream::Namesrv, self.cfg.faults.down_ms);
                self.push(self.now + d, Ev::NsRestart { ns });
            }
            Ev::NsRestart { ns } => {
                if self.down.remove(&ns) {
                    // It comes back with an empty route table: brokers fill it again.
                    self.nodes[ns] = Node::NameServer(NameServer::new(
                        NameServerConfig::default(),
                        self.local(ns),
                    ));
                    let line = format!("t={} name server {ns} up", self.now);
                    self.log(line);
                    self.after(ns);
                }
            }
            Ev::Heal { id, node } => {
                let before = self.cuts.len();
                self.cuts.retain(|c| c.id != id);
                if self.cuts.len() < before {
                    let line = format!("t={} recover heal {node}", self.now);
                    self.log(line);
                }
            }
            Ev::Pause { node, ms } => {
                if self.faults_on && !self.paused.contains_key(&node) {
                    let line = format!("t={} fault pause {node} for {ms}ms", self.now);
                    self.log(line);
                    self.paused.insert(node, self.now + ms);
                }
            }
            Ev::Leave { consumer } => {
                if !self.faults_on || self.left.contains(&consumer) {
                    return;
                }
                let line = format!("t={} fault leave {consumer}", self.now);
                self.log(line);
                let now = self.local(consumer);
                if let Node::Consumer(c) = &mut self.nodes[consumer] {
                    c.shutdown(now);
                }
                // Its goodbyes go out, then its connections close.
                self.after(consumer);
                self.left.insert(consumer);
                self.ticks.remove(&consumer);
                self.disconnect(consumer);
                let d = self.between(Stream::Churn, self.cfg.faults.down_ms);
                self.push(self.now + d, Ev::Join { consumer });
            }
            Ev::Join { consumer } => {
                if !self.left.remove(&consumer) {
                    return;
                }
                let line = format!("t={} recover join {consumer}", self.now);
                self.log(line);
                let i = consumer - self.first_client() - self.cfg.producers;
                let broadcast = self.history.broadcast_consumers.contains(&consumer);
                let seed = self.stream(Stream::Churn).random();
                let cc = consumer_config(&self.cfg, i, broadcast, seed);
                let now = self.local(consumer);
                if let Node::Consumer(c) = &mut self.nodes[consumer] {
                    // A broadcasting consumer starts from the offsets it kept.
                    let kept = if broadcast {
                        c.offsets().clone()
                    } else {
                        BTreeMap::new()
                    };
                    *c = Consumer::new(cc, kept, now);
                }
                self.after(consumer);
            }
            Ev::Liveness => {
                self.faults_on = false;
                // The machines' own fault sites stop with the other faults.
                self.buggify_fired += rockfish_core::buggify::disarm();
                self.cuts.clear();
                for c in &mut self.clogs {
                    c.until = c.until.min(self.now);
                }
                for consumer in self.left.clone() {
                    self.push(self.now, Ev::Join { consumer });
                }
                let line = format!("t={} liveness phase: faults off", self.now);
                self.log(line);
                for ns in std::mem::take(&mut self.down) {
                    self.down.insert(ns);
                    self.push(self.now, Ev::NsRestart { ns });
                }
                for broker in self.broker_nodes() {
                    if let Node::Broker { disk, .. } = &self.nodes[broker] {
                        disk.set_plan(FaultPlan::default());
                    }
                    // A store that stopped accepting writes after a disk failure stays
                    // stopped until restarted: the operator (or supervisor) restarts it.
                    let stopped = match &self.nodes[broker] {
                        Node::Broker {
                            machine: Some(b), ..
                        } => b.store().stopped().map(str::to_owned),
                        _ => None,
                    };
                    if let Some(reason) = stopped {
                        let line =
                            format!("t={} operator restarts broker {broker}: {reason}", self.now);
                        self.log(line);
                        self.push(
                            self.now,
                            Ev::Crash {
                                broker,
                                power: false,
                                operator: true,
                            },
                        );
                    }
                    self.push(self.now, Ev::Restart { broker });
                }
            }
        }
    }

    /// Draws crashes and partitions once per broker tick, scaled to the time since the last.
    fn maybe_faults(&mut self, broker: usize) {
        let f = self.cfg.faults.clone();
        // Broker ticks come at least every second or so; treat each as a one-second chance.
        if self.chance(Stream::Crash, f.crash_per_sec) {
            let power = self.chance(Stream::Crash, f.power_loss_share);
            let at = self.now + self.between(Stream::Crash, (0, 50));
            self.push(
                at,
                Ev::Crash {
                    broker,
                    power,
                    operator: false,
                },
            );
        }
        // Cluster-wide faults are drawn on the first broker's ticks only.
        if broker != self.name_servers {
            return;
        }
        let first = self.first_client();
        let total = self.nodes.len();
        if self.chance(Stream::Partition, f.partition_per_sec) && total > first {
            let client = first + self.below(Stream::Partition, total - first);
            let ms = self.between(Stream::Partition, f.partition_ms);
            let brokers = self.broker_nodes().collect();
            self.partition(
                "cut-from-brokers",
                client,
                [client].into(),
                brokers,
                true,
                ms,
            );
        }
        if self.chance(Stream::OneWay, f.one_way_per_sec) {
            let node = self.below(Stream::OneWay, total);
            let deaf = self.chance(Stream::OneWay, 0.5);
            let ms = self.between(Stream::OneWay, f.partition_ms);
            let others: BTreeSet<usize> = (0..total).filter(|n| *n != node).collect();
            let me = BTreeSet::from([node]);
            // Deaf: it hears nothing but is heard; mute: the other way round.
            if deaf {
                self.partition("one-way-deaf", node, others, me, false, ms);
            } else {
                self.partition("one-way-mute", node, me, others, false, ms);
            }
        }
        if self.chance(Stream::Isolate, f.isolate_per_sec) {
            let node = self.below(Stream::Isolate, total);
            let ms = self.between(Stream::Isolate, f.partition_ms);
            let others = (0..total).filter(|n| *n != node).collect();
            self.partition("isolate", node, [node].into(), others, true, ms);
        }
        if self.chance(Stream::Swizzle, f.swizzle_per_sec) {
            self.swizzle();
        }
        if self.chance(Stream::Pause, f.pause_per_sec) {
            let node = self.below(Stream::Pause, total);
            let ms = self.between(Stream::Pause, f.pause_ms);
            self.push(self.now, Ev::Pause { node, ms });
        }
        if self.chance(Stream::Churn, f.churn_per_sec) {
            let consumers = self.cfg.consumers + self.cfg.broadcast_consumers;
            if consumers > 0 {
                let consumer = total - consumers + self.below(Stream::Churn, consumers);
                self.push(self.now, Ev::Leave { consumer });
            }
        }
        if self.chance(Stream::Namesrv, f.namesrv_crash_per_sec) {
            let ns = self.between(Stream::Namesrv, (0, self.name_servers as u64 - 1)) as usize;
            self.push(self.now, Ev::NsCrash { ns });
        }
    }

    /// A uniform draw in `0..n` (`n > 0`).
    fn below(&mut self, s: Stream, n: usize) -> usize {
        self.between(s, (0, n as u64 - 1)) as usize
    }

    /// Starts a partition now (frames from `a` to `b` lost, and back if `both_ways`) that
    /// heals after `ms`; `what` and `node` name it in the trace.
    fn partition(
        &mut self,
        what: &str,
        node: usize,
        a: BTreeSet<usize>,
        b: BTreeSet<usize>,
        both_ways: bool,
        ms: u64,
    ) {
        self.next_cut += 1;
        let id = self.next_cut;
        let line = format!("t={} fault {what} {node} for {ms}ms", self.now);
        self.log(line);
        self.push(self.now + ms, Ev::Heal { id, node });
        self.cuts.push(Cut {
            id,
            a,
            b,
            both_ways,
        });
    }

    /// FoundationDB's swizzle-clogging: a random handful of nodes clog one after another, stay
    /// clogged a while, then unclog one after another in a different random order.
    fn swizzle(&mut self) {
        let total = self.nodes.len();
        let mut order: Vec<usize> = (0..total).collect();
        for i in (1..total).rev() {
            let j = self.below(Stream::Swizzle, i + 1);
            order.swap(i, j);
        }
        let k = 1 + self.below(Stream::Swizzle, total.div_ceil(2));
        order.truncate(k);
        let step = self.between(Stream::Swizzle, (50, 500));
        let hold = self.between(Stream::Swizzle, self.cfg.faults.partition_ms);
        let mut unclog = order.clone();
        for i in (1..k).rev() {
            let j = self.below(Stream::Swizzle, i + 1);
            unclog.swap(i, j);
        }
        let start = self.now;
        let all_clogged = start + k as u64 * step;
        for (i, node) in order.iter().enumerate() {
            let from = start + i as u64 * step;
            let pos = unclog.iter().position(|n| n == node).expect("same nodes");
            let until = all_clogged + hold + pos as u64 * step;
            self.clogs.push(Clog {
                node: *node,
                from,
                until,
            });
            let line = format!("t={} fault clog {node} from {from} until {until}", self.now);
            self.log(line);
        }
        let now = self.now;
        self.clogs.retain(|c| c.until > now);
    }

    /// A server closed one of its connections (`Output::Close`). As the real driver does, the
    /// server is told `on_disconnect` at once and the client loses its peer.
    fn close(&mut self, server: usize, conn: ConnId, reason: &str) {
        let Some(client) = self.owners.remove(&(server, conn)) else {
            return;
        };
        self.conns.remove(&(server, client));
        let line = format!("t={} {server} closes {client}: {reason}", self.now);
        self.log(line);
        let now = self.local(server);
        match &mut self.nodes[server] {
            Node::NameServer(ns) => ns.on_disconnect(conn, now),
            Node::Broker {
                machine: Some(b), ..
            } => b.on_disconnect(conn, now),
            _ => {}
        }
        self.after(server);
        let addr = self
            .addrs
            .iter()
            .find(|(_, n)| **n == server)
            .map(|(a, _)| a.clone());
        let now = self.local(client);
        if let Some(addr) = addr {
            match &mut self.nodes[client] {
                Node::Producer(p) => ClientMachine::on_peer_lost(p, &addr, now),
                Node::Consumer(c) => ClientMachine::on_peer_lost(c, &addr, now),
                _ => {}
            }
        }
        self.after(client);
    }

    /// Closes every connection a client had to the servers, as its process exiting would.
    fn disconnect(&mut self, client: usize) {
        let conns: Vec<(usize, ConnId)> = self
            .conns
            .iter()
            .filter(|((_, c), _)| *c == client)
            .map(|((s, _), conn)| (*s, *conn))
            .collect();
        for (server, conn) in conns {
            self.conns.remove(&(server, client));
            self.owners.remove(&(server, conn));
            let now = self.local(server);
            match &mut self.nodes[server] {
                Node::NameServer(ns) => ns.on_disconnect(conn, now),
                Node::Broker {
                    machine: Some(b), ..
                } => b.on_disconnect(conn, now),
                _ => {}
            }
            self.after(server);
        }
    }

    /// Every live node's view of the topic's route, and which brokers host the topic.
    fn record_routes(&mut self) {
        let mut views = Vec::new();
        let mut hosting = Vec::new();
        for (n, node) in self.nodes.iter().enumerate() {
            let brokers: Option<BTreeSet<String>> = match node {
                Node::NameServer(ns) if !self.down.contains(&n) => Some(
                    ns.route(TOPIC)
                        .map(|r| r.broker_datas.into_iter().map(|b| b.broker_name).collect())
                        .unwrap_or_default(),
                ),
                Node::Broker {
                    machine: Some(b), ..
                } => {
                    if b.topic(TOPIC).is_some() {
                        hosting.push(b.config().broker_name.clone());
                    }
                    None
                }
                Node::Producer(p) => Some(
                    p.queues(TOPIC)
                        .unwrap_or_default()
                        .iter()
                        .map(|q| q.broker_name.clone())
                        .collect(),
                ),
                Node::Consumer(c) if !self.left.contains(&n) => Some(
                    c.route(TOPIC)
                        .map(|r| {
                            r.broker_datas
                                .iter()
                                .map(|b| b.broker_name.clone())
                                .collect()
                        })
                        .unwrap_or_default(),
                ),
                _ => None,
            };
            if let Some(brokers) = brokers {
                views.push(RouteView {
                    node: n,
                    brokers: brokers.into_iter().collect(),
                });
            }
        }
        self.history.hosting = hosting;
        self.history.routes = views;
    }

    /// What each running broker holds of the topic at the end, queue offset by queue offset.
    fn record_stored(&mut self) {
        self.history.stored_topics.insert(TOPIC.to_string());
        for node in self.broker_nodes() {
            let Node::Broker {
                machine: Some(b), ..
            } = &self.nodes[node]
            else {
                continue;
            };
            let name = b.config().broker_name.clone();
            let store = b.store();
            let queues: Vec<u32> = store
                .queue_ids()
                .filter(|(t, _)| *t == TOPIC)
                .map(|(_, q)| q)
                .collect();
            for q in queues {
                let mut offset = store.min_offset(TOPIC, q);
                while offset < store.max_offset(TOPIC, q) {
                    let Ok(got) = store.get(TOPIC, q, offset, 256, usize::MAX, &|_| true) else {
                        break;
                    };
                    for m in &got.messages {
                        let payload = m.body();
                        let body = payload.split(|b| *b == b'#').next().unwrap_or_default();
                        let body = String::from_utf8_lossy(body).into_owned();
                        let slot = (name.clone(), TOPIC.to_string(), q, m.queue_offset());
                        self.history.stored.insert(slot, body);
                    }
                    if got.next_offset <= offset {
                        break;
                    }
                    offset = got.next_offset;
                }
            }
            self.history.stored_brokers.insert(name);
        }
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
        self.record_routes();
        self.record_stored();
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
            nodes: (0..self.nodes.len()).map(|n| self.node_name(n)).collect(),
            history: self.history,
            trace: self.trace,
        }
    }
}

//! The discrete-event world: nodes, a network of encoded frames, faults, workload, history.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use bytes::{Bytes, BytesMut};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use rockfish_core::broker::{Broker, BrokerConfig};
use rockfish_core::consumer::{
    ConsumeFrom, ConsumeResult, Consumer, ConsumerConfig, ConsumerEvent,
};
use rockfish_core::machine::{ConnId, Output};
use rockfish_core::namesrv::{NameServer, NameServerConfig};
use rockfish_core::producer::{
    Message, Producer, ProducerConfig, ProducerEvent, SendId, SendMode, SendStatus,
};
use rockfish_core::remoting::{FrameDecoder, RemotingCommand, encode};
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
    Partition,
    Namesrv,
}
const STREAMS: usize = 5;

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
    Cut {
        client: usize,
    },
    Heal {
        client: usize,
    },
    Liveness,
}

/// What happened, for the checkers.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// body -> (acknowledged status, if any)
    pub sent: BTreeMap<String, Option<SendStatus>>,
    /// (consumer node, body) in delivery order.
    pub delivered: Vec<(usize, String)>,
    pub crashes: u32,
    pub power_losses: u32,
    pub namesrv_crashes: u32,
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
    cut: BTreeSet<usize>,
    faults_on: bool,
    sends: BTreeMap<(usize, SendId), String>,
    history: History,
    trace: Vec<String>,
    crc: crc32fast::Hasher,
    events: u64,
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
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(cfg.seed);
        let streams = std::array::from_fn(|i| {
            Xoshiro256PlusPlus::seed_from_u64(
                cfg.seed ^ (0x9e37_79b9_7f4a_7c15u64.wrapping_mul(i as u64 + 1)),
            )
        });
        let name_servers = cfg.name_servers.max(1);
        let brokers = cfg.brokers.max(1);
        // Each node's clock runs ahead of simulated time by a fixed skew, drawn once.
        let total = name_servers + brokers + cfg.producers + cfg.consumers;
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
        for i in 0..cfg.consumers {
            let cc = ConsumerConfig {
                group: "SimConsumers".into(),
                client_id: format!("c{i}"),
                namesrv_addrs: ns_addrs.clone(),
                subscriptions: BTreeMap::from([(TOPIC.to_string(), "*".to_string())]),
                consume_from: ConsumeFrom::FirstOffset,
                seed: rng.random(),
                ..ConsumerConfig::default()
            };
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
            cut: BTreeSet::new(),
            faults_on: true,
            sends: BTreeMap::new(),
            history: History::default(),
            trace: Vec::new(),
            crc: crc32fast::Hasher::new(),
            events: 0,
        };
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
        let config = BrokerConfig {
            broker_addr: broker_addr(j),
            broker_name: format!("broker-{j}"),
            namesrv_addrs,
            flush_disk_type: self.cfg.flush,
            seed,
            ..BrokerConfig::default()
        };
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
        if self.down.contains(&from) || self.down.contains(&to) {
            return;
        }
        let partitioned = self.cut.contains(&from) || self.cut.contains(&to);
        let touches_broker = self.is_broker(from) || self.is_broker(to);
        if partitioned && touches_broker {
            return;
        }
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
            let at = (self.now + latency).max(free);
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
                    let Node::Broker { generation, .. } = &self.nodes[node] else {
                        continue;
                    };
                    let generation = *generation;
                    let at = self.now + self.between(Stream::Main, (1, 4));
                    self.push(
                        at,
                        Ev::FlushDone {
                            broker: node,
                            generation,
                            upto,
                        },
                    );
                }
                Output::Close { .. } => {}
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
        for e in delivered {
            if let ConsumerEvent::Deliver { mq, msgs } = e {
                for m in msgs {
                    let body = String::from_utf8_lossy(&m.body()).into_owned();
                    let line = format!(
                        "t={} deliver c{} {body} q{}@{}",
                        self.now,
                        node,
                        mq.queue_id,
                        m.queue_offset()
                    );
                    self.log(line);
                    self.history.delivered.push((node, body));
                    if let Node::Consumer(c) = &mut self.nodes[node] {
                        c.ack(&mq, m.queue_offset(), ConsumeResult::Success, clock);
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
        // A frame in flight to or from a name server that died is lost with it.
        if self.down.contains(&from) || self.down.contains(&to) {
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
            "remark",
        ] {
            if let Some(v) = cmd.ext(k) {
                line.push_str(&format!(" {k}={v}"));
            }
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

    fn step(&mut self, ev: Ev) {
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
                if let Node::Producer(p) = &mut self.nodes[producer] {
                    let id = p.send(Message::new(TOPIC, body.clone()), SendMode::Async, now);
                    self.sends.insert((producer, id), body.clone());
                    self.history.sent.entry(body).or_insert(None);
                }
                self.after(producer);
            }
            Ev::FlushDone {
                broker,
                generation,
                upto,
            } => {
                let lying = self.cfg.bug_lying_flush;
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
                if self.cfg.bug_no_restart && self.history.crashes > 0 {
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
            Ev::Cut { client } => {
                if self.faults_on && self.cut.insert(client) {
                    let line = format!("t={} cut {client} from the broker", self.now);
                    self.log(line);
                    let d = self.between(Stream::Partition, self.cfg.faults.partition_ms);
                    self.push(self.now + d, Ev::Heal { client });
                }
            }
            Ev::Heal { client } => {
                if self.cut.remove(&client) {
                    let line = format!("t={} heal {client}", self.now);
                    self.log(line);
                }
            }
            Ev::Liveness => {
                self.faults_on = false;
                self.cut.clear();
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
        if self.chance(Stream::Partition, f.partition_per_sec) && self.nodes.len() > first {
            let n = (self.nodes.len() - first) as u64;
            let client = first + self.between(Stream::Partition, (0, n - 1)) as usize;
            self.push(self.now, Ev::Cut { client });
        }
        if self.chance(Stream::Namesrv, f.namesrv_crash_per_sec) {
            let ns = self.between(Stream::Namesrv, (0, self.name_servers as u64 - 1)) as usize;
            self.push(self.now, Ev::NsCrash { ns });
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

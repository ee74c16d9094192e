//! A small cluster for machine-level tests: one name server, one broker on a `MemDisk`, and
//! the producers and consumers a test adds, wired by the simulator's `Fabric`. Frames are
//! encoded and decoded for real but arrive at once; disk work completes at once; time moves
//! only when the test calls `advance`. Any output the fabric cannot place panics (the machine
//! contract: no output is dropped silently).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use rockfish_core::broker::{Broker, BrokerConfig};
use rockfish_core::consumer::{Consumer, ConsumerEvent, SimpleConsumer, SimpleEvent};
use rockfish_core::namesrv::{NameServer, NameServerConfig};
use rockfish_core::producer::{Producer, ProducerEvent};
use rockfish_core::proxy::{Proxy, ProxyEvent};
use rockfish_core::remoting::RemotingCommand;
use rockfish_store::{MemDisk, MessageStore, StoreConfig};

use super::fabric::{ClientEvent, Fabric, Node, Routed, unframe};

pub use super::client::NS;
pub const BROKER: &str = "127.0.0.1:10911";
/// The master's HA port (its port + 1).
pub const BROKER_HA: &str = "127.0.0.1:10912";
/// Where `with_slave` puts the slave.
pub const SLAVE: &str = "127.0.0.1:10921";

const NS_NODE: usize = 0;
const BROKER_NODE: usize = 1;

/// A bound on the frames one `pump` moves: a cluster that never goes quiet is a bug.
const PUMP_MAX_ROUNDS: usize = 100_000;

pub struct Cluster {
    pub now: u64,
    fabric: Fabric,
    names: BTreeMap<String, usize>,
    /// Clients whose process is gone: nothing runs there, frames to and from them are lost.
    gone: BTreeSet<usize>,
    frames: VecDeque<(usize, usize, Bytes)>,
    /// Bytes on raw streams: (stream, to, bytes).
    stream_bytes: VecDeque<(u64, usize, Bytes)>,
    pub producer_events: Vec<ProducerEvent>,
    pub consumer_events: Vec<(String, ConsumerEvent)>,
    pub simple_events: Vec<(String, SimpleEvent)>,
    /// The proxy's answers to calls and its Telemetry commands.
    pub proxy_events: Vec<ProxyEvent>,
    /// An answer `ask_broker` waits for: (to node, opaque), and the answer once it came.
    catch: Option<(usize, i32)>,
    caught: Option<RemotingCommand>,
}

impl Default for Cluster {
    fn default() -> Self {
        Cluster::new()
    }
}

impl Cluster {
    pub fn new() -> Cluster {
        Cluster::with_broker(BrokerConfig::default())
    }

    /// A cluster whose broker runs `config` (its addresses set to the cluster's).
    pub fn with_broker(config: BrokerConfig) -> Cluster {
        let disk = MemDisk::new(1);
        let (store, _) = MessageStore::open(disk.clone(), StoreConfig::small(), 0)
            .expect("a fresh MemDisk opens");
        let config = BrokerConfig {
            namesrv_addrs: vec![NS.into()],
            broker_addr: BROKER.into(),
            ..config
        };
        let broker = Broker::new(config, store, 0).expect("a broker starts on a fresh store");
        let mut fabric = Fabric::default();
        let ns = NameServer::new(NameServerConfig::default(), 0);
        assert_eq!(fabric.add(Some(NS.into()), Node::NameServer(ns)), NS_NODE);
        let broker = Node::Broker {
            machine: Some(Box::new(broker)),
            disk,
            generation: 1,
        };
        assert_eq!(fabric.add(Some(BROKER.into()), broker), BROKER_NODE);
        fabric.add_stream_addr(BROKER_HA.into(), BROKER_NODE);
        let mut c = Cluster {
            now: 0,
            fabric,
            names: BTreeMap::new(),
            gone: BTreeSet::new(),
            frames: VecDeque::new(),
            stream_bytes: VecDeque::new(),
            producer_events: Vec::new(),
            consumer_events: Vec::new(),
            simple_events: Vec::new(),
            proxy_events: Vec::new(),
            catch: None,
            caught: None,
        };
        c.pump();
        c
    }

    /// Adds a slave of the broker (brokerId 1) at [`SLAVE`], on a disk of its own; it
    /// registers, learns its master and follows it. Returns its node.
    pub fn add_slave(&mut self, config: BrokerConfig) -> usize {
        let disk = MemDisk::new(2);
        let (store, _) = MessageStore::open(disk.clone(), StoreConfig::small(), self.now)
            .expect("a fresh MemDisk opens");
        let config = BrokerConfig {
            namesrv_addrs: vec![NS.into()],
            broker_addr: SLAVE.into(),
            broker_id: 1,
            broker_role: rockfish_core::broker::BrokerRole::Slave,
            ..config
        };
        let broker = Broker::new(config, store, self.now).expect("a slave starts");
        let node = Node::Broker {
            machine: Some(Box::new(broker)),
            disk,
            generation: 1,
        };
        let n = self.fabric.add(Some(SLAVE.into()), node);
        self.names.insert("slave".into(), n);
        self.pump();
        n
    }

    /// The slave `add_slave` started.
    pub fn slave(&mut self) -> &mut Broker<MemDisk> {
        let n = self.names["slave"];
        self.fabric.nodes[n].broker().expect("the slave runs")
    }

    /// The broker at node `n` stops without a word (a frozen or dead process): nothing runs
    /// there any more, and what is sent to it is lost.
    pub fn stop_node(&mut self, n: usize) {
        self.gone.insert(n);
    }

    pub fn broker(&mut self) -> &mut Broker<MemDisk> {
        self.fabric.nodes[BROKER_NODE]
            .broker()
            .expect("the test broker runs")
    }

    pub fn add_producer(&mut self, name: &str, p: Producer) {
        self.add(name, Node::Producer(p));
    }

    pub fn add_consumer(&mut self, name: &str, c: Consumer) {
        self.add(name, Node::Consumer(c));
    }

    pub fn add_simple_consumer(&mut self, name: &str, c: SimpleConsumer) {
        self.add(name, Node::Simple(c));
    }

    pub fn simple(&mut self, name: &str) -> &mut SimpleConsumer {
        match self.names.get(name).map(|n| &mut self.fabric.nodes[*n]) {
            Some(Node::Simple(c)) => c,
            _ => panic!("no simple consumer {name}"),
        }
    }

    pub fn add_proxy(&mut self, name: &str, p: Proxy) {
        self.add(name, Node::Proxy(Box::new(p)));
    }

    pub fn proxy(&mut self, name: &str) -> &mut Proxy {
        match self.names.get(name).map(|n| &mut self.fabric.nodes[*n]) {
            Some(Node::Proxy(p)) => p,
            _ => panic!("no proxy {name}"),
        }
    }

    /// Sends `cmd` (an admin request, say) to the broker over client `from`'s connection and
    /// returns the broker's answer, which `from` never sees. Its opaque must not be one
    /// `from` uses (take one near `i32::MAX`).
    pub fn ask_broker(&mut self, from: &str, cmd: RemotingCommand) -> RemotingCommand {
        let from = self.names[from];
        self.catch = Some((from, cmd.opaque));
        self.frames
            .push_back((from, BROKER_NODE, super::fabric::frame(&cmd, &[])));
        self.pump();
        self.catch = None;
        self.caught.take().expect("the broker answered")
    }

    fn add(&mut self, name: &str, node: Node) {
        let n = self.fabric.add(None, node);
        if let Some(old) = self.names.insert(name.to_string(), n) {
            self.gone.insert(old);
        }
    }

    /// A client of that name runs.
    pub fn has(&self, name: &str) -> bool {
        self.names.contains_key(name)
    }

    pub fn consumer(&mut self, name: &str) -> &mut Consumer {
        match self.names.get(name).map(|n| &mut self.fabric.nodes[*n]) {
            Some(Node::Consumer(c)) => c,
            _ => panic!("no consumer {name}"),
        }
    }

    pub fn producer(&mut self, name: &str) -> &mut Producer {
        match self.names.get(name).map(|n| &mut self.fabric.nodes[*n]) {
            Some(Node::Producer(p)) => p,
            _ => panic!("no producer {name}"),
        }
    }

    /// A client stops running without a word (a frozen process): its connections stay open
    /// as far as the servers know.
    pub fn forget(&mut self, name: &str) {
        if let Some(n) = self.names.remove(name) {
            self.gone.insert(n);
        }
    }

    /// A client crashes: it stops, and every server sees its connection close.
    pub fn crash(&mut self, name: &str) {
        let Some(n) = self.names.remove(name) else {
            return;
        };
        self.gone.insert(n);
        for (server, conn) in self.fabric.connections_of(n) {
            self.fabric.lose(server, conn, self.now);
        }
        self.pump();
    }

    /// Moves outputs and frames until nothing moves.
    pub fn pump(&mut self) {
        for _ in 0..PUMP_MAX_ROUNDS {
            let mut moved = false;
            for n in 0..self.fabric.nodes.len() {
                if self.gone.contains(&n) {
                    continue;
                }
                moved |= self.drain(n);
            }
            while let Some((from, to, frame)) = self.frames.pop_front() {
                moved = true;
                if self.gone.contains(&from) || self.gone.contains(&to) {
                    continue;
                }
                let cmd = unframe(&frame).expect("machines emit decodable frames");
                if cmd.is_response() && self.catch == Some((to, cmd.opaque)) {
                    self.catch = None;
                    self.caught = Some(cmd);
                    continue;
                }
                self.fabric.dispatch(from, to, cmd, self.now, self.now);
            }
            while let Some((sid, to, bytes)) = self.stream_bytes.pop_front() {
                moved = true;
                if !self.gone.contains(&to) {
                    self.fabric.stream_bytes(sid, to, bytes, self.now);
                }
            }
            if !moved {
                return;
            }
        }
        panic!("the cluster never went quiet");
    }

    /// Drains one node's outputs and events; true if there were any.
    fn drain(&mut self, n: usize) -> bool {
        let mut moved = false;
        let now = self.now;
        while let Some(out) = self.fabric.nodes[n].poll_output() {
            moved = true;
            let kind = out.kind();
            match self.fabric.route(n, out) {
                Routed::Frame { to, frame } => self.frames.push_back((n, to, frame)),
                Routed::Close { conn, .. } => {
                    if let Some(client) = self.fabric.lose(n, conn, now) {
                        self.fabric.peer_lost(n, client, now);
                    }
                }
                Routed::OpenStream { addr } => {
                    if let (None, conn) = self.fabric.open_stream(n, &addr, true, now)
                        && self.fabric.take_untold(n, conn)
                        && let Some(b) = self.fabric.nodes[n].broker()
                    {
                        b.on_disconnect(conn, now);
                    }
                }
                Routed::StreamBytes { sid, to, bytes } => {
                    self.stream_bytes.push_back((sid, to, bytes))
                }
                Routed::CloseUntold { conn } => {
                    if self.fabric.take_untold(n, conn)
                        && let Some(b) = self.fabric.nodes[n].broker()
                    {
                        b.on_disconnect(conn, now);
                    }
                }
                Routed::CloseStream { sid } => {
                    if let Some(s) = self.fabric.stream(sid) {
                        let peer = s.peer_of(n).0;
                        self.fabric.close_stream(sid, &[n, peer], now);
                    }
                }
                Routed::Flush { upto } => {
                    if let Some(b) = self.fabric.nodes[n].broker() {
                        b.run_flush(upto, now)
                    }
                }
                Routed::Persist { token, files } => {
                    if let Some(b) = self.fabric.nodes[n].broker() {
                        b.run_persist(token, files, now)
                    }
                }
                Routed::Nowhere if self.fabric.nodes[n].is_server() => {
                    // An answer on a connection that closed meanwhile: lost, as on a socket.
                }
                Routed::Nowhere => panic!("node {n} emitted {kind} to nowhere"),
            }
        }
        let name = self.names.iter().find(|(_, i)| **i == n).map(|(k, _)| k);
        while let Some(e) = self.fabric.nodes[n].poll_event() {
            moved = true;
            match e {
                ClientEvent::Producer(e) => self.producer_events.push(e),
                ClientEvent::Consumer(e) => {
                    let name = name.cloned().expect("a client has a name");
                    self.consumer_events.push((name, e));
                }
                ClientEvent::Simple(e) => {
                    let name = name.cloned().expect("a client has a name");
                    self.simple_events.push((name, e));
                }
                ClientEvent::Proxy(e) => self.proxy_events.push(e),
            }
        }
        moved
    }

    /// Advances time to `to` in steps, firing every machine's timers on the way.
    pub fn advance(&mut self, to: u64) {
        while self.now < to {
            let mut next = to;
            for (n, node) in self.fabric.nodes.iter().enumerate() {
                if !self.gone.contains(&n) {
                    next = next.min(node.poll_timeout().unwrap_or(to));
                }
            }
            self.now = next.max(self.now + 1).min(to);
            for n in 0..self.fabric.nodes.len() {
                if !self.gone.contains(&n) {
                    self.fabric.nodes[n].on_timeout(self.now);
                }
            }
            self.pump();
        }
    }
}

//! The nodes of an in-process cluster and the wiring between them: which connection a
//! server gave each client, where each output goes, and what a close tells whom. The
//! simulator and the machine-test `Cluster` both run on this; only when frames arrive
//! (latency, faults, pauses) is theirs.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use rockfish_core::broker::Broker;
use rockfish_core::consumer::{Consumer, ConsumerEvent, SimpleConsumer, SimpleEvent};
use rockfish_core::machine::{ClientMachine, ConnId, Output};
use rockfish_core::namesrv::NameServer;
use rockfish_core::producer::{Producer, ProducerEvent};
use rockfish_core::proxy::{Proxy, ProxyEvent};
use rockfish_core::remoting::{FrameDecoder, FrameError, RemotingCommand, encode};
use rockfish_store::MemDisk;
use rockfish_store::record::HostAddr;

/// One process of the cluster, running its unchanged machine.
pub enum Node {
    NameServer(NameServer),
    /// A broker over its disk; `machine` is `None` while it is down. Each start is a new
    /// `generation`, so disk work of a crashed predecessor never reaches its successor.
    Broker {
        machine: Option<Box<Broker<MemDisk>>>,
        disk: MemDisk,
        generation: u64,
    },
    Producer(Producer),
    Consumer(Consumer),
    /// A simple (pop) consumer.
    Simple(SimpleConsumer),
    /// RocketMQ 5's gRPC proxy (its calls made by the test, its answers read as events).
    Proxy(Box<Proxy>),
}

/// What a client machine told its application.
#[derive(Debug)]
pub enum ClientEvent {
    Producer(ProducerEvent),
    Consumer(ConsumerEvent),
    Simple(SimpleEvent),
    Proxy(ProxyEvent),
}

impl Node {
    pub fn kind(&self) -> &'static str {
        match self {
            Node::NameServer(_) => "namesrv",
            Node::Broker { .. } => "broker",
            Node::Producer(_) => "producer",
            Node::Consumer(_) => "consumer",
            Node::Simple(_) => "simple consumer",
            Node::Proxy(_) => "proxy",
        }
    }

    pub fn is_server(&self) -> bool {
        matches!(self, Node::NameServer(_) | Node::Broker { .. })
    }

    /// The running broker, if this is one and it is up.
    pub fn broker(&mut self) -> Option<&mut Broker<MemDisk>> {
        match self {
            Node::Broker {
                machine: Some(b), ..
            } => Some(b),
            _ => None,
        }
    }

    pub fn on_timeout(&mut self, now: u64) {
        match self {
            Node::NameServer(ns) => ns.on_timeout(now),
            Node::Broker {
                machine: Some(b), ..
            } => b.on_timeout(now),
            Node::Broker { machine: None, .. } => {}
            Node::Producer(p) => p.on_timeout(now),
            Node::Consumer(c) => c.on_timeout(now),
            Node::Simple(c) => c.on_timeout(now),
            Node::Proxy(p) => p.on_timeout(now),
        }
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        match self {
            Node::NameServer(ns) => ns.poll_output(),
            Node::Broker {
                machine: Some(b), ..
            } => b.poll_output(),
            Node::Broker { machine: None, .. } => None,
            Node::Producer(p) => p.poll_output(),
            Node::Consumer(c) => c.poll_output(),
            Node::Simple(c) => c.poll_output(),
            Node::Proxy(p) => p.poll_output(),
        }
    }

    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        match self {
            Node::Producer(p) => p.poll_event().map(ClientEvent::Producer),
            Node::Consumer(c) => c.poll_event().map(ClientEvent::Consumer),
            Node::Simple(c) => c.poll_event().map(ClientEvent::Simple),
            Node::Proxy(p) => p.poll_event().map(ClientEvent::Proxy),
            _ => None,
        }
    }

    pub fn poll_timeout(&self) -> Option<u64> {
        match self {
            Node::NameServer(ns) => ns.poll_timeout(),
            Node::Broker {
                machine: Some(b), ..
            } => b.poll_timeout(),
            Node::Broker { machine: None, .. } => None,
            Node::Producer(p) => p.poll_timeout(),
            Node::Consumer(c) => c.poll_timeout(),
            Node::Simple(c) => c.poll_timeout(),
            Node::Proxy(p) => p.poll_timeout(),
        }
    }

    /// A client of this server lost its connection.
    fn on_disconnect(&mut self, conn: ConnId, now: u64) {
        match self {
            Node::NameServer(ns) => ns.on_disconnect(conn, now),
            Node::Broker {
                machine: Some(b), ..
            } => b.on_disconnect(conn, now),
            _ => {}
        }
    }

    /// This client lost its connection to the server at `addr`.
    pub fn on_peer_lost(&mut self, addr: &str, now: u64) {
        match self {
            Node::Producer(p) => ClientMachine::on_peer_lost(p, addr, now),
            Node::Consumer(c) => ClientMachine::on_peer_lost(c, addr, now),
            Node::Simple(c) => ClientMachine::on_peer_lost(c, addr, now),
            Node::Proxy(p) => p.on_peer_lost(addr, now),
            _ => {}
        }
    }
}

/// Where one output of a node goes.
pub enum Routed {
    /// An encoded frame for node `to`.
    Frame { to: usize, frame: Bytes },
    /// The node closes one of its server connections.
    Close { conn: ConnId, reason: String },
    /// The node dials a raw stream (`Fabric::open_stream` makes it).
    OpenStream { addr: String },
    /// Raw bytes for the other end of stream `sid`, node `to`.
    StreamBytes { sid: u64, to: usize, bytes: Bytes },
    /// The node closes its end of stream `sid` (`Fabric::close_stream`).
    CloseStream { sid: u64 },
    /// The node closes a stream connection that is already gone but that it was not told of
    /// yet (`Fabric::take_untold`): it is told now, as the driver tells it of any close.
    CloseUntold { conn: ConnId },
    /// Disk work for the broker: the caller decides when it completes.
    Flush { upto: u64 },
    Persist {
        token: u64,
        files: Vec<(String, Bytes)>,
    },
    /// Addressed to nobody that exists (an unknown address, a connection already closed):
    /// lost, as the driver loses a write to a closed socket.
    Nowhere,
}

/// A raw byte stream between two nodes (a slave's link to its master's HA port): each end
/// knows it by its own `ConnId`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stream {
    pub dialer: usize,
    pub dialer_conn: ConnId,
    pub server: usize,
    pub server_conn: ConnId,
}

impl Stream {
    /// The other end from `node`: (node, its conn).
    pub fn peer_of(&self, node: usize) -> (usize, ConnId) {
        if node == self.dialer {
            (self.server, self.server_conn)
        } else {
            (self.dialer, self.dialer_conn)
        }
    }
    pub fn conn_of(&self, node: usize) -> ConnId {
        if node == self.dialer {
            self.dialer_conn
        } else {
            self.server_conn
        }
    }
}

/// The nodes and their connections: servers know each client by a `ConnId`, clients know
/// servers by address.
#[derive(Default)]
pub struct Fabric {
    pub nodes: Vec<Node>,
    addrs: BTreeMap<String, usize>,
    /// Stream listeners (a broker's HA port): address -> node.
    stream_addrs: BTreeMap<String, usize>,
    /// Open streams by id, and each end's conn -> stream id.
    streams: BTreeMap<u64, Stream>,
    stream_of: BTreeMap<(usize, ConnId), u64>,
    next_stream: u64,
    /// Stream ends gone (a reset, a failed dial, a peer's close) whose node has not been told
    /// `on_disconnect` yet: told once, by whichever comes first, the news or its own close.
    untold: std::collections::BTreeSet<(usize, ConnId)>,
    /// A server's connection for each client: (server, client) -> conn.
    conns: BTreeMap<(usize, usize), ConnId>,
    /// Who is on the other end of a server's connection: (server, conn) -> client.
    owners: BTreeMap<(usize, ConnId), usize>,
    next_conn: u64,
}

impl Fabric {
    /// Adds a node, reachable at `addr` if it is a server; returns its index.
    pub fn add(&mut self, addr: Option<String>, node: Node) -> usize {
        let n = self.nodes.len();
        if let Some(addr) = addr {
            self.addrs.insert(addr, n);
        }
        self.nodes.push(node);
        n
    }

    /// Node `node` accepts raw streams at `addr` (a broker's HA port).
    pub fn add_stream_addr(&mut self, addr: String, node: usize) {
        self.stream_addrs.insert(addr, node);
    }

    /// The node listening for streams at `addr`.
    pub fn stream_listener(&self, addr: &str) -> Option<usize> {
        self.stream_addrs.get(addr).copied()
    }

    /// Opens a stream from `dialer` to the stream listener at `addr`: the dialer is told
    /// `on_stream_opened` at once (as the driver does); the listener, if `accept` and it
    /// exists and runs, accepts it (`on_stream_accepted`). `None` if not (the caller then
    /// fails the dial: `on_disconnect` of the returned conn, when the dial would fail).
    pub fn open_stream(
        &mut self,
        dialer: usize,
        addr: &str,
        accept: bool,
        now: u64,
    ) -> (Option<u64>, ConnId) {
        self.next_conn += 1;
        let dialer_conn = ConnId(self.next_conn);
        if let Some(b) = self.nodes[dialer].broker() {
            b.on_stream_opened(addr, dialer_conn, now);
        }
        let Some(server) = self.stream_addrs.get(addr).copied() else {
            return (None, dialer_conn);
        };
        if !accept || self.nodes[server].broker().is_none() {
            self.untold.insert((dialer, dialer_conn));
            return (None, dialer_conn);
        }
        self.next_conn += 1;
        let server_conn = ConnId(self.next_conn);
        self.next_stream += 1;
        let sid = self.next_stream;
        self.streams.insert(
            sid,
            Stream {
                dialer,
                dialer_conn,
                server,
                server_conn,
            },
        );
        self.stream_of.insert((dialer, dialer_conn), sid);
        self.stream_of.insert((server, server_conn), sid);
        if let Some(b) = self.nodes[server].broker() {
            b.on_stream_accepted(
                server_conn,
                HostAddr::V4([10, 0, 1, dialer as u8], 40_001),
                now,
            );
        }
        (Some(sid), dialer_conn)
    }

    pub fn stream(&self, sid: u64) -> Option<Stream> {
        self.streams.get(&sid).copied()
    }

    /// Every open stream with an end at `node`.
    pub fn streams_of(&self, node: usize) -> Vec<u64> {
        self.streams
            .iter()
            .filter(|(_, s)| s.dialer == node || s.server == node)
            .map(|(sid, _)| *sid)
            .collect()
    }

    /// Hands bytes that arrived on stream `sid` to its end at `to`.
    pub fn stream_bytes(&mut self, sid: u64, to: usize, bytes: Bytes, now: u64) {
        let Some(s) = self.streams.get(&sid) else {
            return;
        };
        let conn = s.conn_of(to);
        if let Some(b) = self.nodes[to].broker() {
            b.on_stream_bytes(conn, bytes, now);
        }
    }

    /// Forgets stream `sid`; each end in `tell` still running is told `on_disconnect`.
    pub fn close_stream(&mut self, sid: u64, tell: &[usize], now: u64) {
        let Some(s) = self.streams.remove(&sid) else {
            return;
        };
        self.stream_of.remove(&(s.dialer, s.dialer_conn));
        self.stream_of.remove(&(s.server, s.server_conn));
        for (n, conn) in [(s.dialer, s.dialer_conn), (s.server, s.server_conn)] {
            if tell.contains(&n) {
                if let Some(b) = self.nodes[n].broker() {
                    b.on_disconnect(conn, now);
                }
            } else {
                self.untold.insert((n, conn));
            }
        }
    }

    /// Whether `node` still has to be told its stream `conn` is gone; it counts as told now.
    pub fn take_untold(&mut self, node: usize, conn: ConnId) -> bool {
        self.untold.remove(&(node, conn))
    }

    /// A process died: whatever it was not told goes with it.
    pub fn forget_untold(&mut self, node: usize) {
        self.untold.retain(|(n, _)| *n != node);
    }

    pub fn node_at(&self, addr: &str) -> Option<usize> {
        self.addrs.get(addr).copied()
    }

    pub fn addr_of(&self, node: usize) -> Option<&str> {
        self.addrs
            .iter()
            .find(|(_, n)| **n == node)
            .map(|(a, _)| a.as_str())
    }

    /// Where `from`'s output goes; a frame is encoded as the driver would write it (records
    /// after the header, in one frame).
    pub fn route(&self, from: usize, out: Output) -> Routed {
        let owner = |conn| self.owners.get(&(from, conn)).copied();
        match out {
            Output::SendTo { addr, cmd } => match self.node_at(&addr) {
                Some(to) => Routed::Frame {
                    to,
                    frame: frame(&cmd, &[]),
                },
                None => Routed::Nowhere,
            },
            Output::Send { conn, cmd } => match owner(conn) {
                Some(to) => Routed::Frame {
                    to,
                    frame: frame(&cmd, &[]),
                },
                None => Routed::Nowhere,
            },
            Output::SendRecords { conn, cmd, records } => match owner(conn) {
                Some(to) => Routed::Frame {
                    to,
                    frame: frame(&cmd, &records),
                },
                None => Routed::Nowhere,
            },
            Output::Close { conn, .. } if self.stream_of.contains_key(&(from, conn)) => {
                Routed::CloseStream {
                    sid: self.stream_of[&(from, conn)],
                }
            }
            Output::Close { conn, .. } if self.untold.contains(&(from, conn)) => {
                Routed::CloseUntold { conn }
            }
            Output::Close { conn, reason } => Routed::Close { conn, reason },
            Output::OpenStream { addr } => Routed::OpenStream { addr },
            Output::SendBytes { conn, bytes } => match self.stream_of.get(&(from, conn)) {
                Some(sid) => Routed::StreamBytes {
                    sid: *sid,
                    to: self.streams[sid].peer_of(from).0,
                    bytes,
                },
                None => Routed::Nowhere,
            },
            Output::Flush { upto } => Routed::Flush { upto },
            Output::Persist { token, files } => Routed::Persist { token, files },
        }
    }

    /// The server's connection for `client`, opened (and the broker told `on_connect`) on
    /// first use.
    fn server_conn(&mut self, server: usize, client: usize, now: u64) -> ConnId {
        if let Some(c) = self.conns.get(&(server, client)) {
            return *c;
        }
        let conn = self.open_conn(server, client, now);
        self.conns.insert((server, client), conn);
        conn
    }

    /// A new connection from `client` accepted by `server` (a broker is told `on_connect`).
    fn open_conn(&mut self, server: usize, client: usize, now: u64) -> ConnId {
        self.next_conn += 1;
        let conn = ConnId(self.next_conn);
        self.owners.insert((server, conn), client);
        if let Some(b) = self.nodes[server].broker() {
            b.on_connect(conn, HostAddr::V4([10, 0, 1, client as u8], 40_000), now);
        }
        conn
    }

    /// A request read by server `to` on its connection `conn`.
    fn server_reads(
        &mut self,
        to: usize,
        conn: ConnId,
        cmd: RemotingCommand,
        received_at: u64,
        now: u64,
    ) {
        match &mut self.nodes[to] {
            Node::NameServer(ns) => ns.on_command(conn, cmd, now),
            Node::Broker {
                machine: Some(b), ..
            } => b.on_command(conn, cmd, received_at, now),
            _ => {}
        }
    }

    /// Hands a decoded frame from `from` to `to`: a request reaches a server on the
    /// connection it keeps for `from`; a response reaches the side that asked (a broker's
    /// answers from a name server come back on the connection it dialed, not one it
    /// accepted, as with the real driver).
    pub fn dispatch(
        &mut self,
        from: usize,
        to: usize,
        cmd: RemotingCommand,
        received_at: u64,
        now: u64,
    ) {
        if self.nodes[to].is_server() && !cmd.is_response() {
            let conn = self.server_conn(to, from, now);
            self.server_reads(to, conn, cmd, received_at, now);
            return;
        }
        if !cmd.is_response() && !self.nodes[to].is_server() {
            let from = self.addr_of(from).unwrap_or_default().to_string();
            match &mut self.nodes[to] {
                Node::Producer(p) => p.on_request(&from, cmd, now),
                Node::Consumer(c) => ClientMachine::on_request(c, &from, cmd, now),
                Node::Simple(c) => ClientMachine::on_request(c, &from, cmd, now),
                Node::Proxy(p) => p.on_request(&from, cmd, now),
                Node::NameServer(_) | Node::Broker { .. } => {}
            }
            return;
        }
        match &mut self.nodes[to] {
            Node::Producer(p) => p.on_command(cmd, now),
            Node::Consumer(c) => c.on_command(cmd, now),
            Node::Simple(c) => c.on_command(cmd, now),
            Node::Proxy(p) => p.on_command(cmd, now),
            Node::Broker {
                machine: Some(b), ..
            } => b.on_command(ConnId(0), cmd, received_at, now),
            Node::Broker { machine: None, .. } | Node::NameServer(_) => {}
        }
    }

    /// A request from a client process that died after writing it: the server reads it on
    /// the dead process's connection, which then closes (its answer goes nowhere, and what
    /// it held for that connection is dropped).
    pub fn dispatch_orphan(
        &mut self,
        from: usize,
        to: usize,
        cmd: RemotingCommand,
        received_at: u64,
        now: u64,
    ) {
        let conn = self.open_conn(to, from, now);
        self.server_reads(to, conn, cmd, received_at, now);
        self.owners.remove(&(to, conn));
        self.nodes[to].on_disconnect(conn, now);
    }

    /// The server's side of a closed connection (the server's `Output::Close`, or the
    /// client gone): forgotten, and the server told `on_disconnect`. Returns the client it
    /// belonged to, if it was still open. As the real driver does, a server's own close then
    /// reaches the client too (`peer_lost`).
    pub fn lose(&mut self, server: usize, conn: ConnId, now: u64) -> Option<usize> {
        let client = self.owners.remove(&(server, conn))?;
        self.conns.remove(&(server, client));
        self.nodes[server].on_disconnect(conn, now);
        Some(client)
    }

    /// The client's side of a connection its server closed: it loses that peer.
    pub fn peer_lost(&mut self, server: usize, client: usize, now: u64) {
        if let Some(addr) = self.addr_of(server).map(str::to_owned) {
            self.nodes[client].on_peer_lost(&addr, now);
        }
    }

    /// Every server connection `client` has: (server, conn), by server.
    pub fn connections_of(&self, client: usize) -> Vec<(usize, ConnId)> {
        self.conns
            .iter()
            .filter(|((_, c), _)| *c == client)
            .map(|((s, _), conn)| (*s, *conn))
            .collect()
    }

    /// A server went away (crashed): its connections die with it, unannounced.
    pub fn forget_server(&mut self, server: usize) {
        self.conns.retain(|(s, _), _| *s != server);
        self.owners.retain(|(s, _), _| *s != server);
    }
}

/// A command as the driver writes it: header and body, then the stored records.
pub fn frame(cmd: &RemotingCommand, records: &[Bytes]) -> Bytes {
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

/// A frame decoded as the driver's reader does.
pub fn unframe(frame: &Bytes) -> Result<RemotingCommand, String> {
    let mut buf = BytesMut::from(&frame[..]);
    match FrameDecoder::default().decode(&mut buf) {
        Ok(Some(cmd)) => Ok(cmd),
        Ok(None) => Err("incomplete frame".into()),
        Err(e) => Err(describe(e)),
    }
}

fn describe(e: FrameError) -> String {
    format!("{e:?}")
}

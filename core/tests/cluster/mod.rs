//! A tiny in-process cluster for machine-level tests: the real NameServer, Broker (on
//! MemDisk), Producer and Consumer machines, with every output routed to its peer at once.
#![allow(dead_code)]

use std::collections::BTreeMap;

use bytes::BytesMut;
use rockfish_core::broker::{Broker, BrokerConfig};
use rockfish_core::consumer::{Consumer, ConsumerEvent};
use rockfish_core::machine::{ClientMachine, ConnId, Output};
use rockfish_core::namesrv::{NameServer, NameServerConfig};
use rockfish_core::producer::{Producer, ProducerEvent};
use rockfish_core::remoting::RemotingCommand;
use rockfish_store::record::HostAddr;
use rockfish_store::{IndexConfig, MemDisk, MessageStore, StoreConfig};

pub const NS: &str = "ns:9876";
pub const BROKER: &str = "127.0.0.1:10911";

pub enum Client {
    Producer(Producer),
    Consumer(Consumer),
}

pub struct Cluster {
    pub now: u64,
    pub ns: NameServer,
    pub broker: Broker<MemDisk>,
    pub clients: BTreeMap<String, Client>,
    /// Clients cut off from the broker (crashed): their traffic is dropped.
    pub dead: Vec<String>,
    conns: BTreeMap<(String, &'static str), ConnId>,
    owners: BTreeMap<ConnId, String>,
    next_conn: u64,
    pub producer_events: Vec<ProducerEvent>,
    pub consumer_events: Vec<(String, ConsumerEvent)>,
}

impl Cluster {
    pub fn new() -> Cluster {
        let store_config = StoreConfig {
            commitlog_segment_size: 4 << 20,
            consume_queue_entries: 10_000,
            index: IndexConfig {
                hash_slots: 1024,
                max_entries: 10_000,
            },
            ..StoreConfig::default()
        };
        let (store, _) = MessageStore::open(MemDisk::new(1), store_config, 0).unwrap();
        let broker = Broker::new(
            BrokerConfig {
                namesrv_addrs: vec![NS.into()],
                ..BrokerConfig::default()
            },
            store,
            0,
        )
        .unwrap();
        let mut c = Cluster {
            now: 0,
            ns: NameServer::new(NameServerConfig::default(), 0),
            broker,
            clients: BTreeMap::new(),
            dead: Vec::new(),
            conns: BTreeMap::new(),
            owners: BTreeMap::new(),
            next_conn: 0,
            producer_events: Vec::new(),
            consumer_events: Vec::new(),
        };
        c.pump();
        c
    }

    fn conn(&mut self, client: &str, server: &'static str) -> ConnId {
        if let Some(c) = self.conns.get(&(client.to_string(), server)) {
            return *c;
        }
        self.next_conn += 1;
        let id = ConnId(self.next_conn);
        self.conns.insert((client.to_string(), server), id);
        self.owners.insert(id, client.to_string());
        if server == BROKER {
            self.broker.on_connect(
                id,
                HostAddr::V4([10, 0, 0, self.next_conn as u8], 1000),
                self.now,
            );
        }
        id
    }

    pub fn add_producer(&mut self, name: &str, p: Producer) {
        self.clients.insert(name.into(), Client::Producer(p));
    }
    pub fn add_consumer(&mut self, name: &str, c: Consumer) {
        self.clients.insert(name.into(), Client::Consumer(c));
    }

    pub fn consumer(&mut self, name: &str) -> &mut Consumer {
        match self.clients.get_mut(name) {
            Some(Client::Consumer(c)) => c,
            _ => panic!("no consumer {name}"),
        }
    }
    pub fn producer(&mut self, name: &str) -> &mut Producer {
        match self.clients.get_mut(name) {
            Some(Client::Producer(p)) => p,
            _ => panic!("no producer {name}"),
        }
    }

    /// A client crashes: it stops, and the broker sees its connection close.
    pub fn crash(&mut self, name: &str) {
        self.clients.remove(name);
        self.dead.push(name.to_string());
        if let Some(conn) = self.conns.get(&(name.to_string(), BROKER)).copied() {
            self.broker.on_disconnect(conn, self.now);
        }
        self.pump();
    }

    /// A server closed a connection (`Output::Close`): as the driver does, it is told
    /// `on_disconnect` at once, and the client loses its peer.
    fn close(&mut self, server: &'static str, conn: ConnId) {
        let Some(client) = self.owners.remove(&conn) else {
            return;
        };
        self.conns.remove(&(client.clone(), server));
        let now = self.now;
        if server == BROKER {
            self.broker.on_disconnect(conn, now);
        } else {
            self.ns.on_disconnect(conn, now);
        }
        match self.clients.get_mut(&client) {
            Some(Client::Producer(p)) => ClientMachine::on_peer_lost(p, server, now),
            Some(Client::Consumer(c)) => ClientMachine::on_peer_lost(c, server, now),
            None => {}
        }
    }

    fn route_to_server(&mut self, from: &str, addr: &str, cmd: RemotingCommand) {
        if self.dead.iter().any(|d| d == from) {
            return;
        }
        if addr == NS {
            let conn = self.conn(from, NS);
            self.ns.on_command(conn, cmd, self.now);
        } else if addr == BROKER {
            let conn = self.conn(from, BROKER);
            self.broker.on_command(conn, cmd, self.now, self.now);
        }
    }

    fn route_to_client(&mut self, conn: ConnId, cmd: RemotingCommand) {
        let Some(owner) = self.owners.get(&conn).cloned() else {
            return;
        };
        let now = self.now;
        match self.clients.get_mut(&owner) {
            Some(Client::Producer(p)) => p.on_command(cmd, now),
            Some(Client::Consumer(c)) => c.on_command(cmd, now),
            None if owner == "broker" => self.broker.on_command(conn, cmd, now, now),
            None => {}
        }
    }

    /// Routes outputs until nothing moves.
    pub fn pump(&mut self) {
        for _ in 0..100_000 {
            let mut moved = false;
            while let Some(o) = self.ns.poll_output() {
                moved = true;
                match o {
                    Output::Send { conn, cmd } => self.route_to_client(conn, cmd),
                    Output::Close { conn, .. } => self.close(NS, conn),
                    other => panic!("the name server emitted {}", other.kind()),
                }
            }
            while let Some(o) = self.broker.poll_output() {
                moved = true;
                match o {
                    Output::Send { conn, cmd } => self.route_to_client(conn, cmd),
                    Output::SendRecords {
                        conn,
                        mut cmd,
                        records,
                    } => {
                        let mut body = BytesMut::from(&cmd.body[..]);
                        for r in records {
                            body.extend_from_slice(&r);
                        }
                        cmd.body = body.freeze();
                        self.route_to_client(conn, cmd);
                    }
                    Output::SendTo { addr, cmd } => self.route_to_server("broker", &addr, cmd),
                    Output::Flush { upto } => self.broker.run_flush(upto, self.now),
                    Output::Persist { token, files } => {
                        self.broker.run_persist(token, files, self.now)
                    }
                    Output::Close { conn, .. } => self.close(BROKER, conn),
                }
            }
            let names: Vec<String> = self.clients.keys().cloned().collect();
            for name in names {
                let mut outs = Vec::new();
                match self.clients.get_mut(&name) {
                    Some(Client::Producer(p)) => {
                        while let Some(o) = p.poll_output() {
                            outs.push(o);
                        }
                        while let Some(e) = p.poll_event() {
                            self.producer_events.push(e);
                        }
                    }
                    Some(Client::Consumer(c)) => {
                        while let Some(o) = c.poll_output() {
                            outs.push(o);
                        }
                        while let Some(e) = c.poll_event() {
                            self.consumer_events.push((name.clone(), e));
                        }
                    }
                    None => {}
                }
                for o in outs {
                    moved = true;
                    match o {
                        Output::SendTo { addr, cmd } => self.route_to_server(&name, &addr, cmd),
                        other => panic!("client {name} emitted {}", other.kind()),
                    }
                }
            }
            if !moved {
                return;
            }
        }
        panic!("the cluster never went quiet");
    }

    /// Advances time to `to` in steps, firing every machine's timers on the way.
    pub fn advance(&mut self, to: u64) {
        while self.now < to {
            let mut next = to;
            next = next
                .min(self.ns.poll_timeout().unwrap_or(to))
                .min(self.broker.poll_timeout().unwrap_or(to));
            for c in self.clients.values() {
                let t = match c {
                    Client::Producer(p) => p.poll_timeout(),
                    Client::Consumer(c) => c.poll_timeout(),
                };
                next = next.min(t.unwrap_or(to));
            }
            self.now = next.max(self.now + 1).min(to);
            let now = self.now;
            self.ns.on_timeout(now);
            self.broker.on_timeout(now);
            for c in self.clients.values_mut() {
                match c {
                    Client::Producer(p) => p.on_timeout(now),
                    Client::Consumer(c) => c.on_timeout(now),
                }
            }
            self.pump();
        }
    }
}

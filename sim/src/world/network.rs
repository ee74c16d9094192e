//! The simulated network: frames encoded for real, per-link FIFO delivery with latency,
//! drops, cuts and clogs; server connections, and closes as the real driver does them.

use super::*;

impl Sim {
    /// Sends a frame over the simulated network (FIFO per link, with latency and faults).
    pub(super) fn transmit(&mut self, from: usize, to: usize, frame: Bytes) {
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

    pub(super) fn frame(cmd: &RemotingCommand, records: &[Bytes]) -> Bytes {
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

    pub(super) fn server_conn(&mut self, server: usize, client: usize) -> ConnId {
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

    pub(super) fn deliver(&mut self, sent: u64, from: usize, to: usize, frame: Bytes) {
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

    /// A server closed one of its connections (`Output::Close`). As the real driver does, the
    /// server is told `on_disconnect` at once and the client loses its peer.
    pub(super) fn close(&mut self, server: usize, conn: ConnId, reason: &str) {
        let Some(client) = self.owners.remove(&(server, conn)) else {
            return;
        };
        let line = format!("t={} {server} closes {client}: {reason}", self.now);
        self.log(line);
        self.server_lost(server, client, conn);
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
    pub(super) fn disconnect(&mut self, client: usize) {
        let conns: Vec<(usize, ConnId)> = self
            .conns
            .iter()
            .filter(|((_, c), _)| *c == client)
            .map(|((s, _), conn)| (*s, *conn))
            .collect();
        for (server, conn) in conns {
            self.server_lost(server, client, conn);
        }
    }

    /// The server's side of a closed connection: forgotten, and `on_disconnect` told.
    fn server_lost(&mut self, server: usize, client: usize, conn: ConnId) {
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

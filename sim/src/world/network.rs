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
            let at = self.arrival(from, to);
            self.push(
                at,
                Ev::Frame {
                    sent: self.now,
                    from,
                    to,
                    frame: frame.clone(),
                    epochs: (self.epochs[from], self.epochs[to]),
                    arrived: None,
                },
            );
        }
    }

    /// When something sent now from `from` reaches `to`: a drawn latency, never before what
    /// was sent on the link earlier (FIFO), and held while a clog on either end lasts.
    fn arrival(&mut self, from: usize, to: usize) -> u64 {
        let now = self.now;
        let held = self
            .clogs
            .iter()
            .filter(|c| (c.node == from || c.node == to) && c.from <= now && now < c.until)
            .map(|c| c.until)
            .max()
            .unwrap_or(0);
        let latency = self.between(Stream::Net, self.cfg.faults.latency_ms);
        let free = self.link_free.get(&(from, to)).copied().unwrap_or(0);
        let at = (now + latency).max(free).max(held);
        self.link_free.insert((from, to), at);
        at
    }

    pub(super) fn deliver(
        &mut self,
        sent: u64,
        arrived: u64,
        (from, to): (usize, usize),
        epochs: (u32, u32),
        frame: Bytes,
    ) {
        // A frame in flight to a process that died is lost with its connection, even if the
        // node runs again (a new process never reads its predecessor's sockets); one a process
        // sent before dying was on the wire and still arrives.
        if self.down.contains(&to) || self.left.contains(&to) || self.epochs[to] != epochs.1 {
            return;
        }
        // A request from a process that died since: its kernel delivers what was written,
        // then closes the connection; whatever the server answers goes nowhere.
        let orphan = self.epochs[from] != epochs.0;
        let cmd = match unframe(&frame) {
            Ok(cmd) => cmd,
            Err(e) => {
                let line = format!("t={} undecodable frame {from}->{to}: {e}", self.now);
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
            "topic",
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
        let received_at = self.local_at(to, arrived);
        if orphan && self.fabric.nodes[to].is_server() && !cmd.is_response() {
            self.fabric.dispatch_orphan(from, to, cmd, received_at, now);
        } else {
            self.fabric.dispatch(from, to, cmd, received_at, now);
        }
        self.after(to);
    }

    /// A server closed one of its connections (`Output::Close`). As the real driver does, the
    /// server is told `on_disconnect` at once and the client loses its peer.
    pub(super) fn close(&mut self, server: usize, conn: ConnId, reason: &str) {
        let now = self.local(server);
        let Some(client) = self.fabric.lose(server, conn, now) else {
            return;
        };
        let line = format!("t={} {server} closes {client}: {reason}", self.now);
        self.log(line);
        self.after(server);
        let now = self.local(client);
        self.fabric.peer_lost(server, client, now);
        self.after(client);
    }

    /// Whether frames from `from` reach `to` now (both up, no cut between).
    fn reachable(&self, from: usize, to: usize) -> bool {
        !(self.down.contains(&from)
            || self.down.contains(&to)
            || self.left.contains(&to)
            || self
                .cuts
                .iter()
                .any(|c| c.blocks(from, to) || c.blocks(to, from)))
    }

    /// A node dials a stream: the listener accepts it if it is reachable, else the dial fails
    /// after a round trip's latency.
    pub(super) fn open_stream(&mut self, node: usize, addr: &str) {
        let now = self.local(node);
        let to = self.fabric.stream_listener(addr);
        let accept = to.is_some_and(|to| self.reachable(node, to));
        let (sid, conn) = self.fabric.open_stream(node, addr, accept, now);
        let line = format!("t={} {node} dials stream {addr}: {sid:?}", self.now);
        self.log(line);
        match (sid, to) {
            (Some(_), Some(to)) => self.after(to),
            _ => {
                // A refused or unanswered dial fails after a round trip.
                self.stream_lost_later(node, conn, 2);
            }
        }
        self.after(node);
    }

    /// Bytes on a stream: FIFO with the link's frames. A cut or a dropped packet resets the
    /// stream (TCP never delivers a stream with a hole): both ends learn it a latency later.
    /// Bytes to a machine that is down vanish (its peer finds out by its own timeouts).
    pub(super) fn transmit_stream(&mut self, sid: u64, from: usize, to: usize, bytes: Bytes) {
        if self.down.contains(&to) || self.down.contains(&from) {
            return;
        }
        // The HA stream's framing, for the trace: a master's transfer header (offset,
        // length), a slave's 8-byte report.
        let what = match bytes.len() {
            8 => format!(
                "report={}",
                u64::from_be_bytes(bytes[..8].try_into().expect("8"))
            ),
            n if n >= 12 => format!(
                "transfer@{} len={}",
                u64::from_be_bytes(bytes[..8].try_into().expect("8")),
                u32::from_be_bytes(bytes[8..12].try_into().expect("4"))
            ),
            n => format!("{n} bytes"),
        };
        let line = format!("t={} stream {sid} {from}->{to} {what}", self.now);
        self.log(line);
        let drop = self.faults_on && self.chance(Stream::Net, self.cfg.faults.drop);
        if drop || self.cuts.iter().any(|c| c.blocks(from, to)) {
            self.reset_stream(sid, "cut or dropped");
            return;
        }
        let at = self.arrival(from, to);
        let epochs = (self.epochs[from], self.epochs[to]);
        self.push(
            at,
            Ev::StreamBytes {
                sid,
                from,
                to,
                bytes,
                epochs,
            },
        );
    }

    pub(super) fn deliver_stream(
        &mut self,
        sid: u64,
        (from, to): (usize, usize),
        epochs: (u32, u32),
        bytes: Bytes,
    ) {
        if self.down.contains(&to) || self.epochs[to] != epochs.1 || self.epochs[from] != epochs.0 {
            return;
        }
        let now = self.local(to);
        self.fabric.stream_bytes(sid, to, bytes, now);
        self.after(to);
    }

    /// A stream breaks: forgotten now, each running end told a latency later.
    fn reset_stream(&mut self, sid: u64, why: &str) {
        let Some(s) = self.fabric.stream(sid) else {
            return;
        };
        self.fabric.close_stream(sid, &[], self.now);
        let line = format!("t={} stream {sid} reset: {why}", self.now);
        self.log(line);
        for (node, conn) in [(s.dialer, s.dialer_conn), (s.server, s.server_conn)] {
            self.stream_lost_later(node, conn, 1);
        }
    }

    /// A node closes its end of a stream: it is told at once (the contract), the peer a
    /// latency later.
    pub(super) fn close_stream(&mut self, node: usize, sid: u64) {
        let Some(s) = self.fabric.stream(sid) else {
            return;
        };
        let now = self.local(node);
        self.fabric.close_stream(sid, &[node], now);
        let (peer, conn) = s.peer_of(node);
        self.stream_lost_later(peer, conn, 1);
        self.after(node);
    }

    /// A broker died: its streams die with it. A killed process's kernel resets them (the
    /// peers learn it a latency later); a machine that lost power says nothing (its peers
    /// find out by their own timeouts, and close their ends then).
    pub(super) fn streams_die_with(&mut self, node: usize, power: bool) {
        for sid in self.fabric.streams_of(node) {
            let Some(s) = self.fabric.stream(sid) else {
                continue;
            };
            let (peer, conn) = s.peer_of(node);
            self.fabric.close_stream(sid, &[], self.now);
            self.fabric.take_untold(node, s.conn_of(node));
            if power {
                // Nothing tells the peer: its writes vanish until its own timeouts close
                // its end (a connection already forgotten here).
                continue;
            }
            self.stream_lost_later(peer, conn, 1);
        }
    }

    /// `node` (its current process) learns its stream `conn` is gone, `hops` drawn latencies
    /// from now.
    fn stream_lost_later(&mut self, node: usize, conn: ConnId, hops: u64) {
        let at = self.now + self.between(Stream::Net, self.cfg.faults.latency_ms) * hops;
        let epoch = self.epochs[node];
        self.push(at, Ev::StreamLost { node, conn, epoch });
    }

    /// Closes every connection a client had to the servers, as its process exiting would.
    pub(super) fn disconnect(&mut self, client: usize) {
        for (server, conn) in self.fabric.connections_of(client) {
            let now = self.local(server);
            self.fabric.lose(server, conn, now);
            self.after(server);
        }
    }
}

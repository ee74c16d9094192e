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
                    epochs: (self.epochs[from], self.epochs[to]),
                    arrived: None,
                },
            );
        }
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

    /// Closes every connection a client had to the servers, as its process exiting would.
    pub(super) fn disconnect(&mut self, client: usize) {
        for (server, conn) in self.fabric.connections_of(client) {
            let now = self.local(server);
            self.fabric.lose(server, conn, now);
            self.after(server);
        }
    }
}

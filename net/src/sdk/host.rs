//! Runs one client machine (Producer or Consumer) on real sockets: a task owns it, dials the
//! addresses it sends to, feeds it responses and timers, and hands its events to a handler
//! that runs in the same task.

use std::collections::HashMap;
use std::time::Duration;

use bytes::BytesMut;
use rockfish_core::machine::{ClientMachine, ConnId, Output, refuse};
use rockfish_core::remoting::encode;
use tokio::sync::mpsc;

use crate::conn::{ConnEvent, ConnWriter, WriteItem, dial};
use crate::now_ms;

/// A call into the machine, run on its task.
pub type Call<M> = Box<dyn FnOnce(&mut M, u64) + Send>;

struct Peers {
    by_addr: HashMap<String, (ConnId, ConnWriter)>,
    addr_of: HashMap<ConnId, String>,
    /// Each connection's dial-and-read task, aborted when it is lost and at shutdown so
    /// sockets close fully (a broker must see the close to drop the consumer's held pulls).
    tasks: HashMap<ConnId, tokio::task::AbortHandle>,
    next: u64,
    events: mpsc::Sender<ConnEvent>,
}

impl Peers {
    fn writer(&mut self, addr: &str) -> ConnWriter {
        if let Some((_, w)) = self.by_addr.get(addr) {
            return w.clone();
        }
        self.next += 1;
        let conn = ConnId(self.next);
        let (writer, rx, queued) = ConnWriter::new(crate::conn::MAX_QUEUED_BYTES);
        self.by_addr
            .insert(addr.to_string(), (conn, writer.clone()));
        self.addr_of.insert(conn, addr.to_string());
        let (events, target) = (self.events.clone(), addr.to_string());
        let framing =
            crate::conn::Framing::Remoting(rockfish_core::remoting::frame::DEFAULT_MAX_FRAME);
        let task = tokio::spawn(dial(conn, target, framing, rx, queued, events));
        self.tasks.insert(conn, task.abort_handle());
        writer
    }

    /// Forgets a connection and stops its task. The peer's address if it was open: the
    /// machine hears of each lost peer once, whoever noticed first (a read error, the
    /// peer's close, a writer too far behind).
    fn lost(&mut self, conn: ConnId) -> Option<String> {
        let addr = self.addr_of.remove(&conn)?;
        self.by_addr.remove(&addr);
        if let Some(t) = self.tasks.remove(&conn) {
            t.abort();
        }
        Some(addr)
    }

    /// Queues a frame for `addr`. The lost peer's address if this closed its connection.
    fn send(&mut self, addr: &str, frame: bytes::Bytes) -> Option<String> {
        if self.writer(addr).send(WriteItem::One(frame)) {
            return None;
        }
        tracing::warn!(%addr, "connection too far behind on writes; closing it");
        let conn = self.by_addr.get(addr).map(|(c, _)| *c)?;
        self.lost(conn)
    }
}

/// The frame a client machine's output asks for, and where to. A client emits only
/// `SendTo` (the contract in rockfish_core::machine); anything else is refused loudly.
fn client_frame(out: Output, scratch: &mut Vec<u8>) -> Option<(String, bytes::Bytes)> {
    let Output::SendTo { addr, cmd } = out else {
        refuse(&format!("a client machine emitted {}", out.kind()));
        return None;
    };
    let mut buf = BytesMut::new();
    match encode(&cmd, scratch, &mut buf) {
        Ok(()) => Some((addr, buf.freeze())),
        Err(e) => {
            tracing::error!(error = %e, code = cmd.code, "cannot encode a request; it will time out");
            None
        }
    }
}

/// Calls or connection events handed to the machine in one turn of the loop, at most.
const EVENTS_PER_TURN: usize = 64;

/// One event from a connection's tasks, handed to the machine.
fn on_conn_event<M: ClientMachine>(machine: &mut M, peers: &mut Peers, ev: ConnEvent) {
    match ev {
        // Only from a connection still open: a lost peer's late frames are not served.
        ConnEvent::Command { conn, cmd, .. } => match peers.addr_of.get(&conn) {
            Some(from) if !cmd.is_response() => machine.on_request(from, cmd, now_ms()),
            Some(_) => machine.on_command(cmd, now_ms()),
            None => {}
        },
        // A client answers no requests; a refused one (over a limit) is only logged.
        ConnEvent::Answer { .. } => {}
        // A client dials no raw streams.
        ConnEvent::Bytes { .. } => {}
        ConnEvent::Closed { conn, reason } => {
            tracing::debug!(%reason, "client connection closed");
            if let Some(addr) = peers.lost(conn) {
                machine.on_peer_lost(&addr, now_ms());
            }
        }
    }
}

/// Runs `machine` until every call sender is gone; `on_event` sees each event in order.
pub async fn run<M>(
    mut machine: M,
    mut calls: mpsc::UnboundedReceiver<Call<M>>,
    mut on_event: impl FnMut(M::Event) + Send + 'static,
) -> M
where
    M: ClientMachine + Send + 'static,
    M::Event: Send + 'static,
{
    let (ev_tx, mut ev_rx) = mpsc::channel::<ConnEvent>(4096);
    let mut peers = Peers {
        by_addr: HashMap::new(),
        addr_of: HashMap::new(),
        tasks: HashMap::new(),
        next: 0,
        events: ev_tx,
    };
    let mut scratch = Vec::with_capacity(1024);
    // Sends what the machine asked to; the events it reported go to `on_event`.
    let mut drain = |machine: &mut M, peers: &mut Peers, scratch: &mut Vec<u8>| {
        while let Some(out) = machine.poll_output() {
            let Some((addr, frame)) = client_frame(out, scratch) else {
                continue;
            };
            if let Some(lost) = peers.send(&addr, frame) {
                machine.on_peer_lost(&lost, now_ms());
            }
        }
        while let Some(e) = machine.poll_event() {
            on_event(e);
        }
    };
    loop {
        let now = now_ms();
        if machine.poll_timeout().is_some_and(|t| t <= now) {
            machine.on_timeout(now);
        }
        drain(&mut machine, &mut peers, &mut scratch);
        let sleep = machine
            .poll_timeout()
            .map_or(1_000, |t| t.saturating_sub(now_ms()).max(1));
        crate::select! {
            call = calls.recv() => match call {
                Some(f) => {
                    f(&mut machine, now_ms());
                    // Calls already queued are taken in the same turn (bounded): one wake-up
                    // and one drain for a run of sends, as the broker's driver does.
                    for _ in 1..EVENTS_PER_TURN {
                        let Ok(f) = calls.try_recv() else { break };
                        f(&mut machine, now_ms());
                    }
                }
                None => break,
            },
            Some(ev) = ev_rx.recv() => {
                let mut ev = Some(ev);
                for _ in 0..EVENTS_PER_TURN {
                    let Some(e) = ev.take().or_else(|| ev_rx.try_recv().ok()) else { break };
                    if matches!(e, ConnEvent::Closed { .. }) {
                        // What was asked before the loss goes out (or is found lost) first.
                        drain(&mut machine, &mut peers, &mut scratch);
                    }
                    on_conn_event(&mut machine, &mut peers, e);
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(sleep)) => {}
        }
    }
    // Let final outputs (offset commits, unregistration) reach the wire.
    while let Some(out) = machine.poll_output() {
        if let Some((addr, frame)) = client_frame(out, &mut scratch) {
            peers.writer(&addr).send(WriteItem::One(frame));
        }
    }
    // Dropping the writers ends the write loops once their queues are written out.
    let tasks: Vec<_> = std::mem::take(&mut peers.tasks).into_values().collect();
    drop(peers);
    tokio::time::sleep(Duration::from_millis(50)).await;
    for t in tasks {
        t.abort();
    }
    machine
}

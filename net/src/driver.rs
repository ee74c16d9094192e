//! Runs one machine on real sockets: accepts connections, frames commands into the machine,
//! writes its outputs, connects to peers it addresses, arms its timer, and hands flushes to
//! the flush thread. One task owns the machine; nothing else touches it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rockfish_core::broker::Broker;
use rockfish_core::machine::{ConnId, Machine, Output};
use rockfish_core::namesrv::NameServer;
use rockfish_core::remoting::frame::{DEFAULT_MAX_FRAME, encode, encode_prefix};
use rockfish_store::OffTaskSync;
use rockfish_store::record::HostAddr;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::{AbortHandle, JoinHandle};

use crate::conn::{ConnEvent, ConnWriter, Framing, MAX_QUEUED_BYTES, WriteItem, dial, serve};
use crate::flush::{FlushDone, FlushJob, Flusher, spawn_flusher};
use crate::metrics::DriverStats;
use crate::now_ms;
use rockfish_core::metrics::Snapshot;

/// A machine whose flush and persist requests can be run on the flush thread: how to build
/// the work. Their answers are `Machine::on_flushed`, `on_flush_failed` and `on_persisted`.
pub trait Durable: Machine {
    /// The ranges to sync for `Output::Flush { upto }`.
    fn flush_job(&self, upto: u64) -> Result<FlushJob, String>;
    /// The writes for `Output::Persist { token, files }`.
    fn persist_job(&self, token: u64, files: Vec<(String, Bytes)>) -> Result<FlushJob, String>;
}

/// The name server keeps no disk state: it never asks for a flush or a persist, and one
/// asked for is refused (and answered as failed, which `Machine` refuses loudly).
impl Durable for NameServer {
    fn flush_job(&self, upto: u64) -> Result<FlushJob, String> {
        Err(format!("the name server asked for a flush to {upto}"))
    }
    fn persist_job(&self, token: u64, _files: Vec<(String, Bytes)>) -> Result<FlushJob, String> {
        Err(format!("the name server asked for persist {token}"))
    }
}

impl<D: OffTaskSync> Durable for Broker<D> {
    fn flush_job(&self, upto: u64) -> Result<FlushJob, String> {
        Ok(FlushJob {
            done: FlushDone::Flush(upto),
            sync: self.flush_work(upto)?,
        })
    }
    fn persist_job(&self, token: u64, files: Vec<(String, Bytes)>) -> Result<FlushJob, String> {
        Ok(FlushJob {
            done: FlushDone::Persist(token),
            sync: self.persist_work(token, files)?,
        })
    }
}

fn host(addr: SocketAddr) -> HostAddr {
    match addr {
        SocketAddr::V4(a) => HostAddr::V4(a.ip().octets(), a.port()),
        SocketAddr::V6(a) => HostAddr::V6(a.ip().octets(), a.port()),
    }
}

/// A bound, not yet running server.
pub struct Server<M> {
    machine: M,
    listener: TcpListener,
    /// Raw byte streams (a broker's HA port), if the machine serves them.
    stream_listener: Option<TcpListener>,
    max_frame: usize,
    max_queued: usize,
}

/// A running server: stop it to get the machine back (to shut it down cleanly).
pub struct ServerHandle<M> {
    stop: watch::Sender<bool>,
    join: JoinHandle<M>,
    addr: SocketAddr,
    probe: MetricsProbe,
}

/// Asks a running server for its metrics: the machine's snapshot with the driver's counts
/// added, taken on the machine's task between two inputs.
#[derive(Clone, Debug)]
pub struct MetricsProbe(mpsc::Sender<tokio::sync::oneshot::Sender<Snapshot>>);

impl MetricsProbe {
    /// None once the server has stopped.
    pub async fn snapshot(&self) -> Option<Snapshot> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.0.send(tx).await.ok()?;
        rx.await.ok()
    }
}

impl<M> ServerHandle<M> {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
    pub fn metrics(&self) -> MetricsProbe {
        self.probe.clone()
    }
    /// Stops accepting and serving, and returns the machine.
    pub async fn stop(self) -> M {
        let _ = self.stop.send(true);
        self.join.await.expect("the server task does not panic")
    }
}

impl<M: Durable + Send + 'static> Server<M> {
    pub async fn bind(addr: &str, machine: M) -> std::io::Result<Server<M>> {
        let listener = TcpListener::bind(addr).await?;
        Ok(Server::from_listener(listener, machine))
    }

    /// Serves on an already bound listener.
    pub fn from_listener(listener: TcpListener, machine: M) -> Server<M> {
        Server {
            machine,
            listener,
            stream_listener: None,
            max_frame: DEFAULT_MAX_FRAME,
            max_queued: MAX_QUEUED_BYTES,
        }
    }

    /// Also accepts raw byte streams on `listener` (a broker's HA port): the machine hears
    /// them through `on_stream_accepted` and `on_stream_bytes`.
    pub fn with_stream_listener(mut self, listener: TcpListener) -> Self {
        self.stream_listener = Some(listener);
        self
    }

    /// Bytes a connection may have waiting to be written before it is closed as too slow
    /// (default [`MAX_QUEUED_BYTES`]).
    pub fn max_queued_bytes(mut self, bytes: usize) -> Self {
        self.max_queued = bytes;
        self
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn spawn(self) -> ServerHandle<M> {
        let addr = self
            .listener
            .local_addr()
            .expect("bound listener has an address");
        let (stop, stopped) = watch::channel(false);
        let limits = (self.max_frame, self.max_queued);
        let listeners = (self.listener, self.stream_listener);
        // Scrapes wait in line (a few at most: each is one snapshot).
        let (probe, probes) = mpsc::channel(16);
        let join = tokio::spawn(run(self.machine, listeners, limits, (stopped, probes)));
        ServerHandle {
            stop,
            join,
            addr,
            probe: MetricsProbe(probe),
        }
    }
}

struct Conns {
    writers: HashMap<ConnId, ConnWriter>,
    readers: HashMap<ConnId, AbortHandle>,
    outbound: HashMap<String, ConnId>,
    next: u64,
    events: mpsc::Sender<ConnEvent>,
    max_frame: usize,
    max_queued: usize,
    stats: DriverStats,
}

impl Conns {
    fn next_id(&mut self) -> ConnId {
        self.next += 1;
        ConnId(self.next)
    }

    fn adopt(&mut self, stream: TcpStream, framing: Framing) -> ConnId {
        let conn = self.next_id();
        let (writer, rx, queued) = ConnWriter::new(self.max_queued);
        let events = self.events.clone();
        let reader = tokio::spawn(serve(conn, stream, framing, rx, queued, events));
        self.writers.insert(conn, writer);
        self.readers.insert(conn, reader.abort_handle());
        conn
    }

    /// The connection to `addr`, dialled in the background if there is none.
    fn outbound(&mut self, addr: &str) -> ConnId {
        if let Some(conn) = self.outbound.get(addr) {
            return *conn;
        }
        let conn = self.next_id();
        let (writer, rx, queued) = ConnWriter::new(self.max_queued);
        self.writers.insert(conn, writer);
        self.outbound.insert(addr.to_string(), conn);
        let events = self.events.clone();
        let target = addr.to_string();
        let framing = Framing::Remoting(self.max_frame);
        let task = tokio::spawn(dial(conn, target, framing, rx, queued, events));
        self.readers.insert(conn, task.abort_handle());
        conn
    }

    /// A new raw stream to `addr`, dialed in the background (writes queue until it is up).
    fn dial_stream(&mut self, addr: &str) -> ConnId {
        let conn = self.next_id();
        let (writer, rx, queued) = ConnWriter::new(self.max_queued);
        self.writers.insert(conn, writer);
        let events = self.events.clone();
        let task = tokio::spawn(dial(
            conn,
            addr.to_string(),
            Framing::Raw,
            rx,
            queued,
            events,
        ));
        self.readers.insert(conn, task.abort_handle());
        conn
    }

    fn is_open(&self, conn: ConnId) -> bool {
        self.writers.contains_key(&conn)
    }

    /// Forgets a connection. True if it was open: the caller then tells the machine, so
    /// every close (by the peer, a read error, the machine's `Close`, a slow writer) reaches
    /// it exactly once. Its reader is aborted, so no event of it follows.
    #[must_use]
    fn close(&mut self, conn: ConnId) -> bool {
        let open = self.writers.remove(&conn).is_some();
        if let Some(r) = self.readers.remove(&conn) {
            r.abort();
        }
        self.stats.closed(conn);
        self.outbound.retain(|_, c| *c != conn);
        open
    }

    /// Queues a frame. True if this closed the connection (too far behind on writes).
    #[must_use]
    fn send(&mut self, conn: ConnId, parts: WriteItem) -> bool {
        let ok = self.writers.get(&conn).is_some_and(|w| w.send(parts));
        if !ok && self.is_open(conn) {
            tracing::warn!(
                conn = conn.0,
                "connection too far behind on writes; closing it"
            );
            return self.close(conn);
        }
        false
    }
}

/// Frames are encoded into one large staging buffer and split off it: a frame is a
/// refcounted slice, so encoding a response allocates nothing (the buffer is renewed in
/// large chunks, amortized over many frames).
struct Stage {
    buf: BytesMut,
    scratch: Vec<u8>,
}

impl Stage {
    const CHUNK: usize = 256 * 1024;

    fn new() -> Stage {
        Stage {
            buf: BytesMut::with_capacity(Self::CHUNK),
            scratch: Vec::with_capacity(1024),
        }
    }

    fn room(&mut self) {
        if self.buf.capacity() - self.buf.len() < Self::CHUNK / 4 {
            self.buf = BytesMut::with_capacity(Self::CHUNK);
        }
    }
}

fn frame(cmd: &rockfish_core::remoting::RemotingCommand, stage: &mut Stage) -> Option<Bytes> {
    stage.room();
    match encode(cmd, &mut stage.scratch, &mut stage.buf) {
        Ok(()) => Some(stage.buf.split().freeze()),
        Err(e) => {
            tracing::error!(error = %e, code = cmd.code, "cannot encode a command; dropped");
            None
        }
    }
}

/// Accepts on an optional listener (pending forever without one).
async fn accept_on(listener: &Option<TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

async fn run<M: Durable>(
    mut machine: M,
    (listener, stream_listener): (TcpListener, Option<TcpListener>),
    (max_frame, max_queued): (usize, usize),
    (mut stop, mut probes): (
        watch::Receiver<bool>,
        mpsc::Receiver<tokio::sync::oneshot::Sender<Snapshot>>,
    ),
) -> M {
    let (ev_tx, mut ev_rx) = mpsc::channel::<ConnEvent>(8192);
    let (flush_tx, mut flush_rx) = mpsc::unbounded_channel();
    let flusher = spawn_flusher(flush_tx);
    let mut conns = Conns {
        writers: HashMap::new(),
        readers: HashMap::new(),
        outbound: HashMap::new(),
        next: 0,
        events: ev_tx,
        max_frame,
        max_queued,
        stats: DriverStats::default(),
    };
    let mut stage = Stage::new();
    loop {
        let now = now_ms();
        if machine.poll_timeout().is_some_and(|t| t <= now) {
            machine.on_timeout(now);
        }
        drain(&mut machine, &mut conns, &flusher, &mut stage);
        let sleep_ms = machine
            .poll_timeout()
            .map_or(1_000, |t| t.saturating_sub(now_ms()).max(1));
        crate::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let conn = conns.adopt(stream, Framing::Remoting(conns.max_frame));
                    conns.stats.connections_accepted += 1;
                    machine.on_connect(conn, host(peer), now_ms());
                }
                Err(e) => tracing::warn!(error = %e, "accept failed"),
            },
            accepted = accept_on(&stream_listener) => match accepted {
                Ok((stream, peer)) => {
                    let conn = conns.adopt(stream, Framing::Raw);
                    machine.on_stream_accepted(conn, host(peer), now_ms());
                }
                Err(e) => tracing::warn!(error = %e, "accept failed (stream port)"),
            },
            Some(ev) = ev_rx.recv() => {
                on_event(&mut machine, &mut conns, &flusher, &mut stage, ev);
                // What else is already queued is taken in the same turn (bounded, so timers
                // and flush answers still come round): one wake-up, one timer and one drain
                // for a run of requests instead of one each, and the run's answers reach
                // each writer together (one write). Answers wait for the run at most (64
                // requests); draining after each request instead cost 5-7 % more CPU per
                // send with a pipelining SDK and was no faster with `rockfish bench`.
                for _ in 1..EVENTS_PER_TURN {
                    let Ok(ev) = ev_rx.try_recv() else { break };
                    on_event(&mut machine, &mut conns, &flusher, &mut stage, ev);
                }
            }
            Some((done, result)) = flush_rx.recv() => flushed(&mut machine, done, result),
            Some(reply) = probes.recv() => {
                let mut snap = machine.metrics(now_ms());
                conns.stats.connections_open = conns.writers.len() as u64;
                conns.stats.append(&mut snap);
                let _ = reply.send(snap);
            }
            _ = tokio::time::sleep(Duration::from_millis(sleep_ms)) => {}
        }
    }
    drain(&mut machine, &mut conns, &flusher, &mut stage);
    // The machine goes back to its owner (to shut down, which writes and syncs inline) only
    // once the flusher is done with every job it was given: a checkpoint's writes into the
    // store's files must not overlap the shutdown's.
    drop(flusher);
    while let Some((done, result)) = flush_rx.recv().await {
        flushed(&mut machine, done, result);
    }
    machine
}

/// Connection events handed to the machine in one turn of the driver's loop, at most.
const EVENTS_PER_TURN: usize = 64;

/// One event from the connections' tasks, handed to the machine.
fn on_event<M: Durable>(
    machine: &mut M,
    conns: &mut Conns,
    flusher: &Flusher,
    stage: &mut Stage,
    ev: ConnEvent,
) {
    match ev {
        // A command read before its connection was closed here is not served: the machine
        // has already forgotten the connection (a held pull would linger).
        ConnEvent::Command {
            conn,
            cmd,
            received_at,
        } => {
            if conns.is_open(conn) {
                if !cmd.is_response() && !cmd.is_oneway() {
                    conns.stats.request(conn, cmd.opaque, cmd.code, received_at);
                }
                machine.on_command(conn, cmd, received_at, now_ms());
            }
        }
        ConnEvent::Bytes { conn, bytes } => {
            if conns.is_open(conn) {
                machine.on_stream_bytes(conn, bytes, now_ms());
            }
        }
        ConnEvent::Answer { conn, cmd } => {
            conns.stats.frames_refused += 1;
            if let Some(f) = frame(&cmd, stage)
                && conns.send(conn, WriteItem::One(f))
            {
                machine.on_disconnect(conn, now_ms());
            }
        }
        ConnEvent::Closed { conn, reason } => {
            // Answers to what this connection sent before closing go out first, as they
            // would had each request had its own turn (a client may half-close and read).
            drain(machine, conns, flusher, stage);
            tracing::debug!(conn = conn.0, %reason, "connection closed");
            if reason.starts_with("malformed frame") {
                conns.stats.frames_malformed += 1;
            }
            if conns.close(conn) {
                machine.on_disconnect(conn, now_ms());
            }
        }
    }
}

/// A flusher job finished: the machine hears how.
fn flushed<M: Durable>(machine: &mut M, done: FlushDone, result: Result<(), String>) {
    match (done, result) {
        (FlushDone::Flush(upto), Ok(())) => machine.on_flushed(upto, now_ms()),
        (FlushDone::Flush(_), Err(e)) => machine.on_flush_failed(e, now_ms()),
        (FlushDone::Persist(token), result) => machine.on_persisted(token, result, now_ms()),
    }
}

/// Carries out the machine's outputs. A connection closed on the way (the machine's
/// `Close`, or a writer too far behind) is reported back to the machine at once, and its
/// outputs (rebalance notices, answers) are drained in the same loop.
fn drain<M: Durable>(machine: &mut M, conns: &mut Conns, flusher: &Flusher, stage: &mut Stage) {
    // One clock read for the latencies of every answer of this drain.
    let answered_at = now_ms();
    while let Some(out) = machine.poll_output() {
        let closed = match out {
            Output::Send { conn, cmd } => {
                if cmd.is_response() {
                    conns
                        .stats
                        .answered(conn, cmd.opaque, cmd.code, answered_at);
                }
                match frame(&cmd, stage) {
                    Some(f) => conns.send(conn, WriteItem::One(f)).then_some(conn),
                    None => None,
                }
            }
            Output::SendRecords { conn, cmd, records } => {
                conns
                    .stats
                    .answered(conn, cmd.opaque, cmd.code, answered_at);
                let body_len = cmd.body.len() + records.iter().map(Bytes::len).sum::<usize>();
                stage.room();
                if let Err(e) = encode_prefix(&cmd, body_len, &mut stage.scratch, &mut stage.buf) {
                    tracing::error!(error = %e, "cannot encode a response; dropped");
                    continue;
                }
                let mut parts = Vec::with_capacity(records.len() + 2);
                parts.push(stage.buf.split().freeze());
                if !cmd.body.is_empty() {
                    parts.push(cmd.body.clone());
                }
                parts.extend(records);
                conns.send(conn, WriteItem::Many(parts)).then_some(conn)
            }
            Output::SendTo { addr, cmd } => {
                let conn = conns.outbound(&addr);
                match frame(&cmd, stage) {
                    Some(f) => conns.send(conn, WriteItem::One(f)).then_some(conn),
                    None => None,
                }
            }
            Output::Close { conn, reason } => {
                tracing::info!(conn = conn.0, %reason, "closing connection");
                conns.close(conn).then_some(conn)
            }
            Output::OpenStream { addr } => {
                let conn = conns.dial_stream(&addr);
                machine.on_stream_opened(&addr, conn, now_ms());
                None
            }
            Output::SendBytes { conn, bytes } => {
                conns.send(conn, WriteItem::One(bytes)).then_some(conn)
            }
            Output::Flush { upto } => {
                match machine.flush_job(upto) {
                    Ok(job) => {
                        if flusher.send(job).is_err() {
                            machine.on_flush_failed("the flush thread is gone".into(), now_ms());
                        }
                    }
                    Err(e) => machine.on_flush_failed(e, now_ms()),
                }
                None
            }
            Output::Persist { token, files } => {
                match machine.persist_job(token, files) {
                    Ok(job) => {
                        if flusher.send(job).is_err() {
                            machine.on_persisted(
                                token,
                                Err("the flush thread is gone".into()),
                                now_ms(),
                            );
                        }
                    }
                    Err(e) => machine.on_persisted(token, Err(e), now_ms()),
                }
                None
            }
        };
        if let Some(conn) = closed {
            machine.on_disconnect(conn, now_ms());
        }
    }
}

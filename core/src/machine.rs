//! The one contract every machine is run by, and the outputs a driver drains.
//!
//! Two shapes share it: servers ([`Machine`]: the name server and the broker, which accept
//! connections) and clients ([`ClientMachine`]: the producer and the consumer, which address
//! peers). Every driver runs them by the same rules: the real one (net/src/driver.rs,
//! net/src/sdk/host.rs), the simulator (sim/src/world/) and the machine tests (the
//! simulator's harness, `rockfish_sim::harness`, on the same wiring as the simulator).
//!
//! # The calling contract
//! - **Inputs carry `now`**, milliseconds on the driver's clock. `now` never goes backwards
//!   from one call to the next on one machine (a simulated node's clock may drift, but never
//!   back). A machine never reads a clock.
//! - **One unit of time:** every instant and duration is `u64` milliseconds, durations named
//!   `_ms` (`register_interval_ms`, `max_wait_in_queue_ms`); the store takes the same
//!   `now_ms`. Java's `long` milliseconds appear only in what is stored or sent (record
//!   timestamps, data versions), made in one place: `rockfish_store::java_millis`.
//! - **After every input, drain:** the driver calls `poll_output()` until it returns `None`
//!   (clients: then `poll_event()` until `None`), then arms one timer for `poll_timeout()`.
//!   Outputs are carried out in the order polled.
//! - **`on_timeout(now)`** is called once `now` reaches the last `poll_timeout()`; calling it
//!   early is harmless (the machine does what is due and no more).
//! - **Every output kind is carried out or refused loudly.** A driver that cannot do what an
//!   output asks (a client host given `Flush`) logs an error and, in debug builds and the
//!   simulator, panics: nothing is dropped silently.
//! - **`Close { conn }` implies `on_disconnect(conn)`:** the driver closes the connection and
//!   calls `on_disconnect` before its next poll, exactly as when the peer closed it. The
//!   peer's side sees the connection lost (a client: `on_peer_lost(addr)`).
//! - **`Flush` is answered** by `on_flushed` or `on_flush_failed`, and **`Persist`** by
//!   `on_persisted`, each exactly once, in the order asked; only a machine that emits them
//!   receives them.
//! - **Streams** are raw byte connections beside the remoting ones (a broker's HA port):
//!   accepted ones come in through `on_stream_accepted`, dialed ones (`OpenStream`) are
//!   answered at once by `on_stream_opened` with their `ConnId` (writes queue until the
//!   connection is up; a failed dial is an `on_disconnect`). Their bytes arrive through
//!   `on_stream_bytes`, in order and split anywhere; `SendBytes` writes to them; they close
//!   as remoting connections do. Only a machine that asks for streams receives them.

use bytes::Bytes;

use crate::remoting::RemotingCommand;

/// A connection, numbered by the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

/// Something the driver must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Write this command to that connection.
    Send { conn: ConnId, cmd: RemotingCommand },
    /// Write this command with `records` appended to its body, in order: stored records
    /// handed to the socket as they lie in the commit log (the frame's body is
    /// `cmd.body ++ records`).
    SendRecords {
        conn: ConnId,
        cmd: RemotingCommand,
        records: Vec<Bytes>,
    },
    /// Send a request to a peer by address, connecting (or reconnecting) as needed. Its
    /// response comes back through the machine's `on_command`.
    SendTo { addr: String, cmd: RemotingCommand },
    /// Close that connection (the reason goes to the log).
    Close { conn: ConnId, reason: String },
    /// Make the commit log durable below `upto`; answer with `on_flushed` or
    /// `on_flush_failed`.
    Flush { upto: u64 },
    /// Replace each small file (a path under the store's root) atomically and durably, off
    /// the machine's task and after every earlier `Flush` and `Persist`; answer with
    /// `on_persisted(token, ..)`. Config files and checkpoints: no request waits on a disk.
    /// A broker's checkpoint first needs what `Broker::persist_syncs(token)` names made
    /// durable (resolved when the output is taken, synced before the files).
    Persist {
        token: u64,
        files: Vec<(String, Bytes)>,
    },
    /// Dial a raw byte stream to `addr`; answered at once by `on_stream_opened(addr, conn)`.
    OpenStream { addr: String },
    /// Write raw bytes to a stream connection.
    SendBytes { conn: ConnId, bytes: Bytes },
}

impl Output {
    /// The output's kind, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Output::Send { .. } => "Send",
            Output::SendRecords { .. } => "SendRecords",
            Output::SendTo { .. } => "SendTo",
            Output::Close { .. } => "Close",
            Output::Flush { .. } => "Flush",
            Output::Persist { .. } => "Persist",
            Output::OpenStream { .. } => "OpenStream",
            Output::SendBytes { .. } => "SendBytes",
        }
    }
}

/// A server machine (name server, broker): connections come to it. Run by the contract in
/// the module docs.
pub trait Machine {
    fn on_connect(&mut self, conn: ConnId, peer: rockfish_store::record::HostAddr, now: u64);
    /// The connection is gone (the peer closed it, or the machine's own `Close`).
    fn on_disconnect(&mut self, conn: ConnId, now: u64);
    /// `received_at`: when the driver read the command off the wire (for flow control).
    fn on_command(&mut self, conn: ConnId, cmd: RemotingCommand, received_at: u64, now: u64);
    fn on_timeout(&mut self, now: u64);
    /// What the machine reports to the metrics endpoint: a read of its state, no effect.
    fn metrics(&self, _now: u64) -> crate::metrics::Snapshot {
        crate::metrics::Snapshot::default()
    }
    /// The commit log is durable below `upto` (answers `Output::Flush`).
    fn on_flushed(&mut self, upto: u64, now: u64) {
        refuse_input(&format!("on_flushed({upto}) at {now}"));
    }
    /// A flush failed (answers `Output::Flush`).
    fn on_flush_failed(&mut self, reason: String, now: u64) {
        refuse_input(&format!("on_flush_failed({reason}) at {now}"));
    }
    /// A persist finished (answers `Output::Persist { token }`).
    fn on_persisted(&mut self, token: u64, result: Result<(), String>, now: u64) {
        refuse_input(&format!("on_persisted({token}, {result:?}) at {now}"));
    }
    /// A stream connection came in on the machine's stream listener (a broker's HA port).
    fn on_stream_accepted(
        &mut self,
        conn: ConnId,
        peer: rockfish_store::record::HostAddr,
        now: u64,
    ) {
        refuse_input(&format!(
            "on_stream_accepted({conn:?} from {peer:?}) at {now}"
        ));
    }
    /// The stream dialed by `OpenStream { addr }` is `conn` (answered at once: it may not be
    /// connected yet; a failed dial comes back as `on_disconnect(conn)`).
    fn on_stream_opened(&mut self, addr: &str, conn: ConnId, now: u64) {
        refuse_input(&format!("on_stream_opened({addr}, {conn:?}) at {now}"));
    }
    /// Bytes read from a stream connection, in order, split anywhere.
    fn on_stream_bytes(&mut self, conn: ConnId, bytes: Bytes, now: u64) {
        refuse_input(&format!(
            "on_stream_bytes({conn:?}, {} bytes) at {now}",
            bytes.len()
        ));
    }
    fn poll_output(&mut self) -> Option<Output>;
    fn poll_timeout(&self) -> Option<u64>;
}

/// A client machine (producer, consumer): it addresses peers by `Output::SendTo` and gets
/// their responses back by opaque; it emits no other output. Its results come out as
/// events. Run by the contract in the module docs.
pub trait ClientMachine {
    type Event;
    /// A response (or a request from a broker) arrived from a peer.
    fn on_command(&mut self, cmd: RemotingCommand, now: u64);
    /// A request from the peer at `from` (a broker's transaction check-back, a consumer-ids
    /// change): answers go back to that address. By default it is taken as any command.
    fn on_request(&mut self, from: &str, cmd: RemotingCommand, now: u64) {
        let _ = from;
        self.on_command(cmd, now)
    }
    fn on_timeout(&mut self, now: u64);
    /// The connection to `addr` failed or closed: what waits on it may fail now.
    fn on_peer_lost(&mut self, addr: &str, now: u64);
    fn poll_output(&mut self) -> Option<Output>;
    fn poll_timeout(&self) -> Option<u64>;
    fn poll_event(&mut self) -> Option<Self::Event>;
}

/// A driver was handed an output it cannot carry out, or a machine an input it never asked
/// for: a bug in the driver or the machine. Loud in debug builds and the simulator; an error
/// in the log of a release build, which keeps serving.
pub fn refuse(what: &str) {
    tracing::error!(what, "broken machine contract");
    debug_assert!(false, "broken machine contract: {what}");
}

fn refuse_input(what: &str) {
    refuse(&format!("input the machine never asked for: {what}"));
}

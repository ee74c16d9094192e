//! What every machine shares: connection handles and the outputs a driver drains.
//!
//! A machine never touches I/O. The driver tells it what happened (a frame arrived on a
//! connection, a connection opened or closed, a flush finished, time passed) and then drains
//! `poll_output()` and arms a timer for `poll_timeout()`. Times are milliseconds on the
//! driver's clock.

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
}

/// The inputs and outputs every machine shares, so one driver loop runs any of them.
pub trait Machine {
    fn on_connect(&mut self, conn: ConnId, peer: rockfish_store::record::HostAddr, now: u64);
    fn on_disconnect(&mut self, conn: ConnId, now: u64);
    /// `received_at`: when the driver read the command off the wire (for flow control).
    fn on_command(&mut self, conn: ConnId, cmd: RemotingCommand, received_at: u64, now: u64);
    fn on_timeout(&mut self, now: u64);
    fn poll_output(&mut self) -> Option<Output>;
    fn poll_timeout(&self) -> Option<u64>;
}

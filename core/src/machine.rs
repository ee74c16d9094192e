//! What every machine shares: connection handles and the outputs a driver drains.
//!
//! A machine never touches I/O. The driver tells it what happened (a frame arrived on a
//! connection, a connection opened or closed, time passed) and then drains `poll_output()`
//! and arms a timer for `poll_timeout()`. Times are milliseconds on the driver's clock.

use crate::remoting::RemotingCommand;

/// A connection, numbered by the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

/// Something the driver must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Write this command to that connection.
    Send { conn: ConnId, cmd: RemotingCommand },
    /// Close that connection (the reason goes to the log).
    Close { conn: ConnId, reason: String },
}

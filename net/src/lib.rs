//! rockfish-net: the real driver.
//!
//! Owns tokio listeners and connections, per-connection framing with batched (vectored)
//! writes, the timer, the flush thread and graceful shutdown around the unchanged
//! `rockfish-core` machines; plus a small remoting client for the CLI tools.
//!
//! Must never: hold protocol or broker logic of its own. A decision that could differ between
//! a real run and a simulated one belongs in a core machine, not here.

pub mod client;
mod conn;
pub mod driver;
pub mod flush;
pub mod launch;
pub mod sdk;

pub use client::{Client, ClientError};
pub use driver::{Durable, Server, ServerHandle};

/// Milliseconds since the Unix epoch: the clock every machine is driven with (RocketMQ stores
/// wall-clock store timestamps, and clients search by them).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

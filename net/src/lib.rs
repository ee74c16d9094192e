//! rockfish-net: the real driver.
//!
//! Owns tokio listeners and connections, per-connection framing with batched (vectored)
//! writes, the timer, the flush thread and graceful shutdown around the unchanged
//! `rockfish-core` machines; plus a small remoting client for the CLI tools.
//!
//! Must never: hold protocol or broker logic of its own. A decision that could differ between
//! a real run and a simulated one belongs in a core machine, not here.

/// `tokio::select!`, biased under madsim. Unbiased, tokio picks the branch to poll first from
/// a thread-local generator seeded by a process-wide counter, so a seed's run would depend on
/// what ran before it in the process: a seed replayed alone, or madsim's determinism check
/// (the seed twice in one process), would take other paths. Under madsim the seed still
/// orders every task and packet.
#[cfg(madsim)]
macro_rules! select {
    ($($branches:tt)*) => { tokio::select! { biased; $($branches)* } };
}
#[cfg(not(madsim))]
macro_rules! select {
    ($($branches:tt)*) => { tokio::select! { $($branches)* } };
}
pub(crate) use select;

pub mod admin;
pub mod client;
mod conn;
pub mod controller;
pub mod driver;
pub mod flush;
#[cfg(not(madsim))]
pub mod grpc;
#[cfg(not(madsim))]
pub mod http;
pub mod launch;
pub mod metrics;
pub mod sdk;

pub use client::{Client, ClientError};
pub use driver::{Durable, Server, ServerHandle};

/// Milliseconds since the Unix epoch: the clock every machine is driven with (RocketMQ stores
/// wall-clock store timestamps, and clients search by them). Within one process it never
/// steps: the wall clock read at the first call, advanced by the monotonic clock. An NTP step
/// (or an operator's `date -s`) would otherwise reach the machines as a jump, stalling every
/// timer for the length of a step back, or firing expiries (a name server's 120 s broker
/// expiry, a lock's 60 s) all at once on a step forward. The price: after a step, timestamps
/// differ from the stepped wall clock by the step until the process restarts. The simulator
/// draws clock steps across restarts and drift within a process, as this clock allows.
#[cfg(not(madsim))]
pub fn now_ms() -> u64 {
    use std::sync::OnceLock;
    use std::time::Instant;
    static ANCHOR: OnceLock<(u64, Instant)> = OnceLock::new();
    let (wall, at) = ANCHOR.get_or_init(|| (wall_ms(), Instant::now()));
    wall + at.elapsed().as_millis() as u64
}

/// Under madsim the clock is simulated and never steps; one process runs many seeds, each
/// with its own clock, so no anchor may outlive a run.
#[cfg(madsim)]
pub fn now_ms() -> u64 {
    wall_ms()
}

fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

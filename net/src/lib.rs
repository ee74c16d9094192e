//! rockfish-net: the real driver.
//!
//! Owns tokio listeners and connections, per-connection framing, timers, the flush thread
//! and graceful shutdown around the unchanged `rockfish-core` machines, and the Rust SDK.
//!
//! Must never: hold protocol or broker logic of its own. A decision that could differ between
//! a real run and a simulated one belongs in a core machine, not here.
//!
//! Status: filled by issue 3 (broker and name server driver) and issue 4 (the SDK).

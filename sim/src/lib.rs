//! rockfish-sim: the deterministic simulator.
//!
//! One thread, one seed. [`Sim`] steps the unchanged core machines (name server, brokers over
//! `MemDisk`, producers, consumers) in a discrete-event loop. Every message between them is a
//! real encoded remoting frame, carried by a simulated network that delays, drops and
//! duplicates frames and partitions nodes; brokers crash (process crash: the page cache
//! survives) or lose power (only synced bytes survive, torn pages per the disk's fault plan)
//! and restart. A run has a safety phase with faults and a liveness phase without them, then
//! [`check`] judges the recorded history. Every event is a trace line; the run's digest is a
//! CRC of the trace, so the same seed on the same commit gives the same digest.
//!
//! Must never: read the wall clock, use unseeded randomness, or iterate a std `HashMap` where
//! the order can reach the trace.

pub mod check;
pub mod config;
pub mod harness;
pub mod knobs;
pub mod scenario;
pub mod shrink;
pub mod timeline;
mod world;

pub use check::{CheckReport, Violation, check};
pub use config::{Bugs, Fault, FaultAt, Faults, SimConfig};
pub use scenario::{SCENARIOS, ScenarioError, ScenarioFile, scenario};
pub use shrink::{Shrunk, shrink};
pub use world::{
    CrashRecord, Delivery, Group, History, Outcome, POP_GROUP, PopAck, PopChange, PopDelivery,
    PopHandout, PopOutcome, Processing, RouteView, SETTLED_RESUME_MS, Sim, StoreSlot,
};

//! One in-process harness for every test that runs machines together: the simulator's own
//! wiring (`fabric`: nodes, connections, routing, closes, frames encoded for real), used by
//! the simulator and by machine-level tests (`Cluster`: frames delivered at once, time
//! advanced by hand).

pub mod broker;
pub mod client;
pub mod cluster;
pub mod fabric;

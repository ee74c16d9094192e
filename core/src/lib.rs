//! rockfish-core: the pure heart of rockfish.
//!
//! Owns the protocol types, Apache RocketMQ's remoting codec and the Sans-IO state machines
//! (`NameServer`, `Broker`, `Producer`, `Consumer`) with the pure parts they share
//! (rebalance strategies, the client instance and its requests-in-flight table, protocol
//! facts). Retry, delay, transactions and HA land here as parts of their own (issues 12–14).
//!
//! Must never: use tokio, madsim, sockets, threads, the wall clock (`SystemTime::now`,
//! `Instant::now`), global randomness, or the file system other than through
//! `rockfish_store::Disk`. Every input carries `now`; every effect is an output the driver drains.
//! The one seeded exception is `buggify`: fault sites compiled in only for simulated builds and
//! inert until a simulator arms its thread.
//!
//! Every machine is run by the one contract in [`machine`].

pub mod broker;
// Fault sites live in the store (the lowest layer) so that both layers can have them.
pub use rockfish_store::buggify;
pub mod client;
pub mod consumer;
pub mod controller;
pub mod filter;
pub mod ha;
pub mod machine;
pub mod message;
pub mod metrics;
pub mod namesrv;
pub mod producer;
pub mod protocol;
pub mod proxy;
pub mod rebalance;
pub mod remoting;
pub mod rpc_table;

pub use rockfish_store::record;

//! rockfish-store: RocketMQ's storage engine, rebuilt to lose nothing it promised to keep.
//!
//! - [`Disk`]: the only door to storage. [`MmapDisk`] for real runs, [`MemDisk`] (volatile and
//!   durable bytes kept apart, with a fault plan) for tests and the simulator.
//! - [`CommitLog`]: every message, appended in RocketMQ's stored-message layout ([`record`]) to
//!   fixed-size segments; each record carries a CRC over all its bytes.
//! - [`ConsumeQueue`]: per (topic, queue) 20-byte entries pointing into the commit log.
//! - [`IndexService`]: message keys to commit log offsets, in RocketMQ's IndexFile layout.
//! - [`Checkpoint`] and recovery in [`MessageStore::open`]; [`config`] for atomically replaced
//!   JSON config files.
//!
//! Must never: use threads, sockets, async runtimes, the wall clock, global randomness, or the
//! file system outside `disk/mmap.rs`. The one seeded exception is [`buggify`]: fault sites
//! (for this crate and rockfish-core) compiled in only for simulated builds. Time arrives as `now` arguments; durability is
//! explicit (`write_pos` vs `flushed`) so a driver decides when and where syncs run.

pub mod buggify;
pub mod checkpoint;
pub mod commitlog;
pub mod config;
pub mod consume_queue;
pub mod disk;
pub mod error;
pub mod index;
pub mod message_store;
pub mod record;
mod segments;

pub use checkpoint::Checkpoint;
pub use commitlog::{Appended, CommitLog, ScanStop};
pub use consume_queue::{Boundary, ConsumeQueue, CqEntry, FixedHasher};
pub use disk::mem::{DiskStats, FaultPlan, MemDisk};
pub use disk::mmap::{MmapDisk, MmapSyncHandle};
pub use disk::off_task::{OffTaskSync, SyncWork};
pub use disk::{CreatedSet, Disk, DiskError, FileId};
pub use error::{StoreError, StoreResult};
pub use index::{IndexConfig, IndexService};
pub use message_store::{
    GetResult, GetStatus, MessageStore, PutResult, RecoveryReport, STAGED_MAX_TOTAL, StoreConfig,
    java_millis,
};
pub use record::{HostAddr, StoreMessage, StoredRecord};

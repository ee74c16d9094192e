//! The store's geometry and timing (broker.conf keys as Apache names them), checked before
//! a store opens; and the one conversion from the machines' clock to stored timestamps.

use crate::index::IndexConfig;

#[derive(Debug, Clone, PartialEq)]
pub struct StoreConfig {
    /// Commit log segment size (RocketMQ's mapedFileSizeCommitLog), default 1 GiB.
    pub commitlog_segment_size: u64,
    /// Entries per consume queue file, default 300,000.
    pub consume_queue_entries: u64,
    /// Largest body accepted (RocketMQ's maxMessageSize), default 4 MiB.
    pub max_message_size: usize,
    pub index: IndexConfig,
    /// Delay level n (1-based) waits `delay_levels_ms[n - 1]`.
    pub delay_levels_ms: Vec<i64>,
    /// For the disk, not the store: how many files `MmapDisk` keeps mapped at once (idle
    /// ones are unmapped, and mapped again on demand). `None`: what `vm.max_map_count`
    /// leaves room for.
    pub max_mapped_files: Option<usize>,
    /// RocketMQ's warmMapedFileEnable, done as rockfish does it: the commit log keeps the
    /// next megabyte past its appends prewritten with zeros (`Disk::prewrite`), so a sync
    /// after each append writes the data alone, not also the blocks' change from allocated
    /// to written. `None`: on exactly when the broker flushes synchronously (the broker
    /// decides at start); the store treats `None` as off.
    pub warm_mapped_file: Option<bool>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            commitlog_segment_size: 1 << 30,
            consume_queue_entries: 300_000,
            max_message_size: 4 << 20,
            index: IndexConfig::default(),
            delay_levels_ms: parse_delay_levels(
                "1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h",
            )
            .expect("default levels parse"),
            max_mapped_files: None,
            warm_mapped_file: None,
        }
    }
}

/// The largest commit log segment: the end-of-segment blank marker's length and every record
/// position inside a segment are Java ints in RocketMQ's layout.
pub const MAX_COMMITLOG_SEGMENT: u64 = i32::MAX as u64;
/// The smallest commit log segment accepted.
pub const MIN_COMMITLOG_SEGMENT: u64 = 64 * 1024;

/// The caller's clock (milliseconds, `u64`, as every machine counts time) as the store
/// timestamps records, index entries and checkpoints: Java's `long` milliseconds. The one
/// place the two meet.
pub fn java_millis(now_ms: u64) -> i64 {
    i64::try_from(now_ms).expect("a clock within 292 million years of 1970")
}

impl StoreConfig {
    /// The geometry the simulated tiers run (the simulator and madsim): the smallest log
    /// segments (64 KiB), 256-entry queue files and 512-entry index files, so that a run of a
    /// few hundred messages rolls every kind of file and recovery spans segments.
    pub fn simulated() -> StoreConfig {
        StoreConfig {
            commitlog_segment_size: MIN_COMMITLOG_SEGMENT,
            consume_queue_entries: 256,
            index: IndexConfig {
                hash_slots: 127,
                max_entries: 512,
            },
            ..StoreConfig::default()
        }
    }

    /// The smallest useful geometry, for machine tests: 1 MiB log segments, 1,000-entry
    /// queue files, a 101-slot index.
    pub fn small() -> StoreConfig {
        StoreConfig {
            commitlog_segment_size: 1 << 20,
            consume_queue_entries: 1000,
            index: IndexConfig {
                hash_slots: 101,
                max_entries: 1000,
            },
            ..StoreConfig::default()
        }
    }

    /// Refuses a geometry the store cannot keep, naming the key and the rule.
    pub fn validate(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        let seg = self.commitlog_segment_size;
        if !(MIN_COMMITLOG_SEGMENT..=MAX_COMMITLOG_SEGMENT).contains(&seg) {
            problems.push(format!(
                "mapedFileSizeCommitLog={seg}: must be {MIN_COMMITLOG_SEGMENT}..={MAX_COMMITLOG_SEGMENT}"
            ));
        }
        // A body too large for a segment is refused at put time, naming both sizes.
        if self.max_message_size == 0 {
            problems.push("maxMessageSize=0: must be above 0".into());
        }
        if self.consume_queue_entries == 0 || self.consume_queue_entries > (1 << 26) {
            problems.push(format!(
                "mapedFileSizeConsumeQueue: {} entries per file; must be 1..={}",
                self.consume_queue_entries,
                1u64 << 26
            ));
        }
        let ix = self.index;
        if ix.hash_slots == 0
            || ix.max_entries < 2 * crate::index::MAX_KEYS_PER_RECORD as u32
            || ix.max_entries > 100_000_000
        {
            problems.push(format!(
                "index geometry: maxHashSlotNum={} maxIndexNum={}: slots must be above 0 and entries {}..=100000000",
                ix.hash_slots,
                ix.max_entries,
                2 * crate::index::MAX_KEYS_PER_RECORD
            ));
        }
        if self.delay_levels_ms.is_empty() || self.delay_levels_ms.iter().any(|&d| d <= 0) {
            problems.push("messageDelayLevel: at least one level, each above 0".into());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

/// Parses RocketMQ's messageDelayLevel string ("1s 5s 1m 2h 1d").
pub fn parse_delay_levels(s: &str) -> Result<Vec<i64>, String> {
    s.split_whitespace()
        .map(|level| {
            let (num, unit) = level.split_at(level.len().saturating_sub(1));
            let n: i64 = num
                .parse()
                .map_err(|_| format!("bad delay level {level:?}"))?;
            let ms = match unit {
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                _ => return Err(format!("bad unit in delay level {level:?} (s, m, h or d)")),
            };
            Ok(n * ms)
        })
        .collect()
}

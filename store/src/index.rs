//! The index: message keys (each word of the KEYS property, and UNIQ_KEY) to commit log
//! offsets, queryable within a time range, in RocketMQ's IndexFile layout:
//!
//! ```text
//! header   40 bytes: beginTimestamp i64, endTimestamp i64, beginPhyOffset i64,
//!                    endPhyOffset i64, hashSlotCount i32, indexCount i32
//! slots    hashSlotCount x i32: the newest entry number in each slot (0 = none)
//! entries  maxEntries x 20 bytes: keyHash i32, phyOffset i64, timeDiff i32 (seconds since
//!          beginTimestamp), prevIndex i32 (older entry in the same slot, 0 = none)
//! ```
//!
//! Entry numbers start at 1. Files are named by the 20-digit commit log offset of the first
//! record they index, so recovery knows where each file's coverage begins even if its header
//! was torn. A hash only narrows the search: the store confirms every hit against the record.

use crate::disk::{Disk, FileId, stable_read_at};
use crate::error::{StoreResult, offset_name, parse_offset_name};
use crate::record::java_string_hash;

pub const INDEX_DIR: &str = "index";
const HEADER_SIZE: u64 = 40;
const SLOT_SIZE: u64 = 4;
const ENTRY_SIZE: u64 = 20;
/// A record indexes at most this many keys; beyond that the rest are skipped (and logged).
pub const MAX_KEYS_PER_RECORD: usize = 32;

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    bincode::Encode,
    bincode::Decode,
)]
pub struct IndexHeader {
    pub begin_timestamp: i64,
    pub end_timestamp: i64,
    pub begin_phy_offset: i64,
    pub end_phy_offset: i64,
    pub hash_slot_count: i32,
    pub index_count: i32,
}

impl IndexHeader {
    fn encode(&self) -> [u8; 40] {
        let mut b = [0u8; 40];
        b[..8].copy_from_slice(&self.begin_timestamp.to_be_bytes());
        b[8..16].copy_from_slice(&self.end_timestamp.to_be_bytes());
        b[16..24].copy_from_slice(&self.begin_phy_offset.to_be_bytes());
        b[24..32].copy_from_slice(&self.end_phy_offset.to_be_bytes());
        b[32..36].copy_from_slice(&self.hash_slot_count.to_be_bytes());
        b[36..40].copy_from_slice(&self.index_count.to_be_bytes());
        b
    }
}

/// Index geometry. RocketMQ's defaults: 5,000,000 slots, 20,000,000 entries (a 420 MB file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexConfig {
    pub hash_slots: u32,
    pub max_entries: u32,
}

impl Default for IndexConfig {
    fn default() -> Self {
        IndexConfig {
            hash_slots: 5_000_000,
            max_entries: 20_000_000,
        }
    }
}

impl IndexConfig {
    fn file_size(&self) -> u64 {
        HEADER_SIZE + self.hash_slots as u64 * SLOT_SIZE + self.max_entries as u64 * ENTRY_SIZE
    }
    fn slot_pos(&self, slot: u32) -> u64 {
        HEADER_SIZE + slot as u64 * SLOT_SIZE
    }
    fn entry_pos(&self, n: u32) -> u64 {
        HEADER_SIZE + self.hash_slots as u64 * SLOT_SIZE + n as u64 * ENTRY_SIZE
    }
}

fn key_hash(key: &str) -> i32 {
    // Math.abs in Java leaves MIN_VALUE negative; RocketMQ maps it to 0.
    let h = java_string_hash(key);
    if h == i32::MIN { 0 } else { h.abs() }
}

struct IndexFile {
    start: u64,
    file: FileId,
    header: IndexHeader,
    dirty: bool,
    /// Being made durable by a prepared checkpoint (off the writer's task).
    syncing: bool,
    /// Header and slots (written anywhere) reserved in this process.
    fixed_reserved: bool,
    /// Entries `[.., entries_reserved)` reserved in this process.
    entries_reserved: u32,
}

/// Entries reserved ahead of the last one written: at least this many bytes' worth...
const MIN_ENTRIES_AHEAD: u64 = 64 << 10;
/// ...and, as the file fills, about as many as it holds, up to this many bytes' worth.
const MAX_ENTRIES_AHEAD: u64 = 16 << 20;

impl IndexFile {
    fn new(start: u64, file: FileId, header: IndexHeader, dirty: bool) -> Self {
        IndexFile {
            start,
            file,
            header,
            dirty,
            syncing: false,
            fixed_reserved: false,
            entries_reserved: 0,
        }
    }

    /// Reserves the header and slots, and entries up to `upto` (exclusive) with room
    /// ahead, so that the writes that follow cannot fail for lack of space. The file is
    /// sparse: an index holding a thousand keys occupies its slots and a little more, not
    /// its full size.
    fn reserve<D: Disk>(&mut self, disk: &mut D, cfg: &IndexConfig, upto: u32) -> StoreResult<()> {
        if !self.fixed_reserved {
            disk.reserve(self.file, 0, cfg.entry_pos(0))?;
            self.fixed_reserved = true;
        }
        if upto <= self.entries_reserved {
            return Ok(());
        }
        let ahead = (upto as u64 * ENTRY_SIZE).clamp(MIN_ENTRIES_AHEAD, MAX_ENTRIES_AHEAD);
        let target = (upto as u64 + ahead / ENTRY_SIZE).min(cfg.max_entries as u64 + 1) as u32;
        let from = cfg.entry_pos(self.entries_reserved);
        let to = cfg.entry_pos(target).min(cfg.file_size());
        disk.reserve(self.file, from, to - from)?;
        self.entries_reserved = target;
        Ok(())
    }
}

/// Where the active index file stood at a checkpoint: everything it held then is durable.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    bincode::Encode,
    bincode::Decode,
)]
pub struct IndexCheckpoint {
    pub file_start: u64,
    pub header: IndexHeader,
}

pub struct IndexService {
    config: IndexConfig,
    files: Vec<IndexFile>,
    key_buf: String,
}

fn read_i32<D: Disk>(disk: &D, file: FileId, at: u64) -> StoreResult<i32> {
    let b = disk.read_at(file, at, 4)?;
    Ok(i32::from_be_bytes(b[..].try_into().expect("4 bytes")))
}

impl IndexService {
    pub fn new(config: IndexConfig) -> Self {
        assert!(config.hash_slots > 0 && config.max_entries >= 2 * MAX_KEYS_PER_RECORD as u32);
        IndexService {
            config,
            files: Vec::new(),
            key_buf: String::new(),
        }
    }

    fn path(start: u64) -> String {
        format!("{INDEX_DIR}/{}", offset_name(start))
    }

    /// The index file names present, as start offsets.
    pub(crate) fn list<D: Disk>(disk: &D) -> StoreResult<Vec<u64>> {
        disk.list(INDEX_DIR)?
            .iter()
            .filter(|n| !n.ends_with(".tmp"))
            .map(|n| parse_offset_name(INDEX_DIR, n))
            .collect()
    }

    /// Recovers the index. With a checkpoint, files older than the checkpoint's active file are
    /// sealed and trusted, the active file is cut back to what the checkpoint covered (slots
    /// rebuilt from its entries, as a torn slot write could otherwise hide older entries), and
    /// newer files are removed. Returns the commit log offset from which records must be
    /// re-indexed, and a note if anything was thrown away. Before it throws the files away to
    /// rebuild them, `forget` must durably drop the index state from the checkpoint: a crash
    /// mid-rebuild must not leave a checkpoint that vouches for half-rebuilt files.
    pub(crate) fn recover<D: Disk>(
        &mut self,
        disk: &mut D,
        checkpoint: Option<&IndexCheckpoint>,
        checkpoint_offset: u64,
        log_min: u64,
        clean: bool,
        forget: &mut dyn FnMut(&mut D) -> StoreResult<()>,
    ) -> StoreResult<(u64, Option<String>)> {
        let starts = Self::list(disk)?;
        let size = self.config.file_size();
        let had_state = checkpoint.is_some();
        let mut rebuild_all =
            |this: &mut Self, disk: &mut D, why: String| -> StoreResult<(u64, Option<String>)> {
                if had_state {
                    forget(disk)?;
                }
                for s in Self::list(disk)? {
                    disk.remove(&Self::path(s))?;
                }
                this.files.clear();
                Ok((log_min, Some(why)))
            };
        let Some(cp) = checkpoint else {
            if starts.is_empty() {
                return Ok((checkpoint_offset.min(log_min), None));
            }
            return rebuild_all(
                self,
                disk,
                "no index state in the checkpoint: rebuilding the index".into(),
            );
        };
        if !starts.contains(&cp.file_start) {
            return rebuild_all(
                self,
                disk,
                format!(
                    "{} is missing: rebuilding the index",
                    Self::path(cp.file_start)
                ),
            );
        }
        let mut notes = Vec::new();
        for start in starts {
            let path = Self::path(start);
            if start > cp.file_start {
                disk.remove(&path)?;
                notes.push(format!("removed {path} (newer than the checkpoint)"));
                continue;
            }
            let file = disk.open(&path)?;
            if disk.size(file)? != size {
                disk.close(file);
                return rebuild_all(
                    self,
                    disk,
                    format!("{path}: wrong size for the configured index geometry: rebuilding"),
                );
            }
            let header = if start == cp.file_start {
                cp.header
            } else {
                let b = stable_read_at(disk, file, 0, HEADER_SIZE as usize)?;
                let h = IndexHeader {
                    begin_timestamp: i64::from_be_bytes(b[0..8].try_into().expect("8")),
                    end_timestamp: i64::from_be_bytes(b[8..16].try_into().expect("8")),
                    begin_phy_offset: i64::from_be_bytes(b[16..24].try_into().expect("8")),
                    end_phy_offset: i64::from_be_bytes(b[24..32].try_into().expect("8")),
                    hash_slot_count: i32::from_be_bytes(b[32..36].try_into().expect("4")),
                    index_count: i32::from_be_bytes(b[36..40].try_into().expect("4")),
                };
                if h.hash_slot_count as u32 != self.config.hash_slots || h.index_count < 1 {
                    disk.close(file);
                    return rebuild_all(
                        self,
                        disk,
                        format!("{path}: header does not match: rebuilding the index"),
                    );
                }
                h
            };
            self.files.push(IndexFile::new(start, file, header, false));
        }
        if !clean {
            self.reset_active(disk)?;
        }
        let note = (!notes.is_empty()).then(|| notes.join("; "));
        Ok((checkpoint_offset, note))
    }

    /// Makes the active file hold exactly the entries its (checkpointed) header counts.
    fn reset_active<D: Disk>(&mut self, disk: &mut D) -> StoreResult<()> {
        let cfg = self.config;
        let Some(active) = self.files.last_mut() else {
            return Ok(());
        };
        let count = active.header.index_count.max(1) as u32;
        let slots_end = cfg.entry_pos(0);
        disk.zero_range(active.file, HEADER_SIZE, slots_end - HEADER_SIZE)?;
        let tail = cfg.entry_pos(count);
        disk.zero_range(active.file, tail, cfg.file_size() - tail)?;
        // Zeroed ranges may be holes now: reserve what is written from here on.
        active.fixed_reserved = false;
        active.entries_reserved = 0;
        active.reserve(disk, &cfg, count)?;
        // Entries are in order, so the last one per slot wins, as it did when written.
        let entries = stable_read_at(
            disk,
            active.file,
            cfg.entry_pos(0),
            (count as u64 * ENTRY_SIZE) as usize,
        )?;
        for n in 1..count {
            let e = &entries[(n as u64 * ENTRY_SIZE) as usize..];
            let hash = i32::from_be_bytes(e[..4].try_into().expect("4"));
            let slot = (hash as u32) % cfg.hash_slots;
            disk.write_at(active.file, cfg.slot_pos(slot), &(n as i32).to_be_bytes())?;
        }
        disk.write_at(active.file, 0, &active.header.encode())?;
        active.dirty = true;
        Ok(())
    }

    /// Makes sure the active file has room for `keys` more entries, creating the next file
    /// (named `phy`) if not, so that the puts that follow cannot fail for lack of space.
    pub fn prepare<D: Disk>(
        &mut self,
        disk: &mut D,
        phy: u64,
        store_timestamp: i64,
        keys: usize,
    ) -> StoreResult<()> {
        let cfg = self.config;
        let room = match self.files.last() {
            None => false,
            Some(f) => f.header.index_count as u64 + keys as u64 <= cfg.max_entries as u64,
        };
        if room {
            let f = self.files.last_mut().expect("room in the last file");
            return f.reserve(disk, &cfg, f.header.index_count as u32 + keys as u32);
        }
        // The full file stays dirty; the next checkpoint syncs it (puts never sync).
        let file = disk.create(&Self::path(phy), cfg.file_size())?;
        let header = IndexHeader {
            begin_timestamp: store_timestamp,
            end_timestamp: store_timestamp,
            begin_phy_offset: phy as i64,
            end_phy_offset: phy as i64,
            hash_slot_count: cfg.hash_slots as i32,
            index_count: 1,
        };
        // Kept even if its space cannot be reserved now: the next prepare retries the
        // reservation, instead of creating and removing a file for every refused put.
        self.files.push(IndexFile::new(phy, file, header, true));
        let f = self.files.last_mut().expect("just pushed");
        f.reserve(disk, &cfg, 1 + keys as u32)
    }

    /// Indexes `topic#key` for the record at `phy`.
    pub fn put<D: Disk>(
        &mut self,
        disk: &mut D,
        topic: &str,
        key: &str,
        phy: u64,
        store_timestamp: i64,
    ) -> StoreResult<()> {
        if key.is_empty() {
            return Ok(());
        }
        let cfg = self.config;
        self.prepare(disk, phy, store_timestamp, 1)?;
        let f = self.files.last_mut().expect("just ensured");
        self.key_buf.clear();
        self.key_buf.push_str(topic);
        self.key_buf.push('#');
        self.key_buf.push_str(key);
        let hash = key_hash(&self.key_buf);
        let slot = (hash as u32) % cfg.hash_slots;
        // A misread slot would splice chains together for good: read it until stable.
        let prev = stable_read_at(disk, f.file, cfg.slot_pos(slot), 4)?;
        let prev = i32::from_be_bytes(prev[..].try_into().expect("4 bytes"));
        let prev = if prev < 0 || prev >= f.header.index_count {
            0
        } else {
            prev
        };
        let n = f.header.index_count as u32;
        let diff_secs =
            ((store_timestamp - f.header.begin_timestamp) / 1000).clamp(0, i32::MAX as i64) as i32;
        let mut entry = [0u8; 20];
        entry[..4].copy_from_slice(&hash.to_be_bytes());
        entry[4..12].copy_from_slice(&(phy as i64).to_be_bytes());
        entry[12..16].copy_from_slice(&diff_secs.to_be_bytes());
        entry[16..].copy_from_slice(&prev.to_be_bytes());
        disk.write_at(f.file, cfg.entry_pos(n), &entry)?;
        disk.write_at(f.file, cfg.slot_pos(slot), &(n as i32).to_be_bytes())?;
        f.header.index_count += 1;
        f.header.end_phy_offset = phy as i64;
        f.header.end_timestamp = f.header.end_timestamp.max(store_timestamp);
        disk.write_at(f.file, 0, &f.header.encode())?;
        f.dirty = true;
        Ok(())
    }

    /// Commit log offsets of records that may carry `topic#key`, stored within
    /// `[begin, end]` (ms), newest first, at most `max`.
    pub fn query<D: Disk>(
        &self,
        disk: &D,
        topic: &str,
        key: &str,
        begin: i64,
        end: i64,
        max: usize,
    ) -> StoreResult<Vec<u64>> {
        let cfg = self.config;
        let hash = key_hash(&format!("{topic}#{key}"));
        let slot = (hash as u32) % cfg.hash_slots;
        let mut out = Vec::new();
        for f in self.files.iter().rev() {
            if out.len() >= max {
                break;
            }
            let h = &f.header;
            // Time diffs are whole seconds, so widen the file's window by a second.
            if h.end_timestamp + 1000 < begin || h.begin_timestamp > end {
                continue;
            }
            let mut n = read_i32(disk, f.file, cfg.slot_pos(slot))?;
            // Chains only point backwards; anything else is damage and ends the walk.
            let mut bound = h.index_count;
            while n > 0 && n < bound && out.len() < max {
                let e = disk.read_at(f.file, cfg.entry_pos(n as u32), ENTRY_SIZE as usize)?;
                let e_hash = i32::from_be_bytes(e[..4].try_into().expect("4"));
                let phy = i64::from_be_bytes(e[4..12].try_into().expect("8"));
                let diff = i32::from_be_bytes(e[12..16].try_into().expect("4")) as i64;
                let prev = i32::from_be_bytes(e[16..20].try_into().expect("4"));
                let ts = h.begin_timestamp + diff * 1000;
                if e_hash == hash && phy >= 0 && ts + 999 >= begin && ts <= end {
                    out.push(phy as u64);
                }
                bound = n;
                n = prev;
            }
        }
        Ok(out)
    }

    /// Syncs every changed file. Returns the active file's state for the checkpoint.
    pub fn sync<D: Disk>(&mut self, disk: &mut D) -> StoreResult<Option<IndexCheckpoint>> {
        let size = self.config.file_size();
        for f in self.files.iter_mut().filter(|f| f.dirty || f.syncing) {
            disk.sync(f.file, 0, size)?;
            f.dirty = false;
            f.syncing = false;
        }
        Ok(self.files.last().map(|f| IndexCheckpoint {
            file_start: f.start,
            header: f.header,
        }))
    }

    /// Describes the index as it stood when the commit log ended at `c` (see
    /// `checkpoint_mark`) for a checkpoint; the changed files are to be made durable before
    /// the checkpoint is written (`pending_ranges`, then `on_synced`).
    pub fn prepare_checkpoint<D: Disk>(
        &mut self,
        disk: &D,
        c: u64,
    ) -> StoreResult<Option<IndexCheckpoint>> {
        for f in self.files.iter_mut().filter(|f| f.dirty) {
            f.dirty = false;
            f.syncing = true;
        }
        self.checkpoint_mark(disk, c)
    }

    /// The ranges the prepared checkpoint needs durable, appended to `out`.
    pub(crate) fn pending_ranges(&self, out: &mut Vec<(FileId, u64, u64)>) {
        let size = self.config.file_size();
        out.extend(
            self.files
                .iter()
                .filter(|f| f.syncing)
                .map(|f| (f.file, 0, size)),
        );
    }

    /// The ranges from `pending_ranges` were made durable.
    pub(crate) fn on_synced(&mut self) {
        for f in &mut self.files {
            f.syncing = false;
        }
    }

    /// The index as it stood when the commit log ended at `c`: the last file that began below
    /// `c`, counting only entries of records below `c` (entries are in log order). Later
    /// entries stay in the file; recovery cuts them and re-indexes from `c`. `None` when no
    /// file began below `c` (recovery then rebuilds the index).
    fn checkpoint_mark<D: Disk>(&self, disk: &D, c: u64) -> StoreResult<Option<IndexCheckpoint>> {
        let cfg = self.config;
        let Some(f) = self.files.iter().rev().find(|f| f.start < c) else {
            return Ok(None);
        };
        let count = f.header.index_count.max(1) as u32;
        let phy_at = |n: u32| -> StoreResult<u64> {
            // Stable reads: a transient bit flip must not move a durable barrier.
            let b = stable_read_at(disk, f.file, cfg.entry_pos(n) + 4, 8)?;
            Ok(u64::from_be_bytes(b[..].try_into().expect("8 bytes")))
        };
        // First entry number in [1, count) whose record is at or past `c`.
        let (mut lo, mut hi) = (1u32, count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if phy_at(mid)? < c {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let mut header = f.header;
        header.index_count = lo as i32;
        Ok(Some(IndexCheckpoint {
            file_start: f.start,
            header,
        }))
    }

    /// The index's checkpoint state as if the commit log ended at `end` (a cut's checkpoint,
    /// before `truncate` runs).
    pub(crate) fn mark_at<D: Disk>(
        &self,
        disk: &D,
        end: u64,
    ) -> StoreResult<Option<IndexCheckpoint>> {
        self.checkpoint_mark(disk, end)
    }

    /// Cuts the index back to the entries of records below `end` (the commit log is cut
    /// there): files begun at or past it go, the last file keeps its entries below it, slots
    /// rebuilt. Entries stay in log order, which checkpoints and recovery count on: appends
    /// after the cut land below entries of the cut tail otherwise.
    pub(crate) fn truncate<D: Disk>(&mut self, disk: &mut D, end: u64) -> StoreResult<()> {
        while self.files.last().is_some_and(|f| f.start >= end) {
            let f = self.files.pop().expect("checked");
            disk.close(f.file);
            disk.remove(&Self::path(f.start))?;
        }
        let Some(mark) = self.checkpoint_mark(disk, end)? else {
            return Ok(());
        };
        let cfg = self.config;
        let active = self.files.last_mut().expect("a mark names the last file");
        assert_eq!(active.start, mark.file_start, "the mark is the last file's");
        let keep = mark.header.index_count;
        if keep >= active.header.index_count {
            return Ok(());
        }
        active.header.index_count = keep;
        active.header.end_phy_offset = if keep > 1 {
            let b = stable_read_at(disk, active.file, cfg.entry_pos(keep as u32 - 1) + 4, 8)?;
            i64::from_be_bytes(b[..].try_into().expect("8 bytes"))
        } else {
            active.header.begin_phy_offset
        };
        self.reset_active(disk)
    }

    pub fn file_count(&self) -> usize {
        self.files.len()
    }

    pub(crate) fn close<D: Disk>(&mut self, disk: &mut D) {
        for f in self.files.drain(..) {
            disk.close(f.file);
        }
    }
}

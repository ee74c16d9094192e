//! `MemDisk`: a deterministic in-memory disk with a fault model, for tests and the simulator.
//!
//! Every file has two layers: `volatile` (what the page cache holds, what reads see) and
//! `durable` (what survives a power loss). Writes mark 4 KiB pages dirty; `sync` copies dirty
//! pages to the durable layer. A process crash loses nothing; a power loss keeps the durable
//! layer plus, per the fault plan, some dirty pages written back whole or torn at 512-byte
//! sector granularity. All randomness comes from one seeded RNG, so a seed replays exactly.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use super::{CreatedSet, Disk, DiskError, DiskResult, FileId, check_bounds, check_path};

/// Granularity of dirty tracking and of write-back at power loss.
pub const PAGE_SIZE: usize = 4096;
/// Granularity of a torn page: a page that tears keeps a random subset of its sectors.
pub const SECTOR_SIZE: usize = 512;

/// Probabilistic faults a `MemDisk` injects. All zero (the default) means a perfect disk.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FaultPlan {
    /// Probability that a `write_at` (or atomic file write) fails. A failed `write_at` may
    /// still have landed a prefix of its bytes, as a real short write does.
    pub write_error: f64,
    /// Probability that a `sync` fails. The range is then marked clean although some of its
    /// pages never reached the media: they are lost at the next power loss (fsyncgate).
    pub sync_error: f64,
    /// Probability that a `read_at` returns its bytes with one bit flipped (a transient
    /// read error; the stored bytes are intact).
    pub read_bitflip: f64,
    /// At power loss, probability that a dirty page had been written back whole.
    pub writeback: f64,
    /// At power loss, probability that a dirty page not written back whole was torn
    /// (a random subset of its 512-byte sectors reached the media).
    pub torn_page: f64,
    /// Of a torn page's sectors that did not land, never held data and were being written,
    /// the probability each holds garbage (the media's leftovers) rather than zeros. Sectors
    /// that held data keep it: sector writes are atomic.
    pub torn_garbage: f64,
    /// Total bytes the disk holds; reserving space beyond it fails with `DiskError::Full`.
    pub capacity: Option<u64>,
}

/// Counters of what a `MemDisk` did, for reports and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskStats {
    pub writes: u64,
    pub syncs: u64,
    pub failed_writes: u64,
    pub failed_syncs: u64,
    pub bitflips: u64,
    /// Of `bitflips`, those in a consume queue file's bytes (whose 20-byte entries carry no
    /// checksum, as RocketMQ's: a flipped tag code silently filters a message out).
    pub queue_bitflips: u64,
    pub power_losses: u64,
    pub torn_pages: u64,
    /// Torn sectors left holding garbage.
    pub garbage_sectors: u64,
    /// Bytes zeroed by `Disk::prewrite`.
    pub prewritten: u64,
}

struct MemFile {
    volatile: Vec<u8>,
    durable: Vec<u8>,
    dirty: BTreeSet<usize>,
    /// Reserved byte ranges, sorted, disjoint and not touching: what the file occupies.
    reserved: Vec<(u64, u64)>,
    /// False while a file from `create_unsynced` may still vanish at power loss.
    durable_existence: bool,
    /// Sectors that reached the media at least once (zeros count: a synced page writes all
    /// its sectors). Only a sector never written can show garbage when torn.
    held: BTreeSet<usize>,
}

impl MemFile {
    fn zeroed(size: usize, durable_existence: bool) -> Self {
        MemFile {
            volatile: vec![0; size],
            durable: vec![0; size],
            dirty: BTreeSet::new(),
            reserved: Vec::new(),
            durable_existence,
            held: BTreeSet::new(),
        }
    }
    fn whole(data: &[u8]) -> Self {
        MemFile {
            volatile: data.to_vec(),
            durable: data.to_vec(),
            dirty: BTreeSet::new(),
            reserved: if data.is_empty() {
                Vec::new()
            } else {
                vec![(0, data.len() as u64)]
            },
            durable_existence: true,
            held: (0..data.len().div_ceil(SECTOR_SIZE)).collect(),
        }
    }
    fn reserved_bytes(&self) -> u64 {
        self.reserved.iter().map(|(lo, hi)| hi - lo).sum()
    }
    /// Whether `[lo, hi)` lies inside reserved space.
    fn is_reserved(&self, lo: u64, hi: u64) -> bool {
        lo == hi
            || self
                .reserved
                .iter()
                .any(|&(rlo, rhi)| rlo <= lo && hi <= rhi)
    }
    /// Bytes of `[lo, hi)` not yet reserved.
    fn unreserved_in(&self, lo: u64, hi: u64) -> u64 {
        let overlap: u64 = self
            .reserved
            .iter()
            .map(|&(rlo, rhi)| rhi.min(hi).saturating_sub(rlo.max(lo)))
            .sum();
        (hi - lo) - overlap
    }
    fn add_reserved(&mut self, lo: u64, hi: u64) {
        if lo >= hi {
            return;
        }
        let (mut lo, mut hi) = (lo, hi);
        self.reserved.retain(|&(rlo, rhi)| {
            if rhi < lo || rlo > hi {
                return true;
            }
            lo = lo.min(rlo);
            hi = hi.max(rhi);
            false
        });
        let at = self.reserved.partition_point(|&(rlo, _)| rlo < lo);
        self.reserved.insert(at, (lo, hi));
    }
    fn remove_reserved(&mut self, lo: u64, hi: u64) {
        let mut out = Vec::with_capacity(self.reserved.len() + 1);
        for &(rlo, rhi) in &self.reserved {
            if rhi <= lo || rlo >= hi {
                out.push((rlo, rhi));
                continue;
            }
            if rlo < lo {
                out.push((rlo, lo));
            }
            if rhi > hi {
                out.push((hi, rhi));
            }
        }
        self.reserved = out;
    }
    fn pages(offset: u64, len: u64) -> std::ops::Range<usize> {
        if len == 0 {
            return 0..0;
        }
        let first = (offset / PAGE_SIZE as u64) as usize;
        let last = ((offset + len - 1) / PAGE_SIZE as u64) as usize;
        first..last + 1
    }
    fn page_range(&self, page: usize) -> std::ops::Range<usize> {
        let start = page * PAGE_SIZE;
        start..(start + PAGE_SIZE).min(self.volatile.len())
    }
    fn persist_page(&mut self, page: usize) {
        let r = self.page_range(page);
        self.held
            .extend(r.start / SECTOR_SIZE..r.end.div_ceil(SECTOR_SIZE));
        self.durable[r.clone()].copy_from_slice(&self.volatile[r]);
    }
}

struct MemState {
    files: BTreeMap<String, MemFile>,
    handles: Vec<Option<String>>,
    plan: FaultPlan,
    rng: Xoshiro256PlusPlus,
    fail_writes: u32,
    fail_syncs: u32,
    stats: DiskStats,
    /// Disk operations left before the process using this disk dies (`arm_fuse`).
    fuse: Option<u64>,
    /// The fuse blew: the process is dead, every operation fails until a crash or power loss.
    blown: bool,
}

impl MemState {
    /// Counts one operation against the fuse; `Err` once the process is dead. `path` and
    /// `op` name the operation in the error.
    fn burn(&mut self, path: &str, op: &'static str) -> DiskResult<()> {
        if !self.blown {
            match &mut self.fuse {
                Some(0) => {
                    self.fuse = None;
                    self.blown = true;
                }
                Some(n) => *n -= 1,
                None => {}
            }
        }
        if self.blown {
            return Err(DiskError::Io {
                path: path.to_string(),
                op,
                detail: "the process died (simulated crash at this operation)".into(),
            });
        }
        Ok(())
    }
    /// Bytes reserved across all files: what a real disk would have allocated.
    fn used(&self) -> u64 {
        self.files.values().map(MemFile::reserved_bytes).sum()
    }
    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.rng.random_bool(p.min(1.0))
    }
    fn handle(&self, file: FileId) -> DiskResult<&str> {
        match self.handles.get(file.0 as usize) {
            Some(Some(path)) if self.files.contains_key(path) => Ok(path),
            _ => Err(DiskError::StaleHandle(file)),
        }
    }
    fn reserve(&self, path: &str, needed: u64, freed: u64) -> DiskResult<()> {
        if let Some(cap) = self.plan.capacity
            && self.used() - freed + needed > cap
        {
            return Err(DiskError::Full {
                path: path.to_string(),
                needed,
            });
        }
        Ok(())
    }
    fn new_handle(&mut self, path: &str) -> FileId {
        let id = self.handles.len() as u32;
        self.handles.push(Some(path.to_string()));
        FileId(id)
    }
}

/// A deterministic in-memory disk. Cloning yields another handle to the same disk, so the
/// simulator can keep the disk while the store that used it is dropped (a crash) and reopened.
#[derive(Clone)]
pub struct MemDisk {
    state: Arc<Mutex<MemState>>,
}

impl MemDisk {
    /// A perfect disk whose fault decisions (once a plan is set) derive from `seed`.
    pub fn new(seed: u64) -> Self {
        Self::with_plan(seed, FaultPlan::default())
    }

    pub fn with_plan(seed: u64, plan: FaultPlan) -> Self {
        let state = MemState {
            files: BTreeMap::new(),
            handles: Vec::new(),
            plan,
            rng: Xoshiro256PlusPlus::seed_from_u64(seed),
            fail_writes: 0,
            fail_syncs: 0,
            stats: DiskStats::default(),
            fuse: None,
            blown: false,
        };
        MemDisk {
            state: Arc::new(Mutex::new(state)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, MemState> {
        // A panic while holding the lock can only come from a bug in this file; the state is
        // still consistent enough to inspect, so recover the guard rather than cascade.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn create_file(
        &mut self,
        path: &str,
        size: u64,
        durable_existence: bool,
    ) -> DiskResult<FileId> {
        check_path(path)?;
        let mut s = self.lock();
        s.burn(path, "create")?;
        if s.files.contains_key(path) {
            return Err(DiskError::AlreadyExists { path: path.into() });
        }
        let size = usize::try_from(size).map_err(|_| DiskError::Full {
            path: path.into(),
            needed: size,
        })?;
        s.files
            .insert(path.to_string(), MemFile::zeroed(size, durable_existence));
        Ok(s.new_handle(path))
    }

    pub fn set_plan(&self, plan: FaultPlan) {
        self.lock().plan = plan;
    }

    pub fn plan(&self) -> FaultPlan {
        self.lock().plan.clone()
    }

    /// The next `n` writes fail (in addition to the plan's probability).
    pub fn fail_next_writes(&self, n: u32) {
        self.lock().fail_writes = n;
    }

    /// The next `n` syncs fail (in addition to the plan's probability).
    pub fn fail_next_syncs(&self, n: u32) {
        self.lock().fail_syncs = n;
    }

    pub fn stats(&self) -> DiskStats {
        self.lock().stats
    }

    /// The process using this disk dies at its `ops`-th next operation that changes the disk
    /// (a write, sync, create, remove, …): that one fails (a write may land a prefix of its
    /// bytes, as a process killed mid-copy leaves it), and so does every operation after,
    /// until `crash` or `power_loss` starts a new process. Crashes at any I/O point: mid
    /// flush, mid checkpoint, mid recovery.
    pub fn arm_fuse(&self, ops: u64) {
        let mut s = self.lock();
        s.fuse = Some(ops);
        s.blown = false;
    }

    /// Takes an armed fuse away (it did not blow).
    pub fn disarm_fuse(&self) {
        self.lock().fuse = None;
    }

    /// Whether the fuse blew: the process using this disk is dead.
    pub fn fuse_blown(&self) -> bool {
        self.lock().blown
    }

    /// A process crash: the page cache survives, open handles do not.
    pub fn crash(&self) {
        let mut s = self.lock();
        s.handles.clear();
        s.fuse = None;
        s.blown = false;
    }

    /// A power loss: each file keeps its durable bytes, plus the dirty pages the fault plan
    /// says had been written back (whole, or torn at sector granularity). Handles die.
    pub fn power_loss(&self) {
        let mut s = self.lock();
        let s = &mut *s;
        s.handles.clear();
        s.fuse = None;
        s.blown = false;
        s.stats.power_losses += 1;
        s.files.retain(|_, f| f.durable_existence);
        for file in s.files.values_mut() {
            let dirty = std::mem::take(&mut file.dirty);
            for page in dirty {
                if s.plan.writeback > 0.0 && s.rng.random_bool(s.plan.writeback.min(1.0)) {
                    file.persist_page(page);
                } else if s.plan.torn_page > 0.0 && s.rng.random_bool(s.plan.torn_page.min(1.0)) {
                    s.stats.torn_pages += 1;
                    let r = file.page_range(page);
                    let mut at = r.start;
                    while at < r.end {
                        let end = (at + SECTOR_SIZE).min(r.end);
                        if s.rng.random_bool(0.5) {
                            file.durable[at..end].copy_from_slice(&file.volatile[at..end]);
                            file.held.insert(at / SECTOR_SIZE);
                        } else if s.plan.torn_garbage > 0.0
                            && !file.held.contains(&(at / SECTOR_SIZE))
                            && file.durable[at..end] != file.volatile[at..end]
                            && s.rng.random_bool(s.plan.torn_garbage.min(1.0))
                        {
                            // Sector writes are atomic (old bytes or new, as disks promise):
                            // only a sector that never held data, caught being written, shows
                            // whatever the media had there before instead of zeros.
                            s.stats.garbage_sectors += 1;
                            s.rng.fill(&mut file.durable[at..end]);
                        }
                        at = end;
                    }
                }
            }
            file.volatile.copy_from_slice(&file.durable);
        }
    }

    /// Media corruption: flips one bit in both layers, as a decayed sector would.
    pub fn corrupt(&self, path: &str, offset: u64, bit: u8) -> DiskResult<()> {
        let mut s = self.lock();
        let file = s
            .files
            .get_mut(path)
            .ok_or_else(|| DiskError::NotFound { path: path.into() })?;
        check_bounds(path, "corrupt", offset, 1, file.volatile.len() as u64)?;
        let mask = 1u8 << (bit % 8);
        file.volatile[offset as usize] ^= mask;
        file.durable[offset as usize] ^= mask;
        Ok(())
    }

    /// Overwrites bytes in both layers, for tests that hand-craft damaged files.
    pub fn poke(&self, path: &str, offset: u64, data: &[u8]) -> DiskResult<()> {
        let mut s = self.lock();
        let file = s
            .files
            .get_mut(path)
            .ok_or_else(|| DiskError::NotFound { path: path.into() })?;
        check_bounds(
            path,
            "poke",
            offset,
            data.len() as u64,
            file.volatile.len() as u64,
        )?;
        let r = offset as usize..offset as usize + data.len();
        file.volatile[r.clone()].copy_from_slice(data);
        file.durable[r].copy_from_slice(data);
        Ok(())
    }

    /// Removes a file whatever the handles say, for tests of missing files.
    pub fn delete(&self, path: &str) -> bool {
        self.lock().files.remove(path).is_some()
    }

    /// Bytes reserved by every file together (what a real disk would have allocated).
    pub fn used_bytes(&self) -> u64 {
        self.lock().used()
    }

    /// Bytes reserved by one file, if it exists.
    pub fn reserved_bytes(&self, path: &str) -> Option<u64> {
        self.lock().files.get(path).map(MemFile::reserved_bytes)
    }

    /// Paths of every file, sorted.
    pub fn paths(&self) -> Vec<String> {
        self.lock().files.keys().cloned().collect()
    }

    /// A separate, perfect disk holding exactly what a power loss with no write-back would
    /// leave of this one now: for judging what a store on it promised durable without
    /// disturbing it.
    pub fn durable_image(&self) -> MemDisk {
        let s = self.lock();
        let image = MemDisk::new(0);
        {
            let mut i = image.lock();
            for (path, f) in s.files.iter().filter(|(_, f)| f.durable_existence) {
                let mut copy = MemFile::whole(&f.durable);
                copy.reserved = f.reserved.clone();
                i.files.insert(path.clone(), copy);
            }
        }
        image
    }

    /// The bytes a power loss with no write-back would leave.
    pub fn durable_bytes(&self, path: &str) -> Option<Vec<u8>> {
        self.lock().files.get(path).map(|f| f.durable.clone())
    }
}

impl Disk for MemDisk {
    fn create(&mut self, path: &str, size: u64) -> DiskResult<FileId> {
        self.create_file(path, size, true)
    }

    fn create_unsynced(&mut self, path: &str, size: u64) -> DiskResult<FileId> {
        self.create_file(path, size, false)
    }

    fn take_created(&mut self) -> CreatedSet {
        CreatedSet(
            self.lock()
                .files
                .iter()
                .filter(|(_, f)| !f.durable_existence)
                .map(|(path, _)| path.into())
                .collect(),
        )
    }

    fn sync_created_set(&mut self, set: &CreatedSet) -> DiskResult<()> {
        let mut s = self.lock();
        s.burn("(created files)", "sync directory")?;
        for path in &set.0 {
            // A file removed since it was taken has nothing left to make durable.
            if let Some(f) = path.to_str().and_then(|p| s.files.get_mut(p)) {
                f.durable_existence = true;
            }
        }
        Ok(())
    }

    fn reserve(&mut self, file: FileId, offset: u64, len: u64) -> DiskResult<()> {
        let mut s = self.lock();
        let path = s.handle(file)?.to_string();
        s.burn(&path, "reserve")?;
        let f = &s.files[&path];
        check_bounds(&path, "reserve", offset, len, f.volatile.len() as u64)?;
        let needed = f.unreserved_in(offset, offset + len);
        if needed > 0 {
            s.reserve(&path, needed, 0)?;
            let f = s.files.get_mut(&path).expect("handle checked");
            f.add_reserved(offset, offset + len);
        }
        Ok(())
    }

    fn grow(&mut self, path: &str, size: u64) -> DiskResult<()> {
        check_path(path)?;
        let mut s = self.lock();
        s.burn(path, "grow")?;
        let cur = match s.files.get(path) {
            Some(f) => f.volatile.len() as u64,
            None => return Err(DiskError::NotFound { path: path.into() }),
        };
        if size <= cur {
            return Ok(());
        }
        let f = s.files.get_mut(path).expect("checked");
        f.volatile.resize(size as usize, 0);
        f.durable.resize(size as usize, 0);
        Ok(())
    }

    fn open(&mut self, path: &str) -> DiskResult<FileId> {
        check_path(path)?;
        let mut s = self.lock();
        if !s.files.contains_key(path) {
            return Err(DiskError::NotFound { path: path.into() });
        }
        Ok(s.new_handle(path))
    }

    fn size(&self, file: FileId) -> DiskResult<u64> {
        let s = self.lock();
        let path = s.handle(file)?;
        Ok(s.files[path].volatile.len() as u64)
    }

    fn close(&mut self, file: FileId) {
        let mut s = self.lock();
        if let Some(slot) = s.handles.get_mut(file.0 as usize) {
            *slot = None;
        }
    }

    fn remove(&mut self, path: &str) -> DiskResult<()> {
        check_path(path)?;
        let mut s = self.lock();
        s.burn(path, "remove")?;
        if s.files.remove(path).is_none() {
            return Err(DiskError::NotFound { path: path.into() });
        }
        Ok(())
    }

    fn list(&self, dir: &str) -> DiskResult<Vec<String>> {
        let s = self.lock();
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        let names: BTreeSet<String> = s
            .files
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter_map(|(k, _)| k[prefix.len()..].split('/').next().map(str::to_string))
            .collect();
        Ok(names.into_iter().collect())
    }

    /// Really zeroes the range (in the page cache's copy), with no fault and no draw of the
    /// fault plan's randomness: on correct callers it changes nothing, and a store that
    /// prewrote over its own data would see it gone at once.
    fn prewrite(&mut self, file: FileId, offset: u64, len: u64) {
        let mut s = self.lock();
        let s = &mut *s;
        let Ok(path) = s.handle(file).map(str::to_string) else {
            return;
        };
        let f = s.files.get_mut(&path).expect("handle checked");
        let end = (offset + len).min(f.volatile.len() as u64);
        if offset < end {
            f.volatile[offset as usize..end as usize].fill(0);
            s.stats.prewritten += end - offset;
        }
    }

    fn write_at(&mut self, file: FileId, offset: u64, data: &[u8]) -> DiskResult<()> {
        let mut s = self.lock();
        let s = &mut *s;
        let path = s.handle(file)?.to_string();
        let len = s.files[&path].volatile.len() as u64;
        check_bounds(&path, "write", offset, data.len() as u64, len)?;
        if !s.files[&path].is_reserved(offset, offset + data.len() as u64) {
            // On MmapDisk this write could raise SIGBUS on a full disk: a bug in the caller.
            return Err(DiskError::Io {
                path,
                op: "write",
                detail: format!(
                    "{} bytes at {offset} outside reserved space (reserve before writing)",
                    data.len()
                ),
            });
        }
        s.stats.writes += 1;
        let was_dead = s.blown;
        let died = s.burn(&path, "write").is_err();
        let fail = if died {
            true
        } else if s.fail_writes > 0 {
            s.fail_writes -= 1;
            true
        } else {
            let p = s.plan.write_error;
            s.chance(p)
        };
        // A process that was already dead writes nothing; one that dies at this write may
        // have copied part of it.
        let landed = if was_dead {
            0
        } else if fail {
            s.rng.random_range(0..=data.len())
        } else {
            data.len()
        };
        let f = s.files.get_mut(&path).expect("handle checked");
        let start = offset as usize;
        f.volatile[start..start + landed].copy_from_slice(&data[..landed]);
        for page in MemFile::pages(offset, landed as u64) {
            f.dirty.insert(page);
        }
        if died {
            return Err(DiskError::Io {
                path,
                op: "write",
                detail: "the process died (simulated crash at this operation)".into(),
            });
        }
        if fail {
            s.stats.failed_writes += 1;
            return Err(DiskError::Io {
                path,
                op: "write",
                detail: "injected write error".into(),
            });
        }
        Ok(())
    }

    fn read_at(&self, file: FileId, offset: u64, len: usize) -> DiskResult<Bytes> {
        let mut s = self.lock();
        let s = &mut *s;
        let path = s.handle(file)?.to_string();
        if s.blown {
            return Err(DiskError::Io {
                path,
                op: "read",
                detail: "the process died (simulated crash)".into(),
            });
        }
        let f = &s.files[&path];
        check_bounds(&path, "read", offset, len as u64, f.volatile.len() as u64)?;
        let mut out = f.volatile[offset as usize..offset as usize + len].to_vec();
        let p = s.plan.read_bitflip;
        if len > 0 && s.chance(p) {
            let at = s.rng.random_range(0..len);
            out[at] ^= 1 << s.rng.random_range(0..8);
            s.stats.bitflips += 1;
            if path.starts_with(crate::consume_queue::CONSUMEQUEUE_DIR) {
                s.stats.queue_bitflips += 1;
            }
        }
        Ok(Bytes::from(out))
    }

    fn sync(&mut self, file: FileId, offset: u64, len: u64) -> DiskResult<()> {
        let mut s = self.lock();
        let s = &mut *s;
        let path = s.handle(file)?.to_string();
        let size = s.files[&path].volatile.len() as u64;
        check_bounds(&path, "sync", offset, len, size)?;
        s.burn(&path, "sync")?;
        s.stats.syncs += 1;
        let fail = if s.fail_syncs > 0 {
            s.fail_syncs -= 1;
            true
        } else {
            let p = s.plan.sync_error;
            s.chance(p)
        };
        let f = s.files.get_mut(&path).expect("handle checked");
        let pages: Vec<usize> = f
            .dirty
            .range(MemFile::pages(offset, len))
            .copied()
            .collect();
        for page in pages {
            f.dirty.remove(&page);
            // A failed sync still writes some pages back, and forgets the rest.
            if !fail || s.rng.random_bool(0.5) {
                f.persist_page(page);
            }
        }
        if fail {
            s.stats.failed_syncs += 1;
            return Err(DiskError::Io {
                path,
                op: "sync",
                detail: "injected sync error".into(),
            });
        }
        Ok(())
    }

    fn zero_range(&mut self, file: FileId, offset: u64, len: u64) -> DiskResult<()> {
        let mut s = self.lock();
        let path = s.handle(file)?.to_string();
        s.burn(&path, "zero")?;
        let f = s.files.get_mut(&path).expect("handle checked");
        check_bounds(&path, "zero", offset, len, f.volatile.len() as u64)?;
        let r = offset as usize..(offset + len) as usize;
        f.volatile[r.clone()].fill(0);
        f.durable[r.clone()].fill(0);
        // A punched hole: the range is no longer reserved, and its whole sectors hold nothing
        // (a torn write there may show garbage again); sectors it cuts into were written.
        f.remove_reserved(offset, offset + len);
        let (first_whole, end_whole) = (r.start.div_ceil(SECTOR_SIZE), r.end / SECTOR_SIZE);
        for sector in first_whole..end_whole.max(first_whole) {
            f.held.remove(&sector);
        }
        if r.start % SECTOR_SIZE != 0 {
            f.held.insert(r.start / SECTOR_SIZE);
        }
        if r.end % SECTOR_SIZE != 0 && len > 0 {
            f.held.insert(r.end / SECTOR_SIZE);
        }
        Ok(())
    }

    fn read_file(&self, path: &str) -> DiskResult<Option<Vec<u8>>> {
        check_path(path)?;
        Ok(self.lock().files.get(path).map(|f| f.volatile.clone()))
    }

    fn write_file_atomic(&mut self, path: &str, data: &[u8]) -> DiskResult<()> {
        check_path(path)?;
        let mut s = self.lock();
        s.burn(path, "atomic write")?;
        let freed = s.files.get(path).map_or(0, |f| f.volatile.len() as u64);
        s.reserve(path, data.len() as u64, freed)?;
        let fail = if s.fail_writes > 0 {
            s.fail_writes -= 1;
            true
        } else {
            let p = s.plan.write_error;
            s.chance(p)
        };
        if fail {
            s.stats.failed_writes += 1;
            return Err(DiskError::Io {
                path: path.into(),
                op: "atomic write",
                detail: "injected write error".into(),
            });
        }
        s.files.insert(path.to_string(), MemFile::whole(data));
        Ok(())
    }
}

//! `MmapDisk`: segment files memory-mapped with memmap2, for real runs.
//!
//! Appends are memcpys into the shared mapping (page-cache speed); reads hand out `Bytes`
//! that point into the mapping (no copy). Files are created sparse at their full size and
//! the store reserves their space in chunks ahead of its writes ([`Disk::reserve`]:
//! `fallocate`), so a full disk shows up as an error from `reserve`, never as SIGBUS in the
//! middle of a write, and a file costs disk in proportion to what it holds. Files are never
//! shrunk while mapped (a torn tail is punched out instead), so a `Bytes` handed out earlier
//! can never point past the end of its file.
//!
//! No descriptor is held between calls: a file is opened, mapped and closed again (a mapping
//! outlives its descriptor), so ten thousand topics do not run into the open-files limit.
//! Mappings are made lazily, on first access, and at most [`MmapDisk::max_mapped`] are kept:
//! past that the least recently used one (a clock sweep) is unmapped and remapped on its next
//! access, so mappings stay under the kernel's `vm.max_map_count`.
//!
//! Durability can be driven from another thread: [`MmapDisk::sync_handle`] gives a
//! `Send + Sync` handle that msyncs ranges of one file without touching the writer.

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use memmap2::{MmapOptions, MmapRaw};

use super::{CreatedSet, Disk, DiskError, DiskResult, FileId, check_bounds, check_path};

/// Files read in long sequential runs (consumers catching up on the commit log) keep the
/// kernel's readahead; every other file is mapped without it.
const SEQUENTIAL_PREFIX: &str = "commitlog/";
/// Past this many files, syncing them one by one (a journal commit each) costs more than
/// syncing the whole filesystem once.
const BULK_SYNC_FILES: usize = 64;
/// Mappings kept when `vm.max_map_count` cannot be read.
pub const DEFAULT_MAX_MAPPED_FILES: usize = 32_768;
/// Of the kernel's `vm.max_map_count`, what is left to the allocator, thread stacks,
/// libraries and mappings still held by `Bytes` in flight.
const MAP_COUNT_HEADROOM: usize = 16_384;

struct Mapping {
    map: Arc<MmapRaw>,
    /// The whole mapping as `Bytes`: reads are refcounted slices of it, no allocation.
    whole: Bytes,
}

struct MmapFile {
    path: String,
    /// The full path, ready for open(2): reopening allocates nothing (the put path reserves).
    cpath: CString,
    size: u64,
    /// `None` until first accessed, and again once evicted.
    mapping: RefCell<Option<Mapping>>,
    /// The clock's reference bit: set on every access, cleared as the hand passes.
    referenced: Cell<bool>,
}

/// Segment files under one root directory, each mapped whole while in use.
pub struct MmapDisk {
    root: PathBuf,
    files: Vec<Option<MmapFile>>,
    free: Vec<u32>,
    max_mapped: usize,
    mapped: Cell<usize>,
    hand: Cell<usize>,
    remaps: Cell<u64>,
    /// Directories holding files from `create_unsynced` whose entries are not yet durable.
    unsynced_dirs: BTreeSet<PathBuf>,
    /// The commit log segment being appended to and its descriptor: appends go through
    /// pwrite(2), not stores into the mapping. A store into a page of a fallocated file
    /// faults it in, and the fault zero-fills the page (with readahead, a whole window at
    /// once: the 10–20 ms p99 stalls under batches); pwrite of whole pages fills the page
    /// cache with no zeroing. Reads still go through the mapping (one page cache).
    appender: Option<(FileId, File)>,
}

/// Writes and makes durable ranges of one mapped file from any thread.
#[derive(Clone)]
pub struct MmapSyncHandle {
    map: Option<Arc<MmapRaw>>,
    path: String,
}

impl MmapSyncHandle {
    /// Copies `data` into the mapping at `offset`, from any thread: for writes the store
    /// hands off its task (staged consume queue entries), into space it reserved and does
    /// not read or write itself until the write is reported done.
    pub fn write(&self, offset: u64, data: &[u8]) -> DiskResult<()> {
        let Some(map) = &self.map else {
            return check_bounds(&self.path, "write", offset, data.len() as u64, 0);
        };
        check_bounds(
            &self.path,
            "write",
            offset,
            data.len() as u64,
            map.len() as u64,
        )?;
        // SAFETY: bounds checked; the store neither reads nor writes this range until the
        // write is reported done.
        unsafe { copy_into(map, offset, data) };
        Ok(())
    }

    /// msync(MS_SYNC) of `[offset, offset + len)`.
    pub fn sync(&self, offset: u64, len: u64) -> DiskResult<()> {
        let Some(map) = &self.map else { return Ok(()) };
        check_bounds(&self.path, "sync", offset, len, map.len() as u64)?;
        map.flush_range(offset as usize, len as usize)
            .map_err(|e| io_err(&self.path, "sync", e))
    }
}

/// A read-only view into a mapping that keeps the mapping alive.
struct MapSlice {
    map: Arc<MmapRaw>,
    offset: usize,
    len: usize,
}

impl AsRef<[u8]> for MapSlice {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: offset+len was bounds-checked against the mapping when the slice was made,
        // the mapping lives as long as `self.map`, and files are never shrunk while mapped.
        // Bytes below the store's write position are not rewritten while readers hold them.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(self.offset), self.len) }
    }
}

/// Copies `data` into a shared, writable mapping at `offset`.
///
/// # Safety
/// `offset + data.len()` is within the mapping, and nothing reads or writes that range
/// meanwhile (the mapping itself lives as long as the borrow).
unsafe fn copy_into(map: &MmapRaw, offset: u64, data: &[u8]) {
    // SAFETY: the caller's bounds and exclusivity; the pointer is the mapping's own.
    unsafe {
        std::ptr::copy_nonoverlapping(
            data.as_ptr(),
            map.as_mut_ptr().add(offset as usize),
            data.len(),
        );
    }
}

fn io_err(path: &str, op: &'static str, e: io::Error) -> DiskError {
    if e.raw_os_error() == Some(libc::ENOSPC) {
        return DiskError::Full {
            path: path.to_string(),
            needed: 0,
        };
    }
    DiskError::Io {
        path: path.to_string(),
        op,
        detail: e.to_string(),
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Write a temporary file, sync it, rename it over `full`, sync the directory: after a crash
/// at any point the file holds its old content or `data`.
fn atomic_replace(path: &str, full: &Path, data: &[u8]) -> DiskResult<()> {
    let parent = full.parent().unwrap_or(Path::new(".")).to_path_buf();
    fs::create_dir_all(&parent).map_err(|e| io_err(path, "create dir", e))?;
    let tmp = full.with_file_name(format!(
        "{}.tmp",
        full.file_name().and_then(|n| n.to_str()).unwrap_or("file")
    ));
    let write = || -> io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, full)?;
        sync_dir(&parent)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io_err(path, "atomic write", e)
    })
}

/// Allocates the blocks of `[offset, offset + len)` without changing the file's size.
/// Filesystems without fallocate keep the file sparse (as before reservations existed).
#[cfg(target_os = "linux")]
fn allocate(file: &File, offset: u64, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: plain syscall on a valid descriptor. fallocate(2) itself, not glibc's
    // posix_fallocate, whose fallback writes zeros into every block.
    let rc = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_KEEP_SIZE,
            offset as libc::off_t,
            len as libc::off_t,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EOPNOTSUPP) => Ok(()),
        _ => Err(e),
    }
}

/// Starts writing `[offset, offset + len)` out without waiting for it
/// (sync_file_range(SYNC_FILE_RANGE_WRITE)); elsewhere the kernel's writeback does it later.
#[cfg(target_os = "linux")]
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: plain syscall on a valid descriptor; advisory, its result is not needed.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_: &File, _: u64, _: u64) {}

#[cfg(not(target_os = "linux"))]
fn allocate(_: &File, _: u64, _: u64) -> io::Result<()> {
    Ok(())
}

/// Zeroes a range by deallocating it: metadata only, however large. `false` if the
/// filesystem cannot punch holes.
#[cfg(target_os = "linux")]
fn punch_hole(file: &File, offset: u64, len: u64) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: plain syscall on a valid descriptor.
    let rc = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset as libc::off_t,
            len as libc::off_t,
        )
    };
    if rc != 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EOPNOTSUPP) => Ok(false),
            _ => Err(e),
        };
    }
    Ok(true)
}

#[cfg(not(target_os = "linux"))]
fn punch_hole(_: &File, _: u64, _: u64) -> io::Result<bool> {
    Ok(false)
}

/// Makes everything written to the filesystem holding `root` durable (syncfs(2)).
fn sync_filesystem_at(root: &Path) -> DiskResult<()> {
    let shown = || root.display().to_string();
    let dir = File::open(root).map_err(|e| io_err(&shown(), "open root", e))?;
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: plain syscall on a valid descriptor.
        if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
            let e = io::Error::last_os_error();
            return Err(io_err(&shown(), "syncfs", e));
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        // SAFETY: sync(2) takes no arguments and cannot fail.
        unsafe { libc::sync() };
        drop(dir);
        Ok(())
    }
}

/// Half of what is left of `vm.max_map_count` after the headroom, on Linux.
fn default_max_mapped() -> usize {
    fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .map_or(DEFAULT_MAX_MAPPED_FILES, |n| {
            n.saturating_sub(MAP_COUNT_HEADROOM).max(1024)
        })
}

impl MmapDisk {
    /// A disk rooted at `root`, which is created if missing. Keeps at most as many mappings
    /// as `vm.max_map_count` leaves room for (see [`MmapDisk::set_max_mapped`]).
    pub fn open_root(root: impl Into<PathBuf>) -> DiskResult<Self> {
        let root = root.into();
        fs::create_dir_all(&root)
            .map_err(|e| io_err(&root.display().to_string(), "create root", e))?;
        Ok(MmapDisk {
            root,
            files: Vec::new(),
            free: Vec::new(),
            max_mapped: default_max_mapped(),
            mapped: Cell::new(0),
            hand: Cell::new(0),
            remaps: Cell::new(0),
            unsynced_dirs: BTreeSet::new(),
            appender: None,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The most files kept mapped at once.
    pub fn max_mapped(&self) -> usize {
        self.max_mapped
    }

    /// Caps the files kept mapped at once (at least 1); the least recently used are unmapped
    /// first. Takes effect at the next mapping.
    pub fn set_max_mapped(&mut self, max: usize) {
        self.max_mapped = max.max(1);
    }

    /// Files mapped right now.
    pub fn mapped(&self) -> usize {
        self.mapped.get()
    }

    /// How many times a file was mapped (first access, or again after eviction).
    pub fn maps_made(&self) -> u64 {
        self.remaps.get()
    }

    fn full(&self, path: &str) -> DiskResult<PathBuf> {
        check_path(path)?;
        Ok(self.root.join(path))
    }

    fn get(&self, file: FileId) -> DiskResult<&MmapFile> {
        self.files
            .get(file.0 as usize)
            .and_then(Option::as_ref)
            .ok_or(DiskError::StaleHandle(file))
    }

    fn insert(&mut self, f: MmapFile) -> FileId {
        if let Some(i) = self.free.pop() {
            self.files[i as usize] = Some(f);
            return FileId(i);
        }
        self.files.push(Some(f));
        FileId(self.files.len() as u32 - 1)
    }

    fn release(&mut self, i: usize) {
        if self
            .appender
            .as_ref()
            .is_some_and(|(id, _)| id.0 as usize == i)
        {
            self.appender = None;
        }
        if let Some(f) = self.files.get_mut(i).and_then(Option::take) {
            if f.mapping.borrow().is_some() {
                self.mapped.set(self.mapped.get() - 1);
            }
            self.free.push(i as u32);
        }
    }

    /// Reopens an open file's descriptor for the length of a call, allocating nothing.
    fn reopen(f: &MmapFile) -> DiskResult<File> {
        use std::os::fd::FromRawFd;
        // SAFETY: a NUL-terminated path; the descriptor returned is owned by the `File`.
        let fd = unsafe { libc::open(f.cpath.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        if fd < 0 {
            let e = io::Error::last_os_error();
            return Err(match e.kind() {
                io::ErrorKind::NotFound => DiskError::NotFound {
                    path: f.path.clone(),
                },
                _ => io_err(&f.path, "open", e),
            });
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        Ok(unsafe { File::from_raw_fd(fd) })
    }

    /// Opens `path` for reading and writing; the descriptor lives only as long as the call.
    fn open_file(&self, path: &str) -> DiskResult<File> {
        let full = self.full(path)?;
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(&full)
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => DiskError::NotFound { path: path.into() },
                _ => io_err(path, "open", e),
            })
    }

    /// Unmaps the least recently used mapping while the cap is reached (a clock sweep:
    /// amortized constant time, and nothing to update on the hot path but one bit).
    fn make_room(&self, keep: usize) {
        let n = self.files.len();
        let mut steps = 0;
        while self.mapped.get() >= self.max_mapped && steps < 2 * n + 1 {
            steps += 1;
            let i = self.hand.get() % n.max(1);
            self.hand.set(i + 1);
            let Some(f) = self.files.get(i).and_then(Option::as_ref) else {
                continue;
            };
            if i == keep || f.mapping.borrow().is_none() {
                continue;
            }
            if f.referenced.replace(false) {
                continue;
            }
            // Dirty pages stay in the page cache: unmapping loses nothing.
            *f.mapping.borrow_mut() = None;
            self.mapped.set(self.mapped.get() - 1);
        }
    }

    /// The file's mapping, made now if it has none. Marks the file recently used.
    fn mapping(
        &self,
        file: FileId,
    ) -> DiskResult<(&MmapFile, std::cell::Ref<'_, Option<Mapping>>)> {
        let f = self.get(file)?;
        f.referenced.set(true);
        if f.size > 0 && f.mapping.borrow().is_none() {
            self.make_room(file.0 as usize);
            let fd = Self::reopen(f)?;
            // SAFETY: the file is ours alone under the store root; it is never truncated
            // below `size` while mapped (see the module docs).
            let map = Arc::new(
                MmapOptions::new()
                    .len(f.size as usize)
                    .map_raw(&fd)
                    .map_err(|e| io_err(&f.path, "mmap", e))?,
            );
            drop(fd);
            if !f.path.starts_with(SEQUENTIAL_PREFIX) {
                // A first write into a page of a sparse file faults it in; with readahead
                // the kernel zero-fills a whole window (up to megabytes) per new queue file.
                // Queue and index files are touched a page at a time: no readahead.
                map.advise(memmap2::Advice::Random)
                    .map_err(|e| io_err(&f.path, "madvise", e))?;
            }
            let whole = Bytes::from_owner(MapSlice {
                map: map.clone(),
                offset: 0,
                len: f.size as usize,
            });
            *f.mapping.borrow_mut() = Some(Mapping { map, whole });
            self.mapped.set(self.mapped.get() + 1);
            self.remaps.set(self.remaps.get() + 1);
        }
        Ok((f, f.mapping.borrow()))
    }

    fn add(&mut self, path: &str, size: u64) -> DiskResult<FileId> {
        use std::os::unix::ffi::OsStrExt;
        let full = self.full(path)?;
        let cpath = CString::new(full.as_os_str().as_bytes()).map_err(|_| DiskError::BadPath {
            path: path.to_string(),
            why: "NUL in the path",
        })?;
        Ok(self.insert(MmapFile {
            path: path.to_string(),
            cpath,
            size,
            mapping: RefCell::new(None),
            referenced: Cell::new(false),
        }))
    }

    /// Creates the file sparse at `size`; `durable` makes its existence durable now.
    fn create_file(&mut self, path: &str, size: u64, durable: bool) -> DiskResult<FileId> {
        let full = self.full(path)?;
        let parent = full.parent().unwrap_or(&self.root).to_path_buf();
        if !parent.is_dir() {
            fs::create_dir_all(&parent).map_err(|e| io_err(path, "create dir", e))?;
            // New directories need their own entries made durable too.
            let mut dir = parent.as_path();
            while dir != self.root {
                let Some(up) = dir.parent() else { break };
                self.unsynced_dirs.insert(up.to_path_buf());
                dir = up;
            }
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&full)
            .map_err(|e| match e.kind() {
                io::ErrorKind::AlreadyExists => DiskError::AlreadyExists { path: path.into() },
                _ => io_err(path, "create", e),
            })?;
        let made = file.set_len(size).and_then(|_| {
            if durable {
                file.sync_all()?;
                for dir in std::mem::take(&mut self.unsynced_dirs).iter().rev() {
                    sync_dir(dir)?;
                }
                sync_dir(&parent)
            } else {
                self.unsynced_dirs.insert(parent.clone());
                Ok(())
            }
        });
        if let Err(e) = made {
            let _ = fs::remove_file(&full);
            return Err(io_err(path, "create", e));
        }
        self.add(path, size)
    }

    /// syncfs(2): every dirty page (mapped ones included) and all metadata of the
    /// filesystem holding the root, in one journal commit instead of one per file.
    fn sync_filesystem(&self) -> DiskResult<()> {
        sync_filesystem_at(&self.root)
    }

    /// For more ranges than a sync each is worth (see `sync_ranges`): the work that makes
    /// them durable as one filesystem sync, to run on another thread. `None` for few ranges.
    pub fn bulk_sync_job(
        &self,
        ranges: &[(FileId, u64, u64)],
    ) -> DiskResult<Option<impl FnOnce() -> DiskResult<()> + Send + use<>>> {
        if ranges.len() <= BULK_SYNC_FILES {
            return Ok(None);
        }
        for &(file, offset, len) in ranges {
            let f = self.get(file)?;
            check_bounds(&f.path, "sync", offset, len, f.size)?;
        }
        let root = self.root.clone();
        Ok(Some(move || sync_filesystem_at(&root)))
    }

    /// The work that makes a `CreatedSet` durable, to run on another thread: an fsync of each
    /// directory, or one filesystem sync past `BULK_SYNC_FILES` of them.
    pub fn created_job(
        root: &Path,
        set: &CreatedSet,
    ) -> impl FnOnce() -> DiskResult<()> + Send + use<> {
        let root = root.to_path_buf();
        let dirs = set.0.clone();
        move || {
            if dirs.len() > BULK_SYNC_FILES {
                return sync_filesystem_at(&root);
            }
            for dir in &dirs {
                sync_dir(dir).map_err(|e| io_err(&dir.display().to_string(), "sync dir", e))?;
            }
            Ok(())
        }
    }

    /// The work that replaces small file `path` with `data` atomically and durably, to run
    /// off the machine's task (the same steps as `write_file_atomic`).
    pub fn atomic_write_job(
        &self,
        path: &str,
        data: Bytes,
    ) -> DiskResult<impl FnOnce() -> DiskResult<()> + Send + use<>> {
        let full = self.full(path)?;
        let path = path.to_string();
        Ok(move || atomic_replace(&path, &full, &data))
    }

    /// A handle that can msync this file from another thread.
    pub fn sync_handle(&self, file: FileId) -> DiskResult<MmapSyncHandle> {
        let (f, mapping) = self.mapping(file)?;
        Ok(MmapSyncHandle {
            map: mapping.as_ref().map(|m| m.map.clone()),
            path: f.path.clone(),
        })
    }
}

impl Disk for MmapDisk {
    fn create(&mut self, path: &str, size: u64) -> DiskResult<FileId> {
        self.create_file(path, size, true)
    }

    fn create_unsynced(&mut self, path: &str, size: u64) -> DiskResult<FileId> {
        self.create_file(path, size, false)
    }

    fn take_created(&mut self) -> CreatedSet {
        CreatedSet(
            std::mem::take(&mut self.unsynced_dirs)
                .into_iter()
                .collect(),
        )
    }

    fn sync_created_set(&mut self, set: &CreatedSet) -> DiskResult<()> {
        Self::created_job(&self.root, set)()
    }

    fn reserve(&mut self, file: FileId, offset: u64, len: u64) -> DiskResult<()> {
        let f = self.get(file)?;
        check_bounds(&f.path, "reserve", offset, len, f.size)?;
        if len == 0 {
            return Ok(());
        }
        let fd = Self::reopen(f)?;
        allocate(&fd, offset, len).map_err(|e| match io_err(&f.path, "reserve", e) {
            DiskError::Full { path, .. } => DiskError::Full { path, needed: len },
            other => other,
        })
    }

    fn grow(&mut self, path: &str, size: u64) -> DiskResult<()> {
        let file = self.open_file(path)?;
        let cur = file.metadata().map_err(|e| io_err(path, "stat", e))?.len();
        if size <= cur {
            return Ok(());
        }
        file.set_len(size)
            .and_then(|_| file.sync_all())
            .map_err(|e| io_err(path, "grow", e))
    }

    fn open(&mut self, path: &str) -> DiskResult<FileId> {
        let file = self.open_file(path)?;
        let size = file.metadata().map_err(|e| io_err(path, "stat", e))?.len();
        self.add(path, size)
    }

    fn size(&self, file: FileId) -> DiskResult<u64> {
        Ok(self.get(file)?.size)
    }

    fn close(&mut self, file: FileId) {
        self.release(file.0 as usize);
    }

    fn remove(&mut self, path: &str) -> DiskResult<()> {
        let full = self.full(path)?;
        let stale: Vec<usize> = (0..self.files.len())
            .filter(|&i| self.files[i].as_ref().is_some_and(|f| f.path == path))
            .collect();
        for i in stale {
            self.release(i);
        }
        fs::remove_file(&full).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => DiskError::NotFound { path: path.into() },
            _ => io_err(path, "remove", e),
        })?;
        if let Some(parent) = full.parent() {
            sync_dir(parent).map_err(|e| io_err(path, "sync dir", e))?;
        }
        Ok(())
    }

    fn list(&self, dir: &str) -> DiskResult<Vec<String>> {
        let full = if dir.is_empty() {
            self.root.clone()
        } else {
            self.full(dir)?
        };
        let entries = match fs::read_dir(&full) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(dir, "list", e)),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_err(dir, "list", e))?;
            match entry.file_name().into_string() {
                Ok(name) => names.push(name),
                Err(raw) => {
                    return Err(DiskError::BadPath {
                        path: format!("{dir}/{raw:?}"),
                        why: "not UTF-8",
                    });
                }
            }
        }
        names.sort();
        Ok(names)
    }

    fn write_at(&mut self, file: FileId, offset: u64, data: &[u8]) -> DiskResult<()> {
        let f = self.get(file)?;
        check_bounds(&f.path, "write", offset, data.len() as u64, f.size)?;
        if data.is_empty() {
            return Ok(());
        }
        if f.path.starts_with(SEQUENTIAL_PREFIX) {
            use std::os::unix::fs::FileExt;
            if self.appender.as_ref().is_none_or(|(id, _)| *id != file) {
                let fd = Self::reopen(self.get(file)?)?;
                self.appender = Some((file, fd));
            }
            let (_, fd) = self.appender.as_ref().expect("just set");
            return match fd.write_all_at(data, offset) {
                Ok(()) => Ok(()),
                Err(e) => Err(io_err(&self.get(file)?.path, "write", e)),
            };
        }
        let (_, mapping) = self.mapping(file)?;
        let map = &mapping.as_ref().expect("non-empty file is mapped").map;
        // SAFETY: bounds checked above. Readers only look below the store's write position,
        // which this range is not (or, during recovery, no reader exists yet).
        unsafe { copy_into(map, offset, data) };
        Ok(())
    }

    fn prewrite(&mut self, file: FileId, offset: u64, len: u64) {
        use std::os::unix::fs::FileExt;
        static ZEROS: [u8; 256 << 10] = [0; 256 << 10];
        let Ok(f) = self.get(file) else { return };
        if len == 0 || check_bounds(&f.path, "prewrite", offset, len, f.size).is_err() {
            return;
        }
        // Through the appender's descriptor when it is this file (the usual case: the
        // segment being appended to), else a descriptor of its own for this call.
        let own;
        let fd = match &self.appender {
            Some((id, fd)) if *id == file => fd,
            _ => match Self::reopen(f) {
                Ok(fd) => {
                    own = fd;
                    &own
                }
                Err(_) => return,
            },
        };
        let mut at = offset;
        while at < offset + len {
            let n = (offset + len - at).min(ZEROS.len() as u64);
            // Advisory (see the trait): a failed write of zeros leaves zeros-or-nothing.
            if fd.write_all_at(&ZEROS[..n as usize], at).is_err() {
                return;
            }
            at += n;
        }
        start_writeback(fd, offset, len);
    }

    fn read_at(&self, file: FileId, offset: u64, len: usize) -> DiskResult<Bytes> {
        let f = self.get(file)?;
        check_bounds(&f.path, "read", offset, len as u64, f.size)?;
        if len == 0 {
            return Ok(Bytes::new());
        }
        let (_, mapping) = self.mapping(file)?;
        let whole = &mapping.as_ref().expect("non-empty file is mapped").whole;
        Ok(whole.slice(offset as usize..offset as usize + len))
    }

    fn sync(&mut self, file: FileId, offset: u64, len: u64) -> DiskResult<()> {
        let f = self.get(file)?;
        check_bounds(&f.path, "sync", offset, len, f.size)?;
        if len == 0 {
            return Ok(());
        }
        // An unmapped file may still have dirty pages in the page cache: map it to msync
        // them (a descriptor's fdatasync would flush the whole file, not the range).
        let (_, mapping) = self.mapping(file)?;
        if let Some(m) = mapping.as_ref() {
            m.map
                .flush_range(offset as usize, len as usize)
                .map_err(|e| io_err(&f.path, "sync", e))?;
        }
        Ok(())
    }

    fn sync_ranges(&mut self, ranges: &[(FileId, u64, u64)]) -> DiskResult<()> {
        if ranges.len() <= BULK_SYNC_FILES {
            for &(file, offset, len) in ranges {
                self.sync(file, offset, len)?;
            }
            return Ok(());
        }
        for &(file, offset, len) in ranges {
            let f = self.get(file)?;
            check_bounds(&f.path, "sync", offset, len, f.size)?;
        }
        self.sync_filesystem()
    }

    fn zero_range(&mut self, file: FileId, offset: u64, len: u64) -> DiskResult<()> {
        let f = self.get(file)?;
        check_bounds(&f.path, "zero", offset, len, f.size)?;
        if len == 0 {
            return Ok(());
        }
        let fd = Self::reopen(f)?;
        let punched = punch_hole(&fd, offset, len).map_err(|e| io_err(&f.path, "zero", e))?;
        if !punched {
            let (_, mapping) = self.mapping(file)?;
            let map = &mapping.as_ref().expect("non-empty file is mapped").map;
            // SAFETY: bounds checked; only recovery zeroes, before any reader exists. Without
            // hole punching there is no fallocate either: the file was never sparse-reserved.
            unsafe {
                std::ptr::write_bytes(map.as_mut_ptr().add(offset as usize), 0, len as usize)
            };
            map.flush_range(offset as usize, len as usize)
                .map_err(|e| io_err(&f.path, "zero", e))?;
        }
        fd.sync_data().map_err(|e| io_err(&f.path, "zero", e))
    }

    fn read_file(&self, path: &str) -> DiskResult<Option<Vec<u8>>> {
        let full = self.full(path)?;
        match fs::read(&full) {
            Ok(data) => Ok(Some(data)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(path, "read", e)),
        }
    }

    fn write_file_atomic(&mut self, path: &str, data: &[u8]) -> DiskResult<()> {
        let full = self.full(path)?;
        atomic_replace(path, &full, data)
    }
}

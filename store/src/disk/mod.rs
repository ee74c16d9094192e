//! The `Disk` trait: the only way the store touches storage.
//!
//! Files are fixed-size, sparse segment files, reserved in chunks as they fill, addressed by a `/`-separated path relative
//! to the store root, plus small whole files (config, checkpoint) replaced atomically. Writes
//! land in a volatile layer (the page cache); only `sync` makes a range durable. Two
//! implementations: [`MmapDisk`](crate::MmapDisk) for real runs and [`MemDisk`](crate::MemDisk)
//! for tests and the simulator, which keeps volatile and durable bytes apart and injects faults.

pub mod mem;
pub mod mmap;
pub mod off_task;

use bytes::Bytes;

/// A handle to an open segment file. Valid until the file is closed or removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileId(pub u32);

/// What went wrong with a disk operation. Every variant names the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiskError {
    #[error("{path}: no such file")]
    NotFound { path: String },
    #[error("{path}: already exists")]
    AlreadyExists { path: String },
    #[error("{path}: disk full (needed {needed} bytes)")]
    Full { path: String, needed: u64 },
    #[error("{path}: {op} of {len} bytes at {offset} is outside the file's {size} bytes")]
    OutOfBounds {
        path: String,
        op: &'static str,
        offset: u64,
        len: u64,
        size: u64,
    },
    #[error("{path}: {op} failed: {detail}")]
    Io {
        path: String,
        op: &'static str,
        detail: String,
    },
    #[error("invalid path {path:?}: {why}")]
    BadPath { path: String, why: &'static str },
    #[error("stale file handle {0:?}")]
    StaleHandle(FileId),
}

pub type DiskResult<T> = Result<T, DiskError>;

/// Storage as the store sees it. Implementations must be deterministic given their inputs
/// (MemDisk) or as durable as the OS allows (MmapDisk); see each method for the contract.
///
/// Space is reserved explicitly: a file is created at its full size but sparse, and a write
/// may only touch bytes that [`Disk::reserve`] covered first. On `MmapDisk` a write through
/// the mapping into unreserved space would raise SIGBUS on a full disk; reserving first turns
/// a full disk into an error the caller can answer. `MemDisk` refuses such writes outright.
/// Files (or, for `MmapDisk`, directories) whose existence is not durable yet: taken from a
/// disk by `Disk::take_created`, made durable by `Disk::sync_created_set` or a driver's job.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreatedSet(pub(crate) Vec<std::path::PathBuf>);

impl CreatedSet {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// Adds another set (a taken set not synced yet stays the taker's).
    pub fn extend(&mut self, other: CreatedSet) {
        self.0.extend(other.0);
        self.0.sort();
        self.0.dedup();
    }
    pub fn clear(&mut self) {
        self.0.clear();
    }
}

pub trait Disk {
    /// Creates a zero-filled file of exactly `size` bytes with no space reserved yet, its
    /// existence durable. Missing parent directories are created.
    fn create(&mut self, path: &str, size: u64) -> DiskResult<FileId>;
    /// `create`, except that the file's existence becomes durable only at the next
    /// [`Disk::sync_created_set`] of a later [`Disk::take_created`]: for derived files made on the put path (consume queues), where
    /// an fsync of the file and its directory per new file would stall every producer.
    fn create_unsynced(&mut self, path: &str, size: u64) -> DiskResult<FileId>;
    /// Takes the files created by `create_unsynced` so far, whose existence is not durable
    /// yet, for `sync_created_set` to make durable later (a checkpoint's driver, off the
    /// writer's task). Once taken, they are the taker's to sync.
    fn take_created(&mut self) -> CreatedSet;
    /// Makes the existence of the files in a set from `take_created` durable.
    fn sync_created_set(&mut self, set: &CreatedSet) -> DiskResult<()>;
    /// Reserves space for `[offset, offset + len)` of an open file, so that writes there
    /// cannot fail for lack of space. Reserving reserved space again is cheap and harmless.
    /// Fails with [`DiskError::Full`] when the disk cannot hold it; nothing is changed then.
    fn reserve(&mut self, file: FileId, offset: u64, len: u64) -> DiskResult<()>;
    /// Extends an existing, closed file to `size` bytes: zero-filled, unreserved, durable.
    /// Used to restore a segment that was cut short by hand or by a crash mid-creation.
    fn grow(&mut self, path: &str, size: u64) -> DiskResult<()>;
    /// Opens an existing file.
    fn open(&mut self, path: &str) -> DiskResult<FileId>;
    /// Size in bytes of an open file.
    fn size(&self, file: FileId) -> DiskResult<u64>;
    /// Releases a handle. Bytes previously returned by `read_at` stay valid.
    fn close(&mut self, file: FileId);
    /// Removes a file (durably). Open handles to it become stale.
    fn remove(&mut self, path: &str) -> DiskResult<()>;
    /// Names (not paths) of the entries directly inside `dir`, files and directories alike,
    /// sorted. A missing directory lists as empty.
    fn list(&self, dir: &str) -> DiskResult<Vec<String>>;
    /// Copies `data` into the file at `offset` (volatile until synced). The range must have
    /// been reserved (see the trait docs).
    fn write_at(&mut self, file: FileId, offset: u64, data: &[u8]) -> DiskResult<()>;
    /// Reads `len` bytes at `offset`. On `MmapDisk` the result points into the mapping
    /// (no copy); the caller must verify checksums where corruption matters.
    fn read_at(&self, file: FileId, offset: u64, len: usize) -> DiskResult<Bytes>;
    /// Makes `[offset, offset + len)` durable. On failure the range's durability is unknown:
    /// some of it may be lost at power loss even if a later sync succeeds (fsyncgate).
    fn sync(&mut self, file: FileId, offset: u64, len: u64) -> DiskResult<()>;
    /// `sync` of many ranges at once (a checkpoint of thousands of consume queues). An
    /// implementation may make more than these ranges durable, as one cheaper operation.
    fn sync_ranges(&mut self, ranges: &[(FileId, u64, u64)]) -> DiskResult<()> {
        for &(file, offset, len) in ranges {
            self.sync(file, offset, len)?;
        }
        Ok(())
    }
    /// Writes zeros over `[offset, offset + len)`, which holds no data and will get none
    /// before a later write (the commit log calls it ahead of its appends), and starts
    /// writing them out. Zeros are what such a range reads as already, so this changes no
    /// content: on a real disk it makes the blocks written before data lands there, and a
    /// later sync of the data need not also record the blocks' conversion from allocated to
    /// written (a metadata write per sync otherwise). Advisory: a disk may do nothing, and
    /// a failure changes nothing the store relies on.
    fn prewrite(&mut self, _file: FileId, _offset: u64, _len: u64) {}
    /// Durably zeroes `[offset, offset + len)`; used to erase a torn tail at recovery so that
    /// stale records can never resurface after a later power loss. The range may lose its
    /// reservation (a punched hole): reserve again before writing there.
    fn zero_range(&mut self, file: FileId, offset: u64, len: u64) -> DiskResult<()>;
    /// Reads a whole small file; `Ok(None)` if it does not exist.
    fn read_file(&self, path: &str) -> DiskResult<Option<Vec<u8>>>;
    /// Replaces a whole small file atomically and durably: after a crash at any point the
    /// file holds either its old content or `data`, never a mix.
    fn write_file_atomic(&mut self, path: &str, data: &[u8]) -> DiskResult<()>;
}

/// Reads until two consecutive reads agree, so that a transient read error cannot steer
/// recovery of data that has no checksum of its own (consume queues, the index).
pub fn stable_read_at<D: Disk + ?Sized>(
    disk: &D,
    file: FileId,
    offset: u64,
    len: usize,
) -> DiskResult<Bytes> {
    const ATTEMPTS: usize = 8;
    let mut last = disk.read_at(file, offset, len)?;
    for _ in 0..ATTEMPTS {
        let again = disk.read_at(file, offset, len)?;
        if again == last {
            return Ok(again);
        }
        last = again;
    }
    Err(DiskError::Io {
        path: format!("{file:?}"),
        op: "read",
        detail: format!("{ATTEMPTS} reads of {len} bytes at {offset} never agreed"),
    })
}

/// Rejects paths that could escape the store root or that name nothing.
pub(crate) fn check_path(path: &str) -> DiskResult<()> {
    let bad = |why| {
        Err(DiskError::BadPath {
            path: path.to_string(),
            why,
        })
    };
    if path.is_empty() {
        return bad("empty");
    }
    if path.starts_with('/') {
        return bad("absolute");
    }
    for part in path.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return bad("empty, '.' or '..' component");
        }
        if part.contains('\0') || part.contains('\\') {
            return bad("NUL or backslash in a component");
        }
    }
    Ok(())
}

pub(crate) fn check_bounds(
    path: &str,
    op: &'static str,
    offset: u64,
    len: u64,
    size: u64,
) -> DiskResult<()> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(DiskError::OutOfBounds {
            path: path.to_string(),
            op,
            offset,
            len,
            size,
        }),
    }
}

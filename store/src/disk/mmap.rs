//! `MmapDisk`: segment files memory-mapped with memmap2, for real runs.
//!
//! Appends are memcpys into the shared mapping (page-cache speed); reads hand out `Bytes`
//! that point into the mapping (no copy). Files are preallocated with `posix_fallocate` so
//! that a full disk shows up as an error from `create`, never as SIGBUS in the middle of a
//! write. Files are never shrunk while mapped (a torn tail is zeroed instead), so a `Bytes`
//! handed out earlier can never point past the end of its file.
//!
//! Durability can be driven from another thread: [`MmapDisk::sync_handle`] gives a
//! `Send + Sync` handle that msyncs ranges of one file without touching the writer.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use memmap2::MmapRaw;

use super::{Disk, DiskError, DiskResult, FileId, check_bounds, check_path};

struct MmapFile {
    path: String,
    file: File,
    map: Option<Arc<MmapRaw>>,
    /// The whole mapping as `Bytes`: reads are refcounted slices of it, no allocation.
    whole: Bytes,
    size: u64,
}

/// Segment files under one root directory, each mapped whole.
pub struct MmapDisk {
    root: PathBuf,
    files: Vec<Option<MmapFile>>,
}

/// Makes ranges of one mapped file durable from any thread.
#[derive(Clone)]
pub struct MmapSyncHandle {
    map: Option<Arc<MmapRaw>>,
    path: String,
}

impl MmapSyncHandle {
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

#[cfg(target_os = "linux")]
fn preallocate(file: &File, offset: u64, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: plain syscall on a valid descriptor.
    let rc = unsafe {
        libc::posix_fallocate(file.as_raw_fd(), offset as libc::off_t, len as libc::off_t)
    };
    match rc {
        0 => Ok(()),
        // Filesystems without fallocate: fall back to a sparse file.
        libc::EOPNOTSUPP | libc::EINVAL => file.set_len(offset + len),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

#[cfg(not(target_os = "linux"))]
fn preallocate(file: &File, offset: u64, len: u64) -> io::Result<()> {
    file.set_len(offset + len)
}

/// Zeroes a range by deallocating it and reserving it again: metadata only, however large.
#[cfg(target_os = "linux")]
fn punch_and_reserve(file: &File, offset: u64, len: u64) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: plain syscalls on a valid descriptor.
    let rc = unsafe {
        libc::fallocate(
            fd,
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
    preallocate(file, offset, len)?;
    Ok(true)
}

#[cfg(not(target_os = "linux"))]
fn punch_and_reserve(_: &File, _: u64, _: u64) -> io::Result<bool> {
    Ok(false)
}

impl MmapDisk {
    /// A disk rooted at `root`, which is created if missing.
    pub fn open_root(root: impl Into<PathBuf>) -> DiskResult<Self> {
        let root = root.into();
        fs::create_dir_all(&root)
            .map_err(|e| io_err(&root.display().to_string(), "create root", e))?;
        Ok(MmapDisk {
            root,
            files: Vec::new(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
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
        if let Some(i) = self.files.iter().position(Option::is_none) {
            self.files[i] = Some(f);
            return FileId(i as u32);
        }
        self.files.push(Some(f));
        FileId(self.files.len() as u32 - 1)
    }

    fn map(path: &str, file: File, size: u64) -> DiskResult<MmapFile> {
        if size == 0 {
            return Ok(MmapFile {
                path: path.to_string(),
                file,
                map: None,
                whole: Bytes::new(),
                size,
            });
        }
        let map = Arc::new(MmapRaw::map_raw(&file).map_err(|e| io_err(path, "mmap", e))?);
        let whole = Bytes::from_owner(MapSlice {
            map: map.clone(),
            offset: 0,
            len: map.len(),
        });
        Ok(MmapFile {
            path: path.to_string(),
            file,
            map: Some(map),
            whole,
            size,
        })
    }

    /// A handle that can msync this file from another thread.
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

    pub fn sync_handle(&self, file: FileId) -> DiskResult<MmapSyncHandle> {
        let f = self.get(file)?;
        Ok(MmapSyncHandle {
            map: f.map.clone(),
            path: f.path.clone(),
        })
    }
}

impl Disk for MmapDisk {
    fn create(&mut self, path: &str, size: u64) -> DiskResult<FileId> {
        let full = self.full(path)?;
        let parent = full.parent().unwrap_or(&self.root).to_path_buf();
        fs::create_dir_all(&parent).map_err(|e| io_err(path, "create dir", e))?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&full)
            .map_err(|e| match e.kind() {
                io::ErrorKind::AlreadyExists => DiskError::AlreadyExists { path: path.into() },
                _ => io_err(path, "create", e),
            })?;
        let reserved = preallocate(&file, 0, size)
            .and_then(|_| file.sync_all())
            .and_then(|_| sync_dir(&parent));
        if let Err(e) = reserved {
            let _ = fs::remove_file(&full);
            return Err(match io_err(path, "preallocate", e) {
                DiskError::Full { path, .. } => DiskError::Full { path, needed: size },
                other => other,
            });
        }
        let f = Self::map(path, file, size)?;
        Ok(self.insert(f))
    }

    fn grow(&mut self, path: &str, size: u64) -> DiskResult<()> {
        let full = self.full(path)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&full)
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => DiskError::NotFound { path: path.into() },
                _ => io_err(path, "open", e),
            })?;
        let cur = file.metadata().map_err(|e| io_err(path, "stat", e))?.len();
        if size <= cur {
            return Ok(());
        }
        preallocate(&file, cur, size - cur)
            .and_then(|_| file.sync_all())
            .map_err(|e| io_err(path, "grow", e))
    }

    fn open(&mut self, path: &str) -> DiskResult<FileId> {
        let full = self.full(path)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&full)
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => DiskError::NotFound { path: path.into() },
                _ => io_err(path, "open", e),
            })?;
        let size = file.metadata().map_err(|e| io_err(path, "stat", e))?.len();
        let f = Self::map(path, file, size)?;
        Ok(self.insert(f))
    }

    fn size(&self, file: FileId) -> DiskResult<u64> {
        Ok(self.get(file)?.size)
    }

    fn close(&mut self, file: FileId) {
        if let Some(slot) = self.files.get_mut(file.0 as usize) {
            *slot = None;
        }
    }

    fn remove(&mut self, path: &str) -> DiskResult<()> {
        let full = self.full(path)?;
        for slot in self.files.iter_mut() {
            if slot.as_ref().is_some_and(|f| f.path == path) {
                *slot = None;
            }
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
        let map = f.map.as_ref().expect("non-empty file is mapped");
        // SAFETY: bounds checked above; the mapping is shared and writable and outlives this
        // call. Readers only look below the store's write position, which this range is not
        // (or, during recovery, no reader exists yet).
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                map.as_mut_ptr().add(offset as usize),
                data.len(),
            );
        }
        Ok(())
    }

    fn read_at(&self, file: FileId, offset: u64, len: usize) -> DiskResult<Bytes> {
        let f = self.get(file)?;
        check_bounds(&f.path, "read", offset, len as u64, f.size)?;
        Ok(f.whole.slice(offset as usize..offset as usize + len))
    }

    fn sync(&mut self, file: FileId, offset: u64, len: u64) -> DiskResult<()> {
        let f = self.get(file)?;
        check_bounds(&f.path, "sync", offset, len, f.size)?;
        if let Some(map) = &f.map {
            map.flush_range(offset as usize, len as usize)
                .map_err(|e| io_err(&f.path, "sync", e))?;
        }
        Ok(())
    }

    fn zero_range(&mut self, file: FileId, offset: u64, len: u64) -> DiskResult<()> {
        let f = self.get(file)?;
        check_bounds(&f.path, "zero", offset, len, f.size)?;
        if len == 0 {
            return Ok(());
        }
        let punched =
            punch_and_reserve(&f.file, offset, len).map_err(|e| io_err(&f.path, "zero", e))?;
        if !punched {
            let map = f.map.as_ref().expect("non-empty file is mapped");
            // SAFETY: bounds checked; only recovery zeroes, before any reader exists.
            unsafe {
                std::ptr::write_bytes(map.as_mut_ptr().add(offset as usize), 0, len as usize)
            };
            map.flush_range(offset as usize, len as usize)
                .map_err(|e| io_err(&f.path, "zero", e))?;
        }
        f.file.sync_data().map_err(|e| io_err(&f.path, "zero", e))
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

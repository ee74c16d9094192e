//! Disk work built on the machine's task and run off it (a driver's flush thread, or the
//! simulator after a simulated latency): the syncs, queue writes and file replacements a
//! flush or checkpoint asks for. Building it is pure; running it does the I/O.

use bytes::Bytes;

use super::mem::MemDisk;
use super::mmap::MmapDisk;
use super::{CreatedSet, Disk, FileId};

/// A disk whose synced ranges can be made durable off the machine's task.
pub trait OffTaskSync: Disk {
    /// The work that syncs `ranges`, to run on the flusher.
    fn sync_job(&self, ranges: Vec<(FileId, u64, u64)>) -> Result<SyncWork, String>;
    /// The work that replaces each small file atomically and durably, in order.
    fn write_job(&self, files: Vec<(String, Bytes)>) -> Result<SyncWork, String>;
    /// The work that makes the existence of newly created files durable.
    fn created_job(&self, set: CreatedSet) -> SyncWork;
    /// The work that writes `(file, offset, bytes)` into reserved space of open files
    /// (volatile, like `Disk::write_at`), before the syncs that count on them.
    fn write_at_job(&self, writes: Vec<(FileId, u64, Bytes)>) -> Result<SyncWork, String>;
}

/// What the flusher runs for one flush.
pub type SyncWork = Box<dyn FnOnce() -> Result<(), String> + Send>;

impl OffTaskSync for MmapDisk {
    fn created_job(&self, set: CreatedSet) -> SyncWork {
        let job = MmapDisk::created_job(self.root(), &set);
        Box::new(move || job().map_err(|e| e.to_string()))
    }
    fn write_at_job(&self, writes: Vec<(FileId, u64, Bytes)>) -> Result<SyncWork, String> {
        let writes = writes
            .into_iter()
            .map(|(file, off, bytes)| Ok((self.sync_handle(file)?, off, bytes)))
            .collect::<Result<Vec<_>, super::DiskError>>()
            .map_err(|e| e.to_string())?;
        Ok(Box::new(move || {
            for (handle, off, bytes) in &writes {
                handle.write(*off, bytes).map_err(|e| e.to_string())?;
            }
            Ok(())
        }))
    }
    fn sync_job(&self, ranges: Vec<(FileId, u64, u64)>) -> Result<SyncWork, String> {
        if let Some(bulk) = self.bulk_sync_job(&ranges).map_err(|e| e.to_string())? {
            return Ok(Box::new(move || bulk().map_err(|e| e.to_string())));
        }
        let handles = ranges
            .into_iter()
            .map(|(file, off, len)| Ok((self.sync_handle(file)?, off, len)))
            .collect::<Result<Vec<_>, super::DiskError>>()
            .map_err(|e| e.to_string())?;
        Ok(Box::new(move || {
            for (handle, off, len) in &handles {
                handle.sync(*off, *len).map_err(|e| e.to_string())?;
            }
            Ok(())
        }))
    }
    fn write_job(&self, files: Vec<(String, Bytes)>) -> Result<SyncWork, String> {
        let jobs = files
            .into_iter()
            .map(|(path, data)| self.atomic_write_job(&path, data))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        Ok(Box::new(move || {
            for job in jobs {
                job().map_err(|e| e.to_string())?;
            }
            Ok(())
        }))
    }
}

/// The simulated disk (the madsim tier, and tests): its fault plan may fail the sync.
impl OffTaskSync for MemDisk {
    fn created_job(&self, set: CreatedSet) -> SyncWork {
        let mut disk = self.clone();
        Box::new(move || disk.sync_created_set(&set).map_err(|e| e.to_string()))
    }
    fn write_at_job(&self, writes: Vec<(FileId, u64, Bytes)>) -> Result<SyncWork, String> {
        let mut disk = self.clone();
        Ok(Box::new(move || {
            for (file, off, bytes) in writes {
                disk.write_at(file, off, &bytes)
                    .map_err(|e| e.to_string())?;
            }
            Ok(())
        }))
    }
    fn sync_job(&self, ranges: Vec<(FileId, u64, u64)>) -> Result<SyncWork, String> {
        let mut disk = self.clone();
        Ok(Box::new(move || {
            for (file, off, len) in ranges {
                disk.sync(file, off, len).map_err(|e| e.to_string())?;
            }
            Ok(())
        }))
    }
    fn write_job(&self, files: Vec<(String, Bytes)>) -> Result<SyncWork, String> {
        let mut disk = self.clone();
        Ok(Box::new(move || {
            for (path, data) in files {
                disk.write_file_atomic(&path, &data)
                    .map_err(|e| e.to_string())?;
            }
            Ok(())
        }))
    }
}

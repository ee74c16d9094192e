//! The store's error type. Every variant that concerns a file names it.

use crate::disk::DiskError;
use crate::record::{EncodeError, RecordError};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Disk(#[from] DiskError),
    #[error(transparent)]
    Encode(#[from] EncodeError),
    #[error("{file}: {what}")]
    Corrupt { file: String, what: String },
    #[error("{file} at offset {offset}: {error}")]
    BadRecord {
        file: String,
        offset: u64,
        error: RecordError,
    },
    #[error("batch of {size} bytes cannot fit one commit log segment of {segment_size} bytes")]
    BatchTooLarge { size: u64, segment_size: u64 },
    #[error("commit log offset {offset} is outside [{min}, {max})")]
    OffsetOutOfRange { offset: u64, min: u64, max: u64 },
    #[error(
        "the store stopped accepting writes after a disk failure ({reason}); restart to recover"
    )]
    Stopped { reason: String },
    #[error("{file}: {what}")]
    Config { file: String, what: String },
    #[error("{what}")]
    Invalid { what: String },
    /// A slave's store: only its master's log, replicated, is written to it.
    #[error("this store is a replica: only what its master replicates is written to it")]
    Replica,
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Parses a 20-digit segment name into its start offset.
pub(crate) fn parse_offset_name(dir: &str, name: &str) -> StoreResult<u64> {
    if name.len() != 20 || !name.bytes().all(|b| b.is_ascii_digit()) {
        return Err(StoreError::Corrupt {
            file: format!("{dir}/{name}"),
            what: "unexpected file: segment names are 20-digit start offsets".into(),
        });
    }
    name.parse::<u64>().map_err(|_| StoreError::Corrupt {
        file: format!("{dir}/{name}"),
        what: "segment name overflows a 64-bit offset".into(),
    })
}

pub(crate) fn offset_name(offset: u64) -> String {
    format!("{offset:020}")
}

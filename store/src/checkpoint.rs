//! The checkpoint: a durable barrier. When it says `offset = C`, every commit log byte below C,
//! every consume queue entry for those records, and the active index file as described were
//! synced before the checkpoint was written. Recovery trusts that much and re-derives the
//! rest from the commit log. Written atomically; framed with a magic, a length and a CRC so a
//! damaged file is recognised rather than misread.

use crate::disk::Disk;
use crate::error::{StoreError, StoreResult};
use crate::index::IndexCheckpoint;

pub const CHECKPOINT_FILE: &str = "checkpoint";
const MAGIC: &[u8; 4] = b"RFCP";
const VERSION: u32 = 1;

#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    bincode::Encode,
    bincode::Decode,
)]
pub struct QueueMark {
    pub topic: String,
    pub queue_id: u32,
    /// The queue's max offset (next logical offset) at the checkpoint.
    pub max_offset: u64,
}

#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    bincode::Encode,
    bincode::Decode,
)]
pub struct Checkpoint {
    /// Set only by a clean shutdown; cleared by the first write after opening.
    pub clean_shutdown: bool,
    /// Everything below this commit log offset is durable, derived data included.
    pub offset: u64,
    /// Store time of the checkpoint (the caller's `now`), for operators.
    pub timestamp: i64,
    pub index: Option<IndexCheckpoint>,
    pub queues: Vec<QueueMark>,
}

impl Checkpoint {
    pub fn encode(&self) -> Vec<u8> {
        let payload =
            bincode::encode_to_vec(self, bincode::config::standard()).expect("checkpoint encodes");
        let mut out = Vec::with_capacity(payload.len() + 16);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_be_bytes());
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&payload);
        out.extend_from_slice(&crc32fast::hash(&out).to_be_bytes());
        out
    }

    pub fn decode(data: &[u8]) -> Result<Checkpoint, String> {
        if data.len() < 16 {
            return Err(format!("{} bytes, too short", data.len()));
        }
        if &data[..4] != MAGIC {
            return Err("bad magic".into());
        }
        let version = u32::from_be_bytes(data[4..8].try_into().expect("4"));
        if version != VERSION {
            return Err(format!("unsupported version {version}"));
        }
        let len = u32::from_be_bytes(data[8..12].try_into().expect("4")) as usize;
        if data.len() != 12 + len + 4 {
            return Err(format!(
                "length field says {len} bytes of payload, file has {}",
                data.len().saturating_sub(16)
            ));
        }
        let stored = u32::from_be_bytes(data[12 + len..].try_into().expect("4"));
        if crc32fast::hash(&data[..12 + len]) != stored {
            return Err("CRC mismatch".into());
        }
        let (cp, used) =
            bincode::decode_from_slice(&data[12..12 + len], bincode::config::standard())
                .map_err(|e| format!("undecodable payload: {e}"))?;
        if used != len {
            return Err("trailing bytes in payload".into());
        }
        Ok(cp)
    }

    /// `Ok(None)` if there is no checkpoint; `Err` names the file and the damage.
    pub fn load<D: Disk>(disk: &D) -> StoreResult<Option<Checkpoint>> {
        match disk.read_file(CHECKPOINT_FILE)? {
            None => Ok(None),
            Some(data) => Checkpoint::decode(&data)
                .map(Some)
                .map_err(|what| StoreError::Corrupt {
                    file: CHECKPOINT_FILE.into(),
                    what,
                }),
        }
    }

    pub fn store<D: Disk>(&self, disk: &mut D) -> StoreResult<()> {
        Ok(disk.write_file_atomic(CHECKPOINT_FILE, &self.encode())?)
    }
}

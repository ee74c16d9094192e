//! Message-level protocol facts: the 16-byte offset message id, the client's batch body
//! encoding (MessageDecoder.encodeMessages), properties strings, and tag subscriptions.

pub mod decoder;

pub use decoder::{DecodeError, MessageExt, decode_messages};

use std::collections::BTreeSet;

use bytes::{Buf, Bytes};
use rockfish_store::record::{
    HostAddr, NAME_VALUE_SEPARATOR, PROPERTY_SEPARATOR, java_string_hash,
};

/// Writes an offset message id (see [`offset_msg_id`]) without allocating.
pub fn write_offset_msg_id(
    w: &mut dyn std::fmt::Write,
    store_host: HostAddr,
    offset: u64,
) -> std::fmt::Result {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let (ip, port): (&[u8], u16) = match &store_host {
        HostAddr::V4(ip, port) => (ip, *port),
        HostAddr::V6(ip, port) => (ip, *port),
    };
    // Hex digits into a stack buffer and one write: a `{:02X}` per byte cost ~0.6 µs an id,
    // which every stored message's answer pays.
    let mut digits = [0u8; 56];
    let mut n = 0;
    for b in ip
        .iter()
        .chain(&(port as i32).to_be_bytes())
        .chain(&offset.to_be_bytes())
    {
        digits[n] = HEX[(b >> 4) as usize];
        digits[n + 1] = HEX[(b & 0xf) as usize];
        n += 2;
    }
    w.write_str(std::str::from_utf8(&digits[..n]).expect("hex digits are ASCII"))
}

/// RocketMQ's offset message id: store host IPv4 (4) + port (4) + commit log offset (8), as
/// 32 uppercase hex digits (IPv6 hosts: 16 + 4 + 8 bytes, 56 digits).
pub fn offset_msg_id(store_host: HostAddr, offset: u64) -> String {
    let mut id = String::with_capacity(56);
    write_offset_msg_id(&mut id, store_host, offset).expect("a String takes any write");
    id
}

/// Parses an offset message id back into store host and commit log offset.
pub fn parse_offset_msg_id(id: &str) -> Option<(HostAddr, u64)> {
    if !id.is_ascii() || !(id.len() == 32 || id.len() == 56) {
        return None;
    }
    let raw: Option<Vec<u8>> = (0..id.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&id[i..i + 2], 16).ok())
        .collect();
    let raw = raw?;
    let offset = u64::from_be_bytes(raw[raw.len() - 8..].try_into().ok()?);
    let port = i32::from_be_bytes(raw[raw.len() - 12..raw.len() - 8].try_into().ok()?) as u16;
    let host = if raw.len() == 16 {
        HostAddr::V4(raw[..4].try_into().ok()?, port)
    } else {
        HostAddr::V6(raw[..16].try_into().ok()?, port)
    };
    Some((host, offset))
}

/// Most messages in one batch send. Each costs the broker's task an append and a dispatch,
/// so a batch of tiny messages is bounded by count, not only by the frame's size (Java's
/// producer caps a batch at 4 MiB: this is 400-byte messages at that size).
pub const MAX_BATCH_MESSAGES: usize = 10_000;

/// One message of a client batch body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchItem {
    pub flag: i32,
    pub body: Bytes,
    pub properties: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("batch message {index} is truncated")]
    Truncated { index: usize },
    #[error("batch message {index} declares {declared} bytes but its fields take {actual}")]
    SizeMismatch {
        index: usize,
        declared: i32,
        actual: usize,
    },
    #[error("batch message {index} has a negative length")]
    Negative { index: usize },
    #[error("empty batch")]
    Empty,
    #[error("batch of more than {max} messages")]
    TooMany { max: usize },
}

/// Splits a batch body: per message `i32 totalSize | i32 magic | i32 bodyCRC | i32 flag |
/// i32 bodyLen | body | i16 propertiesLen | properties`. No copies: items share `body`.
pub fn decode_batch(mut b: Bytes) -> Result<Vec<BatchItem>, BatchError> {
    let mut out = Vec::new();
    while b.has_remaining() {
        let index = out.len();
        if index == MAX_BATCH_MESSAGES {
            return Err(BatchError::TooMany {
                max: MAX_BATCH_MESSAGES,
            });
        }
        if b.remaining() < 20 {
            return Err(BatchError::Truncated { index });
        }
        let total = b.get_i32();
        let _magic = b.get_i32();
        let _body_crc = b.get_i32();
        let flag = b.get_i32();
        let body_len = b.get_i32();
        if total < 0 || body_len < 0 {
            return Err(BatchError::Negative { index });
        }
        if b.remaining() < body_len as usize + 2 {
            return Err(BatchError::Truncated { index });
        }
        let body = b.split_to(body_len as usize);
        let props_len = b.get_i16();
        if props_len < 0 {
            return Err(BatchError::Negative { index });
        }
        if b.remaining() < props_len as usize {
            return Err(BatchError::Truncated { index });
        }
        let properties = b.split_to(props_len as usize);
        let actual = 20 + body_len as usize + 2 + props_len as usize;
        if total as usize != actual {
            return Err(BatchError::SizeMismatch {
                index,
                declared: total,
                actual,
            });
        }
        out.push(BatchItem {
            flag,
            body,
            properties,
        });
    }
    if out.is_empty() {
        return Err(BatchError::Empty);
    }
    Ok(out)
}

/// Encodes messages as a client batch body (for our own producers and tests).
pub fn encode_batch(items: &[BatchItem]) -> Vec<u8> {
    let size = items
        .iter()
        .map(|it| 22 + it.body.len() + it.properties.len())
        .sum();
    let mut out = Vec::with_capacity(size);
    for it in items {
        push_batch_item(&mut out, it.flag, &it.body, |o| {
            o.extend_from_slice(&it.properties)
        });
    }
    out
}

/// Builds a properties string "k\x01v\x02...".
pub fn properties_string<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in pairs {
        push_property(&mut out, k, v);
    }
    out
}

/// Appends one "k\x01v\x02" pair of a properties string.
pub fn push_property(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.push(NAME_VALUE_SEPARATOR);
    out.extend_from_slice(value.as_bytes());
    out.push(PROPERTY_SEPARATOR);
}

/// Appends one message of a client batch body (see [`encode_batch`]) whose properties are
/// written by `properties` straight into `out`: the item's sizes are patched in after, so
/// a batch is encoded into one buffer with no allocation per message.
pub fn push_batch_item(
    out: &mut Vec<u8>,
    flag: i32,
    body: &[u8],
    properties: impl FnOnce(&mut Vec<u8>),
) {
    let start = out.len();
    out.extend_from_slice(&0i32.to_be_bytes()); // total size, patched below
    out.extend_from_slice(&0i32.to_be_bytes());
    out.extend_from_slice(&((crc32fast::hash(body) & 0x7FFF_FFFF) as i32).to_be_bytes());
    out.extend_from_slice(&flag.to_be_bytes());
    out.extend_from_slice(&(body.len() as i32).to_be_bytes());
    out.extend_from_slice(body);
    let props_at = out.len();
    out.extend_from_slice(&0i16.to_be_bytes()); // properties length, patched below
    properties(out);
    let props_len = out.len() - props_at - 2;
    out[props_at..props_at + 2].copy_from_slice(&(props_len as i16).to_be_bytes());
    let total = out.len() - start;
    out[start..start + 4].copy_from_slice(&(total as i32).to_be_bytes());
}

/// Property names the broker reads and writes (RocketMQ's MessageConst).
pub mod property {
    pub const DELAY: &str = "DELAY";
    pub const REAL_TOPIC: &str = "REAL_TOPIC";
    pub const REAL_QID: &str = "REAL_QID";
    pub const RETRY_TOPIC: &str = "RETRY_TOPIC";
    pub const ORIGIN_MESSAGE_ID: &str = "ORIGIN_MESSAGE_ID";
    pub const MAX_RECONSUME_TIMES: &str = "MAX_RECONSUME_TIMES";
    pub const UNIQ_KEY: &str = "UNIQ_KEY";
    pub const TAGS: &str = "TAGS";
    pub const KEYS: &str = "KEYS";
    pub const CRC32: &str = "__CRC32#";
}

/// A properties string with the pairs named in `drop` (and the store's `__CRC32#`) left out
/// and `add` appended (replacing any pair of the same name): how the broker derives a
/// message it stores again (a delayed message's schedule copy, its delivery, a retry).
pub fn rewrite_properties(props: &[u8], drop: &[&str], add: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(props.len() + 64);
    for (k, v) in rockfish_store::record::properties(props) {
        let named = |n: &&str| n.as_bytes() == k;
        if k == property::CRC32.as_bytes()
            || drop.iter().any(named)
            || add.iter().map(|(n, _)| n).any(named)
        {
            continue;
        }
        out.extend_from_slice(k);
        out.push(NAME_VALUE_SEPARATOR);
        out.extend_from_slice(v);
        out.push(PROPERTY_SEPARATOR);
    }
    for (k, v) in add {
        out.extend_from_slice(k.as_bytes());
        out.push(NAME_VALUE_SEPARATOR);
        out.extend_from_slice(v.as_bytes());
        out.push(PROPERTY_SEPARATOR);
    }
    out
}

/// A tag subscription: "*" (or empty) matches everything; "TagA || TagB" matches those tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagFilter {
    pub expression: String,
    pub tags: BTreeSet<String>,
    pub codes: BTreeSet<i64>,
}

impl TagFilter {
    pub const ALL: &'static str = "*";

    pub fn parse(expression: &str) -> TagFilter {
        let expr = expression.trim();
        let mut tags = BTreeSet::new();
        if !(expr.is_empty() || expr == Self::ALL) {
            tags = expr
                .split("||")
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .collect();
        }
        let codes = tags.iter().map(|t| java_string_hash(t) as i64).collect();
        TagFilter {
            expression: expr.to_string(),
            tags,
            codes,
        }
    }

    pub fn matches_all(&self) -> bool {
        self.tags.is_empty()
    }

    /// Consume-queue check on the tag hash code (a collision passes; clients re-check tags).
    pub fn matches_code(&self, code: i64) -> bool {
        self.matches_all() || self.codes.contains(&code)
    }
}

/// Splits a pull (or query) body into its stored records, validating each with the store's
/// strict parser: only what rockfish itself writes passes (`__CRC32#` required). For checks
/// of rockfish's own answers; clients read answers with [`decode_messages`].
pub fn split_records(
    mut body: Bytes,
) -> Result<Vec<rockfish_store::StoredRecord>, rockfish_store::record::RecordError> {
    let mut out = Vec::new();
    while body.len() >= 4 {
        let size = u32::from_be_bytes(body[..4].try_into().expect("4 bytes")) as usize;
        if size > body.len() || size < 4 {
            return Err(rockfish_store::record::RecordError::BadSize {
                size: size as u32,
                limit: body.len(),
            });
        }
        out.push(rockfish_store::StoredRecord::parse(
            body.split_to(size),
            None,
        )?);
    }
    Ok(out)
}

/// A client-side unique message id (RocketMQ's UNIQ_KEY shape: 32 hex digits) from a
/// client-chosen prefix and a counter.
pub fn uniq_key(prefix: u64, counter: u64) -> String {
    let mut id = String::with_capacity(32);
    write_uniq_key(&mut id, prefix, counter);
    id
}

/// Appends [`uniq_key`]'s 32 digits to `out` (one per message of a batch, so no `format!`).
pub fn write_uniq_key(out: &mut String, prefix: u64, counter: u64) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut digits = [0u8; 32];
    for (i, b) in prefix
        .to_be_bytes()
        .iter()
        .chain(&counter.to_be_bytes())
        .enumerate()
    {
        digits[2 * i] = HEX[(b >> 4) as usize];
        digits[2 * i + 1] = HEX[(b & 0xf) as usize];
    }
    out.push_str(std::str::from_utf8(&digits).expect("hex digits are ASCII"));
}

#[cfg(test)]
mod msg_id_tests {
    use super::*;

    #[test]
    fn offset_msg_ids_are_apache_s_uppercase_hex_and_parse_back() {
        // As a broker at 127.0.0.1:10911 answered a send stored at 0x4C4FC2DA.
        let v4 = HostAddr::V4([127, 0, 0, 1], 10911);
        assert_eq!(
            offset_msg_id(v4, 0x4C4F_C2DA),
            "7F00000100002A9F000000004C4FC2DA"
        );
        assert_eq!(
            parse_offset_msg_id(&offset_msg_id(v4, u64::MAX)),
            Some((v4, u64::MAX))
        );
        let v6 = HostAddr::V6(
            [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xab, 0x01],
            9,
        );
        let id = offset_msg_id(v6, 42);
        assert_eq!(id.len(), 56);
        assert!(id.starts_with("FE80"), "{id}");
        assert!(id.ends_with("00000009000000000000002A"), "{id}");
        assert_eq!(parse_offset_msg_id(&id), Some((v6, 42)));
    }
}

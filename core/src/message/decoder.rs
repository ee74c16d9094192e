//! The client's message decoder: every stored-record form a RocketMQ broker serves in a pull or
//! query answer, as Apache's `MessageDecoder` reads them on the client side.
//!
//! The store's parser (`rockfish_store::StoredRecord::parse`) is stricter on purpose: it
//! validates what rockfish itself wrote, `__CRC32#` property included. A client must also read
//! what other brokers write: Apache 4.x writes no `__CRC32#`, 5.x may write V2 records (2-byte
//! topic length), IPv6 hosts change the layout, and compressed bodies (sysFlag bit 0) are
//! inflated for the application. What this decoder checks is what every broker writes: the
//! magic, the sizes and the body CRC; `__CRC32#` too when the record carries it.

use bytes::Bytes;
use rockfish_store::record::{
    CRC32_RESERVED_LEN, HostAddr, MESSAGE_MAGIC_CODE, NAME_VALUE_SEPARATOR, PROPERTY_CRC32,
    PROPERTY_SEPARATOR, SYSFLAG_BORNHOST_V6, SYSFLAG_STOREHOST_V6, property,
};

/// RocketMQ 5's record magic with a 2-byte topic length (`MESSAGE_MAGIC_CODE_V2`).
pub const MESSAGE_MAGIC_CODE_V2: u32 = 0xDAA3_20AB;
/// sysFlag bit 0: the body is compressed.
pub const COMPRESSED_FLAG: i32 = 0x1;
/// sysFlag bits 8..10: the compression type (RocketMQ 5; 0 means zlib, as 4.x wrote).
pub const COMPRESSION_TYPE_MASK: i32 = 0x7 << 8;
pub const COMPRESSION_LZ4_TYPE: i32 = 0x1 << 8;
pub const COMPRESSION_ZSTD_TYPE: i32 = 0x2 << 8;
pub const COMPRESSION_ZLIB_TYPE: i32 = 0x3 << 8;
/// An inflated body larger than this is refused (a small compressed body must not make the
/// client allocate without bound).
pub const MAX_INFLATED_BODY: usize = 64 << 20;

/// Why a served record cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record at byte {at}: truncated ({have} bytes, need {need})")]
    Truncated { at: usize, have: usize, need: usize },
    #[error("record at byte {at}: bad magic code {magic:#010x}")]
    BadMagic { at: usize, magic: u32 },
    #[error("record at byte {at}: inconsistent layout: {what}")]
    BadLayout { at: usize, what: &'static str },
    #[error("record at byte {at}: body CRC mismatch (stored {stored:#x}, computed {computed:#x})")]
    BodyCrc {
        at: usize,
        stored: u32,
        computed: u32,
    },
    #[error("record at byte {at}: __CRC32# mismatch (stored {stored}, computed {computed})")]
    RecordCrc {
        at: usize,
        stored: u32,
        computed: u32,
    },
    #[error("record at byte {at}: body does not inflate: {what}")]
    Inflate { at: usize, what: String },
    #[error("record at byte {at}: compression type {kind:#x} is not supported")]
    Compression { at: usize, kind: i32 },
}

/// A message as a client receives it (Java's `MessageExt`): the served record's fields, the
/// body inflated when it was compressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageExt {
    record: Bytes,
    queue_id: u32,
    flag: i32,
    queue_offset: u64,
    physical_offset: u64,
    sys_flag: i32,
    born_timestamp: i64,
    born_host: HostAddr,
    store_timestamp: i64,
    store_host: HostAddr,
    reconsume_times: i32,
    /// Local retries since it was pulled (Java counts them into reconsumeTimes).
    local_reconsumes: i32,
    prepared_transaction_offset: i64,
    body: Bytes,
    topic: String,
    properties: Bytes,
}

impl MessageExt {
    /// The record exactly as the broker served it.
    pub fn bytes(&self) -> &Bytes {
        &self.record
    }
    pub fn total_size(&self) -> u32 {
        self.record.len() as u32
    }
    pub fn queue_id(&self) -> u32 {
        self.queue_id
    }
    pub fn flag(&self) -> i32 {
        self.flag
    }
    pub fn queue_offset(&self) -> u64 {
        self.queue_offset
    }
    pub fn physical_offset(&self) -> u64 {
        self.physical_offset
    }
    pub fn sys_flag(&self) -> i32 {
        self.sys_flag
    }
    pub fn born_timestamp(&self) -> i64 {
        self.born_timestamp
    }
    pub fn born_host(&self) -> HostAddr {
        self.born_host
    }
    pub fn store_timestamp(&self) -> i64 {
        self.store_timestamp
    }
    pub fn store_host(&self) -> HostAddr {
        self.store_host
    }
    /// Times it was consumed before: the stored count plus local retries since it was pulled
    /// (what Java's listener sees in getReconsumeTimes).
    pub fn reconsume_times(&self) -> i32 {
        self.reconsume_times.saturating_add(self.local_reconsumes)
    }
    /// The reconsume count its record was stored with.
    pub fn stored_reconsume_times(&self) -> i32 {
        self.reconsume_times
    }
    pub fn prepared_transaction_offset(&self) -> i64 {
        self.prepared_transaction_offset
    }
    /// The application's body (inflated if the producer compressed it).
    pub fn body(&self) -> Bytes {
        self.body.clone()
    }
    pub fn topic(&self) -> &str {
        &self.topic
    }
    /// The properties as served ("k\x01v\x02..."), `__CRC32#` included when present.
    pub fn properties(&self) -> &[u8] {
        &self.properties
    }
    pub fn property(&self, name: &str) -> Option<&[u8]> {
        property(&self.properties, name)
    }

    /// The message id as Java's client reports it: the producer's UNIQ_KEY when present,
    /// else the broker's offset message id.
    pub fn msg_id(&self) -> String {
        match self
            .property(crate::message::property::UNIQ_KEY)
            .and_then(|v| std::str::from_utf8(v).ok())
            .filter(|v| !v.is_empty())
        {
            Some(id) => id.to_string(),
            None => crate::message::offset_msg_id(self.store_host, self.physical_offset),
        }
    }

    /// A message of a retry topic shows its original topic (RETRY_TOPIC), as Java's
    /// `resetRetryAndNamespace` does before the listener sees it.
    pub(crate) fn restore_retry_topic(&mut self) {
        if crate::protocol::topics::is_retry_topic(&self.topic)
            && let Some(t) = self
                .property(crate::message::property::RETRY_TOPIC)
                .and_then(|v| std::str::from_utf8(v).ok())
                .filter(|v| !v.is_empty())
        {
            self.topic = t.to_string();
        }
    }

    /// A local retry counts as a reconsumption (Java increments the message's count).
    pub(crate) fn count_reconsume(&mut self) {
        self.local_reconsumes = self.local_reconsumes.saturating_add(1);
    }
}

/// Decodes a pull (or query) answer's body: the records one after another. The first record
/// that does not decode makes the whole answer an error, with how many decoded before it.
pub fn decode_messages(body: &Bytes) -> Result<Vec<MessageExt>, (Vec<MessageExt>, DecodeError)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < body.len() {
        match decode_one(body, at) {
            Ok((msg, len)) => {
                out.push(msg);
                at += len;
            }
            Err(e) => return Err((out, e)),
        }
    }
    Ok(out)
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or(DecodeError::Truncated {
                at: self.at,
                have: self.b.len(),
                need: self.pos.saturating_add(n),
            })?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().expect("2")))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().expect("8")))
    }
    fn host(&mut self, v6: bool) -> Result<HostAddr, DecodeError> {
        Ok(if v6 {
            let ip: [u8; 16] = self.take(16)?.try_into().expect("16");
            HostAddr::V6(ip, self.u32()? as u16)
        } else {
            let ip: [u8; 4] = self.take(4)?.try_into().expect("4");
            HostAddr::V4(ip, self.u32()? as u16)
        })
    }
}

fn decode_one(body: &Bytes, at: usize) -> Result<(MessageExt, usize), DecodeError> {
    let rest = &body[at..];
    if rest.len() < 8 {
        return Err(DecodeError::Truncated {
            at,
            have: rest.len(),
            need: 8,
        });
    }
    let total = u32::from_be_bytes(rest[..4].try_into().expect("4")) as usize;
    let magic = u32::from_be_bytes(rest[4..8].try_into().expect("4"));
    let v2 = match magic {
        MESSAGE_MAGIC_CODE => false,
        MESSAGE_MAGIC_CODE_V2 => true,
        _ => return Err(DecodeError::BadMagic { at, magic }),
    };
    if total > rest.len() || total < 8 {
        return Err(DecodeError::Truncated {
            at,
            have: rest.len(),
            need: total.max(8),
        });
    }
    let record = body.slice(at..at + total);
    let mut r = Reader {
        b: &record,
        pos: 8,
        at,
    };
    let body_crc = r.u32()?;
    let queue_id = r.u32()?;
    let flag = r.u32()? as i32;
    let queue_offset = r.u64()?;
    let physical_offset = r.u64()?;
    let sys_flag = r.u32()? as i32;
    let born_timestamp = r.u64()? as i64;
    let born_host = r.host(sys_flag & SYSFLAG_BORNHOST_V6 != 0)?;
    let store_timestamp = r.u64()? as i64;
    let store_host = r.host(sys_flag & SYSFLAG_STOREHOST_V6 != 0)?;
    let reconsume_times = r.u32()? as i32;
    let prepared_transaction_offset = r.u64()? as i64;
    let body_len = r.u32()? as usize;
    let body_at = r.pos;
    let stored_body = r.take(body_len)?;
    let computed = crc32fast::hash(stored_body) & 0x7FFF_FFFF;
    if computed != body_crc {
        return Err(DecodeError::BodyCrc {
            at,
            stored: body_crc,
            computed,
        });
    }
    let topic_len = if v2 {
        r.u16()? as usize
    } else {
        r.u8()? as usize
    };
    let topic = std::str::from_utf8(r.take(topic_len)?)
        .map_err(|_| DecodeError::BadLayout {
            at,
            what: "topic is not UTF-8",
        })?
        .to_string();
    let props_len = r.u16()? as usize;
    let props_at = r.pos;
    r.take(props_len)?;
    if r.pos != record.len() {
        return Err(DecodeError::BadLayout {
            at,
            what: "properties do not end where the record does",
        });
    }
    check_record_crc(&record, &record[props_at..], at)?;
    let stored_body = record.slice(body_at..body_at + body_len);
    let body = if sys_flag & COMPRESSED_FLAG != 0 {
        inflate(&stored_body, sys_flag, at)?
    } else {
        stored_body
    };
    let properties = record.slice(props_at..props_at + props_len);
    Ok((
        MessageExt {
            record,
            queue_id,
            flag,
            queue_offset,
            physical_offset,
            sys_flag,
            born_timestamp,
            born_host,
            store_timestamp,
            store_host,
            reconsume_times,
            local_reconsumes: 0,
            prepared_transaction_offset,
            body,
            topic,
            properties,
        },
        total,
    ))
}

/// When the properties end in `__CRC32#`'s reserved form, the record CRC must match it.
fn check_record_crc(record: &[u8], props: &[u8], at: usize) -> Result<(), DecodeError> {
    if props.len() < CRC32_RESERVED_LEN {
        return Ok(());
    }
    let reserved = &props[props.len() - CRC32_RESERVED_LEN..];
    let starts_a_property = props.len() == CRC32_RESERVED_LEN
        || props[props.len() - CRC32_RESERVED_LEN - 1] == PROPERTY_SEPARATOR;
    if !starts_a_property
        || &reserved[..PROPERTY_CRC32.len()] != PROPERTY_CRC32
        || reserved[PROPERTY_CRC32.len()] != NAME_VALUE_SEPARATOR
        || reserved[CRC32_RESERVED_LEN - 1] != PROPERTY_SEPARATOR
    {
        return Ok(());
    }
    let digits = &reserved[PROPERTY_CRC32.len() + 1..CRC32_RESERVED_LEN - 1];
    // Ten decimal digits, least significant first (RocketMQ 5's layout).
    let Some(stored) = digits.iter().rev().try_fold(0u64, |acc, &d| {
        d.is_ascii_digit().then(|| acc * 10 + u64::from(d - b'0'))
    }) else {
        return Err(DecodeError::BadLayout {
            at,
            what: "__CRC32# is not ten digits",
        });
    };
    let computed = crc32fast::hash(&record[..record.len() - CRC32_RESERVED_LEN]) & 0x7FFF_FFFF;
    if stored != u64::from(computed) {
        return Err(DecodeError::RecordCrc {
            at,
            stored: stored.min(u64::from(u32::MAX)) as u32,
            computed,
        });
    }
    Ok(())
}

fn inflate(body: &[u8], sys_flag: i32, at: usize) -> Result<Bytes, DecodeError> {
    match sys_flag & COMPRESSION_TYPE_MASK {
        // 4.x wrote no type bits and always deflated with zlib.
        0 | COMPRESSION_ZLIB_TYPE => {
            miniz_oxide::inflate::decompress_to_vec_zlib_with_limit(body, MAX_INFLATED_BODY)
                .map(Bytes::from)
                .map_err(|e| DecodeError::Inflate {
                    at,
                    what: format!("zlib: {:?}", e.status),
                })
        }
        COMPRESSION_LZ4_TYPE => {
            use std::io::Read;
            let mut out = Vec::new();
            lz4_flex::frame::FrameDecoder::new(body)
                .take(MAX_INFLATED_BODY as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| DecodeError::Inflate {
                    at,
                    what: format!("lz4: {e}"),
                })?;
            if out.len() > MAX_INFLATED_BODY {
                return Err(DecodeError::Inflate {
                    at,
                    what: format!("lz4: larger than {MAX_INFLATED_BODY} bytes"),
                });
            }
            Ok(Bytes::from(out))
        }
        kind => Err(DecodeError::Compression { at, kind }),
    }
}

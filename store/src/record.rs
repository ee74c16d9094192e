//! Apache RocketMQ's stored-message layout (V1, as `MessageDecoder` reads it), so that a pull
//! can hand stored bytes to a client exactly as they lie in the commit log.
//!
//! ```text
//! off  size  field (big-endian)
//!   0     4  TOTALSIZE
//!   4     4  MAGICCODE            0xDAA320A7 (message) / 0xCBD43194 (end-of-segment blank)
//!   8     4  BODYCRC              crc32(body) & 0x7FFFFFFF
//!  12     4  QUEUEID
//!  16     4  FLAG
//!  20     8  QUEUEOFFSET          logical offset in the consume queue
//!  28     8  PHYSICALOFFSET       offset of this record in the commit log
//!  36     4  SYSFLAG              bit 4 / bit 5: born / store host is IPv6
//!  40     8  BORNTIMESTAMP
//!  48   8|20 BORNHOST             IPv4 (4) or IPv6 (16) address + 4-byte port
//!   .     8  STORETIMESTAMP
//!   .   8|20 STOREHOST
//!   .     4  RECONSUMETIMES
//!   .     8  PREPARED TRANSACTION OFFSET
//!   .     4  BODY length, then body
//!   .     1  TOPIC length (<= 127), then topic
//!   .     2  PROPERTIES length, then "k\x01v\x02..." ending with "__CRC32#\x01" + 10 digits + "\x02"
//! ```
//!
//! The body CRC only covers the body, so rockfish always appends RocketMQ 5's `__CRC32#`
//! property: a CRC32 of every byte of the record before the property's 20 reserved bytes,
//! written as 10 decimal digits, least significant first. Recovery and reads check both.

use bytes::{Buf, Bytes};

pub const MESSAGE_MAGIC_CODE: u32 = 0xDAA3_20A7;
pub const BLANK_MAGIC_CODE: u32 = 0xCBD4_3194;
/// A blank end-of-segment marker needs its total size and magic.
pub const END_FILE_MIN_BLANK_LENGTH: u64 = 8;
pub const PROPERTY_CRC32: &[u8] = b"__CRC32#";
/// `__CRC32#` + NAME_VALUE_SEPARATOR + 10 digits + PROPERTY_SEPARATOR.
pub const CRC32_RESERVED_LEN: usize = PROPERTY_CRC32.len() + 1 + 10 + 1;
pub const NAME_VALUE_SEPARATOR: u8 = 1;
pub const PROPERTY_SEPARATOR: u8 = 2;
pub const MAX_TOPIC_LEN: usize = 127;
pub const MAX_PROPERTIES_LEN: usize = i16::MAX as usize;

pub const SYSFLAG_BORNHOST_V6: i32 = 1 << 4;
pub const SYSFLAG_STOREHOST_V6: i32 = 1 << 5;

pub const PROPERTY_KEYS: &str = "KEYS";
pub const PROPERTY_TAGS: &str = "TAGS";
pub const PROPERTY_UNIQ_KEY: &str = "UNIQ_KEY";
pub const PROPERTY_DELAY_LEVEL: &str = "DELAY";

/// Byte offsets of the fixed fields that precede the hosts.
pub mod field {
    pub const TOTAL_SIZE: usize = 0;
    pub const MAGIC: usize = 4;
    pub const BODY_CRC: usize = 8;
    pub const QUEUE_ID: usize = 12;
    pub const FLAG: usize = 16;
    pub const QUEUE_OFFSET: usize = 20;
    pub const PHYSICAL_OFFSET: usize = 28;
    pub const SYS_FLAG: usize = 36;
    pub const BORN_TIMESTAMP: usize = 40;
    pub const BORN_HOST: usize = 48;
}

/// A host address as the record stores it. (No `std::net` here: the store is pure.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HostAddr {
    V4([u8; 4], u16),
    V6([u8; 16], u16),
}

impl HostAddr {
    pub const UNSPECIFIED: HostAddr = HostAddr::V4([0; 4], 0);

    fn encoded_len(&self) -> usize {
        match self {
            HostAddr::V4(..) => 8,
            HostAddr::V6(..) => 20,
        }
    }
}

impl std::fmt::Display for HostAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostAddr::V4(ip, port) => write!(f, "{}.{}.{}.{}:{port}", ip[0], ip[1], ip[2], ip[3]),
            HostAddr::V6(ip, port) => {
                write!(f, "[")?;
                for (i, pair) in ip.chunks(2).enumerate() {
                    if i > 0 {
                        write!(f, ":")?;
                    }
                    write!(f, "{:x}", u16::from_be_bytes([pair[0], pair[1]]))?;
                }
                write!(f, "]:{port}")
            }
        }
    }
}

/// A message as the broker hands it to the store (RocketMQ's MessageExtBrokerInner).
#[derive(Clone, Copy, Debug)]
pub struct StoreMessage<'a> {
    pub topic: &'a str,
    pub queue_id: u32,
    pub flag: i32,
    pub sys_flag: i32,
    pub born_timestamp: i64,
    pub born_host: HostAddr,
    pub store_host: HostAddr,
    pub reconsume_times: i32,
    pub prepared_transaction_offset: i64,
    pub body: &'a [u8],
    /// Encoded properties as the client sent them ("k\x01v\x02..."), without a CRC property.
    pub properties: &'a [u8],
}

/// Why a record cannot be stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("topic is {0} bytes; at most 127 fit the stored-message layout")]
    TopicTooLong(usize),
    #[error("topic is empty")]
    EmptyTopic,
    #[error("properties are {0} bytes; at most {max} fit", max = MAX_PROPERTIES_LEN - CRC32_RESERVED_LEN - 1)]
    PropertiesTooLong(usize),
    #[error("body is {size} bytes; the limit is {max}")]
    BodyTooLarge { size: usize, max: usize },
}

/// Why bytes are not a valid record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("truncated: {have} bytes, need {need}")]
    Truncated { have: usize, need: usize },
    #[error("bad magic code {0:#010x}")]
    BadMagic(u32),
    #[error("total size {size} is impossible (at most {limit} bytes available)")]
    BadSize { size: u32, limit: usize },
    #[error("inconsistent layout: {0}")]
    BadLayout(&'static str),
    #[error("physical offset field says {found}, record lies at {expected}")]
    WrongOffset { expected: u64, found: u64 },
    #[error("body CRC mismatch: stored {stored:#x}, computed {computed:#x}")]
    BodyCrc { stored: u32, computed: u32 },
    #[error("record CRC mismatch: stored {stored}, computed {computed}")]
    RecordCrc { stored: u32, computed: u32 },
    #[error("record has no __CRC32# property")]
    MissingCrc,
}

/// Does `properties` already end on a separator (or is it empty)?
fn needs_separator(properties: &[u8]) -> bool {
    properties.last().is_some_and(|&b| b != PROPERTY_SEPARATOR)
}

/// Stored properties length for a client's properties: theirs, a separator if missing, and
/// the CRC property.
pub fn stored_properties_len(properties: &[u8]) -> usize {
    properties.len() + needs_separator(properties) as usize + CRC32_RESERVED_LEN
}

/// The stored size of `msg`, after checking that it fits the layout and `max_body`.
pub fn record_len(msg: &StoreMessage<'_>, max_body: usize) -> Result<usize, EncodeError> {
    if msg.topic.is_empty() {
        return Err(EncodeError::EmptyTopic);
    }
    if msg.topic.len() > MAX_TOPIC_LEN {
        return Err(EncodeError::TopicTooLong(msg.topic.len()));
    }
    let props = stored_properties_len(msg.properties);
    if props > MAX_PROPERTIES_LEN {
        return Err(EncodeError::PropertiesTooLong(msg.properties.len()));
    }
    if msg.body.len() > max_body {
        return Err(EncodeError::BodyTooLarge {
            size: msg.body.len(),
            max: max_body,
        });
    }
    Ok(fixed_len(msg.born_host, msg.store_host) + msg.body.len() + msg.topic.len() + props)
}

fn fixed_len(born: HostAddr, store: HostAddr) -> usize {
    // total, magic, bodycrc, queueid, flag, queueoffset, physicaloffset, sysflag,
    // borntimestamp, bornhost, storetimestamp, storehost, reconsumetimes, preparedtxoffset,
    // bodylen, topiclen, propertieslen
    4 + 4
        + 4
        + 4
        + 4
        + 8
        + 8
        + 4
        + 8
        + born.encoded_len()
        + 8
        + store.encoded_len()
        + 4
        + 8
        + 4
        + 1
        + 2
}

/// The parts of one encoded record: `head` (everything up to and including the body length),
/// then the caller's body, then `tail` (topic and properties, CRC included). Writing
/// `head ++ body ++ tail` gives the record; the body is never copied here.
pub struct EncodedParts {
    pub head_len: usize,
    pub total_len: usize,
}

/// One whole record, as the commit log would hold it at `physical_offset` (a message the
/// broker hands a client in a stored message's encoding, e.g. a transaction check-back).
pub fn encode_to_vec(
    msg: &StoreMessage<'_>,
    max_body: usize,
    queue_offset: u64,
    physical_offset: u64,
    store_timestamp: i64,
) -> Result<Vec<u8>, EncodeError> {
    let len = record_len(msg, max_body)?;
    let mut scratch = Vec::new();
    let parts = encode_record(
        &mut scratch,
        msg,
        len,
        queue_offset,
        physical_offset,
        store_timestamp,
    );
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&scratch[..parts.head_len]);
    out.extend_from_slice(msg.body);
    out.extend_from_slice(&scratch[parts.head_len..]);
    debug_assert_eq!(out.len(), len);
    Ok(out)
}

/// Encodes `msg` into `scratch` (cleared first) as head then tail. Returns the split point.
/// `total_len` must come from [`record_len`].
pub fn encode_record(
    scratch: &mut Vec<u8>,
    msg: &StoreMessage<'_>,
    total_len: usize,
    queue_offset: u64,
    physical_offset: u64,
    store_timestamp: i64,
) -> EncodedParts {
    let mut sys_flag = msg.sys_flag & !(SYSFLAG_BORNHOST_V6 | SYSFLAG_STOREHOST_V6);
    if matches!(msg.born_host, HostAddr::V6(..)) {
        sys_flag |= SYSFLAG_BORNHOST_V6;
    }
    if matches!(msg.store_host, HostAddr::V6(..)) {
        sys_flag |= SYSFLAG_STOREHOST_V6;
    }
    let body_crc = crc32fast::hash(msg.body);
    let head_len = field::BORN_HOST
        + msg.born_host.encoded_len()
        + 8
        + msg.store_host.encoded_len()
        + 4
        + 8
        + 4;
    let props_len = stored_properties_len(msg.properties);
    let tail_len = 1 + msg.topic.len() + 2 + props_len;
    debug_assert_eq!(
        head_len + msg.body.len() + tail_len,
        total_len,
        "record_len and encode_record disagree"
    );
    // Fixed layout: size the buffer once, then write each field in place.
    scratch.clear();
    scratch.resize(head_len + tail_len - CRC32_RESERVED_LEN, 0);
    let mut w = Writer {
        buf: &mut scratch[..],
        at: 0,
    };
    w.put(&(total_len as u32).to_be_bytes());
    w.put(&MESSAGE_MAGIC_CODE.to_be_bytes());
    w.put(&(body_crc & 0x7FFF_FFFF).to_be_bytes());
    w.put(&msg.queue_id.to_be_bytes());
    w.put(&msg.flag.to_be_bytes());
    w.put(&queue_offset.to_be_bytes());
    w.put(&physical_offset.to_be_bytes());
    w.put(&sys_flag.to_be_bytes());
    w.put(&msg.born_timestamp.to_be_bytes());
    w.host(msg.born_host);
    w.put(&store_timestamp.to_be_bytes());
    w.host(msg.store_host);
    w.put(&msg.reconsume_times.to_be_bytes());
    w.put(&msg.prepared_transaction_offset.to_be_bytes());
    w.put(&(msg.body.len() as u32).to_be_bytes());
    debug_assert_eq!(w.at, head_len);
    w.put(&[msg.topic.len() as u8]);
    w.put(msg.topic.as_bytes());
    w.put(&(props_len as u16).to_be_bytes());
    w.put(msg.properties);
    if needs_separator(msg.properties) {
        w.put(&[PROPERTY_SEPARATOR]);
    }
    debug_assert_eq!(w.at, scratch.len());
    // CRC of head ++ body ++ tail-before-the-reserved-bytes. Small bodies are hashed again
    // (cheaper than a combine); large ones reuse the body's CRC through `combine`.
    let mut crc = crc32fast::Hasher::new();
    crc.update(&scratch[..head_len]);
    if msg.body.len() <= 512 {
        crc.update(msg.body);
    } else {
        crc.combine(&crc32fast::Hasher::new_with_initial_len(
            body_crc,
            msg.body.len() as u64,
        ));
    }
    crc.update(&scratch[head_len..]);
    let crc = crc.finalize() & 0x7FFF_FFFF;
    put_crc_property(scratch, crc);
    debug_assert_eq!(
        scratch.len() + msg.body.len(),
        total_len,
        "record_len and encode_record disagree"
    );
    EncodedParts {
        head_len,
        total_len,
    }
}

/// Writes fields one after another into a buffer sized for them.
struct Writer<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) {
        self.buf[self.at..self.at + bytes.len()].copy_from_slice(bytes);
        self.at += bytes.len();
    }
    fn host(&mut self, host: HostAddr) {
        let port = match host {
            HostAddr::V4(ip, port) => {
                self.put(&ip);
                port
            }
            HostAddr::V6(ip, port) => {
                self.put(&ip);
                port
            }
        };
        self.put(&(port as i32).to_be_bytes());
    }
}

fn put_crc_property(out: &mut Vec<u8>, mut crc: u32) {
    out.extend_from_slice(PROPERTY_CRC32);
    out.push(NAME_VALUE_SEPARATOR);
    for _ in 0..10 {
        out.push(b'0' + (crc % 10) as u8);
        crc /= 10;
    }
    out.push(PROPERTY_SEPARATOR);
}

fn parse_crc_digits(digits: &[u8]) -> Option<u32> {
    let mut value: u64 = 0;
    for &d in digits.iter().rev() {
        if !d.is_ascii_digit() {
            return None;
        }
        value = value * 10 + (d - b'0') as u64;
    }
    u32::try_from(value).ok()
}

/// The end-of-segment marker filling `len` bytes (only its first 8 bytes are written).
pub fn blank_marker(len: u32) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(&len.to_be_bytes());
    b[4..].copy_from_slice(&BLANK_MAGIC_CODE.to_be_bytes());
    b
}

/// The first 8 bytes of a commit-log position: a record, a blank marker, or unwritten space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peek {
    Record {
        total_size: u32,
    },
    Blank {
        len: u32,
    },
    /// Zero size and zero magic: never written.
    Empty,
    Garbage {
        total_size: u32,
        magic: u32,
    },
}

pub fn peek(head: &[u8; 8]) -> Peek {
    let total_size = u32::from_be_bytes(head[..4].try_into().expect("4 bytes"));
    let magic = u32::from_be_bytes(head[4..].try_into().expect("4 bytes"));
    match magic {
        MESSAGE_MAGIC_CODE => Peek::Record { total_size },
        BLANK_MAGIC_CODE => Peek::Blank { len: total_size },
        0 if total_size == 0 => Peek::Empty,
        _ => Peek::Garbage { total_size, magic },
    }
}

/// A validated stored record (zero-copy over the commit log's bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRecord {
    bytes: Bytes,
    store_ts_at: usize,
    body_at: usize,
    body_len: usize,
    topic_at: usize,
    topic_len: usize,
    props_at: usize,
    props_len: usize,
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("bounds checked"))
}
fn be_u64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("bounds checked"))
}

impl StoredRecord {
    /// Validates `bytes` as exactly one record: magic, sizes, layout, both CRCs, and (when
    /// given) that it lies where its physical offset field says. Never panics.
    pub fn parse(bytes: Bytes, expected_offset: Option<u64>) -> Result<StoredRecord, RecordError> {
        let b = &bytes[..];
        const MIN: usize = 4 + 4 + 4 + 4 + 4 + 8 + 8 + 4 + 8 + 8 + 8 + 8 + 4 + 8 + 4 + 1 + 2;
        if b.len() < MIN {
            return Err(RecordError::Truncated {
                have: b.len(),
                need: MIN,
            });
        }
        let total = be_u32(b, field::TOTAL_SIZE);
        let magic = be_u32(b, field::MAGIC);
        if magic != MESSAGE_MAGIC_CODE {
            return Err(RecordError::BadMagic(magic));
        }
        if (total as usize) < MIN || total as usize > b.len() {
            return Err(RecordError::BadSize {
                size: total,
                limit: b.len(),
            });
        }
        let b = &b[..total as usize];
        let sys_flag = be_u32(b, field::SYS_FLAG) as i32;
        let born_len = if sys_flag & SYSFLAG_BORNHOST_V6 != 0 {
            20
        } else {
            8
        };
        let store_len = if sys_flag & SYSFLAG_STOREHOST_V6 != 0 {
            20
        } else {
            8
        };
        let store_ts_at = field::BORN_HOST + born_len;
        let body_len_at = store_ts_at + 8 + store_len + 4 + 8;
        let need = body_len_at + 4;
        if b.len() < need {
            return Err(RecordError::Truncated {
                have: b.len(),
                need,
            });
        }
        let body_len = be_u32(b, body_len_at) as usize;
        let body_at = body_len_at + 4;
        let topic_len_at = body_at
            .checked_add(body_len)
            .ok_or(RecordError::BadLayout("body length"))?;
        if topic_len_at + 1 > b.len() {
            return Err(RecordError::BadLayout("body length runs past the record"));
        }
        let topic_len = b[topic_len_at] as usize;
        let topic_at = topic_len_at + 1;
        let props_len_at = topic_at + topic_len;
        if topic_len > MAX_TOPIC_LEN || props_len_at + 2 > b.len() {
            return Err(RecordError::BadLayout("topic length runs past the record"));
        }
        let props_len = u16::from_be_bytes([b[props_len_at], b[props_len_at + 1]]) as usize;
        let props_at = props_len_at + 2;
        if props_at + props_len != b.len() {
            return Err(RecordError::BadLayout(
                "properties do not end where the record does",
            ));
        }
        if let Some(expected) = expected_offset {
            let found = be_u64(b, field::PHYSICAL_OFFSET);
            if found != expected {
                return Err(RecordError::WrongOffset { expected, found });
            }
        }
        let props = &b[props_at..];
        if props_len < CRC32_RESERVED_LEN {
            return Err(RecordError::MissingCrc);
        }
        let reserved = &props[props_len - CRC32_RESERVED_LEN..];
        if &reserved[..PROPERTY_CRC32.len()] != PROPERTY_CRC32
            || reserved[PROPERTY_CRC32.len()] != NAME_VALUE_SEPARATOR
            || reserved[CRC32_RESERVED_LEN - 1] != PROPERTY_SEPARATOR
        {
            return Err(RecordError::MissingCrc);
        }
        let stored = parse_crc_digits(&reserved[PROPERTY_CRC32.len() + 1..CRC32_RESERVED_LEN - 1])
            .ok_or(RecordError::MissingCrc)?;
        let computed = crc32fast::hash(&b[..b.len() - CRC32_RESERVED_LEN]) & 0x7FFF_FFFF;
        if stored != computed {
            return Err(RecordError::RecordCrc { stored, computed });
        }
        // The record CRC covers the body and its BODYCRC field: once it matches, only a writer
        // bug could make those two disagree, so that second pass runs in debug builds only.
        debug_assert_eq!(
            be_u32(b, field::BODY_CRC),
            crc32fast::hash(&b[body_at..body_at + body_len]) & 0x7FFF_FFFF,
            "record CRC matched but BODYCRC does not: the writer is broken"
        );
        let bytes = bytes.slice(..total as usize);
        Ok(StoredRecord {
            bytes,
            store_ts_at,
            body_at,
            body_len,
            topic_at,
            topic_len,
            props_at,
            props_len,
        })
    }

    /// The record exactly as stored: what a pull sends.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }
    pub fn total_size(&self) -> u32 {
        self.bytes.len() as u32
    }
    pub fn queue_id(&self) -> u32 {
        be_u32(&self.bytes, field::QUEUE_ID)
    }
    pub fn flag(&self) -> i32 {
        be_u32(&self.bytes, field::FLAG) as i32
    }
    pub fn queue_offset(&self) -> u64 {
        be_u64(&self.bytes, field::QUEUE_OFFSET)
    }
    pub fn physical_offset(&self) -> u64 {
        be_u64(&self.bytes, field::PHYSICAL_OFFSET)
    }
    pub fn sys_flag(&self) -> i32 {
        be_u32(&self.bytes, field::SYS_FLAG) as i32
    }
    pub fn born_timestamp(&self) -> i64 {
        be_u64(&self.bytes, field::BORN_TIMESTAMP) as i64
    }
    pub fn store_timestamp(&self) -> i64 {
        be_u64(&self.bytes, self.store_ts_at) as i64
    }
    pub fn body(&self) -> Bytes {
        self.bytes.slice(self.body_at..self.body_at + self.body_len)
    }
    pub fn topic(&self) -> &str {
        // Only our own encoder writes topics, from &str; anything else fails the CRC first.
        std::str::from_utf8(&self.bytes[self.topic_at..self.topic_at + self.topic_len])
            .unwrap_or("")
    }
    /// Stored properties, the CRC property included.
    pub fn properties(&self) -> &[u8] {
        &self.bytes[self.props_at..self.props_at + self.props_len]
    }
    pub fn property(&self, name: &str) -> Option<&[u8]> {
        property(self.properties(), name)
    }
    /// The producer's address as stored (what a message stored again keeps).
    pub fn born_host(&self) -> HostAddr {
        let at = field::BORN_HOST;
        let b = &self.bytes[..];
        if self.sys_flag() & SYSFLAG_BORNHOST_V6 != 0 {
            let mut ip = [0u8; 16];
            ip.copy_from_slice(&b[at..at + 16]);
            HostAddr::V6(ip, be_u32(b, at + 16) as u16)
        } else {
            let mut ip = [0u8; 4];
            ip.copy_from_slice(&b[at..at + 4]);
            HostAddr::V4(ip, be_u32(b, at + 4) as u16)
        }
    }
    /// A committed transaction message's half (its commit log offset); 0 otherwise.
    pub fn prepared_transaction_offset(&self) -> i64 {
        let store_len = if self.sys_flag() & SYSFLAG_STOREHOST_V6 != 0 {
            20
        } else {
            8
        };
        be_u64(&self.bytes, self.store_ts_at + 8 + store_len + 4) as i64
    }
    pub fn reconsume_times(&self) -> i32 {
        let mut b = &self.bytes[self.store_ts_at + 8..];
        let store_len = if self.sys_flag() & SYSFLAG_STOREHOST_V6 != 0 {
            20
        } else {
            8
        };
        b.advance(store_len);
        b.get_i32()
    }
}

/// Iterates "name\x01value\x02" pairs; malformed pairs (no separator) are skipped.
pub fn properties(props: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    props
        .split(|&b| b == PROPERTY_SEPARATOR)
        .filter_map(|pair| {
            let at = pair.iter().position(|&b| b == NAME_VALUE_SEPARATOR)?;
            Some((&pair[..at], &pair[at + 1..]))
        })
}

pub fn property<'a>(props: &'a [u8], name: &str) -> Option<&'a [u8]> {
    properties(props)
        .find(|(k, _)| *k == name.as_bytes())
        .map(|(_, v)| v)
}

/// Java's `String.hashCode()` (over UTF-16 code units), which RocketMQ uses for tag codes
/// and index key hashes; consumers in any SDK filter on the same number.
pub fn java_string_hash(s: &str) -> i32 {
    let mut h: i32 = 0;
    if s.is_ascii() {
        for &b in s.as_bytes() {
            h = h.wrapping_mul(31).wrapping_add(b as i32);
        }
    } else {
        for unit in s.encode_utf16() {
            h = h.wrapping_mul(31).wrapping_add(unit as i32);
        }
    }
    h
}

/// The same over raw bytes, lossily decoded as UTF-8 first (as Java would read them).
pub fn java_bytes_hash(b: &[u8]) -> i32 {
    match std::str::from_utf8(b) {
        Ok(s) => java_string_hash(s),
        Err(_) => java_string_hash(&String::from_utf8_lossy(b)),
    }
}

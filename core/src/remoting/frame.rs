//! Framing and header (de)serialization of RocketMQ's remoting protocol:
//!
//! ```text
//! u32 length (of everything after it) | u32 (serialize type << 24 | header length) | header | body
//! ```
//!
//! The header is JSON (type 0) or RocketMQ's binary layout (type 1):
//! `i16 code | u8 language | i16 version | i32 opaque | i32 flag | i32 remark length, remark |
//! i32 ext length, then (i16 key length, key, i32 value length, value)*`.
//!
//! Decoding is total: any byte sequence yields a command, "need more bytes", or an error
//! value naming what is wrong. Nothing here panics on input. It is linear in the frame's
//! size and bounded by [`limits`](super::limits): a header over a limit is refused with an
//! answer, not decoded in full.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::codes::{request, response};
use super::command::{LanguageCode, RemotingCommand, SerializeType};
use super::ext::ExtFields;
use super::limits::{MAX_EXT_FIELDS, MAX_EXT_KEY_LEN, MAX_EXT_VALUE_LEN, MAX_HEADER_BYTES};

/// Default largest frame accepted (Apache's default is 16 MiB too).
pub const DEFAULT_MAX_FRAME: usize = super::limits::MAX_FRAME;
/// Header length lives in 24 bits.
pub const MAX_HEADER_LEN: usize = (1 << 24) - 1;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("frame length {0} cannot hold the header-length field")]
    TooShort(usize),
    #[error("header length {header} exceeds the frame's {available} bytes")]
    BadHeaderLength { header: usize, available: usize },
    #[error("unknown serialize type {0}")]
    UnknownSerializeType(u8),
    #[error("malformed JSON header: {0}")]
    BadJson(String),
    #[error("malformed binary header: {0}")]
    BadBinary(&'static str),
    #[error("header of {0} bytes does not fit the 24-bit length field")]
    HeaderTooLarge(usize),
    /// A well-framed command whose header breaks a limit: the stream is intact, the command
    /// is not served; a request is answered with [`FrameError::response`].
    #[error("refused a command (code {}): {}", .0.code, .0.reason)]
    Refused(Box<Refused>),
}

/// What is known of a refused command: enough to answer it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub code: i32,
    pub opaque: i32,
    pub flag: i32,
    pub version: i32,
    pub serialize_type: SerializeType,
    pub reason: String,
}

impl FrameError {
    /// Whether the connection's framing is lost (it must be closed). A refused command
    /// leaves the stream intact.
    pub fn is_fatal(&self) -> bool {
        !matches!(self, FrameError::Refused(_))
    }

    /// The answer to a refused request: an error with the reason as its remark (a send is
    /// MESSAGE_ILLEGAL, which producers do not retry; anything else SYSTEM_ERROR). None for
    /// fatal errors, responses and oneway requests.
    pub fn response(&self) -> Option<RemotingCommand> {
        let FrameError::Refused(r) = self else {
            return None;
        };
        let mut shape = RemotingCommand::request(r.code, r.opaque);
        shape.flag = r.flag;
        shape.version = r.version;
        shape.serialize_type = r.serialize_type;
        if shape.is_response() || shape.is_oneway() {
            return None;
        }
        let code = match r.code {
            request::SEND_MESSAGE | request::SEND_MESSAGE_V2 | request::SEND_BATCH_MESSAGE => {
                response::MESSAGE_ILLEGAL
            }
            _ => response::SYSTEM_ERROR,
        };
        let remark = format!("request refused: {}", r.reason);
        Some(RemotingCommand::response_to(&shape, code, Some(remark)))
    }
}

/// Splits a byte stream into commands. Keeps no state between frames beyond its limit.
#[derive(Debug, Clone, Copy)]
pub struct FrameDecoder {
    pub max_frame: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder {
            max_frame: DEFAULT_MAX_FRAME,
        }
    }
}

impl FrameDecoder {
    pub fn new(max_frame: usize) -> Self {
        FrameDecoder { max_frame }
    }

    /// Takes one frame off the front of `buf`: `Ok(None)` if it is not all there yet. On a
    /// fatal error ([`FrameError::is_fatal`]) the stream is unusable (framing is lost) and the
    /// connection must be closed; a refused command was taken off and the stream goes on.
    /// Reserves nothing for an announced length: the caller grows `buf` as bytes arrive, so
    /// a peer announcing 16 MiB and sending 4 bytes costs 4 bytes.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<RemotingCommand>, FrameError> {
        if buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes(buf[..4].try_into().expect("4 bytes")) as usize;
        if len > self.max_frame {
            return Err(FrameError::TooLarge {
                len,
                max: self.max_frame,
            });
        }
        if len < 4 {
            return Err(FrameError::TooShort(len));
        }
        if buf.len() < 4 + len {
            return Ok(None);
        }
        buf.advance(4);
        let frame = buf.split_to(len).freeze();
        decode_frame(frame).map(Some)
    }
}

/// Decodes one frame (without its leading length field).
pub fn decode_frame(frame: Bytes) -> Result<RemotingCommand, FrameError> {
    decode_frame_counted(frame).0
}

/// [`decode_frame`], and the work it did: bytes scanned plus key comparisons resolving
/// duplicate header keys. Linear in the frame's size (the codec's property tests hold it to
/// that, so no header shape can make decoding slow).
pub fn decode_frame_counted(mut frame: Bytes) -> (Result<RemotingCommand, FrameError>, u64) {
    if frame.len() < 4 {
        return (Err(FrameError::TooShort(frame.len())), 0);
    }
    let mark = frame.get_u32();
    let ser = (mark >> 24) as u8;
    let header_len = (mark & 0x00FF_FFFF) as usize;
    if header_len > frame.len() {
        let e = FrameError::BadHeaderLength {
            header: header_len,
            available: frame.len(),
        };
        return (Err(e), 4);
    }
    let header = frame.split_to(header_len);
    let body = frame;
    let too_big = (header_len > MAX_HEADER_BYTES)
        .then(|| format!("header of {header_len} bytes exceeds the limit of {MAX_HEADER_BYTES}"));
    let (decoded, work) = match ser {
        0 => decode_json(&header, too_big),
        1 => decode_binary(header, too_big),
        other => (Err(FrameError::UnknownSerializeType(other)), 0),
    };
    let decoded = decoded.and_then(|(mut cmd, refused)| match refused {
        Some(reason) => Err(FrameError::Refused(Box::new(Refused {
            code: cmd.code,
            opaque: cmd.opaque,
            flag: cmd.flag,
            version: cmd.version,
            serialize_type: cmd.serialize_type,
            reason,
        }))),
        None => {
            cmd.body = body;
            Ok(cmd)
        }
    });
    (decoded, 4 + work)
}

/// A decoded header and the limit it broke, if any; and the work done.
type HeaderResult = (Result<(RemotingCommand, Option<String>), FrameError>, u64);

fn decode_json(header: &[u8], too_big: Option<String>) -> HeaderResult {
    let mut cmd = RemotingCommand::request(0, 0);
    cmd.language = LanguageCode::Other;
    cmd.serialize_type = SerializeType::Json;
    match super::json::decode_header(header, &mut cmd, too_big) {
        Ok(d) => (Ok((cmd, d.refused)), d.work),
        Err(e) => (Err(FrameError::BadJson(e)), header.len() as u64),
    }
}

fn take_str<'b>(b: &mut &'b [u8], len: usize, what: &'static str) -> Result<&'b str, FrameError> {
    if b.len() < len {
        return Err(FrameError::BadBinary(what));
    }
    let (s, rest) = b.split_at(len);
    *b = rest;
    std::str::from_utf8(s).map_err(|_| FrameError::BadBinary("a string is not UTF-8"))
}

fn decode_binary(header: Bytes, too_big: Option<String>) -> HeaderResult {
    let work = header.len() as u64;
    match binary_header(&header, too_big) {
        Ok((mut cmd, refused)) => {
            let comparisons = cmd.ext_fields.finish_decode();
            (Ok((cmd, refused)), work + comparisons)
        }
        Err(e) => (Err(e), work),
    }
}

fn binary_header(
    header: &[u8],
    mut refused: Option<String>,
) -> Result<(RemotingCommand, Option<String>), FrameError> {
    const FIXED: usize = 2 + 1 + 2 + 4 + 4 + 4;
    let mut b: &[u8] = header;
    if b.remaining() < FIXED {
        return Err(FrameError::BadBinary("shorter than the fixed fields"));
    }
    let code = b.get_i16() as i32;
    let language = LanguageCode::from_code(b.get_u8());
    let version = b.get_i16() as i32;
    let opaque = b.get_i32();
    let flag = b.get_i32();
    let mut cmd = RemotingCommand {
        code,
        language,
        version,
        opaque,
        flag,
        remark: None,
        ext_fields: ExtFields::new(),
        serialize_type: SerializeType::RocketMq,
        body: Bytes::new(),
    };
    if refused.is_some() {
        // Over the header limit: the fixed fields are all an answer needs.
        return Ok((cmd, refused));
    }
    let remark_len = b.get_i32();
    if remark_len > 0 {
        let remark = take_str(&mut b, remark_len as usize, "remark runs past the header")?;
        // Cut at MAX_REMARK_LEN (on a char boundary): it is only ever shown.
        let cut = (0..=remark.len().min(super::limits::MAX_REMARK_LEN))
            .rev()
            .find(|&n| remark.is_char_boundary(n))
            .unwrap_or(0);
        cmd.remark = Some(remark[..cut].to_string());
    }
    if b.remaining() < 4 {
        return Err(FrameError::BadBinary("no ext fields length"));
    }
    let ext_len = b.get_i32();
    if ext_len > 0 {
        if b.remaining() < ext_len as usize {
            return Err(FrameError::BadBinary("ext fields run past the header"));
        }
        let mut ext = &b[..ext_len as usize];
        let mut count = 0usize;
        while ext.has_remaining() {
            if ext.remaining() < 2 {
                return Err(FrameError::BadBinary("truncated ext key length"));
            }
            let klen = ext.get_i16();
            if klen < 0 {
                return Err(FrameError::BadBinary("negative ext key length"));
            }
            let key = take_str(&mut ext, klen as usize, "ext key runs past the fields")?;
            if ext.remaining() < 4 {
                return Err(FrameError::BadBinary("truncated ext value length"));
            }
            let vlen = ext.get_i32();
            if vlen < 0 {
                return Err(FrameError::BadBinary("negative ext value length"));
            }
            let value = take_str(&mut ext, vlen as usize, "ext value runs past the fields")?;
            count += 1;
            if refused.is_none() {
                refused = if count > MAX_EXT_FIELDS {
                    Some(format!("more than {MAX_EXT_FIELDS} extFields"))
                } else if key.len() > MAX_EXT_KEY_LEN {
                    Some(format!(
                        "a header key is longer than {MAX_EXT_KEY_LEN} bytes"
                    ))
                } else if value.len() > MAX_EXT_VALUE_LEN {
                    Some(format!(
                        "extFields value of {key:?} is longer than {MAX_EXT_VALUE_LEN} bytes"
                    ))
                } else {
                    None
                };
            }
            // Past a limit the fields are still checked for framing, but not kept.
            if refused.is_none() {
                cmd.ext_fields.push_with(key, |w| w.write_str(value));
            }
        }
    }
    Ok((cmd, refused))
}

/// Writes `s` as a JSON string literal.
fn json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    // Most strings need no escape at all: one scan, one copy.
    let Some(first) = bytes
        .iter()
        .position(|&b| b < 0x20 || b == b'"' || b == b'\\')
    else {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    };
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate().skip(first) {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if esc.is_empty() {
            // Control characters as \u00XX: a properties string has two per property.
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[(b >> 4) as usize]);
            out.push(HEX[(b & 0xf) as usize]);
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

fn json_int(out: &mut Vec<u8>, key: &str, v: i32) {
    use std::io::Write as _;
    json_str(out, key);
    // Writing into a Vec cannot fail.
    let _ = write!(out, ":{v},");
}

/// Encodes the header the command's `serialize_type` names.
pub fn encode_header(cmd: &RemotingCommand, out: &mut Vec<u8>) -> Result<(), FrameError> {
    out.clear();
    match cmd.serialize_type {
        SerializeType::Json => {
            // Hand-written: the header's shape is fixed, and serde_json's Value would allocate.
            out.push(b'{');
            json_int(out, "code", cmd.code);
            json_str(out, "language");
            out.push(b':');
            json_str(out, cmd.language.name());
            out.push(b',');
            json_int(out, "version", cmd.version);
            json_int(out, "opaque", cmd.opaque);
            json_int(out, "flag", cmd.flag);
            if let Some(r) = &cmd.remark {
                json_str(out, "remark");
                out.push(b':');
                json_str(out, r);
                out.push(b',');
            }
            if !cmd.ext_fields.is_empty() {
                json_str(out, "extFields");
                out.extend_from_slice(b":{");
                for (n, (k, v)) in cmd.ext_fields.iter().enumerate() {
                    if n > 0 {
                        out.push(b',');
                    }
                    json_str(out, k);
                    out.push(b':');
                    json_str(out, v);
                }
                out.extend_from_slice(b"},");
            }
            json_str(out, "serializeTypeCurrentRPC");
            out.extend_from_slice(b":\"JSON\"}");
        }
        SerializeType::RocketMq => {
            out.put_i16(cmd.code as i16);
            out.put_u8(cmd.language.code());
            out.put_i16(cmd.version as i16);
            out.put_i32(cmd.opaque);
            out.put_i32(cmd.flag);
            match &cmd.remark {
                Some(r) if !r.is_empty() => {
                    out.put_i32(r.len() as i32);
                    out.put_slice(r.as_bytes());
                }
                _ => out.put_i32(0),
            }
            let ext_len: usize = cmd
                .ext_fields
                .iter()
                .map(|(k, v)| 2 + k.len() + 4 + v.len())
                .sum();
            out.put_i32(ext_len as i32);
            for (k, v) in cmd.ext_fields.iter() {
                if k.len() > i16::MAX as usize {
                    return Err(FrameError::BadBinary("ext key longer than 32767 bytes"));
                }
                out.put_i16(k.len() as i16);
                out.put_slice(k.as_bytes());
                out.put_i32(v.len() as i32);
                out.put_slice(v.as_bytes());
            }
        }
    }
    if out.len() > MAX_HEADER_LEN {
        return Err(FrameError::HeaderTooLarge(out.len()));
    }
    Ok(())
}

/// Appends a whole frame for `cmd` to `out`. `scratch` is a reusable header buffer.
pub fn encode(
    cmd: &RemotingCommand,
    scratch: &mut Vec<u8>,
    out: &mut BytesMut,
) -> Result<(), FrameError> {
    encode_header(cmd, scratch)?;
    let len = 4 + scratch.len() + cmd.body.len();
    out.reserve(4 + len);
    out.put_u32(len as u32);
    out.put_u32(((cmd.serialize_type as u32) << 24) | scratch.len() as u32);
    out.put_slice(scratch);
    out.put_slice(&cmd.body);
    Ok(())
}

/// The frame prefix and header only, for drivers that write the body from its own buffer
/// (a pull response's stored records) without copying it.
pub fn encode_prefix(
    cmd: &RemotingCommand,
    body_len: usize,
    scratch: &mut Vec<u8>,
    out: &mut BytesMut,
) -> Result<(), FrameError> {
    encode_header(cmd, scratch)?;
    out.put_u32((4 + scratch.len() + body_len) as u32);
    out.put_u32(((cmd.serialize_type as u32) << 24) | scratch.len() as u32);
    out.put_slice(scratch);
    Ok(())
}

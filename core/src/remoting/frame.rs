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
//! value naming what is wrong. Nothing here panics on input.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::command::{LanguageCode, RemotingCommand, SerializeType};
use super::ext::ExtFields;

/// Default largest frame accepted (Apache's default is 16 MiB too).
pub const DEFAULT_MAX_FRAME: usize = 16 << 20;
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

    /// Takes one frame off the front of `buf`: `Ok(None)` if it is not all there yet. On
    /// error the stream is unusable (framing is lost) and the connection must be closed.
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
            buf.reserve(4 + len - buf.len());
            return Ok(None);
        }
        buf.advance(4);
        let frame = buf.split_to(len).freeze();
        decode_frame(frame).map(Some)
    }
}

/// Decodes one frame (without its leading length field).
pub fn decode_frame(mut frame: Bytes) -> Result<RemotingCommand, FrameError> {
    if frame.len() < 4 {
        return Err(FrameError::TooShort(frame.len()));
    }
    let mark = frame.get_u32();
    let ser = (mark >> 24) as u8;
    let header_len = (mark & 0x00FF_FFFF) as usize;
    if header_len > frame.len() {
        return Err(FrameError::BadHeaderLength {
            header: header_len,
            available: frame.len(),
        });
    }
    let header = frame.split_to(header_len);
    let body = frame;
    let mut cmd = match ser {
        0 => decode_json(&header)?,
        1 => decode_binary(header)?,
        other => return Err(FrameError::UnknownSerializeType(other)),
    };
    cmd.body = body;
    Ok(cmd)
}

fn decode_json(header: &[u8]) -> Result<RemotingCommand, FrameError> {
    let mut cmd = RemotingCommand::request(0, 0);
    cmd.language = LanguageCode::Other;
    super::json::decode_header(header, &mut cmd).map_err(FrameError::BadJson)?;
    cmd.serialize_type = SerializeType::Json;
    Ok(cmd)
}

fn take_str<'b>(b: &mut &'b [u8], len: usize, what: &'static str) -> Result<&'b str, FrameError> {
    if b.len() < len {
        return Err(FrameError::BadBinary(what));
    }
    let (s, rest) = b.split_at(len);
    *b = rest;
    std::str::from_utf8(s).map_err(|_| FrameError::BadBinary("a string is not UTF-8"))
}

fn decode_binary(header: Bytes) -> Result<RemotingCommand, FrameError> {
    const FIXED: usize = 2 + 1 + 2 + 4 + 4 + 4;
    let mut b: &[u8] = &header;
    if b.remaining() < FIXED {
        return Err(FrameError::BadBinary("shorter than the fixed fields"));
    }
    let code = b.get_i16() as i32;
    let language = LanguageCode::from_code(b.get_u8());
    let version = b.get_i16() as i32;
    let opaque = b.get_i32();
    let flag = b.get_i32();
    let remark_len = b.get_i32();
    let remark = if remark_len > 0 {
        Some(take_str(&mut b, remark_len as usize, "remark runs past the header")?.to_string())
    } else {
        None
    };
    if b.remaining() < 4 {
        return Err(FrameError::BadBinary("no ext fields length"));
    }
    let ext_len = b.get_i32();
    let mut ext_fields = ExtFields::new();
    if ext_len > 0 {
        if b.remaining() < ext_len as usize {
            return Err(FrameError::BadBinary("ext fields run past the header"));
        }
        let mut ext = &b[..ext_len as usize];
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
            ext_fields.insert_with(key, |w| w.write_str(value));
        }
    }
    Ok(RemotingCommand {
        code,
        language,
        version,
        opaque,
        flag,
        remark,
        ext_fields,
        serialize_type: SerializeType::RocketMq,
        body: Bytes::new(),
    })
}

/// Writes `s` as a JSON string literal.
fn json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
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
            out.extend_from_slice(format!("\\u{b:04x}").as_bytes());
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

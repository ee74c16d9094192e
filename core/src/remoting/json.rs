//! A JSON reader for remoting headers, written for the hot path: strings are unescaped
//! straight into the command's `ExtFields` arena, so decoding a request allocates nothing.
//! Total on any input: every malformed byte sequence is an error message, never a panic;
//! nesting is bounded. Linear in the header's length: each byte is looked at a bounded
//! number of times, and duplicate keys are resolved once at the end (see `limits`).

use smallvec::SmallVec;

use super::command::{LanguageCode, RemotingCommand};
use super::ext::ExtFields;
use super::limits::{
    MAX_EXT_FIELDS, MAX_EXT_KEY_LEN, MAX_EXT_VALUE_LEN, MAX_JSON_DEPTH, MAX_NUMBER_LEN,
    MAX_REMARK_LEN,
};

type Key = SmallVec<[u8; 64]>;

struct Reader<'a> {
    b: &'a [u8],
    /// `b` as text (the header made UTF-8 once, up front), so the pieces of strings are
    /// sliced from it rather than validated one by one.
    t: &'a str,
    i: usize,
    /// The first limit the header broke: it is answered with this, not served. From then on
    /// nothing more is stored, but the scan goes on for the code, opaque and flag.
    over: Option<String>,
}

/// Appends `s` to `buf` up to `cap` bytes in all; false if something was cut.
fn push_capped<const N: usize>(buf: &mut SmallVec<[u8; N]>, s: &str, cap: usize) -> bool {
    let room = cap.saturating_sub(buf.len());
    buf.extend_from_slice(&s.as_bytes()[..s.len().min(room)]);
    s.len() <= room
}

/// What decoding a JSON header found beyond the fields it filled in.
pub(super) struct Decoded {
    /// The limit the header broke, if any: the request is answered with it, not served.
    pub refused: Option<String>,
    /// Work done: bytes scanned plus key comparisons resolving duplicates.
    pub work: u64,
}

/// A scalar as the header holds it: string contents are written by `string_into`.
enum Scalar<'a> {
    Str,
    Number(&'a str),
    Bool(bool),
    Null,
    Other,
}

impl<'a> Reader<'a> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> Result<(), String> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(format!("expected '{}' at byte {}", c as char, self.i))
        }
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let s = self
            .b
            .get(self.i..self.i + 4)
            .ok_or("truncated \\u escape")?;
        // Digit by digit: every property separator of a Java client's header is one.
        let mut v = 0u32;
        for &c in s {
            let d = match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                b'A'..=b'F' => c - b'A' + 10,
                _ => return Err(format!("bad \\u escape {:?}", String::from_utf8_lossy(s))),
            };
            v = v << 4 | d as u32;
        }
        self.i += 4;
        Ok(v)
    }

    /// Reads a string (the opening quote next), handing its unescaped text to `sink` in pieces.
    fn string_into(&mut self, sink: &mut dyn FnMut(&str)) -> Result<(), String> {
        self.eat(b'"')?;
        loop {
            let start = self.i;
            self.i += self.b[start..]
                .iter()
                .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
                .unwrap_or(self.b.len() - start);
            if self.i > start {
                // A piece ends at an ASCII byte (or the input's end): a char boundary.
                sink(&self.t[start..self.i]);
            }
            match self.b.get(self.i) {
                None => return Err("unterminated string".into()),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    self.i += 1;
                    let esc = *self.b.get(self.i).ok_or("truncated escape")?;
                    self.i += 1;
                    let ch = match esc {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hi = self.hex4()?;
                            let code = if (0xD800..0xDC00).contains(&hi)
                                && self.b.get(self.i..self.i + 2) == Some(b"\\u")
                            {
                                self.i += 2;
                                let lo = self.hex4()?;
                                if (0xDC00..0xE000).contains(&lo) {
                                    0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                                } else {
                                    0xFFFD
                                }
                            } else {
                                hi
                            };
                            char::from_u32(code).unwrap_or('\u{FFFD}')
                        }
                        other => return Err(format!("bad escape '\\{}'", other as char)),
                    };
                    sink(ch.encode_utf8(&mut [0u8; 4]));
                }
                Some(_) => return Err("control character in a string".into()),
            }
        }
    }

    /// Skips a string (the opening quote next) without unescaping it: one tight scan, its
    /// escapes still checked (its UTF-8 was, with the whole header), for what nobody reads.
    fn skip_string(&mut self) -> Result<(), String> {
        self.eat(b'"')?;
        loop {
            let rest = &self.b[self.i..];
            let n = rest
                .iter()
                .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
                .ok_or("unterminated string")?;
            self.i += n;
            match self.b[self.i] {
                b'"' => {
                    self.i += 1;
                    return Ok(());
                }
                b'\\' => {
                    let esc = *self.b.get(self.i + 1).ok_or("truncated escape")?;
                    self.i += 2;
                    match esc {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                        b'u' => {
                            self.hex4()?;
                        }
                        other => return Err(format!("bad escape '\\{}'", other as char)),
                    }
                }
                _ => return Err("control character in a string".into()),
            }
        }
    }

    /// Notes the first limit broken.
    fn refuse(&mut self, why: impl FnOnce() -> String) {
        if self.over.is_none() {
            self.over = Some(why());
        }
    }

    /// A key, kept up to `MAX_EXT_KEY_LEN` bytes; a longer one is a broken limit.
    fn key(&mut self) -> Result<Key, String> {
        let mut k = Key::new();
        let mut cut = false;
        self.string_into(&mut |s| cut |= !push_capped(&mut k, s, MAX_EXT_KEY_LEN))?;
        if cut {
            self.refuse(|| format!("a header key is longer than {MAX_EXT_KEY_LEN} bytes"));
        }
        Ok(k)
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), String> {
        if self.b.get(self.i..self.i + word.len()) == Some(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(format!("bad literal at byte {}", self.i))
        }
    }

    fn number(&mut self) -> Result<&'a str, String> {
        let start = self.i;
        while let Some(b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9') = self.b.get(self.i) {
            self.i += 1;
        }
        if self.i - start > MAX_NUMBER_LEN {
            return Err(format!(
                "number at byte {start} is longer than {MAX_NUMBER_LEN} characters"
            ));
        }
        let s = &self.t[start..self.i];
        // Plain integers (nearly every number of a header) need no float parse to be valid.
        let digits = s.strip_prefix('-').unwrap_or(s);
        let integer = !digits.is_empty() && digits.bytes().all(|c| c.is_ascii_digit());
        if !integer && (s.is_empty() || s.parse::<f64>().is_err()) {
            return Err(format!("bad number at byte {start}"));
        }
        Ok(s)
    }

    /// Skips any value, bounded in depth.
    fn skip(&mut self, depth: usize) -> Result<(), String> {
        if depth > MAX_JSON_DEPTH {
            return Err("nesting too deep".into());
        }
        match self.peek().ok_or("unexpected end")? {
            b'"' => self.skip_string(),
            b'{' => {
                self.i += 1;
                if self.peek() == Some(b'}') {
                    self.i += 1;
                    return Ok(());
                }
                loop {
                    self.skip_string()?;
                    self.eat(b':')?;
                    self.skip(depth + 1)?;
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(());
                        }
                        _ => return Err(format!("expected ',' or '}}' at byte {}", self.i)),
                    }
                }
            }
            b'[' => {
                self.i += 1;
                if self.peek() == Some(b']') {
                    self.i += 1;
                    return Ok(());
                }
                loop {
                    self.skip(depth + 1)?;
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(());
                        }
                        _ => return Err(format!("expected ',' or ']' at byte {}", self.i)),
                    }
                }
            }
            _ => self.scalar(&mut |_| {}).map(|_| ()),
        }
    }

    /// Reads a scalar; a string's text goes to `sink`. Arrays and objects are skipped.
    fn scalar(&mut self, sink: &mut dyn FnMut(&str)) -> Result<Scalar<'a>, String> {
        match self.peek().ok_or("unexpected end")? {
            b'"' => {
                self.string_into(sink)?;
                Ok(Scalar::Str)
            }
            b't' => self.literal(b"true").map(|_| Scalar::Bool(true)),
            b'f' => self.literal(b"false").map(|_| Scalar::Bool(false)),
            b'n' => self.literal(b"null").map(|_| Scalar::Null),
            b'{' | b'[' => self.skip(1).map(|_| Scalar::Other),
            _ => self.number().map(Scalar::Number),
        }
    }

    /// An integer field; strings holding integers are accepted, as SDKs send both.
    fn int(&mut self, field: &str) -> Result<i32, String> {
        let mut text: SmallVec<[u8; 24]> = SmallVec::new();
        // Past 64 bytes it is no integer anyway: what is kept then fails to parse.
        let s = self.scalar(&mut |s| {
            push_capped(&mut text, s, MAX_NUMBER_LEN + 1);
        })?;
        let bad = || format!("{field} is not a 32-bit integer");
        match s {
            Scalar::Null => Ok(0),
            Scalar::Number(n) => n.parse().map_err(|_| bad()),
            Scalar::Str => std::str::from_utf8(&text)
                .ok()
                .and_then(|t| t.trim().parse().ok())
                .ok_or_else(bad),
            _ => Err(bad()),
        }
    }

    fn ext_fields(&mut self, ext: &mut ExtFields) -> Result<(), String> {
        match self.peek() {
            Some(b'n') => return self.literal(b"null"),
            Some(b'{') => self.i += 1,
            _ => return Err("extFields is not an object".into()),
        }
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(());
        }
        loop {
            let key = if self.over.is_some() {
                self.skip_string()?;
                Key::new()
            } else {
                self.key()?
            };
            self.eat(b':')?;
            if self.over.is_none() && ext.len() >= MAX_EXT_FIELDS {
                self.refuse(|| format!("more than {MAX_EXT_FIELDS} extFields"));
            }
            if self.over.is_some() {
                // Over a limit: scan on, keep nothing.
                self.skip(1)?;
            } else {
                let key = std::str::from_utf8(&key).map_err(|_| "a key is not UTF-8")?;
                let mut err = None;
                let mut kind = Scalar::Other;
                let mut written = 0usize;
                ext.push_with(key, |w| {
                    let mut put = |s: &str| {
                        let room = MAX_EXT_VALUE_LEN.saturating_sub(written);
                        if s.len() <= room {
                            let _ = w.write_str(s);
                        } else {
                            // Cut at a char boundary: the arena holds UTF-8 only.
                            let n = (0..=room)
                                .rev()
                                .find(|&n| s.is_char_boundary(n))
                                .unwrap_or(0);
                            let _ = w.write_str(&s[..n]);
                        }
                        written += s.len();
                    };
                    match self.scalar(&mut put) {
                        Ok(Scalar::Number(n)) => {
                            put(n);
                            kind = Scalar::Number(n);
                        }
                        Ok(Scalar::Bool(b)) => {
                            put(if b { "true" } else { "false" });
                            kind = Scalar::Bool(b);
                        }
                        Ok(other) => kind = other,
                        Err(e) => err = Some(e),
                    }
                    Ok(())
                });
                if let Some(e) = err {
                    return Err(e);
                }
                if written > MAX_EXT_VALUE_LEN {
                    self.refuse(|| {
                        format!(
                            "extFields value of {key:?} is longer than {MAX_EXT_VALUE_LEN} bytes"
                        )
                    });
                }
                // null and non-scalars mean "absent", as Java's maps would hold nothing useful.
                if matches!(kind, Scalar::Null | Scalar::Other) {
                    ext.mark_last_absent();
                }
            }
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(format!("expected ',' or '}}' at byte {}", self.i)),
            }
        }
    }
}

/// Fills `cmd` from a JSON header. `refused` is a limit already known broken (the header's
/// size): then only the code, opaque and flag are read. Errors are malformed input.
pub(super) fn decode_header(
    input: &[u8],
    cmd: &mut RemotingCommand,
    refused: Option<String>,
) -> Result<Decoded, String> {
    // As Apache's broker reads a header (`new String(bytes, UTF_8)`, then fastjson): bytes
    // that are not UTF-8 become U+FFFD rather than an error (a copy made only then).
    let text = match std::str::from_utf8(input) {
        Ok(t) => std::borrow::Cow::Borrowed(t),
        Err(_) => String::from_utf8_lossy(input),
    };
    let mut r = Reader {
        b: text.as_bytes(),
        t: &text,
        i: 0,
        over: refused,
    };
    if r.peek() != Some(b'{') {
        return Err("header is not a JSON object".into());
    }
    r.i += 1;
    if r.peek() == Some(b'}') {
        r.i += 1;
    } else {
        loop {
            let key = r.key()?;
            r.eat(b':')?;
            match &key[..] {
                b"code" => cmd.code = r.int("code")?,
                b"version" => cmd.version = r.int("version")?,
                b"opaque" => cmd.opaque = r.int("opaque")?,
                b"flag" => cmd.flag = r.int("flag")?,
                b"language" => {
                    let mut name: SmallVec<[u8; 16]> = SmallVec::new();
                    cmd.language = match r.scalar(&mut |s| {
                        push_capped(&mut name, s, 16);
                    })? {
                        Scalar::Str => {
                            LanguageCode::from_name(std::str::from_utf8(&name).unwrap_or(""))
                        }
                        Scalar::Number(n) => LanguageCode::from_code(n.parse::<u8>().unwrap_or(7)),
                        _ => LanguageCode::Other,
                    };
                }
                b"remark" if r.over.is_some() => r.skip(1)?,
                b"remark" => {
                    // Cut at MAX_REMARK_LEN (on a char boundary): it is only ever shown.
                    let mut text = String::new();
                    let mut put = |s: &str| {
                        let room = MAX_REMARK_LEN.saturating_sub(text.len());
                        let n = (0..=s.len().min(room))
                            .rev()
                            .find(|&n| s.is_char_boundary(n))
                            .unwrap_or(0);
                        text.push_str(&s[..n]);
                    };
                    cmd.remark = match r.scalar(&mut put)? {
                        Scalar::Str => Some(text),
                        Scalar::Number(n) => Some(n.to_string()),
                        Scalar::Bool(b) => Some(b.to_string()),
                        Scalar::Null | Scalar::Other => None,
                    };
                }
                b"extFields" => r.ext_fields(&mut cmd.ext_fields)?,
                _ => r.skip(1)?,
            }
            match r.peek() {
                Some(b',') => r.i += 1,
                Some(b'}') => {
                    r.i += 1;
                    break;
                }
                _ => return Err(format!("expected ',' or '}}' at byte {}", r.i)),
            }
        }
    }
    if r.peek().is_some() {
        return Err(format!("trailing bytes after the header at byte {}", r.i));
    }
    let comparisons = cmd.ext_fields.finish_decode();
    Ok(Decoded {
        refused: r.over,
        work: r.i as u64 + comparisons,
    })
}

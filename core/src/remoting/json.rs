//! A JSON reader for remoting headers, written for the hot path: strings are unescaped
//! straight into the command's `ExtFields` arena, so decoding a request allocates nothing.
//! Total on any input: every malformed byte sequence is an error message, never a panic;
//! nesting is bounded.

use smallvec::SmallVec;

use super::command::{LanguageCode, RemotingCommand};
use super::ext::ExtFields;

const MAX_DEPTH: usize = 32;

type Key = SmallVec<[u8; 64]>;

struct Reader<'a> {
    b: &'a [u8],
    i: usize,
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
        let s = std::str::from_utf8(s).map_err(|_| "bad \\u escape")?;
        let v = u32::from_str_radix(s, 16).map_err(|_| format!("bad \\u escape {s:?}"))?;
        self.i += 4;
        Ok(v)
    }

    /// Reads a string (the opening quote next), handing its unescaped text to `sink` in pieces.
    fn string_into(&mut self, sink: &mut dyn FnMut(&str)) -> Result<(), String> {
        self.eat(b'"')?;
        loop {
            let start = self.i;
            while let Some(&c) = self.b.get(self.i) {
                if c == b'"' || c == b'\\' || c < 0x20 {
                    break;
                }
                self.i += 1;
            }
            if self.i > start {
                sink(
                    std::str::from_utf8(&self.b[start..self.i])
                        .map_err(|_| "a string is not UTF-8")?,
                );
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

    fn key(&mut self) -> Result<Key, String> {
        let mut k = Key::new();
        self.string_into(&mut |s| k.extend_from_slice(s.as_bytes()))?;
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
        let s = std::str::from_utf8(&self.b[start..self.i]).map_err(|_| "bad number")?;
        if s.is_empty() || s.parse::<f64>().is_err() {
            return Err(format!("bad number at byte {start}"));
        }
        Ok(s)
    }

    /// Skips any value, bounded in depth.
    fn skip(&mut self, depth: usize) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err("nesting too deep".into());
        }
        match self.peek().ok_or("unexpected end")? {
            b'"' => self.string_into(&mut |_| {}),
            b'{' => {
                self.i += 1;
                if self.peek() == Some(b'}') {
                    self.i += 1;
                    return Ok(());
                }
                loop {
                    self.string_into(&mut |_| {})?;
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
        let s = self.scalar(&mut |s| text.extend_from_slice(s.as_bytes()))?;
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
            let key = self.key()?;
            let key = std::str::from_utf8(&key).map_err(|_| "a key is not UTF-8")?;
            self.eat(b':')?;
            let mut err = None;
            let mut kind = Scalar::Other;
            ext.insert_with(key, |w| {
                match self.scalar(&mut |s| {
                    let _ = w.write_str(s);
                }) {
                    Ok(Scalar::Number(n)) => {
                        let _ = w.write_str(n);
                        kind = Scalar::Number(n);
                    }
                    Ok(Scalar::Bool(b)) => {
                        let _ = w.write_str(if b { "true" } else { "false" });
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
            // null and non-scalars mean "absent", as Java's maps would hold nothing useful.
            if matches!(kind, Scalar::Null | Scalar::Other) {
                ext.remove(key);
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

/// Fills `cmd` from a JSON header.
pub(super) fn decode_header(input: &[u8], cmd: &mut RemotingCommand) -> Result<(), String> {
    let mut r = Reader { b: input, i: 0 };
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
                    cmd.language = match r.scalar(&mut |s| name.extend_from_slice(s.as_bytes()))? {
                        Scalar::Str => {
                            LanguageCode::from_name(std::str::from_utf8(&name).unwrap_or(""))
                        }
                        Scalar::Number(n) => LanguageCode::from_code(n.parse::<u8>().unwrap_or(7)),
                        _ => LanguageCode::Other,
                    };
                }
                b"remark" => {
                    let mut text = String::new();
                    cmd.remark = match r.scalar(&mut |s| text.push_str(s))? {
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
    Ok(())
}

//! Decoding JSON bodies as leniently as Apache RocketMQ's fastjson does, once, for every body
//! type: SDKs in the field (rocketmq-client-cpp, Go and PHP wrappers, old Java clients) send
//! what fastjson accepts, not what a strict serde derive accepts.
//!
//! What is accepted, whatever the target type:
//! - enums by name or by Java ordinal (declare variants in Java's order);
//! - numbers as strings (`"3"`) and strings as numbers (`3` into a `String`);
//! - booleans as `true`/`false`, `"true"`/`"false"` (any case), `0`/`1`, `"0"`/`"1"`;
//! - `null` as the type's default (0, false, "", empty collection, `None`);
//! - map keys without quotes (`{0:"127.0.0.1:10911"}`, fastjson's form for `Map<Long, _>`),
//!   and objects as keys (`{{"topic":"t",...}:5}`, its form for `Map<MessageQueue, _>`: read
//!   as the key's JSON text in a string, see [`MqTable`]);
//! - unknown fields (ignored, as serde does unless told otherwise).
//!
//! Absent fields still need `#[serde(default)]` on the type: a deserializer is never asked
//! about a field that is not there.

use std::borrow::Cow;

use serde::de::value::{StringDeserializer, U64Deserializer};
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, EnumAccess, IntoDeserializer, MapAccess, SeqAccess,
    VariantAccess, Visitor,
};
use serde_json::{Map, Number, Value};

use crate::remoting::{FieldError, RemotingCommand};

type Error = serde_json::Error;

/// Decodes a JSON body into `T` with fastjson's leniency (see the module doc).
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    let text = quote_bare_keys(body);
    let value: Value = serde_json::from_slice(&text)?;
    T::deserialize(Lenient(value))
}

/// A request's body decoded as `T`; a body that does not decode is the request's error.
pub fn request_body<T: DeserializeOwned>(
    cmd: &RemotingCommand,
    ty: &'static str,
) -> Result<T, FieldError> {
    decode_body(&cmd.body).map_err(|e| FieldError::Invalid {
        field: "body",
        value: e.to_string(),
        ty,
    })
}

/// Quotes object keys written without quotes (fastjson writes `Map<Long, _>` keys bare unless
/// told to be browser compatible). One pass; borrows the input when there is nothing to quote.
pub fn quote_bare_keys(input: &[u8]) -> Cow<'_, [u8]> {
    // What the scanner expects next, per open container: a key (in an object after `{` or
    // `,`) or anything else.
    let mut in_object: Vec<bool> = Vec::new();
    let mut expect_key = false;
    let mut out: Option<Vec<u8>> = None;
    let mut copied = 0;
    let mut i = 0;
    while i < input.len() {
        let b = input[i];
        match b {
            b'"' => {
                // Skip the string, escapes included.
                i += 1;
                while i < input.len() && input[i] != b'"' {
                    i += if input[i] == b'\\' { 2 } else { 1 };
                }
                expect_key = false;
            }
            b'{' if expect_key => {
                // An object as a key: quoted whole, its text escaped.
                let start = i;
                let mut depth = 0usize;
                while i < input.len() {
                    match input[i] {
                        b'"' => {
                            i += 1;
                            while i < input.len() && input[i] != b'"' {
                                i += if input[i] == b'\\' { 2 } else { 1 };
                            }
                        }
                        b'{' => depth += 1,
                        b'}' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    i += 1;
                }
                let end = (i + 1).min(input.len());
                let buf = out.get_or_insert_with(|| Vec::with_capacity(input.len() + 16));
                buf.extend_from_slice(&input[copied..start]);
                buf.push(b'"');
                for &c in &input[start..end] {
                    match c {
                        b'"' | b'\\' => buf.extend_from_slice(&[b'\\', c]),
                        b'\n' => buf.extend_from_slice(b"\\n"),
                        b'\r' => buf.extend_from_slice(b"\\r"),
                        b'\t' => buf.extend_from_slice(b"\\t"),
                        c => buf.push(c),
                    }
                }
                buf.push(b'"');
                copied = end;
                i = end;
                expect_key = false;
                continue;
            }
            b'{' => {
                in_object.push(true);
                expect_key = true;
            }
            b'[' => {
                in_object.push(false);
                expect_key = false;
            }
            b'}' | b']' => {
                in_object.pop();
                expect_key = false;
            }
            b',' => expect_key = in_object.last() == Some(&true),
            b':' => expect_key = false,
            b' ' | b'\t' | b'\n' | b'\r' => {}
            _ if expect_key => {
                let start = i;
                while i < input.len()
                    && !matches!(input[i], b':' | b' ' | b'\t' | b'\n' | b'\r' | b'}' | b',')
                {
                    i += 1;
                }
                let buf = out.get_or_insert_with(|| Vec::with_capacity(input.len() + 16));
                buf.extend_from_slice(&input[copied..start]);
                buf.push(b'"');
                buf.extend_from_slice(&input[start..i]);
                buf.push(b'"');
                copied = i;
                expect_key = false;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    match out {
        None => Cow::Borrowed(input),
        Some(mut buf) => {
            buf.extend_from_slice(&input[copied.min(input.len())..]);
            Cow::Owned(buf)
        }
    }
}

/// A `Map<MessageQueue, V>` as fastjson writes it (each key a JSON object), in key order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqTable<V>(pub Vec<(crate::protocol::MessageQueue, V)>);

impl<V> Default for MqTable<V> {
    fn default() -> Self {
        MqTable(Vec::new())
    }
}

impl<'de, V: serde::Deserialize<'de>> serde::Deserialize<'de> for MqTable<V> {
    fn deserialize<De: serde::Deserializer<'de>>(d: De) -> Result<Self, De::Error> {
        let map: std::collections::BTreeMap<String, V> = serde::Deserialize::deserialize(d)?;
        let mut out = Vec::with_capacity(map.len());
        for (k, v) in map {
            let mq: crate::protocol::MessageQueue =
                decode_body(k.as_bytes()).map_err(de::Error::custom)?;
            out.push((mq, v));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(MqTable(out))
    }
}

/// A JSON value that deserializes into whatever the target type asks for, converting as
/// fastjson would.
pub struct Lenient(pub Value);

fn invalid(what: &str, value: &Value) -> Error {
    let mut shown = value.to_string();
    if shown.len() > 64 {
        let mut cut = 64;
        while !shown.is_char_boundary(cut) {
            cut -= 1;
        }
        shown.truncate(cut);
    }
    de::Error::custom(format_args!("expected {what}, found {shown}"))
}

/// An integer, as fastjson's `castToLong`: numbers (integral floats too), numeric strings,
/// booleans as 1/0, null and "" as 0.
fn integer(value: &Value) -> Result<i128, Error> {
    let from_number = |n: &Number| {
        n.as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 1e38)
                    .map(|f| f as i128)
            })
    };
    match value {
        Value::Number(n) => from_number(n),
        Value::String(s) => {
            let t = s.trim();
            if t.is_empty() || t == "null" {
                Some(0)
            } else {
                t.parse::<i128>()
                    .ok()
                    .or_else(|| t.parse::<Number>().ok().as_ref().and_then(from_number))
            }
        }
        Value::Bool(b) => Some(i128::from(*b)),
        Value::Null => Some(0),
        _ => None,
    }
    .ok_or_else(|| invalid("an integer", value))
}

fn boolean(value: &Value) -> Result<bool, Error> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::Null => Some(false),
        Value::Number(n) => match n.as_i64() {
            Some(1) => Some(true),
            Some(0) => Some(false),
            _ => None,
        },
        Value::String(s) => match s.trim() {
            t if t.eq_ignore_ascii_case("true") || t == "1" => Some(true),
            t if t.eq_ignore_ascii_case("false") || t == "0" || t.is_empty() || t == "null" => {
                Some(false)
            }
            _ => None,
        },
        _ => None,
    }
    .ok_or_else(|| invalid("a boolean", value))
}

fn float(value: &Value) -> Result<f64, Error> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) if s.trim().is_empty() => Some(0.0),
        Value::String(s) => s.trim().parse().ok(),
        Value::Null => Some(0.0),
        _ => None,
    }
    .ok_or_else(|| invalid("a number", value))
}

macro_rules! deserialize_integer {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            let n = integer(&self.0)?;
            // The visitor checks the range of its own type.
            if let Ok(u) = u64::try_from(n) {
                visitor.visit_u64(u)
            } else if let Ok(i) = i64::try_from(n) {
                visitor.visit_i64(i)
            } else {
                Err(invalid("an integer in range", &self.0))
            }
        }
    )*};
}

impl<'de> de::Deserializer<'de> for Lenient {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(b),
            Value::Number(n) => {
                if let Some(u) = n.as_u64() {
                    visitor.visit_u64(u)
                } else if let Some(i) = n.as_i64() {
                    visitor.visit_i64(i)
                } else {
                    visitor.visit_f64(n.as_f64().unwrap_or_default())
                }
            }
            Value::String(s) => visitor.visit_string(s),
            Value::Array(a) => visitor.visit_seq(Seq(a.into_iter())),
            Value::Object(o) => visitor.visit_map(Entries::new(o)),
        }
    }

    deserialize_integer!(deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64);

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_bool(boolean(&self.0)?)
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_f64(float(&self.0)?)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_f64(float(&self.0)?)
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_string(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_string(visitor)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::String(s) => visitor.visit_string(s),
            Value::Number(n) => visitor.visit_string(n.to_string()),
            Value::Bool(b) => visitor.visit_str(if b { "true" } else { "false" }),
            Value::Null => visitor.visit_str(""),
            other => Err(invalid("a string", &other)),
        }
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.0.deserialize_bytes(visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.0.deserialize_byte_buf(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            other => visitor.visit_some(Lenient(other)),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Array(a) => visitor.visit_seq(Seq(a.into_iter())),
            Value::Null => visitor.visit_seq(Seq(Vec::new().into_iter())),
            other => Err(invalid("an array", &other)),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Object(o) => visitor.visit_map(Entries::new(o)),
            Value::Null => visitor.visit_map(Entries::new(Map::new())),
            other => Err(invalid("an object", &other)),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.0 {
            Value::String(s) => visitor.visit_enum(Variant {
                tag: Tag::Name(s),
                value: None,
            }),
            Value::Number(n) => match n.as_u64() {
                // fastjson reads an enum from a number as the Java ordinal.
                Some(i) => visitor.visit_enum(Variant {
                    tag: Tag::Ordinal(i),
                    value: None,
                }),
                None => Err(invalid("an enum ordinal", &Value::Number(n))),
            },
            Value::Object(o) if o.len() == 1 => {
                let (k, v) = o.into_iter().next().expect("one entry");
                visitor.visit_enum(Variant {
                    tag: Tag::Name(k),
                    value: Some(v),
                })
            }
            other => Err(invalid("an enum name or ordinal", &other)),
        }
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Number(n) if n.is_u64() => visitor.visit_u64(n.as_u64().unwrap_or_default()),
            other => Lenient(other).deserialize_string(visitor),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }
}

impl<'de> IntoDeserializer<'de, Error> for Lenient {
    type Deserializer = Lenient;
    fn into_deserializer(self) -> Lenient {
        self
    }
}

struct Seq(std::vec::IntoIter<Value>);

impl<'de> SeqAccess<'de> for Seq {
    type Error = Error;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        self.0
            .next()
            .map(|v| seed.deserialize(Lenient(v)))
            .transpose()
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

struct Entries {
    iter: serde_json::map::IntoIter,
    value: Option<Value>,
}

impl Entries {
    fn new(map: Map<String, Value>) -> Self {
        Entries {
            iter: map.into_iter(),
            value: None,
        }
    }
}

impl<'de> MapAccess<'de> for Entries {
    type Error = Error;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        match self.iter.next() {
            None => Ok(None),
            Some((k, v)) => {
                self.value = Some(v);
                // Keys go through the lenient path too: "0" becomes a u64 key.
                seed.deserialize(Lenient(Value::String(k))).map(Some)
            }
        }
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let v = self.value.take().unwrap_or(Value::Null);
        seed.deserialize(Lenient(v))
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

enum Tag {
    Name(String),
    Ordinal(u64),
}

struct Variant {
    tag: Tag,
    value: Option<Value>,
}

impl<'de> EnumAccess<'de> for Variant {
    type Error = Error;
    type Variant = Payload;
    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, Payload), Error> {
        let tag = match self.tag {
            Tag::Name(s) => {
                let d: StringDeserializer<Error> = s.into_deserializer();
                seed.deserialize(d)?
            }
            Tag::Ordinal(i) => {
                let d: U64Deserializer<Error> = i.into_deserializer();
                seed.deserialize(d)?
            }
        };
        Ok((tag, Payload(self.value)))
    }
}

struct Payload(Option<Value>);

impl<'de> VariantAccess<'de> for Payload {
    type Error = Error;
    fn unit_variant(self) -> Result<(), Error> {
        Ok(())
    }
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Error> {
        seed.deserialize(Lenient(self.0.unwrap_or(Value::Null)))
    }
    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, Error> {
        de::Deserializer::deserialize_seq(Lenient(self.0.unwrap_or(Value::Null)), visitor)
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        de::Deserializer::deserialize_map(Lenient(self.0.unwrap_or(Value::Null)), visitor)
    }
}

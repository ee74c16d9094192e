//! Hostile headers: decoding is linear in the frame's size (a work counter, not a clock,
//! says so), duplicate keys resolve as a Java map would (last one wins), and a header over a
//! limit is refused with an answer while the stream goes on. The bad-input corpus includes
//! the 100k-key header that once took 35 s of CPU.

use std::collections::BTreeMap;

use bytes::{BufMut, BytesMut};
use proptest::prelude::*;
use rockfish_core::remoting::codes::{request, response};
use rockfish_core::remoting::command::{FLAG_ONEWAY, FLAG_RESPONSE};
use rockfish_core::remoting::limits::{
    MAX_EXT_FIELDS, MAX_EXT_KEY_LEN, MAX_EXT_VALUE_LEN, MAX_HEADER_BYTES, MAX_JSON_DEPTH,
    MAX_REMARK_LEN,
};
use rockfish_core::remoting::{
    FrameDecoder, FrameError, RemotingCommand, SerializeType, decode_frame_counted,
};

fn raw_frame(ser: u8, header: &[u8], body: &[u8]) -> BytesMut {
    let mut b = BytesMut::new();
    b.put_u32((4 + header.len() + body.len()) as u32);
    b.put_u32(((ser as u32) << 24) | header.len() as u32);
    b.put_slice(header);
    b.put_slice(body);
    b
}

/// A JSON header as fastjson writes one (fields in alphabetical order: extFields before
/// opaque), with `ext` as raw `"key":value` members.
fn json_header(code: i32, opaque: i32, flag: i32, ext: &str) -> Vec<u8> {
    format!(
        r#"{{"code":{code},"extFields":{{{ext}}},"flag":{flag},"language":"JAVA","opaque":{opaque},"serializeTypeCurrentRPC":"JSON","version":401}}"#
    )
    .into_bytes()
}

fn binary_header(code: i32, opaque: i32, flag: i32, ext: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut h = Vec::new();
    h.put_i16(code as i16);
    h.put_u8(0);
    h.put_i16(401);
    h.put_i32(opaque);
    h.put_i32(flag);
    h.put_i32(0);
    let len: usize = ext.iter().map(|(k, v)| 2 + k.len() + 4 + v.len()).sum();
    h.put_i32(len as i32);
    for (k, v) in ext {
        h.put_i16(k.len() as i16);
        h.put_slice(k);
        h.put_i32(v.len() as i32);
        h.put_slice(v);
    }
    h
}

/// Decodes one whole frame, returning the result and the work counter.
fn decode(ser: u8, header: &[u8]) -> (Result<RemotingCommand, FrameError>, u64) {
    let frame = raw_frame(ser, header, b"body").freeze().slice(4..);
    decode_frame_counted(frame)
}

fn hundred_thousand_keys() -> String {
    (0..100_000)
        .map(|i| format!("\"k{i}\":\"v\""))
        .collect::<Vec<_>>()
        .join(",")
}

#[test]
fn a_hundred_thousand_key_header_is_refused_with_an_answer_and_linear_work() {
    let header = json_header(
        request::GET_ROUTEINFO_BY_TOPIC,
        77,
        0,
        &hundred_thousand_keys(),
    );
    assert!(header.len() > 1_000_000);
    let (got, work) = decode(0, &header);
    let Err(e @ FrameError::Refused(_)) = got else {
        panic!("not refused: {got:?}");
    };
    assert!(!e.is_fatal(), "the stream stays usable");
    assert!(work <= 2 * header.len() as u64, "work {work}");
    let answer = e.response().expect("a request is answered");
    assert!(answer.is_response());
    assert_eq!(
        (answer.code, answer.opaque),
        (response::SYSTEM_ERROR, 77),
        "{answer:?}"
    );
    assert!(
        answer.remark.as_deref().unwrap().contains("limit"),
        "{answer:?}"
    );

    // The same keys in a binary header.
    let keys: Vec<(Vec<u8>, Vec<u8>)> = (0..100_000)
        .map(|i| (format!("k{i}").into_bytes(), b"v".to_vec()))
        .collect();
    let ext: Vec<(&[u8], &[u8])> = keys.iter().map(|(k, v)| (&k[..], &v[..])).collect();
    let header = binary_header(request::SEND_MESSAGE_V2, 78, 0, &ext);
    let (got, work) = decode(1, &header);
    let e = got.expect_err("refused");
    assert!(work <= 2 * header.len() as u64, "work {work}");
    let answer = e.response().expect("answered");
    assert_eq!(
        (answer.code, answer.opaque, answer.serialize_type),
        (response::MESSAGE_ILLEGAL, 78, SerializeType::RocketMq)
    );
}

#[test]
fn a_refused_frame_leaves_the_stream_usable() {
    let mut wire = raw_frame(
        0,
        &json_header(request::HEART_BEAT, 1, 0, &hundred_thousand_keys()),
        b"",
    );
    wire.extend_from_slice(&raw_frame(
        0,
        &json_header(request::HEART_BEAT, 2, 0, ""),
        b"",
    ));
    let d = FrameDecoder::default();
    assert!(matches!(d.decode(&mut wire), Err(FrameError::Refused(r)) if r.opaque == 1));
    let next = d.decode(&mut wire).unwrap().unwrap();
    assert_eq!(next.opaque, 2);
    assert!(wire.is_empty());
}

#[test]
fn duplicate_keys_resolve_once_with_the_last_one_winning() {
    let (cmd, _) = decode(
        0,
        &json_header(
            10,
            1,
            0,
            r#""a":"1","b":"x","a":"2","c":"y","c":null,"b":3"#,
        ),
    );
    let cmd = cmd.unwrap();
    assert_eq!(cmd.ext("a"), Some("2"));
    assert_eq!(cmd.ext("b"), Some("3"));
    assert_eq!(cmd.ext("c"), None, "a later null hides an earlier value");
    assert_eq!(cmd.ext_fields.len(), 2);
    // Past the in-place size too (sorted once).
    let many: String = (0..200)
        .map(|i| format!("\"k{}\":\"{i}\"", i % 50))
        .collect::<Vec<_>>()
        .join(",");
    let cmd = decode(0, &json_header(10, 1, 0, &many)).0.unwrap();
    assert_eq!(cmd.ext_fields.len(), 50);
    assert_eq!(cmd.ext("k7"), Some("157"));
    let cmd = decode(1, &binary_header(10, 1, 0, &[(b"a", b"1"), (b"a", b"2")]))
        .0
        .unwrap();
    assert_eq!((cmd.ext("a"), cmd.ext_fields.len()), (Some("2"), 1));
}

#[test]
fn each_limit_is_refused_just_past_it_and_served_at_it() {
    let keys = |n: usize| {
        (0..n)
            .map(|i| format!("\"k{i}\":\"v\""))
            .collect::<Vec<_>>()
            .join(",")
    };
    let refused = |h: &[u8], ser: u8| matches!(decode(ser, h).0, Err(FrameError::Refused(_)));
    assert!(!refused(&json_header(10, 1, 0, &keys(MAX_EXT_FIELDS)), 0));
    assert!(refused(
        &json_header(10, 1, 0, &keys(MAX_EXT_FIELDS + 1)),
        0
    ));
    let key = |n: usize| format!("\"{}\":\"v\"", "k".repeat(n));
    assert!(!refused(&json_header(10, 1, 0, &key(MAX_EXT_KEY_LEN)), 0));
    assert!(refused(
        &json_header(10, 1, 0, &key(MAX_EXT_KEY_LEN + 1)),
        0
    ));
    let value = |n: usize| format!("\"k\":\"{}\"", "v".repeat(n));
    assert!(!refused(
        &json_header(10, 1, 0, &value(MAX_EXT_VALUE_LEN)),
        0
    ));
    assert!(refused(
        &json_header(10, 1, 0, &value(MAX_EXT_VALUE_LEN + 1)),
        0
    ));
    // A header over its byte limit is refused before anything in it is kept.
    let big = json_header(10, 1, 0, &value(MAX_HEADER_BYTES));
    assert!(refused(&big, 0));
    let v = vec![b'v'; MAX_EXT_VALUE_LEN + 1];
    assert!(refused(&binary_header(10, 1, 0, &[(b"k", &v)]), 1));
    let k = vec![b'k'; MAX_EXT_KEY_LEN + 1];
    assert!(refused(&binary_header(10, 1, 0, &[(&k, b"v")]), 1));
    let hdr = binary_header(10, 1, 0, &[(b"k", &vec![b'v'; MAX_HEADER_BYTES])]);
    assert!(refused(&hdr, 1));
}

#[test]
fn a_long_remark_is_cut_not_refused() {
    let remark = "é".repeat(MAX_REMARK_LEN);
    let header = format!(r#"{{"code":1,"flag":1,"opaque":5,"remark":"{remark}"}}"#);
    let cmd = decode(0, header.as_bytes()).0.unwrap();
    let kept = cmd.remark.unwrap();
    assert!(kept.len() <= MAX_REMARK_LEN && kept.len() >= MAX_REMARK_LEN - 1);
    assert!(kept.chars().all(|c| c == 'é'));
}

#[test]
fn refused_responses_and_oneways_get_no_answer() {
    for flag in [FLAG_RESPONSE, FLAG_ONEWAY] {
        let (got, _) = decode(0, &json_header(10, 1, flag, &hundred_thousand_keys()));
        let e = got.unwrap_err();
        assert!(!e.is_fatal());
        assert_eq!(e.response(), None);
    }
}

#[test]
fn an_announced_length_reserves_nothing() {
    // A peer announcing 16 MiB and sending 4 bytes costs 4 bytes (grown as bytes arrive).
    let mut buf = BytesMut::with_capacity(64);
    buf.put_u32(16 << 20);
    buf.put_u32(0);
    assert_eq!(FrameDecoder::default().decode(&mut buf), Ok(None));
    assert!(buf.capacity() < 4096, "reserved {}", buf.capacity());
}

/// One extFields value as a header may carry it, right or wrong.
#[derive(Debug, Clone)]
enum Value {
    Str(String),
    Num(i64),
    Bool(bool),
    Null,
    /// An array nested this deep (not a scalar: absent once decoded).
    Nested(usize),
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => "[ -~\u{1}\u{2}\"\\\\é标]{0,40}".prop_map(Value::Str),
        1 => (1usize..3).prop_map(|n| Value::Str("x".repeat(n * 90_000))),
        2 => any::<i64>().prop_map(Value::Num),
        1 => any::<bool>().prop_map(Value::Bool),
        1 => Just(Value::Null),
        1 => (1usize..=48).prop_map(Value::Nested),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        20 => "[a-e]{1,2}",
        4 => "[a-zA-Z0-9 \"\\\\é]{1,24}",
        1 => (1000usize..1100).prop_map(|n| "K".repeat(n)),
    ]
}

/// A header shape: members, with extra copies of some keys (duplicates), and whether the
/// code and opaque are written as strings (as some SDKs do).
fn shape() -> impl Strategy<Value = (Vec<(String, Value)>, bool, bool)> {
    (
        prop_oneof![
            8 => prop::collection::vec((key(), value()), 0..40),
            2 => prop::collection::vec((key(), value()), 900..1200),
        ],
        any::<bool>(),
        any::<bool>(),
    )
}

fn json_value(v: &Value) -> String {
    match v {
        Value::Str(s) => serde_json::to_string(s).unwrap(),
        Value::Num(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".into(),
        Value::Nested(d) => format!("{}1{}", "[".repeat(*d), "]".repeat(*d)),
    }
}

/// What the header must decode to: the last value of each key, nulls and non-scalars absent;
/// or "refused" past a limit; or "malformed" when nesting is too deep.
#[derive(Debug, PartialEq)]
enum Expect {
    Fields(BTreeMap<String, String>),
    Refused,
    Malformed,
}

fn model(entries: &[(String, Value)], header_len: usize, binary: bool) -> Expect {
    // Nesting too deep is malformed JSON, whatever else is wrong (it is never reached past a
    // syntax error, and the generator writes none).
    if !binary
        && entries
            .iter()
            .any(|(_, v)| matches!(v, Value::Nested(d) if *d >= MAX_JSON_DEPTH))
    {
        return Expect::Malformed;
    }
    let over = header_len > MAX_HEADER_BYTES
        || entries.len() > MAX_EXT_FIELDS
        || entries.iter().any(|(k, v)| {
            k.len() > MAX_EXT_KEY_LEN || matches!(v, Value::Str(s) if s.len() > MAX_EXT_VALUE_LEN)
        });
    if over {
        return Expect::Refused;
    }
    let mut m = BTreeMap::new();
    for (k, v) in entries {
        let text = match v {
            Value::Str(s) => Some(s.clone()),
            Value::Num(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Null | Value::Nested(_) if binary => Some(json_value(v)),
            Value::Null | Value::Nested(_) => None,
        };
        match text {
            Some(t) => m.insert(k.clone(), t),
            None => m.remove(k),
        };
    }
    Expect::Fields(m)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    /// Any header shape gets the answer a Java map would give (or a refusal past a limit),
    /// and the work done stays within a constant factor of the frame's size.
    #[test]
    fn header_shapes_decode_as_modelled_in_linear_work(
        (entries, code_as_string, binary) in shape(),
        opaque in any::<i32>(),
    ) {
        let code = request::SEND_MESSAGE_V2;
        let (header, ser) = if binary {
            let texts: Vec<(Vec<u8>, Vec<u8>)> = entries
                .iter()
                .map(|(k, v)| {
                    let t = match v {
                        Value::Str(s) => s.clone(),
                        Value::Num(n) => n.to_string(),
                        Value::Bool(b) => b.to_string(),
                        other => json_value(other),
                    };
                    (k.clone().into_bytes(), t.into_bytes())
                })
                .collect();
            let ext: Vec<(&[u8], &[u8])> = texts.iter().map(|(k, v)| (&k[..], &v[..])).collect();
            (binary_header(code, opaque, 0, &ext), 1)
        } else {
            let ext = entries
                .iter()
                .map(|(k, v)| format!("{}:{}", serde_json::to_string(k).unwrap(), json_value(v)))
                .collect::<Vec<_>>()
                .join(",");
            let mut h = String::from_utf8(json_header(code, opaque, 0, &ext)).unwrap();
            if code_as_string {
                h = h.replacen(&format!("\"code\":{code}"), &format!("\"code\":\"{code}\""), 1);
                h = h.replacen(&format!("\"opaque\":{opaque}"), &format!("\"opaque\":\"{opaque}\""), 1);
            }
            (h.into_bytes(), 0)
        };
        // The frame's header length is a 24-bit field: a longer header cannot be framed at all
        // (the generator can build one out of many huge strings).
        prop_assume!(header.len() < 1 << 24);
        let (got, work) = decode(ser, &header);
        prop_assert!(
            work <= 4 * header.len() as u64 + 1024,
            "work {} for a header of {} bytes", work, header.len()
        );
        match (model(&entries, header.len(), binary), got) {
            (Expect::Fields(m), Ok(cmd)) => {
                prop_assert_eq!((cmd.code, cmd.opaque), (code, opaque));
                let got: BTreeMap<String, String> = cmd
                    .ext_fields
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                prop_assert_eq!(got, m);
            }
            (Expect::Refused, Err(e @ FrameError::Refused(_))) => {
                let answer = e.response().unwrap();
                prop_assert_eq!(
                    (answer.code, answer.opaque),
                    (response::MESSAGE_ILLEGAL, opaque)
                );
            }
            (Expect::Malformed, Err(FrameError::BadJson(m))) => {
                prop_assert!(m.contains("deep"), "{}", m);
            }
            (want, got) => prop_assert!(false, "expected {:?}, got {:?}", want, got),
        }
    }
}

//! The remoting codec: round trips in both header formats, frames as Java-style clients
//! write them, ext field coercion, and fuzzing (arbitrary bytes, mutated valid frames,
//! streams split anywhere): decoding never panics, and bad frames are error values.

use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;
use rockfish_core::remoting::codes::request;
use rockfish_core::remoting::{
    FrameDecoder, FrameError, LanguageCode, RemotingCommand, SerializeType, encode,
};

fn frame(cmd: &RemotingCommand) -> BytesMut {
    let mut out = BytesMut::new();
    encode(cmd, &mut Vec::new(), &mut out).unwrap();
    out
}

fn raw_frame(ser: u8, header: &[u8], body: &[u8]) -> BytesMut {
    let mut b = BytesMut::new();
    b.put_u32((4 + header.len() + body.len()) as u32);
    b.put_u32(((ser as u32) << 24) | header.len() as u32);
    b.put_slice(header);
    b.put_slice(body);
    b
}

#[test]
fn decodes_a_java_client_json_request() {
    let header = br#"{"code":105,"extFields":{"topic":"TopicTest"},"flag":0,"language":"JAVA","opaque":7,"serializeTypeCurrentRPC":"JSON","version":401}"#;
    let mut buf = raw_frame(0, header, b"");
    let cmd = FrameDecoder::default().decode(&mut buf).unwrap().unwrap();
    assert_eq!(cmd.code, request::GET_ROUTEINFO_BY_TOPIC);
    assert_eq!(
        (cmd.opaque, cmd.version, cmd.language),
        (7, 401, LanguageCode::Java)
    );
    assert_eq!(cmd.ext("topic"), Some("TopicTest"));
    assert!(!cmd.is_response() && !cmd.is_oneway());
    assert!(buf.is_empty());
}

#[test]
fn coerces_numbers_and_booleans_in_ext_fields() {
    let header = br#"{"code":"10","language":"GO","opaque":1,"flag":2,"extFields":{"queueId":3,"batch":false,"bornTimestamp":1700000000000,"nothing":null}}"#;
    let cmd = FrameDecoder::default()
        .decode(&mut raw_frame(0, header, b"body"))
        .unwrap()
        .unwrap();
    assert_eq!(cmd.code, 10);
    assert_eq!(cmd.language, LanguageCode::Go);
    assert!(cmd.is_oneway());
    assert_eq!(cmd.ext_req::<u32>("queueId"), Ok(3));
    assert_eq!(cmd.ext_bool("batch"), Ok(Some(false)));
    assert_eq!(cmd.ext_req::<i64>("bornTimestamp"), Ok(1_700_000_000_000));
    assert_eq!(cmd.ext("nothing"), None);
    assert_eq!(&cmd.body[..], b"body");
    assert!(cmd.ext_req::<u32>("missing").is_err());
}

#[test]
fn decodes_a_binary_header() {
    let mut h = Vec::new();
    h.put_i16(34); // HEART_BEAT
    h.put_u8(9); // GO
    h.put_i16(317);
    h.put_i32(99);
    h.put_i32(0);
    h.put_i32(2);
    h.put_slice(b"hi");
    let ext = [("k", "v"), ("topic", "T")];
    let ext_len: usize = ext.iter().map(|(k, v)| 2 + k.len() + 4 + v.len()).sum();
    h.put_i32(ext_len as i32);
    for (k, v) in ext {
        h.put_i16(k.len() as i16);
        h.put_slice(k.as_bytes());
        h.put_i32(v.len() as i32);
        h.put_slice(v.as_bytes());
    }
    let cmd = FrameDecoder::default()
        .decode(&mut raw_frame(1, &h, b"xyz"))
        .unwrap()
        .unwrap();
    assert_eq!(
        (cmd.code, cmd.language, cmd.version, cmd.opaque),
        (34, LanguageCode::Go, 317, 99)
    );
    assert_eq!(cmd.remark.as_deref(), Some("hi"));
    assert_eq!(cmd.ext("topic"), Some("T"));
    assert_eq!(cmd.serialize_type, SerializeType::RocketMq);
    assert_eq!(&cmd.body[..], b"xyz");
    // And re-encoding gives the same bytes (ext fields sorted as they were).
    assert_eq!(&frame(&cmd)[..], &raw_frame(1, &h, b"xyz")[..]);
}

#[test]
fn responses_mirror_the_request() {
    let mut req = RemotingCommand::request(request::SEND_MESSAGE, 42);
    req.serialize_type = SerializeType::RocketMq;
    let resp = RemotingCommand::response_to(&req, 0, Some("ok".into()));
    assert!(resp.is_response());
    assert_eq!(
        (resp.opaque, resp.serialize_type, resp.language),
        (42, SerializeType::RocketMq, LanguageCode::Java)
    );
}

#[test]
fn refuses_bad_frames_with_reasons() {
    let d = FrameDecoder::new(1024);
    let mut big = BytesMut::new();
    big.put_u32(1025);
    assert_eq!(
        d.decode(&mut big),
        Err(FrameError::TooLarge {
            len: 1025,
            max: 1024
        })
    );
    let mut short = BytesMut::new();
    short.put_u32(2);
    short.put_u16(0);
    assert_eq!(d.decode(&mut short), Err(FrameError::TooShort(2)));
    let mut hdr = BytesMut::new();
    hdr.put_u32(8);
    hdr.put_u32(100);
    hdr.put_u32(0);
    assert!(matches!(
        d.decode(&mut hdr),
        Err(FrameError::BadHeaderLength { .. })
    ));
    assert_eq!(
        d.decode(&mut raw_frame(7, b"{}", b"")),
        Err(FrameError::UnknownSerializeType(7))
    );
    assert!(matches!(
        d.decode(&mut raw_frame(0, b"{not json", b"")),
        Err(FrameError::BadJson(_))
    ));
    assert!(matches!(
        d.decode(&mut raw_frame(0, b"[1,2]", b"")),
        Err(FrameError::BadJson(_))
    ));
    assert!(matches!(
        d.decode(&mut raw_frame(1, b"\x00\x01", b"")),
        Err(FrameError::BadBinary(_))
    ));
    // A partial frame is not an error: it waits for more bytes.
    let mut partial = raw_frame(0, b"{}", b"");
    let _ = partial.split_off(5);
    assert_eq!(d.decode(&mut partial), Ok(None));
}

fn command() -> impl Strategy<Value = RemotingCommand> {
    (
        any::<i16>(),
        0u8..14,
        any::<i16>(),
        any::<i32>(),
        0i32..4,
        proptest::option::of("[ -~]{0,20}"),
        // Values with control characters too (a properties string is full of \x01 \x02).
        prop::collection::btree_map("[a-zA-Z]{1,12}", "[\\x00-\\x7e]{0,24}", 0..6),
        any::<bool>(),
        prop::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(
            |(code, lang, version, opaque, flag, remark, ext, binary, body)| RemotingCommand {
                code: code as i32,
                language: LanguageCode::from_code(lang),
                version: version as i32,
                opaque,
                flag,
                // The binary header cannot tell an empty remark from none.
                remark: if binary {
                    remark.filter(|r| !r.is_empty())
                } else {
                    remark
                },
                ext_fields: ext.into_iter().collect(),
                serialize_type: if binary {
                    SerializeType::RocketMq
                } else {
                    SerializeType::Json
                },
                body: Bytes::from(body),
            },
        )
}

proptest! {
    #[test]
    fn round_trips(cmd in command()) {
        let mut buf = frame(&cmd);
        let back = FrameDecoder::default().decode(&mut buf).unwrap().unwrap();
        prop_assert_eq!(back, cmd);
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut buf = BytesMut::from(&bytes[..]);
        let d = FrameDecoder::new(4096);
        // Keep decoding until it needs more bytes or errors.
        while let Ok(Some(_)) = d.decode(&mut buf) {}
    }

    #[test]
    fn mutated_frames_never_panic(cmd in command(), flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let mut bytes = frame(&cmd).to_vec();
        for (at, v) in flips {
            let i = at.index(bytes.len());
            bytes[i] = v;
        }
        let mut buf = BytesMut::from(&bytes[..]);
        let _ = FrameDecoder::new(1 << 20).decode(&mut buf);
    }

    #[test]
    fn a_stream_split_anywhere_decodes_the_same(cmds in prop::collection::vec(command(), 1..5), cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6)) {
        let mut stream = BytesMut::new();
        for c in &cmds {
            stream.extend_from_slice(&frame(c));
        }
        let mut cut_at: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        cut_at.push(stream.len());
        cut_at.sort();
        let d = FrameDecoder::default();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        let mut prev = 0;
        for c in cut_at {
            buf.extend_from_slice(&stream[prev..c]);
            prev = c;
            while let Some(cmd) = d.decode(&mut buf).unwrap() {
                got.push(cmd);
            }
        }
        prop_assert_eq!(got, cmds);
    }
}

fn json(header: &str) -> Result<RemotingCommand, FrameError> {
    FrameDecoder::default()
        .decode(&mut raw_frame(0, header.as_bytes(), b""))
        .map(|c| c.expect("whole frame"))
}

#[test]
fn json_headers_unescape_exactly() {
    // Java clients escape the property separators \u0001 and \u0002.
    let cmd = json(r#"{"code":10,"extFields":{"i":"TAGS\u0001TagA\u0002KEYS\u0001k 1\u0002","q":"say \"hi\"\\n\/","emoji":"\ud83d\ude00","lone":"\ud800x","utf8":"标签"},"opaque":3}"#).unwrap();
    assert_eq!(cmd.ext("i"), Some("TAGS\u{1}TagA\u{2}KEYS\u{1}k 1\u{2}"));
    assert_eq!(cmd.ext("q"), Some("say \"hi\"\\n/"));
    assert_eq!(cmd.ext("emoji"), Some("😀"));
    assert_eq!(cmd.ext("lone"), Some("\u{FFFD}x"));
    assert_eq!(cmd.ext("utf8"), Some("标签"));
    // And what we encode decodes back to the same text.
    let mut buf = BytesMut::new();
    encode(&cmd, &mut Vec::new(), &mut buf).unwrap();
    assert_eq!(
        FrameDecoder::default().decode(&mut buf).unwrap().unwrap(),
        cmd
    );
}

#[test]
fn json_headers_skip_unknowns_and_refuse_garbage() {
    let cmd = json(r#"{"unknown":[1,{"a":[true,null]},"x"],"code":5,"extFields":{"nested":{"a":1},"arr":[1],"n":null,"ok":"1"},"remark":null}"#).unwrap();
    assert_eq!(cmd.code, 5);
    assert_eq!(
        cmd.ext_fields.len(),
        1,
        "non-scalar and null ext values are absent: {:?}",
        cmd.ext_fields
    );
    assert_eq!(cmd.remark, None);
    let deep = format!("{{\"x\":{}1{}}}", "[".repeat(100), "]".repeat(100));
    assert!(matches!(json(&deep), Err(FrameError::BadJson(m)) if m.contains("deep")));
    for bad in [
        r#"{"code":1} x"#,
        r#"{"code":1"#,
        r#"{"code":"abc"}"#,
        r#"{"code":1,}"#,
        r#"{"a":"\q"}"#,
        r#"{"a":"\u12"}"#,
        "{\"a\":\"\u{1}\"}",
        r#"{"code":99999999999}"#,
        "[]",
        "",
    ] {
        assert!(
            matches!(json(bad), Err(FrameError::BadJson(_))),
            "accepted {bad:?}"
        );
    }
    // Bytes that are not UTF-8 read as U+FFFD, as Apache's broker decodes a header (a
    // String from UTF-8, then fastjson): in a value, in a key, in a skipped value. After the
    // object they are still trailing garbage.
    let lenient = |raw: &[u8]| {
        FrameDecoder::default()
            .decode(&mut raw_frame(0, raw, b""))
            .map(|c| c.expect("whole frame"))
    };
    let cmd = lenient(b"{\"code\":1,\"extFields\":{\"a\":\"x\xff\",\"\xc3\":\"y\"}}").unwrap();
    assert_eq!(cmd.ext("a"), Some("x\u{FFFD}"));
    assert_eq!(cmd.ext("\u{FFFD}"), Some("y"));
    assert_eq!(
        lenient(b"{\"unknown\":[\"\xe2\x82\"],\"code\":7}")
            .unwrap()
            .code,
        7
    );
    assert!(matches!(
        lenient(b"{\"code\":1}\xff"),
        Err(FrameError::BadJson(_))
    ));
}

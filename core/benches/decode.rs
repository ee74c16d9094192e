//! Header decoding at its worst: what one hostile frame costs the connection's reader task
//! (and nothing else: decoding happens off the machine's task, and is linear in the frame).
//!
//! - `send_v2`: an ordinary SEND_MESSAGE_V2 header (the baseline every send pays).
//! - `keys_1024_served`: the most extFields a header may have (`MAX_EXT_FIELDS`), decoded and
//!   deduplicated in full.
//! - `keys_100k_refused`: the 1.2 MB header that once took 35 s of CPU; refused now.
//! - `json_16MiB_keys`, `json_16MiB_escapes`, `json_16MiB_nesting`: the largest header a
//!   frame can carry (24-bit length: 16 MiB - 1) full of short keys, of one string of
//!   `\u0001` escapes, and of arrays nested to just under the depth limit; each refused after
//!   one scan.
//! - `binary_16MiB_keys`: the same in RocketMQ's binary header.
//!
//! Measured on the shared 2-core CI box at a load average of ~9 (so several times slower
//! than an idle core): send_v2 6.7 µs, keys_1024_served 0.9 ms, keys_100k_refused 15.5 ms
//! (was 35 s before decoding went linear), json_16MiB_keys 167 ms, json_16MiB_escapes
//! 152 ms, json_16MiB_nesting 191 ms, binary_16MiB_keys 0.65 µs (refused on its fixed
//! fields). The worst case costs about what receiving its 16 MiB does, on the reader task.

use std::hint::black_box;

use bytes::{BufMut, Bytes};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rockfish_core::remoting::codes::request;
use rockfish_core::remoting::limits::{MAX_EXT_FIELDS, MAX_JSON_DEPTH};
use rockfish_core::remoting::{FrameError, decode_frame};

/// Largest header the 24-bit length field allows.
const MAX_HEADER: usize = (1 << 24) - 1;

/// A frame without its length prefix, as `decode_frame` takes it.
fn frame(ser: u8, header: &[u8]) -> Bytes {
    let mut b = Vec::with_capacity(4 + header.len());
    b.put_u32(((ser as u32) << 24) | header.len() as u32);
    b.put_slice(header);
    Bytes::from(b)
}

/// A JSON header with `members` inside extFields, padded with spaces to `pad_to` bytes.
fn json(members: &str, pad_to: usize) -> Vec<u8> {
    let mut h = format!(
        r#"{{"code":{},"extFields":{{{members}}},"flag":0,"language":"JAVA","opaque":1,"version":401}}"#,
        request::SEND_MESSAGE_V2
    )
    .into_bytes();
    if h.len() < pad_to {
        h.resize(pad_to, b' ');
    }
    h.truncate(pad_to.max(h.len()).min(MAX_HEADER));
    h
}

fn keys(n: usize) -> String {
    (0..n)
        .map(|i| format!("\"k{i}\":\"v\""))
        .collect::<Vec<_>>()
        .join(",")
}

/// Short keys until the header is as large as allowed.
fn keys_filling(limit: usize) -> String {
    let mut s = String::with_capacity(limit);
    let mut i = 0u64;
    while s.len() + 40 < limit {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!("\"{i}\":\"\""));
        i += 1;
    }
    s
}

fn send_v2() -> Vec<u8> {
    let members = r#""a":"ProducerGroup","b":"TopicTest","c":"TBW102","d":"4","e":"1","f":"0","g":"1700000000000","h":"0","i":"TAGS\u0001TagA\u0002KEYS\u0001order-1\u0002UNIQ_KEY\u00017F0000010001ABCD\u0002","j":"0","k":"false","m":"false""#;
    json(members, 0)
}

fn binary_keys_filling() -> Vec<u8> {
    let mut h = Vec::with_capacity(MAX_HEADER);
    h.put_i16(request::SEND_MESSAGE_V2 as i16);
    h.put_u8(0);
    h.put_i16(401);
    h.put_i32(1);
    h.put_i32(0);
    h.put_i32(0);
    let mut ext = Vec::with_capacity(MAX_HEADER);
    let mut i = 0u64;
    while 4 + 17 + ext.len() + 32 < MAX_HEADER {
        let k = i.to_string();
        ext.put_i16(k.len() as i16);
        ext.put_slice(k.as_bytes());
        ext.put_i32(0);
        i += 1;
    }
    h.put_i32(ext.len() as i32);
    h.put_slice(&ext);
    h
}

fn bench(c: &mut Criterion) {
    // extFields' value is depth 1 and the array holding the nests depth 2: the innermost
    // scalar sits exactly at the limit.
    let nest = MAX_JSON_DEPTH - 2;
    let one = format!("{}1{}", "[".repeat(nest), "]".repeat(nest));
    let mut nested = String::from(r#""n":["#);
    while nested.len() + one.len() + 200 < MAX_HEADER {
        nested.push_str(&one);
        nested.push(',');
    }
    nested.push_str("1]");
    let escapes = format!(r#""s":"{}""#, "\\u0001".repeat((MAX_HEADER - 200) / 6));
    let cases: Vec<(&str, Bytes)> = vec![
        ("send_v2", frame(0, &send_v2())),
        (
            "keys_1024_served",
            frame(0, &json(&keys(MAX_EXT_FIELDS), 0)),
        ),
        ("keys_100k_refused", frame(0, &json(&keys(100_000), 0))),
        (
            "json_16MiB_keys",
            frame(0, &json(&keys_filling(MAX_HEADER - 200), 0)),
        ),
        ("json_16MiB_escapes", frame(0, &json(&escapes, 0))),
        ("json_16MiB_nesting", frame(0, &json(&nested, 0))),
        ("binary_16MiB_keys", frame(1, &binary_keys_filling())),
    ];
    let mut g = c.benchmark_group("decode_header");
    for (name, f) in cases {
        // Each case must decode the way its name says, or the figure means nothing.
        let got = decode_frame(f.clone());
        let served = name == "send_v2" || name == "keys_1024_served";
        assert!(
            if served {
                got.is_ok()
            } else {
                matches!(got, Err(FrameError::Refused(_)))
            },
            "{name}: {got:?}"
        );
        if f.len() > 1 << 20 {
            g.sample_size(10);
        }
        g.throughput(Throughput::Bytes(f.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| black_box(decode_frame(black_box(f.clone()))))
        });
    }
    g.finish();
}

/// The answer every stored batch of 32 gets: its 32 offset message ids written into the
/// header (`write_offset_msg_id`), then the frame encoded.
fn send_answer(c: &mut Criterion) {
    use rockfish_core::message::write_offset_msg_id;
    use rockfish_core::remoting::RemotingCommand;
    use rockfish_store::record::HostAddr;
    let host = HostAddr::V4([10, 0, 1, 7], 10911);
    let mut scratch = Vec::new();
    let mut out = bytes::BytesMut::new();
    let request = RemotingCommand::request(320, 7);
    let mut g = c.benchmark_group("encode_answer");
    g.bench_function("send_batch32_msg_ids", |b| {
        b.iter(|| {
            let mut resp = RemotingCommand::response_to(&request, 0, None);
            resp.ext_fields.insert_with("msgId", |w| {
                for i in 0..32u64 {
                    if i > 0 {
                        w.write_char(',')?;
                    }
                    write_offset_msg_id(w, host, black_box(1 << 30) + i * 1100)?;
                }
                Ok(())
            });
            let resp = resp
                .with_ext("queueId", 3)
                .with_ext("queueOffset", 123_456_789);
            out.clear();
            rockfish_core::remoting::frame::encode(&resp, &mut scratch, &mut out).unwrap();
            black_box(out.len())
        })
    });
    g.finish();
}

/// What every send pays before the store: its frame decoded, then the header fields the
/// broker reads (a SEND_MESSAGE_V2's short keys, in the order the send path asks).
/// On the 2-core VM, `send_v2` / this: 2.17 / 3.01 µs with UTF-8 checked piece by piece,
/// `\u` escapes parsed through `from_str_radix` and numbers through an f64 parse; 1.66 /
/// 2.24 µs with the header checked once and those done byte by byte.
fn send_fields(c: &mut Criterion) {
    let f = frame(0, &send_v2());
    c.bench_function("decode_header/send_v2_and_fields", |b| {
        b.iter(|| {
            let cmd = decode_frame(black_box(f.clone())).expect("a send header decodes");
            let mut found = 0usize;
            for key in ["b", "d", "e", "f", "g", "h", "i", "j", "m", "a", "k"] {
                found += cmd.ext(key).map_or(0, str::len);
            }
            black_box(found)
        })
    });
}

criterion_group!(benches, bench, send_answer, send_fields);
criterion_main!(benches);

//! The client's message decoder reads every record form a RocketMQ broker serves: Apache 4.x
//! records without `__CRC32#`, RocketMQ 5's V2 magic (2-byte topic length), IPv6 hosts,
//! zlib- and LZ4-compressed bodies, and rockfish's own records; anything else is an error.

use bytes::Bytes;
use rockfish_core::message::decoder::{
    COMPRESSED_FLAG, COMPRESSION_LZ4_TYPE, COMPRESSION_ZSTD_TYPE, DecodeError,
};
use rockfish_core::message::{decode_messages, properties_string};
use rockfish_store::record::{HostAddr, StoreMessage, encode_record, record_len};

mod support;
use support::Apache;

fn props() -> Vec<u8> {
    properties_string([("TAGS", "TagA"), ("UNIQ_KEY", "ABC"), ("KEYS", "k1")])
}

#[test]
fn apache_4x_records_without_crc_property_decode() {
    let p = props();
    let mut body = Apache::new("TopicA", b"hello", &p, 7).encode();
    body.extend(Apache::new("TopicA", b"world", &p, 8).encode());
    let msgs = decode_messages(&Bytes::from(body)).expect("Apache 4.x records decode");
    assert_eq!(msgs.len(), 2);
    assert_eq!(&msgs[0].body()[..], b"hello");
    assert_eq!(msgs[0].queue_offset(), 7);
    assert_eq!(msgs[1].queue_offset(), 8);
    assert_eq!(msgs[0].topic(), "TopicA");
    assert_eq!(msgs[0].queue_id(), 3);
    assert_eq!(msgs[0].physical_offset(), 4103);
    assert_eq!(msgs[0].reconsume_times(), 2);
    assert_eq!(msgs[0].born_timestamp(), 1_700_000_000_000);
    assert_eq!(msgs[0].store_timestamp(), 1_700_000_000_123);
    assert_eq!(msgs[0].store_host(), HostAddr::V4([127, 0, 0, 2], 10911));
    assert_eq!(msgs[0].property("TAGS"), Some(&b"TagA"[..]));
    assert_eq!(msgs[0].property("UNIQ_KEY"), Some(&b"ABC"[..]));
}

#[test]
fn v2_magic_and_ipv6_hosts_decode() {
    let p = props();
    for (v2, born_v6, store_v6) in [
        (true, false, false),
        (false, true, false),
        (false, false, true),
        (true, true, true),
    ] {
        let rec = Apache {
            v2,
            born_v6,
            store_v6,
            ..Apache::new("TopicV6", b"payload", &p, 42)
        }
        .encode();
        let msgs = decode_messages(&Bytes::from(rec))
            .unwrap_or_else(|(_, e)| panic!("v2={v2} born_v6={born_v6} store_v6={store_v6}: {e}"));
        assert_eq!(msgs.len(), 1);
        let m = &msgs[0];
        assert_eq!(
            (m.topic(), &m.body()[..], m.queue_offset()),
            ("TopicV6", &b"payload"[..], 42)
        );
        assert_eq!(m.property("KEYS"), Some(&b"k1"[..]));
        assert_eq!(m.reconsume_times(), 2);
        assert_eq!(m.store_timestamp(), 1_700_000_000_123);
        if born_v6 {
            assert!(matches!(m.born_host(), HostAddr::V6(ip, 10911) if ip[15] == 1));
        }
        if store_v6 {
            assert!(matches!(m.store_host(), HostAddr::V6(ip, 10911) if ip[15] == 2));
        }
    }
}

#[test]
fn compressed_bodies_are_inflated_for_the_application() {
    let p = props();
    let text = b"a body long enough to be worth compressing, compressing, compressing".repeat(20);
    let zlib = miniz_oxide::deflate::compress_to_vec_zlib(&text, 6);
    let lz4 = {
        use std::io::Write;
        let mut enc = lz4_flex::frame::FrameEncoder::new(Vec::new());
        enc.write_all(&text).unwrap();
        enc.finish().unwrap()
    };
    for (flag, stored) in [
        // RocketMQ 4.x: the flag alone means zlib.
        (COMPRESSED_FLAG, &zlib),
        (COMPRESSED_FLAG | (0x3 << 8), &zlib),
        (COMPRESSED_FLAG | COMPRESSION_LZ4_TYPE, &lz4),
    ] {
        let rec = Apache {
            sys_flag: flag,
            ..Apache::new("TopicZ", stored, &p, 0)
        }
        .encode();
        let msgs = decode_messages(&Bytes::from(rec)).unwrap_or_else(|(_, e)| panic!("{e}"));
        assert_eq!(&msgs[0].body()[..], &text[..], "sysFlag {flag:#x}");
    }
    // A compression this client cannot read is an error, not a garbled body.
    let rec = Apache {
        sys_flag: COMPRESSED_FLAG | COMPRESSION_ZSTD_TYPE,
        ..Apache::new("TopicZ", &zlib, &p, 0)
    }
    .encode();
    assert!(matches!(
        decode_messages(&Bytes::from(rec)),
        Err((_, DecodeError::Compression { .. }))
    ));
    // A body that claims zlib and is not.
    let rec = Apache {
        sys_flag: COMPRESSED_FLAG,
        ..Apache::new("TopicZ", b"not zlib at all", &p, 0)
    }
    .encode();
    assert!(matches!(
        decode_messages(&Bytes::from(rec)),
        Err((_, DecodeError::Inflate { .. }))
    ));
}

#[test]
fn rockfish_records_with_crc_property_decode_and_a_wrong_crc_is_refused() {
    let p = props();
    let msg = StoreMessage {
        topic: "TopicR",
        queue_id: 1,
        flag: 0,
        sys_flag: 0,
        born_timestamp: 1,
        born_host: HostAddr::V4([1, 2, 3, 4], 5),
        store_host: HostAddr::V4([5, 6, 7, 8], 9),
        reconsume_times: 0,
        prepared_transaction_offset: 0,
        body: b"mine",
        properties: &p,
    };
    let len = record_len(&msg, 1 << 20).unwrap();
    let mut scratch = Vec::new();
    let parts = encode_record(&mut scratch, &msg, len, 5, 0, 77);
    let mut rec = scratch[..parts.head_len].to_vec();
    rec.extend_from_slice(msg.body);
    rec.extend_from_slice(&scratch[parts.head_len..]);
    let msgs = decode_messages(&Bytes::from(rec.clone())).unwrap();
    assert_eq!(&msgs[0].body()[..], b"mine");
    assert_eq!(msgs[0].queue_offset(), 5);
    assert_eq!(msgs[0].store_timestamp(), 77);
    // Flip a bit of the topic: the body CRC still matches, `__CRC32#` does not.
    let at = rec.len() - 2 - p.len() - 21 - 3;
    rec[at] ^= 0x20;
    assert!(matches!(
        decode_messages(&Bytes::from(rec)),
        Err((_, DecodeError::RecordCrc { .. }))
    ));
}

#[test]
fn corrupt_records_are_errors_and_keep_what_decoded_before_them() {
    let p = props();
    let good = Apache::new("T", b"good", &p, 10).encode();
    let mut bad_body = Apache::new("T", b"flipped", &p, 11).encode();
    let body_at = bad_body.len() - 2 - p.len() - 2 - 7;
    bad_body[body_at] ^= 1;
    let mut bad_magic = Apache::new("T", b"x", &p, 11).encode();
    bad_magic[4] = 0;
    let mut short_total = Apache::new("T", b"x", &p, 11).encode();
    short_total[..4].copy_from_slice(&4000u32.to_be_bytes());
    let mut long_props = Apache::new("T", b"x", &p, 11).encode();
    let n = long_props.len();
    long_props[n - p.len() - 2..n - p.len()].copy_from_slice(&u16::MAX.to_be_bytes());
    for (name, bad) in [
        ("body CRC", bad_body),
        ("magic", bad_magic),
        ("total size", short_total),
        ("properties length", long_props),
        ("three stray bytes", vec![0, 0, 1]),
    ] {
        let mut body = good.clone();
        body.extend_from_slice(&bad);
        match decode_messages(&Bytes::from(body)) {
            Ok(_) => panic!("{name}: a corrupt record decoded"),
            Err((before, _)) => {
                assert_eq!(before.len(), 1, "{name}");
                assert_eq!(before[0].queue_offset(), 10);
            }
        }
    }
}

proptest::proptest! {
    /// Never panics, whatever the bytes.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)) {
        let _ = decode_messages(&Bytes::from(bytes));
    }

    /// Any record form round-trips its fields.
    #[test]
    fn any_form_decodes(v2: bool, born_v6: bool, store_v6: bool,
                        body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
                        topic in "[A-Za-z0-9_%-]{1,60}", offset in 0u64..1 << 40) {
        let p = props();
        let rec = Apache { v2, born_v6, store_v6, ..Apache::new(&topic, &body, &p, offset) }.encode();
        let msgs = decode_messages(&Bytes::from(rec)).map_err(|(_, e)| e).unwrap();
        proptest::prop_assert_eq!(msgs.len(), 1);
        proptest::prop_assert_eq!(&msgs[0].body()[..], &body[..]);
        proptest::prop_assert_eq!(msgs[0].topic(), topic.as_str());
        proptest::prop_assert_eq!(msgs[0].queue_offset(), offset);
    }
}

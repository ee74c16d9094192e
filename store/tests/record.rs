//! The stored-message layout: pinned byte by byte against RocketMQ's MessageDecoder field
//! order, and every single-bit flip of a record is caught.

use bytes::Bytes;
use rockfish_store::record::{self, HostAddr, RecordError, StoreMessage, StoredRecord};

fn sample<'a>(body: &'a [u8], props: &'a [u8]) -> StoreMessage<'a> {
    StoreMessage {
        topic: "TopicTest",
        queue_id: 3,
        flag: 7,
        sys_flag: 0,
        born_timestamp: 0x0102_0304_0506_0708,
        born_host: HostAddr::V4([10, 0, 0, 1], 40001),
        store_host: HostAddr::V4([192, 168, 1, 2], 10911),
        reconsume_times: 2,
        prepared_transaction_offset: 99,
        body,
        properties: props,
    }
}

fn encode(msg: &StoreMessage<'_>, queue_offset: u64, phy: u64, store_ts: i64) -> Vec<u8> {
    let len = record::record_len(msg, 4 << 20).unwrap();
    let mut scratch = Vec::new();
    let parts = record::encode_record(&mut scratch, msg, len, queue_offset, phy, store_ts);
    let mut out = scratch[..parts.head_len].to_vec();
    out.extend_from_slice(msg.body);
    out.extend_from_slice(&scratch[parts.head_len..]);
    assert_eq!(out.len(), len);
    out
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}
fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

#[test]
fn layout_matches_rocketmq_message_decoder() {
    let props = b"TAGS\x01TagA\x02KEYS\x01k1 k2\x02";
    let body = b"hello rocketmq";
    let b = encode(&sample(body, props), 42, 4096, 0x1112_1314_1516_1718);
    // 91 fixed bytes for IPv4 hosts + body + topic + properties (+ the 20-byte CRC property).
    assert_eq!(b.len(), 91 + body.len() + 9 + props.len() + 20);
    assert_eq!(be32(&b, 0) as usize, b.len(), "TOTALSIZE");
    assert_eq!(be32(&b, 4), 0xDAA3_20A7, "MAGICCODE");
    assert_eq!(be32(&b, 8), crc32fast::hash(body) & 0x7FFF_FFFF, "BODYCRC");
    assert_eq!(be32(&b, 12), 3, "QUEUEID");
    assert_eq!(be32(&b, 16), 7, "FLAG");
    assert_eq!(be64(&b, 20), 42, "QUEUEOFFSET");
    assert_eq!(be64(&b, 28), 4096, "PHYSICALOFFSET");
    assert_eq!(be32(&b, 36), 0, "SYSFLAG");
    assert_eq!(be64(&b, 40), 0x0102_0304_0506_0708, "BORNTIMESTAMP");
    assert_eq!(&b[48..52], &[10, 0, 0, 1], "BORNHOST ip");
    assert_eq!(be32(&b, 52), 40001, "BORNHOST port");
    assert_eq!(be64(&b, 56), 0x1112_1314_1516_1718, "STORETIMESTAMP");
    assert_eq!(&b[64..68], &[192, 168, 1, 2], "STOREHOST ip");
    assert_eq!(be32(&b, 68), 10911, "STOREHOST port");
    assert_eq!(be32(&b, 72), 2, "RECONSUMETIMES");
    assert_eq!(be64(&b, 76), 99, "PREPARED TRANSACTION OFFSET");
    assert_eq!(be32(&b, 84) as usize, body.len(), "BODY length");
    assert_eq!(&b[88..88 + body.len()], body);
    let t = 88 + body.len();
    assert_eq!(b[t], 9, "TOPIC length");
    assert_eq!(&b[t + 1..t + 10], b"TopicTest");
    let p = t + 10;
    let plen = u16::from_be_bytes([b[p], b[p + 1]]) as usize;
    assert_eq!(plen, props.len() + 20);
    let stored_props = &b[p + 2..];
    assert_eq!(
        &stored_props[..props.len()],
        props,
        "client properties kept as sent"
    );
    // RocketMQ 5's CRC property: "__CRC32#" 0x01, ten digits least significant first, 0x02,
    // over every byte before it.
    let crc_prop = &stored_props[props.len()..];
    assert_eq!(&crc_prop[..9], b"__CRC32#\x01");
    assert_eq!(crc_prop[19], 2);
    let mut crc = crc32fast::hash(&b[..b.len() - 20]) & 0x7FFF_FFFF;
    for d in &crc_prop[9..19] {
        assert_eq!(*d, b'0' + (crc % 10) as u8);
        crc /= 10;
    }
}

#[test]
fn parse_round_trips_every_field() {
    let props = b"TAGS\x01TagA\x02UNIQ_KEY\x01ABC\x02";
    let raw = encode(&sample(b"body", props), 5, 777, 123_456);
    let rec = StoredRecord::parse(Bytes::from(raw.clone()), Some(777)).unwrap();
    assert_eq!(rec.topic(), "TopicTest");
    assert_eq!(rec.queue_id(), 3);
    assert_eq!(rec.flag(), 7);
    assert_eq!(rec.queue_offset(), 5);
    assert_eq!(rec.physical_offset(), 777);
    assert_eq!(rec.born_timestamp(), 0x0102_0304_0506_0708);
    assert_eq!(rec.store_timestamp(), 123_456);
    assert_eq!(rec.reconsume_times(), 2);
    assert_eq!(&rec.body()[..], b"body");
    assert_eq!(rec.property("TAGS"), Some(&b"TagA"[..]));
    assert_eq!(rec.property("UNIQ_KEY"), Some(&b"ABC"[..]));
    assert_eq!(
        &rec.bytes()[..],
        &raw[..],
        "the record is handed out exactly as stored"
    );
    // Lying at another offset than its own field says is an error.
    assert!(matches!(
        StoredRecord::parse(Bytes::from(raw), Some(778)),
        Err(RecordError::WrongOffset { .. })
    ));
}

#[test]
fn ipv6_hosts_and_missing_separator() {
    let mut m = sample(b"x", b"TAGS\x01A");
    m.born_host = HostAddr::V6([0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], 1);
    let raw = encode(&m, 0, 0, 9);
    assert_eq!(raw.len(), 91 + 12 + 1 + 9 + 6 + 1 + 20);
    let rec = StoredRecord::parse(Bytes::from(raw), Some(0)).unwrap();
    assert_eq!(
        rec.sys_flag() & record::SYSFLAG_BORNHOST_V6,
        record::SYSFLAG_BORNHOST_V6
    );
    assert_eq!(rec.store_timestamp(), 9);
    assert_eq!(rec.property("TAGS"), Some(&b"A"[..]));
}

#[test]
fn every_single_bit_flip_is_caught() {
    let raw = encode(&sample(b"some body bytes", b"TAGS\x01TagA\x02"), 1, 64, 5);
    for byte in 0..raw.len() {
        for bit in 0..8 {
            let mut bad = raw.clone();
            bad[byte] ^= 1 << bit;
            assert!(
                StoredRecord::parse(Bytes::from(bad), Some(64)).is_err(),
                "flip of bit {bit} in byte {byte} went unnoticed"
            );
        }
    }
}

#[test]
fn arbitrary_bytes_never_panic() {
    use proptest::prelude::*;
    proptest!(|(bytes in prop::collection::vec(any::<u8>(), 0..400), at in any::<u64>())| {
        let _ = StoredRecord::parse(Bytes::from(bytes.clone()), Some(at));
        let _ = StoredRecord::parse(Bytes::from(bytes), None);
    });
}

#[test]
fn java_hash_codes() {
    // Values from Java's String.hashCode().
    assert_eq!(record::java_string_hash(""), 0);
    assert_eq!(record::java_string_hash("TagA"), 2_598_919);
    assert_eq!(record::java_string_hash("hello"), 99_162_322);
    assert_eq!(record::java_string_hash("标签"), 26631 * 31 + 31614);
    assert_eq!(record::java_string_hash("polygenelubricants"), i32::MIN);
}

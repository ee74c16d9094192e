//! The send hot path allocates nothing per message: decode a JSON SEND_MESSAGE_V2 frame as a
//! Java client writes it, run it through `Broker::on_command` over a real mmap store, drain
//! the response and encode it. A counting global allocator watches, after a warm-up.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use rockfish_core::broker::{Broker, BrokerConfig};
use rockfish_core::machine::{ConnId, Output};
use rockfish_core::message::properties_string;
use rockfish_core::remoting::codes::{request, response};
use rockfish_core::remoting::{FrameDecoder, RemotingCommand, encode};
use rockfish_store::record::HostAddr;
use rockfish_store::{IndexConfig, MessageStore, MmapDisk, StoreConfig};

struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarding the caller's contract to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarding the caller's contract to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarding the caller's contract to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn send_frame(i: u32, body: &[u8]) -> BytesMut {
    let props = String::from_utf8(properties_string([
        ("UNIQ_KEY", format!("7F000001000018B4AAC2{i:012X}").as_str()),
        ("WAIT", "true"),
        ("TAGS", "TagA"),
    ]))
    .unwrap();
    let cmd = RemotingCommand::request(request::SEND_MESSAGE_V2, i as i32)
        .with_ext("a", "ProducerGroup")
        .with_ext("b", "HotTopic")
        .with_ext("c", "TBW102")
        .with_ext("d", 4)
        .with_ext("e", i % 4)
        .with_ext("f", 0)
        .with_ext("g", 1_700_000_000_000u64 + i as u64)
        .with_ext("h", 0)
        .with_ext("i", props)
        .with_ext("j", 0)
        .with_ext("k", false)
        .with_ext("m", false)
        .with_body(Bytes::copy_from_slice(body));
    let mut out = BytesMut::new();
    encode(&cmd, &mut Vec::new(), &mut out).unwrap();
    out
}

#[test]
fn a_send_allocates_nothing_once_warm() {
    let dir = tempfile::tempdir().unwrap();
    let store_config = StoreConfig {
        commitlog_segment_size: 64 << 20,
        consume_queue_entries: 100_000,
        index: IndexConfig {
            hash_slots: 4096,
            max_entries: 100_000,
        },
        ..StoreConfig::default()
    };
    let (store, _) =
        MessageStore::open(MmapDisk::open_root(dir.path()).unwrap(), store_config, 0).unwrap();
    let config = BrokerConfig {
        namesrv_addrs: vec![],
        ..BrokerConfig::default()
    };
    let mut broker = Broker::new(config, store, 0).unwrap();
    let conn = ConnId(1);
    broker.on_connect(conn, HostAddr::V4([127, 0, 0, 1], 5000), 0);
    let body = vec![b'x'; 1024];
    // The warm-up fills each of the four queues' stage once (see `STAGED_MAX_ENTRIES`).
    let (warm, measured) = (1_100u32, 2_000u32);
    // All frames are on the "wire" up front, as a socket read would deliver them.
    let mut wire = BytesMut::new();
    for i in 0..warm + measured {
        wire.extend_from_slice(&send_frame(i, &body));
    }
    let decoder = FrameDecoder::default();
    let mut scratch = Vec::with_capacity(4096);
    let mut out = BytesMut::with_capacity(16 << 20);
    let mut run = |n: u32, wire: &mut BytesMut, broker: &mut Broker<MmapDisk>, now: u64| {
        for _ in 0..n {
            let cmd = decoder.decode(wire).unwrap().unwrap();
            broker.on_command(conn, cmd, now, now);
            while let Some(o) = broker.poll_output() {
                match o {
                    Output::Send { cmd, .. } => {
                        assert_eq!(cmd.code, response::SUCCESS, "{:?}", cmd.remark);
                        encode(&cmd, &mut scratch, &mut out).unwrap();
                    }
                    // The auto-created topic's topics.json write (during the warm-up).
                    Output::Persist { token, files } => broker.run_persist(token, files, now),
                    other => panic!("unexpected output {other:?}"),
                }
            }
        }
    };
    run(warm, &mut wire, &mut broker, 1);
    let before = ALLOCS.load(Ordering::Relaxed);
    run(measured, &mut wire, &mut broker, 2);
    let allocs = ALLOCS.load(Ordering::Relaxed) - before;
    assert_eq!(
        allocs, 0,
        "{allocs} allocations over {measured} sends (decode, broker, encode)"
    );
    assert_eq!(
        broker.store().max_offset("HotTopic", 0),
        ((warm + measured) / 4) as u64
    );
}

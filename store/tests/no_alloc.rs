//! The append path allocates nothing per message once warm: a counting global allocator
//! watches `put` and `put_batch` on `MmapDisk` (and `get` allocates per call, not per message).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use common::props;
use rockfish_store::record::{HostAddr, StoreMessage};
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

fn allocs() -> u64 {
    ALLOCS.load(Ordering::Relaxed)
}

#[test]
fn append_path_allocates_nothing_per_message() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        commitlog_segment_size: 64 << 20,
        consume_queue_entries: 100_000,
        index: IndexConfig {
            hash_slots: 4096,
            max_entries: 100_000,
        },
        // SYNC_FLUSH's put path: zeros prewritten ahead of the appends, allocation-free too.
        warm_mapped_file: Some(true),
        ..StoreConfig::default()
    };
    let (mut store, _) =
        MessageStore::open(MmapDisk::open_root(dir.path()).unwrap(), config, 0).unwrap();
    let body = vec![7u8; 1024];
    let keyed: Vec<Vec<u8>> = (0..3000)
        .map(|i| {
            props(&[
                ("TAGS", "TagA"),
                ("KEYS", "order-1 user-2"),
                ("UNIQ_KEY", &format!("U{i:08}")),
            ])
        })
        .collect();
    let msg = |i: usize| StoreMessage {
        topic: "BenchTopic",
        queue_id: (i % 4) as u32,
        flag: 0,
        sys_flag: 0,
        born_timestamp: 1,
        born_host: HostAddr::V4([127, 0, 0, 1], 1),
        store_host: HostAddr::V4([127, 0, 0, 1], 2),
        reconsume_times: 0,
        prepared_transaction_offset: 0,
        body: &body,
        properties: &keyed[i],
    };
    // Warm up: files created, scratch buffers grown, each queue's stage filled once.
    for i in 0..1100 {
        store.put(&msg(i), i as u64).unwrap();
    }
    let batch: Vec<StoreMessage<'_>> = (0..32).map(msg).collect();
    store.put_batch(&batch, 100).unwrap();

    let before = allocs();
    for i in 100..2100 {
        store.put(&msg(i), i as u64).unwrap();
    }
    let singles = allocs() - before;
    let before = allocs();
    for round in 0..20 {
        store.put_batch(&batch, 3000 + round).unwrap();
    }
    let batched = allocs() - before;
    assert_eq!(singles, 0, "{singles} allocations over 2000 single puts");
    assert_eq!(batched, 0, "{batched} allocations over 20 batches of 32");

    // A get allocates its result vector, not one allocation per message. (The first read
    // of a segment maps it, once: appends write through a descriptor, not the mapping.)
    store
        .get("BenchTopic", 0, 0, 32, 1 << 20, &|_| true)
        .unwrap();
    let before = allocs();
    let got = store
        .get("BenchTopic", 0, 0, 32, 1 << 20, &|_| true)
        .unwrap();
    let per_get = allocs() - before;
    assert_eq!(got.messages.len(), 32);
    assert!(
        per_get <= 4,
        "{per_get} allocations for one get of 32 messages"
    );
}

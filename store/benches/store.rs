//! Store throughput on `MmapDisk`, each append variant next to its raw baseline.
//!
//! - `append_<size>/put` and `/put_batch32`: `MessageStore::put` one message at a time and
//!   `MessageStore::put_batch` with 32 messages, for 1 KiB and 128 B bodies (TAGS only, so the
//!   index is not touched); `append_1KiB/put_uniq_key` adds a distinct UNIQ_KEY per message, so
//!   every put also writes an index entry. `append_<size>/put_warm`: `put` on a warmed log
//!   (`warm_mapped_file`, SYNC_FLUSH's default): 256 KiB of zeros prewritten and their
//!   writeback started every 256 KiB appended.
//! - `append_<size>/raw_1` and `/raw_32`: the baseline. The same records, encoded once up front,
//!   memcpyed with `Disk::write_at` into the same kind of files (`MmapDisk::create`: 256 MiB,
//!   reserved whole at creation, synced, mmapped), one record or 32 records per write, rolling to a new
//!   file exactly where the commit log does (a record never spans files; an 8-byte blank marker
//!   ends each file). Per iteration it writes the same bytes as its append variant.
//! - `read_1KiB/get32`: `MessageStore::get` of 32 messages from a queue of 200,000, walking it
//!   and wrapping around.
//!
//! Fairness: file creation happens inside the timed loops of both the store and the raw
//! baseline (both start from an empty directory and roll files as they fill). Every
//! `FRESH_AFTER` bytes the store or the raw files are thrown away and a fresh temp dir is
//! made, outside the timing, so a run never holds much more than 1 GiB on disk; and dropping
//! the files before writeback keeps the disk itself out of the measurement (this measures
//! the page cache, as a broker's append path does).
//!
//! Set `ROCKFISH_BENCH_DIR` to put the temp dirs on another file system (default: the system
//! temp dir).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use rockfish_store::record::{self, END_FILE_MIN_BLANK_LENGTH, HostAddr, StoreMessage};
use rockfish_store::{Disk, FileId, IndexConfig, MessageStore, MmapDisk, StoreConfig};
use tempfile::TempDir;

const SEGMENT_SIZE: u64 = 256 << 20;
/// Bytes appended to one store (or one raw directory) before it is replaced by a fresh one.
const FRESH_AFTER: u64 = 1 << 30;
const TOPIC: &str = "BenchTopic";
const TAGS_ONLY: &[u8] = b"TAGS\x01TagA\x02";
/// TAGS then a UNIQ_KEY whose 32 hex digits are rewritten for every message.
const TAGS_AND_UNIQ_KEY: &[u8] =
    b"TAGS\x01TagA\x02UNIQ_KEY\x01AC110002000000000000000000000000\x02";
const BATCH: usize = 32;
const T0: u64 = 1_700_000_000_000;
const READ_MESSAGES: u64 = 200_000;

fn store_config() -> StoreConfig {
    StoreConfig {
        commitlog_segment_size: SEGMENT_SIZE,
        index: IndexConfig {
            hash_slots: 1_000_000,
            max_entries: 4_000_000,
        },
        ..Default::default()
    }
}

fn temp_dir() -> TempDir {
    let builder = {
        let mut b = tempfile::Builder::new();
        b.prefix("rockfish-bench-");
        b
    };
    match std::env::var_os("ROCKFISH_BENCH_DIR") {
        Some(dir) => builder.tempdir_in(dir),
        None => builder.tempdir(),
    }
    .expect("create a temp dir")
}

fn message<'a>(body: &'a [u8], properties: &'a [u8]) -> StoreMessage<'a> {
    StoreMessage {
        topic: TOPIC,
        queue_id: 0,
        flag: 0,
        sys_flag: 0,
        born_timestamp: rockfish_store::java_millis(T0),
        born_host: HostAddr::V4([10, 0, 0, 1], 50_000),
        store_host: HostAddr::V4([10, 0, 0, 2], 10_911),
        reconsume_times: 0,
        prepared_transaction_offset: 0,
        body,
        properties,
    }
}

fn body(len: usize) -> Vec<u8> {
    (0..len).map(|i| b'a' + (i % 26) as u8).collect()
}

fn record_len(msg: &StoreMessage<'_>) -> u64 {
    record::record_len(msg, store_config().max_message_size).expect("valid message") as u64
}

/// A store on `MmapDisk` in its own temp dir. The store is dropped (unmapped) before the dir.
struct StoreRig {
    store: MessageStore<MmapDisk>,
    _dir: TempDir,
    now: u64,
}

impl StoreRig {
    fn new() -> Self {
        Self::with(store_config())
    }

    /// A warmed commit log (SYNC_FLUSH's default): zeros prewritten ahead of the appends.
    fn warm() -> Self {
        Self::with(StoreConfig {
            warm_mapped_file: Some(true),
            ..store_config()
        })
    }

    fn with(config: StoreConfig) -> Self {
        let dir = temp_dir();
        let disk = MmapDisk::open_root(dir.path()).expect("open the disk");
        let (store, _) = MessageStore::open(disk, config, T0).expect("open the store");
        StoreRig {
            store,
            _dir: dir,
            now: T0,
        }
    }
}

/// The baseline: sequential memcpys into preallocated, mmapped segment files of the same size,
/// created the same way and rolled at the same points as the commit log's.
struct RawRig {
    disk: MmapDisk,
    _dir: TempDir,
    file: Option<FileId>,
    file_start: u64,
    at: u64,
}

impl RawRig {
    fn new() -> Self {
        let dir = temp_dir();
        let disk = MmapDisk::open_root(dir.path()).expect("open the disk");
        RawRig {
            disk,
            _dir: dir,
            file: None,
            file_start: 0,
            at: 0,
        }
    }

    fn append(&mut self, data: &[u8]) {
        let len = data.len() as u64;
        let file = match self.file {
            Some(file) if len + END_FILE_MIN_BLANK_LENGTH <= SEGMENT_SIZE - self.at => file,
            full => {
                if let Some(full) = full {
                    let rest = SEGMENT_SIZE - self.at;
                    self.disk
                        .write_at(full, self.at, &record::blank_marker(rest as u32))
                        .expect("write");
                    self.file_start += SEGMENT_SIZE;
                }
                let path = format!("commitlog/{:020}", self.file_start);
                let file = self
                    .disk
                    .create(&path, SEGMENT_SIZE)
                    .expect("create a segment");
                // The old way, reserved whole up front: the baseline stays what it was.
                self.disk
                    .reserve(file, 0, SEGMENT_SIZE)
                    .expect("reserve a segment");
                self.file = Some(file);
                self.at = 0;
                file
            }
        };
        self.disk.write_at(file, self.at, data).expect("write");
        self.at += len;
    }
}

/// Runs `step` `iters` times and returns the time it took, replacing the rig (untimed) every
/// `per_rig` steps. The rig lives across calls, so warm-up and samples keep appending to it.
fn timed<R>(
    slot: &mut Option<(R, u64)>,
    iters: u64,
    per_rig: u64,
    fresh: impl Fn() -> R,
    mut step: impl FnMut(&mut R),
) -> Duration {
    let mut elapsed = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        if slot.as_ref().is_none_or(|(_, done)| *done >= per_rig) {
            // Drop the old files before making new ones: at most one rig's worth on disk.
            *slot = None;
            *slot = Some((fresh(), 0));
        }
        let (rig, done) = slot.as_mut().expect("just filled");
        let run = left.min(per_rig - *done);
        let start = Instant::now();
        for _ in 0..run {
            step(rig);
        }
        elapsed += start.elapsed();
        *done += run;
        left -= run;
    }
    elapsed
}

/// Encodes `count` copies of `msg` back to back, as the commit log would lay them out.
fn encode_records(msg: &StoreMessage<'_>, count: usize) -> Vec<u8> {
    let len = record_len(msg) as usize;
    let mut out = Vec::with_capacity(len * count);
    let mut scratch = Vec::new();
    for i in 0..count {
        let at = out.len() as u64;
        let parts = record::encode_record(
            &mut scratch,
            msg,
            len,
            i as u64,
            at,
            rockfish_store::java_millis(T0),
        );
        out.extend_from_slice(&scratch[..parts.head_len]);
        out.extend_from_slice(msg.body);
        out.extend_from_slice(&scratch[parts.head_len..]);
    }
    assert_eq!(out.len(), len * count);
    out
}

fn append_group(c: &mut Criterion, name: &str, body_len: usize) {
    let body = body(body_len);
    let msg = message(&body, TAGS_ONLY);
    let len = record_len(&msg);
    let batch = [msg; BATCH];
    let records = encode_records(&msg, 4 * BATCH);

    let mut group = c.benchmark_group(format!("append_{name}"));
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    group.sampling_mode(SamplingMode::Flat);

    // One message per iteration.
    let per_rig = FRESH_AFTER / len;
    group.throughput(Throughput::ElementsAndBytes {
        elements: 1,
        bytes: len,
    });
    let mut slot = None;
    group.bench_function("put", |b| {
        b.iter_custom(|iters| {
            timed(&mut slot, iters, per_rig, StoreRig::new, |rig| {
                rig.now += 1;
                black_box(rig.store.put(&msg, rig.now).expect("put"));
            })
        })
    });
    drop(slot);
    let mut slot = None;
    group.bench_function("put_warm", |b| {
        b.iter_custom(|iters| {
            timed(&mut slot, iters, per_rig, StoreRig::warm, |rig| {
                rig.now += 1;
                black_box(rig.store.put(&msg, rig.now).expect("put"));
            })
        })
    });
    drop(slot);
    let mut slot = None;
    let mut next = 0;
    group.bench_function("raw_1", |b| {
        b.iter_custom(|iters| {
            timed(&mut slot, iters, per_rig, RawRig::new, |rig| {
                let at = next * len as usize;
                rig.append(&records[at..at + len as usize]);
                next = (next + 1) % (4 * BATCH);
            })
        })
    });
    drop(slot);

    // 32 messages per iteration.
    let per_rig = FRESH_AFTER / (len * BATCH as u64);
    group.throughput(Throughput::ElementsAndBytes {
        elements: BATCH as u64,
        bytes: len * BATCH as u64,
    });
    let mut slot = None;
    group.bench_function("put_batch32", |b| {
        b.iter_custom(|iters| {
            timed(&mut slot, iters, per_rig, StoreRig::new, |rig| {
                rig.now += 1;
                black_box(rig.store.put_batch(&batch, rig.now).expect("put_batch"));
            })
        })
    });
    drop(slot);
    let mut slot = None;
    let mut next = 0;
    group.bench_function("raw_32", |b| {
        b.iter_custom(|iters| {
            timed(&mut slot, iters, per_rig, RawRig::new, |rig| {
                let chunk = len as usize * BATCH;
                rig.append(&records[next * chunk..(next + 1) * chunk]);
                next = (next + 1) % 4;
            })
        })
    });
    drop(slot);
    group.finish();
}

/// One message per put, each with its own UNIQ_KEY: the index is written too.
fn append_uniq_key(c: &mut Criterion) {
    let body = body(1024);
    let mut props = TAGS_AND_UNIQ_KEY.to_vec();
    let key_digits = props.len() - 1 - 16..props.len() - 1;
    let len = record_len(&message(&body, &props));
    let per_rig = FRESH_AFTER / len;

    let mut group = c.benchmark_group("append_1KiB");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::ElementsAndBytes {
        elements: 1,
        bytes: len,
    });
    let mut slot = None;
    let mut counter: u64 = 0;
    group.bench_function("put_uniq_key", |b| {
        b.iter_custom(|iters| {
            timed(&mut slot, iters, per_rig, StoreRig::new, |rig| {
                counter += 1;
                for (i, d) in props[key_digits.clone()].iter_mut().enumerate() {
                    *d = b"0123456789ABCDEF"[(counter >> (60 - 4 * i)) as usize & 0xF];
                }
                rig.now += 1;
                black_box(
                    rig.store
                        .put(&message(&body, &props), rig.now)
                        .expect("put"),
                );
            })
        })
    });
    drop(slot);
    group.finish();
}

fn appends(c: &mut Criterion) {
    append_group(c, "1KiB", 1024);
    append_uniq_key(c);
    append_group(c, "128B", 128);
}

fn reads(c: &mut Criterion) {
    let body = body(1024);
    let msg = message(&body, TAGS_ONLY);
    let len = record_len(&msg);
    let mut rig = StoreRig::new();
    let batch = [msg; BATCH];
    for _ in 0..READ_MESSAGES / BATCH as u64 {
        rig.now += 1;
        rig.store.put_batch(&batch, rig.now).expect("fill");
    }
    let store = &rig.store;
    assert_eq!(store.max_offset(TOPIC, 0), READ_MESSAGES);
    let all = |_: i64| true;
    let probe = store.get(TOPIC, 0, 0, BATCH, 1 << 20, &all).expect("get");
    assert_eq!(probe.messages.len(), BATCH, "{:?}", probe.status);

    let mut group = c.benchmark_group("read_1KiB");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::ElementsAndBytes {
        elements: BATCH as u64,
        bytes: len * BATCH as u64,
    });
    let mut offset = 0;
    group.bench_function("get32", |b| {
        b.iter(|| {
            let got = store
                .get(TOPIC, 0, offset, BATCH, 1 << 20, &all)
                .expect("get");
            offset = if got.next_offset >= READ_MESSAGES {
                0
            } else {
                got.next_offset
            };
            got
        })
    });
    group.finish();
}

criterion_group!(benches, appends, reads);
criterion_main!(benches);

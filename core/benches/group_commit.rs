//! The broker machine's side of SYNC_FLUSH group commit: 16 sends of 1 KiB arrive, their
//! flushes are asked (two in flight at most), answered in order, and all 16 are acked. The
//! device's sync is not in it (the simulated disk syncs in memory): this is what the
//! machine adds per group, the part a faster disk cannot hide.
//!
//! On the 2-core VM: 75 µs a group (4.7 µs a send, the in-memory store's put included),
//! the same with one flush in flight as with two (`MAX_FLUSHES_IN_FLIGHT`): the second
//! flush in flight overlaps device syncs, it costs the machine nothing.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use rockfish_core::broker::{BrokerConfig, FlushDiskType};
use rockfish_core::machine::{ConnId, Output};
use rockfish_core::remoting::RemotingCommand;
use rockfish_sim::harness::broker::BrokerHarness;
use rockfish_store::record::HostAddr;
use rockfish_store::{MemDisk, StoreConfig};

const P: ConnId = ConnId(1);
const SENDS: usize = 16;

/// A SYNC_FLUSH broker whose topic exists, and the next group of sends for it.
fn setup() -> (BrokerHarness, Vec<RemotingCommand>) {
    let config = BrokerConfig {
        flush_disk_type: FlushDiskType::Sync,
        ..BrokerConfig::default()
    };
    let mut h = BrokerHarness::start(config, StoreConfig::small(), MemDisk::new(1), 0);
    h.connect(P, HostAddr::V4([10, 0, 0, 9], 5555));
    let body = vec![b'x'; 1024];
    let warm = h.send_v2("Bench", 0, &[("UNIQ_KEY", "warm")], &body);
    h.call(P, warm);
    h.run_flushes();
    let cmds = (0..SENDS)
        .map(|i| {
            let key = format!("K{i}");
            h.send_v2("Bench", (i % 4) as i32, &[("UNIQ_KEY", &key)], &body)
        })
        .collect();
    (h, cmds)
}

fn acks(out: &[Output]) -> usize {
    out.iter()
        .filter(|o| matches!(o, Output::Send { conn, .. } if *conn == P))
        .count()
}

fn group_commit(c: &mut Criterion) {
    let mut g = c.benchmark_group("group_commit");
    g.throughput(Throughput::Elements(SENDS as u64));
    g.bench_function("sync_flush_16_sends_1KiB", |b| {
        b.iter_batched(
            setup,
            |(mut h, cmds)| {
                let mut acked = 0;
                for cmd in cmds {
                    acked += acks(&h.call(P, cmd));
                }
                while acked < SENDS {
                    let out = h.run_flushes();
                    assert!(!out.is_empty() || acked == SENDS, "sends left unacked");
                    acked += acks(&out);
                }
                black_box(acked)
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, group_commit);
criterion_main!(benches);

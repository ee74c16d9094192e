//! A warmed commit log (`StoreConfig::warm_mapped_file`) prewrites zeros ahead of its
//! appends. The simulated disk really zeroes what is prewritten, so a store that prewrote
//! over its own records (after a restart, a cut tail, a segment roll) would lose them here.

mod common;

use common::{Sent, put_all, small_config, verify};
use rockfish_store::{FaultPlan, MemDisk, MessageStore, MmapDisk, StoreConfig};

fn warm_config() -> StoreConfig {
    StoreConfig {
        warm_mapped_file: Some(true),
        ..small_config()
    }
}

fn fill<D: rockfish_store::Disk>(
    store: &mut MessageStore<D>,
    from: usize,
    n: usize,
    now: u64,
) -> Vec<Sent> {
    let mut out = Vec::new();
    for i in from..from + n {
        // Batches of 1–4, bodies of 100–1,300 bytes: appends end anywhere in a page.
        let mut batch: Vec<Sent> = (0..1 + i % 4)
            .map(|j| {
                Sent::new(
                    ["TopicA", "TopicB"][(i + j) % 2],
                    ((i + j) % 3) as u32,
                    vec![(i + j) as u8; 100 + (i * 37 + j) % 1200],
                    &format!("k{i}-{j}"),
                    "TagA",
                )
            })
            .collect();
        put_all(store, &mut batch, now + i as u64).unwrap();
        out.extend(batch);
    }
    out
}

#[test]
fn a_warmed_log_keeps_every_record_across_rolls_crashes_and_cut_tails() {
    let disk = MemDisk::new(11);
    let (mut store, _) = MessageStore::open(disk.clone(), warm_config(), 1_000).unwrap();
    let mut sent = fill(&mut store, 0, 300, 1_000);
    verify(&store, &sent);
    assert!(
        disk.stats().prewritten > 0,
        "appends prewrote the space ahead of them"
    );
    // A process crash (the page cache survives): recovery re-derives, appends resume at
    // the recovered end, and warming resumes past it without touching what lies below.
    store.sync().unwrap();
    drop(store.crash());
    let (mut store, report) = MessageStore::open(disk.clone(), warm_config(), 2_000).unwrap();
    assert_eq!(report.log_end, sent.last().unwrap().end);
    sent.extend(fill(&mut store, 300, 200, 3_000));
    verify(&store, &sent);
    // A power loss that drops everything not synced: the tail is cut, then appended anew.
    store.sync().unwrap();
    let durable = sent.clone();
    let _lost = fill(&mut store, 500, 50, 4_000);
    drop(store.crash());
    disk.set_plan(FaultPlan::default());
    disk.power_loss();
    let (mut store, report) = MessageStore::open(disk.clone(), warm_config(), 5_000).unwrap();
    assert_eq!(report.log_end, durable.last().unwrap().end);
    let mut sent = durable;
    sent.extend(fill(&mut store, 550, 200, 6_000));
    verify(&store, &sent);
    store.shutdown(7_000).unwrap();
    let (store, _) = MessageStore::open(disk, warm_config(), 8_000).unwrap();
    verify(&store, &sent);
}

#[test]
fn a_warmed_log_on_real_files_reads_back_and_leaves_zeros_past_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let open = |now| {
        MessageStore::open(MmapDisk::open_root(dir.path()).unwrap(), warm_config(), now).unwrap()
    };
    let (mut store, _) = open(1_000);
    let mut sent = fill(&mut store, 0, 300, 1_000);
    drop(store.crash());
    let (mut store, _) = open(2_000);
    sent.extend(fill(&mut store, 300, 300, 3_000));
    verify(&store, &sent);
    let end = sent.last().unwrap().end;
    store.shutdown(4_000).unwrap();
    let (store, report) = open(5_000);
    assert_eq!(report.log_end, end);
    verify(&store, &sent);
    // Past the end, the active segment reads as zeros (prewritten or never written).
    let seg = small_config().commitlog_segment_size;
    let bytes = std::fs::read(
        dir.path()
            .join(format!("commitlog/{:020}", end - end % seg)),
    )
    .unwrap();
    assert!(bytes[(end % seg) as usize..].iter().all(|b| *b == 0));
}

//! Recovery on real files (`MmapDisk` in a temp dir): a clean restart, a tail cut short by
//! hand, a record corrupted by hand, and flushing from another thread.

mod common;

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use common::{Sent, put_all, small_config, verify};
use rockfish_store::{Disk, MessageStore, MmapDisk, StoreError};

fn fill(store: &mut MessageStore<MmapDisk>, from: usize, n: usize, now: u64) -> Vec<Sent> {
    let mut out = Vec::new();
    for i in from..from + n {
        let mut m = vec![Sent::new(
            ["TopicA", "TopicB"][i % 2],
            (i % 3) as u32,
            vec![i as u8; 300 + i % 700],
            &format!("k{i}"),
            "TagA",
        )];
        put_all(store, &mut m, now + i as u64).unwrap();
        out.extend(m);
    }
    out
}

fn open(dir: &Path) -> (MessageStore<MmapDisk>, rockfish_store::RecoveryReport) {
    MessageStore::open(MmapDisk::open_root(dir).unwrap(), small_config(), 9_000_000).unwrap()
}

fn segment_path(dir: &Path, offset: u64) -> std::path::PathBuf {
    let seg = offset - offset % small_config().commitlog_segment_size;
    dir.join(format!("commitlog/{seg:020}"))
}

#[test]
fn clean_restart_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, report) = open(dir.path());
    assert_eq!(report.log_end, 0);
    let sent = fill(&mut store, 0, 400, 1_000);
    store.shutdown(2_000_000).unwrap();
    let (store, report) = open(dir.path());
    assert!(report.clean_shutdown, "{report:?}");
    assert_eq!(report.truncated, None);
    assert_eq!(report.redispatched, 0, "a clean restart re-derives nothing");
    assert_eq!(report.log_end, sent.last().unwrap().end);
    verify(&store, &sent);
    // Files are where RocketMQ puts them.
    assert!(dir.path().join("commitlog/00000000000000000000").exists());
    assert!(
        dir.path()
            .join("consumequeue/TopicA/0/00000000000000000000")
            .exists()
    );
    assert!(dir.path().join("checkpoint").exists());
}

#[test]
fn crash_without_sync_keeps_the_page_cache() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = open(dir.path());
    let sent = fill(&mut store, 0, 200, 1_000);
    drop(store.crash()); // no sync, no checkpoint: a process crash
    let (store, report) = open(dir.path());
    assert!(!report.clean_shutdown);
    assert_eq!(report.redispatched, 200);
    verify(&store, &sent);
}

#[test]
fn hand_truncated_tail_is_cut_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = open(dir.path());
    let mut sent = fill(&mut store, 0, 100, 1_000);
    store.checkpoint(500_000).unwrap();
    sent.extend(fill(&mut store, 100, 100, 600_000));
    store.sync().unwrap();
    // The queue files hold the new entries (a full stage writes them on its own; here all
    // at once): what recovery reports dropped is what those files held past the cut.
    store.write_staged_queues().unwrap();
    drop(store.crash());
    // Cut the last segment in the middle of message 150 (after the checkpoint).
    let victim = sent[150].clone();
    let path = segment_path(dir.path(), victim.offset);
    let seg_start = victim.offset - victim.offset % small_config().commitlog_segment_size;
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(victim.offset - seg_start + 10)
        .unwrap();
    // Later segments (if any) hold records past the cut and must go.
    let (mut store, report) = open(dir.path());
    let cut = report.truncated.clone().expect("the cut is reported");
    assert_eq!(cut.offset, victim.offset, "{report:?}");
    assert!(
        cut.file.ends_with(&format!("{seg_start:020}")),
        "{report:?}"
    );
    assert!(
        report.file_repairs.iter().any(|f| f.contains("restored")),
        "{report:?}"
    );
    // Exactly the cut messages are reported dropped, per queue.
    let mut lost = std::collections::BTreeMap::new();
    for s in &sent[150..] {
        let r = lost
            .entry((s.topic.clone(), s.queue_id))
            .or_insert((u64::MAX, 0));
        r.0 = r.0.min(s.queue_offset);
        r.1 = r.1.max(s.queue_offset + 1);
    }
    let reported: std::collections::BTreeMap<_, _> = report
        .dropped
        .iter()
        .map(|d| ((d.topic.clone(), d.queue_id), (d.from, d.to)))
        .collect();
    assert_eq!(reported, lost, "{report:?}");
    sent.truncate(150);
    verify(&store, &sent);
    // The store takes writes again, right after the cut.
    let more = fill(&mut store, 150, 20, 800_000);
    assert_eq!(more[0].offset, victim.offset);
    sent.extend(more);
    store.shutdown(900_000).unwrap();
    let (store, _) = open(dir.path());
    verify(&store, &sent);
}

fn flip_byte(path: &Path, at: u64) {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    use std::io::Read;
    f.seek(SeekFrom::Start(at)).unwrap();
    f.read_exact(&mut b).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&[b[0] ^ 0x40]).unwrap();
    f.sync_all().unwrap();
}

#[test]
fn hand_corrupted_record_after_the_checkpoint_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = open(dir.path());
    let mut sent = fill(&mut store, 0, 60, 1_000);
    store.checkpoint(100_000).unwrap();
    sent.extend(fill(&mut store, 60, 60, 200_000));
    store.sync().unwrap();
    drop(store.crash());
    let victim = sent[90].clone();
    let seg_start = victim.offset - victim.offset % small_config().commitlog_segment_size;
    flip_byte(
        &segment_path(dir.path(), victim.offset),
        victim.offset - seg_start + 100,
    );
    let (store, report) = open(dir.path());
    let cut = report
        .truncated
        .clone()
        .expect("the corrupt record is reported");
    assert_eq!(cut.offset, victim.offset);
    assert!(cut.reason.contains("CRC"), "{cut:?}");
    sent.truncate(90);
    verify(&store, &sent);
}

#[test]
fn hand_corrupted_durable_record_is_an_error_never_data() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = open(dir.path());
    let sent = fill(&mut store, 0, 60, 1_000);
    store.shutdown(100_000).unwrap();
    let victim = &sent[20];
    let seg_start = victim.offset - victim.offset % small_config().commitlog_segment_size;
    let file = segment_path(dir.path(), victim.offset);
    flip_byte(&file, victim.offset - seg_start + 150);
    // Below the checkpoint: recovery does not rescan it, and a read names the damage.
    let (store, _) = open(dir.path());
    let err = store.read(victim.offset).unwrap_err();
    assert!(
        matches!(&err, StoreError::BadRecord { file, offset, .. } if file.ends_with(&format!("{seg_start:020}")) && *offset == victim.offset),
        "{err}"
    );
    let err = store
        .get(
            &victim.topic,
            victim.queue_id,
            victim.queue_offset,
            1,
            1 << 20,
            &|_| true,
        )
        .unwrap_err();
    assert!(err.to_string().contains("CRC"), "{err}");
    // Its neighbours are fine.
    assert!(sent[19].matches(&store.read(sent[19].offset).unwrap()));
    assert!(sent[21].matches(&store.read(sent[21].offset).unwrap()));
    drop(store.crash());
    // Without a checkpoint nothing is known to be durable, so a rescan cuts the log at the
    // damage and reports it (with a checkpoint, see bad_input.rs: it refuses).
    std::fs::remove_file(dir.path().join("checkpoint")).unwrap();
    let (store, report) = open(dir.path());
    assert_eq!(
        report.truncated.as_ref().map(|t| t.offset),
        Some(victim.offset),
        "{report:?}"
    );
    verify(&store, &sent[..20]);
}

#[test]
fn flush_from_another_thread_while_appending() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = open(dir.path());
    let sent = fill(&mut store, 0, 50, 1_000);
    // The flush thread gets the ranges and handles; the writer keeps appending meanwhile.
    let upto = store.write_pos();
    let ranges = store.commit_log().flush_ranges(store.flushed(), upto);
    let handles: Vec<_> = ranges
        .iter()
        .map(|(f, off, len)| (store.disk().sync_handle(*f).unwrap(), *off, *len))
        .collect();
    let flusher = std::thread::spawn(move || {
        for (h, off, len) in handles {
            h.sync(off, len).unwrap();
        }
    });
    let more = fill(&mut store, 50, 50, 2_000);
    flusher.join().unwrap();
    store.commit_log_mut().on_flushed(upto);
    assert_eq!(store.flushed(), upto);
    assert!(store.write_pos() > upto);
    let mut all = sent;
    all.extend(more);
    verify(&store, &all);
}

#[test]
fn reads_point_into_the_mapping() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = open(dir.path());
    let sent = fill(&mut store, 0, 3, 1_000);
    let a = store.read(sent[1].offset).unwrap();
    let b = store.read(sent[1].offset).unwrap();
    // Two reads of one record share the same bytes: no copy was made.
    assert_eq!(a.bytes().as_ptr(), b.bytes().as_ptr());
    let mut disk = store.crash();
    let f = disk.open("commitlog/00000000000000000000").unwrap();
    assert_eq!(disk.size(f).unwrap(), small_config().commitlog_segment_size);
}

//! The simulated disk's power-loss model: what a torn page leaves.

use rockfish_store::{Disk, FaultPlan, MemDisk};

#[test]
fn a_torn_page_leaves_new_or_old_sectors_and_garbage_only_where_nothing_was_written() {
    let mut disk = MemDisk::new(7);
    let f = disk.create("f", 4096).unwrap();
    disk.reserve(f, 0, 4096).unwrap();
    // The first half is written and synced; then the whole page is written anew: the first
    // half's bytes change (1 -> 3), the second half is written for the first time.
    disk.write_at(f, 0, &[1u8; 2048]).unwrap();
    disk.sync(f, 0, 4096).unwrap();
    let mut page = vec![3u8; 2048];
    page.extend(vec![2u8; 2048]);
    disk.write_at(f, 0, &page).unwrap();
    disk.set_plan(FaultPlan {
        torn_page: 1.0,
        torn_garbage: 1.0,
        ..FaultPlan::default()
    });
    disk.power_loss();
    let after = disk.durable_bytes("f").unwrap();
    assert!(
        after[..2048]
            .chunks(512)
            .all(|s| s.iter().all(|b| *b == 1) || s.iter().all(|b| *b == 3)),
        "a sector that held data holds its old bytes or its new ones (sector writes are atomic)"
    );
    let sectors: Vec<&[u8]> = after[2048..].chunks(512).collect();
    assert!(
        sectors
            .iter()
            .all(|s| s.iter().all(|b| *b == 2) || s.iter().any(|b| *b != 0 && *b != 2)),
        "a sector written for the first time holds its new bytes or garbage"
    );
    assert!(
        sectors.iter().any(|s| s.iter().any(|b| *b != 0 && *b != 2)),
        "with torn_garbage 1.0, a sector that did not land is garbage"
    );
    assert!(disk.stats().garbage_sectors > 0);
}

//! The simulated disk's power-loss model: what a torn page leaves.

use rockfish_store::{Disk, FaultPlan, MemDisk};

#[test]
fn a_torn_page_leaves_new_old_or_garbage_sectors_and_never_garbles_unchanged_ones() {
    let mut disk = MemDisk::new(7);
    let f = disk.create("f", 4096).unwrap();
    disk.reserve(f, 0, 4096).unwrap();
    // The first half is written and synced; then the whole page is written anew, but only
    // the second half's bytes change.
    disk.write_at(f, 0, &[1u8; 2048]).unwrap();
    disk.sync(f, 0, 4096).unwrap();
    let mut page = vec![1u8; 2048];
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
        after[..2048].iter().all(|b| *b == 1),
        "sectors whose bytes did not change keep them"
    );
    let sectors: Vec<&[u8]> = after[2048..].chunks(512).collect();
    assert!(
        sectors
            .iter()
            .all(|s| s.iter().all(|b| *b == 2) || s.iter().any(|b| *b != 0 && *b != 2)),
        "a changing sector holds its new bytes or garbage"
    );
    assert!(
        sectors.iter().any(|s| s.iter().any(|b| *b != 0 && *b != 2)),
        "with torn_garbage 1.0, a sector that did not land is garbage"
    );
    assert!(disk.stats().garbage_sectors > 0);
}

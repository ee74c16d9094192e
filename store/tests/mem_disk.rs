//! The simulated disk's power-loss model: what a torn page leaves.

use rockfish_store::{Disk, FaultPlan, MemDisk};

/// A power loss that tears every dirty page, every sector that did not land showing garbage
/// where it may.
fn lose_power_tearing_every_page(disk: &MemDisk) {
    disk.set_plan(FaultPlan {
        torn_page: 1.0,
        torn_garbage: 1.0,
        ..FaultPlan::default()
    });
    disk.power_loss();
}

#[test]
fn a_torn_page_leaves_new_or_old_sectors_and_garbage_only_where_nothing_was_written() {
    let mut disk = MemDisk::new(7);
    let f = disk.create("f", 8192).unwrap();
    disk.reserve(f, 0, 8192).unwrap();
    // The first page is written and synced (all its sectors reach the media); then it is
    // written anew (1 -> 3), and the second page is written for the first time.
    disk.write_at(f, 0, &[1u8; 4096]).unwrap();
    disk.sync(f, 0, 8192).unwrap();
    disk.write_at(f, 0, &[3u8; 4096]).unwrap();
    disk.write_at(f, 4096, &[2u8; 4096]).unwrap();
    lose_power_tearing_every_page(&disk);
    let after = disk.durable_bytes("f").unwrap();
    assert!(
        after[..4096]
            .chunks(512)
            .all(|s| s.iter().all(|b| *b == 1) || s.iter().all(|b| *b == 3)),
        "a sector that held data holds its old bytes or its new ones (sector writes are atomic)"
    );
    let sectors: Vec<&[u8]> = after[4096..].chunks(512).collect();
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

#[test]
fn zeros_that_reached_the_media_are_data_and_never_turn_to_garbage() {
    // An index entry whose last fields are zero, synced: the sector holds those zeros. A later
    // write to the rest of that sector, torn by a power loss, leaves old bytes or new ones,
    // never garbage over what was durable (found by the simulator: keys lost from the index).
    for seed in 0..50 {
        let mut disk = MemDisk::new(seed);
        let f = disk.create("f", 4096).unwrap();
        disk.reserve(f, 0, 4096).unwrap();
        disk.write_at(f, 0, &[7u8; 500]).unwrap();
        disk.sync(f, 0, 4096).unwrap();
        disk.write_at(f, 520, &[9u8; 100]).unwrap();
        lose_power_tearing_every_page(&disk);
        let after = disk.durable_bytes("f").unwrap();
        assert!(after[..500].iter().all(|b| *b == 7), "seed {seed}");
        assert!(
            after[500..520].iter().all(|b| *b == 0),
            "seed {seed}: durable zeros stay zeros"
        );
        assert!(after[520..620].iter().all(|b| *b == 0) || after[520..620].iter().all(|b| *b == 9));
        assert_eq!(disk.stats().garbage_sectors, 0, "seed {seed}");
    }
}

//! Recoveries cut short by a crash at one of their disk operations (`MemDisk::arm_fuse`): the
//! recovery after them still finds every durable message, through its queue and by its key.

mod common;

use common::{Sent, put_all, small_config, verify};
use rockfish_store::{Disk, MemDisk, MessageStore};

/// A store holding 300 durable messages over two topics (several index files), checkpointed,
/// then crashed.
fn filled() -> (MemDisk, Vec<Sent>) {
    let disk = MemDisk::new(7);
    let (mut store, _) = MessageStore::open(disk.clone(), small_config(), 0).unwrap();
    let mut all = Vec::new();
    for i in 0..300u64 {
        let topic = ["TopicA", "TopicB"][i as usize % 2];
        let mut batch = vec![Sent::new(
            topic,
            (i % 3) as u32,
            vec![i as u8; 40],
            &format!("k{i}"),
            "TagA",
        )];
        put_all(&mut store, &mut batch, 1_000 + i).unwrap();
        all.extend(batch);
    }
    store.sync().unwrap();
    store.checkpoint(5_000).unwrap();
    let disk = store.crash();
    disk.crash();
    (disk, all)
}

#[test]
fn an_index_rebuild_cut_short_is_done_again() {
    for ops in (0..240).step_by(3) {
        let (disk, all) = filled();
        // An index file of the wrong size: recovery throws the whole index away and rebuilds
        // it from the log. A crash midway must not leave the checkpoint vouching for the
        // half-rebuilt files.
        let path = disk
            .paths()
            .into_iter()
            .find(|p| p.starts_with("index/"))
            .unwrap();
        let size = disk.durable_bytes(&path).unwrap().len() as u64;
        disk.clone().grow(&path, size + 4_096).unwrap();
        disk.arm_fuse(ops);
        let _ = MessageStore::open(disk.clone(), small_config(), 6_000);
        disk.crash();
        let (store, _) = MessageStore::open(disk.clone(), small_config(), 7_000).unwrap();
        verify(&store, &all);
    }
}

#[test]
fn a_queue_rebuild_cut_short_is_done_again() {
    for ops in (0..240).step_by(3) {
        for power in [false, true] {
            let (disk, all) = filled();
            // A queue's files lost: recovery rebuilds it from the whole log. A crash (or a
            // power loss) midway must leave the next recovery rebuilding it again, never
            // trusting what the cut-short rebuild left.
            for path in disk.paths() {
                if path.starts_with("consumequeue/TopicA/0/") {
                    assert!(disk.delete(&path));
                }
            }
            disk.arm_fuse(ops);
            let _ = MessageStore::open(disk.clone(), small_config(), 6_000);
            if power {
                disk.power_loss();
            } else {
                disk.crash();
            }
            let (store, _) = MessageStore::open(disk.clone(), small_config(), 7_000).unwrap();
            verify(&store, &all);
        }
    }
}

//! Checkpoints advance under steady ASYNC_FLUSH load: a broker whose producers never pause
//! still bounds what recovery must rescan, and recovery from such a checkpoint keeps every
//! message (queues and index re-derived past it).

use std::collections::VecDeque;

use bytes::Bytes;
use rockfish_core::broker::{Broker, BrokerConfig};
use rockfish_core::machine::{ConnId, Output};
use rockfish_core::message::properties_string;
use rockfish_core::remoting::RemotingCommand;
use rockfish_core::remoting::codes::request;
use rockfish_store::record::HostAddr;
use rockfish_store::{Checkpoint, IndexConfig, MemDisk, MessageStore, StoreConfig};

const P: ConnId = ConnId(1);

fn store_config() -> StoreConfig {
    StoreConfig {
        index: IndexConfig {
            hash_slots: 101,
            max_entries: 10_000,
        },
        ..StoreConfig::small()
    }
}

fn send(i: u32) -> RemotingCommand {
    let key = format!("k{i}");
    let props = String::from_utf8(properties_string([
        ("KEYS", key.as_str()),
        ("UNIQ_KEY", key.as_str()),
    ]))
    .unwrap();
    RemotingCommand::request(request::SEND_MESSAGE_V2, i as i32)
        .with_ext("a", "PG")
        .with_ext("b", "Steady")
        .with_ext("c", "TBW102")
        .with_ext("d", 4)
        .with_ext("e", i % 4)
        .with_ext("f", 0)
        .with_ext("g", 0)
        .with_ext("h", 0)
        .with_ext("i", props)
        .with_body(Bytes::from(vec![b'x'; 200]))
}

#[test]
fn a_checkpoint_advances_under_steady_async_flush_load() {
    let disk = MemDisk::new(7);
    let (store, _) = MessageStore::open(disk.clone(), store_config(), 0).unwrap();
    let mut b = Broker::new(BrokerConfig::default(), store, 0).unwrap();
    b.on_connect(P, HostAddr::V4([10, 0, 0, 9], 5555), 0);
    // A send every 2 ms for 10 s; each flush takes 40 ms, so there is always something
    // appended past the flushed offset and a flush is often running.
    let mut flushes: VecDeque<(u64, u64)> = VecDeque::new(); // (done at, upto)
    let mut sent = 0u32;
    for now in (0..10_000u64).step_by(2) {
        while flushes.front().is_some_and(|(t, _)| *t <= now) {
            let (_, upto) = flushes.pop_front().unwrap();
            b.run_flush(upto, now);
        }
        if b.poll_timeout().is_some_and(|t| t <= now) {
            b.on_timeout(now);
        }
        b.on_command(P, send(sent), now, now);
        sent += 1;
        while let Some(o) = b.poll_output() {
            match o {
                Output::Flush { upto } => flushes.push_back((now + 40, upto)),
                Output::Persist { token, files } => b.run_persist(token, files, now),
                _ => {}
            }
        }
    }
    let cp = Checkpoint::load(&disk)
        .unwrap()
        .expect("a checkpoint exists");
    let write_pos = b.store().write_pos();
    assert!(
        cp.offset > write_pos / 2,
        "the checkpoint is stuck at {} of {write_pos} bytes written",
        cp.offset
    );
    // Recover from it after a process crash: every message is there, queues and index agree.
    drop(b);
    disk.crash();
    let (store, report) = MessageStore::open(disk.clone(), store_config(), 20_000).unwrap();
    assert!(report.scanned_from >= cp.offset.min(report.checkpoint.unwrap_or(0)));
    let total: u64 = (0..4).map(|q| store.max_offset("Steady", q)).sum();
    assert_eq!(total, sent as u64);
    for i in [0u32, sent / 2, sent - 1] {
        let hits = store
            .query_by_key("Steady", &format!("k{i}"), 0, i64::MAX, 10)
            .unwrap();
        assert_eq!(hits.len(), 1, "key k{i} indexed exactly once");
    }
}

#[test]
fn bad_configs_are_refused_naming_the_key() {
    use rockfish_core::broker::BrokerError;
    let bad_broker = [
        BrokerConfig {
            max_pull_messages: 0,
            ..BrokerConfig::default()
        },
        BrokerConfig {
            flush_interval_ms: 0,
            ..BrokerConfig::default()
        },
        BrokerConfig {
            default_topic_queues: 0,
            ..BrokerConfig::default()
        },
        BrokerConfig {
            broker_name: "a b".into(),
            ..BrokerConfig::default()
        },
        BrokerConfig {
            namesrv_addrs: vec!["nowhere".into()],
            ..BrokerConfig::default()
        },
        BrokerConfig {
            client_expire_ms: 10_000,
            ..BrokerConfig::default()
        },
    ];
    for cfg in bad_broker {
        let disk = MemDisk::new(1);
        let (store, _) = MessageStore::open(disk, store_config(), 0).unwrap();
        match Broker::new(cfg.clone(), store, 0) {
            Err(BrokerError::Config(why)) => assert!(!why.is_empty()),
            Err(e) => panic!("{cfg:?}: wrong error {e}"),
            Ok(_) => panic!("{cfg:?} was accepted"),
        }
    }
    let bad_store = [
        // Over 2 GiB: the blank marker's length no longer fits RocketMQ's int.
        StoreConfig {
            commitlog_segment_size: 5 << 30,
            ..store_config()
        },
        StoreConfig {
            commitlog_segment_size: 1024,
            ..store_config()
        },
        StoreConfig {
            consume_queue_entries: 0,
            ..store_config()
        },
        StoreConfig {
            index: IndexConfig {
                hash_slots: 0,
                max_entries: 1000,
            },
            ..store_config()
        },
        StoreConfig {
            max_message_size: 0,
            ..store_config()
        },
    ];
    for cfg in bad_store {
        let err = MessageStore::open(MemDisk::new(1), cfg.clone(), 0)
            .err()
            .unwrap_or_else(|| panic!("{cfg:?} was accepted"));
        assert!(
            matches!(err, rockfish_store::StoreError::Invalid { .. }),
            "{err}"
        );
    }
}

/// With thousands of queues a checkpoint's syncs are one filesystem sync of a hundred
/// milliseconds and more: the machine only names them (`persist_syncs`), the driver makes
/// them durable before the checkpoint file, and the queues count as durable only then.
#[test]
fn checkpoint_syncs_are_the_drivers_not_the_machines() {
    let disk = MemDisk::new(11);
    let (store, _) = MessageStore::open(disk.clone(), store_config(), 0).unwrap();
    let mut b = Broker::new(BrokerConfig::default(), store, 0).unwrap();
    b.on_connect(P, HostAddr::V4([10, 0, 0, 9], 5555), 0);
    let sent = 40u32;
    for i in 0..sent {
        b.on_command(P, send(i), 10, 10);
    }
    let mut checkpoint = None;
    let mut now = 10;
    while checkpoint.is_none() {
        now = b.poll_timeout().expect("timers are armed").max(now);
        b.on_timeout(now);
        while let Some(o) = b.poll_output() {
            match o {
                Output::Flush { upto } => b.run_flush(upto, now),
                Output::Persist { token, files } if files[0].0 == "checkpoint" => {
                    checkpoint = Some((token, files))
                }
                Output::Persist { token, files } => b.run_persist(token, files, now),
                _ => {}
            }
        }
    }
    let (token, files) = checkpoint.unwrap();
    let queue_files: Vec<String> = disk
        .paths()
        .into_iter()
        .filter(|p| p.starts_with("consumequeue/Steady/"))
        .collect();
    assert_eq!(queue_files.len(), 4);
    let durable_entries = |disk: &MemDisk| -> usize {
        queue_files
            .iter()
            .map(|p| {
                disk.durable_bytes(p)
                    .unwrap_or_default()
                    .chunks(20)
                    .take_while(|e| e.iter().any(|&b| b != 0))
                    .count()
            })
            .sum()
    };
    assert_eq!(
        durable_entries(&disk),
        0,
        "the machine synced queue files itself"
    );
    let syncs = b.persist_syncs(token).unwrap();
    assert!(
        !syncs.writes.is_empty(),
        "the staged queue entries are the driver's to write, off the machine's task"
    );
    assert!(!syncs.ranges.is_empty());
    assert!(
        !syncs.created.is_empty(),
        "the new queue files' existence is the driver's to sync too"
    );
    let before = Checkpoint::load(&disk).unwrap().map_or(0, |cp| cp.offset);
    assert!(
        before < b.store().write_pos(),
        "the new checkpoint is not written yet"
    );
    b.run_persist(token, files, now);
    assert_eq!(durable_entries(&disk), sent as usize);
    let cp = Checkpoint::load(&disk).unwrap().expect("written");
    assert_eq!(cp.offset, b.store().write_pos());
    // Power loss right after: recovery trusts the checkpoint and every message is there.
    drop(b);
    disk.power_loss();
    let (store, report) = MessageStore::open(disk.clone(), store_config(), 20_000).unwrap();
    assert_eq!(report.scanned_from, cp.offset);
    let total: u64 = (0..4).map(|q| store.max_offset("Steady", q)).sum();
    assert_eq!(total, sent as u64);
}

/// Syncing every queue each second cleans each one's last page, and the next write to each
/// then faults: with many queues written, checkpoints space out, bounded in time and bytes.
#[test]
fn checkpoints_space_out_when_many_queues_were_written() {
    use rockfish_core::broker::{BULK_CHECKPOINT_INTERVAL_MS, CHEAP_CHECKPOINT_QUEUES};
    let disk = MemDisk::new(13);
    let (store, _) = MessageStore::open(disk.clone(), store_config(), 0).unwrap();
    let mut b = Broker::new(BrokerConfig::default(), store, 0).unwrap();
    b.on_connect(P, HostAddr::V4([10, 0, 0, 9], 5555), 0);
    let topics = CHEAP_CHECKPOINT_QUEUES as u32 + 36;
    let mut checkpoints = Vec::new();
    let mut now = 0;
    while now < 3 * BULK_CHECKPOINT_INTERVAL_MS {
        now += 100;
        // A message to every topic each second: every queue is written between checkpoints.
        if now % 1_000 == 0 {
            for t in 0..topics {
                let mut cmd = send(t);
                cmd.ext_fields.insert("b", format!("Many{t}"));
                b.on_command(P, cmd, now, now);
            }
        }
        if b.poll_timeout().is_some_and(|t| t <= now) {
            b.on_timeout(now);
        }
        while let Some(o) = b.poll_output() {
            match o {
                Output::Flush { upto } => b.run_flush(upto, now),
                Output::Persist { token, files } => {
                    if files[0].0 == "checkpoint" {
                        checkpoints.push(now);
                    }
                    b.run_persist(token, files, now)
                }
                _ => {}
            }
        }
    }
    assert!(
        (2..=3).contains(&checkpoints.len()),
        "checkpoints at {checkpoints:?}"
    );
    for pair in checkpoints.windows(2) {
        assert!(
            pair[1] - pair[0] >= BULK_CHECKPOINT_INTERVAL_MS,
            "{checkpoints:?}"
        );
        assert!(
            pair[1] - pair[0] <= BULK_CHECKPOINT_INTERVAL_MS + 1_000,
            "{checkpoints:?}"
        );
    }
}

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
        commitlog_segment_size: 1 << 20,
        consume_queue_entries: 1000,
        index: IndexConfig {
            hash_slots: 101,
            max_entries: 10_000,
        },
        ..StoreConfig::default()
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

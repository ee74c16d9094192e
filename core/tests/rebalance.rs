//! Allocation strategies: fixed cases checked against Java's results, uneven counts, more
//! consumers than queues, and the property every consumer relies on: over a group, the
//! allocations partition the queues (nothing twice, nothing skipped).

use std::collections::BTreeSet;

use proptest::prelude::*;
use rockfish_core::protocol::MessageQueue;
use rockfish_core::rebalance::{
    AllocateStrategy, Averagely, AveragelyByCircle, ByConfig, ByMachineRoom, ConsistentHash,
};

fn mqs(broker: &str, n: u32) -> Vec<MessageQueue> {
    (0..n)
        .map(|q| MessageQueue {
            topic: "TopicA".into(),
            broker_name: broker.into(),
            queue_id: q,
        })
        .collect()
}

fn cids(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("10.0.0.{i}@1")).collect()
}

fn ids(v: &[MessageQueue]) -> Vec<u32> {
    v.iter().map(|m| m.queue_id).collect()
}

#[test]
fn averagely_matches_rocketmq() {
    let (q, c) = (mqs("broker-a", 8), cids(3));
    let got: Vec<Vec<u32>> = c
        .iter()
        .map(|cid| ids(&Averagely.allocate(cid, &q, &c)))
        .collect();
    assert_eq!(got, vec![vec![0, 1, 2], vec![3, 4, 5], vec![6, 7]]);
    // More consumers than queues: one each for the first ones, nothing for the rest.
    let (q, c) = (mqs("broker-a", 3), cids(5));
    let got: Vec<Vec<u32>> = c
        .iter()
        .map(|cid| ids(&Averagely.allocate(cid, &q, &c)))
        .collect();
    assert_eq!(got, vec![vec![0], vec![1], vec![2], vec![], vec![]]);
    assert!(Averagely.allocate("stranger", &q, &c).is_empty());
    assert!(Averagely.allocate(&c[0], &[], &c).is_empty());
}

#[test]
fn averagely_by_circle_matches_rocketmq() {
    let (q, c) = (mqs("broker-a", 8), cids(3));
    let got: Vec<Vec<u32>> = c
        .iter()
        .map(|cid| ids(&AveragelyByCircle.allocate(cid, &q, &c)))
        .collect();
    assert_eq!(got, vec![vec![0, 3, 6], vec![1, 4, 7], vec![2, 5]]);
}

#[test]
fn consistent_hash_matches_java() {
    // Expected values computed by java.security.MessageDigest MD5 and a java.util.TreeMap ring,
    // the way RocketMQ's ConsistentHashRouter does (10 virtual nodes, "cid-i" keys).
    let (q, c) = (mqs("broker-a", 16), cids(3));
    let got: Vec<Vec<u32>> = c
        .iter()
        .map(|cid| ids(&ConsistentHash::default().allocate(cid, &q, &c)))
        .collect();
    assert_eq!(
        got,
        vec![
            vec![2, 4, 7, 12, 14],
            vec![1, 3, 5, 6, 8, 11, 15],
            vec![0, 9, 10, 13]
        ]
    );
}

#[test]
fn by_config_and_machine_room() {
    let fixed = mqs("broker-a", 2);
    assert_eq!(
        ByConfig {
            queues: fixed.clone()
        }
        .allocate("any", &mqs("x", 9), &cids(2)),
        fixed
    );
    let mut q = mqs("hz@broker-a", 5);
    q.extend(mqs("sh@broker-b", 4));
    q.extend(mqs("broker-c", 4));
    q.sort();
    let strategy = ByMachineRoom {
        rooms: ["hz".to_string()].into(),
    };
    let c = cids(2);
    let a: Vec<_> = strategy
        .allocate(&c[0], &q, &c)
        .iter()
        .map(|m| (m.broker_name.clone(), m.queue_id))
        .collect();
    let b: Vec<_> = strategy
        .allocate(&c[1], &q, &c)
        .iter()
        .map(|m| (m.broker_name.clone(), m.queue_id))
        .collect();
    let hz = |i| ("hz@broker-a".to_string(), i);
    assert_eq!(
        a,
        vec![hz(0), hz(1), hz(4)],
        "two each, and the remainder to the first consumer"
    );
    assert_eq!(b, vec![hz(2), hz(3)]);
}

proptest! {
    #[test]
    fn allocations_partition_the_queues(queues in 1u32..64, consumers in 1usize..12, brokers in 1usize..3) {
        let mut q: Vec<MessageQueue> = (0..brokers).flat_map(|b| mqs(&format!("broker-{b}"), queues)).collect();
        q.sort();
        let c = cids(consumers);
        let strategies: [&dyn AllocateStrategy; 3] = [&Averagely, &AveragelyByCircle, &ConsistentHash::default()];
        for s in strategies {
            let mut seen = BTreeSet::new();
            for cid in &c {
                for mq in s.allocate(cid, &q, &c) {
                    prop_assert!(seen.insert(mq.clone()), "{} gives {mq} twice", s.name());
                }
            }
            prop_assert_eq!(seen.len(), q.len(), "{} skips queues", s.name());
        }
    }
}

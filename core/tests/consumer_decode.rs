//! The consumer reads what any RocketMQ broker serves (Apache 4.x records carry no
//! `__CRC32#`), and a record it cannot decode stops its queue there: the offset does not move
//! past it and nothing after it is delivered. Before, the whole batch was dropped silently and
//! the offset moved on (a consumer skipped ~185k messages against Apache 4.9.8).

use std::collections::BTreeMap;

use rockfish_core::consumer::{Consumer, ConsumerConfig, ConsumerEvent, LOCK_TRUST_MS};
use rockfish_core::message::properties_string;
use rockfish_core::protocol::{LockBatchResponseBody, MessageQueue, to_body};
use rockfish_core::remoting::RemotingCommand;
use rockfish_core::remoting::codes::{request, response};
use rockfish_sim::harness::client::{
    answer, answer_members, consumer_config, find, one_queue_route, requests,
};

mod support;
use support::Apache;

/// A consumer alone in its group on one queue, with its first pull (offset 0) outstanding.
fn pulling() -> (Consumer, RemotingCommand) {
    let mut c = Consumer::new(consumer_config("c1"), BTreeMap::new(), 0);
    c.on_timeout(0);
    let route = find(&requests(&mut c), request::GET_ROUTEINFO_BY_TOPIC).expect("asks the route");
    // Apache's name server, to a client older than V4_9_4, writes broker ids as bare keys.
    let mut data = one_queue_route();
    data.broker_datas[0].enable_acting_master = false;
    let body = String::from_utf8(to_body(&data).to_vec())
        .unwrap()
        .replace("\"0\":", "0:");
    assert!(body.contains("{0:\""), "{body}");
    c.on_command(answer(&route, response::SUCCESS).with_body(body), 0);
    c.on_timeout(1);
    let reqs = requests(&mut c);
    answer_members(&mut c, &reqs, &["c1"], 1);
    let query = find(&requests(&mut c), request::QUERY_CONSUMER_OFFSET).expect("asks the offset");
    c.on_command(answer(&query, response::SUCCESS).with_ext("offset", 0), 1);
    let pull = find(&requests(&mut c), request::PULL_MESSAGE).expect("pulls");
    assert_eq!(pull.ext("queueOffset"), Some("0"));
    (c, pull)
}

fn delivered(c: &mut Consumer) -> Vec<(u64, Vec<u8>)> {
    std::iter::from_fn(|| c.poll_event())
        .filter_map(|e| match e {
            ConsumerEvent::Deliver { msgs, .. } => Some(msgs),
            _ => None,
        })
        .flatten()
        .map(|m| (m.queue_offset(), m.body().to_vec()))
        .collect()
}

#[test]
fn apache_4x_records_without_crc_property_are_delivered() {
    let (mut c, pull) = pulling();
    let p = properties_string([("TAGS", "TagA"), ("UNIQ_KEY", "U0")]);
    let mut body = Apache::new("T", b"m0", &p, 0).encode();
    body.extend(Apache::new("T", b"m1", &p, 1).encode());
    c.on_command(
        answer(&pull, response::SUCCESS)
            .with_ext("nextBeginOffset", 2)
            .with_body(body),
        2,
    );
    assert_eq!(
        delivered(&mut c),
        vec![(0, b"m0".to_vec()), (1, b"m1".to_vec())]
    );
    c.on_timeout(3);
    let next = find(&requests(&mut c), request::PULL_MESSAGE).expect("pulls on");
    assert_eq!(next.ext("queueOffset"), Some("2"));
}

#[test]
fn a_corrupt_record_stops_the_queue_without_moving_past_it() {
    let (mut c, pull) = pulling();
    let p = properties_string([("TAGS", "TagA")]);
    let mut body = Apache::new("T", b"m0", &p, 0).encode();
    let mut bad = Apache::new("T", b"m1", &p, 1).encode();
    let body_at = bad.len() - 2 - p.len() - 2 - 2;
    bad[body_at] ^= 0x40; // the body no longer matches its CRC
    body.extend(bad);
    body.extend(Apache::new("T", b"m2", &p, 2).encode());
    c.on_command(
        answer(&pull, response::SUCCESS)
            .with_ext("nextBeginOffset", 3)
            .with_body(body),
        2,
    );
    // What decoded before the corrupt record is delivered; nothing after it.
    assert_eq!(delivered(&mut c), vec![(0, b"m0".to_vec())]);
    c.on_timeout(3);
    assert!(
        find(&requests(&mut c), request::PULL_MESSAGE).is_none(),
        "the queue waits before pulling the same bytes again"
    );
    // Well after the retry delay (and the other timers that fire meanwhile).
    c.on_timeout(60_000);
    let again = find(&requests(&mut c), request::PULL_MESSAGE).expect("pulls again later");
    assert_eq!(
        again.ext("queueOffset"),
        Some("1"),
        "the offset stops at the corrupt record, not the broker's nextBeginOffset"
    );
    assert!(c.offsets().values().all(|&o| o <= 1), "{:?}", c.offsets());
}

/// An undecodable member list is no reason to give up the queues: allocating over an empty
/// list would have dropped every queue the consumer holds (and stopped consuming them).
#[test]
fn an_undecodable_member_list_keeps_the_assignment() {
    let (mut c, pull) = pulling();
    let held = c.assigned();
    assert_eq!(held.len(), 1);
    let _ = pull;
    // The next rebalance asks the members again; the answer is garbage.
    let mut now = 1;
    let ids = loop {
        now += 1_000;
        c.on_timeout(now);
        if let Some(ids) = find(&requests(&mut c), request::GET_CONSUMER_LIST_BY_GROUP) {
            break ids;
        }
        assert!(now < 120_000, "never rebalanced");
    };
    c.on_command(
        answer(&ids, response::SUCCESS).with_body(&b"{\"consumerIdList\": 7"[..]),
        now,
    );
    assert_eq!(c.assigned(), held);
}

/// Answers what an orderly consumer asks until it holds its one queue's lock.
fn orderly_locked() -> (Consumer, MessageQueue) {
    let config = ConsumerConfig {
        orderly: true,
        ..consumer_config("c1")
    };
    let mq = MessageQueue {
        topic: "T".into(),
        broker_name: "b".into(),
        queue_id: 0,
    };
    let route = one_queue_route();
    let mut c = Consumer::new(config, BTreeMap::new(), 0);
    for now in 0..10 {
        c.on_timeout(now);
        for req in requests(&mut c) {
            let ok = answer(&req, response::SUCCESS);
            let resp = match req.code {
                request::GET_ROUTEINFO_BY_TOPIC => ok.with_body(to_body(&route)),
                request::GET_CONSUMER_LIST_BY_GROUP => ok.with_body(
                    serde_json::to_vec(&serde_json::json!({ "consumerIdList": ["c1"] })).unwrap(),
                ),
                request::LOCK_BATCH_MQ => ok.with_body(to_body(&LockBatchResponseBody {
                    lock_ok_mq_set: [mq.clone()].into(),
                })),
                request::QUERY_CONSUMER_OFFSET => ok.with_ext("offset", 0),
                _ => continue,
            };
            c.on_command(resp, now);
        }
    }
    assert!(c.is_locked(&mq, 10), "the consumer holds its queue's lock");
    (c, mq)
}

#[test]
fn a_refused_or_unreadable_lock_answer_keeps_the_lease_held() {
    for (code, body) in [
        (response::SUCCESS, b"{\"lockOKMQSet\": [{".to_vec()),
        (response::SYSTEM_ERROR, Vec::new()),
    ] {
        let (mut c, mq) = orderly_locked();
        // The renewal goes out; its answer decides nothing.
        let now = 20_010;
        c.on_timeout(now);
        let lock = find(&requests(&mut c), request::LOCK_BATCH_MQ).expect("renews the lock");
        c.on_command(answer(&lock, code).with_body(body), now);
        assert!(
            c.is_locked(&mq, now),
            "code {code}: the lease granted at t<10 is trusted until it runs out"
        );
        assert!(!c.is_locked(&mq, 10 + LOCK_TRUST_MS), "and no longer");
    }
}

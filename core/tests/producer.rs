//! The `Producer` machine, driven directly: the test plays the name servers and brokers.

use std::collections::BTreeMap;

use rockfish_core::machine::Output;
use rockfish_core::producer::{
    Message, Producer, ProducerConfig, ProducerEvent, SendError, SendMode, SendStatus,
};
use rockfish_core::protocol::{BrokerData, QueueData, TopicRouteData, to_body};
use rockfish_core::remoting::RemotingCommand;
use rockfish_core::remoting::codes::{request, response};

fn route(brokers: &[(&str, &str, u32)]) -> TopicRouteData {
    TopicRouteData {
        queue_datas: brokers
            .iter()
            .map(|(name, _, q)| QueueData {
                broker_name: name.to_string(),
                read_queue_nums: *q,
                write_queue_nums: *q,
                perm: 6,
                topic_sys_flag: 0,
            })
            .collect(),
        broker_datas: brokers
            .iter()
            .map(|(name, addr, _)| {
                BrokerData::new("c", name, BTreeMap::from([(0, addr.to_string())]))
            })
            .collect(),
        ..TopicRouteData::default()
    }
}

fn outputs(p: &mut Producer) -> Vec<(String, RemotingCommand)> {
    std::iter::from_fn(|| p.poll_output())
        .map(|o| match o {
            Output::SendTo { addr, cmd } => (addr, cmd),
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

fn events(p: &mut Producer) -> Vec<ProducerEvent> {
    std::iter::from_fn(|| p.poll_event()).collect()
}

/// Answers one route request from `out` with `r` (or TOPIC_NOT_EXIST).
fn answer_route(p: &mut Producer, req: &RemotingCommand, r: Option<&TopicRouteData>, now: u64) {
    let resp = match r {
        Some(r) => RemotingCommand::response_to(req, response::SUCCESS, None).with_body(to_body(r)),
        None => {
            RemotingCommand::response_to(req, response::TOPIC_NOT_EXIST, Some("no route".into()))
        }
    };
    p.on_command(resp, now);
}

fn ok(req: &RemotingCommand, offset: u64) -> RemotingCommand {
    RemotingCommand::response_to(req, response::SUCCESS, None)
        .with_ext("msgId", "7F0000010000271100000000000000FF")
        .with_ext("queueId", req.ext("e").unwrap())
        .with_ext("queueOffset", offset)
}

fn two_brokers() -> TopicRouteData {
    route(&[("broker-a", "a:10911", 2), ("broker-b", "b:10911", 2)])
}

/// A producer with a route for "T" already fetched.
fn ready(config: ProducerConfig) -> Producer {
    let mut p = Producer::new(config, 0);
    let id = p.send(Message::new("T", "warm"), SendMode::Sync, 0);
    let out = outputs(&mut p);
    let (_, req) = out
        .iter()
        .find(|(_, c)| c.code == request::GET_ROUTEINFO_BY_TOPIC)
        .unwrap()
        .clone();
    answer_route(&mut p, &req, Some(&two_brokers()), 1);
    let out = outputs(&mut p);
    let (_, send) = out
        .iter()
        .find(|(_, c)| c.code == request::SEND_MESSAGE_V2)
        .unwrap();
    p.on_command(ok(send, 0), 2);
    assert!(
        matches!(&events(&mut p)[..], [ProducerEvent::Sent { id: i, result: Ok(_), .. }] if *i == id)
    );
    // The first tick sends the initial heartbeats.
    p.on_timeout(3);
    assert!(
        outputs(&mut p)
            .iter()
            .all(|(_, c)| c.code == request::HEART_BEAT)
    );
    p
}

#[test]
fn first_send_fetches_the_route_then_round_robins() {
    let mut p = Producer::new(ProducerConfig::default(), 0);
    let id = p.send(
        Message {
            tags: Some("TagA".into()),
            keys: vec!["k1".into()],
            ..Message::new("T", "hi")
        },
        SendMode::Sync,
        0,
    );
    let out = outputs(&mut p);
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].0.as_str(), out[0].1.code),
        ("127.0.0.1:9876", request::GET_ROUTEINFO_BY_TOPIC)
    );
    assert_eq!(out[0].1.ext("topic"), Some("T"));
    answer_route(&mut p, &out[0].1, Some(&two_brokers()), 5);
    let out = outputs(&mut p);
    let (addr, send) = &out[0];
    assert_eq!(send.code, request::SEND_MESSAGE_V2);
    assert_eq!(send.ext("b"), Some("T"));
    let props = send.ext("i").unwrap();
    assert!(
        props.contains("TAGS\u{1}TagA\u{2}")
            && props.contains("KEYS\u{1}k1\u{2}")
            && props.contains("UNIQ_KEY\u{1}")
    );
    p.on_command(ok(send, 42), 7);
    match &events(&mut p)[..] {
        [
            ProducerEvent::Sent {
                id: i,
                result: Ok(r),
                attempts: 1,
            },
        ] => {
            assert_eq!(*i, id);
            assert_eq!(r.status, SendStatus::SendOk);
            assert_eq!(r.queue_offset, 42);
            assert_eq!(
                r.msg_id.len(),
                32,
                "the client's UNIQ_KEY is the message id"
            );
            assert_eq!(r.offset_msg_id, "7F0000010000271100000000000000FF");
            assert_eq!(
                addr,
                if r.queue.broker_name == "broker-a" {
                    "a:10911"
                } else {
                    "b:10911"
                }
            );
        }
        other => panic!("{other:?}"),
    }
    // Round robin: the next four sends cover all four queues.
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..4 {
        p.send(Message::new("T", "x"), SendMode::Async, 10 + i);
        for (_, c) in outputs(&mut p) {
            seen.insert((
                c.ext("b").unwrap().to_string(),
                c.ext("e").unwrap().to_string(),
                c.opaque,
            ));
        }
    }
    let queues: std::collections::BTreeSet<_> = seen.iter().map(|(_, q, _)| q.clone()).collect();
    assert_eq!(queues.len(), 2, "queue ids 0 and 1 on both brokers");
    assert_eq!(seen.len(), 4);
}

#[test]
fn a_failed_send_retries_on_another_broker() {
    let mut p = ready(ProducerConfig::default());
    let id = p.send(Message::new("T", "x"), SendMode::Sync, 100);
    let (first_addr, first) = outputs(&mut p).remove(0);
    p.on_command(
        RemotingCommand::response_to(&first, response::SYSTEM_ERROR, Some("boom".into())),
        110,
    );
    let (second_addr, second) = outputs(&mut p).remove(0);
    assert_ne!(
        first_addr, second_addr,
        "the retry avoids the broker that just failed"
    );
    p.on_command(ok(&second, 1), 120);
    assert!(
        matches!(&events(&mut p)[..], [ProducerEvent::Sent { id: i, result: Ok(_), attempts: 2 }] if *i == id)
    );
}

#[test]
fn retries_stop_after_two_and_some_codes_are_final() {
    let mut p = ready(ProducerConfig::default());
    p.send(Message::new("T", "x"), SendMode::Sync, 100);
    for t in 0..3 {
        let (_, c) = outputs(&mut p).remove(0);
        p.on_command(
            RemotingCommand::response_to(&c, response::SERVICE_NOT_AVAILABLE, None),
            110 + t,
        );
    }
    assert!(outputs(&mut p).is_empty());
    assert!(matches!(
        &events(&mut p)[..],
        [ProducerEvent::Sent {
            result: Err(SendError::Broker { code: 14, .. }),
            attempts: 3,
            ..
        }]
    ));
    // SYSTEM_BUSY is retried (RocketMQ 5's retryResponseCodes); MESSAGE_ILLEGAL is final.
    p.send(Message::new("T", "x"), SendMode::Sync, 200);
    let (_, c) = outputs(&mut p).remove(0);
    p.on_command(
        RemotingCommand::response_to(&c, response::SYSTEM_BUSY, None),
        210,
    );
    let (_, c) = outputs(&mut p).remove(0);
    p.on_command(
        RemotingCommand::response_to(&c, response::MESSAGE_ILLEGAL, None),
        220,
    );
    assert!(matches!(
        &events(&mut p)[..],
        [ProducerEvent::Sent {
            result: Err(SendError::Broker { code: 13, .. }),
            attempts: 2,
            ..
        }]
    ));
    // Stored-with-a-warning codes are results, not errors.
    p.send(Message::new("T", "x"), SendMode::Sync, 300);
    let (_, c) = outputs(&mut p).remove(0);
    p.on_command(
        RemotingCommand::response_to(&c, response::FLUSH_DISK_TIMEOUT, None)
            .with_ext("msgId", "7F0000010000271100000000000000FF")
            .with_ext("queueId", 1)
            .with_ext("queueOffset", 3),
        310,
    );
    assert!(
        matches!(&events(&mut p)[..], [ProducerEvent::Sent { result: Ok(r), .. }] if r.status == SendStatus::FlushDiskTimeout && r.queue_offset == 3)
    );
}

#[test]
fn a_success_without_its_queue_offset_is_an_error_not_offset_zero() {
    // Java's SendMessageResponseHeader requires msgId, queueId and queueOffset: a success
    // without them names no stored message. It fails the attempt (retried, as the Java
    // client retries a RemotingCommandException), never reported as stored at offset 0.
    let mut p = ready(ProducerConfig::default());
    p.send(Message::new("T", "x"), SendMode::Sync, 100);
    for t in 0..3 {
        let (_, c) = outputs(&mut p).remove(0);
        let bare = RemotingCommand::response_to(&c, response::SUCCESS, None)
            .with_ext("msgId", "7F0000010000271100000000000000FF")
            .with_ext("queueId", c.ext("e").unwrap());
        p.on_command(bare, 110 + t);
    }
    assert!(outputs(&mut p).is_empty());
    assert!(matches!(
        &events(&mut p)[..],
        [ProducerEvent::Sent {
            result: Err(SendError::MalformedResponse(_)),
            attempts: 3,
            ..
        }]
    ));
}

#[test]
fn timeouts_retry_within_the_send_timeout_then_fail() {
    let mut p = ready(ProducerConfig::default());
    p.send(Message::new("T", "x"), SendMode::Sync, 1_000);
    assert_eq!(outputs(&mut p).len(), 1);
    assert_eq!(p.poll_timeout(), Some(4_000));
    p.on_timeout(4_000);
    // The whole send had 3 s; none is left for a retry.
    assert!(outputs(&mut p).is_empty());
    assert!(matches!(
        &events(&mut p)[..],
        [ProducerEvent::Sent {
            result: Err(SendError::Timeout(3_000)),
            ..
        }]
    ));
    // A lost connection fails the request at once and the retry goes elsewhere.
    p.send(Message::new("T", "x"), SendMode::Sync, 5_000);
    let (addr, _) = outputs(&mut p).remove(0);
    p.on_peer_lost(&addr, 5_010);
    let (retry_addr, retry) = outputs(&mut p).remove(0);
    assert_ne!(addr, retry_addr);
    p.on_command(ok(&retry, 9), 5_020);
    assert!(matches!(
        &events(&mut p)[..],
        [ProducerEvent::Sent {
            result: Ok(_),
            attempts: 2,
            ..
        }]
    ));
}

#[test]
fn latency_faults_steer_sends_away_for_a_while() {
    let mut p = ready(ProducerConfig {
        latency_fault: true,
        ..ProducerConfig::default()
    });
    // A 600 ms answer from broker-a: unavailable for 30 s.
    let mut now = 10_000;
    loop {
        p.send(Message::new("T", "x"), SendMode::Sync, now);
        let (addr, c) = outputs(&mut p).remove(0);
        p.on_command(ok(&c, 0), now + if addr == "a:10911" { 600 } else { 1 });
        events(&mut p);
        now += 1_000;
        if p.is_isolated("broker-a", now) {
            break;
        }
    }
    for _ in 0..10 {
        p.send(Message::new("T", "x"), SendMode::Sync, now);
        let (addr, c) = outputs(&mut p).remove(0);
        assert_eq!(addr, "b:10911", "broker-a is in its fault window");
        p.on_command(ok(&c, 0), now + 1);
        events(&mut p);
        now += 100;
    }
    now += 30_000;
    assert!(!p.is_isolated("broker-a", now));
    let mut used_a = false;
    for _ in 0..4 {
        p.send(Message::new("T", "x"), SendMode::Sync, now);
        let (addr, c) = outputs(&mut p).remove(0);
        used_a |= addr == "a:10911";
        p.on_command(ok(&c, 0), now + 1);
        events(&mut p);
    }
    assert!(used_a, "after the window broker-a is used again");
}

#[test]
fn unknown_topics_go_through_the_default_topic_and_no_route_fails() {
    let mut p = Producer::new(ProducerConfig::default(), 0);
    p.send(Message::new("New", "x"), SendMode::Sync, 0);
    let (_, r1) = outputs(&mut p).remove(0);
    answer_route(&mut p, &r1, None, 1);
    let (_, r2) = outputs(&mut p).remove(0);
    assert_eq!(r2.ext("topic"), Some("TBW102"));
    answer_route(&mut p, &r2, Some(&route(&[("broker-a", "a:10911", 8)])), 2);
    assert_eq!(
        p.queues("New").unwrap().len(),
        4,
        "capped at the producer's default queue count"
    );
    let (_, send) = outputs(&mut p).remove(0);
    assert_eq!(send.ext("b"), Some("New"));
    assert_eq!(send.ext("c"), Some("TBW102"));
    let mut p = Producer::new(ProducerConfig::default(), 0);
    p.send(Message::new("Nowhere", "x"), SendMode::Sync, 0);
    let (_, r1) = outputs(&mut p).remove(0);
    answer_route(&mut p, &r1, None, 1);
    let (_, r2) = outputs(&mut p).remove(0);
    answer_route(&mut p, &r2, None, 2);
    assert!(
        matches!(&events(&mut p)[..], [ProducerEvent::Sent { result: Err(SendError::NoRoute(t)), .. }] if t == "Nowhere")
    );
}

#[test]
fn name_server_failover_and_periodic_refresh() {
    let config = ProducerConfig {
        namesrv_addrs: vec!["ns1:9876".into(), "ns2:9876".into()],
        seed: 3,
        ..ProducerConfig::default()
    };
    let mut p = Producer::new(config, 0);
    p.send(Message::new("T", "x"), SendMode::Sync, 0);
    let (ns, req) = outputs(&mut p).remove(0);
    p.on_peer_lost(&ns, 10);
    let (other, req2) = outputs(&mut p).remove(0);
    assert_ne!(
        ns, other,
        "the route request fails over to the other name server"
    );
    assert_eq!(req2.ext("topic"), req.ext("topic"));
    answer_route(&mut p, &req2, Some(&two_brokers()), 20);
    outputs(&mut p);
    p.on_timeout(30_000);
    let out = outputs(&mut p);
    let refresh = out
        .iter()
        .filter(|(_, c)| c.code == request::GET_ROUTEINFO_BY_TOPIC)
        .count();
    assert_eq!(refresh, 1);
    // Heartbeats go to every known broker.
    let beats: Vec<_> = out
        .iter()
        .filter(|(_, c)| c.code == request::HEART_BEAT)
        .map(|(a, _)| a.as_str())
        .collect();
    assert_eq!(beats, vec!["a:10911", "b:10911"]);
    p.on_timeout(45_000);
    assert!(outputs(&mut p).is_empty(), "nothing is due before 60 s");
}

#[test]
fn ordered_sends_stick_to_their_key_queue_and_oneway_returns_at_once() {
    let mut p = ready(ProducerConfig::default());
    let mut queues = std::collections::BTreeSet::new();
    for i in 0..5 {
        p.send_ordered(
            Message::new("T", format!("o{i}")),
            "order-42",
            SendMode::Sync,
            100 + i,
        );
        let (addr, c) = outputs(&mut p).remove(0);
        queues.insert((addr, c.ext("e").unwrap().to_string()));
        p.on_command(ok(&c, i), 200 + i);
    }
    assert_eq!(queues.len(), 1, "one key, one queue");
    // A failed ordered send is not moved to another queue.
    p.send_ordered(Message::new("T", "x"), "order-42", SendMode::Sync, 300);
    let (_, c) = outputs(&mut p).remove(0);
    events(&mut p);
    p.on_command(
        RemotingCommand::response_to(&c, response::SYSTEM_ERROR, None),
        310,
    );
    assert!(outputs(&mut p).is_empty());
    assert!(matches!(
        &events(&mut p)[..],
        [ProducerEvent::Sent {
            result: Err(_),
            attempts: 1,
            ..
        }]
    ));
    // Oneway: written with the oneway flag, reported at once.
    p.send(Message::new("T", "x"), SendMode::Oneway, 400);
    let (_, c) = outputs(&mut p).remove(0);
    assert!(c.is_oneway());
    assert!(matches!(
        &events(&mut p)[..],
        [ProducerEvent::Sent { result: Ok(_), .. }]
    ));
    assert_eq!(p.in_flight(), 0);
}

#[test]
fn batch_sends_carry_every_message_with_its_own_id() {
    use rockfish_core::message::decode_batch;
    let mut p = ready(ProducerConfig::default());
    let msgs: Vec<Message> = (0..3)
        .map(|i| Message {
            tags: Some("T1".into()),
            ..Message::new("T", format!("b{i}"))
        })
        .collect();
    let id = p.send_batch(msgs, SendMode::Sync, 50);
    let (_, c) = outputs(&mut p).remove(0);
    assert_eq!(c.code, request::SEND_BATCH_MESSAGE);
    assert_eq!(c.ext("m"), Some("true"));
    let items = decode_batch(c.body.clone()).unwrap();
    assert_eq!(items.len(), 3);
    let uniqs: Vec<String> = items
        .iter()
        .map(|it| {
            let props = String::from_utf8(it.properties.to_vec()).unwrap();
            assert!(props.contains("TAGS\u{1}T1\u{2}"));
            props
                .split('\u{2}')
                .find(|kv| kv.starts_with("UNIQ_KEY"))
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        uniqs
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        3,
        "each item has its own id"
    );
    p.on_command(ok(&c, 7), 60);
    match &events(&mut p)[..] {
        [
            ProducerEvent::Sent {
                id: i,
                result: Ok(r),
                ..
            },
        ] => {
            assert_eq!(*i, id);
            assert_eq!(r.msg_id.split(',').count(), 3);
        }
        other => panic!("{other:?}"),
    }
    let empty = p.send_batch(vec![], SendMode::Sync, 70);
    assert!(
        matches!(&events(&mut p)[..], [ProducerEvent::Sent { id, result: Err(SendError::EmptyBatch), .. }] if *id == empty)
    );
    p.send_batch(
        vec![Message::new("A", "x"), Message::new("B", "y")],
        SendMode::Sync,
        80,
    );
    assert!(matches!(
        &events(&mut p)[..],
        [ProducerEvent::Sent {
            result: Err(SendError::MixedBatch),
            ..
        }]
    ));
}

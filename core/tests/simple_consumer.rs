//! The simple consumer (pop over remoting) against a name server and a broker: receive, ack,
//! let one message's invisibility lapse and receive it again, change invisibility.

use std::collections::BTreeMap;

use rockfish_core::broker::BrokerConfig;
use rockfish_core::consumer::{Received, SimpleConsumer, SimpleConsumerConfig, SimpleEvent};
use rockfish_core::producer::{Message, Producer, ProducerConfig, ProducerEvent, SendMode};
use rockfish_sim::harness::cluster::{Cluster, NS};

fn simple(name: &str, invisible_ms: u64) -> SimpleConsumer {
    let config = SimpleConsumerConfig {
        group: "SimpleGroup".into(),
        client_id: format!("10.0.0.1@{name}"),
        namesrv_addrs: vec![NS.into()],
        subscriptions: BTreeMap::from([("T".to_string(), "*".to_string())]),
        invisible_ms,
        await_ms: 2_000,
        max_messages: 8,
        ..SimpleConsumerConfig::default()
    };
    SimpleConsumer::new(config, 0)
}

fn send(c: &mut Cluster, bodies: &[&str]) {
    if !c.has("p") {
        let p = Producer::new(
            ProducerConfig {
                namesrv_addrs: vec![NS.into()],
                ..ProducerConfig::default()
            },
            0,
        );
        c.add_producer("p", p);
    }
    let now = c.now;
    for b in bodies {
        c.producer("p")
            .send(Message::new("T", b.to_string()), SendMode::Async, now);
    }
    c.pump();
    c.advance(c.now + 100);
    let ok = c
        .producer_events
        .drain(..)
        .filter(|e| matches!(e, ProducerEvent::Sent { result, .. } if result.is_ok()))
        .count();
    assert_eq!(ok, bodies.len());
}

/// Receives until `n` messages came or `deadline` passed.
fn receive(c: &mut Cluster, name: &str, n: usize, deadline: u64) -> Vec<Received> {
    let mut got = Vec::new();
    let mut asked = false;
    while got.len() < n && c.now < deadline {
        if !asked {
            let now = c.now;
            c.simple(name).receive("T", now);
            asked = true;
        }
        c.pump();
        c.advance(c.now + 100);
        for (_, e) in c.simple_events.drain(..) {
            match e {
                SimpleEvent::Received { msgs, .. } => {
                    got.extend(msgs);
                    asked = false;
                }
                SimpleEvent::ReceiveFailed { error, .. } => {
                    panic!("receive failed: {error}")
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    got
}

fn body(r: &Received) -> String {
    String::from_utf8_lossy(&r.msg.body()).into_owned()
}

fn ack(c: &mut Cluster, name: &str, r: &Received) -> Result<(), String> {
    let now = c.now;
    c.simple(name).ack(&r.handle, now);
    c.pump();
    c.advance(c.now + 10);
    match c.simple_events.drain(..).next() {
        Some((_, SimpleEvent::Acked { result, .. })) => result,
        other => panic!("expected an ack's answer, got {other:?}"),
    }
}

#[test]
fn received_messages_are_acked_and_one_left_alone_comes_back() {
    let mut c = Cluster::with_broker(BrokerConfig::default());
    send(&mut c, &["warm"]); // creates the topic
    c.add_simple_consumer("s", simple("s", 5_000));
    let warm = receive(&mut c, "s", 1, 10_000);
    assert_eq!(warm.iter().map(body).collect::<Vec<_>>(), ["warm"]);
    ack(&mut c, "s", &warm[0]).unwrap();
    send(&mut c, &["a", "b", "c"]);
    let until = c.now + 10_000;
    let mut got = receive(&mut c, "s", 3, until);
    got.sort_by_key(body);
    assert_eq!(got.iter().map(body).collect::<Vec<_>>(), ["a", "b", "c"]);
    let popped_at = c.now;
    for r in &got[..2] {
        ack(&mut c, "s", r).unwrap();
    }
    // "c" is left alone: invisible for 5 s, then back (as a retry: reconsumed once).
    let early = receive(&mut c, "s", 1, popped_at + 4_000);
    assert!(
        early.is_empty(),
        "back before its invisible time: {:?}",
        early.iter().map(body).collect::<Vec<_>>()
    );
    let back = receive(&mut c, "s", 1, popped_at + 20_000);
    assert_eq!(back.iter().map(body).collect::<Vec<_>>(), ["c"]);
    assert_eq!(back[0].msg.reconsume_times(), 1);
    assert_eq!(back[0].msg.topic(), "T");
    ack(&mut c, "s", &back[0]).unwrap();
    assert!(ack(&mut c, "s", &back[0]).is_err(), "acked twice");
    // Nothing else comes, ever.
    let until = c.now + 30_000;
    let none = receive(&mut c, "s", 1, until);
    assert!(none.is_empty());
}

#[test]
fn a_changed_invisibility_holds_the_message_longer_and_its_new_handle_acks_it() {
    let mut c = Cluster::with_broker(BrokerConfig::default());
    send(&mut c, &["x"]);
    c.add_simple_consumer("s", simple("s", 3_000));
    let got = receive(&mut c, "s", 1, 10_000);
    let now = c.now;
    c.simple("s").change_invisible(&got[0].handle, 20_000, now);
    c.pump();
    let handle = match c.simple_events.drain(..).next() {
        Some((_, SimpleEvent::InvisibilityChanged { result, .. })) => result.unwrap(),
        other => panic!("{other:?}"),
    };
    assert!(
        receive(&mut c, "s", 1, now + 10_000).is_empty(),
        "still invisible"
    );
    let r = Received {
        msg: got[0].msg.clone(),
        handle,
    };
    ack(&mut c, "s", &r).unwrap();
    assert!(
        receive(&mut c, "s", 1, now + 40_000).is_empty(),
        "acked: never back"
    );
}

#[test]
fn an_idle_simple_consumer_is_not_due_again_right_after_its_timeout() {
    // Found by the simulator's busy-timer checker (the pop scenarios' first run): a simple
    // consumer never heartbeats, but its client's first heartbeat stayed due at its start,
    // so every timeout left it due again at once: its timer fired every millisecond.
    let mut s = simple("idle", 5_000);
    while s.poll_output().is_some() {}
    let first = s.poll_timeout().expect("a deadline");
    s.on_timeout(first);
    while s.poll_output().is_some() {}
    let next = s.poll_timeout().expect("a deadline");
    assert!(
        next > first,
        "due again at {next} right after a timeout at {first}"
    );
}

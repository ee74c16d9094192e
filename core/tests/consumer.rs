//! The `Consumer` machine against the real NameServer and Broker machines (no sockets):
//! queue splitting, rebalance on join and leave without skipping, broadcasting, orderly
//! consumption with lock leases, flow control, and offset commit and resume.

use std::collections::{BTreeMap, BTreeSet};

use rockfish_core::consumer::{
    ConsumeResult, Consumer, ConsumerConfig, ConsumerEvent, MessageModel,
};
use rockfish_core::machine::ConnId;
use rockfish_core::producer::{Message, Producer, ProducerConfig, ProducerEvent, SendMode};
use rockfish_core::protocol::MessageQueue;
use rockfish_core::remoting::RemotingCommand;
use rockfish_core::remoting::codes::request;
use rockfish_sim::harness::client::consumer_config;
use rockfish_sim::harness::cluster::{Cluster, NS};

fn producer() -> Producer {
    Producer::new(
        ProducerConfig {
            namesrv_addrs: vec![NS.into()],
            ..ProducerConfig::default()
        },
        0,
    )
}

fn consumer(id: &str, model: MessageModel, orderly: bool) -> Consumer {
    let config = ConsumerConfig {
        model,
        orderly,
        seed: id.len() as u64,
        ..consumer_config(id)
    };
    Consumer::new(config, BTreeMap::new(), 0)
}

/// Sends `n` messages with bodies `{prefix}{i}`, waits for every SEND_OK.
fn send(c: &mut Cluster, prefix: &str, n: usize) {
    if !c.has("p") {
        c.add_producer("p", producer());
    }
    let now = c.now;
    for i in 0..n {
        c.producer("p").send(
            Message::new("T", format!("{prefix}{i}")),
            SendMode::Async,
            now,
        );
    }
    c.pump();
    c.advance(c.now + 100);
    let ok = c
        .producer_events
        .drain(..)
        .filter(|e| matches!(e, ProducerEvent::Sent { result, .. } if result.is_ok()))
        .count();
    assert_eq!(ok, n, "every send is acknowledged");
}

type Seen = Vec<(String, MessageQueue, u64, String)>;

/// Runs the cluster to `until`, acknowledging every delivery (unless `ack` says otherwise).
fn run(c: &mut Cluster, until: u64, seen: &mut Seen, ack: &dyn Fn(&str) -> bool) {
    let step = 100;
    while c.now < until {
        let to = (c.now + step).min(until);
        c.advance(to);
        loop {
            let events: Vec<(String, ConsumerEvent)> = c.consumer_events.drain(..).collect();
            if events.is_empty() {
                break;
            }
            for (name, e) in events {
                if let ConsumerEvent::Deliver { mq, msgs } = e {
                    for m in msgs {
                        seen.push((
                            name.clone(),
                            mq.clone(),
                            m.queue_offset(),
                            String::from_utf8(m.body().to_vec()).unwrap(),
                        ));
                        if ack(&name) && c.has(&name) {
                            let now = c.now;
                            c.consumer(&name).ack(
                                &mq,
                                m.queue_offset(),
                                ConsumeResult::Success,
                                now,
                            );
                        }
                    }
                }
            }
            c.pump();
        }
    }
}

fn bodies(seen: &Seen, who: Option<&str>) -> BTreeSet<String> {
    seen.iter()
        .filter(|(n, ..)| who.is_none_or(|w| w == n))
        .map(|(.., b)| b.clone())
        .collect()
}

#[test]
fn two_consumers_split_the_queues_and_consume_everything() {
    let mut c = Cluster::new();
    send(&mut c, "warm", 8); // creates the topic (4 queues)
    c.add_consumer("c1", consumer("c1", MessageModel::Clustering, false));
    c.add_consumer("c2", consumer("c2", MessageModel::Clustering, false));
    let mut warm = Seen::new();
    run(&mut c, 30_000, &mut warm, &|_| true);
    // Membership is stable now: every new message is consumed exactly once.
    send(&mut c, "m", 200);
    let mut seen = Seen::new();
    run(&mut c, 60_000, &mut seen, &|_| true);
    let a: BTreeSet<_> = c
        .consumer("c1")
        .assigned()
        .into_iter()
        .filter(|q| q.topic == "T")
        .collect();
    let b: BTreeSet<_> = c
        .consumer("c2")
        .assigned()
        .into_iter()
        .filter(|q| q.topic == "T")
        .collect();
    assert_eq!((a.len(), b.len()), (2, 2), "four queues split evenly");
    assert!(a.is_disjoint(&b));
    assert_eq!(bodies(&seen, None).len(), 200, "every message consumed");
    // Once membership is stable nothing is consumed twice.
    let mut keys: Vec<_> = seen.iter().map(|(_, q, o, _)| (q.clone(), *o)).collect();
    keys.sort();
    let before = keys.len();
    keys.dedup();
    assert_eq!(
        keys.len(),
        before,
        "a message was delivered twice while membership was stable"
    );
}

#[test]
fn rebalance_on_join_and_leave_skips_nothing() {
    let mut c = Cluster::new();
    send(&mut c, "a", 100);
    c.add_consumer("c1", consumer("c1", MessageModel::Clustering, false));
    let mut seen = Seen::new();
    run(&mut c, 30_000, &mut seen, &|_| true);
    assert_eq!(
        c.consumer("c1")
            .assigned()
            .iter()
            .filter(|q| q.topic == "T")
            .count(),
        4
    );
    c.add_consumer("c2", consumer("c2", MessageModel::Clustering, false));
    run(&mut c, 60_000, &mut seen, &|_| true);
    send(&mut c, "b", 100);
    run(&mut c, 90_000, &mut seen, &|_| true);
    assert_eq!(
        c.consumer("c1")
            .assigned()
            .iter()
            .filter(|q| q.topic == "T")
            .count(),
        2,
        "c2's join halves c1's share"
    );
    assert!(
        !bodies(&seen, Some("c2")).is_empty(),
        "c2 consumes after joining"
    );
    // c2 leaves (crash: the broker sees its connection close): c1 takes everything back.
    c.crash("c2");
    send(&mut c, "c", 100);
    run(&mut c, 150_000, &mut seen, &|_| true);
    assert_eq!(
        c.consumer("c1")
            .assigned()
            .iter()
            .filter(|q| q.topic == "T")
            .count(),
        4
    );
    let all = bodies(&seen, None);
    for p in ["a", "b", "c"] {
        for i in 0..100 {
            assert!(all.contains(&format!("{p}{i}")), "{p}{i} was skipped");
        }
    }
}

#[test]
fn broadcasting_delivers_everything_to_each_consumer() {
    let mut c = Cluster::new();
    send(&mut c, "m", 50);
    c.add_consumer("c1", consumer("c1", MessageModel::Broadcasting, false));
    c.add_consumer("c2", consumer("c2", MessageModel::Broadcasting, false));
    let mut seen = Seen::new();
    run(&mut c, 30_000, &mut seen, &|_| true);
    assert_eq!(bodies(&seen, Some("c1")).len(), 50);
    assert_eq!(bodies(&seen, Some("c2")).len(), 50);
    assert!(
        !c.consumer("c1").offsets().is_empty(),
        "broadcasting offsets are kept for the application"
    );
}

#[test]
fn orderly_consumption_is_in_order_and_locks_move_only_after_the_lease() {
    let mut c = Cluster::new();
    send(&mut c, "m", 80);
    c.add_consumer("c1", consumer("c1", MessageModel::Clustering, true));
    let mut seen = Seen::new();
    let until = c.now + 20_000;
    run(&mut c, until, &mut seen, &|_| true);
    // Per queue, offsets arrive strictly in order.
    let mut per_queue: BTreeMap<MessageQueue, Vec<u64>> = BTreeMap::new();
    for (_, q, o, _) in &seen {
        per_queue.entry(q.clone()).or_default().push(*o);
    }
    for (q, offs) in &per_queue {
        assert!(
            offs.windows(2).all(|w| w[0] < w[1]),
            "{q}: out of order {offs:?}"
        );
    }
    assert_eq!(bodies(&seen, None).len(), 80);
    // c1 dies without unlocking; c2 joins. c2 gets the queues but may not consume until the
    // broker's 60 s lease on c1's locks runs out.
    let crash_at = c.now;
    c.add_consumer("c2", consumer("c2", MessageModel::Clustering, true));
    c.crash("c1");
    send(&mut c, "n", 40);
    let mut seen2 = Seen::new();
    run(&mut c, crash_at + 50_000, &mut seen2, &|_| true);
    assert!(
        seen2.iter().all(|(_, q, ..)| q.topic != "T"),
        "consumed a queue whose lock c1 still held: {seen2:?}"
    );
    run(&mut c, crash_at + 130_000, &mut seen2, &|_| true);
    assert_eq!(
        bodies(&seen2, Some("c2"))
            .iter()
            .filter(|b| b.starts_with('n'))
            .count(),
        40,
        "after the lease c2 consumes"
    );
}

#[test]
fn an_orderly_queue_moves_only_once_its_old_owner_has_answered_its_batch() {
    // Java's rebalance takes the queue's consume lock before unlocking it on the broker: a
    // consumer that dropped a queue while its application was inside a batch must keep the
    // broker lock until the application answers, or the next owner starts on that queue
    // while the batch is still being worked on.
    let mut c = Cluster::new();
    send(&mut c, "m", 40);
    c.add_consumer("c1", consumer("c1", MessageModel::Clustering, true));
    // c1 takes every queue; its application holds the first batch of each, unanswered.
    let mut seen = Seen::new();
    let until = c.now + 5_000;
    run(&mut c, until, &mut seen, &|_| false);
    let held: BTreeSet<MessageQueue> = seen.iter().map(|(_, q, ..)| q.clone()).collect();
    assert!(held.len() > 1, "c1 is inside several queues: {held:?}");
    // c2 joins and the group rebalances: c1 drops some queues, still inside them.
    c.add_consumer("c2", consumer("c2", MessageModel::Clustering, true));
    let mut seen2 = Seen::new();
    let until = c.now + 45_000;
    run(&mut c, until, &mut seen2, &|name| name == "c2");
    assert!(
        bodies(&seen2, Some("c2")).is_empty(),
        "c2 was handed a queue c1's application is still inside: {seen2:?}"
    );
    let mine = c.consumer("c2").assigned();
    assert!(!mine.is_empty(), "c2 was assigned queues");
    // c1's application answers: the locks go, and c2 consumes its queues.
    let now = c.now;
    for (_, mq, offset, _) in &seen {
        c.consumer("c1")
            .ack(mq, *offset, ConsumeResult::Success, now);
    }
    c.pump();
    let until = c.now + 45_000;
    run(&mut c, until, &mut seen2, &|_| true);
    let got: BTreeSet<MessageQueue> = seen2
        .iter()
        .filter(|(n, ..)| n == "c2")
        .map(|(_, q, ..)| q.clone())
        .collect();
    assert_eq!(
        got,
        mine.iter().filter(|q| q.topic == "T").cloned().collect(),
        "c2 consumes each of its queues once c1 let go"
    );
}

#[test]
fn flow_control_slows_pulls_and_drops_nothing() {
    let mut c = Cluster::new();
    send(&mut c, "m", 1_500);
    // The per-queue threshold is what binds.
    let config = ConsumerConfig {
        pull_threshold_for_queue: 100,
        ..consumer_config("c1")
    };
    let cons = Consumer::new(config, BTreeMap::new(), 0);
    c.add_consumer("c1", cons);
    let mut seen = Seen::new();
    run(&mut c, 20_000, &mut seen, &|_| false); // the application never acknowledges
    let assigned: Vec<MessageQueue> = c
        .consumer("c1")
        .assigned()
        .into_iter()
        .filter(|q| q.topic == "T")
        .collect();
    for q in &assigned {
        let held = c.consumer("c1").held(q);
        assert!(
            held <= 100 + 32,
            "{q} holds {held}: pulls did not slow down"
        );
    }
    let held_total = seen.len();
    assert!(held_total < 1_500, "flow control stopped pulling");
    // Acknowledge everything delivered so far: pulling resumes and everything arrives.
    for (_, q, o, _) in seen.clone() {
        let now = c.now;
        c.consumer("c1").ack(&q, o, ConsumeResult::Success, now);
    }
    run(&mut c, 60_000, &mut seen, &|_| true);
    assert_eq!(bodies(&seen, None).len(), 1_500, "nothing was dropped");
}

#[test]
fn committed_offsets_are_where_a_restarted_consumer_resumes() {
    let mut c = Cluster::new();
    send(&mut c, "a", 60);
    c.add_consumer("c1", consumer("c1", MessageModel::Clustering, false));
    let mut seen = Seen::new();
    run(&mut c, 20_000, &mut seen, &|_| true);
    assert_eq!(bodies(&seen, None).len(), 60);
    let now = c.now;
    c.consumer("c1").shutdown(now);
    c.pump();
    c.forget("c1");
    send(&mut c, "b", 30);
    c.add_consumer("c1b", consumer("c1b", MessageModel::Clustering, false));
    let mut seen2 = Seen::new();
    run(&mut c, 60_000, &mut seen2, &|_| true);
    let got = bodies(&seen2, None);
    assert_eq!(got.len(), 30, "only the new messages: {got:?}");
    assert!(got.iter().all(|b| b.starts_with('b')));
}

#[test]
fn reconsume_later_redelivers_and_holds_the_offset() {
    for orderly in [false, true] {
        let mut c = Cluster::new();
        send(&mut c, "m", 4);
        c.add_consumer("c1", consumer("c1", MessageModel::Clustering, orderly));
        let mut seen = Seen::new();
        let mut refused = false;
        // (when, topic the application saw, reconsume count) of each delivery of m0.
        let mut m0_at = Vec::new();
        // Refuse the first delivery of m0 once; accept everything else. Concurrent: it comes
        // back from the retry topic after level 3 (10 s), once the consumer's route refresh
        // (30 s) has found the retry topic the heartbeat created.
        let until = c.now + 70_000;
        while c.now < until {
            let to = c.now + 100;
            c.advance(to);
            let events: Vec<_> = c.consumer_events.drain(..).collect();
            for (_, e) in events {
                if let ConsumerEvent::Deliver { mq, msgs } = e {
                    for m in msgs {
                        let body = String::from_utf8(m.body().to_vec()).unwrap();
                        if body == "m0" {
                            m0_at.push((c.now, m.topic().to_string(), m.reconsume_times()));
                        }
                        let result = if body == "m0" && !refused {
                            refused = true;
                            ConsumeResult::ReconsumeLater
                        } else {
                            ConsumeResult::Success
                        };
                        seen.push(("c1".into(), mq.clone(), m.queue_offset(), body));
                        let now = c.now;
                        c.consumer("c1").ack(&mq, m.queue_offset(), result, now);
                    }
                }
            }
            c.pump();
        }
        let m0 = seen.iter().filter(|(.., b)| b == "m0").count();
        assert_eq!(
            m0, 2,
            "orderly={orderly}: m0 is delivered again after reconsume-later"
        );
        assert_eq!(bodies(&seen, None).len(), 4, "orderly={orderly}");
        assert!(
            m0_at.iter().all(|(_, t, _)| t == "T"),
            "the original topic: {m0_at:?}"
        );
        assert_eq!(m0_at[1].2, 1, "counted as a reconsumption");
        let waited = m0_at[1].0 - m0_at[0].0;
        if orderly {
            // Retried locally: the queue is suspended a moment.
            assert!((1_000..10_000).contains(&waited), "{waited}");
        } else {
            assert!(waited >= 10_000, "behind its backoff: {waited}");
            let retry_queue = &seen.iter().filter(|(.., b)| b == "m0").nth(1).unwrap().1;
            assert_eq!(
                retry_queue.topic, "%RETRY%G",
                "from the group's retry topic"
            );
        }
        // The committed offset never passed the refused message before it succeeded.
        let q0 = seen
            .iter()
            .find(|(.., b)| b == "m0")
            .map(|(_, q, ..)| q.clone())
            .unwrap();
        assert_eq!(
            c.consumer("c1").offsets().get(&q0).copied(),
            Some(
                seen.iter()
                    .filter(|(_, q, ..)| *q == q0)
                    .map(|(_, _, o, _)| o + 1)
                    .max()
                    .unwrap()
            )
        );
    }
}

/// Runs the cluster to `until`; `answer(body, reconsume_times)` decides each delivery.
/// Returns every delivery of `watch`: (when, queue, topic seen, reconsume count).
fn run_answering(
    c: &mut Cluster,
    until: u64,
    watch: &str,
    answer: &dyn Fn(&str, i32) -> ConsumeResult,
) -> Vec<(u64, MessageQueue, String, i32)> {
    let mut got = Vec::new();
    while c.now < until {
        let to = c.now + 100;
        c.advance(to);
        let events: Vec<_> = c.consumer_events.drain(..).collect();
        for (name, e) in events {
            if let ConsumerEvent::Deliver { mq, msgs } = e {
                for m in msgs {
                    let body = String::from_utf8(m.body().to_vec()).unwrap();
                    if body == watch {
                        got.push((
                            c.now,
                            mq.clone(),
                            m.topic().to_string(),
                            m.reconsume_times(),
                        ));
                    }
                    let result = answer(&body, m.reconsume_times());
                    let now = c.now;
                    c.consumer(&name).ack(&mq, m.queue_offset(), result, now);
                }
            }
        }
        c.pump();
    }
    got
}

#[test]
fn a_refused_send_back_falls_back_to_a_local_retry() {
    let mut c = Cluster::new();
    // The retry topic exists read-only: the broker refuses every send-back.
    let mut cmd = RemotingCommand::request(request::UPDATE_AND_CREATE_TOPIC, 9)
        .with_ext("topic", "%RETRY%G")
        .with_ext("readQueueNums", 1)
        .with_ext("writeQueueNums", 1)
        .with_ext("perm", 4);
    cmd.flag |= rockfish_core::remoting::command::FLAG_ONEWAY;
    c.broker().on_command(ConnId(99), cmd, 0, 0);
    c.pump();
    send(&mut c, "m", 2);
    // T's route registers with the next coalesced registration.
    let t = c.now + 1_000;
    c.advance(t);
    c.add_consumer("c1", consumer("c1", MessageModel::Clustering, false));
    let until = c.now + 30_000;
    let got = run_answering(&mut c, until, "m0", &|body, times| {
        if body == "m0" && times == 0 {
            ConsumeResult::ReconsumeLater
        } else {
            ConsumeResult::Success
        }
    });
    assert_eq!(got.len(), 2, "{got:?} {:?}", c.consumer("c1").assigned());
    assert_eq!(got[1].1, got[0].1, "again from its own queue");
    assert_eq!(got[1].3, 1, "counted as a reconsumption");
    let waited = got[1].0 - got[0].0;
    assert!(
        (5_000..7_000).contains(&waited),
        "local retry after 5 s: {waited}"
    );
    let mq = got[0].1.clone();
    assert_eq!(
        c.consumer("c1").offsets().get(&mq).copied(),
        Some(1),
        "then committed"
    );
}

#[test]
fn orderly_retries_locally_and_sends_to_the_dlq_after_its_max() {
    let mut c = Cluster::new();
    send(&mut c, "m", 2);
    let cfg = ConsumerConfig {
        orderly: true,
        max_reconsume_times: 2,
        seed: 7,
        ..consumer_config("c1")
    };
    c.add_consumer("c1", Consumer::new(cfg, BTreeMap::new(), 0));
    let until = c.now + 30_000;
    let got = run_answering(&mut c, until, "m0", &|body, _| {
        if body == "m0" {
            ConsumeResult::ReconsumeLater
        } else {
            ConsumeResult::Success
        }
    });
    let counts: Vec<i32> = got.iter().map(|g| g.3).collect();
    assert_eq!(
        counts,
        vec![0, 1, 2],
        "consumed locally until the max, then no more"
    );
    let dlq = c
        .broker()
        .store()
        .get("%DLQ%G", 0, 0, 10, usize::MAX, &|_| true)
        .unwrap()
        .messages;
    assert_eq!(dlq.len(), 1, "the dead letter is stored");
    assert_eq!(&dlq[0].body()[..], b"m0");
    let mq = got[0].1.clone();
    let committed = c.consumer("c1").offsets().get(&mq).copied();
    assert_eq!(committed, Some(1), "the dead letter counts as consumed");
}

#[test]
fn an_offset_reset_by_the_broker_restarts_the_held_queues_there() {
    let mut c = Cluster::new();
    send(&mut c, "a", 40);
    c.add_consumer("c1", consumer("c1", MessageModel::Clustering, false));
    let mut seen = Seen::new();
    run(&mut c, 20_000, &mut seen, &|_| true);
    assert_eq!(bodies(&seen, None).len(), 40);
    // An operator's resetOffsetByTime to the first message (oneway here: the harness has
    // no admin client to answer); the broker tells the online consumer.
    let mut reset = RemotingCommand::request(request::INVOKE_BROKER_TO_RESET_OFFSET, 7)
        .with_ext("topic", "T")
        .with_ext("group", consumer_config("c1").group)
        .with_ext("timestamp", 0)
        .with_ext("isForce", true);
    reset.flag |= rockfish_core::remoting::command::FLAG_ONEWAY;
    let now = c.now;
    c.broker().on_command(ConnId(999), reset, now, now);
    c.pump();
    let mut again = Seen::new();
    run(&mut c, 60_000, &mut again, &|_| true);
    assert_eq!(
        bodies(&again, None).len(),
        40,
        "every message is consumed again from the reset point"
    );
}

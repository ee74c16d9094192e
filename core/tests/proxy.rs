//! The gRPC proxy machine against a name server and a broker, no sockets: FIFO message groups
//! sent through it, a FIFO group's receives held to order (the next message waits until the
//! one before is acked), a plain group's not, and consumers' settings telling each group's
//! policy as the broker holds it.

use bytes::Bytes;
use rockfish_core::proxy::pb::{self, Code};
use rockfish_core::proxy::{Proxy, ProxyConfig, ProxyEvent, Reply, Request};
use rockfish_core::remoting::RemotingCommand;
use rockfish_core::remoting::codes::{request, response};
use rockfish_sim::harness::cluster::{Cluster, NS};
use rockfish_store::config::SubscriptionGroupConfig;

const TOPIC: &str = "FifoTopic";

fn resource(name: &str) -> Option<pb::Resource> {
    Some(pb::Resource {
        resource_namespace: String::new(),
        name: name.into(),
    })
}

/// A cluster with a proxy, a two-queue topic and the groups `fifo` (consumeMessageOrderly)
/// and `plain`, each retried `retry_max` times.
fn cluster(retry_max: i32) -> Cluster {
    let mut c = Cluster::new();
    let config = ProxyConfig {
        namesrv_addrs: vec![NS.into()],
        ..ProxyConfig::default()
    };
    c.add_proxy("proxy", Proxy::new(config, 0));
    let topic = RemotingCommand::request(request::UPDATE_AND_CREATE_TOPIC, i32::MAX - 1)
        .with_ext("topic", TOPIC)
        .with_ext("readQueueNums", 2)
        .with_ext("writeQueueNums", 2)
        .with_ext("perm", 6);
    assert_eq!(c.ask_broker("proxy", topic).code, response::SUCCESS);
    for (group, orderly) in [("fifo", true), ("plain", false)] {
        let cfg = SubscriptionGroupConfig {
            consume_message_orderly: orderly,
            retry_max_times: retry_max,
            ..SubscriptionGroupConfig::new(group)
        };
        let cmd =
            RemotingCommand::request(request::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP, i32::MAX - 2)
                .with_body(Bytes::from(serde_json::to_vec(&cfg).unwrap()));
        assert_eq!(c.ask_broker("proxy", cmd).code, response::SUCCESS);
    }
    c.advance(c.now + 1_000);
    c
}

/// Makes one call and runs the cluster until it is answered.
fn call(c: &mut Cluster, id: u64, req: Request) -> Reply {
    let now = c.now;
    c.proxy("proxy").on_call(id, "client-1", req, now);
    for _ in 0..100 {
        c.pump();
        let at = c
            .proxy_events
            .iter()
            .position(|e| matches!(e, ProxyEvent::Reply { call, .. } if *call == id));
        if let Some(i) = at {
            let ProxyEvent::Reply { reply, .. } = c.proxy_events.remove(i) else {
                unreachable!()
            };
            return reply;
        }
        c.advance(c.now + 100);
    }
    panic!("call {id} was never answered");
}

fn send_fifo(c: &mut Cluster, id: u64, body: &str) {
    let m = pb::Message {
        topic: resource(TOPIC),
        user_properties: Default::default(),
        system_properties: Some(pb::SystemProperties {
            message_id: format!("ID-{body}"),
            message_type: pb::MessageType::Fifo as i32,
            message_group: Some("order-1".into()),
            ..Default::default()
        }),
        body: body.as_bytes().to_vec(),
    };
    let req = Request::SendMessage(pb::SendMessageRequest { messages: vec![m] });
    match call(c, id, req) {
        Reply::SendMessage(r) => {
            assert_eq!(r.status.unwrap().code, Code::Ok as i32, "send {body}")
        }
        other => panic!("{other:?}"),
    }
}

/// One receive of up to `batch` messages: their (body, receipt handle).
fn receive(c: &mut Cluster, id: u64, group: &str, batch: i32) -> Vec<(String, String)> {
    let req = Request::ReceiveMessage(pb::ReceiveMessageRequest {
        group: resource(group),
        message_queue: Some(pb::MessageQueue {
            topic: resource(TOPIC),
            ..Default::default()
        }),
        filter_expression: Some(pb::FilterExpression {
            r#type: pb::FilterType::Tag as i32,
            expression: "*".into(),
        }),
        batch_size: batch,
        invisible_duration: Some(pb::duration_ms(30_000)),
        auto_renew: false,
        long_polling_timeout: Some(pb::duration_ms(0)),
        attempt_id: None,
    });
    let Reply::ReceiveMessage(frames) = call(c, id, req) else {
        panic!("not a receive's answer")
    };
    use pb::receive_message_response::Content;
    let mut out = Vec::new();
    for f in frames {
        match f.content {
            Some(Content::Message(m)) => {
                let handle = m
                    .system_properties
                    .as_ref()
                    .and_then(|s| s.receipt_handle.clone())
                    .expect("a received message has a receipt handle");
                out.push((String::from_utf8_lossy(&m.body).into_owned(), handle));
            }
            Some(Content::Status(s)) => assert!(
                s.code == Code::Ok as i32 || s.code == Code::MessageNotFound as i32,
                "receive: {s:?}"
            ),
            _ => {}
        }
    }
    out
}

fn ack(c: &mut Cluster, id: u64, group: &str, handle: &str) {
    let req = Request::AckMessage(pb::AckMessageRequest {
        group: resource(group),
        topic: resource(TOPIC),
        entries: vec![pb::AckMessageEntry {
            message_id: String::new(),
            receipt_handle: handle.into(),
            lite_topic: None,
        }],
    });
    match call(c, id, req) {
        Reply::AckMessage(r) => {
            assert_eq!(r.status.unwrap().code, Code::Ok as i32);
            for e in r.entries {
                assert_eq!(e.status.unwrap().code, Code::Ok as i32, "ack");
            }
        }
        other => panic!("{other:?}"),
    }
}

fn bodies(got: &[(String, String)]) -> Vec<&str> {
    got.iter().map(|(b, _)| b.as_str()).collect()
}

#[test]
fn a_fifo_groups_next_message_waits_until_the_one_before_is_acked() {
    let mut c = cluster(16);
    for (i, b) in ["f0", "f1", "f2"].iter().enumerate() {
        send_fifo(&mut c, 10 + i as u64, b);
    }
    let first = receive(&mut c, 20, "fifo", 1);
    assert_eq!(bodies(&first), ["f0"]);
    // f0 is in flight: the message group's queue gives nothing more.
    assert!(
        receive(&mut c, 21, "fifo", 1).is_empty(),
        "f1 came before f0 was acked"
    );
    ack(&mut c, 22, "fifo", &first[0].1);
    let next = receive(&mut c, 23, "fifo", 2);
    assert_eq!(bodies(&next), ["f1", "f2"]);
    // A plain group is not held: it takes f0 and then f1 while f0 is not acked.
    assert_eq!(bodies(&receive(&mut c, 30, "plain", 1)), ["f0"]);
    assert_eq!(bodies(&receive(&mut c, 31, "plain", 1)), ["f1"]);
}

#[test]
fn a_fifo_message_not_acked_comes_back_before_the_next() {
    let mut c = cluster(16);
    send_fifo(&mut c, 10, "f0");
    send_fifo(&mut c, 11, "f1");
    assert_eq!(bodies(&receive(&mut c, 20, "fifo", 1)), ["f0"]);
    c.advance(c.now + 31_000); // f0's invisibility lapses un-acked
    let again = receive(&mut c, 21, "fifo", 1);
    assert_eq!(bodies(&again), ["f0"], "f0 again, not f1");
    ack(&mut c, 22, "fifo", &again[0].1);
    assert_eq!(bodies(&receive(&mut c, 23, "fifo", 1)), ["f1"]);
}

/// Opens a Telemetry stream for `group`'s consumer and returns the settings it is answered.
fn consumer_settings(c: &mut Cluster, stream: u64, group: &str) -> pb::Settings {
    let now = c.now;
    let p = c.proxy("proxy");
    assert!(p.on_stream_open(stream, "client-1", now));
    let settings = pb::Settings {
        client_type: Some(pb::ClientType::SimpleConsumer as i32),
        pub_sub: Some(pb::settings::PubSub::Subscription(pb::Subscription {
            group: resource(group),
            subscriptions: vec![pb::SubscriptionEntry {
                topic: resource(TOPIC),
                expression: None,
            }],
            ..Default::default()
        })),
        ..Default::default()
    };
    let cmd = pb::TelemetryCommand {
        status: None,
        command: Some(pb::telemetry_command::Command::Settings(settings)),
    };
    p.on_telemetry(stream, cmd, now);
    for _ in 0..50 {
        c.pump();
        if let Some(i) = c
            .proxy_events
            .iter()
            .position(|e| matches!(e, ProxyEvent::Telemetry { stream: s, .. } if *s == stream))
        {
            let ProxyEvent::Telemetry { cmd, .. } = c.proxy_events.remove(i) else {
                unreachable!()
            };
            let Some(pb::telemetry_command::Command::Settings(s)) = cmd.command else {
                panic!("not a settings answer")
            };
            return s;
        }
        c.advance(c.now + 100);
    }
    panic!("no settings answer");
}

#[test]
fn a_consumers_settings_tell_its_groups_fifo_and_attempts() {
    let mut c = cluster(3);
    let fifo = consumer_settings(&mut c, 1, "fifo");
    let Some(pb::settings::PubSub::Subscription(sub)) = fifo.pub_sub else {
        panic!("no subscription in the answer")
    };
    assert_eq!(sub.fifo, Some(true));
    assert_eq!(
        fifo.backoff_policy.unwrap().max_attempts,
        4,
        "retryMaxTimes 3 + 1"
    );
    let plain = consumer_settings(&mut c, 2, "plain");
    let Some(pb::settings::PubSub::Subscription(sub)) = plain.pub_sub else {
        panic!("no subscription in the answer")
    };
    assert_eq!(sub.fifo, Some(false));
    // A group no broker holds yet: a new group's defaults.
    let new = consumer_settings(&mut c, 3, "brand-new");
    assert_eq!(new.backoff_policy.unwrap().max_attempts, 17);
}

#[test]
fn the_broker_answers_one_groups_config() {
    let mut c = cluster(5);
    let ask = |g: &str| {
        RemotingCommand::request(request::GET_SUBSCRIPTIONGROUP_CONFIG, i32::MAX - 3)
            .with_ext("group", g)
    };
    let got = c.ask_broker("proxy", ask("fifo"));
    assert_eq!(got.code, response::SUCCESS);
    let cfg: SubscriptionGroupConfig = serde_json::from_slice(&got.body).unwrap();
    assert!(cfg.consume_message_orderly);
    assert_eq!(cfg.retry_max_times, 5);
    let json: serde_json::Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(json["consumeMessageOrderly"], true, "Apache 5's field name");
    let none = c.ask_broker("proxy", ask("nobody"));
    assert_eq!(none.code, response::SUBSCRIPTION_GROUP_NOT_EXIST);
    let bad = c.ask_broker(
        "proxy",
        RemotingCommand::request(request::GET_SUBSCRIPTIONGROUP_CONFIG, i32::MAX - 4),
    );
    assert_ne!(bad.code, response::SUCCESS, "a request naming no group");
}

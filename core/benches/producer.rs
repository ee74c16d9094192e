//! A producer's side of a batch send: `Producer::send_batch` of 32 messages of 1 KiB (unique
//! keys, the body with its 32 properties strings) through to the request's frame, answered so
//! the machine's state stays the same size. What `rockfish bench` and every SDK user pays per
//! batch before the broker sees a byte.
//!
//! Measured on the 2-core VM: 22.5 µs a batch when each message's properties were built as
//! a pair list, then a string, then copied into the body (and `\u0001` escapes of the header
//! copy went through `format!`); 12.1 µs with everything written in place.

use std::collections::BTreeMap;
use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rockfish_core::machine::Output;
use rockfish_core::producer::{Message, Producer, ProducerConfig, SendMode};
use rockfish_core::protocol::{BrokerData, QueueData, TopicRouteData, to_body};
use rockfish_core::remoting::codes::{request, response};
use rockfish_core::remoting::{RemotingCommand, encode};

fn sends(p: &mut Producer) -> Vec<RemotingCommand> {
    std::iter::from_fn(|| p.poll_output())
        .filter_map(|o| match o {
            Output::SendTo { cmd, .. } => Some(cmd),
            _ => None,
        })
        .collect()
}

/// A producer with the route of "T" (one broker, four queues) already known.
fn ready() -> Producer {
    let mut p = Producer::new(ProducerConfig::default(), 0);
    p.send(Message::new("T", "warm"), SendMode::Sync, 0);
    let req = sends(&mut p).pop().expect("a route request");
    assert_eq!(req.code, request::GET_ROUTEINFO_BY_TOPIC);
    let route = TopicRouteData {
        queue_datas: vec![QueueData {
            broker_name: "b".into(),
            read_queue_nums: 4,
            write_queue_nums: 4,
            perm: 6,
            topic_sys_flag: 0,
        }],
        broker_datas: vec![BrokerData::new(
            "c",
            "b",
            BTreeMap::from([(0, "127.0.0.1:10911".to_string())]),
        )],
        ..TopicRouteData::default()
    };
    p.on_command(
        RemotingCommand::response_to(&req, response::SUCCESS, None).with_body(to_body(&route)),
        1,
    );
    for s in sends(&mut p) {
        p.on_command(ok(&s), 2);
    }
    while p.poll_event().is_some() {}
    p
}

fn ok(req: &RemotingCommand) -> RemotingCommand {
    RemotingCommand::response_to(req, response::SUCCESS, None)
        .with_ext("msgId", "7F0000010000271100000000000000FF")
        .with_ext("queueId", req.ext("e").unwrap_or("0"))
        .with_ext("queueOffset", 0)
}

/// Encodes the producer's send request (`code`) into a frame, answers every request it
/// made, and takes its events: one send's round, without the network.
fn frame_and_answer(p: &mut Producer, code: i32, scratch: &mut Vec<u8>, frame: &mut BytesMut) {
    for s in sends(p) {
        if s.code == code {
            frame.clear();
            encode(&s, scratch, frame).expect("encodes");
            black_box(&*frame);
        }
        p.on_command(ok(&s), 11);
    }
    while p.poll_event().is_some() {}
}

fn batch(c: &mut Criterion) {
    let mut p = ready();
    let body = Bytes::from(vec![b'x'; 1024]);
    let (mut scratch, mut frame) = (Vec::new(), BytesMut::new());
    let mut g = c.benchmark_group("producer");
    g.throughput(Throughput::Elements(32));
    g.bench_function("send_batch32_1KiB_to_frame", |b| {
        b.iter(|| {
            let msgs = (0..32).map(|_| Message::new("T", body.clone())).collect();
            p.send_batch(msgs, SendMode::Sync, 10);
            frame_and_answer(
                &mut p,
                request::SEND_BATCH_MESSAGE,
                &mut scratch,
                &mut frame,
            );
        })
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("send_1KiB_to_frame", |b| {
        b.iter(|| {
            p.send(Message::new("T", body.clone()), SendMode::Sync, 10);
            frame_and_answer(&mut p, request::SEND_MESSAGE_V2, &mut scratch, &mut frame);
        })
    });
    g.finish();
}

criterion_group!(benches, batch);
criterion_main!(benches);

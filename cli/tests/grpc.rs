//! The gRPC port of `rockfish standalone` (RocketMQ 5's MessagingService) driven by tonic's
//! client: a round trip, and bad input — malformed protobuf, a huge message, Telemetry streams
//! left open, a flood of long polls — each answered with a clear status while other clients
//! are served as before.

mod common;

use std::time::Duration;

use rockfish_core::proxy::pb;
use rockfish_net::grpc::service::messaging_service_client::MessagingServiceClient;
use tonic::transport::Channel;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn channel(addr: &str) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("the gRPC port accepts")
}

fn resource(name: &str) -> Option<pb::Resource> {
    Some(pb::Resource {
        name: name.into(),
        resource_namespace: String::new(),
    })
}

fn with_client<T>(mut r: tonic::Request<T>) -> tonic::Request<T> {
    r.metadata_mut()
        .insert("x-mq-client-id", "test@1@0@grpc".parse().unwrap());
    r
}

fn message(topic: &str, id: &str, body: Vec<u8>) -> pb::Message {
    pb::Message {
        topic: resource(topic),
        body,
        system_properties: Some(pb::SystemProperties {
            message_id: id.into(),
            tag: Some("a".into()),
            message_type: pb::MessageType::Normal as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn send(
    c: &mut MessagingServiceClient<Channel>,
    topic: &str,
    id: &str,
) -> pb::SendMessageResponse {
    let req = pb::SendMessageRequest {
        messages: vec![message(topic, id, id.as_bytes().to_vec())],
    };
    c.send_message(with_client(tonic::Request::new(req)))
        .await
        .expect("SendMessage answers")
        .into_inner()
}

async fn route(c: &mut MessagingServiceClient<Channel>, topic: &str) -> pb::QueryRouteResponse {
    let req = pb::QueryRouteRequest {
        topic: resource(topic),
        endpoints: None,
    };
    c.query_route(with_client(tonic::Request::new(req)))
        .await
        .expect("QueryRoute answers")
        .into_inner()
}

async fn receive(
    c: &mut MessagingServiceClient<Channel>,
    topic: &str,
    poll_ms: u64,
) -> Vec<pb::ReceiveMessageResponse> {
    let req = pb::ReceiveMessageRequest {
        group: resource("GrpcTestGroup"),
        message_queue: Some(pb::MessageQueue {
            topic: resource(topic),
            ..Default::default()
        }),
        batch_size: 16,
        invisible_duration: Some(pb::duration_ms(30_000)),
        long_polling_timeout: Some(pb::duration_ms(poll_ms)),
        ..Default::default()
    };
    let mut stream = c
        .receive_message(with_client(tonic::Request::new(req)))
        .await
        .expect("ReceiveMessage answers")
        .into_inner();
    let mut frames = Vec::new();
    while let Some(f) = stream.message().await.expect("the stream reads") {
        frames.push(f);
    }
    frames
}

fn status_code(frames: &[pb::ReceiveMessageResponse]) -> i32 {
    match frames.first().and_then(|f| f.content.as_ref()) {
        Some(pb::receive_message_response::Content::Status(s)) => s.code,
        other => panic!("the stream starts with {other:?}"),
    }
}

fn messages(frames: &[pb::ReceiveMessageResponse]) -> Vec<pb::Message> {
    frames
        .iter()
        .filter_map(|f| match &f.content {
            Some(pb::receive_message_response::Content::Message(m)) => Some(m.clone()),
            _ => None,
        })
        .collect()
}

/// A standalone with topic `T` created and routed.
fn start() -> (common::Standalone, String) {
    let s = common::start_in_temp_dir(&[]);
    let grpc = s.grpc.clone().expect("the gRPC port is served");
    let out = std::process::Command::new(common::BIN)
        .args([
            "admin",
            "-n",
            &s.namesrv,
            "updateTopic",
            "-t",
            "T",
            "-r",
            "2",
            "-w",
            "2",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    (s, grpc)
}

#[test]
fn a_message_sent_over_grpc_is_received_acked_and_gone() {
    let (_s, addr) = start();
    runtime().block_on(async {
        let mut c = MessagingServiceClient::new(channel(&addr).await);
        // The route appears once the broker registers the new topic.
        let mut r = route(&mut c, "T").await;
        for _ in 0..50 {
            if r.status.as_ref().map(|s| s.code) == Some(pb::Code::Ok as i32) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            r = route(&mut c, "T").await;
        }
        assert_eq!(r.status.unwrap().code, pb::Code::Ok as i32);
        assert!(
            r.message_queues
                .iter()
                .any(|q| q.id == 0 && q.permission == pb::Permission::ReadWrite as i32)
        );
        let sent = send(&mut c, "T", "0102ABC").await;
        assert_eq!(sent.status.unwrap().code, pb::Code::Ok as i32);
        assert_eq!(sent.entries[0].message_id, "0102ABC");
        let frames = receive(&mut c, "T", 2_000).await;
        assert_eq!(status_code(&frames), pb::Code::Ok as i32);
        let got = messages(&frames);
        assert_eq!(got.len(), 1);
        let sys = got[0].system_properties.clone().unwrap();
        assert_eq!(sys.message_id, "0102ABC");
        assert_eq!(sys.delivery_attempt, Some(1));
        assert!(sys.body_digest.is_some() && sys.body_encoding == pb::Encoding::Identity as i32);
        let ack = pb::AckMessageRequest {
            group: resource("GrpcTestGroup"),
            topic: resource("T"),
            entries: vec![pb::AckMessageEntry {
                message_id: sys.message_id.clone(),
                receipt_handle: sys.receipt_handle.clone().unwrap(),
                lite_topic: None,
            }],
        };
        let acked = c
            .ack_message(with_client(tonic::Request::new(ack.clone())))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(acked.status.unwrap().code, pb::Code::Ok as i32);
        let again = c
            .ack_message(with_client(tonic::Request::new(ack)))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            again.status.unwrap().code,
            pb::Code::InvalidReceiptHandle as i32,
            "acked twice"
        );
        let frames = receive(&mut c, "T", 500).await;
        assert_eq!(status_code(&frames), pb::Code::MessageNotFound as i32);
        // A forged receipt handle is refused by name.
        let forged = pb::AckMessageRequest {
            group: resource("GrpcTestGroup"),
            topic: resource("T"),
            entries: vec![pb::AckMessageEntry {
                message_id: "x".into(),
                receipt_handle: "not a handle".into(),
                lite_topic: None,
            }],
        };
        let r = c
            .ack_message(with_client(tonic::Request::new(forged)))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            r.status.unwrap().code,
            pb::Code::InvalidReceiptHandle as i32
        );
    });
}

/// Sends raw bytes as a call's message (a client that speaks broken protobuf).
#[derive(Clone, Default)]
struct Raw;

impl tonic::codec::Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl tonic::codec::Encoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        use bytes::Buf;
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n).to_vec()))
    }
}

#[test]
fn bad_input_gets_a_clear_status_and_disturbs_no_one() {
    let (_s, addr) = start();
    runtime().block_on(async {
        let ch = channel(&addr).await;
        let mut good = MessagingServiceClient::new(channel(&addr).await);
        // Malformed protobuf: refused, not a crash.
        let mut g = tonic::client::Grpc::new(ch.clone());
        g.ready().await.unwrap();
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(
            "/apache.rocketmq.v2.MessagingService/SendMessage",
        );
        let err = g
            .unary(tonic::Request::new(vec![0xff, 0xff, 0xff, 0x0f]), path, Raw)
            .await
            .expect_err("garbage is refused");
        assert!(
            matches!(
                err.code(),
                tonic::Code::Internal | tonic::Code::InvalidArgument
            ),
            "{err:?}"
        );
        // A message over the size limit: refused before it is buffered whole.
        let mut c = MessagingServiceClient::new(ch.clone()).max_encoding_message_size(64 << 20);
        let huge = pb::SendMessageRequest {
            messages: vec![message("T", "0102HUGE", vec![7u8; 16 << 20])],
        };
        let err = c
            .send_message(with_client(tonic::Request::new(huge)))
            .await
            .expect_err("a 16 MiB message is refused");
        assert!(
            matches!(
                err.code(),
                tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
            ),
            "{err:?}"
        );
        // A body over the broker's 4 MiB but under the frame cap: a clear RocketMQ code.
        let big = pb::SendMessageRequest {
            messages: vec![message("T", "0102BIG", vec![7u8; (4 << 20) + 1])],
        };
        let r = good
            .send_message(with_client(tonic::Request::new(big)))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status.unwrap().code, pb::Code::MessageBodyTooLarge as i32);
        // Telemetry streams opened and left silent, and a flood of long polls on one
        // connection (more than it may hold at once).
        let mut held = Vec::new();
        for _ in 0..20 {
            let (_tx, rx) = tokio::sync::mpsc::channel::<pb::TelemetryCommand>(1);
            let mut t = MessagingServiceClient::new(ch.clone());
            let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
            held.push(tokio::spawn(async move {
                let _ = t.telemetry(with_client(tonic::Request::new(stream))).await;
                _tx // kept open: the stream stays silent
            }));
        }
        let mut polls = Vec::new();
        for _ in 0..300 {
            let ch = ch.clone();
            polls.push(tokio::spawn(async move {
                let mut c = MessagingServiceClient::new(ch);
                receive(&mut c, "T", 3_000).await
            }));
        }
        // Meanwhile another client is served at once.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = std::time::Instant::now();
        let sent = send(&mut good, "T", "0102AFTER").await;
        assert_eq!(sent.status.unwrap().code, pb::Code::Ok as i32);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "a send waited behind the flood"
        );
        let mut answered = 0;
        for p in polls {
            let frames = tokio::time::timeout(Duration::from_secs(60), p)
                .await
                .expect("every poll ends")
                .unwrap();
            assert!(!frames.is_empty());
            answered += 1;
        }
        assert_eq!(answered, 300);
        for h in held {
            h.abort();
        }
        // And the server still answers normally.
        let r = route(&mut good, "T").await;
        assert_eq!(r.status.unwrap().code, pb::Code::Ok as i32);
    });
}

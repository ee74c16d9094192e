//! `rockfish bench grpc-produce` / `grpc-consume`: RocketMQ 5's gRPC service measured with its
//! own protocol (tonic's client), for comparison with the remoting benchmarks on one broker.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rockfish_core::proxy::pb;
use rockfish_net::grpc::service::messaging_service_client::MessagingServiceClient;
use tonic::transport::Channel;

fn resource(name: &str) -> Option<pb::Resource> {
    Some(pb::Resource {
        name: name.into(),
        resource_namespace: String::new(),
    })
}

fn request<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Ok(v) = "rockfish-bench@grpc".parse() {
        r.metadata_mut().insert("x-mq-client-id", v);
    }
    r
}

async fn connect(endpoint: &str, connections: usize) -> Result<Vec<Channel>, String> {
    let mut out = Vec::new();
    for _ in 0..connections.max(1) {
        let ch = Channel::from_shared(format!("http://{endpoint}"))
            .map_err(|e| e.to_string())?
            .connect()
            .await
            .map_err(|e| format!("gRPC {endpoint}: {e}"))?;
        out.push(ch);
    }
    Ok(out)
}

/// Latencies (µs) and counts, shared by the workers.
struct Tally {
    done: AtomicU64,
    failed: AtomicU64,
    hist: std::sync::Mutex<hdrhistogram::Histogram<u64>>,
}

impl Tally {
    fn new() -> Arc<Tally> {
        Arc::new(Tally {
            done: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            hist: std::sync::Mutex::new(hdrhistogram::Histogram::new(3).expect("a histogram")),
        })
    }
    fn report(&self, what: &str, elapsed: Duration, size: usize) {
        let done = self.done.load(Ordering::Relaxed);
        let secs = elapsed.as_secs_f64();
        let h = self.hist.lock().unwrap_or_else(|e| e.into_inner());
        println!(
            "{what}: {done} messages in {secs:.1} s = {:.0} msg/s, {:.1} MB/s; failed {}; call latency p50 {:.2} ms, p99 {:.2} ms",
            done as f64 / secs,
            done as f64 * size as f64 / secs / 1e6,
            self.failed.load(Ordering::Relaxed),
            h.value_at_quantile(0.5) as f64 / 1000.0,
            h.value_at_quantile(0.99) as f64 / 1000.0,
        );
    }
}

/// Sends `size`-byte messages with `inflight` calls in flight for `seconds`.
pub async fn produce(
    endpoint: &str,
    topic: &str,
    size: usize,
    inflight: usize,
    seconds: u64,
) -> Result<(), String> {
    let channels = connect(endpoint, 4).await?;
    let tally = Tally::new();
    let stop = Arc::new(AtomicBool::new(false));
    let seq = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..inflight.max(1) {
        let mut c = MessagingServiceClient::new(channels[i % channels.len()].clone());
        let (tally, stop, seq, topic) =
            (tally.clone(), stop.clone(), seq.clone(), topic.to_string());
        let body = vec![b'x'; size];
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let n = seq.fetch_add(1, Ordering::Relaxed);
                let m = pb::Message {
                    topic: resource(&topic),
                    body: body.clone(),
                    system_properties: Some(pb::SystemProperties {
                        message_id: format!("01BENCH{n:020X}"),
                        message_type: pb::MessageType::Normal as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                };
                let at = Instant::now();
                let ok = match c
                    .send_message(request(pb::SendMessageRequest { messages: vec![m] }))
                    .await
                {
                    Ok(r) => r
                        .into_inner()
                        .status
                        .is_some_and(|s| s.code == pb::Code::Ok as i32),
                    Err(_) => false,
                };
                if ok {
                    tally.done.fetch_add(1, Ordering::Relaxed);
                    let _ = tally
                        .hist
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .record(at.elapsed().as_micros() as u64);
                } else {
                    tally.failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed();
    for t in tasks {
        let _ = t.await;
    }
    tally.report("grpc produce", elapsed, size);
    Ok(())
}

/// `consumers` simple-consumer loops in one group: receive up to 32, ack them in one call,
/// until `seconds` pass.
pub async fn consume(
    endpoint: &str,
    topic: &str,
    group: &str,
    consumers: usize,
    seconds: u64,
) -> Result<(), String> {
    let channels = connect(endpoint, 4).await?;
    let tally = Tally::new();
    let bytes = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for i in 0..consumers.max(1) {
        let mut c = MessagingServiceClient::new(channels[i % channels.len()].clone());
        let (tally, stop, bytes, topic, group) = (
            tally.clone(),
            stop.clone(),
            bytes.clone(),
            topic.to_string(),
            group.to_string(),
        );
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let req = pb::ReceiveMessageRequest {
                    group: resource(&group),
                    message_queue: Some(pb::MessageQueue {
                        topic: resource(&topic),
                        ..Default::default()
                    }),
                    batch_size: 32,
                    invisible_duration: Some(pb::duration_ms(60_000)),
                    long_polling_timeout: Some(pb::duration_ms(1_000)),
                    ..Default::default()
                };
                let at = Instant::now();
                let Ok(r) = c.receive_message(request(req)).await else {
                    tally.failed.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let mut stream = r.into_inner();
                let mut entries = Vec::new();
                while let Ok(Some(f)) = stream.message().await {
                    if let Some(pb::receive_message_response::Content::Message(m)) = f.content {
                        bytes.fetch_add(m.body.len() as u64, Ordering::Relaxed);
                        let sys = m.system_properties.unwrap_or_default();
                        entries.push(pb::AckMessageEntry {
                            message_id: sys.message_id,
                            receipt_handle: sys.receipt_handle.unwrap_or_default(),
                            lite_topic: None,
                        });
                    }
                }
                if entries.is_empty() {
                    continue;
                }
                let n = entries.len() as u64;
                let ack = pb::AckMessageRequest {
                    group: resource(&group),
                    topic: resource(&topic),
                    entries,
                };
                match c.ack_message(request(ack)).await {
                    Ok(_) => {
                        tally.done.fetch_add(n, Ordering::Relaxed);
                        let _ = tally
                            .hist
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .record(at.elapsed().as_micros() as u64);
                    }
                    Err(_) => {
                        tally.failed.fetch_add(n, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed();
    for t in tasks {
        let _ = t.await;
    }
    let done = tally.done.load(Ordering::Relaxed).max(1);
    let size = (bytes.load(Ordering::Relaxed) / done) as usize;
    tally.report("grpc consume (receive + ack)", elapsed, size);
    Ok(())
}

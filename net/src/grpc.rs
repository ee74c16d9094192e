//! RocketMQ 5's gRPC messaging service on a real socket (tonic): each call becomes an input
//! of the `Proxy` machine (rockfish_core::proxy), run on its own task by the SDK host, which
//! also carries its remoting to name servers and brokers; each answer comes back as the
//! machine's event. Nothing is decided here.
//!
//! Bad input stays bounded: frames over the message cap are refused by tonic with
//! OUT_OF_RANGE before they are buffered; a connection holds at most
//! `max_streams_per_conn` streams and the server `max_connections` connections (more are
//! closed as they are accepted); each Telemetry stream's outbound queue is bounded (a client
//! that does not read loses the stream, not the proxy's memory); idle connections are found
//! by HTTP/2 keepalive; every unary call is answered within its deadline.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::Stream;
use rockfish_core::proxy::pb;
use rockfish_core::proxy::{CallId, Proxy, ProxyConfig, ProxyEvent, Reply, Request, StreamId};
use tokio::sync::{mpsc, oneshot};
use tonic::{Status, Streaming};

use crate::sdk::host::{self, Call};

/// The generated service (tonic) over core's message types.
#[allow(clippy::all, clippy::pedantic)]
pub mod service {
    tonic::include_proto!("apache.rocketmq.v2");
}

use service::messaging_service_server::{MessagingService, MessagingServiceServer};

/// Caps on what clients of the gRPC port can make the proxy hold.
#[derive(Debug, Clone)]
pub struct GrpcLimits {
    /// Connections open at once; one more is closed as it is accepted.
    pub max_connections: usize,
    /// Concurrent HTTP/2 streams one connection may open.
    pub max_streams_per_conn: u32,
    /// The largest gRPC message decoded (a bigger one is refused, not buffered).
    pub max_message_bytes: usize,
    /// Commands queued for one Telemetry stream before the stream is dropped.
    pub telemetry_queue: usize,
    /// The longest a unary call waits for the proxy's answer beyond its long polling.
    pub call_timeout: Duration,
}

impl Default for GrpcLimits {
    fn default() -> Self {
        GrpcLimits {
            max_connections: 10_000,
            max_streams_per_conn: 256,
            max_message_bytes: (4 << 20) + (64 << 10),
            telemetry_queue: 64,
            call_timeout: Duration::from_secs(10),
        }
    }
}

type Waiters = Arc<Mutex<HashMap<CallId, oneshot::Sender<Reply>>>>;
type Streams = Arc<Mutex<HashMap<StreamId, mpsc::Sender<Result<pb::TelemetryCommand, Status>>>>>;

#[derive(Clone)]
struct Svc {
    calls: mpsc::UnboundedSender<Call<Proxy>>,
    waiters: Waiters,
    streams: Streams,
    next: Arc<AtomicU64>,
    limits: GrpcLimits,
    long_polling: Duration,
}

/// A running gRPC server.
pub struct GrpcServer {
    pub local_addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl GrpcServer {
    pub fn stop(self) {
        self.task.abort();
    }
}

/// Serves the gRPC messaging service on `listener` in front of the name servers of `config`.
pub fn spawn(
    listener: tokio::net::TcpListener,
    config: ProxyConfig,
    limits: GrpcLimits,
) -> std::io::Result<GrpcServer> {
    let local_addr = listener.local_addr()?;
    let long_polling = Duration::from_millis(config.max_long_polling_ms);
    let machine = Proxy::new(config, crate::now_ms());
    let (calls, rx) = mpsc::unbounded_channel();
    let waiters: Waiters = Arc::new(Mutex::new(HashMap::new()));
    let streams: Streams = Arc::new(Mutex::new(HashMap::new()));
    let (w, s) = (waiters.clone(), streams.clone());
    let machine_task = tokio::spawn(host::run(machine, rx, move |e| match e {
        ProxyEvent::Reply { call, reply } => {
            if let Some(tx) = lock(&w).remove(&call) {
                let _ = tx.send(reply);
            }
        }
        ProxyEvent::Telemetry { stream, cmd } => {
            let mut streams = lock(&s);
            if let Some(tx) = streams.get(&stream)
                && tx.try_send(Ok(*cmd)).is_err()
            {
                tracing::warn!(stream, "a Telemetry stream is not read; dropping it");
                streams.remove(&stream);
            }
        }
    }));
    let svc = Svc {
        calls,
        waiters,
        streams,
        next: Arc::new(AtomicU64::new(1)),
        limits: limits.clone(),
        long_polling,
    };
    let server = MessagingServiceServer::new(svc)
        .max_decoding_message_size(limits.max_message_bytes)
        .max_encoding_message_size(64 << 20);
    let incoming = bounded_incoming(listener, limits.max_connections);
    let task = tokio::spawn(async move {
        let result = tonic::transport::Server::builder()
            .max_concurrent_streams(limits.max_streams_per_conn)
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)))
            .tcp_nodelay(true)
            .add_service(server)
            .serve_with_incoming(incoming)
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "the gRPC server stopped");
        }
        machine_task.abort();
    });
    Ok(GrpcServer { local_addr, task })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Accepted connections, at most `max` open at once (one more is closed at once).
fn bounded_incoming(
    listener: tokio::net::TcpListener,
    max: usize,
) -> impl Stream<Item = std::io::Result<Counted>> {
    let open = Arc::new(AtomicUsize::new(0));
    futures_util::stream::unfold((listener, open), move |(listener, open)| async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "gRPC accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if open.load(Ordering::Relaxed) >= max {
                tracing::warn!(%peer, max, "too many gRPC connections; closing the new one");
                drop(stream);
                continue;
            }
            let _ = stream.set_nodelay(true);
            open.fetch_add(1, Ordering::Relaxed);
            let c = Counted {
                stream,
                open: open.clone(),
            };
            return Some((Ok(c), (listener, open)));
        }
    })
}

/// A connection that counts itself out when it closes.
struct Counted {
    stream: tokio::net::TcpStream,
    open: Arc<AtomicUsize>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl tokio::io::AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for Counted {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

/// The caller's x-mq-client-id ("" when absent).
fn client_id<T>(req: &tonic::Request<T>) -> String {
    req.metadata()
        .get("x-mq-client-id")
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(256).collect())
        .unwrap_or_default()
}

impl Svc {
    /// Hands a call to the machine and waits for its answer.
    async fn call(&self, client: String, req: Request, wait: Duration) -> Result<Reply, Status> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.waiters).insert(id, tx);
        let sent = self.calls.send(Box::new(move |m: &mut Proxy, now| {
            m.on_call(id, &client, req, now)
        }));
        if sent.is_err() {
            lock(&self.waiters).remove(&id);
            return Err(Status::unavailable("the proxy stopped"));
        }
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(Status::unavailable("the proxy stopped")),
            Err(_) => {
                lock(&self.waiters).remove(&id);
                Err(Status::deadline_exceeded(
                    "the proxy did not answer in time",
                ))
            }
        }
    }

    async fn unary<T>(
        &self,
        req: tonic::Request<T>,
        wrap: fn(T) -> Request,
    ) -> Result<Reply, Status> {
        let client = client_id(&req);
        self.call(client, wrap(req.into_inner()), self.limits.call_timeout)
            .await
    }
}

/// The answer of the expected kind, or an internal error (a machine bug).
macro_rules! expect_reply {
    ($reply:expr, $variant:ident) => {
        match $reply? {
            Reply::$variant(r) => Ok(tonic::Response::new(r)),
            other => Err(Status::internal(format!("the proxy answered {other:?}"))),
        }
    };
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl MessagingService for Svc {
    async fn query_route(
        &self,
        r: tonic::Request<pb::QueryRouteRequest>,
    ) -> Result<tonic::Response<pb::QueryRouteResponse>, Status> {
        expect_reply!(self.unary(r, Request::QueryRoute).await, QueryRoute)
    }
    async fn heartbeat(
        &self,
        r: tonic::Request<pb::HeartbeatRequest>,
    ) -> Result<tonic::Response<pb::HeartbeatResponse>, Status> {
        expect_reply!(self.unary(r, Request::Heartbeat).await, Heartbeat)
    }
    async fn send_message(
        &self,
        r: tonic::Request<pb::SendMessageRequest>,
    ) -> Result<tonic::Response<pb::SendMessageResponse>, Status> {
        expect_reply!(self.unary(r, Request::SendMessage).await, SendMessage)
    }
    async fn query_assignment(
        &self,
        r: tonic::Request<pb::QueryAssignmentRequest>,
    ) -> Result<tonic::Response<pb::QueryAssignmentResponse>, Status> {
        expect_reply!(
            self.unary(r, Request::QueryAssignment).await,
            QueryAssignment
        )
    }

    type ReceiveMessageStream = BoxStream<pb::ReceiveMessageResponse>;
    async fn receive_message(
        &self,
        r: tonic::Request<pb::ReceiveMessageRequest>,
    ) -> Result<tonic::Response<Self::ReceiveMessageStream>, Status> {
        let client = client_id(&r);
        let wait = self.limits.call_timeout + self.long_polling;
        let frames = match self
            .call(client, Request::ReceiveMessage(r.into_inner()), wait)
            .await?
        {
            Reply::ReceiveMessage(frames) => frames,
            other => return Err(Status::internal(format!("the proxy answered {other:?}"))),
        };
        let stream = tokio_stream::iter(frames.into_iter().map(Ok));
        Ok(tonic::Response::new(Box::pin(stream)))
    }

    async fn ack_message(
        &self,
        r: tonic::Request<pb::AckMessageRequest>,
    ) -> Result<tonic::Response<pb::AckMessageResponse>, Status> {
        expect_reply!(self.unary(r, Request::AckMessage).await, AckMessage)
    }
    async fn forward_message_to_dead_letter_queue(
        &self,
        r: tonic::Request<pb::ForwardMessageToDeadLetterQueueRequest>,
    ) -> Result<tonic::Response<pb::ForwardMessageToDeadLetterQueueResponse>, Status> {
        expect_reply!(
            self.unary(r, Request::ForwardToDeadLetterQueue).await,
            ForwardToDeadLetterQueue
        )
    }
    async fn end_transaction(
        &self,
        r: tonic::Request<pb::EndTransactionRequest>,
    ) -> Result<tonic::Response<pb::EndTransactionResponse>, Status> {
        expect_reply!(self.unary(r, Request::EndTransaction).await, EndTransaction)
    }
    async fn notify_client_termination(
        &self,
        r: tonic::Request<pb::NotifyClientTerminationRequest>,
    ) -> Result<tonic::Response<pb::NotifyClientTerminationResponse>, Status> {
        expect_reply!(
            self.unary(r, Request::NotifyClientTermination).await,
            NotifyClientTermination
        )
    }
    async fn change_invisible_duration(
        &self,
        r: tonic::Request<pb::ChangeInvisibleDurationRequest>,
    ) -> Result<tonic::Response<pb::ChangeInvisibleDurationResponse>, Status> {
        expect_reply!(
            self.unary(r, Request::ChangeInvisibleDuration).await,
            ChangeInvisibleDuration
        )
    }

    type TelemetryStream = BoxStream<pb::TelemetryCommand>;
    async fn telemetry(
        &self,
        r: tonic::Request<Streaming<pb::TelemetryCommand>>,
    ) -> Result<tonic::Response<Self::TelemetryStream>, Status> {
        let client = client_id(&r);
        let mut inbound = r.into_inner();
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(self.limits.telemetry_queue);
        lock(&self.streams).insert(id, tx);
        let (ok_tx, ok_rx) = oneshot::channel();
        let cid = client.clone();
        let _ = self.calls.send(Box::new(move |m: &mut Proxy, now| {
            let _ = ok_tx.send(m.on_stream_open(id, &cid, now));
        }));
        if !ok_rx.await.unwrap_or(false) {
            lock(&self.streams).remove(&id);
            return Err(Status::resource_exhausted(
                "the proxy knows too many clients",
            ));
        }
        let (calls, streams) = (self.calls.clone(), self.streams.clone());
        tokio::spawn(async move {
            loop {
                match inbound.message().await {
                    Ok(Some(cmd)) => {
                        let sent = calls.send(Box::new(move |m: &mut Proxy, now| {
                            m.on_telemetry(id, cmd, now)
                        }));
                        if sent.is_err() {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(stream = id, error = %e, "a Telemetry stream ended");
                        break;
                    }
                }
            }
            lock(&streams).remove(&id);
            let _ = calls.send(Box::new(move |m: &mut Proxy, _now| m.on_stream_closed(id)));
        });
        let out = tokio_stream::wrappers::ReceiverStream::new(rx);
        Ok(tonic::Response::new(Box::pin(out)))
    }

    async fn pull_message(
        &self,
        _r: tonic::Request<pb::PullMessageRequest>,
    ) -> Result<tonic::Response<Self::PullMessageStream>, Status> {
        Err(Status::unimplemented(
            "PullMessage: rockfish serves pop (ReceiveMessage) to 5.x clients",
        ))
    }
    type PullMessageStream = BoxStream<pb::PullMessageResponse>;
    async fn update_offset(
        &self,
        _r: tonic::Request<pb::UpdateOffsetRequest>,
    ) -> Result<tonic::Response<pb::UpdateOffsetResponse>, Status> {
        Err(Status::unimplemented("UpdateOffset is not served"))
    }
    async fn get_offset(
        &self,
        _r: tonic::Request<pb::GetOffsetRequest>,
    ) -> Result<tonic::Response<pb::GetOffsetResponse>, Status> {
        Err(Status::unimplemented("GetOffset is not served"))
    }
    async fn query_offset(
        &self,
        _r: tonic::Request<pb::QueryOffsetRequest>,
    ) -> Result<tonic::Response<pb::QueryOffsetResponse>, Status> {
        Err(Status::unimplemented("QueryOffset is not served"))
    }
    async fn recall_message(
        &self,
        _r: tonic::Request<pb::RecallMessageRequest>,
    ) -> Result<tonic::Response<pb::RecallMessageResponse>, Status> {
        Err(Status::unimplemented("RecallMessage is not served"))
    }
    async fn sync_lite_subscription(
        &self,
        _r: tonic::Request<pb::SyncLiteSubscriptionRequest>,
    ) -> Result<tonic::Response<pb::SyncLiteSubscriptionResponse>, Status> {
        Err(Status::unimplemented("lite topics are not served"))
    }
}

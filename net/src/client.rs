//! A small remoting client: one connection, requests matched to responses by opaque. Used by
//! the CLI tools (admin, produce, consume, bench) and by tests.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use rockfish_core::remoting::command::FLAG_ONEWAY;
use rockfish_core::remoting::frame::encode;
use rockfish_core::remoting::{FrameDecoder, RemotingCommand};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connect to {addr}: {error}")]
    Connect { addr: String, error: String },
    #[error("request timed out after {0:?}")]
    Timeout(Duration),
    #[error("connection closed")]
    Closed,
    #[error("encode: {0}")]
    Encode(String),
}

type Pending = Arc<Mutex<HashMap<i32, oneshot::Sender<RemotingCommand>>>>;

/// A connection to a name server or broker.
pub struct Client {
    tx: mpsc::UnboundedSender<BytesMut>,
    pending: Pending,
    next_opaque: AtomicI32,
    /// Requests the server sent us (e.g. NOTIFY_CONSUMER_IDS_CHANGED).
    pub server_requests: Mutex<Option<mpsc::UnboundedReceiver<RemotingCommand>>>,
    pub addr: String,
}

impl Client {
    pub async fn connect(addr: &str) -> Result<Client, ClientError> {
        let err = |e: String| ClientError::Connect {
            addr: addr.to_string(),
            error: e,
        };
        let stream = tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(addr))
            .await
            .map_err(|_| err("timed out".into()))?
            .map_err(|e| err(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let (mut rd, mut wr) = crate::conn::split(stream);
        let (tx, mut rx) = mpsc::unbounded_channel::<BytesMut>();
        tokio::spawn(async move {
            while let Some(mut buf) = rx.recv().await {
                while let Ok(more) = rx.try_recv() {
                    buf.extend_from_slice(&more);
                }
                // A flush is free on a real socket; madsim's stream sends on flush.
                if wr.write_all(&buf).await.is_err() || wr.flush().await.is_err() {
                    break;
                }
            }
        });
        let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
        let (req_tx, req_rx) = mpsc::unbounded_channel();
        let reader_pending = pending.clone();
        tokio::spawn(async move {
            let decoder = FrameDecoder::default();
            let mut buf = BytesMut::with_capacity(64 * 1024);
            loop {
                let cmd = match decoder.decode(&mut buf) {
                    Ok(Some(cmd)) => cmd,
                    Ok(None) => match rd.read_buf(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => continue,
                    },
                    // Refused (over a limit): that frame is skipped, the stream goes on.
                    Err(e) if !e.is_fatal() => continue,
                    Err(_) => break,
                };
                if cmd.is_response() {
                    let waiter = reader_pending
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&cmd.opaque);
                    if let Some(w) = waiter {
                        let _ = w.send(cmd);
                    }
                } else {
                    let _ = req_tx.send(cmd);
                }
            }
            // Dropping the waiters wakes every pending request with `Closed`.
            reader_pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clear();
        });
        Ok(Client {
            tx,
            pending,
            next_opaque: AtomicI32::new(1),
            server_requests: Mutex::new(Some(req_rx)),
            addr: addr.to_string(),
        })
    }

    pub fn next_opaque(&self) -> i32 {
        self.next_opaque.fetch_add(1, Ordering::Relaxed)
    }

    fn write(&self, cmd: &RemotingCommand) -> Result<(), ClientError> {
        let mut out = BytesMut::new();
        encode(cmd, &mut Vec::new(), &mut out).map_err(|e| ClientError::Encode(e.to_string()))?;
        self.tx.send(out).map_err(|_| ClientError::Closed)
    }

    /// Sends a request (its opaque is assigned here) and waits for the response.
    pub async fn request(
        &self,
        mut cmd: RemotingCommand,
        timeout: Duration,
    ) -> Result<RemotingCommand, ClientError> {
        cmd.opaque = self.next_opaque();
        let opaque = cmd.opaque;
        self.exchange(opaque, timeout, || self.write(&cmd)).await
    }

    /// Sends a oneway request.
    pub fn oneway(&self, mut cmd: RemotingCommand) -> Result<(), ClientError> {
        cmd.opaque = self.next_opaque();
        cmd.flag |= FLAG_ONEWAY;
        self.write(&cmd)
    }

    /// Writes a whole pre-encoded request frame whose opaque is `opaque` (take one from
    /// [`Client::next_opaque`]) and waits for its response (tests of hostile traffic).
    pub async fn request_frame(
        &self,
        opaque: i32,
        frame: &[u8],
        timeout: Duration,
    ) -> Result<RemotingCommand, ClientError> {
        self.exchange(opaque, timeout, || self.write_raw(frame))
            .await
    }

    /// Registers `opaque` for its response, writes, and waits; the registration never
    /// outlives a failed write or a timeout.
    async fn exchange(
        &self,
        opaque: i32,
        timeout: Duration,
        write: impl FnOnce() -> Result<(), ClientError>,
    ) -> Result<RemotingCommand, ClientError> {
        let forget = || {
            self.pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&opaque);
        };
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(opaque, tx);
        if let Err(e) = write() {
            forget();
            return Err(e);
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(_)) => Err(ClientError::Closed),
            Err(_) => {
                forget();
                Err(ClientError::Timeout(timeout))
            }
        }
    }

    /// Writes raw bytes (tests of malformed traffic).
    pub fn write_raw(&self, bytes: &[u8]) -> Result<(), ClientError> {
        self.tx
            .send(BytesMut::from(bytes))
            .map_err(|_| ClientError::Closed)
    }
}

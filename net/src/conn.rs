//! One TCP connection: a reader task that frames commands and a writer task that batches
//! queued frames into vectored writes.

use std::io::IoSlice;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{Buf, Bytes, BytesMut};
use rockfish_core::machine::ConnId;
use rockfish_core::remoting::{FrameDecoder, RemotingCommand};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::now_ms;

/// A connection's halves. Real sockets split without a lock; madsim's simulated stream
/// splits through tokio's generic splitter.
#[cfg(not(madsim))]
pub(crate) type ReadHalf = tokio::net::tcp::OwnedReadHalf;
#[cfg(not(madsim))]
pub(crate) type WriteHalf = tokio::net::tcp::OwnedWriteHalf;
#[cfg(madsim)]
pub(crate) type ReadHalf = tokio::io::ReadHalf<TcpStream>;
#[cfg(madsim)]
pub(crate) type WriteHalf = tokio::io::WriteHalf<TcpStream>;

pub(crate) fn split(stream: TcpStream) -> (ReadHalf, WriteHalf) {
    #[cfg(not(madsim))]
    {
        stream.into_split()
    }
    #[cfg(madsim)]
    {
        tokio::io::split(stream)
    }
}

/// How a connection's bytes are read.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Framing {
    /// Remoting frames, at most this large.
    Remoting(usize),
    /// A raw byte stream (a broker's HA port), handed over as it arrives.
    Raw,
}

/// Serves a connected socket: its writer runs on a task of its own, its reader here.
pub(crate) async fn serve(
    conn: ConnId,
    stream: TcpStream,
    framing: Framing,
    rx: mpsc::UnboundedReceiver<WriteItem>,
    queued: Arc<AtomicUsize>,
    events: mpsc::Sender<ConnEvent>,
) {
    let _ = stream.set_nodelay(true);
    let (rd, wr) = split(stream);
    tokio::spawn(write_loop(wr, rx, queued));
    match framing {
        Framing::Remoting(max_frame) => read_loop(conn, rd, max_frame, events).await,
        Framing::Raw => raw_read_loop(conn, rd, events).await,
    }
}

/// Dials `target` (3 s to connect) and serves the connection; a failed dial is reported as
/// the connection closing, so the machine learns of it the same way.
pub(crate) async fn dial(
    conn: ConnId,
    target: String,
    framing: Framing,
    rx: mpsc::UnboundedReceiver<WriteItem>,
    queued: Arc<AtomicUsize>,
    events: mpsc::Sender<ConnEvent>,
) {
    let connect = tokio::time::timeout(
        std::time::Duration::from_secs(3),
        TcpStream::connect(&target),
    );
    let reason = match connect.await {
        Ok(Ok(stream)) => return serve(conn, stream, framing, rx, queued, events).await,
        Ok(Err(e)) => format!("connect to {target}: {e}"),
        Err(_) => format!("connect to {target}: timed out"),
    };
    let _ = events.send(ConnEvent::Closed { conn, reason }).await;
}

/// A connection with more than this queued for writing is too slow to keep (the default of
/// `Server::max_queued_bytes`).
pub const MAX_QUEUED_BYTES: usize = 64 << 20;

/// How much the read buffer grows by when it runs out of room: it grows as bytes arrive,
/// never by what a length prefix announces.
const READ_CHUNK: usize = 64 * 1024;

/// A reader yields to its worker's other tasks after decoding a frame larger than this.
const YIELD_AFTER: usize = 64 * 1024;

/// What a connection tells the machine task. Commands travel by value: boxing them would
/// cost an allocation per message, which is what the inline header arena exists to avoid.
#[allow(clippy::large_enum_variant)]
pub(crate) enum ConnEvent {
    Command {
        conn: ConnId,
        cmd: RemotingCommand,
        received_at: u64,
    },
    Closed {
        conn: ConnId,
        reason: String,
    },
    /// A request refused by the codec (over a limit): the answer to write back.
    Answer {
        conn: ConnId,
        cmd: RemotingCommand,
    },
    /// Bytes read from a raw stream.
    Bytes {
        conn: ConnId,
        bytes: Bytes,
    },
}

/// A frame to write: one buffer (no allocation to queue it), or parts written back to back
/// (a header, then stored records as they lie in the commit log).
pub(crate) enum WriteItem {
    One(Bytes),
    Many(Vec<Bytes>),
}

impl WriteItem {
    fn len(&self) -> usize {
        match self {
            WriteItem::One(b) => b.len(),
            WriteItem::Many(v) => v.iter().map(Bytes::len).sum(),
        }
    }
}

/// The machine task's handle on a connection's writer.
#[derive(Clone)]
pub(crate) struct ConnWriter {
    tx: mpsc::UnboundedSender<WriteItem>,
    queued: Arc<AtomicUsize>,
    max_queued: usize,
}

impl ConnWriter {
    /// A writer that refuses frames once more than `max_queued` bytes wait to be written.
    pub fn new(
        max_queued: usize,
    ) -> (
        ConnWriter,
        mpsc::UnboundedReceiver<WriteItem>,
        Arc<AtomicUsize>,
    ) {
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        (
            ConnWriter {
                tx,
                queued: queued.clone(),
                max_queued,
            },
            rx,
            queued,
        )
    }

    /// Queues a frame. Returns false if the connection is gone or too far behind.
    pub fn send(&self, item: WriteItem) -> bool {
        let len = item.len();
        if self.queued.fetch_add(len, Ordering::Relaxed) + len > self.max_queued {
            return false;
        }
        self.tx.send(item).is_ok()
    }
}

pub(crate) async fn read_loop(
    conn: ConnId,
    mut rd: ReadHalf,
    max_frame: usize,
    events: mpsc::Sender<ConnEvent>,
) {
    let decoder = FrameDecoder::new(max_frame);
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let reason = loop {
        let before = buf.len();
        let decoded = decoder.decode(&mut buf);
        // After a large frame, let the task its event woke (the machine's, parked on this
        // worker and not stealable there) run before decoding the next one.
        let large = before - buf.len() > YIELD_AFTER;
        match decoded {
            Ok(Some(cmd)) => {
                let ev = ConnEvent::Command {
                    conn,
                    cmd,
                    received_at: now_ms(),
                };
                if events.send(ev).await.is_err() {
                    return; // the machine task is gone
                }
                if large {
                    tokio::task::yield_now().await;
                }
                continue;
            }
            Ok(None) => {}
            Err(e) if !e.is_fatal() => {
                // Well framed but over a limit: answered (if a request), not served.
                tracing::warn!(conn = conn.0, error = %e, "refused a command");
                if let Some(cmd) = e.response()
                    && events.send(ConnEvent::Answer { conn, cmd }).await.is_err()
                {
                    return;
                }
                if large {
                    tokio::task::yield_now().await;
                }
                continue;
            }
            Err(e) => {
                tracing::warn!(conn = conn.0, error = %e, "malformed frame; closing the connection");
                break format!("malformed frame: {e}");
            }
        }
        // Grow by a chunk when full (geometrically, as BytesMut does): a frame's memory
        // follows the bytes that actually arrived.
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(READ_CHUNK);
        }
        match rd.read_buf(&mut buf).await {
            Ok(0) => break "closed by peer".to_string(),
            Ok(_) => {}
            Err(e) => break format!("read error: {e}"),
        }
    };
    let _ = events.send(ConnEvent::Closed { conn, reason }).await;
}

/// Reads a raw stream: what arrives is handed over as it is, a read buffer at a time.
async fn raw_read_loop(conn: ConnId, mut rd: ReadHalf, events: mpsc::Sender<ConnEvent>) {
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let reason = loop {
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(READ_CHUNK);
        }
        match rd.read_buf(&mut buf).await {
            Ok(0) => break "closed by peer".to_string(),
            Ok(_) => {
                let bytes = buf.split().freeze();
                if events.send(ConnEvent::Bytes { conn, bytes }).await.is_err() {
                    return;
                }
            }
            Err(e) => break format!("read error: {e}"),
        }
    };
    let _ = events.send(ConnEvent::Closed { conn, reason }).await;
}

pub(crate) async fn write_loop(
    mut wr: WriteHalf,
    mut rx: mpsc::UnboundedReceiver<WriteItem>,
    queued: Arc<AtomicUsize>,
) {
    const MAX_BATCH: usize = 256;
    // Reused across writes: queuing and writing a frame allocates nothing once warm.
    let mut pending: Vec<Bytes> = Vec::with_capacity(MAX_BATCH);
    let push = |pending: &mut Vec<Bytes>, item: WriteItem| match item {
        WriteItem::One(b) => pending.push(b),
        WriteItem::Many(v) => pending.extend(v),
    };
    while let Some(first) = rx.recv().await {
        push(&mut pending, first);
        // Batch whatever else is already queued into the same vectored write.
        while pending.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(item) => push(&mut pending, item),
                Err(_) => break,
            }
        }
        let total: usize = pending.iter().map(Bytes::len).sum();
        let mut at = 0;
        while at < pending.len() {
            let mut slices = [IoSlice::new(&[]); 64];
            let n = (pending.len() - at).min(slices.len());
            for (slot, b) in slices.iter_mut().zip(&pending[at..at + n]) {
                *slot = IoSlice::new(b);
            }
            let written = match wr.write_vectored(&slices[..n]).await {
                Ok(0) | Err(_) => return,
                Ok(w) => w,
            };
            let mut left = written;
            while left > 0 {
                let b = &mut pending[at];
                if left >= b.len() {
                    left -= b.len();
                    at += 1;
                } else {
                    b.advance(left);
                    left = 0;
                }
            }
            while at < pending.len() && pending[at].is_empty() {
                at += 1;
            }
        }
        // A flush is free on a real socket; madsim's stream sends on flush.
        if wr.flush().await.is_err() {
            return;
        }
        pending.clear();
        queued.fetch_sub(total, Ordering::Relaxed);
    }
    let _ = wr.shutdown().await;
}

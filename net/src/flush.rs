//! The flush thread: msyncs commit log ranges off the machine's task, so appends never wait
//! for the disk. Results come back to the machine as events.

use std::sync::mpsc as std_mpsc;

use rockfish_store::MmapSyncHandle;
use tokio::sync::mpsc;

/// Ranges to make durable, and the offset that is durable once they are.
pub struct FlushJob {
    pub upto: u64,
    pub ranges: Vec<(MmapSyncHandle, u64, u64)>,
}

/// What a flush came to.
pub type FlushResult = (u64, Result<(), String>);

/// Starts the flush thread. Jobs run one after another, in order.
pub fn spawn_flusher(done: mpsc::UnboundedSender<FlushResult>) -> std_mpsc::Sender<FlushJob> {
    let (tx, rx) = std_mpsc::channel::<FlushJob>();
    std::thread::Builder::new()
        .name("rockfish-flush".into())
        .spawn(move || {
            for job in rx {
                let mut result = Ok(());
                for (handle, off, len) in &job.ranges {
                    if let Err(e) = handle.sync(*off, *len) {
                        result = Err(e.to_string());
                        break;
                    }
                }
                if done.send((job.upto, result)).is_err() {
                    break;
                }
            }
        })
        .expect("spawning the flush thread");
    tx
}

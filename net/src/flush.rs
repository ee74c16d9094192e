//! The flusher: syncs commit log ranges off the machine's task, so appends never wait for
//! the disk. Results come back to the machine as events.

use tokio::sync::mpsc;

/// What a job on the flusher was for, handed back with its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushDone {
    /// `Output::Flush { upto }`.
    Flush(u64),
    /// `Output::Persist { token, .. }`.
    Persist(u64),
}

/// Work run on the flusher: a commit log flush or a persist of small files.
pub struct FlushJob {
    pub done: FlushDone,
    pub sync: rockfish_store::SyncWork,
}

impl FlushJob {
    /// Nothing to sync: done as soon as the flusher gets to it.
    pub fn nothing(done: FlushDone) -> FlushJob {
        FlushJob {
            done,
            sync: Box::new(|| Ok(())),
        }
    }
}

/// What a job came to.
pub type FlushResult = (FlushDone, Result<(), String>);

/// Starts the flusher. Jobs run one after another, in order. On real disks it is a thread
/// (an msync blocks); under madsim it is a task of the simulated node, so the run stays a
/// function of the seed.
pub fn spawn_flusher(done: mpsc::UnboundedSender<FlushResult>) -> mpsc::UnboundedSender<FlushJob> {
    let (tx, mut rx) = mpsc::unbounded_channel::<FlushJob>();
    #[cfg(not(madsim))]
    std::thread::Builder::new()
        .name("rockfish-flush".into())
        .spawn(move || {
            while let Some(job) = rx.blocking_recv() {
                if done.send((job.done, (job.sync)())).is_err() {
                    break;
                }
            }
        })
        .expect("spawning the flush thread");
    #[cfg(madsim)]
    tokio::spawn(async move {
        while let Some(job) = rx.recv().await {
            if done.send((job.done, (job.sync)())).is_err() {
                break;
            }
        }
    });
    tx
}

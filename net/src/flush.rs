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

/// The flusher's two lanes: commit log flushes (what SYNC_FLUSH sends wait on) and persists
/// (checkpoints, config files, the controller's raft log). A checkpoint syncs queue and index
/// files and renames a file, several milliseconds on a disk whose every sync is a cache
/// flush; queued in one lane, it held every commit log flush behind it (the p999 of
/// SYNC_FLUSH sends). The machine never needs one lane's job ordered after the other's: a
/// checkpoint records what was durable when it was asked, and a flush syncs only the log.
pub struct Flusher {
    flushes: mpsc::UnboundedSender<FlushJob>,
    persists: mpsc::UnboundedSender<FlushJob>,
}

impl Flusher {
    /// Queues a job on its lane; `Err` once the flusher is gone.
    pub fn send(&self, job: FlushJob) -> Result<(), FlushJob> {
        let lane = match job.done {
            FlushDone::Flush(_) => &self.flushes,
            FlushDone::Persist(_) => &self.persists,
        };
        lane.send(job).map_err(|e| e.0)
    }
}

/// Starts the flusher. Jobs of a lane run one after another, in order. On real disks each
/// lane is a thread (an msync blocks); under madsim a task of the simulated node, so the run
/// stays a function of the seed. Dropping the `Flusher` lets both finish what they were
/// given; `done` closes once both have.
pub fn spawn_flusher(done: mpsc::UnboundedSender<FlushResult>) -> Flusher {
    Flusher {
        flushes: spawn_lane("rockfish-flush", done.clone()),
        persists: spawn_lane("rockfish-persist", done),
    }
}

fn spawn_lane(
    name: &str,
    done: mpsc::UnboundedSender<FlushResult>,
) -> mpsc::UnboundedSender<FlushJob> {
    let (tx, mut rx) = mpsc::unbounded_channel::<FlushJob>();
    #[cfg(not(madsim))]
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            while let Some(job) = rx.blocking_recv() {
                if done.send((job.done, (job.sync)())).is_err() {
                    break;
                }
            }
        })
        .expect("spawning a flush thread");
    #[cfg(madsim)]
    {
        let _ = name;
        tokio::spawn(async move {
            while let Some(job) = rx.recv().await {
                if done.send((job.done, (job.sync)())).is_err() {
                    break;
                }
            }
        });
    }
    tx
}

//! The controller's raft log as raft-rs's `Storage`, the file it is persisted in, and the
//! encoding of raft messages between controllers.
//!
//! The whole log (a snapshot of the replica table plus the entries after it, kept short by
//! compaction) is written as one small file, atomically, whenever a `Ready` changes it: the
//! controller's log holds a few entries per failover, not a message stream.
//!
//! Raft messages travel as bincode of a mirror of `eraftpb::Message`, decoded with a size
//! limit: the controller's port is open to anyone, and rust-protobuf 2's decoder recurses
//! without bound on crafted input.

use bincode::{Decode, Encode};
use bytes::Bytes;
use raft::eraftpb::{Entry, EntryType, HardState, Message, MessageType, Snapshot};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};

/// Largest raft message or log file accepted.
pub const MAX_RAFT_BYTES: usize = 16 << 20;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_RAFT_BYTES>()
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Encode, Decode)]
struct WireEntry {
    entry_type: i32,
    term: u64,
    index: u64,
    data: Vec<u8>,
    context: Vec<u8>,
}

impl From<&Entry> for WireEntry {
    fn from(e: &Entry) -> Self {
        WireEntry {
            entry_type: e.get_entry_type() as i32,
            term: e.term,
            index: e.index,
            data: e.data.to_vec(),
            context: e.context.to_vec(),
        }
    }
}

impl WireEntry {
    fn into_entry(self) -> Entry {
        let mut e = Entry::default();
        e.set_entry_type(match self.entry_type {
            1 => EntryType::EntryConfChange,
            2 => EntryType::EntryConfChangeV2,
            _ => EntryType::EntryNormal,
        });
        e.term = self.term;
        e.index = self.index;
        e.data = Bytes::from(self.data);
        e.context = Bytes::from(self.context);
        e
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Encode, Decode)]
struct WireSnapshot {
    data: Vec<u8>,
    index: u64,
    term: u64,
    voters: Vec<u64>,
    learners: Vec<u64>,
}

impl From<&Snapshot> for WireSnapshot {
    fn from(s: &Snapshot) -> Self {
        let m = s.get_metadata();
        WireSnapshot {
            data: s.data.to_vec(),
            index: m.index,
            term: m.term,
            voters: m.get_conf_state().voters.clone(),
            learners: m.get_conf_state().learners.clone(),
        }
    }
}

impl WireSnapshot {
    fn into_snapshot(self) -> Snapshot {
        let mut s = Snapshot {
            data: Bytes::from(self.data),
            ..Snapshot::default()
        };
        let m = s.mut_metadata();
        m.index = self.index;
        m.term = self.term;
        let cs = m.mut_conf_state();
        cs.voters = self.voters;
        cs.learners = self.learners;
        s
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Encode, Decode)]
struct WireMessage {
    msg_type: i32,
    to: u64,
    from: u64,
    term: u64,
    log_term: u64,
    index: u64,
    entries: Vec<WireEntry>,
    commit: u64,
    commit_term: u64,
    snapshot: Option<WireSnapshot>,
    request_snapshot: u64,
    reject: bool,
    reject_hint: u64,
    context: Vec<u8>,
    priority: i64,
}

/// A raft message's bytes.
pub fn encode_message(m: &Message) -> Vec<u8> {
    let w = WireMessage {
        msg_type: m.get_msg_type() as i32,
        to: m.to,
        from: m.from,
        term: m.term,
        log_term: m.log_term,
        index: m.index,
        entries: m.entries.iter().map(WireEntry::from).collect(),
        commit: m.commit,
        commit_term: m.commit_term,
        snapshot: m.snapshot.as_ref().map(WireSnapshot::from),
        request_snapshot: m.request_snapshot,
        reject: m.reject,
        reject_hint: m.reject_hint,
        context: m.context.to_vec(),
        priority: m.priority,
    };
    bincode::encode_to_vec(&w, config()).expect("a raft message encodes")
}

/// A raft message from its bytes; `None` for anything malformed.
pub fn decode_message(bytes: &[u8]) -> Option<Message> {
    let (w, used): (WireMessage, usize) = bincode::decode_from_slice(bytes, config()).ok()?;
    if used != bytes.len() {
        return None;
    }
    // Only what travels between peers: local messages (MsgHup, MsgBeat, ...) never do.
    let msg_type = match w.msg_type {
        2 => MessageType::MsgPropose,
        3 => MessageType::MsgAppend,
        4 => MessageType::MsgAppendResponse,
        5 => MessageType::MsgRequestVote,
        6 => MessageType::MsgRequestVoteResponse,
        7 => MessageType::MsgSnapshot,
        8 => MessageType::MsgHeartbeat,
        9 => MessageType::MsgHeartbeatResponse,
        13 => MessageType::MsgTransferLeader,
        14 => MessageType::MsgTimeoutNow,
        15 => MessageType::MsgReadIndex,
        16 => MessageType::MsgReadIndexResp,
        17 => MessageType::MsgRequestPreVote,
        18 => MessageType::MsgRequestPreVoteResponse,
        _ => return None,
    };
    let mut m = Message::default();
    m.set_msg_type(msg_type);
    m.to = w.to;
    m.from = w.from;
    m.term = w.term;
    m.log_term = w.log_term;
    m.index = w.index;
    m.set_entries(w.entries.into_iter().map(WireEntry::into_entry).collect());
    m.commit = w.commit;
    m.commit_term = w.commit_term;
    if let Some(s) = w.snapshot {
        m.set_snapshot(s.into_snapshot());
    }
    m.request_snapshot = w.request_snapshot;
    m.reject = w.reject;
    m.reject_hint = w.reject_hint;
    m.context = Bytes::from(w.context);
    m.priority = w.priority;
    Some(m)
}

/// The persisted form of the log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Encode, Decode)]
struct WireLog {
    term: u64,
    vote: u64,
    commit: u64,
    snapshot: WireSnapshot,
    entries: Vec<WireEntry>,
}

/// The controller's raft log in memory: a snapshot and the entries after it.
#[derive(Debug, Clone)]
pub struct RaftStore {
    hard_state: HardState,
    snapshot: Snapshot,
    /// `entries[i].index == snapshot index + 1 + i`.
    entries: Vec<Entry>,
}

impl RaftStore {
    /// A fresh log whose configuration is `voters`.
    pub fn new(voters: Vec<u64>) -> RaftStore {
        let mut snapshot = Snapshot::default();
        snapshot.mut_metadata().mut_conf_state().voters = voters;
        RaftStore {
            hard_state: HardState::default(),
            snapshot,
            entries: Vec::new(),
        }
    }

    /// The log read back from its file.
    pub fn decode(bytes: &[u8]) -> Result<RaftStore, String> {
        let (w, used): (WireLog, usize) = bincode::decode_from_slice(bytes, config())
            .map_err(|e| format!("controller raft log: {e}"))?;
        if used != bytes.len() {
            return Err("controller raft log: trailing bytes".into());
        }
        let hard_state = HardState {
            term: w.term,
            vote: w.vote,
            commit: w.commit,
            ..HardState::default()
        };
        let snapshot = w.snapshot.into_snapshot();
        let first = snapshot.get_metadata().index + 1;
        let entries: Vec<Entry> = w.entries.into_iter().map(WireEntry::into_entry).collect();
        for (i, e) in entries.iter().enumerate() {
            if e.index != first + i as u64 {
                return Err(format!(
                    "controller raft log: entry {} where {} belongs",
                    e.index,
                    first + i as u64
                ));
            }
        }
        Ok(RaftStore {
            hard_state,
            snapshot,
            entries,
        })
    }

    /// The log's file.
    pub fn encode(&self) -> Vec<u8> {
        let w = WireLog {
            term: self.hard_state.term,
            vote: self.hard_state.vote,
            commit: self.hard_state.commit,
            snapshot: WireSnapshot::from(&self.snapshot),
            entries: self.entries.iter().map(WireEntry::from).collect(),
        };
        bincode::encode_to_vec(&w, config()).expect("the raft log encodes")
    }

    pub fn snapshot_ref(&self) -> &Snapshot {
        &self.snapshot
    }

    pub fn set_hard_state(&mut self, hs: HardState) {
        self.hard_state = hs;
    }

    pub fn set_commit(&mut self, commit: u64) {
        self.hard_state.commit = commit;
    }

    fn snap_index(&self) -> u64 {
        self.snapshot.get_metadata().index
    }

    /// Appends entries from a `Ready`, replacing any conflicting tail.
    pub fn append(&mut self, ents: &[Entry]) {
        let Some(first) = ents.first() else {
            return;
        };
        let snap = self.snap_index();
        // Entries at or below the snapshot are already applied and compacted.
        let skip = snap.saturating_sub(first.index - 1) as usize;
        let ents = &ents[skip.min(ents.len())..];
        let Some(first) = ents.first() else {
            return;
        };
        let keep = (first.index - snap - 1) as usize;
        self.entries.truncate(keep);
        self.entries.extend_from_slice(ents);
    }

    /// Installs a snapshot received from the leader: the log starts over after it.
    pub fn apply_snapshot(&mut self, snapshot: Snapshot) {
        let m = snapshot.get_metadata();
        self.hard_state.commit = self.hard_state.commit.max(m.index);
        self.hard_state.term = self.hard_state.term.max(m.term);
        self.entries.clear();
        self.snapshot = snapshot;
    }

    /// Folds the entries up to `applied` into a snapshot holding `data` (the replica table
    /// as of `applied`).
    pub fn compact(&mut self, applied: u64, data: Vec<u8>) {
        let snap = self.snap_index();
        if applied <= snap || applied > snap + self.entries.len() as u64 {
            return;
        }
        let term = self.entries[(applied - snap - 1) as usize].term;
        self.entries.drain(..(applied - snap) as usize);
        self.snapshot.data = Bytes::from(data);
        let m = self.snapshot.mut_metadata();
        m.index = applied;
        m.term = term;
    }

    /// Entries since the snapshot.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl Storage for RaftStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState {
            hard_state: self.hard_state.clone(),
            conf_state: self.snapshot.get_metadata().get_conf_state().clone(),
        })
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let snap = self.snap_index();
        if low <= snap {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last_index()? + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let lo = (low - snap - 1) as usize;
        let hi = (high - snap - 1) as usize;
        let mut ents = self.entries[lo..hi].to_vec();
        raft::util::limit_size(&mut ents, max_size.into());
        Ok(ents)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let snap = self.snap_index();
        if idx == snap {
            return Ok(self.snapshot.get_metadata().term);
        }
        if idx < snap {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        match self.entries.get((idx - snap - 1) as usize) {
            Some(e) => Ok(e.term),
            None => Err(raft::Error::Store(StorageError::Unavailable)),
        }
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.snap_index() + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.snap_index() + self.entries.len() as u64)
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        if self.snap_index() < request_index {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        Ok(self.snapshot.clone())
    }
}

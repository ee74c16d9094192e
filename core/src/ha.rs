//! Master/slave replication (RocketMQ's HA service) as two Sans-IO machines over the store's
//! replication ends (`MessageStore::read_replicated` / `append_replicated`).
//!
//! The stream is Apache's HA framing on the master's HA port (listenPort + 1), raw, not
//! remoting frames:
//! - slave → master: 8 bytes, the slave's log end: what it holds, and where to go on from.
//!   Sent on connecting, after every append, and every [`HEARTBEAT_INTERVAL_MS`].
//! - master → slave: a 12-byte header (offset u64, length u32) and that many bytes of log
//!   units (whole records; an end-of-segment blank as its 8-byte marker). Length 0 is a
//!   heartbeat. In controller mode the header carries an 8-byte third field, the master's
//!   confirmed offset: what its consumers may see, which every SyncStateSet member holds. A
//!   replica serves consumers no further than the last confirmed offset it heard, so nothing it
//!   delivers can be cut from the group by a failover (Apache 5's confirmOffset).
//!
//! What the master counts as held by a slave (for SYNC_MASTER) is never more than it sent on
//! that connection: `acked = min(report, sent_end)`, where `sent_end` starts at the slave's
//! first report (its resume point, refused if past the master's end). A slave reporting more
//! than it was sent (a bogus offset, RocketMQ #1155/#3015) moves nothing. The master keeps at
//! most [`MAX_IN_FLIGHT`] bytes unacknowledged per slave: a slow slave slows its own stream,
//! not the master's memory.

use std::collections::BTreeMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use rockfish_store::{Disk, MessageStore};

use crate::machine::ConnId;

/// The master → slave header: offset and length.
pub const TRANSFER_HEADER_LEN: usize = 12;
/// The header in controller mode: offset, length, confirmed offset.
pub const CONFIRMED_HEADER_LEN: usize = 20;
/// The slave → master report: its log end.
pub const REPORT_LEN: usize = 8;
/// In controller mode a slave says who it is before its first report: magic, the master
/// epoch it follows, its brokerId (the master counts SyncStateSet members by id).
pub const HELLO_LEN: usize = 16;
const HELLO_MAGIC: u32 = 0x5246_4841; // "RFHA"
/// Bytes of log per transfer (Apache's haTransferBatchSize).
pub const MAX_TRANSFER_BYTES: usize = 32 * 1024;
/// Most bytes sent to a slave and not yet reported back.
pub const MAX_IN_FLIGHT: u64 = 4 * 1024 * 1024;
/// Reports and heartbeats at least this often (haSendHeartbeatInterval).
pub const HEARTBEAT_INTERVAL_MS: u64 = 5_000;
/// A peer silent this long is dropped (haHousekeepingInterval).
pub const HOUSEKEEPING_MS: u64 = 20_000;
/// The largest transfer a slave accepts: a record may exceed the batch size.
pub const MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;
/// A stream must send its first whole report this soon, or it is closed (a connection that
/// says nothing holds one of the [`MAX_SLAVE_STREAMS`] places).
pub const HANDSHAKE_MS: u64 = 5_000;
/// Most HA streams a master keeps (its slaves; each may hold [`MAX_IN_FLIGHT`] of the log in
/// write queues): a flood of connections to the HA port costs a bounded amount.
pub const MAX_SLAVE_STREAMS: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HaError {
    #[error(
        "the slave resumes at {report}, past what this master ever held or sent ({end}): its log diverged"
    )]
    AheadOfMaster { report: u64, end: u64 },
    #[error("the slave resumes at {0}, inside a record of the master's log: its log diverged")]
    NotABoundary(u64),
    #[error("reading the log for the slave failed: {0}")]
    Read(String),
    #[error("the slave's report went back from {from} to {to}")]
    ReportWentBack { from: u64, to: u64 },
    #[error("a transfer of {0} bytes (limit {MAX_FRAME_BYTES})")]
    FrameTooLarge(usize),
    #[error("the master sent offset {sent}, the slave's log ends at {end}")]
    OffsetMismatch { sent: u64, end: u64 },
    #[error("appending replicated data failed: {0}")]
    Store(String),
    #[error("the master has been silent for {HOUSEKEEPING_MS} ms")]
    MasterSilent,
    #[error("the slave's hello is malformed")]
    BadHello,
    #[error("the slave follows epoch {slave}, this master leads epoch {master}")]
    WrongEpoch { slave: u32, master: u32 },
}

/// Encodes a slave's hello (controller mode).
pub fn encode_hello(epoch: u64, broker_id: u64) -> [u8; HELLO_LEN] {
    let mut b = [0u8; HELLO_LEN];
    b[..4].copy_from_slice(&HELLO_MAGIC.to_be_bytes());
    b[4..8].copy_from_slice(&(epoch as u32).to_be_bytes());
    b[8..].copy_from_slice(&broker_id.to_be_bytes());
    b
}

/// Encodes a master → slave transfer (with the confirmed offset in controller mode).
pub fn encode_transfer(offset: u64, data: &[u8], confirmed: Option<u64>) -> Bytes {
    let mut b = BytesMut::with_capacity(CONFIRMED_HEADER_LEN + data.len());
    b.put_u64(offset);
    b.put_u32(data.len() as u32);
    if let Some(c) = confirmed {
        b.put_u64(c);
    }
    b.put_slice(data);
    b.freeze()
}

/// Encodes a slave → master report.
pub fn encode_report(offset: u64) -> [u8; REPORT_LEN] {
    offset.to_be_bytes()
}

/// One slave as the master sees it.
#[derive(Debug)]
struct SlaveConn {
    /// The slave's last report (None until its first).
    report: Option<u64>,
    /// The end of what was sent on this connection (starts at the first report).
    sent_end: u64,
    last_heard: u64,
    last_sent: u64,
    /// Report bytes not yet a whole report.
    partial: BytesMut,
    /// Who it is (controller mode: from its hello).
    broker_id: Option<u64>,
    /// The confirmed offset last sent (controller mode).
    confirmed_sent: u64,
}

/// The master's side: every connected slave's position, and what to send each.
#[derive(Debug, Default)]
pub struct HaMaster {
    slaves: BTreeMap<ConnId, SlaveConn>,
    /// The furthest offset this process can vouch for: its log's end when it started, then
    /// the end of everything it sent. A slave resuming past it holds bytes this process never
    /// had there (a tail its predecessor lost in a power loss, followed since by other
    /// records): refused, even once the log has grown past that offset.
    vouched: u64,
    /// Controller mode: every stream starts with a hello for this epoch.
    hello_epoch: Option<u64>,
}

impl HaMaster {
    /// A master whose log ended at `recovered_end` when it started.
    pub fn new(recovered_end: u64) -> HaMaster {
        HaMaster {
            slaves: BTreeMap::new(),
            vouched: recovered_end,
            hello_epoch: None,
        }
    }

    /// A master of controller mode's `epoch`, whose log ended at `end` when it took over:
    /// slaves say who they are and which epoch they follow first.
    pub fn for_epoch(end: u64, epoch: u64) -> HaMaster {
        HaMaster {
            hello_epoch: Some(epoch),
            ..HaMaster::new(end)
        }
    }

    /// What slave `id` holds, as far as this master sent it (its best stream).
    pub fn acked_by(&self, id: u64) -> Option<u64> {
        self.slaves
            .values()
            .filter(|s| s.broker_id == Some(id))
            .filter_map(Self::acked_of)
            .max()
    }

    /// The brokerIds of the slaves that said hello and reported.
    pub fn slave_ids(&self) -> std::collections::BTreeSet<u64> {
        self.slaves
            .values()
            .filter(|s| s.report.is_some())
            .filter_map(|s| s.broker_id)
            .collect()
    }

    /// Every stream, to close them all (a master stepping down).
    pub fn conns(&self) -> Vec<ConnId> {
        self.slaves.keys().copied().collect()
    }

    pub fn on_connect(&mut self, conn: ConnId, now: u64) {
        self.slaves.insert(
            conn,
            SlaveConn {
                report: None,
                sent_end: 0,
                last_heard: now,
                last_sent: now,
                partial: BytesMut::new(),
                broker_id: None,
                confirmed_sent: 0,
            },
        );
    }

    pub fn on_disconnect(&mut self, conn: ConnId) {
        self.slaves.remove(&conn);
    }

    /// Streams open (reported or not).
    pub fn streams(&self) -> usize {
        self.slaves.len()
    }

    /// Bytes from a slave (reports, split anywhere). `master_end`: the master's log end;
    /// `is_boundary(o)`: whether a unit of the master's log starts at `o` (a slave resuming
    /// elsewhere holds what this master never had there). An error means the connection
    /// must be closed.
    pub fn on_bytes(
        &mut self,
        conn: ConnId,
        bytes: &[u8],
        master_end: u64,
        is_boundary: impl Fn(u64) -> bool,
        now: u64,
    ) -> Result<(), HaError> {
        let limit = master_end.min(self.vouched);
        let Some(s) = self.slaves.get_mut(&conn) else {
            return Ok(());
        };
        s.partial.extend_from_slice(bytes);
        if let Some(epoch) = self.hello_epoch
            && s.broker_id.is_none()
        {
            if s.partial.len() < HELLO_LEN {
                return Ok(());
            }
            if s.partial.get_u32() != HELLO_MAGIC {
                return Err(HaError::BadHello);
            }
            let slave = s.partial.get_u32();
            if slave != epoch as u32 {
                return Err(HaError::WrongEpoch {
                    slave,
                    master: epoch as u32,
                });
            }
            s.broker_id = Some(s.partial.get_u64());
        }
        while s.partial.len() >= REPORT_LEN {
            let report = s.partial.get_u64();
            // Only whole reports keep a stream alive.
            s.last_heard = now;
            match s.report {
                // A deliberately broken master (for the simulator's checkers) believes a
                // first report past its end (Apache's early-ack loss, #1155/#3015).
                None if report > limit && !crate::buggify::bug("ha.trust-report") => {
                    return Err(HaError::AheadOfMaster { report, end: limit });
                }
                None if report < master_end
                    && !is_boundary(report)
                    && !crate::buggify::bug("ha.trust-report") =>
                {
                    return Err(HaError::NotABoundary(report));
                }
                None => s.sent_end = report,
                Some(prev) if report < prev => {
                    return Err(HaError::ReportWentBack {
                        from: prev,
                        to: report,
                    });
                }
                Some(_) => {}
            }
            s.report = Some(report);
        }
        Ok(())
    }

    /// What a slave holds that the master sent it: never more than was sent.
    fn acked_of(s: &SlaveConn) -> Option<u64> {
        if crate::buggify::bug("ha.trust-report") {
            return s.report;
        }
        s.report.map(|r| r.min(s.sent_end))
    }

    /// The furthest offset some connected slave holds (SYNC_MASTER acks up to it).
    pub fn acked(&self) -> Option<u64> {
        self.slaves.values().filter_map(Self::acked_of).max()
    }

    /// Slaves that hold at least `min_acked` (as far as it was sent them).
    pub fn in_sync(&self, min_acked: u64) -> usize {
        self.slaves
            .values()
            .filter(|s| Self::acked_of(s).is_some_and(|a| a >= min_acked))
            .count()
    }

    /// Connected slaves that have reported.
    pub fn slaves(&self) -> usize {
        self.slaves.values().filter(|s| s.report.is_some()).count()
    }

    /// The transfers to write now: each slave's next units (within its in-flight window), or
    /// a heartbeat when it was sent nothing for a heartbeat interval (controller mode: or
    /// when `confirmed`, what this master's consumers may see, moved). A slave whose next
    /// units do not read gets an error instead (its connection must close: its stream
    /// cannot go on).
    pub fn poll_transfers<D: Disk>(
        &mut self,
        store: &MessageStore<D>,
        confirmed: u64,
        now: u64,
    ) -> Vec<(ConnId, Result<Bytes, HaError>)> {
        let mut out = Vec::new();
        let mut vouched = self.vouched;
        let confirm = self.hello_epoch.map(|_| confirmed);
        for (conn, s) in self.slaves.iter_mut() {
            let Some(report) = s.report else { continue };
            let in_flight = s.sent_end.saturating_sub(report);
            if s.sent_end < store.write_pos() && in_flight < MAX_IN_FLIGHT {
                match store.read_replicated(s.sent_end, MAX_TRANSFER_BYTES) {
                    Ok((data, next)) if !data.is_empty() => {
                        out.push((*conn, Ok(encode_transfer(s.sent_end, &data, confirm))));
                        s.confirmed_sent = confirmed;
                        s.sent_end = next;
                        vouched = vouched.max(next);
                        s.last_sent = now;
                        continue;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        out.push((*conn, Err(HaError::Read(e.to_string()))));
                        continue;
                    }
                }
            }
            let confirm_moved = confirm.is_some() && confirmed > s.confirmed_sent;
            if now >= s.last_sent + HEARTBEAT_INTERVAL_MS || confirm_moved {
                out.push((*conn, Ok(encode_transfer(s.sent_end, &[], confirm))));
                s.confirmed_sent = confirmed;
                s.last_sent = now;
            }
        }
        self.vouched = vouched;
        out
    }

    /// Slaves silent past the housekeeping interval: close them.
    pub fn expired(&self, now: u64) -> Vec<ConnId> {
        self.slaves
            .iter()
            .filter(|(_, s)| {
                let silence = if s.report.is_some() {
                    HOUSEKEEPING_MS
                } else {
                    HANDSHAKE_MS
                };
                now >= s.last_heard + silence
            })
            .map(|(c, _)| *c)
            .collect()
    }

    /// When the master next has something to do for its slaves (a heartbeat or an expiry).
    pub fn next_deadline(&self) -> Option<u64> {
        // A slave that has not reported yet is sent nothing, heartbeats included: only its
        // expiry is due.
        self.slaves
            .values()
            .map(|s| match s.report {
                Some(_) => {
                    (s.last_sent + HEARTBEAT_INTERVAL_MS).min(s.last_heard + HOUSEKEEPING_MS)
                }
                None => s.last_heard + HANDSHAKE_MS,
            })
            .min()
    }
}

/// The slave's side of one connection to its master. It reports what it holds durably (the
/// broker calls [`HaSlave::report`] as its flushes finish), so a master that acks a
/// SYNC_MASTER send on a report has the message on two disks, not in a page cache.
#[derive(Debug, Default)]
pub struct HaSlave {
    partial: BytesMut,
    last_heard: u64,
    last_reported_at: u64,
    /// The last offset reported: reports never go back.
    reported: u64,
    /// Controller mode: transfers carry the master's confirmed offset.
    controller: bool,
    /// The highest confirmed offset heard on this stream.
    confirmed: u64,
}

impl HaSlave {
    /// Connected: the first report says where this slave's log ends (`resume`, which must be
    /// durable: later reports are durable offsets and may not go back from it).
    /// `controller`: the stream is controller mode's (a hello went first; transfers carry
    /// the confirmed offset).
    pub fn on_connected(&mut self, resume: u64, controller: bool, now: u64) -> [u8; REPORT_LEN] {
        self.partial.clear();
        self.controller = controller;
        self.confirmed = 0;
        self.last_heard = now;
        self.last_reported_at = now;
        self.reported = resume;
        encode_report(resume)
    }

    /// Bytes from the master: every whole transfer is appended to `store`. True when
    /// something was appended (the broker flushes it, then reports). An error means the
    /// connection must be closed (and made again).
    pub fn on_bytes<D: Disk>(
        &mut self,
        store: &mut MessageStore<D>,
        bytes: &[u8],
        now: u64,
    ) -> Result<bool, HaError> {
        self.partial.extend_from_slice(bytes);
        self.last_heard = now;
        let mut appended = false;
        let header = if self.controller {
            CONFIRMED_HEADER_LEN
        } else {
            TRANSFER_HEADER_LEN
        };
        while self.partial.len() >= header {
            let offset = u64::from_be_bytes(self.partial[..8].try_into().expect("8 bytes"));
            let len = u32::from_be_bytes(self.partial[8..12].try_into().expect("4 bytes")) as usize;
            if len > MAX_FRAME_BYTES {
                return Err(HaError::FrameTooLarge(len));
            }
            if self.partial.len() < header + len {
                // Room for the whole transfer at once, not a doubling per read.
                self.partial.reserve(header + len - self.partial.len());
                break;
            }
            if self.controller {
                let c = u64::from_be_bytes(self.partial[12..20].try_into().expect("8 bytes"));
                self.confirmed = self.confirmed.max(c);
            }
            self.partial.advance(header);
            let data = self.partial.split_to(len);
            if len == 0 {
                continue; // a heartbeat
            }
            let end = store.write_pos();
            if offset != end {
                return Err(HaError::OffsetMismatch { sent: offset, end });
            }
            store
                .append_replicated(offset, &data)
                .map_err(|e| HaError::Store(e.to_string()))?;
            appended = true;
        }
        Ok(appended)
    }

    /// The log is durable below `durable`: the report to send, if it says more than the last.
    pub fn report(&mut self, durable: u64, now: u64) -> Option<[u8; REPORT_LEN]> {
        if durable <= self.reported {
            return None;
        }
        self.reported = durable;
        self.last_reported_at = now;
        Some(encode_report(durable))
    }

    /// The last offset reported.
    pub fn reported(&self) -> u64 {
        self.reported
    }

    /// The highest confirmed offset the master sent on this stream (controller mode).
    pub fn confirmed(&self) -> u64 {
        self.confirmed
    }

    /// Time passed: a report is due every heartbeat interval; `Err` when the master has been
    /// silent past the housekeeping interval (reconnect).
    pub fn on_timeout(&mut self, now: u64) -> Result<Option<[u8; REPORT_LEN]>, HaError> {
        if now >= self.last_heard + HOUSEKEEPING_MS {
            return Err(HaError::MasterSilent);
        }
        if now >= self.last_reported_at + HEARTBEAT_INTERVAL_MS {
            self.last_reported_at = now;
            return Ok(Some(encode_report(self.reported)));
        }
        Ok(None)
    }

    pub fn next_deadline(&self) -> u64 {
        (self.last_reported_at + HEARTBEAT_INTERVAL_MS).min(self.last_heard + HOUSEKEEPING_MS)
    }
}

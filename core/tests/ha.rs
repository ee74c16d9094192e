//! The replication machines driven directly, bytes passed by hand (split anywhere): a slave
//! catches up with its master and holds the same log; the master counts as held only what it
//! sent (a bogus report moves nothing), keeps a bounded window in flight, heartbeats when
//! idle and drops a silent slave; a diverged slave is refused.

use rockfish_core::ha::{
    HEARTBEAT_INTERVAL_MS, HOUSEKEEPING_MS, HaError, HaMaster, HaSlave, MAX_IN_FLIGHT,
    encode_report,
};
use rockfish_core::machine::ConnId;
use rockfish_store::record::{HostAddr, StoreMessage};
use rockfish_store::{MemDisk, MessageStore, StoreConfig};

const NOW: u64 = 1_700_000_000_000;
const S: ConnId = ConnId(7);

fn store(seed: u64) -> MessageStore<MemDisk> {
    MessageStore::open(MemDisk::new(seed), StoreConfig::simulated(), NOW)
        .unwrap()
        .0
}

fn put(m: &mut MessageStore<MemDisk>, n: usize, size: usize) {
    let host = HostAddr::V4([10, 0, 0, 1], 10911);
    let body = vec![b'x'; size];
    for i in 0..n {
        let props = format!("KEYS\u{1}k{i}\u{2}");
        let msg = StoreMessage {
            topic: "T",
            queue_id: (i % 2) as u32,
            flag: 0,
            sys_flag: 0,
            born_timestamp: 1,
            born_host: host,
            store_host: host,
            reconsume_times: 0,
            prepared_transaction_offset: 0,
            body: &body,
            properties: props.as_bytes(),
        };
        m.put(&msg, NOW).unwrap();
    }
}

/// Runs the pair until nothing moves, passing bytes in pieces of `split`.
fn pump(
    master: &mut HaMaster,
    m: &MessageStore<MemDisk>,
    slave: &mut HaSlave,
    s: &mut MessageStore<MemDisk>,
    split: usize,
    now: u64,
) {
    loop {
        let out: Vec<_> = master
            .poll_transfers(m, 0, now)
            .into_iter()
            .map(|(c, t)| (c, t.unwrap()))
            .collect();
        if out.is_empty() {
            break;
        }
        for (_, frame) in out {
            for piece in frame.chunks(split) {
                if slave.on_bytes(s, piece, now).unwrap()
                    && let Some(report) = slave.report(s.write_pos(), now)
                {
                    master
                        .on_bytes(S, &report, m.write_pos(), |_| true, now)
                        .unwrap();
                }
            }
        }
    }
}

#[test]
fn a_slave_catches_up_and_the_master_counts_what_it_holds() {
    for split in [1, 5, 13, 4096, usize::MAX] {
        let (mut m, mut s) = (store(1), store(2));
        put(&mut m, 200, 900);
        let (mut master, mut slave) = (HaMaster::new(u64::MAX), HaSlave::default());
        master.on_connect(S, NOW);
        let hello = slave.on_connected(s.write_pos(), false, NOW);
        master
            .on_bytes(S, &hello, m.write_pos(), |_| true, NOW)
            .unwrap();
        assert_eq!(master.acked(), Some(0));
        pump(&mut master, &m, &mut slave, &mut s, split, NOW);
        assert_eq!(s.write_pos(), m.write_pos(), "split {split}");
        assert_eq!(master.acked(), Some(m.write_pos()));
        // More arrives; it follows.
        put(&mut m, 50, 3_000);
        pump(&mut master, &m, &mut slave, &mut s, split, NOW + 1);
        assert_eq!(s.write_pos(), m.write_pos());
        assert_eq!(s.max_offset("T", 1), m.max_offset("T", 1));
        assert_eq!(master.acked(), Some(m.write_pos()));
    }
}

#[test]
fn a_report_beyond_what_was_sent_is_not_trusted() {
    let (mut m, s) = (store(1), store(2));
    put(&mut m, 100, 900);
    let mut master = HaMaster::new(u64::MAX);
    master.on_connect(S, NOW);
    master
        .on_bytes(
            S,
            &encode_report(s.write_pos()),
            m.write_pos(),
            |_| true,
            NOW,
        )
        .unwrap();
    let sent = master.poll_transfers(&m, 0, NOW);
    assert_eq!(sent.len(), 1);
    // The slave claims everything, having been sent one batch: only that batch counts.
    master
        .on_bytes(
            S,
            &encode_report(m.write_pos()),
            m.write_pos(),
            |_| true,
            NOW,
        )
        .unwrap();
    let acked = master.acked().unwrap();
    assert!(
        acked > 0 && acked < m.write_pos(),
        "acked {acked} of {}",
        m.write_pos()
    );
    // A first report inside one of the master's records: a diverged log, refused.
    let mut inside = HaMaster::new(u64::MAX);
    inside.on_connect(S, NOW);
    assert!(matches!(
        inside.on_bytes(
            S,
            &encode_report(100),
            m.write_pos(),
            |o| m.is_unit_start(o),
            NOW
        ),
        Err(HaError::NotABoundary(100))
    ));
    // A first report past the master's end: a diverged log, refused.
    let mut other = HaMaster::new(u64::MAX);
    other.on_connect(S, NOW);
    assert!(matches!(
        other.on_bytes(
            S,
            &encode_report(m.write_pos() + 1),
            m.write_pos(),
            |_| true,
            NOW
        ),
        Err(HaError::AheadOfMaster { .. })
    ));
}

#[test]
fn the_window_in_flight_is_bounded_and_idle_links_heartbeat_and_expire() {
    let mut m = store(1);
    put(&mut m, 1_500, 4_000); // ~6 MB: more than the window
    let mut master = HaMaster::new(u64::MAX);
    master.on_connect(S, NOW);
    master
        .on_bytes(S, &encode_report(0), m.write_pos(), |_| true, NOW)
        .unwrap();
    let mut sent = 0u64;
    loop {
        let out = master.poll_transfers(&m, 0, NOW);
        if out.is_empty() {
            break;
        }
        sent += out
            .iter()
            .map(|(_, f)| f.as_ref().unwrap().len() as u64 - 12)
            .sum::<u64>();
    }
    // The window counts log offsets (an end-of-segment blank covers its segment's rest).
    assert!(sent <= MAX_IN_FLIGHT + 64 * 1024, "sent {sent}");
    assert!(
        sent + 1_000_000 < m.write_pos(),
        "the rest waits for the slave's report"
    );
    // Idle: a heartbeat after the interval (an empty transfer at the send position).
    let hb = master.poll_transfers(&m, 0, NOW + HEARTBEAT_INTERVAL_MS);
    assert_eq!(hb.len(), 1);
    assert_eq!(hb[0].1.as_ref().unwrap().len(), 12);
    // The slave reports what it holds: the stream goes on.
    let later = NOW + HEARTBEAT_INTERVAL_MS;
    master
        .on_bytes(
            S,
            &encode_report(MAX_IN_FLIGHT),
            m.write_pos(),
            |_| true,
            later,
        )
        .unwrap();
    assert!(
        master.poll_transfers(&m, 0, later)[0]
            .1
            .as_ref()
            .unwrap()
            .len()
            > 12
    );
    assert_eq!(
        master.expired(later + HOUSEKEEPING_MS),
        vec![S],
        "silent: dropped"
    );
}

#[test]
fn a_slave_refuses_data_for_the_wrong_offset_and_reconnects_when_its_master_is_silent() {
    let (mut m, mut s) = (store(1), store(2));
    put(&mut m, 20, 900);
    let (data, _) = m.read_replicated(0, 100_000).unwrap();
    let mut slave = HaSlave::default();
    slave.on_connected(0, false, NOW);
    let wrong = rockfish_core::ha::encode_transfer(64, &data, None);
    assert!(matches!(
        slave.on_bytes(&mut s, &wrong, NOW),
        Err(HaError::OffsetMismatch { .. })
    ));
    assert_eq!(s.write_pos(), 0, "nothing written");
    assert_eq!(slave.on_timeout(NOW + 1), Ok(None));
    assert!(
        slave
            .on_timeout(NOW + HEARTBEAT_INTERVAL_MS)
            .unwrap()
            .is_some()
    );
    assert_eq!(
        slave.on_timeout(NOW + HOUSEKEEPING_MS),
        Err(HaError::MasterSilent)
    );
}

#[test]
fn a_slave_resuming_past_what_this_master_process_held_or_sent_is_refused() {
    // The master's predecessor lost a tail in a power loss; this process started with its log
    // ending at 0 here and grew since. A slave that kept the lost tail resumes at a record
    // boundary of the new log: the offset exists, the bytes below it are not this log's.
    let mut m = store(1);
    put(&mut m, 50, 900);
    let first_end = m.read_replicated(0, 1).unwrap().1;
    assert!(m.is_unit_start(first_end));
    let mut master = HaMaster::new(0);
    master.on_connect(S, NOW);
    let end = m.write_pos();
    assert!(matches!(
        master.on_bytes(
            S,
            &encode_report(first_end),
            end,
            |o| m.is_unit_start(o),
            NOW
        ),
        Err(HaError::AheadOfMaster { .. })
    ));
    // Once this process has sent up to there (to a slave that resumed at 0), it vouches.
    let mut master = HaMaster::new(0);
    master.on_connect(ConnId(1), NOW);
    master
        .on_bytes(
            ConnId(1),
            &encode_report(0),
            end,
            |o| m.is_unit_start(o),
            NOW,
        )
        .unwrap();
    while !master.poll_transfers(&m, 0, NOW).is_empty() {}
    master.on_connect(S, NOW);
    master
        .on_bytes(
            S,
            &encode_report(first_end),
            end,
            |o| m.is_unit_start(o),
            NOW,
        )
        .unwrap();
}

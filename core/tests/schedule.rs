//! Delay levels: a message sent with DELAY waits in SCHEDULE_TOPIC_XXXX and reaches its real
//! topic when due by the broker's clock, never earlier; progress survives restarts
//! (delayOffset.json, never ahead of what is durable), out-of-range levels are clamped.

use rockfish_core::broker::{BrokerConfig, FlushDiskType};
use rockfish_core::machine::ConnId;
use rockfish_core::remoting::RemotingCommand;
use rockfish_core::remoting::codes::{request, response};
use rockfish_sim::harness::broker::BrokerHarness;
use rockfish_store::config::{self, DelayOffsetTable};
use rockfish_store::message_store::SCHEDULE_TOPIC;
use rockfish_store::record::{HostAddr, StoredRecord};
use rockfish_store::{MemDisk, StoreConfig};

const P: ConnId = ConnId(1);
const C: ConnId = ConnId(2);
const T0: u64 = 1_700_000_000_000;

rockfish_sim::broker_harness!(H);

impl H {
    fn new(flush: FlushDiskType) -> H {
        H::start(flush, MemDisk::new(1), T0)
    }
    fn start(flush: FlushDiskType, disk: MemDisk, now: u64) -> H {
        let cfg = BrokerConfig {
            flush_disk_type: flush,
            ..BrokerConfig::default()
        };
        let mut h = BrokerHarness::start(cfg, StoreConfig::small(), disk, now);
        h.connect(P, HostAddr::V4([10, 0, 0, 9], 5555));
        h.connect(C, HostAddr::V4([10, 0, 0, 8], 6666));
        H(h)
    }
    fn send_delayed(&mut self, body: &str, level: &str) -> RemotingCommand {
        let props = [("TAGS", "TagA"), ("UNIQ_KEY", body), ("DELAY", level)];
        let cmd = self.send_v2("T", 1, &props, body.as_bytes());
        let opaque = cmd.opaque;
        let mut out = self.call(P, cmd);
        out.extend(self.run_flushes());
        BrokerHarness::response(&out, P, opaque)
            .expect("the send is answered")
            .0
    }
    fn at(&mut self, now: u64) {
        self.now = now;
        self.b.on_timeout(now);
        self.drain();
    }
    /// What the real topic's queue 1 holds, read from the store.
    fn real(&self) -> Vec<StoredRecord> {
        self.records("T", 1)
    }
    fn scheduled(&self, level: u32) -> u64 {
        self.b.store().max_offset(SCHEDULE_TOPIC, level - 1)
    }
    fn delay_file(&self) -> DelayOffsetTable {
        config::load(&self.disk, config::DELAY_OFFSETS_FILE)
            .unwrap()
            .unwrap_or_default()
    }
}

fn prop(r: &StoredRecord, name: &str) -> Option<String> {
    r.property(name)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

#[test]
fn a_delayed_message_waits_in_its_level_and_reaches_its_topic_when_due() {
    let mut h = H::new(FlushDiskType::Async);
    let resp = h.send_delayed("d1", "2"); // level 2: 5 s
    assert_eq!(resp.code, response::SUCCESS, "{:?}", resp.remark);
    assert_eq!(
        resp.ext("queueId"),
        Some("1"),
        "the queue the producer chose"
    );
    assert_eq!(h.scheduled(2), 1, "stored in the schedule topic's queue 1");
    assert!(h.real().is_empty(), "not in the real topic yet");
    let waiting = h.records(SCHEDULE_TOPIC, 1);
    assert_eq!(prop(&waiting[0], "REAL_TOPIC").as_deref(), Some("T"));
    assert_eq!(prop(&waiting[0], "REAL_QID").as_deref(), Some("1"));

    h.at(T0 + 4_999);
    assert!(h.real().is_empty(), "one millisecond early is early");
    h.at(T0 + 5_000);
    let got = h.real();
    assert_eq!(got.len(), 1, "delivered when due");
    let m = &got[0];
    assert_eq!(&m.body()[..], b"d1");
    assert_eq!(
        prop(m, "DELAY"),
        None,
        "the delivered copy has no delay left"
    );
    assert_eq!(
        prop(m, "REAL_TOPIC").as_deref(),
        Some("T"),
        "kept, as Apache does"
    );
    assert_eq!(prop(m, "TAGS").as_deref(), Some("TagA"));
    assert_eq!(prop(m, "UNIQ_KEY").as_deref(), Some("d1"));
    assert_eq!(m.born_host(), HostAddr::V4([10, 0, 0, 9], 5555));
    assert!(m.store_timestamp() >= waiting[0].store_timestamp() + 5_000);
    assert_eq!(h.b.delay_offset(2), 1);
    h.at(T0 + 60_000);
    assert_eq!(h.real().len(), 1, "delivered once");
}

#[test]
fn levels_out_of_range_are_clamped_and_non_positive_ones_ignored() {
    let mut h = H::new(FlushDiskType::Async);
    assert_eq!(h.send_delayed("huge", "99").code, response::SUCCESS);
    let max = StoreConfig::small().delay_levels_ms.len() as u32;
    assert_eq!(h.scheduled(max), 1, "clamped to the last level");
    let waiting = h.records(SCHEDULE_TOPIC, max - 1);
    assert_eq!(prop(&waiting[0], "DELAY"), Some(max.to_string()));
    for level in ["0", "-3", "x"] {
        assert_eq!(h.send_delayed(level, level).code, response::SUCCESS);
    }
    assert_eq!(h.real().len(), 3, "no delay: stored in the topic at once");
}

#[test]
fn sends_to_the_schedule_topic_itself_are_refused() {
    let mut h = H::new(FlushDiskType::Async);
    let cmd = h.send_v2(SCHEDULE_TOPIC, 0, &[], b"x");
    assert_eq!(h.one(P, cmd).0.code, response::NO_PERMISSION);
}

#[test]
fn sync_flush_delivers_visibly_only_once_the_copy_is_durable() {
    let mut h = H::new(FlushDiskType::Sync);
    assert_eq!(h.send_delayed("s1", "1").code, response::SUCCESS);
    h.at(T0 + 1_000);
    assert_eq!(h.real().len(), 1, "stored in the real topic");
    // The pull path serves only what is flushed: the delivery asked for a flush.
    let flushed_before = h.b.store().flushed();
    h.run_flushes();
    assert!(
        h.b.store().flushed() > flushed_before,
        "the delivery was flushed"
    );
}

#[test]
fn progress_survives_a_restart_and_a_restart_never_fires_early() {
    let mut h = H::new(FlushDiskType::Async);
    h.send_delayed("early", "1"); // due T0 + 1 s
    h.send_delayed("late", "3"); // due T0 + 10 s
    h.at(T0 + 1_000);
    h.run_flushes();
    h.at(T0 + 5_000); // offsets persisted (every 5 s) once the delivery is durable
    assert_eq!(h.delay_file().offset_table.get(&1), Some(&1));
    let disk = h.disk.clone();
    disk.crash();
    // Back at T0 + 6 s: level 1 is done, level 3 is not due yet.
    let mut h = H::start(FlushDiskType::Async, disk, T0 + 6_000);
    assert_eq!(h.real().len(), 1, "the level-1 delivery is not made again");
    h.at(T0 + 9_999);
    assert_eq!(h.real().len(), 1, "level 3 not due yet");
    h.at(T0 + 10_000);
    assert_eq!(h.real().len(), 2);
}

#[test]
fn a_clock_that_went_back_holds_messages_until_their_time() {
    let mut h = H::new(FlushDiskType::Async);
    h.send_delayed("d", "1"); // due T0 + 1 s by the clock that stored it
    let disk = h.disk.clone();
    disk.crash();
    // Restarted with a clock an hour behind.
    let mut h = H::start(FlushDiskType::Async, disk, T0 - 3_600_000);
    h.at(T0 - 3_600_000 + 2_000);
    assert!(
        h.real().is_empty(),
        "never before its time by the broker's clock"
    );
    h.at(T0 + 1_000);
    assert_eq!(h.real().len(), 1);
}

#[test]
fn a_power_loss_never_leaves_progress_ahead_of_the_deliveries() {
    let mut h = H::new(FlushDiskType::Async);
    h.send_delayed("p", "1");
    h.run_flushes();
    h.b.store_mut().sync().unwrap();
    h.at(T0 + 1_000); // delivered into the page cache only
    assert_eq!(h.real().len(), 1);
    h.at(T0 + 5_000); // offsets persisted: not past the unflushed delivery
    assert_eq!(h.delay_file().offset_table.get(&1).copied().unwrap_or(0), 0);
    let disk = h.disk.clone();
    disk.power_loss();
    let mut h = H::start(FlushDiskType::Async, disk, T0 + 6_000);
    assert_eq!(h.scheduled(1), 1, "the synced schedule entry survived");
    h.at(T0 + 6_001);
    assert_eq!(
        h.real().len(),
        1,
        "delivered again after the power loss took the copy"
    );
}

#[test]
fn get_all_delay_offset_answers_the_table() {
    let mut h = H::new(FlushDiskType::Async);
    h.send_delayed("g", "1");
    h.at(T0 + 1_000);
    h.run_flushes();
    h.at(T0 + 1_001);
    let cmd = h.req(request::GET_ALL_DELAY_OFFSET);
    let (resp, _) = h.one(C, cmd);
    assert_eq!(resp.code, response::SUCCESS);
    let table: DelayOffsetTable = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(table.offset_table.get(&1), Some(&1));
}

#[test]
fn a_crash_right_after_a_delivery_does_not_deliver_it_again() {
    let mut h = H::new(FlushDiskType::Async);
    h.send_delayed("once", "1");
    h.at(T0 + 1_000);
    assert_eq!(h.real().len(), 1);
    assert_eq!(
        h.delay_file().offset_table.get(&1),
        None,
        "delayOffset.json not written yet"
    );
    let disk = h.disk.clone();
    disk.crash(); // the page cache survives: the journal record says it was delivered
    let mut h = H::start(FlushDiskType::Async, disk, T0 + 1_500);
    h.at(T0 + 2_000);
    assert_eq!(h.real().len(), 1, "delivered exactly once");
    assert_eq!(h.b.delay_offset(1), 1);
}

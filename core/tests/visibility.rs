//! What consumers are served, and from where, around flushes and recoveries (RocketMQ #8239):
//! under SYNC_FLUSH only durable messages, with pulls, their offsets and GET_MAX_OFFSET
//! agreeing and held pulls woken by the flush; under ASYNC_FLUSH, after a power loss, no
//! committed or remembered consumer offset past the recovered end skips what is stored there.

use rockfish_core::broker::{BrokerConfig, FlushDiskType};
use rockfish_core::machine::{ConnId, Output};
use rockfish_core::remoting::RemotingCommand;
use rockfish_core::remoting::codes::{request, response};
use rockfish_sim::harness::broker::BrokerHarness;
use rockfish_store::record::{HostAddr, StoredRecord};
use rockfish_store::{MemDisk, StoreConfig};

const P: ConnId = ConnId(1);
const C: ConnId = ConnId(2);

rockfish_sim::broker_harness!(H);

impl H {
    fn start(flush: FlushDiskType, disk: MemDisk, now: u64) -> H {
        let config = BrokerConfig {
            flush_disk_type: flush,
            namesrv_addrs: vec![],
            ..BrokerConfig::default()
        };
        let mut h = BrokerHarness::start(config, StoreConfig::small(), disk, now);
        h.connect(P, HostAddr::V4([10, 0, 0, 9], 5555));
        h.connect(C, HostAddr::V4([10, 0, 0, 8], 6666));
        H(h)
    }
    /// Sends one message to TopicA's queue 0; returns the outputs.
    fn send(&mut self, body: &str) -> Vec<Output> {
        let cmd = self.send_v2("TopicA", 0, &[("UNIQ_KEY", body)], body.as_bytes());
        self.call(P, cmd)
    }
    fn pull_cmd(&mut self, offset: u64, sys_flag: i32) -> RemotingCommand {
        self.req(request::PULL_MESSAGE)
            .with_ext("consumerGroup", "CG")
            .with_ext("topic", "TopicA")
            .with_ext("queueId", 0)
            .with_ext("queueOffset", offset)
            .with_ext("maxMsgNums", 32)
            .with_ext("sysFlag", sys_flag)
            .with_ext("commitOffset", 0)
            .with_ext("suspendTimeoutMillis", 15_000)
            .with_ext("subscription", "*")
            .with_ext("subVersion", 0)
    }
    /// A pull that is answered at once (subscription flag only): code, bodies, next, max.
    fn pull(&mut self, offset: u64) -> (i32, Vec<String>, u64, u64) {
        let cmd = self.pull_cmd(offset, 4);
        let (resp, records) = self.one(C, cmd);
        let bodies = records
            .into_iter()
            .map(|b| {
                let r = StoredRecord::parse(b, None).unwrap();
                String::from_utf8(r.body().to_vec()).unwrap()
            })
            .collect();
        let ext = |k| resp.ext(k).unwrap().parse::<u64>().unwrap();
        (resp.code, bodies, ext("nextBeginOffset"), ext("maxOffset"))
    }
    fn max_offset(&mut self) -> u64 {
        let cmd = self
            .req(request::GET_MAX_OFFSET)
            .with_ext("topic", "TopicA")
            .with_ext("queueId", 0);
        self.one(C, cmd).0.ext("offset").unwrap().parse().unwrap()
    }
    fn commit(&mut self, conn: ConnId, offset: u64) {
        let cmd = self
            .req(request::UPDATE_CONSUMER_OFFSET)
            .with_ext("consumerGroup", "CG")
            .with_ext("topic", "TopicA")
            .with_ext("queueId", 0)
            .with_ext("commitOffset", offset);
        assert_eq!(self.one(conn, cmd).0.code, response::SUCCESS);
    }
    fn committed(&mut self) -> u64 {
        let cmd = self
            .req(request::QUERY_CONSUMER_OFFSET)
            .with_ext("consumerGroup", "CG")
            .with_ext("topic", "TopicA")
            .with_ext("queueId", 0);
        self.one(C, cmd).0.ext("offset").unwrap().parse().unwrap()
    }
}

fn flush_of(out: &[Output]) -> Option<u64> {
    out.iter().find_map(|o| match o {
        Output::Flush { upto } => Some(*upto),
        _ => None,
    })
}

#[test]
fn sync_flush_serves_only_durable_messages_and_wakes_held_pulls_on_flush() {
    let mut h = H::start(FlushDiskType::Sync, MemDisk::new(1), 0);
    let first = flush_of(&h.send("m0")).expect("a flush for the first send");
    let second = flush_of(&h.send("m1")).expect("a second flush, queued behind the first");
    assert!(
        flush_of(&h.send("m2")).is_none(),
        "two flushes in flight; m2 waits"
    );
    // Nothing is durable: nothing is served, and every offset says so.
    assert_eq!(h.pull(0), (response::PULL_NOT_FOUND, vec![], 0, 0));
    assert_eq!(h.max_offset(), 0);
    // A long poll is held; the flush that makes m0 durable wakes it with m0 alone.
    let held = h.pull_cmd(0, 2 | 4);
    assert!(h.call(C, held.clone()).is_empty());
    h.b.run_flush(first, 1);
    let out = h.drain();
    let (resp, records) =
        BrokerHarness::response(&out, C, held.opaque).expect("woken by the flush");
    assert_eq!((resp.code, records.len()), (response::SUCCESS, 1));
    assert_eq!(resp.ext("nextBeginOffset"), Some("1"));
    assert_eq!(resp.ext("maxOffset"), Some("1"));
    assert_eq!(h.max_offset(), 1);
    assert_eq!(
        h.pull(0),
        (response::SUCCESS, vec!["m0".to_string()], 1, 1),
        "m1 and m2 are appended but not durable: not served, not counted"
    );
    assert_eq!(h.pull(1), (response::PULL_NOT_FOUND, vec![], 1, 1));
    let third = flush_of(&out).expect("m2's flush, asked once the first is done");
    h.b.run_flush(second, 2);
    h.drain();
    assert_eq!(
        h.pull(0),
        (response::SUCCESS, vec!["m0".into(), "m1".into()], 2, 2)
    );
    h.b.run_flush(third, 3);
    h.drain();
    assert_eq!(
        h.pull(0),
        (
            response::SUCCESS,
            vec!["m0".into(), "m1".into(), "m2".into()],
            3,
            3
        )
    );
}

#[test]
fn sync_flush_flushes_a_oneway_send_that_arrived_during_a_flush() {
    // Nobody waits for a oneway send, but under SYNC_FLUSH no consumer sees it until it is
    // durable: a flush that ends must start the next one for it, not leave it to whatever
    // flushes next (found by the simulator's delivery-latency checker: 4.3 s).
    let mut h = H::start(FlushDiskType::Sync, MemDisk::new(1), 0);
    let first = flush_of(&h.send("m0")).expect("a flush for the first send");
    let second = flush_of(&h.send("m1")).expect("a second flush");
    let mut cmd = h.send_v2("TopicA", 0, &[("UNIQ_KEY", "m2")], b"m2");
    cmd.flag |= rockfish_core::remoting::command::FLAG_ONEWAY;
    assert!(flush_of(&h.call(P, cmd)).is_none(), "two flushes in flight");
    h.b.run_flush(first, 1);
    let out = h.drain();
    let third = flush_of(&out).expect("the oneway send is flushed next");
    h.b.run_flush(second, 2);
    h.b.run_flush(third, 3);
    h.drain();
    assert_eq!(
        h.pull(0),
        (
            response::SUCCESS,
            vec!["m0".into(), "m1".into(), "m2".into()],
            3,
            3
        )
    );
}

#[test]
fn async_flush_serves_on_append() {
    let mut h = H::start(FlushDiskType::Async, MemDisk::new(1), 0);
    h.send("m0");
    assert_eq!(h.pull(0), (response::SUCCESS, vec!["m0".to_string()], 1, 1));
    assert_eq!(h.max_offset(), 1);
}

#[test]
fn after_an_async_power_loss_no_offset_past_the_recovered_end_skips_a_message() {
    let disk = MemDisk::new(1);
    let mut h = H::start(FlushDiskType::Async, disk.clone(), 0);
    for i in 0..3 {
        h.send(&format!("old{i}"));
    }
    h.b.store_mut().sync().unwrap();
    for i in 3..8 {
        h.send(&format!("old{i}"));
    }
    // The consumer was served all 8 and committed 6; the last five messages are not durable.
    assert_eq!(h.pull(0).1.len(), 8);
    h.commit(C, 6);
    h.b.on_timeout(5_000);
    h.drain();
    disk.power_loss();
    // A snapshot that holds the commit, though the log it covers is lost: a broker writes
    // its snapshot only once that log is durable, but one written by a broker that did not
    // wait (or a slave's copy of its master's) may lie on the disk.
    let mut table = rockfish_store::config::ConsumerOffsetTable::default();
    table.set("TopicA", "CG", 0, 6);
    rockfish_store::config::save(
        &mut disk.clone(),
        rockfish_store::config::CONSUMER_OFFSETS_FILE,
        &table,
    )
    .unwrap();

    let mut h = H::start(FlushDiskType::Async, disk, 10_000);
    assert_eq!(h.max_offset(), 3, "three messages survived");
    assert_eq!(
        h.committed(),
        3,
        "the committed offset is corrected to the recovered end"
    );
    h.send("new3");
    // The consumer comes back with the offsets it remembers: moved back, not served past
    // new3; its stale commit is ignored.
    let (code, bodies, next, _) = h.pull(8);
    assert_eq!(
        (code, bodies, next),
        (response::PULL_OFFSET_MOVED, vec![], 3)
    );
    h.commit(C, 8);
    assert_eq!(h.committed(), 3);
    assert_eq!(h.pull(3).1, vec!["new3".to_string()]);
    // Once served from there, it is trusted as far as it was served.
    h.commit(C, 4);
    assert_eq!(h.committed(), 4);
}

//! A master and a slave broker wired by hand (no sockets): the slave learns its master from
//! its registration's answer, follows its log byte for byte, reports what it holds durably,
//! takes the master's configs and refuses writes; a SYNC_MASTER acks a send once the slave
//! holds it, refuses with SLAVE_NOT_AVAILABLE without one and FLUSH_SLAVE_TIMEOUT when the
//! slave goes quiet; consumers of a SYNC_MASTER see only what a slave holds.

use std::collections::VecDeque;

use bytes::Bytes;
use rockfish_core::broker::{Broker, BrokerConfig, BrokerRole, FlushDiskType};
use rockfish_core::machine::{ConnId, Output};
use rockfish_core::remoting::RemotingCommand;
use rockfish_core::remoting::codes::{request, response};
use rockfish_store::record::HostAddr;
use rockfish_store::{MemDisk, MessageStore, StoreConfig};

const NOW: u64 = 1_700_000_000_000;
const MASTER: &str = "10.0.0.1:10911";
const MASTER_HA: &str = "10.0.0.1:10912";
const SLAVE: &str = "10.0.0.2:10911";
const NS: &str = "10.0.0.9:9876";
/// The producer's and the consumer's connections, on either broker.
const P: ConnId = ConnId(1);
/// The slave's remoting connection to the master (config syncs), as the master sees it.
const SLAVE_ON_MASTER: ConnId = ConnId(50);

struct Pair {
    now: u64,
    master: Broker<MemDisk>,
    slave: Option<Broker<MemDisk>>,
    /// The HA stream: (master's conn, slave's conn), once dialed.
    stream: Option<(ConnId, ConnId)>,
    next_conn: u64,
    /// Answers to `P`, from the master and from the slave.
    to_client: Vec<RemotingCommand>,
    from_slave: Vec<RemotingCommand>,
    /// The slave stops reading and writing its stream (frozen) while set.
    slave_frozen: bool,
    opened: usize,
}

fn broker(config: BrokerConfig, disk: MemDisk, now: u64) -> Broker<MemDisk> {
    let (store, _) = MessageStore::open(disk, StoreConfig::small(), now).unwrap();
    Broker::new(config, store, now).unwrap()
}

impl Pair {
    fn new(role: BrokerRole, flush: FlushDiskType) -> Pair {
        Pair::with_master(BrokerConfig {
            broker_role: role,
            flush_disk_type: flush,
            ..BrokerConfig::default()
        })
    }

    /// A pair whose master runs `config` (its addresses set to the pair's); the slave uses
    /// the master's flush type.
    fn with_master(config: BrokerConfig) -> Pair {
        let flush = config.flush_disk_type;
        let master = broker(
            BrokerConfig {
                broker_addr: MASTER.into(),
                namesrv_addrs: vec![NS.into()],
                ..config
            },
            MemDisk::new(1),
            NOW,
        );
        let slave = broker(
            BrokerConfig {
                broker_addr: SLAVE.into(),
                namesrv_addrs: vec![NS.into()],
                broker_id: 1,
                broker_role: BrokerRole::Slave,
                flush_disk_type: flush,
                ..BrokerConfig::default()
            },
            MemDisk::new(2),
            NOW,
        );
        let mut pair = Pair {
            now: NOW,
            master,
            slave: Some(slave),
            stream: None,
            next_conn: 100,
            to_client: Vec::new(),
            from_slave: Vec::new(),
            slave_frozen: false,
            opened: 0,
        };
        pair.master
            .on_connect(P, HostAddr::V4([10, 0, 0, 7], 5000), NOW);
        pair.master
            .on_connect(SLAVE_ON_MASTER, HostAddr::V4([10, 0, 0, 2], 40000), NOW);
        pair.slave()
            .on_connect(P, HostAddr::V4([10, 0, 0, 7], 5001), NOW);
        pair.pump();
        pair
    }

    fn slave(&mut self) -> &mut Broker<MemDisk> {
        self.slave.as_mut().expect("the slave runs")
    }

    /// Moves every output until nothing moves.
    fn pump(&mut self) {
        for _ in 0..100_000 {
            let mut moved = false;
            let mut to_master: VecDeque<Output> =
                std::iter::from_fn(|| self.master.poll_output()).collect();
            moved |= !to_master.is_empty();
            while let Some(out) = to_master.pop_front() {
                self.master_output(out);
            }
            if let Some(s) = self.slave.as_mut() {
                let outs: Vec<Output> = std::iter::from_fn(|| s.poll_output()).collect();
                moved |= !outs.is_empty();
                for out in outs {
                    self.slave_output(out);
                }
            }
            if !moved {
                return;
            }
        }
        panic!("the pair never went quiet");
    }

    fn master_output(&mut self, out: Output) {
        let now = self.now;
        match out {
            Output::Send { conn, cmd } | Output::SendRecords { conn, cmd, .. } => {
                if conn == P {
                    self.to_client.push(cmd);
                } else if conn == SLAVE_ON_MASTER
                    && let Some(s) = self.slave.as_mut()
                {
                    s.on_command(ConnId(0), cmd, now, now);
                }
            }
            Output::SendTo { cmd, .. } => {
                // Registration: the name server says yes.
                let ok = RemotingCommand::response_to(&cmd, response::SUCCESS, None);
                self.master.on_command(ConnId(0), ok, now, now);
            }
            Output::SendBytes { conn, bytes } => {
                if self.stream.is_some_and(|(m, _)| m == conn)
                    && !self.slave_frozen
                    && let Some((_, sc)) = self.stream
                    && let Some(s) = self.slave.as_mut()
                {
                    // Split anywhere, as a socket may.
                    let mid = bytes.len() / 2;
                    s.on_stream_bytes(sc, bytes.slice(..mid), now);
                    s.on_stream_bytes(sc, bytes.slice(mid..), now);
                }
            }
            Output::Close { conn, .. } => {
                self.master.on_disconnect(conn, now);
                if let Some((m, sc)) = self.stream
                    && m == conn
                {
                    self.stream = None;
                    if let Some(s) = self.slave.as_mut() {
                        s.on_disconnect(sc, now);
                    }
                }
            }
            Output::Flush { upto } => self.master.run_flush(upto, now),
            Output::Persist { token, files } => self.master.run_persist(token, files, now),
            Output::OpenStream { .. } => panic!("a master dials no stream"),
        }
    }

    fn slave_output(&mut self, out: Output) {
        let now = self.now;
        let s = self.slave.as_mut().expect("outputs of a running slave");
        match out {
            Output::Send { conn, cmd } | Output::SendRecords { conn, cmd, .. } => {
                assert_eq!(conn, P);
                self.from_slave.push(cmd);
            }
            Output::SendTo { addr, cmd } if addr == NS => {
                let ok = RemotingCommand::response_to(&cmd, response::SUCCESS, None)
                    .with_ext("masterAddr", MASTER)
                    .with_ext("haServerAddr", MASTER_HA);
                s.on_command(ConnId(0), ok, now, now);
            }
            Output::SendTo { addr, cmd } => {
                assert_eq!(addr, MASTER, "config syncs go to the master");
                self.master.on_command(SLAVE_ON_MASTER, cmd, now, now);
            }
            Output::OpenStream { addr } => {
                assert_eq!(addr, MASTER_HA);
                self.opened += 1;
                let (m, sc) = (ConnId(self.next_conn), ConnId(self.next_conn + 1));
                self.next_conn += 2;
                s.on_stream_opened(&addr, sc, now);
                self.master
                    .on_stream_accepted(m, HostAddr::V4([10, 0, 0, 2], 40001), now);
                self.stream = Some((m, sc));
            }
            Output::SendBytes { conn, bytes } => {
                if let Some((m, sc)) = self.stream
                    && sc == conn
                    && !self.slave_frozen
                {
                    self.master.on_stream_bytes(m, bytes, now);
                }
            }
            Output::Close { conn, .. } => {
                s.on_disconnect(conn, now);
                if let Some((m, sc)) = self.stream
                    && sc == conn
                {
                    self.stream = None;
                    self.master.on_disconnect(m, now);
                }
            }
            Output::Flush { upto } => s.run_flush(upto, now),
            Output::Persist { token, files } => s.run_persist(token, files, now),
        }
    }

    fn advance(&mut self, ms: u64) {
        let to = self.now + ms;
        while self.now < to {
            let mut next = to;
            next = next.min(self.master.poll_timeout().unwrap_or(to));
            if let Some(s) = &self.slave {
                next = next.min(s.poll_timeout().unwrap_or(to));
            }
            self.now = next.max(self.now + 1).min(to);
            let now = self.now;
            self.master.on_timeout(now);
            if !self.slave_frozen
                && let Some(s) = self.slave.as_mut()
            {
                s.on_timeout(now);
            }
            self.pump();
        }
    }

    fn send_cmd(&mut self, body: &str, opaque: i32) -> RemotingCommand {
        RemotingCommand::request(request::SEND_MESSAGE_V2, opaque)
            .with_ext("a", "PG")
            .with_ext("b", "TopicA")
            .with_ext("c", "TBW102")
            .with_ext("d", 4)
            .with_ext("e", 0)
            .with_ext("f", 0)
            .with_ext("g", self.now as i64)
            .with_ext("h", 0)
            .with_ext("i", format!("UNIQ_KEY\u{1}{body}\u{2}"))
            .with_ext("j", 0)
            .with_ext("k", false)
            .with_body(Bytes::from(body.to_string()))
    }

    /// Sends to the master; the answer if there is one yet.
    fn send(&mut self, body: &str, opaque: i32) -> Option<RemotingCommand> {
        let cmd = self.send_cmd(body, opaque);
        let now = self.now;
        self.master.on_command(P, cmd, now, now);
        self.pump();
        self.answer(opaque)
    }

    fn answer(&mut self, opaque: i32) -> Option<RemotingCommand> {
        let i = self.to_client.iter().position(|c| c.opaque == opaque)?;
        Some(self.to_client.remove(i))
    }

    /// A pull (sysFlag 6: held when nothing is there; 4: answered at once).
    fn pull_cmd(&self, offset: u64, sys_flag: i32) -> RemotingCommand {
        RemotingCommand::request(request::PULL_MESSAGE, 9_000 + offset as i32)
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
}

fn log_of(store: &MessageStore<MemDisk>) -> Vec<u8> {
    store.read_replicated(0, usize::MAX).unwrap().0
}

#[test]
fn a_slave_follows_its_master_byte_for_byte_and_serves_reads() {
    let mut p = Pair::new(BrokerRole::AsyncMaster, FlushDiskType::Async);
    assert_eq!(p.opened, 1, "the slave learned its master and dialed it");
    for i in 0..200 {
        let r = p
            .send(&format!("m{i}"), i + 1)
            .expect("ASYNC_MASTER answers at once");
        assert_eq!(r.code, response::SUCCESS);
    }
    p.advance(1_000);
    let end = p.master.store().write_pos();
    assert_eq!(p.slave().store().write_pos(), end);
    let m = log_of(p.master.store());
    assert!(m == log_of(p.slave().store()), "the same log");
    assert_eq!(
        p.master.slave_acked(),
        Some(end),
        "the slave reported it durable"
    );
    assert_eq!(
        p.slave().store().max_offset("TopicA", 0),
        p.master.store().max_offset("TopicA", 0)
    );
    // A topic the master creates between two config syncs: the slave serves what it holds.
    let fresh = p.send_cmd("fresh", 500).with_ext("b", "Fresh");
    let now = p.now;
    p.master.on_command(P, fresh, now, now);
    p.advance(100);
    assert!(p.slave().topic("Fresh").is_none(), "not synced yet");
    let pull = p.pull_cmd(0, 4).with_ext("topic", "Fresh");
    let now = p.now;
    p.slave().on_command(P, pull, now, now);
    p.pump();
    let r = p.from_slave.pop().expect("answered");
    assert_eq!(r.code, response::SUCCESS, "{r:?}");
    // The slave's configs follow the master's (topics at once through the sync).
    p.advance(11_000);
    assert!(p.slave().topic("TopicA").is_some(), "topic config synced");
    // It serves pulls of what it holds.
    let pull = p.pull_cmd(0, 4);
    let now = p.now;
    p.slave().on_command(P, pull, now, now);
    p.pump();
    let r = p.from_slave.pop().expect("a pull answer");
    assert_eq!(r.code, response::SUCCESS);
    assert!(r.ext("nextBeginOffset").unwrap().parse::<u64>().unwrap() > 0);
    // It refuses writes.
    let cmd = p.send_cmd("to-slave", 77);
    p.slave().on_command(P, cmd, now, now);
    p.pump();
    let r = p.from_slave.pop().expect("an answer");
    assert_ne!(r.code, response::SUCCESS, "{r:?}");
    assert!(r.remark.unwrap().contains("slave"));
}

#[test]
fn consumer_offsets_and_subscription_groups_reach_the_slave() {
    let mut p = Pair::new(BrokerRole::AsyncMaster, FlushDiskType::Async);
    p.send("a", 1).unwrap();
    let commit = RemotingCommand::request(request::UPDATE_CONSUMER_OFFSET, 5)
        .with_ext("consumerGroup", "CG")
        .with_ext("topic", "TopicA")
        .with_ext("queueId", 0)
        .with_ext("commitOffset", 1);
    let now = p.now;
    p.master.on_command(P, commit, now, now);
    let group = RemotingCommand::request(request::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP, 7)
        .with_body(Bytes::from_static(
            br#"{"groupName":"MadeOnMaster","retryMaxTimes":"3"}"#,
        ));
    p.master.on_command(P, group, now, now);
    p.pump();
    assert_eq!(p.answer(7).unwrap().code, response::SUCCESS);
    p.advance(11_000);
    // Subscription groups follow the master's.
    let all = RemotingCommand::request(request::GET_ALL_SUBSCRIPTIONGROUP_CONFIG, 8);
    let now = p.now;
    p.slave().on_command(P, all, now, now);
    p.pump();
    let r = p.from_slave.pop().unwrap();
    let body = String::from_utf8(r.body.to_vec()).unwrap();
    assert!(body.contains("MadeOnMaster"), "{body}");
    let q = RemotingCommand::request(request::QUERY_CONSUMER_OFFSET, 6)
        .with_ext("consumerGroup", "CG")
        .with_ext("topic", "TopicA")
        .with_ext("queueId", 0);
    let now = p.now;
    p.slave().on_command(P, q, now, now);
    p.pump();
    let r = p.from_slave.pop().unwrap();
    assert_eq!(r.code, response::SUCCESS);
    assert_eq!(r.ext("offset"), Some("1"));
}

#[test]
fn sync_master_acks_once_the_slave_holds_the_message() {
    for flush in [FlushDiskType::Async, FlushDiskType::Sync] {
        let mut p = Pair::new(BrokerRole::SyncMaster, flush);
        p.advance(100);
        let r = p
            .send("x", 1)
            .expect("answered within the pump: the slave reported");
        assert_eq!(r.code, response::SUCCESS, "{flush:?}");
        assert!(p.slave().store().flushed() >= p.master.store().write_pos());
        // A frozen slave: the send waits, then FLUSH_SLAVE_TIMEOUT (stored on the master).
        p.slave_frozen = true;
        assert!(p.send("y", 2).is_none(), "waits for the slave");
        // Consumers do not see what only the master holds.
        let pull = p.pull_cmd(1, 6);
        let now = p.now;
        p.master.on_command(P, pull, now, now);
        p.pump();
        assert!(
            p.answer(9_001).is_none(),
            "the pull is held: message 1 is on the master only"
        );
        p.advance(5_000);
        let r = p.answer(2).expect("timed out");
        assert_eq!(r.code, response::FLUSH_SLAVE_TIMEOUT, "{flush:?}");
        // The master drops the silent slave: sends are refused SLAVE_NOT_AVAILABLE at once.
        p.advance(20_000);
        assert_eq!(p.master.connected_slaves(), 0);
        let r = p.send("z", 3).expect("at once");
        assert_eq!(r.code, response::SLAVE_NOT_AVAILABLE);
        // The held pull ran out of time meanwhile, finding nothing visible.
        let r = p.answer(9_001).expect("the held pull was answered");
        assert_eq!(r.code, response::PULL_NOT_FOUND);
        // Without a slave in sync, consumers see what the master holds.
        let pull = p.pull_cmd(1, 4);
        let now = p.now;
        p.master.on_command(P, pull, now, now);
        p.pump();
        let r = p.answer(9_001).expect("answered");
        assert_eq!(r.code, response::SUCCESS);
        // The slave comes back: it catches up and sends wait for it again.
        p.slave_frozen = false;
        p.advance(2_000);
        assert_eq!(p.master.connected_slaves(), 1);
        let end = p.master.store().write_pos();
        assert_eq!(p.slave().store().write_pos(), end);
        let r = p.send("w", 4).expect("acked by the slave");
        assert_eq!(r.code, response::SUCCESS);
    }
}

#[test]
fn a_sync_master_without_a_slave_refuses_with_slave_not_available() {
    let mut lone = Pair::new(BrokerRole::SyncMaster, FlushDiskType::Async);
    lone.slave = None;
    lone.stream = None;
    // A fresh master that never had a slave.
    lone.master = broker(
        BrokerConfig {
            broker_addr: MASTER.into(),
            namesrv_addrs: vec![],
            broker_role: BrokerRole::SyncMaster,
            ..BrokerConfig::default()
        },
        MemDisk::new(9),
        NOW,
    );
    lone.master
        .on_connect(P, HostAddr::V4([10, 0, 0, 7], 5000), NOW);
    let r = lone.send("x", 1).expect("at once");
    assert_eq!(r.code, response::SLAVE_NOT_AVAILABLE);
    assert!(lone.master.store().write_pos() > 0, "stored on the master");
}

#[test]
fn a_slave_restarted_resumes_where_its_log_ends() {
    let mut p = Pair::new(BrokerRole::AsyncMaster, FlushDiskType::Async);
    for i in 0..50 {
        p.send(&format!("m{i}"), i + 1).unwrap();
    }
    p.advance(500);
    // The slave's process dies; its stream closes; the master goes on.
    let s = p.slave.take().unwrap();
    let disk = s.store().disk().clone();
    drop(s);
    disk.crash();
    if let Some((m, _)) = p.stream.take() {
        let now = p.now;
        p.master.on_disconnect(m, now);
    }
    for i in 50..120 {
        p.send(&format!("m{i}"), i + 1).unwrap();
    }
    let now = p.now;
    p.slave = Some(broker(
        BrokerConfig {
            broker_addr: SLAVE.into(),
            namesrv_addrs: vec![NS.into()],
            broker_id: 1,
            broker_role: BrokerRole::Slave,
            ..BrokerConfig::default()
        },
        disk,
        now,
    ));
    p.pump();
    p.advance(2_000);
    assert!(log_of(p.master.store()) == log_of(p.slave().store()));
}

#[test]
fn a_flood_of_ha_connections_is_refused_past_the_cap() {
    let mut p = Pair::new(BrokerRole::AsyncMaster, FlushDiskType::Async);
    let now = p.now;
    // The pair's own slave holds one stream; more connect (and say nothing).
    let mut closed = 0;
    for i in 0..20u64 {
        p.master
            .on_stream_accepted(ConnId(1_000 + i), HostAddr::V4([10, 9, 9, 9], 1), now);
        while let Some(out) = p.master.poll_output() {
            if let Output::Close { conn, .. } = out {
                assert_eq!(conn, ConnId(1_000 + i));
                closed += 1;
            }
        }
    }
    let open = rockfish_core::ha::MAX_SLAVE_STREAMS as u64 - 1;
    assert_eq!(closed, 20 - open);
    // The real slave still follows.
    let r = p.send("after-flood", 1).unwrap();
    assert_eq!(r.code, response::SUCCESS);
    p.advance(100);
    assert_eq!(p.slave().store().write_pos(), p.master.store().write_pos());
}

#[test]
fn with_slave_read_enabled_a_consumer_far_behind_is_sent_to_the_slave() {
    // slaveReadEnable: a pull reading further behind the log's end than the limit is told
    // suggestWhichBrokerId = 1; one near the end, or any pull without it, is told 0.
    for enabled in [false, true] {
        let mut p = Pair::with_master(BrokerConfig {
            slave_read_enable: enabled,
            slave_read_behind_bytes: 20_000,
            ..BrokerConfig::default()
        });
        for i in 0..200 {
            p.send(&format!("m{i}"), i + 1).unwrap();
        }
        p.advance(100);
        let suggested = |p: &mut Pair, offset: u64| {
            let pull = p.pull_cmd(offset, 4);
            let now = p.now;
            p.master.on_command(P, pull, now, now);
            p.pump();
            let r = p.answer(9_000 + offset as i32).expect("answered");
            assert_eq!(r.code, response::SUCCESS);
            r.ext("suggestWhichBrokerId").unwrap().to_string()
        };
        let far = suggested(&mut p, 0);
        let last = p.master.store().max_offset("TopicA", 0) - 1;
        let near = suggested(&mut p, last);
        assert_eq!(far, if enabled { "1" } else { "0" }, "enabled={enabled}");
        assert_eq!(near, "0");
    }
}

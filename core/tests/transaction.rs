//! Transaction messages on the broker: a prepared message waits hidden as a half message;
//! END_TRANSACTION commits it into its topic or rolls it back, and records the decision.

use rockfish_core::broker::{
    BrokerConfig, TRANS_CHECK_MAX_TIME_TOPIC, TRANS_HALF_TOPIC, TRANS_OP_HALF_TOPIC, tx_flag,
};
use rockfish_core::machine::{ConnId, Output};
use rockfish_core::message::decoder::decode_messages;
use rockfish_core::message::parse_offset_msg_id;
use rockfish_core::remoting::RemotingCommand;
use rockfish_core::remoting::codes::{request, response};
use rockfish_sim::harness::broker::BrokerHarness;
use rockfish_store::record::HostAddr;
use rockfish_store::{MemDisk, StoreConfig};

const P: ConnId = ConnId(1);
const P2: ConnId = ConnId(2);
const T0: u64 = 1_700_000_000_000;

rockfish_sim::broker_harness!(H);

/// Checks after 6 s undecided, every 10 s, at most 3 times.
fn config() -> BrokerConfig {
    BrokerConfig {
        transaction_timeout_ms: 6_000,
        transaction_check_interval_ms: 10_000,
        transaction_check_max: 3,
        ..BrokerConfig::default()
    }
}

/// A check-back the broker sent: (connection, tranStateTableOffset, commitLogOffset, body).
type Check = (ConnId, u64, u64, bytes::Bytes);

impl H {
    fn new() -> H {
        H::start(MemDisk::new(1), T0)
    }
    fn start(disk: MemDisk, now: u64) -> H {
        let mut h = BrokerHarness::start(config(), StoreConfig::small(), disk, now);
        h.connect(P, HostAddr::V4([10, 0, 0, 9], 5555));
        h.connect(P2, HostAddr::V4([10, 0, 0, 10], 5555));
        H(h)
    }
    /// Registers `conn` as a producer of TxGroup.
    fn producer(&mut self, conn: ConnId, client: &str) {
        let body = format!(
            r#"{{"clientID":"{client}","producerDataSet":[{{"groupName":"TxGroup"}}],"consumerDataSet":[]}}"#
        );
        let cmd = self.req(request::HEART_BEAT).with_body(body.into_bytes());
        assert_eq!(self.one(conn, cmd).0.code, response::SUCCESS);
    }
    /// Time passes to `now`; returns the check-backs sent.
    fn at(&mut self, now: u64) -> Vec<Check> {
        self.now = now;
        self.b.on_timeout(now);
        let out = self.drain();
        out.into_iter()
            .filter_map(|o| match o {
                Output::Send { conn, cmd } if cmd.code == request::CHECK_TRANSACTION_STATE => {
                    assert!(cmd.is_oneway() && !cmd.is_response());
                    Some((
                        conn,
                        cmd.ext("tranStateTableOffset").unwrap().parse().unwrap(),
                        cmd.ext("commitLogOffset").unwrap().parse().unwrap(),
                        cmd.body.clone(),
                    ))
                }
                _ => None,
            })
            .collect()
    }
    /// Sends a prepared message; returns (commit log offset, half queue offset).
    fn prepare(&mut self, body: &str) -> (u64, u64) {
        let props = [
            ("TRAN_MSG", "true"),
            ("PGROUP", "TxGroup"),
            ("UNIQ_KEY", body),
        ];
        let cmd = self
            .send_v2("T", 1, &props, body.as_bytes())
            .with_ext("f", tx_flag::PREPARED);
        let resp = self.one(P, cmd).0;
        assert_eq!(resp.code, response::SUCCESS, "{:?}", resp.remark);
        assert_eq!(resp.ext("queueId"), Some("1"));
        let phys = parse_offset_msg_id(resp.ext("msgId").unwrap()).unwrap().1;
        (phys, resp.ext("queueOffset").unwrap().parse().unwrap())
    }
    fn end_cmd(&mut self, phys: u64, queue_offset: u64, decision: i32) -> RemotingCommand {
        self.req(request::END_TRANSACTION)
            .with_ext("producerGroup", "TxGroup")
            .with_ext("tranStateTableOffset", queue_offset)
            .with_ext("commitLogOffset", phys)
            .with_ext("commitOrRollback", decision)
            .with_ext("msgId", "x")
            .with_ext("fromTransactionCheck", false)
    }
    fn end(&mut self, phys: u64, queue_offset: u64, decision: i32) -> i32 {
        let cmd = self.end_cmd(phys, queue_offset, decision);
        self.one(P, cmd).0.code
    }
}

#[test]
fn a_prepared_message_waits_hidden_and_a_commit_shows_it_once() {
    let mut h = H::new();
    let (phys, q) = h.prepare("tx1");
    assert!(h.records("T", 1).is_empty(), "no consumer sees a half");
    let half = h.records(TRANS_HALF_TOPIC, 0);
    assert_eq!(half.len(), 1);
    assert_eq!(half[0].property("REAL_TOPIC"), Some(&b"T"[..]));
    assert_eq!(
        half[0].sys_flag() & tx_flag::MASK,
        tx_flag::NOT,
        "queued in the half topic"
    );
    let cmd = h.end_cmd(phys, q, tx_flag::COMMIT);
    assert_eq!(h.one(P, cmd).0.code, response::SUCCESS);
    let got = h.records("T", 1);
    assert_eq!(got.len(), 1, "committed into its topic and queue");
    assert_eq!(&got[0].body()[..], b"tx1");
    assert_eq!(got[0].sys_flag() & tx_flag::MASK, tx_flag::COMMIT);
    assert_eq!(got[0].prepared_transaction_offset(), phys as i64);
    let ops = h.records(TRANS_OP_HALF_TOPIC, 0);
    assert_eq!(ops.len(), 1, "the decision is recorded");
    assert_eq!(&ops[0].body()[..], q.to_string().as_bytes());
    assert_eq!(ops[0].property("TAGS"), Some(&b"d"[..]));
}

#[test]
fn a_rollback_shows_nothing_and_records_the_decision() {
    let mut h = H::new();
    let (phys, q) = h.prepare("tx2");
    let cmd = h.end_cmd(phys, q, tx_flag::ROLLBACK);
    assert_eq!(h.one(P, cmd).0.code, response::SUCCESS);
    assert!(h.records("T", 1).is_empty());
    assert_eq!(h.records(TRANS_OP_HALF_TOPIC, 0).len(), 1);
}

#[test]
fn an_unknown_state_is_left_for_the_check_and_bad_ends_are_refused() {
    let mut h = H::new();
    let (phys, q) = h.prepare("tx3");
    let cmd = h.end_cmd(phys, q, 0);
    let out = h.call(P, cmd);
    assert!(out.is_empty(), "UNKNOW: no answer, nothing decided");
    // A plain message's offset: a record, but no half.
    let cmd = h.send_v2("T", 0, &[], b"plain");
    let r = h.one(P, cmd).0;
    let plain = parse_offset_msg_id(r.ext("msgId").unwrap()).unwrap().1;
    for (p, o, why) in [
        (phys, q + 1, "wrong table offset"),
        (phys + 3, q, "not a record"),
        (plain, 0, "not a half message"),
    ] {
        let cmd = h.end_cmd(p, o, tx_flag::COMMIT);
        assert_eq!(h.one(P, cmd).0.code, response::SYSTEM_ERROR, "{why}");
    }
    let wrong_group = h
        .end_cmd(phys, q, tx_flag::COMMIT)
        .with_ext("producerGroup", "Other");
    assert_eq!(h.one(P, wrong_group).0.code, response::SYSTEM_ERROR);
    assert!(
        h.records(TRANS_OP_HALF_TOPIC, 0).is_empty(),
        "nothing decided"
    );
    let cmd = h.send_v2(TRANS_HALF_TOPIC, 0, &[], b"x");
    assert_eq!(
        h.one(P, cmd).0.code,
        response::NO_PERMISSION,
        "a system topic"
    );
}

#[test]
fn an_undecided_half_is_checked_back_and_the_answer_commits_it_once() {
    let mut h = H::new();
    h.producer(P, "c1");
    let (phys, q) = h.prepare("tx4");
    assert!(h.at(T0 + 5_000).is_empty(), "not yet due for a check");
    let checks = h.at(T0 + 10_000);
    assert_eq!(checks.len(), 1, "one check, to the group's producer");
    let (conn, copy_q, copy_phys, body) = checks[0].clone();
    assert_eq!(conn, P);
    assert!(
        copy_q > q && copy_phys > phys,
        "the check names the half put back"
    );
    let msgs = decode_messages(&body).expect("the body is a stored message");
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].topic(), "T", "shown with its real topic");
    assert_eq!(msgs[0].queue_id(), 1);
    assert_eq!(&msgs[0].body()[..], b"tx4");
    assert_eq!(msgs[0].property("TRANSACTION_CHECK_TIMES"), Some(&b"1"[..]));
    assert_eq!(msgs[0].property("PGROUP"), Some(&b"TxGroup"[..]));
    // The producer's late end for the first half: handed on to the check, refused.
    assert_eq!(h.end(phys, q, tx_flag::COMMIT), response::SYSTEM_ERROR);
    assert!(h.records("T", 1).is_empty());
    // The check's answer commits; a repeat of it is refused.
    let answer = h
        .end_cmd(copy_phys, copy_q, tx_flag::COMMIT)
        .with_ext("fromTransactionCheck", true);
    assert_eq!(h.one(P, answer).0.code, response::SUCCESS);
    assert_eq!(
        h.end(copy_phys, copy_q, tx_flag::COMMIT),
        response::SYSTEM_ERROR
    );
    assert_eq!(
        h.end(copy_phys, copy_q, tx_flag::ROLLBACK),
        response::SYSTEM_ERROR
    );
    let got = h.records("T", 1);
    assert_eq!(got.len(), 1, "committed once");
    assert_eq!(got[0].prepared_transaction_offset(), copy_phys as i64);
    assert!(h.at(T0 + 30_000).is_empty(), "decided: never checked again");
    assert_eq!(h.b.transactions_progress(), copy_q + 1);
}

#[test]
fn the_check_goes_to_another_producer_when_the_sender_is_gone() {
    let mut h = H::new();
    h.producer(P, "c1");
    h.producer(P2, "c2");
    h.prepare("tx5");
    let now = h.now;
    h.b.on_disconnect(P, now);
    let checks = h.at(T0 + 10_000);
    assert_eq!(checks.len(), 1);
    assert_eq!(checks[0].0, P2, "the live producer of the group answers");
}

#[test]
fn a_half_undecided_through_its_checks_is_given_up() {
    let mut h = H::new();
    h.producer(P, "c1");
    h.prepare("tx6");
    let mut sent = 0;
    for round in 1..=6 {
        sent += h.at(T0 + round * 10_000).len();
    }
    assert_eq!(sent, 3, "transactionCheckMax checks");
    let given_up = h.records(TRANS_CHECK_MAX_TIME_TOPIC, 0);
    assert_eq!(given_up.len(), 1);
    assert_eq!(&given_up[0].body()[..], b"tx6");
    assert!(
        h.b.topic(TRANS_CHECK_MAX_TIME_TOPIC).is_some(),
        "inspectable"
    );
    assert_eq!(
        h.records(TRANS_HALF_TOPIC, 0).len(),
        4,
        "the half and 3 copies"
    );
    assert!(h.records("T", 1).is_empty());
}

#[test]
fn a_restart_keeps_what_is_decided_and_checks_what_is_not() {
    let mut h = H::new();
    h.producer(P, "c1");
    let (p1, q1) = h.prepare("decided");
    let (_, q2) = h.prepare("open");
    let (p3, q3) = h.prepare("decided-later");
    assert_eq!(h.end(p3, q3, tx_flag::ROLLBACK), response::SUCCESS);
    assert_eq!(h.end(p1, q1, tx_flag::COMMIT), response::SUCCESS);
    let disk = h.disk.clone();
    disk.crash();
    let mut h = H::start(disk, T0 + 1_000);
    h.producer(P, "c1");
    assert_eq!(
        h.end(p1, q1, tx_flag::COMMIT),
        response::SYSTEM_ERROR,
        "decided before the crash"
    );
    assert_eq!(
        h.end(p3, q3, tx_flag::COMMIT),
        response::SYSTEM_ERROR,
        "rolled back before the crash"
    );
    let checks = h.at(T0 + 11_000);
    assert_eq!(checks.len(), 1, "only the open one is checked");
    let msgs = decode_messages(&checks[0].3).unwrap();
    assert_eq!(&msgs[0].body()[..], b"open");
    assert_eq!(h.records("T", 1).len(), 1);
    assert!(q2 < checks[0].1);
}

#[test]
fn a_commit_whose_record_of_decision_was_lost_is_not_committed_again() {
    let mut h = H::new();
    h.producer(P, "c1");
    h.at(T0 + 10_000); // a round with nothing to check
    let (phys, q) = h.prepare("lost-op");
    let checks = h.at(T0 + 20_000);
    let (_, copy_q, copy_phys, _) = checks[0].clone();
    let answer = h.end_cmd(copy_phys, copy_q, tx_flag::COMMIT);
    assert_eq!(h.one(P, answer).0.code, response::SUCCESS);
    // The op record, the log's last, is lost (torn by a crash): the commit before it stays.
    let op = h.records(TRANS_OP_HALF_TOPIC, 0).remove(0);
    let disk = h.disk.clone();
    disk.crash();
    let log = disk
        .paths()
        .into_iter()
        .find(|p| p.starts_with("commitlog/"))
        .unwrap();
    disk.corrupt(&log, op.physical_offset() + 4, 3).unwrap();
    let mut h = H::start(disk, T0 + 21_000);
    h.producer(P, "c1");
    assert_eq!(h.records("T", 1).len(), 1, "the commit survived");
    assert!(
        h.records(TRANS_OP_HALF_TOPIC, 0).is_empty(),
        "its op record did not"
    );
    // The copy is checked no more: its commit is found by its key.
    let _ = (phys, q);
    let later = h.at(T0 + 40_000);
    assert!(later.is_empty(), "{later:?}");
    assert_eq!(
        h.end(copy_phys, copy_q, tx_flag::COMMIT),
        response::SYSTEM_ERROR
    );
    assert_eq!(h.records("T", 1).len(), 1, "committed once");
}

#[test]
fn an_end_from_the_cpp_sdk_with_a_numeric_boolean_is_taken() {
    // rocketmq-client-cpp writes fromTransactionCheck as "1"/"0" (its to_string(bool)).
    let mut h = H::new();
    let (phys, q) = h.prepare("cpp");
    let cmd = h
        .end_cmd(phys, q, tx_flag::COMMIT)
        .with_ext("fromTransactionCheck", "0");
    assert_eq!(h.one(P, cmd).0.code, response::SUCCESS);
    assert_eq!(h.records("T", 1).len(), 1);
}

#[test]
fn a_half_handed_to_its_check_stays_decided_across_a_snapshot_and_a_restart() {
    let mut h = H::new();
    h.producer(P, "c1");
    let (phys, q) = h.prepare("handed-on");
    let checks = h.at(T0 + 10_000);
    let (_, copy_q, copy_phys, _) = checks[0].clone();
    let answer = h
        .end_cmd(copy_phys, copy_q, tx_flag::COMMIT)
        .with_ext("fromTransactionCheck", true);
    assert_eq!(h.one(P, answer).0.code, response::SUCCESS);
    // A consumer commits, so the offsets are snapshotted (the journal compacted past the
    // check's progress record), and no walk runs before the broker restarts.
    let commit = h
        .req(request::UPDATE_CONSUMER_OFFSET)
        .with_ext("consumerGroup", "CG")
        .with_ext("topic", "T")
        .with_ext("queueId", 1)
        .with_ext("commitOffset", 1);
    assert_eq!(h.one(P2, commit).0.code, response::SUCCESS);
    h.at(T0 + 15_000);
    let disk = h.disk.clone();
    disk.crash();
    let mut h = H::start(disk, T0 + 16_000);
    h.producer(P, "c1");
    assert!(h.b.transactions_progress() > q, "the progress survived");
    // The sender's late end for the first half: still handed on, refused.
    assert_eq!(h.end(phys, q, tx_flag::COMMIT), response::SYSTEM_ERROR);
    assert_eq!(h.records("T", 1).len(), 1, "committed once");
}

//! Transaction messages on the broker: a prepared message waits hidden as a half message;
//! END_TRANSACTION commits it into its topic or rolls it back, and records the decision.

use rockfish_core::broker::{BrokerConfig, TRANS_HALF_TOPIC, TRANS_OP_HALF_TOPIC, tx_flag};
use rockfish_core::machine::ConnId;
use rockfish_core::message::parse_offset_msg_id;
use rockfish_core::remoting::RemotingCommand;
use rockfish_core::remoting::codes::{request, response};
use rockfish_sim::harness::broker::BrokerHarness;
use rockfish_store::record::HostAddr;
use rockfish_store::{MemDisk, StoreConfig};

const P: ConnId = ConnId(1);

rockfish_sim::broker_harness!(H);

impl H {
    fn new() -> H {
        let mut h = BrokerHarness::start(
            BrokerConfig::default(),
            StoreConfig::small(),
            MemDisk::new(1),
            1_700_000_000_000,
        );
        h.connect(P, HostAddr::V4([10, 0, 0, 9], 5555));
        H(h)
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

//! SQL92 subscriptions on the broker: pulls serve exactly the matching messages, whether the
//! pull carries its expression or the group's heartbeat registered it; malformed expressions
//! are refused with SUBSCRIPTION_PARSE_FAILED (in a pull, a heartbeat, CHECK_CLIENT_CONFIG);
//! a broker without enablePropertyFilter refuses SQL92 as Apache's does.

use rockfish_core::broker::BrokerConfig;
use rockfish_core::machine::ConnId;
use rockfish_core::remoting::RemotingCommand;
use rockfish_core::remoting::codes::{request, response};
use rockfish_sim::harness::broker::BrokerHarness;
use rockfish_store::StoredRecord;
use rockfish_store::record::HostAddr;
use rockfish_store::{MemDisk, StoreConfig};

const C: ConnId = ConnId(1);
/// PULL_MESSAGE sysFlag: the pull carries its subscription.
const SUBSCRIPTION: i32 = 4;

rockfish_sim::broker_harness!(H);

impl H {
    fn new(enable: bool) -> H {
        let cfg = BrokerConfig {
            enable_property_filter: enable,
            ..BrokerConfig::default()
        };
        let mut h = BrokerHarness::start(
            cfg,
            StoreConfig::small(),
            MemDisk::new(1),
            1_700_000_000_000,
        );
        h.connect(C, HostAddr::V4([10, 0, 0, 9], 5555));
        H(h)
    }
    /// Ten messages in T queue 0: price = i * 10, TAGS TagA for even i, region only for i < 3.
    fn send_ten(&mut self) {
        for i in 0..10u32 {
            let price = (i * 10).to_string();
            let tag = if i % 2 == 0 { "TagA" } else { "TagB" };
            let mut props = vec![("TAGS", tag), ("price", price.as_str())];
            if i < 3 {
                props.push(("region", "eu"));
            }
            let body = format!("m{i}");
            let cmd = self.send_v2("T", 0, &props, body.as_bytes());
            assert_eq!(self.one(C, cmd).0.code, response::SUCCESS);
        }
    }
    fn pull_cmd(&mut self, sys_flag: i32, expression_type: &str, sub: &str) -> RemotingCommand {
        self.req(request::PULL_MESSAGE)
            .with_ext("consumerGroup", "CG")
            .with_ext("topic", "T")
            .with_ext("queueId", 0)
            .with_ext("queueOffset", 0)
            .with_ext("maxMsgNums", 32)
            .with_ext("sysFlag", sys_flag)
            .with_ext("commitOffset", 0)
            .with_ext("suspendTimeoutMillis", 0)
            .with_ext("subscription", sub)
            .with_ext("subVersion", 0)
            .with_ext("expressionType", expression_type)
    }
    /// The bodies a pull returns, or its refusal code.
    fn pull(&mut self, sys_flag: i32, sql: &str) -> Result<Vec<String>, i32> {
        let cmd = self.pull_cmd(sys_flag, "SQL92", sql);
        let (resp, records) = self.one(C, cmd);
        if resp.code != response::SUCCESS {
            return Err(resp.code);
        }
        Ok(records
            .into_iter()
            .map(|b| {
                let r = StoredRecord::parse(b, None).unwrap();
                String::from_utf8(r.body().to_vec()).unwrap()
            })
            .collect())
    }
    fn heartbeat(&mut self, group: &str, sql: &str) -> RemotingCommand {
        let body = serde_json::json!({
            "clientID": "c1",
            "producerDataSet": [],
            "consumerDataSet": [{
                "groupName": group,
                "consumeType": "CONSUME_PASSIVELY",
                "messageModel": "CLUSTERING",
                "consumeFromWhere": "CONSUME_FROM_FIRST_OFFSET",
                "subscriptionDataSet": [{
                    "topic": "T", "subString": sql, "expressionType": "SQL92",
                    "tagsSet": [], "codeSet": [], "subVersion": 1
                }],
                "unitMode": false
            }]
        });
        let cmd = self
            .req(request::HEART_BEAT)
            .with_body(serde_json::to_vec(&body).unwrap());
        self.one(C, cmd).0
    }
    fn check_client(&mut self, expression_type: &str, sql: &str) -> i32 {
        let body = serde_json::json!({
            "clientId": "c1", "group": "CG",
            "subscriptionData": {"topic": "T", "subString": sql, "expressionType": expression_type}
        });
        let cmd = self
            .req(request::CHECK_CLIENT_CONFIG)
            .with_body(serde_json::to_vec(&body).unwrap());
        self.one(C, cmd).0.code
    }
}

fn names(v: &[u32]) -> Vec<String> {
    v.iter().map(|i| format!("m{i}")).collect()
}

#[test]
fn a_pull_serves_exactly_the_matching_messages() {
    let mut h = H::new(true);
    h.send_ten();
    let cases: [(&str, &[u32]); 7] = [
        ("price > 50", &[6, 7, 8, 9]),
        ("price BETWEEN 20 AND 40 AND TAGS = 'TagA'", &[2, 4]),
        ("TAGS IN ('TagB') AND price < 40", &[1, 3]),
        ("region = 'eu' OR price >= 90", &[0, 1, 2, 9]),
        ("region IS NULL AND price <= 30", &[3]),
        (
            "NOT (region = 'eu') OR region IS NULL",
            &[3, 4, 5, 6, 7, 8, 9],
        ),
        ("TRUE", &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]),
    ];
    for (sql, want) in cases {
        assert_eq!(h.pull(SUBSCRIPTION, sql), Ok(names(want)), "{sql}");
    }
    // Nothing matches: answered like nothing new.
    assert_eq!(
        h.pull(SUBSCRIPTION, "price > 1000"),
        Err(response::PULL_NOT_FOUND)
    );
}

#[test]
fn a_heartbeat_registers_the_expression_and_refuses_a_malformed_one() {
    let mut h = H::new(true);
    h.send_ten();
    assert_eq!(h.heartbeat("CG", "price >= 80").code, response::SUCCESS);
    assert_eq!(
        h.pull(0, "ignored"),
        Ok(names(&[8, 9])),
        "the group's expression"
    );
    let bad = h.heartbeat("CG", "price >> 80");
    assert_eq!(
        bad.code,
        response::SUBSCRIPTION_PARSE_FAILED,
        "{:?}",
        bad.remark
    );
    assert_eq!(
        h.pull(0, "ignored"),
        Ok(names(&[8, 9])),
        "the refused heartbeat changed nothing"
    );
    assert_eq!(
        h.pull(SUBSCRIPTION, "price >"),
        Err(response::SUBSCRIPTION_PARSE_FAILED)
    );
}

#[test]
fn check_client_config_answers_as_apache() {
    let mut h = H::new(true);
    assert_eq!(h.check_client("TAG", "a || b"), response::SUCCESS);
    assert_eq!(h.check_client("SQL92", "a > 1"), response::SUCCESS);
    assert_eq!(
        h.check_client("SQL92", "a >"),
        response::SUBSCRIPTION_PARSE_FAILED
    );
    assert_eq!(
        h.check_client("XPATH", "/a"),
        response::SUBSCRIPTION_PARSE_FAILED
    );
    let mut off = H::new(false);
    assert_eq!(off.check_client("TAG", "*"), response::SUCCESS);
    assert_eq!(off.check_client("SQL92", "a > 1"), response::SYSTEM_ERROR);
    off.send_ten();
    assert_eq!(
        off.pull(SUBSCRIPTION, "price > 1"),
        Err(response::SYSTEM_ERROR)
    );
}

#[test]
fn enormous_and_deep_expressions_are_refused_at_once() {
    let mut h = H::new(true);
    h.send_ten();
    let huge = "price > 1 OR ".repeat(100_000) + "price > 1";
    let deep = format!("{}price > 1{}", "(".repeat(50_000), ")".repeat(50_000));
    for sql in [&huge, &deep] {
        assert_eq!(
            h.pull(SUBSCRIPTION, sql),
            Err(response::SUBSCRIPTION_PARSE_FAILED)
        );
        assert_eq!(
            h.check_client("SQL92", sql),
            response::SUBSCRIPTION_PARSE_FAILED
        );
    }
    assert_eq!(
        h.pull(SUBSCRIPTION, "price = 0"),
        Ok(names(&[0])),
        "still serving"
    );
}

#[test]
fn an_unknown_expression_type_is_registered_and_its_pulls_refused() {
    // As Apache: the heartbeat is taken (the client stays a member), its pulls fail.
    let mut h = H::new(true);
    h.send_ten();
    let body = serde_json::json!({
        "clientID": "c1",
        "consumerDataSet": [{
            "groupName": "CG",
            "subscriptionDataSet": [{"topic": "T", "subString": "/a", "expressionType": "XPATH"}]
        }]
    });
    let cmd = h
        .req(request::HEART_BEAT)
        .with_body(serde_json::to_vec(&body).unwrap());
    assert_eq!(h.one(C, cmd).0.code, response::SUCCESS);
    assert_eq!(h.pull(0, "ignored"), Err(response::SUBSCRIPTION_NOT_EXIST));
}

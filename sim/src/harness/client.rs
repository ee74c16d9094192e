//! One client machine driven by hand, its peers played by the test: what it asks, answers
//! to it, and the small cluster facts (a one-broker route, a consumer config) tests share.

use std::collections::BTreeMap;

use rockfish_core::consumer::{ConsumeFrom, Consumer, ConsumerConfig};
use rockfish_core::machine::{ClientMachine, Output};
use rockfish_core::protocol::{BrokerData, QueueData, TopicRouteData};
use rockfish_core::remoting::RemotingCommand;
use rockfish_core::remoting::codes::{request, response};

pub const NS: &str = "ns:9876";
/// The one broker of `one_queue_route`, named "b".
pub const BROKER: &str = "b:10911";

/// Every request the client put out, in order. A client only ever sends (`SendTo`): any
/// other output breaks the machine contract.
pub fn requests<M: ClientMachine>(c: &mut M) -> Vec<RemotingCommand> {
    std::iter::from_fn(|| c.poll_output())
        .map(|o| match o {
            Output::SendTo { cmd, .. } => cmd,
            other => panic!("a client emitted {}", other.kind()),
        })
        .collect()
}

/// A bare answer to `req` with `code`.
pub fn answer(req: &RemotingCommand, code: i32) -> RemotingCommand {
    RemotingCommand::response_to(req, code, None)
}

/// The first request with `code`.
pub fn find(reqs: &[RemotingCommand], code: i32) -> Option<RemotingCommand> {
    reqs.iter().find(|r| r.code == code).cloned()
}

/// Answers each GET_CONSUMER_LIST_BY_GROUP among `reqs` with `members`.
pub fn answer_members(c: &mut Consumer, reqs: &[RemotingCommand], members: &[&str], now: u64) {
    for r in reqs
        .iter()
        .filter(|r| r.code == request::GET_CONSUMER_LIST_BY_GROUP)
    {
        let body = serde_json::json!({ "consumerIdList": members });
        let body = serde_json::to_vec(&body).expect("JSON");
        c.on_command(answer(r, response::SUCCESS).with_body(body), now);
    }
}

/// Topic "T" on one broker "b" (`BROKER`) with one read and write queue.
pub fn one_queue_route() -> TopicRouteData {
    TopicRouteData {
        queue_datas: vec![QueueData {
            broker_name: "b".into(),
            read_queue_nums: 1,
            write_queue_nums: 1,
            perm: 6,
            topic_sys_flag: 0,
        }],
        broker_datas: vec![BrokerData::new(
            "C",
            "b",
            BTreeMap::from([(0, BROKER.to_string())]),
        )],
        ..TopicRouteData::default()
    }
}

/// Consumer `id` of group "G" on topic "T" (every tag), from the first offset.
pub fn consumer_config(id: &str) -> ConsumerConfig {
    ConsumerConfig {
        group: "G".into(),
        client_id: id.into(),
        namesrv_addrs: vec![NS.into()],
        subscriptions: BTreeMap::from([("T".to_string(), "*".to_string())]),
        consume_from: ConsumeFrom::FirstOffset,
        ..ConsumerConfig::default()
    }
}

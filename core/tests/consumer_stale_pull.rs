//! A pull answered after its queue was dropped by a rebalance and assigned again must not
//! move the new incarnation's offset (found by the simulator: swarm seed 1649 skipped 32
//! messages that way).

use std::collections::BTreeMap;

use rockfish_core::consumer::{ConsumeFrom, Consumer, ConsumerConfig};
use rockfish_core::machine::Output;
use rockfish_core::protocol::{BrokerData, QueueData, TopicRouteData, to_body};
use rockfish_core::remoting::RemotingCommand;
use rockfish_core::remoting::codes::{request, response};

const NS: &str = "ns:9876";
const BROKER: &str = "b:10911";

fn requests(c: &mut Consumer) -> Vec<RemotingCommand> {
    std::iter::from_fn(|| c.poll_output())
        .filter_map(|o| match o {
            Output::SendTo { cmd, .. } => Some(cmd),
            _ => None,
        })
        .collect()
}

fn answer(req: &RemotingCommand, code: i32) -> RemotingCommand {
    RemotingCommand::response_to(req, code, None)
}

fn ids(c: &mut Consumer, reqs: &[RemotingCommand], members: &[&str], now: u64) {
    for r in reqs
        .iter()
        .filter(|r| r.code == request::GET_CONSUMER_LIST_BY_GROUP)
    {
        let body = serde_json::json!({ "consumerIdList": members });
        let resp = answer(r, response::SUCCESS).with_body(serde_json::to_vec(&body).unwrap());
        c.on_command(resp, now);
    }
}

fn find(reqs: &[RemotingCommand], code: i32) -> Option<RemotingCommand> {
    reqs.iter().find(|r| r.code == code).cloned()
}

#[test]
fn a_stale_pull_does_not_move_a_reassigned_queue() {
    let config = ConsumerConfig {
        group: "G".into(),
        client_id: "c1".into(),
        namesrv_addrs: vec![NS.into()],
        subscriptions: BTreeMap::from([("T".to_string(), "*".to_string())]),
        consume_from: ConsumeFrom::FirstOffset,
        ..ConsumerConfig::default()
    };
    let mut c = Consumer::new(config, BTreeMap::new(), 0);
    let mut now = 0;
    c.on_timeout(now);
    let route = find(&requests(&mut c), request::GET_ROUTEINFO_BY_TOPIC).expect("asks the route");
    let data = TopicRouteData {
        order_topic_conf: None,
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
    };
    c.on_command(
        answer(&route, response::SUCCESS).with_body(to_body(&data)),
        now,
    );
    // Alone in the group: q0 is ours. Its offset is 0; the first pull goes out.
    now += 10;
    c.on_timeout(now);
    let reqs = requests(&mut c);
    ids(&mut c, &reqs, &["c1"], now);
    let query = find(&requests(&mut c), request::QUERY_CONSUMER_OFFSET).expect("asks the offset");
    c.on_command(answer(&query, response::SUCCESS).with_ext("offset", 0), now);
    let stale = find(&requests(&mut c), request::PULL_MESSAGE).expect("pulls");
    assert_eq!(stale.ext("queueOffset"), Some("0"));
    // c0 joins and takes q0; then c0 leaves and q0 comes back to us, a new incarnation that
    // asks its offset again.
    now += 10;
    c.on_command(
        RemotingCommand::request(request::NOTIFY_CONSUMER_IDS_CHANGED, 1),
        now,
    );
    c.on_timeout(now);
    let reqs = requests(&mut c);
    ids(&mut c, &reqs, &["c0", "c1"], now);
    let _ = requests(&mut c);
    now += 10;
    c.on_command(
        RemotingCommand::request(request::NOTIFY_CONSUMER_IDS_CHANGED, 2),
        now,
    );
    c.on_timeout(now);
    let reqs = requests(&mut c);
    ids(&mut c, &reqs, &["c1"], now);
    let requery = find(&requests(&mut c), request::QUERY_CONSUMER_OFFSET).expect("asks again");
    // The first incarnation's pull is answered now, claiming the queue moved to 32.
    c.on_command(
        answer(&stale, response::PULL_NOT_FOUND).with_ext("nextBeginOffset", 32),
        now,
    );
    c.on_command(
        answer(&requery, response::SUCCESS).with_ext("offset", 0),
        now,
    );
    let pulls: Vec<_> = requests(&mut c)
        .into_iter()
        .filter(|r| r.code == request::PULL_MESSAGE)
        .collect();
    assert_eq!(pulls.len(), 1, "one pull for the new incarnation");
    assert_eq!(
        pulls[0].ext("queueOffset"),
        Some("0"),
        "the stale answer must not skip offsets 0..31"
    );
}

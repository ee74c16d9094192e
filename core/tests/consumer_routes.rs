//! How a consumer follows its topic's route: a broker that appears in it hears from the
//! consumer at once, not at the next heartbeat round.

use std::collections::BTreeMap;

use rockfish_core::consumer::Consumer;
use rockfish_core::machine::Output;
use rockfish_core::protocol::BrokerData;
use rockfish_core::remoting::RemotingCommand;
use rockfish_core::remoting::codes::{request, response};
use rockfish_sim::harness::client::{BROKER, answer, consumer_config, find, one_queue_route};

const SECOND: &str = "b2:10911";

/// Every request put out, with the address it went to.
fn sent(c: &mut Consumer) -> Vec<(String, RemotingCommand)> {
    std::iter::from_fn(|| c.poll_output())
        .map(|o| match o {
            Output::SendTo { addr, cmd } => (addr, cmd),
            other => panic!("a client emitted {}", other.kind()),
        })
        .collect()
}

fn route_answer(req: &RemotingCommand, brokers: &[(&str, &str)]) -> RemotingCommand {
    let mut route = one_queue_route();
    route.broker_datas = brokers
        .iter()
        .map(|(name, addr)| BrokerData::new("C", name, BTreeMap::from([(0, addr.to_string())])))
        .collect();
    let body = serde_json::to_vec(&route).expect("JSON");
    answer(req, response::SUCCESS).with_body(body)
}

#[test]
fn a_broker_back_in_the_route_gets_a_heartbeat_at_once() {
    // Brokers answer rebalances with the members that heartbeat them: a member a broker
    // does not know of makes the group's views of its queues disagree (two owners, double
    // deliveries) until that member's next heartbeat round, 30 s later.
    let mut config = consumer_config("c1");
    config.route_refresh_ms = 10_000;
    let mut c = Consumer::new(config, BTreeMap::new(), 0);
    c.on_timeout(0);
    let out = sent(&mut c);
    let query = out
        .iter()
        .find(|(_, r)| r.code == request::GET_ROUTEINFO_BY_TOPIC)
        .expect("a route query")
        .1
        .clone();
    c.on_command(route_answer(&query, &[("b", BROKER)]), 1);
    c.on_timeout(1);
    let out = sent(&mut c);
    assert!(
        out.iter()
            .any(|(a, r)| a == BROKER && r.code == request::HEART_BEAT),
        "the first route's broker hears a heartbeat at once"
    );
    // The next route poll (10 s, before the 30 s heartbeat round) lists a second broker.
    c.on_timeout(10_001);
    let out = sent(&mut c);
    let reqs: Vec<RemotingCommand> = out.iter().map(|(_, r)| r.clone()).collect();
    let query = find(&reqs, request::GET_ROUTEINFO_BY_TOPIC).expect("a route poll");
    assert!(
        find(&reqs, request::HEART_BEAT).is_none(),
        "no heartbeat round is due yet"
    );
    c.on_command(
        route_answer(&query, &[("b", BROKER), ("b2", SECOND)]),
        10_002,
    );
    c.on_timeout(10_002);
    let out = sent(&mut c);
    assert!(
        out.iter()
            .any(|(a, r)| a == SECOND && r.code == request::HEART_BEAT),
        "the broker new in the route hears a heartbeat at once: {:?}",
        out.iter().map(|(a, r)| (a, r.code)).collect::<Vec<_>>()
    );
}

/// A queue whose broker group is in no route when its starting offset is due (its master
/// died, the next not elected yet) is asked again once a route names a broker: left alone it
/// stayed assigned and never pulled, until the assignment changed (found by the simulator's
/// failover scenario: a consumer held two queues idle for the whole run).
#[test]
fn a_start_offset_that_could_not_be_asked_is_asked_once_a_route_names_a_broker() {
    let mut config = consumer_config("c1");
    config.route_refresh_ms = 1_000;
    let mut c = Consumer::new(config, BTreeMap::new(), 0);
    // What the name server says of group "b": its master, then nothing, then a new master.
    let mut master: Option<&str> = Some(BROKER);
    let route = |req: &RemotingCommand, master: Option<&str>| {
        let mut route = one_queue_route();
        route.broker_datas = vec![BrokerData::new(
            "C",
            "b",
            master
                .map(|m| BTreeMap::from([(0, m.to_string())]))
                .unwrap_or_default(),
        )];
        answer(req, response::SUCCESS).with_body(serde_json::to_vec(&route).expect("JSON"))
    };
    let mut now = 0;
    // Runs the consumer until it asks a queue's offset (returning where), or `until`.
    let run = |c: &mut Consumer, master: Option<&str>, now: &mut u64, until: u64| loop {
        c.on_timeout(*now);
        for (addr, req) in sent(c) {
            match req.code {
                request::GET_ROUTEINFO_BY_TOPIC => c.on_command(route(&req, master), *now),
                request::GET_CONSUMER_LIST_BY_GROUP => {
                    let body = serde_json::to_vec(&serde_json::json!({ "consumerIdList": ["c1"] }))
                        .expect("JSON");
                    c.on_command(answer(&req, response::SUCCESS).with_body(body), *now);
                }
                request::QUERY_CONSUMER_OFFSET => return Some(addr),
                _ => {}
            }
        }
        *now += 100;
        if *now > until {
            return None;
        }
    };
    assert_eq!(
        run(&mut c, master, &mut now, 30_000).as_deref(),
        Some(BROKER),
        "the queue's offset is asked of its master"
    );
    // The master dies before answering; the next route poll lists no broker of the group.
    master = None;
    let polled = now + 2_000;
    assert_eq!(run(&mut c, master, &mut now, polled), None);
    c.on_peer_lost(BROKER, now);
    let later = now + 5_000;
    assert_eq!(run(&mut c, master, &mut now, later), None);
    // A new master is elected and routed: the offset is asked of it.
    master = Some(SECOND);
    let later = now + 10_000;
    assert_eq!(
        run(&mut c, master, &mut now, later).as_deref(),
        Some(SECOND),
        "the offset that could not be asked is asked once a route names a broker"
    );
}

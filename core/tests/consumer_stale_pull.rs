//! A pull answered after its queue was dropped by a rebalance and assigned again must not
//! move the new incarnation's offset (found by the simulator: swarm seed 1649 skipped 32
//! messages that way).

use std::collections::BTreeMap;

use rockfish_core::consumer::Consumer;
use rockfish_core::protocol::to_body;
use rockfish_core::remoting::RemotingCommand;
use rockfish_core::remoting::codes::{request, response};
use rockfish_sim::harness::client::{
    answer, answer_members, consumer_config, find, one_queue_route, requests,
};

#[test]
fn a_stale_pull_does_not_move_a_reassigned_queue() {
    let mut c = Consumer::new(consumer_config("c1"), BTreeMap::new(), 0);
    let mut now = 0;
    c.on_timeout(now);
    let route = find(&requests(&mut c), request::GET_ROUTEINFO_BY_TOPIC).expect("asks the route");
    let data = one_queue_route();
    c.on_command(
        answer(&route, response::SUCCESS).with_body(to_body(&data)),
        now,
    );
    // Alone in the group: q0 is ours. Its offset is 0; the first pull goes out.
    now += 10;
    c.on_timeout(now);
    let reqs = requests(&mut c);
    answer_members(&mut c, &reqs, &["c1"], now);
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
    answer_members(&mut c, &reqs, &["c0", "c1"], now);
    let _ = requests(&mut c);
    now += 10;
    c.on_command(
        RemotingCommand::request(request::NOTIFY_CONSUMER_IDS_CHANGED, 2),
        now,
    );
    c.on_timeout(now);
    let reqs = requests(&mut c);
    answer_members(&mut c, &reqs, &["c1"], now);
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

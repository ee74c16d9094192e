//! `ClientInstance`: the plumbing every client machine shares (after Java's MQClientInstance):
//! request ids, calls awaiting responses, the output queue, name-server choice and failover,
//! route queries, heartbeat and route-refresh timing, unregistering.
//!
//! A client machine (`Producer`, `Consumer`) holds one and keeps what differs: what its calls
//! mean (`R`, its own enum), what a heartbeat says, which brokers it talks to, what a lost
//! call costs. Everything here happens in call order, so a machine built on it emits the same
//! opaques, outputs and random draws in the same order as it asks.

use std::collections::VecDeque;

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::machine::Output;
use crate::remoting::RemotingCommand;
use crate::remoting::codes::request;
use crate::rpc_table::RpcTable;

/// What a client instance is configured with (Java's ClientConfig), taken from a producer's
/// or consumer's config. The machine reads these facts here, never from its own config again.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub client_id: String,
    pub namesrv_addrs: Vec<String>,
    pub heartbeat_ms: u64,
    pub route_refresh_ms: u64,
    /// Seeds the client's one random stream.
    pub seed: u64,
}

pub struct ClientInstance<R> {
    client_id: String,
    /// Fixed for the instance's life: a name server is named by its index here.
    namesrv_addrs: Vec<String>,
    heartbeat_ms: u64,
    route_refresh_ms: u64,
    rng: Xoshiro256PlusPlus,
    next_opaque: i32,
    /// Calls awaiting their responses, each with the address it went to.
    calls: RpcTable<(R, String)>,
    outputs: VecDeque<Output>,
    next_heartbeat: u64,
    next_route_refresh: u64,
}

impl<R> ClientInstance<R> {
    /// The first heartbeat is due at once; the first route refresh at `first_route_refresh`
    /// (a consumer wants its routes now, a producer asks per topic on its first send).
    pub fn new(config: ClientConfig, first_route_refresh: u64, now: u64) -> ClientInstance<R> {
        ClientInstance {
            client_id: config.client_id,
            namesrv_addrs: config.namesrv_addrs,
            heartbeat_ms: config.heartbeat_ms,
            route_refresh_ms: config.route_refresh_ms,
            rng: Xoshiro256PlusPlus::seed_from_u64(config.seed),
            next_opaque: 0,
            calls: RpcTable::default(),
            outputs: VecDeque::new(),
            next_heartbeat: now,
            next_route_refresh: first_route_refresh,
        }
    }

    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The client's one random stream: name-server choice draws from it and so does the
    /// machine (its own choices), interleaved in call order as a replay needs.
    pub fn rng(&mut self) -> &mut Xoshiro256PlusPlus {
        &mut self.rng
    }

    /// A fresh request id. Wraps after 2^32 requests; never one still awaiting its response,
    /// which would be taken for the other request's.
    pub fn opaque(&mut self) -> i32 {
        self.next_opaque = self.next_opaque.wrapping_add(1);
        debug_assert!(
            !self.calls.contains(self.next_opaque),
            "opaque {} handed out while still in flight",
            self.next_opaque
        );
        self.next_opaque
    }

    /// Sends `cmd` to `addr` and awaits its response as `rpc` until `deadline`.
    pub fn call(&mut self, addr: String, cmd: RemotingCommand, rpc: R, deadline: u64) {
        debug_assert!(
            !cmd.is_response() && !cmd.is_oneway(),
            "only a two-way request gets a response to await"
        );
        self.calls.insert(cmd.opaque, (rpc, addr.clone()), deadline);
        self.outputs.push_back(Output::SendTo { addr, cmd });
    }

    /// Sends `cmd` to `addr`, awaiting nothing: a response, if one comes, finds no call.
    pub fn send(&mut self, addr: String, cmd: RemotingCommand) {
        self.outputs.push_back(Output::SendTo { addr, cmd });
    }

    /// The call `response` answers, no longer in flight; `None` if it expired or was never
    /// awaited.
    pub fn answered(&mut self, response: &RemotingCommand) -> Option<R> {
        debug_assert!(response.is_response());
        self.calls.remove(response.opaque).map(|(rpc, _)| rpc)
    }

    /// Ends the call `opaque` early (its peer is lost).
    pub fn take_call(&mut self, opaque: i32) -> Option<R> {
        self.calls.remove(opaque).map(|(rpc, _)| rpc)
    }

    /// Ends every call in flight to `addr` (its connection closed: no answer will come), in
    /// opaque order. As the Java client's failFast, they fail now, not at their deadlines.
    pub fn take_calls_to(&mut self, addr: &str) -> Vec<R> {
        let lost: Vec<i32> = self
            .calls
            .iter()
            .filter(|(_, (_, a))| a == addr)
            .map(|(o, _)| o)
            .collect();
        lost.into_iter().filter_map(|o| self.take_call(o)).collect()
    }

    /// Calls in flight, by opaque.
    pub fn calls(&self) -> impl Iterator<Item = (i32, &R)> {
        self.calls.iter().map(|(o, (rpc, _))| (o, rpc))
    }

    /// Calls whose deadline is at or before `now`, no longer in flight, earliest first.
    pub fn take_expired(&mut self, now: u64) -> Vec<R> {
        self.calls
            .take_expired(now)
            .into_iter()
            .map(|(_, (rpc, _))| rpc)
            .collect()
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The earliest of the next heartbeat, route refresh and call deadline.
    pub fn next_timeout(&self) -> u64 {
        let t = self.next_heartbeat.min(self.next_route_refresh);
        self.calls.next_deadline().map_or(t, |d| d.min(t))
    }

    /// A name server picked at random (spreading clients over them), by index; `None` with
    /// none configured.
    pub fn pick_namesrv(&mut self) -> Option<usize> {
        let n = self.namesrv_addrs.len();
        (n > 0).then(|| self.rng.random_range(0..n))
    }

    /// The name server to try after `ns` failed, in turn; `None` if there is no other.
    pub fn namesrv_failover(&self, ns: usize) -> Option<usize> {
        let n = self.namesrv_addrs.len();
        debug_assert!(ns < n, "name server {ns} of {n}");
        (n > 1).then(|| (ns + 1) % n)
    }

    pub fn namesrv_addr(&self, ns: usize) -> &str {
        &self.namesrv_addrs[ns]
    }

    /// GET_ROUTEINFO_BY_TOPIC for `topic` to name server `ns`, awaited as `rpc`.
    pub fn query_route(&mut self, topic: &str, ns: usize, rpc: R, deadline: u64) {
        let cmd = RemotingCommand::request(request::GET_ROUTEINFO_BY_TOPIC, self.opaque())
            .with_ext("topic", topic);
        let addr = self.namesrv_addrs[ns].clone();
        self.call(addr, cmd, rpc, deadline);
    }

    /// Whether the routes are due a refresh; if so the next one is armed a period on.
    pub fn route_refresh_due(&mut self, now: u64) -> bool {
        let due = now >= self.next_route_refresh;
        if due {
            self.next_route_refresh = now + self.route_refresh_ms;
        }
        due
    }

    /// Whether a heartbeat is due; if so the next one is armed a period on.
    pub fn heartbeat_due(&mut self, now: u64) -> bool {
        let due = now >= self.next_heartbeat;
        if due {
            self.next_heartbeat = now + self.heartbeat_ms;
        }
        due
    }

    /// Brings the next heartbeat forward to `now` (a broker just became known).
    pub fn heartbeat_at(&mut self, now: u64) {
        self.next_heartbeat = now;
    }

    /// HEART_BEAT with `body` to each broker, in order. `awaited`: the call each response is
    /// awaited as and until when; `None` sends and forgets.
    pub fn heartbeat(
        &mut self,
        brokers: impl IntoIterator<Item = String>,
        body: &Bytes,
        awaited: Option<(R, u64)>,
    ) where
        R: Clone,
    {
        for addr in brokers {
            let cmd = RemotingCommand::request(request::HEART_BEAT, self.opaque())
                .with_body(body.clone());
            match &awaited {
                Some((rpc, deadline)) => self.call(addr, cmd, rpc.clone(), *deadline),
                None => self.send(addr, cmd),
            }
        }
    }

    /// UNREGISTER_CLIENT to each broker, in order, awaiting nothing: each drops this client
    /// from its groups at once (and tells the rest of a consumer group to rebalance).
    pub fn unregister(
        &mut self,
        brokers: impl IntoIterator<Item = String>,
        producer_group: Option<&str>,
        consumer_group: Option<&str>,
    ) {
        for addr in brokers {
            let mut cmd = RemotingCommand::request(request::UNREGISTER_CLIENT, self.opaque())
                .with_ext("clientID", &self.client_id);
            if let Some(g) = producer_group {
                cmd = cmd.with_ext("producerGroup", g);
            }
            if let Some(g) = consumer_group {
                cmd = cmd.with_ext("consumerGroup", g);
            }
            self.send(addr, cmd);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(namesrvs: &[&str]) -> ClientInstance<&'static str> {
        let config = ClientConfig {
            client_id: "c".into(),
            namesrv_addrs: namesrvs.iter().map(|s| s.to_string()).collect(),
            heartbeat_ms: 30,
            route_refresh_ms: 100,
            seed: 7,
        };
        ClientInstance::new(config, 100, 0)
    }

    #[test]
    fn calls_are_answered_once_by_opaque_and_expire_otherwise() {
        let mut c = instance(&["ns0"]);
        c.query_route("T", 0, "route", 50);
        let o = c.opaque();
        c.call(
            "b".into(),
            RemotingCommand::request(request::PULL_MESSAGE, o),
            "pull",
            40,
        );
        assert_eq!(c.next_timeout(), 0); // the first heartbeat is due at once
        assert!(c.heartbeat_due(0));
        assert_eq!(c.next_timeout(), 30);
        let out = c.poll_output().expect("route query");
        let Output::SendTo { addr, cmd } = out else {
            panic!("{out:?}")
        };
        assert_eq!((addr.as_str(), cmd.opaque), ("ns0", 1));
        let answer = RemotingCommand::response_to(&cmd, 0, None);
        assert_eq!(c.answered(&answer), Some("route"));
        assert_eq!(c.answered(&answer), None);
        assert_eq!(c.take_expired(45), vec!["pull"]);
        assert_eq!(c.calls().count(), 0);
    }

    #[test]
    fn name_servers_fail_over_in_turn() {
        let mut c = instance(&["ns0", "ns1", "ns2"]);
        assert!(c.pick_namesrv().is_some_and(|ns| ns < 3));
        assert_eq!(c.namesrv_failover(2), Some(0));
        assert_eq!(instance(&["ns0"]).namesrv_failover(0), None);
        assert_eq!(instance(&[]).pick_namesrv(), None);
    }
}

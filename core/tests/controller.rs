//! The controller machine alone: three controllers wired by hand (raft messages delivered in
//! order, persists answered at once and kept as files), brokers played by the test.

use std::collections::BTreeSet;

use rockfish_core::controller::{Controller, ControllerConfig, RAFT_LOG_FILE};
use rockfish_core::machine::{ConnId, Output};
use rockfish_core::remoting::RemotingCommand;
use rockfish_core::remoting::codes::{request, response};

const TICK: u64 = 100;

fn addr(i: usize) -> String {
    format!("10.0.0.{}:9878", i + 1)
}

fn config(i: usize, n: usize) -> ControllerConfig {
    ControllerConfig {
        id: i as u64 + 1,
        peers: (0..n).map(addr).collect(),
        tick_ms: TICK,
        broker_timeout_ms: 3_000,
        seed: 7 + i as u64,
        ..ControllerConfig::default()
    }
}

struct Net {
    ctrls: Vec<Option<Controller>>,
    files: Vec<Option<Vec<u8>>>,
    now: u64,
    /// Controllers cut off from the others.
    isolated: BTreeSet<usize>,
    /// Answers to brokers: (controller, answer).
    answers: Vec<(usize, RemotingCommand)>,
    opaque: i32,
}

/// The connection brokers' requests come in on.
const BROKER_CONN: ConnId = ConnId(1_000);

impl Net {
    fn new(n: usize) -> Net {
        let mut net = Net {
            ctrls: Vec::new(),
            files: vec![None; n],
            now: 0,
            isolated: BTreeSet::new(),
            answers: Vec::new(),
            opaque: 0,
        };
        for i in 0..n {
            let mut c = Controller::new(config(i, n), None, 0).expect("valid");
            c.on_connect(BROKER_CONN, 0);
            net.ctrls.push(Some(c));
        }
        net
    }

    fn pump(&mut self) {
        loop {
            let mut moved = false;
            for i in 0..self.ctrls.len() {
                let mut outs = Vec::new();
                if let Some(c) = self.ctrls[i].as_mut() {
                    while let Some(o) = c.poll_output() {
                        outs.push(o);
                    }
                }
                for o in outs {
                    moved = true;
                    match o {
                        Output::SendTo { addr: to, cmd } => {
                            let j = (0..self.ctrls.len()).find(|&j| addr(j) == to).unwrap();
                            if self.isolated.contains(&i) || self.isolated.contains(&j) {
                                continue;
                            }
                            if let Some(c) = self.ctrls[j].as_mut() {
                                c.on_command(ConnId(i as u64), cmd, self.now);
                            }
                        }
                        Output::Persist { token, files } => {
                            for (path, bytes) in files {
                                assert_eq!(path, RAFT_LOG_FILE);
                                self.files[i] = Some(bytes.to_vec());
                            }
                            let now = self.now;
                            self.ctrls[i]
                                .as_mut()
                                .unwrap()
                                .on_persisted(token, Ok(()), now);
                        }
                        Output::Send { conn, cmd } => {
                            assert_eq!(conn, BROKER_CONN);
                            self.answers.push((i, cmd));
                        }
                        other => panic!("unexpected output {other:?}"),
                    }
                }
            }
            if !moved {
                return;
            }
        }
    }

    fn run(&mut self, ms: u64) {
        let end = self.now + ms;
        while self.now < end {
            self.now += TICK;
            for c in self.ctrls.iter_mut().flatten() {
                c.on_timeout(self.now);
            }
            self.pump();
        }
    }

    /// Runs `ms` while brokers `beating` of `group` heartbeat every tick.
    fn run_beating(&mut self, ms: u64, group: &str, beating: &[(u64, u64)]) {
        let end = self.now + ms;
        while self.now < end {
            self.run(TICK);
            if self.leader().is_none() {
                continue; // brokers find no leader while the controllers elect one
            }
            for &(id, log_end) in beating {
                self.ask(heartbeat(group, id, log_end));
            }
        }
    }

    fn leader(&self) -> Option<usize> {
        let leaders: Vec<usize> = (0..self.ctrls.len())
            .filter(|&i| {
                !self.isolated.contains(&i) && self.ctrls[i].as_ref().is_some_and(|c| c.is_leader())
            })
            .collect();
        assert!(
            leaders.len() <= 1,
            "two leaders among the connected: {leaders:?}"
        );
        leaders.first().copied()
    }

    /// Sends a broker request to the leader and returns its answer.
    fn ask(&mut self, mut cmd: RemotingCommand) -> RemotingCommand {
        let i = self.leader().expect("a leader");
        self.ask_at(i, &mut cmd)
    }

    fn ask_at(&mut self, i: usize, cmd: &mut RemotingCommand) -> RemotingCommand {
        self.opaque += 1;
        cmd.opaque = self.opaque;
        let now = self.now;
        self.ctrls[i]
            .as_mut()
            .unwrap()
            .on_command(BROKER_CONN, cmd.clone(), now);
        for _ in 0..50 {
            self.pump();
            if let Some(pos) = self
                .answers
                .iter()
                .position(|(_, a)| a.opaque == cmd.opaque)
            {
                return self.answers.remove(pos).1;
            }
            self.run(TICK);
        }
        panic!("no answer to {cmd:?}");
    }

    fn restart(&mut self, i: usize) {
        let n = self.ctrls.len();
        let mut c = Controller::new(config(i, n), self.files[i].as_deref(), self.now).unwrap();
        c.on_connect(BROKER_CONN, self.now);
        self.ctrls[i] = Some(c);
    }

    fn group(&self, name: &str) -> rockfish_core::controller::replicas::GroupReplicas {
        let i = self.leader().expect("a leader");
        self.ctrls[i]
            .as_ref()
            .unwrap()
            .replicas()
            .group(name)
            .cloned()
            .expect("group")
    }
}

fn register(group: &str, id: u64, log_end: u64, restart: bool) -> RemotingCommand {
    RemotingCommand::request(request::CONTROLLER_REGISTER_BROKER, 0)
        .with_ext("clusterName", "c")
        .with_ext("brokerName", group)
        .with_ext("brokerId", id)
        .with_ext("brokerAddr", format!("10.1.0.{id}:10911"))
        .with_ext("haServerAddr", format!("10.1.0.{id}:10912"))
        .with_ext("maxOffset", log_end)
        .with_ext("restart", restart)
}

fn heartbeat(group: &str, id: u64, log_end: u64) -> RemotingCommand {
    RemotingCommand::request(request::BROKER_HEARTBEAT, 0)
        .with_ext("brokerName", group)
        .with_ext("brokerId", id)
        .with_ext("maxOffset", log_end)
}

fn alter(group: &str, master: u64, epoch: u64, set_epoch: u64, set: &str) -> RemotingCommand {
    RemotingCommand::request(request::CONTROLLER_ALTER_SYNC_STATE_SET, 0)
        .with_ext("brokerName", group)
        .with_ext("masterBrokerId", master)
        .with_ext("masterEpoch", epoch)
        .with_ext("syncStateSetEpoch", set_epoch)
        .with_ext("syncStateSet", set)
}

/// Three controllers with a leader, and group "g" with replicas 1 (master, epoch 1) and 2,
/// both in the SyncStateSet.
fn group_of_two() -> Net {
    let mut net = Net::new(3);
    net.run(3_000);
    assert!(net.leader().is_some(), "a leader within 3 s");
    let a = net.ask(register("g", 1, 0, true));
    assert_eq!(a.code, response::SUCCESS, "{a:?}");
    let a = net.ask(register("g", 2, 0, true));
    assert_eq!(a.code, response::SUCCESS);
    net.run_beating(500, "g", &[(1, 0), (2, 0)]);
    let g = net.group("g");
    assert_eq!(g.master, Some(1), "the first to register leads a new group");
    assert_eq!(g.master_epoch, 1);
    let a = net.ask(alter("g", 1, 1, g.sync_state_set_epoch, "1,2"));
    assert_eq!(a.code, response::SUCCESS, "{a:?}");
    assert_eq!(a.ext("syncStateSet"), Some("1,2"));
    net
}

#[test]
fn three_controllers_agree_on_one_leader_and_followers_point_to_it() {
    let mut net = Net::new(3);
    net.run(3_000);
    let leader = net.leader().expect("a leader");
    for i in 0..3 {
        if i == leader {
            continue;
        }
        let a = net.ask_at(i, &mut register("g", 1, 0, true));
        assert_eq!(a.code, response::CONTROLLER_NOT_LEADER);
        assert_eq!(a.ext("leaderAddress"), Some(addr(leader).as_str()));
    }
}

#[test]
fn a_lost_master_is_replaced_from_the_sync_state_set_in_a_new_epoch() {
    let mut net = group_of_two();
    // Replica 1 falls silent; replica 2 keeps beating.
    net.run_beating(5_000, "g", &[(2, 100)]);
    let g = net.group("g");
    assert_eq!(g.master, Some(2));
    assert_eq!(g.master_epoch, 2);
    assert_eq!(g.sync_state_set, BTreeSet::from([2]));
    let a = net.ask(heartbeat("g", 2, 100));
    assert_eq!(a.ext("masterBrokerId"), Some("2"));
    assert_eq!(a.ext("masterAddress"), Some("10.1.0.2:10911"));
    assert_eq!(a.ext("masterHaAddress"), Some("10.1.0.2:10912"));
    assert_eq!(a.ext("masterEpoch"), Some("2"));
    // The old master's SyncStateSet change from its old epoch is fenced.
    let a = net.ask(alter("g", 1, 1, g.sync_state_set_epoch, "1,2"));
    assert_eq!(a.code, response::CONTROLLER_INVALID_MASTER);
    let a = net.ask(alter("g", 2, 1, g.sync_state_set_epoch, "1,2"));
    assert_eq!(a.code, response::CONTROLLER_FENCED_MASTER_EPOCH);
    let a = net.ask(alter("g", 2, 2, g.sync_state_set_epoch - 1, "1,2"));
    assert_eq!(a.code, response::CONTROLLER_FENCED_SYNC_STATE_SET_EPOCH);
}

#[test]
fn a_replica_outside_the_sync_state_set_is_never_elected() {
    let mut net = Net::new(3);
    net.run(3_000);
    net.ask(register("g", 1, 0, true));
    net.ask(register("g", 2, 0, true));
    net.run_beating(500, "g", &[(1, 0), (2, 0)]);
    assert_eq!(net.group("g").sync_state_set, BTreeSet::from([1]));
    // The master dies before replica 2 joined its SyncStateSet: nobody may take over.
    net.run_beating(10_000, "g", &[(2, 500)]);
    let g = net.group("g");
    assert_eq!(g.master, Some(1));
    assert_eq!(g.master_epoch, 1);
    // It comes back (restarted): elected again, in a new epoch.
    net.ask(register("g", 1, 400, true));
    net.run_beating(1_000, "g", &[(1, 400), (2, 500)]);
    let g = net.group("g");
    assert_eq!((g.master, g.master_epoch), (Some(1), 2));
}

#[test]
fn the_longest_log_in_the_sync_state_set_wins_once_every_candidate_reported() {
    let mut net = group_of_two();
    net.ask(register("g", 3, 0, true));
    let g = net.group("g");
    let a = net.ask(alter("g", 1, 1, g.sync_state_set_epoch, "1,2,3"));
    assert_eq!(a.code, response::SUCCESS);
    // The master dies; replica 3 holds more than replica 2.
    net.run_beating(5_000, "g", &[(2, 100), (3, 250)]);
    let g = net.group("g");
    assert_eq!((g.master, g.master_epoch), (Some(3), 2));
}

#[test]
fn a_restarted_master_makes_a_new_epoch_and_the_longer_log_leads() {
    let mut net = group_of_two();
    // The master comes back from a power loss with less than its slave holds.
    net.ask(register("g", 1, 100, true));
    net.run_beating(1_000, "g", &[(1, 100), (2, 300)]);
    let g = net.group("g");
    assert_eq!((g.master, g.master_epoch), (Some(2), 2));
}

#[test]
fn the_replica_state_survives_losing_the_controller_leader() {
    let mut net = group_of_two();
    let old = net.leader().unwrap();
    net.isolated.insert(old);
    net.run_beating(3_000, "g", &[(1, 10), (2, 10)]);
    let new = net.leader().expect("a new leader among the other two");
    assert_ne!(new, old);
    let g = net.group("g");
    assert_eq!((g.master, g.master_epoch), (Some(1), 1));
    assert_eq!(g.sync_state_set, BTreeSet::from([1, 2]));
    // The new leader judges liveness itself: the master keeps beating, nobody is elected;
    // once it stops, replica 2 takes over.
    net.run_beating(4_000, "g", &[(1, 10), (2, 10)]);
    assert_eq!(net.group("g").master_epoch, 1);
    net.run_beating(5_000, "g", &[(2, 10)]);
    let g = net.group("g");
    assert_eq!((g.master, g.master_epoch), (Some(2), 2));
    // The old leader rejoins and learns it all.
    net.isolated.clear();
    net.run(2_000);
    let back = net.ctrls[old].as_ref().unwrap();
    assert!(!back.is_leader() || net.leader() == Some(old));
    assert_eq!(back.replicas().group("g").unwrap().master, Some(2));
}

#[test]
fn controllers_restarted_from_their_files_keep_the_replica_state() {
    let mut net = group_of_two();
    net.run(1_000);
    let before = net.group("g");
    for i in 0..3 {
        net.ctrls[i] = None;
    }
    for i in 0..3 {
        net.restart(i);
    }
    net.run(3_000);
    assert!(net.leader().is_some());
    assert_eq!(net.group("g"), before);
    // A restarted leader gives the brokers a full timeout: a beating master stays.
    net.run_beating(4_000, "g", &[(1, 10), (2, 10)]);
    assert_eq!(net.group("g").master_epoch, before.master_epoch);
}

#[test]
fn malformed_raft_messages_and_unknown_requests_are_refused_without_harm() {
    let mut net = group_of_two();
    let leader = net.leader().unwrap();
    for body in [vec![], vec![0xff; 64], vec![3, 0, 0]] {
        let mut cmd = RemotingCommand::request(request::CONTROLLER_RAFT_MESSAGE, 0).with_body(body);
        cmd.flag |= rockfish_core::remoting::command::FLAG_ONEWAY;
        let now = net.now;
        net.ctrls[leader]
            .as_mut()
            .unwrap()
            .on_command(BROKER_CONN, cmd, now);
    }
    let a = net.ask(RemotingCommand::request(request::SEND_MESSAGE, 0));
    assert_eq!(a.code, response::REQUEST_CODE_NOT_SUPPORTED);
    let a = net.ask(RemotingCommand::request(request::BROKER_HEARTBEAT, 0));
    assert_eq!(a.code, response::CONTROLLER_INVALID_REQUEST, "{a:?}");
    let a = net.ask(alter("g", 1, 1, 0, "1,x"));
    assert_eq!(a.code, response::CONTROLLER_INVALID_REQUEST);
    net.run_beating(1_000, "g", &[(1, 10), (2, 10)]);
    assert_eq!(net.leader(), Some(leader));
    assert_eq!(net.group("g").master, Some(1));
}

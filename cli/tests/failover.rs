//! Real processes in controller mode: three name servers with the controller embedded, and
//! one broker group of two replicas (SYNC_MASTER) the controllers elect a master for. A
//! producer sends and a push consumer consumes while the master is killed -9: sends resume on
//! the replica the controllers elect, every send answered SEND_OK is stored there at the
//! queue offset it was answered with, and the consumer receives every stored message.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rockfish_core::protocol::{TopicRouteData, decode_body};
use rockfish_core::remoting::RemotingCommand;
use rockfish_core::remoting::codes::{request, response};
use rockfish_net::Client;
use rockfish_net::sdk::{
    ConsumeFrom, ConsumeResult, ConsumerConfig, ConsumerConfigExt, Message, Producer,
    ProducerConfig, PushConsumer, SendStatus,
};

mod common;

use common::{Proc, free_port, spawn};

const TOPIC: &str = "FailoverTopic";
/// Master death to the first send stored on the new master, at most (the controller's broker
/// timeout is 5 s; clients refresh routes every second here). A bound on correctness, not a
/// speed target: the measured time is printed.
const FAILOVER_BOUND: Duration = Duration::from_secs(60);

fn broker_conf(dir: &std::path::Path, ns: &str, id: u32, port: u16, ha: u16) -> String {
    let data = dir.join(format!("broker-{id}"));
    let text = format!(
        "brokerClusterName = DefaultCluster\nbrokerName = broker-a\nbrokerId = {id}\n\
         brokerRole = SYNC_MASTER\nflushDiskType = ASYNC_FLUSH\nnamesrvAddr = {ns}\n\
         enableControllerMode = true\ncontrollerAddr = {ns}\n\
         brokerIP1 = 127.0.0.1\nlistenPort = {port}\nhaListenPort = {ha}\n\
         storePathRootDir = {}\nmapedFileSizeCommitLog = 4194304\n",
        data.display()
    );
    let path = dir.join(format!("broker-{id}.conf"));
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// The group's master as the name servers route it (brokerId 0), if any.
async fn routed_master(ns: &[String]) -> Option<String> {
    for addr in ns {
        let Ok(c) = Client::connect(addr).await else {
            continue;
        };
        let req =
            RemotingCommand::request(request::GET_ROUTEINFO_BY_TOPIC, 0).with_ext("topic", TOPIC);
        let Ok(r) = c.request(req, Duration::from_secs(2)).await else {
            continue;
        };
        if r.code != response::SUCCESS {
            continue;
        }
        let route: TopicRouteData = decode_body(&r.body).ok()?;
        if let Some(m) = route
            .broker_datas
            .iter()
            .find_map(|b| b.broker_addrs.get(&0))
        {
            return Some(m.clone());
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_resume_on_the_elected_replica_and_nothing_acked_is_lost_after_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let ns: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let peers = ns.join(";");
    let mut _controllers = Vec::new();
    for (i, addr) in ns.iter().enumerate() {
        let data = dir.path().join(format!("controller-{i}"));
        let id = (i + 1).to_string();
        let (p, banner) = spawn(&[
            "namesrv",
            "--listen",
            addr,
            "--controller-peers",
            &peers,
            "--controller-id",
            &id,
            "--controller-dir",
            data.to_str().unwrap(),
        ]);
        assert!(banner.contains("controller"), "{banner}");
        _controllers.push(p);
    }
    let mut brokers: BTreeMap<String, Proc> = BTreeMap::new();
    for id in 1..=2 {
        let (port, ha) = (free_port(), free_port());
        let conf = broker_conf(dir.path(), &peers, id, port, ha);
        let (p, banner) = spawn(&["broker", "-c", &conf]);
        assert!(banner.contains("broker-a"), "{banner}");
        brokers.insert(format!("127.0.0.1:{port}"), p);
    }

    let producer = Arc::new(Producer::start(ProducerConfig {
        group: "failover-producer".into(),
        namesrv_addrs: ns.clone(),
        route_refresh_ms: 1_000,
        send_timeout_ms: 3_000,
        ..ProducerConfig::default()
    }));
    let received: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let seen = received.clone();
    let consumer = PushConsumer::start(
        ConsumerConfig {
            group: "failover-consumer".into(),
            namesrv_addrs: ns.clone(),
            consume_from: ConsumeFrom::FirstOffset,
            route_refresh_ms: 1_000,
            ..ConsumerConfig::default()
        }
        .subscribe(TOPIC, "*"),
        move |msg| {
            seen.lock().unwrap().insert(msg.msg_id().to_string());
            ConsumeResult::Success
        },
    );

    // Sends until 200 are answered SEND_OK (held by both replicas), then the master dies.
    // `stored`: every send answered as stored, by where it was stored.
    let mut acked: Vec<(u32, u64, String)> = Vec::new();
    let mut stored: Vec<(u32, u64, String)> = Vec::new();
    let started = Instant::now();
    let mut n = 0u32;
    while acked.len() < 200 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no master elected, or its replica never joined the SyncStateSet ({} sends answered SEND_OK)",
            acked.len()
        );
        n += 1;
        match producer
            .send(Message::new(TOPIC, format!("before-{n}")))
            .await
        {
            Ok(r) => {
                let at = (r.queue.queue_id, r.queue_offset, r.msg_id.clone());
                if r.status == SendStatus::SendOk {
                    acked.push(at.clone());
                }
                stored.push(at);
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let master = routed_master(&ns)
        .await
        .expect("the name servers route a master");
    let mut old = brokers.remove(&master).expect("the master is one of ours");
    old.0.kill().unwrap(); // SIGKILL
    old.0.wait().unwrap();
    let killed = Instant::now();
    let survivor = brokers.keys().next().unwrap().clone();

    // Sends go on; the first one stored after the kill is on the elected replica.
    let mut failover = None;
    let mut after = 0;
    while after < 100 {
        assert!(
            killed.elapsed() < FAILOVER_BOUND,
            "no send stored within {FAILOVER_BOUND:?} of the master's death"
        );
        n += 1;
        match producer
            .send(Message::new(TOPIC, format!("after-{n}")))
            .await
        {
            Ok(r) => {
                failover.get_or_insert(killed.elapsed());
                after += 1;
                let at = (r.queue.queue_id, r.queue_offset, r.msg_id.clone());
                if r.status == SendStatus::SendOk {
                    acked.push(at.clone());
                }
                stored.push(at);
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let failover = failover.unwrap();
    eprintln!(
        "failover: first send stored {failover:?} after the master's death; {} acked SEND_OK, {} stored",
        acked.len(),
        stored.len()
    );
    assert_eq!(routed_master(&ns).await.as_deref(), Some(survivor.as_str()));

    // Every stored send is on the survivor at the offset it was answered with (those stored
    // before the kill with SEND_OK included: they were on both replicas).
    let s = Client::connect(&survivor).await.unwrap();
    let mut queues: BTreeMap<u32, Vec<(u64, String)>> = BTreeMap::new();
    for (q, _, _) in &stored {
        if !queues.contains_key(q) {
            queues.insert(*q, common::read_queue(&s, TOPIC, *q).await);
        }
    }
    let before_kill = stored.len() - after;
    for (i, (q, o, key)) in stored.iter().enumerate() {
        let must = i >= before_kill || acked.iter().any(|a| &a.2 == key);
        if !must {
            continue; // stored on the old master alone (SLAVE_NOT_AVAILABLE) may be cut
        }
        assert_eq!(
            queues[q].get(*o as usize).map(|(_, k)| k),
            Some(key),
            "queue {q}: {key} answered at offset {o} is not there on the elected replica"
        );
    }

    // The consumer receives every message the survivor holds for it.
    let want: BTreeSet<String> = queues.values().flatten().map(|(_, k)| k.clone()).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let missing = want.difference(&received.lock().unwrap()).count();
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the consumer is missing {missing} of {} messages after the failover",
            want.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    consumer.shutdown().await;
    if let Ok(p) = Arc::try_unwrap(producer) {
        p.shutdown().await;
    }
}

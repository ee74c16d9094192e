//! Real processes: a name server, a SYNC_MASTER and its SLAVE started from broker.conf files.
//! Every send acked SEND_OK by the master is on the slave: the master is killed -9 and each
//! acked message is read from the slave, at the queue offset it was acked with. The name
//! server lists both brokers of the group while both run.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use rockfish_core::message::properties_string;
use rockfish_core::remoting::RemotingCommand;
use rockfish_core::remoting::codes::{request, response};
use rockfish_net::Client;

mod common;

use common::{free_port, spawn};

fn broker_conf(dir: &std::path::Path, ns: &str, id: u32, role: &str, port: u16, ha: u16) -> String {
    let data = dir.join(format!("broker-{id}"));
    let text = format!(
        "brokerClusterName = DefaultCluster\nbrokerName = broker-a\nbrokerId = {id}\n\
         brokerRole = {role}\nflushDiskType = ASYNC_FLUSH\nnamesrvAddr = {ns}\n\
         brokerIP1 = 127.0.0.1\nlistenPort = {port}\nhaListenPort = {ha}\n\
         storePathRootDir = {}\nmapedFileSizeCommitLog = 1048576\n",
        data.display()
    );
    let path = dir.join(format!("broker-{id}.conf"));
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn send(queue: u32, key: &str) -> RemotingCommand {
    let props = String::from_utf8(properties_string([("UNIQ_KEY", key)])).unwrap();
    RemotingCommand::request(request::SEND_MESSAGE_V2, 0)
        .with_ext("a", "PG")
        .with_ext("b", "HaTopic")
        .with_ext("c", "TBW102")
        .with_ext("d", 4)
        .with_ext("e", queue)
        .with_ext("f", 0)
        .with_ext("g", 0)
        .with_ext("h", 0)
        .with_ext("i", props)
        .with_body(Bytes::from(vec![b'x'; 500]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_sync_master_acked_is_on_its_slave_after_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let ns_addr = format!("127.0.0.1:{}", free_port());
    let (_ns, _) = spawn(&["namesrv", "--listen", &ns_addr]);
    let (mp, mha, sp) = (free_port(), free_port(), free_port());
    let master_conf = broker_conf(dir.path(), &ns_addr, 0, "SYNC_MASTER", mp, mha);
    let slave_conf = broker_conf(dir.path(), &ns_addr, 1, "SLAVE", sp, free_port());
    let (mut master, banner) = spawn(&["broker", "-c", &master_conf]);
    assert!(banner.contains("broker-a"), "{banner}");
    let (_slave, banner) = spawn(&["broker", "-c", &slave_conf]);
    assert!(banner.contains("broker-a"), "{banner}");
    let master_addr = format!("127.0.0.1:{mp}");
    let slave_addr = format!("127.0.0.1:{sp}");
    let c = Client::connect(&master_addr).await.unwrap();

    // Until the slave has connected a SYNC_MASTER answers SLAVE_NOT_AVAILABLE (stored on the
    // master alone); then SEND_OK, each one held by the slave.
    let mut acked: BTreeMap<u32, Vec<(u64, String)>> = BTreeMap::new();
    let mut not_available = 0;
    let mut i = 0u32;
    while acked.values().map(Vec::len).sum::<usize>() < 300 {
        assert!(i < 20_000, "the slave never caught up");
        let (q, key) = (i % 4, format!("k{i}"));
        i += 1;
        let r = c
            .request(send(q, &key), Duration::from_secs(5))
            .await
            .unwrap();
        match r.code {
            response::SUCCESS => {
                let offset = r.ext("queueOffset").unwrap().parse().unwrap();
                acked.entry(q).or_default().push((offset, key));
            }
            response::SLAVE_NOT_AVAILABLE => {
                not_available += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            code => panic!("send answered {code}: {r:?}"),
        }
    }
    eprintln!("{not_available} sends answered SLAVE_NOT_AVAILABLE before the slave caught up");

    // The name server lists both brokers of the group.
    let ns = Client::connect(&ns_addr).await.unwrap();
    let route =
        RemotingCommand::request(request::GET_ROUTEINFO_BY_TOPIC, 0).with_ext("topic", "HaTopic");
    let r = ns.request(route, Duration::from_secs(5)).await.unwrap();
    assert_eq!(r.code, response::SUCCESS);
    let body = String::from_utf8(r.body.to_vec()).unwrap();
    assert!(
        body.contains(&master_addr) && body.contains(&slave_addr),
        "{body}"
    );

    master.0.kill().unwrap(); // SIGKILL
    master.0.wait().unwrap();

    let s = Client::connect(&slave_addr).await.unwrap();
    for (queue, sent) in &acked {
        let found = common::read_queue(&s, "HaTopic", *queue).await;
        for (o, key) in sent {
            assert_eq!(
                found.get(*o as usize).map(|(_, k)| k),
                Some(key),
                "queue {queue}: {key} acked at {o} is not on the slave"
            );
        }
    }
    // The slave refuses writes.
    let r = s
        .request(send(0, "late"), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(r.code, response::SERVICE_NOT_AVAILABLE, "{r:?}");
}

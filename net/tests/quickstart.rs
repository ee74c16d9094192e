//! The README's SDK quickstart (net/examples/quickstart.rs) runs as written, against a name
//! server and broker started here.

#[path = "../examples/quickstart.rs"]
mod example;

use rockfish_core::broker::BrokerConfig;
use rockfish_core::namesrv::NameServerConfig;
use rockfish_net::launch::{start_broker, start_namesrv};
use rockfish_store::StoreConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_quickstart_runs() {
    let dir = tempfile::tempdir().unwrap();
    let ns = start_namesrv("127.0.0.1:0", NameServerConfig::default())
        .await
        .unwrap();
    let cfg = BrokerConfig {
        broker_addr: "127.0.0.1:0".into(),
        namesrv_addrs: vec![ns.local_addr().to_string()],
        ..BrokerConfig::default()
    };
    let store = StoreConfig {
        commitlog_segment_size: 8 << 20,
        ..StoreConfig::default()
    };
    let broker = start_broker("127.0.0.1:0", cfg, store, dir.path())
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await; // first registration
    let consumed = example::quickstart(&ns.local_addr().to_string())
        .await
        .unwrap();
    assert_eq!(consumed, 10);
    broker.stop().await;
    ns.stop().await;
}

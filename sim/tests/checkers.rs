//! Each checker against a deliberately broken machine: it must fire within a few seeds, and
//! stay quiet on the same runs with the machine whole.

use rockfish_sim::{ScenarioFile, Sim, check};

/// Runs seeds `0..seeds` of `text`; the first seed whose run breaks `invariant`.
fn first_breaking(text: &str, invariant: &str, seeds: u64) -> Option<u64> {
    let file = ScenarioFile::parse(text).expect("valid scenario");
    (0..seeds).find(|&seed| {
        let cfg = file.config(seed);
        let out = Sim::new(cfg.clone()).run();
        check(&cfg, &out.history)
            .violations
            .iter()
            .any(|v| v.invariant() == invariant)
    })
}

/// The same scenario without its `[bugs]` section.
fn whole(text: &str) -> String {
    text.split("[bugs]").next().unwrap().to_string()
}

const ORDERLY: &str = r#"
name = "orderly-broken"
[topology]
consumers = 2
[workload]
messages = 200
orderly = true
reconsume_share = 0.05
[bugs]
orderly_as_concurrent = true
"#;

#[test]
fn fifo_checker_catches_an_orderly_consumer_that_consumes_concurrently() {
    // The broken machine: the orderly group's consumers consume concurrently, so a message
    // the application asked to retry comes back after the ones behind it.
    let seed = first_breaking(ORDERLY, "orderly-fifo", 10);
    assert!(seed.is_some(), "10 seeds and the FIFO checker never fired");
    assert_eq!(
        first_breaking(&whole(ORDERLY), "orderly-fifo", 10),
        None,
        "a real orderly consumer keeps FIFO on the same runs"
    );
}

const BROADCAST: &str = r#"
name = "broadcast-broken"
[topology]
consumers = 1
broadcast_consumers = 2
[workload]
messages = 200
[bugs]
broadcast_as_clustering = true
"#;

#[test]
fn broadcast_checker_catches_consumers_that_share_queues() {
    // The broken machine: broadcasting consumers allocate queues among themselves as a
    // clustering group does, so each sees only its share.
    assert!(
        first_breaking(BROADCAST, "broadcast-at-least-once", 5).is_some(),
        "5 seeds and the broadcast checker never fired"
    );
    assert_eq!(
        first_breaking(&whole(BROADCAST), "broadcast-at-least-once", 5),
        None
    );
}

const ROUTES: &str = r#"
name = "routes-broken"
[topology]
name_servers = 2
brokers = 2
consumers = 2
[faults]
namesrv_crash_per_sec = 0.2
[bugs]
register_once = true
"#;

#[test]
fn route_checker_catches_brokers_that_register_only_once() {
    // The broken machine: brokers register at start and never again, so a name server that
    // restarts empty never learns them back.
    assert!(
        first_breaking(ROUTES, "routes-converge", 20).is_some(),
        "20 seeds and the route checker never fired"
    );
    assert_eq!(first_breaking(&whole(ROUTES), "routes-converge", 20), None);
}

const UNFLUSHED: &str = r#"
name = "unflushed-broken"
[topology]
flush = "SYNC_FLUSH"
consumers = 2
[workload]
messages = 1800
send_interval_ms = 5
topic_created = true
[faults]
latency_ms = [1, 5]
crash_per_sec = 1.0
power_loss_share = 1.0
down_ms = [200, 500]
churn_per_sec = 1.0
[disk]
writeback = 0.3
torn_page = 0.5
[bugs]
serve_unflushed = true
"#;

/// The invariants each of seeds `0..seeds` of `text` breaks.
fn broken(text: &str, seeds: u64) -> Vec<Vec<&'static str>> {
    let file = ScenarioFile::parse(text).expect("valid scenario");
    (0..seeds)
        .map(|seed| {
            let cfg = file.config(seed);
            let out = Sim::new(cfg.clone()).run();
            check(&cfg, &out.history)
                .violations
                .iter()
                .map(|v| v.invariant())
                .collect()
        })
        .collect()
}

#[test]
fn vanish_and_offset_reuse_checkers_catch_a_broker_serving_unflushed_messages() {
    // The broken machine (RocketMQ #8239): a SYNC_FLUSH broker serves pulls past the flushed
    // offset, so consumers see messages a power loss then takes, and the next messages
    // stored reuse their queue offsets.
    let judged = ["delivered-not-vanished", "one-offset-one-message"];
    let runs = broken(UNFLUSHED, 8);
    for invariant in judged {
        assert!(
            runs.iter().any(|r| r.contains(&invariant)),
            "8 seeds and {invariant} never fired: {runs:?}"
        );
    }
    for (seed, r) in broken(&whole(UNFLUSHED), 8).iter().enumerate() {
        assert!(
            judged.iter().all(|i| !r.contains(i)),
            "seed {seed}: a broker serving only durable messages broke {r:?}"
        );
    }
}

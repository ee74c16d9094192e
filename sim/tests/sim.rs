//! The simulator: clean runs pass, the same seed gives the same digest, faulty runs still
//! keep every promise, and a deliberately broken flush path is caught.

use rockfish_core::broker::FlushDiskType;
use rockfish_sim::{Bugs, Delivery, Faults, Sim, SimConfig, Violation, check};
use rockfish_store::FaultPlan;

fn faulty(seed: u64, flush: FlushDiskType) -> SimConfig {
    SimConfig {
        flush,
        faults: Faults {
            drop: 0.01,
            duplicate: 0.01,
            latency_ms: (1, 20),
            crash_per_sec: 0.15,
            power_loss_share: 0.5,
            partition_per_sec: 0.1,
            disk: FaultPlan {
                writeback: 0.3,
                torn_page: 0.5,
                read_bitflip: 0.0005,
                ..FaultPlan::default()
            },
            ..Faults::default()
        },
        ..SimConfig::smoke(seed)
    }
}

#[test]
fn a_clean_run_delivers_everything() {
    let cfg = SimConfig::smoke(1);
    let out = Sim::new(cfg.clone()).run();
    let report = check(&cfg, &out.history);
    assert!(report.ok(), "{:?}", report.violations);
    assert_eq!(
        report.acked, 240,
        "every send acknowledged (200, then 20 after the heal, then 20 once settled)"
    );
    assert_eq!(report.delivered_distinct, 240, "every message consumed");
    assert!(out.events > 1_000);
}

#[test]
fn the_same_seed_gives_the_same_digest() {
    for seed in [3, 17] {
        let a = Sim::new(faulty(seed, FlushDiskType::Sync)).run();
        let b = Sim::new(faulty(seed, FlushDiskType::Sync)).run();
        assert_eq!(a.digest, b.digest, "seed {seed}");
        assert_eq!(a.trace, b.trace);
    }
    let a = Sim::new(faulty(3, FlushDiskType::Sync)).run();
    let c = Sim::new(faulty(4, FlushDiskType::Sync)).run();
    assert_ne!(a.digest, c.digest, "different seeds explore different runs");
}

#[test]
fn crashes_power_losses_torn_pages_and_partitions_keep_every_promise() {
    let mut crashes = 0;
    let mut power = 0;
    // SIM_SEEDS widens the sweep (CI sets it; 24 by default).
    let seeds: u64 = std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(24);
    let (mut events, mut sim_ms, started) = (0u64, 0u64, std::time::Instant::now());
    for seed in 0..seeds {
        for flush in [FlushDiskType::Sync, FlushDiskType::Async] {
            let cfg = faulty(seed, flush);
            let out = Sim::new(cfg.clone()).run();
            let report = check(&cfg, &out.history);
            assert!(
                report.ok(),
                "seed {seed} {flush:?}: {:?}\nreplay: Sim::new(faulty({seed}, {flush:?}))",
                &report.violations[..report.violations.len().min(5)]
            );
            crashes += out.history.crashes;
            power += out.history.power_losses;
            events += out.events;
            sim_ms += out.sim_ms;
        }
    }
    let wall = started.elapsed().as_secs_f64();
    eprintln!(
        "sim sweep: {} runs, {events} events, {:.0} simulated s in {wall:.2} s wall ({:.0} events/s, {:.0}x real time); {crashes} crashes, {power} power losses",
        seeds * 2,
        sim_ms as f64 / 1000.0,
        events as f64 / wall,
        sim_ms as f64 / 1000.0 / wall
    );
    assert!(
        crashes > 10 && power > 5,
        "the faults really happened: {crashes} crashes, {power} power losses"
    );
}

#[test]
fn a_flush_that_lies_is_caught() {
    // The broken component: flushes reported done without syncing. Under SYNC_FLUSH a power
    // loss then loses sends that were acknowledged as durable; the checker must say so.
    let caught = (0..30u64).find(|&seed| {
        let cfg = SimConfig {
            bugs: Bugs {
                lying_flush: true,
                ..Bugs::default()
            },
            ..faulty(seed, FlushDiskType::Sync)
        };
        let out = Sim::new(cfg.clone()).run();
        let report = check(&cfg, &out.history);
        report
            .violations
            .iter()
            .any(|v| matches!(v, Violation::AckedLost { .. }))
    });
    assert!(
        caught.is_some(),
        "30 seeds of a lying flush and the checker never fired"
    );
}

#[test]
fn the_phantom_checker_fires_on_invented_deliveries() {
    let cfg = SimConfig::smoke(2);
    let mut out = Sim::new(cfg.clone()).run();
    out.history.delivered.push(Delivery::of(3, "never-sent"));
    let report = check(&cfg, &out.history);
    assert!(report.violations.contains(&Violation::Phantom {
        body: "never-sent".into()
    }));
}

#[test]
fn a_broker_that_never_comes_back_is_caught_by_the_liveness_checker() {
    // The broken component: the restart path. Messages sent after the heal are never
    // acknowledged; the liveness checker must say the cluster did not converge.
    let caught = (0..30u64).find(|&seed| {
        let cfg = SimConfig {
            bugs: Bugs {
                no_restart: true,
                ..Bugs::default()
            },
            ..faulty(seed, FlushDiskType::Sync)
        };
        let out = Sim::new(cfg.clone()).run();
        check(&cfg, &out.history)
            .violations
            .iter()
            .any(|v| matches!(v, Violation::NotConverged { acked: false, .. }))
    });
    assert!(
        caught.is_some(),
        "30 seeds of a broker that stays down and the liveness checker never fired"
    );
}

#[test]
fn after_the_heal_everything_sent_is_acknowledged_and_consumed() {
    let cfg = faulty(5, FlushDiskType::Async);
    let out = Sim::new(cfg.clone()).run();
    let report = check(&cfg, &out.history);
    assert!(report.ok(), "{:?}", report.violations);
    let after_heal = out
        .history
        .sent
        .iter()
        .filter(|(b, s)| {
            b.contains("-L") && **s == Some(rockfish_core::producer::SendStatus::SendOk)
        })
        .count();
    assert_eq!(after_heal, cfg.liveness_messages * cfg.producers);
}

#[test]
fn a_broker_that_closes_connections_is_run_as_the_driver_runs_it() {
    // One connection fewer than clients: the last client to reach the broker is closed as it
    // connects (`Output::Close`), told it lost its peer, and tries again later.
    let mut cfg = SimConfig {
        consumers: 3,
        ..SimConfig::smoke(7)
    };
    cfg.broker_limits.max_connections = cfg.producers + cfg.consumers - 1;
    let out = Sim::new(cfg.clone()).run();
    let closes = out
        .trace
        .iter()
        .filter(|l| l.contains("closes") && l.contains("too many connections"))
        .count();
    assert!(closes > 0, "the broker closed a connection");
    let report = check(&cfg, &out.history);
    assert!(report.ok(), "{:?}", report.violations);
    assert_eq!(
        report.delivered_distinct, report.acked,
        "all acked is consumed"
    );
    assert_eq!(report.acked, 240, "every send acknowledged");
}

#[test]
fn a_send_held_through_a_pause_meets_the_brokers_queue_wait_flow_control() {
    // A paused broker reads nothing; what reached it meanwhile is handled when it resumes,
    // with the time it arrived (`received_at`), as the real driver reports it. Sends that
    // waited longer than the broker's 200 ms are refused busy, and the producer retries.
    let mut busy = 0;
    for seed in 0..4 {
        let cfg = SimConfig {
            faults: Faults {
                pause_per_sec: 0.5,
                pause_ms: (500, 1_500),
                ..Faults::default()
            },
            ..SimConfig::smoke(seed)
        };
        let out = Sim::new(cfg.clone()).run();
        busy += out
            .trace
            .iter()
            .filter(|l| l.contains("TIMEOUT_CLEAN_QUEUE"))
            .count();
        let report = check(&cfg, &out.history);
        assert!(report.ok(), "seed {seed}: {:?}", report.violations);
    }
    assert!(
        busy > 0,
        "some send waited out a pause and was refused busy"
    );
}

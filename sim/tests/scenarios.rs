//! Scenario files: every built-in scenario holds over a sweep of seeds and replays to the same
//! digest; bad files are refused with a reason; shrinking reduces a failing fault plan to the
//! faults that matter, and the shrunk file replays the same failure.

use rockfish_sim::{Delivery, Fault, SCENARIOS, ScenarioFile, Sim, check, shrink};

/// SIM_SCENARIO_SEEDS widens the sweep (CI sets it; 8 by default).
fn seeds() -> u64 {
    std::env::var("SIM_SCENARIO_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8)
}

#[test]
fn every_scenario_holds_and_replays_to_the_same_digest() {
    let n = seeds();
    for name in SCENARIOS {
        let file = ScenarioFile::built_in(name).expect("built-in");
        let (mut events, mut sim_ms, started) = (0u64, 0u64, std::time::Instant::now());
        for seed in 0..n {
            let cfg = file.config(seed);
            let out = Sim::new(cfg.clone()).run();
            let report = check(&cfg, &out.history);
            assert!(
                report.ok(),
                "{name} seed {seed}: {:?}\nreplay: rockfish sim replay {name} --seed {seed}",
                &report.violations[..report.violations.len().min(5)]
            );
            // Determinism: every 25th seed runs twice and gives the same digest.
            if seed % 25 == 0 {
                let again = Sim::new(file.config(seed)).run();
                assert_eq!(
                    out.digest, again.digest,
                    "{name} seed {seed} is not deterministic"
                );
            }
            events += out.events;
            sim_ms += out.sim_ms;
        }
        eprintln!(
            "{name}: {n} seeds, {events} events, {:.0} simulated s in {:.2} s",
            sim_ms as f64 / 1000.0,
            started.elapsed().as_secs_f64()
        );
    }
}

#[test]
fn the_scenario_files_on_disk_are_the_built_in_ones() {
    for name in SCENARIOS {
        let path = format!("{}/../scenarios/{name}.toml", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).expect(&path);
        let file = ScenarioFile::parse(&text).expect(&path);
        assert_eq!(file.name, *name, "{path}: the name matches the file");
        assert_eq!(Some(file), ScenarioFile::built_in(name));
    }
}

#[test]
fn swarm_draws_differ_by_seed_within_bounds() {
    let file = ScenarioFile::built_in("swarm").unwrap();
    let a = file.config(1);
    let b = file.config(2);
    assert_ne!(a.faults, b.faults, "the seed draws the fault rates");
    for seed in 0..50 {
        let c = file.config(seed);
        assert!((1..=3).contains(&c.producers));
        assert!((1..=4).contains(&c.consumers));
        assert!((20..=300).contains(&c.messages));
        assert!((0.0..=0.03).contains(&c.faults.drop));
        assert!((0.0..=0.3).contains(&c.faults.crash_per_sec));
    }
    assert_eq!(file.config(7), file.config(7));
}

#[test]
fn bad_scenario_files_are_refused_with_the_reason() {
    let cases = [
        ("name = \"x\"\n[faults]\ndrop = 1.5\n", "faults.drop"),
        ("name = \"x\"\n[faults]\ndrop = [0.2, 0.1]\n", "faults.drop"),
        (
            "name = \"x\"\n[topology]\nflush = \"SOMETIMES\"\nproducers = 1\nconsumers = 1\n",
            "SYNC_FLUSH",
        ),
        ("name = \"x\"\ninvariants = [\"be-nice\"]\n", "be-nice"),
        ("name = \"x\"\n[faults]\ndorp = 0.1\n", "dorp"),
        (
            "name = \"x\"\n[topology]\nflush = \"SYNC_FLUSH\"\nproducers = 0\nconsumers = 1\n",
            "topology.producers",
        ),
        ("[[[", "scenario file"),
    ];
    for (text, needle) in cases {
        let err = ScenarioFile::parse(text).expect_err(text).to_string();
        assert!(
            err.contains(needle),
            "{text:?}: {err:?} should name {needle:?}"
        );
    }
}

#[test]
fn narrowing_the_invariants_narrows_the_check() {
    let mut file = ScenarioFile::built_in("smoke").unwrap();
    file.invariants = vec!["acked-durable-not-lost".into()];
    let cfg = file.config(2);
    let mut out = Sim::new(cfg.clone()).run();
    out.history.delivered.push(Delivery::of(3, "never-sent"));
    assert!(check(&cfg, &out.history).ok(), "no-phantom is not judged");
    let all = ScenarioFile::built_in("smoke").unwrap().config(2);
    assert!(!check(&all, &out.history).ok());
}

#[test]
fn shrink_keeps_the_faults_that_matter_and_the_shrunk_file_replays_the_failure() {
    // A lying flush loses acknowledged sends only through power loss: every other fault is
    // noise that shrinking must strip.
    let mut file = ScenarioFile::built_in("power-loss-torn").unwrap();
    file.bugs.lying_flush = true;
    // Judged on lost acknowledged sends alone: what else the lost sends break (a consumer
    // that skips reused offsets after the heal breaks liveness) may need other faults.
    file.invariants = vec!["acked-durable-not-lost".into()];
    file.faults.drop = rockfish_sim::scenario::Bound::Value(0.01);
    file.faults.duplicate = rockfish_sim::scenario::Bound::Value(0.01);
    file.faults.partition_per_sec = rockfish_sim::scenario::Bound::Value(0.1);
    let seed = (0..40)
        .find(|&s| !check(&file.config(s), &Sim::new(file.config(s)).run().history).ok())
        .expect("a lying flush fails within 40 seeds");
    let cfg = file.config(seed);
    let shrunk = shrink(&cfg).expect("it fails, so it shrinks");
    assert_eq!(shrunk.invariant, "acked-durable-not-lost");
    let s = &shrunk.config;
    // Drops draw from the network's one stream: removing them all may move the frames the
    // loss depends on; halving must still take them down to a trace.
    assert!(
        s.faults.drop <= cfg.faults.drop / 8.0,
        "{} of {}: {:?}",
        s.faults.drop,
        cfg.faults.drop,
        shrunk.steps
    );
    assert_eq!(s.faults.duplicate, 0.0);
    assert_eq!(s.faults.partition_per_sec, 0.0);
    // (Disk faults draw from the disk's one stream: removing one may move the torn pages the
    // loss depends on, so a read bitflip may stay.)
    assert!(s.faults.crash_per_sec > 0.0 && s.faults.power_loss_share > 0.0);
    assert!(
        s.faults.disk.writeback < 1.0,
        "power loss must lose something"
    );
    assert!(s.messages <= cfg.messages);
    // Down to single fault events: a schedule that still holds a power loss, with no more
    // events than the run drew.
    let drawn = Sim::new(cfg.clone()).run().faults;
    let schedule = s
        .schedule
        .as_ref()
        .expect("the drawn faults became a schedule");
    assert!(
        schedule
            .iter()
            .any(|f| matches!(f.fault, Fault::Crash { power: true, .. })),
        "{schedule:?}"
    );
    assert!(schedule.len() <= drawn.len(), "{schedule:?} of {drawn:?}");
    // The shrunk file, written and read back, gives exactly the shrunk run and still fails.
    let text = ScenarioFile::exactly("shrunk", "test", s).to_toml();
    let back = ScenarioFile::parse(&text).expect(&text).config(seed);
    assert_eq!(&back, s);
    let out = Sim::new(back.clone()).run();
    let report = check(&back, &out.history);
    assert_eq!(
        report.violations.first().map(|v| v.invariant()),
        Some("acked-durable-not-lost")
    );
    // A passing run has nothing to shrink.
    assert!(shrink(&ScenarioFile::built_in("smoke").unwrap().config(0)).is_none());
}

/// Seeds the simulator once failed on, kept after the fix.
#[test]
fn regression_seeds() {
    // partitions 186: the broker's first REGISTER_BROKER was dropped and it waited the whole
    // 30 s register interval to try again, so sends after the heal found no route.
    // swarm 1649: a consumer's queue was dropped by a rebalance and assigned again while a
    // pull for it was in flight; the stale answer set the new queue's next offset to 32, and
    // offsets 0..31 were never consumed (acknowledged SYNC_FLUSH sends lost to the group).
    // swarm 1551: consumers reach a queue created after the heal only after a route poll and
    // a rebalance; the liveness phase was too short to see it (not a machine bug: the bound).
    // cluster 1060, namesrv-loss 1360: a consumer learned of a broker back in its route but
    // told it nothing until its next heartbeat round, 30 s on; a rebalance elsewhere asked
    // that broker who the members were, and two consumers owned one queue: messages sent in a
    // settled cluster were delivered twice.
    // cluster 1169: a oneway send reached a SYNC_FLUSH broker during a flush; nothing flushed
    // it after (no one waited for it), so consumers saw it 4.3 s late.
    // many-queues-power-loss 1145 (the simulator's own bug, with two topics): a consumer that
    // left and came back shared a connection with its predecessor; a pull the dead process
    // had left held on the broker was answered to the new one, whose request of that opaque
    // was for another queue, and a message was counted at an offset it never had.
    // orderly 1020: a consumer killed just before the heal held its queues' locks 60 s more,
    // and the group locks again every 20 s: the last batch, sent 75 s after the heal, waited
    // 4 s (the bound, not a machine bug: the scenario now sends it 85 s after).
    // cluster 44: a synced index sector whose last bytes were zeros was taken for one never
    // written, and a torn write over it left garbage in durable entry fields: a key vanished
    // from the index (MemDisk now tracks which sectors reached the media).
    // delay-power-loss 71, 251: a broker back with its clock 30 s behind took timers sent
    // then (due before the wheel's watermark) for delivered at its next restart: acknowledged
    // timer messages never arrived (timers now wait for the watermark).
    // retry-dlq 12, 13: the checker read a copy's local reconsume count (a local retry after
    // a send-back failed) as its stored one; retry-dlq 74: a message that failed four times by
    // chance was a dead letter, rightly, and the checker owed it to the group.
    // failover-controllers 516: a controller answered NOT_LEADER to a master's SyncStateSet
    // change it had already proposed (committed later), and the master dropped a joining
    // slave when it disconnected; holding a smaller set than the controllers, it served
    // consumers what only it held, the controllers elected that slave, and delivered messages
    // vanished (the master now counts every member of an unsettled change until it hears a
    // newer set).
    // pop 6: a message whose invisibility changed was alone in its new checkpoint; a snapshot
    // journaled the pop journal's replay start past its old checkpoint's record, and the
    // replayed move, finding nothing to move from, was dropped: after a restart the message
    // never came back. pop-sync 10: an offsets snapshot written before the log it summed up
    // was durable kept a pop's moved offset; a power loss took the checkpoint, and the
    // popped messages were behind the offset and in no checkpoint. pop 54, 73 (the checker's
    // own): an ack in flight when its consumer was killed may have been taken. pop 63: under
    // ASYNC_FLUSH a power loss took a message the clustering group had been served, and its
    // commit log offset came to hold an offset journal record; the group's send-back named
    // that offset and the broker stored the journal record as a retry (a phantom): the
    // broker now checks the record there is the message the send-back names (originMsgId).
    for (name, seed) in [
        ("failover-controllers", 516),
        ("partitions", 186),
        ("swarm", 1649),
        ("swarm", 1551),
        ("cluster", 1060),
        ("namesrv-loss", 1360),
        ("cluster", 1169),
        ("many-queues-power-loss", 1145),
        ("orderly", 1020),
        ("cluster", 44),
        ("delay-power-loss", 71),
        ("delay-power-loss", 251),
        ("retry-dlq", 12),
        ("retry-dlq", 13),
        ("retry-dlq", 74),
        ("pop", 6),
        ("pop-sync", 10),
        ("pop", 54),
        ("pop", 73),
        ("pop", 63),
    ] {
        // Built in, or a file of scenarios/ (the failover ones).
        let file = ScenarioFile::built_in(name).unwrap_or_else(|| {
            let path = format!("{}/../scenarios/{name}.toml", env!("CARGO_MANIFEST_DIR"));
            ScenarioFile::parse(&std::fs::read_to_string(&path).expect(&path)).expect(&path)
        });
        let cfg = file.config(seed);
        let out = Sim::new(cfg.clone()).run();
        let report = check(&cfg, &out.history);
        assert!(report.ok(), "{name} seed {seed}: {:?}", report.violations);
    }
}

#[test]
fn the_timeline_draws_lanes_frames_and_faults() {
    let file = ScenarioFile::built_in("cluster").unwrap();
    let seed = (0..20)
        .find(|&s| {
            let out = Sim::new(file.config(s)).run();
            out.history.crashes > 0 && out.trace.iter().any(|l| l.contains(" drop "))
        })
        .expect("a cluster seed with a crash and a drop");
    let out = Sim::new(file.config(seed)).run();
    let body = out.history.delivered[0].body.clone();
    let page = rockfish_sim::timeline::render(
        "cluster",
        &out.nodes,
        &out.trace,
        Some((&body, "a made-up violation")),
    );
    assert!(page.starts_with("<!doctype html>"));
    for lane in &out.nodes {
        assert!(page.contains(lane.as_str()), "lane {lane}");
    }
    assert_eq!(
        out.nodes.len(),
        9,
        "2 name servers, 2 brokers, 2 producers, 2 consumers, 1 tagged consumer"
    );
    assert!(page.contains(r#"class="req""#) && page.contains(r#"class="resp""#));
    assert!(page.contains(r#"class="fault""#), "the crash is marked");
    assert!(page.contains(r#"class="drop""#), "the drop is marked");
    assert!(page.contains(r#"class="deliver""#));
    assert!(
        page.contains(r#"class="ack""#),
        "acknowledgements are marked"
    );
    assert!(page.contains(r#"class="flush""#), "flushes are marked");
    // The culprit message: every event of it banded, the first one a target to jump to.
    assert!(page.contains(r#"id="culprit""#) && page.contains("a made-up violation"));
    assert!(page.contains(r#"id="zoom""#), "the page zooms");
    // Trace text is escaped, never markup.
    let odd = vec!["t=5 broker 1 <script> crash".to_string()];
    let page = rockfish_sim::timeline::render("x", &out.nodes, &odd, None);
    assert!(!page.contains("<script> crash") && page.contains("&lt;script&gt; crash"));
}

#[test]
fn clock_skew_reaches_the_machines() {
    let file = ScenarioFile::built_in("clock-skew").unwrap();
    let skewed = file.config(1);
    assert!(skewed.faults.clock_skew_ms.1 >= 60_000);
    let mut level = skewed.clone();
    level.faults.clock_skew_ms = (0, 0);
    let (a, b) = (Sim::new(skewed.clone()).run(), Sim::new(level).run());
    assert_ne!(
        a.digest, b.digest,
        "skewed clocks change what the machines do"
    );
    assert!(check(&skewed, &a.history).ok());
}

#[test]
fn consume_power_loss_consumers_consume_while_the_broker_loses_power() {
    // The topic exists before the run, so consumers consume during the safety phase, between
    // and after power losses, not only once faults stop.
    let file = ScenarioFile::built_in("consume-power-loss").unwrap();
    let (mut judged, mut consuming) = (0, 0);
    for seed in 0..6 {
        let cfg = file.config(seed);
        let out = Sim::new(cfg.clone()).run();
        let h = &out.history;
        let Some(first) = h.crash_log.iter().find(|c| c.power) else {
            continue;
        };
        judged += 1;
        let during = h
            .delivered
            .iter()
            .filter(|d| d.at > first.at && d.at < cfg.safety_ms)
            .count();
        // A seed whose broker stays down (or whose consumers wait out a lost pull) may see
        // none; most must.
        if during > 0 {
            consuming += 1;
        }
    }
    assert!(judged >= 3, "power losses happened in most seeds");
    assert!(
        consuming * 2 >= judged,
        "only {consuming} of {judged} seeds delivered between the first power loss and the end \
         of the safety phase"
    );
}

#[test]
fn every_scenario_consumes_while_its_faults_fly() {
    // The topic exists before the run, so consumers know its route before the safety phase's
    // faults start and consume through them (a consumer-side loss bug hides from a run whose
    // first delivery comes after the heal). The auto-created-topic path, where consumers learn
    // the route at their 30 s refresh, stays covered by `sim.rs`'s fault sweeps.
    for name in SCENARIOS {
        let file = ScenarioFile::built_in(name).expect("built-in");
        let mut seeds_consuming = 0;
        for seed in 0..4 {
            let cfg = file.config(seed);
            let out = Sim::new(cfg.clone()).run();
            let during = out
                .history
                .delivered
                .iter()
                .filter(|d| d.at < cfg.safety_ms)
                .count();
            if during > 0 {
                seeds_consuming += 1;
            }
        }
        assert!(
            seeds_consuming >= 3,
            "{name}: deliveries during the safety phase in only {seeds_consuming} of 4 seeds"
        );
    }
}

#[test]
fn a_run_replays_exactly_from_its_own_fault_events() {
    // The faults a run drew, injected as a schedule, give the very same run: a shrink that
    // removes events starts from the failure itself.
    for name in ["cluster", "broker-lost", "orderly"] {
        let cfg = ScenarioFile::built_in(name).unwrap().config(3);
        let out = Sim::new(cfg.clone()).run();
        assert!(!out.faults.is_empty(), "{name}: some faults drawn");
        let mut scheduled = cfg.clone();
        scheduled.schedule = Some(out.faults.clone());
        let again = Sim::new(scheduled).run();
        assert_eq!(again.digest, out.digest, "{name}");
        assert_eq!(again.faults, out.faults, "{name}");
    }
}

#[test]
fn pop_consumers_consume_return_and_dead_letter_while_faults_fly() {
    // The pop scenarios are not vacuous: pop consumers receive while the faults fly, un-acked
    // messages come back as copies reconsumed once more, changes of invisibility are
    // answered, acks are answered SUCCESS, and poison messages end in %DLQ%SimPop.
    for name in ["pop", "pop-sync"] {
        let file = ScenarioFile::built_in(name).expect("built-in");
        let (mut during, mut returned, mut changed, mut acked, mut dead, mut power) =
            (0, 0, 0, 0, 0, 0);
        for seed in 0..4 {
            let cfg = file.config(seed);
            let out = Sim::new(cfg.clone()).run();
            let h = &out.history;
            during += h
                .pop_delivered
                .iter()
                .filter(|d| d.at < cfg.safety_ms)
                .count();
            returned += h.pop_delivered.iter().filter(|d| d.reconsumed > 0).count();
            changed += h
                .pop_changes
                .iter()
                .filter(|c| c.outcome == rockfish_sim::PopOutcome::Ok)
                .count();
            acked += h
                .pop_acks
                .iter()
                .filter(|a| a.outcome == rockfish_sim::PopOutcome::Ok)
                .count();
            dead += h.pop_dead_letters.len();
            power += h.power_losses;
        }
        assert!(
            during > 100,
            "{name}: {during} pop deliveries during the faults"
        );
        assert!(returned > 10, "{name}: {returned} copies came back");
        assert!(changed > 5, "{name}: {changed} changes of invisibility");
        assert!(acked > 400, "{name}: {acked} acks");
        assert!(dead > 3, "{name}: {dead} dead letters");
        assert!(power > 0, "{name}: no power loss in 4 seeds");
    }
}

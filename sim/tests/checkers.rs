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
# Slow syncs: served-but-unflushed messages sit exposed long enough for a power loss.
sync_ms = [10, 40]
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
    catches(
        UNFLUSHED,
        &["delivered-not-vanished", "one-offset-one-message"],
        8,
    );
}

/// Asserts seeds `0..seeds` of `text` break each of `invariants` at least once, and that the
/// same runs with the machines whole break none of them.
fn catches(text: &str, invariants: &[&str], seeds: u64) {
    let runs = broken(text, seeds);
    for invariant in invariants {
        assert!(
            runs.iter().any(|r| r.contains(invariant)),
            "{seeds} seeds and {invariant} never fired: {runs:?}"
        );
    }
    for (seed, r) in broken(&whole(text), seeds).iter().enumerate() {
        assert!(
            invariants.iter().all(|i| !r.contains(i)),
            "seed {seed}: the whole machines broke {r:?}"
        );
    }
}

/// A fault-free cluster (two consumers, `extra` more topology lines) with one broken part:
/// whatever fires there is the broken part's doing.
fn quiet(bug: &str, messages: u32, extra: &str) -> String {
    format!(
        "name = \"{bug}\"\n[topology]\nconsumers = 2\n{extra}\n[workload]\ntopic_created = true\n\
         mixed_sends = true\nmessages = {messages}\n[bugs]\n{bug} = true\n"
    )
}

#[test]
fn acked_slot_checker_catches_a_broker_that_acks_the_wrong_offset() {
    // The broken machine: SEND_OK names the queue offset after the one the message got. Every
    // message is delivered, nothing vanishes: only reading the queues back shows the lie.
    let text = quiet("ack_wrong_offset", 100, "");
    catches(&text, &["acked-stored-at-offset"], 2);
}

#[test]
fn exclusion_checker_catches_an_orderly_consumer_that_ignores_its_lock() {
    // The broken machine: orderly consumers pull and consume queues they hold no broker lock
    // for, so when views of the group differ (a restarted broker does not know every member
    // yet) two consumers work inside one queue at once.
    catches(ORDERLY_LOCKS, &["orderly-exclusive"], 4);
}

/// Orderly consumers while brokers crash (their lock tables with them) and members churn.
const ORDERLY_LOCKS: &str = r#"
name = "orderly-lock-broken"
[topology]
brokers = 2
consumers = 3
[workload]
topic_created = true
messages = 300
send_interval_ms = 10
orderly = true
[phases]
safety_ms = 15_000
[faults]
latency_ms = [1, 20]
crash_per_sec = 0.2
down_ms = [500, 3_000]
churn_per_sec = 0.3
[bugs]
orderly_ignores_lock = true
"#;

#[test]
fn orderly_exclusion_holds_across_broker_restarts_and_rebalances() {
    // Found by the exclusion checker, seed 16: a broker restarted (its lock table lost) and
    // granted a queue to a newcomer while the old owner still trusted the lock it had been
    // granted before the crash. A started broker now grants no lock for 35 s. The consumer
    // also kept its broker lock only until it dropped a queue, even with its application
    // inside a batch of it; it now waits for the answer.
    let text = whole(ORDERLY_LOCKS);
    let file = ScenarioFile::parse(&text).expect("valid scenario");
    let cfg = file.config(16);
    let out = Sim::new(cfg.clone()).run();
    let report = check(&cfg, &out.history);
    assert!(report.ok(), "seed 16: {:?}", report.violations);
}

#[test]
fn owner_and_duplicate_checkers_catch_consumers_that_take_every_queue() {
    // The broken machine: each clustering consumer takes all of the topic's queues, so the
    // group consumes everything once per member, in a cluster with no faults at all.
    let text = quiet("rebalance_takes_all", 50, "");
    catches(&text, &["one-owner-per-queue", "settled-no-duplicates"], 2);
}

#[test]
fn latency_checker_catches_a_broker_that_loses_long_poll_wakeups() {
    // The broken machine: a message arriving does not wake the pulls held for its queue; they
    // are answered only when their hold (15 s) runs out. Everything still arrives, late.
    let text = quiet("lost_wakeup", 50, "");
    catches(&text, &["delivery-latency"], 2);
}

#[test]
fn busy_timer_checker_catches_a_consumer_that_spins_waiting_for_a_lock() {
    // The broken machine (found by this checker's first run): an orderly consumer waiting for
    // a restarted broker to grant locks again kept a pull back-off that had run out, so its
    // timer was due again each time it fired: one wake-up per simulated millisecond.
    let text = ORDERLY_LOCKS.replace("orderly_ignores_lock = true", "spins_while_unlocked = true");
    catches(&text, &["timers-not-busy"], 4);
}

#[test]
fn tagged_checker_catches_a_broker_that_filters_on_the_wrong_tag_codes() {
    // The broken machine: the broker compares consume queue tag codes with the wrong hash,
    // so a tag subscription's pulls find nothing (the client's own tag check cannot bring
    // back what the broker never served). "*" subscriptions are untouched.
    let text = quiet("tag_codes_wrong", 60, "tagged_consumers = 1");
    catches(&text, &["tagged-exact"], 2);
}

#[test]
fn store_checker_catches_a_lying_flush_without_any_power_loss() {
    // The broken machine: flushes are reported done without syncing. No fault at all hits
    // the run, so nothing is lost and every other checker is content; but a power loss at
    // the end would keep less than the broker believes flushed (and SYNC_FLUSH acked).
    let text = quiet("lying_flush", 50, "");
    catches(&text, &["store-consistent"], 2);
}

const LOST: &str = r#"
name = "broker-lost-broken"
[topology]
brokers = 2
consumers = 2
[workload]
topic_created = true
messages = 100
[phases]
liveness_ms = 200_000
settled_ms = 160_000
[faults]
broker_lost_share = 1.0
[[schedule]]
at = 3000
fault = "crash"
broker = 2
power = true
[bugs]
namesrv_never_expires = true
"#;

#[test]
fn routes_checker_catches_a_name_server_that_never_expires_a_lost_broker() {
    // The broken machine: name servers never expire a silent broker. One that lost power for
    // good closes no connection, so only expiry (120 s) takes it out of the routes.
    catches(LOST, &["routes-converge"], 2);
}

const DELAYED: &str = r#"
name = "delay-broken"
[topology]
consumers = 2
[workload]
topic_created = true
messages = 100
delay_share = 0.5
[bugs]
delay_early = true
"#;

#[test]
fn delay_checker_catches_a_broker_that_delivers_delayed_messages_early() {
    // The broken machine: the schedule service delivers each entry half its delay early.
    catches(DELAYED, &["delay-not-early"], 2);
}

const RETRIES: &str = r#"
name = "retry-broken"
[topology]
consumers = 2
[workload]
topic_created = true
messages = 100
poison_share = 0.1
max_reconsume_times = 2
[bugs]
"#;

#[test]
fn delay_checker_catches_a_broker_that_retries_without_backoff() {
    // The broken machine: a sent-back message goes straight into the retry topic.
    catches(
        &format!("{RETRIES}retry_undelayed = true\n"),
        &["delay-not-early"],
        2,
    );
}

#[test]
fn dead_letter_checker_catches_a_broker_that_gives_up_one_retry_early() {
    // The broken machine: a message becomes a dead letter after max_reconsume_times - 1
    // reconsumptions.
    catches(
        &format!("{RETRIES}dlq_early = true\n"),
        &["dead-letter-exact"],
        2,
    );
}

#[test]
fn dead_letter_checker_catches_a_broker_that_never_gives_up() {
    // The broken machine: a failing message is retried forever, never a dead letter.
    catches(
        &format!("{RETRIES}dlq_never = true\n"),
        &["dead-letter-exact"],
        2,
    );
}

const TIMERS: &str = r#"
name = "timer-broken"
[topology]
consumers = 2
[workload]
topic_created = true
messages = 100
timer_share = 0.5
[bugs]
timer_early = true
"#;

#[test]
fn delay_checker_catches_a_broker_that_delivers_timers_early() {
    // The broken machine: the timing wheel delivers each timer a second early.
    catches(TIMERS, &["delay-not-early"], 2);
}

/// Transactions in a quiet cluster, some ending late (racing the check-back) or UNKNOW, and
/// producers killed mid-transaction.
const TRANSACTIONS: &str = r#"
name = "tx-broken"
[topology]
producers = 2
consumers = 2
[workload]
topic_created = true
messages = 100
transaction_share = 0.5
[phases]
safety_ms = 10_000
liveness_ms = 60_000
[faults]
client_crash_per_sec = 0.05
down_ms = [500, 2_000]
[bugs]
"#;

#[test]
fn transaction_checker_catches_a_broker_that_commits_a_rollback() {
    // The broken machine: END_TRANSACTION's rollback commits the message.
    catches(
        &format!("{TRANSACTIONS}tx_rollback_commits = true\n"),
        &["transaction-exact"],
        2,
    );
}

#[test]
fn transaction_checker_catches_a_broker_that_commits_twice() {
    // The broken machine: a late end for a half already handed to its check, or a repeated
    // answer, is accepted (as Apache does): the message is stored twice.
    catches(
        &format!("{TRANSACTIONS}tx_ends_twice = true\n"),
        &["transaction-exact"],
        3,
    );
}

#[test]
fn transaction_checker_catches_a_broker_that_never_checks_back() {
    // The broken machine: no check-back is ever sent; transactions left UNKNOW or whose
    // producer died stay undecided.
    catches(
        &format!("{TRANSACTIONS}tx_never_checks = true\n"),
        &["transaction-exact"],
        2,
    );
}

#[test]
fn tagged_checker_catches_a_broker_that_inverts_an_sql_subscription() {
    // The broken machine: an SQL92 subscription is served the messages it does not match
    // (and none of those it does).
    let text = "name = \"sql_inverted\"\n[topology]\nconsumers = 2\ntagged_consumers = 1\n\
                [workload]\ntopic_created = true\nmixed_sends = true\nmessages = 60\n\
                tagged_sql = true\n[bugs]\nsql_inverted = true\n";
    catches(text, &["tagged-exact"], 2);
}

/// A broker group of a master and a slave whose master's process dies and stays down long
/// enough for consumers to read from, and commit to, the slave.
const GROUPS: &str = r#"
name = "ha-broken"
[topology]
flush = "ASYNC_FLUSH"
slaves = 1
master_role = "SYNC_MASTER"
producers = 1
consumers = 2
[workload]
topic_created = true
messages = 300
send_interval_ms = 50
[phases]
safety_ms = 50_000
liveness_ms = 60_000
[faults]
latency_ms = [1, 10]
down_ms = [40_000, 40_000]
[[schedule]]
at = 5000
fault = "crash"
broker = 1
power = false
[bugs]
"#;

#[test]
fn sync_master_checker_catches_a_master_that_acks_before_its_slave() {
    // The broken machine: a SYNC_MASTER answers SEND_OK as soon as the message is stored
    // locally, without waiting for its slave's durable report.
    catches(
        &format!("{GROUPS}ha_ack_before_slave = true\n"),
        &["sync-master-replicated"],
        2,
    );
}

#[test]
fn replica_checker_catches_a_slave_that_writes_its_own_log() {
    // The broken machine: a slave journals the consumer offsets committed to it (while its
    // master is down) into its own commit log, which then is no longer its master's.
    catches(
        &format!("{GROUPS}slave_writes = true\n"),
        &["replica-prefix"],
        4,
    );
}

#[test]
fn sync_master_checker_catches_a_master_that_trusts_a_slave_report_past_its_end() {
    // The broken machine (Apache #1155/#3015): a master that lost its unflushed tail to a
    // power loss believes its slave's report of the longer log it had, and acks its next
    // sends (the liveness phase's) at those offsets at once, though the slave holds other
    // messages there.
    let text = GROUPS
        .replace("down_ms = [40_000, 40_000]", "down_ms = [1_000, 1_000]")
        .replace("broker = 1\npower = false", "broker = 1\npower = true")
        // The sends end soon after the power loss: the master's log is still shorter than
        // the slave's when the slave sees the stream is gone and reports again.
        .replace("messages = 300", "messages = 110")
        + "ha_trust_report = true\n";
    catches(&text, &["sync-master-replicated"], 4);
}

/// Controller mode: three name servers embedding the controllers, one group of two replicas
/// (nodes 3 and 4; the controllers first elect node 3, the lower id), consumers consuming.
const CONTROLLED: &str = r#"
name = "controller-broken"
[topology]
flush = "ASYNC_FLUSH"
name_servers = 3
slaves = 1
master_role = "SYNC_MASTER"
controller = true
producers = 1
consumers = 2
[workload]
topic_created = true
messages = 400
send_interval_ms = 40
[phases]
safety_ms = 40_000
liveness_ms = 80_000
[faults]
latency_ms = [1, 10]
down_ms = [20_000, 20_000]
"#;

#[test]
fn vanish_checker_catches_a_controller_that_elects_outside_the_sync_state_set() {
    // The slave is cut from its master long enough to leave the SyncStateSet; consumers then
    // read what only the master holds. The master dies: a broken controller elects the
    // slave, whose log lacks what was delivered. (Consumers find the topic's route at their
    // 30 s refresh: the master is elected after their first look.)
    let text = format!(
        "{}[[schedule]]\nat = 33_000\nfault = \"cut\"\na = 3\nb = 4\nms = 14_000\n\
         [[schedule]]\nat = 44_000\nfault = \"crash\"\nbroker = 3\npower = false\n\
         [bugs]\nelect_outside_sync_set = true\n",
        CONTROLLED
            .replace("messages = 400", "messages = 1200")
            .replace("safety_ms = 40_000", "safety_ms = 60_000")
    );
    catches(&text, &["delivered-not-vanished"], 2);
}

#[test]
fn replica_checker_catches_an_old_master_that_keeps_its_tail() {
    // The master writes while cut from its slave, then dies; the slave is elected (it is
    // still in the SyncStateSet) and takes new writes. The old master returns without
    // cutting the tail the new master never had: two histories.
    let text = format!(
        "{CONTROLLED}[[schedule]]\nat = 8000\nfault = \"cut\"\na = 3\nb = 4\nms = 2_500\n\
         [[schedule]]\nat = 9500\nfault = \"crash\"\nbroker = 3\npower = false\n\
         [bugs]\nno_truncation = true\n"
    );
    catches(&text, &["replica-prefix"], 2);
}

#[test]
fn epoch_checker_catches_a_replica_that_takes_over_by_itself() {
    // The slave is cut from its live master: a broken replica takes over in the epoch it
    // follows, without the controller. Two masters in one epoch.
    let text = format!(
        "{CONTROLLED}[[schedule]]\nat = 5000\nfault = \"cut\"\na = 3\nb = 4\nms = 15_000\n\
         [bugs]\nself_promote = true\n"
    );
    catches(&text, &["one-master-per-epoch"], 2);
}

#[test]
fn vanish_checker_catches_a_replica_that_serves_what_its_master_never_confirmed() {
    // The master writes while cut from its slave (a tail the slave never gets), is then
    // isolated and deposed: the slave is elected, and dies. The old master returns, follows
    // the dead new master (so nothing cuts its tail yet) and, the route listing no master,
    // consumers read from it. A broken replica serves them its unconfirmed tail; when the
    // new master returns the tail is cut, and what was delivered is gone.
    let text = format!(
        "{}[[schedule]]\nat = 8_000\nfault = \"cut\"\na = 3\nb = 4\nms = 2_000\n\
         [[schedule]]\nat = 9_000\nfault = \"isolate\"\nnode = 3\nms = 12_000\n\
         [[schedule]]\nat = 15_000\nfault = \"crash\"\nbroker = 4\npower = false\n\
         [bugs]\nslave_serves_unconfirmed = true\n",
        CONTROLLED.replace("messages = 400", "messages = 800")
    );
    catches(&text, &["delivered-not-vanished"], 2);
}

/// Pop consumers (and a clustering group) in a quiet cluster: the application leaves some
/// messages un-acked, changes the invisibility of some, and never acks poison ones.
const POP: &str = r#"
name = "pop-broken"
[topology]
consumers = 1
pop_consumers = 2
[workload]
topic_created = true
messages = 60
poison_share = 0.05
pop_unacked_share = 0.2
pop_change_share = 0.1
pop_retry_max = 2
max_reconsume_times = 2
[bugs]
"#;

#[test]
fn pop_resurrection_checker_catches_a_broker_that_forgets_acks() {
    // The broken machine: an ack is answered SUCCESS but neither journaled nor decided, so
    // the message comes back (as a copy reconsumed once more) when its invisible time lapses.
    catches(
        &format!("{POP}pop_ack_forgotten = true\n"),
        &["pop-acked-not-resurrected"],
        2,
    );
}

#[test]
fn pop_early_checker_catches_a_broker_that_revives_early() {
    // The broken machine: a checkpoint falls due after a quarter of the invisible time the
    // pop asked for.
    catches(
        &format!("{POP}pop_early_revive = true\n"),
        &["pop-not-back-early"],
        2,
    );
}

#[test]
fn pop_early_checker_catches_a_broker_that_hands_a_slot_out_twice() {
    // The broken machine: a pop moves the group's offset in memory only, so a broker that
    // crashes (a process crash: the page cache survives) before its next offsets snapshot
    // hands the same slots out again, while they are invisible (and some already acked).
    // Restarts are quick: consumers ask again (after 300 ms) while the slots are invisible.
    let text = format!(
        "{}[faults]\nlatency_ms = [1, 10]\ncrash_per_sec = 0.3\ndown_ms = [50, 200]\n\
         [bugs]\npop_offset_unjournaled = true\n",
        POP.replace("[bugs]\n", "")
    );
    catches(
        &text,
        &["pop-not-back-early", "pop-acked-not-resurrected"],
        2,
    );
}

#[test]
fn pop_consumed_checker_catches_a_broker_whose_revive_drops_the_message() {
    // The broken machine: a checkpoint that falls due is decided without its retry copy
    // being stored: what was not acked is gone (poison never reaches the DLQ either).
    catches(
        &format!("{POP}pop_revive_drops = true\n"),
        &["pop-consumed"],
        2,
    );
}

//! The CLI as a user runs it: `rockfish standalone` as a process, then `produce`, `consume`,
//! the `admin` commands (mqadmin's names), a short `bench`, and a SIGTERM that must shut down
//! cleanly (the next start reports a clean checkpoint).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output};

mod common;

use common::{BIN, Standalone};

fn start(dir: &Path) -> Standalone {
    common::start(dir, &["--segment-size", "8388608"], "info", true)
}

fn run(args: &[&str]) -> Output {
    let out = Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "rockfish {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `rockfish args` expecting it to fail; its output, for what it said.
fn failing(args: &[&str]) -> Output {
    let out = Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(!out.status.success(), "rockfish {args:?} succeeded");
    out
}

fn stdout(args: &[&str]) -> String {
    String::from_utf8(run(args).stdout).unwrap()
}

fn sigterm(child: &Child) {
    // SAFETY: plain kill(2) on our own child's pid.
    let rc = unsafe { libc_kill(child.id() as i32, 15) };
    assert_eq!(rc, 0);
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

#[test]
fn tools_work_against_standalone_and_sigterm_is_clean() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = start(dir.path());
    let ns = s.namesrv.clone();

    let sent = stdout(&[
        "produce",
        "-n",
        &ns,
        "-t",
        "ToolTopic",
        "-b",
        "hello tools",
        "--tag",
        "TagA",
        "-k",
        "order-7",
        "-c",
        "3",
    ]);
    assert_eq!(
        sent.lines()
            .filter(|l| l.starts_with("SEND_OK msgId="))
            .count(),
        3,
        "{sent}"
    );
    let msg_id = sent
        .lines()
        .next()
        .unwrap()
        .split("offsetMsgId=")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_string();

    let consumed = stdout(&[
        "consume",
        "-n",
        &ns,
        "-t",
        "ToolTopic",
        "--from-beginning",
        "-c",
        "3",
        "--idle-secs",
        "5",
    ]);
    assert_eq!(
        consumed.matches("body=hello tools").count(),
        3,
        "{consumed}"
    );

    let update = stdout(&[
        "admin",
        "-n",
        &ns,
        "updateTopic",
        "-t",
        "Orders",
        "-r",
        "2",
        "-w",
        "2",
    ]);
    assert!(update.contains("success"), "{update}");
    let mut listed = String::new();
    for _ in 0..50 {
        listed = stdout(&["admin", "-n", &ns, "topicList"]);
        if listed.contains("Orders") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        listed.lines().any(|l| l == "Orders") && listed.lines().any(|l| l == "ToolTopic"),
        "{listed}"
    );
    let route = stdout(&["admin", "-n", &ns, "topicRoute", "-t", "Orders"]);
    assert!(route.contains("\"writeQueueNums\": 2"), "{route}");
    let status = stdout(&["admin", "-n", &ns, "topicStatus", "-t", "ToolTopic"]);
    assert_eq!(status.lines().count(), 1 + 4, "{status}");
    let cluster = stdout(&["admin", "-n", &ns, "clusterList"]);
    assert!(
        cluster.contains("DefaultCluster") && cluster.contains("broker-a"),
        "{cluster}"
    );
    let by_key = stdout(&[
        "admin",
        "-n",
        &ns,
        "queryMsgByKey",
        "-t",
        "ToolTopic",
        "-k",
        "order-7",
    ]);
    // mqadmin's table: a header and one row per message.
    assert!(by_key.starts_with("#Message ID"), "{by_key}");
    assert_eq!(by_key.lines().count(), 1 + 3, "{by_key}");
    let by_id = stdout(&["admin", "-n", &ns, "queryMsgById", "-i", &msg_id]);
    // A client-side id decodes to no known broker: refused, nothing dialled.
    // A send's line: `SEND_OK msgId=… offsetMsgId=… queue=… queueOffset=…`.
    let field = |name: &str| {
        sent.lines()
            .next()
            .unwrap()
            .split(&format!(" {name}="))
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .to_string()
    };
    let uniq = field("msgId");
    let refused = failing(&["admin", "-n", &ns, "queryMsgById", "-i", &uniq]);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("does not know"));
    // mqadmin's detail block, the body with it.
    assert!(by_id.starts_with("OffsetID:            "), "{by_id}");
    assert!(by_id.contains("Keys:                [order-7]"), "{by_id}");
    assert!(
        by_id.contains("Message Body:        hello tools"),
        "{by_id}"
    );
    // That client-side id is the message's unique key: found by it.
    let by_uniq = stdout(&[
        "admin",
        "-n",
        &ns,
        "queryMsgByUniqueKey",
        "-i",
        &uniq,
        "-t",
        "ToolTopic",
    ]);
    assert!(
        by_uniq.contains("Message Body:        hello tools") && by_uniq.contains(&uniq),
        "{by_uniq}"
    );
    failing(&[
        "admin",
        "-n",
        &ns,
        "queryMsgByUniqueKey",
        "-i",
        "0A0B",
        "-t",
        "ToolTopic",
    ]);
    // And by its queue and offset, as the send reported them.
    let (queue, offset) = (field("queue"), field("queueOffset"));
    let at = stdout(&[
        "admin",
        "-n",
        &ns,
        "queryMsgByOffset",
        "-t",
        "ToolTopic",
        "-b",
        "broker-a",
        "-i",
        &queue,
        "-o",
        &offset,
    ]);
    assert!(
        at.contains("Message Body:        hello tools") && at.contains(&uniq),
        "{at}"
    );
    failing(&[
        "admin",
        "-n",
        &ns,
        "queryMsgByOffset",
        "-t",
        "ToolTopic",
        "-b",
        "broker-a",
        "-i",
        &queue,
        "-o",
        "999",
    ]);
    let progress = stdout(&[
        "admin",
        "-n",
        &ns,
        "consumerProgress",
        "-g",
        "nobody",
        "-t",
        "ToolTopic",
    ]);
    assert!(
        progress.contains("Diff Total: 3"),
        "a group that never committed is 3 behind: {progress}"
    );
    // A consumer group's config: what the broker stores (its subscriptionGroup.json), not
    // only what the command printed.
    let groups_file = dir.path().join("config/subscriptionGroup.json");
    let stored = |want: &dyn Fn(&serde_json::Value) -> bool| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let json: serde_json::Value = std::fs::read(&groups_file)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default();
            if want(&json["subscriptionGroupTable"]) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "subscriptionGroup.json never showed it: {json}"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    let updated = stdout(&[
        "admin",
        "-n",
        &ns,
        "updateSubGroup",
        "-g",
        "ToolGroup",
        "-r",
        "3",
        "-d",
        "false",
        "-o",
        "true",
    ]);
    assert!(
        updated.contains("success")
            && updated.contains("retryMaxTimes=3")
            && updated.contains("consumeMessageOrderly=true"),
        "{updated}"
    );
    stored(&|t| {
        t["ToolGroup"]["retryMaxTimes"] == 3
            && t["ToolGroup"]["consumeBroadcastEnable"] == false
            && t["ToolGroup"]["consumeMessageOrderly"] == true
    });
    let dropped = stdout(&["admin", "-n", &ns, "deleteSubGroup", "-g", "ToolGroup"]);
    assert!(
        dropped.contains("delete subscription group [ToolGroup]"),
        "{dropped}"
    );
    stored(&|t| t.is_object() && t.get("ToolGroup").is_none());

    let deleted = stdout(&["admin", "-n", &ns, "deleteTopic", "-t", "Orders"]);
    assert!(deleted.contains("success"), "{deleted}");
    let bad = failing(&["admin", "-n", &ns, "topicRoute", "-t", "Nope"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("Nope"));

    let bench = stdout(&[
        "bench",
        "produce",
        "-n",
        &ns,
        "-t",
        "BenchTopic",
        "-s",
        "256",
        "-w",
        "4",
        "-d",
        "1",
    ]);
    assert!(
        bench.contains("produce total:") && bench.contains("p999"),
        "{bench}"
    );
    let many = stdout(&[
        "bench", "produce", "-n", &ns, "-t", "Many", "--topics", "20", "--warmup", "1", "-d", "1",
    ]);
    assert!(
        many.contains("warm-up: 20 topics, 20 sends") && many.contains("0 failed"),
        "{many}"
    );
    let bench = stdout(&["bench", "consume", "-n", &ns, "-t", "BenchTopic", "-d", "1"]);
    assert!(bench.contains("consume total:"), "{bench}");

    sigterm(&s.child);
    let status = s.child.wait().unwrap();
    assert!(status.success(), "SIGTERM exits cleanly: {status:?}");
    let mut log = String::new();
    std::io::Read::read_to_string(s.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert!(log.contains("shutting down"), "{log}");
    // A new data directory is created, not recovered.
    assert!(
        log.contains("store created") && !log.contains("store recovered"),
        "{log}"
    );

    let mut s = start(dir.path());
    let mut first = String::new();
    let mut err = BufReader::new(s.stderr.as_mut().unwrap());
    while err.read_line(&mut first).unwrap() > 0 {
        if first.contains("store recovered") {
            break;
        }
    }
    assert!(first.contains("clean=true"), "{first}");
    s.child.kill().unwrap();
    s.child.wait().unwrap();
}

#[test]
fn sim_runs_and_replays_exactly() {
    // A built-in name and a scenario file from scenarios/, one summary row each.
    let smoke = format!("{}/../scenarios/smoke.toml", env!("CARGO_MANIFEST_DIR"));
    let out = run(&["sim", "run", "power-loss-torn", &smoke, "--seeds", "0..20"]);
    let text = String::from_utf8(out.stdout).unwrap();
    for name in ["power-loss-torn", "smoke"] {
        let row: Vec<&str> = text
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no row for {name}: {text}"))
            .split_whitespace()
            .collect();
        assert_eq!(row[1], "20", "{text}");
        assert_eq!(row.last(), Some(&"0"), "no failures: {text}");
    }
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.txt"), dir.path().join("b.txt"));
    let html = dir.path().join("t.html");
    let first = stdout(&[
        "sim",
        "replay",
        "power-loss-torn",
        "--seed",
        "7",
        "--trace",
        a.to_str().unwrap(),
        "--html",
        html.to_str().unwrap(),
    ]);
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        page.contains("<svg") && page.contains("broker 1"),
        "a timeline"
    );
    let second = stdout(&[
        "sim",
        "replay",
        "power-loss-torn",
        "--seed",
        "7",
        "--trace",
        b.to_str().unwrap(),
    ]);
    let digest = |s: &str| {
        s.lines()
            .find(|l| l.contains("digest"))
            .unwrap()
            .to_string()
    };
    assert_eq!(digest(&first), digest(&second));
    assert_eq!(
        std::fs::read(&a).unwrap(),
        std::fs::read(&b).unwrap(),
        "the same seed replays the same trace"
    );
    let unknown = Command::new(BIN)
        .args(["sim", "run", "nope"])
        .output()
        .unwrap();
    assert!(
        !unknown.status.success()
            && String::from_utf8_lossy(&unknown.stderr).contains("unknown scenario")
    );
}

#[test]
fn sim_shrink_writes_a_scenario_that_replays_the_failure() {
    // A scenario with a deliberately lying flush, power losses and network noise.
    let dir = tempfile::tempdir().unwrap();
    let bugged = dir.path().join("bugged.toml");
    let text = std::fs::read_to_string(format!(
        "{}/../scenarios/power-loss-torn.toml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
    .replace("messages = 200", "messages = 60")
    .replace("latency_ms = [1, 20]", "latency_ms = [1, 20]\ndrop = 0.01")
        + "\n[bugs]\nlying_flush = true\n";
    std::fs::write(&bugged, text).unwrap();
    let out = Command::new(BIN)
        .args(["sim", "run", bugged.to_str().unwrap(), "--seeds", "0..30"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "the lying flush is caught");
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    let shrink_line = printed
        .lines()
        .find(|l| l.trim_start().starts_with("shrink: "))
        .unwrap_or_else(|| panic!("a failure prints its shrink command: {printed}"));
    let seed = shrink_line.split_whitespace().last().unwrap().to_string();
    let shrunk = dir.path().join("shrunk.toml");
    let text = stdout(&[
        "sim",
        "shrink",
        bugged.to_str().unwrap(),
        "--seed",
        &seed,
        "--out",
        shrunk.to_str().unwrap(),
    ]);
    // A flush that lies loses acknowledged messages at a power loss, and (consumers consume
    // while faults fly) messages already delivered vanish with them; with no crash at all the
    // store's own check sees its flushed offset is not durable: any of them names it.
    let invariant = text
        .split("still breaks ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| c == '.' || c.is_whitespace()).next())
        .unwrap_or_else(|| panic!("the shrink names the invariant: {text}"))
        .to_string();
    assert!(
        [
            "acked-durable-not-lost",
            "delivered-not-vanished",
            "store-consistent"
        ]
        .contains(&invariant.as_str()),
        "{text}"
    );
    let file = std::fs::read_to_string(&shrunk).unwrap();
    assert!(file.contains("drop = 0.0"), "the noise is gone: {file}");
    let replay = Command::new(BIN)
        .args(["sim", "replay", shrunk.to_str().unwrap(), "--seed", &seed])
        .output()
        .unwrap();
    assert!(!replay.status.success());
    assert!(
        String::from_utf8_lossy(&replay.stderr).contains(&format!("invariant {invariant} broken")),
        "the shrunk file replays the same failure"
    );
}

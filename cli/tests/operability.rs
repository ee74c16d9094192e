//! What an operator runs against `rockfish standalone`: the mqadmin commands that read and
//! move a cluster's state (text and `--json`), the Prometheus endpoint under load, and the
//! web console in a real browser (headless Chromium; skipped when none is installed).

use std::io::{Read, Write};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use rockfish_net::sdk::{
    ConsumeFrom, ConsumeResult, ConsumerConfig, ConsumerConfigExt, Message, Producer,
    ProducerConfig, PushConsumer,
};

mod common;

use common::{BIN, Standalone};

/// resetOffsetByTime of the test's group to the first message.
const RESET_TO_START: &[&str] = &[
    "resetOffsetByTime",
    "-g",
    "ops-group",
    "-t",
    "OpsTopic",
    "-s",
    "0",
];

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "rockfish {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn admin(ns: &str, args: &[&str]) -> String {
    let mut all = vec!["admin", "-n", ns];
    all.extend_from_slice(args);
    ok(&all)
}

fn admin_json(ns: &str, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    serde_json::from_str(&admin(ns, &all)).unwrap()
}

/// One HTTP/1.1 exchange with the standalone's HTTP port: (status line, body).
fn exchange(s: &Standalone, method: &str, path: &str, body: &str) -> (String, String) {
    let addr = s.http.as_deref().expect("the standalone serves HTTP");
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        c,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut text = String::new();
    c.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    // Chunked bodies: good enough to search in.
    (head.lines().next().unwrap().to_string(), body.to_string())
}

fn http_get(s: &Standalone, path: &str) -> (String, String) {
    exchange(s, "GET", path, "")
}

/// The value of the first sample of `name` whose line holds every one of `labels`.
fn sample(metrics: &str, name: &str, labels: &[&str]) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(&format!("{name}{{")) && labels.iter().all(|x| l.contains(x)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "gave up waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn operator_commands_read_and_move_a_running_cluster() {
    let s = common::start_in_temp_dir(&[]);
    let ns = s.namesrv.clone();
    let rt = tokio::runtime::Runtime::new().unwrap();
    // A live producer and push consumer, as an application keeps them.
    let producer = rt.block_on(async {
        let p = Producer::start(ProducerConfig {
            group: "ops-producer".into(),
            namesrv_addrs: vec![ns.clone()],
            ..ProducerConfig::default()
        });
        for i in 0..20 {
            p.send(Message::new("OpsTopic", format!("m{i}").into_bytes()))
                .await
                .unwrap();
        }
        p
    });
    let consumer = rt.block_on(async {
        PushConsumer::start(
            ConsumerConfig {
                group: "ops-group".into(),
                namesrv_addrs: vec![ns.clone()],
                consume_from: ConsumeFrom::FirstOffset,
                ..ConsumerConfig::default()
            }
            .subscribe("OpsTopic", "*"),
            |_| ConsumeResult::Success,
        )
    });
    wait_for("the group to consume everything", || {
        let p = admin(
            &ns,
            &["consumerProgress", "-g", "ops-group", "-t", "OpsTopic"],
        );
        p.contains("Diff Total: 0")
    });

    // consumerConnection / producerConnection.
    let cc = admin(&ns, &["consumerConnection", "-g", "ops-group"]);
    assert!(cc.starts_with("#ClientId"), "{cc}");
    assert!(cc.contains("V4_9_8"), "{cc}");
    assert!(cc.contains("\nOpsTopic             *\n"), "{cc}");
    assert!(cc.contains("MessageModel: CLUSTERING"), "{cc}");
    let j = admin_json(&ns, &["consumerConnection", "-g", "ops-group"]);
    assert_eq!(j["connectionSet"].as_array().unwrap().len(), 1);
    let pc = admin(
        &ns,
        &["producerConnection", "-g", "ops-producer", "-t", "OpsTopic"],
    );
    assert!(pc.starts_with("0001  "), "{pc}");
    assert!(pc.contains("RUST") || pc.contains("JAVA"), "{pc}");
    let gone = run(&["admin", "-n", &ns, "consumerConnection", "-g", "nobody"]);
    assert!(!gone.status.success());

    // brokerStatus, getBrokerConfig (one broker and the cluster's masters).
    let st = admin(&ns, &["brokerStatus", "-b", &s.broker]);
    assert!(
        st.contains("brokerVersionDesc               : V4_9_8"),
        "{st}"
    );
    assert!(admin(&ns, &["brokerStatus", "-c", "DefaultCluster"]).contains(&s.broker));
    let bs = admin_json(&ns, &["brokerStatus", "-b", &s.broker]);
    assert_eq!(bs[&s.broker]["msgPutTotalTodayNow"], "20");
    let cfg = admin(&ns, &["getBrokerConfig", "-b", &s.broker]);
    assert!(
        cfg.contains(&format!("============{}============", s.broker)),
        "{cfg}"
    );
    assert!(cfg.contains("brokerName"), "{cfg}");

    // updateBrokerConfig: read only refuses sends, then writable again.
    let up = admin(
        &ns,
        &[
            "updateBrokerConfig",
            "-b",
            &s.broker,
            "-k",
            "brokerPermission",
            "-v",
            "4",
        ],
    );
    assert_eq!(
        up.trim(),
        format!("update broker config success, {}", s.broker)
    );
    let refused = run(&[
        "admin",
        "-n",
        &ns,
        "sendMessage",
        "-t",
        "OpsTopic",
        "-p",
        "no",
    ]);
    assert!(!refused.status.success(), "a read-only broker took a send");
    let bad = run(&[
        "admin",
        "-n",
        &ns,
        "updateBrokerConfig",
        "-b",
        &s.broker,
        "-k",
        "brokerName",
        "-v",
        "x",
    ]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("cannot change while the broker runs"));
    admin(
        &ns,
        &[
            "updateBrokerConfig",
            "-c",
            "DefaultCluster",
            "-k",
            "brokerPermission",
            "-v",
            "6",
        ],
    );
    let sent = admin(
        &ns,
        &[
            "sendMessage",
            "-t",
            "OpsTopic",
            "-p",
            "after",
            "-k",
            "ops-key",
            "-c",
            "TagZ",
        ],
    );
    assert!(sent.lines().nth(1).unwrap().contains("SEND_OK"), "{sent}");

    // printMsg: every message, bodies shown.
    let printed = admin(&ns, &["printMsg", "-t", "OpsTopic", "-d", "true"]);
    assert_eq!(printed.matches("MSGID: ").count(), 21, "{printed}");
    assert!(printed.contains("BODY: after"));
    let pj = admin_json(&ns, &["printMsg", "-t", "OpsTopic", "-b", "0", "-e", "now"]);
    assert_eq!(pj.as_array().unwrap().len(), 21);

    // resetOffsetByTime to the first message (the online consumer is told and re-consumes);
    // then with the consumer gone, to the end, and cloneGroupOffset.
    let reset = admin(&ns, RESET_TO_START);
    assert!(
        reset.starts_with("rollback consumer offset by specified group[ops-group]"),
        "{reset}"
    );
    assert!(reset.contains("#brokerName"), "{reset}");
    rt.block_on(consumer.shutdown());
    rt.block_on(producer.shutdown());
    let rj = admin_json(&ns, RESET_TO_START);
    assert!(
        rj.as_array().unwrap().iter().all(|r| r["offset"] == 0),
        "{rj}"
    );
    let progress = admin_json(
        &ns,
        &["consumerProgress", "-g", "ops-group", "-t", "OpsTopic"],
    );
    let lag: u64 = progress
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["diff"].as_u64().unwrap())
        .sum();
    assert_eq!(lag, 21, "reset to the start: everything is lag again");
    let cl = admin(
        &ns,
        &[
            "cloneGroupOffset",
            "-s",
            "ops-group",
            "-d",
            "ops-clone",
            "-t",
            "OpsTopic",
            "-o",
            "true",
        ],
    );
    assert!(cl.contains("clone group offset success"), "{cl}");
    let cp = admin_json(
        &ns,
        &["consumerProgress", "-g", "ops-clone", "-t", "OpsTopic"],
    );
    assert_eq!(
        cp,
        progress
            .clone()
            .as_array()
            .unwrap()
            .iter()
            .cloned()
            .collect::<serde_json::Value>()
    );
    let later = admin(
        &ns,
        &[
            "resetOffsetByTime",
            "-g",
            "ops-group",
            "-t",
            "OpsTopic",
            "-s",
            "2099-01-01#00:00:00:000",
        ],
    );
    assert!(later.contains("timestamp(long)[4070"), "{later}");

    // clusterRT: sends to the broker's own topic.
    let rtt = admin(&ns, &["clusterRT", "-a", "3"]);
    assert!(rtt.lines().nth(1).unwrap().contains("broker-a"), "{rtt}");
    let rj = admin_json(&ns, &["clusterRT", "-a", "2"]);
    assert_eq!(rj[0]["successCount"], 2);
}

#[test]
fn metrics_endpoint_names_labels_and_values_move_under_load() {
    let s = common::start_in_temp_dir(&[]);
    let (status, before) = http_get(&s, "/metrics");
    assert!(status.contains("200"), "{status}");
    for name in [
        "rocketmq_storage_size_bytes{",
        "rocketmq_storage_flush_behind_bytes{",
        "rocketmq_broker_permission{",
        "rockfish_connections{",
        "rockfish_decode_errors_total{",
        "rockfish_namesrv_brokers{",
        "rockfish_group_commit_latency_milliseconds_bucket{",
        "rockfish_recovery_duration_milliseconds{",
    ] {
        assert!(before.contains(name), "{name} missing:\n{before}");
    }
    assert!(
        before.contains("cluster=\"DefaultCluster\",node_type=\"broker\",node_id=\"broker-a\"")
    );
    ok(&[
        "bench",
        "produce",
        "-n",
        &s.namesrv,
        "-t",
        "MetricsLoad",
        "-d",
        "2",
        "-s",
        "256",
    ]);
    let (_, after) = http_get(&s, "/metrics");
    let sent = sample(
        &after,
        "rocketmq_messages_in_total",
        &["topic=\"MetricsLoad\""],
    )
    .unwrap();
    assert!(sent > 0.0, "{after}");
    let bytes = sample(
        &after,
        "rocketmq_throughput_in_total",
        &["topic=\"MetricsLoad\""],
    )
    .unwrap();
    assert!(bytes >= sent * 256.0);
    let count = sample(
        &after,
        "rocketmq_rpc_latency_milliseconds_count",
        &[
            "request_code=\"send_message_v2\"",
            "response_code=\"success\"",
        ],
    )
    .or_else(|| {
        sample(
            &after,
            "rocketmq_rpc_latency_milliseconds_count",
            &["request_code=\"send_batch_message\""],
        )
    })
    .unwrap_or_else(|| panic!("no send latency:\n{after}"));
    assert!(count > 0.0);
    let size_before = sample(&before, "rocketmq_storage_size_bytes", &[]).unwrap();
    let size_after = sample(&after, "rocketmq_storage_size_bytes", &[]).unwrap();
    assert!(size_after > size_before);
    // Lag of a group that has committed nothing beyond the start.
    ok(&["admin", "-n", &s.namesrv, "updateSubGroup", "-g", "lagging"]);
    ok(&[
        "admin",
        "-n",
        &s.namesrv,
        "resetOffsetByTime",
        "-g",
        "lagging",
        "-t",
        "MetricsLoad",
        "-s",
        "0",
    ]);
    let (_, lagged) = http_get(&s, "/metrics");
    let lag = sample(
        &lagged,
        "rocketmq_consumer_lag_messages",
        &["topic=\"MetricsLoad\"", "consumer_group=\"lagging\""],
    )
    .unwrap();
    assert_eq!(
        lag, sent,
        "a group reset to the start lags by everything stored"
    );
    let (status, _) = http_get(&s, "/nope");
    assert!(status.contains("404"), "{status}");
}

fn http_post(s: &Standalone, path: &str, body: &str) -> (String, String) {
    exchange(s, "POST", path, body)
}

#[test]
fn console_api_sends_finds_and_resets() {
    let s = common::start_in_temp_dir(&[]);
    let (status, sent) = http_post(
        &s,
        "/api/send",
        r#"{"topic":"ApiTopic","body":"from the api","tags":"TagA","keys":"api-key"}"#,
    );
    assert!(status.contains("200"), "{status} {sent}");
    let sent: serde_json::Value = serde_json::from_str(&sent).unwrap();
    let id = sent["msgId"].as_str().unwrap().to_string();
    let offset_id = sent["offsetMsgId"].as_str().unwrap().to_string();
    let find = |q: &str| {
        let (status, body) = http_get(&s, &format!("/api/message?{q}"));
        assert!(status.contains("200"), "{q}: {status} {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v[0]["body"], "from the api", "{q}: {v}");
    };
    find(&format!("id={offset_id}"));
    find(&format!("id={id}&topic=ApiTopic"));
    find("topic=ApiTopic&key=api-key");
    find(&format!(
        "topic=ApiTopic&broker=broker-a&queue={}&offset={}",
        sent["queueId"], sent["queueOffset"]
    ));
    ok(&[
        "admin",
        "-n",
        &s.namesrv,
        "updateSubGroup",
        "-g",
        "api-group",
    ]);
    let (status, reset) = http_post(
        &s,
        "/api/reset",
        r#"{"group":"api-group","topic":"ApiTopic","timestamp":0}"#,
    );
    assert!(status.contains("200"), "{status} {reset}");
    let (_, overview) = http_get(&s, "/api/overview");
    let o: serde_json::Value = serde_json::from_str(&overview).unwrap();
    let group = o["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["group"] == "api-group")
        .unwrap_or_else(|| panic!("{o}"));
    assert_eq!(group["lag"], 1);
    assert!(
        o["topics"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["topic"] == "ApiTopic")
    );
    // Bad input: a clear error, the server goes on.
    let (status, _) = http_post(&s, "/api/send", "{not json");
    assert!(status.contains("400") || status.contains("422"), "{status}");
    let (status, body) = http_get(&s, "/api/message?id=nonsense");
    assert!(status.contains("400"), "{status}");
    assert!(body.contains("error"), "{body}");
    let (status, _) = http_get(&s, "/api/overview");
    assert!(status.contains("200"));
}

fn chromium() -> Option<String> {
    if let Ok(c) = std::env::var("CHROMIUM") {
        return Some(c);
    }
    [
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ]
    .into_iter()
    .find(|c| {
        Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
    .map(str::to_string)
}

#[test]
fn console_shows_a_new_topic_and_a_groups_lag_in_chromium() {
    let Some(browser) = chromium() else {
        eprintln!("skipped: no Chromium (install chromium or set CHROMIUM)");
        return;
    };
    let s = common::start_in_temp_dir(&[]);
    let ns = s.namesrv.clone();
    ok(&[
        "admin",
        "-n",
        &ns,
        "updateTopic",
        "-t",
        "ConsoleTopic",
        "-r",
        "2",
        "-w",
        "2",
    ]);
    ok(&[
        "produce",
        "-n",
        &ns,
        "-t",
        "ConsoleTopic",
        "-b",
        "for the console",
        "-c",
        "7",
    ]);
    ok(&["admin", "-n", &ns, "updateSubGroup", "-g", "console-group"]);
    ok(&[
        "admin",
        "-n",
        &ns,
        "resetOffsetByTime",
        "-g",
        "console-group",
        "-t",
        "ConsoleTopic",
        "-s",
        "0",
    ]);
    let url = format!("http://{}/", s.http.as_deref().unwrap());
    let profile = tempfile::tempdir().unwrap();
    let headless = |extra: &[&str]| {
        let mut cmd = Command::new(&browser);
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--virtual-time-budget=8000",
            "--window-size=1400,1000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(&url);
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };
    let dom = String::from_utf8(headless(&["--dump-dom"]).stdout).unwrap();
    assert!(
        dom.contains("data-topic=\"ConsoleTopic\""),
        "the topic is not on the page:\n{dom}"
    );
    let row = dom
        .split("data-group=\"console-group\"")
        .nth(1)
        .unwrap_or_else(|| panic!("the group is not on the page:\n{dom}"));
    assert!(
        row.contains("<td class=\"num lag\">7</td>"),
        "its lag of 7 is not shown:\n{row}"
    );
    // The screenshot is kept as an artifact (CI uploads target/artifacts).
    let artifacts = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("console.png");
    headless(&[&format!("--screenshot={}", shot.display())]);
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 10_000,
        "an empty screenshot"
    );
}

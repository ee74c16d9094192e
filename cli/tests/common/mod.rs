//! A `rockfish standalone` process for the CLI's integration tests.
#![allow(dead_code)] // each test file uses its own part

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStderr, Command, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_rockfish");

pub struct Standalone {
    pub child: Child,
    pub namesrv: String,
    pub broker: String,
    /// The HTTP port (metrics, console): "host:port".
    pub http: Option<String>,
    /// The gRPC port (RocketMQ 5 clients): "host:port".
    pub grpc: Option<String>,
    /// The server's log, when asked for.
    pub stderr: Option<ChildStderr>,
    /// A data directory that lives as long as the server.
    pub dir: Option<tempfile::TempDir>,
}

/// A failing test must not leave the server running.
impl Drop for Standalone {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a standalone on ephemeral ports over `dir`, with `extra` arguments, logging at
/// `log`; waits for its banner ("rockfish standalone: name server A, broker B, data D").
pub fn start(dir: &Path, extra: &[&str], log: &str, keep_stderr: bool) -> Standalone {
    let mut child = Command::new(BIN)
        .args([
            "standalone",
            "--namesrv-listen",
            "127.0.0.1:0",
            "--broker-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "127.0.0.1:0",
        ])
        .args(extra)
        .arg("--data-dir")
        .arg(dir)
        .env("RUST_LOG", log)
        .stdout(Stdio::piped())
        .stderr(if keep_stderr {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .spawn()
        .expect("rockfish starts");
    // "rockfish standalone: gRPC (RocketMQ 5 clients) on A" comes first, then the banner.
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let mut grpc = None;
    loop {
        line.clear();
        if out.read_line(&mut line).unwrap() == 0 {
            panic!("rockfish exited before its banner");
        }
        match line.split("gRPC (RocketMQ 5 clients) on ").nth(1) {
            Some(a) => grpc = Some(a.trim().to_string()),
            None => break,
        }
    }
    let after = |word: &str| {
        line.split(word)
            .nth(1)
            .and_then(|s| s.split(',').next())
            .unwrap_or_else(|| panic!("unexpected banner {line:?}"))
            .trim()
            .to_string()
    };
    let (namesrv, broker) = (after("name server "), after("broker "));
    let http = line
        .split("http://")
        .nth(1)
        .and_then(|s| s.split('/').next())
        .map(str::to_string);
    let stderr = child.stderr.take();
    Standalone {
        child,
        namesrv,
        broker,
        http,
        grpc,
        stderr,
        dir: None,
    }
}

/// Every message of a queue, pulled from its start: (queue offset, UNIQ_KEY).
pub async fn read_queue(c: &rockfish_net::Client, topic: &str, queue: u32) -> Vec<(u64, String)> {
    use rockfish_core::remoting::RemotingCommand;
    use rockfish_core::remoting::codes::{request, response};
    let mut found = Vec::new();
    let mut offset = 0u64;
    loop {
        let pull = RemotingCommand::request(request::PULL_MESSAGE, 0)
            .with_ext("consumerGroup", "check")
            .with_ext("topic", topic)
            .with_ext("queueId", queue)
            .with_ext("queueOffset", offset)
            .with_ext("maxMsgNums", 32)
            .with_ext("sysFlag", 4)
            .with_ext("subscription", "*");
        let r = c
            .request(pull, std::time::Duration::from_secs(5))
            .await
            .unwrap();
        if r.code != response::SUCCESS {
            break;
        }
        for rec in rockfish_core::message::split_records(r.body.clone()).unwrap() {
            let key = String::from_utf8(rec.property("UNIQ_KEY").unwrap().to_vec()).unwrap();
            found.push((rec.queue_offset(), key));
        }
        offset = r.ext("nextBeginOffset").unwrap().parse().unwrap();
    }
    found
}

/// A standalone over a data directory of its own (removed with it), with 16 MiB log segments
/// and `extra` arguments, logging warnings only.
pub fn start_in_temp_dir(extra: &[&str]) -> Standalone {
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["--segment-size", "16777216"];
    args.extend_from_slice(extra);
    let mut s = start(dir.path(), &args, "warn", false);
    s.dir = Some(dir);
    s
}

/// A process killed when dropped (a failing test must not leave it running).
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback port free when asked (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `rockfish <args>` and waits for its first line on stdout.
pub fn spawn(args: &[&str]) -> (Proc, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("rockfish starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (Proc(child), line)
}

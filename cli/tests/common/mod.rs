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
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let after = |word: &str| {
        line.split(word)
            .nth(1)
            .and_then(|s| s.split(',').next())
            .unwrap_or_else(|| panic!("unexpected banner {line:?}"))
            .trim()
            .to_string()
    };
    let (namesrv, broker) = (after("name server "), after("broker "));
    let stderr = child.stderr.take();
    Standalone {
        child,
        namesrv,
        broker,
        stderr,
        dir: None,
    }
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

//! The `rockfish` binary. Subcommands (standalone, namesrv, broker, admin, produce, consume,
//! bench, sim) land with the issues that build them; until then it says so and exits non-zero.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--version") | Some("-V") => {
            println!("rockfish {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!(
                "rockfish {}: the storage engine is built; the standalone broker arrives with \
                 issue 3. See README.md.",
                env!("CARGO_PKG_VERSION")
            );
            ExitCode::from(2)
        }
    }
}

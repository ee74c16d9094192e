//! The `rockfish` binary: one command per job.

mod conf;
mod tools;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use rockfish_core::broker::{BrokerConfig, FlushDiskType};
use rockfish_core::namesrv::NameServerConfig;
use rockfish_net::launch::{start_broker, start_namesrv};
use rockfish_store::StoreConfig;

#[derive(Parser)]
#[command(
    name = "rockfish",
    version,
    about = "A RocketMQ-compatible message broker core"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Flush {
    Async,
    Sync,
}

#[derive(Subcommand)]
enum Command {
    /// Name server and broker in one process (127.0.0.1:9876 and :10911), data under ./rockfish-data.
    Standalone {
        #[arg(long, default_value = "./rockfish-data")]
        data_dir: PathBuf,
        #[arg(long, default_value = "127.0.0.1:9876")]
        namesrv_listen: String,
        #[arg(long, default_value = "127.0.0.1:10911")]
        broker_listen: String,
        /// ASYNC_FLUSH acks once appended; SYNC_FLUSH once durable.
        #[arg(long, value_enum, default_value = "async")]
        flush: Flush,
        /// Commit log segment size in bytes (RocketMQ's mapedFileSizeCommitLog).
        #[arg(long, default_value_t = 1 << 30)]
        segment_size: u64,
    },
    /// A name server.
    Namesrv {
        #[arg(long, default_value = "0.0.0.0:9876")]
        listen: String,
    },
    /// A broker configured by a RocketMQ broker.conf.
    Broker {
        #[arg(short = 'c', long = "config")]
        config: PathBuf,
    },
    /// Administration, with mqadmin's command names.
    Admin(tools::AdminArgs),
    /// Send messages from the shell.
    Produce(tools::ProduceArgs),
    /// Pull and print messages.
    Consume(tools::ConsumeArgs),
    /// Benchmarks against any RocketMQ-compatible broker.
    Bench(tools::BenchArgs),
    /// The deterministic simulator.
    #[command(subcommand)]
    Sim(SimCmd),
}

#[derive(Subcommand)]
enum SimCmd {
    /// Runs a scenario over a range of seeds and prints a summary.
    Run {
        /// smoke, broker-crash-sync, broker-crash-async, power-loss-torn, partitions
        scenario: String,
        /// A range like 0..1000.
        #[arg(long, default_value = "0..100")]
        seeds: String,
    },
    /// Runs one seed again, exactly; prints its digest and optionally writes its trace.
    Replay {
        scenario: String,
        #[arg(long)]
        seed: u64,
        #[arg(long)]
        trace: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Simulations run thousands of broker lifetimes: only warnings by default.
    let default_level = if matches!(cli.command, Command::Sim(_)) {
        "warn"
    } else {
        "info"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| default_level.into());
    // Logs go to stderr, so tools' output on stdout stays clean for scripts.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rockfish: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rockfish: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn wait_until_registered(namesrv: &str) {
    use rockfish_core::remoting::RemotingCommand;
    use rockfish_core::remoting::codes::request;
    let Ok(client) = rockfish_net::Client::connect(namesrv).await else {
        return;
    };
    for _ in 0..100 {
        let cmd = RemotingCommand::request(request::GET_BROKER_CLUSTER_INFO, 0);
        if let Ok(r) = client.request(cmd, std::time::Duration::from_secs(1)).await {
            let info: Option<rockfish_core::protocol::ClusterInfo> =
                serde_json::from_slice(&r.body).ok();
            if info.is_some_and(|i| !i.broker_addr_table.is_empty()) {
                return;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    tracing::warn!("the broker has not registered with the name server yet");
}

fn sim(cmd: SimCmd) -> Result<(), String> {
    use rockfish_sim::{SCENARIOS, Sim, check, scenario};
    let config = |name: &str, seed| {
        scenario(name, seed)
            .ok_or_else(|| format!("unknown scenario {name:?}; known: {}", SCENARIOS.join(", ")))
    };
    match cmd {
        SimCmd::Run {
            scenario: name,
            seeds,
        } => {
            let (a, b) = seeds
                .split_once("..")
                .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)))
                .ok_or_else(|| format!("--seeds {seeds:?}: expected a range like 0..100"))?;
            let started = std::time::Instant::now();
            let (mut events, mut sim_ms, mut failures) = (0u64, 0u64, Vec::new());
            for seed in a..b {
                let cfg = config(&name, seed)?;
                let out = Sim::new(cfg.clone()).run();
                events += out.events;
                sim_ms += out.sim_ms;
                let report = check(&cfg, &out.history);
                if !report.ok() {
                    println!(
                        "FAIL seed {seed}: {:?}",
                        &report.violations[..report.violations.len().min(3)]
                    );
                    println!(
                        "  replay: rockfish sim replay {name} --seed {seed} --trace trace-{seed}.txt"
                    );
                    failures.push(seed);
                }
                if (seed - a + 1) % 100 == 0 {
                    println!("  {} seeds done", seed - a + 1);
                }
            }
            println!(
                "{name}: {} seeds, {events} events, {:.0} simulated s in {:.1} s, {} failures",
                b.saturating_sub(a),
                sim_ms as f64 / 1000.0,
                started.elapsed().as_secs_f64(),
                failures.len()
            );
            if failures.is_empty() {
                Ok(())
            } else {
                Err(format!("failing seeds: {failures:?}"))
            }
        }
        SimCmd::Replay {
            scenario: name,
            seed,
            trace,
        } => {
            let cfg = config(&name, seed)?;
            let out = Sim::new(cfg.clone()).run();
            let report = check(&cfg, &out.history);
            if let Some(path) = trace {
                std::fs::write(&path, out.trace.join("\n") + "\n")
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                println!(
                    "trace: {} lines written to {}",
                    out.trace.len(),
                    path.display()
                );
            }
            println!(
                "{name} seed {seed}: digest {} events {} acked {} delivered {} duplicates {} crashes {} power losses {}",
                out.digest,
                out.events,
                report.acked,
                report.delivered_distinct,
                report.duplicates,
                out.history.crashes,
                out.history.power_losses
            );
            if report.ok() {
                Ok(())
            } else {
                Err(format!(
                    "violations: {:?}",
                    &report.violations[..report.violations.len().min(5)]
                ))
            }
        }
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn run(command: Command) -> Result<(), String> {
    match command {
        Command::Standalone {
            data_dir,
            namesrv_listen,
            broker_listen,
            flush,
            segment_size,
        } => {
            let ns = start_namesrv(&namesrv_listen, NameServerConfig::default())
                .await
                .map_err(|e| e.to_string())?;
            let ns_addr = ns.local_addr().to_string();
            let broker = BrokerConfig {
                broker_addr: broker_listen.clone(),
                namesrv_addrs: vec![ns_addr.clone()],
                flush_disk_type: match flush {
                    Flush::Async => FlushDiskType::Async,
                    Flush::Sync => FlushDiskType::Sync,
                },
                ..BrokerConfig::default()
            };
            let store = StoreConfig {
                commitlog_segment_size: segment_size,
                ..StoreConfig::default()
            };
            let b = start_broker(&broker_listen, broker, store, &data_dir)
                .await
                .map_err(|e| e.to_string())?;
            // Announce readiness only once clients can find the broker through the name server.
            wait_until_registered(&ns_addr).await;
            println!(
                "rockfish standalone: name server {ns_addr}, broker {}, data {}",
                b.local_addr(),
                data_dir.display()
            );
            shutdown_signal().await;
            tracing::info!("shutting down: flushing and checkpointing");
            let broker = b.stop().await;
            broker
                .shutdown(rockfish_net::now_ms())
                .map_err(|e| format!("clean shutdown failed: {e}"))?;
            ns.stop().await;
            Ok(())
        }
        Command::Namesrv { listen } => {
            let ns = start_namesrv(&listen, NameServerConfig::default())
                .await
                .map_err(|e| e.to_string())?;
            println!("rockfish name server on {}", ns.local_addr());
            shutdown_signal().await;
            ns.stop().await;
            Ok(())
        }
        Command::Broker { config } => {
            let text = std::fs::read_to_string(&config)
                .map_err(|e| format!("{}: {e}", config.display()))?;
            let conf = conf::parse(&text)?;
            let listen = format!("0.0.0.0:{}", conf.listen_port);
            let b = start_broker(
                &listen,
                conf.broker.clone(),
                conf.store.clone(),
                &conf.data_dir,
            )
            .await
            .map_err(|e| e.to_string())?;
            println!(
                "rockfish broker {} on {} (advertised {})",
                conf.broker.broker_name,
                b.local_addr(),
                conf.broker.broker_addr
            );
            shutdown_signal().await;
            let broker = b.stop().await;
            broker
                .shutdown(rockfish_net::now_ms())
                .map_err(|e| format!("clean shutdown failed: {e}"))?;
            Ok(())
        }
        Command::Admin(args) => tools::admin(args).await,
        Command::Produce(args) => tools::produce(args).await,
        Command::Consume(args) => tools::consume(args).await,
        Command::Bench(args) => tools::bench(args).await,
        Command::Sim(cmd) => sim(cmd),
    }
}

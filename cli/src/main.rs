//! The `rockfish` binary: one command per job.

mod conf;
mod grpc_bench;
mod ops;
mod tools;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use rockfish_core::broker::{BrokerConfig, FlushDiskType};
use rockfish_core::namesrv::NameServerConfig;
use rockfish_net::controller::start_controller_namesrv;
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
        /// The delay levels (RocketMQ's messageDelayLevel), e.g. "1s 5s 10s 30s 1m".
        #[arg(long)]
        message_delay_level: Option<String>,
        /// A transaction undecided this long is checked back (transactionTimeOut).
        #[arg(long, default_value_t = 6_000)]
        transaction_timeout_ms: u64,
        /// How often undecided transactions are checked (transactionCheckInterval).
        #[arg(long, default_value_t = 60_000)]
        transaction_check_interval_ms: u64,
        /// Prewrite the commit log's space ahead of appends (warmMapedFileEnable); default:
        /// on exactly with `--flush sync`, where every append waits for a sync.
        #[arg(long)]
        warm_mapped_file: Option<bool>,
        /// The HTTP port: /metrics (Prometheus) and the web console at /. "" turns it off; a
        /// port already taken only warns.
        #[arg(long, default_value = "127.0.0.1:5557")]
        http_listen: String,
        /// RocketMQ 5's gRPC port (the proxy's MessagingService, for the 5.x SDKs). "" turns
        /// it off.
        #[arg(long, default_value = "127.0.0.1:8081")]
        grpc_listen: String,
    },
    /// RocketMQ 5's gRPC proxy alone, in front of a cluster's name servers: the 5.x SDKs
    /// (rocketmq-clients) connect here.
    Proxy {
        /// The name servers, ';'-separated.
        #[arg(short = 'n', long, default_value = "127.0.0.1:9876")]
        namesrv_addr: String,
        #[arg(long, default_value = "0.0.0.0:8081")]
        grpc_listen: String,
    },
    /// A name server (all interfaces by default, as Apache's; `--listen 127.0.0.1:9876` for
    /// loopback only).
    Namesrv {
        #[arg(long, default_value = "0.0.0.0:9876")]
        listen: String,
        #[command(flatten)]
        controller: ControllerArgs,
        /// Serve /metrics and the web console on this address (off by default).
        #[arg(long, default_value = "")]
        http_listen: String,
    },
    /// A name server with RocketMQ 5's controller embedded (as `namesrv --controller-peers`):
    /// brokers with enableControllerMode name these addresses in controllerAddr.
    Controller {
        #[arg(long, default_value = "0.0.0.0:9876")]
        listen: String,
        #[command(flatten)]
        controller: ControllerArgs,
        /// Serve /metrics and the web console on this address (off by default).
        #[arg(long, default_value = "")]
        http_listen: String,
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

/// The controller embedded in a name server (Apache's enableControllerInNamesrv).
#[derive(clap::Args)]
struct ControllerArgs {
    /// A namesrv.conf (listenPort, enableControllerInNamesrv, controllerDLegerPeers,
    /// controllerDLegerSelfId, controllerStorePath).
    #[arg(short = 'c', long = "config")]
    config: Option<PathBuf>,
    /// Every controller's address in order, `;`-separated (`a:9876;b:9876;c:9876`, or
    /// Apache's `n0-a:9876;n1-b:9876;...`); raft travels on these same ports.
    #[arg(long)]
    controller_peers: Option<String>,
    /// This controller among the peers: its position from 1, or its name (`n0`).
    #[arg(long, default_value = "1")]
    controller_id: String,
    /// Where the controller keeps its raft log (controllerStorePath).
    #[arg(long, default_value = "./rockfish-controller")]
    controller_dir: PathBuf,
}

impl ControllerArgs {
    /// The port from a config file, and the controller if one is asked for.
    fn resolve(self, listen: String) -> Result<(String, Option<conf::ControllerConf>), String> {
        let mut listen = listen;
        let mut controller = None;
        if let Some(path) = &self.config {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let c = conf::parse_namesrv(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            if let Some(port) = c.listen_port {
                let host = listen.rsplit_once(':').map_or("0.0.0.0", |(h, _)| h);
                listen = format!("{host}:{port}");
            }
            controller = c.controller;
        }
        if let Some(peers) = &self.controller_peers {
            controller = Some(conf::controller_conf(
                peers,
                &self.controller_id,
                self.controller_dir.clone(),
            )?);
        }
        Ok((listen, controller))
    }
}

#[derive(Subcommand)]
enum SimCmd {
    /// Runs a scenario over a range of seeds and prints a summary.
    Run {
        /// Scenario files (scenarios/*.toml) or built-in names: smoke, broker-crash-sync,
        /// broker-crash-async, power-loss-torn, partitions, disk-faults, swarm.
        #[arg(required = true)]
        scenarios: Vec<String>,
        /// A range like 0..1000.
        #[arg(long, default_value = "0..100")]
        seeds: String,
    },
    /// Runs one seed again, exactly; prints its digest and optionally writes its trace.
    Replay {
        scenario: String,
        #[arg(long)]
        seed: u64,
        /// Writes one line per event here.
        #[arg(long)]
        trace: Option<PathBuf>,
        /// Writes an HTML timeline here: nodes as lanes, frames as arrows, faults marked.
        #[arg(long)]
        html: Option<PathBuf>,
    },
    /// Reduces a failing seed's fault plan and workload to what still breaks the invariant,
    /// and writes the result as a scenario file to replay.
    Shrink {
        scenario: String,
        #[arg(long)]
        seed: u64,
        /// Where the shrunk scenario file goes.
        #[arg(long, default_value = "shrunk.toml")]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Simulations inject the disk failures the machines log as errors; the trace is where a
    // simulated run speaks. RUST_LOG still turns logs on.
    let default_level = if matches!(cli.command, Command::Sim(_)) {
        "off"
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
                rockfish_core::protocol::decode_body(&r.body).ok();
            if info.is_some_and(|i| !i.broker_addr_table.is_empty()) {
                return;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    tracing::warn!("the broker has not registered with the name server yet");
}

/// A scenario by file path (anything ending in .toml) or built-in name.
fn load_scenario(arg: &str) -> Result<rockfish_sim::ScenarioFile, String> {
    use rockfish_sim::{SCENARIOS, ScenarioFile};
    if arg.ends_with(".toml") {
        let text = std::fs::read_to_string(arg).map_err(|e| format!("{arg}: {e}"))?;
        return ScenarioFile::parse(&text).map_err(|e| format!("{arg}: {e}"));
    }
    ScenarioFile::built_in(arg).ok_or_else(|| {
        format!(
            "unknown scenario {arg:?}: give a .toml file or one of {}",
            SCENARIOS.join(", ")
        )
    })
}

fn sim(cmd: SimCmd) -> Result<(), String> {
    use rockfish_sim::{ScenarioFile, Sim, check, shrink};
    match cmd {
        SimCmd::Run { scenarios, seeds } => {
            let (a, b) = seeds
                .split_once("..")
                .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)))
                .filter(|(a, b)| a < b)
                .ok_or_else(|| format!("--seeds {seeds:?}: expected a range like 0..100"))?;
            let files = scenarios
                .iter()
                .map(|s| load_scenario(s).map(|f| (s.clone(), f)))
                .collect::<Result<Vec<_>, _>>()?;
            let mut rows = Vec::new();
            let mut failed = Vec::new();
            let mut last_progress = std::time::Instant::now();
            for (arg, file) in &files {
                let started = std::time::Instant::now();
                let (mut events, mut sim_ms, mut failures) = (0u64, 0u64, 0u64);
                // Redeliveries (at-least-once allows them) and the slowest delivery of a
                // message sent once the cluster had settled.
                let (mut duplicates, mut settled_max) = (0u64, None::<u64>);
                for seed in a..b {
                    let cfg = file.config(seed);
                    let out = Sim::new(cfg.clone()).run();
                    events += out.events;
                    sim_ms += out.sim_ms;
                    let report = check(&cfg, &out.history);
                    duplicates += report.duplicates as u64;
                    settled_max = settled_max.max(report.settled_latency_max_ms);
                    if let Some(v) = report.violations.first() {
                        println!(
                            "FAIL {} seed {seed}: invariant {} broken ({} violations), first: {v:?}",
                            file.name,
                            v.invariant(),
                            report.violations.len()
                        );
                        println!(
                            "  replay: rockfish sim replay {arg} --seed {seed} --trace trace-{seed}.txt"
                        );
                        println!("  shrink: rockfish sim shrink {arg} --seed {seed}");
                        failures += 1;
                        failed.push(format!("{}:{seed}", file.name));
                    }
                    // Progress on stderr every 100 seeds, and at least every 5 s of a long run.
                    if (seed - a + 1) % 100 == 0 || last_progress.elapsed().as_secs() >= 5 {
                        last_progress = std::time::Instant::now();
                        eprintln!(
                            "  {}: {} of {} seeds, {} failed, {:.0} s",
                            file.name,
                            seed - a + 1,
                            b - a,
                            failures,
                            started.elapsed().as_secs_f64()
                        );
                    }
                }
                rows.push((
                    file.name.clone(),
                    b - a,
                    events,
                    sim_ms,
                    started.elapsed().as_secs_f64(),
                    failures,
                    duplicates,
                    settled_max,
                ));
            }
            println!(
                "{:<26} {:>6} {:>11} {:>11} {:>7} {:>9} {:>8} {:>9} {:>10} {:>8}",
                "scenario",
                "seeds",
                "events",
                "simulated s",
                "wall s",
                "events/s",
                "sim/wall",
                "dups/seed",
                "settled ms",
                "failures"
            );
            for (name, n, events, sim_ms, wall, failures, duplicates, settled_max) in rows {
                let wall_s = wall.max(1e-9);
                println!(
                    "{name:<26} {n:>6} {events:>11} {:>11.0} {wall:>7.1} {:>9.0} {:>8.0} {:>9.1} {:>10} {failures:>8}",
                    sim_ms as f64 / 1000.0,
                    events as f64 / wall_s,
                    sim_ms as f64 / 1000.0 / wall_s,
                    duplicates as f64 / n as f64,
                    settled_max.map_or("-".to_string(), |ms| ms.to_string()),
                );
            }
            if failed.is_empty() {
                Ok(())
            } else {
                Err(format!("failing seeds: {}", failed.join(" ")))
            }
        }
        SimCmd::Replay {
            scenario: arg,
            seed,
            trace,
            html,
        } => {
            let file = load_scenario(&arg)?;
            let cfg = file.config(seed);
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
            if let Some(path) = html {
                let title = format!("{} seed {seed} (digest {})", file.name, out.digest);
                // The first violation about a message marks that message.
                let culprit = report.violations.iter().find_map(|v| {
                    v.body()
                        .map(|b| (b.to_string(), format!("{} ({v:?})", v.invariant())))
                });
                let page = rockfish_sim::timeline::render(
                    &title,
                    &out.nodes,
                    &out.trace,
                    culprit.as_ref().map(|(b, w)| (b.as_str(), w.as_str())),
                );
                std::fs::write(&path, page).map_err(|e| format!("{}: {e}", path.display()))?;
                println!("timeline written to {}", path.display());
            }
            println!(
                "{} seed {seed}: digest {} events {} acked {} delivered {} duplicates {} crashes {} power losses {}",
                file.name,
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
                    "invariant {} broken: {:?}",
                    report.violations[0].invariant(),
                    &report.violations[..report.violations.len().min(5)]
                ))
            }
        }
        SimCmd::Shrink {
            scenario: arg,
            seed,
            out,
        } => {
            let file = load_scenario(&arg)?;
            let cfg = file.config(seed);
            let shrunk = shrink(&cfg).ok_or_else(|| {
                format!("{} seed {seed} does not fail: nothing to shrink", file.name)
            })?;
            let name = format!("{}-seed{seed}-shrunk", file.name);
            let description = format!(
                "{} seed {seed} shrunk in {} runs; still breaks {}. Kept: {}",
                file.name,
                shrunk.attempts,
                shrunk.invariant,
                if shrunk.steps.is_empty() {
                    "nothing".to_string()
                } else {
                    shrunk.steps.join(", ")
                }
            );
            let text = ScenarioFile::exactly(&name, &description, &shrunk.config).to_toml();
            std::fs::write(&out, &text).map_err(|e| format!("{}: {e}", out.display()))?;
            println!("{description}");
            println!("{text}");
            println!(
                "written to {}; replay: rockfish sim replay {} --seed {seed} --trace trace-{seed}.txt",
                out.display(),
                out.display()
            );
            Ok(())
        }
    }
}

/// Serves RocketMQ 5's gRPC messaging service on `listen` ("" for none) in front of
/// `namesrvs`.
async fn serve_grpc(
    listen: &str,
    namesrvs: Vec<String>,
) -> Result<Option<rockfish_net::grpc::GrpcServer>, String> {
    if listen.is_empty() {
        return Ok(None);
    }
    let l = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("gRPC port {listen}: {e}"))?;
    let config = rockfish_core::proxy::ProxyConfig {
        client_id: format!("{listen}@rockfish-proxy#{}", std::process::id()),
        namesrv_addrs: namesrvs,
        seed: rockfish_net::now_ms(),
        ..Default::default()
    };
    rockfish_net::grpc::spawn(l, config, rockfish_net::grpc::GrpcLimits::default())
        .map(Some)
        .map_err(|e| format!("gRPC port {listen}: {e}"))
}

/// Serves /metrics and the console on `listen` ("" for none); a port that cannot be bound
/// only warns (the broker serves without it). Returns the bound address.
async fn serve_http(
    listen: &str,
    probes: Vec<rockfish_net::driver::MetricsProbe>,
    namesrv: &str,
) -> Option<std::net::SocketAddr> {
    if listen.is_empty() {
        return None;
    }
    match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => {
            let addr = l.local_addr().ok();
            rockfish_net::http::spawn(l, probes, namesrv.to_string());
            addr
        }
        Err(e) => {
            tracing::warn!(%listen, error = %e, "the HTTP port (metrics, console) is off: cannot bind");
            eprintln!("rockfish: HTTP port {listen} not served: {e}");
            None
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

/// A name server until a shutdown signal, with its controller if one is configured.
async fn serve_namesrv(
    listen: &str,
    ctl: Option<conf::ControllerConf>,
    http_listen: &str,
) -> Result<(), String> {
    // The console asks this name server: over loopback when it listens on every interface.
    let own = |a: std::net::SocketAddr| {
        if a.ip().is_unspecified() {
            format!("127.0.0.1:{}", a.port())
        } else {
            a.to_string()
        }
    };
    let http_note = |h: Option<std::net::SocketAddr>| {
        h.map(|a| format!(", metrics and console http://{a}/"))
            .unwrap_or_default()
    };
    let Some(ctl) = ctl else {
        let ns = start_namesrv(listen, NameServerConfig::default())
            .await
            .map_err(|e| e.to_string())?;
        let http = serve_http(http_listen, vec![ns.metrics()], &own(ns.local_addr())).await;
        println!(
            "rockfish name server on {}{}",
            ns.local_addr(),
            http_note(http)
        );
        shutdown_signal().await;
        ns.stop().await;
        return Ok(());
    };
    let (id, peers) = (ctl.config.id, ctl.config.peers.len());
    let ns = start_controller_namesrv(
        listen,
        NameServerConfig::default(),
        ctl.config,
        &ctl.data_dir,
    )
    .await
    .map_err(|e| e.to_string())?;
    let http = serve_http(http_listen, vec![ns.metrics()], &own(ns.local_addr())).await;
    println!(
        "rockfish name server on {} with controller {id} of {peers}, raft log under {}{}",
        ns.local_addr(),
        ctl.data_dir.display(),
        http_note(http)
    );
    shutdown_signal().await;
    ns.stop().await;
    Ok(())
}

async fn run(command: Command) -> Result<(), String> {
    match command {
        Command::Standalone {
            data_dir,
            namesrv_listen,
            broker_listen,
            flush,
            segment_size,
            message_delay_level,
            transaction_timeout_ms,
            transaction_check_interval_ms,
            warm_mapped_file,
            http_listen,
            grpc_listen,
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
                transaction_timeout_ms,
                transaction_check_interval_ms,
                // SQL92 subscriptions work out of the box here (Apache's default is off).
                enable_property_filter: true,
                ..BrokerConfig::default()
            };
            let mut store = StoreConfig {
                commitlog_segment_size: segment_size,
                warm_mapped_file,
                ..StoreConfig::default()
            };
            if let Some(levels) = message_delay_level {
                store.delay_levels_ms = rockfish_store::message_store::parse_delay_levels(&levels)
                    .map_err(|e| format!("--message-delay-level: {e}"))?;
            }
            let b = start_broker(&broker_listen, broker, store, &data_dir)
                .await
                .map_err(|e| e.to_string())?;
            let http = serve_http(&http_listen, vec![ns.metrics(), b.metrics()], &ns_addr).await;
            // As the HTTP port: one already taken only warns (remoting serves without it).
            let grpc = serve_grpc(&grpc_listen, vec![ns_addr.clone()])
                .await
                .unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "the gRPC port is off");
                    eprintln!("rockfish: {e}");
                    None
                });
            // Announce readiness only once clients can find the broker through the name server.
            wait_until_registered(&ns_addr).await;
            // The gRPC line first: scripts wait for the name server's line, then read both.
            if let Some(g) = &grpc {
                println!(
                    "rockfish standalone: gRPC (RocketMQ 5 clients) on {}",
                    g.local_addr
                );
            }
            println!(
                "rockfish standalone: name server {ns_addr}, broker {}, data {}{}",
                b.local_addr(),
                data_dir.display(),
                http.map(|a| format!(", console and metrics http://{a}/"))
                    .unwrap_or_default()
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
        Command::Proxy {
            namesrv_addr,
            grpc_listen,
        } => {
            let namesrvs: Vec<String> = namesrv_addr
                .split(';')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
            let Some(g) = serve_grpc(&grpc_listen, namesrvs).await? else {
                return Err("--grpc-listen is empty: nothing to serve".into());
            };
            println!(
                "rockfish proxy: gRPC on {}, name servers {namesrv_addr}",
                g.local_addr
            );
            shutdown_signal().await;
            g.stop();
            Ok(())
        }
        Command::Namesrv {
            listen,
            controller,
            http_listen,
        } => {
            let (listen, ctl) = controller.resolve(listen)?;
            serve_namesrv(&listen, ctl, &http_listen).await
        }
        Command::Controller {
            listen,
            controller,
            http_listen,
        } => {
            let (listen, ctl) = controller.resolve(listen)?;
            let Some(ctl) = ctl else {
                return Err("controller: name the peers (--controller-peers, or -c namesrv.conf with enableControllerInNamesrv=true)".into());
            };
            serve_namesrv(&listen, Some(ctl), &http_listen).await
        }
        Command::Broker { config } => {
            let text = std::fs::read_to_string(&config)
                .map_err(|e| format!("{}: {e}", config.display()))?;
            let conf = conf::parse(&text)?;
            let listen = match conf.bind_address.parse::<std::net::IpAddr>() {
                Ok(std::net::IpAddr::V6(ip)) => format!("[{ip}]:{}", conf.listen_port),
                _ => format!("{}:{}", conf.bind_address, conf.listen_port),
            };
            let b = start_broker(
                &listen,
                conf.broker.clone(),
                conf.store.clone(),
                &conf.data_dir,
            )
            .await
            .map_err(|e| e.to_string())?;
            let ns = conf
                .broker
                .namesrv_addrs
                .first()
                .cloned()
                .unwrap_or_default();
            let http = match &conf.http_listen {
                Some(l) => serve_http(l, vec![b.metrics()], &ns).await,
                None => None,
            };
            println!(
                "rockfish broker {} on {} (advertised {}){}",
                conf.broker.broker_name,
                b.local_addr(),
                conf.broker.broker_addr,
                http.map(|a| format!(", metrics and console http://{a}/"))
                    .unwrap_or_default()
            );
            shutdown_signal().await;
            let broker = b.stop().await;
            broker
                .shutdown(rockfish_net::now_ms())
                .map_err(|e| format!("clean shutdown failed: {e}"))?;
            Ok(())
        }
        Command::Admin(args) => {
            // Output piped into `head` or `grep -m` ends quietly, as mqadmin's does, instead
            // of a panic on the closed pipe. Only here: a server must see EPIPE on a socket,
            // never die of it.
            #[cfg(unix)]
            // SAFETY: restoring a signal's default disposition before any thread writes to
            // stdout; nothing here relies on SIGPIPE being ignored.
            unsafe {
                libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            }
            tools::admin(args).await
        }
        Command::Produce(args) => tools::produce(args).await,
        Command::Consume(args) => tools::consume(args).await,
        Command::Bench(args) => tools::bench(args).await,
        Command::Sim(cmd) => sim(cmd),
    }
}

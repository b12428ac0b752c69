//! `titan-bench`: parse the command line, raise the open-files limit, run one load, print its
//! figures (a table, or JSON with `--json`).

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use serde::Serialize;
use std::process::ExitCode;
use std::time::Duration;
use titan_bench::fanout::{self, FanoutMode, FanoutOptions};
use titan_bench::floor::{self, FloorOptions};
use titan_bench::idle::{self, IdleOptions};
use titan_bench::machine::{self, MachineOptions};
use titan_bench::p2p::{self, P2pOptions, Rate};
use titan_bench::peer::Protocol;
use titan_bench::resources::{self, NofileLimit, Watched};
use titan_bench::storm::{self, StormOptions};

/// The load generator shares the machine with the server it measures, so it takes the same
/// faster allocator (docs/benchmarks.md, fifth set): less of its CPU goes into malloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use titan_bench::tokens::TokenSource;

#[derive(Parser)]
#[command(version, about = "Load generator for Titan (see docs/benchmarks.md)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Print the report as JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// Also write the JSON report to this file (the table still goes to standard output).
    #[arg(long, global = true)]
    json_out: Option<std::path::PathBuf>,
    /// Command printing a token for `{user}`, e.g. "titan-server token {user} --config F".
    #[arg(long, global = true)]
    token_cmd: Option<String>,
    /// HS256 secret to mint tokens with (the server's auth.jwt_secret).
    #[arg(
        long,
        global = true,
        env = "TITAN_BENCH_JWT_SECRET",
        hide_env_values = true
    )]
    jwt_secret: Option<String>,
    /// The server's process id: its CPU time and memory are reported.
    #[arg(long, global = true)]
    server_pid: Option<u32>,
    /// A store process the server uses on this machine (`redis-server`): its CPU time is
    /// reported beside the server's instead of as other processes' noise.
    #[arg(long, global = true)]
    store_pid: Option<u32>,
    /// WebSocket handshakes in progress at once.
    #[arg(long, global = true, default_value_t = 256)]
    connect_concurrency: usize,
}

#[derive(Subcommand)]
enum Command {
    /// What this machine charges for a thread's sleep, a hand-off between threads and an
    /// fdatasync (no server needed): read it beside the figures of a run.
    Machine {
        /// Directory for the fdatasync probe's file (on the disk being measured).
        #[arg(long, default_value = ".")]
        dir: std::path::PathBuf,
        /// Rounds of the sleep and fdatasync probes (ten times as many hand-offs).
        #[arg(long, default_value_t = 2000)]
        rounds: usize,
    },
    /// The p2p shape through a relay thread that only moves frames over raw TCP (no server,
    /// no WebSocket, JSON or store): what this machine charges for the shape itself.
    Floor {
        #[arg(long, default_value_t = 100)]
        pairs: usize,
        /// Message bytes (at least 16).
        #[arg(long, default_value_t = 100)]
        size: usize,
        /// Messages per second in total.
        #[arg(long, default_value_t = 50_000.0)]
        rate: f64,
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        duration: Duration,
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        warmup: Duration,
    },
    /// Sender/receiver pairs: throughput, latency, loss.
    P2p {
        /// Server URL(s), comma-separated (ws://127.0.0.1:3000/ws).
        #[arg(long, value_delimiter = ',', required = true)]
        url: Vec<String>,
        /// "titan", or "mqtt": the same pairs as MQTT 3.1.1 QoS 1 over WebSocket to a broker
        /// (the baseline of issue 7; no tokens needed).
        #[arg(long, default_value = "titan")]
        protocol: String,
        #[arg(long, default_value_t = 100)]
        pairs: usize,
        /// Message body bytes.
        #[arg(long, default_value_t = 100)]
        size: usize,
        /// Total messages per second, or "max".
        #[arg(long, default_value = "max")]
        rate: String,
        /// Unacked msg.send calls per sender.
        #[arg(long, default_value_t = 16)]
        window: usize,
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        duration: Duration,
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        warmup: Duration,
        /// Wait this long after the run for ACKed messages still on their way.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        drain: Duration,
        /// Give every message a client id, as titan-client's ReconnectingClient does (the
        /// server then checks each for a retry). Titan only.
        #[arg(long)]
        client_ids: bool,
    },
    /// Authenticated idle connections and the server's memory per connection.
    Idle {
        #[arg(long)]
        url: String,
        /// `titan`, or `mqtt`: the baseline's equivalent (MQTT over WebSocket, each
        /// connection subscribed to its own topic), with --server-pid the broker's.
        #[arg(long, default_value = "titan")]
        protocol: String,
        #[arg(long, default_value_t = 10_000)]
        conns: usize,
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        hold: Duration,
        /// Number of 127.0.0.x source addresses to spread the connections over.
        #[arg(long, default_value_t = 8)]
        sources: u8,
    },
    /// One user with many devices (--devices), or one sender to many users (--users).
    Fanout {
        #[arg(long)]
        url: String,
        #[arg(long, conflicts_with = "users", required_unless_present = "users")]
        devices: Option<usize>,
        #[arg(long)]
        users: Option<usize>,
        /// Messages to every recipient.
        #[arg(long, default_value_t = 1000)]
        rounds: usize,
        #[arg(long, default_value_t = 100)]
        size: usize,
        #[arg(long, default_value_t = 16)]
        window: usize,
        /// Messages per msg.send with --users.
        #[arg(long, default_value_t = 100)]
        batch: usize,
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        drain: Duration,
    },
    /// Clients with pending messages reconnect at once.
    ReconnectStorm {
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 10_000)]
        conns: usize,
        #[arg(long, default_value_t = 10)]
        pending: usize,
        #[arg(long, default_value_t = 100)]
        size: usize,
        /// Messages per msg.send while filling the inboxes.
        #[arg(long, default_value_t = 100)]
        batch: usize,
        #[arg(long, default_value_t = 16)]
        fill_window: usize,
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
}

/// What `--json` prints.
#[derive(Serialize)]
struct Output<R: Serialize> {
    command: &'static str,
    nofile: NofileLimit,
    report: R,
}

fn main() -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("TITAN_BENCH_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .try_init();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("titan-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn parse_protocol(protocol: &str) -> anyhow::Result<Protocol> {
    match protocol {
        "titan" => Ok(Protocol::Titan),
        "mqtt" => Ok(Protocol::Mqtt),
        other => bail!("--protocol is \"titan\" or \"mqtt\", not {other:?}"),
    }
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let nofile = resources::raise_nofile().context("raising the open-files limit")?;
    if let Command::Machine { dir, rounds } = &cli.command {
        let options = MachineOptions {
            dir: dir.clone(),
            rounds: *rounds,
        };
        let report = machine::run(&options)?;
        return print("machine", &cli.output(nofile), &report);
    }
    let tokens = match (&cli.token_cmd, &cli.jwt_secret) {
        (Some(cmd), None) => TokenSource::Command(cmd.clone()),
        (None, Some(secret)) => TokenSource::secret(secret)?,
        (None, None) => TokenSource::Missing,
        (Some(_), Some(_)) => bail!("give only one of --token-cmd and --jwt-secret"),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let processes = Watched {
        server: cli.server_pid,
        store: cli.store_pid,
    };
    let concurrency = cli.connect_concurrency;
    let output = cli.output(nofile);
    runtime.block_on(async {
        match cli.command {
            // Handled above, without a runtime or tokens.
            Command::Machine { .. } => Ok(()),
            Command::Floor {
                pairs,
                size,
                rate,
                duration,
                warmup,
            } => {
                let options = FloorOptions {
                    pairs,
                    size,
                    rate,
                    duration,
                    warmup,
                };
                let report = floor::run(&options).await?;
                print("floor", &output, &report)
            }
            Command::P2p {
                url,
                protocol,
                pairs,
                size,
                rate,
                window,
                duration,
                warmup,
                drain,
                client_ids,
            } => {
                let rate = match rate.as_str() {
                    "max" => Rate::Max,
                    r => Rate::PerSecond(r.parse().context("--rate is a number or \"max\"")?),
                };
                let protocol = parse_protocol(&protocol)?;
                let options = P2pOptions {
                    urls: url,
                    protocol,
                    pairs,
                    size,
                    rate,
                    window,
                    duration,
                    warmup,
                    drain,
                    processes,
                    connect_concurrency: concurrency,
                    client_ids,
                };
                let report = p2p::run(&options, &tokens).await?;
                print("p2p", &output, &report)
            }
            Command::Idle {
                url,
                protocol,
                conns,
                hold,
                sources,
            } => {
                let options = IdleOptions {
                    url,
                    protocol: parse_protocol(&protocol)?,
                    conns,
                    hold,
                    sources,
                    processes,
                    connect_concurrency: concurrency,
                };
                let report = idle::run(&options, &tokens).await?;
                print("idle", &output, &report)
            }
            Command::Fanout {
                url,
                devices,
                users,
                rounds,
                size,
                window,
                batch,
                drain,
            } => {
                let mode = match (devices, users) {
                    (Some(d), _) => FanoutMode::Devices(d),
                    (None, Some(u)) => FanoutMode::Users(u),
                    (None, None) => bail!("give --devices or --users"),
                };
                let options = FanoutOptions {
                    url,
                    mode,
                    rounds,
                    size,
                    window,
                    batch,
                    drain,
                    processes,
                    connect_concurrency: concurrency,
                };
                let report = fanout::run(&options, &tokens).await?;
                print("fanout", &output, &report)
            }
            Command::ReconnectStorm {
                url,
                conns,
                pending,
                size,
                batch,
                fill_window,
                timeout,
            } => {
                let options = StormOptions {
                    url,
                    conns,
                    pending,
                    size,
                    batch,
                    fill_window,
                    connect_concurrency: concurrency,
                    timeout,
                    processes,
                };
                let report = storm::run(&options, &tokens).await?;
                print("reconnect-storm", &output, &report)
            }
        }
    })
}

/// Where and how the report goes.
struct OutputTo {
    json: bool,
    json_out: Option<std::path::PathBuf>,
    nofile: NofileLimit,
}

impl Cli {
    fn output(&self, nofile: NofileLimit) -> OutputTo {
        OutputTo {
            json: self.json,
            json_out: self.json_out.clone(),
            nofile,
        }
    }
}

/// Prints the report: the program's actual output, hence `println!`.
fn print<R: Serialize + std::fmt::Display>(
    command: &'static str,
    to: &OutputTo,
    report: &R,
) -> anyhow::Result<()> {
    let nofile = to.nofile;
    let json = serde_json::to_string_pretty(&Output {
        command,
        nofile,
        report,
    })?;
    if let Some(path) = &to.json_out {
        std::fs::write(path, &json).with_context(|| format!("writing {}", path.display()))?;
    }
    if to.json {
        println!("{json}");
    } else {
        println!(
            "open-files limit of titan-bench: soft {} (raised from {}), hard {}",
            nofile.soft, nofile.soft_before, nofile.hard
        );
        println!("{report}");
    }
    Ok(())
}

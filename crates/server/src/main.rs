//! `titan-server`: serve, mint a token, revoke a user's tokens, or check the configuration.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use titan_protocol::{DeviceId, UserId};
use titan_server::Config;
use titan_server::config::LogFormat;

/// mimalloc instead of glibc malloc: alternated A/B runs of the final build gave 12–27 % more
/// messages per second at p2p max load and 10–13 % less server CPU per message, while idle memory
/// per connection stayed under the 8 KiB target (docs/benchmarks.md, fifth set). Built with its
/// `no_thp` feature (Cargo.toml): mimalloc otherwise asks for transparent huge pages, and each
/// fresh 2 MiB page the store's writer touched was zeroed by the kernel in the middle of a
/// checkpoint, stretching the writer's pauses (twelfth set: p99 at 10,000 msg/s 7.2–10.9 ms with
/// them, 4.5–5.0 without).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "titan-server",
    version,
    about = "Titan real-time messaging server"
)]
struct Cli {
    /// TOML file overriding the built-in defaults.
    #[arg(long, global = true, env = "TITAN_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve (the default when no command is given).
    Serve,
    /// Print a signed token for USER, using the configured (or generated) secret.
    Token {
        user: String,
        /// Bind the token to this device.
        #[arg(long)]
        device: Option<String>,
        /// Lifetime such as "1h" or "30d" (default: auth.token_ttl).
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<Duration>,
    },
    /// Reject every token of USER issued before now, on every instance, and close USER's live
    /// sessions (see README, "Revoking tokens").
    Revoke { user: String },
    /// Validate the configuration and print it with secrets hidden.
    CheckConfig,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match real_main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // The log may not be set up yet (bad config), so the cause chain goes to stderr.
            eprintln!("titan-server: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main(cli: Cli) -> anyhow::Result<()> {
    let config = Config::load(cli.config.as_deref())?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::CheckConfig => {
            print!("{}", config.to_display_toml());
            Ok(())
        }
        Command::Token { user, device, ttl } => {
            let user = UserId::new(user).context("invalid user")?;
            let device = device
                .map(DeviceId::new)
                .transpose()
                .context("invalid device")?;
            let auth = titan_server::authenticator(&config)?;
            // The token is this command's output (for scripts), not a log line.
            println!("{}", auth.mint(&user, device.as_ref(), ttl)?);
            Ok(())
        }
        Command::Revoke { user } => {
            let user = UserId::new(user).context("invalid user")?;
            let report = actix_web::rt::System::new()
                .block_on(async { titan_server::revoke::revoke(&config, &user).await })?;
            // The command's output for the operator, not a log line.
            println!("{report}");
            Ok(())
        }
        Command::Serve => serve(config),
    }
}

fn init_logs(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::new(&config.log.level);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn serve(config: Config) -> anyhow::Result<()> {
    init_logs(&config);
    let addr = config.listen_addr()?;
    let listener =
        std::net::TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
    actix_web::rt::System::new().block_on(async move {
        let shutdown = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        };
        titan_server::run(listener, config, shutdown).await
    })?;
    Ok(())
}

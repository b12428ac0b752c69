//! `titan-cli`: Titan from a terminal. `send` one message, `listen` for messages (JSON lines),
//! or `chat` with one user line by line. Output on stdout is the command's result (for scripts);
//! connection status goes to stderr.

mod chat;
mod listen;

use clap::{Parser, Subcommand};
use std::process::ExitCode;
use std::time::Duration;
use titan_client::{Client, ClientOptions, Outgoing, ReconnectOptions, ReconnectingClient};

#[derive(Parser)]
#[command(
    name = "titan-cli",
    version,
    about = "Talk to a Titan server from the terminal"
)]
struct Cli {
    /// WebSocket URL of the server.
    #[arg(long, env = "TITAN_URL", default_value = "ws://127.0.0.1:3000/ws")]
    url: String,
    /// JWT to authenticate with (`titan-server token NAME` prints one).
    #[arg(long, env = "TITAN_TOKEN", hide_env_values = true)]
    token: String,
    /// Device name; each device has its own delivery cursor, so reuse it to catch up.
    #[arg(long, env = "TITAN_DEVICE")]
    device: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Send one message; prints "ACK" once the server stored it.
    Send {
        /// Recipient user id.
        to: String,
        /// Message text.
        message: String,
        /// Client id that makes the send idempotent (repeat it to retry safely).
        #[arg(long)]
        id: Option<String>,
    },
    /// Print every received message as one JSON line and acknowledge it; reconnects by itself.
    Listen {
        /// Exit after this many messages (default: run until interrupted).
        #[arg(long)]
        count: Option<u64>,
    },
    /// Interactive chat with one user: each stdin line is sent to PEER, received messages are
    /// printed; ends at end of input once everything typed was ACKed.
    Chat {
        /// The user to talk to.
        peer: String,
    },
}

/// How long `send` waits for the connection and the ACK.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("titan-cli: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("titan-cli: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), titan_client::ClientError> {
    match cli.command {
        Command::Send { to, message, id } => {
            let options = ClientOptions {
                call_timeout: SEND_TIMEOUT,
                connect_timeout: SEND_TIMEOUT,
                ..ClientOptions::default()
            };
            let client = Client::connect_with(&cli.url, options).await?;
            client
                .authenticate(&cli.token, cli.device.as_deref())
                .await?;
            let mut outgoing = Outgoing::new(to, message);
            outgoing.id = id;
            client.send_many(&[outgoing]).await?;
            println!("ACK");
            client.close().await
        }
        Command::Listen { count } => listen::run(reconnecting(&cli), count).await,
        Command::Chat { ref peer } => chat::run(reconnecting(&cli), peer).await,
    }
}

fn reconnecting(cli: &Cli) -> ReconnectingClient {
    let options = ReconnectOptions {
        device: cli.device.clone(),
        ..ReconnectOptions::default()
    };
    ReconnectingClient::start(&cli.url, &cli.token, options)
}

/// Reports connection changes on stderr until the client stops.
fn report_status(client: &ReconnectingClient) {
    let mut state = client.watch_state();
    tokio::spawn(async move {
        while state.changed().await.is_ok() {
            let line = match &*state.borrow_and_update() {
                titan_client::ConnectionState::Connecting { .. } => continue,
                titan_client::ConnectionState::Online => "connected".to_owned(),
                titan_client::ConnectionState::Waiting { retry_in, reason } => {
                    format!("{reason}; reconnecting in {:.1} s", retry_in.as_secs_f64())
                }
                titan_client::ConnectionState::Stopped { reason } => format!("stopped: {reason}"),
            };
            eprintln!("titan-cli: {line}");
        }
    });
}

//! A small bot on the reconnecting client: it greets PEER, then answers every message it
//! receives with an upper-case copy, across server restarts and network drops.
//!
//! ```sh
//! cargo run -p titan-server -- token shouter        # a token for the bot
//! cargo run -p titan-client --example reconnecting -- ws://127.0.0.1:3000/ws TOKEN alice
//! ```
//!
//! Restart the server while it runs: the bot reconnects, authenticates again, and messages sent
//! in between are neither lost nor answered twice.

use std::process::ExitCode;
use titan_client::{ConnectionState, ReconnectOptions, ReconnectingClient};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, token, peer] = args.as_slice() else {
        eprintln!("usage: reconnecting URL TOKEN PEER");
        return ExitCode::from(2);
    };
    let options = ReconnectOptions {
        // A fixed device: after a restart of the bot it catches up on what it missed.
        device: Some("bot".to_owned()),
        ..ReconnectOptions::default()
    };
    let client = ReconnectingClient::start(url, token, options);

    // Report connection changes on stderr.
    let mut state = client.watch_state();
    tokio::spawn(async move {
        while state.changed().await.is_ok() {
            let now = state.borrow_and_update().clone();
            if !matches!(now, ConnectionState::Connecting { .. }) {
                eprintln!("state: {now:?}");
            }
        }
    });

    if let Err(e) = client.send(peer, "hello, I shout back").await {
        eprintln!("cannot greet {peer}: {e}");
        return ExitCode::FAILURE;
    }
    // Each message once; acknowledged to the server as it is taken here.
    while let Some(message) = client.next_message().await {
        println!("{} {}: {}", message.time, message.from, message.message);
        let shout = message.message.to_uppercase();
        if shout == message.message {
            continue; // Already shouting (or our own words back from the echo bot): no ping-pong.
        }
        if let Err(e) = client.send(message.from.as_str(), &shout).await {
            eprintln!("cannot answer: {e}");
        }
    }
    eprintln!("stopped: {:?}", client.state());
    ExitCode::SUCCESS
}

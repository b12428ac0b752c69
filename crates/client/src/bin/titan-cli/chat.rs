//! `titan-cli chat PEER`: stdin lines go to PEER (in order, each retried until ACKed), received
//! messages are printed as `[time] from: text`, and `✓ text` confirms that a line was stored.

use crate::report_status;
use std::io::{BufRead, Write};
use titan_client::{ClientError, ReconnectingClient};
use tokio::sync::mpsc;

pub async fn run(client: ReconnectingClient, peer: &str) -> Result<(), ClientError> {
    report_status(&client);
    let mut lines = stdin_lines();
    let mut input_open = true;
    loop {
        tokio::select! {
            line = lines.recv(), if input_open => match line {
                Some(line) if line.trim().is_empty() => {}
                Some(line) => {
                    // Sent one at a time, so the peer sees the lines in the order typed.
                    client.send(peer, &line).await?;
                    print_line(&format!("✓ {line}"));
                }
                None => input_open = false,
            },
            message = client.next_message() => match message {
                Some(m) => print_line(&format!("[{}] {}: {}", m.time, m.from, m.message)),
                None => break,
            },
        }
        if !input_open {
            break;
        }
    }
    client.stop().await;
    Ok(())
}

fn print_line(line: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
}

/// Stdin lines from a plain thread (reading a terminal blocks); the channel closes at end of input.
fn stdin_lines() -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(64);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    rx
}

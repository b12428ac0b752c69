//! `titan-cli listen`: received messages as JSON lines (`{"id","from","to","time","message"}`),
//! each id once, acknowledged as the CLI takes it to print.

use crate::report_status;
use std::io::Write;
use titan_client::{ClientError, ReconnectingClient};

pub async fn run(client: ReconnectingClient, count: Option<u64>) -> Result<(), ClientError> {
    report_status(&client);
    let mut printed = 0u64;
    while count.is_none_or(|n| printed < n) {
        let Some(message) = client.next_message().await else {
            // The stream ends only when the client stopped for good: report why.
            return Err(match client.state() {
                titan_client::ConnectionState::Stopped { reason } => {
                    ClientError::Closed { code: None, reason }
                }
                _ => ClientError::Protocol("message stream ended".to_owned()),
            });
        };
        let line = serde_json::to_string(&message)
            .map_err(|e| ClientError::Protocol(format!("cannot encode a message: {e}")))?;
        let mut stdout = std::io::stdout().lock();
        // A closed stdout (e.g. `| head`) ends the command.
        if writeln!(stdout, "{line}")
            .and_then(|()| stdout.flush())
            .is_err()
        {
            break;
        }
        printed += 1;
    }
    client.stop().await;
    Ok(())
}

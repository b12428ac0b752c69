//! The task behind a [`ReconnectingClient`](super::ReconnectingClient): one connection at a time,
//! an outbox of unacknowledged sends that outlives connections, and the dedupe set.

use super::seen::Seen;
use super::{Command, ConnectionState, ReconnectOptions};
use crate::client::{Client, ClientOptions, Outgoing};
use crate::delivery::Delivery;
use crate::error::{ClientError, Result};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;
use titan_protocol::{CloseCode, ErrorCode, Message};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::Instrument;

/// A received message on its way to the application. It shares its delivery's [`AckOnTake`]:
/// once the application has taken every message of a `msg.recv`, the request is acknowledged.
pub(crate) struct Received {
    message: Message,
    ack: Arc<AckOnTake>,
}

impl Received {
    /// Hands the message over; dropping the share of the delivery may acknowledge it.
    pub(crate) fn take(self) -> Message {
        drop(self.ack);
        self.message
    }
}

/// Acknowledges its delivery when dropped, i.e. when the last message sharing it was taken by
/// the application. Refusing the delivery first (buffer full) takes it out, so nothing is acked.
struct AckOnTake {
    delivery: StdMutex<Option<Delivery>>,
}

impl AckOnTake {
    fn take_delivery(&self) -> Option<Delivery> {
        self.delivery
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }
}

impl Drop for AckOnTake {
    fn drop(&mut self) {
        let Some(delivery) = self.take_delivery() else {
            return;
        };
        // Outside a runtime (the application is shutting down) nothing is acked: the server
        // redelivers, which is what at-least-once wants.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = delivery.ack().await;
            });
        }
    }
}

/// A send waiting for the server's ACK.
struct Pending {
    outgoing: Outgoing,
    reply: oneshot::Sender<Result<()>>,
}

/// How one connection ended.
enum End {
    /// The application stopped the client (or dropped it).
    Stop,
    /// Reconnecting would be wrong (replaced, revoked, refused token).
    Final(String),
    /// Lost: reconnect.
    Lost(String),
}

/// The result of one `msg.send` attempt, reported back to the loop.
struct SendDone {
    seq: u64,
    result: Result<()>,
}

pub(super) struct Supervisor {
    url: String,
    token: Arc<StdMutex<String>>,
    options: ReconnectOptions,
    messages: mpsc::Sender<Received>,
    state: watch::Sender<ConnectionState>,
    /// Unacknowledged sends by submission order, so a reconnect resends them in order.
    outbox: BTreeMap<u64, Pending>,
    next_seq: u64,
    seen: Seen,
}

impl Supervisor {
    pub(super) fn new(
        url: String,
        token: Arc<StdMutex<String>>,
        options: ReconnectOptions,
        messages: mpsc::Sender<Received>,
        state: watch::Sender<ConnectionState>,
    ) -> Self {
        let seen = Seen::new(options.seen_capacity);
        Self {
            url,
            token,
            options,
            messages,
            state,
            outbox: BTreeMap::new(),
            next_seq: 0,
            seen,
        }
    }

    pub(super) async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let span = tracing::debug_span!("titan_reconnecting", url = %self.url);
        let reason = async {
            let mut attempt = 0u32;
            loop {
                self.state
                    .send_replace(ConnectionState::Connecting { attempt });
                let reason = match self.connect().await {
                    Ok(client) => {
                        attempt = 0;
                        self.state.send_replace(ConnectionState::Online);
                        match self.serve(client, &mut commands).await {
                            End::Stop => return "stopped by the application".to_owned(),
                            End::Final(reason) => return reason,
                            End::Lost(reason) => reason,
                        }
                    }
                    Err(e) if is_final_auth_error(&e) => return format!("authentication: {e}"),
                    Err(e) => e.to_string(),
                };
                attempt = attempt.saturating_add(1);
                let retry_in = self.options.backoff.delay(attempt);
                tracing::debug!(%reason, ?retry_in, "connection lost, will reconnect");
                self.state
                    .send_replace(ConnectionState::Waiting { retry_in, reason });
                if !self.wait(retry_in, &mut commands).await {
                    return "stopped by the application".to_owned();
                }
            }
        }
        .instrument(span)
        .await;
        for (_, pending) in std::mem::take(&mut self.outbox) {
            let _ = pending.reply.send(Err(ClientError::Closed {
                code: None,
                reason: reason.clone(),
            }));
        }
        self.state.send_replace(ConnectionState::Stopped { reason });
    }

    async fn connect(&self) -> Result<Client> {
        let options = ClientOptions {
            auto_ack: false,
            ..self.options.client.clone()
        };
        let client = Client::connect_with(&self.url, options).await?;
        let token = self.token.lock().unwrap_or_else(|p| p.into_inner()).clone();
        client
            .authenticate(&token, self.options.device.as_deref())
            .await?;
        Ok(client)
    }

    /// Queues sends while waiting to reconnect; false when the application stopped the client.
    async fn wait(&mut self, delay: Duration, commands: &mut mpsc::Receiver<Command>) -> bool {
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => return true,
                command = commands.recv() => match command {
                    Some(Command::Send { outgoing, reply }) => {
                        self.queue(outgoing, reply);
                    }
                    Some(Command::Stop) | None => return false,
                },
            }
        }
    }

    fn queue(&mut self, outgoing: Outgoing, reply: oneshot::Sender<Result<()>>) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.outbox.insert(seq, Pending { outgoing, reply });
        seq
    }

    /// Runs one authenticated connection until it ends.
    async fn serve(&mut self, client: Client, commands: &mut mpsc::Receiver<Command>) -> End {
        let client = Arc::new(client);
        // Results of this connection's sends; dropped with it, so a late result of an old
        // connection can never touch the outbox (its message is simply sent again).
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<SendDone>();
        for (seq, pending) in &self.outbox {
            transmit(&client, *seq, pending.outgoing.clone(), &done_tx, None);
        }
        loop {
            // Biased: deliveries already received are handled before the end of the connection
            // is noticed (which is reported as soon as the close frame arrives, not only once
            // the socket is gone).
            tokio::select! {
                biased;
                delivery = client.next_delivery() => match delivery {
                    Some(delivery) => self.receive(delivery).await,
                    None => return ended(client.closed().await),
                },
                command = commands.recv() => match command {
                    Some(Command::Send { outgoing, reply }) => {
                        let seq = self.queue(outgoing.clone(), reply);
                        transmit(&client, seq, outgoing, &done_tx, None);
                    }
                    Some(Command::Stop) | None => {
                        let _ = client.close().await;
                        return End::Stop;
                    }
                },
                Some(SendDone { seq, result }) = done_rx.recv() => {
                    self.settle(&client, seq, result, &done_tx);
                }
                frame = client.closed() => return ended(frame),
            }
        }
    }

    /// Hands new messages to the application; the delivery is acknowledged once the
    /// application has taken all of them (at once when every message was a redelivery). If the
    /// buffer is full the delivery is refused instead: the server keeps it and sends it again.
    async fn receive(&mut self, delivery: Delivery) {
        let fresh: Vec<Message> = delivery
            .messages
            .iter()
            .filter(|m| !self.seen.contains(&m.id))
            .cloned()
            .collect();
        if fresh.len() < delivery.messages.len() {
            tracing::debug!(
                dropped = delivery.messages.len() - fresh.len(),
                "dropping redelivered messages"
            );
        }
        if fresh.is_empty() {
            let _ = delivery.ack().await;
            return;
        }
        let ack = Arc::new(AckOnTake {
            delivery: StdMutex::new(Some(delivery)),
        });
        for message in fresh {
            let id = message.id.clone();
            let received = Received {
                message,
                ack: ack.clone(),
            };
            match self.messages.try_send(received) {
                Ok(()) => {
                    self.seen.insert(id);
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!("message buffer full, refusing a delivery for later");
                    if let Some(delivery) = ack.take_delivery() {
                        let _ = delivery.reject().await;
                    }
                    return;
                }
                // Nobody reads any more: leave the messages pending for the next run of the app.
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    ack.take_delivery();
                    return;
                }
            }
        }
    }

    /// Applies the outcome of one send attempt.
    fn settle(
        &mut self,
        client: &Arc<Client>,
        seq: u64,
        result: Result<()>,
        done: &mpsc::UnboundedSender<SendDone>,
    ) {
        match result {
            Ok(()) => {
                if let Some(pending) = self.outbox.remove(&seq) {
                    let _ = pending.reply.send(Ok(()));
                }
            }
            Err(ClientError::Rpc(error)) if error.kind().is_some_and(ErrorCode::is_temporary) => {
                // Rate limited, inbox full, store down: the same message, later, same id.
                let after = error
                    .data
                    .as_ref()
                    .and_then(|d| d.get("retry_after_ms"))
                    .and_then(serde_json::Value::as_u64)
                    .map(Duration::from_millis)
                    .unwrap_or_else(|| self.options.backoff.delay(3));
                if let Some(pending) = self.outbox.get(&seq) {
                    transmit(client, seq, pending.outgoing.clone(), done, Some(after));
                }
            }
            Err(error @ ClientError::Rpc(_)) | Err(error @ ClientError::Protocol(_)) => {
                if let Some(pending) = self.outbox.remove(&seq) {
                    let _ = pending.reply.send(Err(error));
                }
            }
            // No answer on a live connection: ask again (the client id makes it harmless).
            Err(ClientError::Timeout) if !client.is_closed() => {
                if let Some(pending) = self.outbox.get(&seq) {
                    transmit(client, seq, pending.outgoing.clone(), done, None);
                }
            }
            // The connection is going away: the next one sends it again.
            Err(_) => {}
        }
    }
}

/// Sends one message on `client` (after `delay`, if any) and reports the outcome to `done`.
fn transmit(
    client: &Arc<Client>,
    seq: u64,
    outgoing: Outgoing,
    done: &mpsc::UnboundedSender<SendDone>,
    delay: Option<Duration>,
) {
    let client = client.clone();
    let done = done.clone();
    tokio::spawn(async move {
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        let result = client.send_many(std::slice::from_ref(&outgoing)).await;
        let _ = done.send(SendDone { seq, result });
    });
}

/// Classifies a connection's end by its close code (see the protocol's close code table).
fn ended(frame: Option<(u16, String)>) -> End {
    match frame {
        Some((code, reason)) => match CloseCode::from_code(code) {
            Some(close) if !close.should_reconnect() => {
                End::Final(format!("closed with {code}: {reason}"))
            }
            _ => End::Lost(format!("closed with {code}: {reason}")),
        },
        None => End::Lost("connection lost".to_owned()),
    }
}

/// A refused token will be refused again: stop rather than hammer the server.
fn is_final_auth_error(error: &ClientError) -> bool {
    matches!(error.rpc_code(), Some(code) if code == ErrorCode::BadToken.code())
        || matches!(error.close_code(), Some(code) if CloseCode::from_code(code).is_some_and(|c| !c.should_reconnect()))
}

//! One end of a `p2p` pair, whichever protocol it speaks: a Titan client (`msg.send`, acked
//! `msg.recv`) or an MQTT client (QoS 1 PUBLISH to the receiver's topic, PUBACK both ways), so
//! that the pairs, pacing and accounting of `p2p` are the same for Titan and for the baseline.

use crate::connect::{self, Login};
use crate::error::BenchError;
use crate::mqtt::MqttClient;
use crate::tokens::TokenSource;
use titan_client::{Client, Delivery, Outgoing};

/// Which server the pairs talk to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Titan's JSON-RPC over WebSocket.
    Titan,
    /// MQTT 3.1.1 over WebSocket at QoS 1 (an MQTT broker such as Mosquitto).
    Mqtt,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Titan => "titan",
            Protocol::Mqtt => "mqtt",
        }
    }
}

/// A connected end of a pair.
pub enum Peer {
    Titan(Client),
    Mqtt(MqttClient),
}

/// What one read of a receiver got.
pub enum Received {
    Titan(Delivery),
    Mqtt(Vec<u8>),
}

impl Received {
    /// Calls `f` with each message body (a body that is not UTF-8 as an empty one).
    pub fn for_each_body(&self, mut f: impl FnMut(&str)) {
        match self {
            Received::Titan(delivery) => {
                for message in &delivery.messages {
                    f(&message.message);
                }
            }
            Received::Mqtt(payload) => f(std::str::from_utf8(payload).unwrap_or("")),
        }
    }
}

impl Peer {
    /// Sends `body` to `to` (a Titan user, or an MQTT topic); resolves on the server's ACK
    /// (or PUBACK). A failure is named by its JSON-RPC code when it has one.
    pub async fn send(
        &self,
        to: &str,
        body: String,
        client_id: Option<String>,
    ) -> Result<(), String> {
        match self {
            Peer::Titan(client) => client
                .send_many(&[Outgoing {
                    id: client_id,
                    ..Outgoing::new(to.to_owned(), body)
                }])
                .await
                .map_err(|e| match e.rpc_code() {
                    Some(code) => format!("rpc {code}"),
                    None => e.to_string(),
                }),
            Peer::Mqtt(client) => client.publish(to, body.into_bytes()).await,
        }
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        match self {
            Peer::Titan(client) => client.is_closed(),
            Peer::Mqtt(client) => client.is_closed(),
        }
    }

    /// The next messages received; `None` once the connection has ended.
    pub async fn next(&self) -> Option<Received> {
        match self {
            Peer::Titan(client) => client.next_delivery().await.map(Received::Titan),
            Peer::Mqtt(client) => client.next().await.map(Received::Mqtt),
        }
    }
}

/// Opens the receivers and the senders of `pairs` pairs; returns them with the address each
/// sender sends to (the receiver's user, or its topic). Pair i's sender connects to
/// `urls[i % n]` and its receiver to `urls[(i + 1) % n]`, so with several instances every
/// message crosses instances; names start with `prefix`.
pub async fn open_pairs(
    protocol: Protocol,
    pairs: usize,
    prefix: &str,
    urls: &[String],
    tokens: &TokenSource,
    concurrency: usize,
) -> Result<(Vec<Peer>, Vec<Peer>, Vec<String>), BenchError> {
    if urls.is_empty() {
        return Err(BenchError::Options("no server url".into()));
    }
    let url = |i: usize, role: &str| match role {
        "r" => urls[(i + 1) % urls.len()].clone(),
        _ => urls[i % urls.len()].clone(),
    };
    let name = |i: usize, role: &str| format!("{prefix}-{i}-{role}");
    match protocol {
        Protocol::Titan => {
            let login = |i: usize, role: &str| Login {
                url: url(i, role),
                source: None,
                user: name(i, role),
                device: None,
            };
            let receivers: Vec<Login> = (0..pairs).map(|i| login(i, "r")).collect();
            let senders: Vec<Login> = (0..pairs).map(|i| login(i, "s")).collect();
            let targets = receivers.iter().map(|l| l.user.clone()).collect();
            let options = connect::auto_ack_options();
            let receivers = connect::open_all(receivers, tokens, &options, concurrency).await?;
            let senders = connect::open_all(senders, tokens, &options, concurrency).await?;
            Ok((
                receivers.into_iter().map(Peer::Titan).collect(),
                senders.into_iter().map(Peer::Titan).collect(),
                targets,
            ))
        }
        Protocol::Mqtt => {
            let topics: Vec<String> = (0..pairs).map(|i| format!("{prefix}/{i}")).collect();
            let receivers = connect::each_concurrently((0..pairs).collect(), concurrency, |i| {
                let (url, id, topic) = (url(i, "r"), name(i, "r"), topics[i].clone());
                async move { MqttClient::connect(&url, &id, Some(&topic), None).await }
            })
            .await;
            let senders = connect::each_concurrently((0..pairs).collect(), concurrency, |i| {
                let (url, id) = (url(i, "s"), name(i, "s"));
                async move { MqttClient::connect(&url, &id, None, None).await }
            })
            .await;
            let receivers = receivers.into_iter().collect::<Result<Vec<_>, _>>()?;
            let senders = senders.into_iter().collect::<Result<Vec<_>, _>>()?;
            Ok((
                receivers.into_iter().map(Peer::Mqtt).collect(),
                senders.into_iter().map(Peer::Mqtt).collect(),
                topics,
            ))
        }
    }
}

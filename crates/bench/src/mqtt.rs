//! A minimal MQTT 3.1.1 client over WebSocket, for `p2p --protocol mqtt`: the baseline
//! (Mosquitto, QoS 1, one to one) measured on the same machine by the same load generator.
//!
//! It is built like `titan-client`'s connection (the same read buffer, Nagle off), so that both
//! protocols cost the load generator the same kind of work: one task per connection owns the socket; publishes reach it through a
//! channel and resolve when their PUBACK arrives (Titan: a `msg.send` resolves on its answer);
//! received PUBLISHes are acknowledged by that task at once and handed over (Titan: `auto_ack`).
//! Packets are encoded and decoded by `mqttrs`; only what `p2p` needs is here: CONNECT, one
//! SUBSCRIBE at QoS 1, QoS 1 PUBLISH both ways, PUBACK.

use crate::error::BenchError;
use futures_util::{SinkExt, StreamExt};
use mqttrs::{
    Connect, Packet, Pid, Protocol, Publish, QoS, QosPid, Subscribe, SubscribeTopic, decode_slice,
    encode_slice,
};
use std::collections::HashMap;
use std::net::IpAddr;
use tokio::net::TcpStream;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Room for one encoded packet: a PUBLISH of the benchmark's bodies (at most a few KiB) and its
/// topic.
const PACKET_ROOM: usize = 64 * 1024;

/// Read buffer of a connection, as `titan-client`'s (see its `transport`): tungstenite
/// zero-fills the free part of its read buffer before every read, which at its default
/// (128 KiB) was a quarter of the load generator's CPU here.
const READ_BUFFER_BYTES: usize = 8 * 1024;

/// A publish for the connection task.
struct Outgoing {
    topic: String,
    payload: Vec<u8>,
    /// Told when the PUBACK arrives (dropped if the connection ends first).
    acked: oneshot::Sender<()>,
}

/// One MQTT connection (clean session, no keep-alive).
pub struct MqttClient {
    publishes: mpsc::UnboundedSender<Outgoing>,
    received: Mutex<mpsc::UnboundedReceiver<Vec<u8>>>,
}

fn failed(what: &str, reason: impl std::fmt::Display) -> BenchError {
    BenchError::system(what, reason)
}

impl MqttClient {
    /// Connects to the WebSocket endpoint `url` (subprotocol `mqtt`) as `client_id`, from the
    /// local address `source` when given (as `titan-client`'s `connect_from`, for `idle`), and
    /// subscribes to `subscribe` at QoS 1 when given.
    pub async fn connect(
        url: &str,
        client_id: &str,
        subscribe: Option<&str>,
        source: Option<IpAddr>,
    ) -> Result<Self, BenchError> {
        let what = format!("MQTT connect to {url} as {client_id}");
        let mut request = url.into_client_request().map_err(|e| failed(&what, e))?;
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("mqtt"));
        let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER_BYTES);
        // Nagle off, as `titan-client`: small frames, latency measured.
        let (mut socket, _) = match source {
            None => {
                tokio_tungstenite::connect_async_tls_with_config(request, Some(config), true, None)
                    .await
            }
            Some(source) => {
                let tcp = titan_client::transport::tcp_from(&request, source)
                    .await
                    .map_err(|e| failed(&what, e))?;
                tokio_tungstenite::client_async_with_config(
                    request,
                    MaybeTlsStream::Plain(tcp),
                    Some(config),
                )
                .await
            }
        }
        .map_err(|e| failed(&what, e))?;
        let connect = Packet::Connect(Connect {
            protocol: Protocol::MQTT311,
            keep_alive: 0,
            client_id,
            clean_session: true,
            last_will: None,
            username: None,
            password: None,
        });
        send_packet(&mut socket, &connect)
            .await
            .map_err(|e| failed(&what, e))?;
        match next_packet(&mut socket, &mut Vec::new()).await {
            Ok(Owned::Connack { accepted: true }) => {}
            Ok(other) => return Err(failed(&what, format!("refused: {other:?}"))),
            Err(e) => return Err(failed(&what, e)),
        }
        if let Some(topic) = subscribe {
            let packet = Packet::Subscribe(Subscribe {
                pid: Pid::new(),
                topics: vec![SubscribeTopic {
                    topic_path: topic.to_owned(),
                    qos: QoS::AtLeastOnce,
                }],
            });
            send_packet(&mut socket, &packet)
                .await
                .map_err(|e| failed(&what, e))?;
            match next_packet(&mut socket, &mut Vec::new()).await {
                Ok(Owned::Suback { granted: true }) => {}
                Ok(other) => return Err(failed(&what, format!("subscribe refused: {other:?}"))),
                Err(e) => return Err(failed(&what, e)),
            }
        }
        let (publishes, outgoing) = mpsc::unbounded_channel();
        let (deliver, received) = mpsc::unbounded_channel();
        tokio::spawn(drive(socket, outgoing, deliver));
        Ok(Self {
            publishes,
            received: Mutex::new(received),
        })
    }

    /// Publishes `payload` to `topic` at QoS 1; resolves when the broker's PUBACK arrives.
    pub async fn publish(&self, topic: &str, payload: Vec<u8>) -> Result<(), String> {
        let (acked, done) = oneshot::channel();
        let outgoing = Outgoing {
            topic: topic.to_owned(),
            payload,
            acked,
        };
        self.publishes
            .send(outgoing)
            .map_err(|_| "connection closed".to_owned())?;
        done.await
            .map_err(|_| "connection closed before the PUBACK".to_owned())
    }

    /// Whether the connection has ended (its task is gone).
    pub fn is_closed(&self) -> bool {
        self.publishes.is_closed()
    }

    /// The payload of the next message received (already acknowledged); `None` once the
    /// connection has ended.
    pub async fn next(&self) -> Option<Vec<u8>> {
        self.received.lock().await.recv().await
    }
}

/// A decoded packet, owning what `p2p` keeps of it.
#[derive(Debug)]
enum Owned {
    Connack { accepted: bool },
    Suback { granted: bool },
    Publish { pid: Option<Pid>, payload: Vec<u8> },
    Puback(Pid),
    Other,
}

impl Owned {
    fn from(packet: &Packet<'_>) -> Self {
        match packet {
            Packet::Connack(c) => Owned::Connack {
                accepted: c.code == mqttrs::ConnectReturnCode::Accepted,
            },
            Packet::Suback(s) => Owned::Suback {
                granted: s
                    .return_codes
                    .iter()
                    .all(|c| matches!(c, mqttrs::SubscribeReturnCodes::Success(_))),
            },
            Packet::Publish(p) => Owned::Publish {
                pid: p.qospid.pid(),
                payload: p.payload.to_vec(),
            },
            Packet::Puback(pid) => Owned::Puback(*pid),
            _ => Owned::Other,
        }
    }
}

async fn send_packet(socket: &mut Socket, packet: &Packet<'_>) -> Result<(), String> {
    let mut buf = vec![0; PACKET_ROOM];
    let n = encode_slice(packet, &mut buf).map_err(|e| format!("encode: {e:?}"))?;
    buf.truncate(n);
    socket
        .send(Message::Binary(buf.into()))
        .await
        .map_err(|e| e.to_string())
}

/// The length of the packet at the start of `buf` (fixed header included), once `buf` holds
/// its whole fixed header: the remaining length is a varint of at most four bytes.
fn packet_len(buf: &[u8]) -> Option<usize> {
    let mut remaining = 0usize;
    for (i, byte) in buf.iter().skip(1).take(4).enumerate() {
        remaining |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some(1 + i + 1 + remaining);
        }
    }
    None
}

/// Takes the first whole packet out of `buf`, if it holds one.
fn take_packet(buf: &mut Vec<u8>) -> Result<Option<Owned>, String> {
    let Some(len) = packet_len(buf).filter(|&len| len <= buf.len()) else {
        return Ok(None);
    };
    let owned = match decode_slice(&buf[..len]) {
        Ok(Some(packet)) => Owned::from(&packet),
        Ok(None) => return Err("truncated packet".to_owned()),
        Err(e) => return Err(format!("decode: {e:?}")),
    };
    buf.drain(..len);
    Ok(Some(owned))
}

/// Reads until one whole packet is in; for the handshake, before the connection task runs.
async fn next_packet(socket: &mut Socket, buf: &mut Vec<u8>) -> Result<Owned, String> {
    loop {
        if let Some(packet) = take_packet(buf)? {
            return Ok(packet);
        }
        match socket.next().await {
            Some(Ok(Message::Binary(data))) => buf.extend_from_slice(&data),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("connection closed".to_owned()),
        }
    }
}

/// The connection task: writes publishes (several per flush when they queue up), answers
/// every received QoS 1 PUBLISH with its PUBACK at once, resolves publishes on their PUBACK.
async fn drive(
    mut socket: Socket,
    mut outgoing: mpsc::UnboundedReceiver<Outgoing>,
    deliver: mpsc::UnboundedSender<Vec<u8>>,
) {
    let mut next_pid = Pid::new();
    let mut waiting: HashMap<Pid, oneshot::Sender<()>> = HashMap::new();
    let mut read = Vec::new();
    let mut room = vec![0; PACKET_ROOM];
    loop {
        tokio::select! {
            first = outgoing.recv() => {
                let Some(first) = first else { break };
                let mut batch = vec![first];
                while let Ok(more) = outgoing.try_recv() {
                    batch.push(more);
                }
                for publish in batch {
                    let pid = next_pid;
                    next_pid = next_pid + 1;
                    let packet = Packet::Publish(Publish {
                        dup: false,
                        qospid: QosPid::AtLeastOnce(pid),
                        retain: false,
                        topic_name: &publish.topic,
                        payload: &publish.payload,
                    });
                    let Ok(n) = encode_slice(&packet, &mut room) else { continue };
                    waiting.insert(pid, publish.acked);
                    if socket.feed(Message::Binary(room[..n].to_vec().into())).await.is_err() {
                        return;
                    }
                }
                if socket.flush().await.is_err() {
                    return;
                }
            }
            frame = socket.next() => {
                let data = match frame {
                    Some(Ok(Message::Binary(data))) => data,
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => return,
                };
                read.extend_from_slice(&data);
                let mut acks = 0;
                loop {
                    match take_packet(&mut read) {
                        Ok(Some(Owned::Publish { pid, payload })) => {
                            if let Some(pid) = pid {
                                let Ok(n) = encode_slice(&Packet::Puback(pid), &mut room) else {
                                    return;
                                };
                                if socket.feed(Message::Binary(room[..n].to_vec().into())).await.is_err() {
                                    return;
                                }
                                acks += 1;
                            }
                            let _ = deliver.send(payload);
                        }
                        Ok(Some(Owned::Puback(pid))) => {
                            if let Some(acked) = waiting.remove(&pid) {
                                let _ = acked.send(());
                            }
                        }
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(_) => return,
                    }
                }
                if acks > 0 && socket.flush().await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = socket.close(None).await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Packets split across frames, and several in one frame, are taken whole and in order.
    #[test]
    fn packets_are_split_on_their_lengths() {
        let mut room = vec![0; 256];
        let mut stream = Vec::new();
        let publish = Packet::Publish(Publish {
            dup: false,
            qospid: QosPid::AtLeastOnce(Pid::try_from(7).unwrap()),
            retain: false,
            topic_name: "p2p/1",
            payload: &[b'x'; 200],
        });
        for packet in [publish, Packet::Puback(Pid::try_from(9).unwrap())] {
            let n = encode_slice(&packet, &mut room).unwrap();
            stream.extend_from_slice(&room[..n]);
        }
        let mut buf = stream[..3].to_vec();
        assert!(
            take_packet(&mut buf).unwrap().is_none(),
            "a partial packet waits"
        );
        buf.extend_from_slice(&stream[3..]);
        match take_packet(&mut buf).unwrap() {
            Some(Owned::Publish { pid, payload }) => {
                assert_eq!(pid.map(Pid::get), Some(7));
                assert_eq!(payload.len(), 200);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(take_packet(&mut buf).unwrap(), Some(Owned::Puback(p)) if p.get() == 9));
        assert!(buf.is_empty());
    }
}

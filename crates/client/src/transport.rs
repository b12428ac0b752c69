//! Opening a WebSocket, shared by [`Client`](crate::Client) and [`RawSocket`](crate::RawSocket).

use crate::error::{ClientError, Result};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

/// The socket type both clients drive.
pub(crate) type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Largest frame and message this client accepts from the server. Far above anything Titan
/// sends, so a test is never cut short by the client's own limit (tests send and receive 1 MiB
/// frames on purpose).
pub const MAX_INCOMING_BYTES: usize = 64 << 20;

/// How long connecting (TCP plus the WebSocket handshake) may take by default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Read buffer of a connection. tungstenite zero-fills the free part of its read buffer before
/// every read; at its default (128 KiB) that memset was the load generator's largest cost (18 %
/// of its CPU in the p2p benchmark) for frames of a few hundred bytes. Larger frames are read
/// in several reads.
const READ_BUFFER_BYTES: usize = 8 * 1024;

fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_message_size(Some(MAX_INCOMING_BYTES))
        .max_frame_size(Some(MAX_INCOMING_BYTES))
}

/// A TLS connector trusting exactly the CAs in `pem`. The provider is named (aws-lc-rs, the
/// workspace's one backend) instead of relying on a process default.
fn connector(pem: &[u8]) -> Result<Connector> {
    let tls = |e: &dyn std::fmt::Display| ClientError::Tls(e.to_string());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        roots.add(cert.map_err(|e| tls(&e))?).map_err(|e| tls(&e))?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(&e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Connector::Rustls(Arc::new(config)))
}

/// Connects to `url` (`ws://host:port/path`, or `wss://` trusting `tls_ca_pem` when given) with
/// Nagle disabled: tests and the benchmark send small frames and measure latency.
pub(crate) async fn connect(
    url: &str,
    timeout: Duration,
    tls_ca_pem: Option<&[u8]>,
) -> Result<WsStream> {
    let connector = tls_ca_pem.map(connector).transpose()?;
    let connecting =
        tokio_tungstenite::connect_async_tls_with_config(url, Some(config()), true, connector);
    let (ws, _response) = tokio::time::timeout(timeout, connecting)
        .await
        .map_err(|_| ClientError::Timeout)??;
    Ok(ws)
}

/// Like [`connect`], but the TCP socket is bound to `local` (port chosen by the kernel) before it
/// connects. Each local address has its own ~28k ephemeral ports towards one server address, so
/// spreading connections over 127.0.0.x lets one machine open more than 64k of them (the
/// benchmark's idle test). Plain `ws://` only, with an IP address as host.
pub(crate) async fn connect_from(url: &str, local: IpAddr, timeout: Duration) -> Result<WsStream> {
    let request = url.into_client_request()?;
    let connecting = async {
        let stream = MaybeTlsStream::Plain(tcp_from(&request, local).await?);
        let (ws, _response) =
            tokio_tungstenite::client_async_with_config(request, stream, Some(config())).await?;
        Ok::<_, ClientError>(ws)
    };
    tokio::time::timeout(timeout, connecting)
        .await
        .map_err(|_| ClientError::Timeout)?
}

/// The TCP connection under [`connect_from`], for a WebSocket of another protocol (the
/// benchmark's MQTT baseline): a socket bound to `local`, connected to the `ws://IP:PORT` of
/// `request`, Nagle off.
pub async fn tcp_from(
    request: &tungstenite::handshake::client::Request,
    local: IpAddr,
) -> Result<TcpStream> {
    let uri = request.uri();
    let bad_url = || {
        ClientError::Protocol(format!(
            "need ws://IP:PORT/... to bind a source address, got {uri}"
        ))
    };
    if uri.scheme_str() != Some("ws") {
        return Err(bad_url());
    }
    let host: IpAddr = uri
        .host()
        .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
        .and_then(|h| h.parse().ok())
        .ok_or_else(bad_url)?;
    let server = SocketAddr::new(host, uri.port_u16().unwrap_or(80));
    let io = |e: std::io::Error| ClientError::from(tungstenite::Error::Io(e));
    let socket = if server.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(io)?;
    socket.bind(SocketAddr::new(local, 0)).map_err(io)?;
    let tcp = socket.connect(server).await.map_err(io)?;
    tcp.set_nodelay(true).map_err(io)?;
    Ok(tcp)
}

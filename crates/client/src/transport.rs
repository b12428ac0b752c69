//! Opening a WebSocket, shared by [`Client`](crate::Client) and [`RawSocket`](crate::RawSocket).

use crate::error::{ClientError, Result};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
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

fn config() -> WebSocketConfig {
    WebSocketConfig::default()
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

//! Serving `wss://` and `https://` directly with `server.tls_cert` / `server.tls_key`, using a
//! certificate chain the test generates (its own CA).

use crate::common;

use common::{TestServer, WAIT, next};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use std::path::Path;
use std::sync::Arc;
use titan_client::{Client, ClientOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Writes a CA and a server certificate for localhost/127.0.0.1 signed by it into `dir`;
/// returns the CA's PEM.
fn certificates(dir: &Path) -> Vec<u8> {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    ca_cert.pem().into_bytes()
}

fn start_tls() -> (TestServer, Vec<u8>, tempfile::TempDir) {
    let certs = tempfile::tempdir().unwrap();
    let ca = certificates(certs.path());
    let server = TestServer::start_with(|c| {
        c.server.tls_cert = certs.path().join("cert.pem");
        c.server.tls_key = certs.path().join("key.pem");
    });
    (server, ca, certs)
}

/// A client trusting the test CA authenticates, sends and receives over `wss://localhost`.
#[tokio::test]
async fn wss_with_generated_certificate() {
    let (server, ca, _certs) = start_tls();
    let url = format!("wss://localhost:{}/ws", server.addr.port());
    let options = || ClientOptions {
        tls_ca_pem: Some(ca.clone()),
        ..ClientOptions::default()
    };
    let alice = Client::connect_with(&url, options()).await.unwrap();
    alice
        .authenticate(&server.token("alice"), None)
        .await
        .unwrap();
    let bob = Client::connect_with(&url, options()).await.unwrap();
    bob.authenticate(&server.token("bob"), None).await.unwrap();
    alice.send("bob", "over tls").await.unwrap();
    let d = next(&bob).await;
    assert_eq!(d.messages[0].message, "over tls");
    d.ack().await.unwrap();
}

/// Without trusting the CA the handshake fails, and plain `ws://` to the TLS port gets no
/// WebSocket: TLS is really what is served.
#[tokio::test]
async fn untrusted_or_plain_clients_fail() {
    let (server, _ca, _certs) = start_tls();
    let port = server.addr.port();
    let other_ca = certificates(tempfile::tempdir().unwrap().path());
    let untrusted = ClientOptions {
        tls_ca_pem: Some(other_ca),
        ..ClientOptions::default()
    };
    let refused = Client::connect_with(&format!("wss://localhost:{port}/ws"), untrusted).await;
    assert!(refused.is_err());
    let plain = Client::connect(&format!("ws://127.0.0.1:{port}/ws")).await;
    assert!(plain.is_err());
}

/// `https://` serves the probes too.
#[tokio::test]
async fn https_healthz() {
    let (server, ca, _certs) = start_tls();
    let response = https_get(&server, &ca, "/healthz").await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}

/// SIGHUP reads the certificate and key again: a file that cannot be used is refused (counted,
/// and the previous certificate is still served); a renewed certificate is served to new
/// connections, and clients trusting only the old CA are refused from then on.
#[tokio::test]
async fn sighup_reloads_the_certificate() {
    let (server, old_ca, certs) = start_tls();
    // Also proves the server is up, so its SIGHUP handler is in place.
    assert!(https_get(&server, &old_ca, "/healthz").await.is_ok());

    std::fs::write(certs.path().join("key.pem"), "not a key").unwrap();
    hangup();
    let reloads = |outcome: &'static str| {
        let (server, ca) = (&server, &old_ca);
        async move { tls_reloads(server, ca, outcome).await }
    };
    wait_until_async(|| async { reloads("failed").await == Some(1.0) }).await;
    assert_eq!(reloads("ok").await, None, "nothing was reloaded");

    let new_ca = certificates(certs.path());
    hangup();
    wait_until_async(|| async { https_get(&server, &new_ca, "/healthz").await.is_ok() }).await;
    assert!(
        https_get(&server, &old_ca, "/healthz").await.is_err(),
        "the old certificate is no longer served"
    );
    assert_eq!(tls_reloads(&server, &new_ca, "ok").await, Some(1.0));
}

/// Sends SIGHUP to this process (every server of this test binary reloads its own files).
fn hangup() {
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Polls `check` until it holds, failing the test after `WAIT`.
async fn wait_until_async<F, Fut>(check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met in time"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// `titan_tls_reloads_total{outcome}` from the server's `/metrics` over https.
async fn tls_reloads(server: &TestServer, ca: &[u8], outcome: &str) -> Option<f64> {
    let metrics = https_get(server, ca, "/metrics").await.ok()?;
    let series = format!("titan_tls_reloads_total{{outcome=\"{outcome}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series.as_str()))
        .and_then(|v| v.trim().parse().ok())
}

/// GETs `path` over https trusting `ca`; the whole response, or why it failed.
async fn https_get(server: &TestServer, ca: &[u8], path: &str) -> Result<String, String> {
    let roots = rustls_roots(ca);
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    // A peer closing without close_notify is an error here; the bytes read so far count.
    let _ = tokio::time::timeout(WAIT, tls.read_to_end(&mut response))
        .await
        .expect("no response in time");
    Ok(String::from_utf8_lossy(&response).into_owned())
}

fn rustls_roots(pem: &[u8]) -> rustls::RootCertStore {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    roots
}

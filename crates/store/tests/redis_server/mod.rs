//! A throw-away `redis-server` for tests: started on a free loopback port in its own temporary
//! directory, stopped (killed and reaped) on drop. Self-contained (std and `tempfile` only) so
//! other crates' tests can share it with `#[path = "..."] mod redis_server;`.
//!
//! ```ignore
//! let server = RedisServer::start(ServerConfig::default());
//! let store = RedisStore::connect(&server.url(), "test", limits).await?;
//! ```
//!
//! `redis-server` (and `openssl`, for TLS servers) must be on PATH: `scripts/install-test-deps`
//! installs them.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod cluster;
mod tls;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long a server may take to answer PING after it was started (AOF loading included).
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts at a fresh port when another process took the one picked.
const PORT_ATTEMPTS: usize = 5;

/// How to run the server.
#[derive(Debug, Clone, Default)]
pub struct ServerConfig {
    /// AOF with `appendfsync always`, for durability tests; otherwise nothing is persisted.
    pub durable: bool,
    /// `requirepass`, so tests can check passwords in URLs.
    pub password: Option<String>,
    /// Also listen for TLS on a second port, with a certificate from a throw-away CA.
    pub tls: bool,
    /// Run as a Redis Cluster node (see [`cluster::RedisCluster`], which joins several).
    pub cluster: bool,
    /// Replicate the server on this loopback port (`--replicaof`); see
    /// [`RedisServer::wait_until_replicating`].
    pub replica_of: Option<u16>,
}

/// A running `redis-server`. Killed and reaped on drop.
pub struct RedisServer {
    config: ServerConfig,
    port: u16,
    tls_port: Option<u16>,
    child: Option<Child>,
    // Dropped after the child is reaped (Drop runs before the fields are dropped).
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a server on a free loopback port; panics with the reason if it cannot.
    pub fn start(config: ServerConfig) -> Self {
        let binary = find_on_path("redis-server");
        let dir = tempfile::tempdir().expect("temporary directory for redis-server");
        if config.tls {
            tls::write_certificates(dir.path());
        }
        let mut server = Self {
            config,
            port: 0,
            tls_port: None,
            child: None,
            dir,
        };
        let mut last_log = String::new();
        for _ in 0..PORT_ATTEMPTS {
            server.port = free_port();
            server.tls_port = server.config.tls.then(free_port);
            match server.spawn(&binary) {
                Ok(()) => return server,
                // Most likely a port clash: try fresh ports.
                Err(log) => last_log = log,
            }
        }
        panic!("redis-server did not start after {PORT_ATTEMPTS} attempts; last log:\n{last_log}");
    }

    /// `redis://[:password@]127.0.0.1:port`.
    pub fn url(&self) -> String {
        match &self.config.password {
            Some(password) => format!("redis://:{password}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// `rediss://127.0.0.1:tls_port`, for a TLS server; trust [`RedisServer::tls_ca_pem`].
    pub fn tls_url(&self) -> String {
        let port = self.tls_port.expect("server started without tls");
        format!("rediss://127.0.0.1:{port}")
    }

    /// The PEM certificate of the CA that signed the TLS server's certificate.
    pub fn tls_ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.dir.path().join(tls::CA_CERT)).expect("ca certificate")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's working directory (AOF files live here).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Kills the server (like a crash: no shutdown save) and reaps it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server with SIGSTOP: connections stay open and commands are queued but not
    /// answered, as behind a network partition. [`RedisServer::thaw`] resumes it (the queued
    /// commands then run); a frozen server is still killed on drop.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Resumes a server frozen by [`RedisServer::freeze`].
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("redis-server is not running");
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} failed: {status}");
    }

    /// Stops the server and starts it again on the same port and directory.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(log) = self.spawn(&find_on_path("redis-server")) {
            panic!("redis-server did not restart on port {}:\n{log}", self.port);
        }
    }

    /// Starts the process and waits until it answers PING. On failure the child is reaped and
    /// its log returned.
    fn spawn(&mut self, binary: &Path) -> Result<(), String> {
        let dir = self.dir.path();
        let log = dir.join("redis.log");
        let mut command = Command::new(binary);
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--daemonize", "no"])
            .arg("--dir")
            .arg(dir)
            .arg("--logfile")
            .arg(&log);
        if self.config.durable {
            command.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            command.args(["--appendonly", "no"]);
        }
        if let Some(password) = &self.config.password {
            command.args(["--requirepass", password]);
        }
        if let Some(primary) = self.config.replica_of {
            command.args(["--replicaof", "127.0.0.1", &primary.to_string()]);
        }
        if self.config.cluster {
            command
                .args(["--cluster-enabled", "yes"])
                .args(["--cluster-config-file", "nodes.conf"])
                .args(["--cluster-node-timeout", "2000"]);
        }
        if let Some(tls_port) = self.tls_port {
            command
                .args([
                    "--tls-port",
                    &tls_port.to_string(),
                    "--tls-auth-clients",
                    "no",
                ])
                .arg("--tls-cert-file")
                .arg(dir.join(tls::SERVER_CERT))
                .arg("--tls-key-file")
                .arg(dir.join(tls::SERVER_KEY))
                .arg("--tls-ca-cert-file")
                .arg(dir.join(tls::CA_CERT));
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
        self.child = Some(child);

        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(format!("exited with {status}:\n{log}"));
            }
            if self.answers_ping() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.stop();
        Err(format!(
            "no PONG within {READY_TIMEOUT:?}:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        ))
    }

    /// For a replica: waits until its link to the primary is up and the first sync is done,
    /// failing the test after [`READY_TIMEOUT`].
    pub fn wait_until_replicating(&self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if self.info("replication").contains("master_link_status:up") {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "the replica on port {} did not sync in time:\n{}",
            self.port,
            self.info("replication")
        );
    }

    /// The text of `INFO section` (empty when the server cannot be asked).
    pub fn info(&self, section: &str) -> String {
        let Ok(mut stream) = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)) else {
            return String::new();
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        if stream
            .write_all(format!("INFO {section}\r\n").as_bytes())
            .is_err()
        {
            return String::new();
        }
        // A bulk string: `$<len>\r\n<text>\r\n`.
        let mut reply = Vec::new();
        let mut buffer = [0; 4096];
        while let Ok(n @ 1..) = stream.read(&mut buffer) {
            reply.extend_from_slice(&buffer[..n]);
            let text = String::from_utf8_lossy(&reply);
            let Some((header, body)) = text.split_once("\r\n") else {
                continue;
            };
            let Some(len) = header
                .strip_prefix('$')
                .and_then(|l| l.parse::<usize>().ok())
            else {
                return String::new();
            };
            if body.len() >= len {
                return body[..len].to_owned();
            }
        }
        String::new()
    }

    /// True once the server answers PING with PONG (not while it is still loading its AOF).
    fn answers_ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        let request = match &self.config.password {
            Some(password) => format!("AUTH {password}\r\nPING\r\n"),
            None => "PING\r\n".to_owned(),
        };
        if stream.write_all(request.as_bytes()).is_err() {
            return false;
        }
        let mut reply = Vec::new();
        let mut buffer = [0; 256];
        while let Ok(n @ 1..) = stream.read(&mut buffer) {
            reply.extend_from_slice(&buffer[..n]);
            let text = String::from_utf8_lossy(&reply);
            if text.contains("+PONG") {
                return true;
            }
            if text.contains('-') && text.ends_with("\r\n") {
                return false;
            }
        }
        false
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A key prefix no other test of this process (or of another test process) uses, so tests
/// can share one server.
pub fn fresh_prefix() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("titan-test-{}-{n}", std::process::id())
}

/// A port that was free a moment ago (the OS picks it; the listener is released at once).
fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a loopback port");
    listener.local_addr().expect("local address").port()
}

/// The path of `program` on PATH, or a panic telling how to install it.
pub fn find_on_path(program: &str) -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!("`{program}` is not on PATH: run scripts/install-test-deps to install it")
        })
}

//! A throw-away Mosquitto broker (Debian's package; `scripts/install-test-deps` installs it)
//! with a WebSocket listener on loopback, for the MQTT baseline's test. Killed and reaped on
//! drop.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a starting broker has to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Fresh ports tried when the broker cannot bind (another process took the free port first).
const PORT_ATTEMPTS: usize = 5;

pub struct Mosquitto {
    /// `ws://127.0.0.1:port`.
    pub url: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    pub fn start() -> Self {
        let binary = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .expect("mosquitto is not installed: run scripts/install-test-deps");
        let dir = tempfile::tempdir().unwrap();
        let mut last_log = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let (tcp, ws) = (free_port(), free_port());
            // Mosquitto 2.0.11 refuses to start with only a WebSocket listener, so a plain one
            // (unused) comes first; the WebSocket listener binds to the loopback interface.
            let config = dir.path().join("mosquitto.conf");
            std::fs::write(
                &config,
                format!(
                    "listener {tcp} 127.0.0.1\nlistener {ws} lo\nprotocol websockets\n\
                     allow_anonymous true\npersistence false\n"
                ),
            )
            .unwrap();
            let log = dir.path().join("mosquitto.log");
            let mut child = Command::new(&binary)
                .arg("-c")
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .expect("start mosquitto");
            let deadline = Instant::now() + READY_TIMEOUT;
            let ready = loop {
                if child.try_wait().unwrap().is_some() {
                    break false;
                }
                if TcpStream::connect((Ipv4Addr::LOCALHOST, ws)).is_ok() {
                    break true;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break false;
                }
                std::thread::sleep(Duration::from_millis(10));
            };
            if ready {
                return Self {
                    url: format!("ws://127.0.0.1:{ws}"),
                    child,
                    _dir: dir,
                };
            }
            last_log = std::fs::read_to_string(&log).unwrap_or_default();
        }
        panic!("mosquitto did not start after {PORT_ATTEMPTS} attempts; last log:\n{last_log}");
    }
}

impl Mosquitto {
    /// The broker's process id, for its CPU and memory.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    listener.local_addr().unwrap().port()
}

//! A real `titan-server` child process, for tests that must kill a server (`kill -9`) or run
//! several of them: started with a config file, its address read from the "listening" log line,
//! and killed (SIGKILL) and reaped on drop.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};

/// Log lines kept per process, printed when a test fails while it runs.
const KEPT_LOG_LINES: usize = 400;

/// A running `titan-server`. Killed and reaped on drop.
pub struct ServerProcess {
    child: Child,
    /// `ws://127.0.0.1:port/ws`.
    pub url: String,
    /// The newest lines of its log (stderr), for failure reports.
    log: Arc<Mutex<Vec<String>>>,
}

impl ServerProcess {
    /// Starts the binary with `config` and waits (bounded) for its "listening" log line.
    /// Variables of the test's own environment that would change the configuration are
    /// removed, so only `config` counts.
    pub fn start(config: &Path) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_titan-server"));
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy().into_owned();
            if name.starts_with("TITAN__") || name == "PORT" || name == "TITAN_CONFIG" {
                command.env_remove(name);
            }
        }
        let mut child = command
            .arg("--config")
            .arg(config)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot run titan-server");
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let lines = log.clone();
        // Keep draining stderr for the child's whole life so it never blocks on a full pipe.
        // The sender is dropped at end of file, so a server that exits early fails the wait.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("listening")
                    && let Some(tx) = tx.take()
                {
                    let addr = line
                        .split_whitespace()
                        .find_map(|w| w.strip_prefix("addr="))
                        .map(str::to_owned);
                    let _ = tx.send(addr);
                }
                let mut kept = lines.lock().unwrap();
                if kept.len() >= KEPT_LOG_LINES {
                    kept.remove(0);
                }
                kept.push(line);
            }
        });
        let mut server = Self {
            child,
            url: String::new(),
            log,
        };
        match rx.recv_timeout(super::WAIT) {
            Ok(Some(addr)) => server.url = format!("ws://{addr}/ws"),
            Ok(None) => panic!("no addr= in the listening line:\n{}", server.log_text()),
            Err(_) => panic!(
                "titan-server did not log its address (exited: {:?}):\n{}",
                server.child.try_wait().ok().flatten(),
                server.log_text()
            ),
        }
        server
    }

    /// The process id (for signals other than SIGKILL).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, like a crash: no chance for a clean shutdown. Waits until it is reaped.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// What the server has logged so far (the newest lines).
    pub fn log_text(&self) -> String {
        self.log.lock().map(|l| l.join("\n")).unwrap_or_default()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            // The test failed: its servers' logs are the best clue to why. (Test output, shown
            // by the harness for failed tests only.)
            eprintln!("--- log of titan-server {}:\n{}", self.url, self.log_text());
        }
    }
}

/// Writes `<dir>/titan.toml`: an instance on `127.0.0.1:0` with the test secret and the embedded
/// store in `<dir>/data`; `server` and `store` are more lines for those sections, `rest` more
/// sections. Returns the file's path.
pub fn embedded_config(dir: &Path, server: &str, store: &str, rest: &str) -> PathBuf {
    let path = dir.join("titan.toml");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{server}\n[auth]\njwt_secret = \"{secret}\"\n[store]\npath = \"{data}\"\n{store}\n{rest}\n",
        secret = super::SECRET,
        data = dir.join("data").display(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Writes `<dir>/<name>.toml`: an instance on `127.0.0.1:0` (one worker) using the Redis store at
/// `redis_url` under `prefix`, its local files in `<dir>/<name>-data`, and `delivery` (TOML
/// lines) as its `[delivery]` section. Returns the file's path.
pub fn redis_config(
    dir: &Path,
    name: &str,
    redis_url: &str,
    prefix: &str,
    delivery: &str,
) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    let text = format!(
        r#"[server]
listen = "127.0.0.1:0"
workers = 1
[auth]
jwt_secret = "{secret}"
[store]
backend = "redis"
path = "{data}"
redis_url = "{redis_url}"
key_prefix = "{prefix}"
redis_timeout = "500ms"
[delivery]
{delivery}
[log]
level = "info,titan_delivery=debug,titan_store=debug"
"#,
        secret = super::SECRET,
        data = dir.join(format!("{name}-data")).display(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

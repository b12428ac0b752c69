//! Throw-away TLS material for a test server, made with the `openssl` command: a CA, and a
//! server certificate it signs for `127.0.0.1` and `localhost`.

use std::path::Path;
use std::process::{Command, Stdio};

pub const CA_CERT: &str = "ca.crt";
pub const SERVER_CERT: &str = "server.crt";
pub const SERVER_KEY: &str = "server.key";

/// Writes the CA certificate and the server's certificate and key into `dir`.
pub fn write_certificates(dir: &Path) {
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    let key = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-days",
            "2",
            "-subj",
            "/CN=titan test ca",
            "-keyout",
            "ca.key",
            "-out",
            CA_CERT,
        ],
        &key,
    );
    openssl(
        dir,
        &[
            "req",
            "-subj",
            "/CN=localhost",
            "-keyout",
            SERVER_KEY,
            "-out",
            "server.csr",
        ],
        &key,
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-days",
            "2",
            "-in",
            "server.csr",
            "-CA",
            CA_CERT,
            "-CAkey",
            "ca.key",
        ],
        &[
            "-CAcreateserial",
            "-extfile",
            "server.ext",
            "-out",
            SERVER_CERT,
        ],
    );
}

/// Runs `openssl` in `dir`; panics with its output on failure.
fn openssl(dir: &Path, args: &[&str], more: &[&str]) {
    let output = Command::new(super::find_on_path("openssl"))
        .args(args)
        .args(more)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl");
    assert!(
        output.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

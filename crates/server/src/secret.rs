//! The JWT signing secret: configured, or generated once and kept under `store.path` so the first
//! run needs no setup and tokens survive restarts.

use std::io::Write;
use std::path::{Path, PathBuf};
use tracing::info;

/// File name of the generated secret inside `store.path`.
pub const SECRET_FILE: &str = "jwt_secret";

/// Why the secret could not be had.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read or write the JWT secret at {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot generate a random secret: {0}")]
    Random(String),
}

/// The configured secret, or the one kept in `dir` (generated now if there is none).
pub fn load_or_generate(configured: &str, dir: &Path) -> Result<Vec<u8>, SecretError> {
    if !configured.is_empty() {
        return Ok(configured.as_bytes().to_vec());
    }
    let path = dir.join(SECRET_FILE);
    let io = |source| SecretError::Io {
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => return Ok(text.trim().as_bytes().to_vec()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|e| SecretError::Random(e.to_string()))?;
    let secret: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&path).map_err(io)?;
    file.write_all(secret.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    info!(path = %path.display(), "generated a new JWT secret (set auth.jwt_secret to use your own)");
    Ok(secret.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A generated secret is kept and read back the same; a configured one wins.
    #[test]
    fn generated_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_generate("", dir.path()).unwrap();
        let b = load_or_generate("", dir.path()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 64);
        assert_eq!(load_or_generate("mine", dir.path()).unwrap(), b"mine");
    }
}

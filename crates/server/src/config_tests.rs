//! Config loading: defaults, file, environment, and rejection of bad input. Uses figment's
//! `Jail` so environment changes stay inside each test.

// `Jail`'s closures return figment's (large) error type; that is its API, not ours.
#![allow(clippy::result_large_err)]

use super::*;
use figment::Jail;

/// The embedded default loads and validates on its own.
#[test]
fn default_is_valid() {
    Jail::expect_with(|_| {
        let c = Config::load(None).unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:3000");
        assert_eq!(c.delivery.retention, Duration::from_secs(7 * 86400));
        assert_eq!(c.store.backend, Backend::Embedded);
        Ok(())
    });
}

/// `defaults` reads no environment: a bad `TITAN__` variable set while a test builds its
/// config (another test in the same process may be setting one) changes nothing. It once did,
/// and a push test failed in CI only when it ran beside the test of bad push variables.
#[test]
fn defaults_ignore_the_environment() {
    Jail::expect_with(|jail| {
        jail.set_env("TITAN__PUSH__FCM__API_BASE", "fcm.example");
        jail.set_env("PORT", "4999");
        assert!(Config::load(None).is_err());
        let c = Config::defaults().unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:3000");
        assert_eq!(c.store.backend, Backend::Embedded);
        Ok(())
    });
}

/// A file overrides the default, and the environment overrides the file.
#[test]
fn file_then_env() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "t.toml",
            "[delivery]\nack_timeout = \"2s\"\nmax_pending = 5\n",
        )?;
        jail.set_env("TITAN__DELIVERY__MAX_PENDING", "7");
        jail.set_env("TITAN__STORE__BACKEND", "memory");
        let c = Config::load(Some(Path::new("t.toml"))).unwrap();
        assert_eq!(c.delivery.ack_timeout, Duration::from_secs(2));
        assert_eq!(c.delivery.max_pending, 7);
        assert_eq!(c.store.backend, Backend::Memory);
        Ok(())
    });
}

/// `server.trusted_proxies` takes addresses and CIDR networks, from a file or the environment
/// (a TOML list); anything else is refused naming the key and the entry.
#[test]
fn trusted_proxies_are_checked() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "t.toml",
            "[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\"]\n",
        )?;
        let c = Config::load(Some(Path::new("t.toml"))).unwrap();
        assert_eq!(c.server.trusted_proxies, ["10.0.0.0/8", "::1"]);
        assert!(c.trusted_proxies().is_ok());
        jail.set_env(
            "TITAN__SERVER__TRUSTED_PROXIES",
            r#"["127.0.0.1", "lb.internal"]"#,
        );
        let err = Config::load(Some(Path::new("t.toml")))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("server.trusted_proxies") && err.contains("lb.internal"),
            "{err}"
        );
        Ok(())
    });
}

/// PORT sets 0.0.0.0:PORT unless TITAN__SERVER__LISTEN is given.
#[test]
fn port_variable() {
    Jail::expect_with(|jail| {
        jail.set_env("PORT", "8080");
        assert_eq!(Config::load(None).unwrap().server.listen, "0.0.0.0:8080");
        jail.set_env("TITAN__SERVER__LISTEN", "127.0.0.1:9");
        assert_eq!(Config::load(None).unwrap().server.listen, "127.0.0.1:9");
        Ok(())
    });
}

/// Unknown keys, in a file or the environment, are errors that name the key.
#[test]
fn unknown_keys_are_rejected() {
    Jail::expect_with(|jail| {
        jail.create_file("t.toml", "[delivery]\nack_timeot = \"2s\"\n")?;
        let err = Config::load(Some(Path::new("t.toml")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("ack_timeot"), "{err}");
        Ok(())
    });
    Jail::expect_with(|jail| {
        jail.set_env("TITAN__LIMITS__NOPE", "1");
        let err = Config::load(None).unwrap_err().to_string();
        assert!(err.contains("nope"), "{err}");
        Ok(())
    });
}

/// Invalid values are rejected with the key's name.
#[test]
fn invalid_values_are_rejected() {
    for (key, value, expect) in [
        ("TITAN__DELIVERY__ACK_TIMEOUT", "soon", "ack_timeout"),
        (
            "TITAN__LIMITS__MAX_FRAME_BYTES",
            "10",
            "limits.max_frame_bytes",
        ),
        ("TITAN__SERVER__LISTEN", "nowhere", "server.listen"),
        ("TITAN__STORE__BACKEND", "floppy", "backend"),
        ("TITAN__DELIVERY__WINDOW", "0", "delivery.window"),
        (
            "TITAN__LIMITS__OUTBOUND_QUEUE",
            "256",
            "limits.outbound_queue",
        ),
        ("TITAN__STORE__BACKEND", "redis", "store.redis_url"),
        ("TITAN__STORE__KEY_PREFIX", "a{b}", "store.key_prefix"),
        ("TITAN__STORE__CACHE_MB", "0", "store.cache_mb"),
        ("TITAN__STORE__CACHE_MB", "2000000", "store.cache_mb"),
        (
            "TITAN__STORE__CHECKPOINT_INTERVAL",
            "0s",
            "store.checkpoint_interval",
        ),
        (
            "TITAN__DELIVERY__POLL_INTERVAL",
            "0s",
            "delivery.poll_interval",
        ),
    ] {
        Jail::expect_with(|jail| {
            jail.set_env(key, value);
            let err = Config::load(None).unwrap_err().to_string().to_lowercase();
            assert!(err.contains(expect), "{key}={value}: {err}");
            Ok(())
        });
    }
}

/// A missing --config file is an error, not silently ignored.
#[test]
fn missing_file_is_an_error() {
    Jail::expect_with(|_| {
        assert!(Config::load(Some(Path::new("nope.toml"))).is_err());
        Ok(())
    });
}

/// check-config output hides the secret.
#[test]
fn display_hides_secret() {
    Jail::expect_with(|jail| {
        jail.set_env("TITAN__AUTH__JWT_SECRET", "s3cret-value");
        let c = Config::load(None).unwrap();
        let shown = c.to_display_toml();
        assert!(!shown.contains("s3cret-value"));
        assert!(shown.contains("<hidden>"));
        assert!(!format!("{c:?}").contains("s3cret-value"));
        Ok(())
    });
}

/// Redis URLs keep their shape but never show a password, in check-config or Debug.
#[test]
fn redis_password_is_hidden() {
    assert_eq!(
        hide_password("redis://:pw@h:6379/0"),
        "redis://:<hidden>@h:6379/0"
    );
    assert_eq!(hide_password("rediss://u:pw@h"), "rediss://u:<hidden>@h");
    assert_eq!(hide_password("redis://pw@h"), "redis://<hidden>@h");
    assert_eq!(hide_password("redis://h:6379"), "redis://h:6379");
    assert_eq!(
        hide_password("redis://:pw@a:1,redis://u:pw@b:2"),
        "redis://:<hidden>@a:1,redis://u:<hidden>@b:2"
    );
    Jail::expect_with(|jail| {
        jail.set_env("TITAN__STORE__BACKEND", "redis");
        jail.set_env(
            "TITAN__STORE__REDIS_URL",
            "redis://:topsecret@127.0.0.1:6379",
        );
        let c = Config::load(None).unwrap();
        assert!(!c.to_display_toml().contains("topsecret"));
        assert!(!format!("{c:?}").contains("topsecret"));
        Ok(())
    });
}

/// The operations keys (TLS pair, drain bounds, backlog, metrics listener, connection limits)
/// are checked with their names.
#[test]
fn operations_values_are_rejected() {
    for (key, value, expect) in [
        ("TITAN__SERVER__TLS_CERT", "cert.pem", "server.tls_cert"),
        ("TITAN__SERVER__DRAIN_WINDOW", "1m", "server.drain_timeout"),
        ("TITAN__SERVER__DRAIN_TIMEOUT", "0s", "server.drain_timeout"),
        ("TITAN__SERVER__BACKLOG", "0", "server.backlog"),
        (
            "TITAN__SERVER__METRICS_LISTEN",
            "metrics",
            "server.metrics_listen",
        ),
        (
            "TITAN__SERVER__METRICS_LISTEN",
            "127.0.0.1:3000",
            "server.metrics_listen",
        ),
        ("TITAN__SERVER__BACKLOG", "2147483648", "server.backlog"),
        (
            "TITAN__LIMITS__MAX_CONNECTIONS",
            "0",
            "limits.max_connections",
        ),
        (
            "TITAN__LIMITS__MAX_CONNECTIONS_PER_USER",
            "0",
            "limits.max_connections_per_user",
        ),
        (
            "TITAN__LIMITS__CONNECTION_BURST",
            "0",
            "limits.connection_burst",
        ),
    ] {
        Jail::expect_with(|jail| {
            jail.set_env(key, value);
            let err = Config::load(None).unwrap_err().to_string().to_lowercase();
            assert!(err.contains(expect), "{key}={value}: {err}");
            Ok(())
        });
    }
}

/// `[auth.google]` loads from a file (client ids as a list); contradictory auth settings are
/// refused naming the key: a secret and a public key together, Google sign-in in public-key
/// mode (Titan could not mint its token), a non-URL issuer, an empty client id.
#[test]
fn auth_keys_load_and_are_checked() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "ok.toml",
            "[auth.google]\nclient_ids = [\"a.apps\", \"b.apps\"]\njwks_min_refresh = \"10s\"\n",
        )?;
        let c = Config::load(Some(Path::new("ok.toml"))).unwrap();
        assert_eq!(c.auth.google.client_ids, ["a.apps", "b.apps"]);
        assert_eq!(c.auth.google.issuer, "https://accounts.google.com");
        assert_eq!(c.auth.google.jwks_min_refresh, Duration::from_secs(10));
        for (file, key) in [
            (
                "[auth]\njwt_secret = \"s\"\njwt_public_key = \"k.pem\"\n",
                "auth.jwt_public_key",
            ),
            (
                "[auth]\njwt_public_key = \"k.pem\"\n[auth.google]\nclient_ids = [\"a\"]\n",
                "auth.google.client_ids",
            ),
            (
                "[auth.google]\nissuer = \"accounts.google.com\"\n",
                "auth.google.issuer",
            ),
            (
                "[auth.google]\nclient_ids = [\"\"]\n",
                "auth.google.client_ids",
            ),
            (
                "[auth]\nrevocation_refresh = \"0s\"\n",
                "auth.revocation_refresh",
            ),
        ] {
            jail.create_file("bad.toml", file)?;
            let err = Config::load(Some(Path::new("bad.toml")))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{file}: {err}");
        }
        Ok(())
    });
}

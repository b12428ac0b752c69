//! The `titan-server` binary's library: configuration, wiring and the HTTP server.
//!
//! - [`background`]: [`BackgroundServer`], [`run`] on a thread of its own (tests, embedding).
//! - [`config`]: the typed configuration tree and its loading rules (`config/validation`: the
//!   checks that refuse a value the server cannot run with, naming its key).
//! - [`secret`]: the JWT secret, configured or generated and kept under `store.path`.
//! - [`push_config`]: the `[push]` section and the push providers it enables.
//! - [`http`]: the HTTP routes (WebSocket upgrade, health).
//! - [`page`]: the chat page, `titan.js` and the local-only dev token endpoint.
//! - [`metrics_http`]: `/metrics` (Prometheus) and `/debug/vars` (JSON).
//! - [`tls`]: the rustls configuration for serving `wss://` directly.
//! - [`accounts`]: token key mode, Google sign-in, the revocation list and `revoke`.
//! - [`admin`]: the loopback admin endpoint of an embedded-store server (`titan-server revoke`).
//! - `aside`: a one-worker HTTP server beside the main one (the admin and metrics listeners).
//! - [`revoke`]: the `titan-server revoke` command.
//! - [`run`]: builds the store and actors and serves until `shutdown` resolves; shared by `main`
//!   and the integration tests.

pub mod accounts;
pub mod admin;
mod aside;
pub mod background;
pub mod config;
pub mod http;
pub mod metrics_http;
pub mod page;
pub mod push_config;
pub mod revoke;
pub mod secret;
pub mod tls;

use actix::Actor;
use actix_web::{App, HttpServer, web};
use std::future::Future;
use std::net::TcpListener;
use std::sync::Arc;
use titan_delivery::{Dispatcher, DispatcherConfig, InstrumentedInbox, Metrics, Pusher, Router};
use titan_session::{
    ConnectionLimits, Connections, PushDeps, SessionConfig, SessionDeps, TrustedProxies,
};
use titan_store::{
    Bus, CheckpointObserver, Checkpoints, EmbeddedOptions, EmbeddedStore, Inbox, InboxLimits,
    PushRegistry, RedisOptions, RedisStore, StoreError, SyncObserver, Users,
};
use tracing::{error, info, warn};

pub use background::BackgroundServer;
pub use config::Config;

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Secret(#[from] secret::SecretError),
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    #[error("invalid auth configuration: {0}")]
    Auth(#[from] titan_session::AuthError),
    #[error(transparent)]
    PublicKey(#[from] accounts::PublicKeyError),
    #[error("auth.google: {0}")]
    Google(#[from] titan_session::SignInError),
    #[error("auth.jwks_url: {0}")]
    Keys(#[from] titan_session::jwks::FetchError),
    #[error("{0}")]
    Revoke(String),
    #[error("cannot start push delivery: {0}")]
    Push(#[from] titan_delivery::DeliveryError),
    #[error("http server: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// The configured store, and the cluster bus when instances share it.
pub struct Backends {
    pub inbox: Arc<dyn Inbox>,
    pub users: Arc<dyn Users>,
    pub bus: Option<Arc<dyn Bus>>,
    /// The same store's push tokens.
    pub push: Arc<dyn PushRegistry>,
}

/// Opens the configured store backend (and, for Redis, this instance's cluster bus). With
/// `metrics`, the embedded store's checkpoints are timed into `titan_store_checkpoint_seconds`
/// and its journal syncs into `titan_store_journal_sync_seconds`.
pub async fn open_store(
    config: &Config,
    metrics: Option<&Metrics>,
) -> Result<Backends, ServerError> {
    let limits = InboxLimits {
        max_pending: config.delivery.max_pending,
        retention: config.delivery.retention,
    };
    Ok(match config.store.backend {
        config::Backend::Embedded => {
            let options = EmbeddedOptions {
                cache_bytes: config.store.cache_mb << 20,
                checkpoints: Checkpoints {
                    every: config.store.checkpoint_interval,
                    ..Checkpoints::default()
                },
                on_checkpoint: metrics.map(|m| {
                    let pauses = m.store_checkpoint.clone();
                    let observe: CheckpointObserver = Arc::new(move |took: std::time::Duration| {
                        pauses.observe(took.as_secs_f64())
                    });
                    observe
                }),
                on_journal_sync: metrics.map(|m| {
                    let syncs = m.store_journal_sync.clone();
                    let observe: SyncObserver = Arc::new(move |took: std::time::Duration| {
                        syncs.observe(took.as_secs_f64())
                    });
                    observe
                }),
            };
            let store = Arc::new(EmbeddedStore::open_with(
                &config.store.path,
                limits,
                options,
            )?);
            Backends {
                inbox: store.clone(),
                users: store.clone(),
                bus: None,
                push: store,
            }
        }
        config::Backend::Memory => {
            let store = Arc::new(EmbeddedStore::memory(limits)?);
            Backends {
                inbox: store.clone(),
                users: store.clone(),
                bus: None,
                push: store,
            }
        }
        config::Backend::Redis => {
            let options = RedisOptions {
                connect_timeout: config.store.redis_timeout,
                operation_timeout: config.store.redis_timeout,
                wait_replicas: config.store.redis_wait_replicas,
                wait_timeout: config.store.redis_wait_timeout,
                ..RedisOptions::default()
            };
            let store = RedisStore::connect_with(
                &config.store.redis_url,
                &config.store.key_prefix,
                limits,
                options,
            )
            .await?;
            let bus = store.bus().await?;
            let store = Arc::new(store);
            Backends {
                inbox: store.clone(),
                users: store.clone(),
                bus: Some(Arc::new(bus)),
                push: store,
            }
        }
    })
}

pub use accounts::authenticator;

fn session_config(config: &Config) -> SessionConfig {
    let l = &config.limits;
    SessionConfig {
        max_frame_bytes: l.max_frame_bytes,
        max_message_bytes: l.max_message_bytes,
        max_batch: l.max_batch,
        auth_timeout: l.auth_timeout,
        ping_interval: l.ping_interval,
        idle_timeout: l.idle_timeout,
        outbound_queue: l.outbound_queue,
        requests_per_second: l.requests_per_second,
        request_burst: l.request_burst,
        max_inflight_requests: l.max_inflight_requests,
        max_auth_failures: l.max_auth_failures,
    }
}

fn connection_limits(config: &Config, trusted_proxies: TrustedProxies) -> ConnectionLimits {
    let l = &config.limits;
    ConnectionLimits {
        max_connections: l.max_connections,
        max_connections_per_user: l.max_connections_per_user,
        connections_per_ip_per_second: l.connections_per_ip_per_second,
        connection_burst: l.connection_burst,
        messages_per_minute: l.messages_per_minute,
        allowed_origins: config.server.allowed_origins.clone(),
        trusted_proxies,
    }
}

/// The part of the drain timeout kept for the HTTP server's own graceful stop, after the
/// sessions are gone (close handshakes finishing).
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Connections a worker may hold beyond `limits.max_connections`: those being refused with 503
/// (each closes once its answer is written).
const REFUSALS_IN_FLIGHT: usize = 1024;

fn dispatcher_config(config: &Config) -> DispatcherConfig {
    DispatcherConfig {
        ack_timeout: config.delivery.ack_timeout,
        window: config.delivery.window,
        recv_batch: config.delivery.recv_batch,
        recv_bytes: config.limits.max_frame_bytes * 3 / 4,
        poll_interval: config.delivery.poll_interval,
        push_after_unacked: config.push.after_unacked(),
        ..DispatcherConfig::default()
    }
}

/// Serves on `listener` until `shutdown` resolves. Must run inside an actix system
/// (`#[actix_web::main]` or `actix_rt::System::new().block_on(..)`).
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + 'static,
) -> Result<(), ServerError> {
    let certificates = match (&config.server.tls_cert, &config.server.tls_key) {
        (cert, key) if !cert.as_os_str().is_empty() => Some(tls::Certificates::load(cert, key)?),
        _ => None,
    };
    let tls = certificates
        .as_ref()
        .map(tls::Certificates::server_config)
        .transpose()?;
    let metrics = Metrics::new();
    let backends = open_store(&config, Some(&metrics)).await?;
    let inbox: Arc<dyn Inbox> = Arc::new(InstrumentedInbox::new(backends.inbox, metrics.clone()));
    let auth = Arc::new(authenticator(&config)?);
    let accounts = accounts::accounts(&config, backends.users.clone()).await?;
    let proxies = config.trusted_proxies()?;
    let connections =
        Connections::new(connection_limits(&config, proxies.clone()), metrics.clone());
    let readiness = http::Readiness {
        inbox: inbox.clone(),
        timeout: config.store.redis_timeout,
        bus: backends.bus.clone(),
        connections: connections.clone(),
    };
    let mut dispatcher =
        Dispatcher::new(inbox, dispatcher_config(&config)).with_metrics(metrics.clone());
    if let Some(bus) = &backends.bus {
        dispatcher = dispatcher.with_bus(bus.clone());
    }
    let providers = config.push.providers(config.delivery.retention)?;
    let push_platforms: Arc<[_]> = providers.iter().map(|p| p.platform()).collect();
    if !providers.is_empty() {
        let mut pusher = Pusher::new(
            backends.push.clone(),
            providers,
            config.push.pusher_config(),
        );
        if let Some(bus) = &backends.bus {
            pusher = pusher.with_bus(bus.clone());
        }
        pusher.stats().export_to(metrics.clone());
        dispatcher = dispatcher.with_push(pusher.start());
    }
    let dispatcher = dispatcher.start();
    let mut router = Router::new(dispatcher.clone())
        .with_metrics(metrics.clone())
        .with_revocations(accounts.revocations.clone());
    if let Some(bus) = backends.bus {
        router = router.with_bus(bus);
    }
    let router = router.start();
    let dev_tokens = page::DevTokens {
        enabled: config.auth.dev_tokens,
        auth: auth.clone(),
        proxies,
    };
    if dev_tokens.enabled {
        tracing::warn!("auth.dev_tokens is on: loopback clients can get a token for any user");
    }
    accounts::keep_revocations_current(&config, &accounts, router.clone());
    let admin = match config.store.backend {
        config::Backend::Embedded => Some(admin::Admin::start(
            &config.store.path,
            backends.users.clone(),
            router.clone(),
        )?),
        _ => None,
    };
    let deps = SessionDeps {
        router,
        dispatcher,
        auth,
        config: Arc::new(session_config(&config)),
        metrics: metrics.clone(),
        connections: connections.clone(),
        accounts,
        push: PushDeps {
            registry: backends.push,
            platforms: push_platforms,
        },
    };
    let addr = listener.local_addr()?;
    // A peer that stops reading leaves the server's writes stuck behind a zero TCP window, and
    // then actix never releases the socket, not even after the session has closed. The kernel
    // drops a connection whose data stayed unsent or unacknowledged this long; accepted sockets
    // inherit the setting from the listener. The idle timeout is the right bound: a peer that
    // reads nothing for that long would have been closed as idle (4000) anyway.
    socket2::SockRef::from(&listener).set_tcp_user_timeout(Some(config.limits.idle_timeout))?;
    // The accept queue: Linux takes a second `listen` on a listening socket as its new backlog
    // (the standard library's `bind` listened with 128; see `server.backlog`, validated to fit).
    let backlog = i32::try_from(config.server.backlog).unwrap_or(i32::MAX);
    socket2::SockRef::from(&listener).listen(backlog)?;
    // Bound before the main listener serves, so that an address in use stops the start.
    let metrics_server = match config.metrics_addr()? {
        Some(addr) => Some(metrics_http::MetricsServer::start(addr, metrics.clone())?),
        None => None,
    };
    let metrics_on_main = metrics_server.is_none();
    let reload_metrics = metrics.clone();
    // Listened for before the server accepts anything, so a SIGHUP never finds the default
    // action (ending the process) in place once the server is up.
    let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(deps.clone()))
            .app_data(web::Data::new(readiness.clone()))
            .app_data(web::Data::new(dev_tokens.clone()))
            .app_data(web::Data::new(metrics.clone()))
            .configure(http::routes)
            .configure(|cfg| {
                if metrics_on_main {
                    metrics_http::routes(cfg);
                }
            })
    })
    .disable_signals()
    // Nagle off: responses and msg.recv are small frames; with Nagle on (actix-web's default)
    // a frame written while an earlier one is unacknowledged waits for the peer's delayed ACK,
    // which added ~10 ms to send-to-ACK latency in the benchmark (docs/benchmarks.md).
    .tcp_nodelay(true)
    // actix stops accepting at 25,000 connections per worker by default, below Titan's own limit
    // (`limits.max_connections`), which refuses cleanly (503 with Retry-After). Any one worker
    // may hold all of them, plus the connections being refused.
    .max_connections(
        config
            .limits
            .max_connections
            .saturating_add(REFUSALS_IN_FLIGHT),
    )
    .shutdown_timeout(STOP_GRACE.as_secs());
    if config.server.workers > 0 {
        server = server.workers(config.server.workers);
    }
    let scheme = if tls.is_some() { "wss" } else { "ws" };
    let server = match tls {
        Some(tls) => server.listen_rustls_0_23(listener, tls)?,
        None => server.listen(listener)?,
    }
    .run();
    info!(%addr, scheme, backend = ?config.store.backend, "listening");
    let handle = server.handle();
    let reloading = actix_web::rt::spawn(reload_on_hangup(hangups, certificates, reload_metrics));
    let (window, timeout) = (config.server.drain_window, config.server.drain_timeout);
    actix_web::rt::spawn(async move {
        shutdown.await;
        info!(open = connections.open(), ?window, "draining");
        connections.start_drain(window);
        let wait = timeout.saturating_sub(STOP_GRACE);
        if tokio::time::timeout(wait, connections.idle())
            .await
            .is_err()
        {
            warn!(
                open = connections.open(),
                "drain timeout: cutting the remaining connections"
            );
        }
        handle.stop(true).await;
        if let Some(admin) = admin {
            admin.stop().await;
        }
        if let Some(metrics_server) = metrics_server {
            metrics_server.stop().await;
        }
    });
    let served = server.await;
    reloading.abort();
    served?;
    Ok(())
}

/// Reads the TLS certificate and key again on each SIGHUP (a failed read keeps the current
/// ones, and says why). Also without TLS, so that SIGHUP never ends the server (its default
/// action would). Counted in `titan_tls_reloads_total{outcome}`.
async fn reload_on_hangup(
    hangups: std::io::Result<tokio::signal::unix::Signal>,
    certificates: Option<Arc<tls::Certificates>>,
    metrics: Metrics,
) {
    let mut hangups = match hangups {
        Ok(hangups) => hangups,
        Err(e) => {
            warn!(error = %e, "cannot listen for SIGHUP; TLS files are read at start only");
            return;
        }
    };
    while hangups.recv().await.is_some() {
        let Some(certificates) = &certificates else {
            info!("SIGHUP: no TLS configured, nothing to reload");
            continue;
        };
        match certificates.reload() {
            Ok(()) => {
                metrics.tls_reloads.with_label_values(&["ok"]).inc();
                info!("SIGHUP: TLS certificate and key reloaded");
            }
            Err(e) => {
                metrics.tls_reloads.with_label_values(&["failed"]).inc();
                error!(error = %e, "SIGHUP: TLS reload failed; serving the previous certificate");
            }
        }
    }
}

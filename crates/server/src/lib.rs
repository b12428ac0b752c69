//! The `titan-server` binary's library: configuration, wiring and the HTTP server.
//!
//! - [`config`]: the typed configuration tree and its loading rules.
//! - [`secret`]: the JWT secret, configured or generated and kept under `store.path`.
//! - [`http`]: the HTTP routes (WebSocket upgrade, health).
//! - [`run`]: builds the store and actors and serves until `shutdown` resolves; shared by `main`
//!   and the integration tests.

pub mod config;
pub mod http;
pub mod secret;

use actix::Actor;
use actix_web::{App, HttpServer, web};
use std::future::Future;
use std::net::TcpListener;
use std::sync::Arc;
use titan_delivery::{Dispatcher, DispatcherConfig, Router};
use titan_session::{Authenticator, SessionConfig, SessionDeps};
use titan_store::{Bus, EmbeddedStore, Inbox, InboxLimits, RedisOptions, RedisStore, StoreError};
use tracing::info;

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
    #[error("http server: {0}")]
    Io(#[from] std::io::Error),
}

/// The configured store, and the cluster bus when instances share it.
pub struct Backends {
    pub inbox: Arc<dyn Inbox>,
    pub bus: Option<Arc<dyn Bus>>,
}

/// Opens the configured store backend (and, for Redis, this instance's cluster bus).
pub async fn open_store(config: &Config) -> Result<Backends, ServerError> {
    let limits = InboxLimits {
        max_pending: config.delivery.max_pending,
        retention: config.delivery.retention,
    };
    Ok(match config.store.backend {
        config::Backend::Embedded => Backends {
            inbox: Arc::new(EmbeddedStore::open(&config.store.path, limits)?),
            bus: None,
        },
        config::Backend::Memory => Backends {
            inbox: Arc::new(EmbeddedStore::memory(limits)?),
            bus: None,
        },
        config::Backend::Redis => {
            let options = RedisOptions {
                connect_timeout: config.store.redis_timeout,
                operation_timeout: config.store.redis_timeout,
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
            Backends {
                inbox: Arc::new(store),
                bus: Some(Arc::new(bus)),
            }
        }
    })
}

/// The token minter/verifier for this configuration (shared with `titan-server token`).
pub fn authenticator(config: &Config) -> Result<Authenticator, ServerError> {
    let secret = secret::load_or_generate(&config.auth.jwt_secret, &config.store.path)?;
    Ok(Authenticator::hs256(&secret, config.auth.token_ttl)?)
}

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

fn dispatcher_config(config: &Config) -> DispatcherConfig {
    DispatcherConfig {
        ack_timeout: config.delivery.ack_timeout,
        window: config.delivery.window,
        recv_batch: config.delivery.recv_batch,
        recv_bytes: config.limits.max_frame_bytes * 3 / 4,
        poll_interval: config.delivery.poll_interval,
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
    let backends = open_store(&config).await?;
    let auth = Arc::new(authenticator(&config)?);
    let readiness = http::Readiness {
        inbox: backends.inbox.clone(),
        timeout: config.store.redis_timeout,
    };
    let mut dispatcher = Dispatcher::new(backends.inbox, dispatcher_config(&config));
    if let Some(bus) = &backends.bus {
        dispatcher = dispatcher.with_bus(bus.clone());
    }
    let dispatcher = dispatcher.start();
    let mut router = Router::new(dispatcher.clone());
    if let Some(bus) = backends.bus {
        router = router.with_bus(bus);
    }
    let router = router.start();
    let deps = SessionDeps {
        router,
        dispatcher,
        auth,
        config: Arc::new(session_config(&config)),
    };
    let addr = listener.local_addr()?;
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(deps.clone()))
            .app_data(web::Data::new(readiness.clone()))
            .configure(http::routes)
    })
    .disable_signals()
    // Nagle off: responses and msg.recv are small frames; with Nagle on (actix-web's default)
    // a frame written while an earlier one is unacknowledged waits for the peer's delayed ACK,
    // which added ~10 ms to send-to-ACK latency in the benchmark (docs/benchmarks.md).
    .tcp_nodelay(true)
    .shutdown_timeout(5);
    if config.server.workers > 0 {
        server = server.workers(config.server.workers);
    }
    let server = server.listen(listener)?.run();
    info!(%addr, backend = ?config.store.backend, "listening");
    let handle = server.handle();
    actix_web::rt::spawn(async move {
        shutdown.await;
        info!("shutting down");
        // Connections are cut at once; a graceful drain (close code 4006) is future work.
        handle.stop(false).await;
    });
    server.await?;
    Ok(())
}

//! Opening authenticated connections, many at a time, and naming the users of a run.

use crate::error::BenchError;
use crate::tokens::TokenSource;
use futures_util::StreamExt;
use std::future::Future;
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};
use titan_client::{Client, ClientOptions};

/// A prefix unique to this run (milliseconds since the epoch), so users of a run against a
/// durable store never meet messages left by an earlier run.
pub fn run_id() -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("{ms}")
}

/// Options for benchmark connections: acks answered by the connection task itself, so the
/// receiver's ack never waits for the measuring code.
pub fn auto_ack_options() -> ClientOptions {
    ClientOptions {
        auto_ack: true,
        ..ClientOptions::default()
    }
}

/// One connection to open: where, from which local address, as whom.
#[derive(Debug, Clone)]
pub struct Login {
    pub url: String,
    pub source: Option<IpAddr>,
    pub user: String,
    pub device: Option<String>,
}

/// Connects and authenticates.
pub async fn open(
    login: &Login,
    tokens: &TokenSource,
    options: ClientOptions,
) -> Result<Client, BenchError> {
    let token = tokens.token(&login.user).await?;
    let client = match login.source {
        Some(source) => Client::connect_from(&login.url, source, options).await,
        None => Client::connect_with(&login.url, options).await,
    }
    .map_err(|e| BenchError::client(format!("connect to {}", login.url), e))?;
    client
        .authenticate(&token, login.device.as_deref())
        .await
        .map_err(|e| BenchError::client(format!("authenticate {}", login.user), e))?;
    Ok(client)
}

/// Runs `f` on every item with at most `concurrency` at once; results in input order.
pub async fn each_concurrently<T, R, F, Fut>(items: Vec<T>, concurrency: usize, f: F) -> Vec<R>
where
    F: Fn(T) -> Fut,
    Fut: Future<Output = R>,
{
    let indexed = items.into_iter().enumerate().map(|(i, item)| {
        let fut = f(item);
        async move { (i, fut.await) }
    });
    let mut results: Vec<(usize, R)> = futures_util::stream::iter(indexed)
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

/// Opens every login (at most `concurrency` handshakes at once); fails on the first error.
pub async fn open_all(
    logins: Vec<Login>,
    tokens: &TokenSource,
    options: &ClientOptions,
    concurrency: usize,
) -> Result<Vec<Client>, BenchError> {
    each_concurrently(logins, concurrency, |login| async move {
        open(&login, tokens, options.clone()).await
    })
    .await
    .into_iter()
    .collect()
}

//! [`BackgroundServer`]: [`crate::run`] on a thread of its own, with its own actix system, for
//! programs that are not actix programs themselves: the integration tests of every crate, a
//! load generator, or an application embedding Titan.

use std::net::{SocketAddr, TcpListener};
use std::thread::JoinHandle;

use crate::{Config, ServerError};

/// A server serving `listener` until dropped; dropping it shuts the server down (the graceful
/// drain of [`crate::run`]) and waits for its thread.
pub struct BackgroundServer {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<(), ServerError>>>,
}

impl BackgroundServer {
    /// Starts serving `listener` with `config` on a new thread.
    pub fn start(listener: TcpListener, config: Config) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("titan-server".to_owned())
            .spawn(move || {
                actix_web::rt::System::new().block_on(crate::run(listener, config, async {
                    let _ = stopped.await;
                }))
            })?;
        Ok(Self {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The address it serves.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://<addr>/ws`.
    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Shuts down and returns how the server ended (an error it started or ran with).
    pub fn stop(mut self) -> Result<(), ServerError> {
        self.shut_down()
    }

    fn shut_down(&mut self) -> Result<(), ServerError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(ServerError::Io(std::io::Error::other(
                "the server thread panicked",
            ))),
            None => Ok(()),
        }
    }
}

impl Drop for BackgroundServer {
    fn drop(&mut self) {
        if let Err(e) = self.shut_down() {
            tracing::warn!(error = %e, "background server ended with an error");
        }
    }
}

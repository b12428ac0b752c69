//! A small HTTP server beside the main one, on a listener of its own: the admin endpoint
//! ([`crate::admin`]) and the metrics listener ([`crate::metrics_http`]). One worker, no signal
//! handling (the main server's drain stops it), spawned on the current actix system.

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpServer, web};
use std::net::TcpListener;

/// Serves the routes and data `configure` registers on `listener`; the handle stops it.
pub fn serve(
    listener: TcpListener,
    configure: impl Fn(&mut web::ServiceConfig) + Clone + Send + 'static,
) -> std::io::Result<ServerHandle> {
    let server = HttpServer::new(move || App::new().configure(configure.clone()))
        .workers(1)
        .disable_signals()
        .listen(listener)?
        .run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    Ok(handle)
}

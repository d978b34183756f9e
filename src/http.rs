//! The manager's read-only HTTP side (`argon manager --http ADDR`):
//! `/metrics` (Prometheus), `/healthz` and `/readyz`. It runs in the
//! manager's actix system and asks the [`Manager`] actor for every answer;
//! it holds no state of its own and never shows task arguments or results.
//! With a token, every path but `/healthz` needs `Authorization: Bearer`.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use actix::Addr;
use actix_web::http::header;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};

use crate::actors::manager::metrics::GetMetrics;
use crate::actors::Manager;

/// Most HTTP connections held at once; more wait in the listen backlog.
pub const MAX_HTTP_CONNECTIONS: usize = 64;

/// Most connections waiting in the HTTP listener's backlog.
pub const HTTP_BACKLOG: u32 = 64;

/// A client that has not sent its request head by then is dropped (408).
pub const HTTP_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Content type of `/metrics`: the text format `prometheus-client` writes.
const METRICS_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

struct State {
    manager: Addr<Manager>,
    token: Option<Vec<u8>>,
}

/// Starts the HTTP side on `bind` and returns the address it listens on.
/// `token`, if given, is required as a bearer token on every path but
/// `/healthz`. Binding beyond loopback without a token logs a warning.
pub fn start(bind: &str, manager: Addr<Manager>, token: Option<String>) -> io::Result<SocketAddr> {
    let state = web::Data::new(State {
        manager,
        token: token.map(String::into_bytes),
    });
    let guarded = state.token.is_some();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .route("/metrics", web::get().to(metrics))
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
    })
    .workers(1)
    .disable_signals()
    .max_connections(MAX_HTTP_CONNECTIONS)
    .backlog(HTTP_BACKLOG)
    .client_request_timeout(HTTP_REQUEST_TIMEOUT)
    .shutdown_timeout(1)
    .bind(bind)?;
    let addr = server
        .addrs()
        .first()
        .copied()
        .ok_or_else(|| io::Error::other("no address bound"))?;
    if !guarded && !addr.ip().is_loopback() {
        log::warn!(
            "the HTTP side listens on {addr}, beyond loopback, without a token: anyone who \
             reaches it reads the metrics (set --http-token-file)"
        );
    }
    actix_rt::spawn(server.run());
    Ok(addr)
}

/// Whether `a` and `b` are equal, in a time that depends on their lengths only.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn authorized(req: &HttpRequest, state: &State) -> bool {
    let Some(token) = &state.token else {
        return true;
    };
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .is_some_and(|given| same_bytes(given, token))
}

fn unauthorized() -> HttpResponse {
    HttpResponse::Unauthorized()
        .insert_header((header::WWW_AUTHENTICATE, "Bearer"))
        .body("a bearer token is required\n")
}

fn manager_gone() -> HttpResponse {
    HttpResponse::ServiceUnavailable().body("the manager is not running\n")
}

async fn metrics(req: HttpRequest, state: web::Data<State>) -> HttpResponse {
    if !authorized(&req, &state) {
        return unauthorized();
    }
    match state.manager.send(GetMetrics).await {
        Ok(snapshot) => HttpResponse::Ok()
            .content_type(METRICS_TYPE)
            .body(snapshot.text),
        Err(_) => manager_gone(),
    }
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().body("ok\n")
}

async fn readyz(req: HttpRequest, state: web::Data<State>) -> HttpResponse {
    if !authorized(&req, &state) {
        return unauthorized();
    }
    match state.manager.send(GetMetrics).await {
        Ok(s) if s.workers > 0 => HttpResponse::Ok().body("ready\n"),
        Ok(_) => HttpResponse::ServiceUnavailable().body("no worker registered\n"),
        Err(_) => manager_gone(),
    }
}

#[cfg(test)]
mod tests {
    use super::same_bytes;

    #[test]
    fn compares_whole_tokens() {
        assert!(same_bytes(b"secret", b"secret"));
        assert!(!same_bytes(b"secret", b"secreT"));
        assert!(!same_bytes(b"secret", b"secret2"));
        assert!(!same_bytes(b"", b"x"));
    }
}

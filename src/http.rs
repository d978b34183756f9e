//! The manager's read-only HTTP side (`argon manager --http ADDR`): the
//! dashboard page `/` and its data `/api/overview`, `/metrics`
//! (Prometheus), `/healthz` and `/readyz`. It runs in the manager's actix
//! system and asks the [`Manager`] actor for every answer; it holds no
//! state of its own and never shows task arguments or results. With a
//! token, every path but `/healthz` needs `Authorization: Bearer`; no
//! query parameter stands in for it (see [`authorized`]).

use std::io;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use actix::Addr;
use actix_web::http::header;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use nix::sys::socket::{listen, Backlog};

use crate::actors::manager::metrics::GetMetrics;
use crate::actors::manager::overview::GetOverview;
use crate::actors::Manager;

/// Most HTTP connections held at once; more wait in the listen backlog.
pub const MAX_HTTP_CONNECTIONS: usize = 64;

/// Most connections waiting in the HTTP listener's backlog.
pub const HTTP_BACKLOG: i32 = 64;

/// A client that has not sent its request head by then is dropped (408).
pub const HTTP_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Content type of `/metrics`: the text format `prometheus-client` writes.
const METRICS_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The dashboard: one page with its style and script inline, polling
/// `api/overview` once a second.
pub const DASHBOARD_HTML: &str = include_str!("dashboard.html");

struct State {
    manager: Addr<Manager>,
    token: Option<Vec<u8>>,
}

/// Why the HTTP side cannot listen where it was asked to.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The address is not `HOST:PORT` (or the host does not resolve).
    #[error("--http takes HOST:PORT, such as 127.0.0.1:9100 (got {0:?}): {1}")]
    Address(String, io::Error),
    /// The system refused it: the port is taken, or not ours to use.
    #[error("cannot serve HTTP on {0}: {1}")]
    Refused(String, io::Error),
}

/// Binds the HTTP side's listener on `bind` (`HOST:PORT`), so that a bad
/// address or a taken port is told before the manager starts.
pub fn bind(bind: &str) -> Result<std::net::TcpListener, BindError> {
    let addrs: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(bind)
        .map_err(|e| BindError::Address(bind.to_string(), e))?
        .collect();
    if addrs.is_empty() {
        let none = io::Error::new(io::ErrorKind::NotFound, "the host has no address");
        return Err(BindError::Address(bind.to_string(), none));
    }
    let refused = |e: io::Error| BindError::Refused(bind.to_string(), e);
    let listener = std::net::TcpListener::bind(&addrs[..]).map_err(refused)?;
    Backlog::new(HTTP_BACKLOG)
        .and_then(|backlog| listen(&listener, backlog))
        .map_err(|e| refused(e.into()))?;
    listener.set_nonblocking(true).map_err(refused)?;
    Ok(listener)
}

/// Starts the HTTP side on `listener` (from [`bind`]) and returns the
/// address it listens on. `token`, if given, is required as a bearer token
/// on every path but `/healthz`. Listening beyond loopback without a token
/// logs a warning.
pub fn start(
    listener: std::net::TcpListener,
    manager: Addr<Manager>,
    token: Option<String>,
) -> io::Result<SocketAddr> {
    let state = web::Data::new(State {
        manager,
        token: token.map(String::into_bytes),
    });
    let guarded = state.token.is_some();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .route("/", web::get().to(dashboard))
            .route("/api/overview", web::get().to(overview))
            .route("/metrics", web::get().to(metrics))
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
    })
    .workers(1)
    .disable_signals()
    .max_connections(MAX_HTTP_CONNECTIONS)
    .client_request_timeout(HTTP_REQUEST_TIMEOUT)
    .shutdown_timeout(1)
    .listen(listener)?;
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

/// Whether `req` carries the token, if one is set, as
/// `Authorization: Bearer`. Only the header counts: a token in the URL would
/// end up in browser history, proxy logs and shell history, so a browser
/// reaches a guarded dashboard through a proxy that adds the header.
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

/// The page's Content-Security-Policy: nothing loads from elsewhere, and
/// only the page's own inline script and style (by hash) run, so text that
/// slipped into the markup could not execute.
fn dashboard_csp() -> &'static str {
    static CSP: OnceLock<String> = OnceLock::new();
    CSP.get_or_init(|| {
        format!(
            "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; \
             img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            inline_hash(DASHBOARD_HTML, "<script>", "</script>"),
            inline_hash(DASHBOARD_HTML, "<style>", "</style>"),
        )
    })
}

/// The CSP source `'sha256-…'` of the text between `open` and `close` in
/// `page` (or `'none'` without one).
fn inline_hash(page: &str, open: &str, close: &str) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    let Some(body) = page
        .split_once(open)
        .and_then(|(_, rest)| rest.split_once(close))
        .map(|(body, _)| body)
    else {
        return "'none'".into();
    };
    let digest = sha2::Sha256::digest(body.as_bytes());
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

async fn dashboard(req: HttpRequest, state: web::Data<State>) -> HttpResponse {
    if !authorized(&req, &state) {
        return unauthorized();
    }
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CONTENT_SECURITY_POLICY, dashboard_csp()))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(DASHBOARD_HTML)
}

async fn overview(req: HttpRequest, state: web::Data<State>) -> HttpResponse {
    if !authorized(&req, &state) {
        return unauthorized();
    }
    match state.manager.send(GetOverview).await {
        Ok(o) => HttpResponse::Ok()
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
            .json(o),
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
    use super::{dashboard_csp, inline_hash, same_bytes, DASHBOARD_HTML};

    #[test]
    fn the_csp_allows_exactly_the_inline_script_and_style() {
        assert_eq!(
            inline_hash("a<b>hi</b>c", "<b>", "</b>"),
            // sha256("hi")
            "'sha256-j0NDRmSPa5bfid2pAcUXaxCm2Dlh3TwayItZstwyeqQ='"
        );
        assert_eq!(inline_hash("none here", "<b>", "</b>"), "'none'");
        let csp = dashboard_csp();
        assert!(csp.contains("script-src 'sha256-"), "{csp}");
        assert!(csp.contains("style-src 'sha256-"), "{csp}");
        assert!(!csp.contains("unsafe"), "{csp}");
        assert_eq!(DASHBOARD_HTML.matches("<script>").count(), 1);
        assert_eq!(DASHBOARD_HTML.matches("<style>").count(), 1);
    }

    #[test]
    fn compares_whole_tokens() {
        assert!(same_bytes(b"secret", b"secret"));
        assert!(!same_bytes(b"secret", b"secreT"));
        assert!(!same_bytes(b"secret", b"secret2"));
        assert!(!same_bytes(b"", b"x"));
    }
}

//! The manager's HTTP side (`argon manager --http ADDR`): the dashboard
//! page `/` and its data `/api/overview`, `/metrics` (Prometheus),
//! `/healthz` and `/readyz`, and the dashboard's three actions: `POST
//! /api/tasks/ID/cancel`, `POST /api/dead/ID/retry` and `POST
//! /api/workers/ID/drain`, each answering JSON (task ids as decimal
//! strings, as in the overview: they exceed what a JavaScript number holds). It runs in the manager's
//! actix system and asks the [`Manager`] actor for every answer; it holds
//! no state of its own and never shows task arguments or results.
//!
//! **Reading.** With a token, every `GET` but `/healthz` and `/` needs
//! `Authorization: Bearer` (else 401); no query parameter stands in for it
//! (see [`authorized`]). `/` is served to anyone: the page holds no data,
//! and it asks for the token when `/api/overview` answers 401, keeps it in
//! the tab's `sessionStorage` and sends it as the bearer on every request.
//!
//! **Acting.** An action needs a token to be set and sent: without
//! `--http-token-file` every action is refused, as is one whose bearer is
//! missing or wrong (403, with a JSON `{"error": …}` the page shows). It is
//! also refused (403) unless it carries the header [`ACTION_HEADER`] (a
//! cross-site form cannot send one, and a cross-origin `fetch` with it needs
//! a CORS preflight this side never grants), and when an `Origin` header
//! names another host or `Sec-Fetch-Site` is not `same-origin`. A `GET`
//! never changes anything.

use std::io;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use actix::Addr;
use actix_web::http::header;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use nix::sys::socket::{listen, Backlog};

use crate::actors::manager::client_session::fresh_session_id;
use crate::actors::manager::console::{DrainResult, DrainWorker};
use crate::actors::manager::metrics::GetMetrics;
use crate::actors::manager::overview::GetOverview;
use crate::actors::Manager;
use crate::messages::{CancelById, CancelResult, DeadSelect, RetryDead, SessionId};

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

/// The header an action must carry (any value): see the module docs.
pub const ACTION_HEADER: &str = "x-argon-action";

struct State {
    manager: Addr<Manager>,
    token: Option<Vec<u8>>,
    /// The session the actions act as (a dead task's retry is admitted as
    /// this session's).
    session: SessionId,
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
/// on every `GET` but `/healthz` and `/`, and by every action (which are
/// refused without one). Listening beyond loopback without a token
/// logs a warning.
pub fn start(
    listener: std::net::TcpListener,
    manager: Addr<Manager>,
    token: Option<String>,
) -> io::Result<SocketAddr> {
    let state = web::Data::new(State {
        manager,
        token: token.map(String::into_bytes),
        session: fresh_session_id(),
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
            .route("/api/tasks/{id}/cancel", web::post().to(cancel_task))
            .route("/api/dead/{id}/retry", web::post().to(retry_dead))
            .route("/api/workers/{id}/drain", web::post().to(drain_worker))
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

async fn dashboard() -> HttpResponse {
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

/// A JSON answer `{"error": why}` with `status`.
fn refuse(status: actix_web::http::StatusCode, why: &str) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(serde_json::json!({ "error": why }))
}

fn forbidden(why: &str) -> HttpResponse {
    refuse(actix_web::http::StatusCode::FORBIDDEN, why)
}

/// Why `req` may not act, if it may not: see the module docs.
fn action_refused(req: &HttpRequest, state: &State) -> Option<&'static str> {
    let headers = req.headers();
    if state.token.is_none() {
        return Some(
            "actions need the HTTP token, and this manager has none (start it with \
             --http-token-file)",
        );
    }
    if !authorized(req, state) {
        return Some("actions need the HTTP token: the bearer token is missing or wrong");
    }
    if !headers.contains_key(ACTION_HEADER) {
        return Some("an action needs the X-Argon-Action header");
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = headers.get(header::HOST).map(|h| h.as_bytes());
        let origin_host = origin
            .as_bytes()
            .strip_prefix(b"http://")
            .or_else(|| origin.as_bytes().strip_prefix(b"https://"));
        if origin_host.is_none() || origin_host != host {
            return Some("an action must come from the dashboard's own origin");
        }
    }
    if let Some(site) = headers.get("sec-fetch-site") {
        if site.as_bytes() != b"same-origin" {
            return Some("an action must come from the dashboard's own origin");
        }
    }
    None
}

/// The id in the path's `{id}`, or why it is not one.
fn path_id(req: &HttpRequest, what: &str) -> Result<u64, String> {
    let raw = req.match_info().get("id").unwrap_or("");
    raw.parse().map_err(|_| {
        let shown: String = raw.chars().take(40).collect();
        format!("not a {what} id: {shown:?}")
    })
}

fn bad_request(why: &str) -> HttpResponse {
    refuse(actix_web::http::StatusCode::BAD_REQUEST, why)
}

fn acted(body: serde_json::Value) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(body)
}

async fn cancel_task(req: HttpRequest, state: web::Data<State>) -> HttpResponse {
    if let Some(why) = action_refused(&req, &state) {
        return forbidden(why);
    }
    let task = match path_id(&req, "task") {
        Ok(id) => id,
        Err(why) => return bad_request(&why),
    };
    match state.manager.send(CancelById { task }).await {
        Ok(CancelResult::Cancelled) => {
            log::info!("task {task} cancelled from the HTTP side");
            acted(serde_json::json!({ "task_id": task.to_string(), "result": "cancelled" }))
        }
        Ok(CancelResult::Finished) => refuse(
            actix_web::http::StatusCode::CONFLICT,
            &format!("task {task} has already finished"),
        ),
        Ok(CancelResult::Unknown) => refuse(
            actix_web::http::StatusCode::NOT_FOUND,
            &format!("no task {task} is queued, running or kept"),
        ),
        Err(_) => manager_gone(),
    }
}

async fn retry_dead(req: HttpRequest, state: web::Data<State>) -> HttpResponse {
    if let Some(why) = action_refused(&req, &state) {
        return forbidden(why);
    }
    let task = match path_id(&req, "task") {
        Ok(id) => id,
        Err(why) => return bad_request(&why),
    };
    let retry = RetryDead {
        session: state.session,
        select: DeadSelect {
            task_id: Some(task),
            task: None,
        },
        limit: 1,
    };
    match state.manager.send(retry).await {
        Ok(done) => match (done.retried.first(), done.reason) {
            (Some(&(old, new)), None) => {
                log::info!("dead task {old} queued again from the HTTP side as task {new}");
                acted(serde_json::json!({
                    "task_id": old.to_string(),
                    "new_task_id": new.to_string(),
                }))
            }
            (_, reason) => {
                let why = reason.unwrap_or_else(|| format!("task {task} was not queued again"));
                let status = if done.retried.is_empty() && done.left == 0 && !done.denied {
                    actix_web::http::StatusCode::NOT_FOUND
                } else if done.denied {
                    actix_web::http::StatusCode::SERVICE_UNAVAILABLE
                } else {
                    actix_web::http::StatusCode::CONFLICT
                };
                refuse(status, &why)
            }
        },
        Err(_) => manager_gone(),
    }
}

async fn drain_worker(req: HttpRequest, state: web::Data<State>) -> HttpResponse {
    if let Some(why) = action_refused(&req, &state) {
        return forbidden(why);
    }
    let worker = match path_id(&req, "worker") {
        Ok(id) => id,
        Err(why) => return bad_request(&why),
    };
    match state.manager.send(DrainWorker { worker }).await {
        Ok(DrainResult::Drained) => {
            acted(serde_json::json!({ "worker": worker, "result": "draining" }))
        }
        Ok(DrainResult::AlreadyDraining) => {
            acted(serde_json::json!({ "worker": worker, "result": "already draining" }))
        }
        Ok(DrainResult::Unknown) => refuse(
            actix_web::http::StatusCode::NOT_FOUND,
            &format!("no worker {worker} is registered"),
        ),
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

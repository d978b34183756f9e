//! Starting the pieces inside an actix system: the manager's listener and
//! accept loop, a worker pool, an embedded cluster of both, and the shutdown
//! signals. The CLI and the tests both start Argon through these functions.
//!
//! A manager stops in two steps ([`ManagerHandle::shutdown`]): it drains
//! (the [`Shutdown`] message: new tasks denied, every task answered), then
//! stops accepting and closes every connection once what is queued for it
//! is sent, waiting at most [`CLOSE_LIMIT`]. It keeps accepting while it
//! drains, so a client that connects then learns why its task is denied
//! ("manager shutting down", a deny it backs off from) instead of being
//! refused, and `status` and `ping` still work.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::actors::{
    ClientSession, Manager, ManagerSettings, WorkerLink, WorkerPool, WorkerSettings,
};
use crate::admission::{self, AcceptBackoff, ConnectionLimits, Eviction, Gate};
use crate::log_limited;
use crate::logsafe::{escaped, RateLimit, WARN_WINDOW};
use crate::messages::{Drain, GetStatus, Shutdown, ShutdownReport};
use crate::outgoing::OutgoingBudget;
use crate::protocol::crypto::generate_key_text;
use crate::protocol::handshake::{self, HandshakeSettings, Refusal};
use crate::protocol::{MasterKey, Role, WireError};
use crate::task::eval::EvalLimits;
use crate::task::TaskRegistry;

/// Longest wait, once a manager has drained, for its connections to send
/// what is queued for them and close.
pub const CLOSE_LIMIT: Duration = Duration::from_secs(5);

/// A running manager.
#[derive(Clone)]
pub struct ManagerHandle {
    /// Address it listens on (with the real port when 0 was asked).
    pub addr: SocketAddr,
    /// The manager actor.
    pub manager: Addr<Manager>,
    /// Cancelled to stop the accept loop and close every connection.
    closing: CancellationToken,
    gate: Arc<Gate>,
    failure: tokio::sync::watch::Receiver<Option<String>>,
}

impl ManagerHandle {
    /// Drains the manager (see [`Shutdown`]): new tasks are denied, running
    /// ones may finish within `deadline`. Resolves once every task is
    /// answered; connections stay open.
    pub async fn drain(&self, deadline: Duration) -> ShutdownReport {
        self.manager
            .send(Shutdown { deadline })
            .await
            .unwrap_or_default()
    }

    /// Stops accepting, closes every connection once what is queued for it
    /// is sent, and waits until they are gone, at most `limit`. Returns how
    /// many were still open then.
    pub async fn close(&self, limit: Duration) -> usize {
        self.closing.cancel();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let open = self.gate.connections();
            if open == 0 || tokio::time::Instant::now() >= deadline {
                if open > 0 {
                    log::warn!(
                        "{open} connection(s) still sending after {}; closing them",
                        humantime::format_duration(limit)
                    );
                }
                return open;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Resolves with why if the manager stops for good on an error (its
    /// task store failed); never otherwise. It stops accepting first.
    pub async fn failed(&self) -> String {
        let mut rx = self.failure.clone();
        let why = match rx.wait_for(Option::is_some).await {
            Ok(why) => why.clone().unwrap_or_default(),
            Err(_) => std::future::pending().await,
        };
        self.closing.cancel();
        why
    }

    /// [`ManagerHandle::drain`], then [`ManagerHandle::close`] within
    /// [`CLOSE_LIMIT`].
    pub async fn shutdown(&self, deadline: Duration) -> ShutdownReport {
        let report = self.drain(deadline).await;
        self.close(CLOSE_LIMIT).await;
        report
    }
}

/// Binds `bind` (`host:port`), starts the manager actor and its accept loop
/// with the default [`ConnectionLimits`]. Must run inside an actix system.
pub async fn start_manager(
    bind: &str,
    settings: ManagerSettings,
    hs: HandshakeSettings,
) -> io::Result<ManagerHandle> {
    start_manager_with(bind, settings, hs, ConnectionLimits::default()).await
}

/// [`start_manager`] with explicit limits on connections and handshakes.
pub async fn start_manager_with(
    bind: &str,
    settings: ManagerSettings,
    hs: HandshakeSettings,
    limits: ConnectionLimits,
) -> io::Result<ManagerHandle> {
    start_manager_for(bind, Manager::new(settings), hs, limits).await
}

/// [`start_manager_with`] for a manager built beforehand (e.g. over a task
/// store: [`Manager::with_store`]).
pub async fn start_manager_for(
    bind: &str,
    manager: Manager,
    hs: HandshakeSettings,
    limits: ConnectionLimits,
) -> io::Result<ManagerHandle> {
    let listener = TcpListener::bind(bind).await?;
    let addr = listener.local_addr()?;
    let descriptors = admission::descriptor_limit();
    log::info!(
        "accepting up to {} connections, {} of them in their handshake, holding up to {} \
         bytes for peers in all (descriptor limit {})",
        limits.max_connections,
        limits.max_handshakes,
        limits.max_outgoing_total,
        descriptors.map_or_else(|| "unknown".to_string(), |n| n.to_string())
    );
    if let Some(soft) = descriptors {
        if limits.max_connections > admission::max_connections_for(soft) {
            log::warn!(
                "max_connections {} leaves the process too few of the {soft} descriptors it \
                 may open: expect failed accepts under load (raise `ulimit -n`)",
                limits.max_connections
            );
        }
    }
    let failure = manager.failure();
    let manager = manager.start();
    let closing = CancellationToken::new();
    let outgoing = OutgoingBudget::new(limits.max_outgoing_total);
    let gate = Arc::new(Gate::new(limits));
    actix_rt::spawn(accept_loop(
        listener,
        manager.clone(),
        Arc::new(hs),
        gate.clone(),
        outgoing,
        closing.clone(),
    ));
    Ok(ManagerHandle {
        addr,
        manager,
        closing,
        gate,
        failure,
    })
}

/// Whether an accept error concerns only the connection being accepted
/// (it was reset before we took it), so the loop goes on at once.
fn only_that_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

async fn accept_loop(
    listener: TcpListener,
    manager: Addr<Manager>,
    hs: Arc<HandshakeSettings>,
    gate: Arc<Gate>,
    outgoing: Arc<OutgoingBudget>,
    closing: CancellationToken,
) {
    // Each of these lines at most once a second, with a count of the rest.
    static ACCEPT_FAILED: RateLimit = RateLimit::new(Duration::from_secs(1));
    static REFUSED: [RateLimit; 2] = [const { RateLimit::new(Duration::from_secs(1)) }; 2];
    static EVICTED: RateLimit = RateLimit::new(Duration::from_secs(1));
    let mut backoff = AcceptBackoff::default();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = closing.cancelled() => return,
        };
        let (stream, peer) = match accepted {
            Ok(x) => {
                backoff.succeeded();
                x
            }
            Err(e) if only_that_connection(&e) => {
                log::debug!("accept failed: {e}");
                continue;
            }
            Err(e) => {
                let pause = backoff.failed();
                log_limited!(
                    ACCEPT_FAILED,
                    log::Level::Error,
                    "accept failed: {e}; pausing {}",
                    humantime::format_duration(pause)
                );
                tokio::time::sleep(pause).await;
                continue;
            }
        };
        let admitted = match gate.admit(peer.ip(), hs.timeout) {
            Ok(a) => a,
            Err(why) => {
                handshake::refuse(stream, why);
                let limits = gate.limits();
                let (limiter, limit) = match why {
                    Refusal::Handshakes => (
                        &REFUSED[1],
                        format!(
                            "{} in all, {} per address; the oldest began less than {} ago",
                            limits.max_handshakes,
                            limits.max_handshakes_per_address,
                            humantime::format_duration(admission::EVICTABLE_AFTER)
                        ),
                    ),
                    _ => (&REFUSED[0], limits.max_connections.to_string()),
                };
                log_limited!(
                    limiter,
                    log::Level::Warn,
                    "refusing connections: {why} (limit {limit}); {} refused so far",
                    gate.refused(why)
                );
                continue;
            }
        };
        if let Some(why) = admitted.evicted {
            let share = match why {
                Eviction::Full => format!("all {}", gate.limits().max_handshakes),
                Eviction::Address => format!(
                    "{} from {}",
                    gate.limits().max_handshakes_per_address,
                    peer.ip()
                ),
            };
            log_limited!(
                EVICTED,
                log::Level::Warn,
                "handshake slots taken ({share}): closing the oldest handshake to admit a new \
                 connection; {} evicted so far",
                gate.evicted()
            );
        }
        let _ = stream.set_nodelay(true);
        let manager = manager.clone();
        let hs = hs.clone();
        let closing = closing.clone();
        let outgoing = outgoing.clone();
        actix_rt::spawn(async move {
            let result = tokio::select! {
                r = handshake::accept_within(stream, &hs, admitted.timeout) => r,
                _ = admitted.handshake.evicted.cancelled() => {
                    log::debug!("[{peer}] handshake evicted");
                    return;
                }
            };
            drop(admitted.handshake);
            match result {
                Ok(mut est) => {
                    est.permit = Some(Box::new(admitted.connection));
                    est.outgoing = Some(outgoing.share(peer));
                    match est.peer_role {
                        Role::Worker => {
                            WorkerLink::connection(est, manager)
                                .close_on(closing)
                                .start();
                        }
                        _ => {
                            ClientSession::connection(est, manager)
                                .close_on(closing)
                                .start();
                        }
                    }
                }
                Err(e) => log_handshake_failure(peer, &e),
            }
        });
        // The handshake just spawned (and those waiting on their peers) run
        // before the next accept: under a flood of new connections, a peer
        // that answers promptly is through before newer ones evict it.
        tokio::task::yield_now().await;
    }
}

/// Failed handshakes cost no key to cause: one line per kind (wrong key,
/// timeout, not Argon, closed early, the rest) per [`WARN_WINDOW`], the
/// others counted.
fn log_handshake_failure(peer: SocketAddr, e: &WireError) {
    static KINDS: [RateLimit; 5] = [const { RateLimit::new(WARN_WINDOW) }; 5];
    let limit = &KINDS[match e {
        WireError::BadKey => 0,
        WireError::HandshakeTimeout => 1,
        WireError::BadHello | WireError::Version(_) => 2,
        WireError::ClosedEarly => 3,
        _ => 4,
    }];
    log_limited!(
        limit,
        log::Level::Warn,
        "[{peer}] handshake failed: {}",
        escaped(e)
    );
}

/// Starts a worker pool that connects to `settings.mgr`. Must run inside an
/// actix system.
///
/// `settings.allow_eval` decides whether eval scripts run: if set and the
/// registry has no eval entry, one with default limits is added (in a build
/// without the cargo feature `eval`, an error is logged and the worker runs
/// without); if unset, any eval entry is removed.
pub fn start_worker(mut settings: WorkerSettings, mut registry: TaskRegistry) -> Addr<WorkerPool> {
    if settings.allow_eval
        && !registry.allows_eval()
        && !registry.enable_eval_if_built(EvalLimits::default())
    {
        log::error!("allow_eval is set, but this build has no eval (cargo feature `eval`): the worker takes no scripts");
        settings.allow_eval = false;
    }
    if !settings.allow_eval {
        registry.disable_eval();
    }
    WorkerPool::new(settings, Arc::new(registry)).start()
}

/// Drains a worker pool: no new tasks, wait for those in flight up to `deadline`.
pub async fn drain_worker(pool: &Addr<WorkerPool>, deadline: Duration) {
    let _ = pool.send(Drain { deadline }).await;
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    Signals::new().next().await;
}

/// SIGINT and SIGTERM as a repeating source, listening from the moment it is
/// made: each [`Signals::next`] resolves on the next one, so a
/// second Ctrl-C can be told from the first.
pub struct Signals {
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    /// Starts listening. Must run inside a tokio runtime.
    pub fn new() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Signals {
                int: signal(SignalKind::interrupt()).ok(),
                term: signal(SignalKind::terminate()).ok(),
            }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    /// Waits for the next SIGINT or SIGTERM and returns its number (2 or 15).
    pub async fn next(&mut self) -> i32 {
        #[cfg(unix)]
        {
            async fn next(s: &mut Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            if self.int.is_none() && self.term.is_none() {
                let _ = tokio::signal::ctrl_c().await;
                return 2;
            }
            tokio::select! {
                _ = next(&mut self.int) => 2,
                _ = next(&mut self.term) => 15,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            2
        }
    }
}

impl Default for Signals {
    fn default() -> Self {
        Signals::new()
    }
}

/// Writes a new key file with mode 0600; refuses to overwrite one.
pub fn write_key_file(path: &Path) -> io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            io::Error::new(
                e.kind(),
                format!(
                    "{} already exists; refusing to overwrite a key",
                    path.display()
                ),
            )
        } else {
            io::Error::new(e.kind(), format!("cannot create {}: {e}", path.display()))
        }
    })?;
    f.write_all(generate_key_text()?.as_bytes())?;
    f.sync_all()
}

/// What an embedded [`Cluster`] runs besides its defaults: the tasks and key
/// a config file gives `argon cluster`.
#[derive(Clone)]
pub struct ClusterOptions {
    /// Tasks of every worker (eval is added or removed by `allow_eval`).
    pub registry: TaskRegistry,
    /// Whether the workers accept eval scripts.
    pub allow_eval: bool,
    /// An existing key with its settings; `None` generates a fresh key in a
    /// private temporary folder.
    pub handshake: Option<(PathBuf, HandshakeSettings)>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            registry: TaskRegistry::with_builtins(),
            allow_eval: false,
            handshake: None,
        }
    }
}

/// A manager and workers in one process on 127.0.0.1, with a given key or a
/// generated one in a private temporary folder that is removed on drop.
pub struct Cluster {
    /// The manager.
    pub manager: ManagerHandle,
    /// The worker pools.
    pub workers: Vec<Addr<WorkerPool>>,
    /// Path of the generated key file.
    pub key_path: PathBuf,
    /// Handshake settings holding the key, for clients.
    pub handshake: HandshakeSettings,
    /// The private folder of a generated key; removed when the cluster is
    /// dropped.
    _dir: Option<tempfile::TempDir>,
}

impl Cluster {
    /// Starts the manager on `port` (0 for any) and `workers` pools of
    /// `capacity` slots each with the built-in tasks and a fresh key, and
    /// waits until all have registered.
    pub async fn start(
        workers: usize,
        capacity: usize,
        port: u16,
        settings: ManagerSettings,
    ) -> io::Result<Cluster> {
        Cluster::start_with(workers, capacity, port, settings, ClusterOptions::default()).await
    }

    /// [`Cluster::start`] with the tasks, eval and key of `opts`.
    pub async fn start_with(
        workers: usize,
        capacity: usize,
        port: u16,
        settings: ManagerSettings,
        opts: ClusterOptions,
    ) -> io::Result<Cluster> {
        let (dir, key_path, hs) = match opts.handshake {
            Some((path, hs)) => (None, path, hs),
            None => {
                use std::os::unix::fs::PermissionsExt;
                let dir = tempfile::Builder::new()
                    .prefix(&format!("argon-cluster-{}-", std::process::id()))
                    .permissions(std::fs::Permissions::from_mode(0o700))
                    .tempdir()?;
                let key_path = dir.path().join("key");
                write_key_file(&key_path)?;
                let key =
                    MasterKey::load(&key_path).map_err(|e| io::Error::other(e.to_string()))?;
                (Some(dir), key_path, HandshakeSettings::new(key))
            }
        };
        let manager = start_manager(&format!("127.0.0.1:{port}"), settings, hs.clone()).await?;
        let pools = (0..workers)
            .map(|_| {
                start_worker(
                    WorkerSettings {
                        mgr: manager.addr.to_string(),
                        capacity,
                        allow_eval: opts.allow_eval,
                        handshake: hs.clone(),
                        backoff_base: Duration::from_millis(50),
                        backoff_max: Duration::from_secs(2),
                        keep: crate::actors::worker::KeepBounds::default(),
                    },
                    opts.registry.clone(),
                )
            })
            .collect();
        let cluster = Cluster {
            manager,
            workers: pools,
            key_path,
            handshake: hs,
            _dir: dir,
        };
        cluster
            .wait_for_workers(workers, Duration::from_secs(10))
            .await?;
        Ok(cluster)
    }

    /// Waits until `n` workers have registered, up to `limit`.
    pub async fn wait_for_workers(&self, n: usize, limit: Duration) -> io::Result<()> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let status = self
                .manager
                .manager
                .send(GetStatus)
                .await
                .map_err(|e| io::Error::other(e.to_string()))?;
            if status.workers as usize >= n {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "only {} of {n} workers registered in {limit:?}",
                        status.workers
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Stops the cluster the way `argon manager` stops: the manager drains
    /// (running tasks may finish within `deadline`), then the workers, idle
    /// by then, drain and leave (bounded by `deadline` too), then the
    /// manager closes its connections (see [`ManagerHandle::shutdown`]).
    pub async fn shutdown(&self, deadline: Duration) -> ShutdownReport {
        let report = self.manager.drain(deadline).await;
        futures_util::future::join_all(self.workers.iter().map(|w| drain_worker(w, deadline)))
            .await;
        self.manager.close(CLOSE_LIMIT).await;
        report
    }
}

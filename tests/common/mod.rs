//! Fixtures for the end-to-end tests: they run the real `argon` binary.
//!
//! - [`TempDir`]: a private folder per test, removed on drop.
//! - [`Proc`]: a child process whose stdout and stderr are collected by
//!   reader threads; it is killed (SIGKILL) and reaped on drop, so a test
//!   that panics leaves no process behind.
//! - [`Manager`] / [`Worker`]: `argon manager` and `argon worker` guards. The
//!   manager's readiness signal is its startup line on stdout; a worker's is
//!   the manager's status report counting it ([`Manager::wait_for_workers`]).
//! - [`argon`] / [`Run`]: one client command with a bounded wait, giving the
//!   exit code, stdout and stderr.
//!
//! Everything listens on 127.0.0.1 with port 0. Waits are bounded and fail
//! the test with what the processes printed.

#![allow(dead_code)]

pub mod postgres;

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use argon::client::{Client, ClientConfig};
use argon::protocol::{ClusterStatus, HandshakeSettings, MasterKey};

/// Longest wait for a process to start listening (or a worker to register).
pub const STARTUP: Duration = Duration::from_secs(10);
/// Default bound on one client command.
pub const COMMAND: Duration = Duration::from_secs(15);

/// Path of the binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_argon")
}

// ---------------------------------------------------------------------------
// Temporary folders

/// A fresh folder under the system temp dir, removed (with its contents) on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates a new, empty, private folder.
    pub fn new() -> TempDir {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!(
            "argon-e2e-{}-{}-{nanos:08x}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(name);
        let mut b = std::fs::DirBuilder::new();
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            b.mode(0o700);
        }
        b.create(&path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        TempDir { path }
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path inside the folder.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes `text` to `name` inside the folder and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.join(name);
        std::fs::write(&p, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", p.display()));
        p
    }

    /// Runs `argon keygen` for a new key file named `name`; returns its path.
    pub fn keygen(&self, name: &str) -> PathBuf {
        let p = self.join(name);
        let out = argon(["keygen".as_ref(), p.as_os_str()]).run();
        assert_eq!(out.code, Some(0), "argon keygen failed: {out}");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

// ---------------------------------------------------------------------------
// Child processes

/// Text a reader thread collected, shared with the test.
type Collected = Arc<Mutex<String>>;

fn collect<R: Read + Send + 'static>(
    pipe: R,
    lines: Option<mpsc::Sender<String>>,
) -> (Collected, JoinHandle<()>) {
    let text: Collected = Arc::default();
    let sink = text.clone();
    let handle = std::thread::spawn(move || {
        let mut r = BufReader::new(pipe);
        let mut line = Vec::new();
        loop {
            line.clear();
            match r.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let s = String::from_utf8_lossy(&line).into_owned();
                    sink.lock().unwrap().push_str(&s);
                    if let Some(tx) = &lines {
                        let _ = tx.send(s.trim_end_matches(['\r', '\n']).to_string());
                    }
                }
            }
        }
    });
    (text, handle)
}

/// A running child with its stdout and stderr collected. Killed on drop.
pub struct Proc {
    what: String,
    child: Child,
    stdout: Collected,
    stderr: Collected,
    stdout_lines: Receiver<String>,
    readers: Vec<JoinHandle<()>>,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Spawns `cmd` with piped stdout and stderr and a closed stdin.
    pub fn spawn(cmd: Command) -> Proc {
        Proc::spawn_fed(cmd, None)
    }

    /// Like [`Proc::spawn`], but with `input` written to its stdin by a
    /// thread (then closed) when given.
    pub fn spawn_fed(mut cmd: Command, input: Option<Vec<u8>>) -> Proc {
        let what = format!("{cmd:?}");
        cmd.stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::process::CommandExt;
            // If the test binary itself dies (its thread, really: children are
            // spawned from the test's own thread), take the child with it.
            // SAFETY: prctl is async-signal-safe and touches no memory of ours.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {what}: {e}"));
        if let (Some(bytes), Some(mut pipe)) = (input, child.stdin.take()) {
            // A child that exits without reading all of it only ends the write.
            std::thread::spawn(move || {
                use std::io::Write;
                let _ = pipe.write_all(&bytes);
            });
        }
        let (tx, stdout_lines) = mpsc::channel();
        let (stdout, h1) = collect(child.stdout.take().expect("piped stdout"), Some(tx));
        let (stderr, h2) = collect(child.stderr.take().expect("piped stderr"), None);
        Proc {
            what,
            child,
            stdout,
            stderr,
            stdout_lines,
            readers: vec![h1, h2],
            status: None,
        }
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it printed on stdout so far.
    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// Everything it printed on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The next stdout line, waiting at most `limit`.
    pub fn next_line(&self, limit: Duration) -> Option<String> {
        self.stdout_lines.recv_timeout(limit).ok()
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        self.try_status().is_none()
    }

    /// Its exit status, if it has exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) to the child.
    pub fn signal(&mut self, signal: i32) {
        assert!(self.is_running(), "{} already exited", self.what);
        let pid = libc::pid_t::try_from(self.pid()).expect("pid fits");
        // SAFETY: plain syscall on our own child, which has not been reaped.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal}) failed");
    }

    /// Kills it with SIGKILL now and reaps it.
    pub fn kill(&mut self) {
        if self.try_status().is_none() {
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
    }

    /// Waits for it to exit, at most `limit`. `None` if it is still running.
    pub fn wait_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.try_status() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits for it to exit (at most `limit`, else the test fails) and
    /// returns what it printed.
    pub fn finish(mut self, limit: Duration) -> Output {
        let started = Instant::now();
        let status = match self.wait_within(limit) {
            Some(s) => s,
            None => {
                self.kill();
                self.join_readers();
                panic!(
                    "{} did not exit within {limit:?}\n--- stdout\n{}--- stderr\n{}",
                    self.what,
                    self.stdout(),
                    self.stderr()
                );
            }
        };
        self.join_readers();
        Output {
            what: std::mem::take(&mut self.what),
            code: status.code(),
            stdout: self.stdout(),
            stderr: self.stderr(),
            waited: started.elapsed(),
        }
    }

    /// Waits until stderr contains `needle`, at most `limit`.
    pub fn wait_stderr(&self, needle: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.stderr().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.stderr().contains(needle)
    }

    fn join_readers(&mut self) {
        // The pipes close when the process exits (unless it left children
        // holding them, which argon does not do), so this does not block.
        for h in self.readers.drain(..) {
            let _ = h.join();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// How a finished command went.
#[derive(Debug)]
pub struct Output {
    /// The command line.
    pub what: String,
    /// Exit code (`None` if killed by a signal).
    pub code: Option<i32>,
    /// Its stdout.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
    /// How long we waited for it (from the call to finish).
    pub waited: Duration,
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}\n  exit {:?} after {:?}\n--- stdout\n{}--- stderr\n{}",
            self.what, self.code, self.waited, self.stdout, self.stderr
        )
    }
}

/// A command line for the binary under test; [`Run::run`] or [`Run::spawn`] it.
pub struct Run {
    cmd: Command,
    limit: Duration,
    input: Option<Vec<u8>>,
}

/// `argon ARGS...` with `ARGON_KEY`/`ARGON_MGR` cleared from the inherited
/// environment, so only what the test passes counts.
pub fn argon<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .env_remove("ARGON_KEY")
        .env_remove("ARGON_MGR");
    Run {
        cmd,
        limit: COMMAND,
        input: None,
    }
}

impl Run {
    /// Appends one argument.
    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Run {
        self.cmd.arg(a);
        self
    }

    /// Appends arguments.
    pub fn args<I, S>(mut self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd.args(args);
        self
    }

    /// Sets an environment variable for it.
    pub fn env(mut self, k: &str, v: impl AsRef<OsStr>) -> Run {
        self.cmd.env(k, v);
        self
    }

    /// Runs it in `dir` instead of the test's working directory.
    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Run {
        self.cmd.current_dir(dir);
        self
    }

    /// Bounds the wait in [`Run::run`] (default [`COMMAND`]).
    pub fn limit(mut self, limit: Duration) -> Run {
        self.limit = limit;
        self
    }

    /// Feeds `input` to its stdin (closed right after) instead of no stdin.
    pub fn stdin(mut self, input: impl Into<Vec<u8>>) -> Run {
        self.input = Some(input.into());
        self
    }

    /// Starts it in the background.
    pub fn spawn(self) -> Proc {
        Proc::spawn_fed(self.cmd, self.input)
    }

    /// Runs it to completion within its bound.
    pub fn run(self) -> Output {
        let limit = self.limit;
        Proc::spawn_fed(self.cmd, self.input).finish(limit)
    }
}

// ---------------------------------------------------------------------------
// Manager and workers

/// Parses `argon manager listening on ADDR:PORT`.
pub fn parse_listening(line: &str) -> Option<String> {
    let addr = line.strip_prefix("argon manager listening on ")?;
    addr.parse::<std::net::SocketAddr>().ok()?;
    Some(addr.to_string())
}

/// A running `argon manager`. Killed on drop.
pub struct Manager {
    /// The process.
    pub proc: Proc,
    /// `ADDR:PORT` from its startup line.
    pub addr: String,
    /// The key file it uses.
    pub key: PathBuf,
}

/// Options for [`Manager::start_with`].
#[derive(Default)]
pub struct ManagerOpts {
    /// `--queue-factor N`.
    pub queue_factor: Option<u32>,
    /// `--config FILE`.
    pub config: Option<PathBuf>,
    /// `--port P` instead of 0.
    pub port: Option<u16>,
    /// `--max-connections N`.
    pub max_connections: Option<u64>,
    /// `--drain-timeout DUR` (e.g. `"200ms"`).
    pub drain_timeout: Option<&'static str>,
    /// The soft `RLIMIT_NOFILE` the manager runs under (its hard limit
    /// stays).
    pub descriptor_limit: Option<u64>,
}

impl Manager {
    /// A manager started with `--http HTTP` and `extra` flags, and the address
    /// of its HTTP side.
    pub fn start_with_http(key: &Path, http: &str, extra: &[&OsStr]) -> (Manager, String) {
        let mut cmd = Command::new(bin());
        cmd.args(["manager", "--host", "127.0.0.1", "--port", "0", "--key"])
            .arg(key)
            .args(["--http", http])
            .args(extra)
            .env_remove("ARGON_KEY")
            .env_remove("ARGON_MGR");
        let mut proc = Proc::spawn(cmd);
        let first = proc.next_line(STARTUP);
        let Some(addr) = first.as_deref().and_then(parse_listening) else {
            proc.kill();
            panic!("no listening line: {first:?}\n{}", proc.stderr());
        };
        let second = proc.next_line(STARTUP);
        let http = second
            .as_deref()
            .and_then(|l| l.strip_prefix("argon manager http on "))
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no http line: {second:?}\n{}", proc.stderr()));
        let mgr = Manager {
            proc,
            addr,
            key: key.to_path_buf(),
        };
        (mgr, http)
    }

    /// `argon manager --port 0 --key KEY` with the defaults.
    pub fn start(key: &Path) -> Manager {
        Manager::start_with(key, ManagerOpts::default())
    }

    /// `argon manager --port 0 --key KEY [--queue-factor N] [--config FILE]`
    /// (or `--port P`);
    /// returns once it printed its startup line.
    pub fn start_with(key: &Path, opts: ManagerOpts) -> Manager {
        Manager::try_start_with(key, opts).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A new manager on `port` (the port of one that was just killed),
    /// retrying for a few seconds while the old socket lets go of it.
    pub fn restart_on(key: &Path, port: u16) -> Manager {
        Manager::restart_with(key, port, ManagerOpts::default)
    }

    /// [`Manager::restart_on`] with the options `opts` makes (its port
    /// replaced by `port`).
    pub fn restart_with(key: &Path, port: u16, opts: impl Fn() -> ManagerOpts) -> Manager {
        let mut last_err = String::new();
        for _ in 0..50 {
            let opts = ManagerOpts {
                port: Some(port),
                ..opts()
            };
            match Manager::try_start_with(key, opts) {
                Ok(m) => return m,
                Err(e) => last_err = e,
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("cannot restart a manager on port {port}: {last_err}")
    }

    /// Like [`Manager::start_with`], but a manager that exits or stays silent
    /// is an error (with what it printed) rather than a failed test.
    pub fn try_start_with(key: &Path, opts: ManagerOpts) -> Result<Manager, String> {
        let mut cmd = Command::new(bin());
        cmd.args(["manager", "--host", "127.0.0.1", "--port"])
            .arg(opts.port.unwrap_or(0).to_string())
            .arg("--key")
            .arg(key)
            .env_remove("ARGON_KEY")
            .env_remove("ARGON_MGR");
        if let Some(n) = opts.queue_factor {
            cmd.arg("--queue-factor").arg(n.to_string());
        }
        if let Some(c) = &opts.config {
            cmd.arg("--config").arg(c);
        }
        if let Some(n) = opts.max_connections {
            cmd.arg("--max-connections").arg(n.to_string());
        }
        if let Some(d) = opts.drain_timeout {
            cmd.arg("--drain-timeout").arg(d);
        }
        if let Some(soft) = opts.descriptor_limit {
            use std::os::unix::process::CommandExt;
            // SAFETY: getrlimit and setrlimit are async-signal-safe and touch
            // only the struct on this stack.
            unsafe {
                cmd.pre_exec(move || {
                    let mut r = libc::rlimit {
                        rlim_cur: 0,
                        rlim_max: 0,
                    };
                    if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    r.rlim_cur = soft.min(r.rlim_max);
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut proc = Proc::spawn(cmd);
        // The line arrives once it listens; if it exits first, the channel
        // closes and this returns at once.
        let line = proc.next_line(STARTUP);
        let Some(addr) = line.as_deref().and_then(parse_listening) else {
            proc.kill();
            return Err(format!(
                "manager did not announce itself within {STARTUP:?} (first line {line:?}, \
                 status {:?})\n--- stderr\n{}",
                proc.try_status(),
                proc.stderr()
            ));
        };
        Ok(Manager {
            proc,
            addr,
            key: key.to_path_buf(),
        })
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr
            .parse::<std::net::SocketAddr>()
            .expect("checked at startup")
            .port()
    }

    /// Starts a worker with `capacity` slots against this manager and waits
    /// until the manager counts `expect_workers` workers.
    pub fn add_worker(&self, capacity: u32, expect_workers: u64) -> Worker {
        let w = Worker::start(&self.addr, &self.key, capacity);
        self.wait_for_workers(expect_workers);
        w
    }

    /// `argon submit --mgr ADDR --key KEY ARGS...`, not yet run.
    pub fn submit<I, S>(&self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.client_cmd("submit", args)
    }

    /// `argon CMD --mgr ADDR --key KEY ARGS...`, not yet run.
    pub fn client_cmd<I, S>(&self, cmd: &str, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        argon([cmd, "--mgr", &self.addr, "--key"])
            .arg(&self.key)
            .args(args)
    }

    /// The manager's status through the client library.
    pub fn status(&self) -> ClusterStatus {
        self.wait_status("a status report", |_| true)
    }

    /// Polls the manager's status (through the client library, one
    /// connection) until `cond` holds; fails the test after [`STARTUP`].
    pub fn wait_status(&self, what: &str, cond: impl Fn(&ClusterStatus) -> bool) -> ClusterStatus {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let key = MasterKey::load(&self.key).expect("key loads");
        let config = ClientConfig::new(self.addr.clone(), HandshakeSettings::new(key));
        let result = rt.block_on(async {
            let deadline = tokio::time::Instant::now() + STARTUP;
            let client = Client::connect(config).await.map_err(|e| e.to_string())?;
            loop {
                let s = client.status().await.map_err(|e| e.to_string())?;
                if cond(&s) {
                    return Ok(s);
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(format!("timed out; last status {s:#?}"));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        result.unwrap_or_else(|e| {
            panic!(
                "waiting for {what} from the manager at {}: {e}\n--- manager stderr\n{}",
                self.addr,
                self.proc.stderr()
            )
        })
    }

    /// Waits until exactly `n` workers are registered.
    pub fn wait_for_workers(&self, n: u64) -> ClusterStatus {
        self.wait_status(&format!("{n} worker(s)"), |s| s.workers == n)
    }

    /// Asserts the manager still runs and never panicked.
    pub fn assert_healthy(&mut self) {
        let status = self.proc.try_status();
        assert!(
            status.is_none(),
            "manager exited ({status:?})\n--- stderr\n{}",
            self.proc.stderr()
        );
        let err = self.proc.stderr();
        assert!(
            !err.contains("panicked"),
            "manager panicked:\n--- stderr\n{err}"
        );
    }
}

/// A running `argon worker`. Killed on drop.
pub struct Worker {
    /// The process.
    pub proc: Proc,
}

impl Worker {
    /// `argon worker --mgr ADDR --key KEY --capacity N`. Does not wait for it
    /// to register: see [`Manager::wait_for_workers`].
    pub fn start(mgr: &str, key: &Path, capacity: u32) -> Worker {
        Worker::start_with(mgr, key, capacity, &[])
    }

    /// Like [`Worker::start`], with more flags (`--config FILE`, `--allow-eval`).
    pub fn start_with(mgr: &str, key: &Path, capacity: u32, extra: &[&OsStr]) -> Worker {
        let mut cmd = Command::new(bin());
        cmd.args(["worker", "--mgr", mgr, "--key"])
            .arg(key)
            .args(["--capacity", &capacity.to_string()])
            .args(extra)
            .env_remove("ARGON_KEY")
            .env_remove("ARGON_MGR");
        Worker {
            proc: Proc::spawn(cmd),
        }
    }
}

/// A manager with `workers` workers of `capacity` slots each, all registered.
pub struct System {
    /// Holds the key file.
    pub dir: TempDir,
    /// The manager.
    pub manager: Manager,
    /// The workers.
    pub workers: Vec<Worker>,
}

impl System {
    /// Starts a key, a manager (with `opts`) and the workers; waits for them.
    pub fn start(count: u32, capacity: u32, opts: ManagerOpts) -> System {
        let dir = TempDir::new();
        let key = dir.keygen("key");
        let manager = Manager::start_with(&key, opts);
        let workers = (0..count)
            .map(|_| Worker::start(&manager.addr, &key, capacity))
            .collect();
        manager.wait_for_workers(u64::from(count));
        System {
            dir,
            manager,
            workers,
        }
    }
}

impl Drop for System {
    fn drop(&mut self) {
        // Workers first, so the manager does not log them leaving as errors
        // in a test that reads its stderr afterwards.
        self.workers.clear();
    }
}

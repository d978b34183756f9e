//! A throwaway PostgreSQL cluster for the tests of the PostgreSQL task
//! store: `initdb` and `postgres` from the installed server (Debian's
//! `/usr/lib/postgresql/VERSION/bin`, the newest there, else `PATH`) in a
//! temporary folder, listening on a free port on 127.0.0.1 with its socket
//! folder inside the temporary folder. Run as root (as in CI), both run as
//! `nobody` (initdb refuses root), with the folder handed to that user.
//!
//! The cluster has one user, `argon`, with the password [`PASSWORD`]
//! (scram over TCP) and a database `argon`. It runs without fsync: these
//! tests kill managers, not the database. It is stopped by its PID on drop
//! (SIGINT, a fast shutdown; SIGKILL if it has not ended within
//! [`STOP`]), and the folder removed.
//!
//! Without PostgreSQL installed, [`Postgres::start`] prints why and returns
//! `None` (the test skips), unless `ARGON_REQUIRE_POSTGRES=1` (as in CI):
//! then it panics.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::TempDir;

/// The password of the cluster's user `argon`.
pub const PASSWORD: &str = "argon-test-password";
/// Longest wait for the cluster to accept connections.
pub const READY: Duration = Duration::from_secs(60);
/// Longest wait for the cluster to stop after SIGINT.
pub const STOP: Duration = Duration::from_secs(15);

/// A running throwaway cluster. See the module docs.
pub struct Postgres {
    server: Child,
    port: u16,
    bin: PathBuf,
    dir: TempDir,
}

/// The folder with `initdb`, `postgres` and `pg_isready`: the newest
/// version under /usr/lib/postgresql, else the first on `PATH`.
fn bin_dir() -> Option<PathBuf> {
    let has_all = |d: &Path| {
        ["initdb", "postgres", "pg_isready"]
            .iter()
            .all(|b| d.join(b).is_file())
    };
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, d)| has_all(d))
        .collect();
    versions.sort();
    if let Some((_, d)) = versions.pop() {
        return Some(d);
    }
    std::env::split_paths(&std::env::var_os("PATH")?).find(|d| has_all(d))
}

/// Whether tests that need PostgreSQL must fail rather than skip.
pub fn required() -> bool {
    std::env::var("ARGON_REQUIRE_POSTGRES").is_ok_and(|v| v == "1")
}

/// Whether this process runs as root.
fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A command for `program` that runs as `nobody` when this process is root.
fn unprivileged(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    // The test's folder may be closed to that user.
    cmd.current_dir("/");
    if is_root() {
        // The standard library drops root's supplementary groups too.
        cmd.uid(65534).gid(65534);
    }
    cmd
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Postgres {
    /// A new running cluster, or `None` (with the reason printed) when
    /// PostgreSQL is not installed and not required. `test` names the test
    /// in that message.
    pub fn start(test: &str) -> Option<Postgres> {
        let Some(bin) = bin_dir() else {
            let why = "PostgreSQL is not installed (no initdb, postgres and pg_isready under \
                       /usr/lib/postgresql/*/bin or on PATH; Debian: apt-get install postgresql)";
            if required() {
                panic!("{test}: ARGON_REQUIRE_POSTGRES=1 but {why}");
            }
            eprintln!("skipped {test}: {why}");
            return None;
        };
        let dir = TempDir::new();
        if is_root() {
            std::os::unix::fs::chown(dir.path(), Some(65534), Some(65534))
                .expect("hand the cluster's folder to nobody");
        }
        let pwfile = dir.write("pwfile", PASSWORD);
        if is_root() {
            std::os::unix::fs::chown(&pwfile, Some(65534), Some(65534)).expect("chown pwfile");
        }
        let data = dir.join("data");
        let out = unprivileged(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "argon", "-E", "UTF8", "--locale=C", "--no-sync"])
            .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .expect("initdb starts");
        assert!(
            out.status.success(),
            "initdb failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut last = String::new();
        // A port picked free can be taken before postgres binds it.
        for _ in 0..3 {
            let port = free_port();
            let log_path = dir.join(&format!("postgres-{port}.log"));
            let log = std::fs::File::create(&log_path).expect("log file");
            let mut server = unprivileged(&bin.join("postgres"))
                .arg("-D")
                .arg(&data)
                .args(["-p", &port.to_string(), "-k"])
                .arg(dir.path())
                .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("postgres starts");
            match wait_ready(&mut server, &bin, port, &log_path) {
                Ok(()) => {
                    let pg = Postgres {
                        server,
                        port,
                        bin,
                        dir,
                    };
                    pg.psql_ok("CREATE DATABASE argon");
                    return Some(pg);
                }
                Err(e) => {
                    last = e;
                    stop(&mut server);
                }
            }
        }
        panic!("{test}: PostgreSQL did not start: {last}");
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join(&format!("postgres-{}.log", self.port)))
            .unwrap_or_default()
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's PID.
    pub fn pid(&self) -> u32 {
        self.server.id()
    }

    /// A URL of database `db` as user `argon`, with the password.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://argon:{PASSWORD}@127.0.0.1:{}/{db}?sslmode=disable",
            self.port
        )
    }

    /// The same URL without the password.
    pub fn url_without_password(&self, db: &str) -> String {
        format!("postgres://argon@127.0.0.1:{}/{db}", self.port)
    }

    /// Runs `sql` with psql over the socket folder (trusted there); returns
    /// its output (unaligned, tuples only) or the error.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String, String> {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-U",
                "argon",
                "-h",
            ])
            .arg(self.dir.path())
            .args(["-p", &self.port.to_string(), "-d", db, "-c", sql])
            .output()
            .map_err(|e| format!("psql: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    fn psql_ok(&self, sql: &str) {
        if let Err(e) = self.psql("postgres", sql) {
            panic!("{sql}: {e}\n{}", self.log());
        }
    }

    /// Creates database `name`.
    pub fn create_db(&self, name: &str) {
        self.psql_ok(&format!("CREATE DATABASE {name}"));
    }

    /// Sends `signal` to the server (e.g. SIGSTOP to freeze it).
    pub fn signal(&self, signal: i32) {
        send(&self.server, signal);
    }

    /// Environment for a child that should find the password in a password
    /// file: writes one (mode 0600) and returns `("PGPASSFILE", path)`.
    pub fn passfile(&self) -> (&'static str, PathBuf) {
        let p = self.dir.write(
            "pgpass",
            &format!("127.0.0.1:{}:*:argon:{PASSWORD}\n", self.port),
        );
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod pgpass");
        ("PGPASSFILE", p)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        stop(&mut self.server);
    }
}

fn send(server: &Child, signal: i32) {
    // SAFETY: kill has no memory preconditions; the PID is our child's,
    // not yet reaped.
    unsafe {
        libc::kill(server.id() as libc::pid_t, signal);
    }
}

/// Stops `server` by its PID: SIGINT (a fast shutdown), then SIGKILL if it
/// has not ended within [`STOP`].
fn stop(server: &mut Child) {
    if matches!(server.try_wait(), Ok(Some(_))) {
        return;
    }
    send(server, libc::SIGCONT);
    send(server, libc::SIGINT);
    let deadline = Instant::now() + STOP;
    while Instant::now() < deadline {
        if matches!(server.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = server.kill();
    let _ = server.wait();
}

/// Waits until `server` accepts connections on `port`, or fails with its
/// log.
fn wait_ready(server: &mut Child, bin: &Path, port: u16, log: &Path) -> Result<(), String> {
    let log = || std::fs::read_to_string(log).unwrap_or_default();
    let deadline = Instant::now() + READY;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = server.try_wait() {
            return Err(format!("postgres exited ({status}):\n{}", log()));
        }
        let ready = Command::new(bin.join("pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        if ready {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("not ready within {READY:?}:\n{}", log()))
}

//! What every Argon program does around its work, shared by the `argon`
//! binary and worker programs built with the library: logging and the panic
//! hook, loading the config file, the `--key` flag and the handshake settings
//! it makes, and [`Failure`], which `main` turns into the exit code.
//!
//! Flag precedence: flag, then environment (`ARGON_KEY`, `ARGON_MGR`), then
//! the `--config` file, then the built-in default.

use std::path::{Path, PathBuf};

use clap::Args;

use crate::client::ClientError;
use crate::config::{check_max_frame, Config};
use crate::duration::Dur;
use crate::protocol::{HandshakeSettings, MasterKey, DEFAULT_MAX_FRAME};

/// Exit code: bad usage or bad input (clap's own).
pub const EXIT_USAGE: i32 = 2;
/// Exit code: the task failed, or a server could not run.
pub const EXIT_FAILED: i32 = 1;
/// Exit code: the system refused what a server needs to run (the `EX_OSERR`
/// of sysexits.h): a port to listen on is taken or not ours to use.
pub const EXIT_OS: i32 = 71;
/// Exit code: a server's configuration cannot be used as it stands (the
/// `EX_CONFIG` of sysexits.h), e.g. a task store that is corrupt or held by
/// another manager.
pub const EXIT_CONFIG: i32 = 78;

/// The manager address used when neither a flag, `ARGON_MGR` nor the config
/// file names one.
pub const DEFAULT_MGR: &str = "127.0.0.1:8000";

/// A failure of a command, with its exit code.
#[derive(Debug)]
pub struct Failure {
    /// Process exit code.
    pub code: i32,
    /// One line for a person.
    pub message: String,
}

impl Failure {
    /// A failure with `code` and `message`.
    pub fn new(code: i32, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }
}

/// The failure of asking for `what` from a build without the cargo
/// feature `feature` (exit 2): refused rather than left undone.
pub fn not_built(feature: &str, what: &str) -> Failure {
    Failure::new(
        EXIT_USAGE,
        format!(
            "{what} needs the cargo feature `{feature}`, which this argon was built without \
             (build it with default features, or with --features {feature})"
        ),
    )
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Failure {
        Failure::new(e.exit_code(), e.to_string())
    }
}

/// Key and frame settings shared by every networked command.
#[derive(Args, Debug, Clone)]
pub struct KeyArgs {
    /// Path of the shared key file.
    #[arg(long, env = "ARGON_KEY", value_name = "FILE")]
    pub key: Option<PathBuf>,
}

/// Loads the `--config` file, or the defaults when there is none; an
/// unusable file is bad usage (exit 2).
pub fn load_config(path: Option<&Path>) -> Result<Config, Failure> {
    match path {
        Some(p) => Config::load(p).map_err(|e| Failure::new(EXIT_USAGE, e.to_string())),
        None => Ok(Config::default()),
    }
}

/// Loads the key file named by `key` or the config file and applies the
/// config's frame, handshake and heartbeat settings.
pub fn handshake_settings(key: &KeyArgs, config: &Config) -> Result<HandshakeSettings, Failure> {
    let path = key
        .key
        .clone()
        .or_else(|| config.security.key_file.clone())
        .ok_or_else(|| {
            Failure::new(
                EXIT_USAGE,
                "no key file: pass --key FILE, set ARGON_KEY, or set security.key_file \
                 (create one with `argon keygen PATH`)",
            )
        })?;
    let master = MasterKey::load(&path).map_err(|e| Failure::new(EXIT_USAGE, e.to_string()))?;
    let max_frame = config.security.max_frame_bytes.unwrap_or(DEFAULT_MAX_FRAME);
    check_max_frame(max_frame).map_err(|e| Failure::new(EXIT_USAGE, e))?;
    let mut hs = HandshakeSettings::new(master);
    hs.max_frame = max_frame;
    if let Some(Dur(d)) = config.security.handshake_timeout {
        hs.timeout = d;
    }
    if let Some(Dur(d)) = config.security.heartbeat_interval {
        hs.heartbeat = d;
    }
    if let Some(n) = config.security.max_outgoing_bytes {
        hs.max_outgoing = n;
    }
    Ok(hs)
}

/// A manager address must be `HOST:PORT`; anything else is bad usage (2),
/// not an unreachable manager (69).
pub fn check_mgr_addr(mgr: &str) -> Result<(), Failure> {
    let ok = mgr
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if ok {
        Ok(())
    } else {
        Err(Failure::new(
            EXIT_USAGE,
            format!("invalid manager address {mgr:?}: expected HOST:PORT, e.g. 127.0.0.1:8000"),
        ))
    }
}

/// Sets up env_logger on stderr: `base` raised by `verbose`, lowered by
/// `quiet`; `RUST_LOG` overrides.
pub fn init_logging(base: log::LevelFilter, verbose: u8, quiet: u8) {
    use log::LevelFilter::*;
    let levels = [Off, Error, Warn, Info, Debug, Trace];
    let idx = (base as i32 + i32::from(verbose) - i32::from(quiet)).clamp(0, 5) as usize;
    let mut b = env_logger::Builder::new();
    b.filter_level(levels[idx]);
    if let Ok(spec) = std::env::var("RUST_LOG") {
        b.parse_filters(&spec);
    }
    b.format_timestamp_millis().init();
}

/// Makes a panic one log line instead of the default multi-line report. A
/// panic inside a task is caught and answered as that task's failure; this
/// keeps the worker's log to one line for it too.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let p = info.payload();
        let what = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_string());
        let thread = std::thread::current();
        log::error!(
            "panic in thread {}{at}: {what}",
            thread.name().unwrap_or("unnamed")
        );
    }));
}

/// Prints a failure as one line on stderr and turns it into an exit code.
pub fn exit_code(result: Result<(), Failure>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(f) => {
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), "argon: {}", f.message);
            std::process::ExitCode::from(u8::try_from(f.code).unwrap_or(1))
        }
    }
}

/// Tells systemd what a service is doing (`Type=notify` units: it sets
/// `NOTIFY_SOCKET`); outside systemd it does nothing. A message that cannot
/// be sent is logged, never fatal.
pub fn notify_service_manager(state: sd_notify::NotifyState<'_>) {
    if let Err(e) = sd_notify::notify(&[state]) {
        log::warn!("cannot tell systemd the service's state: {e}");
    }
}

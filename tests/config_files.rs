//! The example configuration files under `config/` load and say what they claim.

use std::path::Path;
use std::time::Duration;

use argon::config::Config;
use argon::duration::Dur;

fn load(name: &str) -> Config {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config")
        .join(name);
    Config::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The manager example sets the listener, the queue factor, the drain
/// timeout and the key.
#[test]
fn manager_example_loads() {
    let c = load("manager.toml");
    assert_eq!(c.manager.port, Some(8000));
    assert_eq!(c.manager.queue_factor, Some(3));
    assert_eq!(c.manager.drain_timeout, Some(Dur(Duration::from_secs(30))));
    assert_eq!(
        c.security.key_file.as_deref(),
        Some(Path::new("/etc/argon/key"))
    );
    assert_eq!(
        c.security.handshake_timeout,
        Some(Dur(Duration::from_secs(5)))
    );
}

/// The worker example sets the manager, capacity, drain timeout, the
/// bounds on outcomes kept while the manager is away, a command task and
/// eval limits.
#[test]
fn worker_example_loads() {
    let c = load("worker.toml");
    assert_eq!(c.worker.mgr.as_deref(), Some("127.0.0.1:8000"));
    assert_eq!(c.worker.capacity, Some(4));
    assert_eq!(c.worker.allow_eval, Some(false));
    assert_eq!(c.worker.drain_timeout, Some(Dur(Duration::from_secs(30))));
    assert_eq!(c.worker.kept_outcomes_max, Some(1000));
    assert_eq!(c.worker.kept_outcomes_max_bytes, Some(64 * 1024 * 1024));
    let wc = &c.tasks["wordcount"];
    assert_eq!(wc.command[0], "python3");
    assert_eq!(wc.timeout, Some(Dur(Duration::from_secs(10))));
    assert_eq!(c.eval.max_time, Dur(Duration::from_secs(5)));
}

/// The client example sets the manager, leaves retry off and bounds it.
#[test]
fn client_example_loads() {
    let c = load("client.toml");
    assert_eq!(c.client.mgr.as_deref(), Some("127.0.0.1:8000"));
    assert_eq!(c.client.retry, Some(false));
    assert_eq!(c.client.retry_for, Some(Dur(Duration::from_secs(300))));
}

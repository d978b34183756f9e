//! The protocol document is enough to talk to Argon from another language.
//!
//! `tests/python/argon_client.py` was written from `docs/PROTOCOL.md` alone.
//! This test starts the real `argon` binary (a manager and an `echo` worker),
//! runs that script against it as a client and as a worker for `py_upper`,
//! and gets `py_upper` executed by the Python worker through the Rust client.
//! A second test checks the document's worked example and test vectors
//! against the Rust encoder, so the document cannot drift from the code.
//!
//! The Python tests need `python3` with `cryptography` and `msgpack`. Without
//! them they print `SKIPPED: reason` on stderr and pass, or fail when
//! `ARGON_REQUIRE_PYTHON=1` (set by `.ci/run`). A third test runs this test
//! binary without python3 on its PATH to check both outcomes.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use argon::admission::{DEFAULT_MAX_HANDSHAKES, DESCRIPTOR_RESERVE, PRESSURE_TIMEOUT};
use argon::client::{Client, ClientConfig, ClientError};
use argon::protocol::codec::{decode_message, encode_message};
use argon::protocol::crypto::{COUNTER_LEN, NONCE_LEN, TAG_LEN};
use argon::protocol::handshake::{
    Refusal, HANDSHAKE_MAX_FRAME, HELLO_LEN, HELLO_MAGIC, REFUSAL_LEN,
};
use argon::protocol::{
    AuthFrame, FrameWriter, FromClient, FromWorker, HandshakeSettings, MasterKey, Outcome,
    Priority, Role, Submit, ToClient, Value, DEFAULT_MAX_FRAME, PROTOCOL_VERSION,
};
use bytes::BytesMut;

const ARGON: &str = env!("CARGO_BIN_EXE_argon");
const PIP: &str = "pip install cryptography msgpack";

/// A private temporary folder, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let p = std::env::temp_dir().join(format!("argon-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Child processes, killed and reaped on drop (also when the test panics).
#[derive(Default)]
struct Children(Vec<(&'static str, Child)>);

impl Children {
    fn get(&mut self, name: &str) -> &mut Child {
        &mut self
            .0
            .iter_mut()
            .find(|(n, _)| *n == name)
            .expect("known child")
            .1
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for (_, child) in self.0.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts `cmd` with stderr to `log`; with `lines`, stdout lines go to the
/// returned channel (read by a thread), otherwise stdout is discarded.
fn spawn(
    children: &mut Children,
    name: &'static str,
    mut cmd: Command,
    log: &Path,
    lines: bool,
) -> Option<mpsc::Receiver<String>> {
    let err = File::create(log).expect("create log file");
    cmd.stdin(Stdio::null())
        .stderr(err)
        .stdout(if lines { Stdio::piped() } else { Stdio::null() });
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
    let rx = child.stdout.take().map(|out| {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                eprintln!("[{name} stdout] {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        rx
    });
    children.0.push((name, child));
    rx
}

/// Everything the processes logged, for failure messages.
fn logs(dir: &Path) -> String {
    let mut out = String::new();
    for name in ["manager", "worker", "python"] {
        let text = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
        out.push_str(&format!("\n--- {name} stderr ---\n{text}"));
    }
    out
}

/// Waits up to `limit` for a stdout line starting with `prefix`.
fn wait_line(rx: &mpsc::Receiver<String>, prefix: &str, limit: Duration) -> Option<String> {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match rx.recv_timeout(left) {
            Ok(line) if line.starts_with(prefix) => return Some(line),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
}

/// Waits up to `limit` for a child to exit; kills it when the time is up.
fn wait_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Set to `1` (as `.ci/run` does) to make a missing python3 or module fail
/// the Python tests instead of skipping them.
const REQUIRE: &str = "ARGON_REQUIRE_PYTHON";

/// Whether python3 with both modules is there. Without them the test fails
/// when [`REQUIRE`] is `1`, and otherwise prints a loud `SKIPPED:` line
/// (the harness still reports it "ok": it cannot tell a skip at run time).
fn python_ready() -> bool {
    let probe = Command::new("python3")
        .args(["-c", "import cryptography, msgpack"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let why = match probe {
        Ok(s) if s.success() => return true,
        Ok(_) => "python3 lacks the modules cryptography and/or msgpack",
        Err(_) => "python3 is not installed",
    };
    if std::env::var_os(REQUIRE).is_some_and(|v| v == "1") {
        panic!("{why}, and {REQUIRE}=1 requires the Python interop test to run: `{PIP}`");
    }
    // Straight to stderr, past the test harness's capture, so it shows.
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "\n*** SKIPPED: the Python interop test did not run: {why} \
         (run `{PIP}`, or set {REQUIRE}=1 to make this a failure) ***\n"
    );
    false
}

#[test]
fn python_client_and_worker_interoperate_with_the_real_binary() {
    if !python_ready() {
        return;
    }
    let dir = TempDir::new("pyinterop");
    let key = dir.0.join("key");
    let out = Command::new(ARGON)
        .arg("keygen")
        .arg(&key)
        .output()
        .expect("run argon keygen");
    assert!(
        out.status.success(),
        "argon keygen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut children = Children::default();
    let mut mgr = Command::new(ARGON);
    mgr.args(["manager", "--host", "127.0.0.1", "--port", "0", "--key"])
        .arg(&key);
    let mgr_lines = spawn(
        &mut children,
        "manager",
        mgr,
        &dir.0.join("manager.log"),
        true,
    )
    .expect("stdout piped");
    let prefix = "argon manager listening on ";
    let addr = match wait_line(&mgr_lines, prefix, Duration::from_secs(20)) {
        Some(line) => line[prefix.len()..].trim().to_string(),
        None => panic!("the manager did not print its address{}", logs(&dir.0)),
    };

    let mut worker = Command::new(ARGON);
    worker
        .args(["worker", "--mgr", &addr, "--capacity", "2", "--key"])
        .arg(&key);
    spawn(
        &mut children,
        "worker",
        worker,
        &dir.0.join("worker.log"),
        false,
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let master = MasterKey::load(&key).expect("load key");
    let client = rt.block_on(async {
        let client = Client::connect(ClientConfig::new(
            addr.clone(),
            HandshakeSettings::new(master),
        ))
        .await
        .unwrap_or_else(|e| panic!("Rust client cannot connect: {e}{}", logs(&dir.0)));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let status = client.status().await.expect("status");
            if status
                .worker_list
                .iter()
                .any(|w| w.tasks.iter().any(|t| t == "echo"))
            {
                break client;
            }
            assert!(
                Instant::now() < deadline,
                "the echo worker did not register{}",
                logs(&dir.0)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/argon_client.py");
    let mut py = Command::new("python3");
    py.arg(&script)
        .args(["--mgr", &addr, "--key"])
        .arg(&key)
        .args(["--serve", "2", "--serve-timeout", "25"]);
    let py_lines =
        spawn(&mut children, "python", py, &dir.0.join("python.log"), true).expect("stdout piped");
    if wait_line(&py_lines, "READY", Duration::from_secs(30)).is_none() {
        let status = wait_exit(children.get("python"), Duration::from_millis(500));
        panic!(
            "the Python script did not become a worker within 30 s (exit: {status:?}){}",
            logs(&dir.0)
        );
    }

    rt.block_on(async {
        let limit = Duration::from_secs(15);
        let upper = tokio::time::timeout(limit, client.queue("py_upper", "hello from rust".into()))
            .await
            .expect("py_upper answered in time");
        match upper {
            Ok(v) => assert_eq!(v, Value::from("HELLO FROM RUST"), "{}", logs(&dir.0)),
            Err(e) => panic!("py_upper failed: {e}{}", logs(&dir.0)),
        }
        let bad = tokio::time::timeout(limit, client.queue("py_upper", Value::from(42)))
            .await
            .expect("py_upper answered in time");
        match bad {
            Err(ClientError::Failed(msg)) => assert!(
                msg.contains("py_upper wants a string, got int"),
                "unexpected error {msg:?}"
            ),
            other => panic!("py_upper(42) should fail, got {other:?}{}", logs(&dir.0)),
        }
    });

    match wait_exit(children.get("python"), Duration::from_secs(30)) {
        Some(s) if s.success() => {}
        Some(s) => panic!("the Python script failed ({s}){}", logs(&dir.0)),
        None => panic!(
            "the Python script did not finish within 30 s; killed{}",
            logs(&dir.0)
        ),
    }
    let py_log = std::fs::read_to_string(dir.0.join("python.log")).unwrap_or_default();
    assert!(py_log.contains("all checks passed"), "{}", logs(&dir.0));
}

/// A manager at its connection limit refuses the Python client in a way it
/// recognises from PROTOCOL.md §3.5.
#[test]
fn python_client_recognises_a_full_manager() {
    if !python_ready() {
        return;
    }
    let dir = TempDir::new("pyrefusal");
    let key = dir.0.join("key");
    let out = Command::new(ARGON)
        .arg("keygen")
        .arg(&key)
        .output()
        .expect("run argon keygen");
    assert!(out.status.success(), "argon keygen failed");
    let mut children = Children::default();
    let mut mgr = Command::new(ARGON);
    mgr.args(["manager", "--host", "127.0.0.1", "--port", "0"])
        .args(["--max-connections", "1", "--key"])
        .arg(&key);
    let mgr_lines = spawn(
        &mut children,
        "manager",
        mgr,
        &dir.0.join("manager.log"),
        true,
    )
    .expect("stdout piped");
    let prefix = "argon manager listening on ";
    let addr = match wait_line(&mgr_lines, prefix, Duration::from_secs(20)) {
        Some(line) => line[prefix.len()..].trim().to_string(),
        None => panic!("the manager did not print its address{}", logs(&dir.0)),
    };
    // The one connection it takes: admitted once its hello arrives.
    let mut held = std::net::TcpStream::connect(&addr).expect("connect");
    held.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    let mut hello = [0u8; 4 + HELLO_LEN];
    std::io::Read::read_exact(&mut held, &mut hello).expect("the manager's hello");

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/argon_client.py");
    let mut py = Command::new("python3");
    py.arg(&script)
        .args(["--mgr", &addr, "--key"])
        .arg(&key)
        .arg("--expect-refusal");
    spawn(
        &mut children,
        "python",
        py,
        &dir.0.join("python.log"),
        false,
    );
    match wait_exit(children.get("python"), Duration::from_secs(30)) {
        Some(s) if s.success() => {}
        other => panic!("the Python script failed ({other:?}){}", logs(&dir.0)),
    }
    let py_log = std::fs::read_to_string(dir.0.join("python.log")).unwrap_or_default();
    assert!(
        py_log.contains("at its connection limit (too many connections)"),
        "{}",
        logs(&dir.0)
    );
}

/// Without python3 the Python tests say SKIPPED loudly and pass, unless
/// `ARGON_REQUIRE_PYTHON=1`, where they fail saying why. Runs this very test
/// binary with an empty PATH, once each way.
#[test]
fn missing_python_is_a_loud_skip_or_a_required_failure() {
    let empty = TempDir::new("nopython");
    std::fs::create_dir_all(&empty.0).expect("create folder");
    let me = std::env::current_exe().expect("the test binary's path");
    let run = |require: Option<&str>| {
        let mut cmd = Command::new(&me);
        cmd.args(["--exact", "python_client_recognises_a_full_manager"])
            .env("PATH", &empty.0)
            .env_remove(REQUIRE)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(v) = require {
            cmd.env(REQUIRE, v);
        }
        let mut child = cmd.spawn().expect("run the test binary");
        let status = wait_exit(&mut child, Duration::from_secs(30))
            .expect("the test binary finished within 30 s");
        let mut text = String::new();
        if let Some(mut p) = child.stdout.take() {
            let _ = p.read_to_string(&mut text);
        }
        if let Some(mut p) = child.stderr.take() {
            let _ = p.read_to_string(&mut text);
        }
        (status, text)
    };

    let (status, text) = run(None);
    assert!(status.success(), "a skip still passes: {status}\n{text}");
    assert!(
        text.contains("SKIPPED: the Python interop test did not run: python3 is not installed"),
        "no SKIPPED line:\n{text}"
    );

    let (status, text) = run(Some("1"));
    assert!(
        !status.success(),
        "{REQUIRE}=1 must fail without python3:\n{text}"
    );
    assert!(
        text.contains("python3 is not installed, and ARGON_REQUIRE_PYTHON=1 requires"),
        "unclear failure:\n{text}"
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn encoded<T: serde::Serialize>(msg: &T) -> Vec<u8> {
    let mut v = Vec::new();
    encode_message(msg, &mut v).expect("encode");
    v
}

fn unhex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).expect("hex"))
        .collect()
}

/// The constants, the worked example and the test vectors of PROTOCOL.md are
/// what the code does.
#[test]
fn protocol_md_matches_the_code() {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/PROTOCOL.md"))
            .expect("read docs/PROTOCOL.md");
    let has = |what: &str, text: &str| {
        assert!(
            doc.contains(text),
            "PROTOCOL.md should contain {what}: {text}"
        )
    };

    // Constants.
    assert_eq!(PROTOCOL_VERSION, 1);
    assert_eq!(HELLO_MAGIC, b"ARGN");
    assert_eq!((HELLO_LEN, NONCE_LEN), (37, 32));
    assert_eq!((COUNTER_LEN, TAG_LEN), (8, 16));
    assert_eq!(DEFAULT_MAX_FRAME, 16_777_216);
    has("the hello length prefix", "`00 00 00 25` (37)");
    has("the default max frame", "16 MiB (16 777 216 bytes)");
    let hs = HandshakeSettings::new(MasterKey::from_material(b"k"));
    assert_eq!(hs.timeout, Duration::from_secs(5));
    has("the handshake timeout", "within 5 s by");
    assert_eq!(HANDSHAKE_MAX_FRAME, 4096);
    has("the auth frame limit", "may be at most\n**4096 bytes**");
    assert_eq!(REFUSAL_LEN, 6);
    has("the refusal length prefix", "`00 00 00 06` (6)");
    has(
        "the refusal for too many connections",
        &hex(&Refusal::Connections.frame()),
    );
    has(
        "the refusal for too many handshakes",
        &hex(&Refusal::Handshakes.frame()),
    );
    assert_eq!(DEFAULT_MAX_HANDSHAKES, 256);
    assert_eq!(
        (PRESSURE_TIMEOUT, DESCRIPTOR_RESERVE),
        (Duration::from_secs(1), 64)
    );
    assert_eq!(
        (
            argon::protocol::STATUS_MAX_WORKERS,
            argon::protocol::STATUS_MAX_TASK_NAMES
        ),
        (100, 50)
    );
    has("the status list bound", "It holds at most 100 workers");
    has("the task names bound", "at most 50 of its task names");
    assert_eq!(argon::logsafe::MAX_LOGGED_CHARS, 200);
    assert_eq!(argon::logsafe::WARN_WINDOW, Duration::from_secs(10));
    has("the logged text bound", "| 200 characters |");
    has("the warning rate", "| one line per kind per 10 s |");

    // 9.1: the worked submit.
    let submit = FromClient::Submit(Submit {
        id: 7,
        task: "echo".into(),
        args: Value::Array(vec![Value::from("hello"), Value::from(42)]),
        priority: Priority::High,
        timeout_ms: Some(5000),
        attempts: 1,
        retries: None,
        detach: false,
        want_id: false,
        due_ms: None,
        delay_ms: None,
        unique_key: None,
        unique_for_ms: None,
    });
    let bytes = encoded(&submit);
    assert_eq!(bytes.len(), 74);
    has("the worked submit", &hex(&bytes));
    let FromClient::Submit(mut with_retries) = submit else {
        unreachable!()
    };
    with_retries.retries = Some(2);
    let bytes = encoded(&FromClient::Submit(with_retries));
    assert_eq!((bytes.len(), bytes[8]), (83, 0x87));
    let tail = "a7 72 65 74 72 69 65 73 02";
    assert!(hex(&bytes).ends_with(tail));
    has(
        "the submit with retries",
        &format!("`{tail}` (\"retries\", 2), 83 bytes"),
    );
    has("the drain encoding", &hex(&encoded(&FromWorker::Drain {})));

    // 9.2: key derivation, with a key file as `argon keygen` writes it and
    // extra trailing whitespace that must be trimmed.
    let dir = TempDir::new("protodoc");
    let key_path = dir.0.join("key");
    std::fs::write(
        &key_path,
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\r\n \t\x0c\n",
    )
    .expect("write key");
    let master = MasterKey::load(&key_path).expect("load key");
    let initiator: [u8; 32] = std::array::from_fn(|i| i as u8);
    let responder: [u8; 32] = std::array::from_fn(|i| 0x20 + i as u8);
    let (i2r, r2i) = master.session_keys(&initiator, &responder);
    let direct = MasterKey::from_material(b"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=");
    assert_eq!(direct.session_keys(&initiator, &responder), (i2r, r2i));
    has("k_i2r", &format!("k_i2r: {}", hex(&i2r)));
    has("k_r2i", &format!("k_r2i: {}", hex(&r2i)));

    let auth = AuthFrame::Auth {
        version: 1,
        role: Role::Client,
        agent: "example/1".into(),
    };
    has("the auth plaintext", &hex(&encoded(&auth)));
    let mut frame = BytesMut::new();
    FrameWriter::new(&i2r, DEFAULT_MAX_FRAME)
        .write(&auth, &mut frame)
        .expect("seal");
    has("the sealed auth frame", &hex(&frame));

    // Section 6: decoding rules a foreign peer relies on.
    let minimal = unhex("81 a6 73 75 62 6d 69 74 82 a2 69 64 01 a4 74 61 73 6b a4 65 63 68 6f");
    assert_eq!(
        decode_message::<FromClient>(&minimal).expect("minimal submit"),
        FromClient::Submit(Submit {
            id: 1,
            task: "echo".into(),
            args: Value::Nil,
            priority: Priority::Normal,
            timeout_ms: None,
            attempts: 0,
            retries: None,
            detach: false,
            want_id: false,
            due_ms: None,
            delay_ms: None,
            unique_key: None,
            unique_for_ms: None,
        })
    );
    // {"ping": {"id": 3, "extra": [1, 2]}}: unknown fields are ignored.
    let extra = unhex("81 a4 70 69 6e 67 82 a2 69 64 03 a5 65 78 74 72 61 92 01 02");
    assert_eq!(
        decode_message::<FromClient>(&extra).unwrap(),
        FromClient::Ping { id: 3 }
    );
    // {"drain": nil} is rejected; {"drain": {}} is the form.
    assert!(decode_message::<FromWorker>(&unhex("81 a5 64 72 61 69 6e c0")).is_err());
    // An unknown message name is a decode error.
    assert!(decode_message::<FromClient>(&unhex("81 a3 68 75 67 81 a2 69 64 03")).is_err());
    // A message of another direction does not decode.
    assert!(decode_message::<FromClient>(&unhex("81 a5 64 72 61 69 6e 80")).is_err());
    // Outcomes are one-entry maps too.
    let reply = ToClient::Reply {
        id: 7,
        outcome: Outcome::Done { value: Value::Nil },
    };
    assert_eq!(
        hex(&encoded(&reply)),
        "81 a5 72 65 70 6c 79 82 a2 69 64 07 a7 6f 75 74 63 6f 6d 65 81 a4 64 6f 6e 65 81 a5 76 61 6c 75 65 c0"
    );
}

//! End to end with the real binary: arguments whose map keys are maps
//! nested 40, 60 and 119 deep (issue 22), which no JSON input can make, so
//! the client library sends them. The manager puts them in its dead list
//! (a preview for those over 1 KiB, the value itself for the small one) and
//! keeps answering; `argon result` and `argon failed` print bounded text
//! and exit normally; a command task (`cat`) gets them as JSON on stdin and
//! its worker keeps serving.

mod common;

use std::ffi::OsStr;
use std::future::Future;
use std::time::Duration;

use argon::client::{Client, ClientConfig, ClientError, QueueOptions};
use argon::protocol::{HandshakeSettings, MasterKey, Value};
use common::{Manager, ManagerOpts, TempDir, Worker};

/// Bound on each call through the client library.
const CALL: Duration = Duration::from_secs(15);
/// The most any command here may print: the arguments' 2000 padding
/// characters plus a few cut keys, far from the megabytes (or the abort) of
/// a key text that doubles per level.
const MAX_OUTPUT: usize = 8 * 1024;

/// `{{{...{0: 1}...: 1}: 1}: 0, "pad": "xxx..."}`: a key nested `depth`
/// maps deep beside 2000 characters, so the arguments pass 1 KiB.
fn nested_args(depth: usize, pad: usize) -> Value {
    let key = (0..depth).fold(Value::from(0), |inner, _| {
        Value::Map(vec![(inner, Value::from(1))])
    });
    Value::Map(vec![
        (key, Value::from(0)),
        (Value::from("pad"), Value::from("x".repeat(pad))),
    ])
}

fn run<F: Future>(rt: &tokio::runtime::Runtime, what: &str, f: F) -> F::Output {
    rt.block_on(async {
        tokio::time::timeout(CALL, f)
            .await
            .unwrap_or_else(|_| panic!("{what}: no answer within {CALL:?}"))
    })
}

#[test]
fn keys_nested_in_keys_leave_manager_worker_and_cli_bounded() {
    let dir = TempDir::new();
    let key = dir.keygen("key");
    let manager_toml = dir.write(
        "manager.toml",
        "[manager]\nretry_base = \"20ms\"\nretry_max = \"50ms\"\n",
    );
    let mut manager = Manager::start_with(
        &key,
        ManagerOpts {
            config: Some(manager_toml),
            ..ManagerOpts::default()
        },
    );
    let worker_toml = dir.write("worker.toml", "[tasks.cat]\ncommand = [\"cat\"]\n");
    let mut worker = Worker::start_with(
        &manager.addr,
        &key,
        2,
        &[OsStr::new("--config"), worker_toml.as_os_str()],
    );
    manager.wait_for_workers(1);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let config = ClientConfig::new(
        manager.addr.clone(),
        HandshakeSettings::new(MasterKey::load(&key).expect("key loads")),
    );
    let client = run(&rt, "connect", Client::connect(config)).expect("connects");
    let retry_once = QueueOptions {
        retries: Some(1),
        ..QueueOptions::default()
    };

    let mut dead = Vec::new();
    for (depth, pad) in [(40, 2000), (60, 2000), (119, 0)] {
        let args = nested_args(depth, pad);

        // `sleep` fails on them, is retried once, then goes to the dead list.
        let id = run(
            &rt,
            "submit sleep",
            client.submit_detached("sleep", args.clone(), &retry_once),
        )
        .expect("accepted");
        match run(&rt, "sleep's result", client.result(id, true)) {
            Err(ClientError::Failed(e)) => assert!(e.contains("milliseconds"), "{e}"),
            other => panic!("depth {depth}: sleep should fail, got {other:?}"),
        }
        dead.push(id);
        run(&rt, "ping", client.ping()).expect("the manager still answers");

        // `echo` gives them back as its result, for `argon result`.
        let id = run(
            &rt,
            "submit echo",
            client.submit_detached("echo", args.clone(), &QueueOptions::default()),
        )
        .expect("accepted");
        let out = manager
            .client_cmd("result", ["--wait", &id.to_string()])
            .run();
        assert_eq!(out.code, Some(0), "depth {depth}: {out}");
        let text = out.stdout.trim();
        assert!(
            text.len() < MAX_OUTPUT,
            "depth {depth}: {} bytes",
            text.len()
        );
        let printed: serde_json::Value = serde_json::from_str(text).expect("JSON");
        assert_eq!(
            printed["pad"].as_str().map(str::len),
            Some(pad),
            "depth {depth}: {text}"
        );

        // `cat` gets them as JSON on stdin and prints them back.
        let got = run(
            &rt,
            "queue cat",
            client.queue_with("cat", args, &QueueOptions::default()),
        )
        .unwrap_or_else(|e| panic!("depth {depth}: cat failed: {e}"));
        let echoed: serde_json::Value =
            serde_json::from_str(&argon::json::to_text(&got)).expect("JSON");
        assert_eq!(echoed, printed, "depth {depth}");
    }

    for json in [false, true] {
        let flags: &[&str] = if json { &["--json"] } else { &[] };
        let out = manager.client_cmd("failed", flags).run();
        assert_eq!(out.code, Some(0), "{out}");
        assert!(out.stdout.len() < MAX_OUTPUT, "{} bytes", out.stdout.len());
        for id in &dead {
            assert!(out.stdout.contains(&id.to_string()), "{id} listed: {out}");
        }
        if json {
            let list: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("JSON");
            let tasks = list["tasks"].as_array().expect("tasks");
            let cut: Vec<bool> = tasks.iter().map(|t| t["args_truncated"] == true).collect();
            assert_eq!(
                cut,
                [false, true, true],
                "newest (the small one) first: {out}"
            );
        }
    }

    let status = manager.status();
    assert_eq!((status.workers, status.in_flight), (1, 0), "{status:?}");
    manager.assert_healthy();
    assert!(
        worker.proc.is_running(),
        "worker died: {}",
        worker.proc.stderr()
    );
}

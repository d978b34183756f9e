//! A build without an optional subsystem (cargo features `eval`, `http`,
//! `bench`, `postgres`) refuses what needs it with exit 2 and a message naming the
//! feature, from a flag or from the config file alike. Each test is for a
//! build without its feature, so with the default features none runs; CI
//! runs this file after `cargo build --no-default-features`.

#![cfg(not(all(
    feature = "eval",
    feature = "http",
    feature = "bench",
    feature = "postgres"
)))]

mod common;

use common::{argon, Output};

/// Exit 2, nothing on stdout, and the feature named on stderr.
fn refused(out: &Output, feature: &str) {
    assert_eq!(out.code, Some(2), "{out}");
    assert_eq!(out.stdout, "", "{out}");
    let says = format!("needs the cargo feature `{feature}`");
    assert!(out.stderr.contains(&says), "{out}");
}

#[cfg(not(feature = "postgres"))]
#[test]
fn a_postgres_store_names_its_feature() {
    let dir = common::TempDir::new();
    let key = dir.keygen("key");
    let url = "postgres://argon@127.0.0.1:1/argon";
    let out = argon(["manager", "--port", "0", "--persist", url, "--key"])
        .arg(&key)
        .run();
    refused(&out, "postgres");
    let config = dir.write("m.toml", &format!("[manager]\npersist = \"{url}\"\n"));
    let out = argon(["manager", "--port", "0", "--key"])
        .arg(&key)
        .arg("--config")
        .arg(&config)
        .run();
    refused(&out, "postgres");
}

#[cfg(not(feature = "bench"))]
#[test]
fn bench_and_demo_name_their_feature() {
    refused(&argon(["bench", "--tasks", "5", "--json"]).run(), "bench");
    refused(&argon(["bench", "--sweep"]).run(), "bench");
    refused(&argon(["demo"]).run(), "bench");
}

#[cfg(not(feature = "http"))]
#[test]
fn the_http_side_names_its_feature() {
    let dir = common::TempDir::new();
    let key = dir.keygen("key");
    let out = argon(["manager", "--port", "0", "--http", "127.0.0.1:0", "--key"])
        .arg(&key)
        .run();
    refused(&out, "http");
    let config = dir.write("m.toml", "[manager]\nhttp = \"127.0.0.1:0\"\n");
    let out = argon(["manager", "--port", "0", "--key"])
        .arg(&key)
        .arg("--config")
        .arg(&config)
        .run();
    refused(&out, "http");
}

#[cfg(not(feature = "eval"))]
#[test]
fn allowing_eval_names_its_feature() {
    let dir = common::TempDir::new();
    let key = dir.keygen("key");
    let out = argon(["worker", "--mgr", "127.0.0.1:1", "--allow-eval", "--key"])
        .arg(&key)
        .run();
    refused(&out, "eval");
    let config = dir.write("w.toml", "[worker]\nallow_eval = true\n");
    let out = argon(["worker", "--mgr", "127.0.0.1:1", "--key"])
        .arg(&key)
        .arg("--config")
        .arg(&config)
        .run();
    refused(&out, "eval");
    refused(&argon(["cluster", "--allow-eval"]).run(), "eval");
}

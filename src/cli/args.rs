//! What the client commands (`submit`, `eval`, `status`, `ping`, `bench`)
//! share: the manager address and key flags, the client settings they make
//! with the config file, and JSON arguments given on the command line.

use clap::Args;

use argon::client::ClientConfig;
use argon::config::Config;
use argon::launch::{
    check_mgr_addr, handshake_settings, Failure, KeyArgs, DEFAULT_MGR, EXIT_USAGE,
};
use argon::protocol::Value;

/// Manager address and key for client commands.
#[derive(Args, Debug, Clone)]
pub struct ClientArgs {
    /// Manager address [default: 127.0.0.1:8000].
    #[arg(long, env = "ARGON_MGR", value_name = "HOST:PORT")]
    pub mgr: Option<String>,
    /// Key file.
    #[command(flatten)]
    pub key: KeyArgs,
}

/// The client settings for `a`: the manager from `--mgr` or `ARGON_MGR`, else
/// the config file, else 127.0.0.1:8000; `retry` from the config file.
pub fn client_config(a: &ClientArgs, config: &Config) -> Result<ClientConfig, Failure> {
    let hs = handshake_settings(&a.key, config)?;
    let mgr = a
        .mgr
        .clone()
        .or_else(|| config.client.mgr.clone())
        .unwrap_or_else(|| DEFAULT_MGR.into());
    check_mgr_addr(&mgr)?;
    let mut c = ClientConfig::new(mgr, hs);
    c.retry = config.client.retry.unwrap_or(false);
    Ok(c)
}

/// Parses `text`, the value of `what`, as JSON; invalid JSON is bad usage.
/// Text that does not start like JSON (`echo hello`) gets a hint to quote it
/// as a string.
pub fn parse_json_arg(what: &str, text: &str) -> Result<Value, Failure> {
    let j: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        Failure::new(
            EXIT_USAGE,
            format!("{what} is not valid JSON: {e}{}", string_hint(text)),
        )
    })?;
    Ok(argon::json::to_value(j))
}

/// ` (to pass a string, quote it: '"hello"')` for a bare word; empty for
/// text that starts like a JSON object, array, string or number.
fn string_hint(text: &str) -> String {
    let t = text.trim_start();
    let looks_like_json =
        t.starts_with(['{', '[', '"', '-']) || t.starts_with(|c: char| c.is_ascii_digit());
    if looks_like_json || t.is_empty() {
        return String::new();
    }
    let quoted = serde_json::Value::String(text.to_string()).to_string();
    let shell = format!("'{}'", quoted.replace('\'', "'\\''"));
    format!(" (to pass a string, quote it: {shell})")
}

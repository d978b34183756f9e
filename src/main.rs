//! The `argon` binary: parses the command line, sets up logging, runs the
//! command and turns its outcome into an exit code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = argon::cli::Cli::parse();
    init_logging(&cli);
    match argon::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("argon: {}", f.message);
            ExitCode::from(u8::try_from(f.code).unwrap_or(1))
        }
    }
}

fn init_logging(cli: &argon::cli::Cli) {
    use log::LevelFilter::*;
    let levels = [Off, Error, Warn, Info, Debug, Trace];
    let base = argon::cli::default_log_level(&cli.command) as i32;
    let idx = (base + i32::from(cli.verbose) - i32::from(cli.quiet)).clamp(0, 5) as usize;
    let mut b = env_logger::Builder::new();
    b.filter_level(levels[idx]);
    if let Ok(spec) = std::env::var("RUST_LOG") {
        b.parse_filters(&spec);
    }
    b.format_timestamp_millis().init();
}

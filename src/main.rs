//! The `argon` binary: parses the command line, sets up logging, runs the
//! command and turns its outcome into an exit code. The subcommands live in
//! [`cli`]; the library does the work.

use std::process::ExitCode;

use clap::Parser;

use argon::launch::{exit_code, init_logging, install_panic_hook};

/// `println!` that does not panic when stdout is closed (e.g. piped into
/// `head`): output nobody reads is dropped.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod cli;

fn main() -> ExitCode {
    argon::outgoing::fix_large_allocations();
    #[cfg(feature = "eval")]
    argon::task::eval::serve_if_runner();
    let cli = cli::Cli::parse();
    init_logging(cli::default_log_level(&cli.command), cli.verbose, cli.quiet);
    install_panic_hook();
    exit_code(cli::run(cli))
}

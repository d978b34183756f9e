//! The `argon` binary: parses the command line, sets up logging, runs the
//! command and turns its outcome into an exit code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = argon::cli::Cli::parse();
    argon::launch::init_logging(
        argon::cli::default_log_level(&cli.command),
        cli.verbose,
        cli.quiet,
    );
    argon::launch::install_panic_hook();
    argon::launch::exit_code(argon::cli::run(cli))
}

//! Entry point: parse the command line, set up logging, run the server.

use std::process::ExitCode;

use clap::Parser;
use ragd::cli::Cli;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) if !err.use_stderr() => {
            // --help and --version: print in full, succeed.
            let _ = err.print();
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            // A usage error is one clear line and exit code 2, never a panic.
            let rendered = err.render().to_string();
            let line = rendered
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("error: invalid arguments");
            eprintln!("ragd: {}", line.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    let config = match cli.into_config() {
        Ok(config) => config,
        // The parser child: no runtime, no logging set-up, just parse.
        Err(limits) => return ragd::worker::child_main::run(limits),
    };
    ragd::telemetry::init(config.log_format);

    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("ragd: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(ragd::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ragd: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}

//! Entry point: parse the command line, set up logging, run the server.

use std::process::ExitCode;

use clap::Parser;
use ragd::cli::{Action, Cli};

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
    let config = match cli.into_action() {
        Action::Serve(config) => config,
        // The parser child: no runtime, no logging set-up, just parse.
        Action::Parse(limits) => return ragd::worker::child_main::run(limits),
        Action::Reindex { data_dir } => return reindex(&data_dir),
        Action::User { data_dir, command } => return user(&data_dir, command),
        Action::Backup {
            data_dir,
            out,
            with_secret,
        } => return backup(&data_dir, &out, with_secret),
        Action::Restore { from, data_dir } => return restore(&from, &data_dir),
        Action::Check { data_dir } => return check(&data_dir),
    };
    return_large_blocks_to_the_system();
    ragd::telemetry::init(config.log_format);
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(ragd::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ragd: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}

fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => Some(rt),
        Err(err) => {
            eprintln!("ragd: cannot start the async runtime: {err}");
            None
        }
    }
}

/// `ragd reindex`: progress in the log (stderr), the result on stdout.
fn reindex(data_dir: &std::path::Path) -> ExitCode {
    ragd::telemetry::init(ragd::config::LogFormat::Text);
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(ragd::reindex(data_dir)) {
        Ok(done) => {
            println!(
                "ragd: the search index of {} holds {} chunks (rebuilt in {:.1} s)",
                data_dir.display(),
                done.chunks,
                done.took.as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("ragd: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}

/// `ragd user ...`: the result on stdout, errors as one line on stderr.
fn user(data_dir: &std::path::Path, command: ragd::cli::UserCommand) -> ExitCode {
    ragd::telemetry::init(ragd::config::LogFormat::Text);
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(ragd::admin::user(data_dir, command)) {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("ragd: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}

/// `ragd backup`: what went into the archive on stdout.
fn backup(data_dir: &std::path::Path, out: &std::path::Path, with_secret: bool) -> ExitCode {
    ragd::telemetry::init(ragd::config::LogFormat::Text);
    operator_command(ragd::ops::backup(data_dir, out, with_secret), |done| {
        for id in &done.missing_files {
            eprintln!("ragd: warning: document {id} has no file in the data dir; backed up without it");
        }
        let secret = if done.secret_key { ", secret.key" } else { "" };
        println!(
            "ragd: backed up {} documents{secret} to {} ({} bytes, {} snapshot(s))",
            done.documents,
            out.display(),
            done.bytes,
            done.snapshots
        );
    })
}

/// `ragd restore`.
fn restore(from: &std::path::Path, data_dir: &std::path::Path) -> ExitCode {
    ragd::telemetry::init(ragd::config::LogFormat::Text);
    operator_command(ragd::ops::restore(from, data_dir), |done| {
        for id in &done.missing_files {
            eprintln!("ragd: warning: document {id} has no file in the archive");
        }
        let secret = if done.secret_key {
            "with its secret.key (sessions stay valid)"
        } else {
            "without a secret.key (everyone signs in again)"
        };
        println!(
            "ragd: restored the backup of {} into {}: {} documents, {secret}; new epoch {}",
            done.created_at,
            data_dir.display(),
            done.documents,
            done.epoch
        );
    })
}

/// `ragd check`: the report on stdout; exit 1 when it found a problem.
fn check(data_dir: &std::path::Path) -> ExitCode {
    ragd::telemetry::init(ragd::config::LogFormat::Text);
    match ragd::ops::check(data_dir) {
        Ok(report) => {
            println!("ragd check of {}\n{report}", data_dir.display());
            if report.healthy() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(err) => {
            eprintln!("ragd: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}

fn operator_command<T>(result: Result<T, ragd::StartupError>, report: impl FnOnce(&T)) -> ExitCode {
    match result {
        Ok(done) => {
            report(&done);
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("ragd: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}

/// glibc serves a freed block of 128 KiB or more with mmap only until the
/// first one is freed; then it raises that threshold to the block's size
/// (up to 32 MiB) and carves later ones from per-thread arenas that it
/// never gives back. Argon2 hashes with 19 MiB blocks, so RSS grew by about
/// 16 MiB per concurrent login for good (343 MiB after 20 registrations).
/// A fixed threshold stops that: blocks from 4 MiB up are mapped and
/// returned when freed (13 MiB after the same 20). glibc reads it from the
/// environment only at start-up, so the server re-executes itself once
/// with it set; an operator's own setting is left alone.
fn return_large_blocks_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::unix::process::CommandExt;
        const VARIABLE: &str = "MALLOC_MMAP_THRESHOLD_";
        if std::env::var_os(VARIABLE).is_some() {
            return;
        }
        let Ok(exe) = std::env::current_exe() else { return };
        // `exec` returns only when it failed: then run as we are.
        let _ = std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .env(VARIABLE, "4194304")
            .exec();
    }
}

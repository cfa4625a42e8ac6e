//! The command line: `ragd` and `ragd serve` run the server; `ragd
//! reindex` rebuilds the search index; `ragd user` manages accounts;
//! `ragd backup`, `restore` and `check` look after a data dir; the
//! worker's hidden `parse` is the parser child.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::Config;

/// ragd: a self-hosted "chat with your documents" server in one binary.
#[derive(Parser, Debug)]
#[command(name = "ragd", version, about, long_about = None, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Settings used when no subcommand is given (same as `ragd serve`).
    #[command(flatten)]
    pub serve: Config,
}

#[derive(Subcommand, Debug)]
// Parsed once at start-up; boxing the config would only complicate clap.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Run the server (the default when no command is given).
    Serve(Config),
    /// Rebuild the search index from the database (stop the server first).
    Reindex {
        /// The data dir of the server.
        #[arg(long, env = "RAGD_DATA_DIR", default_value = "./data", value_name = "DIR")]
        data_dir: PathBuf,
    },
    /// Manage accounts (works while the server runs, through the database).
    User {
        #[command(subcommand)]
        command: UserCommand,
        /// The data dir of the server.
        #[arg(
            long,
            env = "RAGD_DATA_DIR",
            default_value = "./data",
            value_name = "DIR",
            global = true
        )]
        data_dir: PathBuf,
    },
    /// Write one archive of the data dir: database, originals, secret.key
    /// (the server may keep running).
    Backup {
        /// The data dir of the server.
        #[arg(long, env = "RAGD_DATA_DIR", default_value = "./data", value_name = "DIR")]
        data_dir: PathBuf,
        /// The archive to write (replaced only once the new one is complete).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Leave secret.key out (a restore then signs everyone out).
        #[arg(long)]
        no_secret: bool,
    },
    /// Restore an archive of `ragd backup` into a new or empty data dir.
    Restore {
        /// The archive.
        #[arg(long, value_name = "FILE")]
        from: PathBuf,
        /// The data dir to create (it must not exist, or be empty).
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
    },
    /// Check a data dir: database, search index, files (read-only; the
    /// server may keep running). Exits 1 when it finds a problem.
    Check {
        /// The data dir of the server.
        #[arg(long, env = "RAGD_DATA_DIR", default_value = "./data", value_name = "DIR")]
        data_dir: PathBuf,
    },
    /// The worker's parser process (internal: started by the server).
    #[command(hide = true)]
    Parse {
        #[arg(long)]
        memory_bytes: u64,
        #[arg(long)]
        cpu_seconds: u64,
        /// The server's pid, to exit when it is gone.
        #[arg(long)]
        parent_pid: Option<u32>,
    },
}

/// `ragd user ...`: exit 2 for bad input, 1 when it cannot be done (an
/// unknown or taken email, a database that cannot be written).
#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Every account with its document and conversation counts.
    List {
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Create an account (even while registration is closed).
    Create {
        #[arg(long)]
        email: String,
        /// Read the password from the first line of stdin, instead of
        /// generating one and printing it once.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set a new password; every token of the account stops working and a
    /// running server closes its sockets.
    ResetPassword {
        #[arg(long)]
        email: String,
        /// Read the password from the first line of stdin, instead of
        /// generating one and printing it once.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Delete an account and everything it owns.
    Delete {
        #[arg(long)]
        email: String,
        /// Do not ask (required when stdin is not a terminal).
        #[arg(long)]
        yes: bool,
    },
}

/// What the process is to do.
// Made once at start-up, like `Command`.
#[allow(clippy::large_enum_variant)]
pub enum Action {
    Serve(Config),
    Reindex {
        data_dir: PathBuf,
    },
    User {
        data_dir: PathBuf,
        command: UserCommand,
    },
    Backup {
        data_dir: PathBuf,
        out: PathBuf,
        with_secret: bool,
    },
    Restore {
        from: PathBuf,
        data_dir: PathBuf,
    },
    Check {
        data_dir: PathBuf,
    },
    /// Be the worker's parser child.
    Parse(crate::worker::child_main::ChildLimits),
}

impl Cli {
    pub fn into_action(self) -> Action {
        match self.command {
            Some(Command::Serve(config)) => Action::Serve(config),
            Some(Command::Reindex { data_dir }) => Action::Reindex { data_dir },
            Some(Command::User { command, data_dir }) => Action::User { data_dir, command },
            Some(Command::Backup {
                data_dir,
                out,
                no_secret,
            }) => Action::Backup {
                data_dir,
                out,
                with_secret: !no_secret,
            },
            Some(Command::Restore { from, data_dir }) => Action::Restore { from, data_dir },
            Some(Command::Check { data_dir }) => Action::Check { data_dir },
            Some(Command::Parse {
                memory_bytes,
                cpu_seconds,
                parent_pid,
            }) => Action::Parse(crate::worker::child_main::ChildLimits {
                memory_bytes,
                cpu_seconds,
                parent_pid,
            }),
            None => Action::Serve(self.serve),
        }
    }
}

//! The command line: `ragd` and `ragd serve` run the server. Later commands
//! (user, backup, restore, check, the worker's hidden `parse`) join here.

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

impl Cli {
    /// The server settings, whichever way they were given; `None` for
    /// the internal parser process.
    pub fn into_config(self) -> Result<Config, crate::worker::child_main::ChildLimits> {
        match self.command {
            Some(Command::Serve(config)) => Ok(config),
            Some(Command::Parse {
                memory_bytes,
                cpu_seconds,
                parent_pid,
            }) => Err(crate::worker::child_main::ChildLimits {
                memory_bytes,
                cpu_seconds,
                parent_pid,
            }),
            None => Ok(self.serve),
        }
    }
}

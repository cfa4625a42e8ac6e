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
pub enum Command {
    /// Run the server (the default when no command is given).
    Serve(Config),
}

impl Cli {
    /// The server settings, whichever way they were given.
    pub fn into_config(self) -> Config {
        match self.command {
            Some(Command::Serve(config)) => config,
            None => self.serve,
        }
    }
}

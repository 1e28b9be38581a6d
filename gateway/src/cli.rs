//! The command line (DESIGN §8). Every subcommand takes `-c FILE`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "gateway",
    version,
    about = "Transparent egress gateway for LLM APIs"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: attach, listen, serve (embedded defaults without -c).
    Run {
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Validate a config file; exit 64 with the key and the reason when it is invalid.
    Check {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Remove the pinned programs: stops enforcement, providers are reached directly again.
    Detach {
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
}

//! The command line: `serve`, `migrate`, `hash-bench`. Every setting is also an
//! environment variable (see `gatehouse serve --help`).

use clap::{Parser, Subcommand};

use crate::config::{DatabaseSettings, HashSettings, Settings};

#[derive(Parser, Debug)]
#[command(
    name = "gatehouse",
    version,
    about = "An authentication server: accounts, sessions and password recovery by one-time code."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the HTTP server.
    Serve(Box<Settings>),
    /// Apply pending database migrations and print the schema version.
    Migrate(DatabaseSettings),
    /// Time one password hash through the server's own code path, single-threaded.
    HashBench {
        #[command(flatten)]
        hashing: HashSettings,
        /// How many hashes to time.
        #[arg(long, default_value_t = 10)]
        rounds: u32,
    },
}

//! The `estuary` binary: command line, configuration loading, and wiring of the server.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use estuary_core::Config;

mod admin;
mod http;
mod lock;
mod logging;
mod serve;
mod tls;

#[derive(Parser)]
#[command(
    name = "estuary",
    version,
    about = "One homeserver for Matrix and XMPP over one account and room store"
)]
struct Cli {
    /// Configuration file (TOML). Without one, the built-in defaults apply; any key can also
    /// be set by an environment variable ESTUARY_<SECTION>__<KEY>.
    #[arg(long, short, global = true, env = "ESTUARY_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (runs pending migrations first).
    Serve,
    /// Validate the configuration and print the effective settings.
    CheckConfig,
    /// Run pending database migrations and exit.
    Migrate,
    /// Administer accounts (works whether or not the server is running).
    #[command(subcommand)]
    User(admin::UserCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref(), std::env::vars()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("estuary: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Command::CheckConfig = cli.command {
        print!("{}", config.to_toml());
        eprintln!("estuary: configuration is valid");
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("estuary: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve => serve::run(config).await,
            Command::Migrate => admin::migrate(&config).await,
            Command::User(cmd) => admin::user(&config, cmd).await,
            Command::CheckConfig => Ok(()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("estuary: {e:#}");
            ExitCode::FAILURE
        }
    }
}

//! Structured logs with `tracing`. `RUST_LOG`, when set, overrides `logging.level`.

use estuary_core::config::{LogFormat, LogLevel, LoggingConfig};
use tracing_subscriber::EnvFilter;

pub fn init(config: &LoggingConfig) {
    let level = match config.level {
        LogLevel::Error => "error",
        LogLevel::Warn => "warn",
        LogLevel::Info => "info",
        LogLevel::Debug => "debug",
        LogLevel::Trace => "trace",
    };
    // Dependencies are noisy at debug; keep them at warn unless RUST_LOG asks otherwise.
    let default = format!(
        "warn,estuary={level},estuary_core={level},estuary_store={level},estuary_matrix={level},estuary_xmpp={level},estuary_federation={level}"
    );
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let result = match config.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    if let Err(e) = result {
        eprintln!("estuary: logging already initialised: {e}");
    }
}

//! Structured logs with `tracing`: human-readable by default, JSON for log shippers.

use tracing_subscriber::EnvFilter;

use crate::cli::GlobalArgs;

/// Installs the global subscriber. `RUST_LOG` overrides `--log-level`.
pub fn init(global: &GlobalArgs) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&global.log_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    if global.log_json {
        builder.json().init();
    } else {
        builder.init();
    }
}

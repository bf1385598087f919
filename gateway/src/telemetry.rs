//! Logging: JSON (production) or text (dev) on stderr, filtered by
//! `HURTIGSPOR_LOG` or the configured filter. Spans and events carry opaque ids
//! only: never national ids or names.

use crate::config::{LogConfig, LogFormat};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Installs the global subscriber; a second call is a no-op.
pub fn init(config: &LogConfig) {
    let filter = std::env::var("HURTIGSPOR_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::try_new(&config.filter).unwrap_or_else(|_| EnvFilter::new("info")));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match config.format {
        LogFormat::Json => registry
            .with(fmt::layer().json().with_current_span(true).with_span_list(false).with_writer(std::io::stderr))
            .try_init(),
        LogFormat::Text => registry
            .with(
                fmt::layer()
                    .with_target(false)
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    let _ = result;
}

//! Logging: tracing to stderr, text or JSON, with `log` records (aya-log's eBPF output among
//! them, under the `gateway_ebpf` target) bridged in.

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::{Log, LogFormat};

/// Install the global subscriber. `RUST_LOG` overrides `log.level`.
pub fn init(cfg: &Log) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cfg.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_log::LogTracer::init();
    let registry = tracing_subscriber::registry().with(filter);
    let res = match cfg.format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Text => registry
            .with(fmt::layer().with_writer(std::io::stderr))
            .try_init(),
    };
    let _ = res;
}

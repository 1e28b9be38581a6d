//! Logging: tracing to stderr, text or JSON, with `log` records (aya-log's eBPF output among
//! them, under the `gateway_ebpf` target) bridged in.

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::{Log, LogFormat};

/// Install the global subscriber. `RUST_LOG` overrides `log.level`.
pub fn init(cfg: &Log) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cfg.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Bridge `log` records (aya-log, rustls, h2) only up to the most verbose level the filter can
    // pass: with the default max (TRACE) every trace! in rustls and h2 would build a record
    // just to be dropped, which costs tens of microseconds per request.
    let max = match filter.max_level_hint() {
        Some(l) if l == tracing_subscriber::filter::LevelFilter::OFF => log::LevelFilter::Off,
        Some(l) if l >= tracing_subscriber::filter::LevelFilter::TRACE => log::LevelFilter::Trace,
        Some(l) if l >= tracing_subscriber::filter::LevelFilter::DEBUG => log::LevelFilter::Debug,
        Some(l) if l >= tracing_subscriber::filter::LevelFilter::INFO => log::LevelFilter::Info,
        Some(l) if l >= tracing_subscriber::filter::LevelFilter::WARN => log::LevelFilter::Warn,
        Some(_) => log::LevelFilter::Error,
        None => log::LevelFilter::Trace,
    };
    let _ = tracing_log::LogTracer::builder().with_max_level(max).init();
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

//! `gateway doctor`'s lines for the exporters: each one's lag, failures and lost records, read
//! from the running daemon's metrics (the journal itself is locked by the daemon).

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    time::Duration,
};

use crate::config::Config;

/// `(healthy, line)` per `[[export]]` entry; nothing without exporters.
pub fn lines(cfg: &Config) -> Vec<(bool, String)> {
    if cfg.exports.is_empty() {
        return Vec::new();
    }
    let text = if cfg.metrics.enabled {
        fetch(cfg.metrics.listen)
    } else {
        Err("metrics.enabled = false".into())
    };
    cfg.exports
        .iter()
        .map(|e| {
            let name = e.name();
            let head = format!("export {name} ({} → {})", e.kind, e.url);
            let text = match &text {
                Ok(t) => t,
                Err(why) => return (false, format!("{head}: lag unknown ({why})")),
            };
            let lag = sample(text, "gateway_export_lag_records", &name);
            let failures = sample(text, "gateway_export_failures_total", &name).unwrap_or(0.0);
            let lost = sample(text, "gateway_export_lost_records_total", &name).unwrap_or(0.0);
            match lag {
                None => (
                    false,
                    format!(
                        "{head}: not running in the daemon (restart it after adding the entry)"
                    ),
                ),
                Some(l) if l == 0.0 && lost == 0.0 => (
                    true,
                    format!("{head}: up to date ({failures} failed attempts since start)"),
                ),
                Some(l) => (
                    false,
                    format!(
                        "{head}: {l} records not yet acknowledged, {failures} failed attempts, \
                         {lost} records lost before export: see the daemon's log"
                    ),
                ),
            }
        })
        .collect()
}

fn sample(text: &str, metric: &str, exporter: &str) -> Option<f64> {
    let label = format!("exporter=\"{exporter}\"");
    text.lines()
        .find(|l| l.starts_with(&format!("{metric}{{")) && l.contains(&label))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn fetch(addr: std::net::SocketAddr) -> Result<String, String> {
    let t = Duration::from_secs(2);
    let why = |e: std::io::Error| format!("the daemon's metrics at {addr} are not reachable: {e}");
    let mut s = TcpStream::connect_timeout(&addr, t).map_err(why)?;
    s.set_read_timeout(Some(t)).map_err(why)?;
    s.write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .map_err(why)?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(why)?;
    Ok(out)
}

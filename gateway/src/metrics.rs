//! Metrics (DESIGN §7): Prometheus text on a loopback port, `GET /metrics`. Every label value
//! comes from the config or from the code (provider and rule names, endpoint names, outcomes,
//! status codes), never from traffic: no free text, no secret.

use std::{net::SocketAddr, sync::OnceLock, time::Duration};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

/// `[metrics]` in the config.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Where `/metrics` is served; loopback only. `enabled = false` serves nothing.
    pub listen: SocketAddr,
    pub enabled: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9464".parse().expect("literal"),
            enabled: true,
        }
    }
}

impl MetricsConfig {
    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.enabled && !self.listen.ip().is_loopback() {
            return Err((
                "metrics.listen".into(),
                format!(
                    "{} is not a loopback address; metrics are served on loopback only",
                    self.listen
                ),
            ));
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub provider: String,
    pub endpoint: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabels {
    pub rule: String,
    pub action: String,
    pub direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabels {
    pub provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

/// An `[[export]]` entry: its name (from the config) and kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExportLabels {
    pub exporter: String,
    pub kind: String,
}

pub struct Metrics {
    registry: Registry,
    pub connections: Family<OutcomeLabels, Counter>,
    pub requests: Family<RequestLabels, Counter>,
    pub rule_hits: Family<RuleLabels, Counter>,
    /// held, approved, denied, timed_out, withdrawn; refused (never held: hold.max_pending,
    /// hold.max_bytes)
    pub holds: Family<OutcomeLabels, Counter>,
    pub holds_pending: Gauge,
    pub duration: Family<ProviderLabels, Histogram>,
    pub ttfb: Family<ProviderLabels, Histogram>,
    pub journal_write: Histogram,
    pub journal_errors: Counter,
    /// Answers whose record could not be written: `cut` (the client got an error) or
    /// `delivered` (`journal.deliver_unrecorded`).
    pub journal_unrecorded: Family<ResultLabels, Counter>,
    /// hit | mint
    pub leaf_cache: Family<ResultLabels, Counter>,
    /// Workload DNS queries through the gateway, by result (answered, servfail, no_record,
    /// busy, upstream_failed).
    pub dns_queries: Family<ResultLabels, Counter>,
    /// Provider addresses written into the kernel set from workloads' DNS answers.
    pub dns_learned: Counter,
    /// Export (issue I): events a sink acknowledged, failed attempts, records it will never
    /// get (pruned or unreadable before export), records journaled but not yet acknowledged.
    pub export_events: Family<ExportLabels, Counter>,
    pub export_failures: Family<ExportLabels, Counter>,
    pub export_lost: Family<ExportLabels, Counter>,
    pub export_lag: Family<ExportLabels, Gauge>,
}

fn latency_buckets() -> impl Iterator<Item = f64> {
    // 100 µs … ~105 s
    prometheus_client::metrics::histogram::exponential_buckets(1e-4, 2.0, 21)
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("gateway");
        let m = Self {
            connections: Family::default(),
            requests: Family::default(),
            rule_hits: Family::default(),
            holds: Family::default(),
            holds_pending: Gauge::default(),
            duration: Family::new_with_constructor(|| Histogram::new(latency_buckets())),
            ttfb: Family::new_with_constructor(|| Histogram::new(latency_buckets())),
            journal_write: Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(1e-5, 2.0, 18),
            ),
            journal_errors: Counter::default(),
            journal_unrecorded: Family::default(),
            leaf_cache: Family::default(),
            dns_queries: Family::default(),
            dns_learned: Counter::default(),
            export_events: Family::default(),
            export_failures: Family::default(),
            export_lost: Family::default(),
            export_lag: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "connections",
            "Redirected connections, by how they ended",
            m.connections.clone(),
        );
        registry.register(
            "requests",
            "Provider requests, by provider, endpoint and the status the client got",
            m.requests.clone(),
        );
        registry.register(
            "rule_hits",
            "Policy rule hits, by rule, action and direction",
            m.rule_hits.clone(),
        );
        registry.register(
            "holds",
            "Requests held for approval, and how holds ended",
            m.holds.clone(),
        );
        registry.register(
            "holds_pending",
            "Requests waiting for approval now",
            m.holds_pending.clone(),
        );
        registry.register(
            "exchange_duration_seconds",
            "From a request's arrival to the end of its answer",
            m.duration.clone(),
        );
        registry.register(
            "ttfb_seconds",
            "From a request's arrival to its answer's head",
            m.ttfb.clone(),
        );
        registry.register(
            "journal_write_seconds",
            "From an exchange's end to its record being durable",
            m.journal_write.clone(),
        );
        registry.register(
            "journal_write_errors",
            "Journal writes that failed",
            m.journal_errors.clone(),
        );
        registry.register(
            "journal_unrecorded",
            "Answers whose record could not be written: cut short, or delivered anyway",
            m.journal_unrecorded.clone(),
        );
        registry.register(
            "leaf_cache",
            "Leaf certificates served from the cache or minted",
            m.leaf_cache.clone(),
        );
        registry.register(
            "dns_queries",
            "Workload DNS queries through the gateway, by result",
            m.dns_queries.clone(),
        );
        registry.register(
            "dns_learned_addresses",
            "Provider addresses written into the kernel set from workloads' DNS answers",
            m.dns_learned.clone(),
        );
        registry.register(
            "export_events",
            "Events an exporter's sink acknowledged",
            m.export_events.clone(),
        );
        registry.register(
            "export_failures",
            "Failed attempts to hand a batch to an exporter's sink",
            m.export_failures.clone(),
        );
        registry.register(
            "export_lost_records",
            "Journal records an exporter will never send (pruned or unreadable before export)",
            m.export_lost.clone(),
        );
        registry.register(
            "export_lag_records",
            "Journal records not yet acknowledged by an exporter's sink",
            m.export_lag.clone(),
        );
        Self { registry, ..m }
    }

    /// The Prometheus text exposition (version 0.0.4). prometheus-client writes OpenMetrics,
    /// whose counter families are named without `_total`; Prometheus' own text format (what
    /// `promtool check metrics` and every scraper read) names the family as its samples are.
    pub fn encode(&self) -> String {
        let mut om = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut om, &self.registry);
        let counters: std::collections::HashSet<&str> = om
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.strip_suffix(" counter"))
            .collect();
        let mut out = String::with_capacity(om.len());
        for line in om.lines() {
            if line == "# EOF" || line.starts_with("# UNIT ") {
                continue;
            }
            let renamed = ["# HELP ", "# TYPE "].iter().find_map(|p| {
                let rest = line.strip_prefix(p)?;
                let (name, tail) = rest.split_once(' ')?;
                counters
                    .contains(name)
                    .then(|| format!("{p}{name}_total {tail}"))
            });
            out.push_str(renamed.as_deref().unwrap_or(line));
            out.push('\n');
        }
        out
    }

    pub fn observe(h: &Histogram, d: Duration) {
        h.observe(d.as_secs_f64());
    }
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// The process's metrics.
pub fn get() -> &'static Metrics {
    METRICS.get_or_init(Metrics::new)
}

/// Count one more of `family` with this single label.
pub fn inc(family: &Family<OutcomeLabels, Counter>, outcome: &str) {
    family
        .get_or_create(&OutcomeLabels {
            outcome: outcome.to_string(),
        })
        .inc();
}

#[derive(Debug, thiserror::Error)]
#[error("cannot serve metrics on {addr}: {source}")]
pub struct MetricsError {
    addr: SocketAddr,
    source: std::io::Error,
}

/// Serve `GET /metrics` (anything else: 404) on `cfg.listen`.
pub async fn serve(cfg: &MetricsConfig) -> Result<(), MetricsError> {
    use http_body_util::Full;
    use hyper::{Response, service::service_fn};
    if !cfg.enabled {
        return Ok(());
    }
    let addr = cfg.listen;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError { addr, source })?;
    info!(%addr, "metrics at http://{addr}/metrics");
    tokio::spawn(async move {
        loop {
            let (tcp, _) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    warn!(error = %e, "metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            tokio::spawn(async move {
                let svc = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    let mut r = if req.uri().path() == "/metrics" {
                        let mut r = Response::new(Full::new(bytes::Bytes::from(get().encode())));
                        r.headers_mut().insert(
                            http::header::CONTENT_TYPE,
                            http::HeaderValue::from_static(
                                "text/plain; version=0.0.4; charset=utf-8",
                            ),
                        );
                        r
                    } else {
                        Response::new(Full::new(bytes::Bytes::from_static(b"not found\n")))
                    };
                    if req.uri().path() != "/metrics" {
                        *r.status_mut() = http::StatusCode::NOT_FOUND;
                    }
                    Ok::<_, std::convert::Infallible>(r)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    Ok(())
}

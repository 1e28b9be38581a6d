//! Keeping the node intermediate fresh: obtained at start (no start without one: fail closed),
//! renewed at two thirds of its life. A failed renewal is logged as an error and retried while
//! the current intermediate keeps serving; once it has expired, [`Issuing::check_usable`] makes
//! interception refuse new connections until a renewal succeeds.

use std::{future::Future, path::PathBuf, time::Duration};

use time::OffsetDateTime;
use tracing::{error, info};

use super::{FleetCaError, Request, RootSource};
use crate::{
    config::Config,
    tls::issuing::{Issuing, IssuingHandle},
};

/// Time, injectable for tests.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> OffsetDateTime;
    fn sleep(&self, d: Duration) -> impl Future<Output = ()> + Send;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
    fn sleep(&self, d: Duration) -> impl Future<Output = ()> + Send {
        tokio::time::sleep(d)
    }
}

/// Something that issues intermediates (the configured root; a fake in tests).
pub trait Issue: Send + Sync + 'static {
    fn issue(&self) -> impl Future<Output = Result<Issuing, FleetCaError>> + Send;
}

struct Configured {
    src: RootSource,
    req: Request,
}

impl Issue for Configured {
    fn issue(&self) -> impl Future<Output = Result<Issuing, FleetCaError>> + Send {
        self.src.issue(&self.req)
    }
}

/// When to renew an intermediate obtained at `obtained` and valid until `not_after`: at two
/// thirds of the life left when it arrived.
pub fn renew_at(obtained: OffsetDateTime, not_after: OffsetDateTime) -> OffsetDateTime {
    obtained + (not_after - obtained) * 2 / 3
}

/// How long to wait before trying again after a failed renewal at `now`: a tenth of what is
/// left, between 1 s and 60 s; every 5 s once expired.
pub fn retry_after(now: OffsetDateTime, not_after: OffsetDateTime) -> Duration {
    if now >= not_after {
        return Duration::from_secs(5);
    }
    let left = (not_after - now).unsigned_abs();
    (left / 10).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// Renew forever: the loop behind [`start`], generic over the clock and the issuer.
pub async fn run<C: Clock, S: Issue>(
    handle: IssuingHandle,
    src: S,
    clock: C,
    mut obtained: OffsetDateTime,
    on_new: impl Fn(&Issuing) + Send,
) {
    loop {
        let cur = handle.current();
        let Some(end) = cur.not_after else {
            return;
        };
        let at = renew_at(obtained, end);
        let now = clock.now();
        if now < at {
            clock.sleep((at - now).unsigned_abs()).await;
        }
        loop {
            match src.issue().await {
                Ok(next) => {
                    let next = handle.replace(next);
                    obtained = clock.now();
                    record(&next, "renewed");
                    info!(
                        serial = %next.serial,
                        previous = %cur.serial,
                        not_after = %fmt(next.not_after),
                        "node intermediate renewed"
                    );
                    on_new(&next);
                    break;
                }
                Err(e) => {
                    let now = clock.now();
                    count("failed");
                    if now >= end {
                        error!(
                            error = %e,
                            serial = %cur.serial,
                            expired = %fmt(Some(end)),
                            "the node intermediate has EXPIRED and renewing it failed: TLS \
                             interception refuses new connections until a renewal succeeds"
                        );
                    } else {
                        error!(
                            error = %e,
                            serial = %cur.serial,
                            expires = %fmt(Some(end)),
                            left_s = (end - now).whole_seconds(),
                            "renewing the node intermediate failed; the current one keeps \
                             serving until it expires"
                        );
                    }
                    clock.sleep(retry_after(now, end)).await;
                }
            }
        }
    }
}

fn count(result: &str) {
    crate::metrics::get()
        .ca_renewals
        .get_or_create(&crate::metrics::ResultLabels {
            result: result.into(),
        })
        .inc();
}

/// Metrics for a new intermediate: its expiry, and (after a renewal) the count.
fn record(i: &Issuing, result: &str) {
    if let Some(end) = i.not_after {
        crate::metrics::get()
            .ca_intermediate_not_after
            .set(end.unix_timestamp());
    }
    if !result.is_empty() {
        count(result);
    }
}

/// Provider hosts outside `ca.permitted_dns`: clients would reject their leaves.
pub(super) fn uncovered_hosts(cfg: &Config) -> Vec<String> {
    let permitted = &cfg.ca.permitted_dns;
    if permitted.is_empty() {
        return Vec::new();
    }
    let covered = |name: &str| {
        permitted.iter().any(|d| {
            let d = d.to_ascii_lowercase();
            name == d || name.ends_with(&format!(".{d}"))
        })
    };
    crate::provider::Catalog::from_config(cfg)
        .iter()
        .flat_map(|p| p.hosts.iter())
        .map(|h| match h {
            crate::provider::HostPattern::Exact(n) => n.clone(),
            crate::provider::HostPattern::Suffix(s) => s.trim_start_matches('.').to_string(),
            // The labels after the last wildcard one: what every match ends with.
            crate::provider::HostPattern::Glob(labels) => {
                let tail: Vec<&str> = labels
                    .iter()
                    .rev()
                    .take_while(|l| l.len() == 1)
                    .map(|l| l[0].as_str())
                    .collect();
                tail.into_iter().rev().collect::<Vec<_>>().join(".")
            }
        })
        .filter(|n| !covered(n))
        .collect()
}

pub fn fmt(t: Option<OffsetDateTime>) -> String {
    t.and_then(|t| {
        t.format(&time::format_description::well_known::Rfc3339)
            .ok()
    })
    .unwrap_or_else(|| "-".into())
}

/// What `gateway ca show` reads back: the current intermediate (public facts only).
pub fn status_json(cfg: &Config, source: &str, i: &Issuing, renew: OffsetDateTime) -> String {
    let subject = i
        .chain
        .first()
        .and_then(|d| super::sign::facts(d).ok())
        .map(|f| f.subject)
        .unwrap_or_default();
    serde_json::json!({
        "root": cfg.ca.root.name(),
        "source": source,
        "node": cfg.node_name(),
        "subject": subject,
        "serial": i.serial,
        "not_before": fmt(i.not_before),
        "not_after": fmt(i.not_after),
        "renew_at": fmt(Some(renew)),
        "generation": i.generation,
    })
    .to_string()
}

fn write_status(cfg: &Config, source: &str, i: &Issuing, obtained: OffsetDateTime) {
    let renew = i.not_after.map_or(obtained, |e| renew_at(obtained, e));
    let pem: String = i.chain.iter().take(1).map(super::sign::to_pem).collect();
    let r = super::write_public(&cfg.state_dir, super::INTERMEDIATE_FILE, &pem).and_then(|_| {
        super::write_public(
            &cfg.state_dir,
            super::STATUS_FILE,
            &status_json(cfg, source, i, renew),
        )
    });
    if let Err(e) = r {
        error!(error = %e, "cannot record the node intermediate for `gateway ca show`");
    }
}

/// With a fleet root: obtain this node's first intermediate (an error stops the start),
/// record the trust anchor in `<state_dir>/ca/org-root.pem`, and spawn the renewal task.
/// `None` for `root = "local"`.
pub async fn start(cfg: &Config) -> Result<Option<(IssuingHandle, PathBuf)>, FleetCaError> {
    let Some(src) = RootSource::from_config(cfg)? else {
        return Ok(None);
    };
    let source = src.describe();
    let req = Request {
        node: cfg.node_name(),
        ttl: cfg.ca.intermediate_ttl,
        permitted_dns: cfg.ca.permitted_dns.clone(),
    };
    let anchor = src.anchor().await?;
    let first = src.issue(&req).await?;
    let obtained = OffsetDateTime::now_utc();
    let anchor_path = super::write_public(&cfg.state_dir, super::ANCHOR_FILE, &anchor)?;
    write_status(cfg, &source, &first, obtained);
    record(&first, "");
    let outside = uncovered_hosts(cfg);
    if !outside.is_empty() {
        tracing::warn!(
            hosts = ?outside,
            permitted = ?cfg.ca.permitted_dns,
            "these provider hosts are outside ca.permitted_dns: clients will reject their \
             certificates (add them, or drop the constraint)"
        );
    }
    info!(
        root = cfg.ca.root.name(),
        source = %source,
        node = %req.node,
        serial = %first.serial,
        not_after = %fmt(first.not_after),
        renew_at = %fmt(first.not_after.map(|e| renew_at(obtained, e))),
        trust = %anchor_path.display(),
        "node intermediate issued by the fleet root; clients trust the organisation root"
    );
    let handle = IssuingHandle::new(first);
    let h = handle.clone();
    let cfg2 = cfg.clone();
    tokio::spawn(async move {
        let on_new = move |i: &Issuing| write_status(&cfg2, &source, i, OffsetDateTime::now_utc());
        run(h, Configured { src, req }, SystemClock, obtained, on_new).await;
    });
    Ok(Some((handle, anchor_path)))
}

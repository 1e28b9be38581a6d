//! A client message that must wait for approval ([`crate::hold`]): parked in the hold
//! service (the relay's client side waits, so the messages after it wait too, in order) until
//! approved; denied, timed out or not holdable → the close the session ends with.

use std::time::Instant;

use tracing::{info, warn};

use super::relay::{Session, Shared, lock};
use crate::journal::Approval;

/// Park a client message until it is approved. `Err`: the close to end the session with.
pub(super) async fn wait(
    s: &Session,
    st: &Shared,
    why: String,
    excerpt: String,
    body_len: usize,
) -> Result<(), (u16, String)> {
    use crate::hold::{Decision as D, HoldError, Outcome};
    let model = lock(st).model.clone();
    let req = crate::hold::Request {
        identity: &s.identity,
        provider: &s.provider,
        endpoint: s.endpoint,
        model,
        reason: why.clone(),
        excerpt,
        body_len,
    };
    let m = crate::metrics::get();
    let (info, waiting) = match s.hold.hold(req) {
        Ok(h) => h,
        Err(e) => {
            warn!(conn = s.conn_id, why = %why, error = %e, "websocket message not held: refused");
            crate::metrics::inc(&m.holds, "refused");
            return Err(match e {
                HoldError::Full(m) => (
                    1013,
                    format!("gateway: too many requests wait for approval ({m}); try again later"),
                ),
                e => (
                    1011,
                    format!("gateway: the hold could not be recorded ({e})"),
                ),
            });
        }
    };
    info!(conn = s.conn_id, hold = info.id, why = %why, "websocket message held for approval");
    if let Some(w) = &s.hold.webhook {
        w.notify(info.clone());
    }
    crate::metrics::inc(&m.holds, "held");
    m.holds_pending.inc();
    struct Pending(&'static str);
    impl Drop for Pending {
        fn drop(&mut self) {
            let m = crate::metrics::get();
            m.holds_pending.dec();
            crate::metrics::inc(&m.holds, self.0);
        }
    }
    let mut pending = Pending("withdrawn");
    let since = Instant::now();
    lock(st).approval = Some(Approval {
        hold: info.id,
        why: why.clone(),
        outcome: "withdrawn".into(),
        by: None,
        reason: None,
        at: None,
        waited_ms: 0.0,
        via: None,
    });
    let timeout = s.hold.cfg.timeout;
    let outcome = waiting.wait(timeout).await;
    let mut g = lock(st);
    let a = g.approval.as_mut().expect("set above");
    a.waited_ms = since.elapsed().as_secs_f64() * 1e3;
    a.at = Some(crate::journal::rfc3339(crate::journal::now_ms()));
    match outcome {
        Outcome::Decided(D::Approved { by, reason }) => {
            info!(conn = s.conn_id, hold = info.id, %by, "websocket hold approved");
            a.outcome = "approved".into();
            a.by = Some(by);
            a.reason = reason;
            pending.0 = "approved";
            Ok(())
        }
        Outcome::Decided(D::Denied { by, reason }) => {
            a.outcome = "denied".into();
            a.by = Some(by.clone());
            a.reason = reason.clone();
            pending.0 = "denied";
            Err((
                1008,
                format!(
                    "gateway: message held for approval (hold {}) was denied by {by}",
                    info.id
                ),
            ))
        }
        Outcome::TimedOut => {
            a.outcome = "timed_out".into();
            pending.0 = "timed_out";
            Err((
                1008,
                format!(
                    "gateway: message held for approval (hold {}) was not approved within {timeout:?}",
                    info.id
                ),
            ))
        }
    }
}

//! Holds on the request path (DESIGN §7): a request the inspection phase held waits here for
//! its decision, in one of two ways.
//!
//! - A plain request waits with nothing sent to its client ([`wait_keyed`]); approved, it goes
//!   on upstream; denied or timed out, the client gets the provider-shaped error ([`super::rescue`]).
//! - A streaming request (the adapter decides: [`crate::provider::adapter::Adapter::held_stream`])
//!   is answered at once, 200 with `text/event-stream`, and sent the provider's keepalive event
//!   every `hold.keepalive` ([`HeldStream`]): a client's stream watchdog (Claude Code gives up
//!   after ~90 s of silence, Bun-built CLIs after ~300 s) never fires. Approved, the provider's
//!   events follow in the same stream, masked as any answer; denied, timed out, refused by the
//!   provider, or unrecordable, the stream ends with an error event in the provider's shape
//!   ([`super::rescue::stream_error`]).
//!
//! Either way the request has a key ([`crate::hold::digest`]): a resend of a held request joins
//! its hold, and a decision is bound to the key for `hold.approval_ttl`. The journal record
//! says which (`approval.via`).

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use bytes::Bytes;
use http::{HeaderValue, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt as _;
use tracing::{info, warn};

use super::{Closed, ConnCtx, ExchangeError, RespBody, rescue};
use crate::{
    hold::{Admission, Decision, HoldError, HoldInfo, Outcome, Waiting, digest},
    journal::{
        Approval, Exchange,
        body::{Found, Late, LateFields},
    },
    policy::scan::Scanner,
    provider::adapter::Framing,
    upstream::pool::BoxError,
};

/// Why a request must wait, with what the approver sees of it.
pub(super) struct Held {
    pub why: String,
    pub model: Option<String>,
    pub excerpt: String,
    /// The body asks for a streamed answer (`"stream": true`).
    pub stream: bool,
}

/// The hold key of a request about to go upstream: its head and body as they go, and its
/// caller.
pub(super) fn key_of(parts: &http::request::Parts, body: &[u8], ctx: &ConnCtx) -> digest::Key {
    digest::key(
        &digest::Canonical {
            method: &parts.method,
            path: parts.uri.path(),
            query: parts.uri.query(),
            headers: &parts.headers,
            body,
        },
        &digest::Caller::from(&*ctx.identity),
    )
}

/// How a held request's wait begins.
// Made once per held request and taken apart at once: not worth a box.
#[allow(clippy::large_enum_variant)]
enum Admitted {
    /// It waits for a decision.
    Wait {
        info: HoldInfo,
        waiting: Waiting,
        joined: bool,
    },
    /// Approved already (a decision bound to its key): it goes on at once.
    Approved,
}

/// Metrics of one waiting request: pending until decided; a client that hangs up first
/// withdraws it.
struct Pending(Option<&'static str>);

impl Pending {
    fn new() -> Self {
        let m = crate::metrics::get();
        crate::metrics::inc(&m.holds, "held");
        m.holds_pending.inc();
        Self(None)
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let m = crate::metrics::get();
        m.holds_pending.dec();
        crate::metrics::inc(&m.holds, self.0.unwrap_or("withdrawn"));
    }
}

/// Hold the request, join the hold with its key, or take the decision bound to its key.
/// `approval` is the record's: set to what is known now (withdrawn until decided).
fn admit(
    held: &Held,
    key: Option<digest::Key>,
    body_len: usize,
    endpoint: &'static str,
    ctx: &ConnCtx,
    approval: &mut Option<Approval>,
) -> Result<Admitted, ExchangeError> {
    let svc = &ctx.hold;
    let req = crate::hold::Request {
        identity: &ctx.identity,
        provider: &ctx.provider.name,
        endpoint,
        model: held.model.clone(),
        reason: held.why.clone(),
        excerpt: held.excerpt.clone(),
        body_len,
    };
    let record = |hold: u64, outcome: &str, via: Option<&str>| Approval {
        hold,
        why: held.why.clone(),
        outcome: outcome.into(),
        by: None,
        reason: None,
        at: None,
        waited_ms: 0.0,
        via: via.map(String::from),
    };
    match svc.admit(req, key) {
        Err(e) => {
            warn!(conn = ctx.conn_id, why = %held.why, error = %e, "request not held: refused");
            crate::metrics::inc(&crate::metrics::get().holds, "refused");
            Err(match e {
                HoldError::Full(m) => ExchangeError::HoldsFull(m),
                e => ExchangeError::HoldUnrecorded(e.to_string()),
            })
        }
        Ok(Admission::Bound { hold, decision }) => {
            crate::metrics::inc(&crate::metrics::get().holds, "reused");
            let mut a = record(hold, "approved", Some("reused"));
            a.at = Some(crate::journal::rfc3339(crate::journal::now_ms()));
            let r = match decision {
                Decision::Approved { by, reason } => {
                    info!(conn = ctx.conn_id, hold, %by, "request released by an approval of the same request");
                    a.by = Some(by);
                    a.reason = reason;
                    Ok(Admitted::Approved)
                }
                Decision::Denied { by, reason } => {
                    info!(conn = ctx.conn_id, hold, %by, "request refused by a denial of the same request");
                    a.outcome = "denied".into();
                    a.by = Some(by.clone());
                    a.reason = reason.clone();
                    Err(ExchangeError::HoldDenied {
                        hold,
                        why: held.why.clone(),
                        by,
                        reason,
                    })
                }
            };
            *approval = Some(a);
            r
        }
        Ok(Admission::Held {
            info,
            waiting,
            joined,
        }) => {
            if joined {
                info!(
                    conn = ctx.conn_id,
                    hold = info.id,
                    waiting = info.waiting,
                    pid = ctx.identity.tgid,
                    "request joined the pending hold of the same request"
                );
            } else {
                info!(
                    conn = ctx.conn_id,
                    hold = info.id,
                    why = %held.why,
                    pid = info.pid,
                    uid = info.uid,
                    comm = %info.comm,
                    "request held for approval"
                );
                if let Some(w) = &svc.webhook {
                    w.notify(info.clone());
                }
            }
            *approval = Some(record(info.id, "withdrawn", joined.then_some("joined")));
            Ok(Admitted::Wait {
                info,
                waiting,
                joined,
            })
        }
    }
}

/// Wait for the decision on hold `info`; `approval` (the record's) says how it ended.
async fn decision(
    info: HoldInfo,
    waiting: Waiting,
    why: &str,
    ctx: &ConnCtx,
    approval: &mut Approval,
) -> Result<(), ExchangeError> {
    let timeout = ctx.hold.cfg.timeout;
    let since = Instant::now();
    let mut pending = Pending::new();
    let outcome = waiting.wait(timeout).await;
    approval.waited_ms = since.elapsed().as_secs_f64() * 1e3;
    approval.at = Some(crate::journal::rfc3339(crate::journal::now_ms()));
    match outcome {
        Outcome::Decided(Decision::Approved { by, reason }) => {
            info!(conn = ctx.conn_id, hold = info.id, %by, "hold approved");
            approval.outcome = "approved".into();
            pending.0 = Some("approved");
            approval.by = Some(by);
            approval.reason = reason;
            Ok(())
        }
        Outcome::Decided(Decision::Denied { by, reason }) => {
            approval.outcome = "denied".into();
            pending.0 = Some("denied");
            approval.by = Some(by.clone());
            approval.reason = reason.clone();
            Err(ExchangeError::HoldDenied {
                hold: info.id,
                why: why.to_string(),
                by,
                reason,
            })
        }
        Outcome::TimedOut => {
            approval.outcome = "timed_out".into();
            pending.0 = Some("timed_out");
            Err(ExchangeError::HoldTimedOut {
                hold: info.id,
                why: why.to_string(),
                after: timeout,
            })
        }
    }
}

/// Park the request (its body `body_len` bytes) until it is approved; denied or timed out →
/// the client's error; too many held already → refused at once. When the client hangs up,
/// this future is dropped and the hold withdrawn with it. No key: it joins no other request's
/// hold (a WebSocket message, say).
#[allow(dead_code)] // the WebSocket stage holds its messages with it
pub(super) async fn wait_for_approval(
    held: Held,
    body_len: usize,
    endpoint: &'static str,
    ctx: &ConnCtx,
    ex: &mut Exchange,
) -> Result<(), ExchangeError> {
    wait_keyed(held, None, body_len, endpoint, ctx, ex).await
}

/// [`wait_for_approval`] for a request with a hold key: it may join a pending hold, or take
/// the decision bound to its key.
pub(super) async fn wait_keyed(
    held: Held,
    key: Option<digest::Key>,
    body_len: usize,
    endpoint: &'static str,
    ctx: &ConnCtx,
    ex: &mut Exchange,
) -> Result<(), ExchangeError> {
    match admit(&held, key, body_len, endpoint, ctx, &mut ex.rec.approval)? {
        Admitted::Approved => Ok(()),
        Admitted::Wait { info, waiting, .. } => {
            let approval = ex.rec.approval.as_mut().expect("set by admit");
            decision(info, waiting, &held.why, ctx, approval).await
        }
    }
}

/// What a held stream needs to go on once approved.
pub(super) struct Release {
    pub parts: http::request::Parts,
    pub body: Bytes,
    pub framing: Framing,
    pub scanner: Arc<Scanner>,
    pub found: Option<Found>,
    pub complete: Closed,
}

/// What became of a held streaming request.
pub(super) enum Streamed {
    /// The stream answered now: keepalives, then the answer or the error.
    Answered(Response<RespBody>),
    /// A decision bound to its key approved it: it goes on at once, as it is.
    Go(Release),
}

/// A held streaming request: answered at once with a stream kept alive until it is decided.
pub(super) fn stream(
    held: Held,
    key: digest::Key,
    release: Release,
    endpoint: &'static str,
    ctx: &Arc<ConnCtx>,
    ex: &mut Exchange,
) -> Result<Streamed, ExchangeError> {
    let (info, waiting, joined) = match admit(
        &held,
        Some(key),
        release.body.len(),
        endpoint,
        ctx,
        &mut ex.rec.approval,
    )? {
        Admitted::Approved => return Ok(Streamed::Go(release)),
        Admitted::Wait {
            info,
            waiting,
            joined,
        } => (info, waiting, joined),
    };
    let late: Late = Arc::new(std::sync::Mutex::new(LateFields {
        approval: ex.rec.approval.clone(),
        ..Default::default()
    }));
    let adapter = ctx.provider.adapter();
    let hold_id = info.id;
    let path = release.parts.uri.path().to_string();
    let outcome = {
        let ctx = ctx.clone();
        let late = late.clone();
        let mut approval = ex.rec.approval.clone().expect("set by admit");
        async move {
            let decided = decision(info, waiting, &held.why, &ctx, &mut approval).await;
            if let Ok(mut l) = late.lock() {
                l.approval = Some(approval);
            }
            decided?;
            release_upstream(release, &ctx, &late).await
        }
    };
    info!(
        conn = ctx.conn_id,
        hold = hold_id,
        joined,
        keepalive = %crate::config::dur::format(&ctx.hold.cfg.keepalive),
        "held stream answered at once; keepalives until decided"
    );
    // The first tick is at once: the client has bytes as soon as it has the headers. A
    // client that reads slowly gets its keepalives late, never in a burst.
    let mut tick = tokio::time::interval(ctx.hold.cfg.keepalive);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let body = HeldStream {
        keepalive: adapter.keepalive_event(&path),
        path,
        tick,
        state: State::Waiting(std::sync::Mutex::new(Box::pin(outcome))),
        adapter,
        late: late.clone(),
        conn: ctx.conn_id,
        hold: hold_id,
    };
    let mut resp = Response::new(body.boxed());
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    );
    h.insert("x-gateway-hold", HeaderValue::from(hold_id));
    resp.extensions_mut().insert(late);
    Ok(Streamed::Answered(resp))
}

/// Approved: send the request, and hand back its answer masked; an error status becomes the
/// stream's error event (its body masked, its message kept).
async fn release_upstream(
    r: Release,
    ctx: &ConnCtx,
    late: &Late,
) -> Result<RespBody, ExchangeError> {
    // The journal may have failed while the request waited: nothing goes out unrecorded.
    if let Some(Err(why)) = ctx.journal.as_ref().map(|j| j.ready()) {
        return Err(ExchangeError::JournalUnavailable(why));
    }
    let mut parts = r.parts;
    parts.headers.insert(
        http::header::CONTENT_LENGTH,
        HeaderValue::from(r.body.len()),
    );
    let body = http_body_util::Full::new(r.body)
        .map_err(|n| match n {})
        .boxed();
    let resp = Box::pin(super::forward_upstream(parts, body, ctx)).await?;
    let status = resp.status();
    let masked = super::mask_into(resp, r.framing, ctx, &r.scanner, r.found, r.complete)?;
    if let Ok(mut l) = late.lock() {
        l.status = Some(status.as_u16());
    }
    if status.is_success() {
        return Ok(masked.into_body());
    }
    // The provider's error document: small; a bounded read.
    let mut text = Vec::new();
    let mut body = masked.into_body();
    while text.len() < 64 << 10 {
        match body.frame().await {
            Some(Ok(f)) => {
                if let Some(d) = f.data_ref() {
                    text.extend_from_slice(d);
                }
            }
            Some(Err(_)) | None => break,
        }
    }
    Err(ExchangeError::UpstreamRefused {
        status: status.as_u16(),
        message: error_message(&text),
    })
}

/// The message of a provider's error document (`error.message`, also inside a JSON array, or
/// `message`), else its text, cut to a readable length.
fn error_message(body: &[u8]) -> String {
    let v: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let v = match v {
        Some(serde_json::Value::Array(mut a)) if !a.is_empty() => Some(a.swap_remove(0)),
        v => v,
    };
    let found = v.as_ref().and_then(|v| {
        v.pointer("/error/message")
            .or_else(|| v.get("message"))
            .and_then(|m| m.as_str())
            .map(String::from)
    });
    let text = found.unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
    let mut out: String = text.chars().take(500).collect();
    if out.is_empty() {
        out = "no error message".into();
    }
    out
}

type Decided = Pin<Box<dyn Future<Output = Result<RespBody, ExchangeError>> + Send>>;

enum State {
    /// Waiting for the decision (and, once approved, for the provider's answer head). In a
    /// mutex only to be `Sync` as a response body must be; polled through `get_mut`, never
    /// locked.
    Waiting(std::sync::Mutex<Decided>),
    /// The provider's answer, masked.
    Streaming(RespBody),
    Done,
}

/// A held stream: keepalives until the decision, then the provider's events or an error event.
/// Dropped (the client hung up), it drops the waiting request with it: withdrawn.
struct HeldStream {
    keepalive: Bytes,
    tick: tokio::time::Interval,
    state: State,
    adapter: &'static dyn crate::provider::adapter::Adapter,
    /// The request's path (the adapter shapes its error event by it).
    path: String,
    late: Late,
    conn: u64,
    hold: u64,
}

impl Body for HeldStream {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                State::Waiting(fut) => match fut
                    .get_mut()
                    .unwrap_or_else(|p| p.into_inner())
                    .as_mut()
                    .poll(cx)
                {
                    Poll::Ready(Ok(body)) => this.state = State::Streaming(body),
                    Poll::Ready(Err(e)) => {
                        this.state = State::Done;
                        let (status, label, event) =
                            rescue::stream_error(this.adapter, &this.path, &e);
                        info!(conn = this.conn, hold = this.hold, status = status.as_u16(), error = %e, "held stream ends with an error event");
                        if let Ok(mut l) = this.late.lock() {
                            l.status = Some(status.as_u16());
                            l.gateway_error = label.map(String::from);
                        }
                        return Poll::Ready(Some(Ok(Frame::data(event))));
                    }
                    Poll::Pending => {
                        return match this.tick.poll_tick(cx) {
                            Poll::Ready(_) => {
                                Poll::Ready(Some(Ok(Frame::data(this.keepalive.clone()))))
                            }
                            Poll::Pending => Poll::Pending,
                        };
                    }
                },
                State::Streaming(body) => return Pin::new(body).poll_frame(cx),
                State::Done => return Poll::Ready(None),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.state {
            State::Streaming(b) => b.is_end_stream(),
            State::Done => true,
            State::Waiting(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_of_each_providers_shape() {
        assert_eq!(
            error_message(
                br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#
            ),
            "Overloaded"
        );
        assert_eq!(
            error_message(
                br#"[{"error":{"code":429,"message":"quota","status":"RESOURCE_EXHAUSTED"}}]"#
            ),
            "quota"
        );
        assert_eq!(
            error_message(b"upstream connect error"),
            "upstream connect error"
        );
        assert_eq!(error_message(b""), "no error message");
        assert_eq!(error_message(&[b'x'; 2000]).len(), 500);
    }
}

//! HTTP: serve a terminated provider connection (h2 or HTTP/1.1, as ALPN decided) and pass each
//! request through the stages of DESIGN §1: provider adapter → policy (strip every client
//! credential) → vault key in the provider's place → upstream, streaming both bodies.
//!
//! Errors become responses in one place, [`rescue`], in the provider's own error shape.

pub mod rescue;

use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, Version, header::HOST};
use http_body_util::{BodyExt as _, combinators::BoxBody};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{Instrument as _, debug, debug_span};

use crate::{
    journal::{Approval, Decision, Exchange, body::Found, body::JournalBody},
    policy::{
        credentials,
        scan::{Action, Ctx, Direction, Scanner},
    },
    provider::Provider,
    redirect::{identity::Identity, origdst::OrigDstAddr},
    response::{
        Rewriter,
        body::{Kind, MaskedBody},
    },
    upstream::pool::{BoxError, SendError, Upstreams},
    vault::Vault,
};

pub use rescue::ExchangeError;

pub type RespBody = BoxBody<Bytes, BoxError>;

/// What every request on one intercepted connection shares.
pub struct ConnCtx {
    pub conn_id: u64,
    pub provider: Arc<Provider>,
    pub sni: String,
    pub orig_dst: OrigDstAddr,
    /// Shared with every answer's masker (one per connection, not one copy per request).
    pub identity: Arc<Identity>,
    pub h2: bool,
    pub upstreams: Arc<Upstreams>,
    pub vault: Arc<Vault>,
    pub scanner: Arc<Scanner>,
    pub hold: Arc<crate::hold::HoldService>,
    /// `None` when `journal.enabled = false`.
    pub journal: Option<Arc<crate::journal::Journal>>,
    pub requests: AtomicU64,
    /// HTTP/1.1: the longest a client may take to send a request's headers.
    pub header_read_timeout: std::time::Duration,
}

/// Serve HTTP on a terminated TLS stream until the client is done.
pub async fn serve<IO>(io: IO, ctx: Arc<ConnCtx>) -> Result<(), hyper::Error>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc_ctx = ctx.clone();
    let svc = service_fn(move |req| {
        let ctx = svc_ctx.clone();
        // Boxed: hyper moves the service's future into a task per h2 stream, and the
        // exchange's future is several KiB — moved by value, those copies were ~5% of a
        // request's CPU (perf); boxed, a pointer moves.
        let fut = Box::pin(handle(req, ctx));
        async move { Ok::<_, Infallible>(fut.await) }
    });
    let io = TokioIo::new(io);
    // Each boxed alone: an HTTP/1.1 connection does not carry the size of an h2 one.
    if ctx.h2 {
        Box::pin(
            hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(io, svc),
        )
        .await
    } else {
        Box::pin(
            hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(ctx.header_read_timeout)
                .serve_connection(io, svc),
        )
        .await
    }
}

async fn handle(req: Request<Incoming>, ctx: Arc<ConnCtx>) -> Response<RespBody> {
    let n = ctx.requests.fetch_add(1, Ordering::Relaxed) + 1;
    let adapter = ctx.provider.adapter();
    let endpoint = adapter.endpoint(req.method(), req.uri().path());
    let span = debug_span!("req", conn = ctx.conn_id, n, endpoint);
    let method = req.method().clone();
    // The record of this exchange; written when the answer ends (or by its Drop when the
    // client goes away first).
    let mut ex = Exchange::new(ctx.journal.clone(), &ctx.identity, ctx.conn_id);
    ex.rec.provider = ctx.provider.name.clone();
    ex.rec.api = adapter.name().to_string();
    ex.rec.method = method.to_string();
    ex.rec.endpoint = endpoint.to_string();
    ex.rec.path = req.uri().path().to_string();
    async move {
        let (parts, body) = req.into_parts();
        let mut found = None;
        let (resp, stripped, key_name) = match prepare(parts, &ctx).await {
            Err((e, stripped)) => {
                // Read (a bounded amount of) what the client is still sending, so an h2 client
                // gets our answer rather than a reset of its unfinished stream.
                drain(body).await;
                (rescue::respond(adapter, &e), stripped, None)
            }
            Ok((parts, stripped, key_name)) => {
                match send(parts, body, &ctx, endpoint, &mut ex).await {
                    Ok((resp, f)) => {
                        found = f;
                        (resp, stripped, key_name)
                    }
                    Err(e) => (rescue::respond(adapter, &e), stripped, key_name),
                }
            }
        };
        let gateway_error = resp
            .headers()
            .get("x-gateway-error")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        ex.rec.status = resp.status().as_u16();
        ex.rec.gateway_error = gateway_error;
        ex.rec.key = key_name.clone();
        ex.rec.stripped_headers = stripped.headers;
        ex.rec.stripped_params = stripped.params;
        ex.rec.ttfb_ms = Some(ex.elapsed_ms());
        // Per request at debug: at info, formatting and writing this line cost ~60 µs and a
        // quarter of the throughput (BENCHMARKS.md); the journal records every exchange.
        debug!(
            conn = ctx.conn_id,
            provider = %ctx.provider.name,
            api = adapter.name(),
            %method,
            endpoint,
            status = resp.status().as_u16(),
            stripped_headers = stripped.headers,
            stripped_params = stripped.params,
            key = key_name.as_deref(),
            gateway_error = ex.rec.gateway_error.as_deref(),
            ttfb_ms = ex.rec.ttfb_ms.unwrap_or(0.0) as u64,
            "request"
        );
        let ct = resp
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let text = ct.is_empty() || ct.starts_with("text/") || ct.contains("json");
        let (rp, rb) = resp.into_parts();
        Response::from_parts(rp, JournalBody::new(rb, ex, found, text).boxed())
    }
    .instrument(span)
    .await
}

async fn drain(body: Incoming) {
    let limited = http_body_util::Limited::new(body, 1 << 20);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), limited.collect()).await;
}

/// The request head as it goes upstream, what was stripped from it, and the vault entry's name
/// (`None`: the client presented no credential, so none went in).
type Prepared = (http::request::Parts, credentials::Stripped, Option<String>);

/// Policy and vault on the request head: strip every credential (by name and by value), and
/// only when the client presented one of its own put the vault entry's key (and billing
/// fields) in its place; aim at the SNI.
async fn prepare(
    mut parts: http::request::Parts,
    ctx: &ConnCtx,
) -> Result<Prepared, (ExchangeError, credentials::Stripped)> {
    let adapter = ctx.provider.adapter();
    let stripped =
        credentials::scrub(&mut parts, adapter.credential_params()).map_err(|(e, stripped)| {
            // Loudly, and never with the path: it holds the credential.
            tracing::warn!(conn = ctx.conn_id, provider = %ctx.provider.name, error = %e, "request refused");
            (ExchangeError::BadRequest(e.to_string()), stripped)
        })?;

    // A client's unauthenticated probe or telemetry call stays unauthenticated.
    let key_name = if stripped.presented() {
        let Some(key_name) = ctx.vault.key_name(&ctx.provider, &ctx.identity) else {
            return Err((
                ExchangeError::NoKeyConfigured(ctx.provider.name.clone()),
                stripped,
            ));
        };
        let entry = match ctx.vault.entry(&key_name).await {
            Ok(Some(e)) => e,
            Ok(None) => {
                return Err((
                    ExchangeError::KeyMissing {
                        provider: ctx.provider.name.clone(),
                        key: key_name,
                    },
                    stripped,
                ));
            }
            Err(e) => return Err((ExchangeError::Vault(e.to_string()), stripped)),
        };
        adapter
            .inject_entry(&mut parts.headers, &entry)
            .map_err(|e| (ExchangeError::Vault(e.to_string()), stripped))?;
        drop(entry);
        Some(key_name)
    } else {
        None
    };

    // Always the SNI the client's TLS asked for: the Host header cannot steer the request.
    let pq = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    parts.uri = format!("https://{}{pq}", ctx.sni).parse().map_err(|e| {
        (
            ExchangeError::BadRequest(format!("bad request target: {e}")),
            stripped,
        )
    })?;
    let host = HeaderValue::from_str(&ctx.sni).map_err(|_| {
        (
            ExchangeError::BadRequest("bad server name".into()),
            stripped,
        )
    })?;
    parts.headers.insert(HOST, host);
    parts.version = Version::HTTP_11;
    Ok((parts, stripped, key_name))
}

/// Largest request body the policy stage reads to inspect it.
const MAX_REQUEST: usize = 32 << 20;

/// Stream the request to the provider and its answer back; on inference endpoints the prompt
/// is scanned (mask / block / hold) first and the answer is masked as it streams.
async fn send(
    mut parts: http::request::Parts,
    body: Incoming,
    ctx: &ConnCtx,
    endpoint: &'static str,
    ex: &mut Exchange,
) -> Result<(Response<RespBody>, Option<Found>), ExchangeError> {
    use http_body::Body as _;
    let adapter = ctx.provider.adapter();
    let framing = adapter.framing(parts.uri.path(), parts.uri.query(), &parts.headers);
    // The answer must be readable to be masked.
    if ctx.scanner.any(Direction::Response) {
        parts.headers.insert(
            http::header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
    }
    let hold_cfg = &ctx.hold.cfg;
    let scanned = parts.method == http::Method::POST
        && crate::provider::prompt::SCANNED_ENDPOINTS.contains(&endpoint)
        && (ctx.scanner.any(Direction::Request)
            || !hold_cfg.keywords.is_empty()
            || hold_cfg.max_prompt_tokens.is_some());
    let body = if scanned {
        let raw = http_body_util::Limited::new(body, MAX_REQUEST)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    ExchangeError::TooLarge(MAX_REQUEST)
                } else {
                    ExchangeError::BadRequest(format!("reading the request body: {e}"))
                }
            })?
            .to_bytes();
        let (mut raw, held) = inspect_request(raw, endpoint, ctx, ex)?;
        // What the provider gets (masked), as it gets it.
        ex.request_body(&raw);
        if let Some(held) = held {
            // A hold can last minutes. The body and the header values are slices of hyper's
            // read buffer; copied out, that buffer serves the connection's next reads instead
            // of a second one being allocated beside it (memory per held request).
            raw = Bytes::copy_from_slice(&raw);
            unshare(&mut parts.headers);
            wait_for_approval(held, endpoint, ctx, ex).await?;
        }
        parts
            .headers
            .insert(http::header::CONTENT_LENGTH, HeaderValue::from(raw.len()));
        http_body_util::Full::new(raw)
            .map_err(|n| match n {})
            .boxed()
    } else if body.is_end_stream() {
        // A request that has already ended (a GET, say) goes out as a body the client knows is
        // empty: h2 then ends the stream with the HEADERS frame instead of an extra DATA frame
        // the provider would wait for.
        http_body_util::Empty::<Bytes>::new()
            .map_err(|n| match n {})
            .boxed()
    } else {
        // Counted for the record; its bytes are not kept (nothing inspected them).
        let counter = Arc::new(AtomicU64::new(0));
        ex.streamed_request = Some(counter.clone());
        // Trailers get the same treatment as headers: a credential there is dropped too.
        body.map_frame(move |frame| match frame.into_trailers() {
            Ok(mut trailers) => {
                credentials::strip_headers(&mut trailers);
                http_body::Frame::trailers(trailers)
            }
            Err(frame) => {
                if let Some(d) = frame.data_ref() {
                    counter.fetch_add(d.len() as u64, Ordering::Relaxed);
                }
                frame
            }
        })
        .map_err(|e| Box::new(e) as BoxError)
        .boxed()
    };
    // Boxed: the upstream request's state is large and only needed from here on; a request
    // waiting for approval above then carries a smaller future (memory per held request).
    let resp = Box::pin(forward_upstream(parts, body, ctx)).await?;
    mask_response(resp, framing, ctx, ctx.journal.is_some())
}

/// Header values in buffers of their own (not slices of the connection's read buffer).
fn unshare(headers: &mut http::HeaderMap) {
    for v in headers.values_mut() {
        if let Ok(mut own) = HeaderValue::from_bytes(v.as_bytes()) {
            own.set_sensitive(v.is_sensitive());
            *v = own;
        }
    }
}

/// Scan the prompt text of a request body: block and hold refuse it, mask rewrites it.
/// Why a request must wait, with what the approver sees of it.
struct Held {
    why: String,
    model: Option<String>,
    excerpt: String,
}

/// Longest prompt excerpt an approver (or the webhook) is shown, in characters.
const EXCERPT: usize = 400;

fn inspect_request(
    raw: Bytes,
    endpoint: &'static str,
    ctx: &ConnCtx,
    ex: &mut Exchange,
) -> Result<(Bytes, Option<Held>), ExchangeError> {
    let monitor_only = ctx
        .scanner
        .rules()
        .iter()
        .all(|r| r.action == Action::Monitor);
    let mut v: serde_json::Value = match serde_json::from_slice(&raw) {
        Ok(v) => v,
        Err(_) if monitor_only => return Ok((raw, None)),
        Err(e) => {
            return Err(ExchangeError::Uninspectable(format!(
                "the {endpoint} request body is not valid JSON ({e}), so its prompt cannot be checked"
            )));
        }
    };
    let pointers = ctx.provider.adapter().prompt_pointers(endpoint, &v);
    let model = v.get("model").and_then(|m| m.as_str()).map(String::from);
    ex.rec.model = model.clone();
    let mut texts: Vec<String> = Vec::new();
    let mut changed = false;
    let mut verdict: Option<(Action, usize, &'static str)> = None;
    for p in pointers {
        let Some(serde_json::Value::String(s)) = v.pointer_mut(&p) else {
            continue;
        };
        let (masked, hits) = ctx.scanner.mask(
            s,
            Ctx {
                dir: Direction::Request,
                id: &ctx.identity,
            },
        );
        for h in &hits {
            let action = ctx.scanner.rules()[h.rule].action;
            let rank = |a: Action| match a {
                Action::Block => 2,
                Action::Hold => 1,
                _ => 0,
            };
            if rank(action) > verdict.map_or(0, |v| rank(v.0)) {
                verdict = Some((action, h.rule, h.detector));
            }
            ex.decision(Decision {
                direction: "request".into(),
                rule: ctx.scanner.rules()[h.rule].name.clone(),
                detector: h.detector.into(),
                action: action.as_str().into(),
                count: 1,
            });
            debug!(
                conn = ctx.conn_id,
                rule = %ctx.scanner.rules()[h.rule].name,
                detector = h.detector,
                action = action.as_str(),
                "request rule hit"
            );
        }
        if masked != *s {
            *s = masked;
            changed = true;
        }
        texts.push(s.clone());
    }
    let mut held = None;
    match verdict {
        Some((Action::Block, rule, detector)) => {
            return Err(ExchangeError::Blocked {
                rule: ctx.scanner.rules()[rule].name.clone(),
                detector: detector.to_string(),
            });
        }
        Some((_, rule, detector)) => {
            held = Some(format!(
                "rule `{}` ({detector})",
                ctx.scanner.rules()[rule].name
            ));
        }
        None => {}
    }
    if held.is_none() {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        held = ctx.hold.cfg.trigger(&refs);
    }
    // What an approver sees: the prompt as it would be sent (masked), cut short.
    let held = held.map(|why| Held {
        why,
        model,
        excerpt: texts.join("\n").chars().take(EXCERPT).collect(),
    });
    if !changed {
        return Ok((raw, held));
    }
    let raw = serde_json::to_vec(&v)
        .map(Bytes::from)
        .map_err(|e| ExchangeError::Uninspectable(format!("re-encoding the request: {e}")))?;
    Ok((raw, held))
}

/// Park the request until it is approved; denied or timed out → the client's error. When the
/// client hangs up, this future is dropped and the hold withdrawn with it.
async fn wait_for_approval(
    held: Held,
    endpoint: &'static str,
    ctx: &ConnCtx,
    ex: &mut Exchange,
) -> Result<(), ExchangeError> {
    use crate::hold::{Decision, Outcome};
    let svc = &ctx.hold;
    let timeout = svc.cfg.timeout;
    let (info, waiting) = svc.holds.hold(
        &ctx.identity,
        &ctx.provider.name,
        endpoint,
        held.model,
        held.why.clone(),
        held.excerpt,
        timeout,
    );
    tracing::info!(
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
    let since = Instant::now();
    // Pending until decided; a client that hangs up first withdraws it.
    struct Pending(Option<&'static str>);
    impl Drop for Pending {
        fn drop(&mut self) {
            let m = crate::metrics::get();
            m.holds_pending.dec();
            crate::metrics::inc(&m.holds, self.0.unwrap_or("withdrawn"));
        }
    }
    crate::metrics::inc(&crate::metrics::get().holds, "held");
    crate::metrics::get().holds_pending.inc();
    let mut pending = Pending(None);
    // Until decided, the record says the client went away while waiting.
    ex.rec.approval = Some(Approval {
        hold: info.id,
        why: held.why.clone(),
        outcome: "withdrawn".into(),
        by: None,
        reason: None,
        at: None,
        waited_ms: 0.0,
    });
    let outcome = waiting.wait(timeout).await;
    let waited_ms = since.elapsed().as_secs_f64() * 1e3;
    let approval = ex.rec.approval.as_mut().expect("set above");
    approval.waited_ms = waited_ms;
    approval.at = Some(crate::journal::rfc3339(crate::journal::now_ms()));
    match outcome {
        Outcome::Decided(Decision::Approved { by }) => {
            tracing::info!(conn = ctx.conn_id, hold = info.id, %by, "hold approved");
            approval.outcome = "approved".into();
            pending.0 = Some("approved");
            approval.by = Some(by);
            Ok(())
        }
        Outcome::Decided(Decision::Denied { by, reason }) => {
            approval.outcome = "denied".into();
            pending.0 = Some("denied");
            approval.by = Some(by.clone());
            approval.reason = reason.clone();
            Err(ExchangeError::HoldDenied {
                hold: info.id,
                why: held.why,
                by,
                reason,
            })
        }
        Outcome::TimedOut => {
            approval.outcome = "timed_out".into();
            pending.0 = Some("timed_out");
            Err(ExchangeError::HoldTimedOut {
                hold: info.id,
                why: held.why,
                after: timeout,
            })
        }
    }
}

/// Wrap the provider's answer so its text is masked as it streams.
fn mask_response(
    resp: Response<RespBody>,
    framing: crate::provider::adapter::Framing,
    ctx: &ConnCtx,
    journaled: bool,
) -> Result<(Response<RespBody>, Option<Found>), ExchangeError> {
    if !ctx.scanner.any(Direction::Response) {
        return Ok((resp, None));
    }
    let header = |name| {
        resp.headers()
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase()
    };
    let ct = header(http::header::CONTENT_TYPE);
    let kind = if ct.starts_with("text/event-stream") {
        Kind::Sse
    } else if ct.contains("json") && framing == crate::provider::adapter::Framing::JsonArray {
        Kind::JsonArray
    } else if ct.contains("json") {
        Kind::Json
    } else if ct.starts_with("text/") {
        Kind::Text
    } else {
        // Audio, images, files: no text to mask.
        return Ok((resp, None));
    };
    let ce = header(http::header::CONTENT_ENCODING);
    if !ce.is_empty() && ce != "identity" {
        return Err(ExchangeError::Upstream(format!(
            "the answer came compressed ({ce}) although identity was asked for; it cannot be \
             inspected and was not forwarded"
        )));
    }
    let (mut rp, rb) = resp.into_parts();
    rp.headers.remove(http::header::CONTENT_LENGTH);
    let rw = Rewriter::new(ctx.scanner.clone(), ctx.identity.clone());
    let conn = ctx.conn_id;
    let scanner = ctx.scanner.clone();
    let found: Option<Found> = journaled.then(Default::default);
    let sink = found.clone();
    let on_end: crate::response::body::OnEnd = Box::new(move |hits| {
        let mut sink = sink.as_ref().and_then(|s| s.lock().ok());
        for (rule, detector) in hits {
            let rule = &scanner.rules()[rule];
            debug!(conn, rule = %rule.name, detector, "response rule hit");
            if let Some(sink) = sink.as_mut() {
                sink.push(Decision {
                    direction: "response".into(),
                    rule: rule.name.clone(),
                    detector: detector.into(),
                    // An answer already streaming is masked whatever the rule's action.
                    action: if rule.action == Action::Monitor {
                        "monitor"
                    } else {
                        "mask"
                    }
                    .into(),
                    count: 1,
                });
            }
        }
    });
    Ok((
        Response::from_parts(rp, MaskedBody::new(rb, kind, rw, on_end).boxed()),
        found,
    ))
}

async fn forward_upstream(
    parts: http::request::Parts,
    body: http_body_util::combinators::BoxBody<Bytes, BoxError>,
    ctx: &ConnCtx,
) -> Result<Response<RespBody>, ExchangeError> {
    let resp = ctx
        .upstreams
        .send(
            ctx.orig_dst,
            &ctx.sni,
            ctx.h2,
            Request::from_parts(parts, body),
        )
        .await
        .map_err(|e| match e {
            SendError::Certificate(m) => ExchangeError::UpstreamCertificate(m),
            SendError::Unavailable(m) => ExchangeError::Upstream(m),
        })?;
    let (mut rp, rb) = resp.into_parts();
    for h in credentials::HOP_BY_HOP {
        rp.headers.remove(*h);
    }
    rp.version = Version::default();
    Ok(Response::from_parts(rp, rb))
}

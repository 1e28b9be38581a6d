//! HTTP: serve a terminated provider connection (h2 or HTTP/1.1, as ALPN decided) and pass each
//! request through the stages of DESIGN §1: provider adapter → policy (strip every client
//! credential) → vault key in the provider's place → upstream, streaming both bodies.
//!
//! Errors become responses in one place, [`rescue`], in the provider's own error shape.

mod held;
pub mod rescue;
mod upgrade;

use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, Version, header::HOST};
use http_body_util::{BodyExt as _, combinators::BoxBody};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{Instrument as _, debug, debug_span};

use crate::{
    journal::{
        Decision, Exchange,
        body::{Completion, Found, JournalBody},
    },
    policy::{
        credentials,
        scan::{Ctx, Direction, Effect, Scanner},
    },
    provider::Provider,
    redirect::{identity::Identity, origdst::OrigDstAddr},
    request::RequestError,
    response::{
        Rewriter,
        body::{Kind, MaskedBody},
    },
    upstream::pool::{BoxError, SendError, Upstreams},
    vault::Vault,
};

use held::Held;
#[allow(unused_imports)] // the WebSocket stage holds its messages with it
use held::wait_for_approval;
pub use rescue::ExchangeError;

pub type RespBody = BoxBody<Bytes, BoxError>;

/// Set by the answer's decoder when the provider's closing event has passed.
type Closed = Arc<std::sync::atomic::AtomicBool>;

/// An answer on its way back: the response, where its hits go, and its closing flag.
type Answer = (Response<RespBody>, Option<Found>, Option<Closed>);

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
    pub policy: Arc<crate::policy::Policy>,
    /// `limits.max_request_body`.
    pub max_request_body: usize,
    /// `limits.streams_per_connection`.
    pub max_streams: u32,
    /// `limits.max_ws_message`.
    pub max_ws_message: usize,
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
                .max_concurrent_streams(ctx.max_streams)
                // RFC 8441: WebSocket over h2 (extended CONNECT, `:protocol`).
                .enable_connect_protocol()
                .serve_connection(io, svc),
        )
        .await
    } else {
        Box::pin(
            hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(ctx.header_read_timeout)
                .serve_connection(io, svc)
                // WebSocket sessions (crate::websocket) take the connection over after the 101.
                .with_upgrades(),
        )
        .await
    }
}

async fn handle(req: Request<Incoming>, ctx: Arc<ConnCtx>) -> Response<RespBody> {
    let n = ctx.requests.fetch_add(1, Ordering::Relaxed) + 1;
    let adapter = ctx.provider.adapter();
    // The path is normalised once; the endpoint, the policy and the upstream all see that one.
    let (req, path_error) = normalise_target(req, adapter.encoded_slash_segment());
    let endpoint = adapter.endpoint(
        req.method(),
        &crate::request::path::for_routing(req.uri().path()),
    );
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
    // An upgrade (WebSocket, or anything else, refused) is a session, not a request.
    let up = crate::websocket::classify(&req);
    if up != crate::websocket::Upgrade::None {
        return upgrade::exchange(req, up, path_error, ctx, ex, endpoint)
            .instrument(span)
            .await;
    }
    async move {
        let (parts, body) = req.into_parts();
        let mut found = None;
        let mut completion = None;
        let prepared = match path_error {
            Some(e) => Err((ExchangeError::from(e), credentials::Stripped::default())),
            None => prepare(parts, &ctx).await,
        };
        let (resp, stripped, key_name) = match prepared {
            Err((e, stripped)) => {
                // Read (a bounded amount of) what the client is still sending, so an h2 client
                // gets our answer rather than a reset of its unfinished stream.
                drain(body).await;
                (rescue::respond(adapter, &e), stripped, None)
            }
            Ok((parts, stripped, key_name, entry)) => {
                // The scanner for this exchange: one that knows the key it injects.
                let scanner = match entry
                    .as_ref()
                    .map(|e| ctx.policy.with_key(&adapter.answer_key(e)))
                {
                    None => Ok(ctx.policy.scanner()),
                    Some(r) => r.map_err(|e| ExchangeError::Uninspectable(format!("policy: {e}"))),
                };
                let sent = match scanner {
                    Ok(scanner) => {
                        send(
                            parts,
                            body,
                            &ctx,
                            &scanner,
                            endpoint,
                            entry.as_ref(),
                            &mut ex,
                        )
                        .await
                    }
                    Err(e) => Err(e),
                };
                drop(entry);
                match sent {
                    Ok((resp, f, c)) => {
                        found = f;
                        completion = c;
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
        ex.rec.stripped_headers += stripped.headers;
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
        let event_stream = ct.starts_with("application/vnd.amazon.eventstream");
        let (mut rp, rb) = resp.into_parts();
        let late = rp.extensions.remove::<crate::journal::body::Late>();
        Response::from_parts(
            rp,
            JournalBody::new(rb, ex, found, text, completion.map(Completion::from))
                .event_stream(event_stream)
                .with_late(late)
                .boxed(),
        )
    }
    .instrument(span)
    .await
}

async fn drain(body: Incoming) {
    let limited = http_body_util::Limited::new(body, 1 << 20);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), limited.collect()).await;
}

/// The request head as it goes upstream, what was stripped from it, and the vault entry's name
/// and the entry (`None`: the client presented no credential, so none went in).
type Prepared = (
    http::request::Parts,
    credentials::Stripped,
    Option<String>,
    Option<crate::vault::Entry>,
);

/// Policy and vault on the request head: strip every credential (by name and by value), and
/// only when the client presented one of its own put the vault entry's key (and billing
/// fields) in its place; aim at the SNI.
async fn prepare(
    mut parts: http::request::Parts,
    ctx: &ConnCtx,
) -> Result<Prepared, (ExchangeError, credentials::Stripped)> {
    let adapter = ctx.provider.adapter();
    if let Err(why) = adapter.check_head(&ctx.sni, &parts) {
        tracing::warn!(conn = ctx.conn_id, provider = %ctx.provider.name, error = %why, "request refused");
        let stripped =
            credentials::scrub(&mut parts, adapter.credential_params()).unwrap_or_else(|(_, s)| s);
        return Err((ExchangeError::BadRequest(why), stripped));
    }
    let stripped =
        credentials::scrub(&mut parts, adapter.credential_params()).map_err(|(e, stripped)| {
            // Loudly, and never with the path: it holds the credential.
            tracing::warn!(conn = ctx.conn_id, provider = %ctx.provider.name, error = %e, "request refused");
            (ExchangeError::BadRequest(e.to_string()), stripped)
        })?;
    if let Some(Err(why)) = ctx.journal.as_ref().map(|j| j.ready()) {
        return Err((ExchangeError::JournalUnavailable(why), stripped));
    }

    // A client's unauthenticated probe or telemetry call stays unauthenticated.
    let key_name = if stripped.presented() {
        let Some(key_name) = ctx.vault.key_name(&ctx.provider, &ctx.identity) else {
            return Err((
                ExchangeError::NoKeyConfigured(ctx.provider.name.clone()),
                stripped,
            ));
        };
        let entry = match ctx.vault.credential(&key_name, &ctx.provider).await {
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
            Err(crate::vault::VaultError::Gcp(e)) => {
                // The vault stage logged the mint; this line ties it to the connection.
                tracing::warn!(conn = ctx.conn_id, provider = %ctx.provider.name, key = %key_name, error = %e, "request refused: no access token");
                return Err((ExchangeError::token(key_name, e), stripped));
            }
            Err(e) => return Err((ExchangeError::Vault(e.to_string()), stripped)),
        };
        adapter
            .inject_entry(&mut parts.headers, &entry)
            .map_err(|e| (ExchangeError::Vault(e.to_string()), stripped))?;
        Some((key_name, entry))
    } else {
        None
    };
    let (key_name, key) = key_name.unzip();

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
    Ok((parts, stripped, key_name, key))
}

/// The request with its path normalised ([`crate::request::path`]); a path that cannot be
/// normalised leaves the request as it is, with the error to answer it with.
fn normalise_target(
    req: Request<Incoming>,
    slash_after: Option<&str>,
) -> (Request<Incoming>, Option<crate::request::RequestError>) {
    let path = req.uri().path();
    let norm = match crate::request::path::normalise_with(path, slash_after) {
        Ok(n) => n,
        Err(e) => return (req, Some(e.into())),
    };
    if norm == path {
        return (req, None);
    }
    let (mut parts, body) = req.into_parts();
    let pq = match parts.uri.query() {
        Some(q) => format!("{norm}?{q}"),
        None => norm,
    };
    let mut up = parts.uri.clone().into_parts();
    match pq.parse() {
        Ok(pq) => up.path_and_query = Some(pq),
        Err(_) => {
            return (
                Request::from_parts(parts, body),
                Some(crate::request::path::PathError::BadEscape.into()),
            );
        }
    }
    match http::Uri::from_parts(up) {
        Ok(u) => parts.uri = u,
        Err(_) => {
            return (
                Request::from_parts(parts, body),
                Some(crate::request::path::PathError::BadEscape.into()),
            );
        }
    }
    (Request::from_parts(parts, body), None)
}

/// Stream the request to the provider and its answer back: the request body is read whole and
/// inspected ([`crate::request`]: mask / block / hold) before anything is sent, and the answer
/// is masked as it streams.
async fn send(
    mut parts: http::request::Parts,
    body: Incoming,
    ctx: &Arc<ConnCtx>,
    scanner: &Arc<Scanner>,
    endpoint: &'static str,
    entry: Option<&crate::vault::Entry>,
    ex: &mut Exchange,
) -> Result<Answer, ExchangeError> {
    use http_body::Body as _;
    let adapter = ctx.provider.adapter();
    let framing = adapter.framing(parts.uri.path(), parts.uri.query(), &parts.headers);
    // The answer must be readable to be masked.
    if scanner.any(Direction::Response) {
        parts.headers.insert(
            http::header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
    }
    let hold_cfg = &ctx.hold.cfg;
    let inspected = scanner.any(Direction::Request)
        || !hold_cfg.keywords.is_empty()
        || hold_cfg.max_prompt_tokens.is_some();
    // The body as it goes out, when it is known whole (what a signature covers).
    let mut whole: Option<Bytes> = None;
    let body = if body.is_end_stream() {
        whole = Some(Bytes::new());
        // A request that has already ended (a GET, say) goes out as a body the client knows is
        // empty: h2 then ends the stream with the HEADERS frame instead of an extra DATA frame
        // the provider would wait for.
        parts.headers.remove(http::header::CONTENT_ENCODING);
        http_body_util::Empty::<Bytes>::new()
            .map_err(|n| match n {})
            .boxed()
    } else if inspected || adapter.signs_payload() {
        let max = ctx.max_request_body;
        let collected = http_body_util::Limited::new(body, max)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    ExchangeError::from(RequestError::TooLarge(max))
                } else {
                    ExchangeError::BadRequest(format!("reading the request body: {e}"))
                }
            })?;
        // Trailers are not forwarded: the body goes out whole, with a length. Credentials in
        // them are counted as stripped.
        if let Some(t) = collected.trailers() {
            let mut t = t.clone();
            ex.rec.stripped_headers += credentials::strip_headers(&mut t);
        }
        let raw = collected.to_bytes();
        let (out, held) = inspect_request(raw, &mut parts.headers, scanner, endpoint, ctx, ex)?;
        let mut out = out;
        if let Some(held) = held {
            // A hold can last minutes. The body and the header values are slices of hyper's
            // read buffer; copied out, that buffer serves the connection's next reads instead
            // of a second one being allocated beside it (memory per held request).
            out = Bytes::copy_from_slice(&out);
            unshare(&mut parts.headers);
            let key = held::key_of(&parts, &out, ctx);
            if adapter.held_stream(parts.uri.path(), framing, held.stream) {
                let found: Option<Found> = ctx.journal.is_some().then(Default::default);
                let complete: Closed = Default::default();
                let release = held::Release {
                    parts,
                    body: out,
                    framing,
                    scanner: scanner.clone(),
                    found: found.clone(),
                    complete: complete.clone(),
                };
                match held::stream(held, key, release, endpoint, ctx, ex)? {
                    held::Streamed::Answered(resp) => return Ok((resp, found, Some(complete))),
                    // Approved already (a decision bound to its key): it goes on as it is.
                    held::Streamed::Go(r) => (parts, out) = (r.parts, r.body),
                }
            } else {
                held::wait_keyed(held, Some(key), out.len(), endpoint, ctx, ex).await?;
            }
        }
        parts
            .headers
            .insert(http::header::CONTENT_LENGTH, HeaderValue::from(out.len()));
        whole = Some(out.clone());
        http_body_util::Full::new(out)
            .map_err(|n| match n {})
            .boxed()
    } else {
        // No rule looks at requests: streamed, counted for the record, its bytes not kept.
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
    // The last step before the request leaves, whatever the adapter: its body is final here
    // (masked, approved). Signing APIs sign now.
    sign(adapter, &mut parts, whole.as_deref(), entry, ctx)?;
    // Boxed: the upstream request's state is large and only needed from here on; a request
    // waiting for approval above then carries a smaller future (memory per held request).
    let resp = Box::pin(forward_upstream(parts, body, ctx)).await?;
    mask_response(resp, framing, ctx, scanner, ctx.journal.is_some())
}

/// [`crate::provider::adapter::Adapter::sign`] on the final request. `body`: `None` when it
/// streams (only for adapters that do not sign over the body).
fn sign(
    adapter: &dyn crate::provider::adapter::Adapter,
    parts: &mut http::request::Parts,
    body: Option<&[u8]>,
    entry: Option<&crate::vault::Entry>,
    ctx: &ConnCtx,
) -> Result<(), ExchangeError> {
    use crate::provider::adapter::SignError;
    let body = match body {
        Some(b) => b,
        None if adapter.signs_payload() => {
            return Err(ExchangeError::Uninspectable(
                "the request body was not read whole, so it cannot be signed".into(),
            ));
        }
        None => &[],
    };
    adapter
        .sign(&ctx.sni, parts, body, entry)
        .map_err(|e| {
            tracing::warn!(conn = ctx.conn_id, provider = %ctx.provider.name, error = %e, "request not signed");
            match e {
                SignError::BadRequest(m) => ExchangeError::BadRequest(m),
                SignError::BadEntry(m) => ExchangeError::Vault(m),
            }
        })
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

/// Longest prompt excerpt an approver (or the webhook) is shown, in characters.
const EXCERPT: usize = 400;

/// Decode and scan a request body ([`crate::request`]): block refuses it, hold parks it, mask
/// rewrites it. Returns what goes upstream; the journal gets what people may see.
fn inspect_request(
    raw: Bytes,
    headers: &mut http::HeaderMap,
    scanner: &Scanner,
    endpoint: &'static str,
    ctx: &ConnCtx,
    ex: &mut Exchange,
) -> Result<(Bytes, Option<Held>), ExchangeError> {
    use crate::request::{Inspector, decode};
    let codings = decode::codings(
        headers
            .get_all(http::header::CONTENT_ENCODING)
            .iter()
            .map(|v| v.to_str().map(str::to_string).map_err(|_| ())),
    )?;
    let body = if codings.iter().any(|c| c != "identity") {
        let d = decode::decode(raw.to_vec(), &codings, ctx.max_request_body)?;
        // What goes upstream is what was scanned: the decoded body.
        headers.remove(http::header::CONTENT_ENCODING);
        Bytes::from(d)
    } else {
        headers.remove(http::header::CONTENT_ENCODING);
        raw
    };
    let ct = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let ins = Inspector {
        scanner,
        ctx: Ctx {
            dir: Direction::Request,
            id: &ctx.identity,
        },
        unreadable: ctx.policy.config().unreadable,
    }
    .inspect(&body, &ct)?;
    for h in &ins.hits {
        let rule = &scanner.rules()[h.rule];
        ex.decision(Decision {
            direction: "request".into(),
            rule: rule.name.clone(),
            detector: h.detector.into(),
            action: h.effect.as_str().into(),
            count: 1,
        });
        debug!(
            conn = ctx.conn_id,
            rule = %rule.name,
            detector = h.detector,
            action = h.effect.as_str(),
            "request rule hit"
        );
    }
    let model = ins
        .json
        .as_ref()
        .and_then(|v| v.get("model"))
        .and_then(|m| m.as_str())
        .map(String::from)
        .or_else(|| ctx.provider.adapter().model_in_path(&ex.rec.path));
    ex.rec.model = model.clone();
    let mut held = match ins.verdict() {
        Some(h) if h.effect == Effect::Block => {
            return Err(ExchangeError::Blocked {
                rule: scanner.rules()[h.rule].name.clone(),
                detector: h.detector.to_string(),
            });
        }
        Some(h) if h.effect == Effect::Hold => Some(format!(
            "rule `{}` ({})",
            scanner.rules()[h.rule].name,
            h.detector
        )),
        _ => None,
    };
    // The prompt as the adapter locates it (for the excerpt and the token estimate), in the
    // rendering people may see; every text of the body when the adapter knows no prompt here.
    let prompt: Vec<&str> = match ins.json.as_ref() {
        Some(v) => ctx
            .provider
            .adapter()
            .prompt_pointers(endpoint, v)
            .iter()
            .filter_map(|p| v.pointer(p).and_then(|x| x.as_str()))
            .collect(),
        None => Vec::new(),
    };
    let all: Vec<&str> = ins.texts.iter().map(String::as_str).collect();
    let prompt = if prompt.is_empty() {
        all.clone()
    } else {
        prompt
    };
    if held.is_none() {
        held = ctx.hold.cfg.trigger(&all, &prompt);
    }
    let stream = ins
        .json
        .as_ref()
        .and_then(|v| v.get("stream"))
        .and_then(|s| s.as_bool())
        .unwrap_or(false);
    let held = held.map(|why| Held {
        why,
        model,
        excerpt: prompt.join("\n").chars().take(EXCERPT).collect(),
        stream,
    });
    let forward = match ins.forward {
        Some(f) => Bytes::from(f),
        None => body,
    };
    // What the provider gets, as people may see it (held or blocked hits masked too).
    match &ins.record {
        Some(r) => ex.request_body(r),
        None => ex.request_body(&forward),
    }
    Ok((forward, held))
}

/// Wrap the provider's answer so its text is masked as it streams.
fn mask_response(
    resp: Response<RespBody>,
    framing: crate::provider::adapter::Framing,
    ctx: &ConnCtx,
    scanner: &Arc<Scanner>,
    journaled: bool,
) -> Result<Answer, ExchangeError> {
    if !scanner.any(Direction::Response) {
        return Ok((resp, None, None));
    }
    let found: Option<Found> = journaled.then(Default::default);
    let complete: Closed = Default::default();
    let resp = mask_into(resp, framing, ctx, scanner, found.clone(), complete.clone())?;
    Ok((resp, found, Some(complete)))
}

/// [`mask_response`] with the record's hits going to `found` and the closing event setting
/// `complete` (made before the answer is: a held stream hands them to the journal first).
/// No response rule: the answer as it is.
fn mask_into(
    resp: Response<RespBody>,
    framing: crate::provider::adapter::Framing,
    ctx: &ConnCtx,
    scanner: &Arc<Scanner>,
    found: Option<Found>,
    complete: Closed,
) -> Result<Response<RespBody>, ExchangeError> {
    if !scanner.any(Direction::Response) {
        return Ok(resp);
    }
    let header = |name| {
        resp.headers()
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase()
    };
    let ct = header(http::header::CONTENT_TYPE);
    // What the answer claims only breaks ties; its framing is found from its bytes.
    let kind = if ct.starts_with("text/event-stream")
        || framing == crate::provider::adapter::Framing::Sse
    {
        Kind::SniffSse
    } else if ct.starts_with("application/vnd.amazon.eventstream")
        || framing == crate::provider::adapter::Framing::EventStream
    {
        Kind::SniffEventStream
    } else {
        Kind::Sniff
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
    let header_hits = mask_headers(&mut rp.headers, scanner, &ctx.identity);
    let rw = Rewriter::new(scanner.clone(), ctx.identity.clone());
    let conn = ctx.conn_id;
    let scanner = scanner.clone();
    let sink = found.clone();
    if let Some(f) = &found
        && let Ok(mut f) = f.lock()
    {
        for h in &header_hits {
            f.push(Decision {
                direction: "response".into(),
                rule: scanner.rules()[h.rule].name.clone(),
                detector: h.detector.into(),
                action: h.effect.as_str().into(),
                count: 1,
            });
        }
    }
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
                    // Decided in one place: in answers, block and hold mask.
                    action: rule.action.effect(Direction::Response).as_str().into(),
                    count: 1,
                });
            }
        }
    });
    Ok(Response::from_parts(
        rp,
        MaskedBody::new(rb, kind, rw, on_end)
            .with_completion(complete)
            .boxed(),
    ))
}

/// Scan every response header value: a hit is masked in place (a value that is not text and
/// carries one is removed). The hits, for the record.
fn mask_headers(
    h: &mut http::HeaderMap,
    scanner: &Scanner,
    id: &crate::redirect::identity::Identity,
) -> Vec<crate::policy::scan::Hit> {
    let ctx = Ctx {
        dir: Direction::Response,
        id,
    };
    let mut all = Vec::new();
    let mut drop = Vec::new();
    for (name, v) in h.iter_mut() {
        let hits = scanner.find(v.as_bytes(), 0, ctx);
        if hits.is_empty() {
            continue;
        }
        if hits.iter().any(|x| x.effect != Effect::Record) {
            match v.to_str() {
                Ok(s) => {
                    let masked = scanner.apply(s, &hits, crate::policy::scan::Render::Forward);
                    match HeaderValue::from_str(&masked) {
                        Ok(nv) => *v = nv,
                        Err(_) => drop.push(name.clone()),
                    }
                }
                Err(_) => drop.push(name.clone()),
            }
        }
        all.extend(hits);
    }
    for n in drop {
        h.remove(n);
    }
    all
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

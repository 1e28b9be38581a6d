//! A fake LLM provider on loopback speaking the real wire formats over real TLS, h2 or
//! HTTP/1.1 (as ALPN decides): OpenAI chat completions (JSON and SSE ending in `[DONE]`),
//! OpenAI models list, OpenAI Responses (JSON and typed SSE events), Anthropic messages (JSON
//! and typed SSE events), Gemini generateContent and streamGenerateContent (`alt=sse` and the JSON-array form). Every request is recorded
//! (method, target, version, headers, trailers) for the test to inspect.
//!
//! Scripted mode: a test registers a [`Script`] with [`FakeProvider::script`] and a request
//! naming it in an `x-test-script` header gets exactly that answer (status, headers, body
//! written chunk by chunk), whatever its path, with the credential the fake received spliced in
//! where the script says (`{{CRED}}` and pieces of it), so a test can make a provider echo the
//! injected key.

use std::{
    collections::HashMap,
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};

use crate::{CgroupGuard, Gateway, Opts, fake::TestPki};

/// The `x-test-reply-hex` header value for `reply` (a reply that holds a credential).
pub fn reply_hex(reply: &str) -> String {
    reply.bytes().map(|b| format!("{b:02x}")).collect()
}

/// One request as the provider saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub version: String,
    /// (name, value) in arrival order; names lower case as on the wire for h2, as hyper
    /// normalises them for HTTP/1.1.
    pub headers: Vec<(String, String)>,
    pub trailers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The address the request's TCP connection arrived at (the fake's side).
    pub local: Option<SocketAddr>,
    /// The TLS server name the client sent (None: plain HTTP, or no SNI).
    pub sni: Option<String>,
    /// When the request's head reached the fake (before its body is read): what the fleet
    /// benchmark measures a released hold against.
    pub at: std::time::Instant,
}

/// One TCP connection a fake provider accepted (recorded before any byte is read).
#[derive(Debug, Clone)]
pub struct Conn {
    pub local: SocketAddr,
    pub peer: SocketAddr,
}

impl Seen {
    /// Every value of a header (case-insensitive name).
    pub fn all(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .chain(self.trailers.iter())
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Every credential-bearing header or parameter the provider received.
    pub fn credentials(&self) -> Vec<String> {
        let mut out = Vec::new();
        for n in [
            "authorization",
            "x-api-key",
            "api-key",
            "x-goog-api-key",
            "proxy-authorization",
        ] {
            out.extend(self.all(n).into_iter().map(|v| format!("{n}: {v}")));
        }
        if let Some((_, q)) = self.target.split_once('?') {
            for kv in q.split('&') {
                let k = kv
                    .split_once('=')
                    .map(|(k, _)| k)
                    .unwrap_or(kv)
                    .to_ascii_lowercase();
                if k == "key" || k == "api-key" || k == "api_key" {
                    out.push(format!("?{kv}"));
                }
            }
        }
        out
    }
}

/// For streams that must prove they are not buffered: a request with `x-test-gate` gets its
/// first event at once and the rest only after [`FakeProvider::open_gate`]; if the gateway drops
/// the stream meanwhile, `cancelled` counts it.
#[derive(Default)]
struct Gate {
    notify: tokio::sync::Notify,
    cancelled: std::sync::atomic::AtomicUsize,
    /// The WebSocket sessions and options (`crate::wsfake`), shared like the gate.
    ws: Arc<crate::wsfake::WsState>,
}

/// A scripted answer (see the module doc). In header values and chunks, `{{CRED}}` becomes
/// the credential the request carried (the `Authorization` bearer value, else `x-api-key`,
/// else `x-goog-api-key`, else `?key=`), `{{CRED24}}` its characters 5..29, `{{CRED_A}}` and
/// `{{CRED_B}}` its first and second half.
#[derive(Debug, Clone, Default)]
pub struct Script {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// Written one by one, 5 ms apart.
    pub chunks: Vec<Vec<u8>>,
}

type Scripts = Arc<Mutex<HashMap<String, Script>>>;

pub struct FakeProvider {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    scripts: Scripts,
    conns: Arc<std::sync::atomic::AtomicUsize>,
    conn_log: Arc<Mutex<Vec<Conn>>>,
    gate: Arc<Gate>,
    _rt: tokio::runtime::Runtime,
}

impl FakeProvider {
    pub fn start(addr: SocketAddr, pki: &TestPki) -> Self {
        let (rt, listener, acceptor) =
            crate::fake::tls_server("fake provider", addr, pki, &[b"h2", b"http/1.1"]);
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let scripts: Scripts = Arc::default();
        let gate: Arc<Gate> = Arc::default();
        let conns: Arc<std::sync::atomic::AtomicUsize> = Arc::default();
        let s = seen.clone();
        let sc = scripts.clone();
        let g = gate.clone();
        let c = conns.clone();
        rt.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                // Like a real API front end: no Nagle delay on small writes.
                let _ = tcp.set_nodelay(true);
                c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let acceptor = acceptor.clone();
                let s = s.clone();
                let sc = sc.clone();
                let g = g.clone();
                let local = tcp.local_addr().ok();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let sni = tls.get_ref().1.server_name().map(String::from);
                    let svc = service_fn(move |req| {
                        let s = s.clone();
                        let sc = sc.clone();
                        let g = g.clone();
                        let sni = sni.clone();
                        async move { Ok::<_, Infallible>(answer(req, s, sc, g, local, sni).await) }
                    });
                    let mut builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    builder.http2().enable_connect_protocol();
                    let _ = builder
                        .serve_connection_with_upgrades(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            seen,
            scripts,
            conns,
            conn_log: Arc::default(),
            gate,
            _rt: rt,
        }
    }

    /// One fake on every address of `addrs` (sockets bound by the calling thread, so in its
    /// network namespace), sharing one record. A connection whose first byte is a TLS
    /// handshake record gets TLS (h2 or HTTP/1.1 by ALPN); any other is served as plain
    /// HTTP/1.1, so a client that reaches a plain port directly is seen with its credentials
    /// too. Every TCP connection is recorded before a byte is read ([`Self::conn_log`]).
    pub fn start_many(addrs: &[SocketAddr], pki: &TestPki) -> Self {
        let (rt, first, acceptor) =
            crate::fake::tls_server("fake provider", addrs[0], pki, &[b"h2", b"http/1.1"]);
        let mut listeners = vec![first];
        for a in &addrs[1..] {
            let l = rt
                .block_on(tokio::net::TcpListener::bind(a))
                .unwrap_or_else(|e| panic!("fake provider cannot bind {a}: {e}"));
            listeners.push(l);
        }
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let scripts: Scripts = Arc::default();
        let gate: Arc<Gate> = Arc::default();
        let conns: Arc<std::sync::atomic::AtomicUsize> = Arc::default();
        let conn_log: Arc<Mutex<Vec<Conn>>> = Arc::default();
        for listener in listeners {
            let (s, g, c, log) = (seen.clone(), gate.clone(), conns.clone(), conn_log.clone());
            let sc = scripts.clone();
            let acceptor = acceptor.clone();
            rt.spawn(async move {
                loop {
                    let Ok((tcp, peer)) = listener.accept().await else {
                        continue;
                    };
                    let _ = tcp.set_nodelay(true);
                    let local = tcp.local_addr().expect("local addr");
                    c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    log.lock().unwrap().push(Conn { local, peer });
                    let (acceptor, s, g) = (acceptor.clone(), s.clone(), g.clone());
                    let sc = sc.clone();
                    tokio::spawn(async move {
                        let mut first = [0u8; 1];
                        if !matches!(tcp.peek(&mut first).await, Ok(1)) {
                            return;
                        }
                        let mut builder =
                            hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                        builder.http2().enable_connect_protocol();
                        if first[0] == 0x16 {
                            let Ok(tls) = acceptor.accept(tcp).await else {
                                return;
                            };
                            let sni = tls.get_ref().1.server_name().map(String::from);
                            let svc = service_fn(move |req| {
                                let (s, g, sni) = (s.clone(), g.clone(), sni.clone());
                                let sc = sc.clone();
                                async move {
                                    Ok::<_, Infallible>(
                                        answer(req, s, sc, g, Some(local), sni).await,
                                    )
                                }
                            });
                            let _ = builder
                                .serve_connection_with_upgrades(TokioIo::new(tls), svc)
                                .await;
                        } else {
                            let svc = service_fn(move |req| {
                                let (s, g) = (s.clone(), g.clone());
                                let sc = sc.clone();
                                async move {
                                    Ok::<_, Infallible>(
                                        answer(req, s, sc, g, Some(local), None).await,
                                    )
                                }
                            });
                            let _ = builder
                                .serve_connection_with_upgrades(TokioIo::new(tcp), svc)
                                .await;
                        }
                    });
                }
            });
        }
        Self {
            addr: addrs[0],
            seen,
            scripts,
            conns,
            conn_log,
            gate,
            _rt: rt,
        }
    }

    /// Every TCP connection accepted so far (by [`Self::start_many`] fakes).
    pub fn conn_log(&self) -> Vec<Conn> {
        self.conn_log.lock().unwrap().clone()
    }

    /// Connections accepted so far on `local`.
    pub fn conns_at(&self, local: SocketAddr) -> usize {
        self.conn_log().iter().filter(|c| c.local == local).count()
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Register (or replace) the answer for requests carrying `x-test-script: <name>`.
    pub fn script(&self, name: &str, script: Script) {
        self.scripts
            .lock()
            .unwrap()
            .insert(name.to_string(), script);
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.conns.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Let a gated stream finish.
    pub fn open_gate(&self) {
        self.gate.notify.notify_one();
    }

    /// Open the gate for every gated stream waiting now.
    pub fn open_gate_all(&self) {
        self.gate.notify.notify_waiters();
    }

    /// Every WebSocket upgrade attempt so far (`crate::wsfake`).
    pub fn ws_sessions(&self) -> Vec<crate::wsfake::WsSession> {
        self.gate.ws.sessions()
    }

    /// What the WebSocket side does from now on (`crate::wsfake::WsOptions`).
    pub fn ws_options(&self, o: crate::wsfake::WsOptions) {
        self.gate.ws.set_options(o);
    }

    /// Wait up to `timeout` for `n` finished WebSocket sessions; the sessions either way.
    pub fn wait_ws(&self, n: usize, timeout: std::time::Duration) -> Vec<crate::wsfake::WsSession> {
        self.gate.ws.wait(n, timeout)
    }

    /// Gated streams whose reader went away before the gate opened.
    pub fn cancelled(&self) -> usize {
        self.gate
            .cancelled
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

fn pairs(h: &http::HeaderMap) -> Vec<(String, String)> {
    h.iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn full(status: StatusCode, ctype: &str, body: String) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", ctype)
        .body(Full::new(Bytes::from(body)).boxed())
        .unwrap()
}

/// An SSE body, one write per event, so a proxy that buffers would show.
fn sse(events: Vec<String>) -> Response<Body> {
    let frames = futures_util_stream(events);
    Response::builder()
        .status(200)
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(frames)
        .unwrap()
}

fn futures_util_stream(chunks: Vec<String>) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        for c in chunks {
            if tx.send(Bytes::from(c)).await.is_err() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    });
    http_body_util::StreamBody::new(ReceiverStream(rx)).boxed()
}

struct ReceiverStream(tokio::sync::mpsc::Receiver<Bytes>);

impl futures_core::Stream for ReceiverStream {
    type Item = Result<http_body::Frame<Bytes>, Infallible>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0
            .poll_recv(cx)
            .map(|o| o.map(|b| Ok(http_body::Frame::data(b))))
    }
}

pub const REPLY: &str = "Hello from the fake provider.";

fn gated(events: Vec<String>, gate: Arc<Gate>) -> Response<Body> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        let mut it = events.into_iter();
        if let Some(first) = it.next()
            && tx.send(Bytes::from(first)).await.is_err()
        {
            return;
        }
        tokio::select! {
            _ = gate.notify.notified() => {}
            _ = tx.closed() => {
                gate.cancelled.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return;
            }
        }
        for e in it {
            if tx.send(Bytes::from(e)).await.is_err() {
                return;
            }
        }
    });
    Response::builder()
        .status(200)
        .header("content-type", "text/event-stream")
        .body(http_body_util::StreamBody::new(ReceiverStream(rx)).boxed())
        .unwrap()
}

async fn answer(
    req: Request<Incoming>,
    seen: Arc<Mutex<Vec<Seen>>>,
    scripts: Scripts,
    gate: Arc<Gate>,
    local: Option<SocketAddr>,
    sni: Option<String>,
) -> Response<Body> {
    let at = std::time::Instant::now();
    if crate::wsfake::is_upgrade(&req) {
        return crate::wsfake::accept(req, &gate.ws, local, sni);
    }
    let gated_req = req.headers().contains_key("x-test-gate");
    let (parts, body) = req.into_parts();
    let collected = body.collect().await;
    let (bytes, trailers) = match collected {
        Ok(c) => {
            let t = c.trailers().map(pairs).unwrap_or_default();
            (c.to_bytes().to_vec(), t)
        }
        Err(_) => (Vec::new(), Vec::new()),
    };
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        target: target.clone(),
        version: format!("{:?}", parts.version),
        headers: pairs(&parts.headers),
        trailers,
        body: bytes.clone(),
        local,
        sni,
        at,
    });
    if let Some(name) = parts.headers.get("x-test-script") {
        let name = String::from_utf8_lossy(name.as_bytes()).into_owned();
        let script = scripts.lock().unwrap().get(&name).cloned();
        return match script {
            Some(sc) => scripted(sc, &credential_of(&parts)),
            None => full(
                StatusCode::INTERNAL_SERVER_ERROR,
                "application/json",
                json!({"error": {"message": format!("fake provider: no script {name}")}})
                    .to_string(),
            ),
        };
    }
    let json_body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let stream = json_body["stream"] == true;
    let path = parts.uri.path();
    let query = parts.uri.query().unwrap_or("");
    // Tests choose the answer text and how it is cut into events (policy tests put secrets in
    // it, split across events). A reply holding a credential comes hex-encoded
    // (`x-test-reply-hex`): the gateway removes any header whose value is a credential.
    let hex_reply = parts
        .headers
        .get("x-test-reply-hex")
        .and_then(|v| v.to_str().ok())
        .and_then(|h| {
            (0..h.len())
                .step_by(2)
                .map(|i| h.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
                .collect::<Option<Vec<u8>>>()
        })
        .and_then(|b| String::from_utf8(b).ok());
    let reply: String = hex_reply.unwrap_or_else(|| {
        parts
            .headers
            .get("x-test-reply")
            .and_then(|v| v.to_str().ok())
            .unwrap_or(REPLY)
            .to_string()
    });
    let chunk: Option<usize> = parts
        .headers
        .get("x-test-chunk")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0);
    let words: Vec<String> = match chunk {
        Some(n) => reply
            .chars()
            .collect::<Vec<_>>()
            .chunks(n)
            .map(|c| c.iter().collect())
            .collect(),
        None => reply.split_inclusive(' ').map(String::from).collect(),
    };
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    match path {
        "/v1/models" => full(
            StatusCode::OK,
            "application/json",
            json!({"object": "list", "data": [{"id": "gpt-4o-mini", "object": "model", "created": 1, "owned_by": "fake"}]}).to_string(),
        ),
        "/v1/chat/completions" if stream => {
            let mut ev: Vec<String> = words
                .iter()
                .map(|w| {
                    let c = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini",
                        "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": null}]});
                    format!("data: {c}\n\n")
                })
                .collect();
            let last = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini",
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
            ev.push(format!("data: {last}\n\n"));
            ev.push("data: [DONE]\n\n".into());
            if gated_req { gated(ev, gate) } else { sse(ev) }
        }
        "/v1/chat/completions" => full(
            StatusCode::OK,
            "application/json",
            json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11}})
            .to_string(),
        ),
        "/v1/messages" if stream => {
            let mut ev = vec![
                format!("event: message_start\ndata: {}\n\n", json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x", "content": [], "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 5, "output_tokens": 1}}})),
                format!("event: content_block_start\ndata: {}\n\n", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})),
            ];
            for w in &words {
                ev.push(format!(
                    "event: content_block_delta\ndata: {}\n\n",
                    json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w}})
                ));
            }
            ev.push(format!("event: content_block_stop\ndata: {}\n\n", json!({"type": "content_block_stop", "index": 0})));
            ev.push(format!("event: message_delta\ndata: {}\n\n", json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 6}})));
            ev.push(format!("event: message_stop\ndata: {}\n\n", json!({"type": "message_stop"})));
            sse(ev)
        }
        "/v1/messages" => full(
            StatusCode::OK,
            "application/json",
            json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
                "content": [{"type": "text", "text": reply}], "stop_reason": "end_turn", "stop_sequence": null,
                "usage": {"input_tokens": 5, "output_tokens": 6}})
            .to_string(),
        ),
        "/v1/responses" => {
            // The HTTP Responses API (what Codex falls back to): the WebSocket fake's events.
            let deltas: Vec<String> = words.iter().map(|w| w.to_string()).collect();
            let sse_wanted = stream
                || parts.headers.get("accept").and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/event-stream"));
            if sse_wanted {
                sse(crate::wsfake::responses_sse("http", &json_body, &deltas))
            } else {
                let done = crate::wsfake::responses_events("http", &json_body, &deltas).pop().unwrap_or_default();
                full(StatusCode::OK, "application/json", done["response"].to_string())
            }
        }
        p if p.ends_with(":generateContent") => full(StatusCode::OK, "application/json", gemini_chunk(&reply, true).to_string()),
        p if p.ends_with(":streamGenerateContent") => {
            let n = words.len();
            let chunks: Vec<Value> = words.iter().enumerate().map(|(i, w)| gemini_chunk(w, i + 1 == n)).collect();
            if query.split('&').any(|kv| kv == "alt=sse") {
                sse(chunks.iter().map(|c| format!("data: {c}\r\n\r\n")).collect())
            } else {
                let mut parts = Vec::new();
                for (i, c) in chunks.iter().enumerate() {
                    parts.push(format!("{}{c}", if i == 0 { "[" } else { ",\r\n" }));
                }
                parts.push("]".into());
                let mut r = sse(parts);
                r.headers_mut().insert("content-type", "application/json".parse().unwrap());
                r
            }
        }
        _ => full(
            StatusCode::NOT_FOUND,
            "application/json",
            json!({"error": {"message": format!("fake provider: no route {path}"), "type": "invalid_request_error"}}).to_string(),
        ),
    }
}

/// The credential a request carried, as a scripted answer splices it in.
fn credential_of(parts: &http::request::Parts) -> String {
    credential_of_head(&parts.headers, &parts.uri)
}

/// [`credential_of`] from a request head's headers and URI (the WebSocket fake's upgrade).
pub(crate) fn credential_of_head(headers: &http::HeaderMap, uri: &http::Uri) -> String {
    let h = |n: &str| {
        headers
            .get(n)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    if let Some(a) = h("authorization") {
        return a
            .split_once(' ')
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or(a);
    }
    if let Some(v) = h("x-api-key").or_else(|| h("x-goog-api-key")) {
        return v;
    }
    uri.query()
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("key=").map(String::from))
        .unwrap_or_default()
}

pub(crate) fn splice(text: &[u8], cred: &str) -> Vec<u8> {
    let chars: Vec<char> = cred.chars().collect();
    let piece = |a: usize, b: usize| -> String {
        chars[a.min(chars.len())..b.min(chars.len())]
            .iter()
            .collect()
    };
    let half = chars.len() / 2;
    let subs = [
        ("{{CRED24}}", piece(5, 29)),
        ("{{CRED_A}}", piece(0, half)),
        ("{{CRED_B}}", piece(half, chars.len())),
        ("{{CRED}}", cred.to_string()),
    ];
    let mut out = text.to_vec();
    for (from, to) in subs {
        let (from, to) = (from.as_bytes(), to.as_bytes());
        let mut next = Vec::with_capacity(out.len());
        let mut i = 0;
        while i < out.len() {
            if out[i..].starts_with(from) {
                next.extend_from_slice(to);
                i += from.len();
            } else {
                next.push(out[i]);
                i += 1;
            }
        }
        out = next;
    }
    out
}

fn scripted(sc: Script, cred: &str) -> Response<Body> {
    let mut b = Response::builder().status(sc.status);
    for (k, v) in &sc.headers {
        b = b.header(k.as_str(), splice(v.as_bytes(), cred));
    }
    let chunks: Vec<Bytes> = sc
        .chunks
        .iter()
        .map(|c| Bytes::from(splice(c, cred)))
        .collect();
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        for c in chunks {
            if tx.send(c).await.is_err() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    });
    b.body(http_body_util::StreamBody::new(ReceiverStream(rx)).boxed())
        .unwrap_or_else(|e| {
            full(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                format!("fake provider: bad script: {e}"),
            )
        })
}

fn gemini_chunk(text: &str, last: bool) -> Value {
    let mut cand = json!({"content": {"parts": [{"text": text}], "role": "model"}, "index": 0});
    if last {
        cand["finishReason"] = json!("STOP");
    }
    json!({"candidates": [cand], "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 6, "totalTokenCount": 11}, "modelVersion": "gemini-x"})
}

/// Fake OpenAI, Anthropic and Gemini on `127.<net>.<n>.1/.2/.3:443`, sharing one test PKI.
pub struct Providers {
    pub pki: TestPki,
    pub ips: [String; 3],
    pub openai: FakeProvider,
    pub anthropic: FakeProvider,
    pub gemini: FakeProvider,
}

impl Providers {
    pub fn start(net: u8, n: u32) -> Self {
        let ips = [1, 2, 3].map(|h| format!("127.{net}.{n}.{h}"));
        let pki = TestPki::new(&[
            "api.openai.com",
            "api.anthropic.com",
            "generativelanguage.googleapis.com",
            // For the fake Bedrock beside them (crate::bedrock).
            crate::bedrock::HOST,
        ]);
        let at = |ip: &str| FakeProvider::start(format!("{ip}:443").parse().unwrap(), &pki);
        let (openai, anthropic, gemini) = (at(&ips[0]), at(&ips[1]), at(&ips[2]));
        Self {
            pki,
            ips,
            openai,
            anthropic,
            gemini,
        }
    }

    /// A hosts file naming the fakes with the providers' real host names (for a private mount
    /// namespace: `CgroupGuard::command_with_hosts`).
    pub fn hosts(&self) -> String {
        format!(
            "127.0.0.1 localhost\n{} api.openai.com\n{} api.anthropic.com\n{} generativelanguage.googleapis.com\n",
            self.ips[0], self.ips[1], self.ips[2]
        )
    }

    /// `[[provider]]` entries pointing the built-in providers at the fakes.
    pub fn config(&self) -> String {
        ["openai", "anthropic", "gemini"]
            .iter()
            .zip(&self.ips)
            .map(|(name, ip)| format!("[[provider]]\nname = \"{name}\"\naddrs = [\"{ip}/32\"]\n"))
            .collect()
    }
}

/// The start of every provider suite: a fresh child cgroup, the three fakes on
/// `127.<net>.<n>.0/24`, and a gateway attached to that cgroup with the built-in providers
/// pointed at the fakes (`extra_config` appended), trusting the fakes' CA and holding `keys`.
/// `hosts` names the fakes with the providers' host names (for `command_with_hosts`).
pub struct ProviderEnv {
    pub gw: Gateway,
    pub fakes: Providers,
    pub cg: CgroupGuard,
    /// The gateway's CA certificate: what clients trust.
    pub ca: std::path::PathBuf,
    pub hosts: std::path::PathBuf,
}

impl ProviderEnv {
    pub fn start(prefix: &str, net: u8, extra_config: &str, keys: &[(&str, &str)]) -> Self {
        Self::start_env(prefix, net, extra_config, keys, &[])
    }

    /// As `start`, with environment variables for the daemon.
    pub fn start_env(
        prefix: &str,
        net: u8,
        extra_config: &str,
        keys: &[(&str, &str)],
        env: &[(&str, &str)],
    ) -> Self {
        crate::require_privileges();
        let n = crate::unique();
        let name = format!("{prefix}-{}-{n}", std::process::id());
        let cg = CgroupGuard::new(&name);
        let fakes = Providers::start(net, n);
        let gw = Gateway::start_opts(
            &name,
            &cg.path,
            &format!("{}{extra_config}", fakes.config()),
            &Opts {
                extra_roots: vec![fakes.pki.ca_pem.clone()],
                keys: keys
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                builtin: true,
                env: env
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..Default::default()
            },
        );
        let hosts = gw.dir.path().join("hosts");
        std::fs::write(&hosts, fakes.hosts()).expect("write hosts file");
        let ca = gw.ca_pem();
        Self {
            gw,
            fakes,
            cg,
            ca,
            hosts,
        }
    }
}

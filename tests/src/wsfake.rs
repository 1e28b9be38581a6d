//! WebSocket mode of the fake providers (`provider::FakeProvider`): the upgrade is validated
//! as RFC 6455 §4.2.1 says (GET, HTTP/1.1, `Upgrade: websocket`, `Connection: Upgrade`, a
//! `Sec-WebSocket-Key` of 16 base64 bytes, `Sec-WebSocket-Version: 13`, else 400 / 426), or
//! arrives as an h2 extended CONNECT (RFC 8441, `:protocol websocket`); then the fake speaks,
//! by path:
//!
//! - `/v1/responses`: OpenAI Responses WebSocket mode (as Codex uses it with `OpenAI-Beta:
//!   responses_websockets=...`). Each `{"type":"response.create", ...}` is answered with the
//!   events of the SSE Responses stream, one per text message: `response.created`,
//!   `response.in_progress`, `response.output_item.added`, `response.content_part.added`,
//!   `response.output_text.delta`..., `response.output_text.done`, `response.content_part.done`,
//!   `response.output_item.done`, `response.completed`. `"generate": false` (Codex's prewarm)
//!   gets `response.created` + `response.completed` with no output. `response.processed` and
//!   `response.append` are recorded; an append is answered like a create.
//! - `/v1/realtime?model=...`: OpenAI Realtime. `session.created` on connect; `session.update`
//!   → `session.updated`; `conversation.item.create` → `conversation.item.created`;
//!   `input_audio_buffer.append` is counted (its base64 audio decoded, see
//!   [`WsSession::audio_bytes`]); `input_audio_buffer.commit` → `input_audio_buffer.committed`;
//!   `response.create` → `response.created`, `response.output_item.added`,
//!   `response.content_part.added`, the deltas, their `.done`s, `response.output_item.done`,
//!   `response.done`. Event names follow the client: with `OpenAI-Beta: realtime=v1` the beta
//!   names (`response.text.delta`, `response.audio_transcript.delta`, `response.audio.delta`),
//!   else the GA names (`response.output_text.delta`, `response.output_audio_transcript.delta`,
//!   `response.output_audio.delta`). Text unless the session or the response asks for audio
//!   (`modalities` / `output_modalities` holding `"audio"`): then transcript deltas carry the
//!   text and an audio delta (base64 PCM16 silence) follows each.
//! - `/ws/google.ai.generativelanguage.{v1beta,v1alpha}.GenerativeService.BidiGenerateContent`
//!   (and `...BidiGenerateContentConstrained`): Gemini Live. `{"setup":{...}}` →
//!   `{"setupComplete":{}}`; `clientContent` with `turnComplete`, `realtimeInput` with `text`
//!   or with `audioStreamEnd`/`activityEnd` → `serverContent.modelTurn.parts[].text` chunks,
//!   then `{"serverContent":{"generationComplete":true}}` and `{"serverContent":
//!   {"turnComplete":true}, "usageMetadata":{...}}`. Like the real service it sends JSON in
//!   BINARY frames ([`WsOptions::gemini_text_frames`] switches to text frames).
//!
//! Any other path gets a 404 before the upgrade. Ping is answered with pong; a close frame
//! from the client is recorded and answered.
//!
//! The reply: [`crate::provider::REPLY`] cut in words, as the HTTP fake does; the upgrade
//! request's `x-test-reply` / `x-test-reply-hex` / `x-test-chunk` headers change it for the
//! whole session, and the same names as top-level fields of one client JSON message change it
//! for that message's answer. [`WsOptions::deltas`] gives the exact delta texts instead. In
//! every delta `{{CRED}}`, `{{CRED_A}}`, `{{CRED_B}}`, `{{CRED24}}` become (pieces of) the
//! credential the upgrade carried, as in `provider::Script`, so a test can make a provider echo
//! the injected key split across two events.
//!
//! Misbehaviour for the gateway to catch ([`WsOptions`]): a 101 carrying
//! `Sec-WebSocket-Extensions: permessage-deflate` that the client did not ask for, and one
//! oversized message before the first answer.
//!
//! API: `fake.ws_options(WsOptions {..})` sets the options above (and `refuse`: answer every
//! upgrade with an HTTP status, so a client falls back to HTTPS); `fake.ws_sessions()` lists
//! every upgrade attempt with its request head, each message received and sent, and how it
//! ended; `fake.wait_ws(n, timeout)` waits for `n` finished sessions. [`responses_events`] /
//! [`responses_sse`] build the Responses answer (the HTTP fake's `/v1/responses` uses them
//! too); [`client`] is a Rust WebSocket client over TLS for protocol-level checks.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use base64::Engine as _;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::protocol::{Role, WebSocketConfig},
};

type Body = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

/// What a test makes the WebSocket side of a fake do (all off by default).
#[derive(Debug, Clone, Default)]
pub struct WsOptions {
    /// Answer the upgrade with this `Sec-WebSocket-Extensions` value whatever the client
    /// offered (e.g. `"permessage-deflate"` to a client that offered none).
    pub force_extensions: Option<String>,
    /// Before answering the first client message, send one text message of this many bytes
    /// (a JSON event of the session's protocol with a long text field).
    pub oversize: Option<usize>,
    /// Gemini Live answers in text frames instead of binary ones.
    pub gemini_text_frames: bool,
    /// The exact delta texts of every reply (credential placeholders spliced in).
    pub deltas: Option<Vec<String>>,
    /// Largest message the fake accepts (tungstenite's default, 64 MiB, when None).
    pub max_message: Option<usize>,
    /// Refuse every upgrade with this HTTP status (a front end without WebSocket support), so
    /// a client falls back to HTTPS.
    pub refuse: Option<u16>,
}

/// One message on a session, in either direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsMsg {
    Text(String),
    Binary(Vec<u8>),
}

impl WsMsg {
    /// The message as JSON (text, or binary holding UTF-8 JSON as Gemini Live sends it).
    pub fn json(&self) -> Option<Value> {
        match self {
            WsMsg::Text(t) => serde_json::from_str(t).ok(),
            WsMsg::Binary(b) => serde_json::from_slice(b).ok(),
        }
    }

    /// The `type` field of a JSON message (OpenAI events), or "" when there is none.
    pub fn kind(&self) -> String {
        self.json()
            .and_then(|v| v["type"].as_str().map(str::to_string))
            .unwrap_or_default()
    }

    pub fn is_binary(&self) -> bool {
        matches!(self, WsMsg::Binary(_))
    }
}

/// Which protocol a session speaks (chosen by path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsApi {
    Responses,
    Realtime,
    GeminiLive,
}

/// One WebSocket upgrade attempt as the fake saw it.
#[derive(Debug, Clone)]
pub struct WsSession {
    pub api: Option<WsApi>,
    /// Path and query of the upgrade request.
    pub target: String,
    /// "HTTP/1.1", or "HTTP/2.0" for an extended CONNECT.
    pub version: String,
    /// The upgrade request's headers, (name, value) in arrival order.
    pub headers: Vec<(String, String)>,
    pub sni: Option<String>,
    pub local: Option<SocketAddr>,
    /// Why the upgrade was refused (None: it was answered 101 / 200).
    pub rejected: Option<String>,
    /// Every data message the client sent, in order.
    pub received: Vec<WsMsg>,
    /// Every data message the fake sent, in order.
    pub sent: Vec<WsMsg>,
    /// Decoded bytes of every `input_audio_buffer.append` / Gemini audio chunk received.
    pub audio_bytes: usize,
    /// The client's close frame (code, reason), when one came.
    pub close: Option<(u16, String)>,
    /// Why the session ended on the fake's side when it was not a clean close (read error).
    pub error: Option<String>,
    /// The session is over (closed, errored or refused).
    pub done: bool,
}

impl WsSession {
    /// Every value of a request header (case-insensitive name).
    pub fn header(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Every credential the upgrade carried (headers and query), as `provider::Seen` lists them.
    pub fn credentials(&self) -> Vec<String> {
        crate::provider::Seen {
            method: "GET".into(),
            target: self.target.clone(),
            version: self.version.clone(),
            headers: self.headers.clone(),
            trailers: Vec::new(),
            body: Vec::new(),
            local: self.local,
            sni: self.sni.clone(),
            at: std::time::Instant::now(),
        }
        .credentials()
    }

    /// The text deltas the fake sent, concatenated (what a client should have shown).
    pub fn sent_text(&self) -> String {
        self.sent
            .iter()
            .filter_map(|m| delta_text(&m.json()?))
            .collect()
    }
}

/// The text a server event adds (None for events carrying no delta text).
fn delta_text(v: &Value) -> Option<String> {
    match v["type"].as_str() {
        Some(
            "response.output_text.delta"
            | "response.text.delta"
            | "response.audio_transcript.delta"
            | "response.output_audio_transcript.delta",
        ) => v["delta"].as_str().map(str::to_string),
        _ => {
            let parts = v["serverContent"]["modelTurn"]["parts"].as_array()?;
            Some(parts.iter().filter_map(|p| p["text"].as_str()).collect())
        }
    }
}

/// The WebSocket record and options of one fake provider.
#[derive(Default)]
pub struct WsState {
    sessions: Mutex<Vec<WsSession>>,
    options: Mutex<WsOptions>,
}

impl WsState {
    pub fn sessions(&self) -> Vec<WsSession> {
        self.sessions.lock().unwrap().clone()
    }

    pub fn set_options(&self, o: WsOptions) {
        *self.options.lock().unwrap() = o;
    }

    /// Wait until at least `n` sessions are done; the sessions so far either way.
    pub fn wait(&self, n: usize, timeout: Duration) -> Vec<WsSession> {
        let end = Instant::now() + timeout;
        loop {
            let s = self.sessions();
            if s.iter().filter(|s| s.done).count() >= n || Instant::now() > end {
                return s;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn push(&self, s: WsSession) -> usize {
        let mut all = self.sessions.lock().unwrap();
        all.push(s);
        all.len() - 1
    }

    fn update(&self, i: usize, f: impl FnOnce(&mut WsSession)) {
        if let Some(s) = self.sessions.lock().unwrap().get_mut(i) {
            f(s);
        }
    }
}

fn header<'a>(h: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// Comma-separated tokens of every value of `name`, lower case.
fn tokens(h: &http::HeaderMap, name: &str) -> Vec<String> {
    h.get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect()
}

/// Does this request ask for a WebSocket (HTTP/1.1 upgrade or h2 extended CONNECT)? A request
/// that says `Upgrade: websocket` but is malformed still counts: [`accept`] refuses it.
pub fn is_upgrade(req: &Request<Incoming>) -> bool {
    if req.method() == http::Method::CONNECT {
        return req
            .extensions()
            .get::<hyper::ext::Protocol>()
            .is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"));
    }
    tokens(req.headers(), "upgrade")
        .iter()
        .any(|t| t == "websocket")
}

fn api_of(path: &str) -> Option<WsApi> {
    match path {
        "/v1/responses" => Some(WsApi::Responses),
        "/v1/realtime" => Some(WsApi::Realtime),
        p if p.starts_with("/ws/google.ai.generativelanguage.")
            && (p.ends_with(".GenerativeService.BidiGenerateContent")
                || p.ends_with(".GenerativeService.BidiGenerateContentConstrained")) =>
        {
            Some(WsApi::GeminiLive)
        }
        _ => None,
    }
}

/// RFC 6455 §4.2.1 for an HTTP/1.1 upgrade: the `Sec-WebSocket-Accept` value, or why not
/// (status, reason).
fn validate_h1(req: &Request<Incoming>) -> Result<String, (StatusCode, String)> {
    let bad = |why: &str| Err((StatusCode::BAD_REQUEST, why.to_string()));
    if req.method() != http::Method::GET {
        return bad("a WebSocket upgrade must be a GET");
    }
    if req.version() != http::Version::HTTP_11 {
        return bad("a WebSocket upgrade needs HTTP/1.1");
    }
    let h = req.headers();
    if !h.contains_key(http::header::HOST) {
        return bad("no Host header");
    }
    if !tokens(h, "connection").iter().any(|t| t == "upgrade") {
        return bad("Connection does not hold the upgrade token");
    }
    if header(h, "sec-websocket-version").map(str::trim) != Some("13") {
        return Err((
            StatusCode::UPGRADE_REQUIRED,
            "Sec-WebSocket-Version must be 13".into(),
        ));
    }
    let Some(key) = header(h, "sec-websocket-key").map(str::trim) else {
        return bad("no Sec-WebSocket-Key");
    };
    match base64::engine::general_purpose::STANDARD.decode(key) {
        Ok(k) if k.len() == 16 => {}
        _ => return bad("Sec-WebSocket-Key is not 16 bytes in base64"),
    }
    Ok(tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes()))
}

fn refuse(status: StatusCode, why: &str) -> Response<Body> {
    let mut r = Response::builder()
        .status(status)
        .header("content-type", "application/json");
    if status == StatusCode::UPGRADE_REQUIRED {
        r = r.header("sec-websocket-version", "13");
    }
    r.body(
        Full::new(Bytes::from(
            json!({"error": {"message": format!("fake provider: {why}"), "type": "invalid_request_error"}})
                .to_string(),
        ))
        .boxed(),
    )
    .unwrap()
}

/// Answer a WebSocket request (see the module doc): 101 (200 for h2) and the session runs on
/// its own task, or a refusal. Every attempt is recorded in `state`.
pub fn accept(
    mut req: Request<Incoming>,
    state: &Arc<WsState>,
    local: Option<SocketAddr>,
    sni: Option<String>,
) -> Response<Body> {
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let api = api_of(req.uri().path());
    let h2 = req.version() == http::Version::HTTP_2;
    let mut session = WsSession {
        api,
        target,
        version: format!("{:?}", req.version()),
        headers: req
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        sni,
        local,
        rejected: None,
        received: Vec::new(),
        sent: Vec::new(),
        audio_bytes: 0,
        close: None,
        error: None,
        done: false,
    };
    let refused = state.options.lock().unwrap().refuse;
    if let Some(status) = refused.and_then(|s| StatusCode::from_u16(s).ok()) {
        session.rejected = Some(format!("refused with {status} (WsOptions::refuse)"));
        session.done = true;
        state.push(session);
        return refuse(status, "WebSocket upgrades are refused here");
    }
    let accept_key = if h2 {
        Ok(None)
    } else {
        validate_h1(&req).map(Some)
    };
    let checked = accept_key.and_then(|k| match api {
        Some(api) => Ok((k, api)),
        None => Err((
            StatusCode::NOT_FOUND,
            format!("no WebSocket route {}", req.uri().path()),
        )),
    });
    let (accept_key, api) = match checked {
        Ok(v) => v,
        Err((status, why)) => {
            session.rejected = Some(why.clone());
            session.done = true;
            state.push(session);
            return refuse(status, &why);
        }
    };
    let options = state.options.lock().unwrap().clone();
    let force_extensions = options.force_extensions.clone();
    let script = Script::from_headers(req.headers(), &options);
    let cred = crate::provider::credential_of_head(req.headers(), req.uri());
    let beta_realtime = tokens(req.headers(), "openai-beta")
        .iter()
        .any(|t| t.starts_with("realtime="));
    // A browser-style Realtime client offers subprotocols ("realtime", plus one carrying
    // the key): the server picks "realtime".
    let subprotocol = tokens(req.headers(), "sec-websocket-protocol")
        .into_iter()
        .find(|p| p == "realtime");
    let upgrade = hyper::upgrade::on(&mut req);
    let index = state.push(session);
    let st = state.clone();
    tokio::spawn(async move {
        let io = match upgrade.await {
            Ok(u) => TokioIo::new(u),
            Err(e) => {
                st.update(index, |s| {
                    s.error = Some(format!("upgrade: {e}"));
                    s.done = true;
                });
                return;
            }
        };
        let mut cfg = WebSocketConfig::default();
        if let Some(m) = options.max_message {
            cfg = cfg.max_message_size(Some(m)).max_frame_size(Some(m));
        }
        let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(cfg)).await;
        let mut run = session::Run {
            ws,
            st: st.clone(),
            index,
            api,
            script,
            cred,
            options,
            beta_realtime,
            oversize_sent: false,
            seq: 0,
            responses: 0,
            audio_out: false,
        };
        run.serve().await;
        st.update(index, |s| s.done = true);
    });
    let mut r = Response::builder();
    if h2 {
        r = r.status(StatusCode::OK);
    } else {
        r = r
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("upgrade", "websocket")
            .header("connection", "Upgrade")
            .header("sec-websocket-accept", accept_key.unwrap_or_default());
    }
    if let Some(p) = subprotocol {
        r = r.header("sec-websocket-protocol", p);
    }
    if let Some(ext) = force_extensions {
        r = r.header("sec-websocket-extensions", ext);
    }
    r.body(Full::new(Bytes::new()).boxed()).unwrap()
}

/// How the reply text is cut into deltas.
#[derive(Debug, Clone)]
struct Script {
    reply: String,
    chunk: Option<usize>,
    deltas: Option<Vec<String>>,
}

fn unhex(h: &str) -> Option<String> {
    let b = (0..h.len())
        .step_by(2)
        .map(|i| h.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(b).ok()
}

impl Script {
    fn from_headers(h: &http::HeaderMap, o: &WsOptions) -> Self {
        let reply = header(h, "x-test-reply-hex")
            .and_then(unhex)
            .or_else(|| header(h, "x-test-reply").map(str::to_string))
            .unwrap_or_else(|| crate::provider::REPLY.to_string());
        Self {
            reply,
            chunk: header(h, "x-test-chunk")
                .and_then(|v| v.parse().ok())
                .filter(|n| *n > 0),
            deltas: o.deltas.clone(),
        }
    }

    /// This session's script, overridden by top-level `x-test-*` fields of one message.
    fn for_message(&self, m: &Value) -> Self {
        let mut s = self.clone();
        if let Some(r) = m["x-test-reply-hex"].as_str().and_then(unhex) {
            s.reply = r;
            s.deltas = None;
        } else if let Some(r) = m["x-test-reply"].as_str() {
            s.reply = r.to_string();
            s.deltas = None;
        }
        if let Some(n) = m["x-test-chunk"].as_u64().filter(|n| *n > 0) {
            s.chunk = Some(n as usize);
        }
        s
    }

    fn deltas(&self, cred: &str) -> Vec<String> {
        let raw: Vec<String> = match (&self.deltas, self.chunk) {
            (Some(d), _) => d.clone(),
            (None, Some(n)) => self
                .reply
                .chars()
                .collect::<Vec<_>>()
                .chunks(n)
                .map(|c| c.iter().collect())
                .collect(),
            (None, None) => self.reply.split_inclusive(' ').map(String::from).collect(),
        };
        raw.iter()
            .map(|d| {
                String::from_utf8_lossy(&crate::provider::splice(d.as_bytes(), cred)).into_owned()
            })
            .collect()
    }
}

mod client;
mod session;
pub use client::{ClientWs, client};
pub use session::{responses_events, responses_sse};

#[cfg(test)]
mod tests;

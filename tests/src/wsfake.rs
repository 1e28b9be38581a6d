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
//! API: `fake.ws_options(WsOptions {..})`, then `fake.ws_sessions()` lists every upgrade
//! attempt with its request head, each message received and sent, and how it ended;
//! `fake.wait_ws(n, timeout)` waits for `n` finished sessions.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use base64::Engine as _;
use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{
        Message,
        protocol::{Role, WebSocketConfig},
    },
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
        let mut run = Run {
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

type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// One running session.
struct Run {
    ws: Ws,
    st: Arc<WsState>,
    index: usize,
    api: WsApi,
    script: Script,
    cred: String,
    options: WsOptions,
    beta_realtime: bool,
    oversize_sent: bool,
    seq: u64,
    responses: u64,
    /// Realtime: the session asked for audio output.
    audio_out: bool,
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Run {
    async fn serve(&mut self) {
        if self.api == WsApi::Realtime {
            let created = json!({"type": "session.created", "event_id": self.event_id(),
                "session": self.realtime_session()});
            if self.send(created).await.is_err() {
                return;
            }
        }
        while let Some(msg) = self.ws.next().await {
            let msg = match msg {
                Ok(Message::Text(t)) => WsMsg::Text(t.to_string()),
                Ok(Message::Binary(b)) => WsMsg::Binary(b.to_vec()),
                Ok(Message::Close(frame)) => {
                    let c = frame.map(|f| (u16::from(f.code), f.reason.to_string()));
                    self.st
                        .update(self.index, |s| s.close = c.or(Some((1005, String::new()))));
                    // tungstenite answers the close; drain until the stream ends.
                    continue;
                }
                Ok(_) => continue,
                Err(e) => {
                    self.st
                        .update(self.index, |s| s.error = Some(e.to_string()));
                    return;
                }
            };
            self.st.update(self.index, |s| s.received.push(msg.clone()));
            let Some(v) = msg.json() else {
                let e = self.error_event("the message is not JSON");
                let _ = self.send(e).await;
                continue;
            };
            if !self.oversize_sent
                && let Some(n) = self.options.oversize
            {
                self.oversize_sent = true;
                let big = self.oversized(n);
                if self.send(big).await.is_err() {
                    return;
                }
            }
            let r = match self.api {
                WsApi::Responses => self.responses(&v).await,
                WsApi::Realtime => self.realtime(&v).await,
                WsApi::GeminiLive => self.gemini(&v).await,
            };
            if r.is_err() {
                return;
            }
        }
    }

    async fn send(&mut self, v: Value) -> Result<(), ()> {
        let text = v.to_string();
        let (msg, rec) = if self.api == WsApi::GeminiLive && !self.options.gemini_text_frames {
            (
                Message::Binary(Bytes::from(text.clone().into_bytes())),
                WsMsg::Binary(text.into_bytes()),
            )
        } else {
            (Message::Text(text.clone().into()), WsMsg::Text(text))
        };
        match self.ws.send(msg).await {
            Ok(()) => {
                self.st.update(self.index, |s| s.sent.push(rec));
                Ok(())
            }
            Err(e) => {
                self.st
                    .update(self.index, |s| s.error = Some(format!("send: {e}")));
                Err(())
            }
        }
    }

    fn event_id(&mut self) -> String {
        self.seq += 1;
        format!("event_{}", self.seq)
    }

    fn error_event(&mut self, why: &str) -> Value {
        match self.api {
            WsApi::GeminiLive => {
                json!({"error": {"code": 400, "message": why, "status": "INVALID_ARGUMENT"}})
            }
            WsApi::Responses => json!({"type": "error", "status": 400,
                "error": {"type": "invalid_request_error", "code": "invalid_request", "message": why}}),
            WsApi::Realtime => json!({"type": "error", "event_id": self.event_id(),
                "error": {"type": "invalid_request_error", "code": "invalid_event", "message": why, "param": null, "event_id": null}}),
        }
    }

    fn oversized(&mut self, n: usize) -> Value {
        let filler = "x".repeat(n);
        match self.api {
            WsApi::GeminiLive => {
                json!({"serverContent": {"modelTurn": {"parts": [{"text": filler}]}}})
            }
            WsApi::Responses => {
                json!({"type": "response.output_text.delta", "item_id": "msg_oversize",
                "output_index": 0, "content_index": 0, "delta": filler, "sequence_number": 0})
            }
            WsApi::Realtime => {
                json!({"type": "response.output_text.delta", "event_id": self.event_id(),
                "response_id": "resp_oversize", "item_id": "item_oversize", "output_index": 0,
                "content_index": 0, "delta": filler})
            }
        }
    }

    // ---- OpenAI Responses WebSocket mode -------------------------------------------------

    async fn responses(&mut self, m: &Value) -> Result<(), ()> {
        match m["type"].as_str() {
            Some("response.create" | "response.append") => {}
            Some("response.processed") => return Ok(()),
            _ => {
                let e = self.error_event("unknown event type (want response.create)");
                return self.send(e).await;
            }
        }
        self.responses += 1;
        let id = format!("{}_{}", self.index, self.responses);
        let deltas = self.script.for_message(m).deltas(&self.cred);
        for e in responses_events(&id, m, &deltas) {
            self.send(e).await?;
        }
        Ok(())
    }

    // ---- OpenAI Realtime ----------------------------------------------------------------

    fn realtime_session(&self) -> Value {
        let modalities = if self.audio_out {
            json!(["audio"])
        } else {
            json!(["text"])
        };
        let mut s = json!({"id": format!("sess_fake_{}", self.index), "object": "realtime.session",
            "model": "gpt-realtime", "instructions": "", "voice": "alloy",
            "input_audio_format": "pcm16", "output_audio_format": "pcm16", "tools": []});
        if self.beta_realtime {
            s["modalities"] = modalities;
        } else {
            s["type"] = json!("realtime");
            s["output_modalities"] = modalities;
        }
        s
    }

    fn wants_audio(v: &Value) -> Option<bool> {
        let m = v.get("output_modalities").or_else(|| v.get("modalities"))?;
        Some(m.as_array()?.iter().any(|x| x.as_str() == Some("audio")))
    }

    async fn realtime(&mut self, m: &Value) -> Result<(), ()> {
        let kind = m["type"].as_str().unwrap_or("").to_string();
        match kind.as_str() {
            "session.update" => {
                if let Some(a) = Self::wants_audio(&m["session"]) {
                    self.audio_out = a;
                }
                let e = json!({"type": "session.updated", "event_id": self.event_id(),
                    "session": self.realtime_session()});
                self.send(e).await
            }
            "conversation.item.create" => {
                let mut item = m["item"].clone();
                if item.get("id").is_none() {
                    item["id"] = json!(format!("item_fake_{}", self.seq));
                }
                item["status"] = json!("completed");
                let e = json!({"type": "conversation.item.created", "event_id": self.event_id(),
                    "previous_item_id": null, "item": item});
                self.send(e).await
            }
            "input_audio_buffer.append" => {
                let n = m["audio"]
                    .as_str()
                    .and_then(|a| base64::engine::general_purpose::STANDARD.decode(a).ok())
                    .map(|b| b.len())
                    .unwrap_or(0);
                self.st.update(self.index, |s| s.audio_bytes += n);
                Ok(())
            }
            "input_audio_buffer.commit" => {
                let e = json!({"type": "input_audio_buffer.committed", "event_id": self.event_id(),
                    "previous_item_id": null, "item_id": format!("item_audio_{}", self.seq)});
                self.send(e).await
            }
            "input_audio_buffer.clear" => {
                let e = json!({"type": "input_audio_buffer.cleared", "event_id": self.event_id()});
                self.send(e).await
            }
            "response.create" => self.realtime_response(m).await,
            "response.cancel" => Ok(()),
            _ => {
                let e = self.error_event(&format!("unknown event type {kind:?}"));
                self.send(e).await
            }
        }
    }

    async fn realtime_response(&mut self, m: &Value) -> Result<(), ()> {
        self.responses += 1;
        let n = self.responses;
        let rid = format!("resp_fake_{}_{n}", self.index);
        let iid = format!("item_fake_{}_{n}", self.index);
        let audio = Self::wants_audio(&m["response"]).unwrap_or(self.audio_out);
        let beta = self.beta_realtime;
        let (delta_kind, done_kind, part_type) = match (audio, beta) {
            (false, true) => ("response.text.delta", "response.text.done", "text"),
            (false, false) => (
                "response.output_text.delta",
                "response.output_text.done",
                "text",
            ),
            (true, true) => (
                "response.audio_transcript.delta",
                "response.audio_transcript.done",
                "audio",
            ),
            (true, false) => (
                "response.output_audio_transcript.delta",
                "response.output_audio_transcript.done",
                "audio",
            ),
        };
        let audio_delta_kind = if beta {
            "response.audio.delta"
        } else {
            "response.output_audio.delta"
        };
        let audio_done_kind = if beta {
            "response.audio.done"
        } else {
            "response.output_audio.done"
        };
        let status = |s: &str, output: Value| {
            json!({"object": "realtime.response", "id": rid, "status": s, "status_details": null,
                "output": output, "usage": null, "metadata": m["response"]["metadata"]})
        };
        let e = json!({"type": "response.created", "event_id": self.event_id(),
            "response": status("in_progress", json!([]))});
        self.send(e).await?;
        let e = json!({"type": "response.output_item.added", "event_id": self.event_id(), "response_id": rid,
            "output_index": 0, "item": {"id": iid, "object": "realtime.item", "type": "message",
            "status": "in_progress", "role": "assistant", "content": []}});
        self.send(e).await?;
        let empty_part = if audio {
            json!({"type": part_type, "transcript": ""})
        } else {
            json!({"type": part_type, "text": ""})
        };
        let e = json!({"type": "response.content_part.added", "event_id": self.event_id(), "response_id": rid,
            "item_id": iid, "output_index": 0, "content_index": 0, "part": empty_part});
        self.send(e).await?;
        let deltas = self.script.for_message(m).deltas(&self.cred);
        let full: String = deltas.concat();
        // 10 ms of PCM16 silence at 24 kHz per audio delta.
        let silence = base64::engine::general_purpose::STANDARD.encode(vec![0u8; 480]);
        for d in &deltas {
            let e = json!({"type": delta_kind, "event_id": self.event_id(), "response_id": rid,
                "item_id": iid, "output_index": 0, "content_index": 0, "delta": d});
            self.send(e).await?;
            if audio {
                let e = json!({"type": audio_delta_kind, "event_id": self.event_id(), "response_id": rid,
                    "item_id": iid, "output_index": 0, "content_index": 0, "delta": silence});
                self.send(e).await?;
            }
        }
        if audio {
            let e = json!({"type": audio_done_kind, "event_id": self.event_id(), "response_id": rid,
                "item_id": iid, "output_index": 0, "content_index": 0});
            self.send(e).await?;
        }
        let text_field = if audio { "transcript" } else { "text" };
        let mut e = json!({"type": done_kind, "event_id": self.event_id(), "response_id": rid,
            "item_id": iid, "output_index": 0, "content_index": 0});
        e[text_field] = json!(full);
        self.send(e).await?;
        let mut part = json!({"type": part_type});
        part[text_field] = json!(full);
        let e = json!({"type": "response.content_part.done", "event_id": self.event_id(), "response_id": rid,
            "item_id": iid, "output_index": 0, "content_index": 0, "part": part});
        self.send(e).await?;
        let item = json!({"id": iid, "object": "realtime.item", "type": "message", "status": "completed",
            "role": "assistant", "content": [part]});
        let e = json!({"type": "response.output_item.done", "event_id": self.event_id(), "response_id": rid,
            "output_index": 0, "item": item});
        self.send(e).await?;
        let mut done = status("completed", json!([item]));
        done["usage"] = json!({"total_tokens": 11, "input_tokens": 5, "output_tokens": 6});
        let e = json!({"type": "response.done", "event_id": self.event_id(), "response": done});
        self.send(e).await
    }

    // ---- Gemini Live --------------------------------------------------------------------

    async fn gemini(&mut self, m: &Value) -> Result<(), ()> {
        if m.get("setup").is_some() {
            return self.send(json!({"setupComplete": {}})).await;
        }
        let answer = if let Some(c) = m.get("clientContent") {
            c["turnComplete"] == json!(true)
        } else if let Some(r) = m.get("realtimeInput") {
            let mut n = 0;
            let chunks = r["mediaChunks"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .chain(r.get("audio").cloned());
            for c in chunks {
                if let Some(d) = c["data"].as_str()
                    && let Ok(b) = base64::engine::general_purpose::STANDARD.decode(d)
                {
                    n += b.len();
                }
            }
            self.st.update(self.index, |s| s.audio_bytes += n);
            r.get("text").is_some()
                || r["audioStreamEnd"] == json!(true)
                || r.get("activityEnd").is_some()
        } else if m.get("toolResponse").is_some() {
            false
        } else {
            let e = self.error_event("unknown message (want setup, clientContent, realtimeInput)");
            return self.send(e).await;
        };
        if !answer {
            return Ok(());
        }
        for d in self.script.for_message(m).deltas(&self.cred) {
            self.send(
                json!({"serverContent": {"modelTurn": {"role": "model", "parts": [{"text": d}]}}}),
            )
            .await?;
        }
        self.send(json!({"serverContent": {"generationComplete": true}}))
            .await?;
        self.send(json!({"serverContent": {"turnComplete": true},
            "usageMetadata": {"promptTokenCount": 5, "responseTokenCount": 6, "totalTokenCount": 11}}))
            .await
    }
}

#[cfg(test)]
mod tests;

/// The events of one Responses API answer to the request `m` (a `response.create` message or
/// an HTTP request body): `response.created`, `response.in_progress`, the message item with
/// one `response.output_text.delta` per delta, the `.done`s and `response.completed`, with
/// `sequence_number`s from 0. `"generate": false` (a prewarm) gets only `response.created`
/// and `response.completed` with no output. `id` makes the response and item ids.
pub fn responses_events(id: &str, m: &Value, deltas: &[String]) -> Vec<Value> {
    let rid = format!("resp_fake_{id}");
    let item_id = format!("msg_fake_{id}");
    let model = m["model"].as_str().unwrap_or("gpt-fake").to_string();
    let response = |status: &str, output: Value, usage: Value| {
        json!({"id": rid, "object": "response", "created_at": now(), "status": status,
            "error": null, "incomplete_details": null, "model": model, "output": output,
            "parallel_tool_calls": true, "previous_response_id": m["previous_response_id"],
            "store": false, "text": {"format": {"type": "text"}}, "tool_choice": "auto",
            "tools": [], "usage": usage, "metadata": {}})
    };
    let usage = |i: u64, o: u64| {
        json!({"input_tokens": i, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": o, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": i + o})
    };
    let mut out = vec![json!({"type": "response.created",
        "response": response("in_progress", json!([]), Value::Null)})];
    if m["generate"] == json!(false) {
        out.push(json!({"type": "response.completed",
            "response": response("completed", json!([]), usage(0, 0))}));
    } else {
        let full: String = deltas.concat();
        let part = json!({"type": "output_text", "text": full, "annotations": []});
        let item = json!({"id": item_id, "type": "message", "status": "completed",
            "role": "assistant", "content": [part]});
        out.push(json!({"type": "response.in_progress",
            "response": response("in_progress", json!([]), Value::Null)}));
        out.push(
            json!({"type": "response.output_item.added", "output_index": 0,
            "item": {"id": item_id, "type": "message", "status": "in_progress",
                "role": "assistant", "content": []}}),
        );
        out.push(
            json!({"type": "response.content_part.added", "item_id": item_id,
            "output_index": 0, "content_index": 0,
            "part": {"type": "output_text", "text": "", "annotations": []}}),
        );
        for d in deltas {
            out.push(
                json!({"type": "response.output_text.delta", "item_id": item_id,
                "output_index": 0, "content_index": 0, "delta": d, "logprobs": []}),
            );
        }
        out.push(
            json!({"type": "response.output_text.done", "item_id": item_id,
            "output_index": 0, "content_index": 0, "text": full, "logprobs": []}),
        );
        out.push(
            json!({"type": "response.content_part.done", "item_id": item_id,
            "output_index": 0, "content_index": 0, "part": part}),
        );
        out.push(json!({"type": "response.output_item.done", "output_index": 0, "item": item}));
        out.push(json!({"type": "response.completed",
            "response": response("completed", json!([item]), usage(5, 6))}));
    }
    for (i, e) in out.iter_mut().enumerate() {
        e["sequence_number"] = json!(i);
    }
    out
}

/// The same answer as an SSE body (the HTTP Responses stream): one `event:`/`data:` frame
/// per event.
pub fn responses_sse(id: &str, m: &Value, deltas: &[String]) -> Vec<String> {
    responses_events(id, m, deltas)
        .into_iter()
        .map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap_or("")))
        .collect()
}

/// A Rust WebSocket client over TLS for protocol-level checks: connect to `addr`, TLS with SNI
/// `host` trusting `ca` (PEM), upgrade `wss://{host}{path}` with `headers` added. The 101
/// response comes back with the stream.
pub async fn client(
    addr: SocketAddr,
    host: &str,
    ca: &std::path::Path,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(ClientWs, http::Response<Option<Vec<u8>>>), String> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).map_err(|e| format!("read {}: {e}", ca.display()))?;
    for c in
        <rustls::pki_types::CertificateDer<'_> as rustls::pki_types::pem::PemObject>::pem_slice_iter(
            &pem,
        )
    {
        roots
            .add(c.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let name =
        rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS to {host}: {e}"))?;
    let mut req = format!("wss://{host}{path}")
        .into_client_request()
        .map_err(|e| e.to_string())?;
    for (k, v) in headers {
        req.headers_mut().append(
            http::HeaderName::from_bytes(k.as_bytes()).map_err(|e| e.to_string())?,
            http::HeaderValue::from_str(v).map_err(|e| e.to_string())?,
        );
    }
    tokio_tungstenite::client_async(req, tls)
        .await
        .map_err(|e| format!("upgrade: {e}"))
}

/// What [`client`] returns.
pub type ClientWs = WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

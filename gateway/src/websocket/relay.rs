//! The message relay of one open session: two readers (client→provider, provider→client) and
//! two writers, in one task.
//!
//! - Client→provider: every text or binary message (fragments reassembled, at most
//!   `limits.max_ws_message`) is inspected like a request body ([`crate::request::Inspector`]:
//!   strict JSON, base64 decoded, every string). Mask → the masked rendering goes on; block →
//!   close 1008 naming the rule (never the secret), both sides; hold → that message, and every
//!   one after it, waits for the approver (the hold service); denied or timed out → close 1008.
//! - Provider→client: every message is one stream event for one [`Rewriter`] per session, so a
//!   secret split across two deltas comes out masked; text it holds back goes out in later
//!   messages (or before the close). Binary that is not text is scanned raw: a hit ends the
//!   session (it cannot be masked).
//! - Ping, pong and close are relayed, scanned on their way, and answered only by the other
//!   side: the relay reads and writes frames itself ([`super::frames`]), so nothing echoes a
//!   side's own payload back to it. A message too large ends the session with 1009.
//! - While the gateway withholds a client message from the provider (its fragments still
//!   coming, or held for approval), it pings the provider every `keepalive` so an idle timer
//!   there does not end the session; the provider's pongs to those pings go no further.
//! - When the client closes first, text the Rewriter still holds goes out (masked) before the
//!   provider's close reply, or after `GRACE` without one.
//! - The journal gets one record for the session, with its timeline ([`super::render`]).

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::Value;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::{mpsc, watch},
};
use tokio_tungstenite::tungstenite::{
    self, Message, Utf8Bytes,
    protocol::{CloseFrame, frame::coding::CloseCode},
};
use tracing::{debug, info, warn};

use super::{
    frames::{FrameError, Reader, Writer},
    render::{Entry, Timeline, journal_text},
};
use crate::{
    hold::HoldService,
    journal::{Approval, Decision, Exchange, Journal},
    policy::scan::{Ctx, Direction, Effect, Hit, Scanner, Unreadable},
    redirect::identity::Identity,
    response::Rewriter,
};

/// How long the other side may take to finish once one side has ended.
const GRACE: Duration = Duration::from_secs(5);

/// The longest one message may take to be written to a side.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest prompt excerpt an approver is shown, in characters.
const EXCERPT: usize = 400;

/// How often the gateway pings the provider while it withholds a client message
/// ([`Session::keepalive`]).
pub const KEEPALIVE: Duration = Duration::from_secs(4);

/// What a session needs from the connection it came on.
pub struct Session {
    pub conn_id: u64,
    pub scanner: Arc<Scanner>,
    pub identity: Arc<Identity>,
    pub unreadable: Unreadable,
    pub hold: Arc<HoldService>,
    pub journal: Option<Arc<Journal>>,
    pub provider: String,
    pub endpoint: &'static str,
    /// `limits.max_ws_message`.
    pub max_message: usize,
    /// The client came over h2 (extended CONNECT).
    pub h2: bool,
    /// The interval of the gateway's own pings to the provider while a client message is
    /// withheld ([`KEEPALIVE`]).
    pub keepalive: Duration,
}

/// What both readers add to the record.
pub(super) struct State {
    pub(super) timeline: Timeline,
    pub(super) decisions: Vec<Decision>,
    pub(super) approval: Option<Approval>,
    pub(super) model: Option<String>,
    /// Set when the gateway ended the session itself: the error kind for the record.
    gateway_error: Option<&'static str>,
    upstream_error: bool,
    client_gone: bool,
    /// The payload of the gateway's own keepalive pings (random per session): a pong that
    /// carries it answers the gateway, not the client.
    ping: tungstenite::Bytes,
}

pub(super) type Shared = Mutex<State>;

pub(super) fn lock(s: &Shared) -> std::sync::MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

/// A close reason fits a control frame (123 bytes), cut at a character boundary.
fn close(code: u16, reason: &str) -> Message {
    let mut r = reason.to_string();
    while r.len() > 123 {
        r.pop();
    }
    Message::Close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: Utf8Bytes::from(r),
    }))
}

/// Run the session to its end and write its record.
pub async fn run<C, U>(s: Session, client: C, upstream: U, mut ex: Exchange)
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    U: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (c_read, c_write) = tokio::io::split(client);
    let (u_read, u_write) = tokio::io::split(upstream);
    // A client's frames are masked, a provider's are not; the gateway masks what it sends the
    // provider.
    let c_stream = Reader::new(c_read, true, s.max_message);
    let u_stream = Reader::new(u_read, false, s.max_message);
    let c_sink = Writer::new(c_write, false);
    let u_sink = Writer::new(u_write, true);
    let (client_ended, client_ended_rx) = watch::channel(false);
    let (to_c, c_rx) = mpsc::channel::<Message>(32);
    let (to_u, u_rx) = mpsc::channel::<Message>(32);
    let t0 = Instant::now()
        .checked_sub(Duration::from_secs_f64(ex.elapsed_ms() / 1e3))
        .unwrap_or_else(Instant::now);
    let shared = Mutex::new(State {
        timeline: Timeline::new(ex.body_limit(), s.h2),
        decisions: Vec::new(),
        approval: None,
        model: ex.rec.model.clone(),
        gateway_error: None,
        upstream_error: false,
        client_gone: false,
        ping: format!("gateway-keepalive-{:016x}", rand::random::<u64>())
            .into_bytes()
            .into(),
    });
    info!(
        conn = s.conn_id,
        endpoint = s.endpoint,
        "websocket session open"
    );
    let relay = async {
        let c = client_side(&s, c_stream, to_c.clone(), to_u.clone(), &shared, t0);
        let u = server_side(&s, u_stream, to_c, to_u, &shared, t0, client_ended_rx);
        tokio::pin!(c, u);
        tokio::select! {
            _ = &mut c => {
                // The provider's side ends on its own within GRACE (its close reply, or
                // GRACE without one: then it releases what it holds); this is a backstop.
                let _ = client_ended.send(true);
                let _ = tokio::time::timeout(GRACE + Duration::from_secs(1), &mut u).await;
            }
            _ = &mut u => { let _ = tokio::time::timeout(GRACE, &mut c).await; }
        }
    };
    tokio::join!(relay, writer(c_sink, c_rx), writer(u_sink, u_rx));

    let st = shared.into_inner().unwrap_or_else(|p| p.into_inner());
    for d in st.decisions {
        ex.decision(d);
    }
    if st.approval.is_some() {
        ex.rec.approval = st.approval;
    }
    ex.rec.model = st.model;
    ex.rec.gateway_error = st.gateway_error.map(String::from);
    ex.rec.request_bytes = st.timeline.client_bytes;
    ex.rec.response_bytes = st.timeline.server_bytes;
    ex.rec.truncated |= st.timeline.truncated;
    let session = st.timeline.session;
    let outcome = if st.upstream_error {
        "upstream_error"
    } else if st.client_gone {
        "client_gone"
    } else {
        "completed"
    };
    info!(
        conn = s.conn_id,
        endpoint = s.endpoint,
        client_messages = session.client_messages,
        server_messages = session.server_messages,
        close = session.close.as_ref().map(|c| c.code),
        by = session.close.as_ref().map(|c| c.by.as_str()),
        "websocket session closed"
    );
    ex.rec.websocket = Some(session);
    if let Some(ack) = ex.finish(outcome) {
        match ack.await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => warn!(conn = s.conn_id, error = %e, "websocket session not recorded"),
            Err(_) => warn!(conn = s.conn_id, "websocket session not recorded"),
        }
    }
}

/// Write what the readers send to one side, until a close has gone out or nobody sends more;
/// a side that got no close by then gets an empty one. Then this direction is shut.
async fn writer<W>(mut sink: Writer<W>, mut rx: mpsc::Receiver<Message>)
where
    W: AsyncWrite + Unpin,
{
    let mut closed = false;
    let mut broken = false;
    while let Some(m) = rx.recv().await {
        let is_close = matches!(m, Message::Close(_));
        match tokio::time::timeout(WRITE_TIMEOUT, sink.send(&m)).await {
            Ok(Ok(())) => {}
            _ => {
                broken = true;
                break;
            }
        }
        if is_close {
            closed = true;
            break;
        }
    }
    if !closed && !broken {
        let _ = tokio::time::timeout(GRACE, sink.send(&Message::Close(None))).await;
    }
    let _ = tokio::time::timeout(GRACE, sink.shutdown()).await;
}

/// After the gateway has closed a side: read what it still sends (its close reply) for a
/// moment, so the close handshake completes.
async fn linger<R>(mut rx: Reader<R>)
where
    R: AsyncRead + Unpin,
{
    let _ = tokio::time::timeout(GRACE, async { while let Some(Ok(_)) = rx.next().await {} }).await;
}

/// The gateway's own keepalive ping to the provider ([`Session::keepalive`]).
fn keepalive_ping(st: &Shared) -> Message {
    Message::Ping(lock(st).ping.clone())
}

fn ms(t0: Instant) -> f64 {
    t0.elapsed().as_secs_f64() * 1e3
}

/// A read error of one side: the close code and reason for the other side (and for this one,
/// when it can still hear it); `None` when the side just went away.
fn read_error(e: &FrameError, max: usize, side: &str) -> Option<(u16, String)> {
    match e {
        FrameError::TooLarge(_) => Some((
            1009,
            format!("gateway: a {side} message is larger than {max} bytes (limits.max_ws_message)"),
        )),
        FrameError::NotUtf8 => Some((1007, format!("gateway: a {side} text message is not UTF-8"))),
        FrameError::Gone => None,
        FrameError::Protocol(p) => Some((1002, format!("gateway: {side} protocol error: {p}"))),
    }
}

/// Client→provider.
async fn client_side<R>(
    s: &Session,
    mut rx: Reader<R>,
    to_c: mpsc::Sender<Message>,
    to_u: mpsc::Sender<Message>,
    st: &Shared,
    t0: Instant,
) where
    R: AsyncRead + Unpin,
{
    // When the gateway last sent the provider something on the client's behalf.
    let mut last_up = tokio::time::Instant::now();
    loop {
        let next = tokio::select! {
            m = rx.next() => m,
            _ = tokio::time::sleep_until(last_up + s.keepalive) => {
                last_up = tokio::time::Instant::now();
                if rx.assembling() {
                    // Fragments are coming, and nothing goes on before the message is whole.
                    let _ = to_u.send(keepalive_ping(st)).await;
                }
                continue;
            }
        };
        let Some(m) = next else { break };
        last_up = tokio::time::Instant::now();
        let m = match m {
            Ok(m) => m,
            Err(e) => {
                let verdict = read_error(&e, s.max_message, "client");
                {
                    let mut g = lock(st);
                    match &verdict {
                        Some((code, why)) => {
                            g.timeline.closed("gateway", *code, why);
                            g.timeline.push(Entry {
                                client: true,
                                at_ms: ms(t0),
                                kind: "close",
                                len: 0,
                                text: None,
                                action: Some(if *code == 1009 {
                                    "too_large"
                                } else {
                                    "refused"
                                }),
                            });
                            g.gateway_error = Some(if *code == 1009 {
                                "message_too_large"
                            } else {
                                "bad_request"
                            });
                        }
                        None => {
                            g.client_gone = true;
                            g.timeline.closed("client", 1006, "connection lost");
                        }
                    }
                }
                match verdict {
                    Some((code, why)) => {
                        debug!(conn = s.conn_id, code, why, "websocket session ended");
                        let _ = to_c.send(close(code, &why)).await;
                        let _ = to_u.send(close(1001, "client session ended")).await;
                        // The client may still be writing (the rest of a message too large):
                        // it reads the close once that write is done.
                        let _ = tokio::time::timeout(GRACE, rx.drain()).await;
                    }
                    None => {
                        let _ = to_u.send(close(1001, "client went away")).await;
                    }
                }
                return;
            }
        };
        match m {
            Message::Text(t) => {
                if !client_message(s, t.as_bytes(), true, &to_c, &to_u, st, t0).await {
                    return linger(rx).await;
                }
            }
            Message::Binary(b) => {
                if !client_message(s, &b, false, &to_c, &to_u, st, t0).await {
                    return linger(rx).await;
                }
            }
            Message::Ping(p) => {
                control(st, true, "ping", p.len(), t0);
                let p = clean_ping(s, st, true, p);
                let _ = to_u.send(Message::Ping(p)).await;
            }
            Message::Pong(p) => {
                control(st, true, "pong", p.len(), t0);
                let p = clean_ping(s, st, true, p);
                let _ = to_u.send(Message::Pong(p)).await;
            }
            Message::Close(f) => {
                let f = clean_close(s, st, true, f);
                {
                    let mut g = lock(st);
                    let (code, reason) = frame_parts(&f);
                    g.timeline.closed("client", code, &reason);
                    g.timeline.push(Entry {
                        client: true,
                        at_ms: ms(t0),
                        kind: "close",
                        len: reason.len() + 2,
                        text: Some(&reason).filter(|r| !r.is_empty()).map(|r| r.as_str()),
                        action: None,
                    });
                }
                let _ = to_u.send(Message::Close(f)).await;
            }
            Message::Frame(_) => {}
        }
    }
}

/// A control frame's payload (a ping's or pong's data, a close reason) is scanned like a
/// message: a hit that is not only recorded masks it — a close reason as text, a ping or pong
/// by emptying it (a control frame cannot wait for approval, and a pong answers the ping the
/// peer actually got). `None`: it goes as it is.
fn clean_control(s: &Session, st: &Shared, client: bool, payload: &[u8]) -> Option<Vec<u8>> {
    let dir = if client {
        Direction::Request
    } else {
        Direction::Response
    };
    let hits = s.scanner.find(
        payload,
        0,
        Ctx {
            dir,
            id: &s.identity,
        },
    );
    if hits.is_empty() {
        return None;
    }
    let direction = if client { "request" } else { "response" };
    record_hits(&mut lock(st).decisions, &s.scanner, direction, &hits);
    if hits.iter().all(|h| h.effect == Effect::Record) {
        return None;
    }
    warn!(
        conn = s.conn_id,
        client, "websocket control frame carried a secret: masked"
    );
    Some(match std::str::from_utf8(payload) {
        Ok(t) => s
            .scanner
            .apply(t, &hits, crate::policy::scan::Render::Forward)
            .into_bytes(),
        Err(_) => Vec::new(),
    })
}

/// A ping or pong, its payload cleaned ([`clean_control`]).
fn clean_ping(s: &Session, st: &Shared, client: bool, p: tungstenite::Bytes) -> tungstenite::Bytes {
    match clean_control(s, st, client, &p) {
        // Masked text still names what was there; binary data goes empty.
        Some(v) if v.len() <= 125 => tungstenite::Bytes::from(v),
        Some(_) => tungstenite::Bytes::new(),
        None => p,
    }
}

/// A close frame, its reason cleaned ([`clean_control`]).
fn clean_close(
    s: &Session,
    st: &Shared,
    client: bool,
    f: Option<CloseFrame>,
) -> Option<CloseFrame> {
    let f = f?;
    match clean_control(s, st, client, f.reason.as_bytes()) {
        None => Some(f),
        Some(v) => {
            let mut r = String::from_utf8(v).unwrap_or_default();
            while r.len() > 123 {
                r.pop();
            }
            Some(CloseFrame {
                code: f.code,
                reason: Utf8Bytes::from(r),
            })
        }
    }
}

fn frame_parts(f: &Option<CloseFrame>) -> (u16, String) {
    match f {
        Some(f) => (u16::from(f.code), f.reason.as_str().to_string()),
        None => (1005, String::new()),
    }
}

fn control(st: &Shared, client: bool, kind: &'static str, len: usize, t0: Instant) {
    lock(st).timeline.push(Entry {
        client,
        at_ms: ms(t0),
        kind,
        len,
        text: None,
        action: None,
    });
}

/// The model a session uses, as its first messages name it (Responses `response.create`,
/// Realtime `session.update`, Gemini Live `setup`).
fn model_of(v: &Value) -> Option<String> {
    [
        "/model",
        "/response/model",
        "/session/model",
        "/setup/model",
    ]
    .iter()
    .find_map(|p| v.pointer(p).and_then(Value::as_str))
    .map(String::from)
}

/// One client data message: inspected, then forwarded, refused or held. `false`: the session
/// was ended by the gateway.
async fn client_message(
    s: &Session,
    data: &[u8],
    text: bool,
    to_c: &mpsc::Sender<Message>,
    to_u: &mpsc::Sender<Message>,
    st: &Shared,
    t0: Instant,
) -> bool {
    let kind = if text { "text" } else { "binary" };
    // Fail closed as for HTTP: nothing goes on that the journal cannot record.
    if let Some(Err(why)) = s.journal.as_ref().map(|j| j.ready()) {
        return end(
            s,
            st,
            to_c,
            to_u,
            t0,
            (kind, data.len()),
            1011,
            &format!("gateway: the journal cannot record this session ({why}); closed"),
            "refused",
            "gateway_internal",
        )
        .await;
    }
    let ins = crate::request::Inspector {
        scanner: &s.scanner,
        ctx: Ctx {
            dir: Direction::Request,
            id: &s.identity,
        },
        unreadable: s.unreadable,
    }
    .inspect(data, "");
    let ins = match ins {
        Ok(i) => i,
        Err(e) => {
            warn!(conn = s.conn_id, error = %e, "websocket message refused");
            return end(
                s,
                st,
                to_c,
                to_u,
                t0,
                (kind, data.len()),
                1008,
                &format!("gateway: {e}"),
                "refused",
                "bad_request",
            )
            .await;
        }
    };
    {
        let mut g = lock(st);
        record_hits(&mut g.decisions, &s.scanner, "request", &ins.hits);
        if g.model.is_none() {
            g.model = ins.json.as_ref().and_then(model_of);
        }
    }
    let utf8 = std::str::from_utf8(data).is_ok();
    let forward: Vec<u8> = ins.forward.clone().unwrap_or_else(|| data.to_vec());
    // What the journal and the approver see: every effect but `monitor` applied.
    let seen = ins.record.as_deref().unwrap_or(&forward);
    let (record, audio) = match std::str::from_utf8(seen) {
        Ok(t) if utf8 => {
            let (t, n) = journal_text(t);
            (Some(t), n)
        }
        _ => (None, data.len() as u64),
    };
    let mut held = match ins.verdict() {
        Some(h) if h.effect == Effect::Block => {
            let rule = s.scanner.rules()[h.rule].name.clone();
            info!(conn = s.conn_id, rule = %rule, detector = h.detector, "websocket message blocked");
            return end(
                s,
                st,
                to_c,
                to_u,
                t0,
                (kind, data.len()),
                1008,
                &format!("gateway: message blocked by policy rule `{rule}`"),
                "blocked",
                "blocked_by_policy",
            )
            .await;
        }
        Some(h) if h.effect == Effect::Hold => Some(format!(
            "rule `{}` ({})",
            s.scanner.rules()[h.rule].name,
            h.detector
        )),
        _ => None,
    };
    let all: Vec<&str> = ins.texts.iter().map(String::as_str).collect();
    if held.is_none() {
        held = s.hold.cfg.trigger(&all, &all);
    }
    let masked = ins.forward.is_some();
    let action = if held.is_some() {
        Some("held")
    } else if masked {
        Some("masked")
    } else {
        None
    };
    {
        let mut g = lock(st);
        g.timeline.session.audio_bytes += audio;
        g.timeline.push(Entry {
            client: true,
            at_ms: ms(t0),
            kind,
            len: forward.len(),
            text: record.as_deref(),
            action,
        });
    }
    if let Some(why) = held {
        let excerpt: String = all.join("\n").chars().take(EXCERPT).collect();
        let wait = super::approval::wait(s, st, why, excerpt, forward.len());
        if let Err((code, reason)) = keep_alive(s, st, to_u, wait).await {
            return end(
                s,
                st,
                to_c,
                to_u,
                t0,
                ("close", 0),
                code,
                &reason,
                "held",
                "blocked_by_policy",
            )
            .await;
        }
    }
    let m = if text || utf8 && masked {
        match String::from_utf8(forward) {
            Ok(t) if text => Message::Text(Utf8Bytes::from(t)),
            Ok(t) => Message::Binary(t.into_bytes().into()),
            Err(e) => Message::Binary(e.into_bytes().into()),
        }
    } else {
        Message::Binary(forward.into())
    };
    let _ = to_u.send(m).await;
    true
}

/// Run `f` (a hold), pinging the provider every `keepalive` meanwhile.
async fn keep_alive<T>(
    s: &Session,
    st: &Shared,
    to_u: &mpsc::Sender<Message>,
    f: impl std::future::Future<Output = T>,
) -> T {
    tokio::pin!(f);
    loop {
        tokio::select! {
            r = &mut f => return r,
            _ = tokio::time::sleep(s.keepalive) => {
                let _ = to_u.send(keepalive_ping(st)).await;
            }
        }
    }
}

/// Each scanner hit as a decision of the session's record (`direction`: "request" or
/// "response"), counted per rule and detector.
fn record_hits(all: &mut Vec<Decision>, scanner: &Scanner, direction: &str, hits: &[Hit]) {
    for h in hits {
        push_decision(
            all,
            Decision {
                direction: direction.into(),
                rule: scanner.rules()[h.rule].name.clone(),
                detector: h.detector.into(),
                action: h.effect.as_str().into(),
                count: 1,
            },
        );
    }
}

fn push_decision(all: &mut Vec<Decision>, d: Decision) {
    if let Some(same) = all
        .iter_mut()
        .find(|x| x.direction == d.direction && x.rule == d.rule && x.detector == d.detector)
    {
        same.count += d.count;
    } else {
        all.push(d);
    }
}

/// The gateway ends the session: the message (`what`: its kind and length) is recorded with
/// `action`, both sides get `code` and `reason`. Always `false` (the session is over).
#[allow(clippy::too_many_arguments)]
async fn end(
    s: &Session,
    st: &Shared,
    to_c: &mpsc::Sender<Message>,
    to_u: &mpsc::Sender<Message>,
    t0: Instant,
    what: (&'static str, usize),
    code: u16,
    reason: &str,
    action: &'static str,
    kind: &'static str,
) -> bool {
    {
        let mut g = lock(st);
        if what.0 != "close" {
            g.timeline.push(Entry {
                client: true,
                at_ms: ms(t0),
                kind: what.0,
                len: what.1,
                text: None,
                action: Some(action),
            });
        }
        g.timeline.closed("gateway", code, reason);
        g.gateway_error = Some(kind);
    }
    debug!(
        conn = s.conn_id,
        code, reason, "websocket session ended by the gateway"
    );
    let _ = to_c.send(close(code, reason)).await;
    let _ = to_u.send(close(1000, "")).await;
    false
}

/// Provider→client.
#[allow(clippy::too_many_arguments)]
async fn server_side<R>(
    s: &Session,
    mut rx: Reader<R>,
    to_c: mpsc::Sender<Message>,
    to_u: mpsc::Sender<Message>,
    st: &Shared,
    t0: Instant,
    mut client_ended: watch::Receiver<bool>,
) where
    R: AsyncRead + Unpin,
{
    let mut rw = Rewriter::new(s.scanner.clone(), s.identity.clone());
    // The frame type text goes back in (what the provider last used).
    let mut last_binary = false;
    let masking = s.scanner.any(Direction::Response);
    let mut deadline = None;
    loop {
        let next = tokio::select! {
            m = rx.next() => m,
            _ = grace_after(&mut client_ended, &mut deadline) => {
                debug!(conn = s.conn_id, "the provider did not answer the client's close in time");
                break;
            }
        };
        let Some(m) = next else { break };
        let m = match m {
            Ok(m) => m,
            Err(e) => {
                flush(s, &mut rw, last_binary, &to_c, st, t0).await;
                let (code, why) = read_error(&e, s.max_message, "provider").unwrap_or((
                    1011,
                    "gateway: the provider's connection ended without a close".into(),
                ));
                {
                    let mut g = lock(st);
                    if g.client_gone {
                        // The client went first (without a close): the provider's end that
                        // follows is ours, not the provider's failure.
                        return;
                    }
                    g.timeline.closed("gateway", code, &why);
                    if code == 1009 {
                        g.gateway_error = Some("message_too_large");
                    } else {
                        g.upstream_error = true;
                    }
                }
                let _ = to_c.send(close(code, &why)).await;
                let _ = to_u.send(close(code, "")).await;
                return;
            }
        };
        match m {
            Message::Text(t) => {
                last_binary = false;
                let (out, altered) = if masking {
                    server_text(s, &mut rw, t.as_str(), st)
                } else {
                    (vec![t.as_str().to_string()], false)
                };
                for o in out {
                    record_server(st, "text", &o, t0, altered);
                    let _ = to_c.send(Message::Text(Utf8Bytes::from(o))).await;
                }
            }
            Message::Binary(b) => {
                last_binary = true;
                match std::str::from_utf8(&b) {
                    Ok(t) if masking => {
                        let (out, altered) = server_text(s, &mut rw, t, st);
                        for o in out {
                            record_server(st, "binary", &o, t0, altered);
                            let _ = to_c.send(Message::Binary(o.into_bytes().into())).await;
                        }
                    }
                    Ok(t) => {
                        record_server(st, "binary", t, t0, false);
                        let _ = to_c.send(Message::Binary(b)).await;
                    }
                    Err(_) => {
                        if let Err(rule) = scan_binary(s, &b, st) {
                            let why = format!(
                                "gateway: the provider sent binary data carrying a secret (rule `{rule}`); closed"
                            );
                            {
                                let mut g = lock(st);
                                g.timeline.push(Entry {
                                    client: false,
                                    at_ms: ms(t0),
                                    kind: "binary",
                                    len: b.len(),
                                    text: None,
                                    action: Some("blocked"),
                                });
                                g.timeline.closed("gateway", 1008, &why);
                                g.gateway_error = Some("blocked_by_policy");
                            }
                            let _ = to_c.send(close(1008, &why)).await;
                            let _ = to_u.send(close(1000, "")).await;
                            return linger(rx).await;
                        }
                        {
                            let mut g = lock(st);
                            g.timeline.session.audio_bytes += b.len() as u64;
                            g.timeline.push(Entry {
                                client: false,
                                at_ms: ms(t0),
                                kind: "binary",
                                len: b.len(),
                                text: None,
                                action: None,
                            });
                        }
                        let _ = to_c.send(Message::Binary(b)).await;
                    }
                }
            }
            Message::Ping(p) => {
                control(st, false, "ping", p.len(), t0);
                let p = clean_ping(s, st, false, p);
                let _ = to_c.send(Message::Ping(p)).await;
            }
            // The answer to the gateway's own keepalive: the client never pinged.
            Message::Pong(p) if p == lock(st).ping => {}
            Message::Pong(p) => {
                control(st, false, "pong", p.len(), t0);
                let p = clean_ping(s, st, false, p);
                let _ = to_c.send(Message::Pong(p)).await;
            }
            Message::Close(f) => {
                let f = clean_close(s, st, false, f);
                flush(s, &mut rw, last_binary, &to_c, st, t0).await;
                {
                    let mut g = lock(st);
                    let (code, reason) = frame_parts(&f);
                    g.timeline.closed("server", code, &reason);
                    g.timeline.push(Entry {
                        client: false,
                        at_ms: ms(t0),
                        kind: "close",
                        len: reason.len() + 2,
                        text: Some(reason.as_str()).filter(|r| !r.is_empty()),
                        action: None,
                    });
                }
                let _ = to_c.send(Message::Close(f)).await;
            }
            Message::Frame(_) => {}
        }
    }
    // The provider's side ended (after its close, or without one): what is held goes out.
    flush(s, &mut rw, last_binary, &to_c, st, t0).await;
}

/// Resolves GRACE after the client's side ended (never while it has not).
async fn grace_after(
    ended: &mut watch::Receiver<bool>,
    deadline: &mut Option<tokio::time::Instant>,
) {
    let at = match *deadline {
        Some(at) => at,
        None => {
            if ended.wait_for(|e| *e).await.is_err() {
                return std::future::pending().await;
            }
            *deadline.insert(tokio::time::Instant::now() + GRACE)
        }
    };
    tokio::time::sleep_until(at).await;
}

/// A provider text message through the session's Rewriter: the messages to send for it, and
/// whether they differ from it.
fn server_text(s: &Session, rw: &mut Rewriter, text: &str, st: &Shared) -> (Vec<String>, bool) {
    let out = match serde_json::from_str::<Value>(text) {
        Ok(v) => {
            let evs = rw.event(None, v);
            if !rw.take_altered() && evs.len() == 1 {
                (vec![text.to_string()], false)
            } else {
                (evs.into_iter().map(|(_, v)| v.to_string()).collect(), true)
            }
        }
        Err(_) => {
            let b = rw.mask_bytes(text.as_bytes());
            let altered = rw.take_altered();
            (vec![String::from_utf8_lossy(&b).into_owned()], altered)
        }
    };
    response_hits(s, rw, st);
    out
}

fn response_hits(s: &Session, rw: &mut Rewriter, st: &Shared) {
    let hits = rw.take_hits();
    if hits.is_empty() {
        return;
    }
    let mut g = lock(st);
    for (rule, detector) in hits {
        let rule = &s.scanner.rules()[rule];
        debug!(conn = s.conn_id, rule = %rule.name, detector, "websocket response rule hit");
        push_decision(
            &mut g.decisions,
            Decision {
                direction: "response".into(),
                rule: rule.name.clone(),
                detector: detector.into(),
                // Decided in one place: in answers, block and hold mask.
                action: rule.action.effect(Direction::Response).as_str().into(),
                count: 1,
            },
        );
    }
}

/// Binary provider data that is not text: scanned raw. `Err(rule)`: a hit that would have to
/// alter it.
fn scan_binary(s: &Session, b: &[u8], st: &Shared) -> Result<(), String> {
    let ctx = Ctx {
        dir: Direction::Response,
        id: &s.identity,
    };
    let mut hits = s.scanner.find(b, 0, ctx);
    // Compressed data (gzip, zlib, zstd magic) is decoded and scanned too: it cannot be
    // masked and compressed again, so a hit there closes like one in the raw bytes. Data that
    // claims a compression and does not decode is refused (nothing unread passes).
    match crate::request::decode::sniff(b, s.max_message) {
        Ok(Some(inner)) => hits.extend(s.scanner.find(&inner, 0, ctx)),
        Ok(None) => {}
        Err(_) => return Err("unreadable-compressed-data".into()),
    }
    record_hits(&mut lock(st).decisions, &s.scanner, "response", &hits);
    match hits.iter().find(|h| h.effect != Effect::Record) {
        Some(h) => Err(s.scanner.rules()[h.rule].name.clone()),
        None => Ok(()),
    }
}

fn record_server(st: &Shared, kind: &'static str, text: &str, t0: Instant, masked: bool) {
    let (t, audio) = journal_text(text);
    let mut g = lock(st);
    g.timeline.session.audio_bytes += audio;
    g.timeline.push(Entry {
        client: false,
        at_ms: ms(t0),
        kind,
        len: text.len(),
        text: Some(&t),
        action: masked.then_some("masked"),
    });
}

/// Text the Rewriter still holds (the provider closed, or went away): released as messages.
async fn flush(
    s: &Session,
    rw: &mut Rewriter,
    binary: bool,
    to_c: &mpsc::Sender<Message>,
    st: &Shared,
    t0: Instant,
) {
    let evs = rw.finish();
    response_hits(s, rw, st);
    for (_, v) in evs {
        let o = v.to_string();
        record_server(st, if binary { "binary" } else { "text" }, &o, t0, true);
        let m = if binary {
            Message::Binary(o.into_bytes().into())
        } else {
            Message::Text(Utf8Bytes::from(o))
        };
        let _ = to_c.send(m).await;
    }
}

//! WebSocket stage (DESIGN §6 "More APIs"): a WebSocket session on a provider host — OpenAI's
//! Responses WebSocket mode and Realtime API, Gemini Live — proxied message by message.
//!
//! Where it sits: [`crate::http`] recognises the upgrade ([`classify`]: HTTP/1.1 `Upgrade:
//! websocket`, or h2 extended CONNECT with `:protocol = websocket`, RFC 8441) and runs the
//! upgrade request through the same `prepare` as every request (credentials stripped, the vault
//! key injected, Host pinned to the SNI, path normalised). This module then
//! - opens a dedicated TLS connection to the original destination with the client's SNI
//!   ([`crate::upstream`]'s trust roots and bypass mark) and performs the HTTP/1.1 upgrade
//!   there ([`connect`]: the 101, `Sec-WebSocket-Accept` and the subprotocol checked; no
//!   extension is offered, and a 101 that names one anyway fails closed);
//! - answers the client ([`accept`]: 101, or 200 on h2);
//! - relays the messages ([`relay`]): client→provider messages inspected like request bodies
//!   (mask / block with close 1008 / hold), provider→client messages masked like stream events
//!   across messages, control frames relayed, messages bounded (close 1009), and the session
//!   journaled as one exchange with its timeline.
//!
//! Any other upgrade (h2c, a CONNECT tunnel, ...) is refused: everything on this connection is
//! the provider, and nothing but WebSocket can be inspected.

mod approval;
mod frames;
pub mod relay;
pub mod render;

#[cfg(test)]
mod tests;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;

use crate::{redirect::origdst::OrigDstAddr, upstream::pool::Upstreams};

/// The provider's side of an open session.
pub type UpstreamIo = TokioIo<hyper::upgrade::Upgraded>;

#[derive(Debug, thiserror::Error)]
pub enum WsError {
    #[error(
        "an upgrade to `{0}` was asked for; on a provider connection only WebSocket is proxied (it \
         can be inspected), so nothing was sent"
    )]
    Unsupported(String),
    #[error("bad WebSocket upgrade request: {0}; nothing was sent")]
    BadUpgrade(String),
    #[error("the provider's TLS certificate did not verify ({0}); nothing was sent")]
    Certificate(String),
    #[error("the provider could not be reached: {0}")]
    Unavailable(String),
    #[error("the provider's WebSocket handshake is not valid ({0}); the session was not opened")]
    Handshake(String),
    #[error(
        "the provider's WebSocket handshake names the extension `{0}`, which the gateway did not \
         offer and cannot inspect; the session was not opened (fail-closed)"
    )]
    Extension(String),
}

/// What kind of upgrade a request asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Upgrade {
    /// An ordinary request.
    None,
    /// A WebSocket session: HTTP/1.1 Upgrade (`h2 = false`) or h2 extended CONNECT.
    WebSocket { h2: bool },
    /// Anything else that would turn the connection (or stream) into something else: refused.
    Other(String),
}

fn tokens(h: &HeaderMap, name: header::HeaderName) -> Vec<String> {
    h.get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// Decide once what a request asks for: an upgrade on HTTP/1.1 (`Upgrade` header), a CONNECT
/// (h2 extended CONNECT carries `:protocol`), or nothing.
pub fn classify<B>(req: &Request<B>) -> Upgrade {
    if req.method() == Method::CONNECT {
        let proto = req
            .extensions()
            .get::<hyper::ext::Protocol>()
            .map(|p| p.as_str().to_ascii_lowercase());
        return match proto {
            Some(p) if p == "websocket" && req.version() == http::Version::HTTP_2 => {
                Upgrade::WebSocket { h2: true }
            }
            Some(p) => Upgrade::Other(p),
            None => Upgrade::Other("CONNECT".into()),
        };
    }
    let up = tokens(req.headers(), header::UPGRADE);
    if up.is_empty() {
        return Upgrade::None;
    }
    let ws = up.iter().any(|t| t == "websocket");
    if ws
        && req.method() == Method::GET
        && req.version() == http::Version::HTTP_11
        && tokens(req.headers(), header::CONNECTION)
            .iter()
            .any(|t| t == "upgrade")
    {
        return Upgrade::WebSocket { h2: false };
    }
    Upgrade::Other(
        req.headers()
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("?")
            .chars()
            .take(40)
            .collect(),
    )
}

/// The endpoint label of a session, from the adapter's label for its path.
pub fn endpoint(adapter_endpoint: &'static str) -> &'static str {
    match adapter_endpoint {
        // The same path as the HTTP API; a different protocol.
        "responses" => "responses-ws",
        e => e,
    }
}

/// What the client's upgrade request asked for, read before `prepare` changes the head.
#[derive(Debug, Clone)]
pub struct Hello {
    pub h2: bool,
    /// HTTP/1.1: the client's `Sec-WebSocket-Key` (answered with its accept value).
    key: Option<String>,
    /// The subprotocols the client offered, in order.
    pub protocols: Vec<String>,
}

impl Hello {
    pub fn read(h: &HeaderMap, h2: bool) -> Result<Self, WsError> {
        let version = h
            .get(header::SEC_WEBSOCKET_VERSION)
            .and_then(|v| v.to_str().ok())
            .map(str::trim);
        if version != Some("13") {
            return Err(WsError::BadUpgrade(format!(
                "Sec-WebSocket-Version must be 13 (got {})",
                version.unwrap_or("none")
            )));
        }
        let key = if h2 {
            None
        } else {
            let k = h
                .get(header::SEC_WEBSOCKET_KEY)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .ok_or_else(|| WsError::BadUpgrade("no Sec-WebSocket-Key".into()))?;
            Some(k.to_string())
        };
        let protocols = h
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect();
        Ok(Self { h2, key, protocols })
    }
}

/// An open session's provider side and what its handshake said.
pub struct Opened {
    pub io: UpstreamIo,
    /// The subprotocol the provider chose (one the client offered).
    pub protocol: Option<HeaderValue>,
    /// The 101's other headers (request ids and the like), hop-by-hop and WebSocket ones gone.
    pub headers: HeaderMap,
}

/// What the provider answered the upgrade with.
pub enum Connected {
    Open(Box<Opened>),
    /// Not a 101: the provider's own answer (an authentication error, say), for the client.
    Refused(Response<hyper::body::Incoming>),
}

/// The longest the provider may take to answer the upgrade (after TLS): past it the client
/// gets a 502, nothing hangs.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Headers of the client's upgrade that the gateway sets itself on the provider's.
const OWN_HEADERS: &[header::HeaderName] = &[
    header::SEC_WEBSOCKET_KEY,
    header::SEC_WEBSOCKET_VERSION,
    header::SEC_WEBSOCKET_ACCEPT,
    // No extension is offered: permessage-deflate would hide the messages from inspection.
    header::SEC_WEBSOCKET_EXTENSIONS,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::CONNECTION,
    header::UPGRADE,
];

/// Open the provider's side: a dedicated TLS connection to `dst` with the client's SNI, and the
/// HTTP/1.1 upgrade with the prepared head (credentials already stripped and the vault key in).
pub async fn connect(
    upstreams: &Upstreams,
    dst: OrigDstAddr,
    sni: &str,
    mut parts: http::request::Parts,
    hello: &Hello,
) -> Result<Connected, WsError> {
    use crate::upstream::pool::SendError;
    let tls = upstreams
        .connect_dedicated(dst, sni)
        .await
        .map_err(|e| match e {
            SendError::Certificate(m) => WsError::Certificate(m),
            SendError::Unavailable(m) => WsError::Unavailable(m),
        })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| WsError::Unavailable(e.to_string()))?;
    tokio::spawn(async move {
        // Ends when the upgraded connection is handed over (or breaks).
        let _ = conn.with_upgrades().await;
    });
    for h in OWN_HEADERS {
        parts.headers.remove(h);
    }
    let key = tokio_tungstenite::tungstenite::handshake::client::generate_key();
    let h = &mut parts.headers;
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(
        header::SEC_WEBSOCKET_VERSION,
        HeaderValue::from_static("13"),
    );
    h.insert(
        header::SEC_WEBSOCKET_KEY,
        HeaderValue::from_str(&key).expect("base64 is a header value"),
    );
    // Origin-form on the wire; the Host header (the SNI) was set by `prepare`.
    let pq = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    parts.uri = pq
        .parse()
        .map_err(|_| WsError::BadUpgrade("bad request target".into()))?;
    parts.method = Method::GET;
    parts.version = http::Version::HTTP_11;
    parts.extensions = http::Extensions::new();
    let req = Request::from_parts(parts, Empty::<Bytes>::new());
    let resp = tokio::time::timeout(HANDSHAKE_TIMEOUT, sender.send_request(req))
        .await
        .map_err(|_| {
            WsError::Unavailable(format!(
                "no answer to the WebSocket upgrade within {HANDSHAKE_TIMEOUT:?}"
            ))
        })?
        .map_err(|e| WsError::Unavailable(e.to_string()))?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Ok(Connected::Refused(resp));
    }
    let protocol = check_101(resp.headers(), &key, hello)?;
    let mut headers = resp.headers().clone();
    for h in OWN_HEADERS.iter().chain([&header::SEC_WEBSOCKET_PROTOCOL]) {
        headers.remove(h);
    }
    for h in crate::policy::credentials::HOP_BY_HOP {
        headers.remove(*h);
    }
    let upgraded = tokio::time::timeout(HANDSHAKE_TIMEOUT, hyper::upgrade::on(resp))
        .await
        .map_err(|_| WsError::Handshake("the upgrade did not complete in time".into()))?
        .map_err(|e| WsError::Handshake(format!("the upgrade did not complete: {e}")))?;
    Ok(Connected::Open(Box::new(Opened {
        io: TokioIo::new(upgraded),
        protocol,
        headers,
    })))
}

/// Check the provider's 101 (RFC 6455 §4.1): `Upgrade: websocket`, `Connection: upgrade`, the
/// accept value of our key, no extension, and a subprotocol only one the client offered.
fn check_101(h: &HeaderMap, key: &str, hello: &Hello) -> Result<Option<HeaderValue>, WsError> {
    if !tokens(h, header::UPGRADE).iter().any(|t| t == "websocket") {
        return Err(WsError::Handshake(
            "no `Upgrade: websocket` in the 101".into(),
        ));
    }
    if !tokens(h, header::CONNECTION).iter().any(|t| t == "upgrade") {
        return Err(WsError::Handshake(
            "no `Connection: upgrade` in the 101".into(),
        ));
    }
    let want = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let got = h
        .get(header::SEC_WEBSOCKET_ACCEPT)
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    if got != Some(want.as_str()) {
        return Err(WsError::Handshake(
            "Sec-WebSocket-Accept does not answer the key sent".into(),
        ));
    }
    let ext = tokens(h, header::SEC_WEBSOCKET_EXTENSIONS);
    if let Some(e) = ext.first() {
        return Err(WsError::Extension(e.chars().take(60).collect()));
    }
    let chosen: Vec<&HeaderValue> = h.get_all(header::SEC_WEBSOCKET_PROTOCOL).iter().collect();
    match chosen.as_slice() {
        [] => Ok(None),
        [one] => {
            let p = one.to_str().unwrap_or("").trim();
            if hello.protocols.iter().any(|o| o == p) {
                Ok(Some((*one).clone()))
            } else {
                Err(WsError::Handshake(
                    "the provider chose a subprotocol the client did not offer".into(),
                ))
            }
        }
        _ => Err(WsError::Handshake(
            "the provider chose more than one subprotocol".into(),
        )),
    }
}

/// The client's answer: 101 with the accept value of its key (HTTP/1.1), or 200 (h2 extended
/// CONNECT); the provider's subprotocol and its other headers (already masked by the caller).
pub fn accept(hello: &Hello, opened: &Opened) -> Response<()> {
    let mut resp = Response::new(());
    *resp.headers_mut() = opened.headers.clone();
    if let Some(p) = &opened.protocol {
        resp.headers_mut()
            .insert(header::SEC_WEBSOCKET_PROTOCOL, p.clone());
    }
    match &hello.key {
        Some(key) if !hello.h2 => {
            *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            let h = resp.headers_mut();
            h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
            h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            let accept =
                tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
            h.insert(
                header::SEC_WEBSOCKET_ACCEPT,
                HeaderValue::from_str(&accept).expect("base64 is a header value"),
            );
        }
        _ => *resp.status_mut() = StatusCode::OK,
    }
    resp
}

//! A WebSocket session's part of its record: one exchange per session, with the timeline of
//! its messages (direction, time, kind, length, the masked text as delivered — audio replaced
//! by its length) and how it closed. Filled by [`crate::websocket`]; `gateway journal show`
//! prints it and `gateway replay` plays its server→client side.

use serde::{Deserialize, Serialize};

/// One message of a session as it was delivered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WsMessage {
    /// `client` (client→provider) or `server` (provider→client).
    pub dir: String,
    /// Milliseconds after the upgrade request arrived.
    pub at_ms: f64,
    /// text | binary | ping | pong | close
    pub kind: String,
    /// Bytes as delivered.
    pub len: usize,
    /// The text as delivered (masked; base64 audio replaced by `[audio: N bytes]`). `None`:
    /// binary that is not text, control frames, or past `journal.max_body`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// What the gateway did with it when it did more than relay it: masked | blocked | held |
    /// refused | too_large.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WsClose {
    /// client | server | gateway
    pub by: String,
    pub code: u16,
    pub reason: String,
}

/// The session: its timeline and its counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WsSession {
    /// The subprotocol the provider chose, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// `h1` (HTTP/1.1 Upgrade) or `h2` (extended CONNECT, RFC 8441) on the client's side.
    pub transport: String,
    pub messages: Vec<WsMessage>,
    /// Timeline entries not kept (past the bound), still counted below.
    pub dropped: u64,
    pub client_messages: u64,
    pub server_messages: u64,
    /// Bytes of audio (base64 audio in JSON, decoded, and binary frames that are not text):
    /// counted here, never kept.
    pub audio_bytes: u64,
    pub close: Option<WsClose>,
}

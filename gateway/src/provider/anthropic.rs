//! Anthropic Messages API. Key: `x-api-key`. Errors:
//! `{"type": "error", "error": {"type", "message"}}`. Streams: SSE with typed events
//! (`message_start`, `content_block_delta` with text / input_json / thinking deltas, ...).

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use serde_json::json;

use super::adapter::{Adapter, ErrorKind, Framing, Placement, sse_if_asked};

pub struct Anthropic;

impl Adapter for Anthropic {
    fn name(&self) -> &'static str {
        "anthropic"
    }
    fn placement(&self) -> Placement {
        Placement::Header("x-api-key")
    }
    fn endpoint(&self, _m: &Method, path: &str) -> &'static str {
        match path.trim_end_matches('/') {
            "/v1/messages" => "messages",
            "/v1/messages/count_tokens" => "messages.count_tokens",
            "/v1/complete" => "complete",
            p if p.starts_with("/v1/messages/batches") => "messages.batches",
            p if p.starts_with("/v1/models") => "models",
            p if p.starts_with("/v1/") => "other",
            _ => "unknown",
        }
    }
    fn framing(&self, _path: &str, _q: Option<&str>, h: &HeaderMap) -> Framing {
        sse_if_asked(h)
    }
    fn prompt_pointers(&self, endpoint: &str, body: &serde_json::Value) -> Vec<String> {
        match endpoint {
            "messages" | "messages.count_tokens" => super::prompt::anthropic_messages(body),
            _ => Vec::new(),
        }
    }
    fn error_body(&self, _status: StatusCode, kind: ErrorKind, message: &str) -> serde_json::Value {
        let typ = match kind {
            ErrorKind::MissingKey => "authentication_error",
            ErrorKind::BadRequest => "invalid_request_error",
            ErrorKind::Blocked => "permission_error",
            ErrorKind::UpstreamUnavailable => "overloaded_error",
            ErrorKind::Busy => "rate_limit_error",
            _ => "api_error",
        };
        json!({"type": "error", "error": {"type": typ, "message": message}})
    }
    /// The `ping` event the API itself sends; the SDKs skip it.
    fn keepalive_event(&self, _path: &str) -> Bytes {
        Bytes::from_static(b"event: ping\ndata: {\"type\": \"ping\"}\n\n")
    }
    /// `event: error`: the SDKs raise it as an `APIStatusError` carrying the body.
    fn stream_error_event(
        &self,
        _path: &str,
        status: StatusCode,
        kind: ErrorKind,
        message: &str,
    ) -> Bytes {
        Bytes::from(format!(
            "event: error\ndata: {}\n\n",
            self.error_body(status, kind, message)
        ))
    }
}

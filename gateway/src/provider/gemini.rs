//! Gemini (generativelanguage.googleapis.com). Key: `x-goog-api-key` (a `?key=` the client
//! sent is stripped like any other credential). Errors: `{"error": {"code", "message",
//! "status"}}`. Streams: `:streamGenerateContent?alt=sse` is SSE; without `alt=sse` it is one
//! JSON array delivered element by element.

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use serde_json::json;

use super::adapter::{Adapter, Billing, ErrorKind, Framing, Placement};

pub struct Gemini;

impl Adapter for Gemini {
    fn name(&self) -> &'static str {
        "gemini"
    }
    fn placement(&self) -> Placement {
        Placement::Header("x-goog-api-key")
    }
    /// Google APIs also take `?access_token=` (OAuth; `?oauth_token=` its older name) and
    /// `?authorization=`.
    fn credential_params(&self) -> &'static [&'static str] {
        &["access-token", "oauth-token", "authorization"]
    }
    /// The quota / billing project of a Google API request.
    fn billing_headers(&self) -> &'static [(&'static str, Billing)] {
        &[("x-goog-user-project", Billing::Project)]
    }
    /// `path` is the routing form (case-folded), so the methods are compared without case.
    fn endpoint(&self, _m: &Method, path: &str) -> &'static str {
        let ends =
            |m: &str| path.len() >= m.len() && path[path.len() - m.len()..].eq_ignore_ascii_case(m);
        if ends(":streamGenerateContent") {
            "streamGenerateContent"
        } else if ends(":generateContent") {
            "generateContent"
        } else if ends(":countTokens") {
            "countTokens"
        } else if ends(":embedContent") || ends(":batchEmbedContents") {
            "embedContent"
        } else if path.starts_with("/ws/")
            && path.to_ascii_lowercase().contains(".bidigeneratecontent")
        {
            // Gemini Live, a WebSocket session (crate::websocket).
            "live"
        } else if path.contains("/models") {
            "models"
        } else {
            "other"
        }
    }
    fn framing(&self, path: &str, query: Option<&str>, _h: &HeaderMap) -> Framing {
        if !path.ends_with(":streamGenerateContent") {
            return Framing::Plain;
        }
        let sse = query.is_some_and(|q| q.split('&').any(|kv| kv.eq_ignore_ascii_case("alt=sse")));
        if sse {
            Framing::Sse
        } else {
            Framing::JsonArray
        }
    }
    fn prompt_pointers(&self, endpoint: &str, body: &serde_json::Value) -> Vec<String> {
        match endpoint {
            "generateContent" | "streamGenerateContent" | "countTokens" | "embedContent" => {
                super::prompt::gemini(body)
            }
            _ => Vec::new(),
        }
    }
    fn error_body(&self, status: StatusCode, kind: ErrorKind, message: &str) -> serde_json::Value {
        let st = match kind {
            ErrorKind::MissingKey => "UNAUTHENTICATED",
            ErrorKind::BadRequest => "INVALID_ARGUMENT",
            ErrorKind::UpstreamUnavailable | ErrorKind::UpstreamCertificate => "UNAVAILABLE",
            ErrorKind::Internal => "INTERNAL",
            ErrorKind::Blocked => "PERMISSION_DENIED",
            ErrorKind::Busy => "RESOURCE_EXHAUSTED",
        };
        json!({"error": {"code": status.as_u16(), "message": message, "status": st}})
    }
    /// Only `alt=sse` streams (a JSON-array stream is held like a plain request).
    fn held_stream(&self, _path: &str, framing: Framing, _stream_in_body: bool) -> bool {
        framing == Framing::Sse
    }
    /// A blank line: an SSE comment would reach google-genai's stream reader as a chunk it
    /// tries to parse as JSON (it takes every line that is not `data: ` for part of an error
    /// document) and fails on; a blank line ends no event and is skipped by every SSE reader.
    fn keepalive_event(&self, _path: &str) -> Bytes {
        Bytes::from_static(b"\n")
    }
}

//! OpenAI: chat completions, Responses API, embeddings and every other /v1 path.
//! Key: `authorization: Bearer`. Errors: `{"error": {"message", "type", "param", "code"}}`.
//! Streams: SSE, `data: {...}` chunks ending with `data: [DONE]` (chat), typed events
//! (`event: response.output_text.delta`) for the Responses API.

use http::{HeaderMap, Method, StatusCode};
use serde_json::json;

use super::adapter::{Adapter, Billing, ErrorKind, Framing, Placement, kind_label, sse_if_asked};

pub struct OpenAi;

pub fn openai_endpoint(path: &str) -> &'static str {
    let p = path.trim_end_matches('/');
    let p = p.strip_prefix("/openai").unwrap_or(p);
    match p {
        "/v1/chat/completions" => "chat.completions",
        "/v1/completions" => "completions",
        "/v1/responses" => "responses",
        "/v1/embeddings" => "embeddings",
        "/v1/models" => "models",
        // WebSocket only (crate::websocket); Azure's is `/openai/realtime`.
        "/v1/realtime" | "/realtime" => "realtime",
        _ if p.starts_with("/v1/realtime/") => "realtime",
        _ if p.starts_with("/v1/responses/") => "responses",
        _ if p.starts_with("/v1/models/") => "models",
        _ if p.starts_with("/v1/audio/") => "audio",
        _ if p.starts_with("/v1/images/") => "images",
        _ if p.starts_with("/v1/files") => "files",
        _ if p.starts_with("/v1/") => "other",
        _ => "unknown",
    }
}

/// Prompt locations for the OpenAI wire format (OpenAI, Azure, OpenAI-compatible hosts).
pub fn openai_prompt_pointers(endpoint: &str, body: &serde_json::Value) -> Vec<String> {
    match endpoint {
        "responses" => super::prompt::openai_responses(body),
        "chat.completions" | "completions" | "embeddings" => super::prompt::openai_chat(body),
        _ => Vec::new(),
    }
}

pub fn openai_error(status: StatusCode, kind: ErrorKind, message: &str) -> serde_json::Value {
    let typ = match kind {
        ErrorKind::MissingKey => "authentication_error",
        ErrorKind::BadRequest | ErrorKind::Blocked => "invalid_request_error",
        ErrorKind::Busy => "rate_limit_error",
        _ => "api_error",
    };
    let _ = status;
    json!({"error": {"message": message, "type": typ, "param": null, "code": kind_label(kind)}})
}

impl Adapter for OpenAi {
    fn name(&self) -> &'static str {
        "openai"
    }
    fn placement(&self) -> Placement {
        Placement::Bearer
    }
    fn billing_headers(&self) -> &'static [(&'static str, Billing)] {
        &[
            ("openai-organization", Billing::Organization),
            ("openai-project", Billing::Project),
        ]
    }
    fn endpoint(&self, _m: &Method, path: &str) -> &'static str {
        openai_endpoint(path)
    }
    fn framing(&self, _path: &str, _q: Option<&str>, h: &HeaderMap) -> Framing {
        sse_if_asked(h)
    }
    fn prompt_pointers(&self, endpoint: &str, body: &serde_json::Value) -> Vec<String> {
        openai_prompt_pointers(endpoint, body)
    }
    fn error_body(&self, status: StatusCode, kind: ErrorKind, message: &str) -> serde_json::Value {
        openai_error(status, kind, message)
    }
}

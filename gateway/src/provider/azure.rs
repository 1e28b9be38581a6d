//! Azure OpenAI: `/openai/deployments/{name}/...?api-version=` and the `/openai/v1/` surface.
//! Key: `api-key`. Errors: `{"error": {"code": "<status>", "message"}}`. Streams: as OpenAI.

use http::{HeaderMap, Method, StatusCode};
use serde_json::json;

use super::{
    adapter::{Adapter, ErrorKind, Framing, Placement, sse_if_asked},
    openai::{openai_endpoint, openai_prompt_pointers},
};

pub struct Azure;

impl Adapter for Azure {
    fn name(&self) -> &'static str {
        "azure-openai"
    }
    fn placement(&self) -> Placement {
        Placement::Header("api-key")
    }
    /// Azure AI services (API Management) also take `?subscription-key=`.
    fn credential_params(&self) -> &'static [&'static str] {
        &["subscription-key"]
    }
    fn endpoint(&self, _m: &Method, path: &str) -> &'static str {
        if let Some(rest) = path.strip_prefix("/openai/deployments/") {
            let op = rest.split_once('/').map(|(_, op)| op).unwrap_or("");
            return match op.trim_end_matches('/') {
                "chat/completions" => "chat.completions",
                "completions" => "completions",
                "embeddings" => "embeddings",
                "responses" => "responses",
                _ => "other",
            };
        }
        openai_endpoint(path)
    }
    fn framing(&self, _path: &str, _q: Option<&str>, h: &HeaderMap) -> Framing {
        sse_if_asked(h)
    }
    fn prompt_pointers(&self, endpoint: &str, body: &serde_json::Value) -> Vec<String> {
        openai_prompt_pointers(endpoint, body)
    }
    fn error_body(&self, status: StatusCode, _kind: ErrorKind, message: &str) -> serde_json::Value {
        json!({"error": {"code": status.as_u16().to_string(), "message": message}})
    }
}

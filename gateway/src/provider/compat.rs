//! OpenAI-compatible hosts (Mistral, Groq, DeepSeek, xAI, OpenRouter, Together, Fireworks,
//! Cohere's compatibility API, self-hosted servers): OpenAI's wire format and error shape,
//! `authorization: Bearer`, paths that may carry another prefix (`/openai/v1`, `/api/v1`).

use http::{HeaderMap, Method, StatusCode};

use super::{
    adapter::{Adapter, ErrorKind, Framing, Placement, sse_if_asked},
    openai::{openai_endpoint, openai_error, openai_prompt_pointers},
};

pub struct Compat;

impl Adapter for Compat {
    fn name(&self) -> &'static str {
        "openai-compatible"
    }
    fn placement(&self) -> Placement {
        Placement::Bearer
    }
    fn endpoint(&self, _m: &Method, path: &str) -> &'static str {
        // Strip a leading prefix before /v1 (`/api/v1/...`, `/openai/v1/...`, `/inference/v1`).
        let p = path.find("/v1/").map(|i| &path[i..]).unwrap_or(path);
        openai_endpoint(p)
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

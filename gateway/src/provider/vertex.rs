//! Google Vertex AI (`aiplatform.googleapis.com`, regional `{region}-aiplatform.googleapis.com`).
//!
//! Model calls are `/{v1|v1beta1}/projects/{p}/locations/{l}/publishers/{publisher}/models/
//! {model}:{method}`; the publisher picks the wire format: `google` is Gemini
//! (`:generateContent`, `:streamGenerateContent` as SSE with `?alt=sse` or one JSON array,
//! `:countTokens`), `anthropic` is the Anthropic Messages API (`:rawPredict`, and
//! `:streamRawPredict` answered with Anthropic's typed SSE events). The OpenAI-compatible
//! surface (`.../endpoints/openapi/chat/completions`) speaks OpenAI chat.
//!
//! Key: `authorization: Bearer <access token>`; the vault entry is a service-account JSON key
//! and the token is minted from it by the vault stage ([`crate::vault::gcp`]). The client's
//! OAuth token (`Authorization`, `?access_token=`), API key (`x-goog-api-key`, `?key=`) and
//! billing project (`x-goog-user-project`) go like any credential. Errors: Google's
//! `{"error": {"code", "message", "status"}}` whatever the publisher: the gateway answers as
//! the Vertex front end does (its own authentication and quota errors have that shape, and the
//! Anthropic SDK reads the message from it).

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};

use super::{
    adapter::{Adapter, Billing, ErrorKind, Framing, Placement, sse_if_asked},
    anthropic::Anthropic,
    gemini::Gemini,
};

pub struct Vertex;

/// The publisher (`google`, `anthropic`, ...) and the method (`generateContent`, `rawPredict`,
/// ...) of a model call, from its path.
pub fn model_call(path: &str) -> Option<(&str, &str)> {
    let mut segs = path.trim_start_matches('/').split('/');
    // `v1` or `v1beta1` first; then look for `publishers/{publisher}/models/{model}:{method}`.
    segs.next().filter(|v| v.starts_with("v1"))?;
    let rest: Vec<&str> = segs.collect();
    let at = rest.iter().position(|s| *s == "publishers")?;
    match &rest[at..] {
        [_, publisher, "models", last] => {
            let (_, method) = last.rsplit_once(':')?;
            Some((publisher, method))
        }
        _ => None,
    }
}

fn is_openapi_chat(path: &str) -> bool {
    path.trim_end_matches('/')
        .ends_with("/endpoints/openapi/chat/completions")
}

impl Adapter for Vertex {
    fn name(&self) -> &'static str {
        "vertex"
    }
    fn placement(&self) -> Placement {
        Placement::Bearer
    }
    /// As for every Google API: `?access_token=` (and its older names), `?authorization=`.
    fn credential_params(&self) -> &'static [&'static str] {
        Gemini.credential_params()
    }
    fn billing_headers(&self) -> &'static [(&'static str, Billing)] {
        Gemini.billing_headers()
    }
    fn endpoint(&self, m: &Method, path: &str) -> &'static str {
        if is_openapi_chat(path) {
            return "chat.completions";
        }
        // `path` is the routing form (case-folded): methods compared without case.
        match model_call(path).map(|(_, m)| m) {
            Some(x) if x.eq_ignore_ascii_case("rawPredict") => "rawPredict",
            Some(x) if x.eq_ignore_ascii_case("streamRawPredict") => "streamRawPredict",
            Some(x) if x.eq_ignore_ascii_case("predict") => "predict",
            Some(_) => Gemini.endpoint(m, path),
            None if path.contains("/models") => "models",
            None if path.starts_with("/v1") => "other",
            None => "unknown",
        }
    }
    fn framing(&self, path: &str, query: Option<&str>, h: &HeaderMap) -> Framing {
        match model_call(path) {
            Some((_, "streamRawPredict")) => Framing::Sse,
            Some((_, "streamGenerateContent")) => Gemini.framing(path, query, h),
            _ => sse_if_asked(h),
        }
    }
    fn prompt_pointers(&self, endpoint: &str, body: &serde_json::Value) -> Vec<String> {
        match endpoint {
            "rawPredict" | "streamRawPredict" => super::prompt::anthropic_messages(body),
            "chat.completions" => super::prompt::openai_chat(body),
            other => Gemini.prompt_pointers(other, body),
        }
    }
    fn error_body(&self, status: StatusCode, kind: ErrorKind, message: &str) -> serde_json::Value {
        Gemini.error_body(status, kind, message)
    }
    /// A held stream's keepalives and closing error are the publisher's own: Anthropic's
    /// `ping` and `event: error` for Claude, Gemini's blank line and error object for Gemini.
    fn keepalive_event(&self, path: &str) -> Bytes {
        match model_call(path) {
            Some(("anthropic", _)) => Anthropic.keepalive_event(path),
            Some(("google", _)) => Gemini.keepalive_event(path),
            _ => Bytes::from_static(b": keepalive\n\n"),
        }
    }
    fn stream_error_event(
        &self,
        path: &str,
        status: StatusCode,
        kind: ErrorKind,
        message: &str,
    ) -> Bytes {
        match model_call(path) {
            Some(("anthropic", _)) => Anthropic.stream_error_event(path, status, kind, message),
            _ => Bytes::from(format!(
                "data: {}\n\n",
                self.error_body(status, kind, message)
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const GEMINI: &str =
        "/v1/projects/p-1/locations/us-central1/publishers/google/models/gemini-2.0-flash";
    const CLAUDE: &str =
        "/v1/projects/p-1/locations/us-east5/publishers/anthropic/models/claude-sonnet-4@20250514";

    #[test]
    fn the_publisher_and_method_come_from_the_path() {
        assert_eq!(
            model_call(&format!("{GEMINI}:generateContent")),
            Some(("google", "generateContent"))
        );
        assert_eq!(
            model_call(&format!("{CLAUDE}:streamRawPredict")),
            Some(("anthropic", "streamRawPredict"))
        );
        let beta = GEMINI.replace("/v1/", "/v1beta1/");
        assert_eq!(
            model_call(&format!("{beta}:countTokens")),
            Some(("google", "countTokens"))
        );
        for no in [
            "/v1/projects/p/locations/l/endpoints/123:predict",
            "/v1/projects/p/locations/l/publishers/google/models",
            "/v2/projects/p/locations/l/publishers/google/models/m:generateContent",
            "/v1/publishers/google/models/m",
        ] {
            assert_eq!(model_call(no), None, "{no}");
        }
    }

    #[test]
    fn endpoints_framing_and_prompts_follow_the_publisher() {
        let v = Vertex;
        let post = Method::POST;
        let none = HeaderMap::new();
        let cases = [
            (
                format!("{GEMINI}:generateContent"),
                None,
                "generateContent",
                Framing::Plain,
            ),
            (
                format!("{GEMINI}:streamGenerateContent"),
                Some("alt=sse"),
                "streamGenerateContent",
                Framing::Sse,
            ),
            (
                format!("{GEMINI}:streamGenerateContent"),
                None,
                "streamGenerateContent",
                Framing::JsonArray,
            ),
            (
                format!("{GEMINI}:countTokens"),
                None,
                "countTokens",
                Framing::Plain,
            ),
            (
                format!("{CLAUDE}:rawPredict"),
                None,
                "rawPredict",
                Framing::Plain,
            ),
            (
                format!("{CLAUDE}:streamRawPredict"),
                None,
                "streamRawPredict",
                Framing::Sse,
            ),
            (
                "/v1beta1/projects/p/locations/global/endpoints/openapi/chat/completions".into(),
                None,
                "chat.completions",
                Framing::Plain,
            ),
            (
                "/v1/projects/p/locations/l/publishers/google/models".into(),
                None,
                "models",
                Framing::Plain,
            ),
            (
                "/v1/projects/p/locations/l/operations".into(),
                None,
                "other",
                Framing::Plain,
            ),
        ];
        for (path, q, endpoint, framing) in cases {
            assert_eq!(v.endpoint(&post, &path), endpoint, "{path}");
            assert_eq!(v.framing(&path, q, &none), framing, "{path} {q:?}");
        }
        let claude = json!({"anthropic_version": "vertex-2023-10-16", "messages": [{"role": "user", "content": "hi"}]});
        assert_eq!(
            v.prompt_pointers("streamRawPredict", &claude),
            vec!["/messages/0/content"]
        );
        let gemini = json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]});
        assert_eq!(
            v.prompt_pointers("generateContent", &gemini),
            vec!["/contents/0/parts/0/text"]
        );
        assert!(v.prompt_pointers("models", &gemini).is_empty());
    }

    #[test]
    fn held_streams_speak_the_publishers_stream() {
        let claude = format!("{CLAUDE}:streamRawPredict");
        let gemini = format!("{GEMINI}:streamGenerateContent");
        assert!(Vertex.keepalive_event(&claude).starts_with(b"event: ping"));
        assert_eq!(&Vertex.keepalive_event(&gemini)[..], b"\n");
        let e = Vertex.stream_error_event(&claude, StatusCode::FORBIDDEN, ErrorKind::Blocked, "no");
        assert!(e.starts_with(b"event: error\ndata: "), "{e:?}");
        let e = Vertex.stream_error_event(&gemini, StatusCode::FORBIDDEN, ErrorKind::Blocked, "no");
        assert!(e.starts_with(b"data: {\"error\""), "{e:?}");
    }

    #[test]
    fn errors_are_googles_and_the_token_is_a_bearer() {
        let b = Vertex.error_body(StatusCode::BAD_GATEWAY, ErrorKind::UpstreamUnavailable, "m");
        assert_eq!(
            b,
            json!({"error": {"code": 502, "message": "m", "status": "UNAVAILABLE"}})
        );
        let mut h = HeaderMap::new();
        Vertex
            .inject(&mut h, &crate::vault::Secret::new("ya29.minted"))
            .unwrap();
        assert_eq!(h["authorization"], "Bearer ya29.minted");
        assert!(Vertex.credential_params().contains(&"access-token"));
    }

    #[test]
    fn the_builtin_covers_the_global_and_every_regional_host() {
        let c = crate::provider::Catalog::from_config(&crate::config::Config::default());
        for host in [
            "aiplatform.googleapis.com",
            "us-central1-aiplatform.googleapis.com",
            "europe-west4-aiplatform.googleapis.com",
            "US-EAST5-aiplatform.googleapis.com.",
        ] {
            assert_eq!(
                c.match_host(host).map(|p| p.name.as_str()),
                Some("vertex"),
                "{host}"
            );
        }
        for host in [
            "x.us-central1-aiplatform.googleapis.com",
            "us-central1-aiplatform.googleapis.com.evil.example",
            "aiplatform.googleapis.com.evil.example",
        ] {
            assert!(c.match_host(host).is_none(), "{host}");
        }
        let v = c.iter().find(|p| p.name == "vertex").unwrap();
        assert_eq!(v.api, crate::provider::Api::Vertex);
        assert_eq!(v.key.as_deref(), Some("vertex"));
        // Only the global name is resolved up front; regional ones are learned by DNS.
        assert_eq!(
            v.resolvable_hosts().collect::<Vec<_>>(),
            vec!["aiplatform.googleapis.com"]
        );
    }
}

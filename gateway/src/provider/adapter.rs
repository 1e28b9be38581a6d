//! What every provider adapter knows (DESIGN §6): where its credential goes (and where else it
//! accepts one, so a client's is removed), which headers pick the billed account, how its errors
//! look, which endpoint a request is for, and how its streamed answers are framed.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header::CONTENT_TYPE};

use crate::vault::{Entry, Secret};

/// Why the gateway itself answers a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// No vault key is configured (or stored) for this provider and caller.
    MissingKey,
    /// The request cannot be forwarded safely (malformed, or credentials in odd places).
    BadRequest,
    /// The upstream presented a certificate that does not verify.
    UpstreamCertificate,
    /// The upstream could not be reached or broke the exchange.
    UpstreamUnavailable,
    /// The gateway failed internally (fail-closed).
    Internal,
    /// A policy rule refused the request (or the answer could not be inspected).
    Blocked,
    /// Too much is waiting already (held requests); retrying later may work.
    Busy,
}

/// How a response stream is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// A single JSON document (or anything else): not a stream.
    Plain,
    /// Server-sent events (`data:` lines).
    Sse,
    /// Gemini's streamGenerateContent without `alt=sse`: one JSON array, element by element.
    JsonArray,
    /// AWS event-stream messages (`application/vnd.amazon.eventstream`): Bedrock's streams.
    EventStream,
}

/// Where the vault key goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// `authorization: Bearer <key>`
    Bearer,
    /// `<header>: <key>`
    Header(&'static str),
}

/// Which field of a vault entry a billing header is set from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Billing {
    /// `organization = "..."`
    Organization,
    /// `project = "..."`
    Project,
}

/// Why a request cannot be signed for its provider ([`Adapter::sign`]).
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The client's request cannot be signed as it is (answered 400).
    #[error("{0}")]
    BadRequest(String),
    /// The vault entry is not a credential this provider can sign with (never quotes it).
    #[error("{0}")]
    BadEntry(String),
}

pub trait Adapter: Send + Sync + 'static {
    /// Short name for logs and the journal.
    fn name(&self) -> &'static str;

    fn placement(&self) -> Placement;

    /// Query parameters this API takes a credential in besides the ones every API's requests
    /// lose ([`crate::policy::credentials::CREDENTIAL_PARAMS`]); lower case, `-` for `_`.
    fn credential_params(&self) -> &'static [&'static str] {
        &[]
    }

    /// Headers that choose the account or project a request is billed to, each with the vault
    /// entry field it is set from (every one of [`crate::policy::credentials::BILLING_HEADERS`]
    /// the client sent is gone by then).
    fn billing_headers(&self) -> &'static [(&'static str, Billing)] {
        &[]
    }

    /// The first path segment after which one segment may carry an encoded `/` (kept encoded:
    /// a Bedrock model id that is an ARN, `/model/arn%3A...%2F.../converse`); `None`: an encoded
    /// `/` is refused anywhere ([`crate::request::path`]).
    fn encoded_slash_segment(&self) -> Option<&'static str> {
        None
    }

    /// The request head as the client sent it, credentials still on it (never quoted): a
    /// reason to refuse it before anything is read or stripped (`Err`: answered 400).
    fn check_head(&self, _sni: &str, _parts: &http::request::Parts) -> Result<(), String> {
        Ok(())
    }

    /// The vault entry's secret as the answer-side detector knows it (the whole key for most).
    fn answer_key(&self, entry: &Entry) -> Secret {
        entry.key.clone()
    }

    /// The model a request names in its path rather than its body (Bedrock's
    /// `/model/{modelId}/...`), for the journal and approvers.
    fn model_in_path(&self, _path: &str) -> Option<String> {
        None
    }

    /// The request is signed over its body ([`Self::sign`]): the body is read whole first.
    fn signs_payload(&self) -> bool {
        false
    }

    /// The last step before a request goes upstream, for every adapter: its body final (masked,
    /// approved), `entry` the vault entry put on it (`None`: the client presented no
    /// credential). Signing APIs (Bedrock's SigV4) sign here; the rest do nothing.
    fn sign(
        &self,
        _sni: &str,
        _parts: &mut http::request::Parts,
        _body: &[u8],
        _entry: Option<&Entry>,
    ) -> Result<(), SignError> {
        Ok(())
    }

    /// A label for the endpoint (fixed set, safe as a metric label).
    fn endpoint(&self, method: &Method, path: &str) -> &'static str;

    fn framing(&self, path: &str, query: Option<&str>, request_headers: &HeaderMap) -> Framing;

    /// JSON pointers to the prompt text in a request body of `endpoint` (see [`super::prompt`]).
    /// Empty for endpoints that carry no prompt.
    fn prompt_pointers(&self, endpoint: &str, body: &serde_json::Value) -> Vec<String>;

    /// The provider's own JSON error body.
    fn error_body(&self, status: StatusCode, kind: ErrorKind, message: &str) -> serde_json::Value;

    /// Put exactly one credential, the vault's, on the request. The value is marked sensitive
    /// so HPACK never indexes it.
    fn inject(&self, headers: &mut HeaderMap, key: &Secret) -> Result<(), InvalidKey> {
        // The formatted value is wiped when dropped, like the key itself (the HeaderValue
        // holds its own copy for as long as the request lives).
        let (name, value) = match self.placement() {
            Placement::Bearer => (
                http::header::AUTHORIZATION.as_str(),
                zeroize::Zeroizing::new(format!("Bearer {}", key.expose())),
            ),
            Placement::Header(h) => (h, zeroize::Zeroizing::new(key.expose().to_string())),
        };
        let mut v = HeaderValue::from_str(&value).map_err(|_| InvalidKey)?;
        v.set_sensitive(true);
        headers.insert(http::HeaderName::from_static(name), v);
        Ok(())
    }

    /// The vault entry on the request: its key in the provider's place ([`Self::inject`]) and
    /// its billing fields in the headers the API has for them.
    fn inject_entry(&self, headers: &mut HeaderMap, entry: &Entry) -> Result<(), InvalidKey> {
        self.inject(headers, &entry.key)?;
        for (name, field) in self.billing_headers() {
            let value = match field {
                Billing::Organization => entry.organization.as_deref(),
                Billing::Project => entry.project.as_deref(),
            };
            if let Some(v) = value {
                let v = HeaderValue::from_str(v).map_err(|_| InvalidKey)?;
                headers.insert(http::HeaderName::from_static(name), v);
            }
        }
        Ok(())
    }

    /// Is a held request of this framing answered at once, as a stream kept alive until it is
    /// decided ([`Self::keepalive_event`])? `path`: the request's (an API whose wire format
    /// depends on it decides by it); `stream_in_body`: the body asks for a streamed
    /// answer (`"stream": true`). The one place that decides it: SSE answers (asked for in the
    /// body or by `accept`); not JSON-array streams (a keepalive cannot be put between their
    /// elements without the client's parser seeing it).
    fn held_stream(&self, path: &str, framing: Framing, stream_in_body: bool) -> bool {
        let _ = path;
        framing == Framing::Sse || (framing == Framing::Plain && stream_in_body)
    }

    /// What a held stream of a request to `path` is sent while it waits: an SSE comment line,
    /// which every SSE parser skips.
    fn keepalive_event(&self, path: &str) -> Bytes {
        let _ = path;
        Bytes::from_static(b": keepalive\n\n")
    }

    /// An error as the last event of a stream already answered with 200 (a held stream that
    /// was denied, timed out, or refused by the provider): the error body as a `data:` event,
    /// which the openai SDKs raise as an `APIError` with its message.
    fn stream_error_event(
        &self,
        path: &str,
        status: StatusCode,
        kind: ErrorKind,
        message: &str,
    ) -> Bytes {
        let _ = path;
        Bytes::from(format!(
            "data: {}\n\n",
            self.error_body(status, kind, message)
        ))
    }

    /// A complete error response: status, JSON body in the provider's shape.
    fn error_response(
        &self,
        status: StatusCode,
        kind: ErrorKind,
        message: &str,
    ) -> (StatusCode, HeaderMap, Bytes) {
        let body = self.error_body(status, kind, message);
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(
            "x-gateway-error",
            HeaderValue::from_static(kind_label(kind)),
        );
        (status, h, Bytes::from(body.to_string()))
    }
}

/// The vault key (or a billing field of its entry) cannot be a header value (control
/// characters): reported without the value.
#[derive(Debug, thiserror::Error)]
#[error("the vault entry's key or billing field is not a valid header value")]
pub struct InvalidKey;

pub fn kind_label(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::MissingKey => "missing_vault_key",
        ErrorKind::BadRequest => "bad_request",
        ErrorKind::UpstreamCertificate => "upstream_certificate",
        ErrorKind::UpstreamUnavailable => "upstream_unavailable",
        ErrorKind::Internal => "gateway_internal",
        ErrorKind::Blocked => "blocked_by_policy",
        ErrorKind::Busy => "too_many_holds",
    }
}

/// The framing of APIs whose streams are SSE when the client asks for them (OpenAI, Azure,
/// OpenAI-compatible, Anthropic).
pub fn sse_if_asked(headers: &HeaderMap) -> Framing {
    if wants_sse(headers) {
        Framing::Sse
    } else {
        Framing::Plain
    }
}

/// SSE when the client asked for it: `accept: text/event-stream` or `"stream": true` is only
/// known from the body, so callers also look at the response's content type.
pub fn wants_sse(headers: &HeaderMap) -> bool {
    headers
        .get_all(http::header::ACCEPT)
        .iter()
        .any(|v| v.to_str().is_ok_and(|s| s.contains("text/event-stream")))
}

#[cfg(test)]
mod tests {
    use http::{HeaderMap, HeaderValue, Method};

    use super::*;
    use crate::{provider::Api, vault::Secret};

    #[test]
    fn endpoints_per_api() {
        let post = Method::POST;
        let cases = [
            (Api::OpenAi, "/v1/chat/completions", "chat.completions"),
            (Api::OpenAi, "/v1/responses", "responses"),
            (Api::OpenAi, "/v1/responses/resp_1/cancel", "responses"),
            (Api::OpenAi, "/v1/embeddings", "embeddings"),
            (Api::OpenAi, "/v1/audio/speech", "audio"),
            (Api::OpenAi, "/v1/batches", "other"),
            (Api::OpenAi, "/v2/new", "unknown"),
            (Api::Anthropic, "/v1/messages", "messages"),
            (
                Api::Anthropic,
                "/v1/messages/count_tokens",
                "messages.count_tokens",
            ),
            (
                Api::Gemini,
                "/v1beta/models/gemini-2.0-flash:generateContent",
                "generateContent",
            ),
            (
                Api::Gemini,
                "/v1beta/models/gemini-2.0-flash:streamGenerateContent",
                "streamGenerateContent",
            ),
            (
                Api::Azure,
                "/openai/deployments/gpt4o/chat/completions",
                "chat.completions",
            ),
            (
                Api::Azure,
                "/openai/deployments/emb/embeddings",
                "embeddings",
            ),
            (
                Api::Azure,
                "/openai/v1/chat/completions",
                "chat.completions",
            ),
            (Api::Azure, "/openai/v1/responses", "responses"),
            (
                Api::OpenAiCompatible,
                "/api/v1/chat/completions",
                "chat.completions",
            ),
            (Api::OpenAiCompatible, "/openai/v1/embeddings", "embeddings"),
            (
                Api::OpenAiCompatible,
                "/v1/chat/completions",
                "chat.completions",
            ),
        ];
        let cases = cases.into_iter().chain([
            (
                Api::Vertex,
                "/v1/projects/p/locations/us-east5/publishers/anthropic/models/c@1:streamRawPredict",
                "streamRawPredict",
            ),
            (
                Api::Vertex,
                "/v1/projects/p/locations/us-east5/publishers/google/models/g:generateContent",
                "generateContent",
            ),
            (Api::Bedrock, "/model/m/converse-stream", "converse-stream"),
        ]);
        for (api, path, want) in cases {
            assert_eq!(api.adapter().endpoint(&post, path), want, "{api:?} {path}");
            // The adapters are asked with the routing form of the path (case-folded, as
            // `http::handle` does): the same endpoint.
            let routing = crate::request::path::for_routing(path);
            assert_eq!(
                api.adapter().endpoint(&post, &routing),
                want,
                "{api:?} {routing}"
            );
        }
    }

    #[test]
    fn prompt_pointers_follow_the_endpoint() {
        let chat = serde_json::json!({"messages": [{"role": "user", "content": "hi"}]});
        for api in [Api::OpenAi, Api::Azure, Api::OpenAiCompatible] {
            assert_eq!(
                api.adapter().prompt_pointers("chat.completions", &chat),
                vec!["/messages/0/content"]
            );
            assert!(api.adapter().prompt_pointers("models", &chat).is_empty());
        }
        assert_eq!(
            Api::Anthropic.adapter().prompt_pointers("messages", &chat),
            vec!["/messages/0/content"]
        );
        let g = serde_json::json!({"contents": [{"parts": [{"text": "hi"}]}]});
        assert_eq!(
            Api::Gemini
                .adapter()
                .prompt_pointers("streamGenerateContent", &g),
            vec!["/contents/0/parts/0/text"]
        );
        assert!(
            Api::Gemini
                .adapter()
                .prompt_pointers("models", &g)
                .is_empty()
        );
    }

    #[test]
    fn stream_framing() {
        let mut sse = HeaderMap::new();
        sse.insert("accept", HeaderValue::from_static("text/event-stream"));
        let none = HeaderMap::new();
        let g = Api::Gemini.adapter();
        assert_eq!(
            g.framing(
                "/v1beta/models/m:streamGenerateContent",
                Some("alt=sse"),
                &none
            ),
            Framing::Sse
        );
        assert_eq!(
            g.framing("/v1beta/models/m:streamGenerateContent", None, &none),
            Framing::JsonArray
        );
        assert_eq!(
            g.framing("/v1beta/models/m:generateContent", Some("alt=sse"), &none),
            Framing::Plain
        );
        assert_eq!(
            Api::OpenAi
                .adapter()
                .framing("/v1/chat/completions", None, &sse),
            Framing::Sse
        );
        assert_eq!(
            Api::Anthropic
                .adapter()
                .framing("/v1/messages", None, &none),
            Framing::Plain
        );
    }

    #[test]
    fn injection_places_one_sensitive_credential() {
        let key = Secret::new("sk-real");
        for (api, name, value) in [
            (Api::OpenAi, "authorization", "Bearer sk-real"),
            (Api::OpenAiCompatible, "authorization", "Bearer sk-real"),
            (Api::Anthropic, "x-api-key", "sk-real"),
            (Api::Gemini, "x-goog-api-key", "sk-real"),
            (Api::Azure, "api-key", "sk-real"),
        ] {
            let mut h = HeaderMap::new();
            api.adapter().inject(&mut h, &key).unwrap();
            assert_eq!(h.len(), 1);
            let v = h.get(name).unwrap();
            assert_eq!(v, value);
            assert!(v.is_sensitive(), "{api:?}: never HPACK-indexed");
        }
        let mut h = HeaderMap::new();
        assert!(
            Api::OpenAi
                .adapter()
                .inject(&mut h, &Secret::new("bad\nkey"))
                .is_err()
        );
    }

    #[test]
    fn billing_fields_of_the_entry_go_in_the_apis_own_headers() {
        let entry = crate::vault::Entry {
            key: Secret::new("sk-real"),
            organization: Some("org-vault".into()),
            project: Some("proj_vault".into()),
        };
        let headers = |api: Api| {
            let mut h = HeaderMap::new();
            api.adapter().inject_entry(&mut h, &entry).unwrap();
            let mut v: Vec<String> = h
                .iter()
                .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap()))
                .collect();
            v.sort();
            v
        };
        assert_eq!(
            headers(Api::OpenAi),
            vec![
                "authorization: Bearer sk-real",
                "openai-organization: org-vault",
                "openai-project: proj_vault"
            ]
        );
        assert_eq!(
            headers(Api::Gemini),
            vec!["x-goog-api-key: sk-real", "x-goog-user-project: proj_vault"]
        );
        assert_eq!(headers(Api::Anthropic), vec!["x-api-key: sk-real"]);
        // Every billing header an adapter sets is one the client's are removed under.
        for api in [
            Api::OpenAi,
            Api::Anthropic,
            Api::Gemini,
            Api::Azure,
            Api::OpenAiCompatible,
            Api::Bedrock,
        ] {
            for (h, _) in api.adapter().billing_headers() {
                assert!(crate::policy::credentials::is_billing_header(h), "{h}");
            }
            for p in api.adapter().credential_params() {
                assert_eq!(*p, p.to_ascii_lowercase().replace('_', "-"), "normal form");
            }
        }
    }
}

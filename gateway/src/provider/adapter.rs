//! What every provider adapter knows (DESIGN §6): where its credential goes, how its errors
//! look, which endpoint a request is for, and how its streamed answers are framed.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header::CONTENT_TYPE};

use crate::vault::Secret;

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
}

/// Where the vault key goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// `authorization: Bearer <key>`
    Bearer,
    /// `<header>: <key>`
    Header(&'static str),
}

pub trait Adapter: Send + Sync + 'static {
    /// Short name for logs and the journal.
    fn name(&self) -> &'static str;

    fn placement(&self) -> Placement;

    /// A label for the endpoint (fixed set, safe as a metric label).
    fn endpoint(&self, method: &Method, path: &str) -> &'static str;

    fn framing(&self, path: &str, query: Option<&str>, request_headers: &HeaderMap) -> Framing;

    /// The provider's own JSON error body.
    fn error_body(&self, status: StatusCode, kind: ErrorKind, message: &str) -> serde_json::Value;

    /// Put exactly one credential, the vault's, on the request. The value is marked sensitive
    /// so HPACK never indexes it.
    fn inject(&self, headers: &mut HeaderMap, key: &Secret) -> Result<(), InvalidKey> {
        let (name, value) = match self.placement() {
            Placement::Bearer => (
                http::header::AUTHORIZATION.as_str(),
                format!("Bearer {}", key.expose()),
            ),
            Placement::Header(h) => (h, key.expose().to_string()),
        };
        let mut v = HeaderValue::from_str(&value).map_err(|_| InvalidKey)?;
        v.set_sensitive(true);
        headers.insert(http::HeaderName::from_static(name), v);
        Ok(())
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

/// The vault key cannot be a header value (control characters): reported without the value.
#[derive(Debug, thiserror::Error)]
#[error("the vault key is not a valid header value")]
pub struct InvalidKey;

pub fn kind_label(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::MissingKey => "missing_vault_key",
        ErrorKind::BadRequest => "bad_request",
        ErrorKind::UpstreamCertificate => "upstream_certificate",
        ErrorKind::UpstreamUnavailable => "upstream_unavailable",
        ErrorKind::Internal => "gateway_internal",
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

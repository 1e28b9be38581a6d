//! Every error the gateway answers itself becomes a response here, and only here, in the
//! provider's own error shape (linkerd's HttpRescue): the client's SDK raises its usual error
//! type with a message that says what the gateway did. No message ever carries a key.

use http::{Response, StatusCode};
use http_body_util::{BodyExt as _, Full};

use super::RespBody;
use crate::provider::adapter::{Adapter, ErrorKind};

#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error(
        "gateway: no vault key is configured for provider `{0}`; set `key` on the provider in the config"
    )]
    NoKeyConfigured(String),
    #[error(
        "gateway: the vault has no key `{key}` for provider `{provider}`; store it with `gateway keys set {key} --stdin`"
    )]
    KeyMissing { provider: String, key: String },
    #[error("gateway: vault error: {0}")]
    Vault(String),
    #[error("gateway: {0}")]
    BadRequest(String),
    #[error("gateway: the provider's TLS certificate did not verify ({0}); request not sent")]
    UpstreamCertificate(String),
    #[error("gateway: the provider could not be reached: {0}")]
    Upstream(String),
    #[error("gateway: request blocked by policy rule `{rule}` ({detector}); nothing was sent")]
    Blocked { rule: String, detector: String },
    #[error("gateway: request {hold} held for approval ({why}) was denied by {by}{}; nothing was sent", reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    HoldDenied {
        hold: u64,
        why: String,
        by: String,
        reason: Option<String>,
    },
    #[error(
        "gateway: request {hold} held for approval ({why}) was not approved within {after:?}; nothing was sent"
    )]
    HoldTimedOut {
        hold: u64,
        why: String,
        after: std::time::Duration,
    },
    #[error(
        "gateway: this request must wait for approval, but too many requests are waiting for approval already ({0}); nothing was sent, try again later"
    )]
    HoldsFull(String),
    #[error(
        "gateway: this request must wait for approval, but the hold could not be recorded ({0}); nothing was sent (fail-closed)"
    )]
    HoldUnrecorded(String),
    #[error("gateway: {0}; nothing was sent (fail-closed)")]
    Uninspectable(String),
    #[error("gateway: {0}")]
    Request(#[from] crate::request::RequestError),
    #[error(
        "gateway: the journal cannot record this exchange ({0}); nothing was sent (fail-closed)"
    )]
    JournalUnavailable(String),
    #[error("gateway: {0}")]
    WebSocket(#[from] crate::websocket::WsError),
}

impl ExchangeError {
    fn classify(&self) -> (StatusCode, ErrorKind) {
        match self {
            ExchangeError::NoKeyConfigured(_) | ExchangeError::KeyMissing { .. } => {
                (StatusCode::UNAUTHORIZED, ErrorKind::MissingKey)
            }
            ExchangeError::Vault(_) => (StatusCode::INTERNAL_SERVER_ERROR, ErrorKind::Internal),
            ExchangeError::BadRequest(_) => (StatusCode::BAD_REQUEST, ErrorKind::BadRequest),
            ExchangeError::UpstreamCertificate(_) => {
                (StatusCode::BAD_GATEWAY, ErrorKind::UpstreamCertificate)
            }
            ExchangeError::Upstream(_) => (StatusCode::BAD_GATEWAY, ErrorKind::UpstreamUnavailable),
            ExchangeError::Blocked { .. }
            | ExchangeError::HoldDenied { .. }
            | ExchangeError::HoldTimedOut { .. } => (StatusCode::FORBIDDEN, ErrorKind::Blocked),
            ExchangeError::HoldsFull(_) => (StatusCode::TOO_MANY_REQUESTS, ErrorKind::Busy),
            ExchangeError::HoldUnrecorded(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, ErrorKind::Internal)
            }
            ExchangeError::Uninspectable(_) => (StatusCode::BAD_REQUEST, ErrorKind::BadRequest),
            ExchangeError::Request(e) => {
                use crate::request::RequestError as R;
                match e {
                    R::UnknownEncoding(_) => {
                        (StatusCode::UNSUPPORTED_MEDIA_TYPE, ErrorKind::BadRequest)
                    }
                    R::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, ErrorKind::BadRequest),
                    R::Unmaskable { .. } => (StatusCode::FORBIDDEN, ErrorKind::Blocked),
                    R::Encoding { .. } | R::DuplicateKey | R::Unreadable(_) | R::Path(_) => {
                        (StatusCode::BAD_REQUEST, ErrorKind::BadRequest)
                    }
                }
            }
            ExchangeError::JournalUnavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, ErrorKind::Internal)
            }
            ExchangeError::WebSocket(e) => {
                use crate::websocket::WsError as W;
                match e {
                    W::Unsupported(_) | W::BadUpgrade(_) => {
                        (StatusCode::BAD_REQUEST, ErrorKind::BadRequest)
                    }
                    W::Certificate(_) => (StatusCode::BAD_GATEWAY, ErrorKind::UpstreamCertificate),
                    W::Unavailable(_) | W::Handshake(_) | W::Extension(_) => {
                        (StatusCode::BAD_GATEWAY, ErrorKind::UpstreamUnavailable)
                    }
                }
            }
        }
    }
}

/// The response for `err`, shaped by `adapter`.
pub fn respond(adapter: &dyn Adapter, err: &ExchangeError) -> Response<RespBody> {
    let (status, kind) = err.classify();
    let (status, headers, body) = adapter.error_response(status, kind, &err.to_string());
    let mut resp = Response::new(Full::new(body).map_err(|never| match never {}).boxed());
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::Api;
    use bytes::Bytes;

    async fn body(r: Response<RespBody>) -> serde_json::Value {
        let b: Bytes = r.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&b).unwrap()
    }

    #[tokio::test]
    async fn missing_key_is_a_401_in_each_providers_shape() {
        let e = ExchangeError::KeyMissing {
            provider: "openai".into(),
            key: "openai".into(),
        };
        let r = respond(Api::OpenAi.adapter(), &e);
        assert_eq!(r.status(), 401);
        let b = body(r).await;
        assert!(
            b["error"]["message"]
                .as_str()
                .unwrap()
                .contains("no key `openai`")
        );
        assert_eq!(b["error"]["type"], "authentication_error");

        let b = body(respond(Api::Anthropic.adapter(), &e)).await;
        assert_eq!(b["type"], "error");
        assert_eq!(b["error"]["type"], "authentication_error");

        let b = body(respond(Api::Gemini.adapter(), &e)).await;
        assert_eq!(b["error"]["code"], 401);
        assert_eq!(b["error"]["status"], "UNAUTHENTICATED");

        let b = body(respond(Api::Azure.adapter(), &e)).await;
        assert_eq!(b["error"]["code"], "401");
    }

    #[tokio::test]
    async fn full_holds_are_a_429_in_each_providers_shape() {
        let e = ExchangeError::HoldsFull("256 requests are waiting".into());
        let r = respond(Api::OpenAi.adapter(), &e);
        assert_eq!(r.status(), 429);
        let b = body(r).await;
        let msg = b["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains("too many requests are waiting for approval")
                && msg.contains("nothing was sent"),
            "{msg}"
        );
        assert_eq!(b["error"]["code"], "too_many_holds");
        let b = body(respond(Api::Anthropic.adapter(), &e)).await;
        assert_eq!(b["error"]["type"], "rate_limit_error");
        let b = body(respond(Api::Gemini.adapter(), &e)).await;
        assert_eq!(b["error"]["status"], "RESOURCE_EXHAUSTED");
    }

    #[tokio::test]
    async fn bad_upstream_certificate_is_a_502() {
        let r = respond(
            Api::Anthropic.adapter(),
            &ExchangeError::UpstreamCertificate("invalid peer certificate: UnknownIssuer".into()),
        );
        assert_eq!(r.status(), 502);
        assert_eq!(r.headers()["x-gateway-error"], "upstream_certificate");
        let b = body(r).await;
        assert!(
            b["error"]["message"]
                .as_str()
                .unwrap()
                .contains("did not verify")
        );
    }
}

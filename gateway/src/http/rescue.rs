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
    /// No access token from the service-account key in vault entry `key` (Vertex AI).
    #[error(
        "gateway: no access token could be minted from the service-account key in vault entry `{key}`: {reason}; nothing was sent"
    )]
    Token {
        key: String,
        reason: String,
        /// The entry itself is unusable (fix the vault), rather than the token endpoint.
        bad_key: bool,
    },
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
    /// The provider refused a held stream's request after it was approved (its error status
    /// and message, masked): the stream, answered 200 already, ends with it.
    #[error("{}", upstream_refusal(*status, message))]
    UpstreamRefused { status: u16, message: String },
}

fn upstream_refusal(status: u16, message: &str) -> String {
    format!("the provider answered {status} to the approved request: {message}")
}

impl ExchangeError {
    /// The mint for vault entry `key` failed.
    pub fn token(key: String, e: crate::vault::gcp::GcpError) -> Self {
        use crate::vault::gcp::GcpError as G;
        ExchangeError::Token {
            key,
            bad_key: matches!(e, G::BadKey(_) | G::NoClient),
            reason: e.to_string(),
        }
    }

    fn classify(&self) -> (StatusCode, ErrorKind) {
        match self {
            ExchangeError::NoKeyConfigured(_) | ExchangeError::KeyMissing { .. } => {
                (StatusCode::UNAUTHORIZED, ErrorKind::MissingKey)
            }
            ExchangeError::Vault(_) => (StatusCode::INTERNAL_SERVER_ERROR, ErrorKind::Internal),
            ExchangeError::Token { bad_key: true, .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, ErrorKind::Internal)
            }
            ExchangeError::Token { bad_key: false, .. } => {
                (StatusCode::BAD_GATEWAY, ErrorKind::UpstreamUnavailable)
            }
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
            ExchangeError::UpstreamRefused { status, .. } => {
                let s = StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY);
                let kind = match s.as_u16() {
                    401 => ErrorKind::MissingKey,
                    403 => ErrorKind::Blocked,
                    429 => ErrorKind::Busy,
                    400..=499 => ErrorKind::BadRequest,
                    _ => ErrorKind::UpstreamUnavailable,
                };
                (s, kind)
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

/// `err` as the last event of a stream answered 200 already (a held stream), shaped by
/// `adapter`; with the status and the gateway's error label (`None`: the provider's own
/// refusal) for the record.
pub fn stream_error(
    adapter: &dyn Adapter,
    path: &str,
    err: &ExchangeError,
) -> (StatusCode, Option<&'static str>, bytes::Bytes) {
    let (status, kind) = err.classify();
    let label = match err {
        ExchangeError::UpstreamRefused { .. } => None,
        _ => Some(crate::provider::adapter::kind_label(kind)),
    };
    (
        status,
        label,
        adapter.stream_error_event(path, status, kind, &err.to_string()),
    )
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

    #[test]
    fn held_streams_end_with_an_error_event_each_sdk_raises() {
        let denied = ExchangeError::HoldDenied {
            hold: 7,
            why: "keyword `x`".into(),
            by: "root".into(),
            reason: Some("not today".into()),
        };
        let event = |api: Api, e: &ExchangeError| {
            let (status, label, b) = stream_error(api.adapter(), "/v1/x", e);
            (status, label, String::from_utf8(b.to_vec()).unwrap())
        };
        // Anthropic: `event: error` with the API's error object.
        let (status, label, ev) = event(Api::Anthropic, &denied);
        assert_eq!((status.as_u16(), label), (403, Some("blocked_by_policy")));
        let (head, data) = ev.split_once('\n').unwrap();
        assert_eq!(head, "event: error");
        assert!(ev.ends_with("\n\n"), "{ev:?}");
        let v: serde_json::Value =
            serde_json::from_str(data.trim().strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "permission_error");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains("was denied by root: not today"), "{msg}");
        // OpenAI and Gemini: a `data:` object with `error` (what openai-python and
        // google-genai raise on), no event line.
        for (api, field) in [(Api::OpenAi, "type"), (Api::Gemini, "status")] {
            let (_, _, ev) = event(api, &denied);
            let v: serde_json::Value =
                serde_json::from_str(ev.trim().strip_prefix("data: ").unwrap()).unwrap();
            assert!(v["error"]["message"].as_str().unwrap().contains("denied"));
            assert!(v["error"][field].is_string(), "{ev}");
        }
        // The provider's own refusal keeps its status, and is not the gateway's error.
        let refused = ExchangeError::UpstreamRefused {
            status: 529,
            message: "Overloaded".into(),
        };
        let (status, label, ev) = event(Api::Anthropic, &refused);
        assert_eq!((status.as_u16(), label), (529, None));
        assert!(
            ev.contains("overloaded_error") && ev.contains("answered 529"),
            "{ev}"
        );
    }

    #[test]
    fn keepalives_are_what_each_sdk_skips() {
        assert_eq!(
            &Api::Anthropic.adapter().keepalive_event("/v1/messages")[..],
            b"event: ping\ndata: {\"type\": \"ping\"}\n\n"
        );
        assert_eq!(
            &Api::OpenAi
                .adapter()
                .keepalive_event("/v1/chat/completions")[..],
            b": keepalive\n\n"
        );
        assert_eq!(
            &Api::Gemini
                .adapter()
                .keepalive_event("/v1beta/models/m:streamGenerateContent")[..],
            b"\n"
        );
        use crate::provider::adapter::Framing;
        let a = Api::Anthropic.adapter();
        assert!(a.held_stream("/v1/messages", Framing::Plain, true));
        assert!(a.held_stream("/v1/messages", Framing::Sse, false));
        assert!(!a.held_stream("/v1/messages", Framing::Plain, false));
        let g = Api::Gemini.adapter();
        assert!(g.held_stream(
            "/v1beta/models/m:streamGenerateContent",
            Framing::Sse,
            false
        ));
        assert!(!g.held_stream(
            "/v1beta/models/m:streamGenerateContent",
            Framing::JsonArray,
            false
        ));
        assert!(!g.held_stream(
            "/v1beta/models/m:streamGenerateContent",
            Framing::Plain,
            true
        ));
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

    #[tokio::test]
    async fn a_failed_token_mint_names_the_vault_entry_in_googles_shape() {
        use crate::vault::gcp::GcpError;
        let e = ExchangeError::token(
            "vertex".into(),
            GcpError::Mint {
                uri: "https://oauth2.example/token".into(),
                reason: "refused the grant: 400 invalid_grant".into(),
            },
        );
        let r = respond(Api::Vertex.adapter(), &e);
        assert_eq!(r.status(), 502);
        let b = body(r).await;
        let msg = b["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains("vault entry `vertex`") && msg.contains("invalid_grant"),
            "{msg}"
        );
        assert_eq!(b["error"]["status"], "UNAVAILABLE");
        let e = ExchangeError::token("vertex".into(), GcpError::BadKey("no `private_key`".into()));
        let r = respond(Api::Vertex.adapter(), &e);
        assert_eq!(r.status(), 503);
        assert_eq!(body(r).await["error"]["status"], "INTERNAL");
    }
}

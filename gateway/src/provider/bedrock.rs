//! AWS Bedrock Runtime (`bedrock-runtime[-fips].<region>.amazonaws.com`): Converse,
//! ConverseStream, InvokeModel, InvokeModelWithResponseStream under `/model/{modelId}/...`.
//!
//! Credentials: the client's SigV4 (`Authorization: AWS4-HMAC-SHA256 ...`, its
//! `x-amz-security-token`, presigned `X-Amz-*` parameters) or Bedrock API key
//! (`Authorization: Bearer ...`) is removed like any credential. The vault entry decides what
//! goes in: `ACCESS_KEY_ID:SECRET_ACCESS_KEY[:SESSION_TOKEN]` signs the request again with SigV4
//! ([`super::sigv4`]) once its body is final — after masking and any hold, right before it goes
//! upstream ([`Adapter::sign`]); an entry without `:` is a Bedrock API key and goes in as
//! `Authorization: Bearer`. Region: from the host name (a client's credential scope naming
//! another region is refused); service `bedrock`. Payload hash: recomputed over the body that
//! goes out (`x-amz-content-sha256` set to it when the client sent that header);
//! `UNSIGNED-PAYLOAD` stays unsigned; streaming-signed (`STREAMING-*`, aws-chunked) bodies are
//! refused, since their chunk signatures cannot survive masking.
//!
//! Errors: `{"message": ...}` with `x-amzn-ErrorType` (mid-stream: an event-stream
//! `exception` message, [`crate::response::eventstream`]). Streams: event-stream framing.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header::CONTENT_TYPE};
use serde_json::json;

use super::{
    adapter::{Adapter, ErrorKind, Framing, InvalidKey, Placement, SignError},
    sigv4,
};
use crate::vault::{Entry, Secret};

pub struct Bedrock;

/// The SigV4 service name Bedrock Runtime is signed for.
pub const SERVICE: &str = "bedrock";

/// Presigned-URL parameters (normal form): the signature and everything it covers.
const PRESIGN_PARAMS: &[&str] = &[
    "x-amz-algorithm",
    "x-amz-credential",
    "x-amz-date",
    "x-amz-expires",
    "x-amz-signedheaders",
    "x-amz-signature",
    "x-amz-security-token",
];

/// The AWS region a Bedrock host name is in: the label after `bedrock-runtime[-fips]`
/// (`bedrock-runtime.us-east-1.amazonaws.com`, VPC endpoint names alike).
pub fn host_region(host: &str) -> Option<String> {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let labels: Vec<&str> = host.split('.').collect();
    let at = labels
        .iter()
        .position(|l| *l == "bedrock-runtime" || *l == "bedrock-runtime-fips")?;
    labels
        .get(at + 1)
        .filter(|r| {
            r.contains('-')
                && r.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && r.bytes().last().is_some_and(|b| b.is_ascii_digit())
        })
        .map(|r| r.to_string())
}

/// SigV4 credentials: (access key id, secret, session token).
type Creds<'a> = (&'a str, &'a str, Option<&'a str>);

/// The vault entry's SigV4 credentials; `None`: the entry is a Bedrock API key (no `:`).
fn sigv4_parts(key: &Secret) -> Option<Result<Creds<'_>, SignError>> {
    let k = key.expose();
    if !k.contains(':') {
        return None;
    }
    let mut it = k.splitn(3, ':');
    let (akid, secret, token) = (it.next()?, it.next()?, it.next());
    let ok = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic());
    if !ok(akid) || !ok(secret) || token.is_some_and(|t| !ok(t)) {
        return Some(Err(SignError::BadEntry(
            "the bedrock vault entry must be ACCESS_KEY_ID:SECRET_ACCESS_KEY[:SESSION_TOKEN] \
             (or a Bedrock API key, without `:`)"
                .into(),
        )));
    }
    Some(Ok((akid, secret, token)))
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

impl Adapter for Bedrock {
    fn name(&self) -> &'static str {
        "bedrock"
    }

    /// For a vault entry that is a Bedrock API key; SigV4 entries sign instead ([`Self::sign`]).
    fn placement(&self) -> Placement {
        Placement::Bearer
    }

    fn credential_params(&self) -> &'static [&'static str] {
        PRESIGN_PARAMS
    }

    fn encoded_slash_segment(&self) -> Option<&'static str> {
        Some("model")
    }

    fn endpoint(&self, _m: &Method, path: &str) -> &'static str {
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        match segs.as_slice() {
            ["model", _, "converse"] => "converse",
            ["model", _, "converse-stream"] => "converse-stream",
            ["model", _, "invoke"] => "invoke",
            ["model", _, "invoke-with-response-stream"] => "invoke-with-response-stream",
            ["model", _, "count-tokens"] => "count-tokens",
            ["model", ..] => "other",
            ["async-invoke", ..] => "async-invoke",
            ["guardrail", ..] => "apply-guardrail",
            _ => "unknown",
        }
    }

    fn framing(&self, path: &str, _q: Option<&str>, _h: &HeaderMap) -> Framing {
        let p = path.trim_end_matches('/');
        if p.ends_with("/converse-stream") || p.ends_with("/invoke-with-response-stream") {
            Framing::EventStream
        } else {
            Framing::Plain
        }
    }

    fn prompt_pointers(&self, endpoint: &str, body: &serde_json::Value) -> Vec<String> {
        match endpoint {
            // Converse's `system[].text` and `messages[].content[].text`; InvokeModel's body is
            // the model's own (Anthropic's Messages shape for Claude).
            "converse"
            | "converse-stream"
            | "count-tokens"
            | "invoke"
            | "invoke-with-response-stream" => super::prompt::anthropic_messages(body),
            _ => Vec::new(),
        }
    }

    fn error_body(
        &self,
        _status: StatusCode,
        _kind: ErrorKind,
        message: &str,
    ) -> serde_json::Value {
        json!({ "message": message })
    }

    fn error_response(
        &self,
        status: StatusCode,
        kind: ErrorKind,
        message: &str,
    ) -> (StatusCode, HeaderMap, Bytes) {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(
            "x-amzn-errortype",
            HeaderValue::from_static(error_type(kind)),
        );
        h.insert(
            "x-gateway-error",
            HeaderValue::from_static(super::adapter::kind_label(kind)),
        );
        let body = self.error_body(status, kind, message).to_string();
        (status, h, Bytes::from(body))
    }

    fn inject_entry(&self, headers: &mut HeaderMap, entry: &Entry) -> Result<(), InvalidKey> {
        match sigv4_parts(&entry.key) {
            // Signed once the body is final.
            Some(_) => Ok(()),
            None => self.inject(headers, &entry.key),
        }
    }

    fn answer_key(&self, entry: &Entry) -> Secret {
        match sigv4_parts(&entry.key) {
            Some(Ok((_, secret, _))) => Secret::new(secret),
            _ => entry.key.clone(),
        }
    }

    fn check_head(&self, sni: &str, parts: &http::request::Parts) -> Result<(), String> {
        let region = host_region(sni);
        let h = &parts.headers;
        if let Some(v) = header(h, "x-amz-content-sha256")
            && v.trim().to_ascii_uppercase().starts_with("STREAMING-")
        {
            return Err(streaming_refusal());
        }
        if h.get_all(http::header::CONTENT_ENCODING).iter().any(|v| {
            v.to_str()
                .is_ok_and(|s| s.to_ascii_lowercase().contains("aws-chunked"))
        }) {
            return Err(streaming_refusal());
        }
        let mut scopes: Vec<String> = Vec::new();
        for v in h.get_all(http::header::AUTHORIZATION) {
            let Ok(v) = v.to_str() else { continue };
            if let Some(rest) = v.trim().strip_prefix("AWS4-HMAC-SHA256")
                && let Some(c) = rest
                    .split(',')
                    .find_map(|p| p.trim().strip_prefix("Credential="))
            {
                scopes.push(c.trim().to_string());
            }
        }
        for kv in parts.uri.query().unwrap_or("").split('&') {
            if let Some((k, v)) = kv.split_once('=')
                && k.eq_ignore_ascii_case("x-amz-credential")
            {
                let (d, _) = crate::policy::credentials::percent_decode(v.as_bytes(), true);
                scopes.push(String::from_utf8_lossy(&d).into_owned());
            }
        }
        for s in &scopes {
            if let (Some(theirs), Some(ours)) = (sigv4::scope_region(s), region.as_deref())
                && !theirs.eq_ignore_ascii_case(ours)
            {
                return Err(format!(
                    "the request is signed for region `{theirs}` but sent to a host in `{ours}`; \
                     nothing was sent"
                ));
            }
        }
        Ok(())
    }

    fn model_in_path(&self, path: &str) -> Option<String> {
        let id = path.strip_prefix("/model/")?.split('/').next()?;
        let (d, _) = crate::policy::credentials::percent_decode(id.as_bytes(), false);
        String::from_utf8(d).ok().filter(|m| !m.is_empty())
    }

    fn signs_payload(&self) -> bool {
        true
    }

    fn sign(
        &self,
        sni: &str,
        parts: &mut http::request::Parts,
        body: &[u8],
        entry: Option<&Entry>,
    ) -> Result<(), SignError> {
        let Some(entry) = entry else {
            return Ok(());
        };
        let Some(creds) = sigv4_parts(&entry.key) else {
            return Ok(());
        };
        let (akid, secret, token) = creds?;
        let region = host_region(sni).ok_or_else(|| {
            SignError::BadRequest(format!(
                "cannot tell the AWS region from the host name `{sni}` \
                 (bedrock-runtime.<region>.amazonaws.com)"
            ))
        })?;
        let h = &mut parts.headers;
        h.remove(http::header::AUTHORIZATION);
        let date = sigv4::amz_date(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0),
        );
        h.insert("x-amz-date", HeaderValue::from_str(&date).expect("ASCII"));
        match token {
            Some(t) => {
                let mut v = HeaderValue::from_str(t).map_err(|_| {
                    SignError::BadEntry("the bedrock session token is not a header value".into())
                })?;
                v.set_sensitive(true);
                h.insert("x-amz-security-token", v);
            }
            None => {
                h.remove("x-amz-security-token");
            }
        }
        let payload_hash = match header(h, "x-amz-content-sha256") {
            Some(v) if v.trim() == sigv4::UNSIGNED_PAYLOAD => sigv4::UNSIGNED_PAYLOAD.to_string(),
            Some(_) => {
                let hash = sigv4::sha256_hex(body);
                h.insert(
                    "x-amz-content-sha256",
                    HeaderValue::from_str(&hash).expect("hex"),
                );
                hash
            }
            None => sigv4::sha256_hex(body),
        };
        let mut signed: Vec<(String, String)> = Vec::new();
        for (name, value) in h.iter() {
            let n = name.as_str();
            let wanted = n == "host"
                || n == "content-type"
                || n.starts_with("x-amz-")
                || (n.starts_with("x-amzn-") && n != "x-amzn-trace-id");
            if wanted {
                let v = value.to_str().map_err(|_| {
                    SignError::BadRequest(format!(
                        "the `{n}` header is not text; it cannot be signed"
                    ))
                })?;
                signed.push((n.to_string(), v.to_string()));
            }
        }
        let pairs: Vec<(&str, &str)> = signed
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let req = sigv4::Request {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query: parts.uri.query(),
            headers: &pairs,
            payload_hash: &payload_hash,
        };
        let scope = sigv4::Scope {
            amz_date: &date,
            region: &region,
            service: SERVICE,
        };
        let auth = sigv4::authorization(&req, &scope, akid, secret);
        let mut v = HeaderValue::from_str(&auth).expect("ASCII");
        v.set_sensitive(true);
        parts.headers.insert(http::header::AUTHORIZATION, v);
        Ok(())
    }
}

fn streaming_refusal() -> String {
    "the request body is streaming-signed (STREAMING-* / aws-chunked): its chunk signatures \
     cannot survive inspection and re-signing; send the body whole (signed or UNSIGNED-PAYLOAD). \
     Nothing was sent"
        .into()
}

/// The `x-amzn-ErrorType` (and mid-stream `:exception-type`, camel-cased) for a gateway error.
pub fn error_type(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::MissingKey => "UnrecognizedClientException",
        ErrorKind::BadRequest => "ValidationException",
        ErrorKind::Blocked => "AccessDeniedException",
        ErrorKind::Busy => "ThrottlingException",
        ErrorKind::UpstreamUnavailable | ErrorKind::UpstreamCertificate => {
            "ServiceUnavailableException"
        }
        ErrorKind::Internal => "InternalServerException",
    }
}

#[cfg(test)]
mod tests;

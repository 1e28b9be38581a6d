//! Sign-in on the approval page: the OpenID Connect authorization code flow with PKCE (RFC
//! 7636, S256), the page being a confidential web client (`[web] client_id`, its secret from
//! the environment variable `[web] client_secret_env`).
//!
//! `/login` makes a fresh `state`, `nonce` and code verifier, keeps them server-side
//! ([`super::session::Logins`]) and sends the browser to the issuer's authorization endpoint;
//! `/callback` takes the code back, checks the state against the one bound to this browser,
//! redeems the code at the token endpoint with the verifier, verifies the ID token (the one
//! verifier: signature, issuer, audience = the web client, expiry) and checks its nonce.
//! Nothing is decided on an unverified token.

use std::{sync::Arc, time::Duration};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use rustls::{ClientConfig, pki_types::ServerName};
use serde_json::Value;
use sha2::Digest as _;

use crate::redirect::origdst::OrigDstAddr;

#[derive(Debug, thiserror::Error)]
pub enum SigninError {
    #[error("identity provider {url}: {reason}")]
    Provider { url: String, reason: String },
    #[error("{0}")]
    Refused(String),
}

/// 32 random bytes, base64url: session ids, CSRF tokens, state, nonce, code verifiers.
pub fn random_token() -> String {
    let mut b = [0u8; 32];
    rand::fill(&mut b[..]);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// The PKCE S256 challenge of a verifier.
pub fn challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier))
}

/// `application/x-www-form-urlencoded` / query component encoding.
pub fn form_encode(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", pct(k), pct(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn pct(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decode a form body or query string (`+` is a space).
pub fn form_decode(s: &str) -> Vec<(String, String)> {
    fn dec(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < b.len()
                    && b[i + 1].is_ascii_hexdigit()
                    && b[i + 2].is_ascii_hexdigit() =>
                {
                    let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                    match u8::from_str_radix(hex, 16) {
                        Ok(v) => {
                            out.push(v);
                            i += 2;
                        }
                        Err(_) => out.push(b'%'),
                    }
                }
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (dec(k), dec(v)),
            None => (dec(p), String::new()),
        })
        .collect()
}

/// The endpoints of the issuer the page needs (from its discovery document).
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub authorization: String,
    pub token: String,
}

/// A small HTTP/1.1 client for the identity provider (discovery, token endpoint): the
/// gateway's own sockets (bypass mark), full certificate checks for https.
pub struct IdpClient {
    tls: Arc<ClientConfig>,
    mark: u32,
}

impl IdpClient {
    pub fn new(tls: Arc<ClientConfig>, mark: u32) -> Self {
        Self { tls, mark }
    }

    /// One request; (status, body).
    pub async fn send(
        &self,
        method: http::Method,
        url: &str,
        headers: &[(&str, String)],
        body: Option<String>,
    ) -> Result<(u16, Bytes), SigninError> {
        let bad = |reason: String| SigninError::Provider {
            url: url.to_string(),
            reason,
        };
        let uri: http::Uri = url.parse().map_err(|e| bad(format!("bad URL: {e}")))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(bad("not an http(s) URL".into())),
        };
        let host = uri.host().ok_or_else(|| bad("no host".into()))?.to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let fut = async {
            let addr = tokio::net::lookup_host((host.trim_matches(['[', ']']), port))
                .await
                .map_err(|e| bad(format!("resolve {host}: {e}")))?
                .next()
                .ok_or_else(|| bad(format!("{host} has no address")))?;
            let tcp =
                crate::upstream::connect(OrigDstAddr(addr), self.mark, Duration::from_secs(5))
                    .await
                    .map_err(|e| bad(e.to_string()))?;
            let pq = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
            let authority = uri.authority().map_or(host.clone(), |a| a.to_string());
            let mut b = http::Request::builder()
                .method(method)
                .uri(pq)
                .header(http::header::HOST, authority)
                .header(http::header::ACCEPT, "application/json");
            for (k, v) in headers {
                b = b.header(*k, v);
            }
            let req = b
                .body(Full::new(Bytes::from(body.unwrap_or_default())))
                .map_err(|e| bad(e.to_string()))?;
            if https {
                let name = ServerName::try_from(host.trim_matches(['[', ']']).to_string())
                    .map_err(|_| bad(format!("`{host}` is not a TLS name")))?;
                let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| bad(format!("TLS: {e}")))?;
                exchange(TokioIo::new(tls), req).await.map_err(bad)
            } else {
                exchange(TokioIo::new(tcp), req).await.map_err(bad)
            }
        };
        tokio::time::timeout(Duration::from_secs(15), fut)
            .await
            .map_err(|_| bad("no answer within 15 s".into()))?
    }

    async fn json(
        &self,
        method: http::Method,
        url: &str,
        headers: &[(&str, String)],
        body: Option<String>,
    ) -> Result<(u16, Value), SigninError> {
        let (status, b) = self.send(method, url, headers, body).await?;
        let v = serde_json::from_slice(&b).map_err(|e| SigninError::Provider {
            url: url.to_string(),
            reason: format!("answered {status} with a body that is not JSON: {e}"),
        })?;
        Ok((status, v))
    }

    /// The issuer's discovery document: its authorization and token endpoints.
    pub async fn discover(&self, issuer: &str) -> Result<Endpoints, SigninError> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let (status, v) = self.json(http::Method::GET, &url, &[], None).await?;
        let bad = |reason: String| SigninError::Provider {
            url: url.clone(),
            reason,
        };
        if status != 200 {
            return Err(bad(format!("answered {status}")));
        }
        if v["issuer"].as_str().map(|s| s.trim_end_matches('/'))
            != Some(issuer.trim_end_matches('/'))
        {
            return Err(bad(format!(
                "names issuer {} where {issuer} was expected",
                v["issuer"]
            )));
        }
        let get = |k: &str| {
            v[k].as_str()
                .map(String::from)
                .ok_or_else(|| bad(format!("no `{k}` in the discovery document")))
        };
        Ok(Endpoints {
            authorization: get("authorization_endpoint")?,
            token: get("token_endpoint")?,
        })
    }

    /// Redeem an authorization code: the ID token (client_secret_basic when there is a
    /// secret, else a public client naming itself).
    pub async fn redeem(
        &self,
        token_endpoint: &str,
        client: &Client,
        code: &str,
        verifier: &str,
    ) -> Result<String, SigninError> {
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", client.redirect_uri.as_str()),
            ("code_verifier", verifier),
        ];
        let mut headers = vec![(
            "content-type",
            "application/x-www-form-urlencoded".to_string(),
        )];
        match &client.secret {
            Some(secret) => {
                // RFC 6749 §2.3.1: both parts form-encoded, then Basic.
                let pair = format!("{}:{}", pct(&client.id), pct(secret));
                headers.push((
                    "authorization",
                    format!(
                        "Basic {}",
                        base64::engine::general_purpose::STANDARD.encode(pair)
                    ),
                ));
            }
            None => form.push(("client_id", client.id.as_str())),
        }
        let (status, v) = self
            .json(
                http::Method::POST,
                token_endpoint,
                &headers,
                Some(form_encode(&form)),
            )
            .await?;
        if status != 200 {
            // The provider's own error words (RFC 6749 §5.2); never the code or the secret.
            return Err(SigninError::Refused(format!(
                "the identity provider refused the sign-in code ({status}): {} {}",
                v["error"].as_str().unwrap_or("?"),
                v["error_description"].as_str().unwrap_or("")
            )));
        }
        v["id_token"]
            .as_str()
            .map(String::from)
            .ok_or_else(|| SigninError::Refused("the token endpoint gave no id_token".into()))
    }
}

/// The page as an OAuth client.
#[derive(Clone)]
pub struct Client {
    pub id: String,
    pub secret: Option<String>,
    pub redirect_uri: String,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("id", &self.id)
            .field("secret", &self.secret.as_ref().map(|_| "[redacted]"))
            .field("redirect_uri", &self.redirect_uri)
            .finish()
    }
}

async fn exchange<IO>(io: IO, req: http::Request<Full<Bytes>>) -> Result<(u16, Bytes), String>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut tx, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let resp = tx.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = http_body_util::Limited::new(resp.into_body(), 1 << 20)
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body))
}

/// The authorization request URL.
pub fn authorization_url(
    endpoint: &str,
    client: &Client,
    scopes: &str,
    state: &str,
    nonce: &str,
    verifier: &str,
) -> String {
    let sep = if endpoint.contains('?') { '&' } else { '?' };
    format!(
        "{endpoint}{sep}{}",
        form_encode(&[
            ("response_type", "code"),
            ("client_id", &client.id),
            ("redirect_uri", &client.redirect_uri),
            ("scope", scopes),
            ("state", state),
            ("nonce", nonce),
            ("code_challenge", &challenge(verifier)),
            ("code_challenge_method", "S256"),
        ])
    )
}

/// The `nonce` claim of a JWT whose signature was verified already (only the payload is read).
pub fn nonce_of(id_token: &str) -> Option<String> {
    let payload = id_token.split('.').nth(1)?;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let v: Value = serde_json::from_slice(&raw).ok()?;
    v["nonce"].as_str().map(String::from)
}

/// The `exp` claim (Unix seconds) of a verified JWT.
pub fn exp_of(id_token: &str) -> Option<u64> {
    let payload = id_token.split('.').nth(1)?;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let v: Value = serde_json::from_slice(&raw).ok()?;
    v["exp"].as_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_matches_rfc7636_appendix_b() {
        assert_eq!(
            challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn forms_round_trip_and_decode_plus_and_percent() {
        let enc = form_encode(&[("reason", "ok: <b> & ü"), ("x", "")]);
        assert_eq!(
            form_decode(&enc),
            vec![
                ("reason".to_string(), "ok: <b> & ü".to_string()),
                ("x".to_string(), String::new())
            ]
        );
        assert_eq!(
            form_decode("a=b+c%2Bd%"),
            vec![("a".into(), "b c+d%".into())]
        );
    }

    #[test]
    fn random_tokens_differ_and_are_url_safe() {
        let (a, b) = (random_token(), random_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
    }
}

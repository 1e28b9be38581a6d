//! Google service-account keys (the `vertex` vault entry): the gateway signs a JWT with the
//! key (RS256, `kid` = `private_key_id`), trades it for an OAuth access token at the key's
//! `token_uri` (RFC 7523 JWT-bearer grant, the flow google-auth's service-account credentials
//! use), and caches each token until five minutes before it expires. Concurrent requests share
//! one mint; a failure is shared the same way (the requests that waited for it get its error,
//! later ones try again). Part of the vault stage: [`super::Vault::credential`] hands
//! `http::prepare` an entry whose key is the token, ready to inject.
//!
//! The token endpoint is reached like an upstream: the bypass mark on the socket, rustls with
//! the system roots plus `upstream.extra_roots`, full certificate verification, https only.
//! Nothing here ever prints the key, the assertion or a token.

use std::{
    collections::HashMap,
    future::Future,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use ring::{
    rand::SystemRandom,
    signature::{RSA_PKCS1_SHA256, RsaKeyPair},
};
use rustls::{ClientConfig, pki_types::ServerName};
use serde_json::{Value, json};
use sha2::Digest as _;
use zeroize::Zeroizing;

use super::Secret;
use crate::redirect::origdst::OrigDstAddr;

/// The scope of every minted token: Vertex AI (and every Google Cloud API) accepts it.
pub const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// Where a key without `token_uri` is exchanged (every key Google issues names it).
pub const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// The assertion's lifetime (Google's maximum).
const ASSERTION_LIFETIME: u64 = 3600;
/// A token is replaced this long before it expires.
const REFRESH_MARGIN: Duration = Duration::from_secs(300);
/// The whole exchange with the token endpoint (connect, TLS, request, answer).
const MINT_TIMEOUT: Duration = Duration::from_secs(15);
/// The largest token endpoint answer read.
const MAX_ANSWER: usize = 64 * 1024;
/// Distinct entries whose tokens are cached (a vault with more is unusual; past it the cache
/// starts over).
const MAX_SLOTS: usize = 256;

#[derive(Debug, Clone, thiserror::Error)]
pub enum GcpError {
    /// The entry is not a usable service-account key. Never quotes it.
    #[error("the entry is not a usable service-account JSON key: {0}")]
    BadKey(String),
    /// The token endpoint could not be reached, or did not grant a token.
    #[error("the token endpoint {uri} {reason}")]
    Mint { uri: String, reason: String },
    #[error("access tokens cannot be minted by this command (only the daemon mints them)")]
    NoClient,
}

fn bad(why: impl Into<String>) -> GcpError {
    GcpError::BadKey(why.into())
}

/// A parsed service-account key.
pub struct ServiceAccount {
    pub client_email: String,
    pub token_uri: String,
    uri: http::Uri,
    key_id: Option<String>,
    key: RsaKeyPair,
}

impl std::fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("client_email", &self.client_email)
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
    }
}

/// Seconds since the epoch.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl ServiceAccount {
    /// Parse the key file's content (JSON, as Google issues it). The errors name the field
    /// and the mistake, never a value of the file.
    pub fn parse(text: &str) -> Result<Self, GcpError> {
        let v: Value = serde_json::from_str(text).map_err(|e| {
            // serde_json's syntax messages quote nothing, but say so by construction: the
            // category and the position only.
            bad(format!(
                "it is not JSON ({:?} error at line {} column {})",
                e.classify(),
                e.line(),
                e.column()
            ))
        })?;
        let Some(o) = v.as_object() else {
            return Err(bad("it is not a JSON object"));
        };
        let field = |name: &str| -> Result<Option<&str>, GcpError> {
            match o.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.as_str())),
                Some(_) => Err(bad(format!("`{name}` is not a string"))),
            }
        };
        match field("type")? {
            Some("service_account") => {}
            Some(_) => {
                return Err(bad(
                    "its `type` is not \"service_account\" (the gateway needs a service-account \
                     key, not user or workload-identity credentials)",
                ));
            }
            None => return Err(bad("it has no `type` (\"service_account\")")),
        }
        let client_email = field("client_email")?
            .filter(|e| !e.is_empty() && e.contains('@') && e.bytes().all(|b| b.is_ascii_graphic()))
            .ok_or_else(|| bad("`client_email` is missing or not an address"))?
            .to_string();
        let token_uri = field("token_uri")?.unwrap_or(DEFAULT_TOKEN_URI).to_string();
        let uri: http::Uri = token_uri
            .parse()
            .map_err(|_| bad("`token_uri` is not a URL"))?;
        if uri.scheme_str() != Some("https") || uri.host().is_none_or(str::is_empty) {
            return Err(bad(format!(
                "`token_uri` {token_uri} is not an https URL (tokens are only fetched over verified TLS)"
            )));
        }
        let key_id = field("private_key_id")?
            .filter(|k| !k.is_empty())
            .map(String::from);
        let pem = field("private_key")?.ok_or_else(|| bad("it has no `private_key`"))?;
        let key = rsa_key(pem)?;
        Ok(Self {
            client_email,
            token_uri,
            uri,
            key_id,
            key,
        })
    }

    /// The signed JWT asserting this account, issued at `iat` (seconds since the epoch).
    pub fn assertion(&self, iat: u64) -> Result<Zeroizing<String>, GcpError> {
        let mut header = json!({"alg": "RS256", "typ": "JWT"});
        if let Some(kid) = &self.key_id {
            header["kid"] = json!(kid);
        }
        let claims = json!({
            "iss": self.client_email,
            "scope": SCOPE,
            "aud": self.token_uri,
            "iat": iat,
            "exp": iat + ASSERTION_LIFETIME,
        });
        let mut jwt = Zeroizing::new(format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        ));
        let mut sig = vec![0u8; self.key.public().modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                jwt.as_bytes(),
                &mut sig,
            )
            .map_err(|_| bad("its private key cannot sign"))?;
        jwt.push('.');
        jwt.push_str(&b64(&sig));
        Ok(jwt)
    }
}

/// The RSA key of a PEM `private_key` (PKCS#8, as Google issues it, or PKCS#1).
fn rsa_key(pem: &str) -> Result<RsaKeyPair, GcpError> {
    use rustls::pki_types::{PrivateKeyDer, pem::PemObject as _};
    let der = PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|_| bad("`private_key` is not a PEM private key"))?;
    let key = match &der {
        PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
        PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der()),
        _ => return Err(bad("`private_key` is not an RSA key")),
    };
    // ring's reasons are fixed words ("InvalidEncoding", "TooSmall", ...), never key bytes.
    key.map_err(|e| bad(format!("`private_key` is not a usable RSA key ({e})")))
}

/// The key file's content as it is stored: one line of JSON (the multi-line file as given is
/// accepted), after checking it parses as a service-account key.
pub fn normalise(text: &str) -> Result<Zeroizing<String>, GcpError> {
    ServiceAccount::parse(text)?;
    let v: Value = serde_json::from_str(text).map_err(|_| bad("it is not JSON"))?;
    Ok(Zeroizing::new(v.to_string()))
}

/// A minted token and when it is due for replacement.
struct Token {
    value: Secret,
    refresh_at: Instant,
    expires_at: Instant,
}

/// When a token granted for `expires_in` seconds at `now` is replaced: five minutes before it
/// expires, or halfway through a lifetime shorter than ten minutes.
fn refresh_at(now: Instant, expires_in: u64) -> Instant {
    let life = Duration::from_secs(expires_in);
    let early = if life > REFRESH_MARGIN * 2 {
        life - REFRESH_MARGIN
    } else {
        life / 2
    };
    now + early
}

#[derive(Default)]
struct State {
    token: Option<Token>,
    /// The last mint's failure and when it happened.
    failed: Option<(Instant, GcpError)>,
    mints: u64,
}

/// One vault entry's cache: the parsed key (once per content) and its current token.
struct Slot {
    digest: [u8; 32],
    account: Result<Arc<ServiceAccount>, GcpError>,
    state: tokio::sync::Mutex<State>,
}

impl Slot {
    fn new(digest: [u8; 32], text: &str) -> Self {
        Self {
            digest,
            account: ServiceAccount::parse(text).map(Arc::new),
            state: Default::default(),
        }
    }

    /// The cached token, or one from `mint` (`(token, expires_in)`) when there is none fresh.
    /// Callers that arrive while a mint runs wait for it and share its outcome.
    async fn get<F, Fut>(&self, mint: F) -> Result<Secret, GcpError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(Secret, u64), GcpError>>,
    {
        let arrived = Instant::now();
        let mut st = self.state.lock().await;
        let now = Instant::now();
        if let Some(t) = st.token.as_ref().filter(|t| now < t.refresh_at) {
            return Ok(t.value.clone());
        }
        if let Some((at, e)) = &st.failed
            && *at >= arrived
        {
            return Err(e.clone());
        }
        st.mints += 1;
        match mint().await {
            Ok((value, expires_in)) => {
                let now = Instant::now();
                st.token = Some(Token {
                    value: value.clone(),
                    refresh_at: refresh_at(now, expires_in),
                    expires_at: now + Duration::from_secs(expires_in),
                });
                st.failed = None;
                Ok(value)
            }
            Err(e) => {
                st.failed = Some((Instant::now(), e.clone()));
                // A refresh that failed while the old token still has a while to live: that
                // one serves until the next attempt.
                match st
                    .token
                    .as_ref()
                    .filter(|t| t.expires_at > Instant::now() + Duration::from_secs(30))
                {
                    Some(t) => {
                        tracing::warn!(error = %e, "vault: access token refresh failed; the current token serves until it is due");
                        Ok(t.value.clone())
                    }
                    None => Err(e),
                }
            }
        }
    }
}

/// Mints and caches access tokens for the service-account entries of the vault.
pub struct Minter {
    tls: Arc<ClientConfig>,
    mark: u32,
    connect_timeout: Duration,
    slots: std::sync::Mutex<HashMap<String, Arc<Slot>>>,
}

impl Minter {
    /// `tls`: the upstream client configuration (system roots + `upstream.extra_roots`);
    /// `mark`: the bypass mark every gateway socket carries.
    pub fn new(tls: Arc<ClientConfig>, mark: u32, connect_timeout: Duration) -> Self {
        Self {
            tls,
            mark,
            connect_timeout,
            slots: Default::default(),
        }
    }

    /// An access token for the service-account key `key` stored under `name`.
    pub async fn token(&self, name: &str, key: &Secret) -> Result<Secret, GcpError> {
        let slot = self.slot(name, key.expose());
        let account = slot.account.clone()?;
        slot.get(|| async {
            let r = self.mint(&account).await;
            match &r {
                Ok((_, expires_in)) => tracing::info!(
                    key = name,
                    account = %account.client_email,
                    expires_in,
                    "vault: minted a Google access token"
                ),
                Err(e) => tracing::warn!(key = name, error = %e, "vault: no access token minted"),
            }
            r
        })
        .await
    }

    /// The cache for `name`, started over when the entry's content changed.
    fn slot(&self, name: &str, text: &str) -> Arc<Slot> {
        let digest: [u8; 32] = sha2::Sha256::digest(text.as_bytes()).into();
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = slots.get(name).filter(|s| s.digest == digest) {
            return s.clone();
        }
        if slots.len() >= MAX_SLOTS && !slots.contains_key(name) {
            slots.clear();
        }
        let s = Arc::new(Slot::new(digest, text));
        slots.insert(name.to_string(), s.clone());
        s
    }

    async fn mint(&self, sa: &ServiceAccount) -> Result<(Secret, u64), GcpError> {
        let fail = |reason: String| GcpError::Mint {
            uri: sa.token_uri.clone(),
            reason,
        };
        let assertion = sa.assertion(unix_now())?;
        let body = Zeroizing::new(format!(
            "grant_type={}&assertion={}",
            GRANT_TYPE.replace(':', "%3A"),
            assertion.as_str()
        ));
        let (status, answer) = tokio::time::timeout(MINT_TIMEOUT, self.post(&sa.uri, &body))
            .await
            .map_err(|_| fail(format!("did not answer within {MINT_TIMEOUT:?}")))?
            .map_err(fail)?;
        parse_answer(status, &answer).map_err(fail)
    }

    /// POST a form to `uri` over verified TLS; the status and (at most [`MAX_ANSWER`] bytes
    /// of) the answer.
    async fn post(&self, uri: &http::Uri, body: &str) -> Result<(u16, Bytes), String> {
        let host = uri.host().unwrap_or_default();
        let bare = host.trim_matches(['[', ']']);
        let port = uri.port_u16().unwrap_or(443);
        // getaddrinfo blocks: tokio runs it on its blocking pool.
        let addr = tokio::net::lookup_host((bare, port))
            .await
            .map_err(|e| format!("could not be resolved ({e})"))?
            .next()
            .ok_or_else(|| "has no address".to_string())?;
        let tcp = crate::upstream::connect(OrigDstAddr(addr), self.mark, self.connect_timeout)
            .await
            .map_err(|e| format!("could not be reached ({e})"))?;
        let name = ServerName::try_from(bare.to_string())
            .map_err(|_| format!("has a host (`{host}`) that is not a TLS server name"))?;
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| format!("failed TLS ({e})"))?;
        let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| format!("failed HTTP ({e})"))?;
        tokio::spawn(conn);
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or(host);
        let req = http::Request::post(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
            .header(http::header::HOST, authority)
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(http::header::ACCEPT, "application/json")
            .body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
            .map_err(|e| format!("request could not be built ({e})"))?;
        let resp = tx
            .send_request(req)
            .await
            .map_err(|e| format!("failed HTTP ({e})"))?;
        let status = resp.status().as_u16();
        let answer = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| format!("sent an unreadable answer ({e})"))?
            .to_bytes();
        Ok((status, answer))
    }
}

/// A printable, short rendering of a text from the token endpoint (its error fields).
fn printable(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(200).collect()
}

/// The token and its lifetime from the token endpoint's answer (RFC 6749 §5.1), or why not.
fn parse_answer(status: u16, answer: &[u8]) -> Result<(Secret, u64), String> {
    let v: Option<Value> = serde_json::from_slice(answer).ok();
    if status != 200 {
        // RFC 6749 §5.2: `error` and `error_description`; neither carries a credential.
        let err = v.as_ref().and_then(|v| v.get("error"));
        let code = err.and_then(Value::as_str).map(printable);
        let desc = v
            .as_ref()
            .and_then(|v| v.get("error_description"))
            .and_then(Value::as_str)
            .map(printable);
        return Err(match (code, desc) {
            (Some(c), Some(d)) => format!("refused the grant: {status} {c}: {d}"),
            (Some(c), None) => format!("refused the grant: {status} {c}"),
            _ => format!("refused the grant: {status}"),
        });
    }
    let v = v.ok_or_else(|| "answered 200 with a body that is not JSON".to_string())?;
    let token = v
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty() && t.len() <= 8192 && t.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| "answered 200 without a usable `access_token`".to_string())?;
    if let Some(tt) = v.get("token_type").and_then(Value::as_str)
        && !tt.eq_ignore_ascii_case("bearer")
    {
        return Err(format!(
            "granted a token of type `{}`, not Bearer",
            printable(tt)
        ));
    }
    let expires_in = match v.get("expires_in") {
        None => 3600,
        Some(e) => e
            .as_u64()
            .or_else(|| e.as_str().and_then(|s| s.parse().ok()))
            .filter(|n| *n > 0)
            .ok_or_else(|| {
                "answered with an `expires_in` that is not a positive number".to_string()
            })?,
    };
    Ok((Secret::new(token), expires_in))
}

#[cfg(test)]
mod tests;

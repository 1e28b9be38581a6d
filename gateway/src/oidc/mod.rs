//! OIDC: approvers sign in with the organisation's identity provider (a shared service of the
//! admin side, not of the data path).
//!
//! - [`Verifier`]: discovery (`/.well-known/openid-configuration`), the issuer's JWKS (cached,
//!   fetched again — at most every [`verifier::REFRESH_MIN`] — when a token names a key it does
//!   not have) and ID-token verification: alg allow-list (asymmetric only), signature, `iss`,
//!   `aud`, `exp`/`nbf`/`iat` with `oidc.leeway`. A verified token becomes a
//!   [`crate::hold::Principal`], which [`crate::hold::authorize`] decides on.
//! - [`login`]: `gateway login` (authorization code + PKCE on a loopback redirect, or the device
//!   authorization grant, RFC 8628), `logout`, `whoami`; tokens in [`tokens`] (0600, refreshed).
//!
//! Everything goes to the issuer over verified TLS (system roots plus `oidc.ca_file`).

use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

pub mod http;
pub mod jwt;
pub mod login;
pub mod tokens;
pub mod verifier;

pub use verifier::Verifier;

/// `[oidc]` in the config: the identity provider approvers sign in with. Absent: OIDC is off
/// (only local peers on the admin socket).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct OidcConfig {
    /// The issuer URL, exactly as the provider's discovery document and tokens name it
    /// (`https://…`, no query).
    pub issuer: String,
    /// The client registered for the gateway (the CLI uses it; tokens must be issued to it).
    pub client_id: String,
    /// A confidential client's secret, read from this environment variable (the CLI's client
    /// is normally public: PKCE, no secret). Never written in the config itself.
    pub client_secret_env: Option<String>,
    /// The audiences this node accepts ID tokens for: one (`audience = "gateway-cli"`) or
    /// several (`audience = ["gateway-cli", "gateway-web"]`, e.g. the CLI's client and the
    /// approval page's, so a decision taken on the page of another node verifies here). A
    /// token's `aud` must name one of them, and its `azp`, when present, must be one of them.
    /// Default: `client_id` alone.
    #[serde(
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub audience: Vec<String>,
    /// The claim listing the person's groups (`@oidc:GROUP` approvers match it).
    pub groups_claim: String,
    /// The claim compared with a hold's local user name to refuse self-approval.
    pub username_claim: String,
    /// Scopes `gateway login` asks for.
    pub scopes: Vec<String>,
    /// A PEM file of CA certificates trusted for the issuer besides the system roots.
    pub ca_file: Option<PathBuf>,
    /// Clock skew allowed on `exp`, `nbf` and `iat`.
    #[serde(with = "crate::config::dur")]
    pub leeway: Duration,
}

/// `"a"` or `["a", "b"]`; an empty list is refused (leave the key out instead).
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    match OneOrMany::deserialize(d)? {
        OneOrMany::One(a) => Ok(vec![a]),
        OneOrMany::Many(v) if v.is_empty() => Err(serde::de::Error::custom(
            "an empty list accepts no token; leave it out (default: client_id)",
        )),
        OneOrMany::Many(v) => Ok(v),
    }
}

impl Default for OidcConfig {
    fn default() -> Self {
        Self {
            issuer: String::new(),
            client_id: String::new(),
            client_secret_env: None,
            audience: Vec::new(),
            groups_claim: "groups".into(),
            username_claim: "preferred_username".into(),
            scopes: vec![
                "openid".into(),
                "profile".into(),
                "email".into(),
                "offline_access".into(),
            ],
            ca_file: None,
            leeway: Duration::from_secs(30),
        }
    }
}

impl OidcConfig {
    /// The audiences ID tokens may be issued for (never empty).
    pub fn audiences(&self) -> Vec<&str> {
        if self.audience.is_empty() {
            vec![self.client_id.as_str()]
        } else {
            self.audience.iter().map(String::as_str).collect()
        }
    }

    /// `Err((key, reason))` for the first problem.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let bad = |k: &str, r: &str| Err((format!("oidc.{k}"), r.to_string()));
        match http::Url::parse(&self.issuer) {
            Ok(u) if u.query.is_none() => {}
            Ok(_) => return bad("issuer", "must not have a query"),
            Err(e) => return Err(("oidc.issuer".into(), e)),
        }
        if self.client_id.trim().is_empty() {
            return bad(
                "client_id",
                "must be set (the client registered for the gateway)",
            );
        }
        if self.audience.iter().any(|a| a.trim().is_empty()) {
            return bad(
                "audience",
                "must not contain an empty name (leave it out: it defaults to client_id)",
            );
        }
        if let Some(v) = &self.client_secret_env
            && v.trim().is_empty()
        {
            return bad("client_secret_env", "must name an environment variable");
        }
        if self.groups_claim.is_empty() {
            return bad("groups_claim", "must name a claim");
        }
        if self.username_claim.is_empty() {
            return bad("username_claim", "must name a claim");
        }
        if !self.scopes.iter().any(|s| s == "openid") {
            return bad("scopes", "must include `openid`");
        }
        if let Some(f) = &self.ca_file
            && !f.is_file()
        {
            return Err((
                "oidc.ca_file".into(),
                format!("{} is not a readable file", f.display()),
            ));
        }
        if self.leeway > Duration::from_secs(300) {
            return bad("leeway", "must be at most 5m");
        }
        Ok(())
    }
}

/// Why an ID token (or the issuer) was refused. Each message says what to do; none holds the
/// token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OidcError {
    #[error("the token is not a signed JWT (three base64url parts with a JSON header): {0}")]
    Malformed(String),
    #[error(
        "the token is signed with alg `{0}`, which is not allowed (only RS256/384/512, \
         PS256/384/512, ES256/384 and EdDSA: never `none` or a shared-secret HS* alg)"
    )]
    DisallowedAlg(String),
    #[error("the token was issued by `{got}`, not by the configured issuer `{want}`")]
    WrongIssuer { got: String, want: String },
    #[error("the token is for audience {got}, not for {want} (oidc.audience)")]
    WrongAudience { got: String, want: String },
    #[error("the token expired at {at} (Unix time; now {now}): sign in again with `gateway login`")]
    Expired { at: u64, now: u64 },
    #[error("the token is not valid before {at} (Unix time; now {now}): check the clocks")]
    NotYetValid { at: u64, now: u64 },
    #[error(
        "the token is signed with key `{0}`, which the issuer does not publish (its JWKS): a \
         token of another issuer, or a key retired"
    )]
    UnknownKey(String),
    #[error("the token's signature does not verify: it was altered, or not signed by the issuer")]
    BadSignature,
    #[error("the token is not an ID token: {0}")]
    NotAnIdToken(String),
    #[error("the token was issued to another client: {0}")]
    WrongParty(String),
    #[error("the token lacks a usable `{0}` claim")]
    MissingClaim(&'static str),
    #[error("the token's nonce does not match the sign-in's: a replayed or foreign token")]
    Nonce,
    #[error("OIDC issuer {issuer}: {reason}")]
    Issuer { issuer: String, reason: String },
    #[error(
        "OIDC is not configured ([oidc] issuer and client_id in the config, or --issuer and --client-id)"
    )]
    NotConfigured,
    #[error("sign-in: {0}")]
    Login(String),
    #[error("token file {path}: {reason}")]
    Tokens { path: PathBuf, reason: String },
}

/// A printable, bounded rendering of untrusted text (claims, provider messages) for messages.
pub(crate) fn printable(s: &str) -> String {
    let mut out: String = s.chars().filter(|c| !c.is_control()).take(200).collect();
    if s.chars().count() > 200 {
        out.push('…');
    }
    out
}

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

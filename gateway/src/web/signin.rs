//! Sign-in on the approval page: the OpenID Connect authorization code flow with PKCE (RFC
//! 7636, S256), the page being a web client of the `[oidc]` issuer (`[web] client_id`; a
//! confidential one with its secret in the environment variable `[web] client_secret_env`).
//!
//! `/login` makes a fresh `state`, `nonce` and code verifier, keeps them server-side
//! ([`super::session::Store`]) and sends the browser to the issuer's authorization endpoint
//! (from its discovery document); `/callback` takes the code back, checks the state against the
//! one bound to this browser, redeems the code at the token endpoint with the verifier, and
//! has the one verifier ([`crate::oidc::Verifier`], audience = the page's client) check the ID
//! token and its nonce. Nothing is decided on an unverified token; the tokens themselves are
//! never stored, logged or shown.

use serde_json::Value;

use crate::oidc::{
    Verifier,
    http::{Url, form_encode},
};

#[derive(Debug, thiserror::Error)]
pub enum SigninError {
    #[error("the identity provider cannot be used: {0}")]
    Provider(String),
    #[error("{0}")]
    Refused(String),
}

pub use crate::oidc::http::{challenge, random_token};

/// The page as an OAuth client.
#[derive(Clone)]
pub struct WebClient {
    pub id: String,
    pub secret: Option<String>,
    pub redirect_uri: String,
    /// Space-separated scopes asked for: `[oidc] scopes` but `offline_access` (the page keeps
    /// no refresh token).
    pub scopes: String,
}

impl std::fmt::Debug for WebClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebClient")
            .field("id", &self.id)
            .field("secret", &self.secret.as_ref().map(|_| "[redacted]"))
            .field("redirect_uri", &self.redirect_uri)
            .finish()
    }
}

/// The issuer's endpoint `name` from its discovery document, as text and parsed.
async fn endpoint(
    verifier: &Verifier,
    name: &str,
    pick: impl FnOnce(crate::oidc::verifier::Discovery) -> Option<String>,
) -> Result<(String, Url), SigninError> {
    let d = verifier
        .discovery()
        .await
        .map_err(|e| SigninError::Provider(e.to_string()))?;
    let text = pick(d)
        .ok_or_else(|| SigninError::Provider(format!("its discovery document has no {name}")))?;
    let url = Url::parse(&text).map_err(SigninError::Provider)?;
    Ok((text, url))
}

/// Where to send the browser to sign in.
pub async fn authorization_url(
    verifier: &Verifier,
    client: &WebClient,
    state: &str,
    nonce: &str,
    code_verifier: &str,
) -> Result<String, SigninError> {
    let (endpoint, _) = endpoint(verifier, "authorization_endpoint", |d| {
        d.authorization_endpoint
    })
    .await?;
    let sep = if endpoint.contains('?') { '&' } else { '?' };
    Ok(format!(
        "{endpoint}{sep}{}",
        form_encode(&[
            ("response_type", "code"),
            ("client_id", &client.id),
            ("redirect_uri", &client.redirect_uri),
            ("scope", &client.scopes),
            ("state", state),
            ("nonce", nonce),
            ("code_challenge", &challenge(code_verifier)),
            ("code_challenge_method", "S256"),
        ])
    ))
}

/// Redeem an authorization code at the token endpoint: the ID token.
pub async fn redeem(
    verifier: &Verifier,
    client: &WebClient,
    code: &str,
    code_verifier: &str,
) -> Result<String, SigninError> {
    let (_, url) = endpoint(verifier, "token_endpoint", |d| d.token_endpoint).await?;
    let http = verifier
        .client()
        .ok_or_else(|| SigninError::Provider("no network in this verifier".into()))?;
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", client.redirect_uri.as_str()),
        ("code_verifier", code_verifier),
    ];
    // A confidential client authenticates with HTTP Basic; a public one names itself.
    let basic = client.secret.as_deref().map(|s| (client.id.as_str(), s));
    if basic.is_none() {
        form.push(("client_id", client.id.as_str()));
    }
    let (status, body) = http
        .post_form(&url, &form_encode(&form), basic)
        .await
        .map_err(SigninError::Provider)?;
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if status != 200 {
        // The provider's own error words (RFC 6749 §5.2); never the code or the secret.
        return Err(SigninError::Refused(format!(
            "the identity provider refused the sign-in code ({status}): {} {}",
            crate::hold::printable(v["error"].as_str().unwrap_or("?"), true),
            crate::hold::printable(v["error_description"].as_str().unwrap_or(""), true)
        )));
    }
    v["id_token"]
        .as_str()
        .map(String::from)
        .ok_or_else(|| SigninError::Refused("the token endpoint gave no id_token".into()))
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
    fn random_tokens_differ_and_are_url_safe() {
        let (a, b) = (random_token(), random_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
    }

    #[test]
    fn the_client_secret_is_never_printed() {
        let c = WebClient {
            id: "web".into(),
            secret: Some("s3cr3t-value".into()),
            redirect_uri: "https://x/callback".into(),
            scopes: "openid".into(),
        };
        assert!(!format!("{c:?}").contains("s3cr3t"));
    }
}

//! ID-token verification against the configured issuer: its discovery document and JWKS,
//! fetched over verified TLS and cached.
//!
//! Order of the checks (every one fails closed, each with its own [`OidcError`]): the token's
//! shape and alg (allow-list), its `iss` (a token of another issuer is named as such, before
//! any key is looked up), the key (`kid`; an unknown one makes the JWKS be fetched again, at
//! most every [`REFRESH_MIN`]), the signature, then `aud`, `exp`, `nbf`/`iat` (with
//! `oidc.leeway`), `sub`, and the nonce when the caller has one.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::{info, warn};

use super::{
    OidcConfig, OidcError,
    http::{Client, Url},
    jwt::{JwkSet, Jws},
    printable, unix_now,
};
use crate::hold::Principal;

/// The JWKS is fetched again for an unknown `kid` at most this often.
pub const REFRESH_MIN: Duration = Duration::from_secs(30);
/// The discovery document and JWKS are fetched again after this long in any case.
pub const MAX_AGE: Duration = Duration::from_secs(3600);

/// The parts of the discovery document (OpenID Connect Discovery 1.0 §3) the gateway uses.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Discovery {
    pub issuer: String,
    #[serde(default)]
    pub authorization_endpoint: Option<String>,
    #[serde(default)]
    pub token_endpoint: Option<String>,
    #[serde(default)]
    pub device_authorization_endpoint: Option<String>,
    pub jwks_uri: String,
    #[serde(default)]
    pub revocation_endpoint: Option<String>,
    #[serde(default)]
    pub code_challenge_methods_supported: Vec<String>,
}

#[derive(Default)]
struct State {
    discovery: Option<(Instant, Discovery)>,
    jwks: Option<(Instant, Arc<JwkSet>)>,
}

pub struct Verifier {
    cfg: OidcConfig,
    client: Option<Client>,
    /// What was fetched; held only to read or store, never across a fetch, so a token whose
    /// key is cached verifies at once while a fetch for another waits on a slow issuer.
    state: std::sync::Mutex<State>,
    /// One fetch from the issuer at a time (the others wait for its result).
    fetch: tokio::sync::Mutex<()>,
}

impl Verifier {
    /// A verifier for `[oidc]`; `mark`: the bypass mark for the daemon's sockets. Nothing is
    /// fetched until a token comes.
    pub fn new(cfg: &OidcConfig, mark: Option<u32>) -> Result<Self, OidcError> {
        let client = Client::new(cfg, mark).map_err(|reason| OidcError::Issuer {
            issuer: cfg.issuer.clone(),
            reason,
        })?;
        Ok(Self {
            cfg: cfg.clone(),
            client: Some(client),
            state: Default::default(),
            fetch: Default::default(),
        })
    }

    /// A verifier that knows `keys` and never fetches (unit tests).
    #[cfg(test)]
    pub fn with_keys(cfg: &OidcConfig, keys: JwkSet) -> Self {
        Self {
            cfg: cfg.clone(),
            client: None,
            state: std::sync::Mutex::new(State {
                discovery: None,
                jwks: Some((Instant::now(), Arc::new(keys))),
            }),
            fetch: Default::default(),
        }
    }

    pub fn config(&self) -> &OidcConfig {
        &self.cfg
    }

    pub fn client(&self) -> Option<&Client> {
        self.client.as_ref()
    }

    fn issuer_error(&self, reason: impl Into<String>) -> OidcError {
        OidcError::Issuer {
            issuer: self.cfg.issuer.clone(),
            reason: reason.into(),
        }
    }

    async fn get_json(&self, url: &str) -> Result<Value, OidcError> {
        let client = self
            .client
            .as_ref()
            .ok_or_else(|| self.issuer_error("no network in this verifier"))?;
        let u = Url::parse(url).map_err(|e| self.issuer_error(e))?;
        let (status, body) = client.get(&u).await.map_err(|e| self.issuer_error(e))?;
        if status != 200 {
            return Err(self.issuer_error(format!("{} answered {status}", printable(url))));
        }
        serde_json::from_slice(&body)
            .map_err(|e| self.issuer_error(format!("{} sent no JSON ({e})", printable(url))))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic elsewhere cannot leave the cache half-written (each field is replaced whole).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cached_discovery(&self) -> Option<Discovery> {
        match &self.state().discovery {
            Some((at, d)) if at.elapsed() < MAX_AGE => Some(d.clone()),
            _ => None,
        }
    }

    /// The issuer's discovery document (cached for [`MAX_AGE`]); its `issuer` must be the
    /// configured one, its `jwks_uri` https.
    pub async fn discovery(&self) -> Result<Discovery, OidcError> {
        if let Some(d) = self.cached_discovery() {
            return Ok(d);
        }
        let _one = self.fetch.lock().await;
        self.discovery_fetching().await
    }

    /// The discovery document, fetched when not cached; the caller holds `fetch`.
    async fn discovery_fetching(&self) -> Result<Discovery, OidcError> {
        if let Some(d) = self.cached_discovery() {
            return Ok(d);
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.cfg.issuer.trim_end_matches('/')
        );
        let v = self.get_json(&url).await?;
        let d: Discovery = serde_json::from_value(v)
            .map_err(|e| self.issuer_error(format!("bad discovery document ({e})")))?;
        if d.issuer != self.cfg.issuer {
            return Err(self.issuer_error(format!(
                "its discovery document names issuer `{}`: oidc.issuer must be exactly that",
                printable(&d.issuer)
            )));
        }
        Url::parse(&d.jwks_uri).map_err(|e| self.issuer_error(format!("jwks_uri: {e}")))?;
        info!(issuer = %self.cfg.issuer, "OIDC discovery document fetched");
        self.state().discovery = Some((Instant::now(), d.clone()));
        Ok(d)
    }

    /// The cached key set, if it may be used: younger than [`MAX_AGE`], and with `refresh`
    /// (a token named a key it lacks) younger than [`REFRESH_MIN`] too.
    fn cached_jwks(&self, refresh: bool) -> Option<Arc<JwkSet>> {
        let st = self.state();
        let (at, k) = st.jwks.as_ref()?;
        let age = at.elapsed();
        (age < MAX_AGE && (!refresh || age < REFRESH_MIN || self.client.is_none()))
            .then(|| k.clone())
    }

    async fn jwks(&self, refresh: bool) -> Result<Arc<JwkSet>, OidcError> {
        if let Some(k) = self.cached_jwks(refresh) {
            return Ok(k);
        }
        let _one = self.fetch.lock().await;
        // Another caller may have fetched it while this one waited.
        if let Some(k) = self.cached_jwks(refresh) {
            return Ok(k);
        }
        let d = self.discovery_fetching().await?;
        let v = self.get_json(&d.jwks_uri).await?;
        let set: JwkSet =
            serde_json::from_value(v).map_err(|e| self.issuer_error(format!("bad JWKS ({e})")))?;
        if set.keys.len() > 100 {
            return Err(self.issuer_error("its JWKS has more than 100 keys"));
        }
        let set = Arc::new(set);
        self.state().jwks = Some((Instant::now(), set.clone()));
        Ok(set)
    }

    /// Verify an ID token; the person it names.
    pub async fn verify(&self, id_token: &str) -> Result<Principal, OidcError> {
        self.verify_nonce(id_token, None).await
    }

    /// As [`Self::verify`]; with `nonce`, the token's `nonce` claim must equal it.
    pub async fn verify_nonce(
        &self,
        id_token: &str,
        nonce: Option<&str>,
    ) -> Result<Principal, OidcError> {
        let r = self.check(id_token, nonce).await;
        if let Err(e) = &r {
            warn!(issuer = %self.cfg.issuer, error = %e, "ID token refused");
        }
        r
    }

    async fn check(&self, id_token: &str, nonce: Option<&str>) -> Result<Principal, OidcError> {
        let jws = Jws::parse(id_token)?;
        // Unverified, used only to refuse: a token of another issuer is named as such.
        match jws.claims.get("iss").and_then(Value::as_str) {
            Some(iss) if iss == self.cfg.issuer => {}
            Some(iss) => {
                return Err(OidcError::WrongIssuer {
                    got: printable(iss),
                    want: self.cfg.issuer.clone(),
                });
            }
            None => return Err(OidcError::MissingClaim("iss")),
        }
        let key = {
            let set = self.jwks(false).await?;
            match jws.key(&set) {
                Some(k) => k.clone(),
                None => {
                    let set = self.jwks(true).await?;
                    jws.key(&set).cloned().ok_or_else(|| {
                        OidcError::UnknownKey(
                            jws.kid
                                .as_deref()
                                .map(printable)
                                .unwrap_or_else(|| "(no kid)".into()),
                        )
                    })?
                }
            }
        };
        jws.verify(&key)?;
        self.principal(&jws.claims, nonce)
    }

    /// The claims of a token whose signature verified: audience, lifetime, subject, nonce.
    fn principal(&self, c: &Value, nonce: Option<&str>) -> Result<Principal, OidcError> {
        let accepted = self.cfg.audiences();
        let ours = |v: &str| accepted.contains(&v);
        let want = accepted
            .iter()
            .map(|a| format!("`{a}`"))
            .collect::<Vec<_>>()
            .join(" or ");
        let aud_ok = match c.get("aud") {
            Some(Value::String(a)) => ours(a),
            Some(Value::Array(a)) => a.iter().any(|v| v.as_str().is_some_and(ours)),
            _ => false,
        };
        if !aud_ok {
            return Err(OidcError::WrongAudience {
                got: c
                    .get("aud")
                    .map(|a| printable(&a.to_string()))
                    .unwrap_or_else(|| "(none)".into()),
                want,
            });
        }
        // OIDC Core 3.1.3.7 (3-5): the token must have been issued to a client this node
        // accepts. With several audiences, `azp` must be present and name one of them; an
        // `azp` present names one of them, always.
        let several = matches!(c.get("aud"), Some(Value::Array(a)) if a.len() > 1);
        match c.get("azp") {
            Some(Value::String(azp)) if ours(azp) => {}
            Some(azp) => {
                return Err(OidcError::WrongParty(format!(
                    "azp is {}, not {want}",
                    printable(&azp.to_string())
                )));
            }
            None if several => {
                return Err(OidcError::WrongParty(format!(
                    "it names several audiences and no azp; {want} must be its authorized party"
                )));
            }
            None => {}
        }
        // Not an ID token whatever its header says: a logout token carries `events`
        // (OIDC Back-Channel Logout 2.4; access tokens are refused by their `typ`, RFC 9068).
        if c.get("events").is_some() {
            return Err(OidcError::NotAnIdToken(
                "it carries an `events` claim: a logout token".into(),
            ));
        }
        let now = unix_now();
        let leeway = self.cfg.leeway.as_secs();
        // `iat` is required (OIDC Core §2).
        c.get("iat")
            .and_then(Value::as_u64)
            .ok_or(OidcError::MissingClaim("iat"))?;
        let exp = c
            .get("exp")
            .and_then(Value::as_u64)
            .ok_or(OidcError::MissingClaim("exp"))?;
        if now > exp.saturating_add(leeway) {
            return Err(OidcError::Expired { at: exp, now });
        }
        for claim in ["nbf", "iat"] {
            if let Some(t) = c.get(claim).and_then(Value::as_u64)
                && t > now.saturating_add(leeway)
            {
                return Err(OidcError::NotYetValid { at: t, now });
            }
        }
        if let Some(n) = nonce
            && c.get("nonce").and_then(Value::as_str) != Some(n)
        {
            return Err(OidcError::Nonce);
        }
        let subject = c
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty() && s.len() <= 255)
            .ok_or(OidcError::MissingClaim("sub"))?
            .to_string();
        let text = |k: &str| c.get(k).and_then(Value::as_str).map(printable);
        let groups = match c.get(&self.cfg.groups_claim) {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .take(1000)
                .map(String::from)
                .collect(),
            Some(Value::String(g)) => vec![g.clone()],
            _ => Vec::new(),
        };
        Ok(Principal::Oidc {
            issuer: self.cfg.issuer.clone(),
            subject,
            name: text("name"),
            email: text("email"),
            username: text(&self.cfg.username_claim),
            groups,
            expires: exp,
        })
    }
}

#[cfg(test)]
mod tests;

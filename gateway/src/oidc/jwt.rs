//! JWS compact serialization (RFC 7515) checked against a JWK set (RFC 7517), with `ring`
//! (the crypto rustls already uses here). Only asymmetric algorithms are accepted: `none` and
//! the HS* family (where a public key would be taken for a shared secret) never are.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use ring::signature::{self, UnparsedPublicKey};
use serde::Deserialize;
use serde_json::Value;

use super::{OidcError, printable};

/// The algorithms a token may be signed with.
pub const ALLOWED: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

/// A token split and decoded; nothing in it is trusted until [`Jws::verify`] returned `Ok`.
pub struct Jws<'a> {
    pub alg: String,
    pub kid: Option<String>,
    pub claims: Value,
    signing_input: &'a str,
    signature: Vec<u8>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Jwk {
    pub kty: String,
    #[serde(default)]
    pub kid: Option<String>,
    #[serde(default)]
    pub alg: Option<String>,
    #[serde(default, rename = "use")]
    pub use_: Option<String>,
    #[serde(default)]
    pub crv: Option<String>,
    #[serde(default)]
    pub n: Option<String>,
    #[serde(default)]
    pub e: Option<String>,
    #[serde(default)]
    pub x: Option<String>,
    #[serde(default)]
    pub y: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct JwkSet {
    pub keys: Vec<Jwk>,
}

fn b64(part: &str, what: &str) -> Result<Vec<u8>, OidcError> {
    URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| OidcError::Malformed(format!("the {what} is not base64url")))
}

impl<'a> Jws<'a> {
    /// Split and decode; refuses a disallowed alg and `crit` headers (none is understood).
    pub fn parse(token: &'a str) -> Result<Self, OidcError> {
        let token = token.trim();
        if token.len() > 64 * 1024 {
            return Err(OidcError::Malformed("longer than 64 KiB".into()));
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(OidcError::Malformed("not three dot-separated parts".into()));
        };
        let header: Value = serde_json::from_slice(&b64(h, "header")?)
            .map_err(|_| OidcError::Malformed("the header is not JSON".into()))?;
        let alg = header["alg"]
            .as_str()
            .ok_or_else(|| OidcError::Malformed("the header has no `alg`".into()))?;
        if !ALLOWED.contains(&alg) {
            return Err(OidcError::DisallowedAlg(printable(alg)));
        }
        // An ID token is a plain JWT (OIDC Core §2; RFC 8725 §3.11 explicit typing): a token
        // typed as anything else (`at+jwt` access tokens, `logout+jwt` logout tokens, ...) is
        // another kind of token, whatever its signature.
        match header.get("typ") {
            None => {}
            Some(Value::String(t)) if t.eq_ignore_ascii_case("JWT") => {}
            Some(t) => {
                return Err(OidcError::NotAnIdToken(format!(
                    "its header says typ {}",
                    printable(&t.to_string())
                )));
            }
        }
        if header.get("crit").is_some() {
            return Err(OidcError::Malformed(
                "the header has `crit` extensions, which are not supported".into(),
            ));
        }
        let claims: Value = serde_json::from_slice(&b64(p, "payload")?)
            .map_err(|_| OidcError::Malformed("the payload is not JSON".into()))?;
        if !claims.is_object() {
            return Err(OidcError::Malformed(
                "the payload is not a JSON object".into(),
            ));
        }
        Ok(Self {
            alg: alg.to_string(),
            kid: header["kid"].as_str().map(String::from),
            claims,
            signing_input: &token[..h.len() + 1 + p.len()],
            signature: b64(s, "signature")?,
        })
    }

    /// The key in `set` this token names: by `kid`, or the only key fit for its alg when it
    /// names none. `None`: the set does not have it.
    pub fn key<'k>(&self, set: &'k JwkSet) -> Option<&'k Jwk> {
        let fit = |k: &&Jwk| {
            k.use_.as_deref().is_none_or(|u| u == "sig")
                && k.alg.as_deref().is_none_or(|a| a == self.alg)
                && kty_fits(&self.alg, k)
        };
        match &self.kid {
            Some(kid) => set
                .keys
                .iter()
                .filter(fit)
                .find(|k| k.kid.as_deref() == Some(kid)),
            None => {
                let mut fitting = set.keys.iter().filter(fit);
                match (fitting.next(), fitting.next()) {
                    (Some(k), None) => Some(k),
                    _ => None,
                }
            }
        }
    }

    /// Check the signature with `key`.
    pub fn verify(&self, key: &Jwk) -> Result<(), OidcError> {
        let msg = self.signing_input.as_bytes();
        let bad = |_| OidcError::BadSignature;
        let field = |f: &Option<String>| -> Result<Vec<u8>, OidcError> {
            f.as_deref()
                .ok_or(OidcError::BadSignature)
                .and_then(|v| b64(v, "key").map_err(|_| OidcError::BadSignature))
        };
        match self.alg.as_str() {
            rsa @ ("RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512") => {
                let params: &signature::RsaParameters = match rsa {
                    "RS256" => &signature::RSA_PKCS1_2048_8192_SHA256,
                    "RS384" => &signature::RSA_PKCS1_2048_8192_SHA384,
                    "RS512" => &signature::RSA_PKCS1_2048_8192_SHA512,
                    "PS256" => &signature::RSA_PSS_2048_8192_SHA256,
                    "PS384" => &signature::RSA_PSS_2048_8192_SHA384,
                    _ => &signature::RSA_PSS_2048_8192_SHA512,
                };
                let (n, e) = (field(&key.n)?, field(&key.e)?);
                signature::RsaPublicKeyComponents { n: &n, e: &e }
                    .verify(params, msg, &self.signature)
                    .map_err(bad)
            }
            "ES256" | "ES384" => {
                let (alg, len): (&signature::EcdsaVerificationAlgorithm, usize) =
                    if self.alg == "ES256" {
                        (&signature::ECDSA_P256_SHA256_FIXED, 32)
                    } else {
                        (&signature::ECDSA_P384_SHA384_FIXED, 48)
                    };
                let (x, y) = (field(&key.x)?, field(&key.y)?);
                if x.len() != len || y.len() != len {
                    return Err(OidcError::BadSignature);
                }
                let mut point = Vec::with_capacity(1 + 2 * len);
                point.push(4);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                UnparsedPublicKey::new(alg, point)
                    .verify(msg, &self.signature)
                    .map_err(bad)
            }
            "EdDSA" => UnparsedPublicKey::new(&signature::ED25519, field(&key.x)?)
                .verify(msg, &self.signature)
                .map_err(bad),
            other => Err(OidcError::DisallowedAlg(printable(other))),
        }
    }
}

fn kty_fits(alg: &str, k: &Jwk) -> bool {
    match alg {
        a if a.starts_with("RS") || a.starts_with("PS") => k.kty == "RSA",
        "ES256" => k.kty == "EC" && k.crv.as_deref() == Some("P-256"),
        "ES384" => k.kty == "EC" && k.crv.as_deref() == Some("P-384"),
        "EdDSA" => k.kty == "OKP" && k.crv.as_deref() == Some("Ed25519"),
        _ => false,
    }
}

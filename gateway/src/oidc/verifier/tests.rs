//! The verifier with keys generated here (ES256 and EdDSA with ring; RS256 is covered end to
//! end against the real provider).

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use ring::{
    rand::SystemRandom,
    signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _},
};
use serde_json::{Value, json};

use super::*;
use crate::oidc::jwt::Jwk;

const ISS: &str = "https://idp.example";

fn cfg() -> OidcConfig {
    OidcConfig {
        issuer: ISS.into(),
        client_id: "gateway-cli".into(),
        ..Default::default()
    }
}

struct Es {
    pair: EcdsaKeyPair,
    kid: String,
}

impl Es {
    fn new(kid: &str) -> Self {
        let rng = SystemRandom::new();
        let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        Self {
            pair: EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap(),
            kid: kid.into(),
        }
    }
    fn jwk(&self) -> Jwk {
        let p = self.pair.public_key().as_ref();
        serde_json::from_value(json!({
            "kty": "EC", "crv": "P-256", "kid": self.kid, "use": "sig", "alg": "ES256",
            "x": B64.encode(&p[1..33]), "y": B64.encode(&p[33..65]),
        }))
        .unwrap()
    }
    fn sign(&self, header: Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        );
        let sig = self
            .pair
            .sign(&SystemRandom::new(), input.as_bytes())
            .unwrap();
        format!("{input}.{}", B64.encode(sig.as_ref()))
    }
    fn token(&self, claims: &Value) -> String {
        self.sign(
            json!({"alg": "ES256", "kid": self.kid, "typ": "JWT"}),
            claims,
        )
    }
}

fn claims() -> Value {
    let now = unix_now();
    json!({
        "iss": ISS, "aud": "gateway-cli", "sub": "u-alice", "exp": now + 300, "iat": now,
        "name": "Alice A.", "email": "alice@example.org", "preferred_username": "alice",
        "groups": ["llm-approvers", "staff"],
    })
}

fn verifier(keys: Vec<Jwk>) -> Verifier {
    Verifier::with_keys(&cfg(), JwkSet { keys })
}

async fn refused(v: &Verifier, token: &str) -> OidcError {
    v.verify(token)
        .await
        .expect_err("the token must be refused")
}

#[tokio::test]
async fn a_good_token_names_the_person_and_groups() {
    let k = Es::new("k1");
    let v = verifier(vec![k.jwk()]);
    let p = v.verify(&k.token(&claims())).await.unwrap();
    match p {
        Principal::Oidc {
            issuer,
            subject,
            username,
            email,
            groups,
            ..
        } => {
            assert_eq!(issuer, ISS);
            assert_eq!(subject, "u-alice");
            assert_eq!(username.as_deref(), Some("alice"));
            assert_eq!(email.as_deref(), Some("alice@example.org"));
            assert_eq!(groups, vec!["llm-approvers", "staff"]);
        }
        other => panic!("not an OIDC principal: {other:?}"),
    }
}

#[tokio::test]
async fn ed25519_tokens_verify_too() {
    let rng = SystemRandom::new();
    let pair =
        Ed25519KeyPair::from_pkcs8(Ed25519KeyPair::generate_pkcs8(&rng).unwrap().as_ref()).unwrap();
    let jwk: Jwk = serde_json::from_value(json!({
        "kty": "OKP", "crv": "Ed25519", "kid": "ed",
        "x": B64.encode(pair.public_key().as_ref()),
    }))
    .unwrap();
    let input = format!(
        "{}.{}",
        B64.encode(json!({"alg": "EdDSA", "kid": "ed"}).to_string()),
        B64.encode(claims().to_string())
    );
    let token = format!("{input}.{}", B64.encode(pair.sign(input.as_bytes())));
    let v = verifier(vec![jwk]);
    assert!(v.verify(&token).await.is_ok());
    // One byte of the signed part changed: refused.
    let mut bad = token.clone().into_bytes();
    bad[input.len() - 3] ^= 1;
    let bad = String::from_utf8(bad).unwrap();
    assert!(v.verify(&bad).await.is_err());
}

#[tokio::test]
async fn each_kind_of_bad_token_gets_its_own_error() {
    let k = Es::new("k1");
    let v = verifier(vec![k.jwk()]);
    let now = unix_now();
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims();
        f(&mut c);
        k.token(&c)
    };

    let e = refused(&v, &with(&|c| c["exp"] = json!(now - 120))).await;
    assert!(matches!(e, OidcError::Expired { .. }), "{e:?}");
    assert!(e.to_string().contains("expired"), "{e}");
    // Within the leeway (30 s) it still counts.
    assert!(
        v.verify(&with(&|c| c["exp"] = json!(now - 5)))
            .await
            .is_ok()
    );

    let e = refused(&v, &with(&|c| c["nbf"] = json!(now + 600))).await;
    assert!(matches!(e, OidcError::NotYetValid { .. }), "{e:?}");

    let e = refused(&v, &with(&|c| c["iss"] = json!("https://evil.example"))).await;
    assert!(matches!(e, OidcError::WrongIssuer { .. }), "{e:?}");
    assert!(e.to_string().contains("https://evil.example"), "{e}");

    let e = refused(&v, &with(&|c| c["aud"] = json!("another-client"))).await;
    assert!(matches!(e, OidcError::WrongAudience { .. }), "{e:?}");
    // Several audiences: only with `azp` naming this client (OIDC Core 3.1.3.7, 3-5).
    let e = refused(&v, &with(&|c| c["aud"] = json!(["x", "gateway-cli"]))).await;
    assert!(matches!(e, OidcError::WrongParty(_)), "{e:?}");
    assert!(
        v.verify(&with(&|c| {
            c["aud"] = json!(["x", "gateway-cli"]);
            c["azp"] = json!("gateway-cli");
        }))
        .await
        .is_ok()
    );
    let e = refused(&v, &with(&|c| c["azp"] = json!("other-app"))).await;
    assert!(matches!(e, OidcError::WrongParty(_)), "{e:?}");
    let e = refused(
        &v,
        &with(&|c| {
            c.as_object_mut().unwrap().remove("iat");
        }),
    )
    .await;
    assert!(matches!(e, OidcError::MissingClaim("iat")), "{e:?}");
    let e = refused(
        &v,
        &with(&|c| c["events"] = json!({"http://schemas.openid.net/event/backchannel-logout": {}})),
    )
    .await;
    assert!(matches!(e, OidcError::NotAnIdToken(_)), "{e:?}");

    let e = refused(
        &v,
        &with(&|c| {
            c.as_object_mut()
                .unwrap()
                .remove("exp")
                .map(|_| ())
                .unwrap()
        }),
    )
    .await;
    assert_eq!(e, OidcError::MissingClaim("exp"));

    // Claims changed after signing: the signature no longer fits.
    let good = k.token(&claims());
    let parts: Vec<&str> = good.split('.').collect();
    let mut c = claims();
    c["groups"] = json!(["llm-approvers", "admins"]);
    let tampered = format!("{}.{}.{}", parts[0], B64.encode(c.to_string()), parts[2]);
    assert_eq!(refused(&v, &tampered).await, OidcError::BadSignature);

    // Signed by a key the issuer does not publish.
    let other = Es::new("k2");
    let e = refused(&v, &other.token(&claims())).await;
    assert_eq!(e, OidcError::UnknownKey("k2".into()));
    // Same kid, another key: a bad signature.
    let imposter = Es::new("k1");
    assert_eq!(
        refused(&v, &imposter.token(&claims())).await,
        OidcError::BadSignature
    );
}

/// `audience = ["gateway-cli", "gateway-web"]`: a token of either client verifies (the CLI's,
/// the approval page's); a third client's does not, and `azp` must be one of the two.
#[tokio::test]
async fn a_list_of_audiences_accepts_each_and_nothing_else() {
    let k = Es::new("k1");
    let c = OidcConfig {
        audience: vec!["gateway-cli".into(), "gateway-web".into()],
        ..cfg()
    };
    let v = Verifier::with_keys(
        &c,
        JwkSet {
            keys: vec![k.jwk()],
        },
    );
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims();
        f(&mut c);
        k.token(&c)
    };
    assert!(v.verify(&with(&|_| {})).await.is_ok());
    assert!(
        v.verify(&with(&|c| {
            c["aud"] = json!("gateway-web");
            c["azp"] = json!("gateway-web");
        }))
        .await
        .is_ok()
    );
    let e = refused(&v, &with(&|c| c["aud"] = json!("other-app"))).await;
    assert!(matches!(e, OidcError::WrongAudience { .. }), "{e:?}");
    assert!(
        e.to_string().contains("`gateway-cli` or `gateway-web`"),
        "{e}"
    );
    // Issued to a third client that added ours to its audiences: refused by `azp`.
    let e = refused(
        &v,
        &with(&|c| {
            c["aud"] = json!(["gateway-web", "other-app"]);
            c["azp"] = json!("other-app");
        }),
    )
    .await;
    assert!(matches!(e, OidcError::WrongParty(_)), "{e:?}");
    let e = refused(
        &v,
        &with(&|c| c["aud"] = json!(["gateway-web", "other-app"])),
    )
    .await;
    assert!(matches!(e, OidcError::WrongParty(_)), "{e:?}");
    // The page's own verifier (audience = its client only) still refuses the CLI's token.
    let page = OidcConfig {
        audience: vec!["gateway-web".into()],
        ..cfg()
    };
    let pv = Verifier::with_keys(
        &page,
        JwkSet {
            keys: vec![k.jwk()],
        },
    );
    let e = refused(&pv, &with(&|_| {})).await;
    assert!(matches!(e, OidcError::WrongAudience { .. }), "{e:?}");
}

#[tokio::test]
async fn alg_none_and_hmac_are_never_accepted() {
    let k = Es::new("k1");
    let v = verifier(vec![k.jwk()]);
    let body = B64.encode(claims().to_string());
    for alg in ["none", "None", "HS256", "HS512"] {
        let header = B64.encode(json!({"alg": alg, "kid": "k1"}).to_string());
        for sig in ["", "c2ln"] {
            let e = refused(&v, &format!("{header}.{body}.{sig}")).await;
            assert!(matches!(e, OidcError::DisallowedAlg(_)), "{alg}: {e:?}");
            assert!(e.to_string().contains("not allowed"), "{e}");
        }
    }
    // An ES256 key is not used for an RS256 header, whatever the kid says.
    let e = refused(&v, &k.sign(json!({"alg": "RS256", "kid": "k1"}), &claims())).await;
    assert_eq!(e, OidcError::UnknownKey("k1".into()));
    for junk in ["", "a.b", "a.b.c.d", "!!.!!.!!"] {
        assert!(matches!(refused(&v, junk).await, OidcError::Malformed(_)));
    }
}

#[tokio::test]
async fn a_nonce_is_checked_when_given() {
    let k = Es::new("k1");
    let v = verifier(vec![k.jwk()]);
    let mut c = claims();
    c["nonce"] = json!("n-123");
    let t = k.token(&c);
    assert!(v.verify_nonce(&t, Some("n-123")).await.is_ok());
    assert_eq!(
        v.verify_nonce(&t, Some("n-999")).await.unwrap_err(),
        OidcError::Nonce
    );
}

#[test]
fn config_is_validated_with_the_key_named() {
    let ok = cfg();
    assert!(ok.validate().is_ok());
    let bad = |f: &dyn Fn(&mut OidcConfig)| {
        let mut c = cfg();
        f(&mut c);
        c.validate().unwrap_err().0
    };
    assert_eq!(
        bad(&|c| c.issuer = "http://idp.example".into()),
        "oidc.issuer"
    );
    assert_eq!(bad(&|c| c.issuer = "".into()), "oidc.issuer");
    assert_eq!(bad(&|c| c.client_id = "".into()), "oidc.client_id");
    assert_eq!(bad(&|c| c.scopes = vec!["profile".into()]), "oidc.scopes");
    assert_eq!(ok.audiences(), ["gateway-cli"]);
    assert_eq!(
        bad(&|c| c.audience = vec!["a".into(), " ".into()]),
        "oidc.audience"
    );
    // One name or a list; an empty list is refused where it is read.
    let parse = |t: &str| {
        toml::from_str::<OidcConfig>(&format!(
            "issuer = \"{ISS}\"\nclient_id = \"gateway-cli\"\n{t}"
        ))
    };
    assert_eq!(parse("audience = \"x\"").unwrap().audiences(), ["x"]);
    assert_eq!(
        parse("audience = [\"x\", \"y\"]").unwrap().audiences(),
        ["x", "y"]
    );
    assert!(
        parse("audience = []")
            .unwrap_err()
            .to_string()
            .contains("accepts no token")
    );
}

/// An issuer that accepts and never answers holds up only the tokens that need a fetch (an
/// unknown `kid`); a token whose key is cached verifies meanwhile.
#[tokio::test]
async fn a_hung_issuer_delays_only_tokens_that_need_a_fetch() {
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let at = hung.local_addr().unwrap();
    let k = Es::new("k1");
    let c = OidcConfig {
        issuer: format!("https://{at}"),
        ..cfg()
    };
    let v = Arc::new(Verifier::new(&c, None).unwrap());
    {
        let mut st = v.state();
        st.discovery = Some((
            Instant::now(),
            Discovery {
                issuer: c.issuer.clone(),
                authorization_endpoint: None,
                token_endpoint: None,
                device_authorization_endpoint: None,
                jwks_uri: format!("https://{at}/jwks"),
                revocation_endpoint: None,
                code_challenge_methods_supported: vec![],
            },
        ));
        // Older than REFRESH_MIN: an unknown kid makes the verifier fetch.
        st.jwks = Some((
            Instant::now() - REFRESH_MIN - Duration::from_secs(1),
            Arc::new(JwkSet {
                keys: vec![k.jwk()],
            }),
        ));
    }
    let mut claims = claims();
    claims["iss"] = json!(c.issuer);
    let good = k.token(&claims);
    let unknown = Es::new("k2").token(&claims);
    let waiting = {
        let v = v.clone();
        tokio::spawn(async move { v.verify(&unknown).await })
    };
    // Let the unknown-kid verification reach the hung fetch.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "the fetch should be hanging");
    let r = tokio::time::timeout(Duration::from_secs(5), v.verify(&good))
        .await
        .expect("a cached key must not wait for the hung fetch");
    assert!(r.is_ok(), "{r:?}");
    waiting.abort();
    drop(hung);
}

//! OIDC against a real OpenID provider (npm `oidc-provider`, started here): the verifier
//! on its tokens, `gateway login` (device grant and PKCE), the token file, refresh, and the
//! admin API deciding holds for the signed-in identity. Net bytes 200-209.

use std::time::Duration;

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use gateway::{
    hold::Principal,
    oidc::{OidcConfig, OidcError, Verifier},
};
use gateway_tests::oidc::{ALICE, BOB, CLI_CLIENT, OTHER_CLIENT, OidcProvider, Options};

fn verifier(p: &OidcProvider) -> Verifier {
    let cfg = OidcConfig {
        issuer: p.issuer.clone(),
        client_id: CLI_CLIENT.into(),
        ca_file: Some(p.ca_pem.clone()),
        ..Default::default()
    };
    cfg.validate().expect("valid [oidc]");
    Verifier::new(&cfg, None).expect("verifier")
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn the_providers_tokens_verify_and_bad_ones_are_refused_each_with_its_reason() {
    let idp = OidcProvider::start(200);
    let v = verifier(&idp);
    let rt = rt();

    let alice = idp.id_token(CLI_CLIENT, ALICE);
    match rt
        .block_on(v.verify(&alice))
        .expect("alice's token verifies")
    {
        Principal::Oidc {
            subject,
            username,
            groups,
            issuer,
            ..
        } => {
            assert_eq!(subject, ALICE);
            assert_eq!(username.as_deref(), Some(ALICE));
            assert_eq!(issuer, idp.issuer);
            assert!(groups.iter().any(|g| g == "llm-approvers"), "{groups:?}");
        }
        p => panic!("not an OIDC principal: {p:?}"),
    }
    let bob = rt
        .block_on(v.verify(&idp.id_token(CLI_CLIENT, BOB)))
        .unwrap();
    assert!(
        matches!(bob, Principal::Oidc { ref groups, .. } if !groups.iter().any(|g| g == "llm-approvers"))
    );

    // Issued to another client: another audience.
    let other = idp.id_token(OTHER_CLIENT, ALICE);
    let e = rt.block_on(v.verify(&other)).unwrap_err();
    assert!(matches!(e, OidcError::WrongAudience { .. }), "{e:?}");
    assert!(e.to_string().contains("audience"), "{e}");

    // Issued by another provider.
    let idp2 = OidcProvider::start_with(
        200,
        Options {
            host: 2,
            ..Default::default()
        },
    );
    let foreign = idp2.id_token(CLI_CLIENT, ALICE);
    let e = rt.block_on(v.verify(&foreign)).unwrap_err();
    assert!(matches!(e, OidcError::WrongIssuer { .. }), "{e:?}");
    assert!(e.to_string().contains(&idp2.issuer), "{e}");

    // Tampered: the groups changed after signing.
    let bob_token = idp.id_token(CLI_CLIENT, BOB);
    let parts: Vec<&str> = bob_token.split('.').collect();
    let mut claims: serde_json::Value =
        serde_json::from_slice(&B64.decode(parts[1]).unwrap()).unwrap();
    claims["groups"] = serde_json::json!(["llm-approvers"]);
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        B64.encode(claims.to_string()),
        parts[2]
    );
    assert_eq!(
        rt.block_on(v.verify(&tampered)).unwrap_err(),
        OidcError::BadSignature
    );

    // alg none, with the same claims and no signature.
    let none = format!(
        "{}.{}.",
        B64.encode(r#"{"alg":"none","typ":"JWT"}"#),
        B64.encode(claims.to_string())
    );
    let e = rt.block_on(v.verify(&none)).unwrap_err();
    assert!(
        matches!(e, OidcError::DisallowedAlg(ref a) if a == "none"),
        "{e:?}"
    );
}

#[test]
fn an_expired_token_is_refused_as_expired() {
    let idp = OidcProvider::start_with(
        201,
        Options {
            id_token_ttl: 2,
            ..Default::default()
        },
    );
    let mut v_cfg = OidcConfig {
        issuer: idp.issuer.clone(),
        client_id: CLI_CLIENT.into(),
        ca_file: Some(idp.ca_pem.clone()),
        ..Default::default()
    };
    v_cfg.leeway = Duration::from_secs(0);
    let v = Verifier::new(&v_cfg, None).unwrap();
    let rt = rt();
    let t = idp.id_token(CLI_CLIENT, ALICE);
    assert!(rt.block_on(v.verify(&t)).is_ok());
    std::thread::sleep(Duration::from_secs(4));
    let e = rt.block_on(v.verify(&t)).unwrap_err();
    assert!(matches!(e, OidcError::Expired { .. }), "{e:?}");
    assert!(e.to_string().contains("gateway login"), "{e}");
}

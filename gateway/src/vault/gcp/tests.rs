use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use super::*;

/// A fresh RSA key (PKCS#8 PEM) and its public key (PKCS#1 DER), made by openssl, not by the
/// code under test.
fn test_key() -> (String, Vec<u8>) {
    let d = tempfile::tempdir().unwrap();
    let key = d.path().join("key.pem");
    let public = d.path().join("pub.der");
    let ok = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&key)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl runs")
        .success();
    assert!(ok, "openssl genpkey");
    let ok = std::process::Command::new("openssl")
        .args(["rsa", "-RSAPublicKey_out", "-outform", "DER", "-in"])
        .arg(&key)
        .arg("-out")
        .arg(&public)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl runs")
        .success();
    assert!(ok, "openssl rsa -RSAPublicKey_out");
    (
        std::fs::read_to_string(&key).unwrap(),
        std::fs::read(&public).unwrap(),
    )
}

fn sa_json(pem: &str, token_uri: &str) -> String {
    serde_json::to_string_pretty(&json!({
        "type": "service_account",
        "project_id": "proj-test",
        "private_key_id": "kid-0123456789abcdef",
        "private_key": pem,
        "client_email": "gateway-test@proj-test.iam.gserviceaccount.com",
        "client_id": "1234567890",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
    }))
    .unwrap()
}

fn unb64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .expect("base64url without padding")
}

#[test]
fn the_assertion_is_an_rs256_jwt_signed_by_the_key_with_googles_claims() {
    let (pem, public) = test_key();
    let uri = "https://127.185.0.4/token";
    let sa = ServiceAccount::parse(&sa_json(&pem, uri)).unwrap();
    let iat = 1_800_000_000;
    let jwt = sa.assertion(iat).unwrap();
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3, "header.claims.signature");
    let header: Value = serde_json::from_slice(&unb64(parts[0])).unwrap();
    assert_eq!(
        header,
        json!({"alg": "RS256", "typ": "JWT", "kid": "kid-0123456789abcdef"})
    );
    let claims: Value = serde_json::from_slice(&unb64(parts[1])).unwrap();
    assert_eq!(
        claims,
        json!({
            "iss": "gateway-test@proj-test.iam.gserviceaccount.com",
            "scope": "https://www.googleapis.com/auth/cloud-platform",
            "aud": uri,
            "iat": iat,
            "exp": iat + 3600,
        })
    );
    // The signature verifies with the public key openssl derived, over header.claims.
    let signed = format!("{}.{}", parts[0], parts[1]);
    let key = ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        &public,
    );
    key.verify(signed.as_bytes(), &unb64(parts[2]))
        .expect("signature verifies");
    // And not over anything else, nor with another key.
    assert!(
        key.verify(format!("{signed}x").as_bytes(), &unb64(parts[2]))
            .is_err()
    );
    let (_, other) = test_key();
    assert!(
        ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            &other
        )
        .verify(signed.as_bytes(), &unb64(parts[2]))
        .is_err()
    );
    // The multi-line key file is stored as one line that parses back to the same account.
    let stored = normalise(&sa_json(&pem, uri)).unwrap();
    assert!(!stored.contains('\n'));
    assert_eq!(
        ServiceAccount::parse(&stored).unwrap().client_email,
        sa.client_email
    );
    assert!(!format!("{sa:?}").contains("PRIVATE"), "{sa:?}");
}

#[test]
fn malformed_keys_are_refused_with_the_reason_and_never_a_value() {
    const MARK: &str = "SECRETMARKER4242";
    let (pem, _) = test_key();
    let good: Value = serde_json::from_str(&sa_json(&pem, "https://oauth2.example/token")).unwrap();
    let with = |k: &str, v: Value| {
        let mut x = good.clone();
        x[k] = v;
        x.to_string()
    };
    let without = |k: &str| {
        let mut x = good.clone();
        x.as_object_mut().unwrap().remove(k);
        x.to_string()
    };
    let broken_pem = format!("-----BEGIN PRIVATE KEY-----\n{MARK}\n-----END PRIVATE KEY-----\n");
    // An EC key in PKCS#8: a PEM private key, but not RSA.
    let ec = rcgen::KeyPair::generate().unwrap().serialize_pem();
    let cases: Vec<(String, &str)> = vec![
        (format!("{{\"private_key\": \"{MARK}"), "not JSON"),
        (format!("[\"{MARK}\"]"), "not a JSON object"),
        (
            json!({"type": "authorized_user", "refresh_token": MARK, "client_secret": MARK})
                .to_string(),
            "not \"service_account\"",
        ),
        (without("type"), "no `type`"),
        (with("type", json!(42)), "`type` is not a string"),
        (
            with("private_key", json!(broken_pem)),
            "not a usable RSA key (InvalidEncoding)",
        ),
        (with("private_key", json!(MARK)), "not a PEM private key"),
        (with("private_key", json!(ec)), "not a usable RSA key"),
        (without("private_key"), "no `private_key`"),
        (
            with("client_email", json!(MARK)),
            "`client_email` is missing or not an address",
        ),
        (without("client_email"), "`client_email` is missing"),
        (
            with("token_uri", json!("http://oauth2.example/token")),
            "not an https URL",
        ),
        (with("token_uri", json!("not a url")), "not a URL"),
    ];
    for (text, want) in cases {
        let e = ServiceAccount::parse(&text).unwrap_err().to_string();
        assert!(e.contains(want), "{want:?} not in {e:?}");
        assert!(
            !e.contains(MARK) && !e.contains("MII"),
            "a value leaked: {e}"
        );
        // The vault refuses it the same way at `keys set`.
        let e = normalise(&text).unwrap_err().to_string();
        assert!(e.contains(want), "{e}");
    }
    // Without `token_uri`, Google's is the audience.
    let sa = ServiceAccount::parse(&without("token_uri")).unwrap();
    assert_eq!(sa.token_uri, DEFAULT_TOKEN_URI);
}

#[test]
fn token_endpoint_answers_are_read_as_rfc_6749_says() {
    let ok = br#"{"access_token":"ya29.minted-1","expires_in":3599,"token_type":"Bearer"}"#;
    let (t, exp) = parse_answer(200, ok).unwrap();
    assert_eq!((t.expose(), exp), ("ya29.minted-1", 3599));
    let (_, exp) = parse_answer(200, br#"{"access_token":"ya29.x"}"#).unwrap();
    assert_eq!(exp, 3600, "the default lifetime");
    let e = parse_answer(
        400,
        br#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#,
    )
    .unwrap_err();
    assert_eq!(
        e,
        "refused the grant: 400 invalid_grant: Invalid JWT Signature."
    );
    assert_eq!(
        parse_answer(503, b"<html>").unwrap_err(),
        "refused the grant: 503"
    );
    for (body, want) in [
        (
            &br#"{"expires_in":3600}"#[..],
            "without a usable `access_token`",
        ),
        (br#"{"access_token":"ya29 space"}"#, "without a usable"),
        (
            br#"{"access_token":"ya29.secret-tok","token_type":"MAC"}"#,
            "not Bearer",
        ),
        (
            br#"{"access_token":"ya29.secret-tok","expires_in":-5}"#,
            "not a positive",
        ),
        (b"ya29.secret-tok", "not JSON"),
    ] {
        let e = parse_answer(200, body).unwrap_err();
        assert!(e.contains(want) && !e.contains("secret-tok"), "{e}");
    }
}

#[test]
fn tokens_are_replaced_five_minutes_before_they_expire() {
    let now = Instant::now();
    assert_eq!(refresh_at(now, 3600), now + Duration::from_secs(3300));
    assert_eq!(refresh_at(now, 601), now + Duration::from_secs(301));
    assert_eq!(refresh_at(now, 300), now + Duration::from_secs(150));
}

type Mints = Arc<AtomicUsize>;
type MintFuture = std::pin::Pin<Box<dyn Future<Output = Result<(Secret, u64), GcpError>> + Send>>;

/// A mint that counts itself, takes a while, and grants `ya29.minted-<n>` for `life` seconds.
fn counting(mints: &Mints, life: u64, fail: bool) -> impl FnOnce() -> MintFuture {
    let mints = mints.clone();
    move || {
        Box::pin(async move {
            let n = mints.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
            if fail {
                Err(GcpError::Mint {
                    uri: "https://t.example/token".into(),
                    reason: format!("refused the grant: 400 attempt {n}"),
                })
            } else {
                Ok((Secret::new(format!("ya29.minted-{n}")), life))
            }
        })
    }
}

#[tokio::test]
async fn concurrent_requests_share_one_mint_and_the_token_is_cached_until_due() {
    let slot = Arc::new(Slot {
        digest: [0; 32],
        account: Err(GcpError::NoClient),
        state: Default::default(),
    });
    let mints: Mints = Default::default();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (slot, mints) = (slot.clone(), mints.clone());
            tokio::spawn(async move { slot.get(counting(&mints, 3600, false)).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().expose(), "ya29.minted-1");
    }
    assert_eq!(mints.load(Ordering::SeqCst), 1, "one mint for all of them");
    let again = slot.get(counting(&mints, 3600, false)).await.unwrap();
    assert_eq!(again.expose(), "ya29.minted-1", "cached");
    assert_eq!(mints.load(Ordering::SeqCst), 1);
    // Due (its refresh time passed): the next request mints a new one.
    slot.state.lock().await.token.as_mut().unwrap().refresh_at = Instant::now();
    let next = slot.get(counting(&mints, 3600, false)).await.unwrap();
    assert_eq!(next.expose(), "ya29.minted-2");
    assert_eq!(slot.state.lock().await.mints, 2);
}

#[tokio::test]
async fn a_failed_mint_is_shared_by_its_waiters_and_retried_after() {
    let slot = Arc::new(Slot {
        digest: [0; 32],
        account: Err(GcpError::NoClient),
        state: Default::default(),
    });
    let mints: Mints = Default::default();
    let tasks: Vec<_> = (0..5)
        .map(|_| {
            let (slot, mints) = (slot.clone(), mints.clone());
            tokio::spawn(async move { slot.get(counting(&mints, 3600, true)).await })
        })
        .collect();
    for t in tasks {
        let e = t.await.unwrap().unwrap_err().to_string();
        assert!(e.contains("attempt 1"), "{e}");
    }
    assert_eq!(
        mints.load(Ordering::SeqCst),
        1,
        "the waiters shared the failure"
    );
    // A later request tries again, and its success is cached.
    let t = slot.get(counting(&mints, 3600, false)).await.unwrap();
    assert_eq!(t.expose(), "ya29.minted-2");
    // A refresh that fails while the token still lives: the current token serves.
    slot.state.lock().await.token.as_mut().unwrap().refresh_at = Instant::now();
    let t = slot.get(counting(&mints, 3600, true)).await.unwrap();
    assert_eq!(t.expose(), "ya29.minted-2");
    assert_eq!(mints.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn an_entry_whose_content_changes_starts_a_new_cache_and_a_bad_one_fails_without_minting() {
    let tls = Arc::new(
        ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
    );
    let m = Minter::new(tls, 0, Duration::from_secs(1));
    let (pem, _) = test_key();
    let a = m.slot("vertex", &sa_json(&pem, "https://127.185.0.9/token"));
    let same = m.slot("vertex", &sa_json(&pem, "https://127.185.0.9/token"));
    assert!(Arc::ptr_eq(&a, &same));
    let b = m.slot("vertex", &sa_json(&pem, "https://127.185.0.10/token"));
    assert!(!Arc::ptr_eq(&a, &b), "a new key, a new cache");
    let e = m
        .token("vertex", &Secret::new("{\"type\": \"service_account\"}"))
        .await
        .unwrap_err();
    assert!(matches!(e, GcpError::BadKey(_)), "{e}");
}

#[test]
fn keys_set_stores_the_multi_line_key_file_as_one_line_and_refuses_a_broken_one() {
    use crate::vault::{Vault, VaultConfig, VaultError};
    let d = tempfile::tempdir().unwrap();
    let v = Vault::new(&VaultConfig::default(), d.path()).unwrap();
    let (pem, _) = test_key();
    let file = sa_json(&pem, "https://127.185.0.4/token");
    assert!(
        file.lines().count() > 5,
        "pretty-printed, as Google issues it"
    );
    v.set("vertex", &Secret::new(file.as_str())).unwrap();
    let stored = v.get_local("vertex").unwrap().unwrap().key;
    assert!(!stored.expose().contains('\n'));
    let sa = ServiceAccount::parse(stored.expose()).unwrap();
    assert_eq!(
        sa.client_email,
        "gateway-test@proj-test.iam.gserviceaccount.com"
    );
    // Plain keys keep their rules; a JSON object that is no service-account key is refused.
    v.set("openai", &Secret::new("sk-plain")).unwrap();
    let bad = file.replace("service_account", "authorized_user");
    let e = v.set("vertex", &Secret::new(bad.as_str())).unwrap_err();
    assert!(matches!(e, VaultError::Gcp(GcpError::BadKey(_))), "{e}");
    assert!(!e.to_string().contains("PRIVATE KEY"), "{e}");
    // The stored entry is unchanged by the refused one.
    assert_eq!(
        v.get_local("vertex").unwrap().unwrap().key.expose(),
        stored.expose()
    );
}

#[test]
fn a_key_file_in_the_table_form_bills_a_project_and_survives_keys_set() {
    use std::os::unix::fs::PermissionsExt as _;

    use crate::vault::{Vault, VaultConfig};
    let d = tempfile::tempdir().unwrap();
    let v = Vault::new(&VaultConfig::default(), d.path()).unwrap();
    let (pem, _) = test_key();
    let one_line = normalise(&sa_json(&pem, "https://127.185.0.4/token")).unwrap();
    let text = format!(
        "[keys.vertex]\nvalue = {}\nproject = \"billing-proj\"\n",
        toml::Value::String(one_line.to_string())
    );
    std::fs::write(v.file(), text).unwrap();
    std::fs::set_permissions(v.file(), std::fs::Permissions::from_mode(0o600)).unwrap();
    v.check().unwrap();
    let e = v.get_local("vertex").unwrap().unwrap();
    assert_eq!(e.project.as_deref(), Some("billing-proj"));
    ServiceAccount::parse(e.key.expose()).unwrap();
    // A new key file keeps the billing field, and the file still loads.
    v.set(
        "vertex",
        &Secret::new(sa_json(&pem, "https://127.185.0.5/token")),
    )
    .unwrap();
    v.check().unwrap();
    let e = v.get_local("vertex").unwrap().unwrap();
    assert_eq!(e.project.as_deref(), Some("billing-proj"));
    assert_eq!(
        ServiceAccount::parse(e.key.expose()).unwrap().token_uri,
        "https://127.185.0.5/token"
    );
}

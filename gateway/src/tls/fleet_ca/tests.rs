use std::{
    os::unix::fs::PermissionsExt as _,
    sync::{
        Arc, Mutex,
        atomic::{AtomicI64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::CertificateDer;
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use zeroize::Zeroizing;

use super::{
    renew::{self, Clock, Issue},
    sign, *,
};
use crate::tls::{
    TlsError,
    issuing::{Issuing, IssuingHandle},
};

/// An organisation root (self-signed, CA, `path_len` as given) and its PKCS#8 key PEM.
fn org_root(path_len: Option<u8>) -> (CertificateDer<'static>, String) {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name
        .push(DnType::CommonName, "Example Org Root");
    p.is_ca = IsCa::Ca(match path_len {
        Some(n) => BasicConstraints::Constrained(n),
        None => BasicConstraints::Unconstrained,
    });
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::days(1);
    p.not_after = now + time::Duration::days(365);
    let cert = p.self_signed(&key).unwrap();
    (cert.der().clone(), key.serialize_pem())
}

fn req(ttl: Duration) -> Request {
    Request {
        node: "node-a".into(),
        ttl,
        permitted_dns: Vec::new(),
    }
}

fn issue(root: &CertificateDer<'static>, key: &str, ttl: Duration) -> Issuing {
    sign::sign_locally(
        std::slice::from_ref(root),
        Zeroizing::new(key.to_string()),
        &req(ttl),
        OffsetDateTime::now_utc(),
    )
    .unwrap()
}

#[test]
fn a_node_intermediate_chains_to_the_root_with_path_length_zero() {
    let (root, key) = org_root(None);
    let i = issue(&root, &key, Duration::from_secs(24 * 3600));
    assert_eq!(
        i.chain.len(),
        1,
        "the intermediate only: the root is the anchor"
    );
    let (_, x) = x509_parser::parse_x509_certificate(&i.chain[0]).unwrap();
    let (_, r) = x509_parser::parse_x509_certificate(&root).unwrap();
    assert_eq!(x.issuer(), r.subject());
    assert!(
        x.subject().to_string().contains("node-a"),
        "{}",
        x.subject()
    );
    let bc = x.basic_constraints().unwrap().unwrap();
    assert!(bc.critical && bc.value.ca);
    assert_eq!(bc.value.path_len_constraint, Some(0));
    let ku = x.key_usage().unwrap().unwrap();
    assert!(ku.value.key_cert_sign() && ku.value.crl_sign());
    // AKI = the root's SKI; its own key is not the root's.
    let ski = |c: &x509_parser::certificate::X509Certificate<'_>| {
        c.extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(k) => {
                    Some(k.0.to_vec())
                }
                _ => None,
            })
            .unwrap()
    };
    let aki = x
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(a) => {
                a.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => None,
        })
        .unwrap();
    assert_eq!(aki, ski(&r));
    assert_ne!(x.public_key().raw, r.public_key().raw);
    // 24 h of life after a five-minute backdate.
    let life = i.not_after.unwrap() - i.not_before.unwrap();
    assert_eq!(life.whole_minutes(), 24 * 60 + 5, "{life}");
    // Two issuances: two keys, two serials.
    let j = issue(&root, &key, Duration::from_secs(3600));
    assert_ne!(i.serial, j.serial);
    assert_ne!(i.chain[0], j.chain[0]);
}

#[test]
fn name_constraints_are_written_when_asked() {
    let (root, key) = org_root(None);
    let mut r = req(Duration::from_secs(3600));
    r.permitted_dns = vec!["openai.com".into()];
    let i = sign::sign_locally(
        std::slice::from_ref(&root),
        Zeroizing::new(key),
        &r,
        OffsetDateTime::now_utc(),
    )
    .unwrap();
    let (_, x) = x509_parser::parse_x509_certificate(&i.chain[0]).unwrap();
    let nc = x.name_constraints().unwrap().unwrap();
    assert!(nc.critical);
    let permitted = format!("{:?}", nc.value.permitted_subtrees);
    assert!(permitted.contains("openai.com"), "{permitted}");
}

#[test]
fn a_root_that_cannot_sign_an_intermediate_is_refused_clearly() {
    let now = OffsetDateTime::now_utc();
    let r = req(Duration::from_secs(3600));
    // pathLenConstraint 0: a CA below it would be rejected by every client.
    let (root0, key0) = org_root(Some(0));
    let e = sign::sign_locally(&[root0], Zeroizing::new(key0), &r, now)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("pathLenConstraint 0"), "{e}");
    // A key of another certificate.
    let (root, _) = org_root(None);
    let (_, other_key) = org_root(None);
    let e = sign::sign_locally(
        std::slice::from_ref(&root),
        Zeroizing::new(other_key),
        &r,
        now,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("does not belong"), "{e}");
    // A SEC1 key is named with the way to convert it.
    let e = sign::sign_locally(
        std::slice::from_ref(&root),
        Zeroizing::new(
            "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n".into(),
        ),
        &r,
        now,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("PKCS#8") && e.contains("openssl pkcs8"), "{e}");
    // Not a CA at all.
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["x.example".to_string()])
        .unwrap()
        .self_signed(&leaf_key)
        .unwrap();
    let e = sign::sign_locally(
        &[leaf.der().clone()],
        Zeroizing::new(leaf_key.serialize_pem()),
        &r,
        now,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("not a CA"), "{e}");
}

#[test]
fn a_root_key_others_can_read_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let (root, key) = org_root(None);
    let cert = d.path().join("root.pem");
    let key_path = d.path().join("root-key.pem");
    std::fs::write(&cert, sign::to_pem(&root)).unwrap();
    std::fs::write(&key_path, &key).unwrap();
    let src = RootSource::File {
        cert: cert.clone(),
        key: key_path.clone(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for (mode, ok) in [
        (0o644, false),
        (0o640, false),
        (0o604, false),
        (0o600, true),
        (0o400, true),
    ] {
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(mode)).unwrap();
        let r = rt.block_on(src.issue(&req(Duration::from_secs(3600))));
        match (r, ok) {
            (Ok(i), true) => assert_eq!(i.chain.len(), 1),
            (Err(e), false) => {
                let e = e.to_string();
                assert!(
                    e.contains(&format!("{mode:o}")) && e.contains("chmod 600"),
                    "{mode:o}: {e}"
                );
                assert!(!e.contains("PRIVATE"), "{e}");
            }
            (r, _) => panic!("mode {mode:o}: {:?}", r.map(|i| i.serial)),
        }
    }
    // The anchor is the root itself.
    let anchor = rt.block_on(src.anchor()).unwrap();
    assert_eq!(sign::pem_certs(&anchor, "a").unwrap(), vec![root]);
}

#[test]
fn renewal_is_due_at_two_thirds_and_retries_stay_bounded() {
    let t0 = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
    let end = t0 + time::Duration::hours(24);
    assert_eq!(renew::renew_at(t0, end), t0 + time::Duration::hours(16));
    assert_eq!(
        renew::retry_after(t0 + time::Duration::hours(16), end),
        Duration::from_secs(60)
    );
    assert_eq!(
        renew::retry_after(end - time::Duration::seconds(5), end),
        Duration::from_secs(1)
    );
    assert_eq!(renew::retry_after(end, end), Duration::from_secs(5));
}

/// A clock whose sleeps advance it at once.
#[derive(Clone)]
struct FakeClock(Arc<AtomicI64>);

impl Clock for FakeClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(self.0.load(Ordering::SeqCst)).unwrap()
    }
    fn sleep(&self, d: Duration) -> impl std::future::Future<Output = ()> + Send {
        self.0
            .fetch_add(d.as_secs().max(1) as i64, Ordering::SeqCst);
        tokio::task::yield_now()
    }
}

/// Issues intermediates valid `life` from the fake clock's now; fails while `fail` is set;
/// records when each call happened; stops (pends) after `max` calls.
struct FakeRoot {
    clock: FakeClock,
    root: CertificateDer<'static>,
    key: String,
    calls: Mutex<Vec<i64>>,
    fail: Arc<AtomicUsize>,
    max: usize,
}

impl Issue for FakeRoot {
    fn issue(&self) -> impl std::future::Future<Output = Result<Issuing, FleetCaError>> + Send {
        let now = self.clock.now();
        let n = {
            let mut c = self.calls.lock().unwrap();
            c.push(now.unix_timestamp());
            c.len()
        };
        let r = if self.fail.load(Ordering::SeqCst) > 0 {
            self.fail.fetch_sub(1, Ordering::SeqCst);
            Err(FleetCaError::Vault("unreachable".into()))
        } else {
            let mut i = issue(&self.root, &self.key, Duration::from_secs(3600));
            i.not_after = Some(now + time::Duration::seconds(3000));
            Ok(i)
        };
        let stop = n > self.max;
        async move {
            if stop {
                std::future::pending::<()>().await;
            }
            r
        }
    }
}

#[tokio::test]
async fn the_loop_renews_at_two_thirds_and_keeps_the_current_one_when_renewal_fails() {
    let (root, key) = org_root(None);
    let t0 = 1_800_000_000i64;
    let clock = FakeClock(Arc::new(AtomicI64::new(t0)));
    let mut first = issue(&root, &key, Duration::from_secs(3600));
    first.not_after = Some(clock.now() + time::Duration::seconds(3000));
    let first_serial = first.serial.clone();
    let handle = IssuingHandle::new(first);
    let fail = Arc::new(AtomicUsize::new(3));
    let src = FakeRoot {
        clock: clock.clone(),
        root,
        key,
        calls: Mutex::new(Vec::new()),
        fail: fail.clone(),
        max: 5,
    };
    let src = Arc::new(src);
    struct Shared(Arc<FakeRoot>);
    impl Issue for Shared {
        fn issue(&self) -> impl std::future::Future<Output = Result<Issuing, FleetCaError>> + Send {
            self.0.issue()
        }
    }
    let renewed = Arc::new(AtomicUsize::new(0));
    let r2 = renewed.clone();
    let task = tokio::spawn(renew::run(
        handle.clone(),
        Shared(src.clone()),
        clock.clone(),
        clock.now(),
        move |_| {
            r2.fetch_add(1, Ordering::SeqCst);
        },
    ));
    for _ in 0..200 {
        tokio::task::yield_now().await;
    }
    let calls = src.calls.lock().unwrap().clone();
    task.abort();
    // First try at 2/3 of 3000 s; three failures retried (300 s, 60 s... bounded), each while
    // the first intermediate kept serving; then a success; the next renewal at 2/3 again.
    assert_eq!(calls[0] - t0, 2000, "{calls:?}");
    assert!(calls.len() >= 5, "{calls:?}");
    let retry_gaps: Vec<i64> = calls.windows(2).take(3).map(|w| w[1] - w[0]).collect();
    assert!(
        retry_gaps.iter().all(|g| (1..=60).contains(g)),
        "{retry_gaps:?}"
    );
    assert_eq!(calls[4] - calls[3], 2000, "{calls:?}");
    assert_eq!(renewed.load(Ordering::SeqCst), 2);
    let cur = handle.current();
    assert_eq!(cur.generation, 2);
    assert_ne!(cur.serial, first_serial);
}

/// A client that trusts only `root` completes a handshake with the leaf cache (the chain is
/// served), and sees the intermediate whose serial is `serial`.
async fn handshake(
    leaves: &crate::tls::leaf::LeafCache,
    root: &CertificateDer<'static>,
) -> Result<String, TlsError> {
    let cfg = leaves.server_config("api.openai.com").await?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let ccfg = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let (c, s) = tokio::io::duplex(1 << 16);
    let server = tokio::spawn(async move {
        let mut tls = tokio_rustls::TlsAcceptor::from(cfg)
            .accept(s)
            .await
            .unwrap();
        let mut b = [0u8; 2];
        tls.read_exact(&mut b).await.unwrap();
        tls.write_all(&b).await.unwrap();
        tls.flush().await.unwrap();
    });
    let name = rustls::pki_types::ServerName::try_from("api.openai.com").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(ccfg))
        .connect(name, c)
        .await
        .expect("the chain verifies against the root alone");
    tls.write_all(b"hi").await.unwrap();
    let mut b = [0u8; 2];
    tls.read_exact(&mut b).await.unwrap();
    server.await.unwrap();
    let certs = tls.get_ref().1.peer_certificates().unwrap().to_vec();
    assert_eq!(certs.len(), 2, "leaf + intermediate");
    let (_, leaf) = x509_parser::parse_x509_certificate(&certs[0]).unwrap();
    let f = sign::facts(&certs[1]).unwrap();
    assert!(leaf.validity().not_after.to_datetime() <= f.not_after);
    Ok(f.serial)
}

#[tokio::test]
async fn leaves_follow_the_current_intermediate_and_none_is_served_after_it_expired() {
    let (root, key) = org_root(None);
    let first = issue(&root, &key, Duration::from_secs(3600));
    let s1 = first.serial.clone();
    let handle = IssuingHandle::new(first);
    let leaves =
        crate::tls::leaf::LeafCache::with_issuer(handle.clone(), crate::tls::provider(), 8)
            .unwrap();
    assert_eq!(handshake(&leaves, &root).await.unwrap(), s1);
    assert_eq!(handshake(&leaves, &root).await.unwrap(), s1);
    assert_eq!(leaves.mints(), 1, "cached");
    // Renewed: the next handshake gets a leaf of the new intermediate.
    let second = issue(&root, &key, Duration::from_secs(3600));
    let s2 = second.serial.clone();
    handle.replace(second);
    assert_eq!(handshake(&leaves, &root).await.unwrap(), s2);
    assert_eq!(leaves.mints(), 2);
    // Expired and not renewed: refused, cached leaf or not.
    let mut dead = issue(&root, &key, Duration::from_secs(3600));
    dead.not_after = Some(OffsetDateTime::now_utc() - time::Duration::seconds(1));
    handle.replace(dead);
    let e = leaves.server_config("api.openai.com").await.err().unwrap();
    assert!(matches!(e, TlsError::IntermediateExpired { .. }), "{e}");
    assert!(e.to_string().contains("refuses new connections"), "{e}");
}

#[test]
fn config_names_the_key_and_the_reason() {
    let parse = |extra: &str| {
        crate::config::Config::parse(&format!("state_dir = \"/tmp/x\"\n{extra}"), "t")
            .err()
            .map(|e| e.to_string())
    };
    assert_eq!(parse("[ca]\nroot = \"local\"\n"), None);
    let e = parse("[ca]\nroot = \"file\"\n[ca.file]\ncert = \"/etc/r.pem\"\n").unwrap();
    assert!(e.contains("ca.file.key") && e.contains("required"), "{e}");
    let e = parse("[ca]\nroot = \"file\"\nintermediate_ttl = \"1s\"\n[ca.file]\ncert = \"/a\"\nkey = \"/b\"\n").unwrap();
    assert!(e.contains("ca.intermediate_ttl"), "{e}");
    let e =
        parse("[ca]\nroot = \"kubernetes\"\n[ca.kubernetes]\nsecret = \"just-a-name\"\n").unwrap();
    assert!(
        e.contains("ca.kubernetes.secret") && e.contains("NAMESPACE/NAME"),
        "{e}"
    );
    let e = parse("[ca]\nroot = \"vault-pki\"\n").unwrap();
    assert!(e.contains("vault.hashicorp"), "{e}");
    let e = parse("[ca]\nroot = \"vault\"\n").unwrap();
    assert!(e.contains("vault-pki"), "{e}");
    assert_eq!(
        parse(
            "[ca]\nroot = \"kubernetes\"\npermitted_dns = [\"openai.com\"]\n[ca.kubernetes]\nsecret = \"gateway-system/org-ca\"\n"
        ),
        None
    );
}

#[test]
fn provider_hosts_outside_the_name_constraints_are_named() {
    let cfg = crate::config::Config::parse(
        "state_dir = \"/tmp/x\"\n[ca]\nroot = \"kubernetes\"\npermitted_dns = [\"openai.com\"]\n\
         [ca.kubernetes]\nsecret = \"gateway-system/org-ca\"\n",
        "t",
    )
    .unwrap();
    let out = renew::uncovered_hosts(&cfg);
    assert!(out.iter().any(|h| h == "api.anthropic.com"), "{out:?}");
    assert!(!out.iter().any(|h| h.ends_with("openai.com")), "{out:?}");
    let none = crate::config::Config::parse(
        "state_dir = \"/tmp/x\"\n[ca]\nroot = \"kubernetes\"\n[ca.kubernetes]\nsecret = \"a/b\"\n",
        "t",
    )
    .unwrap();
    assert!(renew::uncovered_hosts(&none).is_empty());
}

use std::sync::Arc;

use super::*;

fn rep(s: &str, n: usize) -> String {
    s.chars().cycle().take(n).collect()
}

/// A random-looking alphanumeric string of `n` characters (deterministic).
fn rnd(n: usize, seed: u64) -> String {
    const A: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            A[((x >> 33) % A.len() as u64) as usize] as char
        })
        .collect()
}

fn hex(n: usize, seed: u64) -> String {
    rnd(n * 3, seed)
        .bytes()
        .map(|b| b"0123456789abcdef"[(b % 16) as usize] as char)
        .take(n)
        .collect()
}

/// (detector, true positive, the secret part that must disappear, look-alike that must not hit)
pub(crate) fn vectors() -> Vec<(&'static str, String, String, String)> {
    let v = |d: &'static str, tp: String, fp: String| (d, tp.clone(), tp, fp);
    let g = |d: &'static str, tp: String, secret: String, fp: String| (d, tp, secret, fp);
    let b64 = rnd(86, 7).replace('k', "+").replace('m', "/");
    vec![
        v("aws-access-key-id", "AKIAIOSFODNN7EXAMPLE".into(), "AKIA1OSFODNN7EXAMPLE".into()),
        g(
            "aws-secret-access-key",
            "aws_secret_access_key = \"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\"".into(),
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYz9q3LmN0pQ".into(),
            format!("aws_secret_access_key = \"{}\"", rep("x", 40)),
        ),
        v("google-api-key", format!("AIzaSy{}", rnd(33, 1)), format!("AIzaSy{}", rnd(20, 1))),
        g(
            "gcp-service-account-key",
            format!("\"private_key_id\": \"{}\"", hex(40, 2)),
            hex(40, 2),
            format!("\"private_key_id\": \"{}\"", hex(39, 2)),
        ),
        g(
            "azure-storage-key",
            format!("DefaultEndpointsProtocol=https;AccountKey={b64}==;EndpointSuffix=x"),
            format!("{b64}=="),
            format!("AccountKey={}==", &b64[..60]),
        ),
        v("azure-client-secret", format!("abc8Q~{}", rnd(34, 3)), format!("abc8Q-{}", rnd(34, 3))),
        v("digitalocean-token", format!("dop_v1_{}", hex(64, 4)), format!("dop_v1_{}", hex(65, 4))),
        v("github-classic-token", format!("ghp_{}", rnd(36, 5)), format!("ghp_{}", rnd(35, 5))),
        v(
            "github-fine-grained-token",
            format!("github_pat_{}_{}", rnd(22, 6), rnd(59, 7)),
            format!("github_pat_{}_{}", rnd(21, 6), rnd(59, 7)),
        ),
        v("github-oauth-token", format!("gho_{}", rnd(36, 8)), format!("gho_{}", rnd(30, 8))),
        v("github-app-token", format!("ghs_{}", rnd(36, 9)), format!("ghx_{}", rnd(36, 9))),
        v("github-refresh-token", format!("ghr_{}", rnd(76, 10)), format!("ghr_{}", rnd(20, 10))),
        v("gitlab-token", format!("glpat-{}", rnd(20, 11)), format!("glpat-{}", rnd(10, 11))),
        v("gitlab-runner-token", format!("glrt-{}", rnd(20, 12)), format!("glrx-{}", rnd(20, 12))),
        v(
            "slack-token",
            format!("xoxb-123456789012-1234567890123-{}", rnd(24, 13)),
            format!("xoxz-123456789012-1234567890123-{}", rnd(24, 13)),
        ),
        v(
            "slack-webhook",
            format!("https://hooks.slack.com/services/T0A1B2C3D/B0A1B2C3D/{}", rnd(24, 14)),
            "https://hooks.slack.com/services/T0A1/B0A1/abc".into(),
        ),
        v(
            "discord-bot-token",
            format!("M{}.{}.{}", rnd(23, 15), rnd(6, 16), rnd(27, 17)),
            format!("M{}.{}", rnd(23, 15), rnd(27, 17)),
        ),
        v(
            "discord-webhook",
            format!("https://discord.com/api/webhooks/123456789012345678/{}", rnd(68, 18)),
            format!("https://discord.com/api/webhooks/1234/{}", rnd(68, 18)),
        ),
        v("twilio-api-key", format!("SK{}", hex(32, 19)), format!("SK{}", hex(31, 19))),
        v(
            "sendgrid-api-key",
            format!("SG.{}.{}", rnd(22, 20), rnd(43, 21)),
            format!("SG.{}.{}", rnd(22, 20), rnd(10, 21)),
        ),
        v("stripe-key", format!("sk_live_{}", rnd(24, 22)), format!("sk_prod_{}", rnd(24, 22))),
        g(
            "datadog-api-key",
            format!("DD_API_KEY={}", hex(32, 23)),
            hex(32, 23),
            format!("DD_SITE={}", hex(32, 23)),
        ),
        v("npm-token", format!("npm_{}", rnd(36, 24)), format!("npm_{}", rnd(20, 24))),
        v(
            "pypi-token",
            format!("pypi-AgEIcHlwaS5vcmc{}", rnd(60, 25)),
            format!("pypi-AgEIcHlwaS5vcmc{}", rnd(10, 25)),
        ),
        v("shopify-token", format!("shpat_{}", hex(32, 26)), format!("shpat_{}", rep("g", 32))),
        v(
            "telegram-bot-token",
            format!("123456789:AA{}", rnd(33, 27)),
            format!("123456789:AB{}", rnd(33, 27)),
        ),
        v("linear-api-key", format!("lin_api_{}", rnd(40, 28)), format!("lin_api_{}", rnd(12, 28))),
        v("vault-token", format!("hvs.{}", rnd(90, 29)), format!("hvs.{}", rnd(10, 29))),
        v(
            "age-secret-key",
            format!("AGE-SECRET-KEY-1{}", rep("QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L", 58)),
            format!("AGE-SECRET-KEY-1{}", rep("QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7B", 58)),
        ),
        v("openai-api-key", format!("sk-proj-{}", rnd(60, 30)), format!("sk-proj-{}", rnd(10, 30))),
        v(
            "aws-bedrock-api-key",
            format!("ABSKQmVkcm9ja0FQSUtleS1{}=", rnd(100, 41)),
            format!("ABSK{}", rnd(20, 41)),
        ),
        v(
            "aws-bedrock-api-key",
            format!("bedrock-api-key-YmVkcm9jay5hbWF6b25hd3MuY29t{}", rnd(300, 43)),
            format!("bedrock-api-key-{}", rnd(12, 43)),
        ),
        v(
            "anthropic-api-key",
            format!("sk-ant-api03-{}", rnd(95, 31)),
            format!("sk-ant-api03-{}", rnd(20, 31)),
        ),
        v("groq-api-key", format!("gsk_{}", rnd(52, 32)), format!("gsk_{}", rnd(40, 32))),
        v(
            "huggingface-token",
            format!("hf_{}", rep("aBcDeFgHiJ", 34)),
            format!("hf_{}1", rep("aBcDeFgHiJ", 33)),
        ),
        v("xai-api-key", format!("xai-{}", rnd(80, 33)), format!("xai-{}", rnd(40, 33))),
        v("perplexity-api-key", format!("pplx-{}", rnd(48, 34)), format!("pplx-{}", rnd(30, 34))),
        v("replicate-api-token", format!("r8_{}", rnd(37, 35)), format!("r8_{}", rnd(20, 35))),
        v(
            "private-key",
            format!(
                "-----BEGIN RSA PRIVATE KEY-----\nMIIEow{}\n{}\n-----END RSA PRIVATE KEY-----",
                rnd(58, 36),
                rnd(64, 37)
            ),
            format!("-----BEGIN PUBLIC KEY-----\nMIIB{}\n-----END PUBLIC KEY-----", rnd(60, 36)),
        ),
        v(
            "jwt",
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c".into(),
            "eyJhbGciOiJIUzI1NiJ9 is a header only".into(),
        ),
        g(
            "basic-auth-url",
            "postgres://admin:S3cr3tPass@db.internal:5432/app".into(),
            "S3cr3tPass".into(),
            "git@github.com:org/repo.git and https://example.com/a@b".into(),
        ),
        g(
            "generic-secret-assignment",
            "password = \"Tr0ub4dor&3xK9q\"".into(),
            "Tr0ub4dor&3xK9q".into(),
            "password = \"changeme-changeme\"".into(),
        ),
        v("credit-card", "4111 1111 1111 1111".into(), "4111 1111 1111 1112".into()),
        v("iban", "GB82 WEST 1234 5698 7654 32".into(), "GB82 WEST 1234 5698 7654 33".into()),
        v("us-ssn", "123-45-6789".into(), "000-12-3456".into()),
        v(
            "aws-session-token",
            format!("IQoJb3JpZ2luX2VjEJr{}==", rnd(300, 44)),
            format!("IQoJb3JpZ2luX2Vj{}", rnd(20, 44)),
        ),
    ]
}

fn id() -> Identity {
    Identity {
        uid: 1000,
        user: Some("alice".into()),
        ..Default::default()
    }
}

fn default_scanner() -> Arc<Scanner> {
    Arc::new(Scanner::new(&[], &PolicyConfig::default()).expect("built-in rules compile"))
}

fn ctx(id: &Identity) -> Ctx<'_> {
    Ctx {
        dir: Direction::Response,
        id,
    }
}

#[test]
fn every_detector_has_vectors_and_there_are_at_least_40() {
    let v = vectors();
    assert!(detect::DETECTORS.len() >= 40, "{}", detect::DETECTORS.len());
    for d in detect::DETECTORS {
        assert!(v.iter().any(|x| x.0 == d.name), "no vectors for {}", d.name);
    }
}

#[test]
fn true_positives_hit_and_look_alikes_do_not() {
    let s = default_scanner();
    let me = id();
    for (det, tp, secret, fp) in vectors() {
        let text = format!("see: {tp} (end)");
        let (masked, hits) = s.mask(&text, ctx(&me));
        assert!(
            hits.iter().any(|h| h.detector == det),
            "{det}: no hit in {text:?}: {hits:?}"
        );
        assert!(!masked.contains(&secret), "{det}: {masked:?}");
        assert!(
            masked.contains(&format!("[MASKED:{det}]")),
            "{det}: {masked:?}"
        );
        let text = format!("see: {fp} (end)");
        let (_, hits) = s.mask(&text, ctx(&me));
        assert!(
            !hits.iter().any(|h| h.detector == det),
            "{det}: false positive in {text:?}: {hits:?}"
        );
    }
}

#[test]
fn streaming_equals_whole_text_for_every_split_position() {
    let s = default_scanner();
    let me = Arc::new(id());
    for (det, tp, secret, _) in vectors() {
        let text = format!("Here it is: {tp}. And more text after it.");
        let (whole, _) = s.mask(&text, ctx(&me));
        for cut in 0..=text.len() {
            if !text.is_char_boundary(cut) {
                continue;
            }
            let mut m = StreamMasker::new(s.clone(), Direction::Response, me.clone());
            let mut out = m.push(&text[..cut]);
            out += &m.push(&text[cut..]);
            out += &m.finish();
            assert_eq!(out, whole, "{det} split at {cut}");
            assert!(!out.contains(&secret), "{det} split at {cut}");
        }
    }
}

#[test]
fn streaming_equals_whole_text_for_random_splits() {
    let s = default_scanner();
    let me = Arc::new(id());
    let mut x: u64 = 42;
    let mut next = |n: usize| {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        ((x >> 33) as usize) % n
    };
    let all: String = vectors().iter().map(|v| format!("word {} ", v.1)).collect();
    let (whole, _) = s.mask(&all, ctx(&me));
    for _ in 0..200 {
        let parts = 3 + next(8);
        let mut cuts: Vec<usize> = (0..parts - 1).map(|_| next(all.len())).collect();
        cuts.sort();
        let mut m = StreamMasker::new(s.clone(), Direction::Response, me.clone());
        let mut out = String::new();
        let mut prev = 0;
        for c in cuts.into_iter().chain([all.len()]) {
            out += &m.push(&all[prev..c]);
            prev = c;
        }
        out += &m.finish();
        assert_eq!(out, whole);
    }
}

#[test]
fn benign_text_is_released_at_once_and_a_partial_secret_is_held() {
    let s = default_scanner();
    let me = Arc::new(id());
    let mut m = StreamMasker::new(s.clone(), Direction::Response, me);
    assert_eq!(
        m.push("The answer is 42, as you know. "),
        "The answer is 42, as you know. "
    );
    assert_eq!(m.held(), 0);
    let out = m.push("Your token: ghp_abc");
    assert_eq!(out, "Your token: ");
    assert_eq!(m.held(), "ghp_abc".len());
    let out = m.push(&format!("{} done", rnd(33, 5)));
    assert_eq!(out, "[MASKED:github-classic-token] done");
}

#[test]
fn ordinary_code_and_prose_stay_untouched() {
    let s = default_scanner();
    let me = id();
    let corpus = r#"
Deploy the S3 bucket and the EKS cluster with terraform apply; IAM roles are in iam.tf.
commit 3f786850e387550fdab836ed7e6dc881de23001b Author: dev <dev@example.com>
sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
request id 123e4567-e89b-12d3-a456-426614174000, trace 4bf92f3577b34da6a3ce929d0e0e4736
fn parse_key(input: &str) -> Result<Key, Error> { let token = lexer.next_token()?; Ok(token) }
const API_BASE = "https://api.openai.com/v1"; let password_hint = user.passwordHint;
The meeting is on 2024-03-15 at 10:30; call +1 555 0100. Version 1.2.3-beta.4, build 20240315.
SELECT id, name FROM users WHERE created_at > NOW() - INTERVAL '7 days' ORDER BY id LIMIT 100;
docker run -p 8080:80 nginx:1.25 && kubectl get pods -n kube-system -o wide
if err != nil { return fmt.Errorf("open %s: %w", path, err) } // see RFC 7231 section 6.5.1
base64 of hello is aGVsbG8=, the ISBN is 978-3-16-148410-0, order number 4000-1234-5678.
password = os.environ["DB_PASSWORD"]  # read from the environment
api_key: ${OPENAI_API_KEY}
"#;
    let (out, hits) = s.mask(corpus, ctx(&me));
    assert!(hits.is_empty(), "false positives: {hits:?}");
    assert_eq!(out, corpus);
}

fn rule(name: &str, pattern: &str) -> RuleConfig {
    RuleConfig {
        name: name.into(),
        detector: None,
        pattern: Some(pattern.into()),
        on: both(),
        action: Action::Mask,
        replacement: None,
        allow: vec![],
        allow_regex: vec![],
        who: None,
    }
}

#[test]
fn custom_rules_allow_lists_and_identity() {
    let me = id();
    let mut r = rule("customer-id", "CUST-[0-9]{8}");
    r.allow = vec!["CUST-00000000".into()];
    r.allow_regex = vec!["CUST-9[0-9]{7}".into()];
    r.replacement = Some("<<<rule>>>".into());
    let s = Scanner::new(&[r.clone()], &PolicyConfig::default()).unwrap();
    let (out, _) = s.mask("a CUST-12345678 b CUST-00000000 c CUST-91234567", ctx(&me));
    assert_eq!(out, "a <<customer-id>> b CUST-00000000 c CUST-91234567");

    // Only for another user: alice's text passes.
    r.who = Some(Who {
        user: Some("bob".into()),
        ..Default::default()
    });
    let s = Scanner::new(&[r.clone()], &PolicyConfig::default()).unwrap();
    assert!(s.mask("CUST-12345678", ctx(&me)).1.is_empty());
    r.who = Some(Who {
        uid: Some(1000),
        ..Default::default()
    });
    let s = Scanner::new(&[r.clone()], &PolicyConfig::default()).unwrap();
    assert_eq!(s.mask("CUST-12345678", ctx(&me)).1.len(), 1);

    // Direction.
    r.on = vec![Direction::Request];
    let s = Scanner::new(&[r], &PolicyConfig::default()).unwrap();
    assert!(s.mask("CUST-12345678", ctx(&me)).1.is_empty());

    // A global allow-list silences a built-in detector.
    let key = format!("ghp_{}", rnd(36, 5));
    let s = Scanner::new(
        &[],
        &PolicyConfig {
            allow: vec![key.clone()],
            ..Default::default()
        },
    )
    .unwrap();
    assert!(s.mask(&key, ctx(&me)).1.is_empty());
}

#[test]
fn bad_rules_are_refused_by_name() {
    let err = |r: RuleConfig| {
        Scanner::new(&[r], &PolicyConfig::default())
            .err()
            .expect("refused")
            .to_string()
    };
    let e = err(rule("greedy", "secret-[a-z]+"));
    assert!(
        e.contains("rule `greedy`") && e.contains("unbounded"),
        "{e}"
    );
    let e = err(rule("empty", "x?"));
    assert!(e.contains("empty"), "{e}");
    let e = err(rule("broken", "([a-z]{3}"));
    assert!(e.contains("rule `broken`"), "{e}");
    let mut r = rule("det", "x");
    r.pattern = None;
    r.detector = Some("no-such".into());
    let e = err(r);
    assert!(e.contains("no built-in detector `no-such`"), "{e}");
    let mut r = rule("bad allow", "x{2}");
    r.name = "allow".into();
    r.allow_regex = vec!["(".into()];
    assert!(err(r).contains("allow_regex"));
}

#[test]
fn confirmers() {
    assert!(detect::luhn(b"4111 1111 1111 1111"));
    assert!(!detect::luhn(b"4111 1111 1111 1112"));
    assert!(detect::iban(b"DE89 3704 0044 0532 0130 00"));
    assert!(!detect::iban(b"DE89 3704 0044 0532 0130 01"));
    assert!(detect::ssn(b"123-45-6789"));
    assert!(!detect::ssn(b"666-45-6789"));
    assert!(detect::high_entropy(b"Tr0ub4dor&3xK9q"));
    assert!(!detect::high_entropy(b"aaaaaaaaaaaa"));
    assert!(!detect::high_entropy(b"your_password_here"));
}

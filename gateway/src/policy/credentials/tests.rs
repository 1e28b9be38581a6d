use http::HeaderValue;

use super::*;

fn hm(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

fn names(h: &HeaderMap) -> Vec<&str> {
    h.keys().map(|k| k.as_str()).collect()
}

/// A random-looking alphanumeric string of `n` characters (deterministic).
fn rnd(n: usize, seed: u64) -> String {
    const A: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut x = seed.wrapping_mul(6364136223846793005) | 1;
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            A[((x >> 33) % A.len() as u64) as usize] as char
        })
        .collect()
}

fn ghp() -> String {
    format!("ghp_{}", rnd(36, 1))
}

/// One sample per kind of credential a client might leak in a header, cookie or query.
fn samples() -> Vec<(&'static str, String)> {
    vec![
        ("github-classic-token", ghp()),
        ("aws-access-key-id", "AKIAIOSFODNN7EXAMPLE".into()),
        ("google-api-key", format!("AIza{}", rnd(35, 2))),
        ("openai-api-key", format!("sk-proj-{}", rnd(60, 3))),
        ("anthropic-api-key", format!("sk-ant-api03-{}", rnd(90, 4))),
        ("slack-token", format!("xoxb-1234567890-{}", rnd(30, 5))),
        ("stripe-key", format!("sk_live_{}", rnd(30, 6))),
        ("gitlab-token", format!("glpat-{}", rnd(20, 7))),
        ("groq-api-key", format!("gsk_{}", rnd(52, 8))),
        (
            "jwt",
            format!("eyJ{}.eyJ{}.{}", rnd(20, 9), rnd(30, 10), rnd(30, 11)),
        ),
        ("generic-secret-assignment", "password=Xk9#mQ2vL7pZ".into()),
        (
            "basic-auth-url",
            "https://deploy:hunter2hunter@git.example.com".into(),
        ),
    ]
}

#[test]
fn every_credential_detector_but_the_personal_ones_is_a_credential() {
    let personal: Vec<&str> = detect::DETECTORS
        .iter()
        .filter(|d| !d.credential)
        .map(|d| d.name)
        .collect();
    assert_eq!(
        personal,
        vec!["credit-card", "iban", "us-ssn", "us-ssn-named"]
    );
    let d = detectors();
    assert_eq!(
        d.scanner.rules().len(),
        detect::DETECTORS.len() - 4,
        "one rule per credential detector"
    );
    // The shortest credential: `pwd=` and eight characters (generic-secret-assignment).
    assert!((8..=16).contains(&d.min_len), "{}", d.min_len);
    // A card number in a header is not a credential: it stays.
    let mut h = hm(&[("x-card", "4111 1111 1111 1111")]);
    assert_eq!(scrub_trailers(&mut h), 0);
    assert_eq!(names(&h), vec!["x-card"]);
}

#[test]
fn every_credential_header_goes_in_any_count_and_spelling() {
    let mut h = hm(&[
        ("Authorization", "Bearer sk-dummy"),
        ("authorization", "Basic Zm9v"),
        ("X-Api-Key", "dummy"),
        ("x_api_key", "dummy"),
        ("api-key", ""),
        ("api_key", "x"),
        ("x-goog-api-key", "dummy"),
        ("X_Goog_Api_Key", "dummy"),
        ("proxy-authorization", "Basic x"),
        ("Ocp-Apim-Subscription-Key", "x"),
        ("x-goog-iam-authorization-token", "x"),
        ("x-serverless-authorization", "Bearer x"),
        ("content-type", "application/json"),
        ("anthropic-version", "2023-06-01"),
    ]);
    assert_eq!(scrub_trailers(&mut h), 12);
    let mut left = names(&h);
    left.sort();
    assert_eq!(left, vec!["anthropic-version", "content-type"]);
}

#[test]
fn billing_headers_go_in_every_spelling_uncounted() {
    let mut h = hm(&[
        ("OpenAI-Organization", "org-client"),
        ("openai_project", "proj_client"),
        ("x-goog-user-project", "client-project"),
        ("accept", "*/*"),
    ]);
    assert_eq!(scrub_trailers(&mut h), 0, "billing is not a credential");
    assert_eq!(names(&h), vec!["accept"]);
}

#[test]
fn hop_by_hop_and_connection_listed_headers_go() {
    let mut h = hm(&[
        ("connection", "keep-alive, X-Smuggle, x-api-key"),
        ("x-smuggle", "authorization: Bearer x"),
        ("x-api-key", "sk-listed"),
        ("keep-alive", "timeout=5"),
        ("te", "trailers"),
        ("trailer", "authorization"),
        ("upgrade", "h2c"),
        ("proxy-connection", "keep-alive"),
        ("accept", "*/*"),
    ]);
    // The credential header named in `connection` still counts as presented.
    assert_eq!(scrub_trailers(&mut h), 1);
    assert_eq!(names(&h), vec!["accept"]);
}

#[test]
fn a_credential_under_a_harmless_header_name_goes_by_value() {
    for (det, secret) in samples() {
        let pct: String = secret
            .bytes()
            .map(|b| format!("%{b:02X}"))
            .collect::<String>();
        let basic = base64(format!("user:{secret}").as_bytes());
        for value in [
            secret.clone(),
            format!("token {secret} end"),
            pct,
            format!("Basic {basic}"),
        ] {
            let mut h = hm(&[
                ("content-type", "application/json"),
                ("x-debug", &value),
                ("user-agent", "OpenAI/Python 1.54.0"),
            ]);
            assert_eq!(scrub_trailers(&mut h), 1, "{det}: {value}");
            assert_eq!(names(&h), vec!["content-type", "user-agent"], "{det}");
        }
    }
}

/// Standard base64 with padding (the test's own, to check the decoder against).
fn base64(b: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn base64_decodes_both_alphabets_with_or_without_padding() {
    for s in [&b"user:pass"[..], b"a", b"ab", b"abc", b"\xff\xfe\xfd?>"] {
        let e = base64(s);
        assert_eq!(base64_decode(e.as_bytes()).as_deref(), Some(s), "{e}");
        let bare = e.trim_end_matches('=');
        assert_eq!(base64_decode(bare.as_bytes()).as_deref(), Some(s));
        let url = e.replace('+', "-").replace('/', "_");
        assert_eq!(base64_decode(url.as_bytes()).as_deref(), Some(s));
    }
    assert_eq!(base64_decode(b"not base64!"), None);
}

#[test]
fn only_the_cookie_pairs_holding_a_credential_go() {
    let g = ghp();
    let mut h = hm(&[
        ("cookie", &format!("theme=dark; session={g}; lang=en")),
        ("cookie", &format!("{g}=1")),
        ("cookie", "a=1; b=2"),
        ("cookie", &format!("auth={}", g.replace('_', "%5F"))),
    ]);
    assert_eq!(scrub_trailers(&mut h), 3);
    let cookies: Vec<&str> = h
        .get_all("cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(cookies, vec!["theme=dark; lang=en", "a=1; b=2"]);
}

#[test]
fn only_the_subprotocols_holding_a_credential_go() {
    let g = ghp();
    let mut h = hm(&[
        // OpenAI Realtime from a browser: the key, the organization and the project ride as
        // subprotocols, named so whatever their value.
        (
            "sec-websocket-protocol",
            "realtime, openai-insecure-api-key.not-shaped-like-a-key, OpenAI-Organization.org-1, openai-project.p-2, openai-beta.realtime-v1",
        ),
        // Any other subprotocol with a credential in it goes by its value.
        ("sec-websocket-protocol", &format!("chat, token.{g}")),
        ("sec-websocket-protocol", "graphql-ws"),
    ]);
    assert_eq!(scrub_trailers(&mut h), 4);
    let protos: Vec<&str> = h
        .get_all("sec-websocket-protocol")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(
        protos,
        vec!["realtime, openai-beta.realtime-v1", "chat", "graphql-ws"]
    );
}

#[test]
fn typical_sdk_headers_are_left_alone() {
    let mut h = typical_headers();
    let before = h.clone();
    assert_eq!(scrub_trailers(&mut h), 1, "only the authorization header");
    let mut want = before;
    want.remove("authorization");
    assert_eq!(h, want);
}

/// What the OpenAI Python SDK sends with a chat request.
fn typical_headers() -> HeaderMap {
    hm(&[
        ("host", "api.openai.com"),
        ("accept-encoding", "gzip, deflate"),
        ("accept", "application/json"),
        ("content-type", "application/json"),
        ("user-agent", "OpenAI/Python 1.54.4"),
        ("x-stainless-lang", "python"),
        ("x-stainless-package-version", "1.54.4"),
        ("x-stainless-os", "Linux"),
        ("x-stainless-arch", "x64"),
        ("x-stainless-runtime", "CPython"),
        ("x-stainless-runtime-version", "3.12.3"),
        ("authorization", "Bearer sk-dummy"),
        ("x-stainless-async", "false"),
        ("x-stainless-retry-count", "0"),
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
        (
            "idempotency-key",
            "stainless-python-retry-3c1b7e0e-5e47-4a2f-9a3b-0c9d1f2e3a4b",
        ),
        ("content-length", "94"),
    ])
}

fn parts(target: &str, headers: &[(&str, &str)]) -> http::request::Parts {
    let mut b = http::Request::builder().uri(target);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap().into_parts().0
}

const GOOGLE: &[&str] = &["access-token", "oauth-token", "authorization"];

#[test]
fn key_params_go_in_every_spelling_and_others_stay_byte_for_byte_in_order() {
    let cases: &[(&str, &str, usize)] = &[
        (
            "/v1beta/models/m:generateContent?key=AIza-dummy",
            "/v1beta/models/m:generateContent",
            1,
        ),
        ("/p?alt=sse&key=x&b=2", "/p?alt=sse&b=2", 1),
        ("/p?KEY=x&Key=y&kEy=z", "/p", 3),
        ("/p?%6Bey=x&a=1", "/p?a=1", 1),
        ("/p?k%65y=x", "/p", 1),
        (
            "/p?api-key=x&api_key=y&api-version=2024-10-21",
            "/p?api-version=2024-10-21",
            2,
        ),
        ("/p?apikey=x&APIKEY=y&a=1", "/p?a=1", 2),
        ("/p?x-api-key=x&x_api_key=y&X_API-KEY=z&a=1", "/p?a=1", 3),
        ("/p?key", "/p", 1),
        ("/p?key=&a=%26key%3Dx", "/p?a=%26key%3Dx", 1),
        ("/p?keys=1&monkey=2&key2=3", "/p?keys=1&monkey=2&key2=3", 0),
        ("/p?a=1;key=2", "/p?a=1", 1),
        ("/p?a=1;b=2&key=3", "/p?a=1;b=2", 1),
        ("/p?%ZZ=1&a=2", "/p?a=2", 1),
        ("/p?+key=1", "/p", 1),
        ("/p?api%5Fkey=1&a=2", "/p?a=2", 1),
        // A second `?` separates parameters here.
        ("/p?alt=sse?key=x", "/p?alt=sse", 1),
        ("/p?key=x?alt=sse&b=%2B", "/p?alt=sse&b=%2B", 1),
        ("/p?q=what?&b=1", "/p?q=what?&b=1", 0),
        // Google's own names are not credentials elsewhere (see the Gemini case below).
        (
            "/p?access_token=x&authorization=y",
            "/p?access_token=x&authorization=y",
            0,
        ),
        ("/p?a=1&&b=2&key=3&", "/p?a=1&&b=2&", 1),
    ];
    for (input, want, n) in cases {
        let uri: Uri = input.parse().unwrap();
        let (out, removed) = strip_query(&uri, &[]).unwrap();
        assert_eq!((out.to_string().as_str(), removed), (*want, *n), "{input}");
        // scrub agrees, and counts the same.
        let mut p = parts(input, &[]);
        let s = scrub(&mut p, &[]).unwrap();
        assert_eq!(
            (p.uri.to_string().as_str(), s.params),
            (*want, *n),
            "{input}"
        );
        assert_eq!(s.presented(), *n > 0);
    }
    for (input, want) in [
        ("/p?access_token=ya29.x&alt=sse", "/p?alt=sse"),
        (
            "/p?ACCESS-TOKEN=1&oauth_token=2&authorization=3&Authorization=4",
            "/p",
        ),
        ("/p?access%5Ftoken=1&a=1", "/p?a=1"),
    ] {
        let (out, _) = strip_query(&input.parse().unwrap(), GOOGLE).unwrap();
        assert_eq!(out.to_string(), want, "{input}");
    }
}

#[test]
fn a_credential_in_any_parameter_goes_by_value() {
    let g = ghp();
    for (q, want) in [
        (format!("?q={g}&alt=sse"), "/p?alt=sse"),
        (format!("?alt=sse&note=see+{g}+here"), "/p?alt=sse"),
        (
            format!("?alt=sse&x={}", g.replace('_', "%5F")),
            "/p?alt=sse",
        ),
        (format!("?{g}"), "/p"),
        (format!("?{g}=1&b=2"), "/p?b=2"),
        (format!("?a=1?debug={g}"), "/p?a=1"),
        ("?password=Xk9%23mQ2vL7pZ&a=1".to_string(), "/p?a=1"),
    ] {
        let mut p = parts(&format!("/p{q}"), &[]);
        let s = scrub(&mut p, &[]).unwrap();
        assert_eq!(p.uri.to_string(), want, "{q}");
        assert_eq!(s.params, 1, "{q}");
    }
}

#[test]
fn a_credential_in_the_path_refuses_the_request_without_quoting_it() {
    let g = ghp();
    for target in [
        format!("/v1/{g}/models"),
        format!("/v1/models/{}", g.replace('_', "%5f")),
        format!("/v1beta/models/AIza{}:generateContent", rnd(35, 2)),
    ] {
        let mut p = parts(&target, &[("authorization", "Bearer sk-dummy")]);
        let (e, _) = scrub(&mut p, &[]).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, CredentialError::InPath), "{target}");
        assert!(msg.contains("request path") && msg.contains("nothing was sent"));
        assert!(!msg.contains(&g) && !msg.contains("AIza"), "{msg}");
    }
    // Look-alikes in paths are fine.
    for target in [
        "/v1beta/models/gemini-2.0-flash:streamGenerateContent",
        "/openai/deployments/gpt-4o-mini/chat/completions",
        "/v1/files/file-abc123XYZ/content",
        "/v1/responses/resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b",
    ] {
        let mut p = parts(target, &[]);
        assert!(scrub(&mut p, &[]).is_ok(), "{target}");
    }
}

#[test]
fn scrub_counts_what_the_client_presented() {
    let mut p = parts("/v1/models", &[("accept", "*/*"), ("openai-project", "p")]);
    let s = scrub(&mut p, &[]).unwrap();
    assert!(
        !s.presented(),
        "no credential: a probe stays unauthenticated"
    );
    assert!(!p.headers.contains_key("openai-project"));
    let g = ghp();
    let mut p = parts("/v1/models", &[("x-debug", &g)]);
    assert!(scrub(&mut p, &[]).unwrap().presented(), "by value counts");
    let mut p = parts("/v1/models", &[("cookie", &format!("s={g}"))]);
    assert!(scrub(&mut p, &[]).unwrap().presented(), "a cookie counts");
    assert!(!p.headers.contains_key("cookie"));
    let mut p = parts("/v1/models?key=", &[]);
    assert!(
        scrub(&mut p, &[]).unwrap().presented(),
        "an empty ?key counts"
    );
}

#[test]
fn a_private_key_split_across_headers_takes_every_piece() {
    let body = rnd(40, 12);
    let mut h = hm(&[
        ("x-a", "-----BEGIN PRIVATE KEY-----"),
        ("x-b", &body),
        ("x-c", "-----END PRIVATE KEY-----"),
        ("accept", "*/*"),
    ]);
    assert_eq!(scrub_trailers(&mut h), 3);
    assert_eq!(names(&h), vec!["accept"]);
}

/// Not a benchmark (timings are never asserted): prints what scrubbing a typical request head
/// costs (by name and by value), for the report; and the same head with a credential by value
/// in a header and a cookie (the map is rebuilt then).
#[test]
fn by_value_scan_cost_of_a_typical_request_head() {
    warm();
    let base = parts("/v1/chat/completions", &[]);
    let typical = typical_headers();
    let mut leaky = typical_headers();
    leaky.insert("x-debug", HeaderValue::from_str(&ghp()).unwrap());
    leaky.insert(
        "cookie",
        HeaderValue::from_str(&format!("a=1; s={}", ghp())).unwrap(),
    );
    for (label, heads, want) in [("typical", typical, 1), ("leaky", leaky, 3)] {
        // A figure to read, not to assert: fewer rounds in a debug build.
        let n = if cfg!(debug_assertions) {
            2_000
        } else {
            20_000
        };
        let fresh = || {
            let mut p = base.clone();
            p.headers = heads.clone();
            p
        };
        for _ in 0..n / 20 {
            std::hint::black_box(scrub(&mut fresh(), &[]).unwrap());
        }
        let t = std::time::Instant::now();
        for _ in 0..n {
            std::hint::black_box(fresh());
        }
        let clone_only = t.elapsed();
        let t = std::time::Instant::now();
        for _ in 0..n {
            let s = scrub(&mut fresh(), &[]).unwrap();
            assert_eq!(s.headers, want, "{label}");
        }
        let per = t.elapsed().saturating_sub(clone_only).as_nanos() as f64 / n as f64;
        println!(
            "scrub, {label} head ({} headers): {:.2} µs per request (debug assertions {})",
            heads.len(),
            per / 1e3,
            if cfg!(debug_assertions) { "on" } else { "off" }
        );
    }
}

//! Issue G, item 2, end to end: whatever a client sends as a credential — under any header or
//! parameter name, in a cookie, in Basic auth, in chunked trailers — never reaches the provider;
//! a credential in the path refuses the request; billing headers come from the vault entry; and
//! the vault's key goes only into requests that presented a credential of their own. Clients are
//! unmodified curl (`--http1.1` and `--http2`) and raw Python sockets inside the test's cgroup.

use std::time::Duration;

use gateway_tests::{
    ClientRun,
    provider::{ProviderEnv, Seen},
    run,
};

const T: Duration = Duration::from_secs(20);
/// The second octet of every address these tests use (`127.160.<n>.x`).
const NET: u8 = 160;
const OPENAI_KEY: &str = "sk-vault-cred-openai-40d1e7";
const ANTHROPIC_KEY: &str = "sk-ant-vault-cred-9b22c4";
const GEMINI_KEY: &str = "AIza-vault-cred-gemini-51ae";
/// A GitHub token shape (the `github-classic-token` detector): a credential by value.
const GHP: &str = "ghp_Xk9mQ2vL7pZr4TnB8wYc3JhF6dSa1GeKuV0o";
/// Marks every dummy credential a client sends: none may reach a provider.
const DUMMY: &str = "dummy-7f3e";

fn env(keys: &[(&str, &str)]) -> ProviderEnv {
    ProviderEnv::start("gw-cred", NET, "", keys)
}

fn all_keys() -> ProviderEnv {
    env(&[
        ("openai", OPENAI_KEY),
        ("anthropic", ANTHROPIC_KEY),
        ("gemini", GEMINI_KEY),
    ])
}

/// curl from inside the cgroup to `https://{host}{path}`; stdout ends with "\n<status>".
fn curl(e: &ProviderEnv, host: &str, ip: &str, extra: &[&str], path: &str) -> ClientRun {
    let resolve = format!("{host}:443:{ip}");
    let url = format!("https://{host}{path}");
    let mut args: Vec<&str> = vec![
        "-sS",
        "--max-time",
        "10",
        "--resolve",
        &resolve,
        "--cacert",
        e.ca.to_str().unwrap(),
        "-w",
        "\n%{http_code}",
    ];
    args.extend_from_slice(extra);
    args.push(&url);
    run(e.cg.command("curl", &args), T)
}

fn openai(e: &ProviderEnv, extra: &[&str], path: &str) -> ClientRun {
    curl(e, "api.openai.com", &e.fakes.ips[0], extra, path)
}

fn gemini(e: &ProviderEnv, extra: &[&str], path: &str) -> ClientRun {
    curl(
        e,
        "generativelanguage.googleapis.com",
        &e.fakes.ips[2],
        extra,
        path,
    )
}

fn code(r: &ClientRun) -> u16 {
    r.stdout.lines().last().unwrap_or("").parse().unwrap_or(0)
}

/// Everything the provider got, as one text: no dummy and no by-value credential may be in it.
fn everything(s: &Seen) -> String {
    let mut t = s.target.clone();
    for (k, v) in s.headers.iter().chain(&s.trailers) {
        t.push_str(&format!("\n{k}: {v}"));
    }
    t
}

/// The one request `fake` got since `before`.
fn one_new(seen: Vec<Seen>, before: usize, label: &str) -> Seen {
    assert_eq!(seen.len(), before + 1, "{label}: one request upstream");
    seen.into_iter().last().unwrap()
}

fn assert_clean(s: &Seen, label: &str) {
    let all = everything(s);
    for bad in [DUMMY, GHP, "dXNlcjpnaHBf"] {
        assert!(
            !all.contains(bad),
            "{label}: `{bad}` reached the provider:\n{all}"
        );
    }
}

#[test]
fn every_spelling_and_every_place_of_a_client_credential_is_replaced_by_the_vault_key() {
    let e = all_keys();
    let d = DUMMY;
    // Basic auth of `user:<GHP>` (base64), under a harmless header name.
    let basic = "Basic dXNlcjpnaHBfWGs5bVEydkw3cFpyNFRuQjh3WWMzSmhGNmRTYTFHZUt1VjBv";
    let hdr = |name: &str| format!("{name}: {d}");
    let headers: Vec<(String, Vec<String>)> = [
        "Authorization",
        "authorization",
        "AUTHORIZATION",
        "Proxy-Authorization",
        "x-api-key",
        "X-API-KEY",
        "x_api_key",
        "api-key",
        "api_key",
        "x-goog-api-key",
        "X_Goog_Api_Key",
        "Ocp-Apim-Subscription-Key",
        "x-goog-iam-authorization-token",
        "x-serverless-authorization",
    ]
    .iter()
    .map(|n| (format!("header {n}"), vec![hdr(n)]))
    .chain([
        (
            "two authorization headers".into(),
            vec![hdr("authorization"), hdr("Authorization")],
        ),
        ("by value: x-debug".into(), vec![format!("x-debug: {GHP}")]),
        (
            "by value: percent-encoded".into(),
            vec![format!("x-trace: {}", GHP.replace('_', "%5F"))],
        ),
        (
            "by value: Basic".into(),
            vec![format!("x-forwarded-auth: {basic}")],
        ),
        (
            "Basic authorization".into(),
            vec![format!("authorization: {basic}")],
        ),
    ])
    .collect();
    let queries: Vec<String> = [
        "key",
        "KEY",
        "api-key",
        "api_key",
        "apikey",
        "x-api-key",
        "x_api_key",
        "%6Bey",
        "API%5FKEY",
    ]
    .iter()
    .map(|n| format!("?{n}={d}&alt=1"))
    .chain([
        format!("?alt=1?key={d}"),
        format!("?alt=1&q={GHP}"),
        format!("?alt=1&{GHP}=x"),
        format!("?alt=1&note=see+{}+here", GHP.replace('_', "%5F")),
    ])
    .collect();
    for proto in ["--http1.1", "--http2"] {
        let mut cases: Vec<(String, Vec<String>, String)> = headers
            .iter()
            .map(|(l, h)| (l.clone(), h.clone(), String::new()))
            .collect();
        cases.extend(
            queries
                .iter()
                .map(|q| (format!("query {q}"), vec![], q.clone())),
        );
        for (label, hs, query) in cases {
            let label = format!("{proto} {label}");
            let before = e.fakes.openai.seen().len();
            let mut extra = vec![proto.to_string()];
            for h in &hs {
                extra.extend(["-H".to_string(), h.clone()]);
            }
            extra.extend(["-H".into(), "x-keep: yes".into()]);
            let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
            let r = openai(&e, &extra, &format!("/v1/models{query}"));
            assert_eq!(code(&r), 200, "{label}: {r:?}");
            let s = one_new(e.fakes.openai.seen(), before, &label);
            assert_eq!(
                s.credentials(),
                vec![format!("authorization: Bearer {OPENAI_KEY}")],
                "{label}: {s:#?}"
            );
            assert_clean(&s, &label);
            assert_eq!(s.all("x-keep"), vec!["yes"], "{label}: other headers stay");
            if !query.is_empty() {
                assert_eq!(
                    s.target, "/v1/models?alt=1",
                    "{label}: the rest byte for byte"
                );
            }
        }

        // Cookies: only the pair holding a credential goes.
        let before = e.fakes.openai.seen().len();
        let cookie = format!("cookie: theme=dark; session={GHP}; lang=en");
        let r = openai(&e, &[proto, "-H", &cookie], "/v1/models");
        assert_eq!(code(&r), 200, "{proto} cookie: {r:?}");
        let s = one_new(e.fakes.openai.seen(), before, "cookie");
        assert_clean(&s, &format!("{proto} cookie"));
        let cookies = s.all("cookie").join("; ");
        assert_eq!(cookies, "theme=dark; lang=en", "{proto}");
        assert_eq!(
            s.credentials(),
            vec![format!("authorization: Bearer {OPENAI_KEY}")],
            "{proto}: a cookie credential counts as presented"
        );

        // Google's own places, on Gemini only.
        for q in [
            format!("?access_token={d}"),
            format!("?ACCESS-TOKEN={d}"),
            format!("?oauth_token={d}"),
            format!("?authorization={d}"),
            format!("?alt=sse?key={d}"),
        ] {
            let before = e.fakes.gemini.seen().len();
            let r = gemini(&e, &[proto], &format!("/v1/models{q}"));
            assert_eq!(code(&r), 200, "{proto} gemini {q}: {r:?}");
            let s = one_new(e.fakes.gemini.seen(), before, &q);
            assert_clean(&s, &format!("{proto} gemini {q}"));
            assert_eq!(
                s.credentials(),
                vec![format!("x-goog-api-key: {GEMINI_KEY}")]
            );
        }
    }
    // The gateway's log never quotes what it removed.
    let log = e.gw.raw_log();
    assert!(!log.contains(GHP) && !log.contains(DUMMY) && !log.contains(OPENAI_KEY));
}

#[test]
fn a_credential_in_the_path_is_refused_and_nothing_is_sent() {
    let e = all_keys();
    for proto in ["--http1.1", "--http2"] {
        for path in [
            format!("/v1/models/{GHP}"),
            format!("/v1/{}/models", GHP.replace('_', "%5F")),
        ] {
            let r = openai(&e, &[proto, "-H", "authorization: Bearer sk-x"], &path);
            assert_eq!(code(&r), 400, "{proto} {path}: {r:?}");
            let body: serde_json::Value =
                serde_json::from_str(r.stdout.lines().next().unwrap()).unwrap();
            let msg = body["error"]["message"].as_str().unwrap();
            assert!(
                msg.contains("credential was found in the request path")
                    && msg.contains("nothing was sent"),
                "{msg}"
            );
            assert!(!r.stdout.contains(GHP) && !r.stdout.contains("Xk9mQ2vL7pZr4"));
        }
    }
    assert!(
        e.fakes.openai.seen().is_empty(),
        "nothing reached the provider"
    );
    let log = e.gw.raw_log();
    assert!(log.contains("request refused"), "logged loudly");
    assert!(!log.contains("Xk9mQ2vL7pZr4"), "never with the credential");
}

#[test]
fn billing_headers_never_come_from_the_client_and_do_from_the_vault_entry() {
    let e = all_keys();
    let client = [
        "-H",
        "OpenAI-Organization: org-client",
        "-H",
        "openai_project: proj_client",
        "-H",
        "x-goog-user-project: client-project",
        "-H",
        "authorization: Bearer sk-x",
    ];
    let billing = |s: &Seen| {
        let mut v: Vec<String> = [
            "openai-organization",
            "openai-project",
            "x-goog-user-project",
        ]
        .iter()
        .flat_map(|n| s.all(n).into_iter().map(move |v| format!("{n}: {v}")))
        .collect();
        v.sort();
        v
    };
    for proto in ["--http1.1", "--http2"] {
        let mut extra = vec![proto];
        extra.extend(client);
        assert_eq!(code(&openai(&e, &extra, "/v1/models")), 200);
        let s = e.fakes.openai.seen().pop().unwrap();
        assert!(billing(&s).is_empty(), "{proto}: {s:#?}");
        assert_eq!(
            s.credentials(),
            vec![format!("authorization: Bearer {OPENAI_KEY}")]
        );
    }
    // Entries with billing fields: the vault file is re-read when it changes.
    let vault = e.gw.dir.path().join("state/vault.toml");
    std::fs::write(
        &vault,
        format!(
            "[keys]\nanthropic = \"{ANTHROPIC_KEY}\"\n\
             gemini = {{ value = \"{GEMINI_KEY}\", project = \"gproj-vault\" }}\n\n\
             [keys.openai]\nvalue = \"{OPENAI_KEY}\"\norganization = \"org-vault\"\nproject = \"proj_vault\"\n"
        ),
    )
    .unwrap();
    let t = std::time::Instant::now();
    for proto in ["--http1.1", "--http2"] {
        let mut extra = vec![proto];
        extra.extend(client);
        let s = loop {
            assert_eq!(code(&openai(&e, &extra, "/v1/models")), 200);
            let s = e.fakes.openai.seen().pop().unwrap();
            if !billing(&s).is_empty() || t.elapsed() > Duration::from_secs(5) {
                break s;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(
            billing(&s),
            vec![
                "openai-organization: org-vault",
                "openai-project: proj_vault"
            ],
            "{proto}"
        );
        assert_eq!(
            s.credentials(),
            vec![format!("authorization: Bearer {OPENAI_KEY}")]
        );
        assert_eq!(code(&gemini(&e, &extra, "/v1/models")), 200);
        let s = e.fakes.gemini.seen().pop().unwrap();
        assert_eq!(
            billing(&s),
            vec!["x-goog-user-project: gproj-vault"],
            "{proto}"
        );
        // A request that presented no credential gets no billing header either.
        assert_eq!(
            code(&openai(&e, &[proto, "-H", client[1]], "/v1/models")),
            200
        );
        let s = e.fakes.openai.seen().pop().unwrap();
        assert!(
            billing(&s).is_empty() && s.credentials().is_empty(),
            "{s:#?}"
        );
    }
}

/// Raw HTTP/1.1 over TLS, the way curl never sends it; prints the status line.
const PY_RAW: &str = r#"
import socket, ssl, sys
host, ip, cafile, raw = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
data = raw.encode("latin-1").decode("unicode_escape").encode("latin-1")
ctx = ssl.create_default_context(cafile=cafile)
ctx.set_alpn_protocols(["http/1.1"])
s = ctx.wrap_socket(socket.create_connection((ip, 443), timeout=10), server_hostname=host)
s.sendall(data)
out = b""
try:
    while True:
        c = s.recv(65536)
        if not c:
            break
        out += c
except Exception:
    pass
print(out.split(b"\r\n", 1)[0].decode("latin-1") if out else "NO RESPONSE")
"#;

#[test]
fn chunked_trailers_carry_no_credential_upstream() {
    let e = all_keys();
    // A streamed (not inspected) endpoint, so the trailers travel with the body.
    for (label, head_auth) in [
        ("no credential in the head", ""),
        (
            "a credential in the head too",
            "Authorization: Bearer sk-head\\r\\n",
        ),
    ] {
        let before = e.fakes.openai.seen().len();
        let raw = format!(
            "POST /v1/files HTTP/1.1\\r\\nHost: api.openai.com\\r\\n{head_auth}\
             Transfer-Encoding: chunked\\r\\nTrailer: Authorization, X-Debug, X-Api-Key\\r\\n\
             Connection: close\\r\\n\\r\\n2\\r\\n{{}}\\r\\n0\\r\\n\
             Authorization: Bearer {DUMMY}\\r\\nX-Api-Key: {DUMMY}\\r\\nX-Debug: {GHP}\\r\\n\\r\\n"
        );
        let r = run(
            e.cg.command(
                "python3",
                &[
                    "-c",
                    PY_RAW,
                    "api.openai.com",
                    &e.fakes.ips[0],
                    e.ca.to_str().unwrap(),
                    &raw,
                ],
            ),
            T,
        );
        assert!(r.ok, "{label}: {r:?}");
        assert!(r.stdout.starts_with("HTTP/1.1 "), "{label}: {r:?}");
        let s = one_new(e.fakes.openai.seen(), before, label);
        assert_clean(&s, label);
        assert!(!everything(&s).contains("sk-head"), "{label}");
        let want = if head_auth.is_empty() {
            vec![]
        } else {
            vec![format!("authorization: Bearer {OPENAI_KEY}")]
        };
        assert_eq!(s.credentials(), want, "{label}: {s:#?}");
        assert_eq!(s.body, b"{}", "{label}");
    }
}

#[test]
fn a_request_without_a_credential_goes_out_without_one_and_its_record_names_no_key() {
    // No key for Gemini at all: without a credential that is no error either.
    let e = env(&[("openai", OPENAI_KEY), ("anthropic", ANTHROPIC_KEY)]);
    for proto in ["--http1.1", "--http2"] {
        let r = openai(&e, &[proto, "-H", "x-telemetry: 1"], "/v1/models?alt=1");
        assert_eq!(code(&r), 200, "{r:?}");
        let s = e.fakes.openai.seen().pop().unwrap();
        assert!(s.credentials().is_empty(), "{proto}: {s:#?}");
        assert!(!everything(&s).contains(OPENAI_KEY));
        assert_eq!(s.target, "/v1/models?alt=1");

        let r = gemini(&e, &[proto], "/v1/models");
        assert_eq!(
            code(&r),
            200,
            "{proto} gemini without key or credential: {r:?}"
        );
        let s = e.fakes.gemini.seen().pop().unwrap();
        assert!(s.credentials().is_empty(), "{s:#?}");
    }
    // A credential for a provider without a configured key is still refused.
    let before = e.fakes.gemini.seen().len();
    let r = gemini(&e, &["-H", "x-goog-api-key: AIza-x"], "/v1/models");
    assert_eq!(code(&r), 401, "{r:?}");
    assert_eq!(e.fakes.gemini.seen().len(), before);

    // The journal: the unauthenticated exchanges name no key, the authenticated one does.
    let r = openai(&e, &["-H", "authorization: Bearer sk-x"], "/v1/models");
    assert_eq!(code(&r), 200);
    let t = std::time::Instant::now();
    let recs = loop {
        let out = e.gw.cli(&["journal", "list", "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let recs = v.as_array().unwrap().clone();
        if recs.len() >= 6 || t.elapsed() > Duration::from_secs(5) {
            break recs;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let keys = |provider: &str, status: u64| -> Vec<serde_json::Value> {
        recs.iter()
            .filter(|r| r["provider"] == provider && r["status"] == status)
            .map(|r| r["key"].clone())
            .collect()
    };
    let mut openai_keys = keys("openai", 200);
    openai_keys.sort_by_key(|k| k.is_string());
    assert_eq!(
        openai_keys,
        vec![
            serde_json::Value::Null,
            serde_json::Value::Null,
            "openai".into()
        ],
        "{recs:#?}"
    );
    assert_eq!(
        keys("gemini", 200),
        vec![serde_json::Value::Null, serde_json::Value::Null]
    );
}

//! Issue B end to end: provider connections redirected by the real programs, terminated with
//! the gateway's CA, and re-originated with the vault's key. Clients are unmodified curl (h1 and
//! h2) and raw Python sockets; the fake providers speak OpenAI, Anthropic and Gemini formats and
//! record every request they get.

use std::{path::Path, time::Duration};

use gateway_tests::{
    CgroupGuard, Gateway, Opts,
    fake::TestPki,
    provider::{FakeProvider, ProviderEnv},
    require_privileges, run, unique,
};

const T: Duration = Duration::from_secs(20);
const OPENAI_KEY: &str = "sk-vault-openai-5b1f0c2e9a";
const ANTHROPIC_KEY: &str = "sk-ant-vault-77d3e1aa40";
const GEMINI_KEY: &str = "AIza-vault-gemini-3c9e04";

type Env = ProviderEnv;

fn env_keys(keys: &[(&str, &str)]) -> Env {
    // Built-in providers keep their hosts; only their addresses are set here.
    ProviderEnv::start("gw-icpt", 20, "", keys)
}

fn env() -> Env {
    env_keys(&[
        ("openai", OPENAI_KEY),
        ("anthropic", ANTHROPIC_KEY),
        ("gemini", GEMINI_KEY),
    ])
}

trait EnvCurl {
    fn curl(&self, host: &str, ip: &str, extra: &[&str], path: &str) -> gateway_tests::ClientRun;
}

impl EnvCurl for Env {
    fn curl(&self, host: &str, ip: &str, extra: &[&str], path: &str) -> gateway_tests::ClientRun {
        curl(
            &self.cg,
            &self.ca,
            host,
            ip,
            "\n%{http_code} %{http_version}",
            extra,
            path,
        )
    }
}

/// curl from inside `cg` to `https://{host}{path}`, dialling `ip`, trusting `cafile`; stdout
/// ends with curl's `-w` output.
fn curl(
    cg: &CgroupGuard,
    cafile: &Path,
    host: &str,
    ip: &str,
    write_out: &str,
    extra: &[&str],
    path: &str,
) -> gateway_tests::ClientRun {
    let resolve = format!("{host}:443:{ip}");
    let url = format!("https://{host}{path}");
    let mut args: Vec<&str> = vec![
        "-sS",
        "--max-time",
        "10",
        "--resolve",
        &resolve,
        "--cacert",
        cafile.to_str().unwrap(),
        "-w",
        write_out,
    ];
    args.extend_from_slice(extra);
    args.push(&url);
    run(cg.command("curl", &args), T)
}

/// GET https://api.openai.com/v1/models via `ip`; stdout ends with "\n<status>".
fn curl_models(
    cg: &CgroupGuard,
    ip: &str,
    cafile: &Path,
    extra: &[&str],
) -> gateway_tests::ClientRun {
    curl(
        cg,
        cafile,
        "api.openai.com",
        ip,
        "\n%{http_code}",
        extra,
        "/v1/models",
    )
}

fn status(out: &str) -> (u16, String) {
    let last = out.lines().last().unwrap_or("");
    let (code, ver) = last.split_once(' ').unwrap_or(("0", ""));
    (code.parse().unwrap_or(0), ver.to_string())
}

#[test]
fn curl_h1_and_h2_streaming_and_not_get_answers_with_the_vault_key_only() {
    let e = env();
    let chat = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
    let chat_stream =
        r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    for (proto, want_version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        for body in [chat, chat_stream] {
            let before = e.fakes.openai.seen().len();
            let r = e.curl(
                "api.openai.com",
                &e.fakes.ips[0],
                &[
                    proto,
                    "-H",
                    "authorization: Bearer sk-dummy",
                    "-H",
                    "content-type: application/json",
                    "-d",
                    body,
                ],
                "/v1/chat/completions",
            );
            assert!(r.ok, "{proto}: {r:?}\n{}", e.gw.raw_log());
            let (code, ver) = status(&r.stdout);
            assert_eq!((code, ver.as_str()), (200, want_version), "{r:?}");
            if body == chat_stream {
                assert!(r.stdout.contains("data: [DONE]"), "{}", r.stdout);
                // One chunk per provider event (masking may add one that releases a held
                // tail before the final chunk).
                let words = gateway_tests::provider::REPLY.split_inclusive(' ').count();
                let chunks = r.stdout.matches("chat.completion.chunk").count();
                assert!(
                    chunks == words + 1 || chunks == words + 2,
                    "{chunks} chunks: {}",
                    r.stdout
                );
            } else {
                assert!(
                    r.stdout.contains("Hello from the fake provider."),
                    "{}",
                    r.stdout
                );
            }
            let seen = e.fakes.openai.seen();
            assert_eq!(seen.len(), before + 1);
            let s = seen.last().unwrap();
            assert_eq!(
                s.credentials(),
                vec![format!("authorization: Bearer {OPENAI_KEY}")],
                "{s:?}"
            );
            // The client's protocol carries through to the provider.
            assert_eq!(
                s.version,
                if want_version == "2" {
                    "HTTP/2.0"
                } else {
                    "HTTP/1.1"
                },
                "{s:?}"
            );
            assert_eq!(s.body, body.as_bytes());
        }
    }

    // Anthropic: x-api-key, streamed events intact.
    let msg = r#"{"model":"claude-x","max_tokens":16,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let r = e.curl(
        "api.anthropic.com",
        &e.fakes.ips[1],
        &[
            "-H",
            "x-api-key: sk-ant-dummy",
            "-H",
            "anthropic-version: 2023-06-01",
            "-d",
            msg,
        ],
        "/v1/messages",
    );
    assert_eq!(status(&r.stdout).0, 200, "{r:?}");
    assert!(r.stdout.contains("event: message_stop"));
    let s = e.fakes.anthropic.seen().pop().unwrap();
    assert_eq!(
        s.credentials(),
        vec![format!("x-api-key: {ANTHROPIC_KEY}")],
        "{s:?}"
    );
    assert_eq!(s.all("anthropic-version"), vec!["2023-06-01".to_string()]);

    // Gemini: ?key= stripped, x-goog-api-key injected, both stream forms.
    for q in ["?alt=sse&key=AIza-dummy", "?key=AIza-dummy"] {
        let r = e.curl(
            "generativelanguage.googleapis.com",
            &e.fakes.ips[2],
            &[
                "-H",
                "content-type: application/json",
                "-d",
                r#"{"contents":[{"parts":[{"text":"hi"}]}]}"#,
            ],
            &format!("/v1beta/models/gemini-x:streamGenerateContent{q}"),
        );
        assert_eq!(status(&r.stdout).0, 200, "{r:?}");
        assert!(r.stdout.contains("finishReason"), "{}", r.stdout);
        let s = e.fakes.gemini.seen().pop().unwrap();
        assert_eq!(
            s.credentials(),
            vec![format!("x-goog-api-key: {GEMINI_KEY}")],
            "{s:?}"
        );
        assert!(!s.target.contains("key="), "{}", s.target);
        assert_eq!(s.target.contains("alt=sse"), q.contains("alt=sse"));
    }

    // Unknown paths on a provider host are still swapped and forwarded.
    let r = e.curl(
        "api.openai.com",
        &e.fakes.ips[0],
        &["-H", "authorization: Bearer x"],
        "/v2/something/new?a=1",
    );
    assert_eq!(status(&r.stdout).0, 404, "{r:?}");
    let s = e.fakes.openai.seen().pop().unwrap();
    assert_eq!(s.target, "/v2/something/new?a=1");
    assert_eq!(
        s.credentials(),
        vec![format!("authorization: Bearer {OPENAI_KEY}")]
    );
}

#[test]
fn a_provider_without_a_key_gets_a_provider_shaped_401_and_nothing_is_forwarded() {
    let e = env_keys(&[("openai", OPENAI_KEY)]);
    let r = e.curl(
        "api.anthropic.com",
        &e.fakes.ips[1],
        &["-H", "x-api-key: sk-ant-dummy", "-d", "{}"],
        "/v1/messages",
    );
    assert_eq!(status(&r.stdout).0, 401, "{r:?}");
    let body: serde_json::Value = serde_json::from_str(r.stdout.lines().next().unwrap()).unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "authentication_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`anthropic`"),
        "{body}"
    );
    assert!(
        e.fakes.anthropic.seen().is_empty(),
        "nothing reached the provider"
    );
}

#[test]
fn an_upstream_with_a_bad_certificate_gets_a_502_and_no_request() {
    require_privileges();
    let n = unique();
    let name = format!("gw-icpt-{}-{n}", std::process::id());
    let cg = CgroupGuard::new(&name);
    let ip = format!("127.20.{n}.1");
    let trusted = TestPki::new(&["api.openai.com"]);
    let rogue = TestPki::new(&["api.openai.com"]);
    let fake = FakeProvider::start(format!("{ip}:443").parse().unwrap(), &rogue);
    let gw = Gateway::start_opts(
        &name,
        &cg.path,
        &format!("[[provider]]\nname = \"openai\"\naddrs = [\"{ip}/32\"]\n"),
        &Opts {
            extra_roots: vec![trusted.ca_pem.clone()],
            keys: vec![("openai".into(), OPENAI_KEY.into())],
            builtin: true,
            ..Default::default()
        },
    );
    let ca = gw.ca_pem();
    let r = curl_models(&cg, &ip, &ca, &[]);
    assert!(r.stdout.ends_with("\n502"), "{r:?}");
    assert!(r.stdout.contains("did not verify"), "{r:?}");
    assert!(fake.seen().is_empty(), "no request reached the impostor");
    assert!(!gw.raw_log().contains(OPENAI_KEY));
}

#[test]
fn the_injected_key_is_a_never_indexed_hpack_literal_on_the_wire() {
    require_privileges();
    let n = unique();
    let name = format!("gw-icpt-{}-{n}", std::process::id());
    let cg = CgroupGuard::new(&name);
    let ip = format!("127.20.{n}.1");
    let pki = TestPki::new(&["api.openai.com"]);
    let wire = gateway_tests::wire::WireServer::start(format!("{ip}:443").parse().unwrap(), &pki);
    let gw = Gateway::start_opts(
        &name,
        &cg.path,
        &format!("[[provider]]\nname = \"openai\"\naddrs = [\"{ip}/32\"]\n"),
        &Opts {
            extra_roots: vec![pki.ca_pem.clone()],
            keys: vec![("openai".into(), OPENAI_KEY.into())],
            builtin: true,
            ..Default::default()
        },
    );
    let ca = gw.ca_pem();
    // Two requests on one client connection, the client sending its own Authorization both
    // times: the second would be an indexed reference if the first had entered the table.
    let r = curl(
        &cg,
        &ca,
        "api.openai.com",
        &ip,
        "\n%{http_code}",
        &[
            "--http2",
            "-H",
            "Authorization: Bearer sk-dummy",
            "https://api.openai.com/v1/models",
        ],
        "/v1/models",
    );
    assert_eq!(r.stdout.matches("\n200").count(), 2, "{r:?}");
    let blocks = wire.blocks();
    assert_eq!(blocks.len(), 2, "{blocks:?}");
    for fields in &blocks {
        let auth: Vec<_> = fields
            .iter()
            .filter(|f| {
                f.static_name == Some(23) || f.literal_name.as_deref() == Some("authorization")
            })
            .collect();
        assert_eq!(auth.len(), 1, "exactly one authorization field: {fields:?}");
        assert_eq!(
            auth[0].repr,
            gateway_tests::wire::Repr::NeverIndexed,
            "{fields:?}"
        );
    }
}

/// Sends raw bytes over TLS (HTTP/1.1 only) and prints the status line, or the error.
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
except Exception as e:
    pass
print(out.split(b"\r\n", 1)[0].decode("latin-1") if out else "NO RESPONSE")
"#;

/// The credential bypass suite: every case either reaches the provider carrying exactly one
/// credential, the vault's, or is rejected without reaching it.
#[test]
fn credential_bypass_suite() {
    let e = env();
    let vault_cred = format!("authorization: Bearer {OPENAI_KEY}");
    let mut checked = 0;
    // A request that presented no credential in its head gets none (issue G): what reaches
    // the provider then carries nothing at all.
    let mut check = |label: &str, e: &Env, before: usize, answered: bool| {
        let seen = e.fakes.openai.seen();
        let new = &seen[before..];
        for s in new {
            let creds = s.credentials();
            assert!(
                creds == vec![vault_cred.clone()] || (creds.is_empty() && !answered),
                "{label}: provider saw {s:#?}"
            );
        }
        if answered {
            assert!(
                !new.is_empty(),
                "{label}: expected the request to reach the provider"
            );
        }
        checked += 1;
    };
    let header_cases: &[(&str, &[&str], &str)] = &[
        ("bearer", &["-H", "Authorization: Bearer sk-dummy"], ""),
        ("lowercase", &["-H", "authorization: Bearer sk-dummy"], ""),
        ("uppercase", &["-H", "AUTHORIZATION: Bearer sk-dummy"], ""),
        (
            "two authorization",
            &[
                "-H",
                "Authorization: Bearer a",
                "-H",
                "Authorization: Bearer b",
            ],
            "",
        ),
        ("raw key", &["-H", "Authorization: sk-dummy"], ""),
        ("basic", &["-H", "Authorization: Basic c2stZHVtbXk6"], ""),
        ("empty authorization", &["-H", "Authorization;"], ""),
        ("x-api-key", &["-H", "x-api-key: sk-dummy"], ""),
        ("X-API-KEY", &["-H", "X-API-KEY: sk-dummy"], ""),
        ("api-key", &["-H", "api-key: sk-dummy"], ""),
        ("x-goog-api-key", &["-H", "x-goog-api-key: AIza-dummy"], ""),
        (
            "proxy-authorization",
            &["-H", "Proxy-Authorization: Basic eDp5"],
            "",
        ),
        ("apim key", &["-H", "Ocp-Apim-Subscription-Key: dummy"], ""),
        (
            "every header at once",
            &[
                "-H",
                "Authorization: Bearer a",
                "-H",
                "x-api-key: b",
                "-H",
                "api-key: c",
                "-H",
                "x-goog-api-key: d",
            ],
            "",
        ),
        ("?key=", &[], "?key=sk-dummy"),
        ("?key= among others", &[], "?alt=sse&key=sk-dummy&x=1"),
        ("?KEY=", &[], "?KEY=sk-dummy"),
        ("percent-encoded name", &[], "?%6Bey=sk-dummy&%4B%45%59=x"),
        (
            "?api-key= and ?api_key=",
            &[],
            "?api-key=a&api_key=b&api-version=1",
        ),
        ("empty ?key", &[], "?key=&key"),
    ];
    for proto in ["--http1.1", "--http2"] {
        for (label, headers, query) in header_cases {
            let before = e.fakes.openai.seen().len();
            let mut extra = vec![proto];
            extra.extend_from_slice(headers);
            let r = e.curl(
                "api.openai.com",
                &e.fakes.ips[0],
                &extra,
                &format!("/v1/models{query}"),
            );
            let (code, _) = status(&r.stdout);
            assert_eq!(code, 200, "{proto} {label}: {r:?}");
            check(&format!("{proto} {label}"), &e, before, true);
        }
    }
    // Raw HTTP/1.1 the way curl would never send it.
    let h = "Host: api.openai.com\\r\\n";
    let raw_cases: Vec<(&str, String, bool)> = vec![
        (
            "authorization in chunked trailers",
            format!("POST /v1/chat/completions HTTP/1.1\\r\\n{h}X-Api-Key: sk-head\\r\\nTransfer-Encoding: chunked\\r\\nTrailer: Authorization\\r\\nConnection: close\\r\\n\\r\\n2\\r\\n{{}}\\r\\n0\\r\\nAuthorization: Bearer sk-trailer\\r\\nX-Api-Key: sk-trailer\\r\\n\\r\\n"),
            false,
        ),
        (
            "content-length and transfer-encoding together",
            format!("POST /v1/chat/completions HTTP/1.1\\r\\n{h}Content-Length: 4\\r\\nTransfer-Encoding: chunked\\r\\nConnection: close\\r\\n\\r\\n2\\r\\n{{}}\\r\\n0\\r\\n\\r\\n"),
            false,
        ),
        (
            "bare CR inside a value",
            format!("GET /v1/models HTTP/1.1\\r\\n{h}X-Note: a\\rAuthorization: Bearer sk-cr\\r\\nConnection: close\\r\\n\\r\\n"),
            false,
        ),
        (
            "NUL inside a value",
            format!("GET /v1/models HTTP/1.1\\r\\n{h}Authorization: Bearer sk\\x00dummy\\r\\nConnection: close\\r\\n\\r\\n"),
            false,
        ),
        (
            "obs-fold continuation",
            format!("GET /v1/models HTTP/1.1\\r\\n{h}X-Fold: a\\r\\n Authorization: Bearer sk-fold\\r\\nConnection: close\\r\\n\\r\\n"),
            false,
        ),
        (
            "space before the colon",
            format!("GET /v1/models HTTP/1.1\\r\\n{h}Authorization : Bearer sk-space\\r\\nConnection: close\\r\\n\\r\\n"),
            false,
        ),
        (
            "connection-listed credential header",
            format!("GET /v1/models HTTP/1.1\\r\\n{h}Connection: x-api-key, close\\r\\nX-Api-Key: sk-listed\\r\\n\\r\\n"),
            true,
        ),
        (
            "pipelined second request with a key",
            format!("GET /v1/models HTTP/1.1\\r\\n{h}X-Api-Key: sk-first\\r\\n\\r\\nGET /v1/models?key=sk-second HTTP/1.1\\r\\n{h}Authorization: Bearer sk-second\\r\\nConnection: close\\r\\n\\r\\n"),
            true,
        ),
        (
            "absolute-form target to another host",
            format!("GET https://evil.example/v1/models?key=x HTTP/1.1\\r\\n{h}Authorization: Bearer sk-abs\\r\\nConnection: close\\r\\n\\r\\n"),
            false,
        ),
        (
            "Host header naming another provider",
            "GET /v1/models HTTP/1.1\\r\\nHost: api.anthropic.com\\r\\nx-api-key: sk-ant-dummy\\r\\nConnection: close\\r\\n\\r\\n".to_string(),
            true,
        ),
    ];
    for (label, raw, must_answer) in raw_cases {
        let before = e.fakes.openai.seen().len();
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
        let line = r.stdout.trim().to_string();
        if must_answer {
            assert!(line.starts_with("HTTP/1.1 200"), "{label}: {line}");
        } else {
            assert!(
                line.starts_with("HTTP/1.1 200")
                    || line.starts_with("HTTP/1.1 4")
                    || line == "NO RESPONSE",
                "{label}: {line}"
            );
        }
        check(label, &e, before, must_answer);
    }
    assert!(checked >= 50, "{checked} cases");
    // Every request that reached a provider used the right Host, whatever the client said.
    for s in e.fakes.openai.seen() {
        let hosts = s.all("host");
        assert!(
            hosts.is_empty() || hosts == vec!["api.openai.com".to_string()],
            "{s:?}"
        );
    }
    let log = e.gw.raw_log();
    for secret in [OPENAI_KEY, ANTHROPIC_KEY, GEMINI_KEY] {
        assert!(
            !log.contains(secret),
            "a vault key appeared in the gateway log"
        );
    }
}

#[test]
fn ca_commands_install_into_a_root_that_curl_then_trusts_and_restart_reuses_the_ca() {
    let mut e = env();
    let ca_path = e.gw.ca_pem();
    let key_path = ca_path.with_file_name("ca-key.pem");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&key_path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let pem = std::fs::read_to_string(&ca_path).unwrap();
    let out = e.gw.cli(&["ca", "cert"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), pem.trim());
    let out = e.gw.cli(&["ca", "init"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("already exists"),
        "{out:?}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("PRIVATE"),
        "{out:?}"
    );

    // A temporary root with a Debian layout and a certifi bundle; never the machine's store.
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    std::fs::create_dir_all(r.join("usr/local/share/ca-certificates")).unwrap();
    std::fs::create_dir_all(r.join("etc/ssl/certs")).unwrap();
    std::fs::copy(
        "/etc/ssl/certs/ca-certificates.crt",
        r.join("etc/ssl/certs/ca-certificates.crt"),
    )
    .unwrap();
    let certifi = r.join("usr/lib/python3/dist-packages/certifi");
    std::fs::create_dir_all(&certifi).unwrap();
    std::fs::write(certifi.join("cacert.pem"), "# certifi test bundle\n").unwrap();
    let out =
        e.gw.cli(&["ca", "install", "--certifi", "--root", r.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{out:?}");
    for want in [
        "SSL_CERT_FILE=",
        "REQUESTS_CA_BUNDLE=",
        "NODE_EXTRA_CA_CERTS=",
        "keytool -importcert",
        "Debian",
        "certifi:",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    assert_eq!(
        std::fs::read_to_string(r.join("usr/local/share/ca-certificates/gateway-ca.crt")).unwrap(),
        pem
    );
    assert!(
        std::fs::read_to_string(certifi.join("cacert.pem"))
            .unwrap()
            .contains(pem.trim())
    );
    // Installing twice does not append twice.
    e.gw.cli(&["ca", "install", "--root", r.to_str().unwrap()]);
    let bundle = r.join("etc/ssl/certs/ca-certificates.crt");
    assert_eq!(
        std::fs::read_to_string(&bundle)
            .unwrap()
            .matches(pem.trim())
            .count(),
        1
    );

    let curl_with = |e: &Env, cafile: &Path| curl_models(&e.cg, &e.fakes.ips[0], cafile, &[]);
    let r1 = curl_with(&e, &bundle);
    assert!(r1.ok && r1.stdout.ends_with("\n200"), "{r1:?}");

    // Restart: same CA, so the installed bundle keeps working.
    e.gw.kill9();
    e.gw.spawn();
    assert_eq!(
        std::fs::read_to_string(&ca_path).unwrap(),
        pem,
        "restart reused the CA"
    );
    let r2 = curl_with(&e, &bundle);
    assert!(r2.ok && r2.stdout.ends_with("\n200"), "{r2:?}");
}

/// Spawn curl streaming a gated completion; returns the child and a channel of its stdout lines.
fn gated_curl(e: &Env, proto: &str) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead as _;
    let resolve = format!("api.openai.com:443:{}", e.fakes.ips[0]);
    let body =
        r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let mut child =
        e.cg.command(
            "curl",
            &[
                "-sS",
                "-N",
                proto,
                "--resolve",
                &resolve,
                "--cacert",
                e.ca.to_str().unwrap(),
                "-H",
                "x-test-gate: 1",
                "-d",
                body,
                "https://api.openai.com/v1/chat/completions",
            ],
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (child, rx)
}

#[test]
fn sse_events_reach_the_client_before_the_stream_ends_and_a_hangup_cancels_upstream() {
    let e = env();
    for proto in ["--http1.1", "--http2"] {
        // The provider holds the rest of the stream until the client has the first event:
        // a gateway that buffered the body would never deliver it.
        let (mut child, lines) = gated_curl(&e, proto);
        let first = lines.recv_timeout(Duration::from_secs(10));
        assert!(
            first
                .as_ref()
                .is_ok_and(|l| l.contains("chat.completion.chunk")),
            "{proto}: first event did not arrive before the stream ended: {first:?}\n{}",
            e.gw.raw_log()
        );
        e.fakes.openai.open_gate();
        let rest: Vec<String> = lines.iter().collect();
        assert!(
            rest.iter().any(|l| l == "data: [DONE]"),
            "{proto}: {rest:?}"
        );
        assert!(child.wait().unwrap().success());

        // The client hangs up mid-stream: the upstream request is cancelled, not left running.
        let cancelled = e.fakes.openai.cancelled();
        let (mut child, lines) = gated_curl(&e, proto);
        lines
            .recv_timeout(Duration::from_secs(10))
            .expect("first event");
        child.kill().unwrap();
        child.wait().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while e.fakes.openai.cancelled() == cancelled && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(
            e.fakes.openai.cancelled(),
            cancelled + 1,
            "{proto}: upstream stream not cancelled"
        );
    }
}

#[test]
fn keys_come_from_hashicorp_vault_with_approle_cached_and_fail_closed_without_it() {
    require_privileges();
    let n = unique();
    let name = format!("gw-icpt-{}-{n}", std::process::id());
    let cg = CgroupGuard::new(&name);
    let ip = format!("127.20.{n}.1");
    let pki = TestPki::new(&["api.openai.com"]);
    let fake = FakeProvider::start(format!("{ip}:443").parse().unwrap(), &pki);
    let vault =
        gateway_tests::vaultfake::FakeVault::start(serde_json::json!({"openai": OPENAI_KEY}));
    let dir = tempfile::tempdir().unwrap();
    let role = dir.path().join("role_id");
    let secret = dir.path().join("secret_id");
    std::fs::write(&role, gateway_tests::vaultfake::ROLE_ID).unwrap();
    std::fs::write(&secret, gateway_tests::vaultfake::SECRET_ID).unwrap();
    let gw = Gateway::start_opts(
        &name,
        &cg.path,
        &format!("[[provider]]\nname = \"openai\"\naddrs = [\"{ip}/32\"]\n"),
        &Opts {
            extra_roots: vec![pki.ca_pem.clone()],
            builtin: true,
            // Top-level keys must precede the tables of the generated config: use a table.
            extra: format!(
                "[vault]\nbackend = \"hashicorp\"\n[vault.hashicorp]\naddr = \"http://{}\"\nrole_id_file = {:?}\nsecret_id_file = {:?}\ncache_ttl = \"1h\"\n",
                vault.addr,
                role.display().to_string(),
                secret.display().to_string()
            ),
            ..Default::default()
        },
    );
    let ca = gw.ca_pem();
    let curl = || curl_models(&cg, &ip, &ca, &["-H", "authorization: Bearer dummy"]);
    for _ in 0..3 {
        let r = curl();
        assert!(r.stdout.ends_with("\n200"), "{r:?}\n{}", gw.raw_log());
    }
    for s in fake.seen() {
        assert_eq!(
            s.credentials(),
            vec![format!("authorization: Bearer {OPENAI_KEY}")]
        );
    }
    assert_eq!(vault.logins(), 1, "one AppRole login");
    assert_eq!(vault.reads(), 1, "the secret is cached");
    assert!(!gw.raw_log().contains(OPENAI_KEY));
    assert!(
        !gw.raw_log().contains("s.fake-client-token"),
        "the Vault token is never logged"
    );

    // A gateway whose Vault is unreachable answers 500 in the provider's shape and sends nothing.
    drop(gw);
    drop(vault);
    let before = fake.seen().len();
    let gw = Gateway::start_opts(
        &format!("{name}-b"),
        &cg.path,
        &format!("[[provider]]\nname = \"openai\"\naddrs = [\"{ip}/32\"]\n"),
        &Opts {
            extra_roots: vec![pki.ca_pem.clone()],
            builtin: true,
            extra: "[vault]\nbackend = \"hashicorp\"\n[vault.hashicorp]\naddr = \"http://127.0.0.1:9\"\ntoken_env = \"PATH\"\ntimeout = \"1s\"\n".into(),
            ..Default::default()
        },
    );
    let ca = gw.ca_pem();
    let r = curl_models(&cg, &ip, &ca, &["-H", "authorization: Bearer dummy"]);
    assert!(r.stdout.ends_with("\n500"), "{r:?}");
    assert!(r.stdout.contains("vault"), "{r:?}");
    assert_eq!(fake.seen().len(), before, "nothing forwarded without a key");
}

#[test]
fn upstream_connections_are_reused_team_keys_follow_the_caller_and_keys_cli_works() {
    let e = env_keys(&[
        ("openai", OPENAI_KEY),
        ("openai-nobody", "sk-vault-team-nobody"),
    ]);
    // keys CLI: list shows names only; set from env and stdin; rm.
    let out = e.gw.cli(&["keys", "list"]);
    let listed = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(
        listed.lines().collect::<Vec<_>>(),
        vec!["openai", "openai-nobody"],
        "{out:?}"
    );
    assert!(!listed.contains("sk-"));
    let set = std::process::Command::new(gateway_tests::gateway_bin())
        .args([
            "keys",
            "set",
            "extra",
            "--from-env",
            "GW_TEST_KEY_VALUE",
            "-c",
        ])
        .arg(&e.gw.config)
        .env("GW_TEST_KEY_VALUE", "sk-from-env")
        .output()
        .unwrap();
    assert!(
        set.status.success() && !String::from_utf8_lossy(&set.stdout).contains("sk-from-env"),
        "{set:?}"
    );
    let mut child = std::process::Command::new(gateway_tests::gateway_bin())
        .args(["keys", "set", "other", "--stdin", "-c"])
        .arg(&e.gw.config)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"sk-from-stdin\n")
        .unwrap();
    assert!(child.wait_with_output().unwrap().status.success());
    let vault_file = e.gw.dir.path().join("state/vault.toml");
    let text = std::fs::read_to_string(&vault_file).unwrap();
    assert!(
        text.contains("\"sk-from-stdin\"") && text.contains("\"sk-from-env\""),
        "{text}"
    );
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&vault_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(e.gw.cli(&["keys", "rm", "other"]).status.success());
    assert!(
        !e.gw.cli(&["keys", "rm", "other"]).status.success(),
        "removing twice fails"
    );

    // Upstream connections are kept alive and pooled per worker thread (client connections go
    // to the workers round robin): workers + 2 client connections, at most one new upstream
    // connection per worker.
    let workers = e.gw.fields("gateway ready")[0]["workers"]
        .as_u64()
        .expect("workers in the ready line") as usize;
    let conns = e.fakes.openai.connections();
    for _ in 0..workers + 2 {
        let r = e.curl(
            "api.openai.com",
            &e.fakes.ips[0],
            &["--http1.1"],
            "/v1/models",
        );
        assert_eq!(status(&r.stdout).0, 200, "{r:?}");
    }
    assert!(
        e.fakes.openai.connections() <= conns + workers,
        "the upstream connections were reused: {} new for {} clients on {workers} workers",
        e.fakes.openai.connections() - conns,
        workers + 2
    );
    // Streamed answers back to back on one client connection (one worker): one upstream
    // connection for all of them. The provider's stream is passed on to its real end (the fake
    // pauses 5 ms after `[DONE]` before it ends it), not cut at its closing event — cut there,
    // the upstream connection is still draining when the next request comes, and a new
    // one is opened for it.
    let chat_stream =
        r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let url = "https://api.openai.com/v1/chat/completions";
    let conns = e.fakes.openai.connections();
    let r = e.curl(
        "api.openai.com",
        &e.fakes.ips[0],
        &[
            "--http1.1",
            "-H",
            "content-type: application/json",
            "-d",
            chat_stream,
            url,
            url,
            url,
        ],
        "/v1/chat/completions",
    );
    assert_eq!(r.stdout.matches("data: [DONE]").count(), 4, "{r:?}");
    let new = e.fakes.openai.connections() - conns;
    assert!(
        new <= 1,
        "at most one new upstream connection for 4 streamed answers on one client connection: {new}"
    );

    // Team keys: a [[vault.select]] for uid 65534 (set up below) picks its own key.
    drop(e);
    let e = {
        let mut e = env_keys(&[
            ("openai", OPENAI_KEY),
            ("openai-nobody", "sk-vault-team-nobody"),
        ]);
        let cfg = std::fs::read_to_string(&e.gw.config).unwrap();
        let cfg = cfg.replacen(
            "[listen]",
            "[[vault.select]]\nprovider = \"openai\"\nuid = 65534\nkey = \"openai-nobody\"\n\n[listen]",
            1,
        );
        std::fs::write(&e.gw.config, cfg).unwrap();
        e.gw.kill9();
        e.gw.spawn();
        e
    };
    let resolve = format!("api.openai.com:443:{}", e.fakes.ips[0]);
    let bundle = e.ca.to_str().unwrap().to_string();
    let as_nobody = run(
        e.cg.command(
            "setpriv",
            &[
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "curl",
                "-sS",
                "--resolve",
                &resolve,
                "--cacert",
                &bundle,
                "-H",
                "authorization: Bearer dummy",
                "https://api.openai.com/v1/models",
            ],
        ),
        T,
    );
    assert!(as_nobody.ok, "{as_nobody:?}");
    assert_eq!(
        e.fakes.openai.seen().pop().unwrap().credentials(),
        vec!["authorization: Bearer sk-vault-team-nobody".to_string()]
    );
    let r = e.curl(
        "api.openai.com",
        &e.fakes.ips[0],
        &["-H", "authorization: Bearer dummy"],
        "/v1/models",
    );
    assert_eq!(status(&r.stdout).0, 200);
    assert_eq!(
        e.fakes.openai.seen().pop().unwrap().credentials(),
        vec![format!("authorization: Bearer {OPENAI_KEY}")]
    );
}

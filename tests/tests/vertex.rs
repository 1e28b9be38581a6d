//! Google Vertex AI end to end (issue H): the official `google-genai` SDK (`vertexai=True`) and
//! the Anthropic SDK's `AnthropicVertex`, unchanged, with a dummy OAuth token, from inside the
//! test cgroup. The gateway takes the dummy out, mints an access token from the service-account
//! key in the vault at the fake token endpoint, and masks secrets in prompts and in answers
//! (streamed, split across events). The vault entry is stored with `gateway keys set vertex
//! --stdin` from the key file as Google issues it.

use std::time::Duration;

use gateway_tests::{ClientRun, py_venv, run, vertex::VertexEnv};
use serde_json::Value;

const NET: u8 = 185;
const GH: &str = "ghp_aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE3fG5";
const AWS: &str = "AKIAIOSFODNN7EXAMPLE";
const PROMPT_KEY: &str = "sk-proj-Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0FeDcBaZx9Yw8Vu7Ts6Rq5Po4";
const WANT: &str = "Use [MASKED:github-classic-token] and [MASKED:aws-access-key-id] for that.";
const GEMINI_PATH: &str =
    "/v1/projects/proj-test/locations/us-central1/publishers/google/models/gemini-2.0-flash";

const PY_GENAI: &str = r#"
import json, sys
from google import genai
from google.oauth2.credentials import Credentials
prompt = sys.argv[1]
c = genai.Client(vertexai=True, project="proj-test", location="us-central1",
                 credentials=Credentials(token="ya29.dummy-from-the-job"))
plain = c.models.generate_content(model="gemini-2.0-flash", contents=prompt).text
stream = "".join((ch.text or "") for ch in c.models.generate_content_stream(model="gemini-2.0-flash", contents=prompt))
tokens = c.models.count_tokens(model="gemini-2.0-flash", contents=prompt).total_tokens
print(json.dumps({"plain": plain, "stream": stream, "tokens": tokens}))
"#;

const PY_CLAUDE: &str = r#"
import json, sys
from anthropic import AnthropicVertex
prompt = sys.argv[1]
c = AnthropicVertex(region="us-east5", project_id="proj-test", access_token="ya29.dummy-from-the-job")
msgs = [{"role": "user", "content": prompt}]
plain = c.messages.create(model="claude-sonnet-4@20250514", max_tokens=64, messages=msgs).content[0].text
with c.messages.stream(model="claude-sonnet-4@20250514", max_tokens=64, messages=msgs) as s:
    stream = "".join(s.text_stream)
print(json.dumps({"plain": plain, "stream": stream}))
"#;

fn python(e: &VertexEnv, script: &str, arg: &str) -> ClientRun {
    let py = py_venv().join("bin/python");
    let mut cmd =
        e.cg.command_with_hosts(&e.hosts, py.to_str().unwrap(), &["-c", script, arg]);
    cmd.env("SSL_CERT_FILE", &e.ca);
    run(cmd, Duration::from_secs(90))
}

/// curl from the cgroup to the regional host with a dummy token; (status, body).
fn curl(e: &VertexEnv, path: &str, body: &str) -> (u16, String) {
    let host = "us-central1-aiplatform.googleapis.com";
    let resolve = format!("{host}:443:{}", e.ip);
    let url = format!("https://{host}{path}");
    let r = run(
        e.cg.command(
            "curl",
            &[
                "-sS",
                "--max-time",
                "20",
                "--resolve",
                &resolve,
                "--cacert",
                e.ca.to_str().unwrap(),
                "-H",
                "authorization: Bearer ya29.dummy-from-the-job",
                "-H",
                "content-type: application/json",
                "-d",
                body,
                "-w",
                "\n%{http_code}",
                &url,
            ],
        ),
        Duration::from_secs(30),
    );
    assert!(r.ok, "curl: {r:?}\n{}", e.gw.raw_log());
    let (body, code) = r.stdout.trim_end().rsplit_once('\n').expect("status line");
    (code.parse().expect("status"), body.to_string())
}

#[test]
fn official_sdks_on_vertex_get_masked_answers_and_vertex_sees_only_the_minted_token() {
    gateway_tests::require_privileges();
    let _ = py_venv();
    let e = VertexEnv::start("gw-vtx", NET, "");
    let out = e.keys_set("vertex", &e.sa.json);
    assert!(out.status.success(), "keys set: {out:?}");
    e.vertex
        .set_reply(&format!("Use {GH} and {AWS} for that."), 5);
    let prompt = format!("my key is {PROMPT_KEY}, fix my code");

    for (label, script) in [("google-genai", PY_GENAI), ("anthropic-vertex", PY_CLAUDE)] {
        let r = python(&e, script, &prompt);
        assert!(r.ok, "{label}: {r:?}\n{}", e.gw.raw_log());
        let out: Value = serde_json::from_str(r.stdout.trim())
            .unwrap_or_else(|err| panic!("{label}: {err}: {r:?}"));
        assert_eq!(out["plain"], WANT, "{label}: {out}");
        assert_eq!(out["stream"], WANT, "{label}: {out}");
        if label == "google-genai" {
            assert_eq!(out["tokens"], 5, "{out}");
        }
    }
    // The JSON-array stream (no `alt=sse`), as REST clients ask for it.
    let (status, body) = curl(
        &e,
        &format!("{GEMINI_PATH}:streamGenerateContent"),
        r#"{"contents":[{"role":"user","parts":[{"text":"hi"}]}]}"#,
    );
    assert_eq!(status, 200, "{body}");
    let chunks: Vec<Value> = serde_json::from_str(&body).expect("one JSON array");
    assert!(chunks.len() > 5, "streamed in pieces: {body}");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["candidates"][0]["content"]["parts"][0]["text"].as_str())
        .collect();
    assert_eq!(text, WANT);

    // One mint served every request; the fake saw that token and nothing else.
    let minted = e.token.minted();
    assert_eq!(minted.len(), 1, "one mint (cached): {minted:?}");
    assert!(e.token.refused().is_empty(), "{:?}", e.token.refused());
    let seen = e.vertex.seen();
    assert_eq!(seen.len(), 6, "{seen:#?}");
    for s in &seen {
        assert_eq!(
            s.credentials(),
            vec![format!("authorization: Bearer {}", minted[0])],
            "{s:#?}"
        );
        let all = format!("{s:?}");
        assert!(
            !all.contains("dummy-from-the-job"),
            "a client token reached Vertex: {all}"
        );
        assert!(s.all("x-goog-user-project").is_empty());
    }
    let targets: Vec<&str> = seen.iter().map(|s| s.target.as_str()).collect();
    for want in [
        ":generateContent",
        ":streamGenerateContent?alt=sse",
        ":countTokens",
        "/publishers/anthropic/models/claude-sonnet-4@20250514:rawPredict",
        "/publishers/anthropic/models/claude-sonnet-4@20250514:streamRawPredict",
    ] {
        assert!(
            targets.iter().any(|t| t.contains(want)),
            "{want} not in {targets:?}"
        );
    }
    let snis: Vec<&str> = seen.iter().filter_map(|s| s.sni.as_deref()).collect();
    assert!(
        snis.contains(&"us-central1-aiplatform.googleapis.com"),
        "{snis:?}"
    );
    assert!(
        snis.contains(&"us-east5-aiplatform.googleapis.com"),
        "{snis:?}"
    );
    // The prompt went with its key masked (the curl request carried none).
    for s in seen
        .iter()
        .filter(|s| !s.body.windows(2).any(|w| w == b"hi"))
    {
        let body = String::from_utf8_lossy(&s.body);
        assert!(!body.contains(PROMPT_KEY), "{body}");
        assert!(
            body.contains("[MASKED:openai-api-key]"),
            "{}: {body}",
            s.target
        );
    }
    let claude = seen
        .iter()
        .find(|s| s.target.ends_with(":streamRawPredict"))
        .unwrap();
    let body: Value = serde_json::from_slice(&claude.body).unwrap();
    // The Anthropic Messages body of Vertex: the version in it, the model in the path.
    assert!(
        body["anthropic_version"]
            .as_str()
            .is_some_and(|v| !v.is_empty())
            && body.get("model").is_none(),
        "{body}"
    );

    // Neither the token nor the key is in the log; the mint is.
    let log = e.gw.raw_log();
    assert!(!log.contains(&minted[0]), "the minted token is in the log");
    assert!(
        !log.contains("PRIVATE KEY"),
        "the service-account key is in the log"
    );
    assert!(log.contains("minted a Google access token"), "{log}");
    // The vault stores the key file as one line.
    let vault = std::fs::read_to_string(e.gw.dir.path().join("state/vault.toml")).unwrap();
    assert_eq!(
        vault.lines().filter(|l| l.starts_with("vertex = ")).count(),
        1,
        "{}",
        vault.len()
    );
}

#[test]
fn bad_service_account_keys_are_clear_errors_and_nothing_reaches_vertex() {
    gateway_tests::require_privileges();
    let e = VertexEnv::start("gw-vtx", NET, "");
    const MARK: &str = "SECRETMARKER4242";
    // Refused at `keys set`: not a key file, or a broken one; the error names the mistake,
    // never a value.
    let out = e.keys_set("vertex", &format!("ya29.{MARK}"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("service-account JSON key"),
        "{out:?}"
    );
    assert!(!err.contains(MARK), "{err}");
    let broken = e.sa.json.replace(
        "\"type\": \"service_account\"",
        "\"type\": \"authorized_user\"",
    );
    let broken = broken.replace(
        "\"client_id\"",
        &format!("\"refresh_token\": \"{MARK}\", \"client_id\""),
    );
    let out = e.keys_set("vertex", &broken);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("not \"service_account\""),
        "{out:?}"
    );
    assert!(!err.contains(MARK) && !err.contains("PRIVATE KEY"), "{err}");
    assert!(
        !e.gw.dir.path().join("state/vault.toml").exists() || {
            let v = std::fs::read_to_string(e.gw.dir.path().join("state/vault.toml")).unwrap();
            !v.contains("vertex")
        }
    );

    let body = r#"{"contents":[{"role":"user","parts":[{"text":"hi"}]}]}"#;
    let path = format!("{GEMINI_PATH}:generateContent");
    // A well-formed key the token endpoint does not accept (its signature is not the
    // account's): a 502 naming the entry and the endpoint's reason.
    let out = e.keys_set("vertex", &e.impostor.json);
    assert!(out.status.success(), "{out:?}");
    let (status, text) = curl(&e, &path, body);
    assert_eq!(status, 502, "{text}");
    let v: Value = serde_json::from_str(&text).expect("JSON error");
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("vault entry `vertex`")
            && msg.contains("invalid_grant")
            && msg.contains("Invalid JWT Signature"),
        "{msg}"
    );
    assert_eq!(v["error"]["status"], "UNAVAILABLE", "{v}");
    assert_eq!(
        e.token.refused(),
        vec!["Invalid JWT Signature.".to_string()]
    );
    assert!(e.gw.raw_log().contains("no access token minted"));

    // A key edited by hand into the vault file (no `keys set` check): a 503 that says what
    // is wrong with the entry.
    let vault = e.gw.dir.path().join("state/vault.toml");
    let tmp = e.gw.dir.path().join("state/vault.toml.new");
    std::fs::write(
        &tmp,
        format!("[keys]\nvertex = {:?}\n", format!("{{\"type\":\"service_account\",\"client_email\":\"a@b.iam.gserviceaccount.com\",\"private_key_id\":\"{MARK}\"}}")),
    )
    .unwrap();
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    std::fs::rename(&tmp, &vault).unwrap();
    let t = std::time::Instant::now();
    let (status, text) = loop {
        let (status, text) = curl(&e, &path, body);
        // The watcher may take a moment to see the new file.
        if status != 502 || t.elapsed() > Duration::from_secs(5) {
            break (status, text);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status, 503, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("vault entry `vertex`")
            && msg.contains("no `private_key`")
            && !msg.contains(MARK),
        "{msg}"
    );
    assert!(
        e.vertex.seen().is_empty(),
        "nothing was sent: {:#?}",
        e.vertex.seen()
    );

    // The right key: the next request gets a token and its answer.
    let out = e.keys_set("vertex", &e.sa.json);
    assert!(out.status.success(), "{out:?}");
    let (status, text) = curl(&e, &path, body);
    assert_eq!(status, 200, "{text}\n{}", e.gw.raw_log());
    assert_eq!(e.token.minted().len(), 1);
    let seen = e.vertex.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].credentials(),
        vec![format!("authorization: Bearer {}", e.token.minted()[0])]
    );
    assert!(!e.gw.raw_log().contains(MARK));
}

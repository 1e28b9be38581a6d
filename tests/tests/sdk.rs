//! The official SDKs, unchanged, calling their default base URLs from inside the cgroup:
//! Python `openai`, `anthropic`, `google-genai` (venv from PyPI) with only SSL_CERT_FILE set to
//! the gateway CA, and Node `openai` (npm) with only NODE_EXTRA_CA_CERTS. Names resolve to the
//! fake providers through a hosts file bind-mounted in a private mount namespace.

use std::time::Duration;

use gateway_tests::{
    node_sdk,
    provider::{ProviderEnv, REPLY},
    py_venv, run,
};

const OPENAI_KEY: &str = "sk-vault-sdk-openai-91ab";
const ANTHROPIC_KEY: &str = "sk-ant-vault-sdk-22cd";
const GEMINI_KEY: &str = "AIza-vault-sdk-33ef";

const PY_OPENAI: &str = r#"
import json, openai
c = openai.OpenAI(api_key="sk-dummy-from-the-job")
msgs = [{"role": "user", "content": "hi"}]
plain = c.chat.completions.create(model="gpt-4o-mini", messages=msgs).choices[0].message.content
stream = "".join((ch.choices[0].delta.content or "") for ch in c.chat.completions.create(model="gpt-4o-mini", messages=msgs, stream=True) if ch.choices)
models = [m.id for m in c.models.list()]
print(json.dumps({"plain": plain, "stream": stream, "models": models}))
"#;

const PY_ANTHROPIC: &str = r#"
import json, anthropic
c = anthropic.Anthropic(api_key="sk-ant-dummy-from-the-job")
msgs = [{"role": "user", "content": "hi"}]
plain = c.messages.create(model="claude-x", max_tokens=16, messages=msgs).content[0].text
with c.messages.stream(model="claude-x", max_tokens=16, messages=msgs) as s:
    stream = "".join(s.text_stream)
print(json.dumps({"plain": plain, "stream": stream}))
"#;

const PY_GENAI: &str = r#"
import json
from google import genai
c = genai.Client(api_key="AIza-dummy-from-the-job")
plain = c.models.generate_content(model="gemini-x", contents="hi").text
stream = "".join((ch.text or "") for ch in c.models.generate_content_stream(model="gemini-x", contents="hi"))
print(json.dumps({"plain": plain, "stream": stream}))
"#;

const NODE_OPENAI: &str = r#"
import OpenAI from 'openai';
const c = new OpenAI({ apiKey: 'sk-dummy-from-the-job' });
const msgs = [{ role: 'user', content: 'hi' }];
const plain = (await c.chat.completions.create({ model: 'gpt-4o-mini', messages: msgs })).choices[0].message.content;
let stream = '';
for await (const ch of await c.chat.completions.create({ model: 'gpt-4o-mini', messages: msgs, stream: true })) {
  stream += ch.choices[0]?.delta?.content ?? '';
}
console.log(JSON.stringify({ plain, stream }));
"#;

#[test]
fn official_sdks_get_answers_and_providers_only_ever_see_the_vault_keys() {
    gateway_tests::require_privileges();
    let venv = py_venv();
    let node = node_sdk();
    let env = ProviderEnv::start(
        "gw-sdk",
        30,
        "",
        &[
            ("openai", OPENAI_KEY),
            ("anthropic", ANTHROPIC_KEY),
            ("gemini", GEMINI_KEY),
        ],
    );
    let (gw, cg, hosts, ca) = (&env.gw, &env.cg, env.hosts.as_path(), env.ca.as_path());
    let (openai, anthropic, gemini) = (&env.fakes.openai, &env.fakes.anthropic, &env.fakes.gemini);
    let py = venv.join("bin/python");
    let t = Duration::from_secs(60);

    for (label, script) in [
        ("openai", PY_OPENAI),
        ("anthropic", PY_ANTHROPIC),
        ("google-genai", PY_GENAI),
    ] {
        let mut cmd = cg.command_with_hosts(hosts, py.to_str().unwrap(), &["-c", script]);
        cmd.env("SSL_CERT_FILE", ca);
        let r = run(cmd, t);
        assert!(r.ok, "{label}: {r:?}\n{}", gw.raw_log());
        let out: serde_json::Value =
            serde_json::from_str(r.stdout.trim()).unwrap_or_else(|e| panic!("{label}: {e}: {r:?}"));
        assert_eq!(out["plain"], REPLY, "{label}: {out}");
        assert_eq!(out["stream"], REPLY, "{label}: {out}");
    }

    let mut cmd = cg.command_with_hosts(hosts, "node", &["--input-type=module", "-e", NODE_OPENAI]);
    cmd.current_dir(&node).env("NODE_EXTRA_CA_CERTS", ca);
    let r = run(cmd, t);
    assert!(r.ok, "node: {r:?}\n{}", gw.raw_log());
    let out: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
    assert_eq!(out["plain"], REPLY);
    assert_eq!(out["stream"], REPLY);

    for (fake, want) in [
        (openai, format!("authorization: Bearer {OPENAI_KEY}")),
        (anthropic, format!("x-api-key: {ANTHROPIC_KEY}")),
        (gemini, format!("x-goog-api-key: {GEMINI_KEY}")),
    ] {
        let seen = fake.seen();
        assert!(!seen.is_empty());
        for s in &seen {
            assert_eq!(s.credentials(), vec![want.clone()], "{s:#?}");
            let all = format!("{s:?}");
            assert!(
                !all.contains("dummy-from-the-job"),
                "a client key reached a provider: {all}"
            );
        }
    }
    // The SDK processes were attributed: comm and pid of each client are in the log.
    let comms: Vec<String> = gw
        .fields("connection accepted")
        .iter()
        .filter_map(|f| f["comm"].as_str().map(str::to_string))
        .collect();
    assert!(comms.iter().any(|c| c.starts_with("python")), "{comms:?}");
    assert!(
        comms
            .iter()
            .any(|c| c == "node" || c.starts_with("MainThread") || c.contains("node")),
        "{comms:?}"
    );

    // No vault key anywhere but the vault file: not in the log, not in the state dir.
    let log = gw.raw_log();
    for key in [OPENAI_KEY, ANTHROPIC_KEY, GEMINI_KEY] {
        assert!(!log.contains(key), "vault key in the gateway log");
        for entry in walk(&gw.dir.path().join("state")) {
            if entry.file_name().is_some_and(|n| n == "vault.toml") {
                continue;
            }
            let bytes = std::fs::read(&entry).unwrap_or_default();
            assert!(
                !String::from_utf8_lossy(&bytes).contains(key),
                "vault key found in {}",
                entry.display()
            );
        }
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

//! Issue C end to end: secrets in prompts and in answers, through the real redirect, the real
//! gateway and the official SDKs. The fake providers answer with a text the test chooses
//! (`x-test-reply-hex`), cut into events of a few characters (`x-test-chunk`), so secrets arrive
//! split across events.

use std::time::Duration;

use gateway_tests::{provider::ProviderEnv, py_venv, run, unique};

const OPENAI_KEY: &str = "sk-vault-policy-openai-51";
const ANTHROPIC_KEY: &str = "sk-ant-vault-policy-52";
const GEMINI_KEY: &str = "AIza-vault-policy-53";
const GH: &str = "ghp_aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE3fG5";
const AWS: &str = "AKIAIOSFODNN7EXAMPLE";
const PROMPT_KEY: &str = "sk-proj-Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0FeDcBaZx9Yw8Vu7Ts6Rq5Po4";

type Env = ProviderEnv;

fn env(rules: &str) -> Env {
    ProviderEnv::start(
        "gw-pol",
        50,
        rules,
        &[
            ("openai", OPENAI_KEY),
            ("anthropic", ANTHROPIC_KEY),
            ("gemini", GEMINI_KEY),
        ],
    )
}

const PY: &str = r#"
import json, sys, openai, anthropic
reply, chunk, prompt = sys.argv[1], sys.argv[2], sys.argv[3]
h = {"x-test-reply-hex": reply.encode().hex(), "x-test-chunk": chunk}
msgs = [{"role": "user", "content": prompt}]
c = openai.OpenAI(api_key="sk-dummy")
plain = c.chat.completions.create(model="m", messages=msgs, extra_headers=h).choices[0].message.content
stream = "".join((ch.choices[0].delta.content or "") for ch in c.chat.completions.create(model="m", messages=msgs, stream=True, extra_headers=h) if ch.choices)
a = anthropic.Anthropic(api_key="sk-ant-dummy")
with a.messages.stream(model="claude-x", max_tokens=16, messages=msgs, extra_headers=h) as s:
    astream = "".join(s.text_stream)
aplain = a.messages.create(model="claude-x", max_tokens=16, messages=msgs, extra_headers=h).content[0].text
print(json.dumps({"plain": plain, "stream": stream, "anthropic": astream, "anthropic_plain": aplain}))
"#;

fn curl(e: &Env, host: &str, ip: &str, path: &str, extra: &[&str]) -> gateway_tests::ClientRun {
    let resolve = format!("{host}:443:{ip}");
    let url = format!("https://{host}{path}");
    let mut args = vec![
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
    run(e.cg.command("curl", &args), Duration::from_secs(20))
}

#[test]
fn secrets_are_masked_in_prompts_and_in_streamed_answers_split_across_events() {
    let e = env("");
    let py = py_venv().join("bin/python");
    let reply = format!("Use {GH} and {AWS} for that.");
    let want = "Use [MASKED:github-classic-token] and [MASKED:aws-access-key-id] for that.";
    for chunk in ["3", "7"] {
        let prompt = format!("my key is {PROMPT_KEY}, fix my code");
        let mut cmd = e.cg.command_with_hosts(
            &e.hosts,
            py.to_str().unwrap(),
            &["-c", PY, &reply, chunk, &prompt],
        );
        cmd.env("SSL_CERT_FILE", &e.ca);
        let r = run(cmd, Duration::from_secs(60));
        assert!(r.ok, "{r:?}\n{}", e.gw.raw_log());
        let out: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
        for k in ["plain", "stream", "anthropic", "anthropic_plain"] {
            assert_eq!(out[k], want, "{k} (chunk {chunk}): {out}");
        }
    }
    // The providers got the prompt with the key masked, never the key.
    for fake in [&e.fakes.openai, &e.fakes.anthropic] {
        let seen = fake.seen();
        assert!(!seen.is_empty());
        for s in &seen {
            let body = String::from_utf8_lossy(&s.body);
            assert!(!body.contains(PROMPT_KEY), "{body}");
            assert!(body.contains("[MASKED:openai-api-key]"), "{body}");
            // The body was re-encoded and its length fixed.
            let cl = s.headers.iter().find(|(n, _)| n == "content-length");
            assert_eq!(cl.map(|c| c.1.clone()), Some(s.body.len().to_string()));
        }
    }
    // Gemini, both stream forms, with curl.
    for (q, label) in [("?alt=sse", "sse"), ("", "json-array")] {
        let r = curl(
            &e,
            "generativelanguage.googleapis.com",
            &e.fakes.ips[2],
            &format!("/v1beta/models/gemini-x:streamGenerateContent{q}"),
            &[
                "-H",
                &format!(
                    "x-test-reply-hex: {}",
                    gateway_tests::provider::reply_hex(&reply)
                ),
                "-H",
                "x-test-chunk: 5",
                "-H",
                "content-type: application/json",
                "-d",
                r#"{"contents":[{"parts":[{"text":"hi"}]}]}"#,
            ],
        );
        assert!(r.stdout.ends_with("\n200"), "{label}: {r:?}");
        assert!(
            !r.stdout.contains(GH) && !r.stdout.contains(AWS),
            "{label}: {r:?}"
        );
        let body = r.stdout.rsplit_once('\n').unwrap().0;
        let elems: Vec<serde_json::Value> = if label == "sse" {
            body.split("\n\n")
                .filter_map(|ev| ev.trim().strip_prefix("data: "))
                .map(|d| serde_json::from_str(d).unwrap())
                .collect()
        } else {
            serde_json::from_str::<serde_json::Value>(body)
                .unwrap_or_else(|err| panic!("{label}: {err}: {body}"))
                .as_array()
                .unwrap()
                .clone()
        };
        let text: String = elems
            .iter()
            .filter_map(|v| v.pointer("/candidates/0/content/parts/0/text"))
            .filter_map(|t| t.as_str())
            .collect();
        assert_eq!(text, want, "{label}");
    }
    assert!(!e.gw.raw_log().contains(GH));
    assert!(!e.gw.raw_log().contains(PROMPT_KEY));
}

#[test]
fn block_rules_and_unparseable_prompts_are_refused_before_anything_is_sent() {
    let e = env(
        "[[rule]]\nname = \"no-cloud-keys\"\ndetector = \"aws-access-key-id\"\naction = \"block\"\non = [\"request\"]\n\
         [[rule]]\nname = \"customer\"\npattern = \"CUST-[0-9]{8}\"\n",
    );
    let chat = |body: &str| {
        curl(
            &e,
            "api.openai.com",
            &e.fakes.ips[0],
            "/v1/chat/completions",
            &["-H", "content-type: application/json", "-d", body],
        )
    };
    let r = chat(&format!(
        r#"{{"model":"m","messages":[{{"role":"user","content":"deploy with {AWS}"}}]}}"#
    ));
    assert!(r.stdout.ends_with("\n403"), "{r:?}");
    let body: serde_json::Value =
        serde_json::from_str(r.stdout.rsplit_once('\n').unwrap().0).unwrap();
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(msg.contains("no-cloud-keys") && !msg.contains(AWS), "{msg}");
    assert_eq!(body["error"]["code"], "blocked_by_policy");

    let r = chat("{not json");
    assert!(r.stdout.ends_with("\n400"), "{r:?}");
    assert!(r.stdout.contains("not valid JSON"), "{r:?}");
    assert!(
        e.fakes.openai.seen().is_empty(),
        "nothing reached the provider"
    );

    // A second daemon on the same state dir stops before touching anything.
    let second = run(
        {
            let mut c = std::process::Command::new(gateway_tests::gateway_bin());
            c.args(["run", "-c"])
                .arg(e.gw.dir.path().join("gateway.toml"));
            c
        },
        Duration::from_secs(20),
    );
    assert!(!second.ok, "{second:?}");
    assert!(
        second
            .stderr
            .contains("another gateway daemon serves this state dir"),
        "{second:?}"
    );

    // The custom rule masks both ways; built-ins are off when rules are given.
    let r = chat(
        r#"{"model":"m","messages":[{"role":"user","content":"order CUST-12345678 and ghp_x"}]}"#,
    );
    assert!(r.stdout.ends_with("\n200"), "{r:?}");
    let seen = e.fakes.openai.seen();
    let sent = String::from_utf8_lossy(&seen[0].body);
    assert!(sent.contains("order [MASKED:customer] and ghp_x"), "{sent}");
}

const PY_HELD: &str = r#"
import json, sys, openai
c = openai.OpenAI(api_key="sk-dummy", max_retries=0, timeout=60)
try:
    r = c.chat.completions.create(model="gpt-x", messages=[{"role": "user", "content": sys.argv[1]}])
    print(json.dumps({"ok": r.choices[0].message.content}))
except openai.APIStatusError as e:
    print(json.dumps({"status": e.status_code, "error": str(e)}))
"#;

/// `gateway approvals <args>` as `uid` (root when 0).
fn approvals_as(e: &Env, uid: u32, args: &[&str]) -> std::process::Output {
    let bin = gateway_tests::gateway_bin();
    let cfg = e.gw.dir.path().join("gateway.toml");
    let mut all: Vec<String> = vec![
        format!("--reuid={uid}"),
        format!("--regid={uid}"),
        "--clear-groups".into(),
        bin.to_str().unwrap().into(),
        "approvals".into(),
    ];
    all.extend(args.iter().map(|s| s.to_string()));
    all.extend(["-c".into(), cfg.to_str().unwrap().into()]);
    std::process::Command::new("setpriv")
        .args(&all)
        .output()
        .expect("setpriv")
}

fn holds(e: &Env) -> Vec<serde_json::Value> {
    let out = e.gw.cli(&["approvals", "list", "--json"]);
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .unwrap()
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn wait_holds(e: &Env, n: usize) -> Vec<serde_json::Value> {
    let end = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let h = holds(e);
        if h.len() == n {
            return h;
        }
        assert!(
            std::time::Instant::now() < end,
            "wanted {n} holds, have {h:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A webhook receiver on loopback: every POST body, answered 204.
fn webhook_receiver(addr: &str) -> std::sync::mpsc::Receiver<String> {
    use std::io::{Read as _, Write as _};
    let hook = std::net::TcpListener::bind(addr).unwrap();
    let (hook_tx, hook_rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for s in hook.incoming().flatten() {
            let mut s = s;
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = vec![0u8; 65536];
            let mut got = Vec::new();
            while let Ok(k) = s.read(&mut buf) {
                if k == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..k]);
                let text = String::from_utf8_lossy(&got).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if body.len() >= len {
                        let _ =
                            s.write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n");
                        let _ = hook_tx.send(body.to_string());
                        break;
                    }
                }
            }
        }
    });
    hook_rx
}

#[test]
fn held_requests_wait_for_approval_deny_time_out_and_withdraw() {
    use std::os::unix::fs::PermissionsExt as _;
    let n = unique();
    let hook_addr = format!("127.50.{n}.9:8080");
    let hook_rx = webhook_receiver(&hook_addr);
    let e = env(&format!(
        "[hold]\nkeywords = [\"production database\"]\ntimeout = \"4s\"\napprovers = [\"nobody\"]\nwebhook = \"http://{hook_addr}/hook\"\n\
         # The same prompt is approved, denied, then left to time out: no decision reused.\n\
         approval_ttl = \"0s\"\nkeepalive = \"1s\"\n"
    ));
    // Let other users reach the admin socket (the test's temp dir is private).
    for d in [e.gw.dir.path().to_path_buf(), e.gw.dir.path().join("state")] {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(
        e.gw.dir.path().join("gateway.toml"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let py = py_venv().join("bin/python");
    let sdk = |prompt: &str| {
        let mut cmd =
            e.cg.command_with_hosts(&e.hosts, py.to_str().unwrap(), &["-c", PY_HELD, prompt]);
        cmd.env("SSL_CERT_FILE", &e.ca)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        cmd.spawn().unwrap()
    };
    let result = |c: std::process::Child| -> serde_json::Value {
        let out = c.wait_with_output().unwrap();
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|err| panic!("{err}: {out:?}\n{}", e.gw.raw_log()))
    };
    let secret = format!("ghp_{}", "aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE3fG5");
    let prompt = format!("please drop the production database, token {secret}");

    // Approve: nothing reaches the provider while held; an outsider cannot approve; an
    // approver (uid 65534, "nobody") can.
    let c = sdk(&prompt);
    let h = wait_holds(&e, 1);
    let id = h[0]["id"].to_string();
    assert_eq!(h[0]["provider"], "openai");
    assert_eq!(h[0]["model"], "gpt-x");
    assert!(
        h[0]["reason"]
            .as_str()
            .unwrap()
            .contains("production database")
    );
    let excerpt = h[0]["excerpt"].as_str().unwrap();
    assert!(
        excerpt.contains("[MASKED:github-classic-token]") && !excerpt.contains(&secret),
        "{excerpt}"
    );
    assert!(e.fakes.openai.seen().is_empty(), "held means nothing sent");
    let hook_body = hook_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("webhook called");
    let hook: serde_json::Value = serde_json::from_str(&hook_body).unwrap();
    assert_eq!(hook["id"].to_string(), id);
    assert_eq!(hook["identity"]["uid"], 0);
    assert!(!hook_body.contains(&secret));
    let out = approvals_as(&e, 65533, &["approve", &id]);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not an approver"),
        "{out:?}"
    );
    let out = approvals_as(&e, 65534, &["approve", &id]);
    assert!(out.status.success(), "{out:?}");
    let r = result(c);
    assert_eq!(r["ok"], gateway_tests::provider::REPLY, "{r}");
    assert_eq!(e.fakes.openai.seen().len(), 1);

    // Deny, with a reason.
    let c = sdk(&prompt);
    let id = wait_holds(&e, 1)[0]["id"].to_string();
    let out =
        e.gw.cli(&["approvals", "deny", &id, "--reason", "not on a Friday"]);
    assert!(out.status.success(), "{out:?}");
    let r = result(c);
    assert_eq!(r["status"], 403, "{r}");
    assert!(
        r["error"].as_str().unwrap().contains("not on a Friday"),
        "{r}"
    );

    // Timeout (4 s).
    let c = sdk(&prompt);
    wait_holds(&e, 1);
    let r = result(c);
    assert_eq!(r["status"], 403, "{r}");
    assert!(
        r["error"].as_str().unwrap().contains("not approved within"),
        "{r}"
    );
    assert!(holds(&e).is_empty());

    // Three at once (the same request from the same caller: one hold, three waiting), then
    // their clients hang up (curl gives up after 1 s): withdrawn.
    let body = r#"{"model":"m","messages":[{"role":"user","content":"the production database"}]}"#;
    let resolve = format!("api.openai.com:443:{}", e.fakes.ips[0]);
    let curls: Vec<_> = (0..3)
        .map(|_| {
            e.cg.command(
                "curl",
                &[
                    "-sS",
                    "--max-time",
                    "1",
                    "--resolve",
                    &resolve,
                    "--cacert",
                    e.ca.to_str().unwrap(),
                    "-H",
                    "content-type: application/json",
                    "-d",
                    body,
                    "https://api.openai.com/v1/chat/completions",
                ],
            )
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
        })
        .collect();
    let end = std::time::Instant::now() + Duration::from_secs(30);
    while wait_holds(&e, 1)[0]["waiting"] != 3 {
        assert!(std::time::Instant::now() < end, "{:?}", holds(&e));
        std::thread::sleep(Duration::from_millis(50));
    }
    for mut c in curls {
        let _ = c.wait();
    }
    wait_holds(&e, 0);
    assert_eq!(
        e.fakes.openai.seen().len(),
        1,
        "only the approved request was sent"
    );

    // The journal and the metrics agree on how every hold ended.
    let outcomes = ["approved", "denied", "timed_out", "withdrawn"];
    let mut journaled = Vec::new();
    for _ in 0..50 {
        let out = e.gw.cli(&["journal", "list", "--json"]);
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        journaled = outcomes
            .iter()
            .map(|o| {
                list.as_array()
                    .unwrap()
                    .iter()
                    .filter(|r| r["approval"]["outcome"] == *o)
                    .count() as f64
            })
            .collect();
        if journaled[3] >= 3.0 {
            // Who decided, and when.
            let approved: Vec<&serde_json::Value> = list
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| r["approval"]["outcome"] == "approved")
                .collect();
            for r in approved {
                assert!(r["approval"]["by"].as_str().is_some(), "{r}");
                assert!(r["approval"]["at"].as_str().unwrap().ends_with('Z'), "{r}");
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let text = e.gw.metrics_text();
    let value = |name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let counted: Vec<f64> = outcomes
        .iter()
        .map(|o| value(&format!("gateway_holds_total{{outcome=\"{o}\"}}")))
        .collect();
    assert_eq!(counted, journaled, "{text}");
    assert!(
        counted.iter().all(|&n| n >= 1.0) && counted[3] == 3.0,
        "{counted:?}"
    );
    assert_eq!(
        value("gateway_holds_total{outcome=\"held\"}"),
        counted.iter().sum::<f64>()
    );
    assert_eq!(value("gateway_holds_pending "), 0.0, "{text}");
}

/// Issue G (items 3, 7): what approvers see is masked and printable, the requester cannot
/// approve their own request (root here) unless `hold.self_approval`, ids continue across a
/// restart, and `hold.max_pending` refuses one more at once with nothing sent.
#[test]
fn holds_are_masked_printable_not_self_approved_bounded_and_ids_survive_restarts() {
    let n = unique();
    let hook_addr = format!("127.140.{n}.9:8080");
    let hook_rx = webhook_receiver(&hook_addr);
    let mut e = ProviderEnv::start(
        "gw-hold",
        140,
        &format!(
            "[hold]\nkeywords = [\"production database\"]\ntimeout = \"30s\"\nmax_pending = 1\nself_approval = false\nwebhook = \"http://{hook_addr}/hook\"\n"
        ),
        &[("openai", OPENAI_KEY)],
    );
    // The prompt carries a token and terminal escapes: clear the screen, set the window title,
    // a bidi override. JSON escapes keep curl's argument plain ASCII.
    let body = format!(
        r#"{{"model":"m","messages":[{{"role":"user","content":"drop the production database\u001b[2J\u001b]0;pwned\u0007 now, token {GH} \u202egnp.exe"}}]}}"#
    );
    let resolve = format!("api.openai.com:443:{}", e.fakes.ips[0]);
    let spawn = |e: &Env| {
        e.cg.command(
            "curl",
            &[
                "-sS",
                "--max-time",
                "40",
                "--resolve",
                &resolve,
                "--cacert",
                e.ca.to_str().unwrap(),
                "-w",
                "\n%{http_code}",
                "-H",
                "content-type: application/json",
                "-d",
                &body,
                "https://api.openai.com/v1/chat/completions",
            ],
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
    };
    let finish = |c: std::process::Child| {
        let out = c.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let raw_escape =
        |s: &str| s.contains('\u{1b}') || s.contains('\u{7}') || s.contains('\u{202e}');

    let first = spawn(&e);
    let h = wait_holds(&e, 1);
    let id1: u64 = h[0]["id"].as_u64().unwrap();
    let excerpt = h[0]["excerpt"].as_str().unwrap();
    assert!(
        excerpt.contains("[MASKED:github-classic-token]")
            && excerpt.contains("\\x1b[2J")
            && excerpt.contains("\\x1b]0;pwned\\x07")
            && excerpt.contains("\\u{202e}"),
        "{excerpt}"
    );
    // The text form and the JSON form, byte for byte: no secret, no raw escape.
    for args in [&["approvals", "list"][..], &["approvals", "list", "--json"]] {
        let out = e.gw.cli(args);
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(!text.contains(GH) && !raw_escape(&text), "{args:?}: {text}");
        assert!(text.contains("x1b[2J"), "{args:?}: {text}");
    }
    // The webhook body too.
    let hook_body = hook_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("webhook called");
    let hook: serde_json::Value = serde_json::from_str(&hook_body).unwrap();
    assert_eq!(hook["id"], id1);
    let hook_excerpt = hook["excerpt"].as_str().unwrap();
    assert!(
        !hook_body.contains(GH) && !raw_escape(hook_excerpt),
        "{hook_body}"
    );
    assert!(hook_excerpt.contains("\\x1b[2J"), "{hook_body}");

    // max_pending = 1: a second held request is refused at once, nothing sent.
    let t = std::time::Instant::now();
    let r = curl(
        &e,
        "api.openai.com",
        &e.fakes.ips[0],
        "/v1/chat/completions",
        &["-H", "content-type: application/json", "-d", &body],
    );
    assert!(r.stdout.ends_with("\n429"), "{r:?}");
    assert!(t.elapsed() < Duration::from_secs(10), "refused at once");
    let refusal: serde_json::Value =
        serde_json::from_str(r.stdout.rsplit_once('\n').unwrap().0).unwrap();
    let msg = refusal["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("too many requests are waiting for approval")
            && msg.contains("nothing was sent")
            && !msg.contains(GH),
        "{msg}"
    );
    assert_eq!(holds(&e).len(), 1, "the refused request was not held");

    // root made the request: root approving it is self-approval, refused; the hold stays.
    let out = e.gw.cli(&["approvals", "approve", &id1.to_string()]);
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("your own") && err.contains("hold.self_approval"),
        "{err}"
    );
    assert_eq!(holds(&e).len(), 1);
    // Denying one's own request is allowed.
    let out = e.gw.cli(&["approvals", "deny", &id1.to_string()]);
    assert!(out.status.success(), "{out:?}");
    let r = finish(first);
    assert!(r.ends_with("\n403"), "{r}");
    assert!(e.fakes.openai.seen().is_empty(), "nothing was sent");

    // Restart with self-approval allowed: ids continue, and root may approve its own request.
    let cfg = e.gw.dir.path().join("gateway.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(text.contains("self_approval = false"));
    std::fs::write(
        &cfg,
        text.replace("self_approval = false", "self_approval = true"),
    )
    .unwrap();
    e.gw.terminate(Duration::from_secs(10));
    e.gw.spawn();
    let second = spawn(&e);
    let id2: u64 = wait_holds(&e, 1)[0]["id"].as_u64().unwrap();
    assert_ne!(id2, id1, "a restarted gateway reused hold id {id1}");
    assert!(id2 > id1 && id2 < 10_000, "{id1} then {id2}");
    // The old id names nothing now.
    let out = e.gw.cli(&["approvals", "approve", &id1.to_string()]);
    assert!(!out.status.success(), "{out:?}");
    assert_eq!(holds(&e).len(), 1);
    let out = e.gw.cli(&["approvals", "approve", &id2.to_string()]);
    assert!(out.status.success(), "{out:?}");
    let r = finish(second);
    assert!(r.ends_with("\n200"), "{r}\n{}", e.gw.raw_log());
    let seen = e.fakes.openai.seen();
    assert_eq!(seen.len(), 1, "only the approved request was sent");
    let sent = String::from_utf8_lossy(&seen[0].body);
    assert!(
        !sent.contains(GH) && sent.contains("[MASKED:github-classic-token]"),
        "{sent}"
    );
    assert!(!e.gw.raw_log().contains(GH));
}

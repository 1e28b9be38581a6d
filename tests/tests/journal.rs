//! Issue D end to end: every exchange made by real clients (curl, the official Python SDKs)
//! through the real redirect and gateway is in the sled journal, attributed to the client's
//! process, with masked bodies and no vault key, chained by hash; tampering is found; a kill -9
//! loses no exchange the client saw complete; a recorded stream replays to the same bytes.

use std::time::Duration;

use gateway_tests::{provider::ProviderEnv, py_venv, run};
use serde_json::Value;

const OPENAI_KEY: &str = "sk-vault-journal-openai-61";
const ANTHROPIC_KEY: &str = "sk-ant-vault-journal-62";
const GH: &str = "ghp_aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE3fG5";
const PROMPT_KEY: &str = "sk-proj-Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0FeDcBaZx9Yw8Vu7Ts6Rq5Po4";

fn env(extra: &str) -> ProviderEnv {
    ProviderEnv::start(
        "gw-jnl",
        60,
        extra,
        &[("openai", OPENAI_KEY), ("anthropic", ANTHROPIC_KEY)],
    )
}

fn cli_json(e: &ProviderEnv, args: &[&str]) -> Value {
    let out = e.gw.cli(args);
    assert!(
        out.status.success(),
        "gateway {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        e.gw.raw_log()
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|err| panic!("{args:?}: {err}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// A streamed chat completion with curl in the test's cgroup: (curl's stdout, status).
fn curl_stream(e: &ProviderEnv, reply: &str) -> (String, String) {
    let resolve = format!("api.openai.com:443:{}", e.fakes.ips[0]);
    let body = format!(
        r#"{{"model":"gpt-x","stream":true,"messages":[{{"role":"user","content":"key {PROMPT_KEY}"}}]}}"#
    );
    let reply_h = format!(
        "x-test-reply-hex: {}",
        gateway_tests::provider::reply_hex(reply)
    );
    let r = run(
        e.cg.command(
            "curl",
            &[
                "-sS",
                "--max-time",
                "10",
                "--resolve",
                &resolve,
                "--cacert",
                e.ca.to_str().unwrap(),
                "-H",
                "authorization: Bearer sk-dummy",
                "-H",
                "content-type: application/json",
                "-H",
                &reply_h,
                "-H",
                "x-test-chunk: 4",
                "-d",
                &body,
                "-w",
                "\n%{http_code}",
                "https://api.openai.com/v1/chat/completions",
            ],
        ),
        Duration::from_secs(20),
    );
    let (out, code) = r.stdout.rsplit_once('\n').expect("status line");
    (out.to_string(), code.to_string())
}

const PY: &str = r#"
import json, os, sys, openai
h = {"x-test-reply-hex": sys.argv[1].encode().hex(), "x-test-chunk": "5"}
msgs = [{"role": "user", "content": sys.argv[2]}]
c = openai.OpenAI(api_key="sk-dummy")
plain = c.chat.completions.create(model="gpt-j", messages=msgs, extra_headers=h).choices[0].message.content
stream = "".join((ch.choices[0].delta.content or "") for ch in c.chat.completions.create(model="gpt-j", messages=msgs, stream=True, extra_headers=h) if ch.choices)
print(json.dumps({"pid": os.getpid(), "uid": os.getuid(), "plain": plain, "stream": stream}))
"#;

#[test]
fn exchanges_are_journaled_with_identity_masked_bodies_and_a_verified_chain() {
    let e = env("");
    let reply = format!("Here: {GH} done.");
    // The official SDK, plain and streamed.
    let py = py_venv().join("bin/python");
    let prompt = format!("my key is {PROMPT_KEY}");
    let mut cmd =
        e.cg.command_with_hosts(&e.hosts, py.to_str().unwrap(), &["-c", PY, &reply, &prompt]);
    cmd.env("SSL_CERT_FILE", &e.ca);
    let r = run(cmd, Duration::from_secs(60));
    assert!(r.ok, "{r:?}\n{}", e.gw.raw_log());
    let sdk: Value = serde_json::from_str(r.stdout.trim()).unwrap();
    // curl, streamed: what it received is what replay must print.
    let (curl_out, code) = curl_stream(&e, &reply);
    assert_eq!(code, "200", "{curl_out}");

    let list = cli_json(&e, &["journal", "list", "--json"]);
    let recs = list.as_array().expect("array");
    assert_eq!(recs.len(), 3, "{list:#}");
    // The SDK's two exchanges carry its real pid, uid and comm.
    let by_sdk: Vec<&Value> = recs
        .iter()
        .filter(|r| r["who"]["pid"].as_u64() == sdk["pid"].as_u64())
        .collect();
    assert_eq!(by_sdk.len(), 2, "{list:#}");
    for r in &by_sdk {
        assert_eq!(r["who"]["uid"], sdk["uid"], "{r}");
        assert!(
            r["who"]["comm"].as_str().unwrap().starts_with("python"),
            "{r}"
        );
        assert_eq!(r["provider"], "openai");
        assert_eq!(r["endpoint"], "chat.completions");
        assert_eq!(r["model"], "gpt-j");
        assert_eq!(r["status"], 200);
        assert_eq!(r["outcome"], "completed");
        assert_eq!(r["key"], "openai");
        let cg = e.cg.path.file_name().unwrap().to_str().unwrap();
        assert!(r["who"]["cgroup"].as_str().unwrap().ends_with(cg), "{r}");
    }
    let curl_rec = recs
        .iter()
        .find(|r| r["who"]["comm"] == "curl")
        .expect("curl's record");
    // Bodies as delivered: masked both ways; the vault key nowhere in the journal.
    let export = e.gw.cli(&["journal", "export"]);
    assert!(export.status.success());
    let export = String::from_utf8(export.stdout).unwrap();
    assert_eq!(export.lines().count(), 3);
    for secret in [OPENAI_KEY, ANTHROPIC_KEY, GH, PROMPT_KEY, "sk-dummy"] {
        assert!(!export.contains(secret), "{secret} in the journal");
    }
    let id = curl_rec["id"].to_string();
    let full = cli_json(&e, &["journal", "show", &id, "--json"]);
    let req = full["request_body"].as_str().unwrap();
    assert!(req.contains("[MASKED:openai-api-key]"), "{req}");
    let resp = full["response_body"].as_str().unwrap();
    assert!(resp.contains("[MASKED:github-classic-token]"), "{resp}");
    assert!(full["events"].as_array().unwrap().len() > 3, "{full:#}");
    let kinds: Vec<(String, String)> = full["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["direction"].as_str().unwrap().to_string(),
                d["rule"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        kinds.contains(&("request".into(), "openai-api-key".into())),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&("response".into(), "github-classic-token".into())),
        "{kinds:?}"
    );
    // The text listing and the chain.
    let text = e.gw.cli(&["journal", "list", "--provider", "openai"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.lines().count() == 4 && text.contains("curl"), "{text}");
    let v = e.gw.cli(&["journal", "verify"]);
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
    assert!(String::from_utf8_lossy(&v.stdout).contains("3 records, chain intact"));

    // Replay prints what curl received, byte for byte (SSE events in order).
    let rp = e.gw.cli(&["replay", &id, "--speed", "0"]);
    assert!(
        rp.status.success(),
        "{}",
        String::from_utf8_lossy(&rp.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&rp.stdout), curl_out);
    // At recorded speed it takes about as long as the answer took.
    let took = std::time::Instant::now();
    let rp = e.gw.cli(&["replay", &id]);
    assert_eq!(String::from_utf8_lossy(&rp.stdout), curl_out);
    let last = full["events"].as_array().unwrap().last().unwrap()["at_ms"]
        .as_f64()
        .unwrap();
    assert!(
        took.elapsed().as_secs_f64() * 1e3 >= last * 0.9,
        "{last} ms recorded"
    );

    // The metrics count the same exchanges, and pass promtool.
    let text = metrics(&e);
    let value = |prefix: &str, labels: &[&str]| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(prefix) && labels.iter().all(|x| l.contains(x)))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum()
    };
    let ok = [
        r#"provider="openai""#,
        r#"endpoint="chat.completions""#,
        r#"status="200""#,
    ];
    assert_eq!(value("gateway_requests_total{", &ok), 3.0, "{text}");
    assert_eq!(
        value(
            "gateway_rule_hits_total{",
            &[r#"rule="github-classic-token""#, r#"direction="response""#]
        ),
        3.0,
        "{text}"
    );
    assert_eq!(
        value(
            "gateway_rule_hits_total{",
            &[r#"rule="openai-api-key""#, r#"direction="request""#]
        ),
        3.0,
        "{text}"
    );
    assert!(
        value("gateway_connections_total{", &[r#"outcome="intercepted""#]) >= 2.0,
        "{text}"
    );
    assert_eq!(
        value("gateway_journal_write_seconds_count", &[]),
        3.0,
        "{text}"
    );
    assert_eq!(
        value(
            "gateway_exchange_duration_seconds_count{",
            &[r#"provider="openai""#]
        ),
        3.0,
        "{text}"
    );
    assert!(
        value("gateway_leaf_cache_total{", &[r#"result="mint""#]) >= 1.0,
        "{text}"
    );
    for secret in [OPENAI_KEY, GH, PROMPT_KEY] {
        assert!(!text.contains(secret));
    }
}

/// `/metrics` of the test's gateway, checked by promtool.
fn metrics(e: &ProviderEnv) -> String {
    let text = e.gw.metrics_text();
    let promtool = gateway_tests::promtool();
    let mut check = std::process::Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| {
            panic!(
                "{}: {err} (cargo xtask test unpacks it)",
                promtool.display()
            )
        });
    use std::io::Write as _;
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let res = check.wait_with_output().unwrap();
    assert!(
        res.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&res.stdout),
        String::from_utf8_lossy(&res.stderr)
    );
    text
}

#[test]
fn a_changed_byte_breaks_the_chain_at_that_record() {
    let mut e = env("");
    for i in 0..4 {
        let (_, code) = curl_stream(&e, &format!("answer number {i}"));
        assert_eq!(code, "200");
    }
    // The CLI needs the daemon, and says so when it is gone.
    e.gw.kill9();
    let out = e.gw.cli(&["journal", "verify"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not running") && err.contains("--offline"),
        "{err}"
    );
    let out = e.gw.cli(&["journal", "verify", "--offline"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // One byte of record 3, through sled (what someone with the files could do).
    let path = e.gw.dir.path().join("state/journal");
    {
        let store = gateway::journal::Store::open(&path).unwrap();
        let mut raw = store.raw_get(3).unwrap().expect("record 3");
        let at = raw
            .windows(12)
            .position(|w| w == b"\"status\":200")
            .expect("the status in record 3");
        raw[at + 11] = b'1';
        store.raw_put(3, &raw).unwrap();
    }
    let out = e.gw.cli(&["journal", "verify", "--offline"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("BROKEN at record 3"), "{err}");
    // The daemon reports it at start, keeps the journal as it is, and goes on recording.
    e.gw.spawn();
    let broken = e.gw.fields("journal chain is BROKEN at this record (kept as it is; `gateway journal verify` names it); new records continue after the last one");
    assert_eq!(broken.len(), 1, "{}", e.gw.raw_log());
    assert_eq!(broken[0]["record"], 3);
    let (_, code) = curl_stream(&e, "after the restart");
    assert_eq!(code, "200");
    let out = e.gw.cli(&["journal", "verify"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("BROKEN at record 3"));
    let list = cli_json(&e, &["journal", "list", "--json"]);
    assert_eq!(list.as_array().unwrap().len(), 5);
}

#[test]
fn kill_9_during_a_burst_loses_no_exchange_the_client_saw_complete() {
    // Each write waits 40 ms first: an answer that reached its client before its record was
    // durable would be lost to the kill in almost every round.
    let mut e = env("[journal]\nwrite_delay = \"40ms\"\n");
    let resolve = format!("api.openai.com:443:{}", e.fakes.ips[0]);
    // Sequential requests, each printing its number once its answer has fully arrived.
    let script = format!(
        r#"for i in $(seq 1 400); do
  code=$(curl -sS --max-time 5 --resolve {resolve} --cacert {ca} -o /dev/null \
    -H 'content-type: application/json' -H "x-test-reply: burst-$i-end" -H 'x-test-chunk: 6' \
    -d '{{"model":"m","stream":true,"messages":[{{"role":"user","content":"hi"}}]}}' \
    -w '%{{http_code}}' https://api.openai.com/v1/chat/completions 2>/dev/null) || exit 0
  # curl succeeded: the whole answer arrived (a cut stream is an error, whatever the status).
  [ "$code" = 200 ] && echo "200 $i" || exit 0
done"#,
        ca = e.ca.display()
    );
    let mut total = 0;
    for round in 0..10 {
        let mut child =
            e.cg.command("sh", &["-c", &script])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
        // Lines as they come: the kill lands a varying time after the first exchange completed
        // (a fixed delay could fire before any on a slow machine).
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            use std::io::BufRead as _;
            for l in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let mut lines = vec![
            rx.recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("round {round}: no exchange completed in 30 s")),
        ];
        std::thread::sleep(Duration::from_millis(40 + 37 * round));
        e.gw.kill9();
        let _ = child.wait();
        reader.join().unwrap();
        lines.extend(rx.try_iter());
        let done: Vec<String> = lines
            .iter()
            .map(|l| format!("burst-{}-end", l.trim_start_matches("200 ")))
            .collect();
        assert!(
            !done.is_empty(),
            "round {round}: no exchange completed before the kill"
        );
        total += done.len();
        e.gw.spawn();
        let v = e.gw.cli(&["journal", "verify"]);
        assert!(
            v.status.success(),
            "round {round}: {}",
            String::from_utf8_lossy(&v.stderr)
        );
        let export = String::from_utf8(e.gw.cli(&["journal", "export"]).stdout).unwrap();
        for marker in &done {
            // The answer's text is cut into 6-byte events: look for its record by pieces.
            let found = export.lines().any(|l| {
                let r: Value = serde_json::from_str(l).unwrap();
                let body = r["response_body"].as_str().unwrap_or("");
                let text: String = body
                    .lines()
                    .filter_map(|l| l.strip_prefix("data: "))
                    .filter_map(|d| serde_json::from_str::<Value>(d).ok())
                    .filter_map(|d| {
                        d["choices"][0]["delta"]["content"]
                            .as_str()
                            .map(String::from)
                    })
                    .collect();
                text == *marker
            });
            assert!(
                found,
                "round {round}: {marker} completed at the client but is not journaled; done {done:?}; \
                 journaled ids {:?}\n{}",
                export
                    .lines()
                    .map(|l| serde_json::from_str::<Value>(l).unwrap()["id"].clone())
                    .collect::<Vec<_>>(),
                e.gw.raw_log()
                    .lines()
                    .filter(|l| l.contains("journal") || l.contains("ready"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
    eprintln!("{total} completed exchanges checked over 10 kill -9 rounds");
}

#[test]
fn bodies_nothing_inspected_are_counted_not_kept() {
    let e = env("");
    // An upload (not an inference endpoint: streamed through, never scanned) with a secret in it.
    let resolve = format!("api.openai.com:443:{}", e.fakes.ips[0]);
    let upload = format!("line one\nmy token {GH}\n{}", "x".repeat(5000));
    let r = run(
        e.cg.command(
            "curl",
            &[
                "-sS",
                "--resolve",
                &resolve,
                "--cacert",
                e.ca.to_str().unwrap(),
                "-H",
                "content-type: application/octet-stream",
                "--data-binary",
                &upload,
                "-w",
                "\n%{http_code}",
                "https://api.openai.com/v1/files",
            ],
        ),
        Duration::from_secs(20),
    );
    // The fake has no files API: its 404 comes back, and is recorded like any answer.
    assert!(r.stdout.ends_with("\n404"), "{r:?}");
    let list = cli_json(&e, &["journal", "list", "--json"]);
    let id = list[0]["id"].to_string();
    let rec = cli_json(&e, &["journal", "show", &id, "--json"]);
    assert_eq!(rec["status"], 404, "{rec:#}");
    assert_eq!(rec["outcome"], "completed", "{rec:#}");
    assert_eq!(rec["request_bytes"], upload.len(), "{rec:#}");
    assert!(rec["request_body"].is_null(), "{rec:#}");
    let export = String::from_utf8(e.gw.cli(&["journal", "export"]).stdout).unwrap();
    assert!(
        !export.contains(GH),
        "an uninspected body went into the journal"
    );
}

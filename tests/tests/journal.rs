//! Issue D end to end: every exchange made by real clients (curl, the official Python SDKs)
//! through the real redirect and gateway is in the sled journal, attributed to the client's
//! process, with masked bodies and no vault key, chained by MAC; tampering is found; a kill -9
//! loses no exchange the client saw complete; a recorded stream replays to the same bytes.
//! Issue G: a record that cannot be written ends the answer with an error (or, switched on,
//! delivers it anyway) and refuses the next requests; `verify` fails for a rewritten chain, a
//! truncated journal, an older copy put back, a forged checkpoint, a record edited, removed or
//! reordered; an unkeyed journal is adopted.

use std::time::Duration;

use gateway_tests::{ClientRun, message, provider::ProviderEnv, py_venv, run};
use serde_json::Value;

const OPENAI_KEY: &str = "sk-vault-journal-openai-61";
const ANTHROPIC_KEY: &str = "sk-ant-vault-journal-62";
const GH: &str = "ghp_aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE3fG5";
const PROMPT_KEY: &str = "sk-proj-Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0FeDcBaZx9Yw8Vu7Ts6Rq5Po4";

fn env(extra: &str) -> ProviderEnv {
    ProviderEnv::start(
        "gw-jnl",
        150,
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
    let r = curl(e, reply, true, &[]);
    let (out, code) = r.stdout.rsplit_once('\n').expect("status line");
    (out.to_string(), code.to_string())
}

/// A chat completion (streamed or not) with curl in the test's cgroup; `-w` appends
/// `\n<status>` to what it received.
fn curl(e: &ProviderEnv, reply: &str, stream: bool, extra: &[&str]) -> ClientRun {
    let resolve = format!("api.openai.com:443:{}", e.fakes.ips[0]);
    let body = format!(
        r#"{{"model":"gpt-x","stream":{stream},"messages":[{{"role":"user","content":"key {PROMPT_KEY}"}}]}}"#
    );
    let reply_h = format!(
        "x-test-reply-hex: {}",
        gateway_tests::provider::reply_hex(reply)
    );
    let mut args = vec![
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
    ];
    args.extend_from_slice(extra);
    args.push("https://api.openai.com/v1/chat/completions");
    run(e.cg.command("curl", &args), Duration::from_secs(20))
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
        // The SDK hangs up at `[DONE]`, before the streamed body's end: the response decoder
        // says the closing event passed, so that exchange is "completed" too.
        assert_eq!(r["outcome"], "completed", "{r}");
        assert_eq!(r["key"], "openai");
        let cg = e.cg.path.file_name().unwrap().to_str().unwrap();
        assert!(r["who"]["cgroup"].as_str().unwrap().ends_with(cg), "{r}");
    }
    // The plain answer, at least, ended where its body ended.
    assert!(
        by_sdk.iter().any(|r| r["outcome"] == "completed"),
        "{list:#}"
    );
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
    kill9_flushed(&mut e);
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
        let store = gateway::journal::Store::open(&path, None).unwrap();
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
    // in the write-ahead log would be lost to the kill in almost every round.
    let mut e = env("[journal]\nwrite_delay = \"40ms\"\n");
    let (total, _) = kill_rounds(&mut e, 1, 10);
    eprintln!("{total} completed exchanges checked over 10 kill -9 rounds");
}

#[test]
fn kill_9_with_many_exchanges_in_flight_loses_none_and_the_write_ahead_log_replays() {
    // The default mode (sync = "kernel"), eight clients at once, and sled's flush held back
    // 300 ms: at each kill the newest answers the clients saw complete are in the write-ahead
    // log only (in the kernel, not on disk), and must come back from it at the restart.
    let mut e = ProviderEnv::start(
        "gw-jwal",
        200,
        "[journal]\nsync = \"kernel\"\nflush_delay = \"300ms\"\nwrite_delay = \"5ms\"\n",
        &[("openai", OPENAI_KEY), ("anthropic", ANTHROPIC_KEY)],
    );
    let (total, replayed) = kill_rounds(&mut e, 8, 6);
    eprintln!(
        "{total} completed exchanges over 6 kill -9 rounds, {replayed} replayed from the log"
    );
    assert!(
        replayed > 0,
        "no record came back from the write-ahead log: the kills never caught one that was \
         only in the kernel, so this test checked nothing of the log"
    );
}

/// `rounds` times: `parallel` clients making sequential streamed requests, each printing its
/// marker once its answer has fully arrived; a kill -9 a varying time after the first
/// completed; a restart; `journal verify` passes and every answer a client saw complete is in
/// the journal. Returns (exchanges checked, records replayed from the write-ahead log).
fn kill_rounds(e: &mut ProviderEnv, parallel: usize, rounds: u64) -> (usize, u64) {
    let resolve = format!("api.openai.com:443:{}", e.fakes.ips[0]);
    let script = format!(
        r#"for p in $(seq 1 {parallel}); do (
for i in $(seq 1 400); do
  code=$(curl -sS --max-time 5 --resolve {resolve} --cacert {ca} -o /dev/null \
    -H 'content-type: application/json' -H "x-test-reply: burst-$p-$i-end" -H 'x-test-chunk: 6' \
    -d '{{"model":"m","stream":true,"messages":[{{"role":"user","content":"hi"}}]}}' \
    -w '%{{http_code}}' https://api.openai.com/v1/chat/completions 2>/dev/null) || exit 0
  # curl succeeded: the whole answer arrived (a cut stream is an error, whatever the status).
  [ "$code" = 200 ] && echo "200 $p-$i" || exit 0
done ) & done; wait"#,
        ca = e.ca.display()
    );
    let replayed = |e: &ProviderEnv| -> u64 {
        e.gw.fields("journal write-ahead log replayed into the journal")
            .iter()
            .filter_map(|f| f["replayed"].as_u64())
            .sum()
    };
    let mut total = 0;
    for round in 0..rounds {
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
        // The answer's text is cut into 6-byte events: each record's by its pieces.
        let texts: std::collections::HashSet<String> = export
            .lines()
            .map(|l| {
                let r: Value = serde_json::from_str(l).unwrap();
                r["response_body"]
                    .as_str()
                    .unwrap_or("")
                    .lines()
                    .filter_map(|l| l.strip_prefix("data: "))
                    .filter_map(|d| serde_json::from_str::<Value>(d).ok())
                    .filter_map(|d| {
                        d["choices"][0]["delta"]["content"]
                            .as_str()
                            .map(String::from)
                    })
                    .collect()
            })
            .collect();
        for marker in &done {
            assert!(
                texts.contains(marker),
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
    (total, replayed(e))
}

/// Kill the daemon once its journal is on disk (the write-ahead log empty): for tests that
/// then read or change the journal's files.
fn kill9_flushed(e: &mut ProviderEnv) {
    let wal = e.gw.dir.path().join("state/journal.wal");
    let end = std::time::Instant::now() + Duration::from_secs(10);
    while gateway::journal::wal::pending(&wal) > 0 {
        assert!(
            std::time::Instant::now() < end,
            "the journal was not flushed in 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    e.gw.kill9();
}

#[test]
fn an_upload_on_any_path_is_inspected_and_journaled_masked() {
    let e = env("");
    // An upload (not an inference endpoint) with a secret in it: scanned all the same.
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
    let seen = e.fakes.openai.seen();
    let body = String::from_utf8_lossy(&seen.last().unwrap().body).into_owned();
    assert!(
        !body.contains(GH) && body.contains("[MASKED:github-classic-token]"),
        "{body}"
    );
    let list = cli_json(&e, &["journal", "list", "--json"]);
    let id = list[0]["id"].to_string();
    let rec = cli_json(&e, &["journal", "show", &id, "--json"]);
    assert_eq!(rec["status"], 404, "{rec:#}");
    assert_eq!(rec["outcome"], "completed", "{rec:#}");
    assert_eq!(rec["request_bytes"], body.len(), "{rec:#}");
    assert!(
        rec["request_body"]
            .as_str()
            .unwrap()
            .contains("my token [MASKED:github-classic-token]"),
        "{rec:#}"
    );
    let export = String::from_utf8(e.gw.cli(&["journal", "export"]).stdout).unwrap();
    assert!(!export.contains(GH), "a raw secret went into the journal");
}

/// A fault-injection file for `journal.fail_writes_while`: writes fail while it exists.
fn fault_file(tag: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!(
        "gw-jnl-fail-{tag}-{}-{}",
        std::process::id(),
        gateway_tests::unique()
    ));
    let _ = std::fs::remove_file(&p);
    p
}

fn metric(e: &ProviderEnv, prefix: &str) -> f64 {
    e.gw.metrics_text()
        .lines()
        .filter(|l| l.starts_with(prefix))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

#[test]
fn a_record_that_cannot_be_written_ends_the_answer_with_an_error_and_refuses_the_next() {
    let fail = fault_file("cut");
    let e = env(&format!(
        "[journal]\nfail_writes_while = {:?}\n",
        fail.display().to_string()
    ));
    let (out, code) = curl_stream(&e, "recorded fine");
    assert_eq!(code, "200", "{out}");
    assert!(out.contains("data: [DONE]"), "{out}");
    let cases: [(&str, bool, &[&str]); 3] = [
        ("HTTP/1.1, streamed", true, &["--http1.1"]),
        ("h2, streamed", true, &["--http2"]),
        ("HTTP/1.1, one JSON document", false, &["--http1.1"]),
    ];
    for (n, (what, stream, extra)) in cases.iter().enumerate() {
        std::fs::write(&fail, "").unwrap();
        let reply = format!("never recorded {n}");
        let r = curl(&e, &reply, *stream, extra);
        // The client sees an incomplete answer: the transfer fails (a reset h2 stream, an
        // HTTP/1.1 connection closed before its end), whatever arrived before. A one-frame
        // answer is committed (and found unrecordable) on the exchange's own thread before
        // HTTP/1.1 has written its head: the connection closes with nothing sent (52).
        assert!(
            !r.ok,
            "{what}: the unrecorded answer arrived complete: {r:?}"
        );
        assert!(
            r.stderr.contains("curl: (18)")
                || r.stderr.contains("curl: (92)")
                || r.stderr.contains("curl: (56)")
                || r.stderr.contains("curl: (52)"),
            "{what}: {r:?}"
        );
        // (Its bytes may all be there: without the decoder's completion signal the end of
        // the body is what is withheld; every HTTP client reports such a body as an error.)
        let _ = stream;
        // The journal is known broken now: the next request is refused before anything is
        // sent, in the provider's shape.
        let seen = e.fakes.openai.seen().len();
        let r = curl(&e, "refused", false, extra);
        let (body, code) = r.stdout.rsplit_once('\n').expect("status line");
        assert_eq!(code, "503", "{what}: {r:?}");
        let v: Value = serde_json::from_str(body).unwrap();
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains("journal cannot record") && msg.contains("nothing was sent"),
            "{msg}"
        );
        assert_eq!(
            e.fakes.openai.seen().len(),
            seen,
            "{what}: a refused request went out"
        );
        // Writable again: requests are accepted again within about a second.
        std::fs::remove_file(&fail).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (out, code) = curl_stream(&e, "after the fault");
            if code == "200" {
                assert!(out.contains("data: [DONE]"), "{out}");
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: still refused ({code}) after the fault ended: {out}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let cut: Vec<Value> = e
        .gw
        .events()
        .into_iter()
        .filter(|ev| message(ev).starts_with("journal record not durable; the answer is cut short"))
        .collect();
    assert_eq!(cut.len(), 3, "{}", e.gw.raw_log());
    assert!(cut.iter().all(|ev| ev["level"] == "ERROR"), "{cut:?}");
    assert_eq!(
        metric(&e, "gateway_journal_unrecorded_total{result=\"cut\"}"),
        3.0
    );
    assert!(metric(&e, "gateway_journal_write_errors_total") >= 3.0);
    // What was recorded still verifies; no unrecorded answer is in it.
    let v = e.gw.cli(&["journal", "verify"]);
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
    let export = String::from_utf8(e.gw.cli(&["journal", "export"]).stdout).unwrap();
    assert!(!export.contains("never recorded"), "{export}");
    let _ = std::fs::remove_file(&fail);
}

#[test]
fn deliver_unrecorded_delivers_an_answer_whose_record_failed() {
    let fail = fault_file("deliver");
    std::fs::write(&fail, "").unwrap();
    let e = env(&format!(
        "[journal]\ndeliver_unrecorded = true\nfail_writes_while = {:?}\n",
        fail.display().to_string()
    ));
    for i in 0..2 {
        let r = curl(&e, &format!("delivered {i}"), true, &[]);
        assert!(r.ok, "{r:?}\n{}", e.gw.raw_log());
        let (out, code) = r.stdout.rsplit_once('\n').unwrap();
        assert_eq!(code, "200", "{out}");
        assert!(out.contains("data: [DONE]"), "{out}");
    }
    let anyway = e
        .gw
        .events()
        .into_iter()
        .filter(|ev| message(ev).starts_with("journal record not durable; answer delivered anyway"))
        .count();
    assert_eq!(anyway, 2, "{}", e.gw.raw_log());
    assert_eq!(
        metric(&e, "gateway_journal_unrecorded_total{result=\"delivered\"}"),
        2.0
    );
    let _ = std::fs::remove_file(&fail);
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for ent in std::fs::read_dir(from).unwrap() {
        let ent = ent.unwrap();
        let dest = to.join(ent.file_name());
        if ent.file_type().unwrap().is_dir() {
            copy_dir(&ent.path(), &dest);
        } else {
            std::fs::copy(ent.path(), dest).unwrap();
        }
    }
}

fn put_back(copy: &std::path::Path, path: &std::path::Path) {
    std::fs::remove_dir_all(path).unwrap();
    copy_dir(copy, path);
}

/// `journal verify --offline` fails, saying `why`.
fn verify_fails(e: &ProviderEnv, case: &str, why: &[&str]) {
    let out = e.gw.cli(&["journal", "verify", "--offline"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "{case}: verified: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    for w in why {
        assert!(err.contains(w), "{case}: {w:?} not in {err}");
    }
}

fn verify_passes(e: &ProviderEnv) -> String {
    let out = e.gw.cli(&["journal", "verify", "--offline"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every link recomputed from the first record with the unkeyed hash (anyone can).
fn rechain_unkeyed(store: &gateway::journal::Store, change: impl Fn(u64, &mut Value)) {
    use gateway::journal::store::{GENESIS, chain_hash};
    let ids: Vec<u64> = store.iter().map(|r| r.unwrap().0).collect();
    let mut prev = GENESIS.to_string();
    for id in ids {
        let mut v = store.get(id).unwrap().unwrap();
        change(id, &mut v);
        v["prev"] = prev.clone().into();
        let h = chain_hash(&prev, &v);
        v["hash"] = h.clone().into();
        prev = h;
        store.raw_put(id, &serde_json::to_vec(&v).unwrap()).unwrap();
    }
}

#[test]
fn verify_fails_for_a_rewrite_a_truncation_a_rollback_and_a_forged_checkpoint() {
    let mut e = env("");
    for i in 0..3 {
        assert_eq!(curl_stream(&e, &format!("kept {i}")).1, "200");
    }
    kill9_flushed(&mut e);
    let state = e.gw.dir.path().join("state");
    let path = state.join("journal");
    // The key and the head are private, outside the journal.
    for f in ["journal.key", "journal.head"] {
        use std::os::unix::fs::MetadataExt as _;
        let mode = std::fs::metadata(state.join(f)).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    let key = std::fs::read_to_string(state.join("journal.key")).unwrap();
    assert!(
        !e.gw.raw_log().contains(key.trim()),
        "the key is in the log"
    );
    assert!(verify_passes(&e).contains("3 records, chain intact; head at record 3"));
    let good = e.gw.dir.path().join("journal.good");
    copy_dir(&path, &good);

    // Rollback: an older copy of the whole journal put back after more exchanges.
    e.gw.spawn();
    for i in 0..2 {
        assert_eq!(curl_stream(&e, &format!("later {i}")).1, "200");
    }
    kill9_flushed(&mut e);
    put_back(&good, &path);
    verify_fails(
        &e,
        "rollback",
        &[
            "ends at record 3",
            "says record 5",
            "an older copy of the journal was put back",
        ],
    );
    // The daemon does not write on it (it would overwrite the evidence), and says why.
    let mut run_cmd = std::process::Command::new(gateway_tests::gateway_bin());
    run_cmd.args(["run", "-c"]).arg(&e.gw.config);
    let r = run(run_cmd, Duration::from_secs(30));
    assert!(!r.ok, "the daemon started on a rolled-back journal");
    assert!(
        r.stderr.contains("does not write on a journal") && r.stderr.contains("journal accept"),
        "{}",
        r.stderr
    );
    // Accepted on purpose (a backup restored): anchored as it is, and the daemon starts.
    let out = e.gw.cli(&["journal", "accept", "--offline"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("anchored at record 3"));
    verify_passes(&e);

    type Tamper = fn(&gateway::journal::Store);
    let cases: [(&str, Tamper, &[&str]); 6] = [
        (
            "truncated",
            |s| s.raw_remove(3).unwrap(),
            &["BROKEN at record 3", "removed from the end"],
        ),
        (
            "rewritten from the first record without the key",
            |s| {
                rechain_unkeyed(s, |id, v| {
                    if id == 2 {
                        v["status"] = 201.into();
                    }
                })
            },
            &["BROKEN at record 1", "without the journal key"],
        ),
        (
            "forged checkpoint",
            |s| {
                let first = s.get(1).unwrap().unwrap();
                s.raw_remove(1).unwrap();
                let cp = serde_json::json!({
                    "first_id": 2, "prev": first["hash"], "pruned": 1, "mac": "00".repeat(32),
                });
                s.raw_put_meta("checkpoint", &serde_json::to_vec(&cp).unwrap())
                    .unwrap();
            },
            &[
                "BROKEN at record 2",
                "checkpoint does not carry a valid MAC",
            ],
        ),
        (
            "edited in the middle",
            |s| {
                let mut v = s.get(2).unwrap().unwrap();
                v["status"] = 500.into();
                s.raw_put(2, &serde_json::to_vec(&v).unwrap()).unwrap();
            },
            &["BROKEN at record 2", "MAC does not match its content"],
        ),
        (
            "removed in the middle",
            |s| s.raw_remove(2).unwrap(),
            &["BROKEN at record 3", "expected record 2 here"],
        ),
        (
            "reordered",
            |s| {
                let (two, three) = (
                    s.raw_get(2).unwrap().unwrap(),
                    s.raw_get(3).unwrap().unwrap(),
                );
                s.raw_put(2, &three).unwrap();
                s.raw_put(3, &two).unwrap();
            },
            &["BROKEN at record 2", "reordered"],
        ),
    ];
    for (case, tamper, why) in cases {
        put_back(&good, &path);
        tamper(&gateway::journal::Store::open(&path, None).unwrap());
        verify_fails(&e, case, why);
    }

    // An unkeyed journal (an earlier version's: no key, no head, the old chain) is adopted:
    // it opens, its records are checked by the old chain, the keyed chain goes on after them.
    put_back(&good, &path);
    rechain_unkeyed(
        &gateway::journal::Store::open(&path, None).unwrap(),
        |_, _| {},
    );
    std::fs::remove_file(state.join("journal.key")).unwrap();
    std::fs::remove_file(state.join("journal.head")).unwrap();
    e.gw.spawn();
    assert_eq!(curl_stream(&e, "keyed at last").1, "200");
    let out = e.gw.cli(&["journal", "verify"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("4 records, chain intact") && text.contains("keyed from record 4"),
        "{text}"
    );
    let new_key = std::fs::read_to_string(state.join("journal.key")).unwrap();
    assert_ne!(new_key, key);
}

//! Issue H, deliverable 4, end to end: holds that outlive the client's watchdog. A held
//! streaming request is answered at once and kept alive with the provider's keepalive events
//! until decided; approved, the answer follows in the same stream; denied, timed out or refused
//! by the provider, the stream ends with an error event the official SDKs raise. A resend of a
//! held request joins its hold, and a decision is bound to the request's digest for
//! `hold.approval_ttl`. Real redirect, real gateway, the official Python SDKs (shared venv).

use std::{
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use gateway_tests::{
    provider::{ProviderEnv, REPLY, Script},
    py_venv,
};

const OPENAI_KEY: &str = "sk-vault-holds-openai-190";
const ANTHROPIC_KEY: &str = "sk-ant-vault-holds-190";
const GEMINI_KEY: &str = "AIza-vault-holds-190";

fn env(hold: &str) -> ProviderEnv {
    ProviderEnv::start(
        "gw-holds",
        190,
        &format!("[hold]\nkeywords = [\"production database\"]\nself_approval = true\n{hold}"),
        &[
            ("openai", OPENAI_KEY),
            ("anthropic", ANTHROPIC_KEY),
            ("gemini", GEMINI_KEY),
        ],
    )
}

/// The Anthropic SDK streaming `messages.stream` with a 20 s read timeout and no retries, its
/// raw stream tapped (so pings, which the SDK skips, can be counted; `anthropic` 2.x speaks
/// `httpx2`, whose `Timeout` and transports are httpx's). argv: prompt, then an
/// optional `x-test-script` name. Prints {"text"} or {"error", "error_type"}, and "pings",
/// "max_gap" (longest silence, s).
const PY_ANTHROPIC: &str = r#"
import json, os, ssl, sys, time, anthropic
# This SDK (anthropic 2.x) runs on httpx2 and refuses httpx objects.
import httpx2 as httpx
chunks = []
class Tap(httpx.SyncByteStream):
    def __init__(self, inner): self.inner = inner
    def __iter__(self):
        for c in self.inner:
            chunks.append((time.monotonic(), c))
            yield c
    def close(self): self.inner.close()
class Counting(httpx.BaseTransport):
    def __init__(self):
        ctx = ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
        self.inner = httpx.HTTPTransport(verify=ctx)
    def handle_request(self, request):
        r = self.inner.handle_request(request)
        return httpx.Response(r.status_code, headers=r.headers, stream=Tap(r.stream),
                              extensions=r.extensions, request=request)
    def close(self): self.inner.close()
c = anthropic.Anthropic(api_key="sk-ant-dummy", max_retries=0,
                        timeout=httpx.Timeout(20.0, read=20.0),
                        http_client=httpx.Client(transport=Counting()))
h = {"x-test-script": sys.argv[2]} if len(sys.argv) > 2 else {}
start = time.monotonic()
out = {}
try:
    with c.messages.stream(model="claude-x", max_tokens=16, extra_headers=h,
                           messages=[{"role": "user", "content": sys.argv[1]}]) as s:
        out["text"] = "".join(s.text_stream)
except Exception as e:
    out["error"] = str(e)
    out["error_type"] = type(e).__name__
raw = b"".join(c for _, c in chunks).decode(errors="replace")
times = [start] + [t for t, _ in chunks]
out["pings"] = raw.count("event: ping")
out["max_gap"] = max((b - a for a, b in zip(times, times[1:])), default=None)
print(json.dumps(out))
"#;

/// The openai SDK, chat completions: argv prompt, "stream" or "plain".
const PY_OPENAI: &str = r#"
import json, sys, openai
c = openai.OpenAI(api_key="sk-dummy", max_retries=0, timeout=300)
msgs = [{"role": "user", "content": sys.argv[1]}]
try:
    if sys.argv[2] == "stream":
        text = "".join((ch.choices[0].delta.content or "") for ch in
                       c.chat.completions.create(model="gpt-x", messages=msgs, stream=True) if ch.choices)
    else:
        text = c.chat.completions.create(model="gpt-x", messages=msgs).choices[0].message.content
    print(json.dumps({"text": text}))
except Exception as e:
    print(json.dumps({"error": str(e), "error_type": type(e).__name__,
                      "status": getattr(e, "status_code", None)}))
"#;

/// google-genai streaming (`:streamGenerateContent?alt=sse`): argv prompt.
const PY_GENAI: &str = r#"
import json, sys
from google import genai
c = genai.Client(api_key="AIza-dummy")
try:
    text = "".join((ch.text or "") for ch in c.models.generate_content_stream(model="gemini-x", contents=sys.argv[1]))
    print(json.dumps({"text": text}))
except Exception as e:
    print(json.dumps({"error": str(e), "error_type": type(e).__name__, "code": getattr(e, "code", None)}))
"#;

fn spawn(e: &ProviderEnv, script: &str, args: &[&str]) -> Child {
    let py = py_venv().join("bin/python");
    let mut all = vec!["-c", script];
    all.extend_from_slice(args);
    let mut cmd =
        e.cg.command_with_hosts(&e.hosts, py.to_str().unwrap(), &all);
    cmd.env("SSL_CERT_FILE", &e.ca)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.spawn().expect("spawn the SDK")
}

fn result(e: &ProviderEnv, c: Child) -> serde_json::Value {
    let out = c.wait_with_output().unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|err| {
        panic!(
            "{err}: {}\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            e.gw.raw_log()
        )
    })
}

fn holds(e: &ProviderEnv) -> Vec<serde_json::Value> {
    let out = e.gw.cli(&["approvals", "list", "--json"]);
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .unwrap()
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Wait until the pending holds are `n`, each with `waiting` requests on it... (the list, sorted
/// by id).
fn wait_holds(e: &ProviderEnv, n: usize, waiting: u64) -> Vec<serde_json::Value> {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let h = holds(e);
        if h.len() == n && h.iter().all(|x| x["waiting"] == waiting) {
            return h;
        }
        assert!(
            Instant::now() < end,
            "wanted {n} holds with {waiting} waiting, have {h:?}\n{}",
            e.gw.raw_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// [`wait_holds`] for the hold of `c`, which must still be waiting (else its output is shown).
fn wait_held(e: &ProviderEnv, c: &mut Child, n: usize, waiting: u64) -> Vec<serde_json::Value> {
    // (A busy machine takes its time to start Python and import an SDK.)
    let end = Instant::now() + Duration::from_secs(90);
    loop {
        let h = holds(e);
        if h.len() == n && h.iter().all(|x| x["waiting"] == waiting) {
            return h;
        }
        if c.try_wait().unwrap().is_some() {
            let mut out = String::new();
            let mut err = String::new();
            use std::io::Read as _;
            c.stdout.take().unwrap().read_to_string(&mut out).unwrap();
            c.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            panic!(
                "the client ended instead of waiting: {out}\n{err}\n{}",
                e.gw.raw_log()
            );
        }
        assert!(
            Instant::now() < end,
            "wanted {n} holds with {waiting} waiting, have {h:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn decide(e: &ProviderEnv, args: &[&str]) {
    let mut all = vec!["approvals"];
    all.extend_from_slice(args);
    let out = e.gw.cli(&all);
    assert!(out.status.success(), "{args:?}: {out:?}");
}

/// Every journal record, newest last, in full.
fn journal(e: &ProviderEnv) -> Vec<serde_json::Value> {
    let out = e.gw.cli(&["journal", "list", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut recs: Vec<serde_json::Value> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let id = r["id"].to_string();
            let out = e.gw.cli(&["journal", "show", &id, "--json"]);
            assert!(out.status.success(), "{out:?}");
            serde_json::from_slice(&out.stdout).unwrap()
        })
        .collect();
    recs.sort_by_key(|r| r["id"].as_u64());
    recs
}

/// The records of hold `id`, waiting until there are `n` of them (each is written when its
/// exchange ends).
fn records_of(e: &ProviderEnv, id: u64, n: usize) -> Vec<serde_json::Value> {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let recs: Vec<_> = journal(e)
            .into_iter()
            .filter(|r| r["approval"]["hold"] == id)
            .collect();
        if recs.len() >= n || Instant::now() > end {
            return recs;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The Anthropic SDK with a 20 s read timeout on a stream held 60 s: the default keepalive
/// (15 s, Anthropic `ping` events) keeps it alive; approved, the whole answer arrives.
#[test]
fn a_held_anthropic_stream_outlives_a_20s_read_timeout_and_is_answered_on_approval() {
    let e = env("timeout = \"3m\"\n");
    let mut c = spawn(&e, PY_ANTHROPIC, &["please drop the production database"]);
    let h = wait_held(&e, &mut c, 1, 1);
    let id = h[0]["id"].as_u64().unwrap();
    assert_eq!(h[0]["provider"], "anthropic");
    assert!(
        e.fakes.anthropic.seen().is_empty(),
        "held means nothing sent"
    );
    std::thread::sleep(Duration::from_secs(60));
    // Three times the client's read timeout later, it is still waiting.
    assert!(
        c.try_wait().unwrap().is_none(),
        "the client gave up while held"
    );
    assert_eq!(holds(&e).len(), 1);
    decide(&e, &["approve", &id.to_string()]);
    let r = result(&e, c);
    assert_eq!(r["text"], REPLY, "{r}\n{}", e.gw.raw_log());
    // An immediate ping, then one every 15 s: at least 4 in 60 s.
    let pings = r["pings"].as_u64().unwrap();
    assert!(pings >= 4, "{r}");
    assert!(r["max_gap"].as_f64().unwrap() < 20.0, "{r}");
    assert_eq!(e.fakes.anthropic.seen().len(), 1);
    // The provider got the vault's key, never the client's.
    let seen = &e.fakes.anthropic.seen()[0];
    assert_eq!(seen.all("x-api-key"), vec![ANTHROPIC_KEY.to_string()]);
    // One record: approved, 200, the stream as delivered (pings, then the provider's events).
    let recs = records_of(&e, id, 1);
    assert_eq!(recs.len(), 1, "{recs:?}");
    let rec = &recs[0];
    assert_eq!(rec["approval"]["outcome"], "approved", "{rec}");
    assert!(rec["approval"]["via"].is_null(), "{rec}");
    assert!(
        rec["approval"]["waited_ms"].as_f64().unwrap() >= 60_000.0,
        "{rec}"
    );
    assert_eq!(rec["status"], 200);
    assert_eq!(rec["outcome"], "completed", "{rec}");
    let body = rec["response_body"].as_str().unwrap();
    assert_eq!(body.matches("event: ping").count() as u64, pings, "{body}");
    assert!(
        body.find("event: ping").unwrap() < body.find("event: message_start").unwrap(),
        "{body}"
    );
    assert!(body.contains("event: message_stop"), "{body}");
    assert!(!e.gw.raw_log().contains(ANTHROPIC_KEY));
}

/// Denied, timed out, or refused by the provider after approval: the held stream ends with an
/// error event in the provider's shape, which each SDK raises with the gateway's message. A
/// resend of a denied request is denied at once (the denial is bound to its digest).
#[test]
fn held_streams_end_with_error_events_the_sdks_raise() {
    let e = env("timeout = \"6s\"\nkeepalive = \"1s\"\n");
    let why = "not on a Friday";
    // Anthropic, denied with a reason.
    let p1 = "stream one: drop the production database";
    let mut c = spawn(&e, PY_ANTHROPIC, &[p1]);
    let id = wait_held(&e, &mut c, 1, 1)[0]["id"].as_u64().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    decide(&e, &["deny", &id.to_string(), "--reason", why]);
    let r = result(&e, c);
    let err = r["error"].as_str().unwrap_or_else(|| panic!("{r}"));
    assert!(
        err.contains(&format!("request {id} held for approval"))
            && err.contains("was denied by")
            && err.contains(why)
            && err.contains("permission_error"),
        "{r}"
    );
    assert_eq!(r["error_type"], "APIStatusError", "{r}");
    assert!(r["pings"].as_u64().unwrap() >= 1, "{r}");
    // The same request again: denied at once, no hold, a plain 403.
    let c = spawn(&e, PY_ANTHROPIC, &[p1]);
    let r = result(&e, c);
    assert_eq!(r["error_type"], "PermissionDeniedError", "{r}");
    assert!(r["error"].as_str().unwrap().contains(why), "{r}");
    assert!(holds(&e).is_empty());

    // OpenAI, streamed: denied.
    let mut c = spawn(
        &e,
        PY_OPENAI,
        &["stream two: the production database", "stream"],
    );
    let id2 = wait_held(&e, &mut c, 1, 1)[0]["id"].as_u64().unwrap();
    decide(&e, &["deny", &id2.to_string()]);
    let r = result(&e, c);
    assert_eq!(r["error_type"], "APIError", "{r}");
    assert!(
        r["error"].as_str().unwrap().contains("was denied by"),
        "{r}"
    );

    // Gemini (google-genai streams with alt=sse): denied.
    let mut c = spawn(&e, PY_GENAI, &["stream three: the production database"]);
    let id3 = wait_held(&e, &mut c, 1, 1)[0]["id"].as_u64().unwrap();
    assert_eq!(holds(&e)[0]["provider"], "gemini");
    std::thread::sleep(Duration::from_millis(1500));
    decide(&e, &["deny", &id3.to_string()]);
    let r = result(&e, c);
    assert_eq!(r["code"], 403, "{r}");
    assert_eq!(r["error_type"], "ClientError", "{r}");
    assert!(
        r["error"].as_str().unwrap().contains("was denied by"),
        "{r}"
    );

    // Anthropic, not decided within 6 s: timed out.
    let c = spawn(&e, PY_ANTHROPIC, &["stream four: the production database"]);
    let r = result(&e, c);
    let err = r["error"].as_str().unwrap_or_else(|| panic!("{r}"));
    assert!(err.contains("was not approved within"), "{r}");
    assert!(r["pings"].as_u64().unwrap() >= 3, "{r}");

    // Anthropic, approved, but the provider answers 529: its error ends the stream.
    e.fakes.anthropic.script(
        "overloaded",
        Script {
            status: 529,
            headers: vec![("content-type".into(), "application/json".into())],
            chunks: vec![
                br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#
                    .to_vec(),
            ],
        },
    );
    let mut c = spawn(
        &e,
        PY_ANTHROPIC,
        &["stream five: the production database", "overloaded"],
    );
    let id5 = wait_held(&e, &mut c, 1, 1)[0]["id"].as_u64().unwrap();
    decide(&e, &["approve", &id5.to_string()]);
    let r = result(&e, c);
    let err = r["error"].as_str().unwrap_or_else(|| panic!("{r}"));
    assert!(
        err.contains("answered 529")
            && err.contains("Overloaded")
            && err.contains("overloaded_error"),
        "{r}"
    );
    // Only the approved request reached a provider.
    assert_eq!(e.fakes.anthropic.seen().len(), 1);
    assert!(e.fakes.openai.seen().is_empty() && e.fakes.gemini.seen().is_empty());

    // The records: how each ended, with the status the client was told in-stream.
    let recs = journal(&e);
    let of = |id: u64| {
        recs.iter()
            .filter(|r| r["approval"]["hold"] == id)
            .cloned()
            .collect::<Vec<_>>()
    };
    let denied = of(id);
    assert_eq!(denied.len(), 2, "{denied:?}");
    assert_eq!(denied[0]["approval"]["outcome"], "denied");
    assert_eq!(denied[0]["status"], 403);
    assert_eq!(denied[0]["gateway_error"], "blocked_by_policy");
    assert_eq!(denied[1]["approval"]["via"], "reused", "{:?}", denied[1]);
    assert_eq!(of(id5)[0]["status"], 529);
    assert!(of(id5)[0]["gateway_error"].is_null());
}

/// A resend of a held request joins its hold: one hold with two waiting, one approval releases
/// both, both go upstream and both records name the hold. A different body is a second hold.
/// Within `hold.approval_ttl` the same request passes without a hold; after it, it is held
/// again. Plain (openai) and streamed (anthropic) requests alike.
#[test]
fn resends_join_the_hold_and_approvals_are_bound_to_the_digest_until_the_ttl() {
    let ttl = Duration::from_secs(10);
    let e = env("timeout = \"2m\"\napproval_ttl = \"10s\"\n");
    let prompt = "resend: drop the production database";
    let mut a = spawn(&e, PY_OPENAI, &[prompt, "plain"]);
    wait_held(&e, &mut a, 1, 1);
    // Another process of the same caller (same uid, same cgroup) sends the same request.
    let mut b = spawn(&e, PY_OPENAI, &[prompt, "plain"]);
    let h = wait_held(&e, &mut b, 1, 2);
    let id = h[0]["id"].as_u64().unwrap();
    let text = String::from_utf8(e.gw.cli(&["approvals", "list"]).stdout).unwrap();
    assert!(text.contains("WAITING"), "{text}");
    // A different body: a hold of its own.
    let other = spawn(
        &e,
        PY_OPENAI,
        &["other: drop the production database", "plain"],
    );
    let end = Instant::now() + Duration::from_secs(30);
    while holds(&e).len() != 2 {
        assert!(Instant::now() < end, "{:?}", holds(&e));
        std::thread::sleep(Duration::from_millis(50));
    }
    let other_id = holds(&e)
        .iter()
        .map(|h| h["id"].as_u64().unwrap())
        .max()
        .unwrap();
    assert_ne!(other_id, id);
    assert!(e.fakes.openai.seen().is_empty());
    decide(&e, &["approve", &id.to_string()]);
    let approved_at = Instant::now();
    for c in [a, b] {
        let r = result(&e, c);
        assert_eq!(r["text"], REPLY, "{r}");
    }
    assert_eq!(
        e.fakes.openai.seen().len(),
        2,
        "each waiting request went upstream"
    );
    // The other hold is still pending.
    let h = wait_holds(&e, 1, 1);
    assert_eq!(h[0]["id"], other_id);

    // Within the ttl: the same request passes at once, no new hold.
    let c = spawn(&e, PY_OPENAI, &[prompt, "plain"]);
    let r = result(&e, c);
    assert_eq!(r["text"], REPLY, "{r}");
    assert!(
        approved_at.elapsed() < ttl,
        "the test was too slow for its ttl"
    );
    assert_eq!(holds(&e).len(), 1, "{:?}", holds(&e));
    assert_eq!(e.fakes.openai.seen().len(), 3);
    let recs = records_of(&e, id, 3);
    assert_eq!(recs.len(), 3, "{recs:?}");
    // (In the order the exchanges ended.)
    let mut via: Vec<String> = recs
        .iter()
        .map(|r| r["approval"]["via"].as_str().unwrap_or("-").to_string())
        .collect();
    via.sort();
    assert_eq!(via, ["-", "joined", "reused"], "{recs:?}");
    for r in &recs {
        assert_eq!(r["approval"]["outcome"], "approved", "{r}");
        assert_eq!(r["status"], 200, "{r}");
    }

    // After the ttl: held again, under a new id.
    std::thread::sleep(ttl.saturating_sub(approved_at.elapsed()) + Duration::from_secs(1));
    let c = spawn(&e, PY_OPENAI, &[prompt, "plain"]);
    let end = Instant::now() + Duration::from_secs(30);
    while holds(&e).len() != 2 {
        assert!(
            Instant::now() < end,
            "not held again after the ttl: {:?}",
            holds(&e)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let again = holds(&e)
        .iter()
        .map(|h| h["id"].as_u64().unwrap())
        .max()
        .unwrap();
    assert!(again > other_id);
    decide(&e, &["deny", &again.to_string()]);
    decide(&e, &["deny", &other_id.to_string()]);
    for c in [c, other] {
        let r = result(&e, c);
        assert_eq!(r["status"], 403, "{r}");
    }
    assert_eq!(e.fakes.openai.seen().len(), 3);

    // Streams join too: two Anthropic streams of one request, one hold, one approval.
    let sp = "stream resend: drop the production database";
    let mut a = spawn(&e, PY_ANTHROPIC, &[sp]);
    wait_held(&e, &mut a, 1, 1);
    let mut b = spawn(&e, PY_ANTHROPIC, &[sp]);
    let sid = wait_held(&e, &mut b, 1, 2)[0]["id"].as_u64().unwrap();
    decide(&e, &["approve", &sid.to_string()]);
    for c in [a, b] {
        let r = result(&e, c);
        assert_eq!(r["text"], REPLY, "{r}");
        assert!(r["pings"].as_u64().unwrap() >= 1, "{r}");
    }
    assert_eq!(e.fakes.anthropic.seen().len(), 2);
    let recs = records_of(&e, sid, 2);
    assert_eq!(recs.len(), 2, "{recs:?}");
    assert!(holds(&e).is_empty());
}

/// The journal fails while a stream is held: on approval nothing is sent, and the stream ends
/// with an error event that says why (fail closed, loudly), delivered although its own record
/// cannot be written either.
#[test]
fn a_journal_that_fails_during_the_hold_ends_the_stream_with_an_error_event() {
    let fail = std::env::temp_dir().join(format!(
        "gw-holds-journal-fail-{}-{}",
        std::process::id(),
        gateway_tests::unique()
    ));
    let e = env(&format!(
        "timeout = \"2m\"\n[journal]\nfail_writes_while = \"{}\"\n",
        fail.display()
    ));
    let mut c = spawn(&e, PY_ANTHROPIC, &["journal: drop the production database"]);
    let id = wait_held(&e, &mut c, 1, 1)[0]["id"].as_u64().unwrap();
    // Writes fail from now on; the next record (an unheld request's) finds it out.
    std::fs::write(&fail, "").unwrap();
    let r = result(&e, spawn(&e, PY_OPENAI, &["hello", "plain"]));
    assert!(
        r["error"].is_string(),
        "an unrecorded answer was delivered whole: {r}"
    );
    decide(&e, &["approve", &id.to_string()]);
    let r = result(&e, c);
    let _ = std::fs::remove_file(&fail);
    let err = r["error"].as_str().unwrap_or_else(|| panic!("{r}"));
    assert!(
        err.contains("the journal cannot record this exchange") && err.contains("nothing was sent"),
        "{r}"
    );
    assert!(
        e.fakes.anthropic.seen().is_empty(),
        "the held request went out unrecorded"
    );
    assert!(
        e.gw.raw_log()
            .contains("held stream ends with an error event"),
        "not logged"
    );
}

//! Issue I, export: real exchanges (curl in the test's cgroup, through the real redirect and
//! gateway) become one event each at a real rsyslog (RFC 5424 over UDP, CEF over TCP with
//! octet counting), a Splunk HEC fake (HTTPS, token checked) and an OTLP/HTTP JSON fake; each
//! journal id arrives exactly once at every sink with the `hash` of `journal list --json`;
//! a sink that is down for a while gets everything once it is back, nothing twice; a gateway
//! restart resumes from the cursor; no key, client credential, raw secret or HEC token is in
//! any event; bodies only where `include_bodies = true`, and then masked.

use std::{collections::BTreeMap, sync::atomic::Ordering, time::Duration};

use gateway_tests::{
    ClientRun,
    fake::TestPki,
    provider::ProviderEnv,
    run,
    sinks::{HecFake, OtlpFake, Rsyslog, wait_until},
};
use serde_json::Value;

const OPENAI_KEY: &str = "sk-vault-export-openai-231";
const PROMPT_KEY: &str = "sk-proj-Ex9Yw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0FeDcBaZx9Yw8Vu7Ts6Rq5Po4";
const HEC_TOKEN: &str = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
const REPLY: &str = "The export answer is forty-two.";

/// A chat completion with curl in the test's cgroup, its prompt carrying a secret.
fn curl(e: &ProviderEnv, i: usize) -> ClientRun {
    let resolve = format!("api.openai.com:443:{}", e.fakes.ips[0]);
    let body = format!(
        r#"{{"model":"gpt-export","messages":[{{"role":"user","content":"run {i} key {PROMPT_KEY}"}}]}}"#
    );
    let reply_h = format!(
        "x-test-reply-hex: {}",
        gateway_tests::provider::reply_hex(REPLY)
    );
    let args = [
        "-sS",
        "--max-time",
        "10",
        "--resolve",
        &resolve,
        "--cacert",
        e.ca.to_str().unwrap(),
        "-H",
        "authorization: Bearer sk-dummy-client-credential",
        "-H",
        "content-type: application/json",
        "-H",
        &reply_h,
        "-d",
        &body,
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "https://api.openai.com/v1/chat/completions",
    ];
    run(e.cg.command("curl", &args), Duration::from_secs(20))
}

fn exchanges(e: &ProviderEnv, from: usize, n: usize) {
    for i in from..from + n {
        let r = curl(e, i);
        assert!(r.ok && r.stdout == "200", "{r:?}\n{}", e.gw.raw_log());
    }
}

/// id → hash, from `gateway journal list --json`.
fn journal(e: &ProviderEnv) -> BTreeMap<u64, String> {
    let out = e.gw.cli(&["journal", "list", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["id"].as_u64().unwrap(),
                r["hash"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// (journal id, hash) of every exchange event a sink received, in arrival order.
type Seen = Vec<(u64, String)>;

fn hec_seen(h: &HecFake) -> Seen {
    h.events()
        .iter()
        .map(|ev| {
            let u = &ev["event"]["unmapped"];
            (
                u["journal_id"].as_u64().unwrap(),
                u["hash"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn otlp_seen(o: &OtlpFake) -> Seen {
    o.events()
        .iter()
        .map(|r| {
            let id = r["attributes"]["gateway.journal.id"].as_u64().unwrap();
            assert_eq!(
                r["body"]["unmapped"]["journal_id"].as_u64(),
                Some(id),
                "{r}"
            );
            (
                id,
                r["body"]["unmapped"]["hash"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn udp_seen(rs: &Rsyslog) -> Seen {
    rs.udp_messages()
        .iter()
        .map(|m| {
            let ev: Value = serde_json::from_str(m["msg"].as_str().unwrap().trim())
                .unwrap_or_else(|e| panic!("syslog MSG is the event as JSON: {e}: {m}"));
            let id = ev["unmapped"]["journal_id"].as_u64().unwrap();
            assert!(
                m["sd"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("[gateway@32473 schema=\"1\" id=\"{id}\"")),
                "{m}"
            );
            (id, ev["unmapped"]["hash"].as_str().unwrap().to_string())
        })
        .collect()
}

/// A CEF extension value (unescaped enough for ids and hex hashes).
fn cef_field(cef: &str, key: &str) -> Option<String> {
    let at = cef.find(&format!(" {key}="))? + key.len() + 2;
    Some(cef[at..].split(' ').next().unwrap_or("").to_string())
}

fn cef_seen(rs: &Rsyslog) -> Seen {
    rs.tcp_messages()
        .iter()
        .map(|m| {
            let cef = m["msg"].as_str().unwrap().trim();
            assert!(cef.starts_with("CEF:0|gateway|gateway|"), "{m}");
            (
                cef_field(cef, "externalId").unwrap().parse().unwrap(),
                cef_field(cef, "cs4").unwrap(),
            )
        })
        .collect()
}

/// Every journaled exchange exactly once, with its hash.
fn exactly_once(what: &str, seen: &Seen, journal: &BTreeMap<u64, String>) {
    let mut ids: Vec<u64> = seen.iter().map(|(id, _)| *id).collect();
    ids.sort();
    let want: Vec<u64> = journal.keys().copied().collect();
    assert_eq!(ids, want, "{what}: each journal id exactly once");
    for (id, hash) in seen {
        assert_eq!(
            Some(hash),
            journal.get(id),
            "{what}: the hash of record {id}"
        );
    }
}

fn complete(seen: &Seen, n: usize) -> bool {
    seen.len() >= n
}

/// `gateway_export_<name>` of one exporter from /metrics.
fn metric(e: &ProviderEnv, name: &str, exporter: &str) -> Option<f64> {
    let text = e.gw.metrics_text();
    text.lines()
        .find(|l| {
            l.starts_with(&format!("gateway_export_{name}"))
                && l.contains(&format!("exporter=\"{exporter}\""))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn exchanges_reach_rsyslog_hec_and_otlp_once_each_across_an_outage_and_a_restart() {
    let pki = TestPki::new(&["127.235.1.2"]);
    let hec = HecFake::start("127.235.1.2:0".parse().unwrap(), &pki, HEC_TOKEN);
    let mut otlp = OtlpFake::start(
        format!("127.235.1.3:{}", gateway_tests::free_port("127.235.1.3"))
            .parse()
            .unwrap(),
    );
    let mut rs = Rsyslog::start("127.235.1.1");
    let extra = format!(
        r#"
[[export]]
name = "udp"
kind = "syslog"
url = "udp://{udp}"
[[export]]
name = "cef"
kind = "syslog"
url = "tcp://{tcp}"
format = "cef"
max_backoff = "500ms"
[[export]]
name = "hec"
kind = "splunk-hec"
url = "https://{hec}"
token_env = "GW_TEST_EXPORT_HEC_TOKEN"
ca_file = "{ca}"
include_bodies = true
max_backoff = "500ms"
[[export]]
name = "otlp"
kind = "otlp"
url = "http://{otlp}/v1/logs"
max_backoff = "500ms"
"#,
        udp = rs.udp,
        tcp = rs.tcp,
        hec = hec.addr,
        ca = pki.ca_pem.display(),
        otlp = otlp.addr,
    );
    let mut e = ProviderEnv::start_env(
        "gw-exp",
        230,
        &extra,
        &[("openai", OPENAI_KEY)],
        &[("GW_TEST_EXPORT_HEC_TOKEN", HEC_TOKEN)],
    );
    let log = |e: &ProviderEnv| e.gw.raw_log();

    // 1. Three exchanges: one event each, at every sink.
    exchanges(&e, 0, 3);
    let j = journal(&e);
    assert_eq!(j.len(), 3, "{j:?}");
    let t = Duration::from_secs(20);
    wait_until("HEC", t, || complete(&hec_seen(&hec), 3), || log(&e));
    wait_until("OTLP", t, || complete(&otlp_seen(&otlp), 3), || log(&e));
    wait_until(
        "rsyslog UDP",
        t,
        || complete(&udp_seen(&rs), 3),
        || rs.raw(),
    );
    wait_until(
        "rsyslog CEF",
        t,
        || complete(&cef_seen(&rs), 3),
        || rs.raw(),
    );
    exactly_once("HEC", &hec_seen(&hec), &j);
    exactly_once("OTLP", &otlp_seen(&otlp), &j);
    exactly_once("syslog", &udp_seen(&rs), &j);
    exactly_once("CEF", &cef_seen(&rs), &j);

    // What rsyslog parsed: RFC 5424 (version 1), our app name, the node as host name.
    let node = nix::unistd::gethostname().unwrap().into_string().unwrap();
    for m in rs.udp_messages() {
        assert_eq!(m["version"], "1", "{m}");
        assert_eq!(m["app"], "gateway", "{m}");
        assert_eq!(m["msgid"], "exchange", "{m}");
        assert_eq!(m["hostname"], node.as_str(), "{m}");
        // local0.notice: a secret was masked (severity Low).
        assert_eq!(m["pri"], "133", "{m}");
        let ev: Value = serde_json::from_str(m["msg"].as_str().unwrap().trim()).unwrap();
        assert_eq!(ev["schema_version"], 1);
        assert_eq!(ev["class_uid"], 6003);
        assert_eq!(ev["unmapped"]["provider"], "openai");
        assert_eq!(ev["unmapped"]["model"], "gpt-export");
        assert_eq!(ev["unmapped"]["node"], node.as_str());
        assert_eq!(ev["http_response"]["code"], 200);
        assert_eq!(ev["api"]["operation"], ev["unmapped"]["endpoint"]);
        assert_eq!(ev["unmapped"]["identity"]["comm"], "curl");
        assert!(
            ev["unmapped"]["request_body"].is_null(),
            "bodies are off by default: {ev}"
        );
        // The prompt's secret was masked: the decision is in the event.
        assert!(
            ev["unmapped"]["decisions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|d| d["action"] == "mask"),
            "{ev}"
        );
    }
    for m in rs.tcp_messages() {
        assert_eq!(m["version"], "1", "{m}");
        assert_eq!(m["app"], "gateway", "{m}");
        let cef = m["msg"].as_str().unwrap();
        assert!(cef.contains("cs1Label=provider cs1=openai"), "{cef}");
        assert!(cef.contains("cs2Label=model cs2=gpt-export"), "{cef}");
        assert!(cef.contains("sproc=curl"), "{cef}");
        assert!(!cef.contains("requestBody"), "{cef}");
    }
    // HEC: Splunk's envelope around the event; bodies included, masked.
    for ev in hec.events() {
        assert_eq!(ev["host"], node.as_str(), "{ev}");
        assert_eq!(ev["sourcetype"], "gateway:exchange", "{ev}");
        assert!(ev["time"].as_f64().unwrap() > 1.7e9, "{ev}");
        let u = &ev["event"]["unmapped"];
        let req = u["request_body"]
            .as_str()
            .expect("bodies with include_bodies");
        assert!(req.contains("[MASKED:openai-api-key]"), "{req}");
        assert!(
            u["response_body"].as_str().unwrap().contains("forty-two"),
            "{ev}"
        );
    }
    for r in otlp.events() {
        assert_eq!(r["resource"]["host.name"], node.as_str(), "{r}");
        assert_eq!(r["attributes"]["event.name"], "gateway.exchange", "{r}");
        assert_eq!(r["body"]["class_uid"], 6003, "{r}");
        assert!(r["body"]["unmapped"]["request_body"].is_null(), "{r}");
    }

    // 2. HEC busy and the OTLP receiver gone while three more exchanges happen.
    hec.busy.store(true, Ordering::SeqCst);
    otlp.stop();
    exchanges(&e, 3, 3);
    wait_until(
        "rsyslog UDP (up)",
        t,
        || complete(&udp_seen(&rs), 6),
        || rs.raw(),
    );
    wait_until(
        "rsyslog CEF (up)",
        t,
        || complete(&cef_seen(&rs), 6),
        || rs.raw(),
    );
    wait_until(
        "failures counted for both sinks",
        t,
        || {
            metric(&e, "failures", "hec").unwrap_or(0.0) >= 2.0
                && metric(&e, "failures", "otlp").unwrap_or(0.0) >= 2.0
        },
        || e.gw.metrics_text(),
    );
    assert_eq!(hec_seen(&hec).len(), 3, "nothing accepted while busy");
    assert_eq!(otlp_seen(&otlp).len(), 3, "nothing accepted while gone");
    // The lag shows (updated at each retry).
    wait_until(
        "the lag of both sinks",
        t,
        || {
            metric(&e, "lag_records", "otlp").unwrap_or(0.0) >= 3.0
                && metric(&e, "lag_records", "hec").unwrap_or(0.0) >= 3.0
        },
        || e.gw.metrics_text(),
    );
    assert!(
        e.gw.raw_log().contains("export sink failed"),
        "the outage is logged: {}",
        log(&e)
    );
    hec.busy.store(false, Ordering::SeqCst);
    otlp.start_again();
    wait_until(
        "HEC after the outage",
        t,
        || complete(&hec_seen(&hec), 6),
        || log(&e),
    );
    wait_until(
        "OTLP after the outage",
        t,
        || complete(&otlp_seen(&otlp), 6),
        || log(&e),
    );
    let j = journal(&e);
    assert_eq!(j.len(), 6);
    exactly_once("HEC after the outage", &hec_seen(&hec), &j);
    exactly_once("OTLP after the outage", &otlp_seen(&otlp), &j);
    exactly_once("syslog", &udp_seen(&rs), &j);
    exactly_once("CEF", &cef_seen(&rs), &j);

    // 3. Restart (everything acknowledged and committed first): nothing is sent again, the
    // new exchanges follow. rsyslog restarts too (the TCP exporter reconnects).
    wait_until(
        "every exporter at the head",
        t,
        || {
            ["udp", "cef", "hec", "otlp"]
                .iter()
                .all(|x| metric(&e, "lag_records", x) == Some(0.0))
        },
        || e.gw.metrics_text(),
    );
    let out = e.gw.cli(&["doctor"]);
    let doctor = String::from_utf8_lossy(&out.stdout);
    for x in ["udp", "cef", "hec", "otlp"] {
        assert!(
            doctor.lines().any(|l| l.starts_with("ok")
                && l.contains(&format!("export {x} ("))
                && l.contains("up to date")),
            "{doctor}"
        );
    }
    assert!(
        e.gw.terminate(Duration::from_secs(10)).is_some(),
        "{}",
        log(&e)
    );
    rs.restart();
    e.gw.spawn();
    exchanges(&e, 6, 2);
    let j = journal(&e);
    assert_eq!(j.len(), 8);
    wait_until(
        "HEC after restart",
        t,
        || complete(&hec_seen(&hec), 8),
        || log(&e),
    );
    wait_until(
        "OTLP after restart",
        t,
        || complete(&otlp_seen(&otlp), 8),
        || log(&e),
    );
    wait_until(
        "UDP after restart",
        t,
        || complete(&udp_seen(&rs), 8),
        || rs.raw(),
    );
    wait_until(
        "CEF after restart",
        t,
        || complete(&cef_seen(&rs), 8),
        || rs.raw(),
    );
    // A moment for anything sent twice to arrive.
    std::thread::sleep(Duration::from_millis(500));
    exactly_once("HEC after restart", &hec_seen(&hec), &j);
    exactly_once("OTLP after restart", &otlp_seen(&otlp), &j);
    exactly_once("syslog after restart", &udp_seen(&rs), &j);
    exactly_once("CEF after restart", &cef_seen(&rs), &j);
    assert!(e.gw.raw_log().contains("exporter started"), "{}", log(&e));

    // No key, credential, raw secret or token anywhere; bodies only at HEC.
    let hec_raw = hec.seen.lock().unwrap().raw.concat();
    let otlp_raw = otlp.seen.lock().unwrap().raw.concat();
    let syslog_raw = rs.raw();
    for (what, text) in [
        ("HEC", &hec_raw),
        ("OTLP", &otlp_raw),
        ("syslog", &syslog_raw),
    ] {
        assert!(!text.is_empty(), "{what}");
        for secret in [
            OPENAI_KEY,
            PROMPT_KEY,
            HEC_TOKEN,
            "sk-dummy-client-credential",
        ] {
            assert!(!text.contains(secret), "{what} carries {secret}");
        }
    }
    for (what, text) in [("OTLP", &otlp_raw), ("syslog", &syslog_raw)] {
        assert!(
            !text.contains("forty-two"),
            "{what} carries the answer body"
        );
        assert!(!text.contains("MASKED"), "{what} carries the request body");
    }
    assert!(
        hec.seen.lock().unwrap().refused.is_empty(),
        "{:?}",
        hec.seen.lock().unwrap().refused
    );
    assert!(
        otlp.seen.lock().unwrap().refused.is_empty(),
        "{:?}",
        otlp.seen.lock().unwrap().refused
    );
}

/// The HEC fake refuses a wrong token as Splunk does, and the gateway keeps the events (and
/// says why) instead of dropping them; `gateway check` names a missing token variable.
#[test]
fn a_refused_token_keeps_the_events_and_a_missing_one_fails_the_check() {
    let pki = TestPki::new(&["127.235.2.2"]);
    let hec = HecFake::start("127.235.2.2:0".parse().unwrap(), &pki, HEC_TOKEN);
    let extra = format!(
        r#"
[[export]]
name = "hec"
kind = "splunk-hec"
url = "https://{hec}"
token_env = "GW_TEST_EXPORT_HEC_TOKEN"
ca_file = "{ca}"
max_backoff = "300ms"
"#,
        hec = hec.addr,
        ca = pki.ca_pem.display(),
    );
    let e = ProviderEnv::start_env(
        "gw-exp-tok",
        231,
        &extra,
        &[("openai", OPENAI_KEY)],
        &[("GW_TEST_EXPORT_HEC_TOKEN", "not-the-token")],
    );
    exchanges(&e, 0, 1);
    wait_until(
        "the wrong token refused",
        Duration::from_secs(20),
        || !hec.seen.lock().unwrap().refused.is_empty(),
        || e.gw.raw_log(),
    );
    wait_until(
        "the refusal logged",
        Duration::from_secs(10),
        || {
            e.gw.raw_log()
                .contains("Splunk HEC answered 403 Forbidden Invalid token")
        },
        || e.gw.raw_log(),
    );
    assert!(hec.events().is_empty());
    assert!(
        !e.gw.raw_log().contains("not-the-token"),
        "the token is never logged"
    );
    assert!(metric(&e, "lag_records", "hec").unwrap_or(0.0) >= 1.0);

    // `gateway check` without the variable: exit 64, the key and the variable named.
    let out = std::process::Command::new(gateway_tests::gateway_bin())
        .args(["check", "-c"])
        .arg(&e.gw.config)
        .env_remove("GW_TEST_EXPORT_HEC_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("export[0].token_env") && err.contains("GW_TEST_EXPORT_HEC_TOKEN is not set"),
        "{err}"
    );
}

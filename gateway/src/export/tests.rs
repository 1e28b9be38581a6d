//! Export: config checks, the event schema, each wire format, and one exporter end to end in
//! process (a journal, a TCP syslog receiver on loopback that goes away and comes back).
use serde_json::{Value, json};

use super::*;
use crate::journal::cursor::{Gap, GapCause};

fn entry(kind: &str, url: &str) -> ExportConfig {
    ExportConfig {
        kind: kind.into(),
        url: url.into(),
        ..Default::default()
    }
}

fn err(e: &ExportConfig) -> String {
    let (k, r) = e.target("export[0]").unwrap_err();
    format!("{k}: {r}")
}

#[test]
fn entries_are_checked_with_the_key_and_the_reason() {
    assert!(matches!(
        entry("syslog", "udp://127.0.0.1:514").target("e").unwrap(),
        Target::Syslog {
            tcp: false,
            port: 514,
            cef: false,
            facility: 16,
            ..
        }
    ));
    assert!(matches!(
        entry("syslog", "tcp://[::1]:6514").target("e").unwrap(),
        Target::Syslog { tcp: true, port: 6514, ref host, .. } if host == "::1"
    ));
    let e = err(&entry("syslog", "http://127.0.0.1:514"));
    assert!(
        e.contains("export[0].url") && e.contains("udp://HOST:PORT or tcp://"),
        "{e}"
    );
    let e = err(&entry("syslog", "udp://127.0.0.1"));
    assert!(e.contains("not HOST:PORT"), "{e}");
    let e = err(&entry("syslog", "udp://127.0.0.1:99999"));
    assert!(e.contains("not a port"), "{e}");
    let e = err(&ExportConfig {
        format: "leef".into(),
        ..entry("syslog", "udp://127.0.0.1:514")
    });
    assert!(
        e.contains("export[0].format") && e.contains("rfc5424 or cef"),
        "{e}"
    );
    let e = err(&ExportConfig {
        facility: "local9".into(),
        ..entry("syslog", "udp://127.0.0.1:514")
    });
    assert!(e.contains("export[0].facility"), "{e}");
    let e = err(&entry("kafka", "x"));
    assert!(
        e.contains("export[0].kind") && e.contains("splunk-hec"),
        "{e}"
    );
    let e = err(&entry("", "x"));
    assert!(e.contains("required"), "{e}");

    // HEC: https only, the token's variable must be set (its value is never shown).
    let e = err(&entry("splunk-hec", "http://127.0.0.1:8088"));
    assert!(e.contains("https:// only"), "{e}");
    let e = err(&entry("splunk-hec", "https://127.0.0.1:8088"));
    assert!(
        e.contains("export[0].token_env") && e.contains("required"),
        "{e}"
    );
    // The variable is checked by `run` and `check` only (check_env), by name.
    let unset = ExportConfig {
        token_env: Some("GATEWAY_TEST_HEC_TOKEN_UNSET_230".into()),
        ..entry("splunk-hec", "https://127.0.0.1:8088")
    };
    assert!(unset.target("e").is_ok());
    let (k, r) = check_env(std::slice::from_ref(&unset)).unwrap_err();
    assert_eq!(k, "export[0].token_env");
    assert!(
        r.contains("GATEWAY_TEST_HEC_TOKEN_UNSET_230 is not set"),
        "{r}"
    );
    // A variable that is always set (its value appears in no message: only its name).
    let var = "PATH";
    let t = ExportConfig {
        token_env: Some(var.into()),
        ..entry("splunk-hec", "https://127.0.0.1:8088")
    }
    .target("e")
    .unwrap();
    match t {
        Target::Hec { url, .. } => assert_eq!(url.path(), "/services/collector/event"),
        t => panic!("{t:?}"),
    }
    let e = err(&ExportConfig {
        token_env: Some(var.into()),
        ca_file: Some("/nonexistent/ca.pem".into()),
        ..entry("splunk-hec", "https://127.0.0.1:8088")
    });
    assert!(e.contains("export[0].ca_file"), "{e}");
    assert!(!e.contains("/usr/bin"), "{e}");

    // OTLP: http(s), /v1/logs by default.
    match entry("otlp", "http://127.0.0.1:4318").target("e").unwrap() {
        Target::Otlp { url } => assert_eq!(url.path(), "/v1/logs"),
        t => panic!("{t:?}"),
    }
    let e = err(&entry("otlp", "grpc://127.0.0.1:4317"));
    assert!(e.contains("http:// or https://"), "{e}");
    let e = err(&ExportConfig {
        format: "cef".into(),
        ..entry("otlp", "http://127.0.0.1:4318")
    });
    assert!(e.contains("only for kind = \"syslog\""), "{e}");

    // Two entries on one cursor.
    let a = entry("otlp", "http://127.0.0.1:4318");
    let e = validate(&[a.clone(), a]).unwrap_err();
    assert!(e.0 == "export[1].name" && e.1.contains("another"), "{e:?}");
    let e = err(&ExportConfig {
        name: Some("has space".into()),
        ..entry("otlp", "http://127.0.0.1:4318")
    });
    assert!(e.contains("export[0].name"), "{e}");
}

#[test]
fn the_config_file_takes_export_entries() {
    let cfg = crate::config::Config::parse(
        r#"
state_dir = "/tmp/gw-export-cfg"
[[export]]
kind = "syslog"
url = "tcp://127.0.0.1:6514"
format = "cef"
[[export]]
kind = "otlp"
name = "collector"
url = "http://127.0.0.1:4318/v1/logs"
include_bodies = true
"#,
        "test",
    )
    .unwrap();
    assert_eq!(cfg.exports.len(), 2);
    assert_eq!(cfg.exports[1].name(), "collector");
    assert!(cfg.exports[0].name().starts_with("syslog-"));
    let e = crate::config::Config::parse(
        "state_dir = \"/tmp/x\"\n[[export]]\nkind = \"syslog\"\nurl = \"udp://h:1\"\nbogus = 1\n",
        "test",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("bogus"), "{e}");
    let e = crate::config::Config::parse(
        "state_dir = \"/tmp/x\"\n[[export]]\nkind = \"syslog\"\nurl = \"ftp://h:1\"\n",
        "test",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("export[0].url"), "{e}");
}

/// A record as the journal stores it, with a masked secret in its bodies.
fn record(id: u64) -> Value {
    json!({
        "id": id, "time": "2026-12-01T20:00:00.123Z", "time_ms": 1_796_155_200_123u64,
        "who": {"pid": 42, "uid": 1000, "user": "ci", "gid": 1000, "comm": "python3",
                "cgroup": "/system.slice/ci.service", "unit": "ci.service",
                "pod_uid": null, "pod_namespace": null, "pod_name": null, "container_id": null},
        "conn": 7, "provider": "openai", "api": "openai", "method": "POST",
        "endpoint": "chat.completions", "path": "/v1/chat/completions", "model": "gpt-4o-mini",
        "status": 200, "outcome": "completed", "gateway_error": null, "key": "openai-prod",
        "stripped_headers": 1, "stripped_params": 0,
        "decisions": [{"direction": "request", "rule": "aws", "detector": "aws-access-key-id",
                       "action": "mask", "count": 1}],
        "approval": {"hold": 3, "why": "keyword \"production database\"", "outcome": "approved",
                     "by": "alice", "reason": "ok | fine", "at": "2026-12-01T20:00:01Z",
                     "waited_ms": 900.5},
        "ttfb_ms": 12.5, "duration_ms": 30.25,
        "request_body": "{\"messages\":[{\"content\":\"key [MASKED:aws]\"}]}", "request_bytes": 50,
        "response_body": "data: {\"x\":1}\n\n", "response_bytes": 20, "truncated": false,
        "events": [{"at_ms": 1.0, "len": 20}],
        "prev": "00ab", "hash": format!("hash-of-{id}"),
    })
}

fn ctx(bodies: bool) -> event::Context {
    event::Context {
        node: "runner-7".into(),
        include_bodies: bodies,
    }
}

#[test]
fn an_event_is_ocsf_api_activity_with_the_gateway_fields_unmapped() {
    let ev = event::exchange(&record(12), &ctx(false));
    assert_eq!(ev["schema_version"], 1);
    assert_eq!(ev["class_uid"], 6003);
    assert_eq!(ev["category_uid"], 6);
    assert_eq!(ev["activity_id"], 1, "POST is Create");
    assert_eq!(ev["type_uid"], 600301);
    assert_eq!(ev["time"], 1_796_155_200_123u64);
    assert_eq!(ev["status_id"], 1);
    assert_eq!(ev["severity_id"], 2, "a masked secret is Low");
    assert_eq!(ev["metadata"]["uid"], "runner-7:12");
    assert_eq!(ev["metadata"]["version"], "1.3.0");
    assert_eq!(ev["actor"]["user"]["name"], "ci");
    assert_eq!(ev["actor"]["user"]["uid"], "1000");
    assert_eq!(ev["actor"]["process"]["name"], "python3");
    assert_eq!(ev["api"]["operation"], "chat.completions");
    assert_eq!(ev["api"]["service"]["name"], "openai");
    assert_eq!(ev["src_endpoint"]["hostname"], "runner-7");
    assert_eq!(ev["http_request"]["http_method"], "POST");
    assert_eq!(ev["http_request"]["url"]["path"], "/v1/chat/completions");
    assert_eq!(ev["http_response"]["code"], 200);
    let u = &ev["unmapped"];
    assert_eq!(u["journal_id"], 12);
    assert_eq!(u["hash"], "hash-of-12");
    assert_eq!(u["node"], "runner-7");
    assert_eq!(u["model"], "gpt-4o-mini");
    assert_eq!(u["identity"]["unit"], "ci.service");
    assert_eq!(u["decisions"][0]["action"], "mask");
    assert_eq!(u["approval"]["by"], "alice");
    assert_eq!(event::journal_id(&ev), Some(12));
    // Never the vault key's name, no bodies, no hold details by default.
    let text = ev.to_string();
    for absent in [
        "openai-prod",
        "MASKED",
        "data: ",
        "production database",
        "ok | fine",
    ] {
        assert!(!text.contains(absent), "{absent} in {text}");
    }
    // With include_bodies: the masked bodies and the hold's details.
    let ev = event::exchange(&record(12), &ctx(true));
    assert!(
        ev["unmapped"]["request_body"]
            .as_str()
            .unwrap()
            .contains("[MASKED:aws]")
    );
    assert_eq!(ev["unmapped"]["response_body"], "data: {\"x\":1}\n\n");
    assert!(
        ev["unmapped"]["approval"]["why"]
            .as_str()
            .unwrap()
            .contains("production")
    );
    assert!(!ev.to_string().contains("openai-prod"));

    // A block is Medium, a failure is Failure.
    let mut r = record(13);
    r["decisions"][0]["action"] = json!("block");
    r["status"] = json!(403);
    r["outcome"] = json!("refused");
    let ev = event::exchange(&r, &ctx(false));
    assert_eq!(
        (ev["severity_id"].as_u64(), ev["status_id"].as_u64()),
        (Some(3), Some(2))
    );
}

#[test]
fn rfc5424_messages_carry_the_id_and_hash_in_structured_data() {
    let ev = event::exchange(&record(12), &ctx(false));
    let m = syslog::rfc5424(&ev, &ctx(false), 16, false);
    let pid = std::process::id();
    let head = format!("<133>1 2026-12-01T20:00:00.123Z runner-7 gateway {pid} exchange ");
    assert!(m.starts_with(&head), "{m}");
    assert!(
        m.contains(r#"[gateway@32473 schema="1" id="12" hash="hash-of-12" provider="openai""#),
        "{m}"
    );
    let json_part = &m[m.find("] {").unwrap() + 2..];
    let back: Value = serde_json::from_str(json_part).unwrap();
    assert_eq!(back, ev, "the MSG is the event");
    assert_eq!(syslog::frame("abc"), b"3 abc");
    // PARAM-VALUE escaping.
    let mut r = record(1);
    r["model"] = json!(r#"a"b]c\d"#);
    let m = syslog::rfc5424(&event::exchange(&r, &ctx(false)), &ctx(false), 16, false);
    assert!(m.contains(r#"model="a\"b\]c\\d""#), "{m}");
}

#[test]
fn cef_records_escape_headers_and_extensions() {
    let mut r = record(12);
    r["model"] = json!("m=1\\x\nnext");
    let ev = event::exchange(&r, &ctx(false));
    let c = syslog::cef_record(&ev, &ctx(false));
    assert!(
        c.starts_with(&format!(
            "CEF:0|gateway|gateway|{}|exchange|LLM API exchange|5|",
            env!("CARGO_PKG_VERSION")
        )),
        "{c}"
    );
    for part in [
        "externalId=12",
        "dvchost=runner-7",
        "suser=ci",
        "suid=1000",
        "requestMethod=POST",
        "cs1Label=provider cs1=openai",
        "cs2=m\\=1\\\\x\\nnext",
        "cs4Label=hash cs4=hash-of-12",
        "cs5=request:aws:mask",
        "cs6Label=workload cs6=ci.service",
        "cn1Label=httpStatus cn1=200",
        "rt=1796155200123",
    ] {
        assert!(c.contains(part), "{part} not in {c}");
    }
    assert!(!c.contains("requestBody"), "{c}");
    let c = syslog::cef_record(&event::exchange(&r, &ctx(true)), &ctx(true));
    assert!(
        c.contains("flexString1Label=requestBody flexString1="),
        "{c}"
    );
    assert!(!c.contains('\n'), "one line: {c}");
    // The syslog MSG is the CEF record, right after the header: no structured data before it
    // (a receiver takes the first `CEF:`; an attacker's model name must not come first).
    let m = syslog::rfc5424(&ev, &ctx(false), 16, true);
    let pid = std::process::id();
    assert!(
        m.starts_with(&format!(
            "<133>1 2026-12-01T20:00:00.123Z runner-7 gateway {pid} exchange - CEF:0|gateway|"
        )),
        "{m}"
    );
    let mut r = record(13);
    r["model"] = json!("gpt\nCEF:0|Evil|x|1|x|x|10|evil=1");
    let m = syslog::rfc5424(&event::exchange(&r, &ctx(false)), &ctx(false), 16, true);
    assert_eq!(m.matches("CEF:0|").count(), 2, "{m}");
    assert!(m.find("CEF:0|gateway|") < m.find("CEF:0|Evil"), "{m}");
    assert!(!m.contains('\n'), "{m}");
}

#[test]
fn long_fields_are_cut_to_fit_one_message() {
    let mut r = record(14);
    r["model"] = json!("m".repeat(100_000));
    let ev = event::exchange(&r, &ctx(false));
    for cef in [false, true] {
        let m = syslog::rfc5424(&ev, &ctx(false), 16, cef);
        let sd_or_cef = if cef { "cs" } else { "model=" };
        assert!(m.contains(sd_or_cef), "{m:.200}");
        // Structured data and CEF fields are bounded (the JSON MSG is cut by the UDP sink).
        if cef {
            assert!(m.len() < 8 * syslog::MAX_FIELD, "{}", m.len());
        } else {
            let sd_end = m.find("] {").unwrap();
            assert!(sd_end < 4 * syslog::MAX_FIELD, "{sd_end}");
        }
    }
    let mut v = json!({"a": "x".repeat(5000), "b": ["y".repeat(5000)], "c": 1});
    syslog::cut_strings(&mut v, 10);
    assert_eq!(v["a"], json!(format!("{}…", "x".repeat(10))));
    assert_eq!(v["b"][0], json!(format!("{}…", "y".repeat(10))));
    assert_eq!(v["c"], json!(1));
}

#[test]
fn otlp_requests_follow_the_protobuf_json_mapping() {
    let ev = event::exchange(&record(12), &ctx(false));
    let gap = event::gap(
        &Gap {
            first: 3,
            last: 5,
            cause: GapCause::Pruned,
        },
        &ctx(false),
    );
    let body = otlp::request(&[ev, gap], &ctx(false));
    let rl = &body["resourceLogs"][0];
    let attrs = rl["resource"]["attributes"].as_array().unwrap();
    assert!(
        attrs
            .iter()
            .any(|a| a["key"] == "host.name" && a["value"]["stringValue"] == "runner-7")
    );
    let recs = rl["scopeLogs"][0]["logRecords"].as_array().unwrap();
    assert_eq!(recs.len(), 2);
    let r = &recs[0];
    assert_eq!(
        r["timeUnixNano"], "1796155200123000000",
        "int64 as a decimal string"
    );
    assert_eq!(r["severityNumber"], 10);
    let a = r["attributes"].as_array().unwrap();
    assert!(
        a.iter()
            .any(|a| a["key"] == "gateway.journal.id" && a["value"]["intValue"] == "12")
    );
    // The body: the event as a kvlist.
    let kv = r["body"]["kvlistValue"]["values"].as_array().unwrap();
    let class = kv.iter().find(|k| k["key"] == "class_uid").unwrap();
    assert_eq!(class["value"]["intValue"], "6003");
    assert_eq!(recs[1]["severityNumber"], 17, "lost records are an error");
    assert_eq!(
        otlp::any_value(&json!({"a": [true, 1.5, null]})),
        json!({"kvlistValue": {"values": [{"key": "a", "value": {"arrayValue": {"values": [
            {"boolValue": true}, {"doubleValue": 1.5}, {}]}}}]}})
    );
}

#[test]
fn backoff_grows_with_jitter_up_to_the_cap() {
    let mut b = task::Backoff::new(std::time::Duration::from_secs(1));
    let waits: Vec<u128> = (0..8).map(|_| b.next().as_millis()).collect();
    assert!((100..=200).contains(&waits[0]), "{waits:?}");
    assert!((200..=400).contains(&waits[1]), "{waits:?}");
    assert!(
        waits[5..].iter().all(|w| (500..=1000).contains(w)),
        "{waits:?}"
    );
    b.reset();
    assert!(b.next().as_millis() <= 200);
}

/// One exporter in process: records journaled while the syslog receiver is down are delivered
/// once it is back, each exactly once, in order, and the cursor is committed after.
#[tokio::test]
async fn an_exporter_delivers_after_an_outage_and_commits_its_cursor() {
    use std::sync::Arc;

    use tokio::io::AsyncReadExt as _;

    let d = tempfile::tempdir().unwrap();
    let j = Arc::new(
        crate::journal::Journal::open(&crate::journal::JournalConfig::default(), d.path()).unwrap(),
    );
    // Reserve an address, then close it: the receiver is down.
    let l = tokio::net::TcpListener::bind("127.230.0.1:0")
        .await
        .unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let cfg = ExportConfig {
        name: Some("t".into()),
        max_backoff: std::time::Duration::from_millis(300),
        batch: 4,
        ..entry("syslog", &format!("tcp://{addr}"))
    };
    start(std::slice::from_ref(&cfg), &j, "node-a").unwrap();
    let write = |n: usize| {
        let j = j.clone();
        async move {
            for i in 0..n {
                let (tx, rx) = tokio::sync::oneshot::channel();
                j.send(
                    crate::journal::Record {
                        provider: format!("p{i}"),
                        ..Default::default()
                    },
                    Some(tx),
                );
                rx.await.unwrap().unwrap();
            }
        }
    };
    write(10).await;
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    // Back: read frames until all ten arrived.
    let l = tokio::net::TcpListener::bind(addr).await.unwrap();
    let (mut s, _) = tokio::time::timeout(std::time::Duration::from_secs(10), l.accept())
        .await
        .expect("the exporter reconnected")
        .unwrap();
    let mut buf = Vec::new();
    let ids = |buf: &[u8]| -> Vec<u64> {
        let mut out = Vec::new();
        let mut rest = buf;
        while let Some(sp) = rest.iter().position(|&b| b == b' ') {
            let Ok(n) = std::str::from_utf8(&rest[..sp]).unwrap().parse::<usize>() else {
                break;
            };
            if rest.len() < sp + 1 + n {
                break;
            }
            let msg = std::str::from_utf8(&rest[sp + 1..sp + 1 + n]).unwrap();
            let ev: Value = serde_json::from_str(&msg[msg.find("] {").unwrap() + 2..]).unwrap();
            out.push(ev["unmapped"]["journal_id"].as_u64().unwrap());
            rest = &rest[sp + 1 + n..];
        }
        out
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while ids(&buf).len() < 10 {
            let mut chunk = [0u8; 8192];
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed early");
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .expect("ten events");
    assert_eq!(ids(&buf), (1..=10).collect::<Vec<_>>());
    // The cursor is committed once the batches were written.
    tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            let c = crate::journal::cursor::Cursor::open(&j.store, "export:t").unwrap();
            if c.position() == 10 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("cursor at 10");
    let text = String::from_utf8_lossy(&buf);
    assert!(text.contains("node-a gateway"), "{text}");
}

//! Syslog rendering: RFC 5424 messages whose MSG is the event as JSON, or a CEF record (ArcSight
//! Common Event Format, version 0) as the MSG. Framing on TCP is octet counting (RFC 6587 §3.4.1:
//! `LEN SP MSG`); on UDP one message per datagram (RFC 5426).

use serde_json::Value;

use super::event::{self, Context};

/// Structured-data id of the gateway's SD element. 32473 is the private enterprise number
/// reserved for documentation (RFC 5612); receivers match on the whole id.
pub const SD_ID: &str = "gateway@32473";

/// RFC 5424 §6.2.1 severity from the event's OCSF severity.
fn syslog_severity(sev: u64) -> u8 {
    match sev {
        0 | 1 => 6, // informational
        2 => 5,     // notice
        3 => 4,     // warning
        _ => 3,     // error
    }
}

/// The longest structured-data value and CEF field, in characters: attacker-influenced text
/// (a model name, a path) is cut to it so one event always fits one message.
pub const MAX_FIELD: usize = 1024;

/// At most `max` characters of `s`, marked `…` when cut.
pub fn bounded(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match s.char_indices().nth(max) {
        None => s.into(),
        Some((i, _)) => format!("{}…", &s[..i]).into(),
    }
}

/// Every string of `v` longer than `max` characters cut to it (an event that must fit one
/// datagram).
pub fn cut_strings(v: &mut Value, max: usize) {
    match v {
        Value::String(s) => {
            if let std::borrow::Cow::Owned(c) = bounded(s, max) {
                *s = c;
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| cut_strings(x, max)),
        Value::Object(o) => o.values_mut().for_each(|x| cut_strings(x, max)),
        _ => {}
    }
}

/// PARAM-VALUE escaping (RFC 5424 §6.3.3): `"`, `\` and `]`; control characters (line breaks
/// included) become spaces, so no value can end a record for a line-oriented receiver; cut
/// to [`MAX_FIELD`].
fn sd_escape(s: &str) -> String {
    let s = bounded(s, MAX_FIELD);
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '"' | '\\' | ']') {
            o.push('\\');
        }
        o.push(if c.is_control() { ' ' } else { c });
    }
    o
}

/// A header field: printable US-ASCII without spaces, at most `max` characters, `-` if empty.
fn header_field(s: &str, max: usize) -> String {
    let f: String = s
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect();
    if f.is_empty() { "-".into() } else { f }
}

fn text<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    let mut v = v;
    for p in path {
        v = &v[*p];
    }
    v.as_str().unwrap_or("")
}

/// One RFC 5424 message (without framing).
pub fn rfc5424(ev: &Value, ctx: &Context, facility: u8, cef: bool) -> String {
    let sev = syslog_severity(ev["severity_id"].as_u64().unwrap_or(1));
    let pri = u16::from(facility) * 8 + u16::from(sev);
    let ts = ev["time_dt"].as_str().unwrap_or("-");
    let id = event::journal_id(ev);
    let msgid = if id.is_some() && ev["status_detail"] != "records_lost" {
        "exchange"
    } else {
        "records_lost"
    };
    let mut sd = format!("[{SD_ID}");
    let mut param = |k: &str, v: &str| {
        if !v.is_empty() {
            sd.push_str(&format!(" {k}=\"{}\"", sd_escape(v)));
        }
    };
    param("schema", &event::SCHEMA_VERSION.to_string());
    if let Some(id) = id {
        param("id", &id.to_string());
    }
    let u = &ev["unmapped"];
    param("hash", text(u, &["hash"]));
    param("provider", text(u, &["provider"]));
    param("endpoint", text(u, &["endpoint"]));
    param("model", text(u, &["model"]));
    param("status", text(ev, &["status_code"]));
    param("outcome", text(u, &["outcome"]));
    sd.push(']');
    // CEF: the record is the MSG right after the header, no structured data before it (a
    // CEF receiver takes the first `CEF:` it sees; nothing attacker-influenced may precede it).
    let (sd, msg) = if cef {
        ("-".to_string(), cef_record(ev, ctx))
    } else {
        (sd, ev.to_string())
    };
    format!(
        "<{pri}>1 {ts} {} gateway {} {msgid} {sd} {msg}",
        header_field(&ctx.node, 255),
        std::process::id(),
    )
}

/// CEF header field escaping: `\` and `|`; no line breaks; cut to [`MAX_FIELD`].
fn cef_header(s: &str) -> String {
    bounded(s, MAX_FIELD)
        .replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace(['\r', '\n'], " ")
}

/// CEF extension value escaping: `\`, `=`, and line breaks as `\n` / `\r`; other control
/// characters become spaces.
fn cef_value(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '=' => o.push_str("\\="),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            c if c.is_control() => o.push(' '),
            c => o.push(c),
        }
    }
    o
}

/// CEF severity 0..10 from the OCSF severity.
fn cef_severity(sev: u64) -> u8 {
    match sev {
        0 | 1 => 3,
        2 => 5,
        3 => 7,
        _ => 9,
    }
}

/// The event as a CEF:0 record.
pub fn cef_record(ev: &Value, ctx: &Context) -> String {
    let u = &ev["unmapped"];
    let lost = ev["status_detail"] == "records_lost";
    let (sig, name) = if lost {
        ("records_lost", "Journal records lost before export")
    } else {
        ("exchange", "LLM API exchange")
    };
    let mut out = format!(
        "CEF:0|gateway|gateway|{}|{}|{}|{}|",
        cef_header(env!("CARGO_PKG_VERSION")),
        cef_header(sig),
        cef_header(name),
        cef_severity(ev["severity_id"].as_u64().unwrap_or(1)),
    );
    let mut ext: Vec<(String, String)> = Vec::new();
    let mut add = |k: &str, v: String| {
        if !v.is_empty() {
            ext.push((k.to_string(), v));
        }
    };
    add("rt", ev["time"].as_u64().unwrap_or(0).to_string());
    add("dvchost", ctx.node.clone());
    add("msg", text(ev, &["message"]).to_string());
    if lost {
        let g = &u["gap"];
        add("cs1Label", "firstId".into());
        add("cs1", g["first"].to_string());
        add("cs2Label", "lastId".into());
        add("cs2", g["last"].to_string());
        add("reason", text(g, &["cause"]).to_string());
    } else {
        let who = &u["identity"];
        if let Some(id) = event::journal_id(ev) {
            add("externalId", id.to_string());
        }
        add("suser", text(who, &["user"]).to_string());
        if let Some(uid) = who["uid"].as_u64() {
            add("suid", uid.to_string());
        }
        if let Some(pid) = who["pid"].as_u64() {
            add("spid", pid.to_string());
        }
        add("sproc", text(who, &["comm"]).to_string());
        add(
            "requestMethod",
            text(ev, &["http_request", "http_method"]).to_string(),
        );
        add(
            "request",
            text(ev, &["http_request", "url", "path"]).to_string(),
        );
        add("outcome", text(u, &["outcome"]).to_string());
        add("cs1Label", "provider".into());
        add("cs1", text(u, &["provider"]).to_string());
        add("cs2Label", "model".into());
        add("cs2", text(u, &["model"]).to_string());
        add("cs3Label", "endpoint".into());
        add("cs3", text(u, &["endpoint"]).to_string());
        add("cs4Label", "hash".into());
        add("cs4", text(u, &["hash"]).to_string());
        let decisions: Vec<String> = u["decisions"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|d| {
                        format!(
                            "{}:{}:{}",
                            text(d, &["direction"]),
                            text(d, &["rule"]),
                            text(d, &["action"])
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        if !decisions.is_empty() {
            add("cs5Label", "decisions".into());
            add("cs5", decisions.join(","));
        }
        // The workload: its pod (namespace/name) or its systemd unit.
        let pod = [text(who, &["pod_namespace"]), text(who, &["pod_name"])];
        let workload = if pod[1].is_empty() {
            text(who, &["unit"]).to_string()
        } else {
            pod.join("/")
        };
        if !workload.is_empty() {
            add("cs6Label", "workload".into());
            add("cs6", workload);
        }
        add("cn1Label", "httpStatus".into());
        add("cn1", text(ev, &["status_code"]).to_string());
        add("cn2Label", "journalId".into());
        add("cn2", event::journal_id(ev).unwrap_or(0).to_string());
        if ctx.include_bodies {
            add("flexString1Label", "requestBody".into());
            add("flexString1", text(u, &["request_body"]).to_string());
            add("flexString2Label", "responseBody".into());
            add("flexString2", text(u, &["response_body"]).to_string());
        }
    }
    let ext: Vec<String> = ext
        .into_iter()
        .map(|(k, v)| {
            // Bodies (only when asked) may be longer than other fields; nothing is unbounded.
            let max = if k.starts_with("flexString") && !k.ends_with("Label") {
                16 * MAX_FIELD
            } else {
                MAX_FIELD
            };
            format!("{k}={}", cef_value(&bounded(&v, max)))
        })
        .collect();
    out.push_str(&ext.join(" "));
    out
}

/// RFC 6587 octet-counting frame.
pub fn frame(msg: &str) -> Vec<u8> {
    let mut out = format!("{} ", msg.len()).into_bytes();
    out.extend_from_slice(msg.as_bytes());
    out
}

//! The published event schema (`schema_version` 1): one event per journal record, shaped as an
//! OCSF API Activity event (class 6003) with the gateway's own fields under `unmapped`. Every
//! exporter sends this one document (syslog's CEF variant maps the same fields to CEF keys).
//! `deploy/docs/export.md` is its reference; a change that removes or retypes a field bumps
//! `SCHEMA_VERSION`, an added field does not.
//!
//! Never in an event: a key or credential (the record holds none: the vault key's *name* is
//! left out too), and — unless `include_bodies` — the masked bodies, WebSocket message texts and
//! hold details.

use serde_json::{Map, Value, json};

use crate::journal::cursor::Gap;

pub const SCHEMA_VERSION: u32 = 1;
/// The OCSF schema version the mapping follows.
pub const OCSF_VERSION: &str = "1.3.0";
pub const CLASS_UID: u64 = 6003;

/// What every event of one exporter shares.
#[derive(Debug, Clone)]
pub struct Context {
    pub node: String,
    pub include_bodies: bool,
}

/// OCSF `severity_id`: 1 informational, 2 low (something was masked), 3 medium (a request
/// blocked, denied or refused), 4 high (records lost before export).
fn severity(rec: &Value) -> u64 {
    let actions: Vec<&str> = rec["decisions"]
        .as_array()
        .map(|a| a.iter().filter_map(|d| d["action"].as_str()).collect())
        .unwrap_or_default();
    let denied = rec["approval"]["outcome"]
        .as_str()
        .is_some_and(|o| o != "approved");
    if actions.contains(&"block") || denied || rec["outcome"] == "refused" {
        3
    } else if !actions.is_empty() {
        2
    } else {
        1
    }
}

pub fn severity_name(id: u64) -> &'static str {
    match id {
        1 => "Informational",
        2 => "Low",
        3 => "Medium",
        4 => "High",
        _ => "Unknown",
    }
}

/// OCSF API Activity `activity_id` from the HTTP method.
fn activity(method: &str) -> (u64, &'static str) {
    match method {
        "POST" => (1, "Create"),
        "GET" | "HEAD" => (2, "Read"),
        "PUT" | "PATCH" => (3, "Update"),
        "DELETE" => (4, "Delete"),
        _ => (99, "Other"),
    }
}

fn put(m: &mut Map<String, Value>, k: &str, v: &Value) {
    if !v.is_null() {
        m.insert(k.to_string(), v.clone());
    }
}

fn metadata(ctx: &Context, uid: String, id: Option<u64>) -> Value {
    let mut m = json!({
        "version": OCSF_VERSION,
        "product": {
            "name": "gateway",
            "vendor_name": "gateway",
            "version": env!("CARGO_PKG_VERSION"),
        },
        "log_name": "journal",
        "uid": uid,
    });
    if let Some(id) = id {
        m["sequence"] = json!(id);
    }
    let _ = ctx;
    m
}

/// The event for one journal record.
pub fn exchange(rec: &Value, ctx: &Context) -> Value {
    let id = rec["id"].as_u64().unwrap_or(0);
    let time_ms = rec["time_ms"].as_u64().unwrap_or(0);
    let method = rec["method"].as_str().unwrap_or("");
    let (activity_id, activity_name) = activity(method);
    let status = rec["status"].as_u64().unwrap_or(0);
    let success = rec["outcome"] == "completed" && (200..400).contains(&status);
    let severity_id = severity(rec);
    let who = &rec["who"];

    let mut user = Map::new();
    put(&mut user, "name", &who["user"]);
    if let Some(uid) = who["uid"].as_u64() {
        user.insert("uid".into(), json!(uid.to_string()));
    }
    let mut process = Map::new();
    put(&mut process, "pid", &who["pid"]);
    put(&mut process, "name", &who["comm"]);
    let mut src = Map::new();
    src.insert("hostname".into(), json!(ctx.node));
    if let Some(c) = who["container_id"].as_str() {
        src.insert("container".into(), json!({"uid": c}));
    }

    let mut identity = Map::new();
    for k in [
        "user",
        "uid",
        "gid",
        "pid",
        "comm",
        "unit",
        "cgroup",
        "pod_namespace",
        "pod_name",
        "pod_uid",
        "container_id",
    ] {
        put(&mut identity, k, &who[k]);
    }
    let mut unmapped = Map::new();
    unmapped.insert("node".into(), json!(ctx.node));
    unmapped.insert("journal_id".into(), json!(id));
    put(&mut unmapped, "hash", &rec["hash"]);
    put(&mut unmapped, "prev", &rec["prev"]);
    unmapped.insert("identity".into(), Value::Object(identity));
    for k in [
        "provider",
        "api",
        "endpoint",
        "model",
        "outcome",
        "gateway_error",
        "decisions",
        "ttfb_ms",
        "duration_ms",
        "request_bytes",
        "response_bytes",
        "stripped_headers",
        "stripped_params",
        "truncated",
    ] {
        put(&mut unmapped, k, &rec[k]);
    }
    if rec["approval"].is_object() {
        let a = &rec["approval"];
        let mut approval = Map::new();
        for k in ["hold", "outcome", "by", "at", "waited_ms", "via"] {
            put(&mut approval, k, &a[k]);
        }
        if ctx.include_bodies {
            put(&mut approval, "why", &a["why"]);
            put(&mut approval, "reason", &a["reason"]);
        }
        unmapped.insert("approval".into(), Value::Object(approval));
    }
    if let Some(ws) = rec["websocket"].as_object() {
        let mut ws = ws.clone();
        if !ctx.include_bodies {
            ws.remove("messages");
        }
        unmapped.insert("websocket".into(), Value::Object(ws));
    }
    if ctx.include_bodies {
        put(&mut unmapped, "request_body", &rec["request_body"]);
        put(&mut unmapped, "response_body", &rec["response_body"]);
    }

    let mut api = json!({
        "operation": rec["endpoint"].as_str().unwrap_or(""),
        "service": {"name": rec["provider"].as_str().unwrap_or("")},
        "request": {"uid": id.to_string()},
    });
    if let Some(e) = rec["gateway_error"].as_str() {
        api["response"] = json!({"code": status, "error": e});
    } else {
        api["response"] = json!({"code": status});
    }
    json!({
        "schema_version": SCHEMA_VERSION,
        "class_uid": CLASS_UID,
        "class_name": "API Activity",
        "category_uid": 6,
        "category_name": "Application Activity",
        "activity_id": activity_id,
        "activity_name": activity_name,
        "type_uid": CLASS_UID * 100 + activity_id,
        "type_name": format!("API Activity: {activity_name}"),
        "time": time_ms,
        "time_dt": rec["time"],
        "severity_id": severity_id,
        "severity": severity_name(severity_id),
        "status_id": if success { 1 } else { 2 },
        "status": if success { "Success" } else { "Failure" },
        "status_code": status.to_string(),
        "status_detail": rec["outcome"],
        "message": format!(
            "{} {} {} -> {}",
            rec["provider"].as_str().unwrap_or("?"),
            method,
            rec["path"].as_str().unwrap_or(""),
            status
        ),
        "metadata": metadata(ctx, format!("{}:{id}", ctx.node), Some(id)),
        "actor": {"user": Value::Object(user), "process": Value::Object(process)},
        "api": api,
        "src_endpoint": Value::Object(src),
        "http_request": {
            "http_method": method,
            "url": {"path": rec["path"].as_str().unwrap_or("")},
        },
        "http_response": {"code": status},
        "unmapped": Value::Object(unmapped),
    })
}

/// The event telling the receiver that records will never come (pruned before export, or
/// missing from the journal): severity high, the ids in `unmapped.gap`.
pub fn gap(g: &Gap, ctx: &Context) -> Value {
    let now = crate::journal::now_ms();
    json!({
        "schema_version": SCHEMA_VERSION,
        "class_uid": CLASS_UID,
        "class_name": "API Activity",
        "category_uid": 6,
        "category_name": "Application Activity",
        "activity_id": 99,
        "activity_name": "Other",
        "type_uid": CLASS_UID * 100 + 99,
        "type_name": "API Activity: Other",
        "time": now,
        "time_dt": crate::journal::rfc3339(now),
        "severity_id": 4,
        "severity": severity_name(4),
        "status_id": 2,
        "status": "Failure",
        "status_detail": "records_lost",
        "message": format!("{g}: they will not be exported"),
        "metadata": metadata(ctx, format!("{}:gap:{}-{}", ctx.node, g.first, g.last), None),
        "src_endpoint": {"hostname": ctx.node},
        "unmapped": {"node": ctx.node, "gap": g},
    })
}

/// The event for a record that is not readable JSON (a damaged journal): its id only.
pub fn unreadable(id: u64, ctx: &Context) -> Value {
    let g = Gap {
        first: id,
        last: id,
        cause: crate::journal::cursor::GapCause::Missing,
    };
    let mut e = gap(&g, ctx);
    e["message"] = json!(format!(
        "journal record {id} is unreadable (see `gateway journal verify`): it will not be exported"
    ));
    e["unmapped"]["journal_id"] = json!(id);
    e
}

/// The journal id an event stands for (`None` for gap events).
pub fn journal_id(ev: &Value) -> Option<u64> {
    ev["unmapped"]["journal_id"].as_u64()
}

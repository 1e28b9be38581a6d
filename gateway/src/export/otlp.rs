//! OTLP logs over HTTP/JSON: an `ExportLogsServiceRequest` (opentelemetry-proto
//! `collector/logs/v1`) in the protobuf JSON mapping — lowerCamelCase field names, 64-bit
//! integers as decimal strings, enums as numbers. One resource (the node), one scope, one log
//! record per event whose body is the event itself as a structured `kvlistValue`.

use serde_json::{Map, Value, json};

use super::event::{self, Context};

/// An `AnyValue` for a JSON value.
pub fn any_value(v: &Value) -> Value {
    match v {
        Value::Null => json!({}),
        Value::Bool(b) => json!({"boolValue": b}),
        Value::Number(n) => match n.as_i64() {
            Some(i) => json!({"intValue": i.to_string()}),
            None => match n.as_u64() {
                Some(u) => json!({"intValue": u.to_string()}),
                None => json!({"doubleValue": n.as_f64().unwrap_or(0.0)}),
            },
        },
        Value::String(s) => json!({"stringValue": s}),
        Value::Array(a) => {
            json!({"arrayValue": {"values": a.iter().map(any_value).collect::<Vec<_>>()}})
        }
        Value::Object(o) => json!({"kvlistValue": {"values": key_values(o)}}),
    }
}

fn key_values(o: &Map<String, Value>) -> Vec<Value> {
    o.iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| json!({"key": k, "value": any_value(v)}))
        .collect()
}

fn attr(k: &str, v: Value) -> Value {
    json!({"key": k, "value": any_value(&v)})
}

/// `SeverityNumber` and text from the OCSF severity.
fn severity(sev: u64) -> (u64, &'static str) {
    match sev {
        0 | 1 => (9, "INFO"),
        2 => (10, "INFO2"),
        3 => (13, "WARN"),
        _ => (17, "ERROR"),
    }
}

fn log_record(ev: &Value) -> Value {
    let ms = ev["time"].as_u64().unwrap_or(0);
    let now_ns = crate::journal::now_ms() as u128 * 1_000_000;
    let (num, text) = severity(ev["severity_id"].as_u64().unwrap_or(1));
    let mut attrs = vec![
        attr(
            "event.name",
            json!(if ev["status_detail"] == "records_lost" {
                "gateway.records_lost"
            } else {
                "gateway.exchange"
            }),
        ),
        attr("gateway.schema_version", json!(event::SCHEMA_VERSION)),
        attr("ocsf.class_uid", json!(event::CLASS_UID)),
    ];
    if let Some(id) = event::journal_id(ev) {
        attrs.push(attr("gateway.journal.id", json!(id)));
    }
    if let Some(h) = ev["unmapped"]["hash"].as_str() {
        attrs.push(attr("gateway.journal.hash", json!(h)));
    }
    json!({
        "timeUnixNano": (ms as u128 * 1_000_000).to_string(),
        "observedTimeUnixNano": now_ns.to_string(),
        "severityNumber": num,
        "severityText": text,
        "body": any_value(ev),
        "attributes": attrs,
    })
}

/// The request body for a batch of events.
pub fn request(events: &[Value], ctx: &Context) -> Value {
    json!({
        "resourceLogs": [{
            "resource": {"attributes": [
                attr("service.name", json!("gateway")),
                attr("service.version", json!(env!("CARGO_PKG_VERSION"))),
                attr("host.name", json!(ctx.node)),
            ]},
            "scopeLogs": [{
                "scope": {"name": "gateway.export", "version": event::SCHEMA_VERSION.to_string()},
                "logRecords": events.iter().map(log_record).collect::<Vec<_>>(),
            }],
        }],
    })
}

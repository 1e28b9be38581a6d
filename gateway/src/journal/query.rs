//! Questions to the journal, answered the same way by the daemon (admin API, `GET /v1/journal/…`)
//! and by the CLI reading a stopped daemon's journal (`--offline`).

use serde_json::{Value, json};

use super::{Store, now_ms};

/// `rest`: the path after `/v1/journal`; `query`: `since=1h&provider=openai&user=alice&limit=N`.
pub fn answer(store: &Store, rest: &[String], query: &str) -> Result<Value, (u16, String)> {
    let q = Query::parse(query)?;
    let err = |e: super::StoreError| (500, e.to_string());
    match rest {
        [] => {
            let mut out = Vec::new();
            for kv in store.iter() {
                let (_, v) = kv.map_err(err)?;
                if q.wants(&v) {
                    out.push(summary(v));
                }
            }
            if let Some(n) = q.limit {
                let skip = out.len().saturating_sub(n);
                out.drain(..skip);
            }
            Ok(json!({ "records": out }))
        }
        [one] if one == "verify" => {
            let v = store.verify().map_err(err)?;
            Ok(serde_json::to_value(v).unwrap_or_default())
        }
        [one] if one == "export" => {
            let mut out = Vec::new();
            for kv in store.iter() {
                let (_, v) = kv.map_err(err)?;
                if q.wants(&v) {
                    out.push(v);
                }
            }
            Ok(json!({ "records": out }))
        }
        [id] => {
            let id: u64 = id
                .parse()
                .map_err(|_| (400, format!("`{id}` is not a record id")))?;
            match store.get(id).map_err(err)? {
                Some(v) => Ok(v),
                None => Err((404, format!("no journal record {id}"))),
            }
        }
        _ => Err((404, "no such journal route".into())),
    }
}

/// A record without its bodies and timeline (what a listing shows).
pub fn summary(mut v: Value) -> Value {
    if let Some(m) = v.as_object_mut() {
        for k in ["request_body", "response_body", "events"] {
            m.remove(k);
        }
    }
    v
}

#[derive(Default)]
struct Query {
    since_ms: Option<u64>,
    provider: Option<String>,
    user: Option<String>,
    limit: Option<usize>,
}

impl Query {
    fn parse(q: &str) -> Result<Self, (u16, String)> {
        let mut out = Query::default();
        for pair in q.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_decode(v);
            match k {
                "since" => {
                    let d = crate::config::dur::parse(&v).map_err(|e| (400, e))?;
                    out.since_ms = Some(now_ms().saturating_sub(d.as_millis() as u64));
                }
                "provider" => out.provider = Some(v),
                "user" => out.user = Some(v),
                "limit" => {
                    out.limit = Some(v.parse().map_err(|_| (400, format!("limit `{v}`")))?);
                }
                _ => return Err((400, format!("unknown query parameter `{k}`"))),
            }
        }
        Ok(out)
    }

    fn wants(&self, v: &Value) -> bool {
        self.since_ms
            .is_none_or(|s| v["time_ms"].as_u64().unwrap_or(0) >= s)
            && self
                .provider
                .as_ref()
                .is_none_or(|p| v["provider"].as_str() == Some(p))
            && self.user.as_ref().is_none_or(|u| {
                v["who"]["user"].as_str() == Some(u)
                    || v["who"]["uid"].as_u64().map(|n| n.to_string()).as_deref()
                        == Some(u.as_str())
            })
    }
}

fn percent_decode(s: &str) -> String {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `since=…&provider=…` for the CLI's filters.
pub fn encode(pairs: &[(&str, Option<&str>)]) -> String {
    pairs
        .iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}={}", percent_encode(v))))
        .collect::<Vec<_>>()
        .join("&")
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

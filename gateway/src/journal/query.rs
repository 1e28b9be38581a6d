//! Questions to the journal, answered the same way by the daemon (admin API, `GET /v1/journal/…`)
//! and by the CLI reading a stopped daemon's journal (`--offline`).

use serde_json::Value;

use super::{Store, now_ms};

/// The most records a listing with `limit=N` holds before printing them (the last N, found
/// from the end): past it, the listing is refused with a clear error rather than buffered.
pub const MAX_LIMIT: usize = 10_000;

/// The routes whose answer is a stream of records, not one document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    /// `GET /v1/journal`: one summary per record.
    Summaries,
    /// `GET /v1/journal/export`: whole records.
    Export,
}

impl Listing {
    pub fn of(rest: &[String]) -> Option<Self> {
        match rest {
            [] => Some(Listing::Summaries),
            [one] if one == "export" => Some(Listing::Export),
            _ => None,
        }
    }
}

/// Check a listing's query before anything is streamed (a bad one is a 400, not a cut stream).
pub fn check(query: &str) -> Result<(), (u16, String)> {
    Query::parse(query).map(|_| ())
}

/// The records a listing wants, oldest first, one at a time into `out` (nothing is held but
/// the record being written, or with `limit=N` the last N, at most [`MAX_LIMIT`]). Returns how
/// many were written; an error from `out` (the reader went away) stops the walk.
pub fn stream(
    store: &Store,
    listing: Listing,
    query: &str,
    out: &mut dyn FnMut(Value) -> std::io::Result<()>,
) -> Result<u64, (u16, String)> {
    let q = Query::parse(query)?;
    let err = |e: super::StoreError| (500, e.to_string());
    let gone = |e: std::io::Error| (499, format!("the reader went away: {e}"));
    let shape = |v: Value| match listing {
        Listing::Summaries => summary(v),
        Listing::Export => v,
    };
    let mut n = 0;
    match q.limit {
        None => {
            for kv in store.iter() {
                let (_, v) = kv.map_err(err)?;
                if q.wants(&v) {
                    out(shape(v)).map_err(gone)?;
                    n += 1;
                }
            }
        }
        Some(limit) => {
            if limit > MAX_LIMIT {
                return Err((
                    400,
                    format!(
                        "limit {limit} is more than the {MAX_LIMIT} records a limited listing                          holds; give a smaller limit, or none (records are then streamed)"
                    ),
                ));
            }
            // From the end: the newest N that match, then printed oldest first.
            let mut last = Vec::with_capacity(limit.min(256));
            for kv in store.iter().rev() {
                if last.len() == limit {
                    break;
                }
                let (_, v) = kv.map_err(err)?;
                if q.wants(&v) {
                    last.push(shape(v));
                }
            }
            for v in last.into_iter().rev() {
                out(v).map_err(gone)?;
                n += 1;
            }
        }
    }
    Ok(n)
}

/// The one-document routes: `verify` and one record by id (`rest`: the path after
/// `/v1/journal`). Listings are [`stream`]ed.
pub fn answer(store: &Store, rest: &[String], query: &str) -> Result<Value, (u16, String)> {
    Query::parse(query)?;
    let err = |e: super::StoreError| (500, e.to_string());
    match rest {
        [one] if one == "verify" => {
            let v = store.verify().map_err(err)?;
            Ok(serde_json::to_value(v).unwrap_or_default())
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
        // A WebSocket session: its counts and close stay, its timeline goes.
        if let Some(ws) = m.get_mut("websocket").and_then(Value::as_object_mut) {
            ws.remove("messages");
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

#[cfg(test)]
mod tests {
    use super::*;

    fn store(n: u64) -> (tempfile::TempDir, Store) {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("j"), None).unwrap();
        for id in 1..=n {
            let v = serde_json::json!({
                "id": id, "time_ms": id, "provider": if id % 2 == 0 { "openai" } else { "anthropic" },
                "response_body": "x".repeat(100), "who": {"uid": 1000},
            });
            s.raw_put(id, &serde_json::to_vec(&v).unwrap()).unwrap();
        }
        (d, s)
    }

    #[test]
    fn listings_stream_and_a_limit_keeps_the_newest_in_order() {
        let (_d, s) = store(50);
        let mut seen = Vec::new();
        let n = stream(&s, Listing::Summaries, "provider=openai", &mut |v| {
            assert!(v.get("response_body").is_none(), "{v}");
            seen.push(v["id"].as_u64().unwrap());
            Ok(())
        })
        .unwrap();
        assert_eq!(n, 25);
        assert_eq!(seen, (1..=25).map(|i| i * 2).collect::<Vec<_>>());
        seen.clear();
        stream(&s, Listing::Export, "provider=openai&limit=3", &mut |v| {
            assert!(v.get("response_body").is_some());
            seen.push(v["id"].as_u64().unwrap());
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, [46, 48, 50]);
        // A limit past the bound is refused, not buffered.
        let e = stream(&s, Listing::Summaries, "limit=10001", &mut |_| Ok(())).unwrap_err();
        assert_eq!(e.0, 400);
        assert!(e.1.contains("10000"), "{e:?}");
        // A reader that goes away stops the walk at once.
        let mut calls = 0;
        let e = stream(&s, Listing::Export, "", &mut |_| {
            calls += 1;
            Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
        })
        .unwrap_err();
        assert_eq!((calls, e.0), (1, 499));
    }
}

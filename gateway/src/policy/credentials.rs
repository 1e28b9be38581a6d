//! Strip every credential a client sent, before the vault's key goes in (DESIGN §6).
//!
//! Removed: every `authorization`, `proxy-authorization`, `x-api-key`, `api-key`,
//! `x-goog-api-key` and `ocp-apim-subscription-key` header (any case, any count: header names
//! arrive lower-cased from hyper, and h2 rejects upper-case names itself), hop-by-hop headers and
//! whatever `connection` names, and the `key` / `api-key` / `api_key` query parameters (names
//! compared after percent-decoding, any case). Trailers get the same header treatment.

use http::{HeaderMap, HeaderName, Uri, header};

/// Headers that carry credentials for some provider.
pub const CREDENTIAL_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
    "ocp-apim-subscription-key",
];

/// Connection-specific headers a proxy must not forward (RFC 9110 §7.6.1), plus the
/// `proxy-connection` some clients still send.
pub const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Query parameters that carry credentials.
pub const CREDENTIAL_PARAMS: &[&str] = &["key", "api-key", "api_key"];

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stripped {
    pub headers: usize,
    pub params: usize,
}

/// Remove credential and hop-by-hop headers. Returns how many credential headers went.
pub fn strip_headers(h: &mut HeaderMap) -> usize {
    // One look at the names present first (they are lower case in a HeaderMap): most requests
    // carry one credential and no hop-by-hop header, and every `remove` by a string name parses
    // and hashes that name again.
    let mut hop = false;
    let mut creds: Vec<HeaderName> = Vec::new();
    for n in h.keys() {
        hop |= HOP_BY_HOP.contains(&n.as_str());
        if CREDENTIAL_HEADERS.contains(&n.as_str()) {
            creds.push(n.clone());
        }
    }
    if hop {
        // Names listed in `connection` are hop-by-hop too (a credential named there goes
        // uncounted, as a hop-by-hop header).
        let listed: Vec<HeaderName> = h
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
            .collect();
        for n in listed {
            h.remove(n);
        }
        for n in HOP_BY_HOP {
            h.remove(*n);
        }
    }
    let mut removed = 0;
    for n in creds {
        if let http::header::Entry::Occupied(e) = h.entry(n) {
            removed += e.remove_entry_mult().1.count();
        }
    }
    removed
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Whether a query parameter name is a credential. A name that does not decode is treated as
/// one (fail-closed: it is dropped).
fn is_credential_param(raw_name: &str) -> bool {
    match percent_decode(raw_name) {
        Some(n) => {
            let n = n.trim().to_ascii_lowercase();
            CREDENTIAL_PARAMS.contains(&n.as_str())
        }
        None => true,
    }
}

/// Remove credential query parameters, keeping every other parameter byte for byte and in
/// order. Returns the new URI and how many parameters went.
pub fn strip_query(uri: &Uri) -> Result<(Uri, usize), http::Error> {
    let Some(q) = uri.query() else {
        return Ok((uri.clone(), 0));
    };
    let mut removed = 0;
    let kept: Vec<&str> = q
        .split(['&', ';'])
        .filter(|kv| {
            let name = kv.split_once('=').map(|(k, _)| k).unwrap_or(kv);
            let drop = is_credential_param(name);
            removed += usize::from(drop);
            !drop
        })
        .filter(|kv| !kv.is_empty())
        .collect();
    if removed == 0 {
        return Ok((uri.clone(), 0));
    }
    let pq = if kept.is_empty() {
        uri.path().to_string()
    } else {
        format!("{}?{}", uri.path(), kept.join("&"))
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(pq.parse()?);
    Ok((Uri::from_parts(parts)?, removed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn hm(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn every_credential_header_goes_in_any_count() {
        let mut h = hm(&[
            ("Authorization", "Bearer sk-dummy"),
            ("authorization", "Basic Zm9v"),
            ("X-Api-Key", "dummy"),
            ("api-key", ""),
            ("x-goog-api-key", "dummy"),
            ("proxy-authorization", "Basic x"),
            ("Ocp-Apim-Subscription-Key", "x"),
            ("content-type", "application/json"),
            ("anthropic-version", "2023-06-01"),
        ]);
        assert_eq!(strip_headers(&mut h), 7);
        assert_eq!(h.len(), 2);
        assert!(h.contains_key("content-type") && h.contains_key("anthropic-version"));
    }

    #[test]
    fn hop_by_hop_and_connection_listed_headers_go() {
        let mut h = hm(&[
            ("connection", "keep-alive, X-Smuggle"),
            ("x-smuggle", "authorization: Bearer x"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("trailer", "authorization"),
            ("upgrade", "h2c"),
            ("proxy-connection", "keep-alive"),
            ("accept", "*/*"),
        ]);
        strip_headers(&mut h);
        assert_eq!(
            h.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            vec!["accept"]
        );
    }

    #[test]
    fn key_params_go_and_others_stay_in_order() {
        let cases = [
            (
                "/v1beta/models/m:generateContent?key=AIza-dummy",
                "/v1beta/models/m:generateContent",
                1,
            ),
            ("/p?alt=sse&key=x&b=2", "/p?alt=sse&b=2", 1),
            ("/p?KEY=x&Key=y&kEy=z", "/p", 3),
            ("/p?%6Bey=x&a=1", "/p?a=1", 1),
            ("/p?k%65y=x", "/p", 1),
            (
                "/p?api-key=x&api_key=y&api-version=2024-10-21",
                "/p?api-version=2024-10-21",
                2,
            ),
            ("/p?key", "/p", 1),
            ("/p?key=&a=%26key%3Dx", "/p?a=%26key%3Dx", 1),
            ("/p?keys=1&monkey=2&key2=3", "/p?keys=1&monkey=2&key2=3", 0),
            ("/p?a=1;key=2", "/p?a=1", 1),
            ("/p?%ZZ=1&a=2", "/p?a=2", 1),
            ("/p?+key=1", "/p", 1),
        ];
        for (input, want, n) in cases {
            let uri: Uri = input.parse().unwrap();
            let (out, removed) = strip_query(&uri).unwrap();
            assert_eq!((out.to_string().as_str(), removed), (want, n), "{input}");
        }
    }
}

//! The credential stripper: `strip_headers` and `strip_query` never panic; afterwards no
//! credential or hop-by-hop header is left (nor any header `connection` named), and the query
//! keeps exactly its non-credential parameters, in order.
#![no_main]

use gateway::policy::credentials::{
    CREDENTIAL_HEADERS, CREDENTIAL_PARAMS, HOP_BY_HOP, strip_headers, strip_query,
};
use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use libfuzzer_sys::{arbitrary, fuzz_target};

#[derive(arbitrary::Arbitrary, Debug)]
struct Input {
    /// (name, value); a name starting with a digit picks a credential or hop-by-hop name
    /// (in any case) instead, so the interesting names come up often.
    headers: Vec<(String, Vec<u8>)>,
    query: String,
}

fn name_for(raw: &str) -> String {
    let known: Vec<&str> = CREDENTIAL_HEADERS
        .iter()
        .chain(HOP_BY_HOP)
        .copied()
        .collect();
    match raw.as_bytes().first() {
        Some(d @ b'0'..=b'9') => {
            let n = known[usize::from(d - b'0') % known.len()];
            // Upper-case some letters: names are case-insensitive.
            n.chars()
                .zip(raw.chars().chain(std::iter::repeat('a')))
                .map(|(c, r)| {
                    if r.is_ascii_uppercase() {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    }
                })
                .collect()
        }
        _ => raw.to_string(),
    }
}

/// Reference decoding of a parameter name, written apart from the gateway's: `None` when it
/// does not decode (the gateway then drops the parameter).
fn decode(s: &str) -> Option<String> {
    let mut out = Vec::new();
    let mut it = s.bytes();
    while let Some(b) = it.next() {
        match b {
            b'%' => {
                let h = [it.next()?, it.next()?];
                // Two hex digits (from_str_radix alone would take a sign: `%+e`).
                if !h.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                out.push(u8::from_str_radix(std::str::from_utf8(&h).ok()?, 16).ok()?);
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
    }
    String::from_utf8(out).ok()
}

fn is_credential(param: &str) -> bool {
    let name = param.split_once('=').map_or(param, |(k, _)| k);
    match decode(name) {
        // `_` and `-` alike, any case (the gateway's spellings rule).
        Some(n) => CREDENTIAL_PARAMS.contains(&n.trim().to_ascii_lowercase().replace('_', "-").as_str()),
        None => true,
    }
}

fuzz_target!(|inp: Input| {
    let mut h = HeaderMap::new();
    let mut creds = 0;
    for (n, v) in &inp.headers {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name_for(n).as_bytes()),
            HeaderValue::from_bytes(v),
        ) else {
            continue;
        };
        creds += usize::from(CREDENTIAL_HEADERS.contains(&name.as_str()));
        h.append(name, value);
    }
    let listed: Vec<HeaderName> = h
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    let before = h.len();
    let removed = strip_headers(&mut h);
    for n in h.keys() {
        assert!(
            !CREDENTIAL_HEADERS.contains(&n.as_str()),
            "credential header {n} survived"
        );
        assert!(
            !HOP_BY_HOP.contains(&n.as_str()),
            "hop-by-hop header {n} survived"
        );
        assert!(
            !listed.contains(n),
            "header {n} named by connection survived"
        );
    }
    // Every credential-named header went; others may go too, by value.
    assert!(
        removed >= creds && before - h.len() >= removed,
        "{removed} of {creds}"
    );
    if listed.is_empty() {
        assert_eq!(removed, creds);
    }

    let Ok(uri) = format!("/v1/models?{}", inp.query).parse::<Uri>() else {
        return;
    };
    let (out, n) = strip_query(&uri, &[]).expect("a URI with fewer parameters is a URI");
    let want: Vec<&str> = uri
        .query()
        .unwrap_or("")
        .split(['&', ';', '?'])
        .filter(|kv| !is_credential(kv))
        .filter(|kv| !kv.is_empty())
        .collect();
    let all = uri
        .query()
        .unwrap_or("")
        .split(['&', ';', '?'])
        .filter(|kv| is_credential(kv))
        .count();
    assert_eq!(n, all);
    assert_eq!(out.path(), uri.path());
    if n > 0 {
        let got: Vec<&str> = out
            .query()
            .map(|q| q.split(['&', ';', '?']).filter(|kv| !kv.is_empty()).collect())
            .unwrap_or_default();
        assert_eq!(got, want, "{uri} → {out}");
    } else {
        assert_eq!(out, uri);
    }
    for kv in out.query().unwrap_or("").split(['&', ';', '?']) {
        assert!(
            !is_credential(kv) || kv.is_empty(),
            "credential parameter {kv:?} survived in {out}"
        );
    }
});

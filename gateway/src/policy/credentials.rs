//! Strip every credential a client sent, before the vault's key goes in (DESIGN §6).
//!
//! Two ways, on every request head ([`scrub`]) and on trailers ([`scrub_trailers`]):
//!
//! - **By name**: every header a provider takes a credential in ([`CREDENTIAL_HEADERS`]), any
//!   case, any count, `_` and `-` alike (some servers read `x_api_key` as `x-api-key`); billing
//!   headers ([`BILLING_HEADERS`]: the vault entry sets them, never the client); hop-by-hop headers
//!   and whatever `connection` names; the query parameters [`CREDENTIAL_PARAMS`] plus the API's
//!   own ([`crate::provider::adapter::Adapter::credential_params`]), names compared after
//!   percent-decoding, case-folding and with `_` and `-` alike. A second `?` inside the query
//!   separates parameters here, as `&` and `;` do: `?alt=sse?key=x` loses `key=x` (refusing it
//!   would break the many clients that leave a `?` unencoded inside a value, which RFC 3986
//!   allows; splitting there can only find more parameters, never fewer).
//! - **By value**: every header value (as sent, percent-decoded, and for `Basic` base64-decoded),
//!   every cookie pair, every query parameter (percent-decoded, `+` as space) and every path
//!   segment goes through the credential detectors ([`super::detect::Detector::credential`]) in
//!   one scan; a header, cookie pair or parameter that matches goes whatever its name. A path
//!   cannot lose a segment without becoming another request: a credential there refuses it.
//!
//! What went is counted in [`Stripped`]: a request that presented no credential of its own gets
//! none from the vault either (its unauthenticated probes stay unauthenticated).

use std::sync::OnceLock;

use http::{HeaderMap, HeaderName, HeaderValue, Uri, header};

use super::{
    detect,
    scan::{Action, Ctx, Direction, PolicyConfig, RuleConfig, Scanner},
};
use crate::redirect::identity::Identity;

/// Headers that carry a credential for some provider (compared with `_` as `-`). Every API's
/// requests lose all of them: a name one provider reads is never another's business.
pub const CREDENTIAL_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    // Anthropic, and many OpenAI-compatible hosts.
    "x-api-key",
    // Azure OpenAI.
    "api-key",
    // Google APIs; the IAM pair is the legacy IAM-token form, the serverless one the second
    // authorization header of Cloud Run / Cloud Functions fronts.
    "x-goog-api-key",
    "x-goog-iam-authorization-token",
    "x-goog-iam-authority-selector",
    "x-serverless-authorization",
    // Azure AI services (API Management).
    "ocp-apim-subscription-key",
    // AWS SigV4's session token (the signature itself is in `authorization`).
    "x-amz-security-token",
];

/// Headers that choose which account or project a request is billed to: set from the vault
/// entry ([`crate::provider::adapter::Adapter::billing_headers`]) or removed, never the client's.
pub const BILLING_HEADERS: &[&str] = &[
    "openai-organization",
    "openai-project",
    "x-goog-user-project",
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

/// Query parameters that carry a credential for every API (normal form: lower case, `-` for
/// `_`): `key`, `api-key` / `api_key`, `apikey`, `x-api-key` / `x_api_key`.
pub const CREDENTIAL_PARAMS: &[&str] = &["key", "api-key", "apikey", "x-api-key"];

/// What went: credential headers (by name or by value; a cookie pair counts as one) and query
/// parameters. Hop-by-hop and billing headers are not counted: they are not credentials.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stripped {
    pub headers: usize,
    pub params: usize,
}

impl Stripped {
    /// The client presented a credential of its own (any value, a dummy included): only then
    /// does the vault's key go in.
    pub fn presented(&self) -> bool {
        self.headers + self.params > 0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// Never quotes the path: the match is a credential.
    #[error(
        "a credential was found in the request path; it cannot be removed without changing the request, so nothing was sent"
    )]
    InPath,
    #[error("bad request target: {0}")]
    Target(String),
}

/// `name` (lower case, as in a `HeaderMap`) is in `list`, with `_` and `-` alike.
fn listed(name: &[u8], list: &[&str]) -> bool {
    list.iter().any(|l| {
        l.len() == name.len()
            && l.bytes().zip(name).all(|(a, b)| {
                let b = if *b == b'_' {
                    b'-'
                } else {
                    b.to_ascii_lowercase()
                };
                a == b
            })
    })
}

pub fn is_credential_header(name: &str) -> bool {
    listed(name.as_bytes(), CREDENTIAL_HEADERS)
}

pub fn is_billing_header(name: &str) -> bool {
    listed(name.as_bytes(), BILLING_HEADERS)
}

/// Remove credential, billing and hop-by-hop headers by name. Returns how many credential
/// headers went (a credential header named in `connection` counts too).
fn strip_names(h: &mut HeaderMap) -> usize {
    // One look at the names present first (they are lower case in a HeaderMap): most requests
    // carry one credential and no hop-by-hop header, and every `remove` by a string name parses
    // and hashes that name again.
    let mut hop = false;
    let mut creds: Vec<HeaderName> = Vec::new();
    let mut other: Vec<HeaderName> = Vec::new();
    for n in h.keys() {
        let s = n.as_str();
        hop |= HOP_BY_HOP.contains(&s);
        if is_credential_header(s) {
            creds.push(n.clone());
        } else if is_billing_header(s) {
            other.push(n.clone());
        }
    }
    let mut removed = 0;
    if hop {
        let listed: Vec<HeaderName> = h
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
            .collect();
        for n in listed {
            if let header::Entry::Occupied(e) = h.entry(n) {
                let (n, values) = e.remove_entry_mult();
                if is_credential_header(n.as_str()) {
                    removed += values.count();
                }
            }
        }
        for n in HOP_BY_HOP {
            h.remove(*n);
        }
    }
    for n in creds {
        if let header::Entry::Occupied(e) = h.entry(n) {
            removed += e.remove_entry_mult().1.count();
        }
    }
    for n in other {
        h.remove(n);
    }
    removed
}

/// Remove credential headers by name and by value, and hop-by-hop headers, from trailers
/// (HTTP/1.1 chunked or h2): nothing a client sends after the body carries a credential
/// upstream. Returns how many went (a cookie pair counts as one).
pub fn scrub_trailers(h: &mut HeaderMap) -> usize {
    let mut n = strip_names(h);
    let found = scan_head(h, None, "");
    n += apply_headers(h, &found);
    n
}

/// The treatment trailers had before [`scrub_trailers`]; now the same thing.
pub fn strip_headers(h: &mut HeaderMap) -> usize {
    scrub_trailers(h)
}

/// Everything [`scrub`] does to a request head: headers by name and value, query parameters,
/// the path checked. `extra_params`: the API's own credential parameters (normal form).
pub fn scrub(
    parts: &mut http::request::Parts,
    extra_params: &[&str],
) -> Result<Stripped, (CredentialError, Stripped)> {
    let mut stripped = Stripped {
        headers: strip_names(&mut parts.headers),
        params: 0,
    };
    let path = parts.uri.path();
    let query = parts.uri.query().map(|q| Query::parse(q, extra_params));
    let found = scan_head(&parts.headers, query.as_ref(), path);
    if found.path {
        return Err((CredentialError::InPath, stripped));
    }
    stripped.headers += apply_headers(&mut parts.headers, &found);
    if let Some(q) = query {
        let (kept, removed) = q.rebuild(&found.params);
        stripped.params = removed;
        if removed > 0 {
            parts.uri = with_query(&parts.uri, kept.as_deref())
                .map_err(|e| (CredentialError::Target(e.to_string()), stripped))?;
        }
    }
    Ok(stripped)
}

/// Remove credential query parameters by name only (the by-value half needs [`scrub`]),
/// keeping every other parameter byte for byte and in order. Returns the new URI and how many
/// parameters went.
pub fn strip_query(uri: &Uri, extra_params: &[&str]) -> Result<(Uri, usize), http::Error> {
    let Some(q) = uri.query() else {
        return Ok((uri.clone(), 0));
    };
    let q = Query::parse(q, extra_params);
    let (kept, removed) = q.rebuild(&[]);
    if removed == 0 {
        return Ok((uri.clone(), 0));
    }
    Ok((with_query(uri, kept.as_deref())?, removed))
}

fn with_query(uri: &Uri, query: Option<&str>) -> Result<Uri, http::Error> {
    let pq = match query {
        Some(q) => format!("{}?{q}", uri.path()),
        None => uri.path().to_string(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(pq.parse()?);
    Ok(Uri::from_parts(parts)?)
}

/// A query string cut into parameters at `&`, `;` and `?`, each remembering the separator
/// before it, so what stays is rebuilt byte for byte.
struct Query<'a> {
    /// (separator before it, the parameter as sent, a credential by name)
    params: Vec<(Option<char>, &'a str, bool)>,
}

impl<'a> Query<'a> {
    fn parse(q: &'a str, extra: &[&str]) -> Self {
        let mut params = Vec::new();
        let mut sep = None;
        let mut start = 0;
        for (i, c) in q.char_indices().chain([(q.len(), '&')]) {
            if matches!(c, '&' | ';' | '?') {
                let kv = &q[start..i];
                let name = kv.split_once('=').map(|(k, _)| k).unwrap_or(kv);
                params.push((sep, kv, is_credential_param(name, extra)));
                sep = Some(c);
                start = i + c.len_utf8();
            }
        }
        Self { params }
    }

    /// What stays after the credentials by name and the parameters `by_value` (indices), and
    /// how many went. `None`: no query left.
    fn rebuild(&self, by_value: &[usize]) -> (Option<String>, usize) {
        let mut out = String::new();
        let mut removed = 0;
        let mut first = true;
        for (i, (sep, kv, cred)) in self.params.iter().enumerate() {
            if *cred || by_value.contains(&i) {
                removed += 1;
                continue;
            }
            if !first && let Some(s) = sep {
                out.push(*s);
            }
            first = false;
            out.push_str(kv);
        }
        ((!out.is_empty()).then_some(out), removed)
    }
}

/// Percent-decode; `plus`: `+` is a space (query strings). Invalid escapes stay as they are;
/// the flag says whether every escape was valid.
pub(crate) fn percent_decode(b: &[u8], plus: bool) -> (Vec<u8>, bool) {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(b.len());
    let mut ok = true;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => match (
                b.get(i + 1).and_then(|c| hex(*c)),
                b.get(i + 2).and_then(|c| hex(*c)),
            ) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => {
                    ok = false;
                    out.push(b'%');
                }
            },
            b'+' if plus => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    (out, ok)
}

/// Whether a query parameter name is a credential (decoded, trimmed, any case, `_` as `-`). A
/// name that does not decode is treated as one (fail-closed: it is dropped).
fn is_credential_param(raw_name: &str, extra: &[&str]) -> bool {
    let (n, ok) = percent_decode(raw_name.as_bytes(), true);
    let Ok(n) = String::from_utf8(n) else {
        return true;
    };
    if !ok {
        return true;
    }
    let n = n.trim().as_bytes();
    listed(n, CREDENTIAL_PARAMS) || listed(n, extra)
}

/// Standard or URL-safe base64, padding optional; `None` when it is not base64.
fn base64_decode(s: &[u8]) -> Option<Vec<u8>> {
    let s = s.strip_suffix(b"==").or(s.strip_suffix(b"=")).unwrap_or(s);
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for &c in s {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        acc = acc << 6 | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// The credential detectors compiled once, apart from the user's `[[rule]]`s (a credential
/// never goes upstream, whatever the policy says), and the shortest text one can match.
struct Detectors {
    scanner: Scanner,
    min_len: usize,
}

fn detectors() -> &'static Detectors {
    static D: OnceLock<Detectors> = OnceLock::new();
    D.get_or_init(|| {
        let creds: Vec<&detect::Detector> =
            detect::DETECTORS.iter().filter(|d| d.credential).collect();
        let rules: Vec<RuleConfig> = creds
            .iter()
            .map(|d| RuleConfig {
                name: d.name.to_string(),
                detector: Some(d.name.to_string()),
                pattern: None,
                on: vec![Direction::Request],
                action: Action::Mask,
                replacement: None,
                allow: Vec::new(),
                allow_regex: Vec::new(),
                who: None,
            })
            .collect();
        // The built-in patterns compile (the scanner's tests and ours compile them): a failure
        // here is a bug, and panicking ends the exchange with nothing sent.
        let scanner = Scanner::new(
            &rules,
            // These rules only: not the personal-data detectors beside them.
            &PolicyConfig {
                builtin_detectors: false,
                ..Default::default()
            },
        )
        .expect("the built-in credential detectors compile");
        let min_len = creds
            .iter()
            .filter_map(|d| super::scan::parse_pattern(d.pattern).ok())
            .filter_map(|h| h.properties().minimum_len())
            .min()
            .unwrap_or(1)
            .max(1);
        Detectors { scanner, min_len }
    })
}

/// Compile the credential detectors now rather than on the first request.
pub fn warm() {
    detectors();
}

/// Where a stretch of the scanned text came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    /// The n-th value of the header map (in iteration order).
    Header(usize),
    /// Item `p` of the n-th value (a list header: a `cookie` pair, a subprotocol).
    Cookie(usize, usize),
    /// The n-th query parameter.
    Param(usize),
    Path,
}

/// Everything to scan, in one buffer, `\n` between pieces (no detector matches across a line
/// end but the PEM block, whose pieces then all go).
struct Hay {
    buf: Vec<u8>,
    /// (start, end, owner), in order.
    pieces: Vec<(usize, usize, Owner)>,
    min_len: usize,
}

impl Hay {
    fn push(&mut self, owner: Owner, text: &[u8]) {
        if text.len() < self.min_len {
            return;
        }
        let start = self.buf.len();
        self.buf.extend_from_slice(text);
        self.pieces.push((start, self.buf.len(), owner));
        self.buf.push(b'\n');
    }

    /// `text`, and what it decodes to when that differs.
    fn push_decoded(&mut self, owner: Owner, text: &[u8], plus: bool) {
        self.push(owner, text);
        if text.contains(&b'%') || (plus && text.contains(&b'+')) {
            let (d, _) = percent_decode(text, plus);
            self.push(owner, &d);
        }
    }
}

/// What the by-value scan found.
#[derive(Default)]
struct Found {
    headers: Vec<usize>,
    cookies: Vec<(usize, usize)>,
    params: Vec<usize>,
    path: bool,
}

/// Headers whose value is a list judged item by item: a credential takes its item, not the
/// header (a browser-style WebSocket client puts its key among its subprotocols:
/// `Sec-WebSocket-Protocol: realtime, openai-insecure-api-key.<key>`; the others still go).
/// The separator, and how the kept items are joined again.
fn list_header(name: &http::HeaderName) -> Option<(u8, &'static [u8])> {
    if name == header::COOKIE {
        Some((b';', b"; "))
    } else if name == header::SEC_WEBSOCKET_PROTOCOL {
        Some((b',', b", "))
    } else {
        None
    }
}

/// The items of one list header's value, as sent (cookies: RFC 6265 §4.2, `; ` between
/// pairs; subprotocols: RFC 6455 §4.1, comma-separated tokens).
fn list_items(v: &[u8], sep: u8) -> impl Iterator<Item = &[u8]> {
    v.split(move |b| *b == sep).map(<[u8]>::trim_ascii)
}

/// Subprotocols that carry a credential or a billing field by their name, whatever the value
/// (OpenAI Realtime's browser form: `openai-insecure-api-key.<key>`, `openai-organization.<org>`,
/// `openai-project.<project>`).
const CREDENTIAL_SUBPROTOCOLS: &[&[u8]] = &[
    b"openai-insecure-api-key.",
    b"openai-organization.",
    b"openai-project.",
];

fn is_credential_subprotocol(item: &[u8]) -> bool {
    CREDENTIAL_SUBPROTOCOLS
        .iter()
        .any(|p| item.len() >= p.len() && item[..p.len()].eq_ignore_ascii_case(p))
}

/// One scan of every header value, cookie pair, query parameter and path segment.
fn scan_head(h: &HeaderMap, query: Option<&Query<'_>>, path: &str) -> Found {
    let d = detectors();
    let mut hay = Hay {
        buf: Vec::with_capacity(512),
        pieces: Vec::with_capacity(16),
        min_len: d.min_len,
    };
    // List items that are credentials by their name.
    let mut by_name = Vec::new();
    for (i, (name, value)) in h.iter().enumerate() {
        let v = value.as_bytes();
        if let Some((sep, _)) = list_header(name) {
            for (p, item) in list_items(v, sep).enumerate() {
                if name == header::SEC_WEBSOCKET_PROTOCOL && is_credential_subprotocol(item) {
                    by_name.push((i, p));
                } else {
                    hay.push_decoded(Owner::Cookie(i, p), item, false);
                }
            }
            continue;
        }
        hay.push_decoded(Owner::Header(i), v, false);
        if let Some(b64) = v
            .get(..6)
            .filter(|s| s.eq_ignore_ascii_case(b"basic "))
            .and_then(|_| base64_decode(v[6..].trim_ascii()))
        {
            hay.push(Owner::Header(i), &b64);
        }
    }
    if let Some(q) = query {
        for (i, (_, kv, by_name)) in q.params.iter().enumerate() {
            // Gone by name already: no need to look at its value.
            if !by_name {
                hay.push_decoded(Owner::Param(i), kv.as_bytes(), true);
            }
        }
    }
    for seg in path.split('/') {
        hay.push_decoded(Owner::Path, seg.as_bytes(), false);
    }
    let mut found = Found {
        cookies: by_name,
        ..Found::default()
    };
    if hay.pieces.is_empty() {
        return found;
    }
    let nobody = Identity::default();
    let hits = d.scanner.find(
        &hay.buf,
        0,
        Ctx {
            dir: Direction::Request,
            id: &nobody,
        },
    );
    for hit in hits {
        // Every piece the match touches (the `\n` after a piece belongs to none).
        let first = hay.pieces.partition_point(|(_, end, _)| *end <= hit.start);
        let touched = hay.pieces[first..]
            .iter()
            .take_while(|(s, _, _)| *s < hit.end);
        for &(_, _, owner) in touched {
            match owner {
                Owner::Header(i) => found.headers.push(i),
                Owner::Cookie(i, p) => found.cookies.push((i, p)),
                Owner::Param(i) => found.params.push(i),
                Owner::Path => found.path = true,
            }
        }
    }
    found
}

/// Remove the header values and cookie pairs `found` names. Returns how many went.
fn apply_headers(h: &mut HeaderMap, found: &Found) -> usize {
    if found.headers.is_empty() && found.cookies.is_empty() {
        return 0;
    }
    let mut removed = 0;
    let mut out = HeaderMap::with_capacity(h.len());
    for (i, (name, value)) in h.iter().enumerate() {
        if found.headers.contains(&i) {
            removed += 1;
            continue;
        }
        if found.cookies.iter().any(|(c, _)| *c == i)
            && let Some((sep, joiner)) = list_header(name)
        {
            let mut kept: Vec<&[u8]> = Vec::new();
            for (p, item) in list_items(value.as_bytes(), sep).enumerate() {
                if found.cookies.contains(&(i, p)) {
                    removed += 1;
                } else if !item.is_empty() {
                    kept.push(item);
                }
            }
            if !kept.is_empty()
                && let Ok(v) = HeaderValue::from_bytes(&kept.join(joiner))
            {
                out.append(name.clone(), v);
            }
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    *h = out;
    removed
}

#[cfg(test)]
mod tests;

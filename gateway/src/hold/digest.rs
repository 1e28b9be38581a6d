//! The key a hold is found by: a SHA-256 digest of the canonical request and of who made it.
//! A resend of a held request (a client's watchdog gave up and sent it again) has the same key
//! and joins that hold; an approval (or a denial) is bound to the key for `hold.approval_ttl`.
//!
//! What goes in, each field length-prefixed so no two requests can run together:
//! - the method, the normalised path and the query, as they go upstream;
//! - the body as it goes upstream (decoded, masked: what the approver's excerpt was cut from);
//! - every request header as it goes upstream, names and values, sorted — except the ones that
//!   differ between two sends of the same request or carry no meaning for the provider (see
//!   [`VOLATILE`]), and never a credential: credential and billing headers, and every value
//!   marked sensitive (the vault's key, injected before this is computed), are left out. A
//!   header nobody listed counts: an unknown header makes two requests different (a second
//!   hold, the safe side), never the same;
//! - the caller ([`Caller`]): the uid and the cgroup (its path, or its id when the path is not
//!   known). Not the pid or the command name: a CLI that is run again, or a runtime that opens a
//!   new process for its retry, is still the same caller. The cgroup stands for the systemd
//!   unit or session scope, the pod and container, as the identity stage read them: two jobs in
//!   two units, or two pods, never share a hold, even with the same uid.

use http::{HeaderMap, Method};
use sha2::{Digest as _, Sha256};

use crate::{policy::credentials, redirect::identity::Identity};

/// A request's hold key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key([u8; 32]);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({})", self.hex())
    }
}

impl Key {
    /// The digest in hex (for the journal and logs; it reveals nothing of the request).
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Headers that differ between two sends of one request (retry counters, timeouts, tracing
/// and idempotency ids, dates) or that the gateway sets itself (lengths, encodings, host).
pub const VOLATILE: &[&str] = &[
    "host",
    "content-length",
    "content-encoding",
    "accept-encoding",
    "date",
    "idempotency-key",
    "x-request-id",
    "x-client-request-id",
    "request-id",
    "traceparent",
    "tracestate",
    "baggage",
    "sentry-trace",
    "x-amzn-trace-id",
    "x-cloud-trace-context",
    "x-stainless-retry-count",
    "x-stainless-timeout",
    "x-stainless-read-timeout",
    // Signing headers an adapter sets per send (the body's hash is in the key already).
    "x-amz-date",
    "x-amz-security-token",
    "x-amz-content-sha256",
];

/// Who a request is from, for its key: the uid and the cgroup.
pub struct Caller<'a> {
    pub uid: u32,
    pub cgroup: Option<&'a str>,
    pub cgroup_id: u64,
}

impl<'a> From<&'a Identity> for Caller<'a> {
    fn from(id: &'a Identity) -> Self {
        Self {
            uid: id.uid,
            cgroup: id.cgroup.as_deref(),
            cgroup_id: id.cgroup_id,
        }
    }
}

/// The request as it goes upstream.
pub struct Canonical<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

fn field(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_be_bytes());
    h.update(bytes);
}

/// The key of `req` made by `caller`.
pub fn key(req: &Canonical<'_>, caller: &Caller<'_>) -> Key {
    let mut h = Sha256::new();
    field(&mut h, b"gateway-hold-key-v1");
    field(&mut h, req.method.as_str().as_bytes());
    field(&mut h, req.path.as_bytes());
    match req.query {
        Some(q) => field(&mut h, format!("?{q}").as_bytes()),
        None => field(&mut h, b""),
    }
    let mut headers: Vec<(&str, &[u8])> = req
        .headers
        .iter()
        .filter(|(n, v)| {
            let n = n.as_str();
            !v.is_sensitive()
                && !credentials::is_credential_header(n)
                && !credentials::is_billing_header(n)
                && !credentials::HOP_BY_HOP.contains(&n)
                && !VOLATILE.contains(&n)
        })
        .map(|(n, v)| (n.as_str(), v.as_bytes()))
        .collect();
    headers.sort();
    field(&mut h, &(headers.len() as u64).to_be_bytes());
    for (n, v) in headers {
        field(&mut h, n.as_bytes());
        field(&mut h, v);
    }
    field(&mut h, req.body);
    field(&mut h, &caller.uid.to_be_bytes());
    match caller.cgroup {
        Some(path) => field(&mut h, format!("path:{path}").as_bytes()),
        None => field(&mut h, format!("id:{}", caller.cgroup_id).as_bytes()),
    }
    Key(h.finalize().into())
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn id(uid: u32, cgroup: Option<&str>, pid: u32) -> Identity {
        Identity {
            pid,
            tgid: pid,
            uid,
            comm: format!("proc{pid}"),
            cgroup_id: 77,
            cgroup: cgroup.map(String::from),
            ..Default::default()
        }
    }

    fn k(
        method: &Method,
        path: &str,
        query: Option<&str>,
        h: &HeaderMap,
        body: &str,
        who: &Identity,
    ) -> Key {
        key(
            &Canonical {
                method,
                path,
                query,
                headers: h,
                body: body.as_bytes(),
            },
            &Caller::from(who),
        )
    }

    #[test]
    fn same_request_same_caller_same_key_whatever_the_pid_and_the_volatile_headers() {
        let post = Method::POST;
        let body = r#"{"model":"m","messages":[{"role":"user","content":"drop it"}]}"#;
        let a = headers(&[
            ("content-type", "application/json"),
            ("anthropic-version", "2023-06-01"),
            ("x-stainless-retry-count", "0"),
            ("content-length", "62"),
        ]);
        let mut b = headers(&[
            ("anthropic-version", "2023-06-01"),
            ("content-type", "application/json"),
            ("x-stainless-retry-count", "1"),
            ("idempotency-key", "stainless-retry-123"),
            ("traceparent", "00-abc-def-01"),
        ]);
        // The vault's key (sensitive) and any credential header never count.
        let mut key_v = HeaderValue::from_static("sk-real-vault-key");
        key_v.set_sensitive(true);
        b.insert("x-api-key", key_v);
        b.insert("authorization", HeaderValue::from_static("Bearer other"));
        let cg = Some("/user.slice/user-1000.slice/session-3.scope");
        let one = k(&post, "/v1/messages", None, &a, body, &id(1000, cg, 10));
        let two = k(&post, "/v1/messages", None, &b, body, &id(1000, cg, 99));
        assert_eq!(one, two);
        assert_eq!(one.hex().len(), 64);
    }

    #[test]
    fn body_path_query_method_headers_and_caller_each_change_the_key() {
        let post = Method::POST;
        let body = r#"{"q":"drop it"}"#;
        let h = headers(&[("content-type", "application/json")]);
        let cg = Some("/system.slice/ci.service");
        let who = id(1000, cg, 10);
        let base = k(&post, "/v1/messages", None, &h, body, &who);
        let others = [
            k(
                &post,
                "/v1/messages",
                None,
                &h,
                r#"{"q":"drop that"}"#,
                &who,
            ),
            k(&post, "/v1/complete", None, &h, body, &who),
            k(&post, "/v1/messages", Some("beta=true"), &h, body, &who),
            k(&Method::PUT, "/v1/messages", None, &h, body, &who),
            k(
                &post,
                "/v1/messages",
                None,
                &headers(&[
                    ("content-type", "application/json"),
                    ("anthropic-beta", "computer-use-2025-01-24"),
                ]),
                body,
                &who,
            ),
            k(&post, "/v1/messages", None, &h, body, &id(1001, cg, 10)),
            k(
                &post,
                "/v1/messages",
                None,
                &h,
                body,
                &id(1000, Some("/system.slice/other.service"), 10),
            ),
            // The cgroup's id stands in when its path is unknown.
            k(&post, "/v1/messages", None, &h, body, &id(1000, None, 10)),
        ];
        for (i, o) in others.iter().enumerate() {
            assert_ne!(*o, base, "variant {i} has the base's key");
        }
        // Fields cannot run into each other: a path ending where a query begins differs.
        assert_ne!(
            k(&post, "/v1/a?b", None, &h, body, &who),
            k(&post, "/v1/a", Some("b"), &h, body, &who)
        );
    }
}

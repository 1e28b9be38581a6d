//! AWS Signature Version 4 (header form), as the Bedrock adapter signs a request again with
//! the vault's credentials once its body is final ([`super::bedrock`]).
//!
//! The canonical request follows the published algorithm for every service but S3: the path
//! as sent, URI-encoded once more (each byte but the unreserved ones and `/`); query parameters
//! decoded, encoded strictly and sorted; header names lower case and sorted, values trimmed with
//! inner runs of spaces collapsed, repeated headers joined with `,`; the payload's SHA-256 (or
//! `UNSIGNED-PAYLOAD`). Checked against AWS's SigV4 test-suite vectors below.

use hmac::{Hmac, Mac as _};
use sha2::{Digest as _, Sha256};

/// The payload hash of an unsigned payload.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// What the signature is for: the credential's scope.
pub struct Scope<'a> {
    /// `YYYYMMDDTHHMMSSZ` (UTC), the `x-amz-date` value.
    pub amz_date: &'a str,
    pub region: &'a str,
    pub service: &'a str,
}

/// One request as it goes out.
pub struct Request<'a> {
    pub method: &'a str,
    /// The path as sent (its escapes as they are on the wire).
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// (lower-case name, value) of every header to sign, in any order; a name may repeat.
    pub headers: &'a [(&'a str, &'a str)],
    /// Hex SHA-256 of the body, or [`UNSIGNED_PAYLOAD`].
    pub payload_hash: &'a str,
}

pub fn sha256_hex(b: &[u8]) -> String {
    hex(&Sha256::digest(b))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn hmac(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(msg);
    m.finalize().into_bytes().to_vec()
}

/// RFC 3986 encoding as SigV4 wants it: every byte but `A-Za-z0-9-._~` (and `/` when
/// `keep_slash`) as `%XY`, upper-case hex.
fn uri_encode(s: &[u8], keep_slash: bool, out: &mut String) {
    for &b in s {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

fn canonical_query(q: Option<&str>) -> String {
    let Some(q) = q.filter(|q| !q.is_empty()) else {
        return String::new();
    };
    let mut pairs: Vec<(String, String)> = q
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let enc = |s: &str| {
                let (d, _) = crate::policy::credentials::percent_decode(s.as_bytes(), false);
                let mut o = String::new();
                uri_encode(&d, false, &mut o);
                o
            };
            (enc(k), enc(v))
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// A header value in canonical form: trimmed, inner runs of whitespace as one space.
fn canonical_value(v: &str) -> String {
    v.split_ascii_whitespace().collect::<Vec<_>>().join(" ")
}

/// The canonical request and the `SignedHeaders` list.
pub fn canonical_request(r: &Request<'_>) -> (String, String) {
    let mut names: Vec<&str> = r.headers.iter().map(|(n, _)| *n).collect();
    names.sort_unstable();
    names.dedup();
    let mut canon_headers = String::new();
    for n in &names {
        let vals: Vec<String> = r
            .headers
            .iter()
            .filter(|(k, _)| k == n)
            .map(|(_, v)| canonical_value(v))
            .collect();
        canon_headers.push_str(n);
        canon_headers.push(':');
        canon_headers.push_str(&vals.join(","));
        canon_headers.push('\n');
    }
    let signed = names.join(";");
    let mut path = String::new();
    uri_encode(r.path.as_bytes(), true, &mut path);
    if path.is_empty() {
        path.push('/');
    }
    let canon = format!(
        "{}\n{path}\n{}\n{canon_headers}\n{signed}\n{}",
        r.method,
        canonical_query(r.query),
        r.payload_hash
    );
    (canon, signed)
}

/// The `Authorization` header value for `r`, signed with `secret` for `access_key_id`.
pub fn authorization(
    r: &Request<'_>,
    scope: &Scope<'_>,
    access_key_id: &str,
    secret: &str,
) -> String {
    let (canon, signed) = canonical_request(r);
    let date = &scope.amz_date[..scope.amz_date.len().min(8)];
    let cred_scope = format!("{date}/{}/{}/aws4_request", scope.region, scope.service);
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{}\n{cred_scope}\n{}",
        scope.amz_date,
        sha256_hex(canon.as_bytes())
    );
    let k_secret = zeroize::Zeroizing::new(format!("AWS4{secret}"));
    let k_date = hmac(k_secret.as_bytes(), date.as_bytes());
    let k_region = hmac(&k_date, scope.region.as_bytes());
    let k_service = hmac(&k_region, scope.service.as_bytes());
    let k_signing = zeroize::Zeroizing::new(hmac(&k_service, b"aws4_request"));
    let sig = hex(&hmac(&k_signing, to_sign.as_bytes()));
    format!(
        "AWS4-HMAC-SHA256 Credential={access_key_id}/{cred_scope}, SignedHeaders={signed}, Signature={sig}"
    )
}

/// `x-amz-date` for a time in seconds since the epoch.
pub fn amz_date(unix_secs: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(unix_secs)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// The region of a client's SigV4 credential scope (`Credential=AKID/date/region/service/...`
/// in an `Authorization` value, or an `X-Amz-Credential` parameter value, decoded).
pub fn scope_region(credential: &str) -> Option<&str> {
    let mut it = credential.split('/');
    let _akid = it.next()?;
    let _date = it.next()?;
    it.next().filter(|r| !r.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    // AWS's SigV4 test suite (docs.aws.amazon.com/general/latest/gr/signature-v4-test-suite):
    // credentials AKIDEXAMPLE / wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY, us-east-1, "service",
    // 20150830T123600Z, host example.amazonaws.com.
    const AKID: &str = "AKIDEXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    const SCOPE: Scope<'static> = Scope {
        amz_date: "20150830T123600Z",
        region: "us-east-1",
        service: "service",
    };

    fn sign(
        method: &str,
        path: &str,
        query: Option<&str>,
        extra: &[(&str, &str)],
        body: &[u8],
    ) -> String {
        let mut h = vec![
            ("host", "example.amazonaws.com"),
            ("x-amz-date", "20150830T123600Z"),
        ];
        h.extend_from_slice(extra);
        let hash = sha256_hex(body);
        let r = Request {
            method,
            path,
            query,
            headers: &h,
            payload_hash: &hash,
        };
        authorization(&r, &SCOPE, AKID, SECRET)
    }

    fn sig(a: &str) -> &str {
        a.rsplit_once("Signature=").unwrap().1
    }

    #[test]
    fn aws_test_suite_vectors() {
        let a = sign("GET", "/", None, &[], b"");
        assert_eq!(
            a,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
        // get-vanilla-query-order-key-case
        assert_eq!(
            sig(&sign(
                "GET",
                "/",
                Some("Param2=value2&Param1=value1"),
                &[],
                b""
            )),
            "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"
        );
        // post-vanilla
        assert_eq!(
            sig(&sign("POST", "/", None, &[], b"")),
            "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"
        );
        // post-x-www-form-urlencoded
        let a = sign(
            "POST",
            "/",
            None,
            &[("content-type", "application/x-www-form-urlencoded")],
            b"Param1=value1",
        );
        assert!(
            a.contains("SignedHeaders=content-type;host;x-amz-date,"),
            "{a}"
        );
        assert_eq!(
            sig(&a),
            "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a"
        );
        // get-header-value-trim
        let a = sign(
            "GET",
            "/",
            None,
            &[("my-header1", " value1"), ("my-header2", " \"a   b   c\"")],
            b"",
        );
        assert_eq!(
            sig(&a),
            "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736"
        );
        // get-header-key-duplicate: repeated headers joined with `,` in order
        let a = sign(
            "GET",
            "/",
            None,
            &[
                ("my-header1", "value2"),
                ("my-header1", "value2"),
                ("my-header1", "value1"),
            ],
            b"",
        );
        assert_eq!(
            sig(&a),
            "c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea"
        );
    }

    #[test]
    fn canonical_forms() {
        let h = [("host", "h")];
        let r = Request {
            method: "POST",
            path: "/model/anthropic.claude-3-haiku-20240307-v1:0/converse",
            query: Some("b=2&a=x%2Fy&a=1"),
            headers: &h,
            payload_hash: UNSIGNED_PAYLOAD,
        };
        let (c, signed) = canonical_request(&r);
        assert_eq!(signed, "host");
        assert_eq!(
            c,
            "POST\n/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse\na=1&a=x%2Fy&b=2\nhost:h\n\nhost\nUNSIGNED-PAYLOAD"
        );
        // A path as boto3 sends an inference-profile ARN: escapes are encoded again.
        let r = Request {
            path: "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fx/converse",
            query: None,
            ..r
        };
        assert!(canonical_request(&r).0.contains("/model/arn%253Aaws%253Abedrock%253Aus-east-1%253A1%253Ainference-profile%252Fx/converse\n"));
        assert_eq!(amz_date(1440938160), "20150830T123600Z");
        assert_eq!(
            scope_region("AKIA/20150830/eu-west-3/bedrock/aws4_request"),
            Some("eu-west-3")
        );
        assert_eq!(scope_region("AKIA"), None);
    }
}

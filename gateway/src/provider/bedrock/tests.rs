use http::{HeaderValue, Request};

use super::*;
use crate::provider::adapter::Framing;

fn parts(uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
    let mut b = Request::post(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap().into_parts().0
}

const HOST: &str = "bedrock-runtime.us-east-1.amazonaws.com";

fn entry(k: &str) -> Entry {
    Entry::new(Secret::new(k))
}

#[test]
fn regions_endpoints_and_framing() {
    assert_eq!(host_region(HOST).as_deref(), Some("us-east-1"));
    assert_eq!(
        host_region("bedrock-runtime-fips.us-gov-west-1.amazonaws.com").as_deref(),
        Some("us-gov-west-1")
    );
    assert_eq!(
        host_region("vpce-1.bedrock-runtime.eu-west-3.vpce.amazonaws.com").as_deref(),
        Some("eu-west-3")
    );
    assert_eq!(host_region("bedrock-runtime.amazonaws.com"), None);
    assert_eq!(
        Bedrock
            .model_in_path(
                "/model/arn:aws:bedrock:us-east-1:1:inference-profile%2Fus.x-v1:0/converse"
            )
            .as_deref(),
        Some("arn:aws:bedrock:us-east-1:1:inference-profile/us.x-v1:0")
    );
    assert_eq!(Bedrock.model_in_path("/guardrail/g"), None);
    let b = Bedrock;
    let m = Method::POST;
    for (p, want) in [
        (
            "/model/anthropic.claude-3-haiku-20240307-v1:0/converse",
            "converse",
        ),
        ("/model/x/converse-stream", "converse-stream"),
        ("/model/x/invoke", "invoke"),
        (
            "/model/arn:aws:bedrock:us-east-1:1:inference-profile%2fx/invoke-with-response-stream",
            "invoke-with-response-stream",
        ),
        ("/model/x/count-tokens", "count-tokens"),
        ("/model/x/y/z", "other"),
        ("/guardrail/g/version/1/apply", "apply-guardrail"),
        ("/", "unknown"),
    ] {
        assert_eq!(b.endpoint(&m, p), want, "{p}");
    }
    let h = HeaderMap::new();
    assert_eq!(
        b.framing("/model/x/converse-stream", None, &h),
        Framing::EventStream
    );
    assert_eq!(
        b.framing("/model/x/invoke-with-response-stream", None, &h),
        Framing::EventStream
    );
    assert_eq!(b.framing("/model/x/converse", None, &h), Framing::Plain);
}

#[test]
fn streaming_signed_bodies_and_foreign_regions_are_refused_before_anything_is_read() {
    let b = Bedrock;
    let p = parts(
        "/model/x/converse",
        &[("x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD")],
    );
    assert!(
        b.check_head(HOST, &p)
            .unwrap_err()
            .contains("streaming-signed")
    );
    let p = parts("/model/x/converse", &[("content-encoding", "aws-chunked")]);
    assert!(b.check_head(HOST, &p).is_err());
    let auth = "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20260101/eu-west-1/bedrock/aws4_request, SignedHeaders=host, Signature=00";
    let p = parts("/model/x/converse", &[("authorization", auth)]);
    let e = b.check_head(HOST, &p).unwrap_err();
    assert!(
        e.contains("`eu-west-1`") && e.contains("`us-east-1`") && !e.contains("AKIA"),
        "{e}"
    );
    let p = parts(
        "/model/x/converse?X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20260101%2Feu-west-1%2Fbedrock%2Faws4_request",
        &[],
    );
    assert!(b.check_head(HOST, &p).is_err());
    let ok = auth.replace("eu-west-1", "us-east-1");
    let p = parts(
        "/model/x/converse",
        &[
            ("authorization", &ok),
            ("x-amz-content-sha256", "UNSIGNED-PAYLOAD"),
        ],
    );
    assert!(b.check_head(HOST, &p).is_ok());
}

/// The signature the adapter put on, recomputed from what goes out.
fn verify(p: &http::request::Parts, body: &[u8], akid: &str, secret: &str) {
    let auth = p.headers["authorization"].to_str().unwrap();
    assert!(p.headers["authorization"].is_sensitive());
    let signed = auth
        .split("SignedHeaders=")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap();
    let hs: Vec<(&str, &str)> = signed
        .split(';')
        .map(|n| (n, p.headers[n].to_str().unwrap()))
        .collect();
    let date = p.headers["x-amz-date"].to_str().unwrap();
    let hash = match p
        .headers
        .get("x-amz-content-sha256")
        .map(|v| v.to_str().unwrap())
    {
        Some(sigv4::UNSIGNED_PAYLOAD) => sigv4::UNSIGNED_PAYLOAD.to_string(),
        _ => sigv4::sha256_hex(body),
    };
    let r = sigv4::Request {
        method: "POST",
        path: p.uri.path(),
        query: p.uri.query(),
        headers: &hs,
        payload_hash: &hash,
    };
    let scope = sigv4::Scope {
        amz_date: date,
        region: "us-east-1",
        service: "bedrock",
    };
    assert_eq!(auth, sigv4::authorization(&r, &scope, akid, secret));
    assert!(auth.contains(&format!(
        "Credential={akid}/{}/us-east-1/bedrock/aws4_request",
        &date[..8]
    )));
}

#[test]
fn the_vault_credentials_sign_the_final_body() {
    let b = Bedrock;
    let body = br#"{"messages":[{"role":"user","content":[{"text":"hi [MASKED]"}]}]}"#;
    let mut p = parts(
        "/model/anthropic.claude-3-haiku-20240307-v1:0/converse",
        &[
            ("host", HOST),
            ("content-type", "application/json"),
            ("x-amzn-bedrock-trace", "ENABLED"),
        ],
    );
    let e = entry("AKIAVAULT000000000001:vaultsecret/abc+def");
    let mut h = HeaderMap::new();
    b.inject_entry(&mut h, &e).unwrap();
    assert!(
        h.is_empty(),
        "SigV4 entries sign later, they inject nothing"
    );
    b.sign(HOST, &mut p, body, Some(&e)).unwrap();
    verify(&p, body, "AKIAVAULT000000000001", "vaultsecret/abc+def");
    let auth = p.headers["authorization"].to_str().unwrap();
    assert!(
        auth.contains("SignedHeaders=content-type;host;x-amz-date;x-amzn-bedrock-trace,"),
        "{auth}"
    );
    assert!(p.headers.get("x-amz-security-token").is_none());
    assert!(
        p.headers.get("x-amz-content-sha256").is_none(),
        "not added when the client sent none"
    );

    // A session token goes in x-amz-security-token, signed; a client's content hash is
    // recomputed over the body that goes out.
    let mut p = parts(
        "/model/x/converse",
        &[("host", HOST), ("x-amz-content-sha256", "0000")],
    );
    let e = entry("ASIAVAULT000000000001:s3cr3t:FwoGZXIvYXdzEXAMPLETOKEN==");
    b.sign(HOST, &mut p, body, Some(&e)).unwrap();
    assert_eq!(
        p.headers["x-amz-security-token"],
        "FwoGZXIvYXdzEXAMPLETOKEN=="
    );
    assert!(p.headers["x-amz-security-token"].is_sensitive());
    assert_eq!(
        p.headers["x-amz-content-sha256"],
        sigv4::sha256_hex(body).as_str()
    );
    verify(&p, body, "ASIAVAULT000000000001", "s3cr3t");
    assert!(
        p.headers["authorization"]
            .to_str()
            .unwrap()
            .contains("x-amz-security-token")
    );

    // UNSIGNED-PAYLOAD stays.
    let mut p = parts(
        "/model/x/converse",
        &[("host", HOST), ("x-amz-content-sha256", "UNSIGNED-PAYLOAD")],
    );
    b.sign(HOST, &mut p, body, Some(&e)).unwrap();
    assert_eq!(p.headers["x-amz-content-sha256"], "UNSIGNED-PAYLOAD");
    verify(&p, b"anything", "ASIAVAULT000000000001", "s3cr3t");

    // No credential presented: nothing signed.
    let mut p = parts("/model/x/converse", &[("host", HOST)]);
    b.sign(HOST, &mut p, body, None).unwrap();
    assert!(p.headers.get("authorization").is_none());
}

#[test]
fn a_bedrock_api_key_in_the_vault_goes_in_as_bearer_and_bad_entries_are_errors() {
    let b = Bedrock;
    let e = entry("ABSKQmVkcm9ja0FQSUtleS1leGFtcGxlLWF0LTEyMzQ1Njc4OTAxMjpzZWNyZXQ=");
    let mut h = HeaderMap::new();
    b.inject_entry(&mut h, &e).unwrap();
    assert_eq!(
        h["authorization"],
        HeaderValue::from_str(&format!("Bearer {}", e.key.expose())).unwrap()
    );
    let mut p = parts("/model/x/converse", &[("host", HOST)]);
    p.headers.extend(h);
    b.sign(HOST, &mut p, b"{}", Some(&e)).unwrap();
    assert!(
        p.headers["authorization"]
            .to_str()
            .unwrap()
            .starts_with("Bearer ABSK"),
        "untouched"
    );
    for bad in ["AKIA:", ":secret", "AKIA:sec ret"] {
        let mut p = parts("/model/x/converse", &[("host", HOST)]);
        let err = b.sign(HOST, &mut p, b"{}", Some(&entry(bad))).unwrap_err();
        assert!(matches!(err, SignError::BadEntry(_)));
        assert!(
            !err.to_string().contains("secret"),
            "never quotes the entry"
        );
    }
    // The answer-side detector knows the secret access key, not the joined entry.
    assert_eq!(
        b.answer_key(&entry("AKIAX:the-secret-key:tok")).expose(),
        "the-secret-key"
    );
    let (_, h, body) = b.error_response(StatusCode::FORBIDDEN, ErrorKind::Blocked, "no");
    assert_eq!(h["x-amzn-errortype"], "AccessDeniedException");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
        json!({"message": "no"})
    );
}

#[test]
fn a_presigned_url_and_a_session_token_header_lose_their_credentials_by_name() {
    let mut p = parts(
        "/model/x/converse?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20260101%2Fus-east-1%2Fbedrock%2Faws4_request&X-Amz-Date=20260101T000000Z&X-Amz-Expires=300&X-Amz-SignedHeaders=host&X-Amz-Security-Token=tok&X-Amz-Signature=abcd&keep=1",
        &[
            ("x-amz-security-token", "client-session-token"),
            ("host", HOST),
        ],
    );
    let stripped = crate::policy::credentials::scrub(&mut p, Bedrock.credential_params()).unwrap();
    assert_eq!(stripped.params, 7);
    assert_eq!(stripped.headers, 1);
    assert!(stripped.presented());
    assert_eq!(p.uri.query(), Some("keep=1"));
    assert!(p.headers.get("x-amz-security-token").is_none());
}

use super::*;
use crate::{
    policy::scan::{Action, Direction, PolicyConfig, RuleConfig},
    redirect::identity::Identity,
};

const GH: &str = "ghp_aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE3fG5";
const AWS: &str = "AKIAIOSFODNN7EXAMPLE";

fn scanner() -> Scanner {
    Scanner::new(&[], &PolicyConfig::default()).unwrap()
}

fn run(sc: &Scanner, body: &[u8], ct: &str) -> Result<Inspected, RequestError> {
    let id = Identity::default();
    Inspector {
        scanner: sc,
        ctx: Ctx {
            dir: Direction::Request,
            id: &id,
        },
        unreadable: Unreadable::Refuse,
    }
    .inspect(body, ct)
}

fn sent(i: &Inspected, body: &[u8]) -> String {
    String::from_utf8_lossy(i.forward.as_deref().unwrap_or(body)).into_owned()
}

#[test]
fn every_string_of_a_json_body_is_scanned_keys_and_escapes_too() {
    let sc = scanner();
    let body = format!(
        r#"{{"model": "m", "metadata": {{"note": "{GH}"}}, "stop": ["{AWS}"], "tools": [{{"type": "function", "function": {{"name": "f", "description": "use {GH}"}}}}], "{GH}": 1, "esc": "\u0067hp_aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE3fG5"}}"#
    );
    let i = run(&sc, body.as_bytes(), "application/json").unwrap();
    let out = sent(&i, body.as_bytes());
    assert!(!out.contains("ghp_") && !out.contains(AWS), "{out}");
    assert_eq!(
        out.matches("[MASKED:github-classic-token]").count(),
        4,
        "{out}"
    );
    assert_eq!(i.shape, "json");
    // Still JSON, with the same structure.
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["model"], "m");
    assert_eq!(v["stop"][0], "[MASKED:aws-access-key-id]");
}

#[test]
fn nothing_found_sends_the_body_byte_for_byte() {
    let sc = scanner();
    let body = br#"{"b": 1,   "a": "hello", "n": 1.0e3}"#;
    let i = run(&sc, body, "application/json").unwrap();
    assert!(i.forward.is_none() && i.record.is_none() && i.hits.is_empty());
}

#[test]
fn duplicate_keys_and_broken_json_are_refused() {
    let sc = scanner();
    for b in [
        &br#"{"model": "a", "model": "b"}"#[..],
        br#"{"m": {"x": 1, "\u0078": 2}}"#,
    ] {
        assert!(matches!(
            run(&sc, b, "application/json"),
            Err(RequestError::DuplicateKey)
        ));
    }
    assert!(matches!(
        run(&sc, b"{\"a\": ", "application/json"),
        Err(RequestError::Unreadable(_))
    ));
    // Claims JSON but is not: refused too.
    assert!(matches!(
        run(&sc, b"hello", "application/json"),
        Err(RequestError::Unreadable(_))
    ));
    // The switch: scanned as bytes, forwarded unchanged when clean, refused with a hit.
    let id = Identity::default();
    let ins = Inspector {
        scanner: &sc,
        ctx: Ctx {
            dir: Direction::Request,
            id: &id,
        },
        unreadable: Unreadable::ScanRaw,
    };
    assert!(
        ins.inspect(b"{\"a\": ", "application/json")
            .unwrap()
            .forward
            .is_none()
    );
    assert!(matches!(
        ins.inspect(format!("{{\"a\": \"{GH}").as_bytes(), "application/json"),
        Err(RequestError::Unmaskable { .. })
    ));
}

#[test]
fn json_lines_text_forms_and_multipart() {
    let sc = scanner();
    let jsonl = format!(
        "{{\"custom_id\": \"1\", \"body\": {{\"messages\": [{{\"content\": \"{GH}\"}}]}}}}\r\n{{\"custom_id\": \"2\"}}\n"
    );
    let i = run(&sc, jsonl.as_bytes(), "").unwrap();
    assert_eq!(i.shape, "jsonl");
    let out = sent(&i, jsonl.as_bytes());
    assert!(
        !out.contains(GH) && out.ends_with("{\"custom_id\": \"2\"}\n") && out.contains("}\r\n"),
        "{out}"
    );

    let text = format!("plain text with {AWS} in it");
    let i = run(&sc, text.as_bytes(), "text/plain").unwrap();
    assert_eq!(
        sent(&i, text.as_bytes()),
        "plain text with [MASKED:aws-access-key-id] in it"
    );

    let form = format!("model=m&input=key+{}&x=1", GH.replace('_', "%5F"));
    let i = run(&sc, form.as_bytes(), "application/x-www-form-urlencoded").unwrap();
    let out = sent(&i, form.as_bytes());
    assert!(
        out.starts_with("model=m&input=key+%5BMASKED%3Agithub-classic-token%5D&x=1"),
        "{out}"
    );

    let mp = format!(
        "--XyZ\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"b.jsonl\"\r\nContent-Type: application/octet-stream\r\n\r\n{{\"a\": \"{GH}\"}}\n{{\"b\": \"{AWS}\"}}\n\r\n--XyZ--\r\n"
    );
    let i = run(&sc, mp.as_bytes(), "multipart/form-data; boundary=XyZ").unwrap();
    let out = sent(&i, mp.as_bytes());
    assert!(!out.contains(GH) && !out.contains(AWS), "{out}");
    assert!(out.starts_with(
        "--XyZ\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--XyZ\r\n"
    ));
    assert!(out.ends_with("\r\n--XyZ--\r\n"));
    // A secret in a binary part cannot be masked: refused.
    let mut bin = b"--b\r\nContent-Type: audio/wav\r\n\r\n\xff\xfe\x00".to_vec();
    bin.extend_from_slice(GH.as_bytes());
    bin.extend_from_slice(b"\r\n--b--");
    assert!(matches!(
        run(&sc, &bin, "multipart/form-data; boundary=b"),
        Err(RequestError::Unmaskable { .. })
    ));
    assert!(matches!(
        run(&sc, b"no boundary here", "multipart/form-data; boundary=b"),
        Err(RequestError::Unreadable(_))
    ));
}

#[test]
fn base64_text_is_decoded_and_masked_inside() {
    use base64::Engine as _;
    let sc = scanner();
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("config: token {GH}\n"));
    for body in [
        format!(r#"{{"inlineData": {{"mimeType": "text/plain", "data": "{b64}"}}}}"#),
        format!(r#"{{"file": {{"file_data": "data:text/plain;base64,{b64}"}}}}"#),
        format!(r#"{{"x": "{b64}"}}"#),
    ] {
        let i = run(&sc, body.as_bytes(), "application/json").unwrap();
        let out = sent(&i, body.as_bytes());
        assert!(!out.contains(&b64), "{out}");
        let v: Value = serde_json::from_str(&out).unwrap();
        let s = v
            .pointer("/inlineData/data")
            .or(v.pointer("/file/file_data"))
            .or(v.pointer("/x"))
            .unwrap()
            .as_str()
            .unwrap();
        let payload = s.rsplit(',').next().unwrap();
        let dec = base64::engine::general_purpose::STANDARD
            .decode(payload)
            .unwrap();
        assert_eq!(
            String::from_utf8(dec).unwrap(),
            "config: token [MASKED:github-classic-token]\n"
        );
    }
    // Binary base64 with a secret inside: refused.
    let mut raw = vec![0xffu8, 0xfe, 0];
    raw.extend_from_slice(GH.as_bytes());
    let b = base64::engine::general_purpose::STANDARD.encode(&raw);
    let body = format!(r#"{{"data": "{b}"}}"#);
    assert!(matches!(
        run(&sc, body.as_bytes(), ""),
        Err(RequestError::Unmaskable { .. })
    ));
}

#[test]
fn a_held_secret_is_sent_as_written_but_recorded_masked() {
    let rules = [RuleConfig {
        name: "hold-gh".into(),
        detector: Some("github-classic-token".into()),
        pattern: None,
        on: vec![Direction::Request],
        action: Action::Hold,
        replacement: None,
        allow: vec![],
        allow_regex: vec![],
        who: None,
    }];
    let sc = Scanner::new(&rules, &PolicyConfig::default()).unwrap();
    let body = format!(r#"{{"messages": [{{"content": "{GH} and {AWS}"}}]}}"#);
    let i = run(&sc, body.as_bytes(), "application/json").unwrap();
    assert_eq!(i.verdict().unwrap().effect, Effect::Hold);
    let fwd = sent(&i, body.as_bytes());
    assert!(fwd.contains(GH) && !fwd.contains(AWS), "{fwd}");
    let rec = String::from_utf8(i.record.clone().unwrap()).unwrap();
    assert!(
        !rec.contains(GH) && rec.contains("[MASKED:hold-gh]") && !rec.contains(AWS),
        "{rec}"
    );
    assert!(i.texts.iter().all(|t| !t.contains(GH)));
    assert_eq!(
        i.json.as_ref().unwrap()["messages"][0]["content"],
        "[MASKED:hold-gh] and [MASKED:aws-access-key-id]"
    );
}

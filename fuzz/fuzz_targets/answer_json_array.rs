//! The JSON-array answer decoder (`MaskedBody`, `Kind::JsonArray`: Gemini's
//! streamGenerateContent without `alt=sse`), with the answer cut into arbitrary chunks. Two
//! modes: arbitrary bytes (it must end, without panicking), and a Gemini stream whose text
//! carries a planted secret split across elements anywhere: the output must parse as one JSON
//! array whose text never holds the secret.
#![no_main]

use gateway::response::body::Kind;
use gateway_fuzz::{SECRETS, contains, cut_bytes, cut_text, drive, plant};
use libfuzzer_sys::{arbitrary, fuzz_target};

#[derive(arbitrary::Arbitrary, Debug)]
struct Input {
    raw: Option<Vec<u8>>,
    text: String,
    secret: u8,
    at: u16,
    deltas: Vec<u8>,
    chunks: Vec<u16>,
}

fuzz_target!(|inp: Input| {
    if let Some(raw) = inp.raw {
        let _ = drive(Kind::JsonArray, cut_bytes(&raw, &inp.chunks));
        return;
    }
    let secret = SECRETS[usize::from(inp.secret) % SECRETS.len()];
    let text = plant(&inp.text, usize::from(inp.at), secret);
    let pieces = cut_text(&text, &inp.deltas);
    let n = pieces.len();
    let elems: Vec<String> = pieces
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut c = serde_json::json!({"content": {"parts": [{"text": p}], "role": "model"}, "index": 0});
            if i + 1 == n {
                c["finishReason"] = "STOP".into();
            }
            serde_json::json!({"candidates": [c]}).to_string()
        })
        .collect();
    let wire = format!("[{}]", elems.join(",\r\n"));
    let out = drive(Kind::JsonArray, cut_bytes(wire.as_bytes(), &inp.chunks))
        .expect("a well-formed stream is answered");
    assert!(!contains(&out, secret), "secret in the output bytes");
    let v: serde_json::Value = serde_json::from_slice(&out)
        .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&out)));
    let seen: String = v
        .as_array()
        .expect("an array")
        .iter()
        .filter_map(|e| e.pointer("/candidates/0/content/parts/0/text")?.as_str())
        .collect();
    assert!(
        !seen.contains(secret),
        "secret in the streamed text: {seen:?}"
    );
});

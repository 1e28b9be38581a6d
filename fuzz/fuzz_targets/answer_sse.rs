//! The SSE answer decoder (`MaskedBody`, `Kind::Sse`), with the answer cut into arbitrary
//! chunks. Two modes: arbitrary bytes (it must end, without panicking), and an OpenAI chat
//! stream whose text carries a planted secret, split across events anywhere: the output,
//! re-parsed, must be valid events whose text never holds the secret.
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
    crlf: bool,
}

fuzz_target!(|inp: Input| {
    if let Some(raw) = inp.raw {
        let _ = drive(Kind::Sse, cut_bytes(&raw, &inp.chunks));
        return;
    }
    let secret = SECRETS[usize::from(inp.secret) % SECRETS.len()];
    let text = plant(&inp.text, usize::from(inp.at), secret);
    let nl = if inp.crlf { "\r\n" } else { "\n" };
    let mut wire = String::new();
    for d in cut_text(&text, &inp.deltas) {
        let ev = serde_json::json!({"id": "c1", "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"content": d}, "finish_reason": null}]});
        wire.push_str(&format!("data: {ev}{nl}{nl}"));
    }
    wire.push_str(&format!("data: [DONE]{nl}{nl}"));
    let out = drive(Kind::Sse, cut_bytes(wire.as_bytes(), &inp.chunks))
        .expect("a well-formed stream is answered");
    assert!(!contains(&out, secret), "secret in the output bytes");
    let out = String::from_utf8(out).expect("the output is UTF-8");
    let mut seen = String::new();
    for ev in out.split("\n\n").filter(|e| !e.trim().is_empty()) {
        let data = ev
            .lines()
            .find_map(|l| l.strip_prefix("data: "))
            .unwrap_or_else(|| panic!("an event without data: {ev:?}"));
        if data == "[DONE]" {
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(data).unwrap_or_else(|e| panic!("{e}: {data:?}"));
        if let Some(t) = v
            .pointer("/choices/0/delta/content")
            .and_then(|t| t.as_str())
        {
            seen.push_str(t);
        }
    }
    assert!(
        !seen.contains(secret),
        "secret in the streamed text: {seen:?}"
    );
});

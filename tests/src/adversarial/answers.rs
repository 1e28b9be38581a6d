//! Answer cases: the fake provider plays a script (status, headers, body chunks) and the judge
//! reads what the client got: never a planted secret or a piece of a vault key, in any
//! spelling; where the contract says "masked", the `[MASKED:` form, the stream's end marker and
//! a framing the client can still parse.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{
    Case, Expect, Got, Provider, VAULT,
    codec::{self, b64, views},
    contains, key_pieces, label, needles,
    secrets::for_case,
};
use crate::provider::{ProviderEnv, Script};

use Provider::{Anthropic as AN, Gemini as GM, OpenAi as OA};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Sse,
    Ndjson,
    JsonArray,
    Json,
    Any,
}

#[derive(Debug, Clone)]
pub struct AnswerCase {
    pub name: String,
    pub provider: Provider,
    pub path: String,
    pub request: String,
    pub script: Script,
    pub planted: Vec<String>,
    pub framing: Framing,
    /// Texts that must reach the client (the end marker, an unedited thinking block, ...).
    pub contains: Vec<String>,
    /// Texts that must not (the signature of a thinking block that had to go).
    pub forbid: Vec<String>,
    pub masked: bool,
    /// The client gets the script's status (masked, not refused).
    pub keep_status: bool,
    /// The request must have carried the vault's key (so an echo test is not vacuous).
    pub vault_echo: bool,
}

impl AnswerCase {
    fn new(name: &str, p: Provider, path: &str, request: &str, framing: Framing) -> Self {
        Self {
            name: name.to_string(),
            provider: p,
            path: path.to_string(),
            request: request.to_string(),
            script: Script {
                status: 200,
                headers: vec![],
                chunks: vec![],
            },
            planted: vec![],
            framing,
            contains: vec![],
            forbid: vec![],
            masked: true,
            keep_status: true,
            vault_echo: false,
        }
    }

    fn ctype(mut self, ct: &str) -> Self {
        if !ct.is_empty() {
            self.script.headers.push(("content-type".into(), ct.into()));
        }
        self
    }

    fn chunks(mut self, c: Vec<String>) -> Self {
        self.script.chunks = c.into_iter().map(String::into_bytes).collect();
        self
    }

    fn request_case(&self) -> Case {
        Case::new(&self.name, self.provider, "POST", &self.path)
            .json(&self.request)
            .header("x-test-script", &self.name)
            .header("Accept-Encoding", "identity")
            .expect(Expect::Clean { masked: false })
    }
}

/// Split `s` into pieces of `n` characters.
fn pieces(s: &str, n: usize) -> Vec<String> {
    s.chars()
        .collect::<Vec<_>>()
        .chunks(n)
        .map(|c| c.iter().collect())
        .collect()
}

fn end_marker(name: &str) -> String {
    format!("ENDMARK{:x}", super::secrets::seed_of(name) & 0xffffff)
}

fn oa_chunk(delta: Value) -> String {
    let c = json!({"id": "chatcmpl-adv", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
        "choices": [{"index": 0, "delta": delta, "finish_reason": null}]});
    format!("data: {c}\n\n")
}

fn oa_end(marker: &str) -> Vec<String> {
    let fin = json!({"id": "chatcmpl-adv", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
    vec![
        oa_chunk(json!({"content": format!(" {marker}")})),
        format!("data: {fin}\n\n"),
        "data: [DONE]\n\n".into(),
    ]
}

/// OpenAI chat stream: the secret split into `n`-char pieces, each piece placed by `f`.
fn oa_stream(name: &str, n: usize, f: impl Fn(&str) -> Value) -> (Vec<String>, String, String) {
    let (_, s) = for_case(name, false);
    let m = end_marker(name);
    let mut ev = vec![oa_chunk(json!({"role": "assistant", "content": ""}))];
    ev.extend(pieces(&s, n).iter().map(|p| oa_chunk(f(p))));
    ev.extend(oa_end(&m));
    (ev, s, m)
}

fn sse_case(
    name: &str,
    p: Provider,
    path: &str,
    req: &str,
    ev: Vec<String>,
    s: String,
    m: String,
) -> AnswerCase {
    let mut a = AnswerCase::new(name, p, path, req, Framing::Sse)
        .ctype("text/event-stream")
        .chunks(ev);
    a.planted.push(s);
    a.contains.push(m);
    a
}

const OA_REQ: &str =
    r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
const OA_REQ_PLAIN: &str = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
const RESP_REQ: &str = r#"{"model":"gpt-4.1","stream":true,"input":"hi"}"#;
const AN_REQ: &str = r#"{"model":"claude-sonnet-4-5","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
const AN_REQ_PLAIN: &str =
    r#"{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}"#;
const GM_REQ: &str = r#"{"contents":[{"role":"user","parts":[{"text":"hi"}]}]}"#;
const CHAT: &str = "/v1/chat/completions";

fn an_ev(ty: &str, data: Value) -> String {
    format!("event: {ty}\ndata: {data}\n\n")
}

/// An Anthropic stream: message_start, the given blocks' events, a final text block holding
/// the end marker, message_delta, message_stop.
fn an_stream(blocks: Vec<Vec<String>>, marker: &str) -> Vec<String> {
    let mut ev = vec![an_ev(
        "message_start",
        json!({"type": "message_start", "message": {"id": "msg_adv", "type": "message", "role": "assistant", "model": "claude-x", "content": [], "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 5, "output_tokens": 1}}}),
    )];
    let n = blocks.len();
    for b in blocks {
        ev.extend(b);
    }
    ev.push(an_ev("content_block_start", json!({"type": "content_block_start", "index": n, "content_block": {"type": "text", "text": ""}})));
    ev.push(an_ev("content_block_delta", json!({"type": "content_block_delta", "index": n, "delta": {"type": "text_delta", "text": format!(" {marker}")}})));
    ev.push(an_ev(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": n}),
    ));
    ev.push(an_ev("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 6}})));
    ev.push(an_ev("message_stop", json!({"type": "message_stop"})));
    ev
}

fn an_text_block(i: usize, parts: &[String]) -> Vec<String> {
    let mut ev = vec![an_ev(
        "content_block_start",
        json!({"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}}),
    )];
    for p in parts {
        ev.push(an_ev("content_block_delta", json!({"type": "content_block_delta", "index": i, "delta": {"type": "text_delta", "text": p}})));
    }
    ev.push(an_ev(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": i}),
    ));
    ev
}

fn an_thinking_block(i: usize, thinking: &[String], sig: &str) -> Vec<String> {
    let mut ev = vec![an_ev(
        "content_block_start",
        json!({"type": "content_block_start", "index": i, "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
    )];
    for p in thinking {
        ev.push(an_ev("content_block_delta", json!({"type": "content_block_delta", "index": i, "delta": {"type": "thinking_delta", "thinking": p}})));
    }
    ev.push(an_ev("content_block_delta", json!({"type": "content_block_delta", "index": i, "delta": {"type": "signature_delta", "signature": sig}})));
    ev.push(an_ev(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": i}),
    ));
    ev
}

fn gm_chunk(parts: Value, last: bool) -> Value {
    let mut cand = json!({"content": {"parts": parts, "role": "model"}, "index": 0});
    if last {
        cand["finishReason"] = json!("STOP");
    }
    json!({"candidates": [cand], "modelVersion": "gemini-x"})
}

/// Gemini chunks: the secret in `n`-char text pieces, then the end marker.
fn gm_chunks(name: &str, n: usize) -> (Vec<Value>, String, String) {
    let (_, s) = for_case(name, false);
    let m = end_marker(name);
    let mut c: Vec<Value> = pieces(&s, n)
        .iter()
        .map(|p| gm_chunk(json!([{"text": p}]), false))
        .collect();
    c.push(gm_chunk(json!([{"text": format!(" {m}")}]), true));
    (c, s, m)
}

fn json_array_frames(c: &[Value]) -> Vec<String> {
    let mut out = vec![];
    for (i, v) in c.iter().enumerate() {
        out.push(format!("{}{v}", if i == 0 { "[" } else { ",\r\n" }));
    }
    out.push("]".into());
    out
}

fn json_case(name: &str, p: Provider, path: &str, req: &str, body: Value, s: String) -> AnswerCase {
    let m = end_marker(name);
    let text = body.to_string().replace("@END", &m);
    let mut a = AnswerCase::new(name, p, path, req, Framing::Json)
        .ctype("application/json")
        .chunks(pieces(&text, 40));
    a.planted.push(s);
    a.contains.push(m);
    a
}

/// Every answer case in the default configuration (detectors mask both ways).
pub fn answer_cases() -> Vec<AnswerCase> {
    let mut v = vec![];
    // OpenAI chat streams, every text field, split across events.
    let text = |p: &str| json!({"content": p});
    for (name, n, ct) in [
        ("ans-oa-sse-content-whole", 1000, "text/event-stream"),
        ("ans-oa-sse-content-split", 9, "text/event-stream"),
        ("ans-oa-sse-content-split-3", 3, "text/event-stream"),
        ("ans-oa-sse-octet-stream", 7, "application/octet-stream"),
        ("ans-oa-sse-text-plain", 7, "text/plain"),
        ("ans-oa-sse-no-content-type", 7, ""),
        (
            "ans-oa-sse-charset-param",
            7,
            "text/event-stream; charset=utf-8",
        ),
    ] {
        let (ev, s, m) = oa_stream(name, n, text);
        let mut a = sse_case(name, OA, CHAT, OA_REQ, ev, s, m);
        a.script.headers.clear();
        v.push(a.ctype(ct));
    }
    for (name, eol) in [("ans-oa-sse-crlf", "\r\n"), ("ans-oa-sse-bare-cr", "\r")] {
        let (ev, s, m) = oa_stream(name, 7, text);
        let ev = ev.into_iter().map(|e| e.replace('\n', eol)).collect();
        v.push(sse_case(name, OA, CHAT, OA_REQ, ev, s, m));
    }
    for (name, field) in [
        ("ans-oa-sse-reasoning-content", "reasoning_content"),
        ("ans-oa-sse-reasoning", "reasoning"),
        ("ans-oa-sse-refusal", "refusal"),
    ] {
        let (ev, s, m) = oa_stream(name, 8, |p| json!({field: p}));
        v.push(sse_case(name, OA, CHAT, OA_REQ, ev, s, m));
    }
    let (ev, s, m) = oa_stream(
        "ans-oa-sse-audio-transcript",
        8,
        |p| json!({"audio": {"id": "audio_1", "transcript": p}}),
    );
    v.push(sse_case(
        "ans-oa-sse-audio-transcript",
        OA,
        CHAT,
        OA_REQ,
        ev,
        s,
        m,
    ));
    let (ev, s, m) = oa_stream(
        "ans-oa-sse-tool-call-arguments",
        6,
        |p| json!({"tool_calls": [{"index": 0, "function": {"arguments": p}}]}),
    );
    v.push(sse_case(
        "ans-oa-sse-tool-call-arguments",
        OA,
        CHAT,
        OA_REQ,
        ev,
        s,
        m,
    ));
    {
        let name = "ans-oa-sse-logprobs-token";
        let (_, s) = for_case(name, false);
        let m = end_marker(name);
        let c = json!({"id": "chatcmpl-adv", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
            "choices": [{"index": 0, "delta": {"content": "ok"}, "logprobs": {"content": [{"token": s, "logprob": -0.1, "top_logprobs": [{"token": s, "logprob": -0.1}]}]}, "finish_reason": null}]});
        let mut ev = vec![format!("data: {c}\n\n")];
        ev.extend(oa_end(&m));
        v.push(sse_case(name, OA, CHAT, OA_REQ, ev, s, m));
    }
    for (name, tpl) in [
        ("ans-oa-sse-comment-line", ": keepalive $S\n\n"),
        (
            "ans-oa-sse-event-line",
            "event: $S\ndata: {\"choices\":[]}\n\n",
        ),
        ("ans-oa-sse-id-line", "id: $S\ndata: {\"choices\":[]}\n\n"),
        (
            "ans-oa-sse-id-field",
            "data: {\"id\":\"$S\",\"object\":\"chat.completion.chunk\",\"choices\":[]}\n\n",
        ),
        (
            "ans-oa-sse-multiline-data",
            "data: {\"choices\":[{\"index\":0,\n data: \"delta\":{\"content\":\"$S\"}}]}\n\n",
        ),
    ] {
        let (_, s) = for_case(name, false);
        let m = end_marker(name);
        let mut ev = vec![oa_chunk(json!({"role": "assistant", "content": ""}))];
        ev.push(tpl.replace("$S", &s).replace("\n data: ", "\ndata: "));
        ev.extend(oa_end(&m));
        v.push(sse_case(name, OA, CHAT, OA_REQ, ev, s, m));
    }
    for (name, fake_end) in [
        ("ans-oa-sse-done-in-text", "print('data: [DONE]')"),
        ("ans-oa-sse-done-in-text-newlines", "\n\ndata: [DONE]\n\n"),
    ] {
        let (_, s) = for_case(name, false);
        let m = end_marker(name);
        let mut ev = vec![oa_chunk(json!({"content": fake_end}))];
        ev.extend(
            pieces(&s, 10)
                .iter()
                .map(|p| oa_chunk(json!({"content": p}))),
        );
        ev.extend(oa_end(&m));
        v.push(sse_case(name, OA, CHAT, OA_REQ, ev, s, m));
    }
    {
        let name = "ans-oa-sse-without-stream-flag";
        let (ev, s, m) = oa_stream(name, 7, text);
        v.push(sse_case(name, OA, CHAT, OA_REQ_PLAIN, ev, s, m));
    }
    // NDJSON: one chunk object per line.
    {
        let name = "ans-oa-ndjson";
        let (ev, s, m) = oa_stream(name, 7, text);
        let lines: Vec<String> = ev
            .iter()
            .filter_map(|e| e.strip_prefix("data: "))
            .filter(|d| !d.starts_with("[DONE]"))
            .map(|d| format!("{}\n", d.trim_end()))
            .collect();
        let mut a = sse_case(name, OA, CHAT, OA_REQ, lines, s, m);
        a.framing = Framing::Ndjson;
        a.script.headers = vec![("content-type".into(), "application/x-ndjson".into())];
        v.push(a);
    }
    // OpenAI whole answers.
    for (name, msg) in [
        (
            "ans-oa-json-content",
            json!({"role": "assistant", "content": "$S @END"}),
        ),
        (
            "ans-oa-json-refusal",
            json!({"role": "assistant", "content": "@END", "refusal": "$S"}),
        ),
        (
            "ans-oa-json-tool-call-arguments",
            json!({"role": "assistant", "content": "@END", "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"k\":\"$S\"}"}}]}),
        ),
        (
            "ans-oa-json-reasoning-content",
            json!({"role": "assistant", "content": "@END", "reasoning_content": "$S"}),
        ),
        (
            "ans-oa-json-audio-transcript",
            json!({"role": "assistant", "content": "@END", "audio": {"id": "audio_1", "expires_at": 1, "data": "", "transcript": "$S"}}),
        ),
        (
            "ans-oa-json-annotation-url",
            json!({"role": "assistant", "content": "@END", "annotations": [{"type": "url_citation", "url_citation": {"url": "https://x.example/?k=$S", "title": "t", "start_index": 0, "end_index": 1}}]}),
        ),
    ] {
        let (_, s) = for_case(name, false);
        let body = json!({"id": "chatcmpl-adv", "object": "chat.completion", "created": 1, "model": "gpt-4o",
            "choices": [{"index": 0, "message": msg, "finish_reason": "stop"}]});
        let body: Value = serde_json::from_str(&body.to_string().replace("$S", &s)).unwrap();
        v.push(json_case(name, OA, CHAT, OA_REQ_PLAIN, body, s));
    }
    {
        let name = "ans-oa-json-octet-stream";
        let (_, s) = for_case(name, false);
        let body = json!({"id": "c", "object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant", "content": format!("{s} @END")}, "finish_reason": "stop"}]});
        let mut a = json_case(name, OA, CHAT, OA_REQ_PLAIN, body, s);
        a.script.headers = vec![("content-type".into(), "application/octet-stream".into())];
        v.push(a);
    }
    {
        let name = "ans-oa-error-400-json";
        let (_, s) = for_case(name, false);
        let body = json!({"error": {"message": format!("invalid value {s} @END"), "type": "invalid_request_error", "param": null, "code": null}});
        let mut a = json_case(name, OA, CHAT, OA_REQ_PLAIN, body, s);
        a.script.status = 400;
        v.push(a);
    }
    {
        let name = "ans-oa-error-500-html";
        let (_, s) = for_case(name, false);
        let mut a = AnswerCase::new(name, OA, CHAT, OA_REQ_PLAIN, Framing::Any)
            .ctype("text/html")
            .chunks(vec![format!(
                "<html><body><h1>500</h1><pre>{s}</pre></body></html>"
            )]);
        a.script.status = 500;
        a.planted.push(s);
        a.masked = false;
        a.keep_status = false;
        v.push(a);
    }
    {
        let name = "ans-oa-header-secret";
        let (_, s) = for_case(name, false);
        let (ev, _, m) = oa_stream(name, 1000, |_| json!({"content": "fine"}));
        let mut a = sse_case(name, OA, CHAT, OA_REQ, ev, s.clone(), m);
        a.script
            .headers
            .push(("x-debug-note".into(), format!("token {s}")));
        a.masked = false;
        v.push(a);
    }
    // The Responses API's typed events.
    for (name, ty, field, extra) in [
        (
            "ans-resp-output-text-delta",
            "response.output_text.delta",
            "delta",
            json!({"item_id": "msg_1", "output_index": 0, "content_index": 0}),
        ),
        (
            "ans-resp-reasoning-summary-delta",
            "response.reasoning_summary_text.delta",
            "delta",
            json!({"item_id": "rs_1", "output_index": 0, "summary_index": 0}),
        ),
        (
            "ans-resp-reasoning-text-delta",
            "response.reasoning_text.delta",
            "delta",
            json!({"item_id": "rs_1", "output_index": 0, "content_index": 0}),
        ),
        (
            "ans-resp-function-call-arguments-delta",
            "response.function_call_arguments.delta",
            "delta",
            json!({"item_id": "fc_1", "output_index": 0}),
        ),
        (
            "ans-resp-refusal-delta",
            "response.refusal.delta",
            "delta",
            json!({"item_id": "msg_1", "output_index": 0, "content_index": 0}),
        ),
        (
            "ans-resp-audio-transcript-delta",
            "response.audio.transcript.delta",
            "delta",
            json!({"item_id": "msg_1", "output_index": 0, "content_index": 0}),
        ),
        (
            "ans-resp-custom-tool-input-delta",
            "response.custom_tool_call_input.delta",
            "delta",
            json!({"item_id": "ct_1", "output_index": 0}),
        ),
    ] {
        let (_, s) = for_case(name, false);
        let m = end_marker(name);
        let ev_of = |ty: &str, mut d: Value| {
            d["type"] = json!(ty);
            format!("event: {ty}\ndata: {d}\n\n")
        };
        let mut ev = vec![ev_of(
            "response.created",
            json!({"response": {"id": "resp_1", "object": "response", "status": "in_progress", "output": []}}),
        )];
        for (i, p) in pieces(&s, 7).iter().enumerate() {
            let mut d = extra.clone();
            d[field] = json!(p);
            d["sequence_number"] = json!(i + 1);
            ev.push(ev_of(ty, d));
        }
        ev.push(ev_of("response.output_text.delta", json!({"item_id": "msg_2", "output_index": 1, "content_index": 0, "delta": format!(" {m}")})));
        ev.push(ev_of("response.completed", json!({"response": {"id": "resp_1", "object": "response", "status": "completed", "output": []}})));
        v.push(sse_case(name, OA, "/v1/responses", RESP_REQ, ev, s, m));
    }
    for (name, d) in [
        (
            "ans-resp-item-id",
            json!({"type": "response.output_text.delta", "item_id": "$S", "output_index": 0, "content_index": 0, "delta": "x"}),
        ),
        (
            "ans-resp-output-text-done",
            json!({"type": "response.output_text.done", "item_id": "msg_1", "output_index": 0, "content_index": 0, "text": "$S"}),
        ),
        (
            "ans-resp-completed-output",
            json!({"type": "response.completed", "response": {"id": "resp_1", "object": "response", "status": "completed", "output": [{"type": "message", "id": "msg_1", "role": "assistant", "content": [{"type": "output_text", "text": "$S", "annotations": []}]}]}}),
        ),
        (
            "ans-resp-function-call-done",
            json!({"type": "response.output_item.done", "output_index": 0, "item": {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "f", "arguments": "{\"k\":\"$S\"}"}}),
        ),
        (
            "ans-resp-reasoning-item-done",
            json!({"type": "response.output_item.done", "output_index": 0, "item": {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "$S"}]}}),
        ),
    ] {
        let (_, s) = for_case(name, false);
        let m = end_marker(name);
        let d: Value = serde_json::from_str(&d.to_string().replace("$S", &s)).unwrap();
        let ty = d["type"].as_str().unwrap().to_string();
        let ev = vec![
            format!("event: {ty}\ndata: {d}\n\n"),
            format!(
                "event: response.output_text.delta\ndata: {}\n\n",
                json!({"type": "response.output_text.delta", "item_id": "msg_2", "output_index": 1, "content_index": 0, "delta": format!(" {m}")})
            ),
        ];
        v.push(sse_case(name, OA, "/v1/responses", RESP_REQ, ev, s, m));
    }
    {
        let name = "ans-resp-json";
        let (_, s) = for_case(name, false);
        let body = json!({"id": "resp_1", "object": "response", "status": "completed", "output": [{"type": "message", "id": "msg_1", "role": "assistant", "content": [{"type": "output_text", "text": format!("{s} @END"), "annotations": []}]}]});
        v.push(json_case(
            name,
            OA,
            "/v1/responses",
            r#"{"model":"gpt-4.1","input":"hi"}"#,
            body,
            s,
        ));
    }
    // Anthropic streams.
    for (name, n, ct, eol) in [
        ("ans-an-text-delta-split", 7, "text/event-stream", "\n"),
        ("ans-an-text-delta-crlf", 5, "text/event-stream", "\r\n"),
        ("ans-an-octet-stream", 6, "application/octet-stream", "\n"),
        ("ans-an-no-content-type", 6, "", "\n"),
    ] {
        let (_, s) = for_case(name, false);
        let m = end_marker(name);
        let ev: Vec<String> = an_stream(vec![an_text_block(0, &pieces(&s, n))], &m)
            .into_iter()
            .map(|e| e.replace('\n', eol))
            .collect();
        let mut a = sse_case(name, AN, "/v1/messages", AN_REQ, ev, s, m);
        a.script.headers.clear();
        v.push(a.ctype(ct));
    }
    {
        let name = "ans-an-input-json-delta";
        let (_, s) = for_case(name, false);
        let m = end_marker(name);
        let json_text = format!("{{\"token\": \"{s}\"}}");
        let mut b = vec![an_ev(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}}),
        )];
        for p in pieces(&json_text, 6) {
            b.push(an_ev("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": p}})));
        }
        b.push(an_ev(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ));
        v.push(sse_case(
            name,
            AN,
            "/v1/messages",
            AN_REQ,
            an_stream(vec![b], &m),
            s,
            m,
        ));
    }
    {
        let name = "ans-an-citations-cited-text";
        let (_, s) = for_case(name, false);
        let m = end_marker(name);
        let b = vec![
            an_ev(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": "", "citations": []}}),
            ),
            an_ev(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "citations_delta", "citation": {"type": "char_location", "cited_text": s, "document_index": 0, "document_title": "d", "start_char_index": 0, "end_char_index": 10}}}),
            ),
            an_ev(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "see above"}}),
            ),
            an_ev(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 0}),
            ),
        ];
        v.push(sse_case(
            name,
            AN,
            "/v1/messages",
            AN_REQ,
            an_stream(vec![b], &m),
            s,
            m,
        ));
    }
    {
        let name = "ans-an-message-id";
        let (_, s) = for_case(name, false);
        let m = end_marker(name);
        let mut ev = an_stream(vec![], &m);
        ev[0] = ev[0].replace("msg_adv", &s);
        v.push(sse_case(name, AN, "/v1/messages", AN_REQ, ev, s, m));
    }
    {
        let name = "ans-an-tool-use-name-and-id";
        let (_, s) = for_case(name, false);
        let m = end_marker(name);
        let b = vec![
            an_ev(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": s, "name": s, "input": {}}}),
            ),
            an_ev(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 0}),
            ),
        ];
        v.push(sse_case(
            name,
            AN,
            "/v1/messages",
            AN_REQ,
            an_stream(vec![b], &m),
            s,
            m,
        ));
    }
    {
        let name = "ans-an-web-search-result-title";
        let (_, s) = for_case(name, false);
        let m = end_marker(name);
        let b = vec![
            an_ev(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": [{"type": "web_search_result", "url": "https://x.example/a", "title": s, "encrypted_content": "Eq", "page_age": null}]}}),
            ),
            an_ev(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 0}),
            ),
        ];
        v.push(sse_case(
            name,
            AN,
            "/v1/messages",
            AN_REQ,
            an_stream(vec![b], &m),
            s,
            m,
        ));
    }
    {
        let name = "ans-an-error-event";
        let (_, s) = for_case(name, false);
        let m = end_marker(name);
        let mut ev = an_stream(vec![an_text_block(0, &["partial ".into()])], &m);
        let stop = ev.pop().unwrap();
        ev.push(an_ev("error", json!({"type": "error", "error": {"type": "overloaded_error", "message": format!("overloaded {s}")}})));
        ev.push(stop);
        v.push(sse_case(name, AN, "/v1/messages", AN_REQ, ev, s, m));
    }
    {
        let name = "ans-an-ping-comment";
        let (_, s) = for_case(name, false);
        let m = end_marker(name);
        let mut ev = an_stream(vec![an_text_block(0, &["hello".into()])], &m);
        ev.insert(1, format!(": ping {s}\n\n"));
        ev.insert(2, an_ev("ping", json!({"type": "ping"})));
        v.push(sse_case(name, AN, "/v1/messages", AN_REQ, ev, s, m));
    }
    // Signed thinking blocks: unedited, or removed whole.
    {
        let name = "ans-an-thinking-with-secret";
        let (_, s) = for_case(name, false);
        let m = end_marker(name);
        let sig = format!("SIGadv{:x}", super::secrets::seed_of(name) & 0xffff);
        let th = pieces(&format!("let me use {s} now"), 8);
        let mut a = sse_case(
            name,
            AN,
            "/v1/messages",
            AN_REQ,
            an_stream(vec![an_thinking_block(0, &th, &sig)], &m),
            s,
            m,
        );
        a.forbid.push(sig);
        a.masked = false;
        v.push(a);
    }
    {
        let name = "ans-an-thinking-clean-then-secret";
        let (_, s) = for_case(name, false);
        let m = end_marker(name);
        let sig = format!("SIGadv{:x}", super::secrets::seed_of(name) & 0xffff);
        let thought = "Thinking about the weather in Paris carefully.";
        let blocks = vec![
            an_thinking_block(0, &pieces(thought, 9), &sig),
            an_text_block(1, &pieces(&s, 7)),
        ];
        let mut a = sse_case(
            name,
            AN,
            "/v1/messages",
            AN_REQ,
            an_stream(blocks, &m),
            s,
            m,
        );
        a.contains.push(sig);
        a.contains.push(thought.into());
        v.push(a);
    }
    {
        let name = "ans-an-json-thinking-with-secret";
        let (_, s) = for_case(name, false);
        let sig = format!("SIGadv{:x}", super::secrets::seed_of(name) & 0xffff);
        let body = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
            "content": [{"type": "thinking", "thinking": format!("I will use {s}"), "signature": sig}, {"type": "text", "text": "@END"}],
            "stop_reason": "end_turn", "stop_sequence": null, "usage": {"input_tokens": 1, "output_tokens": 1}});
        let mut a = json_case(name, AN, "/v1/messages", AN_REQ_PLAIN, body, s);
        a.forbid.push(sig);
        a.masked = false;
        v.push(a);
    }
    for (name, content) in [
        (
            "ans-an-json-text",
            json!([{"type": "text", "text": "$S @END"}]),
        ),
        (
            "ans-an-json-tool-use-input",
            json!([{"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"token": "$S"}}, {"type": "text", "text": "@END"}]),
        ),
        (
            "ans-an-json-citation",
            json!([{"type": "text", "text": "@END", "citations": [{"type": "char_location", "cited_text": "$S", "document_index": 0, "document_title": null, "start_char_index": 0, "end_char_index": 5}]}]),
        ),
    ] {
        let (_, s) = for_case(name, false);
        let body = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x", "content": content,
            "stop_reason": "end_turn", "stop_sequence": null, "usage": {"input_tokens": 1, "output_tokens": 1}});
        let body: Value = serde_json::from_str(&body.to_string().replace("$S", &s)).unwrap();
        v.push(json_case(name, AN, "/v1/messages", AN_REQ_PLAIN, body, s));
    }
    {
        let name = "ans-an-error-json";
        let (_, s) = for_case(name, false);
        let body = json!({"type": "error", "error": {"type": "invalid_request_error", "message": format!("bad {s} @END")}});
        let mut a = json_case(name, AN, "/v1/messages", AN_REQ_PLAIN, body, s);
        a.script.status = 400;
        v.push(a);
    }
    // Gemini.
    let gsse = "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse";
    let garr = "/v1beta/models/gemini-2.5-flash:streamGenerateContent";
    for (name, eol, ct) in [
        ("ans-gm-sse-split", "\r\n", "text/event-stream"),
        ("ans-gm-sse-lf", "\n", "text/event-stream"),
        ("ans-gm-sse-bare-cr", "\r", "text/event-stream"),
        (
            "ans-gm-sse-octet-stream",
            "\r\n",
            "application/octet-stream",
        ),
    ] {
        let (c, s, m) = gm_chunks(name, 6);
        let ev = c.iter().map(|c| format!("data: {c}{eol}{eol}")).collect();
        let mut a = sse_case(name, GM, gsse, GM_REQ, ev, s, m);
        a.script.headers = vec![("content-type".into(), ct.into())];
        v.push(a);
    }
    for (name, ct) in [
        ("ans-gm-json-array-split", "application/json"),
        ("ans-gm-json-array-octet", "application/octet-stream"),
        ("ans-gm-json-array-text-plain", "text/plain"),
    ] {
        let (c, s, m) = gm_chunks(name, 5);
        let mut a = sse_case(name, GM, garr, GM_REQ, json_array_frames(&c), s, m);
        a.framing = Framing::JsonArray;
        a.script.headers = vec![("content-type".into(), ct.into())];
        v.push(a);
    }
    {
        let name = "ans-gm-ndjson";
        let (c, s, m) = gm_chunks(name, 6);
        let lines = c.iter().map(|c| format!("{c}\n")).collect();
        let mut a = sse_case(name, GM, garr, GM_REQ, lines, s, m);
        a.framing = Framing::Ndjson;
        a.script.headers = vec![("content-type".into(), "application/x-ndjson".into())];
        v.push(a);
    }
    for (name, parts) in [
        ("ans-gm-json-text", json!([{"text": "$S @END"}])),
        (
            "ans-gm-json-function-call-args",
            json!([{"functionCall": {"name": "f", "args": {"token": "$S"}}}, {"text": "@END"}]),
        ),
        (
            "ans-gm-json-thought-part",
            json!([{"text": "$S", "thought": true}, {"text": "@END"}]),
        ),
        (
            "ans-gm-json-executable-code",
            json!([{"executableCode": {"language": "PYTHON", "code": "k='$S'"}}, {"text": "@END"}]),
        ),
        (
            "ans-gm-json-inline-data-text",
            json!([{"inlineData": {"mimeType": "text/plain", "data": "$B"}}, {"text": "@END"}]),
        ),
    ] {
        let (_, s) = for_case(name, false);
        let body = gm_chunk(parts, true);
        let text = body
            .to_string()
            .replace("$S", &s)
            .replace("$B", &b64(format!("key {s}").as_bytes()));
        let body: Value = serde_json::from_str(&text).unwrap();
        let mut a = json_case(
            name,
            GM,
            "/v1beta/models/gemini-2.5-flash:generateContent",
            GM_REQ,
            body,
            s,
        );
        if name.ends_with("inline-data-text") {
            a.masked = false;
        }
        v.push(a);
    }
    {
        let name = "ans-gm-json-grounding";
        let (_, s) = for_case(name, false);
        let mut body = gm_chunk(json!([{"text": "@END"}]), true);
        body["candidates"][0]["groundingMetadata"] = json!({"groundingChunks": [{"web": {"uri": "https://x.example", "title": s}}], "webSearchQueries": [s]});
        v.push(json_case(
            name,
            GM,
            "/v1beta/models/gemini-2.5-flash:generateContent",
            GM_REQ,
            body,
            s,
        ));
    }
    {
        let name = "ans-gm-error-json";
        let (_, s) = for_case(name, false);
        let body = json!({"error": {"code": 400, "message": format!("bad {s} @END"), "status": "INVALID_ARGUMENT"}});
        let mut a = json_case(
            name,
            GM,
            "/v1beta/models/gemini-2.5-flash:generateContent",
            GM_REQ,
            body,
            s,
        );
        a.script.status = 400;
        v.push(a);
    }
    v
}

/// Answers echoing the vault's key: in a body, split across events, a 24-character piece, a
/// header, an error page, compressed.
pub fn vault_echo_cases() -> Vec<AnswerCase> {
    let mut v = vec![];
    for p in Provider::ALL {
        let l = p.label();
        let (path, req, sse_path, sse_req) = match p {
            OA => (CHAT, OA_REQ_PLAIN, CHAT, OA_REQ),
            AN => ("/v1/messages", AN_REQ_PLAIN, "/v1/messages", AN_REQ),
            GM => (
                "/v1beta/models/gemini-2.5-flash:generateContent",
                GM_REQ,
                "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
                GM_REQ,
            ),
        };
        let json_text = |t: &str| -> String {
            match p {
                OA => json!({"id": "c", "object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}]}).to_string(),
                AN => json!({"id": "m", "type": "message", "role": "assistant", "content": [{"type": "text", "text": t}], "stop_reason": "end_turn", "usage": {"input_tokens": 1, "output_tokens": 1}}).to_string(),
                GM => gm_chunk(json!([{"text": t}]), true).to_string(),
            }
        };
        let sse = |texts: &[&str]| -> Vec<String> {
            match p {
                OA => {
                    let mut ev: Vec<String> = texts
                        .iter()
                        .map(|t| oa_chunk(json!({"content": t})))
                        .collect();
                    ev.push("data: [DONE]\n\n".into());
                    ev
                }
                AN => {
                    let t: Vec<String> = texts.iter().map(|t| t.to_string()).collect();
                    an_stream(vec![an_text_block(0, &t)], "done")
                }
                GM => texts
                    .iter()
                    .map(|t| format!("data: {}\r\n\r\n", gm_chunk(json!([{"text": t}]), false)))
                    .collect(),
            }
        };
        let mk = |name: &str,
                  path: &str,
                  req: &str,
                  framing: Framing,
                  status: u16,
                  ct: &str,
                  chunks: Vec<String>| {
            let mut a = AnswerCase::new(name, p, path, req, framing)
                .ctype(ct)
                .chunks(chunks);
            a.script.status = status;
            a.masked = false;
            a.keep_status = false;
            a.vault_echo = true;
            a
        };
        v.push(mk(
            &format!("echo-{l}-json-full"),
            path,
            req,
            Framing::Any,
            200,
            "application/json",
            vec![json_text("your key is {{CRED}} ok")],
        ));
        v.push(mk(
            &format!("echo-{l}-json-piece-24"),
            path,
            req,
            Framing::Any,
            200,
            "application/json",
            vec![json_text("fragment {{CRED24}} end")],
        ));
        v.push(mk(
            &format!("echo-{l}-sse-full"),
            sse_path,
            sse_req,
            Framing::Any,
            200,
            "text/event-stream",
            sse(&["key: ", "{{CRED}}", " done"]),
        ));
        v.push(mk(
            &format!("echo-{l}-sse-split"),
            sse_path,
            sse_req,
            Framing::Any,
            200,
            "text/event-stream",
            sse(&["key: {{CRED_A}}", "{{CRED_B}} done"]),
        ));
        let mut a = mk(
            &format!("echo-{l}-header"),
            path,
            req,
            Framing::Any,
            200,
            "application/json",
            vec![json_text("fine")],
        );
        a.script
            .headers
            .push(("x-echo-auth".into(), "{{CRED}}".into()));
        v.push(a);
        let err = match p {
            AN => json!({"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key {{CRED}}"}}).to_string(),
            GM => json!({"error": {"code": 400, "message": "API key not valid: {{CRED}}", "status": "INVALID_ARGUMENT"}}).to_string(),
            OA => json!({"error": {"message": "Incorrect API key provided: {{CRED}}.", "type": "invalid_request_error", "code": "invalid_api_key"}}).to_string(),
        };
        v.push(mk(
            &format!("echo-{l}-error-401-json"),
            path,
            req,
            Framing::Any,
            401,
            "application/json",
            vec![err],
        ));
        v.push(mk(
            &format!("echo-{l}-error-502-html"),
            path,
            req,
            Framing::Any,
            502,
            "text/html",
            vec!["<html><body>upstream said: {{CRED}}</body></html>".into()],
        ));
        // Compressed: the key known in advance (a script cannot splice into gzip).
        let key = super::vault_key(p);
        let gz = codec::compress("gzip", json_text(&format!("key {key}")).as_bytes());
        let mut a = mk(
            &format!("echo-{l}-gzip"),
            path,
            req,
            Framing::Any,
            200,
            "application/json",
            vec![],
        );
        a.script
            .headers
            .push(("content-encoding".into(), "gzip".into()));
        a.script.chunks = vec![gz];
        v.push(a);
    }
    v
}

/// Answers carrying block and hold rules' matches (an answer is masked whatever the action).
pub fn rule_answer_cases() -> Vec<AnswerCase> {
    let mut v = vec![];
    for (name, p, word) in [
        ("ans-rule-block-oa-sse", OA, "BLOCKME-480213"),
        ("ans-rule-hold-oa-sse", OA, "HOLDME-771342"),
        ("ans-rule-block-an-sse", AN, "BLOCKME-552901"),
        ("ans-rule-hold-an-sse", AN, "HOLDME-310877"),
        ("ans-rule-block-gm-json-array", GM, "BLOCKME-662310"),
        ("ans-rule-hold-gm-sse", GM, "HOLDME-904113"),
    ] {
        let m = end_marker(name);
        let mut a = match p {
            OA => {
                let mut ev = vec![oa_chunk(json!({"role": "assistant", "content": ""}))];
                ev.extend(
                    pieces(word, 4)
                        .iter()
                        .map(|w| oa_chunk(json!({"content": w}))),
                );
                ev.extend(oa_end(&m));
                sse_case(name, OA, CHAT, OA_REQ, ev, word.into(), m)
            }
            AN => sse_case(
                name,
                AN,
                "/v1/messages",
                AN_REQ,
                an_stream(vec![an_text_block(0, &pieces(word, 4))], &m),
                word.into(),
                m,
            ),
            GM => {
                let mut c: Vec<Value> = pieces(word, 4)
                    .iter()
                    .map(|w| gm_chunk(json!([{"text": w}]), false))
                    .collect();
                c.push(gm_chunk(json!([{"text": format!(" {m}")}]), true));
                if name.ends_with("json-array") {
                    let mut a = sse_case(
                        name,
                        GM,
                        "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
                        GM_REQ,
                        json_array_frames(&c),
                        word.into(),
                        m,
                    );
                    a.framing = Framing::JsonArray;
                    a.script.headers = vec![("content-type".into(), "application/json".into())];
                    a
                } else {
                    let ev = c.iter().map(|c| format!("data: {c}\r\n\r\n")).collect();
                    sse_case(
                        name,
                        GM,
                        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
                        GM_REQ,
                        ev,
                        word.into(),
                        m,
                    )
                }
            }
        };
        a.contains.push(if word.starts_with("BLOCK") {
            "[MASKED:adv-block]".into()
        } else {
            "[MASKED:adv-hold]".into()
        });
        v.push(a);
    }
    for (name, p, word) in [
        ("ans-rule-block-oa-json", OA, "BLOCKME-128847"),
        ("ans-rule-hold-an-json", AN, "HOLDME-640021"),
        ("ans-rule-mask-oa-json-control", OA, "MASKME-310220"),
    ] {
        let body = match p {
            OA => {
                json!({"id": "c", "object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant", "content": format!("{word} @END")}, "finish_reason": "stop"}]})
            }
            _ => {
                json!({"id": "m", "type": "message", "role": "assistant", "content": [{"type": "text", "text": format!("{word} @END")}], "stop_reason": "end_turn", "usage": {"input_tokens": 1, "output_tokens": 1}})
            }
        };
        let path = if p == OA { CHAT } else { "/v1/messages" };
        let req = if p == OA { OA_REQ_PLAIN } else { AN_REQ_PLAIN };
        let mut a = json_case(name, p, path, req, body, word.into());
        let rule = match &word[..4] {
            "BLOC" => "adv-block",
            "HOLD" => "adv-hold",
            _ => "adv-mask",
        };
        a.contains.push(format!("[MASKED:{rule}]"));
        v.push(a);
    }
    v
}

/// The rules for [`rule_answer_cases`].
pub const RULES: &str = r#"
[[rule]]
name = "adv-block"
pattern = "BLOCKME-[0-9]{6}"
on = ["request", "response"]
action = "block"
[[rule]]
name = "adv-hold"
pattern = "HOLDME-[0-9]{6}"
on = ["request", "response"]
action = "hold"
[[rule]]
name = "adv-mask"
pattern = "MASKME-[0-9]{6}"
on = ["request", "response"]
action = "mask"
"#;

/// Register every case's script with its fake, send the requests, judge the answers.
pub fn run(e: &ProviderEnv, cases: &[AnswerCase]) -> Vec<String> {
    for a in cases {
        let fake = match a.provider {
            OA => &e.fakes.openai,
            AN => &e.fakes.anthropic,
            GM => &e.fakes.gemini,
        };
        fake.script(&a.name, a.script.clone());
    }
    let reqs: Vec<Case> = cases.iter().map(AnswerCase::request_case).collect();
    let got = super::send_all(e, &reqs);
    judge(e, cases, &got)
}

fn judge(e: &ProviderEnv, cases: &[AnswerCase], got: &BTreeMap<String, Got>) -> Vec<String> {
    let seen = super::all_seen(e);
    let bodies: Vec<&[u8]> = cases
        .iter()
        .map(|c| got.get(&c.name).map(|g| g.body.as_slice()).unwrap_or(&[]))
        .collect();
    let inflated = codec::inflate_batch(&bodies);
    let mut fails = vec![];
    for (a, inf) in cases.iter().zip(inflated) {
        let mut why: Vec<String> = vec![];
        let g = got.get(&a.name).cloned().unwrap_or_default();
        let mine: Vec<_> = seen
            .iter()
            .filter(|s| s.all("x-adv-case").iter().any(|v| v == &a.name))
            .collect();
        if mine.is_empty() {
            why.push(format!("request not forwarded: {}", g.brief()));
        }
        if a.vault_echo {
            let (place, want) = a.provider.place();
            if !mine.iter().any(|s| s.all(place).contains(&want)) {
                why.push("the vault key was not injected, so the echo proves nothing".into());
            }
        }
        let mut all: Vec<Vec<u8>> = views(&g.body);
        for d in &inf {
            all.extend(views(d));
        }
        // Text split across events, joined back field by field.
        for j in joined(&g.body) {
            all.extend(views(&j));
        }
        let head: String = g
            .headers
            .iter()
            .map(|(k, v)| format!("{k}: {v}\n"))
            .collect();
        let head_views = views(head.as_bytes());
        let found = |needle: &str| -> Option<&'static str> {
            if all.iter().any(|v| contains(v, needle.as_bytes())) {
                Some("body")
            } else if head_views.iter().any(|v| contains(v, needle.as_bytes())) {
                Some("headers")
            } else {
                None
            }
        };
        for s in &a.planted {
            for n in needles(s) {
                if let Some(w) = found(&n) {
                    why.push(format!("client got {} in its {w}", label(s)));
                    break;
                }
            }
        }
        for (prov, key) in VAULT {
            if let Some(w) = key_pieces(key).iter().find_map(|k| found(k)) {
                why.push(format!(
                    "client got the {prov} vault key (or 24+ chars of it) in its {w}"
                ));
            }
        }
        for f in &a.forbid {
            if found(f).is_some() {
                why.push(format!(
                    "client got {f:?} (a signed thinking block was edited, not removed whole)"
                ));
            }
        }
        if !mine.is_empty() {
            if a.keep_status && g.status != a.script.status {
                why.push(format!(
                    "status {} instead of the provider's {} (masked answers are not refused): {}",
                    g.status,
                    a.script.status,
                    g.brief()
                ));
            }
            for c in &a.contains {
                if found(c).is_none() {
                    why.push(format!(
                        "{c:?} did not reach the client (stream cut or event dropped)"
                    ));
                }
            }
            if a.masked && found("[MASKED:").is_none() {
                why.push("no [MASKED: form in the answer".into());
            }
            if let Err(r) = framing(a.framing, &g.body) {
                why.push(r);
            }
        }
        if !why.is_empty() {
            why.dedup();
            fails.push(format!("{}: {}", a.name, why.join("; ")));
            if std::env::var_os("ADV_DUMP").is_some() {
                eprintln!(
                    "--- {} client: {} {:?}\n{}",
                    a.name,
                    g.status,
                    g.headers,
                    String::from_utf8_lossy(&g.body[..g.body.len().min(3000)])
                );
            }
        }
    }
    fails
}

/// The JSON documents of an answer: the whole body, an array's elements, SSE `data:`
/// payloads, NDJSON lines.
fn documents(body: &[u8]) -> Vec<Value> {
    let text = String::from_utf8_lossy(body)
        .replace("\r\n", "\n")
        .replace('\r', "\n");
    if let Ok(v) = serde_json::from_str::<Value>(&text) {
        return match v {
            Value::Array(a) => a,
            v => vec![v],
        };
    }
    let mut docs = vec![];
    for ev in text.split("\n\n") {
        let data: Vec<&str> = ev
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(|d| d.strip_prefix(' ').unwrap_or(d))
            .collect();
        if let Ok(v) = serde_json::from_str::<Value>(&data.join("\n")) {
            docs.push(v);
        }
    }
    if docs.is_empty() {
        docs = text
            .lines()
            .filter_map(|l| serde_json::from_str(l.trim_start_matches([',', '[', ']'])).ok())
            .collect();
    }
    docs
}

/// Each string field's values over all the answer's documents, concatenated in order, by
/// JSON path and by field name: a secret split across events shows whole here.
fn joined(body: &[u8]) -> Vec<Vec<u8>> {
    fn walk(
        v: &Value,
        path: &str,
        key: &str,
        by_path: &mut BTreeMap<String, String>,
        by_key: &mut BTreeMap<String, String>,
    ) {
        match v {
            Value::String(s) => {
                by_path.entry(path.to_string()).or_default().push_str(s);
                by_key.entry(key.to_string()).or_default().push_str(s);
            }
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    walk(x, &format!("{path}/{i}"), key, by_path, by_key);
                }
            }
            Value::Object(o) => {
                for (k, x) in o {
                    walk(x, &format!("{path}/{k}"), k, by_path, by_key);
                }
            }
            _ => {}
        }
    }
    let (mut by_path, mut by_key) = (BTreeMap::new(), BTreeMap::new());
    for d in documents(body) {
        // Deltas join per stream, as SDKs join them: Responses events by output and content
        // index, Anthropic's by block index.
        let stream: String = ["output_index", "content_index", "index"]
            .iter()
            .filter_map(|k| {
                d.get(*k)
                    .and_then(Value::as_u64)
                    .map(|i| format!("{k}={i};"))
            })
            .collect();
        walk(&d, &stream, "", &mut by_path, &mut by_key);
    }
    by_path
        .into_values()
        .chain(by_key.into_values())
        .map(String::into_bytes)
        .collect()
}

/// Whether the client can still parse the answer in the framing it was sent in.
fn framing(f: Framing, body: &[u8]) -> Result<(), String> {
    let text = String::from_utf8_lossy(body)
        .replace("\r\n", "\n")
        .replace('\r', "\n");
    match f {
        Framing::Any => Ok(()),
        Framing::Json => serde_json::from_str::<Value>(&text)
            .map(|_| ())
            .map_err(|e| format!("JSON answer no longer parses ({e})")),
        Framing::JsonArray => match serde_json::from_str::<Value>(&text) {
            Ok(Value::Array(_)) => Ok(()),
            Ok(_) => Err("JSON-array stream is not an array any more".into()),
            Err(e) => Err(format!("JSON-array stream no longer parses ({e})")),
        },
        Framing::Ndjson => {
            for l in text.lines().filter(|l| !l.trim().is_empty()) {
                serde_json::from_str::<Value>(l).map_err(|e| {
                    format!(
                        "NDJSON line no longer parses ({e}): {}",
                        &l[..l.len().min(80)]
                    )
                })?;
            }
            Ok(())
        }
        Framing::Sse => {
            let mut events = 0;
            for ev in text.split("\n\n") {
                let data: Vec<&str> = ev
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(|d| d.strip_prefix(' ').unwrap_or(d))
                    .collect();
                if data.is_empty() {
                    continue;
                }
                let d = data.join("\n");
                events += 1;
                if d.trim() == "[DONE]" {
                    continue;
                }
                serde_json::from_str::<Value>(&d).map_err(|e| {
                    format!(
                        "SSE event no longer parses ({e}): {}",
                        &d[..d.len().min(80)]
                    )
                })?;
            }
            if events == 0 {
                return Err("no SSE event reached the client".into());
            }
            Ok(())
        }
    }
}

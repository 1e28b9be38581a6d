use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt as _;
use serde_json::{Value, json};

use super::{
    Rewriter,
    body::{Kind, MaskedBody},
};
use crate::{
    policy::scan::{Ctx, Direction, PolicyConfig, Scanner},
    redirect::identity::Identity,
};

fn scanner() -> Arc<Scanner> {
    Arc::new(Scanner::new(&[], &PolicyConfig::default()).unwrap())
}

#[derive(Clone, Copy, Debug)]
enum D {
    Chat,
    Responses,
    Anthropic,
    Gemini,
}

/// The events of a stream whose text deltas are `parts`, in the provider's shape.
fn events(d: D, parts: &[&str]) -> Vec<(Option<String>, Value)> {
    let mut out = Vec::new();
    match d {
        D::Chat => {
            for p in parts {
                out.push((None, json!({"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":p},"finish_reason":null}]})));
            }
            out.push((None, json!({"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]})));
        }
        D::Responses => {
            for (i, p) in parts.iter().enumerate() {
                out.push((Some("response.output_text.delta".into()), json!({"type":"response.output_text.delta","item_id":"msg_1","output_index":0,"content_index":0,"delta":p,"sequence_number":i})));
            }
            let whole: String = parts.concat();
            out.push((Some("response.output_text.done".into()), json!({"type":"response.output_text.done","item_id":"msg_1","output_index":0,"content_index":0,"text":whole,"sequence_number":99})));
        }
        D::Anthropic => {
            out.push((Some("content_block_start".into()), json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}})));
            for p in parts {
                out.push((Some("content_block_delta".into()), json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":p}})));
            }
            out.push((
                Some("content_block_stop".into()),
                json!({"type":"content_block_stop","index":0}),
            ));
        }
        D::Gemini => {
            for p in parts {
                out.push((None, json!({"candidates":[{"content":{"parts":[{"text":p}],"role":"model"},"index":0}]})));
            }
            out.push((None, json!({"candidates":[{"content":{"parts":[{"text":""}],"role":"model"},"finishReason":"STOP","index":0}]})));
        }
    }
    out
}

/// The streamed text as the client's SDK would assemble it.
fn text_of(d: D, evs: &[(Option<String>, Value)]) -> String {
    let mut s = String::new();
    for (_, v) in evs {
        match d {
            D::Chat => {
                if let Some(t) = v
                    .pointer("/choices/0/delta/content")
                    .and_then(Value::as_str)
                {
                    s.push_str(t)
                }
            }
            D::Responses => {
                if v["type"] == "response.output_text.delta" {
                    s.push_str(v["delta"].as_str().unwrap())
                }
            }
            D::Anthropic => {
                if let Some(t) = v.pointer("/delta/text").and_then(Value::as_str) {
                    s.push_str(t)
                }
            }
            D::Gemini => {
                if let Some(t) = v
                    .pointer("/candidates/0/content/parts/0/text")
                    .and_then(Value::as_str)
                {
                    s.push_str(t)
                }
            }
        }
    }
    s
}

fn rewrite(sc: &Arc<Scanner>, d: D, parts: &[&str]) -> Vec<(Option<String>, Value)> {
    let mut rw = Rewriter::new(sc.clone(), Arc::new(Identity::default()));
    let mut out = Vec::new();
    for (n, v) in events(d, parts) {
        out.extend(rw.event(n, v));
    }
    out.extend(rw.finish());
    out
}

const ALL: [D; 4] = [D::Chat, D::Responses, D::Anthropic, D::Gemini];

#[test]
fn every_vector_split_at_every_position_across_two_events() {
    let sc = scanner();
    let id = Identity::default();
    // Every vector at every cut, each in one of the dialects in turn (every dialect sees a
    // few dozen vectors at every cut; the masker itself is split at every position for every
    // vector in `policy::scan`'s tests).
    for (i, (det, tp, secret, _)) in crate::policy::scan::tests::vectors()
        .into_iter()
        .enumerate()
    {
        let text = format!("Sure: {tp} is the value.");
        let (whole, _) = sc.mask(
            &text,
            Ctx {
                dir: Direction::Response,
                id: &id,
            },
        );
        for d in [ALL[i % ALL.len()]] {
            for cut in (1..text.len()).filter(|c| text.is_char_boundary(*c)) {
                let out = rewrite(&sc, d, &[&text[..cut], &text[cut..]]);
                let got = text_of(d, &out);
                assert_eq!(got, whole, "{det} {d:?} cut {cut}");
                let all = serde_json::to_string(&out).unwrap();
                assert!(!all.contains(&secret), "{det} {d:?} cut {cut}: {all}");
            }
        }
    }
}

#[test]
fn every_vector_across_3_to_10_random_events_and_json_escapes() {
    let sc = scanner();
    let id = Identity::default();
    let mut x: u64 = 7;
    let mut next = |n: usize| {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        ((x >> 33) as usize) % n.max(1)
    };
    for (det, tp, secret, _) in crate::policy::scan::tests::vectors() {
        // The text travels JSON-escaped (`\/`, `\u0041`); what matters is the decoded text.
        let text = format!("A/B \u{0041} {tp} done");
        let (whole, _) = sc.mask(
            &text,
            Ctx {
                dir: Direction::Response,
                id: &id,
            },
        );
        for d in ALL {
            for _ in 0..5 {
                let n = 3 + next(8);
                let mut cuts: Vec<usize> = (0..n - 1).map(|_| next(text.len())).collect();
                cuts.sort();
                cuts.dedup();
                let mut parts = Vec::new();
                let mut prev = 0;
                for c in cuts.into_iter().chain([text.len()]) {
                    parts.push(&text[prev..c]);
                    prev = c;
                }
                let out = rewrite(&sc, d, &parts);
                assert_eq!(text_of(d, &out), whole, "{det} {d:?}");
                assert!(!serde_json::to_string(&out).unwrap().contains(&secret));
            }
        }
    }
}

#[test]
fn responses_done_events_carry_the_masked_whole_text() {
    let sc = scanner();
    let key = format!("ghp_{}", "aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE3fG5");
    let text = format!("key {key} end");
    let out = rewrite(&sc, D::Responses, &[&text[..8], &text[8..]]);
    let done = out
        .iter()
        .find(|e| e.1["type"] == "response.output_text.done")
        .unwrap();
    assert_eq!(done.1["text"], "key [MASKED:github-classic-token] end");
}

fn frames(chunks: Vec<Vec<u8>>) -> crate::upstream::pool::RespBody {
    let s =
        futures_util::stream::iter(chunks.into_iter().map(|c| {
            Ok::<_, crate::upstream::pool::BoxError>(http_body::Frame::data(Bytes::from(c)))
        }));
    http_body_util::StreamBody::new(s).boxed()
}

async fn run(kind: Kind, chunks: Vec<Vec<u8>>) -> (String, usize) {
    let hits = Arc::new(std::sync::Mutex::new(0));
    let h = hits.clone();
    let body = MaskedBody::new(
        frames(chunks),
        kind,
        Rewriter::new(scanner(), Arc::new(Identity::default())),
        Box::new(move |v| *h.lock().unwrap() += v.len()),
    );
    let out = body.collect().await.unwrap().to_bytes();
    let n = *hits.lock().unwrap();
    (String::from_utf8(out.to_vec()).unwrap(), n)
}

#[tokio::test]
async fn sse_framing_is_kept_and_a_split_key_is_masked() {
    let key = format!(
        "sk-proj-{}",
        "Ab1Cd2Ef3Gh4Ij5Kl6Mn7Op8Qr9St0Uv1Wx2Yz3Ab4Cd5Ef6Gh7Ij8Kl9Mn0"
    );
    let ev = |t: &str| {
        format!(
            "data: {}\n\n",
            json!({"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":t},"finish_reason":null}]})
        )
    };
    let (a, b) = key.split_at(10);
    let chunks = vec![
        ev("Your key is ").into_bytes(),
        // An event split across frames, and a frame with two events.
        ev(a).as_bytes()[..20].to_vec(),
        [ev(a).as_bytes()[20..].to_vec(), ev(b).into_bytes()].concat(),
        format!("data: {}\n\ndata: [DONE]\n\n", json!({"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]})).into_bytes(),
    ];
    let (out, hits) = run(Kind::Sse, chunks).await;
    assert!(!out.contains(&key[8..]), "{out}");
    assert!(out.contains("[MASKED:openai-api-key]"), "{out}");
    assert!(out.ends_with("data: [DONE]\n\n"), "{out}");
    assert_eq!(hits, 1);
    for ev in out.split("\n\n").filter(|e| !e.is_empty()) {
        let data = ev.strip_prefix("data: ").expect("data line");
        assert!(
            data == "[DONE]" || serde_json::from_str::<Value>(data).is_ok(),
            "{ev}"
        );
    }
}

#[tokio::test]
async fn gemini_json_array_elements_are_masked_and_the_array_stays_valid() {
    let key = "AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q";
    let el = |t: &str, fin: bool| {
        let mut v =
            json!({"candidates":[{"content":{"parts":[{"text":t}],"role":"model"},"index":0}]});
        if fin {
            v["candidates"][0]["finishReason"] = json!("STOP");
        }
        v.to_string()
    };
    let (a, b) = key.split_at(15);
    let doc = format!(
        "[{}\r\n,{}\r\n,{}\r\n,{}]",
        el("The key: ", false),
        el(a, false),
        el(b, false),
        el(" ok", true)
    );
    // Delivered in 7-byte frames.
    let chunks = doc.as_bytes().chunks(7).map(|c| c.to_vec()).collect();
    let (out, hits) = run(Kind::JsonArray, chunks).await;
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let text: String = v
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| {
            e.pointer("/candidates/0/content/parts/0/text")
                .and_then(Value::as_str)
        })
        .collect();
    assert_eq!(text, "The key: [MASKED:google-api-key] ok");
    assert_eq!(hits, 1);
}

#[tokio::test]
async fn an_answer_without_a_hit_goes_out_byte_for_byte() {
    // Spacing, key order and escapes a re-serialisation would change.
    let doc = "{ \"z\": 1,\n  \"a\": \"caf\\u00e9 \\/ ok\",  \"n\": 1.50 }\n";
    let (out, hits) = run(Kind::Json, vec![doc.as_bytes().to_vec()]).await;
    assert_eq!((out.as_str(), hits), (doc, 0));
    let text = "plain text,\twith  spacing\n";
    let (out, hits) = run(Kind::Text, vec![text.as_bytes().to_vec()]).await;
    assert_eq!((out.as_str(), hits), (text, 0));
}

#[tokio::test]
async fn a_json_answer_is_masked_field_by_field() {
    let key = format!("ghp_{}", "aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE3fG5");
    let doc = json!({"id":"x","choices":[{"message":{"role":"assistant","content":format!("use {key}")}}]}).to_string();
    let (out, _) = run(
        Kind::Json,
        vec![doc.as_bytes()[..30].to_vec(), doc.as_bytes()[30..].to_vec()],
    )
    .await;
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "use [MASKED:github-classic-token]"
    );
}

fn anthropic_with_thinking(thought: &[&str], text: &str) -> Vec<(Option<String>, Value)> {
    let ev = |n: &str, v: Value| (Some(n.to_string()), v);
    let mut out = vec![
        ev(
            "message_start",
            json!({"type":"message_start","message":{"id":"m","type":"message","role":"assistant","content":[],"model":"claude-x"}}),
        ),
        ev(
            "content_block_start",
            json!({"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}}),
        ),
    ];
    for t in thought {
        out.push(ev("content_block_delta", json!({"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":t}})));
    }
    out.push(ev("content_block_delta", json!({"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxDYjJ2fb8A"}})));
    out.push(ev(
        "content_block_stop",
        json!({"type":"content_block_stop","index":0}),
    ));
    out.push(ev(
        "content_block_start",
        json!({"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}),
    ));
    out.push(ev(
        "content_block_delta",
        json!({"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":text}}),
    ));
    out.push(ev(
        "content_block_stop",
        json!({"type":"content_block_stop","index":1}),
    ));
    out.push(ev("message_stop", json!({"type":"message_stop"})));
    out
}

#[test]
fn signed_thinking_blocks_pass_unchanged_or_are_removed_whole() {
    let sc = scanner();
    let run = |evs: Vec<(Option<String>, Value)>| {
        let mut rw = Rewriter::new(sc.clone(), Arc::new(Identity::default()));
        let mut out = Vec::new();
        for (n, v) in evs {
            out.extend(rw.event(n, v));
        }
        out.extend(rw.finish());
        out
    };
    // No secret: byte for byte the same events, signature included.
    let clean = anthropic_with_thinking(&["Let me ", "think."], "Answer.");
    assert_eq!(run(clean.clone()), clean);
    // A secret split across thinking deltas: the block is gone, the text block is index 0.
    let k = "ghp_aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE3fG5";
    let out = run(anthropic_with_thinking(
        &["the token is ", &k[..10], &k[10..]],
        "Answer.",
    ));
    let all = serde_json::to_string(&out).unwrap();
    assert!(
        !all.contains(&k[10..]) && !all.contains("signature_delta"),
        "{all}"
    );
    let starts: Vec<&Value> = out
        .iter()
        .filter(|e| e.1["type"] == "content_block_start")
        .map(|e| &e.1)
        .collect();
    assert_eq!(starts.len(), 1);
    assert_eq!(starts[0]["index"], 0);
    assert_eq!(starts[0]["content_block"]["type"], "text");
    assert!(
        out.iter().all(|e| e.1.get("index").is_none_or(|i| i == 0)),
        "{all}"
    );
}

#[tokio::test]
async fn a_whole_anthropic_message_loses_a_flagged_thinking_block() {
    let k = "ghp_aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE3fG5";
    let doc = json!({"id":"m","type":"message","role":"assistant","model":"claude-x","content":[
        {"type":"thinking","thinking":format!("maybe {k}"),"signature":"EqQB"},
        {"type":"text","text":"Answer."}]})
    .to_string();
    let (out, hits) = run(Kind::Json, vec![doc.into_bytes()]).await;
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["content"].as_array().unwrap().len(), 1, "{out}");
    assert_eq!(v["content"][0]["type"], "text");
    assert_eq!(hits, 1);
}

#[tokio::test]
async fn json_escaped_secrets_on_the_wire_are_decoded_and_masked() {
    // `\u005f` is `_`, `\/` is `/`: the provider may escape any character.
    let raw = [
        r#"data: {"choices":[{"index":0,"delta":{"content":"token ghp\u005faB3dE5gH7jK9"},"finish_reason":null}]}"#,
        r#"data: {"choices":[{"index":0,"delta":{"content":"mN1pQ3sT5vW7yZ9bC1dE3fG5 and https:\/\/hooks.slack.com\/services\/T0A1B2C3D\/B0A1B2C3D\/"},"finish_reason":null}]}"#,
        r#"data: {"choices":[{"index":0,"delta":{"content":"abcdefghijklmnopqrstuvwx done"},"finish_reason":"stop"}]}"#,
        "data: [DONE]",
    ];
    let chunks = raw
        .iter()
        .map(|e| format!("{e}\n\n").into_bytes())
        .collect();
    let (out, hits) = run(Kind::Sse, chunks).await;
    let text: String = out
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            v.pointer("/choices/0/delta/content")
                .and_then(Value::as_str)
                .map(String::from)
        })
        .collect();
    assert_eq!(
        text,
        "token [MASKED:github-classic-token] and [MASKED:slack-webhook] done"
    );
    assert_eq!(hits, 2);
    assert!(!out.contains("aB3dE5gH7jK9mN1"), "{out}");
}

// --- Answers decoded whatever they claim to be (issue G, item 4) ---

const GH: &str = "ghp_aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE3fG5";

async fn run_with(sc: Arc<Scanner>, kind: Kind, chunks: Vec<Vec<u8>>) -> (String, bool) {
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let body = MaskedBody::new(
        frames(chunks),
        kind,
        Rewriter::new(sc, Arc::new(Identity::default())),
        Box::new(|_| {}),
    )
    .with_completion(done.clone());
    let out = body.collect().await.unwrap().to_bytes();
    (
        String::from_utf8(out.to_vec()).unwrap(),
        done.load(std::sync::atomic::Ordering::Acquire),
    )
}

/// Cut `s` into pieces of `n` bytes.
fn cut(s: &str, n: usize) -> Vec<Vec<u8>> {
    s.as_bytes().chunks(n).map(<[u8]>::to_vec).collect()
}

fn chat_chunk(delta: Value) -> String {
    json!({"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": null}]}).to_string()
}

#[tokio::test]
async fn sse_is_found_by_content_with_any_line_ending_and_every_line_masked() {
    let (a, b) = GH.split_at(17);
    for nl in ["\n", "\r\n", "\r"] {
        let evs = [
            format!(
                ": comment {GH}{nl}id: {GH}{nl}data: {}{nl}{nl}",
                chat_chunk(json!({"content": a}))
            ),
            format!(
                "event: x{nl}data: {}{nl}{nl}",
                chat_chunk(json!({"content": b}))
            ),
            format!("data: [DONE]{nl}{nl}"),
        ]
        .concat();
        for n in [1, 7, 1000] {
            // Served as anything: octet-stream, text/plain, no content type → sniffed.
            let (out, done) = run_with(scanner(), Kind::Sniff, cut(&evs, n)).await;
            assert!(
                !out.contains(GH) && !out.contains(a) && !out.contains(b),
                "{nl:?} {n}: {out}"
            );
            assert_eq!(
                out.matches("[MASKED:github-classic-token]").count(),
                3,
                "{nl:?} {n}: {out}"
            );
            assert!(done, "[DONE] decoded: the answer is complete");
        }
    }
}

#[tokio::test]
async fn done_inside_text_does_not_complete_the_answer() {
    let ev = format!(
        "data: {}\n\n",
        chat_chunk(json!({"content": "say data: [DONE] now"}))
    );
    let (out, done) = run_with(scanner(), Kind::Sse, vec![ev.into_bytes()]).await;
    let text: String = out
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| {
            v.pointer("/choices/0/delta/content")
                .and_then(Value::as_str)
                .map(String::from)
        })
        .collect();
    assert_eq!(text, "say data: [DONE] now");
    assert!(!done);
}

#[tokio::test]
async fn every_text_field_is_masked_across_events() {
    let (a, b) = GH.split_at(20);
    for field in [
        json!({"reasoning": "R"}),
        json!({"reasoning_content": "R"}),
        json!({"refusal": "R"}),
        json!({"audio": {"transcript": "R"}}),
        json!({"tool_calls": [{"index": 0, "function": {"arguments": "R"}}]}),
    ] {
        let mk = |t: &str| {
            let s = field.to_string().replace("\"R\"", &json!(t).to_string());
            format!(
                "data: {}\n\n",
                chat_chunk(serde_json::from_str(&s).unwrap())
            )
        };
        let stream = [
            mk(a),
            mk(b),
            format!(
                "data: {}\n\n",
                json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
            ),
            "data: [DONE]\n\n".into(),
        ]
        .concat();
        let (out, _) = run_with(scanner(), Kind::Sse, vec![stream.into_bytes()]).await;
        assert!(!out.contains(a) && !out.contains(b), "{field}: {out}");
        assert!(
            out.contains("[MASKED:github-classic-token]"),
            "{field}: {out}"
        );
    }
}

#[tokio::test]
async fn logprob_tokens_never_spell_a_masked_secret() {
    // One token per character, across events, with their bytes.
    let mut stream = String::new();
    for ch in GH.chars() {
        let t = ch.to_string();
        stream.push_str(&format!(
            "data: {}\n\n",
            json!({"choices": [{"index": 0, "delta": {"content": t}, "logprobs": {"content": [{"token": t, "logprob": -0.1, "bytes": t.as_bytes(), "top_logprobs": [{"token": t, "logprob": -0.1, "bytes": t.as_bytes()}]}]}, "finish_reason": null}]})
        ));
    }
    stream.push_str(&format!(
        "data: {}\n\ndata: [DONE]\n\n",
        json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    ));
    let (out, _) = run_with(scanner(), Kind::Sse, vec![stream.into_bytes()]).await;
    let mut content = String::new();
    let mut tokens = String::new();
    let mut bytes = Vec::new();
    for line in out.lines().filter_map(|l| l.strip_prefix("data: ")) {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        content.push_str(
            v.pointer("/choices/0/delta/content")
                .and_then(Value::as_str)
                .unwrap_or(""),
        );
        for t in v
            .pointer("/choices/0/logprobs/content")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            tokens.push_str(t["token"].as_str().unwrap());
            bytes.extend(
                t["bytes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|b| b.as_u64().unwrap() as u8),
            );
        }
    }
    assert_eq!(content, "[MASKED:github-classic-token]");
    assert_eq!(tokens, "[MASKED:github-classic-token]");
    assert_eq!(String::from_utf8(bytes).unwrap(), tokens);
    // A whole (non-streamed) answer's logprobs too.
    let toks: Vec<Value> = GH
        .chars()
        .map(|c| json!({"token": c.to_string(), "logprob": 0.0}))
        .collect();
    let doc = json!({"choices": [{"index": 0, "message": {"content": "x"}, "logprobs": {"content": toks}}]}).to_string();
    let (out, _) = run_with(scanner(), Kind::Sniff, vec![doc.into_bytes()]).await;
    let v: Value = serde_json::from_str(&out).unwrap();
    let spelt: String = v
        .pointer("/choices/0/logprobs/content")
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["token"].as_str().unwrap())
        .collect();
    assert_eq!(spelt, "[MASKED:github-classic-token]");
}

#[tokio::test]
async fn ndjson_and_json_arrays_are_decoded_by_content() {
    let (a, b) = GH.split_at(9);
    let nd = format!(
        "{}\n{}\n{}\n",
        json!({"model": "m", "message": {"role": "assistant", "content": a}, "done": false}),
        json!({"model": "m", "message": {"role": "assistant", "content": b}, "done": false}),
        json!({"model": "m", "message": {"role": "assistant", "content": ""}, "done": true}),
    );
    for n in [3, 50, 10_000] {
        let (out, _) = run_with(scanner(), Kind::Sniff, cut(&nd, n)).await;
        assert!(!out.contains(a) && !out.contains(b), "{n}: {out}");
        let text: String = out
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["message"]["content"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(text, "[MASKED:github-classic-token]", "{n}");
    }
}

#[tokio::test]
async fn no_field_is_skipped_by_its_name() {
    let doc =
        json!({"id": GH, "data": [{"signature": GH, "item_id": GH, "encrypted_content": GH}]})
            .to_string();
    let (out, _) = run_with(scanner(), Kind::Sniff, vec![doc.into_bytes()]).await;
    assert!(!out.contains(GH), "{out}");
    assert_eq!(out.matches("[MASKED:github-classic-token]").count(), 4);
}

#[tokio::test]
async fn plain_text_streams_and_bytes_are_scanned() {
    let text = format!("error page: the key {GH} was rejected");
    for n in [1, 5, 64] {
        let (out, _) = run_with(scanner(), Kind::Sniff, cut(&text, n)).await;
        assert_eq!(
            out, "error page: the key [MASKED:github-classic-token] was rejected",
            "{n}"
        );
    }
    // Binary with a secret inside: the answer is cut with an error, never passed on.
    let mut bin = vec![0xff, 0xfe, 0x00, 0x01];
    bin.extend_from_slice(GH.as_bytes());
    let body = MaskedBody::new(
        frames(vec![bin[..10].to_vec(), bin[10..].to_vec()]),
        Kind::Sniff,
        Rewriter::new(scanner(), Arc::new(Identity::default())),
        Box::new(|_| {}),
    );
    assert!(body.collect().await.is_err());
    // Binary without one passes unaltered.
    let clean: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
    let body = MaskedBody::new(
        frames(vec![clean.clone()]),
        Kind::Sniff,
        Rewriter::new(scanner(), Arc::new(Identity::default())),
        Box::new(|_| {}),
    );
    assert_eq!(body.collect().await.unwrap().to_bytes().to_vec(), clean);
}

#[tokio::test]
async fn an_echoed_vault_key_or_a_long_piece_of_it_is_masked() {
    let key = "sk-vault-echo-Zq8Xw2Lm4Nb6Vc1Kj3Hg5Fd7Sa9Pp0Oo";
    let sc = Arc::new(
        Scanner::with_keys(
            &[],
            &PolicyConfig::default(),
            &[crate::vault::Secret::new(key)],
        )
        .unwrap(),
    );
    assert!(sc.knows_key(key));
    let piece = &key[6..6 + 26];
    for text in [
        format!("debug: received {key}"),
        format!("partial {piece} end"),
    ] {
        let (out, _) = run_with(sc.clone(), Kind::Sniff, cut(&text, 4)).await;
        assert!(
            !out.contains(piece) && out.contains("[MASKED:vault-key]"),
            "{out}"
        );
        // Split across streamed events.
        let (a, b) = text.split_at(text.len() / 2);
        let stream = format!(
            "data: {}\n\ndata: {}\n\ndata: [DONE]\n\n",
            chat_chunk(json!({"content": a})),
            chat_chunk(json!({"content": b}))
        );
        let (out, _) = run_with(sc.clone(), Kind::Sse, vec![stream.into_bytes()]).await;
        let joined: String = out
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|v| {
                v.pointer("/choices/0/delta/content")
                    .and_then(Value::as_str)
                    .map(String::from)
            })
            .collect();
        assert!(
            !joined.contains(piece) && joined.contains("[MASKED:vault-key]"),
            "{joined}"
        );
    }
    // A short piece is not a detector (it would mask ordinary text).
    let (out, _) = run_with(sc.clone(), Kind::Sniff, vec![b"sk-vault-echo".to_vec()]).await;
    assert_eq!(out, "sk-vault-echo");
}

#[test]
fn block_and_hold_rules_mask_in_answers() {
    use crate::policy::scan::{Action, RuleConfig};
    for action in [Action::Block, Action::Hold] {
        let rules = [RuleConfig {
            name: "r".into(),
            detector: Some("github-classic-token".into()),
            pattern: None,
            on: vec![Direction::Request, Direction::Response],
            action,
            replacement: None,
            allow: vec![],
            allow_regex: vec![],
            who: None,
        }];
        let sc = Scanner::new(&rules, &PolicyConfig::default()).unwrap();
        let id = Identity::default();
        let (out, hits) = sc.mask(
            &format!("a {GH} b"),
            Ctx {
                dir: Direction::Response,
                id: &id,
            },
        );
        assert_eq!(out, "a [MASKED:r] b", "{action:?}");
        assert_eq!(hits[0].effect, crate::policy::scan::Effect::Mask);
    }
}

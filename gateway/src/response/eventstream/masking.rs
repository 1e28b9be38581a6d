//! Event-stream answers through the masker: frames decoded whatever they claim, secrets split
//! across messages masked, messages re-encoded with valid CRCs, errors ending in an exception.

use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::BodyExt as _;
use serde_json::{Value, json};

use super::{Message, decode, event};
use crate::{
    policy::scan::{PolicyConfig, Scanner},
    redirect::identity::Identity,
    response::{
        Rewriter,
        body::{Kind, MaskedBody},
    },
};

const GH: &str = "ghp_aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE3fG5";

fn b64(v: &Value) -> String {
    base64::engine::general_purpose::STANDARD.encode(v.to_string())
}

fn converse(parts: &[&str]) -> Vec<u8> {
    let mut w = Vec::new();
    event(
        "messageStart",
        json!({"role":"assistant","p":"abcd"})
            .to_string()
            .into_bytes(),
    )
    .encode(&mut w);
    for p in parts {
        event(
            "contentBlockDelta",
            json!({"contentBlockIndex":0,"delta":{"text":p},"p":"abcdefgh"})
                .to_string()
                .into_bytes(),
        )
        .encode(&mut w);
    }
    event(
        "contentBlockStop",
        json!({"contentBlockIndex":0,"p":"ab"})
            .to_string()
            .into_bytes(),
    )
    .encode(&mut w);
    event(
        "messageStop",
        json!({"stopReason":"end_turn","p":"abc"})
            .to_string()
            .into_bytes(),
    )
    .encode(&mut w);
    event(
        "metadata",
        json!({"usage":{"inputTokens":1,"outputTokens":2,"totalTokens":3},"metrics":{"latencyMs":5},"p":"x"})
            .to_string()
            .into_bytes(),
    )
    .encode(&mut w);
    w
}

fn invoke(parts: &[&str]) -> Vec<u8> {
    let mut w = Vec::new();
    let mut native = vec![
        json!({"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"claude","usage":{"input_tokens":1,"output_tokens":1}}}),
        json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
    ];
    for p in parts {
        native.push(
            json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":p}}),
        );
    }
    native.push(json!({"type":"content_block_stop","index":0}));
    native.push(
        json!({"type":"message_stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":1}}),
    );
    for n in native {
        event(
            "chunk",
            json!({"bytes": b64(&n), "p": "abcdefghij"})
                .to_string()
                .into_bytes(),
        )
        .encode(&mut w);
    }
    w
}

/// Every message of `wire` (CRCs checked), and whether it ended cleanly.
fn messages(wire: &[u8]) -> Vec<Message> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < wire.len() {
        let (m, n) = decode(&wire[at..])
            .expect("valid frames")
            .expect("complete");
        out.push(m);
        at += n;
    }
    out
}

fn converse_text(ms: &[Message]) -> String {
    ms.iter()
        .filter(|m| m.header(":event-type") == Some("contentBlockDelta"))
        .map(|m| {
            let v: Value = serde_json::from_slice(&m.payload).unwrap();
            v["delta"]["text"].as_str().unwrap().to_string()
        })
        .collect()
}

fn invoke_text(ms: &[Message]) -> String {
    ms.iter()
        .map(|m| {
            assert_eq!(m.header(":event-type"), Some("chunk"));
            let v: Value = serde_json::from_slice(&m.payload).unwrap();
            let raw = base64::engine::general_purpose::STANDARD
                .decode(v["bytes"].as_str().unwrap())
                .unwrap();
            let n: Value = serde_json::from_slice(&raw).unwrap();
            n.pointer("/delta/text")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        })
        .collect()
}

async fn run(kind: Kind, chunks: Vec<Vec<u8>>) -> (Result<Vec<u8>, String>, Vec<u8>, bool) {
    let sc = Arc::new(Scanner::new(&[], &PolicyConfig::default()).unwrap());
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s =
        futures_util::stream::iter(chunks.into_iter().map(|c| {
            Ok::<_, crate::upstream::pool::BoxError>(http_body::Frame::data(Bytes::from(c)))
        }));
    let mut body = MaskedBody::new(
        http_body_util::StreamBody::new(s).boxed(),
        kind,
        Rewriter::new(sc, Arc::new(Identity::default())),
        Box::new(|_| {}),
    )
    .with_completion(done.clone());
    let mut got = Vec::new();
    let mut err = None;
    while let Some(f) = body.frame().await {
        match f {
            Ok(f) => got.extend_from_slice(f.data_ref().unwrap()),
            Err(e) => {
                err = Some(e.to_string());
                break;
            }
        }
    }
    let d = done.load(std::sync::atomic::Ordering::Acquire);
    match err {
        Some(e) => (Err(e), got, d),
        None => (Ok(got.clone()), got, d),
    }
}

#[tokio::test]
async fn converse_stream_secret_split_across_messages_is_masked_in_any_read_size() {
    let (a, b) = GH.split_at(17);
    let wire = converse(&["key: ", a, b, " end"]);
    for size in [1, 7, 13, 64, wire.len()] {
        for kind in [Kind::Sniff, Kind::SniffEventStream, Kind::SniffSse] {
            let chunks: Vec<Vec<u8>> = wire.chunks(size).map(<[u8]>::to_vec).collect();
            let (r, _, done) = run(kind, chunks).await;
            let ms = messages(&r.expect("no error"));
            let text = converse_text(&ms);
            assert_eq!(
                text, "key: [MASKED:github-classic-token] end",
                "size {size} {kind:?}"
            );
            assert!(done, "messageStop seen");
            let types: Vec<_> = ms
                .iter()
                .map(|m| m.header(":event-type").unwrap().to_string())
                .collect();
            assert_eq!(types.first().map(String::as_str), Some("messageStart"));
            assert_eq!(types.last().map(String::as_str), Some("metadata"));
            assert!(
                types
                    .iter()
                    .all(|t| super::super::dialect::CONVERSE_EVENTS.contains(&t.as_str()))
            );
        }
    }
}

#[tokio::test]
async fn invoke_stream_chunks_are_masked_in_the_models_own_dialect() {
    let (a, b) = GH.split_at(9);
    let wire = invoke(&["x ", a, b, " y"]);
    let chunks: Vec<Vec<u8>> = wire.chunks(11).map(<[u8]>::to_vec).collect();
    let (r, _, done) = run(Kind::SniffEventStream, chunks).await;
    let ms = messages(&r.unwrap());
    assert_eq!(invoke_text(&ms), "x [MASKED:github-classic-token] y");
    assert!(done, "message_stop seen");
    // The chunk's other fields stay beside the bytes.
    let v: Value = serde_json::from_slice(&ms[0].payload).unwrap();
    assert_eq!(v["p"], "abcdefghij");
}

#[tokio::test]
async fn an_answer_without_a_hit_keeps_its_messages() {
    // Messages whose text the masker releases whole go out byte for byte; a tail it held back
    // (it could have begun a match) comes in one extra delta before the block closes.
    let wire = converse(&["hello ", "world"]);
    let (r, _, _) = run(Kind::Sniff, vec![wire.clone()]).await;
    let out = r.unwrap();
    let two = {
        let (_, a) = decode(&wire).unwrap().unwrap();
        let (_, b) = decode(&wire[a..]).unwrap().unwrap();
        a + b
    };
    assert_eq!(out[..two], wire[..two]);
    assert_eq!(converse_text(&messages(&out)), "hello world");
    let wire = invoke(&["hello"]);
    let (r, _, _) = run(Kind::SniffEventStream, vec![wire.clone()]).await;
    assert_eq!(invoke_text(&messages(&r.unwrap())), "hello");
}

#[tokio::test]
async fn bad_crc_oversize_or_truncation_end_with_an_exception_message() {
    let wire = converse(&["a", "b"]);
    let first = decode(&wire).unwrap().unwrap().1;
    let mut bad = wire.clone();
    bad[first + 20] ^= 0x01;
    let (r, got, _) = run(Kind::SniffEventStream, vec![bad]).await;
    assert!(r.unwrap_err().contains("CRC"));
    let ms = messages(&got);
    assert_eq!(ms.len(), 2, "the good first message, then the exception");
    let last = ms.last().unwrap();
    assert_eq!(last.header(":message-type"), Some("exception"));
    assert_eq!(
        last.header(":exception-type"),
        Some("internalServerException")
    );
    let v: Value = serde_json::from_slice(&last.payload).unwrap();
    assert!(v["message"].as_str().unwrap().contains("CRC"), "{v}");

    // Cut in the middle of a message.
    let (r, got, _) = run(Kind::SniffEventStream, vec![wire[..first + 5].to_vec()]).await;
    assert!(r.unwrap_err().contains("ended inside"));
    assert_eq!(
        messages(&got).last().unwrap().header(":message-type"),
        Some("exception")
    );

    // A prelude claiming more than the bound.
    let mut big = Vec::new();
    big.extend_from_slice(&((super::MAX_MESSAGE + 1) as u32).to_be_bytes());
    big.extend_from_slice(&0u32.to_be_bytes());
    let c = crc32fast::hash(&big);
    big.extend_from_slice(&c.to_be_bytes());
    let (r, _, _) = run(Kind::Sniff, vec![big]).await;
    assert!(r.unwrap_err().contains("over the bound"));

    // Claimed an event stream, sent garbage: not passed on unread.
    let (r, got, _) = run(
        Kind::SniffEventStream,
        vec![b"\x00\x01garbage-bytes".to_vec()],
    )
    .await;
    assert!(r.is_err());
    assert!(!String::from_utf8_lossy(&got).contains("garbage"));
}

#[tokio::test]
async fn a_json_error_or_the_converse_answer_is_masked_as_json() {
    // A JSON error for a streaming endpoint is JSON, not an event stream.
    let err = json!({"message": format!("bad key {GH}")}).to_string();
    let (r, _, _) = run(Kind::SniffEventStream, vec![err.into_bytes()]).await;
    let v: Value = serde_json::from_slice(&r.unwrap()).unwrap();
    assert_eq!(v["message"], "bad key [MASKED:github-classic-token]");
    // Converse's whole answer: output.message.content[].text.
    let ans = json!({"output":{"message":{"role":"assistant","content":[{"text": format!("here {GH}")}]}},"stopReason":"end_turn","usage":{"inputTokens":1,"outputTokens":1,"totalTokens":2},"metrics":{"latencyMs":1}});
    let (r, _, _) = run(Kind::Sniff, vec![ans.to_string().into_bytes()]).await;
    let v: Value = serde_json::from_slice(&r.unwrap()).unwrap();
    assert_eq!(
        v["output"]["message"]["content"][0]["text"],
        "here [MASKED:github-classic-token]"
    );
}

#[tokio::test]
async fn exception_messages_are_masked_and_stay_exceptions() {
    let mut wire = Vec::new();
    let mut m = super::exception("throttlingException", &format!("slow down {GH}"));
    m.headers.push((
        ":error-message".into(),
        super::Value::String(format!("x {GH}")),
    ));
    m.encode(&mut wire);
    let (r, _, _) = run(Kind::Sniff, vec![wire]).await;
    let ms = messages(&r.unwrap());
    assert_eq!(ms[0].header(":exception-type"), Some("throttlingException"));
    assert_eq!(
        ms[0].header(":error-message"),
        Some("x [MASKED:github-classic-token]")
    );
    let v: Value = serde_json::from_slice(&ms[0].payload).unwrap();
    assert_eq!(v["message"], "slow down [MASKED:github-classic-token]");
}

/// A ConverseStream answer with one content block whose deltas are `delta(part)`.
fn converse_block(start: Value, deltas: Vec<Value>) -> Vec<u8> {
    let mut w = Vec::new();
    let mut evs = vec![
        ("messageStart", json!({"role":"assistant"})),
        (
            "contentBlockStart",
            json!({"contentBlockIndex":0,"start":start}),
        ),
    ];
    for d in deltas {
        evs.push((
            "contentBlockDelta",
            json!({"contentBlockIndex":0,"delta":d}),
        ));
    }
    evs.push(("contentBlockStop", json!({"contentBlockIndex":0})));
    evs.push(("messageStop", json!({"stopReason":"tool_use"})));
    for (t, p) in evs {
        event(t, p.to_string().into_bytes()).encode(&mut w);
    }
    w
}

/// The strings at `pointer` in the deltas of `ms`, joined.
fn joined_at(ms: &[Message], pointer: &str) -> String {
    ms.iter()
        .filter(|m| m.header(":event-type") == Some("contentBlockDelta"))
        .filter_map(|m| {
            let v: Value = serde_json::from_slice(&m.payload).unwrap();
            v.pointer(pointer).and_then(Value::as_str).map(String::from)
        })
        .collect()
}

#[tokio::test]
async fn every_converse_delta_kind_is_masked_across_messages() {
    let (a, b) = GH.split_at(11);
    // (the delta member around a piece, where its text sits, what starts the block)
    type Wrap = fn(&str) -> Value;
    let kinds: [(Wrap, &str, Value); 4] = [
        (
            |p| json!({"toolUse":{"input":p}}),
            "/delta/toolUse/input",
            json!({"toolUse":{"toolUseId":"t1","name":"run"}}),
        ),
        (
            |p| json!({"reasoningContent":{"text":p}}),
            "/delta/reasoningContent/text",
            json!({}),
        ),
        (
            |p| json!({"toolResult":[{"text":p}]}),
            "/delta/toolResult/0/text",
            json!({"toolResult":{"toolUseId":"t1"}}),
        ),
        (
            |p| json!({"citation":{"sourceContent":[{"text":p}]}}),
            "/delta/citation/sourceContent/0/text",
            json!({}),
        ),
    ];
    for (wrap, pointer, start) in kinds {
        let pieces = [format!("{{\"token\":\"{a}"), format!("{b}\"}}")];
        let deltas = pieces.iter().map(|p| wrap(p)).collect();
        let wire = converse_block(start, deltas);
        for size in [5, wire.len()] {
            let chunks: Vec<Vec<u8>> = wire.chunks(size).map(<[u8]>::to_vec).collect();
            let (r, _, done) = run(Kind::SniffEventStream, chunks).await;
            let ms = messages(&r.expect("no error"));
            let text = joined_at(&ms, pointer);
            assert_eq!(
                text, "{\"token\":\"[MASKED:github-classic-token]\"}",
                "{pointer}, read size {size}"
            );
            assert!(done, "messageStop seen");
            // The held tail came out before the block closed, in a delta of the same kind.
            let types: Vec<_> = ms.iter().filter_map(|m| m.header(":event-type")).collect();
            let stop = types.iter().position(|t| *t == "contentBlockStop").unwrap();
            assert_eq!(types[stop - 1], "contentBlockDelta", "{types:?}");
            assert_eq!(types.last(), Some(&"messageStop"));
        }
    }
}

#[tokio::test]
async fn nova_chunks_shaped_like_converse_events_stay_chunks() {
    let (a, b) = GH.split_at(9);
    let mut w = Vec::new();
    let native = [
        json!({"messageStart":{"role":"assistant"}}),
        json!({"contentBlockDelta":{"delta":{"text":format!("k {a}")},"contentBlockIndex":0}}),
        json!({"contentBlockDelta":{"delta":{"text":b},"contentBlockIndex":0}}),
        json!({"contentBlockStop":{"contentBlockIndex":0}}),
        json!({"messageStop":{"stopReason":"end_turn"}}),
    ];
    for n in &native {
        event("chunk", json!({"bytes": b64(n)}).to_string().into_bytes()).encode(&mut w);
    }
    let (r, _, done) = run(Kind::SniffEventStream, vec![w]).await;
    let ms = messages(&r.unwrap());
    let mut text = String::new();
    for m in &ms {
        assert_eq!(m.header(":event-type"), Some("chunk"));
        let v: Value = serde_json::from_slice(&m.payload).unwrap();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(v["bytes"].as_str().unwrap())
            .unwrap();
        let n: Value = serde_json::from_slice(&raw).unwrap();
        if let Some(t) = n
            .pointer("/contentBlockDelta/delta/text")
            .and_then(Value::as_str)
        {
            text.push_str(t);
        }
    }
    assert_eq!(text, "k [MASKED:github-classic-token]");
    assert!(done, "Nova's messageStop closes the answer");
}

/// [`run`], with the hits the answer reported.
async fn run_hits(chunks: Vec<Vec<u8>>) -> (Result<Vec<u8>, String>, Vec<u8>, Vec<&'static str>) {
    let sc = Arc::new(Scanner::new(&[], &PolicyConfig::default()).unwrap());
    let s =
        futures_util::stream::iter(chunks.into_iter().map(|c| {
            Ok::<_, crate::upstream::pool::BoxError>(http_body::Frame::data(Bytes::from(c)))
        }));
    let hits = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = hits.clone();
    let mut body = MaskedBody::new(
        http_body_util::StreamBody::new(s).boxed(),
        Kind::SniffEventStream,
        Rewriter::new(sc, Arc::new(Identity::default())),
        Box::new(move |h| sink.lock().unwrap().extend(h.into_iter().map(|(_, d)| d))),
    );
    let mut got = Vec::new();
    let mut err = None;
    while let Some(f) = body.frame().await {
        match f {
            Ok(f) => got.extend_from_slice(f.data_ref().unwrap()),
            Err(e) => {
                err = Some(e.to_string());
                break;
            }
        }
    }
    drop(body);
    let hits = hits.lock().unwrap().clone();
    (err.map_or_else(|| Ok(got.clone()), Err), got, hits)
}

fn with_headers(extra: Vec<(String, super::Value)>) -> Vec<u8> {
    let mut w = Vec::new();
    event(
        "messageStart",
        json!({"role":"assistant"}).to_string().into_bytes(),
    )
    .encode(&mut w);
    let mut m = event(
        "contentBlockDelta",
        json!({"contentBlockIndex":0,"delta":{"text":"hello"}})
            .to_string()
            .into_bytes(),
    );
    m.headers.extend(extra);
    m.encode(&mut w);
    event(
        "messageStop",
        json!({"stopReason":"end_turn"}).to_string().into_bytes(),
    )
    .encode(&mut w);
    w
}

#[tokio::test]
async fn header_names_and_values_are_scanned_masked_or_the_answer_ends() {
    use super::Value as H;
    // A string value and a name: masked, the message encoded again (CRCs checked by
    // `messages`); base64 text in a string value too.
    let b64gh = base64::engine::general_purpose::STANDARD.encode(format!("x {GH}"));
    let wire = with_headers(vec![
        ("x-note".into(), H::String(format!("see {GH}"))),
        (format!("x-{GH}"), H::Int(7)),
        ("x-b64".into(), H::String(b64gh)),
        ("x-blob".into(), H::Bytes(b"nothing here".to_vec())),
        ("x-id".into(), H::Uuid([0x11; 16])),
    ]);
    let (r, _, hits) = run_hits(vec![wire]).await;
    let out = r.expect("masked, not cut");
    assert!(!String::from_utf8_lossy(&out).contains(GH));
    let ms = messages(&out);
    let m = &ms[1];
    assert_eq!(
        m.header("x-note"),
        Some("see [MASKED:github-classic-token]")
    );
    assert!(
        m.headers
            .iter()
            .any(|(n, v)| n == "x-[MASKED:github-classic-token]" && *v == H::Int(7)),
        "{:?}",
        m.headers
    );
    // (Encoded again the way it came: without padding.)
    let inner = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(m.header("x-b64").unwrap().trim_end_matches('='))
        .unwrap();
    assert_eq!(inner, b"x [MASKED:github-classic-token]");
    assert_eq!(
        m.headers[m.headers.len() - 2].1,
        H::Bytes(b"nothing here".to_vec())
    );
    assert_eq!(converse_text(&ms), "hello");
    assert_eq!(hits.len(), 3, "{hits:?}");

    // A byte-array value cannot be masked: the answer ends with an exception message, the
    // message carrying it never goes out, and the hit is on record.
    let wire = with_headers(vec![(
        "x-blob".into(),
        H::Bytes(format!("\x00\x01{GH}\x7f").into_bytes()),
    )]);
    let (r, got, hits) = run_hits(vec![wire]).await;
    let e = r.unwrap_err();
    assert!(
        e.contains("cannot be masked") && e.contains("github"),
        "{e}"
    );
    assert!(!e.contains(GH));
    assert!(!String::from_utf8_lossy(&got).contains(GH));
    let ms = messages(&got);
    assert_eq!(ms.len(), 2, "messageStart, then the exception");
    assert_eq!(ms[1].header(":message-type"), Some("exception"));
    assert_eq!(hits, vec!["github-classic-token"]);
}

/// Every model's native chunk on InvokeModelWithResponseStream streams its text across chunks,
/// whatever its field (Titan, Llama, Mistral, Cohere Command, Anthropic Text Completions): a
/// secret split over two chunks is masked, the chunks stay chunks, and the stop chunk releases
/// what was held.
#[tokio::test]
async fn native_chunks_of_every_model_are_masked_across_chunks() {
    let (a, b) = GH.split_at(9);
    type Mk = fn(&str, bool) -> Value;
    let models: [(&str, Mk, &str); 6] = [
        (
            "titan",
            |t, end| {
                json!({"outputText": t, "index": 0,
            "completionReason": if end { json!("FINISH") } else { Value::Null }})
            },
            "/outputText",
        ),
        (
            "llama",
            |t, end| {
                json!({"generation": t, "generation_token_count": 3,
            "stop_reason": if end { json!("stop") } else { Value::Null }})
            },
            "/generation",
        ),
        (
            "mistral",
            |t, end| {
                json!({"outputs": [{"text": t,
            "stop_reason": if end { json!("stop") } else { Value::Null }}]})
            },
            "/outputs/0/text",
        ),
        (
            "cohere",
            |t, end| json!({"text": t, "is_finished": end}),
            "/text",
        ),
        (
            "cohere-gen",
            |t, end| json!({"generations": [{"text": t}], "is_finished": end}),
            "/generations/0/text",
        ),
        (
            "claude-text",
            |t, end| {
                json!({"completion": t,
            "stop_reason": if end { json!("stop_sequence") } else { Value::Null }})
            },
            "/completion",
        ),
    ];
    for (model, mk, pointer) in models {
        for end_with_stop in [true, false] {
            let mut w = Vec::new();
            let mut parts = vec![mk(&format!("k {a}"), false), mk(b, false)];
            if end_with_stop {
                parts.push(mk(" done", true));
            }
            for n in &parts {
                event("chunk", json!({"bytes": b64(n)}).to_string().into_bytes()).encode(&mut w);
            }
            let (r, _, _) = run(Kind::SniffEventStream, vec![w]).await;
            let ms = messages(&r.unwrap());
            let mut text = String::new();
            for m in &ms {
                assert_eq!(m.header(":event-type"), Some("chunk"), "{model}");
                let v: Value = serde_json::from_slice(&m.payload).unwrap();
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(v["bytes"].as_str().unwrap())
                    .unwrap();
                let n: Value = serde_json::from_slice(&raw).unwrap();
                text.push_str(n.pointer(pointer).and_then(Value::as_str).unwrap_or(""));
            }
            let want = if end_with_stop {
                "k [MASKED:github-classic-token] done"
            } else {
                "k [MASKED:github-classic-token]"
            };
            assert_eq!(text, want, "{model}, stop chunk: {end_with_stop}");
        }
    }
}

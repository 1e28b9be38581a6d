//! AWS Bedrock and Google Vertex AI cases (issue H), written from the AWS SigV4 and event
//! stream specifications, the Bedrock Runtime API reference (Converse, ConverseStream,
//! InvokeModel, InvokeModelWithResponseStream, ApplyGuardrail, CountTokens, StartAsyncInvoke),
//! Google OAuth 2.0 for service accounts and the Vertex AI REST reference (generateContent,
//! rawPredict / streamRawPredict for Anthropic models), not from the gateway's code.
//!
//! Requests go through the suite's raw HTTP driver (`driver.py`); the fake (`rawfake.py`)
//! recomputes every SigV4 signature with botocore's signer and the vault's credentials, checks
//! the payload hash against the body it received, and checks the service account's JWT
//! assertion at its token endpoint. Answers are scripted: AWS event streams built frame by
//! frame (with broken CRCs on purpose), SSE and JSON; the judge decodes what the client got
//! (event stream CRCs verified, base64 `bytes` decoded) and joins the text across events.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{
    VAULT, codec, contains, hex, key_pieces, label, needles,
    raw::{
        AWS_AK, AWS_SK, BEDROCK_FIPS, BEDROCK_HOST, MINTED, RawEnv, SA_PROJECT, VERTEX_EU,
        VERTEX_GLOBAL, VERTEX_HOST,
    },
    secrets::{Kind, for_case, json_escaped, secret, seed_of},
};

#[derive(Debug, Clone, PartialEq)]
pub enum Expect {
    /// Forwarded with `[MASKED:` in place of every planted secret.
    Masked,
    /// Masked upstream, or refused by the gateway.
    Clean,
    /// Refused by the gateway (an error status, `x-gateway-error`, a JSON error body naming
    /// `mentions` when given); nothing forwarded.
    Refused(Option<&'static str>),
    /// Only that no planted secret reaches the provider.
    NoLeak,
    /// Forwarded, and nothing of the client's credentials upstream (the planted values).
    Forwarded,
    /// The client sent no credential: forwarded with none (the suite's convention: the
    /// gateway's credential replaces a client's, it is not added to anonymous requests).
    NoCredential,
    /// The answer reaches the client masked: `[MASKED:` and the end marker in the joined text.
    AnswerMasked,
    /// The answer never reaches the client unmasked.
    AnswerNoLeak,
    /// The frame marked `BADCRC` never reaches the client, and the client learns of an error.
    AnswerBroken,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cloud {
    Bedrock,
    Vertex,
}

#[derive(Debug, Clone)]
pub struct CloudCase {
    pub name: String,
    pub cloud: Cloud,
    pub host: String,
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub h2: bool,
    pub chunked: bool,
    pub planted: Vec<String>,
    pub expect: Expect,
    pub script: Option<Value>,
    /// Bedrock: `x-amz-content-sha256` must reach the provider as this value.
    pub keep_sha: Option<String>,
}

const DATE: &str = "20261201T120000Z";
pub const MODEL: &str = "anthropic.claude-sonnet-4-5-20250929-v1%3A0";

fn client_akid(name: &str) -> String {
    secret(Kind::Aws, seed_of(&format!("{name}/akid")))
}

fn client_sig(name: &str) -> String {
    format!(
        "{:016x}{:016x}{:016x}{:016x}",
        seed_of(name),
        seed_of(&format!("{name}1")),
        seed_of(&format!("{name}2")),
        seed_of(&format!("{name}3"))
    )
}

fn client_token(name: &str) -> String {
    format!(
        "IQoJb3JpZ2luX2VjEadv{:016x}{:016x}SESSIONTOKEN",
        seed_of(name),
        seed_of(&format!("{name}t"))
    )
}

fn client_oauth(name: &str) -> String {
    format!(
        "ya29.a0AfH6SMclient{:016x}{:016x}",
        seed_of(name),
        seed_of(&format!("{name}o"))
    )
}

fn sigv4_header(name: &str, region: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256 Credential={}/20261201/{region}/bedrock/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature={}",
        client_akid(name),
        client_sig(name)
    )
}

fn s1(name: &str) -> String {
    for_case(name, false).1
}

impl CloudCase {
    /// A Bedrock request signed (falsely) with the client's own credentials, as boto3 would.
    fn bedrock(name: &str, path: &str, body: &str, expect: Expect) -> Self {
        Self {
            name: name.into(),
            cloud: Cloud::Bedrock,
            host: BEDROCK_HOST.into(),
            method: "POST".into(),
            target: path.into(),
            headers: vec![
                ("Content-Type".into(), "application/json".into()),
                ("Accept".into(), "application/json".into()),
                ("X-Amz-Date".into(), DATE.into()),
                ("Authorization".into(), sigv4_header(name, "us-east-1")),
                (
                    "User-Agent".into(),
                    "Boto3/1.44.8 md/Botocore#1.44.8 ua/2.1 os/linux".into(),
                ),
            ],
            body: body.as_bytes().to_vec(),
            h2: false,
            chunked: false,
            planted: vec![client_akid(name), client_sig(name)],
            expect,
            script: None,
            keep_sha: None,
        }
    }

    fn vertex(name: &str, host: &str, path: &str, body: &str, expect: Expect) -> Self {
        Self {
            name: name.into(),
            cloud: Cloud::Vertex,
            host: host.into(),
            method: "POST".into(),
            target: path.into(),
            headers: vec![
                ("Content-Type".into(), "application/json".into()),
                (
                    "Authorization".into(),
                    format!("Bearer {}", client_oauth(name)),
                ),
                (
                    "x-goog-api-client".into(),
                    "google-genai-sdk/1.30.0 gl-python/3.11".into(),
                ),
            ],
            body: body.as_bytes().to_vec(),
            h2: false,
            chunked: false,
            planted: vec![client_oauth(name)],
            expect,
            script: None,
            keep_sha: None,
        }
    }

    fn header(mut self, n: &str, v: &str) -> Self {
        self.headers.push((n.into(), v.into()));
        self
    }

    fn without(mut self, n: &str) -> Self {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(n));
        self
    }

    fn plant(mut self, s: &str) -> Self {
        self.planted.push(s.into());
        self
    }

    fn host(mut self, h: &str) -> Self {
        self.host = h.into();
        self
    }

    fn h2(mut self) -> Self {
        self.h2 = true;
        self.name = format!("{}@h2", self.name);
        self
    }

    fn script(mut self, s: Value) -> Self {
        self.script = Some(s);
        self
    }

    fn wire(&self, env: &RawEnv) -> Value {
        let mut headers = self.headers.clone();
        headers.push(("x-adv-case".into(), self.name.clone()));
        if self.h2 {
            for h in &mut headers {
                h.0 = h.0.to_ascii_lowercase();
            }
        }
        json!({
            "id": self.name,
            "host": self.host,
            "ip": env.ip(&self.host),
            "proto": if self.h2 { "h2" } else { "h1" },
            "method": self.method,
            "target": self.target,
            "headers": headers,
            "body": hex(&self.body),
            "chunked": self.chunked,
            "trailers": [],
            "raw": null,
            "half_close": false,
            "reset": false,
            "timeout": 10,
        })
    }
}

fn converse(text_json: &str) -> String {
    format!(
        r#"{{"messages":[{{"role":"user","content":[{{"text":"{text_json}"}}]}}],"inferenceConfig":{{"maxTokens":64}}}}"#
    )
}

fn invoke_anthropic(text: &str) -> String {
    json!({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 64,
        "messages": [{"role": "user", "content": text}]})
    .to_string()
}

/// An AWS event stream message (prelude, headers, payload, both CRCs), as the spec lays out.
pub fn es_frame(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut hb = vec![];
    for (n, v) in headers {
        hb.push(n.len() as u8);
        hb.extend_from_slice(n.as_bytes());
        hb.push(7);
        hb.extend_from_slice(&(v.len() as u16).to_be_bytes());
        hb.extend_from_slice(v.as_bytes());
    }
    let total = (12 + hb.len() + payload.len() + 4) as u32;
    let mut m = total.to_be_bytes().to_vec();
    m.extend_from_slice(&(hb.len() as u32).to_be_bytes());
    let pc = crc32(&m);
    m.extend_from_slice(&pc.to_be_bytes());
    m.extend_from_slice(&hb);
    m.extend_from_slice(payload);
    let mc = crc32(&m);
    m.extend_from_slice(&mc.to_be_bytes());
    m
}

pub fn crc32(b: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &x in b {
        c ^= x as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xEDB8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}

fn es_event(ty: &str, payload: &Value) -> Value {
    json!({"headers": [[":event-type", 7, ty], [":content-type", 7, "application/json"], [":message-type", 7, "event"]],
        "payload": payload.to_string()})
}

/// An InvokeModelWithResponseStream `chunk` carrying one native (Anthropic) event.
fn chunk(ev: &Value) -> Value {
    es_event(
        "chunk",
        &json!({"bytes": codec::b64(ev.to_string().as_bytes()), "p": "abcdefghijklmnopqrstuvwxyzABCDEFGH"}),
    )
}

fn an_delta(t: &str) -> Value {
    json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}})
}

fn end_marker(name: &str) -> String {
    format!("ENDMARK{:x}", seed_of(name) & 0xffffff)
}

fn cut(s: &str, at: &[usize]) -> Vec<String> {
    let mut out = vec![];
    let mut last = 0;
    for &a in at.iter().chain(std::iter::once(&s.len())) {
        out.push(s[last..a].to_string());
        last = a;
    }
    out
}

/// The native Anthropic stream inside Bedrock chunks: text pieces, then the end marker.
fn invoke_stream(name: &str, texts: &[String]) -> Vec<Value> {
    let mut v = vec![
        chunk(
            &json!({"type": "message_start", "message": {"id": "msg_bdrk_1", "type": "message", "role": "assistant",
            "model": "claude-sonnet-4-5", "content": [], "stop_reason": null, "usage": {"input_tokens": 5, "output_tokens": 1}}}),
        ),
        chunk(
            &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
    ];
    for t in texts {
        v.push(chunk(&an_delta(t)));
    }
    v.push(chunk(&an_delta(&format!(" {}", end_marker(name)))));
    v.push(chunk(&json!({"type": "content_block_stop", "index": 0})));
    v.push(chunk(&json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 9}})));
    v.push(chunk(&json!({"type": "message_stop", "amazon-bedrock-invocationMetrics": {"inputTokenCount": 5, "outputTokenCount": 9,
        "invocationLatency": 100, "firstByteLatency": 50}})));
    v
}

fn converse_stream(name: &str, texts: &[String]) -> Vec<Value> {
    let p = "abcdefghijklmnopqrstuvwxyz";
    let mut v = vec![es_event(
        "messageStart",
        &json!({"role": "assistant", "p": p}),
    )];
    for t in texts {
        v.push(es_event(
            "contentBlockDelta",
            &json!({"contentBlockIndex": 0, "delta": {"text": t}, "p": p}),
        ));
    }
    v.push(es_event("contentBlockDelta", &json!({"contentBlockIndex": 0, "delta": {"text": format!(" {}", end_marker(name))}, "p": p})));
    v.push(es_event(
        "contentBlockStop",
        &json!({"contentBlockIndex": 0, "p": p}),
    ));
    v.push(es_event(
        "messageStop",
        &json!({"stopReason": "end_turn", "p": p}),
    ));
    v.push(es_event(
        "metadata",
        &json!({"usage": {"inputTokens": 5, "outputTokens": 9, "totalTokens": 14},
        "metrics": {"latencyMs": 120}, "p": p}),
    ));
    v
}

fn es_script(frames: Vec<Value>, split: usize) -> Value {
    json!({"eventstream": frames, "split": split,
        "headers": [["content-type", "application/vnd.amazon.eventstream"], ["x-amzn-requestid", "adv-req-1"]]})
}

fn body_script(status: u16, ctype: &str, chunks: &[String]) -> Value {
    json!({"status": status, "headers": [["content-type", ctype]],
        "chunks": chunks.iter().map(|c| hex(c.as_bytes())).collect::<Vec<_>>()})
}

fn sse_an(name: &str, texts: &[String]) -> Vec<String> {
    let ev = |t: &str, d: Value| format!("event: {t}\ndata: {d}\n\n");
    let mut v = vec![
        ev(
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_vrtx_1", "type": "message", "role": "assistant",
            "model": "claude-sonnet-4-5", "content": [], "stop_reason": null, "usage": {"input_tokens": 5, "output_tokens": 1}}}),
        ),
        ev(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
    ];
    for t in texts {
        v.push(ev("content_block_delta", an_delta(t)));
    }
    v.push(ev(
        "content_block_delta",
        an_delta(&format!(" {}", end_marker(name))),
    ));
    v.push(ev(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    ));
    v.push(ev("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 9}})));
    v.push(ev("message_stop", json!({"type": "message_stop"})));
    v
}

fn gm_sse(name: &str, texts: &[String]) -> Vec<String> {
    let mut all: Vec<String> = texts.to_vec();
    all.push(format!(" {}", end_marker(name)));
    let n = all.len();
    all.iter()
        .enumerate()
        .map(|(i, t)| {
            let mut c = json!({"candidates": [{"content": {"role": "model", "parts": [{"text": t}]}, "index": 0}],
                "modelVersion": "gemini-2.5-flash"});
            if i + 1 == n {
                c["candidates"][0]["finishReason"] = json!("STOP");
            }
            format!("data: {c}\r\n\r\n")
        })
        .collect()
}

fn aws_chunked(data: &[u8], signed: bool) -> Vec<u8> {
    let mut out = vec![];
    for c in data.chunks(64).chain(std::iter::once(&[][..])) {
        if signed {
            out.extend_from_slice(
                format!("{:x};chunk-signature={}\r\n", c.len(), "0".repeat(64)).as_bytes(),
            );
        } else {
            out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        }
        out.extend_from_slice(c);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Every Bedrock case.
pub fn bedrock_cases() -> Vec<CloudCase> {
    use Expect::*;
    let mut v = vec![];
    let conv = format!("/model/{MODEL}/converse");
    let conv_stream = format!("/model/{MODEL}/converse-stream");
    let invoke = format!("/model/{MODEL}/invoke");
    let invoke_stream_p = format!("/model/{MODEL}/invoke-with-response-stream");

    // --- a secret in each documented text field --------------------------------------------
    let fields: Vec<(&str, String, String)> = vec![
        ("br-converse-text", conv.clone(), converse("deploy with $S now")),
        ("br-converse-system", conv.clone(), r#"{"system":[{"text":"use $S"}],"messages":[{"role":"user","content":[{"text":"hi"}]}]}"#.into()),
        ("br-converse-tool-description", conv.clone(), r#"{"messages":[{"role":"user","content":[{"text":"hi"}]}],"toolConfig":{"tools":[{"toolSpec":{"name":"lookup","description":"pass $S","inputSchema":{"json":{"type":"object","properties":{}}}}}]}}"#.into()),
        ("br-converse-tool-result", conv.clone(), r#"{"messages":[{"role":"user","content":[{"text":"go"}]},{"role":"assistant","content":[{"toolUse":{"toolUseId":"t1","name":"lookup","input":{}}}]},{"role":"user","content":[{"toolResult":{"toolUseId":"t1","content":[{"text":"env TOKEN=$S"}]}}]}]}"#.into()),
        ("br-converse-tool-result-json", conv.clone(), r#"{"messages":[{"role":"user","content":[{"text":"go"}]},{"role":"assistant","content":[{"toolUse":{"toolUseId":"t1","name":"lookup","input":{}}}]},{"role":"user","content":[{"toolResult":{"toolUseId":"t1","content":[{"json":{"token":"$S"}}]}}]}]}"#.into()),
        ("br-converse-additional-fields", conv.clone(), r#"{"messages":[{"role":"user","content":[{"text":"hi"}]}],"additionalModelRequestFields":{"note":"$S"}}"#.into()),
        ("br-converse-prompt-variables", format!("/model/{}/converse", "arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Aprompt%2FPROMPT12345"), r#"{"promptVariables":{"ticket":{"text":"$S"}}}"#.into()),
        ("br-converse-stream-text", conv_stream.clone(), converse("key $S")),
        ("br-invoke-anthropic", invoke.clone(), invoke_anthropic("key $S")),
        ("br-invoke-anthropic-system", invoke.clone(), r#"{"anthropic_version":"bedrock-2023-05-31","max_tokens":64,"system":"use $S","messages":[{"role":"user","content":"hi"}]}"#.into()),
        ("br-invoke-stream-anthropic", invoke_stream_p.clone(), invoke_anthropic("key $S")),
        ("br-invoke-titan", "/model/amazon.titan-text-express-v1/invoke".into(), r#"{"inputText":"key $S","textGenerationConfig":{"maxTokenCount":64}}"#.into()),
        ("br-invoke-llama", "/model/meta.llama3-70b-instruct-v1%3A0/invoke".into(), r#"{"prompt":"key $S","max_gen_len":64}"#.into()),
        ("br-invoke-nova", "/model/amazon.nova-pro-v1%3A0/invoke".into(), r#"{"schemaVersion":"messages-v1","messages":[{"role":"user","content":[{"text":"key $S"}]}]}"#.into()),
        ("br-apply-guardrail", "/guardrail/gr-abc123/version/1/apply".into(), r#"{"source":"INPUT","content":[{"text":{"text":"key $S"}}]}"#.into()),
        ("br-count-tokens", format!("/model/{MODEL}/count-tokens"), r#"{"input":{"converse":{"messages":[{"role":"user","content":[{"text":"key $S"}]}]}}}"#.into()),
        ("br-async-invoke", "/async-invoke".into(), r#"{"modelId":"amazon.nova-reel-v1:0","modelInput":{"taskType":"TEXT_VIDEO","textToVideoParams":{"text":"key $S"}},"outputDataConfig":{"s3OutputDataConfig":{"s3Uri":"s3://bucket/out/"}}}"#.into()),
        ("br-unknown-path", "/model/anthropic.claude-x/future-operation".into(), r#"{"input":"key $S"}"#.into()),
    ];
    for (name, path, tpl) in fields {
        let s = s1(name);
        // An operation no reference documents: masked, or refused; never passed unread.
        let e = if name == "br-unknown-path" {
            Clean
        } else {
            Masked
        };
        v.push(CloudCase::bedrock(name, &path, &tpl.replace("$S", &s), e).plant(&s));
    }
    let n = "br-converse-json-escaped";
    let s = s1(n);
    v.push(CloudCase::bedrock(n, &conv, &converse(&json_escaped(&s)), Masked).plant(&s));
    let n = "br-converse-document-bytes";
    let s = s1(n);
    let doc = codec::b64(format!("notes: the deploy key is {s}\n").as_bytes());
    v.push(CloudCase::bedrock(n, &conv, &format!(
        r#"{{"messages":[{{"role":"user","content":[{{"text":"summarise"}},{{"document":{{"format":"txt","name":"notes","source":{{"bytes":"{doc}"}}}}}}]}}]}}"#), NoLeak).plant(&s));
    let n = "br-converse-stream@h2";
    let s = s1(n);
    let mut c = CloudCase::bedrock(
        "br-converse-stream",
        &conv_stream,
        &converse(&format!("key {s}")),
        Masked,
    )
    .h2();
    c.planted = vec![client_akid(n), client_sig(n), s.clone()];
    c.headers
        .retain(|(k, _)| !k.eq_ignore_ascii_case("authorization"));
    c.headers
        .push(("Authorization".into(), sigv4_header(n, "us-east-1")));
    v.push(c);
    let n = "br-fips-host";
    let s = s1(n);
    v.push(
        CloudCase::bedrock(n, &conv, &converse(&format!("key {s}")), Masked)
            .host(BEDROCK_FIPS)
            .plant(&s),
    );
    let n = "br-eu-region-host";
    let s = s1(n);
    let mut c = CloudCase::bedrock(n, &conv, &converse(&format!("key {s}")), Masked)
        .host("bedrock-runtime.eu-west-1.amazonaws.com")
        .plant(&s);
    c = c
        .without("authorization")
        .header("Authorization", &sigv4_header(n, "eu-west-1"));
    v.push(c);
    let n = "br-gzip-body";
    let s = s1(n);
    let mut c = CloudCase::bedrock(n, &conv, "", Clean)
        .header("Content-Encoding", "gzip")
        .plant(&s);
    c.body = codec::compress("gzip", converse(&format!("key {s}")).as_bytes());
    v.push(c);
    let n = "br-eventstream-request-body";
    let s = s1(n);
    let mut c = CloudCase::bedrock(
        n,
        &format!("/model/{MODEL}/invoke-with-bidirectional-stream"),
        "",
        Clean,
    )
    .without("content-type")
    .header("Content-Type", "application/vnd.amazon.eventstream")
    .plant(&s);
    let inner = json!({"chunk": {"bytes": codec::b64(json!({"event": {"textInput": {"content": format!("key {s}")}}}).to_string().as_bytes())}});
    c.body = es_frame(
        &[
            (":event-type", "chunk"),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        inner.to_string().as_bytes(),
    );
    v.push(c);

    // --- payload hash forms --------------------------------------------------------------
    let n = "br-unsigned-payload";
    let s = s1(n);
    let mut c = CloudCase::bedrock(n, &conv, &converse(&format!("key {s}")), Masked)
        .header("X-Amz-Content-SHA256", "UNSIGNED-PAYLOAD")
        .plant(&s);
    c.keep_sha = Some("UNSIGNED-PAYLOAD".into());
    v.push(c);
    let n = "br-client-payload-hash";
    let s = s1(n);
    let body = converse(&format!("key {s}"));
    let sha = {
        let out = std::process::Command::new("sha256sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut ch| {
                use std::io::Write as _;
                ch.stdin.take().unwrap().write_all(body.as_bytes())?;
                ch.wait_with_output()
            })
            .expect("sha256sum");
        String::from_utf8_lossy(&out.stdout)
            .split(' ')
            .next()
            .unwrap_or("")
            .to_string()
    };
    v.push(
        CloudCase::bedrock(n, &conv, &body, Masked)
            .header("X-Amz-Content-SHA256", &sha)
            .plant(&s),
    );
    for (n, sha_v, signed, trailer) in [
        (
            "br-streaming-signed-aws-chunked",
            "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
            true,
            false,
        ),
        (
            "br-streaming-signed-trailer",
            "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER",
            true,
            true,
        ),
        (
            "br-streaming-unsigned-trailer",
            "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
            false,
            true,
        ),
        (
            "br-streaming-ecdsa",
            "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD",
            true,
            false,
        ),
    ] {
        let s = s1(n);
        let data = converse(&format!("key {s}"));
        let mut c = CloudCase::bedrock(n, &conv, "", Refused(None))
            .header("X-Amz-Content-SHA256", sha_v)
            .header("Content-Encoding", "aws-chunked")
            .header("X-Amz-Decoded-Content-Length", &data.len().to_string())
            .plant(&s);
        if trailer {
            c = c.header("X-Amz-Trailer", "x-amz-checksum-crc32");
        }
        let mut b = aws_chunked(data.as_bytes(), signed);
        if trailer {
            b.truncate(b.len() - 2);
            b.extend_from_slice(b"x-amz-checksum-crc32:AAAAAA==\r\n\r\n");
        }
        c.body = b;
        v.push(c);
    }
    let n = "br-aws-chunked-no-hash-header";
    let s = s1(n);
    let data = converse(&format!("key {s}"));
    let mut c = CloudCase::bedrock(n, &conv, "", Clean)
        .header("Content-Encoding", "aws-chunked")
        .plant(&s);
    c.body = aws_chunked(data.as_bytes(), true);
    v.push(c);

    // --- the client's AWS credentials in every place ---------------------------------------
    let hello = converse("hello");
    v.push(CloudCase::bedrock(
        "br-cred-sigv4-header",
        &conv,
        &hello,
        Forwarded,
    ));
    let n = "br-cred-security-token-header";
    v.push(
        CloudCase::bedrock(n, &conv, &hello, Forwarded)
            .header("X-Amz-Security-Token", &client_token(n))
            .plant(&client_token(n)),
    );
    let n = "br-cred-presigned-query";
    let q = format!(
        "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={}%2F20261201%2Fus-east-1%2Fbedrock%2Faws4_request&X-Amz-Date={DATE}&X-Amz-Expires=300&X-Amz-SignedHeaders=host&X-Amz-Security-Token={}&X-Amz-Signature={}",
        client_akid(n),
        client_token(n),
        client_sig(n)
    );
    v.push(
        CloudCase::bedrock(n, &format!("{conv}?{q}"), &hello, Forwarded)
            .without("authorization")
            .without("x-amz-date")
            .plant(&client_token(n)),
    );
    let n = "br-cred-presigned-and-header";
    let q = format!(
        "X-Amz-Credential={}%2F20261201%2Fus-east-1%2Fbedrock%2Faws4_request&X-Amz-Signature={}&x-amz-security-token={}",
        client_akid(&format!("{n}q")),
        client_sig(&format!("{n}q")),
        client_token(n)
    );
    v.push(
        CloudCase::bedrock(n, &format!("{conv}?{q}"), &hello, Forwarded)
            .plant(&client_akid(&format!("{n}q")))
            .plant(&client_sig(&format!("{n}q")))
            .plant(&client_token(n)),
    );
    let absk = |n: &str| {
        format!(
            "ABSKQmVkcm9ja0FQSUtleS1{}",
            codec::b64(
                format!(
                    "adv-at-{:016x}:{:016x}{:016x}",
                    seed_of(n),
                    seed_of(&format!("{n}a")),
                    seed_of(&format!("{n}b"))
                )
                .as_bytes()
            )
        )
    };
    let n = "br-cred-bedrock-api-key";
    v.push(
        CloudCase::bedrock(n, &conv, &hello, Forwarded)
            .without("authorization")
            .without("x-amz-date")
            .header("Authorization", &format!("Bearer {}", absk(n)))
            .plant(&absk(n)),
    );
    let n = "br-cred-bedrock-api-key-and-sigv4";
    v.push(
        CloudCase::bedrock(n, &conv, &hello, Forwarded)
            .header("Authorization", &format!("Bearer {}", absk(n)))
            .plant(&absk(n)),
    );
    let n = "br-cred-two-sigv4";
    v.push(
        CloudCase::bedrock(n, &conv, &hello, Forwarded)
            .header(
                "Authorization",
                &sigv4_header(&format!("{n}2"), "us-east-1"),
            )
            .plant(&client_akid(&format!("{n}2")))
            .plant(&client_sig(&format!("{n}2"))),
    );
    let n = "br-cred-api-key-odd-header";
    v.push(
        CloudCase::bedrock(n, &conv, &hello, Forwarded)
            .header("x-amz-meta-key", &absk(n))
            .plant(&absk(n)),
    );
    let n = "br-cred-akid-user-agent";
    let k = client_akid(&format!("{n}ua"));
    v.push(
        CloudCase::bedrock(n, &conv, &hello, Forwarded)
            .without("user-agent")
            .header("User-Agent", &format!("Boto3/1.44.8 creds/{k}"))
            .plant(&k),
    );
    let n = "br-cred-akid-odd-header";
    let k = client_akid(&format!("{n}x"));
    v.push(
        CloudCase::bedrock(n, &conv, &hello, Forwarded)
            .header("X-Amzn-Bedrock-GuardrailIdentifier", &k)
            .plant(&k),
    );
    let n = "br-cred-cookie";
    let k = client_akid(&format!("{n}c"));
    v.push(
        CloudCase::bedrock(n, &conv, &hello, Forwarded)
            .header(
                "Cookie",
                &format!("aws-creds={k}; session={}", client_token(n)),
            )
            .plant(&k)
            .plant(&client_token(n)),
    );
    let n = "br-cred-x-api-key";
    v.push(
        CloudCase::bedrock(n, &conv, &hello, Forwarded)
            .header("x-api-key", &absk(n))
            .plant(&absk(n)),
    );
    let n = "br-secret-access-key-in-body";
    let sk = format!(
        // Shaped like a real one: AWS's documented example ends in EXAMPLEKEY, which the
        // placeholder filter skips on purpose.
        "wJalr{}K7MDNGbPxR",
        &format!("{:016x}{:016x}", seed_of(n), seed_of(&format!("{n}k")))[..25]
    )
    .replace('0', "/");
    v.push(
        CloudCase::bedrock(
            n,
            &conv,
            &converse(&format!(
                "aws_access_key_id = {} aws_secret_access_key = {sk}",
                client_akid(&format!("{n}b"))
            )),
            Masked,
        )
        .plant(&sk)
        .plant(&client_akid(&format!("{n}b"))),
    );
    let n = "br-api-key-in-body";
    v.push(
        CloudCase::bedrock(
            n,
            &conv,
            &converse(&format!("my bedrock key is {}", absk(n))),
            Masked,
        )
        .plant(&absk(n)),
    );

    // --- answers -------------------------------------------------------------------------
    let hi = converse("hi");
    let ans = |n: &str, path: &str, script: Value, e: Expect, s: &str| {
        CloudCase::bedrock(n, path, &hi, e).script(script).plant(s)
    };
    let n = "br-ans-invoke-stream-split3";
    let s = s1(n);
    let p = cut(&s, &[4, 11]);
    v.push(ans(
        n,
        &invoke_stream_p,
        es_script(invoke_stream(n, &p), 0),
        AnswerMasked,
        &s,
    ));
    let n = "br-ans-invoke-stream-split-odd";
    let s = s1(n);
    let p = cut(&s, &[1, s.len() - 1]);
    v.push(ans(
        n,
        &invoke_stream_p,
        es_script(invoke_stream(n, &p), 0),
        AnswerMasked,
        &s,
    ));
    let n = "br-ans-invoke-stream-per-char";
    let s = s1(n);
    let p: Vec<String> = s.chars().map(String::from).collect();
    v.push(ans(
        n,
        &invoke_stream_p,
        es_script(invoke_stream(n, &p), 0),
        AnswerMasked,
        &s,
    ));
    let n = "br-ans-invoke-stream-tcp-split";
    let s = s1(n);
    let p = cut(&s, &[7]);
    v.push(ans(
        n,
        &invoke_stream_p,
        es_script(invoke_stream(n, &p), 7),
        AnswerMasked,
        &s,
    ));
    let n = "br-ans-converse-stream-split";
    let s = s1(n);
    let p = cut(&s, &[5, 9, 14]);
    v.push(ans(
        n,
        &conv_stream,
        es_script(converse_stream(n, &p), 0),
        AnswerMasked,
        &s,
    ));
    let n = "br-ans-converse-stream-tcp-split";
    let s = s1(n);
    let p = cut(&s, &[3]);
    v.push(ans(
        n,
        &conv_stream,
        es_script(converse_stream(n, &p), 5),
        AnswerMasked,
        &s,
    ));
    let n = "br-ans-converse-stream-whole";
    let s = s1(n);
    v.push(ans(
        n,
        &conv_stream,
        es_script(converse_stream(n, &[format!("key {s}")]), 0),
        AnswerMasked,
        &s,
    ));
    let n = "br-ans-converse-stream-tool-input";
    let s = s1(n);
    let pp = "abc";
    v.push(ans(n, &conv_stream, es_script(vec![
        es_event("messageStart", &json!({"role": "assistant", "p": pp})),
        es_event("contentBlockStart", &json!({"contentBlockIndex": 0, "start": {"toolUse": {"toolUseId": "t1", "name": "run"}}, "p": pp})),
        es_event("contentBlockDelta", &json!({"contentBlockIndex": 0, "delta": {"toolUse": {"input": format!("{{\"token\":\"{}", &s[..6])}}, "p": pp})),
        es_event("contentBlockDelta", &json!({"contentBlockIndex": 0, "delta": {"toolUse": {"input": format!("{}\"}}", &s[6..])}}, "p": pp})),
        es_event("contentBlockStop", &json!({"contentBlockIndex": 0, "p": pp})),
        es_event("messageStop", &json!({"stopReason": "tool_use", "p": pp})),
    ], 0), AnswerNoLeak, &s));
    let n = "br-ans-converse-json";
    let s = s1(n);
    v.push(ans(n, &conv, body_script(200, "application/json", &[json!({"output": {"message": {"role": "assistant",
        "content": [{"text": format!("key {s} {}", end_marker(n))}]}}, "stopReason": "end_turn",
        "usage": {"inputTokens": 1, "outputTokens": 2, "totalTokens": 3}, "metrics": {"latencyMs": 5}}).to_string()]), AnswerMasked, &s));
    let n = "br-ans-invoke-json";
    let s = s1(n);
    v.push(ans(n, &invoke, body_script(200, "application/json", &[json!({"id": "msg_1", "type": "message", "role": "assistant",
        "content": [{"type": "text", "text": format!("key {s} {}", end_marker(n))}], "stop_reason": "end_turn",
        "usage": {"input_tokens": 1, "output_tokens": 2}}).to_string()]), AnswerMasked, &s));
    let n = "br-ans-exception-frame";
    let s = s1(n);
    let mut fr = invoke_stream(n, &["hello".into()]);
    fr.insert(3, json!({"headers": [[":exception-type", 7, "modelStreamErrorException"], [":content-type", 7, "application/json"],
        [":message-type", 7, "exception"]], "payload": json!({"message": format!("model failed near {s}"), "originalStatusCode": 500}).to_string()}));
    v.push(ans(n, &invoke_stream_p, es_script(fr, 0), AnswerNoLeak, &s));
    let n = "br-ans-unknown-event";
    let s = s1(n);
    let mut fr = converse_stream(n, &["hello".into()]);
    fr.insert(
        2,
        es_event("futureEvent", &json!({"note": format!("key {s}")})),
    );
    v.push(ans(n, &conv_stream, es_script(fr, 0), AnswerNoLeak, &s));
    let n = "br-ans-secret-in-string-header";
    let s = s1(n);
    let mut fr = converse_stream(n, &["hello".into()]);
    fr.insert(2, json!({"headers": [[":event-type", 7, "contentBlockDelta"], [":content-type", 7, "application/json"],
        [":message-type", 7, "event"], ["x-note", 7, s]], "payload": json!({"contentBlockIndex": 0, "delta": {"text": "."}}).to_string()}));
    v.push(ans(n, &conv_stream, es_script(fr, 0), AnswerNoLeak, &s));
    let n = "br-ans-secret-in-bytes-header";
    let s = s1(n);
    let mut fr = converse_stream(n, &["hello".into()]);
    fr.insert(2, json!({"headers": [[":event-type", 7, "contentBlockDelta"], [":content-type", 7, "application/json"],
        [":message-type", 7, "event"], ["x-blob", 6, hex(s.as_bytes())], ["x-id", 9, "00112233445566778899aabbccddeeff"],
        ["x-ts", 8, "1764590400000"], ["x-flag", 0, ""], ["x-n", 4, "7"]],
        "payload": json!({"contentBlockIndex": 0, "delta": {"text": "."}}).to_string()}));
    v.push(ans(n, &conv_stream, es_script(fr, 0), AnswerNoLeak, &s));
    for (n, corrupt, lie) in [
        ("br-ans-bad-message-crc", "message", 0),
        ("br-ans-bad-prelude-crc", "prelude", 0),
        ("br-ans-lying-total-length", "", 8),
    ] {
        let s = s1(n);
        let mut fr = converse_stream(n, &["hello ".into()]);
        let mut bad = es_event(
            "contentBlockDelta",
            &json!({"contentBlockIndex": 0, "delta": {"text": format!("BADCRC-MARK {s}")}, "p": "x"}),
        );
        if !corrupt.is_empty() {
            bad["corrupt"] = json!(corrupt);
        }
        if lie != 0 {
            bad["lie_total"] = json!(lie);
        }
        fr.insert(2, bad);
        v.push(ans(n, &conv_stream, es_script(fr, 0), AnswerBroken, &s));
    }
    let n = "br-ans-bad-crc-invoke-chunk";
    let s = s1(n);
    let mut fr = invoke_stream(n, &["hello ".into()]);
    let mut bad = chunk(&an_delta(&format!("BADCRC-MARK {s}")));
    bad["corrupt"] = json!("message");
    fr.insert(3, bad);
    v.push(ans(n, &invoke_stream_p, es_script(fr, 0), AnswerBroken, &s));
    let n = "br-ans-chunk-bytes-plain-text";
    let s = s1(n);
    let mut fr = invoke_stream(n, &["hello".into()]);
    fr.insert(
        3,
        es_event(
            "chunk",
            &json!({"bytes": codec::b64(format!("plain text key {s}").as_bytes())}),
        ),
    );
    v.push(ans(n, &invoke_stream_p, es_script(fr, 0), AnswerNoLeak, &s));
    let n = "br-ans-eventstream-labelled-json";
    let s = s1(n);
    let mut sc = es_script(converse_stream(n, &[format!("key {s}")]), 0);
    sc["headers"] = json!([["content-type", "application/json"]]);
    v.push(ans(n, &conv_stream, sc, AnswerNoLeak, &s));
    let n = "br-ans-json-labelled-eventstream";
    let s = s1(n);
    v.push(ans(
        n,
        &conv_stream,
        body_script(
            200,
            "application/vnd.amazon.eventstream",
            &[
                json!({"output": {"message": {"content": [{"text": format!("key {s}")}]}}})
                    .to_string(),
            ],
        ),
        AnswerNoLeak,
        &s,
    ));
    let n = "br-ans-error-json";
    let s = s1(n);
    v.push(ans(n, &conv, json!({"status": 400, "headers": [["content-type", "application/json"], ["x-amzn-errortype", "ValidationException"]],
        "chunks": [hex(json!({"message": format!("Malformed input near {s}")}).to_string().as_bytes())]}), AnswerNoLeak, &s));
    let n = "br-ans-vault-secret-echo";
    v.push(ans(
        n,
        &conv_stream,
        es_script(
            converse_stream(n, &[format!("your secret is {AWS_SK} and id {AWS_AK}")]),
            0,
        ),
        AnswerNoLeak,
        AWS_SK,
    ));
    let n = "br-ans-vault-secret-echo-split";
    let (a, b) = AWS_SK.split_at(19);
    v.push(ans(
        n,
        &invoke_stream_p,
        es_script(invoke_stream(n, &[format!("secret {a}"), b.to_string()]), 0),
        AnswerNoLeak,
        AWS_SK,
    ));
    let n = "br-ans-vault-secret-in-header";
    v.push(ans(n, &conv, json!({"status": 200, "headers": [["content-type", "application/json"], ["x-amzn-debug", AWS_SK]],
        "chunks": [hex(b"{\"output\":{\"message\":{\"content\":[{\"text\":\"ok\"}]}}}")]}), AnswerNoLeak, AWS_SK));
    v
}

/// Every Vertex AI case.
pub fn vertex_cases() -> Vec<CloudCase> {
    use Expect::*;
    let p = SA_PROJECT;
    let gem = |loc: &str, m: &str| {
        format!("/v1/projects/{p}/locations/{loc}/publishers/google/models/gemini-2.5-flash:{m}")
    };
    let ant = |loc: &str, m: &str| {
        format!(
            "/v1/projects/{p}/locations/{loc}/publishers/anthropic/models/claude-sonnet-4-5@20250929:{m}"
        )
    };
    let gbody =
        |t: &str| json!({"contents": [{"role": "user", "parts": [{"text": t}]}]}).to_string();
    let abody = |t: &str, stream: bool| {
        json!({"anthropic_version": "vertex-2023-10-16", "max_tokens": 64, "stream": stream,
        "messages": [{"role": "user", "content": t}]})
        .to_string()
    };
    let mut v = vec![];
    type Body = Box<dyn Fn(&str) -> String>;
    let fields: Vec<(&str, &str, String, Body)> = vec![
        (
            "vx-gemini-generate",
            VERTEX_HOST,
            gem("us-central1", "generateContent"),
            Box::new(move |s| gbody(&format!("key {s}"))),
        ),
        (
            "vx-gemini-stream-sse",
            VERTEX_HOST,
            format!("{}?alt=sse", gem("us-central1", "streamGenerateContent")),
            Box::new(move |s| gbody(&format!("key {s}"))),
        ),
        (
            "vx-gemini-system-instruction",
            VERTEX_HOST,
            gem("us-central1", "generateContent"),
            Box::new(|s| {
                json!({"systemInstruction": {"parts": [{"text": format!("use {s}")}]},
            "contents": [{"role": "user", "parts": [{"text": "hi"}]}]})
                .to_string()
            }),
        ),
        (
            "vx-gemini-count-tokens",
            VERTEX_HOST,
            gem("us-central1", "countTokens"),
            Box::new(move |s| gbody(&format!("key {s}"))),
        ),
        (
            "vx-anthropic-rawpredict",
            VERTEX_HOST,
            ant("us-east5", "rawPredict"),
            Box::new(move |s| abody(&format!("key {s}"), false)),
        ),
        (
            "vx-anthropic-streamrawpredict",
            VERTEX_HOST,
            ant("us-east5", "streamRawPredict"),
            Box::new(move |s| abody(&format!("key {s}"), true)),
        ),
        (
            "vx-anthropic-stream-system",
            VERTEX_HOST,
            ant("us-east5", "streamRawPredict"),
            Box::new(|s| {
                json!({"anthropic_version": "vertex-2023-10-16",
            "max_tokens": 64, "stream": true, "system": [{"type": "text", "text": format!("use {s}")}], "messages": [{"role": "user", "content": "hi"}]}).to_string()
            }),
        ),
        (
            "vx-anthropic-stream-tool-result",
            VERTEX_HOST,
            ant("us-east5", "streamRawPredict"),
            Box::new(|s| {
                json!({"anthropic_version": "vertex-2023-10-16",
            "max_tokens": 64, "stream": true, "messages": [{"role": "user", "content": "go"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "run", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": format!("TOKEN={s}")}]}]}).to_string()
            }),
        ),
        (
            "vx-anthropic-count-tokens",
            VERTEX_HOST,
            format!(
                "/v1/projects/{p}/locations/us-east5/publishers/anthropic/models/count-tokens:rawPredict"
            ),
            Box::new(move |s| {
                json!({"model": "claude-sonnet-4-5@20250929", "messages": [{"role": "user", "content": format!("key {s}")}]}).to_string()
            }),
        ),
        (
            "vx-global-host",
            VERTEX_GLOBAL,
            ant("global", "streamRawPredict"),
            Box::new(move |s| abody(&format!("key {s}"), true)),
        ),
        (
            "vx-eu-host",
            VERTEX_EU,
            gem("europe-west4", "generateContent"),
            Box::new(move |s| gbody(&format!("key {s}"))),
        ),
        (
            "vx-openai-compatible",
            VERTEX_HOST,
            format!("/v1/projects/{p}/locations/us-central1/endpoints/openapi/chat/completions"),
            Box::new(|s| {
                json!({"model": "google/gemini-2.5-flash", "messages": [{"role": "user", "content": format!("key {s}")}]}).to_string()
            }),
        ),
        (
            "vx-endpoint-predict",
            VERTEX_HOST,
            format!("/v1/projects/{p}/locations/us-central1/endpoints/1234567890:predict"),
            Box::new(|s| {
                json!({"instances": [{"prompt": format!("key {s}")}], "parameters": {"maxOutputTokens": 64}}).to_string()
            }),
        ),
        (
            "vx-v1beta1-path",
            VERTEX_HOST,
            format!(
                "/v1beta1/projects/{p}/locations/us-central1/publishers/google/models/gemini-2.5-flash:generateContent"
            ),
            Box::new(move |s| gbody(&format!("key {s}"))),
        ),
    ];
    for (n, host, path, body) in fields {
        let s = s1(n);
        v.push(CloudCase::vertex(n, host, &path, &body(&s), Masked).plant(&s));
    }
    let n = "vx-anthropic-streamrawpredict";
    let s = s1(&format!("{n}@h2"));
    v.push(
        CloudCase::vertex(
            n,
            VERTEX_HOST,
            &ant("us-east5", "streamRawPredict"),
            &abody(&format!("key {s}"), true),
            Masked,
        )
        .h2()
        .plant(&s),
    );

    // --- the client's Google credentials in every place -----------------------------------
    let hello = gbody("hello");
    let g = gem("us-central1", "generateContent");
    v.push(CloudCase::vertex(
        "vx-cred-authorization",
        VERTEX_HOST,
        &g,
        &hello,
        Forwarded,
    ));
    let n = "vx-cred-access-token-query";
    let t = client_oauth(&format!("{n}q"));
    v.push(
        CloudCase::vertex(
            n,
            VERTEX_HOST,
            &format!("{g}?access_token={t}"),
            &hello,
            Forwarded,
        )
        .plant(&t),
    );
    let n = "vx-cred-access-token-only-query";
    let t = client_oauth(&format!("{n}q"));
    v.push(
        CloudCase::vertex(
            n,
            VERTEX_HOST,
            &format!("{g}?access_token={t}"),
            &hello,
            Forwarded,
        )
        .without("authorization")
        .plant(&t),
    );
    let ak = |n: &str| {
        format!(
            "AIzaSy{:016x}{:016x}a",
            seed_of(n),
            seed_of(&format!("{n}!"))
        )[..39]
            .to_string()
    };
    let n = "vx-cred-x-goog-api-key";
    v.push(
        CloudCase::vertex(n, VERTEX_HOST, &g, &hello, Forwarded)
            .header("x-goog-api-key", &ak(n))
            .plant(&ak(n)),
    );
    let n = "vx-cred-query-key";
    v.push(
        CloudCase::vertex(
            n,
            VERTEX_HOST,
            &format!("{g}?key={}", ak(n)),
            &hello,
            Forwarded,
        )
        .without("authorization")
        .plant(&ak(n)),
    );
    let n = "vx-cred-user-project";
    let up = format!("client-billing-project-{:08x}", seed_of(n) & 0xffff_ffff);
    v.push(
        CloudCase::vertex(n, VERTEX_HOST, &g, &hello, Forwarded)
            .header("x-goog-user-project", &up)
            .plant(&up),
    );
    let n = "vx-cred-two-authorization";
    let t = client_oauth(&format!("{n}2"));
    v.push(
        CloudCase::vertex(n, VERTEX_HOST, &g, &hello, Forwarded)
            .header("Authorization", &format!("Bearer {t}"))
            .plant(&t),
    );
    v.push(
        CloudCase::vertex("vx-cred-none", VERTEX_HOST, &g, &hello, NoCredential)
            .without("authorization"),
    );
    let n = "vx-cred-basic";
    let t = client_oauth(&format!("{n}b"));
    v.push(
        CloudCase::vertex(n, VERTEX_HOST, &g, &hello, Forwarded)
            .without("authorization")
            .header(
                "Authorization",
                &format!(
                    "Basic {}",
                    codec::b64(format!("oauth2accesstoken:{t}").as_bytes())
                ),
            )
            .plant(&t),
    );
    let n = "vx-cred-iam-authorization-token";
    let t = client_oauth(&format!("{n}i"));
    v.push(
        CloudCase::vertex(n, VERTEX_HOST, &g, &hello, Forwarded)
            .header("x-goog-iam-authorization-token", &t)
            .plant(&t),
    );
    let n = "vx-cred-lowercase-bearer";
    let t = client_oauth(&format!("{n}l"));
    v.push(
        CloudCase::vertex(n, VERTEX_HOST, &g, &hello, Forwarded)
            .without("authorization")
            .header("authorization", &format!("bearer {t}"))
            .plant(&t),
    );

    // --- answers -------------------------------------------------------------------------
    let ans = |n: &str, path: &str, body: &str, script: Value, e: Expect, s: &str| {
        let c = CloudCase::vertex(n, VERTEX_HOST, path, body, e).script(script);
        // The minted token is upstream by design; every case checks the client never sees it.
        if s == MINTED { c } else { c.plant(s) }
    };
    let n = "vx-ans-anthropic-stream-split";
    let s = s1(n);
    v.push(ans(
        n,
        &ant("us-east5", "streamRawPredict"),
        &abody("hi", true),
        body_script(200, "text/event-stream", &sse_an(n, &cut(&s, &[5, 12]))),
        AnswerMasked,
        &s,
    ));
    let n = "vx-ans-gemini-sse-split";
    let s = s1(n);
    v.push(ans(
        n,
        &format!("{}?alt=sse", gem("us-central1", "streamGenerateContent")),
        &gbody("hi"),
        body_script(200, "text/event-stream", &gm_sse(n, &cut(&s, &[6]))),
        AnswerMasked,
        &s,
    ));
    let n = "vx-ans-gemini-json";
    let s = s1(n);
    v.push(ans(
        n,
        &g,
        &gbody("hi"),
        body_script(
            200,
            "application/json",
            &[json!({"candidates": [{"content": {"role": "model",
        "parts": [{"text": format!("key {s} {}", end_marker(n))}]}, "finishReason": "STOP"}]})
            .to_string()],
        ),
        AnswerMasked,
        &s,
    ));
    let n = "vx-ans-anthropic-rawpredict-json";
    let s = s1(n);
    v.push(ans(n, &ant("us-east5", "rawPredict"), &abody("hi", false), body_script(200, "application/json", &[json!({"id": "msg_1",
        "type": "message", "role": "assistant", "content": [{"type": "text", "text": format!("key {s} {}", end_marker(n))}],
        "stop_reason": "end_turn", "usage": {"input_tokens": 1, "output_tokens": 1}}).to_string()]), AnswerMasked, &s));
    let n = "vx-ans-minted-token-echo";
    v.push(ans(
        n,
        &ant("us-east5", "streamRawPredict"),
        &abody("hi", true),
        body_script(
            200,
            "text/event-stream",
            &sse_an(n, &[format!("your token is {MINTED}")]),
        ),
        AnswerNoLeak,
        MINTED,
    ));
    let n = "vx-ans-minted-token-split";
    let (a, b) = MINTED.split_at(20);
    v.push(ans(
        n,
        &format!("{}?alt=sse", gem("us-central1", "streamGenerateContent")),
        &gbody("hi"),
        body_script(
            200,
            "text/event-stream",
            &gm_sse(n, &[format!("token {a}"), b.to_string()]),
        ),
        AnswerNoLeak,
        MINTED,
    ));
    let n = "vx-ans-error-echo-token";
    v.push(ans(n, &g, &gbody("hi"), json!({"status": 401, "headers": [["content-type", "application/json"]], "chunks": [hex(json!({"error":
        {"code": 401, "message": format!("Request had invalid authentication credentials: {MINTED}"), "status": "UNAUTHENTICATED"}}).to_string().as_bytes())]}),
        AnswerNoLeak, MINTED));
    v
}

/// Every case's script, for the fake.
pub fn scripts(cases: &[CloudCase]) -> Value {
    let mut m = serde_json::Map::new();
    for c in cases {
        if let Some(s) = &c.script {
            m.insert(c.name.clone(), s.clone());
        }
    }
    Value::Object(m)
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .filter_map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok())
        .collect()
}

fn hexf(v: &Value, k: &str) -> Vec<u8> {
    unhex(v[k].as_str().unwrap_or(""))
}

/// The string leaves of one document by path (array indices dropped), to be joined across
/// documents path by path: a secret split across events is found, fields never run together.
fn leaves_at(v: &Value, path: String, out: &mut BTreeMap<String, String>) {
    match v {
        Value::String(s) => out.entry(path).or_default().push_str(s),
        Value::Array(a) => a
            .iter()
            .for_each(|x| leaves_at(x, format!("{path}[]"), out)),
        Value::Object(o) => o
            .iter()
            .for_each(|(k, x)| leaves_at(x, format!("{path}.{k}"), out)),
        _ => {}
    }
}

/// Joined text across documents, path by path.
#[derive(Default)]
struct Joined(BTreeMap<String, String>);

impl Joined {
    fn add(&mut self, v: &Value) {
        let mut m = BTreeMap::new();
        leaves_at(v, String::new(), &mut m);
        for (k, t) in m {
            self.0.entry(k).or_default().push_str(&t);
        }
    }

    fn text(&self) -> String {
        self.0.values().fold(String::new(), |mut a, t| {
            a.push_str(t);
            a.push('\u{0}');
            a
        })
    }
}

/// An event stream decoded: (headers, payload) per message, or where it breaks.
/// One decoded event-stream message: its headers (name, value bytes) and payload.
pub type EsMessage = (Vec<(String, Vec<u8>)>, Vec<u8>);

pub fn es_decode(mut b: &[u8]) -> (Vec<EsMessage>, Option<String>) {
    let mut out = vec![];
    while !b.is_empty() {
        if b.len() < 16 {
            return (out, Some(format!("{} trailing bytes", b.len())));
        }
        let total = u32::from_be_bytes(b[0..4].try_into().unwrap()) as usize;
        let hl = u32::from_be_bytes(b[4..8].try_into().unwrap()) as usize;
        let pc = u32::from_be_bytes(b[8..12].try_into().unwrap());
        if crc32(&b[..8]) != pc {
            return (out, Some("bad prelude CRC".into()));
        }
        if total < 16 + hl || total > b.len() {
            return (out, Some(format!("bad total length {total}")));
        }
        let mc = u32::from_be_bytes(b[total - 4..total].try_into().unwrap());
        if crc32(&b[..total - 4]) != mc {
            return (out, Some("bad message CRC".into()));
        }
        let mut h = &b[12..12 + hl];
        let mut headers = vec![];
        while !h.is_empty() {
            let nl = h[0] as usize;
            let name = String::from_utf8_lossy(&h[1..1 + nl]).into_owned();
            let t = h[1 + nl];
            h = &h[2 + nl..];
            let (val, used): (Vec<u8>, usize) = match t {
                0 | 1 => (vec![], 0),
                2 => (h[..1].to_vec(), 1),
                3 => (h[..2].to_vec(), 2),
                4 => (h[..4].to_vec(), 4),
                5 | 8 => (h[..8].to_vec(), 8),
                9 => (h[..16].to_vec(), 16),
                6 | 7 => {
                    let l = u16::from_be_bytes([h[0], h[1]]) as usize;
                    (h[2..2 + l].to_vec(), 2 + l)
                }
                _ => return (out, Some(format!("unknown header type {t}"))),
            };
            headers.push((name, val));
            h = &h[used..];
        }
        out.push((headers, b[12 + hl..total - 4].to_vec()));
        b = &b[total..];
    }
    (out, None)
}

/// The text of an answer as a client would read it, joined across events.
fn answer_text(g_body: &[u8], ctype: &str) -> (String, Option<String>, bool) {
    let mut joined = Joined::default();
    let mut raw = String::new();
    let mut exception = false;
    if ctype.contains("vnd.amazon.eventstream") {
        let (msgs, err) = es_decode(g_body);
        for (h, p) in &msgs {
            for (n, v) in h {
                raw.push_str(&String::from_utf8_lossy(v));
                raw.push('\u{0}');
                if n == ":message-type" && v != b"event" {
                    exception = true;
                }
            }
            if let Ok(v) = serde_json::from_slice::<Value>(p) {
                if let Some(b) = v["bytes"].as_str() {
                    let inner = codec::unb64(b.as_bytes());
                    match serde_json::from_slice::<Value>(&inner) {
                        Ok(iv) => joined.add(&iv),
                        Err(_) => raw.push_str(&String::from_utf8_lossy(&inner)),
                    }
                }
                joined.add(&v);
            } else {
                raw.push_str(&String::from_utf8_lossy(p));
            }
        }
        return (format!("{}{raw}", joined.text()), err, exception);
    }
    let text = String::from_utf8_lossy(g_body);
    if ctype.contains("event-stream") {
        for l in text.lines() {
            if let Some(d) = l.strip_prefix("data:")
                && let Ok(v) = serde_json::from_str::<Value>(d.trim())
            {
                joined.add(&v);
            }
        }
    } else if let Ok(v) = serde_json::from_slice::<Value>(g_body) {
        joined.add(&v);
    } else {
        raw.push_str(&text);
    }
    (format!("{}{raw}", joined.text()), None, exception)
}

fn any_view(b: &[u8], needle: &str) -> bool {
    codec::views(b)
        .iter()
        .any(|v| contains(v, needle.as_bytes()))
}

fn header<'a>(hs: &'a Value, n: &str) -> Option<&'a str> {
    hs.as_array()?
        .iter()
        .find(|h| h[0].as_str().is_some_and(|k| k.eq_ignore_ascii_case(n)))
        .and_then(|h| h[1].as_str())
}

fn all_headers<'a>(hs: &'a Value, n: &str) -> Vec<&'a str> {
    hs.as_array()
        .into_iter()
        .flatten()
        .filter(|h| h[0].as_str().is_some_and(|k| k.eq_ignore_ascii_case(n)))
        .filter_map(|h| h[1].as_str())
        .collect()
}

fn gateway_refusal(g: &Value) -> Result<(), String> {
    let st = g["status"].as_u64().unwrap_or(0);
    if st < 400 {
        return Err(format!("not a refusal: status {st}"));
    }
    if header(&g["headers"], "x-gateway-error").is_none() {
        return Err(format!("no x-gateway-error header (status {st})"));
    }
    let body: Value = serde_json::from_slice(&hexf(g, "body"))
        .map_err(|_| format!("refusal body is not JSON (status {st})"))?;
    if body["message"].is_string() || body["Message"].is_string() || body["error"].is_object() {
        Ok(())
    } else {
        Err(format!("refusal not in the provider's error shape: {body}"))
    }
}

fn brief(g: &Value) -> String {
    let b = String::from_utf8_lossy(&hexf(g, "body"))
        .chars()
        .take(140)
        .collect::<String>();
    format!(
        "client got {} {} {}",
        g["status"],
        b.replace('\n', "\\n"),
        g["error"]
    )
}

const CRED_HEADERS: &[&str] = &[
    "authorization",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
    "proxy-authorization",
    "x-amz-security-token",
    "x-goog-iam-authorization-token",
    "x-goog-user-project",
];
const CRED_PARAMS: &[&str] = &[
    "key",
    "api_key",
    "access_token",
    "x-amz-credential",
    "x-amz-signature",
    "x-amz-security-token",
];

/// Judge every case; the failures as `name: reason`.
pub fn judge(env: &RawEnv, cases: &[CloudCase], got: &BTreeMap<String, Value>) -> Vec<String> {
    let recs = env.records();
    let names: std::collections::BTreeSet<&str> = cases.iter().map(|c| c.name.as_str()).collect();
    let mut fails = vec![];
    let vault_secrets: Vec<&str> = VAULT.iter().map(|v| v.1).chain([AWS_SK, MINTED]).collect();
    for c in cases {
        let mine: Vec<&Value> = recs
            .iter()
            .filter(|r| r["kind"] == "http" && r["case"].as_str() == Some(c.name.as_str()))
            .collect();
        let stray: Vec<&Value> = recs
            .iter()
            .filter(|r| {
                r["kind"] == "http" && r["case"].as_str().is_none_or(|n| !names.contains(n))
            })
            .collect();
        let g = got
            .get(&c.name)
            .cloned()
            .unwrap_or(json!({"error": "no result from the driver"}));
        let mut why: Vec<String> = vec![];
        let parts = |r: &Value| -> Vec<(String, Vec<u8>)> {
            let mut p = vec![(
                "target".to_string(),
                r["target"].as_str().unwrap_or("").as_bytes().to_vec(),
            )];
            for h in r["headers"].as_array().into_iter().flatten() {
                p.push((
                    format!("header {}", h[0].as_str().unwrap_or("")),
                    format!(
                        "{}: {}",
                        h[0].as_str().unwrap_or(""),
                        h[1].as_str().unwrap_or("")
                    )
                    .into_bytes(),
                ));
            }
            p.push(("body".into(), hexf(r, "body")));
            p
        };
        let mut up: Vec<(String, Vec<u8>, bool)> = vec![];
        for r in &mine {
            up.extend(parts(r).into_iter().map(|(n, b)| (n, b, false)));
        }
        for r in &stray {
            up.extend(parts(r).into_iter().map(|(n, b)| (n, b, true)));
        }
        let bodies: Vec<&[u8]> = up.iter().map(|(_, b, _)| b.as_slice()).collect();
        let inflated = codec::inflate_batch(&bodies);
        let up_views: Vec<Vec<Vec<u8>>> = up
            .iter()
            .enumerate()
            .map(|(i, (_, b, _))| {
                let mut vs = codec::views(b);
                for d in &inflated[i] {
                    vs.extend(codec::views(d));
                }
                vs
            })
            .collect();
        for s in &c.planted {
            for n in needles(s) {
                for (i, (part, _, stray)) in up.iter().enumerate() {
                    if up_views[i].iter().any(|v| contains(v, n.as_bytes())) {
                        why.push(format!(
                            "leaked {} upstream in {part}{}",
                            label(s),
                            if *stray {
                                " (of an unlabelled request)"
                            } else {
                                ""
                            }
                        ));
                    }
                }
            }
        }
        // The client's side: body, headers, joined text.
        let body = hexf(&g, "body");
        let ctype = header(&g["headers"], "content-type")
            .unwrap_or("")
            .to_ascii_lowercase();
        let (joined, es_err, exception) = answer_text(&body, &ctype);
        let cl_headers: String = g["headers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|h| {
                format!(
                    "{}: {}\n",
                    h[0].as_str().unwrap_or(""),
                    h[1].as_str().unwrap_or("")
                )
            })
            .collect();
        let body_views = codec::views(&body);
        let client_has = |n: &str| -> Option<&'static str> {
            if body_views.iter().any(|v| contains(v, n.as_bytes())) {
                Some("body")
            } else if contains(joined.as_bytes(), n.as_bytes()) {
                Some("text joined across events")
            } else if contains(cl_headers.as_bytes(), n.as_bytes()) {
                Some("headers")
            } else {
                None
            }
        };
        for s in &c.planted {
            for n in needles(s) {
                if let Some(w) = client_has(&n) {
                    why.push(format!("leaked {} to the client in {w}", label(s)));
                }
            }
        }
        for k in &vault_secrets {
            for piece in key_pieces(k) {
                if let Some(w) = client_has(&piece) {
                    why.push(format!(
                        "a gateway credential ({}) reached the client in {w}",
                        label(k)
                    ));
                    break;
                }
            }
        }
        if contains(cl_headers.as_bytes(), AWS_AK.as_bytes())
            || contains(joined.as_bytes(), AWS_AK.as_bytes())
        {
            why.push("the vault's access key id reached the client".into());
        }
        let forwarded = !mine.is_empty();
        // Credentials upstream, for every forwarded request.
        for r in &mine {
            let target = r["target"].as_str().unwrap_or("");
            if let Some((_, q)) = target.split_once('?') {
                for kv in q.split('&') {
                    let k = String::from_utf8_lossy(&codec::pct(
                        kv.split('=').next().unwrap_or("").as_bytes(),
                    ))
                    .to_ascii_lowercase();
                    if CRED_PARAMS.contains(&k.as_str()) {
                        why.push(format!("client credential upstream: ?{k}"));
                    }
                }
            }
            match c.cloud {
                Cloud::Bedrock => {
                    let sig = &r["sig"];
                    if sig["ok"] != true {
                        why.push(format!(
                            "upstream SigV4 invalid: {}",
                            sig["why"].as_str().unwrap_or("no check")
                        ));
                    }
                    if let Some(want) = &c.keep_sha {
                        let got = all_headers(&r["headers"], "x-amz-content-sha256");
                        if got != vec![want.as_str()] {
                            why.push(format!(
                                "x-amz-content-sha256 upstream is {got:?}, not {want}"
                            ));
                        }
                    }
                    for n in CRED_HEADERS.iter().filter(|n| **n != "authorization") {
                        for v in all_headers(&r["headers"], n) {
                            if *n == "x-amz-security-token" {
                                why.push(format!(
                                    "x-amz-security-token upstream ({}) though the vault has none",
                                    label(v)
                                ));
                            } else {
                                why.push(format!("credential header upstream: {n}"));
                            }
                        }
                    }
                }
                Cloud::Vertex => {
                    let auth = all_headers(&r["headers"], "authorization");
                    if c.expect == Expect::NoCredential {
                        if !auth.is_empty() {
                            why.push(
                                "a credential upstream for a request that carried none".into(),
                            );
                        }
                    } else if auth != vec![format!("Bearer {MINTED}").as_str()] {
                        why.push(format!(
                            "authorization upstream is {:?}, not exactly the minted token",
                            auth.iter().map(|a| label(a)).collect::<Vec<_>>()
                        ));
                    }
                    for n in CRED_HEADERS.iter().filter(|n| **n != "authorization") {
                        if !all_headers(&r["headers"], n).is_empty() {
                            why.push(format!("credential header upstream: {n}"));
                        }
                    }
                }
            }
        }
        let masked_up = mine.iter().all(|r| any_view(&hexf(r, "body"), "[MASKED:"));
        match &c.expect {
            Expect::Masked => {
                if !forwarded {
                    why.push(format!("not forwarded: {}", brief(&g)));
                } else if !masked_up {
                    why.push("forwarded without [MASKED:".into());
                }
            }
            Expect::Clean => {
                if forwarded && !masked_up {
                    why.push("forwarded without [MASKED:".into());
                } else if !forwarded && let Err(e) = gateway_refusal(&g) {
                    why.push(format!(
                        "neither forwarded nor refused cleanly: {e}; {}",
                        brief(&g)
                    ));
                }
            }
            Expect::Refused(m) => {
                if forwarded {
                    why.push("forwarded, must be refused".into());
                }
                if let Err(e) = gateway_refusal(&g) {
                    why.push(e);
                } else if let Some(m) = m
                    && !String::from_utf8_lossy(&body)
                        .to_lowercase()
                        .contains(&m.to_lowercase())
                {
                    why.push(format!("refusal does not name {m}"));
                }
            }
            Expect::NoLeak => {}
            Expect::Forwarded | Expect::NoCredential => {
                if !forwarded {
                    why.push(format!("not forwarded: {}", brief(&g)));
                }
            }
            Expect::AnswerMasked | Expect::AnswerNoLeak | Expect::AnswerBroken => {
                if !forwarded {
                    why.push(format!(
                        "the request never reached the provider: {}",
                        brief(&g)
                    ));
                }
                // The client's event stream must be well formed when the provider's was.
                let sent_es = c
                    .script
                    .as_ref()
                    .is_some_and(|s| s.get("eventstream").is_some());
                if let Some(e) = &es_err
                    && sent_es
                    && c.expect != Expect::AnswerBroken
                {
                    why.push(format!("the client's event stream is broken: {e}"));
                }
                if c.expect == Expect::AnswerMasked {
                    if !contains(joined.as_bytes(), b"[MASKED:") {
                        why.push(format!("the client's text has no [MASKED: ({})", brief(&g)));
                    }
                    if !contains(joined.as_bytes(), end_marker(&c.name).as_bytes()) {
                        why.push(format!(
                            "the end of the answer never reached the client ({})",
                            brief(&g)
                        ));
                    }
                }
                if c.expect == Expect::AnswerBroken {
                    if client_has("BADCRC").is_some() {
                        why.push("the corrupt frame reached the client".into());
                    }
                    let st = g["status"].as_u64().unwrap_or(0);
                    let signalled =
                        st >= 400 || exception || es_err.is_some() || g["error"].is_string();
                    if !signalled {
                        why.push(format!(
                            "the stream ended as if nothing happened ({})",
                            brief(&g)
                        ));
                    }
                }
            }
        }
        if !why.is_empty() {
            why.dedup();
            fails.push(format!("{}: {}", c.name, why.join("; ")));
            if std::env::var_os("ADV_DUMP").is_some() {
                for r in &mine {
                    let b = hexf(r, "body");
                    eprintln!(
                        "--- {} upstream: {} {} {} sig={}\n{}",
                        c.name,
                        r["method"],
                        r["target"],
                        r["headers"],
                        r["sig"],
                        String::from_utf8_lossy(&b[..b.len().min(600)])
                    );
                }
                eprintln!(
                    "--- {} client: {} {} {}\n{}",
                    c.name,
                    g["status"],
                    g["headers"],
                    g["error"],
                    String::from_utf8_lossy(&body[..body.len().min(1500)])
                );
            }
        }
    }
    fails
}

/// The token endpoint's view: every JWT assertion the gateway sent verified.
pub fn token_failures(env: &RawEnv) -> Vec<String> {
    let recs = env.records();
    let tokens: Vec<&Value> = recs.iter().filter(|r| r["kind"] == "token").collect();
    let mut out = vec![];
    if tokens.is_empty() {
        out.push(
            "token-endpoint: the gateway never asked the service account's token_uri for a token"
                .into(),
        );
    }
    for t in tokens {
        if t["jwt"]["ok"] != true {
            out.push(format!(
                "token-endpoint: a bad assertion: {}",
                t["jwt"]["why"]
            ));
        }
    }
    out
}

pub fn run(env: &RawEnv, cases: &[CloudCase]) -> Vec<String> {
    let wire: Vec<Value> = cases.iter().map(|c| c.wire(env)).collect();
    let got = env.drive(super::DRIVER, &wire);
    judge(env, cases, &got)
}

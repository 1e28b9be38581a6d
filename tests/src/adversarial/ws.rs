//! WebSocket cases (issue H), written from RFC 6455 / 7692 / 8441 and the providers' public
//! references (OpenAI Realtime and Responses WebSocket mode, Gemini Live
//! `BidiGenerateContent`), not from the gateway's code. The client (`wsdriver.py`) controls
//! every frame bit; the fake (`rawfake.py`) records every frame it receives. A case passes when
//! no planted secret reached the provider or the client in any spelling (raw, escaped,
//! base64, deflated, gzipped, joined across messages), no piece of a vault key reached the
//! client, and the case's expectation holds.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{
    Provider, VAULT, codec, key_pieces, label, needles,
    raw::RawEnv,
    secrets::{Kind, for_case, json_escaped, secret, seed_of},
    vault_key,
};

pub const DRIVER: &str = include_str!("wsdriver.py");

/// Hex, fast enough for the 17 MiB cases in a debug build.
fn hex(b: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(b.len() * 2);
    for x in b {
        out.push(D[(x >> 4) as usize]);
        out.push(D[(x & 15) as usize]);
    }
    String::from_utf8(out).unwrap()
}

#[derive(Debug, Clone, PartialEq)]
pub enum WsExpect {
    /// The session opens, the message reaches the provider with `[MASKED:` in its place.
    Masked,
    /// Masked upstream, or refused cleanly (a close frame, or an HTTP error to the upgrade).
    Clean,
    /// A clean refusal (close frame or HTTP error); the payload (marked `ADVREFUSE`) never
    /// reaches the provider.
    Refused,
    /// Only that nothing leaks.
    NoLeak,
    /// No leak, and no tunnel: the client gets no 101 (nor a 2xx to CONNECT).
    NoTunnel,
    /// RFC 8441: if the gateway accepts the extended CONNECT, the message is masked upstream.
    H2Connect,
    /// The upgrade reaches the provider with only the vault's key, in its place.
    Creds,
    /// What the server sent reaches the client masked (`[MASKED:` in the joined text), the
    /// end marker too.
    ServerMasked,
    /// What the server sent never reaches the client unmasked.
    ServerNoLeak,
}

#[derive(Debug, Clone)]
pub struct WsCase {
    pub name: String,
    pub provider: Provider,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub frames: Vec<Value>,
    pub opts: Value,
    pub server: Option<Value>,
    pub planted: Vec<String>,
    /// Another host than the provider's (Vertex AI's Live API).
    pub host: Option<String>,
    pub expect: WsExpect,
}

pub const REALTIME: &str = "/v1/realtime?model=gpt-realtime";
pub const RESPONSES: &str = "/v1/responses";
pub const LIVE: &str =
    "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent";

impl WsCase {
    pub fn new(name: &str, p: Provider, target: &str, expect: WsExpect) -> Self {
        let mut headers = vec![];
        match p {
            Provider::OpenAi => {
                headers.push(("Authorization".into(), "Bearer sk-dummy-client".into()));
                if target.starts_with("/v1/responses") {
                    headers.push((
                        "OpenAI-Beta".into(),
                        "responses_websockets=2026-02-06".into(),
                    ));
                }
            }
            Provider::Gemini => headers.push(("x-goog-api-key".into(), "dummy-client-key".into())),
            Provider::Anthropic => headers.push(("x-api-key".into(), "sk-ant-dummy-client".into())),
        }
        Self {
            name: name.into(),
            provider: p,
            target: target.into(),
            headers,
            frames: vec![],
            opts: json!({}),
            server: None,
            planted: vec![],
            host: None,
            expect,
        }
    }

    fn frames(mut self, f: Vec<Value>) -> Self {
        self.frames = f;
        self
    }

    fn plant(mut self, s: &str) -> Self {
        self.planted.push(s.into());
        self
    }

    fn header(mut self, n: &str, v: &str) -> Self {
        self.headers.push((n.into(), v.into()));
        self
    }

    fn without(mut self, n: &str) -> Self {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(n));
        self
    }

    fn opt(mut self, k: &str, v: Value) -> Self {
        self.opts[k] = v;
        self
    }

    fn server(mut self, s: Value) -> Self {
        self.server = Some(s);
        self
    }

    fn wire(&self, env: &RawEnv) -> Value {
        let mut headers = self.headers.clone();
        headers.push(("x-adv-case".into(), self.name.clone()));
        let mut v = json!({
            "id": self.name,
            "host": self.host.as_deref().unwrap_or(self.provider.host()),
            "ip": env.ip(self.host.as_deref().unwrap_or(self.provider.host())),
            "target": self.target,
            "headers": headers,
            "frames": self.frames,
            "idle": 1.5,
            "timeout": 10,
        });
        for (k, x) in self.opts.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    }
}

/// The case's first secret (and a second of another kind).
fn s1(name: &str) -> String {
    for_case(name, false).1
}

fn txt(s: &str) -> Value {
    json!({"op": 1, "payload": hex(s.as_bytes())})
}

fn bin(b: &[u8]) -> Value {
    json!({"op": 2, "payload": hex(b)})
}

fn fr(op: u8, fin: bool, b: &[u8]) -> Value {
    json!({"op": op, "fin": fin, "payload": hex(b)})
}

/// `s` cut into text-message fragments at the given byte offsets.
fn fragments(s: &str, cuts: &[usize]) -> Vec<Value> {
    let b = s.as_bytes();
    let mut out = vec![];
    let mut last = 0;
    let mut all: Vec<usize> = cuts.to_vec();
    all.push(b.len());
    for (i, c) in all.iter().enumerate() {
        let op = if i == 0 { 1 } else { 0 };
        out.push(fr(op, i + 1 == all.len(), &b[last..*c]));
        last = *c;
    }
    out
}

/// Where `needle` starts in `hay`, plus `k`.
fn at(hay: &str, needle: &str, k: usize) -> usize {
    hay.find(needle).expect("needle in message") + k
}

pub fn rt_item(text: &str) -> String {
    json!({"type": "conversation.item.create", "item": {"type": "message", "role": "user",
        "content": [{"type": "input_text", "text": text}]}})
    .to_string()
}

fn rt_item_raw(text_json: &str) -> String {
    format!(
        r#"{{"type":"conversation.item.create","item":{{"type":"message","role":"user","content":[{{"type":"input_text","text":"{text_json}"}}]}}}}"#
    )
}

fn rt_session(instr: &str) -> String {
    json!({"type": "session.update", "session": {"type": "realtime", "instructions": instr}})
        .to_string()
}

fn resp_create(input: Value) -> String {
    json!({"type": "response.create", "model": "gpt-5.1-codex", "store": false, "input": input})
        .to_string()
}

fn resp_text(text: &str) -> String {
    resp_create(json!([{"type": "message", "role": "user",
        "content": [{"type": "input_text", "text": text}]}]))
}

const GM_SETUP: &str = r#"{"setup":{"model":"models/gemini-2.5-flash-live","generationConfig":{"responseModalities":["TEXT"]}}}"#;

fn gm_turn(text: &str) -> String {
    json!({"clientContent": {"turns": [{"role": "user", "parts": [{"text": text}]}], "turnComplete": true}})
        .to_string()
}

fn end_marker(name: &str) -> String {
    format!("ENDMARK{:x}", seed_of(name) & 0xffffff)
}

fn pieces(s: &str, n: usize) -> Vec<String> {
    let c: Vec<char> = s.chars().collect();
    if c.is_empty() {
        return vec![];
    }
    let size = c.len().div_ceil(n);
    c.chunks(size).map(|x| x.iter().collect()).collect()
}

/// Server frames: each message a text frame (or binary when `binary`).
fn srv(msgs: &[String], binary: bool) -> Vec<Value> {
    msgs.iter()
        .map(|m| json!({"op": if binary { 2 } else { 1 }, "payload": m}))
        .collect()
}

fn rt_delta(d: &str) -> String {
    json!({"type": "response.output_text.delta", "event_id": "event_1", "response_id": "resp_1",
        "item_id": "item_1", "output_index": 0, "content_index": 0, "delta": d})
    .to_string()
}

fn resp_delta(d: &str, seq: usize) -> String {
    json!({"type": "response.output_text.delta", "sequence_number": seq, "item_id": "msg_1",
        "output_index": 0, "content_index": 0, "delta": d, "logprobs": []})
    .to_string()
}

fn gm_server(text: &str) -> String {
    json!({"serverContent": {"modelTurn": {"role": "model", "parts": [{"text": text}]}}})
        .to_string()
}

/// A server script: the messages (deltas of `secret` cut in `n` pieces by `f`), then the end
/// marker and a close.
fn delta_script(
    name: &str,
    secret: &str,
    n: usize,
    f: impl Fn(&str, usize) -> String,
    binary: bool,
) -> Value {
    let mut msgs: Vec<String> = vec![f("Here it is: ", 0)];
    for (i, p) in pieces(secret, n).iter().enumerate() {
        msgs.push(f(p, i + 1));
    }
    msgs.push(f(&format!(" done {}", end_marker(name)), n + 1));
    json!({"server": srv(&msgs, binary), "close_after": true})
}

/// Every WebSocket case.
pub fn cases() -> Vec<WsCase> {
    use Provider::{Gemini as GM, OpenAi as OA};
    use WsExpect::*;
    let mut v = vec![];

    // --- client → server: a secret in each documented text field -------------------------
    type Messages = Box<dyn Fn(&str) -> Vec<String>>;
    let plain: Vec<(&str, Provider, &str, Messages)> = vec![
        (
            "ws-rt-item-text",
            OA,
            REALTIME,
            Box::new(|s| vec![rt_item(&format!("deploy with {s} now"))]),
        ),
        (
            "ws-rt-session-instructions",
            OA,
            REALTIME,
            Box::new(|s| vec![rt_session(&format!("You may use {s}"))]),
        ),
        (
            "ws-rt-item-function-output",
            OA,
            REALTIME,
            Box::new(|s| {
                vec![json!({"type": "conversation.item.create",
            "item": {"type": "function_call_output", "call_id": "call_1", "output": format!("{{\"token\":\"{s}\"}}")}}).to_string()]
            }),
        ),
        (
            "ws-rt-response-instructions",
            OA,
            REALTIME,
            Box::new(|s| {
                vec![
                    json!({"type": "response.create",
            "response": {"instructions": format!("say {s}"), "output_modalities": ["text"]}})
                    .to_string(),
                ]
            }),
        ),
        (
            "ws-resp-create-input",
            OA,
            RESPONSES,
            Box::new(|s| vec![resp_text(&format!("fix the script, key {s}"))]),
        ),
        (
            "ws-resp-create-string-input",
            OA,
            RESPONSES,
            Box::new(|s| vec![resp_create(json!(format!("key {s}")))]),
        ),
        (
            "ws-resp-create-instructions",
            OA,
            RESPONSES,
            Box::new(|s| {
                vec![
                    json!({"type": "response.create",
            "model": "gpt-5.1-codex", "instructions": format!("use {s}"), "input": "hi"})
                    .to_string(),
                ]
            }),
        ),
        (
            "ws-resp-create-tool-output",
            OA,
            RESPONSES,
            Box::new(|s| {
                vec![resp_create(json!([
            {"type": "function_call_output", "call_id": "call_1", "output": format!("env: TOKEN={s}")}]))]
            }),
        ),
        (
            "ws-resp-second-turn",
            OA,
            RESPONSES,
            Box::new(|s| {
                vec![resp_text("hello"), json!({"type": "response.create",
            "model": "gpt-5.1-codex", "previous_response_id": "resp_1", "input": [{"type": "message", "role": "user",
            "content": [{"type": "input_text", "text": format!("and {s}")}]}]}).to_string()]
            }),
        ),
        (
            "ws-gm-turn-text",
            GM,
            LIVE,
            Box::new(|s| vec![GM_SETUP.into(), gm_turn(&format!("key {s}"))]),
        ),
        (
            "ws-gm-realtime-text",
            GM,
            LIVE,
            Box::new(|s| {
                vec![
                    GM_SETUP.into(),
                    json!({"realtimeInput": {"text": format!("key {s}")}}).to_string(),
                ]
            }),
        ),
        (
            "ws-gm-setup-system",
            GM,
            LIVE,
            Box::new(|s| {
                vec![
                    json!({"setup": {"model": "models/gemini-2.5-flash-live",
            "systemInstruction": {"parts": [{"text": format!("credential {s}")}]}}})
                    .to_string(),
                ]
            }),
        ),
        (
            "ws-gm-tool-response",
            GM,
            LIVE,
            Box::new(|s| {
                vec![
                    GM_SETUP.into(),
                    json!({"toolResponse": {"functionResponses":
            [{"id": "f1", "name": "lookup", "response": {"result": format!("{s}")}}]}})
                    .to_string(),
                ]
            }),
        ),
    ];
    for (name, p, target, msgs) in plain {
        let s = s1(name);
        let frames = msgs(&s).iter().map(|m| txt(m)).collect();
        v.push(
            WsCase::new(name, p, target, Masked)
                .frames(frames)
                .plant(&s),
        );
    }

    // JSON escapes in the text.
    let n = "ws-rt-item-json-escaped";
    let s = s1(n);
    v.push(
        WsCase::new(n, OA, REALTIME, Masked)
            .frames(vec![txt(&rt_item_raw(&json_escaped(&s)))])
            .plant(&s),
    );

    // Two secrets of two kinds in one message.
    let n = "ws-rt-item-two-secrets";
    let (s, t) = (s1(n), for_case(n, true).1);
    v.push(
        WsCase::new(n, OA, REALTIME, Masked)
            .frames(vec![txt(&rt_item(&format!("{s} and {t}")))])
            .plant(&s)
            .plant(&t),
    );

    // --- fragmentation and control frames ---------------------------------------------------
    let n = "ws-frag-secret-split";
    let s = s1(n);
    let m = rt_item(&format!("key {s} end"));
    let c = at(&m, &s, 0);
    v.push(
        WsCase::new(n, OA, REALTIME, Masked)
            .frames(fragments(&m, &[c + 5, c + 11]))
            .plant(&s),
    );
    let n = "ws-frag-one-byte-each";
    let s = s1(n);
    let m = rt_item(&format!("key {s} end"));
    let cuts: Vec<usize> = (1..m.len()).collect();
    let mut f = fragments(&m, &cuts);
    for x in &mut f {
        x["wait"] = json!(0.001);
    }
    v.push(WsCase::new(n, OA, REALTIME, Masked).frames(f).plant(&s));
    for (n, ctrl) in [
        ("ws-frag-ping-between", fr(9, true, b"ping-adv")),
        ("ws-frag-pong-between", fr(10, true, b"pong-adv")),
        ("ws-frag-empty-ping-between", fr(9, true, b"")),
    ] {
        let s = s1(n);
        let m = rt_item(&format!("key {s} end"));
        let c = at(&m, &s, 7);
        let mut f = fragments(&m, &[c]);
        f.insert(1, ctrl);
        v.push(WsCase::new(n, OA, REALTIME, Masked).frames(f).plant(&s));
    }
    let n = "ws-frag-binary-continuation";
    let s = s1(n);
    let m = rt_item(&format!("key {s} end"));
    let c = at(&m, &s, 6);
    v.push(
        WsCase::new(n, OA, REALTIME, Clean)
            .frames(vec![
                fr(2, false, &m.as_bytes()[..c]),
                fr(0, true, &m.as_bytes()[c..]),
            ])
            .plant(&s),
    );
    let n = "ws-frag-gm-split";
    let s = s1(n);
    let m = gm_turn(&format!("key {s}"));
    let c = at(&m, &s, 9);
    let mut f = vec![txt(GM_SETUP)];
    f.extend(fragments(&m, &[c]));
    v.push(WsCase::new(n, GM, LIVE, Masked).frames(f).plant(&s));

    // Secrets in control frames.
    let n = "ws-ping-payload";
    let s = s1(n);
    v.push(
        WsCase::new(n, OA, REALTIME, NoLeak)
            .frames(vec![txt(&rt_item("hello")), fr(9, true, s.as_bytes())])
            .plant(&s),
    );
    let n = "ws-pong-payload";
    let s = s1(n);
    v.push(
        WsCase::new(n, OA, REALTIME, NoLeak)
            .frames(vec![txt(&rt_item("hello")), fr(10, true, s.as_bytes())])
            .plant(&s),
    );
    let n = "ws-close-reason";
    let s = s1(n);
    let mut close = 1000u16.to_be_bytes().to_vec();
    close.extend_from_slice(s.as_bytes());
    v.push(
        WsCase::new(n, OA, REALTIME, NoLeak)
            .frames(vec![txt(&rt_item("hello")), fr(8, true, &close)])
            .plant(&s),
    );

    // --- binary and encoded payloads --------------------------------------------------------
    let n = "ws-binary-json";
    let s = s1(n);
    v.push(
        WsCase::new(n, OA, REALTIME, Clean)
            .frames(vec![bin(rt_item(&format!("key {s}")).as_bytes())])
            .plant(&s),
    );
    let n = "ws-gm-binary-json";
    let s = s1(n);
    v.push(
        WsCase::new(n, GM, LIVE, Clean)
            .frames(vec![
                bin(GM_SETUP.as_bytes()),
                bin(gm_turn(&format!("key {s}")).as_bytes()),
            ])
            .plant(&s),
    );
    let n = "ws-binary-gzip-text";
    let s = s1(n);
    v.push(
        WsCase::new(n, OA, REALTIME, NoLeak)
            .frames(vec![
                txt(&rt_item("hello")),
                bin(&codec::compress(
                    "gzip",
                    rt_item(&format!("key {s}")).as_bytes(),
                )),
            ])
            .plant(&s),
    );
    let n = "ws-binary-base64-text";
    let s = s1(n);
    v.push(
        WsCase::new(n, OA, REALTIME, NoLeak)
            .frames(vec![
                txt(&rt_item("hello")),
                bin(codec::b64(format!("notes: key {s}\n").as_bytes()).as_bytes()),
            ])
            .plant(&s),
    );
    let n = "ws-text-base64-file";
    let s = s1(n);
    let data = codec::b64(format!("notes: the deploy key is {s}\n").as_bytes());
    v.push(WsCase::new(n, OA, RESPONSES, NoLeak)
        .frames(vec![txt(&resp_create(json!([{"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "read this"},
            {"type": "input_file", "filename": "notes.txt", "file_data": format!("data:text/plain;base64,{data}")}]}])))])
        .plant(&s));
    let n = "ws-rt-audio-append-base64-text";
    let s = s1(n);
    let data = codec::b64(format!("notes: the deploy key is {s}\n").as_bytes());
    v.push(
        WsCase::new(n, OA, REALTIME, NoLeak)
            .frames(vec![txt(
                &json!({"type": "input_audio_buffer.append", "audio": data}).to_string(),
            )])
            .plant(&s),
    );

    // --- RSV bits and extensions -----------------------------------------------------------
    let n = "ws-rsv1-no-extension";
    let s = s1(n);
    v.push(
        WsCase::new(n, OA, REALTIME, Refused)
            .frames(vec![json!({"op": 1, "rsv1": true, "raw_deflate": true,
            "payload": hex(rt_item(&format!("ADVREFUSE key {s}")).as_bytes())})])
            .plant(&s),
    );
    let n = "ws-rsv2-set";
    let s = s1(n);
    v.push(WsCase::new(n, OA, REALTIME, Refused)
        .frames(vec![json!({"op": 1, "rsv2": true, "payload": hex(rt_item(&format!("ADVREFUSE key {s}")).as_bytes())})])
        .plant(&s));
    let n = "ws-reserved-opcode";
    let s = s1(n);
    v.push(
        WsCase::new(n, OA, REALTIME, Refused)
            .frames(vec![
                json!({"op": 3, "payload": hex(rt_item(&format!("ADVREFUSE key {s}")).as_bytes())}),
            ])
            .plant(&s),
    );
    let n = "ws-permessage-deflate-offered";
    let s = s1(n);
    v.push(WsCase::new(n, OA, REALTIME, Masked)
        .header("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits")
        .frames(vec![json!({"op": 1, "compress": true, "payload": hex(rt_item(&format!("key {s}")).as_bytes())})])
        .plant(&s));
    let n = "ws-deflate-offered-gm";
    let s = s1(n);
    v.push(WsCase::new(n, GM, LIVE, Masked)
        .header("Sec-WebSocket-Extensions", "permessage-deflate")
        .frames(vec![json!({"op": 1, "compress": true, "payload": hex(GM_SETUP.as_bytes())}),
            json!({"op": 1, "compress": true, "payload": hex(gm_turn(&format!("key {s}")).as_bytes())})])
        .plant(&s));

    // --- framing irregularities -------------------------------------------------------------
    let n = "ws-unmasked-client-frame";
    let s = s1(n);
    v.push(WsCase::new(n, OA, REALTIME, Clean)
        .frames(vec![json!({"op": 1, "mask": false, "payload": hex(rt_item(&format!("key {s}")).as_bytes())})])
        .plant(&s));
    let n = "ws-invalid-utf8-text";
    let s = s1(n);
    let mut b = b"\xff\xfe".to_vec();
    b.extend_from_slice(rt_item(&format!("key {s}")).as_bytes());
    v.push(
        WsCase::new(n, OA, REALTIME, Clean)
            .frames(vec![json!({"op": 1, "payload": hex(&b)})])
            .plant(&s),
    );
    for (n, form) in [
        ("ws-length-16bit-for-short", "16"),
        ("ws-length-64bit-for-short", "64"),
    ] {
        let s = s1(n);
        v.push(WsCase::new(n, OA, REALTIME, Clean)
            .frames(vec![json!({"op": 1, "len_form": form, "payload": hex(rt_item(&format!("key {s}")).as_bytes())})])
            .plant(&s));
    }
    let n = "ws-pipelined-before-101";
    let s = s1(n);
    v.push(
        WsCase::new(n, OA, REALTIME, Clean)
            .opt("pipeline", json!(true))
            .frames(vec![txt(&rt_item(&format!("key {s}")))])
            .plant(&s),
    );
    let n = "ws-oversized-message";
    let s = s1(n);
    let pad = "lorem ipsum ".repeat(17 * 1024 * 1024 / 12);
    let m = rt_item(&format!("{pad} key {s}"));
    let mut f = vec![];
    let b = m.as_bytes();
    let step = 1 << 20;
    for (i, c) in b.chunks(step).enumerate() {
        f.push(fr(if i == 0 { 1 } else { 0 }, (i + 1) * step >= b.len(), c));
    }
    v.push(
        WsCase::new(n, OA, REALTIME, Clean)
            .frames(f)
            .opt("timeout", json!(30))
            .plant(&s),
    );
    let n = "ws-oversized-single-frame";
    let s = s1(n);
    let m = rt_item(&format!(
        "{} key {s}",
        "lorem ipsum ".repeat(17 * 1024 * 1024 / 12)
    ));
    v.push(
        WsCase::new(n, OA, REALTIME, Clean)
            .frames(vec![txt(&m)])
            .opt("timeout", json!(30))
            .plant(&s),
    );
    let n = "ws-claimed-length-huge";
    let s = s1(n);
    v.push(WsCase::new(n, OA, REALTIME, Refused)
        .frames(vec![json!({"op": 1, "claim_len": 1u64 << 40, "payload": hex(rt_item(&format!("ADVREFUSE key {s}")).as_bytes())})])
        .plant(&s));
    let n = "ws-claimed-length-msb";
    let s = s1(n);
    v.push(WsCase::new(n, OA, REALTIME, Refused)
        .frames(vec![json!({"op": 1, "claim_len": (1u64 << 63) + 40, "payload": hex(rt_item(&format!("ADVREFUSE key {s}")).as_bytes())})])
        .plant(&s));

    // --- the upgrade request itself ---------------------------------------------------------
    let n = "ws-secret-in-query";
    let s = s1(n);
    v.push(
        WsCase::new(n, OA, &format!("{REALTIME}&note={s}"), NoLeak)
            .frames(vec![txt(&rt_item("hello"))])
            .plant(&s),
    );
    let n = "ws-secret-in-header";
    let s = s1(n);
    v.push(
        WsCase::new(n, OA, REALTIME, NoLeak)
            .header("x-note", &s)
            .frames(vec![txt(&rt_item("hello"))])
            .plant(&s),
    );
    let n = "ws-upgrade-chat-path";
    let s = s1(n);
    v.push(
        WsCase::new(n, OA, "/v1/chat/completions", Clean)
            .frames(vec![txt(&rt_item(&format!("key {s}")))])
            .plant(&s),
    );
    let n = "ws-upgrade-unknown-path";
    let s = s1(n);
    v.push(
        WsCase::new(n, OA, "/v1/some/future/socket", Clean)
            .frames(vec![txt(&rt_item(&format!("key {s}")))])
            .plant(&s),
    );
    let n = "ws-upgrade-anthropic-host";
    let s = s1(n);
    v.push(
        WsCase::new(n, Provider::Anthropic, "/v1/messages", Clean)
            .frames(vec![txt(&format!(
                r#"{{"type":"message","content":"key {s}"}}"#
            ))])
            .plant(&s),
    );
    let n = "ws-upgrade-post";
    let s = s1(n);
    v.push(
        WsCase::new(n, OA, REALTIME, NoTunnel)
            .opt("method", json!("POST"))
            .frames(vec![txt(&rt_item(&format!("key {s}")))])
            .plant(&s),
    );
    let h2_preface = |s: &str| {
        let mut b = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        // A SETTINGS frame, then DATA on stream 1 with the secret.
        b.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        let d = format!(r#"{{"messages":[{{"role":"user","content":"{s}"}}]}}"#);
        b.extend_from_slice(&[0, 0, d.len() as u8, 0, 1, 0, 0, 0, 1]);
        b.extend_from_slice(d.as_bytes());
        b
    };
    for (n, up, extra) in [
        (
            "ws-upgrade-h2c",
            "h2c",
            vec![
                ("Connection", "Upgrade, HTTP2-Settings"),
                ("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA"),
            ],
        ),
        (
            "ws-upgrade-other-protocol",
            "foo/1.0",
            vec![("Connection", "Upgrade")],
        ),
        ("ws-upgrade-tls", "TLS/1.2", vec![("Connection", "Upgrade")]),
        (
            "ws-upgrade-websocket-and-h2c",
            "h2c, websocket",
            vec![("Connection", "Upgrade")],
        ),
    ] {
        let s = s1(n);
        let mut c = WsCase::new(n, OA, "/v1/models", NoTunnel)
            .opt("bare", json!(true))
            .opt("tunnel", json!(hex(&h2_preface(&s))))
            .header("Upgrade", up)
            .plant(&s);
        for (k, x) in extra {
            c = c.header(k, x);
        }
        v.push(c);
    }
    let n = "ws-connect-method";
    let s = s1(n);
    v.push(WsCase::new(n, OA, "api.openai.com:443", NoTunnel)
        .opt("method", json!("CONNECT"))
        .opt("bare", json!(true))
        .opt("tunnel", json!(hex(format!("POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nContent-Length: 20\r\n\r\n{s}").as_bytes())))
        .plant(&s));
    let n = "ws-h2-extended-connect";
    let s = s1(n);
    v.push(
        WsCase::new(n, OA, REALTIME, H2Connect)
            .opt("h2", json!(true))
            .frames(vec![txt(&rt_item(&format!("key {s}")))])
            .plant(&s),
    );
    let n = "ws-h2-extended-connect-gm";
    let s = s1(n);
    v.push(
        WsCase::new(n, GM, LIVE, H2Connect)
            .opt("h2", json!(true))
            .frames(vec![txt(GM_SETUP), txt(&gm_turn(&format!("key {s}")))])
            .plant(&s),
    );

    // --- credentials in every place a WebSocket client puts one ---------------------------
    let ck = |n: &str| secret(Kind::OpenAi, seed_of(n));
    let hello = || vec![txt(&rt_item("hello"))];
    let n = "ws-cred-oa-authorization";
    let k = ck(n);
    v.push(
        WsCase::new(n, OA, REALTIME, Creds)
            .without("Authorization")
            .header("Authorization", &format!("Bearer {k}"))
            .frames(hello())
            .plant(&k),
    );
    let n = "ws-cred-oa-two-authorization";
    let k = ck(n);
    v.push(
        WsCase::new(n, OA, REALTIME, Creds)
            .header("Authorization", &format!("Bearer {k}"))
            .frames(hello())
            .plant(&k),
    );
    let n = "ws-cred-oa-api-key-header";
    let k = ck(n);
    v.push(
        WsCase::new(n, OA, REALTIME, Creds)
            .header("api-key", &k)
            .frames(hello())
            .plant(&k),
    );
    let n = "ws-cred-oa-x-api-key-header";
    let k = ck(n);
    v.push(
        WsCase::new(n, OA, RESPONSES, Creds)
            .header("x-api-key", &k)
            .frames(hello())
            .plant(&k),
    );
    let n = "ws-cred-oa-x-goog-api-key";
    let k = ck(n);
    v.push(
        WsCase::new(n, OA, REALTIME, Creds)
            .header("x-goog-api-key", &k)
            .frames(hello())
            .plant(&k),
    );
    for (n, q) in [
        ("ws-cred-oa-query-key", "key"),
        ("ws-cred-oa-query-api_key", "api_key"),
        ("ws-cred-oa-query-access_token", "access_token"),
    ] {
        let k = ck(n);
        v.push(
            WsCase::new(n, OA, &format!("{REALTIME}&{q}={k}"), Creds)
                .frames(hello())
                .plant(&k),
        );
    }
    let n = "ws-cred-oa-subprotocol-insecure-key";
    let k = ck(n);
    v.push(
        WsCase::new(n, OA, REALTIME, Creds)
            .without("Authorization")
            .header(
                "Sec-WebSocket-Protocol",
                &format!("realtime, openai-insecure-api-key.{k}, openai-beta.realtime-v1"),
            )
            .frames(hello())
            .plant(&k),
    );
    let n = "ws-cred-oa-subprotocol-insecure-first";
    let k = ck(n);
    v.push(
        WsCase::new(n, OA, REALTIME, Creds)
            .without("Authorization")
            .header(
                "Sec-WebSocket-Protocol",
                &format!("openai-insecure-api-key.{k}, realtime"),
            )
            .frames(hello())
            .plant(&k),
    );
    let n = "ws-cred-oa-subprotocol-with-authorization";
    let k = ck(n);
    v.push(
        WsCase::new(n, OA, REALTIME, Creds)
            .header(
                "Sec-WebSocket-Protocol",
                &format!("realtime, openai-insecure-api-key.{k}"),
            )
            .frames(hello())
            .plant(&k),
    );
    let ek = |n: &str| {
        format!(
            "ek_68b5{:016x}{:016x}",
            seed_of(n),
            seed_of(&format!("{n}#"))
        )
    };
    let n = "ws-cred-oa-subprotocol-ephemeral";
    let k = ek(n);
    v.push(
        WsCase::new(n, OA, REALTIME, Creds)
            .without("Authorization")
            .header(
                "Sec-WebSocket-Protocol",
                &format!("realtime, openai-insecure-api-key.{k}"),
            )
            .frames(hello())
            .plant(&k),
    );
    let n = "ws-cred-oa-bearer-ephemeral";
    let k = ek(n);
    v.push(
        WsCase::new(n, OA, REALTIME, Creds)
            .without("Authorization")
            .header("Authorization", &format!("Bearer {k}"))
            .frames(hello())
            .plant(&k),
    );
    let n = "ws-cred-oa-subprotocol-header-split";
    let k = ck(n);
    v.push(
        WsCase::new(n, OA, REALTIME, Creds)
            .without("Authorization")
            .header("Sec-WebSocket-Protocol", "realtime")
            .header(
                "Sec-WebSocket-Protocol",
                &format!("openai-insecure-api-key.{k}"),
            )
            .frames(hello())
            .plant(&k),
    );
    let gk = |n: &str| {
        format!(
            "AIzaSy{:016x}{:016x}a",
            seed_of(n),
            seed_of(&format!("{n}!"))
        )[..39]
            .to_string()
    };
    let n = "ws-cred-gm-query-key";
    let k = gk(n);
    v.push(
        WsCase::new(n, GM, &format!("{LIVE}?key={k}"), Creds)
            .without("x-goog-api-key")
            .frames(vec![txt(GM_SETUP)])
            .plant(&k),
    );
    let n = "ws-cred-gm-x-goog-api-key";
    let k = gk(n);
    v.push(
        WsCase::new(n, GM, LIVE, Creds)
            .without("x-goog-api-key")
            .header("x-goog-api-key", &k)
            .frames(vec![txt(GM_SETUP)])
            .plant(&k),
    );
    let n = "ws-cred-gm-key-both";
    let (k, k2) = (gk(n), gk(&format!("{n}2")));
    v.push(
        WsCase::new(n, GM, &format!("{LIVE}?key={k2}"), Creds)
            .without("x-goog-api-key")
            .header("x-goog-api-key", &k)
            .frames(vec![txt(GM_SETUP)])
            .plant(&k)
            .plant(&k2),
    );
    let n = "ws-cred-gm-ephemeral-access-token";
    let k = format!(
        "auth_tokens/{:016x}{:016x}",
        seed_of(n),
        seed_of(&format!("{n}+"))
    );
    v.push(WsCase::new(n, GM, &format!(
        "/ws/google.ai.generativelanguage.v1alpha.GenerativeService.BidiGenerateContentConstrained?access_token={k}"), Creds)
        .without("x-goog-api-key").frames(vec![txt(GM_SETUP)]).plant(&k));
    let n = "ws-cred-gm-authorization-token";
    let k = format!("Token auth_tokens/{:016x}", seed_of(n));
    v.push(
        WsCase::new(n, GM, LIVE, Creds)
            .without("x-goog-api-key")
            .header("Authorization", &k)
            .frames(vec![txt(GM_SETUP)])
            .plant(&k[6..]),
    );

    // --- server → client ---------------------------------------------------------------------
    let first_rt = || vec![txt(&rt_item("hello"))];
    let first_gm = || vec![txt(GM_SETUP)];
    let sc =
        |n: &str, p: Provider, t: &str, script: Value, first: Vec<Value>, e: WsExpect, s: &str| {
            WsCase::new(n, p, t, e)
                .frames(first)
                .server(script)
                .plant(s)
        };
    let n = "ws-srv-rt-delta-whole";
    let s = s1(n);
    v.push(sc(
        n,
        OA,
        REALTIME,
        delta_script(n, &s, 1, |d, _| rt_delta(d), false),
        first_rt(),
        ServerMasked,
        &s,
    ));
    let n = "ws-srv-rt-delta-split2";
    let s = s1(n);
    v.push(sc(
        n,
        OA,
        REALTIME,
        delta_script(n, &s, 2, |d, _| rt_delta(d), false),
        first_rt(),
        ServerMasked,
        &s,
    ));
    let n = "ws-srv-rt-delta-split-chars";
    let s = s1(n);
    v.push(sc(
        n,
        OA,
        REALTIME,
        delta_script(n, &s, s.len(), |d, _| rt_delta(d), false),
        first_rt(),
        ServerMasked,
        &s,
    ));
    let n = "ws-srv-rt-transcript-split";
    let s = s1(n);
    v.push(sc(n, OA, REALTIME, delta_script(n, &s, 3, |d, _| json!({"type": "response.output_audio_transcript.delta",
        "response_id": "resp_1", "item_id": "item_1", "output_index": 0, "content_index": 0, "delta": d}).to_string(), false),
        first_rt(), ServerMasked, &s));
    let n = "ws-srv-rt-done-full-text";
    let s = s1(n);
    let mut script = delta_script(n, &s, 2, |d, _| rt_delta(d), false);
    let full = format!("Here it is: {s} done {}", end_marker(n));
    script["server"].as_array_mut().unwrap().push(json!({"op": 1, "payload": json!({"type": "response.output_text.done",
        "response_id": "resp_1", "item_id": "item_1", "output_index": 0, "content_index": 0, "text": full}).to_string()}));
    script["server"].as_array_mut().unwrap().push(json!({"op": 1, "payload": json!({"type": "response.done", "response": {
        "id": "resp_1", "object": "realtime.response", "status": "completed", "output": [{"id": "item_1", "type": "message",
        "role": "assistant", "content": [{"type": "output_text", "text": full}]}]}}).to_string()}));
    v.push(sc(n, OA, REALTIME, script, first_rt(), ServerMasked, &s));
    let n = "ws-srv-resp-delta-split5";
    let s = s1(n);
    v.push(sc(
        n,
        OA,
        RESPONSES,
        delta_script(n, &s, 5, resp_delta, false),
        vec![txt(&resp_text("hi"))],
        ServerMasked,
        &s,
    ));
    let n = "ws-srv-resp-completed-output";
    let s = s1(n);
    let mut script = delta_script(n, "", 1, resp_delta, false);
    script["server"].as_array_mut().unwrap().push(json!({"op": 1, "payload": json!({"type": "response.completed",
        "sequence_number": 9, "response": {"id": "resp_1", "object": "response", "status": "completed", "output": [{"type": "message",
        "id": "msg_1", "role": "assistant", "content": [{"type": "output_text", "text": format!("the key {s}"), "annotations": []}]}]}}).to_string()}));
    v.push(sc(
        n,
        OA,
        RESPONSES,
        script,
        vec![txt(&resp_text("hi"))],
        ServerNoLeak,
        &s,
    ));
    let n = "ws-srv-resp-function-arguments-split";
    let s = s1(n);
    v.push(sc(
        n,
        OA,
        RESPONSES,
        delta_script(
            n,
            &s,
            2,
            |d, i| {
                json!({"type": "response.function_call_arguments.delta",
        "sequence_number": i, "item_id": "fc_1", "output_index": 0, "delta": d})
                .to_string()
            },
            false,
        ),
        vec![txt(&resp_text("hi"))],
        ServerNoLeak,
        &s,
    ));
    let n = "ws-srv-gm-text-split";
    let s = s1(n);
    v.push(sc(
        n,
        GM,
        LIVE,
        delta_script(n, &s, 2, |d, _| gm_server(d), false),
        first_gm(),
        ServerMasked,
        &s,
    ));
    let n = "ws-srv-gm-binary-split";
    let s = s1(n);
    v.push(sc(
        n,
        GM,
        LIVE,
        delta_script(n, &s, 2, |d, _| gm_server(d), true),
        first_gm(),
        ServerMasked,
        &s,
    ));
    let n = "ws-srv-gm-transcription";
    let s = s1(n);
    v.push(sc(
        n,
        GM,
        LIVE,
        delta_script(
            n,
            &s,
            2,
            |d, _| json!({"serverContent": {"outputTranscription": {"text": d}}}).to_string(),
            true,
        ),
        first_gm(),
        ServerNoLeak,
        &s,
    ));
    // One server message, fragmented, the secret across the fragment boundary.
    let n = "ws-srv-fragmented-message";
    let s = s1(n);
    let m = rt_delta(&format!("key {s} {}", end_marker(n)));
    let c = at(&m, &s, 8);
    let b = m.as_bytes();
    v.push(sc(
        n,
        OA,
        REALTIME,
        json!({"server": [
        {"op": 1, "fin": false, "payload": String::from_utf8_lossy(&b[..c])},
        {"op": 9, "payload": "srv-ping"},
        {"op": 0, "fin": true, "payload": String::from_utf8_lossy(&b[c..])}], "close_after": true}),
        first_rt(),
        ServerMasked,
        &s,
    ));
    let n = "ws-srv-ping-payload";
    let s = s1(n);
    v.push(sc(n, OA, REALTIME, json!({"server": [{"op": 9, "payload": s}, {"op": 1, "payload": rt_delta("ok")}], "close_after": true}),
        first_rt(), ServerNoLeak, &s));
    let n = "ws-srv-close-reason";
    let s = s1(n);
    let mut cl = 1008u16.to_be_bytes().to_vec();
    cl.extend_from_slice(s.as_bytes());
    v.push(sc(
        n,
        OA,
        REALTIME,
        json!({"server": [{"op": 8, "payload": {"hex": hex(&cl)}}]}),
        first_rt(),
        ServerNoLeak,
        &s,
    ));
    let n = "ws-srv-error-event";
    let s = s1(n);
    v.push(sc(n, OA, REALTIME, json!({"server": [{"op": 1, "payload": json!({"type": "error", "event_id": "e1", "error": {
        "type": "invalid_request_error", "code": "invalid_value", "message": format!("Invalid value: {s}"), "param": null}}).to_string()}],
        "close_after": true}), first_rt(), ServerNoLeak, &s));
    let n = "ws-srv-json-escaped";
    let s = s1(n);
    v.push(sc(n, OA, REALTIME, json!({"server": [{"op": 1, "payload": format!(
        r#"{{"type":"response.output_text.delta","item_id":"item_1","output_index":0,"content_index":0,"delta":"key {}"}}"#, json_escaped(&s))}],
        "close_after": true}), first_rt(), ServerNoLeak, &s));
    let n = "ws-srv-unknown-event";
    let s = s1(n);
    v.push(sc(
        n,
        OA,
        REALTIME,
        json!({"server": [{"op": 1, "payload": json!({"type": "response.future_event",
        "payload": {"note": format!("key {s}")}}).to_string()}], "close_after": true}),
        first_rt(),
        ServerNoLeak,
        &s,
    ));
    let n = "ws-srv-rsv1-no-extension";
    let s = s1(n);
    v.push(sc(n, OA, REALTIME, json!({"server": [{"op": 1, "rsv1": true, "raw_deflate": true, "payload": rt_delta(&format!("key {s}"))}],
        "close_after": true}), first_rt(), ServerNoLeak, &s));
    let n = "ws-srv-deflate-negotiated";
    let s = s1(n);
    let mut c = sc(
        n,
        OA,
        REALTIME,
        {
            let mut d = delta_script(n, &s, 2, |d, _| rt_delta(d), false);
            for f in d["server"].as_array_mut().unwrap() {
                f["compress"] = json!(true);
            }
            d
        },
        first_rt(),
        ServerMasked,
        &s,
    );
    c = c.header(
        "Sec-WebSocket-Extensions",
        "permessage-deflate; client_max_window_bits",
    );
    v.push(c);
    let n = "ws-srv-binary-gzip";
    let s = s1(n);
    v.push(sc(n, OA, REALTIME, json!({"server": [{"op": 2, "payload": {"hex": hex(&codec::compress("gzip", rt_delta(&format!("key {s}")).as_bytes()))}}],
        "close_after": true}), first_rt(), ServerNoLeak, &s));
    let n = "ws-srv-oversized-message";
    let s = s1(n);
    v.push(sc(n, OA, REALTIME, json!({"server": [{"op": 1, "payload": rt_delta(&format!("{} key {s}", "lorem ipsum ".repeat(17 * 1024 * 1024 / 12)))}],
        "close_after": true}), first_rt(), ServerNoLeak, &s).opt("timeout", json!(30)));
    let n = "ws-srv-before-first-message";
    let s = s1(n);
    let mut script = delta_script(n, &s, 2, |d, _| rt_delta(d), false);
    script["eager"] = json!(true);
    v.push(sc(n, OA, REALTIME, script, first_rt(), ServerMasked, &s));

    // --- the vault's key echoed by the server -------------------------------------------
    let oa_key = vault_key(OA);
    let gm_key = vault_key(GM);
    let echo = |n: &str, p: Provider, t: &str, script: Value, first: Vec<Value>| {
        WsCase::new(n, p, t, ServerNoLeak)
            .frames(first)
            .server(script)
    };
    v.push(echo(
        "ws-echo-vault-in-delta",
        OA,
        REALTIME,
        json!({"server": [{"op": 1, "payload": rt_delta(&format!("your key is {oa_key}"))}],
        "close_after": true}),
        first_rt(),
    ));
    let (a, b) = oa_key.split_at(oa_key.len() / 2);
    v.push(echo(
        "ws-echo-vault-split-deltas",
        OA,
        REALTIME,
        json!({"server": [{"op": 1, "payload": rt_delta(&format!("key {a}"))},
        {"op": 1, "payload": rt_delta(b)}], "close_after": true}),
        first_rt(),
    ));
    v.push(echo("ws-echo-vault-session-created", OA, REALTIME, json!({"eager": true, "server": [{"op": 1, "payload": json!({"type": "session.created",
        "event_id": "e0", "session": {"id": "sess_1", "object": "realtime.session", "client_secret": {"value": oa_key, "expires_at": 0}}}).to_string()}],
        "close_after": true}), first_rt()));
    v.push(echo("ws-echo-vault-in-101-header", OA, REALTIME, json!({"headers": [["x-echo-key", oa_key]], "server": [{"op": 1, "payload": rt_delta("ok")}],
        "close_after": true}), first_rt()));
    v.push(echo("ws-echo-vault-in-refusal", OA, REALTIME, json!({"status": 401, "body": json!({"error": {"message":
        format!("Incorrect API key provided: {oa_key}."), "type": "invalid_request_error", "code": "invalid_api_key"}}).to_string()}), first_rt()));
    v.push(echo(
        "ws-echo-vault-gm-binary",
        GM,
        LIVE,
        json!({"server": [{"op": 2, "payload": gm_server(&format!("key {gm_key}"))}],
        "close_after": true}),
        first_gm(),
    ));
    v.push(echo("ws-echo-vault-close-reason", OA, REALTIME, json!({"server": [{"op": 8, "payload": {"hex": hex(&[&1008u16.to_be_bytes()[..], &oa_key.as_bytes()[..40]].concat())}}]}),
        first_rt()));
    v.push(echo("ws-echo-vault-ping", OA, REALTIME, json!({"server": [{"op": 9, "payload": &oa_key[..40]}, {"op": 1, "payload": rt_delta("ok")}],
        "close_after": true}), first_rt()));
    v
}

/// Vertex AI's Live API (`LlmBidiService/BidiGenerateContent` on the regional host, the
/// client's OAuth token in `Authorization`): masked upstream or refused; never the client's
/// token upstream.
pub fn vertex_live_cases() -> Vec<WsCase> {
    let path = "/ws/google.cloud.aiplatform.v1.LlmBidiService/BidiGenerateContent";
    let setup = json!({"setup": {"model": "projects/adv-project-140/locations/us-central1/publishers/google/models/gemini-2.0-flash-live-preview-04-09"}}).to_string();
    let mut v = vec![];
    for (n, msgs) in [
        ("vx-ws-live-turn", vec![setup.clone(), "TURN".to_string()]),
        ("vx-ws-live-setup-system", vec!["SYS".to_string()]),
    ] {
        let s = s1(n);
        let tok = format!("ya29.a0AfH6SMclientws{:016x}", seed_of(n));
        let frames = msgs
            .iter()
            .map(|m| match m.as_str() {
                "TURN" => txt(&gm_turn(&format!("key {s}"))),
                "SYS" => txt(&json!({"setup": {"model": "projects/adv-project-140/locations/us-central1/publishers/google/models/gemini-live",
                    "systemInstruction": {"parts": [{"text": format!("use {s}")}]}}}).to_string()),
                m => txt(m),
            })
            .collect();
        let mut c = WsCase::new(n, Provider::Gemini, path, WsExpect::Clean)
            .without("x-goog-api-key")
            .header("Authorization", &format!("Bearer {tok}"))
            .frames(frames)
            .plant(&s)
            .plant(&tok);
        c.host = Some(super::raw::VERTEX_HOST.into());
        v.push(c);
    }
    v
}

/// Each case's server script, for the fake.
pub fn scripts(cases: &[WsCase]) -> Value {
    let mut m = serde_json::Map::new();
    for c in cases {
        if let Some(s) = &c.server {
            m.insert(c.name.clone(), s.clone());
        }
    }
    Value::Object(m)
}

fn unhex(s: &str) -> Vec<u8> {
    let v = |c: u8| match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        b'A'..=b'F' => c - b'A' + 10,
        _ => 0,
    };
    s.as_bytes()
        .chunks_exact(2)
        .map(|p| v(p[0]) << 4 | v(p[1]))
        .collect()
}

fn has(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && memchr::memmem::find(hay, needle).is_some()
}

/// Every spelling of a part (the raw bytes alone for parts past 1 MiB: the oversized cases).
fn part_views(b: &[u8]) -> Vec<Vec<u8>> {
    if b.len() > 1 << 20 {
        vec![b.to_vec(), codec::unescape_json(b)]
    } else {
        codec::views(b)
    }
}

fn hexf(v: &Value, k: &str) -> Vec<u8> {
    unhex(v[k].as_str().unwrap_or(""))
}

/// Every string leaf of a JSON document, in order, concatenated.
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

/// What a case's upstream side looks like: named parts, each the bytes to search.
fn upstream_parts(recs: &[&Value]) -> Vec<(String, Vec<u8>)> {
    let mut parts = vec![];
    for r in recs {
        match r["kind"].as_str().unwrap_or("") {
            "http" => {
                parts.push((
                    "upgrade target".into(),
                    r["target"].as_str().unwrap_or("").as_bytes().to_vec(),
                ));
                for h in r["headers"].as_array().into_iter().flatten() {
                    parts.push((
                        format!("upgrade header {}", h[0].as_str().unwrap_or("")),
                        format!(
                            "{}: {}",
                            h[0].as_str().unwrap_or(""),
                            h[1].as_str().unwrap_or("")
                        )
                        .into_bytes(),
                    ));
                }
                parts.push(("request body".into(), hexf(r, "body")));
            }
            "ws-frame" => {
                parts.push((format!("frame op {}", r["op"]), hexf(r, "payload")));
                parts.push((
                    format!("frame op {} inflated", r["op"]),
                    hexf(r, "inflated"),
                ));
            }
            "ws-message" => parts.push(("message".into(), hexf(r, "data"))),
            "tunnel" => parts.push(("tunnelled bytes".into(), hexf(r, "data"))),
            "conn" => parts.push(("unparsed bytes".into(), hexf(r, "partial"))),
            _ => {}
        }
    }
    parts
}

fn client_parts(g: &Value) -> Vec<(String, Vec<u8>)> {
    let mut parts = vec![];
    for h in g["headers"].as_array().into_iter().flatten() {
        parts.push((
            "response header".into(),
            format!(
                "{}: {}",
                h[0].as_str().unwrap_or(""),
                h[1].as_str().unwrap_or("")
            )
            .into_bytes(),
        ));
    }
    parts.push(("response body".into(), hexf(g, "body")));
    for f in g["frames"].as_array().into_iter().flatten() {
        parts.push((format!("frame op {}", f["op"]), hexf(f, "payload")));
    }
    let mut joined = Joined::default();
    for m in g["messages"].as_array().into_iter().flatten() {
        let d = hexf(m, "data");
        let inf = hexf(m, "inflated");
        for b in [&d, &inf] {
            if let Ok(v) = serde_json::from_slice::<Value>(b) {
                joined.add(&v);
            }
        }
        parts.push(("message".into(), d));
        parts.push(("message inflated".into(), inf));
    }
    if let Some(c) = g["close"].as_object() {
        parts.push((
            "close reason".into(),
            c["reason"].as_str().unwrap_or("").as_bytes().to_vec(),
        ));
    }
    parts.push(("tunnel answer".into(), hexf(g, "tunnel_back")));
    parts.push(("joined message text".into(), joined.text().into_bytes()));
    parts
}

/// Every part with every spelling of it (gzip and deflate payloads inflated), computed once.
struct Viewed(Vec<(String, Vec<Vec<u8>>)>);

impl Viewed {
    fn of(parts: Vec<(String, Vec<u8>)>) -> Self {
        let inflated = inflate_all(&parts);
        Self(
            parts
                .into_iter()
                .enumerate()
                .map(|(i, (n, b))| {
                    let mut vs = part_views(&b);
                    for d in inflated.get(i).into_iter().flatten() {
                        vs.extend(part_views(d));
                    }
                    (n, vs)
                })
                .collect(),
        )
    }

    fn find(&self, needle: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(_, vs)| vs.iter().any(|v| has(v, needle.as_bytes())))
            .map(|(n, _)| n.clone())
    }
}

fn inflate_all(parts: &[(String, Vec<u8>)]) -> Vec<Vec<Vec<u8>>> {
    // Compressed payloads are small; the oversized cases' plain text is searched raw.
    let bodies: Vec<&[u8]> = parts
        .iter()
        .map(|(_, b)| {
            if b.len() > 1 << 20 {
                &[][..]
            } else {
                b.as_slice()
            }
        })
        .collect();
    codec::inflate_batch(&bodies)
}

/// A clean refusal as the client saw it: a close frame, or an HTTP error to the upgrade.
fn refused(g: &Value) -> bool {
    g["close"].is_object() || g["status"].as_u64().is_some_and(|s| s >= 400)
}

fn brief(g: &Value) -> String {
    let body = String::from_utf8_lossy(&hexf(g, "body"))
        .chars()
        .take(100)
        .collect::<String>();
    format!(
        "client got status {} close {} messages {} err {} {}",
        g["status"],
        g["close"],
        g["messages"].as_array().map(|a| a.len()).unwrap_or(0),
        g["error"],
        body.replace('\n', "\\n")
    )
}

const AUTH_HEADERS: &[&str] = &[
    "authorization",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
    "proxy-authorization",
];
const AUTH_PARAMS: &[&str] = &[
    "key",
    "api_key",
    "api-key",
    "apikey",
    "access_token",
    "x-goog-api-key",
    "authorization",
];

/// Credentials in an upgrade request as the provider received it (names; the vault's key
/// allowed in its place).
fn upgrade_credentials(p: Provider, r: &Value) -> (Vec<String>, usize) {
    let key = vault_key(p);
    let mut other = vec![];
    let mut vault_in_place = 0;
    for h in r["headers"].as_array().into_iter().flatten() {
        let n = h[0].as_str().unwrap_or("").to_ascii_lowercase();
        let v = h[1].as_str().unwrap_or("");
        let place_ok = match p {
            Provider::OpenAi => n == "authorization" && v == format!("Bearer {key}"),
            Provider::Gemini => n == "x-goog-api-key" && v == key,
            Provider::Anthropic => n == "x-api-key" && v == key,
        };
        if place_ok {
            vault_in_place += 1;
        } else if AUTH_HEADERS.contains(&n.as_str()) {
            other.push(format!("{n}: {}", label(v)));
        }
        if n == "sec-websocket-protocol"
            && v.to_ascii_lowercase().contains("openai-insecure-api-key")
        {
            other.push(format!("subprotocol {}", label(v)));
        }
    }
    let target = r["target"].as_str().unwrap_or("");
    if let Some((_, q)) = target.split_once('?') {
        for kv in q.split('&') {
            let (k, val) = kv.split_once('=').unwrap_or((kv, ""));
            let k = String::from_utf8_lossy(&codec::pct(k.as_bytes())).to_ascii_lowercase();
            if p == Provider::Gemini && k == "key" && val == key {
                vault_in_place += 1;
            } else if AUTH_PARAMS.contains(&k.as_str()) {
                other.push(format!("?{k}"));
            }
        }
    }
    (other, vault_in_place)
}

/// Judge every case: failures as `name: reason`.
pub fn judge(env: &RawEnv, cases: &[WsCase], got: &BTreeMap<String, Value>) -> Vec<String> {
    let recs = env.records();
    let names: std::collections::BTreeSet<&str> = cases.iter().map(|c| c.name.as_str()).collect();
    // Sessions by connection: a frame record carries its session's case already. Records of
    // no known case (a session whose x-adv-case went missing) are searched for every case.
    let stray: Vec<&Value> = recs
        .iter()
        .filter(|r| r["case"].as_str().is_none_or(|n| !names.contains(n)))
        .collect();
    let stray_viewed = Viewed::of(upstream_parts(&stray));
    let mut fails = vec![];
    for c in cases {
        let mine: Vec<&Value> = recs
            .iter()
            .filter(|r| r["case"].as_str() == Some(c.name.as_str()))
            .collect();
        let g = got
            .get(&c.name)
            .cloned()
            .unwrap_or(json!({"error": "no result from the driver"}));
        let mut why: Vec<String> = vec![];
        let up = Viewed::of(upstream_parts(&mine));
        let stray_up = &stray_viewed;
        let cl_raw = client_parts(&g);
        let joined = cl_raw.last().map(|(_, b)| b.clone()).unwrap_or_default();
        let cl = Viewed::of(cl_raw);
        for s in &c.planted {
            for n in needles(s) {
                if let Some(p) = up.find(&n) {
                    why.push(format!("leaked {} upstream in {p}", label(s)));
                }
                if let Some(p) = stray_up.find(&n) {
                    why.push(format!(
                        "leaked {} upstream in {p} (of an unlabelled session)",
                        label(s)
                    ));
                }
                if let Some(p) = cl.find(&n) {
                    why.push(format!("leaked {} to the client in {p}", label(s)));
                }
            }
        }
        for (_, k) in VAULT.iter() {
            for piece in key_pieces(k) {
                if let Some(p) = cl.find(&piece) {
                    why.push(format!(
                        "a vault key ({}) reached the client in {p}",
                        label(k)
                    ));
                    break;
                }
            }
        }
        let messages: Vec<&&Value> = mine.iter().filter(|r| r["kind"] == "ws-message").collect();
        let masked_up = messages.iter().any(|m| has(&hexf(m, "data"), b"[MASKED:"));
        let opened = mine.iter().any(|r| r["kind"] == "ws-open");
        let refuse_marker_up = mine
            .iter()
            .filter(|r| r["kind"] == "ws-message" || r["kind"] == "ws-frame")
            .any(|r| {
                [hexf(r, "data"), hexf(r, "payload"), hexf(r, "inflated")]
                    .iter()
                    .any(|b| has(b, b"ADVREFUSE"))
            });
        match c.expect {
            WsExpect::Masked => {
                if !opened {
                    why.push(format!("no session reached the provider: {}", brief(&g)));
                } else if !masked_up {
                    why.push(format!(
                        "no message upstream carries [MASKED: ({} messages)",
                        messages.len()
                    ));
                }
            }
            WsExpect::Clean => {
                if !masked_up && !refused(&g) {
                    why.push(format!(
                        "neither masked upstream nor refused cleanly: {}",
                        brief(&g)
                    ));
                }
            }
            WsExpect::Refused => {
                if refuse_marker_up {
                    why.push("the frame reached the provider; must be refused".into());
                }
                if !refused(&g) {
                    why.push(format!(
                        "no clean refusal (close frame or HTTP error): {}",
                        brief(&g)
                    ));
                }
            }
            WsExpect::NoLeak | WsExpect::ServerNoLeak => {}
            WsExpect::NoTunnel => {
                let st = g["status"].as_u64().unwrap_or(0);
                let connect = c.opts["method"] == "CONNECT";
                if st == 101 || (connect && (200..300).contains(&st)) {
                    why.push(format!("a tunnel was opened: {}", brief(&g)));
                }
            }
            WsExpect::H2Connect => {
                if g["status"] == 200 && !masked_up {
                    why.push(format!(
                        "extended CONNECT accepted (advertised: {}) but no masked message upstream",
                        g["h2_connect_advertised"]
                    ));
                }
                if g["h2_connect_advertised"] == true && g["status"] != 200 {
                    why.push(format!(
                        "SETTINGS_ENABLE_CONNECT_PROTOCOL advertised but the CONNECT failed: {}",
                        brief(&g)
                    ));
                }
            }
            WsExpect::Creds => {
                let up_req: Vec<&&Value> = mine.iter().filter(|r| r["kind"] == "http").collect();
                if up_req.is_empty() {
                    why.push(format!(
                        "the upgrade did not reach the provider: {}",
                        brief(&g)
                    ));
                }
                for r in up_req {
                    let (other, n) = upgrade_credentials(c.provider, r);
                    if !other.is_empty() {
                        why.push(format!("client credentials upstream: {}", other.join(", ")));
                    }
                    if n != 1 {
                        why.push(format!(
                            "the vault's key is in its place {n} times, not once"
                        ));
                    }
                    // Nowhere else.
                    let key = vault_key(c.provider);
                    let elsewhere: Vec<String> = r["headers"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter(|h| {
                            let n = h[0].as_str().unwrap_or("").to_ascii_lowercase();
                            h[1].as_str().unwrap_or("").contains(key)
                                && !(n == "authorization"
                                    || n == "x-goog-api-key"
                                    || n == "x-api-key")
                        })
                        .map(|h| h[0].as_str().unwrap_or("").to_string())
                        .collect();
                    if !elsewhere.is_empty() {
                        why.push(format!("the vault key also in {elsewhere:?}"));
                    }
                }
                if !opened {
                    why.push(format!("no session opened: {}", brief(&g)));
                }
            }
            WsExpect::ServerMasked => {
                if !has(&joined, b"[MASKED:") {
                    why.push(format!("the client's text has no [MASKED: ({})", brief(&g)));
                }
                let m = end_marker(&c.name);
                if !has(&joined, m.as_bytes()) {
                    why.push(format!(
                        "the end of the server's messages never reached the client ({})",
                        brief(&g)
                    ));
                }
            }
        }
        if !why.is_empty() {
            why.dedup();
            fails.push(format!("{}: {}", c.name, why.join("; ")));
            if std::env::var_os("ADV_DUMP").is_some() {
                for r in &mine {
                    let mut r = (*r).clone();
                    for k in ["payload", "data", "inflated", "body"] {
                        if let Some(s) = r[k].as_str() {
                            let b = unhex(s);
                            r[k] = json!(String::from_utf8_lossy(&b[..b.len().min(400)]));
                        }
                    }
                    eprintln!("--- {} upstream: {r}", c.name);
                }
                let mut g2 = g.clone();
                for m in g2["messages"].as_array_mut().into_iter().flatten() {
                    let b = hexf(m, "data");
                    m["data"] = json!(String::from_utf8_lossy(&b[..b.len().min(400)]));
                }
                g2["frames"] = json!(g2["frames"].as_array().map(|a| a.len()));
                eprintln!("--- {} client: {g2}", c.name);
            }
        }
    }
    fails
}

pub fn run(env: &RawEnv, cases: &[WsCase]) -> Vec<String> {
    let wire: Vec<Value> = cases.iter().map(|c| c.wire(env)).collect();
    let got = env.drive(DRIVER, &wire);
    judge(env, cases, &got)
}

//! Request cases, written from the providers' public API references and the HTTP specs: a
//! secret in every field of every endpoint's real request shape, in forms, multipart, JSONL
//! and text bodies, behind JSON escapes, duplicate keys, compression, odd paths and methods,
//! and in every place a credential can ride.

use super::{
    Case, Expect, Provider,
    codec::{b64, compress, pct_all},
    secrets::{self, Kind, for_case, json_escaped, secret},
};

use Provider::{Anthropic as AN, Gemini as GM, OpenAi as OA};

/// `tpl` with its placeholders filled for case `name`: `$S` the case's secret, `$T` a second
/// one of another kind, `$ES` the first JSON-escaped, `$PS` it percent-encoded, `$B64S` a
/// text naming it, base64-encoded. The planted secrets come back too.
pub fn fill(name: &str, tpl: &str) -> (String, Vec<String>) {
    let (_, a) = for_case(name, false);
    let (_, b) = for_case(name, true);
    let mut planted = vec![];
    let mut out = tpl.to_string();
    let mut sub = |out: &mut String, tok: &str, val: String, s: &String| {
        if out.contains(tok) {
            *out = out.replace(tok, &val);
            if !planted.contains(s) {
                planted.push(s.clone());
            }
        }
    };
    sub(
        &mut out,
        "$B64S",
        b64(format!("notes: the deploy key is {a}\n").as_bytes()),
        &a,
    );
    sub(&mut out, "$ES", json_escaped(&a), &a);
    sub(&mut out, "$PS", pct_all(&a), &a);
    sub(&mut out, "$S", a.clone(), &a);
    sub(&mut out, "$T", b.clone(), &b);
    (out, planted)
}

/// A JSON POST.
pub fn j(p: Provider, name: &str, path: &str, tpl: &str) -> Case {
    let (body, planted) = fill(name, tpl);
    let mut c = Case::new(name, p, "POST", path).json(&body);
    c.planted = planted;
    c
}

/// A POST of any body.
pub fn b(p: Provider, name: &str, path: &str, ctype: &str, tpl: &str) -> Case {
    let (body, planted) = fill(name, tpl);
    let mut c = Case::new(name, p, "POST", path).body(ctype, body.into_bytes());
    c.planted = planted;
    c
}

fn oa(extra: &str) -> String {
    r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hello"}],@}"#.replace('@', extra)
}

fn oam(messages: &str) -> String {
    r#"{"model":"gpt-4o","messages":[@]}"#.replace('@', messages)
}

fn an(extra: &str) -> String {
    r#"{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"hello"}],@}"#
        .replace('@', extra)
}

fn anm(messages: &str) -> String {
    r#"{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[@]}"#.replace('@', messages)
}

fn gm(extra: &str) -> String {
    r#"{"contents":[{"role":"user","parts":[{"text":"hello"}]}],@}"#.replace('@', extra)
}

fn gmc(contents: &str) -> String {
    r#"{"contents":[@]}"#.replace('@', contents)
}

const CHAT: &str = "/v1/chat/completions";
const MSGS: &str = "/v1/messages";
const GEN: &str = "/v1beta/models/gemini-2.5-flash:generateContent";

/// A tool_use turn followed by its result, for Anthropic cases about either.
const AN_TOOL: &str = r#"{"role":"user","content":"weather?"},{"role":"assistant","content":[{"type":"tool_use","id":"toolu_01","name":"get_weather","input":{"city":"Paris"}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_01","content":"sunny"}]}"#;

pub fn multipart(boundary: &str, parts: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (head, body) in parts {
        out.extend_from_slice(format!("--{boundary}\r\n{head}\r\n\r\n").as_bytes());
        out.extend_from_slice(body);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    out
}

fn mp(p: Provider, name: &str, path: &str, parts: &[(&str, &str)]) -> Case {
    let mut planted = vec![];
    let filled: Vec<(String, String)> = parts
        .iter()
        .map(|(h, body)| {
            let (h, p1) = fill(name, h);
            let (body, p2) = fill(name, body);
            planted.extend(p1);
            planted.extend(p2);
            (h, body)
        })
        .collect();
    planted.dedup();
    let refs: Vec<(&str, &[u8])> = filled
        .iter()
        .map(|(h, b)| (h.as_str(), b.as_bytes()))
        .collect();
    let body = multipart("adv-7f3a9c", &refs);
    let mut c =
        Case::new(name, p, "POST", path).body("multipart/form-data; boundary=adv-7f3a9c", body);
    c.planted = planted;
    c
}

/// Secrets in every field of the JSON request shapes the references document.
pub fn json_fields() -> Vec<Case> {
    let mut v = vec![];
    let oa_chat: &[(&str, String)] = &[
        ("chat-user-content", oam(r#"{"role":"user","content":"fix my deploy script, key $S"}"#)),
        ("chat-system-message", oam(r#"{"role":"system","content":"Use credential $S"},{"role":"user","content":"hi"}"#)),
        ("chat-developer-message", oam(r#"{"role":"developer","content":"token=$S"},{"role":"user","content":"hi"}"#)),
        ("chat-content-part-text", oam(r#"{"role":"user","content":[{"type":"text","text":"$S"}]}"#)),
        ("chat-tools-function-description", oa(r#""tools":[{"type":"function","function":{"name":"lookup","description":"Call with token $S","parameters":{"type":"object","properties":{}}}}]"#)),
        ("chat-tools-function-name", oa(r#""tools":[{"type":"function","function":{"name":"$S","parameters":{"type":"object","properties":{}}}}]"#)),
        ("chat-tools-param-description", oa(r#""tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"q":{"type":"string","description":"pass $S here"}}}}}]"#)),
        ("chat-tools-param-enum", oa(r#""tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"q":{"type":"string","enum":["a","$S"]}}}}}]"#)),
        ("chat-tools-param-default", oa(r#""tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"q":{"type":"string","default":"$S"}}}}}]"#)),
        ("chat-tools-param-key", oa(r#""tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"$S":{"type":"string"}}}}}]"#)),
        ("chat-tools-schema-title", oa(r#""tools":[{"type":"function","function":{"name":"f","strict":true,"parameters":{"title":"$S","type":"object","properties":{},"additionalProperties":false}}}]"#)),
        ("chat-metadata-value", oa(r#""store":true,"metadata":{"ticket":"$S"}"#)),
        ("chat-metadata-key", oa(r#""store":true,"metadata":{"$S":"x"}"#)),
        ("chat-stop-string", oa(r#""stop":"$S""#)),
        ("chat-stop-array", oa(r#""stop":["END","$S"]"#)),
        ("chat-user-field", oa(r#""user":"$S""#)),
        ("chat-message-name", oam(r#"{"role":"user","name":"$S","content":"hi"}"#)),
        ("chat-response-format-description", oa(r#""response_format":{"type":"json_schema","json_schema":{"name":"out","description":"$S","schema":{"type":"object","properties":{}}}}"#)),
        ("chat-response-format-schema-enum", oa(r#""response_format":{"type":"json_schema","json_schema":{"name":"out","strict":true,"schema":{"type":"object","properties":{"k":{"type":"string","enum":["$S"]}},"required":["k"],"additionalProperties":false}}}"#)),
        ("chat-response-format-name", oa(r#""response_format":{"type":"json_schema","json_schema":{"name":"$S","schema":{"type":"object"}}}"#)),
        ("chat-assistant-tool-call-arguments", oam(r#"{"role":"user","content":"go"},{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"token\":\"$S\"}"}}]},{"role":"tool","tool_call_id":"call_1","content":"ok"}"#)),
        ("chat-tool-result-content", oam(r#"{"role":"user","content":"go"},{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{}"}}]},{"role":"tool","tool_call_id":"call_1","content":"result: $S"}"#)),
        ("chat-tool-call-id", oam(r#"{"role":"user","content":"go"},{"role":"assistant","content":null,"tool_calls":[{"id":"$S","type":"function","function":{"name":"f","arguments":"{}"}}]},{"role":"tool","tool_call_id":"$S","content":"ok"}"#)),
        ("chat-tool-result-parts", oam(r#"{"role":"user","content":"go"},{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{}"}}]},{"role":"tool","tool_call_id":"call_1","content":[{"type":"text","text":"$S"}]}"#)),
        ("chat-assistant-refusal", oam(r#"{"role":"user","content":"a"},{"role":"assistant","refusal":"I won't print $S"},{"role":"user","content":"b"}"#)),
        ("chat-assistant-audio-id", oam(r#"{"role":"user","content":"a"},{"role":"assistant","audio":{"id":"$S"}},{"role":"user","content":"b"}"#)),
        ("chat-assistant-content-parts", oam(r#"{"role":"user","content":"a"},{"role":"assistant","content":[{"type":"text","text":"$S"}]},{"role":"user","content":"b"}"#)),
        ("chat-logit-bias-key", oa(r#""logit_bias":{"$S":1}"#)),
        ("chat-prediction-content", oa(r#""prediction":{"type":"content","content":"$S"}"#)),
        ("chat-prediction-parts", oa(r#""prediction":{"type":"content","content":[{"type":"text","text":"$S"}]}"#)),
        ("chat-image-data-url-text-plain", oam(r#"{"role":"user","content":[{"type":"text","text":"read"},{"type":"image_url","image_url":{"url":"data:text/plain;base64,$B64S"}}]}"#)),
        ("chat-image-url-query", oam(r#"{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://img.example.com/a.png?token=$S","detail":"low"}}]}"#)),
        ("chat-file-data", oam(r#"{"role":"user","content":[{"type":"file","file":{"filename":"notes.txt","file_data":"data:text/plain;base64,$B64S"}}]}"#)),
        ("chat-file-data-charset", oam(r#"{"role":"user","content":[{"type":"file","file":{"filename":"notes.md","file_data":"data:text/markdown;charset=utf-8;base64,$B64S"}}]}"#)),
        ("chat-file-filename", oam(r#"{"role":"user","content":[{"type":"file","file":{"filename":"$S.txt","file_id":"file-abc"}}]}"#)),
        ("chat-web-search-location", oa(r#""web_search_options":{"user_location":{"type":"approximate","approximate":{"city":"$S","country":"FR"}}}"#)),
        ("chat-functions-legacy", oa(r#""functions":[{"name":"f","description":"$S","parameters":{"type":"object","properties":{}}}]"#)),
        ("chat-function-call-legacy", oa(r#""functions":[{"name":"f","parameters":{}}],"function_call":{"name":"$S"}"#)),
        ("chat-tool-choice-name", oa(r#""tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":{"type":"function","function":{"name":"$S"}}"#)),
        ("chat-prompt-cache-key", oa(r#""prompt_cache_key":"$S""#)),
        ("chat-safety-identifier", oa(r#""safety_identifier":"$S""#)),
        ("chat-unknown-field", oa(r#""x_custom":{"deep":["$S"]}"#)),
        ("chat-audio-voice", oa(r#""modalities":["text","audio"],"audio":{"voice":"$S","format":"wav"}"#)),
        ("chat-two-secrets", oam(r#"{"role":"user","content":"first $S then $T"}"#)),
        ("chat-content-newlines", oam(r#"{"role":"user","content":"line one\n$S\nline three"}"#)),
        ("chat-stream-true", r#"{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"$S"}]}"#.into()),
        ("chat-deep-nesting", oa(&format!(r#""x_deep":{}"$S"{}"#, "[".repeat(60), "]".repeat(60)))),
        ("chat-many-messages", oam(&{
            let mut m: Vec<String> = (0..250).map(|i| format!(r#"{{"role":"user","content":"message {i}"}}"#)).collect();
            m.insert(230, r#"{"role":"user","content":"the key: $S"}"#.into());
            m.join(",")
        })),
        ("chat-big-body", oam(&format!(r#"{{"role":"user","content":"{} $S"}}"#, "lorem ipsum dolor sit amet ".repeat(40000)))),
    ];
    for (name, body) in oa_chat {
        v.push(j(OA, name, CHAT, body));
    }
    let oa_other: &[(&str, &str, &str)] = &[
        (
            "completions-prompt",
            "/v1/completions",
            r#"{"model":"gpt-3.5-turbo-instruct","prompt":"$S"}"#,
        ),
        (
            "completions-prompt-array",
            "/v1/completions",
            r#"{"model":"gpt-3.5-turbo-instruct","prompt":["a","$S"]}"#,
        ),
        (
            "completions-suffix",
            "/v1/completions",
            r#"{"model":"gpt-3.5-turbo-instruct","prompt":"def f():","suffix":"$S"}"#,
        ),
        (
            "completions-stop",
            "/v1/completions",
            r#"{"model":"gpt-3.5-turbo-instruct","prompt":"x","stop":["$S"]}"#,
        ),
        (
            "responses-input-string",
            "/v1/responses",
            r#"{"model":"gpt-4.1","input":"$S"}"#,
        ),
        (
            "responses-input-text-part",
            "/v1/responses",
            r#"{"model":"gpt-4.1","input":[{"role":"user","content":[{"type":"input_text","text":"$S"}]}]}"#,
        ),
        (
            "responses-instructions",
            "/v1/responses",
            r#"{"model":"gpt-4.1","instructions":"$S","input":"hi"}"#,
        ),
        (
            "responses-tool-function-description",
            "/v1/responses",
            r#"{"model":"gpt-4.1","input":"hi","tools":[{"type":"function","name":"f","description":"$S","parameters":{"type":"object","properties":{}}}]}"#,
        ),
        (
            "responses-tool-function-parameters",
            "/v1/responses",
            r#"{"model":"gpt-4.1","input":"hi","tools":[{"type":"function","name":"f","parameters":{"type":"object","properties":{"a":{"type":"string","description":"$S"}}}}]}"#,
        ),
        (
            "responses-tool-mcp-authorization",
            "/v1/responses",
            r#"{"model":"gpt-4.1","input":"hi","tools":[{"type":"mcp","server_label":"x","server_url":"https://mcp.example.com/sse","authorization":"$S","require_approval":"never"}]}"#,
        ),
        (
            "responses-tool-mcp-headers",
            "/v1/responses",
            r#"{"model":"gpt-4.1","input":"hi","tools":[{"type":"mcp","server_label":"x","server_url":"https://mcp.example.com/sse","headers":{"Authorization":"Bearer $S"}}]}"#,
        ),
        (
            "responses-reasoning-summary",
            "/v1/responses",
            r#"{"model":"o4-mini","input":[{"role":"user","content":"a"},{"type":"reasoning","id":"rs_1","summary":[{"type":"summary_text","text":"$S"}]},{"role":"user","content":"b"}]}"#,
        ),
        (
            "responses-reasoning-content",
            "/v1/responses",
            r#"{"model":"o4-mini","input":[{"type":"reasoning","id":"rs_1","summary":[],"content":[{"type":"reasoning_text","text":"$S"}]}]}"#,
        ),
        (
            "responses-reasoning-encrypted",
            "/v1/responses",
            r#"{"model":"o4-mini","input":[{"type":"reasoning","id":"rs_1","summary":[],"encrypted_content":"$S"}]}"#,
        ),
        (
            "responses-function-call-arguments",
            "/v1/responses",
            r#"{"model":"gpt-4.1","input":[{"type":"function_call","call_id":"call_1","name":"f","arguments":"{\"k\":\"$S\"}"},{"type":"function_call_output","call_id":"call_1","output":"ok"}]}"#,
        ),
        (
            "responses-function-call-output",
            "/v1/responses",
            r#"{"model":"gpt-4.1","input":[{"type":"function_call","call_id":"call_1","name":"f","arguments":"{}"},{"type":"function_call_output","call_id":"call_1","output":"$S"}]}"#,
        ),
        (
            "responses-output-text-item",
            "/v1/responses",
            r#"{"model":"gpt-4.1","input":[{"role":"assistant","content":[{"type":"output_text","text":"$S","annotations":[]}]},{"role":"user","content":"go on"}]}"#,
        ),
        (
            "responses-text-format-schema",
            "/v1/responses",
            r#"{"model":"gpt-4.1","input":"hi","text":{"format":{"type":"json_schema","name":"o","description":"$S","schema":{"type":"object"}}}}"#,
        ),
        (
            "responses-metadata",
            "/v1/responses",
            r#"{"model":"gpt-4.1","input":"hi","metadata":{"run":"$S"}}"#,
        ),
        (
            "responses-prompt-variables",
            "/v1/responses",
            r#"{"model":"gpt-4.1","prompt":{"id":"pmpt_1","variables":{"v":"$S"}}}"#,
        ),
        (
            "responses-input-file-data",
            "/v1/responses",
            r#"{"model":"gpt-4.1","input":[{"role":"user","content":[{"type":"input_file","filename":"a.txt","file_data":"data:text/plain;base64,$B64S"}]}]}"#,
        ),
        (
            "responses-input-image-url",
            "/v1/responses",
            r#"{"model":"gpt-4.1","input":[{"role":"user","content":[{"type":"input_image","image_url":"https://img.example.com/i.png?sig=$S"}]}]}"#,
        ),
        (
            "responses-custom-tool-call",
            "/v1/responses",
            r#"{"model":"gpt-4.1","input":[{"type":"custom_tool_call","call_id":"c1","name":"sh","input":"export T=$S"},{"type":"custom_tool_call_output","call_id":"c1","output":"done"}]}"#,
        ),
        (
            "responses-previous-response-id",
            "/v1/responses",
            r#"{"model":"gpt-4.1","previous_response_id":"$S","input":"hi"}"#,
        ),
        (
            "responses-input-tokens",
            "/v1/responses/input_tokens",
            r#"{"model":"gpt-4.1","input":"$S"}"#,
        ),
        (
            "embeddings-input-string",
            "/v1/embeddings",
            r#"{"model":"text-embedding-3-small","input":"$S"}"#,
        ),
        (
            "embeddings-input-array",
            "/v1/embeddings",
            r#"{"model":"text-embedding-3-small","input":["a","$S"],"encoding_format":"float"}"#,
        ),
        (
            "embeddings-user",
            "/v1/embeddings",
            r#"{"model":"text-embedding-3-small","input":"a","user":"$S"}"#,
        ),
        (
            "moderations-input",
            "/v1/moderations",
            r#"{"model":"omni-moderation-latest","input":"$S"}"#,
        ),
        (
            "moderations-multimodal",
            "/v1/moderations",
            r#"{"model":"omni-moderation-latest","input":[{"type":"text","text":"$S"},{"type":"image_url","image_url":{"url":"https://x.example/a.png"}}]}"#,
        ),
        (
            "assistants-instructions",
            "/v1/assistants",
            r#"{"model":"gpt-4o","instructions":"$S"}"#,
        ),
        (
            "assistants-description",
            "/v1/assistants",
            r#"{"model":"gpt-4o","description":"$S"}"#,
        ),
        (
            "assistants-name",
            "/v1/assistants",
            r#"{"model":"gpt-4o","name":"$S"}"#,
        ),
        (
            "assistants-tool-description",
            "/v1/assistants",
            r#"{"model":"gpt-4o","tools":[{"type":"function","function":{"name":"f","description":"$S"}}]}"#,
        ),
        (
            "assistants-metadata",
            "/v1/assistants/asst_abc",
            r#"{"metadata":{"owner":"$S"}}"#,
        ),
        (
            "threads-create-messages",
            "/v1/threads",
            r#"{"messages":[{"role":"user","content":"$S"}]}"#,
        ),
        (
            "threads-message-add",
            "/v1/threads/thread_abc/messages",
            r#"{"role":"user","content":"$S"}"#,
        ),
        (
            "threads-message-parts",
            "/v1/threads/thread_abc/messages",
            r#"{"role":"user","content":[{"type":"text","text":"$S"}]}"#,
        ),
        (
            "threads-run-instructions",
            "/v1/threads/thread_abc/runs",
            r#"{"assistant_id":"asst_1","additional_instructions":"$S"}"#,
        ),
        (
            "threads-run-additional-messages",
            "/v1/threads/thread_abc/runs",
            r#"{"assistant_id":"asst_1","additional_messages":[{"role":"user","content":"$S"}]}"#,
        ),
        (
            "threads-create-and-run",
            "/v1/threads/runs",
            r#"{"assistant_id":"asst_1","thread":{"messages":[{"role":"user","content":"$S"}]}}"#,
        ),
        (
            "threads-submit-tool-outputs",
            "/v1/threads/thread_abc/runs/run_1/submit_tool_outputs",
            r#"{"tool_outputs":[{"tool_call_id":"call_1","output":"$S"}]}"#,
        ),
        (
            "batches-metadata",
            "/v1/batches",
            r#"{"input_file_id":"file-1","endpoint":"/v1/chat/completions","completion_window":"24h","metadata":{"k":"$S"}}"#,
        ),
        (
            "audio-speech-input",
            "/v1/audio/speech",
            r#"{"model":"gpt-4o-mini-tts","input":"$S","voice":"alloy"}"#,
        ),
        (
            "audio-speech-instructions",
            "/v1/audio/speech",
            r#"{"model":"gpt-4o-mini-tts","input":"hi","voice":"alloy","instructions":"$S"}"#,
        ),
        (
            "images-generations-prompt",
            "/v1/images/generations",
            r#"{"model":"gpt-image-1","prompt":"$S","size":"1024x1024"}"#,
        ),
        (
            "realtime-sessions-instructions",
            "/v1/realtime/sessions",
            r#"{"model":"gpt-4o-realtime-preview","instructions":"$S"}"#,
        ),
        (
            "realtime-client-secrets",
            "/v1/realtime/client_secrets",
            r#"{"session":{"type":"realtime","model":"gpt-realtime","instructions":"$S"}}"#,
        ),
        (
            "realtime-transcription-sessions",
            "/v1/realtime/transcription_sessions",
            r#"{"input_audio_transcription":{"model":"gpt-4o-transcribe","prompt":"$S"}}"#,
        ),
        (
            "realtime-calls-sdp-json",
            "/v1/realtime/calls",
            r#"{"sdp":"v=0\r\no=- $S","session":{"type":"realtime"}}"#,
        ),
        (
            "fine-tuning-suffix",
            "/v1/fine_tuning/jobs",
            r#"{"model":"gpt-4o-mini","training_file":"file-1","suffix":"$S"}"#,
        ),
        (
            "vector-stores-name",
            "/v1/vector_stores",
            r#"{"name":"$S","file_ids":[]}"#,
        ),
        (
            "conversations-items",
            "/v1/conversations",
            r#"{"items":[{"type":"message","role":"user","content":"$S"}]}"#,
        ),
        (
            "conversation-items-add",
            "/v1/conversations/conv_1/items",
            r#"{"items":[{"type":"message","role":"user","content":[{"type":"input_text","text":"$S"}]}]}"#,
        ),
        (
            "evals-name",
            "/v1/evals",
            r#"{"name":"$S","data_source_config":{"type":"custom","item_schema":{"type":"object"}},"testing_criteria":[]}"#,
        ),
        (
            "uploads-create-filename",
            "/v1/uploads",
            r#"{"filename":"$S.jsonl","purpose":"batch","bytes":10,"mime_type":"text/jsonl"}"#,
        ),
        (
            "cohere-v2-chat",
            "/v2/chat",
            r#"{"model":"command-r-plus","messages":[{"role":"user","content":"$S"}]}"#,
        ),
        (
            "mistral-fim-suffix",
            "/v1/fim/completions",
            r#"{"model":"codestral-latest","prompt":"def f():","suffix":"$S"}"#,
        ),
        (
            "mistral-fim-prompt",
            "/v1/fim/completions",
            r#"{"model":"codestral-latest","prompt":"key = '$S'"}"#,
        ),
        (
            "azure-deployment-chat",
            "/openai/deployments/gpt4o/chat/completions?api-version=2024-10-21",
            r#"{"messages":[{"role":"user","content":"$S"}]}"#,
        ),
        (
            "unknown-endpoint",
            "/v1/unknown-endpoint",
            r#"{"anything":"$S"}"#,
        ),
        (
            "unknown-version",
            "/v2/new/thing",
            r#"{"deep":{"list":[{"x":"$S"}]}}"#,
        ),
        (
            "json-top-level-array",
            "/v1/unknown-array",
            r#"[{"a":"$S"}]"#,
        ),
        ("json-top-level-string", "/v1/unknown-string", r#""$S""#),
    ];
    for (name, path, body) in oa_other {
        v.push(j(OA, name, path, body));
    }
    let an_cases: &[(&str, &str, String)] = &[
        ("messages-content-string", MSGS, anm(r#"{"role":"user","content":"deploy with $S"}"#)),
        ("messages-system-string", MSGS, an(r#""system":"Use $S""#)),
        ("messages-system-blocks", MSGS, an(r#""system":[{"type":"text","text":"$S","cache_control":{"type":"ephemeral"}}]"#)),
        ("messages-text-block", MSGS, anm(r#"{"role":"user","content":[{"type":"text","text":"$S"}]}"#)),
        ("messages-tool-use-input", MSGS, anm(r#"{"role":"user","content":"go"},{"role":"assistant","content":[{"type":"tool_use","id":"toolu_01","name":"f","input":{"token":"$S"}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_01","content":"ok"}]}"#)),
        ("messages-tool-use-input-key", MSGS, anm(r#"{"role":"user","content":"go"},{"role":"assistant","content":[{"type":"tool_use","id":"toolu_01","name":"f","input":{"$S":1}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_01","content":"ok"}]}"#)),
        ("messages-tool-use-id", MSGS, anm(r#"{"role":"user","content":"go"},{"role":"assistant","content":[{"type":"tool_use","id":"$S","name":"f","input":{}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"$S","content":"ok"}]}"#)),
        ("messages-tool-result-string", MSGS, anm(&AN_TOOL.replace("sunny", "$S"))),
        ("messages-tool-result-blocks", MSGS, anm(&AN_TOOL.replace(r#""content":"sunny""#, r#""content":[{"type":"text","text":"$S"}]"#))),
        ("messages-tool-result-error", MSGS, anm(&AN_TOOL.replace(r#""content":"sunny""#, r#""is_error":true,"content":"failed: $S""#))),
        ("messages-tools-description", MSGS, an(r#""tools":[{"name":"f","description":"$S","input_schema":{"type":"object","properties":{}}}]"#)),
        ("messages-tools-schema-description", MSGS, an(r#""tools":[{"name":"f","input_schema":{"type":"object","properties":{"k":{"type":"string","description":"$S"}}}}]"#)),
        ("messages-tools-name", MSGS, an(r#""tools":[{"name":"$S","input_schema":{"type":"object"}}]"#)),
        ("messages-tool-choice-name", MSGS, an(r#""tools":[{"name":"f","input_schema":{"type":"object"}}],"tool_choice":{"type":"tool","name":"$S"}"#)),
        ("messages-metadata-user-id", MSGS, an(r#""metadata":{"user_id":"$S"}"#)),
        ("messages-stop-sequences", MSGS, an(r#""stop_sequences":["$S"]"#)),
        ("messages-document-text-source", MSGS, anm(r#"{"role":"user","content":[{"type":"document","source":{"type":"text","media_type":"text/plain","data":"$S"},"title":"t"},{"type":"text","text":"summarise"}]}"#)),
        ("messages-document-base64-text", MSGS, anm(r#"{"role":"user","content":[{"type":"document","source":{"type":"base64","media_type":"text/plain","data":"$B64S"}},{"type":"text","text":"summarise"}]}"#)),
        ("messages-document-content-source", MSGS, anm(r#"{"role":"user","content":[{"type":"document","source":{"type":"content","content":[{"type":"text","text":"$S"}]}}]}"#)),
        ("messages-document-title", MSGS, anm(r#"{"role":"user","content":[{"type":"document","source":{"type":"text","media_type":"text/plain","data":"x"},"title":"$S"}]}"#)),
        ("messages-document-context", MSGS, anm(r#"{"role":"user","content":[{"type":"document","source":{"type":"text","media_type":"text/plain","data":"x"},"context":"$S","citations":{"enabled":true}}]}"#)),
        ("messages-search-result-content", MSGS, anm(r#"{"role":"user","content":[{"type":"search_result","source":"https://docs.example.com/a","title":"A","content":[{"type":"text","text":"$S"}]}]}"#)),
        ("messages-search-result-source", MSGS, anm(r#"{"role":"user","content":[{"type":"search_result","source":"https://docs.example.com/?t=$S","title":"A","content":[{"type":"text","text":"x"}]}]}"#)),
        ("messages-search-result-title", MSGS, anm(r#"{"role":"user","content":[{"type":"search_result","source":"https://docs.example.com/a","title":"$S","content":[{"type":"text","text":"x"}]}]}"#)),
        ("messages-tool-result-search-result", MSGS, anm(&AN_TOOL.replace(r#""content":"sunny""#, r#""content":[{"type":"search_result","source":"s","title":"t","content":[{"type":"text","text":"$S"}]}]"#))),
        ("messages-thinking-block", MSGS, anm(r#"{"role":"user","content":"a"},{"role":"assistant","content":[{"type":"thinking","thinking":"the key is $S","signature":"EqQBCgIYAhIM"},{"type":"text","text":"ok"}]},{"role":"user","content":"b"}"#)),
        ("messages-redacted-thinking", MSGS, anm(r#"{"role":"user","content":"a"},{"role":"assistant","content":[{"type":"redacted_thinking","data":"$S"},{"type":"text","text":"ok"}]},{"role":"user","content":"b"}"#)),
        ("messages-citations-cited-text", MSGS, anm(r#"{"role":"user","content":"a"},{"role":"assistant","content":[{"type":"text","text":"see","citations":[{"type":"char_location","cited_text":"$S","document_index":0,"document_title":"d","start_char_index":0,"end_char_index":5}]}]},{"role":"user","content":"b"}"#)),
        ("messages-mcp-servers-token", MSGS, an(r#""mcp_servers":[{"type":"url","url":"https://mcp.example.com/sse","name":"m","authorization_token":"$S"}]"#)),
        ("messages-image-url-source", MSGS, anm(r#"{"role":"user","content":[{"type":"image","source":{"type":"url","url":"https://img.example.com/i.png?k=$S"}}]}"#)),
        ("messages-stream-true", MSGS, r#"{"model":"claude-sonnet-4-5","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"$S"}]}"#.into()),
        ("messages-container-upload", MSGS, anm(r#"{"role":"user","content":[{"type":"container_upload","file_id":"$S"}]}"#)),
        ("count-tokens-content", "/v1/messages/count_tokens", anm(r#"{"role":"user","content":"$S"}"#)),
        ("count-tokens-system", "/v1/messages/count_tokens", an(r#""system":"$S""#)),
        ("complete-prompt", "/v1/complete", r#"{"model":"claude-2.1","prompt":"\n\nHuman: $S\n\nAssistant:","max_tokens_to_sample":16}"#.into()),
        ("messages-batches-params", "/v1/messages/batches", r#"{"requests":[{"custom_id":"r1","params":{"model":"claude-sonnet-4-5","max_tokens":8,"messages":[{"role":"user","content":"$S"}]}}]}"#.into()),
        ("messages-batches-custom-id", "/v1/messages/batches", r#"{"requests":[{"custom_id":"$S","params":{"model":"claude-sonnet-4-5","max_tokens":8,"messages":[{"role":"user","content":"x"}]}}]}"#.into()),
        ("anthropic-unknown-path", "/v1/experimental/thing", r#"{"x":"$S"}"#.into()),
        ("anthropic-openai-compat", "/v1/chat/completions", oam(r#"{"role":"user","content":"$S"}"#)),
    ];
    for (name, path, body) in an_cases {
        v.push(j(AN, name, path, body));
    }
    let gm_cases: &[(&str, &str, String)] = &[
        ("gemini-contents-text", GEN, gmc(r#"{"role":"user","parts":[{"text":"my key $S"}]}"#)),
        ("gemini-system-instruction", GEN, gm(r#""systemInstruction":{"parts":[{"text":"$S"}]}"#)),
        ("gemini-system-instruction-snake", GEN, gm(r#""system_instruction":{"parts":[{"text":"$S"}]}"#)),
        ("gemini-function-declaration-description", GEN, gm(r#""tools":[{"functionDeclarations":[{"name":"f","description":"$S","parameters":{"type":"OBJECT","properties":{}}}]}]"#)),
        ("gemini-function-param-description", GEN, gm(r#""tools":[{"functionDeclarations":[{"name":"f","parameters":{"type":"OBJECT","properties":{"k":{"type":"STRING","description":"$S"}}}}]}]"#)),
        ("gemini-function-call-args", GEN, gmc(r#"{"role":"user","parts":[{"text":"go"}]},{"role":"model","parts":[{"functionCall":{"name":"f","args":{"token":"$S"}}}]},{"role":"user","parts":[{"functionResponse":{"name":"f","response":{"ok":true}}}]}"#)),
        ("gemini-function-response", GEN, gmc(r#"{"role":"user","parts":[{"text":"go"}]},{"role":"model","parts":[{"functionCall":{"name":"f","args":{}}}]},{"role":"user","parts":[{"functionResponse":{"name":"f","response":{"result":"$S"}}}]}"#)),
        ("gemini-inline-data-text", GEN, gmc(r#"{"role":"user","parts":[{"text":"read"},{"inlineData":{"mimeType":"text/plain","data":"$B64S"}}]}"#)),
        ("gemini-inline-data-snake", GEN, gmc(r#"{"role":"user","parts":[{"inline_data":{"mime_type":"text/plain","data":"$B64S"}}]}"#)),
        ("gemini-inline-data-csv", GEN, gmc(r#"{"role":"user","parts":[{"inlineData":{"mimeType":"text/csv","data":"$B64S"}}]}"#)),
        ("gemini-inline-data-markdown", GEN, gmc(r#"{"role":"user","parts":[{"inlineData":{"mimeType":"text/markdown","data":"$B64S"}}]}"#)),
        ("gemini-inline-data-html", GEN, gmc(r#"{"role":"user","parts":[{"inlineData":{"mimeType":"text/html; charset=utf-8","data":"$B64S"}}]}"#)),
        ("gemini-inline-data-uppercase-mime", GEN, gmc(r#"{"role":"user","parts":[{"inlineData":{"mimeType":"TEXT/PLAIN","data":"$B64S"}}]}"#)),
        ("gemini-file-data-uri", GEN, gmc(r#"{"role":"user","parts":[{"fileData":{"mimeType":"text/plain","fileUri":"https://storage.example.com/$S"}}]}"#)),
        ("gemini-stop-sequences", GEN, gm(r#""generationConfig":{"stopSequences":["$S"]}"#)),
        ("gemini-response-schema-description", GEN, gm(r#""generationConfig":{"responseMimeType":"application/json","responseSchema":{"type":"OBJECT","description":"$S","properties":{}}}"#)),
        ("gemini-response-json-schema", GEN, gm(r#""generationConfig":{"responseMimeType":"application/json","responseJsonSchema":{"type":"object","properties":{"k":{"enum":["$S"]}}}}"#)),
        ("gemini-cached-content-name", GEN, gm(r#""cachedContent":"cachedContents/$S""#)),
        ("gemini-labels", GEN, gm(r#""labels":{"team":"$S"}"#)),
        ("gemini-thought-signature", GEN, gmc(r#"{"role":"user","parts":[{"text":"a"}]},{"role":"model","parts":[{"text":"x","thoughtSignature":"$S"}]},{"role":"user","parts":[{"text":"b"}]}"#)),
        ("gemini-executable-code", GEN, gmc(r#"{"role":"model","parts":[{"executableCode":{"language":"PYTHON","code":"k = '$S'"}}]},{"role":"user","parts":[{"text":"run it"}]}"#)),
        ("gemini-code-execution-result", GEN, gmc(r#"{"role":"model","parts":[{"codeExecutionResult":{"outcome":"OUTCOME_OK","output":"$S"}}]},{"role":"user","parts":[{"text":"ok"}]}"#)),
        ("gemini-stream-sse", "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", gmc(r#"{"role":"user","parts":[{"text":"$S"}]}"#)),
        ("gemini-stream-json-array", "/v1beta/models/gemini-2.5-flash:streamGenerateContent", gmc(r#"{"role":"user","parts":[{"text":"$S"}]}"#)),
        ("gemini-count-tokens", "/v1beta/models/gemini-2.5-flash:countTokens", gmc(r#"{"role":"user","parts":[{"text":"$S"}]}"#)),
        ("gemini-count-tokens-nested", "/v1beta/models/gemini-2.5-flash:countTokens", r#"{"generateContentRequest":{"model":"models/gemini-2.5-flash","contents":[{"role":"user","parts":[{"text":"$S"}]}]}}"#.into()),
        ("gemini-embed-content", "/v1beta/models/gemini-embedding-001:embedContent", r#"{"model":"models/gemini-embedding-001","content":{"parts":[{"text":"$S"}]}}"#.into()),
        ("gemini-embed-title", "/v1beta/models/gemini-embedding-001:embedContent", r#"{"content":{"parts":[{"text":"x"}]},"taskType":"RETRIEVAL_DOCUMENT","title":"$S"}"#.into()),
        ("gemini-batch-embed", "/v1beta/models/gemini-embedding-001:batchEmbedContents", r#"{"requests":[{"model":"models/gemini-embedding-001","content":{"parts":[{"text":"$S"}]}}]}"#.into()),
        ("gemini-cached-contents-create", "/v1beta/cachedContents", r#"{"model":"models/gemini-2.5-flash","contents":[{"role":"user","parts":[{"text":"$S"}]}],"ttl":"300s"}"#.into()),
        ("gemini-cached-contents-system", "/v1beta/cachedContents", r#"{"model":"models/gemini-2.5-flash","systemInstruction":{"parts":[{"text":"$S"}]},"contents":[]}"#.into()),
        ("gemini-cached-contents-display-name", "/v1beta/cachedContents", r#"{"model":"models/gemini-2.5-flash","displayName":"$S","contents":[]}"#.into()),
        ("gemini-batch-generate", "/v1beta/models/gemini-2.5-flash:batchGenerateContent", r#"{"batch":{"displayName":"b","inputConfig":{"requests":{"requests":[{"request":{"contents":[{"parts":[{"text":"$S"}]}]},"metadata":{"key":"r1"}}]}}}}"#.into()),
        ("gemini-v1-generate", "/v1/models/gemini-2.5-flash:generateContent", gmc(r#"{"role":"user","parts":[{"text":"$S"}]}"#)),
        ("gemini-predict-imagen", "/v1beta/models/imagen-4.0-generate-001:predict", r#"{"instances":[{"prompt":"$S"}],"parameters":{"sampleCount":1}}"#.into()),
        ("gemini-predict-long-running", "/v1beta/models/veo-3.0-generate-001:predictLongRunning", r#"{"instances":[{"prompt":"$S"}]}"#.into()),
        ("gemini-tuned-models", "/v1beta/tunedModels", r#"{"baseModel":"models/gemini-1.5-flash-001-tuning","tuningTask":{"trainingData":{"examples":{"examples":[{"textInput":"$S","output":"x"}]}}}}"#.into()),
        ("gemini-generate-answer", "/v1beta/models/aqa:generateAnswer", r#"{"contents":[{"parts":[{"text":"q"}]}],"answerStyle":"ABSTRACTIVE","inlinePassages":{"passages":[{"id":"p1","content":{"parts":[{"text":"$S"}]}}]}}"#.into()),
        ("gemini-openai-compat", "/v1beta/openai/chat/completions", oam(r#"{"role":"user","content":"$S"}"#)),
        ("gemini-unknown-method", "/v1beta/models/gemini-2.5-flash:doSomethingNew", r#"{"a":"$S"}"#.into()),
        ("gemini-tuned-model-generate", "/v1beta/tunedModels/my-model:generateContent", gmc(r#"{"parts":[{"text":"$S"}]}"#)),
    ];
    for (name, path, body) in gm_cases {
        v.push(j(GM, name, path, body));
    }
    v
}

/// Forms, multipart, JSONL and text bodies.
pub fn other_bodies() -> Vec<Case> {
    let mut v = vec![
        b(
            OA,
            "form-field-value",
            "/v1/unknown-form",
            "application/x-www-form-urlencoded",
            "prompt=$S&x=1",
        ),
        b(
            OA,
            "form-field-pct",
            "/v1/unknown-form",
            "application/x-www-form-urlencoded",
            "prompt=$PS&x=1",
        ),
        b(
            OA,
            "form-field-name",
            "/v1/unknown-form",
            "application/x-www-form-urlencoded",
            "$S=1&x=2",
        ),
        b(
            OA,
            "form-plus-spaces",
            "/v1/unknown-form",
            "application/x-www-form-urlencoded",
            "prompt=my+key+is+$S",
        ),
        b(
            OA,
            "form-repeated-field",
            "/v1/unknown-form",
            "application/x-www-form-urlencoded",
            "a=1&a=$S&a=3",
        ),
        b(
            OA,
            "form-charset-param",
            "/v1/unknown-form",
            "application/x-www-form-urlencoded; charset=UTF-8",
            "q=$S",
        ),
        b(
            OA,
            "text-plain-unknown-path",
            "/v1/notes",
            "text/plain",
            "note: $S",
        ),
        b(
            OA,
            "text-markdown",
            "/v1/notes",
            "text/markdown",
            "# notes\n\n`$S`\n",
        ),
        b(
            OA,
            "text-xml",
            "/v1/notes",
            "application/xml",
            "<a><key>$S</key></a>",
        ),
        b(
            OA,
            "text-yaml",
            "/v1/notes",
            "application/yaml",
            "key: $S\n",
        ),
        b(
            OA,
            "text-csv",
            "/v1/notes",
            "text/csv",
            "name,key\nprod,$S\n",
        ),
        b(OA, "text-no-content-type", "/v1/notes", "", "the key is $S"),
        b(
            OA,
            "text-octet-stream",
            "/v1/notes",
            "application/octet-stream",
            "the key is $S",
        ),
        b(
            OA,
            "json-sent-as-text-plain",
            CHAT,
            "text/plain",
            &oam(r#"{"role":"user","content":"$S"}"#),
        ),
        b(
            OA,
            "json-without-content-type",
            CHAT,
            "",
            &oam(r#"{"role":"user","content":"$S"}"#),
        ),
        b(
            OA,
            "json-sent-as-form",
            CHAT,
            "application/x-www-form-urlencoded",
            &oam(r#"{"role":"user","content":"$S"}"#),
        ),
        b(
            OA,
            "json-vendor-type",
            CHAT,
            "application/vnd.api+json",
            &oam(r#"{"role":"user","content":"$S"}"#),
        ),
        b(
            OA,
            "json-invalid-with-secret",
            CHAT,
            "application/json",
            r#"{"model":"gpt-4o","messages":[{"role":"user","content":"$S"}"#,
        ),
        b(
            OA,
            "json-trailing-garbage",
            CHAT,
            "application/json",
            &format!("{} $S", oam(r#"{"role":"user","content":"hi"}"#)),
        ),
        b(
            OA,
            "json-utf8-bom",
            CHAT,
            "application/json",
            &format!("\u{feff}{}", oam(r#"{"role":"user","content":"$S"}"#)),
        ),
        b(
            OA,
            "json-comment",
            CHAT,
            "application/json",
            &format!("/* $S */{}", oam(r#"{"role":"user","content":"hi"}"#)),
        ),
        b(
            OA,
            "jsonl-body",
            "/v1/unknown-jsonl",
            "application/jsonl",
            "{\"a\":1}\n{\"b\":\"$S\"}\n",
        ),
        b(
            OA,
            "ndjson-body",
            "/v1/unknown-jsonl",
            "application/x-ndjson",
            "{\"a\":1}\n{\"b\":\"$S\"}\n",
        ),
        b(
            OA,
            "jsonl-crlf",
            "/v1/unknown-jsonl",
            "application/jsonl",
            "{\"a\":1}\r\n{\"b\":\"$S\"}\r\n",
        ),
        b(
            OA,
            "jsonl-escaped",
            "/v1/unknown-jsonl",
            "application/jsonl",
            "{\"a\":1}\n{\"b\":\"$ES\"}\n",
        ),
        b(
            OA,
            "jsonl-no-final-newline",
            "/v1/unknown-jsonl",
            "application/jsonl",
            "{\"a\":1}\n{\"b\":\"$S\"}",
        ),
        b(
            GM,
            "gemini-upload-media",
            "/upload/v1beta/files?uploadType=media",
            "text/plain",
            "notes: $S",
        ),
        b(AN, "anthropic-text-body", "/v1/notes", "text/plain", "$S"),
    ];
    let line = |c: &str| {
        format!(
            r#"{{"custom_id":"r{c}","method":"POST","url":"/v1/chat/completions","body":{{"model":"gpt-4o","messages":[{{"role":"user","content":"{c}"}}]}}}}"#
        )
    };
    let jsonl = format!("{}\n{}\n{}\n", line("one"), line("key $S"), line("three"));
    let jsonl_esc = format!("{}\n{}\n", line("one"), line("key $ES"));
    v.extend([
        mp(OA, "files-upload-jsonl", "/v1/files", &[
            ("Content-Disposition: form-data; name=\"purpose\"", "batch"),
            ("Content-Disposition: form-data; name=\"file\"; filename=\"batch.jsonl\"\r\nContent-Type: application/jsonl", &jsonl),
        ]),
        mp(OA, "files-upload-octet-stream", "/v1/files", &[
            ("Content-Disposition: form-data; name=\"purpose\"", "batch"),
            ("Content-Disposition: form-data; name=\"file\"; filename=\"batch.jsonl\"\r\nContent-Type: application/octet-stream", &jsonl),
        ]),
        mp(OA, "files-upload-no-part-type", "/v1/files", &[
            ("Content-Disposition: form-data; name=\"purpose\"", "batch"),
            ("Content-Disposition: form-data; name=\"file\"; filename=\"batch.jsonl\"", &jsonl),
        ]),
        mp(OA, "files-upload-filename", "/v1/files", &[
            ("Content-Disposition: form-data; name=\"purpose\"", "assistants"),
            ("Content-Disposition: form-data; name=\"file\"; filename=\"$S.txt\"\r\nContent-Type: text/plain", "hello"),
        ]),
        mp(OA, "files-upload-purpose-field", "/v1/files", &[
            ("Content-Disposition: form-data; name=\"purpose\"", "$S"),
            ("Content-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\nContent-Type: text/plain", "hello"),
        ]),
        mp(OA, "files-upload-fine-tune", "/v1/files", &[
            ("Content-Disposition: form-data; name=\"purpose\"", "fine-tune"),
            ("Content-Disposition: form-data; name=\"file\"; filename=\"train.jsonl\"\r\nContent-Type: application/jsonl", "{\"messages\":[{\"role\":\"user\",\"content\":\"q\"},{\"role\":\"assistant\",\"content\":\"use $S\"}]}\n"),
        ]),
        mp(OA, "files-upload-escaped-line", "/v1/files", &[
            ("Content-Disposition: form-data; name=\"purpose\"", "batch"),
            ("Content-Disposition: form-data; name=\"file\"; filename=\"batch.jsonl\"\r\nContent-Type: application/jsonl", &jsonl_esc),
        ]),
        mp(OA, "files-upload-text-plain", "/v1/files", &[
            ("Content-Disposition: form-data; name=\"purpose\"", "user_data"),
            ("Content-Disposition: form-data; name=\"file\"; filename=\"notes.txt\"\r\nContent-Type: text/plain; charset=utf-8", "notes\n$S\n"),
        ]),
        mp(OA, "files-upload-base64-part", "/v1/files", &[
            ("Content-Disposition: form-data; name=\"purpose\"", "user_data"),
            ("Content-Disposition: form-data; name=\"file\"; filename=\"notes.txt\"\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64", "$B64S"),
        ]),
        mp(OA, "uploads-part-data", "/v1/uploads/upload_abc/parts", &[
            ("Content-Disposition: form-data; name=\"data\"; filename=\"part\"\r\nContent-Type: application/octet-stream", &jsonl),
        ]),
        mp(OA, "audio-transcriptions-prompt", "/v1/audio/transcriptions", &[
            ("Content-Disposition: form-data; name=\"model\"", "whisper-1"),
            ("Content-Disposition: form-data; name=\"prompt\"", "vocabulary: $S"),
            ("Content-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav", "RIFF\u{1}\u{0}\u{0}\u{0}WAVEfmt "),
        ]),
        mp(OA, "audio-translations-prompt", "/v1/audio/translations", &[
            ("Content-Disposition: form-data; name=\"model\"", "whisper-1"),
            ("Content-Disposition: form-data; name=\"prompt\"", "$S"),
            ("Content-Disposition: form-data; name=\"file\"; filename=\"a.mp3\"\r\nContent-Type: audio/mpeg", "ID3\u{3}\u{0}"),
        ]),
        mp(OA, "audio-transcriptions-language-field", "/v1/audio/transcriptions", &[
            ("Content-Disposition: form-data; name=\"model\"", "gpt-4o-transcribe"),
            ("Content-Disposition: form-data; name=\"language\"", "$S"),
            ("Content-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav", "RIFF"),
        ]),
        mp(OA, "images-edits-prompt", "/v1/images/edits", &[
            ("Content-Disposition: form-data; name=\"model\"", "gpt-image-1"),
            ("Content-Disposition: form-data; name=\"prompt\"", "draw $S"),
            ("Content-Disposition: form-data; name=\"image[]\"; filename=\"a.png\"\r\nContent-Type: image/png", "\u{89}PNG\r\n"),
        ]),
        mp(OA, "images-variations-user", "/v1/images/variations", &[
            ("Content-Disposition: form-data; name=\"user\"", "$S"),
            ("Content-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\nContent-Type: image/png", "\u{89}PNG\r\n"),
        ]),
        mp(OA, "multipart-field-name", "/v1/unknown-upload", &[
            ("Content-Disposition: form-data; name=\"$S\"", "x"),
        ]),
        mp(OA, "multipart-nested-mixed", "/v1/unknown-upload", &[
            ("Content-Disposition: form-data; name=\"files\"\r\nContent-Type: multipart/mixed; boundary=inner-b", "--inner-b\r\nContent-Disposition: file; filename=\"a.txt\"\r\nContent-Type: text/plain\r\n\r\n$S\r\n--inner-b--"),
        ]),
        mp(OA, "multipart-json-part", "/v1/unknown-upload", &[
            ("Content-Disposition: form-data; name=\"meta\"\r\nContent-Type: application/json", "{\"k\":\"$ES\"}"),
        ]),
        mp(AN, "anthropic-files-upload", "/v1/files", &[
            ("Content-Disposition: form-data; name=\"file\"; filename=\"doc.txt\"\r\nContent-Type: text/plain", "doc $S"),
        ]),
        mp(AN, "anthropic-skills-upload", "/v1/skills", &[
            ("Content-Disposition: form-data; name=\"display_title\"", "$S"),
            ("Content-Disposition: form-data; name=\"files[]\"; filename=\"skill/SKILL.md\"\r\nContent-Type: text/markdown", "# skill"),
        ]),
    ]);
    // Quoted boundary, LF-only line ends, a preamble.
    {
        let name = "multipart-quoted-boundary-lf";
        let (text, planted) = fill(
            name,
            "preamble\n--qb\nContent-Disposition: form-data; name=\"prompt\"\n\n$S\n--qb--\n",
        );
        let mut c = Case::new(name, OA, "POST", "/v1/audio/transcriptions")
            .body("multipart/form-data; boundary=\"qb\"", text.into_bytes());
        c.planted = planted;
        v.push(c);
    }
    // Gemini's resumable/multipart upload: metadata JSON and the file, multipart/related.
    {
        let name = "gemini-upload-multipart-related";
        let (text, planted) = fill(
            name,
            "--rel-b\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{\"file\":{\"displayName\":\"$S\"}}\r\n--rel-b\r\nContent-Type: text/plain\r\n\r\nbody $T\r\n--rel-b--\r\n",
        );
        let mut c = Case::new(
            name,
            GM,
            "POST",
            "/upload/v1beta/files?uploadType=multipart",
        )
        .body("multipart/related; boundary=rel-b", text.into_bytes());
        c.planted = planted;
        v.push(c);
    }
    v
}

/// JSON escapes and duplicate keys: the contract is precise here.
pub fn json_spelling() -> Vec<Case> {
    let masked = Expect::Masked(None);
    let refused = Expect::Refused(None);
    let (_, a) = for_case("escape-every-char", false);
    let mut v = vec![
        j(OA, "escape-prefix-and-separators", CHAT, &oam(r#"{"role":"user","content":"$ES"}"#)).expect(masked.clone()),
        {
            let body = oam(&format!(r#"{{"role":"user","content":"{}"}}"#, super::codec::json_escape_all(&a)));
            Case::new("escape-every-char", OA, "POST", CHAT).json(&body).plant(&a).expect(masked.clone())
        },
        j(OA, "escape-in-object-key", CHAT, &oa(r#""metadata":{"$ES":"v"}"#)).expect(masked.clone()),
        j(OA, "escape-in-tool-description", CHAT, &oa(r#""tools":[{"type":"function","function":{"name":"f","description":"$ES"}}]"#)).expect(masked.clone()),
        j(AN, "escape-anthropic-system", MSGS, &an(r#""system":"$ES""#)).expect(masked.clone()),
        j(GM, "escape-gemini-text", GEN, &gmc(r#"{"parts":[{"text":"$ES"}]}"#)).expect(masked.clone()),
        j(OA, "escape-responses-input", "/v1/responses", r#"{"model":"gpt-4.1","input":"$ES"}"#).expect(masked.clone()),
        j(OA, "escape-embeddings", "/v1/embeddings", r#"{"model":"text-embedding-3-small","input":"$ES"}"#).expect(masked.clone()),
        j(OA, "dup-top-level-messages", CHAT, r#"{"model":"gpt-4o","messages":[{"role":"user","content":"$S"}],"messages":[{"role":"user","content":"hi"}]}"#).expect(refused.clone()),
        j(OA, "dup-nested-content", CHAT, r#"{"model":"gpt-4o","messages":[{"role":"user","content":"$S","content":"hi"}]}"#).expect(refused.clone()),
        j(OA, "dup-escaped-key-spelling", CHAT, r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi","\u0063ontent":"$S"}]}"#).expect(refused.clone()),
        j(OA, "dup-harmless-model", CHAT, r#"{"model":"gpt-4o","model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#).expect(refused.clone()),
        j(OA, "dup-in-tool-schema", CHAT, r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"f","description":"$S","description":"x"}}]}"#).expect(refused.clone()),
        j(OA, "dup-unknown-endpoint", "/v1/unknown-endpoint", r#"{"a":"$S","a":"b"}"#).expect(refused.clone()),
        j(AN, "dup-anthropic-system", MSGS, r#"{"model":"claude-sonnet-4-5","max_tokens":8,"system":"$S","system":"x","messages":[{"role":"user","content":"hi"}]}"#).expect(refused.clone()),
        j(GM, "dup-gemini-contents", GEN, r#"{"contents":[{"parts":[{"text":"$S"}]}],"contents":[{"parts":[{"text":"hi"}]}]}"#).expect(refused.clone()),
        j(OA, "dup-responses-input", "/v1/responses", r#"{"model":"gpt-4.1","input":"$S","input":"hi"}"#).expect(refused.clone()),
    ];
    // Invalid UTF-8 around a secret.
    {
        let name = "json-invalid-utf8";
        let (body, planted) = fill(name, &oam(r#"{"role":"user","content":"\u00ff $S"}"#));
        let mut bytes = body.into_bytes();
        let at = bytes.windows(6).position(|w| w == b"\\u00ff").unwrap();
        bytes.splice(at..at + 6, [0xff, 0xfe]);
        let mut c = Case::new(name, OA, "POST", CHAT).body("application/json", bytes);
        c.planted = planted;
        v.push(c);
    }
    // UTF-16 JSON, declared.
    {
        let name = "json-utf16le";
        let (body, planted) = fill(name, &oam(r#"{"role":"user","content":"$S"}"#));
        let bytes: Vec<u8> = body.encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
        let mut c =
            Case::new(name, OA, "POST", CHAT).body("application/json; charset=utf-16le", bytes);
        c.planted = planted;
        v.push(c);
    }
    v
}

/// Bodies the gateway cannot read must not reach the provider.
pub fn unreadable() -> Vec<Case> {
    let mut v = vec![];
    let raw = |name: &str, head: &str, body: &[u8]| -> Case {
        let mut wire = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nAuthorization: Bearer sk-dummy-client\r\nContent-Type: application/json\r\nx-adv-case: {name}\r\n{head}\r\n"
        )
        .into_bytes();
        wire.extend_from_slice(body);
        let mut c = Case::new(name, OA, "POST", CHAT);
        c.raw = Some(wire);
        c
    };
    let (s1, p1) = fill(
        "frame-bad-chunk-size",
        &oam(r#"{"role":"user","content":"$S"}"#),
    );
    let mut c = raw(
        "frame-bad-chunk-size",
        "Transfer-Encoding: chunked\r\nConnection: close\r\n",
        format!("{:x}\r\n{s1}\r\nzz\r\nxx\r\n0\r\n\r\n", s1.len()).as_bytes(),
    );
    c.planted = p1;
    v.push(c.expect(Expect::NotForwarded));
    let (s2, p2) = fill(
        "frame-short-body",
        &oam(r#"{"role":"user","content":"$S"}"#),
    );
    let mut c = raw(
        "frame-short-body",
        &format!(
            "Content-Length: {}\r\nConnection: close\r\n",
            s2.len() + 100
        ),
        s2.as_bytes(),
    );
    c.planted = p2;
    c.half_close = true;
    v.push(c.expect(Expect::NotForwarded));
    let (s3, p3) = fill(
        "frame-two-content-lengths",
        &oam(r#"{"role":"user","content":"$S"}"#),
    );
    let mut c = raw(
        "frame-two-content-lengths",
        &format!(
            "Content-Length: {}\r\nContent-Length: 5\r\nConnection: close\r\n",
            s3.len()
        ),
        s3.as_bytes(),
    );
    c.planted = p3;
    v.push(c.expect(Expect::NotForwarded));
    // Smuggling: both framings; whichever is believed, nothing unmasked may pass.
    let (s4, p4) = fill("frame-cl-and-te", &oam(r#"{"role":"user","content":"$S"}"#));
    let mut c = raw(
        "frame-cl-and-te",
        "Content-Length: 4\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n",
        format!("{:x}\r\n{s4}\r\n0\r\n\r\n", s4.len()).as_bytes(),
    );
    c.planted = p4;
    v.push(c.expect(Expect::Clean { masked: true }));
    // A second request pipelined behind a first, on one connection.
    let (s5, p5) = fill(
        "frame-pipelined-second",
        &oam(r#"{"role":"user","content":"$S"}"#),
    );
    let first = oam(r#"{"role":"user","content":"hi"}"#);
    let mut wire = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nAuthorization: Bearer sk-dummy-client\r\nContent-Type: application/json\r\nx-adv-case: frame-pipelined-first\r\nContent-Length: {}\r\n\r\n{first}",
        first.len()
    )
    .into_bytes();
    wire.extend_from_slice(
        format!(
            "POST /v1/embeddings HTTP/1.1\r\nHost: api.openai.com\r\nAuthorization: Bearer sk-dummy-client\r\nContent-Type: application/json\r\nx-adv-case: frame-pipelined-second\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{s5}",
            s5.len()
        )
        .as_bytes(),
    );
    let mut c = Case::new("frame-pipelined-second", OA, "POST", CHAT);
    c.raw = Some(wire);
    c.planted = p5;
    v.push(c.expect(Expect::NoLeak));
    // Expect: 100-continue must not skip the body's inspection.
    let (s6, p6) = fill(
        "frame-expect-continue",
        &oam(r#"{"role":"user","content":"$S"}"#),
    );
    let mut c = raw(
        "frame-expect-continue",
        &format!(
            "Content-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n",
            s6.len()
        ),
        s6.as_bytes(),
    );
    c.planted = p6;
    v.push(c);
    // h2: the stream reset half way through the body.
    let mut c = j(
        OA,
        "frame-h2-reset-mid-body",
        CHAT,
        &oam(r#"{"role":"user","content":"$S"}"#),
    )
    .h2();
    c.reset = true;
    v.push(c.expect(Expect::NotForwarded));
    // h2: content-length larger than the DATA sent.
    let mut c = j(
        OA,
        "frame-h2-content-length-mismatch",
        CHAT,
        &oam(r#"{"role":"user","content":"$S"}"#),
    )
    .h2();
    let n = c.body.len() + 50;
    c = c.header("content-length", &n.to_string());
    v.push(c.expect(Expect::NotForwarded));
    v
}

/// One chat body with a secret, sent in many path spellings and with many methods.
pub fn paths() -> Vec<Case> {
    let chat = oam(r#"{"role":"user","content":"path case: $S"}"#);
    let anth = anm(r#"{"role":"user","content":"path case: $S"}"#);
    let gem = gmc(r#"{"parts":[{"text":"path case: $S"}]}"#);
    let long = format!("/v1/{}chat/completions", "./".repeat(1500));
    let oa_paths: &[(&str, &str)] = &[
        ("path-control", "/v1/chat/completions"),
        ("path-double-slash-lead", "//v1/chat/completions"),
        ("path-double-slash-mid", "/v1//chat/completions"),
        ("path-triple-slash", "///v1///chat///completions"),
        ("path-pct-c", "/v1/%63hat/completions"),
        (
            "path-pct-all",
            "/%76%31/%63%68%61%74/%63%6f%6d%70%6c%65%74%69%6f%6e%73",
        ),
        ("path-pct-upper-hex", "/v1/%63hat/%43ompletions"),
        ("path-pct-slash", "/v1/chat%2Fcompletions"),
        ("path-pct-slash-lower", "/v1%2fchat%2fcompletions"),
        ("path-upper-v1", "/V1/chat/completions"),
        ("path-upper-all", "/V1/CHAT/COMPLETIONS"),
        ("path-mixed-case", "/v1/Chat/Completions"),
        ("path-semicolon-param", "/v1/chat/completions;x"),
        ("path-semicolon-mid", "/v1;a=b/chat/completions"),
        ("path-trailing-slash", "/v1/chat/completions/"),
        ("path-dot-segments", "/v1/./chat/../chat/completions"),
        ("path-dot-dot-escape", "/v1/embeddings/../chat/completions"),
        ("path-pct-dot", "/v1/%2e/chat/%2E%2E/chat/completions"),
        ("path-dot-above-root", "/../v1/chat/completions"),
        ("path-empty-query", "/v1/chat/completions?"),
        ("path-query-stream", "/v1/chat/completions?stream=true"),
        ("path-pct-question", "/v1/chat/completions%3Fx=1"),
        ("path-fragment", "/v1/chat/completions#frag"),
        ("path-pct-nul", "/v1/chat/completions%00"),
        ("path-pct-space", "/v1/chat/completions%20"),
        ("path-backslash", "/v1\\chat\\completions"),
        ("path-pct-backslash", "/v1%5cchat%5ccompletions"),
        ("path-bare-chat", "/chat/completions"),
        ("path-openai-prefix", "/openai/v1/chat/completions"),
        ("path-dotjson-suffix", "/v1/chat/completions.json"),
        ("path-unknown", "/v9/whatever"),
        ("path-root", "/"),
        ("path-long", &long),
        ("path-double-pct", "/v1/%2563hat/completions"),
        ("path-utf8", "/v1/ch\u{e0}t/completions"),
        (
            "path-absolute-form",
            "https://api.openai.com/v1/chat/completions",
        ),
    ];
    let mut v = vec![];
    for (name, path) in oa_paths {
        v.push(j(OA, name, path, &chat));
    }
    let an_paths: &[(&str, &str)] = &[
        ("path-anthropic-control", "/v1/messages"),
        ("path-anthropic-double-slash", "//v1/messages"),
        ("path-anthropic-trailing-slash", "/v1/messages/"),
        ("path-anthropic-upper", "/V1/Messages"),
        ("path-anthropic-pct", "/v1/%6dessages"),
        ("path-anthropic-semicolon", "/v1/messages;foo"),
        ("path-anthropic-dot", "/v1/./messages"),
        ("path-anthropic-query", "/v1/messages?beta=true"),
    ];
    for (name, path) in an_paths {
        v.push(j(AN, name, path, &anth));
    }
    let gm_paths: &[(&str, &str)] = &[
        ("path-gemini-control", GEN),
        (
            "path-gemini-pct-colon",
            "/v1beta/models/gemini-2.5-flash%3AgenerateContent",
        ),
        (
            "path-gemini-double-slash",
            "/v1beta//models/gemini-2.5-flash:generateContent",
        ),
        (
            "path-gemini-method-case",
            "/v1beta/models/gemini-2.5-flash:GenerateContent",
        ),
        (
            "path-gemini-trailing-slash",
            "/v1beta/models/gemini-2.5-flash:generateContent/",
        ),
        (
            "path-gemini-dot",
            "/v1beta/models/./gemini-2.5-flash:generateContent",
        ),
        (
            "path-gemini-pct-method",
            "/v1beta/models/gemini-2.5-flash:%67enerateContent",
        ),
        (
            "path-gemini-semicolon",
            "/v1beta/models/gemini-2.5-flash:generateContent;x",
        ),
    ];
    for (name, path) in gm_paths {
        v.push(j(GM, name, path, &gem));
    }
    // The same spellings over h2 (where :path carries anything the client puts there).
    let again: Vec<Case> = v
        .iter()
        .filter(|c| {
            [
                "path-double-slash-lead",
                "path-pct-c",
                "path-pct-slash",
                "path-upper-v1",
                "path-semicolon-param",
                "path-trailing-slash",
                "path-dot-segments",
                "path-bare-chat",
                "path-unknown",
                "path-anthropic-pct",
                "path-gemini-pct-colon",
                "path-gemini-method-case",
            ]
            .contains(&c.name.as_str())
        })
        .cloned()
        .map(Case::h2)
        .collect();
    v.extend(again);
    for m in ["PUT", "PATCH", "DELETE", "GET", "OPTIONS", "FOO", "post"] {
        let mut c = j(OA, &format!("method-{}", m.to_lowercase()), CHAT, &chat);
        if m == "post" {
            c.name = "method-lowercase-post".into();
            let (body, planted) = fill(&c.name, &chat);
            c.body = body.into_bytes();
            c.planted = planted;
        }
        c.method = m.to_string();
        v.push(c);
    }
    for m in ["PUT", "GET"] {
        let mut c = j(
            AN,
            &format!("method-anthropic-{}", m.to_lowercase()),
            MSGS,
            &anth,
        );
        c.method = m.into();
        v.push(c);
    }
    for m in ["PATCH", "DELETE"] {
        let mut c = j(
            GM,
            &format!("method-gemini-{}", m.to_lowercase()),
            GEN,
            &gem,
        );
        c.method = m.into();
        v.push(c);
    }
    for m in ["PUT", "GET", "DELETE"] {
        let mut c = j(OA, &format!("method-{}", m.to_lowercase()), CHAT, &chat).h2();
        c.method = m.into();
        v.push(c);
    }
    // A body sent chunked, and one in many small chunks with the secret across them.
    let mut c = j(OA, "chunked-body", CHAT, &chat);
    c.chunked = true;
    v.push(c);
    let mut c = j(OA, "chunked-get-body", CHAT, &chat);
    c.method = "GET".into();
    c.chunked = true;
    v.push(c);
    v
}

fn enc(p: Provider, name: &str, path: &str, tpl: &str, encs: &[&str], header: &str) -> Case {
    let (body, planted) = fill(name, tpl);
    let mut bytes = body.into_bytes();
    for e in encs {
        bytes = compress(e, &bytes);
    }
    let mut c = Case::new(name, p, "POST", path).body("application/json", bytes);
    for h in header.split('\n').filter(|h| !h.is_empty()) {
        c = c.header("Content-Encoding", h);
    }
    c.planted = planted;
    c
}

/// Content-Encoding on requests: decoded and scanned, or refused (naming an unknown one).
pub fn encodings() -> Vec<Case> {
    let chat = oam(r#"{"role":"user","content":"compressed: $S"}"#);
    let clean = Expect::Clean { masked: true };
    let mut v = vec![
        enc(OA, "enc-gzip", CHAT, &chat, &["gzip"], "gzip").expect(Expect::Masked(None)),
        enc(OA, "enc-gzip", CHAT, &chat, &["gzip"], "gzip")
            .expect(Expect::Masked(None))
            .h2(),
        enc(
            AN,
            "enc-gzip-anthropic",
            MSGS,
            &anm(r#"{"role":"user","content":"$S"}"#),
            &["gzip"],
            "gzip",
        )
        .expect(Expect::Masked(None)),
        enc(
            GM,
            "enc-gzip-gemini",
            GEN,
            &gmc(r#"{"parts":[{"text":"$S"}]}"#),
            &["gzip"],
            "gzip",
        )
        .expect(Expect::Masked(None)),
        enc(
            OA,
            "enc-gzip-embeddings",
            "/v1/embeddings",
            r#"{"model":"text-embedding-3-small","input":"$S"}"#,
            &["gzip"],
            "gzip",
        )
        .expect(Expect::Masked(None)),
        enc(OA, "enc-identity", CHAT, &chat, &[], "identity").expect(Expect::Masked(None)),
        enc(OA, "enc-x-gzip", CHAT, &chat, &["gzip"], "x-gzip"),
        enc(OA, "enc-gzip-uppercase", CHAT, &chat, &["gzip"], "GZIP"),
        enc(OA, "enc-deflate-zlib", CHAT, &chat, &["zlib"], "deflate"),
        enc(OA, "enc-deflate-zlib", CHAT, &chat, &["zlib"], "deflate").h2(),
        enc(OA, "enc-deflate-raw", CHAT, &chat, &["raw"], "deflate"),
        enc(OA, "enc-br", CHAT, &chat, &["br"], "br"),
        enc(
            AN,
            "enc-br-anthropic",
            MSGS,
            &anm(r#"{"role":"user","content":"$S"}"#),
            &["br"],
            "br",
        ),
        enc(OA, "enc-zstd", CHAT, &chat, &["zstd"], "zstd"),
        enc(OA, "enc-zstd", CHAT, &chat, &["zstd"], "zstd").h2(),
        enc(
            GM,
            "enc-zstd-gemini",
            GEN,
            &gmc(r#"{"parts":[{"text":"$S"}]}"#),
            &["zstd"],
            "zstd",
        ),
        enc(
            OA,
            "enc-gzip-identity-list",
            CHAT,
            &chat,
            &["gzip"],
            "gzip, identity",
        ),
        enc(
            OA,
            "enc-double-gzip-list",
            CHAT,
            &chat,
            &["gzip", "gzip"],
            "gzip, gzip",
        ),
        enc(
            OA,
            "enc-double-gzip-two-headers",
            CHAT,
            &chat,
            &["gzip", "gzip"],
            "gzip\ngzip",
        ),
        enc(
            OA,
            "enc-gzip-then-br",
            CHAT,
            &chat,
            &["gzip", "br"],
            "gzip, br",
        ),
        enc(
            OA,
            "enc-zstd-then-gzip",
            CHAT,
            &chat,
            &["zstd", "gzip"],
            "zstd,gzip",
        ),
        enc(OA, "enc-unknown-xz", CHAT, &chat, &[], "xz").expect(Expect::Refused(Some("xz"))),
        enc(OA, "enc-unknown-compress", CHAT, &chat, &[], "compress")
            .expect(Expect::Refused(Some("compress"))),
        enc(OA, "enc-unknown-lz4", CHAT, &chat, &[], "lz4").expect(Expect::Refused(Some("lz4"))),
        enc(OA, "enc-unknown-bogus", CHAT, &chat, &[], "bogus-enc-7")
            .expect(Expect::Refused(Some("bogus-enc-7"))),
        enc(
            OA,
            "enc-unknown-in-list",
            CHAT,
            &chat,
            &["gzip"],
            "gzip, snappy",
        )
        .expect(Expect::Refused(Some("snappy"))),
        enc(
            AN,
            "enc-unknown-anthropic",
            MSGS,
            &anm(r#"{"role":"user","content":"$S"}"#),
            &[],
            "exi",
        )
        .expect(Expect::Refused(Some("exi"))),
        enc(
            GM,
            "enc-unknown-gemini",
            GEN,
            &gmc(r#"{"parts":[{"text":"$S"}]}"#),
            &[],
            "pack200-gzip",
        )
        .expect(Expect::Refused(Some("pack200-gzip"))),
        enc(OA, "enc-unknown-h2", CHAT, &chat, &[], "x-custom-enc")
            .expect(Expect::Refused(Some("x-custom-enc")))
            .h2(),
    ];
    // Declared gzip, body not gzip (plain JSON after the magic bytes).
    {
        let (body, planted) = fill("enc-gzip-corrupt", &chat);
        let mut bytes = vec![0x1f, 0x8b, 0x08, 0x00];
        bytes.extend_from_slice(body.as_bytes());
        let mut c = Case::new("enc-gzip-corrupt", OA, "POST", CHAT)
            .body("application/json", bytes)
            .header("Content-Encoding", "gzip");
        c.planted = planted;
        v.push(c.expect(Expect::Refused(None)));
    }
    // Declared gzip, stream cut short.
    {
        let (body, planted) = fill("enc-gzip-truncated", &chat);
        let mut bytes = compress("gzip", body.as_bytes());
        bytes.truncate(bytes.len() - 12);
        let mut c = Case::new("enc-gzip-truncated", OA, "POST", CHAT)
            .body("application/json", bytes)
            .header("Content-Encoding", "gzip");
        c.planted = planted;
        v.push(c.expect(Expect::Refused(None)));
    }
    // Plaintext after the gzip member.
    {
        let name = "enc-gzip-trailing-plaintext";
        let (body, _) = fill(name, &oam(r#"{"role":"user","content":"hi"}"#));
        let (tail, planted) = fill(name, " $S");
        let mut bytes = compress("gzip", body.as_bytes());
        bytes.extend_from_slice(tail.as_bytes());
        let mut c = Case::new(name, OA, "POST", CHAT)
            .body("application/json", bytes)
            .header("Content-Encoding", "gzip");
        c.planted = planted;
        v.push(c.expect(clean.clone()));
    }
    // gzip without saying so.
    {
        let name = "enc-gzip-undeclared";
        let (body, planted) = fill(name, &chat);
        let mut c = Case::new(name, OA, "POST", "/v1/unknown-binary").body(
            "application/octet-stream",
            compress("gzip", body.as_bytes()),
        );
        c.planted = planted;
        v.push(c.expect(Expect::Clean { masked: false }));
    }
    // Compressed multipart, form, JSONL, text.
    for (name, path, ctype, tpl) in [
        (
            "enc-gzip-multipart",
            "/v1/files",
            "multipart/form-data; boundary=zb",
            "--zb\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--zb\r\nContent-Disposition: form-data; name=\"file\"; filename=\"b.jsonl\"\r\nContent-Type: application/jsonl\r\n\r\n{\"k\":\"$S\"}\n\r\n--zb--\r\n",
        ),
        (
            "enc-gzip-form",
            "/v1/unknown-form",
            "application/x-www-form-urlencoded",
            "q=$S",
        ),
        (
            "enc-gzip-jsonl",
            "/v1/unknown-jsonl",
            "application/jsonl",
            "{\"a\":1}\n{\"b\":\"$S\"}\n",
        ),
        ("enc-gzip-text", "/v1/notes", "text/plain", "key $S"),
        ("enc-br-text", "/v1/notes", "text/plain", "key $S"),
    ] {
        let (body, planted) = fill(name, tpl);
        let e = if name.starts_with("enc-br") {
            "br"
        } else {
            "gzip"
        };
        let mut c = Case::new(name, OA, "POST", path)
            .body(ctype, compress(e, body.as_bytes()))
            .header("Content-Encoding", e);
        c.planted = planted;
        v.push(c.expect(clean.clone()));
    }
    // gzip over chunked transfer, and gzip as a transfer coding.
    let mut c =
        enc(OA, "enc-gzip-chunked", CHAT, &chat, &["gzip"], "gzip").expect(Expect::Masked(None));
    c.chunked = true;
    v.push(c);
    {
        let name = "enc-transfer-coding-gzip";
        let (body, planted) = fill(name, &chat);
        let gz = compress("gzip", body.as_bytes());
        let mut wire = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nAuthorization: Bearer sk-dummy-client\r\nContent-Type: application/json\r\nx-adv-case: {name}\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n{:x}\r\n",
            gz.len()
        )
        .into_bytes();
        wire.extend_from_slice(&gz);
        wire.extend_from_slice(b"\r\n0\r\n\r\n");
        let mut c = Case::new(name, OA, "POST", CHAT);
        c.raw = Some(wire);
        c.planted = planted;
        v.push(c.expect(clean.clone()));
    }
    let mut c = enc(OA, "enc-gzip-get", CHAT, &chat, &["gzip"], "gzip");
    c.method = "GET".into();
    v.push(c);
    v
}

/// Credentials by name and by value, in headers, queries, cookies, paths and trailers.
pub fn credentials() -> Vec<Case> {
    let oa_abs = || Expect::VaultOnly(vec!["openai-organization", "openai-project"]);
    let gm_abs = || Expect::VaultOnly(vec!["x-goog-user-project"]);
    let an_abs = || Expect::VaultOnly(vec![]);
    let chat = oam(r#"{"role":"user","content":"hello"}"#);
    let anth = anm(r#"{"role":"user","content":"hello"}"#);
    let gem = gmc(r#"{"parts":[{"text":"hello"}]}"#);
    let s = |name: &str, k: Kind| secret(k, secrets::seed_of(name));
    let mut v = vec![];
    let oa = |name: &str| {
        Case::new(name, OA, "POST", CHAT)
            .json(&chat)
            .expect(oa_abs())
    };
    let anc = |name: &str| {
        Case::new(name, AN, "POST", MSGS)
            .json(&anth)
            .expect(an_abs())
    };
    let gmr = |name: &str, target: &str| {
        Case::new(name, GM, "POST", target)
            .json(&gem)
            .expect(gm_abs())
    };

    v.push(oa("cred-oa-control"));
    v.push(oa("cred-oa-control").h2());
    v.push(
        oa("cred-oa-name-lowercase")
            .without("authorization")
            .header("authorization", "Bearer sk-dummy"),
    );
    v.push(
        oa("cred-oa-name-uppercase")
            .without("authorization")
            .header("AUTHORIZATION", "Bearer sk-dummy"),
    );
    v.push(
        oa("cred-oa-scheme-lowercase")
            .without("authorization")
            .header("Authorization", "bearer sk-dummy"),
    );
    v.push(
        oa("cred-oa-no-scheme")
            .without("authorization")
            .header("Authorization", "sk-dummy"),
    );
    let n = "cred-oa-two-authorization";
    let x = s(n, Kind::Gh);
    v.push(
        oa(n)
            .header("Authorization", &format!("Bearer {x}"))
            .plant(&x),
    );
    let n = "cred-oa-two-authorization";
    let x = s(&format!("{n}@h2"), Kind::Gh);
    let mut c = oa(n).h2().header("authorization", &format!("Bearer {x}"));
    c.planted.push(x);
    v.push(c);
    let n = "cred-oa-basic-auth";
    let x = s(n, Kind::OpenAi);
    v.push(
        oa(n)
            .without("authorization")
            .header(
                "Authorization",
                &format!("Basic {}", b64(format!("user:{x}").as_bytes())),
            )
            .plant(&x),
    );
    for (n, h, k) in [
        ("cred-oa-x-api-key", "x-api-key", Kind::Stripe),
        ("cred-oa-azure-api-key", "api-key", Kind::OpenAi),
        ("cred-oa-x-goog-api-key", "x-goog-api-key", Kind::Gitlab),
        (
            "cred-oa-proxy-authorization",
            "Proxy-Authorization",
            Kind::Gh,
        ),
        ("cred-oa-custom-header-value", "X-Debug-Token", Kind::Gitlab),
        ("cred-oa-custom-header-slack", "X-Slack-Hook", Kind::Slack),
    ] {
        let x = s(n, k);
        let val = if h == "Proxy-Authorization" {
            format!("Basic {}", b64(format!("u:{x}").as_bytes()))
        } else {
            x.clone()
        };
        v.push(oa(n).header(h, &val).plant(&x));
    }
    let n = "cred-oa-header-embedded";
    let x = s(n, Kind::Stripe);
    v.push(
        oa(n)
            .header("X-Note", &format!("token is {x} ok"))
            .plant(&x),
    );
    for (n, q, k) in [
        ("cred-oa-query-key", "key=%s", Kind::OpenAi),
        ("cred-oa-query-api-key-dash", "api-key=%s", Kind::OpenAi),
        ("cred-oa-query-api_key", "api_key=%s", Kind::Stripe),
        ("cred-oa-query-x_api_key", "x_api_key=%s", Kind::Gh),
        ("cred-oa-query-X-Api-Key", "X-Api-Key=%s", Kind::Aws),
        ("cred-oa-query-KEY", "KEY=%s", Kind::Gitlab),
        ("cred-oa-query-pct-name", "k%65y=%s", Kind::Slack),
        ("cred-oa-query-pct-dash", "api%2Dkey=%s", Kind::OpenAi),
        ("cred-oa-query-pct-underscore", "api%5fkey=%s", Kind::Gh),
        ("cred-oa-query-second-question", "a=1?key=%s", Kind::Stripe),
        ("cred-oa-query-semicolon", "a=1;key=%s", Kind::Aws),
        ("cred-oa-query-any-name", "trace=%s", Kind::Aws),
        ("cred-oa-query-value-pct", "trace=%P", Kind::Gh),
        ("cred-oa-query-value-plus", "note=token+%s", Kind::Gitlab),
        ("cred-oa-query-repeated", "key=dummy&key=%s", Kind::OpenAi),
    ] {
        let x = s(n, k);
        let q = q.replace("%s", &x).replace("%P", &pct_all(&x));
        let mut c = oa(n).plant(&x);
        c.target = format!("{CHAT}?{q}");
        v.push(c);
    }
    let n = "cred-oa-query-any-name";
    let x = s(&format!("{n}@h2"), Kind::Gh);
    let mut c = oa(n).h2();
    c.target = format!("{CHAT}?trace={x}");
    c.planted.push(x);
    v.push(c);
    let n = "cred-oa-cookie";
    let x = s(n, Kind::Gh);
    v.push(oa(n).header("Cookie", &format!("session={x}")).plant(&x));
    let n = "cred-oa-cookie-among-others";
    let x = s(n, Kind::Slack);
    v.push(
        oa(n)
            .header("Cookie", &format!("a=1; tok={x}; b=2"))
            .plant(&x),
    );
    let n = "cred-oa-two-cookie-headers";
    let x = s(n, Kind::Aws);
    let mut c = oa(n)
        .h2()
        .header("cookie", "a=1")
        .header("cookie", &format!("t={x}"));
    c.planted.push(x);
    v.push(c);
    v.push(oa("cred-oa-organization").header("OpenAI-Organization", "org-adv123"));
    v.push(oa("cred-oa-project").header("OpenAI-Project", "proj_adv123"));
    v.push(
        oa("cred-oa-organization-lower")
            .h2()
            .header("openai-organization", "org-adv456")
            .header("openai-project", "proj_adv456"),
    );
    v.push(
        oa("cred-oa-no-credential")
            .without("authorization")
            .expect(Expect::NoCredential),
    );
    v.push(
        oa("cred-oa-no-credential")
            .without("authorization")
            .expect(Expect::NoCredential)
            .h2(),
    );
    v.push(
        Case::new("cred-oa-no-credential-get", OA, "GET", "/v1/models")
            .without("authorization")
            .expect(Expect::NoCredential),
    );
    // Trailers: chunked HTTP/1.1 and h2.
    for (n, h, k, h2) in [
        (
            "cred-oa-trailer-authorization",
            "Authorization",
            Kind::Gh,
            false,
        ),
        ("cred-oa-trailer-custom", "X-Token", Kind::Aws, false),
        (
            "cred-oa-trailer-authorization",
            "authorization",
            Kind::OpenAi,
            true,
        ),
        ("cred-oa-trailer-x-api-key", "x-api-key", Kind::Stripe, true),
        ("cred-oa-trailer-custom", "x-token", Kind::Gitlab, true),
    ] {
        let mut c = oa(n);
        if h2 {
            c = c.h2();
        }
        let x = s(&c.name, k);
        let val = if h.eq_ignore_ascii_case("authorization") {
            format!("Bearer {x}")
        } else {
            x.clone()
        };
        c.trailers.push((h.to_string(), val));
        c.chunked = !h2;
        if !h2 {
            c = c.header("Trailer", h);
        }
        c.planted.push(x);
        v.push(c);
    }
    // Path parameters carrying a credential: refused.
    for (n, method, path, k) in [
        (
            "cred-oa-path-file-id",
            "GET",
            "/v1/files/%s/content",
            Kind::OpenAi,
        ),
        (
            "cred-oa-path-thread-id",
            "POST",
            "/v1/threads/%s/messages",
            Kind::Gh,
        ),
        ("cred-oa-path-pct", "GET", "/v1/files/%P", Kind::Gh),
        ("cred-oa-path-model", "GET", "/v1/models/%s", Kind::Slack),
    ] {
        let x = s(n, k);
        let mut c = Case::new(
            n,
            OA,
            method,
            &path.replace("%s", &x).replace("%P", &pct_all(&x)),
        )
        .plant(&x)
        .expect(Expect::Refused(None));
        if method == "POST" {
            c = c.json(r#"{"role":"user","content":"hi"}"#);
        }
        v.push(c);
    }
    // Anthropic.
    v.push(anc("cred-an-control"));
    v.push(anc("cred-an-control").h2());
    v.push(
        anc("cred-an-name-mixed-case")
            .without("x-api-key")
            .header("X-Api-Key", "sk-ant-dummy"),
    );
    let n = "cred-an-two-x-api-key";
    let x = s(n, Kind::Gh);
    v.push(anc(n).header("x-api-key", &x).plant(&x));
    v.push(
        anc("cred-an-bearer-only")
            .without("x-api-key")
            .header("Authorization", "Bearer sk-ant-oat01-dummy"),
    );
    v.push(anc("cred-an-bearer-and-key").header("Authorization", "Bearer sk-ant-oat01-dummy"));
    let n = "cred-an-query-key";
    let x = s(n, Kind::OpenAi);
    let mut c = anc(n).plant(&x);
    c.target = format!("{MSGS}?key={x}");
    v.push(c);
    let n = "cred-an-custom-header-value";
    let x = s(n, Kind::Aws);
    v.push(anc(n).header("X-Trace", &x).plant(&x));
    v.push(
        anc("cred-an-no-credential")
            .without("x-api-key")
            .expect(Expect::NoCredential),
    );
    let n = "cred-an-trailer-x-api-key";
    let mut c = anc(n).h2();
    let x = s(&c.name, Kind::Gitlab);
    c.trailers.push(("x-api-key".into(), x.clone()));
    c.planted.push(x);
    v.push(c);
    let n = "cred-an-path-batch-id";
    let x = s(n, Kind::Gh);
    v.push(
        Case::new(n, AN, "GET", &format!("/v1/messages/batches/{x}"))
            .plant(&x)
            .expect(Expect::Refused(None)),
    );
    // Gemini.
    v.push(gmr("cred-gm-control", GEN));
    v.push(gmr("cred-gm-control", GEN).h2());
    v.push(
        gmr("cred-gm-name-uppercase", GEN)
            .without("x-goog-api-key")
            .header("X-GOOG-API-KEY", "dummy"),
    );
    v.push(gmr("cred-gm-query-key-only", &format!("{GEN}?key=dummy-q")).without("x-goog-api-key"));
    v.push(
        gmr("cred-gm-query-key-only", &format!("{GEN}?key=dummy-q"))
            .without("x-goog-api-key")
            .h2(),
    );
    v.push(gmr(
        "cred-gm-query-and-header",
        &format!("{GEN}?key=dummy-q"),
    ));
    v.push(gmr("cred-gm-query-KEY", &format!("{GEN}?KEY=dummy-q")).without("x-goog-api-key"));
    v.push(
        gmr("cred-gm-query-pct-name", &format!("{GEN}?k%65y=dummy-q")).without("x-goog-api-key"),
    );
    v.push(
        gmr(
            "cred-gm-query-access-token",
            &format!("{GEN}?access_token=ya29.dummy"),
        )
        .without("x-goog-api-key"),
    );
    v.push(
        gmr(
            "cred-gm-query-authorization",
            &format!("{GEN}?Authorization=Bearer%20ya29.dummy"),
        )
        .without("x-goog-api-key"),
    );
    v.push(
        gmr(
            "cred-gm-query-pct-access-token",
            &format!("{GEN}?access%5Ftoken=ya29.dummy"),
        )
        .without("x-goog-api-key"),
    );
    v.push(
        gmr("cred-gm-bearer-header", GEN)
            .without("x-goog-api-key")
            .header("Authorization", "Bearer ya29.dummy"),
    );
    v.push(
        gmr("cred-gm-x-api-key-header", GEN)
            .without("x-goog-api-key")
            .header("x-api-key", "dummy"),
    );
    v.push(gmr("cred-gm-user-project", GEN).header("x-goog-user-project", "my-billing-project"));
    v.push(
        gmr("cred-gm-user-project", GEN)
            .header("x-goog-user-project", "my-billing-project")
            .h2(),
    );
    v.push(gmr("cred-gm-key-twice", &format!("{GEN}?key=a1&key=b2")));
    v.push(
        gmr(
            "cred-gm-second-question",
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse?key=dummy-q",
        )
        .without("x-goog-api-key"),
    );
    v.push(
        gmr("cred-gm-no-credential", GEN)
            .without("x-goog-api-key")
            .expect(Expect::NoCredential),
    );
    v.push(
        gmr("cred-gm-no-credential", GEN)
            .without("x-goog-api-key")
            .expect(Expect::NoCredential)
            .h2(),
    );
    let n = "cred-gm-query-value-detector";
    let x = s(n, Kind::Gh);
    v.push(gmr(n, &format!("{GEN}?labels={x}")).plant(&x));
    let n = "cred-gm-query-key-secret-value";
    let x = s(n, Kind::Aws);
    v.push(
        gmr(n, &format!("{GEN}?key={x}"))
            .without("x-goog-api-key")
            .plant(&x),
    );
    let n = "cred-gm-trailer";
    let mut c = gmr(n, GEN).h2();
    let x = s(&c.name, Kind::Slack);
    c.trailers.push(("x-goog-api-key".into(), x.clone()));
    c.planted.push(x);
    v.push(c);
    let n = "cred-gm-path-model";
    let x = s(n, Kind::Aws);
    v.push(
        Case::new(
            n,
            GM,
            "POST",
            &format!("/v1beta/models/{x}:generateContent"),
        )
        .json(&gem)
        .plant(&x)
        .expect(Expect::Refused(None)),
    );
    let n = "cred-gm-path-cached";
    let x = s(n, Kind::Gh);
    v.push(
        Case::new(n, GM, "GET", &format!("/v1beta/cachedContents/{x}"))
            .plant(&x)
            .expect(Expect::Refused(None)),
    );
    v
}

//! Where prompt text sits in each API's request body, as JSON pointers (RFC 6901) to string
//! values, so the policy stage can scan and rewrite them in place (issue C) and re-encode valid
//! JSON. Tool-call arguments and tool results count as prompt text too: they carry what a model
//! or a tool produced and are sent to the provider like any message.

use serde_json::Value;

/// Endpoint labels (as the adapters name them) whose requests carry a prompt: scanned by the
/// policy stage, and refused when their body cannot be parsed (fail-closed).
pub const SCANNED_ENDPOINTS: &[&str] = &[
    "chat.completions",
    "completions",
    "embeddings",
    "responses",
    "messages",
    "messages.count_tokens",
    "complete",
    "generateContent",
    "streamGenerateContent",
    "countTokens",
    "embedContent",
];

fn esc(seg: &str) -> String {
    seg.replace('~', "~0").replace('/', "~1")
}

/// Every string leaf under `v`, as pointers below `base`.
pub fn string_leaves(v: &Value, base: &str, out: &mut Vec<String>) {
    match v {
        Value::String(_) => out.push(base.to_string()),
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                string_leaves(x, &format!("{base}/{i}"), out);
            }
        }
        Value::Object(o) => {
            for (k, x) in o {
                string_leaves(x, &format!("{base}/{}", esc(k)), out);
            }
        }
        _ => {}
    }
}

/// `content` that is a string, or an array of parts whose text sits in `text` fields
/// (OpenAI `{"type":"text","text":..}`, Anthropic text blocks, Responses `input_text`).
fn content(v: &Value, base: &str, out: &mut Vec<String>) {
    match v {
        Value::String(_) => out.push(base.to_string()),
        Value::Array(parts) => {
            for (j, p) in parts.iter().enumerate() {
                let pb = format!("{base}/{j}");
                match p {
                    Value::String(_) => out.push(pb),
                    Value::Object(o) => {
                        for key in ["text", "thinking"] {
                            if o.get(key).is_some_and(Value::is_string) {
                                out.push(format!("{pb}/{key}"));
                            }
                        }
                        // Anthropic tool_use input and tool_result content; Responses items.
                        if let Some(input) = o.get("input") {
                            string_leaves(input, &format!("{pb}/input"), out);
                        }
                        if let Some(c) = o.get("content") {
                            content(c, &format!("{pb}/content"), out);
                        }
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

/// OpenAI chat completions (also Azure and OpenAI-compatible hosts).
pub fn openai_chat(body: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(msgs) = body.get("messages").and_then(Value::as_array) {
        for (i, m) in msgs.iter().enumerate() {
            let b = format!("/messages/{i}");
            if let Some(c) = m.get("content") {
                content(c, &format!("{b}/content"), &mut out);
            }
            if let Some(calls) = m.get("tool_calls").and_then(Value::as_array) {
                for (k, c) in calls.iter().enumerate() {
                    if c.pointer("/function/arguments")
                        .is_some_and(Value::is_string)
                    {
                        out.push(format!("{b}/tool_calls/{k}/function/arguments"));
                    }
                }
            }
            if m.pointer("/function_call/arguments")
                .is_some_and(Value::is_string)
            {
                out.push(format!("{b}/function_call/arguments"));
            }
        }
    }
    // Legacy completions and embeddings: `prompt` / `input`, a string or strings.
    for key in ["prompt", "input"] {
        if let Some(v) = body.get(key) {
            string_leaves(v, &format!("/{key}"), &mut out);
        }
    }
    out
}

/// OpenAI Responses API: `instructions`, and `input` as a string or a list of items.
pub fn openai_responses(body: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if body.get("instructions").is_some_and(Value::is_string) {
        out.push("/instructions".into());
    }
    match body.get("input") {
        Some(Value::String(_)) => out.push("/input".into()),
        Some(Value::Array(items)) => {
            for (i, it) in items.iter().enumerate() {
                let b = format!("/input/{i}");
                if let Some(c) = it.get("content") {
                    content(c, &format!("{b}/content"), &mut out);
                }
                for key in ["arguments", "output"] {
                    if let Some(v) = it.get(key) {
                        string_leaves(v, &format!("{b}/{key}"), &mut out);
                    }
                }
            }
        }
        _ => {}
    }
    out
}

/// Anthropic Messages: `system` (string or text blocks) and every message's content blocks.
pub fn anthropic_messages(body: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(s) = body.get("system") {
        content(s, "/system", &mut out);
    }
    if let Some(msgs) = body.get("messages").and_then(Value::as_array) {
        for (i, m) in msgs.iter().enumerate() {
            if let Some(c) = m.get("content") {
                content(c, &format!("/messages/{i}/content"), &mut out);
            }
        }
    }
    out
}

/// Gemini: `contents[].parts[]` and `systemInstruction.parts[]` (text, function call args,
/// function responses).
pub fn gemini(body: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let parts = |v: &Value, base: &str, out: &mut Vec<String>| {
        if let Some(ps) = v.get("parts").and_then(Value::as_array) {
            for (j, p) in ps.iter().enumerate() {
                let pb = format!("{base}/parts/{j}");
                if p.get("text").is_some_and(Value::is_string) {
                    out.push(format!("{pb}/text"));
                }
                if let Some(a) = p.pointer("/functionCall/args") {
                    string_leaves(a, &format!("{pb}/functionCall/args"), out);
                }
                if let Some(r) = p.pointer("/functionResponse/response") {
                    string_leaves(r, &format!("{pb}/functionResponse/response"), out);
                }
            }
        }
    };
    if let Some(cs) = body.get("contents").and_then(Value::as_array) {
        for (i, c) in cs.iter().enumerate() {
            parts(c, &format!("/contents/{i}"), &mut out);
        }
    }
    if let Some(si) = body
        .get("systemInstruction")
        .or_else(|| body.get("system_instruction"))
    {
        let key = if body.get("systemInstruction").is_some() {
            "systemInstruction"
        } else {
            "system_instruction"
        };
        parts(si, &format!("/{key}"), &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn texts(body: &Value, ptrs: &[String]) -> Vec<String> {
        ptrs.iter()
            .map(|p| {
                body.pointer(p)
                    .and_then(Value::as_str)
                    .unwrap_or("<not a string>")
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn openai_chat_strings_parts_and_tool_calls() {
        let b = json!({"model": "m", "messages": [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": [{"type": "text", "text": "part"}, {"type": "image_url", "image_url": {"url": "x"}}]},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "1", "type": "function", "function": {"name": "f", "arguments": "{\"q\":1}"}}]},
            {"role": "tool", "tool_call_id": "1", "content": "tool out"}
        ]});
        assert_eq!(
            texts(&b, &openai_chat(&b)),
            vec!["sys", "part", "{\"q\":1}", "tool out"]
        );
        let e = json!({"model": "m", "input": ["a", "b/c"]});
        assert_eq!(texts(&e, &openai_chat(&e)), vec!["a", "b/c"]);
    }

    #[test]
    fn responses_input_forms() {
        let b = json!({"instructions": "be brief", "input": "hello"});
        assert_eq!(texts(&b, &openai_responses(&b)), vec!["be brief", "hello"]);
        let b = json!({"input": [
            {"role": "user", "content": [{"type": "input_text", "text": "q"}]},
            {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c", "output": "result"}
        ]});
        assert_eq!(texts(&b, &openai_responses(&b)), vec!["q", "{}", "result"]);
    }

    #[test]
    fn anthropic_system_blocks_tool_use_and_results() {
        let b = json!({"system": [{"type": "text", "text": "sys"}], "messages": [
            {"role": "user", "content": "plain"},
            {"role": "assistant", "content": [{"type": "thinking", "thinking": "hmm", "signature": "sig"}, {"type": "tool_use", "id": "t", "name": "f", "input": {"path": "/etc/x"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": "file body"}]}]}
        ]});
        assert_eq!(
            texts(&b, &anthropic_messages(&b)),
            vec!["sys", "plain", "hmm", "/etc/x", "file body"]
        );
        // Pointers escape '/' and '~' in keys.
        let b = json!({"messages": [{"role": "assistant", "content": [{"type": "tool_use", "input": {"a/b~c": "v"}}]}]});
        assert_eq!(
            anthropic_messages(&b),
            vec!["/messages/0/content/0/input/a~1b~0c".to_string()]
        );
        assert_eq!(texts(&b, &anthropic_messages(&b)), vec!["v"]);
    }

    #[test]
    fn gemini_contents_and_system_instruction() {
        let b = json!({"systemInstruction": {"parts": [{"text": "sys"}]}, "contents": [
            {"role": "user", "parts": [{"text": "hi"}, {"inlineData": {"mimeType": "image/png", "data": "AAAA"}}]},
            {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {"q": "x"}}}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {"out": "y"}}}]}
        ]});
        assert_eq!(texts(&b, &gemini(&b)), vec!["hi", "x", "y", "sys"]);
    }

    /// Request DLP over every shape: a secret planted in each prompt location is gone from the
    /// re-encoded body once every pointer is masked.
    #[test]
    fn a_secret_in_every_request_shape_is_masked() {
        use crate::policy::scan::{Ctx, Direction, PolicyConfig, Scanner};
        let k = "ghp_aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE3fG5";
        let sc = Scanner::new(&[], &PolicyConfig::default()).unwrap();
        let id = crate::redirect::identity::Identity::default();
        type Locator = fn(&Value) -> Vec<String>;
        let shapes: Vec<(&str, Locator, Value)> = vec![
            (
                "chat",
                openai_chat,
                json!({"model": "m", "messages": [
                {"role": "system", "content": format!("sys {k}")},
                {"role": "user", "content": [{"type": "text", "text": format!("part {k}")}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c", "type": "function",
                    "function": {"name": "f", "arguments": format!("{{\"token\": \"{k}\"}}")}}]},
                {"role": "tool", "tool_call_id": "c", "content": format!("result {k}")}]}),
            ),
            (
                "responses",
                openai_responses,
                json!({"instructions": format!("i {k}"), "input": [
                {"role": "user", "content": [{"type": "input_text", "text": format!("t {k}")}]},
                {"type": "function_call", "call_id": "c", "name": "f", "arguments": format!("a {k}")},
                {"type": "function_call_output", "call_id": "c", "output": format!("o {k}")}]}),
            ),
            (
                "anthropic",
                anthropic_messages,
                json!({"system": [{"type": "text", "text": format!("s {k}")}], "messages": [
                {"role": "user", "content": format!("u {k}")},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {"q": format!("q {k}")}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": format!("r {k}")}]}]}]}),
            ),
            (
                "gemini",
                gemini,
                json!({"systemInstruction": {"parts": [{"text": format!("s {k}")}]}, "contents": [
                {"role": "user", "parts": [{"text": format!("u {k}")}]},
                {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {"q": format!("q {k}")}}}]},
                {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {"r": format!("r {k}")}}}]}]}),
            ),
        ];
        for (label, pointers, mut body) in shapes {
            let planted = body.to_string().matches(k).count();
            let ps = pointers(&body);
            for p in ps {
                if let Some(Value::String(s)) = body.pointer_mut(&p) {
                    *s = sc
                        .mask(
                            s,
                            Ctx {
                                dir: Direction::Request,
                                id: &id,
                            },
                        )
                        .0;
                }
            }
            let out = body.to_string();
            assert!(!out.contains(k), "{label}: {out}");
            assert_eq!(
                out.matches("[MASKED:github-classic-token]").count(),
                planted,
                "{label}"
            );
        }
    }
}

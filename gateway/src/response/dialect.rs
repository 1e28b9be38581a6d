//! Where the streamed text sits in each provider's events, and which event closes a block.

use serde_json::Value;

/// A delta: a piece of a text stream identified by `key`, at `pointer` in the event.
pub struct Delta {
    pub key: String,
    pub pointer: String,
}

pub enum Shape {
    /// OpenAI chat / completions chunks (also Azure and compatible hosts).
    OpenAiChat,
    /// OpenAI Responses API typed events.
    Responses,
    /// Anthropic Messages stream events.
    Anthropic,
    /// Gemini `GenerateContentResponse` chunks.
    Gemini,
    Other,
}

pub fn shape(v: &Value) -> Shape {
    let typ = v.get("type").and_then(Value::as_str).unwrap_or("");
    if typ.starts_with("response.") {
        Shape::Responses
    } else if v.get("choices").is_some_and(Value::is_array) {
        Shape::OpenAiChat
    } else if v.get("candidates").is_some_and(Value::is_array) {
        Shape::Gemini
    } else if typ.starts_with("content_block_") || typ.starts_with("message_") || typ == "ping" {
        Shape::Anthropic
    } else {
        Shape::Other
    }
}

fn idx(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(0)
}

impl Shape {
    pub fn deltas(&self, v: &Value) -> Vec<Delta> {
        let mut out = Vec::new();
        match self {
            Shape::OpenAiChat => {
                for (i, c) in v["choices"].as_array().into_iter().flatten().enumerate() {
                    let ci = c.get("index").and_then(Value::as_u64).unwrap_or(i as u64);
                    if c.pointer("/delta/content").is_some_and(Value::is_string) {
                        out.push(Delta {
                            key: format!("c/{ci}"),
                            pointer: format!("/choices/{i}/delta/content"),
                        });
                    }
                    if c.pointer("/delta/reasoning_content")
                        .is_some_and(Value::is_string)
                    {
                        out.push(Delta {
                            key: format!("r/{ci}"),
                            pointer: format!("/choices/{i}/delta/reasoning_content"),
                        });
                    }
                    // Legacy completions stream `choices[].text`.
                    if c.get("text").is_some_and(Value::is_string) {
                        out.push(Delta {
                            key: format!("c/{ci}"),
                            pointer: format!("/choices/{i}/text"),
                        });
                    }
                    for (j, t) in c
                        .pointer("/delta/tool_calls")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .enumerate()
                    {
                        let ti = t.get("index").and_then(Value::as_u64).unwrap_or(j as u64);
                        if t.pointer("/function/arguments")
                            .is_some_and(Value::is_string)
                        {
                            out.push(Delta {
                                key: format!("t/{ci}/{ti}"),
                                pointer: format!(
                                    "/choices/{i}/delta/tool_calls/{j}/function/arguments"
                                ),
                            });
                        }
                    }
                }
            }
            Shape::Responses => {
                let typ = v["type"].as_str().unwrap_or("");
                if typ.ends_with(".delta") && v.get("delta").is_some_and(Value::is_string) {
                    out.push(Delta {
                        key: format!(
                            "{}/{}/{}",
                            typ.trim_end_matches(".delta"),
                            idx(v, "output_index"),
                            idx(v, "content_index")
                        ),
                        pointer: "/delta".into(),
                    });
                }
            }
            Shape::Anthropic => {
                if v["type"] == "content_block_delta" {
                    let i = idx(v, "index");
                    for field in ["text", "partial_json", "thinking"] {
                        if v.pointer(&format!("/delta/{field}"))
                            .is_some_and(Value::is_string)
                        {
                            out.push(Delta {
                                key: format!("a/{i}/{field}"),
                                pointer: format!("/delta/{field}"),
                            });
                        }
                    }
                }
            }
            Shape::Gemini => {
                for (i, c) in v["candidates"].as_array().into_iter().flatten().enumerate() {
                    let ci = c.get("index").and_then(Value::as_u64).unwrap_or(i as u64);
                    for (j, p) in c
                        .pointer("/content/parts")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .enumerate()
                    {
                        // Thought summaries and answer text are separate streams.
                        let thought = p.get("thought").and_then(Value::as_bool).unwrap_or(false);
                        if p.get("text").is_some_and(Value::is_string) {
                            out.push(Delta {
                                key: format!("g/{ci}/{}", if thought { "t" } else { "x" }),
                                pointer: format!("/candidates/{i}/content/parts/{j}/text"),
                            });
                        }
                    }
                }
            }
            Shape::Other => {}
        }
        out
    }

    /// Keys of the streams this event closes.
    pub fn closes(&self, v: &Value) -> Vec<String> {
        match self {
            Shape::OpenAiChat => v["choices"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
                .filter(|(_, c)| c.get("finish_reason").is_some_and(|f| !f.is_null()))
                .flat_map(|(i, c)| {
                    let ci = c.get("index").and_then(Value::as_u64).unwrap_or(i as u64);
                    let mut keys = vec![format!("c/{ci}"), format!("r/{ci}")];
                    // Tool calls of this choice: any index seen (at most a few).
                    keys.extend((0..16).map(|t| format!("t/{ci}/{t}")));
                    keys
                })
                .collect(),
            Shape::Responses => {
                let typ = v["type"].as_str().unwrap_or("");
                match typ.strip_suffix(".done") {
                    Some(base) => vec![format!(
                        "{base}/{}/{}",
                        idx(v, "output_index"),
                        idx(v, "content_index")
                    )],
                    None => Vec::new(),
                }
            }
            Shape::Anthropic => {
                if v["type"] == "content_block_stop" {
                    let i = idx(v, "index");
                    ["text", "partial_json", "thinking"]
                        .iter()
                        .map(|f| format!("a/{i}/{f}"))
                        .collect()
                } else {
                    Vec::new()
                }
            }
            Shape::Gemini => v["candidates"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
                .filter(|(_, c)| c.get("finishReason").is_some_and(|f| !f.is_null()))
                .flat_map(|(i, c)| {
                    let ci = c.get("index").and_then(Value::as_u64).unwrap_or(i as u64);
                    [format!("g/{ci}/x"), format!("g/{ci}/t")]
                })
                .collect(),
            Shape::Other => Vec::new(),
        }
    }
}

/// Make a copy of a delta event carry only its delta: no finish reason, no usage.
pub fn as_plain_delta(t: &mut Value) {
    if let Some(choices) = t.get_mut("choices").and_then(Value::as_array_mut) {
        for c in choices {
            if let Some(o) = c.as_object_mut() {
                o.insert("finish_reason".into(), Value::Null);
            }
        }
    }
    if let Some(cands) = t.get_mut("candidates").and_then(Value::as_array_mut) {
        for c in cands {
            if let Some(o) = c.as_object_mut() {
                o.remove("finishReason");
            }
        }
    }
    if let Some(o) = t.as_object_mut() {
        o.remove("usage");
        o.remove("usageMetadata");
    }
}

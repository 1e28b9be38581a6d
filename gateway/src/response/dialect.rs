//! Where the streamed text sits in each provider's events, and which event closes a block.
//!
//! A delta is a piece of one text stream that later events continue: its text is masked
//! across events (held back while a match could still form). Which strings are deltas is known
//! per event shape; under a shape's delta object every string whose field carries text
//! (`content`, `text`, `reasoning`, `refusal`, `transcript`, `arguments`, `cited_text`, ...) is
//! one, at whatever depth, keyed by its path (array positions by the element's `index`).
//! Logprob tokens are a stream of their own per choice. Every other string of an event is
//! masked whole, in that event.

use serde_json::Value;

/// A delta: a piece of a text stream identified by `key`, at `pointer` in the event.
pub struct Delta {
    pub key: String,
    pub pointer: String,
    /// `pointer` names an array of `{token, bytes, ...}` objects (logprobs), not a string.
    pub tokens: bool,
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
    /// Ollama-style NDJSON chunks (`message.content`, `response`), ended by `done: true`.
    Ollama,
    /// Cohere v2 chat stream events (`content-delta`, ...).
    Cohere,
    /// Bedrock ConverseStream events, as the event-stream decoder hands them over:
    /// `{"<event type>": payload}` ([`converse_event`]).
    BedrockConverse,
    /// Gemini Live (`BidiGenerateContent`) server messages: `serverContent` with the model's
    /// turn and the transcriptions, one WebSocket message each.
    GeminiLive,
    /// A model's native event inside a Bedrock InvokeModelWithResponseStream `chunk` that no
    /// other shape knows (Amazon Titan `outputText`, Meta Llama `generation`, Mistral
    /// `outputs[].text`, Cohere Command `text` / `generations[].text`, Anthropic Text
    /// Completions `completion`): its text fields stream across chunks. Only chosen for a
    /// chunk ([`chunk_shape`]): the same JSON as a whole answer is one document.
    BedrockChunk,
    Other,
}

/// Field names whose string values are streamed text in a Bedrock native chunk.
const CHUNK_TEXT_FIELDS: &[&str] = &[
    "outputText",
    "generation",
    "completion",
    "content",
    "text",
    "reasoning",
    "reasoning_content",
    "refusal",
    "transcript",
    "arguments",
    "partial_json",
    "thinking",
    "cited_text",
    "response",
];

/// The shape of a model's native event in a Bedrock `chunk`: a known shape if it has one
/// (Anthropic Messages, OpenAI-style `choices`, Nova's Converse-like events), otherwise
/// [`Shape::BedrockChunk`].
pub fn chunk_shape(v: &Value) -> Shape {
    match shape(v) {
        Shape::Other => Shape::BedrockChunk,
        s => s,
    }
}

/// A native chunk that ends its model's answer: a stop reason set (Titan
/// `completionReason`, Llama / Anthropic `stop_reason`, Mistral `outputs[].stop_reason`) or
/// Cohere's `is_finished`.
fn chunk_ends(v: &Value) -> bool {
    let set = |x: Option<&Value>| x.is_some_and(|x| !x.is_null());
    set(v.get("completionReason"))
        || set(v.get("stop_reason"))
        || v.get("is_finished") == Some(&Value::Bool(true))
        || v.get("outputs")
            .and_then(Value::as_array)
            .is_some_and(|o| o.iter().any(|x| set(x.get("stop_reason"))))
}

/// The event types of Bedrock's ConverseStream.
pub const CONVERSE_EVENTS: &[&str] = &[
    "messageStart",
    "contentBlockStart",
    "contentBlockDelta",
    "contentBlockStop",
    "messageStop",
    "metadata",
];

/// The event type of a ConverseStream event in its wrapped form (one key, a known type).
pub fn converse_event(v: &Value) -> Option<&str> {
    let o = v.as_object()?;
    if o.len() != 1 {
        return None;
    }
    let k = o.keys().next()?;
    CONVERSE_EVENTS.contains(&k.as_str()).then_some(k.as_str())
}

pub fn shape(v: &Value) -> Shape {
    let typ = v.get("type").and_then(Value::as_str).unwrap_or("");
    if converse_event(v).is_some() {
        Shape::BedrockConverse
    } else if typ.starts_with("response.")
        // Realtime's input transcription streams like the Responses API's typed events.
        || typ.starts_with("conversation.item.input_audio_transcription.")
    {
        Shape::Responses
    } else if v.get("choices").is_some_and(Value::is_array) {
        Shape::OpenAiChat
    } else if v.get("candidates").is_some_and(Value::is_array) {
        Shape::Gemini
    } else if live_content(v).is_some() {
        Shape::GeminiLive
    } else if typ.starts_with("content_block_") || typ.starts_with("message_") || typ == "ping" {
        Shape::Anthropic
    } else if typ.starts_with("content-")
        || typ.starts_with("tool-call-")
        || typ.starts_with("citation-")
    {
        Shape::Cohere
    } else if v.get("done").is_some_and(Value::is_boolean)
        && (v.get("message").is_some_and(Value::is_object)
            || v.get("response").is_some_and(Value::is_string))
    {
        Shape::Ollama
    } else {
        Shape::Other
    }
}

/// A Gemini Live server message's `serverContent` (camelCase as the API sends it, or
/// snake_case) and the key it sits under.
fn live_content(v: &Value) -> Option<(&'static str, &Value)> {
    ["serverContent", "server_content"]
        .into_iter()
        .find_map(|k| v.get(k).filter(|c| c.is_object()).map(|c| (k, c)))
}

/// Realtime audio deltas carry base64 audio, not text: each message's chunk must stay whole
/// (a client decodes every one alone), so it is masked whole like any other string.
fn is_audio_delta(typ: &str) -> bool {
    typ == "response.audio.delta" || typ == "response.output_audio.delta"
}

fn idx(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(0)
}

/// Field names whose string values are streamed text.
const TEXT_FIELDS: &[&str] = &[
    "content",
    "text",
    "reasoning",
    "reasoning_content",
    "refusal",
    "transcript",
    "arguments",
    "partial_json",
    "thinking",
    "cited_text",
    "response",
];

/// ConverseStream's `contentBlockDelta.delta` members stream text in these fields: `text`,
/// `reasoningContent.text`, `toolResult[].text`, `citation.sourceContent[].text`, and
/// `toolUse.input` (the tool's arguments as partial JSON, a piece per event). The others
/// (`reasoningContent.signature` and `.redactedContent`, `toolResult[].json`, citation titles
/// and locations, `image`) come whole in one event and are masked whole there. The common
/// text fields count too (a member this list does not know yet is masked across events if
/// its field carries text anywhere else).
const CONVERSE_TEXT_FIELDS: &[&str] = &[
    "text",
    "input",
    "content",
    "reasoning",
    "reasoning_content",
    "refusal",
    "transcript",
    "arguments",
    "partial_json",
    "thinking",
    "cited_text",
    "response",
];

fn esc(seg: &str) -> String {
    seg.replace('~', "~0").replace('/', "~1")
}

/// Every streamed-text string under `v` (at `pointer`), keyed below `key`.
fn text_leaves(v: &Value, pointer: &str, key: &str, field: Option<&str>, out: &mut Vec<Delta>) {
    fields_leaves(v, pointer, key, field, TEXT_FIELDS, out)
}

/// [`text_leaves`] with the dialect's own list of text-carrying field names.
fn fields_leaves(
    v: &Value,
    pointer: &str,
    key: &str,
    field: Option<&str>,
    fields: &[&str],
    out: &mut Vec<Delta>,
) {
    match v {
        Value::String(_) if field.is_some_and(|f| fields.contains(&f)) => out.push(Delta {
            key: key.to_string(),
            pointer: pointer.to_string(),
            tokens: false,
        }),
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                let k = x.get("index").and_then(Value::as_u64).unwrap_or(i as u64);
                fields_leaves(
                    x,
                    &format!("{pointer}/{i}"),
                    &format!("{key}/{k}"),
                    field,
                    fields,
                    out,
                );
            }
        }
        Value::Object(o) => {
            for (f, x) in o {
                fields_leaves(
                    x,
                    &format!("{pointer}/{}", esc(f)),
                    &format!("{key}/{}", esc(f)),
                    Some(f),
                    fields,
                    out,
                );
            }
        }
        _ => {}
    }
}

impl Shape {
    pub fn deltas(&self, v: &Value) -> Vec<Delta> {
        let mut out = Vec::new();
        match self {
            Shape::OpenAiChat => {
                for (i, c) in v["choices"].as_array().into_iter().flatten().enumerate() {
                    let ci = c.get("index").and_then(Value::as_u64).unwrap_or(i as u64);
                    if let Some(d) = c.get("delta") {
                        text_leaves(
                            d,
                            &format!("/choices/{i}/delta"),
                            &format!("ch/{ci}/d"),
                            None,
                            &mut out,
                        );
                    }
                    // Legacy completions stream `choices[].text`.
                    if c.get("text").is_some_and(Value::is_string) {
                        out.push(Delta {
                            key: format!("ch/{ci}/text"),
                            pointer: format!("/choices/{i}/text"),
                            tokens: false,
                        });
                    }
                    // A streamed chunk's logprobs (a whole answer's are masked as one text).
                    for part in ["content", "refusal"] {
                        if c.get("delta").is_some()
                            && c.pointer(&format!("/logprobs/{part}"))
                                .is_some_and(Value::is_array)
                        {
                            out.push(Delta {
                                key: format!("ch/{ci}/lp/{part}"),
                                pointer: format!("/choices/{i}/logprobs/{part}"),
                                tokens: true,
                            });
                        }
                    }
                }
            }
            Shape::Responses => {
                let typ = v["type"].as_str().unwrap_or("");
                if let Some(base) = typ.strip_suffix(".delta")
                    && !is_audio_delta(typ)
                {
                    let key = format!(
                        "{base}/{}/{}",
                        idx(v, "output_index"),
                        idx(v, "content_index")
                    );
                    if v.get("delta").is_some_and(Value::is_string) {
                        out.push(Delta {
                            key: format!("{key}/d"),
                            pointer: "/delta".into(),
                            tokens: false,
                        });
                    }
                    if v.get("logprobs").is_some_and(Value::is_array) {
                        out.push(Delta {
                            key: format!("{key}/lp"),
                            pointer: "/logprobs".into(),
                            tokens: true,
                        });
                    }
                }
            }
            Shape::Anthropic => {
                if v["type"] == "content_block_delta"
                    && let Some(d) = v.get("delta")
                {
                    text_leaves(
                        d,
                        "/delta",
                        &format!("a/{}", idx(v, "index")),
                        None,
                        &mut out,
                    );
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
                                tokens: false,
                            });
                        }
                    }
                }
            }
            Shape::Ollama => {
                if let Some(m) = v.get("message") {
                    text_leaves(m, "/message", "ol/m", None, &mut out);
                }
                for f in ["response", "thinking"] {
                    if v.get(f).is_some_and(Value::is_string) {
                        out.push(Delta {
                            key: format!("ol/{f}"),
                            pointer: format!("/{f}"),
                            tokens: false,
                        });
                    }
                }
            }
            Shape::Cohere => {
                if let Some(d) = v.get("delta") {
                    text_leaves(
                        d,
                        "/delta",
                        &format!("co/{}", idx(v, "index")),
                        None,
                        &mut out,
                    );
                }
            }
            Shape::BedrockConverse => {
                if let Some(ev) = v.get("contentBlockDelta")
                    && let Some(d) = ev.get("delta")
                {
                    fields_leaves(
                        d,
                        "/contentBlockDelta/delta",
                        &format!("bc/{}", idx(ev, "contentBlockIndex")),
                        None,
                        CONVERSE_TEXT_FIELDS,
                        &mut out,
                    );
                }
            }
            Shape::BedrockChunk => {
                fields_leaves(v, "", "bk", None, CHUNK_TEXT_FIELDS, &mut out);
            }
            Shape::GeminiLive => {
                let Some((k, c)) = live_content(v) else {
                    return out;
                };
                for (j, p) in c
                    .get("modelTurn")
                    .or_else(|| c.get("model_turn"))
                    .and_then(|t| t.get("parts"))
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .enumerate()
                {
                    let thought = p.get("thought").and_then(Value::as_bool).unwrap_or(false);
                    if p.get("text").is_some_and(Value::is_string) {
                        let turn = if c.get("modelTurn").is_some() {
                            "modelTurn"
                        } else {
                            "model_turn"
                        };
                        out.push(Delta {
                            key: format!("gl/{}", if thought { "t" } else { "x" }),
                            pointer: format!("/{k}/{turn}/parts/{j}/text"),
                            tokens: false,
                        });
                    }
                }
                for (f, key) in [
                    ("outputTranscription", "gl/ot"),
                    ("output_transcription", "gl/ot"),
                    ("inputTranscription", "gl/it"),
                    ("input_transcription", "gl/it"),
                ] {
                    if c.get(f)
                        .and_then(|t| t.get("text"))
                        .is_some_and(Value::is_string)
                    {
                        out.push(Delta {
                            key: key.into(),
                            pointer: format!("/{k}/{f}/text"),
                            tokens: false,
                        });
                    }
                }
            }
            Shape::Other => {}
        }
        out
    }

    /// Key prefixes of the streams this event closes.
    pub fn closes(&self, v: &Value) -> Vec<String> {
        match self {
            Shape::OpenAiChat => v["choices"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
                .filter(|(_, c)| c.get("finish_reason").is_some_and(|f| !f.is_null()))
                .map(|(i, c)| {
                    let ci = c.get("index").and_then(Value::as_u64).unwrap_or(i as u64);
                    format!("ch/{ci}/")
                })
                .collect(),
            Shape::Responses => {
                let typ = v["type"].as_str().unwrap_or("");
                match typ.strip_suffix(".done") {
                    Some(base) => vec![format!(
                        "{base}/{}/{}/",
                        idx(v, "output_index"),
                        idx(v, "content_index")
                    )],
                    // Realtime ends a response with `response.done`.
                    None if typ == "response.completed"
                        || typ == "response.failed"
                        || typ == "response.incomplete"
                        || typ == "response.done" =>
                    {
                        vec![String::new()]
                    }
                    None if typ == "conversation.item.input_audio_transcription.completed"
                        || typ == "conversation.item.input_audio_transcription.failed" =>
                    {
                        vec!["conversation.item.input_audio_transcription/".into()]
                    }
                    None => Vec::new(),
                }
            }
            Shape::Anthropic => match v["type"].as_str() {
                Some("content_block_stop") => vec![format!("a/{}/", idx(v, "index"))],
                Some("message_stop") => vec!["a/".into()],
                _ => Vec::new(),
            },
            Shape::Gemini => v["candidates"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
                .filter(|(_, c)| c.get("finishReason").is_some_and(|f| !f.is_null()))
                .map(|(i, c)| {
                    let ci = c.get("index").and_then(Value::as_u64).unwrap_or(i as u64);
                    format!("g/{ci}/")
                })
                .collect(),
            Shape::Ollama => {
                if v["done"] == true {
                    vec!["ol/".into()]
                } else {
                    Vec::new()
                }
            }
            Shape::Cohere => match v["type"].as_str() {
                Some("content-end") | Some("tool-call-end") => {
                    vec![format!("co/{}/", idx(v, "index"))]
                }
                Some("message-end") => vec!["co/".into()],
                _ => Vec::new(),
            },
            Shape::BedrockConverse => match converse_event(v) {
                Some("contentBlockStop") => vec![format!(
                    "bc/{}/",
                    idx(&v["contentBlockStop"], "contentBlockIndex")
                )],
                Some("messageStop") => vec!["bc/".into()],
                _ => Vec::new(),
            },
            Shape::GeminiLive => {
                let ends = live_content(v).is_some_and(|(_, c)| {
                    [
                        "turnComplete",
                        "turn_complete",
                        "interrupted",
                        "generationComplete",
                        "generation_complete",
                    ]
                    .iter()
                    .any(|f| c.get(*f) == Some(&Value::Bool(true)))
                });
                if ends { vec!["gl/".into()] } else { Vec::new() }
            }
            Shape::BedrockChunk => {
                if chunk_ends(v) {
                    vec!["bk/".into()]
                } else {
                    Vec::new()
                }
            }
            Shape::Other => Vec::new(),
        }
    }
}

/// Make a copy of a delta event carry only the released tail at `keep`: no finish reason, no
/// usage, and every other delta of it emptied (they went out with the event itself).
pub fn as_plain_delta(t: &mut Value, keep: &str) {
    // A template is kept only for a shape with deltas: one that looks like none is a native
    // Bedrock chunk's.
    let sh = chunk_shape(t);
    if let Shape::BedrockChunk = sh
        && let Some(o) = t.as_object_mut()
    {
        for f in [
            "completionReason",
            "stop_reason",
            "amazon-bedrock-invocationMetrics",
        ] {
            o.remove(f);
        }
        if o.get("is_finished") == Some(&Value::Bool(true)) {
            o.insert("is_finished".into(), Value::Bool(false));
        }
        if let Some(outs) = o.get_mut("outputs").and_then(Value::as_array_mut) {
            for x in outs.iter_mut().filter_map(Value::as_object_mut) {
                x.remove("stop_reason");
            }
        }
    }
    for d in sh.deltas(t) {
        if d.pointer == keep {
            continue;
        }
        if let Some(slot) = t.pointer_mut(&d.pointer) {
            *slot = if d.tokens {
                Value::Array(Vec::new())
            } else {
                Value::String(String::new())
            };
        }
    }
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
    for k in ["serverContent", "server_content"] {
        if let Some(c) = t.get_mut(k).and_then(Value::as_object_mut) {
            for f in [
                "turnComplete",
                "turn_complete",
                "generationComplete",
                "generation_complete",
                "interrupted",
            ] {
                c.remove(f);
            }
        }
    }
    if let Some(o) = t.as_object_mut() {
        o.remove("usage");
        o.remove("usageMetadata");
        if o.get("done") == Some(&Value::Bool(true)) {
            o.insert("done".into(), Value::Bool(false));
        }
    }
}

//! Response stage (DESIGN §1, §6): decode the provider's answer event by event, mask secrets in
//! its text — across event seams, holding back only what could still become a match — and
//! re-encode it in the same framing, so the client's SDK parses it as before.
//!
//! - SSE (`text/event-stream`): every provider's streams; one event in, the same event out
//!   (plus, where a held tail must be released after the last delta of a block, one extra delta
//!   event of the same kind just before the event that closes the block).
//! - Gemini's JSON-array stream: element by element, separators kept.
//! - A JSON answer: masked field by field once complete.
//!
//! Which text is a delta is recognised per event shape ([`dialect`]): OpenAI chat chunks
//! (every text field under `choices[].delta`, and logprob tokens), Responses API typed events,
//! Anthropic `content_block_delta`, Gemini `candidates[].content.parts[]`, Ollama-style NDJSON,
//! Cohere v2 events. Every other string in an event — whatever its key, `id`, `data` and
//! `signature` included — is masked as a whole. Only Anthropic's signed thinking blocks,
//! recognised by their structure, pass unedited (or are removed whole).

pub mod body;
pub mod dialect;
pub mod eventstream;

use std::{collections::HashMap, sync::Arc};

use serde_json::Value;

use crate::{
    policy::scan::{Ctx, Direction, Scanner, StreamMasker},
    redirect::identity::Identity,
};

/// One text stream inside an answer (a choice's content, a content block, ...).
struct Stream {
    masker: StreamMasker,
    /// The last event that carried a delta for it and left text held, and where the text
    /// sits: the model for an extra delta event releasing the held tail. Only such an event
    /// can be the last before a block closes with text still held, so only those are copied.
    template: Option<Event>,
    pointer: String,
    /// The stream is logprob tokens (an array of `{token, ...}` at `pointer`).
    tokens: bool,
}

/// Masks the events of one answer.
pub struct Rewriter {
    scanner: Arc<Scanner>,
    id: Arc<Identity>,
    streams: HashMap<String, Stream>,
    /// (rule index, detector) of every hit, for the record.
    pub hits: Vec<(usize, &'static str)>,
    /// Anthropic thinking blocks being read (by index): signed, so never edited — held whole,
    /// then passed unchanged or removed.
    thinking: HashMap<u64, Vec<Event>>,
    /// Indices of removed blocks: later blocks move down.
    removed: Vec<u64>,
    /// Whether the last event (or whole document) came out different from how it came in.
    altered: bool,
}

/// An SSE event's name (if any) and its JSON data.
pub type Event = (Option<String>, Value);

impl Rewriter {
    pub fn new(scanner: Arc<Scanner>, id: Arc<Identity>) -> Self {
        Self {
            scanner,
            id,
            streams: HashMap::new(),
            hits: Vec::new(),
            thinking: HashMap::new(),
            removed: Vec::new(),
            altered: false,
        }
    }

    /// Did the last call change what it was given? (If not, the original bytes can go out.)
    pub fn take_altered(&mut self) -> bool {
        std::mem::take(&mut self.altered)
    }

    /// Does a hit in `text` call for altering it (any rule but `monitor`)? Hits are recorded.
    fn must_remove(&mut self, text: &str) -> bool {
        let (_, hits) = self.scanner.mask(
            text,
            Ctx {
                dir: Direction::Response,
                id: &self.id,
            },
        );
        let alter = hits
            .iter()
            .any(|h| self.scanner.rules()[h.rule].action != crate::policy::scan::Action::Monitor);
        self.hits.extend(hits.iter().map(|h| (h.rule, h.detector)));
        alter
    }

    /// Anthropic thinking blocks carry a signature the API checks when the block is sent back:
    /// they are never edited. The block is held until it ends; without a hit it goes out as it
    /// came, with one it is removed whole and the blocks after it are renumbered.
    fn anthropic_thinking(&mut self, name: &Option<String>, v: &mut Value) -> Option<Vec<Event>> {
        let typ = v.get("type").and_then(Value::as_str)?;
        let index = v.get("index").and_then(Value::as_u64);
        match (typ, index) {
            ("content_block_start", Some(i))
                if matches!(
                    v.pointer("/content_block/type").and_then(Value::as_str),
                    Some("thinking" | "redacted_thinking")
                ) =>
            {
                self.altered = true;
                self.thinking.insert(i, vec![(name.clone(), v.clone())]);
                Some(Vec::new())
            }
            ("content_block_delta", Some(i)) if self.thinking.contains_key(&i) => {
                self.altered = true;
                self.thinking
                    .entry(i)
                    .or_default()
                    .push((name.clone(), v.clone()));
                Some(Vec::new())
            }
            ("content_block_stop", Some(i)) if self.thinking.contains_key(&i) => {
                let mut evs = self.thinking.remove(&i).unwrap_or_default();
                evs.push((name.clone(), v.clone()));
                self.altered = true;
                let text: String = evs
                    .iter()
                    .filter_map(|(_, e)| {
                        e.pointer("/delta/thinking")
                            .or_else(|| e.pointer("/content_block/thinking"))
                            .or_else(|| e.pointer("/content_block/data"))
                            .and_then(Value::as_str)
                    })
                    .collect();
                if self.must_remove(&text) {
                    self.removed.push(i);
                    return Some(Vec::new());
                }
                for (_, e) in evs.iter_mut() {
                    self.renumber(e);
                }
                Some(evs)
            }
            _ => None,
        }
    }

    fn renumber(&self, v: &mut Value) {
        if let Some(i) = v.get("index").and_then(Value::as_u64) {
            let shift = self.removed.iter().filter(|r| **r < i).count() as u64;
            if shift > 0 {
                v["index"] = Value::from(i - shift);
            }
        }
    }

    /// A whole Anthropic message (`content` blocks): a thinking block with a hit is removed.
    pub fn drop_flagged_thinking(&mut self, v: &mut Value) {
        if v.get("type").and_then(Value::as_str) != Some("message") {
            return;
        }
        let Some(blocks) = v.get_mut("content").and_then(Value::as_array_mut) else {
            return;
        };
        let mut keep = Vec::new();
        for b in std::mem::take(blocks) {
            let flagged = match b.get("type").and_then(Value::as_str) {
                Some("thinking") => {
                    self.must_remove(b.get("thinking").and_then(Value::as_str).unwrap_or(""))
                }
                Some("redacted_thinking") => {
                    self.must_remove(b.get("data").and_then(Value::as_str).unwrap_or(""))
                }
                _ => false,
            };
            if flagged {
                self.altered = true;
            } else {
                keep.push(b);
            }
        }
        if let Some(blocks) = v.get_mut("content").and_then(Value::as_array_mut) {
            *blocks = keep;
        }
    }

    /// Mask a whole string.
    pub(crate) fn mask_whole(&mut self, s: &str) -> Option<String> {
        let (out, hits) = self.scanner.mask(
            s,
            Ctx {
                dir: Direction::Response,
                id: &self.id,
            },
        );
        if hits.is_empty() {
            return None;
        }
        self.hits.extend(hits.iter().map(|h| (h.rule, h.detector)));
        if out != s {
            self.altered = true;
        }
        Some(out)
    }

    /// Text that is not a JSON event (a comment, a broken element, a non-JSON answer), masked
    /// as a whole.
    pub(crate) fn mask_bytes(&mut self, raw: &[u8]) -> Vec<u8> {
        let text = String::from_utf8_lossy(raw);
        match self.mask_whole(&text) {
            Some(m) => m.into_bytes(),
            None => text.into_owned().into_bytes(),
        }
    }

    /// Mask every string leaf of `v` (keys too) except the `skip` pointers. An array of
    /// `{token, ...}` objects (logprobs) is masked as the one text its tokens spell.
    pub fn mask_leaves(&mut self, v: &mut Value, base: &mut String, skip: &[String]) {
        if !skip.is_empty() && skip.iter().any(|p| p == base) {
            return;
        }
        match v {
            Value::String(s) => {
                if let Some(m) = self.mask_whole(s).or_else(|| self.mask_base64(s)) {
                    *s = m;
                }
            }
            Value::Array(a) if is_token_array(a) => {
                let mut m =
                    StreamMasker::new(self.scanner.clone(), Direction::Response, self.id.clone());
                let n = a.len();
                for (i, t) in a.iter_mut().enumerate() {
                    let tok = t["token"].as_str().unwrap_or("").to_string();
                    let mut out = m.push(&tok);
                    if i + 1 == n {
                        out.push_str(&m.finish());
                    }
                    self.set_token(t, &tok, out);
                    if let Some(top) = t.get_mut("top_logprobs").and_then(Value::as_array_mut) {
                        for alt in top {
                            let at = alt["token"].as_str().unwrap_or("").to_string();
                            if let Some(masked) = self.mask_whole(&at) {
                                self.set_token(alt, &at, masked);
                            }
                        }
                    }
                }
                self.hits.append(&mut m.hits);
            }
            // The JSON pointer is only built when there are pointers to skip (a whole answer
            // has none).
            Value::Array(a) => {
                for (i, x) in a.iter_mut().enumerate() {
                    let len = base.len();
                    if !skip.is_empty() {
                        base.push('/');
                        base.push_str(&i.to_string());
                    }
                    self.mask_leaves(x, base, skip);
                    base.truncate(len);
                }
            }
            Value::Object(o) => {
                let mut renamed = Vec::new();
                for (k, x) in o.iter_mut() {
                    if let Some(nk) = self.mask_whole(k) {
                        renamed.push((k.clone(), nk));
                    }
                    let len = base.len();
                    if !skip.is_empty() {
                        base.push('/');
                        base.push_str(&k.replace('~', "~0").replace('/', "~1"));
                    }
                    self.mask_leaves(x, base, skip);
                    base.truncate(len);
                }
                for (k, nk) in renamed {
                    if let Some(x) = o.remove(&k) {
                        o.insert(nk, x);
                    }
                }
            }
            _ => {}
        }
    }

    /// Base64 inside a string ([`crate::policy::b64`]): text inside masked and encoded again
    /// the same way; binary data with a hit inside replaced whole by the rule's mask.
    fn mask_base64(&mut self, s: &str) -> Option<String> {
        let d = crate::policy::b64::decode(s)?;
        match std::str::from_utf8(&d.bytes) {
            Ok(inner) => self.mask_whole(inner).map(|m| d.encode(&m)),
            Err(_) => {
                let hits = self.scanner.find(
                    &d.bytes,
                    0,
                    Ctx {
                        dir: Direction::Response,
                        id: &self.id,
                    },
                );
                self.hits.extend(hits.iter().map(|h| (h.rule, h.detector)));
                let h = hits
                    .iter()
                    .find(|h| h.effect != crate::policy::scan::Effect::Record)?;
                self.altered = true;
                Some(format!("[MASKED:{}]", self.scanner.rules()[h.rule].name))
            }
        }
    }

    /// Give a logprob entry the text `out` in place of `was` (its `bytes` follow).
    fn set_token(&mut self, t: &mut Value, was: &str, out: String) {
        if out == was {
            return;
        }
        self.altered = true;
        if t.get("bytes").is_some_and(|b| !b.is_null()) {
            t["bytes"] = Value::Array(out.bytes().map(Value::from).collect());
        }
        t["token"] = Value::String(out);
    }

    /// One event in; the events to send in its place, in order.
    pub fn event(&mut self, name: Option<String>, v: Value) -> Vec<Event> {
        self.event_as(name, v, false)
    }

    /// A model's native event from a Bedrock `chunk`: like [`Self::event`], but a shape no
    /// dialect knows streams its text fields across chunks ([`dialect::chunk_shape`]).
    pub fn chunk_event(&mut self, v: Value) -> Vec<Event> {
        self.event_as(None, v, true)
    }

    fn event_as(&mut self, name: Option<String>, mut v: Value, chunk: bool) -> Vec<Event> {
        if let Some(out) = self.anthropic_thinking(&name, &mut v) {
            return out;
        }
        self.renumber_anthropic(&mut v);
        let shape = if chunk {
            dialect::chunk_shape(&v)
        } else {
            dialect::shape(&v)
        };
        let mut out = Vec::new();
        let deltas = shape.deltas(&v);
        let pointers: Vec<String> = deltas.iter().map(|d| d.pointer.clone()).collect();
        for d in &deltas {
            let st = self.streams.entry(d.key.clone()).or_insert_with(|| Stream {
                masker: StreamMasker::new(
                    self.scanner.clone(),
                    Direction::Response,
                    self.id.clone(),
                ),
                template: None,
                pointer: String::new(),
                tokens: d.tokens,
            });
            let template = v.clone();
            if d.tokens {
                let Some(toks) = v.pointer_mut(&d.pointer).and_then(Value::as_array_mut) else {
                    continue;
                };
                let mut changed = Vec::new();
                for (k, t) in toks.iter().enumerate() {
                    let tok = t.get("token").and_then(Value::as_str).unwrap_or("");
                    let out = st.masker.push(tok);
                    if out != tok {
                        changed.push((k, tok.to_string(), out));
                    }
                }
                if st.masker.held() > 0 {
                    st.template = Some((name.clone(), template));
                    st.pointer.clone_from(&d.pointer);
                }
                for (k, was, out) in changed {
                    if let Some(t) = v.pointer_mut(&d.pointer).and_then(|a| a.get_mut(k)) {
                        let mut t2 = std::mem::take(t);
                        self.set_token(&mut t2, &was, out);
                        *v.pointer_mut(&d.pointer)
                            .and_then(|a| a.get_mut(k))
                            .expect("there") = t2;
                    }
                }
                // Alternatives are single tokens: masked whole.
                if let Some(toks) = v.pointer_mut(&d.pointer).and_then(Value::as_array_mut) {
                    let mut toks = std::mem::take(toks);
                    for t in toks.iter_mut() {
                        if let Some(top) = t.get_mut("top_logprobs").and_then(Value::as_array_mut) {
                            for alt in top {
                                let at = alt["token"].as_str().unwrap_or("").to_string();
                                if let Some(masked) = self.mask_whole(&at) {
                                    self.set_token(alt, &at, masked);
                                }
                            }
                        }
                    }
                    *v.pointer_mut(&d.pointer).expect("there") = Value::Array(toks);
                }
                continue;
            }
            let Some(text) = v.pointer(&d.pointer).and_then(Value::as_str) else {
                continue;
            };
            let text = text.to_string();
            let released = st.masker.push(&text);
            if st.masker.held() > 0 {
                st.template = Some((name.clone(), template));
                st.pointer.clone_from(&d.pointer);
            }
            if released != text {
                self.altered = true;
                if let Some(slot) = v.pointer_mut(&d.pointer) {
                    *slot = Value::String(released);
                }
            }
        }
        // Blocks that end with this event: release what is held.
        for prefix in shape.closes(&v) {
            for (st, rest) in self.close_prefix(&prefix) {
                self.altered = true;
                if !st.tokens
                    && pointers.contains(&st.pointer)
                    && let Some(Value::String(s)) = v.pointer_mut(&st.pointer)
                {
                    s.push_str(&rest);
                } else {
                    out.push(self.release(st, rest));
                }
            }
        }
        self.mask_leaves(&mut v, &mut String::new(), &pointers);
        out.push((name, v));
        out
    }

    /// The answer ended: an extra delta event for every block still holding text.
    pub fn finish(&mut self) -> Vec<Event> {
        let closed = self.close_prefix("");
        let out: Vec<Event> = closed
            .into_iter()
            .map(|(st, rest)| self.release(st, rest))
            .collect();
        if !out.is_empty() {
            self.altered = true;
        }
        out
    }

    /// The extra event releasing a block's held tail, its other strings masked like any.
    fn release(&mut self, st: Stream, rest: String) -> Event {
        let pointer = st.pointer.clone();
        let mut ev = release_event(st, rest);
        self.mask_leaves(&mut ev.1, &mut String::new(), &[pointer]);
        ev
    }

    /// End every block whose key starts with `prefix`: each stream with the text it still
    /// held (only those holding any), in key order.
    fn close_prefix(&mut self, prefix: &str) -> Vec<(Stream, String)> {
        let mut keys: Vec<String> = self
            .streams
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect();
        keys.sort();
        let mut out = Vec::new();
        for key in keys {
            let Some(mut st) = self.streams.remove(&key) else {
                continue;
            };
            let rest = st.masker.finish();
            self.hits.append(&mut st.masker.hits);
            if !rest.is_empty() {
                out.push((st, rest));
            }
        }
        out
    }

    fn renumber_anthropic(&self, v: &mut Value) {
        if !self.removed.is_empty()
            && v.get("type")
                .and_then(Value::as_str)
                .is_some_and(|t| t.starts_with("content_block_"))
        {
            self.renumber(v);
        }
    }

    pub fn take_hits(&mut self) -> Vec<(usize, &'static str)> {
        for st in self.streams.values_mut() {
            self.hits.append(&mut st.masker.hits);
        }
        std::mem::take(&mut self.hits)
    }
}

/// One more delta event like the block's last, carrying `rest` (and nothing else).
fn release_event(st: Stream, rest: String) -> Event {
    // Held text at the close means the block's last delta left text held, which set the
    // template.
    let (name, mut t) = st.template.unwrap_or_default();
    dialect::as_plain_delta(&mut t, &st.pointer);
    if let Some(slot) = t.pointer_mut(&st.pointer) {
        *slot = if st.tokens {
            let bytes: Vec<Value> = rest.bytes().map(Value::from).collect();
            serde_json::json!([{"token": rest, "logprob": 0.0, "bytes": bytes, "top_logprobs": []}])
        } else {
            Value::String(rest)
        };
    }
    (name, t)
}

/// An array of logprob entries: objects that each carry a `token` string.
fn is_token_array(a: &[Value]) -> bool {
    !a.is_empty()
        && a.iter()
            .all(|t| t.get("token").is_some_and(Value::is_string))
}

#[cfg(test)]
mod tests;

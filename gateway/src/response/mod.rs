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
//! (`choices[].delta`), Responses API typed events, Anthropic `content_block_delta`, Gemini
//! `candidates[].content.parts[]`. Every other string in an event is masked as a whole; opaque
//! fields (signatures, encrypted content) are left alone.

pub mod body;
pub mod dialect;

use std::{collections::HashMap, sync::Arc};

use serde_json::Value;

use crate::{
    policy::scan::{Ctx, Direction, Scanner, StreamMasker},
    redirect::identity::Identity,
};

/// Fields that carry opaque data a provider verifies: never edited.
const OPAQUE: &[&str] = &["signature", "encrypted_content", "data", "id", "item_id"];

/// One text stream inside an answer (a choice's content, a content block, ...).
struct Stream {
    masker: StreamMasker,
    /// The last event that carried a delta for it and left text held, and where the text
    /// sits: the model for an extra delta event releasing the held tail. Only such an event
    /// can be the last before a block closes with text still held, so only those are copied.
    template: Option<Event>,
    pointer: String,
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
        }
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
                if v.pointer("/content_block/type").and_then(Value::as_str) == Some("thinking") =>
            {
                self.thinking.insert(i, vec![(name.clone(), v.clone())]);
                Some(Vec::new())
            }
            ("content_block_delta", Some(i)) if self.thinking.contains_key(&i) => {
                self.thinking
                    .entry(i)
                    .or_default()
                    .push((name.clone(), v.clone()));
                Some(Vec::new())
            }
            ("content_block_stop", Some(i)) if self.thinking.contains_key(&i) => {
                let mut evs = self.thinking.remove(&i).unwrap_or_default();
                evs.push((name.clone(), v.clone()));
                let text: String = evs
                    .iter()
                    .filter_map(|(_, e)| {
                        e.pointer("/delta/thinking")
                            .or_else(|| e.pointer("/content_block/thinking"))
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
            let flagged = b.get("type").and_then(Value::as_str) == Some("thinking")
                && self.must_remove(b.get("thinking").and_then(Value::as_str).unwrap_or(""));
            if !flagged {
                keep.push(b);
            }
        }
        if let Some(blocks) = v.get_mut("content").and_then(Value::as_array_mut) {
            *blocks = keep;
        }
    }

    /// Mask a whole string.
    fn mask_whole(&mut self, s: &str) -> Option<String> {
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
        Some(out)
    }

    /// Text that is not a JSON event (a comment, a broken element, a non-JSON answer), masked
    /// as a whole.
    fn mask_bytes(&mut self, raw: &[u8]) -> Vec<u8> {
        let text = String::from_utf8_lossy(raw);
        match self.mask_whole(&text) {
            Some(m) => m.into_bytes(),
            None => text.into_owned().into_bytes(),
        }
    }

    /// Mask every string leaf of `v` except opaque fields and `skip` pointers.
    pub fn mask_leaves(&mut self, v: &mut Value, base: &mut String, skip: &[String]) {
        match v {
            Value::String(s) => {
                if !skip.iter().any(|p| p == base)
                    && let Some(m) = self.mask_whole(s)
                {
                    *s = m;
                }
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
                for (k, x) in o.iter_mut() {
                    if OPAQUE.contains(&k.as_str()) {
                        continue;
                    }
                    let len = base.len();
                    if !skip.is_empty() {
                        base.push('/');
                        base.push_str(&k.replace('~', "~0").replace('/', "~1"));
                    }
                    self.mask_leaves(x, base, skip);
                    base.truncate(len);
                }
            }
            _ => {}
        }
    }

    /// One event in; the events to send in its place, in order.
    pub fn event(&mut self, name: Option<String>, mut v: Value) -> Vec<Event> {
        if let Some(out) = self.anthropic_thinking(&name, &mut v) {
            return out;
        }
        self.renumber_anthropic(&mut v);
        let shape = dialect::shape(&v);
        let mut out = Vec::new();
        let deltas = shape.deltas(&v);
        let pointers: Vec<String> = deltas.iter().map(|d| d.pointer.clone()).collect();
        for d in &deltas {
            let Some(text) = v.pointer(&d.pointer).and_then(Value::as_str) else {
                continue;
            };
            let text = text.to_string();
            let st = self.streams.entry(d.key.clone()).or_insert_with(|| Stream {
                masker: StreamMasker::new(
                    self.scanner.clone(),
                    Direction::Response,
                    self.id.clone(),
                ),
                template: None,
                pointer: String::new(),
            });
            let released = st.masker.push(&text);
            if st.masker.held() > 0 {
                st.template = Some((name.clone(), v.clone()));
                st.pointer.clone_from(&d.pointer);
            }
            if let Some(slot) = v.pointer_mut(&d.pointer) {
                *slot = Value::String(released);
            }
        }
        // Blocks that end with this event: release what is held.
        for key in shape.closes(&v) {
            let Some((st, rest)) = self.close(&key) else {
                continue;
            };
            if let Some(Value::String(s)) = v.pointer_mut(&st.pointer)
                && pointers.contains(&st.pointer)
            {
                s.push_str(&rest);
            } else {
                out.push(release_event(st, rest));
            }
        }
        self.mask_leaves(&mut v, &mut String::new(), &pointers);
        out.push((name, v));
        out
    }

    /// The answer ended: an extra delta event for every block still holding text.
    pub fn finish(&mut self) -> Vec<Event> {
        let mut keys: Vec<String> = self.streams.keys().cloned().collect();
        keys.sort();
        keys.iter()
            .filter_map(|key| self.close(key))
            .map(|(st, rest)| release_event(st, rest))
            .collect()
    }

    /// End the block `key`: its stream and the text it still held, if any.
    fn close(&mut self, key: &str) -> Option<(Stream, String)> {
        let mut st = self.streams.remove(key)?;
        let rest = st.masker.finish();
        self.hits.append(&mut st.masker.hits);
        (!rest.is_empty()).then_some((st, rest))
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

/// One more delta event like the block's last, carrying `rest`.
fn release_event(st: Stream, rest: String) -> Event {
    // Held text at the close means the block's last delta left text held, which set the
    // template.
    let (name, mut t) = st.template.unwrap_or_default();
    dialect::as_plain_delta(&mut t);
    if let Some(slot) = t.pointer_mut(&st.pointer) {
        *slot = Value::String(rest);
    }
    (name, t)
}

#[cfg(test)]
mod tests;

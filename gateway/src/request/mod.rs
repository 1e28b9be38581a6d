//! Request stage (DESIGN §1, §6): every request body to a provider is read, decoded and
//! scanned whatever its path, method or shape, and what goes upstream is what was scanned.
//!
//! - The body's `Content-Encoding` is undone ([`decode`]); an unknown coding is refused.
//! - Its shape is found by content and content type: JSON (parsed strictly: a key given twice
//!   is refused, [`json`]), JSON Lines, `application/x-www-form-urlencoded`,
//!   `multipart/form-data` (each part by its own shape, [`forms`]), any other text, or bytes.
//! - Every string of a JSON document is scanned — keys too, escapes decoded — and so is base64
//!   inside it (data URLs, `inlineData`, `file_data`, any long base64 string): text inside is
//!   masked and re-encoded; a secret inside binary data cannot be masked and refuses the
//!   request.
//! - Two renderings come out: what goes upstream (mask effects applied) and what the journal
//!   and approvers see (every effect but `monitor` applied, [`Render`]).
//!
//! Adapters still locate the prompt ([`crate::provider::prompt`]) for the approver's excerpt
//! and the token estimate; they no longer decide what is scanned.

pub mod decode;
pub mod forms;
pub mod json;
pub mod path;

use serde_json::Value;

pub use crate::policy::scan::Unreadable;
use crate::policy::scan::{Ctx, Effect, Hit, Render, Scanner};

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error(
        "the request body is encoded as `{0}`, which the gateway cannot decode to inspect \
         (gzip, deflate, br and zstd can be); nothing was sent"
    )]
    UnknownEncoding(String),
    #[error(
        "the request body claims Content-Encoding `{encoding}` but does not decode ({reason}); nothing was sent"
    )]
    Encoding { encoding: String, reason: String },
    #[error("the request body is larger than {0} bytes (decoded), the most the gateway inspects")]
    TooLarge(usize),
    #[error("the request body's JSON has the same key twice in one object; nothing was sent")]
    DuplicateKey,
    #[error("the request body cannot be read ({0}), so it cannot be checked; nothing was sent")]
    Unreadable(String),
    #[error(
        "a secret ({detector}) sits inside binary data where it cannot be masked; nothing was sent"
    )]
    Unmaskable { detector: &'static str },
    #[error("the request path cannot be used: {0}")]
    Path(#[from] path::PathError),
}

/// One body inspected.
pub struct Inspected {
    /// What goes upstream (`None`: the body as it came).
    pub forward: Option<Vec<u8>>,
    /// What the journal and approvers see (`None`: the same as what goes upstream).
    pub record: Option<Vec<u8>>,
    /// Every hit (on the text as sent), for the record and the verdict.
    pub hits: Vec<Hit>,
    /// The JSON document as the journal sees it, for the adapters' prompt pointers (`None`:
    /// not JSON).
    pub json: Option<Value>,
    /// Every text found (as the journal sees it), for hold keywords.
    pub texts: Vec<String>,
    pub shape: &'static str,
}

impl Inspected {
    /// The strongest effect among the hits, with its hit.
    pub fn verdict(&self) -> Option<&Hit> {
        self.hits.iter().max_by_key(|h| h.effect)
    }
}

/// How deep multipart bodies (and undeclared compression) may nest.
const MAX_DEPTH: usize = 4;

/// The most an undeclared compressed body is decoded to for scanning.
const MAX_SNIFF: usize = 32 << 20;

pub struct Inspector<'a> {
    pub scanner: &'a Scanner,
    pub ctx: Ctx<'a>,
    pub unreadable: Unreadable,
}

/// One piece rendered: its new bytes (`None`: unchanged) and, for JSON, the document.
pub(crate) struct Out {
    pub bytes: Option<Vec<u8>>,
    pub json: Option<Value>,
}

impl Out {
    fn same() -> Self {
        Out {
            bytes: None,
            json: None,
        }
    }
}

impl Inspector<'_> {
    /// Inspect a whole (decoded) body of content type `ct` (lower case, may be empty).
    ///
    /// One pass renders what goes upstream and finds the hits; only when a hit is held or
    /// blocked (so people and the journal must see more masked than is sent) a second pass
    /// renders the record.
    pub fn inspect(&self, body: &[u8], ct: &str) -> Result<Inspected, RequestError> {
        let mut st = State {
            how: Render::Forward,
            ..Default::default()
        };
        let fwd = self.piece(body, ct, 0, &mut st)?;
        let shape = st.shape.unwrap_or("empty");
        let differs = st
            .hits
            .iter()
            .any(|h| !matches!(h.effect, Effect::Mask | Effect::Record));
        if !differs {
            return Ok(Inspected {
                forward: fwd.bytes,
                record: None,
                hits: st.hits,
                json: fwd.json,
                texts: st.texts,
                shape,
            });
        }
        let hits = std::mem::take(&mut st.hits);
        let mut rst = State {
            how: Render::Record,
            ..Default::default()
        };
        let rec = self.piece(body, ct, 0, &mut rst)?;
        Ok(Inspected {
            forward: fwd.bytes,
            record: Some(rec.bytes.unwrap_or_else(|| body.to_vec())),
            hits,
            json: rec.json,
            texts: rst.texts,
            shape,
        })
    }

    pub(crate) fn piece(
        &self,
        body: &[u8],
        ct: &str,
        depth: usize,
        st: &mut State,
    ) -> Result<Out, RequestError> {
        if body.is_empty() {
            return Ok(Out::same());
        }
        let mime = ct.split(';').next().unwrap_or("").trim();
        if mime.starts_with("multipart/") {
            st.shape.get_or_insert("multipart");
            if depth >= MAX_DEPTH {
                return Err(RequestError::Unreadable("multipart nested too deep".into()));
            }
            return match forms::multipart(self, body, ct, depth, st) {
                Err(RequestError::Unreadable(why)) => self.unreadable(body, why, st),
                r => r,
            };
        }
        if mime == "application/x-www-form-urlencoded" {
            st.shape.get_or_insert("form");
            return match forms::urlencoded(self, body, st) {
                Err(RequestError::Unreadable(why)) => self.unreadable(body, why, st),
                r => r,
            };
        }
        // An AWS event stream (Bedrock's bidirectional streams), whatever it is labelled: each
        // message decoded and inspected (a valid prelude CRC is what makes it one).
        if depth < MAX_DEPTH && crate::response::eventstream::prelude_ok(body) == Some(true) {
            st.shape.get_or_insert("event-stream");
            return self.event_stream(body, depth, st);
        }
        let text = trim_bom(body);
        let first = text.iter().find(|b| !b.is_ascii_whitespace()).copied();
        if mime.contains("json") || matches!(first, Some(b'{' | b'[')) {
            match json::parse(text) {
                Ok(v) => {
                    st.shape.get_or_insert("json");
                    return self.json_doc(v, st);
                }
                Err(json::JsonError::Duplicate) => return Err(RequestError::DuplicateKey),
                Err(json::JsonError::Syntax(e)) => {
                    // JSON Lines: every non-empty line a document.
                    if text.contains(&b'\n') {
                        match self.json_lines(text, st) {
                            Ok(o) => {
                                st.shape.get_or_insert("jsonl");
                                return Ok(o);
                            }
                            Err(RequestError::DuplicateKey) => {
                                return Err(RequestError::DuplicateKey);
                            }
                            Err(_) => {}
                        }
                    }
                    return self.unreadable(body, format!("not valid JSON: {e}"), st);
                }
            }
        }
        match std::str::from_utf8(body) {
            Ok(s) => {
                st.shape.get_or_insert("text");
                Ok(Out {
                    bytes: self.text(s, st)?.map(String::into_bytes),
                    json: None,
                })
            }
            Err(_) => {
                st.shape.get_or_insert("binary");
                self.bytes(body, st)?;
                // Compressed data nobody declared: what is inside is scanned too, and a hit
                // refuses the request (it cannot be masked and compressed again unasked).
                if depth < MAX_DEPTH
                    && let Some(inner) = decode::sniff(body, MAX_SNIFF)?
                {
                    let mut inner_st = State {
                        how: st.how,
                        ..Default::default()
                    };
                    match self.piece(&inner, "", depth + 1, &mut inner_st) {
                        Ok(_) => {}
                        Err(RequestError::Unreadable(_)) => self.bytes(&inner, &mut inner_st)?,
                        Err(e) => return Err(e),
                    }
                    if let Some(h) = inner_st.hits.iter().find(|h| h.effect != Effect::Record) {
                        return Err(RequestError::Unmaskable {
                            detector: h.detector,
                        });
                    }
                    st.hits.extend(inner_st.hits);
                }
                Ok(Out::same())
            }
        }
    }

    /// An event-stream body: every message's string and byte headers and its payload (by its
    /// own shape: JSON with base64 inside, text, ...) inspected. It cannot be re-encoded
    /// masked here, so a hit that would change it refuses the request; one that breaks the
    /// framing is unreadable.
    fn event_stream(&self, body: &[u8], depth: usize, st: &mut State) -> Result<Out, RequestError> {
        use crate::response::eventstream::{Value, decode};
        let mut inner = State {
            how: st.how,
            ..Default::default()
        };
        let mut rest = body;
        while !rest.is_empty() {
            let (m, n) = match decode(rest) {
                Ok(Some(x)) => x,
                Ok(None) => {
                    return self.unreadable(
                        body,
                        "the event stream ends inside a message".into(),
                        st,
                    );
                }
                Err(e) => return self.unreadable(body, e.to_string(), st),
            };
            rest = &rest[n..];
            for (_, v) in &m.headers {
                match v {
                    Value::String(t) => self.bytes(t.as_bytes(), &mut inner)?,
                    Value::Bytes(b) => self.bytes(b, &mut inner)?,
                    _ => {}
                }
            }
            let ct = m.header(":content-type").unwrap_or("").to_string();
            match self.piece(&m.payload, &ct, depth + 1, &mut inner) {
                Ok(_) => {}
                Err(RequestError::Unreadable(_)) => self.bytes(&m.payload, &mut inner)?,
                Err(e) => return Err(e),
            }
        }
        if let Some(h) = inner.hits.iter().find(|h| h.effect != Effect::Record) {
            return Err(RequestError::Unmaskable {
                detector: h.detector,
            });
        }
        st.hits.extend(inner.hits);
        st.texts.extend(inner.texts);
        Ok(Out::same())
    }

    /// A body that does not parse as what it looks like: refused, or scanned as bytes.
    fn unreadable(&self, body: &[u8], why: String, st: &mut State) -> Result<Out, RequestError> {
        match self.unreadable {
            Unreadable::Refuse => Err(RequestError::Unreadable(why)),
            Unreadable::ScanRaw => {
                tracing::warn!(why = %why, "request body unreadable; scanned as raw bytes");
                self.bytes(body, st)?;
                Ok(Out::same())
            }
        }
    }

    /// Bytes that cannot be rewritten: a hit that would alter them refuses the request.
    pub(crate) fn bytes(&self, b: &[u8], st: &mut State) -> Result<(), RequestError> {
        let hits = self.scanner.find(b, 0, self.ctx);
        if let Some(h) = hits.iter().find(|h| h.effect != Effect::Record) {
            return Err(RequestError::Unmaskable {
                detector: h.detector,
            });
        }
        st.hits.extend(hits);
        Ok(())
    }

    /// Scan one text; its rendering when that differs from it.
    pub(crate) fn text(&self, s: &str, st: &mut State) -> Result<Option<String>, RequestError> {
        let hits = self.scanner.scan(s, self.ctx);
        if hits.is_empty() {
            if let Some(r) = self.base64(s, st)? {
                return Ok(r);
            }
            st.text(s);
            return Ok(None);
        }
        let out = self.scanner.apply(s, &hits, st.how);
        st.text(&out);
        st.hits.extend(hits);
        Ok((out != s).then_some(out))
    }

    /// Base64 inside a string ([`crate::policy::b64`]): text inside is scanned and, when
    /// masked, encoded again the same way. `None`: no base64 here.
    fn base64(&self, s: &str, st: &mut State) -> Result<Option<Option<String>>, RequestError> {
        let Some(d) = crate::policy::b64::decode(s) else {
            return Ok(None);
        };
        match std::str::from_utf8(&d.bytes) {
            Ok(inner) => {
                let hits = self.scanner.scan(inner, self.ctx);
                if hits.is_empty() {
                    st.text(inner);
                    return Ok(Some(None));
                }
                let out = self.scanner.apply(inner, &hits, st.how);
                st.text(&out);
                st.hits.extend(hits);
                Ok(Some((out != inner).then(|| d.encode(&out))))
            }
            Err(_) => {
                self.bytes(&d.bytes, st)?;
                Ok(Some(None))
            }
        }
    }

    fn json_doc(&self, mut v: Value, st: &mut State) -> Result<Out, RequestError> {
        let changed = self.walk(&mut v, st)?;
        let bytes = if changed {
            Some(serde_json::to_vec(&v).map_err(|e| RequestError::Unreadable(e.to_string()))?)
        } else {
            None
        };
        Ok(Out {
            bytes,
            json: Some(v),
        })
    }

    /// Rewrite every string of `v` (keys too); whether anything changed.
    fn walk(&self, v: &mut Value, st: &mut State) -> Result<bool, RequestError> {
        match v {
            Value::String(s) => match self.text(s, st)? {
                Some(n) => {
                    *s = n;
                    Ok(true)
                }
                None => Ok(false),
            },
            Value::Array(a) => {
                let mut changed = false;
                for x in a {
                    changed |= self.walk(x, st)?;
                }
                Ok(changed)
            }
            Value::Object(o) => {
                let mut changed = false;
                let mut renamed = Vec::new();
                for (k, x) in o.iter_mut() {
                    if let Some(nk) = self.text(k, st)? {
                        renamed.push((k.clone(), nk));
                    }
                    changed |= self.walk(x, st)?;
                }
                for (k, nk) in renamed {
                    let x = o.remove(&k).expect("present");
                    if o.contains_key(&nk) {
                        // Two keys masked alike would collide: refuse rather than drop one.
                        return Err(RequestError::Unreadable(
                            "two keys of one object mask to the same text".into(),
                        ));
                    }
                    o.insert(nk, x);
                    changed = true;
                }
                Ok(changed)
            }
            _ => Ok(false),
        }
    }

    fn json_lines(&self, text: &[u8], st: &mut State) -> Result<Out, RequestError> {
        let mut out = Vec::with_capacity(text.len());
        let mut changed = false;
        for line in text.split_inclusive(|&b| b == b'\n') {
            let body = trim_line(line);
            if body.iter().all(u8::is_ascii_whitespace) {
                out.extend_from_slice(line);
                continue;
            }
            let v = match json::parse(body) {
                Ok(v) => v,
                Err(json::JsonError::Duplicate) => return Err(RequestError::DuplicateKey),
                Err(json::JsonError::Syntax(e)) => {
                    return Err(RequestError::Unreadable(format!("a line is not JSON: {e}")));
                }
            };
            let o = self.json_doc(v, st)?;
            changed |= o.bytes.is_some();
            out.extend_from_slice(o.bytes.as_deref().unwrap_or(body));
            out.extend_from_slice(&line[body.len()..]);
        }
        Ok(Out {
            bytes: changed.then_some(out),
            json: None,
        })
    }
}

/// What the walk gathers across a body.
#[derive(Default)]
pub(crate) struct State {
    how: Render,
    hits: Vec<Hit>,
    texts: Vec<String>,
    /// Bytes of text gathered (bounded: the hold check reads the prompt, not every byte).
    text_bytes: usize,
    shape: Option<&'static str>,
}

/// Most text kept for hold keywords and the excerpt.
const MAX_TEXTS: usize = 4 << 20;

impl State {
    fn text(&mut self, s: &str) {
        if self.text_bytes < MAX_TEXTS && !s.is_empty() {
            self.text_bytes += s.len();
            self.texts.push(s.to_string());
        }
    }
}

fn trim_bom(b: &[u8]) -> &[u8] {
    b.strip_prefix(b"\xef\xbb\xbf").unwrap_or(b)
}

fn trim_line(line: &[u8]) -> &[u8] {
    let mut l = line;
    while let Some((last, rest)) = l.split_last() {
        if *last == b'\n' || *last == b'\r' {
            l = rest;
        } else {
            break;
        }
    }
    l
}

#[cfg(test)]
mod tests;

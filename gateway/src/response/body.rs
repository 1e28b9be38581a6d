//! The masked answer as an [`http_body::Body`]: frames of the provider's body are decoded as
//! they arrive and whatever is complete goes out at once, re-encoded.

use std::{
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame};
use serde_json::Value;

use super::{Event, Rewriter};
use crate::upstream::pool::{BoxError, RespBody};

/// How the answer is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sse,
    JsonArray,
    /// One JSON document: masked when complete.
    Json,
    /// Any other text: masked as a whole when complete.
    Text,
}

/// Told the (rule index, detector) of the hits as the answer streams: those of each piece
/// before it goes out, the rest when the answer ends (or is dropped).
pub type OnEnd = Box<dyn FnMut(Vec<(usize, &'static str)>) + Send + Sync>;

/// Largest answer buffered whole (JSON or text); beyond it the answer is refused, not leaked.
pub const MAX_WHOLE: usize = 32 << 20;

pub struct MaskedBody {
    inner: RespBody,
    kind: Kind,
    rw: Rewriter,
    buf: BytesMut,
    /// JSON-array framing: scanner state.
    arr: ArrayState,
    done: bool,
    trailers: Option<Frame<Bytes>>,
    /// Called once with the hits when the body ends.
    on_end: Option<OnEnd>,
}

#[derive(Default)]
struct ArrayState {
    /// Bytes of `buf` already scanned.
    pos: usize,
    depth: u32,
    in_str: bool,
    esc: bool,
    /// Start of the element being read (depth went 1 → 2), relative to `buf`.
    start: Option<usize>,
}

impl MaskedBody {
    pub fn new(inner: RespBody, kind: Kind, rw: Rewriter, on_end: OnEnd) -> Self {
        Self {
            inner,
            kind,
            rw,
            buf: BytesMut::new(),
            arr: ArrayState::default(),
            done: false,
            trailers: None,
            on_end: Some(on_end),
        }
    }

    fn encode_sse(out: &mut Vec<u8>, ev: &Event, extra: &[String]) {
        if let Some(name) = &ev.0 {
            out.extend_from_slice(b"event: ");
            out.extend_from_slice(name.as_bytes());
            out.push(b'\n');
        }
        for line in extra {
            out.extend_from_slice(line.as_bytes());
            out.push(b'\n');
        }
        out.extend_from_slice(b"data: ");
        json_into(out, &ev.1);
        out.extend_from_slice(b"\n\n");
    }

    /// One raw SSE event (without its blank line).
    fn sse_event(&mut self, raw: &[u8], out: &mut Vec<u8>) {
        let text = String::from_utf8_lossy(raw);
        let mut name = None;
        let mut data = String::new();
        let mut other = Vec::new();
        let mut has_data = false;
        for line in text.lines() {
            if let Some(v) = line.strip_prefix("data:") {
                if has_data {
                    data.push('\n');
                }
                data.push_str(v.strip_prefix(' ').unwrap_or(v));
                has_data = true;
            } else if let Some(v) = line.strip_prefix("event:") {
                name = Some(v.trim_start().to_string());
            } else {
                other.push(line.to_string());
            }
        }
        let parsed: Option<Value> = has_data.then(|| serde_json::from_str(&data).ok()).flatten();
        match parsed {
            Some(v) => {
                for ev in self.rw.event(name, v) {
                    Self::encode_sse(out, &ev, &other);
                }
            }
            None => {
                // `[DONE]`, comments, keep-alives: the end of every open block first.
                if has_data && data.trim() == "[DONE]" {
                    for ev in self.rw.finish() {
                        Self::encode_sse(out, &ev, &[]);
                    }
                }
                out.extend_from_slice(&self.rw.mask_bytes(text.as_bytes()));
                out.extend_from_slice(b"\n\n");
            }
        }
    }

    /// Consume complete SSE events from `buf`.
    fn drain_sse(&mut self, out: &mut Vec<u8>) {
        loop {
            let b = &self.buf[..];
            let end = find_blank(b);
            let Some((at, len)) = end else { break };
            let raw = self.buf.split_to(at + len);
            self.sse_event(&raw[..at], out);
        }
    }

    /// Consume complete elements of a JSON-array stream from `buf`.
    fn drain_array(&mut self, out: &mut Vec<u8>) {
        let mut emitted = 0;
        let mut st = std::mem::take(&mut self.arr);
        let buf = std::mem::take(&mut self.buf);
        let mut i = st.pos;
        while i < buf.len() {
            let c = buf[i];
            if st.in_str {
                if st.esc {
                    st.esc = false;
                } else if c == b'\\' {
                    st.esc = true;
                } else if c == b'"' {
                    st.in_str = false;
                }
            } else {
                match c {
                    b'"' => st.in_str = true,
                    b'{' | b'[' => {
                        st.depth += 1;
                        if st.depth == 2 {
                            st.start = Some(i);
                        }
                    }
                    b'}' | b']' => {
                        if st.depth == 1 && c == b']' {
                            // End of the array: release what is still held first.
                            out.extend_from_slice(&buf[emitted..i]);
                            for ev in self.rw.finish() {
                                out.extend_from_slice(b",\r\n");
                                json_into(out, &ev.1);
                            }
                            emitted = i;
                        }
                        st.depth = st.depth.saturating_sub(1);
                        if st.depth == 1
                            && let Some(s) = st.start.take()
                        {
                            out.extend_from_slice(&buf[emitted..s]);
                            let elem = &buf[s..=i];
                            match serde_json::from_slice::<Value>(elem) {
                                Ok(v) => {
                                    let evs = self.rw.event(None, v);
                                    let n = evs.len();
                                    for (k, ev) in evs.into_iter().enumerate() {
                                        json_into(out, &ev.1);
                                        if k + 1 < n {
                                            out.extend_from_slice(b",\r\n");
                                        }
                                    }
                                }
                                Err(_) => out.extend_from_slice(&self.rw.mask_bytes(elem)),
                            }
                            emitted = i + 1;
                        }
                    }
                    _ => {}
                }
            }
            i += 1;
        }
        // Out goes everything but the element being read.
        let keep = st.start.unwrap_or(buf.len()).max(emitted);
        out.extend_from_slice(&buf[emitted..keep]);
        let mut buf = buf;
        let _ = buf.split_to(keep);
        if let Some(s) = st.start.as_mut() {
            *s -= keep;
        }
        st.pos = buf.len();
        self.buf = buf;
        self.arr = st;
    }

    fn whole(&mut self) -> Bytes {
        let raw = std::mem::take(&mut self.buf);
        match self.kind {
            Kind::Json => match serde_json::from_slice::<Value>(&raw) {
                Ok(mut v) => {
                    let before = self.rw.hits.len();
                    self.rw.drop_flagged_thinking(&mut v);
                    self.rw.mask_leaves(&mut v, &mut String::new(), &[]);
                    if self.rw.hits.len() == before {
                        // Nothing found: the answer goes out byte for byte as it came.
                        return raw.freeze();
                    }
                    let mut out = Vec::with_capacity(raw.len());
                    json_into(&mut out, &v);
                    Bytes::from(out)
                }
                Err(_) => self.text_whole(raw),
            },
            _ => self.text_whole(raw),
        }
    }

    /// A body masked as one text; without a hit it goes out byte for byte.
    fn text_whole(&mut self, raw: BytesMut) -> Bytes {
        match self.rw.mask_whole(&String::from_utf8_lossy(&raw)) {
            Some(masked) => Bytes::from(masked),
            None => raw.freeze(),
        }
    }

    fn end(&mut self) -> Option<Bytes> {
        self.done = true;
        let out = match self.kind {
            Kind::Sse => {
                let mut out = Vec::new();
                if !self.buf.is_empty() {
                    let raw = std::mem::take(&mut self.buf);
                    self.sse_event(&raw, &mut out);
                }
                for ev in self.rw.finish() {
                    Self::encode_sse(&mut out, &ev, &[]);
                }
                Bytes::from(out)
            }
            Kind::JsonArray => {
                let rest = std::mem::take(&mut self.buf);
                Bytes::from(self.rw.mask_bytes(&rest))
            }
            Kind::Json | Kind::Text => self.whole(),
        };
        self.report();
        self.on_end = None;
        (!out.is_empty()).then_some(out)
    }

    /// Hand the hits found so far to `on_end`.
    fn report(&mut self) {
        if let Some(f) = self.on_end.as_mut() {
            let hits = self.rw.take_hits();
            if !hits.is_empty() {
                f(hits);
            }
        }
    }
}

/// The first blank line (event end) in `b`: (offset, its length).
fn find_blank(b: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\n' {
            if b.get(i + 1) == Some(&b'\n') {
                return Some((i, 2));
            }
            if b.get(i + 1) == Some(&b'\r') && b.get(i + 2) == Some(&b'\n') {
                return Some((i, 3));
            }
        }
        i += 1;
    }
    None
}

impl Body for MaskedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            if self.done {
                return Poll::Ready(self.trailers.take().map(Ok));
            }
            let this = &mut *self;
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                None => return Poll::Ready(this.end().map(|b| Ok(Frame::data(b)))),
                Some(Err(e)) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                Some(Ok(frame)) => {
                    let data = match frame.into_data() {
                        Ok(d) => d,
                        Err(frame) => {
                            // Trailers end the body: what is still held goes out first.
                            this.trailers = Some(frame);
                            if let Some(b) = this.end() {
                                return Poll::Ready(Some(Ok(Frame::data(b))));
                            }
                            return Poll::Ready(this.trailers.take().map(Ok));
                        }
                    };
                    this.buf.extend_from_slice(&data);
                    let mut out = Vec::new();
                    match this.kind {
                        Kind::Sse => this.drain_sse(&mut out),
                        Kind::JsonArray => this.drain_array(&mut out),
                        Kind::Json | Kind::Text => {
                            if this.buf.len() > MAX_WHOLE {
                                this.done = true;
                                return Poll::Ready(Some(
                                    Err("answer too large to inspect".into()),
                                ));
                            }
                        }
                    }
                    if !out.is_empty() {
                        this.report();
                        return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                    }
                }
            }
        }
    }
}

impl Drop for MaskedBody {
    fn drop(&mut self) {
        // Ended early (the client went away): the hits so far still go on record.
        self.report();
    }
}

/// Append `v` as JSON (no intermediate string; writing to a Vec cannot fail).
fn json_into(out: &mut Vec<u8>, v: &Value) {
    serde_json::to_writer(&mut *out, v).expect("JSON into a Vec");
}

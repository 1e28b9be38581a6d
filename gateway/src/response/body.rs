//! The masked answer as an [`http_body::Body`]: frames of the provider's body are decoded as
//! they arrive and whatever is complete goes out at once, re-encoded — or byte for byte when
//! nothing in it changed.
//!
//! The framing is found by content, not by what the answer claims ([`Kind::Sniff`]): server-
//! sent events by their field lines (`data:`, `event:`, `id:`, `retry:`, `:` comments; CRLF,
//! LF or bare CR line ends), a JSON array element by element, JSON values one after another
//! (one document, or NDJSON), any other text through a streaming masker, and bytes (audio,
//! images) scanned without being altered — a hit there ends the answer with an error. AWS
//! event-stream messages (Bedrock) are known by their prelude's CRC whatever the answer's
//! content type says, and decoded message by message ([`super::eventstream`]); an error there
//! ends the answer with an event-stream exception message first, so the client's SDK reports it.
//! Every buffer is bounded; an event or document beyond the bound ends the answer with an
//! error rather than passing unread.

use std::{
    pin::Pin,
    sync::{Arc, atomic::AtomicBool},
    task::{Context, Poll, ready},
};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame};
use serde_json::Value;

use super::{Event, Rewriter};
use crate::{
    policy::scan::{Ctx, Direction, Effect, StreamMasker},
    upstream::pool::{BoxError, RespBody},
};

/// How the answer is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sse,
    JsonArray,
    /// JSON values one after another: a single document, or NDJSON.
    Json,
    /// Any other text: masked as it streams.
    Text,
    /// Not text: scanned, never altered.
    Bytes,
    /// Decided by the first bytes.
    Sniff,
    /// Decided by the first bytes, for an answer that says it is an event stream.
    SniffSse,
    /// AWS event-stream messages.
    EventStream,
    /// Decided by the first bytes, for an answer that says it is an AWS event stream (or whose
    /// endpoint streams them): anything but a JSON document is read as one.
    SniffEventStream,
}

/// Told the (rule index, detector) of the hits as the answer streams: those of each piece
/// before it goes out, the rest when the answer ends (or is dropped).
pub type OnEnd = Box<dyn FnMut(Vec<(usize, &'static str)>) + Send + Sync>;

/// Largest JSON document (or array element) buffered whole; beyond it the answer ends with an
/// error, never unread.
pub const MAX_WHOLE: usize = 32 << 20;

/// Largest single server-sent event.
pub const MAX_EVENT: usize = 16 << 20;

pub struct MaskedBody {
    inner: RespBody,
    kind: Kind,
    rw: Rewriter,
    buf: BytesMut,
    /// JSON values / array elements: scanner state.
    split: Splitter,
    /// Text: the masker, and bytes of an unfinished UTF-8 character.
    text: Option<StreamMasker>,
    /// Bytes: the tail kept as look-behind for matches across frames.
    tail: Vec<u8>,
    done: bool,
    trailers: Option<Frame<Bytes>>,
    /// Called with the hits as they are found.
    on_end: Option<OnEnd>,
    /// Set when the provider's closing event (`[DONE]`, `message_stop`, the array's end)
    /// has been decoded: the answer is complete for the client from there.
    complete: Option<Arc<AtomicBool>>,
    /// The error to end with once the frame before it (an event-stream exception) is out.
    failed: Option<BoxError>,
}

/// Finds complete JSON values at one depth in a byte stream.
#[derive(Default)]
struct Splitter {
    /// Bytes of `buf` already scanned.
    pos: usize,
    depth: u32,
    in_str: bool,
    esc: bool,
    /// Start of the value being read, relative to `buf`.
    start: Option<usize>,
}

impl MaskedBody {
    pub fn new(inner: RespBody, kind: Kind, rw: Rewriter, on_end: OnEnd) -> Self {
        Self {
            inner,
            kind,
            rw,
            buf: BytesMut::new(),
            split: Splitter::default(),
            text: None,
            tail: Vec::new(),
            done: false,
            trailers: None,
            on_end: Some(on_end),
            complete: None,
            failed: None,
        }
    }

    /// Be told when the provider's closing event has been decoded.
    pub fn with_completion(mut self, c: Arc<AtomicBool>) -> Self {
        self.complete = Some(c);
        self
    }

    fn completed(&self) {
        if let Some(c) = &self.complete {
            c.store(true, std::sync::atomic::Ordering::Release);
        }
    }

    /// The framing the first bytes show (`None`: not enough bytes yet). `sse`: the answer
    /// says it is an event stream (text that is not clearly something else is read as one).
    fn sniff(b: &[u8], end: bool, sse: bool, es: bool) -> Option<Kind> {
        // An event-stream message: its prelude's CRC says so (a length under 16 MiB starts
        // with a zero byte, which text could too: wait for the whole prelude).
        match super::eventstream::prelude_ok(b) {
            Some(true) => return Some(Kind::EventStream),
            None if !end && b.first().is_none_or(|c| *c == 0) => return None,
            _ => {}
        }
        if es {
            let first = b.iter().find(|c| !c.is_ascii_whitespace());
            return match first {
                Some(b'{') => Some(Kind::Json),
                None if end => Some(Kind::Text),
                None => None,
                _ => Some(Kind::EventStream),
            };
        }
        let b = b.strip_prefix(b"\xef\xbb\xbf").unwrap_or(b);
        let Some(at) = b.iter().position(|c| !c.is_ascii_whitespace()) else {
            return end.then_some(if sse { Kind::Sse } else { Kind::Text });
        };
        let rest = &b[at..];
        match rest[0] {
            b'{' => return Some(Kind::Json),
            b'[' => return Some(Kind::JsonArray),
            b':' => return Some(Kind::Sse),
            _ => {}
        }
        for field in [&b"data:"[..], b"event:", b"id:", b"retry:"] {
            if rest.len() >= field.len() && rest[..field.len()] == *field {
                return Some(Kind::Sse);
            }
            if !end && rest.len() < field.len() && field.starts_with(rest) {
                return None;
            }
        }
        if sse && std::str::from_utf8(b).is_ok() {
            return Some(Kind::Sse);
        }
        match std::str::from_utf8(b) {
            Ok(_) => Some(Kind::Text),
            // An unfinished character at the end of what arrived so far.
            Err(e) if e.error_len().is_none() && !end && b.len() < 64 => None,
            Err(e) if e.error_len().is_none() => Some(Kind::Text),
            Err(_) => Some(Kind::Bytes),
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

    /// One raw SSE event: `raw[..body]` its lines, the rest its terminating blank line.
    fn sse_event(&mut self, raw: &[u8], body: usize, out: &mut Vec<u8>) {
        let text = String::from_utf8_lossy(&raw[..body]);
        let mut name: Option<String> = None;
        let mut data = String::new();
        let mut other = Vec::new();
        let mut has_data = false;
        for line in split_lines(&text) {
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line, ""),
            };
            match field {
                "data" => {
                    if has_data {
                        data.push('\n');
                    }
                    data.push_str(value);
                    has_data = true;
                }
                "event" => name = Some(value.to_string()),
                // Comments, `id:`, `retry:` and unknown fields: masked like any text.
                _ => other.push(line.to_string()),
            }
        }
        // The name and the other lines are text a client may read.
        let mut altered = false;
        if let Some(n) = name.as_mut()
            && let Some(m) = self.rw.mask_whole(n)
        {
            *n = m;
            altered = true;
        }
        for l in other.iter_mut() {
            if let Some(m) = self.rw.mask_whole(l) {
                *l = m;
                altered = true;
            }
        }
        self.rw.take_altered();
        let parsed: Option<Value> = has_data.then(|| serde_json::from_str(&data).ok()).flatten();
        match parsed {
            Some(v) => {
                let closing = v.get("type").and_then(Value::as_str) == Some("message_stop");
                let evs = self.rw.event(name, v);
                altered |= self.rw.take_altered();
                if altered {
                    for ev in &evs {
                        Self::encode_sse(out, ev, &other);
                    }
                } else {
                    out.extend_from_slice(raw);
                }
                if closing {
                    self.completed();
                }
            }
            None => {
                if has_data && data.trim() == "[DONE]" {
                    // The end of every open block first.
                    for ev in self.rw.finish() {
                        Self::encode_sse(out, &ev, &[]);
                    }
                    self.rw.take_altered();
                    self.completed();
                }
                if has_data && let Some(m) = self.rw.mask_whole(&data) {
                    data = m;
                    altered = true;
                }
                self.rw.take_altered();
                if !altered {
                    out.extend_from_slice(raw);
                    return;
                }
                if let Some(n) = &name {
                    out.extend_from_slice(format!("event: {n}\n").as_bytes());
                }
                for l in &other {
                    out.extend_from_slice(l.as_bytes());
                    out.push(b'\n');
                }
                if has_data {
                    for l in data.split('\n') {
                        out.extend_from_slice(b"data: ");
                        out.extend_from_slice(l.as_bytes());
                        out.push(b'\n');
                    }
                }
                out.push(b'\n');
            }
        }
    }

    /// Consume complete SSE events from `buf`.
    fn drain_sse(&mut self, out: &mut Vec<u8>, end: bool) -> Result<(), BoxError> {
        while let Some((body, len)) = event_end(&self.buf, end) {
            let raw = self.buf.split_to(len);
            self.sse_event(&raw, body, out);
        }
        if end && !self.buf.is_empty() {
            let raw = std::mem::take(&mut self.buf);
            let n = raw.len();
            self.sse_event(&raw, n, out);
        }
        if self.buf.len() > MAX_EVENT {
            return Err(format!(
                "an answer event is larger than {MAX_EVENT} bytes; the answer was cut"
            )
            .into());
        }
        Ok(())
    }

    /// One complete JSON value (a document, an NDJSON line, an array element).
    fn json_value(&mut self, raw: &[u8], out: &mut Vec<u8>) {
        match serde_json::from_slice::<Value>(raw) {
            Ok(mut v) => {
                self.rw.take_altered();
                self.rw.drop_flagged_thinking(&mut v);
                let evs = self.rw.event(None, v);
                if !self.rw.take_altered() && evs.len() == 1 {
                    out.extend_from_slice(raw);
                    return;
                }
                let sep: &[u8] = if self.kind == Kind::JsonArray {
                    b",\r\n"
                } else {
                    b"\n"
                };
                let n = evs.len();
                for (k, ev) in evs.into_iter().enumerate() {
                    json_into(out, &ev.1);
                    if k + 1 < n {
                        out.extend_from_slice(sep);
                    }
                }
            }
            Err(_) => out.extend_from_slice(&self.rw.mask_bytes(raw)),
        }
    }

    /// Consume complete values at the stream's value depth (0: JSON values one after another;
    /// 1: the elements of a JSON array).
    fn drain_values(&mut self, out: &mut Vec<u8>) -> Result<(), BoxError> {
        let level: u32 = if self.kind == Kind::JsonArray { 1 } else { 0 };
        let mut emitted = 0;
        let mut st = std::mem::take(&mut self.split);
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
                        if st.depth == level + 1 {
                            // Between values: separators (and anything else) as text.
                            out.extend_from_slice(&self.rw.mask_bytes(&buf[emitted..i]));
                            emitted = i;
                            st.start = Some(i);
                        }
                    }
                    b'}' | b']' => {
                        if level == 1 && st.depth == 1 && c == b']' {
                            // End of the array: release what is still held first.
                            out.extend_from_slice(&buf[emitted..i]);
                            for ev in self.rw.finish() {
                                out.extend_from_slice(b",\r\n");
                                json_into(out, &ev.1);
                            }
                            self.rw.take_altered();
                            emitted = i;
                            self.completed();
                        }
                        st.depth = st.depth.saturating_sub(1);
                        if st.depth == level
                            && let Some(s) = st.start.take()
                        {
                            out.extend_from_slice(&buf[emitted..s]);
                            self.json_value(&buf[s..=i], out);
                            emitted = i + 1;
                        }
                    }
                    _ => {}
                }
            }
            i += 1;
        }
        // Out goes everything but the value being read.
        let keep = st.start.unwrap_or(buf.len()).max(emitted);
        if st.start.is_none() && level == 0 {
            // Between values: hold whitespace back only as far as text could still matter.
            out.extend_from_slice(&self.rw.mask_bytes(&buf[emitted..keep]));
        } else {
            out.extend_from_slice(&buf[emitted..keep]);
        }
        let mut buf = buf;
        let _ = buf.split_to(keep);
        if let Some(s) = st.start.as_mut() {
            *s -= keep;
        }
        st.pos = buf.len();
        self.buf = buf;
        self.split = st;
        if self.buf.len() > MAX_WHOLE {
            return Err(format!(
                "an answer document is larger than {MAX_WHOLE} bytes; it was not passed on unread"
            )
            .into());
        }
        Ok(())
    }

    /// Text: as much as the masker releases.
    fn drain_text(&mut self, out: &mut Vec<u8>, end: bool) {
        let valid = match std::str::from_utf8(&self.buf) {
            Ok(_) => self.buf.len(),
            Err(e) if e.error_len().is_none() && !end => e.valid_up_to(),
            Err(_) => {
                // Not text after all from here: masked as lossy text (no byte is passed unread).
                let lossy = String::from_utf8_lossy(&self.buf).into_owned();
                self.buf = BytesMut::from(lossy.as_bytes());
                self.buf.len()
            }
        };
        let chunk = self.buf.split_to(valid);
        let s = std::str::from_utf8(&chunk).expect("checked");
        let m = self.text.get_or_insert_with(|| self.rw.stream_masker());
        out.extend_from_slice(m.push(s).as_bytes());
        if end {
            out.extend_from_slice(m.finish().as_bytes());
        }
        let hits = std::mem::take(&mut m.hits);
        self.rw.hits.extend(hits);
    }

    /// Bytes: scanned with the tail of the last frame as context; passed unaltered, or the
    /// answer ends with an error when something would have to be masked.
    fn scan_bytes(&mut self, out: &mut Vec<u8>) -> Result<(), BoxError> {
        let chunk = self.buf.split();
        let mut hay = std::mem::take(&mut self.tail);
        let from = hay.len();
        hay.extend_from_slice(&chunk);
        let hits = self.rw.find_bytes(&hay);
        let fresh: Vec<_> = hits.iter().filter(|h| h.end > from).collect();
        if let Some(h) = fresh.iter().find(|h| h.effect != Effect::Record) {
            self.rw.hits.push((h.rule, h.detector));
            return Err(format!(
                "the answer carried a secret ({}) in binary data, where it cannot be masked; the answer was cut",
                h.detector
            )
            .into());
        }
        self.rw
            .hits
            .extend(fresh.iter().map(|h| (h.rule, h.detector)));
        out.extend_from_slice(&chunk);
        let keep = self.rw.max_len().min(hay.len());
        self.tail = hay[hay.len() - keep..].to_vec();
        Ok(())
    }

    /// Decode what is buffered; `end`: the body ended.
    fn drain(&mut self, out: &mut Vec<u8>, end: bool) -> Result<(), BoxError> {
        if matches!(
            self.kind,
            Kind::Sniff | Kind::SniffSse | Kind::SniffEventStream
        ) {
            let sse = self.kind == Kind::SniffSse;
            let es = self.kind == Kind::SniffEventStream;
            match Self::sniff(&self.buf, end, sse, es) {
                Some(k) => self.kind = k,
                None if self.buf.len() > 4096 => self.kind = Kind::Text,
                None => return Ok(()),
            }
        }
        match self.kind {
            Kind::Sse => self.drain_sse(out, end)?,
            Kind::JsonArray | Kind::Json => {
                self.drain_values(out)?;
                if end && !self.buf.is_empty() {
                    // An unfinished value at the end: masked as text.
                    let rest = std::mem::take(&mut self.buf);
                    out.extend_from_slice(&self.rw.mask_bytes(&rest));
                }
            }
            Kind::Text => self.drain_text(out, end),
            Kind::Bytes => self.scan_bytes(out)?,
            Kind::EventStream => {
                if super::eventstream::drain(&mut self.rw, &mut self.buf, out, end)? {
                    self.completed();
                }
            }
            Kind::Sniff | Kind::SniffSse | Kind::SniffEventStream => {
                unreachable!("decided above")
            }
        }
        if end && !matches!(self.kind, Kind::JsonArray | Kind::EventStream) {
            for ev in self.rw.finish() {
                if self.kind == Kind::Sse {
                    Self::encode_sse(out, &ev, &[]);
                } else {
                    json_into(out, &ev.1);
                    out.push(b'\n');
                }
            }
        }
        Ok(())
    }

    fn end(&mut self) -> Result<Option<Bytes>, BoxError> {
        self.done = true;
        let mut out = Vec::new();
        let r = self.drain(&mut out, true);
        self.report();
        self.on_end = None;
        if let Err(e) = r {
            return self.fail(e, out).map(Some);
        }
        Ok((!out.is_empty()).then(|| Bytes::from(out)))
    }

    /// The answer cannot go on: an event stream gets what was masked so far and an exception
    /// message saying why, then the error; any other framing the error at once.
    fn fail(&mut self, e: BoxError, mut out: Vec<u8>) -> Result<Bytes, BoxError> {
        self.done = true;
        tracing::warn!(error = %e, "answer ended by the gateway");
        if self.kind != Kind::EventStream {
            return Err(e);
        }
        super::eventstream::exception(
            super::eventstream::GATEWAY_EXCEPTION,
            &format!("gateway: {e}"),
        )
        .encode(&mut out);
        self.failed = Some(e);
        Ok(Bytes::from(out))
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

/// Lines of an SSE event: ended by CRLF, LF or CR.
fn split_lines(s: &str) -> impl Iterator<Item = &str> {
    let mut rest = s;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let at = rest.find(['\r', '\n']).unwrap_or(rest.len());
        let line = &rest[..at];
        let mut skip = at;
        if rest[at..].starts_with("\r\n") {
            skip += 2;
        } else if at < rest.len() {
            skip += 1;
        }
        rest = &rest[skip..];
        Some(line)
    })
}

/// The end of the first complete event in `b`: (where its lines end, where the blank line
/// after them ends). Line ends are CRLF, LF or CR; a CR at the very end waits for the next byte
/// unless the body ended.
fn event_end(b: &[u8], end: bool) -> Option<(usize, usize)> {
    let mut i = 0;
    let mut line_start = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'\n' || c == b'\r' {
            let tl = if c == b'\r' {
                match b.get(i + 1) {
                    Some(b'\n') => 2,
                    Some(_) => 1,
                    None if end => 1,
                    None => return None,
                }
            } else {
                1
            };
            if i == line_start {
                return Some((line_start, i + tl));
            }
            i += tl;
            line_start = i;
            continue;
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
                if let Some(e) = self.failed.take() {
                    self.trailers = None;
                    return Poll::Ready(Some(Err(e)));
                }
                return Poll::Ready(self.trailers.take().map(Ok));
            }
            let this = &mut *self;
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                None => return Poll::Ready(this.end().transpose().map(|r| r.map(Frame::data))),
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
                            match this.end() {
                                Ok(Some(b)) => return Poll::Ready(Some(Ok(Frame::data(b)))),
                                Ok(None) => return Poll::Ready(this.trailers.take().map(Ok)),
                                Err(e) => {
                                    this.trailers = None;
                                    return Poll::Ready(Some(Err(e)));
                                }
                            }
                        }
                    };
                    this.buf.extend_from_slice(&data);
                    let mut out = Vec::new();
                    if let Err(e) = this.drain(&mut out, false) {
                        this.report();
                        return Poll::Ready(Some(this.fail(e, out).map(Frame::data)));
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

impl Rewriter {
    /// A streaming masker for a text answer, as this answer's masker sees it.
    fn stream_masker(&self) -> StreamMasker {
        StreamMasker::new(self.scanner.clone(), Direction::Response, self.id.clone())
    }

    fn find_bytes(&self, hay: &[u8]) -> Vec<crate::policy::scan::Hit> {
        self.scanner.find(
            hay,
            0,
            Ctx {
                dir: Direction::Response,
                id: &self.id,
            },
        )
    }

    fn max_len(&self) -> usize {
        self.scanner.max_len
    }
}

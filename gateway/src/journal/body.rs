//! The answer's body on its way to the client, recorded: every frame's time and size, the
//! bytes (as delivered, up to `journal.max_body`), and at its end the record written — the
//! last frame (or the end of the stream) reaches the client only once the record is durable,
//! so an answer the client saw complete is always in the journal.

use std::{
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt as _;

use super::{Ack, Decision, Exchange};
use crate::{http::RespBody, upstream::pool::BoxError};

/// Verdicts found while the answer streamed (filled by the masker, read at the end).
pub type Found = Arc<Mutex<Vec<Decision>>>;

pub struct JournalBody {
    inner: RespBody,
    ex: Option<Exchange>,
    found: Option<Found>,
    kept: Vec<u8>,
    limit: Option<usize>,
    /// Waiting for the record to be durable, with the frame to deliver then (`None`: the end).
    waiting: Option<(Option<Frame<Bytes>>, Ack)>,
    done: bool,
}

impl JournalBody {
    /// `text`: the answer is text (JSON, SSE, text/*): kept; other answers (audio, files) are
    /// counted only.
    pub fn new(inner: RespBody, ex: Exchange, found: Option<Found>, text: bool) -> Self {
        let limit = ex.body_limit().filter(|_| text);
        Self {
            inner,
            ex: Some(ex),
            found,
            kept: Vec::new(),
            limit,
            waiting: None,
            done: false,
        }
    }

    fn take(&mut self, data: &Bytes) {
        let Some(ex) = self.ex.as_mut() else {
            return;
        };
        let at_ms = ex.elapsed_ms();
        ex.rec.response_bytes += data.len() as u64;
        let kept = match self.limit {
            Some(max) => {
                let room = max.saturating_sub(self.kept.len());
                let n = data.len().min(room);
                self.kept.extend_from_slice(&data[..n]);
                if n < data.len() {
                    ex.rec.truncated = true;
                }
                n
            }
            None => 0,
        };
        ex.rec.events.push(super::Event {
            at_ms: (at_ms * 1000.0).round() / 1000.0,
            len: kept,
        });
    }

    /// Write the record; `Some(ack)` when the caller should wait for it.
    fn seal(&mut self, outcome: &str) -> Option<Ack> {
        let mut ex = self.ex.take()?;
        if self.limit.is_some() {
            ex.rec.response_body = Some(String::from_utf8_lossy(&self.kept).into_owned());
        }
        if let Some(found) = self.found.take()
            && let Ok(mut f) = found.lock()
        {
            for d in f.drain(..) {
                ex.decision(d);
            }
        }
        ex.finish(outcome)
    }
}

impl Body for JournalBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some((_, ack)) = this.waiting.as_mut() {
            let r = ready!(Pin::new(ack).poll(cx));
            let (frame, _) = this.waiting.take().expect("waiting");
            let failed = match r {
                Ok(Ok(_)) => None,
                Ok(Err(e)) => Some(e),
                Err(_) => Some("the journal writer is gone".to_string()),
            };
            if let Some(e) = failed {
                tracing::error!(error = %e, "journal record not durable; answer delivered anyway");
            }
            return Poll::Ready(frame.map(Ok));
        }
        if this.done {
            return Poll::Ready(None);
        }
        match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => {
                let Some(data) = frame.data_ref() else {
                    return Poll::Ready(Some(Ok(frame)));
                };
                let data = data.clone();
                this.take(&data);
                // The last frame, or the provider's last event: SDKs stop reading there and
                // hang up, so it counts as the end the client sees. It goes out once its record
                // is durable. After a closing event the stream is still passed on to its real
                // end: ending it early would leave the provider's HTTP/1.1 connection busy
                // draining, and the client's next request would need a new one.
                let end = this.inner.is_end_stream();
                if end || final_event(&data) {
                    this.done = end;
                    if let Some(ack) = this.seal("completed") {
                        this.waiting = Some((Some(frame), ack));
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            None => {
                this.done = true;
                if let Some(ack) = this.seal("completed") {
                    this.waiting = Some((None, ack));
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Poll::Ready(None)
            }
            Some(Err(e)) => {
                this.done = true;
                if let Some(ex) = this.ex.as_mut() {
                    ex.rec
                        .gateway_error
                        .get_or_insert_with(|| "upstream_stream".into());
                }
                drop(this.seal("upstream_error"));
                Poll::Ready(Some(Err(e)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.waiting.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

use std::future::Future as _;

impl Drop for JournalBody {
    fn drop(&mut self) {
        // Dropped before its end: the client went away (or hyper gave up on it); what it got
        // so far is recorded — with the masker's hits, which it reports when dropped.
        if self.ex.is_some() {
            self.inner = http_body_util::Empty::new()
                .map_err(|n: std::convert::Infallible| match n {})
                .boxed();
            drop(self.seal("client_gone"));
        }
    }
}

/// Does this piece of an answer end with a provider's closing event (OpenAI's `[DONE]`,
/// Anthropic's `message_stop`)?
fn final_event(data: &[u8]) -> bool {
    let tail = &data[data.len().saturating_sub(96)..];
    let has = |needle: &[u8]| tail.windows(needle.len()).any(|w| w == needle);
    has(b"data: [DONE]") || has(b"event: message_stop")
}

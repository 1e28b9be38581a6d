//! The answer's body on its way to the client, recorded: every frame's time and size, the
//! bytes (as delivered, up to `journal.max_body`), and at its end the record written — the
//! last frame (or the end of the stream) reaches the client only once the record is durable,
//! so an answer the client saw complete is always in the journal. When the record cannot be
//! written, the client gets an error in its place (an h2 reset; an HTTP/1.1 connection closed
//! before the last chunk): an incomplete answer, never a complete unrecorded one.
//!
//! Where the answer ends is decided by the stream's decoder, never by looking for bytes in
//! it: the decoder sets a [`Completion`] when the provider's closing event passed (OpenAI's
//! `[DONE]`, Anthropic's `message_stop`, the end of a JSON array stream). Without one, the
//! record is sealed at the body's real end.

use std::{
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt as _;

use super::{Ack, Decision, Exchange};
use crate::{http::RespBody, upstream::pool::BoxError};

/// Verdicts found while the answer streamed (filled by the masker, read at the end).
pub type Found = Arc<Mutex<Vec<Decision>>>;

/// Set by the response decoder once the provider's closing event has passed through: the
/// answer is complete for the client (SDKs stop reading there and hang up), so the frame
/// that carried it is the last one withheld until the record is durable.
#[derive(Debug, Clone, Default)]
pub struct Completion(Arc<AtomicBool>);

impl Completion {
    pub fn new() -> Self {
        Self::default()
    }

    /// The closing event passed (called by the decoder, before it yields the frame).
    pub fn complete(&self) {
        self.0.store(true, Ordering::Release);
    }

    pub fn is_complete(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// The flag the response decoder sets ([`crate::response::body::MaskedBody::with_completion`]).
impl From<Arc<AtomicBool>> for Completion {
    fn from(flag: Arc<AtomicBool>) -> Self {
        Self(flag)
    }
}

/// Fields of the record that are known only once the body has run: a held stream is answered
/// 200 at once, and its decision, and the provider's status, come later ([`JournalBody::with_late`]).
#[derive(Debug, Default)]
pub struct LateFields {
    pub approval: Option<super::Approval>,
    pub status: Option<u16>,
    pub gateway_error: Option<String>,
}

pub type Late = Arc<Mutex<LateFields>>;

/// The error a client's answer ends with when its record could not be written.
#[derive(Debug, thiserror::Error)]
#[error("gateway: the journal could not record this answer ({0}); the answer is cut short")]
pub struct Unrecorded(String);

pub struct JournalBody {
    inner: RespBody,
    ex: Option<Exchange>,
    found: Option<Found>,
    completion: Option<Completion>,
    /// `journal.deliver_unrecorded`.
    deliver_unrecorded: bool,
    /// The gateway's own error answer (a refusal: nothing of the provider's is in it): it
    /// reaches the client even when its record fails.
    refusal: bool,
    kept: Vec<u8>,
    limit: Option<usize>,
    late: Option<Late>,
    /// An AWS event-stream answer: kept as the text of its messages, one JSON line each
    /// ([`crate::response::eventstream::text`]), not as binary frames.
    transcript: Option<crate::response::eventstream::text::Transcript>,
    /// Waiting for the record to be durable, with the frame to deliver then (`None`: the end).
    waiting: Option<(Option<Frame<Bytes>>, Ack)>,
    done: bool,
}

impl JournalBody {
    /// `text`: the answer is text (JSON, SSE, text/*): kept; other answers (audio, files) are
    /// counted only. `completion`: set by the decoder at the provider's closing event (`None`:
    /// the answer ends where its body ends).
    pub fn new(
        inner: RespBody,
        ex: Exchange,
        found: Option<Found>,
        text: bool,
        completion: Option<Completion>,
    ) -> Self {
        let limit = ex.body_limit().filter(|_| text);
        let deliver_unrecorded = ex
            .journal
            .as_ref()
            .is_some_and(|j| j.cfg.deliver_unrecorded);
        let refusal = ex.rec.gateway_error.is_some();
        Self {
            refusal,
            inner,
            ex: Some(ex),
            found,
            completion,
            deliver_unrecorded,
            kept: Vec::new(),
            limit,
            late: None,
            transcript: None,
            waiting: None,
            done: false,
        }
    }

    /// Record fields the body fills in as it runs, applied when the record is written.
    pub fn with_late(mut self, late: Option<Late>) -> Self {
        self.late = late;
        self
    }

    /// The answer says it is an AWS event stream (`application/vnd.amazon.eventstream`): kept
    /// as the text of its messages. (One that says otherwise but starts with a valid
    /// event-stream prelude is kept so too.)
    pub fn event_stream(mut self, claimed: bool) -> Self {
        if claimed && let Some(ex) = self.ex.as_ref() {
            self.limit = ex.body_limit();
            self.transcript = self.limit.map(|_| Default::default());
        }
        self
    }

    fn take(&mut self, data: &Bytes) {
        let Some(ex) = self.ex.as_mut() else {
            return;
        };
        let at_ms = ex.elapsed_ms();
        if ex.rec.response_bytes == 0
            && self.limit.is_some()
            && self.transcript.is_none()
            && crate::response::eventstream::prelude_ok(data) == Some(true)
        {
            self.transcript = Some(Default::default());
        }
        ex.rec.response_bytes += data.len() as u64;
        let text = match self.transcript.as_mut() {
            Some(t) if self.limit.is_some() => std::borrow::Cow::Owned(t.push(data)),
            _ => std::borrow::Cow::Borrowed(&data[..]),
        };
        let data = &text[..];
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
        if let Some(late) = self.late.take()
            && let Ok(mut l) = late.lock()
        {
            if let Some(a) = l.approval.take() {
                ex.rec.approval = Some(a);
            }
            if let Some(s) = l.status.take() {
                ex.rec.status = s;
            }
            if let Some(g) = l.gateway_error.take() {
                ex.rec.gateway_error = Some(g);
                // The stream ended with the gateway's own error event: a refusal, delivered
                // even when its record fails.
                self.refusal = true;
            }
        }
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
                let m = crate::metrics::get();
                if this.refusal {
                    // Cutting it would only hide why the request failed.
                    tracing::error!(
                        error = %e,
                        "journal record of a refusal not durable; the refusal is delivered"
                    );
                } else if this.deliver_unrecorded {
                    m.journal_unrecorded
                        .get_or_create(&crate::metrics::ResultLabels {
                            result: "delivered".into(),
                        })
                        .inc();
                    tracing::error!(
                        error = %e,
                        "journal record not durable; answer delivered anyway \
                         (journal.deliver_unrecorded = true)"
                    );
                } else {
                    m.journal_unrecorded
                        .get_or_create(&crate::metrics::ResultLabels {
                            result: "cut".into(),
                        })
                        .inc();
                    tracing::error!(
                        error = %e,
                        "journal record not durable; the answer is cut short (the client sees \
                         an incomplete answer, never a complete unrecorded one)"
                    );
                    this.done = true;
                    return Poll::Ready(Some(Err(Box::new(Unrecorded(e)))));
                }
            }
            return Poll::Ready(frame.map(Ok));
        }
        if this.done {
            return Poll::Ready(None);
        }
        match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    let data = data.clone();
                    this.take(&data);
                }
                // The last frame (data or trailers), or the one that carried the provider's
                // closing event (the decoder says so): it goes out once its record is durable.
                // After a closing event the stream is still passed on to its real end: ending
                // it early would leave the provider's HTTP/1.1 connection busy draining, and
                // the client's next request would need a new one.
                let end = this.inner.is_end_stream();
                let closed = this
                    .completion
                    .as_ref()
                    .is_some_and(Completion::is_complete);
                if end || closed {
                    this.done = end;
                    if let Some(ack) = this.seal("completed") {
                        this.waiting = Some((Some(frame), ack));
                        // Committed already with `sync = "kernel"`; else the ack wakes us.
                        return Pin::new(this).poll_frame(cx);
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            None => {
                this.done = true;
                if let Some(ack) = this.seal("completed") {
                    this.waiting = Some((None, ack));
                    return Pin::new(this).poll_frame(cx);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{Journal, JournalConfig};

    fn journal(dir: &std::path::Path, cfg: JournalConfig) -> Arc<Journal> {
        Arc::new(Journal::open(&cfg, dir).unwrap())
    }

    fn answer(frames: &[&'static str]) -> RespBody {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = frames
            .iter()
            .map(|f| Ok(Frame::data(Bytes::from_static(f.as_bytes()))))
            .collect();
        http_body_util::StreamBody::new(futures_util::stream::iter(frames)).boxed()
    }

    fn exchange(j: &Arc<Journal>) -> Exchange {
        let mut ex = Exchange::new(Some(j.clone()), &Default::default(), 1);
        ex.rec.provider = "openai".into();
        ex
    }

    const SSE: [&str; 3] = ["data: {\"a\":1}\n\n", "data: [DONE]\n\n", ": trailing\n\n"];

    #[tokio::test]
    async fn the_closing_event_is_the_decoders_word_never_the_bytes() {
        let d = tempfile::tempdir().unwrap();
        let j = journal(d.path(), JournalConfig::default());
        // No signal: `data: [DONE]` in the bytes seals nothing; the body's end does.
        let mut b = JournalBody::new(answer(&SSE), exchange(&j), None, true, None);
        for _ in 0..2 {
            b.frame().await.unwrap().unwrap();
        }
        assert_eq!(j.store.iter().count(), 0, "sealed by searching the bytes");
        b.frame().await.unwrap().unwrap();
        assert!(b.frame().await.is_none());
        assert_eq!(j.store.iter().count(), 1);
        // The signal, set as the decoder passes the closing event: the frame that carried it
        // comes once the record is durable, before the body's end.
        let done = Completion::new();
        let mut b = JournalBody::new(answer(&SSE), exchange(&j), None, true, Some(done.clone()));
        b.frame().await.unwrap().unwrap();
        done.complete();
        b.frame().await.unwrap().unwrap();
        let recs: Vec<_> = j.store.iter().map(|r| r.unwrap().1).collect();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[1]["outcome"], "completed");
        // The rest still flows to its end; nothing is recorded twice.
        b.frame().await.unwrap().unwrap();
        assert!(b.frame().await.is_none());
        drop(b);
        assert_eq!(j.store.iter().count(), 2);
        assert_eq!(j.store.verify().unwrap().broken, None);
    }

    #[tokio::test]
    async fn an_unwritable_record_ends_the_answer_with_an_error_and_refuses_the_next() {
        let d = tempfile::tempdir().unwrap();
        let fail = d.path().join("fail");
        let cfg = JournalConfig {
            fail_writes_while: Some(fail.clone()),
            ..Default::default()
        };
        let j = journal(d.path(), cfg.clone());
        assert_eq!(j.ready(), Ok(()));
        std::fs::write(&fail, "").unwrap();
        let mut b = JournalBody::new(answer(&SSE[..2]), exchange(&j), None, true, None);
        // (This body does not know its last frame is the last: its end is what is withheld.)
        b.frame().await.unwrap().unwrap();
        b.frame().await.unwrap().unwrap();
        // An error comes in the place of the end.
        let e = b.frame().await.unwrap().unwrap_err();
        assert!(e.to_string().contains("could not record"), "{e}");
        assert!(b.frame().await.is_none());
        let why = j.ready().unwrap_err();
        assert!(why.contains("fault injection"), "{why}");
        // Writable again: the writer's probe lets requests in again.
        std::fs::remove_file(&fail).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while j.ready().is_err() {
            assert!(std::time::Instant::now() < deadline, "still refused");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        drop(b);
        drop(j);
        // With the switch on, the answer is delivered whole, and nothing is refused.
        let d = tempfile::tempdir().unwrap();
        let fail = d.path().join("fail");
        std::fs::write(&fail, "").unwrap();
        let j = journal(
            d.path(),
            JournalConfig {
                fail_writes_while: Some(fail),
                deliver_unrecorded: true,
                ..Default::default()
            },
        );
        let mut b = JournalBody::new(answer(&SSE[..2]), exchange(&j), None, true, None);
        b.frame().await.unwrap().unwrap();
        b.frame().await.unwrap().unwrap();
        assert!(b.frame().await.is_none(), "the end is delivered");
        assert_eq!(j.ready(), Ok(()));
    }

    #[tokio::test]
    async fn an_event_stream_answer_is_recorded_as_the_text_of_its_messages() {
        use crate::response::eventstream::event;
        let d = tempfile::tempdir().unwrap();
        let j = journal(d.path(), JournalConfig::default());
        let mut wire = Vec::new();
        for t in ["he", "llo [MASKED:github-classic-token]"] {
            event(
                "contentBlockDelta",
                serde_json::json!({"contentBlockIndex":0,"delta":{"text":t}})
                    .to_string()
                    .into_bytes(),
            )
            .encode(&mut wire);
        }
        event("messageStop", b"{}".to_vec()).encode(&mut wire);
        // Frames that cut messages anywhere; labelled as an event stream, or sniffed.
        for claimed in [true, false] {
            let frames: Vec<Result<Frame<Bytes>, BoxError>> = wire
                .chunks(23)
                .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
                .collect();
            let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames)).boxed();
            let mut b =
                JournalBody::new(body, exchange(&j), None, !claimed, None).event_stream(claimed);
            let mut got = Vec::new();
            while let Some(f) = b.frame().await {
                got.extend_from_slice(f.unwrap().data_ref().unwrap());
            }
            assert_eq!(got, wire, "the client gets the frames unchanged");
            drop(b);
            let rec = j.store.iter().last().unwrap().unwrap().1;
            let text = rec["response_body"].as_str().unwrap();
            let lines: Vec<serde_json::Value> = text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            assert_eq!(lines.len(), 3, "{text}");
            let joined: String = lines
                .iter()
                .filter_map(|l| l["payload"]["delta"]["text"].as_str())
                .collect();
            assert_eq!(joined, "hello [MASKED:github-classic-token]");
            assert_eq!(lines[2]["headers"][":event-type"], "messageStop");
            assert_eq!(rec["response_bytes"], wire.len());
            // The timeline adds up to the text (what `gateway replay` prints).
            let lens: u64 = rec["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["len"].as_u64().unwrap())
                .sum();
            assert_eq!(lens as usize, text.len());
        }
    }

    #[tokio::test]
    async fn a_writer_that_is_gone_cuts_the_answer_and_refuses_the_next() {
        let d = tempfile::tempdir().unwrap();
        // `sync = "disk"`: records go to the writer thread.
        let cfg = JournalConfig {
            sync: crate::journal::SyncMode::Disk,
            ..Default::default()
        };
        let mut j = Journal::open(&cfg, d.path()).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        drop(rx);
        j.tx = tx;
        let j = Arc::new(j);
        let mut b = JournalBody::new(answer(&SSE[..1]), exchange(&j), None, true, None);
        b.frame().await.unwrap().unwrap();
        let e = b.frame().await.unwrap().unwrap_err();
        assert!(e.to_string().contains("could not record"), "{e}");
        let why = j.ready().unwrap_err();
        assert!(why.contains("writer has stopped"), "{why}");
    }

    #[tokio::test]
    async fn a_committer_that_cannot_commit_cuts_the_answer_and_refuses_the_next() {
        // `sync = "kernel"` (the default): records are committed on the exchange's thread. A
        // thread that panicked while committing leaves the chain's state unusable.
        let d = tempfile::tempdir().unwrap();
        let j = Arc::new(Journal::open(&JournalConfig::default(), d.path()).unwrap());
        let c = j.inline.clone().expect("kernel mode commits inline");
        std::thread::spawn(move || {
            let _held = c.chain.lock();
            panic!("a commit panicked");
        })
        .join()
        .unwrap_err();
        let mut b = JournalBody::new(answer(&SSE[..1]), exchange(&j), None, true, None);
        b.frame().await.unwrap().unwrap();
        let e = b.frame().await.unwrap().unwrap_err();
        assert!(e.to_string().contains("could not record"), "{e}");
        let why = j.ready().unwrap_err();
        assert!(why.contains("poisoned"), "{why}");
    }
}

//! HTTP/2 to the provider with the `h2` crate directly: the request task hands its stream to the
//! connection task and awaits the answer itself. hyper's h2 client routes every request through
//! a dispatch channel to its own connection task and a spawned per-request future first — two
//! more task wakeups per request, about 30 µs of the proxy's added latency (BENCHMARKS.md).
//!
//! One connection per (destination, SNI), opened by one request at a time (the others wait for
//! it), reopened when the provider closes it. The request body is piped by a task of its own
//! under h2 flow control; the answer streams back frame by frame, releasing window as the
//! client's side takes each frame.

use std::{
    pin::Pin,
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use http::{Request, Response, header::HOST};
use http_body::{Body, Frame};
use http_body_util::BodyExt as _;
use tracing::debug;

use super::pool::{BoxError, Connector, ReqBody, SendError, classify_error};

/// The h2 connection to one (destination, SNI), if there is one.
#[derive(Default)]
pub struct H2Slot {
    /// Held while a connection is being opened, so concurrent requests share it.
    opening: tokio::sync::Mutex<()>,
    send: Mutex<Option<h2::client::SendRequest<Bytes>>>,
    /// The provider answered ALPN without h2: HTTP/1.1 from then on.
    no_h2: AtomicBool,
}

/// What the provider agreed to when the gateway last connected.
pub enum Sent {
    Response(Response<ReqBody>),
    /// ALPN did not pick h2: the caller sends over HTTP/1.1 instead.
    NotH2(Request<ReqBody>),
}

impl H2Slot {
    fn current(&self) -> Option<h2::client::SendRequest<Bytes>> {
        self.send.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, s: Option<h2::client::SendRequest<Bytes>>) {
        *self.send.lock().unwrap_or_else(|p| p.into_inner()) = s;
    }

    /// A sender ready for one more stream; opens the connection when there is none.
    async fn ready(
        &self,
        connector: &Connector,
    ) -> Result<Option<h2::client::SendRequest<Bytes>>, SendError> {
        if let Some(s) = self.current()
            && let Ok(s) = s.ready().await
        {
            return Ok(Some(s));
        }
        let _opening = self.opening.lock().await;
        // Somebody else may have opened it while this request waited.
        if let Some(s) = self.current()
            && let Ok(s) = s.ready().await
        {
            return Ok(Some(s));
        }
        self.set(None);
        let tls = connector
            .connect_tls()
            .await
            .map_err(|e| classify_error(&*e))?;
        if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
            self.no_h2.store(true, Ordering::Relaxed);
            return Ok(None);
        }
        let (send, conn) = h2::client::Builder::new()
            .initial_window_size(1 << 20)
            .initial_connection_window_size(4 << 20)
            .handshake::<_, Bytes>(tls)
            .await
            .map_err(|e| SendError::Unavailable(format!("h2 handshake: {e}")))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(error = %e, "upstream h2 connection ended");
            }
        });
        let send = send
            .ready()
            .await
            .map_err(|e| SendError::Unavailable(format!("h2: {e}")))?;
        self.set(Some(send.clone()));
        Ok(Some(send))
    }

    /// Send `req` over this slot's connection.
    pub async fn send(
        &self,
        connector: &Connector,
        req: Request<ReqBody>,
    ) -> Result<Sent, SendError> {
        if self.no_h2.load(Ordering::Relaxed) {
            return Ok(Sent::NotH2(req));
        }
        let (parts, body) = req.into_parts();
        let end = body.is_end_stream();
        // One retry when the connection went away between `ready` and the send (the request
        // has not left then, nothing of the body is consumed).
        let mut tries = 0;
        let (resp, stream) = loop {
            tries += 1;
            let Some(mut send) = self.ready(connector).await? else {
                return Ok(Sent::NotH2(Request::from_parts(parts, body)));
            };
            let mut head = Request::new(());
            *head.method_mut() = parts.method.clone();
            *head.uri_mut() = parts.uri.clone();
            *head.version_mut() = http::Version::HTTP_2;
            *head.headers_mut() = parts.headers.clone();
            // :authority carries the host in h2 (RFC 9113 §8.3.1).
            head.headers_mut().remove(HOST);
            match send.send_request(head, end) {
                Ok(r) => break r,
                Err(e) if tries < 2 && (e.is_go_away() || e.is_io() || e.is_reset()) => {
                    self.set(None);
                    continue;
                }
                Err(e) => return Err(SendError::Unavailable(format!("h2: {e}"))),
            }
        };
        if !end {
            tokio::spawn(pipe(body, stream));
        }
        let resp = resp
            .await
            .map_err(|e| SendError::Unavailable(format!("h2: {e}")))?;
        let (parts, rx) = resp.into_parts();
        Ok(Sent::Response(Response::from_parts(
            parts,
            RecvBody {
                rx,
                data_done: false,
            }
            .boxed(),
        )))
    }
}

/// Stream the client's request body to the provider under flow control. A body error (the
/// client went away) resets the stream, so the provider stops working on it.
async fn pipe(mut body: ReqBody, mut tx: h2::SendStream<Bytes>) {
    loop {
        let frame = match body.frame().await {
            None => {
                let _ = tx.send_data(Bytes::new(), true);
                return;
            }
            Some(Err(_)) => {
                tx.send_reset(h2::Reason::CANCEL);
                return;
            }
            Some(Ok(f)) => f,
        };
        let mut data = match frame.into_data() {
            Ok(d) => d,
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    let _ = tx.send_trailers(t);
                    return;
                }
                continue;
            }
        };
        let last = body.is_end_stream();
        if data.is_empty() && !last {
            continue;
        }
        loop {
            if data.is_empty() {
                // Only reached for an empty last frame.
                let _ = tx.send_data(data, true);
                return;
            }
            tx.reserve_capacity(data.len());
            let n = match std::future::poll_fn(|cx| tx.poll_capacity(cx)).await {
                Some(Ok(n)) => n,
                // The provider reset the stream or the connection is gone.
                _ => return,
            };
            if n == 0 {
                continue;
            }
            let chunk = data.split_to(n.min(data.len()));
            let end = data.is_empty() && last;
            if tx.send_data(chunk, end).is_err() {
                return;
            }
            if data.is_empty() {
                break;
            }
        }
        if last {
            return;
        }
    }
}

/// The provider's answer as an [`http_body::Body`], window released frame by frame.
struct RecvBody {
    rx: h2::RecvStream,
    data_done: bool,
}

impl Body for RecvBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if !self.data_done {
            match ready!(self.rx.poll_data(cx)) {
                Some(Ok(d)) => {
                    let _ = self.rx.flow_control().release_capacity(d.len());
                    return Poll::Ready(Some(Ok(Frame::data(d))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(Box::new(e)))),
                None => self.data_done = true,
            }
        }
        match ready!(self.rx.poll_trailers(cx)) {
            Ok(Some(t)) => Poll::Ready(Some(Ok(Frame::trailers(t)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(Box::new(e)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.rx.is_end_stream()
    }
}

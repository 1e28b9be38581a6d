//! RFC 6455 framing for the relay ([`super::relay`]): one side's frames read and reassembled
//! into messages, and messages written as frames. Nothing here answers anything: a ping is
//! not ponged, a close is not echoed. A WebSocket library that does that by itself sends the
//! peer's own, unscanned payload straight back to it (and then the relay's masked copy arrives
//! too); here the relay alone decides what each side gets, so every control frame a side
//! receives is the other side's, scanned on its way.
//!
//! No extension is ever negotiated (see [`super::connect`]), so every RSV bit must be zero.

use bytes::{Buf as _, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio_tungstenite::tungstenite::{
    Message, Utf8Bytes,
    protocol::{CloseFrame, frame::coding::CloseCode},
};

/// Why a side's frames cannot be read on.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// A message (or a single frame) larger than the session's limit.
    #[error("a message is larger than {0} bytes")]
    TooLarge(usize),
    /// A text message (or a close reason) that is not UTF-8.
    #[error("a text message is not UTF-8")]
    NotUtf8,
    /// A framing error (RFC 6455 §5): the side must be failed.
    #[error("{0}")]
    Protocol(&'static str),
    /// The connection ended (or broke) without a close frame.
    #[error("the connection ended without a close frame")]
    Gone,
}

/// A message being reassembled from its fragments.
struct Partial {
    text: bool,
    data: Vec<u8>,
}

/// The frames one side sends, as messages: data messages reassembled from any number of
/// fragments (bounded by `max` in all), control frames as they come (also between fragments).
pub struct Reader<R> {
    io: R,
    buf: BytesMut,
    /// The side is a client: its frames must be masked (and a provider's must not be).
    masked: bool,
    max: usize,
    partial: Option<Partial>,
    /// A close was read, or an error: nothing more is read.
    done: bool,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    pub fn new(io: R, masked: bool, max: usize) -> Self {
        Self {
            io,
            buf: BytesMut::with_capacity(16 * 1024),
            masked,
            max,
            partial: None,
            done: false,
        }
    }

    /// A message has begun (a fragment came) and not yet ended.
    pub fn assembling(&self) -> bool {
        self.partial.is_some()
    }

    /// The next message or control frame; `None` after a close or an error. Cancel-safe: what
    /// was read stays in the buffer for the next call.
    pub async fn next(&mut self) -> Option<Result<Message, FrameError>> {
        if self.done {
            return None;
        }
        loop {
            match self.parse() {
                Ok(Some(m)) => {
                    self.done = matches!(m, Message::Close(_));
                    return Some(Ok(m));
                }
                Ok(None) => {}
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
            match self.io.read_buf(&mut self.buf).await {
                Ok(n) if n > 0 => {}
                _ => {
                    self.done = true;
                    return Some(Err(FrameError::Gone));
                }
            }
        }
    }

    /// Read and drop whatever the side still sends, until it ends: after a framing error the
    /// side may still be writing (a message too large, say), and it reads the close the
    /// gateway sent only once its write is done.
    pub async fn drain(&mut self) {
        let mut sink = vec![0u8; 64 * 1024];
        while let Ok(n) = self.io.read(&mut sink).await {
            if n == 0 {
                return;
            }
        }
    }

    /// Take complete frames from the buffer until one makes a message (or none is complete).
    fn parse(&mut self) -> Result<Option<Message>, FrameError> {
        use FrameError::Protocol as P;
        loop {
            let b = &self.buf[..];
            if b.len() < 2 {
                return Ok(None);
            }
            let fin = b[0] & 0x80 != 0;
            if b[0] & 0x70 != 0 {
                return Err(P("reserved bits set, and no extension was negotiated"));
            }
            let op = b[0] & 0x0f;
            let masked = b[1] & 0x80 != 0;
            let (len, mut at) = match b[1] & 0x7f {
                126 if b.len() < 4 => return Ok(None),
                126 => (u16::from_be_bytes([b[2], b[3]]) as u64, 4),
                127 if b.len() < 10 => return Ok(None),
                127 => (
                    u64::from_be_bytes(b[2..10].try_into().expect("8 bytes")),
                    10,
                ),
                n => (n as u64, 2),
            };
            if masked != self.masked {
                return Err(P(if self.masked {
                    "an unmasked frame from the client"
                } else {
                    "a masked frame from the server"
                }));
            }
            let control = op & 0x08 != 0;
            if control && !fin {
                return Err(P("a fragmented control frame"));
            }
            if control && len > 125 {
                return Err(P("a control frame longer than 125 bytes"));
            }
            let so_far = self.partial.as_ref().map_or(0, |p| p.data.len()) as u64;
            if so_far + len > self.max as u64 {
                return Err(FrameError::TooLarge(self.max));
            }
            let key = if masked {
                if b.len() < at + 4 {
                    return Ok(None);
                }
                at += 4;
                Some([b[at - 4], b[at - 3], b[at - 2], b[at - 1]])
            } else {
                None
            };
            let len = len as usize;
            let have = b.len();
            if have < at + len {
                // Room for the rest of the frame at once.
                self.buf.reserve(at + len - have);
                return Ok(None);
            }
            self.buf.advance(at);
            let mut payload = self.buf.split_to(len);
            if let Some(k) = key {
                for (i, x) in payload.iter_mut().enumerate() {
                    *x ^= k[i % 4];
                }
            }
            let payload = payload.freeze();
            match op {
                0x8 => return close_frame(&payload).map(|f| Some(Message::Close(f))),
                0x9 => return Ok(Some(Message::Ping(payload))),
                0xA => return Ok(Some(Message::Pong(payload))),
                0x0 => {
                    let p = self
                        .partial
                        .as_mut()
                        .ok_or(P("a continuation frame outside a message"))?;
                    p.data.extend_from_slice(&payload);
                }
                0x1 | 0x2 => {
                    if self.partial.is_some() {
                        return Err(P("a new message before the last one ended"));
                    }
                    self.partial = Some(Partial {
                        text: op == 0x1,
                        data: payload.to_vec(),
                    });
                }
                _ => return Err(P("an unknown opcode")),
            }
            if fin {
                let p = self.partial.take().expect("a message in progress");
                return Ok(Some(if p.text {
                    Message::Text(
                        String::from_utf8(p.data)
                            .map_err(|_| FrameError::NotUtf8)?
                            .into(),
                    )
                } else {
                    Message::Binary(p.data.into())
                }));
            }
        }
    }
}

/// A close frame's payload (RFC 6455 §5.5.1): none, or a code and a UTF-8 reason. A code no
/// endpoint may send becomes 1002, as a peer would treat it.
fn close_frame(p: &[u8]) -> Result<Option<CloseFrame>, FrameError> {
    match p.len() {
        0 => Ok(None),
        1 => Err(FrameError::Protocol("a close frame of one byte")),
        _ => {
            let code = CloseCode::from(u16::from_be_bytes([p[0], p[1]]));
            let reason = std::str::from_utf8(&p[2..]).map_err(|_| FrameError::NotUtf8)?;
            Ok(Some(if code.is_allowed() {
                CloseFrame {
                    code,
                    reason: Utf8Bytes::from(reason.to_string()),
                }
            } else {
                CloseFrame {
                    code: CloseCode::Protocol,
                    reason: Utf8Bytes::from_static("Protocol violation"),
                }
            }))
        }
    }
}

/// One frame's bytes: `m` as a single final frame, masked with a fresh key when `mask` (the
/// gateway is the client of the provider's side).
pub fn encode(m: &Message, mask: bool) -> Vec<u8> {
    let (op, payload): (u8, std::borrow::Cow<'_, [u8]>) = match m {
        Message::Text(t) => (0x1, t.as_bytes().into()),
        Message::Binary(b) => (0x2, b[..].into()),
        Message::Ping(p) => (0x9, p[..].into()),
        Message::Pong(p) => (0xA, p[..].into()),
        Message::Close(None) => (0x8, Vec::new().into()),
        Message::Close(Some(f)) => {
            let mut v = u16::from(f.code).to_be_bytes().to_vec();
            v.extend_from_slice(f.reason.as_bytes());
            (0x8, v.into())
        }
        // The relay never builds raw frames.
        Message::Frame(f) => (0x2, f.payload().into()),
    };
    let n = payload.len();
    let mut out = Vec::with_capacity(n + 14);
    out.push(0x80 | op);
    let m_bit = if mask { 0x80 } else { 0 };
    if n < 126 {
        out.push(m_bit | n as u8);
    } else if n <= u16::MAX as usize {
        out.push(m_bit | 126);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(m_bit | 127);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    if mask {
        let k: [u8; 4] = rand::random();
        out.extend_from_slice(&k);
        out.extend(payload.iter().enumerate().map(|(i, x)| x ^ k[i % 4]));
    } else {
        out.extend_from_slice(&payload);
    }
    out
}

/// Messages out to one side, each as one frame, flushed at once.
pub struct Writer<W> {
    io: W,
    mask: bool,
}

impl<W: AsyncWrite + Unpin> Writer<W> {
    pub fn new(io: W, mask: bool) -> Self {
        Self { io, mask }
    }

    pub async fn send(&mut self, m: &Message) -> std::io::Result<()> {
        self.io.write_all(&encode(m, self.mask)).await?;
        self.io.flush().await
    }

    /// The end of this direction of the connection.
    pub async fn shutdown(&mut self) {
        let _ = self.io.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame (masked) with the given first byte.
    fn frame(b0: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = encode(&Message::Binary(payload.to_vec().into()), true);
        v[0] = b0;
        v
    }

    async fn all(wire: &[u8], masked: bool, max: usize) -> Vec<Result<Message, FrameError>> {
        let mut r = Reader::new(wire, masked, max);
        let mut out = vec![];
        while let Some(m) = r.next().await {
            out.push(m);
        }
        out
    }

    #[tokio::test]
    async fn fragments_reassemble_with_control_frames_between() {
        let text = "x".repeat(300);
        let mut wire = vec![];
        for (i, c) in text.as_bytes().iter().enumerate() {
            let op = if i == 0 { 0x1 } else { 0x0 };
            let fin = if i + 1 == text.len() { 0x80 } else { 0 };
            wire.extend(frame(fin | op, &[*c]));
            if i == 150 {
                wire.extend(encode(&Message::Ping(b"p".to_vec().into()), true));
            }
        }
        wire.extend(encode(&Message::Close(None), true));
        let got = all(&wire, true, 1000).await;
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[0], Ok(Message::Ping(b"p".to_vec().into())));
        assert_eq!(got[1], Ok(Message::Text(text.into())));
        assert_eq!(got[2], Ok(Message::Close(None)));
    }

    #[tokio::test]
    async fn framing_errors_and_limits() {
        use FrameError::*;
        // An unmasked client frame; a masked provider frame.
        let plain = encode(&Message::Text("a".into()), false);
        assert!(matches!(
            all(&plain, true, 99).await[..],
            [Err(Protocol(_))]
        ));
        let masked = encode(&Message::Text("a".into()), true);
        assert!(matches!(
            all(&masked, false, 99).await[..],
            [Err(Protocol(_))]
        ));
        assert_eq!(
            all(&plain, false, 99).await,
            [Ok(Message::Text("a".into())), Err(Gone)]
        );
        // RSV bits, a fragmented ping, a stray continuation, an unknown opcode.
        for b0 in [0xC1, 0x09, 0x80, 0x83] {
            assert!(
                matches!(
                    all(&frame(b0, b"a"), true, 99).await[..],
                    [Err(Protocol(_))]
                ),
                "{b0:#x}"
            );
        }
        // Too large across fragments; text that is not UTF-8.
        let mut two = frame(0x01, &[b'a'; 60]);
        two.extend(frame(0x80, &[b'a'; 60]));
        assert_eq!(all(&two, true, 100).await, [Err(TooLarge(100))]);
        assert_eq!(all(&frame(0x81, &[0xff]), true, 99).await, [Err(NotUtf8)]);
        // A close code no endpoint may send becomes 1002.
        let mut c = 1005u16.to_be_bytes().to_vec();
        c.extend_from_slice(b"x");
        match &all(&frame(0x88, &c), true, 99).await[..] {
            [Ok(Message::Close(Some(f)))] => assert_eq!(u16::from(f.code), 1002),
            other => panic!("{other:?}"),
        }
    }
}

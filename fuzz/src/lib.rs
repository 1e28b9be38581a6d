//! What the fuzz targets share: the scanner they mask with, secrets to plant, and a driver
//! that feeds a `MaskedBody` an answer cut into arbitrary chunks.

#![forbid(unsafe_code)]

use std::{
    collections::VecDeque,
    pin::Pin,
    sync::{Arc, OnceLock},
    task::{Context, Poll},
};

use bytes::Bytes;
use gateway::{
    policy::scan::{PolicyConfig, Scanner},
    redirect::identity::Identity,
    response::{
        Rewriter,
        body::{Kind, MaskedBody},
    },
    upstream::pool::BoxError,
};
use http_body::{Body, Frame};
use http_body_util::BodyExt as _;

/// Every built-in detector, masking both ways (the gateway's default policy).
pub fn scanner() -> Arc<Scanner> {
    static S: OnceLock<Arc<Scanner>> = OnceLock::new();
    S.get_or_init(|| {
        Arc::new(Scanner::new(&[], &PolicyConfig::default()).expect("built-in rules compile"))
    })
    .clone()
}

/// Secrets the built-in detectors find (the same the end-to-end tests use).
pub const SECRETS: &[&str] = &[
    "ghp_aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE3fG5",
    "AKIAIOSFODNN7EXAMPLE",
    "sk-proj-Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0FeDcBaZx9Yw8Vu7Ts6Rq5Po4",
];

/// `text` with `secret` inserted, between spaces, at about `at` (a char boundary).
pub fn plant(text: &str, at: usize, secret: &str) -> String {
    let mut i = if text.is_empty() {
        0
    } else {
        at % (text.len() + 1)
    };
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    format!("{} {secret} {}", &text[..i], &text[i..])
}

/// `text` cut into pieces of the given lengths in bytes (each at least 1, moved back to a
/// char boundary); the rest is one last piece.
pub fn cut_text(text: &str, lens: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut pos = 0;
    for &l in lens {
        if pos >= text.len() {
            break;
        }
        let mut end = (pos + usize::from(l.max(1))).min(text.len());
        while !text.is_char_boundary(end) {
            end += 1;
        }
        out.push(text[pos..end].to_string());
        pos = end;
    }
    if pos < text.len() {
        out.push(text[pos..].to_string());
    }
    out
}

/// `bytes` cut into chunks of the given lengths (0 means 1); the rest is one last chunk.
pub fn cut_bytes(bytes: &[u8], lens: &[u16]) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut pos = 0;
    for &l in lens {
        if pos >= bytes.len() {
            break;
        }
        let end = (pos + usize::from(l.max(1))).min(bytes.len());
        out.push(Bytes::copy_from_slice(&bytes[pos..end]));
        pos = end;
    }
    if pos < bytes.len() {
        out.push(Bytes::copy_from_slice(&bytes[pos..]));
    }
    out
}

/// A provider's body that has every chunk ready.
struct Chunks(VecDeque<Bytes>);

impl Body for Chunks {
    type Data = Bytes;
    type Error = BoxError;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
    }
}

/// The masked answer for `chunks`, read to its end: `Err` when the body ended in an error
/// (allowed: fail closed). Panics if the body ever waits, since every chunk is ready.
pub fn drive(kind: Kind, chunks: Vec<Bytes>) -> Result<Vec<u8>, BoxError> {
    let rw = Rewriter::new(scanner(), Arc::new(Identity::default()));
    let body = MaskedBody::new(Chunks(chunks.into()).boxed(), kind, rw, Box::new(|_| {}));
    let mut body = std::pin::pin!(body);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut out = Vec::new();
    loop {
        match body.as_mut().poll_frame(&mut cx) {
            Poll::Ready(Some(Ok(f))) => {
                if let Ok(d) = f.into_data() {
                    out.extend_from_slice(&d);
                }
            }
            Poll::Ready(Some(Err(e))) => return Err(e),
            Poll::Ready(None) => return Ok(out),
            Poll::Pending => panic!("the masked body waited although every chunk was ready"),
        }
    }
}

/// Does `hay` contain `needle`?
pub fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

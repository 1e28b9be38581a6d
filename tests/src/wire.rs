//! A provider fake that speaks HTTP/2 frame by frame, so a test can see how each request header
//! was encoded on the wire (HPACK representation), which hyper and h2 do not expose: the
//! injected credential must be a never-indexed literal (RFC 7541 §6.2.3), so no intermediary
//! may put it in a compression table.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::fake::TestPki;

/// How one header field was represented in a HEADERS block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repr {
    Indexed,
    IncrementalIndexing,
    WithoutIndexing,
    NeverIndexed,
}

/// One header field as seen on the wire: its representation and, when the name came from the
/// static table, that index (RFC 7541 Appendix A; 23 is `authorization`).
#[derive(Debug, Clone)]
pub struct Field {
    pub repr: Repr,
    pub static_name: Option<u64>,
    /// The name when sent as a plain (non-Huffman) literal.
    pub literal_name: Option<String>,
}

pub struct WireServer {
    blocks: Arc<Mutex<Vec<Vec<Field>>>>,
    _rt: tokio::runtime::Runtime,
}

fn int(buf: &[u8], pos: &mut usize, prefix: u8) -> Option<u64> {
    let mask = (1u16 << prefix) as u8 - 1;
    let mut v = (*buf.get(*pos)? & mask) as u64;
    *pos += 1;
    if v < mask as u64 {
        return Some(v);
    }
    let mut shift = 0;
    loop {
        let b = *buf.get(*pos)?;
        *pos += 1;
        v += ((b & 0x7f) as u64) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
}

/// (huffman, bytes) of a string literal.
fn string<'a>(buf: &'a [u8], pos: &mut usize) -> Option<(bool, &'a [u8])> {
    let huff = *buf.get(*pos)? & 0x80 != 0;
    let len = int(buf, pos, 7)? as usize;
    let s = buf.get(*pos..*pos + len)?;
    *pos += len;
    Some((huff, s))
}

/// The representations in one header block (names only; values are skipped).
pub fn parse_block(buf: &[u8]) -> Option<Vec<Field>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let b = buf[pos];
        let (repr, prefix) = if b & 0x80 != 0 {
            int(buf, &mut pos, 7)?;
            out.push(Field {
                repr: Repr::Indexed,
                static_name: None,
                literal_name: None,
            });
            continue;
        } else if b & 0xc0 == 0x40 {
            (Repr::IncrementalIndexing, 6)
        } else if b & 0xe0 == 0x20 {
            int(buf, &mut pos, 5)?; // dynamic table size update
            continue;
        } else if b & 0xf0 == 0x10 {
            (Repr::NeverIndexed, 4)
        } else {
            (Repr::WithoutIndexing, 4)
        };
        let idx = int(buf, &mut pos, prefix)?;
        let (static_name, literal_name) = if idx == 0 {
            let (huff, name) = string(buf, &mut pos)?;
            (
                None,
                (!huff).then(|| String::from_utf8_lossy(name).into_owned()),
            )
        } else {
            (Some(idx).filter(|i| *i <= 61), None)
        };
        string(buf, &mut pos)?;
        out.push(Field {
            repr,
            static_name,
            literal_name,
        });
    }
    Some(out)
}

const STATUS_200: u8 = 0x88;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(9 + payload.len());
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    f.push(kind);
    f.push(flags);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

impl WireServer {
    /// Serve h2 (ALPN h2 only) on `addr`: every request gets `200` and a small JSON body.
    pub fn start(addr: SocketAddr, pki: &TestPki) -> Self {
        let (rt, listener, acceptor) = crate::fake::tls_server("wire server", addr, pki, &[b"h2"]);
        let blocks = Arc::new(Mutex::new(Vec::new()));
        let b = blocks.clone();
        rt.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let b = b.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut preface = [0u8; 24];
                    if tls.read_exact(&mut preface).await.is_err() {
                        return;
                    }
                    if tls.write_all(&frame(4, 0, 0, &[])).await.is_err() {
                        return;
                    }
                    let mut pending: Vec<u8> = Vec::new();
                    loop {
                        let mut head = [0u8; 9];
                        if tls.read_exact(&mut head).await.is_err() {
                            return;
                        }
                        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
                        let (kind, flags) = (head[3], head[4]);
                        let stream =
                            u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
                        let mut payload = vec![0u8; len];
                        if tls.read_exact(&mut payload).await.is_err() {
                            return;
                        }
                        let mut reply = Vec::new();
                        match kind {
                            // SETTINGS: acknowledge theirs.
                            4 if flags & 1 == 0 => reply = frame(4, 1, 0, &[]),
                            // HEADERS / CONTINUATION
                            1 | 9 => {
                                let mut p = &payload[..];
                                if kind == 1 {
                                    if flags & 0x8 != 0 {
                                        let n = p[0] as usize;
                                        p = &p[1..p.len() - n];
                                    }
                                    if flags & 0x20 != 0 {
                                        p = &p[5..];
                                    }
                                }
                                pending.extend_from_slice(p);
                                if flags & 0x4 != 0 {
                                    let fields = parse_block(&pending).unwrap_or_default();
                                    b.lock().unwrap().push(fields);
                                    pending.clear();
                                    let body = br#"{"object":"list","data":[]}"#;
                                    reply = frame(1, 0x4, stream, &[STATUS_200]);
                                    reply.extend(frame(0, 0x1, stream, body));
                                }
                            }
                            // GOAWAY
                            7 => return,
                            _ => {}
                        }
                        if !reply.is_empty() && tls.write_all(&reply).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self { blocks, _rt: rt }
    }

    /// The header blocks of every request received so far.
    pub fn blocks(&self) -> Vec<Vec<Field>> {
        self.blocks.lock().unwrap().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rfc7541_examples() {
        // C.3.1 (":method GET, :scheme http, :path /, :authority www.example.com")
        let c31 = [
            0x82, 0x86, 0x84, 0x41, 0x0f, b'w', b'w', b'w', b'.', b'e', b'x', b'a', b'm', b'p',
            b'l', b'e', b'.', b'c', b'o', b'm',
        ];
        let f = parse_block(&c31).unwrap();
        assert_eq!(f.len(), 4);
        assert_eq!(f[3].repr, Repr::IncrementalIndexing);
        assert_eq!(f[3].static_name, Some(1));
        // C.2.4-style never-indexed "password: secret" with a literal name.
        let mut nv = vec![0x10, 0x08];
        nv.extend_from_slice(b"password");
        nv.push(0x06);
        nv.extend_from_slice(b"secret");
        let f = parse_block(&nv).unwrap();
        assert_eq!(f[0].repr, Repr::NeverIndexed);
        assert_eq!(f[0].literal_name.as_deref(), Some("password"));
        // authorization (static 23) never indexed: 0x1f 0x08 then the value.
        let f = parse_block(&[0x1f, 0x08, 0x01, b'x']).unwrap();
        assert_eq!(f[0].static_name, Some(23));
        assert_eq!(f[0].repr, Repr::NeverIndexed);
        assert!(
            parse_block(&[0x1f]).is_none(),
            "truncated block is an error"
        );
    }
}

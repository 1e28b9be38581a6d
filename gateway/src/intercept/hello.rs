//! Reading a TLS ClientHello far enough to learn its SNI and ALPN, without changing a byte:
//! what was read is replayed in front of the stream (see `PrefixedStream`).
//!
//! Bounded: at most `MAX_HELLO` bytes are buffered; a handshake message split across several
//! records is reassembled.

/// The most we buffer while looking for the end of a ClientHello.
pub const MAX_HELLO: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientHello {
    pub sni: Option<String>,
    pub alpn: Vec<Vec<u8>>,
    /// The hello carries an encrypted_client_hello extension: its SNI is only the outer name.
    pub ech: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// Need more bytes.
    Incomplete,
    /// Not a TLS handshake at all (e.g. plain HTTP): refused on a provider address.
    NotTls,
    /// Looks like TLS but is malformed: refuse, so a parser disagreement can never hide an SNI.
    Malformed(&'static str),
    Hello(ClientHello),
}

/// Look at the bytes read so far.
pub fn parse(buf: &[u8]) -> Parsed {
    if buf.is_empty() {
        return Parsed::Incomplete;
    }
    if buf[0] != 0x16 {
        return Parsed::NotTls;
    }
    // Reassemble the handshake layer from consecutive handshake records.
    let mut hs = Vec::new();
    let mut pos = 0;
    loop {
        if buf.len() < pos + 5 {
            return Parsed::Incomplete;
        }
        let rec = &buf[pos..];
        if rec[0] != 0x16 {
            return Parsed::Malformed("non-handshake record inside the ClientHello");
        }
        if rec[1] != 0x03 {
            return if pos == 0 {
                Parsed::NotTls
            } else {
                Parsed::Malformed("bad record version")
            };
        }
        let len = u16::from_be_bytes([rec[3], rec[4]]) as usize;
        if len == 0 || len > 16384 + 2048 {
            return Parsed::Malformed("bad record length");
        }
        if rec.len() < 5 + len {
            return Parsed::Incomplete;
        }
        hs.extend_from_slice(&rec[5..5 + len]);
        pos += 5 + len;
        if hs.len() >= 4 {
            if hs[0] != 0x01 {
                return Parsed::Malformed("first handshake message is not a ClientHello");
            }
            let mlen = u32::from_be_bytes([0, hs[1], hs[2], hs[3]]) as usize;
            if 4 + mlen > MAX_HELLO {
                return Parsed::Malformed("ClientHello too large");
            }
            if hs.len() >= 4 + mlen {
                return match parse_body(&hs[4..4 + mlen]) {
                    Some(h) => Parsed::Hello(h),
                    None => Parsed::Malformed("ClientHello body does not parse"),
                };
            }
        }
        if pos >= MAX_HELLO {
            return Parsed::Malformed("ClientHello too large");
        }
    }
}

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.b.len() < n {
            return None;
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Some(h)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()? as usize;
        self.take(n)
    }
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()? as usize;
        self.take(n)
    }
}

fn parse_body(body: &[u8]) -> Option<ClientHello> {
    let mut r = Reader { b: body };
    r.take(2)?; // legacy_version
    r.take(32)?; // random
    r.vec8()?; // session id
    r.vec16()?; // cipher suites
    r.vec8()?; // compression methods
    let mut hello = ClientHello::default();
    if r.b.is_empty() {
        return Some(hello); // no extensions at all
    }
    let mut exts = Reader { b: r.vec16()? };
    let mut seen_sni = false;
    while !exts.b.is_empty() {
        let typ = exts.u16()?;
        let data = exts.vec16()?;
        match typ {
            0 => {
                if seen_sni {
                    return None; // a second server_name extension is an attack on parsers
                }
                seen_sni = true;
                let mut list = Reader {
                    b: Reader { b: data }.vec16()?,
                };
                while !list.b.is_empty() {
                    let kind = list.u8()?;
                    let name = list.vec16()?;
                    if kind == 0 {
                        if hello.sni.is_some() {
                            return None;
                        }
                        let name = std::str::from_utf8(name).ok()?;
                        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
                            return None;
                        }
                        hello.sni = Some(name.trim_end_matches('.').to_ascii_lowercase());
                    }
                }
            }
            16 => {
                let mut list = Reader {
                    b: Reader { b: data }.vec16()?,
                };
                while !list.b.is_empty() {
                    hello.alpn.push(list.vec8()?.to_vec());
                }
            }
            0xfe0d => hello.ech = true,
            _ => {}
        }
    }
    Some(hello)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello with the given extensions, in one or more records of `rec_max` bytes.
    pub fn hello_bytes(exts: &[(u16, Vec<u8>)], rec_max: usize) -> Vec<u8> {
        let mut body = vec![3, 3];
        body.extend([7u8; 32]);
        body.push(0);
        body.extend([0, 2, 0x13, 0x01]);
        body.extend([1, 0]);
        let mut e = Vec::new();
        for (t, d) in exts {
            e.extend(t.to_be_bytes());
            e.extend((d.len() as u16).to_be_bytes());
            e.extend(d);
        }
        body.extend((e.len() as u16).to_be_bytes());
        body.extend(e);
        let mut hs = vec![1];
        hs.extend(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend(body);
        let mut out = Vec::new();
        for chunk in hs.chunks(rec_max) {
            out.extend([0x16, 3, 1]);
            out.extend((chunk.len() as u16).to_be_bytes());
            out.extend(chunk);
        }
        out
    }

    pub fn sni_ext(name: &str) -> (u16, Vec<u8>) {
        let mut entry = vec![0];
        entry.extend((name.len() as u16).to_be_bytes());
        entry.extend(name.as_bytes());
        let mut d = (entry.len() as u16).to_be_bytes().to_vec();
        d.extend(entry);
        (0, d)
    }

    fn alpn_ext(protos: &[&[u8]]) -> (u16, Vec<u8>) {
        let mut l = Vec::new();
        for p in protos {
            l.push(p.len() as u8);
            l.extend(*p);
        }
        let mut d = (l.len() as u16).to_be_bytes().to_vec();
        d.extend(l);
        (16, d)
    }

    #[test]
    fn reads_sni_and_alpn() {
        let b = hello_bytes(
            &[sni_ext("API.OpenAI.com"), alpn_ext(&[b"h2", b"http/1.1"])],
            16384,
        );
        match parse(&b) {
            Parsed::Hello(h) => {
                assert_eq!(h.sni.as_deref(), Some("api.openai.com"));
                assert_eq!(h.alpn, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
                assert!(!h.ech);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_prefix_is_incomplete_and_records_reassemble() {
        let b = hello_bytes(&[sni_ext("api.anthropic.com")], 7);
        for i in 0..b.len() {
            assert_eq!(parse(&b[..i]), Parsed::Incomplete, "prefix {i}");
        }
        assert!(
            matches!(parse(&b), Parsed::Hello(h) if h.sni.as_deref() == Some("api.anthropic.com"))
        );
    }

    #[test]
    fn no_sni_and_not_tls() {
        assert!(matches!(parse(&hello_bytes(&[], 16384)), Parsed::Hello(h) if h.sni.is_none()));
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Parsed::NotTls);
        assert_eq!(parse(&[0x16, 0x02, 0, 0, 1, 0]), Parsed::NotTls);
    }

    #[test]
    fn malformed_and_duplicate_sni_are_refused() {
        let dup = hello_bytes(&[sni_ext("example.com"), sni_ext("api.openai.com")], 16384);
        assert!(matches!(parse(&dup), Parsed::Malformed(_)));
        let mut bad = hello_bytes(&[sni_ext("example.com")], 16384);
        bad[5] = 2; // ServerHello type
        assert!(matches!(parse(&bad), Parsed::Malformed(_)));
        let mut trunc = hello_bytes(&[sni_ext("example.com")], 16384);
        let n = trunc.len();
        trunc[n - "example.com".len() - 2] = 0xff; // name length runs past the end
        assert!(matches!(parse(&trunc), Parsed::Malformed(_)));
        assert!(matches!(parse(&[0x16, 3, 1, 0, 0]), Parsed::Malformed(_)));
    }
}

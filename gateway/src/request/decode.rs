//! A request body's `Content-Encoding`, undone so the body can be scanned: gzip, deflate
//! (zlib, or raw deflate as some clients send it), br, zstd, in the order they were applied.
//! Anything else is refused by name. The decoded size is bounded like the body itself.

use std::io::Read;

use super::RequestError;

/// Decode `body` as `encodings` (the header's list, first applied first) says, to at most
/// `max` bytes.
pub fn decode(
    mut body: Vec<u8>,
    encodings: &[String],
    max: usize,
) -> Result<Vec<u8>, RequestError> {
    for enc in encodings.iter().rev() {
        body = match enc.as_str() {
            "identity" | "" => continue,
            "gzip" | "x-gzip" => read(flate2::read::MultiGzDecoder::new(&body[..]), enc, max)?,
            "deflate" => match read(flate2::read::ZlibDecoder::new(&body[..]), enc, max) {
                Err(RequestError::Encoding { .. }) => {
                    read(flate2::read::DeflateDecoder::new(&body[..]), enc, max)?
                }
                r => r?,
            },
            "br" => read(
                brotli_decompressor::Decompressor::new(&body[..], 8192),
                enc,
                max,
            )?,
            "zstd" => {
                let d = ruzstd::decoding::StreamingDecoder::new(&body[..]).map_err(|e| {
                    RequestError::Encoding {
                        encoding: enc.clone(),
                        reason: e.to_string(),
                    }
                })?;
                read(d, enc, max)?
            }
            other => return Err(RequestError::UnknownEncoding(other.to_string())),
        };
    }
    Ok(body)
}

fn read(r: impl Read, enc: &str, max: usize) -> Result<Vec<u8>, RequestError> {
    let mut out = Vec::new();
    r.take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| RequestError::Encoding {
            encoding: enc.to_string(),
            reason: e.to_string(),
        })?;
    if out.len() > max {
        return Err(RequestError::TooLarge(max));
    }
    Ok(out)
}

/// A body that is compressed without saying so (gzip, zlib or zstd by their magic bytes),
/// decoded to at most `max` bytes; `None` when it is not, or does not decode. Larger than
/// `max` decoded is an error: never passed on unread.
pub fn sniff(body: &[u8], max: usize) -> Result<Option<Vec<u8>>, RequestError> {
    let coding = match body {
        [0x1f, 0x8b, ..] => "gzip",
        [0x28, 0xb5, 0x2f, 0xfd, ..] => "zstd",
        [0x78, 0x01 | 0x5e | 0x9c | 0xda, ..] => "deflate",
        _ => return Ok(None),
    };
    match decode(body.to_vec(), &[coding.to_string()], max) {
        Ok(d) => Ok(Some(d)),
        Err(RequestError::TooLarge(n)) => Err(RequestError::TooLarge(n)),
        Err(_) => Ok(None),
    }
}

/// The codings a `Content-Encoding` header list names, lower case.
pub fn codings(
    values: impl Iterator<Item = Result<String, ()>>,
) -> Result<Vec<String>, RequestError> {
    let mut out = Vec::new();
    for v in values {
        let v = v.map_err(|_| RequestError::UnknownEncoding("(not text)".into()))?;
        for c in v.split(',') {
            let c = c.trim().to_ascii_lowercase();
            if !c.is_empty() {
                out.push(c);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn gz(b: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn every_coding_and_their_stack() {
        let text = b"{\"prompt\": \"hello\"}".to_vec();
        let enc = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(decode(gz(&text), &enc(&["gzip"]), 1 << 20).unwrap(), text);
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&text).unwrap();
        assert_eq!(
            decode(z.finish().unwrap(), &enc(&["deflate"]), 1 << 20).unwrap(),
            text
        );
        let mut raw =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        raw.write_all(&text).unwrap();
        assert_eq!(
            decode(raw.finish().unwrap(), &enc(&["deflate"]), 1 << 20).unwrap(),
            text
        );
        // gzip applied first, then gzip again: undone in reverse.
        assert_eq!(
            decode(gz(&gz(&text)), &enc(&["gzip", "x-gzip"]), 1 << 20).unwrap(),
            text
        );
        // A zstd frame (RFC 8878) holding one raw block with "hello".
        let zstd: Vec<u8> = vec![
            0x28, 0xb5, 0x2f, 0xfd, 0x20, 0x05, 0x29, 0x00, 0x00, b'h', b'e', b'l', b'l', b'o',
        ];
        assert_eq!(decode(zstd, &enc(&["zstd"]), 1 << 20).unwrap(), b"hello");
        assert!(matches!(
            decode(text.clone(), &enc(&["compress"]), 1 << 20),
            Err(RequestError::UnknownEncoding(c)) if c == "compress"
        ));
        assert!(matches!(
            decode(b"not gzip".to_vec(), &enc(&["gzip"]), 1 << 20),
            Err(RequestError::Encoding { .. })
        ));
        // A bomb: 4 MiB of zeros in a few KiB, bounded at 1 MiB.
        assert!(matches!(
            decode(gz(&vec![0; 4 << 20]), &enc(&["gzip"]), 1 << 20),
            Err(RequestError::TooLarge(_))
        ));
    }
}

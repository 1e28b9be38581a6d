//! Spellings of a secret: the encodings a case plants it in (base64, percent, JSON escapes,
//! compression) and the decoded views a judge searches (every spelling a provider could read
//! back). Compression goes through Python's zlib and the `zstd` tool; brotli is written by hand
//! (uncompressed meta-blocks, valid per RFC 7932), so its plaintext shows to a raw search.

use std::{
    io::Write as _,
    process::{Command, Stdio},
};

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub fn b64(b: &[u8]) -> String {
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub fn b64url(b: &[u8]) -> String {
    b64(b).replace('+', "-").replace('/', "_").replace('=', "")
}

/// Decode base64 (either alphabet) until the first character outside it.
pub fn unb64(s: &[u8]) -> Vec<u8> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        } as u32)
    };
    let (mut acc, mut bits, mut out) = (0u32, 0, Vec::new());
    for &c in s {
        let Some(v) = val(c) else { break };
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// Percent-decode (invalid escapes kept as they are).
pub fn pct(b: &[u8]) -> Vec<u8> {
    let h = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let (Some(x), Some(y)) = (
                b.get(i + 1).and_then(|c| h(*c)),
                b.get(i + 2).and_then(|c| h(*c)),
            )
        {
            out.push(x << 4 | y);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// Every byte as `%XX`.
pub fn pct_all(s: &str) -> String {
    s.bytes().map(|b| format!("%{b:02X}")).collect()
}

/// Every character as a JSON `\uXXXX` escape.
pub fn json_escape_all(s: &str) -> String {
    s.chars().map(|c| format!("\\u{:04x}", c as u32)).collect()
}

/// Undo JSON string escapes wherever they appear (the structure around them ignored, so
/// duplicate keys and broken documents are read too).
pub fn unescape_json(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    let hex4 = |s: &[u8]| -> Option<u32> {
        let t = std::str::from_utf8(s.get(..4)?).ok()?;
        u32::from_str_radix(t, 16).ok()
    };
    while i < b.len() {
        if b[i] != b'\\' || i + 1 >= b.len() {
            out.push(b[i]);
            i += 1;
            continue;
        }
        let c = b[i + 1];
        let simple = match c {
            b'n' => Some(b'\n'),
            b't' => Some(b'\t'),
            b'r' => Some(b'\r'),
            b'b' => Some(8),
            b'f' => Some(12),
            b'/' | b'\\' | b'"' => Some(c),
            _ => None,
        };
        if let Some(s) = simple {
            out.push(s);
            i += 2;
            continue;
        }
        if c == b'u'
            && let Some(mut cp) = hex4(&b[i + 2..])
        {
            let mut used = 6;
            if (0xD800..0xDC00).contains(&cp)
                && b.get(i + 6) == Some(&b'\\')
                && b.get(i + 7) == Some(&b'u')
                && let Some(lo) = hex4(&b[i + 8..])
                && (0xDC00..0xE000).contains(&lo)
            {
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                used = 12;
            }
            let ch = char::from_u32(cp).unwrap_or('\u{fffd}');
            let mut buf = [0u8; 4];
            out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
            i += used;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// UTF-16 (either byte order) read as UTF-8, when the bytes look like it.
fn utf16(b: &[u8]) -> Vec<Vec<u8>> {
    let zeros = b.iter().filter(|x| **x == 0).count();
    if b.len() < 8 || zeros * 4 < b.len() {
        return vec![];
    }
    let mut out = vec![];
    for le in [true, false] {
        let units: Vec<u16> = b
            .chunks_exact(2)
            .map(|c| {
                if le {
                    u16::from_le_bytes([c[0], c[1]])
                } else {
                    u16::from_be_bytes([c[0], c[1]])
                }
            })
            .collect();
        out.push(String::from_utf16_lossy(&units).into_bytes());
    }
    out
}

/// Runs of base64 characters long enough to hide a secret, decoded.
fn base64_runs(b: &[u8]) -> Vec<Vec<u8>> {
    let is = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'-' | b'_');
    let mut out = vec![];
    let mut i = 0;
    while i < b.len() {
        if !is(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && is(b[i]) {
            i += 1;
        }
        if i - start >= 16 {
            // Base64 wrapped over lines (MIME): join the following lines of the run.
            let mut run = b[start..i].to_vec();
            let mut j = i;
            while j + 1 < b.len() && (b[j] == b'\n' || b[j] == b'\r') {
                let mut k = j;
                while k < b.len() && (b[k] == b'\n' || b[k] == b'\r') {
                    k += 1;
                }
                let s = k;
                while k < b.len() && is(b[k]) {
                    k += 1;
                }
                if k == s {
                    break;
                }
                run.extend_from_slice(&b[s..k]);
                j = k;
            }
            out.push(unb64(&run));
        }
    }
    out
}

/// Every spelling of `b` a reader could decode: itself, JSON-unescaped, percent-decoded (each
/// twice, and combined), UTF-16, and base64 runs inside any of those (their own spellings too).
pub fn views(b: &[u8]) -> Vec<Vec<u8>> {
    views_depth(b, 2)
}

fn views_depth(b: &[u8], depth: u32) -> Vec<Vec<u8>> {
    let mut base = vec![b.to_vec()];
    base.extend(utf16(b));
    let mut out: Vec<Vec<u8>> = vec![];
    for v in &base {
        let u1 = unescape_json(v);
        let u2 = unescape_json(&u1);
        let p1 = pct(v);
        let p2 = pct(&p1);
        let pu = pct(&u1);
        let up = unescape_json(&p1);
        for x in [v.clone(), u1, u2, p1, p2, pu, up] {
            if !out.contains(&x) {
                out.push(x);
            }
        }
    }
    if depth > 0 {
        let mut more = vec![];
        for v in &out {
            for d in base64_runs(v) {
                if d.len() >= 8 {
                    more.extend(views_depth(&d, depth - 1));
                }
            }
        }
        out.extend(more);
    }
    out
}

const PY_CODEC: &str = r#"
import json, subprocess, sys, zlib, gzip
op = sys.argv[1]
items = json.load(sys.stdin)
def inflate(d, wbits):
    out = b""
    while d:
        o = zlib.decompressobj(wbits)
        try:
            out += o.decompress(d)
        except zlib.error:
            break
        d = o.unused_data
        if wbits != 31:
            break
    return out
res = []
for enc, h in items:
    d = bytes.fromhex(h)
    try:
        if op == "encode":
            if enc == "gzip": out = gzip.compress(d)
            elif enc == "zlib": out = zlib.compress(d)
            elif enc == "raw":
                c = zlib.compressobj(9, zlib.DEFLATED, -15); out = c.compress(d) + c.flush()
            elif enc == "zstd": out = subprocess.run(["zstd", "-q", "-c"], input=d, capture_output=True, check=True).stdout
            else: raise ValueError(enc)
            res.append(out.hex())
        else:
            outs = []
            if d[:2] == b"\x1f\x8b": outs.append(inflate(d, 31))
            if len(d) > 2 and d[0] & 0x0f == 8 and (d[0] * 256 + d[1]) % 31 == 0: outs.append(inflate(d, 15))
            if d[:4] == b"\x28\xb5\x2f\xfd":
                outs.append(subprocess.run(["zstd", "-q", "-dc"], input=d, capture_output=True).stdout)
            if enc == "raw" or (d and not d[:1].isascii()):
                outs.append(inflate(d, -15))
            res.append([o.hex() for o in outs if o])
    except Exception:
        res.append("" if op == "encode" else [])
print(json.dumps(res))
"#;

fn py_codec(op: &str, items: &[(&str, &[u8])]) -> serde_json::Value {
    let input: Vec<(String, String)> = items
        .iter()
        .map(|(e, b)| (e.to_string(), super::hex(b)))
        .collect();
    let mut child = Command::new("python3")
        .args(["-c", PY_CODEC, op])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 for the codec helper");
    let data = serde_json::to_vec(&input).unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().expect("codec helper");
    let _ = writer.join();
    serde_json::from_slice(&out.stdout).expect("codec helper output")
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .filter_map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok())
        .collect()
}

/// `b` compressed: `gzip`, `zlib` (HTTP's `deflate`), `raw` (bare deflate), `zstd`, `br`.
pub fn compress(enc: &str, b: &[u8]) -> Vec<u8> {
    if enc == "br" {
        return brotli_stored(b);
    }
    let v = py_codec("encode", &[(enc, b)]);
    let out = unhex(v[0].as_str().unwrap_or(""));
    assert!(!out.is_empty(), "compressing with {enc} failed");
    out
}

/// For each body, what it decompresses to (by its magic bytes; bare deflate always tried on
/// binary bodies).
pub fn inflate_batch(bodies: &[&[u8]]) -> Vec<Vec<Vec<u8>>> {
    let mut out = vec![vec![]; bodies.len()];
    // Only bodies the helper would try to decode go to it (its own tests, in Rust: most
    // bodies are plain text, and the judges call this once per case): same answers, and no
    // Python started when no body qualifies.
    let todo: Vec<usize> = (0..bodies.len())
        .filter(|&i| may_be_compressed(bodies[i]))
        .collect();
    if todo.is_empty() {
        return out;
    }
    let items: Vec<(&str, &[u8])> = todo.iter().map(|&i| ("", bodies[i])).collect();
    let v = py_codec("decode", &items);
    if let Some(a) = v.as_array() {
        for (&i, outs) in todo.iter().zip(a) {
            out[i] = outs
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|h| h.as_str().map(unhex))
                .collect();
        }
    }
    out
}

/// Whether the helper's `decode` tries anything on `d` (its conditions, in the same order):
/// a gzip magic, a zlib header, a zstd magic, or a first byte outside ASCII (bare deflate).
fn may_be_compressed(d: &[u8]) -> bool {
    d.starts_with(b"\x1f\x8b")
        || (d.len() > 2 && d[0] & 0x0f == 8 && (u32::from(d[0]) * 256 + u32::from(d[1])) % 31 == 0)
        || d.starts_with(b"\x28\xb5\x2f\xfd")
        || d.first().is_some_and(|b| !b.is_ascii())
}

/// A brotli stream of stored (uncompressed) meta-blocks: WBITS=16, then per block of up to
/// 65536 bytes ISLAST=0, MNIBBLES=4, MLEN-1, ISUNCOMPRESSED=1, padding, the bytes; then an
/// empty last block.
pub fn brotli_stored(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut first = true;
    for chunk in b.chunks(65536) {
        let mut bits: u64 = 0;
        let mut n = 0;
        let mut put = |v: u64, w: u32| {
            bits |= v << n;
            n += w;
        };
        if first {
            put(0, 1); // WBITS = 16
            first = false;
        }
        put(0, 1); // ISLAST
        put(0, 2); // MNIBBLES = 4
        put(chunk.len() as u64 - 1, 16);
        put(1, 1); // ISUNCOMPRESSED
        let bytes = n.div_ceil(8);
        for i in 0..bytes {
            out.push((bits >> (8 * i)) as u8);
        }
        out.extend_from_slice(chunk);
    }
    if first {
        // Empty input: WBITS, ISLAST, ISLASTEMPTY.
        out.push(0b110);
    } else {
        out.push(0b11);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bodies_the_helper_would_decode_go_to_it_and_answers_keep_their_places() {
        let text = br#"{"type":"response.done","text":"plain"}"#;
        let gz = compress("gzip", b"the gzip body");
        let zl = compress("zlib", b"the zlib body");
        let raw = compress("raw", b"\xff the raw deflate body");
        for c in [&gz, &zl] {
            assert!(may_be_compressed(c), "{c:?}");
        }
        assert!(!may_be_compressed(text) && !may_be_compressed(b""));
        let got = inflate_batch(&[text, &gz, b"", &zl, text]);
        assert_eq!(got.len(), 5);
        assert!(got[0].is_empty() && got[2].is_empty() && got[4].is_empty());
        assert_eq!(got[1], vec![b"the gzip body".to_vec()]);
        assert_eq!(got[3], vec![b"the zlib body".to_vec()]);
        // Bare deflate is tried on a binary body only, as the helper does.
        if may_be_compressed(&raw) {
            assert!(inflate_batch(&[&raw])[0].contains(&b"\xff the raw deflate body".to_vec()));
        }
    }
}

//! Form bodies: `application/x-www-form-urlencoded` (every name and value, percent-decoded)
//! and `multipart/form-data` (RFC 7578: every part's headers, and its body by its own shape —
//! a JSONL file for `/v1/files`, text, JSON, or bytes). Only what changed is rewritten; every
//! other byte goes out as it came.

use super::{Inspector, Out, RequestError, State};

fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else if b == b' ' {
            out.push('+');
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One name or value of a form: its new encoding when it changed.
fn form_piece(
    ins: &Inspector<'_>,
    raw: &[u8],
    st: &mut State,
) -> Result<Option<String>, RequestError> {
    let (dec, ok) = crate::policy::credentials::percent_decode(raw, true);
    if !ok {
        return Err(RequestError::Unreadable(
            "a broken %-escape in a form".into(),
        ));
    }
    match String::from_utf8(dec) {
        Ok(s) => Ok(ins.text(&s, st)?.map(|n| form_encode(&n))),
        Err(e) => {
            ins.bytes(e.as_bytes(), st)?;
            Ok(None)
        }
    }
}

pub(crate) fn urlencoded(
    ins: &Inspector<'_>,
    body: &[u8],
    st: &mut State,
) -> Result<Out, RequestError> {
    let mut out = Vec::with_capacity(body.len());
    let mut changed = false;
    for (i, pair) in body.split(|&b| b == b'&').enumerate() {
        if i > 0 {
            out.push(b'&');
        }
        let (name, value) = match pair.iter().position(|&b| b == b'=') {
            Some(at) => (&pair[..at], Some(&pair[at + 1..])),
            None => (pair, None),
        };
        match form_piece(ins, name, st)? {
            Some(n) => {
                out.extend_from_slice(n.as_bytes());
                changed = true;
            }
            None => out.extend_from_slice(name),
        }
        if let Some(v) = value {
            out.push(b'=');
            match form_piece(ins, v, st)? {
                Some(n) => {
                    out.extend_from_slice(n.as_bytes());
                    changed = true;
                }
                None => out.extend_from_slice(v),
            }
        }
    }
    Ok(Out {
        bytes: changed.then_some(out),
        json: None,
    })
}

/// The `boundary` parameter of a multipart content type.
fn boundary(ct: &str) -> Option<String> {
    for p in ct.split(';').skip(1) {
        let (k, v) = p.split_once('=')?;
        if k.trim().eq_ignore_ascii_case("boundary") {
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v);
            if v.is_empty() || v.len() > 70 {
                return None;
            }
            return Some(v.to_string());
        }
    }
    None
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if from > hay.len() {
        return None;
    }
    hay[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

pub(crate) fn multipart(
    ins: &Inspector<'_>,
    body: &[u8],
    ct: &str,
    depth: usize,
    st: &mut State,
) -> Result<Out, RequestError> {
    let bad = |why: &str| RequestError::Unreadable(format!("multipart body: {why}"));
    let b = boundary(ct).ok_or_else(|| bad("no usable boundary parameter"))?;
    let delim = format!("--{b}");
    let delim = delim.as_bytes();
    // Edits over the original bytes: (range, replacement).
    let mut edits: Vec<(usize, usize, Vec<u8>)> = Vec::new();
    let mut at = if body.starts_with(delim) {
        0
    } else {
        find(body, &[b"\r\n", delim].concat(), 0).ok_or_else(|| bad("no first boundary"))? + 2
    };
    // The preamble (before the first boundary) is ignored by readers but scanned all the same.
    if at > 0 {
        ins.bytes(&body[..at], st)?;
    }
    loop {
        let after = at + delim.len();
        if body[after..].starts_with(b"--") {
            // The close delimiter; what follows (the epilogue) is scanned as bytes.
            ins.bytes(&body[after + 2..], st)?;
            break;
        }
        let line_end =
            find(body, b"\r\n", after).ok_or_else(|| bad("a boundary line without CRLF"))?;
        if !body[after..line_end]
            .iter()
            .all(|&c| c == b' ' || c == b'\t')
        {
            return Err(bad("text after a boundary"));
        }
        let head_start = line_end + 2;
        let (head_end, body_start) = if body[head_start..].starts_with(b"\r\n") {
            (head_start, head_start + 2)
        } else {
            let e = find(body, b"\r\n\r\n", head_start)
                .ok_or_else(|| bad("a part without a blank line"))?;
            (e, e + 4)
        };
        let next = find(body, &[b"\r\n", delim].concat(), body_start)
            .ok_or_else(|| bad("no closing boundary"))?;
        let head = std::str::from_utf8(&body[head_start..head_end])
            .map_err(|_| bad("part headers are not text"))?;
        // The part's headers (a file name can carry a secret too).
        if let Some(n) = ins.text(head, st)? {
            edits.push((head_start, head_end, n.into_bytes()));
        }
        let mut part_ct = String::new();
        for h in head.split("\r\n") {
            let Some((k, v)) = h.split_once(':') else {
                return Err(bad("a part header without a colon"));
            };
            match k.trim().to_ascii_lowercase().as_str() {
                "content-type" => part_ct = v.trim().to_ascii_lowercase(),
                "content-transfer-encoding" => {
                    let v = v.trim().to_ascii_lowercase();
                    if !matches!(v.as_str(), "7bit" | "8bit" | "binary") {
                        return Err(bad(
                            "a part with a Content-Transfer-Encoding other than 7bit/8bit/binary",
                        ));
                    }
                }
                _ => {}
            }
        }
        let part = &body[body_start..next];
        let o = ins.piece(part, &part_ct, depth + 1, st)?;
        if let Some(n) = o.bytes {
            if find(&n, delim, 0).is_some() {
                return Err(bad("a masked part would contain the boundary"));
            }
            edits.push((body_start, next, n));
        }
        at = next + 2;
    }
    if edits.is_empty() {
        return Ok(Out {
            bytes: None,
            json: None,
        });
    }
    let mut out = Vec::with_capacity(body.len());
    let mut pos = 0;
    for (s, e, n) in edits {
        out.extend_from_slice(&body[pos..s]);
        out.extend_from_slice(&n);
        pos = e;
    }
    out.extend_from_slice(&body[pos..]);
    Ok(Out {
        bytes: Some(out),
        json: None,
    })
}

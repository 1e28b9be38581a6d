//! The request target's path, normalised once before anything decides on it (RFC 3986
//! §6.2.2): percent-encodings of characters a path may carry as they are decoded, dot segments
//! removed, duplicate slashes collapsed. What the gateway decides on is what goes upstream.
//! Spellings that servers disagree about are refused rather than guessed: an encoded `/` or
//! `\`, a raw `\`, `;` path parameters, control bytes.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the request path must start with `/`")]
    NotAbsolute,
    #[error("the request path has a malformed percent-encoding")]
    BadEscape,
    #[error(
        "the request path encodes `{0}`, which servers read differently; spell the path plainly"
    )]
    EncodedDelimiter(char),
    #[error("the request path contains `{0}`, which servers read differently")]
    Ambiguous(char),
    #[error("the request path contains a control character")]
    Control,
}

/// May `b` appear literally in a path segment (RFC 3986 `pchar` less `%`)?
fn pchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,=:@".contains(&b)
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// The normalised path (without the query).
pub fn normalise(path: &str) -> Result<String, PathError> {
    let b = path.as_bytes();
    if b.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    // 1. Percent-decoding of what a segment may carry literally; every other escape kept, in
    //    upper case.
    let mut dec = String::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'%' => {
                let (Some(h), Some(l)) = (
                    b.get(i + 1).copied().and_then(hex),
                    b.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(PathError::BadEscape);
                };
                let v = h << 4 | l;
                match v {
                    b'/' | b'\\' | b';' | b'?' | b'#' | b'%' => {
                        return Err(PathError::EncodedDelimiter(v as char));
                    }
                    0..0x20 | 0x7f => return Err(PathError::Control),
                    v if pchar(v) => dec.push(v as char),
                    v => dec.push_str(&format!("%{v:02X}")),
                }
                i += 3;
            }
            b'\\' | b';' => return Err(PathError::Ambiguous(c as char)),
            0..0x20 | 0x7f => return Err(PathError::Control),
            _ => {
                dec.push(c as char);
                i += 1;
            }
        }
    }
    // 2. Dot segments and empty segments (duplicate slashes); a trailing slash is kept.
    let trailing =
        dec.len() > 1 && (dec.ends_with('/') || dec.ends_with("/.") || dec.ends_with("/.."));
    let mut out: Vec<&str> = Vec::new();
    for seg in dec.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut p = String::with_capacity(dec.len());
    for s in &out {
        p.push('/');
        p.push_str(s);
    }
    if p.is_empty() || trailing {
        p.push('/');
    }
    Ok(p)
}

/// The path as the adapters classify it: case folded and without a trailing slash (the
/// providers' routers ignore both, or answer 404 — either way the request is scanned as the
/// endpoint it names).
pub fn for_routing(normalised: &str) -> String {
    let t = normalised.trim_end_matches('/');
    if t.is_empty() {
        "/".into()
    } else {
        t.to_ascii_lowercase()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_of_one_path_normalise_alike() {
        for p in [
            "/v1/chat/completions",
            "//v1/chat/completions",
            "/v1//chat///completions",
            "/v1/%63hat/completions",
            "/v1/%63%68%61%74/completions",
            "/v1/./chat/completions",
            "/v1/chat/../chat/completions",
            "/x/../v1/chat/completions",
            "/../v1/chat/completions",
            "/v1/%2e/chat/completions",
            "/v1/%2E%2E/v1/chat/completions",
        ] {
            assert_eq!(normalise(p).unwrap(), "/v1/chat/completions", "{p}");
        }
        assert_eq!(
            for_routing(&normalise("/V1/Chat/Completions/").unwrap()),
            "/v1/chat/completions"
        );
        assert_eq!(
            normalise("/v1/chat/completions/").unwrap(),
            "/v1/chat/completions/"
        );
        assert_eq!(normalise("/").unwrap(), "/");
        assert_eq!(normalise("/..").unwrap(), "/");
        assert_eq!(
            normalise("/v1beta/models/gemini-pro%3AgenerateContent").unwrap(),
            "/v1beta/models/gemini-pro:generateContent"
        );
        assert_eq!(normalise("/a%20b/%c3%a9").unwrap(), "/a%20b/%C3%A9");
    }

    #[test]
    fn ambiguous_spellings_are_refused() {
        for (p, e) in [
            ("/v1%2fchat/completions", PathError::EncodedDelimiter('/')),
            ("/v1%5Cchat", PathError::EncodedDelimiter('\\')),
            ("/v1/chat/completions;x", PathError::Ambiguous(';')),
            ("/v1\\chat", PathError::Ambiguous('\\')),
            ("/v1/%3Bx", PathError::EncodedDelimiter(';')),
            ("/v1/%00", PathError::Control),
            ("/v1/%zz", PathError::BadEscape),
            ("/v1/%4", PathError::BadEscape),
            ("/v1/%253f", PathError::EncodedDelimiter('%')),
            ("v1/chat", PathError::NotAbsolute),
            ("*", PathError::NotAbsolute),
        ] {
            assert_eq!(normalise(p), Err(e), "{p}");
        }
    }
}

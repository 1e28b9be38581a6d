//! The request target's path, normalised once before anything decides on it (RFC 3986
//! §6.2.2): percent-encodings of characters a path may carry as they are decoded, dot segments
//! removed, duplicate slashes collapsed. What the gateway decides on is what goes upstream.
//! Spellings that servers disagree about are refused rather than guessed: an encoded `/` or
//! `\`, a raw `\`, `;` path parameters, control bytes.
//!
//! One exception, for an API whose identifiers contain `/` (Bedrock's model ids that are
//! ARNs, `/model/arn%3Aaws%3Abedrock%3A...%3Ainference-profile%2Fus.anthropic.../converse`, as
//! the AWS SDKs encode them): an encoded `/` is accepted in the one segment right after a
//! leading segment the adapter names, and kept encoded — that segment stays one segment for
//! the gateway and the provider alike, so nothing decides on a different path than the one
//! that goes upstream. Everywhere else (and in every other API) it is refused.

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
    normalise_with(path, None)
}

/// [`normalise`], with an encoded `/` kept (as `%2F`) in the segment right after a first
/// segment spelled exactly `slash_after` (see the module doc).
pub fn normalise_with(path: &str, slash_after: Option<&str>) -> Result<String, PathError> {
    let b = path.as_bytes();
    if b.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    // Where an encoded `/` may stay: the raw bytes of that one segment.
    let slash_ok = slash_after
        .map(|s| format!("/{s}/"))
        .filter(|p| path.starts_with(p.as_str()))
        .map(|p| {
            let start = p.len();
            let end = path[start..].find('/').map_or(path.len(), |i| start + i);
            start..end
        });
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
                    b'/' if slash_ok.as_ref().is_some_and(|r| r.contains(&i)) => {
                        dec.push_str("%2F");
                    }
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

    #[test]
    fn bedrock_model_ids_keep_their_encoded_slash_in_that_segment_only() {
        let m = Some("model");
        // boto3: `:` as %3A (decoded: a pchar), `/` as %2F (kept encoded).
        assert_eq!(
            normalise_with(
                "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse",
                m
            )
            .unwrap(),
            "/model/anthropic.claude-3-haiku-20240307-v1:0/converse"
        );
        assert_eq!(
            normalise_with(
                "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2fus.anthropic.claude-3-haiku-20240307-v1%3A0/converse-stream",
                m
            )
            .unwrap(),
            "/model/arn:aws:bedrock:us-east-1:123456789012:inference-profile%2Fus.anthropic.claude-3-haiku-20240307-v1:0/converse-stream"
        );
        let id = "/model/a%2Fb/invoke";
        assert_eq!(
            crate::request::path::for_routing(&normalise_with(id, m).unwrap()),
            "/model/a%2fb/invoke",
            "still three segments"
        );
        // Anywhere else, or without the adapter's say, still refused.
        for (p, slash_after) in [
            (id, None),
            ("/model/a/b%2Fc/invoke", m),
            ("/x/model/a%2Fb/invoke", m),
            ("/model/a/invoke%2F", m),
            ("/Model/a%2Fb/invoke", m),
            ("/models/a%2Fb/invoke", m),
        ] {
            assert_eq!(
                normalise_with(p, slash_after),
                Err(PathError::EncodedDelimiter('/')),
                "{p}"
            );
        }
        // The other delimiters stay refused there too.
        assert_eq!(
            normalise_with("/model/a%5Cb/invoke", m),
            Err(PathError::EncodedDelimiter('\\'))
        );
    }
}

//! Base64 inside a string: a data URL's payload (`data:<mime>;base64,...`) or a whole string
//! that is long base64 (standard or URL-safe alphabet, padded or not). Both the request and
//! the answer stage decode it to scan what is inside, and encode masked text back the same way.

use base64::{
    Engine as _,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
};

/// A string decoded from base64, with how to encode a replacement the same way.
pub struct Decoded<'a> {
    /// Everything before the payload (`data:...;base64,`, or nothing).
    pub prefix: &'a str,
    pub bytes: Vec<u8>,
    engine: GeneralPurpose,
    padded: bool,
}

impl Decoded<'_> {
    /// `text` encoded as the original was (same prefix, alphabet and padding).
    pub fn encode(&self, text: &str) -> String {
        let mut e = self.engine.encode(text.as_bytes());
        if self.padded {
            while !e.len().is_multiple_of(4) {
                e.push('=');
            }
        }
        format!("{}{e}", self.prefix)
    }
}

/// `s` decoded, if it is a base64 data URL or a whole string of long base64.
pub fn decode(s: &str) -> Option<Decoded<'_>> {
    let (prefix, payload) = match data_url_payload(s) {
        Some(p) => p,
        None if looks_base64(s) => ("", s),
        None => return None,
    };
    let url = payload.contains(['-', '_']);
    if url && payload.contains(['+', '/']) {
        return None;
    }
    let cfg = GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true);
    let alphabet = if url {
        &base64::alphabet::URL_SAFE
    } else {
        &base64::alphabet::STANDARD
    };
    let engine = GeneralPurpose::new(alphabet, cfg);
    let bytes = engine
        .decode(payload.trim_end_matches('=').as_bytes())
        .ok()?;
    Some(Decoded {
        prefix,
        bytes,
        engine,
        padded: payload.ends_with('='),
    })
}

/// `data:<mime>[;params];base64,<payload>`: (everything up to the payload, the payload).
fn data_url_payload(s: &str) -> Option<(&str, &str)> {
    if !s.get(..5)?.eq_ignore_ascii_case("data:") {
        return None;
    }
    let rest = &s[5..];
    let comma = rest.find(',')?;
    if !rest[..comma].to_ascii_lowercase().ends_with(";base64") {
        return None;
    }
    let at = 5 + comma + 1;
    Some((&s[..at], &s[at..]))
}

/// Long enough and only base64 characters (either alphabet), padding only at the end.
fn looks_base64(s: &str) -> bool {
    s.len() >= 16
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_' | b'='))
        && !s.trim_end_matches('=').contains('=')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_urls_and_long_base64_round_trip() {
        let d = decode("data:text/plain;base64,aGVsbG8gd29ybGQ=").unwrap();
        assert_eq!(d.bytes, b"hello world");
        assert_eq!(
            d.encode("hello world"),
            "data:text/plain;base64,aGVsbG8gd29ybGQ="
        );
        let d = decode("aGVsbG8gd29ybGQgYWdhaW4").unwrap();
        assert_eq!(d.bytes, b"hello world again");
        assert_eq!(d.encode("hello world again"), "aGVsbG8gd29ybGQgYWdhaW4");
        assert!(decode("short").is_none());
        assert!(decode("this is prose, not base64 at all").is_none());
        assert!(decode("abc+def-ghi_jkl/mno").is_none(), "mixed alphabets");
    }
}

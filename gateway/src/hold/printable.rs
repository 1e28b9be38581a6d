//! What an approver reads comes from the held request (prompt, model, the process's name):
//! attacker-chosen text. Before it reaches a terminal, a webhook or the admin API, control
//! characters are made visible (`ESC` → `\x1b`), so a prompt cannot clear the screen, move the
//! cursor over the line above, or reorder text with bidirectional overrides.

/// `s` with every control character (C0, DEL, C1) and every bidirectional formatting character
/// written as an escape: `\x1b`, `\u{202e}`. Newlines and tabs are kept unless `one_line`,
/// when they become `\n`, `\r` and `\t`. Backslashes are left alone, so applying it twice
/// changes nothing.
pub fn printable(s: &str, one_line: bool) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' | '\t' if !one_line => out.push(c),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x100 && c.is_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if is_format(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// Bidirectional marks, embeddings, overrides and isolates, and the zero-width characters that
/// hide text (Unicode general category Cf that changes how text displays).
fn is_format(c: char) -> bool {
    matches!(c as u32,
        0x061c | 0x200b..=0x200f | 0x202a..=0x202e | 0x2060..=0x2064 | 0x2066..=0x206f | 0xfeff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_become_visible_and_text_stays() {
        assert_eq!(
            printable("a\u{1b}[2Jb\u{7}\u{7f}\u{9b}c", false),
            "a\\x1b[2Jb\\x07\\x7f\\x9bc"
        );
        assert_eq!(
            printable("x\u{202e}y\u{200b}", false),
            "x\\u{202e}y\\u{200b}"
        );
        assert_eq!(printable("one\ntwo\tthree\r", false), "one\ntwo\tthree\\r");
        assert_eq!(printable("one\ntwo\tthree", true), "one\\ntwo\\tthree");
        assert_eq!(printable("héllo 日本 \\x1b", true), "héllo 日本 \\x1b");
        let once = printable("\u{1b}]0;owned\u{7}\n", true);
        assert_eq!(printable(&once, true), once);
        assert!(!once.chars().any(|c| c.is_control()));
    }
}

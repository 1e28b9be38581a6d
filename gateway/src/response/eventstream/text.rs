//! An event-stream answer as text, for the journal (`response_body`): the journal keeps
//! text, and the binary framing is no use to a reader. The answer as delivered (masked,
//! re-encoded) is decoded again message by message; each message becomes one JSON line —
//! its headers by name, its payload as JSON (a `chunk`'s `bytes` decoded from base64: the
//! model's own event) — so `gateway journal show` and `gateway replay` print what the client
//! read, in order.

use base64::Engine as _;
use serde_json::{Map, Value as Json, json};

use super::{Message, Value, decode};

/// Decodes the delivered bytes as they pass; whatever is complete comes out as lines.
#[derive(Default)]
pub struct Transcript {
    buf: Vec<u8>,
    /// The bytes stopped being an event stream: nothing more is decoded.
    broken: bool,
}

impl Transcript {
    /// The lines for the messages `data` completes (empty while a message is unfinished).
    pub fn push(&mut self, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        if self.broken {
            return out;
        }
        self.buf.extend_from_slice(data);
        let mut at = 0;
        loop {
            match decode(&self.buf[at..]) {
                Ok(Some((m, n))) => {
                    serde_json::to_writer(&mut out, &line(&m)).expect("JSON into a Vec");
                    out.push(b'\n');
                    at += n;
                }
                Ok(None) => break,
                Err(e) => {
                    // What the client got here is not a valid message (the gateway's own
                    // output always is): said once, nothing after it decoded.
                    let l = json!({"gateway": format!("not recorded from here: {e}")});
                    serde_json::to_writer(&mut out, &l).expect("JSON into a Vec");
                    out.push(b'\n');
                    self.broken = true;
                    self.buf = Vec::new();
                    return out;
                }
            }
        }
        self.buf.drain(..at);
        out
    }
}

/// One message as one JSON object: `{"headers": {...}, "payload": ...}`.
pub fn line(m: &Message) -> Json {
    let mut headers = Map::new();
    for (n, v) in &m.headers {
        let v = match v {
            Value::Bool(b) => json!(b),
            Value::Byte(x) => json!(x),
            Value::Short(x) => json!(x),
            Value::Int(x) => json!(x),
            Value::Long(x) => json!(x),
            Value::Timestamp(x) => json!(x),
            Value::String(s) => json!(s),
            Value::Bytes(b) => json!(base64::engine::general_purpose::STANDARD.encode(b)),
            Value::Uuid(u) => json!(u.iter().map(|b| format!("{b:02x}")).collect::<String>()),
        };
        headers.insert(n.clone(), v);
    }
    let mut payload = match serde_json::from_slice::<Json>(&m.payload) {
        Ok(v) => v,
        Err(_) => Json::String(String::from_utf8_lossy(&m.payload).into_owned()),
    };
    if m.header(":event-type") == Some("chunk")
        && let Some(b) = payload.get("bytes").and_then(Json::as_str)
        && let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(b)
    {
        payload["bytes"] = serde_json::from_slice(&raw)
            .unwrap_or_else(|_| Json::String(String::from_utf8_lossy(&raw).into_owned()));
    }
    json!({"headers": headers, "payload": payload})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::response::eventstream::{event, exception};

    #[test]
    fn messages_become_lines_as_they_complete() {
        let mut wire = Vec::new();
        event(
            "contentBlockDelta",
            br#"{"contentBlockIndex":0,"delta":{"text":"hi [MASKED:x]"}}"#.to_vec(),
        )
        .encode(&mut wire);
        let native = br#"{"type":"content_block_delta","delta":{"text":"yo"}}"#;
        event(
            "chunk",
            json!({"bytes": base64::engine::general_purpose::STANDARD.encode(native)})
                .to_string()
                .into_bytes(),
        )
        .encode(&mut wire);
        exception("internalServerException", "gateway: cut").encode(&mut wire);
        let mut t = Transcript::default();
        let mut text = Vec::new();
        // A byte at a time: a line only once its message is complete.
        let mut lines_at = Vec::new();
        for (i, b) in wire.iter().enumerate() {
            let got = t.push(&[*b]);
            if !got.is_empty() {
                lines_at.push(i + 1);
            }
            text.extend(got);
        }
        assert_eq!(lines_at.len(), 3);
        assert_eq!(*lines_at.last().unwrap(), wire.len());
        let lines: Vec<Json> = String::from_utf8(text)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["headers"][":event-type"], "contentBlockDelta");
        assert_eq!(lines[0]["payload"]["delta"]["text"], "hi [MASKED:x]");
        assert_eq!(lines[1]["payload"]["bytes"]["delta"]["text"], "yo");
        assert_eq!(lines[2]["headers"][":message-type"], "exception");
        assert_eq!(lines[2]["payload"]["message"], "gateway: cut");
        // Bytes that are not an event stream: said once, then nothing.
        let mut t = Transcript::default();
        let first = String::from_utf8(t.push(b"\x00\x00\x00\x20garbage-garbage")).unwrap();
        assert!(first.contains("not recorded from here"), "{first}");
        assert!(t.push(&wire).is_empty());
    }
}

//! What the journal keeps of a session's messages: the masked text as delivered, with base64
//! audio (Realtime `input_audio_buffer.append` / `response.audio.delta`, Gemini Live
//! `realtimeInput` / `inlineData`) replaced by its length, bounded by `journal.max_body`.

use serde_json::Value;

use crate::journal::ws::{WsClose, WsMessage, WsSession};

/// Strings shorter than this are never taken for audio.
const MIN_AUDIO: usize = 64;

/// Most timeline entries one record keeps (the rest are counted).
const MAX_ENTRIES: usize = 20_000;

/// Replace every string of `v` that is base64 of binary data (audio, images) by
/// `[audio: N bytes]`; returns the bytes so replaced.
pub fn strip_audio(v: &mut Value) -> u64 {
    match v {
        Value::String(s) if s.len() >= MIN_AUDIO => {
            let Some(d) = crate::policy::b64::decode(s) else {
                return 0;
            };
            if std::str::from_utf8(&d.bytes).is_ok() {
                return 0;
            }
            let n = d.bytes.len() as u64;
            *s = format!("[audio: {n} bytes]");
            n
        }
        Value::Array(a) => a.iter_mut().map(strip_audio).sum(),
        Value::Object(o) => o.values_mut().map(strip_audio).sum(),
        _ => 0,
    }
}

/// The journal's copy of a text message: its JSON with audio replaced (or the text as it is).
pub fn journal_text(text: &str) -> (String, u64) {
    match serde_json::from_str::<Value>(text) {
        Ok(mut v) => {
            let n = strip_audio(&mut v);
            if n == 0 {
                (text.to_string(), 0)
            } else {
                (v.to_string(), n)
            }
        }
        Err(_) => (text.to_string(), 0),
    }
}

/// The session's record as it is built, message by message.
pub struct Timeline {
    pub session: WsSession,
    /// Bytes of text the journal may still keep (`None`: bodies are not kept).
    budget: Option<usize>,
    pub truncated: bool,
    pub client_bytes: u64,
    pub server_bytes: u64,
}

/// One message for the timeline.
pub struct Entry<'a> {
    pub client: bool,
    pub at_ms: f64,
    pub kind: &'static str,
    pub len: usize,
    /// The text as delivered (already free of audio).
    pub text: Option<&'a str>,
    pub action: Option<&'static str>,
}

impl Timeline {
    pub fn new(budget: Option<usize>, h2: bool) -> Self {
        Self {
            session: WsSession {
                transport: if h2 { "h2" } else { "h1" }.into(),
                ..Default::default()
            },
            budget,
            truncated: false,
            client_bytes: 0,
            server_bytes: 0,
        }
    }

    pub fn push(&mut self, e: Entry<'_>) {
        let s = &mut self.session;
        if matches!(e.kind, "text" | "binary") {
            if e.client {
                s.client_messages += 1;
                self.client_bytes += e.len as u64;
            } else {
                s.server_messages += 1;
                self.server_bytes += e.len as u64;
            }
        }
        if s.messages.len() >= MAX_ENTRIES {
            s.dropped += 1;
            self.truncated = true;
            return;
        }
        let text = match (e.text, self.budget.as_mut()) {
            (Some(t), Some(b)) if t.len() <= *b => {
                *b -= t.len();
                Some(t.to_string())
            }
            (Some(_), Some(_)) => {
                self.truncated = true;
                None
            }
            _ => None,
        };
        s.messages.push(WsMessage {
            dir: if e.client { "client" } else { "server" }.into(),
            at_ms: (e.at_ms * 1000.0).round() / 1000.0,
            kind: e.kind.into(),
            len: e.len,
            text,
            action: e.action.map(String::from),
        });
    }

    /// The first close decides how the session ended.
    pub fn closed(&mut self, by: &str, code: u16, reason: &str) {
        if self.session.close.is_none() {
            self.session.close = Some(WsClose {
                by: by.into(),
                code,
                reason: reason.into(),
            });
        }
    }
}

/// `gateway journal show`'s text for a session: its close and its timeline, one line a message.
pub fn show(ws: &Value) -> String {
    let mut out = String::from("\n--- websocket session ---\n");
    if let Some(c) = ws.get("close").filter(|c| c.is_object()) {
        out.push_str(&format!(
            "closed by {} with {} {}\n",
            c["by"].as_str().unwrap_or("?"),
            c["code"],
            c["reason"].as_str().unwrap_or("")
        ));
    }
    for m in ws["messages"].as_array().into_iter().flatten() {
        let arrow = if m["dir"] == "client" { "->" } else { "<-" };
        out.push_str(&format!(
            "{:>10.1} ms {arrow} {} {} bytes{}{}\n",
            m["at_ms"].as_f64().unwrap_or(0.0),
            m["kind"].as_str().unwrap_or("?"),
            m["len"],
            m["action"]
                .as_str()
                .map(|a| format!(" [{a}]"))
                .unwrap_or_default(),
            m["text"]
                .as_str()
                .map(|t| format!(": {t}"))
                .unwrap_or_default(),
        ));
    }
    out
}

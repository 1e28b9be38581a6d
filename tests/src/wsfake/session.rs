//! One running WebSocket session of the fake (see the parent module for what each API
//! answers), and the Responses API events it shares with the HTTP fake.

use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio_tungstenite::{WebSocketStream, tungstenite::Message};

use super::{Script, WsApi, WsMsg, WsOptions, WsState};

pub(super) type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// One running session.
pub(super) struct Run {
    pub(super) ws: Ws,
    pub(super) st: Arc<WsState>,
    pub(super) index: usize,
    pub(super) api: WsApi,
    pub(super) script: Script,
    pub(super) cred: String,
    pub(super) options: WsOptions,
    pub(super) beta_realtime: bool,
    pub(super) oversize_sent: bool,
    pub(super) seq: u64,
    pub(super) responses: u64,
    /// Realtime: the session asked for audio output.
    pub(super) audio_out: bool,
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Run {
    pub(super) async fn serve(&mut self) {
        if self.api == WsApi::Realtime {
            let created = json!({"type": "session.created", "event_id": self.event_id(),
                "session": self.realtime_session()});
            if self.send(created).await.is_err() {
                return;
            }
        }
        while let Some(msg) = self.ws.next().await {
            let msg = match msg {
                Ok(Message::Text(t)) => WsMsg::Text(t.to_string()),
                Ok(Message::Binary(b)) => WsMsg::Binary(b.to_vec()),
                Ok(Message::Close(frame)) => {
                    let c = frame.map(|f| (u16::from(f.code), f.reason.to_string()));
                    self.st
                        .update(self.index, |s| s.close = c.or(Some((1005, String::new()))));
                    // tungstenite answers the close; drain until the stream ends.
                    continue;
                }
                Ok(_) => continue,
                Err(e) => {
                    self.st
                        .update(self.index, |s| s.error = Some(e.to_string()));
                    return;
                }
            };
            self.st.update(self.index, |s| s.received.push(msg.clone()));
            let Some(v) = msg.json() else {
                let e = self.error_event("the message is not JSON");
                let _ = self.send(e).await;
                continue;
            };
            if !self.oversize_sent
                && let Some(n) = self.options.oversize
            {
                self.oversize_sent = true;
                let big = self.oversized(n);
                if self.send(big).await.is_err() {
                    return;
                }
            }
            let r = match self.api {
                WsApi::Responses => self.responses(&v).await,
                WsApi::Realtime => self.realtime(&v).await,
                WsApi::GeminiLive => self.gemini(&v).await,
            };
            if r.is_err() {
                return;
            }
        }
    }

    async fn send(&mut self, v: Value) -> Result<(), ()> {
        let text = v.to_string();
        let (msg, rec) = if self.api == WsApi::GeminiLive && !self.options.gemini_text_frames {
            (
                Message::Binary(Bytes::from(text.clone().into_bytes())),
                WsMsg::Binary(text.into_bytes()),
            )
        } else {
            (Message::Text(text.clone().into()), WsMsg::Text(text))
        };
        match self.ws.send(msg).await {
            Ok(()) => {
                self.st.update(self.index, |s| s.sent.push(rec));
                Ok(())
            }
            Err(e) => {
                self.st
                    .update(self.index, |s| s.error = Some(format!("send: {e}")));
                Err(())
            }
        }
    }

    fn event_id(&mut self) -> String {
        self.seq += 1;
        format!("event_{}", self.seq)
    }

    fn error_event(&mut self, why: &str) -> Value {
        match self.api {
            WsApi::GeminiLive => {
                json!({"error": {"code": 400, "message": why, "status": "INVALID_ARGUMENT"}})
            }
            WsApi::Responses => json!({"type": "error", "status": 400,
                "error": {"type": "invalid_request_error", "code": "invalid_request", "message": why}}),
            WsApi::Realtime => json!({"type": "error", "event_id": self.event_id(),
                "error": {"type": "invalid_request_error", "code": "invalid_event", "message": why, "param": null, "event_id": null}}),
        }
    }

    fn oversized(&mut self, n: usize) -> Value {
        let filler = "x".repeat(n);
        match self.api {
            WsApi::GeminiLive => {
                json!({"serverContent": {"modelTurn": {"parts": [{"text": filler}]}}})
            }
            WsApi::Responses => {
                json!({"type": "response.output_text.delta", "item_id": "msg_oversize",
                "output_index": 0, "content_index": 0, "delta": filler, "sequence_number": 0})
            }
            WsApi::Realtime => {
                json!({"type": "response.output_text.delta", "event_id": self.event_id(),
                "response_id": "resp_oversize", "item_id": "item_oversize", "output_index": 0,
                "content_index": 0, "delta": filler})
            }
        }
    }

    // ---- OpenAI Responses WebSocket mode -------------------------------------------------

    async fn responses(&mut self, m: &Value) -> Result<(), ()> {
        match m["type"].as_str() {
            Some("response.create" | "response.append") => {}
            Some("response.processed") => return Ok(()),
            _ => {
                let e = self.error_event("unknown event type (want response.create)");
                return self.send(e).await;
            }
        }
        self.responses += 1;
        let id = format!("{}_{}", self.index, self.responses);
        let deltas = self.script.for_message(m).deltas(&self.cred);
        for e in responses_events(&id, m, &deltas) {
            self.send(e).await?;
        }
        Ok(())
    }

    // ---- OpenAI Realtime ----------------------------------------------------------------

    fn realtime_session(&self) -> Value {
        let modalities = if self.audio_out {
            json!(["audio"])
        } else {
            json!(["text"])
        };
        let mut s = json!({"id": format!("sess_fake_{}", self.index), "object": "realtime.session",
            "model": "gpt-realtime", "instructions": "", "voice": "alloy",
            "input_audio_format": "pcm16", "output_audio_format": "pcm16", "tools": []});
        if self.beta_realtime {
            s["modalities"] = modalities;
        } else {
            s["type"] = json!("realtime");
            s["output_modalities"] = modalities;
        }
        s
    }

    fn wants_audio(v: &Value) -> Option<bool> {
        let m = v.get("output_modalities").or_else(|| v.get("modalities"))?;
        Some(m.as_array()?.iter().any(|x| x.as_str() == Some("audio")))
    }

    async fn realtime(&mut self, m: &Value) -> Result<(), ()> {
        let kind = m["type"].as_str().unwrap_or("").to_string();
        match kind.as_str() {
            "session.update" => {
                if let Some(a) = Self::wants_audio(&m["session"]) {
                    self.audio_out = a;
                }
                let e = json!({"type": "session.updated", "event_id": self.event_id(),
                    "session": self.realtime_session()});
                self.send(e).await
            }
            "conversation.item.create" => {
                let mut item = m["item"].clone();
                if item.get("id").is_none() {
                    item["id"] = json!(format!("item_fake_{}", self.seq));
                }
                item["status"] = json!("completed");
                let e = json!({"type": "conversation.item.created", "event_id": self.event_id(),
                    "previous_item_id": null, "item": item});
                self.send(e).await
            }
            "input_audio_buffer.append" => {
                let n = m["audio"]
                    .as_str()
                    .and_then(|a| base64::engine::general_purpose::STANDARD.decode(a).ok())
                    .map(|b| b.len())
                    .unwrap_or(0);
                self.st.update(self.index, |s| s.audio_bytes += n);
                Ok(())
            }
            "input_audio_buffer.commit" => {
                let e = json!({"type": "input_audio_buffer.committed", "event_id": self.event_id(),
                    "previous_item_id": null, "item_id": format!("item_audio_{}", self.seq)});
                self.send(e).await
            }
            "input_audio_buffer.clear" => {
                let e = json!({"type": "input_audio_buffer.cleared", "event_id": self.event_id()});
                self.send(e).await
            }
            "response.create" => self.realtime_response(m).await,
            "response.cancel" => Ok(()),
            _ => {
                let e = self.error_event(&format!("unknown event type {kind:?}"));
                self.send(e).await
            }
        }
    }

    async fn realtime_response(&mut self, m: &Value) -> Result<(), ()> {
        self.responses += 1;
        let n = self.responses;
        let rid = format!("resp_fake_{}_{n}", self.index);
        let iid = format!("item_fake_{}_{n}", self.index);
        let audio = Self::wants_audio(&m["response"]).unwrap_or(self.audio_out);
        let beta = self.beta_realtime;
        let (delta_kind, done_kind, part_type) = match (audio, beta) {
            (false, true) => ("response.text.delta", "response.text.done", "text"),
            (false, false) => (
                "response.output_text.delta",
                "response.output_text.done",
                "text",
            ),
            (true, true) => (
                "response.audio_transcript.delta",
                "response.audio_transcript.done",
                "audio",
            ),
            (true, false) => (
                "response.output_audio_transcript.delta",
                "response.output_audio_transcript.done",
                "audio",
            ),
        };
        let audio_delta_kind = if beta {
            "response.audio.delta"
        } else {
            "response.output_audio.delta"
        };
        let audio_done_kind = if beta {
            "response.audio.done"
        } else {
            "response.output_audio.done"
        };
        let status = |s: &str, output: Value| {
            json!({"object": "realtime.response", "id": rid, "status": s, "status_details": null,
                "output": output, "usage": null, "metadata": m["response"]["metadata"]})
        };
        let e = json!({"type": "response.created", "event_id": self.event_id(),
            "response": status("in_progress", json!([]))});
        self.send(e).await?;
        let e = json!({"type": "response.output_item.added", "event_id": self.event_id(), "response_id": rid,
            "output_index": 0, "item": {"id": iid, "object": "realtime.item", "type": "message",
            "status": "in_progress", "role": "assistant", "content": []}});
        self.send(e).await?;
        let empty_part = if audio {
            json!({"type": part_type, "transcript": ""})
        } else {
            json!({"type": part_type, "text": ""})
        };
        let e = json!({"type": "response.content_part.added", "event_id": self.event_id(), "response_id": rid,
            "item_id": iid, "output_index": 0, "content_index": 0, "part": empty_part});
        self.send(e).await?;
        let deltas = self.script.for_message(m).deltas(&self.cred);
        let full: String = deltas.concat();
        // 10 ms of PCM16 silence at 24 kHz per audio delta.
        let silence = base64::engine::general_purpose::STANDARD.encode(vec![0u8; 480]);
        for d in &deltas {
            let e = json!({"type": delta_kind, "event_id": self.event_id(), "response_id": rid,
                "item_id": iid, "output_index": 0, "content_index": 0, "delta": d});
            self.send(e).await?;
            if audio {
                let e = json!({"type": audio_delta_kind, "event_id": self.event_id(), "response_id": rid,
                    "item_id": iid, "output_index": 0, "content_index": 0, "delta": silence});
                self.send(e).await?;
            }
        }
        if audio {
            let e = json!({"type": audio_done_kind, "event_id": self.event_id(), "response_id": rid,
                "item_id": iid, "output_index": 0, "content_index": 0});
            self.send(e).await?;
        }
        let text_field = if audio { "transcript" } else { "text" };
        let mut e = json!({"type": done_kind, "event_id": self.event_id(), "response_id": rid,
            "item_id": iid, "output_index": 0, "content_index": 0});
        e[text_field] = json!(full);
        self.send(e).await?;
        let mut part = json!({"type": part_type});
        part[text_field] = json!(full);
        let e = json!({"type": "response.content_part.done", "event_id": self.event_id(), "response_id": rid,
            "item_id": iid, "output_index": 0, "content_index": 0, "part": part});
        self.send(e).await?;
        let item = json!({"id": iid, "object": "realtime.item", "type": "message", "status": "completed",
            "role": "assistant", "content": [part]});
        let e = json!({"type": "response.output_item.done", "event_id": self.event_id(), "response_id": rid,
            "output_index": 0, "item": item});
        self.send(e).await?;
        let mut done = status("completed", json!([item]));
        done["usage"] = json!({"total_tokens": 11, "input_tokens": 5, "output_tokens": 6});
        let e = json!({"type": "response.done", "event_id": self.event_id(), "response": done});
        self.send(e).await
    }

    // ---- Gemini Live --------------------------------------------------------------------

    async fn gemini(&mut self, m: &Value) -> Result<(), ()> {
        if m.get("setup").is_some() {
            return self.send(json!({"setupComplete": {}})).await;
        }
        let answer = if let Some(c) = m.get("clientContent") {
            c["turnComplete"] == json!(true)
        } else if let Some(r) = m.get("realtimeInput") {
            let mut n = 0;
            let chunks = r["mediaChunks"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .chain(r.get("audio").cloned());
            for c in chunks {
                if let Some(d) = c["data"].as_str()
                    && let Ok(b) = base64::engine::general_purpose::STANDARD.decode(d)
                {
                    n += b.len();
                }
            }
            self.st.update(self.index, |s| s.audio_bytes += n);
            r.get("text").is_some()
                || r["audioStreamEnd"] == json!(true)
                || r.get("activityEnd").is_some()
        } else if m.get("toolResponse").is_some() {
            false
        } else {
            let e = self.error_event("unknown message (want setup, clientContent, realtimeInput)");
            return self.send(e).await;
        };
        if !answer {
            return Ok(());
        }
        for d in self.script.for_message(m).deltas(&self.cred) {
            self.send(
                json!({"serverContent": {"modelTurn": {"role": "model", "parts": [{"text": d}]}}}),
            )
            .await?;
        }
        self.send(json!({"serverContent": {"generationComplete": true}}))
            .await?;
        self.send(json!({"serverContent": {"turnComplete": true},
            "usageMetadata": {"promptTokenCount": 5, "responseTokenCount": 6, "totalTokenCount": 11}}))
            .await
    }
}

/// The events of one Responses API answer to the request `m` (a `response.create` message or
/// an HTTP request body): `response.created`, `response.in_progress`, the message item with
/// one `response.output_text.delta` per delta, the `.done`s and `response.completed`, with
/// `sequence_number`s from 0. `"generate": false` (a prewarm) gets only `response.created`
/// and `response.completed` with no output. `id` makes the response and item ids.
pub fn responses_events(id: &str, m: &Value, deltas: &[String]) -> Vec<Value> {
    let rid = format!("resp_fake_{id}");
    let item_id = format!("msg_fake_{id}");
    let model = m["model"].as_str().unwrap_or("gpt-fake").to_string();
    let response = |status: &str, output: Value, usage: Value| {
        json!({"id": rid, "object": "response", "created_at": now(), "status": status,
            "error": null, "incomplete_details": null, "model": model, "output": output,
            "parallel_tool_calls": true, "previous_response_id": m["previous_response_id"],
            "store": false, "text": {"format": {"type": "text"}}, "tool_choice": "auto",
            "tools": [], "usage": usage, "metadata": {}})
    };
    let usage = |i: u64, o: u64| {
        json!({"input_tokens": i, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": o, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": i + o})
    };
    let mut out = vec![json!({"type": "response.created",
        "response": response("in_progress", json!([]), Value::Null)})];
    if m["generate"] == json!(false) {
        out.push(json!({"type": "response.completed",
            "response": response("completed", json!([]), usage(0, 0))}));
    } else {
        let full: String = deltas.concat();
        let part = json!({"type": "output_text", "text": full, "annotations": []});
        let item = json!({"id": item_id, "type": "message", "status": "completed",
            "role": "assistant", "content": [part]});
        out.push(json!({"type": "response.in_progress",
            "response": response("in_progress", json!([]), Value::Null)}));
        out.push(
            json!({"type": "response.output_item.added", "output_index": 0,
            "item": {"id": item_id, "type": "message", "status": "in_progress",
                "role": "assistant", "content": []}}),
        );
        out.push(
            json!({"type": "response.content_part.added", "item_id": item_id,
            "output_index": 0, "content_index": 0,
            "part": {"type": "output_text", "text": "", "annotations": []}}),
        );
        for d in deltas {
            out.push(
                json!({"type": "response.output_text.delta", "item_id": item_id,
                "output_index": 0, "content_index": 0, "delta": d, "logprobs": []}),
            );
        }
        out.push(
            json!({"type": "response.output_text.done", "item_id": item_id,
            "output_index": 0, "content_index": 0, "text": full, "logprobs": []}),
        );
        out.push(
            json!({"type": "response.content_part.done", "item_id": item_id,
            "output_index": 0, "content_index": 0, "part": part}),
        );
        out.push(json!({"type": "response.output_item.done", "output_index": 0, "item": item}));
        out.push(json!({"type": "response.completed",
            "response": response("completed", json!([item]), usage(5, 6))}));
    }
    for (i, e) in out.iter_mut().enumerate() {
        e["sequence_number"] = json!(i);
    }
    out
}

/// The same answer as an SSE body (the HTTP Responses stream): one `event:`/`data:` frame
/// per event.
pub fn responses_sse(id: &str, m: &Value, deltas: &[String]) -> Vec<String> {
    responses_events(id, m, deltas)
        .into_iter()
        .map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap_or("")))
        .collect()
}

//! The AWS event-stream framing (`application/vnd.amazon.eventstream`), as Bedrock streams its
//! answers: decoded message by message, and encoded again with correct lengths and CRCs.
//!
//! A message: prelude (total length u32, headers length u32, CRC32 of those 8 bytes), headers
//! (name length u8, name, type u8, value), payload, CRC32 of everything before it; big-endian
//! throughout. Both CRCs are checked; a message over [`MAX_MESSAGE`] or with a bad CRC is an
//! error (the answer ends), never passed on unread.

/// Largest message accepted (AWS's own limit for an event-stream message is 16 MiB).
pub const MAX_MESSAGE: usize = 16 << 20;

const PRELUDE: usize = 12;
/// Prelude plus the message CRC: the smallest message.
const OVERHEAD: usize = PRELUDE + 4;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Bool(bool),
    Byte(i8),
    Short(i16),
    Int(i32),
    Long(i64),
    Bytes(Vec<u8>),
    String(String),
    /// Milliseconds since the epoch.
    Timestamp(i64),
    Uuid([u8; 16]),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub headers: Vec<(String, Value)>,
    pub payload: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("an event-stream message's prelude CRC does not match")]
    PreludeCrc,
    #[error("an event-stream message's CRC does not match")]
    MessageCrc,
    #[error("an event-stream message of {0} bytes is over the bound of {MAX_MESSAGE}")]
    TooLarge(usize),
    #[error("an event-stream message is malformed ({0})")]
    Malformed(&'static str),
    #[error("the event stream ended inside a message")]
    Truncated,
    #[error(
        "an event-stream message header carried a secret ({0}) in binary data, where it cannot \
         be masked; the answer was cut"
    )]
    Unmaskable(&'static str),
}

impl Message {
    /// A string header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find_map(|(n, v)| match v {
            Value::String(s) if n == name => Some(s.as_str()),
            _ => None,
        })
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut h = Vec::new();
        for (name, v) in &self.headers {
            let name = &name.as_bytes()[..name.len().min(255)];
            h.push(name.len() as u8);
            h.extend_from_slice(name);
            match v {
                Value::Bool(true) => h.push(0),
                Value::Bool(false) => h.push(1),
                Value::Byte(b) => {
                    h.push(2);
                    h.push(*b as u8);
                }
                Value::Short(x) => {
                    h.push(3);
                    h.extend_from_slice(&x.to_be_bytes());
                }
                Value::Int(x) => {
                    h.push(4);
                    h.extend_from_slice(&x.to_be_bytes());
                }
                Value::Long(x) => {
                    h.push(5);
                    h.extend_from_slice(&x.to_be_bytes());
                }
                Value::Bytes(b) => {
                    let b = &b[..b.len().min(u16::MAX as usize)];
                    h.push(6);
                    h.extend_from_slice(&(b.len() as u16).to_be_bytes());
                    h.extend_from_slice(b);
                }
                Value::String(s) => {
                    let b = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
                    h.push(7);
                    h.extend_from_slice(&(b.len() as u16).to_be_bytes());
                    h.extend_from_slice(b);
                }
                Value::Timestamp(x) => {
                    h.push(8);
                    h.extend_from_slice(&x.to_be_bytes());
                }
                Value::Uuid(u) => {
                    h.push(9);
                    h.extend_from_slice(u);
                }
            }
        }
        let total = OVERHEAD + h.len() + self.payload.len();
        let start = out.len();
        out.extend_from_slice(&(total as u32).to_be_bytes());
        out.extend_from_slice(&(h.len() as u32).to_be_bytes());
        let pc = crc32fast::hash(&out[start..start + 8]);
        out.extend_from_slice(&pc.to_be_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(&self.payload);
        let mc = crc32fast::hash(&out[start..]);
        out.extend_from_slice(&mc.to_be_bytes());
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(&mut v);
        v
    }
}

/// Whether `b` starts with a valid event-stream prelude (`None`: fewer than 12 bytes).
pub fn prelude_ok(b: &[u8]) -> Option<bool> {
    if b.len() < PRELUDE {
        return None;
    }
    let total = u32::from_be_bytes(b[0..4].try_into().expect("4")) as usize;
    let hlen = u32::from_be_bytes(b[4..8].try_into().expect("4")) as usize;
    let crc = u32::from_be_bytes(b[8..12].try_into().expect("4"));
    Some(crc32fast::hash(&b[..8]) == crc && total >= OVERHEAD && hlen <= total - OVERHEAD)
}

/// The first complete message of `b` and its length in bytes; `Ok(None)`: not complete yet.
pub fn decode(b: &[u8]) -> Result<Option<(Message, usize)>, FrameError> {
    if b.len() < PRELUDE {
        return Ok(None);
    }
    let total = u32::from_be_bytes(b[0..4].try_into().expect("4")) as usize;
    let hlen = u32::from_be_bytes(b[4..8].try_into().expect("4")) as usize;
    let crc = u32::from_be_bytes(b[8..12].try_into().expect("4"));
    if crc32fast::hash(&b[..8]) != crc {
        return Err(FrameError::PreludeCrc);
    }
    if total > MAX_MESSAGE {
        return Err(FrameError::TooLarge(total));
    }
    if total < OVERHEAD || hlen > total - OVERHEAD {
        return Err(FrameError::Malformed("lengths"));
    }
    if b.len() < total {
        return Ok(None);
    }
    let mcrc = u32::from_be_bytes(b[total - 4..total].try_into().expect("4"));
    if crc32fast::hash(&b[..total - 4]) != mcrc {
        return Err(FrameError::MessageCrc);
    }
    let headers = decode_headers(&b[PRELUDE..PRELUDE + hlen])?;
    let payload = b[PRELUDE + hlen..total - 4].to_vec();
    Ok(Some((Message { headers, payload }, total)))
}

fn decode_headers(mut h: &[u8]) -> Result<Vec<(String, Value)>, FrameError> {
    fn take<'a>(h: &mut &'a [u8], n: usize) -> Result<&'a [u8], FrameError> {
        if h.len() < n {
            return Err(FrameError::Malformed("header"));
        }
        let (a, b) = h.split_at(n);
        *h = b;
        Ok(a)
    }
    let mut out = Vec::new();
    while !h.is_empty() {
        let n = take(&mut h, 1)?[0] as usize;
        let name = std::str::from_utf8(take(&mut h, n)?)
            .map_err(|_| FrameError::Malformed("header name"))?
            .to_string();
        let typ = take(&mut h, 1)?[0];
        let fixed = |h: &mut &[u8], n: usize| take(h, n).map(|b| b.to_vec());
        let v = match typ {
            0 => Value::Bool(true),
            1 => Value::Bool(false),
            2 => Value::Byte(take(&mut h, 1)?[0] as i8),
            3 => Value::Short(i16::from_be_bytes(fixed(&mut h, 2)?.try_into().expect("2"))),
            4 => Value::Int(i32::from_be_bytes(fixed(&mut h, 4)?.try_into().expect("4"))),
            5 => Value::Long(i64::from_be_bytes(fixed(&mut h, 8)?.try_into().expect("8"))),
            6 | 7 => {
                let len = u16::from_be_bytes(fixed(&mut h, 2)?.try_into().expect("2")) as usize;
                let b = take(&mut h, len)?.to_vec();
                if typ == 6 {
                    Value::Bytes(b)
                } else {
                    Value::String(
                        String::from_utf8(b).map_err(|_| FrameError::Malformed("header value"))?,
                    )
                }
            }
            8 => Value::Timestamp(i64::from_be_bytes(fixed(&mut h, 8)?.try_into().expect("8"))),
            9 => Value::Uuid(fixed(&mut h, 16)?.try_into().expect("16")),
            _ => return Err(FrameError::Malformed("header type")),
        };
        out.push((name, v));
    }
    Ok(out)
}

/// An event message: `:message-type event`, `:event-type`, JSON content.
pub fn event(event_type: &str, payload: Vec<u8>) -> Message {
    Message {
        headers: vec![
            (":event-type".into(), Value::String(event_type.into())),
            (
                ":content-type".into(),
                Value::String("application/json".into()),
            ),
            (":message-type".into(), Value::String("event".into())),
        ],
        payload,
    }
}

/// An exception message as Bedrock sends one mid-stream: `:message-type exception`,
/// `:exception-type`, `{"message": ...}`.
pub fn exception(exception_type: &str, message: &str) -> Message {
    Message {
        headers: vec![
            (
                ":exception-type".into(),
                Value::String(exception_type.into()),
            ),
            (
                ":content-type".into(),
                Value::String("application/json".into()),
            ),
            (":message-type".into(), Value::String("exception".into())),
        ],
        payload: serde_json::json!({ "message": message })
            .to_string()
            .into_bytes(),
    }
}

/// The event type gateway errors mid-stream are sent as (Bedrock's own for a server error).
pub const GATEWAY_EXCEPTION: &str = "internalServerException";

/// Mask the complete messages buffered in `buf` into `out` (what is left is an unfinished
/// message); `end`: the answer ended, so what is still held goes out and a partial message is
/// an error. Returns whether the closing event (`messageStop`, Anthropic's `message_stop`)
/// passed.
///
/// Each message's text is masked as the [`Rewriter`] masks events: ConverseStream events
/// (wrapped as `{"<event type>": payload}` so the dialect knows them, [`super::dialect`]) with
/// `contentBlockDelta` text masked across messages; InvokeModelWithResponseStream `chunk`s
/// by their `bytes` (base64 of the model's own JSON event, masked in that dialect, across
/// chunks); exceptions and anything else field by field. A message nothing changed goes out
/// byte for byte; any other is encoded again (lengths and CRCs new).
pub fn drain(
    rw: &mut super::Rewriter,
    buf: &mut bytes::BytesMut,
    out: &mut Vec<u8>,
    end: bool,
) -> Result<bool, FrameError> {
    let mut closed = false;
    while let Some((msg, n)) = decode(buf)? {
        let raw = buf.split_to(n);
        closed |= mask_message(rw, msg, &raw, out)?;
    }
    if end {
        for ev in rw.finish() {
            emit(&ev.1, None, None, out);
        }
        rw.take_altered();
        if !buf.is_empty() {
            return Err(FrameError::Truncated);
        }
    }
    Ok(closed)
}

/// Scan every header of a message, whatever its name: names and string values are masked in
/// place (the message is encoded again, lengths and CRCs new); a hit in a byte-array or UUID
/// value, which has no text to mask, is an error (the answer ends, fail closed). Whether
/// anything changed.
fn mask_headers(
    rw: &mut super::Rewriter,
    headers: &mut [(String, Value)],
) -> Result<bool, FrameError> {
    rw.take_altered();
    for (name, v) in headers.iter_mut() {
        if let Some(m) = rw.mask_whole(name) {
            *name = m;
        }
        match v {
            Value::String(s) => {
                if let Some(m) = rw.mask_whole(s).or_else(|| rw.mask_base64(s)) {
                    *s = m;
                }
            }
            Value::Bytes(b) => rw.refuse_hits(b)?,
            Value::Uuid(u) => rw.refuse_hits(u)?,
            _ => {}
        }
    }
    Ok(rw.take_altered())
}

impl super::Rewriter {
    /// Binary data that cannot be rewritten: its hits are recorded, and one that would have
    /// to be masked (any rule but `monitor`) is an error.
    fn refuse_hits(&mut self, b: &[u8]) -> Result<(), FrameError> {
        let hits = self.scanner.find(
            b,
            0,
            crate::policy::scan::Ctx {
                dir: crate::policy::scan::Direction::Response,
                id: &self.id,
            },
        );
        self.hits.extend(hits.iter().map(|h| (h.rule, h.detector)));
        match hits
            .iter()
            .find(|h| h.effect != crate::policy::scan::Effect::Record)
        {
            Some(h) => Err(FrameError::Unmaskable(h.detector)),
            None => Ok(()),
        }
    }
}

fn mask_message(
    rw: &mut super::Rewriter,
    mut msg: Message,
    raw: &[u8],
    out: &mut Vec<u8>,
) -> Result<bool, FrameError> {
    let mut altered = mask_headers(rw, &mut msg.headers)?;
    let is_event = msg.header(":message-type").is_none_or(|t| t == "event");
    let etype = msg.header(":event-type").map(String::from);
    let payload: Option<serde_json::Value> = serde_json::from_slice(&msg.payload).ok();
    let mut closed = false;
    let evs: Vec<serde_json::Value>;
    let mut chunk_fields = None;
    match (is_event, etype.as_deref(), payload) {
        (true, Some("chunk"), Some(serde_json::Value::Object(mut fields))) => {
            use base64::Engine as _;
            let native = fields
                .get("bytes")
                .and_then(serde_json::Value::as_str)
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok());
            let Some(native) = native else {
                let mut p = serde_json::Value::Object(fields);
                rw.mask_leaves(&mut p, &mut String::new(), &[]);
                altered |= rw.take_altered();
                msg.payload = serde_json::to_vec(&p).expect("JSON");
                return Ok(finish_message(msg, raw, altered, out, false));
            };
            fields.remove("bytes");
            let mut rest = serde_json::Value::Object(fields);
            rw.mask_leaves(&mut rest, &mut String::new(), &[]);
            altered |= rw.take_altered();
            match serde_json::from_slice::<serde_json::Value>(&native) {
                Ok(v) => {
                    closed = v.get("type").and_then(serde_json::Value::as_str)
                        == Some("message_stop")
                        || super::dialect::converse_event(&v) == Some("messageStop");
                    evs = rw.chunk_event(v).into_iter().map(|e| e.1).collect();
                    altered |= rw.take_altered();
                }
                Err(_) => {
                    let m = rw.mask_bytes(&native);
                    altered |= rw.take_altered();
                    evs = vec![serde_json::Value::String(
                        String::from_utf8_lossy(&m).into_owned(),
                    )];
                }
            }
            chunk_fields = Some(rest);
        }
        (true, Some(et), Some(p)) if super::dialect::CONVERSE_EVENTS.contains(&et) => {
            closed = et == "messageStop";
            let wrapped = serde_json::json!({ et: p });
            evs = rw.event(None, wrapped).into_iter().map(|e| e.1).collect();
            altered |= rw.take_altered();
        }
        (_, _, Some(mut p)) => {
            rw.mask_leaves(&mut p, &mut String::new(), &[]);
            altered |= rw.take_altered();
            msg.payload = serde_json::to_vec(&p).expect("JSON");
            return Ok(finish_message(msg, raw, altered, out, false));
        }
        (_, _, None) => {
            let m = rw.mask_bytes(&msg.payload);
            altered |= rw.take_altered();
            msg.payload = m;
            return Ok(finish_message(msg, raw, altered, out, false));
        }
    }
    if !altered && evs.len() == 1 {
        out.extend_from_slice(raw);
        return Ok(closed);
    }
    for ev in &evs {
        emit(ev, Some(&msg.headers), chunk_fields.as_ref(), out);
    }
    Ok(closed)
}

fn finish_message(
    msg: Message,
    raw: &[u8],
    altered: bool,
    out: &mut Vec<u8>,
    closed: bool,
) -> bool {
    if altered {
        msg.encode(out);
    } else {
        out.extend_from_slice(raw);
    }
    closed
}

/// One masked event out as a message: a wrapped ConverseStream event under its own type, a
/// model's native event as a `chunk` (its `bytes` base64 again, the chunk's other fields
/// beside them), anything else as it is. `headers`: the message it came in (a new event
/// message when `None`).
fn emit(
    ev: &serde_json::Value,
    headers: Option<&[(String, Value)]>,
    chunk_fields: Option<&serde_json::Value>,
    out: &mut Vec<u8>,
) {
    let with_type = |et: &str, payload: Vec<u8>| {
        let mut m = event(et, payload);
        if let Some(h) = headers {
            m.headers = h.to_vec();
            match m.headers.iter_mut().find(|(n, _)| n == ":event-type") {
                Some((_, v)) => *v = Value::String(et.into()),
                None => m
                    .headers
                    .push((":event-type".into(), Value::String(et.into()))),
            }
        }
        m
    };
    // A chunk stays a chunk, whatever its model's events look like (Amazon Nova's are
    // shaped like ConverseStream's).
    let converse = super::dialect::converse_event(ev).filter(|_| chunk_fields.is_none());
    let msg = if let Some(et) = converse {
        with_type(et, serde_json::to_vec(&ev[et]).expect("JSON"))
    } else if chunk_fields.is_some() || headers.is_none() {
        use base64::Engine as _;
        let native = match ev {
            serde_json::Value::String(s) => s.clone().into_bytes(),
            v => serde_json::to_vec(v).expect("JSON"),
        };
        let mut p = chunk_fields
            .cloned()
            .unwrap_or_else(|| serde_json::json!({}));
        p["bytes"] =
            serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(native));
        with_type("chunk", serde_json::to_vec(&p).expect("JSON"))
    } else {
        let mut m = event("", serde_json::to_vec(ev).expect("JSON"));
        m.headers = headers.unwrap_or_default().to_vec();
        m
    };
    msg.encode(out);
}

pub mod text;

#[cfg(test)]
mod masking;

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Message {
        Message {
            headers: vec![
                (
                    ":event-type".into(),
                    Value::String("contentBlockDelta".into()),
                ),
                ("b".into(), Value::Bool(false)),
                ("t".into(), Value::Bool(true)),
                ("y".into(), Value::Byte(-3)),
                ("s".into(), Value::Short(-300)),
                ("i".into(), Value::Int(70000)),
                ("l".into(), Value::Long(-1 << 40)),
                ("x".into(), Value::Bytes(vec![0, 1, 255])),
                ("ts".into(), Value::Timestamp(1_700_000_000_000)),
                ("u".into(), Value::Uuid([7; 16])),
            ],
            payload: br#"{"contentBlockIndex":0,"delta":{"text":"hi"}}"#.to_vec(),
        }
    }

    #[test]
    fn round_trip_and_split_reads() {
        let m = sample();
        let mut wire = m.to_bytes();
        let one = wire.len();
        event("messageStop", b"{}".to_vec()).encode(&mut wire);
        assert_eq!(prelude_ok(&wire), Some(true));
        // Every cut of the first message is incomplete, never an error.
        for cut in 0..one {
            assert_eq!(decode(&wire[..cut]), Ok(None), "cut at {cut}");
        }
        let (got, n) = decode(&wire).unwrap().unwrap();
        assert_eq!((got.clone(), n), (m.clone(), one));
        assert_eq!(got.header(":event-type"), Some("contentBlockDelta"));
        let (second, n2) = decode(&wire[n..]).unwrap().unwrap();
        assert_eq!(second.header(":message-type"), Some("event"));
        assert_eq!(n + n2, wire.len());
        // Re-encoding gives the same bytes.
        assert_eq!(got.to_bytes(), wire[..one]);
    }

    #[test]
    fn a_known_message_decodes() {
        // An empty message: total 16, no headers, CRC32 of the 8-byte prelude is 0x05c248eb,
        // of the 12 bytes before the message CRC 0x7d98c8ff (the AWS SDKs' test vector).
        let wire = [
            0, 0, 0, 0x10, 0, 0, 0, 0, 0x05, 0xc2, 0x48, 0xeb, 0x7d, 0x98, 0xc8, 0xff,
        ];
        let (m, n) = decode(&wire).unwrap().unwrap();
        assert_eq!(n, 16);
        assert!(m.headers.is_empty() && m.payload.is_empty());
        assert_eq!(
            Message {
                headers: vec![],
                payload: vec![]
            }
            .to_bytes(),
            wire
        );
    }

    #[test]
    fn bad_crcs_and_bounds_are_errors() {
        let wire = sample().to_bytes();
        let mut bad = wire.clone();
        bad[9] ^= 1;
        assert_eq!(decode(&bad), Err(FrameError::PreludeCrc));
        assert_eq!(prelude_ok(&bad), Some(false));
        let mut bad = wire.clone();
        let mid = wire.len() / 2;
        bad[mid] ^= 0x20;
        assert_eq!(decode(&bad), Err(FrameError::MessageCrc));
        let mut big = Vec::new();
        big.extend_from_slice(&((MAX_MESSAGE + 1) as u32).to_be_bytes());
        big.extend_from_slice(&0u32.to_be_bytes());
        let c = crc32fast::hash(&big);
        big.extend_from_slice(&c.to_be_bytes());
        assert_eq!(decode(&big), Err(FrameError::TooLarge(MAX_MESSAGE + 1)));
        // Headers longer than the message.
        let mut odd = Vec::new();
        odd.extend_from_slice(&16u32.to_be_bytes());
        odd.extend_from_slice(&1u32.to_be_bytes());
        let c = crc32fast::hash(&odd);
        odd.extend_from_slice(&c.to_be_bytes());
        odd.extend_from_slice(&[0; 4]);
        assert_eq!(decode(&odd), Err(FrameError::Malformed("lengths")));
    }
}

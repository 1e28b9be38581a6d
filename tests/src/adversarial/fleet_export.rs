//! Export attack cases (issue I, deliverable 4) and the strict parsers that judge them, written
//! from RFC 5424 §6 (ABNF; §6.3.3 PARAM-VALUE escaping of `"`, `\`, `]`; §7.2.2 SD-IDs with an
//! `@` and an enterprise number unless registered), RFC 6587 §3.4 (octet counting vs LF
//! framing on TCP), ArcSight's "Implementing ArcSight CEF" (prefix: `|` and `\` escaped;
//! extension: `=` and `\` escaped, newlines as `\n`/`\r` and only in extension values), Splunk's
//! HEC event format (JSON objects, `Authorization: Splunk <token>`), and OTLP/HTTP JSON
//! (`resourceLogs[].scopeLogs[].logRecords[]`).
//!
//! The attacker controls the request's model name, its User-Agent, its path's query, its
//! prompt, its client key and its process name (comm, per thread: PR_SET_NAME). None of them may
//! break an event's framing, add a field or an event, or carry a secret out.

use serde_json::{Value, json};

/// A value the attacker sets, and where.
#[derive(Debug, Clone)]
pub struct ExportCase {
    pub name: &'static str,
    /// The held-client spec (`fleet_holds.py`): marker, model, ua, target, comm, text.
    pub spec: Value,
}

/// The name an injection would give a field, an SD-ID or an event: found anywhere structural,
/// the framing broke.
pub const INJECTED: &str = "advinj";

pub fn export_cases() -> Vec<ExportCase> {
    let c = |name: &'static str, spec: Value| {
        let mut spec = spec;
        spec["marker"] = json!(format!("xc-{name}"));
        ExportCase { name, spec }
    };
    vec![
        c("plain", json!({})),
        c(
            "model-crlf-forged-syslog",
            json!({"model": "gpt-4o\r\n<14>1 2026-01-01T00:00:00Z evilhost advinj - - - forged line"}),
        ),
        c(
            "model-lf-forged-cef",
            json!({"model": "gpt\nCEF:0|Evil|advinj|1|1|forged|10|advinj=1"}),
        ),
        c(
            "model-sd-breakout",
            json!({"model": "gpt\"] [advinj@32473 advinj=\"1"}),
        ),
        c(
            "model-backslashes",
            json!({"model": "gpt\\\\\"]\\advinj\\"}),
        ),
        c(
            "model-cef-equals",
            json!({"model": "gpt advinj=1 act=allowed suser=root"}),
        ),
        c(
            "model-cef-pipes",
            json!({"model": "gpt|advinj|10|advinj=1"}),
        ),
        c("model-nul", json!({"model": "gpt\u{0}advinj=1"})),
        c("model-bidi", json!({"model": "gpt\u{202e}1=jnivda"})),
        c("model-utf8", json!({"model": "gpt-ü-漢字-✓"})),
        c(
            "model-huge",
            json!({"model": format!("gpt-{}", "A".repeat(100_000))}),
        ),
        c(
            "ua-everything",
            json!({"ua": "adv/1.0 \"] [advinj@32473 a=\"b\" advinj=1 |advinj| \\"}),
        ),
        c(
            "query-everything",
            json!({"target": "/v1/chat/completions?q=%22%5D%20advinj%3D1%7Cx%0D%0Aadvinj"}),
        ),
        c("comm-breakout", json!({"comm": "x\"] advinj=1|"})),
        c("comm-newline", json!({"comm": "x\n<14>1 advinj"})),
    ]
}

/// One RFC 5424 message.
#[derive(Debug, Clone)]
pub struct Syslog {
    pub pri: u8,
    pub hostname: String,
    pub app: String,
    pub procid: String,
    pub msgid: String,
    pub sd: Vec<(String, Vec<(String, String)>)>,
    pub msg: Vec<u8>,
}

fn print_us_ascii(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|b| (33..=126).contains(b))
}

fn sd_name(s: &[u8]) -> bool {
    print_us_ascii(s) && s.len() <= 32 && !s.iter().any(|b| matches!(b, b'=' | b' ' | b']' | b'"'))
}

/// Parse one message exactly by RFC 5424's ABNF; the reason when it is not one.
pub fn parse_5424(m: &[u8]) -> Result<Syslog, String> {
    let take_field = |i: &mut usize, what: &str, max: usize| -> Result<String, String> {
        let start = *i;
        while *i < m.len() && m[*i] != b' ' {
            *i += 1;
        }
        let f = &m[start..*i];
        if f.is_empty() || f.len() > max || !print_us_ascii(f) {
            return Err(format!(
                "{what} is not 1*{max}PRINTUSASCII: {:?}",
                String::from_utf8_lossy(&f[..f.len().min(60)])
            ));
        }
        if *i >= m.len() || m[*i] != b' ' {
            return Err(format!("no SP after {what}"));
        }
        *i += 1;
        Ok(String::from_utf8_lossy(f).into_owned())
    };
    if m.first() != Some(&b'<') {
        return Err("no PRI".into());
    }
    let close = m.iter().position(|&b| b == b'>').ok_or("PRI not closed")?;
    let pri: u16 = std::str::from_utf8(&m[1..close])
        .ok()
        .filter(|s| (1..=3).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse().ok())
        .ok_or("PRIVAL not 1*3DIGIT")?;
    if pri > 191 {
        return Err(format!("PRIVAL {pri} > 191"));
    }
    let mut i = close + 1;
    let v_start = i;
    while i < m.len() && m[i].is_ascii_digit() {
        i += 1;
    }
    if i == v_start || m[v_start] == b'0' || i - v_start > 3 {
        return Err("VERSION not NONZERO-DIGIT 0*2DIGIT".into());
    }
    if m.get(i) != Some(&b' ') {
        return Err("no SP after VERSION".into());
    }
    i += 1;
    let ts = take_field(&mut i, "TIMESTAMP", 64)?;
    if ts != "-" && !timestamp_ok(&ts) {
        return Err(format!("TIMESTAMP {ts:?} is not FULL-DATE T FULL-TIME"));
    }
    let hostname = take_field(&mut i, "HOSTNAME", 255)?;
    let app = take_field(&mut i, "APP-NAME", 48)?;
    let procid = take_field(&mut i, "PROCID", 128)?;
    let msgid = take_field(&mut i, "MSGID", 32)?;
    let mut sd = Vec::new();
    if m.get(i) == Some(&b'-') {
        i += 1;
    } else {
        while m.get(i) == Some(&b'[') {
            i += 1;
            let s = i;
            while i < m.len() && !matches!(m[i], b' ' | b']') {
                i += 1;
            }
            let id = &m[s..i];
            if !sd_name(id) {
                return Err(format!(
                    "SD-ID {:?} is not an SD-NAME",
                    String::from_utf8_lossy(id)
                ));
            }
            let id = String::from_utf8_lossy(id).into_owned();
            let mut params = Vec::new();
            while m.get(i) == Some(&b' ') {
                i += 1;
                let s = i;
                while i < m.len() && m[i] != b'=' {
                    i += 1;
                }
                let name = &m[s..i];
                if !sd_name(name) {
                    return Err(format!(
                        "PARAM-NAME {:?} in [{id}] is not an SD-NAME",
                        String::from_utf8_lossy(&name[..name.len().min(40)])
                    ));
                }
                if m.get(i + 1) != Some(&b'"') {
                    return Err(format!(
                        "PARAM-VALUE of {} not quoted",
                        String::from_utf8_lossy(name)
                    ));
                }
                i += 2;
                let mut val = Vec::new();
                loop {
                    match m.get(i) {
                        None => {
                            return Err(format!(
                                "PARAM-VALUE of {} not closed",
                                String::from_utf8_lossy(name)
                            ));
                        }
                        Some(b'\\') if matches!(m.get(i + 1), Some(b'"' | b'\\' | b']')) => {
                            val.push(m[i + 1]);
                            i += 2;
                        }
                        Some(b'"') => {
                            i += 1;
                            break;
                        }
                        Some(b']') => {
                            return Err(format!(
                                "an unescaped ']' in PARAM-VALUE of {} (RFC 5424 6.3.3)",
                                String::from_utf8_lossy(name)
                            ));
                        }
                        Some(&b) => {
                            val.push(b);
                            i += 1;
                        }
                    }
                }
                let val = String::from_utf8(val).map_err(|_| {
                    format!(
                        "PARAM-VALUE of {} is not UTF-8",
                        String::from_utf8_lossy(name)
                    )
                })?;
                params.push((String::from_utf8_lossy(name).into_owned(), val));
            }
            if m.get(i) != Some(&b']') {
                return Err(format!("SD-ELEMENT [{id}] not closed by ']'"));
            }
            i += 1;
            sd.push((id, params));
        }
        if sd.is_empty() {
            return Err("STRUCTURED-DATA is neither '-' nor SD-ELEMENTs".into());
        }
    }
    let msg = match m.get(i) {
        None => vec![],
        Some(b' ') => m[i + 1..].to_vec(),
        Some(_) => return Err("no SP between STRUCTURED-DATA and MSG".into()),
    };
    Ok(Syslog {
        pri: pri as u8,
        hostname,
        app,
        procid,
        msgid,
        sd,
        msg,
    })
}

fn timestamp_ok(ts: &str) -> bool {
    let b = ts.as_bytes();
    let d = |r: std::ops::Range<usize>| {
        b.get(r.clone())
            .is_some_and(|s| s.iter().all(u8::is_ascii_digit))
    };
    if b.len() < 20 || !d(0..4) || b[4] != b'-' || !d(5..7) || b[7] != b'-' || !d(8..10) {
        return false;
    }
    if b[10] != b'T' || !d(11..13) || b[13] != b':' || !d(14..16) || b[16] != b':' || !d(17..19) {
        return false;
    }
    let mut i = 19;
    if b.get(i) == Some(&b'.') {
        let s = i + 1;
        i += 1;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == s || i - s > 6 {
            return false;
        }
    }
    match &ts[i..] {
        "Z" => true,
        off => {
            let o = off.as_bytes();
            o.len() == 6
                && matches!(o[0], b'+' | b'-')
                && o[1..3].iter().all(u8::is_ascii_digit)
                && o[3] == b':'
                && o[4..6].iter().all(u8::is_ascii_digit)
        }
    }
}

/// Structural problems of a well-formed message: custom SD-IDs without `@` (RFC 5424 7.2.2
/// reserves names without one for IANA), injected names.
pub fn check_5424(s: &Syslog) -> Vec<String> {
    const IANA: &[&str] = &["timeQuality", "origin", "meta"];
    let mut why = vec![];
    for (id, params) in &s.sd {
        if !id.contains('@') && !IANA.contains(&id.as_str()) {
            why.push(format!(
                "SD-ID {id:?} is neither IANA-registered nor name@<enterprise number> (RFC 5424 6.3.2, 7.2.2)"
            ));
        }
        if id.contains(INJECTED) {
            why.push(format!("an injected SD-ELEMENT [{id}]"));
        }
        for (n, _) in params {
            if n.contains(INJECTED) {
                why.push(format!("an injected SD-PARAM {n} in [{id}]"));
            }
        }
    }
    for f in [&s.hostname, &s.app, &s.procid, &s.msgid] {
        if f.contains(INJECTED) {
            why.push(format!("an injected header field {f:?}"));
        }
    }
    why
}

/// Split a syslog TCP stream into messages (RFC 6587: octet counting when it starts with a
/// digit, else LF-terminated); the framing used.
pub fn split_tcp(stream: &[u8]) -> (Vec<Vec<u8>>, &'static str) {
    if stream.first().is_some_and(u8::is_ascii_digit) {
        let mut out = vec![];
        let mut i = 0;
        while i < stream.len() {
            let s = i;
            while i < stream.len() && stream[i].is_ascii_digit() {
                i += 1;
            }
            let n: usize = std::str::from_utf8(&stream[s..i])
                .ok()
                .and_then(|x| x.parse().ok())
                .unwrap_or(0);
            if n == 0 || stream.get(i) != Some(&b' ') || i + 1 + n > stream.len() {
                out.push(stream[s..].to_vec());
                break;
            }
            out.push(stream[i + 1..i + 1 + n].to_vec());
            i += 1 + n;
        }
        (out, "octet-counting")
    } else {
        let v = stream
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l).to_vec())
            .collect();
        (v, "LF")
    }
}

/// One CEF record: the seven prefix fields and the extension's key/value pairs.
#[derive(Debug, Clone)]
pub struct Cef {
    pub prefix: Vec<String>,
    pub ext: Vec<(String, String)>,
}

/// Parse a CEF record (from `CEF:`) by the ArcSight rules; the reason when it breaks them.
pub fn parse_cef(line: &[u8]) -> Result<Cef, String> {
    let s = std::str::from_utf8(line).map_err(|_| "CEF record is not UTF-8".to_string())?;
    let at = s.find("CEF:").ok_or("no CEF: in the message")?;
    let s = &s[at..];
    if s.contains('\n') || s.contains('\r') {
        return Err(
            "a raw CR or LF in a CEF record (newlines only as \\n / \\r in extension values)"
                .into(),
        );
    }
    let mut prefix = vec![];
    let mut cur = String::new();
    let mut chars = s.char_indices().peekable();
    let mut ext_start = None;
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, '|')) => cur.push('|'),
                Some((_, '\\')) => cur.push('\\'),
                Some((_, o)) => {
                    return Err(format!(
                        "'\\{o}' in the CEF prefix: only \\| and \\\\ are escapes there"
                    ));
                }
                None => return Err("a lone backslash ends the CEF prefix".into()),
            },
            '|' => {
                prefix.push(std::mem::take(&mut cur));
                if prefix.len() == 7 {
                    ext_start = Some(i + 1);
                    break;
                }
            }
            c => cur.push(c),
        }
    }
    let ext_start =
        ext_start.ok_or(format!("CEF prefix has {} fields, not 7", prefix.len() + 1))?;
    if !matches!(prefix[0].as_str(), "CEF:0" | "CEF:1") {
        return Err(format!("CEF version field {:?}", prefix[0]));
    }
    let sev = prefix[6].as_str();
    let sev_ok = sev.parse::<u8>().is_ok_and(|n| n <= 10)
        || matches!(sev, "Unknown" | "Low" | "Medium" | "High" | "Very-High");
    if !sev_ok {
        return Err(format!(
            "CEF severity {sev:?} is neither 0-10 nor a named level"
        ));
    }
    // Extension: key=value, the value running to the next " key=" with an unescaped '='.
    let e: Vec<char> = s[ext_start..].chars().collect();
    let mut eqs = vec![];
    let mut i = 0;
    while i < e.len() {
        if e[i] == '\\' {
            i += 2;
            continue;
        }
        if e[i] == '=' {
            eqs.push(i);
        }
        i += 1;
    }
    let mut ext = vec![];
    let mut keys: Vec<(usize, usize)> = vec![];
    for &q in &eqs {
        let mut k = q;
        while k > 0 && (e[k - 1].is_ascii_alphanumeric() || e[k - 1] == '_') {
            k -= 1;
        }
        if k == q || (k > 0 && e[k - 1] != ' ') {
            return Err(format!(
                "an unescaped '=' in a CEF extension value near {:?}",
                e[k.saturating_sub(10)..(q + 10).min(e.len())]
                    .iter()
                    .collect::<String>()
            ));
        }
        keys.push((k, q));
    }
    if !e.is_empty() && keys.first().is_none_or(|(k, _)| *k != 0) {
        return Err("CEF extension does not start with key=".into());
    }
    for (j, &(k, q)) in keys.iter().enumerate() {
        let end = keys.get(j + 1).map(|(k2, _)| k2 - 1).unwrap_or(e.len());
        let raw: String = e[q + 1..end.max(q + 1)].iter().collect();
        let mut v = String::new();
        let mut it = raw.chars();
        while let Some(c) = it.next() {
            if c == '\\' {
                match it.next() {
                    Some('=') => v.push('='),
                    Some('\\') => v.push('\\'),
                    Some('n') => v.push('\n'),
                    Some('r') => v.push('\r'),
                    Some(o) => return Err(format!("'\\{o}' in a CEF extension value")),
                    None => return Err("a lone backslash ends a CEF extension value".into()),
                }
            } else {
                v.push(c);
            }
        }
        ext.push((e[k..q].iter().collect(), v));
    }
    Ok(Cef { prefix, ext })
}

pub fn check_cef(c: &Cef) -> Vec<String> {
    let mut why = vec![];
    for (k, _) in &c.ext {
        if k.contains(INJECTED) {
            why.push(format!("an injected CEF extension key {k}"));
        }
    }
    for f in &c.prefix[1..3] {
        if f.contains(INJECTED) {
            why.push(format!("an injected CEF vendor/product {f:?}"));
        }
    }
    why
}

/// The events of a Splunk HEC request body (concatenated JSON objects; HEC batches that way).
pub fn parse_hec(body: &[u8]) -> Result<Vec<Value>, String> {
    let mut out = vec![];
    for v in serde_json::Deserializer::from_slice(body).into_iter::<Value>() {
        let v = v.map_err(|e| format!("HEC body is not a series of JSON objects: {e}"))?;
        if v.get("event").is_none() {
            return Err(format!(
                "a HEC object without \"event\": {}",
                cut(&v.to_string())
            ));
        }
        if let Some(t) = v.get("time")
            && !(t.is_number() || t.as_str().is_some_and(|s| s.parse::<f64>().is_ok()))
        {
            return Err(format!("HEC time {t} is not epoch seconds"));
        }
        out.push(v);
    }
    Ok(out)
}

/// The log records of an OTLP/HTTP JSON export request.
pub fn parse_otlp(body: &[u8]) -> Result<Vec<Value>, String> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("OTLP body is not JSON: {e}"))?;
    let mut out = vec![];
    for rl in v["resourceLogs"]
        .as_array()
        .ok_or("no resourceLogs array")?
    {
        for sl in rl["scopeLogs"]
            .as_array()
            .ok_or("resourceLogs[] without scopeLogs")?
        {
            for r in sl["logRecords"]
                .as_array()
                .ok_or("scopeLogs[] without logRecords")?
            {
                if let Some(t) = r.get("timeUnixNano")
                    && !(t.is_u64() || t.as_str().is_some_and(|s| s.parse::<u64>().is_ok()))
                {
                    return Err(format!(
                        "timeUnixNano {t} is not a uint64 (decimal string or number)"
                    ));
                }
                let mut r = r.clone();
                r["_resource"] = rl["resource"].clone();
                out.push(r);
            }
        }
    }
    Ok(out)
}

pub fn cut(s: &str) -> String {
    s.chars().take(160).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 5424 6.5's examples parse; broken escaping does not.
    #[test]
    fn rfc5424_examples_and_breakage() {
        let ok: &[&[u8]] = &[
            b"<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - \xef\xbb\xbf'su root' failed for lonvick on /dev/pts/8",
            b"<165>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - - %% It's time to make the do-nuts.",
            b"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut=\"3\" eventSource=\"Application\" eventID=\"1011\"][examplePriority@32473 class=\"high\"]",
            b"<13>1 - h a p m [x@1 v=\"a\\\"b\\]c\\\\d\"]",
        ];
        for m in ok {
            let s = parse_5424(m).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(m)));
            assert!(check_5424(&s).is_empty(), "{:?}", check_5424(&s));
        }
        let s = parse_5424(ok[3]).unwrap();
        assert_eq!(s.sd[0].1[0].1, "a\"b]c\\d");
        for bad in [
            &b"<13>1 - h a p m [x@1 v=\"a]b\"]"[..],
            b"<13>1 - h a p m [x@1 v=\"a\"b\"]",
            b"<192>1 - h a p m -",
            b"<13>1 2003-10-11 h a p m -",
            b"<13>1 - h a p m [x@1 v=a]",
        ] {
            assert!(parse_5424(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let s = parse_5424(b"<13>1 - h a p m [gateway v=\"1\"]").unwrap();
        assert!(!check_5424(&s).is_empty(), "an SD-ID without @ is reported");
    }

    /// The CEF spec's examples parse; an unescaped `=` or pipe in the wrong place does not.
    #[test]
    fn cef_examples_and_breakage() {
        let c = parse_cef(b"CEF:0|security|threatmanager|1.0|100|detected a \\| in message|10|src=10.0.0.1 act=blocked a \\= dst=1.1.1.1").unwrap();
        assert_eq!(c.prefix[5], "detected a | in message");
        assert_eq!(
            c.ext[1],
            (
                "act".into(),
                "blocked a = dst=1.1.1.1".replace(" dst=1.1.1.1", "")
            )
        );
        assert_eq!(c.ext.len(), 3);
        let c = parse_cef(b"CEF:0|a|b|1|1|n|5|msg=line1\\nline2 cs1=x|y").unwrap();
        assert_eq!(c.ext[0].1, "line1\nline2");
        assert_eq!(c.ext[1].1, "x|y");
        assert!(parse_cef(b"CEF:0|a|b|1|1|n|5|msg=a\nb").is_err());
        assert!(parse_cef(b"CEF:0|a|b|1|1|n|11|msg=a").is_err());
        let c = parse_cef(b"CEF:0|a|b|1|1|n|5|msg=gpt advinj=1").unwrap();
        assert!(!check_cef(&c).is_empty(), "an injected key is found");
    }

    #[test]
    fn tcp_framing() {
        let (m, f) = split_tcp(b"5 <1>1 7 <13>1 x");
        assert_eq!((m.len(), f), (2, "octet-counting"));
        assert_eq!(m[1], b"<13>1 x");
        let (m, f) = split_tcp(b"<1>1 a\n<2>1 b\n");
        assert_eq!((m.len(), f), (2, "LF"));
    }
}

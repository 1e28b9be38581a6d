//! The adversarial suite's machinery (`tests/tests/adversarial.rs`): case tables written from
//! the HTTP specifications and the providers' public API references, one Python client in the
//! test cgroup that sends every case exactly as written (raw HTTP/1.1 bytes or h2 frames), and
//! judges that look at what the fake provider received and what the client got back.
//!
//! A request case passes when no planted secret reached the provider in any spelling (raw,
//! JSON-escaped, percent-encoded, base64, compressed, UTF-16) and the case's expectation holds
//! (forwarded and masked, or a provider-shaped gateway refusal, ...). Cases are correlated
//! with what the fakes saw by an `x-adv-case` header; every secret is also looked for in every
//! request any fake saw, so a leak is found even when that header went missing.

pub mod answers;
pub mod cloud;
pub mod codec;
pub mod fleet;
pub mod fleet_export;
pub mod fleet_tokens;
pub mod raw;
pub mod requests;
pub mod secrets;
pub mod ws;

use std::{collections::BTreeMap, time::Duration};

use serde_json::{Value, json};

use crate::provider::{ProviderEnv, Seen};
pub use codec::{b64, pct_all, views};

pub const DRIVER: &str = include_str!("driver.py");

/// The vault's keys in the adversarial environments: shaped like no built-in detector, so
/// only "the vault's keys are detectors" can catch an echo.
pub const VAULT: [(&str, &str); 3] = [
    ("openai", "vaultadv-oa-Kq2Lw9Xz4Pm7Rt1Vb8Nc3Hd6Js5Fg0Ye"),
    ("anthropic", "vaultadv-an-Tz8Ux3Wy5Qa1Sd7Fg2Hj4Kl6Zx9Cv0Bn"),
    ("gemini", "vaultadv-gm-Pl0Ok9Ij8Uh7Yg6Tf5Rd4Es3Wa2Qz1Xc"),
];

pub fn vault_key(p: Provider) -> &'static str {
    VAULT[p as usize].1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    OpenAi = 0,
    Anthropic = 1,
    Gemini = 2,
}

impl Provider {
    pub const ALL: [Provider; 3] = [Provider::OpenAi, Provider::Anthropic, Provider::Gemini];

    pub fn host(self) -> &'static str {
        match self {
            Provider::OpenAi => "api.openai.com",
            Provider::Anthropic => "api.anthropic.com",
            Provider::Gemini => "generativelanguage.googleapis.com",
        }
    }

    pub fn label(self) -> &'static str {
        ["openai", "anthropic", "gemini"][self as usize]
    }

    /// The dummy credential a client presents, in the provider's own place.
    pub fn dummy(self) -> (&'static str, &'static str) {
        match self {
            Provider::OpenAi => ("Authorization", "Bearer sk-dummy-client"),
            Provider::Anthropic => ("x-api-key", "sk-ant-dummy-client"),
            Provider::Gemini => ("x-goog-api-key", "dummy-client-key"),
        }
    }

    /// Where the vault's key must be upstream: (header, exact value).
    pub fn place(self) -> (&'static str, String) {
        match self {
            Provider::OpenAi => ("authorization", format!("Bearer {}", vault_key(self))),
            Provider::Anthropic => ("x-api-key", vault_key(self).to_string()),
            Provider::Gemini => ("x-goog-api-key", vault_key(self).to_string()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    H1,
    H2,
}

/// What a request case must come to.
#[derive(Debug, Clone, PartialEq)]
pub enum Expect {
    /// Forwarded with every planted secret gone (and, when `masked`, the `[MASKED:` form in
    /// its place), or refused by the gateway.
    Clean { masked: bool },
    /// Forwarded, the secret replaced by `[MASKED:<rule>]` (any rule when `None`).
    Masked(Option<&'static str>),
    /// A gateway refusal whose body names `mentions` (case-insensitive) when given.
    Refused(Option<&'static str>),
    /// Never reaches the provider (the request cannot be read); any answer or none.
    NotForwarded,
    /// Only that no planted secret reaches the provider (what else happens is not observable,
    /// e.g. a request pipelined behind another).
    NoLeak,
    /// Forwarded with exactly one credential, the vault's, in the provider's place, and these
    /// headers (lower case) absent.
    VaultOnly(Vec<&'static str>),
    /// Forwarded with no credential at all.
    NoCredential,
}

/// One request, byte for byte.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub provider: Provider,
    pub proto: Proto,
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub chunked: bool,
    pub trailers: Vec<(String, String)>,
    /// HTTP/1.1 only: the whole request (the `x-adv-case` header must be in it).
    pub raw: Option<Vec<u8>>,
    pub half_close: bool,
    pub reset: bool,
    /// Secrets that must not reach the provider.
    pub planted: Vec<String>,
    pub expect: Expect,
}

impl Case {
    /// A request carrying the provider's dummy credential (and `anthropic-version`).
    pub fn new(name: &str, p: Provider, method: &str, target: &str) -> Self {
        let mut headers = vec![];
        let (n, v) = p.dummy();
        headers.push((n.to_string(), v.to_string()));
        if p == Provider::Anthropic {
            headers.push(("anthropic-version".into(), "2023-06-01".into()));
        }
        Self {
            name: name.to_string(),
            provider: p,
            proto: Proto::H1,
            method: method.to_string(),
            target: target.to_string(),
            headers,
            body: vec![],
            chunked: false,
            trailers: vec![],
            raw: None,
            half_close: false,
            reset: false,
            planted: vec![],
            expect: Expect::Clean { masked: true },
        }
    }

    pub fn json(mut self, body: &str) -> Self {
        self.body = body.as_bytes().to_vec();
        self.header("Content-Type", "application/json")
    }

    pub fn body(mut self, ctype: &str, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        if ctype.is_empty() {
            self
        } else {
            self.header("Content-Type", ctype)
        }
    }

    pub fn header(mut self, n: &str, v: &str) -> Self {
        self.headers.push((n.to_string(), v.to_string()));
        self
    }

    /// Drop every header named `n` (the dummy credential, the content type, ...).
    pub fn without(mut self, n: &str) -> Self {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(n));
        self
    }

    pub fn plant(mut self, s: &str) -> Self {
        self.planted.push(s.to_string());
        self
    }

    pub fn expect(mut self, e: Expect) -> Self {
        self.expect = e;
        self
    }

    pub fn h2(mut self) -> Self {
        self.proto = Proto::H2;
        self.name = format!("{}@h2", self.name);
        self
    }

    fn wire(&self, ip: &str) -> Value {
        let mut headers: Vec<(String, String)> = self.headers.clone();
        headers.push(("x-adv-case".into(), self.name.clone()));
        if self.proto == Proto::H2 {
            for h in &mut headers {
                h.0 = h.0.to_ascii_lowercase();
            }
        }
        json!({
            "id": self.name,
            "host": self.provider.host(),
            "ip": ip,
            "proto": if self.proto == Proto::H2 { "h2" } else { "h1" },
            "method": self.method,
            "target": self.target,
            "headers": headers,
            "body": hex(&self.body),
            "chunked": self.chunked,
            "trailers": self.trailers,
            "raw": self.raw.as_ref().map(|r| hex(r)),
            "half_close": self.half_close,
            "reset": self.reset,
            "timeout": 8,
        })
    }
}

/// What the client got for one case.
#[derive(Debug, Clone, Default)]
pub struct Got {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub error: Option<String>,
}

impl Got {
    pub fn header(&self, n: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.as_str())
    }

    pub fn brief(&self) -> String {
        let body = String::from_utf8_lossy(&self.body);
        let body: String = body.chars().take(120).collect();
        format!(
            "client got {} {}{}",
            self.status,
            body.replace('\n', "\\n"),
            self.error
                .as_ref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        )
    }
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub(crate) fn codec_unhex(s: &str) -> Vec<u8> {
    unhex(s)
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .filter_map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok())
        .collect()
}

/// Send every case from one Python process inside the environment's cgroup.
pub fn send_all(e: &ProviderEnv, cases: &[Case]) -> BTreeMap<String, Got> {
    let ip = |p: Provider| e.fakes.ips[p as usize].clone();
    let list: Vec<Value> = cases.iter().map(|c| c.wire(&ip(c.provider))).collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("cases.json");
    std::fs::write(&file, serde_json::to_vec(&list).unwrap()).unwrap();
    let results = dir.path().join("results.jsonl");
    let py = crate::py_venv().join("bin/python");
    // Results go to a file: a pipe nobody reads until the end would fill and stall the driver.
    let cmd = e.cg.command(
        py.to_str().unwrap(),
        &[
            "-c",
            DRIVER,
            file.to_str().unwrap(),
            e.ca.to_str().unwrap(),
            results.to_str().unwrap(),
        ],
    );
    let budget = Duration::from_secs(60 + 10 * cases.len() as u64);
    let started = std::time::Instant::now();
    let r = crate::run(cmd, budget);
    timing(cases.len(), started, &r.stderr);
    let text = std::fs::read_to_string(&results).unwrap_or_default();
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let pairs = |v: &Value| -> Vec<(String, String)> {
            v.as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| Some((p[0].as_str()?.to_string(), p[1].as_str()?.to_string())))
                .collect()
        };
        out.insert(
            v["id"].as_str().unwrap_or("").to_string(),
            Got {
                status: v["status"].as_u64().unwrap_or(0) as u16,
                headers: pairs(&v["headers"]),
                body: unhex(v["body"].as_str().unwrap_or("")),
                error: v["error"].as_str().map(String::from),
            },
        );
    }
    assert!(
        !out.is_empty() || cases.is_empty(),
        "the adversarial driver produced nothing: {r:?}"
    );
    if out.len() < cases.len() {
        eprintln!(
            "the adversarial driver answered {} of {} cases (exit {:?}); its stderr:\n{}",
            out.len(),
            cases.len(),
            r.code,
            r.stderr
        );
    }
    out
}

/// One line on how long a driver took, with its slowest cases (the drivers print one
/// `id: ... in SECONDSs` line per case on stderr): where a class spends its time.
pub(crate) fn timing(n: usize, started: std::time::Instant, stderr: &str) {
    let mut slow: Vec<(f64, &str)> = stderr
        .lines()
        .filter_map(|l| {
            let (id, _) = l.split_once(": ")?;
            let secs = l.rsplit(" in ").next()?.split_whitespace().next()?;
            Some((secs.strip_suffix('s')?.parse().ok()?, id))
        })
        .collect();
    slow.sort_by(|a, b| b.0.total_cmp(&a.0));
    let top: Vec<String> = slow
        .iter()
        .take(3)
        .map(|(s, id)| format!("{id} {s:.1} s"))
        .collect();
    eprintln!(
        "adversarial driver: {n} cases in {:.1} s (slowest: {})",
        started.elapsed().as_secs_f64(),
        top.join(", ")
    );
}

/// Every request the three fakes saw.
pub fn all_seen(e: &ProviderEnv) -> Vec<Seen> {
    let mut v = e.fakes.openai.seen();
    v.extend(e.fakes.anthropic.seen());
    v.extend(e.fakes.gemini.seen());
    v
}

fn case_of(s: &Seen) -> Option<String> {
    s.all("x-adv-case").into_iter().next()
}

/// The pieces of a seen request, each with every decoded spelling of it.
struct Decoded {
    parts: Vec<(String, Vec<Vec<u8>>)>,
}

impl Decoded {
    fn of(s: &Seen, inflated: &[Vec<u8>]) -> Self {
        let mut parts = vec![("target".to_string(), views(s.target.as_bytes()))];
        for (n, v) in &s.headers {
            parts.push((format!("header {n}"), views(format!("{n}: {v}").as_bytes())));
        }
        for (n, v) in &s.trailers {
            parts.push((
                format!("trailer {n}"),
                views(format!("{n}: {v}").as_bytes()),
            ));
        }
        let mut body = views(&s.body);
        for d in inflated {
            body.extend(views(d));
        }
        parts.push(("body".to_string(), body));
        Self { parts }
    }

    /// Where a needle shows, if anywhere.
    fn find(&self, needle: &[u8]) -> Option<&str> {
        self.parts
            .iter()
            .find(|(_, vs)| vs.iter().any(|v| contains(v, needle)))
            .map(|(n, _)| n.as_str())
    }

    fn body_has(&self, needle: &[u8]) -> bool {
        self.parts
            .iter()
            .filter(|(n, _)| n == "body" || n == "target")
            .any(|(_, vs)| vs.iter().any(|v| contains(v, needle)))
    }
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// The strings whose presence means a secret leaked: the whole secret and its last 16
/// characters (a partial mask still leaks).
pub fn needles(secret: &str) -> Vec<String> {
    let mut v = vec![secret.to_string()];
    if secret.len() > 20 {
        v.push(secret[secret.len() - 16..].to_string());
    }
    v
}

/// Every 24-character piece of a vault key, and the key itself.
pub fn key_pieces(key: &str) -> Vec<String> {
    let mut v: Vec<String> = (0..=key.len().saturating_sub(24))
        .map(|i| key[i..i + 24].to_string())
        .collect();
    v.push(key.to_string());
    v
}

/// A short label for a secret in failure lines (never the whole value).
pub fn label(secret: &str) -> String {
    format!("{}…", &secret[..secret.len().min(8)])
}

pub fn refusal(p: Provider, g: &Got) -> Result<(), String> {
    if g.status < 400 {
        return Err(format!("not a refusal: {}", g.brief()));
    }
    if g.header("x-gateway-error").is_none() {
        return Err(format!("no x-gateway-error header: {}", g.brief()));
    }
    let v: Value = serde_json::from_slice(&g.body)
        .map_err(|_| format!("refusal body is not JSON: {}", g.brief()))?;
    let ok = match p {
        Provider::Anthropic => v["type"] == "error" && v["error"].is_object(),
        _ => v["error"].is_object(),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "refusal not in {}'s error shape: {}",
            p.label(),
            g.brief()
        ))
    }
}

/// Judge every case; the failures as `name: reason`.
pub fn judge(e: &ProviderEnv, cases: &[Case], got: &BTreeMap<String, Got>) -> Vec<String> {
    let seen = all_seen(e);
    let bodies: Vec<&[u8]> = seen.iter().map(|s| s.body.as_slice()).collect();
    let inflated = codec::inflate_batch(&bodies);
    let decoded: Vec<(Option<String>, Decoded, &Seen)> = seen
        .iter()
        .zip(inflated.iter())
        .map(|(s, inf)| (case_of(s), Decoded::of(s, inf), s))
        .collect();
    let mut fails = Vec::new();
    for c in cases {
        let mine: Vec<&(Option<String>, Decoded, &Seen)> = decoded
            .iter()
            .filter(|(id, _, _)| id.as_deref() == Some(c.name.as_str()))
            .collect();
        let g = got.get(&c.name).cloned().unwrap_or(Got {
            error: Some("no result from the driver".into()),
            ..Default::default()
        });
        let mut why: Vec<String> = Vec::new();
        // Leaks, in this case's requests and in any request nobody claimed.
        for secret in &c.planted {
            for n in needles(secret) {
                for (id, d, _) in &decoded {
                    let theirs = id.as_deref() == Some(c.name.as_str());
                    let stray = id
                        .as_ref()
                        .is_none_or(|i| !cases.iter().any(|k| &k.name == i));
                    if !(theirs || stray) {
                        continue;
                    }
                    if let Some(part) = d.find(n.as_bytes()) {
                        let whose = if theirs {
                            ""
                        } else {
                            " (of an unlabelled request)"
                        };
                        why.push(format!("leaked {} in {part}{whose}", label(secret)));
                    }
                }
            }
        }
        why.dedup();
        let forwarded = !mine.is_empty();
        match &c.expect {
            Expect::Clean { masked } => {
                if forwarded {
                    if *masked && !mine.iter().all(|(_, d, _)| d.body_has(b"[MASKED:")) {
                        let n: Vec<usize> = mine.iter().map(|(_, _, s)| s.body.len()).collect();
                        why.push(format!(
                            "forwarded without the [MASKED: form (body upstream {n:?} bytes)"
                        ));
                    }
                } else if let Err(r) = refusal(c.provider, &g) {
                    why.push(format!("neither forwarded nor refused: {r}"));
                }
            }
            Expect::Masked(rule) => {
                if !forwarded {
                    why.push(format!("not forwarded: {}", g.brief()));
                } else {
                    let want = match rule {
                        Some(r) => format!("[MASKED:{r}]"),
                        None => "[MASKED:".to_string(),
                    };
                    if !mine.iter().all(|(_, d, _)| d.body_has(want.as_bytes())) {
                        why.push(format!("forwarded without {want}"));
                    }
                }
            }
            Expect::Refused(mentions) => {
                if forwarded {
                    why.push("forwarded, must be refused".into());
                }
                if let Err(r) = refusal(c.provider, &g) {
                    why.push(r);
                } else if let Some(m) = mentions {
                    let body = String::from_utf8_lossy(&g.body).to_lowercase();
                    if !body.contains(&m.to_lowercase()) {
                        why.push(format!("refusal does not name {m:?}: {}", g.brief()));
                    }
                }
            }
            Expect::NotForwarded => {
                if forwarded {
                    why.push("forwarded, must not reach the provider".into());
                }
            }
            Expect::NoLeak => {}
            Expect::VaultOnly(absent) => {
                if !forwarded {
                    why.push(format!("not forwarded: {}", g.brief()));
                }
                for (_, d, s) in &mine {
                    why.extend(vault_only(c.provider, s, d, absent));
                }
            }
            Expect::NoCredential => {
                if !forwarded {
                    why.push(format!("not forwarded: {}", g.brief()));
                }
                for (_, d, s) in &mine {
                    let creds = credentials(s);
                    if !creds.is_empty() {
                        why.push(format!("credential upstream: {}", creds.join(", ")));
                    }
                    for k in VAULT.iter().map(|v| v.1) {
                        if let Some(part) = d.find(k.as_bytes()) {
                            why.push(format!("a vault key went upstream in {part}"));
                        }
                    }
                }
            }
        }
        if !why.is_empty() {
            why.dedup();
            fails.push(format!("{}: {}", c.name, why.join("; ")));
            if std::env::var_os("ADV_DUMP").is_some() {
                for (_, _, s) in &mine {
                    eprintln!(
                        "--- {} upstream: {} {} {:?}\n{}",
                        c.name,
                        s.method,
                        s.target,
                        s.headers,
                        String::from_utf8_lossy(&s.body[..s.body.len().min(600)])
                    );
                }
                eprintln!(
                    "--- {} client: {:?} {}",
                    c.name,
                    g.headers,
                    String::from_utf8_lossy(&g.body[..g.body.len().min(1500)])
                );
            }
        }
    }
    fails
}

/// Every credential-carrying header or parameter (names of all providers, any case, any
/// percent spelling), shortened.
pub fn credentials(s: &Seen) -> Vec<String> {
    const HEADERS: &[&str] = &[
        "authorization",
        "x-api-key",
        "api-key",
        "x-goog-api-key",
        "proxy-authorization",
    ];
    let mut out = Vec::new();
    for (n, v) in s.headers.iter().chain(s.trailers.iter()) {
        if HEADERS.contains(&n.to_ascii_lowercase().as_str()) {
            out.push(format!("{n}: {}", label(v)));
        }
    }
    out.extend(query_credentials(&s.target));
    out
}

fn query_credentials(target: &str) -> Vec<String> {
    const PARAMS: &[&str] = &[
        "key",
        "api-key",
        "api_key",
        "apikey",
        "x-api-key",
        "x_api_key",
        "access_token",
        "authorization",
        "x-goog-api-key",
    ];
    let Some((_, q)) = target.split_once('?') else {
        return vec![];
    };
    let mut out = vec![];
    for kv in q.split(['&', '?', ';']) {
        let k = kv.split_once('=').map(|(k, _)| k).unwrap_or(kv);
        let k = String::from_utf8_lossy(&codec::pct(codec::pct(k.as_bytes()).as_slice()))
            .to_ascii_lowercase();
        if PARAMS.contains(&k.as_str()) {
            out.push(format!("?{k}"));
        }
    }
    out
}

fn vault_only(p: Provider, s: &Seen, d: &Decoded, absent: &[&str]) -> Vec<String> {
    let mut why = vec![];
    let (place, want) = p.place();
    let creds = credentials(s);
    let at: Vec<String> = s.all(place);
    if at != vec![want.clone()] {
        why.push(format!(
            "{place} upstream is {:?}, not exactly the vault's",
            at.iter().map(|v| label(v)).collect::<Vec<_>>()
        ));
    }
    let others: Vec<&String> = creds
        .iter()
        .filter(|c| !c.to_ascii_lowercase().starts_with(&format!("{place}: ")))
        .collect();
    if !others.is_empty() {
        why.push(format!("other credentials upstream: {others:?}"));
    }
    for n in absent {
        if !s.all(n).is_empty() {
            why.push(format!("{n} reached the provider"));
        }
    }
    // The key nowhere but its place.
    let key = vault_key(p);
    for (part, vs) in &d.parts {
        if part == &format!("header {place}") {
            continue;
        }
        if vs.iter().any(|v| contains(v, key.as_bytes())) {
            why.push(format!("the vault key also in {part}"));
        }
    }
    why
}

/// Print the failures and the counts, and fail the test when any case failed.
/// [`report`], with findings that are known and open: each listed case must still fail (when
/// it passes, the test fails until it is taken off the list), every other case must pass.
/// `known`: (case name, why it is open). `ran`: the names of the cases that ran.
pub fn report_known(class: &str, ran: &[&str], fails: &[String], known: &[(&str, &str)]) {
    let name_of = |f: &String| f.split(':').next().unwrap_or("").trim().to_string();
    let failing: Vec<String> = fails.iter().map(name_of).collect();
    let mut open = Vec::new();
    let mut unexpected = Vec::new();
    for (f, n) in fails.iter().zip(&failing) {
        match known.iter().find(|(k, _)| k == n) {
            Some((_, why)) => open.push(format!("{f} [known, open: {why}]")),
            None => unexpected.push(f.clone()),
        }
    }
    let fixed: Vec<&str> = known
        .iter()
        // An intermittent finding may pass on a run; the others must fail until fixed.
        .filter(|(k, why)| {
            ran.contains(k) && !why.starts_with("intermittent") && !failing.iter().any(|n| n == k)
        })
        .map(|(k, _)| *k)
        .collect();
    eprintln!(
        "adversarial {class}: {} cases, {} failing ({} known and open)",
        ran.len(),
        fails.len(),
        open.len()
    );
    for f in &open {
        eprintln!("  KNOWN {f}");
    }
    for f in &unexpected {
        eprintln!("  FAIL {f}");
    }
    assert!(
        unexpected.is_empty() && fixed.is_empty(),
        "{class}: {} unexpected failures:\n{}\nknown findings that pass now (take them off the list): {fixed:?}",
        unexpected.len(),
        unexpected.join("\n")
    );
}

pub fn report(class: &str, total: usize, fails: &[String]) {
    eprintln!(
        "adversarial {class}: {total} cases, {} failing",
        fails.len()
    );
    for f in fails {
        eprintln!("  FAIL {f}");
    }
    assert!(
        fails.is_empty(),
        "{class}: {} of {total} cases failed:\n{}",
        fails.len(),
        fails.join("\n")
    );
}

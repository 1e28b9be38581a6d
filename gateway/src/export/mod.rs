//! Export: the journal's records, one event per exchange, to the security team's own systems
//! (syslog RFC 5424 / CEF, Splunk HEC, OTLP logs). A shared service beside the data path, never
//! on it: each `[[export]]` entry is one background task reading the journal from its own
//! durable cursor ([`crate::journal::cursor`]) up to the durable head, rendering the versioned
//! event schema ([`event`]), handing a bounded batch to its sink and committing the cursor only
//! once the sink acknowledged it (a TCP write for syslog; HTTP 2xx for HEC and OTLP).
//! Delivery is at-least-once; the journal id (`unmapped.journal_id`, `metadata.uid`) is the
//! event id a receiver deduplicates by. A sink that fails is retried with jittered backoff and
//! logged loudly; the data path does not wait for it.

pub mod doctor;
pub mod event;
mod http;
pub mod otlp;
mod sink;
pub mod syslog;
mod task;

use std::{collections::BTreeSet, path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

pub use task::start;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("export {name}: {reason}")]
    Setup { name: String, reason: String },
}

/// One `[[export]]` entry.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExportConfig {
    /// The exporter's name: its cursor, its metrics label, its log lines. Default
    /// `KIND-HASH` (a hash of the url): changing the url then starts a new cursor.
    pub name: Option<String>,
    /// `syslog` | `splunk-hec` | `otlp`.
    pub kind: String,
    /// syslog: `udp://HOST:PORT` or `tcp://HOST:PORT`; splunk-hec: `https://HOST:PORT`
    /// (`/services/collector/event` is added when the path is empty); otlp:
    /// `http(s)://HOST:PORT/v1/logs`.
    pub url: String,
    /// syslog only: `rfc5424` (the event as JSON in the message) or `cef`.
    pub format: String,
    /// syslog only: the facility (`local0`..`local7`, `user`, `auth`, `authpriv`, `daemon`).
    pub facility: String,
    /// splunk-hec: the environment variable holding the HEC token (never logged).
    pub token_env: Option<String>,
    /// splunk-hec / otlp over https: a PEM file of CAs trusted besides the system roots.
    pub ca_file: Option<PathBuf>,
    /// splunk-hec: `sourcetype` and optional `index` of every event.
    pub sourcetype: String,
    pub index: Option<String>,
    /// Masked request/response bodies and hold details in the events. Default: left out.
    pub include_bodies: bool,
    /// Records per batch (one datagram/frame each for syslog, one request for HEC/OTLP).
    pub batch: usize,
    /// How long a sink may take to accept a batch.
    #[serde(with = "crate::config::dur")]
    pub timeout: Duration,
    /// The longest wait between retries of a failing sink (jittered exponential backoff).
    #[serde(with = "crate::config::dur")]
    pub max_backoff: Duration,
}

impl Default for ExportConfig {
    fn default() -> Self {
        Self {
            name: None,
            kind: String::new(),
            url: String::new(),
            format: "rfc5424".into(),
            facility: "local0".into(),
            token_env: None,
            ca_file: None,
            sourcetype: "gateway:exchange".into(),
            index: None,
            include_bodies: false,
            batch: 256,
            timeout: Duration::from_secs(10),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// Where an exporter sends, parsed and checked once (validation and start use the same).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Syslog {
        tcp: bool,
        host: String,
        port: u16,
        cef: bool,
        facility: u8,
    },
    Hec {
        url: ::http::Uri,
        token_env: String,
    },
    Otlp {
        url: ::http::Uri,
    },
}

fn facility(name: &str) -> Option<u8> {
    Some(match name {
        "kern" => 0,
        "user" => 1,
        "daemon" => 3,
        "auth" => 4,
        "syslog" => 5,
        "authpriv" => 10,
        "local0" => 16,
        "local1" => 17,
        "local2" => 18,
        "local3" => 19,
        "local4" => 20,
        "local5" => 21,
        "local6" => 22,
        "local7" => 23,
        _ => return None,
    })
}

/// `HOST:PORT` of `scheme://HOST:PORT` (IPv6 in brackets), nothing else.
fn host_port(rest: &str, key: &str) -> Result<(String, u16), (String, String)> {
    let bad = |r: String| Err((key.to_string(), r));
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() => (h, p),
        _ => return bad(format!("{rest:?} is not HOST:PORT")),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok((host.to_string(), p)),
        _ => bad(format!("{port:?} is not a port")),
    }
}

fn http_url(url: &str, key: &str, default_path: &str) -> Result<::http::Uri, (String, String)> {
    let bad = |r: String| Err((key.to_string(), r));
    let uri: ::http::Uri = match url.parse() {
        Ok(u) => u,
        Err(e) => return bad(format!("{url:?} is not a URL ({e})")),
    };
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return bad(format!("{url:?}: the scheme must be http:// or https://"));
    }
    if uri.host().is_none_or(str::is_empty) {
        return bad(format!("{url:?} names no host"));
    }
    if uri.path() == "/" || uri.path().is_empty() {
        let s = format!("{}{default_path}", url.trim_end_matches('/'));
        return s
            .parse()
            .map_err(|e| (key.to_string(), format!("{s:?}: {e}")));
    }
    Ok(uri)
}

impl ExportConfig {
    /// The exporter's name (and its cursor's, `export:NAME`).
    pub fn name(&self) -> String {
        if let Some(n) = &self.name {
            return n.clone();
        }
        use sha2::Digest as _;
        let h = sha2::Sha256::digest(self.url.as_bytes());
        let short: String = h[..4].iter().map(|b| format!("{b:02x}")).collect();
        format!("{}-{short}", self.kind)
    }

    /// Parse and check the entry: the key and the reason of the first problem.
    pub fn target(&self, at: &str) -> Result<Target, (String, String)> {
        let key = |k: &str| format!("{at}.{k}");
        let bad = |k: &str, r: String| Err((key(k), r));
        if let Some(n) = &self.name
            && !(1..=64).contains(&n.len())
        {
            return bad("name", "1 to 64 characters".into());
        }
        if let Some(n) = &self.name
            && !n
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return bad("name", format!("{n:?}: only A-Z a-z 0-9 - _ ."));
        }
        if self.batch == 0 || self.batch > 10_000 {
            return bad("batch", "between 1 and 10000".into());
        }
        if self.timeout.is_zero() {
            return bad("timeout", "must be above 0".into());
        }
        if self.max_backoff < Duration::from_millis(100) {
            return bad("max_backoff", "at least 100ms".into());
        }
        let syslog_only = |what: &str, set: bool| -> Result<(), (String, String)> {
            if set {
                Err((
                    key(what),
                    format!("only for kind = \"syslog\" (this is {:?})", self.kind),
                ))
            } else {
                Ok(())
            }
        };
        match self.kind.as_str() {
            "syslog" => {
                let (tcp, rest) = if let Some(r) = self.url.strip_prefix("udp://") {
                    (false, r)
                } else if let Some(r) = self.url.strip_prefix("tcp://") {
                    (true, r)
                } else {
                    return bad(
                        "url",
                        format!(
                            "{:?}: syslog needs udp://HOST:PORT or tcp://HOST:PORT",
                            self.url
                        ),
                    );
                };
                let (host, port) = host_port(rest, &key("url"))?;
                let cef = match self.format.as_str() {
                    "rfc5424" => false,
                    "cef" => true,
                    f => return bad("format", format!("{f:?}: rfc5424 or cef")),
                };
                let Some(facility) = facility(&self.facility) else {
                    return bad(
                        "facility",
                        format!(
                            "{:?}: one of kern user daemon auth syslog authpriv local0..local7",
                            self.facility
                        ),
                    );
                };
                if self.token_env.is_some() {
                    return bad("token_env", "only for kind = \"splunk-hec\"".into());
                }
                Ok(Target::Syslog {
                    tcp,
                    host,
                    port,
                    cef,
                    facility,
                })
            }
            "splunk-hec" => {
                syslog_only("format", self.format != "rfc5424")?;
                let url = http_url(&self.url, &key("url"), "/services/collector/event")?;
                if url.scheme_str() != Some("https") {
                    return bad(
                        "url",
                        format!(
                            "{:?}: Splunk HEC carries its token: https:// only",
                            self.url
                        ),
                    );
                }
                let Some(env) = self.token_env.clone().filter(|e| !e.is_empty()) else {
                    return bad(
                        "token_env",
                        "required: the environment variable holding the HEC token".into(),
                    );
                };
                self.ca_ok(at)?;
                Ok(Target::Hec {
                    url,
                    token_env: env,
                })
            }
            "otlp" => {
                syslog_only("format", self.format != "rfc5424")?;
                let url = http_url(&self.url, &key("url"), "/v1/logs")?;
                if self.token_env.is_some() {
                    return bad("token_env", "only for kind = \"splunk-hec\"".into());
                }
                self.ca_ok(at)?;
                Ok(Target::Otlp { url })
            }
            "" => bad("kind", "required: syslog | splunk-hec | otlp".into()),
            k => bad("kind", format!("{k:?}: syslog | splunk-hec | otlp")),
        }
    }

    fn ca_ok(&self, at: &str) -> Result<(), (String, String)> {
        if let Some(p) = &self.ca_file
            && let Err(e) = crate::upstream::pool::root_store(std::slice::from_ref(p))
        {
            return Err((format!("{at}.ca_file"), e.to_string()));
        }
        Ok(())
    }
}

/// Check every `[[export]]` entry, and that no two share a name (and so a cursor).
pub fn validate(exports: &[ExportConfig]) -> Result<(), (String, String)> {
    let mut names = BTreeSet::new();
    for (i, e) in exports.iter().enumerate() {
        let at = format!("export[{i}]");
        e.target(&at)?;
        if !names.insert(e.name()) {
            return Err((
                format!("{at}.name"),
                format!(
                    "{:?} is the name of another [[export]] entry (each has its own cursor)",
                    e.name()
                ),
            ));
        }
    }
    Ok(())
}

/// The daemon's side of the check (`gateway run` and `gateway check`, not every CLI command:
/// an approver's shell does not hold the HEC token): every `token_env` is set and not empty.
pub fn check_env(exports: &[ExportConfig]) -> Result<(), (String, String)> {
    for (i, e) in exports.iter().enumerate() {
        let Some(env) = &e.token_env else { continue };
        let key = format!("export[{i}].token_env");
        match std::env::var(env) {
            Ok(v) if !v.trim().is_empty() => {}
            Ok(_) => return Err((key, format!("the environment variable {env} is empty"))),
            Err(_) => {
                return Err((
                    key,
                    format!("the environment variable {env} is not set (it holds the HEC token)"),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;

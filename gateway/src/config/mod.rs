//! The one TOML config file (DESIGN §8): parsing, embedded defaults, validation.
//!
//! A shared service: every stage reads its section from [`Config`]. `validate()` names the key
//! and the reason of the first problem; `gateway check` and `gateway run` exit 64 on it.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize};

use crate::provider::{self, HostPattern};

/// The embedded defaults, used by `gateway run` without `-c`.
pub const DEFAULT_CONFIG: &str = include_str!("../../../deploy/config/default.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("config {origin}: `{key}`: {reason}")]
    Invalid {
        origin: String,
        key: String,
        reason: String,
    },
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// CA, vault file, journal, admin socket.
    pub state_dir: PathBuf,
    pub listen: Listen,
    pub redirect: Redirect,
    pub dns: Dns,
    pub intercept: Intercept,
    pub upstream: Upstream,
    pub vault: crate::vault::VaultConfig,
    pub log: Log,
    /// Start from the built-in provider list (OpenAI, Anthropic, ...). `[[provider]]` entries
    /// add to it or override entries of the same name.
    pub builtin_providers: bool,
    #[serde(rename = "provider")]
    pub providers: Vec<ProviderConfig>,
    /// What is masked, blocked, held or recorded; none = every built-in detector masks.
    #[serde(rename = "rule")]
    pub rules: Vec<crate::policy::scan::RuleConfig>,
    pub policy: crate::policy::scan::PolicyConfig,
    pub hold: crate::hold::HoldConfig,
    pub journal: crate::journal::JournalConfig,
    pub metrics: crate::metrics::MetricsConfig,
    pub kubernetes: crate::redirect::pods::KubernetesConfig,
    pub limits: Limits,
    /// Where the certificates clients trust come from: this node's own CA, or a fleet root.
    pub ca: crate::tls::fleet_ca::CaConfig,
    /// `[fleet]`: the NATS JetStream bus joining this node to the others (issue I); absent: a
    /// single node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fleet: Option<crate::fleet::FleetConfig>,
    /// Named sets of workloads (`match.workload_group` in rules; journaled with the caller).
    pub groups: crate::redirect::identity::groups::GroupsConfig,
    /// The identity provider approvers sign in with; absent: OIDC is off.
    pub oidc: Option<crate::oidc::OidcConfig>,
    /// `[[export]]`: the journal's records to syslog, Splunk HEC, OTLP ([`crate::export`]).
    #[serde(rename = "export")]
    pub exports: Vec<crate::export::ExportConfig>,
    /// The admin API over HTTPS (issue I; the Unix socket is always there).
    pub admin: crate::admin::https::AdminConfig,
    /// The approval web page (issue I).
    pub web: crate::web::WebConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            state_dir: PathBuf::from("/var/lib/gateway"),
            listen: Listen::default(),
            redirect: Redirect::default(),
            dns: Dns::default(),
            intercept: Intercept::default(),
            upstream: Upstream::default(),
            vault: crate::vault::VaultConfig::default(),
            log: Log::default(),
            builtin_providers: true,
            providers: Vec::new(),
            rules: Vec::new(),
            policy: Default::default(),
            hold: Default::default(),
            journal: Default::default(),
            metrics: Default::default(),
            kubernetes: Default::default(),
            limits: Limits::default(),
            ca: Default::default(),
            fleet: None,
            groups: Default::default(),
            oidc: None,
            exports: Vec::new(),
            admin: Default::default(),
            web: Default::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Listen {
    /// IPv4 listener: where redirected IPv4 (and v4-mapped) connections land.
    pub addr: SocketAddr,
    /// IPv6 listener for pure IPv6 dials; empty string disables it (such dials are then refused).
    #[serde(deserialize_with = "opt_addr", serialize_with = "ser_opt_addr")]
    pub addr6: Option<SocketAddr>,
    /// Threads serving connections (each a single-threaded runtime); 0 = one per CPU.
    pub workers: usize,
}

impl Default for Listen {
    fn default() -> Self {
        Self {
            addr: "127.0.0.1:15001".parse().expect("static"),
            addr6: Some("[::1]:15001".parse().expect("static")),
            workers: 0,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Redirect {
    /// cgroup v2 directory to attach to; default: the cgroup v2 root (the whole host).
    pub cgroup: Option<PathBuf>,
    /// Destination ports whose connections to provider addresses are redirected.
    pub ports: Vec<u16>,
    /// Where programs, links and maps are pinned (on a bpf filesystem).
    pub pin_dir: PathBuf,
    /// SO_MARK carried by the gateway's own upstream sockets; a socket is left alone only with
    /// this mark *and* from the gateway's own cgroup.
    pub bypass_mark: u32,
    /// Where identity positions (system.slice units, user slices, the kubelet's kubepods tree)
    /// are read from; default: the cgroup v2 root. Names below a unit are the unit's own and
    /// never count.
    pub identity_root: Option<PathBuf>,
}

impl Default for Redirect {
    fn default() -> Self {
        Self {
            identity_root: None,
            cgroup: None,
            ports: vec![443],
            pin_dir: PathBuf::from("/sys/fs/bpf/gateway"),
            bypass_mark: 0x6777_6179, // "gway"
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Dns {
    /// Name servers (ip:port) for resolving provider hosts; empty = the system's resolv.conf.
    pub servers: Vec<SocketAddr>,
    /// Re-resolve no sooner than this, whatever the record's TTL.
    #[serde(with = "dur")]
    pub min_ttl: Duration,
    /// Re-resolve at least this often.
    #[serde(with = "dur")]
    pub max_ttl: Duration,
    /// How long an address stays redirected after its name stopped resolving to it.
    #[serde(with = "dur")]
    pub grace: Duration,
    /// Retry interval after a failed resolution.
    #[serde(with = "dur")]
    pub retry: Duration,
    /// The workloads' own DNS (TCP and UDP port 53 from the attached cgroup) goes through the
    /// gateway, which writes provider addresses from the answers into the kernel set before
    /// the workload sees them. Off, only static and self-resolved addresses are covered.
    pub learn: bool,
    /// How long the gateway waits for the workload's DNS server before the query fails.
    #[serde(with = "dur")]
    pub query_timeout: Duration,
    /// DNS queries in flight at once through the gateway; more are dropped (the client retries).
    pub max_inflight: usize,
}

impl Default for Dns {
    fn default() -> Self {
        Self {
            servers: Vec::new(),
            min_ttl: Duration::from_secs(30),
            max_ttl: Duration::from_secs(3600),
            grace: Duration::from_secs(600),
            retry: Duration::from_secs(30),
            learn: true,
            query_timeout: Duration::from_secs(5),
            max_inflight: 1024,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Intercept {
    /// How long to wait for a client's TLS ClientHello; a connection that has not sent one
    /// by then is closed (never spliced).
    #[serde(with = "dur")]
    pub client_hello_timeout: Duration,
    /// Timeout for connecting to the original destination.
    #[serde(with = "dur")]
    pub connect_timeout: Duration,
    /// The rest of the TLS handshake with the client, after its ClientHello.
    #[serde(with = "dur")]
    pub handshake_timeout: Duration,
    /// HTTP/1.1: how long a client may take to send a request's headers.
    #[serde(with = "dur")]
    pub header_read_timeout: Duration,
    /// Relay spliced connections in the kernel (an sk_skb program on the gateway's own
    /// sockhash) instead of through the gateway's threads with splice(2). Off by default: on the
    /// 2-core development machine it moved fewer bytes per second than splice(2) (BENCHMARKS.md),
    /// though it takes that work off the gateway's threads. When the program cannot load,
    /// splice(2) is used and the log says so. deploy/docs/kernel-relay.md.
    pub kernel_relay: bool,
}

impl Default for Intercept {
    fn default() -> Self {
        Self {
            client_hello_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(30),
            kernel_relay: false,
        }
    }
}

/// Bounds that keep one workload from taking the daemon from everyone else.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Connections open at once from one calling cgroup; its next one is refused (logged,
    /// counted) while others are served. 0 = a quarter of `max_connections`.
    pub per_workload: usize,
    /// Connections open at once in all; 0 = from the descriptor limit (raised to its hard
    /// maximum at start), leaving room for two descriptors per connection and the daemon's own.
    pub max_connections: usize,
    /// The largest request body (after undoing its Content-Encoding) the gateway reads to
    /// inspect; a larger one is refused (413). 0 = 32 MiB.
    pub max_request_body: usize,
    /// HTTP/2 streams one client connection may have open at once (more are refused by the
    /// protocol, `REFUSED_STREAM`). 0 = 100.
    pub streams_per_connection: u32,
    /// The largest WebSocket message (fragments reassembled) either side may send through a
    /// provider session; a larger one ends the session with close code 1009. 0 = 16 MiB.
    pub max_ws_message: usize,
}

impl Limits {
    pub fn streams_per_connection(&self) -> u32 {
        if self.streams_per_connection == 0 {
            100
        } else {
            self.streams_per_connection
        }
    }

    pub fn max_ws_message(&self) -> usize {
        if self.max_ws_message == 0 {
            16 << 20
        } else {
            self.max_ws_message
        }
    }

    pub fn max_request_body(&self) -> usize {
        if self.max_request_body == 0 {
            32 << 20
        } else {
            self.max_request_body
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Upstream {
    /// PEM files whose certificates are trusted besides the system roots (tests, private CAs).
    pub extra_roots: Vec<PathBuf>,
    /// Idle upstream connections are closed after this long.
    #[serde(with = "dur")]
    pub idle_timeout: Duration,
    /// How many leaf certificates (one per SNI) stay cached.
    pub leaf_cache: usize,
}

impl Default for Upstream {
    fn default() -> Self {
        Self {
            extra_roots: Vec::new(),
            idle_timeout: Duration::from_secs(90),
            leaf_cache: 1024,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Log {
    pub format: LogFormat,
    /// tracing filter directives; `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for Log {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ProviderConfig {
    pub name: String,
    /// Host names (exact, or `*.suffix` wildcards matched against the SNI only).
    pub hosts: Vec<String>,
    /// Static CIDRs redirected on top of what `hosts` resolve to.
    pub addrs: Vec<String>,
    /// Vault entry holding this provider's key.
    pub key: Option<String>,
    /// `false` removes a built-in provider of this name.
    pub enabled: Option<bool>,
    /// Wire format: openai | anthropic | gemini | azure | openai-compatible (the default for
    /// providers that are not built in).
    pub api: Option<crate::provider::Api>,
    /// The provider's addresses also serve unrelated sites (a CDN front): TLS there with
    /// another server name is spliced and logged instead of refused. Default false: the
    /// provider owns its addresses (built-ins carry their own declaration).
    pub shared: Option<bool>,
}

impl Config {
    /// This node's one name, everywhere it appears (fleet ids and subjects, exported events,
    /// the CA intermediate's subject): `[fleet] node`, else `[ca] node`, else the host name up
    /// to its first dot (`fleet::config::host_node`). Validation refuses the two keys set to
    /// different names.
    pub fn node_name(&self) -> String {
        self.fleet
            .as_ref()
            .and_then(|f| f.node.clone())
            .or_else(|| self.ca.node.clone())
            .unwrap_or_else(crate::fleet::config::host_node)
    }

    /// Parse and validate a config text. `origin` names it in errors (a path, or "defaults").
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_string(),
            message: e.to_string().trim_end().replace('\n', " | "),
        })?;
        cfg.validate(origin)?;
        Ok(cfg)
    }

    /// Load `path`, or the embedded defaults when `None`.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        match path {
            None => Self::parse(DEFAULT_CONFIG, "defaults"),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                Self::parse(&text, &path.display().to_string())
            }
        }
    }

    /// Check what serde cannot: value ranges, CIDRs, host names, that the cgroup exists.
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let bad = |key: String, reason: String| ConfigError::Invalid {
            origin: origin.to_string(),
            key,
            reason,
        };
        if self.state_dir.as_os_str().is_empty() || !self.state_dir.is_absolute() {
            return Err(bad("state_dir".into(), "must be an absolute path".into()));
        }
        if self.redirect.ports.is_empty() {
            return Err(bad(
                "redirect.ports".into(),
                "must list at least one port".into(),
            ));
        }
        if self.redirect.ports.len() > gateway_common::MAX_PORTS as usize {
            return Err(bad(
                "redirect.ports".into(),
                format!("at most {} ports", gateway_common::MAX_PORTS),
            ));
        }
        if let Some(i) = self.redirect.ports.iter().position(|p| *p == 0) {
            return Err(bad(
                format!("redirect.ports[{i}]"),
                "port 0 is not a port".into(),
            ));
        }
        if self.listen.addr.port() == 0 || !self.listen.addr.is_ipv4() {
            return Err(bad(
                "listen.addr".into(),
                "must be an IPv4 address with a non-zero port".into(),
            ));
        }
        if let Some(a6) = self.listen.addr6
            && (a6.port() == 0 || !a6.is_ipv6())
        {
            return Err(bad(
                "listen.addr6".into(),
                "must be an IPv6 address with a non-zero port".into(),
            ));
        }
        if !self.redirect.pin_dir.is_absolute() {
            return Err(bad(
                "redirect.pin_dir".into(),
                "must be an absolute path".into(),
            ));
        }
        if self.redirect.bypass_mark == 0 {
            return Err(bad(
                "redirect.bypass_mark".into(),
                "must be non-zero (0 would exempt every unmarked socket)".into(),
            ));
        }
        if let Some(cg) = &self.redirect.cgroup {
            crate::redirect::cgroup::check_cgroup_dir(cg)
                .map_err(|e| bad("redirect.cgroup".into(), e.to_string()))?;
        }
        if self.dns.min_ttl > self.dns.max_ttl {
            return Err(bad(
                "dns.min_ttl".into(),
                "must not exceed dns.max_ttl".into(),
            ));
        }
        // Both listeners accept only identities of the [oidc] issuer.
        let oidc = self.oidc.is_some();
        self.admin
            .validate(oidc)
            .and_then(|()| self.web.validate(oidc))
            .map_err(|(k, r)| bad(k, r))?;
        if self.dns.retry.is_zero() {
            return Err(bad("dns.retry".into(), "must be greater than zero".into()));
        }
        if self.dns.query_timeout.is_zero() {
            return Err(bad(
                "dns.query_timeout".into(),
                "must be greater than zero".into(),
            ));
        }
        if self.dns.max_inflight == 0 {
            return Err(bad("dns.max_inflight".into(), "must be at least 1".into()));
        }
        if let Some(root) = &self.redirect.identity_root {
            crate::redirect::cgroup::check_cgroup_dir(root)
                .map_err(|e| bad("redirect.identity_root".into(), e.to_string()))?;
        }
        for (key, d) in [
            (
                "intercept.client_hello_timeout",
                self.intercept.client_hello_timeout,
            ),
            (
                "intercept.handshake_timeout",
                self.intercept.handshake_timeout,
            ),
            (
                "intercept.header_read_timeout",
                self.intercept.header_read_timeout,
            ),
        ] {
            if d.is_zero() {
                return Err(bad(key.into(), "must be greater than zero".into()));
            }
        }
        if self.limits.max_connections != 0
            && self.limits.per_workload > self.limits.max_connections
        {
            return Err(bad(
                "limits.per_workload".into(),
                "must not exceed limits.max_connections".into(),
            ));
        }
        for (i, r) in self.upstream.extra_roots.iter().enumerate() {
            if !r.is_file() {
                return Err(bad(
                    format!("upstream.extra_roots[{i}]"),
                    format!("{} is not a readable file", r.display()),
                ));
            }
        }
        if self.upstream.leaf_cache == 0 {
            return Err(bad(
                "upstream.leaf_cache".into(),
                "must be at least 1".into(),
            ));
        }
        if self.vault.backend == crate::vault::BackendKind::Hashicorp {
            self.vault
                .hashicorp
                .validate()
                .map_err(|reason| bad("vault.hashicorp".into(), reason))?;
        }
        for (i, s) in self.vault.selects.iter().enumerate() {
            if !crate::vault::valid_name(&s.key) {
                return Err(bad(
                    format!("vault.select[{i}].key"),
                    format!("`{}` is not a key name", s.key),
                ));
            }
        }
        self.hold.validate().map_err(|(k, r)| bad(k, r))?;
        self.ca.validate(self).map_err(|(k, r)| bad(k, r))?;
        if let Some(f) = &self.fleet {
            f.validate().map_err(|(k, r)| bad(k, r))?;
            match (&f.node, &self.ca.node) {
                (Some(a), Some(b)) if a != b => {
                    return Err(bad(
                        "ca.node".into(),
                        format!(
                            "is `{b}` but fleet.node is `{a}`: a node has one name (leave \
                             ca.node out: it defaults to fleet.node)"
                        ),
                    ));
                }
                // The fleet takes its name from `ca.node` then: it must be a subject token.
                (None, Some(b)) => crate::fleet::config::valid_node(b).map_err(|r| {
                    bad(
                        "ca.node".into(),
                        format!("{r} (it names the fleet node too)"),
                    )
                })?,
                _ => {}
            }
        }
        let groups = crate::redirect::identity::groups::WorkloadGroups::new(&self.groups)
            .map_err(|(k, r)| bad(k, r))?;
        for (i, r) in self.rules.iter().enumerate() {
            if let Some(g) = r.who.as_ref().and_then(|w| w.workload_group.as_ref())
                && !groups.is_defined(g)
            {
                return Err(bad(
                    format!("rule[{i}] ({}).match.workload_group", r.name),
                    format!("`{g}` is not a group defined in [groups]"),
                ));
            }
        }
        if let Some(o) = &self.oidc {
            o.validate().map_err(|(k, r)| bad(k, r))?;
        } else if let Some(i) = self.hold.approvers.iter().position(|a| {
            matches!(
                crate::hold::Approver::parse(a),
                Ok(crate::hold::Approver::OidcGroup(_) | crate::hold::Approver::OidcSubject(_))
            )
        }) {
            return Err(bad(
                format!("hold.approvers[{i}]"),
                "names an OIDC identity, but [oidc] is not configured (issuer, client_id)".into(),
            ));
        }
        self.metrics.validate().map_err(|(k, r)| bad(k, r))?;
        if self.journal.flush_delay > crate::journal::JournalConfig::MAX_FLUSH_DELAY {
            return Err(bad(
                "journal.flush_delay".into(),
                "at most 10s: it bounds what a power cut can take from the journal".into(),
            ));
        }
        crate::export::validate(&self.exports).map_err(|(k, r)| bad(k, r))?;
        if !self.exports.is_empty() && !self.journal.enabled {
            return Err(bad(
                "export".into(),
                "exporters read the journal: they need journal.enabled = true".into(),
            ));
        }
        if let Err(e) = crate::policy::scan::Scanner::new(&self.rules, &self.policy) {
            use crate::policy::scan::ScanError;
            return Err(match e {
                ScanError::Rule { rule, reason } => {
                    let i = self.rules.iter().position(|r| r.name == rule).unwrap_or(0);
                    bad(format!("rule[{i}] ({rule})"), reason)
                }
                ScanError::Allow { index, reason } => {
                    bad(format!("policy.allow_regex[{index}]"), reason)
                }
                ScanError::Build(reason) => bad("rule".into(), reason),
            });
        }
        let mut names = std::collections::HashSet::new();
        for (i, p) in self.providers.iter().enumerate() {
            if p.name.is_empty() {
                return Err(bad(
                    format!("provider[{i}].name"),
                    "must not be empty".into(),
                ));
            }
            if !names.insert(p.name.as_str()) {
                return Err(bad(
                    format!("provider[{i}].name"),
                    format!("provider `{}` is defined twice", p.name),
                ));
            }
            for (j, h) in p.hosts.iter().enumerate() {
                HostPattern::parse(h)
                    .map_err(|reason| bad(format!("provider[{i}].hosts[{j}]"), reason))?;
            }
            for (j, a) in p.addrs.iter().enumerate() {
                parse_cidr(a).map_err(|reason| bad(format!("provider[{i}].addrs[{j}]"), reason))?;
            }
            if let Some(k) = &p.key
                && k.is_empty()
            {
                return Err(bad(
                    format!("provider[{i}].key"),
                    "must not be empty".into(),
                ));
            }
            let builtin = provider::builtin_names().contains(&p.name.as_str());
            if !builtin && p.enabled != Some(false) && p.hosts.is_empty() {
                return Err(bad(
                    format!("provider[{i}].hosts"),
                    format!("`{}` is not a built-in provider, so it needs hosts", p.name),
                ));
            }
        }
        Ok(())
    }

    /// The config as one line of JSON, for logging once at start. Holds no secrets: keys live
    /// in the vault, and only their names appear here.
    pub fn effective(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("<unprintable: {e}>"))
    }
}

/// A CIDR, or a bare address meaning /32 or /128.
pub fn parse_cidr(s: &str) -> Result<IpNet, String> {
    if let Ok(net) = s.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    match s.parse::<std::net::IpAddr>() {
        Ok(ip) => Ok(IpNet::from(ip)),
        Err(_) => Err(format!(
            "`{s}` is not a CIDR (like 192.0.2.0/24 or 2001:db8::/32)"
        )),
    }
}

fn opt_addr<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let s = String::deserialize(d)?;
    if s.is_empty() {
        return Ok(None);
    }
    s.parse().map(Some).map_err(serde::de::Error::custom)
}

fn ser_opt_addr<S: serde::Serializer>(v: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(a) => s.serialize_str(&a.to_string()),
        None => s.serialize_str(""),
    }
}

/// Durations written as `500ms`, `30s`, `10m`, `2h`, `90d`.
pub mod dur {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn parse(s: &str) -> Result<Duration, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("`{s}` is not a duration (like 500ms, 30s, 10m, 2h, 90d)"))?;
        let secs = |m: u64| n.checked_mul(m).map(Duration::from_secs);
        let d = match unit {
            "ms" => Some(Duration::from_millis(n)),
            "s" => secs(1),
            "m" => secs(60),
            "h" => secs(3600),
            "d" => secs(86_400),
            _ => None,
        };
        d.ok_or_else(|| format!("`{s}` is not a duration (like 500ms, 30s, 10m, 2h, 90d)"))
    }

    pub fn format(d: &Duration) -> String {
        if d.subsec_millis() != 0 || d.as_secs() == 0 {
            format!("{}ms", d.as_millis())
        } else {
            format!("{}s", d.as_secs())
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).map_err(serde::de::Error::custom)
    }

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(d))
    }
}

#[cfg(test)]
mod tests;

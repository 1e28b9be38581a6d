//! Providers: which hosts belong to which LLM API, and how each API behaves (DESIGN §6).
//!
//! The `provider` stage of the data path: the catalog the redirect stage resolves and the
//! intercept stage matches SNIs against, and one adapter module per API (credential placement,
//! error shape, endpoints, stream framing).

pub mod adapter;
pub mod anthropic;
pub mod azure;
pub mod bedrock;
pub mod compat;
pub mod gemini;
pub mod openai;
pub mod prompt;
pub mod sigv4;
pub mod vertex;

use std::{collections::BTreeMap, sync::Arc};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use adapter::Adapter;

/// Which wire format a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Api {
    #[serde(rename = "openai")]
    OpenAi,
    Anthropic,
    Gemini,
    /// Google Vertex AI: Gemini and Anthropic models by publisher (its vault entry is a
    /// service-account key).
    Vertex,
    Azure,
    #[serde(rename = "openai-compatible")]
    OpenAiCompatible,
    Bedrock,
}

impl Api {
    pub fn adapter(self) -> &'static dyn Adapter {
        match self {
            Api::OpenAi => &openai::OpenAi,
            Api::Anthropic => &anthropic::Anthropic,
            Api::Gemini => &gemini::Gemini,
            Api::Vertex => &vertex::Vertex,
            Api::Azure => &azure::Azure,
            Api::OpenAiCompatible => &compat::Compat,
            Api::Bedrock => &bedrock::Bedrock,
        }
    }
}

use crate::config::{Config, parse_cidr};

/// A host name as written in the config: exact, `*.suffix` (any name below the suffix), or a
/// glob whose `*` stands for one DNS label or part of one (`bedrock-runtime.*.amazonaws.com`,
/// `*-aiplatform.googleapis.com`). Wildcards match by SNI and are learned by DNS; they cannot be
/// resolved up front, so their addresses come from `addrs`, from exact hosts or from DNS answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Exact(String),
    /// The suffix with its leading dot, lower case: `.openai.azure.com`.
    Suffix(String),
    /// Lower-case labels, each split at its `*`s: `bedrock-runtime.*.amazonaws.com` is
    /// `[["bedrock-runtime"], ["", ""], ["amazonaws"], ["com"]]`.
    Glob(Vec<Vec<String>>),
}

impl HostPattern {
    pub fn parse(s: &str) -> Result<Self, String> {
        let lower = s.trim_end_matches('.').to_ascii_lowercase();
        let (wild, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest.to_string()),
            None => (false, lower),
        };
        if name.contains('*') {
            // A glob: the name must still be a DNS name with each `*` read as a letter, and a
            // label may not be a bare `*` next to the registrable suffix (`*.com` style).
            let probe = name.replace('*', "x");
            if wild || !is_dns_name(&probe) || name.contains("**") {
                return Err(format!(
                    "`{s}`: a `*` stands for one label or part of one \
                     (like bedrock-runtime.*.amazonaws.com or *-aiplatform.googleapis.com)"
                ));
            }
            let labels: Vec<Vec<String>> = name
                .split('.')
                .map(|l| l.split('*').map(String::from).collect())
                .collect();
            let fixed = labels.iter().filter(|l| l.len() == 1).count();
            if fixed < 2 {
                return Err(format!(
                    "`{s}`: a glob needs at least two labels without `*` (the registrable name)"
                ));
            }
            return Ok(HostPattern::Glob(labels));
        }
        if !is_dns_name(&name) {
            return Err(format!(
                "`{s}` is not a host name (like api.example.com or *.example.com)"
            ));
        }
        Ok(if wild {
            HostPattern::Suffix(format!(".{name}"))
        } else {
            HostPattern::Exact(name)
        })
    }

    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => h.eq_ignore_ascii_case(host),
            HostPattern::Suffix(sfx) => {
                let h = host.as_bytes();
                h.len() > sfx.len() && h[h.len() - sfx.len()..].eq_ignore_ascii_case(sfx.as_bytes())
            }
            HostPattern::Glob(labels) => {
                let host = host.trim_end_matches('.').to_ascii_lowercase();
                let got: Vec<&str> = host.split('.').collect();
                got.len() == labels.len()
                    && got.iter().zip(labels).all(|(l, pat)| label_matches(l, pat))
            }
        }
    }

    /// Whether DNS can be asked for it (exact names only).
    pub fn exact(&self) -> Option<&str> {
        match self {
            HostPattern::Exact(h) => Some(h),
            HostPattern::Suffix(_) | HostPattern::Glob(_) => None,
        }
    }
}

/// One label against one glob label (its pieces between `*`s): each `*` is one or more
/// characters of the label.
fn label_matches(label: &str, pieces: &[String]) -> bool {
    let [first, middle @ .., last] = pieces else {
        return pieces.first().is_some_and(|p| p == label);
    };
    if label.is_empty() || !label.starts_with(first.as_str()) {
        return false;
    }
    let mut rest = &label[first.len()..];
    for m in middle {
        // At least one character for the `*` before it.
        match rest.get(1..).and_then(|r| r.find(m.as_str())) {
            Some(i) => rest = &rest[1 + i + m.len()..],
            None => return false,
        }
    }
    rest.len() > last.len() && rest.ends_with(last.as_str())
}

fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// One provider after merging built-ins with the config.
#[derive(Debug, Clone)]
pub struct Provider {
    pub name: String,
    pub hosts: Vec<HostPattern>,
    pub addrs: Vec<IpNet>,
    pub key: Option<String>,
    pub api: Api,
    /// The addresses its host names resolve to also serve unrelated sites (a CDN front): other
    /// server names are spliced there, not refused.
    pub shared: bool,
    /// The same for its static `addrs`: false unless the entry that listed them says shared
    /// (an address written into the config is the provider's own by default).
    pub addrs_shared: bool,
}

impl Provider {
    /// The provider-set bits the addresses its names resolve to carry in the kernel.
    pub fn addr_flags(&self) -> u8 {
        bits(self.shared)
    }

    /// The bits of its static `addrs`.
    pub fn static_flags(&self) -> u8 {
        bits(self.addrs_shared)
    }

    pub fn adapter(&self) -> &'static dyn Adapter {
        self.api.adapter()
    }

    /// Exact host names, the ones DNS can answer for.
    pub fn resolvable_hosts(&self) -> impl Iterator<Item = &str> {
        self.hosts.iter().filter_map(HostPattern::exact)
    }
}

fn bits(shared: bool) -> u8 {
    gateway_common::ADDR_PROVIDER
        | if shared {
            gateway_common::ADDR_SHARED
        } else {
            0
        }
}

/// A built-in provider; the vault key name defaults to the provider name.
struct Builtin {
    name: &'static str,
    hosts: &'static [&'static str],
    api: Api,
    /// Published static ranges (the provider's own documentation).
    addrs: &'static [&'static str],
    /// Behind a CDN front whose addresses serve unrelated sites too. Where nothing says the
    /// addresses are the provider's own, shared is the declaration that breaks no other site.
    shared: bool,
}

const fn cdn(name: &'static str, hosts: &'static [&'static str], api: Api) -> Builtin {
    Builtin {
        name,
        hosts,
        api,
        addrs: &[],
        shared: true,
    }
}

const BUILTIN: &[Builtin] = &[
    // Cloudflare in front (its error pages name api.openai.com); OpenAI publishes egress ranges
    // only (developers.openai.com/api/docs/guides/ip-addresses), none for the API's ingress.
    cdn("openai", &["api.openai.com"], Api::OpenAi),
    // Anthropic publishes its API's inbound addresses and says they "will not change without
    // notice" (platform.claude.com/docs/en/api/ip-addresses: 160.79.104.0/23, 2607:6bc0::/48;
    // the newer ja/ko editions add 153.61.224.0/22). They are Anthropic's own: owned.
    Builtin {
        name: "anthropic",
        hosts: &["api.anthropic.com"],
        api: Api::Anthropic,
        addrs: &["160.79.104.0/23", "153.61.224.0/22", "2607:6bc0::/48"],
        shared: false,
    },
    // Google Front End: the addresses of every Google API and site (goog.json).
    cdn(
        "gemini",
        &["generativelanguage.googleapis.com"],
        Api::Gemini,
    ),
    // Vertex AI: the Google Front End too; regional names (`us-central1-aiplatform...`) are
    // found by SNI and learned by DNS.
    cdn(
        "vertex",
        &["aiplatform.googleapis.com", "*-aiplatform.googleapis.com"],
        Api::Vertex,
    ),
    // Azure's multi-tenant front ends, no published ranges per service.
    cdn(
        "azure-openai",
        &[
            "*.openai.azure.com",
            "*.cognitiveservices.azure.com",
            "*.services.ai.azure.com",
        ],
        Api::Azure,
    ),
    // Cloudflare (mistral, groq, openrouter: Cloudflare error pages); the others publish no
    // ranges and nothing says their addresses are their own.
    cdn("mistral", &["api.mistral.ai"], Api::OpenAiCompatible),
    cdn("groq", &["api.groq.com"], Api::OpenAiCompatible),
    cdn("deepseek", &["api.deepseek.com"], Api::OpenAiCompatible),
    cdn("xai", &["api.x.ai"], Api::OpenAiCompatible),
    cdn("openrouter", &["openrouter.ai"], Api::OpenAiCompatible),
    cdn(
        "together",
        &["api.together.xyz", "api.together.ai"],
        Api::OpenAiCompatible,
    ),
    cdn("fireworks", &["api.fireworks.ai"], Api::OpenAiCompatible),
    cdn(
        "cohere",
        &["api.cohere.com", "api.cohere.ai"],
        Api::OpenAiCompatible,
    ),
    // AWS Bedrock Runtime in every region (FIPS names too): names matched by SNI and learned
    // from DNS answers, never resolved up front. AWS's published ranges for these front ends
    // are the shared `AMAZON` ones: other server names there are spliced.
    cdn(
        "bedrock",
        &[
            "bedrock-runtime.*.amazonaws.com",
            "bedrock-runtime-fips.*.amazonaws.com",
        ],
        Api::Bedrock,
    ),
];

pub fn builtin_names() -> Vec<&'static str> {
    BUILTIN.iter().map(|b| b.name).collect()
}

/// All providers in force: built-ins (unless disabled) overridden and extended by the config.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    providers: Vec<Arc<Provider>>,
}

impl Catalog {
    /// Build from a validated config (patterns and CIDRs already checked by `validate`).
    pub fn from_config(cfg: &Config) -> Self {
        let mut providers: Vec<Provider> = if cfg.builtin_providers {
            BUILTIN
                .iter()
                .map(|b| Provider {
                    name: b.name.to_string(),
                    hosts: b
                        .hosts
                        .iter()
                        .map(|h| HostPattern::parse(h).expect("built-in host is valid"))
                        .collect(),
                    addrs: b
                        .addrs
                        .iter()
                        .map(|a| parse_cidr(a).expect("built-in CIDR is valid"))
                        .collect(),
                    key: Some(b.name.to_string()),
                    api: b.api,
                    shared: b.shared,
                    // Published ranges (Anthropic's) are the provider's own; none is shared.
                    addrs_shared: false,
                })
                .collect()
        } else {
            Vec::new()
        };
        for pc in &cfg.providers {
            let hosts: Vec<HostPattern> = pc
                .hosts
                .iter()
                .filter_map(|h| HostPattern::parse(h).ok())
                .collect();
            let addrs: Vec<IpNet> = pc.addrs.iter().filter_map(|a| parse_cidr(a).ok()).collect();
            let pos = providers.iter().position(|p| p.name == pc.name);
            if pc.enabled == Some(false) {
                if let Some(i) = pos {
                    providers.remove(i);
                }
                continue;
            }
            match pos {
                Some(i) => {
                    let p = &mut providers[i];
                    if !hosts.is_empty() {
                        p.hosts = hosts;
                    }
                    if !addrs.is_empty() {
                        p.addrs = addrs;
                        p.addrs_shared = pc.shared.unwrap_or(false);
                    }
                    if let Some(shared) = pc.shared {
                        p.shared = shared;
                    }
                    if pc.key.is_some() {
                        p.key = pc.key.clone();
                    }
                    if let Some(api) = pc.api {
                        p.api = api;
                    }
                }
                None => providers.push(Provider {
                    name: pc.name.clone(),
                    hosts,
                    addrs,
                    key: pc.key.clone().or_else(|| Some(pc.name.clone())),
                    api: pc.api.unwrap_or(Api::OpenAiCompatible),
                    shared: pc.shared.unwrap_or(false),
                    addrs_shared: pc.shared.unwrap_or(false),
                }),
            }
        }
        Self {
            providers: providers.into_iter().map(Arc::new).collect(),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Provider>> {
        self.providers.iter()
    }

    /// The provider whose hosts match this SNI, if any.
    pub fn match_host(&self, host: &str) -> Option<&Arc<Provider>> {
        self.providers
            .iter()
            .find(|p| p.hosts.iter().any(|h| h.matches(host)))
    }

    /// Every static CIDR of every provider, with its provider-set bits: shared only when every
    /// provider claiming it says so.
    pub fn static_cidrs(&self) -> BTreeMap<IpNet, u8> {
        let mut out = BTreeMap::new();
        for p in &self.providers {
            for net in &p.addrs {
                out.entry(*net)
                    .and_modify(|f| *f &= p.static_flags())
                    .or_insert(p.static_flags());
            }
        }
        out
    }

    /// Every exact host name to resolve, deduplicated, with the bits its addresses get.
    pub fn resolvable_hosts(&self) -> BTreeMap<String, u8> {
        let mut out = BTreeMap::new();
        for p in &self.providers {
            for h in p.resolvable_hosts() {
                out.entry(h.to_string())
                    .and_modify(|f| *f &= p.addr_flags())
                    .or_insert(p.addr_flags());
            }
        }
        out
    }

    /// The provider-set bits for a DNS name (trailing dot and case ignored), if it is a
    /// provider host: the bits of the first provider that matches.
    pub fn dns_name_flags(&self, name: &str) -> Option<u8> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.match_host(&name).map(|p| p.addr_flags())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> Config {
        Config::parse(text, "test").expect("valid config")
    }

    #[test]
    fn builtins_cover_the_listed_providers() {
        let c = Catalog::from_config(&Config::default());
        for name in [
            "openai",
            "anthropic",
            "gemini",
            "vertex",
            "azure-openai",
            "mistral",
            "groq",
            "deepseek",
            "xai",
            "openrouter",
            "together",
            "fireworks",
            "cohere",
            "bedrock",
        ] {
            assert!(c.iter().any(|p| p.name == name), "{name} missing");
        }
        for h in [
            "bedrock-runtime.us-east-1.amazonaws.com",
            "bedrock-runtime-fips.us-gov-west-1.amazonaws.com",
            "BEDROCK-RUNTIME.eu-central-2.amazonaws.com.",
        ] {
            assert_eq!(c.match_host(h).unwrap().name, "bedrock", "{h}");
        }
        for h in [
            "bedrock-runtime.amazonaws.com",
            "bedrock.us-east-1.amazonaws.com",
            "bedrock-runtime.a.b.amazonaws.com",
            "bedrock-runtime.us-east-1.amazonaws.com.evil.example",
        ] {
            assert!(c.match_host(h).is_none_or(|p| p.name != "bedrock"), "{h}");
        }
        assert_eq!(c.match_host("API.OpenAI.com").unwrap().name, "openai");
        assert_eq!(
            c.match_host("myres.openai.azure.com").unwrap().name,
            "azure-openai"
        );
        assert!(
            c.match_host("openai.azure.com").is_none(),
            "bare suffix is not a subdomain"
        );
        assert!(c.match_host("evil-openai.azure.com.example").is_none());
        assert!(c.match_host("example.com").is_none());
        assert!(!c.resolvable_hosts().keys().any(|h| h.contains('*')));
    }

    #[test]
    fn config_overrides_adds_and_disables() {
        let c = Catalog::from_config(&cfg(r#"
            [[provider]]
            name = "openai"
            addrs = ["127.10.0.1/32"]
            key = "team-a"
            [[provider]]
            name = "internal"
            hosts = ["llm.corp.example"]
            addrs = ["10.1.2.0/24"]
            [[provider]]
            name = "cohere"
            enabled = false
        "#));
        let openai = c.iter().find(|p| p.name == "openai").unwrap();
        assert_eq!(
            openai.hosts,
            vec![HostPattern::Exact("api.openai.com".into())]
        );
        assert_eq!(openai.key.as_deref(), Some("team-a"));
        assert!(c.match_host("llm.corp.example").is_some());
        assert!(c.iter().all(|p| p.name != "cohere"));
        let cidrs = c.static_cidrs();
        use gateway_common::{ADDR_PROVIDER as P, ADDR_SHARED as S};
        // Addresses written into the config are the provider's own unless the entry says shared,
        // even for a built-in behind a CDN (whose resolved addresses stay shared).
        assert_eq!(cidrs.get(&"127.10.0.1/32".parse().unwrap()), Some(&P));
        assert_eq!(cidrs.get(&"10.1.2.0/24".parse().unwrap()), Some(&P));
        assert_eq!(c.dns_name_flags("api.openai.com"), Some(P | S));
    }

    #[test]
    fn shared_declarations_and_published_ranges() {
        use gateway_common::{ADDR_PROVIDER as P, ADDR_SHARED as S};
        let c = Catalog::from_config(&cfg(r#"
            [[provider]]
            name = "gemini"
            shared = false
            [[provider]]
            name = "edge"
            hosts = ["llm.edge.example"]
            addrs = ["203.0.113.0/24"]
            shared = true
            [[provider]]
            name = "owner"
            hosts = ["llm.owner.example"]
            addrs = ["203.0.113.0/24"]
        "#));
        let find = |n: &str| c.iter().find(|p| p.name == n).unwrap().clone();
        assert!(
            !find("anthropic").shared,
            "Anthropic publishes addresses of its own"
        );
        assert!(find("openai").shared && find("azure-openai").shared && find("mistral").shared);
        assert!(!find("gemini").shared, "the config's declaration wins");
        let cidrs = c.static_cidrs();
        assert_eq!(cidrs.get(&"160.79.104.0/23".parse().unwrap()), Some(&P));
        assert_eq!(cidrs.get(&"2607:6bc0::/48".parse().unwrap()), Some(&P));
        assert_eq!(
            cidrs.get(&"203.0.113.0/24".parse().unwrap()),
            Some(&P),
            "an address one provider owns is owned, whoever else shares it"
        );
        assert_eq!(c.dns_name_flags("API.OpenAI.com."), Some(P | S));
        assert_eq!(c.dns_name_flags("x.openai.azure.com"), Some(P | S));
        assert_eq!(c.dns_name_flags("llm.owner.example"), Some(P));
        assert_eq!(c.dns_name_flags("example.com"), None);
    }

    #[test]
    fn builtins_can_be_switched_off() {
        let c = Catalog::from_config(&cfg("builtin_providers = false"));
        assert_eq!(c.iter().count(), 0);
    }

    #[test]
    fn globs_stand_for_one_label_or_part_of_one() {
        let bedrock = HostPattern::parse("bedrock-runtime.*.amazonaws.com").unwrap();
        assert!(bedrock.matches("bedrock-runtime.us-east-1.amazonaws.com"));
        assert!(bedrock.matches("BEDROCK-RUNTIME.eu-west-3.amazonaws.com."));
        for no in [
            "bedrock-runtime.amazonaws.com",
            "bedrock-runtime.a.b.amazonaws.com",
            "bedrock-runtime..amazonaws.com",
            "bedrock.us-east-1.amazonaws.com",
            "bedrock-runtime.us-east-1.amazonaws.com.evil.com",
        ] {
            assert!(!bedrock.matches(no), "{no}");
        }
        let vertex = HostPattern::parse("*-aiplatform.googleapis.com").unwrap();
        assert!(vertex.matches("us-central1-aiplatform.googleapis.com"));
        assert!(!vertex.matches("aiplatform.googleapis.com"));
        assert!(!vertex.matches("-aiplatform.googleapis.com"));
        assert!(!vertex.matches("a.b-aiplatform.googleapis.com"));
        assert!(!vertex.matches("us-central1-aiplatform.googleapis.com.x"));
        let mid = HostPattern::parse("a*b*c.example.com").unwrap();
        assert!(mid.matches("axbyc.example.com"));
        assert!(!mid.matches("abc.example.com"));
        assert_eq!(bedrock.exact(), None);
        for bad in ["*-x.com", "a.**.com", "*.*.example.com", "*.a*.example.com"] {
            assert!(HostPattern::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn host_patterns_reject_garbage() {
        assert!(HostPattern::parse("api.openai.com").is_ok());
        assert!(HostPattern::parse("*.openai.azure.com").is_ok());
        for bad in [
            "",
            "exa mple.com",
            "*.",
            "a..b",
            "-a.com",
            "http://x.com",
            "x.com/path",
        ] {
            assert!(HostPattern::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}

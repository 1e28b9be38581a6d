//! Providers: which hosts belong to which LLM API, and how each API behaves (DESIGN §6).
//!
//! The `provider` stage of the data path: the catalog the redirect stage resolves and the
//! intercept stage matches SNIs against, and one adapter module per API (credential placement,
//! error shape, endpoints, stream framing).

pub mod adapter;
pub mod anthropic;
pub mod azure;
pub mod compat;
pub mod gemini;
pub mod openai;
pub mod prompt;

use std::{collections::BTreeSet, sync::Arc};

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
    Azure,
    #[serde(rename = "openai-compatible")]
    OpenAiCompatible,
}

impl Api {
    pub fn adapter(self) -> &'static dyn Adapter {
        match self {
            Api::OpenAi => &openai::OpenAi,
            Api::Anthropic => &anthropic::Anthropic,
            Api::Gemini => &gemini::Gemini,
            Api::Azure => &azure::Azure,
            Api::OpenAiCompatible => &compat::Compat,
        }
    }
}

use crate::config::{Config, parse_cidr};

/// A host name as written in the config: exact, or `*.suffix` (SNI match only: a wildcard cannot
/// be resolved, so its addresses must come from `addrs` or from exact hosts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Exact(String),
    /// The suffix with its leading dot, lower case: `.openai.azure.com`.
    Suffix(String),
}

impl HostPattern {
    pub fn parse(s: &str) -> Result<Self, String> {
        let lower = s.trim_end_matches('.').to_ascii_lowercase();
        let (wild, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest.to_string()),
            None => (false, lower),
        };
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
                host.len() > sfx.len() && host[host.len() - sfx.len()..].eq_ignore_ascii_case(sfx)
            }
        }
    }
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
}

impl Provider {
    pub fn adapter(&self) -> &'static dyn Adapter {
        self.api.adapter()
    }

    /// Exact host names, the ones DNS can answer for.
    pub fn resolvable_hosts(&self) -> impl Iterator<Item = &str> {
        self.hosts.iter().filter_map(|h| match h {
            HostPattern::Exact(h) => Some(h.as_str()),
            HostPattern::Suffix(_) => None,
        })
    }
}

/// (name, hosts, API); the vault key name defaults to the provider name.
const BUILTIN: &[(&str, &[&str], Api)] = &[
    ("openai", &["api.openai.com"], Api::OpenAi),
    ("anthropic", &["api.anthropic.com"], Api::Anthropic),
    (
        "gemini",
        &["generativelanguage.googleapis.com"],
        Api::Gemini,
    ),
    (
        "azure-openai",
        &[
            "*.openai.azure.com",
            "*.cognitiveservices.azure.com",
            "*.services.ai.azure.com",
        ],
        Api::Azure,
    ),
    ("mistral", &["api.mistral.ai"], Api::OpenAiCompatible),
    ("groq", &["api.groq.com"], Api::OpenAiCompatible),
    ("deepseek", &["api.deepseek.com"], Api::OpenAiCompatible),
    ("xai", &["api.x.ai"], Api::OpenAiCompatible),
    ("openrouter", &["openrouter.ai"], Api::OpenAiCompatible),
    (
        "together",
        &["api.together.xyz", "api.together.ai"],
        Api::OpenAiCompatible,
    ),
    ("fireworks", &["api.fireworks.ai"], Api::OpenAiCompatible),
    (
        "cohere",
        &["api.cohere.com", "api.cohere.ai"],
        Api::OpenAiCompatible,
    ),
];

pub fn builtin_names() -> Vec<&'static str> {
    BUILTIN.iter().map(|(n, _, _)| *n).collect()
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
                .map(|(name, hosts, api)| Provider {
                    name: (*name).to_string(),
                    hosts: hosts
                        .iter()
                        .map(|h| HostPattern::parse(h).expect("built-in host is valid"))
                        .collect(),
                    addrs: Vec::new(),
                    key: Some((*name).to_string()),
                    api: *api,
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
                    p.addrs = addrs;
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

    /// Every static CIDR of every provider.
    pub fn static_cidrs(&self) -> BTreeSet<IpNet> {
        self.providers
            .iter()
            .flat_map(|p| p.addrs.iter().copied())
            .collect()
    }

    /// Every exact host name to resolve, deduplicated.
    pub fn resolvable_hosts(&self) -> BTreeSet<String> {
        self.providers
            .iter()
            .flat_map(|p| p.resolvable_hosts().map(str::to_string).collect::<Vec<_>>())
            .collect()
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
            "azure-openai",
            "mistral",
            "groq",
            "deepseek",
            "xai",
            "openrouter",
            "together",
            "fireworks",
            "cohere",
        ] {
            assert!(c.iter().any(|p| p.name == name), "{name} missing");
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
        assert!(!c.resolvable_hosts().iter().any(|h| h.contains('*')));
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
        assert!(cidrs.contains(&"127.10.0.1/32".parse().unwrap()));
        assert!(cidrs.contains(&"10.1.2.0/24".parse().unwrap()));
    }

    #[test]
    fn builtins_can_be_switched_off() {
        let c = Catalog::from_config(&cfg("builtin_providers = false"));
        assert_eq!(c.iter().count(), 0);
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

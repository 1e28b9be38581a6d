//! `[fleet]` in the config: where the NATS JetStream bus is, this node's name, and how to
//! authenticate to the bus (a `.creds` file or a token from the environment, TLS with the
//! organisation's CA and optionally a client certificate). Absent: a single node, no bus.

use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

/// `[fleet]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct FleetConfig {
    /// The bus: `nats://HOST:PORT` or `tls://HOST:PORT` (several, comma-separated, for a
    /// NATS cluster).
    pub nats: String,
    /// This node's name on the bus and in fleet hold ids (`NODE:ID`); default: the host name
    /// up to its first dot. Letters, digits, `-` and `_` only (it is a NATS subject token).
    pub node: Option<String>,
    /// A NATS credentials file (`.creds`: user JWT + nkey seed), as `nsc` writes it.
    pub credentials: Option<PathBuf>,
    /// The name of an environment variable holding a NATS auth token (never the token).
    pub token_env: Option<String>,
    /// The CA that signed the NATS server's certificate (PEM); setting it requires TLS.
    pub tls_ca: Option<PathBuf>,
    /// A client certificate and key (PEM) for NATS servers that verify clients (mTLS).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Refuse a server that does not speak TLS. ID tokens travel on the bus with decisions:
    /// set this (with auth) on every production bus.
    pub require_tls: bool,
    /// How long a decision for a hold on another node waits for that node's answer.
    #[serde(with = "crate::config::dur")]
    pub decide_timeout: Duration,
    /// How long the bus keeps journal records (stream `GW_JOURNAL`, `max_age`).
    #[serde(with = "crate::config::dur")]
    pub journal_max_age: Duration,
    /// Stream replicas (1 for a single server; 3 in a NATS cluster).
    pub replicas: usize,
    /// Public keys (base64, Ed25519) of the nodes, by node name, that `journal verify
    /// --fleet` trusts instead of the keys the nodes announce on the bus (`GW_NODES`).
    pub node_keys: std::collections::BTreeMap<String, String>,
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            nats: String::new(),
            node: None,
            credentials: None,
            token_env: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            require_tls: false,
            decide_timeout: Duration::from_secs(2),
            journal_max_age: Duration::from_secs(90 * 86_400),
            replicas: 1,
            node_keys: Default::default(),
        }
    }
}

/// A node name is one NATS subject token and the part of a fleet id before `:`.
pub fn valid_node(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err("must be 1 to 64 characters".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(format!(
            "`{c}` is not allowed: letters, digits, `-` and `_` only (a NATS subject token and \
             the part of a fleet hold id before `:`)"
        ));
    }
    Ok(())
}

/// The host name up to its first dot, with anything a node name cannot hold made `-`.
pub fn host_node() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    let short: String = host
        .split('.')
        .next()
        .unwrap_or("")
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if short.is_empty() {
        "node".into()
    } else {
        short
    }
}

impl FleetConfig {
    pub fn validate(&self) -> Result<(), (String, String)> {
        let bad = |k: &str, r: String| Err((format!("fleet.{k}"), r));
        if self.nats.trim().is_empty() {
            return bad(
                "nats",
                "is required in [fleet]: the NATS JetStream bus, like \"nats://nats.internal:4222\" \
                 (remove [fleet] for a single node)"
                    .into(),
            );
        }
        for url in self.nats.split(',') {
            let url = url.trim();
            let Some((scheme, rest)) = url.split_once("://") else {
                return bad(
                    "nats",
                    format!("`{url}` is not a URL like nats://HOST:PORT or tls://HOST:PORT"),
                );
            };
            if !matches!(scheme, "nats" | "tls") {
                return bad(
                    "nats",
                    format!("`{url}`: the scheme must be nats:// or tls://, not {scheme}://"),
                );
            }
            if rest.contains('@') {
                return bad(
                    "nats",
                    "must not carry a user or password: put them in a credentials file \
                     (fleet.credentials) or the token in an environment variable \
                     (fleet.token_env)"
                        .into(),
                );
            }
            if rest.is_empty() {
                return bad("nats", format!("`{url}` names no host"));
            }
        }
        if let Some(n) = &self.node {
            valid_node(n).map_err(|r| ("fleet.node".to_string(), r))?;
        }
        if self.credentials.is_some() && self.token_env.is_some() {
            return bad(
                "token_env",
                "give a credentials file or a token, not both".into(),
            );
        }
        if let Some(v) = &self.token_env
            && v.is_empty()
        {
            return bad("token_env", "empty variable name".into());
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return bad(
                "tls_cert",
                "tls_cert and tls_key go together (a client certificate and its key)".into(),
            );
        }
        if self.decide_timeout.is_zero() || self.decide_timeout > Duration::from_secs(60) {
            return bad(
                "decide_timeout",
                "must be above zero and at most 60s".into(),
            );
        }
        if self.journal_max_age.is_zero() {
            return bad(
                "journal_max_age",
                "must be above zero (the bus would keep no record)".into(),
            );
        }
        if !(1..=5).contains(&self.replicas) {
            return bad("replicas", "must be 1 to 5".into());
        }
        for (node, key) in &self.node_keys {
            valid_node(node).map_err(|r| (format!("fleet.node_keys.{node}"), r))?;
            if super::sign::public_key(key).is_err() {
                return bad(
                    &format!("node_keys.{node}"),
                    "is not a base64 Ed25519 public key (32 bytes), as `gateway fleet key` \
                     prints it"
                        .into(),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(s: &str) -> FleetConfig {
        toml::from_str(s).unwrap()
    }

    #[test]
    fn a_fleet_needs_a_nats_url_and_a_valid_node_name() {
        assert!(cfg("nats = \"nats://127.0.0.1:4222\"").validate().is_ok());
        assert!(
            cfg("nats = \"tls://a:4222, tls://b:4222\"\nnode = \"runner_7-b\"")
                .validate()
                .is_ok()
        );
        let e = cfg("node = \"a\"").validate().unwrap_err();
        assert_eq!(e.0, "fleet.nats");
        let e = cfg("nats = \"http://x:1\"").validate().unwrap_err();
        assert!(e.1.contains("nats://"), "{e:?}");
        let e = cfg("nats = \"nats://u:p@x:1\"").validate().unwrap_err();
        assert!(e.1.contains("credentials file"), "{e:?}");
        let e = cfg("nats = \"nats://x:1\"\nnode = \"a.b\"")
            .validate()
            .unwrap_err();
        assert_eq!(e.0, "fleet.node");
        let e = cfg("nats = \"nats://x:1\"\nnode = \"a:1\"")
            .validate()
            .unwrap_err();
        assert_eq!(e.0, "fleet.node");
        let e = cfg("nats = \"nats://x:1\"\ntls_cert = \"/c\"")
            .validate()
            .unwrap_err();
        assert_eq!(e.0, "fleet.tls_cert");
        let e = cfg("nats = \"nats://x:1\"\n[node_keys]\na = \"nope\"")
            .validate()
            .unwrap_err();
        assert_eq!(e.0, "fleet.node_keys.a");
    }

    #[test]
    fn the_default_node_name_is_a_valid_subject_token() {
        let n = host_node();
        assert!(valid_node(&n).is_ok(), "{n}");
    }
}

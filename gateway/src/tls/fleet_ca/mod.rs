//! One CA for the fleet (issue 17, `deploy/docs/fleet-ca.md`): an organisation root kept in a
//! vault signs a short-lived intermediate for each node; leaves are signed by the intermediate
//! and served with the chain, so a workload that trusts the root once trusts every node.
//!
//! Where the root is (`[ca] root`):
//! - `local` (default): no fleet root; each node keeps its own CA in `<state_dir>/ca`.
//! - `file`: root certificate + PKCS#8 key files (the key 0600/0400 and owned by us, or refused).
//! - `vault-pki`: a HashiCorp Vault PKI mount holds the root; the node sends a CSR for its own
//!   key to `POST /v1/<mount>/root/sign-intermediate`. The root key never reaches the node.
//! - `kubernetes`: a `kubernetes.io/tls` Secret (`tls.crt`, `tls.key`) read through the API
//!   server with the pod's service-account token.
//!
//! For `file` and `kubernetes` the root key is read at each signing, used once and dropped
//! (its PEM is zeroed). The node's intermediate key is generated in memory at each issuance
//! and never written anywhere. [`renew`] keeps the intermediate fresh.

pub mod renew;
pub mod show;
pub mod sign;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::issuing::Issuing;
use crate::{config::Config, vault::hashicorp::Hashicorp};

/// Where the organisation root is kept.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RootKind {
    /// No fleet root: the node's own CA (`<state_dir>/ca`).
    #[default]
    Local,
    File,
    VaultPki,
    Kubernetes,
}

impl RootKind {
    pub fn name(self) -> &'static str {
        match self {
            RootKind::Local => "local",
            RootKind::File => "file",
            RootKind::VaultPki => "vault-pki",
            RootKind::Kubernetes => "kubernetes",
        }
    }
}

/// `[ca]` in the config.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CaConfig {
    pub root: RootKind,
    /// This node's name in its intermediate's subject; default: `[fleet] node`, else the
    /// host name ([`crate::config::Config::node_name`]).
    pub node: Option<String>,
    /// Life of a node intermediate; renewed at two thirds of it.
    #[serde(with = "crate::config::dur")]
    pub intermediate_ttl: Duration,
    /// Name constraints on the intermediate (permitted DNS subtrees, e.g. `openai.com`); empty:
    /// none. Every provider host the gateway intercepts must be inside one of them.
    pub permitted_dns: Vec<String>,
    pub file: FileRoot,
    pub vault_pki: VaultPki,
    pub kubernetes: KubernetesRoot,
}

impl Default for CaConfig {
    fn default() -> Self {
        Self {
            root: RootKind::Local,
            node: None,
            intermediate_ttl: Duration::from_secs(24 * 3600),
            permitted_dns: Vec::new(),
            file: FileRoot::default(),
            vault_pki: VaultPki::default(),
            kubernetes: KubernetesRoot::default(),
        }
    }
}

/// `[ca.file]`: the root as two PEM files.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileRoot {
    /// The root certificate (PEM). Certificates after the first are its issuers (an offline
    /// root above a signing CA): served in the chain, the last one is what clients trust.
    pub cert: Option<PathBuf>,
    /// The root's private key, PKCS#8 PEM (`BEGIN PRIVATE KEY`), mode 0600 or 0400.
    pub key: Option<PathBuf>,
}

/// `[ca.vault_pki]`: Vault's address and login are `[vault.hashicorp]`'s.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct VaultPki {
    /// The PKI secrets engine mount holding the root.
    pub mount: String,
    /// Sign with this issuer of the mount (Vault ≥ 1.11) instead of its default one.
    pub issuer_ref: Option<String>,
}

impl Default for VaultPki {
    fn default() -> Self {
        Self {
            mount: "pki".into(),
            issuer_ref: None,
        }
    }
}

/// `[ca.kubernetes]`: the API server and token are `[kubernetes]`'s.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct KubernetesRoot {
    /// `NAMESPACE/NAME` of a `kubernetes.io/tls` Secret holding the root.
    pub secret: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum FleetCaError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "fleet root key {path} has mode {mode:o}: it must be readable by its owner only \
         (chmod 600 or 400)"
    )]
    KeyPermissions { path: PathBuf, mode: u32 },
    #[error("fleet root: {0}")]
    Root(String),
    #[error("fleet root in Vault PKI: {0}")]
    Vault(String),
    #[error("fleet root in Kubernetes: {0}")]
    Kubernetes(String),
    #[error("signing the node intermediate: {0}")]
    Sign(String),
}

impl CaConfig {
    /// Config-time checks: `(key, reason)` of the first problem.
    pub fn validate(&self, cfg: &Config) -> Result<(), (String, String)> {
        let bad = |k: &str, r: String| Err((format!("ca.{k}"), r));
        if self.root == RootKind::Local {
            return Ok(());
        }
        if self.intermediate_ttl < Duration::from_secs(3) {
            return bad("intermediate_ttl", "must be at least 3s".into());
        }
        if self.intermediate_ttl > Duration::from_secs(30 * 86_400) {
            return bad(
                "intermediate_ttl",
                "must be at most 30d (node intermediates are short-lived)".into(),
            );
        }
        if let Some(n) = &self.node
            && (n.is_empty() || n.len() > 64 || n.chars().any(|c| c.is_control()))
        {
            return bad("node", "must be 1 to 64 printable characters".into());
        }
        for (i, d) in self.permitted_dns.iter().enumerate() {
            let ok = !d.is_empty()
                && d.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                });
            if !ok {
                return bad(
                    &format!("permitted_dns[{i}]"),
                    format!("`{d}` is not a DNS name (like openai.com)"),
                );
            }
        }
        match self.root {
            RootKind::Local => Ok(()),
            RootKind::File => {
                for (k, p) in [("file.cert", &self.file.cert), ("file.key", &self.file.key)] {
                    match p {
                        None => return bad(k, "is required with root = \"file\"".into()),
                        Some(p) if !p.is_absolute() => {
                            return bad(k, "must be an absolute path".into());
                        }
                        _ => {}
                    }
                }
                Ok(())
            }
            RootKind::VaultPki => {
                let m = self.vault_pki.mount.trim_matches('/');
                if m.is_empty() || m.contains(['?', '#', ' ']) {
                    return bad("vault_pki.mount", "must name a PKI mount".into());
                }
                cfg.vault.hashicorp.validate().map_err(|r| {
                    (
                        "vault.hashicorp".to_string(),
                        format!("{r} (ca.root = \"vault-pki\" logs in with it)"),
                    )
                })
            }
            RootKind::Kubernetes => match &self.kubernetes.secret {
                Some(s) if secret_ref(s).is_some() => Ok(()),
                Some(s) => bad("kubernetes.secret", format!("`{s}` is not NAMESPACE/NAME")),
                None => bad(
                    "kubernetes.secret",
                    "is required with root = \"kubernetes\" (NAMESPACE/NAME)".into(),
                ),
            },
        }
    }
}

/// `NAMESPACE/NAME` with both parts DNS-1123 labels/subdomains.
fn secret_ref(s: &str) -> Option<(&str, &str)> {
    let (ns, name) = s.split_once('/')?;
    let ok = |p: &str| {
        !p.is_empty()
            && p.len() <= 253
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
    };
    (ok(ns) && ok(name) && !ns.contains('.')).then_some((ns, name))
}

/// What a node asks for.
#[derive(Debug, Clone)]
pub struct Request {
    pub node: String,
    pub ttl: Duration,
    pub permitted_dns: Vec<String>,
}

/// A configured fleet root: where intermediates and the trust anchor come from.
pub enum RootSource {
    File {
        cert: PathBuf,
        key: PathBuf,
    },
    VaultPki {
        vault: Box<Hashicorp>,
        mount: String,
        issuer_ref: Option<String>,
    },
    Kubernetes {
        k8s: crate::redirect::pods::KubernetesConfig,
        api: String,
        namespace: String,
        name: String,
    },
}

impl RootSource {
    /// The configured root, or `None` for `root = "local"`.
    pub fn from_config(cfg: &Config) -> Result<Option<Self>, FleetCaError> {
        let c = &cfg.ca;
        Ok(Some(match c.root {
            RootKind::Local => return Ok(None),
            RootKind::File => Self::File {
                cert: c
                    .file
                    .cert
                    .clone()
                    .ok_or_else(|| FleetCaError::Root("ca.file.cert is not set".into()))?,
                key: c
                    .file
                    .key
                    .clone()
                    .ok_or_else(|| FleetCaError::Root("ca.file.key is not set".into()))?,
            },
            RootKind::VaultPki => Self::VaultPki {
                vault: Box::new(
                    Hashicorp::new(cfg.vault.hashicorp.clone())
                        .map_err(|e| FleetCaError::Vault(e.to_string()))?,
                ),
                mount: c.vault_pki.mount.trim_matches('/').to_string(),
                issuer_ref: c.vault_pki.issuer_ref.clone(),
            },
            RootKind::Kubernetes => {
                let s = c.kubernetes.secret.as_deref().unwrap_or_default();
                let (namespace, name) = secret_ref(s).ok_or_else(|| {
                    FleetCaError::Kubernetes(format!(
                        "ca.kubernetes.secret `{s}` is not NAMESPACE/NAME"
                    ))
                })?;
                let api = crate::redirect::pods::api_url(&cfg.kubernetes).ok_or_else(|| {
                    FleetCaError::Kubernetes(
                        "no API server: set kubernetes.api, or run in a pod \
                         (KUBERNETES_SERVICE_HOST)"
                            .into(),
                    )
                })?;
                Self::Kubernetes {
                    k8s: cfg.kubernetes.clone(),
                    api,
                    namespace: namespace.into(),
                    name: name.into(),
                }
            }
        }))
    }

    /// Where the root is, for logs and `gateway ca show` (never a secret).
    pub fn describe(&self) -> String {
        match self {
            Self::File { cert, .. } => format!("file {}", cert.display()),
            Self::VaultPki { mount, .. } => format!("Vault PKI mount `{mount}`"),
            Self::Kubernetes {
                api,
                namespace,
                name,
                ..
            } => format!("Secret {namespace}/{name} at {api}"),
        }
    }

    /// The certificate workloads trust (PEM): the top of the root's chain.
    pub async fn anchor(&self) -> Result<String, FleetCaError> {
        let chain = match self {
            Self::File { cert, .. } => sign::pem_certs(&read(cert)?, &cert.display().to_string())?,
            Self::Kubernetes { .. } => self.secret().await?.0,
            Self::VaultPki {
                vault,
                mount,
                issuer_ref,
            } => {
                let path = match issuer_ref {
                    Some(r) => format!("/v1/{mount}/issuer/{r}"),
                    None => format!("/v1/{mount}/cert/ca"),
                };
                let v = vault
                    .request(http::Method::GET, &path, None)
                    .await
                    .map_err(|e| FleetCaError::Vault(e.to_string()))?;
                let pem = v["data"]["certificate"].as_str().ok_or_else(|| {
                    FleetCaError::Vault(format!("{path} answered without data.certificate"))
                })?;
                let mut chain = sign::pem_certs(pem, &path)?;
                // An issuer's own `ca_chain` reaches up to the root.
                if let Some(more) = v["data"]["ca_chain"].as_array() {
                    for c in more.iter().filter_map(|c| c.as_str()) {
                        for d in sign::pem_certs(c, &path)? {
                            if !chain.contains(&d) {
                                chain.push(d);
                            }
                        }
                    }
                }
                chain
            }
        };
        let top = chain.last().expect("pem_certs returns at least one");
        Ok(sign::to_pem(top))
    }

    /// A new intermediate for this node, signed by the root.
    pub async fn issue(&self, req: &Request) -> Result<Issuing, FleetCaError> {
        let now = time::OffsetDateTime::now_utc();
        match self {
            Self::File { cert, key } => {
                let chain = sign::pem_certs(&read(cert)?, &cert.display().to_string())?;
                let key_pem = read_key(key)?;
                sign::sign_locally(&chain, key_pem, req, now)
            }
            Self::Kubernetes { .. } => {
                let (chain, key_pem) = self.secret().await?;
                sign::sign_locally(&chain, key_pem, req, now)
            }
            Self::VaultPki {
                vault,
                mount,
                issuer_ref,
            } => {
                let (key, csr) = sign::csr(req)?;
                let mut body = serde_json::json!({
                    "csr": csr,
                    "common_name": sign::common_name(&req.node),
                    "ttl": format!("{}s", req.ttl.as_secs()),
                    "format": "pem",
                    "max_path_length": 0,
                    "exclude_cn_from_sans": true,
                    "use_csr_values": false,
                });
                if !req.permitted_dns.is_empty() {
                    body["permitted_dns_domains"] = serde_json::json!(req.permitted_dns);
                }
                if let Some(r) = issuer_ref {
                    body["issuer_ref"] = serde_json::json!(r);
                }
                let path = format!("/v1/{mount}/root/sign-intermediate");
                let v = vault
                    .request(http::Method::POST, &path, Some(body))
                    .await
                    .map_err(|e| FleetCaError::Vault(e.to_string()))?;
                let d = &v["data"];
                let cert = d["certificate"].as_str().ok_or_else(|| {
                    FleetCaError::Vault(format!("{path} answered without data.certificate"))
                })?;
                let mut issuers = Vec::new();
                let chain_pems: Vec<&str> = match d["ca_chain"].as_array() {
                    Some(a) if !a.is_empty() => a.iter().filter_map(|c| c.as_str()).collect(),
                    _ => d["issuing_ca"].as_str().into_iter().collect(),
                };
                for p in chain_pems {
                    issuers.extend(sign::pem_certs(p, &path)?);
                }
                sign::from_signed(key, cert, issuers)
            }
        }
    }

    /// The Secret's chain and key (`tls.crt` [+ `ca.crt`], `tls.key`).
    async fn secret(
        &self,
    ) -> Result<
        (
            Vec<rustls::pki_types::CertificateDer<'static>>,
            Zeroizing<String>,
        ),
        FleetCaError,
    > {
        let Self::Kubernetes {
            k8s,
            api,
            namespace,
            name,
        } = self
        else {
            unreachable!("secret() on a non-Kubernetes root")
        };
        let err = |m: String| FleetCaError::Kubernetes(format!("Secret {namespace}/{name}: {m}"));
        let token = crate::redirect::pods::token(k8s);
        let path = format!("/api/v1/namespaces/{namespace}/secrets/{name}");
        let body = Zeroizing::new(
            crate::redirect::pods::get(k8s, api, &path, token.as_deref())
                .await
                .map_err(err)?,
        );
        let v: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| err(format!("the API server's answer is not JSON: {e}")))?;
        let field = |f: &str| -> Result<Option<Zeroizing<String>>, FleetCaError> {
            let Some(b64) = v["data"][f].as_str() else {
                return Ok(None);
            };
            use base64::Engine as _;
            let raw = Zeroizing::new(
                base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|_| err(format!("data.{f} is not base64")))?,
            );
            String::from_utf8(raw.to_vec())
                .map(|s| Some(Zeroizing::new(s)))
                .map_err(|_| err(format!("data.{f} is not PEM text")))
        };
        let crt = field("tls.crt")?.ok_or_else(|| err("no data.tls.crt".into()))?;
        let key = field("tls.key")?.ok_or_else(|| err("no data.tls.key".into()))?;
        let mut chain = sign::pem_certs(&crt, "tls.crt")?;
        if let Some(ca) = field("ca.crt")? {
            for d in sign::pem_certs(&ca, "ca.crt")? {
                if !chain.contains(&d) {
                    chain.push(d);
                }
            }
        }
        Ok((chain, key))
    }
}

fn read(path: &Path) -> Result<String, FleetCaError> {
    std::fs::read_to_string(path).map_err(|source| FleetCaError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The root key file: refused unless only its owner can read it.
pub fn read_key(path: &Path) -> Result<Zeroizing<String>, FleetCaError> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::metadata(path).map_err(|source| FleetCaError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(FleetCaError::KeyPermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(Zeroizing::new(read(path)?))
}

/// Files the daemon writes so the CLI can tell which CA is in use (all public).
pub const ANCHOR_FILE: &str = "org-root.pem";
pub const INTERMEDIATE_FILE: &str = "intermediate.pem";
pub const STATUS_FILE: &str = "intermediate.json";

/// Write `pem` to `<state_dir>/ca/<name>` (0644, atomically).
pub fn write_public(state_dir: &Path, name: &str, text: &str) -> Result<PathBuf, FleetCaError> {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = super::ca::ca_dir(state_dir);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| FleetCaError::Io { path, source }
    };
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755));
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).map_err(io(&tmp))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    Ok(path)
}

#[cfg(test)]
mod tests;

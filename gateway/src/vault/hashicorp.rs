//! HashiCorp Vault backend: one KV v2 secret whose fields are the key names
//! (`GET {addr}/v1/{mount}/data/{path}` → `data.data.<name>`). Authentication with a token
//! (file or environment variable) or AppRole (`POST /v1/auth/approle/login`, re-login before the
//! token's lease runs out). The secret is cached for `cache_ttl`; when Vault cannot be reached
//! a cached copy keeps serving (logged), and without one the request fails closed.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tracing::warn;

use super::{Entry, Secret};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HashicorpConfig {
    /// `http://host:8200` or `https://host:8200`.
    pub addr: String,
    /// KV v2 mount.
    pub mount: String,
    /// Secret path under the mount; its fields are the key names.
    pub path: String,
    /// Token auth: a file holding the token, or an environment variable naming it.
    pub token_file: Option<PathBuf>,
    pub token_env: Option<String>,
    /// AppRole auth: role id and secret id, each from a file.
    pub role_id_file: Option<PathBuf>,
    pub secret_id_file: Option<PathBuf>,
    /// Enterprise namespace (`X-Vault-Namespace`).
    pub namespace: Option<String>,
    /// Extra CA for an https Vault.
    pub ca_file: Option<PathBuf>,
    #[serde(with = "crate::config::dur")]
    pub cache_ttl: Duration,
    #[serde(with = "crate::config::dur")]
    pub timeout: Duration,
}

impl Default for HashicorpConfig {
    fn default() -> Self {
        Self {
            addr: "http://127.0.0.1:8200".into(),
            mount: "secret".into(),
            path: "gateway".into(),
            token_file: None,
            token_env: None,
            role_id_file: None,
            secret_id_file: None,
            namespace: None,
            ca_file: None,
            cache_ttl: Duration::from_secs(300),
            timeout: Duration::from_secs(5),
        }
    }
}

impl HashicorpConfig {
    /// Config-time checks: an address, exactly one way to authenticate.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.addr.starts_with("http://") || self.addr.starts_with("https://")) {
            return Err(format!(
                "vault.hashicorp.addr `{}` must start with http:// or https://",
                self.addr
            ));
        }
        let token = self.token_file.is_some() || self.token_env.is_some();
        let approle = self.role_id_file.is_some() || self.secret_id_file.is_some();
        match (token, approle) {
            (true, true) => Err("vault.hashicorp: choose token_file/token_env or role_id_file + secret_id_file, not both".into()),
            (false, false) => Err("vault.hashicorp: set token_file, token_env, or role_id_file + secret_id_file".into()),
            (false, true) if self.role_id_file.is_none() || self.secret_id_file.is_none() => {
                Err("vault.hashicorp: AppRole needs both role_id_file and secret_id_file".into())
            }
            _ => Ok(()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HashicorpError {
    #[error("Vault at {addr}: {reason}")]
    Request { addr: String, reason: String },
    #[error("Vault auth: {0}")]
    Auth(String),
}

struct Token {
    value: Secret,
    /// When to log in again (AppRole); `None` for a static token.
    renew_at: Option<Instant>,
}

struct Cache {
    keys: BTreeMap<String, Entry>,
    fetched: Instant,
}

pub struct Hashicorp {
    cfg: HashicorpConfig,
    client: Client<hyper_rustls_free::Connector, Full<Bytes>>,
    token: Mutex<Option<Token>>,
    cache: Mutex<Option<Cache>>,
}

/// An https-or-http connector built from rustls and hyper-util's HttpConnector.
mod hyper_rustls_free {
    use std::{
        future::Future,
        pin::Pin,
        sync::Arc,
        task::{Context, Poll},
    };

    use hyper_util::{
        client::legacy::connect::{Connected, Connection, HttpConnector},
        rt::TokioIo,
    };
    use rustls::{ClientConfig, pki_types::ServerName};
    use tokio::net::TcpStream;

    type BoxError = Box<dyn std::error::Error + Send + Sync>;

    #[derive(Clone)]
    pub struct Connector {
        pub http: HttpConnector,
        pub tls: Arc<ClientConfig>,
    }

    pub enum Io {
        Plain(TokioIo<TcpStream>),
        Tls(Box<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>>),
    }

    impl Connection for Io {
        fn connected(&self) -> Connected {
            Connected::new()
        }
    }

    impl hyper::rt::Read for Io {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: hyper::rt::ReadBufCursor<'_>,
        ) -> Poll<std::io::Result<()>> {
            match self.get_mut() {
                Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
                Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            }
        }
    }

    impl hyper::rt::Write for Io {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            b: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            match self.get_mut() {
                Io::Plain(s) => Pin::new(s).poll_write(cx, b),
                Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, b),
            }
        }
        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            match self.get_mut() {
                Io::Plain(s) => Pin::new(s).poll_flush(cx),
                Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            }
        }
        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            match self.get_mut() {
                Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
                Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            }
        }
    }

    impl tower_service::Service<http::Uri> for Connector {
        type Response = Io;
        type Error = BoxError;
        type Future = Pin<Box<dyn Future<Output = Result<Io, BoxError>> + Send>>;

        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            self.http.poll_ready(cx).map_err(Into::into)
        }

        fn call(&mut self, uri: http::Uri) -> Self::Future {
            let mut http = self.http.clone();
            let tls = self.tls.clone();
            Box::pin(async move {
                let https = uri.scheme_str() == Some("https");
                let host = uri
                    .host()
                    .unwrap_or("")
                    .trim_matches(['[', ']'])
                    .to_string();
                let tcp = http.call(uri).await?.into_inner();
                if !https {
                    return Ok(Io::Plain(TokioIo::new(tcp)));
                }
                let name = ServerName::try_from(host)?;
                let s = tokio_rustls::TlsConnector::from(tls)
                    .connect(name, tcp)
                    .await?;
                Ok(Io::Tls(Box::new(TokioIo::new(s))))
            })
        }
    }
}

/// A field of the secret: the key as a string, or an object with `value` and the billing
/// fields `organization` and `project` (KV v2 values may be any JSON). Anything else is no entry
/// (logged by name, never by value).
fn entry(name: &str, v: &serde_json::Value) -> Option<Entry> {
    if let Some(s) = v.as_str() {
        return Some(Entry::new(Secret::new(s)));
    }
    let o = v.as_object();
    let text = |f: &str| o.and_then(|o| o.get(f)).and_then(|v| v.as_str());
    let known = o.is_some_and(|o| {
        o.iter().all(|(k, v)| {
            matches!(k.as_str(), "value" | "organization" | "project") && v.is_string()
        })
    });
    let field = |f: &str| text(f).filter(|v| super::valid_field(v)).map(String::from);
    match text("value") {
        Some(value) if known && !value.is_empty() => Some(Entry {
            key: Secret::new(value),
            organization: field("organization"),
            project: field("project"),
        }),
        _ => {
            warn!(
                field = name,
                "Vault: the field is neither a string nor an object of string `value`, \
                 `organization`, `project`; no key by this name"
            );
            None
        }
    }
}

fn read_trimmed(path: &PathBuf) -> Result<Secret, HashicorpError> {
    let s = std::fs::read_to_string(path)
        .map_err(|e| HashicorpError::Auth(format!("{}: {e}", path.display())))?;
    let s = s.trim();
    if s.is_empty() {
        return Err(HashicorpError::Auth(format!("{} is empty", path.display())));
    }
    Ok(Secret::new(s))
}

impl Hashicorp {
    pub fn new(cfg: HashicorpConfig) -> Result<Self, HashicorpError> {
        let extra: Vec<PathBuf> = cfg.ca_file.iter().cloned().collect();
        let roots =
            crate::upstream::pool::root_store(&extra).map_err(|e| HashicorpError::Request {
                addr: cfg.addr.clone(),
                reason: e.to_string(),
            })?;
        let tls = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| HashicorpError::Auth(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(cfg.timeout));
        let connector = hyper_rustls_free::Connector {
            http,
            tls: Arc::new(tls),
        };
        Ok(Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            cfg,
            token: Mutex::new(None),
            cache: Mutex::new(None),
        })
    }

    async fn call(
        &self,
        method: http::Method,
        path: &str,
        token: Option<&Secret>,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, HashicorpError> {
        let addr = self.cfg.addr.trim_end_matches('/');
        let err = |reason: String| HashicorpError::Request {
            addr: addr.to_string(),
            reason,
        };
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("{addr}{path}"));
        if let Some(t) = token {
            let mut v = http::HeaderValue::from_str(t.expose())
                .map_err(|_| HashicorpError::Auth("token is not a header value".into()))?;
            v.set_sensitive(true);
            req = req.header("x-vault-token", v);
        }
        if let Some(ns) = &self.cfg.namespace {
            req = req.header("x-vault-namespace", ns);
        }
        let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let req = req.body(Full::new(body)).map_err(|e| err(e.to_string()))?;
        let resp = tokio::time::timeout(self.cfg.timeout, self.client.request(req))
            .await
            .map_err(|_| err(format!("no answer within {:?}", self.cfg.timeout)))?
            .map_err(|e| err(e.to_string()))?;
        let status = resp.status();
        let bytes = tokio::time::timeout(self.cfg.timeout, resp.into_body().collect())
            .await
            .map_err(|_| err("body timed out".into()))?
            .map_err(|e| err(e.to_string()))?
            .to_bytes();
        if !status.is_success() {
            // Vault's error bodies hold messages, never the secret; keep them short anyway.
            let text = String::from_utf8_lossy(&bytes);
            return Err(err(format!(
                "{status}: {}",
                text.chars().take(200).collect::<String>()
            )));
        }
        serde_json::from_slice(&bytes).map_err(|e| err(format!("bad JSON: {e}")))
    }

    async fn token(&self) -> Result<Secret, HashicorpError> {
        let mut guard = self.token.lock().await;
        if let Some(t) = guard.as_ref()
            && t.renew_at.is_none_or(|at| Instant::now() < at)
        {
            return Ok(t.value.clone());
        }
        let token = if let Some(f) = &self.cfg.token_file {
            Token {
                value: read_trimmed(f)?,
                renew_at: None,
            }
        } else if let Some(var) = &self.cfg.token_env {
            let v = std::env::var(var).map_err(|_| {
                HashicorpError::Auth(format!("environment variable {var} is not set"))
            })?;
            Token {
                value: Secret::new(v),
                renew_at: None,
            }
        } else {
            let (Some(rf), Some(sf)) = (&self.cfg.role_id_file, &self.cfg.secret_id_file) else {
                return Err(HashicorpError::Auth("no auth configured".into()));
            };
            let role = read_trimmed(rf)?;
            let secret = read_trimmed(sf)?;
            let body = serde_json::json!({"role_id": role.expose(), "secret_id": secret.expose()});
            let v = self
                .call(
                    http::Method::POST,
                    "/v1/auth/approle/login",
                    None,
                    Some(body),
                )
                .await?;
            let client_token = v["auth"]["client_token"].as_str().ok_or_else(|| {
                HashicorpError::Auth("AppRole login answered without auth.client_token".into())
            })?;
            let lease = v["auth"]["lease_duration"].as_u64().unwrap_or(300).max(2);
            Token {
                value: Secret::new(client_token),
                // Log in again at two thirds of the lease.
                renew_at: Some(Instant::now() + Duration::from_secs(lease * 2 / 3)),
            }
        };
        let value = token.value.clone();
        *guard = Some(token);
        Ok(value)
    }

    async fn fetch(&self) -> Result<BTreeMap<String, Entry>, HashicorpError> {
        let token = self.token().await?;
        let path = format!(
            "/v1/{}/data/{}",
            self.cfg.mount.trim_matches('/'),
            self.cfg.path.trim_matches('/')
        );
        let v = match self
            .call(http::Method::GET, &path, Some(&token), None)
            .await
        {
            Err(HashicorpError::Request { reason, .. }) if reason.starts_with("403") => {
                // The token may have been revoked: forget it and try once more.
                *self.token.lock().await = None;
                let token = self.token().await?;
                self.call(http::Method::GET, &path, Some(&token), None)
                    .await?
            }
            other => other?,
        };
        let data = v["data"]["data"]
            .as_object()
            .ok_or_else(|| HashicorpError::Request {
                addr: self.cfg.addr.clone(),
                reason: format!("{path} has no data.data object (is the mount KV v2?)"),
            })?;
        Ok(data
            .iter()
            .filter_map(|(k, v)| entry(k, v).map(|e| (k.clone(), e)))
            .collect())
    }

    /// One authenticated API call (`path` from `/v1/...`) with this backend's address, token
    /// and namespace; a 403 forgets the token and tries once more. For other Vault engines
    /// than KV (the fleet CA's PKI mount: [`crate::tls::fleet_ca`]).
    pub async fn request(
        &self,
        method: http::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, HashicorpError> {
        let token = self.token().await?;
        match self
            .call(method.clone(), path, Some(&token), body.clone())
            .await
        {
            Err(HashicorpError::Request { reason, .. }) if reason.starts_with("403") => {
                *self.token.lock().await = None;
                let token = self.token().await?;
                self.call(method, path, Some(&token), body).await
            }
            other => other,
        }
    }

    pub async fn get(&self, name: &str) -> Result<Option<Entry>, HashicorpError> {
        let mut cache = self.cache.lock().await;
        let fresh = cache
            .as_ref()
            .is_some_and(|c| c.fetched.elapsed() < self.cfg.cache_ttl);
        if !fresh {
            match self.fetch().await {
                Ok(keys) => {
                    *cache = Some(Cache {
                        keys,
                        fetched: Instant::now(),
                    })
                }
                Err(e) if cache.is_some() => {
                    warn!(error = %e, "Vault unreachable; serving the cached keys");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(cache.as_ref().and_then(|c| c.keys.get(name).cloned()))
    }

    pub async fn list(&self) -> Result<Vec<String>, HashicorpError> {
        Ok(self.fetch().await?.into_keys().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_is_a_key_or_an_object_with_billing_fields() {
        let show = |v: serde_json::Value| {
            entry("k", &v).map(|e| (e.key.expose().to_string(), e.organization, e.project))
        };
        assert_eq!(
            show(serde_json::json!("sk-1")),
            Some(("sk-1".into(), None, None))
        );
        assert_eq!(
            show(
                serde_json::json!({"value": "sk-2", "organization": "org-x", "project": "proj_y"})
            ),
            Some(("sk-2".into(), Some("org-x".into()), Some("proj_y".into())))
        );
        for bad in [
            serde_json::json!(42),
            serde_json::json!({"organization": "org-x"}),
            serde_json::json!({"value": ""}),
            serde_json::json!({"value": "sk", "other": "x"}),
            serde_json::json!({"value": "sk", "project": 1}),
        ] {
            assert!(show(bad.clone()).is_none(), "{bad}");
        }
    }
}

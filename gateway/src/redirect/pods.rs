//! Pod names: the pod UID in a connection's cgroup path, turned into namespace/name through
//! the Kubernetes API (the pods on this node, listed every `kubernetes.refresh`). Without an
//! API server (or before the first list) the UID alone is known.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, RwLock},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

const SA: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// `[kubernetes]` in the config.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct KubernetesConfig {
    /// The API server; default: in cluster (`KUBERNETES_SERVICE_HOST`/`_PORT`) when set, else
    /// no lookups.
    pub api: Option<String>,
    /// Bearer token; default: the pod's service account token.
    pub token_file: Option<PathBuf>,
    /// CA of the API server (https); default: the service account's `ca.crt`.
    pub ca_file: Option<PathBuf>,
    /// Only this node's pods; default `$NODE_NAME` (downward API), else every pod.
    pub node_name: Option<String>,
    #[serde(with = "crate::config::dur")]
    pub refresh: Duration,
    /// Pods in these namespaces are not intercepted: their provider connections are passed
    /// through untouched (spliced, like non-provider traffic), so they need their own keys
    /// and nothing of theirs is masked, held or journaled. Needs the pod names (the API).
    pub exempt_namespaces: Vec<String>,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        Self {
            api: None,
            token_file: None,
            ca_file: None,
            node_name: None,
            refresh: Duration::from_secs(30),
            exempt_namespaces: Vec::new(),
        }
    }
}

/// pod UID → (namespace, name)
#[derive(Default)]
pub struct PodNames {
    map: RwLock<HashMap<String, (String, String)>>,
}

impl PodNames {
    pub fn get(&self, uid: &str) -> Option<(String, String)> {
        self.map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(uid)
            .cloned()
    }
}

/// The API server: `kubernetes.api`, else in cluster (`KUBERNETES_SERVICE_HOST`/`_PORT`).
pub fn api_url(cfg: &KubernetesConfig) -> Option<String> {
    cfg.api.clone().or_else(|| {
        let host = std::env::var("KUBERNETES_SERVICE_HOST").ok()?;
        let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
        Some(if host.contains(':') {
            format!("https://[{host}]:{port}")
        } else {
            format!("https://{host}:{port}")
        })
    })
}

/// The bearer token: `kubernetes.token_file`, else the pod's service account token.
pub fn token(cfg: &KubernetesConfig) -> Option<String> {
    let token_file = cfg
        .token_file
        .clone()
        .unwrap_or_else(|| PathBuf::from(SA).join("token"));
    std::fs::read_to_string(&token_file)
        .map(|t| t.trim().to_string())
        .ok()
}

/// Start listing pods when an API server is configured (or we run in a cluster).
pub fn start(cfg: &KubernetesConfig) -> Option<Arc<PodNames>> {
    let api = api_url(cfg)?;
    let names = Arc::new(PodNames::default());
    let out = names.clone();
    let cfg = cfg.clone();
    tokio::spawn(async move {
        let node = cfg
            .node_name
            .clone()
            .or_else(|| std::env::var("NODE_NAME").ok());
        let mut failures = 0u32;
        loop {
            match list(&cfg, &api, node.as_deref()).await {
                Ok(map) => {
                    if failures > 0 || out.map.read().map(|m| m.is_empty()).unwrap_or(true) {
                        info!(api = %api, pods = map.len(), "pod names from the Kubernetes API");
                    }
                    failures = 0;
                    *out.map.write().unwrap_or_else(|p| p.into_inner()) = map;
                }
                Err(e) => {
                    failures += 1;
                    if failures == 1 || failures.is_multiple_of(10) {
                        warn!(api = %api, error = %e, failures, "cannot list pods; identities keep the pod UID only");
                    }
                }
            }
            tokio::time::sleep(cfg.refresh).await;
        }
    });
    Some(names)
}

async fn list(
    cfg: &KubernetesConfig,
    api: &str,
    node: Option<&str>,
) -> Result<HashMap<String, (String, String)>, String> {
    let token = token(cfg);
    let mut path = "/api/v1/pods".to_string();
    if let Some(n) = node {
        path.push_str(&format!("?fieldSelector=spec.nodeName%3D{n}"));
    }
    let body = get(cfg, api, &path, token.as_deref()).await?;
    let v: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| format!("pod list is not JSON: {e}"))?;
    let mut map = HashMap::new();
    for item in v["items"].as_array().into_iter().flatten() {
        let m = &item["metadata"];
        if let (Some(uid), Some(ns), Some(name)) = (
            m["uid"].as_str(),
            m["namespace"].as_str(),
            m["name"].as_str(),
        ) {
            map.insert(uid.to_string(), (ns.to_string(), name.to_string()));
        }
    }
    Ok(map)
}

/// `GET path` on the API server (http or https with `kubernetes.ca_file`, else the service
/// account's CA); the body of a 2xx answer.
pub async fn get(
    cfg: &KubernetesConfig,
    api: &str,
    path: &str,
    token: Option<&str>,
) -> Result<Vec<u8>, String> {
    use http_body_util::BodyExt as _;
    let uri: http::Uri = api
        .parse()
        .map_err(|e| format!("kubernetes.api {api}: {e}"))?;
    let https = uri.scheme_str() == Some("https");
    let host = uri.host().ok_or("kubernetes.api has no host")?.to_string();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tcp = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port)),
    )
    .await
    .map_err(|_| "connect timed out".to_string())?
    .map_err(|e| format!("connect: {e}"))?;
    let mut req = http::Request::get(path).header(http::header::HOST, &host);
    if let Some(t) = token {
        req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = req
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| e.to_string())?;
    macro_rules! send {
        ($io:expr) => {{
            let (mut tx, conn) = hyper::client::conn::http1::handshake($io)
                .await
                .map_err(|e| format!("http: {e}"))?;
            tokio::spawn(conn);
            let resp = tx
                .send_request(req)
                .await
                .map_err(|e| format!("http: {e}"))?;
            if !resp.status().is_success() {
                return Err(format!("the API server answered {}", resp.status()));
            }
            resp.into_body()
                .collect()
                .await
                .map(|b| b.to_bytes().to_vec())
                .map_err(|e| format!("reading the answer: {e}"))
        }};
    }
    if !https {
        return send!(hyper_util::rt::TokioIo::new(tcp));
    }
    let ca_file = cfg
        .ca_file
        .clone()
        .unwrap_or_else(|| PathBuf::from(SA).join("ca.crt"));
    let pem = std::fs::read(&ca_file).map_err(|e| format!("{}: {e}", ca_file.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject as _;
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(&pem).flatten() {
        let _ = roots.add(c);
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_string())
        .map_err(|e| e.to_string())?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("tls: {e}"))?;
    send!(hyper_util::rt::TokioIo::new(stream))
}

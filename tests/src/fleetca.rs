//! The fleet CA's outside world (issue 17): an organisation root minted at test time, a fake
//! HashiCorp Vault PKI mount holding it (the real `root/sign-intermediate` and `cert/ca` wire
//! shapes: JSON bodies, `X-Vault-Token`, answers under `data`), and a fake Kubernetes API
//! server serving it as a `kubernetes.io/tls` Secret (the real Secret JSON, base64 `data`).
//! Both are plain HTTP on a loopback address the test chooses.

use std::{
    convert::Infallible,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use base64::Engine as _;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt as _, Full};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType, IsCa, Issuer,
    KeyPair, KeyUsagePurpose,
};
use serde_json::{Value, json};

/// An organisation root: self-signed CA (no path length limit), ECDSA P-256, PKCS#8 key.
pub struct OrgRoot {
    pub cert_pem: String,
    pub key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl OrgRoot {
    pub fn new(name: &str) -> Self {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.distinguished_name
            .push(DnType::OrganizationName, "Example Org");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = time_now();
        p.not_before = now - ::time::Duration::days(1);
        p.not_after = now + ::time::Duration::days(3650);
        let cert = p.self_signed(&key).unwrap();
        Self {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            issuer: Issuer::new(p, key),
        }
    }

    /// Write `root.pem` (0644) and `root-key.pem` (0600) into `dir`.
    pub fn write(&self, dir: &Path) -> (PathBuf, PathBuf) {
        use std::os::unix::fs::PermissionsExt as _;
        let cert = dir.join("root.pem");
        let key = dir.join("root-key.pem");
        std::fs::write(&cert, &self.cert_pem).unwrap();
        std::fs::write(&key, &self.key_pem).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        (cert, key)
    }
}

fn time_now() -> ::time::OffsetDateTime {
    ::time::OffsetDateTime::now_utc()
}

/// One sign-intermediate call as the fake Vault saw it (its JSON body).
#[derive(Debug, Clone)]
pub struct SignCall {
    pub body: Value,
}

type Handler = Arc<dyn Fn(&str, &str, Option<&str>, &[u8]) -> (u16, Value) + Send + Sync>;

/// A loopback HTTP server answering JSON through `handler(method, path+query, auth, body)`.
struct JsonServer {
    addr: SocketAddr,
    _rt: tokio::runtime::Runtime,
}

impl JsonServer {
    fn start(bind: SocketAddr, auth_header: &'static str, handler: Handler) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind(bind))
            .unwrap_or_else(|e| panic!("fake server cannot bind {bind}: {e}"));
        let addr = listener.local_addr().unwrap();
        rt.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let h = handler.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let h = h.clone();
                        async move {
                            let method = req.method().to_string();
                            let target = req
                                .uri()
                                .path_and_query()
                                .map(|p| p.to_string())
                                .unwrap_or_default();
                            let auth = req
                                .headers()
                                .get(auth_header)
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_string);
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let (status, v) = h(&method, &target, auth.as_deref(), &body);
                            Ok::<_, Infallible>(
                                Response::builder()
                                    .status(status)
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from(v.to_string())))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        Self { addr, _rt: rt }
    }
}

pub const VAULT_TOKEN: &str = "hvs.fake-pki-token-7731";

/// A fake Vault whose PKI mount `pki` holds `root`.
pub struct FakeVaultPki {
    pub addr: SocketAddr,
    pub calls: Arc<Mutex<Vec<SignCall>>>,
    _srv: JsonServer,
}

impl FakeVaultPki {
    pub fn start(bind: SocketAddr, root: OrgRoot) -> Self {
        let calls: Arc<Mutex<Vec<SignCall>>> = Arc::default();
        let c = calls.clone();
        let root = Arc::new(root);
        let handler: Handler = Arc::new(move |method, target, token, body| {
            if token != Some(VAULT_TOKEN) {
                return (403, json!({"errors": ["permission denied"]}));
            }
            match (method, target) {
                ("GET", "/v1/pki/cert/ca") => (
                    200,
                    json!({"data": {"certificate": root.cert_pem, "revocation_time": 0}}),
                ),
                ("POST" | "PUT", "/v1/pki/root/sign-intermediate") => {
                    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
                    match sign(&root, &v) {
                        Ok(resp) => {
                            c.lock().unwrap().push(SignCall { body: v });
                            (200, resp)
                        }
                        Err(e) => (400, json!({"errors": [e]})),
                    }
                }
                _ => (404, json!({"errors": []})),
            }
        });
        let srv = JsonServer::start(bind, "x-vault-token", handler);
        Self {
            addr: srv.addr,
            calls,
            _srv: srv,
        }
    }
}

/// What Vault's `root/sign-intermediate` does with a request (the parts the gateway uses):
/// `csr` and `common_name` required, `ttl` (`Ns`), `max_path_length`, `permitted_dns_domains`;
/// answers `certificate`, `issuing_ca`, `ca_chain`, `serial_number`, `expiration`.
fn sign(root: &OrgRoot, v: &Value) -> Result<Value, String> {
    let csr = v["csr"].as_str().ok_or("missing required field csr")?;
    let cn = v["common_name"]
        .as_str()
        .ok_or("missing required field common_name")?;
    let ttl: i64 = match v["ttl"].as_str() {
        Some(t) => t
            .trim_end_matches('s')
            .parse()
            .map_err(|_| format!("bad ttl {t}"))?,
        None => 3600,
    };
    let mut req = CertificateSigningRequestParams::from_pem(csr).map_err(|e| e.to_string())?;
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(match v["max_path_length"].as_i64() {
        Some(n) if n >= 0 => BasicConstraints::Constrained(n as u8),
        _ => BasicConstraints::Unconstrained,
    });
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    if let Some(d) = v["permitted_dns_domains"].as_array() {
        p.name_constraints = Some(rcgen::NameConstraints {
            permitted_subtrees: d
                .iter()
                .filter_map(|s| s.as_str())
                .map(|s| rcgen::GeneralSubtree::DnsName(s.into()))
                .collect(),
            excluded_subtrees: Vec::new(),
        });
    }
    let now = time_now();
    p.not_before = now - ::time::Duration::seconds(30);
    p.not_after = now + ::time::Duration::seconds(ttl);
    let mut serial: [u8; 16] =
        std::array::from_fn(|i| (i as u8).wrapping_mul(37) ^ now.nanosecond() as u8);
    serial[0] = 0x11;
    p.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    p.use_authority_key_identifier_extension = true;
    req.params = p;
    let cert = req.signed_by(&root.issuer).map_err(|e| e.to_string())?;
    let serial_hex = serial
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    Ok(json!({
            "request_id": "5e8f3c2a-0000-4000-8000-000000000001",
            "lease_id": "", "renewable": false, "lease_duration": 0,
            "data": {
                "certificate": cert.pem(),
                "issuing_ca": root.cert_pem,
                "ca_chain": [root.cert_pem],
                "serial_number": serial_hex,
                "expiration": (now + ::time::Duration::seconds(ttl)).unix_timestamp(),
            },
            "wrap_info": null, "warnings": null, "auth": null
    }))
}

pub const SA_TOKEN: &str = "sa-token-fleet-ca-1";

/// A fake API server with one `kubernetes.io/tls` Secret (`namespace/name`) holding `root`,
/// readable with the bearer [`SA_TOKEN`]; the pod list is empty.
pub struct FakeKubeApi {
    pub addr: SocketAddr,
    pub reads: Arc<Mutex<usize>>,
    _srv: JsonServer,
}

impl FakeKubeApi {
    pub fn start(bind: SocketAddr, namespace: &str, name: &str, root: &OrgRoot) -> Self {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let secret = json!({
            "kind": "Secret", "apiVersion": "v1",
            "metadata": {"name": name, "namespace": namespace, "uid": "9d0c7b4e-1f2a-4c3b-8d5e-6f7a8b9c0d1e", "resourceVersion": "4711"},
            "type": "kubernetes.io/tls",
            "data": {"tls.crt": b64(&root.cert_pem), "tls.key": b64(&root.key_pem)}
        });
        let path = format!("/api/v1/namespaces/{namespace}/secrets/{name}");
        let reads: Arc<Mutex<usize>> = Arc::default();
        let r = reads.clone();
        let handler: Handler = Arc::new(move |method, target, auth, _| {
            let forbidden = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403});
            if auth != Some(&format!("Bearer {SA_TOKEN}")) {
                return (403, forbidden);
            }
            if method != "GET" {
                return (405, forbidden);
            }
            if target == path {
                *r.lock().unwrap() += 1;
                return (200, secret.clone());
            }
            if target.starts_with("/api/v1/pods") {
                return (
                    200,
                    json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": []}),
                );
            }
            (
                404,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}),
            )
        });
        let srv = JsonServer::start(bind, "authorization", handler);
        Self {
            addr: srv.addr,
            reads,
            _srv: srv,
        }
    }
}

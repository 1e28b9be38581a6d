//! The gateway's own HTTPS listeners (the admin API over HTTPS, the approval page): a
//! certificate from the internal CA for the names the operator lists, and the accept loop.
//!
//! Not on the data path: these listeners serve people and their tools, never workloads. The
//! certificate is minted at start for `names` (DNS names or IP addresses, each a SAN), with
//! EKU serverAuth and seven days of life like the provider leaves, and minted again every day
//! so a long-running daemon never presents an expired one. Clients trust it as they trust the
//! gateway's CA (`gateway ca cert`).

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use hyper::{Request, Response, body::Incoming, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls::{
    ServerConfig,
    pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer},
    server::{ClientHello, ResolvesServerCert},
    sign::{CertifiedKey, SigningKey},
};
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tracing::{debug, warn};

use super::{TlsError, issuing::IssuingHandle};

/// Mint the listener certificate again after this long (it lives seven days).
const REFRESH: Duration = Duration::from_secs(24 * 3600);
/// A client that has not finished its TLS handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// ... nor sent its request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once per listener; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 256;

/// The certificate of one listener: minted for its names, re-minted daily.
pub struct ListenerCert {
    /// Who signs it: the node's CA, or its current fleet intermediate (the certificate is
    /// minted again when that changes, and never outlives it).
    issuing: IssuingHandle,
    names: Vec<String>,
    key: KeyPair,
    signing: Arc<dyn SigningKey>,
    /// The certificate, when it was minted, and the issuing generation that signed it.
    current: Mutex<(Arc<CertifiedKey>, Instant, u64)>,
}

impl std::fmt::Debug for ListenerCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerCert")
            .field("names", &self.names)
            .field("key", &"[redacted]")
            .finish()
    }
}

impl ListenerCert {
    pub fn new(issuing: IssuingHandle, names: &[String]) -> Result<Self, TlsError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(|e| TlsError::Ca(e.to_string()))?;
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signing = super::provider()
            .key_provider
            .load_private_key(der)
            .map_err(|e| TlsError::Ca(format!("listener key: {e}")))?;
        let names = names.to_vec();
        let (first, generation) = mint(&issuing, &names, &key, &signing)?;
        Ok(Self {
            issuing,
            names,
            key,
            signing,
            current: Mutex::new((first, Instant::now(), generation)),
        })
    }

    /// A rustls server config presenting this certificate (HTTP/1.1 only).
    pub fn server_config(self: Arc<Self>) -> Result<Arc<ServerConfig>, TlsError> {
        let mut cfg = ServerConfig::builder_with_provider(super::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Ca(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(self);
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }
}

fn mint(
    issuing: &IssuingHandle,
    names: &[String],
    key: &KeyPair,
    signing: &Arc<dyn SigningKey>,
) -> Result<(Arc<CertifiedKey>, u64), TlsError> {
    let now = OffsetDateTime::now_utc();
    let iss = issuing.current();
    iss.check_usable(now)?;
    let label = names.join(",");
    let bad = |e: rcgen::Error| TlsError::Mint(label.clone(), e.to_string());
    let mut params = CertificateParams::new(names.to_vec()).map_err(bad)?;
    params
        .distinguished_name
        .push(DnType::CommonName, names.first().map_or("gateway", |n| n));
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.serial_number = Some(super::ca::random_serial());
    params.use_authority_key_identifier_extension = true;
    params.not_before = iss.not_before.map_or(now - time::Duration::days(2), |nb| {
        nb.max(now - time::Duration::days(2))
    });
    let week = now + time::Duration::days(7);
    params.not_after = iss.not_after.map_or(week, |na| na.min(week));
    let cert = params.signed_by(key, iss.issuer()).map_err(bad)?;
    let mut chain = vec![cert.der().clone()];
    chain.extend(iss.chain.iter().cloned());
    Ok((
        Arc::new(CertifiedKey::new(chain, signing.clone())),
        iss.generation,
    ))
}

impl ResolvesServerCert for ListenerCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let renewed = self.issuing.current().generation != cur.2;
        if cur.1.elapsed() > REFRESH || renewed {
            match mint(&self.issuing, &self.names, &self.key, &self.signing) {
                Ok((c, g)) => *cur = (c, Instant::now(), g),
                // A certificate whose issuer has expired is served to no one (fail closed).
                Err(e @ TlsError::IntermediateExpired { .. }) => {
                    warn!(error = %e, "listener handshake refused");
                    return None;
                }
                // The old one is still valid (it never outlives its issuer): keep it, say so.
                Err(e) => warn!(error = %e, "cannot renew a listener certificate"),
            }
        }
        Some(cur.0.clone())
    }
}

/// Serve HTTPS on `listener` in the background: each request goes to `handler` with the
/// client's address. `what` names the listener in logs.
pub fn spawn<F, Fut, B>(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    what: &'static str,
    handler: F,
) where
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let (tcp, peer) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    warn!(listener = what, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let acceptor = acceptor.clone();
            let handler = handler.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
                {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        debug!(listener = what, %peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
                let svc = service_fn(move |req| {
                    let h = handler.clone();
                    async move { Ok::<_, Infallible>(h(req, peer).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::ca::Ca;

    /// The certificate names every listed name (DNS or IP), serves TLS that verifies against
    /// the CA, and is short-lived.
    #[tokio::test]
    async fn the_listener_certificate_names_the_listed_hosts_and_verifies() {
        let d = tempfile::tempdir().unwrap();
        let (ca, _) = Ca::load_or_create(d.path()).unwrap();
        let ca = Arc::new(ca);
        let names = vec!["approvals.example".to_string(), "127.0.0.1".to_string()];
        let issuing = IssuingHandle::new(crate::tls::issuing::Issuing::local(ca.clone()));
        let cert = Arc::new(ListenerCert::new(issuing, &names).unwrap());
        let cfg = cert.server_config().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        spawn(listener, cfg, "test", |_req, _peer| async {
            Response::new(http_body_util::Full::new(Bytes::from_static(b"hi")))
        });
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.cert_der.clone()).unwrap();
        let ccfg = Arc::new(
            rustls::ClientConfig::builder_with_provider(super::super::provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        );
        for name in ["approvals.example", "127.0.0.1"] {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let sn = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
            let tls = tokio_rustls::TlsConnector::from(ccfg.clone())
                .connect(sn, tcp)
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
            let (_, x) = x509_parser::parse_x509_certificate(&leaf).unwrap();
            let life = x.validity().not_after.timestamp() - x.validity().not_before.timestamp();
            assert!(life <= 10 * 86_400, "{life}");
        }
        // A name not listed does not verify.
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let sn = rustls::pki_types::ServerName::try_from("other.example".to_string()).unwrap();
        assert!(
            tokio_rustls::TlsConnector::from(ccfg)
                .connect(sn, tcp)
                .await
                .is_err()
        );
    }
}

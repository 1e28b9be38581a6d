//! Leaf certificates per SNI, minted by the current issuer ([`super::issuing`]: the internal
//! CA or this node's fleet intermediate) (DESIGN §5): EKU serverAuth, random serial, notBefore
//! now-2d, seven days of life (never past the issuer's own `notAfter`), SAN = the SNI, AKI = the
//! issuer's SKI, served with the issuer's chain. One leaf key pair serves every leaf. Cached by
//! name with a cap (oldest out first) and re-minted after a day or when the issuer changed (a
//! renewed intermediate); one mint in flight per name (the others wait for it). An issuer past
//! its expiry mints and serves nothing: the handshake fails (fail closed).

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::Instant,
};

use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls::{
    ServerConfig,
    crypto::CryptoProvider,
    pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer},
    sign::{CertifiedKey, SigningKey},
};
use time::{Duration, OffsetDateTime};
use tokio::sync::OnceCell;

use super::{
    TlsError,
    ca::Ca,
    issuing::{Issuing, IssuingHandle},
};

/// Re-mint a cached leaf after this long (leaves live seven days).
const REFRESH: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// A minted leaf: its server config, when it was minted, and by which issuer generation.
type Minted = (Arc<ServerConfig>, Instant, u64);

struct Entry {
    cell: Arc<OnceCell<Minted>>,
}

pub struct LeafCache {
    issuing: IssuingHandle,
    leaf_key: KeyPair,
    signing_key: Arc<dyn SigningKey>,
    provider: Arc<CryptoProvider>,
    cap: usize,
    entries: Mutex<(HashMap<String, Entry>, VecDeque<String>)>,
    mints: std::sync::atomic::AtomicU64,
}

impl LeafCache {
    /// Leaves signed by the node's own CA.
    pub fn new(ca: Arc<Ca>, provider: Arc<CryptoProvider>, cap: usize) -> Result<Self, TlsError> {
        Self::with_issuer(IssuingHandle::new(Issuing::local(ca)), provider, cap)
    }

    /// Leaves signed by whatever `issuing` holds at each mint.
    pub fn with_issuer(
        issuing: IssuingHandle,
        provider: Arc<CryptoProvider>,
        cap: usize,
    ) -> Result<Self, TlsError> {
        let leaf_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(|e| TlsError::Ca(e.to_string()))?;
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let signing_key = provider
            .key_provider
            .load_private_key(der)
            .map_err(|e| TlsError::Ca(format!("leaf key: {e}")))?;
        Ok(Self {
            issuing,
            leaf_key,
            signing_key,
            provider,
            cap: cap.max(1),
            entries: Mutex::new((HashMap::new(), VecDeque::new())),
            mints: Default::default(),
        })
    }

    /// How many leaves were minted so far.
    pub fn mints(&self) -> u64 {
        self.mints.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The server config presenting a leaf for `sni`, minted at most once at a time per name.
    pub async fn server_config(&self, sni: &str) -> Result<Arc<ServerConfig>, TlsError> {
        let name = sni.to_ascii_lowercase();
        let issuing = self.issuing.current();
        if let Err(e) = issuing.check_usable(OffsetDateTime::now_utc()) {
            tracing::error!(
                sni = %name,
                error = %e,
                "TLS interception refused: the node intermediate has expired and no renewal \
                 succeeded; check the fleet root (`[ca] root`) and `gateway ca show`"
            );
            return Err(e);
        }
        let generation = issuing.generation;
        let cell = {
            let mut guard = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            let (map, order) = &mut *guard;
            let stale = map
                .get(&name)
                .and_then(|e| e.cell.get())
                .is_some_and(|(_, at, by)| at.elapsed() > REFRESH || *by != generation);
            if stale {
                map.remove(&name);
                order.retain(|n| n != &name);
            }
            if !map.contains_key(&name) {
                while map.len() >= self.cap {
                    match order.pop_front() {
                        Some(old) => {
                            map.remove(&old);
                        }
                        None => break,
                    }
                }
                map.insert(
                    name.clone(),
                    Entry {
                        cell: Arc::new(OnceCell::new()),
                    },
                );
                order.push_back(name.clone());
            }
            map[&name].cell.clone()
        };
        if cell.initialized() {
            let m = crate::metrics::get();
            m.leaf_cache
                .get_or_create(&crate::metrics::ResultLabels {
                    result: "hit".into(),
                })
                .inc();
        }
        let (cfg, _, _) = cell
            .get_or_try_init(|| async {
                self.mint(&name, &issuing)
                    .map(|c| (c, Instant::now(), generation))
            })
            .await?;
        Ok(cfg.clone())
    }

    fn mint(&self, name: &str, issuing: &Issuing) -> Result<Arc<ServerConfig>, TlsError> {
        let mut params = CertificateParams::new(vec![name.to_string()])
            .map_err(|e| TlsError::Mint(name.into(), e.to_string()))?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.serial_number = Some(super::ca::random_serial());
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        // Within the issuer's validity: a leaf never outlives the intermediate it chains to.
        params.not_before = issuing
            .not_before
            .map_or(now - Duration::days(2), |b| b.max(now - Duration::days(2)));
        params.not_after = issuing
            .not_after
            .map_or(now + Duration::days(7), |e| e.min(now + Duration::days(7)));
        let cert = params
            .signed_by(&self.leaf_key, issuing.issuer())
            .map_err(|e| TlsError::Mint(name.into(), e.to_string()))?;
        let mut chain = vec![cert.der().clone()];
        chain.extend(issuing.chain.iter().cloned());
        let ck = CertifiedKey::new(chain, self.signing_key.clone());
        let mut cfg = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Mint(name.into(), e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Fixed(Arc::new(ck))));
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        self.mints
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        crate::metrics::get()
            .leaf_cache
            .get_or_create(&crate::metrics::ResultLabels {
                result: "mint".into(),
            })
            .inc();
        Ok(Arc::new(cfg))
    }
}

#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl rustls::server::ResolvesServerCert for Fixed {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(cap: usize) -> (tempfile::TempDir, Arc<LeafCache>) {
        let d = tempfile::tempdir().unwrap();
        let (ca, _) = Ca::load_or_create(d.path()).unwrap();
        let p = Arc::new(rustls::crypto::ring::default_provider());
        (d, Arc::new(LeafCache::new(Arc::new(ca), p, cap).unwrap()))
    }

    #[tokio::test]
    async fn one_mint_per_name_even_when_asked_concurrently() {
        let (_d, c) = cache(8);
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let c = c.clone();
                tokio::spawn(async move { c.server_config("api.openai.com").await.unwrap() })
            })
            .collect();
        let cfgs: Vec<_> = futures_util::future::join_all(tasks)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(c.mints(), 1);
        assert!(cfgs.iter().all(|x| Arc::ptr_eq(x, &cfgs[0])));
    }

    #[tokio::test]
    async fn the_cap_evicts_the_oldest() {
        let (_d, c) = cache(2);
        for n in ["a.example", "b.example", "c.example", "a.example"] {
            c.server_config(n).await.unwrap();
        }
        assert_eq!(
            c.mints(),
            4,
            "a.example was evicted by c.example and minted again"
        );
        c.server_config("c.example").await.unwrap();
        assert_eq!(c.mints(), 4);
    }
}

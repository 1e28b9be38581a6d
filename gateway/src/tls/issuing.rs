//! Who signs the leaves right now (DESIGN §5): the node's own CA, or — with a fleet root
//! (`[ca] root`, [`super::fleet_ca`]) — this node's current short-lived intermediate.
//!
//! The leaf cache reads [`IssuingHandle::current`] on every handshake; the renewal task swaps a
//! new intermediate in with [`IssuingHandle::replace`]. Each swap bumps a generation so cached
//! leaves of the old intermediate are minted again, and an intermediate past its `notAfter`
//! is never used ([`Issuing::check_usable`]): interception then refuses the handshake.

use std::sync::{Arc, RwLock};

use rcgen::{Issuer, KeyPair};
use rustls::pki_types::CertificateDer;
use time::OffsetDateTime;

use super::{TlsError, ca::Ca};

/// The signing key and certificate of leaves.
pub enum Signer {
    /// The node's own CA (`<state_dir>/ca`): no fleet root configured.
    Local(Arc<Ca>),
    /// A node intermediate signed by the organisation root; its key lives only in memory.
    Intermediate(Box<Issuer<'static, KeyPair>>),
}

/// One signing identity: what mints leaves and what is served after each leaf.
pub struct Issuing {
    pub signer: Signer,
    /// Served after the leaf, in order: the signing certificate, then the issuers above it
    /// up to (not including) the trust anchor.
    pub chain: Vec<CertificateDer<'static>>,
    /// Validity of the signing certificate; `None` for the local CA (ten years, not tracked).
    pub not_before: Option<OffsetDateTime>,
    pub not_after: Option<OffsetDateTime>,
    /// The signing certificate's serial, hex (for logs and `gateway ca show`).
    pub serial: String,
    /// Bumped on every replacement (0 for the first).
    pub generation: u64,
}

impl std::fmt::Debug for Issuing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuing")
            .field("serial", &self.serial)
            .field("not_after", &self.not_after)
            .field("generation", &self.generation)
            .field("key", &"[redacted]")
            .finish()
    }
}

impl Issuing {
    pub fn local(ca: Arc<Ca>) -> Self {
        let serial = x509_parser::parse_x509_certificate(&ca.cert_der)
            .map(|(_, x)| x.tbs_certificate.raw_serial_as_string())
            .unwrap_or_default();
        Self {
            chain: vec![ca.cert_der.clone()],
            signer: Signer::Local(ca),
            not_before: None,
            not_after: None,
            serial,
            generation: 0,
        }
    }

    pub fn issuer(&self) -> &Issuer<'static, KeyPair> {
        match &self.signer {
            Signer::Local(ca) => &ca.issuer,
            Signer::Intermediate(i) => i,
        }
    }

    /// Fail closed: an intermediate past its `notAfter` signs nothing and is served to no one.
    pub fn check_usable(&self, now: OffsetDateTime) -> Result<(), TlsError> {
        match self.not_after {
            Some(end) if now >= end => Err(TlsError::IntermediateExpired {
                serial: self.serial.clone(),
                expired: end,
            }),
            _ => Ok(()),
        }
    }
}

/// The current [`Issuing`], shared by the leaf cache (readers) and the renewal task (writer).
#[derive(Clone)]
pub struct IssuingHandle(Arc<RwLock<Arc<Issuing>>>);

impl IssuingHandle {
    pub fn new(first: Issuing) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(first))))
    }

    pub fn current(&self) -> Arc<Issuing> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Put `next` in place (its generation becomes the previous one's + 1); returns it.
    pub fn replace(&self, mut next: Issuing) -> Arc<Issuing> {
        let mut g = self.0.write().unwrap_or_else(|p| p.into_inner());
        next.generation = g.generation + 1;
        let next = Arc::new(next);
        *g = next.clone();
        next
    }
}

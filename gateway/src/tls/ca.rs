//! The internal CA (DESIGN §5): created on first start in `<state_dir>/ca/`, ECDSA P-256, ten
//! years, BasicConstraints CA (path length 0) and KeyUsage keyCertSign + cRLSign, both critical.
//! The key file is 0600 and never logged; a key file others can read is refused.

use std::{
    fs,
    io::Write as _,
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, SerialNumber,
};
use rustls::pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};

use super::TlsError;

pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca-key.pem";

/// The CA: its certificate (PEM and DER) and an issuer for leaves.
pub struct Ca {
    pub cert_pem: String,
    pub cert_der: CertificateDer<'static>,
    pub issuer: Issuer<'static, KeyPair>,
    pub dir: PathBuf,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("dir", &self.dir)
            .field("key", &"[redacted]")
            .finish()
    }
}

pub fn ca_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("ca")
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub fn random_serial() -> SerialNumber {
    let mut b: [u8; 16] = rand::random();
    b[0] &= 0x7f; // positive
    b[0] |= 0x01; // no leading zero byte
    SerialNumber::from_slice(&b)
}

impl Ca {
    /// Load the CA from `<state_dir>/ca`, creating it when absent. Returns whether it was created.
    pub fn load_or_create(state_dir: &Path) -> Result<(Self, bool), TlsError> {
        let dir = ca_dir(state_dir);
        if dir.join(CA_KEY).exists() || dir.join(CA_CERT).exists() {
            return Ok((Self::load(&dir)?, false));
        }
        Ok((Self::create(&dir)?, true))
    }

    fn load(dir: &Path) -> Result<Self, TlsError> {
        let key_path = dir.join(CA_KEY);
        let cert_path = dir.join(CA_CERT);
        let meta = fs::metadata(&key_path).map_err(io(&key_path))?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(TlsError::KeyPermissions {
                path: key_path,
                mode: meta.permissions().mode() & 0o777,
            });
        }
        let key_pem = fs::read_to_string(&key_path).map_err(io(&key_path))?;
        let cert_pem = fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
        let key = KeyPair::from_pem(&key_pem)
            .map_err(|e| TlsError::Ca(format!("{}: {e}", key_path.display())))?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)
            .map_err(|e| TlsError::Ca(format!("{}: {e}", cert_path.display())))?;
        let cert_der = rustls::pki_types::pem::PemObject::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| TlsError::Ca(format!("{}: {e}", cert_path.display())))?;
        Ok(Self {
            cert_pem,
            cert_der,
            issuer,
            dir: dir.to_path_buf(),
        })
    }

    fn create(dir: &Path) -> Result<Self, TlsError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o755));
        let mut params = CertificateParams::new(Vec::<String>::new())
            .map_err(|e| TlsError::Ca(e.to_string()))?;
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "localhost".into());
        params
            .distinguished_name
            .push(DnType::CommonName, format!("gateway internal CA ({host})"));
        params
            .distinguished_name
            .push(DnType::OrganizationName, "gateway");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::days(1);
        params.not_after = now + Duration::days(3650);
        params.serial_number = Some(random_serial());
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(|e| TlsError::Ca(e.to_string()))?;
        let cert = params
            .self_signed(&key)
            .map_err(|e| TlsError::Ca(e.to_string()))?;

        // Key first, created 0600 from the start (never briefly readable), never overwritten.
        let key_path = dir.join(CA_KEY);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&key_path)
            .map_err(io(&key_path))?;
        f.write_all(key.serialize_pem().as_bytes())
            .map_err(io(&key_path))?;
        f.sync_all().map_err(io(&key_path))?;
        let cert_path = dir.join(CA_CERT);
        let tmp = dir.join(".ca.pem.tmp");
        fs::write(&tmp, cert.pem()).map_err(io(&tmp))?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644)).map_err(io(&tmp))?;
        fs::rename(&tmp, &cert_path).map_err(io(&cert_path))?;
        Ok(Self {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
            dir: dir.to_path_buf(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_with_a_private_key_and_reused() {
        let d = tempfile::tempdir().unwrap();
        let (ca, created) = Ca::load_or_create(d.path()).unwrap();
        assert!(created);
        let key = d.path().join("ca").join(CA_KEY);
        assert_eq!(
            fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let (again, created) = Ca::load_or_create(d.path()).unwrap();
        assert!(!created);
        assert_eq!(ca.cert_pem, again.cert_pem);
        assert!(!format!("{ca:?}").contains("PRIVATE"));
    }

    #[test]
    fn ca_extensions_are_critical_and_constrained() {
        let d = tempfile::tempdir().unwrap();
        let (ca, _) = Ca::load_or_create(d.path()).unwrap();
        let (_, x) = x509_parser::parse_x509_certificate(&ca.cert_der).unwrap();
        let bc = x.basic_constraints().unwrap().unwrap();
        assert!(bc.critical && bc.value.ca);
        assert_eq!(bc.value.path_len_constraint, Some(0));
        let ku = x.key_usage().unwrap().unwrap();
        assert!(ku.critical && ku.value.key_cert_sign() && ku.value.crl_sign());
        assert!(!ku.value.digital_signature());
        let years = (x.validity().not_after.timestamp() - x.validity().not_before.timestamp())
            / 86_400
            / 365;
        assert!(years >= 10, "{years}");
    }

    #[test]
    fn a_readable_key_is_refused() {
        let d = tempfile::tempdir().unwrap();
        Ca::load_or_create(d.path()).unwrap();
        let key = d.path().join("ca").join(CA_KEY);
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
        let e = Ca::load_or_create(d.path()).unwrap_err().to_string();
        assert!(e.contains("0644") || e.contains("644"), "{e}");
    }
}

//! Building a node intermediate: signed here with a root key read for the purpose (`file`,
//! `kubernetes`), or from a CSR that Vault signs (`vault-pki`). Either way the result is an
//! [`Issuing`] whose chain is the intermediate followed by the root's issuers up to (not
//! including) the trust anchor.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, GeneralSubtree, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, NameConstraints, PKCS_ECDSA_P256_SHA256, PublicKeyData as _,
};
use rustls::pki_types::{CertificateDer, pem::PemObject as _};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::{FleetCaError, Request};
use crate::tls::issuing::{Issuing, Signer};

/// How far a locally signed intermediate's notBefore is backdated (clock skew between nodes).
pub const BACKDATE: time::Duration = time::Duration::minutes(5);

/// Every certificate in a PEM text; an error naming `origin` when there is none.
pub fn pem_certs(text: &str, origin: &str) -> Result<Vec<CertificateDer<'static>>, FleetCaError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(text.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| FleetCaError::Root(format!("{origin}: not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(FleetCaError::Root(format!(
            "{origin}: no certificate (BEGIN CERTIFICATE) in it"
        )));
    }
    Ok(certs)
}

pub fn to_pem(der: &CertificateDer<'_>) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

pub fn common_name(node: &str) -> String {
    format!("gateway node intermediate ({node})")
}

/// What a certificate says about itself that we check or report.
pub struct Facts {
    pub serial: String,
    pub subject: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub ca: bool,
    pub path_len: Option<u32>,
    pub spki: Vec<u8>,
}

pub fn facts(der: &CertificateDer<'_>) -> Result<Facts, FleetCaError> {
    let (_, x) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| FleetCaError::Root(format!("unreadable certificate: {e}")))?;
    let bc = x
        .basic_constraints()
        .map_err(|e| FleetCaError::Root(format!("bad basicConstraints: {e}")))?;
    Ok(Facts {
        serial: x.tbs_certificate.raw_serial_as_string(),
        subject: x.subject().to_string(),
        not_before: x.validity().not_before.to_datetime(),
        not_after: x.validity().not_after.to_datetime(),
        ca: bc.as_ref().is_some_and(|b| b.value.ca),
        path_len: bc.and_then(|b| b.value.path_len_constraint),
        spki: x.tbs_certificate.subject_pki.raw.to_vec(),
    })
}

/// The signing root must be a CA, valid now, and allow one CA below it.
fn check_root(f: &Facts, now: OffsetDateTime) -> Result<(), FleetCaError> {
    if !f.ca {
        return Err(FleetCaError::Root(format!(
            "{} is not a CA certificate (basicConstraints CA:TRUE)",
            f.subject
        )));
    }
    if f.path_len == Some(0) {
        return Err(FleetCaError::Root(format!(
            "{} has pathLenConstraint 0: it cannot sign a node intermediate (needs 1 or none)",
            f.subject
        )));
    }
    if now < f.not_before || now >= f.not_after {
        return Err(FleetCaError::Root(format!(
            "{} is not valid now (valid {} to {})",
            f.subject, f.not_before, f.not_after
        )));
    }
    Ok(())
}

fn params(req: &Request) -> Result<CertificateParams, FleetCaError> {
    let mut p = CertificateParams::new(Vec::<String>::new())
        .map_err(|e| FleetCaError::Sign(e.to_string()))?;
    p.distinguished_name
        .push(DnType::CommonName, common_name(&req.node));
    p.distinguished_name
        .push(DnType::OrganizationName, "gateway");
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    if !req.permitted_dns.is_empty() {
        p.name_constraints = Some(NameConstraints {
            permitted_subtrees: req
                .permitted_dns
                .iter()
                .map(|d| GeneralSubtree::DnsName(d.clone()))
                .collect(),
            excluded_subtrees: Vec::new(),
        });
    }
    Ok(p)
}

fn node_key() -> Result<KeyPair, FleetCaError> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| FleetCaError::Sign(e.to_string()))
}

/// Sign a fresh node intermediate with the root key in `key_pem` (dropped and zeroed on
/// return). `chain[0]` is the signing root; the rest are its issuers.
pub fn sign_locally(
    chain: &[CertificateDer<'static>],
    key_pem: Zeroizing<String>,
    req: &Request,
    now: OffsetDateTime,
) -> Result<Issuing, FleetCaError> {
    let root = facts(&chain[0])?;
    check_root(&root, now)?;
    if key_pem.contains("ENCRYPTED PRIVATE KEY") {
        return Err(FleetCaError::Root(
            "the root key is encrypted; give it unencrypted (PKCS#8) to the gateway".into(),
        ));
    }
    if !key_pem.contains("-----BEGIN PRIVATE KEY-----") {
        return Err(FleetCaError::Root(
            "the root key must be PKCS#8 PEM (BEGIN PRIVATE KEY); convert it with \
             `openssl pkcs8 -topk8 -nocrypt -in KEY -out KEY.pk8`"
                .into(),
        ));
    }
    let root_key = KeyPair::from_pem(&key_pem)
        .map_err(|e| FleetCaError::Root(format!("the root key cannot be read: {e}")))?;
    drop(key_pem);
    if root_key.subject_public_key_info() != root.spki {
        return Err(FleetCaError::Root(format!(
            "the root key does not belong to the root certificate {}",
            root.subject
        )));
    }
    let root_issuer = Issuer::from_ca_cert_der(&chain[0], root_key)
        .map_err(|e| FleetCaError::Root(format!("root certificate: {e}")))?;
    let mut p = params(req)?;
    let ttl = time::Duration::try_from(req.ttl).map_err(|e| FleetCaError::Sign(e.to_string()))?;
    p.not_before = now - BACKDATE;
    // Never past the root's own end.
    p.not_after = (now + ttl).min(root.not_after);
    p.serial_number = Some(crate::tls::ca::random_serial());
    p.use_authority_key_identifier_extension = true;
    let key = node_key()?;
    let cert = p
        .signed_by(&key, &root_issuer)
        .map_err(|e| FleetCaError::Sign(e.to_string()))?;
    // The root key goes now: only the node key stays in memory.
    drop(root_issuer);
    let der = cert.der().clone();
    let f = facts(&der)?;
    let mut served = vec![der];
    served.extend(chain[..chain.len() - 1].iter().cloned());
    Ok(Issuing {
        signer: Signer::Intermediate(Box::new(Issuer::new(p, key))),
        chain: served,
        not_before: Some(f.not_before),
        not_after: Some(f.not_after),
        serial: f.serial,
        generation: 0,
    })
}

/// A fresh node key and a CSR for it (PEM), for Vault to sign.
pub fn csr(req: &Request) -> Result<(KeyPair, String), FleetCaError> {
    let key = node_key()?;
    let mut p = CertificateParams::new(Vec::<String>::new())
        .map_err(|e| FleetCaError::Sign(e.to_string()))?;
    p.distinguished_name
        .push(DnType::CommonName, common_name(&req.node));
    p.distinguished_name
        .push(DnType::OrganizationName, "gateway");
    let csr = p
        .serialize_request(&key)
        .map_err(|e| FleetCaError::Sign(e.to_string()))?
        .pem()
        .map_err(|e| FleetCaError::Sign(e.to_string()))?;
    Ok((key, csr))
}

/// The intermediate Vault signed for `key`; `issuers` are the root's chain from Vault
/// (`ca_chain`, or `issuing_ca`). Checked: it is a CA for our key, valid now.
pub fn from_signed(
    key: KeyPair,
    cert_pem: &str,
    issuers: Vec<CertificateDer<'static>>,
) -> Result<Issuing, FleetCaError> {
    let der = pem_certs(cert_pem, "the signed intermediate")?.remove(0);
    let f = facts(&der)?;
    if f.spki != key.subject_public_key_info() {
        return Err(FleetCaError::Vault(
            "the signed certificate is not for the key this node sent".into(),
        ));
    }
    if !f.ca {
        return Err(FleetCaError::Vault(
            "the signed certificate is not a CA (is the endpoint sign-intermediate?)".into(),
        ));
    }
    let now = OffsetDateTime::now_utc();
    if now >= f.not_after {
        return Err(FleetCaError::Vault(format!(
            "the signed intermediate is already expired ({})",
            f.not_after
        )));
    }
    let issuers: Vec<_> = issuers.into_iter().filter(|c| c != &der).collect();
    if issuers.is_empty() {
        return Err(FleetCaError::Vault(
            "no issuing_ca / ca_chain in the answer: the chain to the root is unknown".into(),
        ));
    }
    let issuer = Issuer::from_ca_cert_der(&der, key)
        .map_err(|e| FleetCaError::Vault(format!("the signed intermediate: {e}")))?;
    let mut served = vec![der];
    served.extend(issuers[..issuers.len() - 1].iter().cloned());
    Ok(Issuing {
        signer: Signer::Intermediate(Box::new(issuer)),
        chain: served,
        not_before: Some(f.not_before),
        not_after: Some(f.not_after),
        serial: f.serial,
        generation: 0,
    })
}

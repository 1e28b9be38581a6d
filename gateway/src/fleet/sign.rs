//! The node's signing key for what it publishes on the bus: Ed25519 (ring), created on the
//! first start with `[fleet]` in `<state_dir>/fleet-node.key` (PKCS#8, 0600, never logged).
//!
//! Journal records keep their per-node keyed chain (HMAC with the node's secret journal key,
//! [`crate::journal::seal`]): nobody else can check those MACs without the secret. So each
//! record published on the bus is also signed with this key, over the node name and the
//! record's bytes as published: anyone holding the node's *public* key (announced on
//! `gw.nodes.NODE`, or pinned in `fleet.node_keys`) can check every record on the stream,
//! and with the records' `prev`/`hash` links, each node's chain ([`super::verify`]).

use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _, path::Path};

use base64::Engine as _;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};

pub const KEY_FILE: &str = "fleet-node.key";

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("fleet node key {path}: {reason}")]
    Key { path: String, reason: String },
}

/// The node's key pair (its `Debug` never shows the private half).
pub struct NodeKey {
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NodeKey({})", self.public())
    }
}

/// What a record's signature covers: a domain, the node, the bytes.
fn message(node: &str, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(body.len() + node.len() + 16);
    m.extend_from_slice(b"gw-journal\n");
    m.extend_from_slice(node.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(body);
    m
}

impl NodeKey {
    /// Load `<state_dir>/fleet-node.key`, or create it (0600) when missing.
    pub fn load_or_create(state_dir: &Path) -> Result<Self, SignError> {
        let path = state_dir.join(KEY_FILE);
        let bad = |reason: String| SignError::Key {
            path: path.display().to_string(),
            reason,
        };
        match std::fs::read(&path) {
            Ok(der) => {
                let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
                    .map_err(|_| bad("not an Ed25519 PKCS#8 key (damaged?)".into()))?;
                Ok(Self { pair })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let rng = ring::rand::SystemRandom::new();
                let der = Ed25519KeyPair::generate_pkcs8(&rng)
                    .map_err(|_| bad("cannot generate a key".into()))?;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(|e| bad(e.to_string()))?;
                f.write_all(der.as_ref()).map_err(|e| bad(e.to_string()))?;
                f.sync_all().map_err(|e| bad(e.to_string()))?;
                let pair = Ed25519KeyPair::from_pkcs8(der.as_ref())
                    .map_err(|_| bad("cannot read the key just made".into()))?;
                Ok(Self { pair })
            }
            Err(e) => Err(bad(e.to_string())),
        }
    }

    /// The public key, base64.
    pub fn public(&self) -> String {
        B64.encode(self.pair.public_key().as_ref())
    }

    /// The signature (base64) of a record `body` published by `node`.
    pub fn sign(&self, node: &str, body: &[u8]) -> String {
        B64.encode(self.pair.sign(&message(node, body)).as_ref())
    }
}

/// A base64 Ed25519 public key, checked for size.
pub fn public_key(b64: &str) -> Result<Vec<u8>, String> {
    let k = B64
        .decode(b64.trim())
        .map_err(|_| "not base64".to_string())?;
    if k.len() != 32 {
        return Err(format!("{} bytes, not 32", k.len()));
    }
    Ok(k)
}

/// Does `sig` (base64) sign `body` as published by `node`, under `public` (raw 32 bytes)?
pub fn verify(public: &[u8], node: &str, body: &[u8], sig: &str) -> bool {
    let Ok(sig) = B64.decode(sig.trim()) else {
        return false;
    };
    UnparsedPublicKey::new(&ED25519, public)
        .verify(&message(node, body), &sig)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt as _;

    use super::*;

    #[test]
    fn signatures_bind_the_node_and_the_bytes_and_the_key_stays_private() {
        let d = tempfile::tempdir().unwrap();
        let k = NodeKey::load_or_create(d.path()).unwrap();
        let meta = std::fs::metadata(d.path().join(KEY_FILE)).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        let again = NodeKey::load_or_create(d.path()).unwrap();
        assert_eq!(k.public(), again.public());
        let pk = public_key(&k.public()).unwrap();
        let sig = k.sign("a", b"{\"id\":1}");
        assert!(verify(&pk, "a", b"{\"id\":1}", &sig));
        assert!(!verify(&pk, "a", b"{\"id\":2}", &sig));
        assert!(!verify(&pk, "b", b"{\"id\":1}", &sig));
        let other = tempfile::tempdir().unwrap();
        let k2 = NodeKey::load_or_create(other.path()).unwrap();
        assert!(!verify(
            &public_key(&k2.public()).unwrap(),
            "a",
            b"{\"id\":1}",
            &sig
        ));
        assert!(public_key("AAAA").is_err());
    }
}

//! What keys the journal's chain, kept outside the journal (DESIGN §7): a secret key
//! (`<state_dir>/journal.key`, 0600, created on the first start) that MACs every record, the
//! retention checkpoint and the "keyed from here" marker (HMAC-SHA256), and a small head file
//! (`<state_dir>/journal.head`) naming the last record written and its MAC, itself MACed and
//! rewritten after every group commit. The key makes a rewritten chain fail; the head makes a
//! truncated journal, or an older copy put back, fail.
//!
//! The key is never logged or printed: [`Key`]'s `Debug` is `[redacted]`.

use std::{
    io::Write as _,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use hmac::{Hmac, Mac as _};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;
use zeroize::Zeroizing;

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("journal key {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("journal key {path} is not 64 hex digits (a 256-bit key); it was not changed")]
    BadKey { path: PathBuf },
    #[error(
        "there is no journal key at {path}: the keyed chain cannot be checked without it \
         (`gateway run` creates it on the first start; journal.key_file)"
    )]
    NoKey { path: PathBuf },
    #[error(
        "the journal head {head} exists but the journal key {key} does not: the key was removed \
         or journal.key_file changed; the chain cannot be checked. Put the key back (or, to \
         start a new keyed segment on purpose, move the head file away)"
    )]
    KeyGone { key: PathBuf, head: PathBuf },
}

/// The secret key: 32 random bytes, wiped from memory when dropped.
pub struct Key(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The head file: the last record written and its MAC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub last_id: u64,
    /// The last record's MAC (its `hash` field).
    pub last: String,
    /// MAC over `last_id` and `last`.
    pub mac: String,
}

/// The key and where the head goes.
#[derive(Debug)]
pub struct Seal {
    key: Key,
    head_path: PathBuf,
}

pub(super) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Create `dir` 0700 if it is missing (an existing directory is left as it is: it may be the
/// state dir, shared with the CA and the vault, which make their own files private).
fn ensure_dir(dir: &Path) -> std::io::Result<()> {
    if dir.as_os_str().is_empty() || dir.exists() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

impl Seal {
    /// The daemon's: load the key, or create it (0600) when there is none. `true` when it was
    /// created now (the journal's existing records, if any, predate the key).
    pub fn load_or_create(key_path: &Path, head_path: &Path) -> Result<(Self, bool), SealError> {
        let io = |source| SealError::Io {
            path: key_path.to_path_buf(),
            source,
        };
        if key_path.exists() {
            return Ok((Self::load(key_path, head_path)?, false));
        }
        if head_path.exists() {
            return Err(SealError::KeyGone {
                key: key_path.to_path_buf(),
                head: head_path.to_path_buf(),
            });
        }
        if let Some(dir) = key_path.parent() {
            ensure_dir(dir).map_err(io)?;
        }
        let mut key = Zeroizing::new([0u8; 32]);
        rand::fill(&mut key[..]);
        let text = Zeroizing::new(format!("{}\n", hex(&key[..])));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(key_path)
            .map_err(io)?;
        // Whatever the umask.
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io)?;
        f.write_all(text.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
        Ok((
            Self {
                key: Key(key),
                head_path: head_path.to_path_buf(),
            },
            true,
        ))
    }

    /// An existing key (the CLI's `verify --offline`: it never creates one).
    pub fn load(key_path: &Path, head_path: &Path) -> Result<Self, SealError> {
        let io = |source| SealError::Io {
            path: key_path.to_path_buf(),
            source,
        };
        let text = match std::fs::read_to_string(key_path) {
            Ok(t) => Zeroizing::new(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(SealError::NoKey {
                    path: key_path.to_path_buf(),
                });
            }
            Err(e) => return Err(io(e)),
        };
        // Private whoever created it (an operator's copy may be 0644).
        std::fs::set_permissions(key_path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        let bytes = Zeroizing::new(unhex(text.trim()).unwrap_or_default());
        let mut key = Zeroizing::new([0u8; 32]);
        if bytes.len() != 32 {
            return Err(SealError::BadKey {
                path: key_path.to_path_buf(),
            });
        }
        key.copy_from_slice(&bytes);
        Ok(Self {
            key: Key(key),
            head_path: head_path.to_path_buf(),
        })
    }

    pub fn head_path(&self) -> &Path {
        &self.head_path
    }

    /// HMAC-SHA256 over a domain name (what is MACed) and the parts, each followed by `\n`.
    fn mac(&self, domain: &str, parts: &[&[u8]]) -> String {
        let mut m = <HmacSha256 as hmac::Mac>::new_from_slice(&self.key.0[..])
            .expect("HMAC takes any key length");
        m.update(domain.as_bytes());
        m.update(b"\n");
        for p in parts {
            m.update(p);
            m.update(b"\n");
        }
        hex(&m.finalize().into_bytes())
    }

    /// A record's link: the MAC over the previous record's link and the record's canonical
    /// encoding (as [`super::store::chain_hash`], keyed).
    pub fn record_mac(&self, prev: &str, record: &Value) -> String {
        self.record_mac_encoded(prev, &super::store::canonical(record))
    }

    /// [`Self::record_mac`] of a record already in its canonical encoding.
    pub fn record_mac_encoded(&self, prev: &str, canonical: &[u8]) -> String {
        self.mac("record", &[prev.as_bytes(), canonical])
    }

    pub fn checkpoint_mac(&self, first_id: u64, prev: &str, pruned: u64) -> String {
        self.mac(
            "checkpoint",
            &[
                first_id.to_string().as_bytes(),
                prev.as_bytes(),
                pruned.to_string().as_bytes(),
            ],
        )
    }

    pub fn marker_mac(&self, keyed_from: u64, prev: &str) -> String {
        self.mac(
            "keyed-from",
            &[keyed_from.to_string().as_bytes(), prev.as_bytes()],
        )
    }

    fn head_mac(&self, last_id: u64, last: &str) -> String {
        self.mac("head", &[last_id.to_string().as_bytes(), last.as_bytes()])
    }

    /// The head file: `Ok(None)` when there is none; `Err` with the reason when it cannot be
    /// read or its MAC does not hold (forged or damaged).
    pub fn read_head(&self) -> Result<Option<Head>, String> {
        let text = match std::fs::read(&self.head_path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read {}: {e}", self.head_path.display())),
        };
        let head: Head = serde_json::from_slice(&text).map_err(|_| {
            format!(
                "the journal head {} is not a head record (damaged or replaced)",
                self.head_path.display()
            )
        })?;
        if self.head_mac(head.last_id, &head.last) != head.mac {
            return Err(format!(
                "the journal head {} does not carry a valid MAC (forged, or from another key)",
                self.head_path.display()
            ));
        }
        Ok(Some(head))
    }

    /// Anchor the last record written: the head file overwritten in place, one write of a
    /// fixed size (so its size never changes) per group commit. Private (0600).
    ///
    /// Neither fsync'd nor renamed (measured on this VM's ext4, a group of 8 records ≈ 4 ms:
    /// an fsync here made a group commit 2–3× slower, and a write-and-rename over the old
    /// head ~1–3 ms more, as ext4 flushes a file renamed over another). One small write into
    /// the page cache is whole or absent when the daemon is killed; the head is written only
    /// after its records are durable, so it is never ahead of them, and a write lost to a
    /// power cut leaves a head one group behind, which verifies. A head torn by a power cut
    /// fails its MAC: `gateway journal verify` says so, `gateway journal accept` re-anchors.
    pub fn write_head(&self, last_id: u64, last: &str) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt as _;
        let head = Head {
            last_id,
            last: last.to_string(),
            mac: self.head_mac(last_id, last),
        };
        let mut buf = serde_json::to_vec(&head).unwrap_or_default();
        buf.resize(HEAD_SIZE.max(buf.len()), b' ');
        buf.push(b'\n');
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&self.head_path)?;
        if f.metadata()?.permissions().mode() & 0o777 != 0o600 {
            f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
        f.write_all_at(&buf, 0)?;
        if f.metadata()?.len() > buf.len() as u64 {
            f.set_len(buf.len() as u64)?;
        }
        Ok(())
    }
}

/// The head file's size (JSON padded with spaces): ids up to 20 digits and two 64-digit MACs
/// fit.
const HEAD_SIZE: usize = 255;

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt as _;

    use super::*;

    #[test]
    fn the_key_is_created_once_private_and_never_printed() {
        let d = tempfile::tempdir().unwrap();
        let (k, h) = (
            d.path().join("s/journal.key"),
            d.path().join("s/journal.head"),
        );
        let (a, created) = Seal::load_or_create(&k, &h).unwrap();
        assert!(created);
        assert_eq!(std::fs::metadata(&k).unwrap().mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::metadata(k.parent().unwrap()).unwrap().mode() & 0o777,
            0o700
        );
        let (b, created) = Seal::load_or_create(&k, &h).unwrap();
        assert!(!created);
        let v = serde_json::json!({"id": 1});
        assert_eq!(a.record_mac("x", &v), b.record_mac("x", &v));
        let text = std::fs::read_to_string(&k).unwrap();
        assert!(!format!("{a:?}").contains(text.trim()), "{a:?}");
        assert!(format!("{a:?}").contains("[redacted]"));
        // Another key, another MAC; the plain hash is not a MAC.
        let d2 = tempfile::tempdir().unwrap();
        let (c, _) = Seal::load_or_create(&d2.path().join("k"), &d2.path().join("h")).unwrap();
        assert_ne!(a.record_mac("x", &v), c.record_mac("x", &v));
        assert_ne!(
            a.record_mac("x", &v),
            super::super::store::chain_hash("x", &v)
        );
    }

    #[test]
    fn the_head_is_private_and_a_forged_one_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let (k, h) = (d.path().join("journal.key"), d.path().join("journal.head"));
        let (s, _) = Seal::load_or_create(&k, &h).unwrap();
        assert_eq!(s.read_head(), Ok(None));
        s.write_head(7, "abc").unwrap();
        assert_eq!(std::fs::metadata(&h).unwrap().mode() & 0o777, 0o600);
        assert_eq!(s.read_head().unwrap().unwrap().last_id, 7);
        let forged = std::fs::read_to_string(&h)
            .unwrap()
            .replace("\"last_id\":7", "\"last_id\":3");
        std::fs::write(&h, forged).unwrap();
        assert!(s.read_head().unwrap_err().contains("valid MAC"));
        // A head without its key: refused, not a fresh key.
        std::fs::remove_file(&k).unwrap();
        assert!(matches!(
            Seal::load_or_create(&k, &h),
            Err(SealError::KeyGone { .. })
        ));
        assert!(matches!(Seal::load(&k, &h), Err(SealError::NoKey { .. })));
        // A damaged key is named, not quoted.
        std::fs::write(&k, "not-a-key-but-secret-looking\n").unwrap();
        let e = Seal::load(&k, &h).unwrap_err().to_string();
        assert!(
            e.contains("64 hex digits") && !e.contains("secret-looking"),
            "{e}"
        );
    }
}

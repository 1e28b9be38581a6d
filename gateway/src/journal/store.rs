//! The journal on disk: sled, one tree of records keyed by their id (big-endian, so the tree's
//! order is the chain's order), one tree of metadata (the retention checkpoint).
//!
//! Each record's `hash` is SHA-256 over its previous record's hash and its own canonical
//! encoding (the record as JSON with sorted keys, `hash` left out). The encoding is recomputed
//! from the stored bytes, so a record written by an older version still verifies.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::Record;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the journal at {path} is in use: another gateway daemon serves this state dir, or a \
         reader has it open ({source})"
    )]
    Locked { path: PathBuf, source: sled::Error },
    #[error("journal at {path}: {source}")]
    Sled { path: PathBuf, source: sled::Error },
    #[error("journal record {id}: {reason}")]
    Corrupt { id: u64, reason: String },
    #[error("cannot make the journal at {path} private (0700 directory, 0600 files): {source}")]
    Private {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The journal holds prompts and answers: its directory is 0700 and every file in it 0600,
/// whoever created them and whatever the umask (sled creates its files 0644).
fn make_private(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700))?;
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let ft = e.file_type()?;
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(0o600))?;
            }
        }
    }
    Ok(())
}

/// The hash before the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Where the chain starts once old records have been pruned.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Checkpoint {
    /// The first record kept.
    pub first_id: u64,
    /// The hash of the last record pruned (the first kept one's `prev`).
    pub prev: String,
    pub pruned: u64,
}

/// What `verify` found.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Verdict {
    pub records: u64,
    pub checkpoint: Option<Checkpoint>,
    /// The first record that does not fit the chain, and why.
    pub broken: Option<Broken>,
    /// The hash of the last record (what the next record's `prev` will be).
    pub head: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Broken {
    pub id: u64,
    pub reason: String,
}

pub struct Store {
    path: PathBuf,
    db: sled::Db,
    records: sled::Tree,
    meta: sled::Tree,
}

const CHECKPOINT: &[u8] = b"checkpoint";

/// SHA-256 over `prev` and the record's canonical encoding (JSON, sorted keys, no `hash`).
pub fn chain_hash(prev: &str, record: &Value) -> String {
    let mut v = record.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("hash");
    }
    // serde_json's map is ordered by key: the encoding does not depend on field order.
    let canon = serde_json::to_vec(&v).unwrap_or_default();
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(b"\n");
    h.update(&canon);
    hex(&h.finalize())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Store {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let private = |source| StoreError::Private {
            path: path.to_path_buf(),
            source,
        };
        make_private(path).map_err(private)?;
        let db = sled::Config::new().path(path).open().map_err(|source| {
            let locked = matches!(&source, sled::Error::Io(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.to_string().contains("lock"));
            if locked {
                StoreError::Locked {
                    path: path.to_path_buf(),
                    source,
                }
            } else {
                StoreError::Sled {
                    path: path.to_path_buf(),
                    source,
                }
            }
        })?;
        let err = |source| StoreError::Sled {
            path: path.to_path_buf(),
            source,
        };
        let records = db.open_tree("records").map_err(err)?;
        let meta = db.open_tree("meta").map_err(err)?;
        // Again now that sled has created its files.
        make_private(path).map_err(private)?;
        Ok(Self {
            path: path.to_path_buf(),
            db,
            records,
            meta,
        })
    }

    fn err(&self, source: sled::Error) -> StoreError {
        StoreError::Sled {
            path: self.path.clone(),
            source,
        }
    }

    /// The last record's id and hash (`(0, GENESIS)` for an empty journal).
    pub fn head(&self) -> Result<(u64, String), StoreError> {
        match self.records.last().map_err(|e| self.err(e))? {
            None => Ok(match self.checkpoint()? {
                Some(c) => (c.first_id.saturating_sub(1), c.prev),
                None => (0, GENESIS.to_string()),
            }),
            Some((k, v)) => {
                let id = key_id(&k);
                let v: Value = serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt {
                    id,
                    reason: format!("not JSON: {e}"),
                })?;
                let hash = v["hash"].as_str().unwrap_or(GENESIS).to_string();
                Ok((id, hash))
            }
        }
    }

    /// Append records (ids and hashes already set) and make them durable.
    pub fn append(&self, records: &[Record]) -> Result<(), StoreError> {
        for r in records {
            let bytes = serde_json::to_vec(r).map_err(|e| StoreError::Corrupt {
                id: r.id,
                reason: e.to_string(),
            })?;
            self.records
                .insert(r.id.to_be_bytes(), bytes)
                .map_err(|e| self.err(e))?;
        }
        self.db.flush().map_err(|e| self.err(e))?;
        Ok(())
    }

    pub fn get(&self, id: u64) -> Result<Option<Value>, StoreError> {
        let Some(v) = self
            .records
            .get(id.to_be_bytes())
            .map_err(|e| self.err(e))?
        else {
            return Ok(None);
        };
        serde_json::from_slice(&v)
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                id,
                reason: format!("not JSON: {e}"),
            })
    }

    /// Every record, oldest first (records that are not JSON are reported as an error).
    pub fn iter(&self) -> impl Iterator<Item = Result<(u64, Value), StoreError>> + '_ {
        self.records.iter().map(move |kv| {
            let (k, v) = kv.map_err(|e| self.err(e))?;
            let id = key_id(&k);
            serde_json::from_slice(&v)
                .map(|v| (id, v))
                .map_err(|e| StoreError::Corrupt {
                    id,
                    reason: format!("not JSON: {e}"),
                })
        })
    }

    pub fn checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> {
        Ok(self
            .meta
            .get(CHECKPOINT)
            .map_err(|e| self.err(e))?
            .and_then(|v| serde_json::from_slice(&v).ok()))
    }

    /// Walk the chain from the checkpoint (or the start) and name the first record that does
    /// not fit: a wrong `prev`, a hash that does not match its content, a gap in the ids.
    pub fn verify(&self) -> Result<Verdict, StoreError> {
        let checkpoint = self.checkpoint()?;
        let (mut expect_id, mut prev) = match &checkpoint {
            Some(c) => (c.first_id, c.prev.clone()),
            None => (1, GENESIS.to_string()),
        };
        let mut records = 0;
        let mut broken = None;
        for kv in self.records.iter() {
            let (k, v) = kv.map_err(|e| self.err(e))?;
            let id = key_id(&k);
            // Left over from a prune that stopped half way: already outside the chain.
            if checkpoint.as_ref().is_some_and(|c| id < c.first_id) {
                continue;
            }
            records += 1;
            if broken.is_some() {
                continue;
            }
            let fail = |reason: String| Some(Broken { id, reason });
            let v: Value = match serde_json::from_slice(&v) {
                Ok(v) => v,
                Err(e) => {
                    broken = fail(format!("not JSON ({e})"));
                    continue;
                }
            };
            if id != expect_id {
                broken = fail(format!(
                    "expected record {expect_id} here (a record is missing)"
                ));
                continue;
            }
            if v["id"].as_u64() != Some(id) {
                broken = fail(format!("its id field says {}", v["id"]));
                continue;
            }
            if v["prev"].as_str() != Some(prev.as_str()) {
                broken = fail("its prev hash is not the previous record's hash".into());
                continue;
            }
            let stored = v["hash"].as_str().unwrap_or("").to_string();
            if chain_hash(&prev, &v) != stored {
                broken = fail("its content does not match its hash (changed after writing)".into());
                continue;
            }
            prev = stored;
            expect_id = id + 1;
        }
        Ok(Verdict {
            records,
            checkpoint,
            broken,
            head: prev,
        })
    }

    /// Remove records older than `before` (unix ms), oldest first, keeping a checkpoint so
    /// that the rest still verifies. Returns how many were removed.
    pub fn prune(&self, before_ms: u64) -> Result<u64, StoreError> {
        let mut last: Option<(u64, String)> = None;
        let mut doomed = Vec::new();
        for kv in self.iter() {
            let (id, v) = kv?;
            if v["time_ms"].as_u64().unwrap_or(u64::MAX) >= before_ms {
                break;
            }
            last = Some((id, v["hash"].as_str().unwrap_or("").to_string()));
            doomed.push(id);
        }
        let Some((last_id, last_hash)) = last else {
            return Ok(0);
        };
        let pruned = self.checkpoint()?.map_or(0, |c| c.pruned) + doomed.len() as u64;
        let cp = Checkpoint {
            first_id: last_id + 1,
            prev: last_hash,
            pruned,
        };
        // The checkpoint first: a crash in between leaves extra records, never a broken chain.
        self.meta
            .insert(CHECKPOINT, serde_json::to_vec(&cp).unwrap_or_default())
            .map_err(|e| self.err(e))?;
        self.db.flush().map_err(|e| self.err(e))?;
        // Records before the checkpoint are outside the chain now; verify starts there.
        for id in &doomed {
            self.records
                .remove(id.to_be_bytes())
                .map_err(|e| self.err(e))?;
        }
        self.db.flush().map_err(|e| self.err(e))?;
        Ok(doomed.len() as u64)
    }

    /// Test helper: overwrite a stored record's bytes (tampering, as an attacker would).
    pub fn raw_put(&self, id: u64, bytes: &[u8]) -> Result<(), StoreError> {
        self.records
            .insert(id.to_be_bytes(), bytes)
            .map_err(|e| self.err(e))?;
        self.db.flush().map_err(|e| self.err(e))?;
        Ok(())
    }

    pub fn raw_get(&self, id: u64) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .records
            .get(id.to_be_bytes())
            .map_err(|e| self.err(e))?
            .map(|v| v.to_vec()))
    }
}

fn key_id(k: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = k.len().min(8);
    b[8 - n..].copy_from_slice(&k[..n]);
    u64::from_be_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_journal_is_private_whatever_the_umask() {
        use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("journal");
        // An earlier version's journal, world-readable.
        std::fs::create_dir(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let store = Store::open(&path).unwrap();
        chain(&store, 3, |i| i);
        store.db.flush().unwrap();
        drop(store);
        let _ = Store::open(&path).unwrap();
        let mut seen = 0;
        let mut stack = vec![path.clone()];
        while let Some(dir) = stack.pop() {
            assert_eq!(
                std::fs::metadata(&dir).unwrap().mode() & 0o777,
                0o700,
                "{dir:?}"
            );
            for e in std::fs::read_dir(&dir).unwrap() {
                let e = e.unwrap();
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                } else {
                    seen += 1;
                    let mode = e.metadata().unwrap().mode() & 0o777;
                    assert_eq!(mode, 0o600, "{:?}", e.path());
                }
            }
        }
        assert!(seen >= 2, "sled's files were looked at ({seen})");
    }

    fn rec(id: u64, prev: &str, time_ms: u64, text: &str) -> Record {
        let mut r = Record {
            id,
            time_ms,
            prev: prev.to_string(),
            response_body: Some(text.to_string()),
            // Floats must survive the JSON round trip exactly for the hash to hold.
            duration_ms: 31.468065000000003,
            ttfb_ms: Some(0.1 + 0.2),
            ..Default::default()
        };
        r.hash = chain_hash(prev, &serde_json::to_value(&r).unwrap());
        r
    }

    fn chain(store: &Store, n: u64, time_ms: impl Fn(u64) -> u64) {
        let (mut last, mut head) = store.head().unwrap();
        for _ in 0..n {
            last += 1;
            let r = rec(last, &head, time_ms(last), &format!("answer {last}"));
            head = r.hash.clone();
            store.append(&[r]).unwrap();
        }
    }

    #[test]
    fn a_chain_verifies_and_a_changed_byte_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("j")).unwrap();
        chain(&store, 5, |_| 1);
        let v = store.verify().unwrap();
        assert_eq!((v.records, v.broken), (5, None));
        let mut raw = store.raw_get(4).unwrap().unwrap();
        let at = raw.windows(8).position(|w| w == b"answer 4").unwrap();
        raw[at] = b'A';
        store.raw_put(4, &raw).unwrap();
        let b = store.verify().unwrap().broken.unwrap();
        assert_eq!(b.id, 4, "{b:?}");
        assert!(b.reason.contains("does not match its hash"), "{b:?}");
        // A removed record is named too (where the next one does not follow).
        store.records.remove(2u64.to_be_bytes()).unwrap();
        assert_eq!(store.verify().unwrap().broken.unwrap().id, 3);
    }

    #[test]
    fn pruning_keeps_the_rest_verifiable_from_a_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        {
            let store = Store::open(&path).unwrap();
            chain(&store, 6, |id| id * 1000);
            assert_eq!(store.prune(3500).unwrap(), 3);
            let v = store.verify().unwrap();
            assert_eq!((v.records, v.broken.clone()), (3, None), "{v:?}");
            assert_eq!(v.checkpoint.as_ref().unwrap().first_id, 4);
            // New records go on after the last one.
            chain(&store, 2, |id| id * 1000);
            assert_eq!(store.verify().unwrap().records, 5);
        }
        // And after a reopen; the lock is exclusive while it is open.
        let store = Store::open(&path).unwrap();
        assert!(matches!(Store::open(&path), Err(StoreError::Locked { .. })));
        let v = store.verify().unwrap();
        assert_eq!((v.records, v.broken), (5, None));
        assert_eq!(store.head().unwrap().0, 8);
    }
}

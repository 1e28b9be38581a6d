//! The journal on disk: sled, one tree of records keyed by their id (big-endian, so the tree's
//! order is the chain's order), one tree of metadata (the retention checkpoint, the "keyed from
//! here" marker).
//!
//! Each record's `hash` is its link in the chain: HMAC-SHA256, with the key kept outside the
//! journal ([`super::seal`]), over the previous record's link and the record's canonical
//! encoding (the record as JSON with sorted keys, `hash` left out). The encoding is recomputed
//! from the stored bytes, so a record written by an older version still verifies.
//!
//! Journals written before the key existed used an unkeyed SHA-256 chain (same construction,
//! no key). They still open: when the key is created, a MACed marker records where the keyed
//! chain starts; records before it are checked by the old chain (which detects a changed byte
//! but not a rewrite by someone who recomputes it), and the first keyed record's MAC covers the
//! last unkeyed record's hash, so the old segment cannot be rewritten after the key exists
//! either. The checkpoint and the marker carry a MAC; the head file outside the journal names
//! its last record, so records removed from the end, or an older copy put back, fail `verify`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::{
    Record,
    seal::{Seal, hex},
};

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
    #[error(transparent)]
    Seal(#[from] super::seal::SealError),
    #[error("the journal at {0} was opened without its key: it cannot be verified or written")]
    Unkeyed(PathBuf),
    #[error("journal head {path}: {source}")]
    Head {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Injected(String),
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

/// The link before the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Where the chain starts once old records have been pruned.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Checkpoint {
    /// The first record kept.
    pub first_id: u64,
    /// The link of the last record pruned (the first kept one's `prev`).
    pub prev: String,
    pub pruned: u64,
    /// MAC over the three fields above (empty in a journal older than its key).
    #[serde(default)]
    pub mac: String,
}

/// Where the keyed chain starts in a journal that existed before its key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Marker {
    /// The first keyed record.
    pub id: u64,
    /// The last unkeyed record's hash (the first keyed one's `prev`).
    pub prev: String,
    pub mac: String,
}

/// What `verify` found.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Verdict {
    pub records: u64,
    pub checkpoint: Option<Checkpoint>,
    /// Records before this id predate the key (checked by the unkeyed chain).
    pub keyed_from: Option<u64>,
    /// The first problem found (the checkpoint, the marker, a record, then the head).
    pub broken: Option<Broken>,
    /// Every problem found, one per kind at most.
    #[serde(default)]
    pub breaks: Vec<Broken>,
    /// The last record's link (what the next record's `prev` will be).
    pub head: String,
    /// The last record the head file anchors.
    pub anchored: Option<u64>,
}

impl Verdict {
    /// A problem outside the records (checkpoint, marker, head): the daemon does not write
    /// on such a journal, since its next commit would overwrite the evidence.
    pub fn anchor_break(&self) -> Option<&Broken> {
        self.breaks.iter().find(|b| b.kind != BreakKind::Record)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Broken {
    pub id: u64,
    pub reason: String,
    #[serde(default)]
    pub kind: BreakKind,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BreakKind {
    /// A record does not fit the chain (it stays as evidence).
    #[default]
    Record,
    /// The checkpoint or the keyed marker does not carry a valid MAC.
    Anchor,
    /// The journal's end is not the one the head file anchors (or the head is missing or
    /// forged): records removed from the end, an older copy put back.
    Head,
}

pub struct Store {
    path: PathBuf,
    db: sled::Db,
    records: sled::Tree,
    meta: sled::Tree,
    seal: Option<Seal>,
}

const CHECKPOINT: &[u8] = b"checkpoint";
const MARKER: &[u8] = b"keyed_from";
const PROBE: &[u8] = b"probe";

/// The record as JSON with sorted keys and without its `hash`: what its link covers.
pub fn canonical(record: &Value) -> Vec<u8> {
    let mut v = record.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("hash");
    }
    // serde_json's map is ordered by key: the encoding does not depend on field order.
    serde_json::to_vec(&v).unwrap_or_default()
}

/// The unkeyed link of journals older than their key: SHA-256 over `prev` and the record's
/// canonical encoding.
pub fn chain_hash(prev: &str, record: &Value) -> String {
    chain_hash_encoded(prev, &canonical(record))
}

/// [`chain_hash`] of a record already in its canonical encoding.
pub fn chain_hash_encoded(prev: &str, canonical: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(b"\n");
    h.update(canonical);
    hex(&h.finalize())
}

impl Store {
    /// Open the journal at `path`. Without a `seal` it can be read and changed raw (tests,
    /// tampering) but not verified, written or pruned.
    pub fn open(path: &Path, seal: Option<Seal>) -> Result<Self, StoreError> {
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
            seal,
        })
    }

    fn err(&self, source: sled::Error) -> StoreError {
        StoreError::Sled {
            path: self.path.clone(),
            source,
        }
    }

    pub fn seal(&self) -> Result<&Seal, StoreError> {
        self.seal
            .as_ref()
            .ok_or_else(|| StoreError::Unkeyed(self.path.clone()))
    }

    /// The last record's id and link (`(0, GENESIS)` for an empty journal).
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

    /// Append records (ids and links already set) and make them durable.
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

    /// Put records (their stored bytes, ids and links already set) into sled without waiting
    /// for the disk: [`Store::flush`] makes them durable.
    pub fn insert_raw(&self, records: &[(u64, Vec<u8>)]) -> Result<(), StoreError> {
        for (id, bytes) in records {
            self.records
                .insert(id.to_be_bytes(), bytes.as_slice())
                .map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// Everything put into sled so far, on disk when this returns.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Anchor the journal's end in the head file (after the records are durable: a crash in
    /// between leaves the head one group behind, which verifies).
    pub fn anchor(&self, last_id: u64, last: &str) -> Result<(), StoreError> {
        let seal = self.seal()?;
        seal.write_head(last_id, last)
            .map_err(|source| StoreError::Head {
                path: seal.head_path().to_path_buf(),
                source,
            })
    }

    /// `gateway journal accept`: anchor the journal's end as it is now (a backup restored on
    /// purpose). Returns the record anchored. Records that do not fit stay named by `verify`.
    pub fn reanchor(&self) -> Result<u64, StoreError> {
        let (id, link) = self.head()?;
        self.anchor(id, &link)?;
        Ok(id)
    }

    /// Can the journal be written? One small durable write (the writer's health check after a
    /// failure, when there is no record to write).
    pub fn probe(&self) -> Result<(), StoreError> {
        self.meta
            .insert(PROBE, &super::now_ms().to_be_bytes())
            .map_err(|e| self.err(e))?;
        self.db.flush().map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The key was created just now: the records already here predate it. Mark where the
    /// keyed chain starts, MAC the checkpoint, anchor the head.
    pub fn adopt_key(&self) -> Result<(), StoreError> {
        let seal = self.seal()?;
        let (last_id, last) = self.head()?;
        if last_id > 0 {
            let m = Marker {
                id: last_id + 1,
                prev: last.clone(),
                mac: seal.marker_mac(last_id + 1, &last),
            };
            self.meta
                .insert(MARKER, serde_json::to_vec(&m).unwrap_or_default())
                .map_err(|e| self.err(e))?;
        }
        if let Some(mut c) = self.checkpoint()? {
            c.mac = seal.checkpoint_mac(c.first_id, &c.prev, c.pruned);
            self.meta
                .insert(CHECKPOINT, serde_json::to_vec(&c).unwrap_or_default())
                .map_err(|e| self.err(e))?;
        }
        self.db.flush().map_err(|e| self.err(e))?;
        self.anchor(last_id, &last)
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
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = Result<(u64, Value), StoreError>> + '_ {
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

    fn marker(&self) -> Result<Option<Result<Marker, ()>>, StoreError> {
        Ok(self
            .meta
            .get(MARKER)
            .map_err(|e| self.err(e))?
            .map(|v| serde_json::from_slice(&v).map_err(|_| ())))
    }

    /// Walk the chain from the checkpoint (or the start) and name what does not fit: a
    /// checkpoint or marker without a valid MAC, a record with a wrong `prev`, a link that
    /// does not match its content, a gap in the ids, and a journal whose end is not the one
    /// the head file anchors (records removed from the end, an older copy put back).
    pub fn verify(&self) -> Result<Verdict, StoreError> {
        let seal = self.seal()?;
        let anchor = |id: u64, reason: String| Broken {
            id,
            reason,
            kind: BreakKind::Anchor,
        };
        let mut breaks: Vec<Broken> = Vec::new();
        let checkpoint = self.checkpoint()?;
        if let Some(c) = &checkpoint
            && seal.checkpoint_mac(c.first_id, &c.prev, c.pruned) != c.mac
        {
            breaks.push(anchor(
                c.first_id,
                "the retention checkpoint does not carry a valid MAC: it was forged or \
                 altered (records before it may have been removed)"
                    .into(),
            ));
        }
        let marker = match self.marker()? {
            None => None,
            Some(Ok(m)) if seal.marker_mac(m.id, &m.prev) == m.mac => Some(m),
            Some(m) => {
                let id = m.map(|m| m.id).unwrap_or(1);
                breaks.push(anchor(
                    id,
                    "the \"keyed from here\" marker does not carry a valid MAC: it was forged \
                     or altered"
                        .into(),
                ));
                None
            }
        };
        let keyed_from = marker.as_ref().map_or(1, |m| m.id);
        let (mut expect_id, mut prev) = match &checkpoint {
            Some(c) => (c.first_id, c.prev.clone()),
            None => (1, GENESIS.to_string()),
        };
        let mut records = 0;
        let mut record_break = None;
        let mut last: Option<(u64, String)> = None;
        for kv in self.records.iter() {
            let (k, v) = kv.map_err(|e| self.err(e))?;
            let id = key_id(&k);
            // Left over from a prune that stopped half way: already outside the chain.
            if checkpoint.as_ref().is_some_and(|c| id < c.first_id) {
                continue;
            }
            records += 1;
            let v: Result<Value, _> = serde_json::from_slice(&v);
            last = Some((
                id,
                v.as_ref()
                    .ok()
                    .and_then(|v| v["hash"].as_str())
                    .unwrap_or("")
                    .to_string(),
            ));
            if record_break.is_some() {
                continue;
            }
            let fail = |reason: String| {
                Some(Broken {
                    id,
                    reason,
                    kind: BreakKind::Record,
                })
            };
            let v = match v {
                Ok(v) => v,
                Err(e) => {
                    record_break = fail(format!("not JSON ({e})"));
                    continue;
                }
            };
            if id != expect_id {
                record_break = fail(format!(
                    "expected record {expect_id} here (a record is missing)"
                ));
                continue;
            }
            if v["id"].as_u64() != Some(id) {
                record_break = fail(format!(
                    "its id field says {} (records reordered?)",
                    v["id"]
                ));
                continue;
            }
            if v["prev"].as_str() != Some(prev.as_str()) {
                record_break = fail("its prev link is not the previous record's link".into());
                continue;
            }
            if let Some(m) = &marker
                && id == m.id
                && m.prev != prev
            {
                record_break = fail(
                    "the keyed chain starts here, but not after the record the marker names".into(),
                );
                continue;
            }
            let stored = v["hash"].as_str().unwrap_or("").to_string();
            if id < keyed_from {
                if chain_hash(&prev, &v) != stored {
                    record_break = fail(
                        "its content does not match its (unkeyed) hash: changed after writing"
                            .into(),
                    );
                    continue;
                }
            } else if seal.record_mac(&prev, &v) != stored {
                record_break = fail(
                    "its MAC does not match its content: changed after writing, or rewritten \
                     without the journal key"
                        .into(),
                );
                continue;
            }
            prev = stored;
            expect_id = id + 1;
        }
        breaks.extend(record_break);
        // The end: what the head file anchors must still be there, unchanged.
        let (last_id, last_link) = match last {
            Some(l) => l,
            None => match &checkpoint {
                Some(c) => (c.first_id.saturating_sub(1), c.prev.clone()),
                None => (0, GENESIS.to_string()),
            },
        };
        let head_break = |id: u64, reason: String| Broken {
            id,
            reason,
            kind: BreakKind::Head,
        };
        let mut anchored = None;
        match seal.read_head() {
            Err(reason) => breaks.push(head_break(last_id + 1, reason)),
            Ok(None) if last_id > 0 => breaks.push(head_break(
                last_id + 1,
                format!(
                    "the journal head {} is missing: whether records were removed from the end \
                     cannot be checked (it is written with every commit; was it deleted?)",
                    seal.head_path().display()
                ),
            )),
            Ok(None) => {}
            Ok(Some(h)) => {
                anchored = Some(h.last_id);
                let first_kept = checkpoint.as_ref().map_or(1, |c| c.first_id);
                if h.last_id > last_id {
                    breaks.push(head_break(
                        last_id + 1,
                        format!(
                            "the journal ends at record {last_id} but its head ({}) says record \
                             {} was written: records were removed from the end, or an older \
                             copy of the journal was put back",
                            seal.head_path().display(),
                            h.last_id
                        ),
                    ));
                } else if h.last_id > 0 && h.last_id == last_id && last_link != h.last {
                    breaks.push(head_break(
                        h.last_id,
                        format!(
                            "record {} is not the record the head anchors: the journal was \
                             replaced by another copy",
                            h.last_id
                        ),
                    ));
                } else if h.last_id > 0 && h.last_id >= first_kept {
                    let link = self
                        .records
                        .get(h.last_id.to_be_bytes())
                        .map_err(|e| self.err(e))?
                        .and_then(|v| serde_json::from_slice::<Value>(&v).ok())
                        .and_then(|v| v["hash"].as_str().map(String::from));
                    if link.as_deref() != Some(h.last.as_str()) {
                        breaks.push(head_break(
                            h.last_id,
                            format!(
                                "record {} is not the record the head anchors: the journal was \
                                 replaced by another copy",
                                h.last_id
                            ),
                        ));
                    }
                } else if h.last_id > 0
                    && h.last_id + 1 == first_kept
                    && checkpoint.as_ref().is_some_and(|c| c.prev != h.last)
                {
                    breaks.push(head_break(
                        first_kept,
                        "the retention checkpoint does not follow the record the head anchors"
                            .into(),
                    ));
                }
            }
        }
        Ok(Verdict {
            records,
            checkpoint,
            keyed_from: marker.map(|m| m.id),
            broken: breaks.first().cloned(),
            breaks,
            head: prev,
            anchored,
        })
    }

    /// Remove records older than `before` (unix ms), oldest first, keeping a MACed checkpoint
    /// so that the rest still verifies. Returns how many were removed.
    pub fn prune(&self, before_ms: u64) -> Result<u64, StoreError> {
        let seal = self.seal()?;
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
        let first_id = last_id + 1;
        let cp = Checkpoint {
            first_id,
            mac: seal.checkpoint_mac(first_id, &last_hash, pruned),
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

    /// The stored bytes of every record after `id`, in chain order (what a consumer of a
    /// [`super::cursor::Cursor`] reads; records left over from a half-done prune included).
    pub fn raw_after(
        &self,
        id: u64,
    ) -> impl Iterator<Item = Result<(u64, Vec<u8>), StoreError>> + '_ {
        self.records
            .range((id.saturating_add(1)).to_be_bytes()..)
            .map(move |kv| {
                let (k, v) = kv.map_err(|e| self.err(e))?;
                Ok((key_id(&k), v.to_vec()))
            })
    }

    /// Another tree in the journal's sled (the cursors keep their positions there).
    pub(super) fn tree(&self, name: &str) -> Result<sled::Tree, StoreError> {
        self.db.open_tree(name).map_err(|e| self.err(e))
    }

    /// Where the journal is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Test helper: overwrite a stored record's bytes (tampering, as an attacker would).
    pub fn raw_put(&self, id: u64, bytes: &[u8]) -> Result<(), StoreError> {
        self.records
            .insert(id.to_be_bytes(), bytes)
            .map_err(|e| self.err(e))?;
        self.db.flush().map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Test helper: remove a record (tampering).
    pub fn raw_remove(&self, id: u64) -> Result<(), StoreError> {
        self.records
            .remove(id.to_be_bytes())
            .map_err(|e| self.err(e))?;
        self.db.flush().map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Test helper: overwrite a metadata entry (`checkpoint`, `keyed_from`).
    pub fn raw_put_meta(&self, key: &str, bytes: &[u8]) -> Result<(), StoreError> {
        self.meta
            .insert(key.as_bytes(), bytes)
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
mod tests;

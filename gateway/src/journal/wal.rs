//! The journal's write-ahead log (`journal.sync = "kernel"`): every record, exactly the bytes
//! sled gets, appended to a file beside the journal with one `write(2)` per group before its
//! exchange is told it is recorded. A `write(2)` that returned is in the kernel's page cache:
//! a `kill -9` of the daemon cannot take it back (a power cut can: that is what sled's flush,
//! a bounded moment later, is for). At the next start the log is replayed into sled — the same
//! bytes, checked against the chain (id, `prev`, MAC) — and removed once sled has them on disk.
//!
//! On disk: a directory `<journal path>.wal/` (0700) of segments named by their first record
//! id (`00000000000000000042.log`, 0600). The writer appends to the newest; the flusher starts
//! a new one before each flush of sled and removes the older ones after it, so a segment is
//! never written again once a newer one exists. An entry is
//! `len: u32 LE | crc32(id ‖ payload): u32 LE | id: u64 LE | payload (len bytes)`.
//! An entry cut short or failing its checksum at the very end of the newest segment is a write
//! the daemon was killed in: its exchange was never told it was recorded, so it is dropped (and
//! logged). Anywhere else it is damage: the start stops with the segment named.

use std::{
    fs::{File, OpenOptions},
    io::Write as _,
    path::{Path, PathBuf},
};

use serde_json::Value;
use tracing::{info, warn};

use super::store::{Store, StoreError, chain_hash};

const HEADER: usize = 16;
/// Longest payload accepted when reading (a record is bounded by `journal.max_body` twice plus
/// its metadata; anything longer is damage, not a record).
const MAX_ENTRY: usize = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("journal write-ahead log {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "journal write-ahead log {path}: {reason}. The daemon does not start on a log it cannot \
         vouch for; keep the directory as evidence, move it away to start without it (the \
         records in it are then lost), or put back the journal it belongs to"
    )]
    Damaged { path: PathBuf, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn checksum(id: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&id.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// Append the framing of one entry to `out`.
pub fn encode(id: u64, payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&checksum(id, payload).to_le_bytes());
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(payload);
}

/// What reading one segment found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Segment {
    pub entries: Vec<(u64, Vec<u8>)>,
    /// Bytes at the end that are not a whole, valid entry (with why).
    pub torn: Option<(usize, String)>,
}

/// Decode a segment's bytes: whole entries, then what is left (a torn entry, or damage when
/// valid entries follow it — reported as torn too; the caller decides by position).
pub fn decode(bytes: &[u8]) -> Segment {
    let mut seg = Segment::default();
    let mut at = 0;
    while at < bytes.len() {
        let rest = &bytes[at..];
        let why = if rest.len() < HEADER {
            Some(format!(
                "{} bytes, shorter than an entry's header",
                rest.len()
            ))
        } else {
            let len = u32::from_le_bytes(rest[0..4].try_into().expect("4")) as usize;
            let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4"));
            let id = u64::from_le_bytes(rest[8..16].try_into().expect("8"));
            if len > MAX_ENTRY {
                Some(format!("an entry claims {len} bytes"))
            } else if rest.len() < HEADER + len {
                Some(format!(
                    "record {id}: {} of its {len} bytes",
                    rest.len() - HEADER
                ))
            } else if checksum(id, &rest[HEADER..HEADER + len]) != crc {
                Some(format!("record {id}: its checksum does not match"))
            } else {
                seg.entries.push((id, rest[HEADER..HEADER + len].to_vec()));
                at += HEADER + len;
                None
            }
        };
        if let Some(why) = why {
            seg.torn = Some((bytes.len() - at, why));
            break;
        }
    }
    seg
}

/// The log the writer appends to.
pub struct Wal {
    dir: PathBuf,
    current: File,
    current_path: PathBuf,
    /// Bytes in the current segment (to cut a failed append back to).
    len: u64,
    /// The last id appended (0: none in this segment).
    last_id: u64,
}

fn segment_name(first_id: u64) -> String {
    format!("{first_id:020}.log")
}

/// The segments in `dir`, oldest first.
pub fn segments(dir: &Path) -> Result<Vec<PathBuf>, WalError> {
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io(dir)(e)),
    };
    for e in rd {
        let e = e.map_err(io(dir))?;
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(stem) = name.strip_suffix(".log")
            && stem.len() == 20
            && stem.bytes().all(|b| b.is_ascii_digit())
        {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

fn create_segment(dir: &Path, first_id: u64) -> Result<(File, PathBuf), WalError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = dir.join(segment_name(first_id));
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&path)
        .map_err(io(&path))?;
    Ok((f, path))
}

impl Wal {
    /// Start a log in `dir` whose next record is `next_id`. Call after [`replay`]: segments
    /// already there are left for the flusher to remove after its first flush.
    pub fn create(dir: &Path, next_id: u64) -> Result<Self, WalError> {
        private_dir(dir).map_err(io(dir))?;
        let (current, current_path) = create_segment(dir, next_id)?;
        let len = current.metadata().map_err(io(&current_path))?.len();
        Ok(Self {
            dir: dir.to_path_buf(),
            current,
            current_path,
            len,
            last_id: 0,
        })
    }

    /// Append entries (already framed by [`encode`]; `last_id` the last of them) with one
    /// `write(2)`. On failure the segment is cut back to what it was, so that no partial entry
    /// is left for later entries to follow.
    pub fn append(&mut self, framed: &[u8], last_id: u64) -> Result<(), WalError> {
        if let Err(e) = self.current.write_all(framed) {
            let _ = self.current.set_len(self.len);
            return Err(io(&self.current_path)(e));
        }
        self.len += framed.len() as u64;
        self.last_id = last_id;
        Ok(())
    }

    /// Start a new segment for records after `next_id - 1` (before a flush of sled: every
    /// entry in the older segments is then in sled when the flush starts). A no-op when the
    /// current segment is empty.
    pub fn rotate(&mut self, next_id: u64) -> Result<(), WalError> {
        if self.len == 0 {
            return Ok(());
        }
        let (f, p) = create_segment(&self.dir, next_id)?;
        self.current = f;
        self.current_path = p;
        self.len = 0;
        self.last_id = 0;
        Ok(())
    }

    /// Remove every segment older than the current one (their records are on disk in sled).
    pub fn remove_sealed(&self) -> Result<usize, WalError> {
        let mut n = 0;
        for p in segments(&self.dir)? {
            if p != self.current_path {
                std::fs::remove_file(&p).map_err(io(&p))?;
                n += 1;
            }
        }
        Ok(n)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// What [`replay`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Replayed {
    /// Records put into sled from the log.
    pub records: u64,
    /// Records in the log that sled had already (the same bytes).
    pub already: u64,
    /// A torn last entry that was dropped (why).
    pub torn: Option<String>,
}

/// Put the records of the log at `dir` that sled does not have into it, checked against the
/// chain (consecutive ids after sled's last record, each `prev` the link before it, each link
/// its MAC), flush sled, anchor the head, and remove the log. Records sled has already must be
/// byte for byte the same. Anything else stops here with the segment named (nothing is
/// removed then).
pub fn replay(store: &Store, dir: &Path) -> Result<Replayed, WalError> {
    let segs = segments(dir)?;
    let mut done = Replayed::default();
    if segs.is_empty() {
        return Ok(done);
    }
    let seal = store.seal().ok();
    let (mut last_id, mut link) = store.head()?;
    let first_kept = store.checkpoint()?.map_or(1, |c| c.first_id);
    let mut inserted = Vec::new();
    for (i, path) in segs.iter().enumerate() {
        let bytes = std::fs::read(path).map_err(io(path))?;
        let seg = decode(&bytes);
        let damaged = |reason: String| WalError::Damaged {
            path: path.clone(),
            reason,
        };
        if let Some((n, why)) = seg.torn {
            if i + 1 < segs.len() {
                return Err(damaged(format!(
                    "{n} bytes at its end are not a valid entry ({why}), and a newer segment \
                     follows it"
                )));
            }
            warn!(
                wal = %path.display(),
                bytes = n,
                why = %why,
                "journal write-ahead log: a torn last entry (the daemon was killed while writing \
                 it; its exchange was never told it was recorded) is dropped"
            );
            done.torn = Some(why);
        }
        for (id, payload) in seg.entries {
            if id < first_kept {
                continue;
            }
            if id <= last_id {
                match store.raw_get(id)? {
                    Some(have) if have == payload => {
                        done.already += 1;
                        continue;
                    }
                    _ => {
                        return Err(damaged(format!(
                            "record {id} in the log is not the journal's record {id} (the \
                             journal was replaced, or the log belongs to another journal)"
                        )));
                    }
                }
            }
            if id != last_id + 1 {
                return Err(damaged(format!(
                    "record {id} does not follow the journal's last record {last_id}"
                )));
            }
            let v: Value = serde_json::from_slice(&payload)
                .map_err(|e| damaged(format!("record {id} is not JSON ({e})")))?;
            if v["id"].as_u64() != Some(id) {
                return Err(damaged(format!(
                    "record {id}: its id field says {}",
                    v["id"]
                )));
            }
            if v["prev"].as_str() != Some(link.as_str()) {
                return Err(damaged(format!(
                    "record {id}: its prev link is not the journal's last link"
                )));
            }
            let want = match seal {
                Some(s) => s.record_mac(&link, &v),
                None => chain_hash(&link, &v),
            };
            let stored = v["hash"].as_str().unwrap_or("");
            if want != stored {
                return Err(damaged(format!(
                    "record {id}: its MAC does not match its content"
                )));
            }
            link = stored.to_string();
            last_id = id;
            inserted.push((id, payload));
        }
    }
    store.insert_raw(&inserted)?;
    store.flush()?;
    done.records = inserted.len() as u64;
    if (done.records > 0 || done.already > 0) && seal.is_some() {
        store.anchor(last_id, &link)?;
    }
    for p in &segs {
        std::fs::remove_file(p).map_err(io(p))?;
    }
    if done.records > 0 || done.already > 0 || done.torn.is_some() {
        info!(
            wal = %dir.display(),
            replayed = done.records,
            already = done.already,
            torn = done.torn.is_some(),
            "journal write-ahead log replayed into the journal"
        );
    }
    Ok(done)
}

/// Records waiting in the log at `dir` (for the CLI, which reads sled only).
pub fn pending(dir: &Path) -> usize {
    segments(dir)
        .unwrap_or_default()
        .iter()
        .filter_map(|p| std::fs::read(p).ok())
        .map(|b| decode(&b).entries.len())
        .sum()
}

#[cfg(test)]
mod tests;

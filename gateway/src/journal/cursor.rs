//! Durable per-consumer cursors over the journal: how far a consumer outside the data path
//! (an exporter, the fleet bus) has got, kept in the journal's own sled so that a restart
//! resumes where the consumer stopped.
//!
//! A consumer reads the records after its position, in chain order, up to the *durable* head
//! (what [`super::Journal::watch_head`] publishes after each group commit: a record read
//! before its flush could vanish in a crash and its id be reused by another record), hands
//! them to its sink, and only after the sink acknowledged commits the last id. Delivery is
//! therefore at-least-once; the journal id is the event id a sink deduplicates by.
//!
//! Retention wins over a lagging consumer: `journal.retention` prunes a record whether or not
//! every cursor has passed it (a sink that is down for weeks must not fill the disk and stop
//! the data path, which refuses requests it cannot journal). The consumer is told: the next
//! [`Cursor::read`] returns a [`Gap`] naming the ids it will never see, and the consumer
//! reports it loudly (error log, metric, an event to its sink) before going on. A record
//! missing from the middle of the chain (removed by hand) is reported the same way.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::store::{Store, StoreError};

/// The sled tree holding every cursor's position.
const TREE: &str = "cursors";

#[derive(Debug, thiserror::Error)]
pub enum CursorError {
    #[error("journal cursor name {0:?} is not valid: 1 to 128 characters from A-Z a-z 0-9 . _ : -")]
    Name(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("journal cursor {name}: stored position is unreadable ({reason})")]
    Corrupt { name: String, reason: String },
    #[error(
        "journal cursor {name}: commit({id}) would go back from position {position} (records \
         would be delivered twice); a consumer commits only ids it has read"
    )]
    Backwards {
        name: String,
        position: u64,
        id: u64,
    },
}

/// What a cursor stores.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// The last record the consumer is done with (0: none yet).
    pub id: u64,
    /// When it committed that (unix ms; 0: never).
    pub committed_ms: u64,
}

/// A named, durable position in the journal.
pub struct Cursor {
    name: String,
    path: std::path::PathBuf,
    tree: sled::Tree,
    pos: Position,
}

/// Why the consumer will never see some records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GapCause {
    /// Pruned by `journal.retention` before the consumer read them.
    Pruned,
    /// Not in the journal although later records are (removed by hand: `journal verify`
    /// names the break too).
    Missing,
}

/// Records `first..=last` that the consumer will never see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Gap {
    pub first: u64,
    pub last: u64,
    pub cause: GapCause,
}

impl Gap {
    pub fn len(&self) -> u64 {
        self.last + 1 - self.first
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

impl std::fmt::Display for Gap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let why = match self.cause {
            GapCause::Pruned => "pruned by journal.retention before they were read",
            GapCause::Missing => "missing from the journal (see `gateway journal verify`)",
        };
        write!(f, "journal records {}..={} {why}", self.first, self.last)
    }
}

/// One record as stored.
#[derive(Debug, Clone)]
pub struct Entry {
    pub id: u64,
    /// The stored bytes (JSON of a [`super::Record`], unless the journal is damaged).
    pub bytes: Vec<u8>,
}

impl Entry {
    pub fn value(&self) -> Result<Value, StoreError> {
        serde_json::from_slice(&self.bytes).map_err(|e| StoreError::Corrupt {
            id: self.id,
            reason: format!("not JSON: {e}"),
        })
    }
}

/// What [`Cursor::read`] found after the position: a gap first, if there is one, then records
/// with consecutive ids. Empty when the consumer is at the head.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub gap: Option<Gap>,
    pub entries: Vec<Entry>,
}

impl Batch {
    /// The id to commit once the sink acknowledged this batch (the gap included).
    pub fn last(&self) -> Option<u64> {
        self.entries
            .last()
            .map(|e| e.id)
            .or(self.gap.map(|g| g.last))
    }

    pub fn is_empty(&self) -> bool {
        self.gap.is_none() && self.entries.is_empty()
    }
}

fn valid(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-_:".contains(&b))
}

impl Cursor {
    /// Open the cursor `name` (created at position 0, before the first record, when new).
    pub fn open(store: &Store, name: &str) -> Result<Self, CursorError> {
        if !valid(name) {
            return Err(CursorError::Name(name.to_string()));
        }
        let tree = store.tree(TREE)?;
        let pos = read_pos(store.path(), &tree, name)?.unwrap_or_default();
        Ok(Self {
            name: name.to_string(),
            path: store.path().to_path_buf(),
            tree,
            pos,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The last record the consumer is done with (0: none yet).
    pub fn position(&self) -> u64 {
        self.pos.id
    }

    pub fn committed_ms(&self) -> u64 {
        self.pos.committed_ms
    }

    /// Records between the position and `head` (the consumer's lag).
    pub fn lag(&self, head: u64) -> u64 {
        head.saturating_sub(self.pos.id)
    }

    /// The consumer is done with every record up to `id`: durable when this returns.
    /// Committing the current position again is a no-op; going back is refused.
    pub fn commit(&mut self, id: u64) -> Result<(), CursorError> {
        if id == self.pos.id {
            return Ok(());
        }
        if id < self.pos.id {
            return Err(CursorError::Backwards {
                name: self.name.clone(),
                position: self.pos.id,
                id,
            });
        }
        let pos = Position {
            id,
            committed_ms: super::now_ms(),
        };
        let bytes = serde_json::to_vec(&pos).unwrap_or_default();
        let err = |e| sled_err(&self.path, e);
        self.tree.insert(self.name.as_bytes(), bytes).map_err(err)?;
        self.tree.flush().map_err(err)?;
        self.pos = pos;
        Ok(())
    }

    /// Up to `max` records after the position and no further than `head` (the durable head
    /// from [`super::Journal::watch_head`]), with the gap before them if records were
    /// pruned or are missing. Reading does not move the cursor: [`Cursor::commit`] does.
    pub fn read(&self, store: &Store, head: u64, max: usize) -> Result<Batch, CursorError> {
        let mut batch = Batch::default();
        let mut next = self.pos.id + 1;
        if next > head || max == 0 {
            return Ok(batch);
        }
        let first_kept = store.checkpoint()?.map_or(1, |c| c.first_id);
        if first_kept > next {
            let last = (first_kept - 1).min(head);
            batch.gap = Some(Gap {
                first: next,
                last,
                cause: GapCause::Pruned,
            });
            next = last + 1;
        }
        for kv in store.raw_after(next - 1) {
            let (id, bytes) = kv?;
            if id > head || batch.entries.len() >= max {
                break;
            }
            if id != next {
                // Records are missing here: a gap of its own, reported first by the next
                // read (a batch carries at most one gap, before its records).
                if batch.gap.is_none() && batch.entries.is_empty() {
                    batch.gap = Some(Gap {
                        first: next,
                        last: id - 1,
                        cause: GapCause::Missing,
                    });
                } else {
                    break;
                }
            }
            batch.entries.push(Entry { id, bytes });
            next = id + 1;
        }
        // Records up to the durable head that are not there (removed from the end).
        if batch.entries.is_empty() && batch.gap.is_none() && next <= head {
            batch.gap = Some(Gap {
                first: next,
                last: head,
                cause: GapCause::Missing,
            });
        }
        Ok(batch)
    }
}

fn sled_err(path: &std::path::Path, source: sled::Error) -> CursorError {
    CursorError::Store(StoreError::Sled {
        path: path.to_path_buf(),
        source,
    })
}

fn read_pos(
    path: &std::path::Path,
    tree: &sled::Tree,
    name: &str,
) -> Result<Option<Position>, CursorError> {
    let v = tree.get(name.as_bytes()).map_err(|e| sled_err(path, e))?;
    v.map(|v| {
        serde_json::from_slice(&v).map_err(|e| CursorError::Corrupt {
            name: name.to_string(),
            reason: e.to_string(),
        })
    })
    .transpose()
}

/// Every cursor in the journal and its position (for `doctor` and the lag metrics).
pub fn list(store: &Store) -> Result<Vec<(String, Position)>, CursorError> {
    let tree = store.tree(TREE)?;
    let mut out = Vec::new();
    for kv in tree.iter() {
        let (k, _) = kv.map_err(|e| sled_err(store.path(), e))?;
        let name = String::from_utf8_lossy(&k).into_owned();
        if let Some(p) = read_pos(store.path(), &tree, &name)? {
            out.push((name, p));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;

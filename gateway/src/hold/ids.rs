//! Hold ids: never reused across restarts, short enough to type (`gateway approvals approve 17`).
//!
//! An approval typed for an old id must never hit a new request. Ids come from a counter whose
//! high-water mark is kept in the state dir (`hold-ids`): the daemon continues after the
//! recorded mark and reserves ids in blocks of [`BLOCK`], writing the end of the next block
//! (temporary file, fsync, rename) before it hands out the block's first id. A crash loses at
//! most the rest of a block; ids grow by one per hold, so they stay a few digits long for
//! years. A clock-based id (ms × 1000) would need no file but be 19 digits long and repeat
//! when the clock is set back.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    sync::Mutex,
};

/// Ids reserved per write of the mark file.
pub const BLOCK: u64 = 64;

/// The mark file's name in the state dir.
pub const FILE: &str = "hold-ids";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdsError {
    #[error("hold ids: {path}: {reason}")]
    File { path: String, reason: String },
}

/// Where hold ids come from.
pub struct Ids {
    /// `None`: in memory only (tests), starting at 1.
    file: Option<PathBuf>,
    /// (last id handed out, last id reserved in the file).
    state: Mutex<(u64, u64)>,
}

impl Ids {
    /// Ids that restart at 1 with every process: for tests only.
    pub fn in_memory() -> Self {
        Self {
            file: None,
            state: Mutex::new((0, u64::MAX)),
        }
    }

    /// Continue after the mark recorded in `state_dir` (none yet: start at 1). A mark file
    /// that cannot be read is an error: ids could otherwise repeat.
    pub fn open(state_dir: &Path) -> Result<Self, IdsError> {
        let path = state_dir.join(FILE);
        let bad = |reason: String| IdsError::File {
            path: path.display().to_string(),
            reason,
        };
        let mark = match std::fs::read_to_string(&path) {
            Ok(s) => s.trim().parse::<u64>().map_err(|_| {
                bad("not a number (remove it only if no approval is pending anywhere)".into())
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(bad(e.to_string())),
        };
        let ids = Self {
            file: Some(path),
            state: Mutex::new((mark, mark)),
        };
        // Reserve now, so a state dir that cannot be written stops the start, not a hold.
        ids.reserve(mark)?;
        Ok(ids)
    }

    /// The next id.
    pub fn next(&self) -> Result<u64, IdsError> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let id = st.0 + 1;
        if id > st.1 {
            st.1 = self.reserve(st.0)?;
        }
        st.0 = id;
        Ok(id)
    }

    /// Record `after + BLOCK` as the mark; returns it.
    fn reserve(&self, after: u64) -> Result<u64, IdsError> {
        let Some(path) = &self.file else {
            return Ok(u64::MAX);
        };
        let mark = after.saturating_add(BLOCK);
        let bad = |e: std::io::Error| IdsError::File {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp).map_err(bad)?;
        f.write_all(format!("{mark}\n").as_bytes()).map_err(bad)?;
        f.sync_all().map_err(bad)?;
        std::fs::rename(&tmp, path).map_err(bad)?;
        // The rename itself survives a crash once the directory is synced.
        if let Some(dir) = path.parent()
            && let Ok(d) = std::fs::File::open(dir)
        {
            let _ = d.sync_all();
        }
        Ok(mark)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_continue_after_a_restart_and_never_repeat() {
        let dir = tempfile::tempdir().unwrap();
        let a = Ids::open(dir.path()).unwrap();
        let first: Vec<u64> = (0..3).map(|_| a.next().unwrap()).collect();
        assert_eq!(first, [1, 2, 3]);
        drop(a);
        // A restart (or a crash) skips the rest of the reserved block.
        let b = Ids::open(dir.path()).unwrap();
        let next = b.next().unwrap();
        assert_eq!(next, BLOCK + 1);
        // Crossing a block boundary writes the next mark before handing the id out.
        let mut last = next;
        for _ in 0..BLOCK + 5 {
            let id = b.next().unwrap();
            assert_eq!(id, last + 1);
            last = id;
        }
        let mark: u64 = std::fs::read_to_string(dir.path().join(FILE))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(mark >= last, "mark {mark} below handed-out id {last}");
        drop(b);
        let c = Ids::open(dir.path()).unwrap();
        assert!(c.next().unwrap() > last);
        // Short enough to type.
        assert!(last.to_string().len() <= 4);
    }

    #[test]
    fn a_damaged_mark_file_is_an_error_not_a_restart_at_one() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), "garbage").unwrap();
        let e = Ids::open(dir.path()).err().unwrap();
        assert!(e.to_string().contains("not a number"), "{e}");
    }

    #[test]
    fn in_memory_ids_count_from_one() {
        let m = Ids::in_memory();
        assert_eq!((m.next().unwrap(), m.next().unwrap()), (1, 2));
    }
}

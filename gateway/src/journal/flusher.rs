//! `journal.sync = "kernel"`: the thread that takes records from the kernel to the disk. The
//! committer ([`super::Committer`], on each exchange's thread) appends records to the
//! write-ahead log ([`super::wal`]) and puts them into sled's memory, then tells the exchange; this thread flushes sled (one fsync
//! for everything written since the last flush, `journal.flush_delay` after the first of it),
//! then removes the log segments the flush covered, publishes the durable head to the
//! journal's consumers ([`super::cursor`]: they read only records on disk, so a record reaches
//! them once, with the id it keeps) and anchors it in the head file.

use std::{
    sync::{Arc, Condvar, Mutex},
    time::Duration,
};

use tracing::{error, info};

use super::{
    Health,
    store::{Store, StoreError},
    wal::{Wal, WalError, encode},
};

/// What the committer and the flusher share: the log, and the last record in sled's memory.
pub(super) struct Shared {
    state: Mutex<Pending>,
    wake: Condvar,
}

struct Pending {
    wal: Wal,
    /// The last record put into sled (id, link): in the log and in sled's memory.
    inserted: (u64, String),
    /// The last id whose log write succeeded (a batch logged but not put into sled keeps its
    /// ids: the next start replays it).
    logged: u64,
    stop: bool,
}

#[derive(Debug, thiserror::Error)]
pub(super) enum AppendError {
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the journal's write-ahead log is unusable (a thread panicked with it)")]
    Poisoned,
}

impl Shared {
    pub(super) fn new(wal: Wal, head: (u64, String)) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(Pending {
                wal,
                logged: head.0,
                inserted: head,
                stop: false,
            }),
            wake: Condvar::new(),
        })
    }

    /// The committer's part: `records` (id, stored bytes) into the log with one write, then into
    /// sled's memory; `last` is the last one's (id, link). Returns once the log write returned:
    /// the records survive a kill -9 from here on.
    pub(super) fn append(
        &self,
        store: &Store,
        records: &[(u64, Vec<u8>)],
        last: (u64, &str),
    ) -> Result<(), AppendError> {
        let mut framed = Vec::with_capacity(records.iter().map(|r| r.1.len() + 16).sum());
        for (id, bytes) in records {
            encode(*id, bytes, &mut framed);
        }
        // One lock over log and sled: a segment the flusher seals holds only records already
        // in sled's memory when its flush starts.
        let mut p = self.state.lock().map_err(|_| AppendError::Poisoned)?;
        p.wal.append(&framed, last.0)?;
        p.logged = last.0;
        store.insert_raw(records)?;
        p.inserted = (last.0, last.1.to_string());
        drop(p);
        self.wake.notify_one();
        Ok(())
    }

    /// Did the log take record `id`?
    pub(super) fn logged(&self, id: u64) -> bool {
        self.state.lock().is_ok_and(|p| p.logged >= id)
    }

    fn stop(&self) {
        if let Ok(mut p) = self.state.lock() {
            p.stop = true;
        }
        self.wake.notify_one();
    }
}

/// Tells the flusher to flush what it has and end (held by the writer's thread).
pub(super) struct StopOnDrop(pub(super) Arc<Shared>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// How long a failed flush waits before the next try.
const RETRY: Duration = Duration::from_millis(500);

pub(super) struct Flusher {
    pub(super) shared: Arc<Shared>,
    pub(super) store: Arc<Store>,
    pub(super) head: Arc<tokio::sync::watch::Sender<u64>>,
    pub(super) health: Arc<Health>,
    pub(super) delay: Duration,
}

impl Flusher {
    pub(super) fn run(self) {
        let mut durable = *self.head.borrow();
        // The last flush or anchor failed: tried again after RETRY, records or not.
        let mut failing = false;
        let mut anchored = durable;
        loop {
            {
                let Ok(mut p) = self.shared.state.lock() else {
                    error!("journal flusher: its state is poisoned; it stops");
                    return;
                };
                while p.inserted.0 <= durable && !p.stop && !failing {
                    p = match self.shared.wake.wait(p) {
                        Ok(p) => p,
                        Err(_) => return,
                    };
                }
                if p.stop && p.inserted.0 <= durable && !failing {
                    return;
                }
                let stopping = p.stop;
                drop(p);
                // More records per flush; never when the writer has ended (shutdown).
                if failing {
                    std::thread::sleep(RETRY);
                } else if !self.delay.is_zero() && !stopping {
                    std::thread::sleep(self.delay);
                }
            }
            let (upto, link, sealed) = {
                let Ok(mut p) = self.shared.state.lock() else {
                    return;
                };
                let next = p.inserted.0 + 1;
                let sealed = match p.wal.rotate(next) {
                    Ok(()) => true,
                    Err(e) => {
                        // The flush still goes on; the old segment stays until a rotation
                        // works (replaying it again at a start is harmless).
                        error!(error = %e, "journal write-ahead log: cannot start a new segment");
                        false
                    }
                };
                (p.inserted.0, p.inserted.1.clone(), sealed)
            };
            let m = crate::metrics::get();
            if let Err(e) = self.store.flush() {
                m.journal_errors.inc();
                error!(
                    error = %e,
                    "journal flush to disk failed (the records are safe from a kill -9 in the \
                     write-ahead log, not from a power cut); requests are refused until it works"
                );
                self.health
                    .set_disk(Some(format!("the journal cannot be flushed to disk: {e}")));
                failing = true;
                continue;
            }
            if upto > durable {
                durable = upto;
                self.head.send_replace(upto);
            }
            if upto > anchored {
                if let Err(e) = self.store.anchor(upto, &link) {
                    m.journal_errors.inc();
                    error!(error = %e, "journal head write failed");
                    self.health
                        .set_disk(Some(format!("the journal head cannot be written: {e}")));
                    failing = true;
                    continue;
                }
                anchored = upto;
            }
            // Last: a log that is empty is a journal on disk and anchored.
            if sealed
                && let Ok(p) = self.shared.state.lock()
                && let Err(e) = p.wal.remove_sealed()
            {
                error!(
                    error = %e,
                    wal = %p.wal.dir().display(),
                    "journal write-ahead log: cannot remove a flushed segment"
                );
            }
            if failing {
                info!("the journal flushes to disk again; requests are accepted");
                failing = false;
                self.health.set_disk(None);
            }
        }
    }
}

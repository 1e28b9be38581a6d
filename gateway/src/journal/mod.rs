//! Journal: one record per exchange in sled under the state dir (DESIGN §7), chained by MAC
//! with a key kept outside the journal ([`store`], [`seal`]). One committer gives records
//! their ids and links and tells each exchange when its record is durable: with `sync =
//! "kernel"` it runs on the exchange's own thread (the write-ahead log, then sled's memory;
//! [`flusher`] takes them to disk), with `sync = "disk"` on the writer thread, in groups (one
//! flush for every record that arrived while the last flush ran).
//!
//! The data path holds an [`Exchange`] per request: every stage fills in its part, and the one
//! path that ends an exchange — the end of the answer's body ([`body::JournalBody`]), or the
//! guard's `Drop` when the client went away or an error cut it short — writes the record.
//!
//! Fail closed: an answer whose record could not be written does not reach its client whole
//! (unless `journal.deliver_unrecorded`), and while the journal is known to be unwritable
//! ([`Journal::ready`]) new requests are refused before anything is sent.

pub mod body;
pub mod cursor;
mod flusher;
pub mod query;
pub mod seal;
pub mod store;
pub mod wal;
pub mod ws;

use std::{
    path::PathBuf,
    sync::{Arc, Mutex, mpsc},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tracing::{error, info, warn};

use crate::redirect::identity::Identity;
pub use store::{Store, StoreError, Verdict};

/// `[journal]` in the config.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct JournalConfig {
    pub enabled: bool,
    /// `masked`: request and response bodies as delivered (after masking); `none`: no bodies.
    pub bodies: Bodies,
    /// Largest body kept per record and direction (bytes); the rest is counted, not kept.
    pub max_body: usize,
    /// Records older than this are pruned (a checkpoint keeps the rest verifiable).
    #[serde(with = "opt_dur")]
    pub retention: Option<Duration>,
    /// Default `<state_dir>/journal`.
    pub path: Option<PathBuf>,
    /// Fault injection for crash tests: the writer waits this long before each write, which
    /// widens the window in which an exchange is done but its record is not yet durable.
    /// Never set it in production.
    #[serde(with = "crate::config::dur")]
    pub write_delay: Duration,
    /// The key of the chain's MACs (created 0600 on the first start). Default
    /// `<state_dir>/journal.key`: outside the journal, so a copy of the journal does not carry
    /// it. Never logged.
    pub key_file: Option<PathBuf>,
    /// The head: the last record written and its MAC, rewritten after every group commit.
    /// Default `<state_dir>/journal.head`.
    pub head_file: Option<PathBuf>,
    /// `true`: an answer whose record could not be written is delivered anyway (logged and
    /// counted), and requests are not refused while the journal is unwritable. Default
    /// `false`: the client gets an incomplete answer (a reset stream), never a complete
    /// unrecorded one.
    pub deliver_unrecorded: bool,
    /// Fault injection for tests: while this file exists, every journal write fails. Never
    /// set it in production.
    pub fail_writes_while: Option<PathBuf>,
    /// What an answer's last byte waits for. `kernel` (default): its record written to the
    /// write-ahead log (`<path>.wal/`, one `write(2)`, no fsync: survives a kill -9 of the
    /// daemon, not a power cut); sled is flushed to disk by group commit right after, within
    /// `flush_delay` plus one flush. `disk`: the record flushed to disk (fsync) before the
    /// last byte, as a power cut loses nothing the client saw complete.
    pub sync: SyncMode,
    /// `sync = "kernel"`: how long records wait in the write-ahead log before the flush to
    /// disk starts (more records per flush). With one flush's time, what a power cut can take.
    #[serde(with = "crate::config::dur")]
    pub flush_delay: Duration,
}

/// `journal.sync`: how durable a record is when its answer's last byte goes out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// In the kernel (the write-ahead log): survives kill -9, not a power cut.
    #[default]
    Kernel,
    /// On disk (fsync): survives a power cut.
    Disk,
}

impl Default for JournalConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            bodies: Bodies::Masked,
            max_body: 1 << 20,
            retention: Some(Duration::from_secs(30 * 86_400)),
            path: None,
            write_delay: Duration::ZERO,
            key_file: None,
            head_file: None,
            deliver_unrecorded: false,
            fail_writes_while: None,
            sync: SyncMode::Kernel,
            flush_delay: Duration::from_millis(10),
        }
    }
}

impl JournalConfig {
    pub fn path(&self, state_dir: &std::path::Path) -> PathBuf {
        self.path
            .clone()
            .unwrap_or_else(|| state_dir.join("journal"))
    }

    pub fn key_file(&self, state_dir: &std::path::Path) -> PathBuf {
        self.key_file
            .clone()
            .unwrap_or_else(|| state_dir.join("journal.key"))
    }

    pub fn head_file(&self, state_dir: &std::path::Path) -> PathBuf {
        self.head_file
            .clone()
            .unwrap_or_else(|| state_dir.join("journal.head"))
    }

    /// The write-ahead log's directory: `<path>.wal` beside the journal.
    pub fn wal_dir(&self, state_dir: &std::path::Path) -> PathBuf {
        let mut p = self.path(state_dir).into_os_string();
        p.push(".wal");
        p.into()
    }

    /// The longest `flush_delay` accepted: a power cut takes at most that much.
    pub const MAX_FLUSH_DELAY: Duration = Duration::from_secs(10);
}

mod opt_dur {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s = String::deserialize(d)?;
        if s == "forever" {
            return Ok(None);
        }
        crate::config::dur::parse(&s)
            .map(Some)
            .map_err(serde::de::Error::custom)
    }

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            None => s.serialize_str("forever"),
            Some(d) => crate::config::dur::serialize(d, s),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Bodies {
    Masked,
    None,
}

/// Who made the request (the connecting process, from the kernel's record).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Who {
    pub pid: u32,
    pub uid: u32,
    pub user: Option<String>,
    pub gid: u32,
    pub comm: String,
    pub cgroup: Option<String>,
    pub unit: Option<String>,
    pub pod_uid: Option<String>,
    pub pod_namespace: Option<String>,
    pub pod_name: Option<String>,
    pub container_id: Option<String>,
    /// The `[groups]` the workload is in (absent when none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

impl From<&Identity> for Who {
    fn from(i: &Identity) -> Self {
        Self {
            pid: i.tgid,
            uid: i.uid,
            user: i.user.clone(),
            gid: i.gid,
            comm: i.comm.clone(),
            cgroup: i.cgroup.clone(),
            unit: i.unit.clone(),
            pod_uid: i.pod_uid.clone(),
            pod_namespace: i.pod_namespace.clone(),
            pod_name: i.pod_name.clone(),
            container_id: i.container_id.clone(),
            groups: i.groups.clone(),
        }
    }
}

/// One rule's verdict on one direction of the exchange.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub direction: String,
    pub rule: String,
    pub detector: String,
    pub action: String,
    pub count: u32,
}

/// A hold on the request, and how it ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Approval {
    pub hold: u64,
    pub why: String,
    /// approved | denied | timed_out | withdrawn
    pub outcome: String,
    pub by: Option<String>,
    pub reason: Option<String>,
    /// When it was decided (RFC 3339), if it was.
    pub at: Option<String>,
    pub waited_ms: f64,
    /// How this request came to its hold: `joined` (an identical request was held already;
    /// one decision answered both), `reused` (the hold's decision was bound to this request's
    /// digest and still valid: no new hold). Absent: it opened the hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
}

/// One piece of the answer as it reached the client: when (ms after the request arrived) and
/// how many bytes of `response_body`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub at_ms: f64,
    pub len: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub id: u64,
    /// RFC 3339, UTC.
    pub time: String,
    pub time_ms: u64,
    pub who: Who,
    pub conn: u64,
    pub provider: String,
    pub api: String,
    pub method: String,
    pub endpoint: String,
    pub path: String,
    pub model: Option<String>,
    pub status: u16,
    /// completed | client_gone | upstream_error | refused
    pub outcome: String,
    /// The gateway's own error kind when it answered instead of the provider.
    pub gateway_error: Option<String>,
    /// The vault key's name (never its value).
    pub key: Option<String>,
    pub stripped_headers: usize,
    pub stripped_params: usize,
    pub decisions: Vec<Decision>,
    pub approval: Option<Approval>,
    pub ttfb_ms: Option<f64>,
    pub duration_ms: f64,
    pub request_body: Option<String>,
    pub request_bytes: u64,
    pub response_body: Option<String>,
    pub response_bytes: u64,
    /// A body was longer than `journal.max_body` and is cut short here.
    pub truncated: bool,
    pub events: Vec<Event>,
    /// A WebSocket session (its timeline); absent for HTTP exchanges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub websocket: Option<ws::WsSession>,
    pub prev: String,
    pub hash: String,
}

/// Is the record durable? `Err` carries why not.
pub type Ack = oneshot::Receiver<Result<u64, String>>;

enum Msg {
    /// The record, who waits for it, and since when.
    Append(
        Box<Record>,
        Option<oneshot::Sender<Result<u64, String>>>,
        Instant,
    ),
}

/// Why the journal cannot record right now (`None`: it can). Set by the writer when a write
/// fails or the writer stops, cleared by the next write that succeeds; and, apart, by the
/// flusher (`sync = "kernel"`) when sled cannot be flushed to disk, cleared by its next flush.
#[derive(Default)]
struct Health(Mutex<[Option<String>; 2]>);

impl Health {
    fn set(&self, why: Option<String>) {
        if let Ok(mut h) = self.0.lock() {
            h[0] = why;
        }
    }

    /// The flusher's part.
    fn set_disk(&self, why: Option<String>) {
        if let Ok(mut h) = self.0.lock() {
            h[1] = why;
        }
    }

    fn get(&self) -> Option<String> {
        self.0
            .lock()
            .map(|h| h[0].clone().or_else(|| h[1].clone()))
            .unwrap_or_else(|_| Some("the journal's state is unknown".into()))
    }
}

/// The daemon's journal: the store and the writer thread feeding it.
pub struct Journal {
    pub cfg: JournalConfig,
    pub store: Arc<Store>,
    /// To the writer thread (`sync = "disk"`: it commits in groups).
    tx: mpsc::Sender<Msg>,
    /// `sync = "kernel"`: records are committed on the caller's thread.
    inline: Option<Arc<Committer>>,
    health: Arc<Health>,
    /// The last durable record's id, published after each group commit (consumers of a
    /// [`cursor::Cursor`] wait on it and read no further).
    head: Arc<tokio::sync::watch::Sender<u64>>,
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Wal(#[from] wal::WalError),
    #[error("cannot start the journal writer: {0}")]
    Thread(std::io::Error),
    #[error(
        "journal at {path}: {reason}. The daemon does not write on a journal whose start or end \
         cannot be vouched for (its next commit would overwrite the evidence). Investigate; if \
         the journal is as it should be (a backup restored on purpose), `gateway journal accept \
         --offline` anchors it as it is now; otherwise move the journal directory and {head} \
         away (keep them as evidence) to start a new one"
    )]
    Anchor {
        path: PathBuf,
        head: PathBuf,
        reason: String,
    },
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `2026-11-26T16:38:12.345Z`
pub fn rfc3339(ms: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// Open the store with its key as the daemon does: the key is created on the first start
/// (and the records already there, from before the key, adopted as the unkeyed segment).
pub fn open_keyed(cfg: &JournalConfig, state_dir: &std::path::Path) -> Result<Store, StoreError> {
    let path = cfg.path(state_dir);
    let (seal, created) =
        seal::Seal::load_or_create(&cfg.key_file(state_dir), &cfg.head_file(state_dir))?;
    let store = Store::open(&path, Some(seal))?;
    if created {
        store.adopt_key()?;
        info!(
            key = %cfg.key_file(state_dir).display(),
            "journal key created; the chain is keyed from the next record on"
        );
    }
    Ok(store)
}

impl Journal {
    /// Open the journal, check its chain (a broken record is reported, never dropped: new
    /// records go on after the last one; a checkpoint, marker or head that does not match
    /// stops the start), prune by retention, start the writer.
    pub fn open(cfg: &JournalConfig, state_dir: &std::path::Path) -> Result<Self, JournalError> {
        let path = cfg.path(state_dir);
        let store = Arc::new(open_keyed(cfg, state_dir)?);
        // Records a killed daemon left in the write-ahead log go into sled first (checked
        // against the chain), whichever mode this start is in.
        wal::replay(&store, &cfg.wal_dir(state_dir))?;
        let verdict = store.verify()?;
        if let Some(b) = verdict.anchor_break() {
            return Err(JournalError::Anchor {
                path,
                head: cfg.head_file(state_dir),
                reason: b.reason.clone(),
            });
        }
        match &verdict.broken {
            None => info!(
                path = %path.display(),
                records = verdict.records,
                keyed_from = verdict.keyed_from,
                "journal opened, chain verified"
            ),
            Some(b) => error!(
                path = %path.display(),
                record = b.id,
                reason = %b.reason,
                "journal chain is BROKEN at this record (kept as it is; `gateway journal verify` \
                 names it); new records continue after the last one"
            ),
        }
        if let Some(r) = cfg.retention {
            prune(&store, r);
        }
        let (tx, rx) = mpsc::channel();
        let health = Arc::new(Health::default());
        // The end of the chain as it is now: where the log, the published head and the next
        // record's id and link start.
        let start = store.head()?;
        let head = Arc::new(tokio::sync::watch::Sender::new(start.0));
        let wal = match cfg.sync {
            SyncMode::Disk => None,
            SyncMode::Kernel => {
                let w = wal::Wal::create(&cfg.wal_dir(state_dir), start.0 + 1)?;
                let shared = flusher::Shared::new(w, start.clone());
                let f = flusher::Flusher {
                    shared: shared.clone(),
                    store: store.clone(),
                    head: head.clone(),
                    health: health.clone(),
                    delay: cfg.flush_delay,
                };
                std::thread::Builder::new()
                    .name("journal-flush".into())
                    .spawn(move || f.run())
                    .map_err(JournalError::Thread)?;
                Some(shared)
            }
        };
        let c = Arc::new(Committer {
            store: store.clone(),
            chain: Mutex::new(Chain {
                last_id: start.0,
                head: start.1,
            }),
            head: head.clone(),
            fault: cfg.fail_writes_while.clone(),
            health: health.clone(),
            wal,
        });
        let w = Writer {
            c: c.clone(),
            delay: cfg.write_delay,
            retention: cfg.retention,
        };
        std::thread::Builder::new()
            .name("journal".into())
            .spawn(move || w.run(rx))
            .map_err(JournalError::Thread)?;
        Ok(Self {
            cfg: cfg.clone(),
            store,
            tx,
            inline: (cfg.sync == SyncMode::Kernel).then_some(c),
            health,
            head,
        })
    }

    /// The last durable record's id, and every later one as the writer commits it: a consumer
    /// outside the data path ([`cursor`]) waits on this instead of polling the store.
    pub fn watch_head(&self) -> tokio::sync::watch::Receiver<u64> {
        self.head.subscribe()
    }

    /// Can an exchange be recorded? `Err` says why not: the last write failed (the store is
    /// unwritable or full) or the writer stopped. Always `Ok` with `deliver_unrecorded`.
    pub fn ready(&self) -> Result<(), String> {
        if self.cfg.deliver_unrecorded {
            return Ok(());
        }
        match self.health.get() {
            None => Ok(()),
            Some(why) => Err(why),
        }
    }

    pub(crate) fn send(&self, rec: Record, ack: Option<oneshot::Sender<Result<u64, String>>>) {
        if let Some(c) = &self.inline {
            // A log write and an insert into sled's memory, here: the answer's last byte waits
            // for no other thread.
            if !self.cfg.write_delay.is_zero() {
                std::thread::sleep(self.cfg.write_delay);
            }
            c.commit(vec![Msg::Append(Box::new(rec), ack, Instant::now())]);
            return;
        }
        if self
            .tx
            .send(Msg::Append(Box::new(rec), ack, Instant::now()))
            .is_err()
        {
            // The ack (dropped with the message) tells a waiting answer; the next requests
            // are refused.
            self.health
                .set(Some("the journal writer has stopped".into()));
            crate::metrics::get().journal_errors.inc();
            error!("journal writer is gone: a record was lost");
        }
    }
}

/// Records that arrive while a flush runs go into the next one.
const MAX_BATCH: usize = 512;

/// How often a running daemon prunes records past retention.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// How often an unwritable journal is tried again when no record comes to try it with.
const PROBE_EVERY: Duration = Duration::from_secs(1);

fn prune(store: &Store, retention: Duration) {
    let cut = now_ms().saturating_sub(retention.as_millis() as u64);
    match store.prune(cut) {
        Ok(0) => {}
        Ok(n) => info!(pruned = n, "journal records past retention pruned"),
        Err(e) => warn!(error = %e, "journal pruning failed"),
    }
}

/// The end of the chain: the last record's id and link. Records get their ids and links here,
/// in order, and nowhere else (the write-ahead log's replay only checks them).
struct Chain {
    last_id: u64,
    head: String,
}

/// The one place records are committed: it gives each its id and link and writes it, then
/// tells whoever waits. With `sync = "kernel"` the exchange's own thread calls it (a log write
/// and an insert into sled's memory: no hand-off to another thread before the answer's last
/// byte); with `sync = "disk"` the writer thread calls it with groups (one fsync each).
struct Committer {
    store: Arc<Store>,
    chain: Mutex<Chain>,
    head: Arc<tokio::sync::watch::Sender<u64>>,
    fault: Option<PathBuf>,
    health: Arc<Health>,
    /// `sync = "kernel"`: the write-ahead log and the flusher it feeds (`None`: `disk`).
    wal: Option<Arc<flusher::Shared>>,
}

impl Committer {
    fn injected(&self) -> Result<(), StoreError> {
        match &self.fault {
            Some(p) if p.exists() => Err(StoreError::Injected(format!(
                "journal write failed (fault injection: {} exists)",
                p.display()
            ))),
            _ => Ok(()),
        }
    }

    /// The record's stored bytes with its link (`prev`) and MAC (or unkeyed hash) filled in.
    /// One tree, encoded twice: without `hash` (the canonical encoding the MAC covers, as
    /// [`store::canonical`]: serde_json's map is ordered by key) and with it (what is stored).
    fn link(rec: &mut Record, prev: &str, seal: Option<&seal::Seal>) -> Vec<u8> {
        rec.prev = prev.to_string();
        rec.hash = String::new();
        let mut v = serde_json::to_value(&*rec).unwrap_or_default();
        if let Some(m) = v.as_object_mut() {
            m.remove("hash");
        }
        let canonical = serde_json::to_vec(&v).unwrap_or_default();
        rec.hash = match seal {
            Some(s) => s.record_mac_encoded(prev, &canonical),
            None => store::chain_hash_encoded(prev, &canonical),
        };
        if let Some(m) = v.as_object_mut() {
            m.insert("hash".into(), serde_json::Value::String(rec.hash.clone()));
        }
        serde_json::to_vec(&v).unwrap_or_default()
    }

    fn commit(&self, batch: Vec<Msg>) {
        let m = crate::metrics::get();
        let Ok(mut chain) = self.chain.lock() else {
            error!("journal: its chain state is poisoned (a thread panicked); records are lost");
            self.health
                .set(Some("the journal's chain state is poisoned".into()));
            m.journal_errors.inc();
            return;
        };
        let seal = self.store.seal().ok();
        let before = (chain.last_id, chain.head.clone());
        let mut records = Vec::with_capacity(batch.len());
        let mut acks = Vec::with_capacity(batch.len());
        for Msg::Append(mut rec, ack, since) in batch {
            chain.last_id += 1;
            rec.id = chain.last_id;
            // The stored bytes, once: what sled and the write-ahead log both get.
            let bytes = Self::link(&mut rec, &chain.head, seal);
            chain.head = std::mem::take(&mut rec.hash);
            acks.push((rec.id, ack, since));
            records.push((rec.id, bytes));
        }
        let last_id = chain.last_id;
        let result = self
            .injected()
            .map_err(|e| e.to_string())
            .and_then(|_| match &self.wal {
                // In the kernel (the log), then in sled's memory; the flusher takes it to
                // disk.
                Some(w) => w
                    .append(&self.store, &records, (last_id, &chain.head))
                    .map_err(|e| e.to_string()),
                None => self
                    .store
                    .insert_raw(&records)
                    .and_then(|_| self.store.flush())
                    .map_err(|e| e.to_string()),
            });
        if let Err(e) = &result {
            m.journal_errors.inc();
            error!(error = %e, records = records.len(), "journal write failed");
            self.health
                .set(Some(format!("the last journal write failed: {e}")));
            // Start again from the last record written (a batch whose log write failed left
            // nothing; one that reached the log but not sled keeps its ids: the next start
            // replays it).
            if !self.wal.as_ref().is_some_and(|w| w.logged(last_id)) {
                (chain.last_id, chain.head) = before;
            }
        }
        let anchor = (self.wal.is_none() && result.is_ok()).then(|| chain.head.clone());
        drop(chain);
        for (id, ack, since) in acks {
            crate::metrics::Metrics::observe(&m.journal_write, since.elapsed());
            if let Some(ack) = ack {
                let _ = ack.send(result.clone().map(|_| id));
            }
        }
        if result.is_err() {
            return;
        }
        let Some(link) = anchor else {
            // Told in the kernel; the flusher publishes and anchors once it is on disk.
            self.health.set(None);
            return;
        };
        self.head.send_replace(last_id);
        // The records are durable (and their exchanges told); now the head outside the
        // journal, so that removing records from the end, or putting an older copy back,
        // fails `verify`. A head that cannot be written is a journal that cannot vouch for its
        // end: the next requests are refused until it can.
        match self.store.anchor(last_id, &link) {
            Ok(()) => self.health.set(None),
            Err(e) => {
                m.journal_errors.inc();
                error!(error = %e, "journal head write failed");
                self.health
                    .set(Some(format!("the journal head cannot be written: {e}")));
            }
        }
    }
}

/// The journal's own thread: commits groups (`sync = "disk"`), prunes past retention, and
/// probes an unwritable journal until it can be written again.
struct Writer {
    c: Arc<Committer>,
    delay: Duration,
    retention: Option<Duration>,
}

/// Marks the journal unable to record when the writer's thread ends, however it ends.
struct Stopped(Arc<Health>);

impl Drop for Stopped {
    fn drop(&mut self) {
        self.0.set(Some("the journal writer has stopped".into()));
    }
}

impl Writer {
    fn run(self, rx: mpsc::Receiver<Msg>) {
        let _stopped = Stopped(self.c.health.clone());
        // However the writer ends, the flusher flushes what it has and ends too.
        let _flush = self.c.wal.clone().map(flusher::StopOnDrop);
        let mut pruned_at = Instant::now();
        loop {
            if let Some(r) = self.retention
                && pruned_at.elapsed() >= PRUNE_EVERY
            {
                // Pruning changes the store: no commit runs meanwhile.
                let _chain = self.c.chain.lock();
                prune(&self.c.store, r);
                pruned_at = Instant::now();
            }
            // Every PROBE_EVERY, records or not: a commit on another thread (`sync =
            // "kernel"`) may have found the journal unwritable since.
            let first = match rx.recv_timeout(PROBE_EVERY) {
                Ok(m) => m,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let unhealthy = self.c.health.get().is_some();
                    if unhealthy && self.c.injected().and_then(|_| self.c.store.probe()).is_ok() {
                        info!("the journal can be written again; requests are accepted");
                        self.c.health.set(None);
                    }
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            if !self.delay.is_zero() {
                std::thread::sleep(self.delay);
            }
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            self.c.commit(batch);
        }
    }
}

/// One exchange on its way through the data path; writes its record exactly once.
pub struct Exchange {
    journal: Option<Arc<Journal>>,
    pub rec: Record,
    /// Bytes of a request body streamed through without inspection (counted, never kept:
    /// it was not masked).
    pub streamed_request: Option<Arc<std::sync::atomic::AtomicU64>>,
    start: Instant,
    sealed: bool,
}

impl Exchange {
    pub fn new(journal: Option<Arc<Journal>>, who: &Identity, conn: u64) -> Self {
        let ms = now_ms();
        // The caller and the time as text only when there is a journal to write them to
        // (measured: a few % of a proxied request's CPU otherwise); `time` is set at the seal.
        let who = if journal.is_some() {
            Who::from(who)
        } else {
            Who::default()
        };
        Self {
            journal,
            rec: Record {
                time_ms: ms,
                who,
                conn,
                outcome: "client_gone".into(),
                ..Default::default()
            },
            start: Instant::now(),
            sealed: false,
            streamed_request: None,
        }
    }

    pub fn elapsed_ms(&self) -> f64 {
        self.start.elapsed().as_secs_f64() * 1e3
    }

    /// Are bodies kept, and how much of each?
    pub fn body_limit(&self) -> Option<usize> {
        self.journal
            .as_ref()
            .filter(|j| j.cfg.bodies == Bodies::Masked)
            .map(|j| j.cfg.max_body)
    }

    /// Keep (a bounded part of) the request body as it was sent.
    pub fn request_body(&mut self, body: &[u8]) {
        self.rec.request_bytes = body.len() as u64;
        if let Some(max) = self.body_limit() {
            let cut = body.len().min(max);
            self.rec.truncated |= cut < body.len();
            self.rec.request_body = Some(String::from_utf8_lossy(&body[..cut]).into_owned());
        }
    }

    pub fn decision(&mut self, d: Decision) {
        if let Some(same) =
            self.rec.decisions.iter_mut().find(|x| {
                x.direction == d.direction && x.rule == d.rule && x.detector == d.detector
            })
        {
            same.count += d.count;
        } else {
            self.rec.decisions.push(d);
        }
    }

    /// Write the record; the receiver says when it is durable (`None`: no journal).
    pub fn finish(mut self, outcome: &str) -> Option<Ack> {
        self.seal(outcome, true)
    }

    fn seal(&mut self, outcome: &str, want_ack: bool) -> Option<Ack> {
        if self.sealed {
            return None;
        }
        self.sealed = true;
        if let Some(n) = &self.streamed_request {
            self.rec.request_bytes = n.load(std::sync::atomic::Ordering::Relaxed);
        }
        self.count();
        let journal = self.journal.take()?;
        self.rec.outcome = if outcome == "completed" && self.rec.gateway_error.is_some() {
            "refused".to_string()
        } else {
            outcome.to_string()
        };
        self.rec.duration_ms = self.elapsed_ms();
        self.rec.time = rfc3339(self.rec.time_ms);
        let rec = std::mem::take(&mut self.rec);
        if want_ack {
            let (tx, rx) = oneshot::channel();
            journal.send(rec, Some(tx));
            Some(rx)
        } else {
            journal.send(rec, None);
            None
        }
    }
}

impl Exchange {
    /// The exchange in the metrics (journal or not).
    fn count(&self) {
        use crate::metrics::{ProviderLabels, RequestLabels, RuleLabels, get};
        let m = get();
        let r = &self.rec;
        if r.provider.is_empty() {
            return;
        }
        m.requests
            .get_or_create(&RequestLabels {
                provider: r.provider.clone(),
                endpoint: r.endpoint.clone(),
                status: r.status,
            })
            .inc();
        let p = ProviderLabels {
            provider: r.provider.clone(),
        };
        m.duration.get_or_create(&p).observe(r.duration_ms / 1e3);
        if let Some(t) = r.ttfb_ms {
            m.ttfb.get_or_create(&p).observe(t / 1e3);
        }
        for d in &r.decisions {
            m.rule_hits
                .get_or_create(&RuleLabels {
                    rule: d.rule.clone(),
                    action: d.action.clone(),
                    direction: d.direction.clone(),
                })
                .inc_by(d.count as u64);
        }
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        // Not finished by the answer's end: the client went away, or the exchange was cut
        // short; what is known so far is recorded.
        let outcome = self.rec.outcome.clone();
        self.seal(&outcome, false);
    }
}

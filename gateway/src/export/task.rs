//! One background task per exporter: wait for the durable head to move, read a bounded batch
//! after the cursor, hand it to the sink until the sink acknowledges it (jittered exponential
//! backoff between attempts, every failure logged), then commit the cursor. The data path never
//! waits for any of this; sled reads and the cursor's flush run on the blocking pool.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::Value;
use tracing::{error, info, warn};

use super::{
    ExportConfig, ExportError,
    event::{self, Context},
    sink::Sink,
};
use crate::journal::{
    Journal,
    cursor::{Batch, Cursor},
};

/// Jittered exponential backoff: 200 ms doubling up to the entry's `max_backoff`, each wait
/// drawn from the upper half of the current step.
pub(super) struct Backoff {
    step: Duration,
    max: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(200);

    pub(super) fn new(max: Duration) -> Self {
        Self {
            step: Self::FIRST,
            max,
        }
    }

    pub(super) fn next(&mut self) -> Duration {
        use rand::Rng as _;
        let s = self.step;
        self.step = (self.step * 2).min(self.max);
        let half = s.as_millis() as u64 / 2;
        Duration::from_millis(half + rand::rng().random_range(0..=half))
    }

    pub(super) fn reset(&mut self) {
        self.step = Self::FIRST;
    }
}

struct Exporter {
    name: String,
    kind: String,
    cfg: ExportConfig,
    ctx: Context,
    sink: Sink,
    cursor: Arc<Mutex<Cursor>>,
    journal: Arc<Journal>,
}

/// Start every `[[export]]` entry of the config (nothing when there is none).
pub fn start(
    exports: &[ExportConfig],
    journal: &Arc<Journal>,
    node: &str,
) -> Result<(), ExportError> {
    for (i, cfg) in exports.iter().enumerate() {
        let name = cfg.name();
        let setup = |reason: String| ExportError::Setup {
            name: name.clone(),
            reason,
        };
        let target = cfg
            .target(&format!("export[{i}]"))
            .map_err(|(k, r)| setup(format!("{k}: {r}")))?;
        let sink = Sink::new(cfg, target).map_err(setup)?;
        let cursor = Cursor::open(&journal.store, &format!("export:{name}"))
            .map_err(|e| setup(e.to_string()))?;
        info!(
            exporter = %name,
            kind = %cfg.kind,
            url = %cfg.url,
            position = cursor.position(),
            include_bodies = cfg.include_bodies,
            "exporter started; it resumes after the last record its sink acknowledged"
        );
        let ex = Exporter {
            name: name.clone(),
            kind: cfg.kind.clone(),
            cfg: cfg.clone(),
            ctx: Context {
                node: node.to_string(),
                include_bodies: cfg.include_bodies,
            },
            sink,
            cursor: Arc::new(Mutex::new(cursor)),
            journal: journal.clone(),
        };
        tokio::spawn(ex.run());
    }
    Ok(())
}

impl Exporter {
    fn labels(&self) -> crate::metrics::ExportLabels {
        crate::metrics::ExportLabels {
            exporter: self.name.clone(),
            kind: self.kind.clone(),
        }
    }

    async fn read(&self, head: u64) -> Result<Batch, String> {
        let cursor = self.cursor.clone();
        let store = self.journal.store.clone();
        let max = self.cfg.batch;
        tokio::task::spawn_blocking(move || {
            let c = cursor
                .lock()
                .map_err(|_| "cursor lock poisoned".to_string())?;
            c.read(&store, head, max).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())?
    }

    async fn commit(&self, id: u64) -> Result<u64, String> {
        let cursor = self.cursor.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = cursor
                .lock()
                .map_err(|_| "cursor lock poisoned".to_string())?;
            c.commit(id).map_err(|e| e.to_string())?;
            Ok(c.position())
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// The events for a batch: the gap first (reported loudly here), then one per record.
    fn events(&self, batch: &Batch) -> Vec<Value> {
        let m = crate::metrics::get();
        let mut out = Vec::with_capacity(batch.entries.len() + 1);
        if let Some(g) = &batch.gap {
            m.export_lost.get_or_create(&self.labels()).inc_by(g.len());
            error!(
                exporter = %self.name,
                first = g.first,
                last = g.last,
                cause = ?g.cause,
                "{g}: these records will never be exported (a records_lost event tells the sink)"
            );
            out.push(event::gap(g, &self.ctx));
        }
        for e in &batch.entries {
            match e.value() {
                Ok(v) => out.push(event::exchange(&v, &self.ctx)),
                Err(err) => {
                    m.export_lost.get_or_create(&self.labels()).inc();
                    error!(exporter = %self.name, record = e.id, error = %err,
                        "journal record unreadable: exported as records_lost");
                    out.push(event::unreadable(e.id, &self.ctx));
                }
            }
        }
        out
    }

    async fn run(mut self) {
        let mut head_rx = self.journal.watch_head();
        let mut backoff = Backoff::new(self.cfg.max_backoff);
        let m = crate::metrics::get();
        let labels = self.labels();
        loop {
            let head = *head_rx.borrow_and_update();
            let position = self.cursor.lock().map(|c| c.position()).unwrap_or(0);
            m.export_lag
                .get_or_create(&labels)
                .set(head.saturating_sub(position) as i64);
            let batch = match self.read(head).await {
                Ok(b) => b,
                Err(e) => {
                    error!(exporter = %self.name, error = %e, "cannot read the journal for export");
                    tokio::time::sleep(backoff.next()).await;
                    continue;
                }
            };
            let Some(last) = batch.last() else {
                // At the head: wait for the writer's next group commit.
                if head_rx.changed().await.is_err() {
                    warn!(exporter = %self.name, "the journal is gone; exporter stops");
                    return;
                }
                continue;
            };
            let events = self.events(&batch);
            let mut failures = 0u32;
            let since = Instant::now();
            loop {
                match self.sink.send(&events, &self.ctx).await {
                    Ok(()) => break,
                    Err(e) => {
                        failures += 1;
                        m.export_failures.get_or_create(&labels).inc();
                        let wait = backoff.next();
                        let lag = head.saturating_sub(position);
                        if failures == 1 {
                            error!(exporter = %self.name, error = %e, lag, retry_in = ?wait,
                                "export sink failed; records wait in the journal, retrying");
                        } else {
                            warn!(exporter = %self.name, error = %e, lag, failures,
                                retry_in = ?wait, "export sink still failing");
                        }
                        tokio::time::sleep(wait).await;
                    }
                }
            }
            if failures > 0 {
                info!(exporter = %self.name, failures, down_for = ?since.elapsed(),
                    "export sink accepts events again");
            }
            backoff.reset();
            m.export_events
                .get_or_create(&labels)
                .inc_by(batch.entries.len() as u64);
            match self.commit(last).await {
                Ok(p) => {
                    let head = *head_rx.borrow();
                    m.export_lag
                        .get_or_create(&labels)
                        .set(head.saturating_sub(p) as i64);
                }
                Err(e) => {
                    // Delivered but not committed: sent again after a restart (the receiver
                    // deduplicates by journal id).
                    error!(exporter = %self.name, error = %e, "cannot commit the export cursor");
                    tokio::time::sleep(backoff.next()).await;
                }
            }
        }
    }
}

//! The journal pump: this node's records, from its durable cursor (`fleet-bus`,
//! [`crate::journal::cursor`]) to `GW_JOURNAL`, in chain order, each exactly once on the
//! stream.
//!
//! A batch is published pipelined and the cursor committed to the last record whose ack came
//! back (acks of one connection come in order): a record is never skipped. A record published
//! again (its ack was lost with the connection) carries the same `Nats-Msg-Id` (`NODE:ID`) and
//! the server drops it within its duplicate window; after a longer outage the pump starts
//! after the last record of this node already on the stream, so a resend cannot double it
//! either. While the bus is down the journal goes on locally and the cursor waits; records
//! pruned by retention before they were published are reported loudly (a gap that `journal
//! verify --fleet` shows as well).

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use async_nats::jetstream::message::PublishMessage;
use tracing::{error, info, warn};

use super::bus::{Bus, JOURNAL_STREAM, journal_subject};
use crate::journal::{
    Journal,
    cursor::{Batch, Cursor},
};

/// The cursor's name in the journal.
pub const CURSOR: &str = "fleet-bus";

/// Records per batch.
const BATCH: usize = 256;

/// The last record id of `node` on the stream (0: none).
async fn last_on_stream(bus: &Bus, node: &str) -> Result<u64, String> {
    let stream = bus
        .jetstream()
        .get_stream(JOURNAL_STREAM)
        .await
        .map_err(|e| e.to_string())?;
    match stream
        .get_last_raw_message_by_subject(&journal_subject(node))
        .await
    {
        Ok(m) => Ok(m
            .headers
            .get("Gw-Id")
            .and_then(|v| v.as_str().parse::<u64>().ok())
            .unwrap_or(0)),
        Err(e) => {
            use async_nats::jetstream::stream::LastRawMessageErrorKind as K;
            match e.kind() {
                K::NoMessageFound => Ok(0),
                _ => Err(e.to_string()),
            }
        }
    }
}

pub async fn pump(bus: Arc<Bus>, journal: Arc<Journal>) {
    let store = journal.store.clone();
    let node = bus.node().to_string();
    let cursor = match Cursor::open(&store, CURSOR) {
        Ok(c) => Arc::new(Mutex::new(c)),
        Err(e) => {
            error!(error = %e, "fleet: the journal cursor cannot be opened: this node's journal is NOT published on the bus");
            return;
        }
    };
    let position = || cursor.lock().map(|c| c.position()).unwrap_or(0);
    let mut head_rx = journal.watch_head();
    loop {
        bus.wait_ready().await;
        match last_on_stream(&bus, &node).await {
            Ok(on) => {
                let pos = position();
                let head = *head_rx.borrow();
                if on > head {
                    error!(node = %node, on_stream = on, journal_head = head, "fleet: the bus has records of this node beyond its journal's end (a journal started anew under an old node name?); later records with the same ids are dropped as duplicates: give this node a new fleet.node");
                } else if on > pos {
                    info!(
                        from = pos,
                        to = on,
                        "fleet: records already on the bus; the cursor moves past them"
                    );
                    if let Ok(mut c) = cursor.lock()
                        && let Err(e) = c.commit(on)
                    {
                        error!(error = %e, "fleet: journal cursor commit failed");
                    }
                }
            }
            Err(e) => {
                warn!(error = %e, "fleet: cannot read this node's last record on the bus; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        }
        let start = position();
        let mut published = 0u64;
        loop {
            let head = *head_rx.borrow_and_update();
            let batch: Batch = {
                let c = cursor.clone();
                let s = store.clone();
                match tokio::task::spawn_blocking(move || {
                    c.lock()
                        .map_err(|_| "cursor lock poisoned".to_string())
                        .and_then(|c| c.read(&s, head, BATCH).map_err(|e| e.to_string()))
                })
                .await
                {
                    Ok(Ok(b)) => b,
                    r => {
                        let e = match r {
                            Ok(Err(e)) => e,
                            Err(e) => e.to_string(),
                            Ok(Ok(_)) => unreachable!(),
                        };
                        error!(error = %e, "fleet: reading the journal for the bus failed; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        break;
                    }
                }
            };
            if batch.is_empty() {
                if published > 0 {
                    info!(
                        records = published,
                        from = start + 1,
                        to = position(),
                        "fleet: journal records published"
                    );
                    published = 0;
                }
                let mut ready = bus.ready_rx();
                tokio::select! {
                    r = head_rx.changed() => if r.is_err() { return },
                    _ = ready.wait_for(|r| !*r) => break,
                }
                continue;
            }
            if let Some(gap) = batch.gap {
                error!(node = %node, first = gap.first, last = gap.last, "fleet: {gap}: they will never reach the bus");
                crate::metrics::get().journal_errors.inc();
            }
            match publish(&bus, &node, &batch).await {
                Ok(last) => {
                    if let Some(last) = last.or(batch.gap.map(|g| g.last))
                        && let Ok(mut c) = cursor.lock()
                        && let Err(e) = c.commit(last)
                    {
                        error!(error = %e, "fleet: journal cursor commit failed");
                    }
                    published += batch.entries.len() as u64;
                }
                Err((last, e)) => {
                    if let Some(last) = last
                        && let Ok(mut c) = cursor.lock()
                    {
                        let _ = c.commit(last);
                    }
                    warn!(error = %e, position = position(), "fleet: publishing journal records stopped (the bus is down?); the journal goes on locally and is published from here when it returns");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    break;
                }
            }
        }
    }
}

/// Publish a batch pipelined; the last id acked in order (every record up to it is on the
/// stream), or that and the first error.
async fn publish(
    bus: &Bus,
    node: &str,
    batch: &Batch,
) -> Result<Option<u64>, (Option<u64>, String)> {
    let subject = journal_subject(node);
    let mut acks = Vec::with_capacity(batch.entries.len());
    let mut last = None;
    for e in &batch.entries {
        let mut h = async_nats::HeaderMap::new();
        let id = e.id.to_string();
        h.insert("Gw-Node", node);
        h.insert("Gw-Id", id.as_str());
        h.insert("Gw-Sig", bus.node_key().sign(node, &e.bytes).as_str());
        let msg = PublishMessage::build()
            .payload(e.bytes.clone().into())
            .headers(h)
            .message_id(format!("{node}:{}", e.id));
        match bus.jetstream().send_publish(subject.clone(), msg).await {
            Ok(ack) => acks.push((e.id, ack)),
            Err(err) => {
                // What was sent before still counts once acked.
                for (id, ack) in acks {
                    match ack.await {
                        Ok(_) => last = Some(id),
                        Err(_) => break,
                    }
                }
                return Err((last, err.to_string()));
            }
        }
    }
    for (id, ack) in acks {
        match ack.await {
            Ok(_) => last = Some(id),
            Err(err) => return Err((last, err.to_string())),
        }
    }
    Ok(last)
}

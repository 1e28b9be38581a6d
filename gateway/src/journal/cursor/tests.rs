//! Cursors: durable across a restart, bounded by the durable head, loud about gaps.
use std::path::Path;

use super::*;
use crate::journal::{Record, seal::Seal};

fn keyed(dir: &Path) -> Store {
    let (seal, _) =
        Seal::load_or_create(&dir.join("journal.key"), &dir.join("journal.head")).unwrap();
    Store::open(&dir.join("journal"), Some(seal)).unwrap()
}

/// Records `from..=to`, written at time `id * 1000` (the chain itself is not what is tested).
fn put(store: &Store, from: u64, to: u64) {
    let recs: Vec<Record> = (from..=to)
        .map(|id| Record {
            id,
            time_ms: id * 1000,
            provider: format!("p{id}"),
            ..Default::default()
        })
        .collect();
    store.append(&recs).unwrap();
}

fn ids(b: &Batch) -> Vec<u64> {
    b.entries.iter().map(|e| e.id).collect()
}

#[test]
fn a_restart_resumes_from_the_committed_position() {
    let d = tempfile::tempdir().unwrap();
    {
        let store = keyed(d.path());
        put(&store, 1, 5);
        let mut c = Cursor::open(&store, "export:siem").unwrap();
        assert_eq!(c.position(), 0);
        let b = c.read(&store, 5, 100).unwrap();
        assert_eq!(ids(&b), vec![1, 2, 3, 4, 5]);
        assert!(b.gap.is_none());
        assert_eq!(
            b.entries[2].value().unwrap()["provider"],
            "p3",
            "an entry carries its record"
        );
        // The sink acknowledged only the first three.
        c.commit(3).unwrap();
        assert_eq!(c.position(), 3);
        assert!(c.committed_ms() > 0);
        // Another cursor is independent.
        let other = Cursor::open(&store, "fleet").unwrap();
        assert_eq!(other.position(), 0);
    }
    let store = keyed(d.path());
    let c = Cursor::open(&store, "export:siem").unwrap();
    assert_eq!(c.position(), 3, "the position survived the restart");
    assert_eq!(ids(&c.read(&store, 5, 100).unwrap()), vec![4, 5]);
    let all = list(&store).unwrap();
    assert_eq!(all.len(), 1, "only committed cursors are listed: {all:?}");
    assert_eq!(all[0].0, "export:siem");
    assert_eq!(all[0].1.id, 3);
}

#[test]
fn reads_stop_at_the_durable_head_and_at_max() {
    let d = tempfile::tempdir().unwrap();
    let store = keyed(d.path());
    put(&store, 1, 6);
    let mut c = Cursor::open(&store, "a").unwrap();
    assert_eq!(ids(&c.read(&store, 4, 100).unwrap()), vec![1, 2, 3, 4]);
    assert_eq!(ids(&c.read(&store, 6, 2).unwrap()), vec![1, 2]);
    c.commit(4).unwrap();
    assert!(c.read(&store, 4, 100).unwrap().is_empty(), "at the head");
    assert_eq!(c.lag(6), 2);
}

#[test]
fn records_pruned_before_they_were_read_are_a_gap() {
    let d = tempfile::tempdir().unwrap();
    let store = keyed(d.path());
    put(&store, 1, 5);
    let mut c = Cursor::open(&store, "export:siem").unwrap();
    c.commit(1).unwrap();
    // Retention removes records 1..=3 (time < 3500 ms); the cursor had passed only 1.
    assert_eq!(store.prune(3500).unwrap(), 3);
    let b = c.read(&store, 5, 100).unwrap();
    assert_eq!(
        b.gap,
        Some(Gap {
            first: 2,
            last: 3,
            cause: GapCause::Pruned
        })
    );
    assert_eq!(b.gap.unwrap().len(), 2);
    assert!(b.gap.unwrap().to_string().contains("2..=3 pruned"));
    assert_eq!(ids(&b), vec![4, 5]);
    assert_eq!(b.last(), Some(5));
    c.commit(5).unwrap();
    assert!(c.read(&store, 5, 100).unwrap().is_empty());
    // A cursor that had passed the pruned records sees no gap.
    let store2 = &store;
    let fresh = Cursor::open(store2, "late").unwrap();
    let b = fresh.read(store2, 5, 1).unwrap();
    assert_eq!(b.gap.map(|g| (g.first, g.last)), Some((1, 3)));
    assert_eq!(ids(&b), vec![4], "max counts records, not the gap");
}

#[test]
fn a_gap_alone_is_committed_past() {
    let d = tempfile::tempdir().unwrap();
    let store = keyed(d.path());
    put(&store, 1, 3);
    let mut c = Cursor::open(&store, "a").unwrap();
    assert_eq!(store.prune(10_000).unwrap(), 3);
    let b = c.read(&store, 3, 100).unwrap();
    assert!(b.entries.is_empty());
    assert_eq!(b.last(), Some(3));
    c.commit(b.last().unwrap()).unwrap();
    assert!(c.read(&store, 3, 100).unwrap().is_empty());
}

#[test]
fn a_record_missing_from_the_middle_is_a_gap_of_its_own() {
    let d = tempfile::tempdir().unwrap();
    let store = keyed(d.path());
    put(&store, 1, 5);
    store.raw_remove(3).unwrap();
    let mut c = Cursor::open(&store, "a").unwrap();
    c.commit(1).unwrap();
    let b = c.read(&store, 5, 100).unwrap();
    assert!(b.gap.is_none(), "records before the hole first");
    assert_eq!(ids(&b), vec![2]);
    c.commit(2).unwrap();
    let b = c.read(&store, 5, 100).unwrap();
    assert_eq!(
        b.gap,
        Some(Gap {
            first: 3,
            last: 3,
            cause: GapCause::Missing
        })
    );
    assert_eq!(ids(&b), vec![4, 5]);
    // Removed from the end, below the durable head.
    store.raw_remove(5).unwrap();
    c.commit(4).unwrap();
    let b = c.read(&store, 5, 100).unwrap();
    assert_eq!(
        b.gap.map(|g| (g.first, g.last, g.cause)),
        Some((5, 5, GapCause::Missing))
    );
}

#[test]
fn commits_never_go_back_and_names_are_checked() {
    let d = tempfile::tempdir().unwrap();
    let store = keyed(d.path());
    let mut c = Cursor::open(&store, "a").unwrap();
    c.commit(7).unwrap();
    c.commit(7).unwrap();
    let e = c.commit(6).unwrap_err().to_string();
    assert!(e.contains("would go back from position 7"), "{e}");
    assert_eq!(c.position(), 7);
    for bad in ["", "has space", "slash/y", &"x".repeat(129)] {
        let e = Cursor::open(&store, bad).err().expect(bad).to_string();
        assert!(e.contains("not valid"), "{e}");
    }
}

#[tokio::test]
async fn the_journal_publishes_its_durable_head() {
    let d = tempfile::tempdir().unwrap();
    let cfg = crate::journal::JournalConfig::default();
    let j = crate::journal::Journal::open(&cfg, d.path()).unwrap();
    let mut head = j.watch_head();
    assert_eq!(*head.borrow_and_update(), 0);
    let mut acks = Vec::new();
    for i in 0..3 {
        let (tx, rx) = tokio::sync::oneshot::channel();
        j.send(
            Record {
                provider: format!("p{i}"),
                ..Default::default()
            },
            Some(tx),
        );
        acks.push(rx);
    }
    for a in acks {
        a.await.unwrap().unwrap();
    }
    tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while *head.borrow_and_update() < 3 {
            head.changed().await.unwrap();
        }
    })
    .await
    .expect("the head reached 3");
    let c = Cursor::open(&j.store, "t").unwrap();
    let b = c.read(&j.store, *head.borrow(), 10).unwrap();
    assert_eq!(ids(&b), vec![1, 2, 3]);
    assert_eq!(b.entries[0].value().unwrap()["provider"], "p0");
}

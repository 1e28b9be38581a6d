//! The write-ahead log: framing, a torn last entry, replay into sled (idempotent, checked
//! against the chain), and the writer's order (in the log before the exchange is told, on disk
//! in sled a bounded moment later).
use std::path::Path;

use super::*;
use crate::journal::{Journal, JournalConfig, Record, seal::Seal, store::GENESIS};

fn keyed(dir: &Path) -> Store {
    let (seal, created) =
        Seal::load_or_create(&dir.join("journal.key"), &dir.join("journal.head")).unwrap();
    let store = Store::open(&dir.join("journal"), Some(seal)).unwrap();
    if created {
        store.adopt_key().unwrap();
    }
    store
}

/// Records `from..=to` chained after `(prev_id, prev)`, as the writer makes them: (id, bytes)
/// and the last link.
fn records(store: &Store, prev: &str, from: u64, to: u64) -> (Vec<(u64, Vec<u8>)>, String) {
    let seal = store.seal().unwrap();
    let mut link = prev.to_string();
    let mut out = Vec::new();
    for id in from..=to {
        let mut r = Record {
            id,
            prev: link.clone(),
            time_ms: crate::journal::now_ms(),
            response_body: Some(format!("answer {id}")),
            duration_ms: 0.1 + 0.2,
            ..Default::default()
        };
        let v = serde_json::to_value(&r).unwrap();
        r.hash = seal.record_mac(&link, &v);
        link = r.hash.clone();
        out.push((id, serde_json::to_vec(&r).unwrap()));
    }
    (out, link)
}

fn frame(recs: &[(u64, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (id, b) in recs {
        encode(*id, b, &mut out);
    }
    out
}

fn write_segment(dir: &Path, first: u64, bytes: &[u8]) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join(segment_name(first));
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn a_torn_last_entry_is_found_whatever_the_cut() {
    let d = tempfile::tempdir().unwrap();
    let store = keyed(d.path());
    let (recs, _) = records(&store, GENESIS, 1, 3);
    let whole = frame(&recs);
    assert_eq!(decode(&whole).entries, recs);
    assert_eq!(decode(&whole).torn, None);
    let two = frame(&recs[..2]).len();
    // Cut anywhere inside the third entry: the first two, and the rest named torn.
    for cut in two + 1..whole.len() {
        let seg = decode(&whole[..cut]);
        assert_eq!(seg.entries, recs[..2], "cut at {cut}");
        let (n, why) = seg.torn.expect("torn");
        assert_eq!(n, cut - two, "cut at {cut}");
        assert!(
            why.contains("header") || why.contains("record 3"),
            "cut at {cut}: {why}"
        );
    }
    // A changed byte anywhere in the third entry's payload: its checksum says so.
    for at in [two + HEADER, whole.len() - 1] {
        let mut bad = whole.clone();
        bad[at] ^= 0x20;
        let seg = decode(&bad);
        assert_eq!(seg.entries.len(), 2);
        assert!(seg.torn.unwrap().1.contains("checksum"), "byte {at}");
    }
}

#[test]
fn replay_puts_the_missing_records_in_once_and_the_chain_verifies() {
    let d = tempfile::tempdir().unwrap();
    let store = keyed(d.path());
    let wal = d.path().join("journal.wal");
    // Sled has 1..=3 on disk; the log has 2..=6 (a segment the flush had not removed yet,
    // and the records after it), the last one torn.
    let (recs, link) = records(&store, GENESIS, 1, 6);
    store.insert_raw(&recs[..3]).unwrap();
    store.flush().unwrap();
    store.anchor(3, &recs_link(&recs[2])).unwrap();
    write_segment(&wal, 2, &frame(&recs[1..4]));
    let mut newest = frame(&recs[4..6]);
    newest.truncate(newest.len() - 5);
    write_segment(&wal, 5, &newest);
    let got = replay(&store, &wal).unwrap();
    assert_eq!(got.records, 2, "{got:?}");
    assert_eq!(got.already, 2);
    assert!(got.torn.is_some());
    assert_eq!(store.head().unwrap().0, 5);
    let v = store.verify().unwrap();
    assert_eq!(v.broken, None, "{v:?}");
    assert_eq!(v.records, 5);
    assert_eq!(v.anchored, Some(5), "the head anchors the replayed end");
    assert!(segments(&wal).unwrap().is_empty(), "the log is removed");
    // The same log again (a crash before it was removed): nothing changes.
    write_segment(&wal, 2, &frame(&recs[1..5]));
    let again = replay(&store, &wal).unwrap();
    assert_eq!((again.records, again.already), (0, 4), "{again:?}");
    assert_eq!(store.verify().unwrap().records, 5);
    assert_eq!(store.raw_get(5).unwrap().unwrap(), recs[4].1, "same bytes");
    // Now the torn one's whole entry (it never was acknowledged; a later writer gave its id
    // to another record): it chains on as any other.
    write_segment(&wal, 6, &frame(&recs[5..6]));
    assert_eq!(replay(&store, &wal).unwrap().records, 1);
    assert_eq!(store.head().unwrap(), (6, link));
    assert_eq!(store.verify().unwrap().broken, None);
}

fn recs_link(r: &(u64, Vec<u8>)) -> String {
    let v: Value = serde_json::from_slice(&r.1).unwrap();
    v["hash"].as_str().unwrap().to_string()
}

#[test]
fn a_log_that_does_not_continue_the_chain_stops_the_replay_and_is_kept() {
    type Change = fn(&mut Vec<(u64, Vec<u8>)>) -> bool;
    let cases: [(&str, Change); 5] = [
        ("its MAC does not match", |r| {
            let mut v: Value = serde_json::from_slice(&r[1].1).unwrap();
            v["response_body"] = "changed".into();
            r[1].1 = serde_json::to_vec(&v).unwrap();
            false
        }),
        ("does not follow", |r| {
            r.remove(0);
            false
        }),
        ("prev link", |r| {
            // Another chain's record 4: right id, wrong prev.
            let mut v: Value = serde_json::from_slice(&r[0].1).unwrap();
            v["prev"] = GENESIS.into();
            r[0].1 = serde_json::to_vec(&v).unwrap();
            false
        }),
        ("is not the journal's record 3", |r| {
            let mut v: Value = serde_json::from_slice(&r[0].1).unwrap();
            v["id"] = 3.into();
            r[0] = (3, serde_json::to_vec(&v).unwrap());
            false
        }),
        ("a newer segment follows", |_| true),
    ];
    for (want, change) in cases {
        let d = tempfile::tempdir().unwrap();
        let store = keyed(d.path());
        let wal = d.path().join("journal.wal");
        let (mut recs, _) = records(&store, GENESIS, 1, 6);
        store.insert_raw(&recs[..3]).unwrap();
        store.flush().unwrap();
        let mut log = recs.split_off(3);
        let torn_older = change(&mut log);
        let mut bytes = frame(&log);
        if torn_older {
            bytes.truncate(bytes.len() - 3);
            write_segment(&wal, 7, &frame(&log[..0]));
            write_segment(&wal, 9, b"x");
        }
        write_segment(&wal, 4, &bytes);
        let e = replay(&store, &wal).unwrap_err().to_string();
        assert!(e.contains(want), "{want}: {e}");
        assert!(e.contains("journal.wal"), "names the log: {e}");
        assert_eq!(store.head().unwrap().0, 3, "{want}: nothing put in");
        assert!(
            !segments(&wal).unwrap().is_empty(),
            "{want}: kept as evidence"
        );
    }
}

#[test]
fn a_failed_append_leaves_no_partial_entry() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("w");
    let mut w = Wal::create(&dir, 1).unwrap();
    w.append(&frame(&[(1, b"{}".to_vec())]), 1).unwrap();
    w.rotate(2).unwrap();
    w.append(&frame(&[(2, b"{}".to_vec())]), 2).unwrap();
    assert_eq!(segments(&dir).unwrap().len(), 2);
    assert_eq!(w.remove_sealed().unwrap(), 1);
    let left = segments(&dir).unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(decode(&std::fs::read(&left[0]).unwrap()).entries.len(), 1);
    // An empty segment is not rotated away.
    w.rotate(3).unwrap();
    w.rotate(3).unwrap();
    assert_eq!(segments(&dir).unwrap().len(), 2);
    assert_eq!(pending(&dir), 1);
}

#[test]
fn the_exchange_is_told_once_its_record_is_in_the_log_and_the_flush_follows() {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let d = tempfile::tempdir().unwrap();
    let cfg = JournalConfig {
        flush_delay: std::time::Duration::from_millis(1500),
        ..Default::default()
    };
    let wal = cfg.wal_dir(d.path());
    let j = std::sync::Arc::new(Journal::open(&cfg, d.path()).unwrap());
    let mut head = j.watch_head();
    assert_eq!(
        std::fs::metadata(&wal).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let mut ex = crate::journal::Exchange::new(Some(j.clone()), &Default::default(), 1);
    ex.rec.provider = "openai".into();
    ex.rec.response_body = Some("hello".into());
    let t = std::time::Instant::now();
    let id = ex
        .finish("completed")
        .unwrap()
        .blocking_recv()
        .unwrap()
        .unwrap();
    let told = t.elapsed();
    assert_eq!(id, 1);
    // Told before the flush: the record is in the log (whole, with its MAC), the durable head
    // the consumers read up to is not there yet.
    assert!(told < cfg.flush_delay, "told after {told:?}");
    assert_eq!(*head.borrow(), 0, "published before it is on disk");
    let segs = segments(&wal).unwrap();
    assert_eq!(segs.len(), 1);
    assert_eq!(std::fs::metadata(&segs[0]).unwrap().mode() & 0o777, 0o600);
    let seg = decode(&std::fs::read(&segs[0]).unwrap());
    assert_eq!(seg.entries.len(), 1);
    assert_eq!(seg.entries[0].1, j.store.raw_get(1).unwrap().unwrap());
    // The flush follows: published, anchored, the log's segment gone.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            head.wait_for(|h| *h == 1),
        )
        .await
        .expect("flushed within 5 s")
        .unwrap();
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while pending(&wal) > 0 {
        assert!(std::time::Instant::now() < deadline, "segment not removed");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(j.store.verify().unwrap().anchored, Some(1));
}

#[test]
fn disk_mode_tells_the_exchange_after_the_flush_and_writes_no_log() {
    let d = tempfile::tempdir().unwrap();
    let cfg = JournalConfig {
        sync: crate::journal::SyncMode::Disk,
        ..Default::default()
    };
    let j = std::sync::Arc::new(Journal::open(&cfg, d.path()).unwrap());
    let head = j.watch_head();
    let ex = crate::journal::Exchange::new(Some(j.clone()), &Default::default(), 1);
    let id = ex
        .finish("completed")
        .unwrap()
        .blocking_recv()
        .unwrap()
        .unwrap();
    // Published by the writer right after the flush it acked.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while *head.borrow() != id {
        assert!(std::time::Instant::now() < deadline, "not published");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(pending(&cfg.wal_dir(d.path())), 0);
    assert_eq!(j.store.verify().unwrap().anchored, Some(id));
}

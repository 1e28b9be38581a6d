//! The store's chain, keyed: what verify names for each kind of tampering.
use super::*;

#[test]
fn the_journal_is_private_whatever_the_umask() {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("journal");
    // An earlier version's journal, world-readable.
    std::fs::create_dir(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let store = keyed(d.path(), &path);
    chain(&store, 3, |i| i);
    store.db.flush().unwrap();
    drop(store);
    let _ = Store::open(&path, None).unwrap();
    let mut seen = 0;
    let mut stack = vec![path.clone()];
    while let Some(dir) = stack.pop() {
        assert_eq!(
            std::fs::metadata(&dir).unwrap().mode() & 0o777,
            0o700,
            "{dir:?}"
        );
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                seen += 1;
                let mode = e.metadata().unwrap().mode() & 0o777;
                assert_eq!(mode, 0o600, "{:?}", e.path());
            }
        }
    }
    assert!(seen >= 2, "sled's files were looked at ({seen})");
    // The key and the head beside it too.
    for f in ["journal.key", "journal.head"] {
        let mode = std::fs::metadata(d.path().join(f)).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
}

/// A keyed store at `path`, its key and head in `dir`.
pub(crate) fn keyed(dir: &Path, path: &Path) -> Store {
    let (seal, created) =
        Seal::load_or_create(&dir.join("journal.key"), &dir.join("journal.head")).unwrap();
    let store = Store::open(path, Some(seal)).unwrap();
    if created {
        store.adopt_key().unwrap();
    }
    store
}

fn rec(id: u64, prev: &str, time_ms: u64, text: &str) -> Record {
    Record {
        id,
        time_ms,
        prev: prev.to_string(),
        response_body: Some(text.to_string()),
        // Floats must survive the JSON round trip exactly for the link to hold.
        duration_ms: 31.468065000000003,
        ttfb_ms: Some(0.1 + 0.2),
        ..Default::default()
    }
}

/// `n` records as the writer writes them (keyed when the store has its key, else the old
/// unkeyed chain), one group each, the head anchored after each.
fn chain(store: &Store, n: u64, time_ms: impl Fn(u64) -> u64) {
    let (mut last, mut head) = store.head().unwrap();
    for _ in 0..n {
        last += 1;
        let mut r = rec(last, &head, time_ms(last), &format!("answer {last}"));
        let v = serde_json::to_value(&r).unwrap();
        r.hash = match &store.seal {
            Some(s) => s.record_mac(&head, &v),
            None => chain_hash(&head, &v),
        };
        head = r.hash.clone();
        store.append(&[r]).unwrap();
        if store.seal.is_some() {
            store.anchor(last, &head).unwrap();
        }
    }
}

fn broken(store: &Store) -> Broken {
    let v = store.verify().unwrap();
    v.broken
        .clone()
        .unwrap_or_else(|| panic!("verifies: {v:?}"))
}

#[test]
fn a_chain_verifies_and_a_changed_byte_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let store = keyed(dir.path(), &dir.path().join("j"));
    chain(&store, 5, |_| 1);
    let v = store.verify().unwrap();
    assert_eq!((v.records, v.broken, v.anchored), (5, None, Some(5)));
    let mut raw = store.raw_get(4).unwrap().unwrap();
    let at = raw.windows(8).position(|w| w == b"answer 4").unwrap();
    raw[at] = b'A';
    store.raw_put(4, &raw).unwrap();
    let b = broken(&store);
    assert_eq!((b.id, b.kind), (4, BreakKind::Record), "{b:?}");
    assert!(b.reason.contains("MAC does not match"), "{b:?}");
    // A removed record is named too (where the next one does not follow).
    store.raw_remove(2).unwrap();
    assert_eq!(broken(&store).id, 3);
}

#[test]
fn a_chain_recomputed_without_the_key_fails_at_its_first_record() {
    let dir = tempfile::tempdir().unwrap();
    let store = keyed(dir.path(), &dir.path().join("j"));
    chain(&store, 4, |_| 1);
    // Change record 2 and rewrite every link from the first record, as anyone could with
    // an unkeyed hash; the head file is left as it is (it cannot be forged either).
    let mut prev = GENESIS.to_string();
    for id in 1..=4 {
        let mut v = store.get(id).unwrap().unwrap();
        if id == 2 {
            v["response_body"] = "rewritten".into();
        }
        v["prev"] = prev.clone().into();
        let h = chain_hash(&prev, &v);
        v["hash"] = h.clone().into();
        prev = h;
        store.raw_put(id, &serde_json::to_vec(&v).unwrap()).unwrap();
    }
    let v = store.verify().unwrap();
    let b = v.broken.clone().unwrap();
    assert_eq!(b.id, 1, "{v:?}");
    assert!(b.reason.contains("without the journal key"), "{b:?}");
    // And the head no longer matches the last record either.
    assert!(
        v.breaks
            .iter()
            .any(|b| b.kind == BreakKind::Head && b.reason.contains("replaced")),
        "{v:?}"
    );
}

#[test]
fn records_removed_from_the_end_or_an_older_copy_fail_by_the_head() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    let store = keyed(dir.path(), &path);
    chain(&store, 3, |_| 1);
    let old = dir.path().join("old");
    drop(store);
    copy_dir(&path, &old);
    let store = keyed(dir.path(), &path);
    chain(&store, 3, |_| 1);
    assert_eq!(store.verify().unwrap().broken, None);
    // Truncated: the last two records gone.
    store.raw_remove(6).unwrap();
    store.raw_remove(5).unwrap();
    let v = store.verify().unwrap();
    let b = v.anchor_break().unwrap();
    assert_eq!(b.id, 5, "{v:?}");
    assert!(b.reason.contains("ends at record 4") && b.reason.contains("record 6"));
    drop(store);
    // The older copy put back.
    std::fs::remove_dir_all(&path).unwrap();
    copy_dir(&old, &path);
    let store = keyed(dir.path(), &path);
    let b = broken(&store);
    assert_eq!(b.kind, BreakKind::Head);
    assert!(b.reason.contains("an older copy"), "{b:?}");
    // A deleted head is named too.
    std::fs::remove_file(dir.path().join("journal.head")).unwrap();
    let b = broken(&store);
    assert!(b.reason.contains("is missing"), "{b:?}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

#[test]
fn reordered_records_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let store = keyed(dir.path(), &dir.path().join("j"));
    chain(&store, 4, |_| 1);
    let (two, three) = (
        store.raw_get(2).unwrap().unwrap(),
        store.raw_get(3).unwrap().unwrap(),
    );
    store.raw_put(2, &three).unwrap();
    store.raw_put(3, &two).unwrap();
    let b = broken(&store);
    assert_eq!(b.id, 2);
    assert!(b.reason.contains("reordered"), "{b:?}");
}

#[test]
fn pruning_keeps_the_rest_verifiable_from_a_macd_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    {
        let store = keyed(dir.path(), &path);
        chain(&store, 6, |id| id * 1000);
        assert_eq!(store.prune(3500).unwrap(), 3);
        let v = store.verify().unwrap();
        assert_eq!((v.records, v.broken.clone()), (3, None), "{v:?}");
        assert_eq!(v.checkpoint.as_ref().unwrap().first_id, 4);
        // New records go on after the last one.
        chain(&store, 2, |id| id * 1000);
        assert_eq!(store.verify().unwrap().records, 5);
    }
    // And after a reopen; the lock is exclusive while it is open.
    let store = keyed(dir.path(), &path);
    assert!(matches!(
        Store::open(&path, None),
        Err(StoreError::Locked { .. })
    ));
    let v = store.verify().unwrap();
    assert_eq!((v.records, v.broken), (5, None));
    assert_eq!(store.head().unwrap().0, 8);
    // A forged checkpoint (more records "pruned", the start moved on): refused.
    let mut cp = store.checkpoint().unwrap().unwrap();
    cp.first_id = 6;
    cp.prev = store.get(5).unwrap().unwrap()["hash"]
        .as_str()
        .unwrap()
        .into();
    store.raw_remove(4).unwrap();
    store.raw_remove(5).unwrap();
    store
        .raw_put_meta("checkpoint", &serde_json::to_vec(&cp).unwrap())
        .unwrap();
    let b = broken(&store);
    assert_eq!((b.id, b.kind), (6, BreakKind::Anchor));
    assert!(b.reason.contains("checkpoint") && b.reason.contains("forged"));
}

#[test]
fn an_unkeyed_journal_is_adopted_and_checked_by_its_old_chain_up_to_the_marker() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    {
        // An earlier version's journal: no key, the unkeyed chain.
        let old = Store::open(&path, None).unwrap();
        chain(&old, 3, |_| 1);
        assert!(matches!(old.verify(), Err(StoreError::Unkeyed(_))));
    }
    let store = keyed(dir.path(), &path);
    chain(&store, 2, |_| 1);
    let v = store.verify().unwrap();
    assert_eq!(
        (v.records, v.keyed_from, v.broken.clone()),
        (5, Some(4), None),
        "{v:?}"
    );
    // An old record changed: named by the old chain.
    let mut raw = store.raw_get(2).unwrap().unwrap();
    let at = raw.windows(8).position(|w| w == b"answer 2").unwrap();
    raw[at] = b'B';
    store.raw_put(2, &raw).unwrap();
    let b = broken(&store);
    assert_eq!(b.id, 2);
    assert!(b.reason.contains("unkeyed"), "{b:?}");
    // Recompute the old chain after the change: the first keyed record no longer follows.
    let mut prev = GENESIS.to_string();
    for id in 1..=3 {
        let mut v = store.get(id).unwrap().unwrap();
        v["prev"] = prev.clone().into();
        let h = chain_hash(&prev, &v);
        v["hash"] = h.clone().into();
        prev = h;
        store.raw_put(id, &serde_json::to_vec(&v).unwrap()).unwrap();
    }
    let b = broken(&store);
    assert_eq!(b.id, 4, "{b:?}");
    // The marker moved on (to pass more records off as unkeyed): its MAC fails.
    let mut m: Marker = serde_json::from_slice(&store.meta.get(MARKER).unwrap().unwrap()).unwrap();
    m.id = 6;
    store
        .raw_put_meta("keyed_from", &serde_json::to_vec(&m).unwrap())
        .unwrap();
    let v = store.verify().unwrap();
    let b = v.anchor_break().unwrap();
    assert!(b.reason.contains("marker"), "{v:?}");
}

#[test]
fn group_commit_cost_with_and_without_the_head() {
    // A measurement, printed (run with --nocapture): a group of 8 small records, flushed,
    // with and without the head file written after it. Timings are not asserted.
    let base = std::env::var_os("JOURNAL_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::current_dir().unwrap());
    let dir = tempfile::tempdir_in(&base).unwrap();
    let store = keyed(dir.path(), &dir.path().join("j"));
    let seal = store.seal().unwrap();
    let (mut last, mut head) = store.head().unwrap();
    let rounds = 200;
    let run = |anchor: bool, last: &mut u64, head: &mut String| {
        let t = std::time::Instant::now();
        for _ in 0..rounds {
            let mut group = Vec::new();
            for _ in 0..8 {
                *last += 1;
                let mut r = rec(*last, head, 1, "a short answer");
                r.hash = seal.record_mac(head, &serde_json::to_value(&r).unwrap());
                *head = r.hash.clone();
                group.push(r);
            }
            store.append(&group).unwrap();
            if anchor {
                store.anchor(*last, head).unwrap();
            }
        }
        t.elapsed() / rounds
    };
    let without = run(false, &mut last, &mut head);
    store.anchor(last, &head).unwrap();
    let with = run(true, &mut last, &mut head);
    let t = std::time::Instant::now();
    for _ in 0..rounds {
        store.anchor(last, &head).unwrap();
    }
    let alone = t.elapsed() / rounds;
    eprintln!(
        "group commit (8 records) on {}: {without:?} without the head, {with:?} with it; \
         the head write alone {alone:?}",
        base.display()
    );
    let v = store.verify().unwrap();
    assert_eq!(
        (v.records, v.broken, v.anchored),
        (8 * 2 * rounds as u64, None, Some(last))
    );
}

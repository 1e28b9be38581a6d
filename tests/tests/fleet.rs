//! The fleet bus end to end (issue I): one real nats-server with JetStream and two gateways,
//! each in a network namespace of its own with its own fake provider and cgroup
//! (`gateway_tests::fleet`). Net bytes 220-229.

use std::time::{Duration, Instant};

use gateway_tests::fleet::{FleetWorld, chat_result, journal_on_stream, on_bus, spawn_chat};

const HOLD: &str = "[hold]\nkeywords = [\"hold-me\"]\ntimeout = \"3m\"\n# The tests run every client as root.\nself_approval = true\n";

/// A hold on node A is listed on node B with the same fleet id and node; B's local root may
/// not decide it (local rights count on the holding node only); A's may, and the client's
/// request completes.
#[test]
fn a_hold_on_one_node_is_listed_on_the_other_with_the_same_fleet_id() {
    let w = FleetWorld::start(
        "gw-fleet-list",
        220,
        2,
        &format!("decide_timeout = \"2s\"\n{HOLD}"),
    );
    let (a, b) = (&w.nodes[0], &w.nodes[1]);
    let mut client = spawn_chat(a, "please hold-me for a moment");
    let on_a = a.wait_holds(Duration::from_secs(90), |h| h.len() == 1);
    let id = on_a[0]["id"]
        .as_str()
        .expect("a fleet id string")
        .to_string();
    assert_eq!(on_a[0]["node"], "node-a");
    assert_eq!(id, format!("node-a:{}", on_a[0]["hold"]));
    // The same hold, the same id, on B (through the bus), masked excerpt and all.
    let on_b = b.wait_holds(Duration::from_secs(5), |h| {
        h.iter().any(|x| x["id"] == id.as_str())
    });
    let hb = on_b.iter().find(|x| x["id"] == id.as_str()).unwrap();
    assert_eq!(hb["node"], "node-a");
    assert_eq!(hb["excerpt"], on_a[0]["excerpt"]);
    assert_eq!(hb["provider"], "openai");
    // B's root is refused: a hold on another node needs a signed-in approver.
    let out = b.gw.cli(&["approvals", "approve", &id]);
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("counts only on the node"), "{err}");
    assert!(
        client.try_wait().unwrap().is_none(),
        "the request was released"
    );
    assert_eq!(
        a.holds().len(),
        1,
        "the hold must stay after a refused decision"
    );
    // A's root decides it by the fleet id.
    let out = a.gw.cli(&["approvals", "approve", &id]);
    assert!(out.status.success(), "{out:?}");
    let r = chat_result(client);
    assert!(r["text"].is_string(), "{r}");
    let seen = a.fake.seen();
    assert!(
        seen.iter().any(|s| s
            .credentials()
            .iter()
            .any(|c| c.contains("sk-real-key-of-node-a"))),
        "the provider did not get node A's key"
    );
    // Gone from B's list once A published the decision.
    b.wait_holds(Duration::from_secs(5), |h| h.is_empty());
}

/// A bus outage in the middle of a burst: A keeps serving and journaling; when the server
/// returns, A catches up from its cursor and every record is on the stream exactly once;
/// `journal verify --fleet` passes, and fails once a record on the stream is tampered with.
#[test]
fn a_bus_outage_loses_nothing_and_doubles_nothing_and_verify_fleet_checks_every_chain() {
    let mut w = FleetWorld::start("gw-fleet-outage", 222, 2, HOLD);
    for i in 0..5 {
        assert_eq!(w.nodes[0].curl_chat(&format!("before {i}")), 200);
    }
    assert_eq!(w.nodes[1].curl_chat("from b"), 200);
    let wait_stream = |w: &FleetWorld, node: usize, n: usize| {
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            let name = w.nodes[node].name.clone();
            let on = on_bus(&w.nodes[node], async move |js| {
                journal_on_stream(&js, &name).await
            });
            if on.len() >= n {
                return on;
            }
            assert!(
                Instant::now() < end,
                "{} records of {} on the stream, want {n}\n{}",
                on.len(),
                w.nodes[node].name,
                w.nodes[node].gw.raw_log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_stream(&w, 0, 5);
    // The burst, with the bus gone half way.
    for i in 0..10 {
        assert_eq!(w.nodes[0].curl_chat(&format!("burst {i}")), 200);
    }
    w.nats.stop();
    for i in 10..30 {
        assert_eq!(
            w.nodes[0].curl_chat(&format!("burst {i}")),
            200,
            "node A must serve while the bus is down\n{}",
            w.nodes[0].gw.raw_log()
        );
    }
    // A hold made while the bus is down stays held (nothing is approved by default).
    let mut held = spawn_chat(&w.nodes[0], "hold-me while the bus is down");
    let h = w.nodes[0].wait_holds(Duration::from_secs(90), |h| h.len() == 1);
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        held.try_wait().unwrap().is_none(),
        "the held request was answered"
    );
    let a_ids = w.nodes[0].journal_ids();
    assert_eq!(a_ids.len(), 5 + 30, "A journaled every exchange: {a_ids:?}");
    w.nats.resume();
    let on = wait_stream(&w, 0, a_ids.len());
    std::thread::sleep(Duration::from_millis(500));
    let name = w.nodes[0].name.clone();
    let on_after = on_bus(&w.nodes[0], async move |js| {
        journal_on_stream(&js, &name).await
    });
    assert_eq!(
        on.len(),
        on_after.len(),
        "more records kept coming: doubled?"
    );
    let mut ids: Vec<u64> = on_after.iter().map(|(_, id)| *id).collect();
    assert_eq!(
        ids, a_ids,
        "every record of A exactly once, in order: {on_after:?}"
    );
    ids.dedup();
    assert_eq!(ids.len(), a_ids.len());
    // The hold is still there, and A's root still decides it.
    assert_eq!(w.nodes[0].holds().len(), 1);
    let id = h[0]["id"].as_str().unwrap().to_string();
    let out = w.nodes[0]
        .gw
        .cli(&["approvals", "deny", &id, "--reason", "not now"]);
    assert!(out.status.success(), "{out:?}");
    let r = chat_result(held);
    assert_eq!(r["status"], 403, "{r}");
    wait_stream(&w, 0, a_ids.len() + 1);
    wait_stream(&w, 1, 1);

    // Every node's chain, from the stream.
    let out = w.nodes[1].cli_in_ns(&["journal", "verify", "--fleet"]);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("fleet journal verified"), "{text}");
    assert!(
        text.contains(&format!("node node-a: {} records", a_ids.len() + 1)),
        "{text}"
    );
    assert!(text.contains("node node-b: 1 records"), "{text}");
    assert!(text.contains("keyed hashes checked"), "{text}");

    // Tamper: record 3 of A replaced on the stream by a copy with another status, its
    // signature kept.
    let seq3 = on_after.iter().find(|(_, id)| *id == 3).unwrap().0;
    on_bus(&w.nodes[0], async move |js| {
        let s = js.get_stream("GW_JOURNAL").await.unwrap();
        let m = s.get_raw_message(seq3).await.unwrap();
        let body = String::from_utf8(m.payload.to_vec()).unwrap();
        let forged = body.replacen("\"status\":200", "\"status\":201", 1);
        assert_ne!(forged, body);
        assert!(s.delete_message(seq3).await.unwrap());
        let mut h = async_nats::HeaderMap::new();
        for k in ["Gw-Node", "Gw-Id", "Gw-Sig"] {
            h.insert(k, m.headers.get(k).unwrap().as_str());
        }
        js.publish_with_headers("gw.journal.node-a", h, forged.into())
            .await
            .unwrap()
            .await
            .unwrap();
    });
    let out = w.nodes[1].cli_in_ns(&["journal", "verify", "--fleet"]);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("BROKEN"), "{text}");
    assert!(text.contains("signature does not match"), "{text}");
    // Only A's chain is broken; B's (checked with its own keys: verify runs on B) is intact.
    assert!(
        text.contains("node node-b: 1 records (1..=1), signatures checked with its own key, keyed hashes checked with this node's journal key: chain intact"),
        "{text}"
    );
}

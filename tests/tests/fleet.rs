//! The fleet bus end to end (issue I): one real nats-server with JetStream and two gateways,
//! each in a network namespace of its own with its own fake provider and cgroup
//! (`gateway_tests::fleet`). Net bytes 220-229.

use std::time::{Duration, Instant};

use gateway_tests::{
    fleet::{FleetWorld, chat_result, journal_on_stream, on_bus, spawn_chat},
    oidc::{ALICE, BOB, CLI_CLIENT, OTHER_CLIENT, OidcProvider},
};

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

/// `tokens.json` as `gateway login` keeps it, for a signed-in `user`, in a fresh home.
fn signed_in(idp: &OidcProvider, user: &str) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt as _;
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("gateway");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let t = idp.token_for(CLI_CLIENT, user);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let kept = serde_json::json!({
        "issuer": idp.issuer,
        "client_id": CLI_CLIENT,
        "id_token": t["id_token"],
        "refresh_token": t["refresh_token"],
        "expires": now + t["expires_in"].as_u64().unwrap_or(600),
    });
    let f = dir.join("tokens.json");
    std::fs::write(&f, kept.to_string()).unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    home
}

/// A hold on node A approved from node B by a signed-in approver (OIDC, the real
/// oidc-provider): the decision goes over the bus with her ID token, A verifies it itself and
/// releases the request; the journal on A names her. A non-approver's token is refused and
/// the hold stays. Both nodes accept two audiences (`[oidc] audience`, as for the CLI's and
/// the approval page's clients): a token issued to the second client decides a second hold.
#[test]
fn a_hold_on_node_a_is_approved_from_node_b_by_a_signed_in_approver() {
    let idp = OidcProvider::start(224);
    let issuer: std::net::SocketAddr = idp.issuer.trim_start_matches("https://").parse().unwrap();
    let extra = format!(
        "{}audience = [\"{CLI_CLIENT}\", \"{OTHER_CLIENT}\"]\n\
         [hold]\nkeywords = [\"hold-me\"]\ntimeout = \"3m\"\napprovers = [\"@oidc:llm-approvers\"]\n",
        idp.config(CLI_CLIENT)
    );
    let w = FleetWorld::start_with("gw-fleet-oidc", 225, 2, &extra, &[issuer]);
    let (a, b) = (&w.nodes[0], &w.nodes[1]);
    let client = spawn_chat(a, "hold-me: deploy the release");
    a.wait_holds(Duration::from_secs(90), |h| h.len() == 1);
    let on_b = b.wait_holds(Duration::from_secs(5), |h| h.len() == 1);
    let id = on_b[0]["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("node-a:"), "{id}");

    let cli = |home: &tempfile::TempDir, args: &[&str]| {
        std::process::Command::new(gateway_tests::gateway_bin())
            .args(args)
            .arg("-c")
            .arg(&b.gw.config)
            .env("XDG_CONFIG_HOME", home.path())
            .output()
            .unwrap()
    };
    // Bob signed in, but he is no approver: refused, the hold stays.
    let bob = signed_in(&idp, BOB);
    let out = cli(&bob, &["approvals", "approve", &id]);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not an approver"),
        "{out:?}"
    );
    assert_eq!(a.holds().len(), 1);
    // Alice (llm-approvers) approves it from B.
    let alice = signed_in(&idp, ALICE);
    let t0 = Instant::now();
    let out = cli(&alice, &["approvals", "approve", &id]);
    assert!(
        out.status.success(),
        "{out:?}\n{}\n{}",
        b.gw.raw_log(),
        a.gw.raw_log()
    );
    let r = chat_result(client);
    assert!(r["text"].is_string(), "{r}");
    eprintln!("decision on B → answer on A: {:?}", t0.elapsed());
    // A applied it itself, after checking her token; its journal names her.
    a.wait_log("decision from the bus applied", Duration::from_secs(5));
    let out = a.gw.cli(&["journal", "list", "--json"]);
    let recs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let held = recs
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["approval"].is_object())
        .expect("a record with its approval");
    assert_eq!(held["approval"]["outcome"], "approved", "{held}");
    assert_eq!(held["approval"]["by"], "oidc:alice", "{held}");
    // No ID token in the journal or the logs of either node, nor on the stream.
    let tok = std::fs::read_to_string(alice.path().join("gateway/tokens.json")).unwrap();
    let tok: serde_json::Value = serde_json::from_str(&tok).unwrap();
    let tok = tok["id_token"].as_str().unwrap();
    let sig = tok.rsplit('.').next().unwrap();
    for log in [
        a.gw.raw_log(),
        b.gw.raw_log(),
        String::from_utf8_lossy(&out.stdout).to_string(),
    ] {
        assert!(!log.contains(sig), "an ID token was logged");
    }
    b.wait_holds(Duration::from_secs(5), |h| h.is_empty());

    // A second hold, decided with her token for the second accepted client (the page's, in
    // a real deployment): A accepts that audience too.
    let client = spawn_chat(a, "hold-me: and the hotfix");
    let on_b = b.wait_holds(Duration::from_secs(90), |h| h.len() == 1);
    let id = on_b[0]["id"].as_str().unwrap().to_string();
    // Straight to B's admin socket with the bearer token, as a page or script would (the CLI
    // keeps tokens of its own client only).
    let token = idp.id_token(OTHER_CLIENT, ALICE);
    let out = std::process::Command::new("curl")
        .args(["-sS", "--unix-socket"])
        .arg(b.gw.dir.path().join("state/admin.sock"))
        .args(["-H", &format!("authorization: Bearer {token}")])
        .args([
            "-H",
            "content-type: application/json",
            "-d",
            r#"{"reason":"not today"}"#,
        ])
        .args(["-w", "\n%{http_code}"])
        .arg(format!("http://gateway/v1/approvals/{id}/deny"))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.ends_with("\n200"),
        "{text}\n{}\n{}",
        b.gw.raw_log(),
        a.gw.raw_log()
    );
    let r = chat_result(client);
    assert_eq!(r["status"], 403, "{r}");
    assert!(
        r["error"].as_str().is_some_and(|e| e.contains("alice")),
        "the SDK sees who denied it: {r}"
    );
    b.wait_holds(Duration::from_secs(5), |h| h.is_empty());
}

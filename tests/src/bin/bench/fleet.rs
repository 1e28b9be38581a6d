//! Issue I figure: the time from a decision to the held request reaching the provider, when
//! the decision is taken on another node (it travels over the bus to the holding node, which
//! verifies the approver's ID token itself) vs on the holding node (the same-node baseline).
//!
//! The world of `tests/fleet.rs` (`gateway_tests::fleet`): one real nats-server with
//! JetStream, two gateways (`node-a`, `node-b`) in network namespaces of their own, a real
//! OpenID provider (npm `oidc-provider`). Each sample is a real client request (curl, in node
//! A's cgroup, through the eBPF redirect) held on node A by a `hold` keyword rule, then
//! approved by the signed-in approver (Alice, `@oidc:llm-approvers`) with one `POST
//! /v1/approvals/ID/approve` (bearer ID token) on the admin Unix socket of node B (remote) or
//! node A (local): the admin API directly, no CLI process per decision. The clock starts just
//! before that request is written and stops when node A's fake provider has the held request's
//! head ([`gateway_tests::provider::Seen::at`], taken in the fake, not at the client). Samples
//! alternate between the two sides so machine noise hits both alike. Net bytes 150 (the OpenID
//! provider) and 151 (the fleet).

use std::{
    path::PathBuf,
    process::{Child, Stdio},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use gateway::admin;
use gateway_tests::{
    fleet::{FleetWorld, Node},
    oidc::{ALICE, CLI_CLIENT, OidcProvider},
};
use serde_json::{Value, json};

/// Held requests per side (`BENCH_FLEET_N` overrides).
const N: usize = 50;
/// Untimed rounds per side first: the JWKS fetch, upstream connections, TLS sessions.
const WARMUP: usize = 3;
const NET_IDP: u8 = 150;
const NET_FLEET: u8 = 151;

/// Where a decision is issued.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    /// On node B: over the bus to node A.
    Remote,
    /// On node A, the holding node.
    Local,
}

/// One decision's timings, ms.
struct Sample {
    /// Decision issued → the fake provider has the held request.
    upstream: f64,
    /// Decision issued → the admin API answered it.
    answered: f64,
    /// The hold's fleet id and the wall clock when the decision was issued: matched with node
    /// A's `hold approved` log line afterwards, to split the time where the request woke.
    id: String,
    issued: SystemTime,
}

fn socket(n: &Node) -> PathBuf {
    admin::socket_path(&n.gw.dir.path().join("state"))
}

fn pending(n: &Node) -> Vec<Value> {
    let (status, v) = admin::call(&socket(n), "GET", "/v1/approvals", None)
        .unwrap_or_else(|e| panic!("{}: admin API: {e}", n.name));
    assert_eq!(status, 200, "{}: GET /v1/approvals: {v}", n.name);
    v["holds"].as_array().cloned().unwrap_or_default()
}

/// The fleet id of the one pending hold whose excerpt names `marker`, once `n` lists it.
fn wait_hold(n: &Node, marker: &str, client: &mut Child) -> String {
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(h) = pending(n)
            .iter()
            .find(|h| h["excerpt"].as_str().is_some_and(|e| e.contains(marker)))
        {
            return h["id"].as_str().expect("a fleet id").to_string();
        }
        if let Ok(Some(st)) = client.try_wait() {
            panic!("the client ended ({st}) before its request was held");
        }
        assert!(
            Instant::now() < end,
            "{}: no hold for {marker:?}\n{}",
            n.name,
            n.gw.raw_log()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// When `a`'s fake provider got the request carrying `marker`.
fn wait_upstream(a: &Node, marker: &str) -> Instant {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(s) = a
            .fake
            .seen()
            .iter()
            .find(|s| s.body.windows(marker.len()).any(|w| w == marker.as_bytes()))
        {
            return s.at;
        }
        assert!(
            Instant::now() < end,
            "the approved request for {marker:?} never reached the provider\n{}",
            a.gw.raw_log()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// One held request on node A, decided on `side`.
fn sample(w: &FleetWorld, side: Side, i: usize, token: &str) -> Sample {
    let (a, b) = (&w.nodes[0], &w.nodes[1]);
    let tag = if side == Side::Remote {
        "remote"
    } else {
        "local"
    };
    // Ends in a delimiter: no marker is a prefix of another.
    let marker = format!("fleet-bench-{tag}-{i}-end");
    let body = json!({
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": format!("hold-me: {marker}")}],
    })
    .to_string();
    let mut client = a
        .client(
            "curl",
            &[
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "120",
                "--cacert",
                a.ca.to_str().unwrap(),
                "-H",
                "authorization: Bearer sk-dummy-of-the-workload",
                "-H",
                "content-type: application/json",
                "-d",
                &body,
                "https://api.openai.com/v1/chat/completions",
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("curl");
    let id = wait_hold(a, &marker, &mut client);
    let decider = match side {
        Side::Remote => {
            // As an approver would: she sees it listed on B (published over the bus) first.
            wait_hold(b, &marker, &mut client);
            b
        }
        Side::Local => a,
    };
    assert!(
        a.fake
            .seen()
            .iter()
            .all(|s| !s.body.windows(marker.len()).any(|w| w == marker.as_bytes())),
        "the held request reached the provider before it was approved"
    );
    let target = format!("/v1/approvals/{id}/approve");
    let reason = json!({"reason": "fleet benchmark"});
    let (t0, issued) = (Instant::now(), SystemTime::now());
    let (status, v) = admin::call_as(
        &socket(decider),
        "POST",
        &target,
        Some(&reason),
        Some(token),
    )
    .unwrap_or_else(|e| panic!("{}: admin API: {e}", decider.name));
    let answered = t0.elapsed();
    assert_eq!(status, 200, "{}: approve {id}: {v}", decider.name);
    assert_eq!(v["by"], "oidc:alice", "{v}");
    let at = wait_upstream(a, &marker);
    let out = client.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "200",
        "the approved request's answer: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Sample {
        upstream: at.saturating_duration_since(t0).as_secs_f64() * 1e3,
        answered: answered.as_secs_f64() * 1e3,
        id,
        issued,
    }
}

/// Seconds since the epoch of an RFC 3339 UTC time as the gateway's JSON log writes it
/// (`2026-12-01T23:55:00.123456Z`).
fn rfc3339(t: &str) -> Option<f64> {
    let (date, time) = t.strip_suffix('Z')?.split_once('T')?;
    let d: Vec<i64> = date
        .split('-')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let (h, rest) = time.split_once(':')?;
    let (m, sec) = rest.split_once(':')?;
    let [y, mo, da] = d[..] else { return None };
    // Days from the civil date (H. Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((mo + 9) % 12) + 2) / 5 + da - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let h: i64 = h.parse().ok()?;
    let m: i64 = m.parse().ok()?;
    let sec: f64 = sec.parse().ok()?;
    Some((days * 86_400 + h * 3_600 + m * 60) as f64 + sec)
}

/// Node A's `hold approved` log lines (the held request's task, right after it woke): fleet
/// id → when (seconds since the epoch).
fn woke_at(a: &Node) -> std::collections::HashMap<String, f64> {
    a.gw.events()
        .iter()
        .filter(|e| gateway_tests::message(e) == "hold approved")
        .filter_map(|e| {
            let id = format!("{}:{}", a.name, e["fields"]["hold"].as_u64()?);
            Some((id, rfc3339(e["timestamp"].as_str()?)?))
        })
        .collect()
}

/// Issued → the held request woke on node A, ms, for each sample.
fn to_wake(v: &[Sample], at: &std::collections::HashMap<String, f64>) -> Vec<f64> {
    v.iter()
        .map(|s| {
            let issued = s.issued.duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
            let t = at
                .get(&s.id)
                .unwrap_or_else(|| panic!("no `hold approved` line for {} on node A", s.id));
            (t - issued) * 1e3
        })
        .collect()
}

struct Stats {
    p50: f64,
    p99: f64,
    mean: f64,
    max: f64,
}

fn stats(mut v: Vec<f64>) -> Stats {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Stats {
        p50: crate::percentile(&v, 0.5),
        p99: crate::percentile(&v, 0.99),
        mean: v.iter().sum::<f64>() / v.len() as f64,
        max: *v.last().unwrap(),
    }
}

pub fn run(pid: u32) -> String {
    let n: usize = std::env::var("BENCH_FLEET_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(N);
    let idp = OidcProvider::start(NET_IDP);
    let issuer: std::net::SocketAddr = idp
        .issuer
        .trim_start_matches("https://")
        .parse()
        .expect("the issuer is https://IP:PORT");
    let extra = format!(
        "{}[hold]\nkeywords = [\"hold-me\"]\ntimeout = \"10m\"\napprovers = [\"@oidc:llm-approvers\"]\n",
        idp.config(CLI_CLIENT)
    );
    let w = FleetWorld::start_with(&format!("gw-bfleet-{pid}"), NET_FLEET, 2, &extra, &[issuer]);
    // Alice signs in once (the ID token lives an hour: the whole run).
    let token = idp.id_token(CLI_CLIENT, ALICE);
    for i in 0..WARMUP {
        sample(&w, Side::Remote, 1_000 + i, &token);
        sample(&w, Side::Local, 1_000 + i, &token);
    }
    let (mut remote, mut local) = (Vec::new(), Vec::new());
    for i in 0..n {
        let order = if i % 2 == 0 {
            [Side::Remote, Side::Local]
        } else {
            [Side::Local, Side::Remote]
        };
        for side in order {
            let s = sample(&w, side, i, &token);
            match side {
                Side::Remote => remote.push(s),
                Side::Local => local.push(s),
            }
        }
    }
    // Node A applied every remote decision itself, after checking her token.
    let applied = w.nodes[0].gw.fields("decision from the bus applied").len();
    assert_eq!(
        applied,
        n + WARMUP,
        "node A applied each remote decision once"
    );
    let at = woke_at(&w.nodes[0]);
    // How the released requests went out: over kept upstream connections or new ones.
    let (conns, reqs) = (w.nodes[0].fake.connections(), w.nodes[0].fake.seen().len());
    if std::env::var_os("BENCH_FLEET_SAMPLES").is_some() {
        for (side, v) in [("remote", &remote), ("local", &local)] {
            let woke = to_wake(v, &at);
            for (s, w) in v.iter().zip(woke) {
                eprintln!(
                    "{side} {}: woke {w:.2} ms, upstream {:.2} ms, answered {:.2} ms",
                    s.id, s.upstream, s.answered
                );
            }
        }
    }
    let (rr, lr) = (stats(to_wake(&remote, &at)), stats(to_wake(&local, &at)));
    drop(w);
    let split = |v: &[Sample]| {
        (
            stats(v.iter().map(|s| s.upstream).collect()),
            stats(v.iter().map(|s| s.answered).collect()),
        )
    };
    let ((ru, ra), (lu, la)) = (split(&remote), split(&local));
    eprintln!(
        "fleet: decision → upstream p50 remote {:.2} ms, local {:.2} ms",
        ru.p50, lu.p50
    );
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    let goal = if ru.p50 <= 100.0 { "met" } else { "NOT met" };
    format!(
        "## Fleet (issue I)\n\n\
         Time from a decision to the held request being sent upstream on another node. Two \
         gateways (`node-a`, `node-b`) in network namespaces of their own, one nats-server with \
         JetStream (a third namespace, veth links), a real OpenID provider (npm \
         `oidc-provider`). Each sample: a real client request (curl in node A's cgroup, through \
         the eBPF redirect) held on node A by a `hold` keyword rule, then approved by a \
         signed-in approver with one `POST /v1/approvals/ID/approve` carrying her ID token as a \
         bearer token, on the admin API's Unix socket (HTTP/1.1, no CLI process) of node B \
         (the decision goes over the bus to node A, which verifies the token itself and \
         releases the request) or of node A (the same-node baseline, the same token). Measured \
         from just before the admin request is written to the moment node A's fake provider \
         has the held request's head (timestamped in the fake, not at the client). {n} samples \
         a side after {WARMUP} untimed ones, the sides alternating; load average at the end \
         {load}.\n\n\
         | decision issued on | p50 ms | p99 ms | mean ms | max ms | of which: until the held request woke, p50 ms | admin API answered, p50 ms |\n\
         |---|---|---|---|---|---|---|\n\
         | node B (over the bus) | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |\n\
         | node A (holding node) | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |\n\n\
         The p99 is by nearest rank over {n} samples (with 50, the largest). \
         \"Until the held request woke\": from the wall clock when the decision was issued to the \
         timestamp of the `hold approved` log line node A's request task writes as it wakes \
         (the system's wall clock, read by the bench and by the gateway's logger): the \
         decision's way in (admin API, token checks, and for node B the bus request to node A); \
         the rest is the released request's way out to the provider (upstream connection, \
         the request written). Node A's fake accepted {conns} TLS connections for its {reqs} \
         requests.\n\n\
         **Across nodes: {:.2} ms p50** — goal ≤ 100 ms p50 on loopback: {goal}. Ratio to the \
         same-node baseline: {:.2}× p50, {:.2}× mean.\n",
        ru.p50,
        ru.p99,
        ru.mean,
        ru.max,
        rr.p50,
        ra.p50,
        lu.p50,
        lu.p99,
        lu.mean,
        lu.max,
        lr.p50,
        la.p50,
        ru.p50,
        ru.p50 / lu.p50,
        ru.mean / lu.mean,
        load = load.join(" "),
    )
}

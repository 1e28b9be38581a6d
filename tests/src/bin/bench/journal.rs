//! Issue D figures: what the journal costs. In process, the time from an exchange's end to its
//! record being durable (the wait the client's last byte has); through the gateway, latency and
//! throughput with the journal off, with `bodies = "none"` and with masked bodies (the default),
//! against the same nginx upstream as issue B, in one run.

use std::{sync::Arc, time::Instant};

use gateway::{
    journal::{Bodies, Exchange, Journal, JournalConfig, SyncMode},
    redirect::identity::Identity,
};
use gateway_tests::{CgroupGuard, fake::TestPki};

use crate::intercept::{
    LAT_N, LAT_ROUNDS, Path4, TPUT_N, h2load, h2load_cmd, nginx, stats, upstream, upstream_gateway,
};

const WRITES: usize = 3000;

/// Sequential exchanges through a journal of its own: (p50 µs, p99 µs, records/s when many
/// arrive at once).
fn write_cost(bodies: Bodies, sync: SyncMode) -> (f64, f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = JournalConfig {
        bodies,
        sync,
        ..Default::default()
    };
    let j = Arc::new(Journal::open(&cfg, dir.path()).unwrap());
    let id = Identity {
        pid: 4242,
        tgid: 4242,
        uid: 1000,
        user: Some("bench".into()),
        comm: "bench".into(),
        cgroup: Some("/bench.slice/job.scope".into()),
        ..Default::default()
    };
    let request = format!(
        r#"{{"model":"m","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(2000)
    );
    let answer = "data: {\"choices\":[{\"delta\":{\"content\":\"word \"}}]}\n\n".repeat(80);
    let one = |n: u64| {
        let mut ex = Exchange::new(Some(j.clone()), &id, n);
        ex.rec.provider = "openai".into();
        ex.rec.endpoint = "chat.completions".into();
        ex.rec.status = 200;
        ex.request_body(request.as_bytes());
        ex.rec.response_body = ex.body_limit().map(|_| answer.clone());
        ex.finish("completed").unwrap()
    };
    let mut lat = Vec::with_capacity(WRITES);
    for n in 0..WRITES as u64 {
        let t = Instant::now();
        one(n).blocking_recv().unwrap().unwrap();
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    // Many exchanges ending at once: one flush serves all that arrived while the last ran.
    let t = Instant::now();
    let acks: Vec<_> = (0..WRITES as u64).map(one).collect();
    for a in acks {
        a.blocking_recv().unwrap().unwrap();
    }
    let rate = WRITES as f64 / t.elapsed().as_secs_f64();
    let (_, p50, p99) = stats(lat);
    (p50, p99, rate)
}

pub fn run(pid: u32) -> String {
    let fs_type = std::process::Command::new("stat")
        .args(["-f", "-c", "%T", "/tmp"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let (m50, m99, mrate) = write_cost(Bodies::Masked, SyncMode::Kernel);
    let (s50, s99, srate) = write_cost(Bodies::Masked, SyncMode::Disk);
    let (n50, n99, nrate) = write_cost(Bodies::None, SyncMode::Kernel);
    eprintln!(
        "journal write: masked p50 {m50:.0} p99 {m99:.0} µs ({mrate:.0}/s); disk p50 {s50:.0} p99 {s99:.0} ({srate:.0}/s); none p50 {n50:.0} p99 {n99:.0} ({nrate:.0}/s)"
    );

    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(&["api.openai.com"]);
    let _nginx = nginx(&pki, dir.path());
    let variants = [
        ("journal off", "[journal]\nenabled = false\n"),
        ("bodies = none", "[journal]\nbodies = \"none\"\n"),
        ("bodies = masked (default)", ""),
        (
            "bodies = masked, sync = \"disk\"",
            "[journal]\nsync = \"disk\"\n",
        ),
    ];
    let mut gws = Vec::new();
    for (i, (_, extra)) in variants.iter().enumerate() {
        let name = format!("gw-bench-d{i}-{pid}");
        let cg = CgroupGuard::new(&name);
        let gw = upstream_gateway(&name, &cg, &pki, "info", extra);
        // The gateway first: it detaches from the cgroup before the cgroup goes.
        gws.push((gw, cg));
    }
    let path = Path4 {
        label: "gateway",
        connect_to: format!("{}:443", upstream()),
        in_cgroup: true,
    };
    let direct = Path4 {
        label: "direct",
        connect_to: format!("{}:443", upstream()),
        in_cgroup: false,
    };
    let log = dir.path().join("h2load.log");
    let log_arg = format!("--log-file={}", log.display());
    let lat_args = |n: usize| {
        vec![
            "-n".to_string(),
            n.to_string(),
            "-c".into(),
            "1".into(),
            "-m".into(),
            "1".into(),
            log_arg.clone(),
        ]
    };
    fn as_refs(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }
    // Warm up, then interleaved latency rounds (direct as the floor), then throughput.
    for (_, cg) in &gws {
        h2load(h2load_cmd(&path, cg, &as_refs(&lat_args(300))), &log);
    }
    let mut lats: Vec<Vec<f64>> = vec![Vec::new(); gws.len() + 1];
    for round in 0..LAT_ROUNDS {
        let mut order: Vec<usize> = (0..=gws.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let args = lat_args(LAT_N / LAT_ROUNDS);
            let (lat, _) = if i == gws.len() {
                h2load(h2load_cmd(&direct, &gws[0].1, &as_refs(&args)), &log)
            } else {
                h2load(h2load_cmd(&path, &gws[i].1, &as_refs(&args)), &log)
            };
            lats[i].extend(lat);
        }
    }
    let mut rows = Vec::new();
    for (i, (_, cg)) in gws.iter().enumerate() {
        let tn = TPUT_N.to_string();
        let (_, rps) = h2load(
            h2load_cmd(&path, cg, &["-n", &tn, "-c", "8", "-m", "10", &log_arg]),
            &log,
        );
        let (mean, p50, p99) = stats(std::mem::take(&mut lats[i]));
        eprintln!(
            "{}: mean {mean:.0} p50 {p50:.0} p99 {p99:.0}; {rps:.0} req/s",
            variants[i].0
        );
        rows.push((variants[i].0, mean, p50, p99, rps));
    }
    let (_, d50, _) = stats(std::mem::take(&mut lats[gws.len()]));
    // Every gateway really journaled (or not) what it served.
    let journaled: Vec<usize> = gws
        .iter()
        .map(|(gw, _)| {
            let out = gw.cli(&["journal", "list", "--json"]);
            serde_json::from_slice::<serde_json::Value>(&out.stdout)
                .ok()
                .and_then(|v| v.as_array().map(Vec::len))
                .unwrap_or(0)
        })
        .collect();
    assert_eq!(journaled[0], 0, "journal off must record nothing");
    assert!(
        journaled[1] > 1000 && journaled[2] > 1000 && journaled[3] > 1000,
        "{journaled:?}"
    );
    drop(gws);
    let off = rows[0];
    let masked = rows[2];
    let none = rows[1];
    let disk = rows[3];
    let share = (masked.2 - off.2) / (masked.2 - d50).max(1.0);
    let mut table = String::new();
    for r in &rows {
        table.push_str(&format!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} |\n",
            r.0, r.1, r.2, r.3, r.4
        ));
    }
    format!(
        "## Journal (issue D)\n\n\
         ### Write cost per exchange\n\n\
         In process: {WRITES} exchanges one after another, each record (a 2 KB prompt, a 4 KB\n\
         streamed answer, its timeline) from the end of the exchange until the exchange is told it\n\
         is recorded: the wait before the client's last byte goes out. `sync = \"kernel\"` (the\n\
         default): the record written to the write-ahead log (one `write(2)`, no fsync; sled is\n\
         flushed by another thread within `flush_delay`); `sync = \"disk\"`: flushed to disk by\n\
         sled (`/tmp` on {fs_type}). Then {WRITES} exchanges ending at once (group commit).\n\n\
         | bodies, sync | p50 µs | p99 µs | records/s at once |\n|---|---|---|---|\n\
         | masked, kernel (default) | {m50:.0} | {m99:.0} | {mrate:.0} |\n\
         | masked, disk | {s50:.0} | {s99:.0} | {srate:.0} |\n\
         | none, kernel | {n50:.0} | {n99:.0} | {nrate:.0} |\n\n\
         **The wait before the last byte, disk / kernel (p50): {dk:.1}×.**\n\n\
         ### Through the gateway\n\n\
         h2load against the issue B nginx upstream, four gateways in one run, latency 1 × 1\n\
         ({LAT_ROUNDS} interleaved rounds; direct p50 {d50:.0} µs), throughput 8 connections × 10 streams:\n\n\
         | journal | mean µs | p50 µs | p99 µs | req/s |\n|---|---|---|---|---|\n{table}\n\
         **Journal share of the gateway's added latency (p50): {share_pct:.0}%** \
         ({added:.0} µs of {total:.0} µs). **Throughput with bodies vs without: {tr:.2}×**; \
         with the journal vs off: {to:.2}×. **`sync = \"disk\"` vs the default: latency (p50) \
         {dl:.2}×, throughput {dt:.2}×.**\n",
        share_pct = share * 100.0,
        added = masked.2 - off.2,
        total = masked.2 - d50,
        tr = masked.4 / none.4,
        to = masked.4 / off.4,
        dk = s50 / m50.max(1e-9),
        dl = disk.2 / masked.2,
        dt = disk.4 / masked.4,
    )
}

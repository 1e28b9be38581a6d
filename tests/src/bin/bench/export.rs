//! Issue I figures: what exporting costs. Two gateways in one run against the issue B nginx
//! upstream, both journaling (the default), one of them also exporting every record as RFC 5424
//! over TCP to a sink that reads and counts frames: the workload's throughput with export on vs
//! off (goal ≥ 0.95×), rounds interleaved, and the records/s the exporting node sends while it
//! serves that workload (from its `gateway_export_events_total`), then how fast it drains.

use std::{
    io::Read as _,
    net::TcpListener,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use gateway_tests::{CgroupGuard, Gateway, fake::TestPki};

use crate::intercept::{Path4, TPUT_N, h2load, h2load_cmd, nginx, upstream, upstream_gateway};

const ROUNDS: usize = 3;

/// A syslog-over-TCP receiver that counts octet-counted frames and throws them away.
fn discard_sink(ip: &str) -> (std::net::SocketAddr, Arc<AtomicU64>) {
    let l = TcpListener::bind((ip, 0)).expect("bind sink");
    let addr = l.local_addr().unwrap();
    let frames = Arc::new(AtomicU64::new(0));
    let f = frames.clone();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let f = f.clone();
            std::thread::spawn(move || {
                let mut s = s;
                let mut buf = vec![0u8; 1 << 16];
                let mut pending: Vec<u8> = Vec::new();
                loop {
                    let n = match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    pending.extend_from_slice(&buf[..n]);
                    let mut at = 0;
                    while let Some(sp) = pending[at..].iter().position(|&b| b == b' ') {
                        let Some(len) = std::str::from_utf8(&pending[at..at + sp])
                            .ok()
                            .and_then(|x| x.parse::<usize>().ok())
                        else {
                            return;
                        };
                        if pending.len() < at + sp + 1 + len {
                            break;
                        }
                        at += sp + 1 + len;
                        f.fetch_add(1, Ordering::Relaxed);
                    }
                    pending.drain(..at);
                }
            });
        }
    });
    (addr, frames)
}

fn exported(gw: &Gateway) -> f64 {
    gw.metrics_text()
        .lines()
        .find(|l| l.starts_with("gateway_export_events_total{") && l.contains("exporter=\"bench\""))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn journaled(gw: &Gateway) -> usize {
    let out = gw.cli(&["journal", "list", "--json"]);
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .ok()
        .and_then(|v| v.as_array().map(Vec::len))
        .unwrap_or(0)
}

pub fn run(pid: u32) -> String {
    let n: usize = std::env::var("BENCH_EXPORT_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(TPUT_N);
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(&["api.openai.com"]);
    let _nginx = nginx(&pki, dir.path());
    let (sink, frames) = discard_sink("127.236.0.1");
    let on_cfg =
        format!("[[export]]\nname = \"bench\"\nkind = \"syslog\"\nurl = \"tcp://{sink}\"\n");
    let variants = [
        ("export off (journal on)", String::new()),
        ("export on (syslog TCP)", on_cfg),
    ];
    let mut gws = Vec::new();
    for (i, (_, extra)) in variants.iter().enumerate() {
        let name = format!("gw-bench-x{i}-{pid}");
        let cg = CgroupGuard::new(&name);
        let gw = upstream_gateway(&name, &cg, &pki, "info", extra);
        gws.push((gw, cg));
    }
    let path = Path4 {
        label: "gateway",
        connect_to: format!("{}:443", upstream()),
        in_cgroup: true,
    };
    let log = dir.path().join("h2load.log");
    let log_arg = format!("--log-file={}", log.display());
    for (_, cg) in &gws {
        h2load(
            h2load_cmd(&path, cg, &["-n", "300", "-c", "1", "-m", "1", &log_arg]),
            &log,
        );
    }
    let mut rps = [Vec::new(), Vec::new()];
    let mut rates = Vec::new();
    let tn = n.to_string();
    for round in 0..ROUNDS {
        let order: Vec<usize> = if round % 2 == 0 {
            vec![0, 1]
        } else {
            vec![1, 0]
        };
        for i in order {
            let (gw, cg) = &gws[i];
            let before = if i == 1 { exported(gw) } else { 0.0 };
            let t = Instant::now();
            let (_, r) = h2load(
                h2load_cmd(&path, cg, &["-n", &tn, "-c", "8", "-m", "10", &log_arg]),
                &log,
            );
            if i == 1 {
                rates.push((exported(gw) - before) / t.elapsed().as_secs_f64());
            }
            rps[i].push(r);
        }
    }
    // Drain: every record reaches the sink, once.
    let total = journaled(&gws[1].0);
    let t = Instant::now();
    let deadline = t + Duration::from_secs(300);
    while (frames.load(Ordering::Relaxed) as usize) < total && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let drained_in = t.elapsed().as_secs_f64();
    let got = frames.load(Ordering::Relaxed) as usize;
    assert_eq!(got, total, "every journaled record exported, once");
    drop(gws);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (off, on) = (mean(&rps[0]), mean(&rps[1]));
    let rate = mean(&rates);
    eprintln!(
        "export: off {off:.0} req/s, on {on:.0} req/s, {rate:.0} records/s exported under load"
    );
    format!(
        "## Export (issue I)\n\n\
         h2load against the issue B nginx upstream (8 connections × 10 streams, {n} requests a \
         round, {ROUNDS} interleaved rounds), two gateways journaling with masked bodies, one of \
         them also exporting every record (RFC 5424, the event as JSON, over TCP to a sink that \
         counts and discards frames):\n\n\
         | gateway | req/s (mean of rounds) |\n|---|---|\n\
         | export off | {off:.0} |\n| export on | {on:.0} |\n\n\
         **Throughput with export on vs off: {ratio:.2}×** (goal ≥ 0.95×). Records exported \
         while serving: **{rate:.0}/s**; all {total} records reached the sink exactly once \
         ({drained_in:.1} s after the last round ended).\n",
        ratio = on / off,
    )
}

//! Issue B figures: a fast upstream (nginx, TLS + h2, a small JSON body) reached four ways in
//! one run, all driven by h2load: direct; through the gateway (the client in a cgroup with the
//! programs attached); through nginx as a TLS-terminating reverse proxy doing the same hop (h2
//! to the client, kept-alive TLS upstream, a fixed Authorization header; its own process, as the
//! gateway is); through mitmproxy in
//! reverse mode. Plus the cost of minting a leaf for a new SNI against a cached one.

use std::{
    fs,
    net::TcpStream,
    path::Path,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use gateway_tests::{CgroupGuard, Gateway, Opts, fake::TestPki};

pub(crate) const UPSTREAM: &str = "127.10.251.1";
const NGINX_PROXY: &str = "127.10.251.2";
const MITM: &str = "127.10.251.3";
pub(crate) const LAT_N: usize = 3000;
/// Latency runs per path, interleaved (order reversed every other round): each run is a new
/// client connection, so where the scheduler puts the threads of that run varies; many short
/// runs average that out.
pub(crate) const LAT_ROUNDS: usize = 10;
pub(crate) const TPUT_N: usize = 40_000;

pub(crate) struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_port(addr: &str) {
    let end = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < end, "{addr} never came up");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Two nginx processes: the upstream, and the reverse proxy in front of it. Separate processes
/// on purpose: in one process the proxy-to-upstream hop would stay inside one event loop, with
/// no wakeup of another process, which no real deployment has.
pub(crate) fn nginx(pki: &TestPki, dir: &Path) -> (Killed, Killed) {
    let common = |d: &Path| {
        format!(
            "master_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\nevents {{ worker_connections 4096; }}\n",
            d = d.display()
        )
    };
    let http_common = |d: &Path| {
        format!(
            "access_log off;\nclient_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
             keepalive_requests 1000000;\n",
            d = d.display()
        )
    };
    let tls = format!(
        "ssl_certificate {}; ssl_certificate_key {};",
        pki.leaf_pem.display(),
        pki.key_pem.display()
    );
    let up_dir = dir.join("nginx-upstream");
    let px_dir = dir.join("nginx-proxy");
    fs::create_dir_all(&up_dir).unwrap();
    fs::create_dir_all(&px_dir).unwrap();
    // `/v1/chat/completions` answers with a streamed chat completion (used by `bench train`);
    // everything else with a small JSON body (what the latency and throughput rounds ask for).
    let upstream = format!(
        "{}http {{\n{}server {{ listen {UPSTREAM}:443 ssl http2; {tls}\n\
         location = /v1/chat/completions {{ default_type text/event-stream; return 200 '{}'; }}\n\
         location / {{ default_type application/json; return 200 '{{\"object\":\"list\",\"data\":[]}}'; }} }}\n}}\n",
        common(&up_dir),
        http_common(&up_dir),
        chat_stream().replace('\n', "\\n"),
    );
    let proxy = format!(
        "{}http {{\n{}upstream provider {{ server {UPSTREAM}:443; keepalive 64; }}\n\
         server {{ listen {NGINX_PROXY}:443 ssl http2; {tls}\n\
         location / {{ proxy_pass https://provider; proxy_http_version 1.1; proxy_set_header Connection \"\";\n\
         proxy_set_header Host api.openai.com; proxy_set_header Authorization \"Bearer sk-fixed\";\n\
         proxy_ssl_server_name on; proxy_ssl_name api.openai.com; proxy_ssl_session_reuse on; }} }}\n}}\n",
        common(&px_dir),
        http_common(&px_dir)
    );
    let start = |d: &Path, conf: String| {
        let path = d.join("nginx.conf");
        fs::write(&path, conf).unwrap();
        Killed(
            Command::new("nginx")
                .args([
                    "-p",
                    d.to_str().unwrap(),
                    "-c",
                    path.to_str().unwrap(),
                    "-g",
                    "daemon off;",
                ])
                .stderr(Stdio::null())
                .spawn()
                .expect("nginx (Debian package nginx; cargo xtask bench installs it)"),
        )
    };
    let up = start(&up_dir, upstream);
    wait_port(&format!("{UPSTREAM}:443"));
    let px = start(&px_dir, proxy);
    wait_port(&format!("{NGINX_PROXY}:443"));
    (up, px)
}

/// An OpenAI chat completion stream: a few deltas, an access key id split across two of them,
/// `[DONE]`. Written for nginx's `return`: no `'` and no `$`.
pub(crate) fn chat_stream() -> String {
    let deltas = [
        "Here is the summary. ",
        "The deploy used key AKIAZ7QW3R",
        "TY5UIO2PAS for the bucket, ",
        "and the build passed.",
    ];
    let mut out = String::new();
    for d in deltas {
        out.push_str(&format!(
            "data: {{\"id\":\"chatcmpl-b\",\"object\":\"chat.completion.chunk\",\"created\":1,\
             \"model\":\"gpt-4o-mini\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{d}\"}},\
             \"finish_reason\":null}}]}}\n\n"
        ));
    }
    out.push_str("data: [DONE]\n\n");
    out
}

fn mitmproxy(dir: &Path) -> Option<Killed> {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/mitm-venv/bin/mitmdump");
    if !bin.exists() {
        return None;
    }
    let child = Command::new(bin)
        .args([
            "--mode",
            &format!("reverse:https://{UPSTREAM}:443"),
            "--listen-host",
            MITM,
            "--listen-port",
            "443",
            "--ssl-insecure",
            "--set",
            &format!("confdir={}", dir.join("mitm").display()),
            "-q",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    wait_port(&format!("{MITM}:443"));
    Some(Killed(child))
}

/// One h2load run; returns (per-request microseconds, requests per second).
pub(crate) fn h2load(cmd: Command, log: &Path) -> (Vec<f64>, f64) {
    // h2load appends to its log file: start each run with an empty one.
    let _ = fs::remove_file(log);
    let mut cmd = cmd;
    let out = cmd
        .output()
        .expect("h2load (Debian package nghttp2-client)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "h2load failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ok = text
        .lines()
        .find(|l| l.trim_start().starts_with("requests:"))
        .unwrap_or("");
    assert!(
        ok.contains("0 failed") && ok.contains("0 errored"),
        "h2load errors: {text}"
    );
    let rps = text
        .lines()
        .find(|l| l.starts_with("finished in"))
        .and_then(|l| l.split(", ").nth(1))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(0.0);
    let lat = fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split('\t').nth(2).and_then(|v| v.parse::<f64>().ok()))
        .collect();
    (lat, rps)
}

pub(crate) struct Path4 {
    pub(crate) label: &'static str,
    pub(crate) connect_to: String,
    pub(crate) in_cgroup: bool,
}

pub(crate) fn h2load_cmd(p: &Path4, cg: &CgroupGuard, args: &[&str]) -> Command {
    let url = "https://api.openai.com/v1/models";
    let connect = format!("--connect-to={}", p.connect_to);
    let mut all: Vec<&str> = vec![&connect];
    all.extend_from_slice(args);
    all.push(url);
    if p.in_cgroup {
        cg.command("h2load", &all)
    } else {
        let mut c = Command::new("h2load");
        c.args(&all);
        c
    }
}

pub(crate) fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pick = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    (
        v.iter().sum::<f64>() / v.len() as f64,
        pick(0.5),
        pick(0.99),
    )
}

fn mint_cost() -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let (ca, _) = gateway::tls::ca::Ca::load_or_create(dir.path()).unwrap();
    let cache = gateway::tls::leaf::LeafCache::new(Arc::new(ca), gateway::tls::provider(), 100_000)
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let n = 500;
        let t = Instant::now();
        for i in 0..n {
            cache
                .server_config(&format!("h{i}.example.com"))
                .await
                .unwrap();
        }
        let mint = t.elapsed().as_secs_f64() * 1e3 / n as f64;
        let t = Instant::now();
        for i in 0..n {
            cache
                .server_config(&format!("h{i}.example.com"))
                .await
                .unwrap();
        }
        let cached = t.elapsed().as_secs_f64() * 1e3 / n as f64;
        (mint, cached)
    })
}

/// A gateway in `cg` in front of the nginx upstream (the openai provider at UPSTREAM, the test
/// CA trusted upstream, a vault key), with `extra` appended to its config.
pub(crate) fn upstream_gateway(
    name: &str,
    cg: &CgroupGuard,
    pki: &TestPki,
    log_level: &str,
    extra: &str,
) -> Gateway {
    Gateway::start_opts(
        name,
        &cg.path,
        &format!("[[provider]]\nname = \"openai\"\naddrs = [\"{UPSTREAM}/32\"]\n"),
        &Opts {
            extra_roots: vec![pki.ca_pem.clone()],
            keys: vec![("openai".into(), "sk-bench".into())],
            builtin: true,
            log_level: Some(log_level.into()),
            extra: extra.into(),
            ..Default::default()
        },
    )
}

pub fn run(pid: u32) -> String {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(&["api.openai.com"]);
    let nginx_procs = nginx(&pki, dir.path());
    let cg = CgroupGuard::new(&format!("gw-bench-b-{pid}"));
    let gw = upstream_gateway(
        &format!("gw-bench-b-{pid}"),
        &cg,
        &pki,
        // The production default (the tests' extra eBPF debug output is not measured).
        &std::env::var("BENCH_GW_LOG").unwrap_or_else(|_| "info".into()),
        // The proxy path alone, as nginx-proxy has no journal: what the journal adds is
        // measured on its own (journal.rs).
        "[journal]\nenabled = false\n",
    );
    let mitm = mitmproxy(dir.path());
    let mut paths = vec![
        Path4 {
            label: "direct",
            connect_to: format!("{UPSTREAM}:443"),
            in_cgroup: false,
        },
        Path4 {
            label: "gateway",
            connect_to: format!("{UPSTREAM}:443"),
            in_cgroup: true,
        },
        Path4 {
            label: "nginx-proxy",
            connect_to: format!("{NGINX_PROXY}:443"),
            in_cgroup: false,
        },
    ];
    if mitm.is_some() {
        paths.push(Path4 {
            label: "mitmproxy",
            connect_to: format!("{MITM}:443"),
            in_cgroup: false,
        });
    }
    let log = dir.path().join("h2load.log");
    let log_arg = format!("--log-file={}", log.display());
    // Warm up every path (connections, leaf cache, upstream pool), then measure latency for all
    // paths in LAT_ROUNDS interleaved rounds (order reversed every other one), then throughput.
    for p in &paths {
        h2load(
            h2load_cmd(p, &cg, &["-n", "300", "-c", "1", "-m", "1", &log_arg]),
            &log,
        );
    }
    // For profiling by hand: `BENCH_HOLD=SECS` keeps everything up that long after the warm-up
    // (h2load from a shell that joined the printed cgroup takes the gateway path).
    if let Some(secs) = std::env::var("BENCH_HOLD")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        eprintln!(
            "holding {secs} s: cgroup {}, gateway pid {}, paths {:?}",
            cg.path.display(),
            gw.pid(),
            paths
                .iter()
                .map(|p| (p.label, &p.connect_to))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(std::time::Duration::from_secs(secs));
    }
    let mut lats: Vec<Vec<f64>> = vec![Vec::new(); paths.len()];
    // CPU the proxy process spends per request in the latency rounds (all its threads, from
    // schedstat): steadier than latency on a 2-core VM, and what latency is made of here.
    let proxy_pid = |label: &str| match label {
        "gateway" => Some(gw.pid()),
        "nginx-proxy" => Some(nginx_procs.1.0.id()),
        _ => None,
    };
    let mut cpu_ns: Vec<(u64, usize)> = vec![(0, 0); paths.len()];
    for round in 0..LAT_ROUNDS {
        let order: Vec<usize> = if round % 2 == 0 {
            (0..paths.len()).collect()
        } else {
            (0..paths.len()).rev().collect()
        };
        for i in order {
            let p = &paths[i];
            let n = if p.label == "mitmproxy" {
                LAT_N / LAT_ROUNDS / 3
            } else {
                LAT_N / LAT_ROUNDS
            };
            let before = proxy_pid(p.label).map(task_cpu_ns);
            let (lat, _) = h2load(
                h2load_cmd(
                    p,
                    &cg,
                    &["-n", &n.to_string(), "-c", "1", "-m", "1", &log_arg],
                ),
                &log,
            );
            if let (Some(b), Some(pid)) = (before, proxy_pid(p.label)) {
                cpu_ns[i].0 += task_cpu_ns(pid).saturating_sub(b);
                cpu_ns[i].1 += lat.len();
            }
            lats[i].extend(lat);
        }
    }
    let mut rows = Vec::new();
    for (i, p) in paths.iter().enumerate() {
        let tn = if p.label == "mitmproxy" {
            TPUT_N / 10
        } else {
            TPUT_N
        };
        let (_, rps) = h2load(
            h2load_cmd(
                p,
                &cg,
                &["-n", &tn.to_string(), "-c", "8", "-m", "10", &log_arg],
            ),
            &log,
        );
        let (mean, p50, p99) = stats(std::mem::take(&mut lats[i]));
        eprintln!(
            "{}: mean {mean:.0}µs p50 {p50:.0} p99 {p99:.0}; {rps:.0} req/s",
            p.label
        );
        rows.push((p.label, mean, p50, p99, rps));
    }
    let intercepted = gw
        .fields("connection closed")
        .iter()
        .filter(|f| f["outcome"] == "intercepted")
        .count();
    assert!(
        intercepted >= 3,
        "the gateway path went through interception ({intercepted})"
    );
    drop(gw);
    let cpu_us = |l: &str| {
        paths
            .iter()
            .position(|p| p.label == l)
            .map(|i| cpu_ns[i])
            .filter(|c| c.1 > 0)
            .map(|c| c.0 as f64 / c.1 as f64 / 1e3)
            .unwrap_or(0.0)
    };
    let (cpu_gw, cpu_px) = (cpu_us("gateway"), cpu_us("nginx-proxy"));
    let get = |l: &str| rows.iter().find(|r| r.0 == l).copied();
    let (g, n) = (get("gateway").unwrap(), get("nginx-proxy").unwrap());
    let lat_ratio = g.1 / n.1;
    let tput_ratio = g.4 / n.4;
    let mitm_ratio = get("mitmproxy").map(|m| g.4 / m.4);
    let (mint, cached) = mint_cost();
    let mark = |ok: bool| if ok { "met" } else { "NOT met" };
    let mut s = String::from(
        "\n## Interception (issue B)\n\n\
         h2load against nginx (TLS + h2, a small JSON body) on loopback; latency with 1 connection\n\
         × 1 stream (microseconds per request, from h2load's per-request log), throughput with 8\n\
         connections × 10 streams. The gateway runs with the journal off here (nginx-proxy keeps\n\
         none); what the journal adds is in the Journal section.\n\n\
         | path | mean µs | p50 µs | p99 µs | req/s |\n|---|---|---|---|---|\n",
    );
    for r in &rows {
        s.push_str(&format!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} |\n",
            r.0, r.1, r.2, r.3, r.4
        ));
    }
    s.push_str(&format!(
        "\n**Latency gateway / nginx-proxy: {lat_ratio:.2}×** — goal ≤ 1.3×: {}.\n\
         **Throughput gateway / nginx-proxy: {tput_ratio:.2}×** — goal ≥ 0.7×: {}.\n",
        mark(lat_ratio <= 1.3),
        mark(tput_ratio >= 0.7)
    ));
    s.push_str(&format!(
        "\nCPU per request in the latency rounds (the proxy process, all threads): gateway \
         {cpu_gw:.0} µs, nginx-proxy {cpu_px:.0} µs ({:.2}×).\n",
        cpu_gw / cpu_px.max(1e-9)
    ));
    match mitm_ratio {
        Some(m) => s.push_str(&format!(
            "**Throughput gateway / mitmproxy: {m:.1}×** — goal ≥ 5×: {}.\n",
            mark(m >= 5.0)
        )),
        None => {
            s.push_str("mitmproxy was not installed (cargo xtask bench installs it): no ratio.\n")
        }
    }
    s.push_str(&format!(
        "\n### Leaf certificates\n\nMint for a new SNI (ECDSA P-256, in process): {mint:.3} ms; cached: {cached:.4} ms \
         ({:.0}× cheaper). Goal ≤ 0.5 ms per mint: {}.\n",
        mint / cached.max(1e-9),
        mark(mint <= 0.5)
    ));
    s
}

/// CPU time of every thread of `pid` so far (schedstat, ns).
fn task_cpu_ns(pid: u32) -> u64 {
    fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.flatten()
                .filter_map(|t| fs::read_to_string(t.path().join("schedstat")).ok())
                .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0)
}

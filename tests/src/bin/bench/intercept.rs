//! Issue B figures, with issue 18's headline: a fast upstream (nginx, TLS + h2, a small JSON
//! body) reached in one run, all driven by h2load: direct; through three gateways (the client in
//! a cgroup with the programs attached): the default configuration (journal on, masked bodies,
//! every detector), the journal off, and `journal.sync = "disk"`; through nginx as a
//! TLS-terminating reverse proxy doing the same hop (h2 to the client, kept-alive TLS upstream,
//! a fixed Authorization header; its own processes, as many workers as the gateway has serving
//! threads); through mitmproxy in reverse mode. Plus the cost of minting a leaf for a new SNI
//! against a cached one.

use std::{
    fs,
    net::TcpStream,
    path::Path,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use gateway_tests::{CgroupGuard, Gateway, Opts, fake::TestPki};

/// The second byte of the bench's loopback addresses (`BENCH_NET`, default 10), so that two
/// runs on one machine (or a bench beside a test run) never share an address.
pub(crate) fn net() -> u8 {
    std::env::var("BENCH_NET")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10)
}

/// The nginx upstream (the "provider").
pub(crate) fn upstream() -> String {
    format!("127.{}.251.1", net())
}

fn nginx_proxy() -> String {
    format!("127.{}.251.2", net())
}

fn mitm_addr() -> String {
    format!("127.{}.251.3", net())
}
pub(crate) const LAT_N: usize = 3000;
/// Latency runs per path, interleaved (order reversed every other round): each run is a new
/// client connection, so where the scheduler puts the threads of that run varies; many short
/// runs average that out.
pub(crate) const LAT_ROUNDS: usize = 10;
pub(crate) const TPUT_N: usize = 40_000;

pub(crate) struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        // SIGTERM first: an nginx master stops its workers (a SIGKILL would leave them
        // serving on the address).
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The gateway's connection-serving threads in its default configuration (`listen.workers =
/// 0`: one per CPU): the worker processes nginx-proxy gets, so that neither side has more
/// cores' worth of event loops than the other.
pub(crate) fn gateway_workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
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
    // The upstream: one process (it is the provider, the same for every path). The proxy: a
    // master and as many workers as the gateway has threads serving connections.
    let common = |d: &Path, workers: usize| {
        let procs = if workers > 1 {
            format!("master_process on;\nworker_processes {workers};\n")
        } else {
            "master_process off;\n".to_string()
        };
        format!(
            "{procs}pid {d}/nginx.pid;\nerror_log {d}/error.log warn;\nevents {{ worker_connections 4096; }}\n",
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
    let (up_addr, px_addr) = (upstream(), nginx_proxy());
    let up_dir = dir.join("nginx-upstream");
    let px_dir = dir.join("nginx-proxy");
    fs::create_dir_all(&up_dir).unwrap();
    fs::create_dir_all(&px_dir).unwrap();
    // `/v1/chat/completions` answers with a streamed chat completion (used by `bench train`);
    // everything else with a small JSON body (what the latency and throughput rounds ask for).
    let upstream = format!(
        "{}http {{\n{}server {{ listen {up_addr}:443 ssl http2; {tls}\n\
         location = /v1/chat/completions {{ default_type text/event-stream; return 200 '{}'; }}\n\
         location / {{ default_type application/json; return 200 '{{\"object\":\"list\",\"data\":[]}}'; }} }}\n}}\n",
        common(&up_dir, 1),
        http_common(&up_dir),
        chat_stream().replace('\n', "\\n"),
    );
    let proxy = format!(
        "{}http {{\n{}upstream provider {{ server {up_addr}:443; keepalive 64; }}\n\
         server {{ listen {px_addr}:443 ssl http2; {tls}\n\
         location / {{ proxy_pass https://provider; proxy_http_version 1.1; proxy_set_header Connection \"\";\n\
         proxy_set_header Host api.openai.com; proxy_set_header Authorization \"Bearer sk-fixed\";\n\
         proxy_ssl_server_name on; proxy_ssl_name api.openai.com; proxy_ssl_session_reuse on; }} }}\n}}\n",
        common(&px_dir, gateway_workers()),
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
    wait_port(&format!("{up_addr}:443"));
    let px = start(&px_dir, proxy);
    wait_port(&format!("{px_addr}:443"));
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
            &format!("reverse:https://{}:443", upstream()),
            "--listen-host",
            &mitm_addr(),
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
    wait_port(&format!("{}:443", mitm_addr()));
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
        &format!(
            "[[provider]]\nname = \"openai\"\naddrs = [\"{}/32\"]\n",
            upstream()
        ),
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

/// The gateway variants of the Interception table: the default configuration (the headline:
/// journal on with masked bodies, every built-in detector, `sync = "kernel"`), the journal
/// off, and the strict `sync = "disk"`.
const VARIANTS: [(&str, &str); 3] = [
    ("gateway (default config)", ""),
    ("gateway, journal off", "[journal]\nenabled = false\n"),
    ("gateway, sync = \"disk\"", "[journal]\nsync = \"disk\"\n"),
];

pub fn run(pid: u32) -> String {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(&["api.openai.com"]);
    let nginx_procs = nginx(&pki, dir.path());
    // The production default log level (the tests' extra eBPF debug output is not measured).
    let level = std::env::var("BENCH_GW_LOG").unwrap_or_else(|_| "info".into());
    let mut gws = Vec::new();
    for (i, (_, extra)) in VARIANTS.iter().enumerate() {
        let name = format!("gw-bench-b{i}-{pid}");
        let cg = CgroupGuard::new(&name);
        let gw = upstream_gateway(&name, &cg, &pki, &level, extra);
        // The gateway first in the pair: it detaches before its cgroup goes.
        gws.push((gw, cg));
    }
    let mitm = mitmproxy(dir.path());
    // (path, the gateway variant it goes through)
    let mut paths: Vec<(Path4, Option<usize>)> = vec![(
        Path4 {
            label: "direct",
            connect_to: format!("{}:443", upstream()),
            in_cgroup: false,
        },
        None,
    )];
    for (i, (label, _)) in VARIANTS.iter().enumerate() {
        paths.push((
            Path4 {
                label,
                connect_to: format!("{}:443", upstream()),
                in_cgroup: true,
            },
            Some(i),
        ));
    }
    paths.push((
        Path4 {
            label: "nginx-proxy",
            connect_to: format!("{}:443", nginx_proxy()),
            in_cgroup: false,
        },
        None,
    ));
    if mitm.is_some() {
        paths.push((
            Path4 {
                label: "mitmproxy",
                connect_to: format!("{}:443", mitm_addr()),
                in_cgroup: false,
            },
            None,
        ));
    }
    let cmd = |(p, g): &(Path4, Option<usize>), args: &[&str]| {
        h2load_cmd(p, &gws[g.unwrap_or(0)].1, args)
    };
    let log = dir.path().join("h2load.log");
    let log_arg = format!("--log-file={}", log.display());
    // Warm up every path (connections, leaf cache, upstream pool), then measure latency for all
    // paths in LAT_ROUNDS interleaved rounds (order reversed every other one), then throughput.
    for p in &paths {
        h2load(cmd(p, &["-n", "300", "-c", "1", "-m", "1", &log_arg]), &log);
    }
    // For profiling by hand: `BENCH_HOLD=SECS` keeps everything up that long after the warm-up
    // (h2load from a shell that joined a printed cgroup takes that gateway's path).
    if let Some(secs) = std::env::var("BENCH_HOLD")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        eprintln!(
            "holding {secs} s: gateways {:?}, paths {:?}",
            gws.iter()
                .zip(VARIANTS)
                .map(|((gw, cg), (l, _))| (l, gw.pid(), cg.path.display().to_string()))
                .collect::<Vec<_>>(),
            paths
                .iter()
                .map(|p| (p.0.label, &p.0.connect_to))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(std::time::Duration::from_secs(secs));
    }
    let mut lats: Vec<Vec<f64>> = vec![Vec::new(); paths.len()];
    // CPU the proxy process spends per request in the latency rounds (all its threads, and
    // nginx's workers, from schedstat): steadier than latency on a 2-core VM, and what
    // latency is made of here.
    let proxy_pid = |p: &(Path4, Option<usize>)| match (p.0.label, p.1) {
        (_, Some(g)) => Some(gws[g].0.pid()),
        ("nginx-proxy", _) => Some(nginx_procs.1.0.id()),
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
            let n = if p.0.label == "mitmproxy" {
                LAT_N / LAT_ROUNDS / 3
            } else {
                LAT_N / LAT_ROUNDS
            };
            let before = proxy_pid(p).map(tree_cpu_ns);
            let (lat, _) = h2load(
                cmd(p, &["-n", &n.to_string(), "-c", "1", "-m", "1", &log_arg]),
                &log,
            );
            if let (Some(b), Some(pid)) = (before, proxy_pid(p)) {
                cpu_ns[i].0 += tree_cpu_ns(pid).saturating_sub(b);
                cpu_ns[i].1 += lat.len();
            }
            lats[i].extend(lat);
        }
    }
    let mut rows = Vec::new();
    for (i, p) in paths.iter().enumerate() {
        let tn = if p.0.label == "mitmproxy" {
            TPUT_N / 10
        } else {
            TPUT_N
        };
        let (_, rps) = h2load(
            cmd(p, &["-n", &tn.to_string(), "-c", "8", "-m", "10", &log_arg]),
            &log,
        );
        let (mean, p50, p99) = stats(std::mem::take(&mut lats[i]));
        let cpu = (cpu_ns[i].1 > 0).then(|| cpu_ns[i].0 as f64 / cpu_ns[i].1 as f64 / 1e3);
        eprintln!(
            "{}: mean {mean:.0}µs p50 {p50:.0} p99 {p99:.0}; {rps:.0} req/s; cpu {cpu:?} µs/req",
            p.0.label
        );
        rows.push((p.0.label, mean, p50, p99, rps, cpu));
    }
    // Each gateway went through interception, and journaled what it served (or not).
    for (i, (gw, _)) in gws.iter().enumerate() {
        let intercepted = gw
            .fields("connection closed")
            .iter()
            .filter(|f| f["outcome"] == "intercepted")
            .count();
        assert!(
            intercepted >= 3,
            "{}: the path went through interception ({intercepted})",
            VARIANTS[i].0
        );
    }
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
    assert!(
        journaled[0] > 1000 && journaled[1] == 0 && journaled[2] > 1000,
        "journaled per variant: {journaled:?}"
    );
    drop(gws);
    let get = |l: &str| rows.iter().find(|r| r.0 == l).copied().unwrap();
    let n = get("nginx-proxy");
    let ratio = |l: &str| {
        let g = get(l);
        (
            g.1 / n.1,
            g.4 / n.4,
            g.5.unwrap_or(0.0) / n.5.unwrap_or(1.0).max(1e-9),
        )
    };
    let (lat_ratio, tput_ratio, cpu_ratio) = ratio(VARIANTS[0].0);
    let (off_lat, off_tput, off_cpu) = ratio(VARIANTS[1].0);
    let (disk_lat, disk_tput, disk_cpu) = ratio(VARIANTS[2].0);
    let mitm_ratio = rows
        .iter()
        .find(|r| r.0 == "mitmproxy")
        .map(|m| get(VARIANTS[0].0).4 / m.4);
    let (mint, cached) = mint_cost();
    let mark = |ok: bool| if ok { "met" } else { "NOT met" };
    let mut s = format!(
        "\n## Interception (issue B; headline: issue 18)\n\n\
         h2load against nginx (TLS + h2, a small JSON body) on loopback; latency with 1 connection\n\
         × 1 stream (microseconds per request, from h2load's per-request log; {LAT_ROUNDS} interleaved\n\
         rounds), throughput with 8 connections × 10 streams. The headline row is the gateway as it\n\
         ships (the embedded default configuration: journal on with masked bodies and\n\
         `sync = \"kernel\"`, every built-in detector both ways); beside it the journal off, and the\n\
         strict `sync = \"disk\"` (an fsync before each answer's last byte). nginx-proxy: a TLS\n\
         reverse proxy doing the same hop (h2 to the client, kept-alive TLS to the upstream, an\n\
         Authorization header set), with as many worker processes as the gateway has serving\n\
         threads ({workers}). CPU: the proxy's process (all threads; nginx's workers) per request in\n\
         the latency rounds.\n\n\
         | path | mean µs | p50 µs | p99 µs | req/s | CPU µs/req |\n|---|---|---|---|---|---|\n",
        workers = gateway_workers()
    );
    for r in &rows {
        let cpu = r.5.map_or("".into(), |c| format!("{c:.0}"));
        s.push_str(&format!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {cpu} |\n",
            r.0, r.1, r.2, r.3, r.4
        ));
    }
    s.push_str(&format!(
        "\n**Latency, default config / nginx-proxy: {lat_ratio:.2}×** — goal ≤ 1.3×: {}.\n\
         **Throughput, default config / nginx-proxy: {tput_ratio:.2}×** — goal ≥ 1.0×: {}.\n\
         CPU per request, default config / nginx-proxy: {cpu_ratio:.2}×.\n\n\
         | against nginx-proxy | latency | throughput | CPU per request |\n|---|---|---|---|\n\
         | default config | {lat_ratio:.2}× | {tput_ratio:.2}× | {cpu_ratio:.2}× |\n\
         | journal off | {off_lat:.2}× | {off_tput:.2}× | {off_cpu:.2}× |\n\
         | sync = \"disk\" | {disk_lat:.2}× | {disk_tput:.2}× | {disk_cpu:.2}× |\n\n",
        mark(lat_ratio <= 1.3),
        mark(tput_ratio >= 1.0),
    ));
    match mitm_ratio {
        Some(m) => s.push_str(&format!(
            "**Throughput default config / mitmproxy: {m:.1}×** — goal ≥ 5×: {}.\n",
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

/// CPU time of `pid` and its child processes (nginx's workers), so far (ns).
fn tree_cpu_ns(pid: u32) -> u64 {
    let children =
        fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    task_cpu_ns(pid)
        + children
            .split_whitespace()
            .filter_map(|c| c.parse::<u32>().ok())
            .map(task_cpu_ns)
            .sum::<u64>()
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

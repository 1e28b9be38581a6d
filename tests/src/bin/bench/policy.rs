//! Issue C figures: the masker's bulk throughput and per-delta cost (in process, against a
//! one-pass literal search and a plain copy measured in the same run), time to first token
//! through the gateway with masking on / off / direct, and gateway memory per held request and
//! per streaming connection with 1,000 of each open at once.

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use gateway::{
    policy::scan::{Ctx, Direction, PolicyConfig, Scanner, StreamMasker},
    redirect::identity::Identity,
};
use gateway_tests::{CgroupGuard, Gateway, Opts, fake::TestPki, provider::FakeProvider};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const FAKE: &str = "127.10.252.1";
const CONCURRENT: usize = 1000;

fn corpus(bytes: usize) -> String {
    let lines = [
        "The deployment uses an S3 bucket behind CloudFront; the EKS cluster runs three node groups.\n",
        "fn parse(input: &str) -> Result<Config, Error> { let v: Value = serde_json::from_str(input)?; Ok(v.into()) }\n",
        "commit 3f786850e387550fdab836ed7e6dc881de23001b fixes the race in the scheduler (see #4521).\n",
        "request 123e4567-e89b-12d3-a456-426614174000 took 35 ms; p99 is 120 ms at 4k rps.\n",
        "SELECT id, email FROM users WHERE created_at > now() - interval '7 days' ORDER BY id LIMIT 100;\n",
        "Bitte prüfe die Konfiguration, bevor du sie ausrollst — danke! 🚀\n",
    ];
    let secrets = [
        "export GITHUB_TOKEN=ghp_aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE3fG5\n",
        "aws_access_key_id = AKIAIOSFODNN7EXAMPLE\n",
        "card 4111 1111 1111 1111 exp 12/29\n",
    ];
    let mut s = String::with_capacity(bytes + 256);
    let mut i = 0;
    while s.len() < bytes {
        s.push_str(lines[i % lines.len()]);
        // About one secret per 4 KiB.
        if i % 40 == 39 {
            s.push_str(secrets[(i / 40) % secrets.len()]);
        }
        i += 1;
    }
    s
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// (masker MB/s, literal-search MB/s, hits)
fn throughput(sc: &Scanner, text: &str) -> (f64, f64, usize) {
    let id = Identity::default();
    let lit = regex_automata::meta::Regex::new("qqqqzzzzqqqq").unwrap();
    let mb = text.len() as f64 / 1e6;
    let (mut t_mask, mut t_lit, mut hits) = (Vec::new(), Vec::new(), 0);
    // One warm-up pass (first touch of the output's pages, caches), then 11 measured.
    std::hint::black_box(sc.mask(
        text,
        Ctx {
            dir: Direction::Response,
            id: &id,
        },
    ));
    for _ in 0..11 {
        let t = Instant::now();
        let (out, h) = sc.mask(
            text,
            Ctx {
                dir: Direction::Response,
                id: &id,
            },
        );
        t_mask.push(mb / t.elapsed().as_secs_f64());
        hits = h.len();
        std::hint::black_box(out);
        let t = Instant::now();
        std::hint::black_box(lit.find(text.as_bytes()));
        t_lit.push(mb / t.elapsed().as_secs_f64());
    }
    (median(t_mask), median(t_lit), hits)
}

/// Each built-in detector alone over `text` (MB/s, best of 3), slowest first: which detectors
/// decide the masker's speed (literal-less ones cannot skip text).
fn per_detector(text: &str) -> Vec<(&'static str, f64)> {
    let id = Identity::default();
    let mb = text.len() as f64 / 1e6;
    let mut out: Vec<(&'static str, f64)> = gateway::policy::detect::DETECTORS
        .iter()
        .map(|d| {
            let sc = only(&[d.name]);
            let best = (0..3)
                .map(|_| {
                    let t = Instant::now();
                    std::hint::black_box(sc.mask(
                        text,
                        Ctx {
                            dir: Direction::Response,
                            id: &id,
                        },
                    ));
                    t.elapsed().as_secs_f64()
                })
                .fold(f64::MAX, f64::min);
            (d.name, mb / best)
        })
        .collect();
    out.sort_by(|a, b| a.1.total_cmp(&b.1));
    out
}

/// (ns per delta through the streaming masker, ns per delta copying only)
fn per_delta(sc: &Arc<Scanner>, text: &str) -> (f64, f64) {
    let id = Arc::new(Identity::default());
    let deltas: Vec<&str> = {
        let mut v = Vec::new();
        let mut i = 0;
        while i < text.len() && v.len() < 200_000 {
            let mut j = (i + 5).min(text.len());
            while !text.is_char_boundary(j) {
                j += 1;
            }
            v.push(&text[i..j]);
            i = j;
        }
        v
    };
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let mut m = StreamMasker::new(sc.clone(), Direction::Response, id.clone());
        let t = Instant::now();
        let mut n = 0;
        for d in &deltas {
            n += m.push(d).len();
        }
        n += m.finish().len();
        on.push(t.elapsed().as_nanos() as f64 / deltas.len() as f64);
        std::hint::black_box(n);
        let t = Instant::now();
        let mut out = String::new();
        for d in &deltas {
            out.clear();
            out.push_str(d);
            std::hint::black_box(&out);
        }
        off.push(t.elapsed().as_nanos() as f64 / deltas.len() as f64);
    }
    (median(on), median(off))
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn tls(ca: &Path) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).unwrap();
    for c in
        <rustls::pki_types::CertificateDer<'_> as rustls::pki_types::pem::PemObject>::pem_slice_iter(
            &pem,
        )
    {
        roots.add(c.unwrap()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

type Conn = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn connect(tls: &tokio_rustls::TlsConnector) -> Conn {
    let tcp = tokio::net::TcpStream::connect(format!("{FAKE}:443"))
        .await
        .unwrap();
    tcp.set_nodelay(true).unwrap();
    let name = rustls::pki_types::ServerName::try_from("api.openai.com").unwrap();
    tls.connect(name, tcp).await.unwrap()
}

fn request(content: &str, stream: bool, extra: &str) -> Vec<u8> {
    let body = serde_json::json!({"model": "m", "stream": stream, "messages": [{"role": "user", "content": content}]}).to_string();
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: api.openai.com\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{extra}\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Read until `pat` has arrived (in `buf`, which keeps what was read).
async fn read_until(c: &mut Conn, buf: &mut Vec<u8>, pat: &[u8]) {
    let mut chunk = [0u8; 16384];
    while !buf.windows(pat.len()).any(|w| w == pat) {
        let n = c.read(&mut chunk).await.unwrap();
        assert!(
            n > 0,
            "connection closed before {:?}",
            String::from_utf8_lossy(pat)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Sequential streamed answers on one kept-alive connection: (TTFT µs, whole answer µs) medians.
async fn ttft(tls: &tokio_rustls::TlsConnector, n: usize) -> (f64, f64) {
    let mut c = connect(tls).await;
    let (mut first, mut whole) = (Vec::new(), Vec::new());
    for i in 0..n + 20 {
        let mut buf = Vec::new();
        let t = Instant::now();
        c.write_all(&request("hi", true, "")).await.unwrap();
        read_until(&mut c, &mut buf, b"data: ").await;
        let f = t.elapsed();
        read_until(&mut c, &mut buf, b"[DONE]").await;
        // h1 chunked from the gateway (ends with the 0-chunk), plain SSE from the fake.
        if buf
            .windows(17)
            .any(|w| w.eq_ignore_ascii_case(b"transfer-encoding"))
        {
            read_until(&mut c, &mut buf, b"\r\n0\r\n\r\n").await;
        }
        if i >= 20 {
            first.push(f.as_secs_f64() * 1e6);
            whole.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    (median(first), median(whole))
}

/// The 45 detectors the catalogue had before issue 18 grew it: the baseline the whole
/// catalogue's speed is compared with in the same run.
const BEFORE_ISSUE_18: &[&str] = &[
    "aws-access-key-id",
    "aws-secret-access-key",
    "google-api-key",
    "gcp-service-account-key",
    "azure-storage-key",
    "azure-client-secret",
    "digitalocean-token",
    "github-classic-token",
    "github-fine-grained-token",
    "github-oauth-token",
    "github-app-token",
    "github-refresh-token",
    "gitlab-token",
    "gitlab-runner-token",
    "slack-token",
    "slack-webhook",
    "discord-bot-token",
    "discord-webhook",
    "twilio-api-key",
    "sendgrid-api-key",
    "stripe-key",
    "datadog-api-key",
    "npm-token",
    "pypi-token",
    "shopify-token",
    "telegram-bot-token",
    "linear-api-key",
    "vault-token",
    "age-secret-key",
    "openai-api-key",
    "aws-session-token",
    "aws-bedrock-api-key",
    "anthropic-api-key",
    "groq-api-key",
    "huggingface-token",
    "xai-api-key",
    "perplexity-api-key",
    "replicate-api-token",
    "private-key",
    "jwt",
    "basic-auth-url",
    "generic-secret-assignment",
    "credit-card",
    "iban",
    "us-ssn",
];

/// A scanner with these built-in detectors only (not the whole set beside them).
fn only(names: &[&str]) -> Scanner {
    let rules: Vec<gateway::policy::scan::RuleConfig> = names
        .iter()
        .map(|n| serde_json::from_value(serde_json::json!({"name": n, "detector": n})).unwrap())
        .collect();
    let alone = PolicyConfig {
        builtin_detectors: false,
        ..Default::default()
    };
    Scanner::new(&rules, &alone).unwrap()
}

/// The in-process masker figures: every detector, the 45 before issue 18, each alone.
struct Masker {
    mbps: f64,
    lit_mbps: f64,
    hits: usize,
    mbps45: f64,
    hits45: usize,
    /// ns per 5-byte delta streamed, and copied only.
    ns_on: f64,
    ns_off: f64,
    /// Each detector alone, slowest first.
    alone: Vec<(&'static str, f64)>,
}

impl Masker {
    fn measure() -> Self {
        let sc = Arc::new(Scanner::new(&[], &PolicyConfig::default()).unwrap());
        let text = corpus(4 << 20);
        let (mbps, lit_mbps, hits) = throughput(&sc, &text);
        let (mbps45, _, hits45) = throughput(&only(BEFORE_ISSUE_18), &text);
        let (ns_on, ns_off) = per_delta(&sc, &text);
        Masker {
            mbps,
            lit_mbps,
            hits,
            mbps45,
            hits45,
            ns_on,
            ns_off,
            alone: per_detector(&text),
        }
    }

    /// The `n` slowest detectors alone, "name MB/s, ...".
    fn slowest(&self, n: usize) -> String {
        self.alone
            .iter()
            .take(n)
            .map(|(name, v)| format!("{name} {v:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn summary(&self) -> String {
        format!(
            "masker {:.0} MB/s (the 45 before issue 18: {:.0}; literal {:.0}), {} hits; {:.0} ns/delta vs {:.0}",
            self.mbps, self.mbps45, self.lit_mbps, self.hits, self.ns_on, self.ns_off
        )
    }
}

/// `bench OUT masker-only`: the in-process figures alone.
pub fn masker_only() -> String {
    let m = Masker::measure();
    format!("{}\nslowest alone: {}", m.summary(), m.slowest(20))
}

fn join(cg: &Path) {
    std::fs::write(cg.join("cgroup.procs"), std::process::id().to_string()).unwrap();
}

pub fn run(pid: u32) -> String {
    // In process.
    let masker = Masker::measure();
    eprintln!("{}", masker.summary());
    let Masker {
        mbps,
        lit_mbps,
        hits,
        mbps45,
        hits45,
        ns_on,
        ns_off,
        ref alone,
    } = masker;
    let fast = alone.iter().filter(|d| d.1 >= 1000.0).count();
    let slowest = masker.slowest(7);

    // Through the gateway.
    let _ =
        nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, 65536, 65536);
    let pki = TestPki::new(&["api.openai.com"]);
    let fake = FakeProvider::start(format!("{FAKE}:443").parse().unwrap(), &pki);
    let cg_on = CgroupGuard::new(&format!("gw-bench-c-on-{pid}"));
    let cg_off = CgroupGuard::new(&format!("gw-bench-c-off-{pid}"));
    let provider = format!("[[provider]]\nname = \"openai\"\naddrs = [\"{FAKE}/32\"]\n");
    let opts = |extra: &str| Opts {
        extra_roots: vec![pki.ca_pem.clone()],
        keys: vec![("openai".into(), "sk-bench".into())],
        builtin: true,
        extra: extra.into(),
        log_level: Some("info".into()),
        ..Default::default()
    };
    let gw_on = Gateway::start_opts(
        &format!("gw-bench-c-on-{pid}"),
        &cg_on.path,
        &provider,
        // 1000 held at once: above the default bound of 256.
        &opts("[hold]\nkeywords = [\"HOLD-ME\"]\nmax_pending = 2000\n"),
    );
    let gw_off = Gateway::start_opts(
        &format!("gw-bench-c-off-{pid}"),
        &cg_off.path,
        &provider,
        // One request-only rule: answers pass unmasked.
        &opts("[[rule]]\nname = \"none\"\npattern = \"NEVER-[0-9]{4}\"\non = [\"request\"]\n"),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let tls_on = tls(&gw_on.ca_pem());
    let tls_off = tls(&gw_off.ca_pem());
    let tls_direct = tls(&pki.ca_pem);
    let root = gateway_tests::cgroup2_root();
    let mut rows = Vec::new();
    for round in 0..3 {
        for (label, cg, t) in [
            ("direct", &root, &tls_direct),
            ("gateway, masking off", &cg_off.path, &tls_off),
            ("gateway, masking on", &cg_on.path, &tls_on),
        ] {
            join(cg);
            let (f, w) = rt.block_on(ttft(t, 200));
            if round == 0 {
                rows.push((label, Vec::new(), Vec::new()));
            }
            let r = rows.iter_mut().find(|r| r.0 == label).unwrap();
            r.1.push(f);
            r.2.push(w);
        }
    }
    join(&root);
    let rows: Vec<(&str, f64, f64)> = rows
        .into_iter()
        .map(|(l, f, w)| (l, median(f), median(w)))
        .collect();
    for r in &rows {
        eprintln!("{}: TTFT {:.0} µs, answer {:.0} µs", r.0, r.1, r.2);
    }

    // Memory: 1,000 held requests, then 1,000 open streams, through the masking gateway.
    join(&cg_on.path);
    let gpid = gw_on.pid();
    let admin = gw_on.dir.path().join("state/admin.sock");
    let held_count = || {
        gateway::admin::call(&admin, "GET", "/v1/approvals", None)
            .map(|(_, v)| v["holds"].as_array().map_or(0, |a| a.len()))
            .unwrap_or(0)
    };
    let base = rss_kib(gpid);
    let conns: Vec<Conn> = rt.block_on(async {
        let mut v = Vec::new();
        // Each request different: identical ones join one hold (and count once).
        for i in 0..CONCURRENT {
            let mut c = connect(&tls_on).await;
            c.write_all(&request(&format!("HOLD-ME please ({i})"), false, ""))
                .await
                .unwrap();
            v.push(c);
        }
        v
    });
    let end = Instant::now() + Duration::from_secs(60);
    while held_count() < CONCURRENT {
        assert!(Instant::now() < end, "only {} holds", held_count());
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    let held_kib = (rss_kib(gpid).saturating_sub(base)) as f64 / CONCURRENT as f64;
    if let Some(secs) = std::env::var("BENCH_PAUSE_HELD")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        // For looking at the gateway by hand (/proc/PID/smaps) with the holds in place.
        eprintln!(
            "holding {CONCURRENT} requests in gateway pid {gpid} for {secs} s (base RSS {base} KiB)"
        );
        std::thread::sleep(Duration::from_secs(secs));
    }
    drop(conns);
    while held_count() > 0 {
        std::thread::sleep(Duration::from_millis(100));
    }
    let base = rss_kib(gpid);
    let streams: Vec<Conn> = rt.block_on(async {
        let mut v = Vec::new();
        for _ in 0..CONCURRENT {
            let mut c = connect(&tls_on).await;
            c.write_all(&request("hi", true, "x-test-gate: 1\r\n"))
                .await
                .unwrap();
            v.push(c);
        }
        for c in v.iter_mut() {
            let mut buf = Vec::new();
            read_until(c, &mut buf, b"data: ").await;
        }
        v
    });
    std::thread::sleep(Duration::from_millis(500));
    let stream_kib = (rss_kib(gpid).saturating_sub(base)) as f64 / CONCURRENT as f64;
    fake.open_gate_all();
    drop(streams);
    join(&root);
    eprintln!("memory: {held_kib:.1} KiB per held request, {stream_kib:.1} KiB per stream");

    let get = |l: &str| rows.iter().find(|r| r.0 == l).copied().unwrap();
    let (direct, off, on) = (
        get("direct"),
        get("gateway, masking off"),
        get("gateway, masking on"),
    );
    let added_ms = (on.1 - direct.1) / 1000.0;
    let goal = |ok: bool| if ok { "met" } else { "NOT met" };
    let mut table = String::new();
    for r in &rows {
        table.push_str(&format!("| {} | {:.0} | {:.0} |\n", r.0, r.1, r.2));
    }
    format!(
        "## Policy (issue C)\n\n\
         ### Masker, in process\n\n\
         All {det} built-in detectors (default rules) over 4 MiB of mixed prose, code, logs and\n\
         SQL with a secret about every 4 KiB ({hits} hits); one core, median of 11 runs after one\n\
         warm-up run. Baseline in\n\
         the same run: one pass of a single-literal search over the same text.\n\n\
         | | MB/s | hits |\n|---|---|---|\n| masker (all {det} detectors) | {mbps:.0} | {hits} |\n\
         | masker, the {n45} detectors before issue 18 | {mbps45:.0} | {hits45} |\n\
         | literal search | {lit_mbps:.0} | |\n\n\
         **Masker: {mbps:.0} MB/s per core ({ratio:.2}× the literal search, {ratio45:.2}× the {n45} \
         detectors before issue 18)** — goal ≥ 1300 MB/s: {g1}.\n\n\
         The regex runs only in windows around each detector's cues (a literal such as `ghp_`,\n\
         or a shape such as grouped digits), found by one AVX2 pass (`policy/prefilter.rs`).\n\
         Each detector alone over the same text: {fast} of {det} reach 1000 MB/s; the slowest,\n\
         in MB/s: {slowest}.\n\n\
         Streaming: the same text as 5-byte deltas through the streaming masker: {ns_on:.0} ns per\n\
         delta vs {ns_off:.0} ns to copy it, **{added:.2} µs added per delta** — goal ≤ 0.25 µs: {g2}.\n\n\
         ### Time to first token\n\n\
         A streamed chat completion from a fake provider on loopback (TLS, HTTP/1.1 client, one\n\
         kept-alive connection, 200 answers × 3 interleaved rounds, medians; the fake spaces its\n\
         events 5 ms apart, so the whole answer takes ~40 ms on every path):\n\n\
         | path | TTFT µs | whole answer µs |\n|---|---|---|\n{table}\n\
         **TTFT with masking on: direct + {added_ms:.3} ms** (masking off: direct + {off_ms:.3} ms) — goal ≤ direct + 1 ms: {g3}.\n\n\
         ### Memory\n\n\
         Gateway RSS growth with {CONCURRENT} requests held for approval at once, then {CONCURRENT}\n\
         streaming answers open at once (masking on, first event delivered), per connection —\n\
         TLS, HTTP state, upstream connection and policy state together:\n\n\
         | | KiB each |\n|---|---|\n| held request | {held_kib:.1} |\n| streaming answer | {stream_kib:.1} |\n\n\
         Goal ≤ 64 KiB each: {g4}.\n",
        det = gateway::policy::detect::DETECTORS.len(),
        ratio = mbps / lit_mbps,
        g1 = goal(mbps >= 1300.0),
        n45 = BEFORE_ISSUE_18.len(),
        ratio45 = mbps / mbps45,
        added = (ns_on - ns_off) / 1000.0,
        g2 = goal(ns_on - ns_off <= 250.0),
        off_ms = (off.1 - direct.1) / 1000.0,
        g3 = goal(added_ms <= 1.0),
        g4 = goal(held_kib <= 64.0 && stream_kib <= 64.0),
    )
}

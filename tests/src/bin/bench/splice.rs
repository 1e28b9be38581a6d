//! Issue 18 (3): bulk throughput of a spliced connection, three ways in one run, rounds
//! interleaved (the order rotates every round, so drift and other load hit every side alike):
//! - through the gateway with `intercept.kernel_relay = true` (sk_skb verdict, bytes moved
//!   socket to socket by the kernel),
//! - through a second gateway as configured by default (splice(2) through a pipe),
//! - direct, from a sibling cgroup without programs.
//!
//! Each transfer is one TCP stream: a ClientHello for another site on an address declared
//! shared (so the gateway splices it), the server's first bytes (as a TLS client waits for the
//! ServerHello), then BULK bytes client → sink; the sink answers with its count, which must be
//! exact. Figures per side: MiB/s min/median/max over the rounds; against direct, the
//! headline is the median of the per-round paired ratios (each round's gateway transfer over
//! the same round's direct one: drift and other load that hit a round hit both of its
//! transfers, so it is steadier than a ratio of two medians, which is shown beside it), with
//! the quartiles and the extremes of those ratios as the spread; and CPU per GiB: the gateway
//! process, the bench's client and sink threads, and the whole machine (/proc/stat: every
//! CPU's busy time, which is where a kernel relay's work is, in softirq and kworkers; it also
//! holds whatever else runs, so it is reported beside the load average), with the whole
//! machine's CPU per GiB against direct.

use std::{
    fs,
    io::{Read as _, Write as _},
    net::{Shutdown, TcpStream},
    time::Instant,
};

use gateway_tests::{CgroupGuard, Gateway, Opts};

use crate::{client_hello, join, leave, listen};

/// CPU time (ns) of every thread `pid` ever had, exited ones included (utime + stime of
/// /proc/<pid>/stat, in ticks of 10 ms): the sink's thread per connection ends with its round.
fn cpu_ns(pid: u32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces, so split after its ')').
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    (f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)) * 10_000_000
}

const BULK: usize = 512 << 20;
/// Odd, so that the median is one round's figure.
const ROUNDS: usize = 11;

#[derive(Clone, Copy, PartialEq)]
enum Side {
    Kernel,
    Splice,
    Direct,
}

const SIDES: [Side; 3] = [Side::Kernel, Side::Splice, Side::Direct];

impl Side {
    fn label(self) -> &'static str {
        match self {
            Side::Kernel => "through the gateway, kernel relay (`kernel_relay = true`)",
            Side::Splice => "through the gateway, splice(2) (default)",
            Side::Direct => "direct (no programs)",
        }
    }
}

/// A sink: says hello, reads to EOF, then answers with the byte count.
fn sink(l: std::net::TcpListener) {
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let _ = s.write_all(b"server hello");
                let mut buf = vec![0u8; 1 << 16];
                let mut n: u64 = 0;
                loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(k) => n += k as u64,
                    }
                }
                let _ = s.write_all(&n.to_be_bytes());
            });
        }
    });
}

/// Whole-machine busy CPU time so far, ns (/proc/stat, all CPUs, everything but idle/iowait).
fn machine_busy_ns() -> u64 {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let line = stat.lines().next().unwrap_or_default();
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let busy: u64 = v
        .iter()
        .enumerate()
        .filter(|(i, _)| matches!(i, 0 | 1 | 2 | 5 | 6 | 7))
        .map(|(_, x)| *x)
        .sum();
    let hz = 100; // USER_HZ on Linux
    busy * (1_000_000_000 / hz)
}

/// CPU time (ns) of every kworker thread now alive plus the machine's softirq time: where the
/// kernel relay's work runs (other load's share of both is small, and the same for every side).
fn kernel_ns() -> u64 {
    let mut ticks = 0u64;
    if let Ok(rd) = fs::read_dir("/proc") {
        for p in rd.flatten() {
            let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(comm) = fs::read_to_string(format!("/proc/{pid}/comm")) else {
                continue;
            };
            if comm.starts_with("kworker") || comm.starts_with("ksoftirqd") {
                ticks += cpu_ns(pid) / 10_000_000;
            }
        }
    }
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let softirq: u64 = stat
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(7))
        .and_then(|x| x.parse().ok())
        .unwrap_or(0);
    (ticks + softirq) * 10_000_000
}

/// MiB/s of one transfer.
fn round(target: &str) -> f64 {
    let chunk = vec![0x5au8; 1 << 16];
    let hello = client_hello("bulk.example.org");
    let t = Instant::now();
    let mut s = TcpStream::connect(target).expect("connect bulk");
    s.write_all(&hello).expect("hello");
    let mut greet = [0u8; 12];
    s.read_exact(&mut greet).expect("server hello");
    let mut sent = 0;
    while sent < BULK {
        s.write_all(&chunk).expect("bulk write");
        sent += chunk.len();
    }
    s.shutdown(Shutdown::Write).unwrap();
    let mut n = [0u8; 8];
    s.read_exact(&mut n).expect("bulk ack");
    assert_eq!(
        u64::from_be_bytes(n),
        (BULK + hello.len()) as u64,
        "sink got every byte"
    );
    (BULK as f64 / (1 << 20) as f64) / t.elapsed().as_secs_f64()
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v
}

/// The `q` quantile (0..=1) of `v`, interpolated between the two nearest ranks.
fn quantile(v: &[f64], q: f64) -> f64 {
    let v = sorted(v.to_vec());
    let pos = q * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

fn median(v: &[f64]) -> f64 {
    quantile(v, 0.5)
}

/// A side against direct: the per-round paired ratios and the figures drawn from them.
struct Ratios {
    paired: Vec<f64>,
    of_medians: f64,
    cpu: f64,
}

impl Ratios {
    fn line(&self, what: &str) -> String {
        let p = &self.paired;
        format!(
            "| {what} | **{:.3}×** | {:.3}× – {:.3}× | {:.3}× – {:.3}× | {:.3}× | {:.2}× |\n",
            median(p),
            quantile(p, 0.25),
            quantile(p, 0.75),
            quantile(p, 0.0),
            quantile(p, 1.0),
            self.of_medians,
            self.cpu,
        )
    }
}

#[derive(Default, Clone)]
struct Acc {
    mibs: Vec<f64>,
    gw_ns: u64,
    ends_ns: u64,
    machine_ns: u64,
    kernel_ns: u64,
}

/// `net`: the second address byte of the sink (127.<net>.250.1).
pub fn run(pid: u32, net: u8) -> String {
    let on = CgroupGuard::new(&format!("gw-bench-splice-{pid}-kernel"));
    let off = CgroupGuard::new(&format!("gw-bench-splice-{pid}-splice"));
    let direct = CgroupGuard::new(&format!("gw-bench-splice-{pid}-direct"));
    let target = format!("127.{net}.250.1:443");
    let providers = format!(
        "[[provider]]\nname = \"openai\"\nhosts = [\"api.openai.com\"]\naddrs = [\"127.{net}.250.0/24\"]\nshared = true\n"
    );
    let gw_kernel = Gateway::start_opts(
        &format!("gw-bench-splice-{pid}-k"),
        &on.path,
        &providers,
        &Opts {
            intercept_extra: "kernel_relay = true".into(),
            ..Default::default()
        },
    );
    let gw_splice = Gateway::start(&format!("gw-bench-splice-{pid}-s"), &off.path, &providers);
    sink(listen(&target));
    let cg = |s: Side| match s {
        Side::Kernel => &on.path,
        Side::Splice => &off.path,
        Side::Direct => &direct.path,
    };
    let gw_pid = |s: Side| match s {
        Side::Kernel => Some(gw_kernel.pid()),
        Side::Splice => Some(gw_splice.pid()),
        Side::Direct => None,
    };
    // Warm-up, one transfer per side.
    for s in SIDES {
        join(cg(s));
        round(&target);
    }
    let load_before = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let me = std::process::id();
    let mut acc = [Acc::default(), Acc::default(), Acc::default()];
    for r in 0..ROUNDS {
        for k in 0..3 {
            let i = (r + k) % 3;
            let s = SIDES[i];
            join(cg(s));
            let g0 = gw_pid(s).map(cpu_ns).unwrap_or(0);
            let (e0, m0, k0) = (cpu_ns(me), machine_busy_ns(), kernel_ns());
            let mibs = round(&target);
            let (e1, m1, k1) = (cpu_ns(me), machine_busy_ns(), kernel_ns());
            let g1 = gw_pid(s).map(cpu_ns).unwrap_or(0);
            eprintln!("splice round {r} {}: {mibs:.0} MiB/s", s.label());
            let a = &mut acc[i];
            a.mibs.push(mibs);
            a.gw_ns += g1.saturating_sub(g0);
            a.ends_ns += e1.saturating_sub(e0);
            a.machine_ns += m1.saturating_sub(m0);
            a.kernel_ns += k1.saturating_sub(k0);
        }
    }
    leave();
    let load_after = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let relays = |gw: &Gateway, want: &str| {
        gw.fields("connection closed")
            .iter()
            .filter(|f| f["outcome"] == "spliced" && f["relay"] == want)
            .count()
    };
    assert!(
        relays(&gw_kernel, "kernel") > ROUNDS,
        "the kernel-relay rounds were relayed by the kernel"
    );
    assert!(
        relays(&gw_splice, "splice") > ROUNDS,
        "the splice(2) rounds went through splice(2)"
    );
    drop((gw_kernel, gw_splice));
    drop((on, off, direct));

    let per_gib = |ns: u64| ns as f64 / 1e6 / ((ROUNDS * BULK) as f64 / (1u64 << 30) as f64);
    let mut rows = String::new();
    for (i, s) in SIDES.iter().enumerate() {
        let a = &acc[i];
        let v = sorted(a.mibs.clone());
        let gw = if *s == Side::Direct {
            "—".to_string()
        } else {
            format!("{:.0}", per_gib(a.gw_ns))
        };
        rows += &format!(
            "| {} | {:.0} | {:.0} | {:.0} | {gw} | {:.0} | {:.0} | {:.0} |\n",
            s.label(),
            v[0],
            median(&v),
            v[v.len() - 1],
            per_gib(a.ends_ns),
            per_gib(a.kernel_ns),
            per_gib(a.machine_ns),
        );
    }
    // Against direct: each round's transfer over the same round's direct one.
    let against = |i: usize| Ratios {
        paired: (0..ROUNDS)
            .map(|r| acc[i].mibs[r] / acc[2].mibs[r])
            .collect(),
        of_medians: median(&acc[i].mibs) / median(&acc[2].mibs),
        cpu: per_gib(acc[i].machine_ns) / per_gib(acc[2].machine_ns),
    };
    let (kernel, splice) = (against(0), against(1));
    let (k, s) = (median(&kernel.paired), median(&splice.paired));
    let mark = if s >= 0.9 {
        "met"
    } else if k >= 0.9 {
        "met with `kernel_relay = true` only"
    } else {
        "NOT met"
    };
    let load = |l: &str| l.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
    format!(
        "### Bulk throughput through the splice path\n\n\
{mib} MiB per transfer, one TCP stream, client → sink at {target}: a ClientHello for another site\n\
on an address declared shared (so the gateway splices it), the server's first bytes (as a TLS\n\
client waits for the ServerHello), then the payload. Three sides, {ROUNDS} rounds each, the order\n\
rotating every round.\n\n\
| | min MiB/s | median MiB/s | max MiB/s | CPU ms/GiB: gateway | client + sink | kworkers + softirq | whole machine |\n\
|---|---|---|---|---|---|---|---|\n{rows}\n\
Against direct. The headline is the median of the {ROUNDS} per-round ratios (each gateway\n\
transfer over the direct one of the same round), with their quartiles and extremes as the\n\
spread; the ratio of the two medians is beside it.\n\n\
| / direct | per-round median | quartiles | min – max | ratio of medians | whole-machine CPU per GiB |\n\
|---|---|---|---|---|---|\n{}{}\n\
**splice(2) (the default) / direct: {s:.3}×** (per-round median) — goal ≥ 0.9×: {mark}.\n\n\
With the kernel relay, the gateway process only sets a connection up and passes its FINs\n\
on; the bytes go from one socket's receive queue to the other's send queue in the kernel\n\
(sk_skb verdict, deploy/docs/kernel-relay.md): its work is in softirq (the verdict, on the\n\
receiving side) and in a kworker (the send on the peer socket), not in the gateway's column.\n\
Loopback receive work is in softirq on every side (often charged to the sending thread).\n\
\"Whole machine\" is every CPU's busy time during the transfer, other load included: load\n\
average before {lb}, after {la}.\n",
        splice.line("splice(2) (default)"),
        kernel.line("kernel relay (`kernel_relay = true`)"),
        mib = BULK >> 20,
        lb = load(&load_before),
        la = load(&load_after),
    )
}

//! The world of the complete-mediation tests (issue F): a network namespace of the test's own
//! with two DNS servers and one fake provider on many addresses, and a gateway running inside
//! that namespace.
//!
//! - DNS-1 (`198.51.100.53`) is the gateway's own resolver (`[dns] servers`); it answers the
//!   provider names with `198.51.100.10` / `2001:db8:1::10` (OpenAI) and `.11` / `::11`
//!   (Anthropic).
//! - DNS-2 (`198.51.100.54` and `[2001:db8::54]`) is the one the clients' resolv.conf names; it
//!   answers with other addresses, out of [`POOL`] (a test picks a fresh one per case, so an
//!   address learned in one case cannot make the next pass).
//! - The fake provider listens on every one of those addresses and on the static ones
//!   ([`OWN4`] ... [`SHARED6`]), on 443, 8443 and 80, with a certificate (test CA) for every
//!   name the tests use. It records every TCP connection and every request's credentials.
//! - Clients trust one bundle (the gateway's CA and the test CA) and send [`DUMMY`], so a
//!   connection that went direct is *seen* (the fake receives the dummy key) rather than merely
//!   failing.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
};

use crate::{
    CgroupGuard, Gateway, Opts,
    dns::{DnsServer, Rr},
    fake::TestPki,
    netns::TestNet,
    provider::{FakeProvider, Seen},
};

/// The credential every client sends: seen by the fake only if a connection went direct.
pub const DUMMY: &str = "sk-dummy-from-the-workload-0000";

pub const DNS1: &str = "198.51.100.53";
pub const DNS2: &str = "198.51.100.54";
pub const DNS2_V6: &str = "2001:db8::54";
/// What DNS-1 (the gateway's resolver) says.
pub const DNS1_OPENAI: (&str, &str) = ("198.51.100.10", "2001:db8:1::10");
pub const DNS1_ANTHROPIC: (&str, &str) = ("198.51.100.11", "2001:db8:1::11");
/// Static provider addresses for tests that put them in `addrs` (no DNS involved).
pub const OWN4: &str = "198.51.100.30";
pub const OWN6: &str = "2001:db8:3::30";
/// A second static address (e.g. for a provider added by a config change).
pub const OWN4_B: &str = "198.51.100.31";
pub const SHARED4: &str = "198.51.100.40";
pub const SHARED6: &str = "2001:db8:3::40";
/// An address on the fake that no provider owns.
pub const OTHER4: &str = "198.51.100.99";
/// Where a fake Kubernetes API can listen (inside the namespace).
pub const K8S_API: &str = "198.51.100.60";
/// A source address only clients bind to: a connection the fake sees from it came direct.
pub const CLIENT_SRC: &str = "198.51.100.77";

/// DNS-2's answers: `(v4, v6)` pairs, index 0..20.
pub fn pool(i: u8) -> (String, String) {
    assert!(i < 20);
    (
        format!("198.51.100.{}", 100 + i),
        format!("2001:db8:2::{:x}", 0x100 + i as u16),
    )
}

/// Names on the fake's certificate.
pub const NAMES: &[&str] = &[
    "api.openai.com",
    "api.anthropic.com",
    "myres.openai.azure.com",
    "myres6.openai.azure.com",
    "llm.cdn.example",
    "llm.extra.example",
    "www.example.org",
];

/// How a client resolves.
#[derive(Clone, Copy, Debug)]
pub enum Resolv {
    /// `nameserver 198.51.100.54` (UDP).
    Udp,
    /// The same with `options use-vc`: glibc asks over TCP.
    Tcp,
    /// `nameserver 2001:db8::54`.
    V6,
    /// DNS-1 (what the gateway itself uses).
    Dns1,
}

/// Field order is drop order: the fake and the DNS servers before the cgroup and namespace.
pub struct World {
    pub fake: FakeProvider,
    pub dns1: DnsServer,
    pub dns2: DnsServer,
    pub dns2_v6: DnsServer,
    pub pki: TestPki,
    pub cg: CgroupGuard,
    /// `<tmp>/`: resolv.conf variants, hosts, nsswitch.conf, the CA bundle.
    pub files: tempfile::TempDir,
    /// Unique per test: the cgroup, the pin dir and (shortened) the namespace are named after it.
    pub name: String,
    pub net: TestNet,
}

fn sa(ip: &str, port: u16) -> SocketAddr {
    if ip.contains(':') {
        format!("[{ip}]:{port}").parse().unwrap()
    } else {
        format!("{ip}:{port}").parse().unwrap()
    }
}

/// `ip:port` as the gateway logs an `orig_dst` (`[v6]:port`).
pub fn dst(ip: &str, port: u16) -> String {
    sa(ip, port).to_string()
}

impl World {
    pub fn new(prefix: &str) -> Self {
        crate::require_privileges();
        let n = crate::unique();
        let pid = std::process::id();
        let name = format!("{prefix}-{pid}-{n}");
        let net = TestNet::new(&format!("gwm{}-{n}", pid % 100000));
        let mut addrs: Vec<String> = [
            DNS1,
            DNS2,
            DNS2_V6,
            DNS1_OPENAI.0,
            DNS1_OPENAI.1,
            DNS1_ANTHROPIC.0,
            DNS1_ANTHROPIC.1,
            OWN4,
            OWN6,
            OWN4_B,
            SHARED4,
            SHARED6,
            OTHER4,
            K8S_API,
            CLIENT_SRC,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for i in 0..20 {
            let (a, b) = pool(i);
            addrs.push(a);
            addrs.push(b);
        }
        for a in &addrs {
            net.add_addr(a);
        }
        let pki = TestPki::new(NAMES);
        let provider_ips: Vec<&String> = addrs
            .iter()
            .filter(|a| ![DNS1, DNS2, DNS2_V6, K8S_API, CLIENT_SRC].contains(&a.as_str()))
            .collect();
        let listen: Vec<SocketAddr> = provider_ips
            .iter()
            .flat_map(|ip| [443, 8443, 80].map(|p| sa(ip, p)))
            .collect();
        let (fake, dns1, dns2, dns2_v6) = net.within(|| {
            (
                FakeProvider::start_many(&listen, &pki),
                DnsServer::start(sa(DNS1, 53)),
                DnsServer::start(sa(DNS2, 53)),
                DnsServer::start(sa(DNS2_V6, 53)),
            )
        });
        dns1.set(
            "api.openai.com",
            &[
                Rr::A(DNS1_OPENAI.0.parse().unwrap()),
                Rr::Aaaa(DNS1_OPENAI.1.parse().unwrap()),
            ],
        );
        dns1.set(
            "api.anthropic.com",
            &[
                Rr::A(DNS1_ANTHROPIC.0.parse().unwrap()),
                Rr::Aaaa(DNS1_ANTHROPIC.1.parse().unwrap()),
            ],
        );
        let cg = CgroupGuard::new(&name);
        let files = tempfile::Builder::new()
            .prefix("gw-med-")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(
            files.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let w = |f: &str, text: String| {
            let p = files.path().join(f);
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o644))
                .unwrap();
        };
        w(
            "resolv-udp.conf",
            format!("nameserver {DNS2}\noptions timeout:2 attempts:2\n"),
        );
        w(
            "resolv-tcp.conf",
            format!("nameserver {DNS2}\noptions use-vc timeout:2 attempts:2\n"),
        );
        w(
            "resolv-v6.conf",
            format!("nameserver {DNS2_V6}\noptions timeout:2 attempts:2\n"),
        );
        w(
            "resolv-dns1.conf",
            format!("nameserver {DNS1}\noptions timeout:2 attempts:2\n"),
        );
        w("hosts", "127.0.0.1 localhost\n::1 localhost\n".into());
        w("nsswitch.conf", "hosts: files dns\n".into());
        w("bundle.pem", std::fs::read_to_string(&pki.ca_pem).unwrap());
        Self {
            fake,
            dns1,
            dns2,
            dns2_v6,
            pki,
            cg,
            files,
            name,
            net,
        }
    }

    /// DNS-2 answers `name` with `rrs` (on its v4 and its v6 address alike).
    pub fn dns2_set(&self, name: &str, rrs: &[Rr]) {
        self.dns2.set(name, rrs);
        self.dns2_v6.set(name, rrs);
    }

    /// Start a gateway in the namespace, attached to this world's cgroup, DNS-1 as its
    /// resolver, trusting the test CA; then put its CA into the clients' bundle.
    pub fn gateway(&self, providers: &str, mut opts: Opts) -> Gateway {
        opts.netns = Some(self.net.name.clone());
        opts.extra_roots.push(self.pki.ca_pem.clone());
        if opts.dns.is_none() {
            opts.dns = Some(format!(
                "servers = [\"{DNS1}:53\"]\nretry = \"1s\"\nmin_ttl = \"1s\""
            ));
        }
        let gw = Gateway::start_opts(&self.name, &self.cg.path, providers, &opts);
        let both = std::fs::read_to_string(&self.pki.ca_pem).unwrap()
            + &std::fs::read_to_string(gw.ca_pem()).unwrap();
        let bundle = self.bundle();
        std::fs::write(&bundle, both).unwrap();
        gw
    }

    /// Both CAs (the test CA alone before a gateway started).
    pub fn bundle(&self) -> PathBuf {
        self.files.path().join("bundle.pem")
    }

    pub fn bundle_str(&self) -> String {
        self.bundle().display().to_string()
    }

    fn resolv(&self, r: Resolv) -> PathBuf {
        self.files.path().join(match r {
            Resolv::Udp => "resolv-udp.conf",
            Resolv::Tcp => "resolv-tcp.conf",
            Resolv::V6 => "resolv-v6.conf",
            Resolv::Dns1 => "resolv-dns1.conf",
        })
    }

    /// `program args` as a workload: in cgroup `cg`, in a private mount namespace whose
    /// /etc/resolv.conf (`resolv`), /etc/hosts (localhost only) and /etc/nsswitch.conf
    /// (`files dns`) are the test's, in the test's network namespace. It moves into the cgroup
    /// first, then enters the namespace with nsenter (which leaves /sys alone).
    pub fn client_in(&self, cg: &Path, resolv: Resolv, program: &str, args: &[&str]) -> Command {
        let mut c = Command::new("unshare");
        c.args(["-m", "--propagation", "private", "sh", "-c"])
            .arg(
                "mount --bind \"$0\" /etc/resolv.conf && mount --bind \"$1\" /etc/hosts && \
                 mount --bind \"$2\" /etc/nsswitch.conf && echo $$ > \"$3\" && n=\"$4\" && \
                 shift 4 && exec nsenter --net=\"$n\" \"$@\"",
            )
            .arg(self.resolv(resolv))
            .arg(self.files.path().join("hosts"))
            .arg(self.files.path().join("nsswitch.conf"))
            .arg(cg.join("cgroup.procs"))
            .arg(self.net.path())
            .arg(program)
            .args(args);
        for v in [
            "http_proxy",
            "https_proxy",
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "all_proxy",
            "NO_PROXY",
            "no_proxy",
            "OPENAI_BASE_URL",
            "ANTHROPIC_BASE_URL",
        ] {
            c.env_remove(v);
        }
        c
    }

    /// [`Self::client_in`] this world's cgroup.
    pub fn client(&self, resolv: Resolv, program: &str, args: &[&str]) -> Command {
        self.client_in(&self.cg.path, resolv, program, args)
    }

    /// Every request the fake received, with where it arrived.
    pub fn seen(&self) -> Vec<Seen> {
        self.fake.seen()
    }

    /// Requests the fake received at `ip:port`.
    pub fn seen_at(&self, ip: &str, port: u16) -> Vec<Seen> {
        let a = sa(ip, port);
        self.seen()
            .into_iter()
            .filter(|s| s.local == Some(a))
            .collect()
    }

    /// TCP connections the fake accepted at `ip:port`.
    pub fn conns_at(&self, ip: &str, port: u16) -> usize {
        self.fake.conns_at(sa(ip, port))
    }

    /// Panic if any request the fake ever received carried the workload's dummy key (a
    /// connection that went direct, or was spliced where it must have been intercepted).
    pub fn assert_no_dummy(&self, what: &str, gw: Option<&Gateway>) {
        let leaked: Vec<Seen> = self
            .seen()
            .into_iter()
            .filter(|s| s.credentials().iter().any(|c| c.contains(DUMMY)))
            .collect();
        assert!(
            leaked.is_empty(),
            "{what}: the workload's own key reached the provider (a connection bypassed the \
             gateway): {leaked:#?}\n{}",
            gw.map(|g| g.raw_log()).unwrap_or_default()
        );
    }
}

/// Python: one TLS exchange with a provider address, as adversarial as asked.
/// argv: ip port sni(- = none) cafile delay_before_tls mark [host_header]
/// Prints {"connected", "issuer", "status", "error"}; always exits 0.
pub const PY_PROBE: &str = r#"
import socket, ssl, sys, json, time
ip, port, sni, cafile, delay, mark = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], float(sys.argv[5]), int(sys.argv[6])
host = sys.argv[7] if len(sys.argv) > 7 else (sni if sni != "-" else "api.openai.com")
DUMMY = "sk-dummy-from-the-workload-0000"
res = {"connected": False}
try:
    fam = socket.AF_INET6 if ":" in ip else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    if mark:
        s.setsockopt(socket.SOL_SOCKET, 36, mark)  # SO_MARK
    s.settimeout(10)
    s.connect((ip, port))
    res["connected"] = True
    time.sleep(delay)
    ctx = ssl.create_default_context(cafile=cafile)
    if sni == "-":
        ctx.check_hostname = False
        t = ctx.wrap_socket(s)
    else:
        t = ctx.wrap_socket(s, server_hostname=sni)
    res["issuer"] = dict(x[0] for x in t.getpeercert()["issuer"]).get("commonName")
    t.sendall(("GET /v1/models HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nConnection: close\r\n\r\n" % (host, DUMMY)).encode())
    data = b""
    while True:
        c = t.recv(65536)
        if not c:
            break
        data += c
    res["status"] = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else None
except Exception as e:
    res["error"] = "%s: %s" % (type(e).__name__, e)
print(json.dumps(res))
"#;

/// Parse the JSON a probe printed.
pub fn probe_json(out: &str) -> serde_json::Value {
    serde_json::from_str(out.trim().lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("client printed no JSON ({e}): {out:?}"))
}

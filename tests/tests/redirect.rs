//! Issue A end to end: the real eBPF programs attached to a child cgroup, the real gateway
//! binary, unmodified clients (curl, Python) inside the cgroup, a fake provider on loopback.
//! Root and cgroup v2 are required: without them these tests fail with the reason.

use std::{net::UdpSocket, time::Duration};

use gateway_tests::{
    CgroupGuard, Gateway, Opts, PY_CONNECT, PY_ECHO_CLIENT, PY_TLS_CLIENT, fake::FakeServer,
    fake::TestPki, message, require_privileges, run, unique,
};

/// The vault's key for "openai" in these tests.
const VAULT_KEY: &str = "sk-vault-redirect-test-0123456789";
use serde_json::Value;

const T: Duration = Duration::from_secs(20);

/// One test's world. Field order is drop order: the gateway (and its pins) go first.
struct Env {
    gw: Gateway,
    server: FakeServer,
    pki: TestPki,
    cg: CgroupGuard,
    name: String,
    ip: String,
    /// The fake providers' CA and the gateway's CA in one bundle: valid whether a connection is
    /// intercepted or goes direct.
    bundle: std::path::PathBuf,
}

fn env_with(extra_providers: &str, names: &[&str]) -> Env {
    env_full(false, extra_providers, names)
}

/// `shared`: the test provider declares its address shared with other sites (a CDN front).
fn env_full(shared: bool, extra_providers: &str, names: &[&str]) -> Env {
    require_privileges();
    let n = unique();
    let name = format!("gw-test-{}-{n}", std::process::id());
    let cg = CgroupGuard::new(&name);
    let ip = format!("127.10.{n}.1");
    let pki = TestPki::new(names);
    let server = FakeServer::start(format!("{ip}:443").parse().unwrap(), &pki);
    let providers = format!(
        "[[provider]]\nname = \"openai\"\nhosts = [\"api.openai.com\"]\naddrs = [\"{ip}/32\"]\nshared = {shared}\n{extra_providers}"
    );
    let gw = Gateway::start_opts(
        &name,
        &cg.path,
        &providers,
        &Opts {
            extra_roots: vec![pki.ca_pem.clone()],
            keys: vec![("openai".into(), VAULT_KEY.into())],
            ..Default::default()
        },
    );
    let bundle = pki.dir.path().join("bundle.pem");
    let both = std::fs::read_to_string(&pki.ca_pem).unwrap()
        + &std::fs::read_to_string(gw.ca_pem()).unwrap();
    std::fs::write(&bundle, both).unwrap();
    Env {
        gw,
        server,
        pki,
        cg,
        name,
        ip,
        bundle,
    }
}

fn env() -> Env {
    env_with("", &["api.openai.com", "example.com"])
}

impl Env {
    /// Trust for clients: both CAs.
    fn ca(&self) -> &str {
        self.bundle.to_str().unwrap()
    }

    /// The fake providers' CA alone: a client trusting only this cannot accept the gateway.
    fn upstream_ca(&self) -> &str {
        self.pki.ca_pem.to_str().unwrap()
    }

    fn curl(&self, url_host: &str, in_cgroup: bool) -> gateway_tests::ClientRun {
        let resolve = format!("{url_host}:443:{}", self.ip);
        let url = format!("https://{url_host}/v1/models");
        let args = [
            "-sS",
            "--max-time",
            "10",
            "--resolve",
            &resolve,
            "--cacert",
            self.ca(),
            &url,
        ];
        let cmd = if in_cgroup {
            self.cg.command("curl", &args)
        } else {
            let mut c = std::process::Command::new("curl");
            c.args(args);
            c
        };
        run(cmd, T)
    }

    fn accepted_count(&self) -> usize {
        self.gw.fields("connection accepted").len()
    }
}

fn json(out: &str) -> Value {
    serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("client printed no JSON ({e}): {out:?}"))
}

#[test]
fn curl_and_python_in_the_cgroup_land_in_the_gateway_with_their_identity() {
    let e = env();
    // curl as an unprivileged user, so the uid is not just the test's own.
    let resolve = format!("api.openai.com:443:{}", e.ip);
    let curl = run(
        e.cg.command(
            "setpriv",
            &[
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "curl",
                "-sS",
                "--max-time",
                "10",
                "-H",
                "Authorization: Bearer sk-dummy-client-key",
                "--resolve",
                &resolve,
                "--cacert",
                e.ca(),
                "https://api.openai.com/v1/models",
            ],
        ),
        T,
    );
    assert!(curl.ok, "curl failed: {curl:?}\n{}", e.gw.raw_log());
    assert_eq!(curl.stdout, "hello from fake upstream via api.openai.com\n");
    let dst = format!("{}:443", e.ip);
    let (acc, closed) = e.gw.conn_to(&dst);
    assert_eq!(acc["pid"], curl.pid, "{acc}");
    assert_eq!(acc["uid"], 65534, "{acc}");
    assert_eq!(acc["user"], "nobody", "{acc}");
    assert_eq!(acc["comm"], "curl", "{acc}");
    assert_eq!(acc["sni"], "api.openai.com", "{acc}");
    assert_eq!(acc["provider"], "openai", "{acc}");
    assert_eq!(acc["decision"], "intercept", "{acc}");
    assert_eq!(acc["cgroup"], format!("/{}", e.name), "{acc}");
    assert_eq!(closed["outcome"], "intercepted", "{closed}");
    assert_eq!(closed["requests"], 1, "{closed}");
    // The provider saw the vault's key, once, and never the client's.
    let heads = e.server.heads();
    let head = heads
        .last()
        .expect("the fake provider got the request")
        .to_ascii_lowercase();
    assert_eq!(head.matches("authorization:").count(), 1, "{head}");
    assert!(
        head.contains(&format!(
            "authorization: bearer {}",
            VAULT_KEY.to_ascii_lowercase()
        )),
        "{head}"
    );
    assert!(!head.contains("dummy"), "{head}");
    // The program's own decision reached the gateway's tracing output through aya-log.
    let needle = format!(
        "connect4 redirected [::ffff:{}]:443 tgid {}",
        e.ip, curl.pid
    );
    e.gw.wait_for(Duration::from_secs(5), |evs| {
        evs.iter().any(|ev| {
            ev["target"]
                .as_str()
                .is_some_and(|t| t.starts_with("gateway_ebpf"))
                && message(ev).contains(&needle)
        })
    })
    .unwrap_or_else(|| panic!("no eBPF log line {needle:?} in:\n{}", e.gw.raw_log()));

    // An unmodified Python client: the socket reports the address it dialled.
    let py = run(
        e.cg.command(
            "python3",
            &[
                "-c",
                PY_TLS_CLIENT,
                "api.openai.com",
                &e.ip,
                "443",
                e.ca(),
                "4",
            ],
        ),
        T,
    );
    assert!(py.ok, "python failed: {py:?}");
    let out = json(&py.stdout);
    assert_eq!(
        out["peer"],
        serde_json::json!([e.ip, 443]),
        "getpeername must show the dialled address"
    );
    assert!(
        out["body"]
            .as_str()
            .unwrap()
            .contains("hello from fake upstream via api.openai.com")
    );
    let acc =
        e.gw.fields("connection accepted")
            .into_iter()
            .find(|f| f["comm"] == "python3")
            .expect("python connection in gateway log");
    assert_eq!(acc["pid"], py.pid);
    assert_eq!(acc["uid"], 0);
    assert_eq!(acc["orig_dst"], dst);
}

#[test]
fn a_non_provider_sni_passes_through_byte_for_byte_on_a_shared_address_only() {
    let e = env_full(true, "", &["api.openai.com", "example.com"]);
    let n = 1 << 20;
    let py = run(
        e.cg.command(
            "python3",
            &[
                "-c",
                PY_ECHO_CLIENT,
                "example.com",
                &e.ip,
                "443",
                e.upstream_ca(),
                &n.to_string(),
            ],
        ),
        T,
    );
    assert!(py.ok, "python failed: {py:?}");
    let out = json(&py.stdout);
    assert_eq!(out["same"], true, "{out}");
    // The client verified the fake server's own certificate (only the test CA was trusted).
    assert_eq!(out["cert_issuer"]["commonName"], "gateway test upstream CA");
    let (acc, closed) = e.gw.conn_to(&format!("{}:443", e.ip));
    assert_eq!(acc["sni"], "example.com");
    assert_eq!(acc["decision"], "splice");
    assert!(acc["provider"].is_null());
    assert_eq!(closed["outcome"], "spliced", "{closed}");
    assert!(closed["bytes_up"].as_u64().unwrap() > n as u64);
    assert!(closed["bytes_down"].as_u64().unwrap() >= n as u64);

    // Not TLS at all: refused even on a shared address (curl speaking plain HTTP to port 443).
    let seen = e.server.peers().len();
    let plain = run(
        e.cg.command(
            "curl",
            &["-sS", "--max-time", "5", &format!("http://{}:443/", e.ip)],
        ),
        T,
    );
    assert!(!plain.ok, "plain HTTP to a provider address must fail");
    e.gw.wait_for(Duration::from_secs(5), |evs| {
        evs.iter().any(|ev| {
            message(ev) == "connection closed"
                && ev["fields"]["outcome"] == "refused"
                && ev["fields"]["error"]
                    .as_str()
                    .is_some_and(|m| m.contains("not TLS"))
        })
    })
    .unwrap_or_else(|| panic!("plain connection refused as not TLS:\n{}", e.gw.raw_log()));
    assert_eq!(e.server.peers().len(), seen, "nothing reached the provider");
}

#[test]
fn a_non_provider_sni_on_a_providers_own_address_is_refused() {
    let e = env();
    let py = run(
        e.cg.command(
            "python3",
            &[
                "-c",
                PY_ECHO_CLIENT,
                "example.com",
                &e.ip,
                "443",
                e.upstream_ca(),
                "16",
            ],
        ),
        T,
    );
    assert!(!py.ok, "the connection must be refused: {py:?}");
    assert!(
        py.stderr.contains("UNRECOGNIZED_NAME") || py.stderr.contains("unrecognized name"),
        "the client hears why (a TLS alert): {}",
        py.stderr
    );
    let (acc, closed) = e.gw.conn_to(&format!("{}:443", e.ip));
    assert_eq!(acc["decision"], "refuse");
    assert_eq!(closed["outcome"], "refused", "{closed}");
    assert!(e.server.peers().is_empty(), "nothing reached the provider");
}

#[test]
fn processes_outside_the_cgroup_are_not_redirected_and_the_mark_alone_exempts_nothing() {
    let e = env();
    let mark = (0x6777_6179u32).to_string(); // the default bypass mark
    // A workload that sets the gateway's mark (it has CAP_NET_ADMIN here) is still redirected:
    // only the gateway's own cgroup may use the mark.
    let before = e.accepted_count();
    let r = run(
        e.cg.command("python3", &["-c", PY_CONNECT, &e.ip, "443", &mark]),
        T,
    );
    assert!(r.ok, "{r:?}");
    let port = json(&r.stdout)["local_port"].as_u64().unwrap() as u16;
    e.gw.wait_for(Duration::from_secs(5), |evs| {
        evs.iter()
            .filter(|ev| message(ev) == "connection accepted")
            .count()
            > before
    })
    .expect("marked connect from the workload's cgroup redirected");
    assert!(!e.server.peers().iter().any(|p| p.port() == port));
    // A process outside the cgroup is not redirected at all.
    let mut outside = std::process::Command::new("python3");
    outside.args(["-c", PY_CONNECT, &e.ip, "443", "0"]);
    let before = e.accepted_count();
    let r = run(outside, T);
    assert!(r.ok, "outside: {r:?}");
    let port = json(&r.stdout)["local_port"].as_u64().unwrap() as u16;
    // The server saw the client's own socket, not one of the gateway's.
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        e.server.peers().iter().any(|p| p.port() == port),
        "outside: server did not see port {port} directly: {:?}",
        e.server.peers()
    );
    assert_eq!(
        e.accepted_count(),
        before,
        "outside: the gateway saw the connection"
    );
    // And the same client without the mark, in the cgroup, is redirected.
    let before = e.accepted_count();
    let r = run(
        e.cg.command("python3", &["-c", PY_CONNECT, &e.ip, "443", "0"]),
        T,
    );
    assert!(r.ok, "{r:?}");
    let port = json(&r.stdout)["local_port"].as_u64().unwrap() as u16;
    e.gw.wait_for(Duration::from_secs(5), |evs| {
        evs.iter()
            .filter(|ev| message(ev) == "connection accepted")
            .count()
            > before
    })
    .expect("unmarked connect redirected");
    assert!(!e.server.peers().iter().any(|p| p.port() == port));
}

const PY_UDP: &str = r#"
import socket, sys, json
ip, other_port, other_ip = sys.argv[1], int(sys.argv[2]), sys.argv[3]
res = {}
def attempt(name, fam, fn):
    s = socket.socket(fam, socket.SOCK_DGRAM)
    try:
        fn(s); res[name] = "ok"
    except PermissionError:
        res[name] = "EPERM"
    except OSError as e:
        res[name] = "errno %d" % e.errno
attempt("sendto_provider_443", socket.AF_INET, lambda s: s.sendto(b"q", (ip, 443)))
attempt("connect_provider_443", socket.AF_INET, lambda s: s.connect((ip, 443)))
attempt("sendto_mapped_443", socket.AF_INET6, lambda s: s.sendto(b"q", ("::ffff:" + ip, 443)))
attempt("sendto_provider_other_port", socket.AF_INET, lambda s: s.sendto(b"other-port", (ip, other_port)))
attempt("sendto_other_ip_443", socket.AF_INET, lambda s: s.sendto(b"other-ip", (other_ip, 443)))
print(json.dumps(res))
"#;

#[test]
fn udp_to_a_provider_on_any_port_is_denied_and_other_udp_works() {
    let e = env();
    let other_ip = format!("{}.2", e.ip.rsplit_once('.').unwrap().0);
    let rx_port = UdpSocket::bind(format!("{}:0", e.ip)).unwrap();
    let rx_ip = UdpSocket::bind(format!("{other_ip}:443")).unwrap();
    for s in [&rx_port, &rx_ip] {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    }
    let other_port = rx_port.local_addr().unwrap().port().to_string();
    let r = run(
        e.cg.command("python3", &["-c", PY_UDP, &e.ip, &other_port, &other_ip]),
        T,
    );
    assert!(r.ok, "{r:?}");
    let res = json(&r.stdout);
    assert_eq!(res["sendto_provider_443"], "EPERM", "{res}");
    assert_eq!(res["connect_provider_443"], "EPERM", "{res}");
    assert_eq!(res["sendto_mapped_443"], "EPERM", "{res}");
    assert_eq!(
        res["sendto_provider_other_port"], "EPERM",
        "UDP to a provider address is refused on every port: {res}"
    );
    assert_eq!(res["sendto_other_ip_443"], "ok", "{res}");
    let mut buf = [0u8; 64];
    assert!(
        rx_port.recv(&mut buf).is_err(),
        "nothing reaches the provider address on another port"
    );
    let n = rx_ip
        .recv(&mut buf)
        .expect("datagram to another address on 443 arrives");
    assert_eq!(&buf[..n], b"other-ip");
    assert!(
        e.gw.raw_log().contains("denied udp"),
        "UDP denial logged by the programs"
    );
}

#[test]
fn ipv6_and_v4_mapped_dials_are_redirected() {
    // The only test using [::1]:443.
    let e = env_with(
        "[[provider]]\nname = \"v6\"\nhosts = [\"v6.example.net\"]\naddrs = [\"::1/128\"]\nkey = \"openai\"\n",
        &["api.openai.com", "v6.example.net"],
    );
    let server6 = FakeServer::start("[::1]:443".parse().unwrap(), &e.pki);
    let py = run(
        e.cg.command(
            "python3",
            &[
                "-c",
                PY_TLS_CLIENT,
                "v6.example.net",
                "::1",
                "443",
                e.ca(),
                "6",
            ],
        ),
        T,
    );
    assert!(py.ok, "python v6 failed: {py:?}\n{}", e.gw.raw_log());
    let out = json(&py.stdout);
    assert_eq!(out["peer"], serde_json::json!(["::1", 443]));
    let (acc, closed) = e.gw.conn_to("[::1]:443");
    assert_eq!(acc["pid"], py.pid);
    assert_eq!(acc["sni"], "v6.example.net");
    assert_eq!(acc["provider"], "v6");
    assert_eq!(closed["outcome"], "intercepted");
    assert_eq!(
        server6.peers().len(),
        1,
        "the gateway reached the v6 upstream once"
    );

    // v4-mapped: an AF_INET6 socket dialling ::ffff:127.10.n.1.
    let mapped = format!("::ffff:{}", e.ip);
    let py = run(
        e.cg.command(
            "python3",
            &[
                "-c",
                PY_TLS_CLIENT,
                "api.openai.com",
                &mapped,
                "443",
                e.ca(),
                "6",
            ],
        ),
        T,
    );
    assert!(py.ok, "python mapped failed: {py:?}");
    assert_eq!(json(&py.stdout)["peer"], serde_json::json!([mapped, 443]));
    let (acc, _) = e.gw.conn_to(&format!("{}:443", e.ip));
    assert_eq!(acc["pid"], py.pid);
    assert_eq!(acc["comm"], "python3");
}

/// Programs attached to the cgroup, by attach type, as bpftool reports them.
fn attached(cg: &std::path::Path) -> Vec<(String, String)> {
    let out = std::process::Command::new("bpftool")
        .args(["-j", "cgroup", "show"])
        .arg(cg)
        .output()
        .expect("bpftool (Debian package bpftool; cargo xtask test installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    if text.trim().is_empty() {
        return Vec::new();
    }
    let v: Value =
        serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("bpftool json: {e}: {text}"));
    v.as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["attach_type"].as_str().unwrap_or("").to_string(),
                p["name"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn killed_daemon_fails_closed_restart_adopts_and_detach_restores_direct_access() {
    let mut e = env();
    let progs = attached(&e.cg.path);
    assert_eq!(progs.len(), 10, "ten programs attached: {progs:?}");
    let ok = e.curl("api.openai.com", true);
    assert!(ok.ok, "{ok:?}");

    e.gw.kill9();
    let seen = e.server.peers().len();
    let refused = e.curl("api.openai.com", true);
    assert!(
        !refused.ok,
        "with the daemon down a provider connect must fail: {refused:?}"
    );
    assert_eq!(
        refused.code,
        Some(7),
        "curl: couldn't connect (refused): {refused:?}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        e.server.peers().len(),
        seen,
        "nothing reached the provider while the daemon was down"
    );
    assert_eq!(
        attached(&e.cg.path).len(),
        10,
        "pins keep the programs attached"
    );

    e.gw.spawn();
    let modes: Vec<Value> =
        e.gw.fields("eBPF redirect in force")
            .iter()
            .map(|f| f["mode"].clone())
            .collect();
    assert_eq!(modes, vec![Value::from("Fresh"), Value::from("Adopted")]);
    let again = e.curl("api.openai.com", true);
    assert!(again.ok, "after restart: {again:?}\n{}", e.gw.raw_log());
    assert_eq!(
        attached(&e.cg.path),
        progs,
        "restart attached nothing twice"
    );

    let before = e.accepted_count();
    let out = e.gw.cli(&["detach"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("detached: removed 10 program links"),
        "{out:?}"
    );
    assert!(!e.gw.pin_dir.exists());
    assert_eq!(attached(&e.cg.path), vec![], "detach removes every program");
    let direct = e.curl("api.openai.com", true);
    assert!(direct.ok, "direct after detach: {direct:?}");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        e.accepted_count(),
        before,
        "after detach the gateway sees nothing"
    );
    let out = e.gw.cli(&["detach"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("nothing to detach"),
        "{out:?}"
    );
}

#[test]
fn provider_hosts_are_resolved_re_resolved_by_ttl_and_dropped_after_grace() {
    require_privileges();
    let n = unique();
    let name = format!("gw-test-{}-{n}", std::process::id());
    let cg = CgroupGuard::new(&name);
    let ip = format!("127.10.{n}.1");
    let pki = TestPki::new(&["api.openai.com"]);
    let server = FakeServer::start(format!("{ip}:443").parse().unwrap(), &pki);
    let dns = gateway_tests::dns::FakeDns::start();
    dns.set("api.openai.com", &[ip.parse().unwrap()], 1);
    let gw = Gateway::start_opts(
        &name,
        &cg.path,
        "[[provider]]\nname = \"openai\"\nhosts = [\"api.openai.com\", \"offline.example.net\"]\n",
        &Opts {
            dns: Some(format!(
                "servers = [\"{}\"]\nmin_ttl = \"1s\"\ngrace = \"1s\"\nretry = \"1s\"",
                dns.addr
            )),
            extra_roots: vec![pki.ca_pem.clone()],
            keys: vec![("openai".into(), VAULT_KEY.into())],
            ..Default::default()
        },
    );
    let bundle = pki.dir.path().join("bundle.pem");
    std::fs::write(
        &bundle,
        std::fs::read_to_string(&pki.ca_pem).unwrap()
            + &std::fs::read_to_string(gw.ca_pem()).unwrap(),
    )
    .unwrap();
    let ca = bundle.to_str().unwrap().to_string();
    let resolve = format!("api.openai.com:443:{ip}");
    let curl = || {
        run(
            cg.command(
                "curl",
                &[
                    "-sS",
                    "--max-time",
                    "5",
                    "--resolve",
                    &resolve,
                    "--cacert",
                    &ca,
                    "https://api.openai.com/",
                ],
            ),
            T,
        )
    };
    let accepted = || gw.fields("connection accepted").len();

    // Resolved address → redirected (the set is written right after the answer arrives).
    let mut redirected = false;
    for _ in 0..50 {
        let r = curl();
        assert!(r.ok, "{r:?}");
        if accepted() > 0 {
            redirected = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        redirected,
        "the resolved address was never redirected:\n{}",
        gw.raw_log()
    );
    let (acc, _) = gw.conn_to(&format!("{ip}:443"));
    assert_eq!(acc["provider"], "openai");

    // A name that does not resolve is logged and retried; the gateway keeps serving.
    gw.wait_for(Duration::from_secs(10), |evs| {
        evs.iter().any(|e| {
            message(e).contains("did not resolve") && e["fields"]["host"] == "offline.example.net"
        })
    })
    .unwrap_or_else(|| panic!("no warning for the unresolvable host:\n{}", gw.raw_log()));

    // The name moves: the old address stays redirected for TTL + grace, then goes direct.
    dns.set(
        "api.openai.com",
        &[format!("127.10.{n}.3").parse().unwrap()],
        1,
    );
    let before_queries = dns.queries();
    let mut direct = false;
    for _ in 0..100 {
        let before = accepted();
        let r = curl();
        assert!(r.ok, "{r:?}");
        std::thread::sleep(Duration::from_millis(100));
        if accepted() == before {
            direct = true;
            break;
        }
    }
    assert!(
        direct,
        "the old address was never dropped:\n{}",
        gw.raw_log()
    );
    assert!(dns.queries() > before_queries, "the name was re-resolved");
    assert!(!server.peers().is_empty());
    drop(gw);
}

#[test]
fn pins_for_another_cgroup_are_replaced_not_stacked() {
    let mut e = env();
    assert_eq!(attached(&e.cg.path).len(), 10);
    e.gw.kill9();
    // Same pin dir, another cgroup: the old programs must go, the new ones attach once.
    let other = CgroupGuard::new(&format!("{}-b", e.name));
    let text = std::fs::read_to_string(&e.gw.config).unwrap();
    let moved = text.replace(
        &format!("cgroup = \"{}\"", e.cg.path.display()),
        &format!("cgroup = \"{}\"", other.path.display()),
    );
    assert_ne!(text, moved);
    std::fs::write(&e.gw.config, moved).unwrap();
    e.gw.spawn();
    let modes: Vec<Value> =
        e.gw.fields("eBPF redirect in force")
            .iter()
            .map(|f| f["mode"].clone())
            .collect();
    assert_eq!(modes, vec![Value::from("Fresh"), Value::from("Replaced")]);
    assert_eq!(attached(&e.cg.path), vec![], "old cgroup released");
    assert_eq!(attached(&other.path).len(), 10, "new cgroup attached once");
    // A client in the new cgroup is redirected; one in the old cgroup goes direct.
    let resolve = format!("api.openai.com:443:{}", e.ip);
    let args = [
        "-sS",
        "--max-time",
        "10",
        "--resolve",
        &resolve,
        "--cacert",
        e.ca(),
        "https://api.openai.com/",
    ];
    let r = run(other.command("curl", &args), T);
    assert!(r.ok, "{r:?}");
    let (acc, _) = e.gw.conn_to(&format!("{}:443", e.ip));
    assert_eq!(acc["pid"], r.pid);
    let before = e.accepted_count();
    let r = run(e.cg.command("curl", &args), T);
    assert!(r.ok, "{r:?}");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        e.accepted_count(),
        before,
        "the old cgroup is no longer redirected"
    );
    drop(e.gw);
    drop(other);
}

/// `cmd args` in the cgroup, in a private mount namespace whose /etc/resolv.conf names
/// `nameserver` (the machine's own file is never touched).
fn with_resolver(
    cg: &CgroupGuard,
    resolv: &std::path::Path,
    program: &str,
    args: &[&str],
) -> std::process::Command {
    let mut c = std::process::Command::new("unshare");
    c.args(["-m", "--propagation", "private", "sh", "-c"])
        .arg("mount --bind \"$0\" /etc/resolv.conf && echo $$ > \"$1\" && shift 2 && exec \"$@\"")
        .arg(resolv)
        .arg(cg.path.join("cgroup.procs"))
        .arg("placeholder")
        .arg(program)
        .args(args);
    c
}

#[test]
fn an_address_learned_from_the_workloads_own_dns_answer_is_intercepted() {
    require_privileges();
    let n = unique();
    let name = format!("gw-test-{}-{n}", std::process::id());
    let cg = CgroupGuard::new(&name);
    let ip = format!("127.10.{n}.1");
    let pki = TestPki::new(&["api.openai.com"]);
    let server =
        gateway_tests::provider::FakeProvider::start(format!("{ip}:443").parse().unwrap(), &pki);
    // The workload's own resolver, which the gateway's resolver (a closed port) knows nothing of.
    let dns = gateway_tests::dns::FakeDns::start_at(format!("127.53.{n}.1:53").parse().unwrap());
    dns.set("api.openai.com", &[ip.parse().unwrap()], 30);
    dns.set("www.example.org", &["127.0.0.1".parse().unwrap()], 30);
    let mut gw = Gateway::start_opts(
        &name,
        &cg.path,
        "[[provider]]\nname = \"openai\"\nhosts = [\"api.openai.com\"]\n",
        &Opts {
            extra_roots: vec![pki.ca_pem.clone()],
            keys: vec![("openai".into(), VAULT_KEY.into())],
            ..Default::default()
        },
    );
    let resolv = gw.dir.path().join("resolv.conf");
    std::fs::write(
        &resolv,
        format!("nameserver 127.53.{n}.1\noptions attempts:1 timeout:2\n"),
    )
    .unwrap();
    let bundle = pki.dir.path().join("bundle.pem");
    std::fs::write(
        &bundle,
        std::fs::read_to_string(&pki.ca_pem).unwrap()
            + &std::fs::read_to_string(gw.ca_pem()).unwrap(),
    )
    .unwrap();
    // Nothing but the workload's DNS says 127.10.n.1 is OpenAI's.
    let r = run(
        with_resolver(
            &cg,
            &resolv,
            "curl",
            &[
                "-sS",
                "--max-time",
                "10",
                "--cacert",
                bundle.to_str().unwrap(),
                "-H",
                "authorization: Bearer sk-dummy-client-key",
                "-w",
                "\n%{http_code} %{remote_ip}",
                "https://api.openai.com/v1/models",
            ],
        ),
        T,
    );
    assert!(
        r.stdout.ends_with(&format!("\n200 {ip}")),
        "{r:?}\n{}",
        gw.raw_log()
    );
    let seen = server.seen();
    assert_eq!(seen.len(), 1, "one request reached the provider");
    assert_eq!(
        seen[0].credentials(),
        vec![format!("authorization: Bearer {VAULT_KEY}")]
    );
    assert!(dns.queries() >= 1, "the workload's own server answered");
    let learned = gw.fields("provider addresses learned from a workload's DNS answer");
    assert!(
        learned
            .iter()
            .any(|f| f["addrs"].as_str().unwrap_or("").contains(&ip)),
        "{learned:?}"
    );
    // Other names resolve through the same path untouched; getent sees the server it asked.
    let r = run(
        with_resolver(&cg, &resolv, "getent", &["ahostsv4", "www.example.org"]),
        T,
    );
    assert!(r.ok && r.stdout.contains("127.0.0.1"), "{r:?}");
    // And a name the server does not know fails as it would without the gateway.
    let r = run(
        with_resolver(&cg, &resolv, "getent", &["hosts", "nx.example.org"]),
        T,
    );
    assert_eq!(r.code, Some(2), "NXDOMAIN passes as NXDOMAIN: {r:?}");

    // Another build replaces the pins: what the workloads taught the old programs is carried
    // over, so a client still holding the address (no new lookup) is intercepted, not direct.
    gw.kill9();
    gateway_tests::zero_pinned_meta(&gw.pin_dir);
    gw.spawn();
    let modes: Vec<Value> = gw
        .fields("eBPF redirect in force")
        .iter()
        .map(|f| f["mode"].clone())
        .collect();
    assert_eq!(modes.last(), Some(&Value::from("Replaced")), "{modes:?}");
    let resolve = format!("api.openai.com:443:{ip}");
    let r = run(
        cg.command(
            "curl",
            &[
                "-sS",
                "--max-time",
                "10",
                "--resolve",
                &resolve,
                "--cacert",
                bundle.to_str().unwrap(),
                "-H",
                "authorization: Bearer sk-dummy-client-key",
                "https://api.openai.com/v1/models",
            ],
        ),
        T,
    );
    assert!(r.ok, "{r:?}\n{}", gw.raw_log());
    let seen = server.seen();
    assert_eq!(
        seen.len(),
        2,
        "the second request reached the provider through the gateway"
    );
    assert_eq!(
        seen[1].credentials(),
        vec![format!("authorization: Bearer {VAULT_KEY}")]
    );
}

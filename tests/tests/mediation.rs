//! Issue F, "complete mediation", from the outside: every way a workload in the attached cgroup
//! can reach a provider address either goes through the gateway (the provider sees the vault's
//! key) or fails (the provider sees nothing). Nothing goes direct.
//!
//! Each test builds its own world (tests/src/mediation.rs): a network namespace with DNS-1 (the
//! gateway's resolver), DNS-2 (the clients' resolver, answering provider names with *other*
//! addresses), a fake provider on all those addresses (443, 8443, 80) that records every
//! connection and every credential, and the gateway running inside the namespace. Clients trust
//! the gateway's CA and the fake's, and send a dummy key: a connection that bypassed the
//! gateway is seen (the fake gets the dummy key), not merely failed.

use std::{
    io::{BufRead as _, BufReader},
    process::Stdio,
    time::{Duration, Instant},
};

use gateway_tests::{
    CgroupGuard, Gateway, Opts,
    dns::Rr,
    mediation::{
        CLIENT_SRC, DNS1_OPENAI, DNS2, DUMMY, K8S_API, OTHER4, OWN4, OWN4_B, OWN6, PY_PROBE,
        Resolv, SHARED4, SHARED6, World, dst, pool, probe_json,
    },
    message, py_venv, run,
};
use serde_json::Value;

const T: Duration = Duration::from_secs(30);
const OPENAI_KEY: &str = "sk-vault-mediation-openai-5e1f";
const ANTHROPIC_KEY: &str = "sk-ant-vault-mediation-7a2b";
const AZURE_KEY: &str = "vault-mediation-azure-9c3d";
const TEAM_KEY: &str = "sk-vault-mediation-team-a-4d4e";
const CDN_KEY: &str = "sk-vault-mediation-cdn-6f6f";

fn keys(k: &[(&str, &str)]) -> Vec<(String, String)> {
    k.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// The built-in providers, OpenAI also on the static addresses OWN4 / OWN6.
fn static_openai() -> String {
    format!("[[provider]]\nname = \"openai\"\naddrs = [\"{OWN4}/32\", \"{OWN6}/128\"]\n")
}

/// A provider whose addresses are shared with other sites (a CDN).
fn shared_cdn() -> String {
    format!(
        "[[provider]]\nname = \"cdn-llm\"\nhosts = [\"llm.cdn.example\"]\naddrs = [\"{SHARED4}/32\", \"{SHARED6}/128\"]\nkey = \"cdn-llm\"\nshared = true\n"
    )
}

fn opts(k: &[(&str, &str)]) -> Opts {
    Opts {
        builtin: true,
        keys: keys(k),
        ..Default::default()
    }
}

/// The credentials of every request the fake got at `ip:443`, flattened.
fn creds_at(w: &World, ip: &str) -> Vec<String> {
    w.seen_at(ip, 443)
        .iter()
        .flat_map(|s| s.credentials())
        .collect()
}

/// Wait until the fake has `n` requests at `ip:port` (the gateway's upstream may lag the
/// client's answer by nothing, but a test must not race it).
fn wait_seen(w: &World, ip: &str, port: u16, n: usize) {
    let end = Instant::now() + Duration::from_secs(5);
    while w.seen_at(ip, port).len() < n && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn curl_args<'a>(extra: &[&'a str], url: &'a str, ca: &'a str) -> Vec<&'a str> {
    let mut v = vec![
        "-sS",
        "--max-time",
        "10",
        "--cacert",
        ca,
        "-H",
        "authorization: Bearer sk-dummy-from-the-workload-0000",
        "-w",
        "\n%{http_code} %{remote_ip}",
    ];
    v.extend_from_slice(extra);
    v.push(url);
    v
}

// ---------------------------------------------------------------------------------------------
// The harness itself (no gateway): it must be able to show a bypass.

#[test]
fn harness_dns_servers_answer_inside_the_namespace_and_the_fake_sees_a_direct_connection() {
    let w = World::new("gw-med-harness");
    let (v4, v6) = pool(0);
    w.dns2_set(
        "api.openai.com",
        &[Rr::A(v4.parse().unwrap()), Rr::Aaaa(v6.parse().unwrap())],
    );
    let (a4, _) = pool(1);
    w.dns2_set(
        "myres.openai.azure.com",
        &[Rr::Cname("myres.privatelink.openai.azure.com".into())],
    );
    w.dns2_set(
        "myres.privatelink.openai.azure.com",
        &[Rr::Cname("az-fe-1.edge.example.net".into())],
    );
    w.dns2_set("az-fe-1.edge.example.net", &[Rr::A(a4.parse().unwrap())]);
    let getent = |resolv, name: &str| {
        let r = run(
            w.client(resolv, "getent", &["ahosts", name]),
            Duration::from_secs(15),
        );
        assert!(r.ok, "getent ahosts {name} ({resolv:?}): {r:?}");
        r.stdout
    };
    // DNS-2 over UDP, over TCP (use-vc), at its v6 address; DNS-1 says something else.
    for resolv in [Resolv::Udp, Resolv::Tcp, Resolv::V6] {
        let out = getent(resolv, "api.openai.com");
        assert!(out.contains(&v4) && out.contains(&v6), "{resolv:?}: {out}");
    }
    assert!(
        w.dns2.queries().iter().any(|q| q.tcp),
        "use-vc asked over TCP: {:?}",
        w.dns2.queries()
    );
    assert!(!w.dns2_v6.queries().is_empty());
    let out = getent(Resolv::Dns1, "api.openai.com");
    assert!(out.contains(DNS1_OPENAI.0) && !out.contains(&v4), "{out}");
    // A CNAME chain resolves to its end.
    let out = getent(Resolv::Udp, "myres.openai.azure.com");
    assert!(out.contains(&a4), "{out}");
    // Unknown names fail.
    let r = run(
        w.client(Resolv::Udp, "getent", &["ahosts", "nothing.example"]),
        T,
    );
    assert!(!r.ok, "{r:?}");

    // No gateway: curl in the cgroup resolving through DNS-2 reaches the fake directly, and the
    // fake sees the workload's dummy key — the signal every other test relies on.
    let ca = w.bundle_str();
    for (flag, ip) in [("-4", &v4), ("-6", &v6)] {
        let r = run(
            w.client(
                Resolv::Udp,
                "curl",
                &curl_args(&[flag], "https://api.openai.com/v1/models", &ca),
            ),
            T,
        );
        assert!(r.stdout.ends_with(&format!("\n200 {ip}")), "{flag}: {r:?}");
        let creds = creds_at(&w, ip);
        assert_eq!(creds, vec![format!("authorization: Bearer {DUMMY}")]);
    }
    // A plain port records the connection and the request too.
    let r = run(
        w.client(
            Resolv::Udp,
            "curl",
            &curl_args(&["-4"], "http://api.openai.com:80/v1/models", &ca),
        ),
        T,
    );
    assert!(r.stdout.ends_with(&format!("\n200 {v4}")), "{r:?}");
    assert_eq!(w.seen_at(&v4, 80).len(), 1);
    assert_eq!(w.conns_at(&v4, 80), 1);
    // A raw TLS probe with no SNI reaches the fake too.
    let r = run(
        w.client(
            Resolv::Udp,
            "python3",
            &["-c", PY_PROBE, OWN4, "443", "-", &ca, "0", "0"],
        ),
        T,
    );
    let p = probe_json(&r.stdout);
    assert_eq!(p["status"], 200, "{p}");
    assert_eq!(w.seen_at(OWN4, 443)[0].sni, None);
}

// ---------------------------------------------------------------------------------------------
// Clients resolving through their own DNS.

#[test]
fn curl_resolving_through_its_own_dns_is_intercepted_over_udp_tcp_ipv4_and_ipv6() {
    let w = World::new("gw-med-curl");
    let gw = w.gateway("", opts(&[("openai", OPENAI_KEY)]));
    let ca = w.bundle_str();
    // A fresh DNS-2 answer per case: nothing learned in one case can make the next pass.
    let cases = [
        ("UDP DNS, IPv4", Resolv::Udp, "-4", 2u8, false),
        ("UDP DNS, IPv6", Resolv::Udp, "-6", 3, true),
        ("TCP DNS (use-vc), IPv4", Resolv::Tcp, "-4", 4, false),
        ("TCP DNS (use-vc), IPv6", Resolv::Tcp, "-6", 5, true),
        ("IPv6 nameserver, IPv4", Resolv::V6, "-4", 6, false),
        ("IPv6 nameserver, IPv6", Resolv::V6, "-6", 7, true),
    ];
    let mut failures = Vec::new();
    for (label, resolv, flag, i, six) in cases {
        let (v4, v6) = pool(i);
        w.dns2_set(
            "api.openai.com",
            &[Rr::A(v4.parse().unwrap()), Rr::Aaaa(v6.parse().unwrap())],
        );
        let ip = if six { v6 } else { v4 };
        let r = run(
            w.client(
                resolv,
                "curl",
                &curl_args(&[flag], "https://api.openai.com/v1/models", &ca),
            ),
            T,
        );
        wait_seen(&w, &ip, 443, 1);
        let creds = creds_at(&w, &ip);
        if !r.stdout.ends_with(&format!("\n200 {ip}"))
            || creds != vec![format!("authorization: Bearer {OPENAI_KEY}")]
        {
            failures.push(format!(
                "{label}: curl {:?} / {:?}; the provider at {ip} saw {creds:?}",
                r.stdout, r.stderr
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "not intercepted:\n{}\n{}",
        failures.join("\n"),
        gw.raw_log()
    );
    w.assert_no_dummy("curl", Some(&gw));
    // The gateway's own resolver (DNS-1) was asked too; the workload's answers came from DNS-2.
    assert!(!w.dns1.queries().is_empty(), "the gateway never used DNS-1");
}

const PY_OPENAI: &str = r#"
import json, openai
c = openai.OpenAI(api_key="sk-dummy-from-the-workload-0000", max_retries=0, timeout=15)
msgs = [{"role": "user", "content": "hi"}]
plain = c.chat.completions.create(model="gpt-4o-mini", messages=msgs).choices[0].message.content
stream = "".join((ch.choices[0].delta.content or "") for ch in c.chat.completions.create(model="gpt-4o-mini", messages=msgs, stream=True) if ch.choices)
print(json.dumps({"plain": plain, "stream": stream}))
"#;

const PY_ANTHROPIC: &str = r#"
import json, anthropic
c = anthropic.Anthropic(api_key="sk-dummy-from-the-workload-0000", max_retries=0, timeout=15)
msgs = [{"role": "user", "content": "hi"}]
plain = c.messages.create(model="claude-x", max_tokens=16, messages=msgs).content[0].text
with c.messages.stream(model="claude-x", max_tokens=16, messages=msgs) as s:
    stream = "".join(s.text_stream)
print(json.dumps({"plain": plain, "stream": stream}))
"#;

/// An SDK, unchanged, resolving its default host through glibc and DNS-2: once with only an A
/// answer, once with only an AAAA answer (so the SDK dials IPv4, then IPv6).
fn sdk_case(prefix: &str, host: &str, script: &str, key_name: &str, key: &str, cred: &str) {
    let venv = py_venv();
    let w = World::new(prefix);
    let gw = w.gateway("", opts(&[(key_name, key)]));
    let py = venv.join("bin/python");
    let py = py.to_str().unwrap();
    let mut failures = Vec::new();
    for (label, i, six) in [("IPv4", 8u8, false), ("IPv6", 9, true)] {
        let (v4, v6) = pool(i);
        let ip = if six { v6.clone() } else { v4.clone() };
        w.dns2_set(
            host,
            &[if six {
                Rr::Aaaa(v6.parse().unwrap())
            } else {
                Rr::A(v4.parse().unwrap())
            }],
        );
        let mut cmd = w.client(Resolv::Udp, py, &["-c", script]);
        cmd.env("SSL_CERT_FILE", w.bundle());
        let r = run(cmd, Duration::from_secs(60));
        wait_seen(&w, &ip, 443, 2);
        let creds = creds_at(&w, &ip);
        let want = format!("{cred}{key}");
        if !r.ok || creds.len() != 2 || creds.iter().any(|c| *c != want) {
            failures.push(format!(
                "{label}: sdk {:?} / {:?}; the provider at {ip} saw {creds:?}",
                r.stdout,
                r.stderr.lines().last()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "not intercepted:\n{}\n{}",
        failures.join("\n"),
        gw.raw_log()
    );
    w.assert_no_dummy(prefix, Some(&gw));
}

#[test]
fn the_python_openai_sdk_resolving_through_its_own_dns_is_intercepted_over_ipv4_and_ipv6() {
    gateway_tests::require_privileges();
    sdk_case(
        "gw-med-sdk-oai",
        "api.openai.com",
        PY_OPENAI,
        "openai",
        OPENAI_KEY,
        // OpenAI's credential is a bearer token.
        "authorization: Bearer ",
    );
}

#[test]
fn the_python_anthropic_sdk_resolving_through_its_own_dns_is_intercepted_over_ipv4_and_ipv6() {
    gateway_tests::require_privileges();
    sdk_case(
        "gw-med-sdk-ant",
        "api.anthropic.com",
        PY_ANTHROPIC,
        "anthropic",
        ANTHROPIC_KEY,
        "x-api-key: ",
    );
}

#[test]
fn an_azure_resource_under_a_builtin_wildcard_reached_through_a_cname_chain_gets_the_vault_api_key()
{
    let w = World::new("gw-med-azure");
    let gw = w.gateway("", opts(&[("azure-openai", AZURE_KEY)]));
    let ca = w.bundle_str();
    // As Azure answers: the resource name is an alias of a privatelink name, itself an alias
    // of a front end with no provider-like name at all. DNS-1 knows none of these names.
    let (v4, _) = pool(10);
    let (_, v6) = pool(11);
    for (res, ip, rr) in [
        ("myres", &v4, Rr::A(v4.parse().unwrap())),
        ("myres6", &v6, Rr::Aaaa(v6.parse().unwrap())),
    ] {
        let front = format!("az-fe-{res}.edge.example.net");
        w.dns2_set(
            &format!("{res}.openai.azure.com"),
            &[Rr::Cname(format!("{res}.privatelink.openai.azure.com"))],
        );
        w.dns2_set(
            &format!("{res}.privatelink.openai.azure.com"),
            &[Rr::Cname(front.clone())],
        );
        w.dns2_set(&front, &[rr]);
        let url = format!(
            "https://{res}.openai.azure.com/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
        );
        let r = run(
            w.client(
                Resolv::Udp,
                "curl",
                &[
                    "-sS",
                    "--max-time",
                    "10",
                    "--cacert",
                    &ca,
                    "-H",
                    &format!("api-key: {DUMMY}"),
                    "-H",
                    "content-type: application/json",
                    "-d",
                    r#"{"messages":[{"role":"user","content":"hi"}]}"#,
                    "-w",
                    "\n%{http_code} %{remote_ip}",
                    &url,
                ],
            ),
            T,
        );
        wait_seen(&w, ip, 443, 1);
        let creds = creds_at(&w, ip);
        assert_eq!(
            creds,
            vec![format!("api-key: {AZURE_KEY}")],
            "{res}.openai.azure.com via {ip}: curl {r:?}\n{}",
            gw.raw_log()
        );
        assert!(r.stdout.ends_with(&format!(" {ip}")), "{r:?}");
    }
    w.assert_no_dummy("azure", Some(&gw));
}

// ---------------------------------------------------------------------------------------------
// What arrives on a provider address that is not a provider's TLS.

/// openssl s_client with an IP literal as SNI (Python never sends one); prints the answer.
fn openssl_ip_sni(w: &World, ip: &str, ca: &str) -> gateway_tests::ClientRun {
    let connect = dst(ip, 443);
    let script = format!(
        "printf 'GET /v1/models HTTP/1.1\\r\\nHost: {ip}\\r\\nAuthorization: Bearer {DUMMY}\\r\\nConnection: close\\r\\n\\r\\n' | timeout 10 openssl s_client -connect '{connect}' -servername '{ip}' -CAfile '{ca}' -quiet -verify_return_error"
    );
    run(w.client(Resolv::Udp, "sh", &["-c", &script]), T)
}

fn probe(w: &World, ip: &str, port: u16, sni: &str, delay: f64, mark: u32) -> Value {
    let ca = w.bundle_str();
    let r = run(
        w.client(
            Resolv::Udp,
            "python3",
            &[
                "-c",
                PY_PROBE,
                ip,
                &port.to_string(),
                sni,
                &ca,
                &delay.to_string(),
                &mark.to_string(),
            ],
        ),
        T,
    );
    probe_json(&r.stdout)
}

/// The last "connection closed" event for `orig_dst`, waiting for it.
fn closed_for(gw: &Gateway, orig: &str, count: usize) -> Option<Value> {
    gw.wait_for(Duration::from_secs(5), |evs| {
        evs.iter()
            .filter(|e| message(e) == "connection closed" && e["fields"]["orig_dst"] == orig)
            .count()
            >= count
    })?;
    gw.fields("connection closed")
        .into_iter()
        .rfind(|f| f["orig_dst"] == orig)
}

#[test]
fn another_sni_no_sni_an_ip_literal_sni_and_plain_bytes_on_a_providers_own_address_are_refused() {
    let w = World::new("gw-med-sni");
    let gw = w.gateway(&static_openai(), opts(&[("openai", OPENAI_KEY)]));
    let ca = w.bundle_str();
    let mut failures = Vec::new();
    for ip in [OWN4, OWN6] {
        let mut n_closed = 0;
        let orig = dst(ip, 443);
        for case in ["other SNI", "no SNI", "IP-literal SNI", "plain HTTP"] {
            let before = w.conns_at(ip, 443);
            let out = match case {
                "other SNI" => probe(&w, ip, 443, "www.example.org", 0.0, 0).to_string(),
                "no SNI" => probe(&w, ip, 443, "-", 0.0, 0).to_string(),
                "IP-literal SNI" => format!("{:?}", openssl_ip_sni(&w, ip, &ca)),
                _ => {
                    let url = format!("http://{orig}/v1/models");
                    format!(
                        "{:?}",
                        run(w.client(Resolv::Udp, "curl", &curl_args(&[], &url, &ca)), T)
                    )
                }
            };
            n_closed += 1;
            let closed = closed_for(&gw, &orig, n_closed);
            std::thread::sleep(Duration::from_millis(200));
            let reached = w.conns_at(ip, 443) - before;
            let outcome = closed.as_ref().map(|c| c["outcome"].clone());
            if reached != 0 || outcome != Some(Value::from("refused")) {
                failures.push(format!(
                    "{case} to {orig}: the provider saw {reached} connection(s); gateway outcome \
                     {outcome:?}; client: {out}"
                ));
            }
        }
    }
    // Positive control: the provider's own name on the same address is intercepted.
    let p = probe(&w, OWN4, 443, "api.openai.com", 0.0, 0);
    assert_eq!(p["status"], 200, "{p}\n{}", gw.raw_log());
    wait_seen(&w, OWN4, 443, 1);
    assert!(
        failures.is_empty(),
        "not refused:\n{}\n{}",
        failures.join("\n"),
        gw.raw_log()
    );
    assert_eq!(
        creds_at(&w, OWN4),
        vec![format!("authorization: Bearer {OPENAI_KEY}")]
    );
    w.assert_no_dummy("sni", Some(&gw));
}

#[test]
fn the_same_connections_on_a_shared_provider_address_are_spliced_to_the_original_destination() {
    let w = World::new("gw-med-shared");
    let gw = w.gateway(
        &shared_cdn(),
        opts(&[("openai", OPENAI_KEY), ("cdn-llm", CDN_KEY)]),
    );
    let ca = w.bundle_str();
    let mut failures = Vec::new();
    for ip in [SHARED4, SHARED6] {
        let mut n_closed = 0;
        let orig = dst(ip, 443);
        for case in ["other SNI", "no SNI", "IP-literal SNI"] {
            let before = w.conns_at(ip, 443);
            let out = match case {
                "other SNI" => probe(&w, ip, 443, "www.example.org", 0.0, 0).to_string(),
                "no SNI" => probe(&w, ip, 443, "-", 0.0, 0).to_string(),
                _ => format!("{:?}", openssl_ip_sni(&w, ip, &ca)),
            };
            n_closed += 1;
            let closed = closed_for(&gw, &orig, n_closed);
            let reached = w.conns_at(ip, 443) - before;
            let outcome = closed.as_ref().map(|c| c["outcome"].clone());
            if reached != 1 || outcome != Some(Value::from("spliced")) {
                failures.push(format!(
                    "{case} to {orig}: the provider saw {reached} connection(s); gateway outcome \
                     {outcome:?}; client: {out}"
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "not spliced:\n{}\n{}",
        failures.join("\n"),
        gw.raw_log()
    );
    // Spliced means untouched: the other site got the client's own bytes (here, its header).
    assert!(
        w.seen_at(SHARED4, 443)
            .iter()
            .any(|s| s.sni.as_deref() == Some("www.example.org")
                && s.credentials() == vec![format!("authorization: Bearer {DUMMY}")]),
        "{:#?}",
        w.seen_at(SHARED4, 443)
    );
    // And the provider's own name on the shared address is still intercepted.
    let before = w.seen_at(SHARED4, 443).len();
    let p = probe(&w, SHARED4, 443, "llm.cdn.example", 0.0, 0);
    assert_eq!(p["status"], 200, "{p}\n{}", gw.raw_log());
    wait_seen(&w, SHARED4, 443, before + 1);
    let last = w.seen_at(SHARED4, 443).pop().unwrap();
    assert_eq!(
        last.credentials(),
        vec![format!("authorization: Bearer {CDN_KEY}")],
        "{}",
        gw.raw_log()
    );
}

// ---------------------------------------------------------------------------------------------
// Other ports and UDP.

const PY_UDP_ANY: &str = r#"
import socket, sys, json
res = {}
for target in sys.argv[1:]:
    ip, port = target.rsplit(":", 1)
    ip = ip.strip("[]")
    fam = socket.AF_INET6 if ":" in ip else socket.AF_INET
    for how in ("sendto", "connect"):
        s = socket.socket(fam, socket.SOCK_DGRAM)
        try:
            if how == "sendto":
                s.sendto(b"udp-" + how.encode(), (ip, int(port)))
            else:
                s.connect((ip, int(port)))
                s.send(b"udp-" + how.encode())
            res[how + " " + target] = "ok"
        except PermissionError:
            res[how + " " + target] = "EPERM"
        except OSError as e:
            res[how + " " + target] = "errno %d" % e.errno
print(json.dumps(res))
"#;

#[test]
fn other_tcp_ports_on_a_provider_address_are_refused_or_intercepted_and_udp_on_any_port_is_denied()
{
    let w = World::new("gw-med-ports");
    let gw = w.gateway(&static_openai(), opts(&[("openai", OPENAI_KEY)]));
    let ca = w.bundle_str();
    let mut failures = Vec::new();
    for ip in [OWN4, OWN6] {
        for (port, scheme) in [(8443u16, "https"), (80, "http")] {
            let url = format!("{scheme}://api.openai.com:{port}/v1/models");
            let resolve = format!("api.openai.com:{port}:{ip}");
            let r = run(
                w.client(
                    Resolv::Udp,
                    "curl",
                    &curl_args(&["--resolve", &resolve], &url, &ca),
                ),
                T,
            );
            std::thread::sleep(Duration::from_millis(200));
            // Refused: the fake saw nothing. Intercepted: whatever reached it carries the vault key.
            let seen = w.seen_at(ip, port);
            let bad: Vec<_> = seen
                .iter()
                .filter(|s| s.credentials() != vec![format!("authorization: Bearer {OPENAI_KEY}")])
                .collect();
            if !bad.is_empty() || (seen.is_empty() && w.conns_at(ip, port) > 0) {
                failures.push(format!(
                    "TCP {ip} port {port}: the provider saw {} connection(s), requests {bad:?}; curl {:?}",
                    w.conns_at(ip, port),
                    r.stdout
                ));
            }
        }
    }
    // UDP to a provider address, any port: EPERM, and nothing arrives. A non-provider address
    // on the same ports is the control: its datagrams are delivered.
    let targets: Vec<String> = [OWN4, OWN6, OTHER4]
        .iter()
        .flat_map(|ip| [443u16, 853, 3478].map(|p| dst(ip, p)))
        .collect();
    let rx: Vec<(String, std::net::UdpSocket)> = w.net.within(|| {
        targets
            .iter()
            .map(|t| {
                let s = std::net::UdpSocket::bind(t.as_str())
                    .unwrap_or_else(|e| panic!("bind udp {t}: {e}"));
                s.set_read_timeout(Some(Duration::from_millis(300)))
                    .unwrap();
                (t.clone(), s)
            })
            .collect()
    });
    let mut args = vec!["-c", PY_UDP_ANY];
    args.extend(targets.iter().map(String::as_str));
    let r = run(w.client(Resolv::Udp, "python3", &args), T);
    let res = probe_json(&r.stdout);
    for (t, sock) in &rx {
        let control = t.starts_with(OTHER4);
        let mut buf = [0u8; 64];
        let mut got = 0;
        while sock.recv(&mut buf).is_ok() {
            got += 1;
        }
        for how in ["sendto", "connect"] {
            let v = &res[format!("{how} {t}")];
            let want = if control { "ok" } else { "EPERM" };
            if v != want {
                failures.push(format!("UDP {how} {t}: {v} (want {want})"));
            }
        }
        if control && got != 2 {
            failures.push(format!("UDP control {t}: {got} datagrams arrived (want 2)"));
        }
        if !control && got != 0 {
            failures.push(format!(
                "UDP {t}: {got} datagrams reached the provider address"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "not mediated:\n{}\n{}",
        failures.join("\n"),
        gw.raw_log()
    );
    w.assert_no_dummy("ports", Some(&gw));
}

// ---------------------------------------------------------------------------------------------
// Identity only from positions the system owns.

/// A Kubernetes API (inside the namespace) listing one pod in the exempt namespace.
const EXEMPT_UID: &str = "0b9c8d7e-6f5a-4b3c-9d2e-1f0a9b8c7d6e";

fn fake_k8s_api(w: &World) -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
    use std::io::{Read as _, Write as _};
    let listener = w
        .net
        .within(|| std::net::TcpListener::bind((K8S_API, 8080)).unwrap());
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let h = hits.clone();
    let body = serde_json::json!({
        "kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"},
        "items": [
            {"metadata": {"name": "vendor-bot-1", "namespace": "vendor-exempt", "uid": EXEMPT_UID}}
        ]
    })
    .to_string();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]);
            let ok = req.starts_with("GET /api/v1/pods?fieldSelector=spec.nodeName%3Dnode-1 ")
                && req.contains("authorization: Bearer sa-token-1");
            if ok {
                h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            let (status, body) = if ok {
                ("200 OK", body.as_str())
            } else {
                ("403 Forbidden", "{}")
            };
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    hits
}

/// `mkdir -p` of `rel` under `root`, chowning the part from `owned_from` on to uid/gid 65534
/// (what systemd's Delegate=yes does to a unit's cgroup, and what a user's own mkdir makes).
fn cgroup_tree(root: &std::path::Path, rel: &str, owned_from: Option<&str>) -> std::path::PathBuf {
    let mut p = root.to_path_buf();
    let mut owned = false;
    for part in rel.split('/') {
        p.push(part);
        if !p.exists() {
            std::fs::create_dir(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        }
        if owned_from == Some(part) {
            owned = true;
        }
        if owned {
            nix::unistd::chown(
                &p,
                Some(nix::unistd::Uid::from_raw(65534)),
                Some(nix::unistd::Gid::from_raw(65534)),
            )
            .unwrap();
            for f in ["cgroup.procs", "cgroup.subtree_control", "cgroup.threads"] {
                let _ = nix::unistd::chown(
                    &p.join(f),
                    Some(nix::unistd::Uid::from_raw(65534)),
                    Some(nix::unistd::Gid::from_raw(65534)),
                );
            }
        }
    }
    p
}

#[test]
fn a_user_owned_delegated_cgroup_named_like_a_team_unit_or_an_exempt_pod_gets_no_team_key_and_no_exemption()
 {
    let w = World::new("gw-med-ident");
    let hits = fake_k8s_api(&w);
    let token = w.files.path().join("token");
    std::fs::write(&token, "sa-token-1\n").unwrap();
    let root = w.cg.path.clone();
    let gw = w.gateway(
        &format!(
            "{}[[vault.select]]\nprovider = \"openai\"\nunit = \"team-a.service\"\nkey = \"openai-team-a\"\n\n\
             [kubernetes]\napi = \"http://{K8S_API}:8080\"\ntoken_file = {:?}\nnode_name = \"node-1\"\n\
             refresh = \"1s\"\nexempt_namespaces = [\"vendor-exempt\"]\n",
            static_openai(),
            token.display().to_string()
        ),
        Opts {
            redirect_extra: format!("identity_root = {:?}", root.display().to_string()),
            ..opts(&[("openai", OPENAI_KEY), ("openai-team-a", TEAM_KEY)])
        },
    );
    let end = Instant::now() + Duration::from_secs(10);
    while hits.load(std::sync::atomic::Ordering::SeqCst) == 0 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        hits.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "the gateway never listed pods:\n{}",
        gw.raw_log()
    );
    let ca = w.bundle_str();
    let resolve = format!("api.openai.com:443:{OWN4}");
    // Each case: (label, cgroup under the identity root, first part owned by the user, the
    // credential the provider must see).
    let default_key = format!("authorization: Bearer {OPENAI_KEY}");
    let team_key = format!("authorization: Bearer {TEAM_KEY}");
    let own_key = format!("authorization: Bearer {DUMMY}");
    let cases: Vec<(&str, String, Option<&str>, String)> = vec![
        (
            "root-owned system unit (control)",
            "system.slice/team-a.service".into(),
            None,
            team_key.clone(),
        ),
        (
            "team-a.service inside a delegated unit",
            "system.slice/alice.service/system.slice/team-a.service".into(),
            Some("alice.service"),
            default_key.clone(),
        ),
        (
            "team-a.service in a user's own systemd tree",
            "user.slice/user-65534.slice/user@65534.service/app.slice/team-a.service".into(),
            Some("user@65534.service"),
            default_key.clone(),
        ),
        (
            "exempt pod at the kubelet's position (control)",
            format!("kubepods/besteffort/pod{EXEMPT_UID}"),
            None,
            own_key.clone(),
        ),
        (
            "exempt pod's name inside a delegated unit",
            format!("system.slice/alice.service/kubepods/besteffort/pod{EXEMPT_UID}"),
            Some("alice.service"),
            default_key.clone(),
        ),
        (
            "exempt pod's name inside a user's own systemd tree",
            format!(
                "user.slice/user-65534.slice/user@65534.service/kubepods.slice/pod{EXEMPT_UID}"
            ),
            Some("user@65534.service"),
            default_key.clone(),
        ),
    ];
    let mut failures = Vec::new();
    for (label, rel, owned_from, want) in &cases {
        let leaf = cgroup_tree(&root, rel, *owned_from);
        let before = w.seen_at(OWN4, 443).len();
        let mut args = vec!["--reuid=65534", "--regid=65534", "--clear-groups", "curl"];
        let ca_args = curl_args(
            &["--resolve", &resolve],
            "https://api.openai.com/v1/models",
            &ca,
        );
        args.extend(ca_args.iter());
        let r = run(w.client_in(&leaf, Resolv::Udp, "setpriv", &args), T);
        wait_seen(&w, OWN4, 443, before + 1);
        let seen = w.seen_at(OWN4, 443);
        let got: Vec<String> = seen[before..]
            .iter()
            .flat_map(|s| s.credentials())
            .collect();
        if got != vec![want.clone()] {
            failures.push(format!(
                "{label} ({rel}): the provider saw {got:?}, want [{want:?}]; curl {:?}",
                r.stdout
            ));
        }
        // Leave the tree for the cgroup guard to find empty.
        let _ = std::fs::write(leaf.join("cgroup.kill"), "1");
    }
    // Remove the trees, deepest first (the guard removes only its own directory).
    for (_, rel, _, _) in &cases {
        let parts: Vec<&str> = rel.split('/').collect();
        for k in (1..=parts.len()).rev() {
            let _ = std::fs::remove_dir(root.join(parts[..k].join("/")));
        }
    }
    assert!(
        failures.is_empty(),
        "identity taken from a position the user owns:\n{}\n{}",
        failures.join("\n"),
        gw.raw_log()
    );
}

// ---------------------------------------------------------------------------------------------
// Timing and liveness.

#[test]
fn a_client_that_waits_past_the_client_hello_timeout_then_speaks_tls_is_refused() {
    let w = World::new("gw-med-hello");
    let gw = w.gateway(&static_openai(), opts(&[("openai", OPENAI_KEY)]));
    for ip in [OWN4, OWN6] {
        let before = w.conns_at(ip, 443);
        // The harness sets client_hello_timeout = "2s".
        let p = probe(&w, ip, 443, "api.openai.com", 3.0, 0);
        std::thread::sleep(Duration::from_millis(300));
        let reached = w.conns_at(ip, 443) - before;
        let closed = closed_for(&gw, &dst(ip, 443), 1);
        assert!(
            reached == 0 && p["status"].is_null(),
            "{ip}: a late ClientHello was forwarded: the provider saw {reached} connection(s); \
             client {p}; closed {closed:?}\n{}",
            gw.raw_log()
        );
        assert_eq!(
            closed.map(|c| c["outcome"].clone()),
            Some(Value::from("refused")),
            "{}",
            gw.raw_log()
        );
    }
    // Control: the same client without the wait is intercepted.
    let p = probe(&w, OWN4, 443, "api.openai.com", 0.0, 0);
    assert_eq!(p["status"], 200, "{p}\n{}", gw.raw_log());
    wait_seen(&w, OWN4, 443, 1);
    assert_eq!(
        creds_at(&w, OWN4),
        vec![format!("authorization: Bearer {OPENAI_KEY}")]
    );
    w.assert_no_dummy("hello timeout", Some(&gw));
}

/// Python: fork until a child gets pid argv[1] (write pid-1 to ns_last_pid first), name it
/// like the gateway, and in that child probe argv[2]:argv[3] with and without the gateway's
/// SO_MARK. Prints {"pid", "plain": {...}, "marked": {...}} or {"error"}.
const PY_PID_REUSE: &str = r#"
import os, sys, json, socket, ssl
P, ip, port, cafile, mark = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
DUMMY = "sk-dummy-from-the-workload-0000"
def probe(m):
    res = {"connected": False}
    try:
        s = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM)
        if m:
            s.setsockopt(socket.SOL_SOCKET, 36, m)
        s.settimeout(5)
        s.connect((ip, port))
        res["connected"] = True
        t = ssl.create_default_context(cafile=cafile).wrap_socket(s, server_hostname="api.openai.com")
        t.sendall(("GET /v1/models HTTP/1.1\r\nHost: api.openai.com\r\nAuthorization: Bearer %s\r\nConnection: close\r\n\r\n" % DUMMY).encode())
        res["answer"] = t.recv(100).decode(errors="replace")
    except Exception as e:
        res["error"] = "%s: %s" % (type(e).__name__, e)
    return res
for attempt in range(20000):
    try:
        with open("/proc/sys/kernel/ns_last_pid", "w") as f:
            f.write(str(P - 1))
    except OSError:
        pass
    pid = os.fork()
    if pid == 0:
        if os.getpid() != P:
            os._exit(3)
        with open("/proc/self/comm", "w") as f:
            f.write("gateway")
        print(json.dumps({"pid": os.getpid(), "attempt": attempt, "plain": probe(0), "marked": probe(mark)}))
        sys.stdout.flush()
        os._exit(0)
    _, st = os.waitpid(pid, 0)
    if os.WIFEXITED(st) and os.WEXITSTATUS(st) == 0:
        sys.exit(0)
print(json.dumps({"error": "never got pid %d" % P}))
"#;

/// The default bypass mark (what the gateway puts on its own upstream sockets).
const MARK: u32 = 0x6777_6179;

#[test]
fn after_the_daemon_dies_a_workload_process_that_gets_its_pid_and_mark_is_still_refused() {
    let w = World::new("gw-med-pid");
    let mut gw = w.gateway(&static_openai(), opts(&[("openai", OPENAI_KEY)]));
    // While the daemon runs: a workload socket carrying the gateway's mark is not exempt
    // (the mark alone, from outside the gateway's cgroup, means nothing).
    let mut failures = Vec::new();
    let p = probe(&w, OWN4, 443, "api.openai.com", 0.0, MARK);
    wait_seen(&w, OWN4, 443, 1);
    let creds = creds_at(&w, OWN4);
    if creds != vec![format!("authorization: Bearer {OPENAI_KEY}")] {
        failures.push(format!(
            "a marked workload socket was not intercepted: {p}; the provider saw {creds:?}"
        ));
    }
    let log = gw.raw_log();
    let pid = gw.pid();
    gw.kill9();
    let before = w.conns_at(OWN4, 443);
    let r = run(
        w.client(
            Resolv::Udp,
            "python3",
            &[
                "-c",
                PY_PID_REUSE,
                &pid.to_string(),
                OWN4,
                "443",
                &w.bundle_str(),
                &MARK.to_string(),
            ],
        ),
        Duration::from_secs(120),
    );
    let out = probe_json(&r.stdout);
    assert_eq!(
        out["pid"], pid,
        "the harness could not hand the daemon's pid to a workload process: {r:?}"
    );
    std::thread::sleep(Duration::from_millis(300));
    let reached = w.conns_at(OWN4, 443) - before;
    for how in ["plain", "marked"] {
        if out[how]["connected"] != false {
            failures.push(format!(
                "{how}: the process with the dead daemon's pid {pid} connected: {}",
                out[how]
            ));
        }
    }
    if reached != 0 {
        failures.push(format!(
            "the provider saw {reached} connection(s) from the pid-reusing process"
        ));
    }
    assert!(
        failures.is_empty(),
        "not mediated:\n{}\n{log}",
        failures.join("\n")
    );
    w.assert_no_dummy("pid reuse", Some(&gw));
}

/// Python: open TLS connections to argv[1]:443 one by one (each one handshaken and alive)
/// until one fails; print {"opened": n, "error"}; then hold them until stdin closes.
const PY_HOARD: &str = r#"
import socket, ssl, sys, json
ip, cafile, most = sys.argv[1], sys.argv[2], int(sys.argv[3])
ctx = ssl.create_default_context(cafile=cafile)
held, err = [], None
for i in range(most):
    try:
        s = socket.create_connection((ip, 443), timeout=5)
        t = ctx.wrap_socket(s, server_hostname="api.openai.com")
        t.sendall(b"GET /v1/models HTTP/1.1\r\nHost: api.openai.com\r\nAuthorization: Bearer sk-dummy-from-the-workload-0000\r\n\r\n")
        head = t.recv(12)
        if not head.startswith(b"HTTP/1.1 200"):
            raise Exception("answer %r" % head)
        while b"\r\n\r\n" not in head:
            head += t.recv(4096)
        held.append(t)
    except Exception as e:
        err = "%s: %s" % (type(e).__name__, e)
        break
print(json.dumps({"opened": len(held), "error": err}))
sys.stdout.flush()
sys.stdin.read()
"#;

#[test]
fn one_workload_hoarding_connections_is_limited_and_another_workloads_requests_still_succeed() {
    const LIMIT: usize = 4;
    let w = World::new("gw-med-limit");
    let gw = w.gateway(
        &static_openai(),
        Opts {
            extra: format!("[limits]\nper_workload = {LIMIT}\n"),
            ..opts(&[("openai", OPENAI_KEY)])
        },
    );
    let a = CgroupGuard::at(w.cg.path.join("wl-a"));
    let b = CgroupGuard::at(w.cg.path.join("wl-b"));
    let ca = w.bundle_str();
    let mut hoard = w
        .client_in(
            &a.path,
            Resolv::Udp,
            "python3",
            &["-c", PY_HOARD, OWN4, &ca, "30"],
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(hoard.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let h = probe_json(&line);
    // While A holds its connections: B is served (the vault's key), A's next one is not.
    let resolve = format!("api.openai.com:443:{OWN4}");
    let args = curl_args(
        &["--resolve", &resolve],
        "https://api.openai.com/v1/models",
        &ca,
    );
    let before = w.seen_at(OWN4, 443).len();
    let rb: Vec<_> = (0..LIMIT + 2)
        .map(|_| run(w.client_in(&b.path, Resolv::Udp, "curl", &args), T))
        .collect();
    let ra = run(w.client_in(&a.path, Resolv::Udp, "curl", &args), T);
    drop(hoard.stdin.take());
    let _ = hoard.kill();
    let _ = hoard.wait();
    assert_eq!(
        h["opened"],
        LIMIT,
        "workload A should get exactly {LIMIT} connections: {h}\n{}",
        gw.raw_log()
    );
    for r in &rb {
        assert!(
            r.stdout.ends_with(&format!("\n200 {OWN4}")),
            "workload B was starved: {r:?}\n{}",
            gw.raw_log()
        );
    }
    assert!(
        !ra.stdout.ends_with("\n200 198.51.100.30"),
        "A over its limit: {ra:?}"
    );
    wait_seen(&w, OWN4, 443, before + rb.len());
    assert!(
        gw.fields("connection closed")
            .iter()
            .any(|f| f["outcome"] == "limited"),
        "no connection closed as limited:\n{}",
        gw.raw_log()
    );
    w.assert_no_dummy("limits", Some(&gw));
    drop(gw);
    drop((a, b));
}

// ---------------------------------------------------------------------------------------------
// Pins replaced under load.

/// Python: until argv[3] exists, dial argv[1] and argv[2] in turn (TLS, SNI api.openai.com,
/// dummy key). Counts: via the gateway (its CA), direct (the test CA), failed. Prints JSON.
const PY_LOOP: &str = r#"
import socket, ssl, sys, json, os, time
ips, cafile, stop = sys.argv[1].split(","), sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context(cafile=cafile)
res = {"gateway": 0, "direct": 0, "failed": 0, "errors": {}}
i = 0
while not os.path.exists(stop):
    ip = ips[i % len(ips)]; i += 1
    try:
        s = socket.create_connection((ip, 443), timeout=5)
        t = ctx.wrap_socket(s, server_hostname="api.openai.com")
        issuer = dict(x[0] for x in t.getpeercert()["issuer"]).get("commonName")
        t.sendall(b"GET /v1/models HTTP/1.1\r\nHost: api.openai.com\r\nAuthorization: Bearer sk-dummy-from-the-workload-0000\r\nConnection: close\r\n\r\n")
        while t.recv(65536):
            pass
        res["direct" if issuer == "gateway test upstream CA" else "gateway"] += 1
    except Exception as e:
        res["failed"] += 1
        k = type(e).__name__
        res["errors"][k] = res["errors"].get(k, 0) + 1
        time.sleep(0.005)
print(json.dumps(res))
"#;

/// Python: until argv[3] exists, a bare TCP connect to argv[1]:443 from source argv[2], closed
/// at once; counts outcomes. Fast, so a short window is caught.
const PY_FAST: &str = r#"
import socket, sys, os, json, time
ip, src, stop = sys.argv[1], sys.argv[2], sys.argv[3]
res = {"connected": 0, "refused": 0, "other": 0}
while not os.path.exists(stop):
    s = socket.socket()
    s.bind((src, 0))
    s.settimeout(2)
    try:
        s.connect((ip, 443))
        res["connected"] += 1
    except ConnectionRefusedError:
        res["refused"] += 1
    except OSError:
        res["other"] += 1
    s.close()
    time.sleep(0.002)
print(json.dumps(res))
"#;

#[test]
fn pins_replaced_by_a_changed_config_or_another_build_never_let_a_connection_go_direct() {
    let w = World::new("gw-med-pins");
    let mut gw = w.gateway(&static_openai(), opts(&[("openai", OPENAI_KEY)]));
    let stop = w.files.path().join("stop");
    let targets = format!("{OWN4},{OWN6}");
    let ca = w.bundle_str();
    let looper = w
        .client(
            Resolv::Udp,
            "python3",
            &["-c", PY_LOOP, &targets, &ca, stop.to_str().unwrap()],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let fast = w
        .client(
            Resolv::Udp,
            "python3",
            &["-c", PY_FAST, OWN4, CLIENT_SRC, stop.to_str().unwrap()],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    // 1. A changed config (ports, then one more provider and address).
    let original = std::fs::read_to_string(&gw.config).unwrap();
    let changed = format!(
        "{original}\n[[provider]]\nname = \"extra-llm\"\nhosts = [\"llm.extra.example\"]\naddrs = [\"{OWN4_B}/32\"]\nkey = \"openai\"\n"
    );
    for text in [
        original.replace("ports = [443]", "ports = [443, 8443]"),
        changed,
    ] {
        assert_ne!(text, original);
        gw.kill9();
        std::fs::write(&gw.config, text).unwrap();
        gw.spawn();
        std::thread::sleep(Duration::from_millis(700));
    }
    // 2. Pins from "another build": the pinned META zeroed, as an older object would leave it.
    for _ in 0..3 {
        gw.kill9();
        gateway_tests::zero_pinned_meta(&gw.pin_dir);
        gw.spawn();
        std::thread::sleep(Duration::from_millis(700));
    }
    // 3. And a graceful stop and start.
    gw.terminate(Duration::from_secs(10));
    gw.spawn();
    std::thread::sleep(Duration::from_secs(1));
    std::fs::write(&stop, "").unwrap();
    let out = looper.wait_with_output().unwrap();
    let res = probe_json(&String::from_utf8_lossy(&out.stdout));
    let fout = fast.wait_with_output().unwrap();
    let fres = probe_json(&String::from_utf8_lossy(&fout.stdout));
    let modes: Vec<Value> = gw
        .fields("eBPF redirect in force")
        .iter()
        .map(|f| f["mode"].clone())
        .collect();
    eprintln!("TLS loop {res}; bare connects {fres}; redirect modes {modes:?}");
    let direct: Vec<_> = w
        .fake
        .conn_log()
        .into_iter()
        .filter(|c| c.peer.ip().to_string() == CLIENT_SRC)
        .collect();
    assert!(
        direct.is_empty(),
        "{} bare connect(s) reached the provider directly while pins were replaced ({fres}): {:?}\n{}",
        direct.len(),
        direct.first(),
        gw.raw_log()
    );
    assert!(
        fres["connected"].as_u64().unwrap_or(0) > 0,
        "the fast loop never connected: {fres} {}",
        String::from_utf8_lossy(&fout.stderr)
    );
    assert_eq!(
        res["direct"],
        0,
        "connections went direct while pins were replaced: {res}\n{}",
        gw.raw_log()
    );
    w.assert_no_dummy("pins", Some(&gw));
    assert!(
        res["gateway"].as_u64().unwrap_or(0) > 0,
        "the loop never got through the gateway: {res} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The changed config is in force: the new provider's address is intercepted.
    let p = probe(&w, OWN4_B, 443, "llm.extra.example", 0.0, 0);
    assert_eq!(p["status"], 200, "{p}\n{}", gw.raw_log());
    assert!(
        !w.seen_at(OWN4_B, 443).is_empty()
            && w.seen_at(OWN4_B, 443)
                .iter()
                .all(|s| s.credentials() == vec![format!("authorization: Bearer {OPENAI_KEY}")]),
        "{:?}",
        w.seen_at(OWN4_B, 443)
    );
    let _ = DNS2;
}

//! Issue 17 (5), one CA for the fleet: an organisation root kept in a vault signs a short-lived
//! intermediate per node; clients trust the root alone, wherever they run.
//!
//! - Two gateways (two state dirs, node names `node-a`, `node-b`) with the same file root:
//!   `curl --cacert ROOT` and the official `openai` SDK with `SSL_CERT_FILE=ROOT` work through
//!   both; each serves its own intermediate (`openssl s_client` shows the chain) and
//!   `gateway ca show --json` names the same root and the node's intermediate.
//! - Node B's intermediate lives 9 s: it is renewed (new serial) and clients keep working; with
//!   the root unreadable, renewal fails loudly, and once the intermediate expired interception
//!   refuses connections (fail closed) until the root is back.
//! - Vault PKI (a fake speaking `root/sign-intermediate`) and a Kubernetes `kubernetes.io/tls`
//!   Secret (a fake API server) as the root; no private key ever lands in a state dir.

use std::{
    io::Write as _,
    os::unix::fs::PermissionsExt as _,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use gateway_tests::{
    ClientRun,
    fleetca::{FakeKubeApi, FakeVaultPki, OrgRoot, SA_TOKEN, VAULT_TOKEN},
    message,
    provider::{ProviderEnv, REPLY},
    py_venv, run,
};
use serde_json::Value;

const KEY: &str = "sk-vault-fleet-ca-5150";

const PY_OPENAI: &str = r#"
import openai
c = openai.OpenAI(api_key="sk-dummy-from-the-job")
print(c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]).choices[0].message.content)
"#;

fn curl(env: &ProviderEnv, root: &Path) -> ClientRun {
    let cmd = env.cg.command_with_hosts(
        &env.hosts,
        "curl",
        &[
            "-sS",
            "--cacert",
            root.to_str().unwrap(),
            "-H",
            "Authorization: Bearer sk-dummy-from-the-job",
            "-w",
            "\n%{http_code}",
            "https://api.openai.com/v1/models",
        ],
    );
    run(cmd, Duration::from_secs(20))
}

fn assert_curl_ok(env: &ProviderEnv, root: &Path, label: &str) {
    let r = curl(env, root);
    assert!(
        r.ok && r.stdout.ends_with("\n200"),
        "{label}: curl trusting only the root: {r:?}\n{}",
        env.gw.raw_log()
    );
}

fn assert_sdk_ok(env: &ProviderEnv, root: &Path, label: &str) {
    let py = py_venv().join("bin/python");
    let mut cmd = env
        .cg
        .command_with_hosts(&env.hosts, py.to_str().unwrap(), &["-c", PY_OPENAI]);
    cmd.env("SSL_CERT_FILE", root);
    let r = run(cmd, Duration::from_secs(60));
    assert!(
        r.ok && r.stdout.trim() == REPLY,
        "{label}: openai SDK with SSL_CERT_FILE = the root: {r:?}\n{}",
        env.gw.raw_log()
    );
}

/// The serial (lower-case hex, no colons) of the intermediate the gateway serves, as
/// `openssl s_client` in the cgroup sees it; the chain must verify against `root` alone.
fn served_intermediate(env: &ProviderEnv, root: &Path) -> String {
    let mut cmd = env.cg.command_with_hosts(
        &env.hosts,
        "openssl",
        &[
            "s_client",
            "-connect",
            "api.openai.com:443",
            "-servername",
            "api.openai.com",
            "-showcerts",
            "-verify_return_error",
            "-CAfile",
            root.to_str().unwrap(),
        ],
    );
    cmd.stdin(Stdio::null());
    let r = run(cmd, Duration::from_secs(20));
    assert!(
        r.stdout.contains("Verify return code: 0 (ok)"),
        "the chain does not verify against the root: {r:?}"
    );
    let pems: Vec<&str> = r
        .stdout
        .split("-----BEGIN CERTIFICATE-----")
        .skip(1)
        .map(|s| s.split("-----END CERTIFICATE-----").next().unwrap())
        .collect();
    assert_eq!(pems.len(), 2, "leaf + intermediate: {}", r.stdout);
    let pem = format!(
        "-----BEGIN CERTIFICATE-----{}-----END CERTIFICATE-----\n",
        pems[1]
    );
    let mut x = Command::new("openssl")
        .args(["x509", "-noout", "-serial"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    x.stdin.take().unwrap().write_all(pem.as_bytes()).unwrap();
    let out = x.wait_with_output().unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    s.trim()
        .strip_prefix("serial=")
        .unwrap_or_else(|| panic!("openssl x509 -serial: {s}"))
        .to_ascii_lowercase()
}

fn norm(serial: &Value) -> String {
    serial
        .as_str()
        .unwrap_or("")
        .replace(':', "")
        .to_ascii_lowercase()
}

fn show(env: &ProviderEnv) -> Value {
    let out = env.gw.cli(&["ca", "show", "--json"]);
    assert!(out.status.success(), "ca show: {out:?}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("ca show --json: {e}: {out:?}"))
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out waiting for {what}");
}

fn count(env: &ProviderEnv, msg: &str) -> usize {
    env.gw
        .events()
        .iter()
        .filter(|e| message(e).starts_with(msg))
        .count()
}

/// No file under the state dir holds a private key: neither the root's nor the node's.
fn assert_no_private_key(env: &ProviderEnv) {
    fn walk(p: &Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(p).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if std::fs::read(&p)
                .map(|b| String::from_utf8_lossy(&b).contains("PRIVATE KEY"))
                .unwrap_or(false)
            {
                out.push(p);
            }
        }
    }
    let mut found = Vec::new();
    walk(&env.gw.dir.path().join("state"), &mut found);
    assert!(
        found.is_empty(),
        "private keys written to the state dir: {found:?}"
    );
}

fn file_root_config(node: &str, ttl: &str, cert: &Path, key: &Path) -> String {
    format!(
        "[ca]\nroot = \"file\"\nnode = \"{node}\"\nintermediate_ttl = \"{ttl}\"\n[ca.file]\ncert = {:?}\nkey = {:?}\n",
        cert.display().to_string(),
        key.display().to_string()
    )
}

#[test]
fn two_nodes_with_one_file_root_are_trusted_through_the_root_and_renew_in_place() {
    gateway_tests::require_privileges();
    let dir = tempfile::tempdir().unwrap();
    let root = OrgRoot::new("Example Org Root CA");
    let (cert, key) = root.write(dir.path());
    let a = ProviderEnv::start(
        "gw-fca",
        240,
        &file_root_config("node-a", "24h", &cert, &key),
        &[("openai", KEY)],
    );
    let b = ProviderEnv::start(
        "gw-fca",
        240,
        &file_root_config("node-b", "9s", &cert, &key),
        &[("openai", KEY)],
    );

    for (env, label) in [(&a, "node-a"), (&b, "node-b")] {
        assert_curl_ok(env, &cert, label);
        assert_sdk_ok(env, &cert, label);
        // The key the provider saw is the vault's, as without a fleet root.
        let seen = env.fakes.openai.seen();
        assert!(!seen.is_empty());
        assert!(
            seen.iter()
                .all(|s| s.credentials() == vec![format!("authorization: Bearer {KEY}")]),
            "{seen:#?}"
        );
        // No node CA was made: the org root is the one thing clients trust.
        assert!(!env.gw.ca_pem().exists(), "{label} made its own CA");
        assert_no_private_key(env);
    }

    // The same root on both; each node its own intermediate, the one it serves.
    let (sa, sb) = (show(&a), show(&b));
    for (s, node) in [(&sa, "node-a"), (&sb, "node-b")] {
        assert_eq!(s["root"], "file", "{s}");
        let path = s["trust"]["path"].as_str().unwrap();
        assert_eq!(std::fs::read_to_string(path).unwrap(), root.cert_pem, "{s}");
        assert!(
            s["intermediate"]["subject"]
                .as_str()
                .unwrap()
                .contains(node),
            "{s}"
        );
    }
    assert_eq!(sa["trust"]["sha256"], sb["trust"]["sha256"]);
    assert!(sa["trust"]["sha256"].as_str().unwrap().len() == 95, "{sa}");
    let (ia, ib) = (
        norm(&sa["intermediate"]["serial"]),
        norm(&sb["intermediate"]["serial"]),
    );
    assert_ne!(ia, ib, "two nodes, two intermediates");
    assert_eq!(served_intermediate(&a, &cert), ia);

    // `ca cert` prints the root; `ca install` puts the root (not an intermediate) in the store.
    let out = a.gw.cli(&["ca", "cert"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        root.cert_pem.trim()
    );
    let img = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(img.path().join("usr/local/share/ca-certificates")).unwrap();
    std::fs::create_dir_all(img.path().join("etc/ssl/certs")).unwrap();
    let out =
        a.gw.cli(&["ca", "install", "--root", img.path().to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("installing the organisation root"),
        "{out:?}"
    );
    assert_eq!(
        std::fs::read_to_string(
            img.path()
                .join("usr/local/share/ca-certificates/gateway-ca.crt")
        )
        .unwrap()
        .trim(),
        root.cert_pem.trim()
    );

    // Renewal on node B (9 s of life, renewed at 6 s): a new serial, clients keep working.
    let first = norm(&show(&b)["intermediate"]["serial"]);
    wait_until(
        "node-b's intermediate to be renewed",
        Duration::from_secs(30),
        || norm(&show(&b)["intermediate"]["serial"]) != first,
    );
    assert!(count(&b, "node intermediate renewed") >= 1);
    assert_curl_ok(&b, &cert, "node-b after renewal");
    assert_sdk_ok(&b, &cert, "node-b after renewal");
    let now = norm(&show(&b)["intermediate"]["serial"]);
    let served = served_intermediate(&b, &cert);
    // The renewal task may have moved on once more between the two reads.
    assert_ne!(served, first, "a leaf of the old intermediate was served");
    assert!(served == now || served == norm(&show(&b)["intermediate"]["serial"]));

    // The root becomes unreadable (bad permissions): renewal fails loudly, the intermediate
    // expires, and interception refuses instead of serving an expired chain.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let t = Duration::from_secs(30);
    assert!(
        b.gw.wait_for(t, |evs| evs.iter().any(|e| message(e)
            .starts_with("renewing the node intermediate failed")
            && e.to_string().contains("chmod 600")))
            .is_some(),
        "{}",
        b.gw.raw_log()
    );
    assert!(
        b.gw.wait_for(t, |evs| evs
            .iter()
            .any(|e| message(e).starts_with("the node intermediate has EXPIRED")))
            .is_some(),
        "{}",
        b.gw.raw_log()
    );
    let r = curl(&b, &cert);
    assert!(
        !r.ok && !r.stdout.ends_with("\n200"),
        "served after expiry: {r:?}"
    );
    assert!(
        count(
            &b,
            "TLS interception refused: the node intermediate has expired"
        ) >= 1
    );
    // Node A (24 h) is not affected.
    assert_curl_ok(&a, &cert, "node-a while node-b's root is unreadable");

    // The root is back: the next retry renews, and clients work again.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let renewed = count(&b, "node intermediate renewed");
    wait_until("renewal after the root is back", t, || {
        count(&b, "node intermediate renewed") > renewed
    });
    assert_curl_ok(&b, &cert, "node-b after the root is back");
    // The metrics an operator alerts on: renewals by result, and when the current one expires.
    let m = b.gw.metrics_text();
    let value = |prefix: &str| -> f64 {
        m.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{prefix} not in\n{m}"))
    };
    assert!(value(r#"gateway_ca_renewals_total{result="failed"}"#) >= 1.0);
    assert!(value(r#"gateway_ca_renewals_total{result="renewed"}"#) >= 2.0);
    let not_after = value("gateway_ca_intermediate_not_after_seconds ");
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        not_after > unix - 10.0 && not_after < unix + 60.0,
        "{not_after} vs {unix}"
    );
    // Nothing in the log carries a private key.
    for env in [&a, &b] {
        assert!(!env.gw.raw_log().contains("PRIVATE KEY"));
    }
}

#[test]
fn vault_pki_and_a_kubernetes_secret_hold_the_root() {
    gateway_tests::require_privileges();
    let n = gateway_tests::unique() % 250;
    let dir = tempfile::tempdir().unwrap();

    // Vault PKI: the root key stays in (fake) Vault; the node sends a CSR.
    let vroot = OrgRoot::new("Vault Org Root CA");
    let vroot_pem = vroot.cert_pem.clone();
    let vroot_file = dir.path().join("vault-root.pem");
    std::fs::write(&vroot_file, &vroot_pem).unwrap();
    let vault = FakeVaultPki::start(format!("127.241.{n}.9:0").parse().unwrap(), vroot);
    let token = dir.path().join("vault-token");
    std::fs::write(&token, VAULT_TOKEN).unwrap();
    let v = ProviderEnv::start(
        "gw-fcv",
        242,
        &format!(
            "[vault.hashicorp]\naddr = \"http://{}\"\ntoken_file = {:?}\n[ca]\nroot = \"vault-pki\"\nnode = \"node-v\"\n[ca.vault_pki]\nmount = \"pki\"\n",
            vault.addr,
            token.display().to_string()
        ),
        &[("openai", KEY)],
    );
    assert_curl_ok(&v, &vroot_file, "vault-pki");
    assert_sdk_ok(&v, &vroot_file, "vault-pki");
    let calls = vault.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let body = &calls[0].body;
    assert!(
        body["csr"]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE REQUEST-----"),
        "{body}"
    );
    assert!(
        body["common_name"].as_str().unwrap().contains("node-v"),
        "{body}"
    );
    assert_eq!(body["max_path_length"], 0, "{body}");
    assert_eq!(body["ttl"], "86400s", "{body}");
    assert!(!body.to_string().contains("PRIVATE"), "{body}");
    let s = show(&v);
    assert_eq!(s["root"], "vault-pki", "{s}");
    assert_eq!(
        std::fs::read_to_string(s["trust"]["path"].as_str().unwrap()).unwrap(),
        vroot_pem
    );
    assert_eq!(
        served_intermediate(&v, &vroot_file),
        norm(&s["intermediate"]["serial"])
    );
    assert_no_private_key(&v);

    // Kubernetes: the root in a kubernetes.io/tls Secret, read with the service-account token.
    let kroot = OrgRoot::new("Cluster Org Root CA");
    let kroot_file = dir.path().join("k8s-root.pem");
    std::fs::write(&kroot_file, &kroot.cert_pem).unwrap();
    let api = FakeKubeApi::start(
        format!("127.241.{n}.10:0").parse().unwrap(),
        "gateway-system",
        "gateway-org-ca",
        &kroot,
    );
    let sa = dir.path().join("sa-token");
    std::fs::write(&sa, SA_TOKEN).unwrap();
    let k = ProviderEnv::start(
        "gw-fck",
        244,
        &format!(
            "[kubernetes]\napi = \"http://{}\"\ntoken_file = {:?}\nnode_name = \"node-k\"\n[ca]\nroot = \"kubernetes\"\nnode = \"node-k\"\n[ca.kubernetes]\nsecret = \"gateway-system/gateway-org-ca\"\n",
            api.addr,
            sa.display().to_string()
        ),
        &[("openai", KEY)],
    );
    assert_curl_ok(&k, &kroot_file, "kubernetes");
    assert!(*api.reads.lock().unwrap() >= 1);
    let s = show(&k);
    assert_eq!(s["root"], "kubernetes", "{s}");
    assert_eq!(
        std::fs::read_to_string(s["trust"]["path"].as_str().unwrap()).unwrap(),
        kroot.cert_pem
    );
    assert_eq!(
        served_intermediate(&k, &kroot_file),
        norm(&s["intermediate"]["serial"])
    );
    assert_no_private_key(&k);
    // A root of another cluster is not trusted: the chain does not verify against it.
    let r = curl(&k, &vroot_file);
    assert!(!r.ok, "{r:?}");

    // A Secret that is not there: `ca show` says so, and falls back to the recorded root.
    let cfg = std::fs::read_to_string(&k.gw.config)
        .unwrap()
        .replace("gateway-system/gateway-org-ca", "gateway-system/missing");
    let other = dir.path().join("missing.toml");
    std::fs::write(&other, cfg).unwrap();
    let out = Command::new(gateway_tests::gateway_bin())
        .args(["ca", "show", "--json", "-c"])
        .arg(&other)
        .output()
        .unwrap();
    let j: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    let note = j["note"].as_str().unwrap_or("");
    assert!(
        note.contains("Secret gateway-system/missing") && note.contains("404"),
        "{j}"
    );
}

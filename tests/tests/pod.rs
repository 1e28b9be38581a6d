//! Issue E, "pod": a client in its own network namespace (a veth pair to the host, addresses
//! the test creates) and its own child cgroup calls a provider through the gateway running in
//! the host namespace. The redirect target is an address the client's namespace reaches over
//! the veth (as a pod reaches its node), not its own loopback.

use std::{path::Path, process::Command, time::Duration};

use gateway_tests::{
    CgroupGuard, Gateway, Opts, provider::Providers, require_privileges, run, unique,
};

const KEY: &str = "sk-vault-pod-110";

/// A network namespace with a veth pair to the host: host 169.254.77.1/30, pod
/// 169.254.77.2/30, the pod's default route via the host. Removed on drop.
struct PodNet {
    ns: String,
    host_if: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl PodNet {
    fn new(tag: &str) -> Self {
        let ns = format!("gwpod-{tag}");
        let host_if = format!("gwh{tag}");
        let pod_if = format!("gwp{tag}");
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        let _ = Command::new("ip").args(["link", "del", &host_if]).output();
        ip(&["netns", "add", &ns]);
        let me = Self {
            ns: ns.clone(),
            host_if: host_if.clone(),
        };
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &pod_if,
        ]);
        ip(&["link", "set", &pod_if, "netns", &ns]);
        ip(&["addr", "add", "169.254.77.1/30", "dev", &host_if]);
        ip(&["link", "set", &host_if, "up"]);
        let inside = |a: &[&str]| {
            let mut v = vec!["netns", "exec", &ns, "ip"];
            v.extend_from_slice(a);
            ip(&v);
        };
        inside(&["link", "set", "lo", "up"]);
        inside(&["addr", "add", "169.254.77.2/30", "dev", &pod_if]);
        inside(&["link", "set", &pod_if, "up"]);
        inside(&["route", "add", "default", "via", "169.254.77.1"]);
        me
    }
}

impl Drop for PodNet {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
    }
}

#[test]
fn a_client_in_its_own_network_namespace_is_redirected_intercepted_and_journaled() {
    require_privileges();
    let n = unique();
    let tag = format!("{}{n}", std::process::id() % 10000);
    let net = PodNet::new(&tag);
    let fakes = Providers::start(110, n);
    let name = format!("gw-pod-{}-{n}", std::process::id());
    let cg = CgroupGuard::new(&name);
    let gw = Gateway::start_opts(
        &name,
        &cg.path,
        &fakes.config(),
        &Opts {
            extra_roots: vec![fakes.pki.ca_pem.clone()],
            keys: vec![("openai".into(), KEY.into())],
            builtin: true,
            listen: Some("169.254.77.1:15001".parse().unwrap()),
            ..Default::default()
        },
    );
    // curl in the pod's network namespace and the test's cgroup, calling the provider's
    // address: the connect() is rewritten to 169.254.77.1:15001, reached over the veth.
    let resolve = format!("api.openai.com:443:{}", fakes.ips[0]);
    let ca = gw.ca_pem();
    // Into the cgroup first (`ip netns exec` mounts its own /sys), then into the namespace.
    let ca = ca.to_str().unwrap().to_string();
    let cmd = cg.command(
        "ip",
        &[
            "netns",
            "exec",
            &net.ns,
            "curl",
            "-sS",
            "--max-time",
            "10",
            "--resolve",
            &resolve,
            "--cacert",
            &ca,
            "-H",
            "authorization: Bearer sk-dummy",
            "-w",
            "\n%{http_code} %{remote_ip}",
            "https://api.openai.com/v1/models",
        ],
    );
    let r = run(cmd, Duration::from_secs(20));
    assert!(
        r.stdout.ends_with(&format!("\n200 {}", fakes.ips[0])),
        "{r:?}\n{}",
        gw.raw_log()
    );
    // Intercepted: the provider got the vault's key, never the dummy.
    let seen = fakes.openai.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].credentials(),
        vec![format!("authorization: Bearer {KEY}")]
    );
    // Redirected from the pod's address, attributed by cgroup, journaled.
    let closed = gw.fields("connection closed");
    let c = closed
        .iter()
        .find(|f| f["outcome"] == "intercepted")
        .unwrap_or_else(|| panic!("no intercepted connection:\n{}", gw.raw_log()));
    assert!(
        c["client"].as_str().unwrap().starts_with("169.254.77.2:"),
        "{c}"
    );
    let out = gw.cli(&["journal", "list", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rec = &list[0];
    assert_eq!(rec["who"]["comm"], "curl", "{rec}");
    assert_eq!(
        rec["who"]["cgroup"].as_str().unwrap(),
        format!("/{name}"),
        "{rec}"
    );
    assert_eq!(rec["status"], 200);
}

/// A Kubernetes API on loopback that lists one pod (the real list shape, trimmed).
fn fake_api(
    uid: &str,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let h = hits.clone();
    let body = serde_json::json!({
        "kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"},
        "items": [
            {"metadata": {"name": "review-job-7", "namespace": "team-a", "uid": uid}},
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
            // Only the pods of this node, with the service account's token.
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
    (addr, hits)
}

/// A pod in a namespace listed in `kubernetes.exempt_namespaces`.
const EXEMPT_UID: &str = "0b9c8d7e-6f5a-4b3c-9d2e-1f0a9b8c7d6e";

/// curl from a kubelet-shaped pod cgroup (`<cg>/kubepods/besteffort/pod<uid>`), removed after.
fn curl_in_pod(
    cg: &Path,
    uid: &str,
    ip: &str,
    cafile: &Path,
    extra: &[&str],
) -> gateway_tests::ClientRun {
    let pod = CgroupGuard::at(cg.join("kubepods/besteffort").join(format!("pod{uid}")));
    let resolve = format!("api.openai.com:443:{ip}");
    let mut args = vec![
        "-sS",
        "--max-time",
        "10",
        "--resolve",
        &resolve,
        "--cacert",
        cafile.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["-w", "\n%{http_code}", "https://api.openai.com/v1/models"]);
    let r = run(pod.command("curl", &args), Duration::from_secs(20));
    drop(pod);
    let _ = std::fs::remove_dir(cg.join("kubepods/besteffort"));
    let _ = std::fs::remove_dir(cg.join("kubepods"));
    r
}

#[test]
fn a_pods_cgroup_is_named_through_the_kubernetes_api_and_exempt_namespaces_pass_untouched() {
    require_privileges();
    let n = unique();
    let uid = "6f0a1c2e-1b2c-4d5e-8f90-a1b2c3d4e5f6";
    let (api, hits) = fake_api(uid);
    let fakes = Providers::start(111, n);
    let name = format!("gw-kpod-{}-{n}", std::process::id());
    let cg = CgroupGuard::new(&name);
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "sa-token-1\n").unwrap();
    let gw = Gateway::start_opts(
        &name,
        &cg.path,
        &format!(
            "{}[kubernetes]\napi = \"http://{api}\"\ntoken_file = {:?}\nnode_name = \"node-1\"\nrefresh = \"1s\"\nexempt_namespaces = [\"vendor-exempt\"]\n",
            fakes.config(),
            token.display().to_string()
        ),
        &Opts {
            extra_roots: vec![fakes.pki.ca_pem.clone()],
            keys: vec![("openai".into(), KEY.into())],
            builtin: true,
            // The kubelet's tree sits under the test's cgroup, not at the machine's root.
            redirect_extra: format!("identity_root = {:?}", cg.path.display().to_string()),
            ..Default::default()
        },
    );
    for _ in 0..100 {
        if hits.load(std::sync::atomic::Ordering::SeqCst) > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        hits.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "{}",
        gw.raw_log()
    );
    // The client runs in a kubelet-shaped pod cgroup below the attached one.
    let ca = gw.ca_pem();
    let r = curl_in_pod(&cg.path, uid, &fakes.ips[0], &ca, &[]);
    assert!(r.stdout.ends_with("\n200"), "{r:?}\n{}", gw.raw_log());
    let out = gw.cli(&["journal", "list", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let who = &list[0]["who"];
    assert_eq!(who["pod_uid"], uid, "{who}");
    assert_eq!(who["pod_namespace"], "team-a", "{who}");
    assert_eq!(who["pod_name"], "review-job-7", "{who}");

    // A pod in an exempt namespace: its connection is passed through untouched — the gateway's
    // CA does not verify (no termination), the provider's own does, the provider sees the
    // pod's own key and no vault key, and nothing is journaled.
    let r = curl_in_pod(&cg.path, EXEMPT_UID, &fakes.ips[0], &ca, &[]);
    assert!(
        !r.stdout.ends_with("\n200"),
        "not terminated with the gateway's CA: {r:?}"
    );
    let before = fakes.openai.seen().len();
    let r = curl_in_pod(
        &cg.path,
        EXEMPT_UID,
        &fakes.ips[0],
        &fakes.pki.ca_pem,
        &["-H", "authorization: Bearer sk-pod-own-key"],
    );
    assert!(r.stdout.ends_with("\n200"), "{r:?}\n{}", gw.raw_log());
    let seen = fakes.openai.seen();
    assert_eq!(seen.len(), before + 1);
    assert_eq!(
        seen.last().unwrap().credentials(),
        vec!["authorization: Bearer sk-pod-own-key".to_string()]
    );
    let out = gw.cli(&["journal", "list", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.as_array().map(|a| a.len()), Some(1), "{list}");
    let exempt: Vec<_> = gw
        .fields("connection accepted")
        .into_iter()
        .filter(|f| f["decision"] == "exempt")
        .collect();
    assert_eq!(exempt.len(), 2, "{}", gw.raw_log());
    assert_eq!(exempt[0]["pod_namespace"], "vendor-exempt");
}

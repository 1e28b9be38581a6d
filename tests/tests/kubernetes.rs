//! Issue E, Kubernetes: every manifest under deploy/kubernetes validates (strict) against the
//! Kubernetes schemas of a current version (PyPI kubernetes-validate); the DaemonSet's config
//! is the same format `gateway check` accepts; its probes' command answers as a probe must.

use std::{path::PathBuf, process::Command};

use gateway_tests::provider::ProviderEnv;

const K8S: &str = "1.34.0";

fn manifests() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    v.sort();
    v
}

#[test]
fn manifests_validate_and_the_daemonset_config_passes_gateway_check() {
    let venv = gateway_tests::k8s_venv();
    let files = manifests();
    assert!(files.len() >= 5, "{files:?}");
    let out = Command::new(venv.join("bin/kubernetes-validate"))
        .args(["--strict", "-k", K8S])
        .args(&files)
        .output()
        .expect("kubernetes-validate");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for kind in [
        "namespace/gateway-system",
        "serviceaccount/gateway",
        "clusterrole/gateway-read-pods",
        "clusterrolebinding/gateway-read-pods",
        "role/gateway-read-org-ca",
        "rolebinding/gateway-read-org-ca",
        "configmap/gateway-config",
        "secret/gateway-vault",
        "daemonset/gateway",
    ] {
        assert!(
            text.contains(&format!("passed for resource {kind}")),
            "{kind}: {text}"
        );
    }
    // The validator can fail: a misspelt field in the DaemonSet is refused.
    let dir = tempfile::tempdir().unwrap();
    let ds = files
        .iter()
        .find(|p| p.ends_with("daemonset.yaml"))
        .unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        std::fs::read_to_string(ds)
            .unwrap()
            .replace("hostPID: true", "hostPId: true"),
    )
    .unwrap();
    let out = Command::new(venv.join("bin/kubernetes-validate"))
        .args(["--strict", "-k", K8S])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());

    // What the DaemonSet needs, read from the manifests themselves; the ConfigMap's config
    // goes through `gateway check`.
    let config = dir.path().join("gateway.toml");
    let py = r#"
import sys, yaml
docs = {d["kind"]: d for f in sys.argv[2:] for d in yaml.safe_load_all(open(f)) if d}
open(sys.argv[1], "w").write(docs["ConfigMap"]["data"]["gateway.toml"])
spec = docs["DaemonSet"]["spec"]["template"]["spec"]
c = spec["containers"][0]
mounts = {m["mountPath"] for m in c["volumeMounts"]}
assert spec["hostPID"] and spec["hostNetwork"] and c["securityContext"]["privileged"], spec
assert {"/sys/fs/cgroup", "/sys/fs/bpf", "/var/lib/gateway", "/etc/gateway/gateway.toml"} <= mounts, mounts
assert c["livenessProbe"]["exec"]["command"][1] == "status", c
assert docs["ClusterRole"]["rules"][0]["resources"][0] == "pods"
# One CA for the fleet: the org root Secret named in the config is the one the Role lets the
# gateway's service account read, and nothing more.
import tomllib
ca = tomllib.loads(docs["ConfigMap"]["data"]["gateway.toml"])["ca"]
assert ca["root"] == "kubernetes", ca
ns, name = ca["kubernetes"]["secret"].split("/")
role = docs["Role"]
assert role["metadata"]["namespace"] == ns, role
assert role["rules"] == [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": [name], "verbs": ["get"]}], role
assert docs["RoleBinding"]["subjects"][0]["name"] == spec["serviceAccountName"]
print("ok")
"#;
    let out = Command::new(venv.join("bin/python"))
        .args(["-c", py])
        .arg(&config)
        .args(&files)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let check = Command::new(gateway_tests::gateway_bin())
        .args(["check", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn the_probe_command_says_whether_the_daemon_answers() {
    let mut e = ProviderEnv::start("gw-k8s", 100, "", &[]);
    let up = e.gw.cli(&["status"]);
    assert!(up.status.success(), "{up:?}");
    e.gw.kill9();
    let down = e.gw.cli(&["status"]);
    assert_eq!(down.status.code(), Some(1), "{down:?}");
    assert!(String::from_utf8_lossy(&down.stderr).contains("not running"));
}

//! `gateway check` / `gateway run` on bad configs: exit 64 with the key and the reason.

use std::process::Command;

use gateway_tests::gateway_bin;

fn check(text: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(gateway_bin())
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    if out.status.code() == Some(64) {
        let run = Command::new(gateway_bin())
            .args(["run", "-c"])
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(
            run.status.code(),
            Some(64),
            "run must refuse the same config: {run:?}"
        );
    }
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout),
    )
}

#[test]
fn unknown_key_exits_64_naming_it() {
    let (code, msg) = check("[redirect]\nports = [443]\nportz = [80]\n");
    assert_eq!(code, Some(64), "{msg}");
    assert!(msg.contains("portz"), "{msg}");
}

#[test]
fn bad_cidr_exits_64_naming_it() {
    let (code, msg) = check("[[provider]]\nname = \"openai\"\naddrs = [\"127.10.0.1/40\"]\n");
    assert_eq!(code, Some(64), "{msg}");
    assert!(
        msg.contains("provider[0].addrs[0]") && msg.contains("127.10.0.1/40"),
        "{msg}"
    );
}

#[test]
fn missing_cgroup_exits_64_naming_it() {
    let (code, msg) = check("[redirect]\ncgroup = \"/sys/fs/cgroup/no-such-gw-cgroup\"\n");
    assert_eq!(code, Some(64), "{msg}");
    assert!(
        msg.contains("redirect.cgroup") && msg.contains("does not exist"),
        "{msg}"
    );
}

#[test]
fn unreadable_file_and_garbage_are_reported() {
    let out = Command::new(gateway_bin())
        .args(["check", "-c", "/nonexistent/gw.toml"])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/gw.toml"));
    let (code, msg) = check("listen = 5\n");
    assert_eq!(code, Some(64), "{msg}");
    assert!(msg.contains("listen"), "{msg}");
}

#[test]
fn a_good_config_passes() {
    let (code, msg) = check(
        "state_dir = \"/var/lib/gateway\"\n[listen]\naddr = \"127.0.0.1:15001\"\n[redirect]\nports = [443]\n[[provider]]\nname = \"openai\"\nhosts = [\"api.openai.com\"]\naddrs = [\"127.10.0.1/32\"]\nkey = \"openai\"\n",
    );
    assert_eq!(code, Some(0), "{msg}");
    assert!(msg.contains("ok"), "{msg}");
}

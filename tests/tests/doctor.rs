//! `gateway doctor` on a host with a running test gateway, after it stopped, and with a broken
//! config: one line per check, exit 1 only when a check fails.

use gateway_tests::provider::ProviderEnv;

fn doctor(e: &ProviderEnv) -> (String, i32) {
    let out = e.gw.cli(&["doctor"]);
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.status.code().unwrap_or(-1),
    )
}

#[test]
fn doctor_reports_each_check_and_fails_only_on_a_failure() {
    let mut e = ProviderEnv::start("gw-doc", 70, "", &[("openai", "sk-doctor-71")]);
    let (text, code) = doctor(&e);
    assert_eq!(code, 0, "{text}");
    for want in [
        "ok    kernel ",
        "ok    cgroup v2 at ",
        "ok    bpf filesystem holds the pin dir",
        "ok    capabilities:",
        "programs pinned and attached under",
        "ok    CA present at",
        // The tests never touch the system store.
        "warn  CA not in the system store: `gateway ca install`",
        "ok    vault reachable, 1 keys",
        "ok    daemon running",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    // The test's DNS server is a closed loopback port: every provider host is a warning.
    assert!(
        text.contains("warn  openai: api.openai.com did not resolve")
            || text.contains("warn  openai: api.openai.com does not resolve"),
        "{text}"
    );

    // Stopped and detached: warnings, still exit 0.
    e.gw.kill9();
    let _ = e.gw.cli(&["detach"]);
    let (text, code) = doctor(&e);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("warn  no programs pinned under"), "{text}");
    assert!(
        text.contains("warn  the gateway daemon is not running"),
        "{text}"
    );

    // Pins outside a bpf filesystem: FAIL, exit 1.
    let cfg = std::fs::read_to_string(&e.gw.config).unwrap();
    let bad = e.gw.dir.path().join("bad.toml");
    let not_bpffs = e.gw.dir.path().join("pins").display().to_string();
    let cfg = cfg
        .lines()
        .map(|l| {
            if l.starts_with("pin_dir = ") {
                format!("pin_dir = {not_bpffs:?}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&bad, cfg).unwrap();
    let out = std::process::Command::new(gateway_tests::gateway_bin())
        .args(["doctor", "-c"])
        .arg(&bad)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!(
            "FAIL  redirect.pin_dir {not_bpffs} is not on a bpf filesystem"
        )),
        "{text}"
    );
}

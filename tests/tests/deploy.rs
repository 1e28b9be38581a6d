//! Issue E, CI build hosts: `deploy/install.sh` into a temporary root lays out the binary,
//! config, unit, state dir and CA trust with the right modes; the unit passes
//! `systemd-analyze verify` without a single warning.

use std::{os::unix::fs::PermissionsExt as _, path::Path, process::Command};

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn install(root: &Path) -> std::process::Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/install.sh");
    Command::new("sh")
        .arg(&script)
        .arg("--bin")
        .arg(gateway_tests::gateway_bin())
        .arg("--destdir")
        .arg(root)
        .output()
        .expect("run install.sh")
}

#[test]
fn install_sh_lays_out_the_files_and_the_unit_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let out = install(root);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for (path, want) in [
        ("usr/local/bin/gateway", 0o755),
        ("etc/gateway/gateway.toml", 0o644),
        ("etc/systemd/system/gateway.service", 0o644),
        ("var/lib/gateway", 0o700),
        ("var/lib/gateway/ca/ca.pem", 0o644),
        ("var/lib/gateway/ca/ca-key.pem", 0o600),
    ] {
        assert_eq!(mode(&root.join(path)), want, "{path}");
    }
    // The CA is trusted inside the tree (Debian layout), and its anchor is the CA.
    let ca = std::fs::read_to_string(root.join("var/lib/gateway/ca/ca.pem")).unwrap();
    let anchor =
        std::fs::read_to_string(root.join("usr/local/share/ca-certificates/gateway-ca.crt"))
            .unwrap();
    assert_eq!(anchor, ca);
    assert!(
        std::fs::read_to_string(root.join("etc/ssl/certs/ca-certificates.crt"))
            .unwrap()
            .contains(ca.trim())
    );
    // The installed config names the real state dir and passes `gateway check`.
    let config = root.join("etc/gateway/gateway.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("state_dir = \"/var/lib/gateway\""), "{text}");
    let check = Command::new(gateway_tests::gateway_bin())
        .args(["check", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");
    // A second run keeps a config somebody edited.
    std::fs::write(&config, format!("{text}\n# edited by the operator\n")).unwrap();
    assert!(install(root).status.success());
    assert!(
        std::fs::read_to_string(&config)
            .unwrap()
            .contains("# edited by the operator")
    );

    // The unit, pointed at the installed binary, verifies with no warning at all.
    let unit = std::fs::read_to_string(root.join("etc/systemd/system/gateway.service")).unwrap();
    let bin = root.join("usr/local/bin/gateway");
    let copy = dir.path().join("gateway.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/local/bin/gateway", bin.to_str().unwrap()),
    )
    .unwrap();
    let v = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("systemd-analyze (Debian package systemd)");
    let err = String::from_utf8_lossy(&v.stderr);
    assert!(v.status.success() && err.trim().is_empty(), "{err}");
    // And the check can fail: a misspelt setting is reported.
    std::fs::write(
        &copy,
        std::fs::read_to_string(&copy)
            .unwrap()
            .replace("ProtectSystem=strict", "ProtectSystem=strikt"),
    )
    .unwrap();
    let v = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&v.stderr).trim().is_empty());
}

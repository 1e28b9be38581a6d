//! `gateway doctor`: what this host needs for the gateway, one line per check — `ok`, or
//! `FAIL`/`warn` with what to do. Exit status 1 when a check fails.

use std::{path::Path, time::Duration};

use crate::{config::Config, provider::Catalog};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

pub struct Check {
    pub status: Status,
    pub what: String,
}

fn ok(what: impl Into<String>) -> Check {
    Check {
        status: Status::Ok,
        what: what.into(),
    }
}

fn warn(what: impl Into<String>) -> Check {
    Check {
        status: Status::Warn,
        what: what.into(),
    }
}

fn fail(what: impl Into<String>) -> Check {
    Check {
        status: Status::Fail,
        what: what.into(),
    }
}

/// Every check, in order.
pub fn run(cfg: &Config) -> Vec<Check> {
    let mut out = vec![kernel(), cgroup(cfg), bpffs(cfg), capabilities(), pins(cfg)];
    out.extend(ca(cfg));
    out.extend(dns(cfg));
    out.push(vault(cfg));
    out.push(daemon(cfg));
    out.extend(
        crate::export::doctor::lines(cfg)
            .into_iter()
            .map(|(healthy, line)| if healthy { ok(line) } else { warn(line) }),
    );
    out
}

pub fn render(checks: &[Check]) -> (String, bool) {
    let mut s = String::new();
    for c in checks {
        let tag = match c.status {
            Status::Ok => "ok  ",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        };
        s.push_str(&format!("{tag}  {}\n", c.what));
    }
    let failed = checks.iter().any(|c| c.status == Status::Fail);
    (s.trim_end().to_string(), failed)
}

fn kernel() -> Check {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into());
    let (major, minor) = {
        let mut it = release.split(|c: char| !c.is_ascii_digit());
        let n = |s: Option<&str>| s.and_then(|s| s.parse::<u32>().ok()).unwrap_or(0);
        (n(it.next()), n(it.next()))
    };
    let btf = Path::new("/sys/kernel/btf/vmlinux").exists();
    match (major > 5 || (major == 5 && minor >= 8), btf) {
        (true, true) => ok(format!("kernel {release}, BTF present")),
        (false, _) => fail(format!(
            "kernel {release}: the programs need 5.8 or newer (cgroup sock_ops, BPF ring buffers)"
        )),
        (true, false) => fail(format!(
            "kernel {release} has no BTF (/sys/kernel/btf/vmlinux): use a kernel built with \
             CONFIG_DEBUG_INFO_BTF=y"
        )),
    }
}

fn cgroup(cfg: &Config) -> Check {
    match crate::redirect::cgroup::cgroup2_mount() {
        Err(e) => fail(e.to_string()),
        Ok(root) => {
            let target = cfg.redirect.cgroup.clone().unwrap_or(root.clone());
            if target.join("cgroup.procs").exists() {
                ok(format!(
                    "cgroup v2 at {}, attaching to {}",
                    root.display(),
                    target.display()
                ))
            } else {
                fail(format!(
                    "redirect.cgroup {} is not a cgroup v2 directory (the v2 root is {})",
                    target.display(),
                    root.display()
                ))
            }
        }
    }
}

fn bpffs(cfg: &Config) -> Check {
    // Where bpf filesystems are mounted; the pin dir must be under one.
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let bpf: Vec<&Path> = mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 2 && f[2] == "bpf").then(|| Path::new(f[1]))
        })
        .collect();
    if bpf.iter().any(|m| cfg.redirect.pin_dir.starts_with(m)) {
        ok(format!(
            "bpf filesystem holds the pin dir {}",
            cfg.redirect.pin_dir.display()
        ))
    } else if bpf.contains(&Path::new("/sys/fs/bpf")) {
        fail(format!(
            "redirect.pin_dir {} is not on a bpf filesystem; put it under /sys/fs/bpf",
            cfg.redirect.pin_dir.display()
        ))
    } else {
        warn(
            "no bpf filesystem at /sys/fs/bpf: `gateway run` mounts one, or `mount -t bpf bpf /sys/fs/bpf`",
        )
    }
}

fn capabilities() -> Check {
    const NEEDED: [(u32, &str); 4] = [
        (21, "CAP_SYS_ADMIN"),
        (12, "CAP_NET_ADMIN"),
        (39, "CAP_BPF"),
        (38, "CAP_PERFMON"),
    ];
    let eff = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let has = |bit: u32| eff & (1u64 << bit) != 0;
    // CAP_SYS_ADMIN covers BPF and PERFMON on every kernel.
    let missing: Vec<&str> = NEEDED
        .iter()
        .filter(|(bit, _)| !has(*bit) && !(has(21) && (*bit == 39 || *bit == 38)))
        .map(|(_, n)| *n)
        .collect();
    if missing.is_empty() {
        ok("capabilities: BPF, network and cgroup administration available")
    } else {
        fail(format!(
            "missing capabilities {}: run `gateway run` as root (systemd unit, privileged pod)",
            missing.join(", ")
        ))
    }
}

fn pins(cfg: &Config) -> Check {
    let links = cfg.redirect.pin_dir.join("links");
    let n = std::fs::read_dir(&links).map(|d| d.count()).unwrap_or(0);
    if n > 0 {
        ok(format!(
            "{n} programs pinned and attached under {}",
            cfg.redirect.pin_dir.display()
        ))
    } else {
        warn(format!(
            "no programs pinned under {}: nothing is redirected until `gateway run` starts",
            cfg.redirect.pin_dir.display()
        ))
    }
}

fn ca(cfg: &Config) -> Vec<Check> {
    use crate::trust::{LAYOUTS, bundle_has};
    // With a fleet root, clients trust the organisation root the daemon recorded.
    let fleet = cfg.ca.root != crate::tls::fleet_ca::RootKind::Local;
    let cert = crate::tls::ca::ca_dir(&cfg.state_dir).join(if fleet {
        crate::tls::fleet_ca::ANCHOR_FILE
    } else {
        crate::tls::ca::CA_CERT
    });
    let Ok(pem) = std::fs::read_to_string(&cert) else {
        if fleet {
            return vec![fail(format!(
                "fleet root (ca.root = {}) not recorded at {}: `gateway ca show` (or start the daemon once)",
                cfg.ca.root.name(),
                cert.display()
            ))];
        }
        return vec![fail(format!(
            "no CA at {}: `gateway ca init` (or start the daemon once)",
            cert.display()
        ))];
    };
    let mut out = vec![ok(format!("CA present at {}", cert.display()))];
    let system = LAYOUTS
        .iter()
        .map(|l| Path::new("/").join(l.bundle))
        .find(|b| b.exists());
    out.push(if system.as_deref().is_some_and(|b| bundle_has(b, &pem)) {
        ok("CA trusted by the system store")
    } else {
        warn("CA not in the system store: `gateway ca install`")
    });
    // Per runtime (not installed: one ok line): trust is a warning, never a failure here.
    out.extend(
        crate::trust::probe::runtimes(&pem, system.as_deref())
            .into_iter()
            .map(|f| if f.ok { ok(f.text) } else { warn(f.text) }),
    );
    out
}

fn dns(cfg: &Config) -> Vec<Check> {
    let catalog = Catalog::from_config(cfg);
    let hosts: Vec<(String, String)> = catalog
        .iter()
        .flat_map(|p| {
            p.hosts
                .iter()
                .filter_map(move |h| h.exact().map(|h| (p.name.clone(), h.to_string())))
        })
        .collect();
    if hosts.is_empty() {
        return vec![ok(
            "no provider host names to resolve (static addresses only)",
        )];
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return vec![fail(format!("cannot start a resolver: {e}"))],
    };
    let resolver = match crate::redirect::addrset::resolver(&cfg.dns) {
        Ok(r) => r,
        Err(e) => return vec![fail(format!("DNS: {e}"))],
    };
    rt.block_on(async {
        let lookups = hosts.iter().map(|(p, h)| {
            let resolver = resolver.clone();
            async move {
                let r = tokio::time::timeout(
                    Duration::from_secs(5),
                    resolver.lookup_ip(format!("{h}.")),
                )
                .await;
                match r {
                    Ok(Ok(ips)) => ok(format!(
                        "{p}: {h} resolves ({} addresses)",
                        ips.iter().count()
                    )),
                    Ok(Err(e)) => warn(format!(
                        "{p}: {h} does not resolve ({e}); check [dns] servers or add static `addrs`"
                    )),
                    Err(_) => warn(format!(
                        "{p}: {h} did not resolve within 5 s; check [dns] servers"
                    )),
                }
            }
        });
        futures_util::future::join_all(lookups).await
    })
}

fn vault(cfg: &Config) -> Check {
    let v = match crate::vault::Vault::new(&cfg.vault, &cfg.state_dir) {
        Ok(v) => v,
        Err(e) => return fail(format!("vault: {e}")),
    };
    if let Err(e) = v.check() {
        return fail(format!("vault: {e}"));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let listed = match rt {
        Ok(rt) => rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(10), v.list())
                .await
                .map_err(|_| "no answer within 10 s".to_string())
                .and_then(|r| r.map_err(|e| e.to_string()))
        }),
        Err(e) => Err(e.to_string()),
    };
    match listed {
        Ok(keys) if keys.is_empty() => {
            warn("vault reachable but holds no keys: `gateway keys set NAME --stdin`")
        }
        Ok(keys) => ok(format!("vault reachable, {} keys", keys.len())),
        Err(e) => fail(format!("vault not reachable: {e}")),
    }
}

fn daemon(cfg: &Config) -> Check {
    let socket = crate::admin::socket_path(&cfg.state_dir);
    match crate::admin::call(&socket, "GET", "/v1/health", None) {
        Ok((200, _)) => ok(format!(
            "daemon running (admin socket {})",
            socket.display()
        )),
        Ok((s, _)) => fail(format!("admin socket answered {s}")),
        Err(e) => warn(e.to_string()),
    }
}

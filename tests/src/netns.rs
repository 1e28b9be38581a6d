//! A network namespace of the test's own (`ip netns add`), with addresses on its own `lo`, and
//! helpers to create sockets in it (a thread that joined it with `setns`) and to run commands in
//! it (`nsenter --net`, which leaves /sys alone so a process can still move into a cgroup).
//! Deleted on drop.

use std::{path::PathBuf, process::Command};

pub struct TestNet {
    pub name: String,
}

fn sh(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TestNet {
    /// A fresh namespace `name` (an old one of that name is removed first) with `lo` up.
    pub fn new(name: &str) -> Self {
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        sh("ip", &["netns", "add", name]);
        let me = Self {
            name: name.to_string(),
        };
        me.ip(&["link", "set", "lo", "up"]);
        me
    }

    /// `/run/netns/<name>`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }

    /// `ip ARGS` inside the namespace.
    pub fn ip(&self, args: &[&str]) {
        let net = format!("--net={}", self.path().display());
        let mut v = vec![net.as_str(), "ip"];
        v.extend_from_slice(args);
        sh("nsenter", &v);
    }

    /// Put `addr` (an IPv4 or IPv6 address, no prefix) on the namespace's `lo`.
    pub fn add_addr(&self, addr: &str) {
        if addr.contains(':') {
            let a = format!("{addr}/128");
            self.ip(&["-6", "addr", "add", &a, "dev", "lo", "nodad"]);
        } else {
            let a = format!("{addr}/32");
            self.ip(&["addr", "add", &a, "dev", "lo"]);
        }
    }

    /// `program args` run inside the namespace (in the caller's cgroup and mount namespace).
    pub fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.path().display()))
            .arg(program)
            .args(args);
        c
    }

    /// Run `f` on a thread that has joined this namespace: sockets it creates live there (and
    /// stay there, whichever thread uses them later).
    pub fn within<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = self.path();
        std::thread::scope(|s| {
            s.spawn(move || {
                let fd = std::fs::File::open(&path)
                    .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
                nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET)
                    .unwrap_or_else(|e| panic!("setns {}: {e}", path.display()));
                f()
            })
            .join()
            .expect("thread in the test namespace panicked")
        })
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

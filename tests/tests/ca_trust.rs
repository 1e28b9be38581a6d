//! Issue H (5): one `gateway ca install` makes each runtime trust the CA — including those that
//! ignore the system store — and `gateway ca uninstall` undoes exactly that.
//!
//! Nothing touches the machine's /etc: the whole test runs in a private mount namespace where
//! /etc/environment, /etc/profile.d, /usr/local/share/ca-certificates, /etc/ssl/certs (a copy),
//! /etc/ca-certificates/update.d (empty: the Java hook would write dpkg state outside the
//! copies) and the test venv's certifi bundle are bind-mounted temporary copies, and /etc/hosts
//! names the fake providers. `gateway ca install` runs there as on a host (root "/", the real
//! update-ca-certificates). Clients are real and unchanged, inside the gateway's cgroup, started
//! the three ways a CI job's environment is built:
//! - `su root -c` (a PAM session: the real pam_env reads /etc/environment; no profile.d),
//! - `env -i bash -lc` (a login shell without PAM: /etc/profile reads /etc/profile.d),
//! - `env -i sh -c` (neither: only the system store and certifi count).
//!
//! Each client fails with a certificate error before install and succeeds after it.

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use gateway_tests::{ClientRun, gateway_bin, node_sdk, provider::ProviderEnv, py_venv, run};

/// This test's own venv (PATH's python during install, so `--certifi` changes only a copy of
/// its bundle): openai (httpx2: the system store), requests and httpx (certifi).
fn ca_venv() -> PathBuf {
    gateway_tests::cached_venv("ca-trust-venv", &["openai", "requests", "httpx"])
}

/// `lib/python3.X/site-packages` of a venv.
fn site_packages(venv: &Path) -> PathBuf {
    let lib = venv.join("lib");
    let py = std::fs::read_dir(&lib)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("python3")
        })
        .unwrap_or_else(|| panic!("no python3.* in {}", lib.display()));
    py.join("site-packages")
}

/// A venv without pip whose site-packages get a copy of the real certifi package.
fn venv_with_certifi(base: &Path, dir: &Path) -> PathBuf {
    let ok = Command::new(base.join("bin/python"))
        .args(["-m", "venv", "--without-pip"])
        .arg(dir)
        .status()
        .unwrap();
    assert!(ok.success(), "venv {}", dir.display());
    let ok = Command::new("cp")
        .arg("-r")
        .arg(site_packages(base).join("certifi"))
        .arg(site_packages(dir))
        .status()
        .unwrap();
    assert!(ok.success());
    site_packages(dir).join("certifi/cacert.pem")
}

/// A process holding the private mount namespace; every command of the test enters it.
struct Ns {
    holder: Child,
    pid: u32,
    procs: PathBuf,
}

impl Ns {
    fn start(binds: &[(&Path, &Path)], procs: PathBuf) -> Self {
        let mut script = String::from("set -e\n");
        for (src, dst) in binds {
            assert!(dst.exists(), "bind target {} missing", dst.display());
            script.push_str(&format!(
                "mount --bind '{}' '{}'\n",
                src.display(),
                dst.display()
            ));
        }
        script.push_str("echo ready\nexec sleep 3600\n");
        let mut holder = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", &script])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("unshare");
        let mut line = String::new();
        BufReader::new(holder.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "mount namespace setup failed");
        let pid = holder.id();
        Self { holder, pid, procs }
    }

    /// `program args` in `cwd`, inside the namespace and the gateway's cgroup.
    fn run(&self, program: &str, args: &[&str], cwd: &Path) -> ClientRun {
        let mut c = Command::new("nsenter");
        c.arg("-t")
            .arg(self.pid.to_string())
            // Entering a mount namespace moves to its root: the directory is given again.
            .arg(format!("--wd={}", cwd.display()))
            .args(["-m", "--", "sh", "-c", "echo $$ > \"$0\" && exec \"$@\""])
            .arg(&self.procs)
            .arg(program)
            .args(args);
        run(c, Duration::from_secs(90))
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// How a job's environment is built.
#[derive(Debug, Clone, Copy)]
enum Session {
    /// A PAM session (pam_env reads /etc/environment), no login shell.
    Pam,
    /// A login shell without PAM (/etc/profile → /etc/profile.d).
    Login,
    /// Neither.
    Clean,
}

const PY_GET: &str = r#"
import sys
lib = __import__(sys.argv[1])
try:
    r = lib.get("https://api.openai.com/v1/models", headers={"authorization": "Bearer sk-dummy"}, timeout=10)
    print(r.status_code)
except Exception as e:
    print("ERROR", type(e).__name__, e)
    sys.exit(3)
"#;

const PY_OPENAI: &str = r#"
import sys, openai
c = openai.OpenAI(api_key="sk-dummy", max_retries=0, timeout=10)
try:
    print(",".join(m.id for m in c.models.list()))
except Exception as e:
    print("ERROR", repr(e), repr(e.__cause__))
    sys.exit(3)
"#;

const NODE_OPENAI: &str = r#"
const { OpenAI } = require(process.argv[2] + '/node_modules/openai');
const c = new OpenAI({ apiKey: 'sk-dummy', maxRetries: 0, timeout: 10000 });
c.models.list()
  .then((p) => console.log(p.data.map((m) => m.id).join(',')))
  .catch((e) => {
    const why = [];
    for (let c = e; c; c = c.cause) why.push(c.code || c.message);
    console.log('ERROR', why.join(' <- '));
    process.exit(3);
  });
"#;

struct Clients {
    t: PathBuf,
    home: PathBuf,
    shared_py: PathBuf,
    ca_py: PathBuf,
    node_dir: PathBuf,
}

impl Clients {
    /// The shell command line of a client.
    fn line(&self, client: &str) -> String {
        let t = self.t.display();
        match client {
            "curl" => "curl -sS --max-time 10 -o /dev/null -w '%{http_code}' -H 'authorization: Bearer sk-dummy' https://api.openai.com/v1/models".into(),
            "requests" => format!("{} {t}/get_client.py requests", self.shared_py.display()),
            "httpx" => format!("{} {t}/get_client.py httpx", self.shared_py.display()),
            // The test venv's requests/httpx: only certifi (no variables in a clean session).
            "certifi-requests" => format!("{} {t}/get_client.py requests", self.ca_py.display()),
            "certifi-httpx" => format!("{} {t}/get_client.py httpx", self.ca_py.display()),
            "openai-py" => format!("{} {t}/openai_client.py", self.ca_py.display()),
            "node" => format!("node {t}/openai.cjs {}", self.node_dir.display()),
            other => panic!("no client {other}"),
        }
    }

    fn run(&self, ns: &Ns, s: Session, client: &str) -> ClientRun {
        let line = self.line(client);
        let home = format!("HOME={}", self.home.display());
        match s {
            Session::Pam => ns.run(
                "env",
                &["-i", "PATH=/usr/bin:/bin", "su", "root", "-c", &line],
                &self.t,
            ),
            Session::Login => ns.run(
                "env",
                &["-i", &home, "PATH=/usr/bin:/bin", "bash", "-lc", &line],
                &self.t,
            ),
            Session::Clean => ns.run(
                "env",
                &["-i", &home, "PATH=/usr/bin:/bin", "sh", "-c", &line],
                &self.t,
            ),
        }
    }

    fn expect_ok(&self, ns: &Ns, s: Session, client: &str) {
        let r = self.run(ns, s, client);
        let want = match client {
            "openai-py" | "node" => "gpt-4o-mini",
            _ => "200",
        };
        assert!(
            r.ok && r.stdout.trim() == want,
            "{client} in a {s:?} session should trust the CA now: {r:?}"
        );
    }

    /// [`Clients::expect_ok`] (`true`) or [`Clients::expect_cert_error`] (`false`) for each
    /// client, side by side: they only read the namespace's files and each starts its own
    /// runtime (most of the test's time). A failing one panics with its own message.
    fn expect_all(&self, ns: &Ns, checks: &[(Session, &str, bool)]) {
        std::thread::scope(|sc| {
            for &(s, c, ok) in checks {
                sc.spawn(move || {
                    if ok {
                        self.expect_ok(ns, s, c)
                    } else {
                        self.expect_cert_error(ns, s, c)
                    }
                });
            }
        });
    }

    fn expect_cert_error(&self, ns: &Ns, s: Session, client: &str) {
        let r = self.run(ns, s, client);
        let all = format!("{}{}", r.stdout, r.stderr).to_lowercase();
        assert!(
            !r.ok && (all.contains("certificate") || all.contains("cert_")),
            "{client} in a {s:?} session must fail on the certificate: {r:?}"
        );
    }
}

fn count(path: &Path, pem: &str) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .matches(pem.trim())
        .count()
}

#[test]
fn one_install_makes_every_runtime_trust_the_ca_and_uninstall_undoes_it() {
    gateway_tests::require_privileges();
    let shared = py_venv();
    let node_dir = node_sdk();
    let venv = ca_venv();
    let env = ProviderEnv::start("gw-cat", 195, "", &[("openai", "sk-vault-ca-trust-195")]);
    let pem = std::fs::read_to_string(&env.ca).unwrap();
    let tmp = tempfile::Builder::new()
        .prefix("gw-cat-")
        .tempdir()
        .unwrap();
    let t = tmp.path().to_path_buf();
    let home = t.join("home");
    std::fs::create_dir_all(&home).unwrap();

    // The copies bind-mounted over the real paths.
    let corp = t.join("corp-bundle.pem");
    std::fs::copy("/etc/ssl/certs/ca-certificates.crt", &corp).unwrap();
    let environment = t.join("environment");
    // An admin's own lines: PATH, and a bundle of theirs for requests (kept, the CA merged in).
    let original_env = format!(
        "PATH=\"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\"\nREQUESTS_CA_BUNDLE={}\n",
        corp.display()
    );
    std::fs::write(&environment, &original_env).unwrap();
    let (profile_d, local_ca, hooks) =
        (t.join("profile.d"), t.join("local-ca"), t.join("update.d"));
    for d in [&profile_d, &local_ca, &hooks] {
        std::fs::create_dir_all(d).unwrap();
    }
    let certs = t.join("certs");
    let ok = Command::new("cp")
        .args(["-a", "/etc/ssl/certs/."])
        .arg(&certs)
        .status()
        .unwrap();
    assert!(ok.success());
    let venv_certifi = site_packages(&venv).join("certifi/cacert.pem");
    let certifi_original = std::fs::read_to_string(&venv_certifi).unwrap();
    assert!(
        !certifi_original.contains(pem.trim()),
        "the venv's own bundle was changed"
    );
    let certifi_copy = t.join("venv-cacert.pem");
    std::fs::write(&certifi_copy, &certifi_original).unwrap();
    // A project with ./.venv (found from the current directory) and one given with --venv.
    let proj = t.join("proj");
    std::fs::create_dir_all(&proj).unwrap();
    let dot_venv = venv_with_certifi(&venv, &proj.join(".venv"));
    let other = t.join("other-env");
    let other_certifi = venv_with_certifi(&venv, &other);

    let ns = Ns::start(
        &[
            (&env.hosts, Path::new("/etc/hosts")),
            (&environment, Path::new("/etc/environment")),
            (&profile_d, Path::new("/etc/profile.d")),
            (&local_ca, Path::new("/usr/local/share/ca-certificates")),
            (&certs, Path::new("/etc/ssl/certs")),
            (&hooks, Path::new("/etc/ca-certificates/update.d")),
            (&certifi_copy, &venv_certifi),
        ],
        env.cg.path.join("cgroup.procs"),
    );
    for (name, src) in [
        ("get_client.py", PY_GET),
        ("openai_client.py", PY_OPENAI),
        ("openai.cjs", NODE_OPENAI),
    ] {
        std::fs::write(t.join(name), src).unwrap();
    }
    let clients = Clients {
        t: t.clone(),
        home: home.clone(),
        shared_py: shared.join("bin/python"),
        ca_py: venv.join("bin/python"),
        node_dir: node_dir.clone(),
    };
    let gw = gateway_bin();
    let gw = gw.to_str().unwrap();
    let cfg = env.gw.config.to_str().unwrap().to_string();
    let path = format!("PATH={}/bin:/usr/sbin:/usr/bin:/sbin:/bin", venv.display());
    let gateway = |args: &[&str]| {
        let mut a = vec!["-i", path.as_str(), "HOME=/root", gw];
        a.extend_from_slice(args);
        a.extend_from_slice(&["-c", &cfg]);
        let r = ns.run("env", &a, &proj);
        assert!(r.ok, "gateway {args:?}: {r:?}");
        r.stdout
    };
    let doctor = || {
        let a = ["-i", path.as_str(), "HOME=/root", gw, "doctor", "-c", &cfg];
        ns.run("env", &a, &proj).stdout
    };
    let has = |text: &str, want: &[&str]| {
        for w in want {
            assert!(
                text.lines().any(|l| l.contains(w)),
                "missing a line with {w:?} in:\n{text}"
            );
        }
    };
    let warn_line = |text: &str, what: &str| {
        text.lines()
            .find(|l| l.contains(what))
            .unwrap_or_else(|| panic!("no line with {what:?} in:\n{text}"))
            .starts_with("warn")
    };

    // Before: doctor names every runtime that will not trust the CA, with the fix.
    let before = doctor();
    has(
        &before,
        &[
            "warn  CA not in the system store: `gateway ca install`",
            "warn  curl/openssl: OpenSSL's default store",
            "): `gateway ca install --certifi`",
            &format!(
                "requests/botocore: REQUESTS_CA_BUNDLE={} (from /etc/environment) lacks the CA",
                corp.display()
            ),
            "httpx do not trust the CA (no SSL_CERT_FILE and certifi lacks it): `gateway ca install`",
            "warn  node v",
            "uses its bundled roots, not the system store: `gateway ca install`",
            "ok    go: not installed",
        ],
    );
    assert!(warn_line(&before, "ssl's default store"), "{before}");
    assert!(warn_line(&before, "java ("), "{before}");

    // Before: every client fails on the certificate, however its session is built.
    let mut checks: Vec<(Session, &str, bool)> = ["curl", "requests", "httpx", "node", "openai-py"]
        .map(|c| (Session::Pam, c, false))
        .to_vec();
    checks.extend(["certifi-requests", "certifi-httpx"].map(|c| (Session::Clean, c, false)));
    clients.expect_all(&ns, &checks);

    // Install, as an admin would: the system store, the variables, certifi.
    let other_s = other.to_str().unwrap();
    let out = gateway(&["ca", "install", "--certifi", "--venv", other_s]);
    has(
        &out,
        &[
            "Debian: anchor /usr/local/share/ca-certificates/gateway-ca.crt (written), bundle /etc/ssl/certs/ca-certificates.crt regenerated by `update-ca-certificates`",
            "NODE_EXTRA_CA_CERTS=/usr/local/share/ca-certificates/gateway-ca.crt (added)",
            &format!(
                "REQUESTS_CA_BUNDLE={} (kept: your value; the CA appended to {})",
                corp.display(),
                corp.display()
            ),
            "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt (added)",
            "Login shells, /etc/profile.d/gateway-ca.sh (written)",
            &format!("{} CA appended", venv_certifi.display()),
            &format!("venv {}/.venv", proj.display()),
            &format!("{} CA appended", dot_venv.display()),
            &format!("venv {other_s}"),
            &format!("{} CA appended", other_certifi.display()),
            "Still to do:",
            "restart runner services",
        ],
    );
    assert!(
        std::fs::read_to_string(&environment)
            .unwrap()
            .starts_with(&original_env)
    );
    assert_eq!(count(&certifi_copy, &pem), 1);
    assert_eq!(count(&certs.join("ca-certificates.crt"), &pem), 1);

    // After: each client succeeds, and only because of what install wrote.
    let mut checks = vec![
        (Session::Clean, "curl", true),
        (Session::Clean, "openai-py", true),
    ];
    for s in [Session::Pam, Session::Login] {
        for c in ["requests", "httpx", "node"] {
            checks.push((s, c, true));
        }
    }
    // A clean session has no variables: requests and httpx trust certifi, updated by --certifi.
    for c in ["certifi-requests", "certifi-httpx"] {
        checks.push((Session::Clean, c, true));
    }
    // ... and node in a clean session still does not (nothing but the variable can help it).
    checks.push((Session::Clean, "node", false));
    clients.expect_all(&ns, &checks);

    let after = doctor();
    has(
        &after,
        &[
            "ok    CA trusted by the system store",
            "ok    curl/openssl: SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt (from /etc/environment) trusts the CA",
            "ssl's default store trusts the CA",
            &format!("certifi bundle {} trusts the CA", venv_certifi.display()),
            &format!(
                "requests/botocore trust the CA (REQUESTS_CA_BUNDLE={} from /etc/environment)",
                corp.display()
            ),
            "httpx trust the CA (SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt from /etc/environment)",
            "trusts the CA (NODE_EXTRA_CA_CERTS=/usr/local/share/ca-certificates/gateway-ca.crt from /etc/environment)",
        ],
    );
    for l in after.lines().filter(|l| l.starts_with("warn")) {
        // Java's cacerts is rebuilt by the Debian hook this test masks; DNS, pins and the
        // daemon are other checks.
        assert!(
            l.contains("java (")
                || l.contains("resolve")
                || l.contains("pinned")
                || l.contains("bpf"),
            "unexpected warning after install: {l}\n{after}"
        );
    }

    // `pip install -U certifi` brings a fresh bundle: doctor says so, a re-run re-adds it once.
    std::fs::write(&certifi_copy, &certifi_original).unwrap();
    assert!(warn_line(&doctor(), "certifi bundle"));
    let again = gateway(&["ca", "install", "--certifi", "--venv", other_s]);
    has(
        &again,
        &[
            &format!("{} CA appended", venv_certifi.display()),
            &format!("{} already trusts the CA", dot_venv.display()),
            "(already set)",
            "Login shells, /etc/profile.d/gateway-ca.sh (unchanged)",
        ],
    );
    gateway(&["ca", "install", "--certifi", "--venv", other_s]);
    assert_eq!(count(&certifi_copy, &pem), 1);
    assert_eq!(count(&corp, &pem), 1);
    assert_eq!(
        std::fs::read_to_string(&environment)
            .unwrap()
            .matches("NODE_EXTRA_CA_CERTS")
            .count(),
        1
    );
    // A --venv that is no venv is refused before anything changes.
    let mut a = vec![
        "-i",
        path.as_str(),
        gw,
        "ca",
        "install",
        "--certifi",
        "--venv",
        "/nonexistent-venv",
        "-c",
    ];
    a.push(&cfg);
    let r = ns.run("env", &a, &proj);
    assert!(
        !r.ok && r.stderr.contains("/nonexistent-venv: not a virtualenv"),
        "{r:?}"
    );

    // Uninstall: exactly what install wrote is gone; the admin's lines and bundle are as before.
    let out = gateway(&["ca", "uninstall", "--venv", other_s]);
    has(
        &out,
        &[
            "anchor /usr/local/share/ca-certificates/gateway-ca.crt removed",
            "NODE_EXTRA_CA_CERTS=/usr/local/share/ca-certificates/gateway-ca.crt removed",
            &format!("the CA removed from {}", corp.display()),
            "/etc/profile.d/gateway-ca.sh removed",
        ],
    );
    assert_eq!(std::fs::read_to_string(&environment).unwrap(), original_env);
    assert_eq!(
        std::fs::read(&corp).unwrap(),
        std::fs::read("/etc/ssl/certs/ca-certificates.crt").unwrap()
    );
    assert!(std::fs::read_dir(&profile_d).unwrap().next().is_none());
    assert!(std::fs::read_dir(&local_ca).unwrap().next().is_none());
    assert_eq!(count(&certs.join("ca-certificates.crt"), &pem), 0);
    for f in [&certifi_copy, &dot_venv, &other_certifi] {
        assert_eq!(
            std::fs::read_to_string(f).unwrap(),
            certifi_original,
            "{}",
            f.display()
        );
    }
    clients.expect_all(
        &ns,
        &[
            (Session::Pam, "node", false),
            (Session::Clean, "curl", false),
        ],
    );
    let last = doctor();
    assert!(warn_line(&last, "CA not in the system store"), "{last}");

    // The machine's own files were never touched.
    assert_eq!(
        std::fs::read_to_string(&venv_certifi).unwrap(),
        certifi_original
    );
    assert!(
        !std::fs::read_to_string("/etc/ssl/certs/ca-certificates.crt")
            .unwrap()
            .contains(pem.trim())
    );
    assert!(!Path::new("/etc/profile.d/gateway-ca.sh").exists());
    drop(ns);
}

/// `--root` (an image): the files name paths as the image will see them, an admin's value is
/// kept and its bundle merged, the profile.d script is valid sh that keeps a job's own value,
/// and uninstall restores every file.
#[test]
fn install_into_a_root_names_runtime_paths_and_uninstall_restores_it() {
    let dir = tempfile::Builder::new()
        .prefix("gw-cat-root-")
        .tempdir()
        .unwrap();
    let r = dir.path().join("root");
    for d in [
        "usr/local/share/ca-certificates",
        "etc/ssl/certs",
        "etc/profile.d",
    ] {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    let system = std::fs::read("/etc/ssl/certs/ca-certificates.crt").unwrap();
    std::fs::write(r.join("etc/ssl/certs/ca-certificates.crt"), &system).unwrap();
    std::fs::write(r.join("etc/corp.pem"), &system).unwrap();
    let original_env = "LANG=C.UTF-8\nSSL_CERT_FILE=/etc/corp.pem\n";
    std::fs::write(r.join("etc/environment"), original_env).unwrap();
    let cfg = dir.path().join("gateway.toml");
    std::fs::write(
        &cfg,
        format!(
            "state_dir = {:?}\n",
            dir.path().join("state").display().to_string()
        ),
    )
    .unwrap();
    let gw = |args: &[&str]| {
        let out = Command::new(gateway_bin())
            .args(args)
            .arg("--root")
            .arg(&r)
            .arg("-c")
            .arg(&cfg)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let out = gw(&["ca", "install"]);
    let pem = std::fs::read_to_string(dir.path().join("state/ca/ca.pem")).unwrap();
    assert!(
        out.contains(&format!(
            "SSL_CERT_FILE=/etc/corp.pem (kept: your value; the CA appended to {})",
            r.join("etc/corp.pem").display()
        )),
        "{out}"
    );
    let env = std::fs::read_to_string(r.join("etc/environment")).unwrap();
    assert!(env.starts_with(original_env), "{env}");
    for want in [
        "\nNODE_EXTRA_CA_CERTS=/usr/local/share/ca-certificates/gateway-ca.crt\n",
        "\nREQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt\n",
    ] {
        assert!(env.contains(want), "{want:?} in {env}");
    }
    assert_eq!(env.matches("SSL_CERT_FILE").count(), 1, "{env}");
    assert_eq!(count(&r.join("etc/corp.pem"), &pem), 1);
    assert_eq!(count(&r.join("etc/ssl/certs/ca-certificates.crt"), &pem), 1);
    assert_eq!(
        std::fs::read_to_string(r.join("usr/local/share/ca-certificates/gateway-ca.crt")).unwrap(),
        pem
    );

    // The profile.d script, sourced by sh: our values, and a job's own value wins.
    let script = r.join("etc/profile.d/gateway-ca.sh");
    let show = |pre: &[&str]| {
        let out = Command::new("env")
            .arg("-i")
            .args(pre)
            .args([
                "sh",
                "-c",
                ". \"$0\"; echo \"$NODE_EXTRA_CA_CERTS|$REQUESTS_CA_BUNDLE|$SSL_CERT_FILE\"",
            ])
            .arg(&script)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(
        show(&[]),
        "/usr/local/share/ca-certificates/gateway-ca.crt|/etc/ssl/certs/ca-certificates.crt|/etc/corp.pem"
    );
    assert_eq!(
        show(&["NODE_EXTRA_CA_CERTS=/job/own.pem"]),
        "/job/own.pem|/etc/ssl/certs/ca-certificates.crt|/etc/corp.pem"
    );

    // Idempotent, then undone exactly.
    let again = gw(&["ca", "install"]);
    assert!(
        again.contains("(unchanged)") && again.contains("(already set)"),
        "{again}"
    );
    gw(&["ca", "uninstall"]);
    assert_eq!(
        std::fs::read_to_string(r.join("etc/environment")).unwrap(),
        original_env
    );
    assert_eq!(std::fs::read(r.join("etc/corp.pem")).unwrap(), system);
    assert_eq!(
        std::fs::read(r.join("etc/ssl/certs/ca-certificates.crt")).unwrap(),
        system
    );
    assert!(!script.exists());
    assert!(
        !r.join("usr/local/share/ca-certificates/gateway-ca.crt")
            .exists()
    );
}
